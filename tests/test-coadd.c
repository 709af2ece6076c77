/* test-coadd.c -- mosaics on in-memory images: known answers for every
 * combine function, weights and blank, regions and block sizes, the pool
 * and the cache, background offsets, the optimal WCS, and bad calls. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <tessera/tessera.h>
#include <unistd.h>

#include "harness.h"

typedef struct {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_wcs_t *target;
  tsr_wcs_t *tw[3];
  float *img[3];
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

static void scene_close(scene_t *s) {
  for (int i = 0; i < 3; i++) {
    free(s->img[i]);
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

static void same(double a, double b) {
  if (!((a != a && b != b) || fabs(a - b) <= 1e-6 * fmax(1.0, fabs(b))))
    th_fail(__FILE__, __LINE__, "got %.9g, expected %.9g", a, b);
}

TEST(every_combine_function_by_hand) {
  for (int c = TSR_COMBINE_MEAN; c <= TSR_COMBINE_MEDIAN; c++)
    for (int weighted = 0; weighted < 2; weighted++) {
      scene_t s;
      tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
      double w[3] = {1.0, 0.5, 3.0};
      tsr_node_t *wn[3] = {NULL, NULL, NULL};
      float *wimg[3];
      int64_t shape[2] = {40, 30};
      scene_open(&s, 0);
      for (int i = 0; i < 3; i++) {
        wimg[i] = malloc(sizeof(float) * 40 * 30);
        for (int k = 0; k < 40 * 30; k++)
          wimg[i][k] = (float)w[i];
        if (weighted) {
          tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
          io.order = TSR_ORDER_NEAREST;
          wn[i] = tsr_reproject_interp(s.g, tsr_source_buffer_ref(s.g, TSR_F32, 2, shape, wimg[i], s.tw[i]),
                                       s.target, &io);
        }
      }
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
      for (int i = 0; i < 3; i++)
        free(wimg[i]);
      scene_close(&s);
    }
}

TEST(regions_blocks_pool_and_cache_give_the_same_bits) {
  scene_t s;
  float ref[80 * 60], out[80 * 60];
  scene_open(&s, 16);
  tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
  o.combine = TSR_COMBINE_MEDIAN;
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
  o.frame = "supergalactic";
  ASSERT(tsr_optimal_wcs(s.ctx, 3, (const tsr_wcs_t *const *)s.tw, &o, &w) == TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(s.ctx), "frame 'supergalactic': expected icrs, fk5, galactic or ecliptic");
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
      {"coadd: combine 9 out of range", 3},
      {"coadd: weight 2", 4},
      {"coadd: input 3 is NULL", 5},
  };
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    scene_t s;
    tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
    tsr_node_t *in[3], *w[3] = {NULL, NULL, NULL};
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
    case 3: o.combine = 9; break;
    case 4: w[1] = tsr_source_buffer_ref(s.g, TSR_F32, 2, small, s.img[0], NULL); break;
    case 5: in[2] = NULL; break;
    }
    ASSERT(tsr_coadd(s.g, n, in, cases[k].what == 4 ? w : NULL, &o) == NULL);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(s.g), cases[k].msg);
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
    tsr_map_blocks_opts_t mo = {0};
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

TEST_MAIN()
