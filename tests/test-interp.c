/* test-interp.c -- reproject_interp with known answers, on in-memory images:
 * identity, integer shifts, a 90 degree rotation, NaN stencils, cubes,
 * block-size and region invariance, grid accuracy, frame rotations
 * against astropy, and SWarp's Lanczos kernels (values, edges, NaN). */
#include <tessera/tessera.h>

#include "harness.h"
#include "internal.h"
#include "lanczos.h"
#include "mapping.h"
#include "sky.h"

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

/* A header for an nx x ny image; `extra` cards override the defaults. */
static tsr_wcs_t *make_wcs(env_t *e, int nx, int ny, const char *ctype1, const char *ctype2,
                           double crval1, double crval2, double crpix1, double crpix2,
                           double cdelt, const char *extra) {
  char hdr[4096];
  tsr_wcs_t *w = NULL;
  snprintf(hdr, sizeof hdr,
           "NAXIS   = 2\nNAXIS1  = %d\nNAXIS2  = %d\nCTYPE1  = '%s'\nCTYPE2  = '%s'\n"
           "CRVAL1  = %.12f\nCRVAL2  = %.12f\nCRPIX1  = %.12f\nCRPIX2  = %.12f\n"
           "CDELT1  = %.15g\nCDELT2  = %.15g\n%s",
           nx, ny, ctype1, ctype2, crval1, crval2, crpix1, crpix2, -cdelt, cdelt, extra ? extra : "");
  if (tsr_wcs_parse(e->ctx, hdr, strlen(hdr), "test header", 1, &w) != 0)
    th_fail(__FILE__, __LINE__, "header: %s", tsr_errmsg(e->ctx));
  return w;
}

static float *smooth_image(int nx, int ny, unsigned seed) {
  float *d = malloc(sizeof(float) * (size_t)nx * (size_t)ny);
  for (int y = 0; y < ny; y++)
    for (int x = 0; x < nx; x++)
      d[y * nx + x] = (float)(10 + 3 * sin(0.11 * x + seed) + 2 * cos(0.07 * y - 0.3 * seed) +
                              0.01 * x * y / nx);
  return d;
}

static float *reproject(env_t *e, tsr_node_t *src, tsr_wcs_t *target, tsr_interp_opts_t *o,
                        const tsr_region_t *r) {
  tsr_node_t *n = tsr_reproject_interp(e->g, src, target, o);
  tsr_region_t full;
  size_t count;
  float *out;
  if (n == NULL)
    th_fail(__FILE__, __LINE__, "reproject_interp: %s", tsr_graph_errmsg(e->g));
  full = tsr_region_of(n);
  if (r == NULL)
    r = &full;
  count = (size_t)tsr_region_size(r);
  out = malloc(count * sizeof(float));
  if (tsr_compute(e->g, n, r, out, count * sizeof(float), NULL) != 0)
    th_fail(__FILE__, __LINE__, "compute: %s", tsr_errmsg(e->ctx));
  return out;
}

/* out(x, y) = in(x - 3, y + 2) on 40 x 30 images, NaN off the input. */
static void assert_shifted_3_2(const float *out, const float *in) {
  for (int y = 0; y < 30; y++)
    for (int x = 0; x < 40; x++) {
      int xi = x - 3, yi = y + 2;
      float v = out[y * 40 + x];
      if (xi < 0 || yi >= 30)
        ASSERT(isnan(v));
      else
        ASSERT_NEAR(v, in[yi * 40 + xi], 1e-4);
    }
}

/* An all-sky CAR image onto a TSC target with exact mapping: rows of the
 * target cross the edges of the cube's faces, where output pixels map to NaN
 * between valid ones.  The unchecked bilinear path once took such a row (a
 * NaN not first in the row escaped its min/max test) and read at
 * (int64_t)NaN: a crash under ASan, garbage otherwise.  Every output pixel
 * must be NaN or within the input's range. */
TEST(nan_coordinates_inside_a_row_take_the_checked_path) {
  env_t e;
  env_open(&e);
  /* The geometry of the conformance case that crashed. */
  enum { IW = 1440, IH = 720, OW = 1600, OH = 800 };
  tsr_wcs_t *in = make_wcs(&e, IW, IH, "GLON-CAR", "GLAT-CAR", 30, 10, 722.3, 362.2, 0.25, NULL);
  tsr_wcs_t *out = make_wcs(&e, OW, OH, "GLON-TSC", "GLAT-TSC", 0, 0, 802.37, 402.21, 0.25, NULL);
  float *d = smooth_image(IW, IH, 3);
  int64_t shape[2] = {IW, IH};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, in);
  tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
  o.mapping_tolerance = 0;
  float *r = reproject(&e, src, out, &o, NULL);
  int nan = 0, finite = 0;
  float lo = d[0], hi = d[0];
  for (int k = 1; k < IW * IH; k++)
    lo = d[k] < lo ? d[k] : lo, hi = d[k] > hi ? d[k] : hi;
  for (int k = 0; k < OW * OH; k++) {
    if (r[k] != r[k]) {
      nan++;
      continue;
    }
    finite++;
    ASSERT(r[k] >= lo && r[k] <= hi); /* bilinear never leaves the input's range */
  }
  ASSERT(nan > 0 && finite > 0);
  free(r);
  free(d);
  tsr_wcs_free(in);
  tsr_wcs_free(out);
  env_close(&e);
}

TEST(identity_reproduces_the_input) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *w = make_wcs(&e, 60, 50, "RA---TAN", "DEC--TAN", 150, 2, 30.5, 25.5, 0.001, NULL);
  float *d = smooth_image(60, 50, 1);
  int64_t shape[2] = {60, 50};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, w);
  for (int order = 0; order <= 3; order++) {
    tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
    o.order = order;
    float *out = reproject(&e, src, w, &o, NULL);
    for (int i = 0; i < 60 * 50; i++)
      ASSERT_NEAR(out[i], d[i], order == 0 ? 0 : 2e-5);
    free(out);
  }
  free(d);
  tsr_wcs_free(w);
  env_close(&e);
}

