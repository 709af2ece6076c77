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
 *
 * The samples are read where they are: a FITS input in place in the file
 * mapping (big-endian, tsr__op_t.view), since a tile gathers its rows into
 * its own buffer anyway (a window copy first cost 5% of a bicubic run).
 *
 * Finished tiles are kept for the run with the NaN mask of their samples, so
 * a task whose tiles are all cached needs no input at all: its window
 * shrinks to the margins of the tiles it still has to compute (one pixel
 * when there are none), and each input pixel is read about once per run.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "spline.h"

#define TILE 256
#define TILE_SHIFT 8
#define HALO 24
/* A stored tile holds its TILE x TILE core plus the first OVER coefficients
 * of the next tiles, computed from this tile's own margin: a support of up
 * to 4 x 4 that starts in the core then lies in one tile, and evaluation
 * reads the cache in place.  Which tile serves a support depends only on
 * where the support starts, so results stay independent of the block. */
#define OVER 3
#define TS (TILE + OVER)

/* Coefficients of finished tiles, kept for the run: neighbouring blocks
 * need the same tiles, and a tile's coefficients never depend on the block
 * that asked first.  Least recently used tiles go past the budget, but
 * never one that the task in flight was promised (see tsr__spline_window);
 * an evicted tile's memory takes the next tile.  The budget follows the
 * input: blocks walk the output band by band, and a band's tiles lie in a
 * strip a few tiles deep across the input (CACHE_STRIPS strips of its longer
 * side hold them) and within the tiles of a row of tasks (more when the
 * output down-samples), per plane.  More only costs fresh pages: a 2048^2
 * bicubic run with 128 tiles was 3-7% slower, from page faults, and computed
 * no fewer tiles; with 4 strips alone, a 45 degree 4x down-sampling
 * computed 21% more. */
#define CACHE_STRIPS 4
#define CACHE_TILES_MAX 128 /* 128 x 524 KiB = 66 MiB */

static int cache_budget(const int64_t *in_shape, int64_t task_tiles, int64_t tasks_across) {
  int64_t across = ((in_shape[0] > in_shape[1] ? in_shape[0] : in_shape[1]) + 2 + TILE - 1) / TILE;
  int64_t strips = CACHE_STRIPS * across, band = task_tiles * tasks_across;
  int64_t n = ((strips > band ? strips : band) + 4) * in_shape[2] * in_shape[3];
  return n < CACHE_TILES_MAX ? (int)n : CACHE_TILES_MAX;
}

typedef struct {
  int64_t plane, kx, ky;  /* input plane and tile index */
  uint64_t used;          /* LRU clock */
  double *coef;           /* TS x TS, rows of TS */
  unsigned char *nan;     /* TS x TS, 1 where the padded sample is NaN; NULL if none is */
} tile_entry_t;

struct tsr__spline_s {
  const double **tab; /* the task's tiles, row-major over [kx0, kx1) x [ky0, ky1) */
  size_t tab_cap;
  const unsigned char **ntab; /* their NaN masks */
  size_t ntab_cap;
  double *tile;      /* one tile with its margin, then its transpose */
  size_t tile_cap;
  unsigned char *tmask; /* NaN mask of the tile with its margin */
  size_t tmask_cap;
  double *acc;       /* a row of column accumulators */
  size_t acc_cap;
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
  bool need = false;

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
      int64_t x0 = kx * TILE - HALO - 1, x1 = (kx + 1) * TILE + OVER + HALO - 1;
      int64_t y0 = ky * TILE - HALO - 1, y1 = (ky + 1) * TILE + OVER + HALO - 1;
      if (!need || x0 < w.start[0]) w.start[0] = x0;
      if (!need || x1 > w.stop[0]) w.stop[0] = x1;
      if (!need || y0 < w.start[1]) w.start[1] = y0;
      if (!need || y1 > w.stop[1]) w.stop[1] = y1;
      need = true;
    }
  for (int a = 0; a < 2; a++) {
    if (w.start[a] < 0)
      w.start[a] = 0;
    if (w.stop[a] > in_shape[a])
      w.stop[a] = in_shape[a];
    if (!need) {
      /* Every tile is cached: a token read of one pixel. */
      w.start[a] = win->start[a] < 0 ? 0 : win->start[a] >= in_shape[a] ? in_shape[a] - 1
                                                                        : win->start[a];
      w.stop[a] = w.start[a] + 1;
    }
  }
  *win = w;
}

/* The causal initialisation of scipy's recursive prefilter (mirror
 * boundaries) sums z^k terms; past HORIZON terms they are below 1e-18 of the
 * data (|z| <= 0.268), so the sum stops there. */
#define HORIZON 32

/* scipy's prefilter of every column of a w-wide, n-high block at once:
 * row by row, so the loops run along memory and vectorise.  acc holds w
 * doubles. */
