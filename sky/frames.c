/* frames.c -- celestial frames and the transformations between them, as
 * astropy defines them.
 *
 * DESIGN: tessera reprojects what reproject (astropy) reprojects, so a
 * frame change must land where astropy's does, to well under a
 * milli-arcsecond.  That means more than the right constants: astropy walks
 * a transform graph (ICRS - FK5 - FK4NoETerms - FK4, FK5 - Galactic,
 * FK4NoETerms - Galactic, Galactic - Supergalactic, ICRS - ecliptic) along
 * the shortest path, and the frames it passes through take their
 * attributes (equinox, obstime) from the target frame, else from the
 * source, else their defaults (CompositeTransform).  FK4 -> Galactic thus
 * goes through FK4NoETerms with the B1950 definition of the Galactic pole,
 * and FK4 -> FK5 precesses with Newcomb's Besselian formulae to the FK5
 * equinox before the FK4 -> FK5 matrix undoes it.  Every edge here is
 * astropy's edge, step for step:
 *
 *   ICRS <-> FK5         frame bias (USNO circular 179), IAU 2006 precession
 *                        (ERFA bp06, Capitaine et al. 2003) between equinoxes
 *   FK5 <-> FK4NoETerms  Murray (1989) B1950 -> J2000 matrix with the FK4
 *                        rotation correction at the obstime (the inverse
 *                        direction uses the transpose, as astropy does),
 *                        Newcomb precession on the FK4 side
 *   FK4NoETerms <-> FK4  E-terms of aberration of the FK4 equinox: removed
 *                        in closed form, added by astropy's ten iterations
 *   FK5 / FK4NoETerms <-> Galactic  the J2000 / B1950 pole and longitude
 *   Galactic <-> Supergalactic      de Vaucouleurs' pole (47.37, +6.32)
 *   ICRS <-> ecliptic    ERFA ecm06 at the equinox (IAU 2006, no nutation)
 *
 * A path's steps collapse to at most: E-terms removed (an FK4 source), one
 * rotation, E-terms added (an FK4 target), since FK4 is a leaf of the graph.
 * The ERFA formulae (bp06, pfw06, obl06, obl80, epb2jd) are written out here
 * from the IAU 2006 papers; libERFA is not a dependency.  Everything is
 * plain arithmetic on the caller's data, so any thread may call it.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "sky.h"

#define DJ00 2451545.0              /* J2000.0, TT Julian date */
#define DJC 36525.0                 /* days per Julian century */
#define DTY 365.242198781           /* days per tropical year (ERFA epb) */
#define AS2R (M_PI / (180.0 * 3600.0))
#define DEG2R (M_PI / 180.0)

double tsr__sky_byear_jd(double byear) { return 2415020.31352 + (byear - 1900.0) * DTY; }
double tsr__sky_jyear_jd(double jyear) { return DJ00 + (jyear - 2000.0) * 365.25; }
double tsr__sky_jd_byear(double jd) { return 1900.0 + (jd - 2415020.31352) / DTY; }
double tsr__sky_jd_jyear(double jd) { return 2000.0 + (jd - DJ00) / 365.25; }

/* ------------------------------------------------------------------ */
/* 3 x 3 matrices, row-major                                           */

static const double ident[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};

/* astropy's rotation_matrix(angle, axis) (= ERFA's Rx, Ry, Rz): rotates
 * the coordinate frame by `a` radians. */
static void rot(int axis, double a, double m[9]) {
  double c = cos(a), s = sin(a);
  memset(m, 0, 9 * sizeof *m);
  if (axis == 0) {
    m[0] = 1, m[4] = c, m[5] = s, m[7] = -s, m[8] = c;
  } else if (axis == 1) {
    m[0] = c, m[2] = -s, m[4] = 1, m[6] = s, m[8] = c;
  } else {
    m[0] = c, m[1] = s, m[3] = -s, m[4] = c, m[8] = 1;
  }
}