TEST(integer_shift_moves_pixels) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 40, 30, "RA---SIN", "DEC--SIN", 30, -40, 20.5, 15.5, 0.002, NULL);
  /* The target's reference pixel is 3 right and 2 down: out(x, y) = in(x - 3, y + 2). */
  tsr_wcs_t *wout = make_wcs(&e, 40, 30, "RA---SIN", "DEC--SIN", 30, -40, 23.5, 13.5, 0.002, NULL);
  float *d = smooth_image(40, 30, 2);
  int64_t shape[2] = {40, 30};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, win);
  for (int order = 0; order <= 1; order++) {
    tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
    o.order = order;
    o.mapping_tolerance = 0;
    float *out = reproject(&e, src, wout, &o, NULL);
    assert_shifted_3_2(out, d);
    free(out);
  }
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  env_close(&e);
}

TEST(rotation_by_90_degrees) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 33, 33, "RA---TAN", "DEC--TAN", 200, 10, 17, 17, 0.001, NULL);
  tsr_wcs_t *wout = make_wcs(&e, 33, 33, "RA---TAN", "DEC--TAN", 200, 10, 17, 17, 0.001,
                             "PC1_1   = 0.0\nPC1_2   = -1.0\nPC2_1   = 1.0\nPC2_2   = 0.0\n");
  float *d = smooth_image(33, 33, 3);
  int64_t shape[2] = {33, 33};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, win);
  tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
  o.order = 0;
  float *out = reproject(&e, src, wout, &o, NULL);
  /* Output intermediate coords: CDELT . PC . (x - 16, y - 16) = (cd (y - 16), cd (x - 16))
   * with CDELT1 = -cd, so the input pixel is (16 - (y - 16), 16 + (x - 16)). */
  for (int y = 0; y < 33; y++)
    for (int x = 0; x < 33; x++) {
      int xi = 16 - (y - 16), yi = 16 + (x - 16);
      ASSERT_NEAR(out[y * 33 + x], d[yi * 33 + xi], 0);
    }
  free(out);
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  env_close(&e);
}

/* A 40 x 40 input and an 80 x 80 target of half its pixels over the same
 * sky: output pixel x is input pixel 19.5 + (x - 39.5) / 2. */
static void half_pixel_pair(env_t *e, tsr_wcs_t **w, tsr_wcs_t **half) {
  *w = make_wcs(e, 40, 40, "RA---TAN", "DEC--TAN", 10, 10, 20.5, 20.5, 0.001, NULL);
  *half = make_wcs(e, 80, 80, "RA---TAN", "DEC--TAN", 10, 10, 40.5, 40.5, 0.0005, NULL);
}

TEST(nan_spoils_only_its_stencil) {
  env_t e;
  tsr_wcs_t *w, *half;
  env_open(&e);
  half_pixel_pair(&e, &w, &half);
  float *d = smooth_image(40, 40, 4);
  int64_t shape[2] = {40, 40};
  d[20 * 40 + 20] = NAN;
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, w);
  for (int order = 0; order <= 3; order++) {
    tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
    o.order = order;
    float *out = reproject(&e, src, half, &o, NULL);
    int nan = 0, far_nan = 0;
    for (int y = 0; y < 80; y++)
      for (int x = 0; x < 80; x++) {
        /* Output pixel centre in input pixels. */
        double xi = 20 + (x - 39.5) * 0.5, yi = 20 + (y - 39.5) * 0.5;
        double dist = fmax(fabs(xi - 20), fabs(yi - 20));
        if (isnan(out[y * 80 + x])) {
          nan++;
          if (dist > (order + 1) * 0.5 + 0.5)
            far_nan++;
        }
      }
    ASSERT(nan > 0);
    ASSERT_INT_EQ(far_nan, 0);
    if (order == 1)
      ASSERT_INT_EQ(nan, 16); /* outputs whose 2x2 stencil holds input (20, 20) */
    free(out);
  }
  free(d);
  tsr_wcs_free(w);
  tsr_wcs_free(half);
  env_close(&e);
}

/* Every block size, region and order gives the same bits (grid anchored globally). */
TEST(block_size_and_regions_are_invisible) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 150, 130, "RA---SIN", "DEC--SIN", 120, 35, 75, 65, 0.002, NULL);
  tsr_wcs_t *wout = make_wcs(&e, 140, 120, "GLON-ZEA", "GLAT-ZEA", 0, 0, 70, 60, 0.0023,
                             "PC1_1 = 0.9\nPC1_2 = 0.4358898944\nPC2_1 = -0.4358898944\nPC2_2 = 0.9\n");
  /* Put the output's centre on the input's: ICRS (120, 35) in Galactic. */
  tsr__wcs_set(wout, "CRVAL1", "185.8417588");
  tsr__wcs_set(wout, "CRVAL2", "28.4505547");
  float *d = smooth_image(150, 130, 5);
  int64_t shape[2] = {150, 130};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, win);
  const int64_t blocks[][2] = {{0, 0}, {16, 16}, {37, 53}, {140, 1}, {7, 120}};
  for (int order = 0; order <= TSR_ORDER_LANCZOS4; order++)
    for (int t = 0; t < 2; t++) {
      float *ref = NULL;
      int finite = 0;
      for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
        tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
        o.order = order;
        o.mapping_tolerance = t ? 0 : 1e-4;
        o.block[0] = blocks[b][0];
        o.block[1] = blocks[b][1];
        float *out = reproject(&e, src, wout, &o, NULL);
        if (ref == NULL) {
          ref = out;
          for (int i = 0; i < 140 * 120; i++)
            finite += isfinite(ref[i]);
          ASSERT(finite > 140 * 120 / 3);
          continue;
        }
        ASSERT(memcmp(ref, out, sizeof(float) * 140 * 120) == 0);
        free(out);
      }
      /* A region is the same slice of the whole. */
      {
        tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
        tsr_region_t r = {{33, 41, 0, 0}, {97, 58, 1, 1}};
        o.order = order;
        o.mapping_tolerance = t ? 0 : 1e-4;
        o.block[0] = o.block[1] = 32;
        float *part = reproject(&e, src, wout, &o, &r);
        for (int y = 41; y < 58; y++)
          ASSERT(memcmp(part + (y - 41) * 64, ref + y * 140 + 33, 64 * sizeof(float)) == 0);
        free(part);
      }
      free(ref);
    }
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  env_close(&e);
}

