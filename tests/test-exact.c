/* test-exact.c -- reproject_exact with known answers, on in-memory images:
 * overlap primitives against hand-computed areas (unit squares, triangles, a
 * pixel straddling the pole), identity, flux conservation down to 1e-5
 * arcsec pixels, block-size invariance, NaN modes, cubes, large pixels on
 * the sphere and an all-sky seam. */
#include <tessera/tessera.h>

#include "harness.h"
#include "internal.h"
#include "overlap.h"

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

/* A header for an nx x ny image, CDELT = cdelt deg, rotated by rot deg. */
static tsr_wcs_t *make_wcs(env_t *e, int nx, int ny, const char *ctype1, const char *ctype2,
                           double crval1, double crval2, double crpix1, double crpix2,
                           double cdelt, double rot) {
  char hdr[4096];
  tsr_wcs_t *w = NULL;
  double c = cos(rot * M_PI / 180), s = sin(rot * M_PI / 180);
  snprintf(hdr, sizeof hdr,
           "NAXIS   = 2\nNAXIS1  = %d\nNAXIS2  = %d\nCTYPE1  = '%s'\nCTYPE2  = '%s'\n"
           "CRVAL1  = %.12f\nCRVAL2  = %.12f\nCRPIX1  = %.12f\nCRPIX2  = %.12f\n"
           "CDELT1  = %.17g\nCDELT2  = %.17g\nPC1_1   = %.17g\nPC1_2   = %.17g\n"
           "PC2_1   = %.17g\nPC2_2   = %.17g\n",
           nx, ny, ctype1, ctype2, crval1, crval2, crpix1, crpix2, -cdelt, cdelt, c, -s, s, c);
  if (tsr_wcs_parse(e->ctx, hdr, strlen(hdr), "test header", 1, &w) != 0)
    th_fail(__FILE__, __LINE__, "header: %s", tsr_errmsg(e->ctx));
  return w;
}

static double *smooth_image(int nx, int ny, unsigned seed) {
  double *d = malloc(sizeof(double) * (size_t)nx * (size_t)ny);
  for (int y = 0; y < ny; y++)
    for (int x = 0; x < nx; x++)
      d[y * nx + x] = 10 + 3 * sin(0.11 * x + seed) + 2 * cos(0.07 * y - 0.3 * seed) +
                      0.01 * x * y / nx;
  return d;
}

/* Data (and footprint if fp != NULL) of an exact reprojection, float64. */
static double *reproject(env_t *e, tsr_node_t *src, tsr_wcs_t *target, tsr_exact_opts_t *o,
                         double **fp) {
  tsr_node_t *n = tsr_reproject_exact(e->g, src, target, o);
  tsr_region_t full;
  size_t count;
  double *out;
  if (n == NULL)
    th_fail(__FILE__, __LINE__, "reproject_exact: %s", tsr_graph_errmsg(e->g));
  full = tsr_region_of(n);
  count = (size_t)tsr_region_size(&full);
  out = malloc(count * sizeof(double));
  if (tsr_compute(e->g, n, &full, out, count * sizeof(double), NULL) != 0)
    th_fail(__FILE__, __LINE__, "compute: %s", tsr_errmsg(e->ctx));
  if (fp) {
    *fp = malloc(count * sizeof(double));
    if (tsr_compute(e->g, tsr_footprint(e->g, n), &full, *fp, count * sizeof(double), NULL) != 0)
      th_fail(__FILE__, __LINE__, "compute footprint: %s", tsr_errmsg(e->ctx));
  }
  return out;
}

static void lonlat(double lon_deg, double lat_deg, double *v) {
  double l = lon_deg * M_PI / 180, b = lat_deg * M_PI / 180;
  v[0] = cos(b) * cos(l), v[1] = cos(b) * sin(l), v[2] = sin(b);
}

/* L'Huilier's theorem: spherical excess of a triangle with sides a, b, c. */
static double lhuilier(double a, double b, double c) {
  double s = 0.5 * (a + b + c);
  return 4 * atan(sqrt(tan(s / 2) * tan((s - a) / 2) * tan((s - b) / 2) * tan((s - c) / 2)));
}

