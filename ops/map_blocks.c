/* map_blocks.c -- user kernels in C on the lazy graph (dask's map_blocks).
 *
 * The user gives a callback, the output's shape, type and chunks, a halo,
 * and a name plus parameter bytes that identify the computation: those go
 * into the node's key (with the inputs' keys), so the chunk cache can keep
 * its results and identical calls merge.  The callback pointer does not:
 * two different callbacks under one name and parameters are the user's
 * error.  A block reads each input over the block grown by the halo
 * (clipped at the edges); pool workers are forked from the caller, so the
 * callback and its user pointer are valid there without copies.
 *
 * tsr_source_callback is the same with no inputs, as a source: the leaf for
 * data that lives in another system (a dask graph, a strided or non-float
 * array converted as it is read).  Like a FITS source, the engine asks it
 * for exactly the window a task needs, once per task, never the whole
 * array unless a task needs all of it; being a source (TSR__OP_SOURCE) it
 * is never cached nor split into chunks: one call fills one window.  Its
 * key adds the WCS, so equal descriptions merge and the cache keys of what
 * is computed from it are stable across processes.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

typedef struct {
  tsr_block_fn fn;
  void *user;
  char *name;
  unsigned char *bytes;
  size_t len;
  int64_t halo[TSR_MAX_DIMS];
} mb_params_t;

static void mb_free(tsr_ctx_t *ctx, void *p) {
  mb_params_t *mp = p;
  if (mp == NULL)
    return;
  tsr__free(ctx, mp->name);
  tsr__free(ctx, mp->bytes);
  tsr__free(ctx, mp);
}

static void mb_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const mb_params_t *p = n->params;
  tsr__buf_put_str(b, p->name);
  tsr__buf_put_i64(b, (int64_t)p->len);
  tsr__buf_put(b, p->bytes, p->len);
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    tsr__buf_put_i64(b, p->halo[a]);
}

static int mb_input_region(tsr_node_t *n, void *state, int i, const tsr_region_t *out,
                           tsr_region_t *win, bool *empty) {
  const mb_params_t *p = n->params;
  (void)state, (void)i;
  *empty = false;
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    win->start[a] = out->start[a] - p->halo[a];
    win->stop[a] = out->stop[a] + p->halo[a];
  }
  return 0; /* the engine clips it to the input */
}

static int mb_compute(tsr__task_t *t) {
  const tsr_node_t *n = t->node;
  const mb_params_t *p = n->params;
  tsr_block_t b;
  const void *ins_inline[8];
  tsr_region_t regs_inline[8];
  tsr_dtype_t types_inline[8];
  const void **ins = ins_inline;
  tsr_region_t *regs = regs_inline;
  tsr_dtype_t *types = types_inline;
  void *out = t->planes[0];
  int64_t ext[TSR_MAX_DIMS];
  int rc;
  bool contiguous = true;

  if (t->n_in > 8) {
    ins = tsr__calloc(t->ctx, (size_t)t->n_in, sizeof *ins);
    regs = tsr__calloc(t->ctx, (size_t)t->n_in, sizeof *regs);
    types = tsr__calloc(t->ctx, (size_t)t->n_in, sizeof *types);
    if (!ins || !regs || !types) {
      rc = tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory", n->name);
      goto out;
    }
  }
  for (int i = 0; i < t->n_in; i++) {
    ins[i] = t->in[i].data;
    regs[i] = t->in[i].win;
    types[i] = t->in[i].node->dtype;
  }
  /* The callback writes C-contiguous over the block; the destination may be
   * laid out wider (a band of a request), so go through a buffer then. */
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    ext[a] = t->out.stop[a] - t->out.start[a];
  {
    int64_t s = 1;
    for (int a = 0; a < TSR_MAX_DIMS; a++) {
      if (ext[a] > 1 && t->stride[a] != s)
        contiguous = false;
      s *= ext[a];
    }
  }
  if (!contiguous || out == NULL) {
    out = tsr__mallocarray(t->ctx, (size_t)tsr_region_size(&t->out), tsr_dtype_size(n->dtype));
    if (out == NULL) {
      rc = tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory for a block", n->name);
      goto out;
    }
  }
  memset(&b, 0, sizeof b);
  b.out = t->out;
  b.data = out;
  b.dtype = n->dtype;
  b.n_inputs = t->n_in;
  b.inputs = ins;
  b.in_regions = regs;
  b.in_dtypes = types;
  b.sparse = t->sparse;
  rc = p->fn(p->user, &b);
  if (rc != 0) {
    char where[128];
    tsr__region_format(&t->out, n->ndim, where, sizeof where);
    rc = tsr__err(t->ctx, rc < 0 ? rc : TSR_EINVAL, "%s: the callback failed (returned %d) on block %s",
                  n->name, rc, where);
  } else if (out != t->planes[0] && t->planes[0]) {
    int64_t st[TSR_MAX_DIMS];
    tsr__contiguous_strides(&t->out, st);
    tsr__copy_box(t->planes[0], &t->out, t->stride, out, &t->out, st, &t->out,
                  tsr_dtype_size(n->dtype));
  }
  if (out != t->planes[0])
    tsr__free(t->ctx, out);
out:
  if (ins != ins_inline) {
    tsr__free(t->ctx, (void *)ins);
    tsr__free(t->ctx, regs);
    tsr__free(t->ctx, types);
  }
  return rc;
}

