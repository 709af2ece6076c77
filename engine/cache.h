/* cache.h -- the on-disk chunk cache, as the planner sees it (cache.c).
 * Private to engine/; the public half is tsr_cache_* in tessera.h. */
#ifndef TSR_ENGINE_CACHE_H
#define TSR_ENGINE_CACHE_H

#include "internal.h"

/* Look up the stored chunk of owner node n whose box is `chunk`, and on a
 * hit copy its part `sub` of every wanted plane (dst[p] != NULL) into dst,
 * laid over `dreg` with element strides `stride`.  @return true on a hit.  Any fault (missing, truncated, corrupt, other
 * version, other shape) is a miss; a bad file is deleted and a warning
 * recorded.  Safe in any process forked after tsr_cache_open. */
bool tsr__cache_get(tsr_cache_t *c, const tsr_node_t *n, const tsr_region_t *chunk,
                    const tsr_region_t *sub, const tsr_region_t *dreg, void *const *dst,
                    const int64_t *stride);
/* True if a file for the chunk exists (it may still turn out bad): a cheap
 * test the planner uses to keep probable hits away from the workers. */
bool tsr__cache_has(tsr_cache_t *c, const tsr_node_t *n, const tsr_region_t *chunk);
/* Store a computed chunk: planes[0 .. n->n_planes), each contiguous over
 * `chunk`, axis 0 fastest.  Never fails the
 * caller: a full disk or an unwritable directory turns stores off for this
 * handle with a warning.  May evict least recently used chunks. */
void tsr__cache_put(tsr_cache_t *c, const tsr_node_t *n, const tsr_region_t *chunk,
                    void *const *planes);
/* A run that used the cache ended (in the process that started it): add
 * its hits and misses to <dir>/stats, and if it met warnings, put the last
 * one in ctx's message; ctx is NULL for a failed run, whose message is its
 * error. */
void tsr__cache_run_end(tsr_cache_t *c, tsr_ctx_t *ctx);

#endif