/* r = a b (r may be a or b). */
static void mul(const double a[9], const double b[9], double r[9]) {
  double t[9];
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++)
      t[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
  memcpy(r, t, sizeof t);
}

/* m = R(axis, a) m, as ERFA's eraRx / eraRz. */
static void pre_rot(int axis, double a, double m[9]) {
  double r[9];
  rot(axis, a, r);
  mul(r, m, m);
}

static void transpose(double m[9]) {
  for (int i = 0; i < 3; i++)
    for (int j = i + 1; j < 3; j++) {
      double t = m[3 * i + j];
      m[3 * i + j] = m[3 * j + i];
      m[3 * j + i] = t;
    }
}

/* ------------------------------------------------------------------ */
/* Precession and the constants of the edges                           */

/* Mean obliquity, IAU 2006 (ERFA obl06) and IAU 1980 (obl80), radians. */
static double obl06(double jd) {
  double t = (jd - DJ00) / DJC;
  return (84381.406 +
          (-46.836769 + (-0.0001831 + (0.00200340 + (-0.000000576 + (-0.0000000434) * t) * t) * t) * t) *
              t) *
         AS2R;
}

static double obl80(double jd) {
  double t = (jd - DJ00) / DJC;
  return AS2R * (84381.448 + (-46.8150 + (-0.00059 + (0.001813) * t) * t) * t);
}

/* Bias-precession matrix, IAU 2006, from the Fukushima-Williams angles
 * (ERFA pfw06 + fw2m = pmat06): GCRS -> mean equator and equinox of date. */
static void pmat06(double jd, double m[9]) {
  double t = (jd - DJ00) / DJC;
  double gamb =
      (-0.052928 + (10.556378 + (0.4932044 + (-0.00031238 + (-0.000002788 + (0.0000000260) * t) * t) * t) * t) * t) *
      AS2R;
  double phib =
      (84381.412819 + (-46.811016 + (0.0511268 + (0.00053289 + (-0.000000440 + (-0.0000000176) * t) * t) * t) * t) * t) *
      AS2R;
  double psib =
      (-0.041775 + (5038.481484 + (1.5584175 + (-0.00018522 + (-0.000026452 + (-0.0000000148) * t) * t) * t) * t) * t) *
      AS2R;
  double epsa = obl06(jd);
  memcpy(m, ident, sizeof ident);
  pre_rot(2, gamb, m);
  pre_rot(0, phib, m);
  pre_rot(2, -psib, m);
  pre_rot(0, -epsa, m);
}

/* The precession part of ERFA bp06 (its rp): J2000 mean -> mean of date. */
static void prec06(double jd, double m[9]) {
  double rb[9];
  pmat06(DJ00, rb); /* the frame bias: the bias-precession matrix at J2000 */
  transpose(rb);
  pmat06(jd, m);
  mul(m, rb, m);
}

/* FK5 precession between two equinoxes (astropy's
 * precession_matrix_Capitaine: rp(to) rp(from)^T). */
static void prec_fk5(double from_jd, double to_jd, double m[9]) {
  double a[9];
  if (from_jd == to_jd) {
    memcpy(m, ident, sizeof ident);
    return;
  }
  prec06(from_jd, a);
  transpose(a);
  prec06(to_jd, m);
  mul(m, a, m);
}

/* FK4 precession by Newcomb's method between Besselian epochs (astropy's
 * _precession_matrix_besselian). */
