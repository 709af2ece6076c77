/* slice.c -- views that move pixels without changing them: slices with
 * steps, WCS cutouts and crops, stacks and concatenations.
 *
 * Each keeps the header right: a slice shifts CRPIX (and scales the axis's
 * column of the linear transform by the step) so that every pixel keeps its
 * world position, which is also what a cutout and a crop to another image's
 * footprint are made of.  A block reads only the input pixels it copies.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sky.h"

/* ------------------------------------------------------------------ */
/* Slices                                                              */

typedef struct {
  int64_t start[TSR_MAX_DIMS], step[TSR_MAX_DIMS];
} slice_params_t;

static void plain_free(tsr_ctx_t *ctx, void *p) { tsr__free(ctx, p); }

static void slice_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const slice_params_t *p = n->params;
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    tsr__buf_put_i64(b, p->start[a]);
    tsr__buf_put_i64(b, p->step[a]);
  }
}

static int slice_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                              tsr_region_t *win, bool *empty) {
  const slice_params_t *p = n->params;
  (void)state, (void)i;
  *empty = false;
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    win->start[a] = p->start[a] + out->start[a] * p->step[a];
    win->stop[a] = p->start[a] + (out->stop[a] - 1) * p->step[a] + 1;
  }
  return 0;
}

static void copy_value(const tsr__task_t *t, size_t dst, const tsr__window_t *w, size_t src) {
  double v = tsr__window_value(w, src);
  if (t->node->dtype == TSR_F32)
    ((float *)t->planes[0])[dst] = (float)v;
  else
    ((double *)t->planes[0])[dst] = v;
}

static int slice_compute(tsr__task_t *t) {
  const slice_params_t *p = t->node->params;
  const tsr__window_t *w = &t->in[0];
  const tsr_region_t *r = &t->out;
  for (int64_t q = 0; q < r->stop[3] - r->start[3]; q++)
    for (int64_t z = 0; z < r->stop[2] - r->start[2]; z++)
      for (int64_t y = 0; y < r->stop[1] - r->start[1]; y++) {
        size_t dst = tsr__task_offset(t, 0, y, z, q);
        size_t src = (size_t)(y * p->step[1] * w->stride[1] + z * p->step[2] * w->stride[2] +
                              q * p->step[3] * w->stride[3]);
        for (int64_t x = 0; x < r->stop[0] - r->start[0]; x++)
          copy_value(t, dst + (size_t)x, w, src + (size_t)(x * p->step[0]));
      }
  return 0;
}

static const tsr__op_t slice_op = {
    .name = "slice",
    .version = 1,
    .flags = TSR__OP_SUBBOX,
    .input_region = slice_input_region,
    .compute = slice_compute,
    .encode = slice_encode,
    .free_params = plain_free,
};

