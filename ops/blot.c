/* blot.c -- drizzle's blot (tsr_blot): a drizzled image interpolated back
 * onto an input's grid, as STScI's drizzle 1.13 computes it.
 *
 * Each output pixel centre is mapped into the source image (drizzle's
 * pixmap of the blotted grid, here a tsr__map_t with the node's tolerance),
 * taken to float as drizzle does, and, when it falls on the source
 * ([0, n) on both axes), the source is interpolated there and the value
 * multiplied by exptime / scale^2 (scale: source pixel scale over the
 * output's, drizzle's pix_ratio); elsewhere the output is misval.  The
 * interpolants are drizzle's, in its float arithmetic: nearest, bilinear
 * (drizzle's edge cases: the last column or row interpolates along the
 * other axis only), IRAF's cubic and quintic polynomials in Everett's
 * central-difference form with drizzle's reflection of rows and columns
 * past the edges (2 p(edge) - p(mirror)), and Lanczos3/5 from drizzle's
 * 2048-entry table over a 7 x 7 box without renormalisation, misval within
 * 3 pixels of an edge.  "sinc" is the tapered sinc drizzle's comments
 * describe (15 x 15 pixels, taper (1 - 0.4967 x^2 + 0.03705 x^4)^2, rows
 * and columns past the edges taken from the edge), normalised by the
 * kernel sums: drizzle 1.13's own sinc indexes outside its arrays, so its
 * values cannot be reproduced (drizzle 2.2 warns against it).  Where
 * drizzle's quintic reaches for a row past the last one it reads the row 3
 * above the last, and its cubic reflects past the last row; both are kept.
 *
 * Values at a pixel depend only on the source pixels within 8 of its
 * mapped centre and on the image's edges, so a block reads its boundary's
 * inverse window grown by 9 pixels and any block size gives the same bits.
 * The blotted grid's distortions (SIP) are part of its mapping here;
 * drizzle 1.13's doblot drops them (blot_wcs.sip = None) before building
 * its pixmap.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "drizzle.h"
#include "mapping.h"
#include "reproject.h"
#include "sky.h"

#define HALO 9
#define LUT_N 2048
#define LUT_SPACE 0.01f
#define NSINC 7

typedef struct {
  tsr_wcs_t *target;
  tsr_blot_opts_t o;
  float scale2;            /* (source pscale / target pscale)^2, float as drizzle's */
  float lut[LUT_N];        /* Lanczos table (lan3, lan5) */
  char in_what[160];
} blot_params_t;

typedef struct {
  tsr__map_t *map;         /* target pixel -> source pixel */
  double *xs, *ys;
  size_t cap;
} blot_state_t;

static void params_free(tsr_ctx_t *ctx, void *p) {
  blot_params_t *bp = p;
  if (bp == NULL)
    return;
  tsr_wcs_free(bp->target);
  tsr__free(ctx, bp);
}

static void params_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const blot_params_t *bp = n->params;
  tsr__buf_put_i64(b, (int64_t)bp->o.interp);
  tsr__buf_put_f64(b, bp->o.sinscl);
  tsr__buf_put_f64(b, bp->o.exptime);
  tsr__buf_put_f64(b, bp->o.misval);
  tsr__buf_put_f64(b, bp->o.mapping_tolerance);
  tsr__wcs_encode(bp->target, b);
}

static int blot_start(tsr_node_t *n, void **state) {
  tsr_ctx_t *ctx = n->graph->ctx;
  blot_params_t *bp = n->params;
  blot_state_t *st = tsr__calloc(ctx, 1, sizeof *st);
  int rc;
  *state = NULL;
  if (st == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "%s: out of memory", n->name);
  if ((rc = tsr__map_new(ctx, bp->target, "target", n->inputs[0]->wcs, bp->in_what,
                         bp->o.mapping_tolerance, false, &st->map)) != 0) {
    tsr__free(ctx, st);
    return rc;
  }
  *state = st;
  return 0;
}

static void blot_stop(tsr_node_t *n, void *state) {
  blot_state_t *st = state;
  tsr_ctx_t *ctx = n->graph->ctx;
  if (st == NULL)
    return;
  tsr__map_free(st->map);
  tsr__free(ctx, st->xs);
  tsr__free(ctx, st->ys);
  tsr__free(ctx, st);
}

static int blot_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                             tsr_region_t *win, bool *empty) {
  blot_state_t *st = state;
  return tsr__reproject_window(st->map, out, 1, n->inputs[i], HALO, win, empty);
}