static void prec_fk4(double from_jd, double to_jd, double m[9]) {
  double e1 = tsr__sky_jd_byear(from_jd), e2 = tsr__sky_jd_byear(to_jd);
  double t1 = (e1 - 1850.0) / 1000.0, dt = (e2 - 1850.0) / 1000.0 - t1;
  double zeta1 = 23035.545 + t1 * 139.720 + 0.060 * t1 * t1, zeta2 = 30.240 - 0.27 * t1,
         zeta3 = 17.995;
  double z1 = 23035.545 + t1 * 139.720 + 0.060 * t1 * t1, z2 = 109.480 + 0.39 * t1, z3 = 18.325;
  double th1 = 20051.12 - 85.29 * t1 - 0.37 * t1 * t1, th2 = -42.65 - 0.37 * t1, th3 = -41.8;
  double zeta = ((zeta3 * dt + zeta2) * dt + zeta1) * dt / 3600.0;
  double z = ((z3 * dt + z2) * dt + z1) * dt / 3600.0;
  double theta = ((th3 * dt + th2) * dt + th1) * dt / 3600.0;
  double a[9];
  if (from_jd == to_jd) {
    memcpy(m, ident, sizeof ident);
    return;
  }
  rot(2, -z * DEG2R, m);
  rot(1, theta * DEG2R, a);
  mul(m, a, m);
  rot(2, -zeta * DEG2R, a);
  mul(m, a, m);
}

/* ICRS -> FK5 J2000: the frame bias of USNO circular 179. */
static void icrs_to_fk5_j2000(double m[9]) {
  double a[9];
  rot(0, 19.9 / 3600000.0 * DEG2R, m);
  rot(1, 9.1 / 3600000.0 * DEG2R, a);
  mul(m, a, m);
  rot(2, -22.9 / 3600000.0 * DEG2R, a);
  mul(m, a, m);
}

/* FK4 (no E-terms) B1950 -> FK5 J2000 at an epoch of observation
 * (Murray 1989, eqs. 28-29, astropy's _fk4_B_matrix). */
static void fk4_b_matrix(double obstime_jd, double m[9]) {
  static const double b[9] = {0.9999256794956877, -0.0111814832204662, -0.0048590038153592,
                              0.0111814832391717, +0.9999374848933135, -0.0000271625947142,
                              0.0048590037723143, -0.0000271702937440, +0.9999881946023742};
  static const double corr[9] = {-0.0026455262, -1.1539918689, +2.1111346190,
                                 +1.1540628161, -0.0129042997, +0.0236021478,
                                 -2.1112979048, -0.0056024448, +0.0102587734};
  double t = (tsr__sky_jd_jyear(obstime_jd) - 1950.0) / 100.0;
  for (int i = 0; i < 9; i++)
    m[i] = b[i] + corr[i] * 1.0e-6 * t;
}

/* The E-terms of aberration vector of an FK4 equinox (astropy's
 * fk4_e_terms: eccentricity and perigee from the Explanatory Supplement,
 * IAU 1980 obliquity). */
static void fk4_e_terms(double equinox_jd, double a[3]) {
  const double jd1950 = tsr__sky_byear_jd(1950.0);
  double t = (equinox_jd - jd1950) / DJC;
  double k = 0.0056932 * DEG2R;
  double e = (-0.000000126 * t + -0.00004193) * t + 0.01673011;
  double g = (((0.012 * t + 1.65) * t + 6190.67) * t + 1015489.951) / 3600.0 * DEG2R;
  double o = obl80(equinox_jd);
  a[0] = e * k * sin(g);
  a[1] = -e * k * cos(g) * cos(o);
  a[2] = -e * k * cos(g) * sin(o);
}

/* Equatorial -> Galactic from the pole (ra, dec) and the longitude of the
 * celestial pole lon0, degrees (astropy's fk5_to_gal / fk4_to_gal): the
 * J2000 definition from FK5, the B1950 one (Blaauw et al. 1960) from
 * FK4NoETerms, each after precessing to its epoch. */
static void equatorial_to_gal(double ra, double dec, double lon0, const double prec[9], double m[9]) {
  double a[9];
  rot(2, (180.0 - lon0) * DEG2R, m);
  rot(1, (90.0 - dec) * DEG2R, a);
  mul(m, a, m);
  rot(2, ra * DEG2R, a);
  mul(m, a, m);
  mul(m, prec, m);
}