/* Bilinear interpolation of a ramp is exact, so the output is the mapped
 * coordinate: the grid stays within its tolerance of exact transforms. */
TEST(grid_mapping_within_tolerance) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 400, 400, "RA---ZEA", "DEC--ZEA", 60, 60, 200, 200, 0.01, NULL);
  tsr_wcs_t *wout = make_wcs(&e, 300, 300, "RA---AIT", "DEC--AIT", 62, 58, 150, 150, 0.012, NULL);
  double *d = malloc(sizeof(double) * 400 * 400);
  int64_t shape[2] = {400, 400};
  for (int y = 0; y < 400; y++)
    for (int x = 0; x < 400; x++)
      d[y * 400 + x] = x;
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
  double *res[2];
  for (int t = 0; t < 2; t++) {
    tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
    o.mapping_tolerance = t ? 0 : 1e-4;
    tsr_node_t *n = tsr_reproject_interp(e.g, src, wout, &o);
    ASSERT(n != NULL);
    res[t] = malloc(sizeof(double) * 300 * 300);
    ASSERT_OK(tsr_compute(e.g, n, NULL, res[t], sizeof(double) * 300 * 300, NULL));
  }
  double maxerr = 0;
  int both = 0;
  for (int i = 0; i < 300 * 300; i++) {
    ASSERT_INT_EQ(isnan(res[0][i]), isnan(res[1][i]));
    if (!isnan(res[0][i])) {
      maxerr = fmax(maxerr, fabs(res[0][i] - res[1][i]));
      both++;
    }
  }
  ASSERT(both > 1000);
  ASSERT(maxerr <= 1e-4);
  free(res[0]);
  free(res[1]);
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  env_close(&e);
}

/* Splines over an input of several coefficient tiles, with NaNs on and
 * next to tile seams and at the image edges: an output is NaN exactly when
 * its support (scipy's, mirrored at the edges) holds a NaN sample, and every
 * block size and region gives the same bits, also under rotation. */
TEST(spline_tiles_nan_supports_and_blocks) {
  env_t e;
  env_open(&e);
  const int nx = 560, ny = 530, ox = 700, oy = 660;
  tsr_wcs_t *win = make_wcs(&e, nx, ny, "RA---TAN", "DEC--TAN", 30, 10, 280.37, 265.41, 0.001, NULL);
  tsr_wcs_t *wout = make_wcs(&e, ox, oy, "RA---TAN", "DEC--TAN", 30, 10, 350.5, 330.5, 0.0008, NULL);
  tsr_wcs_t *wrot = make_wcs(&e, ox, oy, "RA---TAN", "DEC--TAN", 30, 10, 350.5, 330.5, 0.0008,
                             "PC1_1 = 0.8660254038\nPC1_2 = 0.5\nPC2_1 = -0.5\nPC2_2 = 0.8660254038\n");
  float *d = smooth_image(nx, ny, 7);
  static const int holes[][2] = {{254, 100}, {255, 300}, {256, 257}, {511, 511}, {512, 40},
                                 {0, 0},     {559, 529}, {300, 529}, {0, 300},   {401, 401}};
  int64_t shape[2] = {nx, ny};
  for (size_t h = 0; h < sizeof holes / sizeof holes[0]; h++)
    d[holes[h][1] * nx + holes[h][0]] = NAN;
  for (int y = 400; y < 403; y++)
    for (int x = 400; x < 403; x++)
      d[y * nx + x] = NAN;
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, win);
  for (int order = 2; order <= 3; order++) {
    tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
    o.order = order;
    o.mapping_tolerance = 0;
    float *out = reproject(&e, src, wout, &o, NULL);
    int checked = 0, nans = 0;
    for (int y = 0; y < oy; y++)
      for (int x = 0; x < ox; x++) {
        /* Same tangent point, no rotation: the mapping is linear. */
        double xi = 279.37 + (x - 349.5) * 0.8, yi = 264.41 + (y - 329.5) * 0.8;
        bool inside = xi >= -0.5 && xi <= nx - 0.5 && yi >= -0.5 && yi <= ny - 0.5;
        double sx = order == 3 ? floor(xi + 1) - 1 : floor(xi + 1.5) - 1;
        double sy = order == 3 ? floor(yi + 1) - 1 : floor(yi + 1.5) - 1;
        double fx = order == 3 ? xi + 1 : xi + 1.5, fy = order == 3 ? yi + 1 : yi + 1.5;
        bool spoiled = false;
        if (fabs(fx - floor(fx + 0.5)) < 1e-3 || fabs(fy - floor(fy + 0.5)) < 1e-3)
          continue; /* too close to a support boundary to call */
        for (int l = 0; inside && l <= order; l++)
          for (int k = 0; k <= order; k++) {
            /* Padded index p, mirrored into [0, n + 2), holds data[clamp(p - 1)]. */
            int64_t px = (int64_t)sx + k, py = (int64_t)sy + l, Px = nx + 2, Py = ny + 2;
            px = px < 0 ? -px : px >= Px ? 2 * (Px - 1) - px : px;
            py = py < 0 ? -py : py >= Py ? 2 * (Py - 1) - py : py;
            int64_t dx = px - 1 < 0 ? 0 : px - 1 > nx - 1 ? nx - 1 : px - 1;
            int64_t dy = py - 1 < 0 ? 0 : py - 1 > ny - 1 ? ny - 1 : py - 1;
            spoiled |= isnan(d[dy * nx + dx]);
          }
        ASSERT_INT_EQ(isnan(out[y * ox + x]), !inside || spoiled);
        checked++;
        nans += inside && spoiled;
      }
    ASSERT(checked > ox * oy / 2);
    ASSERT(nans >= 10 * (order + 1) * (order + 1));
    free(out);
    for (int rot = 0; rot < 2; rot++) {
      const int64_t blocks[][2] = {{0, 0}, {64, 64}, {100, 37}, {700, 1}, {13, 660}};
      float *ref = NULL;
      for (size_t b = 0; b < sizeof blocks / sizeof blocks[0]; b++) {
        o.block[0] = blocks[b][0];
        o.block[1] = blocks[b][1];
        float *res = reproject(&e, src, rot ? wrot : wout, &o, NULL);
        if (ref == NULL) {
          ref = res;
          continue;
        }
        ASSERT(memcmp(ref, res, sizeof(float) * ox * oy) == 0);
        free(res);
      }
      tsr_region_t r = {{250, 230, 0, 0}, {470, 420, 1, 1}};
      o.block[0] = o.block[1] = 48;
      float *part = reproject(&e, src, rot ? wrot : wout, &o, &r);
      for (int y = 230; y < 420; y++)
        ASSERT(memcmp(part + (y - 230) * 220, ref + y * ox + 250, 220 * sizeof(float)) == 0);
      free(part);
      free(ref);
      o.block[0] = o.block[1] = 0;
    }
  }
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  tsr_wcs_free(wrot);
  env_close(&e);
}

