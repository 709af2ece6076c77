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
#include <float.h>
#include <math.h>
#include <string.h>

#include "spline.h"

#define TILE 256
#define HALO 24

/* Coefficients of finished tiles, kept for the run: neighbouring blocks
 * need the same tiles, and a tile's coefficients never depend on the block
 * that asked first.  Least recently used tiles go past the budget, but
 * never one that the task in flight was promised (see tsr__spline_window). */
#define CACHE_TILES 128   /* 128 x 512 KiB = 64 MiB, a soft budget */

typedef struct {
  int64_t plane, kx, ky;  /* input plane and tile index */
  uint64_t used;          /* LRU clock */
  double *coef;           /* TILE x TILE, rows of TILE */
} tile_entry_t;

struct tsr__spline_s {
  double *coef;      /* coefficients over padded [cx0, cx1) x [cy0, cy1) */
  size_t coef_cap;
  double *tile;      /* one tile with its margin */
  size_t tile_cap;
  double *acc;       /* a row of column accumulators */
  size_t acc_cap;
  unsigned char *nanmask; /* window-sized: 1 where the input is NaN */
  size_t mask_cap;
  tile_entry_t *cache;
  int n_cached, cap_cached;
  uint64_t clock;
  uint64_t task_start; /* entries used at or after this belong to the task in flight */
};

static int64_t floordiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

int tsr__spline_new(tsr_ctx_t *ctx, tsr__spline_t **out) {
  *out = tsr__calloc(ctx, 1, sizeof **out);
  return *out ? 0 : tsr__err(ctx, TSR_ENOMEM, "spline: out of memory");
}

static tile_entry_t *cache_find(tsr__spline_t *sp, int64_t plane, int64_t kx, int64_t ky) {
  for (int i = 0; i < sp->n_cached; i++)
    if (sp->cache[i].kx == kx && sp->cache[i].ky == ky && sp->cache[i].plane == plane)
      return &sp->cache[i];
  return NULL;
}

/* The tiles whose coefficients the padded sample range [p0, p1) of one axis
 * touches (mirrored at the image edges). */
static void tile_span(int64_t p0, int64_t p1, int64_t N, int64_t *t0, int64_t *t1) {
  if (p0 <= 3)
    p0 = 0;
  if (p1 >= N - 3)
    p1 = N;
  if (p0 < 0)
    p0 = 0;
  if (p1 > N)
    p1 = N;
  *t0 = floordiv(p0, TILE);
  *t1 = p1 > p0 ? floordiv(p1 - 1, TILE) + 1 : *t0;
}

void tsr__spline_window(tsr__spline_t *sp, tsr_region_t *win, const int64_t *in_shape,
                        int64_t plane0, int64_t nplanes) {
  int64_t NX = in_shape[0] + 2, NY = in_shape[1] + 2, kx0, kx1, ky0, ky1;
  tsr_region_t w = *win;

  sp->task_start = sp->clock + 1;
  /* Padded index p holds data[clamp(p - 1)]; the support reaches 2 past. */
  tile_span(win->start[0] + 1 - 2, win->stop[0] + 1 + 2, NX, &kx0, &kx1);
  tile_span(win->start[1] + 1 - 2, win->stop[1] + 1 + 2, NY, &ky0, &ky1);
  for (int64_t ky = ky0; ky < ky1; ky++)
    for (int64_t kx = kx0; kx < kx1; kx++) {
      bool all = true;
      for (int64_t pl = plane0; pl < plane0 + nplanes; pl++) {
        tile_entry_t *e = cache_find(sp, pl, kx, ky);
        if (e)
          e->used = ++sp->clock; /* promised to this task: not evicted before it ends */
        else
          all = false;
      }
      if (all)
        continue;
      /* The tile and its margin, as data indices. */
      int64_t x0 = kx * TILE - HALO - 1, x1 = (kx + 1) * TILE + HALO - 1;
      int64_t y0 = ky * TILE - HALO - 1, y1 = (ky + 1) * TILE + HALO - 1;
      if (x0 < w.start[0]) w.start[0] = x0;
      if (x1 > w.stop[0]) w.stop[0] = x1;
      if (y0 < w.start[1]) w.start[1] = y0;
      if (y1 > w.stop[1]) w.stop[1] = y1;
    }
  for (int a = 0; a < 2; a++) {
    if (w.start[a] < 0)
      w.start[a] = 0;
    if (w.stop[a] > in_shape[a])
      w.stop[a] = in_shape[a];
  }
  *win = w;
}

