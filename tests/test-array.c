/* test-array.c -- array ops on small in-memory arrays against values
 * computed by hand: elementwise functions with broadcasting, reductions
 * with and without NaNs, slices that keep the WCS, stacks, concatenations,
 * user callbacks (also under the pool and the cache), lazy regions of
 * chained graphs, and bad calls. */
#include <math.h>
#include <stdbool.h>
#include <string.h>
#include <stdio.h>
#include <stdlib.h>
#include <tessera/tessera.h>

#include "harness.h"

static tsr_ctx_t *ctx;
static tsr_graph_t *g;

static void open_graph(void) {
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
}

static void close_graph(void) {
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

static tsr_node_t *arr(int ndim, int64_t nx, int64_t ny, const double *v) {
  int64_t shape[2] = {nx, ny};
  tsr_node_t *n = tsr_source_buffer(g, TSR_F64, ndim, shape, v, NULL);
  ASSERT(n != NULL);
  return n;
}

static void get(tsr_node_t *n, double *out, size_t count) {
  if (n == NULL)
    th_fail(__FILE__, __LINE__, "node: %s", tsr_graph_errmsg(g));
  ASSERT(tsr_node_dtype(n) == TSR_F64);
  ASSERT_OK(tsr_compute(g, n, NULL, out, count * sizeof(double), NULL));
}

static void same(double got, double want) {
  if (!((got != got && want != want) || got == want || fabs(got - want) <= 1e-12 * fabs(want)))
    th_fail(__FILE__, __LINE__, "got %.17g, expected %.17g", got, want);
}

TEST(elementwise_with_broadcasting_by_hand) {
  /* a is 3 x 2 (x fastest), b is 3 x 1 (broadcast along y), c is 1 x 2. */
  static const double a[6] = {1, -2, 4, NAN, INFINITY, 0.5};
  static const double b[3] = {2, 0, -1};
  static const double c[2] = {10, 20};
  double out[6];
  open_graph();
  tsr_node_t *A = arr(2, 3, 2, a), *B = arr(2, 3, 1, b), *Cn = arr(2, 1, 2, c);
  get(tsr_binary(g, TSR_ADD, A, B), out, 6);
  for (int k = 0; k < 6; k++)
    same(out[k], a[k] + b[k % 3]);
  get(tsr_binary(g, TSR_DIV, A, Cn), out, 6);
  for (int k = 0; k < 6; k++)
    same(out[k], a[k] / c[k / 3]);
  get(tsr_binary(g, TSR_MIN, A, B), out, 6);
  for (int k = 0; k < 6; k++)
    same(out[k], isnan(a[k]) ? NAN : fmin(a[k], b[k % 3]));
  get(tsr_binary(g, TSR_POW, A, B), out, 6);
  for (int k = 0; k < 6; k++)
    same(out[k], pow(a[k], b[k % 3]));
  get(tsr_binary_scalar(g, TSR_SUB, A, 3), out, 6);
  for (int k = 0; k < 6; k++)
    same(out[k], a[k] - 3);
  get(tsr_scalar_binary(g, TSR_SUB, 3, A), out, 6);
  for (int k = 0; k < 6; k++)
    same(out[k], 3 - a[k]);
  get(tsr_binary_scalar(g, TSR_MAX, A, 0.75), out, 6);
  for (int k = 0; k < 6; k++)
    same(out[k], isnan(a[k]) ? NAN : fmax(a[k], 0.75));
  {
    double (*fn[])(double) = {fabs, sqrt, exp, log, log10};
    for (int op = TSR_ABS; op <= TSR_LOG10; op++) {
      get(tsr_unary(g, op, A), out, 6);
      for (int k = 0; k < 6; k++)
        same(out[k], fn[op - TSR_ABS](a[k]));
    }
  }
  get(tsr_unary(g, TSR_ISNAN, A), out, 6);
  for (int k = 0; k < 6; k++)
    same(out[k], isnan(a[k]) ? 1 : 0);
  {
    /* Comparisons as numpy's: False with NaN, except !=. */
    for (int op = TSR_LT; op <= TSR_NE; op++) {
      get(tsr_binary(g, op, A, B), out, 6);
      for (int k = 0; k < 6; k++) {
        double x = a[k], y = b[k % 3];
        int want = op == TSR_LT ? x < y : op == TSR_LE ? x <= y : op == TSR_GT ? x > y
                 : op == TSR_GE ? x >= y : op == TSR_EQ ? x == y : x != y;
        same(out[k], want);
      }
    }
    get(tsr_scalar_binary(g, TSR_GT, 1, A), out, 6);
    for (int k = 0; k < 6; k++)
      same(out[k], 1 > a[k]);
    get(tsr_binary_scalar(g, TSR_NE, A, 0.5), out, 6);
    for (int k = 0; k < 6; k++)
      same(out[k], a[k] != 0.5);
  }
  get(tsr_clip(g, A, -1, 2), out, 6);
  for (int k = 0; k < 6; k++)
    same(out[k], isnan(a[k]) ? NAN : fmin(fmax(a[k], -1), 2));
  get(tsr_where(g, B, A, Cn), out, 6);
  for (int k = 0; k < 6; k++)
    same(out[k], b[k % 3] != 0 ? a[k] : c[k / 3]);
  get(tsr_nan_to_num(g, A, -7, NAN, NAN), out, 6);
  for (int k = 0; k < 6; k++)
    same(out[k], isnan(a[k]) ? -7 : isinf(a[k]) ? 1.7976931348623157e308 : a[k]);
  {
    float f[6];
    tsr_node_t *t = tsr_astype(g, A, TSR_F32);
    ASSERT(tsr_node_dtype(t) == TSR_F32);
    ASSERT_OK(tsr_compute(g, t, NULL, f, sizeof f, NULL));
    for (int k = 0; k < 6; k++)
      same(f[k], (float)a[k]);
  }
  /* Bad calls. */
  {
    double d[4] = {0};
    tsr_node_t *D = arr(2, 2, 2, d);
    ASSERT(tsr_binary(g, TSR_ADD, A, D) == NULL);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "add: shapes do not broadcast: axis 1 has 2");
  }
  close_graph();
  open_graph();
  ASSERT(tsr_unary(g, TSR_ADD, arr(1, 3, 1, b)) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "unary: op 0 is not abs, sqrt, exp, log, log10 or isnan");
  close_graph();
  open_graph();
  ASSERT(tsr_clip(g, arr(1, 3, 1, b), 2, 1) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "clip: bounds [2, 1]: expected lo <= hi");
  close_graph();
}

