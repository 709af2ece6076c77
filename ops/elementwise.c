/* elementwise.c -- arithmetic on arrays: one op for every elementwise
 * function, with numpy's broadcasting and NaN rules.
 *
 * An output element depends on the same element of each input (or element 0
 * along an axis where that input has length 1), so a block reads exactly its
 * own box of each input and chains of these ops stay as lazy as their
 * inputs: a region of (a + b) * c reads the region of a, b and c.  Values
 * are computed in double and stored in the output type, the wider of the
 * inputs' unless astype says otherwise.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

/* Beyond the public codes: the ops with parameters. */
enum { EW_CLIP = 100, EW_WHERE, EW_NAN_TO_NUM, EW_ASTYPE };
/* Where the scalar goes in a binary op with one array. */
enum { SC_NONE = 0, SC_RIGHT, SC_LEFT };

typedef struct {
  int code, scalar_pos;
  double s[3]; /* scalar operand; clip lo, hi; nan_to_num nan, posinf, neginf */
} ew_params_t;

static void ew_free(tsr_ctx_t *ctx, void *p) { tsr__free(ctx, p); }

static void ew_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const ew_params_t *p = n->params;
  tsr__buf_put_i64(b, p->code);
  tsr__buf_put_i64(b, p->scalar_pos);
  for (int k = 0; k < 3; k++)
    tsr__buf_put_f64(b, p->s[k]);
}

static int ew_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                           tsr_region_t *win, bool *empty) {
  const tsr_node_t *in = n->inputs[i];
  (void)state;
  *empty = false;
  *win = *out;
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    if (in->shape[a] == 1 && n->shape[a] != 1)
      win->start[a] = 0, win->stop[a] = 1;
  return 0;
}

static inline double ew_apply(const ew_params_t *p, double a, double b, double c) {
  switch (p->code) {
  case TSR_ADD: return a + b;
  case TSR_SUB: return a - b;
  case TSR_MUL: return a * b;
  case TSR_DIV: return a / b;
  case TSR_POW: return pow(a, b);
  case TSR_MIN: return a != a || b != b ? NAN : a < b ? a : b; /* np.minimum */
  case TSR_MAX: return a != a || b != b ? NAN : a > b ? a : b;
  case TSR_ABS: return fabs(a);
  case TSR_SQRT: return sqrt(a);
  case TSR_EXP: return exp(a);
  case TSR_LOG: return log(a);
  case TSR_LOG10: return log10(a);
  case TSR_ISNAN: return a != a;
  case TSR_LT: return a < b;
  case TSR_LE: return a <= b;
  case TSR_GT: return a > b;
  case TSR_GE: return a >= b;
  case TSR_EQ: return a == b;
  case TSR_NE: return a != b;
  case EW_CLIP: return a != a ? a : a < p->s[0] ? p->s[0] : a > p->s[1] ? p->s[1] : a;
  case EW_WHERE: return a != 0 ? b : c; /* NaN is true, as in numpy */
  case EW_NAN_TO_NUM:
    return a != a ? p->s[0] : a == INFINITY ? p->s[1] : a == -INFINITY ? p->s[2] : a;
  default: return a; /* EW_ASTYPE */
  }
}

static int ew_compute(tsr__task_t *t) {
  const tsr_node_t *n = t->node;
  const ew_params_t *p = n->params;
  const tsr_region_t *r = &t->out;
  double v[3] = {0, 0, 0};
  bool f32 = n->dtype == TSR_F32;

  for (int64_t q = r->start[3]; q < r->stop[3]; q++)
    for (int64_t z = r->start[2]; z < r->stop[2]; z++)
      for (int64_t y = r->start[1]; y < r->stop[1]; y++) {
        size_t off = tsr__task_offset(t, 0, y - r->start[1], z - r->start[2], q - r->start[3]);
        size_t base[3] = {0, 0, 0};
        int64_t sx[3] = {0, 0, 0};
        for (int i = 0; i < t->n_in; i++) {
          const tsr__window_t *w = &t->in[i];
          int64_t c[4] = {r->start[0], y, z, q};
          for (int a = 0; a < 4; a++)
            if (w->node->shape[a] == 1)
              c[a] = 0;
          base[i] = (size_t)((c[0] - w->win.start[0]) + (c[1] - w->win.start[1]) * w->stride[1] +
                             (c[2] - w->win.start[2]) * w->stride[2] +
                             (c[3] - w->win.start[3]) * w->stride[3]);
          sx[i] = w->node->shape[0] == 1 ? 0 : 1;
        }
        for (int64_t x = 0; x < r->stop[0] - r->start[0]; x++) {
          double res;
          int k = 0;
          if (p->scalar_pos == SC_LEFT)
            v[k++] = p->s[0];
          for (int i = 0; i < t->n_in; i++)
            v[k++] = tsr__window_value(&t->in[i], base[i] + (size_t)(x * sx[i]));
          if (p->scalar_pos == SC_RIGHT)
            v[k++] = p->s[0];
          res = ew_apply(p, v[0], v[1], v[2]);
          if (f32)
            ((float *)t->planes[0])[off + (size_t)x] = (float)res;
          else
            ((double *)t->planes[0])[off + (size_t)x] = res;
        }
      }
  return 0;
}