TSR__MULTIVERSION static void filter_columns(double *b, int64_t w, int64_t n, int order,
                                             double *acc) {
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

/* A big-endian (FITS) value at p. */
static inline float be_float(const unsigned char *p) {
  uint32_t u;
  float f;
  memcpy(&u, p, 4);
  u = __builtin_bswap32(u);
  memcpy(&f, &u, 4);
  return f;
}

static inline double be_double(const unsigned char *p) {
  uint64_t u;
  double d;
  memcpy(&u, p, 8);
  u = __builtin_bswap64(u);
  memcpy(&d, &u, 8);
  return d;
}

static inline double load(const void *src, tsr_dtype_t dt, bool be, size_t i) {
  if (!be)
    return dt == TSR_F32 ? (double)((const float *)src)[i] : ((const double *)src)[i];
  return dt == TSR_F32 ? (double)be_float((const unsigned char *)src + 4 * i)
                       : be_double((const unsigned char *)src + 8 * i);
}

/* What evaluation needs: the task's tiles and their NaN masks (tab and
 * ntab, nkx wide, from tile (kx0, ky0)); any_nan when some mask exists. */
typedef struct {
  const double *const *tab;
  const unsigned char *const *ntab;
  int64_t kx0, ky0, kx1, ky1, nkx, NX, NY, nx, ny;
  bool any_nan;
} eval_ctx_t;

/* The index of the tile holding padded index (ix, iy) in its core, or -1. */
static inline int64_t tile_index(const eval_ctx_t *e, int64_t ix, int64_t iy) {
  int64_t kx = ix >> TILE_SHIFT, ky = iy >> TILE_SHIFT;
  if (kx < e->kx0 || kx >= e->kx1 || ky < e->ky0 || ky >= e->ky1)
    return -1;
  return (ky - e->ky0) * e->nkx + (kx - e->kx0);
}

/* The offset of padded index (ix, iy) in the arrays of the tile whose core
 * holds it (a support starting there runs on into the overlap): x-major,
 * rows of TS along y. */
static inline int64_t tile_off(int64_t ix, int64_t iy) {
  return (ix & (TILE - 1)) * TS + (iy & (TILE - 1));
}

static inline const double *tile_of(const eval_ctx_t *e, int64_t ix, int64_t iy) {
  int64_t i = tile_index(e, ix, iy);
  return i < 0 ? NULL : e->tab[i];
}

/* Does the support [sx, sx+n) x [sy, sy+n) (padded indices) touch a NaN
 * sample?  The masks are laid out as the coefficients (see sum_support);
 * a missing tile counts as NaN. */
static bool support_spoiled(const eval_ctx_t *e, int64_t sx, int64_t sy, int n) {
  if (sx >= 0 && sy >= 0 && sx + n <= e->NX && sy + n <= e->NY) {
    int64_t i = tile_index(e, sx, sy);
    if (i < 0)
      return true;
    const unsigned char *m = e->ntab[i];
    if (m == NULL)
      return false;
    m += tile_off(sx, sy);
    for (int k = 0; k < n; k++, m += TS)
      for (int l = 0; l < n; l++)
        if (m[l])
          return true;
    return false;
  }
  for (int l = 0; l < n; l++) {
    int64_t iy = mirror(sy + l, e->NY);
    for (int k = 0; k < n; k++) {
      int64_t ix = mirror(sx + k, e->NX), i = tile_index(e, ix, iy);
      if (i < 0)
        return true;
      if (e->ntab[i] && e->ntab[i][tile_off(ix, iy)])
        return true;
    }
  }
  return false;
}

typedef double v4d __attribute__((vector_size(32)));


/* The sum of n x n coefficients with weights.  Inside the image the support
 * comes from the tile its start lies in; at the edges indices are mirrored
 * and each coefficient comes from the core of its own tile.  NAN if the task
 * lacks a tile (it never should).  Tiles are x-major: a support is n runs
 * of n coefficients along y. */
static inline __attribute__((always_inline)) double
sum_support(const eval_ctx_t *e, int64_t sx, int64_t sy, int n, const double *wx,
            const double *wy) {
  double s = 0;
  if (sx >= 0 && sy >= 0 && sx + n <= e->NX && sy + n <= e->NY) {
    const double *p = tile_of(e, sx, sy);
    if (p == NULL)
      return NAN;
    p += tile_off(sx, sy);
    if (n == 4) {
      /* The runs weighted by wx, then the sum along y by wy: 4-wide
       * vectors, as eval3x4 does it. */
      v4d r0, r1, r2, r3, w;
      memcpy(&r0, p, sizeof r0), memcpy(&r1, p + TS, sizeof r1);
      memcpy(&r2, p + 2 * TS, sizeof r2), memcpy(&r3, p + 3 * TS, sizeof r3);
      memcpy(&w, wy, sizeof w);
      v4d a = (r0 * wx[0] + r1 * wx[1]) + (r2 * wx[2] + r3 * wx[3]);
      a *= w;
      return (a[0] + a[1]) + (a[2] + a[3]);
    }
    for (int k = 0; k < n; k++, p += TS) {
      double r = 0;
      for (int l = 0; l < n; l++)
        r += wy[l] * p[l];
      s += wx[k] * r;
    }
    return s;
  }
  for (int k = 0; k < n; k++) {
    int64_t ix = mirror(sx + k, e->NX);
    double r = 0;
    for (int l = 0; l < n; l++) {
      int64_t iy = mirror(sy + l, e->NY);
      const double *p = tile_of(e, ix, iy);
      if (p == NULL)
        return NAN;
      r += wy[l] * p[tile_off(ix, iy)];
    }
    s += wx[k] * r;
  }
  return s;
}

/* Tiles computed for earlier blocks have left the cache by the time a
 * later block reads them, and a rotated walk defeats the hardware
 * prefetcher: ask for the support of a pixel a little ahead. */
/* (Inlined: GCC deems a function of prefetches alone pure and drops its calls.) */
#define PREFETCH 64
static inline __attribute__((always_inline)) void prefetch_support(const eval_ctx_t *e, double x, double y) {
  if (!(x >= 0.0 && y >= 0.0 && x < (double)(e->NX - 5) && y < (double)(e->NY - 5)))
    return;
  int64_t sx = (int64_t)x, sy = (int64_t)y; /* the support starts at floor(x + 1) - 1 */
  const double *p = tile_of(e, sx, sy);
  if (p == NULL)
    return;
  p += tile_off(sx, sy);
  for (int k = 0; k < 4; k++)
    __builtin_prefetch(p + k * TS), __builtin_prefetch(p + k * TS + 3);
}

/* Cubic B-spline at input pixel (x, y); NaN outside [-0.5, n - 0.5] or on a
 * support touching a NaN.  xp = x + 1 >= 0.5, so truncation is floor. */
/* The cubic B-spline weights at fraction f (g = 1 - f), for a double or a
 * vector of them: one expression, so both give the same bits. */
#define CUBIC_WEIGHTS(w, f, g)                                                                 \
  ((w)[0] = (g) * (g) * (g) * (1.0 / 6.0), (w)[3] = (f) * (f) * (f) * (1.0 / 6.0),             \
   (w)[1] = (3.0 * (f) * (f) * (f) - 6.0 * (f) * (f) + 4.0) * (1.0 / 6.0),                     \
   (w)[2] = 1.0 - (w)[0] - (w)[1] - (w)[3])

static inline __attribute__((always_inline)) double eval3(const eval_ctx_t *e, double x, double y) {
  double wx[4], wy[4], xp, yp, f;
  int64_t sx, sy;
  if (!(x >= -0.5 && x <= (double)e->nx - 0.5 && y >= -0.5 && y <= (double)e->ny - 0.5))
    return NAN;
  xp = x + 1.0, yp = y + 1.0;
  sx = (int64_t)xp - 1, sy = (int64_t)yp - 1;
  f = xp - (double)(sx + 1);
  CUBIC_WEIGHTS(wx, f, 1.0 - f);
  f = yp - (double)(sy + 1);
  CUBIC_WEIGHTS(wy, f, 1.0 - f);
  if (e->any_nan && support_spoiled(e, sx, sy, 4))
    return NAN;
  return sum_support(e, sx, sy, 4, wx, wy);
}

typedef int32_t v4si __attribute__((vector_size(16)));

/* Lanes i0..i3 of the 8 lanes of a then b (GCC's and clang's spellings). */
#if defined(__clang__)
#define SHUF4(a, b, i0, i1, i2, i3) __builtin_shufflevector(a, b, i0, i1, i2, i3)
#else
#define SHUF4(a, b, i0, i1, i2, i3) __builtin_shuffle(a, b, (v4di){i0, i1, i2, i3})
#endif
typedef int64_t v4di __attribute__((vector_size(32)));

/* Four cubic values at once, when all four supports lie inside the image,
 * away from NaNs (the caller checks): the same operations in the same order
 * as eval3 and sum_support, so the same bits.  The runs along y of each
 * support are weighted by wx, and the four sums, transposed, by wy. */
static inline __attribute__((always_inline)) void eval3x4(const eval_ctx_t *e, const double *xs,
                                                          const double *ys, double *v) {
  v4d x, y, xp, yp, wx[4], wy[4], a[4], f;
  memcpy(&x, xs, sizeof x), memcpy(&y, ys, sizeof y);
  xp = x + 1.0, yp = y + 1.0;
  v4si ix = __builtin_convertvector(xp, v4si), iy = __builtin_convertvector(yp, v4si);
  f = xp - __builtin_convertvector(ix, v4d);
  CUBIC_WEIGHTS(wx, f, 1.0 - f);
  f = yp - __builtin_convertvector(iy, v4d);
  CUBIC_WEIGHTS(wy, f, 1.0 - f);
  /* Tile and offset of each support, as tile_index and tile_off compute
   * them, four lanes at once (the caller keeps them in int32 range). */
  v4si sxv = ix - 1, syv = iy - 1;
  v4si ti = ((syv >> TILE_SHIFT) - (int32_t)e->ky0) * (int32_t)e->nkx +
            ((sxv >> TILE_SHIFT) - (int32_t)e->kx0);
  v4si to = (sxv & (TILE - 1)) * TS + (syv & (TILE - 1));
  for (int j = 0; j < 4; j++) {
    const double *p = e->tab[ti[j]] + to[j];
    v4d r0, r1, r2, r3;
    memcpy(&r0, p, sizeof r0), memcpy(&r1, p + TS, sizeof r1);
    memcpy(&r2, p + 2 * TS, sizeof r2), memcpy(&r3, p + 3 * TS, sizeof r3);
    a[j] = (r0 * wx[0][j] + r1 * wx[1][j]) + (r2 * wx[2][j] + r3 * wx[3][j]);
  }
  {
    v4d lo01 = SHUF4(a[0], a[1], 0, 4, 2, 6);
    v4d hi01 = SHUF4(a[0], a[1], 1, 5, 3, 7);
    v4d lo23 = SHUF4(a[2], a[3], 0, 4, 2, 6);
    v4d hi23 = SHUF4(a[2], a[3], 1, 5, 3, 7);
    v4d c0 = SHUF4(lo01, lo23, 0, 1, 4, 5);
    v4d c1 = SHUF4(hi01, hi23, 0, 1, 4, 5);
    v4d c2 = SHUF4(lo01, lo23, 2, 3, 6, 7);
    v4d c3 = SHUF4(hi01, hi23, 2, 3, 6, 7);
    v4d r = (c0 * wy[0] + c1 * wy[1]) + (c2 * wy[2] + c3 * wy[3]);
    memcpy(v, &r, sizeof r);
  }
}

/* Quadratic B-spline; the support starts at round(xp) - 1. */
static inline __attribute__((always_inline)) double eval2(const eval_ctx_t *e, double x, double y) {
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
  if (e->any_nan && support_spoiled(e, sx, sy, 3))
    return NAN;
  return sum_support(e, sx, sy, 3, wx, wy);
}

/* n values at coordinates xs/ys into v; `ahead` coordinates are readable
 * (for prefetching). */
TSR__MULTIVERSION static void eval_segment(const eval_ctx_t *e, int order, const double *xs,
                                           const double *ys, int64_t n, int64_t ahead,
                                           double *v) {
  /* Groups of four go through eval3x4 when every support is inside the
   * image (0 <= x < nx - 1). */
  const double xmax = (double)e->nx - 1.0, ymax = (double)e->ny - 1.0;
  bool vec = order == 3 && !e->any_nan && e->NX < INT32_MAX / 2 && e->NY < INT32_MAX / 2;
  for (int64_t k = 0; k < n;) {
    if (vec && k + 4 <= n) {
      /* The task's tiles cover the support of every coordinate in range
       * (tsr__spline_run), so only the range is checked. */
      v4d x, y;
      v4di in;
      memcpy(&x, xs + k, sizeof x), memcpy(&y, ys + k, sizeof y);
      in = (x >= 0.0) & (x < xmax) & (y >= 0.0) & (y < ymax);
      if ((in[0] & in[1] & in[2] & in[3]) != 0) {
        /* Neighbouring outputs share most of their supports (a pixel or so
         * apart): one prefetch for the four costs a quarter of the work. */
        if (k + PREFETCH < ahead)
          prefetch_support(e, xs[k + PREFETCH], ys[k + PREFETCH]);
        eval3x4(e, xs + k, ys + k, v + k);
        k += 4;
        continue;
      }
    }
    if (k + PREFETCH < ahead)
      prefetch_support(e, xs[k + PREFETCH], ys[k + PREFETCH]);
    v[k] = order == 3 ? eval3(e, xs[k], ys[k]) : eval2(e, xs[k], ys[k]);
    k++;
  }
}

/* Lanes of a where m is set, else of b. */
#define select4(m, a, b) ((v4d)(((v4di)(a) & (m)) | ((v4di)(b) & ~(m))))

/* The bounds of the n coordinates (xs, ys) inside [-0.5, xmax] x [-0.5, ymax];
 * lx > hx when there are none.  Four lanes at a time, branch-free. */
TSR__MULTIVERSION static void coord_bounds(const double *xs, const double *ys, int64_t n,
                                           double xmax, double ymax, double *lx, double *hx,
                                           double *ly, double *hy) {
  const v4d inf = {INFINITY, INFINITY, INFINITY, INFINITY};
  v4d l0 = inf, h0 = -inf, l1 = inf, h1 = -inf;
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    v4d x, y;
    memcpy(&x, xs + k, sizeof x), memcpy(&y, ys + k, sizeof y);
    v4di in = (x >= -0.5) & (x <= xmax) & (y >= -0.5) & (y <= ymax);
    v4d xl = select4(in, x, inf), xh = select4(in, x, -inf);
    v4d yl = select4(in, y, inf), yh = select4(in, y, -inf);
    l0 = select4(xl < l0, xl, l0), h0 = select4(xh > h0, xh, h0);
    l1 = select4(yl < l1, yl, l1), h1 = select4(yh > h1, yh, h1);
  }
  *lx = INFINITY, *hx = -INFINITY, *ly = INFINITY, *hy = -INFINITY;
  for (int j = 0; j < 4; j++) {
    *lx = l0[j] < *lx ? l0[j] : *lx, *hx = h0[j] > *hx ? h0[j] : *hx;
    *ly = l1[j] < *ly ? l1[j] : *ly, *hy = h1[j] > *hy ? h1[j] : *hy;
  }
  for (; k < n; k++) {
    double x = xs[k], y = ys[k];
    if (!(x >= -0.5 && x <= xmax && y >= -0.5 && y <= ymax))
      continue;
    *lx = x < *lx ? x : *lx, *hx = x > *hx ? x : *hx;
    *ly = y < *ly ? y : *ly, *hy = y > *hy ? y : *hy;
  }
}