tsr_node_t *tsr_slice(tsr_graph_t *g, tsr_node_t *a, const int64_t *start, const int64_t *stop,
                      const int64_t *step) {
  slice_params_t *p;
  tsr_node_t *n;
  int64_t shape[TSR_MAX_DIMS];

  if (!tsr__graph_check(g))
    return NULL;
  if (a == NULL)
    return tsr__graph_fail(g, TSR_EINVAL, "slice: input is NULL");
  for (int ax = 0; ax < TSR_MAX_DIMS; ax++) {
    /* The arrays hold a->ndim entries: read no further. */
    int64_t s0 = 0, s1 = a->shape[ax], st = 1;
    if (ax < a->ndim) {
      s0 = start ? start[ax] : 0;
      s1 = stop ? stop[ax] : a->shape[ax];
      st = step ? step[ax] : 1;
    }
    if (st < 1)
      return tsr__graph_fail(g, TSR_EINVAL, "slice: step %lld on axis %d; expected >= 1",
                             (long long)st, ax + 1);
    if (s0 < 0 || s1 > a->shape[ax] || s1 <= s0)
      return tsr__graph_fail(g, TSR_EINVAL,
                             "slice: [%lld, %lld) on axis %d of %s; expected 0 <= start < stop <= "
                             "%lld",
                             (long long)s0, (long long)s1, ax + 1, a->name,
                             (long long)a->shape[ax]);
    shape[ax] = (s1 - s0 + st - 1) / st;
  }
  p = tsr__calloc(g->ctx, 1, sizeof *p);
  if (p == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "slice: out of memory");
  for (int ax = 0; ax < TSR_MAX_DIMS; ax++) {
    p->start[ax] = ax < a->ndim && start ? start[ax] : 0;
    p->step[ax] = ax < a->ndim && step ? step[ax] : 1;
  }
  n = tsr__node_alloc(g, &slice_op, p);
  if (n == NULL)
    return NULL;
  n->n_inputs = 1;
  n->inputs[0] = a;
  n->ndim = a->ndim;
  n->dtype = a->dtype;
  memcpy(n->shape, shape, sizeof shape);
  for (int ax = 0; ax < TSR_MAX_DIMS; ax++)
    n->chunk[ax] = a->chunk[ax] < shape[ax] ? a->chunk[ax] : shape[ax];
  if (a->wcs) {
    if (tsr_wcs_copy(g->ctx, a->wcs, &n->wcs) != 0) {
      tsr__node_discard(n);
      return tsr__graph_fail(g, TSR_ENOMEM, "slice: out of memory");
    }
    for (int ax = 0; ax < a->ndim && ax < n->wcs->naxis; ax++)
      if (tsr__wcs_slice_axis(n->wcs, ax, p->start[ax], p->step[ax], shape[ax]) != 0) {
        tsr__node_discard(n);
        return tsr__graph_fail(g, TSR_ENOMEM, "slice: out of memory");
      }
  }
  return tsr__node_finish(n);
}

/* The pixel of a's WCS at (lon, lat) degrees in its own frame. */
static int world_to_pixel(tsr_graph_t *g, const tsr_node_t *a, const char *op, size_t np,
                          const double *lon, const double *lat, double *x, double *y) {
  tsr__cel_t *c = NULL;
  double v[3 * 64];
  if (a->wcs == NULL)
    return tsr__graph_fail(g, TSR_EWCS, "%s: %s has no WCS", op, a->name), TSR_EWCS;
  {
    int rc = tsr__cel_new(g->ctx, a->wcs, a->name, &c);
    if (rc != 0) {
      tsr__err_prefix(g->ctx, "%s", op);
      tsr__graph_fail_ctx(g, rc);
      return rc;
    }
  }
  for (size_t k = 0; k < np; k++) {
    double l = lon[k] * M_PI / 180, b = lat[k] * M_PI / 180;
    v[3 * k] = cos(b) * cos(l), v[3 * k + 1] = cos(b) * sin(l), v[3 * k + 2] = sin(b);
  }
  tsr__cel_vec2pix(c, np, v, x, y);
  tsr__cel_free(c);
  return 0;
}

tsr_node_t *tsr_cutout(tsr_graph_t *g, tsr_node_t *a, double lon, double lat, int64_t width,
                       int64_t height) {
  double x, y;
  int64_t start[TSR_MAX_DIMS] = {0, 0, 0, 0}, stop[TSR_MAX_DIMS];
  if (!tsr__graph_check(g))
    return NULL;
  if (a == NULL || width < 1 || height < 1)
    return tsr__graph_fail(g, TSR_EINVAL, "cutout: expected an input and a size of at least 1 x 1");
  if (world_to_pixel(g, a, "cutout", 1, &lon, &lat, &x, &y) != 0)
    return NULL;
  if (!(isfinite(x) && isfinite(y)))
    return tsr__graph_fail(g, TSR_EWCS, "cutout: (%g, %g) has no pixel in %s", lon, lat, a->name);
  for (int ax = 0; ax < TSR_MAX_DIMS; ax++)
    stop[ax] = a->shape[ax];
  /* Centred as astropy's Cutout2D: the box of `width` pixels around round(x). */
  start[0] = (int64_t)floor(x + 0.5) - width / 2, stop[0] = start[0] + width;
  start[1] = (int64_t)floor(y + 0.5) - height / 2, stop[1] = start[1] + height;
  if (start[0] >= a->shape[0] || start[1] >= a->shape[1] || stop[0] <= 0 || stop[1] <= 0)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "cutout: the %lld x %lld box at (%g, %g) misses %s (%lld x %lld)",
                           (long long)width, (long long)height, lon, lat, a->name,
                           (long long)a->shape[0], (long long)a->shape[1]);
  for (int ax = 0; ax < 2; ax++) {
    start[ax] = start[ax] < 0 ? 0 : start[ax];
    stop[ax] = stop[ax] > a->shape[ax] ? a->shape[ax] : stop[ax];
  }
  return tsr_slice(g, a, start, stop, NULL);
}

