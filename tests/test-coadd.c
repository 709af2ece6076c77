/* test-coadd.c -- mosaics on in-memory images: known answers for every
 * combine function, weights and blank, regions and block sizes, the pool
 * and the cache, background offsets, the optimal WCS, and bad calls; and
 * mosaics of more FITS files than the process may hold open.  (This
 * program does not link cfitsio, so it can watch the library's loading.) */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <tessera/tessera.h>
#include <unistd.h>

#include "cfitsio.h"
#include "harness.h"

typedef struct {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_wcs_t *target;
  tsr_wcs_t *tw[3];
  float *img[3];
  float *wimg[3];   /* scene_weights' maps, or NULL */
  tsr_node_t *r[3];
} scene_t;

static tsr_wcs_t *header(tsr_ctx_t *ctx, int nx, int ny, double crpix1, double crpix2) {
  char h[1024];
  tsr_wcs_t *w;
  snprintf(h, sizeof h,
           "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
           "CRVAL1 = 30.0\nCRVAL2 = 10.0\nCRPIX1 = %.10g\nCRPIX2 = %.10g\nCDELT1 = -0.001\n"
           "CDELT2 = 0.001\n",
           nx, ny, crpix1, crpix2);
  ASSERT_OK(tsr_wcs_parse(ctx, h, strlen(h), "test", 1, &w));
  return w;
}

/* Three 40 x 30 inputs at pixel offsets (0, 0), (25, 5), (10, 18) of a
 * 80 x 60 target on the same grid, constant values 1, 2, 4 (input 2 with a
 * NaN), reprojected with nearest-neighbour (exact values). */
static void scene_open(scene_t *s, int64_t block) {
  static const int off[3][2] = {{0, 0}, {25, 5}, {10, 18}};
  static const float val[3] = {1, 2, 4};
  int64_t shape[2] = {40, 30};
  memset(s, 0, sizeof *s);
  ASSERT_OK(tsr_ctx_new(&s->ctx, NULL));
  ASSERT_OK(tsr_graph_new(s->ctx, &s->g));
  s->target = header(s->ctx, 80, 60, 1, 1);
  for (int i = 0; i < 3; i++) {
    tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
    s->tw[i] = header(s->ctx, 40, 30, 1 - off[i][0], 1 - off[i][1]);
    s->img[i] = malloc(sizeof(float) * 40 * 30);
    for (int k = 0; k < 40 * 30; k++)
      s->img[i][k] = val[i] + 0.001f * (float)k;
    if (i == 1)
      s->img[i][3 * 40 + 5] = NAN; /* target pixel (30, 8) */
    o.order = TSR_ORDER_NEAREST;
    o.block[0] = o.block[1] = block;
    s->r[i] = tsr_reproject_interp(s->g, tsr_source_buffer_ref(s->g, TSR_F32, 2, shape, s->img[i], s->tw[i]),
                                   s->target, &o);
    ASSERT(s->r[i] != NULL);
  }
}

/* Constant weight maps w[i] on each input's grid, reprojected as the inputs
 * are (nearest), into wn. */
static void scene_weights(scene_t *s, const double *w, tsr_node_t *wn[3]) {
  int64_t shape[2] = {40, 30};
  for (int i = 0; i < 3; i++) {
    tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
    s->wimg[i] = malloc(sizeof(float) * 40 * 30);
    for (int k = 0; k < 40 * 30; k++)
      s->wimg[i][k] = (float)w[i];
    io.order = TSR_ORDER_NEAREST;
    wn[i] = tsr_reproject_interp(s->g, tsr_source_buffer_ref(s->g, TSR_F32, 2, shape, s->wimg[i], s->tw[i]),
                                 s->target, &io);
  }
}

static void scene_close(scene_t *s) {
  for (int i = 0; i < 3; i++) {
    free(s->img[i]);
    free(s->wimg[i]);
    tsr_wcs_free(s->tw[i]);
  }
  tsr_wcs_free(s->target);
  tsr_graph_free(s->g);
  tsr_ctx_free(s->ctx);
}

/* The value input i gives at target pixel (x, y), or NaN. */
static double input_at(const scene_t *s, int i, int x, int y) {
  static const int off[3][2] = {{0, 0}, {25, 5}, {10, 18}};
  int u = x - off[i][0], v = y - off[i][1];
  if (u < 0 || v < 0 || u >= 40 || v >= 30)
    return NAN;
  return s->img[i][v * 40 + u];
}

