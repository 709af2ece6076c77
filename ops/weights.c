/* weights.c -- weight maps of SWarp's kinds and data-quality masks as
 * lazy nodes on the input's own pixel grid.
 *
 * SWarp reads a weight map of one of four kinds and carries it as a
 * variance from then on; so do we: tsr_variance_map gives the variance
 * (+infinity where a pixel has no weight), which the caller reprojects the
 * same way as the data and inverts for tsr_coadd.  MAP_WEIGHT, MAP_VARIANCE
 * and MAP_RMS are pixel by pixel (tsr__weight_to_variance, weights.h);
 * BACKGROUND estimates the image's own background noise: the standard
 * deviation of each back_size x back_size mesh of a grid anchored at pixel
 * (0, 0), clipped at 3 sigma about its median until stable, interpolated
 * bilinearly between mesh centres (clamped beyond the outer ones).  A block
 * reads the meshes whose centres surround it and nothing else, so it is
 * lazy and out of core like any op, and every block size gives the same
 * bits (the mesh grid is global).  That is SExtractor's background RMS
 * without its mesh filtering and spline: SWarp's to about 1% (8% at worst,
 * tests/conformance/conformance_swarp.py).  tsr_mask_dq blanks (NaN) the pixels whose data-quality
 * value has chosen bits set, before any reprojection sees them.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "weights.h"

enum { KIND_MASK_DQ = 100 };

typedef struct {
  int kind;         /* tsr_weight_type_t, or KIND_MASK_DQ */
  double thresh;    /* resolved WEIGHT_THRESH */
  int64_t back;     /* BACKGROUND mesh size */
  uint32_t bits;    /* DQ bits; 0 = any nonzero value */
  int has_dq;       /* inputs[1] is a DQ map */
} weights_params_t;

static void w_free(tsr_ctx_t *ctx, void *p) { tsr__free(ctx, p); }

static void w_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const weights_params_t *p = n->params;
  tsr__buf_put_i64(b, p->kind);
  tsr__buf_put_f64(b, p->thresh);
  tsr__buf_put_i64(b, p->back);
  tsr__buf_put_i64(b, p->bits);
  tsr__buf_put_i64(b, p->has_dq);
}

/* The meshes (first, last + 1) along an axis of length len whose centres
 * surround pixels [a, b). */
static void mesh_span(int64_t a, int64_t b, int64_t B, int64_t len, int64_t *m0, int64_t *m1) {
  int64_t nm = (len + B - 1) / B;
  double c0 = floor(((double)a - (B - 1) / 2.0) / (double)B), c1 = floor(((double)b - 1 - (B - 1) / 2.0) / (double)B) + 1;
  *m0 = c0 < 0 ? 0 : (int64_t)c0;
  *m1 = (int64_t)c1 + 1 > nm ? nm : (int64_t)c1 + 1;
}

static int w_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                          tsr_region_t *win, bool *empty) {
  const weights_params_t *p = n->params;
  (void)state;
  *empty = false;
  *win = *out;
  if (p->kind == TSR_WEIGHT_BACKGROUND && i == 0)
    for (int a = 0; a < 2; a++) {
      int64_t m0, m1;
      mesh_span(out->start[a], out->stop[a], p->back, n->shape[a], &m0, &m1);
      win->start[a] = m0 * p->back;
      win->stop[a] = m1 * p->back < n->shape[a] ? m1 * p->back : n->shape[a];
    }
  return 0;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* The 3-sigma-clipped standard deviation of v[0..n) (reordered); NaN for
 * fewer than 3 values. */
static double clipped_sigma(double *v, size_t n) {
  double lo = -INFINITY, hi = INFINITY, sd = NAN;
  qsort(v, n, sizeof *v, cmp_d);
  for (int it = 0; it < 20; it++) {
    size_t a = 0, b = n, k;
    double s = 0, s2 = 0, med, nsd;
    while (a < b && v[a] < lo)
      a++;
    while (b > a && v[b - 1] > hi)
      b--;
    k = b - a;
    if (k < 3)
      return NAN;
    for (size_t j = a; j < b; j++)
      s += v[j];
    s /= (double)k;
    for (size_t j = a; j < b; j++)
      s2 += (v[j] - s) * (v[j] - s);
    nsd = sqrt(s2 / (double)k);
    med = k % 2 ? v[a + k / 2] : 0.5 * (v[a + k / 2 - 1] + v[a + k / 2]);
    if (nsd == sd)
      break;
    sd = nsd;
    lo = med - 3 * sd, hi = med + 3 * sd;
  }
  return sd;
}

static inline double win_at(const tsr__window_t *w, int64_t x, int64_t y) {
  return tsr__window_value(w, (size_t)((x - w->win.start[0]) + (y - w->win.start[1]) * w->stride[1]));
}

/* Background RMS of the meshes of window w into sig (mx x my meshes from
 * mesh (m0x, m0y)); 0 or TSR_ENOMEM. */
static int mesh_sigmas(tsr__task_t *t, const weights_params_t *p, const tsr__window_t *w,
                       int64_t m0x, int64_t m0y, int64_t mx, int64_t my, double *sig) {
  int64_t B = p->back;
  double *v = tsr__mallocarray(t->ctx, (size_t)(B * B), sizeof *v);
  if (v == NULL)
    return tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory for a %lld-pixel mesh", t->node->name,
                    (long long)B);
  for (int64_t j = 0; j < my; j++)
    for (int64_t i = 0; i < mx; i++) {
      int64_t x0 = (m0x + i) * B, y0 = (m0y + j) * B;
      int64_t x1 = x0 + B < t->node->shape[0] ? x0 + B : t->node->shape[0];
      int64_t y1 = y0 + B < t->node->shape[1] ? y0 + B : t->node->shape[1];
      size_t k = 0;
      for (int64_t y = y0; y < y1; y++)
        for (int64_t x = x0; x < x1; x++) {
          double a = win_at(w, x, y);
          if (isfinite(a))
            v[k++] = a;
        }
      sig[j * mx + i] = clipped_sigma(v, k);
    }
  tsr__free(t->ctx, v);
  return 0;
}

