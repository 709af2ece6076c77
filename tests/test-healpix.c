/* test-healpix.c -- HEALPix geometry, HEALPix FITS sources (rows read only
 * as needed) and reprojection from them.  Conformance with reproject and
 * astropy-healpix is in tests/conformance/conformance_healpix.py. */
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "hpx.h"
#include "internal.h"
#include "sky.h"

extern _Atomic int64_t tsr__healpix_rows_read;

static tsr_ctx_t *ctx_new(void) {
  tsr_ctx_t *ctx;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr__hpx_load(ctx));
  return ctx;
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
  return rng_state;
}

TEST(pixel_centres_round_trip_both_orderings_up_to_nside_2_29) {
  tsr_ctx_t *ctx = ctx_new();
  int64_t nsides[] = {1, 2, 64, 1024, (int64_t)1 << 20, (int64_t)1 << 29};
  for (size_t k = 0; k < sizeof nsides / sizeof nsides[0]; k++)
    for (int nest = 0; nest < 2; nest++)
      for (int i = 0; i < 2000; i++) {
        int64_t ns = nsides[k], p = (int64_t)(rnd() % (uint64_t)tsr__hpx_npix(ns));
        double lon, lat, v[3];
        tsr__hpx_pix2ang(ns, nest, p, &lon, &lat);
        ASSERT_INT_EQ(tsr__hpx_ang2pix(ns, nest, lon, lat), p);
        tsr__hpx_pix2vec(ns, nest, p, v);
        ASSERT_INT_EQ(tsr__hpx_vec2pix(ns, nest, v), p);
        ASSERT_INT_EQ(tsr__hpx_nest2ring(ns, tsr__hpx_ring2nest(ns, p)), p);
      }
  tsr_ctx_free(ctx);
}

TEST(ring_layout_matches_pixel_latitudes) {
  tsr_ctx_t *ctx = ctx_new();
  int64_t nsides[] = {1, 3, 8, 1000, (int64_t)1 << 29};
  for (size_t k = 0; k < sizeof nsides / sizeof nsides[0]; k++) {
    int64_t ns = nsides[k], total = 0;
    for (int64_t r = 1; r < 4 * ns; r += ns > 100 ? ns / 7 + 1 : 1) {
      int64_t first, count;
      double lon0, lat0, lon1, lat1;
      tsr__hpx_ring_span(ns, r, &first, &count);
      ASSERT_INT_EQ(tsr__hpx_ring_of(ns, first), r);
      ASSERT_INT_EQ(tsr__hpx_ring_of(ns, first + count - 1), r);
      tsr__hpx_pix2ang(ns, false, first, &lon0, &lat0);
      tsr__hpx_pix2ang(ns, false, first + count - 1, &lon1, &lat1);
      ASSERT(lat0 == lat1);
      if (ns <= 100)
        total += count;
    }
    if (ns <= 100)
      ASSERT_INT_EQ(total, tsr__hpx_npix(ns));
  }
  tsr_ctx_free(ctx);
}

/* The ring latitudes are computed without libchealpix (so that a RING
 * bilinear run need not load it): they are its pix2ang_ring's, to the bit,
 * in every ring (caps, belt, near the poles). */
TEST(ring_latitudes_are_libchealpix_s_to_the_bit) {
  tsr_ctx_t *ctx = ctx_new();
  int64_t nsides[] = {1, 2, 3, 8, 13, 1000, 2048, 65536};
  for (size_t k = 0; k < sizeof nsides / sizeof nsides[0]; k++) {
    int64_t ns = nsides[k];
    double *lat = malloc((size_t)(4 * ns) * sizeof *lat);
    ASSERT(lat != NULL);
    tsr__hpx_ring_lats(ns, lat);
    for (int64_t r = 1; r < 4 * ns; r++) {
      int64_t first, count;
      double lon, want;
      tsr__hpx_ring_span(ns, r, &first, &count);
      tsr__hpx_pix2ang(ns, false, first, &lon, &want);
      if (memcmp(&lat[r], &want, sizeof want) != 0) {
        printf("# nside %lld ring %lld: %.17g, libchealpix %.17g\n", (long long)ns,
               (long long)r, lat[r], want);
        ASSERT(lat[r] == want);
      }
    }
    free(lat);
  }
  tsr_ctx_free(ctx);
}