static int cmpd(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The expected value and footprint at (x, y), by the rules of tessera.h. */
static void expect(const scene_t *s, int combine, const double *w, double blank, int x, int y,
                   double *v, double *fp) {
  double acc = 0, accf = 0, vals[3], best = NAN, bestf = 0;
  int n = 0;
  for (int i = 0; i < 3; i++) {
    double a = input_at(s, i, x, y), f = w ? w[i] : 1.0;
    if (a != a || f == 0)
      continue;
    acc += a * f, accf += f, vals[n++] = a;
    if ((combine == TSR_COMBINE_FIRST && best != best) || combine == TSR_COMBINE_LAST ||
        (combine == TSR_COMBINE_MIN && (best != best || a < best)) ||
        (combine == TSR_COMBINE_MAX && (best != best || a > best)))
      best = a, bestf = f;
  }
  *v = blank;
  *fp = 0;
  if (n == 0)
    return;
  switch (combine) {
  case TSR_COMBINE_MEAN: *v = acc / accf, *fp = accf; break;
  case TSR_COMBINE_SUM: *v = acc, *fp = accf; break;
  case TSR_COMBINE_MEDIAN:
    qsort(vals, (size_t)n, sizeof *vals, cmpd);
    *v = n % 2 ? vals[n / 2] : 0.5 * (vals[n / 2 - 1] + vals[n / 2]);
    *fp = accf;
    break;
  default: *v = best, *fp = bestf;
  }
}

static int good_at(const scene_t *s, const double *w, int x, int y, double *v, double *wt, int *org);

static void same(double a, double b) {
  if (!(a == b || (a != a && b != b) || fabs(a - b) <= 1e-6 * fmax(1.0, fabs(b))))
    th_fail(__FILE__, __LINE__, "got %.9g, expected %.9g", a, b);
}

TEST(every_combine_function_by_hand) {
  for (int c = TSR_COMBINE_MEAN; c <= TSR_COMBINE_MEDIAN; c++)
    for (int weighted = 0; weighted < 2; weighted++) {
      scene_t s;
      tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
      double w[3] = {1.0, 0.5, 3.0};
      tsr_node_t *wn[3] = {NULL, NULL, NULL};
      scene_open(&s, 0);
      if (weighted)
        scene_weights(&s, w, wn);
      o.combine = c;
      o.blank = c == TSR_COMBINE_SUM ? 0.0 : NAN;
      o.dtype = TSR_F64;
      tsr_node_t *m = tsr_coadd(s.g, 3, s.r, weighted ? wn : NULL, &o);
      tsr_node_t *f = tsr_footprint(s.g, m);
      ASSERT(m != NULL && f != NULL);
      double *got = malloc(sizeof(double) * 80 * 60), *gfp = malloc(sizeof(double) * 80 * 60);
      ASSERT_OK(tsr_compute(s.g, m, NULL, got, sizeof(double) * 80 * 60, NULL));
      ASSERT_OK(tsr_compute(s.g, f, NULL, gfp, sizeof(double) * 80 * 60, NULL));
      for (int y = 0; y < 60; y++)
        for (int x = 0; x < 80; x++) {
          double v, fp;
          expect(&s, c, weighted ? w : NULL, o.blank, x, y, &v, &fp);
          same(got[y * 80 + x], v);
          same(gfp[y * 80 + x], fp);
        }
      free(got);
      free(gfp);
      scene_close(&s);
    }
}

TEST(regions_blocks_pool_and_cache_give_the_same_bits) {
  for (int c = 0; c < 2; c++) {
    scene_t s;
    float ref[80 * 60], out[80 * 60];
    scene_open(&s, 16);
    tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
    o.combine = c ? TSR_COMBINE_CLIPPED : TSR_COMBINE_MEDIAN;
    o.clip_sigma = 0.3, o.clip_ampfrac = 0.1;
    tsr_node_t *m = tsr_coadd(s.g, 3, s.r, NULL, &o);
    ASSERT(m != NULL);
    ASSERT_OK(tsr_compute(s.g, m, NULL, ref, sizeof ref, NULL));
    for (int64_t b = 7; b <= 64; b *= 3) {
      tsr_coadd_opts_t ob = o;
      ob.block[0] = b, ob.block[1] = b + 3;
      tsr_node_t *mb = tsr_coadd(s.g, 3, s.r, NULL, &ob);
      ASSERT_OK(tsr_compute(s.g, mb, NULL, out, sizeof out, NULL));
      ASSERT(memcmp(ref, out, sizeof ref) == 0);
    }
    {
      tsr_region_t r = {{21, 13, 0, 0}, {58, 41, 1, 1}};
      float part[37 * 28];
      ASSERT_OK(tsr_compute(s.g, m, &r, part, sizeof part, NULL));
      for (int y = 13; y < 41; y++)
        ASSERT(memcmp(part + (y - 13) * 37, ref + y * 80 + 21, 37 * sizeof(float)) == 0);
    }
    {
      tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
      tsr_cache_t *cache;
      ro.jobs = 2;
      ASSERT_OK(tsr_compute(s.g, m, NULL, out, sizeof out, &ro));
      ASSERT(memcmp(ref, out, sizeof ref) == 0);
      ASSERT_OK(tsr_cache_open(s.ctx, th_path("cache"), 1 << 26, &cache));
      ro.cache = cache;
      for (int pass = 0; pass < 2; pass++) {
        memset(out, 0, sizeof out);
        ASSERT_OK(tsr_compute(s.g, m, NULL, out, sizeof out, &ro));
        ASSERT(memcmp(ref, out, sizeof ref) == 0);
      }
      tsr_cache_close(cache);
    }
    scene_close(&s);
  }
}

/* The variance and weight products of reproject's combines, weights W
 * (1, 0.5, 3) being inverse variances: mean sum(W^2 / W) / sum(W)^2 =
 * 1 / sum(W), sum sum(W), first and last 1 / W of the chosen input. */
TEST(variance_of_reprojects_combines) {
  static const int combines[4] = {TSR_COMBINE_MEAN, TSR_COMBINE_SUM, TSR_COMBINE_FIRST, TSR_COMBINE_LAST};
  double w[3] = {1.0, 0.5, 3.0};
  static double var[80 * 60], wt[80 * 60];
  for (int c = 0; c < 4; c++) {
    scene_t s;
    tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
    tsr_node_t *wn[3];
    scene_open(&s, 0);
    scene_weights(&s, w, wn);
    o.combine = combines[c];
    o.dtype = TSR_F64;
    tsr_node_t *m = tsr_coadd(s.g, 3, s.r, wn, &o);
    ASSERT_OK(tsr_compute(s.g, tsr_coadd_product(s.g, m, TSR_COADD_VARIANCE), NULL, var, sizeof var, NULL));
    ASSERT_OK(tsr_compute(s.g, tsr_coadd_product(s.g, m, TSR_COADD_WEIGHT), NULL, wt, sizeof wt, NULL));
    for (int y = 0; y < 60; y++)
      for (int x = 0; x < 80; x++) {
        double a[3], ww[3], e = NAN;
        int org[3], n = good_at(&s, w, x, y, a, ww, org);
        if (n > 0) {
          double sw = 0;
          for (int i = 0; i < n; i++)
            sw += ww[i];
          e = c == 0 ? 1 / sw : c == 1 ? sw : c == 2 ? 1 / ww[0] : 1 / ww[n - 1];
        }
        same(var[y * 80 + x], e);
        same(wt[y * 80 + x], n ? 1 / e : 0.0);
      }
    scene_close(&s);
  }
}

TEST(background_offsets_are_recovered) {
  scene_t s;
  double off[3];
  scene_open(&s, 0);
  /* Inputs 1 and 2 are the image of input 0's level plus offsets where the
   * three overlap: make them equal sky + offset. */
  for (int i = 0; i < 3; i++)
    for (int k = 0; k < 40 * 30; k++)
      s.img[i][k] = (float)(10.0 + (i == 1 ? 0.75 : i == 2 ? -1.25 : 0.0));
  s.img[1][3 * 40 + 5] = NAN;
  ASSERT_OK(tsr_coadd_match_background(s.g, 3, s.r, NULL, 0, NULL, off));
  same(off[0], 0.0);
  same(off[1], 0.75);
  same(off[2], -1.25);
  ASSERT_OK(tsr_coadd_match_background(s.g, 3, s.r, NULL, -1, NULL, off));
  same(off[0] + off[1] + off[2], 0.0);
  same(off[1] - off[0], 0.75);
  {
    tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
    float out[80 * 60];
    ASSERT_OK(tsr_coadd_match_background(s.g, 3, s.r, NULL, 0, NULL, off));
    o.offsets = off;
    tsr_node_t *m = tsr_coadd(s.g, 3, s.r, NULL, &o);
    ASSERT_OK(tsr_compute(s.g, m, NULL, out, sizeof out, NULL));
    for (int k = 0; k < 80 * 60; k++)
      ASSERT(out[k] != out[k] || fabs(out[k] - 10.0) < 1e-5);
  }
  scene_close(&s);
}

TEST(optimal_wcs_covers_its_inputs) {
  scene_t s;
  tsr_wcs_t *w;
  tsr_optimal_wcs_opts_t o = TSR_OPTIMAL_WCS_OPTS_INIT;
  scene_open(&s, 0);
  ASSERT_OK(tsr_optimal_wcs(s.ctx, 3, (const tsr_wcs_t *const *)s.tw, &o, &w));
  /* The inputs span target pixels x 0..65, y 0..48: 65 x 48 at 0.001 deg/px. */
  ASSERT_INT_EQ(tsr_wcs_shape(w, 0), 65);
  ASSERT_INT_EQ(tsr_wcs_shape(w, 1), 48);
  tsr_wcs_free(w);
  o.projection = "TANGENT";
  ASSERT(tsr_optimal_wcs(s.ctx, 3, (const tsr_wcs_t *const *)s.tw, &o, &w) == TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(s.ctx), "projection 'TANGENT': expected a 3-letter code");
  o.projection = NULL;
  o.frame = "helioecliptic";
  ASSERT(tsr_optimal_wcs(s.ctx, 3, (const tsr_wcs_t *const *)s.tw, &o, &w) == TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(s.ctx), "frame 'helioecliptic': expected icrs, fk5, fk4, fk4-no-e, "
                                         "galactic, supergalactic or ecliptic");
  o.frame = "fk4";
  ASSERT_OK(tsr_optimal_wcs(s.ctx, 3, (const tsr_wcs_t *const *)s.tw, &o, &w));
  {
    int nc;
    const char *cards = tsr_wcs_cards(w, &nc);
    ASSERT(memmem(cards, (size_t)nc * 80, "RADESYS = 'FK4'", 15) != NULL);
  }
  tsr_wcs_free(w);
  scene_close(&s);
}

TEST(bad_mosaics_are_reported) {
  struct {
    const char *msg;
    int what;
  } cases[] = {
      {"coadd: 0 inputs; expected at least 1", 0},
      {"is not the data node of a reprojection (it has no footprint plane)", 1},
      {"is not on the pixel grid of input 1", 2},
      {"coadd: combine 99 out of range [0, 19]", 3},
      {"coadd: weight 2", 4},
      {"coadd: input 3 is NULL", 5},
      {"coadd: clip_sigma -1 and clip_ampfrac 0.3: expected finite values >= 0", 6},
      {"coadd: gain 2 is -4; expected e-/ADU >= 0 (0 = infinite)", 7},
      {"coadd: data-quality map 3 (", 8},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    scene_t s;
    tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
    tsr_node_t *in[3], *w[3] = {NULL, NULL, NULL}, *dq[3] = {NULL, NULL, NULL};
    double gains[3] = {1, -4, 1};
    int n = 3;
    int64_t shape[2] = {40, 30}, small[2] = {10, 10};
    scene_open(&s, 0);
    memcpy(in, s.r, sizeof in);
    switch (cases[k].what) {
    case 0: n = 0; break;
    case 1: in[1] = tsr_source_buffer_ref(s.g, TSR_F32, 2, shape, s.img[0], s.tw[0]); break;
    case 2: in[1] = tsr_reproject_interp(s.g, tsr_source_buffer_ref(s.g, TSR_F32, 2, shape, s.img[0], s.tw[0]),
                                         s.tw[1], NULL);
      break;
    case 3: o.combine = (tsr_combine_t)99; break;
    case 4: w[1] = tsr_source_buffer_ref(s.g, TSR_F32, 2, small, s.img[0], NULL); break;
    case 5: in[2] = NULL; break;
    case 6: o.clip_sigma = -1; break;
    case 7: o.gains = gains; break;
    case 8: dq[2] = tsr_source_buffer_ref(s.g, TSR_F32, 2, small, s.img[0], NULL), o.dq = dq; break;
    }
    ASSERT(tsr_coadd(s.g, n, in, cases[k].what == 4 ? w : NULL, &o) == NULL);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(s.g), cases[k].msg);
    scene_close(&s);
  }
  {
    /* Products: of a mosaic only, and DQ only with DQ maps. */
    scene_t s;
    scene_open(&s, 0);
    ASSERT(tsr_coadd_product(s.g, s.r[0], TSR_COADD_WEIGHT) == NULL);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(s.g), "is not a mosaic (tsr_coadd) of this graph");
    scene_close(&s);
    scene_open(&s, 0);
    ASSERT(tsr_coadd_product(s.g, tsr_coadd(s.g, 3, s.r, NULL, NULL), TSR_COADD_DQ) == NULL);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(s.g), "a data-quality product needs data-quality inputs");
    scene_close(&s);
  }
}

