/* weights.h -- input weight maps of SWarp's kinds, turned into what the
 * combines use (a variance, +infinity where a pixel has no weight), and
 * data-quality words.  Shared by the mosaic (coadd.c through
 * tsr_variance_map) and any op that takes a weight map pixel by pixel
 * (drizzle's input weights and DQ masks). */
#ifndef TSR_OPS_WEIGHTS_H
#define TSR_OPS_WEIGHTS_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

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

/* A DQ image's value as the 32-bit word it stands for (a FITS integer
 * image read as float: negative int32 values keep their bits). */
static inline uint32_t tsr__dq_word(double q) {
  if (q >= 0 && q < 4294967296.0)
    return (uint32_t)q;
  return q > -9.2e18 && q < 9.2e18 ? (uint32_t)(int64_t)q : 0;
}

/* Is a pixel of DQ value q bad: any of `bits` set, or for bits 0 any
 * nonzero value (a mask)? */
static inline bool tsr__dq_bad(uint32_t bits, double q) {
  return bits ? (tsr__dq_word(q) & bits) != 0 : q != 0;
}

#endif