static void fk5_to_gal(double equinox_jd, double m[9]) {
  double p[9];
  prec_fk5(equinox_jd, DJ00, p);
  equatorial_to_gal(192.8594812065348, 27.12825118085622, 122.9319185680026, p, m);
}

static void fk4_to_gal(double equinox_jd, double m[9]) {
  double p[9];
  prec_fk4(equinox_jd, tsr__sky_byear_jd(1950.0), p);
  equatorial_to_gal(192.25, 27.4, 123.0, p, m);
}

static void gal_to_supergal(double m[9]) {
  double a[9];
  rot(2, 90.0 * DEG2R, m);
  rot(1, (90.0 - 6.32) * DEG2R, a);
  mul(m, a, m);
  rot(2, 47.37 * DEG2R, a);
  mul(m, a, m);
}

/* ICRS -> mean ecliptic and equinox of date (ERFA ecm06). */
static void ecm06(double jd, double m[9]) {
  pmat06(jd, m);
  pre_rot(0, obl06(jd), m);
}

/* ------------------------------------------------------------------ */
/* Frames                                                             */

tsr__frame_t tsr__frame_default(tsr__frame_kind_t kind) {
  tsr__frame_t f = {kind, 0.0, 0.0};
  if (kind == TSR__SKY_FK4 || kind == TSR__SKY_FK4_NO_E)
    f.equinox = f.obstime = tsr__sky_byear_jd(1950.0);
  else if (kind == TSR__SKY_FK5 || kind == TSR__SKY_ECLIPTIC)
    f.equinox = DJ00;
  return f;
}

static const struct {
  const char *name;
  tsr__frame_kind_t kind;
} frame_names[] = {
    {"icrs", TSR__SKY_ICRS},         {"fk5", TSR__SKY_FK5},
    {"fk4", TSR__SKY_FK4},           {"fk4-no-e", TSR__SKY_FK4_NO_E},
    {"fk4noeterms", TSR__SKY_FK4_NO_E}, {"galactic", TSR__SKY_GALACTIC},
    {"supergalactic", TSR__SKY_SUPERGALACTIC}, {"ecliptic", TSR__SKY_ECLIPTIC},
    {"barycentricmeanecliptic", TSR__SKY_ECLIPTIC},
};

int tsr__frame_parse(const char *s, tsr__frame_t *f) {
  for (size_t i = 0; s != NULL && i < sizeof frame_names / sizeof frame_names[0]; i++)
    if (strcasecmp(s, frame_names[i].name) == 0) {
      *f = tsr__frame_default(frame_names[i].kind);
      return 0;
    }
  return -1;
}

void tsr__frame_name(const tsr__frame_t *f, char *buf, size_t cap) {
  switch (f->kind) {
  case TSR__SKY_FK5:
    snprintf(buf, cap, "FK5(J%g)", tsr__sky_jd_jyear(f->equinox));
    break;
  case TSR__SKY_FK4:
  case TSR__SKY_FK4_NO_E:
    snprintf(buf, cap, "%s(B%g)", f->kind == TSR__SKY_FK4 ? "FK4" : "FK4-NO-E",
             tsr__sky_jd_byear(f->equinox));
    break;
  case TSR__SKY_GALACTIC:
    snprintf(buf, cap, "Galactic");
    break;
  case TSR__SKY_SUPERGALACTIC:
    snprintf(buf, cap, "Supergalactic");
    break;
  case TSR__SKY_ECLIPTIC:
    snprintf(buf, cap, "Ecliptic(J%g)", tsr__sky_jd_jyear(f->equinox));
    break;
  case TSR__SKY_LINEAR:
    snprintf(buf, cap, "linear");
    break;
  default:
    snprintf(buf, cap, "ICRS");
  }
}

static bool has_equinox(tsr__frame_kind_t k) {
  return k == TSR__SKY_FK5 || k == TSR__SKY_FK4 || k == TSR__SKY_FK4_NO_E || k == TSR__SKY_ECLIPTIC;
}

static bool has_obstime(tsr__frame_kind_t k) { return k == TSR__SKY_FK4 || k == TSR__SKY_FK4_NO_E; }