TEST(planar_primitives_match_hand_areas) {
  /* A unit square shifted by (0.5, 0.25) overlaps the unit box by 0.5 x 0.75. */
  double qx[4] = {0.0, 1.0, 1.0, 0.0}, qy[4] = {-0.25, -0.25, 0.75, 0.75};
  ASSERT_NEAR(tsr__quad_box_area(qx, qy, -0.5, 0.5, -0.5, 0.5), 0.5 * 0.75, 1e-15);
  /* Clockwise order gives the same. */
  double rx[4] = {0.0, 0.0, 1.0, 1.0}, ry[4] = {-0.25, 0.75, 0.75, -0.25};
  ASSERT_NEAR(tsr__quad_box_area(rx, ry, -0.5, 0.5, -0.5, 0.5), 0.375, 1e-15);
  /* A square rotated 45 deg with half-diagonal 1 centred on the box: the box
   * minus four corner triangles of legs 0.5... inside it: area of the
   * diamond |x|+|y|<=1 within |x|,|y|<=0.5 is 1 (the whole box). */
  double dx[4] = {1, 0, -1, 0}, dy[4] = {0, 1, 0, -1};
  ASSERT_NEAR(tsr__quad_box_area(dx, dy, -0.5, 0.5, -0.5, 0.5), 1.0, 1e-15);
  /* Diamond |x|+|y|<=0.5 lies inside: area 0.5. */
  double ex[4] = {0.5, 0, -0.5, 0}, ey[4] = {0, 0.5, 0, -0.5};
  ASSERT_NEAR(tsr__quad_box_area(ex, ey, -0.5, 0.5, -0.5, 0.5), 0.5, 1e-15);
  /* Triangle (0,0) (1,0) (0,1) (as a quad with a repeated vertex) in the box
   * [0,0.5]^2: the part below x+y<=1 is the whole small box, 0.25. */
  double tx[4] = {0, 1, 0, 0}, ty[4] = {0, 0, 1, 1};
  ASSERT_NEAR(tsr__quad_box_area(tx, ty, 0, 0.5, 0, 0.5), 0.25, 1e-15);
  /* ... and in [0.25,1]^2: the triangle (0.25,0.25)-(0.75,0.25)-(0.25,0.75), 0.125. */
  ASSERT_NEAR(tsr__quad_box_area(tx, ty, 0.25, 1, 0.25, 1), 0.125, 1e-15);
  /* General convex clip: two unit squares offset by (0.3, 0.6). */
  {
    double ax[4] = {0, 1, 1, 0}, ay[4] = {0, 0, 1, 1};
    double bx[4] = {0.3, 1.3, 1.3, 0.3}, by[4] = {0.6, 0.6, 1.6, 1.6};
    double ox[TSR__POLY_MAX], oy[TSR__POLY_MAX];
    int n = tsr__clip_convex(ax, ay, 4, bx, by, 4, ox, oy);
    ASSERT_NEAR(fabs(tsr__poly_area(ox, oy, n)), 0.7 * 0.4, 1e-15);
    /* Disjoint. */
    double cx[4] = {2, 3, 3, 2};
    ASSERT_INT_EQ(tsr__clip_convex(ax, ay, 4, cx, ay, 4, ox, oy), 0);
  }
}

TEST(spherical_areas_match_hand_values) {
  double v[12];
  /* The octant triangle (x, y, z axes) has area pi/2. */
  lonlat(0, 0, v), lonlat(90, 0, v + 3), lonlat(0, 90, v + 6);
  ASSERT_NEAR(tsr__sph_area(v, 3), M_PI / 2, 1e-14);
  /* A lune-free quad: lon 0..90, lat 0 and the pole twice = the octant. */
  lonlat(0, 0, v), lonlat(90, 0, v + 3), lonlat(90, 90, v + 6), lonlat(0, 90, v + 9);
  ASSERT_NEAR(tsr__sph_area(v, 4), M_PI / 2, 1e-14);
  /* A 2 deg spherical triangle against L'Huilier on its sides. */
  {
    double a[3], b[3], c[3], t[9];
    lonlat(10, 20, a), lonlat(12, 20.5, b), lonlat(10.7, 22, c);
    memcpy(t, a, sizeof a), memcpy(t + 3, b, sizeof b), memcpy(t + 6, c, sizeof c);
    double sa = acos(b[0] * c[0] + b[1] * c[1] + b[2] * c[2]);
    double sb = acos(a[0] * c[0] + a[1] * c[1] + a[2] * c[2]);
    double sc = acos(a[0] * b[0] + a[1] * b[1] + a[2] * b[2]);
    ASSERT_NEAR(tsr__sph_area(t, 3) / lhuilier(sa, sb, sc), 1.0, 1e-9);
  }
}

