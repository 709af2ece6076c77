/* reproject.c -- what reproject_interp, _adaptive, _exact and
 * _from_healpix share.  They differ in their kernels, not in what a
 * reprojection node is: the target's pixel grid, extra input axes
 * broadcast, a data and a footprint plane, the same validation of the input
 * and target; nor in their scaffolding: parameters that begin with the
 * target and the input's name, a run state that begins with the output ->
 * input mapping, and one unwinding path (the op's stop) when starting fails
 * half way.  Also the block helpers of the two overlap methods (exact and
 * HEALPix exact): candidate boxes, scratch, plane stores. */
#include <math.h>
#include <stdio.h>

#include "mapping.h"
#include "reproject.h"

bool tsr__reproject_check_args(tsr_graph_t *g, const char *op, const tsr_node_t *src,
                               const tsr_wcs_t *target, int dtype, const int64_t block[2]) {
  if (src == NULL || target == NULL)
    return tsr__graph_fail(g, TSR_EINVAL, "%s: input or target is NULL", op), false;
  if (dtype != 0 && dtype != TSR_F32 && dtype != TSR_F64)
    return tsr__graph_fail(g, TSR_EINVAL, "%s: dtype %d is not float32 or float64", op, dtype),
           false;
  for (int a = 0; a < 2; a++)
    if (block[a] < 0 || block[a] > (1 << 20))
      return tsr__graph_fail(g, TSR_EINVAL, "%s: block size %lld out of range [1, 1048576]", op,
                             (long long)block[a]),
             false;
  return true;
}

bool tsr__reproject_check(tsr_graph_t *g, const char *op, const tsr_node_t *src,
                          const tsr_wcs_t *target, int dtype, const int64_t block[2]) {
  char in_what[160];
  tsr__map_t *probe = NULL;

  if (!tsr__reproject_check_args(g, op, src, target, dtype, block))
    return false;
  if (src->wcs == NULL)
    return tsr__graph_fail(g, TSR_EWCS, "%s: input %s has no WCS", op, src->name), false;
  if (src->ndim < 2)
    return tsr__graph_fail(g, TSR_EINVAL, "%s: input %s has %d axis; expected at least 2", op,
                           src->name, src->ndim),
           false;
  if (target->naxis < 2 || target->shape[0] < 1 || target->shape[1] < 1)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "%s: target needs 2 celestial axes with NAXIS1 and NAXIS2; it has "
                           "NAXIS = %d",
                           op, target->naxis),
           false;
  for (int a = 2; a < target->naxis; a++)
    if (a >= src->ndim || target->shape[a] != src->shape[a])
      return tsr__graph_fail(g, TSR_EINVAL,
                             "%s: target has %d axes but input %s has %d; extra axes must match "
                             "the input's (NAXIS%d = %lld)",
                             op, target->naxis, src->name, src->ndim, a + 1,
                             (long long)(a < src->ndim ? src->shape[a] : 0)),
             false;
  /* Both WCSs and the frame pair are checked now, not when running. */
  snprintf(in_what, sizeof in_what, "input %s", src->name);
  {
    int rc = tsr__map_new(g->ctx, target, "target", src->wcs, in_what, 1e-4, false, &probe);
    if (rc != 0) {
      tsr__err_prefix(g->ctx, "%s", op);
      tsr__graph_fail_ctx(g, rc); /* TSR_EWCS, or TSR_ENOMEM */
      return false;
    }
  }
  tsr__map_free(probe);
  return true;
}

void *tsr__reproject_params_new(tsr_graph_t *g, const char *op, size_t size, const tsr_node_t *src,
                                const tsr_wcs_t *target, double tol, bool roundtrip) {
  tsr__reproject_params_t *p = tsr__calloc(g->ctx, 1, size);
  if (p == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op);
  snprintf(p->in_what, sizeof p->in_what, "input %s", src->name);
  p->tol = tol;
  p->roundtrip = roundtrip;
  if (tsr_wcs_copy(g->ctx, target, &p->target) != 0) {
    tsr__free(g->ctx, p);
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op);
  }
  return p;
}

void tsr__reproject_params_free(tsr_ctx_t *ctx, void *params) {
  tsr__reproject_params_t *p = params;
  if (p == NULL)
    return;
  tsr_wcs_free(p->target);
  tsr__free(ctx, p);
}