bool tsr__frame_equal(const tsr__frame_t *a, const tsr__frame_t *b) {
  return a->kind == b->kind && (!has_equinox(a->kind) || a->equinox == b->equinox) &&
         (!has_obstime(a->kind) || a->obstime == b->obstime);
}

/* ------------------------------------------------------------------ */
/* The transform graph                                                 */

#define N_KINDS 8 /* sky kinds are 1..7; TSR__SKY_LINEAR is in no graph */

/* astropy's edges (transforms registered between distinct classes). */
static bool edge(int a, int b) {
  static const int edges[][2] = {
      {TSR__SKY_ICRS, TSR__SKY_FK5},          {TSR__SKY_FK5, TSR__SKY_FK4_NO_E},
      {TSR__SKY_FK4_NO_E, TSR__SKY_FK4},      {TSR__SKY_FK5, TSR__SKY_GALACTIC},
      {TSR__SKY_FK4_NO_E, TSR__SKY_GALACTIC}, {TSR__SKY_GALACTIC, TSR__SKY_SUPERGALACTIC},
      {TSR__SKY_ICRS, TSR__SKY_ECLIPTIC},
  };
  for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++)
    if ((edges[i][0] == a && edges[i][1] == b) || (edges[i][0] == b && edges[i][1] == a))
      return true;
  return false;
}

/* The shortest path from kind a to kind b (breadth first; this graph has
 * no two shortest paths between the same frames, so this is the path
 * astropy's Dijkstra finds).  Returns its length in nodes, a and b included. */
static int path(int a, int b, int out[N_KINDS]) {
  int prev[N_KINDS], queue[N_KINDS], head = 0, tail = 0, n = 0, rev[N_KINDS];
  for (int i = 0; i < N_KINDS; i++)
    prev[i] = -1;
  prev[a] = a;
  queue[tail++] = a;
  while (head < tail) {
    int u = queue[head++];
    for (int v = 1; v < N_KINDS; v++)
      if (prev[v] < 0 && edge(u, v)) {
        prev[v] = u;
        queue[tail++] = v;
      }
  }
  for (int v = b; v != a; v = prev[v])
    rev[n++] = v;
  rev[n++] = a;
  for (int i = 0; i < n; i++)
    out[i] = rev[n - 1 - i];
  return n;
}

/* Steps of a transform being built: matrices are multiplied into m until
 * an E-terms step, which may only come first (removal) or last (addition). */
typedef struct {
  tsr__frame_xform_t *x;
} build_t;

static void step_matrix(build_t *b, const double m[9]) {
  mul(m, b->x->m, b->x->m);
}

static void step_eterms(build_t *b, bool add, double equinox_jd) {
  if (add) {
    fk4_e_terms(equinox_jd, b->x->eout);
    b->x->eout_on = true;
  } else {
    fk4_e_terms(equinox_jd, b->x->ein);
    b->x->ein_on = true;
  }
}

/* The edges that are one matrix, each in one direction (the frame with
 * the attributes it needs on either side); astropy defines every reverse
 * as the transpose of the forward matrix with the same attributes. */
static void icrs_fk5(const tsr__frame_t *f, const tsr__frame_t *t, double m[9]) {
  double a[9];
  (void)f;
  prec_fk5(DJ00, t->equinox, m);
  icrs_to_fk5_j2000(a);
  mul(m, a, m);
}

static void fk5_fk5(const tsr__frame_t *f, const tsr__frame_t *t, double m[9]) {
  prec_fk5(f->equinox, t->equinox, m);
}

static void fk4noe_fk4noe(const tsr__frame_t *f, const tsr__frame_t *t, double m[9]) {
  prec_fk4(f->equinox, t->equinox, m);
}

static void fk5_gal(const tsr__frame_t *f, const tsr__frame_t *t, double m[9]) {
  (void)t;
  fk5_to_gal(f->equinox, m);
}