TEST(cube_planes_are_broadcast) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *w2 = make_wcs(&e, 50, 40, "RA---TAN", "DEC--TAN", 40, 40, 25, 20, 0.001, NULL);
  tsr_wcs_t *wo = make_wcs(&e, 45, 45, "RA---TAN", "DEC--TAN", 40.01, 40.005, 22, 22, 0.0011, NULL);
  char hdr3[2048];
  tsr_wcs_t *w3;
  snprintf(hdr3, sizeof hdr3,
           "NAXIS   = 3\nNAXIS1  = 50\nNAXIS2  = 40\nNAXIS3  = 3\nCTYPE1  = 'RA---TAN'\n"
           "CTYPE2  = 'DEC--TAN'\nCTYPE3  = 'VRAD'\nCRVAL1  = 40.0\nCRVAL2  = 40.0\nCRVAL3  = 0.0\n"
           "CRPIX1  = 25.0\nCRPIX2  = 20.0\nCRPIX3  = 1.0\nCDELT1  = -0.001\nCDELT2  = 0.001\n"
           "CDELT3  = 1000.0\nCUNIT3  = 'm/s'\n");
  ASSERT_OK(tsr_wcs_parse(e.ctx, hdr3, strlen(hdr3), "cube header", 1, &w3));
  float *cube = malloc(sizeof(float) * 50 * 40 * 3);
  for (int z = 0; z < 3; z++) {
    float *p = smooth_image(50, 40, 10 + z);
    memcpy(cube + z * 2000, p, sizeof(float) * 2000);
    free(p);
  }
  int64_t s3[3] = {50, 40, 3}, s2[2] = {50, 40};
  tsr_node_t *c = tsr_source_buffer(e.g, TSR_F32, 3, s3, cube, w3);
  tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
  tsr_node_t *rc = tsr_reproject_interp(e.g, c, wo, &o);
  ASSERT(rc != NULL);
  ASSERT_INT_EQ(tsr_node_ndim(rc), 3);
  ASSERT_INT_EQ(tsr_node_shape(rc, 2), 3);
  int nc = 0;
  (void)tsr_wcs_cards(tsr_node_wcs(rc), &nc);
  ASSERT(tsr__wcs_find(tsr_node_wcs(rc), "CTYPE3") >= 0);
  float *all = malloc(sizeof(float) * 45 * 45 * 3);
  ASSERT_OK(tsr_compute(e.g, rc, NULL, all, sizeof(float) * 45 * 45 * 3, NULL));
  for (int z = 0; z < 3; z++) {
    tsr_node_t *p = tsr_source_buffer(e.g, TSR_F32, 2, s2, cube + z * 2000, w2);
    float *one = reproject(&e, p, wo, &o, NULL);
    ASSERT(memcmp(one, all + z * 45 * 45, sizeof(float) * 45 * 45) == 0);
    free(one);
  }
  free(all);
  free(cube);
  tsr_wcs_free(w2);
  tsr_wcs_free(w3);
  tsr_wcs_free(wo);
  env_close(&e);
}

TEST(block_missing_the_input_is_nan) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 20, 20, "RA---TAN", "DEC--TAN", 10, 10, 10, 10, 0.001, NULL);
  tsr_wcs_t *wout = make_wcs(&e, 64, 64, "RA---TAN", "DEC--TAN", 10, 10, 10, 10, 0.001, NULL);
  float *d = smooth_image(20, 20, 6);
  int64_t shape[2] = {20, 20};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, win);
  tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
  tsr_node_t *n;
  o.block[0] = o.block[1] = 32;
  n = tsr_reproject_interp(e.g, src, wout, &o);
  tsr_node_t *fp = tsr_footprint(e.g, n);
  ASSERT(fp != NULL);
  float *out = malloc(sizeof(float) * 64 * 64);
  ASSERT_OK(tsr_compute(e.g, fp, NULL, out, sizeof(float) * 64 * 64, NULL));
  for (int y = 0; y < 64; y++)
    for (int x = 0; x < 64; x++)
      ASSERT_INT_EQ(out[y * 64 + x], (x < 20 && y < 20) ? 1 : 0);
  free(out);
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  env_close(&e);
}

/* wcslib 7.12 maps some points of a vector to the wrong face of the quad-cube
 * projections; a one-row block must equal the same row of a taller one. */
