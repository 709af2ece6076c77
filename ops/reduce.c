/* reduce.c -- reductions: sum, mean, min, max, count, std over one axis or
 * over all, each with a NaN-ignoring variant (numpy's nansum and friends).
 *
 * Over one axis, an output block reads its own box of the input stretched
 * along that axis, so memory is a block times the axis length.  Over all
 * axes, a whole-input window could be any size, so the reduction is two
 * nodes: "reduce_partial" keeps seven statistics of each input chunk (count,
 * sum, mean, M2, min, max, NaN count), one chunk per task, and
 * "reduce_final" merges them in chunk order with Chan's pairwise update.
 * Both ways the statistics of one run of values are folded in index order,
 * so every block size gives the same bits.  Results are float64; std is the
 * population standard deviation (numpy's ddof = 0).
 */
#include <math.h>
#include <string.h>

#include "internal.h"

typedef struct {
  double n, sum, mean, m2, min, max, nnan;
} stats_t;
#define NSTATS 7

typedef struct {
  int op, nan_ignoring, axis; /* axis -1: partial or final stage of an all-axes reduction */
  int stage;                  /* 0: one axis, 1: partial, 2: final */
} red_params_t;

static void stats_init(stats_t *s) {
  memset(s, 0, sizeof *s);
  s->min = INFINITY, s->max = -INFINITY;
}

static inline void stats_add(stats_t *s, double v) {
  if (v != v) {
    s->nnan += 1;
    return;
  }
  s->n += 1;
  s->sum += v;
  {
    double d = v - s->mean;
    s->mean += d / s->n;
    s->m2 += d * (v - s->mean);
  }
  s->min = v < s->min ? v : s->min;
  s->max = v > s->max ? v : s->max;
}

/* Chan et al.'s merge of two runs' statistics. */
static void stats_merge(stats_t *a, const stats_t *b) {
  double n = a->n + b->n;
  if (b->n > 0) {
    double d = b->mean - a->mean;
    a->mean = n > 0 ? a->mean + d * b->n / n : 0;
    a->m2 += b->m2 + d * d * a->n * b->n / n;
  }
  a->n = n;
  a->sum += b->sum;
  a->min = b->min < a->min ? b->min : a->min;
  a->max = b->max > a->max ? b->max : a->max;
  a->nnan += b->nnan;
}

static double stats_result(const stats_t *s, int op, int nan_ignoring) {
  if (op == TSR_REDUCE_COUNT)
    return nan_ignoring ? s->n : s->n + s->nnan;
  if (!nan_ignoring && s->nnan > 0)
    return NAN;
  switch (op) {
  case TSR_REDUCE_SUM: return s->sum;
  case TSR_REDUCE_MEAN: return s->n > 0 ? s->sum / s->n : NAN;
  case TSR_REDUCE_MIN: return s->n > 0 ? s->min : NAN;
  case TSR_REDUCE_MAX: return s->n > 0 ? s->max : NAN;
  default: return s->n > 0 ? sqrt(s->m2 / s->n) : NAN; /* std */
  }
}

static void red_free(tsr_ctx_t *ctx, void *p) { tsr__free(ctx, p); }

static void red_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const red_params_t *p = n->params;
  tsr__buf_put_i64(b, p->op);
  tsr__buf_put_i64(b, p->nan_ignoring);
  tsr__buf_put_i64(b, p->axis);
  tsr__buf_put_i64(b, p->stage);
}

/* The input chunk that partial entry c stands for. */
static void partial_chunk(const tsr_node_t *in, int64_t c, tsr_region_t *r) {
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    int64_t nc = (in->shape[a] + in->chunk[a] - 1) / in->chunk[a];
    int64_t k = c % nc;
    c /= nc;
    r->start[a] = k * in->chunk[a];
    r->stop[a] = r->start[a] + in->chunk[a] < in->shape[a] ? r->start[a] + in->chunk[a] : in->shape[a];
  }
}

static int red_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                            tsr_region_t *win, bool *empty) {
  const red_params_t *p = n->params;
  const tsr_node_t *in = n->inputs[i];
  (void)state;
  *empty = false;
  if (p->stage == 1) {
    partial_chunk(in, out->start[1], win);
    return 0;
  }
  if (p->stage == 2) {
    tsr__region_full(win, in->ndim, in->shape);
    return 0;
  }
  /* Output axis j is input axis j, or j + 1 past the reduced axis. */
  for (int a = 0, j = 0; a < TSR_MAX_DIMS; a++) {
    if (a == p->axis) {
      win->start[a] = 0, win->stop[a] = in->shape[a];
      continue;
    }
    win->start[a] = out->start[j], win->stop[a] = out->stop[j];
    j++;
  }
  return 0;
}