static const tsr__op_t ew_op = {
    .name = "elementwise",
    .version = 1,
    .flags = TSR__OP_SUBBOX,
    .input_region = ew_input_region,
    .compute = ew_compute,
    .encode = ew_encode,
    .free_params = ew_free,
};

static const char *code_name(int code) {
  static const char *const names[] = {"add", "sub", "mul", "div", "pow", "min", "max",
                                      "abs", "sqrt", "exp", "log", "log10", "isnan",
                                      "lt", "le", "gt", "ge", "eq", "ne"};
  switch (code) {
  case EW_CLIP: return "clip";
  case EW_WHERE: return "where";
  case EW_NAN_TO_NUM: return "nan_to_num";
  case EW_ASTYPE: return "astype";
  default: return code >= 0 && code <= TSR_NE ? names[code] : "elementwise";
  }
}

/* The node of op `code` on arrays in[0..nin) (broadcast) with params p. */
static tsr_node_t *make(tsr_graph_t *g, int code, int nin, tsr_node_t *const *in, int scalar_pos,
                        const double *s, int dtype) {
  const char *op = code_name(code);
  ew_params_t *p;
  tsr_node_t *n, *first = NULL;
  int64_t shape[TSR_MAX_DIMS];
  int ndim = 0;
  bool f64 = false;

  if (!tsr__graph_check(g))
    return NULL;
  for (int i = 0; i < nin; i++)
    if (in[i] == NULL)
      return tsr__graph_fail(g, TSR_EINVAL, "%s: operand %d is NULL", op, i + 1);
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    shape[a] = 1;
    for (int i = 0; i < nin; i++) {
      int64_t m = in[i]->shape[a];
      if (m != 1 && shape[a] != 1 && m != shape[a])
        return tsr__graph_fail(g, TSR_EINVAL,
                               "%s: shapes do not broadcast: axis %d has %lld in %s and %lld in "
                               "an earlier operand; expected equal lengths or 1",
                               op, a + 1, (long long)m, in[i]->name, (long long)shape[a]);
      if (m != 1)
        shape[a] = m;
    }
  }
  for (int i = 0; i < nin; i++) {
    ndim = in[i]->ndim > ndim ? in[i]->ndim : ndim;
    f64 |= in[i]->dtype == TSR_F64;
    if (first == NULL && memcmp(in[i]->shape, shape, sizeof shape) == 0)
      first = in[i];
  }
  if (dtype != 0 && dtype != TSR_F32 && dtype != TSR_F64)
    return tsr__graph_fail(g, TSR_EINVAL, "%s: dtype %d is not float32 or float64", op, dtype);
  p = tsr__calloc(g->ctx, 1, sizeof *p);
  if (p == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op);
  p->code = code;
  p->scalar_pos = scalar_pos;
  for (int k = 0; k < 3; k++)
    p->s[k] = s ? s[k] : 0.0;
  n = tsr__node_alloc(g, &ew_op, p);
  if (n == NULL)
    return NULL;
  n->n_inputs = nin;
  for (int i = 0; i < nin; i++)
    n->inputs[i] = in[i];
  n->ndim = ndim;
  n->dtype = dtype ? (tsr_dtype_t)dtype : f64 ? TSR_F64 : TSR_F32;
  memcpy(n->shape, shape, sizeof shape);
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    n->chunk[a] = first ? first->chunk[a] : shape[a] < 512 ? shape[a] : 512;
  snprintf(n->name, sizeof n->name, "%s#%d", op, g->n_nodes + 1);
  if (first && first->wcs && tsr_wcs_copy(g->ctx, first->wcs, &n->wcs) != 0) {
    tsr__node_discard(n);
    return tsr__graph_fail(g, TSR_ENOMEM, "%s: out of memory", op);
  }
  return tsr__node_finish(n);
}