/* Copies its input: a way to give an array other chunks. */
static int identity(void *user, const tsr_block_t *b) {
  (void)user;
  memcpy(b->data, b->inputs[0], (size_t)tsr_region_size(&b->out) * sizeof(double));
  return 0;
}

TEST(reductions_with_and_without_nans_by_hand) {
  /* 4 x 3, one NaN in row 1; the all-axes reductions go through chunked
   * partial statistics: chunks of 3 x 2 here (a buffer is one chunk, so use
   * a slice to get several). */
  static const double v[12] = {1, 2, 3, 4, 5, NAN, 7, 8, -1, -2, 6, 0.5};
  double out[4];
  open_graph();
  tsr_node_t *A = arr(2, 4, 3, v);
  for (int nanok = 0; nanok < 2; nanok++)
    for (int op = TSR_REDUCE_SUM; op <= TSR_REDUCE_STD; op++) {
      /* Hand values over everything. */
      double s = 0, mn = INFINITY, mx = -INFINITY, cnt = 0, m2 = 0;
      int nn = 0;
      for (int k = 0; k < 12; k++)
        if (v[k] == v[k])
          s += v[k], mn = fmin(mn, v[k]), mx = fmax(mx, v[k]), cnt++;
        else
          nn++;
      for (int k = 0; k < 12; k++)
        if (v[k] == v[k])
          m2 += (v[k] - s / cnt) * (v[k] - s / cnt);
      double want[] = {s, s / cnt, mn, mx, nanok ? cnt : 12, sqrt(m2 / cnt)};
      get(tsr_reduce(g, op, A, -1, nanok), out, 1);
      if (op == TSR_REDUCE_STD || op == TSR_REDUCE_MEAN)
        ASSERT(fabs(out[0] - (!nanok && nn ? NAN : want[op])) < 1e-12 || (!nanok && out[0] != out[0]));
      else
        same(out[0], !nanok && nn && op != TSR_REDUCE_COUNT ? NAN : want[op]);
      /* Along axis 0 (rows): row 1 holds the NaN. */
      get(tsr_reduce(g, op, A, 0, nanok), out, 3);
      for (int y = 0; y < 3; y++) {
        double rs = 0, rmn = INFINITY, rmx = -INFINITY, rc = 0, rm2 = 0;
        bool rnan = false;
        for (int x = 0; x < 4; x++) {
          double e = v[y * 4 + x];
          if (e != e) {
            rnan = true;
            continue;
          }
          rs += e, rmn = fmin(rmn, e), rmx = fmax(rmx, e), rc++;
        }
        for (int x = 0; x < 4; x++)
          if (v[y * 4 + x] == v[y * 4 + x])
            rm2 += (v[y * 4 + x] - rs / rc) * (v[y * 4 + x] - rs / rc);
        double rw[] = {rs, rs / rc, rmn, rmx, nanok ? rc : 4, sqrt(rm2 / rc)};
        double w = !nanok && rnan && op != TSR_REDUCE_COUNT ? NAN : rw[op];
        ASSERT((out[y] != out[y] && w != w) || fabs(out[y] - w) <= 1e-12 * fmax(1, fabs(w)));
      }
    }
  /* Axis 1 (columns) sum, and a partial over several chunks equals one. */
  get(tsr_reduce(g, TSR_REDUCE_SUM, A, 1, 1), out, 4);
  same(out[0], 1 + 5 - 1), same(out[1], 2 + 0 - 2), same(out[2], 3 + 7 + 6), same(out[3], 4 + 8 + 0.5);
  {
    double big[1000];
    int64_t shape[2] = {40, 25};
    for (int k = 0; k < 1000; k++)
      big[k] = sin(k * 0.37) * 100 + (k % 97 == 0 ? NAN : 0);
    tsr_node_t *B = tsr_source_buffer(g, TSR_F64, 2, shape, big, NULL);
    tsr_map_blocks_opts_t o = TSR_MAP_BLOCKS_OPTS_INIT;
    o.name = "identity";
    o.dtype = TSR_F64;
    o.chunk[0] = 7, o.chunk[1] = 4; /* 6 x 7 chunks: the partials are merged */
    tsr_node_t *S = tsr_map_blocks(g, 1, &B, identity, NULL, &o);
    for (int op = TSR_REDUCE_SUM; op <= TSR_REDUCE_STD; op++) {
      double r1[1], r2[1], s = 0, c = 0, m2 = 0, mn = INFINITY, mx = -INFINITY;
      get(tsr_reduce(g, op, S, -1, 1), r1, 1);
      get(tsr_reduce(g, op, B, -1, 1), r2, 1);
      for (int k = 0; k < 1000; k++)
        if (big[k] == big[k])
          s += big[k], c++, mn = fmin(mn, big[k]), mx = fmax(mx, big[k]);
      for (int k = 0; k < 1000; k++)
        if (big[k] == big[k])
          m2 += (big[k] - s / c) * (big[k] - s / c);
      double want[] = {s, s / c, mn, mx, c, sqrt(m2 / c)};
      ASSERT(fabs(r1[0] - want[op]) <= 1e-9 * fmax(1, fabs(want[op])));
      ASSERT(fabs(r2[0] - want[op]) <= 1e-9 * fmax(1, fabs(want[op])));
    }
  }
  ASSERT(tsr_reduce(g, TSR_REDUCE_SUM, A, 2, 0) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "reduce: axis 2 out of range");
  close_graph();
}

