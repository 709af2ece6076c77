/* mapping.c -- output pixel -> input pixel, fast and block-independent.
 *
 * Exact transforms (output pixel -> world -> frame rotation -> input pixel,
 * all in wcslib) cost 200-450 ns a pixel and dominate reproject's run time.
 * We use them only where nothing cheaper is provably as good:
 *
 * - TAN -> TAN without distortions is exactly a plane-to-plane homography
 *   (central projections map great circles to lines, and a frame change is a
 *   rotation of the rays), whatever the frames; linear -> linear (no
 *   celestial axes, see tsr__cel_open) is affine, a homography too.  We
 *   fit the 3x3 matrix to exact transforms and accept it only if it
 *   reproduces exact transforms at a grid of check points to 1e-8 px; then
 *   every pixel costs a few flops and is exact to rounding, at any
 *   tolerance.  A point is behind the input's
 *   tangent plane (undefined, as in wcslib) exactly when w <= 0.  A frame
 *   change with FK4's E-terms is not a rotation, but adding them is
 *   v -> (v + A) normalised, |A| = 0.34": in tangent-plane coordinates a
 *   homography up to A (x^2 + y^2) / 2, under 1e-7 px over a degree at 1
 *   arcsec/px.  So with a tolerance the same fit is accepted when it
 *   reproduces exact transforms to a tenth of the tolerance at a 17 x 17
 *   grid over (and past) the output (the residual is smooth and quadratic,
 *   so the grid sees its largest values); with tolerance 0 it must be exact.
 * - Otherwise coordinates are interpolated bilinearly on a grid of cells of
 *   GRID pixels anchored to the global output grid (cell (i, j) covers
 *   [i*GRID, (i+1)*GRID) on x), so a pixel's value never depends on how the
 *   output is cut into blocks.  Each cell is checked against exact transforms
 *   at its centre and edge midpoints, where bilinear interpolation of a smooth
 *   map errs most; a cell whose error exceeds the tolerance, or whose checks
 *   meet an undefined point, is computed exactly pixel by pixel.  With
 *   tolerance 0 every pixel is exact.
 * - The round trip (reproject's roundtrip_coords: NaN where input -> output
 *   moves a pixel by more than one) is evaluated exactly at every grid point
 *   and check point.  A cell whose own points and whose neighbours' corners
 *   all round-trip to within 0.5 px lies in the interior of the region where
 *   the transform is invertible, and its pixels are trusted; other cells are
 *   round-tripped pixel by pixel.
 */
#include <math.h>
#include <string.h>

#include "mapping.h"
#include "sky.h"

#define GRID 32
#define RT_LIMIT 1.0   /* reproject: NaN if the round trip moves > 1 px */
#define RT_TRUST 0.5   /* grid points this close make a cell's interior trusted */

struct tsr__map_s {
  tsr_ctx_t *ctx;
  tsr__cel_t *out, *in;
  tsr__frame_xform_t fwd;   /* output frame -> input frame */
  tsr__frame_xform_t back;  /* input frame -> output frame (astropy's own path back) */
  double tol;
  bool roundtrip;
  bool homog;           /* H is valid: exact everywhere (to tol / 10 with E-terms) */
  double H[9];          /* output pixel (x, y, 1) -> input (u, v, w) */
  /* scratch for exact transforms */
  double *v, *bx, *by;
  size_t cap;
};

static int scratch(tsr__map_t *m, size_t n) {
  if (n <= m->cap)
    return 0;
  tsr__free(m->ctx, m->v);
  tsr__free(m->ctx, m->bx);
  tsr__free(m->ctx, m->by);
  m->v = tsr__mallocarray(m->ctx, n, 3 * sizeof(double));
  m->bx = tsr__mallocarray(m->ctx, n, sizeof(double));
  m->by = tsr__mallocarray(m->ctx, n, sizeof(double));
  if (!m->v || !m->bx || !m->by) {
    m->cap = 0;
    return tsr__err(m->ctx, TSR_ENOMEM, "mapping: out of memory");
  }
  m->cap = n;
  return 0;
}

/* Exact transforms of n points.  rt (may be NULL) receives the round-trip
 * error max(|dx|, |dy|) in output pixels (INFINITY where undefined); when
 * `apply_rt`, points beyond RT_LIMIT become NaN. */
