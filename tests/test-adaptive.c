/* test-adaptive.c -- reproject_adaptive with known answers, on in-memory
 * images: a linear ramp through the identity, anti-aliasing of a stripe
 * pattern when down-sampling, flux conservation, the NaN pixels each
 * boundary and bad-value mode gives, the flipped-and-down-sampled kernel
 * (our documented difference from reproject), bit-identical results across
 * block sizes and regions, cubes, outputs past 2^31 pixels, and option
 * validation messages. */
#include <tessera/tessera.h>

#include "harness.h"

typedef struct {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
} env_t;

static void env_open(env_t *e) {
  ASSERT_OK(tsr_ctx_new(&e->ctx, NULL));
  ASSERT_OK(tsr_graph_new(e->ctx, &e->g));
}

static void env_close(env_t *e) {
  tsr_graph_free(e->g);
  tsr_ctx_free(e->ctx);
}

/* A TAN header for an nx x ny image at (150, 2); cdelt1 is given signed
 * (negative = the usual east-left orientation). */
static tsr_wcs_t *make_wcs(env_t *e, int64_t nx, int64_t ny, double crpix1, double crpix2,
                           double cdelt1, double cdelt2, const char *extra) {
  char hdr[4096];
  tsr_wcs_t *w = NULL;
  snprintf(hdr, sizeof hdr,
           "NAXIS   = 2\nNAXIS1  = %lld\nNAXIS2  = %lld\nCTYPE1  = 'RA---TAN'\n"
           "CTYPE2  = 'DEC--TAN'\nCRVAL1  = 150.0\nCRVAL2  = 2.0\nCRPIX1  = %.12f\n"
           "CRPIX2  = %.12f\nCDELT1  = %.15g\nCDELT2  = %.15g\n%s",
           (long long)nx, (long long)ny, crpix1, crpix2, cdelt1, cdelt2, extra ? extra : "");
  if (tsr_wcs_parse(e->ctx, hdr, strlen(hdr), "test header", 1, &w) != 0)
    th_fail(__FILE__, __LINE__, "header: %s", tsr_errmsg(e->ctx));
  return w;
}

static double *compute(env_t *e, tsr_node_t *n, const tsr_region_t *r) {
  tsr_region_t full = tsr_region_of(n);
  size_t count;
  double *out;
  if (r == NULL)
    r = &full;
  count = (size_t)tsr_region_size(r);
  out = malloc(count * sizeof(double));
  if (tsr_compute(e->g, n, r, out, count * sizeof(double), NULL) != 0)
    th_fail(__FILE__, __LINE__, "compute: %s", tsr_errmsg(e->ctx));
  return out;
}

static tsr_node_t *adaptive(env_t *e, tsr_node_t *src, tsr_wcs_t *target, tsr_adaptive_opts_t *o) {
  tsr_node_t *n;
  o->dtype = TSR_F64;
  n = tsr_reproject_adaptive(e->g, src, target, o);
  if (n == NULL)
    th_fail(__FILE__, __LINE__, "reproject_adaptive: %s", tsr_graph_errmsg(e->g));
  return n;
}

static int count_nan(const double *d, size_t n) {
  int c = 0;
  for (size_t i = 0; i < n; i++)
    c += isnan(d[i]);
  return c;
}

TEST(identity_keeps_constants_and_hann_keeps_a_linear_ramp) {
  /* Weights are normalised, so a constant stays exact; the Hann kernel is
   * zero at +-1 px, so on the identity it samples a symmetric 3 x 3 and a
   * linear function keeps its value.  (The Gaussian's truncated box rounds
   * inward from c +- 2 and is symmetric only up to the rounding of c.) */
  env_t e;
  env_open(&e);
  tsr_wcs_t *w = make_wcs(&e, 50, 40, 25.5, 20.5, -1e-3, 1e-3, NULL);
  double *d = malloc(sizeof(double) * 50 * 40), *c = malloc(sizeof(double) * 50 * 40);
  for (int y = 0; y < 40; y++)
    for (int x = 0; x < 50; x++)
      d[y * 50 + x] = 3.0 + 0.25 * x - 0.5 * y, c[y * 50 + x] = 4.25;
  int64_t shape[2] = {50, 40};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, w);
  tsr_node_t *csrc = tsr_source_buffer(e.g, TSR_F64, 2, shape, c, w);
  for (int k = 0; k < 2; k++) {
    tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
    o.kernel = k ? TSR_KERNEL_HANN : TSR_KERNEL_GAUSSIAN;
    double *out = compute(&e, adaptive(&e, k ? src : csrc, w, &o), NULL);
    int finite = 0;
    for (int i = 0; i < 50 * 40; i++)
      if (!isnan(out[i])) {
        ASSERT_NEAR(out[i], k ? d[i] : 4.25, 1e-9);
        finite++;
      }
    /* Strict mode: at least the pixels whose box is inside by a margin. */
    ASSERT(finite >= (k ? 46 * 36 : 44 * 34));
    free(out);
  }
  free(d);
  free(c);
  tsr_wcs_free(w);
  env_close(&e);
}

