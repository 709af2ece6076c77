/* region.c -- boxes of index ranges.
 *
 * DESIGN: regions are zero-based and half-open on every one of TSR_MAX_DIMS
 * axes; axes past a node's ndim are [0, 1).  Everything the planner decides
 * (which chunks meet a request, which input window a block needs) is a region
 * operation, so these helpers take the ndim explicitly and never look at
 * axes beyond it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

bool tsr__region_empty(const tsr_region_t *r, int ndim) {
  for (int a = 0; a < ndim; a++)
    if (r->stop[a] <= r->start[a])
      return true;
  return false;
}

bool tsr__region_intersect(const tsr_region_t *a, const tsr_region_t *b, tsr_region_t *r,
                           int ndim) {
  tsr_region_t t;
  for (int i = 0; i < TSR_MAX_DIMS; i++) {
    if (i < ndim) {
      t.start[i] = a->start[i] > b->start[i] ? a->start[i] : b->start[i];
      t.stop[i] = a->stop[i] < b->stop[i] ? a->stop[i] : b->stop[i];
    } else {
      t.start[i] = 0;
      t.stop[i] = 1;
    }
  }
  *r = t;
  return !tsr__region_empty(&t, ndim);
}

bool tsr__region_within(const tsr_region_t *r, int ndim, const int64_t *shape) {
  for (int a = 0; a < ndim; a++)
    if (r->start[a] < 0 || r->stop[a] > shape[a] || r->stop[a] <= r->start[a])
      return false;
  return true;
}

void tsr__region_full(tsr_region_t *r, int ndim, const int64_t *shape) {
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    r->start[a] = 0;
    r->stop[a] = a < ndim ? shape[a] : 1;
  }
}

void tsr__region_format(const tsr_region_t *r, int ndim, char *buf, size_t cap) {
  size_t used = 0;
  if (cap == 0)
    return;
  buf[0] = '\0';
  used += (size_t)snprintf(buf, cap, "[");
  for (int a = 0; a < ndim && used < cap; a++)
    used += (size_t)snprintf(buf + used, cap - used, "%s%" PRId64 ":%" PRId64, a ? ", " : "",
                             r->start[a], r->stop[a]);
  if (used < cap)
    snprintf(buf + used, cap - used, "]");
}

tsr_region_t tsr_region_of(const tsr_node_t *n) {
  tsr_region_t r;
  tsr__region_full(&r, n->ndim, n->shape);
  return r;
}

int64_t tsr_region_size(const tsr_region_t *r) {
  int64_t s = 1, len;
  bool over = false;
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    if (r->stop[a] <= r->start[a])
      return 0;
    /* A region may come from the caller, unchecked: saturate rather than
     * wrap, so that a size check downstream sees it is too large. */
    over = over || __builtin_sub_overflow(r->stop[a], r->start[a], &len) ||
           __builtin_mul_overflow(s, len, &s);
  }
  return over ? INT64_MAX : s;
}

bool tsr__array_bytes(int ndim, const int64_t *shape, int64_t elem_bytes, int64_t *bytes) {
  int64_t b = elem_bytes;
  for (int a = 0; a < ndim; a++)
    if (shape[a] < 0 || __builtin_mul_overflow(b, shape[a], &b) || b > TSR__MAX_BYTES)
      return false;
  *bytes = b;
  return b <= TSR__MAX_BYTES;
}

void tsr__shape_format(int ndim, const int64_t *shape, char *buf, size_t cap) {
  size_t used = 0;
  if (cap == 0)
    return;
  buf[0] = '\0';
  for (int a = 0; a < ndim && used < cap; a++)
    used += (size_t)snprintf(buf + used, cap - used, "%s%" PRId64, a ? " x " : "", shape[a]);
}