tsr_node_t *tsr_crop_to(tsr_graph_t *g, tsr_node_t *a, const tsr_wcs_t *box) {
  tsr__cel_t *c = NULL;
  double px[44], py[44], v[44 * 3], lon[44], lat[44], x[44], y[44];
  double lo[2] = {INFINITY, INFINITY}, hi[2] = {-INFINITY, -INFINITY};
  int64_t start[TSR_MAX_DIMS] = {0, 0, 0, 0}, stop[TSR_MAX_DIMS];
  tsr__cel_t *ca = NULL;

  if (!tsr__graph_check(g))
    return NULL;
  if (a == NULL || box == NULL || a->wcs == NULL)
    return tsr__graph_fail(g, TSR_EINVAL, "crop: expected an input with a WCS and a box WCS");
  {
    int rc = tsr__cel_new(g->ctx, box, "crop box", &c);
    if (rc == 0)
      rc = tsr__cel_new(g->ctx, a->wcs, a->name, &ca);
    if (rc != 0) {
      tsr__cel_free(c);
      tsr__err_prefix(g->ctx, "crop");
      return tsr__graph_fail_ctx(g, rc);
    }
  }
  /* The box image's edges, 11 points each, into a's frame and pixels. */
  for (int k = 0; k < 11; k++) {
    double fx = -0.5 + (double)box->shape[0] * k / 10.0, fy = -0.5 + (double)box->shape[1] * k / 10.0;
    px[k] = fx, py[k] = -0.5;
    px[11 + k] = fx, py[11 + k] = (double)box->shape[1] - 0.5;
    px[22 + k] = -0.5, py[22 + k] = fy;
    px[33 + k] = (double)box->shape[0] - 0.5, py[33 + k] = fy;
  }
  tsr__cel_pix2vec(c, 44, px, py, v);
  {
    tsr__frame_xform_t xf;
    tsr__frame_xform(tsr__cel_frame(c), tsr__cel_frame(ca), &xf);
    tsr__frame_apply(&xf, 44, v);
  }
  for (int k = 0; k < 44; k++) {
    const double *r = v + 3 * k;
    lon[k] = atan2(r[1], r[0]) * 180 / M_PI;
    lat[k] = asin(fmax(-1, fmin(1, r[2]))) * 180 / M_PI;
  }
  tsr__cel_free(c);
  tsr__cel_free(ca);
  if (world_to_pixel(g, a, "crop", 44, lon, lat, x, y) != 0)
    return NULL;
  for (int k = 0; k < 44; k++) {
    if (!(isfinite(x[k]) && isfinite(y[k])))
      return tsr__graph_fail(g, TSR_EWCS, "crop: the box's edges leave %s's projection", a->name);
    lo[0] = fmin(lo[0], x[k]), hi[0] = fmax(hi[0], x[k]);
    lo[1] = fmin(lo[1], y[k]), hi[1] = fmax(hi[1], y[k]);
  }
  for (int ax = 0; ax < TSR_MAX_DIMS; ax++)
    stop[ax] = a->shape[ax];
  for (int ax = 0; ax < 2; ax++) {
    double s = floor(lo[ax] + 0.5), e = ceil(hi[ax] + 0.5);
    start[ax] = s < 0 ? 0 : s > (double)a->shape[ax] ? a->shape[ax] : (int64_t)s;
    stop[ax] = e < 0 ? 0 : e > (double)a->shape[ax] ? a->shape[ax] : (int64_t)e;
    if (stop[ax] <= start[ax])
      return tsr__graph_fail(g, TSR_EINVAL, "crop: the box does not overlap %s", a->name);
  }
  return tsr_slice(g, a, start, stop, NULL);
}

