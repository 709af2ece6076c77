/* mapping.h -- output pixel -> input pixel coordinates for reprojection. */
#ifndef TSR_OPS_MAPPING_H
#define TSR_OPS_MAPPING_H

#include "internal.h"

typedef struct tsr__map_s tsr__map_t;

/* The mapping from pixels of `out` to pixels of `in` (celestial axes, or
 * linear onto linear in the same units: tsr__cel_open).  `tol` is the
 * largest interpolation error allowed, in input pixels (0 = exact
 * transforms at every pixel); `roundtrip` sets NaN where mapping back moves
 * a pixel by more than 1 (reproject's roundtrip_coords).  Owned by the
 * calling process. */
int tsr__map_new(tsr_ctx_t *ctx, const tsr_wcs_t *out, const char *out_what,
                 const tsr_wcs_t *in, const char *in_what, double tol, bool roundtrip,
                 tsr__map_t **m);
void tsr__map_free(tsr__map_t *m);

/* Input coordinates of every output pixel of [x0,x1) x [y0,y1), row-major
 * into xin/yin ((x1-x0)*(y1-y0) each); NaN where undefined.  The values do
 * not depend on the box: the grid is anchored to the global pixel grid. */
int tsr__map_box(tsr__map_t *m, int64_t x0, int64_t x1, int64_t y0, int64_t y1, double *xin,
                 double *yin);

/* Exact transforms of n output pixel positions (any, not a box) into
 * xi/yi; NaN where undefined.  For callers that interpolate the mapping
 * their own way (drizzle's pixmap). */
int tsr__map_points(tsr__map_t *m, size_t n, const double *xo, const double *yo, double *xi,
                    double *yi);

/* Bounds of the input coordinates of the box: *none when nothing maps,
 * *full when the mapping is undefined in part of the box or jumps (seams),
 * else [lo, hi] per axis. */
int tsr__map_bounds(tsr__map_t *m, int64_t x0, int64_t x1, int64_t y0, int64_t y1,
                    int64_t in_nx, int64_t in_ny, double lo[2], double hi[2], bool *none,
                    bool *full);

/* Which mapping is used: "homography", "grid" or "exact" (for info). */
const char *tsr__map_kind(const tsr__map_t *m);

/* When the mapping is a homography, copy it to H (row-major 3 x 3, output
 * pixel (x, y, 1) -> input (u, v, w), defined where w > 0) and return true.
 * tsr__map_box evaluates it exactly as tsr__map_homog_point does, so a kernel
 * may compute coordinates itself and get the same bits. */
bool tsr__map_homography(const tsr__map_t *m, double H[9]);

/* The homography at one pixel, with tsr__map_box's arithmetic. */
static inline void tsr__map_homog_point(const double H[9], double x, double y, double *u,
                                        double *v) {
  double bu = H[1] * y + H[2], bv = H[4] * y + H[5], bw = H[7] * y + H[8];
  double w = H[6] * x + bw;
  if (w > 0) {
    double r = 1.0 / w;
    *u = (H[0] * x + bu) * r;
    *v = (H[3] * x + bv) * r;
  } else {
    *u = *v = __builtin_nan("");
  }
}

#endif