/* The source as the interpolants see it: global pixel indices, read from
 * the window (indices clamped into it, which only an interpolant reaching
 * past HALO could need). */
typedef struct {
  const tsr__window_t *w;
  int64_t nx, ny;          /* the source image */
} src_t;

static inline float px(const src_t *s, int64_t i, int64_t j) {
  const tsr__window_t *w = s->w;
  if (i < w->win.start[0]) i = w->win.start[0];
  if (i >= w->win.stop[0]) i = w->win.stop[0] - 1;
  if (j < w->win.start[1]) j = w->win.start[1];
  if (j >= w->win.stop[1]) j = w->win.stop[1] - 1;
  return (float)tsr__window_value(w, (size_t)((j - w->win.start[1]) * w->stride[1] +
                                              (i - w->win.start[0])));
}

/* Column i of row j, mirrored about the image's first and last columns
 * (drizzle's 2 p(edge) - p(mirror)). */
static inline float px_reflect_x(const src_t *s, int64_t i, int64_t j) {
  if (i < 0)
    return 2.0f * px(s, 0, j) - px(s, -i, j);
  if (i >= s->nx)
    return 2.0f * px(s, s->nx - 1, j) - px(s, 2 * s->nx - 2 - i, j);
  return px(s, i, j);
}

static inline void wsum(int n, const float *a, const float *b, float *c) {
  for (int k = 0; k < n; k++)
    c[k] = a[k] * 2.0f + b[k] * -1.0f;
}

/* Everett's central-difference interpolation at fraction s between q[1]
 * and q[2] (cubic) or q[2] and q[3] (quintic), in drizzle's float
 * arithmetic (its ii_bipoly3 and ii_bipoly5, along rows and then along the
 * column of their results). */
static inline float everett3(const float q[4], float s) {
  float t = 1.0f - s;
  float cd20 = 1.0f / 6.0f * (q[2] - 2.0f * q[1] + q[0]);
  float cd21 = 1.0f / 6.0f * (q[3] - 2.0f * q[2] + q[1]);
  return s * (q[2] + (s * s - 1.0f) * cd21) + t * (q[1] + (t * t - 1.0f) * cd20);
}

static inline float everett5(const float q[6], float s) {
  float t = 1.0f - s, s2 = s * s, t2 = t * t;
  float cd20 = 1.0f / 6.0f * (q[3] - 2.0f * q[2] + q[1]);
  float cd21 = 1.0f / 6.0f * (q[4] - 2.0f * q[3] + q[2]);
  float cd40 = 1.0f / 120.0f * (q[0] - 4.0f * q[1] + 6.0f * q[2] - 4.0f * q[3] + q[4]);
  float cd41 = 1.0f / 120.0f * (q[1] - 4.0f * q[2] + 6.0f * q[3] - 4.0f * q[4] + q[5]);
  return s * (q[3] + (s2 - 1.0f) * (cd21 + (s2 - 4.0f) * cd41)) +
         t * (q[2] + (t2 - 1.0f) * (cd20 + (t2 - 4.0f) * cd40));
}

static float poly3(const src_t *s, float x, float y) {
  float c[4][4];
  int64_t nx = (int64_t)x, ny = (int64_t)y;
  memset(c, 0, sizeof c);
  for (int r = 0; r < 4; r++) {
    int64_t j = ny - 1 + r;
    if (j >= 0 && j < s->ny)
      for (int q = 0; q < 4; q++)
        c[r][q] = px_reflect_x(s, nx - 1 + q, j);
  }
  int firstw = 1 - ny > 0 ? (int)(1 - ny) : 0;
  for (int r = 0; r < firstw; r++)
    wsum(4, c[firstw], c[2 * firstw - r], c[r]);
  int64_t lr = s->ny - ny < 3 ? s->ny - ny : 3;
  for (int64_t r = lr + 1; r <= 3; r++) {
    int64_t m = 2 * lr - r;
    wsum(4, c[lr], c[m < 0 ? 0 : m], c[r]);
  }
  float xv = 2.0f + (x - (float)nx), yv = 2.0f + (y - (float)ny), z[4];
  float sx = xv - (float)(int)xv, sy = yv - (float)(int)yv;
  for (int r = 0; r < 4; r++)
    z[r] = everett3(c[r], sx);
  return everett3(z, sy);
}

