/* reproject_adaptive.c -- DeForest (2004) anti-aliased resampling
 * (reproject_adaptive).
 *
 * Semantics follow reproject 0.10's deforest.pyx (REFERENCE.md 3.4), with
 * the newer despike_jacobian and bad_value_mode options as documented.  Per
 * output pixel: the Jacobian J of the output -> input pixel mapping (central
 * differences on the integer grid padded by one pixel, or exact transforms
 * at +-0.5 px with center_jacobian), its closed-form SVD, singular values
 * padded to at least 1, M = J_pad^-1, and a Gaussian or Hann kernel in the
 * padded output-pixel frame t = M (p - c) sampled at every integer input
 * pixel p of a box around c.  One deliberate difference: reproject pads the
 * signed second singular value (negative when the mapping flips
 * orientation), so a flipped and down-sampled axis gets a kernel one input
 * pixel wide; we pad its magnitude and keep the sign.
 *
 * Block independence.  Everything about an output pixel (coordinates,
 * Jacobian, box, weights, summation order) depends only on that pixel and
 * the input, never on the block: coordinates come from tsr__map_box, whose
 * values are anchored to the global grid; the despiking neighbourhood is
 * taken from the original (not already despiked) Jacobians of the 3x3 (or,
 * at the image edge, 3x2) neighbours, which we compute on a grown box; sums
 * run row by row over the box in input order.  So any block size gives the
 * same bits, and any sub-box of a chunk too (TSR__OP_SUBBOX).
 *
 * Blocks and windows.  Working out each pixel's box ("prep") is cheap next
 * to sampling, so input_region preps the block, takes the exact union of
 * the boxes (clamped into the input; the whole axis when it is cyclic) as
 * the window, and keeps the prep for the compute that follows in the same
 * process.  A block none of whose pixels samples the input reads nothing.
 *
 * Speed.  The Gaussian exp(-q) with q quadratic in the sample offsets is
 * evaluated by recurrence (ratios of consecutive weights are geometric), six
 * exp() per output pixel instead of one per sample; the relative error stays
 * below 1e-13 where we use it (every weight of the box above e^-500).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "mapping.h"
#include "reproject.h"
#include "sky.h"

#define WB_CAP ((size_t)1 << 22) /* largest box whose weights we tabulate */
#define Q_RECUR 500.0             /* recurrence only if every weight > e^-Q_RECUR */
#define DESPIKE_FACTOR 10.0
#define PI 3.14159265358979323846

enum { PIX_NAN = 0, PIX_FILL = 1, PIX_SAMPLE = 2 };

typedef struct {
  tsr__reproject_params_t base; /* target, input name, mapping tolerance, roundtrip */
  int kernel, boundary, bad;
  double kernel_width, sample_region_width;
  double boundary_fill, ignore_threshold, bad_fill;
  int x_cyclic, y_cyclic, center, despike, conserve;
} adaptive_params_t;

/* What an output pixel needs; computed by prep(). */
typedef struct {
  double cx, cy;          /* input coordinates of the pixel */
  double m[4];            /* M = J_pad^-1, row-major */
  double det;             /* |det J| (unpadded), for conserve_flux */
  int64_t l, r, b, t;     /* sample box, inclusive, input pixels */
  int status;             /* PIX_* */
} pix_t;

typedef struct {
  tsr__reproject_state_t base; /* the output -> input mapping */
  tsr__cel_t *cout, *cin; /* for the half-pixel points of center_jacobian */
  tsr__frame_xform_t fwd, back; /* output frame -> input frame, and astropy's way back */
  /* The prep of the last box, reused by the compute that follows. */
  pix_t *pix;
  size_t pix_cap;
  bool have;
  int64_t bx0, bx1, by0, by1;
  int64_t ulo[2], uhi[2];  /* union of the sample boxes, clamped into the input */
  /* scratch */
  double *xs, *ys, *xa, *ya, *xb, *yb, *jac, *v;
  size_t xs_cap, jac_cap, v_cap;
  double *wb;
  size_t wb_cap;
} adaptive_state_t;

static void params_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const adaptive_params_t *ap = n->params;
  tsr__buf_put_i64(b, ap->kernel);
  tsr__buf_put_i64(b, ap->boundary);
  tsr__buf_put_i64(b, ap->bad);
  tsr__buf_put_f64(b, ap->kernel_width);
  tsr__buf_put_f64(b, ap->sample_region_width);
  tsr__buf_put_f64(b, ap->boundary_fill);
  tsr__buf_put_f64(b, ap->ignore_threshold);
  tsr__buf_put_f64(b, ap->bad_fill);
  tsr__buf_put_i64(b, ap->x_cyclic);
  tsr__buf_put_i64(b, ap->y_cyclic);
  tsr__buf_put_i64(b, ap->center);
  tsr__buf_put_i64(b, ap->despike);
  tsr__buf_put_i64(b, ap->conserve);
  tsr__reproject_params_encode(&ap->base, b);
}

static void adaptive_stop(tsr_node_t *n, void *state) {
  adaptive_state_t *st = state;
  tsr_ctx_t *ctx = n->graph->ctx;
  if (st == NULL)
    return;
  tsr__cel_free(st->cout);
  tsr__cel_free(st->cin);
  tsr__free(ctx, st->pix);
  tsr__free(ctx, st->xs);
  tsr__free(ctx, st->ys);
  tsr__free(ctx, st->xa);
  tsr__free(ctx, st->ya);
  tsr__free(ctx, st->xb);
  tsr__free(ctx, st->yb);
  tsr__free(ctx, st->jac);
  tsr__free(ctx, st->v);
  tsr__free(ctx, st->wb);
  tsr__reproject_state_free(n, st);
}