/* The own RING -> NESTED conversion is libchealpix's, pixel for pixel:
 * every pixel of small maps, random ones (and each ring's ends) up to
 * nside 2^29. */
TEST(ring2nest_without_libchealpix_is_libchealpix_s) {
  tsr_ctx_t *ctx = ctx_new();
  int64_t nsides[] = {1, 2, 4, 8, 64, 2048, (int64_t)1 << 20, (int64_t)1 << 29};
  for (size_t k = 0; k < sizeof nsides / sizeof nsides[0]; k++) {
    int64_t ns = nsides[k], npix = tsr__hpx_npix(ns);
    for (int64_t i = 0; i < (npix <= 49152 ? npix : 200000); i++) {
      int64_t p = npix <= 49152 ? i : (int64_t)(rnd() % (uint64_t)npix);
      ASSERT_INT_EQ(tsr__hpx_ring2nest_fast(ns, p), tsr__hpx_ring2nest(ns, p));
    }
    for (int64_t r = 1; r < 4 * ns; r += ns > 64 ? ns / 3 + 1 : 1) {
      int64_t first, count;
      tsr__hpx_ring_span(ns, r, &first, &count);
      ASSERT_INT_EQ(tsr__hpx_ring2nest_fast(ns, first), tsr__hpx_ring2nest(ns, first));
      ASSERT_INT_EQ(tsr__hpx_ring2nest_fast(ns, first + count - 1),
                    tsr__hpx_ring2nest(ns, first + count - 1));
    }
  }
  tsr_ctx_free(ctx);
}

TEST(bilinear_weights_sum_to_one_and_reproduce_centres) {
  tsr_ctx_t *ctx = ctx_new();
  for (int i = 0; i < 20000; i++) {
    double lon = (double)(rnd() % 1000000) / 1e6 * 2 * M_PI;
    double lat = asin((double)(rnd() % 2000001) / 1e6 - 1.0);
    int64_t r[4];
    double w[4];
    tsr__hpx_interp_weights(64, lon, lat, r, w);
    ASSERT_NEAR(w[0] + w[1] + w[2] + w[3], 1.0, 1e-12);
    for (int q = 0; q < 4; q++)
      ASSERT(r[q] >= 0 && r[q] < tsr__hpx_npix(64));
  }
  /* At a pixel centre the pixel itself has all the weight. */
  for (int64_t p = 0; p < tsr__hpx_npix(16); p += 37) {
    double lon, lat, w[4];
    int64_t r[4];
    tsr__hpx_pix2ang(16, false, p, &lon, &lat);
    tsr__hpx_interp_weights(16, lon, lat, r, w);
    double own = 0;
    for (int q = 0; q < 4; q++)
      if (r[q] == p)
        own += w[q];
    ASSERT_NEAR(own, 1.0, 1e-9);
  }
  /* The ring-table path gives the same pixels and weights (to rounding),
   * in both caps, the equatorial belt and across longitude 0. */
  for (int64_t nside = 1; nside <= 1024; nside *= 4) {
    static double lats[4 * 1024];
    tsr__hpx_ring_lats(nside, lats);
    for (int i = 0; i < 5000; i++) {
      double lon = (double)(rnd() % 1000000) / 1e6 * 2 * M_PI;
      double lat = asin((double)(rnd() % 2000001) / 1e6 - 1.0);
      int64_t r[4], rt[4];
      double w[4], wt[4];
      tsr__hpx_interp_weights(nside, lon, lat, r, w);
      double v[3] = {cos(lat) * cos(lon), cos(lat) * sin(lon), sin(lat)};
      tsr__hpx_interp_weights_tab(nside, lats, v, lon, lat, rt, wt);
      for (int q = 0; q < 4; q++) {
        ASSERT_INT_EQ(rt[q], r[q]);
        ASSERT_NEAR(wt[q], w[q], 1e-12);
      }
    }
  }
  tsr_ctx_free(ctx);
}