static float poly5(const src_t *s, float x, float y) {
  float c[6][6];
  int64_t nx = (int64_t)x, ny = (int64_t)y;
  memset(c, 0, sizeof c);
  for (int r = 0; r < 6; r++) {
    int64_t j = ny - 2 + r;
    if (j >= 0 && j < s->ny) {
      for (int q = 0; q < 6; q++)
        c[r][q] = px_reflect_x(s, nx - 2 + q, j);
    } else if (r == 5) {
      /* drizzle reads the row three above the last for this one. */
      for (int q = 0; q < 6; q++)
        c[r][q] = px_reflect_x(s, nx - 2 + q, s->ny - 4 < 0 ? 0 : s->ny - 4);
    }
  }
  int firstw = 2 - ny > 0 ? (int)(2 - ny) : 0;
  for (int r = 0; firstw > 0 && r <= firstw; r++)
    wsum(6, c[firstw], c[2 * firstw - r], c[r]);
  int64_t lr = s->ny - ny + 1 < 5 ? s->ny - ny + 1 : 5;
  for (int64_t r = lr + 1; r <= 4; r++) {
    int64_t m = 2 * lr - r;
    wsum(6, c[lr], c[m < 0 ? 0 : m], c[r]);
  }
  float xv = 3.0f + (x - (float)nx), yv = 3.0f + (y - (float)ny), z[6];
  float sx = xv - (float)(int)xv, sy = yv - (float)(int)yv;
  for (int r = 0; r < 6; r++)
    z[r] = everett5(c[r], sx);
  return everett5(z, sy);
}

static float bilinear(const src_t *s, float x, float y) {
  int64_t nx = (int64_t)x, ny = (int64_t)y;
  float f00 = px(s, nx, ny);
  if (nx == s->nx - 1) {
    if (ny == s->ny - 1)
      return f00;
    float sy = y - (float)ny;
    return (1.0f - sy) * f00 + sy * px(s, nx, ny + 1);
  }
  if (ny == s->ny - 1) {
    float sx = x - (float)nx;
    return (1.0f - sx) * f00 + sx * px(s, nx + 1, ny);
  }
  float sx = x - (float)nx, tx = 1.0f - sx, sy = y - (float)ny, ty = 1.0f - sy;
  return tx * ty * f00 + sx * ty * px(s, nx + 1, ny) + sy * tx * px(s, nx, ny + 1) +
         sx * sy * px(s, nx + 1, ny + 1);
}

static float lanczos(const src_t *s, const float *lut, float misval, float x, float y) {
  int64_t ixs = (int64_t)x - 3, ixe = (int64_t)x + 3, iys = (int64_t)y - 3, iye = (int64_t)y + 3;
  float sum = 0.0f;
  if (ixs < 0 || ixe >= s->nx || iys < 0 || iye >= s->ny)
    return misval;
  for (int64_t j = iys; j <= iye; j++) {
    int64_t yo = (int64_t)fabs((y - (float)j) / LUT_SPACE);
    float luty = yo < LUT_N ? lut[yo] : 0.0f;
    for (int64_t i = ixs; i <= ixe; i++) {
      int64_t xo = (int64_t)fabs((x - (float)i) / LUT_SPACE);
      sum += px(s, i, j) * (xo < LUT_N ? lut[xo] : 0.0f) * luty;
    }
  }
  return sum;
}

static float sinc(const src_t *s, float sinscl, float x, float y) {
  const float a2 = -0.49670f, a4 = 0.03705f;
  const float sconst = powf(1.5707963267948966192f / (float)NSINC, 2.0f);
  float taper[2 * NSINC + 1], ac[2 * NSINC + 1], ar[2 * NSINC + 1];
  float sdx = -1.0f, sumx = 0.0f, sumy = 0.0f, value = 0.0f;
  int64_t nx = tsr__nint(x), ny = tsr__nint(y);
  if (nx < 0 || nx >= s->nx || ny < 0 || ny >= s->ny)
    return 0.0f;
  float dx = (x - (float)nx) * sinscl, dy = (y - (float)ny) * sinscl;
  if (fabsf(dx) < 0.001f && fabsf(dy) < 0.001f)
    return px(s, nx, ny);
  for (int m = -NSINC; m <= NSINC; m++) {
    float dx2 = sconst * (float)m * (float)m;
    float t = 1.0f + a2 * dx2 + a4 * dx2 * dx2;
    taper[m + NSINC] = sdx * t * t;
    sdx = -sdx;
  }
  for (int m = -NSINC; m <= NSINC; m++) {
    float ax = dx - (float)m, ay = dy - (float)m;
    ac[m + NSINC] = dx == 0.0f ? (m == 0 ? 1.0f : 0.0f) : taper[m + NSINC] / ax;
    ar[m + NSINC] = dy == 0.0f ? (m == 0 ? 1.0f : 0.0f) : taper[m + NSINC] / ay;
    sumx += ac[m + NSINC];
    sumy += ar[m + NSINC];
  }
  for (int n = -NSINC; n <= NSINC; n++) {
    int64_t j = ny + n < 0 ? 0 : ny + n >= s->ny ? s->ny - 1 : ny + n;
    float sum = 0.0f;
    for (int m = -NSINC; m <= NSINC; m++) {
      int64_t i = nx + m < 0 ? 0 : nx + m >= s->nx ? s->nx - 1 : nx + m;
      sum += ac[m + NSINC] * px(s, i, j);
    }
    value += ar[n + NSINC] * sum;
  }
  return value / sumx / sumy;
}