/* n values v into the data plane d and footprint plane fp (either may be
 * NULL) from element off on; f32 says the planes' type. */
static void store_segment(void *d, void *fp, bool f32, size_t off, const double *v, int64_t n) {
  if (d && f32)
    for (int64_t k = 0; k < n; k++)
      ((float *)d)[off + (size_t)k] = (float)v[k];
  else if (d)
    memcpy((double *)d + off, v, (size_t)n * sizeof *v);
  if (fp && f32)
    for (int64_t k = 0; k < n; k++)
      ((float *)fp)[off + (size_t)k] = v[k] == v[k] ? 1.0f : 0.0f;
  else if (fp)
    for (int64_t k = 0; k < n; k++)
      ((double *)fp)[off + (size_t)k] = v[k] == v[k] ? 1.0 : 0.0;
}

/* Gather P over padded columns [ex0, ex0 + ew) of data row dy into b, where
 * P(p) = data[clamp(p - 1)]: clamps only at the image's edges.  Returns
 * nonzero if a value is not finite (checked branch-free, in the same pass). */
TSR__MULTIVERSION static int gather_row(double *b, const void *src, tsr_dtype_t dt, bool be,
                                        int64_t rs, int64_t wx0, int64_t wy0, int64_t dy,
                                        int64_t ex0, int64_t ew, int64_t nx) {
  int64_t i0 = 1 - ex0 > 0 ? 1 - ex0 : 0, i1 = nx + 1 - ex0 < ew ? nx + 1 - ex0 : ew;
  size_t row = (size_t)((dy - wy0) * rs - wx0);
  int bad = 0;
  for (int64_t i = 0; i < i0; i++)
    b[i] = load(src, dt, be, row);
  if (dt == TSR_F32 && !be) {
    const float *p = (const float *)src + row + (ex0 - 1);
    for (int64_t i = i0; i < i1; i++) {
      b[i] = (double)p[i];
      bad |= !(fabsf(p[i]) <= FLT_MAX);
    }
  } else if (!be) {
    const double *p = (const double *)src + row + (ex0 - 1);
    for (int64_t i = i0; i < i1; i++) {
      b[i] = p[i];
      bad |= !(fabs(p[i]) <= DBL_MAX);
    }
  } else if (dt == TSR_F32) {
    /* A view of the file: FITS values, big-endian (byte shuffles). */
    const unsigned char *p = (const unsigned char *)src + (row + (size_t)(ex0 - 1)) * 4;
    for (int64_t i = i0; i < i1; i++) {
      float f = be_float(p + 4 * i);
      b[i] = (double)f;
      bad |= !(fabsf(f) <= FLT_MAX);
    }
  } else {
    const unsigned char *p = (const unsigned char *)src + (row + (size_t)(ex0 - 1)) * 8;
    for (int64_t i = i0; i < i1; i++) {
      b[i] = be_double(p + 8 * i);
      bad |= !(fabs(b[i]) <= DBL_MAX);
    }
  }
  for (int64_t i = i1 > i0 ? i1 : i0; i < ew; i++)
    b[i] = load(src, dt, be, row + (size_t)(nx - 1));
  if (i0 > 0)
    bad |= !isfinite(b[0]);
  if (i1 < ew)
    bad |= !isfinite(b[ew - 1]);
  return bad;
}