TEST(slices_keep_the_wcs_stacks_and_concatenations) {
  static const char *hdr =
      "NAXIS = 2\nNAXIS1 = 30\nNAXIS2 = 20\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
      "CRVAL1 = 40.0\nCRVAL2 = -20.0\nCRPIX1 = 15.5\nCRPIX2 = 10.5\nCD1_1 = -0.001\n"
      "CD1_2 = 0.0002\nCD2_1 = 0.0003\nCD2_2 = 0.001\n";
  tsr_wcs_t *w;
  double img[600], out[600];
  int64_t shape[2] = {30, 20};
  open_graph();
  ASSERT_OK(tsr_wcs_parse(ctx, hdr, strlen(hdr), "t", 1, &w));
  for (int k = 0; k < 600; k++)
    img[k] = k;
  tsr_node_t *A = tsr_source_buffer(g, TSR_F64, 2, shape, img, w);
  int64_t st[2] = {3, 2}, sp[2] = {28, 19}, step[2] = {3, 2};
  tsr_node_t *S = tsr_slice(g, A, st, sp, step);
  ASSERT(S != NULL);
  ASSERT_INT_EQ(tsr_node_shape(S, 0), 9);
  ASSERT_INT_EQ(tsr_node_shape(S, 1), 9);
  get(S, out, 81);
  for (int y = 0; y < 9; y++)
    for (int x = 0; x < 9; x++)
      same(out[y * 9 + x], img[(2 + 2 * y) * 30 + 3 + 3 * x]);
  {
    /* Every sliced pixel keeps its world position. */
    double xs = 4, ys = 5, xo = 3 + 3 * xs, yo = 2 + 2 * ys, l1, b1, l2, b2;
    ASSERT_OK(tsr_wcs_pix2world(ctx, tsr_node_wcs(S), 1, &xs, &ys, &l1, &b1));
    ASSERT_OK(tsr_wcs_pix2world(ctx, w, 1, &xo, &yo, &l2, &b2));
    ASSERT(fabs(l1 - l2) < 1e-10 && fabs(b1 - b2) < 1e-10);
  }
  {
    /* A cutout centred on a pixel's world position starts where expected. */
    double x = 12, y = 7, lon, lat;
    ASSERT_OK(tsr_wcs_pix2world(ctx, w, 1, &x, &y, &lon, &lat));
    tsr_node_t *C = tsr_cutout(g, A, lon, lat, 5, 3);
    ASSERT(C != NULL);
    get(C, out, 15);
    same(out[0], img[6 * 30 + 10]);
    same(out[14], img[8 * 30 + 14]);
  }
  {
    tsr_node_t *two[2] = {A, S};
    ASSERT(tsr_stack(g, 2, two, 2) == NULL);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "stack: input 2");
  }
  tsr_wcs_free(w);
  close_graph();
  open_graph();
  {
    double a[6] = {1, 2, 3, 4, 5, 6}, b[4] = {7, 8, 9, 10};
    int64_t sa[2] = {3, 2}, sb[2] = {2, 2};
    tsr_node_t *A2 = tsr_source_buffer(g, TSR_F64, 2, sa, a, NULL);
    tsr_node_t *B2 = tsr_source_buffer(g, TSR_F64, 2, sb, b, NULL);
    tsr_node_t *both[2] = {A2, B2}, *same2[2] = {A2, A2};
    tsr_node_t *Cc = tsr_concatenate(g, 2, both, 0);
    ASSERT_INT_EQ(tsr_node_shape(Cc, 0), 5);
    get(Cc, out, 10);
    static const double want[10] = {1, 2, 3, 7, 8, 4, 5, 6, 9, 10};
    for (int k = 0; k < 10; k++)
      same(out[k], want[k]);
    tsr_node_t *St = tsr_stack(g, 2, same2, 2);
    ASSERT_INT_EQ(tsr_node_ndim(St), 3);
    ASSERT_INT_EQ(tsr_node_shape(St, 2), 2);
    get(St, out, 12);
    for (int k = 0; k < 12; k++)
      same(out[k], a[k % 6]);
  }
  close_graph();
}