static int adaptive_start(tsr_node_t *n, void **state) {
  tsr_ctx_t *ctx = n->graph->ctx;
  const adaptive_params_t *ap = n->params;
  adaptive_state_t *st;
  int rc = tsr__reproject_state_new(n, sizeof *st, state);
  if (rc != 0 || !ap->center)
    return rc;
  st = *state;
  if ((rc = tsr__cel_open(ctx, ap->base.target, "target", true, &st->cout)) != 0 ||
      (rc = tsr__cel_open(ctx, n->inputs[0]->wcs, ap->base.in_what, true, &st->cin)) != 0) {
    adaptive_stop(n, st);
    *state = NULL;
    return rc;
  }
  tsr__frame_xform(tsr__cel_frame(st->cout), tsr__cel_frame(st->cin), &st->fwd);
  tsr__frame_xform(tsr__cel_frame(st->cin), tsr__cel_frame(st->cout), &st->back);
  return 0;
}

/* Grow *p (of *cap elements of `size`) to at least n elements. */
static int grow(tsr_ctx_t *ctx, void **p, size_t *cap, size_t n, size_t size) {
  if (n <= *cap)
    return 0;
  tsr__free(ctx, *p);
  *p = tsr__mallocarray(ctx, n, size);
  *cap = *p ? n : 0;
  return *p ? 0 : TSR_ENOMEM;
}

/* Exact output -> input transforms of n points (center_jacobian's half-pixel
 * points, which the integer grid of tsr__map_box does not hold), with
 * reproject's round trip: NaN where input -> output moves a point by more
 * than one pixel on either axis. */
static int exact_points(adaptive_state_t *st, tsr_ctx_t *ctx, bool roundtrip, size_t n,
                        const double *xo, const double *yo, double *xi, double *yi) {
  double *back_x, *back_y;
  if (grow(ctx, (void **)&st->v, &st->v_cap, 5 * n, sizeof(double)) != 0)
    return tsr__err(ctx, TSR_ENOMEM, "reproject_adaptive: out of memory");
  back_x = st->v + 3 * n;
  back_y = st->v + 4 * n;
  tsr__cel_pix2vec(st->cout, n, xo, yo, st->v);
  tsr__frame_apply(&st->fwd, n, st->v);
  tsr__cel_vec2pix(st->cin, n, st->v, xi, yi);
  if (!roundtrip)
    return 0;
  tsr__cel_pix2vec(st->cin, n, xi, yi, st->v);
  tsr__frame_apply(&st->back, n, st->v);
  tsr__cel_vec2pix(st->cout, n, st->v, back_x, back_y);
  for (size_t i = 0; i < n; i++)
    if (!(fabs(back_x[i] - xo[i]) <= 1.0 && fabs(back_y[i] - yo[i]) <= 1.0))
      xi[i] = yi[i] = NAN;
  return 0;
}

/* Jacobians (J00, J01, J10, J11 per pixel, columns d/dx_out, d/dy_out) and
 * input coordinates of the pixels of [x0,x1) x [y0,y1), row-major into
 * st->jac and st->xs/ys. */
