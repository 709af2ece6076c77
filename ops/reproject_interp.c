/* reproject_interp.c -- reprojection by interpolation (reproject_interp).
 *
 * Semantics follow reproject 0.10 (REFERENCE.md 3.2): pixel centres at
 * integers; an input coordinate within half a pixel outside the edge pixel
 * centres takes the edge value (reproject pads the image by one edge pixel),
 * beyond that the output is NaN; orders 0 and 1 propagate a NaN to every
 * output whose stencil (1 or 2 x 2 pixels, zero weights included, as scipy
 * does) touches it.  Orders 2 and 3 are B-splines with scipy's prefilter; see
 * spline.c for how a NaN spoils only the outputs whose support touches it.
 *
 * Blocks: each output block maps its boundary to find the input window it
 * needs (plus the kernel's halo) and reads only that; a block that misses the
 * input is NaN without reading anything.  Extra leading axes (cubes) are
 * broadcast: the mapping is computed once per block and applied to every
 * plane.  The data and footprint planes are computed together.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mapping.h"
#include "reproject.h"
#include "spline.h"
#include "sky.h"

#define BAND_ROWS 32 /* a multiple of the mapping grid */
#define TILE_COLS 64

typedef struct {
  tsr__reproject_params_t base; /* target, input name, mapping tolerance, roundtrip */
  int order;
} interp_params_t;

typedef struct {
  tsr__reproject_state_t base; /* the output -> input mapping */
  double *xin, *yin;     /* coordinates of the current box */
  size_t cap;
  tsr__spline_t *spline; /* orders 2, 3: coefficient tiles kept for the run */
} interp_state_t;

static void params_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const interp_params_t *ip = n->params;
  tsr__buf_put_i64(b, ip->order);
  tsr__reproject_params_encode(&ip->base, b);
}

static void interp_stop(tsr_node_t *n, void *state) {
  interp_state_t *st = state;
  if (st == NULL)
    return;
  tsr__spline_free(n->graph->ctx, st->spline);
  tsr__free(n->graph->ctx, st->xin);
  tsr__free(n->graph->ctx, st->yin);
  tsr__reproject_state_free(n, st);
}

static int interp_start(tsr_node_t *n, void **state) {
  const interp_params_t *ip = n->params;
  interp_state_t *st;
  int rc = tsr__reproject_state_new(n, sizeof *st, state);
  if (rc != 0)
    return rc;
  st = *state;
  if (ip->order >= 2 && (rc = tsr__spline_new(n->graph->ctx, &st->spline)) != 0) {
    interp_stop(n, st);
    *state = NULL;
  }
  return rc;
}

/* Pixels of input support around coordinate bounds, per order. */
static int halo(int order) { return order <= 1 ? 2 : 3; }

static int interp_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                               tsr_region_t *win, bool *empty) {
  interp_state_t *st = state;
  const interp_params_t *ip = n->params;
  tsr_node_t *in = n->inputs[i];
  int rc = tsr__reproject_window(st->base.map, out, 0, in, halo(ip->order), win, empty);
  if (rc != 0 || *empty)
    return rc;
  if (ip->order >= 2) {
    /* Planes are whole along axes 2 and 3, so their ids are contiguous. */
    int64_t p0 = out->start[3] * in->shape[2] + out->start[2];
    int64_t p1 = (out->stop[3] - 1) * in->shape[2] + out->stop[2];
    tsr__spline_window(st->spline, win, in->shape, p0, p1 - p0);
  }
  return 0;
}

/* Orders 0 and 1 over one output row, for each input/output type pair.
 * Coordinates that pass the range test are >= -0.5, so x + 1 > 0 and the
 * truncating conversion is floor (libm's floor is a call on baseline x86-64).
 * Interior pixels skip the edge clamps. */