/* Standard deviation of the finite values. */
static double stddev(const double *d, size_t n, double *mean) {
  double s = 0, s2 = 0;
  int c = 0;
  for (size_t i = 0; i < n; i++)
    if (!isnan(d[i]))
      s += d[i], s2 += d[i] * d[i], c++;
  *mean = s / c;
  return sqrt(fmax(0, s2 / c - *mean * *mean));
}

TEST(down_sampling_does_not_alias_stripes) {
  /* Stripes of period 2.5 px sampled onto pixels 4 times larger: point
   * sampling (interp) aliases them into a strong beat; the adaptive kernel
   * averages them away. */
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 200, 200, 100.5, 100.5, -1e-3, 1e-3, NULL);
  tsr_wcs_t *wout = make_wcs(&e, 40, 40, 20.5, 20.5, -4e-3, 4e-3, "CROTA2  = 20\n");
  double *d = malloc(sizeof(double) * 200 * 200);
  for (int y = 0; y < 200; y++)
    for (int x = 0; x < 200; x++)
      d[y * 200 + x] = sin(2 * 3.141592653589793 * x / 2.5);
  int64_t shape[2] = {200, 200};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
  tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
  double *ad = compute(&e, adaptive(&e, src, wout, &o), NULL);
  tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
  io.dtype = TSR_F64;
  double *ip = compute(&e, tsr_reproject_interp(e.g, src, wout, &io), NULL);
  double m1, m2;
  double s_ad = stddev(ad, 1600, &m1), s_ip = stddev(ip, 1600, &m2);
  if (!(s_ad < 0.02 && s_ip > 0.3))
    th_fail(__FILE__, __LINE__, "stripe amplitude: adaptive %g, interp %g", s_ad, s_ip);
  free(ad);
  free(ip);
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  env_close(&e);
}

/* Gaussian sources well inside an nx x ny image. */
static double *sources(int nx, int ny) {
  double *d = malloc(sizeof(double) * (size_t)nx * (size_t)ny);
  static const double src[][4] = {{40, 50, 3, 100}, {90, 70, 2, 50}, {60, 110, 5, 80},
                                  {120, 120, 1.5, 30}, {100, 40, 4, 60}};
  for (int y = 0; y < ny; y++)
    for (int x = 0; x < nx; x++) {
      double v = 0;
      for (int k = 0; k < 5; k++) {
        double dx = x - src[k][0], dy = y - src[k][1];
        v += src[k][3] * exp(-(dx * dx + dy * dy) / (2 * src[k][2] * src[k][2]));
      }
      d[y * nx + x] = v;
    }
  return d;
}

TEST(conserve_flux_keeps_the_total_within_half_a_percent) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 160, 160, 80.5, 80.5, -1e-3, 1e-3, NULL);
  double *d = sources(160, 160);
  int64_t shape[2] = {160, 160};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
  double total = 0;
  for (int i = 0; i < 160 * 160; i++)
    total += d[i];
  /* Down by 2.3 and rotated; up by 1/0.6 and rotated the other way. */
  const double scale[2] = {2.3e-3, 0.6e-3};
  const char *rot[2] = {"CROTA2  = 30\n", "CROTA2  = -17\n"};
  for (int c = 0; c < 2; c++) {
    int64_t n = (int64_t)(200e-3 / scale[c]);
    tsr_wcs_t *wout = make_wcs(&e, n, n, n / 2.0 + 0.5, n / 2.0 + 0.5, -scale[c], scale[c], rot[c]);
    for (int k = 0; k < 2; k++) {
      tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
      o.conserve_flux = 1;
      o.kernel = k ? TSR_KERNEL_HANN : TSR_KERNEL_GAUSSIAN;
      o.boundary_mode = TSR_BOUNDARY_IGNORE;
      double *out = compute(&e, adaptive(&e, src, wout, &o), NULL);
      double sum = 0;
      for (int64_t i = 0; i < n * n; i++)
        if (!isnan(out[i]))
          sum += out[i];
      if (!(fabs(sum / total - 1) < 5e-3))
        th_fail(__FILE__, __LINE__, "scale %g kernel %d: sum %g vs %g", scale[c], k, sum, total);
      free(out);
    }
    tsr_wcs_free(wout);
  }
  free(d);
  tsr_wcs_free(win);
  env_close(&e);
}