static int exact(tsr__map_t *m, size_t n, const double *xo, const double *yo, double *xi,
                 double *yi, double *rt, bool apply_rt) {
  int rc;
  if ((rc = scratch(m, n)) != 0)
    return rc;
  tsr__cel_pix2vec(m->out, n, xo, yo, m->v);
  tsr__frame_apply(&m->fwd, n, m->v);
  tsr__cel_vec2pix(m->in, n, m->v, xi, yi);
  if (rt == NULL && !apply_rt)
    return 0;
  tsr__cel_pix2vec(m->in, n, xi, yi, m->v);
  tsr__frame_apply(&m->back, n, m->v);
  tsr__cel_vec2pix(m->out, n, m->v, m->bx, m->by);
  for (size_t i = 0; i < n; i++) {
    double e = fmax(fabs(m->bx[i] - xo[i]), fabs(m->by[i] - yo[i]));
    if (!isfinite(xi[i]) || !isfinite(yi[i]) || !isfinite(e))
      e = INFINITY;
    if (rt)
      rt[i] = e;
    if (apply_rt && !(e <= RT_LIMIT))
      xi[i] = yi[i] = NAN;
  }
  return 0;
}

/* Solve the 8x8 system a x = b (Gaussian elimination, partial pivoting). */
static bool solve8(double a[8][8], double b[8]) {
  for (int c = 0; c < 8; c++) {
    int p = c;
    for (int r = c + 1; r < 8; r++)
      if (fabs(a[r][c]) > fabs(a[p][c]))
        p = r;
    if (fabs(a[p][c]) < 1e-300)
      return false;
    if (p != c) {
      for (int k = 0; k < 8; k++) {
        double t = a[c][k];
        a[c][k] = a[p][k];
        a[p][k] = t;
      }
      double t = b[c];
      b[c] = b[p];
      b[p] = t;
    }
    for (int r = c + 1; r < 8; r++) {
      double f = a[r][c] / a[c][c];
      for (int k = c; k < 8; k++)
        a[r][k] -= f * a[c][k];
      b[r] -= f * b[c];
    }
  }
  for (int c = 7; c >= 0; c--) {
    for (int k = c + 1; k < 8; k++)
      b[c] -= a[c][k] * b[k];
    b[c] /= a[c][c];
  }
  return true;
}

static inline void homog_apply(const double H[9], double x, double y, double *u, double *v) {
  double w = H[6] * x + H[7] * y + H[8];
  if (!(w > 0)) {
    *u = *v = NAN;
    return;
  }
  *u = (H[0] * x + H[1] * y + H[2]) / w;
  *v = (H[3] * x + H[4] * y + H[5]) / w;
}

/* Fit the homography from exact transforms at four points around the output
 * centre, then verify it at a 9 x 9 grid over (and past) the output: to
 * rounding, or to a tenth of the tolerance at a 17 x 17 grid when the
 * frames differ by more than a rotation (`near`, see the top). */