#define DEFINE_ROW_KERNELS(TIN, TOUT, SUF)                                                    \
  static void row_nearest_##SUF(const TIN *src, int64_t rs, int64_t sx0, int64_t sy0, int64_t sw, \
                                int64_t sh, int64_t nx, int64_t ny, const double *xs,       \
                                const double *ys, int64_t n, TOUT *dst, TOUT *fp) {         \
    const double xmax = (double)nx - 0.5, ymax = (double)ny - 0.5;                          \
    for (int64_t k = 0; k < n; k++) {                                                        \
      double x = xs[k], y = ys[k];                                                           \
      TOUT v = (TOUT)NAN;                                                                    \
      if (x >= -0.5 && x <= xmax && y >= -0.5 && y <= ymax) {                                \
        int64_t ix = (int64_t)(x + 1.5) - 1, iy = (int64_t)(y + 1.5) - 1;                    \
        if (ix > nx - 1) ix = nx - 1;                                                         \
        if (iy > ny - 1) iy = ny - 1;                                                         \
        ix -= sx0, iy -= sy0;                                                                 \
        if (ix >= 0 && iy >= 0 && ix < sw && iy < sh)                                         \
          v = (TOUT)src[iy * rs + ix];                                                        \
      }                                                                                      \
      dst[k] = v;                                                                            \
      if (fp) fp[k] = (TOUT)(v == v);                                                        \
    }                                                                                        \
  }                                                                                          \
  static void row_bilinear_##SUF(const TIN *src, int64_t rs, int64_t sx0, int64_t sy0, int64_t sw, \
                                 int64_t sh, int64_t nx, int64_t ny, const double *xs,      \
                                 const double *ys, int64_t n, TOUT *dst, TOUT *fp) {        \
    const double xmax = (double)nx - 0.5, ymax = (double)ny - 0.5;                          \
    /* When every coordinate of the segment has its whole 2 x 2 stencil inside \
     * the image and the window (the common case), skip the per-pixel checks. \
     * A NaN coordinate (outside a projection's domain) must take the checked \
     * path: min/max comparisons skip a NaN unless it comes first, and the    \
     * unchecked path read at (int64_t)NaN (a crash on an all-sky target,    \
     * found by ASan), so the sum of the coordinates is tested too.          */ \
    {                                                                                        \
      double lx = xs[0], hx = xs[0], ly = ys[0], hy = ys[0], sum = 0.0;                      \
      for (int64_t k = 1; k < n; k++) {                                                      \
        lx = xs[k] < lx ? xs[k] : lx;                                                        \
        hx = xs[k] > hx ? xs[k] : hx;                                                        \
        ly = ys[k] < ly ? ys[k] : ly;                                                        \
        hy = ys[k] > hy ? ys[k] : hy;                                                        \
        sum += xs[k] + ys[k];                                                                \
      }                                                                                      \
      double lox = (double)(sx0 > 0 ? sx0 : 0), loy = (double)(sy0 > 0 ? sy0 : 0);           \
      double hix = (double)(sx0 + sw < nx ? sx0 + sw : nx) - 1.0;                            \
      double hiy = (double)(sy0 + sh < ny ? sy0 + sh : ny) - 1.0;                            \
      if (lx >= lox && ly >= loy && hx < hix && hy < hiy && sum == sum) {                    \
        for (int64_t k = 0; k < n; k++) {                                                    \
          double x = xs[k], y = ys[k];                                                       \
          int64_t i0 = (int64_t)x, j0 = (int64_t)y;                                          \
          double fx = x - (double)i0, fy = y - (double)j0;                                   \
          const TIN *r0 = src + (j0 - sy0) * rs + (i0 - sx0), *r1 = r0 + rs;                 \
          double a = (double)r0[0] + fx * ((double)r0[1] - (double)r0[0]);                   \
          double b = (double)r1[0] + fx * ((double)r1[1] - (double)r1[0]);                   \
          TOUT v = (TOUT)(a + fy * (b - a));                                                 \
          dst[k] = v;                                                                        \
          if (fp) fp[k] = (TOUT)(v == v);                                                    \
        }                                                                                    \
        return;                                                                              \
      }                                                                                      \
    }                                                                                        \
    for (int64_t k = 0; k < n; k++) {                                                        \
      double x = xs[k], y = ys[k];                                                           \
      TOUT v = (TOUT)NAN;                                                                    \
      if (x >= -0.5 && x <= xmax && y >= -0.5 && y <= ymax) {                                \
        int64_t i0 = (int64_t)(x + 1.0) - 1, j0 = (int64_t)(y + 1.0) - 1;                    \
        double fx = x - (double)i0, fy = y - (double)j0;                                     \
        int64_t i1 = i0 + 1, j1 = j0 + 1;                                                     \
        if (i0 < 0 || j0 < 0 || i1 > nx - 1 || j1 > ny - 1) {                                 \
          /* Clamp to the edge pixel: reproject pads by one edge pixel. */                   \
          if (i0 < 0) i0 = 0;                                                                 \
          if (j0 < 0) j0 = 0;                                                                 \
          if (i1 > nx - 1) i1 = nx - 1;                                                       \
          if (j1 > ny - 1) j1 = ny - 1;                                                       \
        }                                                                                    \
        i0 -= sx0, i1 -= sx0, j0 -= sy0, j1 -= sy0;                                           \
        if (i0 >= 0 && j0 >= 0 && i1 < sw && j1 < sh) {                                      \
          const TIN *r0 = src + j0 * rs, *r1 = src + j1 * rs;                                \
          double a = (double)r0[i0] + fx * ((double)r0[i1] - (double)r0[i0]);                \
          double b = (double)r1[i0] + fx * ((double)r1[i1] - (double)r1[i0]);                \
          /* A NaN anywhere in the 2x2 spoils even at zero weight (0 * NaN is NaN), \
           * as in scipy. */                                                                 \
          v = (TOUT)(a + fy * (b - a));                                                      \
        }                                                                                    \
      }                                                                                      \
      dst[k] = v;                                                                            \
      if (fp) fp[k] = (TOUT)(v == v);                                                        \
    }                                                                                        \
  }