void tsr__reproject_params_encode(const tsr__reproject_params_t *p, tsr__buf_t *b) {
  tsr__buf_put_f64(b, p->tol);
  tsr__buf_put_i64(b, p->roundtrip);
  tsr__wcs_encode(p->target, b);
}

int tsr__reproject_state_new(tsr_node_t *n, size_t size, void **state) {
  tsr_ctx_t *ctx = n->graph->ctx;
  const tsr__reproject_params_t *p = n->params;
  tsr__reproject_state_t *st = tsr__calloc(ctx, 1, size);
  int rc;
  *state = NULL;
  if (st == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "%s: out of memory", n->name);
  rc = tsr__map_new(ctx, p->target, "target", n->inputs[0]->wcs, p->in_what, p->tol,
                    p->roundtrip, &st->map);
  if (rc != 0) {
    tsr__free(ctx, st);
    return rc;
  }
  *state = st;
  return 0;
}

void tsr__reproject_state_free(tsr_node_t *n, void *state) {
  tsr__reproject_state_t *st = state;
  if (st == NULL)
    return;
  tsr__map_free(st->map);
  tsr__free(n->graph->ctx, st);
}

int tsr__reproject_window(tsr__map_t *m, const tsr_region_t *out, int64_t grow,
                          const tsr_node_t *in, double halo, tsr_region_t *win, bool *empty) {
  double lo[2], hi[2];
  bool none, full;
  int rc = tsr__map_bounds(m, out->start[0] - grow, out->stop[0] + grow, out->start[1] - grow,
                           out->stop[1] + grow, in->shape[0], in->shape[1], lo, hi, &none, &full);
  if (rc != 0)
    return rc;
  *win = *out;
  if (none) {
    *empty = true;
    return 0;
  }
  for (int a = 0; a < 2; a++) {
    if (full) {
      win->start[a] = 0;
      win->stop[a] = in->shape[a];
      continue;
    }
    double margin = halo + 0.01 * (hi[a] - lo[a]);
    double s = floor(lo[a] - margin), e = floor(hi[a] + margin) + 1;
    if (e <= 0.0 || s >= (double)in->shape[a]) {
      *empty = true;
      return 0;
    }
    win->start[a] = s < 0 ? 0 : (int64_t)s;
    win->stop[a] = e > (double)in->shape[a] ? in->shape[a] : (int64_t)e;
  }
  return 0;
}

/* Copy the input's non-celestial axis keywords (3 and 4) onto the output WCS,
 * so a reprojected cube keeps its spectral axis. */
static int add_extra_axes(tsr_wcs_t *out, const tsr_wcs_t *src, int ndim) {
  static const char *const stems[] = {"CTYPE", "CRVAL", "CDELT", "CRPIX", "CUNIT", "CNAME"};
  char kw[16], val[72];
  int rc;
  for (int a = 3; a <= ndim; a++) {
    for (size_t s = 0; s < sizeof stems / sizeof stems[0]; s++) {
      snprintf(kw, sizeof kw, "%s%d", stems[s], a);
      int i = tsr__wcs_find(src, kw);
      if (i < 0 || tsr__wcs_find(out, kw) >= 0)
        continue;
      tsr__card_value(src->cards + (size_t)i * 80, val, sizeof val);
      if ((rc = tsr__wcs_set(out, kw, val)) != 0)
        return rc;
    }
    snprintf(kw, sizeof kw, "PC%d_%d", a, a);
    int i = tsr__wcs_find(src, kw);
    if (i >= 0 && tsr__wcs_find(out, kw) < 0) {
      tsr__card_value(src->cards + (size_t)i * 80, val, sizeof val);
      if ((rc = tsr__wcs_set(out, kw, val)) != 0)
        return rc;
    }
  }
  if (tsr__wcs_find(out, "WCSAXES") >= 0) {
    snprintf(val, sizeof val, "%d", ndim);
    if ((rc = tsr__wcs_set(out, "WCSAXES", val)) != 0)
      return rc;
  }
  return 0;
}