TEST(disc_range_holds_every_centre_in_the_disc) {
  tsr_ctx_t *ctx = ctx_new();
  for (int nest = 0; nest < 2; nest++)
    for (int i = 0; i < 40; i++) {
      int64_t ns = 32, lo, hi;
      double c[3], radius = 0.01 + (double)(rnd() % 1000) / 1000 * 0.5;
      tsr__hpx_pix2vec(ns, nest, (int64_t)(rnd() % (uint64_t)tsr__hpx_npix(ns)), c);
      tsr__hpx_disc_range(ns, nest, c, radius, &lo, &hi);
      for (int64_t p = 0; p < tsr__hpx_npix(ns); p++) {
        double v[3];
        tsr__hpx_pix2vec(ns, nest, p, v);
        if (acos(fmin(1, v[0] * c[0] + v[1] * c[1] + v[2] * c[2])) <= radius)
          ASSERT(p >= lo && p < hi);
      }
      ASSERT(hi - lo < tsr__hpx_npix(ns)); /* a small disc is not the whole map */
    }
  tsr_ctx_free(ctx);
}

/* How write_map_as departs from a good map, for the bad-file cases. */
typedef struct {
  const char *ordering;  /* ORDERING value; NULL = 'RING' */
  const char *coordsys;  /* COORDSYS value; NULL = 'G' */
  const char *nside;     /* NSIDE card's value text; NULL = the map's nside */
  int64_t rows;          /* NAXIS2; 0 = as many as the pixels need */
  int64_t cut;           /* bytes cut from the end of the file */
} map_flaw_t;

/* A map of `nside` (12 nside^2 pixels, rows of 1024) whose value at each
 * pixel is its index, written by hand as the HEALPix convention says, with
 * the header changed as `flaw` says (NULL: none). */
static void write_map_as(const char *path, int64_t nside, const map_flaw_t *flaw) {
  static const map_flaw_t none = {NULL, NULL, NULL, 0, 0};
  FILE *f = fopen(path, "wb");
  char hdr[2880 * 2];
  int64_t npix = 12 * nside * nside, rows = npix / 1024;
  int k = 0;
  if (flaw == NULL)
    flaw = &none;
  ASSERT(f != NULL);
  memset(hdr, ' ', sizeof hdr);
#define CARD(...) (snprintf(hdr + 80 * k, 81, __VA_ARGS__), hdr[80 * k + strlen(hdr + 80 * k)] = ' ', k++)
  CARD("SIMPLE  = %20s", "T");
  CARD("BITPIX  = %20d", 8);
  CARD("NAXIS   = %20d", 0);
  CARD("EXTEND  = %20s", "T");
  CARD("END");
  fwrite(hdr, 1, 2880, f);
  memset(hdr, ' ', sizeof hdr);
  k = 0;
  CARD("XTENSION= 'BINTABLE'");
  CARD("BITPIX  = %20d", 8);
  CARD("NAXIS   = %20d", 2);
  CARD("NAXIS1  = %20d", 4096);
  CARD("NAXIS2  = %20lld", (long long)(flaw->rows ? flaw->rows : rows));
  CARD("PCOUNT  = %20d", 0);
  CARD("GCOUNT  = %20d", 1);
  CARD("TFIELDS = %20d", 1);
  CARD("TTYPE1  = 'SIGNAL  '");
  CARD("TFORM1  = '1024E   '");
  CARD("PIXTYPE = 'HEALPIX '");
  CARD("ORDERING= '%-8s'", flaw->ordering ? flaw->ordering : "RING");
  if (flaw->nside)
    CARD("NSIDE   = %20s", flaw->nside);
  else
    CARD("NSIDE   = %20lld", (long long)nside);
  CARD("COORDSYS= '%-8s'", flaw->coordsys ? flaw->coordsys : "G");
  CARD("INDXSCHM= 'IMPLICIT'");
  CARD("END");
#undef CARD
  fwrite(hdr, 1, 2880, f);
  for (int64_t p = 0; p < npix; p++) {
    float v = (float)p;
    uint32_t u;
    unsigned char b[4];
    memcpy(&u, &v, 4);
    b[0] = (unsigned char)(u >> 24), b[1] = (unsigned char)(u >> 16);
    b[2] = (unsigned char)(u >> 8), b[3] = (unsigned char)u;
    fwrite(b, 1, 4, f);
  }
  for (int64_t pad = (2880 - (npix * 4) % 2880) % 2880; pad > 0; pad--)
    fputc(0, f);
  fclose(f);
  if (flaw->cut > 0) {
    FILE *t = fopen(path, "r+b");
    ASSERT(t != NULL);
    ASSERT(fseek(t, 0, SEEK_END) == 0);
    ASSERT_OK(ftruncate(fileno(t), ftell(t) - flaw->cut));
    fclose(t);
  }
}