/* Orders 0 and 1 when the mapping is a homography: the coordinates are
 * computed here with tsr__map_box's arithmetic (same bits) instead of being
 * written to and read back from arrays.  A projective map sends a row
 * segment to a straight segment wherever w > 0 (w is linear along the row),
 * so if both ends are interior every pixel is.  Otherwise the segment goes
 * through the checked kernel. */
#define DEFINE_HOMOG_KERNELS(TIN, TOUT, SUF)                                                  \
  static bool homog_interior_##SUF(const double *H, int64_t sx0, int64_t sy0, int64_t sw,    \
                                   int64_t sh, int64_t nx, int64_t ny, int64_t x0,           \
                                   int64_t n, double y, int order) {                         \
    double u0, v0, u1, v1;                                                                   \
    double lox = (double)(sx0 > 0 ? sx0 : 0), loy = (double)(sy0 > 0 ? sy0 : 0);             \
    double hix = (double)(sx0 + sw < nx ? sx0 + sw : nx) - 1.0;                              \
    double hiy = (double)(sy0 + sh < ny ? sy0 + sh : ny) - 1.0;                              \
    tsr__map_homog_point(H, (double)x0, y, &u0, &v0);                                        \
    tsr__map_homog_point(H, (double)(x0 + n - 1), y, &u1, &v1);                              \
    if (order == 0) /* nearest reads round(x): half a pixel more room */                    \
      lox -= 0.5, loy -= 0.5, hix += 0.5, hiy += 0.5;                                        \
    return u0 >= lox && u1 >= lox && u0 < hix && u1 < hix && v0 >= loy && v1 >= loy &&       \
           v0 < hiy && v1 < hiy;                                                             \
  }                                                                                          \
  TSR__MULTIVERSION static void homog_bilinear_##SUF(const TIN *src, int64_t rs, int64_t sx0, int64_t sy0,     \
                                   const double *H, int64_t x0, int64_t n, double y,         \
                                   TOUT *dst, TOUT *fp) {                                    \
    double bu = H[1] * y + H[2], bv = H[4] * y + H[5], bw = H[7] * y + H[8];                 \
    for (int64_t k = 0; k < n; k++) {                                                        \
      double xx = (double)(x0 + k);                                                          \
      double r = 1.0 / (H[6] * xx + bw);                                                     \
      double x = (H[0] * xx + bu) * r, yy = (H[3] * xx + bv) * r;                            \
      int64_t i0 = (int64_t)x, j0 = (int64_t)yy;                                             \
      double fx = x - (double)i0, fy = yy - (double)j0;                                      \
      const TIN *r0 = src + (j0 - sy0) * rs + (i0 - sx0), *r1 = r0 + rs;                     \
      double a = (double)r0[0] + fx * ((double)r0[1] - (double)r0[0]);                       \
      double b = (double)r1[0] + fx * ((double)r1[1] - (double)r1[0]);                       \
      TOUT v = (TOUT)(a + fy * (b - a));                                                     \
      dst[k] = v;                                                                            \
      if (fp) fp[k] = (TOUT)(v == v);                                                        \
    }                                                                                        \
  }                                                                                          \
  TSR__MULTIVERSION static void homog_nearest_##SUF(const TIN *src, int64_t rs, int64_t sx0, int64_t sy0,      \
                                  const double *H, int64_t x0, int64_t n, double y,          \
                                  TOUT *dst, TOUT *fp) {                                     \
    double bu = H[1] * y + H[2], bv = H[4] * y + H[5], bw = H[7] * y + H[8];                 \
    for (int64_t k = 0; k < n; k++) {                                                        \
      double xx = (double)(x0 + k);                                                          \
      double r = 1.0 / (H[6] * xx + bw);                                                     \
      double x = (H[0] * xx + bu) * r, yy = (H[3] * xx + bv) * r;                            \
      int64_t ix = (int64_t)(x + 1.5) - 1, iy = (int64_t)(yy + 1.5) - 1;                     \
      TOUT v = (TOUT)src[(iy - sy0) * rs + (ix - sx0)];                                      \
      dst[k] = v;                                                                            \
      if (fp) fp[k] = (TOUT)(v == v);                                                        \
    }                                                                                        \
  }

