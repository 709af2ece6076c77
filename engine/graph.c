/* graph.c -- graphs, nodes, keys and build errors.
 *
 * DESIGN: a graph owns its nodes in a singly linked list in creation order,
 * so inputs always come before the nodes that use them and the graph can
 * never hold a cycle.  Building is validated at once: every constructor
 * checks shapes, dtypes, WCS and option ranges, and the first failure is kept
 * on the graph (cfitsio's inherited status) so that later constructors return
 * NULL immediately and the caller checks once.  A node's key hashes the op,
 * its version, its parameters, its shape and dtype, and its inputs' keys;
 * chunk shape is left out because results do not depend on it.  When a new
 * node's key and chunk shape equal an existing node's, the existing node is
 * returned and the new one freed: identical subgraphs are merged.
 */
#include <stdio.h>
#include <string.h>

#include "internal.h"

int tsr_graph_new(tsr_ctx_t *ctx, tsr_graph_t **out) {
  tsr_graph_t *g;
  tsr__api_check(ctx != NULL && out != NULL, "tsr_graph_new: NULL argument");
  *out = NULL;
  g = tsr__calloc(ctx, 1, sizeof *g);
  if (g == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "graph: out of memory");
  g->ctx = ctx;
  ctx->n_graphs++;
  *out = g;
  return 0;
}

static void node_free(tsr_node_t *n) {
  tsr_ctx_t *ctx = n->graph->ctx;
  if (n->op && n->op->free_params && n->params)
    n->op->free_params(ctx, n->params);
  if (n->inputs != n->inputs_inline)
    tsr__free(ctx, n->inputs);
  tsr_wcs_free(n->wcs);
  tsr__free(ctx, n);
}

void tsr_graph_free(tsr_graph_t *g) {
  tsr_node_t *n, *next;
  if (g == NULL)
    return;
  tsr__api_check(g->running == 0, "tsr_graph_free: graph is running");
  for (n = g->first; n; n = next) {
    next = n->next;
    node_free(n);
  }
  g->ctx->n_graphs--;
  tsr__free(g->ctx, g);
}

int tsr_graph_status(const tsr_graph_t *g) { return g->status; }
const char *tsr_graph_errmsg(const tsr_graph_t *g) { return g->errmsg; }

bool tsr__graph_check(tsr_graph_t *g) { return g != NULL && g->status == 0; }

tsr_node_t *tsr__graph_fail_ctx(tsr_graph_t *g, int code) {
  if (g->status == 0) {
    g->status = code;
    snprintf(g->errmsg, sizeof g->errmsg, "%s", tsr_errmsg(g->ctx));
  }
  return NULL;
}

tsr_node_t *tsr__graph_fail(tsr_graph_t *g, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  tsr__verr(g->ctx, code, fmt, ap);
  va_end(ap);
  return tsr__graph_fail_ctx(g, code);
}

tsr_node_t *tsr__node_alloc(tsr_graph_t *g, const tsr__op_t *op, void *params) {
  tsr_node_t *n = tsr__calloc(g->ctx, 1, sizeof *n);
  if (n == NULL) {
    if (op && op->free_params && params)
      op->free_params(g->ctx, params);
    return tsr__graph_fail(g, TSR_ENOMEM, "graph: out of memory creating a %s node",
                           op ? op->name : "plane");
  }
  n->graph = g;
  n->op = op;
  n->params = params;
  n->inputs = n->inputs_inline;
  n->n_planes = 1;
  n->owner = n;
  n->dtype = TSR_F32;
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    n->shape[a] = n->chunk[a] = 1;
  snprintf(n->name, sizeof n->name, "%s#%d", op ? op->name : "plane", g->n_nodes + 1);
  return n;
}

int tsr__node_set_inputs(tsr_node_t *n, int count) {
  if (count < 0 || count > TSR__MAX_INPUTS) {
    tsr__graph_fail(n->graph, TSR_EINVAL, "graph: %d inputs out of range [0, %d]", count,
                    TSR__MAX_INPUTS);
    return TSR_EINVAL;
  }
  if (count > TSR__INLINE_INPUTS) {
    tsr_node_t **in = tsr__calloc(n->graph->ctx, (size_t)count, sizeof *in);
    if (in == NULL) {
      tsr__graph_fail(n->graph, TSR_ENOMEM, "graph: out of memory for %d inputs", count);
      return TSR_ENOMEM;
    }
    if (n->inputs != n->inputs_inline)
      tsr__free(n->graph->ctx, n->inputs);
    n->inputs = in;
  }
  n->n_inputs = count;
  return 0;
}

void tsr__node_discard(tsr_node_t *n) {
  if (n != NULL)
    node_free(n);
}

static void node_compute_key(tsr_node_t *n, tsr__buf_t *b) {
  tsr__buf_put_str(b, n->op ? n->op->name : "plane");
  tsr__buf_put_i64(b, n->op ? (int64_t)n->op->version : 0);
  tsr__buf_put_i64(b, n->ndim);
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    tsr__buf_put_i64(b, n->shape[a]);
  tsr__buf_put_i64(b, n->dtype);
  tsr__buf_put_i64(b, n->plane);
  tsr__buf_put_i64(b, n->n_inputs);
  for (int i = 0; i < n->n_inputs; i++)
    tsr__buf_put(b, n->inputs[i]->key, 16);
  if (n->owner != n)
    tsr__buf_put(b, n->owner->key, 16);
  if (n->op && n->op->encode)
    n->op->encode(n, b);
}

