/* hpx.h -- HEALPix geometry (Gorski et al. 2005), private to the library.
 *
 * Pixel indices and centres come from Debian's libchealpix (its 64-bit
 * functions, nside up to 2^29); what it lacks is here: the ring layout
 * (first pixel and length of a ring, the ring of a pixel), astropy-healpix's
 * four-neighbour bilinear weights, and the index ranges a disc may touch,
 * for windows.  Angles are radians; longitudes in [0, 2 pi). */
#ifndef TSR_SKY_HPX_H
#define TSR_SKY_HPX_H

#include <math.h>

#include "internal.h"
#include "sky.h"

#define TSR__HPX_MAX_NSIDE ((int64_t)1 << 29)
#define TSR__HPX_UNSEEN (-1.6375e30)

/* A stored value as a map's pixel: NaN when not finite or UNSEEN (healpy's
 * test: within 1e-5 relative of UNSEEN, which float32 rounds). */
static inline double tsr__hpx_unseen_nan(double v) {
  return !isfinite(v) || fabs(v / TSR__HPX_UNSEEN - 1.0) < 1e-5 ? NAN : v;
}
/* The same test for float32 values as a range: f is UNSEEN exactly when
 * lo <= f <= hi, so that loops over float32 rows stay branch-free. */
void tsr__hpx_unseen_bounds(float *lo, float *hi);

/* Load libchealpix (once per process; thread-safe).  The functions marked
 * [lib] need it loaded: whoever calls them calls this first (a node's
 * start, before its run uses them).  0, or TSR_ENOTSUP with the library's
 * name and dlerror() on ctx. */
int tsr__hpx_load(tsr_ctx_t *ctx);

/* nside valid for the ordering: 1..2^29, a power of two when nested. */
bool tsr__hpx_nside_ok(int64_t nside, bool nested);
int64_t tsr__hpx_npix(int64_t nside);
/* The nside of npix pixels, or -1 if npix is not 12 nside^2. */
int64_t tsr__hpx_nside_of(int64_t npix);

/* [lib] */
int64_t tsr__hpx_vec2pix(int64_t nside, bool nested, const double v[3]);
int64_t tsr__hpx_ang2pix(int64_t nside, bool nested, double lon, double lat);
void tsr__hpx_pix2vec(int64_t nside, bool nested, int64_t pix, double v[3]);
void tsr__hpx_pix2ang(int64_t nside, bool nested, int64_t pix, double *lon, double *lat);
int64_t tsr__hpx_nest2ring(int64_t nside, int64_t p);
int64_t tsr__hpx_ring2nest(int64_t nside, int64_t p);

/* tsr__hpx_ring2nest without libchealpix, the same results (own code, for
 * the bilinear weights' four neighbours in NESTED maps). */
int64_t tsr__hpx_ring2nest_fast(int64_t nside, int64_t p);

/* Ring layout, rings numbered 1..4 nside - 1 from the north pole: its first
 * RING index and pixel count; the ring of a RING index. */
void tsr__hpx_ring_span(int64_t nside, int64_t ring, int64_t *first, int64_t *count);
int64_t tsr__hpx_ring_of(int64_t nside, int64_t p);

/* astropy-healpix's bilinear interpolation: the RING indices of the four
 * neighbours of (lon, lat) and their weights (two pixels of the ring on
 * either side in latitude, each pair weighted by longitude, the pairs by
 * latitude; over the poles, the pixels across the pole).  The reference:
 * libchealpix's lookups and centres, one point at a time.  [lib] */
void tsr__hpx_interp_weights(int64_t nside, double lon, double lat, int64_t ring[4],
                             double w[4]);

/* The same weights for many points, fast and without libchealpix (see
 * healpix.c): a ring's layout and geometry, and a direct-mapped cache of
 * them (ring r in slot r % TSR__HPX_RING_SLOTS) with the arctangent
 * table.  One cache per thread (the caller's memory, ~15 kB; a task's
 * scratch), set up by tsr__hpx_rings_init for the map's nside. */
typedef struct {
  int64_t r;             /* ring number (1 .. 4 nside - 1); -1: empty slot */
  int64_t first, count;  /* its first RING index and its pixels */
  double phase;          /* centre j is at longitude (j + phase) / count turns */
  double lat, z, c;      /* latitude (libchealpix's, to the bit), its sine and cosine */
} tsr__hpx_ring_t;
#define TSR__HPX_RING_SLOTS 256
typedef struct {
  int64_t nside;
  double atan_tab[33];   /* atan(k / 32) */
  tsr__hpx_ring_t slot[TSR__HPX_RING_SLOTS];
} tsr__hpx_rings_t;
void tsr__hpx_rings_init(tsr__hpx_rings_t *rs, int64_t nside);
/* Ring r (1 .. 4 nside - 1), valid until the next lookup of a ring in
 * the same slot. */
const tsr__hpx_ring_t *tsr__hpx_ring(tsr__hpx_rings_t *rs, int64_t r);
/* atan2(y, x) / 2 pi in [0, 1) (within 2e-15 rad of libm's), as
 * tsr__hpx_bilinear computes longitudes. */
double tsr__hpx_atan2_turns(const tsr__hpx_rings_t *rs, double y, double x);
/* tsr__hpx_interp_weights of the n unit vectors (x[k], y[k], z[k]): RING
 * indices ring[4k .. 4k + 3] and weights w[4k .. 4k + 3]; a NaN vector
 * gets indices -1. */