/* scipy's recursive prefilter of one line with mirror boundaries.  The
 * causal initialisation sums z^k terms; past HORIZON terms they are below
 * 1e-18 of the data (|z| <= 0.268), so the sum stops there. */
#define HORIZON 32
static void filter_line(double *c, int64_t n, int order) {
  const double z = order == 3 ? sqrt(3.0) - 2.0 : sqrt(8.0) - 3.0;
  const double gain = (1.0 - z) * (1.0 - 1.0 / z);
  if (n < 2)
    return;
  {
    /* Causal initialisation, mirror-symmetric extension. */
    double zi = z, zn1 = n - 1 < 2 * HORIZON ? pow(z, (double)(n - 1)) : 0.0;
    double c0 = c[0] + zn1 * c[n - 1];
    int64_t m = n - 1 < HORIZON ? n - 1 : HORIZON;
    for (int64_t i = 1; i < m; i++) {
      c0 += zi * (c[i] + zn1 * c[n - 1 - i]);
      zi *= z;
    }
    c[0] = gain * c0 / (1.0 - zn1 * zn1);
  }
  for (int64_t i = 1; i < n; i++)
    c[i] = gain * c[i] + z * c[i - 1];
  c[n - 1] = (z * c[n - 2] + c[n - 1]) * z / (z * z - 1.0);
  for (int64_t i = n - 2; i >= 0; i--)
    c[i] = z * (c[i + 1] - c[i]);
}

/* filter_line applied to every column of a w-wide, n-high block at once:
 * the same operations in the same order per column, but row by row, so
 * the loops run along memory and vectorise.  acc holds w doubles. */