TEST(pixel_straddling_the_pole) {
  /* A square "pixel" centred on the north pole: corners at latitude 89 deg,
   * longitudes 45, 135, 225, 315.  Its area is four isosceles triangles
   * (pole, v_i, v_i+1) with two sides of 1 deg and a 90 deg apex. */
  double p[12], h1[12], h2[12];
  double R = 1.0 * M_PI / 180;
  double side = acos(cos(R) * cos(R) + sin(R) * sin(R) * cos(M_PI / 2));
  double area = 4 * lhuilier(R, R, side);
  for (int k = 0; k < 4; k++)
    lonlat(45 + 90 * k, 89, p + 3 * k);
  ASSERT_NEAR(tsr__sph_area(p, 4) / area, 1.0, 1e-10);
  ASSERT_NEAR(tsr__sph_overlap_frac(p, p, 0), 1.0, 1e-12);
  /* The two halves cut by the diagonal v0-v2 each cover half (symmetry). */
  memcpy(h1, p, 9 * sizeof(double)), memcpy(h1 + 9, p + 6, 3 * sizeof(double));
  memcpy(h2, p + 6, 6 * sizeof(double)), memcpy(h2 + 6, p, 3 * sizeof(double)),
      memcpy(h2 + 9, p, 3 * sizeof(double));
  ASSERT_NEAR(tsr__sph_overlap_frac(h1, p, 0), 0.5, 1e-10);
  ASSERT_NEAR(tsr__sph_overlap_frac(h2, p, 0), 0.5, 1e-10);
  /* The same pixel rotated by 45 deg (corners at 0, 90, 180, 270): the
   * overlap is symmetric in the two polygons of equal area. */
  {
    double q[12];
    for (int k = 0; k < 4; k++)
      lonlat(90 * k, 89, q + 3 * k);
    double f1 = tsr__sph_overlap_frac(p, q, 0), f2 = tsr__sph_overlap_frac(q, p, 0);
    ASSERT_NEAR(f1, f2, 1e-10);
    ASSERT(f1 > 0.75 && f1 < 1.0);
  }
  /* A 10 arcsec pixel on the pole takes the tangent-plane path: the halves
   * still add up and each is half. */
  for (int k = 0; k < 4; k++)
    lonlat(45 + 90 * k, 90 - 5.0 / 3600, p + 3 * k);
  memcpy(h1, p, 9 * sizeof(double)), memcpy(h1 + 9, p + 6, 3 * sizeof(double));
  ASSERT_NEAR(tsr__sph_overlap_frac(h1, p, 0), 0.5, 1e-10);
}

TEST(identity_reproduces_the_input) {
  env_t e;
  env_open(&e);
  const char *cases[][2] = {{"RA---TAN", "DEC--TAN"}, {"GLON-CAR", "GLAT-CAR"}};
  double scales[2] = {0.001, 2.0}; /* pixel plane, and 2 deg pixels on the sphere */
  for (int c = 0; c < 2; c++) {
    tsr_wcs_t *w = make_wcs(&e, 60, 50, cases[c][0], cases[c][1], 150, 2, 30.5, 25.5,
                            scales[c], 0.0);
    double *d = smooth_image(60, 50, 1), *fp;
    int64_t shape[2] = {60, 50};
    tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, w);
    double *out = reproject(&e, src, w, NULL, &fp);
    for (int i = 0; i < 60 * 50; i++) {
      ASSERT_NEAR(out[i], d[i], 1e-10 * 10);
      ASSERT_NEAR(fp[i], 1.0, 1e-10);
    }
    free(out), free(fp), free(d);
    tsr_wcs_free(w);
  }
  env_close(&e);
}

