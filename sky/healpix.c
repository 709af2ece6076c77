/* healpix.c -- HEALPix geometry: libchealpix for indices and centres, and
 * what it lacks (ring layout, bilinear weights, disc ranges).
 *
 * libchealpix is loaded with dlopen on first use (tsr__hpx_load), as io/
 * loads cfitsio: its shared library links cfitsio and, through it, libcurl
 * and some thirty more, whose loading every process would otherwise pay
 * (17 ms of CPU: half of what a 256^2 region from a map costs).  So what a
 * RING bilinear reprojection needs -- ring layout and latitudes, the
 * weights, the disc's rings -- is computed here without it, and only the
 * functions that say so need it loaded.
 * Its static archive cannot be linked either (its map reader needs
 * cfitsio).  Only the 64-bit geometry functions are taken.
 *
 * Invariants: indices are int64_t and valid for 1 <= nside <= 2^29; nested
 * calls need nside a power of two (callers check with tsr__hpx_nside_ok);
 * every function is pure and thread-safe (libchealpix keeps no state). */
#include <chealpix.h>
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "hpx.h"

static struct {
  __typeof__(ang2pix_nest64) *ang2pix_nest;
  __typeof__(ang2pix_ring64) *ang2pix_ring;
  __typeof__(pix2ang_nest64) *pix2ang_nest;
  __typeof__(pix2ang_ring64) *pix2ang_ring;
  __typeof__(vec2pix_nest64) *vec2pix_nest;
  __typeof__(vec2pix_ring64) *vec2pix_ring;
  __typeof__(pix2vec_nest64) *pix2vec_nest;
  __typeof__(pix2vec_ring64) *pix2vec_ring;
  __typeof__(nest2ring64) *nest2ring;
  __typeof__(ring2nest64) *ring2nest;
} hp;
static pthread_once_t hp_once = PTHREAD_ONCE_INIT;
static char hp_error[256];