static const tsr__op_t mb_op = {
    .name = "map_blocks",
    .version = 1,
    .flags = TSR__OP_SUBBOX,
    .input_region = mb_input_region,
    .compute = mb_compute,
    .encode = mb_encode,
    .free_params = mb_free,
};

tsr_node_t *tsr_map_blocks(tsr_graph_t *g, int n, tsr_node_t *const *inputs, tsr_block_fn fn,
                           void *user, const tsr_map_blocks_opts_t *opts) {
  mb_params_t *p;
  tsr_node_t *node;
  const tsr_node_t *ref;
  int ndim;

  if (!tsr__graph_check(g))
    return NULL;
  if (fn == NULL || opts == NULL || opts->name == NULL || opts->name[0] == '\0')
    return tsr__graph_fail(g, TSR_EINVAL, "map_blocks: expected a callback and options with a name");
  if (n < 0 || (n > 0 && inputs == NULL))
    return tsr__graph_fail(g, TSR_EINVAL, "map_blocks \"%s\": %d inputs", opts->name, n);
  if (opts->dtype != TSR_F32 && opts->dtype != TSR_F64)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "map_blocks \"%s\": output dtype %d; expected float32 or float64",
                           opts->name, opts->dtype);
  if (opts->params_len > 0 && opts->params == NULL)
    return tsr__graph_fail(g, TSR_EINVAL, "map_blocks \"%s\": %zu parameter bytes at NULL",
                           opts->name, opts->params_len);
  for (int i = 0; i < n; i++)
    if (inputs[i] == NULL)
      return tsr__graph_fail(g, TSR_EINVAL, "map_blocks \"%s\": input %d is NULL", opts->name, i + 1);
  ref = n > 0 ? inputs[0] : NULL;
  ndim = opts->ndim ? opts->ndim : ref ? ref->ndim : 0;
  if (ndim < 1 || ndim > TSR_MAX_DIMS)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "map_blocks \"%s\": %d axes; expected 1 to 4 (or inputs to copy the "
                           "shape from)",
                           opts->name, ndim);
  p = tsr__calloc(g->ctx, 1, sizeof *p);
  if (p == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "map_blocks: out of memory");
  p->fn = fn, p->user = user, p->len = opts->params_len;
  p->name = tsr__malloc(g->ctx, strlen(opts->name) + 1);
  p->bytes = tsr__malloc(g->ctx, p->len + 1);
  if (p->name == NULL || p->bytes == NULL) {
    mb_free(g->ctx, p);
    return tsr__graph_fail(g, TSR_ENOMEM, "map_blocks: out of memory");
  }
  strcpy(p->name, opts->name);
  if (p->len)
    memcpy(p->bytes, opts->params, p->len);
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    p->halo[a] = a < ndim ? opts->halo[a] : 0;
    if (p->halo[a] < 0 || p->halo[a] > (1 << 20)) {
      mb_free(g->ctx, p);
      return tsr__graph_fail(g, TSR_EINVAL, "map_blocks \"%s\": halo %lld on axis %d; expected 0 "
                                            "to 1048576", opts->name, (long long)opts->halo[a], a + 1);
    }
  }
  node = tsr__node_alloc(g, &mb_op, p);
  if (node == NULL)
    return NULL;
  if (tsr__node_set_inputs(node, n) != 0) {
    tsr__node_discard(node);
    return NULL;
  }
  for (int i = 0; i < n; i++)
    node->inputs[i] = inputs[i];
  node->ndim = ndim;
  node->dtype = (tsr_dtype_t)opts->dtype;
  for (int a = 0; a < ndim; a++) {
    node->shape[a] = opts->shape[a] ? opts->shape[a] : ref ? ref->shape[a] : 0;
    node->chunk[a] = opts->chunk[a] ? opts->chunk[a] : ref ? ref->chunk[a] : node->shape[a];
    if (node->shape[a] < 1 || node->chunk[a] < 1) {
      tsr__node_discard(node);
      return tsr__graph_fail(g, TSR_EINVAL,
                             "map_blocks \"%s\": axis %d has length %lld and chunk %lld; expected "
                             "both >= 1",
                             opts->name, a + 1, (long long)node->shape[a], (long long)node->chunk[a]);
    }
  }
  for (int i = 0; i < n; i++)
    for (int a = 0; a < TSR_MAX_DIMS; a++)
      if (inputs[i]->shape[a] != node->shape[a]) {
        long long got = (long long)inputs[i]->shape[a], want = (long long)node->shape[a];
        tsr__node_discard(node);
        return tsr__graph_fail(g, TSR_EINVAL,
                               "map_blocks \"%s\": input %d has %lld on axis %d but the output "
                               "has %lld; inputs must have the output's shape",
                               opts->name, i + 1, got, a + 1, want);
      }
  snprintf(node->name, sizeof node->name, "%.60s#%d", opts->name, g->n_nodes + 1);
  {
    const tsr_wcs_t *w = opts->wcs ? opts->wcs : ref ? ref->wcs : NULL;
    if (w && tsr_wcs_copy(g->ctx, w, &node->wcs) != 0) {
      tsr__node_discard(node);
      return tsr__graph_fail(g, TSR_ENOMEM, "map_blocks: out of memory");
    }
  }
  return tsr__node_finish(node);
}

