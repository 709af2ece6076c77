/* optimal_wcs.c -- a mosaic target covering every input
 * (reproject's find_optimal_celestial_wcs).
 *
 * Same recipe as reproject 0.10, so that users get the same header: the
 * inputs' four pixel-edge corners, a reference at the normalised mean of
 * their CRPIX directions (in ICRS), the finest input pixel scale, CRPIX
 * shifted so the corners fit, the shape rounded half to even as Python's
 * round().  Auto-rotation takes the minimum-area rectangle around the
 * projected corners (rotating calipers on their convex hull, as shapely's
 * minimum_rotated_rectangle) and turns the grid by its edge's angle folded
 * into (-45, 45] degrees.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sky.h"

/* The target header with CRPIX (1, 1) and rotation `angle` (radians). */
static int make_header(tsr_ctx_t *ctx, const tsr__frame_t *frame, const char *proj, double lon,
                       double lat, double res, double angle, const double crpix[2],
                       int64_t nx, int64_t ny, tsr_wcs_t **out) {
  const char *lng = "RA--", *lt = "DEC-";
  char hdr[2048];
  int len;
  if (frame->kind == TSR__SKY_GALACTIC)
    lng = "GLON", lt = "GLAT";
  else if (frame->kind == TSR__SKY_SUPERGALACTIC)
    lng = "SLON", lt = "SLAT";
  else if (frame->kind == TSR__SKY_ECLIPTIC)
    lng = "ELON", lt = "ELAT";
  len = snprintf(
      hdr, sizeof hdr,
      "NAXIS   = 2\nNAXIS1  = %lld\nNAXIS2  = %lld\nCTYPE1  = '%s-%s'\nCTYPE2  = '%s-%s'\n"
      "CUNIT1  = 'deg'\nCUNIT2  = 'deg'\nCRVAL1  = %.17g\nCRVAL2  = %.17g\nCRPIX1  = %.17g\n"
      "CRPIX2  = %.17g\nCDELT1  = %.17g\nCDELT2  = %.17g\n",
      (long long)nx, (long long)ny, lng, proj, lt, proj, lon, lat, crpix[0], crpix[1], -res, res);
  if (angle != 0.0)
    len += snprintf(hdr + len, sizeof hdr - (size_t)len,
                    "PC1_1   = %.17g\nPC1_2   = %.17g\nPC2_1   = %.17g\nPC2_2   = %.17g\n",
                    cos(angle), -sin(angle), sin(angle), cos(angle));
  /* The frame as astropy's celestial_frame_to_wcs writes it (an ecliptic
   * target names its equinox under FK5: wcslib drops EQUINOX with ICRS). */
  if (frame->kind == TSR__SKY_ICRS)
    len += snprintf(hdr + len, sizeof hdr - (size_t)len, "RADESYS = 'ICRS'\n");
  else if (frame->kind == TSR__SKY_FK5 || frame->kind == TSR__SKY_ECLIPTIC)
    len += snprintf(hdr + len, sizeof hdr - (size_t)len, "RADESYS = 'FK5'\nEQUINOX = %.17g\n",
                    tsr__sky_jd_jyear(frame->equinox));
  else if (frame->kind == TSR__SKY_FK4 || frame->kind == TSR__SKY_FK4_NO_E)
    len += snprintf(hdr + len, sizeof hdr - (size_t)len, "RADESYS = '%s'\nEQUINOX = %.17g\n",
                    frame->kind == TSR__SKY_FK4 ? "FK4" : "FK4-NO-E",
                    tsr__sky_jd_byear(frame->equinox));
  return tsr_wcs_parse(ctx, hdr, (size_t)len, "mosaic target", 1, out);
}

/* Corners (unit vectors, n x 3) -> FITS pixels (1-based) in w. */
static int project(tsr_ctx_t *ctx, const tsr_wcs_t *w, size_t n, const double *v, double *x,
                   double *y) {
  tsr__cel_t *c = NULL;
  int rc = tsr__cel_new(ctx, w, "mosaic target", &c);
  if (rc != 0)
    return rc;
  tsr__cel_vec2pix(c, n, v, x, y);
  tsr__cel_free(c);
  for (size_t k = 0; k < n; k++) {
    if (!(isfinite(x[k]) && isfinite(y[k])))
      return tsr__err(ctx, TSR_EWCS,
                      "optimal WCS: an input corner has no position in the %s projection about "
                      "the reference; choose another projection or reference",
                      "target");
    x[k] += 1.0, y[k] += 1.0;
  }
  return 0;
}

static double cross(const double *o, const double *a, const double *b) {
  return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]);
}

