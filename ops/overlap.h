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

/* tsr__clip_convex for polygons of any size: the subject (px, py, np) may
 * be concave (Sutherland-Hodgman then leaves zero-width bridges along the
 * clipper's edges, which add no area).  `scratch` holds 4 cap doubles; at
 * most `cap` vertices go to (ox, oy).  Returns their number, or -1 when
 * cap would be exceeded. */
int tsr__clip_convex_n(const double *px, const double *py, int np, const double *qx,
                       const double *qy, int nq, double *scratch, int cap, double *ox,
                       double *oy);

/* Solid angle (steradians, signed: positive counter-clockwise) of the
 * spherical polygon with great-circle edges whose gnomonic coordinates
 * about a tangent point c are (x, y): the sum over its edges of the signed
 * triangles (c, p_i, p_i+1), each by Oosterom-Strackee written in the
 * plane's coordinates, tan(E / 2) = (x1 y2 - x2 y1) / (n1 n2 + n1 + n2 +
 * x1 x2 + y1 y2 + 1) with n = sqrt(1 + x^2 + y^2).  Exact (no small-angle
 * approximation) and with full relative precision for polygons near c,
 * since no difference of nearly equal unit vectors is taken. */
double tsr__gnomonic_area(const double *x, const double *y, int n);

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