DEFINE_ROW_KERNELS(float, float, ff)
DEFINE_ROW_KERNELS(float, double, fd)
DEFINE_ROW_KERNELS(double, float, df)
DEFINE_ROW_KERNELS(double, double, dd)
DEFINE_HOMOG_KERNELS(float, float, ff)
DEFINE_HOMOG_KERNELS(float, double, fd)
DEFINE_HOMOG_KERNELS(double, float, df)
DEFINE_HOMOG_KERNELS(double, double, dd)

static void fill_plane(void *p, tsr_dtype_t dt, size_t off, int64_t n, double v) {
  if (dt == TSR_F32)
    for (int64_t k = 0; k < n; k++)
      ((float *)p)[off + (size_t)k] = (float)v;
  else
    for (int64_t k = 0; k < n; k++)
      ((double *)p)[off + (size_t)k] = v;
}

/* Orders 0 and 1 for output rows [ya, yb) of every plane, with coordinates
 * xs/ys of those rows. */
static void interp_rows(tsr__task_t *t, const tsr__window_t *w, int64_t ya, int64_t yb,
                        const double *xs, const double *ys, const double *H) {
  tsr_node_t *n = t->node;
  const interp_params_t *ip = n->params;
  const tsr_node_t *in = n->inputs[0];
  int64_t bw = t->out.stop[0] - t->out.start[0];
  int64_t sx0 = w->win.start[0], sy0 = w->win.start[1];
  int64_t sw = w->win.stop[0] - sx0, sh = w->win.stop[1] - sy0;
  size_t es_in = tsr_dtype_size(in->dtype);
  size_t es = tsr_dtype_size(n->dtype);
  bool f32in = in->dtype == TSR_F32, f32out = n->dtype == TSR_F32;

  for (int64_t q = t->out.start[3]; q < t->out.stop[3]; q++)
    for (int64_t z = t->out.start[2]; z < t->out.stop[2]; z++) {
      const char *src = (const char *)w->data +
                        (size_t)((q - w->win.start[3]) * w->stride[3] +
                                 (z - w->win.start[2]) * w->stride[2]) * es_in;
      /* Walk the band in columns of TILE_COLS so that the input pixels a
       * column of the band touches stay in L1 from one row to the next. */
      for (int64_t c0 = 0; c0 < bw; c0 += TILE_COLS)
      for (int64_t y = ya; y < yb; y++) {
        int64_t cn = bw - c0 < TILE_COLS ? bw - c0 : TILE_COLS;
        size_t off = tsr__task_offset(t, c0, y - t->out.start[1], z - t->out.start[2],
                                      q - t->out.start[3]);
        const double *xr, *yr;
        double hx[TILE_COLS], hy[TILE_COLS];
        void *d = t->planes[0] ? (char *)t->planes[0] + off * es : NULL;
        void *fp = t->planes[1] ? (char *)t->planes[1] + off * es : NULL;
        bool only_fp = d == NULL;
        if (only_fp) {
          /* Only the footprint is wanted: compute the data into its row,
           * then turn it into 0/1. */
          d = fp;
          fp = NULL;
        }
        if (H != NULL) {
          int64_t gx = t->out.start[0] + c0;
#define HCALL(SUF, TIN, TOUT)                                                                   \
  (homog_interior_##SUF(H, sx0, sy0, sw, sh, in->shape[0], in->shape[1], gx, cn, (double)y,     \
                        ip->order)                                                              \
       ? ((ip->order == 0 ? homog_nearest_##SUF : homog_bilinear_##SUF)(                        \
              (const TIN *)src, w->stride[1], sx0, sy0, H, gx, cn, (double)y, (TOUT *)d,        \
              (TOUT *)fp),                                                                      \
          true)                                                                                 \
       : false)
          bool done;
          if (f32in && f32out)
            done = HCALL(ff, float, float);
          else if (f32in)
            done = HCALL(fd, float, double);
          else if (f32out)
            done = HCALL(df, double, float);
          else
            done = HCALL(dd, double, double);
#undef HCALL
          if (done)
            goto footprint;
          for (int64_t k = 0; k < cn; k++)
            tsr__map_homog_point(H, (double)(gx + k), (double)y, &hx[k], &hy[k]);
          xr = hx, yr = hy;
        } else {
          xr = xs + (size_t)((y - ya) * bw + c0);
          yr = ys + (size_t)((y - ya) * bw + c0);
        }
#define CALL(SUF, TIN, TOUT)                                                                    \
  (ip->order == 0 ? row_nearest_##SUF : row_bilinear_##SUF)((const TIN *)src, w->stride[1], sx0, \
                                                            sy0, sw, sh,                        \
                                                            in->shape[0], in->shape[1], xr, yr, \
                                                            cn, (TOUT *)d, (TOUT *)fp)
        if (f32in && f32out)
          CALL(ff, float, float);
        else if (f32in)
          CALL(fd, float, double);
        else if (f32out)
          CALL(df, double, float);
        else
          CALL(dd, double, double);
#undef CALL
      footprint:
        if (only_fp) {
          if (f32out)
            for (int64_t k = 0; k < cn; k++)
              ((float *)d)[k] = (float)(((float *)d)[k] == ((float *)d)[k]);
          else
            for (int64_t k = 0; k < cn; k++)
              ((double *)d)[k] = (double)(((double *)d)[k] == ((double *)d)[k]);
        }
      }
    }
}

