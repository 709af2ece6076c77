/* overlap.c -- polygon overlap for reproject_exact, in the plane and on the
 * unit sphere.
 *
 * reproject_exact models a pixel as the spherical quadrilateral whose edges
 * are the great-circle arcs between its corners (REFERENCE.md 3.3).  Both
 * polygons of a pair are convex and small, so one algorithm serves both
 * geometries: Sutherland-Hodgman clipping of one polygon by the half-spaces
 * of the other's edges.  In the plane a half-space is the left side of an
 * edge line; on the sphere it is the hemisphere n . v >= 0 with n = a x b the
 * pole of the edge's great circle, and the crossing of an arc with a great
 * circle is the normalised chord point (b (n.a) - a (n.b)) / (n.a - n.b),
 * which lies on the short arc between a and b.
 *
 * Areas: planar polygons by the shoelace formula; spherical polygons by
 * their spherical excess (Girard), summed over a fan of triangles with the
 * Oosterom-Strackee formula tan(E/2) = a.(b x c) / (1 + a.b + b.c + c.a),
 * which keeps full relative precision for tiny triangles where summing
 * interior angles loses it all.
 *
 * Small pairs (all eight vertices within TSR__PLANAR_RAD of their mean, the
 * 0.20 criterion of reproject #589) are projected gnomonically onto the
 * tangent plane at that mean.  Gnomonic projection maps great circles to
 * straight lines, so the projected polygons are exactly the spherical ones;
 * the ratio of their areas differs from the ratio of solid angles only by the
 * variation of the projection's area scale (1 + r^2)^(-3/2) over the pair,
 * below 2e-8 for r <= 1e-4.  Coordinates relative to the tangent point keep
 * the precision that differences of nearly equal unit vectors would lose.
 */
#include <math.h>

#include "overlap.h"

double tsr__poly_area(const double *x, const double *y, int n) {
  double s = 0.0;
  if (n < 3)
    return 0.0;
  /* Relative to the first vertex, so that far-off coordinates cancel. */
  for (int i = 1; i + 1 < n; i++)
    s += (x[i] - x[0]) * (y[i + 1] - y[0]) - (x[i + 1] - x[0]) * (y[i] - y[0]);
  return 0.5 * s;
}

/* Clip (px, py, n) by the half-plane  s * ((x - ax) * dy - (y - ay) * dx) <= 0
 * is written out per box edge below; this is the general edge version. */
static int clip_edge_cap(const double *px, const double *py, int n, double ax, double ay,
                         double bx, double by, double sgn, double *ox, double *oy, int cap) {
  int m = 0;
  double ex = bx - ax, ey = by - ay;
  if (n == 0)
    return 0;
  double prevd = sgn * (ex * (py[n - 1] - ay) - ey * (px[n - 1] - ax));
  double qx = px[n - 1], qy = py[n - 1];
  for (int i = 0; i < n; i++) {
    double d = sgn * (ex * (py[i] - ay) - ey * (px[i] - ax));
    if ((d >= 0) != (prevd >= 0) && m < cap) {
      double t = prevd / (prevd - d);
      ox[m] = qx + t * (px[i] - qx);
      oy[m++] = qy + t * (py[i] - qy);
    }
    if (d >= 0 && m < cap) {
      ox[m] = px[i];
      oy[m++] = py[i];
    }
    prevd = d, qx = px[i], qy = py[i];
  }
  return m;
}

static int clip_edge(const double *px, const double *py, int n, double ax, double ay, double bx,
                     double by, double sgn, double *ox, double *oy) {
  return clip_edge_cap(px, py, n, ax, ay, bx, by, sgn, ox, oy, TSR__POLY_MAX);
}

int tsr__clip_convex(const double *px, const double *py, int np, const double *qx,
                     const double *qy, int nq, double *ox, double *oy) {
  double ax[TSR__POLY_MAX], ay[TSR__POLY_MAX], bx[TSR__POLY_MAX], by[TSR__POLY_MAX];
  double sgn = tsr__poly_area(qx, qy, nq) >= 0 ? 1.0 : -1.0;
  int n = np < TSR__POLY_MAX ? np : TSR__POLY_MAX;
  for (int i = 0; i < n; i++)
    ax[i] = px[i], ay[i] = py[i];
  for (int e = 0; e < nq && n > 0; e++) {
    int f = (e + 1) % nq;
    n = clip_edge(ax, ay, n, qx[e], qy[e], qx[f], qy[f], sgn, bx, by);
    for (int i = 0; i < n; i++)
      ax[i] = bx[i], ay[i] = by[i];
  }
  for (int i = 0; i < n; i++)
    ox[i] = ax[i], oy[i] = ay[i];
  return n;
}