static int jacobians(tsr_node_t *n, adaptive_state_t *st, tsr_ctx_t *ctx, int64_t x0, int64_t x1,
                     int64_t y0, int64_t y1) {
  const adaptive_params_t *ap = n->params;
  int64_t w = x1 - x0, h = y1 - y0;
  size_t npix = (size_t)w * (size_t)h;
  size_t ngrid = (size_t)(w + 2) * (size_t)(h + 2);
  int rc;

  if (grow(ctx, (void **)&st->jac, &st->jac_cap, 4 * npix, sizeof(double)) != 0)
    goto oom;
  if (!ap->center) {
    /* Coordinates of the box grown by one pixel: reproject's padded grid. */
    size_t cap = st->xs_cap;
    if (grow(ctx, (void **)&st->xs, &cap, ngrid, sizeof(double)) != 0)
      goto oom;
    cap = st->xs_cap;
    if (grow(ctx, (void **)&st->ys, &cap, ngrid, sizeof(double)) != 0)
      goto oom;
    st->xs_cap = cap;
    if ((rc = tsr__map_box(st->base.map, x0 - 1, x1 + 1, y0 - 1, y1 + 1, st->xs, st->ys)) != 0)
      return rc;
    int64_t gw = w + 2;
    for (int64_t y = 0; y < h; y++)
      for (int64_t x = 0; x < w; x++) {
        size_t c = (size_t)((y + 1) * gw + (x + 1));
        double *J = st->jac + 4 * (size_t)(y * w + x);
        /* The mean of the two one-sided differences, as reproject forms it. */
        J[0] = ((st->xs[c] - st->xs[c - 1]) + (st->xs[c + 1] - st->xs[c])) / 2;
        J[2] = ((st->ys[c] - st->ys[c - 1]) + (st->ys[c + 1] - st->ys[c])) / 2;
        J[1] = ((st->xs[c] - st->xs[c - (size_t)gw]) + (st->xs[c + (size_t)gw] - st->xs[c])) / 2;
        J[3] = ((st->ys[c] - st->ys[c - (size_t)gw]) + (st->ys[c + (size_t)gw] - st->ys[c])) / 2;
      }
    /* Keep only the box's own coordinates, compacted in place (row y of
     * the box sits at grid row y + 1, which is never before its new place). */
    for (int64_t y = 0; y < h; y++) {
      memmove(st->xs + (size_t)(y * w), st->xs + (size_t)((y + 1) * gw + 1), (size_t)w * sizeof(double));
      memmove(st->ys + (size_t)(y * w), st->ys + (size_t)((y + 1) * gw + 1), (size_t)w * sizeof(double));
    }
    return 0;
  }
  {
    size_t nxo = (size_t)(w + 1) * (size_t)h, nyo = (size_t)w * (size_t)(h + 1);
    size_t cap = st->xs_cap, need = nxo > npix ? nxo : npix;
    need = nyo > need ? nyo : need;
    if (grow(ctx, (void **)&st->xs, &cap, need, sizeof(double)) != 0)
      goto oom;
    cap = st->xs_cap;
    if (grow(ctx, (void **)&st->ys, &cap, need, sizeof(double)) != 0)
      goto oom;
    cap = st->xs_cap;
    if (grow(ctx, (void **)&st->xa, &cap, need, sizeof(double)) != 0)
      goto oom;
    cap = st->xs_cap;
    if (grow(ctx, (void **)&st->ya, &cap, need, sizeof(double)) != 0)
      goto oom;
    cap = st->xs_cap;
    if (grow(ctx, (void **)&st->xb, &cap, need, sizeof(double)) != 0)
      goto oom;
    cap = st->xs_cap;
    if (grow(ctx, (void **)&st->yb, &cap, need, sizeof(double)) != 0)
      goto oom;
    st->xs_cap = cap;
    /* Points (x - 1/2, y) for x in [x0, x1]: differences along x. */
    for (int64_t y = 0; y < h; y++)
      for (int64_t x = 0; x <= w; x++) {
        st->xa[(size_t)(y * (w + 1) + x)] = (double)(x0 + x) - 0.5;
        st->ya[(size_t)(y * (w + 1) + x)] = (double)(y0 + y);
      }
    if ((rc = exact_points(st, ctx, ap->base.roundtrip, nxo, st->xa, st->ya, st->xb, st->yb)) != 0)
      return rc;
    for (int64_t y = 0; y < h; y++)
      for (int64_t x = 0; x < w; x++) {
        size_t c = (size_t)(y * (w + 1) + x);
        double *J = st->jac + 4 * (size_t)(y * w + x);
        J[0] = -st->xb[c] + st->xb[c + 1];
        J[2] = -st->yb[c] + st->yb[c + 1];
      }
    /* Points (x, y - 1/2) for y in [y0, y1]: differences along y. */
    for (int64_t y = 0; y <= h; y++)
      for (int64_t x = 0; x < w; x++) {
        st->xa[(size_t)(y * w + x)] = (double)(x0 + x);
        st->ya[(size_t)(y * w + x)] = (double)(y0 + y) - 0.5;
      }
    if ((rc = exact_points(st, ctx, ap->base.roundtrip, nyo, st->xa, st->ya, st->xb, st->yb)) != 0)
      return rc;
    for (int64_t y = 0; y < h; y++)
      for (int64_t x = 0; x < w; x++) {
        size_t c = (size_t)(y * w + x);
        double *J = st->jac + 4 * c;
        J[1] = -st->xb[c] + st->xb[c + (size_t)w];
        J[3] = -st->yb[c] + st->yb[c + (size_t)w];
      }
    return tsr__map_box(st->base.map, x0, x1, y0, y1, st->xs, st->ys);
  }
oom:
  return tsr__err(ctx, TSR_ENOMEM, "reproject_adaptive: out of memory for coordinates");
}

static double jmag2(const double *J) { return J[0] * J[0] + J[1] * J[1] + J[2] * J[2] + J[3] * J[3]; }

/* 10 x the third-lowest Jmag2 of the 3x3 neighbourhood of interior pixel
 * (x, y) of the Jacobian field `jac` (w wide). */
static double spike_threshold(const double *jac, int64_t w, int64_t x, int64_t y) {
  double v[9];
  int k = 0;
  for (int64_t j = y - 1; j <= y + 1; j++)
    for (int64_t i = x - 1; i <= x + 1; i++)
      v[k++] = jmag2(jac + 4 * (size_t)(j * w + i));
  /* Partial selection sort: the three smallest. */
  for (int a = 0; a < 3; a++)
    for (int b = a + 1; b < 9; b++)
      if (v[b] < v[a]) {
        double t = v[a];
        v[a] = v[b];
        v[b] = t;
      }
  return DESPIKE_FACTOR * v[2];
}

/* Despiked Jacobian of pixel (x, y) (coordinates within the field, which
 * covers output pixels [fx0, fx0+w) x [fy0, fy0+h) and at least two pixels
 * around (x, y) where the output image has them; nx, ny: the output image). */
static void despike_one(const double *jac, int64_t w, int64_t fx0, int64_t fy0, int64_t nx,
                        int64_t ny, int64_t x, int64_t y, double out[4]) {
  int64_t gx = fx0 + x, gy = fy0 + y; /* global output pixel */
  const double *J = jac + 4 * (size_t)(y * w + x);
  double thresh;
  int64_t i0, i1, j0, j1;
  memcpy(out, J, 4 * sizeof(double));
  if (nx < 3 || ny < 3)
    return;
  if (gx >= 1 && gx <= nx - 2 && gy >= 1 && gy <= ny - 2) {
    thresh = spike_threshold(jac, w, x, y);
    i0 = x - 1, i1 = x + 1, j0 = y - 1, j1 = y + 1;
  } else if ((gy == 0 || gy == ny - 1) && gx >= 1 && gx <= nx - 2) {
    /* Edge rows use the threshold of the interior pixel next to them. */
    int64_t yin = gy == 0 ? y + 1 : y - 1;
    thresh = spike_threshold(jac, w, x, yin);
    i0 = x - 1, i1 = x + 1;
    j0 = gy == 0 ? y : y - 1;
    j1 = gy == 0 ? y + 1 : y;
  } else if ((gx == 0 || gx == nx - 1) && gy >= 1 && gy <= ny - 2) {
    int64_t xin = gx == 0 ? x + 1 : x - 1;
    thresh = spike_threshold(jac, w, xin, y);
    j0 = y - 1, j1 = y + 1;
    i0 = gx == 0 ? x : x - 1;
    i1 = gx == 0 ? x + 1 : x;
  } else {
    return; /* corners are never despiked (as in reproject) */
  }
  if (!(jmag2(J) > thresh))
    return;
  {
    double s[4] = {0, 0, 0, 0};
    int nc = 0;
    for (int64_t j = j0; j <= j1; j++)
      for (int64_t i = i0; i <= i1; i++) {
        const double *K = jac + 4 * (size_t)(j * w + i);
        if ((i == x && j == y) || !(jmag2(K) < thresh))
          continue;
        nc++;
        for (int k = 0; k < 4; k++)
          s[k] += K[k];
      }
    for (int k = 0; k < 4; k++)
      out[k] = s[k] / nc;
  }
}