/* A 3 x 3 box mean, with NaN where the box leaves the image: needs a halo of 1. */
static int box_mean(void *user, const tsr_block_t *b) {
  int *calls = user;
  const double *in = b->inputs[0];
  const tsr_region_t *ir = &b->in_regions[0];
  int64_t iw = ir->stop[0] - ir->start[0], ow = b->out.stop[0] - b->out.start[0];
  if (b->dtype != TSR_F64 || b->in_dtypes[0] != TSR_F64)
    return TSR_EINVAL;
  (*calls)++;
  for (int64_t y = b->out.start[1]; y < b->out.stop[1]; y++)
    for (int64_t x = b->out.start[0]; x < b->out.stop[0]; x++) {
      double s = 0;
      int n = 0;
      for (int64_t dy = -1; dy <= 1; dy++)
        for (int64_t dx = -1; dx <= 1; dx++) {
          int64_t u = x + dx, v = y + dy;
          if (u < ir->start[0] || v < ir->start[1] || u >= ir->stop[0] || v >= ir->stop[1])
            continue;
          s += in[(v - ir->start[1]) * iw + (u - ir->start[0])], n++;
        }
      ((double *)b->data)[(y - b->out.start[1]) * ow + (x - b->out.start[0])] = n == 9 ? s / 9 : NAN;
    }
  return 0;
}