static void filter_columns(double *b, int64_t w, int64_t n, int order, double *acc) {
  const double z = order == 3 ? sqrt(3.0) - 2.0 : sqrt(8.0) - 3.0;
  const double gain = (1.0 - z) * (1.0 - 1.0 / z);
  if (n < 2)
    return;
  {
    double zi = z, zn1 = n - 1 < 2 * HORIZON ? pow(z, (double)(n - 1)) : 0.0;
    int64_t m = n - 1 < HORIZON ? n - 1 : HORIZON;
    const double *last = b + (n - 1) * w;
    for (int64_t x = 0; x < w; x++)
      acc[x] = b[x] + zn1 * last[x];
    for (int64_t i = 1; i < m; i++) {
      const double *ri = b + i * w, *rm = b + (n - 1 - i) * w;
      for (int64_t x = 0; x < w; x++)
        acc[x] += zi * (ri[x] + zn1 * rm[x]);
      zi *= z;
    }
    const double d = 1.0 - zn1 * zn1;
    for (int64_t x = 0; x < w; x++)
      b[x] = gain * acc[x] / d;
  }
  for (int64_t i = 1; i < n; i++) {
    double *r = b + i * w;
    const double *p = r - w;
    for (int64_t x = 0; x < w; x++)
      r[x] = gain * r[x] + z * p[x];
  }
  {
    double *r = b + (n - 1) * w;
    const double *p = r - w, d = z * z - 1.0;
    for (int64_t x = 0; x < w; x++)
      r[x] = (z * p[x] + r[x]) * z / d;
  }
  for (int64_t i = n - 2; i >= 0; i--) {
    double *r = b + i * w;
    const double *q = r + w;
    for (int64_t x = 0; x < w; x++)
      r[x] = z * (q[x] - r[x]);
  }
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

/* What evaluation needs: the coefficients over padded [cx0, cx1) x
 * [cy0, cy1) (row length cw) and the NaN mask of the window (NULL when the
 * window has no NaN). */
typedef struct {
  const double *coef;
  int64_t cw, cx0, cy0, cx1, cy1, NX, NY, nx, ny;
  const unsigned char *nanmask;
  int64_t wx0, wy0, ww, wh;
} eval_ctx_t;

/* Does the support [sx, sx+n) x [sy, sy+n) (padded indices) touch a NaN input? */
static bool support_spoiled(const eval_ctx_t *e, int64_t sx, int64_t sy, int n) {
  for (int l = 0; l < n; l++) {
    int64_t dy = mirror(sy + l, e->NY) - 1;
    dy = dy < 0 ? 0 : dy > e->ny - 1 ? e->ny - 1 : dy;
    for (int k = 0; k < n; k++) {
      int64_t dx = mirror(sx + k, e->NX) - 1;
      dx = dx < 0 ? 0 : dx > e->nx - 1 ? e->nx - 1 : dx;
      if (dx < e->wx0 || dy < e->wy0 || dx >= e->wx0 + e->ww || dy >= e->wy0 + e->wh ||
          e->nanmask[(dy - e->wy0) * e->ww + (dx - e->wx0)])
        return true;
    }
  }
  return false;
}

/* The sum of n x n coefficients with weights, mirroring indices near the
 * image edges; NAN if the window lacks a coefficient. */
static inline __attribute__((always_inline)) double
sum_support(const eval_ctx_t *e, int64_t sx, int64_t sy, int n, const double *wx,
            const double *wy) {
  double s = 0;
  if (sx >= e->cx0 && sy >= e->cy0 && sx + n <= e->cx1 && sy + n <= e->cy1) {
    const double *p = e->coef + (sy - e->cy0) * e->cw + (sx - e->cx0);
    for (int l = 0; l < n; l++, p += e->cw) {
      double r = 0;
      for (int k = 0; k < n; k++)
        r += wx[k] * p[k];
      s += wy[l] * r;
    }
    return s;
  }
  for (int l = 0; l < n; l++) {
    int64_t iy = mirror(sy + l, e->NY);
    double r = 0;
    if (iy < e->cy0 || iy >= e->cy1)
      return NAN;
    for (int k = 0; k < n; k++) {
      int64_t ix = mirror(sx + k, e->NX);
      if (ix < e->cx0 || ix >= e->cx1)
        return NAN;
      r += wx[k] * e->coef[(iy - e->cy0) * e->cw + (ix - e->cx0)];
    }
    s += wy[l] * r;
  }
  return s;
}

/* Cubic B-spline at input pixel (x, y); NaN outside [-0.5, n - 0.5] or on a
 * support touching a NaN.  xp = x + 1 >= 0.5, so truncation is floor. */
static inline double eval3(const eval_ctx_t *e, double x, double y) {
  const double sixth = 1.0 / 6.0;
  double wx[4], wy[4], xp, yp, f, g;
  int64_t sx, sy;
  if (!(x >= -0.5 && x <= (double)e->nx - 0.5 && y >= -0.5 && y <= (double)e->ny - 0.5))
    return NAN;
  xp = x + 1.0, yp = y + 1.0;
  sx = (int64_t)xp - 1, sy = (int64_t)yp - 1;
  f = xp - (double)(sx + 1), g = 1.0 - f;
  wx[0] = g * g * g * sixth;
  wx[3] = f * f * f * sixth;
  wx[1] = (3 * f * f * f - 6 * f * f + 4) * sixth;
  wx[2] = 1.0 - wx[0] - wx[1] - wx[3];
  f = yp - (double)(sy + 1), g = 1.0 - f;
  wy[0] = g * g * g * sixth;
  wy[3] = f * f * f * sixth;
  wy[1] = (3 * f * f * f - 6 * f * f + 4) * sixth;
  wy[2] = 1.0 - wy[0] - wy[1] - wy[3];
  if (e->nanmask && support_spoiled(e, sx, sy, 4))
    return NAN;
  return sum_support(e, sx, sy, 4, wx, wy);
}

/* Quadratic B-spline; the support starts at round(xp) - 1. */
static inline double eval2(const eval_ctx_t *e, double x, double y) {
  double wx[3], wy[3], xp, yp, f;
  int64_t sx, sy;
  if (!(x >= -0.5 && x <= (double)e->nx - 0.5 && y >= -0.5 && y <= (double)e->ny - 0.5))
    return NAN;
  xp = x + 1.0, yp = y + 1.0;
  sx = (int64_t)(xp + 0.5) - 1, sy = (int64_t)(yp + 0.5) - 1;
  f = xp - (double)(sx + 1);
  wx[0] = 0.5 * (0.5 - f) * (0.5 - f);
  wx[1] = 0.75 - f * f;
  wx[2] = 0.5 * (0.5 + f) * (0.5 + f);
  f = yp - (double)(sy + 1);
  wy[0] = 0.5 * (0.5 - f) * (0.5 - f);
  wy[1] = 0.75 - f * f;
  wy[2] = 0.5 * (0.5 + f) * (0.5 + f);
  if (e->nanmask && support_spoiled(e, sx, sy, 3))
    return NAN;
  return sum_support(e, sx, sy, 3, wx, wy);
}

/* Coefficients of tile (kx, ky) into out (TILE x TILE), from the tile and
 * its margin of the window's data. */
static void compute_tile(tsr__spline_t *sp, double *out, int order, const void *src,
                         int64_t rs, tsr_dtype_t dt, const tsr_region_t *win, const int64_t *in_shape,
                         int64_t kx, int64_t ky, bool any_nan) {
  int64_t nx = in_shape[0], ny = in_shape[1], NX = nx + 2, NY = ny + 2;
  int64_t wx0 = win->start[0], wy0 = win->start[1];
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
          b[j * ew + i] = load(src, dt, (size_t)((dy - wy0) * rs + (dx - wx0)));
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
                double v = load(src, dt, (size_t)((dy - wy0) * rs + (dx - wx0)));
                if (isfinite(v))
                  s += v, cnt++;
              }
            b[j * ew + i] = cnt ? s / cnt : 0.0;
          }
      }
      /* scipy filters axis 0 (y) first, then x. */
      filter_columns(b, ew, eh, order, sp->acc);
      for (int64_t j = 0; j < eh; j++)
        filter_line(b + j * ew, ew, order);
      /* Keep the tile's core. */
      int64_t tx0 = kx * TILE, tx1 = tx0 + TILE > NX ? NX : tx0 + TILE;
      int64_t ty0 = ky * TILE, ty1 = ty0 + TILE > NY ? NY : ty0 + TILE;
      for (int64_t p = ty0; p < ty1; p++)
        memcpy(out + (p - ty0) * TILE, b + (p - ey0) * ew + (tx0 - ex0),
               (size_t)(tx1 - tx0) * sizeof(double));
}