/* ------------------------------------------------------------------ */
/* Stacks and concatenations                                           */

typedef struct {
  int axis, stack;   /* stack: a new axis; else concatenate along an existing one */
  int64_t *offset;   /* concatenate: where each input starts along axis */
  int n;
} join_params_t;

static void join_free(tsr_ctx_t *ctx, void *p) {
  join_params_t *jp = p;
  if (jp)
    tsr__free(ctx, jp->offset);
  tsr__free(ctx, jp);
}

static void join_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const join_params_t *p = n->params;
  tsr__buf_put_i64(b, p->axis);
  tsr__buf_put_i64(b, p->stack);
}

static int join_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                             tsr_region_t *win, bool *empty) {
  const join_params_t *p = n->params;
  int ax = p->axis;
  (void)state;
  if (p->stack) {
    *empty = !(out->start[ax] <= i && i < out->stop[ax]);
    /* Axes past the new one shift down by one. */
    for (int a = 0, j = 0; a < TSR_MAX_DIMS; a++) {
      if (a == ax)
        continue;
      win->start[j] = out->start[a], win->stop[j] = out->stop[a];
      j++;
    }
    win->start[TSR_MAX_DIMS - 1] = 0, win->stop[TSR_MAX_DIMS - 1] = 1;
    return 0;
  }
  *win = *out;
  win->start[ax] = out->start[ax] - p->offset[i];
  win->stop[ax] = out->stop[ax] - p->offset[i];
  if (win->start[ax] < 0)
    win->start[ax] = 0;
  if (win->stop[ax] > n->inputs[i]->shape[ax])
    win->stop[ax] = n->inputs[i]->shape[ax];
  *empty = win->stop[ax] <= win->start[ax];
  return 0;
}

static int join_compute(tsr__task_t *t) {
  const join_params_t *p = t->node->params;
  const tsr_region_t *r = &t->out;
  int ax = p->axis;
  for (int i = 0; i < t->n_in; i++) {
    const tsr__window_t *w = &t->in[i];
    if (w->data == NULL)
      continue;
    /* Every output element this input gives, from its window. */
    int64_t o[TSR_MAX_DIMS];
    for (o[3] = r->start[3]; o[3] < r->stop[3]; o[3]++)
      for (o[2] = r->start[2]; o[2] < r->stop[2]; o[2]++)
        for (o[1] = r->start[1]; o[1] < r->stop[1]; o[1]++)
          for (o[0] = r->start[0]; o[0] < r->stop[0]; o[0]++) {
            int64_t c[TSR_MAX_DIMS] = {0, 0, 0, 0};
            size_t src = 0;
            bool in = true;
            if (p->stack) {
              if (o[ax] != i)
                continue;
              for (int a = 0, j = 0; a < TSR_MAX_DIMS; a++)
                if (a != ax)
                  c[j++] = o[a];
            } else {
              memcpy(c, o, sizeof c);
              c[ax] -= p->offset[i];
            }
            for (int a = 0; a < TSR_MAX_DIMS; a++) {
              in &= c[a] >= w->win.start[a] && c[a] < w->win.stop[a];
              src += (size_t)((c[a] - w->win.start[a]) * w->stride[a]);
            }
            if (in)
              copy_value(t, tsr__task_offset(t, o[0] - r->start[0], o[1] - r->start[1],
                                             o[2] - r->start[2], o[3] - r->start[3]),
                         w, src);
          }
  }
  return 0;
}