static int interp_compute(tsr__task_t *t) {
  tsr_node_t *n = t->node;
  const interp_params_t *ip = n->params;
  interp_state_t *st = t->state;
  const tsr__window_t *w = &t->in[0];
  const tsr_node_t *in = n->inputs[0];
  int64_t x0 = t->out.start[0], x1 = t->out.stop[0], y0 = t->out.start[1], y1 = t->out.stop[1];
  int64_t bw = x1 - x0, bh = y1 - y0;
  /* Orders 0/1 map and interpolate BAND rows at a time so the coordinates
   * stay in cache; splines evaluate the whole box per plane after building
   * that plane's coefficients. */
  int64_t band = ip->order >= 2 ? bh : BAND_ROWS;
  size_t npix = (size_t)bw * (size_t)(band < bh ? band : bh);
  int rc;

  if (w->data == NULL) {
    for (int64_t q = t->out.start[3]; q < t->out.stop[3]; q++)
      for (int64_t z = t->out.start[2]; z < t->out.stop[2]; z++)
        for (int64_t y = 0; y < bh; y++) {
          size_t off = tsr__task_offset(t, 0, y, z - t->out.start[2], q - t->out.start[3]);
          if (t->planes[0])
            fill_plane(t->planes[0], n->dtype, off, bw, NAN);
          if (t->planes[1])
            fill_plane(t->planes[1], n->dtype, off, bw, 0.0);
        }
    return 0;
  }
  if (npix > st->cap) {
    tsr__free(t->ctx, st->xin);
    tsr__free(t->ctx, st->yin);
    st->xin = tsr__mallocarray(t->ctx, npix, sizeof(double));
    st->yin = tsr__mallocarray(t->ctx, npix, sizeof(double));
    st->cap = st->xin && st->yin ? npix : 0;
    if (st->cap == 0)
      return tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory for coordinates", n->name);
  }

  if (ip->order <= 1) {
    double H[9];
    if (tsr__map_homography(st->base.map, H)) {
      for (int64_t ya = y0, yb; ya < y1; ya = yb) {
        yb = (ya / BAND_ROWS + 1) * BAND_ROWS < y1 ? (ya / BAND_ROWS + 1) * BAND_ROWS : y1;
        interp_rows(t, w, ya, yb, NULL, NULL, H);
      }
      return 0;
    }
    /* Bands end on multiples of BAND_ROWS, so they never split a grid cell. */
    for (int64_t ya = y0; ya < y1;) {
      int64_t yb = (ya / BAND_ROWS + 1) * BAND_ROWS;
      if (yb > y1)
        yb = y1;
      if ((rc = tsr__map_box(st->base.map, x0, x1, ya, yb, st->xin, st->yin)) != 0)
        return rc;
      interp_rows(t, w, ya, yb, st->xin, st->yin, NULL);
      ya = yb;
    }
    return 0;
  }

  if ((rc = tsr__map_box(st->base.map, x0, x1, y0, y1, st->xin, st->yin)) != 0)
    return rc;
  {
    size_t es_in = tsr_dtype_size(in->dtype);

    for (int64_t q = t->out.start[3]; q < t->out.stop[3]; q++)
      for (int64_t z = t->out.start[2]; z < t->out.stop[2]; z++) {
        const char *src = (const char *)w->data +
                          (size_t)((q - w->win.start[3]) * w->stride[3] +
                                   (z - w->win.start[2]) * w->stride[2]) * es_in;
        rc = tsr__spline_run(t->ctx, &st->spline, ip->order, src, w->stride[1], in->dtype,
                             w->big_endian, &w->win, in->shape,
                             st->xin, st->yin, bw, bh, t, z - t->out.start[2], q - t->out.start[3],
                             q * in->shape[2] + z);
        if (rc != 0)
          break;
      }
  }
  return rc;
}