/* Solid angle of pixel (x, y) of a TAN image built by make_wcs with CRVAL on
 * the equator... in general: |det CD| / (1 + xi^2 + eta^2)^(3/2), from the
 * intermediate coordinates (xi, eta) of the pixel centre (radians). */
static double tan_pixel_sr(double x, double y, double crpix1, double crpix2, double cdelt,
                           double rot) {
  double d = cdelt * M_PI / 180, c = cos(rot * M_PI / 180), s = sin(rot * M_PI / 180);
  double u = x + 1 - crpix1, v = y + 1 - crpix2;
  double xi = -d * (c * u - s * v), eta = d * (s * u + c * v);
  return d * d / pow(1 + xi * xi + eta * eta, 1.5);
}

TEST(flux_is_conserved_down_to_1e5_arcsec_pixels) {
  double scales_as[3] = {1.0, 1e-3, 1e-5};
  for (int k = 0; k < 3; k++) {
    env_t e;
    env_open(&e);
    double s = scales_as[k] / 3600;
    int nin = 80, nout = 90;
    /* Output: 0.93 x the pixel, rotated 27 deg, shifted; a Gaussian source
     * well inside both. */
    tsr_wcs_t *win = make_wcs(&e, nin, nin, "RA---TAN", "DEC--TAN", 30, 40, 40.5, 40.5, s, 0);
    tsr_wcs_t *wout =
        make_wcs(&e, nout, nout, "RA---TAN", "DEC--TAN", 30, 40, 45.7, 44.9, 0.93 * s, 27);
    double *d = malloc(sizeof(double) * nin * nin), *fp;
    for (int y = 0; y < nin; y++)
      for (int x = 0; x < nin; x++)
        d[y * nin + x] = exp(-0.5 * (pow((x - 41.3) / 6.0, 2) + pow((y - 38.2) / 4.5, 2)));
    int64_t shape[2] = {nin, nin};
    tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
    double *out = reproject(&e, src, wout, NULL, &fp);
    double fin = 0, fout = 0;
    for (int y = 0; y < nin; y++)
      for (int x = 0; x < nin; x++)
        fin += d[y * nin + x] * tan_pixel_sr(x, y, 40.5, 40.5, s, 0);
    for (int y = 0; y < nout; y++)
      for (int x = 0; x < nout; x++) {
        double v = out[y * nout + x];
        if (v == v)
          fout += v * fp[y * nout + x] * tan_pixel_sr(x, y, 45.7, 44.9, 0.93 * s, 27);
      }
    if (!(fabs(fout / fin - 1) <= 1e-6))
      th_fail(__FILE__, __LINE__, "%g arcsec pixels: flux out/in - 1 = %.3g (tol 1e-6)",
              scales_as[k], fout / fin - 1);
    free(out), free(fp), free(d);
    tsr_wcs_free(win), tsr_wcs_free(wout);
    env_close(&e);
  }
}

TEST(block_size_and_regions_are_invisible) {
  env_t e;
  env_open(&e);
  /* Pixel plane (TAN) and sphere (ZEA, 1.5 deg pixels). */
  for (int c = 0; c < 2; c++) {
    double sc = c == 0 ? 2.0 / 3600 : 1.5;
    tsr_wcs_t *win = make_wcs(&e, 97, 83, c ? "RA---ZEA" : "RA---TAN", c ? "DEC--ZEA" : "DEC--TAN",
                              150, 2, 48.3, 41.9, sc, 0);
    tsr_wcs_t *wout = make_wcs(&e, 101, 89, "RA---TAN", "DEC--TAN", 150.001, 2.001, 50.1, 44.2,
                               1.07 * sc, 31);
    double *d = smooth_image(97, 83, 3);
    d[40 * 97 + 50] = NAN;
    int64_t shape[2] = {97, 83};
    tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
    tsr_exact_opts_t o = TSR_EXACT_OPTS_INIT;
    double *a = reproject(&e, src, wout, &o, NULL);
    o.block[0] = 37, o.block[1] = 23;
    double *b = reproject(&e, src, wout, &o, NULL);
    o.block[0] = 1, o.block[1] = 7;
    double *b2 = reproject(&e, src, wout, &o, NULL);
    ASSERT(memcmp(a, b, sizeof(double) * 101 * 89) == 0);
    ASSERT(memcmp(a, b2, sizeof(double) * 101 * 89) == 0);
    free(a), free(b), free(b2), free(d);
    tsr_wcs_free(win), tsr_wcs_free(wout);
  }
  env_close(&e);
}

