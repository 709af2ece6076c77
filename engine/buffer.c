/* buffer.c -- caller memory as a source node.
 *
 * DESIGN: tsr_source_buffer copies the caller's array, tsr_source_buffer_ref
 * borrows it (zstd's byCopy / byRef).  Either way the key hashes the bytes,
 * so two buffers with equal contents and WCS are the same node.  Reading a
 * window is a strided copy; nothing is converted (the node has the buffer's
 * dtype).
 */
#include <inttypes.h>
#include <string.h>
#include <xxhash.h>

#include "internal.h"

typedef struct {
  const void *data;
  void *owned;           /* == data when copied, else NULL */
  int64_t stride[TSR_MAX_DIMS];
  uint8_t content[16];   /* hash of the bytes */
} buffer_params_t;

static int buffer_compute(tsr__task_t *t) {
  const buffer_params_t *bp = t->node->params;
  size_t es = tsr_dtype_size(t->node->dtype);
  const tsr_region_t *r = &t->out;
  int64_t nx = r->stop[0] - r->start[0];
  for (int64_t w = r->start[3]; w < r->stop[3]; w++)
    for (int64_t z = r->start[2]; z < r->stop[2]; z++)
      for (int64_t y = r->start[1]; y < r->stop[1]; y++) {
        size_t src = (size_t)(r->start[0] + y * bp->stride[1] + z * bp->stride[2] + w * bp->stride[3]);
        size_t dst = tsr__task_offset(t, 0, y - r->start[1], z - r->start[2], w - r->start[3]);
        memcpy((char *)t->planes[0] + dst * es, (const char *)bp->data + src * es, (size_t)nx * es);
      }
  return 0;
}

static void buffer_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const buffer_params_t *bp = n->params;
  tsr__buf_put(b, bp->content, 16);
  if (n->wcs)
    tsr__wcs_encode(n->wcs, b);
}

static void buffer_free(tsr_ctx_t *ctx, void *params) {
  buffer_params_t *bp = params;
  tsr__free(ctx, bp->owned);
  tsr__free(ctx, bp);
}

/* The window in place in the caller's (or our copy of its) memory, for
 * ops that take views: no copy of a box of which they read a thin part. */
static bool buffer_view(tsr_node_t *n, void *state, const tsr_region_t *win, const void **data,
                        int64_t stride[TSR_MAX_DIMS], bool *big_endian) {
  const buffer_params_t *bp = n->params;
  size_t off = 0;
  (void)state;
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    stride[a] = bp->stride[a];
    off += (size_t)(win->start[a] * bp->stride[a]);
  }
  *data = (const char *)bp->data + off * tsr_dtype_size(n->dtype);
  *big_endian = false;
  return true;
}

static const tsr__op_t buffer_op = {
    .name = "buffer",
    .version = 1,
    .flags = TSR__OP_SOURCE | TSR__OP_SUBBOX,
    .compute = buffer_compute,
    .encode = buffer_encode,
    .free_params = buffer_free,
    .view = buffer_view,
};

static tsr_node_t *make_buffer(tsr_graph_t *g, tsr_dtype_t dtype, int ndim, const int64_t *shape,
                               const void *data, const tsr_wcs_t *wcs, bool copy) {
  tsr_ctx_t *ctx;
  buffer_params_t *bp;
  tsr_node_t *n;
  int64_t nbytes_i;
  size_t nbytes;

  if (!tsr__graph_check(g))
    return NULL;
  ctx = g->ctx;
  if (dtype != TSR_F32 && dtype != TSR_F64)
    return tsr__graph_fail(g, TSR_EINVAL, "source_buffer: dtype %d is not float32 (1) or float64 (2)",
                           (int)dtype);
  if (ndim < 1 || ndim > TSR_MAX_DIMS)
    return tsr__graph_fail(g, TSR_EINVAL, "source_buffer: ndim %d out of range [1, %d]", ndim,
                           TSR_MAX_DIMS);
  if (shape == NULL || data == NULL)
    return tsr__graph_fail(g, TSR_EINVAL, "source_buffer: shape or data is NULL");
  for (int a = 0; a < ndim; a++) {
    if (shape[a] < 1 || shape[a] > (INT64_C(1) << 40))
      return tsr__graph_fail(g, TSR_EINVAL,
                             "source_buffer: axis %d has length %" PRId64 ", expected 1 to 2^40", a,
                             shape[a]);
  }
  if (!tsr__array_bytes(ndim, shape, (int64_t)tsr_dtype_size(dtype), &nbytes_i)) {
    char dims[128];
    tsr__shape_format(ndim, shape, dims, sizeof dims);
    return tsr__graph_fail(g, TSR_EINVAL,
                           "source_buffer: image too large: %s values is more than 2^60 bytes", dims);
  }
  if (wcs && wcs->naxis >= 1 && wcs->naxis > ndim)
    return tsr__graph_fail(g, TSR_EINVAL, "source_buffer: WCS has %d axes but the array has %d",
                           wcs->naxis, ndim);
  nbytes = (size_t)nbytes_i;
  bp = tsr__calloc(ctx, 1, sizeof *bp);
  if (bp == NULL)
    return tsr__graph_fail(g, TSR_ENOMEM, "source_buffer: out of memory");
  if (copy) {
    bp->owned = tsr__malloc(ctx, nbytes);
    if (bp->owned == NULL) {
      tsr__free(ctx, bp);
      return tsr__graph_fail(g, TSR_ENOMEM, "source_buffer: out of memory copying %zu bytes", nbytes);
    }
    memcpy(bp->owned, data, nbytes);
    bp->data = bp->owned;
  } else {
    bp->data = data;
  }
  tsr__hash128(bp->data, nbytes, bp->content);
  bp->stride[0] = 1;
  for (int a = 1; a < TSR_MAX_DIMS; a++)
    bp->stride[a] = bp->stride[a - 1] * (a - 1 < ndim ? shape[a - 1] : 1);

  n = tsr__node_alloc(g, &buffer_op, bp);
  if (n == NULL)
    return NULL;
  n->ndim = ndim;
  n->dtype = dtype;
  for (int a = 0; a < ndim; a++)
    n->shape[a] = n->chunk[a] = shape[a];
  if (wcs && tsr_wcs_copy(ctx, wcs, &n->wcs) != 0) {
    tsr__node_discard(n);
    return tsr__graph_fail(g, TSR_ENOMEM, "source_buffer: out of memory");
  }
  return tsr__node_finish(n);
}

tsr_node_t *tsr_source_buffer(tsr_graph_t *g, tsr_dtype_t dtype, int ndim, const int64_t *shape,
                              const void *data, const tsr_wcs_t *wcs) {
  return make_buffer(g, dtype, ndim, shape, data, wcs, true);
}

tsr_node_t *tsr_source_buffer_ref(tsr_graph_t *g, tsr_dtype_t dtype, int ndim,
                                  const int64_t *shape, const void *data, const tsr_wcs_t *wcs) {
  return make_buffer(g, dtype, ndim, shape, data, wcs, false);
}

bool tsr__buffer_overlaps(const tsr_graph_t *g, const void *p, size_t n) {
  const char *a = p;
  for (const tsr_node_t *nd = g->first; nd; nd = nd->next) {
    const buffer_params_t *bp = nd->params;
    size_t bytes = tsr_dtype_size(nd->dtype);
    if (nd->op != &buffer_op)
      continue;
    for (int k = 0; k < nd->ndim; k++)
      bytes *= (size_t)nd->shape[k];
    if (a < (const char *)bp->data + bytes && (const char *)bp->data < a + n)
      return true;
  }
  return false;
}