int tsr__clip_convex_n(const double *px, const double *py, int np, const double *qx,
                       const double *qy, int nq, double *scratch, int cap, double *ox,
                       double *oy) {
  double *ax = scratch, *ay = ax + cap, *bx = ay + cap, *by = bx + cap;
  double sgn = tsr__poly_area(qx, qy, nq) >= 0 ? 1.0 : -1.0;
  int n = np < cap ? np : cap;
  for (int i = 0; i < n; i++)
    ax[i] = px[i], ay[i] = py[i];
  for (int e = 0; e < nq && n > 0; e++) {
    int f = (e + 1) % nq;
    n = clip_edge_cap(ax, ay, n, qx[e], qy[e], qx[f], qy[f], sgn, bx, by, cap);
    if (n >= cap)
      return -1;
    for (int i = 0; i < n; i++)
      ax[i] = bx[i], ay[i] = by[i];
  }
  for (int i = 0; i < n; i++)
    ox[i] = ax[i], oy[i] = ay[i];
  return n;
}

double tsr__gnomonic_area(const double *x, const double *y, int n) {
  double s = 0.0;
  for (int i = 0; i < n; i++) {
    int j = i + 1 < n ? i + 1 : 0;
    double n1 = sqrt(1.0 + x[i] * x[i] + y[i] * y[i]), n2 = sqrt(1.0 + x[j] * x[j] + y[j] * y[j]);
    double num = x[i] * y[j] - x[j] * y[i];
    double den = n1 * n2 + n1 + n2 + x[i] * x[j] + y[i] * y[j] + 1.0;
    s += 2.0 * atan2(num, den);
  }
  return s;
}

/* Keep the part of (x, y, n) with s * coord <= s * lim, where coord is x
 * (axis 0) or y (axis 1).  Axis-aligned, so cheaper than clip_edge. */
static int clip_axis(const double *x, const double *y, int n, int axis, double lim, double s,
                     double *ox, double *oy) {
  int m = 0;
  const double *c = axis == 0 ? x : y;
  double pd = s * (lim - c[n - 1]);
  double qx = x[n - 1], qy = y[n - 1];
  for (int i = 0; i < n; i++) {
    double d = s * (lim - c[i]);
    if ((d >= 0) != (pd >= 0)) {
      double t = pd / (pd - d);
      if (axis == 0) {
        ox[m] = lim;
        oy[m++] = qy + t * (y[i] - qy);
      } else {
        ox[m] = qx + t * (x[i] - qx);
        oy[m++] = lim;
      }
    }
    if (d >= 0) {
      ox[m] = x[i];
      oy[m++] = y[i];
    }
    pd = d, qx = x[i], qy = y[i];
  }
  return m;
}

double tsr__quad_box_area(const double qx[4], const double qy[4], double x0, double x1, double y0,
                          double y1) {
  double ax[TSR__POLY_MAX], ay[TSR__POLY_MAX], bx[TSR__POLY_MAX], by[TSR__POLY_MAX];
  int n;
  double lx = fmin(fmin(qx[0], qx[1]), fmin(qx[2], qx[3]));
  double hx = fmax(fmax(qx[0], qx[1]), fmax(qx[2], qx[3]));
  double ly = fmin(fmin(qy[0], qy[1]), fmin(qy[2], qy[3]));
  double hy = fmax(fmax(qy[0], qy[1]), fmax(qy[2], qy[3]));
  if (hx <= x0 || lx >= x1 || hy <= y0 || ly >= y1)
    return 0.0;
  if (lx >= x0 && hx <= x1 && ly >= y0 && hy <= y1)
    return fabs(tsr__poly_area(qx, qy, 4));
  /* Each pass adds at most one vertex: 4 -> 8 at most. */
  n = 4;
  for (int i = 0; i < 4; i++)
    ax[i] = qx[i], ay[i] = qy[i];
  if (lx < x0)
    n = clip_axis(ax, ay, n, 0, x0, -1.0, bx, by);
  else
    for (int i = 0; i < n; i++)
      bx[i] = ax[i], by[i] = ay[i];
  if (n && hx > x1)
    n = clip_axis(bx, by, n, 0, x1, 1.0, ax, ay);
  else
    for (int i = 0; i < n; i++)
      ax[i] = bx[i], ay[i] = by[i];
  if (n && ly < y0)
    n = clip_axis(ax, ay, n, 1, y0, -1.0, bx, by);
  else
    for (int i = 0; i < n; i++)
      bx[i] = ax[i], by[i] = ay[i];
  if (n && hy > y1)
    n = clip_axis(bx, by, n, 1, y1, 1.0, ax, ay);
  else
    for (int i = 0; i < n; i++)
      ax[i] = bx[i], ay[i] = by[i];
  return fabs(tsr__poly_area(ax, ay, n));
}

static inline double dot3(const double *a, const double *b) {
  return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
}

static inline void cross3(const double *a, const double *b, double *r) {
  r[0] = a[1] * b[2] - a[2] * b[1];
  r[1] = a[2] * b[0] - a[0] * b[2];
  r[2] = a[0] * b[1] - a[1] * b[0];
}

static inline void normalize3(double *v) {
  double r = sqrt(dot3(v, v));
  if (r > 0)
    v[0] /= r, v[1] /= r, v[2] /= r;
}

/* Signed excess of triangle (a, b, c): positive when counter-clockwise seen
 * from outside the sphere. */