static void hp_open(void) {
  void *h = dlopen(TSR_CHEALPIX_SONAME, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    snprintf(hp_error, sizeof hp_error, "%s", dlerror());
    return;
  }
#define SYM(field, name)                                                                   \
  if ((*(void **)&hp.field = dlsym(h, #name)) == NULL) {                                   \
    snprintf(hp_error, sizeof hp_error, "%s has no %s", TSR_CHEALPIX_SONAME, #name);       \
    memset(&hp, 0, sizeof hp);                                                             \
    return;                                                                                \
  }
  SYM(ang2pix_nest, ang2pix_nest64)
  SYM(ang2pix_ring, ang2pix_ring64)
  SYM(pix2ang_nest, pix2ang_nest64)
  SYM(pix2ang_ring, pix2ang_ring64)
  SYM(vec2pix_nest, vec2pix_nest64)
  SYM(vec2pix_ring, vec2pix_ring64)
  SYM(pix2vec_nest, pix2vec_nest64)
  SYM(pix2vec_ring, pix2vec_ring64)
  SYM(nest2ring, nest2ring64)
  SYM(ring2nest, ring2nest64)
#undef SYM
}

int tsr__hpx_load(tsr_ctx_t *ctx) {
  pthread_once(&hp_once, hp_open);
  if (hp.ring2nest == NULL)
    return tsr__err(ctx, TSR_ENOTSUP,
                    "healpix: cannot load the HEALPix library %s: %s (install libchealpix0)",
                    TSR_CHEALPIX_SONAME, hp_error);
  return 0;
}

void tsr__hpx_unseen_bounds(float *lo, float *hi) {
  /* tsr__hpx_unseen_nan's |v / UNSEEN - 1| < 1e-5 holds strictly inside
   * (dlo, dhi): the float values within, rounded inwards. */
  const double dlo = TSR__HPX_UNSEEN * (1 + 1e-5), dhi = TSR__HPX_UNSEEN * (1 - 1e-5);
  float flo = (float)dlo, fhi = (float)dhi;
  if ((double)flo <= dlo)
    flo = nextafterf(flo, 0.0f);
  if ((double)fhi >= dhi)
    fhi = nextafterf(fhi, -INFINITY);
  *lo = flo, *hi = fhi;
}

bool tsr__hpx_nside_ok(int64_t nside, bool nested) {
  if (nside < 1 || nside > TSR__HPX_MAX_NSIDE)
    return false;
  return !nested || (nside & (nside - 1)) == 0;
}

int64_t tsr__hpx_npix(int64_t nside) { return 12 * nside * nside; }

int64_t tsr__hpx_nside_of(int64_t npix) {
  if (npix < 12 || npix % 12 != 0)
    return -1;
  int64_t n = (int64_t)llround(sqrt((double)(npix / 12)));
  return n * n * 12 == npix ? n : -1;
}

static double wrap_lon(double lon) {
  lon = fmod(lon, 2 * M_PI);
  return lon < 0 ? lon + 2 * M_PI : lon;
}

int64_t tsr__hpx_vec2pix(int64_t nside, bool nested, const double v[3]) {
  int64_t p;
  if (nested)
    hp.vec2pix_nest(nside, v, &p);
  else
    hp.vec2pix_ring(nside, v, &p);
  return p;
}

int64_t tsr__hpx_ang2pix(int64_t nside, bool nested, double lon, double lat) {
  int64_t p;
  double theta = M_PI / 2 - lat, phi = wrap_lon(lon);
  if (theta < 0)
    theta = 0;
  if (theta > M_PI)
    theta = M_PI;
  if (nested)
    hp.ang2pix_nest(nside, theta, phi, &p);
  else
    hp.ang2pix_ring(nside, theta, phi, &p);
  return p;
}

void tsr__hpx_pix2vec(int64_t nside, bool nested, int64_t pix, double v[3]) {
  if (nested)
    hp.pix2vec_nest(nside, pix, v);
  else
    hp.pix2vec_ring(nside, pix, v);
}

void tsr__hpx_pix2ang(int64_t nside, bool nested, int64_t pix, double *lon, double *lat) {
  double theta, phi;
  if (nested)
    hp.pix2ang_nest(nside, pix, &theta, &phi);
  else
    hp.pix2ang_ring(nside, pix, &theta, &phi);
  *lon = phi;
  *lat = M_PI / 2 - theta;
}

int64_t tsr__hpx_nest2ring(int64_t nside, int64_t p) {
  int64_t r;
  hp.nest2ring(nside, p, &r);
  return r;
}

int64_t tsr__hpx_ring2nest(int64_t nside, int64_t p) {
  int64_t r;
  hp.ring2nest(nside, p, &r);
  return r;
}

/* Bits 0..31 of v spread to the even bits of the result. */
static uint64_t spread_bits(uint64_t v) {
  v &= 0xffffffffull;
  v = (v | v << 16) & 0x0000ffff0000ffffull;
  v = (v | v << 8) & 0x00ff00ff00ff00ffull;
  v = (v | v << 4) & 0x0f0f0f0f0f0f0f0full;
  v = (v | v << 2) & 0x3333333333333333ull;
  v = (v | v << 1) & 0x5555555555555555ull;
  return v;
}

/* RING to NESTED (Gorski et al. 2005): the pixel's ring and position give
 * its base face and its (x, y) in the face, whose bits interleaved are its
 * NESTED index within the face.  libchealpix's ring2nest64 was a third of
 * a NESTED bilinear run (a call per neighbour); this is exact integer
 * arithmetic, compared with it in the tests. */
int64_t tsr__hpx_ring2nest_fast(int64_t nside, int64_t p) {
  /* Base faces: their ring (in units of nside) and longitude (in units of
   * a quarter face) of their centres. */
  static const int64_t face_ring[12] = {2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4};
  static const int64_t face_lon[12] = {1, 3, 5, 7, 0, 2, 4, 6, 1, 3, 5, 7};
  int64_t ncap = 2 * nside * (nside - 1), npix = tsr__hpx_npix(nside);
  int64_t ring, pos, shift, nr, face;
  if (p < ncap) { /* north cap: ring i holds 4 i pixels, i per face */
    ring = tsr__hpx_ring_of(nside, p);
    pos = p + 1 - 2 * ring * (ring - 1);
    shift = 0, nr = ring;
    face = (pos - 1) / nr;
  } else if (p < npix - ncap) { /* belt: 4 nside pixels a ring */
    int64_t q = p - ncap, ire, irm, ifm, ifp;
    ring = q / (4 * nside) + nside;
    pos = q % (4 * nside) + 1;
    shift = (ring + nside) & 1;
    nr = nside;
    ire = ring - nside + 1, irm = 2 * nside + 2 - ire;
    ifm = (pos - ire / 2 + nside - 1) / nside;
    ifp = (pos - irm / 2 + nside - 1) / nside;
    face = ifp == ifm ? (ifp | 4) : ifp < ifm ? ifp : ifm + 8;
  } else { /* south cap, mirrored */
    int64_t q = npix - p, i = tsr__hpx_ring_of(nside, p);
    int64_t k = 4 * nside - i; /* ring counted from the south pole */
    pos = 4 * k + 1 - (q - 2 * k * (k - 1));
    shift = 0, nr = k;
    ring = i;
    face = 8 + (pos - 1) / nr;
  }
  int64_t irt = ring - face_ring[face] * nside + 1;
  int64_t ipt = 2 * pos - face_lon[face] * nr - shift - 1;
  if (ipt >= 2 * nside)
    ipt -= 8 * nside;
  int64_t ix = (ipt - irt) >> 1, iy = (-ipt - irt) >> 1;
  return face * nside * nside + (int64_t)(spread_bits((uint64_t)ix) | spread_bits((uint64_t)iy) << 1);
}

void tsr__hpx_ring_span(int64_t nside, int64_t ring, int64_t *first, int64_t *count) {
  int64_t ncap = 2 * nside * (nside - 1);
  if (ring < nside) {
    *first = 2 * ring * (ring - 1);
    *count = 4 * ring;
  } else if (ring <= 3 * nside) {
    *first = ncap + 4 * nside * (ring - nside);
    *count = 4 * nside;
  } else {
    int64_t s = 4 * nside - ring;
    *first = tsr__hpx_npix(nside) - 2 * s * (s + 1);
    *count = 4 * s;
  }
}

int64_t tsr__hpx_ring_of(int64_t nside, int64_t p) {
  int64_t ncap = 2 * nside * (nside - 1), npix = tsr__hpx_npix(nside);
  if (p < ncap) {
    /* p in [2 i (i - 1), 2 i (i + 1)): i = floor((1 + sqrt(1 + 2 p)) / 2),
     * corrected for rounding in the square root. */
    int64_t i = (int64_t)((1 + sqrt(1.0 + 2.0 * (double)p)) / 2);
    while (2 * i * (i - 1) > p)
      i--;
    while (2 * (i + 1) * i <= p)
      i++;
    return i;
  }
  if (p < npix - ncap)
    return nside + (p - ncap) / (4 * nside);
  {
    int64_t q = npix - 1 - p; /* mirrored index from the south pole */
    int64_t i = (int64_t)((1 + sqrt(1.0 + 2.0 * (double)q)) / 2);
    while (2 * i * (i - 1) > q)
      i--;
    while (2 * (i + 1) * i <= q)
      i++;
    return 4 * nside - i;
  }
}

/* Ring r's latitude as libchealpix's pix2ang_ring computes it, to the bit
 * (the tests compare): z = 1 - r^2 (4 / npix) in the caps, (2 nside - r)
 * 2 nside (4 / npix) in the belt, the colatitude acos(z), or near the
 * poles (|z| > 0.99) atan2(sin, z) with the sine from 1 - z for precision.
 * z and that sine (the latitude's cosine) come out too, from the ring's
 * formula rather than from the rounded latitude. */
static void ring_geom(int64_t nside, int64_t r, double *lat, double *z, double *c) {
  double fact2 = 4.0 / (double)tsr__hpx_npix(nside), fact1 = (double)(2 * nside) * fact2;
  double theta;
  if (r < nside || r > 3 * nside) {
    int64_t i = r < nside ? r : 4 * nside - r;
    double tmp = (double)(i * i) * fact2;
    *z = r < nside ? 1.0 - tmp : tmp - 1.0;
    *c = sqrt(tmp * (2.0 - tmp));
    theta = fabs(*z) > 0.99 ? atan2(*c, *z) : acos(*z);
  } else {
    *z = (double)(2 * nside - r) * fact1;
    *c = sqrt((1.0 - *z) * (1.0 + *z));
    theta = acos(*z);
  }
  *lat = M_PI / 2 - theta;
}

/* The ring whose centre is nearest the colatitude theta's ring
 * coordinate, rounded down or up: a pixel spans one ring either way of its
 * centre, so the pixel holding a point of colatitude theta is in ring
 * floor or ceil of that coordinate. */
static double ring_coordinate(int64_t nside, double theta) {
  double z = cos(theta), n = (double)nside;
  if (z > 2.0 / 3.0)
    return n * sqrt(3 * (1 - z));
  if (z < -2.0 / 3.0)
    return 4 * n - n * sqrt(3 * (1 + z));
  return 2 * n - 1.5 * n * z;
}

/* Centre of RING pixel p through libchealpix, its longitude unwrapped to
 * within pi of lon (the reference weights below). */
static void centre_near(int64_t nside, int64_t p, double lon, double *plon, double *plat) {
  tsr__hpx_pix2ang(nside, false, p, plon, plat);
  if (lon - *plon > M_PI)
    *plon += 2 * M_PI;
  if (*plon - lon > M_PI)
    *plon -= 2 * M_PI;
}

/* The neighbour in the same ring on lon's side of pixel p (j-th of count,
 * ring starting at first), wrapping around the ring. */
static inline int64_t ring_step(int64_t p, int64_t j, int64_t count, bool west) {
  if (west)
    return j == 0 ? p + count - 1 : p - 1;
  return j == count - 1 ? p - count + 1 : p + 1;
}

/* The four weights from the fractions along the rings (xf1 in the
 * holding pixel's, xf2 in the other) and across them (yf); over a pole
 * the other ring is the pole, the mean of its four pixels. */
static inline void weights(double xf1, double xf2, double yf, bool pole, double w[4]) {
  if (pole) {
    w[0] = (1 - xf1) * (1 - yf) + 0.25 * yf;
    w[1] = xf1 * (1 - yf) + 0.25 * yf;
    w[2] = 0.25 * yf;
    w[3] = 0.25 * yf;
  } else {
    w[0] = (1 - xf1) * (1 - yf);
    w[1] = xf1 * (1 - yf);
    w[2] = (1 - xf2) * yf;
    w[3] = xf2 * yf;
  }
}

/* astropy-healpix 0.6's interpolate_weights, step by step (pixel lookups
 * through libchealpix): the pixel holding the point and its ring
 * neighbour on the point's side; in the next ring towards the point's
 * latitude, the pixel whose longitude span holds it (astropy's
 * lon * n / 2 pi, shifted half a pixel in odd equatorial rings) and its
 * neighbour on the point's side.  Beyond the first or last ring, the pole
 * is taken as the mean of the four pixels around it.  tsr__hpx_bilinear
 * is the same arithmetic, reorganised for speed; this is its reference. */
void tsr__hpx_interp_weights(int64_t nside, double lon, double lat, int64_t ring[4], double w[4]) {
  int64_t p1, p2, p3, p4, r, first, count, npix = tsr__hpx_npix(nside);
  double lon1, lat1, lon2, lat2, lon3, lat3, lon4, lat4, xf1, xf2, yf;

  lon = lon >= 0 && lon < 2 * M_PI ? lon : wrap_lon(lon);
  p1 = tsr__hpx_ang2pix(nside, false, lon, lat);
  r = tsr__hpx_ring_of(nside, p1);
  tsr__hpx_ring_span(nside, r, &first, &count);
  centre_near(nside, p1, lon, &lon1, &lat1);
  p2 = ring_step(p1, p1 - first, count, lon < lon1);
  centre_near(nside, p2, lon, &lon2, &lat2);
  r += lat > lat1 ? -1 : 1;
  xf1 = (lon - lon1) / (lon2 - lon1);
  if (r > 0 && r < 4 * nside) {
    int64_t j;
    double frac;
    tsr__hpx_ring_span(nside, r, &first, &count);
    frac = lon * (double)count / (2 * M_PI);
    if (count == 4 * nside && r % 2 == 1)
      frac += 0.5;
    j = (int64_t)frac;
    if (j == count)
      j--;
    p3 = first + j;
    centre_near(nside, p3, lon, &lon3, &lat3);
    p4 = ring_step(p3, j, count, lon < lon3);
    centre_near(nside, p4, lon, &lon4, &lat4);
    xf2 = (lon - lon3) / (lon4 - lon3);
    yf = (lat - lat1) / (lat3 - lat1);
    weights(xf1, xf2, yf, false, w);
  } else {
    int64_t base = r == 0 ? 0 : npix - 4;
    yf = (lat - lat1) / ((r == 0 ? 0.5 : -0.5) * M_PI - lat1);
    p3 = base + (p1 - base + 2) % 4;
    p4 = base + (p2 - base + 2) % 4;
    weights(xf1, 0, yf, true, w);
  }
  ring[0] = p1, ring[1] = p2, ring[2] = p3, ring[3] = p4;
}

/* ------------------------------------------------------------------ */
/* Bilinear weights at speed                                           */
/*
 * tsr__hpx_bilinear is tsr__hpx_interp_weights for many unit vectors,
 * without libchealpix or the point's latitude, and with longitudes in
 * turns ([0, 1)), so that a centre's offset from the point in pixels of its
 * ring is one multiplication, L count - (j + phase), and astropy's
 * divisions by the centres' longitude gap (a pixel either way) go away.
 * The longitude is an atan2 of its own (atan2_turns: a table of atan(k/32)
 * and a short odd series, within 2e-15 rad of libm's, tested over
 * millions of points); the latitude enters only as its difference from
 * the holding pixel's ring, sin(lat - lat1) = z cos lat1 - s sin lat1 with
 * s = sqrt(x^2 + y^2), whose arcsine near 0 is a series too.  Rings are
 * looked up in a small direct-mapped cache (tsr__hpx_rings_t): the pixels
 * of an output row cross a few rings, each entered once.  The results
 * differ from the reference by rounding (1e-12 in the weights at nside
 * 1024; the tests compare both) and so may pick the other pixel pair where
 * the point lies on a boundary, where the interpolation is continuous.
 */

void tsr__hpx_rings_init(tsr__hpx_rings_t *rs, int64_t nside) {
  rs->nside = nside;
  for (int k = 0; k < TSR__HPX_RING_SLOTS; k++)
    rs->slot[k].r = -1;
  for (int k = 0; k <= 32; k++)
    rs->atan_tab[k] = atan((double)k / 32.0);
}

static inline const tsr__hpx_ring_t *ring_at(tsr__hpx_rings_t *rs, int64_t r) {
  tsr__hpx_ring_t *g = &rs->slot[r & (TSR__HPX_RING_SLOTS - 1)];
  if (g->r != r) {
    int64_t nside = rs->nside;
    g->r = r;
    tsr__hpx_ring_span(nside, r, &g->first, &g->count);
    /* Cap rings, and equatorial rings with r + nside even, start half a
     * pixel east of longitude 0. */
    g->phase = (r < nside || r > 3 * nside || ((r + nside) & 1) == 0) ? 0.5 : 0.0;
    ring_geom(nside, r, &g->lat, &g->z, &g->c);
  }
  return g;
}

const tsr__hpx_ring_t *tsr__hpx_ring(tsr__hpx_rings_t *rs, int64_t r) { return ring_at(rs, r); }

/* atan2(y, x) / 2 pi in [0, 1).  In the first octant t = min / max of |x|,
 * |y| is in [0, 1]; with c = k / 32 the nearest table point, atan t =
 * atan c + atan u, u = (t - c) / (1 + t c) in [-1/64, 1/64], where the odd
 * series to u^9 is within 1e-21; the octant's symmetries give the rest. */
static inline double atan2_turns(const double *tab, double y, double x) {
  double ax = fabs(x), ay = fabs(y);
  bool swap = ay > ax;
  double num = swap ? ax : ay, den = swap ? ay : ax;
  if (!(den > 0))
    return 0.0; /* atan2(0, 0) */
  double t = num / den;
  int k = (int)(t * 32.0 + 0.5);
  double c = (double)k * (1.0 / 32.0);
  double u = (num - c * den) / (den + c * num), u2 = u * u;
  double a = tab[k] + u * (1.0 + u2 * (-1.0 / 3 + u2 * (1.0 / 5 + u2 * (-1.0 / 7 + u2 * (1.0 / 9)))));
  if (swap)
    a = M_PI / 2 - a;
  if (x < 0)
    a = M_PI - a;
  if (y < 0)
    a = 2 * M_PI - a;
  a *= 1.0 / (2 * M_PI);
  return a < 1.0 ? a : 0.0;
}

double tsr__hpx_atan2_turns(const tsr__hpx_rings_t *rs, double y, double x) {
  return atan2_turns(rs->atan_tab, y, x);
}

/* asin(d): the series to d^13 (within 2e-20) for |d| <= 1/16, which is
 * every point of an nside >= 16 map (within a ring spacing of the ring). */
static inline double asin_near0(double d) {
  if (!(fabs(d) <= 0.0625))
    return asin(d);
  double d2 = d * d;
  return d + d * d2 *
                 (1.0 / 6 +
                  d2 * (3.0 / 40 +
                        d2 * (5.0 / 112 + d2 * (35.0 / 1152 + d2 * (63.0 / 2816 + d2 * (231.0 / 13312))))));
}

/* The RING pixel holding the unit vector of height z, distance from the
 * axis s and longitude tt quarter turns ([0, 4)): libchealpix's
 * ang2pix_ring_z_phi (HEALPix C 3.x); *ring its ring. */
static inline int64_t ring_pixel(int64_t nside, double z, double s, double tt, int64_t *ring) {
  double za = fabs(z);
  if (za <= 2.0 / 3.0) {
    int64_t nl4 = 4 * nside;
    double temp1 = (double)nside * (0.5 + tt), temp2 = (double)nside * z * 0.75;
    int64_t jp = (int64_t)(temp1 - temp2), jm = (int64_t)(temp1 + temp2);
    int64_t ir = nside + 1 + jp - jm;
    int64_t kshift = 1 - (ir & 1);
    /* jp + jm is within a few of 2 nside (1 + 2 tt) <= 9 nside: the
     * quotient is below 3 nl4, so two subtractions are the modulo (an
     * int64 division cost as much as the rest of the lookup). */
    int64_t ip = (jp + jm - nside + kshift + 1 + 2 * nl4) / 2;
    while (ip >= nl4)
      ip -= nl4;
    *ring = nside - 1 + ir;
    return 2 * nside * (nside - 1) + (ir - 1) * nl4 + ip;
  }
  {
    double tp = tt - (double)(int64_t)tt;
    /* Near the poles from sin(theta), as libchealpix, for precision. */
    double tmp = za > 0.99 ? (double)nside * s / sqrt((1 + za) / 3)
                           : (double)nside * sqrt(3 * (1 - za));
    int64_t jp = (int64_t)(tp * tmp), jm = (int64_t)((1 - tp) * tmp);
    int64_t ir = jp + jm + 1, ip = (int64_t)(tt * (double)ir);
    /* tt in [0, 4): ip in [0, 4 ir], the modulo one subtraction at most. */
    while (ip >= 4 * ir)
      ip -= 4 * ir;
    while (ip < 0)
      ip += 4 * ir;
    *ring = z > 0 ? ir : 4 * nside - ir;
    return z > 0 ? 2 * ir * (ir - 1) + ip : tsr__hpx_npix(nside) - 2 * ir * (ir + 1) + ip;
  }
}

/* A centre's offset from the point in pixels of its ring, d = L count -
 * (j + phase), taken across longitude 0 when that is nearer. */
static inline double ring_offset(double lc, const tsr__hpx_ring_t *g, int64_t j) {
  double cnt = (double)g->count, d = lc - g->phase - (double)j;
  return d > 0.5 * cnt ? d - cnt : d < -0.5 * cnt ? d + cnt : d;
}

/* ring_step without branches on the side, which is a coin toss from one
 * point to the next (mispredicted branches were a third of the time). */
static inline int64_t ring_step_cmov(int64_t p, int64_t j, int64_t count, bool west) {
  int64_t q = j + 1 - 2 * (int64_t)west;
  q += q < 0 ? count : 0;
  q -= q >= count ? count : 0;
  return p - j + q;
}

/* The points go in batches of BATCH, each step over the whole batch
 * before the next (longitudes; holding pixels; the first ring's
 * neighbour and the latitude offset; the second ring and the weights):
 * a point's steps form one long chain of dependent divisions, square
 * roots and table loads, so that done point after point the processor
 * waited on each chain in turn, while over a batch the chains of many
 * points are in flight at once (twice the speed). */
#define BATCH 64

void tsr__hpx_bilinear(tsr__hpx_rings_t *rs, size_t n, const double *restrict xs,
                       const double *restrict ys, const double *restrict zs,
                       int64_t *restrict ring, double *restrict w) {
  int64_t nside = rs->nside, npix = tsr__hpx_npix(nside);
  double L[BATCH], S[BATCH], DL[BATCH], XF[BATCH];
  int64_t R1[BATCH];
  for (size_t k0 = 0; k0 < n; k0 += BATCH) {
    size_t m = n - k0 < BATCH ? n - k0 : BATCH;
    const double *x = xs + k0, *y = ys + k0, *z = zs + k0;
    int64_t *pb = ring + 4 * k0;
    double *wb = w + 4 * k0;
    for (size_t i = 0; i < m; i++) {
      S[i] = sqrt(x[i] * x[i] + y[i] * y[i]);
      L[i] = atan2_turns(rs->atan_tab, y[i], x[i]);
    }
    for (size_t i = 0; i < m; i++)
      pb[4 * i] = x[i] != x[i] || y[i] != y[i] || z[i] != z[i]
                      ? -1
                      : ring_pixel(nside, z[i], S[i], 4 * L[i], &R1[i]);
    /* The holding pixel's ring: its neighbour on the point's side, the
     * latitude offset, the other ring (R1 becomes it). */
    for (size_t i = 0; i < m; i++) {
      int64_t p1 = pb[4 * i];
      if (p1 < 0)
        continue;
      const tsr__hpx_ring_t *g = ring_at(rs, R1[i]);
      double d1 = ring_offset(L[i] * (double)g->count, g, p1 - g->first);
      pb[4 * i + 1] = ring_step_cmov(p1, p1 - g->first, g->count, d1 < 0);
      XF[i] = fabs(d1);
      DL[i] = asin_near0(z[i] * g->c - S[i] * g->z); /* lat - lat1 */
      wb[4 * i] = g->lat;
      R1[i] += 1 - 2 * (int64_t)(DL[i] > 0);
    }
    for (size_t i = 0; i < m; i++) {
      int64_t *pk = pb + 4 * i, r = R1[i], p3, p4;
      double *wk = wb + 4 * i, lat1 = wk[0], xf1 = XF[i], yf;
      if (pk[0] < 0) {
        pk[1] = pk[2] = pk[3] = -1;
        continue;
      }
      if (r > 0 && r < 4 * nside) {
        const tsr__hpx_ring_t *h = ring_at(rs, r);
        double lc = L[i] * (double)h->count;
        double frac = lc + (h->count == 4 * nside ? 0.5 * (double)(r & 1) : 0.0);
        int64_t j = (int64_t)frac;
        j -= j == h->count;
        p3 = h->first + j;
        double d3 = ring_offset(lc, h, j);
        p4 = ring_step_cmov(p3, j, h->count, d3 < 0);
        yf = DL[i] / (h->lat - lat1);
        weights(xf1, fabs(d3), yf, false, wk);
      } else {
        int64_t base = r == 0 ? 0 : npix - 4;
        yf = DL[i] / ((r == 0 ? 0.5 : -0.5) * M_PI - lat1);
        p3 = base + (pk[0] - base + 2) % 4;
        p4 = base + (pk[1] - base + 2) % 4;
        weights(xf1, 0, yf, true, wk);
      }
      pk[2] = p3, pk[3] = p4;
    }
  }
}

double tsr__hpx_pixel_size(int64_t nside) {
  return sqrt(4 * M_PI / (double)tsr__hpx_npix(nside));
}

static double angle_between(const double a[3], const double b[3]) {
  double cx = a[1] * b[2] - a[2] * b[1], cy = a[2] * b[0] - a[0] * b[2],
         cz = a[0] * b[1] - a[1] * b[0];
  return atan2(sqrt(cx * cx + cy * cy + cz * cz), a[0] * b[0] + a[1] * b[1] + a[2] * b[2]);
}

/* Nested cells of level k (nside 2^k) that may hold centres within radius
 * of c: a cell is kept when its centre is within radius plus twice the
 * level's pixel size (more than any centre-to-corner distance), refined
 * until its cells are small against the radius or at the map's level. */
static void disc_cells(int k, int kmax, int64_t cell, const double c[3], double radius,
                       int64_t *lo, int64_t *hi) {
  int64_t ns = (int64_t)1 << k;
  double v[3], size = tsr__hpx_pixel_size(ns);
  hp.pix2vec_nest(ns, cell, v);
  if (angle_between(v, c) > radius + 2 * size)
    return;
  if (k == kmax || size < radius / 8) {
    int64_t span = (int64_t)1 << (2 * (kmax - k));
    if (cell * span < *lo)
      *lo = cell * span;
    if ((cell + 1) * span > *hi)
      *hi = (cell + 1) * span;
    return;
  }
  for (int64_t s = 0; s < 4; s++)
    disc_cells(k + 1, kmax, cell * 4 + s, c, radius, lo, hi);
}

void tsr__hpx_disc_range(int64_t nside, bool nested, const double c[3], double radius,
                         int64_t *lo, int64_t *hi) {
  int64_t npix = tsr__hpx_npix(nside);
  if (!(radius < M_PI)) {
    *lo = 0, *hi = npix;
    return;
  }
  if (nested) {
    int kmax = 0;
    while (((int64_t)1 << kmax) < nside)
      kmax++;
    *lo = npix, *hi = 0;
    for (int64_t b = 0; b < 12; b++)
      disc_cells(0, kmax, b, c, radius, lo, hi);
    if (*lo >= *hi)
      *lo = *hi = 0;
    return;
  }
  {
    double theta = acos(c[2] > 1 ? 1 : c[2] < -1 ? -1 : c[2]);
    double t0 = theta - radius, t1 = theta + radius;
    int64_t r0 = 1, r1 = 4 * nside - 1, first, count, first1, count1;
    /* The ring of the pixel at each edge, and one more. */
    if (t0 > 0) {
      r0 = (int64_t)floor(ring_coordinate(nside, t0)) - 1;
      if (r0 < 1)
        r0 = 1;
    }
    if (t1 < M_PI) {
      r1 = (int64_t)ceil(ring_coordinate(nside, t1)) + 1;
      if (r1 > 4 * nside - 1)
        r1 = 4 * nside - 1;
    }
    tsr__hpx_ring_span(nside, r0, &first, &count);
    tsr__hpx_ring_span(nside, r1, &first1, &count1);
    *lo = first;
    *hi = first1 + count1;
  }
}

char tsr__hpx_coordsys_parse(const char *s) {
  if (strcasecmp(s, "G") == 0 || strcasecmp(s, "galactic") == 0)
    return 'G';
  if (strcasecmp(s, "C") == 0 || strcasecmp(s, "icrs") == 0 || strcasecmp(s, "celestial") == 0 ||
      strcasecmp(s, "equatorial") == 0)
    return 'C';
  if (strcasecmp(s, "E") == 0 || strcasecmp(s, "ecliptic") == 0)
    return 'E';
  return 0;
}

int tsr__hpx_frame(char coordsys, tsr__frame_t *f) {
  switch (coordsys) {
  case 'G': *f = tsr__frame_default(TSR__SKY_GALACTIC); return 0;
  case 'C': *f = tsr__frame_default(TSR__SKY_ICRS); return 0;
  case 'E': *f = tsr__frame_default(TSR__SKY_ECLIPTIC); return 0;
  default: return -1;
  }
}

char tsr__hpx_coordsys_of(const tsr__frame_t *f) {
  static const char letters[] = "GCE";
  for (int i = 0; i < 3; i++) {
    tsr__frame_t x;
    tsr__hpx_frame(letters[i], &x);
    if (tsr__frame_equal(f, &x))
      return letters[i];
  }
  return 0;
}

int tsr__hpx_cards(tsr_ctx_t *ctx, int64_t nside, bool nested, char coordsys, tsr_wcs_t **out) {
  char cards[8 * 80 + 1];
  int64_t shape[1] = {tsr__hpx_npix(nside)};
  int k = 0;
#define CARD(...) (snprintf(cards + k * 80, 81, "%-80.80s", "") , \
                   snprintf(cards + k * 80, 81, __VA_ARGS__), k++)
  CARD("NAXIS   = %20d", 1);
  CARD("NAXIS1  = %20lld", (long long)shape[0]);
  CARD("PIXTYPE = 'HEALPIX '");
  CARD("ORDERING= '%-8s'", nested ? "NESTED" : "RING");
  CARD("NSIDE   = %20lld", (long long)nside);
  CARD("COORDSYS= '%c       '", coordsys);
  CARD("INDXSCHM= 'IMPLICIT'");
#undef CARD
  for (int i = 0; i < k * 80; i++)
    if (cards[i] == '\0')
      cards[i] = ' ';
  if (tsr__wcs_new(ctx, cards, k, 1, shape, out) != 0)
    return tsr__err(ctx, TSR_ENOMEM, "healpix: out of memory");
  return 0;
}

bool tsr__hpx_from_cards(const tsr_wcs_t *w, int64_t *nside, bool *nested, char *coordsys) {
  char v[72];
  int i;
  if (w == NULL || (i = tsr__wcs_find(w, "PIXTYPE")) < 0)
    return false;
  tsr__card_value(w->cards + (size_t)i * 80, v, sizeof v);
  if (strncmp(v, "'HEALPIX", 8) != 0)
    return false;
  if ((i = tsr__wcs_find(w, "NSIDE")) < 0)
    return false;
  tsr__card_value(w->cards + (size_t)i * 80, v, sizeof v);
  *nside = strtoll(v, NULL, 10);
  if ((i = tsr__wcs_find(w, "ORDERING")) < 0)
    return false;
  tsr__card_value(w->cards + (size_t)i * 80, v, sizeof v);
  *nested = strncmp(v, "'NEST", 5) == 0;
  if ((i = tsr__wcs_find(w, "COORDSYS")) < 0)
    return false;
  tsr__card_value(w->cards + (size_t)i * 80, v, sizeof v);
  *coordsys = v[1];
  return true;
}

/* ------------------------------------------------------------------ */
/* Face coordinates and pixel boundaries                                */

/* The HEALPix projection on one base face, from the ring-index form of
 * Gorski et al. (2005).  Face f sits in face row f / 4 (north cap, equator,
 * south cap) and column f % 4.  With u = x / nside and w = y / nside, the
 * point's ring coordinate (in units of nside rings from the north pole) is
 * t = 2 + row - u - w: z = 1 - t^2 / 3 in the north cap (t < 1), 2 (2 - t) /
 * 3 in the equatorial belt, t' ^ 2 / 3 - 1 with t' = 4 - t in the south
 * cap; its longitude in quarter turns is (c nr + u - w) / (2 nr), with nr
 * the ring's relative length (t, 1 or t') and c = 2 col + 1 in the caps,
 * 2 col on the equator. */
void tsr__hpx_xyf2vec(int64_t nside, int face, double x, double y, double v[3]) {
  int row = face / 4, col = face % 4;
  double u = x / (double)nside, w = y / (double)nside;
  double t = 2.0 + row - u - w, nr, z, sth, quarter;
  if (t < 1.0) {
    nr = t;
    z = 1.0 - t * t / 3.0;
    /* sin theta from 1 - z = t^2 / 3 directly: exact next to the pole. */
    sth = t * sqrt((2.0 - t * t / 3.0) / 3.0);
  } else if (t > 3.0) {
    nr = 4.0 - t;
    z = nr * nr / 3.0 - 1.0;
    sth = nr * sqrt((2.0 - nr * nr / 3.0) / 3.0);
  } else {
    nr = 1.0;
    z = (2.0 - t) * 2.0 / 3.0;
    sth = sqrt((1.0 - z) * (1.0 + z));
  }
  {
    int c = 2 * col + (row == 1 ? 0 : 1);
    quarter = nr > 0 ? ((double)c * nr + u - w) / (2.0 * nr) : 0.0;
  }
  double phi = quarter * (M_PI / 2);
  v[0] = sth * cos(phi);
  v[1] = sth * sin(phi);
  v[2] = z;
}

/* The inverse, continuous (ang2pix without the rounding): in the equatorial
 * belt the two families of edge lines jp, jm (in units of pixels); in a
 * cap the distances from the face's two polar edges. */
void tsr__hpx_ang2xyf(int64_t nside, double theta, double phi, int *face, double *x, double *y) {
  double ns = (double)nside, z = cos(theta), tt = wrap_lon(phi) / (M_PI / 2);
  if (fabs(z) <= 2.0 / 3.0) {
    double jp = ns * (0.5 + tt - 0.75 * z), jm = ns * (0.5 + tt + 0.75 * z);
    int ifp = (int)floor(jp / ns), ifm = (int)floor(jm / ns);
    if (ifp == ifm)
      *face = (ifp & 3) | 4;
    else if (ifp < ifm)
      *face = ifp & 3;
    else
      *face = (ifm & 3) + 8;
    *x = jm - ns * (double)ifm;
    *y = ns - (jp - ns * (double)ifp);
  } else {
    int ntt = (int)tt;
    double tp, s;
    if (ntt > 3)
      ntt = 3;
    tp = tt - ntt;
    /* sqrt(3 (1 - |z|)) with 1 - |z| = 2 sin^2(theta / 2) (or of its
     * complement), which keeps its digits near the poles. */
    s = z > 0 ? sqrt(6.0) * sin(theta / 2) : sqrt(6.0) * cos(theta / 2);
    s *= ns;
    if (z > 0) {
      *face = ntt;
      *x = ns - (1 - tp) * s;
      *y = ns - tp * s;
    } else {
      *face = ntt + 8;
      *x = tp * s;
      *y = (1 - tp) * s;
    }
  }
}

/* Pixel pix's face and the face coordinates of its corners, north, west,
 * south, east (astropy-healpix's order), the first repeated at the end.
 * Its centre lies half a pixel inside its square, far from any rounding
 * of the continuous coordinates, so flooring them gives (ix, iy). */
static int pixel_square(int64_t nside, bool nested, int64_t pix, double cx[5], double cy[5]) {
  double theta, phi, x, y;
  int face;
  if (nested)
    hp.pix2ang_nest(nside, pix, &theta, &phi);
  else
    hp.pix2ang_ring(nside, pix, &theta, &phi);
  tsr__hpx_ang2xyf(nside, theta, phi, &face, &x, &y);
  x = floor(x), y = floor(y);
  cx[0] = x + 1, cx[1] = x, cx[2] = x, cx[3] = x + 1, cx[4] = x + 1;
  cy[0] = y + 1, cy[1] = y + 1, cy[2] = y, cy[3] = y, cy[4] = y + 1;
  return face;
}

void tsr__hpx_boundary(int64_t nside, bool nested, int64_t pix, int k, double *v) {
  double cx[5], cy[5];
  int face = pixel_square(nside, nested, pix, cx, cy);
  {
    for (int e = 0; e < 4; e++)
      for (int j = 0; j < k; j++) {
        double f = (double)j / k;
        tsr__hpx_xyf2vec(nside, face, cx[e] + f * (cx[e + 1] - cx[e]),
                         cy[e] + f * (cy[e + 1] - cy[e]), v + 3 * (e * k + j));
      }
  }
}

/* Adaptive edges: an edge is split at its midpoint in face coordinates
 * while that point lies more than `sag` from the great circle through the
 * segment's ends.  Points are lo + f (hi - lo) with dyadic f from the
 * edge's lexicographically lower corner lo, and the corners are integers,
 * so both pixels that share an edge (on one face) compute the same points
 * bit for bit, whichever way round they walk it: the polygons tile the
 * sphere exactly.  (On a face boundary the two faces' formulas agree to
 * rounding.) */
typedef struct {
  int64_t nside;
  int face;
  double lo[2], hi[2];
  double sag;              /* largest distance (radians) of a midpoint from its chord */
  int max_depth;
  double *f;               /* parameters of the points, in increasing order */
  int n, cap;
} edge_walk_t;

static void edge_point(const edge_walk_t *e, double f, double v[3]) {
  tsr__hpx_xyf2vec(e->nside, e->face, e->lo[0] + f * (e->hi[0] - e->lo[0]),
                   e->lo[1] + f * (e->hi[1] - e->lo[1]), v);
}

/* Append the parameters of (f0, f1] to e->f, splitting as needed. */
static void edge_split(edge_walk_t *e, double f0, const double a[3], double f1, const double b[3],
                       int depth) {
  double fm = 0.5 * (f0 + f1), m[3], n[3];
  edge_point(e, fm, m);
  n[0] = a[1] * b[2] - a[2] * b[1], n[1] = a[2] * b[0] - a[0] * b[2],
  n[2] = a[0] * b[1] - a[1] * b[0];
  double nn = sqrt(n[0] * n[0] + n[1] * n[1] + n[2] * n[2]);
  double d = nn > 0 ? fabs(m[0] * n[0] + m[1] * n[1] + m[2] * n[2]) / nn : 0.0;
  if (depth < e->max_depth && (depth == 0 || d > e->sag)) {
    edge_split(e, f0, a, fm, m, depth + 1);
    edge_split(e, fm, m, f1, b, depth + 1);
    return;
  }
  if (e->n < e->cap)
    e->f[e->n++] = f1;
}

int tsr__hpx_boundary_fine(int64_t nside, bool nested, int64_t pix, double tol, int max_depth,
                           double *v, int cap) {
  double cx[5], cy[5], fbuf[(1 << TSR__HPX_MAX_DEPTH) + 1];
  int face = pixel_square(nside, nested, pix, cx, cy), nv = 0;
  if (max_depth > TSR__HPX_MAX_DEPTH)
    max_depth = TSR__HPX_MAX_DEPTH;
  {
    for (int k = 0; k < 4; k++) {
      edge_walk_t e = {nside, face, {0, 0}, {0, 0}, tol * tsr__hpx_pixel_size(nside), max_depth,
                       fbuf, 0, (1 << TSR__HPX_MAX_DEPTH) + 1};
      bool fwd = cx[k] < cx[k + 1] || (cx[k] == cx[k + 1] && cy[k] < cy[k + 1]);
      double a[3], b[3];
      e.lo[0] = fwd ? cx[k] : cx[k + 1], e.lo[1] = fwd ? cy[k] : cy[k + 1];
      e.hi[0] = fwd ? cx[k + 1] : cx[k], e.hi[1] = fwd ? cy[k + 1] : cy[k];
      edge_point(&e, 0.0, a);
      edge_point(&e, 1.0, b);
      e.f[e.n++] = 0.0;
      edge_split(&e, 0.0, a, 1.0, b, 0);
      /* e.f runs 0 .. 1; the polygon takes the edge from its own first
       * corner, without the last. */
      for (int j = 0; j + 1 < e.n; j++) {
        if (nv >= cap)
          return -1;
        edge_point(&e, fwd ? e.f[j] : e.f[e.n - 1 - j], v + 3 * nv++);
      }
    }
  }
  return nv;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* NESTED: the nested cells of level k (nside 2^k) that meet [lo, hi) and
 * may hold centres within radius of c (a cell's centre within radius plus
 * twice the level's pixel size, more than any centre-to-corner distance),
 * depth first, so the pixels come out ascending. */
static void disc_nest(int k, int kmax, int64_t cell, const double c[3], double radius, int64_t lo,
                      int64_t hi, int64_t *out, size_t cap, size_t *n) {
  int64_t span = (int64_t)1 << (2 * (kmax - k)), ns = (int64_t)1 << k;
  double v[3];
  if ((cell + 1) * span <= lo || cell * span >= hi)
    return;
  hp.pix2vec_nest(ns, cell, v);
  if (radius < M_PI && angle_between(v, c) > radius + 2 * tsr__hpx_pixel_size(ns))
    return;
  if (k == kmax) {
    if (*n < cap)
      out[*n] = cell;
    (*n)++;
    return;
  }
  for (int64_t s = 0; s < 4; s++)
    disc_nest(k + 1, kmax, cell * 4 + s, c, radius, lo, hi, out, cap, n);
}

/* RING: the rings the disc's colatitude range reaches (one more each
 * side) that meet [lo, hi), and in each the longitude span of the disc at
 * the ring's latitude, from the spherical law of cosines, widened by one
 * pixel each side.  Pixels of a ring are evenly spaced in longitude from
 * its first. */
size_t tsr__hpx_disc_pixels_in(int64_t nside, bool nested, const double c[3], double radius,
                               int64_t lo, int64_t hi, int64_t *out, size_t cap) {
  size_t n = 0;
  int64_t r0 = 1, r1 = 4 * nside - 1, p, npix = tsr__hpx_npix(nside);
  double zc = c[2] > 1 ? 1 : c[2] < -1 ? -1 : c[2];
  double thc = acos(zc), phic = wrap_lon(atan2(c[1], c[0])), sthc = sqrt((1 - zc) * (1 + zc));
  double cosr = cos(radius);
  lo = lo < 0 ? 0 : lo;
  hi = hi > npix ? npix : hi;
  if (lo >= hi)
    return 0;
  if (nested) {
    int kmax = 0;
    while (((int64_t)1 << kmax) < nside)
      kmax++;
    for (int64_t b = 0; b < 12; b++)
      disc_nest(0, kmax, b, c, radius, lo, hi, out, cap, &n);
    return n;
  }
  if (radius >= M_PI)
    radius = M_PI;
  if (thc - radius > 0) {
    hp.ang2pix_ring(nside, thc - radius, 0.0, &p);
    r0 = tsr__hpx_ring_of(nside, p) - 1;
    r0 = r0 < 1 ? 1 : r0;
  }
  if (thc + radius < M_PI) {
    hp.ang2pix_ring(nside, thc + radius, 0.0, &p);
    r1 = tsr__hpx_ring_of(nside, p) + 1;
    r1 = r1 > 4 * nside - 1 ? 4 * nside - 1 : r1;
  }
  {
    int64_t rl = tsr__hpx_ring_of(nside, lo), rh = tsr__hpx_ring_of(nside, hi - 1);
    r0 = r0 > rl ? r0 : rl;
    r1 = r1 < rh ? r1 : rh;
  }
  for (int64_t r = r0; r <= r1; r++) {
    int64_t first, count, j0, j1;
    double lon0, lat0, z, sth, span;
    tsr__hpx_ring_span(nside, r, &first, &count);
    tsr__hpx_pix2ang(nside, false, first, &lon0, &lat0);
    z = sin(lat0), sth = cos(lat0);
    if (radius >= M_PI || sth * sthc < 1e-300) {
      span = M_PI;
    } else {
      double cd = (cosr - z * zc) / (sth * sthc);
      if (cd >= 1.0) {
        /* The ring passes outside the disc, except within rounding. */
        if (acos(fmin(1.0, z * zc + sth * sthc)) > radius * (1 + 1e-12) + 1e-15)
          continue;
        span = 0.0;
      } else
        span = cd <= -1.0 ? M_PI : acos(cd);
    }
    {
      double step = 2 * M_PI / (double)count;
      double a = (phic - span - lon0) / step, b = (phic + span - lon0) / step;
      j0 = (int64_t)floor(a) - 1;
      j1 = (int64_t)ceil(b) + 1;
      if (span >= M_PI || j1 - j0 + 1 >= count)
        j0 = 0, j1 = count - 1;
    }
    for (int64_t j = j0; j <= j1; j++) {
      int64_t q = ((j % count) + count) % count + first;
      if (q < lo || q >= hi)
        continue;
      if (n < cap)
        out[n] = q;
      n++;
    }
  }
  if (n > 1 && n <= cap) /* out may be NULL when cap is 0 (a count only) */
    qsort(out, n, sizeof *out, cmp_i64);
  return n;
}

size_t tsr__hpx_disc_pixels(int64_t nside, bool nested, const double c[3], double radius,
                            int64_t *out, size_t cap) {
  return tsr__hpx_disc_pixels_in(nside, nested, c, radius, 0, tsr__hpx_npix(nside), out, cap);
}