/* reproject's closed-form 2x2 SVD: J = U diag(s) V^T. */
static void svd2x2(const double J[4], double U[4], double s[2], double V[4]) {
  double E = (J[0] + J[3]) / 2, F = (J[0] - J[3]) / 2;
  double G = (J[2] + J[1]) / 2, H = (J[2] - J[1]) / 2;
  double Q = sqrt(E * E + H * H), R = sqrt(F * F + G * G);
  double a1 = atan2(G, F), a2 = atan2(H, E);
  double theta = (a2 - a1) / 2, phi = (a2 + a1) / 2;
  s[0] = Q + R;
  s[1] = Q - R;
  U[0] = cos(phi), U[1] = -sin(phi), U[2] = sin(phi), U[3] = cos(phi);
  V[0] = cos(theta), V[1] = sin(theta), V[2] = -sin(theta), V[3] = cos(theta);
}

/* M = U diag(s) V^T. */
static void svd2x2_compose(const double U[4], const double s[2], const double V[4], double M[4]) {
  double t00 = U[0] * s[0], t01 = U[1] * s[1], t10 = U[2] * s[0], t11 = U[3] * s[1];
  M[0] = t00 * V[0] + t01 * V[1];
  M[1] = t00 * V[2] + t01 * V[3];
  M[2] = t10 * V[0] + t11 * V[1];
  M[3] = t10 * V[2] + t11 * V[3];
}

static double fmax4(double a, double b, double c, double d) { return fmax(fmax(a, b), fmax(c, d)); }
static double fmin4(double a, double b, double c, double d) { return fmin(fmin(a, b), fmin(c, d)); }

static int64_t to_i64(double v) {
  /* Boxes of wild Jacobians (seams) can be huge; keep them representable. */
  if (v > 4e18)
    return (int64_t)4e18;
  if (v < -4e18)
    return -(int64_t)4e18;
  return (int64_t)v;
}

/* The sample box and status of one pixel from its coordinates and Jacobian. */
static void plan_pixel(const adaptive_params_t *ap, int64_t nx_in, int64_t ny_in, double cx,
                       double cy, const double J[4], pix_t *p) {
  double U[4], V[4], s[2], Jp[4], inv[2];
  double top, bottom, left, right;
  const double xmax = (double)(nx_in - 1), ymax = (double)(ny_in - 1);

  p->cx = cx, p->cy = cy;
  p->status = PIX_NAN;
  if (isnan(J[0]) || isnan(J[1]) || isnan(J[2]) || isnan(J[3]) || isnan(cx) || isnan(cy))
    return;
  p->det = fabs(J[0] * J[3] - J[1] * J[2]);
  {
    /* The singular values need only two square roots (s0 = Q + R >= |s1| =
     * |Q - R|).  When neither is padded, J_pad = J and M = J^-1; when both
     * are, J_pad = U diag(1, sign s1) V^T is the orthogonal polar factor of
     * J, (J +- cof J) / (2Q or 2R), and M its transpose.  Only the mixed
     * case needs the angles of the full SVD. */
    double E = (J[0] + J[3]) / 2, F = (J[0] - J[3]) / 2;
    double G = (J[2] + J[1]) / 2, H = (J[2] - J[1]) / 2;
    double Q = sqrt(E * E + H * H), R = sqrt(F * F + G * G);
    double s0 = Q + R, s1 = Q - R, d = J[0] * J[3] - J[1] * J[2];
    if (fabs(s1) >= 1.0 && d != 0) {
      memcpy(Jp, J, sizeof Jp);
      p->m[0] = J[3] / d, p->m[1] = -J[1] / d, p->m[2] = -J[2] / d, p->m[3] = J[0] / d;
      s[0] = s0, s[1] = s1;
    } else if (s0 <= 1.0 && (Q > R || R > Q)) {
      if (Q > R) { /* rotation */
        double c = E / Q, sn = H / Q;
        Jp[0] = c, Jp[1] = -sn, Jp[2] = sn, Jp[3] = c;
      } else { /* reflection */
        double c = F / R, sn = G / R;
        Jp[0] = c, Jp[1] = sn, Jp[2] = sn, Jp[3] = -c;
      }
      p->m[0] = Jp[0], p->m[1] = Jp[2], p->m[2] = Jp[1], p->m[3] = Jp[3];
      s[0] = 1.0, s[1] = Q > R ? 1.0 : -1.0;
    } else {
      svd2x2(J, U, s, V);
      /* Pad magnitudes, keep signs (reproject pads the signed value; see top). */
      s[0] = copysign(fmax(1.0, fabs(s[0])), s[0]);
      s[1] = copysign(fmax(1.0, fabs(s[1])), s[1]);
      svd2x2_compose(U, s, V, Jp);
      inv[0] = 1.0 / s[0];
      inv[1] = 1.0 / s[1];
      svd2x2_compose(V, inv, U, p->m);
    }
    inv[0] = 1.0 / s[0];
    inv[1] = 1.0 / s[1];
  }
  if (ap->kernel == TSR_KERNEL_HANN) {
    double P1x = -Jp[0] + Jp[1], P1y = -Jp[2] + Jp[3];
    double P2x = Jp[0] + Jp[1], P2y = Jp[2] + Jp[3];
    double P3x = -Jp[0] - Jp[1], P3y = -Jp[2] - Jp[3];
    double P4x = Jp[0] - Jp[1], P4y = Jp[2] - Jp[3];
    top = fmax4(P1y, P2y, P3y, P4y);
    bottom = fmin4(P1y, P2y, P3y, P4y);
    right = fmax4(P1x, P2x, P3x, P4x);
    left = fmin4(P1x, P2x, P3x, P4x);
  } else {
    top = ap->sample_region_width / (2 * fmin(fabs(inv[0]), fabs(inv[1])));
    bottom = -top;
    right = top;
    left = -right;
  }
  bottom = ceil(bottom + cy);
  top = floor(top + cy);
  left = ceil(left + cx);
  right = floor(right + cx);
  /* The box stays whole in the ignore modes: samples outside the input
   * are skipped as they are met, so the kernel weights (tabulated over the
   * box by a recurrence) are the same bits in 'ignore' and
   * 'ignore_threshold', which must agree exactly at threshold 1. */
  if (ap->boundary == TSR_BOUNDARY_STRICT &&
      ((!ap->x_cyclic && (right > xmax || left < 0)) || (!ap->y_cyclic && (top > ymax || bottom < 0))))
    return;
  if ((!ap->x_cyclic && (right < 0 || left > xmax)) || (!ap->y_cyclic && (top < 0 || bottom > ymax))) {
    if (ap->boundary == TSR_BOUNDARY_GRID_CONSTANT) {
      p->status = PIX_FILL;
      return;
    }
    if (ap->boundary != TSR_BOUNDARY_NEAREST)
      return;
    /* At least one sample (reproject's nearest mode). */
    if (right < left)
      right = left;
    if (top < bottom)
      top = bottom;
  }
  p->l = to_i64(left), p->r = to_i64(right), p->b = to_i64(bottom), p->t = to_i64(top);
  p->status = PIX_SAMPLE;
}