int tsr__spline_run(tsr_ctx_t *ctx, tsr__spline_t **spp, int order, const void *src,
                    int64_t rs, tsr_dtype_t dt, const tsr_region_t *win, const int64_t *in_shape,
                    const double *xin, const double *yin, int64_t bw, int64_t bh,
                    tsr__task_t *t, int64_t z, int64_t q, int64_t plane_id) {
  tsr__spline_t *sp = *spp;
  int64_t nx = in_shape[0], ny = in_shape[1], NX = nx + 2, NY = ny + 2;
  int64_t wx0 = win->start[0], wy0 = win->start[1];
  int64_t ww = win->stop[0] - wx0, wh = win->stop[1] - wy0;
  int64_t cx0, cx1, cy0, cy1, kx0, kx1, ky0, ky1;
  bool any_nan = false;
  int rc;

  /* The tiles the coordinates need (their support, mirrored at the edges). */
  {
    double lx = INFINITY, hx = -INFINITY, ly = INFINITY, hy = -INFINITY;
    for (int64_t k = 0; k < bw * bh; k++) {
      double x = xin[k], y = yin[k];
      if (!(x >= -0.5 && x <= (double)nx - 0.5 && y >= -0.5 && y <= (double)ny - 0.5))
        continue;
      lx = x < lx ? x : lx, hx = x > hx ? x : hx;
      ly = y < ly ? y : ly, hy = y > hy ? y : hy;
    }
    if (lx > hx) {
      kx0 = kx1 = ky0 = ky1 = 0;
    } else {
      tile_span((int64_t)(lx + 1.0) - 2, (int64_t)(hx + 1.0) + 4, NX, &kx0, &kx1);
      tile_span((int64_t)(ly + 1.0) - 2, (int64_t)(hy + 1.0) + 4, NY, &ky0, &ky1);
    }
  }
  cx0 = kx0 * TILE, cx1 = kx1 * TILE < NX ? kx1 * TILE : NX;
  cy0 = ky0 * TILE, cy1 = ky1 * TILE < NY ? ky1 * TILE : NY;
  if (cx1 <= cx0 || cy1 <= cy0)
    cx1 = cx0, cy1 = cy0;

  if ((rc = grow(ctx, (void **)&sp->coef, &sp->coef_cap,
                 (size_t)((cx1 - cx0) * (cy1 - cy0) + 1), sizeof(double))) != 0 ||
      (rc = grow(ctx, (void **)&sp->tile, &sp->tile_cap,
                 (size_t)(TILE + 2 * HALO) * (TILE + 2 * HALO), sizeof(double))) != 0 ||
      (rc = grow(ctx, (void **)&sp->acc, &sp->acc_cap, (size_t)(TILE + 2 * HALO),
                 sizeof(double))) != 0 ||
      (rc = grow(ctx, (void **)&sp->nanmask, &sp->mask_cap, (size_t)(ww * wh), 1)) != 0)
    return rc;

  /* A branch-free scan first (it vectorises); the mask only when needed. */
  for (int64_t y = 0; y < wh; y++) {
    int bad = 0;
    if (dt == TSR_F32) {
      const float *p = (const float *)src + y * rs;
      for (int64_t k = 0; k < ww; k++)
        bad |= !(fabsf(p[k]) <= FLT_MAX);
    } else {
      const double *p = (const double *)src + y * rs;
      for (int64_t k = 0; k < ww; k++)
        bad |= !(fabs(p[k]) <= DBL_MAX);
    }
    any_nan |= bad != 0;
  }
  if (any_nan)
    for (int64_t y = 0; y < wh; y++)
      for (int64_t k = 0; k < ww; k++)
        sp->nanmask[y * ww + k] = !isfinite(load(src, dt, (size_t)(y * rs + k)));

  for (int64_t ky = ky0; ky < ky1; ky++)
    for (int64_t kx = kx0; kx < kx1; kx++) {
      int64_t tx0 = kx * TILE, tx1 = tx0 + TILE > NX ? NX : tx0 + TILE;
      int64_t ty0 = ky * TILE, ty1 = ty0 + TILE > NY ? NY : ty0 + TILE;
      tile_entry_t *e = cache_find(sp, plane_id, kx, ky);
      if (e == NULL) {
        /* A tile this task was not promised: the window holds its margin. */
        int victim = -1;
        if (sp->n_cached >= CACHE_TILES)
          for (int i = 0; i < sp->n_cached; i++)
            if (sp->cache[i].used < sp->task_start &&
                (victim < 0 || sp->cache[i].used < sp->cache[victim].used))
              victim = i;
        if (victim < 0) {
          if (sp->n_cached == sp->cap_cached) {
            int cap = sp->cap_cached ? 2 * sp->cap_cached : 64;
            tile_entry_t *c = tsr__realloc(ctx, sp->cache, (size_t)cap * sizeof *c);
            if (c == NULL)
              return tsr__err(ctx, TSR_ENOMEM, "spline: out of memory");
            sp->cache = c;
            sp->cap_cached = cap;
          }
          victim = sp->n_cached;
          sp->cache[victim].coef = tsr__mallocarray(ctx, (size_t)TILE * TILE, sizeof(double));
          if (sp->cache[victim].coef == NULL)
            return tsr__err(ctx, TSR_ENOMEM, "spline: out of memory");
          sp->n_cached++;
        }
        {
          /* tsr__spline_window put this tile's margin in the window; check
           * rather than read outside it. */
          int64_t mx0 = kx * TILE - HALO - 1, mx1 = (kx + 1) * TILE + HALO - 1;
          int64_t my0 = ky * TILE - HALO - 1, my1 = (ky + 1) * TILE + HALO - 1;
          if ((mx0 > 0 && mx0 < wx0) || (mx1 < nx && mx1 > wx0 + ww) ||
              (my0 > 0 && my0 < wy0) || (my1 < ny && my1 > wy0 + wh))
            return tsr__err(ctx, TSR_EINVAL,
                            "spline: internal error: tile (%lld, %lld) is not inside the window",
                            (long long)kx, (long long)ky);
        }
        e = &sp->cache[victim];
        e->plane = plane_id, e->kx = kx, e->ky = ky;
        compute_tile(sp, e->coef, order, src, rs, dt, win, in_shape, kx, ky, any_nan);
      }
      e->used = ++sp->clock;
      for (int64_t p = ty0; p < ty1; p++)
        memcpy(sp->coef + (p - cy0) * (cx1 - cx0) + (tx0 - cx0), e->coef + (p - ty0) * TILE,
               (size_t)(tx1 - tx0) * sizeof(double));
    }

  {
    eval_ctx_t e = {sp->coef, cx1 - cx0, cx0, cy0, cx1, cy1, NX, NY, nx, ny,
                    any_nan ? sp->nanmask : NULL, wx0, wy0, ww, wh};
    bool f32 = t->node->dtype == TSR_F32;
    /* Small tiles of output keep the coefficients they read in cache: a
     * rotated mapping walks the coefficient array diagonally. */
    for (int64_t ty = 0; ty < bh; ty += 32)
      for (int64_t tx = 0; tx < bw; tx += 64)
        for (int64_t y = ty; y < bh && y < ty + 32; y++) {
          size_t off = tsr__task_offset(t, 0, y, z, q);
          for (int64_t x = tx; x < bw && x < tx + 64; x++) {
            double v = order == 3 ? eval3(&e, xin[y * bw + x], yin[y * bw + x])
                                  : eval2(&e, xin[y * bw + x], yin[y * bw + x]);
            if (t->planes[0]) {
              if (f32)
                ((float *)t->planes[0])[off + (size_t)x] = (float)v;
              else
                ((double *)t->planes[0])[off + (size_t)x] = v;
            }
            if (t->planes[1]) {
              double fp = v == v ? 1.0 : 0.0;
              if (f32)
                ((float *)t->planes[1])[off + (size_t)x] = (float)fp;
              else
                ((double *)t->planes[1])[off + (size_t)x] = fp;
            }
          }
        }
  }
  return 0;
}

void tsr__spline_free(tsr_ctx_t *ctx, tsr__spline_t *sp) {
  if (sp == NULL)
    return;
  for (int i = 0; i < sp->n_cached; i++)
    tsr__free(ctx, sp->cache[i].coef);
  tsr__free(ctx, sp->cache);
  tsr__free(ctx, sp->coef);
  tsr__free(ctx, sp->tile);
  tsr__free(ctx, sp->acc);
  tsr__free(ctx, sp->nanmask);
  tsr__free(ctx, sp);
}
