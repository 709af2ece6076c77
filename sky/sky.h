/* sky.h -- celestial geometry, private to the library: WCS headers (parse,
 * fix, validate), celestial WCS copies for mapping, and celestial frames.
 *
 * sky/ is the one place a WCS header becomes wcslib structures, so io/
 * (sources, header files) and ops/ (reprojection, mosaics) accept and read
 * every header the same way.  It uses engine/ only; io/ and ops/ use it. */
#ifndef TSR_SKY_H
#define TSR_SKY_H

#include "internal.h"

#ifndef TSR__CARD
#define TSR__CARD 80
#endif

struct wcsprm;

/* ------------------------------------------------------------------ */
/* Headers (wcshdr.c)                                                  */

/* True if some card is a primary CTYPEn (n = 1..99): the header claims a WCS. */
bool tsr__sky_has_ctype(const char *cards, int ncards);

/* Validate `ncards` cards (80 columns each, no END) and make a new
 * tsr_wcs_t holding a copy of them (keywords upper-cased).  NAXIS and
 * NAXISn are taken from the cards; they are required when `need_shape`.
 * `what` prefixes every message ("input \"a.fits\"").  @return 0 and *out
 * (caller frees with tsr_wcs_free), or TSR_EWCS / TSR_EINVAL / TSR_ENOTSUP /
 * TSR_ENOMEM with *out = NULL and the message on ctx.  Cards only read. */
int tsr__sky_wcs_make(tsr_ctx_t *ctx, const char *cards, int ncards, const char *what,
                      int need_shape, tsr_wcs_t **out);

/* Parse cards with wcslib, apply the fixes astropy's WCS() applies by
 * default (cdfix, datfix, obsfix, unitfix, spcfix, and celfix for the AIPS
 * codes NCP and GLS), and wcsset the primary WCS: the one routine every
 * header goes through, whoever reads it.  On success *all / *nwcs are
 * wcslib's array (free with tsr__sky_wcsprm_free, also after a failure)
 * and *prim points into it, set up.  Otherwise a negative code and a
 * message naming `what`, the keyword and what was expected.  wcslib's
 * error switch is global: one thread at a time per process calls this
 * (runs call it from their own processes or under the build lock). */
int tsr__sky_wcsprm(tsr_ctx_t *ctx, const char *cards, int ncards, const char *what,
                    struct wcsprm **all, int *nwcs, struct wcsprm **prim);
void tsr__sky_wcsprm_free(int *nwcs, struct wcsprm **all);

/* ------------------------------------------------------------------ */
/* Celestial frames (frames.c)                                         */

/* The frames astropy handles for FITS WCS, with its definitions. */
typedef enum {
  TSR__SKY_ICRS = 1,
  TSR__SKY_FK5 = 2,           /* mean equator and equinox (IAU 2006 precession, as astropy) */
  TSR__SKY_FK4 = 3,           /* with the E-terms of aberration of its equinox */
  TSR__SKY_FK4_NO_E = 4,      /* FK4 with the E-terms removed */
  TSR__SKY_GALACTIC = 5,
  TSR__SKY_SUPERGALACTIC = 6,
  TSR__SKY_ECLIPTIC = 7,      /* barycentric mean ecliptic and equinox (BarycentricMeanEcliptic) */
  /* Not a sky frame: two linear world axes (no celestial ones, see
   * tsr__cel_open).  It meets only itself, as the identity; tsr__map_new
   * refuses to pair it with a celestial frame. */
  TSR__SKY_LINEAR = 8
} tsr__frame_kind_t;

typedef struct {
  tsr__frame_kind_t kind;
  double equinox;   /* TT Julian date: FK4, FK4-NO-E, FK5, ecliptic; else 0 */
  double obstime;   /* TT Julian date of the epoch of observation: FK4, FK4-NO-E; else 0 */
} tsr__frame_t;

/* Besselian and Julian epochs <-> TT Julian dates (ERFA's epb2jd, epj2jd). */
double tsr__sky_byear_jd(double byear);
double tsr__sky_jyear_jd(double jyear);
double tsr__sky_jd_byear(double jd);
double tsr__sky_jd_jyear(double jd);

/* A frame with astropy's defaults: FK4 B1950 (obstime = equinox), FK5 and
 * ecliptic J2000. */
tsr__frame_t tsr__frame_default(tsr__frame_kind_t kind);
/* The frame named `s` (case aside): "icrs", "fk5", "fk4", "fk4-no-e",
 * "galactic", "supergalactic", "ecliptic"; -1 if none. */
int tsr__frame_parse(const char *s, tsr__frame_t *f);
/* "ICRS", "FK5(J1975)", "FK4(B1950)", "Galactic", ..., "linear" */
void tsr__frame_name(const tsr__frame_t *f, char *buf, size_t cap);
bool tsr__frame_equal(const tsr__frame_t *a, const tsr__frame_t *b);

