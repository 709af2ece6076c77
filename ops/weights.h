/* weights.h -- input weight maps of SWarp's kinds, turned into what the
 * combines use (a variance, +infinity where a pixel has no weight).  Shared
 * by the mosaic (coadd.c through tsr_variance_map) and any op that takes a
 * weight map pixel by pixel (drizzle's input weights). */
#ifndef TSR_OPS_WEIGHTS_H
#define TSR_OPS_WEIGHTS_H

#include <math.h>

#include "internal.h"

/* The default WEIGHT_THRESH of a weight type: 0 for MAP_WEIGHT (weights
 * <= 0 are bad), +infinity for the others (no variance is too large). */
static inline double tsr__weight_thresh_default(int type) {
  return type == TSR_WEIGHT_MAP_WEIGHT ? 0.0 : INFINITY;
}

/* The variance a weight-map value `m` of type `type` (a tsr_weight_type_t;
 * for TSR_WEIGHT_BACKGROUND, m is the background RMS) stands for under
 * SWarp's WEIGHT_THRESH `thresh`: MAP_WEIGHT 1/m where m > thresh, the
 * others m (MAP_VARIANCE) or m^2 where 0 < m < thresh; +infinity for a bad
 * or non-finite pixel. */
static inline double tsr__weight_to_variance(int type, double thresh, double m) {
  if (!(m == m) || m == INFINITY)
    return INFINITY;
  if (type == TSR_WEIGHT_MAP_WEIGHT)
    return m > thresh && m > 0 ? 1.0 / m : INFINITY;
  if (!(m > 0 && m < thresh))
    return INFINITY;
  return type == TSR_WEIGHT_MAP_VARIANCE ? m : m * m;
}

/* The weight (inverse variance, 0 where bad) of the same value. */
static inline double tsr__weight_from_map(int type, double thresh, double m) {
  return 1.0 / tsr__weight_to_variance(type, thresh, m);
}

#endif
