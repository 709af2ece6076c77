/* test-hips.c -- HiPS directories (tsr_write_hips): the tile geometry
 * against values computed independently (astropy's WCS with the HPX
 * projection and astropy-healpix, following reproject 0.21's tile_header),
 * which tiles are computed and written, the files, and bad arguments.
 * Tile data against reproject are in tests/conformance/conformance_hips.py. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"
#include "io.h"

/* Computed with astropy 5.2 + astropy-healpix 0.6 from reproject 0.21's
 * rules (tests/conformance/conformance_hips.py, tile_wcs). */
static const struct {
  const char *frame;
  int order, width;
  int64_t idx;
  double crpix[2];
  bool border;
  double crpix2[2];
} expected[] = {
    {"equatorial", 0, 512, 0LL, {256.5, 768.5}, false, {0, 0}},
    {"equatorial", 0, 512, 6LL, {-767.50000000000023, -767.50000000000023}, true,
     {1280.5000000000002, 1280.5000000000002}},
    {"equatorial", 3, 512, 300LL, {-1023.5, -511.5}, false, {0, 0}},
    {"equatorial", 9, 512, 1234567LL, {-78335.5, -14335.5}, false, {0, 0}},
    {"galactic", 5, 64, 4000LL, {-2815.5, 64.500000000000227}, false, {0, 0}},
    {"equatorial", 2, 256, 96LL, {-1535.5000000000005, -2303.5000000000005}, true,
     {2560.5000000000005, 1792.5000000000005}},
    {"equatorial", 1, 64, 27LL, {-255.5, -191.5}, true, {256.5, 320.5}},
    {"ecliptic", 7, 128, 190000LL, {-2559.5000000000091, -19839.500000000007}, false, {0, 0}},
    {"equatorial", 12, 512, 200000000LL, {-991231.5, -1900031.5}, false, {0, 0}},
};

TEST(tile_crpix_and_border_tiles_match_reproject_0_21) {
  tsr_ctx_t *ctx;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
    double c[2], c2[2];
    bool border;
    ASSERT_OK(tsr__hips_tile_crpix(ctx, expected[i].frame, expected[i].order, expected[i].width,
                                   expected[i].idx, c, &border, c2));
    ASSERT_NEAR(c[0], expected[i].crpix[0], 1e-6);
    ASSERT_NEAR(c[1], expected[i].crpix[1], 1e-6);
    ASSERT_INT_EQ(border, expected[i].border);
    if (border) {
      ASSERT_NEAR(c2[0], expected[i].crpix2[0], 1e-6);
      ASSERT_NEAR(c2[1], expected[i].crpix2[1], 1e-6);
    }
  }
  tsr_ctx_free(ctx);
}

TEST(unknown_frame_is_refused) {
  tsr_ctx_t *ctx;
  double c[2], c2[2];
  bool border;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_INT_EQ(tsr__hips_tile_crpix(ctx, "fk4", 3, 512, 0, c, &border, c2), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "expected equatorial, galactic or ecliptic");
  tsr_ctx_free(ctx);
}

/* A 2-D TAN image of n x n at (ra, dec), `scale` degrees a pixel, in g. */
static tsr_node_t *image(tsr_graph_t *g, tsr_ctx_t *ctx, int n, double ra, double dec,
                         double scale, float fill, float **keep) {
  char hdr[1024];
  tsr_wcs_t *w;
  int64_t shape[2] = {n, n};
  float *d = malloc(sizeof *d * (size_t)n * (size_t)n);
  tsr_node_t *node;
  for (int i = 0; i < n * n; i++)
    d[i] = isnan(fill) ? fill : fill + (float)(i % n) * 0.01f + (float)(i / n) * 0.02f;
  snprintf(hdr, sizeof hdr,
           "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
           "CRPIX1 = %g\nCRPIX2 = %g\nCRVAL1 = %.10g\nCRVAL2 = %.10g\nCDELT1 = %.10g\n"
           "CDELT2 = %.10g\nRADESYS = 'ICRS'\n",
           n, n, (n + 1) / 2.0, (n + 1) / 2.0, ra, dec, -scale, scale);
  *keep = d;
  if (tsr_wcs_parse(ctx, hdr, strlen(hdr), "test", 1, &w) != 0)
    return NULL; /* only when out of memory */
  node = tsr_source_buffer_ref(g, TSR_F32, 2, shape, d, w);
  tsr_wcs_free(w);
  return node;
}

static char *tmpdir(const char *name) {
  static char buf[4][512];
  static int k;
  char *p = buf[k++ % 4];
  snprintf(p, 512, "%s/tsr-hips-%d-%s", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
           (int)getpid(), name);
  return p;
}

static int count_files(const char *dir, const char *suffix) {
  char cmd[1024];
  int n = -1;
  FILE *f;
  snprintf(cmd, sizeof cmd, "find '%s' -type f -name '*%s' | wc -l", dir, suffix);
  if ((f = popen(cmd, "r")) != NULL) {
    if (fscanf(f, "%d", &n) != 1)
      n = -1;
    pclose(f);
  }
  return n;
}