static int always_fails(void *user, const tsr_block_t *b) {
  (void)user, (void)b;
  return -1;
}

TEST(user_callbacks_serial_pool_cache_and_regions) {
  double img[64 * 48], ref[64 * 48], out[64 * 48];
  int64_t shape[2] = {64, 48};
  int calls = 0;
  open_graph();
  for (int k = 0; k < 64 * 48; k++)
    img[k] = cos(k * 0.01) * 5 + k % 7;
  tsr_node_t *A = tsr_source_buffer(g, TSR_F64, 2, shape, img, NULL);
  tsr_map_blocks_opts_t o = TSR_MAP_BLOCKS_OPTS_INIT;
  o.name = "box_mean";
  o.dtype = TSR_F64;
  o.chunk[0] = 16, o.chunk[1] = 12;
  o.halo[0] = o.halo[1] = 1;
  tsr_node_t *M = tsr_map_blocks(g, 1, &A, box_mean, &calls, &o);
  ASSERT(M != NULL);
  get(M, ref, 64 * 48);
  ASSERT(calls == 16);
  for (int y = 0; y < 48; y++)
    for (int x = 0; x < 64; x++) {
      double s = 0;
      if (x == 0 || y == 0 || x == 63 || y == 47) {
        ASSERT(ref[y * 64 + x] != ref[y * 64 + x]);
        continue;
      }
      for (int dy = -1; dy <= 1; dy++)
        for (int dx = -1; dx <= 1; dx++)
          s += img[(y + dy) * 64 + x + dx];
      ASSERT(fabs(ref[y * 64 + x] - s / 9) < 1e-12);
    }
  {
    /* A chained region: (box_mean(A) * 2 + A) over a box equals the slice. */
    tsr_node_t *C = tsr_binary(g, TSR_ADD, tsr_binary_scalar(g, TSR_MUL, M, 2), A);
    tsr_region_t r = {{5, 7, 0, 0}, {41, 30, 1, 1}};
    double full[64 * 48], part[36 * 23];
    get(C, full, 64 * 48);
    ASSERT_OK(tsr_compute(g, C, &r, part, sizeof part, NULL));
    for (int y = 7; y < 30; y++)
      ASSERT(memcmp(part + (y - 7) * 36, full + y * 64 + 5, 36 * sizeof(double)) == 0);
  }
  {
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    tsr_cache_t *cache;
    ro.jobs = 2;
    ASSERT_OK(tsr_compute(g, M, NULL, out, sizeof out, &ro));
    ASSERT(memcmp(ref, out, sizeof ref) == 0);
    ASSERT_OK(tsr_cache_open(ctx, th_path("cache"), 1 << 26, &cache));
    ro.cache = cache;
    ro.jobs = 1;
    calls = 0;
    ASSERT_OK(tsr_compute(g, M, NULL, out, sizeof out, &ro));
    ASSERT(calls == 16 && memcmp(ref, out, sizeof ref) == 0);
    calls = 0;
    ASSERT_OK(tsr_compute(g, M, NULL, out, sizeof out, &ro)); /* all from the cache */
    ASSERT(calls == 0 && memcmp(ref, out, sizeof ref) == 0);
    tsr_cache_close(cache);
  }
  {
    tsr_node_t *F;
    o.name = "always_fails";
    F = tsr_map_blocks(g, 1, &A, always_fails, NULL, &o);
    ASSERT(tsr_compute(g, F, NULL, out, sizeof out, NULL) != 0);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "always_fails");
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "the callback failed (returned -1) on block");
  }
  close_graph();
  open_graph();
  {
    tsr_node_t *A3 = tsr_source_buffer(g, TSR_F64, 2, shape, img, NULL);
    tsr_map_blocks_opts_t bad = TSR_MAP_BLOCKS_OPTS_INIT;
    bad.name = "bad";
    bad.dtype = 7;
    ASSERT(tsr_map_blocks(g, 1, &A3, box_mean, NULL, &bad) == NULL);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "map_blocks \"bad\": output dtype 7; expected float32 or float64");
  }
  close_graph();
}