static int cmp_pt(const void *a, const void *b) {
  const double *p = a, *q = b;
  return p[0] < q[0] ? -1 : p[0] > q[0] ? 1 : (p[1] > q[1]) - (p[1] < q[1]);
}

/* The angle of the minimum-area rectangle around the n points (x, y),
 * folded as reproject folds the angle of the rectangle's lowest edge. */
static double min_rect_angle(tsr_ctx_t *ctx, size_t n, const double *x, const double *y) {
  double *pts = tsr__mallocarray(ctx, 4 * n + 2, sizeof *pts), *hull, best = INFINITY, theta = 0;
  size_t h = 0;
  if (pts == NULL)
    return 0.0;
  hull = pts + 2 * n;
  for (size_t k = 0; k < n; k++)
    pts[2 * k] = x[k], pts[2 * k + 1] = y[k];
  qsort(pts, n, 2 * sizeof *pts, cmp_pt);
  /* Andrew's monotone chain. */
  for (size_t k = 0; k < n; k++) {
    while (h >= 2 && cross(hull + 2 * (h - 2), hull + 2 * (h - 1), pts + 2 * k) <= 0)
      h--;
    memcpy(hull + 2 * h++, pts + 2 * k, 2 * sizeof *pts);
  }
  for (size_t k = n - 1, lo = h + 1; k-- > 0;) {
    while (h >= lo && cross(hull + 2 * (h - 2), hull + 2 * (h - 1), pts + 2 * k) <= 0)
      h--;
    memcpy(hull + 2 * h++, pts + 2 * k, 2 * sizeof *pts);
  }
  if (h > 1)
    h--; /* the last point repeats the first */
  for (size_t e = 0; e < h; e++) {
    const double *a = hull + 2 * e, *b = hull + 2 * ((e + 1) % h);
    double t = atan2(b[1] - a[1], b[0] - a[0]), c = cos(t), s = sin(t);
    double u0 = INFINITY, u1 = -INFINITY, v0 = INFINITY, v1 = -INFINITY;
    for (size_t k = 0; k < h; k++) {
      double u = hull[2 * k] * c + hull[2 * k + 1] * s, v = -hull[2 * k] * s + hull[2 * k + 1] * c;
      u0 = fmin(u0, u), u1 = fmax(u1, u), v0 = fmin(v0, v), v1 = fmax(v1, v);
    }
    if (best == INFINITY || (u1 - u0) * (v1 - v0) < best - 1e-9 * best)
      best = (u1 - u0) * (v1 - v0), theta = t;
  }
  tsr__free(ctx, pts);
  theta = fmod(theta, M_PI / 2);
  if (theta < 0)
    theta += M_PI / 2;
  if (theta > M_PI / 4)
    theta -= M_PI / 2;
  return theta;
}