/* Copies a buffer and counts the blocks asked of it. */
typedef struct {
  const float *img;
  int calls;
} counted_t;

static int counted_copy(void *user, const tsr_block_t *b) {
  counted_t *c = user;
  int64_t w = b->out.stop[0] - b->out.start[0];
  c->calls++;
  for (int64_t y = b->out.start[1]; y < b->out.stop[1]; y++)
    for (int64_t x = b->out.start[0]; x < b->out.stop[0]; x++)
      ((float *)b->data)[(y - b->out.start[1]) * w + (x - b->out.start[0])] = c->img[y * 40 + x];
  return 0;
}

/* A region of the mosaic computes only the inputs it meets, and of those
 * only the blocks it needs. */
TEST(a_region_reads_only_the_inputs_and_blocks_it_meets) {
  scene_t s;
  counted_t cnt[3];
  tsr_node_t *r[3];
  scene_open(&s, 0);
  for (int i = 0; i < 3; i++) {
    int64_t shape[2] = {40, 30};
    tsr_map_blocks_opts_t mo = TSR_MAP_BLOCKS_OPTS_INIT;
    tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
    char name[16];
    tsr_node_t *buf = tsr_source_buffer_ref(s.g, TSR_F32, 2, shape, s.img[i], s.tw[i]);
    cnt[i].img = s.img[i], cnt[i].calls = 0;
    snprintf(name, sizeof name, "counted%d", i);
    mo.name = name;
    mo.dtype = TSR_F32;
    mo.chunk[0] = mo.chunk[1] = 10;
    io.order = TSR_ORDER_NEAREST;
    io.block[0] = io.block[1] = 8;
    r[i] = tsr_reproject_interp(s.g, tsr_map_blocks(s.g, 1, &buf, counted_copy, &cnt[i], &mo), s.target, &io);
    ASSERT(r[i] != NULL);
  }
  tsr_node_t *m = tsr_coadd(s.g, 3, r, NULL, NULL);
  ASSERT(m != NULL);
  {
    /* Target x 2..8, y 1..6: inside input 0 only (inputs 1 and 2 start at
     * x 25 and y 18). */
    tsr_region_t reg = {{2, 1, 0, 0}, {8, 6, 1, 1}};
    float out[6 * 5];
    ASSERT_OK(tsr_compute(s.g, m, &reg, out, sizeof out, NULL));
    ASSERT_INT_EQ(cnt[1].calls, 0);
    ASSERT_INT_EQ(cnt[2].calls, 0);
    ASSERT(cnt[0].calls >= 1 && cnt[0].calls <= 4); /* the 10 x 10 blocks under an 8 x 8 block + halo */
    for (int k = 0; k < 30; k++)
      ASSERT(out[k] == out[k]);
  }
  scene_close(&s);
}

/* ------------------------------------------------------------------ */
/* SWarp's combines                                                    */

/* The inputs that count at (x, y) for a SWarp combine: value, weight and
 * number, in input order (weights w[i], all of input i). */