TEST(quad_cube_rows_do_not_depend_on_the_block) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 360, 180, "GLON-CAR", "GLAT-CAR", 0, 0, 180.5, 90.5, 1.0, NULL);
  tsr_wcs_t *wout = make_wcs(&e, 400, 200, "GLON-TSC", "GLAT-TSC", 0, 0, 200.87, 100.71, 1.0, NULL);
  float *d = smooth_image(360, 180, 7);
  int64_t shape[2] = {360, 180};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, win);
  tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
  o.order = 0;
  float *a = reproject(&e, src, wout, &o, NULL);
  o.block[0] = 400;
  o.block[1] = 161; /* the last row of the first block is a band of its own */
  float *b = reproject(&e, src, wout, &o, NULL);
  int finite = 0;
  for (int i = 0; i < 400 * 200; i++) {
    ASSERT_INT_EQ(isnan(a[i]), isnan(b[i]));
    finite += !isnan(a[i]);
  }
  ASSERT(finite > 20000);
  ASSERT(memcmp(a, b, sizeof(float) * 400 * 200) == 0);
  free(a);
  free(b);
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  env_close(&e);
}

TEST(frames_agree_with_astropy) {
  /* ICRS (ra, dec) -> Galactic, FK5 J2000, barycentric mean ecliptic J2000,
   * as computed by astropy 5.2. */
  static const double ref[][8] = {
      {10.0, 20.0, 119.269367737601726, -42.790392864604470, 10.000008502254534,
       20.000001529485864, 17.160129300277287, 14.411817173969595},
      {266.4, -28.9, 0.028603668653339, 0.022577095966811, 266.400007945370533,
       -28.899994641850149, 266.834223129768702, -5.500271165723371},
      {83.8221, -5.3911, 209.013743276101962, -19.381581644127866, 83.822106067808150,
       -5.391105223646767, 82.985379042227549, -28.680074689943577}};
  const tsr__frame_t icrs = tsr__frame_default(TSR__SKY_ICRS);
  const tsr__frame_t frames[3] = {tsr__frame_default(TSR__SKY_GALACTIC),
                                  tsr__frame_default(TSR__SKY_FK5),
                                  tsr__frame_default(TSR__SKY_ECLIPTIC)};
  const double mas = 1.0 / 3600000.0;
  for (size_t k = 0; k < 3; k++) {
    double ra = ref[k][0] * M_PI / 180, dec = ref[k][1] * M_PI / 180;
    double v[3] = {cos(dec) * cos(ra), cos(dec) * sin(ra), sin(dec)};
    for (int f = 0; f < 3; f++) {
      double r[3] = {v[0], v[1], v[2]};
      tsr__frame_xform_t xf;
      tsr__frame_xform(&icrs, &frames[f], &xf);
      tsr__frame_apply(&xf, 1, r);
      double lon = atan2(r[1], r[0]) * 180 / M_PI, lat = asin(r[2]) * 180 / M_PI;
      if (lon < 0)
        lon += 360;
      double dlon = fmod(lon - ref[k][2 + 2 * f] + 540, 360) - 180;
      ASSERT_NEAR(dlon * cos(lat * M_PI / 180), 0, 0.01 * mas);
      ASSERT_NEAR(lat, ref[k][3 + 2 * f], 0.01 * mas);
    }
  }
}

/* Two linear axes (astropy's WCS(naxis=2): no CTYPE, or names wcslib does
 * not know) map to two linear axes as astropy's pixel_to_pixel maps them,
 * through the world values, and never to celestial axes. */
TEST(linear_axes_map_to_linear_axes) {
  env_t keep, e; /* the WCSs live in their own context: the cases get fresh graphs */
  env_open(&keep);
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&keep, 40, 30, "", "", 5, -7, 20.5, 15.5, 0.5, NULL);
  /* Reference pixel 3 right and 2 down: out(x, y) = in(x - 3, y + 2). */
  tsr_wcs_t *wout = make_wcs(&keep, 40, 30, "OFFSETX", "OFFSETY", 5, -7, 23.5, 13.5, 0.5, NULL);
  tsr_wcs_t *sky = make_wcs(&keep, 40, 30, "RA---TAN", "DEC--TAN", 5, -7, 20.5, 15.5, 0.5, NULL);
  tsr_wcs_t *arcsec = make_wcs(&keep, 40, 30, "", "", 5, -7, 20.5, 15.5, 0.5,
                               "CUNIT1  = 'arcsec'\nCUNIT2  = 'arcsec'\n");
  float *d = smooth_image(40, 30, 3);
  int64_t shape[2] = {40, 30};
  {
    /* Linear -> linear is affine: the mapping is the homography of the
     * shift, whatever the tolerance, and never "grid" or "exact". */
    tsr__map_t *m = NULL;
    double H[9];
    for (int t = 0; t < 2; t++) {
      ASSERT_OK(tsr__map_new(keep.ctx, wout, "target", win, "input", t ? 0.1 : 0.0, true, &m));
      ASSERT(tsr__map_homography(m, H));
      ASSERT(strcmp(tsr__map_kind(m), "homography") == 0);
      ASSERT_NEAR(H[0] / H[8], 1.0, 1e-12);
      ASSERT_NEAR(H[4] / H[8], 1.0, 1e-12);
      ASSERT_NEAR(H[6], 0.0, 1e-12);
      ASSERT_NEAR(H[7], 0.0, 1e-12);
      ASSERT_NEAR(H[2] / H[8], -3.0, 1e-9);
      ASSERT_NEAR(H[5] / H[8], 2.0, 1e-9);
      tsr__map_free(m);
      m = NULL;
    }
  }
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, win);
  for (int order = 0; order <= 3; order += 3) {
    tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
    o.order = order;
    float *out = reproject(&e, src, wout, &o, NULL);
    assert_shifted_3_2(out, d);
    free(out);
  }
  {
    /* Adaptive at unit scale with the Hann kernel takes the one input
     * pixel under each output pixel's centre. */
    tsr_adaptive_opts_t ao = TSR_ADAPTIVE_OPTS_INIT;
    ao.kernel = TSR_KERNEL_HANN;
    ao.boundary_mode = TSR_BOUNDARY_IGNORE;
    tsr_node_t *n = tsr_reproject_adaptive(e.g, src, wout, &ao);
    float *out = malloc(sizeof(float) * 40 * 30);
    ASSERT(n != NULL);
    ASSERT_OK(tsr_compute(e.g, n, NULL, out, sizeof(float) * 40 * 30, NULL));
    for (int y = 0; y < 28; y++)
      for (int x = 3; x < 40; x++)
        ASSERT_NEAR(out[y * 40 + x], d[(y + 2) * 40 + x - 3], 1e-5);
    free(out);
  }
  ASSERT(tsr_reproject_interp(e.g, src, sky, NULL) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(e.g), TSR_EWCS);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(e.g), "both must be celestial or both linear");
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(e.g), "has no celestial axes (CTYPE1 = '', CTYPE2 = '': linear");
  env_close(&e);

  env_open(&e);
  src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, win);
  ASSERT(tsr_reproject_interp(e.g, src, arcsec, NULL) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(e.g), "CUNIT1 = 'arcsec' but");
  env_close(&e);

  env_open(&e);
  src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, win);
  ASSERT(tsr_reproject_exact(e.g, src, wout, NULL) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(e.g), "reproject_exact");
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(e.g), "no celestial axes");
  env_close(&e);

  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  tsr_wcs_free(sky);
  tsr_wcs_free(arcsec);
  env_close(&keep);
}