static int blot_compute(tsr__task_t *t) {
  tsr_node_t *n = t->node;
  const blot_params_t *bp = n->params;
  blot_state_t *st = t->state;
  int64_t x0 = t->out.start[0], x1 = t->out.stop[0], y0 = t->out.start[1], y1 = t->out.stop[1];
  int64_t bw = x1 - x0, bh = y1 - y0;
  size_t nb = (size_t)bw * (size_t)bh;
  src_t s = {&t->in[0], n->inputs[0]->shape[0], n->inputs[0]->shape[1]};
  float misval = (float)bp->o.misval, ef = (float)bp->o.exptime;
  int rc;

  if (t->planes[0] == NULL)
    return 0;
  if (nb > st->cap) {
    double *a = tsr__mallocarray(t->ctx, nb, sizeof(double));
    double *b = tsr__mallocarray(t->ctx, nb, sizeof(double));
    if (a == NULL || b == NULL) {
      tsr__free(t->ctx, a);
      tsr__free(t->ctx, b);
      return tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory for a %lld x %lld block", n->name,
                      (long long)bw, (long long)bh);
    }
    tsr__free(t->ctx, st->xs);
    tsr__free(t->ctx, st->ys);
    st->xs = a, st->ys = b, st->cap = nb;
  }
  if (s.w->data != NULL && (rc = tsr__map_box(st->map, x0, x1, y0, y1, st->xs, st->ys)) != 0)
    return rc;
  for (int64_t y = 0; y < bh; y++) {
    float *row = (float *)t->planes[0] + tsr__task_offset(t, 0, y, 0, 0);
    for (int64_t x = 0; x < bw; x++) {
      size_t o = (size_t)(y * bw + x);
      float xo, yo, v;
      if (s.w->data == NULL) {
        row[x] = misval;
        continue;
      }
      xo = (float)st->xs[o];
      yo = (float)st->ys[o];
      if (!(xo >= 0.0f && xo < (float)s.nx && yo >= 0.0f && yo < (float)s.ny)) {
        row[x] = misval;
        continue;
      }
      switch (bp->o.interp) {
      case TSR_BLOT_NEAREST: {
        int64_t i = (int64_t)(xo + 0.5), j = (int64_t)(yo + 0.5);
        v = px(&s, i < s.nx ? i : s.nx - 1, j < s.ny ? j : s.ny - 1);
        break;
      }
      case TSR_BLOT_LINEAR: v = bilinear(&s, xo, yo); break;
      case TSR_BLOT_POLY3: v = poly3(&s, xo, yo); break;
      case TSR_BLOT_POLY5: v = poly5(&s, xo, yo); break;
      case TSR_BLOT_SINC: v = sinc(&s, (float)bp->o.sinscl, xo, yo); break;
      default:
        /* Lanczos: misval within 3 pixels of an edge, scaled below as
         * drizzle scales whatever its interpolant returned. */
        v = lanczos(&s, bp->lut, misval, xo, yo);
        break;
      }
      row[x] = v * ef / bp->scale2;
    }
  }
  return 0;
}

static const tsr__op_t blot_op = {
    .name = "blot",
    .version = 1,
    .flags = 0,
    .input_region = blot_input_region,
    .start = blot_start,
    .stop = blot_stop,
    .compute = blot_compute,
    .encode = params_encode,
    .free_params = params_free,
};

static const char *const interp_names[] = {"nearest", "linear", "poly3", "poly5",
                                           "sinc", "lan3", "lan5"};