/* Unit vectors of frame `from` -> frame `to`, along astropy's transform
 * graph (the same path, the same intermediate frames): E-terms removed
 * (an FK4 source), one rotation, E-terms added (an FK4 target).  Linear
 * -> linear is the identity; linear and a sky frame have no transform
 * (callers check first; it is left the identity). */
typedef struct {
  double m[9];        /* row-major rotation between the E-term steps */
  double ein[3];      /* E-terms vector removed first */
  double eout[3];     /* E-terms vector added last */
  bool rotate;        /* m differs from the identity */
  bool ein_on, eout_on;
} tsr__frame_xform_t;

void tsr__frame_xform(const tsr__frame_t *from, const tsr__frame_t *to, tsr__frame_xform_t *x);
/* Transform n unit vectors (n x 3) in place; NaN stays NaN. */
void tsr__frame_apply(const tsr__frame_xform_t *x, size_t n, double *v);
/* True if the transform is the identity. */
static inline bool tsr__frame_identity(const tsr__frame_xform_t *x) {
  return !x->rotate && !x->ein_on && !x->eout_on;
}
/* True if the transform is a pure rotation (no E-terms): then central
 * projections stay projectively related. */
static inline bool tsr__frame_is_rotation(const tsr__frame_xform_t *x) {
  return !x->ein_on && !x->eout_on;
}

/* ------------------------------------------------------------------ */
/* Celestial WCS copies for mapping (cel.c)                            */

typedef struct tsr__cel_s tsr__cel_t;

/* Parse the celestial part of `w` (pixel axes 0 and 1 must be the longitude
 * and latitude axes, in either order) into a private wcslib copy, through
 * tsr__sky_wcsprm.  `what` names the WCS in messages ('input "a.fits"',
 * 'target "t.hdr"').  The copy belongs to the calling thread; never share
 * it between threads. */
int tsr__cel_new(tsr_ctx_t *ctx, const tsr_wcs_t *w, const char *what, tsr__cel_t **out);
/* As tsr__cel_new, and when `linear_ok` also a WCS without celestial axes
 * whose pixel axes 0 and 1 are linear (CTYPE '' or a name wcslib does not
 * know, as astropy's WCS(naxis=2)): its frame is TSR__SKY_LINEAR and its
 * "vectors" are (world1, world2, 0), not unit vectors, so only mappings
 * between two linear WCSs (tsr__map_new, which checks) may use them. */
int tsr__cel_open(tsr_ctx_t *ctx, const tsr_wcs_t *w, const char *what, bool linear_ok,
                  tsr__cel_t **out);
void tsr__cel_free(tsr__cel_t *c);
const tsr__frame_t *tsr__cel_frame(const tsr__cel_t *c);
/* The reference pixel (CRPIX, 0-based). */
void tsr__cel_crpix(const tsr__cel_t *c, double p[2]);
/* Degrees per pixel along each pixel axis at the reference point, as
 * astropy's proj_plane_pixel_scales: the column norms of CDELT x PC (or CD). */
void tsr__cel_scales(const tsr__cel_t *c, double s[2]);
/* True for a plain gnomonic (TAN) projection without distortions: then a
 * TAN -> TAN mapping is exactly a homography. */
bool tsr__cel_is_plain_tan(const tsr__cel_t *c);
const char *tsr__cel_proj(const tsr__cel_t *c);   /* "TAN", "SIN", ... ("" if linear) */
/* True for two linear axes without distortions: a mapping between two
 * such WCSs is affine, so exactly a homography. */
bool tsr__cel_is_plain_linear(const tsr__cel_t *c);
/* The unit (CUNITi, as wcslib normalised it) of pixel axis `axis` (0 or
 * 1), "" if none. */
const char *tsr__cel_unit(const tsr__cel_t *c, int axis);
/* The type (CTYPEi) of pixel axis `axis` (0 or 1), "" if none. */
const char *tsr__cel_ctype(const tsr__cel_t *c, int axis);

/* Pixel (0-based) -> unit vector of the world position in the WCS's frame,
 * for n points; v is n x 3.  Invalid pixels give NaN vectors.  (Linear
 * WCSs: (world1, world2, 0) instead, see tsr__cel_open.) */
void tsr__cel_pix2vec(tsr__cel_t *c, size_t n, const double *x, const double *y, double *v);
/* Unit vectors -> pixels (0-based); NaN where the projection is undefined. */
void tsr__cel_vec2pix(tsr__cel_t *c, size_t n, const double *v, double *x, double *y);

/* The frame a header's celestial axes are in, by astropy's rules
 * (wcs_to_celestial_frame: RADESYS, or FK4 before EQUINOX 1984, FK5 from
 * it, ICRS with neither; EQUINOX Besselian for FK4, Julian for FK5) and
 * tessera's for what astropy leaves out (ELON/ELAT: the mean ecliptic of
 * EQUINOX; SLON/SLAT: supergalactic).  `w` is set up (wcsset).  0, or
 * TSR_ENOTSUP with a message naming the keyword. */
int tsr__sky_frame_of(tsr_ctx_t *ctx, const struct wcsprm *w, const char *what, tsr__frame_t *f);

#endif