static void fk4noe_gal(const tsr__frame_t *f, const tsr__frame_t *t, double m[9]) {
  (void)t;
  fk4_to_gal(f->equinox, m);
}

static void gal_sgal(const tsr__frame_t *f, const tsr__frame_t *t, double m[9]) {
  (void)f, (void)t;
  gal_to_supergal(m);
}

static void icrs_ecl(const tsr__frame_t *f, const tsr__frame_t *t, double m[9]) {
  (void)f;
  ecm06(t->equinox, m);
}

static void ecl_ecl(const tsr__frame_t *f, const tsr__frame_t *t, double m[9]) {
  double a[9]; /* astropy's merged transform, through ICRS */
  ecm06(f->equinox, a);
  transpose(a);
  ecm06(t->equinox, m);
  mul(m, a, m);
}

static const struct {
  tsr__frame_kind_t from, to;
  void (*fn)(const tsr__frame_t *f, const tsr__frame_t *t, double m[9]);
} matrix_edges[] = {
    {TSR__SKY_ICRS, TSR__SKY_FK5, icrs_fk5},
    {TSR__SKY_FK5, TSR__SKY_FK5, fk5_fk5},
    {TSR__SKY_FK4_NO_E, TSR__SKY_FK4_NO_E, fk4noe_fk4noe},
    {TSR__SKY_FK5, TSR__SKY_GALACTIC, fk5_gal},
    {TSR__SKY_FK4_NO_E, TSR__SKY_GALACTIC, fk4noe_gal},
    {TSR__SKY_GALACTIC, TSR__SKY_SUPERGALACTIC, gal_sgal},
    {TSR__SKY_ICRS, TSR__SKY_ECLIPTIC, icrs_ecl},
    {TSR__SKY_ECLIPTIC, TSR__SKY_ECLIPTIC, ecl_ecl},
};

/* One edge of astropy's graph, from frame f to frame t (kinds adjacent, or
 * equal with different attributes: the self transforms). */
static void step(build_t *b, const tsr__frame_t *f, const tsr__frame_t *t) {
  double m[9], a[9];
  tsr__frame_kind_t fk = f->kind, tk = t->kind;
  for (size_t i = 0; i < sizeof matrix_edges / sizeof matrix_edges[0]; i++) {
    if (matrix_edges[i].from == fk && matrix_edges[i].to == tk) {
      matrix_edges[i].fn(f, t, m);
      step_matrix(b, m);
      return;
    }
    if (matrix_edges[i].from == tk && matrix_edges[i].to == fk) {
      matrix_edges[i].fn(t, f, m);
      transpose(m);
      step_matrix(b, m);
      return;
    }
  }
  if (fk == TSR__SKY_FK4_NO_E && tk == TSR__SKY_FK5) {
    /* Not a transpose pair: both directions use B (or its transpose) at
     * the FK4 side's obstime and Newcomb precession on the FK4 side. */
    prec_fk4(f->equinox, tsr__sky_byear_jd(1950.0), a);
    fk4_b_matrix(f->obstime, m);
    mul(m, a, m);
    prec_fk5(DJ00, t->equinox, a);
    mul(a, m, m);
    step_matrix(b, m);
  } else if (fk == TSR__SKY_FK5 && tk == TSR__SKY_FK4_NO_E) {
    prec_fk5(f->equinox, DJ00, a);
    fk4_b_matrix(t->obstime, m);
    transpose(m);
    mul(m, a, m);
    prec_fk4(tsr__sky_byear_jd(1950.0), t->equinox, a);
    mul(a, m, m);
    step_matrix(b, m);
  } else if (fk == TSR__SKY_FK4 && tk == TSR__SKY_FK4_NO_E) {
    step_eterms(b, false, f->equinox);
    prec_fk4(f->equinox, t->equinox, m);
    step_matrix(b, m);
  } else if (fk == TSR__SKY_FK4_NO_E && tk == TSR__SKY_FK4) {
    prec_fk4(f->equinox, t->equinox, m);
    step_matrix(b, m);
    step_eterms(b, true, t->equinox);
  } else if (fk == TSR__SKY_FK4 && tk == TSR__SKY_FK4) {
    /* astropy's fk4_to_fk4: through FK4NoETerms, precessed there. */
    step_eterms(b, false, f->equinox);
    prec_fk4(f->equinox, t->equinox, m);
    step_matrix(b, m);
    step_eterms(b, true, t->equinox);
  }
}