/* bt (w rows of h) = the transpose of b (h rows of w), by 4 x 4 blocks. */
TSR__MULTIVERSION static void transpose(double *restrict bt, const double *restrict b, int64_t w,
                                        int64_t h) {
  int64_t h4 = h / 4 * 4, w4 = w / 4 * 4;
  for (int64_t j = 0; j < h4; j += 4)
    for (int64_t i = 0; i < w4; i += 4) {
      v4d a0, a1, a2, a3;
      memcpy(&a0, b + j * w + i, sizeof a0), memcpy(&a1, b + (j + 1) * w + i, sizeof a1);
      memcpy(&a2, b + (j + 2) * w + i, sizeof a2), memcpy(&a3, b + (j + 3) * w + i, sizeof a3);
      v4d lo01 = SHUF4(a0, a1, 0, 4, 2, 6);
      v4d hi01 = SHUF4(a0, a1, 1, 5, 3, 7);
      v4d lo23 = SHUF4(a2, a3, 0, 4, 2, 6);
      v4d hi23 = SHUF4(a2, a3, 1, 5, 3, 7);
      v4d c0 = SHUF4(lo01, lo23, 0, 1, 4, 5);
      v4d c1 = SHUF4(hi01, hi23, 0, 1, 4, 5);
      v4d c2 = SHUF4(lo01, lo23, 2, 3, 6, 7);
      v4d c3 = SHUF4(hi01, hi23, 2, 3, 6, 7);
      memcpy(bt + i * h + j, &c0, sizeof c0), memcpy(bt + (i + 1) * h + j, &c1, sizeof c1);
      memcpy(bt + (i + 2) * h + j, &c2, sizeof c2), memcpy(bt + (i + 3) * h + j, &c3, sizeof c3);
    }
  for (int64_t j = 0; j < h; j++)
    for (int64_t i = j < h4 ? w4 : 0; i < w; i++)
      bt[i * h + j] = b[j * w + i];
}