static void write_map(const char *path, int64_t nside) { write_map_as(path, nside, NULL); }

static tsr_wcs_t *tan_target(tsr_ctx_t *ctx, int n) {
  char text[1024];
  tsr_wcs_t *w;
  snprintf(text, sizeof text,
           "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = 'GLON-TAN'\nCTYPE2 = 'GLAT-TAN'\n"
           "CRPIX1 = %g\nCRPIX2 = %g\nCRVAL1 = 40.3\nCRVAL2 = 12.7\nCDELT1 = -0.02\n"
           "CDELT2 = 0.02\n",
           n, n, n / 2 + 0.5, n / 2 + 0.5);
  ASSERT_OK(tsr_wcs_parse(ctx, text, strlen(text), "target", 1, &w));
  return w;
}

TEST(a_small_region_reads_only_the_rows_it_needs) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  const char *path = th_path("map256.fits");
  tsr_wcs_t *t = tan_target(ctx, 64);
  static float got[64 * 64];
  write_map(path, 256);
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *src = tsr_source_healpix(g, path, NULL);
  tsr_from_healpix_opts_t o = TSR_FROM_HEALPIX_OPTS_INIT;
  o.order = TSR_ORDER_NEAREST;
  tsr_node_t *out = tsr_reproject_from_healpix(g, src, t, &o);
  ASSERT_INT_EQ(tsr_graph_status(g), 0);
  ASSERT_INT_EQ(tsr_node_shape(src, 0), 786432);
  /* The copy path (a view reads in place: see the test after next). */
  tsr__test_hooks.map_nothing = 1;
  atomic_store(&tsr__healpix_rows_read, 0);
  ASSERT_OK(tsr_compute(g, out, NULL, got, sizeof got, NULL));
  int64_t rows = atomic_load(&tsr__healpix_rows_read);
  tsr__test_hooks.map_nothing = 0;
  printf("# a 1.3 deg patch read %lld of 768 rows\n", (long long)rows);
  ASSERT(rows > 0 && rows < 768 / 20);
  /* Each value is the index of the pixel that holds the pixel centre. */
  {
    tsr__cel_t *cel;
    ASSERT_OK(tsr__cel_new(ctx, t, "target", &cel));
    for (int y = 0; y < 64; y += 7)
      for (int x = 0; x < 64; x += 5) {
        double px = x, py = y, v[3];
        tsr__cel_pix2vec(cel, 1, &px, &py, v);
        ASSERT_INT_EQ((int64_t)got[y * 64 + x], tsr__hpx_vec2pix(256, false, v));
      }
    tsr__cel_free(cel);
  }
  tsr_graph_free(g);
  tsr_wcs_free(t);
  tsr_ctx_free(ctx);
}

/* A 256^2 region of a 1024^2 output reads fewer rows than the whole
 * output, and gives the same values as the whole output's slice. */
