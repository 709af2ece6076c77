/* overlap.h -- pure geometry for reproject_exact: polygon clipping and areas,
 * in the plane and on the unit sphere.  No WCS here; see overlap.c. */
#ifndef TSR_OPS_OVERLAP_H
#define TSR_OPS_OVERLAP_H

/* Most vertices a clipped convex polygon can have: a quadrilateral clipped by
 * the four edges of another gains at most one vertex per edge. */
#define TSR__POLY_MAX 16

/* Signed shoelace area of a planar polygon (positive when counter-clockwise). */
double tsr__poly_area(const double *x, const double *y, int n);

/* Area of the convex quadrilateral (qx, qy) (either orientation) inside the
 * box [x0, x1] x [y0, y1]. */
double tsr__quad_box_area(const double qx[4], const double qy[4], double x0, double x1, double y0,
                          double y1);

/* Sutherland-Hodgman: clip the polygon (px, py, np) against the convex
 * polygon (qx, qy, nq) (either orientation).  Writes at most TSR__POLY_MAX
 * vertices to (ox, oy) and returns their number (0 when they do not meet). */
int tsr__clip_convex(const double *px, const double *py, int np, const double *qx,
                     const double *qy, int nq, double *ox, double *oy);

/* Solid angle (steradians) of the convex spherical polygon with unit-vector
 * vertices v (n x 3, either orientation, edges great-circle arcs). */
double tsr__sph_area(const double *v, int n);

/* Overlap of two convex spherical quadrilaterals p and q (4 x 3 unit vectors
 * each, either orientation) as a fraction of the area of q.  When all eight
 * vertices lie within TSR__PLANAR_RAD of their mean direction both are
 * projected gnomonically onto the tangent plane there (where great circles
 * are straight lines, so the polygons are exact) and clipped in the plane;
 * otherwise they are clipped on the sphere and measured by spherical excess.
 * `qarea` is q's solid angle for the spherical path (pass <= 0 to have it
 * computed).  Returns a value in [0, 1] (0 for degenerate input). */
#define TSR__PLANAR_RAD 1e-4
double tsr__sph_overlap_frac(const double p[12], const double q[12], double qarea);

#endif