static int fit_homography(tsr__map_t *m, int64_t nx, int64_t ny, bool near) {
  double cx = 0.5 * (double)(nx - 1), cy = 0.5 * (double)(ny - 1);
  double s = 0.5 * (double)(nx > ny ? nx : ny);
  int rc;

  for (double f = 0.5; f > 1e-3; f *= 0.25) {
    double xo[4] = {cx - f * s, cx + f * s, cx + f * s, cx - f * s};
    double yo[4] = {cy - f * s, cy - f * s, cy + f * s, cy + f * s};
    double xi[4], yi[4], a[8][8], b[8];
    bool ok = true;
    if ((rc = exact(m, 4, xo, yo, xi, yi, NULL, false)) != 0)
      return rc;
    for (int k = 0; k < 4; k++)
      ok = ok && isfinite(xi[k]) && isfinite(yi[k]);
    if (!ok)
      continue;
    /* Normalised output coordinates keep the system well conditioned. */
    for (int k = 0; k < 4; k++) {
      double X = (xo[k] - cx) / s, Y = (yo[k] - cy) / s;
      double r1[8] = {X, Y, 1, 0, 0, 0, -X * xi[k], -Y * xi[k]};
      double r2[8] = {0, 0, 0, X, Y, 1, -X * yi[k], -Y * yi[k]};
      memcpy(a[2 * k], r1, sizeof r1);
      memcpy(a[2 * k + 1], r2, sizeof r2);
      b[2 * k] = xi[k];
      b[2 * k + 1] = yi[k];
    }
    if (!solve8(a, b))
      continue;
    /* Undo the normalisation: X = (x - cx)/s. */
    double h[9] = {b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], 1.0};
    double H[9];
    for (int r = 0; r < 3; r++) {
      H[3 * r + 0] = h[3 * r + 0] / s;
      H[3 * r + 1] = h[3 * r + 1] / s;
      H[3 * r + 2] = h[3 * r + 2] - (h[3 * r + 0] * cx + h[3 * r + 1] * cy) / s;
    }
    /* Orient so that w > 0 in front of the input plane (at the fit points). */
    if (H[6] * xo[0] + H[7] * yo[0] + H[8] < 0)
      for (int k = 0; k < 9; k++)
        H[k] = -H[k];
    /* Verify. */
    {
      enum { NVMAX = 17 };
      const int NV = near ? NVMAX : 9;
      double vx[NVMAX * NVMAX], vy[NVMAX * NVMAX], ex[NVMAX * NVMAX], ey[NVMAX * NVMAX];
      int nvalid = 0;
      for (int j = 0; j < NV; j++)
        for (int i = 0; i < NV; i++) {
          vx[j * NV + i] = -0.1 * (double)nx + 1.2 * (double)nx * i / (NV - 1);
          vy[j * NV + i] = -0.1 * (double)ny + 1.2 * (double)ny * j / (NV - 1);
        }
      if ((rc = exact(m, NV * NV, vx, vy, ex, ey, NULL, false)) != 0)
        return rc;
      for (int k = 0; k < NV * NV && ok; k++) {
        double u, v;
        homog_apply(H, vx[k], vy[k], &u, &v);
        if (isfinite(ex[k]) != isfinite(u)) {
          ok = false;
          break;
        }
        if (!isfinite(u))
          continue;
        nvalid++;
        double tolk = near ? 0.1 * m->tol : 1e-8 * fmax(1.0, fmax(fabs(ex[k]), fabs(ey[k])) / 1e4);
        if (fabs(u - ex[k]) > tolk || fabs(v - ey[k]) > tolk)
          ok = false;
      }
      if (ok && nvalid >= 4) {
        memcpy(m->H, H, sizeof H);
        m->homog = true;
      }
    }
    return 0;
  }
  return 0;
}

/* Linear WCSs map only to linear WCSs, and only in the same units: their
 * world values are compared as they are, with no frame or unit change. */
static int check_linear(tsr_ctx_t *ctx, const tsr__cel_t *out, const char *out_what,
                        const tsr__cel_t *in, const char *in_what) {
  bool lo = tsr__cel_frame(out)->kind == TSR__SKY_LINEAR;
  bool li = tsr__cel_frame(in)->kind == TSR__SKY_LINEAR;
  if (lo != li) {
    const tsr__cel_t *l = lo ? out : in;
    return tsr__err(ctx, TSR_EWCS,
                    "%s has no celestial axes (CTYPE1 = '%s', CTYPE2 = '%s': linear axes) but %s "
                    "has celestial axes; both must be celestial or both linear",
                    lo ? out_what : in_what, tsr__cel_ctype(l, 0), tsr__cel_ctype(l, 1),
                    lo ? in_what : out_what);
  }
  for (int a = 0; lo && a < 2; a++)
    if (strcmp(tsr__cel_unit(out, a), tsr__cel_unit(in, a)) != 0)
      return tsr__err(ctx, TSR_EWCS,
                      "%s has CUNIT%d = '%s' but %s has '%s'; linear axes must have the same units",
                      out_what, a + 1, tsr__cel_unit(out, a), in_what, tsr__cel_unit(in, a));
  return 0;
}