static void cb_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const mb_params_t *p = n->params;
  tsr__buf_put_str(b, p->name);
  tsr__buf_put_i64(b, (int64_t)p->len);
  tsr__buf_put(b, p->bytes, p->len);
  if (n->wcs)
    tsr__wcs_encode(n->wcs, b);
}

static int cb_compute(tsr__task_t *t) {
  const tsr_node_t *n = t->node;
  const mb_params_t *p = n->params;
  size_t es = tsr_dtype_size(n->dtype);
  int64_t st[TSR_MAX_DIMS];
  tsr_block_t b;
  void *out = t->planes[0];
  bool contiguous = true;
  int rc;

  if (out == NULL)
    return 0;
  /* The callback writes C-contiguous over the window; a destination laid
   * out wider (a band of a FITS output) goes through a buffer. */
  tsr__contiguous_strides(&t->out, st);
  for (int a = 1; a < TSR_MAX_DIMS; a++)
    if (t->out.stop[a] - t->out.start[a] > 1 && t->stride[a] != st[a])
      contiguous = false;
  if (!contiguous &&
      (out = tsr__mallocarray(t->ctx, (size_t)tsr_region_size(&t->out), es)) == NULL)
    return tsr__err(t->ctx, TSR_ENOMEM, "%s: out of memory for a window of %" PRId64 " values",
                    n->name, tsr_region_size(&t->out));
  memset(&b, 0, sizeof b);
  b.out = t->out;
  b.data = out;
  b.dtype = n->dtype;
  b.sparse = t->sparse;
  rc = p->fn(p->user, &b);
  if (rc != 0) {
    char where[128];
    tsr__region_format(&t->out, n->ndim, where, sizeof where);
    rc = tsr__err(t->ctx, rc < 0 ? rc : TSR_EINVAL,
                  "%s: the callback failed (returned %d) on window %s", n->name, rc, where);
  } else if (out != t->planes[0]) {
    tsr__copy_box(t->planes[0], &t->out, t->stride, out, &t->out, st, &t->out, es);
  }
  if (out != t->planes[0])
    tsr__free(t->ctx, out);
  return rc;
}