void tsr__frame_xform(const tsr__frame_t *from, const tsr__frame_t *to, tsr__frame_xform_t *x) {
  build_t b = {x};
  memset(x, 0, sizeof *x);
  memcpy(x->m, ident, sizeof ident);
  /* Linear axes are not on the sky: linear -> linear is the identity and
   * linear <-> sky has no transform (tsr__map_new refuses that pair). */
  if (tsr__frame_equal(from, to) || from->kind == TSR__SKY_LINEAR || to->kind == TSR__SKY_LINEAR)
    return;
  if (from->kind == to->kind) {
    step(&b, from, to);
  } else {
    int p[N_KINDS], n = path(from->kind, to->kind, p);
    tsr__frame_t cur = *from;
    for (int i = 1; i < n; i++) {
      /* The frame passed through takes the target's attributes, else the
       * source's, else its defaults (astropy's CompositeTransform). */
      tsr__frame_t next = tsr__frame_default((tsr__frame_kind_t)p[i]);
      if (i == n - 1) {
        next = *to;
      } else {
        if (has_equinox(next.kind) && has_equinox(to->kind))
          next.equinox = to->equinox;
        else if (has_equinox(next.kind) && has_equinox(from->kind))
          next.equinox = from->equinox;
        if (has_obstime(next.kind) && has_obstime(to->kind))
          next.obstime = to->obstime;
        else if (has_obstime(next.kind) && has_obstime(from->kind))
          next.obstime = from->obstime;
        else if (has_obstime(next.kind))
          next.obstime = next.equinox; /* astropy: obstime defaults to the equinox */
      }
      step(&b, &cur, &next);
      cur = next;
    }
  }
  for (int i = 0; i < 9; i++)
    x->rotate |= x->m[i] != ident[i];
}

void tsr__frame_apply(const tsr__frame_xform_t *x, size_t n, double *v) {
  const double *r = x->m, *ai = x->ein, *ao = x->eout;
  for (size_t i = 0; i < n; i++) {
    double *p = v + 3 * i, a = p[0], b = p[1], c = p[2];
    if (x->ein_on) {
      /* v - A + (A.v) v, renormalised (astropy's fk4_to_fk4_no_e). */
      double d = ai[0] * a + ai[1] * b + ai[2] * c, s;
      a += d * a - ai[0];
      b += d * b - ai[1];
      c += d * c - ai[2];
      s = 1.0 / sqrt(a * a + b * b + c * c);
      a *= s, b *= s, c *= s;
    }
    if (x->rotate) {
      double u = r[0] * a + r[1] * b + r[2] * c;
      double w = r[3] * a + r[4] * b + r[5] * c;
      c = r[6] * a + r[7] * b + r[8] * c;
      a = u, b = w;
    }
    if (x->eout_on) {
      /* Solve v = (A + v0) / (1 + A.v) by astropy's ten iterations, then
       * renormalise (fk4_no_e_to_fk4). */
      double a0 = a, b0 = b, c0 = c, s;
      for (int k = 0; k < 10; k++) {
        double q = 1.0 / (1.0 + ao[0] * a + ao[1] * b + ao[2] * c);
        a = (ao[0] + a0) * q;
        b = (ao[1] + b0) * q;
        c = (ao[2] + c0) * q;
      }
      s = 1.0 / sqrt(a * a + b * b + c * c);
      a *= s, b *= s, c *= s;
    }
    p[0] = a, p[1] = b, p[2] = c;
  }
}