/* A 40 x 40 input; a 50 x 50 target shifted by 5.5 px, so that output pixel
 * x maps to input x - 5.5 and a Gaussian box (half-width 2) covers input
 * pixels x-7 .. x-4. */
TEST(boundary_modes_give_the_expected_nan_pixels) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 40, 40, 20.5, 20.5, -1e-3, 1e-3, NULL);
  tsr_wcs_t *wout = make_wcs(&e, 50, 50, 26.0, 26.0, -1e-3, 1e-3, NULL);
  double *d = malloc(sizeof(double) * 1600);
  for (int i = 0; i < 1600; i++)
    d[i] = 1.0 + (i % 7) * 0.1;
  int64_t shape[2] = {40, 40};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
  /* Per axis: strict keeps x-7 >= 0 and x-4 <= 39 (x in [7, 43], 37
   * pixels); modes that need one sample inside keep x-4 >= 0 and x-7 <= 39
   * (x in [4, 46], 43 pixels); grid-constant and nearest keep all. */
  struct { int mode; int finite; } want[] = {
      {TSR_BOUNDARY_STRICT, 37 * 37},   {TSR_BOUNDARY_CONSTANT, 43 * 43},
      {TSR_BOUNDARY_GRID_CONSTANT, 2500}, {TSR_BOUNDARY_IGNORE, 43 * 43},
      {TSR_BOUNDARY_NEAREST, 2500}};
  for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
    tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
    o.boundary_mode = want[k].mode;
    o.boundary_fill_value = 7.0;
    double *out = compute(&e, adaptive(&e, src, wout, &o), NULL);
    ASSERT_INT_EQ(2500 - count_nan(out, 2500), want[k].finite);
    if (want[k].mode == TSR_BOUNDARY_GRID_CONSTANT)
      ASSERT_NEAR(out[0], 7.0, 0); /* fully outside: the fill value */
    free(out);
  }
  /* ignore_threshold: threshold 1 is ignore, threshold 0 is strict, to the
   * bit (reproject's tests compare them with assert_array_equal). */
  for (int k = 0; k < 2; k++) {
    tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT, same = TSR_ADAPTIVE_OPTS_INIT;
    o.boundary_mode = TSR_BOUNDARY_IGNORE_THRESHOLD;
    o.boundary_ignore_threshold = k ? 1.0 : 0.0;
    same.boundary_mode = k ? TSR_BOUNDARY_IGNORE : TSR_BOUNDARY_STRICT;
    double *out = compute(&e, adaptive(&e, src, wout, &o), NULL);
    double *ref = compute(&e, adaptive(&e, src, wout, &same), NULL);
    ASSERT_INT_EQ(2500 - count_nan(out, 2500), k ? 43 * 43 : 37 * 37);
    ASSERT(memcmp(out, ref, 2500 * sizeof(double)) == 0);
    free(out);
    free(ref);
  }
  /* x cyclic: every x samples the input (wrapped); y as in strict. */
  {
    tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
    o.x_cyclic = 1;
    double *out = compute(&e, adaptive(&e, src, wout, &o), NULL);
    ASSERT_INT_EQ(2500 - count_nan(out, 2500), 50 * 37);
    free(out);
  }
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  env_close(&e);
}