void tsr__hpx_bilinear(tsr__hpx_rings_t *rs, size_t n, const double *x, const double *y,
                       const double *z, int64_t *ring, double *w);

/* The index range [lo, hi) (in the given ordering) that holds every pixel
 * whose centre lies within `radius` of unit vector c.  [lib] when nested. */
void tsr__hpx_disc_range(int64_t nside, bool nested, const double c[3], double radius,
                         int64_t *lo, int64_t *hi);

/* Pixel boundaries.  A HEALPix pixel is a square (ix..ix+1, iy..iy+1) of
 * its base face's coordinates (x, y in [0, nside]); its edges are the
 * images of the square's sides under the HEALPix projection, curves that
 * are not great circles (lines z = a +- b phi in the equatorial zone,
 * phi sqrt(1 - |z|) = const-like curves in the polar caps).  Here a
 * boundary is the spherical polygon through `k` points per edge, evenly
 * spaced in face coordinates and joined by great-circle arcs: 4 k unit
 * vectors, each edge from its first corner, the corners in astropy-healpix's
 * order: north (ix + 1, iy + 1), west, south (ix, iy), east.
 * Neighbours share their edge points (to rounding), so the polygons tile
 * the sphere without gaps or overlaps; their areas converge to the exact
 * 4 pi / npix as k grows (test-healpix measures it).  The points are those
 * of astropy-healpix's boundaries_lonlat(step = k). */
void tsr__hpx_boundary(int64_t nside, bool nested, int64_t pix, int k, double *v);
/* The boundary the exact reprojection uses: each edge split in halves (in
 * face coordinates) until every piece's midpoint lies within tol x the
 * pixel size (tsr__hpx_pixel_size) of the great circle through its ends,
 * at least once and at most max_depth (<= TSR__HPX_MAX_DEPTH) times.  Edge
 * points are shared exactly by neighbours (see healpix.c).  Writes at most
 * `cap` vectors to v; returns their number, or -1 if cap is too small (4 x
 * 2^max_depth always suffices).  test-healpix measures the area error per
 * tol, nside and ring (README). */
#define TSR__HPX_MAX_DEPTH 12
/* The tolerance of the exact reprojection's boundaries (ops/
 * reproject_healpix_exact.c): areas within 1e-6 of 4 pi / npix everywhere. */
#define TSR__HPX_EXACT_TOL 3e-7
int tsr__hpx_boundary_fine(int64_t nside, bool nested, int64_t pix, double tol, int max_depth,
                           double *v, int cap);
/* Face (0..11) and continuous face coordinates of a direction (theta from
 * the north pole, phi), and back to a unit vector: the HEALPix projection
 * of Gorski et al. (2005), eqs. 4-10, on one face. */
void tsr__hpx_ang2xyf(int64_t nside, double theta, double phi, int *face, double *x, double *y);
void tsr__hpx_xyf2vec(int64_t nside, int face, double x, double y, double v[3]);

/* The pixels (in the given ordering, ascending, each once) that hold every
 * pixel whose centre lies within `radius` of unit vector c, and a few more
 * next to them: ring by ring, the longitude span the disc covers.  Writes
 * at most cap of them to out and returns how many there are (call again
 * with more room when that exceeds cap; only then is out unsorted). */
size_t tsr__hpx_disc_pixels(int64_t nside, bool nested, const double c[3], double radius,
                            int64_t *out, size_t cap);
/* The same, only those in the index range [lo, hi): RING visits only the
 * rings that meet it, NESTED only the nested cells (so a small range of a
 * large disc costs little). */
size_t tsr__hpx_disc_pixels_in(int64_t nside, bool nested, const double c[3], double radius,
                               int64_t lo, int64_t hi, int64_t *out, size_t cap);

/* Angular size of a pixel, sqrt(4 pi / npix): its largest centre-to-corner
 * distance is below 1.5 times this (Gorski et al. 2005, fig. 3). */
double tsr__hpx_pixel_size(int64_t nside);

/* "G", "galactic", "C", "icrs", "celestial", "equatorial", "E", "ecliptic"
 * (case aside) -> 'G', 'C', 'E'; 0 for anything else. */
char tsr__hpx_coordsys_parse(const char *s);
/* The frame of COORDSYS 'G', 'C' or 'E' (astropy's Galactic, ICRS and
 * BarycentricMeanEcliptic of J2000): 0, or -1 for another letter. */
int tsr__hpx_frame(char coordsys, tsr__frame_t *f);
/* The COORDSYS letter of a frame ('G', 'C', 'E'), or 0 when HEALPix has
 * none for it (FK5, FK4, supergalactic, another ecliptic equinox). */
char tsr__hpx_coordsys_of(const tsr__frame_t *f);

/* The cards that describe a HEALPix node (NAXIS = 1, NAXIS1 = 12 nside^2,
 * PIXTYPE, ORDERING, NSIDE, COORDSYS, INDXSCHM), as a tsr_wcs_t: it is
 * what a HEALPix node carries in place of a celestial WCS.  0, or
 * TSR_ENOMEM. */
int tsr__hpx_cards(tsr_ctx_t *ctx, int64_t nside, bool nested, char coordsys, tsr_wcs_t **out);
/* Read them back: true if `w` describes a HEALPix map (PIXTYPE 'HEALPIX'). */
bool tsr__hpx_from_cards(const tsr_wcs_t *w, int64_t *nside, bool *nested, char *coordsys);

#endif