static int w_compute(tsr__task_t *t) {
  const tsr_node_t *n = t->node;
  const weights_params_t *p = n->params;
  const tsr__window_t *wm = &t->in[0], *wq = p->has_dq ? &t->in[1] : NULL;
  int64_t m0x = 0, m0y = 0, mx = 0, my = 0, B = p->back;
  double *sig = NULL;
  int rc = 0;

  if (p->kind == TSR_WEIGHT_BACKGROUND) {
    int64_t m1x, m1y;
    mesh_span(t->out.start[0], t->out.stop[0], B, n->shape[0], &m0x, &m1x);
    mesh_span(t->out.start[1], t->out.stop[1], B, n->shape[1], &m0y, &m1y);
    mx = m1x - m0x, my = m1y - m0y;
    sig = tsr__mallocarray(t->ctx, (size_t)(mx * my), sizeof *sig);
    if (sig == NULL) {
      rc = tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory", n->name);
      goto out;
    }
    if ((rc = mesh_sigmas(t, p, wm, m0x, m0y, mx, my, sig)) != 0)
      goto out;
  }
  for (int64_t y = t->out.start[1]; y < t->out.stop[1]; y++)
    for (int64_t x = t->out.start[0]; x < t->out.stop[0]; x++) {
      size_t off = tsr__task_offset(t, x - t->out.start[0], y - t->out.start[1], 0, 0);
      double r;
      if (p->kind == KIND_MASK_DQ) {
        r = tsr__dq_bad(p->bits, win_at(wq, x, y)) ? NAN : win_at(wm, x, y);
      } else {
        double m;
        if (p->kind == TSR_WEIGHT_BACKGROUND) {
          /* Bilinear between the mesh centres around (x, y), clamped. */
          double fx = ((double)x - (B - 1) / 2.0) / (double)B - (double)m0x;
          double fy = ((double)y - (B - 1) / 2.0) / (double)B - (double)m0y;
          int64_t ix, iy;
          fx = fx < 0 ? 0 : fx > (double)(mx - 1) ? (double)(mx - 1) : fx;
          fy = fy < 0 ? 0 : fy > (double)(my - 1) ? (double)(my - 1) : fy;
          ix = (int64_t)fx < mx - 1 ? (int64_t)fx : mx - 1;
          iy = (int64_t)fy < my - 1 ? (int64_t)fy : my - 1;
          fx -= (double)ix, fy -= (double)iy;
          {
            double s00 = sig[iy * mx + ix], s10 = ix + 1 < mx ? sig[iy * mx + ix + 1] : s00;
            double s01 = iy + 1 < my ? sig[(iy + 1) * mx + ix] : s00;
            double s11 = ix + 1 < mx && iy + 1 < my ? sig[(iy + 1) * mx + ix + 1] : s01;
            m = (1 - fy) * ((1 - fx) * s00 + fx * s10) + fy * ((1 - fx) * s01 + fx * s11);
          }
        } else {
          m = win_at(wm, x, y);
        }
        r = tsr__weight_to_variance(p->kind == TSR_WEIGHT_BACKGROUND ? TSR_WEIGHT_MAP_RMS : p->kind,
                                    p->thresh, m);
        if (wq && tsr__dq_bad(p->bits, win_at(wq, x, y)))
          r = INFINITY;
      }
      if (n->dtype == TSR_F32)
        ((float *)t->planes[0])[off] = (float)r;
      else
        ((double *)t->planes[0])[off] = r;
    }
out:
  tsr__free(t->ctx, sig);
  return rc;
}