/* ------------------------------------------------------------------ */
/* Lanczos (SWarp's RESAMPLING_TYPE LANCZOS2/3/4)                      */

/* The kernel against values worked out by hand, and the weights of every a
 * against the kernel divided by the sum of the taps: the fast evaluation
 * (polynomials, products instead of divisions, sixteen lanes) must be the
 * formula.  A batch that is not a multiple of the lanes gives each sample
 * the bits it gets alone. */
TEST(lanczos_kernel_and_weights_are_the_formula) {
  /* L(0.5) = sinc(1/2) sinc(1/6) = (2 / pi) (sin(pi / 6) / (pi / 6)) = 6 / pi^2. */
  ASSERT_NEAR(tsr__lanczos_kernel(3, 0.5), 6.0 / (M_PI * M_PI), 1e-15);
  ASSERT_NEAR(tsr__lanczos_kernel(3, -0.5), 6.0 / (M_PI * M_PI), 1e-15);
  ASSERT_NEAR(tsr__lanczos_kernel(2, 0.0), 1.0, 0);
  ASSERT_NEAR(tsr__lanczos_kernel(4, 2.0), 0.0, 1e-16);
  ASSERT_NEAR(tsr__lanczos_kernel(3, 3.0), 0.0, 0);
  ASSERT_NEAR(tsr__lanczos_kernel(3, -7.2), 0.0, 0);
  /* L(1.5) for a = 2: sinc(3/2) sinc(3/4) = (-2 / (3 pi)) (sin(3 pi / 4) / (3 pi / 4)). */
  ASSERT_NEAR(tsr__lanczos_kernel(2, 1.5), -2.0 / (3 * M_PI) * (M_SQRT1_2 / (0.75 * M_PI)), 1e-15);

  enum { N = 37 };
  double f[N], w[2 * TSR__LANCZOS_MAX_A * N], one[2 * TSR__LANCZOS_MAX_A];
  for (int i = 0; i < N; i++)
    f[i] = i == 0 ? 0.0 : i == 1 ? 0.5e-5 : i == 2 ? 2e-5 : i == 3 ? 1.0 - 1e-9 : (i * 0.6180339887) - floor(i * 0.6180339887);
  for (int a = 2; a <= TSR__LANCZOS_MAX_A; a++) {
    tsr__lanczos_weights(a, N, f, w, N);
    for (int i = 0; i < N; i++) {
      double sum = 0, ref[2 * TSR__LANCZOS_MAX_A], total = 0;
      for (int k = 0; k < 2 * a; k++)
        total += ref[k] = tsr__lanczos_kernel(a, (double)(k + 1 - a) - f[i]);
      for (int k = 0; k < 2 * a; k++) {
        double got = w[k * N + i];
        sum += got;
        if (f[i] < TSR__LANCZOS_SNAP)
          ASSERT_NEAR(got, k == a - 1 ? 1.0 : 0.0, 0); /* SWarp's snap: that pixel alone */
        else
          ASSERT_NEAR(got, ref[k] / total, 1e-14);
      }
      ASSERT_NEAR(sum, 1.0, 1e-14);
      tsr__lanczos_weights(a, 1, &f[i], one, 1);
      for (int k = 0; k < 2 * a; k++)
        ASSERT(memcmp(&one[k], &w[k * N + i], sizeof(double)) == 0);
    }
  }
}

/* Input pixel (x, y) of a 48 x 40 float64 image. */
static double lz_pixel(int x, int y) { return 100 + 7 * sin(0.31 * x + 0.2) + 5 * cos(0.23 * y) + 0.05 * x * y; }

static double *lz_image(int nx, int ny) {
  double *d = malloc(sizeof(double) * (size_t)nx * (size_t)ny);
  for (int y = 0; y < ny; y++)
    for (int x = 0; x < nx; x++)
      d[y * nx + x] = lz_pixel(x, y);
  return d;
}