/* A callback source over img (64 x 48 doubles): counts the values asked
 * for and checks each window lies inside the image. */
typedef struct {
  const double *img;
  _Atomic long values, calls;
  int fail;
  _Atomic int sparse_seen, dense_seen;   /* windows of sparse and of other runs */
} cb_user_t;

static int img_window(void *user, const tsr_block_t *b) {
  cb_user_t *u = user;
  double *d = b->data;
  if (u->fail || b->n_inputs != 0 || b->dtype != TSR_F64 || b->out.start[0] < 0 ||
      b->out.stop[0] > 64 || b->out.start[1] < 0 || b->out.stop[1] > 48)
    return -1;
  for (int64_t y = b->out.start[1]; y < b->out.stop[1]; y++)
    for (int64_t x = b->out.start[0]; x < b->out.stop[0]; x++)
      *d++ = u->img[y * 64 + x];
  u->values += (long)tsr_region_size(&b->out);
  u->calls++;
  if (b->sparse)
    u->sparse_seen++;
  else
    u->dense_seen++;
  return 0;
}

static const char test_hdr[] =
    "NAXIS   = 2\nNAXIS1  = 64\nNAXIS2  = 48\nCTYPE1  = 'RA---TAN'\nCTYPE2  = 'DEC--TAN'\n"
    "CRPIX1  = 32.5\nCRPIX2  = 24.5\nCRVAL1  = 150.0\nCRVAL2  = 2.0\nCDELT1  = -0.001\n"
    "CDELT2  = 0.001\n";
static const char test_target[] =
    "NAXIS   = 2\nNAXIS1  = 40\nNAXIS2  = 30\nCTYPE1  = 'RA---TAN'\nCTYPE2  = 'DEC--TAN'\n"
    "CRPIX1  = 20.5\nCRPIX2  = 15.5\nCRVAL1  = 150.003\nCRVAL2  = 2.002\nCDELT1  = -0.0012\n"
    "CDELT2  = 0.0012\nCROTA2  = 20\n";