TEST(nan_modes) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 40, 40, "RA---TAN", "DEC--TAN", 150, 2, 20.5, 20.5, 1e-3, 0);
  tsr_wcs_t *wout = make_wcs(&e, 40, 40, "RA---TAN", "DEC--TAN", 150, 2, 20.5, 20.5, 1.3e-3, 17);
  double *d = smooth_image(40, 40, 5), *fp1, *fp2;
  d[20 * 40 + 20] = NAN;
  int64_t shape[2] = {40, 40};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
  tsr_exact_opts_t o = TSR_EXACT_OPTS_INIT;
  double *prop = reproject(&e, src, wout, &o, &fp1);
  o.nan_mode = TSR_NAN_IGNORE;
  double *ign = reproject(&e, src, wout, &o, &fp2);
  int nnan = 0;
  for (int i = 0; i < 40 * 40; i++) {
    if (fp1[i] == 0) {
      ASSERT(prop[i] != prop[i] && ign[i] != ign[i] && fp2[i] == 0);
    } else if (prop[i] != prop[i]) {
      nnan++;
      /* Ignore mode: finite, and its footprint misses the NaN pixel's share
       * (or nothing, where only reproject's rounded box touched it). */
      ASSERT(ign[i] == ign[i]);
      ASSERT(fp2[i] <= fp1[i]);
    } else {
      ASSERT_NEAR(ign[i], prop[i], 1e-12 * 20);
      ASSERT_NEAR(fp2[i], fp1[i], 1e-15);
    }
  }
  /* The NaN pixel (1 x 1) seen through 1.3 x larger rotated pixels touches
   * 1 to 4 outputs, plus the candidates of reproject's rounded box. */
  ASSERT(nnan >= 1 && nnan <= 9);
  free(prop), free(ign), free(fp1), free(fp2), free(d);
  tsr_wcs_free(win), tsr_wcs_free(wout);
  env_close(&e);
}

TEST(cube_planes_are_broadcast) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *w2 = make_wcs(&e, 50, 40, "RA---TAN", "DEC--TAN", 150, 2, 25.5, 20.5, 1e-3, 0);
  tsr_wcs_t *wout = make_wcs(&e, 45, 44, "RA---TAN", "DEC--TAN", 150, 2, 22.5, 22.5, 1.1e-3, 12);
  double *base = smooth_image(50, 40, 2), *cube = malloc(sizeof(double) * 50 * 40 * 3);
  for (int k = 0; k < 3; k++)
    for (int i = 0; i < 50 * 40; i++)
      cube[k * 2000 + i] = (k + 1) * base[i];
  int64_t s2[2] = {50, 40}, s3[3] = {50, 40, 3};
  tsr_node_t *src2 = tsr_source_buffer(e.g, TSR_F64, 2, s2, base, w2);
  tsr_node_t *src3 = tsr_source_buffer(e.g, TSR_F64, 3, s3, cube, w2);
  tsr_exact_opts_t o = TSR_EXACT_OPTS_INIT;
  o.block[0] = 16, o.block[1] = 16;
  double *fp2, *fp3;
  double *p = reproject(&e, src2, wout, &o, &fp2);
  double *c = reproject(&e, src3, wout, &o, &fp3);
  for (int k = 0; k < 3; k++)
    for (int i = 0; i < 45 * 44; i++) {
      double a = p[i] * (k + 1), b = c[k * 45 * 44 + i];
      ASSERT((a != a) == (b != b));
      if (a == a)
        ASSERT_NEAR(b, a, 1e-12 * fabs(a));
      ASSERT(fp3[k * 45 * 44 + i] == fp2[i]);
    }
  free(p), free(c), free(fp2), free(fp3), free(base), free(cube);
  tsr_wcs_free(w2), tsr_wcs_free(wout);
  env_close(&e);
}