TEST(bad_value_modes) {
  /* The shifted geometry of the boundary test: output x samples input
   * x-7 .. x-4, so a NaN at input (20, 20) is in the boxes of outputs
   * x, y in [24, 27]. */
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 40, 40, 20.5, 20.5, -1e-3, 1e-3, NULL);
  tsr_wcs_t *wout = make_wcs(&e, 50, 50, 26.0, 26.0, -1e-3, 1e-3, NULL);
  double *d = malloc(sizeof(double) * 1600);
  for (int i = 0; i < 1600; i++)
    d[i] = 2.0;
  d[20 * 40 + 20] = NAN;
  int64_t shape[2] = {40, 40};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
  int edge_nan = 2500 - 37 * 37;
  for (int mode = TSR_BAD_STRICT; mode <= TSR_BAD_CONSTANT; mode++) {
    tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
    o.bad_value_mode = mode;
    o.bad_fill_value = 4.0;
    double *out = compute(&e, adaptive(&e, src, wout, &o), NULL);
    ASSERT_INT_EQ(count_nan(out, 2500), edge_nan + (mode == TSR_BAD_STRICT ? 16 : 0));
    if (mode == TSR_BAD_IGNORE)
      ASSERT_NEAR(out[25 * 50 + 25], 2.0, 1e-12);
    if (mode == TSR_BAD_CONSTANT)
      ASSERT(out[25 * 50 + 25] > 2.1 && out[25 * 50 + 25] < 4.0);
    free(out);
  }
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  env_close(&e);
}

TEST(flipped_and_down_sampled_axis_is_averaged) {
  /* The same sky twice: once stored east-left (CDELT1 < 0), once mirrored
   * (CDELT1 > 0, data reversed in x).  The mirrored input makes det J < 0;
   * reproject pads the signed singular value, so its kernel along that axis
   * collapses to one input pixel and the result differs (aliased).  We pad
   * the magnitude: both inputs give the same output. */
  env_t e;
  env_open(&e);
  int nx = 160, ny = 160;
  tsr_wcs_t *wa = make_wcs(&e, nx, ny, 80.5, 80.5, -1e-3, 1e-3, NULL);
  tsr_wcs_t *wb = make_wcs(&e, nx, ny, 80.5, 80.5, 1e-3, 1e-3, NULL);
  tsr_wcs_t *wout = make_wcs(&e, 30, 30, 15.5, 15.5, -4e-3, 4e-3, "CROTA2  = 15\n");
  double *da = malloc(sizeof(double) * (size_t)(nx * ny)), *db = malloc(sizeof(double) * (size_t)(nx * ny));
  for (int y = 0; y < ny; y++)
    for (int x = 0; x < nx; x++) {
      da[y * nx + x] = sin(2 * 3.141592653589793 * x / 2.5) + 0.01 * x;
      db[y * nx + (nx - 1 - x)] = da[y * nx + x];
    }
  int64_t shape[2] = {nx, ny};
  tsr_node_t *sa = tsr_source_buffer(e.g, TSR_F64, 2, shape, da, wa);
  tsr_node_t *sb = tsr_source_buffer(e.g, TSR_F64, 2, shape, db, wb);
  double *stripes = calloc((size_t)(nx * ny), sizeof(double)); /* hashed when the node is made */
  tsr_node_t *ss = tsr_source_buffer_ref(e.g, TSR_F64, 2, shape, stripes, wb);
  for (int k = 0; k < 2; k++) {
    tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
    o.kernel = k ? TSR_KERNEL_HANN : TSR_KERNEL_GAUSSIAN;
    double *oa = compute(&e, adaptive(&e, sa, wout, &o), NULL);
    double *ob = compute(&e, adaptive(&e, sb, wout, &o), NULL);
    for (int i = 0; i < 900; i++) {
      ASSERT_INT_EQ(isnan(oa[i]), isnan(ob[i]));
      if (!isnan(oa[i]))
        ASSERT_NEAR(oa[i], ob[i], 1e-9);
    }
    /* The stripes alone (mirrored input) average to nearly nothing. */
    for (int i = 0; i < nx * ny; i++)
      stripes[i] = db[i] - 0.01 * (nx - 1 - i % nx);
    double *os = compute(&e, adaptive(&e, ss, wout, &o), NULL);
    for (int i = 0; i < 900; i++)
      if (!isnan(os[i]) && !(fabs(os[i]) < 0.05))
        th_fail(__FILE__, __LINE__, "kernel %d: stripe residue %g at %d", k, os[i], i);
    free(os);
    free(oa);
    free(ob);
  }
  free(da);
  free(db);
  tsr_wcs_free(wa);
  tsr_wcs_free(wb);
  tsr_wcs_free(wout);
  env_close(&e);
  free(stripes);
}