int tsr_optimal_wcs(tsr_ctx_t *ctx, int n, const tsr_wcs_t *const *inputs,
                    const tsr_optimal_wcs_opts_t *opts, tsr_wcs_t **out) {
  tsr_optimal_wcs_opts_t o = TSR_OPTIMAL_WCS_OPTS_INIT;
  tsr__frame_t frame = tsr__frame_default(TSR__SKY_ICRS), icrs = frame;
  tsr__frame_xform_t xf;
  double *v = NULL, *x = NULL, *y = NULL, ref[3] = {0, 0, 0}, res = INFINITY;
  double lon, lat, angle = 0, crpix[2] = {1, 1}, xmin, xmax, ymin, ymax;
  const char *proj;
  tsr_wcs_t *w = NULL;
  int rc = 0;

  tsr__api_check(ctx != NULL && out != NULL, "tsr_optimal_wcs: NULL argument");
  *out = NULL;
  if (opts)
    o = *opts;
  proj = o.projection ? o.projection : "TAN";
  if (n < 1 || inputs == NULL)
    return tsr__err(ctx, TSR_EINVAL, "optimal WCS: %d inputs; expected at least 1", n);
  if (strlen(proj) != 3)
    return tsr__err(ctx, TSR_EINVAL, "optimal WCS: projection '%s': expected a 3-letter code such "
                                     "as TAN, SIN, CAR", proj);
  if (o.frame && tsr__frame_parse(o.frame, &frame) != 0)
    return tsr__err(ctx, TSR_EINVAL,
                    "optimal WCS: frame '%s': expected icrs, fk5, fk4, fk4-no-e, galactic, "
                    "supergalactic or ecliptic", o.frame);
  if (!(o.resolution >= 0 && o.resolution < 180))
    return tsr__err(ctx, TSR_EINVAL, "optimal WCS: resolution %g deg/px out of range (0, 180)",
                    o.resolution);
  v = tsr__mallocarray(ctx, (size_t)n * 12, sizeof *v);
  x = tsr__mallocarray(ctx, (size_t)n * 4, sizeof *x);
  y = tsr__mallocarray(ctx, (size_t)n * 4, sizeof *y);
  if (v == NULL || x == NULL || y == NULL) {
    rc = tsr__err(ctx, TSR_ENOMEM, "optimal WCS: out of memory");
    goto out;
  }
  for (int i = 0; i < n; i++) {
    tsr__cel_t *c = NULL;
    char what[64];
    double cx[4], cy[4], p[2], s[2], rv[3];
    int64_t nx = tsr_wcs_shape(inputs[i], 0), ny = tsr_wcs_shape(inputs[i], 1);
    snprintf(what, sizeof what, "optimal WCS: input %d", i + 1);
    if (tsr_wcs_naxis(inputs[i]) != 2 || nx < 1 || ny < 1) {
      rc = tsr__err(ctx, TSR_EINVAL, "%s has NAXIS = %d; expected a 2-D image with NAXIS1 and NAXIS2",
                    what, tsr_wcs_naxis(inputs[i]));
      goto out;
    }
    if ((rc = tsr__cel_new(ctx, inputs[i], what, &c)) != 0)
      goto out;
    if (i == 0 && o.frame == NULL)
      frame = *tsr__cel_frame(c);
    cx[0] = -0.5, cx[1] = (double)nx - 0.5, cx[2] = (double)nx - 0.5, cx[3] = -0.5;
    cy[0] = -0.5, cy[1] = -0.5, cy[2] = (double)ny - 0.5, cy[3] = (double)ny - 0.5;
    tsr__cel_pix2vec(c, 4, cx, cy, v + 12 * i);
    tsr__cel_crpix(c, p);
    tsr__cel_pix2vec(c, 1, p, p + 1, rv);
    tsr__cel_scales(c, s);
    tsr__frame_xform(tsr__cel_frame(c), &frame, &xf);
    tsr__frame_apply(&xf, 4, v + 12 * i);
    tsr__frame_xform(tsr__cel_frame(c), &icrs, &xf);
    tsr__frame_apply(&xf, 1, rv);
    tsr__cel_free(c);
    for (int a = 0; a < 3; a++)
      ref[a] += rv[a];
    res = fmin(res, fmin(fabs(s[0]), fabs(s[1])));
  }
  if (o.has_reference) {
    lon = o.reference_lon, lat = o.reference_lat;
  } else {
    double nrm = sqrt(ref[0] * ref[0] + ref[1] * ref[1] + ref[2] * ref[2]);
    for (int a = 0; a < 3; a++)
      ref[a] /= nrm;
    tsr__frame_xform(&icrs, &frame, &xf);
    tsr__frame_apply(&xf, 1, ref);
    lon = atan2(ref[1], ref[0]) * 180.0 / M_PI;
    if (lon < 0)
      lon += 360.0;
    lat = asin(fmax(-1.0, fmin(1.0, ref[2]))) * 180.0 / M_PI;
  }
  if (o.resolution > 0)
    res = o.resolution;
  for (int pass = 0; pass < 1 + (o.auto_rotate != 0); pass++) {
    tsr_wcs_free(w);
    w = NULL;
    if ((rc = make_header(ctx, &frame, proj, lon, lat, res, angle, crpix, 1, 1, &w)) != 0 ||
        (rc = project(ctx, w, (size_t)n * 4, v, x, y)) != 0)
      goto out;
    if (o.auto_rotate && pass == 0)
      angle = min_rect_angle(ctx, (size_t)n * 4, x, y);
  }
  xmin = xmax = x[0], ymin = ymax = y[0];
  for (int k = 1; k < 4 * n; k++) {
    xmin = fmin(xmin, x[k]), xmax = fmax(xmax, x[k]);
    ymin = fmin(ymin, y[k]), ymax = fmax(ymax, y[k]);
  }
  crpix[0] = (1 - xmin) + 0.5, crpix[1] = (1 - ymin) + 0.5;
  tsr_wcs_free(w);
  w = NULL;
  /* Python's round(): half to even, as nearbyint in the default mode. */
  rc = make_header(ctx, &frame, proj, lon, lat, res, angle, crpix, (int64_t)nearbyint(xmax - xmin),
                   (int64_t)nearbyint(ymax - ymin), out);
out:
  tsr_wcs_free(w);
  tsr__free(ctx, v);
  tsr__free(ctx, x);
  tsr__free(ctx, y);
  return rc;
}