tsr_node_t *tsr__reproject_node(tsr_graph_t *g, const tsr__op_t *op, void *params,
                                tsr_node_t *src, const tsr_wcs_t *target, int dtype,
                                const int64_t block[2]) {
  tsr_node_t *n = tsr__node_alloc(g, op, params);
  int ndim = src->ndim < 2 ? 2 : src->ndim;
  if (n == NULL)
    return NULL;
  n->ndim = ndim;
  n->n_inputs = 1;
  n->inputs[0] = src;
  n->n_planes = 2;
  n->dtype = dtype ? (tsr_dtype_t)dtype : src->dtype == TSR_F64 ? TSR_F64 : TSR_F32;
  n->shape[0] = target->shape[0];
  n->shape[1] = target->shape[1];
  for (int a = 2; a < ndim; a++)
    n->shape[a] = src->shape[a];
  {
    int64_t in_bytes, dflt;
    /* src is a built node, within TSR__MAX_BYTES. */
    tsr__array_bytes(src->ndim, src->shape, (int64_t)tsr_dtype_size(src->dtype), &in_bytes);
    dflt = in_bytes > TSR__LARGE_INPUT_BYTES ? TSR__DEFAULT_BLOCK_LARGE : TSR__DEFAULT_BLOCK;
    n->chunk[0] = block[0] ? block[0] : dflt;
    n->chunk[1] = block[1] ? block[1] : dflt;
  }
  for (int a = 2; a < ndim; a++)
    n->chunk[a] = n->shape[a];
  if (tsr_wcs_copy(g->ctx, target, &n->wcs) != 0 || add_extra_axes(n->wcs, src->wcs, ndim) != 0) {
    tsr__node_discard(n);
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op->name);
  }
  return tsr__node_finish(n);
}

int tsr__boxes_merge_clip(tsr__box_t *box, int nb, int64_t bx0, int64_t bx1, int64_t by0,
                          int64_t by1) {
  int m = 0;
  for (bool merged = true; merged;) {
    merged = false;
    for (int a = 0; a < nb && !merged; a++)
      for (int b = a + 1; b < nb && !merged; b++)
        if (box[a].x0 <= box[b].x1 && box[b].x0 <= box[a].x1 && box[a].y0 <= box[b].y1 &&
            box[b].y0 <= box[a].y1) {
          box[a].x0 = box[a].x0 < box[b].x0 ? box[a].x0 : box[b].x0;
          box[a].x1 = box[a].x1 > box[b].x1 ? box[a].x1 : box[b].x1;
          box[a].y0 = box[a].y0 < box[b].y0 ? box[a].y0 : box[b].y0;
          box[a].y1 = box[a].y1 > box[b].y1 ? box[a].y1 : box[b].y1;
          box[b] = box[--nb];
          merged = true;
        }
  }
  for (int a = 0; a < nb; a++) {
    tsr__box_t b = box[a];
    b.x0 = b.x0 < bx0 ? bx0 : b.x0;
    b.x1 = b.x1 > bx1 ? bx1 : b.x1;
    b.y0 = b.y0 < by0 ? by0 : b.y0;
    b.y1 = b.y1 > by1 ? by1 : b.y1;
    if (b.x0 <= b.x1 && b.y0 <= b.y1)
      box[m++] = b;
  }
  return m;
}

int tsr__scratch_grow(tsr_ctx_t *ctx, void **p, size_t n, size_t size) {
  void *q = tsr__mallocarray(ctx, n, size);
  if (q == NULL)
    return TSR_ENOMEM;
  tsr__free(ctx, *p);
  *p = q;
  return 0;
}

void tsr__task_fill(tsr__task_t *t, int plane, double v) {
  int64_t bw = t->out.stop[0] - t->out.start[0], bh = t->out.stop[1] - t->out.start[1];
  if (t->planes[plane] == NULL)
    return;
  /* Destinations that hold the blank already (dst_blank) keep their
   * untouched pages untouched. */
  if (t->dst_blank && (plane == 0 ? v != v : v == 0 && !signbit(v)))
    return;
  for (int64_t q = t->out.start[3]; q < t->out.stop[3]; q++)
    for (int64_t z = t->out.start[2]; z < t->out.stop[2]; z++)
      for (int64_t y = 0; y < bh; y++) {
        size_t off = tsr__task_offset(t, 0, y, z - t->out.start[2], q - t->out.start[3]);
        if (t->node->dtype == TSR_F32)
          for (int64_t k = 0; k < bw; k++)
            ((float *)t->planes[plane])[off + (size_t)k] = (float)v;
        else
          for (int64_t k = 0; k < bw; k++)
            ((double *)t->planes[plane])[off + (size_t)k] = v;
      }
}