static void rm_rf(const char *dir) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  ASSERT_INT_EQ(system(cmd), 0);
}

TEST(only_tiles_near_the_input_are_computed_and_only_those_with_data_written) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_hips_opts_t o = TSR_HIPS_OPTS_INIT;
  tsr_hips_report_t rep;
  float *d;
  char *dir = tmpdir("cull"), path[1024];
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
  /* 100 x 100 pixels of 36": 1 degree; order 5 tiles are 1.8 degrees. */
  tsr_node_t *in = image(g, ctx, 100, 120.0, 30.0, 0.01, 5.0f, &d);
  o.level = 5;
  o.tile_width = 32;
  rm_rf(dir);
  ASSERT_OK(tsr_write_hips(g, 1, &in, dir, &o, &rep));
  ASSERT_INT_EQ(rep.level, 5);
  /* 12288 tiles at order 5; a 1-degree field reaches a handful. */
  ASSERT(rep.candidates >= rep.tiles_deepest && rep.candidates <= 40);
  ASSERT(rep.tiles_deepest >= 1 && rep.tiles_deepest <= 4);
  ASSERT_INT_EQ(count_files(dir, ".fits") - 4 /* Allsky 0..3 */ - 1 /* Moc */,
                (int)rep.tiles_total);
  ASSERT_INT_EQ(count_files(dir, ".png") - 4, (int)rep.tiles_total);
  ASSERT_INT_EQ((int)rep.tiles_total, (int)rep.tiles_deepest + 5 /* one parent per order */);
  snprintf(path, sizeof path, "%s/properties", dir);
  ASSERT(access(path, R_OK) == 0);
  snprintf(path, sizeof path, "%s/Norder3/Allsky.fits", dir);
  ASSERT(access(path, R_OK) == 0);
  /* The tile holding the centre has the input's values there. */
  {
    tsr_wcs_t *tw;
    char tpath[1024];
    int64_t idx = -1;
    DIR *dd;
    struct dirent *e;
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/Norder5/Dir0", dir);
    ASSERT((dd = opendir(sub)) != NULL);
    while ((e = readdir(dd)) != NULL)
      if (strncmp(e->d_name, "Npix", 4) == 0 && strstr(e->d_name, ".fits"))
        idx = atoll(e->d_name + 4);
    closedir(dd);
    ASSERT(idx >= 0);
    snprintf(tpath, sizeof tpath, "%s/Npix%lld.fits", sub, (long long)idx);
    ASSERT_OK(tsr_wcs_read_fits(ctx, tpath, 0, &tw));
    ASSERT_INT_EQ(tsr_wcs_shape(tw, 0), 32);
    ASSERT_STR_CONTAINS(tsr_wcs_cards(tw, NULL), "RA---HPX");
    tsr_wcs_free(tw);
  }
  rm_rf(dir);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(d);
}

TEST(two_inputs_make_one_hips) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_hips_opts_t o = TSR_HIPS_OPTS_INIT;
  tsr_hips_report_t r1, r2;
  float *d1, *d2;
  char *dir = tmpdir("two");
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *in[2] = {image(g, ctx, 80, 10.0, -40.0, 0.01, 1.0f, &d1),
                       image(g, ctx, 80, 30.0, -40.0, 0.01, 2.0f, &d2)};
  o.level = 4;
  o.tile_width = 16;
  o.formats = TSR_HIPS_FITS;
  o.moc = 0;
  rm_rf(dir);
  ASSERT_OK(tsr_write_hips(g, 1, in, dir, &o, &r1));
  rm_rf(dir);
  ASSERT_OK(tsr_write_hips(g, 2, in, dir, &o, &r2));
  /* 15 degrees apart: the mosaic has the tiles of both. */
  ASSERT(r2.tiles_deepest > r1.tiles_deepest);
  ASSERT_INT_EQ(count_files(dir, ".png"), 0);
  {
    char p[1024];
    snprintf(p, sizeof p, "%s/Moc.fits", dir);
    ASSERT(access(p, F_OK) != 0);
  }
  rm_rf(dir);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(d1);
  free(d2);
}