int tsr__map_new(tsr_ctx_t *ctx, const tsr_wcs_t *out, const char *out_what,
                 const tsr_wcs_t *in, const char *in_what, double tol, bool roundtrip,
                 tsr__map_t **mp) {
  tsr__map_t *m = tsr__calloc(ctx, 1, sizeof *m);
  int rc;
  *mp = NULL;
  if (m == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "mapping: out of memory");
  m->ctx = ctx;
  m->tol = tol;
  m->roundtrip = roundtrip;
  if ((rc = tsr__cel_open(ctx, out, out_what, true, &m->out)) != 0 ||
      (rc = tsr__cel_open(ctx, in, in_what, true, &m->in)) != 0 ||
      (rc = check_linear(ctx, m->out, out_what, m->in, in_what)) != 0)
    goto out;
  tsr__frame_xform(tsr__cel_frame(m->out), tsr__cel_frame(m->in), &m->fwd);
  tsr__frame_xform(tsr__cel_frame(m->in), tsr__cel_frame(m->out), &m->back);
  /* Linear -> linear: the frame transform is the identity, so a rotation. */
  if (((tsr__cel_is_plain_tan(m->out) && tsr__cel_is_plain_tan(m->in)) ||
       (tsr__cel_is_plain_linear(m->out) && tsr__cel_is_plain_linear(m->in))) &&
      (tsr__frame_is_rotation(&m->fwd) || tol > 0) &&
      (rc = fit_homography(m, out->shape[0], out->shape[1], !tsr__frame_is_rotation(&m->fwd))) != 0)
    goto out;
  *mp = m;
  m = NULL;
  rc = 0;
out:
  tsr__map_free(m);
  return rc;
}

void tsr__map_free(tsr__map_t *m) {
  if (m == NULL)
    return;
  tsr__cel_free(m->out);
  tsr__cel_free(m->in);
  tsr__free(m->ctx, m->v);
  tsr__free(m->ctx, m->bx);
  tsr__free(m->ctx, m->by);
  tsr__free(m->ctx, m);
}

int tsr__map_points(tsr__map_t *m, size_t n, const double *xo, const double *yo, double *xi,
                    double *yi) {
  return exact(m, n, xo, yo, xi, yi, NULL, false);
}

bool tsr__map_homography(const tsr__map_t *m, double H[9]) {
  if (!m->homog)
    return false;
  memcpy(H, m->H, sizeof m->H);
  return true;
}

const char *tsr__map_kind(const tsr__map_t *m) {
  return m->homog ? "homography" : m->tol > 0 ? "grid" : "exact";
}

static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Grid state for one box: node values and per-cell decisions. */
typedef struct {
  int64_t ci0, cj0;       /* first cell of the box */
  int ncx, ncy;           /* cells covering the box */
  int nnx, nny;           /* nodes incl. a ring of neighbours: (ncx + 3) x (ncy + 3) */
  double *nx_, *ny_, *nrt;/* node input coords and round-trip error */
  unsigned char *interp;  /* per cell: 1 = interpolate */
  unsigned char *trust;   /* per cell: 1 = round trip trusted */
} grid_t;

