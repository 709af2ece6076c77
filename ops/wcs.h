/* wcs.h -- celestial WCS for mapping: wcslib copies and frame rotations. */
#ifndef TSR_OPS_WCS_H
#define TSR_OPS_WCS_H

#include "internal.h"

typedef enum {
  TSR__FRAME_ICRS = 1,
  TSR__FRAME_FK5 = 2,   /* FK5, equinox J2000 */
  TSR__FRAME_GAL = 3,   /* Galactic (astropy's definition, from FK5 J2000) */
  TSR__FRAME_ECL = 4,   /* barycentric mean ecliptic and equinox of J2000 (IAU 2006) */
  TSR__FRAME_LINEAR = 5 /* no celestial axes: two linear world axes (tsr__cel_open) */
} tsr__frame_t;

typedef struct tsr__cel_s tsr__cel_t;

/* Parse the celestial part of `w` (pixel axes 0 and 1 must be the longitude
 * and latitude axes, in either order) into a private wcslib copy.  `what`
 * names the WCS in messages ('input "a.fits"', 'target "t.hdr"').  The copy
 * belongs to the calling process; never share it between threads. */
int tsr__cel_new(tsr_ctx_t *ctx, const tsr_wcs_t *w, const char *what, tsr__cel_t **out);
/* As tsr__cel_new, and when `linear_ok` also a WCS whose pixel axes 0 and 1
 * are plain linear axes (CTYPE '' or a name wcslib does not know, as
 * astropy's WCS(naxis=2)): its frame is TSR__FRAME_LINEAR and its "vectors"
 * are (world1, world2, 0), not unit vectors, so only mappings between two
 * linear WCSs (tsr__map_new, which checks) may use them. */
int tsr__cel_open(tsr_ctx_t *ctx, const tsr_wcs_t *w, const char *what, bool linear_ok,
                  tsr__cel_t **out);
void tsr__cel_free(tsr__cel_t *c);
tsr__frame_t tsr__cel_frame(const tsr__cel_t *c);
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
/* The unit (CUNITi) and type (CTYPEi) of pixel axis `axis` (0 or 1), "" if
 * none. */
const char *tsr__cel_unit(const tsr__cel_t *c, int axis);
const char *tsr__cel_ctype(const tsr__cel_t *c, int axis);

/* Pixel (0-based) -> unit vector of the world position in the WCS's frame,
 * for n points; v is n x 3.  Invalid pixels give NaN vectors.  (Linear
 * WCSs: (world1, world2, 0) instead, see tsr__cel_open.) */
void tsr__cel_pix2vec(tsr__cel_t *c, size_t n, const double *x, const double *y, double *v);
/* Unit vectors -> pixels (0-based); NaN where the projection is undefined. */
void tsr__cel_vec2pix(tsr__cel_t *c, size_t n, const double *v, double *x, double *y);

/* The rotation taking unit vectors of frame `from` to frame `to` (row-major
 * 3x3), agreeing with astropy's transform graph. */
void tsr__frame_matrix(tsr__frame_t from, tsr__frame_t to, double m[9]);

#endif