static int good_at(const scene_t *s, const double *w, int x, int y, double *v, double *wt, int *org) {
  int n = 0;
  for (int i = 0; i < 3; i++) {
    double a = input_at(s, i, x, y);
    if (a == a && w[i] > 0)
      v[n] = a, wt[n] = w[i], org[n++] = i;
  }
  return n;
}

static double med(const double *v, int n) {
  double s[3];
  memcpy(s, v, sizeof(double) * (size_t)n);
  qsort(s, (size_t)n, sizeof *s, cmpd);
  return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

/* SWarp 2.41's variance of a median of n Gaussian values (coadd.c). */
static double med_var(int n, const double *var) {
  double ss = 0, sv = 0;
  for (int i = 0; i < n; i++)
    ss += 1 / sqrt(var[i]), sv += var[i];
  if (n <= 2)
    return sv / (n * n);
  return M_PI * n * n / (2 * ss * ss * (n + (n % 2 ? M_PI / 2 - 1 : M_PI - 2)));
}

/* Expected value, output weight and variance of SWarp combine c at (x, y),
 * straight from coadd_line's formulas (weights are inverse variances). */
static void expect_swarp(const scene_t *s, int c, const double *w, double cs, double af, int x,
                         int y, double *v, double *ow, double *var) {
  double a[3], wt[3], vr[3], sw = 0, swa = 0, sa = 0, sv = 0, chi = 0;
  int org[3], n = good_at(s, w, x, y, a, wt, org);
  *v = NAN, *ow = 0, *var = NAN;
  if (n == 0)
    return;
  for (int i = 0; i < n; i++) {
    vr[i] = 1 / wt[i];
    sw += wt[i], swa += wt[i] * a[i], sa += a[i], sv += vr[i], chi += a[i] * a[i] * wt[i];
  }
  switch (c) {
  case TSR_COMBINE_WEIGHTED: *v = swa / sw, *var = 1 / sw; break;
  case TSR_COMBINE_AVERAGE: *v = sa / n, *var = sv / (n * n); break;
  case TSR_COMBINE_SUM_UNWEIGHTED: *v = sa, *var = sv; break;
  case TSR_COMBINE_MEDIAN: *v = med(a, n), *var = med_var(n, vr); break;
  case TSR_COMBINE_CHI_OLD: *v = sqrt(chi / n), *ow = 1; return;
  case TSR_COMBINE_CHI_MODE:
  case TSR_COMBINE_CHI_MEAN: {
    double mu = sqrt(2.0) * tgamma((n + 1) / 2.0) / tgamma(n / 2.0);
    *v = n == 1 ? a[0] * sqrt(wt[0])
                : (sqrt(chi) - (c == TSR_COMBINE_CHI_MODE ? sqrt(n - 1.0) : mu)) / sqrt(n - mu * mu);
    *ow = 1;
    return;
  }
  case TSR_COMBINE_CLIPPED:
    if (n == 1) {
      *v = a[0], *var = vr[0];
    } else if (n == 2) {
      double m = fabs(a[0] + a[1]) / 2;
      if (fabs(a[0] - a[1]) <= cs * sqrt(vr[0] + vr[1]) + af * m)
        *v = (a[0] * vr[1] + a[1] * vr[0]) / (vr[0] + vr[1]), *var = vr[0] * vr[1] / (vr[0] + vr[1]);
    } else {
      double m = med(a, n), kw = 0, kwa = 0;
      for (int i = 0; i < n; i++)
        if (fabs(a[i] - m) <= cs * sqrt(vr[i]) + af * fabs(m))
          kw += wt[i], kwa += wt[i] * a[i];
      if (kw > 0)
        *v = kwa / kw, *var = 1 / kw;
    }
    break;
  case TSR_COMBINE_WEIGHTED_WEIGHT:
  case TSR_COMBINE_MEDIAN_WEIGHT: {
    double fv[3], acc = 0, q;
    for (int i = 0; i < n; i++)
      fv[i] = a[i] > 1e-30 ? 1 / a[i] : 1e30, acc += fv[i] * wt[i] * wt[i];
    q = c == TSR_COMBINE_WEIGHTED_WEIGHT ? acc / (sw * sw) : med_var(n, fv);
    *v = 1 / q;
    *ow = c == TSR_COMBINE_WEIGHTED_WEIGHT ? sw : 1 / med_var(n, vr);
    return;
  }
  }
  if (*v == *v)
    *ow = 1 / *var;
  else
    *var = NAN;
}

/* Every SWarp combine against its formulas, with weights (inverse
 * variances) 1, 0.5 and 3: values, output weight map and variance. */
TEST(swarp_combines_follow_swarps_formulas) {
  static const int combines[] = {TSR_COMBINE_WEIGHTED,   TSR_COMBINE_AVERAGE,
                                 TSR_COMBINE_SUM_UNWEIGHTED, TSR_COMBINE_MEDIAN,
                                 TSR_COMBINE_CHI_OLD,    TSR_COMBINE_CHI_MODE,
                                 TSR_COMBINE_CHI_MEAN,   TSR_COMBINE_CLIPPED,
                                 TSR_COMBINE_WEIGHTED_WEIGHT, TSR_COMBINE_MEDIAN_WEIGHT};
  static double got[3][80 * 60];
  double w[3] = {1.0, 0.5, 3.0};
  for (size_t c = 0; c < sizeof combines / sizeof combines[0]; c++)
    for (int tight = 0; tight < (combines[c] == TSR_COMBINE_CLIPPED ? 2 : 1); tight++) {
      scene_t s;
      tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
      tsr_node_t *wn[3], *m, *nodes[3];
      int defined = 0;
      scene_open(&s, 16);
      scene_weights(&s, w, wn);
      o.combine = combines[c];
      o.dtype = TSR_F64;
      printf("# %s%s\n", tsr_combine_name(o.combine), tight ? " (tight)" : "");
      if (tight)
        o.clip_sigma = 0.3, o.clip_ampfrac = 0.1;
      m = tsr_coadd(s.g, 3, s.r, wn, &o);
      nodes[0] = m;
      nodes[1] = tsr_coadd_product(s.g, m, TSR_COADD_WEIGHT);
      nodes[2] = tsr_coadd_product(s.g, m, TSR_COADD_VARIANCE);
      ASSERT(nodes[1] != NULL && nodes[2] != NULL);
      ASSERT(tsr_coadd_product(s.g, m, TSR_COADD_VALUE) == m);
      for (int p = 0; p < 3; p++)
        ASSERT_OK(tsr_compute(s.g, nodes[p], NULL, got[p], sizeof got[p], NULL));
      for (int y = 0; y < 60; y++)
        for (int x = 0; x < 80; x++) {
          double v, ow, var;
          expect_swarp(&s, combines[c], w, o.clip_sigma, o.clip_ampfrac, x, y, &v, &ow, &var);
          same(got[0][y * 80 + x], v);
          same(got[1][y * 80 + x], ow);
          same(got[2][y * 80 + x], var);
          defined += v == v;
        }
      /* The scene has pixels of 0, 1, 2 and 3 inputs: most are defined. */
      ASSERT(defined > (tight ? 1000 : 2500));
      scene_close(&s);
    }
}

typedef struct {
  int n;
  int input[4096];
  int64_t x[4096], y[4096];
  double mu[4096];
} cliplog_t;

static int collect(void *ud, int input, int64_t x, int64_t y, double mu) {
  cliplog_t *l = ud;
  if (l->n < 4096)
    l->input[l->n] = input, l->x[l->n] = x, l->y[l->n] = y, l->mu[l->n] = mu;
  l->n++;
  return 0;
}

static int stop_at_3(void *ud, int input, int64_t x, int64_t y, double mu) {
  (void)input, (void)x, (void)y, (void)mu;
  return ++*(int *)ud == 3 ? 42 : 0;
}

/* The clip log names every rejected input pixel, in SWarp's order, with
 * SWarp's signed deviation; a region gives its part of it. */
TEST(the_clip_log_lists_the_rejected_pixels) {
  scene_t s;
  tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
  static cliplog_t log, part;
  double w[3] = {1, 1, 1};
  int expected = 0, calls = 0;
  scene_open(&s, 16);
  o.combine = TSR_COMBINE_CLIPPED;
  o.clip_sigma = 0.3, o.clip_ampfrac = 0.1;
  tsr_node_t *m = tsr_coadd(s.g, 3, s.r, NULL, &o);
  ASSERT(m != NULL);
  log.n = 0;
  ASSERT_OK(tsr_coadd_clip_log(s.g, m, NULL, NULL, collect, &log));
  for (int y = 0; y < 60; y++)
    for (int x = 0; x < 80; x++) {
      double a[3], wt[3];
      int org[3], n = good_at(&s, w, x, y, a, wt, org);
      if (n == 2) {
        double mm = fabs(a[0] + a[1]) / 2, d = a[0] - a[1];
        if (fabs(d) > 0.3 * sqrt(2.0) + 0.1 * mm) {
          double mu = (d > 0 ? 1 : -1) * (fabs(d) - 0.1 * mm) / sqrt(2.0);
          ASSERT(expected + 1 < log.n);
          ASSERT_INT_EQ(log.input[expected], org[0]);
          ASSERT_INT_EQ(log.input[expected + 1], org[1]);
          ASSERT_INT_EQ(log.x[expected], x);
          ASSERT_INT_EQ(log.y[expected], y);
          ASSERT_NEAR(log.mu[expected], mu, 1e-5);
          ASSERT_NEAR(log.mu[expected + 1], -mu, 1e-5);
          expected += 2;
        }
      } else if (n == 3) {
        double mm = med(a, n);
        for (int i = 0; i < 3; i++)
          if (fabs(a[i] - mm) > 0.3 + 0.1 * fabs(mm)) {
            ASSERT(expected < log.n);
            ASSERT_INT_EQ(log.input[expected], org[i]);
            ASSERT_INT_EQ(log.x[expected], x);
            ASSERT_INT_EQ(log.y[expected], y);
            expected++;
          }
      }
    }
  ASSERT_INT_EQ(log.n, expected);
  ASSERT(expected > 500);
  {
    tsr_region_t r = {{20, 10, 0, 0}, {50, 40, 1, 1}};
    int k = 0;
    part.n = 0;
    ASSERT_OK(tsr_coadd_clip_log(s.g, m, &r, NULL, collect, &part));
    for (int i = 0; i < log.n; i++)
      if (log.x[i] >= 20 && log.x[i] < 50 && log.y[i] >= 10 && log.y[i] < 40) {
        ASSERT(k < part.n && part.input[k] == log.input[i] && part.x[k] == log.x[i] &&
               part.y[k] == log.y[i] && part.mu[k] == log.mu[i]);
        k++;
      }
    ASSERT_INT_EQ(k, part.n);
  }
  ASSERT_INT_EQ(tsr_coadd_clip_log(s.g, m, NULL, NULL, stop_at_3, &calls), 42);
  ASSERT_INT_EQ(calls, 3);
  o.combine = TSR_COMBINE_MEDIAN;
  ASSERT_INT_EQ(tsr_coadd_clip_log(s.g, tsr_coadd(s.g, 3, s.r, NULL, &o), NULL, NULL, collect, &log),
                TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(s.ctx), "is not a clipped mosaic");
  scene_close(&s);
}

/* Flag combines take the covering inputs' values as bits; the DQ product
 * is the OR of the contributors' data quality. */
TEST(flag_combines_and_data_quality) {
  static const int combines[4] = {TSR_COMBINE_AND, TSR_COMBINE_NAND, TSR_COMBINE_OR, TSR_COMBINE_NOR};
  for (int c = 0; c < 4; c++) {
    scene_t s;
    tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
    tsr_node_t *dq[3];
    float dqimg[3][40 * 30];
    static double got[80 * 60], gdq[80 * 60];
    int64_t shape[2] = {40, 30};
    scene_open(&s, 0);
    for (int i = 0; i < 3; i++) {
      tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
      for (int k = 0; k < 40 * 30; k++) {
        s.img[i][k] = (float)((1 << i) | (k % 3 == 0 ? 8 : 0) | (1 << 20));
        dqimg[i][k] = (float)(1 << (4 + i));
      }
      io.order = TSR_ORDER_NEAREST;
      dq[i] = tsr_reproject_interp(s.g, tsr_source_buffer_ref(s.g, TSR_F32, 2, shape, dqimg[i], s.tw[i]),
                                   s.target, &io);
    }
    o.combine = combines[c];
    o.dq = dq;
    tsr_node_t *m = tsr_coadd(s.g, 3, s.r, NULL, &o);
    ASSERT(m != NULL && tsr_node_dtype(m) == TSR_F64);
    ASSERT_OK(tsr_compute(s.g, m, NULL, got, sizeof got, NULL));
    ASSERT_OK(tsr_compute(s.g, tsr_coadd_product(s.g, m, TSR_COADD_DQ), NULL, gdq, sizeof gdq, NULL));
    for (int y = 0; y < 60; y++)
      for (int x = 0; x < 80; x++) {
        uint32_t and_v = 0xFFFFFFFFu, or_v = 0, q = 0, e;
        int n = 0;
        for (int i = 0; i < 3; i++) {
          double a = input_at(&s, i, x, y);
          if (a != a)
            continue;
          and_v &= (uint32_t)a, or_v |= (uint32_t)a, q |= 1u << (4 + i), n++;
        }
        if (n == 0) {
          ASSERT(got[y * 80 + x] != got[y * 80 + x]);
          ASSERT(gdq[y * 80 + x] == 0);
          continue;
        }
        e = c < 2 ? and_v : or_v;
        if (c % 2)
          e = ~e;
        same(got[y * 80 + x], (double)e);
        same(gdq[y * 80 + x], (double)q);
      }
    scene_close(&s);
  }
}

/* Counts the bytes tessera holds through its allocator: the most at once. */
typedef struct {
  size_t live, peak;
} mem_t;

static void *m_malloc(void *ud, size_t n) {
  mem_t *m = ud;
  size_t *p = malloc(n + 16);
  if (p == NULL)
    return NULL;
  p[0] = n;
  m->live += n;
  if (m->live > m->peak)
    m->peak = m->live;
  return (char *)p + 16;
}

static void m_free(void *ud, void *q) {
  mem_t *m = ud;
  if (q == NULL)
    return;
  size_t *p = (size_t *)((char *)q - 16);
  m->live -= p[0];
  free(p);
}

static void *m_realloc(void *ud, void *q, size_t n) {
  void *r = m_malloc(ud, n);
  if (r && q) {
    size_t old = ((size_t *)((char *)q - 16))[0];
    memcpy(r, q, old < n ? old : n);
  }
  if (r || n == 0)
    m_free(ud, q);
  return r;
}

/* A median and a clipped mosaic of 500 inputs that all overlap: each
 * block holds one window of each input covering it, never whole inputs.
 * The inputs are 128 x 128 on a 160 x 160 target, blocks 16 x 16: 500 whole
 * inputs (data and footprint) would be 65 MB, 500 blocks of them 1 MB (plus
 * each reprojection's per-run state). */
TEST(five_hundred_inputs_hold_one_block_each) {
  enum { N = 500, S = 128, T = 160 };
  static float img[S * S];
  static float out[T * T];
  for (int c = 0; c < 2; c++) {
    mem_t mem = {0, 0};
    tsr_ctx_options_t co = {{m_malloc, m_realloc, m_free, &mem}};
    tsr_ctx_t *ctx;
    tsr_graph_t *g;
    tsr_wcs_t *target, *tw[16];
    tsr_node_t **r = calloc(N, sizeof *r);
    tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
    int64_t shape[2] = {S, S};
    size_t before;
    ASSERT(r != NULL);
    for (int k = 0; k < S * S; k++)
      img[k] = (float)(k % 7);
    ASSERT_OK(tsr_ctx_new(&ctx, &co));
    ASSERT_OK(tsr_graph_new(ctx, &g));
    target = header(ctx, T, T, 1, 1);
    for (int j = 0; j < 16; j++)
      tw[j] = header(ctx, S, S, 1 - (j % 4) * 10, 1 - (j / 4) * 10);
    for (int i = 0; i < N; i++) {
      tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
      io.order = TSR_ORDER_NEAREST;
      io.block[0] = io.block[1] = 16;
      /* Distinct values per input, so the graph does not merge them. */
      float *own = malloc(sizeof img);
      for (int k = 0; k < S * S; k++)
        own[k] = img[k] + (float)(i % 5);
      r[i] = tsr_reproject_interp(g, tsr_source_buffer(g, TSR_F32, 2, shape, own, tw[i % 16]),
                                  target, &io);
      free(own);
    }
    o.combine = c ? TSR_COMBINE_CLIPPED : TSR_COMBINE_MEDIAN;
    tsr_node_t *m = tsr_coadd(g, N, r, NULL, &o);
    ASSERT(m != NULL);
    before = mem.live;
    mem.peak = mem.live;
    ASSERT_OK(tsr_compute(g, m, NULL, out, sizeof out, NULL));
    printf("# %s of %d inputs: %zu bytes held by the graph, %zu more at the peak of the run\n",
           tsr_combine_name(o.combine), N, before, mem.peak - before);
    if (mem.peak - before > 16u << 20)
      th_fail(__FILE__, __LINE__, "the run held %zu bytes at its peak; whole inputs are 65 MB, one "
              "block of each 1 MB", mem.peak - before);
    /* Where all 500 cover, the median of their values there. */
    {
      double *v = malloc(sizeof(double) * N);
      for (int i = 0; i < N; i++) {
        int j = i % 16, ox = (j % 4) * 10, oy = (j / 4) * 10;
        v[i] = img[(60 - oy) * S + (60 - ox)] + (float)(i % 5);
      }
      qsort(v, N, sizeof *v, cmpd);
      if (c == 0)
        same(out[60 * T + 60], 0.5 * (v[N / 2 - 1] + v[N / 2]));
      else
        ASSERT(out[60 * T + 60] >= v[0] && out[60 * T + 60] <= v[N - 1]);
      free(v);
    }
    for (int j = 0; j < 16; j++)
      tsr_wcs_free(tw[j]);
    tsr_wcs_free(target);
    tsr_graph_free(g);
    tsr_ctx_free(ctx);
    free(r);
  }
}

/* Weight maps of SWarp's four kinds become variances (infinite where
 * bad), data-quality bits blank data, and the background noise is found. */
TEST(weight_maps_of_every_kind_become_variances) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  float m[6] = {0.0f, 0.5f, 2.0f, 4.0f, NAN, -1.0f}, dq[6] = {0, 1, 2, 3, 0, 4};
  int64_t shape[2] = {6, 1};
  double got[6];
  /* Per type, with its default threshold, then with threshold 2. */
  static const double expect[4][2][6] = {
      {{INFINITY, 2.0, 0.5, 0.25, INFINITY, INFINITY}, {INFINITY, INFINITY, INFINITY, 0.25, INFINITY, INFINITY}},
      {{INFINITY, 0.5, 2.0, 4.0, INFINITY, INFINITY}, {INFINITY, 0.5, INFINITY, INFINITY, INFINITY, INFINITY}},
      {{INFINITY, 0.25, 4.0, 16.0, INFINITY, INFINITY}, {INFINITY, 0.25, INFINITY, INFINITY, INFINITY, INFINITY}}};
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *src = tsr_source_buffer_ref(g, TSR_F32, 2, shape, m, NULL);
  tsr_node_t *q = tsr_source_buffer_ref(g, TSR_F32, 2, shape, dq, NULL);
  ASSERT_INT_EQ(tsr_weight_type_parse("map_rms"), TSR_WEIGHT_MAP_RMS);
  ASSERT_INT_EQ(tsr_weight_type_parse("MAP_WEIGHTS"), -1);
  for (int t = 0; t < 3; t++)
    for (int th = 0; th < 2; th++) {
      tsr_weight_opts_t o = TSR_WEIGHT_OPTS_INIT;
      if (th)
        o.thresh = 2.0;
      ASSERT_OK(tsr_compute(g, tsr_variance_map(g, src, (tsr_weight_type_t)t, NULL, &o), NULL, got,
                            sizeof got, NULL));
      for (int k = 0; k < 6; k++)
        same(got[k], expect[t][th][k]);
    }
  {
    /* DQ bits 2: pixels 2 and 3 are bad; bits 0: any nonzero DQ. */
    tsr_weight_opts_t o = TSR_WEIGHT_OPTS_INIT;
    float data[6];
    o.dq_bits = 2;
    ASSERT_OK(tsr_compute(g, tsr_variance_map(g, src, TSR_WEIGHT_MAP_VARIANCE, q, &o), NULL, got,
                          sizeof got, NULL));
    same(got[1], 0.5), same(got[2], INFINITY), same(got[3], INFINITY);
    ASSERT_OK(tsr_compute(g, tsr_mask_dq(g, src, q, 2), NULL, data, sizeof data, NULL));
    ASSERT(data[1] == 0.5f && data[2] != data[2] && data[3] != data[3] && data[5] == -1.0f);
    ASSERT_OK(tsr_compute(g, tsr_mask_dq(g, src, q, 0), NULL, data, sizeof data, NULL));
    ASSERT(data[0] == 0.0f && data[1] != data[1] && data[5] != data[5]);
  }
  ASSERT(tsr_variance_map(g, src, (tsr_weight_type_t)7, NULL, NULL) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "weight type 7 out of range");
  tsr_graph_free(g);
  ASSERT_OK(tsr_graph_new(ctx, &g));
  {
    /* Gaussian noise of sigma 2 (Box-Muller, fixed seed) with a few bright
     * "stars": the background RMS is 2 within a few per cent, and a
     * region gives the same bits as the whole. */
    enum { W = 300, H = 200 };
    static float img[W * H];
    static double all[W * H], part[50 * 70];
    uint64_t st = 12345;
    int64_t sh[2] = {W, H};
    tsr_weight_opts_t o = TSR_WEIGHT_OPTS_INIT;
    for (int k = 0; k < W * H; k += 2) {
      double u1, u2;
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      u1 = ((st >> 11) + 1.0) / 9007199254740993.0;
      st = st * 6364136223846793005ull + 1442695040888963407ull;
      u2 = (st >> 11) / 9007199254740992.0;
      img[k] = (float)(10 + 2 * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
      img[k + 1] = (float)(10 + 2 * sqrt(-2 * log(u1)) * sin(2 * M_PI * u2));
    }
    for (int k = 0; k < W * H; k += 97)
      img[k] = 5000;
    o.back_size = 64;
    tsr_node_t *b = tsr_variance_map(g, tsr_source_buffer_ref(g, TSR_F32, 2, sh, img, NULL),
                                     TSR_WEIGHT_BACKGROUND, NULL, &o);
    ASSERT(b != NULL);
    ASSERT_OK(tsr_compute(g, b, NULL, all, sizeof all, NULL));
    for (int k = 0; k < W * H; k++)
      ASSERT_NEAR(all[k], 4.0, 0.4);
    tsr_region_t r = {{123, 77, 0, 0}, {173, 147, 1, 1}};
    ASSERT_OK(tsr_compute(g, b, &r, part, sizeof part, NULL));
    for (int y = 0; y < 70; y++)
      ASSERT(memcmp(part + y * 50, all + (y + 77) * W + 123, 50 * sizeof(double)) == 0);
  }
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* ------------------------------------------------------------------ */
/* More inputs than descriptors                                        */

/* A FITS image of nx x ny values (BITPIX -32 is read by mapping the file,
 * BITPIX 16 through cfitsio) on the scene's sky grid at pixel offset (ox,
 * oy) of the target. */
static void write_tile(const char *path, int bitpix, int nx, int ny, int ox, int oy,
                       const float *v) {
  char head[2880], card[81];
  size_t bytes = (size_t)nx * (size_t)ny * (size_t)(bitpix < 0 ? 4 : 2), pad = (2880 - bytes % 2880) % 2880;
  unsigned char *data = calloc(1, bytes + pad);
  int n = 0;
  FILE *f = fopen(path, "wb");
  ASSERT(f != NULL && data != NULL);
  memset(head, ' ', sizeof head);
#define CARD(...) (snprintf(card, sizeof card, __VA_ARGS__), memcpy(head + 80 * n++, card, strlen(card)))
  CARD("SIMPLE  =                    T");
  CARD("BITPIX  = %20d", bitpix);
  CARD("NAXIS   =                    2");
  CARD("NAXIS1  = %20d", nx);
  CARD("NAXIS2  = %20d", ny);
  CARD("CTYPE1  = 'RA---TAN'");
  CARD("CTYPE2  = 'DEC--TAN'");
  CARD("CRVAL1  =                 30.0");
  CARD("CRVAL2  =                 10.0");
  CARD("CRPIX1  = %20d", 1 - ox);
  CARD("CRPIX2  = %20d", 1 - oy);
  CARD("CDELT1  =               -0.001");
  CARD("CDELT2  =                0.001");
  CARD("END");
#undef CARD
  for (int k = 0; k < nx * ny; k++) {
    if (bitpix < 0) {
      uint32_t u;
      memcpy(&u, &v[k], 4);
      for (int b = 0; b < 4; b++)
        data[4 * k + b] = (unsigned char)(u >> (24 - 8 * b));
    } else {
      int16_t i = (int16_t)v[k];
      data[2 * k] = (unsigned char)((uint16_t)i >> 8), data[2 * k + 1] = (unsigned char)i;
    }
  }
  ASSERT(fwrite(head, 1, sizeof head, f) == sizeof head && fwrite(data, 1, bytes + pad, f) == bytes + pad);
  ASSERT(fclose(f) == 0);
  free(data);
}

static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = -1; /* not the DIR's own */
  ASSERT(d != NULL);
  while (readdir(d) != NULL)
    n++;
  closedir(d);
  return n - 2; /* . and .. */
}

/* The soft limit only, which can be raised again. */
static void limit_fds(rlim_t n) {
  struct rlimit rl;
  ASSERT(getrlimit(RLIMIT_NOFILE, &rl) == 0);
  rl.rlim_cur = n;
  ASSERT(setrlimit(RLIMIT_NOFILE, &rl) == 0);
}

/* Open /dev/null until the limit, so that nothing else can be opened;
 * returns how many, to be closed with free_fds. */
static int take_fds(int *fds, int cap) {
  int n = 0;
  while (n < cap && (fds[n] = open("/dev/null", O_RDONLY)) >= 0)
    n++;
  ASSERT(n < cap && errno == EMFILE);
  return n;
}

static void free_fds(const int *fds, int n) {
  for (int i = 0; i < n; i++)
    close(fds[i]);
}

enum { TILES_X = 12, TILES_Y = 8, TILE_W = 12, TILE_H = 10, TILE_STEP = 9, TILES = TILES_X * TILES_Y };
enum { MOSAIC_W = (TILES_X - 1) * TILE_STEP + TILE_W, MOSAIC_H = (TILES_Y - 1) * TILE_STEP + TILE_H };

/* Whether this process holds `path` open. */
static bool holds_open(const char *path) {
  DIR *d = opendir("/proc/self/fd");
  struct dirent *e;
  bool found = false;
  ASSERT(d != NULL);
  while (!found && (e = readdir(d)) != NULL) {
    char link[64], to[4096];
    ssize_t n;
    snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
    n = readlink(link, to, sizeof to - 1);
    found = n > 0 && (to[n] = '\0', strcmp(to, path) == 0);
  }
  closedir(d);
  return found;
}

typedef struct {
  int max_fds;       /* the most descriptors seen open between tasks */
  const char *touch; /* a file rewritten in place after the first task, or NULL */
  bool touched_open; /* it was open then */
} watch_t;

static void watch(void *ud, int64_t done, int64_t total) {
  watch_t *w = ud;
  int n = open_fds();
  (void)total;
  w->max_fds = n > w->max_fds ? n : w->max_fds;
  if (w->touch && done == 1) {
    /* The same byte again: the data are as they were, but the file's
     * modification and change times say it was rewritten. */
    int fd;
    char c;
    w->touched_open = holds_open(w->touch);
    fd = open(w->touch, O_RDWR);
    ASSERT(fd >= 0 && pread(fd, &c, 1, 0) == 1 && pwrite(fd, &c, 1, 0) == 1);
    close(fd);
  }
}

/* 96 overlapping tiles, every other one BITPIX 16, mosaicked from their
 * files and from the same values in memory. */
typedef struct {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_wcs_t *target, *tw[TILES];
  float *img[TILES];
  tsr_node_t *from_files, *from_memory;
} tiles_t;

static void tiles_open(tiles_t *t, int order, int64_t block) {
  tsr_node_t *rf[TILES], *rm[TILES];
  tsr_coadd_opts_t co = TSR_COADD_OPTS_INIT;
  int64_t shape[2] = {TILE_W, TILE_H};
  ASSERT_OK(tsr_ctx_new(&t->ctx, NULL));
  ASSERT_OK(tsr_graph_new(t->ctx, &t->g));
  t->target = header(t->ctx, MOSAIC_W, MOSAIC_H, 1, 1);
  for (int i = 0; i < TILES; i++) {
    int ox = i % TILES_X * TILE_STEP, oy = i / TILES_X * TILE_STEP;
    tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
    char name[32];
    t->tw[i] = header(t->ctx, TILE_W, TILE_H, 1 - ox, 1 - oy);
    t->img[i] = malloc(sizeof(float) * TILE_W * TILE_H);
    for (int k = 0; k < TILE_W * TILE_H; k++)
      t->img[i][k] = (float)((i * 37 + k * 11) % 1000) + (i % 2 ? 0.25f : 0.0f);
    snprintf(name, sizeof name, "tile%02d.fits", i);
    write_tile(th_path(name), i % 2 ? -32 : 16, TILE_W, TILE_H, ox, oy, t->img[i]);
    io.order = order;
    io.block[0] = io.block[1] = block;
    rf[i] = tsr_reproject_interp(t->g, tsr_source_fits(t->g, th_path(name), 0), t->target, &io);
    rm[i] = tsr_reproject_interp(t->g, tsr_source_buffer_ref(t->g, TSR_F32, 2, shape, t->img[i], t->tw[i]),
                                 t->target, &io);
  }
  co.block[0] = co.block[1] = block;
  t->from_files = tsr_coadd(t->g, TILES, rf, NULL, &co);
  t->from_memory = tsr_coadd(t->g, TILES, rm, NULL, &co);
  if (t->from_files == NULL || t->from_memory == NULL)
    th_fail(__FILE__, __LINE__, "%s", tsr_graph_errmsg(t->g));
}

static void tiles_close(tiles_t *t) {
  for (int i = 0; i < TILES; i++) {
    free(t->img[i]);
    tsr_wcs_free(t->tw[i]);
  }
  tsr_wcs_free(t->target);
  tsr_graph_free(t->g);
  tsr_ctx_free(t->ctx);
}

/* Under a limit of 40 descriptors a mosaic of 96 files gets the bits of
 * the same mosaic in memory, serially and on the pool, through copies
 * (bilinear) and views (bicubic) of the files, and holds at most
 * 40 / 4 = 10 of them open; with no descriptor left, running or building
 * names the limit.  (Each input held a descriptor until the run ended: 96
 * did not fit.) */
TEST(a_mosaic_of_more_files_than_descriptors_gets_the_same_bits) {
  static float ref[MOSAIC_W * MOSAIC_H], out[MOSAIC_W * MOSAIC_H];
  static const int orders[2] = {TSR_ORDER_BILINEAR, TSR_ORDER_BICUBIC};
  for (int o = 0; o < 2; o++) {
    tiles_t t;
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    watch_t w = {0, NULL, false};
    int fds[64], n, base;
    tiles_open(&t, orders[o], 16);
    ASSERT_OK(tsr_compute(t.g, t.from_memory, NULL, ref, sizeof ref, NULL));
    base = open_fds();
    limit_fds(40);
    ro.progress = watch;
    ro.progress_ud = &w;
    for (ro.jobs = 1; ro.jobs <= 2; ro.jobs++) {
      memset(out, 0, sizeof out);
      ASSERT_OK(tsr_compute(t.g, t.from_files, NULL, out, sizeof out, &ro));
      ASSERT(memcmp(ref, out, sizeof ref) == 0);
    }
    if (w.max_fds > base + 10)
      th_fail(__FILE__, __LINE__, "%d descriptors open between tasks, %d before the run", w.max_fds,
              base);
    n = take_fds(fds, 64);
    ASSERT(tsr_compute(t.g, t.from_files, NULL, out, sizeof out, NULL) == TSR_EIO);
    ASSERT_STR_CONTAINS(tsr_errmsg(t.ctx), "too many open files (the limit is 40 descriptors; raise it "
                                           "with ulimit -n)");
    ASSERT(tsr_source_fits(t.g, th_path("tile00.fits"), 0) == NULL);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(t.g), "tile00.fits\": too many open files (the limit is 40");
    free_fds(fds, n);
    limit_fds(1024);
    tiles_close(&t);
  }
}