static int red_compute(tsr__task_t *t) {
  const red_params_t *p = t->node->params;
  const tsr__window_t *w = &t->in[0];
  double *out = t->planes[0];
  const tsr_region_t *r = &t->out;

  if (p->stage == 1) {
    /* One input chunk (the window) -> its NSTATS numbers along axis 0. */
    stats_t s;
    size_t k = 0;
    stats_init(&s);
    for (int64_t q = 0; q < w->win.stop[3] - w->win.start[3]; q++)
      for (int64_t z = 0; z < w->win.stop[2] - w->win.start[2]; z++)
        for (int64_t y = 0; y < w->win.stop[1] - w->win.start[1]; y++) {
          k = (size_t)(y * w->stride[1] + z * w->stride[2] + q * w->stride[3]);
          for (int64_t x = 0; x < w->win.stop[0] - w->win.start[0]; x++)
            stats_add(&s, tsr__window_value(w, k + (size_t)x));
        }
    {
      const double v[NSTATS] = {s.n, s.sum, s.mean, s.m2, s.min, s.max, s.nnan};
      for (int64_t a = r->start[0]; a < r->stop[0]; a++)
        out[tsr__task_offset(t, a - r->start[0], 0, 0, 0)] = v[a];
    }
    return 0;
  }
  if (p->stage == 2) {
    stats_t s, c;
    int64_t nc = w->win.stop[1];
    stats_init(&s);
    for (int64_t k = 0; k < nc; k++) {
      const double *v = (const double *)w->data + k * w->stride[1];
      c.n = v[0], c.sum = v[1], c.mean = v[2], c.m2 = v[3], c.min = v[4], c.max = v[5], c.nnan = v[6];
      stats_merge(&s, &c);
    }
    out[0] = stats_result(&s, p->op, p->nan_ignoring);
    return 0;
  }
  {
    /* Over one axis: for each output element, the run along the axis. */
    int64_t len = w->win.stop[p->axis] - w->win.start[p->axis];
    int64_t step = w->stride[p->axis];
    int64_t ext[TSR_MAX_DIMS];
    for (int a = 0; a < TSR_MAX_DIMS; a++)
      ext[a] = r->stop[a] - r->start[a];
    for (int64_t q = 0; q < ext[3]; q++)
      for (int64_t z = 0; z < ext[2]; z++)
        for (int64_t y = 0; y < ext[1]; y++)
          for (int64_t x = 0; x < ext[0]; x++) {
            int64_t oc[4] = {x, y, z, q}, ic[4] = {0, 0, 0, 0};
            size_t base = 0;
            stats_t s;
            for (int a = 0, j = 0; a < TSR_MAX_DIMS; a++)
              ic[a] = a == p->axis ? 0 : oc[j++];
            for (int a = 0; a < TSR_MAX_DIMS; a++)
              base += (size_t)(ic[a] * w->stride[a]);
            stats_init(&s);
            for (int64_t k = 0; k < len; k++)
              stats_add(&s, tsr__window_value(w, base + (size_t)(k * step)));
            out[tsr__task_offset(t, x, y, z, q)] = stats_result(&s, p->op, p->nan_ignoring);
          }
  }
  return 0;
}

static const tsr__op_t red_op = {
    .name = "reduce",
    .version = 1,
    .flags = TSR__OP_SUBBOX,
    .input_region = red_input_region,
    .compute = red_compute,
    .encode = red_encode,
    .free_params = red_free,
};

static tsr_node_t *make(tsr_graph_t *g, tsr_node_t *in, int op, int nan_ignoring, int axis, int stage) {
  red_params_t *p = tsr__calloc(g->ctx, 1, sizeof *p);
  tsr_node_t *n;
  if (p == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "reduce: out of memory");
  p->op = op, p->nan_ignoring = nan_ignoring != 0, p->axis = axis, p->stage = stage;
  n = tsr__node_alloc(g, &red_op, p);
  if (n == NULL)
    return NULL;
  n->n_inputs = 1;
  n->inputs[0] = in;
  n->dtype = TSR_F64;
  if (stage == 1) {
    int64_t nc = 1;
    for (int a = 0; a < TSR_MAX_DIMS; a++)
      nc *= (in->shape[a] + in->chunk[a] - 1) / in->chunk[a];
    n->ndim = 2;
    n->shape[0] = NSTATS, n->shape[1] = nc;
    n->chunk[0] = NSTATS, n->chunk[1] = 1;
  } else if (stage == 2) {
    n->ndim = 1;
  } else {
    n->ndim = in->ndim > 1 ? in->ndim - 1 : 1;
    for (int a = 0, j = 0; a < TSR_MAX_DIMS; a++) {
      if (a == axis)
        continue;
      n->shape[j] = in->shape[a];
      n->chunk[j] = in->chunk[a];
      j++;
    }
  }
  return tsr__node_finish(n);
}

tsr_node_t *tsr_reduce(tsr_graph_t *g, tsr_reduce_t op, tsr_node_t *a, int axis, int nan_ignoring) {
  if (!tsr__graph_check(g))
    return NULL;
  if (a == NULL)
    return tsr__graph_fail(g, TSR_EINVAL, "reduce: input is NULL");
  if ((int)op < TSR_REDUCE_SUM || op > TSR_REDUCE_STD)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "reduce: op %d is not sum, mean, min, max, count or std", op);
  if (axis < -1 || axis >= a->ndim)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "reduce: axis %d out of range for %s, which has %d axes (0 to %d, or -1 "
                           "for all)",
                           axis, a->name, a->ndim, a->ndim - 1);
  if (axis >= 0)
    return make(g, a, op, nan_ignoring, axis, 0);
  {
    /* The partial statistics do not depend on the op: one node serves all. */
    tsr_node_t *part = make(g, a, 0, 0, -1, 1);
    return part ? make(g, part, op, nan_ignoring, -1, 2) : NULL;
  }
}