static double tri_excess(const double *a, const double *b, const double *c) {
  double bc[3];
  cross3(b, c, bc);
  double num = dot3(a, bc);
  double den = 1.0 + dot3(a, b) + dot3(b, c) + dot3(c, a);
  return 2.0 * atan2(num, den);
}

double tsr__sph_area(const double *v, int n) {
  double s = 0.0;
  for (int i = 1; i + 1 < n; i++)
    s += tri_excess(v, v + 3 * i, v + 3 * (i + 1));
  return fabs(s);
}

/* Clip spherical polygon p (n vertices) by the convex polygon q (4 vertices);
 * returns the vertex count written to out. */
static int sph_clip(const double *p, int n, const double *q, double *out) {
  double a[3 * TSR__POLY_MAX], b[3 * TSR__POLY_MAX], c[3] = {0, 0, 0}, s = 0.0;
  for (int i = 0; i < 4; i++)
    for (int k = 0; k < 3; k++)
      c[k] += q[3 * i + k];
  for (int i = 0; i < 4; i++) {
    double e[3];
    cross3(q + 3 * i, q + 3 * ((i + 1) % 4), e);
    s += dot3(c, e);
  }
  for (int i = 0; i < 3 * n; i++)
    a[i] = p[i];
  for (int e = 0; e < 4 && n > 0; e++) {
    double nrm[3];
    const double *q0 = q + 3 * e, *q1 = q + 3 * ((e + 1) % 4);
    int m = 0;
    if (s >= 0)
      cross3(q0, q1, nrm);
    else
      cross3(q1, q0, nrm);
    double pd = dot3(nrm, a + 3 * (n - 1));
    const double *pv = a + 3 * (n - 1);
    for (int i = 0; i < n; i++) {
      const double *v = a + 3 * i;
      double d = dot3(nrm, v);
      if ((d >= 0) != (pd >= 0) && m < TSR__POLY_MAX) {
        double *o = b + 3 * m++;
        double den = pd - d;
        for (int k = 0; k < 3; k++)
          o[k] = (v[k] * pd - pv[k] * d) / den;
        normalize3(o);
      }
      if (d >= 0 && m < TSR__POLY_MAX) {
        double *o = b + 3 * m++;
        o[0] = v[0], o[1] = v[1], o[2] = v[2];
      }
      pd = d, pv = v;
    }
    n = m;
    for (int i = 0; i < 3 * n; i++)
      a[i] = b[i];
  }
  for (int i = 0; i < 3 * n; i++)
    out[i] = a[i];
  return n;
}

double tsr__sph_overlap_frac(const double p[12], const double q[12], double qarea) {
  double c[3] = {0, 0, 0}, r2 = 0.0;
  for (int i = 0; i < 4; i++)
    for (int k = 0; k < 3; k++)
      c[k] += p[3 * i + k] + q[3 * i + k];
  normalize3(c);
  if (!(c[0] == c[0]))
    return 0.0;
  for (int i = 0; i < 4; i++) {
    double dp[3] = {p[3 * i] - c[0], p[3 * i + 1] - c[1], p[3 * i + 2] - c[2]};
    double dq[3] = {q[3 * i] - c[0], q[3 * i + 1] - c[1], q[3 * i + 2] - c[2]};
    r2 = fmax(r2, fmax(dot3(dp, dp), dot3(dq, dq)));
  }
  if (!(r2 == r2))
    return 0.0;
  if (r2 < TSR__PLANAR_RAD * TSR__PLANAR_RAD) {
    /* Tangent plane at c: east = z x c (or x x c at the pole), north = c x east. */
    double e1[3], e2[3], px[4], py[4], qx[4], qy[4], ox[TSR__POLY_MAX], oy[TSR__POLY_MAX];
    static const double zaxis[3] = {0, 0, 1}, xaxis[3] = {1, 0, 0};
    cross3(fabs(c[2]) < 0.9 ? zaxis : xaxis, c, e1);
    normalize3(e1);
    cross3(c, e1, e2);
    for (int i = 0; i < 4; i++) {
      double tp = dot3(p + 3 * i, c), tq = dot3(q + 3 * i, c);
      px[i] = dot3(p + 3 * i, e1) / tp, py[i] = dot3(p + 3 * i, e2) / tp;
      qx[i] = dot3(q + 3 * i, e1) / tq, qy[i] = dot3(q + 3 * i, e2) / tq;
    }
    double aq = fabs(tsr__poly_area(qx, qy, 4));
    if (!(aq > 0))
      return 0.0;
    int n = tsr__clip_convex(px, py, 4, qx, qy, 4, ox, oy);
    double f = fabs(tsr__poly_area(ox, oy, n)) / aq;
    return f > 1.0 ? 1.0 : f;
  }
  {
    double o[3 * TSR__POLY_MAX];
    if (!(qarea > 0))
      qarea = tsr__sph_area(q, 4);
    if (!(qarea > 0))
      return 0.0;
    int n = sph_clip(p, 4, q, o);
    double f = n >= 3 ? tsr__sph_area(o, n) / qarea : 0.0;
    return f == f ? (f > 1.0 ? 1.0 : f) : 0.0;
  }
}