/* Bits of a run with block (bx, by) over region r. */
static double *run_blocks(env_t *e, tsr_node_t *src, tsr_wcs_t *wout, tsr_adaptive_opts_t base,
                          int64_t bx, int64_t by, const tsr_region_t *r) {
  base.block[0] = bx;
  base.block[1] = by;
  return compute(e, adaptive(e, src, wout, &base), r);
}

TEST(block_size_and_region_invariance_bit_for_bit) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 150, 130, 75.5, 65.5, -1e-3, 1e-3, NULL);
  /* A SIN target: the grid mapping, not the TAN homography. */
  char extra[] = "CROTA2  = 33\n";
  char hdr[1024];
  snprintf(hdr, sizeof hdr,
           "NAXIS   = 2\nNAXIS1  = 120\nNAXIS2  = 100\nCTYPE1  = 'GLON-SIN'\nCTYPE2  = 'GLAT-SIN'\n"
           "CRVAL1  = 236.9546\nCRVAL2  = 41.9051\nCRPIX1  = 60.5\nCRPIX2  = 50.5\nCDELT1  = -1.4e-3\n"
           "CDELT2  = 1.4e-3\n%s", extra);
  tsr_wcs_t *wout = NULL;
  ASSERT_OK(tsr_wcs_parse(e.ctx, hdr, strlen(hdr), "sin target", 1, &wout));
  double *d = sources(150, 130);
  int64_t shape[2] = {150, 130};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
  for (int variant = 0; variant < 4; variant++) {
    tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
    o.boundary_mode = TSR_BOUNDARY_IGNORE;
    if (variant == 1)
      o.center_jacobian = 1;
    if (variant == 2)
      o.despike_jacobian = 1, o.kernel = TSR_KERNEL_HANN;
    if (variant == 3)
      o.boundary_mode = TSR_BOUNDARY_NEAREST, o.conserve_flux = 1;
    double *ref = run_blocks(&e, src, wout, o, 0, 0, NULL);
    ASSERT(count_nan(ref, 12000) < 12000);
    const int64_t blocks[][2] = {{37, 23}, {1, 100}, {120, 1}, {64, 64}};
    for (size_t b = 0; b < 4; b++) {
      double *got = run_blocks(&e, src, wout, o, blocks[b][0], blocks[b][1], NULL);
      if (memcmp(got, ref, 12000 * sizeof(double)) != 0)
        th_fail(__FILE__, __LINE__, "variant %d block %lldx%lld differs", variant,
                (long long)blocks[b][0], (long long)blocks[b][1]);
      free(got);
    }
    tsr_region_t r = {{13, 29, 0, 0}, {71, 88, 1, 1}};
    double *sub = run_blocks(&e, src, wout, o, 16, 16, &r);
    for (int64_t y = 29; y < 88; y++)
      if (memcmp(sub + (y - 29) * 58, ref + y * 120 + 13, 58 * sizeof(double)) != 0)
        th_fail(__FILE__, __LINE__, "variant %d region row %lld differs", variant, (long long)y);
    free(sub);
    free(ref);
  }
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  env_close(&e);
}

TEST(cube_planes_match_single_plane_runs) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *w2 = make_wcs(&e, 60, 50, 30.5, 25.5, -1e-3, 1e-3, NULL);
  tsr_wcs_t *wout = make_wcs(&e, 40, 40, 20.5, 20.5, -1.7e-3, 1.7e-3, "CROTA2  = 12\n");
  tsr_wcs_t *w3 = make_wcs(&e, 60, 50, 30.5, 25.5, -1e-3, 1e-3,
                           "NAXIS   = 3\nNAXIS3  = 3\nCTYPE3  = 'FREQ'\nCRVAL3  = 1e9\n"
                           "CDELT3  = 1e6\nCRPIX3  = 1\n");
  double *cube = malloc(sizeof(double) * 60 * 50 * 3);
  for (int i = 0; i < 60 * 50 * 3; i++)
    cube[i] = sin(0.37 * (i % 60)) + cos(0.23 * ((i / 60) % 50)) * (1 + i / 3000);
  cube[3000 + 25 * 60 + 30] = NAN; /* a NaN in plane 1 only */
  int64_t s3[3] = {60, 50, 3}, s2[2] = {60, 50};
  tsr_node_t *c = tsr_source_buffer(e.g, TSR_F64, 3, s3, cube, w3);
  tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
  o.bad_value_mode = TSR_BAD_IGNORE;
  o.boundary_mode = TSR_BOUNDARY_CONSTANT;
  tsr_node_t *n3 = adaptive(&e, c, wout, &o);
  ASSERT_INT_EQ(tsr_node_ndim(n3), 3);
  ASSERT_INT_EQ(tsr_node_shape(n3, 2), 3);
  double *out3 = compute(&e, n3, NULL);
  for (int p = 0; p < 3; p++) {
    tsr_node_t *s = tsr_source_buffer(e.g, TSR_F64, 2, s2, cube + p * 3000, w2);
    double *out2 = compute(&e, adaptive(&e, s, wout, &o), NULL);
    if (memcmp(out2, out3 + p * 1600, 1600 * sizeof(double)) != 0)
      th_fail(__FILE__, __LINE__, "plane %d differs from its own run", p);
    free(out2);
  }
  free(out3);
  free(cube);
  tsr_wcs_free(w2);
  tsr_wcs_free(w3);
  tsr_wcs_free(wout);
  env_close(&e);
}