int tsr_blot_interp_parse(const char *s) {
  if (s == NULL)
    return -1;
  for (int k = 0; k < 7; k++)
    if (strcmp(s, interp_names[k]) == 0)
      return k;
  return -1;
}

const char *tsr_blot_interp_name(tsr_blot_interp_t i) {
  return (int)i >= 0 && (int)i < 7 ? interp_names[i] : "unknown";
}

tsr_node_t *tsr_blot(tsr_graph_t *g, tsr_node_t *src, const tsr_wcs_t *target,
                     const tsr_blot_opts_t *opts) {
  tsr_blot_opts_t o = TSR_BLOT_OPTS_INIT;
  blot_params_t *bp;
  tsr_ctx_t *ctx;
  tsr__cel_t *ci = NULL, *co = NULL;
  double si[2], so[2];
  tsr_node_t *n;
  int rc;

  if (!tsr__graph_check(g))
    return NULL;
  ctx = g->ctx;
  if (opts)
    o = *opts;
  if ((int)o.interp < 0 || (int)o.interp > TSR_BLOT_LAN5)
    return tsr__graph_fail(g, TSR_EINVAL, "blot: interp %d is not a tsr_blot_interp_t (0 nearest "
                           ".. 6 lan5)", (int)o.interp);
  if (!(o.sinscl > 0 && isfinite(o.sinscl)) || !(o.exptime > 0 && isfinite(o.exptime)) ||
      !isfinite(o.misval))
    return tsr__graph_fail(g, TSR_EINVAL, "blot: sinscl %g, exptime %g, misval %g; expected "
                           "sinscl > 0, exptime > 0 and a finite misval", o.sinscl, o.exptime,
                           o.misval);
  if (!(o.mapping_tolerance >= 0.0 && o.mapping_tolerance <= 1.0))
    return tsr__graph_fail(g, TSR_EINVAL, "blot: mapping tolerance %g out of range [0, 1] pixel",
                           o.mapping_tolerance);
  if (!tsr__reproject_check(g, "blot", src, target, 0, o.block))
    return NULL;
  for (int a = 2; a < src->ndim; a++)
    if (src->shape[a] > 1)
      return tsr__graph_fail(g, TSR_EINVAL, "blot: input %s has %d axes (NAXIS%d = %lld); "
                             "expected a 2-D image", src->name, src->ndim, a + 1,
                             (long long)src->shape[a]);
  if ((rc = tsr__cel_new(ctx, src->wcs, src->name, &ci)) != 0 ||
      (rc = tsr__cel_new(ctx, target, "target", &co)) != 0) {
    tsr__cel_free(ci);
    tsr__err_prefix(ctx, "blot");
    return tsr__graph_fail_ctx(g, rc);
  }
  tsr__cel_scales(ci, si);
  tsr__cel_scales(co, so);
  tsr__cel_free(ci);
  tsr__cel_free(co);
  if ((bp = tsr__calloc(ctx, 1, sizeof *bp)) == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "blot: out of memory");
  bp->o = o;
  {
    double scale = si[0] / so[0];
    bp->scale2 = (float)(scale * scale);
  }
  if (o.interp == TSR_BLOT_LAN3 || o.interp == TSR_BLOT_LAN5)
    tsr__drizzle_lanczos_lut(o.interp == TSR_BLOT_LAN3 ? 3 : 5, LUT_N, LUT_SPACE,
                             bp->lut);
  snprintf(bp->in_what, sizeof bp->in_what, "input %s", src->name);
  if (tsr_wcs_copy(ctx, target, &bp->target) != 0) {
    params_free(ctx, bp);
    return tsr__graph_fail(g, TSR_ENOMEM, "blot: out of memory");
  }
  if ((n = tsr__node_alloc(g, &blot_op, bp)) == NULL)
    return NULL;
  n->ndim = 2;
  n->n_inputs = 1;
  n->inputs[0] = src;
  n->n_planes = 1;
  n->dtype = TSR_F32;
  n->shape[0] = target->shape[0];
  n->shape[1] = target->shape[1];
  n->chunk[0] = o.block[0] ? o.block[0] : TSR__DEFAULT_BLOCK;
  n->chunk[1] = o.block[1] ? o.block[1] : TSR__DEFAULT_BLOCK;
  if (tsr_wcs_copy(ctx, target, &n->wcs) != 0) {
    tsr__node_discard(n);
    return tsr__graph_fail(g, TSR_ENOMEM, "blot: out of memory");
  }
  return tsr__node_finish(n);
}