/* The coefficients and NaN mask of tile (e->kx, e->ky) into e, from the
 * tile, its overlap and its margin of the window's data. */
static int compute_tile(tsr_ctx_t *ctx, tsr__spline_t *sp, tile_entry_t *e, int order,
                        const void *src, int64_t rs, tsr_dtype_t dt, bool be, const tsr_region_t *win,
                        const int64_t *in_shape) {
  int64_t nx = in_shape[0], ny = in_shape[1], NX = nx + 2, NY = ny + 2;
  int64_t wx0 = win->start[0], wy0 = win->start[1], kx = e->kx, ky = e->ky;
  int64_t ex0 = kx * TILE - HALO, ex1 = (kx + 1) * TILE + OVER + HALO;
  int64_t ey0 = ky * TILE - HALO, ey1 = (ky + 1) * TILE + OVER + HALO;
  if (ex0 < 0) ex0 = 0;
  if (ey0 < 0) ey0 = 0;
  if (ex1 > NX) ex1 = NX;
  if (ey1 > NY) ey1 = NY;
  int64_t ew = ex1 - ex0, eh = ey1 - ey0;
  int64_t tx0 = kx * TILE, tx1 = tx0 + TS > NX ? NX : tx0 + TS;
  int64_t ty0 = ky * TILE, ty1 = ty0 + TS > NY ? NY : ty0 + TS;
  double *b = sp->tile, *bt = sp->tile + ew * eh;
  unsigned char *m = sp->tmask;
  int bad = 0;

  for (int64_t j = 0; j < eh; j++) {
    int64_t dy = ey0 + j - 1;
    dy = dy < 0 ? 0 : dy > ny - 1 ? ny - 1 : dy;
    bad |= gather_row(b + j * ew, src, dt, be, rs, wx0, wy0, dy, ex0, ew, nx);
  }
  /* The mask only when needed. */
  tsr__free(ctx, e->nan);
  e->nan = NULL;
  if (bad) {
    e->nan = tsr__malloc(ctx, (size_t)TS * TS);
    if (e->nan == NULL)
      return tsr__err(ctx, TSR_ENOMEM, "spline: out of memory");
    for (int64_t k = 0; k < ew * eh; k++)
      m[k] = !isfinite(b[k]);
    for (int64_t x = tx0; x < tx1; x++)
      for (int64_t p = ty0; p < ty1; p++)
        e->nan[(x - tx0) * TS + (p - ty0)] = m[(p - ey0) * ew + (x - ex0)];
    /* Fill NaN samples from finite neighbours inside the margin only, so
     * the fill depends on the tile, not on the window. */
    for (int64_t j = 0; j < eh; j++)
      for (int64_t i = 0; i < ew; i++) {
        if (!m[j * ew + i])
          continue;
        double sum = 0;
        int cnt = 0;
        for (int64_t jj = j - 2; jj <= j + 2; jj++)
          for (int64_t ii = i - 2; ii <= i + 2; ii++)
            if (jj >= 0 && ii >= 0 && jj < eh && ii < ew && !m[jj * ew + ii])
              sum += b[jj * ew + ii], cnt++;
        b[j * ew + i] = cnt ? sum / cnt : 0.0;
      }
  }
  /* scipy filters axis 0 (y) first, then x.  Along x the lines are filtered
   * as columns of the transpose: the same operations per line, but they
   * vectorise across lines instead of running one recursion at a time.
   * The transpose is x-major, as the tile arrays are: the core and the
   * overlap are then whole runs of it. */
  filter_columns(b, ew, eh, order, sp->acc);
  /* Once y is filtered only the rows of the core and overlap are needed:
   * x is filtered over those alone, and they are then rows of TS, as the
   * tile is (one copy for a whole tile). */
  transpose(bt, b + (ty0 - ey0) * ew, ew, ty1 - ty0);
  filter_columns(bt, ty1 - ty0, ew, order, sp->acc);
  if (ty1 - ty0 == TS)
    memcpy(e->coef, bt + (tx0 - ex0) * TS, (size_t)((tx1 - tx0) * TS) * sizeof(double));
  else
    for (int64_t x = tx0; x < tx1; x++)
      memcpy(e->coef + (x - tx0) * TS, bt + (x - ex0) * (ty1 - ty0),
             (size_t)(ty1 - ty0) * sizeof(double));
  return 0;
}

