/* spline.c -- B-spline interpolation of orders 2 and 3, as scipy's
 * map_coordinates does it inside reproject 0.10, with two improvements.
 *
 * The reference: reproject pads the image by one edge pixel (P, of n + 2
 * samples per axis), prefilters P with scipy's spline_filter (recursive
 * filters with mirror boundaries), and evaluates the spline at x + 1 with
 * coefficient indices mirrored into range.  We do the same arithmetic, but:
 *
 * - Blocks must give bit-identical results whatever their size, and a block
 *   reads only a window of the input, yet the prefilter is recursive (IIR)
 *   over whole lines.  So coefficients are computed per tile of TILE x TILE
 *   padded samples anchored to the global input grid, each from the tile
 *   plus a margin of HALO samples (mirror boundaries at the image's true
 *   edges, truncation at the margin's).  The poles are -0.268 (cubic) and
 *   -0.172 (quadratic), so the truncation error is below 0.268^24 = 2e-14 of
 *   the data, and a coefficient depends only on its tile, never on the block.
 * - scipy's prefilter spreads a single NaN over the whole image (reproject
 *   #464).  We fill NaN samples (with the mean of finite samples in their
 *   5 x 5 neighbourhood within the tile's margin, else 0) before filtering and
 *   set NaN only on outputs whose (order + 1)^2 support touches a NaN sample.
 */
#include <math.h>
#include <string.h>

#include "spline.h"

#define TILE 128
#define HALO 24

struct tsr__spline_s {
  double *coef;      /* coefficients over padded [cx0, cx1) x [cy0, cy1) */
  size_t coef_cap;
  double *tile;      /* one tile with its margin */
  size_t tile_cap;
  double *line;
  size_t line_cap;
  unsigned char *nanmask; /* window-sized: 1 where the input is NaN */
  size_t mask_cap;
};

static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

void tsr__spline_expand_window(tsr_region_t *win, const int64_t *in_shape) {
  for (int a = 0; a < 2; a++) {
    int64_t n = in_shape[a], N = n + 2;
    /* Padded indices the evaluation may touch (support of 4 plus mirroring). */
    int64_t p0 = win->start[a] + 1 - 2, p1 = win->stop[a] + 1 + 2;
    if (p0 < 0)
      p0 = 0;
    if (p1 > N)
      p1 = N;
    int64_t t0 = floordiv(p0, TILE), t1 = floordiv(p1 - 1, TILE) + 1;
    int64_t e0 = t0 * TILE - HALO, e1 = t1 * TILE + HALO;
    /* Padded index p holds data[clamp(p - 1)]. */
    int64_t d0 = e0 - 1, d1 = e1 - 1;
    win->start[a] = d0 < 0 ? 0 : d0;
    win->stop[a] = d1 > n ? n : d1;
  }
}

/* scipy's recursive prefilter of one line with mirror boundaries. */
static void filter_line(double *c, int64_t n, int order) {
  double z = order == 3 ? sqrt(3.0) - 2.0 : sqrt(8.0) - 3.0;
  double gain = (1.0 - z) * (1.0 - 1.0 / z);
  if (n < 2)
    return;
  for (int64_t i = 0; i < n; i++)
    c[i] *= gain;
  {
    /* Causal initialisation, mirror-symmetric extension. */
    double zi = z, zn1 = pow(z, (double)(n - 1)), c0 = c[0] + zn1 * c[n - 1];
    for (int64_t i = 1; i < n - 1; i++) {
      c0 += zi * (c[i] + zn1 * c[n - 1 - i]);
      zi *= z;
    }
    c[0] = c0 / (1.0 - zn1 * zn1);
  }
  for (int64_t i = 1; i < n; i++)
    c[i] += z * c[i - 1];
  c[n - 1] = (z * c[n - 2] + c[n - 1]) * z / (z * z - 1.0);
  for (int64_t i = n - 2; i >= 0; i--)
    c[i] = z * (c[i + 1] - c[i]);
}