/* Prep the pixels of [x0,x1) x [y0,y1) into st->pix (reused when the box is
 * the last one prepped). */
static int prep(tsr_node_t *n, adaptive_state_t *st, tsr_ctx_t *ctx, int64_t x0, int64_t x1,
                int64_t y0, int64_t y1) {
  const adaptive_params_t *ap = n->params;
  const tsr_node_t *in = n->inputs[0];
  int64_t w = x1 - x0, h = y1 - y0;
  size_t npix = (size_t)w * (size_t)h;
  int64_t fx0 = x0, fx1 = x1, fy0 = y0, fy1 = y1;
  int rc;

  if (st->have && st->bx0 == x0 && st->bx1 == x1 && st->by0 == y0 && st->by1 == y1)
    return 0;
  st->have = false;
  if (grow(ctx, (void **)&st->pix, &st->pix_cap, npix, sizeof(pix_t)) != 0)
    return tsr__err(ctx, TSR_ENOMEM, "%s: out of memory for %zu pixels", n->name, npix);
  if (ap->despike) {
    /* Neighbours up to two pixels away (edge pixels borrow the threshold of
     * the interior pixel next to them), within the output image. */
    fx0 = x0 - 2 < 0 ? 0 : x0 - 2;
    fy0 = y0 - 2 < 0 ? 0 : y0 - 2;
    fx1 = x1 + 2 > n->shape[0] ? n->shape[0] : x1 + 2;
    fy1 = y1 + 2 > n->shape[1] ? n->shape[1] : y1 + 2;
  }
  if ((rc = jacobians(n, st, ctx, fx0, fx1, fy0, fy1)) != 0)
    return rc;
  {
    int64_t fw = fx1 - fx0, nx = in->shape[0], ny = in->shape[1];
    st->ulo[0] = st->ulo[1] = INT64_MAX;
    st->uhi[0] = st->uhi[1] = INT64_MIN;
    for (int64_t y = y0; y < y1; y++)
      for (int64_t x = x0; x < x1; x++) {
        size_t f = (size_t)((y - fy0) * fw + (x - fx0));
        pix_t *p = &st->pix[(size_t)((y - y0) * w + (x - x0))];
        double J[4];
        if (ap->despike)
          despike_one(st->jac, fw, fx0, fy0, n->shape[0], n->shape[1], x - fx0, y - fy0, J);
        else
          memcpy(J, st->jac + 4 * f, sizeof J);
        plan_pixel(ap, nx, ny, st->xs[f], st->ys[f], J, p);
        if (p->status != PIX_SAMPLE)
          continue;
        /* The window is the union of the sample boxes, each clamped into
         * the input (nearest mode's clamp; the other modes use the part
         * inside): gathered here, while the pixel is in cache. */
        int64_t a0 = p->l < 0 ? 0 : p->l > nx - 1 ? nx - 1 : p->l;
        int64_t a1 = p->r < 0 ? 0 : p->r > nx - 1 ? nx - 1 : p->r;
        int64_t b0 = p->b < 0 ? 0 : p->b > ny - 1 ? ny - 1 : p->b;
        int64_t b1 = p->t < 0 ? 0 : p->t > ny - 1 ? ny - 1 : p->t;
        st->ulo[0] = a0 < st->ulo[0] ? a0 : st->ulo[0];
        st->uhi[0] = a1 > st->uhi[0] ? a1 : st->uhi[0];
        st->ulo[1] = b0 < st->ulo[1] ? b0 : st->ulo[1];
        st->uhi[1] = b1 > st->uhi[1] ? b1 : st->uhi[1];
      }
  }
  st->have = true;
  st->bx0 = x0, st->bx1 = x1, st->by0 = y0, st->by1 = y1;
  return 0;
}