TEST(a_region_of_an_output_reads_fewer_rows_than_all_of_it) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  const char *path = th_path("map256r.fits");
  tsr_wcs_t *t = tan_target(ctx, 1024);   /* 20 degrees across */
  static float all[1024 * 1024], part[256 * 256];
  tsr_region_t r = {{384, 384, 0, 0}, {640, 640, 1, 1}};
  write_map(path, 256);
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *out = tsr_reproject_from_healpix(g, tsr_source_healpix(g, path, NULL), t, NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), 0);
  tsr__test_hooks.map_nothing = 1; /* the copy path */
  atomic_store(&tsr__healpix_rows_read, 0);
  ASSERT_OK(tsr_compute(g, out, NULL, all, sizeof all, NULL));
  int64_t rows_all = atomic_load(&tsr__healpix_rows_read);
  atomic_store(&tsr__healpix_rows_read, 0);
  ASSERT_OK(tsr_compute(g, out, &r, part, sizeof part, NULL));
  int64_t rows_part = atomic_load(&tsr__healpix_rows_read);
  tsr__test_hooks.map_nothing = 0;
  printf("# whole 1024^2 output: %lld rows read; its central 256^2: %lld (of 768)\n",
         (long long)rows_all, (long long)rows_part);
  ASSERT(rows_part > 0 && rows_part * 4 < rows_all);   /* blocks read their own rows: all > 768 */
  ASSERT(rows_part < 768 / 4);
  for (int y = 0; y < 256; y++)
    ASSERT(memcmp(part + y * 256, all + (384 + y) * 1024 + 384, 256 * sizeof(float)) == 0);
  tsr_graph_free(g);
  tsr_wcs_free(t);
  tsr_ctx_free(ctx);
}

/* Pages of `path` in the page cache (mincore over a mapping of it). */
static int64_t pages_cached(const char *path) {
  int fd = open(path, O_RDONLY);
  struct stat sb;
  long page = sysconf(_SC_PAGESIZE);
  int64_t n = 0;
  ASSERT(fd >= 0 && fstat(fd, &sb) == 0);
  size_t pages = ((size_t)sb.st_size + (size_t)page - 1) / (size_t)page;
  void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
  static unsigned char vec[1 << 16];
  ASSERT(m != MAP_FAILED && pages <= sizeof vec);
  ASSERT_OK(mincore(m, (size_t)sb.st_size, vec));
  for (size_t i = 0; i < pages; i++)
    n += vec[i] & 1;
  munmap(m, (size_t)sb.st_size);
  close(fd);
  return n;
}