TEST(outputs_past_2_pow_31_pixels) {
  /* A 60000 x 60000 target (3.6e9 pixels) whose far corner holds the input:
   * reproject #579 returns all-NaN here. */
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 64, 64, 32.5, 32.5, -1e-3, 1e-3, NULL);
  tsr_wcs_t *wout = make_wcs(&e, 60000, 60000, 59032.5, 59032.5, -1e-3, 1e-3, NULL);
  double *d = malloc(sizeof(double) * 64 * 64);
  for (int i = 0; i < 64 * 64; i++)
    d[i] = 5.0;
  int64_t shape[2] = {64, 64};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
  tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
  tsr_node_t *n = adaptive(&e, src, wout, &o);
  tsr_region_t r = {{59000, 59000, 0, 0}, {59064, 59064, 1, 1}};
  double *out = compute(&e, n, &r);
  ASSERT_NEAR(out[32 * 64 + 32], 5.0, 1e-12);
  for (int i = 0; i < 64 * 64; i++)
    if (!isnan(out[i]))
      ASSERT_NEAR(out[i], 5.0, 1e-12);
  ASSERT(count_nan(out, 64 * 64) <= 64 * 64 - 58 * 58);
  free(out);
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  env_close(&e);
}

TEST(options_are_validated_when_building) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *w = make_wcs(&e, 20, 20, 10.5, 10.5, -1e-3, 1e-3, NULL);
  double d[400] = {0};
  int64_t shape[2] = {20, 20};
  struct { tsr_adaptive_opts_t o; const char *msg; } cases[6];
  for (int k = 0; k < 6; k++) {
    tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
    cases[k].o = o;
  }
  cases[0].o.kernel_width = 0, cases[0].msg = "kernel_width 0 out of range (0, 100]";
  cases[1].o.sample_region_width = -1, cases[1].msg = "sample_region_width -1 out of range (0, 100]";
  cases[2].o.boundary_mode = 9, cases[2].msg = "boundary_mode 9 out of range [0, 5]";
  cases[3].o.boundary_ignore_threshold = 1.5, cases[3].msg = "boundary_ignore_threshold 1.5 out of range [0, 1]";
  cases[4].o.bad_value_mode = -1, cases[4].msg = "bad_value_mode -1 out of range [0, 2]";
  cases[5].o.kernel = 2, cases[5].msg = "kernel 2 out of range [0, 1]";
  for (int k = 0; k < 6; k++) {
    tsr_graph_t *g;
    ASSERT_OK(tsr_graph_new(e.ctx, &g));
    tsr_node_t *src = tsr_source_buffer(g, TSR_F64, 2, shape, d, w);
    ASSERT(tsr_reproject_adaptive(g, src, w, &cases[k].o) == NULL);
    ASSERT_INT_EQ(tsr_graph_status(g), TSR_EINVAL);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), cases[k].msg);
    tsr_graph_free(g);
  }
  ASSERT_INT_EQ(tsr_kernel_parse("Hanning"), TSR_KERNEL_HANN);
  ASSERT_INT_EQ(tsr_boundary_parse("grid-constant"), TSR_BOUNDARY_GRID_CONSTANT);
  ASSERT_INT_EQ(tsr_bad_value_parse("ignore"), TSR_BAD_IGNORE);
  ASSERT_INT_EQ(tsr_boundary_parse("wrap"), -1);
  tsr_wcs_free(w);
  env_close(&e);
}

TEST_MAIN()