/* Fault in a fresh array's pages with one call instead of one trap per
 * page (a tile is 131 pages, written once right after).  Advice only. */
static void prefault(void *p, size_t len) {
#ifdef MADV_POPULATE_WRITE
  size_t page = 4096;
  uintptr_t a = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
  uintptr_t b = ((uintptr_t)p + len) & ~(uintptr_t)(page - 1);
  if (b > a)
    (void)madvise((void *)a, b - a, MADV_POPULATE_WRITE);
#else
  (void)p, (void)len;
#endif
}

int tsr__spline_run(tsr_ctx_t *ctx, tsr__spline_t **spp, int order, const void *src,
                    int64_t rs, tsr_dtype_t dt, bool be, const tsr_region_t *win,
                    const int64_t *in_shape,
                    const double *xin, const double *yin, int64_t bw, int64_t bh,
                    tsr__task_t *t, int64_t z, int64_t q, int64_t plane_id) {
  tsr__spline_t *sp = *spp;
  int64_t nx = in_shape[0], ny = in_shape[1], NX = nx + 2, NY = ny + 2;
  int64_t wx0 = win->start[0], wy0 = win->start[1];
  int64_t ww = win->stop[0] - wx0, wh = win->stop[1] - wy0;
  int64_t kx0, kx1, ky0, ky1;
  bool any_nan = false;
  int rc;

  /* The tiles the coordinates need (their support, mirrored at the edges). */
  {
    double lx, hx, ly, hy;
    coord_bounds(xin, yin, bw * bh, (double)nx - 0.5, (double)ny - 0.5, &lx, &hx, &ly, &hy);
    if (lx > hx) {
      kx0 = kx1 = ky0 = ky1 = 0;
    } else {
      tile_span((int64_t)(lx + 1.0) - 2, (int64_t)(hx + 1.0) + 4, NX, &kx0, &kx1);
      tile_span((int64_t)(ly + 1.0) - 2, (int64_t)(hy + 1.0) + 4, NY, &ky0, &ky1);
    }
  }
  if (kx1 <= kx0 || ky1 <= ky0)
    kx1 = kx0, ky1 = ky0;
  /* At most a band of tasks' tiles are in use at once (see CACHE_STRIPS). */
  int budget = cache_budget(in_shape, (kx1 - kx0) * (ky1 - ky0),
                            (t->node->shape[0] + t->node->chunk[0] - 1) / t->node->chunk[0]);

  {
    size_t ntiles = (size_t)((kx1 - kx0) * (ky1 - ky0) + 1);
    size_t ext = (size_t)(TS + 2 * HALO);
    if ((rc = grow(ctx, (void **)&sp->tab, &sp->tab_cap, ntiles, sizeof(double *))) != 0 ||
        (rc = grow(ctx, (void **)&sp->ntab, &sp->ntab_cap, ntiles, sizeof(char *))) != 0 ||
        (rc = grow(ctx, (void **)&sp->tile, &sp->tile_cap, 2 * ext * ext, sizeof(double))) != 0 ||
        (rc = grow(ctx, (void **)&sp->tmask, &sp->tmask_cap, ext * ext, 1)) != 0 ||
        (rc = grow(ctx, (void **)&sp->acc, &sp->acc_cap, ext, sizeof(double))) != 0)
      return rc;
  }

  for (int64_t ky = ky0; ky < ky1; ky++)
    for (int64_t kx = kx0; kx < kx1; kx++) {
      tile_entry_t *e = cache_find(sp, plane_id, kx, ky);
      if (e == NULL) {
        /* A tile this task was not promised: the window holds its margin. */
        int victim = -1;
        if (sp->n_cached >= budget)
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
          memset(&sp->cache[victim], 0, sizeof sp->cache[victim]);
          sp->cache[victim].coef = tsr__mallocarray(ctx, (size_t)TS * TS, sizeof(double));
          if (sp->cache[victim].coef == NULL)
            return tsr__err(ctx, TSR_ENOMEM, "spline: out of memory");
          prefault(sp->cache[victim].coef, (size_t)TS * TS * sizeof(double));
          sp->n_cached++;
        }
        {
          /* tsr__spline_window put this tile's margin in the window; check
           * rather than read outside it. */
          int64_t mx0 = kx * TILE - HALO - 1, mx1 = (kx + 1) * TILE + OVER + HALO - 1;
          int64_t my0 = ky * TILE - HALO - 1, my1 = (ky + 1) * TILE + OVER + HALO - 1;
          mx0 = mx0 < 0 ? 0 : mx0, my0 = my0 < 0 ? 0 : my0;
          mx1 = mx1 > nx ? nx : mx1, my1 = my1 > ny ? ny : my1;
          if (mx0 < wx0 || mx1 > wx0 + ww || my0 < wy0 || my1 > wy0 + wh)
            return tsr__err(ctx, TSR_EINVAL,
                            "spline: internal error: tile (%lld, %lld) is not inside the window",
                            (long long)kx, (long long)ky);
        }
        e = &sp->cache[victim];
        e->plane = plane_id, e->kx = kx, e->ky = ky;
        if ((rc = compute_tile(ctx, sp, e, order, src, rs, dt, be, win, in_shape)) != 0) {
          e->plane = -1; /* half-made: never found again */
          return rc;
        }
      }
      e->used = ++sp->clock;
      /* The arrays outlive a realloc of the cache table. */
      sp->tab[(ky - ky0) * (kx1 - kx0) + (kx - kx0)] = e->coef;
      sp->ntab[(ky - ky0) * (kx1 - kx0) + (kx - kx0)] = e->nan;
      any_nan |= e->nan != NULL;
    }

  {
    eval_ctx_t e = {sp->tab, sp->ntab, kx0, ky0, kx1, ky1, kx1 - kx0, NX, NY, nx, ny, any_nan};
    bool f32 = t->node->dtype == TSR_F32;
    /* Small tiles of output keep the coefficients they read in cache: a
     * rotated mapping walks the coefficient array diagonally. */
    for (int64_t ty = 0; ty < bh; ty += 32)
      for (int64_t tx = 0; tx < bw; tx += 64)
        for (int64_t y = ty; y < bh && y < ty + 32; y++) {
          size_t off = tsr__task_offset(t, 0, y, z, q);
          int64_t n = bw - tx < 64 ? bw - tx : 64;
          double v[64];
          if (!f32 && t->planes[1] == NULL && t->planes[0] != NULL) {
            /* float64 without a footprint: straight into the output. */
            eval_segment(&e, order, xin + y * bw + tx, yin + y * bw + tx, n, bw - tx,
                         (double *)t->planes[0] + off + (size_t)tx);
            continue;
          }
          eval_segment(&e, order, xin + y * bw + tx, yin + y * bw + tx, n, bw - tx, v);
          store_segment(t->planes[0], t->planes[1], f32, off + (size_t)tx, v, n);
        }
  }
  return 0;
}

void tsr__spline_free(tsr_ctx_t *ctx, tsr__spline_t *sp) {
  if (sp == NULL)
    return;
  for (int i = 0; i < sp->n_cached; i++) {
    tsr__free(ctx, sp->cache[i].coef);
    tsr__free(ctx, sp->cache[i].nan);
  }
  tsr__free(ctx, sp->cache);
  tsr__free(ctx, sp->tab);
  tsr__free(ctx, sp->ntab);
  tsr__free(ctx, sp->tile);
  tsr__free(ctx, sp->tmask);
  tsr__free(ctx, sp->acc);
  tsr__free(ctx, sp);
}