/* Drop `path` from the page cache; false where the system keeps it. */
static bool uncache(const char *path) {
  int fd = open(path, O_RDONLY);
  ASSERT(fd >= 0);
  ASSERT_OK(fsync(fd));
  (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
  return pages_cached(path) <= 2; /* the headers may stay */
}

/* Store a big-endian float32 at pixel p of a map written by write_map. */
static void poke(const char *path, int64_t p, float v) {
  int fd = open(path, O_WRONLY);
  uint32_t u;
  unsigned char b[4];
  memcpy(&u, &v, 4);
  b[0] = (unsigned char)(u >> 24), b[1] = (unsigned char)(u >> 16);
  b[2] = (unsigned char)(u >> 8), b[3] = (unsigned char)u;
  ASSERT(fd >= 0 && pwrite(fd, b, 4, 2 * 2880 + 4 * p) == 4);
  close(fd);
}

/* A full-sky float32 table is read in place (io/healpix.c): the outputs
 * are those of the copy path to the bit, UNSEEN, NaN and infinities made
 * NaN alike, in both orderings and both orders; and a region, from a cold
 * page cache, reads only pages of the pixels it looks up: far fewer than
 * the rows its copied window would have been. */
TEST(a_table_read_in_place_gives_the_copys_values_and_reads_less) {
  tsr_ctx_t *ctx = ctx_new();
  const char *path = th_path("map256v.fits");
  tsr_wcs_t *t = tan_target(ctx, 512);   /* 10 degrees across */
  static float view[512 * 512], copy[512 * 512];
  tsr_region_t r = {{192, 192, 0, 0}, {320, 320, 1, 1}};
  write_map(path, 256);
  {
    /* Bad values where the patch looks: pixels under its centre. */
    double px = 256, py = 256, v[3];
    tsr__cel_t *cel;
    ASSERT_OK(tsr__cel_new(ctx, t, "target", &cel));
    tsr__cel_pix2vec(cel, 1, &px, &py, v);
    tsr__cel_free(cel);
    int64_t p = tsr__hpx_vec2pix(256, false, v);
    poke(path, p, (float)TSR__HPX_UNSEEN);
    poke(path, p + 7, NAN);
    poke(path, p + 1500, INFINITY);
    poke(path, p - 1400, (float)(TSR__HPX_UNSEEN * (1 + 5e-6)));
  }
  for (int nest = 0; nest < 2; nest++)
    for (int order = 0; order < 2; order++) {
      tsr_healpix_opts_t ho = TSR_HEALPIX_OPTS_INIT;
      tsr_from_healpix_opts_t o = TSR_FROM_HEALPIX_OPTS_INIT;
      tsr_graph_t *g;
      ho.nested = nest;
      o.order = order;
      ASSERT_OK(tsr_graph_new(ctx, &g));
      tsr_node_t *out = tsr_reproject_from_healpix(g, tsr_source_healpix(g, path, &ho), t, &o);
      ASSERT_INT_EQ(tsr_graph_status(g), 0);
      tsr__test_hooks.map_nothing = 1;
      ASSERT_OK(tsr_compute(g, out, NULL, copy, sizeof copy, NULL));
      tsr__test_hooks.map_nothing = 0;
      atomic_store(&tsr__healpix_rows_read, 0);
      ASSERT_OK(tsr_compute(g, out, NULL, view, sizeof view, NULL));
      ASSERT_INT_EQ(atomic_load(&tsr__healpix_rows_read), 0); /* nothing copied */
      ASSERT(memcmp(view, copy, sizeof view) == 0);
      int64_t nan = 0;
      for (int k = 0; k < 512 * 512; k++)
        nan += view[k] != view[k];
      printf("# %s, %s: %lld NaN of %d, same bits in place and copied\n",
             nest ? "NESTED" : "RING", order ? "bilinear" : "nearest", (long long)nan, 512 * 512);
      ASSERT(nan < 512 * 512 / 100 && (nest || nan > 0)); /* poked in RING order */
      if (order == 1) {
        tsr__test_hooks.map_nothing = 1;
        atomic_store(&tsr__healpix_rows_read, 0);
        ASSERT_OK(tsr_compute(g, out, &r, copy, sizeof copy, NULL));
        int64_t rows = atomic_load(&tsr__healpix_rows_read);
        tsr__test_hooks.map_nothing = 0;
        if (!uncache(path)) {
          printf("# the page cache keeps %s: pages read not counted\n", path);
        } else {
          int64_t before = pages_cached(path);
          ASSERT_OK(tsr_compute(g, out, &r, view, sizeof view, NULL));
          int64_t pages = pages_cached(path) - before;
          printf("# %s: a 128^2 region read %lld pages (of 768) in place; its copy %lld rows\n",
                 nest ? "NESTED" : "RING", (long long)pages, (long long)rows);
          ASSERT(pages > 0 && pages * 2 < rows && pages < 768 / 10);
        }
        ASSERT(memcmp(view, copy, 128 * 128 * sizeof(float)) == 0);
      }
      tsr_graph_free(g);
    }
  tsr_wcs_free(t);
  tsr_ctx_free(ctx);
}

/* Each flaw of a HEALPix file is refused by tsr_source_healpix and
 * tsr_healpix_info alike, with a message naming the file, the HDU and what
 * was expected. */
TEST(bad_files_are_refused_case_by_case) {
  static const struct {
    const char *name;
    map_flaw_t flaw;
    const char *msg;
  } cases[] = {
      {"wrong row count", {NULL, NULL, NULL, 700, 0},
       "700 rows of 1024 values hold 716800 pixels; NSIDE 256 with FIRSTPIX 0 and LASTPIX "
       "786431 needs 786432 (768 rows)"},
      {"NSIDE not a power of 2 (NESTED)", {"NESTED", NULL, "200", 0, 0},
       "NSIDE = 200; expected a power of 2 (NESTED) in [1, 2^29]"},
      {"NSIDE 0", {NULL, NULL, "0", 0, 0}, "NSIDE = 0; expected an integer in [1, 2^29]"},
      {"NSIDE not an integer", {NULL, NULL, "'big'", 0, 0}, "has no integer NSIDE keyword"},
      {"unknown ORDERING", {"SPIRAL", NULL, NULL, 0, 0},
       "ORDERING = 'SPIRAL'; expected RING or NESTED"},
      {"unknown COORDSYS", {NULL, "X", NULL, 0, 0},
       "COORDSYS = 'X'; expected G (Galactic), C (celestial, ICRS) or E (ecliptic)"},
      {"truncated table", {NULL, NULL, NULL, 0, 2880 * 3},
       "is truncated: HDU 2's table needs 768 rows of 4096 bytes"},
  };
  tsr_ctx_t *ctx = ctx_new();
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[64];
    tsr_graph_t *g;
    tsr_healpix_info_t info;
    snprintf(name, sizeof name, "bad%zu.fits", i);
    const char *path = th_path(name);
    write_map_as(path, 256, &cases[i].flaw);
    printf("# %s\n", cases[i].name);
    ASSERT_OK(tsr_graph_new(ctx, &g));
    ASSERT(tsr_source_healpix(g, path, NULL) == NULL);
    ASSERT_INT_EQ(tsr_graph_status(g), TSR_EFITS);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), cases[i].msg);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), name);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "HDU 2");
    ASSERT_INT_EQ(tsr_healpix_info(ctx, path, NULL, &info), TSR_EFITS);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), cases[i].msg);
    tsr_graph_free(g);
  }
  tsr_ctx_free(ctx);
}