static double *lz_reproject(env_t *e, tsr_node_t *src, tsr_wcs_t *target, int order, double tol,
                            int64_t npix) {
  tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
  tsr_node_t *n;
  double *out = malloc(sizeof(double) * (size_t)npix);
  o.order = order;
  o.mapping_tolerance = tol;
  o.dtype = TSR_F64;
  n = tsr_reproject_interp(e->g, src, target, &o);
  if (n == NULL)
    th_fail(__FILE__, __LINE__, "reproject_interp: %s", tsr_graph_errmsg(e->g));
  if (tsr_compute(e->g, n, NULL, out, sizeof(double) * (size_t)npix, NULL) != 0)
    th_fail(__FILE__, __LINE__, "compute: %s", tsr_errmsg(e->ctx));
  return out;
}

/* A shift by whole pixels copies the input, bit for bit, whichever side of
 * the pixel centre the mapping's rounding lands; an output is finite
 * exactly where its 2a x 2a support lies in the input (SWarp's edges:
 * x in [a - 1, n - 1 - a]). */
TEST(lanczos_integer_shift_copies_pixels_inside_swarps_edges) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 48, 40, "RA---TAN", "DEC--TAN", 30, -40, 24.5, 20.5, 0.002, NULL);
  /* out(x, y) = in(x - 5, y + 2) */
  tsr_wcs_t *wout = make_wcs(&e, 48, 40, "RA---TAN", "DEC--TAN", 30, -40, 29.5, 18.5, 0.002, NULL);
  double *d = lz_image(48, 40);
  int64_t shape[2] = {48, 40};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
  for (int order = TSR_ORDER_LANCZOS2; order <= TSR_ORDER_LANCZOS4; order++)
    for (int t = 0; t < 2; t++) {
      int a = order - TSR_ORDER_LANCZOS2 + 2, finite = 0;
      double *out = lz_reproject(&e, src, wout, order, t ? 0 : 1e-4, 48 * 40);
      for (int y = 0; y < 40; y++)
        for (int x = 0; x < 48; x++) {
          int xi = x - 5, yi = y + 2;
          bool inside = xi >= a - 1 && xi <= 48 - 1 - a && yi >= a - 1 && yi <= 40 - 1 - a;
          double v = out[y * 48 + x];
          ASSERT_INT_EQ(isfinite(v), inside);
          if (inside) {
            ASSERT(v == d[yi * 48 + xi]);
            finite++;
          }
        }
      ASSERT(finite > 400);
      free(out);
    }
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  env_close(&e);
}

/* A constant image stays constant under rotation and scaling (the weights
 * of each axis sum to 1), and a fractional shift gives the formula: the
 * 2a x 2a taps weighted by L(d) normalised per axis. */
TEST(lanczos_constant_stays_constant_and_shift_is_the_formula) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 48, 40, "RA---TAN", "DEC--TAN", 30, -40, 24.5, 20.5, 0.002, NULL);
  tsr_wcs_t *rot = make_wcs(&e, 50, 50, "RA---TAN", "DEC--TAN", 30, -40, 25.3, 25.1, 0.0017,
                            "PC1_1 = 0.8660254038\nPC1_2 = -0.5\nPC2_1 = 0.5\nPC2_2 = 0.8660254038\n");
  /* out(x, y) = in(x - 2.3, y + 1.6) */
  tsr_wcs_t *frac = make_wcs(&e, 48, 40, "RA---TAN", "DEC--TAN", 30, -40, 26.8, 18.9, 0.002, NULL);
  double *c = malloc(sizeof(double) * 48 * 40), *d = lz_image(48, 40);
  int64_t shape[2] = {48, 40};
  for (int i = 0; i < 48 * 40; i++)
    c[i] = 42.125;
  tsr_node_t *csrc = tsr_source_buffer(e.g, TSR_F64, 2, shape, c, win);
  tsr_node_t *dsrc = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
  for (int order = TSR_ORDER_LANCZOS2; order <= TSR_ORDER_LANCZOS4; order++) {
    int a = order - TSR_ORDER_LANCZOS2 + 2, finite = 0;
    double *out = lz_reproject(&e, csrc, rot, order, 1e-4, 50 * 50), worst = 0;
    for (int i = 0; i < 50 * 50; i++)
      if (isfinite(out[i])) {
        worst = fmax(worst, fabs(out[i] - 42.125));
        finite++;
      }
    ASSERT(finite > 900);
    ASSERT(worst <= 1e-12);
    free(out);

    out = lz_reproject(&e, dsrc, frac, order, 0, 48 * 40);
    finite = 0;
    worst = 0;
    for (int y = 0; y < 40; y++)
      for (int x = 0; x < 48; x++) {
        double xi = x - 2.3, yi = y + 1.6, wx[8], wy[8], sx = 0, sy = 0, want = 0;
        int px = (int)floor(xi), py = (int)floor(yi);
        bool inside = px >= a - 1 && px <= 48 - 1 - a && py >= a - 1 && py <= 40 - 1 - a;
        ASSERT_INT_EQ(isfinite(out[y * 48 + x]), inside);
        if (!inside)
          continue;
        for (int k = 0; k < 2 * a; k++) {
          sx += wx[k] = tsr__lanczos_kernel(a, px + 1 - a + k - xi);
          sy += wy[k] = tsr__lanczos_kernel(a, py + 1 - a + k - yi);
        }
        for (int j = 0; j < 2 * a; j++)
          for (int k = 0; k < 2 * a; k++)
            want += wy[j] / sy * wx[k] / sx * lz_pixel(px + 1 - a + k, py + 1 - a + j);
        worst = fmax(worst, fabs(out[y * 48 + x] - want));
        finite++;
      }
    ASSERT(finite > 400);
    ASSERT(worst <= 1e-9);
    free(out);
  }
  free(c);
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(rot);
  tsr_wcs_free(frac);
  env_close(&e);
}

/* A NaN spoils exactly the outputs whose 2a x 2a support holds it (SWarp
 * gives them weight 0), zero-weight taps included; the rest stay finite. */