static int adaptive_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                                 tsr_region_t *win, bool *empty) {
  adaptive_state_t *st = state;
  const adaptive_params_t *ap = n->params;
  const tsr_node_t *in = n->inputs[i];
  int64_t nx = in->shape[0], ny = in->shape[1];
  int64_t lo[2], hi[2];
  int rc;

  if ((rc = prep(n, st, n->graph->ctx, out->start[0], out->stop[0], out->start[1], out->stop[1])) != 0)
    return rc;
  memcpy(lo, st->ulo, sizeof lo);
  memcpy(hi, st->uhi, sizeof hi);
  *win = *out;
  if (lo[0] > hi[0] || lo[1] > hi[1]) {
    *empty = true;
    return 0;
  }
  win->start[0] = ap->x_cyclic ? 0 : lo[0];
  win->stop[0] = ap->x_cyclic ? nx : hi[0] + 1;
  win->start[1] = ap->y_cyclic ? 0 : lo[1];
  win->stop[1] = ap->y_cyclic ? ny : hi[1] + 1;
  return 0;
}

/* Kernel weights of the box of p, row-major into wb; returns false when
 * the box is too large to tabulate (then weights are computed per sample). */
static inline double weight_direct(const adaptive_params_t *ap, const pix_t *p, double dx, double dy,
                                   double k) {
  double tx = p->m[0] * dx + p->m[1] * dy, ty = p->m[2] * dx + p->m[3] * dy;
  if (ap->kernel == TSR_KERNEL_HANN) {
    tx = fabs(tx), ty = fabs(ty);
    if (tx >= 1 || ty >= 1)
      return 0;
    return (cos(tx * PI) + 1.0) * (cos(ty * PI) + 1.0);
  }
  return exp(-(tx * tx + ty * ty) * k);
}

static void fill_weights(const adaptive_params_t *ap, const pix_t *p, double *wb) {
  int64_t bw = p->r - p->l + 1, bh = p->t - p->b + 1;
  double k = 2.0 / (ap->kernel_width * ap->kernel_width);
  double dx0 = (double)p->l - p->cx, dy0 = (double)p->b - p->cy;

  if (ap->kernel == TSR_KERNEL_GAUSSIAN) {
    /* q(dx, dy) = A dx^2 + 2B dx dy + C dy^2 is convex, so its largest value
     * over the box is at a corner; when every weight is above e^-Q_RECUR,
     * step by ratios: along a row w(x+1) = w(x) r(x), r(x+1) = r(x) e^-2A;
     * down the first column likewise with e^-2C; and r's start moves by
     * e^-2B per row. */
    double A = k * (p->m[0] * p->m[0] + p->m[2] * p->m[2]);
    double B = k * (p->m[0] * p->m[1] + p->m[2] * p->m[3]);
    double C = k * (p->m[1] * p->m[1] + p->m[3] * p->m[3]);
    double dx1 = dx0 + (double)(bw - 1), dy1 = dy0 + (double)(bh - 1);
#define QF(X, Y) (A * (X) * (X) + 2 * B * (X) * (Y) + C * (Y) * (Y))
    double qmax = fmax4(QF(dx0, dy0), QF(dx1, dy0), QF(dx0, dy1), QF(dx1, dy1));
#undef QF
    if (qmax < Q_RECUR && A < 100 && C < 100 && fabs(B) < 100) {
      double gA = exp(-2 * A), gB = exp(-2 * B), gC = exp(-2 * C);
      double q00 = A * dx0 * dx0 + 2 * B * dx0 * dy0 + C * dy0 * dy0;
      double w0 = exp(-q00);                                  /* w(l, y) */
      double e0 = exp(-(2 * B * dx0 + C * (2 * dy0 + 1)));    /* w(l, y+1) / w(l, y) */
      double r0 = exp(-(A * (2 * dx0 + 1) + 2 * B * dy0));    /* w(l+1, y) / w(l, y) */
      for (int64_t j = 0; j < bh; j++) {
        double wv = w0, r = r0;
        double *row = wb + (size_t)(j * bw);
        for (int64_t i = 0; i < bw; i++) {
          row[i] = wv;
          wv *= r;
          r *= gA;
        }
        w0 *= e0;
        e0 *= gC;
        r0 *= gB;
      }
      return;
    }
  }
  for (int64_t j = 0; j < bh; j++)
    for (int64_t i = 0; i < bw; i++)
      wb[(size_t)(j * bw + i)] = weight_direct(ap, p, dx0 + (double)i, dy0 + (double)j, k);
}

static inline int64_t wrap(int64_t v, int64_t n) {
  int64_t r = v % n;
  return r < 0 ? r + n : r;
}

/* One output value of pixel p over one plane.  `wb` holds the box's
 * weights or is NULL (huge boxes: computed per sample).  The sum runs row
 * by row, left to right, skipping zero weights (reproject's early exit). */