tsr_node_t *tsr__node_finish(tsr_node_t *n) {
  tsr_graph_t *g = n->graph;
  tsr__buf_t b;

  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    if (a >= n->ndim) {
      n->shape[a] = n->chunk[a] = 1;
      continue;
    }
    if (n->chunk[a] <= 0 || n->chunk[a] > n->shape[a])
      n->chunk[a] = n->shape[a];
  }
  {
    int64_t bytes;
    if (!tsr__array_bytes(n->ndim, n->shape, (int64_t)tsr_dtype_size(n->dtype), &bytes)) {
      char name[sizeof n->name], dims[128];
      memcpy(name, n->name, sizeof name);
      tsr__shape_format(n->ndim, n->shape, dims, sizeof dims);
      const char *dt = tsr_dtype_name(n->dtype);
      tsr__node_discard(n);
      return tsr__graph_fail(g, TSR_EINVAL,
                             "%s: image too large: %s %s values is more than 2^60 bytes (1 EiB)",
                             name, dims, dt);
    }
  }
  /* Inputs come only from this graph: a node of another one would be a
   * dangling edge once that graph is freed (nodes are immutable and name
   * their inputs when made, so no cycle can be formed). */
  for (int i = 0; i < n->n_inputs; i++)
    if (n->inputs[i] == NULL || n->inputs[i]->graph != g) {
      char name[sizeof n->name];
      const char *what = n->inputs[i] == NULL ? "NULL" : "a node of another graph";
      memcpy(name, n->name, sizeof name);
      tsr__node_discard(n);
      return tsr__graph_fail(g, TSR_EINVAL,
                             "%s: input %d is %s; a node's inputs must be nodes of its own graph",
                             name, i + 1, what);
    }
  tsr__buf_init(&b, g->ctx);
  node_compute_key(n, &b);
  if (b.oom) {
    tsr__buf_release(&b);
    tsr__node_discard(n);
    return tsr__graph_fail(g, TSR_ENOMEM, "graph: out of memory encoding a node key");
  }
  tsr__hash128(b.p, b.len, n->key);
  tsr__buf_release(&b);

  for (tsr_node_t *m = g->first; m; m = m->next) {
    if (memcmp(m->key, n->key, 16) == 0 &&
        memcmp(m->chunk, n->chunk, sizeof m->chunk) == 0) {
      tsr__node_discard(n);
      return m;
    }
  }
  n->id = ++g->n_nodes;
  if (g->last)
    g->last->next = n;
  else
    g->first = n;
  g->last = n;
  return n;
}

/* A plane view shares the owner's op; computing it computes the owner. */
static tsr_node_t *node_plane(tsr_graph_t *g, tsr_node_t *owner, int plane) {
  tsr_node_t *v;
  if (plane == 0)
    return owner;
  if (owner->planes[plane])
    return owner->planes[plane];
  v = tsr__node_alloc(g, NULL, NULL);
  if (v == NULL)
    return NULL;
  v->owner = owner;
  v->plane = plane;
  v->ndim = owner->ndim;
  v->dtype = owner->dtype;
  memcpy(v->shape, owner->shape, sizeof v->shape);
  memcpy(v->chunk, owner->chunk, sizeof v->chunk);
  if (owner->wcs && tsr_wcs_copy(g->ctx, owner->wcs, &v->wcs) != 0) {
    tsr__node_discard(v);
    return tsr__graph_fail(g, TSR_ENOMEM, "graph: out of memory");
  }
  snprintf(v->name, sizeof v->name, "%s.footprint", owner->name);
  v = tsr__node_finish(v);
  if (v)
    owner->planes[plane] = v;
  return v;
}

tsr_node_t *tsr_footprint(tsr_graph_t *g, tsr_node_t *n) {
  if (!tsr__graph_check(g))
    return NULL;
  if (n == NULL || n->graph != g)
    return tsr__graph_fail(g, TSR_EINVAL, "footprint: node is %s",
                           n == NULL ? "NULL" : "a node of another graph");
  if (n->owner != n || n->n_planes < 2)
    return tsr__graph_fail(g, TSR_EINVAL, "footprint: node %s has no footprint plane", n->name);
  return node_plane(g, n, 1);
}

int tsr_node_ndim(const tsr_node_t *n) { return n->ndim; }
int64_t tsr_node_shape(const tsr_node_t *n, int a) {
  return a >= 0 && a < TSR_MAX_DIMS ? n->shape[a] : 1;
}
int64_t tsr_node_chunk(const tsr_node_t *n, int a) {
  return a >= 0 && a < TSR_MAX_DIMS ? n->chunk[a] : 1;
}
tsr_dtype_t tsr_node_dtype(const tsr_node_t *n) { return n->dtype; }
const tsr_wcs_t *tsr_node_wcs(const tsr_node_t *n) { return n->wcs; }
const char *tsr_node_name(const tsr_node_t *n) { return n->name; }
void tsr_node_key(const tsr_node_t *n, uint8_t key[16]) { memcpy(key, n->key, 16); }
