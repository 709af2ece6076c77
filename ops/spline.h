/* spline.h -- B-spline interpolation (orders 2 and 3) for reproject_interp. */
#ifndef TSR_OPS_SPLINE_H
#define TSR_OPS_SPLINE_H

#include "internal.h"

typedef struct tsr__spline_s tsr__spline_t;

/* The run's spline state: coefficient tiles kept for the run.  One per
 * input node and process; free with tsr__spline_free. */
int tsr__spline_new(tsr_ctx_t *ctx, tsr__spline_t **out);

/* Grow the input window `win` (input pixels, already holding the support of
 * every coordinate of the task) so that it also holds the margin of every
 * coefficient tile under it that is not cached yet for input planes
 * [plane0, plane0 + nplanes), and promise the cached ones to the task:
 * they stay until the next call.  Call right before the task's compute. */
void tsr__spline_window(tsr__spline_t *sp, tsr_region_t *win, const int64_t *in_shape,
                        int64_t plane0, int64_t nplanes);

/* Interpolate one input plane `src` (dtype dt, big-endian if be, rows
 * `row_stride` elements apart, laid over window `win` of an
 * input of shape in_shape) at the bw x bh coordinates xin/yin, into plane
 * (z, q) (relative to the task's region) of the task's data (planes[0]) and
 * footprint (planes[1]).  `plane_id` names the input plane for the tile
 * cache, which lives in *sp for the whole run (one input node per *sp); free
 * with tsr__spline_free. */
int tsr__spline_run(tsr_ctx_t *ctx, tsr__spline_t **sp, int order, const void *src,
                    int64_t row_stride, tsr_dtype_t dt, bool be, const tsr_region_t *win,
                    const int64_t *in_shape,
                    const double *xin, const double *yin, int64_t bw, int64_t bh,
                    tsr__task_t *t, int64_t z, int64_t q, int64_t plane_id);
void tsr__spline_free(tsr_ctx_t *ctx, tsr__spline_t *sp);

#endif