/* A file closed by the pool and opened again is checked as it was first:
 * rewritten after the first task read it, the run fails as when it had
 * stayed open.  With 10 descriptors the pool keeps 2 files open, and the
 * first block reads tiles 0, 1, 12 and 13 in turn: tile 1, which the
 * second block reads too, is closed in between. */
TEST(an_input_reopened_after_a_change_fails_the_run) {
  static float out[MOSAIC_W * MOSAIC_H];
  tiles_t t;
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  char path[4096];
  watch_t w = {0, path, true};
  tiles_open(&t, TSR_ORDER_BICUBIC, 16);
  ASSERT(realpath(th_path("tile01.fits"), path) != NULL);
  limit_fds(10);
  ro.progress = watch;
  ro.progress_ud = &w;
  ASSERT(tsr_compute(t.g, t.from_files, NULL, out, sizeof out, &ro) == TSR_EIO);
  ASSERT_STR_CONTAINS(tsr_errmsg(t.ctx), "tile01.fits\" changed while it was read");
  ASSERT(!w.touched_open);
  tiles_close(&t);
}

/* cfitsio loaded with no descriptor to spare fails, saying so, and loads
 * at the next try.  (The failure stuck for the life of the process.) */
TEST(a_failed_cfitsio_load_is_tried_again) {
  tsr_ctx_t *ctx;
  int fds[64], n;
  if (tsr__cfitsio_loaded() != NULL)
    th_skip("cfitsio is loaded already");
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  limit_fds(32);
  n = take_fds(fds, 64);
  ASSERT(tsr__cfitsio(ctx) == NULL);
  ASSERT_INT_EQ(errno, EMFILE);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "too many open files (the limit is 32 descriptors");
  free_fds(fds, n);
  ASSERT(tsr__cfitsio(ctx) != NULL);
  ASSERT(tsr__cfitsio_loaded() != NULL);
  tsr_ctx_free(ctx);
}

TEST_MAIN()