static int grid_build(tsr__map_t *m, grid_t *g, int64_t x0, int64_t x1, int64_t y0, int64_t y1) {
  tsr_ctx_t *ctx = m->ctx;
  size_t nn, nc;
  double *xo = NULL, *yo = NULL, *cx = NULL, *cy = NULL, *cxi = NULL, *cyi = NULL, *crt = NULL;
  int rc = TSR_ENOMEM;

  g->ci0 = floordiv(x0, GRID);
  g->cj0 = floordiv(y0, GRID);
  g->ncx = (int)(floordiv(x1 - 1, GRID) - g->ci0 + 1);
  g->ncy = (int)(floordiv(y1 - 1, GRID) - g->cj0 + 1);
  g->nnx = g->ncx + 3;
  g->nny = g->ncy + 3;
  nn = (size_t)g->nnx * (size_t)g->nny;
  nc = (size_t)g->ncx * (size_t)g->ncy;
  g->nx_ = tsr__mallocarray(ctx, nn, sizeof(double));
  g->ny_ = tsr__mallocarray(ctx, nn, sizeof(double));
  g->nrt = tsr__mallocarray(ctx, nn, sizeof(double));
  g->interp = tsr__calloc(ctx, nc, 1);
  g->trust = tsr__calloc(ctx, nc, 1);
  xo = tsr__mallocarray(ctx, nn, sizeof(double));
  yo = tsr__mallocarray(ctx, nn, sizeof(double));
  cx = tsr__mallocarray(ctx, 5 * nc, sizeof(double));
  cy = tsr__mallocarray(ctx, 5 * nc, sizeof(double));
  cxi = tsr__mallocarray(ctx, 5 * nc, sizeof(double));
  cyi = tsr__mallocarray(ctx, 5 * nc, sizeof(double));
  crt = tsr__mallocarray(ctx, 5 * nc, sizeof(double));
  if (!g->nx_ || !g->ny_ || !g->nrt || !g->interp || !g->trust || !xo || !yo || !cx || !cy ||
      !cxi || !cyi || !crt) {
    rc = tsr__err(ctx, TSR_ENOMEM, "mapping: out of memory");
    goto out;
  }
  /* Nodes (ci0-1 .. ci0+ncx+1) x (cj0-1 .. cj0+ncy+1): the box's cells plus a ring. */
  for (int j = 0; j < g->nny; j++)
    for (int i = 0; i < g->nnx; i++) {
      xo[(size_t)j * g->nnx + i] = (double)((g->ci0 - 1 + i) * GRID);
      yo[(size_t)j * g->nnx + i] = (double)((g->cj0 - 1 + j) * GRID);
    }
  if ((rc = exact(m, nn, xo, yo, g->nx_, g->ny_, g->nrt, false)) != 0)
    goto out;
  /* Check points: centre and the four edge midpoints of each cell. */
  for (int j = 0; j < g->ncy; j++)
    for (int i = 0; i < g->ncx; i++) {
      size_t c = (size_t)j * g->ncx + i;
      double bx = (double)((g->ci0 + i) * GRID), by = (double)((g->cj0 + j) * GRID), h = GRID / 2.0;
      double px[5] = {bx + h, bx + h, bx + h, bx, bx + GRID};
      double py[5] = {by + h, by, by + GRID, by + h, by + h};
      for (int k = 0; k < 5; k++) {
        cx[5 * c + k] = px[k];
        cy[5 * c + k] = py[k];
      }
    }
  if ((rc = exact(m, 5 * nc, cx, cy, cxi, cyi, crt, false)) != 0)
    goto out;
  for (int j = 0; j < g->ncy; j++)
    for (int i = 0; i < g->ncx; i++) {
      size_t c = (size_t)j * g->ncx + i;
      /* Corner nodes of cell (i, j) sit at node (i+1, j+1) .. (i+2, j+2). */
      size_t n00 = (size_t)(j + 1) * g->nnx + (i + 1), n10 = n00 + 1, n01 = n00 + g->nnx,
             n11 = n01 + 1;
      double err = 0.0;
      bool valid = true, rt_ok = true;
      const size_t corners[4] = {n00, n10, n01, n11};
      for (int k = 0; k < 4; k++) {
        valid = valid && isfinite(g->nx_[corners[k]]) && isfinite(g->ny_[corners[k]]);
        rt_ok = rt_ok && g->nrt[corners[k]] <= RT_TRUST;
      }
      for (int k = 0; k < 5 && valid; k++) {
        double fx = (cx[5 * c + k] - (double)((g->ci0 + i) * GRID)) / GRID;
        double fy = (cy[5 * c + k] - (double)((g->cj0 + j) * GRID)) / GRID;
        double ix = (1 - fy) * ((1 - fx) * g->nx_[n00] + fx * g->nx_[n10]) +
                    fy * ((1 - fx) * g->nx_[n01] + fx * g->nx_[n11]);
        double iy = (1 - fy) * ((1 - fx) * g->ny_[n00] + fx * g->ny_[n10]) +
                    fy * ((1 - fx) * g->ny_[n01] + fx * g->ny_[n11]);
        if (!isfinite(cxi[5 * c + k]) || !isfinite(cyi[5 * c + k])) {
          valid = false;
          break;
        }
        err = fmax(err, fmax(fabs(ix - cxi[5 * c + k]), fabs(iy - cyi[5 * c + k])));
        rt_ok = rt_ok && crt[5 * c + k] <= RT_TRUST;
      }
      /* The ring: every node of the 4 x 4 block around the cell. */
      for (int dj = 0; dj < 4 && rt_ok; dj++)
        for (int di = 0; di < 4; di++)
          rt_ok = rt_ok && g->nrt[(size_t)(j + dj) * g->nnx + (i + di)] <= RT_TRUST;
      g->interp[c] = valid && m->tol > 0 && err <= m->tol;
      g->trust[c] = valid && rt_ok;
    }
  rc = 0;
out:
  tsr__free(ctx, xo);
  tsr__free(ctx, yo);
  tsr__free(ctx, cx);
  tsr__free(ctx, cy);
  tsr__free(ctx, cxi);
  tsr__free(ctx, cyi);
  tsr__free(ctx, crt);
  return rc;
}