static const tsr__op_t cb_op = {
    .name = "source_callback",
    .version = 1,
    .flags = TSR__OP_SOURCE | TSR__OP_SUBBOX,
    .compute = cb_compute,
    .encode = cb_encode,
    .free_params = mb_free,
};

tsr_node_t *tsr_source_callback(tsr_graph_t *g, tsr_block_fn fn, void *user,
                                const tsr_source_callback_opts_t *opts) {
  mb_params_t *p;
  tsr_node_t *node;

  if (!tsr__graph_check(g))
    return NULL;
  if (fn == NULL || opts == NULL || opts->name == NULL || opts->name[0] == '\0')
    return tsr__graph_fail(g, TSR_EINVAL, "source_callback: expected a callback and options with a name");
  if (opts->dtype != TSR_F32 && opts->dtype != TSR_F64)
    return tsr__graph_fail(g, TSR_EINVAL,
                           "source_callback \"%s\": dtype %d; expected float32 (1) or float64 (2)",
                           opts->name, opts->dtype);
  if (opts->ndim < 1 || opts->ndim > TSR_MAX_DIMS)
    return tsr__graph_fail(g, TSR_EINVAL, "source_callback \"%s\": %d axes; expected 1 to %d",
                           opts->name, opts->ndim, TSR_MAX_DIMS);
  if (opts->params_len > 0 && opts->params == NULL)
    return tsr__graph_fail(g, TSR_EINVAL, "source_callback \"%s\": %zu parameter bytes at NULL",
                           opts->name, opts->params_len);
  for (int a = 0; a < opts->ndim; a++)
    if (opts->shape[a] < 1 || opts->shape[a] > (INT64_C(1) << 40))
      return tsr__graph_fail(g, TSR_EINVAL,
                             "source_callback \"%s\": axis %d has length %" PRId64
                             "; expected 1 to 2^40",
                             opts->name, a + 1, opts->shape[a]);
  if (opts->wcs && opts->wcs->naxis > opts->ndim)
    return tsr__graph_fail(g, TSR_EINVAL, "source_callback \"%s\": WCS has %d axes but the array has %d",
                           opts->name, opts->wcs->naxis, opts->ndim);
  p = tsr__calloc(g->ctx, 1, sizeof *p);
  if (p == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "source_callback: out of memory");
  p->fn = fn, p->user = user, p->len = opts->params_len;
  p->name = tsr__strdup(g->ctx, opts->name);
  p->bytes = tsr__malloc(g->ctx, p->len + 1);
  if (p->name == NULL || p->bytes == NULL) {
    mb_free(g->ctx, p);
    return tsr__graph_fail(g, TSR_ENOMEM, "source_callback: out of memory");
  }
  if (p->len)
    memcpy(p->bytes, opts->params, p->len);
  node = tsr__node_alloc(g, &cb_op, p);
  if (node == NULL)
    return NULL;
  node->ndim = opts->ndim;
  node->dtype = (tsr_dtype_t)opts->dtype;
  for (int a = 0; a < opts->ndim; a++)
    node->shape[a] = node->chunk[a] = opts->shape[a];
  snprintf(node->name, sizeof node->name, "%.60s#%d", opts->name, g->n_nodes + 1);
  if (opts->wcs && tsr_wcs_copy(g->ctx, opts->wcs, &node->wcs) != 0) {
    tsr__node_discard(node);
    return tsr__graph_fail(g, TSR_ENOMEM, "source_callback: out of memory");
  }
  return tsr__node_finish(node);
}