static const tsr__op_t weights_op = {
    .name = "weights",
    .version = 1,
    .flags = TSR__OP_SUBBOX,
    .input_region = w_input_region,
    .compute = w_compute,
    .encode = w_encode,
    .free_params = w_free,
};

int tsr_weight_type_parse(const char *s) {
  static const char *const names[4] = {"MAP_WEIGHT", "MAP_VARIANCE", "MAP_RMS", "BACKGROUND"};
  for (int i = 0; s && i < 4; i++)
    if (strcasecmp(s, names[i]) == 0)
      return i;
  return -1;
}

static tsr_node_t *make(tsr_graph_t *g, const char *op, tsr_node_t *map, tsr_node_t *dq,
                        const weights_params_t *src, tsr_dtype_t dtype) {
  weights_params_t *p;
  tsr_node_t *n;
  if (!tsr__graph_check(g))
    return NULL;
  if (map == NULL)
    return tsr__graph_fail(g, TSR_EINVAL, "%s: the map is NULL", op);
  if (map->ndim != 2)
    return tsr__graph_fail(g, TSR_EINVAL, "%s: %s has %d axes; expected a 2-D image", op, map->name,
                           map->ndim);
  if (dq && (dq->ndim != 2 || dq->shape[0] != map->shape[0] || dq->shape[1] != map->shape[1]))
    return tsr__graph_fail(g, TSR_EINVAL,
                           "%s: data-quality map %s is %lld x %lld; expected the %lld x %lld of %s",
                           op, dq->name, (long long)dq->shape[0], (long long)dq->shape[1],
                           (long long)map->shape[0], (long long)map->shape[1], map->name);
  p = tsr__calloc(g->ctx, 1, sizeof *p);
  if (p == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op);
  *p = *src;
  p->has_dq = dq != NULL;
  n = tsr__node_alloc(g, &weights_op, p);
  if (n == NULL)
    return NULL;
  n->n_inputs = 1 + (dq != NULL);
  n->inputs[0] = map;
  if (dq)
    n->inputs[1] = dq;
  n->ndim = 2;
  n->dtype = dtype;
  memcpy(n->shape, map->shape, sizeof n->shape);
  memcpy(n->chunk, map->chunk, sizeof n->chunk);
  snprintf(n->name, sizeof n->name, "%s#%d", op, g->n_nodes + 1);
  if (map->wcs && tsr_wcs_copy(g->ctx, map->wcs, &n->wcs) != 0) {
    tsr__node_discard(n);
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op);
  }
  return tsr__node_finish(n);
}

tsr_node_t *tsr_variance_map(tsr_graph_t *g, tsr_node_t *map, tsr_weight_type_t type,
                             tsr_node_t *dq, const tsr_weight_opts_t *opts) {
  tsr_weight_opts_t o = TSR_WEIGHT_OPTS_INIT;
  weights_params_t p = {0};
  if (opts)
    o = *opts;
  if ((int)type < TSR_WEIGHT_MAP_WEIGHT || (int)type > TSR_WEIGHT_BACKGROUND)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "variance_map: weight type %d out of range (MAP_WEIGHT, MAP_VARIANCE, "
                           "MAP_RMS, BACKGROUND)", (int)type);
  if (o.thresh == o.thresh && !(o.thresh >= 0))
    return tsr__graph_fail(g, TSR_EINVAL, "variance_map: weight threshold %g: expected >= 0 (or NaN "
                           "for the type's default)", o.thresh);
  if (o.back_size < 0 || o.back_size > (1 << 16))
    return tsr__graph_fail(g, TSR_EINVAL, "variance_map: back_size %lld out of range [1, 65536] (0 "
                           "= 128)", (long long)o.back_size);
  p.kind = type;
  p.thresh = o.thresh == o.thresh ? o.thresh : tsr__weight_thresh_default(type);
  p.back = type == TSR_WEIGHT_BACKGROUND ? (o.back_size ? o.back_size : 128) : 0;
  p.bits = o.dq_bits;
  return make(g, "variance_map", map, dq, &p, TSR_F64);
}

tsr_node_t *tsr_mask_dq(tsr_graph_t *g, tsr_node_t *data, tsr_node_t *dq, uint32_t bits) {
  weights_params_t p = {0};
  if (dq == NULL && tsr__graph_check(g))
    return tsr__graph_fail(g, TSR_EINVAL, "mask_dq: the data-quality map is NULL");
  p.kind = KIND_MASK_DQ;
  p.bits = bits;
  return make(g, "mask_dq", data, dq, &p, data ? data->dtype : TSR_F32);
}