static void grid_release(tsr__map_t *m, grid_t *g) {
  tsr__free(m->ctx, g->nx_);
  tsr__free(m->ctx, g->ny_);
  tsr__free(m->ctx, g->nrt);
  tsr__free(m->ctx, g->interp);
  tsr__free(m->ctx, g->trust);
}

/* The homography at every pixel of [x0, x1) x [y0, y1) (incremental
 * stepping would drift); NaN behind the projection plane.  Four pixels at
 * a time in explicit vectors (GCC will not if-convert the NaN case), with
 * the same operations as the scalar tail, so the same bits. */
typedef double hv4d __attribute__((vector_size(32)));
typedef int64_t hv4di __attribute__((vector_size(32)));
TSR__MULTIVERSION static void homog_box(const double *H, int64_t x0, int64_t x1, int64_t y0,
                                        int64_t y1, double *xin, double *yin) {
  int64_t w = x1 - x0;
  const hv4d nan4 = {NAN, NAN, NAN, NAN};
  for (int64_t y = y0; y < y1; y++) {
    double *px = xin + (size_t)((y - y0) * w), *py = yin + (size_t)((y - y0) * w);
    double yy = (double)y;
    double bu = H[1] * yy + H[2], bv = H[4] * yy + H[5], bw = H[7] * yy + H[8];
    int64_t x = 0;
    hv4d xx = {(double)x0, (double)x0 + 1.0, (double)x0 + 2.0, (double)x0 + 3.0};
    for (; x + 4 <= w; x += 4, xx += 4.0) {
      hv4d ww = H[6] * xx + bw;
      hv4d r = 1.0 / ww;
      hv4d u = (H[0] * xx + bu) * r, v = (H[3] * xx + bv) * r;
      hv4di m = ww > 0.0;
      u = (hv4d)(((hv4di)u & m) | ((hv4di)nan4 & ~m));
      v = (hv4d)(((hv4di)v & m) | ((hv4di)nan4 & ~m));
      memcpy(px + x, &u, sizeof u), memcpy(py + x, &v, sizeof v);
    }
    for (; x < w; x++) {
      double xs = (double)(x0 + x);
      double ww = H[6] * xs + bw;
      double r = 1.0 / ww;
      px[x] = ww > 0 ? (H[0] * xs + bu) * r : NAN;
      py[x] = ww > 0 ? (H[3] * xs + bv) * r : NAN;
    }
  }
}