TEST(all_sky_seam_is_covered_without_row_wide_boxes) {
  /* Whole-sky CAR images at 2 deg/px: the input centred on l = 0.7, the
   * target on l = 180, so the target's +-180 seam (l = 0) cuts through a
   * column of input pixels, whose corners then map to both ends of the
   * output rows, and the input's own edges (l = 180.7) run down the middle
   * of the output.  Away from the poles every output pixel is fully
   * covered by input pixels of value 5. */
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 180, 80, "GLON-CAR", "GLAT-CAR", 0.7, 0, 90.5, 40.7, 2.0, 0);
  tsr_wcs_t *wout = make_wcs(&e, 180, 75, "GLON-CAR", "GLAT-CAR", 180, 0, 90.5, 38.0, 2.0, 0);
  double *d = malloc(sizeof(double) * 180 * 80), *fp;
  for (int i = 0; i < 180 * 80; i++)
    d[i] = 5.0;
  int64_t shape[2] = {180, 80};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
  tsr_exact_opts_t o = TSR_EXACT_OPTS_INIT;
  o.block[0] = 32, o.block[1] = 32;
  double *out = reproject(&e, src, wout, &o, &fp);
  for (int y = 5; y < 70; y++)
    for (int x = 0; x < 180; x++) {
      if (!(fabs(fp[y * 180 + x] - 1.0) <= 1e-9))
        th_fail(__FILE__, __LINE__, "footprint at (%d, %d) is %.17g, expected 1", x, y,
                fp[y * 180 + x]);
      ASSERT_NEAR(out[y * 180 + x], 5.0, 1e-9);
    }
  free(out), free(fp), free(d);
  tsr_wcs_free(win), tsr_wcs_free(wout);
  env_close(&e);
}

TEST(block_missing_the_input_is_nan) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *win = make_wcs(&e, 30, 30, "RA---TAN", "DEC--TAN", 150, 2, 15.5, 15.5, 1e-3, 0);
  tsr_wcs_t *wout = make_wcs(&e, 200, 30, "RA---TAN", "DEC--TAN", 150, 2, 15.5, 15.5, 1e-3, 0);
  double *d = smooth_image(30, 30, 1), *fp;
  int64_t shape[2] = {30, 30};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, win);
  tsr_exact_opts_t o = TSR_EXACT_OPTS_INIT;
  o.block[0] = 50, o.block[1] = 30;
  double *out = reproject(&e, src, wout, &o, &fp);
  for (int y = 0; y < 30; y++)
    for (int x = 100; x < 200; x++) {
      ASSERT(out[y * 200 + x] != out[y * 200 + x]);
      ASSERT(fp[y * 200 + x] == 0.0);
    }
  free(out), free(fp), free(d);
  tsr_wcs_free(win), tsr_wcs_free(wout);
  env_close(&e);
}

TEST(bad_options_are_reported) {
  env_t e;
  env_open(&e);
  tsr_wcs_t *w = make_wcs(&e, 10, 10, "RA---TAN", "DEC--TAN", 150, 2, 5.5, 5.5, 1e-3, 0);
  double d[100] = {0};
  int64_t shape[2] = {10, 10};
  tsr_node_t *src = tsr_source_buffer(e.g, TSR_F64, 2, shape, d, w);
  tsr_exact_opts_t o = TSR_EXACT_OPTS_INIT;
  o.nan_mode = 7;
  ASSERT(tsr_reproject_exact(e.g, src, w, &o) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(e.g), "nan_mode 7");
  tsr_wcs_free(w);
  env_close(&e);
}

TEST_MAIN()