TEST(source_callback_reads_only_the_windows_asked_for) {
  double img[64 * 48], ref[40 * 30], out[40 * 30], fp[40 * 30], fp2[40 * 30];
  int64_t shape[2] = {64, 48};
  cb_user_t u = {img, 0, 0, 0, 0, 0};
  tsr_wcs_t *w, *t;
  open_graph();
  for (int k = 0; k < 64 * 48; k++)
    img[k] = sin(k * 0.013) * 3 + (k % 11) * 0.25;
  ASSERT_OK(tsr_wcs_parse(ctx, test_hdr, sizeof test_hdr - 1, "img", 1, &w));
  ASSERT_OK(tsr_wcs_parse(ctx, test_target, sizeof test_target - 1, "target", 1, &t));
  tsr_source_callback_opts_t o = {0};
  o.name = "img";
  o.params = "v1";
  o.params_len = 2;
  o.dtype = TSR_F64;
  o.ndim = 2;
  o.shape[0] = 64, o.shape[1] = 48;
  o.wcs = w;
  tsr_node_t *C = tsr_source_callback(g, img_window, &u, &o);
  tsr_node_t *B = tsr_source_buffer(g, TSR_F64, 2, shape, img, w);
  ASSERT(C != NULL && B != NULL);
  ASSERT(tsr_source_callback(g, img_window, &u, &o) == C); /* same description: merged */
  {
    /* A region of an op reads just that window of the source. */
    tsr_region_t r = {{5, 7, 0, 0}, {41, 30, 1, 1}};
    double part[36 * 23];
    ASSERT_OK(tsr_compute(g, tsr_binary_scalar(g, TSR_MUL, C, 2), &r, part, sizeof part, NULL));
    for (int y = 7; y < 30; y++)
      for (int x = 5; x < 41; x++)
        ASSERT(part[(y - 7) * 36 + x - 5] == 2 * img[y * 64 + x]);
    ASSERT(u.values == 36 * 23);
  }
  /* Reprojected, the same bits as the buffer on every executor, reading
   * only windows the output blocks need. */
  tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
  io.block[0] = 16, io.block[1] = 16;
  tsr_node_t *RB = tsr_reproject_interp(g, B, t, &io), *RC = tsr_reproject_interp(g, C, t, &io);
  ASSERT(RB != NULL && RC != NULL);
  get(RB, ref, 40 * 30);
  for (int e = 0; e < 3; e++) {
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    ro.jobs = e == 0 ? 1 : 2;
    ro.executor = e == 2 ? TSR_EXECUTOR_PROCESSES : TSR_EXECUTOR_THREADS;
    u.values = u.calls = 0;
    memset(out, 0, sizeof out);
    ASSERT_OK(tsr_compute(g, RC, NULL, out, sizeof out, &ro));
    ASSERT(memcmp(ref, out, sizeof out) == 0);
    if (e < 2) /* the pool's workers count in their own memory */
      if (u.calls != 6 || u.values >= 64 * 48 * 2)
        th_fail(__FILE__, __LINE__, "executor %d: %ld calls, %ld values", e, (long)u.calls, (long)u.values);
  }
  {
    /* Data and footprint at once: the op runs once for both. */
    tsr_node_t *planes[2] = {RC, tsr_footprint(g, RC)};
    void *dsts[2] = {out, fp};
    u.calls = 0;
    ASSERT_OK(tsr_compute_planes(g, 2, planes, NULL, dsts, sizeof out, NULL));
    ASSERT(u.calls == 6 && memcmp(ref, out, sizeof out) == 0);
    ASSERT_OK(tsr_compute(g, planes[1], NULL, fp2, sizeof fp2, NULL));
    ASSERT(memcmp(fp, fp2, sizeof fp) == 0);
    planes[1] = RC;
    ASSERT(tsr_compute_planes(g, 2, planes, NULL, dsts, sizeof out, NULL) == TSR_EINVAL);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "is asked for twice");
    planes[1] = RB;
    ASSERT(tsr_compute_planes(g, 2, planes, NULL, dsts, sizeof out, NULL) == TSR_EINVAL);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "is not a plane of");
  }
  {
    /* A small region (under 1/16 of the output) is a sparse run: sources
     * are told so, to read just their windows. */
    tsr_region_t r = {{20, 10, 0, 0}, {26, 16, 1, 1}};
    double part[36];
    ASSERT(u.dense_seen > 0 && u.sparse_seen == 0);
    ASSERT_OK(tsr_compute(g, RC, &r, part, sizeof part, NULL));
    ASSERT(u.sparse_seen > 0);
    for (int y = 10; y < 16; y++)
      for (int x = 20; x < 26; x++)
        ASSERT(part[(y - 10) * 6 + x - 20] == ref[y * 40 + x] ||
               (part[(y - 10) * 6 + x - 20] != part[(y - 10) * 6 + x - 20] && ref[y * 40 + x] != ref[y * 40 + x]));
  }
  u.fail = 1;
  ASSERT(tsr_compute(g, RC, NULL, out, sizeof out, NULL) != 0);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "the callback failed (returned -1) on window");
  tsr_wcs_free(w);
  tsr_wcs_free(t);
  close_graph();
  {
    tsr_source_callback_opts_t bad = o;
    ASSERT_OK(tsr_ctx_new(&ctx, NULL));
    ASSERT_OK(tsr_graph_new(ctx, &g));
    bad.wcs = NULL;
    bad.dtype = 7;
    ASSERT(tsr_source_callback(g, img_window, &u, &bad) == NULL);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "source_callback \"img\": dtype 7; expected float32");
    tsr_graph_free(g);
    ASSERT_OK(tsr_graph_new(ctx, &g));
    bad.dtype = TSR_F64;
    bad.shape[1] = 0;
    ASSERT(tsr_source_callback(g, img_window, &u, &bad) == NULL);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "axis 2 has length 0; expected 1 to 2^40");
    tsr_graph_free(g);
    tsr_ctx_free(ctx);
  }
}

TEST_MAIN()
