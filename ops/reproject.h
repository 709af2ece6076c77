/* reproject.h -- what the three reprojection ops share: checking a source
 * and target pair, and building the node (data and footprint planes). */
#ifndef TSR_OPS_REPROJECT_H
#define TSR_OPS_REPROJECT_H

#include "internal.h"

/* Default output blocks, measured on the ANCHORS case and a 16384^2 one:
 * 256^2 is 15-26% faster than 512^2 while the input fits the 256 MiB that
 * io maps whole (windows stay in cache); past that, where each window is
 * mapped on its own, 512^2 is 25% faster (fewer overlapping windows to
 * fault in). */
#define TSR__DEFAULT_BLOCK 256
#define TSR__DEFAULT_BLOCK_LARGE 512
#define TSR__LARGE_INPUT_BYTES ((int64_t)256 << 20)

/* The checks every reprojection makes the same way: the input has a WCS
 * and 2 or more axes, the target 2 celestial (or, for interp and adaptive,
 * linear: tsr__cel_open) axes with a shape and extra
 * axes equal to the input's, dtype and block in range, and both WCSs parse
 * into a mapping (frames included).  `op` names the op in messages.  On
 * failure the error is on the graph and false is returned. */
bool tsr__reproject_check(tsr_graph_t *g, const char *op, const tsr_node_t *src,
                          const tsr_wcs_t *target, int dtype, const int64_t block[2]);

/* The reprojection node of `op` with `params` (ownership passes, even on
 * failure): the target's shape plus the input's extra axes, chunks of
 * `block` (0 = default) by whole extra axes, two planes (data and
 * footprint), dtype as asked or following the input, and the target's WCS
 * with the input's extra-axis keywords.  NULL with the error on the graph. */
tsr_node_t *tsr__reproject_node(tsr_graph_t *g, const tsr__op_t *op, void *params,
                                tsr_node_t *src, const tsr_wcs_t *target, int dtype,
                                const int64_t block[2]);

/* The input window that output box `out`, grown by `grow` pixels, needs:
 * the bounds of its mapped boundary widened by `halo` input pixels and 1%
 * of their extent (curvature between boundary samples), or the whole input
 * where the mapping is undefined in part of the box or jumps (seams).  Sets
 * *empty when nothing maps or the bounds miss the input.  Axes past 1 are
 * copied from `out`. */
struct tsr__map_s;
int tsr__reproject_window(struct tsr__map_s *m, const tsr_region_t *out, int64_t grow,
                          const tsr_node_t *in, double halo, tsr_region_t *win, bool *empty);

#endif