static bool binary_op(int op) {
  return ((int)op >= TSR_ADD && op <= TSR_MAX) || (op >= TSR_LT && op <= TSR_NE);
}

tsr_node_t *tsr_binary(tsr_graph_t *g, tsr_elementwise_t op, tsr_node_t *a, tsr_node_t *b) {
  tsr_node_t *in[2] = {a, b};
  if (!binary_op(op))
    return tsr__graph_fail(g, TSR_EINVAL, "binary: op %d is not add, sub, mul, div, pow, min, max, "
                           "lt, le, gt, ge, eq or ne", op);
  return make(g, op, 2, in, SC_NONE, NULL, 0);
}

tsr_node_t *tsr_binary_scalar(tsr_graph_t *g, tsr_elementwise_t op, tsr_node_t *a, double s) {
  double sv[3] = {s, 0, 0};
  if (!binary_op(op))
    return tsr__graph_fail(g, TSR_EINVAL, "binary: op %d is not add, sub, mul, div, pow, min, max, "
                           "lt, le, gt, ge, eq or ne", op);
  return make(g, op, 1, &a, SC_RIGHT, sv, 0);
}

tsr_node_t *tsr_scalar_binary(tsr_graph_t *g, tsr_elementwise_t op, double s, tsr_node_t *a) {
  double sv[3] = {s, 0, 0};
  if (!binary_op(op))
    return tsr__graph_fail(g, TSR_EINVAL, "binary: op %d is not add, sub, mul, div, pow, min, max, "
                           "lt, le, gt, ge, eq or ne", op);
  return make(g, op, 1, &a, SC_LEFT, sv, 0);
}

tsr_node_t *tsr_unary(tsr_graph_t *g, tsr_elementwise_t op, tsr_node_t *a) {
  if ((int)op < TSR_ABS || op > TSR_ISNAN)
    return tsr__graph_fail(g, TSR_EINVAL, "unary: op %d is not abs, sqrt, exp, log, log10 or isnan",
                           op);
  return make(g, op, 1, &a, SC_NONE, NULL, 0);
}

tsr_node_t *tsr_clip(tsr_graph_t *g, tsr_node_t *a, double lo, double hi) {
  double s[3] = {lo, hi, 0};
  if (!(lo <= hi))
    return tsr__graph_fail(g, TSR_EINVAL, "clip: bounds [%g, %g]: expected lo <= hi", lo, hi);
  return make(g, EW_CLIP, 1, &a, SC_NONE, s, 0);
}

tsr_node_t *tsr_where(tsr_graph_t *g, tsr_node_t *mask, tsr_node_t *a, tsr_node_t *b) {
  tsr_node_t *in[3] = {mask, a, b};
  return make(g, EW_WHERE, 3, in, SC_NONE, NULL, 0);
}

tsr_node_t *tsr_nan_to_num(tsr_graph_t *g, tsr_node_t *a, double nan, double posinf,
                           double neginf) {
  double s[3] = {nan, posinf, neginf};
  if (a && (isnan(posinf) || isnan(neginf)))
    /* numpy's default: the largest finite values of the type. */
    s[1] = isnan(posinf) ? (a->dtype == TSR_F32 ? FLT_MAX : DBL_MAX) : posinf,
    s[2] = isnan(neginf) ? (a->dtype == TSR_F32 ? -FLT_MAX : -DBL_MAX) : neginf;
  return make(g, EW_NAN_TO_NUM, 1, &a, SC_NONE, s, 0);
}

tsr_node_t *tsr_astype(tsr_graph_t *g, tsr_node_t *a, tsr_dtype_t dtype) {
  if (dtype != TSR_F32 && dtype != TSR_F64)
    return tsr__graph_fail(g, TSR_EINVAL, "astype: dtype %d is not float32 or float64", (int)dtype);
  return make(g, EW_ASTYPE, 1, &a, SC_NONE, NULL, dtype);
}