int tsr__map_box(tsr__map_t *m, int64_t x0, int64_t x1, int64_t y0, int64_t y1, double *xin,
                 double *yin) {
  int64_t w = x1 - x0;
  grid_t g;
  int rc = 0;
  double *ex = NULL, *ey = NULL, *exi = NULL, *eyi = NULL;
  size_t *idx = NULL;

  if (m->homog) {
    homog_box(m->H, x0, x1, y0, y1, xin, yin);
    return 0;
  }

  memset(&g, 0, sizeof g);
  if ((rc = grid_build(m, &g, x0, x1, y0, y1)) != 0)
    goto out;
  {
    size_t cap = (size_t)GRID * GRID;
    ex = tsr__mallocarray(m->ctx, cap, sizeof(double));
    ey = tsr__mallocarray(m->ctx, cap, sizeof(double));
    exi = tsr__mallocarray(m->ctx, cap, sizeof(double));
    eyi = tsr__mallocarray(m->ctx, cap, sizeof(double));
    idx = tsr__mallocarray(m->ctx, cap, sizeof(size_t));
    if (!ex || !ey || !exi || !eyi || !idx) {
      rc = tsr__err(m->ctx, TSR_ENOMEM, "mapping: out of memory");
      goto out;
    }
  }
  for (int j = 0; j < g.ncy; j++)
    for (int i = 0; i < g.ncx; i++) {
      size_t c = (size_t)j * g.ncx + i;
      int64_t cx0 = (g.ci0 + i) * GRID, cy0 = (g.cj0 + j) * GRID;
      int64_t bx0 = cx0 > x0 ? cx0 : x0, bx1 = cx0 + GRID < x1 ? cx0 + GRID : x1;
      int64_t by0 = cy0 > y0 ? cy0 : y0, by1 = cy0 + GRID < y1 ? cy0 + GRID : y1;
      if (g.interp[c]) {
        size_t n00 = (size_t)(j + 1) * g.nnx + (i + 1), n10 = n00 + 1, n01 = n00 + g.nnx,
               n11 = n01 + 1;
        double ax = g.nx_[n00], bxv = g.nx_[n10], cxv = g.nx_[n01], dx = g.nx_[n11];
        double ay = g.ny_[n00], byv = g.ny_[n10], cyv = g.ny_[n01], dy = g.ny_[n11];
        for (int64_t y = by0; y < by1; y++) {
          double fy = (double)(y - cy0) / GRID;
          double lx = ax + fy * (cxv - ax), rx = bxv + fy * (dx - bxv);
          double ly = ay + fy * (cyv - ay), ry = byv + fy * (dy - byv);
          double *px = xin + (size_t)((y - y0) * w), *py = yin + (size_t)((y - y0) * w);
          for (int64_t x = bx0; x < bx1; x++) {
            double fx = (double)(x - cx0) / GRID;
            px[x - x0] = lx + fx * (rx - lx);
            py[x - x0] = ly + fx * (ry - ly);
          }
        }
      } else {
        size_t n = 0;
        for (int64_t y = by0; y < by1; y++)
          for (int64_t x = bx0; x < bx1; x++) {
            ex[n] = (double)x;
            ey[n] = (double)y;
            idx[n++] = (size_t)((y - y0) * w + (x - x0));
          }
        if ((rc = exact(m, n, ex, ey, exi, eyi, NULL, m->roundtrip && !g.trust[c])) != 0)
          goto out;
        for (size_t k = 0; k < n; k++) {
          xin[idx[k]] = exi[k];
          yin[idx[k]] = eyi[k];
        }
      }
    }
out:
  grid_release(m, &g);
  tsr__free(m->ctx, ex);
  tsr__free(m->ctx, ey);
  tsr__free(m->ctx, exi);
  tsr__free(m->ctx, eyi);
  tsr__free(m->ctx, idx);
  return rc;
}

/* Does any pixel of the boundary of the box, or of a 4-pixel interior grid,
 * map?  Sets *none when none does. */
static int dense_probe(tsr__map_t *m, int64_t x0, int64_t x1, int64_t y0, int64_t y1, bool *none) {
  enum { STRIDE = 4, CHUNK = 1024 };
  double xo[CHUNK], yo[CHUNK], xi[CHUNK], yi[CHUNK];
  int n = 0, rc;
  *none = true;
  for (int64_t y = y0; y < y1 && *none; y++) {
    bool full_row = y == y0 || y == y1 - 1;
    bool grid_row = (y - y0) % STRIDE == 0;
    for (int64_t x = x0; x < x1; x++) {
      if (!(full_row || x == x0 || x == x1 - 1 || (grid_row && (x - x0) % STRIDE == 0)))
        continue;
      xo[n] = (double)x, yo[n++] = (double)y;
      if (n < CHUNK)
        continue;
      if ((rc = exact(m, (size_t)n, xo, yo, xi, yi, NULL, false)) != 0)
        return rc;
      for (int k = 0; k < n; k++)
        if (isfinite(xi[k]) && isfinite(yi[k]))
          *none = false;
      n = 0;
    }
  }
  if (n > 0 && *none) {
    if ((rc = exact(m, (size_t)n, xo, yo, xi, yi, NULL, false)) != 0)
      return rc;
    for (int k = 0; k < n; k++)
      if (isfinite(xi[k]) && isfinite(yi[k]))
        *none = false;
  }
  return 0;
}