static const tsr__op_t join_op = {
    .name = "join",
    .version = 1,
    .flags = TSR__OP_SUBBOX,
    .input_region = join_input_region,
    .compute = join_compute,
    .encode = join_encode,
    .free_params = join_free,
};

static tsr_node_t *join(tsr_graph_t *g, int n, tsr_node_t *const *in, int axis, int stack) {
  const char *op = stack ? "stack" : "concatenate";
  join_params_t *p;
  tsr_node_t *node;
  bool f64 = false;

  if (!tsr__graph_check(g))
    return NULL;
  if (n < 1 || in == NULL)
    return tsr__graph_fail(g, TSR_EINVAL, "%s: %d inputs; expected at least 1", op, n);
  for (int i = 0; i < n; i++)
    if (in[i] == NULL)
      return tsr__graph_fail(g, TSR_EINVAL, "%s: input %d is NULL", op, i + 1);
  if (axis < 0 || axis > in[0]->ndim - (stack ? 0 : 1) || (stack && in[0]->ndim >= TSR_MAX_DIMS))
    return tsr__graph_fail(g, TSR_EINVAL, "%s: axis %d out of range for %d-axis inputs%s", op, axis,
                           in[0]->ndim, stack ? " (a stack adds one, up to 4)" : "");
  for (int i = 0; i < n; i++) {
    f64 |= in[i]->dtype == TSR_F64;
    for (int a = 0; a < TSR_MAX_DIMS; a++)
      if ((stack || a != axis) && in[i]->shape[a] != in[0]->shape[a])
        return tsr__graph_fail(g, TSR_EINVAL,
                               "%s: input %d (%s) has %lld on axis %d where input 1 has %lld", op,
                               i + 1, in[i]->name, (long long)in[i]->shape[a], a + 1,
                               (long long)in[0]->shape[a]);
  }
  p = tsr__calloc(g->ctx, 1, sizeof *p);
  if (p == NULL || (p->offset = tsr__calloc(g->ctx, (size_t)n, sizeof *p->offset)) == NULL) {
    tsr__free(g->ctx, p);
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op);
  }
  p->axis = axis, p->stack = stack, p->n = n;
  node = tsr__node_alloc(g, &join_op, p);
  if (node == NULL)
    return NULL;
  if (tsr__node_set_inputs(node, n) != 0) {
    tsr__node_discard(node);
    return NULL;
  }
  for (int i = 0; i < n; i++)
    node->inputs[i] = in[i];
  node->dtype = f64 ? TSR_F64 : TSR_F32;
  node->ndim = in[0]->ndim + (stack ? 1 : 0);
  for (int a = 0, j = 0; a < TSR_MAX_DIMS; a++) {
    if (stack && a == axis) {
      node->shape[a] = n, node->chunk[a] = 1;
      continue;
    }
    node->shape[a] = in[0]->shape[j], node->chunk[a] = in[0]->chunk[j];
    j++;
  }
  if (!stack) {
    int64_t off = 0;
    for (int i = 0; i < n; i++)
      p->offset[i] = off, off += in[i]->shape[axis];
    node->shape[axis] = off;
  }
  /* The first input's WCS stays right for a stack of 2-D planes and for a
   * concatenation that starts with it; it says nothing of the new axis. */
  if (in[0]->wcs && (axis >= 2 || !stack) && tsr_wcs_copy(g->ctx, in[0]->wcs, &node->wcs) != 0) {
    tsr__node_discard(node);
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op);
  }
  return tsr__node_finish(node);
}

tsr_node_t *tsr_stack(tsr_graph_t *g, int n, tsr_node_t *const *in, int axis) {
  return join(g, n, in, axis, 1);
}

tsr_node_t *tsr_concatenate(tsr_graph_t *g, int n, tsr_node_t *const *in, int axis) {
  return join(g, n, in, axis, 0);
}