TEST(bad_arguments_and_directories_are_refused_and_nothing_is_left) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_hips_opts_t o = TSR_HIPS_OPTS_INIT;
  float *d, *nan_d;
  char *dir = tmpdir("bad"), path[1024];
  FILE *f;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *in = image(g, ctx, 50, 200.0, 10.0, 0.01, 3.0f, &d);
  tsr_node_t *nan_in = image(g, ctx, 50, 200.0, 10.0, 0.01, NAN, &nan_d);
  rm_rf(dir);
  o.level = 3;
  o.tile_width = 16;

  o.tile_width = 100;
  ASSERT_INT_EQ(tsr_write_hips(g, 1, &in, dir, &o, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "power of two from 8 to 4096");
  o.tile_width = 16;
  o.frame = "fk5";
  ASSERT_INT_EQ(tsr_write_hips(g, 1, &in, dir, &o, NULL), TSR_EINVAL);
  o.frame = NULL;
  o.level = 40;
  ASSERT_INT_EQ(tsr_write_hips(g, 1, &in, dir, &o, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "out of range [0, 22]");
  o.level = 3;
  o.formats = TSR_HIPS_PNG;
  ASSERT_INT_EQ(tsr_write_hips(g, 1, &in, dir, &o, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "FITS tiles are always written");
  o.formats = 0;
  ASSERT_INT_EQ(tsr_write_hips(g, 0, &in, dir, &o, NULL), TSR_EINVAL);
  ASSERT(access(dir, F_OK) != 0); /* nothing made for bad arguments */

  /* A directory with something in it is not ours to fill. */
  ASSERT_INT_EQ(mkdir(dir, 0777), 0);
  snprintf(path, sizeof path, "%s/mine.txt", dir);
  ASSERT((f = fopen(path, "w")) != NULL);
  fclose(f);
  ASSERT_INT_EQ(tsr_write_hips(g, 1, &in, dir, &o, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "is not empty");
  ASSERT(access(path, F_OK) == 0);
  rm_rf(dir);

  /* A missing parent is not made. */
  snprintf(path, sizeof path, "%s/a/b", dir);
  ASSERT_INT_EQ(tsr_write_hips(g, 1, &in, path, &o, NULL), TSR_EIO);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "its parent must exist");

  /* All NaN: no tile has data; the directory made is removed again. */
  ASSERT_INT_EQ(tsr_write_hips(g, 1, &nan_in, dir, &o, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "no tile of order 3 has data");
  ASSERT(access(dir, F_OK) != 0);

  /* An empty directory given is kept (emptied) after a failure. */
  ASSERT_INT_EQ(mkdir(dir, 0777), 0);
  ASSERT_INT_EQ(tsr_write_hips(g, 1, &nan_in, dir, &o, NULL), TSR_EINVAL);
  ASSERT(access(dir, F_OK) == 0);
  ASSERT_INT_EQ(count_files(dir, ""), 0);
  /* ...and filled by a good run. */
  ASSERT_OK(tsr_write_hips(g, 1, &in, dir, &o, NULL));
  snprintf(path, sizeof path, "%s/properties", dir);
  ASSERT(access(path, F_OK) == 0);
  rm_rf(dir);

  /* A cancelled run leaves nothing. */
  {
    volatile int stop = 1;
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    ro.cancel = &stop;
    o.run = &ro;
    ASSERT_INT_EQ(tsr_write_hips(g, 1, &in, dir, &o, NULL), TSR_ECANCELED);
    ASSERT(access(dir, F_OK) != 0);
    o.run = NULL;
  }
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(d);
  free(nan_d);
}

typedef struct {
  long count, fail_at, live;
} oom_t;

static void *o_malloc(void *ud, size_t n) {
  oom_t *s = ud;
  void *p = ++s->count == s->fail_at ? NULL : malloc(n);
  s->live += p != NULL;
  return p;
}

static void *o_realloc(void *ud, void *p, size_t n) {
  oom_t *s = ud;
  void *q = ++s->count == s->fail_at ? NULL : realloc(p, n);
  s->live += p == NULL && q != NULL;
  return q;
}

static void o_free(void *ud, void *p) {
  oom_t *s = ud;
  s->live -= p != NULL;
  free(p);
}

/* Fail the k-th allocation of a whole tsr_write_hips, for every k: each run
 * ends in success or TSR_ENOMEM, leaves no directory behind when it fails,
 * and gives back every block. */
TEST(out_of_memory_at_every_allocation_fails_cleanly) {
  char *dir = tmpdir("oom");
  long k, successes = 0;
  rm_rf(dir);
  for (k = 1; k < 100000; k++) {
    oom_t st = {0, k, 0};
    tsr_ctx_options_t co = {{o_malloc, o_realloc, o_free, &st}};
    tsr_ctx_t *ctx;
    tsr_graph_t *g = NULL;
    tsr_hips_opts_t o = TSR_HIPS_OPTS_INIT;
    float *d = NULL;
    int rc;
    if (tsr_ctx_new(&ctx, &co) != 0) {
      ASSERT_INT_EQ(st.live, 0);
      continue;
    }
    if (tsr_graph_new(ctx, &g) == 0) {
      tsr_node_t *in = image(g, ctx, 40, 250.0, -20.0, 0.01, 4.0f, &d);
      o.level = 4;
      o.tile_width = 16;
      rc = in ? tsr_write_hips(g, 1, &in, dir, &o, NULL) : TSR_ENOMEM;
      ASSERT(rc == 0 || rc == TSR_ENOMEM);
      if (rc == 0)
        successes++;
      else
        ASSERT(access(dir, F_OK) != 0);
      rm_rf(dir);
    }
    tsr_graph_free(g);
    tsr_ctx_free(ctx);
    free(d);
    ASSERT_INT_EQ(st.live, 0);
    if (st.count < k)
      break; /* k passed every allocation of the run: all were tried */
  }
  ASSERT(successes == 1 && k > 50);
}

TEST_MAIN()