/* The spline orders copy the window into their tiles anyway, so they read
 * a FITS input in place (tsr__op_t.view) rather than a copy of it. */
static bool interp_takes_view(const tsr_node_t *n, int i) {
  const interp_params_t *ip = n->params;
  (void)i;
  return ip->order >= 2;
}

static const tsr__op_t interp_op = {
    .name = "reproject_interp",
    .version = 1,
    .flags = TSR__OP_SUBBOX | TSR__OP_REPROJECT,
    .input_region = interp_input_region,
    .start = interp_start,
    .stop = interp_stop,
    .compute = interp_compute,
    .encode = params_encode,
    .free_params = tsr__reproject_params_free,
    .takes_view = interp_takes_view,
};

int tsr_order_parse(const char *s) {
  static const char *const names[] = {"nearest-neighbor", "bilinear", "biquadratic", "bicubic"};
  if (s == NULL)
    return -1;
  for (int i = 0; i < 4; i++)
    if (strcmp(s, names[i]) == 0)
      return i;
  if (strcmp(s, "nearest") == 0)
    return 0;
  if (s[0] >= '0' && s[0] <= '3' && s[1] == '\0')
    return s[0] - '0';
  return -1;
}

const char *tsr_order_name(tsr_order_t order) {
  static const char *const names[] = {"nearest-neighbor", "bilinear", "biquadratic", "bicubic"};
  return (int)order >= 0 && order <= 3 ? names[order] : "unknown";
}

tsr_node_t *tsr_reproject_interp(tsr_graph_t *g, tsr_node_t *src, const tsr_wcs_t *target,
                                 const tsr_interp_opts_t *opts) {
  tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
  interp_params_t *ip;

  if (!tsr__graph_check(g))
    return NULL;
  if (opts)
    o = *opts;
  if ((int)o.order < 0 || o.order > 3)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "reproject_interp: order %d out of range [0, 3] (nearest-neighbor, "
                           "bilinear, biquadratic, bicubic)",
                           o.order);
  if (!(o.mapping_tolerance >= 0.0 && o.mapping_tolerance <= 1.0))
    return tsr__graph_fail(g, TSR_EINVAL,
                           "reproject_interp: mapping tolerance %g px out of range [0, 1]",
                           o.mapping_tolerance);
  if (!tsr__reproject_check(g, "reproject_interp", src, target, o.dtype, o.block))
    return NULL;
  ip = tsr__reproject_params_new(g, "reproject_interp", sizeof *ip, src, target,
                                 o.mapping_tolerance, o.roundtrip != 0);
  if (ip == NULL)
    return NULL;
  ip->order = o.order;
  return tsr__reproject_node(g, &interp_op, ip, src, target, o.dtype, o.block);
}