/* tsr_healpix_info describes the table: the column read and every value
 * column with its index, the HDU's EXTNAME. */
TEST(info_lists_the_fields) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_healpix_info_t info;
  tsr_healpix_opts_t o = TSR_HEALPIX_OPTS_INIT;
  const char *path = th_path("map16.fits");
  write_map(path, 16);
  ASSERT_OK(tsr_healpix_info(ctx, path, NULL, &info));
  {
    const int64_t got[] = {info.hdu, info.nside, info.nested, info.coordsys, info.explicit_index,
                           info.n_pixels, info.first_pixel, info.last_pixel, info.n_rows,
                           info.repeat, info.type, info.field, info.n_fields,
                           info.fields[0].type, info.fields[0].repeat};
    const int64_t want[] = {2, 16, 0, 'G', 0, 3072, 0, 3071, 3, 1024, 'E', 0, 1, 'E', 1024};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
      ASSERT_INT_EQ(got[i], want[i]);
  }
  ASSERT(strcmp(info.column, "SIGNAL") == 0 && strcmp(info.fields[0].name, "SIGNAL") == 0);
  ASSERT(info.pixel_column[0] == '\0' && info.extname[0] == '\0');
  o.field_name = "signal";
  ASSERT_OK(tsr_healpix_info(ctx, path, &o, &info));
  ASSERT_INT_EQ(info.field, 0);
  o.field_name = NULL;
  o.field = 1;
  ASSERT_INT_EQ(tsr_healpix_info(ctx, path, &o, &info), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "field 1 asked for; it has 1 value column (fields 0 to 0)");
  tsr_ctx_free(ctx);
}

TEST(a_buffer_needs_its_ordering_and_frame) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  static float map[12 * 16 * 16];
  int64_t shape[1] = {12 * 16 * 16};
  tsr_wcs_t *t = tan_target(ctx, 8);
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *src = tsr_source_buffer(g, TSR_F32, 1, shape, map, NULL);
  ASSERT(tsr_reproject_from_healpix(g, src, t, NULL) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "give its ordering (nested) and frame (coordsys)");
  tsr_graph_free(g);
  tsr_wcs_free(t);
  tsr_ctx_free(ctx);
}

TEST_MAIN()