int tsr__map_bounds(tsr__map_t *m, int64_t x0, int64_t x1, int64_t y0, int64_t y1,
                    int64_t in_nx, int64_t in_ny, double lo[2], double hi[2], bool *none,
                    bool *full) {
  enum { STEP = 8 };
  int64_t w = x1 - x0, h = y1 - y0;
  int64_t nex = w / STEP + 2, ney = h / STEP + 2;
  size_t cap = (size_t)(2 * (nex + ney) + (w / GRID + 2) * (h / GRID + 2));
  double *xo = NULL, *yo = NULL, *xi = NULL, *yi = NULL;
  size_t n = 0, nvalid = 0;
  int rc = TSR_ENOMEM;
  double jump = 0.5 * (double)(in_nx > in_ny ? in_nx : in_ny);

  *none = *full = false;
  lo[0] = lo[1] = INFINITY;
  hi[0] = hi[1] = -INFINITY;
  xo = tsr__mallocarray(m->ctx, cap, sizeof(double));
  yo = tsr__mallocarray(m->ctx, cap, sizeof(double));
  xi = tsr__mallocarray(m->ctx, cap, sizeof(double));
  yi = tsr__mallocarray(m->ctx, cap, sizeof(double));
  if (!xo || !yo || !xi || !yi) {
    rc = tsr__err(m->ctx, TSR_ENOMEM, "mapping: out of memory");
    goto out;
  }
  /* The boundary of the box, walked in order so that neighbours are adjacent. */
  for (int64_t k = 0; k < nex; k++) {
    double x = (double)(k * STEP < w ? x0 + k * STEP : x1 - 1);
    xo[n] = x, yo[n++] = (double)y0;
  }
  for (int64_t k = 0; k < ney; k++) {
    double y = (double)(k * STEP < h ? y0 + k * STEP : y1 - 1);
    xo[n] = (double)(x1 - 1), yo[n++] = y;
  }
  for (int64_t k = nex - 1; k >= 0; k--) {
    double x = (double)(k * STEP < w ? x0 + k * STEP : x1 - 1);
    xo[n] = x, yo[n++] = (double)(y1 - 1);
  }
  for (int64_t k = ney - 1; k >= 0; k--) {
    double y = (double)(k * STEP < h ? y0 + k * STEP : y1 - 1);
    xo[n] = (double)x0, yo[n++] = y;
  }
  size_t nb = n;
  /* Interior grid points catch undefined islands. */
  for (int64_t y = y0 + GRID / 2; y < y1; y += GRID)
    for (int64_t x = x0 + GRID / 2; x < x1; x += GRID)
      if (n < cap)
        xo[n] = (double)x, yo[n++] = (double)y;
  if (m->homog) {
    for (size_t k = 0; k < n; k++)
      homog_apply(m->H, xo[k], yo[k], &xi[k], &yi[k]);
  } else if ((rc = exact(m, n, xo, yo, xi, yi, NULL, false)) != 0) {
    goto out;
  }
  for (size_t k = 0; k < n; k++) {
    if (!isfinite(xi[k]) || !isfinite(yi[k]))
      continue;
    nvalid++;
    lo[0] = fmin(lo[0], xi[k]), hi[0] = fmax(hi[0], xi[k]);
    lo[1] = fmin(lo[1], yi[k]), hi[1] = fmax(hi[1], yi[k]);
  }
  if (nvalid == 0) {
    /* Nothing sampled maps, but a valid part could slip between samples
     * (a face edge of TSC, a sliver of an all-sky projection's outline).
     * Before skipping the block, walk every pixel of its boundary and a
     * 4-pixel interior grid; any hit makes the window the whole input. */
    rc = dense_probe(m, x0, x1, y0, y1, none);
    if (rc != 0)
      goto out;
    *full = !*none;
  } else if (nvalid < n) {
    *full = true;
  } else {
    for (size_t k = 0; k < nb; k++) {
      size_t l = (k + 1) % nb;
      if (fabs(xi[k] - xi[l]) > jump || fabs(yi[k] - yi[l]) > jump)
        *full = true;
    }
  }
  rc = 0;
out:
  tsr__free(m->ctx, xo);
  tsr__free(m->ctx, yo);
  tsr__free(m->ctx, xi);
  tsr__free(m->ctx, yi);
  return rc;
}