static inline int64_t mirror(int64_t i, int64_t N) {
  int64_t p;
  if (N == 1)
    return 0;
  p = 2 * (N - 1);
  i %= p;
  if (i < 0)
    i += p;
  return i < N ? i : p - i;
}

static int grow(tsr_ctx_t *ctx, void **p, size_t *cap, size_t n, size_t es) {
  if (n <= *cap)
    return 0;
  tsr__free(ctx, *p);
  *p = tsr__mallocarray(ctx, n, es);
  *cap = *p ? n : 0;
  return *p ? 0 : tsr__err(ctx, TSR_ENOMEM, "spline: out of memory");
}

static inline double load(const void *src, tsr_dtype_t dt, size_t i) {
  return dt == TSR_F32 ? (double)((const float *)src)[i] : ((const double *)src)[i];
}

int tsr__spline_run(tsr_ctx_t *ctx, tsr__spline_t **spp, int order, const void *src,
                    tsr_dtype_t dt, const tsr_region_t *win, const int64_t *in_shape,
                    const double *xin, const double *yin, int64_t bw, int64_t bh,
                    tsr__task_t *t, int64_t z, int64_t q) {
  tsr__spline_t *sp = *spp;
  int64_t nx = in_shape[0], ny = in_shape[1], NX = nx + 2, NY = ny + 2;
  int64_t wx0 = win->start[0], wy0 = win->start[1];
  int64_t ww = win->stop[0] - wx0, wh = win->stop[1] - wy0;
  /* Padded samples available from the window. */
  int64_t ax0 = wx0 == 0 ? 0 : wx0 + 1, ax1 = win->stop[0] == nx ? NX : win->stop[0] + 1;
  int64_t ay0 = wy0 == 0 ? 0 : wy0 + 1, ay1 = win->stop[1] == ny ? NY : win->stop[1] + 1;
  int64_t cx0, cx1, cy0, cy1, kx0, kx1, ky0, ky1;
  bool any_nan = false;
  int rc;

  if (sp == NULL) {
    sp = tsr__calloc(ctx, 1, sizeof *sp);
    if (sp == NULL)
      return tsr__err(ctx, TSR_ENOMEM, "spline: out of memory");
    *spp = sp;
  }
  /* Tiles whose margins lie inside the available samples. */
  kx0 = floordiv(ax0 + HALO + TILE - 1, TILE);
  if (ax0 == 0)
    kx0 = 0;
  kx1 = floordiv(ax1 - HALO, TILE);
  if (ax1 == NX)
    kx1 = floordiv(NX - 1, TILE) + 1;
  ky0 = floordiv(ay0 + HALO + TILE - 1, TILE);
  if (ay0 == 0)
    ky0 = 0;
  ky1 = floordiv(ay1 - HALO, TILE);
  if (ay1 == NY)
    ky1 = floordiv(NY - 1, TILE) + 1;
  cx0 = kx0 * TILE, cx1 = kx1 * TILE < NX ? kx1 * TILE : NX;
  cy0 = ky0 * TILE, cy1 = ky1 * TILE < NY ? ky1 * TILE : NY;
  if (cx1 <= cx0 || cy1 <= cy0)
    cx1 = cx0, cy1 = cy0;

  if ((rc = grow(ctx, (void **)&sp->coef, &sp->coef_cap,
                 (size_t)((cx1 - cx0) * (cy1 - cy0) + 1), sizeof(double))) != 0 ||
      (rc = grow(ctx, (void **)&sp->tile, &sp->tile_cap,
                 (size_t)(TILE + 2 * HALO) * (TILE + 2 * HALO), sizeof(double))) != 0 ||
      (rc = grow(ctx, (void **)&sp->line, &sp->line_cap, (size_t)(TILE + 2 * HALO),
                 sizeof(double))) != 0 ||
      (rc = grow(ctx, (void **)&sp->nanmask, &sp->mask_cap, (size_t)(ww * wh), 1)) != 0)
    return rc;

  for (int64_t k = 0; k < ww * wh; k++) {
    double v = load(src, dt, (size_t)k);
    sp->nanmask[k] = !isfinite(v);
    any_nan |= sp->nanmask[k];
  }

  for (int64_t ky = ky0; ky < ky1; ky++)
    for (int64_t kx = kx0; kx < kx1; kx++) {
      int64_t ex0 = kx * TILE - HALO, ex1 = (kx + 1) * TILE + HALO;
      int64_t ey0 = ky * TILE - HALO, ey1 = (ky + 1) * TILE + HALO;
      if (ex0 < 0) ex0 = 0;
      if (ey0 < 0) ey0 = 0;
      if (ex1 > NX) ex1 = NX;
      if (ey1 > NY) ey1 = NY;
      int64_t ew = ex1 - ex0, eh = ey1 - ey0;
      double *b = sp->tile;
      /* Gather P over the tile's margin; P(p) = data[clamp(p - 1)]. */
      for (int64_t j = 0; j < eh; j++) {
        int64_t dy = ey0 + j - 1;
        dy = dy < 0 ? 0 : dy > ny - 1 ? ny - 1 : dy;
        for (int64_t i = 0; i < ew; i++) {
          int64_t dx = ex0 + i - 1;
          dx = dx < 0 ? 0 : dx > nx - 1 ? nx - 1 : dx;
          b[j * ew + i] = load(src, dt, (size_t)((dy - wy0) * ww + (dx - wx0)));
        }
      }
      if (any_nan) {
        /* Fill NaN samples from finite neighbours inside the margin only, so
         * the fill depends on the tile, not on the window. */
        for (int64_t j = 0; j < eh; j++)
          for (int64_t i = 0; i < ew; i++) {
            if (isfinite(b[j * ew + i]))
              continue;
            double s = 0;
            int cnt = 0;
            for (int64_t jj = j - 2; jj <= j + 2; jj++)
              for (int64_t ii = i - 2; ii <= i + 2; ii++) {
                if (jj < 0 || ii < 0 || jj >= eh || ii >= ew)
                  continue;
                int64_t dy = ey0 + jj - 1, dx = ex0 + ii - 1;
                dy = dy < 0 ? 0 : dy > ny - 1 ? ny - 1 : dy;
                dx = dx < 0 ? 0 : dx > nx - 1 ? nx - 1 : dx;
                double v = load(src, dt, (size_t)((dy - wy0) * ww + (dx - wx0)));
                if (isfinite(v))
                  s += v, cnt++;
              }
            b[j * ew + i] = cnt ? s / cnt : 0.0;
          }
      }
      /* scipy filters axis 0 (y) first, then x. */
      for (int64_t i = 0; i < ew; i++) {
        for (int64_t j = 0; j < eh; j++)
          sp->line[j] = b[j * ew + i];
        filter_line(sp->line, eh, order);
        for (int64_t j = 0; j < eh; j++)
          b[j * ew + i] = sp->line[j];
      }
      for (int64_t j = 0; j < eh; j++)
        filter_line(b + j * ew, ew, order);
      /* Keep the tile's core. */
      int64_t tx0 = kx * TILE, tx1 = tx0 + TILE > NX ? NX : tx0 + TILE;
      int64_t ty0 = ky * TILE, ty1 = ty0 + TILE > NY ? NY : ty0 + TILE;
      for (int64_t p = ty0; p < ty1; p++)
        memcpy(sp->coef + (p - cy0) * (cx1 - cx0) + (tx0 - cx0), b + (p - ey0) * ew + (tx0 - ex0),
               (size_t)(tx1 - tx0) * sizeof(double));
    }

  {
    int64_t cw = cx1 - cx0;
    size_t es = tsr_dtype_size(t->node->dtype);
    bool f32 = t->node->dtype == TSR_F32;
    for (int64_t y = 0; y < bh; y++) {
      size_t off = tsr__task_offset(t, 0, y, z, q);
      for (int64_t x = 0; x < bw; x++) {
        double xi = xin[y * bw + x], yi = yin[y * bw + x], v = NAN;
        if (xi >= -0.5 && xi <= (double)nx - 0.5 && yi >= -0.5 && yi <= (double)ny - 0.5) {
          double xp = xi + 1.0, yp = yi + 1.0, wx[4], wy[4], f;
          int64_t sx, sy, ix[4], iy[4];
          if (order == 3) {
            double fl = floor(xp);
            f = xp - fl;
            sx = (int64_t)fl - 1;
            wx[0] = (1 - f) * (1 - f) * (1 - f) / 6.0;
            wx[1] = (3 * f * f * f - 6 * f * f + 4) / 6.0;
            wx[2] = (-3 * f * f * f + 3 * f * f + 3 * f + 1) / 6.0;
            wx[3] = f * f * f / 6.0;
            fl = floor(yp);
            f = yp - fl;
            sy = (int64_t)fl - 1;
            wy[0] = (1 - f) * (1 - f) * (1 - f) / 6.0;
            wy[1] = (3 * f * f * f - 6 * f * f + 4) / 6.0;
            wy[2] = (-3 * f * f * f + 3 * f * f + 3 * f + 1) / 6.0;
            wy[3] = f * f * f / 6.0;
          } else {
            double fl = floor(xp + 0.5);
            f = xp - fl;
            sx = (int64_t)fl - 1;
            wx[0] = 0.5 * (0.5 - f) * (0.5 - f);
            wx[1] = 0.75 - f * f;
            wx[2] = 0.5 * (0.5 + f) * (0.5 + f);
            fl = floor(yp + 0.5);
            f = yp - fl;
            sy = (int64_t)fl - 1;
            wy[0] = 0.5 * (0.5 - f) * (0.5 - f);
            wy[1] = 0.75 - f * f;
            wy[2] = 0.5 * (0.5 + f) * (0.5 + f);
          }
          bool ok = true, spoiled = false;
          for (int k = 0; k <= order; k++) {
            ix[k] = mirror(sx + k, NX);
            iy[k] = mirror(sy + k, NY);
            ok = ok && ix[k] >= cx0 && ix[k] < cx1 && iy[k] >= cy0 && iy[k] < cy1;
          }
          if (ok && any_nan) {
            for (int l = 0; l <= order && !spoiled; l++) {
              int64_t dy = iy[l] - 1;
              dy = dy < 0 ? 0 : dy > ny - 1 ? ny - 1 : dy;
              for (int k = 0; k <= order; k++) {
                int64_t dx = ix[k] - 1;
                dx = dx < 0 ? 0 : dx > nx - 1 ? nx - 1 : dx;
                if (dx < wx0 || dy < wy0 || dx >= wx0 + ww || dy >= wy0 + wh ||
                    sp->nanmask[(dy - wy0) * ww + (dx - wx0)]) {
                  spoiled = true;
                  break;
                }
              }
            }
          }
          if (ok && !spoiled) {
            double s = 0;
            for (int l = 0; l <= order; l++) {
              const double *row = sp->coef + (iy[l] - cy0) * cw;
              double r = 0;
              for (int k = 0; k <= order; k++)
                r += wx[k] * row[ix[k] - cx0];
              s += wy[l] * r;
            }
            v = s;
          }
        }
        if (t->planes[0]) {
          if (f32)
            ((float *)t->planes[0])[off + (size_t)x] = (float)v;
          else
            ((double *)t->planes[0])[off + (size_t)x] = v;
        }
        if (t->planes[1]) {
          double fp = isnan(v) ? 0.0 : 1.0;
          if (f32)
            ((float *)t->planes[1])[off + (size_t)x] = (float)fp;
          else
            ((double *)t->planes[1])[off + (size_t)x] = fp;
        }
      }
    }
    (void)es;
  }
  return 0;
}

void tsr__spline_free(tsr_ctx_t *ctx, tsr__spline_t *sp) {
  if (sp == NULL)
    return;
  tsr__free(ctx, sp->coef);
  tsr__free(ctx, sp->tile);
  tsr__free(ctx, sp->line);
  tsr__free(ctx, sp->nanmask);
  tsr__free(ctx, sp);
}