#define DEFINE_SAMPLE(TIN, SUF)                                                                  \
  static double sample_##SUF(const adaptive_params_t *ap, const pix_t *p, const double *wb,     \
                             const TIN *src, int64_t rs, int64_t wx0, int64_t wy0, int64_t nx,   \
                             int64_t ny) {                                                       \
    int64_t bw = p->r - p->l + 1;                                                               \
    double S = 0, W = 0, I = 0, k = 2.0 / (ap->kernel_width * ap->kernel_width);                \
    bool inside = p->l >= 0 && p->r <= nx - 1 && p->b >= 0 && p->t <= ny - 1;                  \
    if (inside && wb && ap->bad == TSR_BAD_STRICT) {                                            \
      const double *wr = wb;                                                                     \
      for (int64_t y = p->b; y <= p->t; y++, wr += bw) {                                        \
        const TIN *row = src + (y - wy0) * rs + (p->l - wx0);                                   \
        for (int64_t i = 0; i < bw; i++) {                                                      \
          double wv = wr[i];                                                                     \
          if (wv != 0) {                                                                         \
            S += wv * (double)row[i];                                                            \
            W += wv;                                                                             \
          }                                                                                      \
        }                                                                                        \
      }                                                                                          \
    } else {                                                                                     \
      for (int64_t y = p->b; y <= p->t; y++) {                                                  \
        int64_t yy = y;                                                                          \
        bool yout = false;                                                                       \
        if (y < 0 || y > ny - 1) {                                                               \
          if (ap->y_cyclic)                                                                      \
            yy = wrap(y, ny);                                                                    \
          else if (ap->boundary == TSR_BOUNDARY_NEAREST)                                        \
            yy = y < 0 ? 0 : ny - 1;                                                             \
          else                                                                                   \
            yout = true;                                                                         \
        }                                                                                        \
        const TIN *row = src + (yy - wy0) * rs;                                                  \
        for (int64_t x = p->l; x <= p->r; x++) {                                                \
          double wv = wb ? wb[(size_t)((y - p->b) * bw + (x - p->l))]                           \
                         : weight_direct(ap, p, (double)x - p->cx, (double)y - p->cy, k);        \
          double v;                                                                              \
          int64_t xx = x;                                                                        \
          bool out = yout;                                                                       \
          if (wv == 0)                                                                           \
            continue;                                                                            \
          if (x < 0 || x > nx - 1) {                                                             \
            if (ap->x_cyclic)                                                                    \
              xx = wrap(x, nx);                                                                  \
            else if (ap->boundary == TSR_BOUNDARY_NEAREST)                                      \
              xx = x < 0 ? 0 : nx - 1;                                                           \
            else                                                                                 \
              out = true;                                                                        \
          }                                                                                      \
          if (out) {                                                                             \
            if (ap->boundary == TSR_BOUNDARY_CONSTANT ||                                        \
                ap->boundary == TSR_BOUNDARY_GRID_CONSTANT) {                                   \
              v = ap->boundary_fill;                                                             \
            } else {                                                                             \
              if (ap->boundary == TSR_BOUNDARY_IGNORE_THRESHOLD)                                \
                I += wv;                                                                         \
              continue;                                                                          \
            }                                                                                    \
          } else {                                                                               \
            v = (double)row[xx - wx0];                                                           \
          }                                                                                      \
          if (ap->bad != TSR_BAD_STRICT && !isfinite(v)) {                                      \
            if (ap->bad == TSR_BAD_IGNORE)                                                       \
              continue;                                                                          \
            v = ap->bad_fill;                                                                    \
          }                                                                                      \
          S += wv * v;                                                                           \
          W += wv;                                                                               \
        }                                                                                        \
      }                                                                                          \
    }                                                                                            \
    if (ap->boundary == TSR_BOUNDARY_IGNORE_THRESHOLD && I / (I + W) > ap->ignore_threshold)   \
      return NAN;                                                                                \
    S /= W;                                                                                      \
    return ap->conserve ? S * p->det : S;                                                        \
  }

DEFINE_SAMPLE(float, f)
DEFINE_SAMPLE(double, d)

static inline void put(void *plane, tsr_dtype_t dt, size_t off, double v) {
  if (dt == TSR_F32)
    ((float *)plane)[off] = (float)v;
  else
    ((double *)plane)[off] = v;
}

static int adaptive_compute(tsr__task_t *t) {
  tsr_node_t *n = t->node;
  const adaptive_params_t *ap = n->params;
  adaptive_state_t *st = t->state;
  const tsr__window_t *w = &t->in[0];
  const tsr_node_t *in = n->inputs[0];
  int64_t x0 = t->out.start[0], x1 = t->out.stop[0], y0 = t->out.start[1], y1 = t->out.stop[1];
  int64_t bw = x1 - x0;
  size_t es_in = tsr_dtype_size(in->dtype);
  int rc;

  if ((rc = prep(n, st, t->ctx, x0, x1, y0, y1)) != 0)
    return rc;
  for (int64_t y = y0; y < y1; y++)
    for (int64_t x = x0; x < x1; x++) {
      const pix_t *p = &st->pix[(size_t)((y - y0) * bw + (x - x0))];
      const double *wb = NULL;
      if (p->status == PIX_SAMPLE && w->data != NULL) {
        size_t nb = (size_t)(p->r - p->l + 1) * (size_t)(p->t - p->b + 1);
        if ((double)(p->r - p->l + 1) * (double)(p->t - p->b + 1) <= (double)WB_CAP) {
          if (grow(t->ctx, (void **)&st->wb, &st->wb_cap, nb, sizeof(double)) != 0)
            return tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory for kernel weights", n->name);
          fill_weights(ap, p, st->wb);
          wb = st->wb;
        }
      }
      for (int64_t q = t->out.start[3]; q < t->out.stop[3]; q++)
        for (int64_t z = t->out.start[2]; z < t->out.stop[2]; z++) {
          size_t off = tsr__task_offset(t, x - x0, y - y0, z - t->out.start[2], q - t->out.start[3]);
          double v = NAN;
          if (p->status == PIX_FILL) {
            v = ap->boundary_fill;
          } else if (p->status == PIX_SAMPLE && w->data != NULL) {
            const char *src = (const char *)w->data +
                              (size_t)((q - w->win.start[3]) * w->stride[3] +
                                       (z - w->win.start[2]) * w->stride[2]) * es_in;
            if (in->dtype == TSR_F32)
              v = sample_f(ap, p, wb, (const float *)src, w->stride[1], w->win.start[0],
                           w->win.start[1], in->shape[0], in->shape[1]);
            else
              v = sample_d(ap, p, wb, (const double *)src, w->stride[1], w->win.start[0],
                           w->win.start[1], in->shape[0], in->shape[1]);
          }
          if (t->planes[0])
            put(t->planes[0], n->dtype, off, v);
          if (t->planes[1]) {
            /* The footprint of the stored value (a float32 overflow stays finite-or-not alike). */
            double sv = n->dtype == TSR_F32 ? (double)(float)v : v;
            put(t->planes[1], n->dtype, off, sv == sv ? 1.0 : 0.0);
          }
        }
    }
  return 0;
}