TEST(lanczos_nan_spoils_exactly_its_support) {
  env_t e;
  tsr_wcs_t *w, *half;
  env_open(&e);
  half_pixel_pair(&e, &w, &half);
  double *d = lz_image(40, 40);
  int64_t shape[2] = {40, 40};
  d[20 * 40 + 20] = NAN;
  d[9 * 40 + 31] = NAN;
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, w);
  for (int order = TSR_ORDER_LANCZOS2; order <= TSR_ORDER_LANCZOS4; order++) {
    int a = order - TSR_ORDER_LANCZOS2 + 2, nan = 0;
    double *out = lz_reproject(&e, src, half, order, 0, 80 * 80);
    for (int y = 0; y < 80; y++)
      for (int x = 0; x < 80; x++) {
        /* Output pixel centre in input pixels (CRPIX 20.5 is 0-based 19.5):
         * quarter pixels, never a centre. */
        double xi = 19.5 + (x - 39.5) * 0.5, yi = 19.5 + (y - 39.5) * 0.5;
        int px = (int)floor(xi), py = (int)floor(yi);
        bool inside = px >= a - 1 && px <= 40 - 1 - a && py >= a - 1 && py <= 40 - 1 - a;
        bool holds = (px + 1 - a <= 20 && 20 <= px + a && py + 1 - a <= 20 && 20 <= py + a) ||
                     (px + 1 - a <= 31 && 31 <= px + a && py + 1 - a <= 9 && 9 <= py + a);
        if (isfinite(out[y * 80 + x]) != (inside && !holds))
          th_fail(__FILE__, __LINE__, "a=%d out(%d, %d) = %g at input (%g, %g)", a, x, y, out[y * 80 + x], xi, yi);
        nan += inside && holds;
      }
    ASSERT_INT_EQ(nan, 2 * (4 * a) * (4 * a)); /* 2a input pixels = 4a outputs per axis */
    free(out);
  }
  free(d);
  tsr_wcs_free(w);
  tsr_wcs_free(half);
  env_close(&e);
}

/* Lanczos nodes are keyed by their order and cached like the others: a
 * rerun from a cache gives the same bits, and each order has its own key. */
TEST(lanczos_orders_have_their_own_keys_and_cache) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 48, 40, "RA---TAN", "DEC--TAN", 30, -40, 24.5, 20.5, 0.002, NULL);
  tsr_wcs_t *wout = make_wcs(&e, 50, 50, "RA---TAN", "DEC--TAN", 30, -40, 25.3, 25.1, 0.0017, NULL);
  double *d = lz_image(48, 40);
  int64_t shape[2] = {48, 40};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
  uint8_t keys[7][16];
  for (int order = 0; order <= TSR_ORDER_LANCZOS4; order++) {
    tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
    o.order = order;
    tsr_node_key(tsr_reproject_interp(e.g, src, wout, &o), keys[order]);
    for (int k = 0; k < order; k++)
      ASSERT(memcmp(keys[k], keys[order], 16) != 0);
  }
  {
    tsr_cache_t *cache = NULL;
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
    tsr_cache_stats_t st;
    double a[50 * 50], b[50 * 50];
    o.order = TSR_ORDER_LANCZOS3;
    o.block[0] = o.block[1] = 16;
    tsr_node_t *n = tsr_reproject_interp(e.g, src, wout, &o);
    ASSERT_OK(tsr_cache_open(e.ctx, th_path("lanczos-cache"), TSR_CACHE_MIN_BYTES * 16, &cache));
    ro.cache = cache;
    ASSERT_OK(tsr_compute(e.g, n, NULL, a, sizeof a, &ro));
    ASSERT_OK(tsr_compute(e.g, n, NULL, b, sizeof b, &ro));
    ASSERT_OK(tsr_cache_stats(cache, &st));
    ASSERT(st.session_hits >= 16);
    ASSERT(memcmp(a, b, sizeof a) == 0);
    tsr_cache_close(cache);
  }
  free(d);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  env_close(&e);
}

TEST(bad_options_are_reported) {
  /* The WCS lives in its own context: each case below gets a fresh graph. */
  env_t keep, e;
  env_open(&keep);
  tsr_wcs_t *w = make_wcs(&keep, 10, 10, "RA---TAN", "DEC--TAN", 10, 10, 5, 5, 0.001, NULL);
  float d[100] = {0};
  int64_t shape[2] = {10, 10};
  tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;

  env_open(&e);
  tsr_node_t *nowcs = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, NULL);
  ASSERT(tsr_reproject_interp(e.g, nowcs, w, &o) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(e.g), TSR_EWCS);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(e.g), "has no WCS");
  env_close(&e);

  env_open(&e);
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, w);
  o.order = 7;
  ASSERT(tsr_reproject_interp(e.g, src, w, &o) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(e.g), "order 7 out of range [0, 6]");
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(e.g), "lanczos4");
  env_close(&e);

  ASSERT_INT_EQ(tsr_order_parse("lanczos3"), TSR_ORDER_LANCZOS3);
  ASSERT_INT_EQ(tsr_order_parse("LANCZOS2"), TSR_ORDER_LANCZOS2);
  ASSERT_INT_EQ(tsr_order_parse("Lanczos4"), TSR_ORDER_LANCZOS4);
  ASSERT_INT_EQ(tsr_order_parse("lanczos5"), -1);
  ASSERT_INT_EQ(tsr_order_parse("lanczos"), -1);
  ASSERT_INT_EQ(tsr_order_parse("5"), -1);
  ASSERT_STR_CONTAINS(tsr_order_name(TSR_ORDER_LANCZOS3), "lanczos3");
  ASSERT_STR_CONTAINS(tsr_order_name((tsr_order_t)7), "unknown");

  env_open(&e);
  src = tsr_source_buffer(e.g, TSR_F32, 2, shape, d, w);
  o.order = 1;
  o.mapping_tolerance = -1;
  ASSERT(tsr_reproject_interp(e.g, src, w, &o) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(e.g), "mapping tolerance -1 px out of range [0, 1]");
  env_close(&e);

  tsr_wcs_free(w);
  env_close(&keep);
}

TEST_MAIN()