static const tsr__op_t adaptive_op = {
    .name = "reproject_adaptive",
    .version = 2, /* 2: the mapping's tolerance is encoded before its roundtrip flag */
    .flags = TSR__OP_SUBBOX | TSR__OP_REPROJECT,
    .input_region = adaptive_input_region,
    .start = adaptive_start,
    .stop = adaptive_stop,
    .compute = adaptive_compute,
    .encode = params_encode,
    .free_params = tsr__reproject_params_free,
};

int tsr_kernel_parse(const char *s) {
  if (s == NULL)
    return -1;
  if (strcasecmp(s, "gaussian") == 0)
    return TSR_KERNEL_GAUSSIAN;
  if (strcasecmp(s, "hann") == 0 || strcasecmp(s, "hanning") == 0)
    return TSR_KERNEL_HANN;
  return -1;
}

static const char *const boundary_names[] = {"strict", "constant", "grid-constant", "ignore",
                                             "ignore_threshold", "nearest"};

int tsr_boundary_parse(const char *s) {
  if (s == NULL)
    return -1;
  for (int i = 0; i < 6; i++)
    if (strcasecmp(s, boundary_names[i]) == 0)
      return i;
  return -1;
}

int tsr_bad_value_parse(const char *s) {
  if (s == NULL)
    return -1;
  if (strcasecmp(s, "strict") == 0)
    return TSR_BAD_STRICT;
  if (strcasecmp(s, "ignore") == 0)
    return TSR_BAD_IGNORE;
  if (strcasecmp(s, "constant") == 0)
    return TSR_BAD_CONSTANT;
  return -1;
}


#define FAIL(...) return tsr__graph_fail(g, TSR_EINVAL, "reproject_adaptive: " __VA_ARGS__)

tsr_node_t *tsr_reproject_adaptive(tsr_graph_t *g, tsr_node_t *src, const tsr_wcs_t *target,
                                   const tsr_adaptive_opts_t *opts) {
  tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
  adaptive_params_t *ap;

  if (!tsr__graph_check(g))
    return NULL;
  if (opts)
    o = *opts;
  if (o.kernel != TSR_KERNEL_GAUSSIAN && o.kernel != TSR_KERNEL_HANN)
    FAIL("kernel %d out of range [0, 1] (gaussian, hann)", o.kernel);
  if (!(o.kernel_width > 0 && o.kernel_width <= 100))
    FAIL("kernel_width %g out of range (0, 100]", o.kernel_width);
  if (!(o.sample_region_width > 0 && o.sample_region_width <= 100))
    FAIL("sample_region_width %g out of range (0, 100]", o.sample_region_width);
  if ((int)o.boundary_mode < TSR_BOUNDARY_STRICT || o.boundary_mode > TSR_BOUNDARY_NEAREST)
    FAIL("boundary_mode %d out of range [0, 5] (strict, constant, grid-constant, ignore, "
         "ignore_threshold, nearest)",
         o.boundary_mode);
  if (!isfinite(o.boundary_fill_value))
    FAIL("boundary_fill_value %g is not finite", o.boundary_fill_value);
  if (!(o.boundary_ignore_threshold >= 0 && o.boundary_ignore_threshold <= 1))
    FAIL("boundary_ignore_threshold %g out of range [0, 1]", o.boundary_ignore_threshold);
  if ((int)o.bad_value_mode < TSR_BAD_STRICT || o.bad_value_mode > TSR_BAD_CONSTANT)
    FAIL("bad_value_mode %d out of range [0, 2] (strict, ignore, constant)", o.bad_value_mode);
  if (!isfinite(o.bad_fill_value))
    FAIL("bad_fill_value %g is not finite", o.bad_fill_value);
  if (!(o.mapping_tolerance >= 0.0 && o.mapping_tolerance <= 1.0))
    FAIL("mapping tolerance %g px out of range [0, 1]", o.mapping_tolerance);
  if (!tsr__reproject_check(g, "reproject_adaptive", src, target, o.dtype, o.block))
    return NULL;
  ap = tsr__reproject_params_new(g, "reproject_adaptive", sizeof *ap, src, target,
                                 o.mapping_tolerance, o.roundtrip != 0);
  if (ap == NULL)
    return NULL;
  ap->kernel = o.kernel;
  ap->boundary = o.boundary_mode;
  ap->bad = o.bad_value_mode;
  ap->kernel_width = o.kernel_width;
  ap->sample_region_width = o.sample_region_width;
  /* Options a mode ignores do not make different keys. */
  ap->boundary_fill = (o.boundary_mode == TSR_BOUNDARY_CONSTANT ||
                       o.boundary_mode == TSR_BOUNDARY_GRID_CONSTANT) ? o.boundary_fill_value : 0;
  ap->ignore_threshold =
      o.boundary_mode == TSR_BOUNDARY_IGNORE_THRESHOLD ? o.boundary_ignore_threshold : 0;
  ap->bad_fill = o.bad_value_mode == TSR_BAD_CONSTANT ? o.bad_fill_value : 0;
  ap->x_cyclic = o.x_cyclic != 0;
  ap->y_cyclic = o.y_cyclic != 0;
  ap->center = o.center_jacobian != 0;
  ap->despike = o.despike_jacobian != 0;
  ap->conserve = o.conserve_flux != 0;
  return tsr__reproject_node(g, &adaptive_op, ap, src, target, o.dtype, o.block);
}
