/* cel.c -- celestial WCS copies for mapping: batched pixel <-> unit-vector
 * transforms, and the frame a header's celestial axes are in.
 *
 * Positions travel between WCSs as unit vectors, so a frame change is a
 * 3x3 rotation (plus FK4's E-terms, frames.c) and there is no longitude wrap
 * to get wrong.  Headers are parsed, fixed and validated by
 * tsr__sky_wcsprm, the routine every reader uses, so a header that built a
 * graph is read the same way when it runs.  wcslib calls are batched (its
 * projection routines are vectorised) through scratch arrays owned by the
 * tsr__cel_t.
 *
 * A WCS without celestial axes whose first two axes are linear (astropy's
 * WCS(naxis=2), detector or offset coordinates) is accepted where the caller
 * allows it: its "vectors" carry the two world values as they are, and its
 * frame, TSR__SKY_LINEAR, only maps to another linear WCS in the same
 * units, as astropy's pixel_to_pixel would.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <wcslib/wcs.h>
#include <wcslib/wcserr.h>
#include <wcslib/wcshdr.h>
#include <wcslib/wcsmath.h>

#include "sky.h"

#define BATCH 512
#undef D2R
#define D2R (M_PI / 180.0)

struct tsr__cel_s {
  tsr_ctx_t *ctx;
  struct wcsprm *wcs;       /* 2-axis celestial copy, wcsset done */
  int lng;                  /* world axis of longitude in wcs (0 or 1) */
  tsr__frame_t frame;      /* of the celestial axes (TSR__SKY_LINEAR if linear) */
  bool linear;              /* two linear axes: world = the vector's x, y */
  bool plain_tan;
  bool plain_linear;        /* linear without distortions */
  int batch;                /* points per wcslib call: BATCH, or 1 (see tsr__cel_new) */
  char proj[4];
  double pix[2 * BATCH], img[2 * BATCH], phi[BATCH], theta[BATCH], world[2 * BATCH];
  int stat[BATCH];
};

/* The first four characters of CTYPEi, blanks dropped ("RA", "GLON"). */
static void axis_type(const char *ctype, char out[5]) {
  int n = 0;
  for (; n < 4 && ctype[n] != '\0' && ctype[n] != '-' && ctype[n] != ' '; n++)
    out[n] = ctype[n];
  out[n] = '\0';
}

int tsr__sky_frame_of(tsr_ctx_t *ctx, const struct wcsprm *w, const char *what,
                      tsr__frame_t *f) {
  char lng[5], lat[5], radesys[72];
  double equinox = w->equinox;
  bool has_equinox = !undefined(equinox) && isfinite(equinox);
  int ia = w->lng + 1, ib = w->lat + 1;

  axis_type(w->ctype[w->lng], lng);
  axis_type(w->ctype[w->lat], lat);
  snprintf(radesys, sizeof radesys, "%s", w->radesys);
  for (char *e = radesys + strlen(radesys); e > radesys && e[-1] == ' ';)
    *--e = '\0';
  if (strcmp(lng, "GLON") == 0 && strcmp(lat, "GLAT") == 0) {
    *f = tsr__frame_default(TSR__SKY_GALACTIC);
    return 0;
  }
  if (strcmp(lng, "SLON") == 0 && strcmp(lat, "SLAT") == 0) {
    *f = tsr__frame_default(TSR__SKY_SUPERGALACTIC);
    return 0;
  }
  if (strcmp(lng, "ELON") == 0 && strcmp(lat, "ELAT") == 0) {
    /* astropy 5.2 has no frame for ecliptic headers (it takes them for
     * the RADESYS frame: astropy issue 6483); FITS means the mean ecliptic
     * and equinox of EQUINOX, referred to RADESYS.  That is astropy's
     * BarycentricMeanEcliptic for ICRS and FK5; FK4's ecliptic has no
     * astropy counterpart to agree with. */
    if (radesys[0] != '\0' && strcmp(radesys, "ICRS") != 0 && strcmp(radesys, "FK5") != 0)
      return tsr__err(ctx, TSR_ENOTSUP,
                      "%s: ecliptic axes (CTYPE%d = '%s') referred to RADESYS = '%s' (given, or "
                      "the default for EQUINOX before 1984) are not supported; expected "
                      "RADESYS = 'ICRS' or 'FK5'",
                      what, ia, w->ctype[w->lng], radesys);
    f->kind = TSR__SKY_ECLIPTIC;
    f->equinox = tsr__sky_jyear_jd(has_equinox ? equinox : 2000.0);
    f->obstime = 0;
    return 0;
  }
  if (!(strcmp(lng, "RA") == 0 && strcmp(lat, "DEC") == 0)) {
    static const struct { const char *lng, *name; } known[] = {
        {"HPLN", "helioprojective (solar)"}, {"HGLN", "heliographic Stonyhurst (solar)"},
        {"CRLN", "heliographic Carrington (solar)"}, {"SOLX", "heliocentric (solar)"},
        {"HOLN", "heliocentric (solar)"}, {"HCLN", "heliocentric (solar)"},
        {"HLON", "helioecliptic"}, {"TLON", "terrestrial (ITRS)"},
    };
    const char *kind = NULL;
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++)
      if (strcmp(lng, known[k].lng) == 0)
        kind = known[k].name;
    if (kind == NULL && strlen(lng) == 4 && strcmp(lng + 2, "LN") == 0)
      kind = "planetary or other body-fixed";
    return tsr__err(ctx, TSR_ENOTSUP,
                    "%s: CTYPE%d = '%s', CTYPE%d = '%s': %s%scoordinates are not supported; "
                    "expected RA/DEC, GLON/GLAT, ELON/ELAT or SLON/SLAT",
                    what, ia, w->ctype[w->lng], ib, w->ctype[w->lat], kind ? kind : "",
                    kind ? " " : "");
  }
  /* FITS WCS Paper II (and astropy): without RADESYS, FK4 before EQUINOX
   * 1984, FK5 from it, ICRS without EQUINOX.  (wcsset fills radesys the
   * same way; this does not depend on it.) */
  if (radesys[0] == '\0')
    strcpy(radesys, !has_equinox ? "ICRS" : equinox < 1984.0 ? "FK4" : "FK5");
  if (strcmp(radesys, "ICRS") == 0) {
    *f = tsr__frame_default(TSR__SKY_ICRS);
    return 0;
  }
  if (strcmp(radesys, "FK5") == 0) {
    *f = tsr__frame_default(TSR__SKY_FK5);
    if (has_equinox)
      f->equinox = tsr__sky_jyear_jd(equinox);
    return 0;
  }
  if (strcmp(radesys, "FK4") == 0 || strcmp(radesys, "FK4-NO-E") == 0) {
    /* astropy's FK4(equinox=Time(EQUINOX, format='byear')): its obstime
     * defaults to the equinox; MJD-OBS and DATE-OBS do not enter the frame
     * (wcs_to_celestial_frame), so they do not here either. */
    *f = tsr__frame_default(radesys[3] == '\0' ? TSR__SKY_FK4 : TSR__SKY_FK4_NO_E);
    if (has_equinox)
      f->equinox = f->obstime = tsr__sky_byear_jd(equinox);
    return 0;
  }
  return tsr__err(ctx, TSR_ENOTSUP,
                  "%s: RADESYS = '%s' is not supported; expected ICRS, FK5, FK4 or FK4-NO-E%s",
                  what, radesys,
                  strcmp(radesys, "GAPPT") == 0 ? " (GAPPT, geocentric apparent place, needs "
                                                  "the Earth's ephemeris)"
                                                : "");
}

int tsr__cel_new(tsr_ctx_t *ctx, const tsr_wcs_t *w, const char *what, tsr__cel_t **out) {
  return tsr__cel_open(ctx, w, what, false, out);
}

/* wcslib's axis type code of axis i: 0 = linear or unknown, 1 = Stokes,
 * 2 = celestial, 3 = spectral (wcsprm.types, thousands digit). */
static int axis_kind(const struct wcsprm *w, int i) { return w->types[i] / 1000; }

int tsr__cel_open(tsr_ctx_t *ctx, const tsr_wcs_t *w, const char *what, bool linear_ok,
                  tsr__cel_t **out) {
  tsr__cel_t *c = NULL;
  struct wcsprm *all = NULL, *prim = NULL;
  int nwcs = 0, status, rc = TSR_ENOMEM;
  int nsub = 2, axes[2] = {1, 2};

  *out = NULL;
  c = tsr__calloc(ctx, 1, sizeof *c);
  if (c == NULL) {
    tsr__err(ctx, rc, "%s: out of memory", what);
    goto out;
  }
  c->ctx = ctx; /* tsr__cel_free needs it, whatever fails next */
  if ((rc = tsr__sky_wcsprm(ctx, w->cards, w->ncards, what, &all, &nwcs, &prim)) != 0)
    goto out;
  if (linear_ok && prim->lng < 0 && prim->lat < 0 && prim->naxis >= 2 &&
      axis_kind(prim, 0) == 0 && axis_kind(prim, 1) == 0) {
    c->linear = true;
    c->frame = tsr__frame_default(TSR__SKY_LINEAR);
  } else if (prim->lng < 0 || prim->lat < 0) {
    rc = tsr__err(ctx, TSR_EWCS, "%s: no celestial axes (CTYPE1 = '%s', CTYPE2 = '%s')%s", what,
                  prim->ctype[0], prim->naxis > 1 ? prim->ctype[1] : "",
                  linear_ok ? "; expected a celestial pair or two linear axes" : "");
    goto out;
  } else if (!((prim->lng == 0 && prim->lat == 1) || (prim->lng == 1 && prim->lat == 0))) {
    rc = tsr__err(ctx, TSR_ENOTSUP,
                  "%s: celestial axes must be the first two (they are axes %d and %d)", what,
                  prim->lng + 1, prim->lat + 1);
    goto out;
  } else if ((rc = tsr__sky_frame_of(ctx, prim, what, &c->frame)) != 0) {
    goto out;
  }
  c->wcs = tsr__calloc(ctx, 1, sizeof *c->wcs);
  if (c->wcs == NULL) {
    rc = tsr__err(ctx, TSR_ENOMEM, "%s: out of memory", what);
    goto out;
  }
  c->wcs->flag = -1;
  wcserr_enable(1);
  if ((status = wcssub(1, prim, &nsub, axes, c->wcs)) != 0 || (status = wcsset(c->wcs)) != 0) {
    rc = tsr__err(ctx, TSR_EWCS, "%s: wcslib: %s", what,
                  c->wcs->err && c->wcs->err->msg ? c->wcs->err->msg : wcs_errmsg[status]);
    goto out;
  }
  c->batch = BATCH;
  if (c->linear) {
    c->lng = 0;
    c->plain_linear = c->wcs->lin.dispre == NULL && c->wcs->lin.disseq == NULL;
  } else {
    c->lng = c->wcs->lng;
    memcpy(c->proj, c->wcs->ctype[0] + 5, 3);
    c->proj[3] = '\0';
    /* wcslib 7.12's quad-cube projections (TSC, CSC, QSC) and HEALPix (HPX)
     * give wrong pixel -> world results for some points when called on a
     * vector of points at one pixel y (a row lands on the wrong face); one
     * point per call is right.  The other projections were checked clean. */
    static const char *const unbatched[] = {"TSC", "CSC", "QSC", "HPX"};
    for (size_t k = 0; k < sizeof unbatched / sizeof unbatched[0]; k++)
      if (strcmp(c->wcs->cel.prj.code, unbatched[k]) == 0)
        c->batch = 1;
    c->plain_tan = strcmp(c->wcs->cel.prj.code, "TAN") == 0 && c->wcs->lin.dispre == NULL &&
                   c->wcs->lin.disseq == NULL && strlen(c->wcs->ctype[0]) <= 8;
  }
  *out = c;
  c = NULL;
  rc = 0;
out:
  tsr__sky_wcsprm_free(&nwcs, &all);
  tsr__cel_free(c);
  return rc;
}

void tsr__cel_free(tsr__cel_t *c) {
  if (c == NULL)
    return;
  if (c->wcs) {
    wcsfree(c->wcs);
    tsr__free(c->ctx, c->wcs);
  }
  tsr__free(c->ctx, c);
}

void tsr__cel_crpix(const tsr__cel_t *c, double p[2]) {
  p[0] = c->wcs->crpix[0] - 1.0;
  p[1] = c->wcs->crpix[1] - 1.0;
}

void tsr__cel_scales(const tsr__cel_t *c, double s[2]) {
  /* wcsset turns CDi_j into PC with CDELT 1, so PC x CDELT covers both. */
  for (int j = 0; j < 2; j++) {
    double a = c->wcs->cdelt[0] * c->wcs->pc[0 * 2 + j], b = c->wcs->cdelt[1] * c->wcs->pc[1 * 2 + j];
    s[j] = sqrt(a * a + b * b);
  }
}

const tsr__frame_t *tsr__cel_frame(const tsr__cel_t *c) { return &c->frame; }
bool tsr__cel_is_plain_tan(const tsr__cel_t *c) { return c->plain_tan; }
bool tsr__cel_is_plain_linear(const tsr__cel_t *c) { return c->plain_linear; }
const char *tsr__cel_proj(const tsr__cel_t *c) { return c->linear ? "" : c->wcs->cel.prj.code; }
const char *tsr__cel_unit(const tsr__cel_t *c, int axis) { return c->wcs->cunit[axis]; }
const char *tsr__cel_ctype(const tsr__cel_t *c, int axis) { return c->wcs->ctype[axis]; }

void tsr__cel_pix2vec(tsr__cel_t *c, size_t n, const double *x, const double *y, double *v) {
  /* Points outside a projection fail by the thousand and are reported as
   * NaN; with wcslib's (global) error messaging on, each failure would
   * allocate a message that the next one leaks.  Parsing turns it back on. */
  wcserr_enable(0);
  for (size_t i0 = 0; i0 < n; i0 += BATCH) {
    int m = (int)(n - i0 < BATCH ? n - i0 : BATCH);
    for (int i = 0; i < m; i++) {
      /* wcslib pixels are 1-based. */
      c->pix[2 * i] = x[i0 + (size_t)i] + 1.0;
      c->pix[2 * i + 1] = y[i0 + (size_t)i] + 1.0;
      c->stat[i] = 0;
    }
    for (int k = 0; k < m; k += c->batch)
      wcsp2s(c->wcs, m - k < c->batch ? m - k : c->batch, 2, c->pix + 2 * k, c->img + 2 * k,
             c->phi + k, c->theta + k, c->world + 2 * k, c->stat + k);
    for (int i = 0; i < m; i++) {
      double *o = v + 3 * (i0 + (size_t)i);
      if (c->linear) {
        double a = c->world[2 * i], b = c->world[2 * i + 1];
        bool ok = c->stat[i] == 0 && isfinite(a) && isfinite(b);
        o[0] = ok ? a : NAN, o[1] = ok ? b : NAN, o[2] = ok ? 0.0 : NAN;
        continue;
      }
      double lon = c->world[2 * i + c->lng] * D2R, lat = c->world[2 * i + 1 - c->lng] * D2R;
      if (c->stat[i] != 0 || !isfinite(lon) || !isfinite(lat)) {
        o[0] = o[1] = o[2] = NAN;
        continue;
      }
      double cl = cos(lat);
      o[0] = cl * cos(lon);
      o[1] = cl * sin(lon);
      o[2] = sin(lat);
    }
  }
}

void tsr__cel_vec2pix(tsr__cel_t *c, size_t n, const double *v, double *x, double *y) {
  wcserr_enable(0); /* see tsr__cel_pix2vec */
  for (size_t i0 = 0; i0 < n; i0 += BATCH) {
    int m = (int)(n - i0 < BATCH ? n - i0 : BATCH);
    for (int i = 0; i < m; i++) {
      const double *p = v + 3 * (i0 + (size_t)i);
      if (c->linear) {
        bool ok = isfinite(p[0]) && isfinite(p[1]);
        c->world[2 * i] = ok ? p[0] : 0.0, c->world[2 * i + 1] = ok ? p[1] : 0.0;
        c->stat[i] = ok ? 0 : -1;
        continue;
      }
      double lon = atan2(p[1], p[0]) / D2R, lat;
      double h = hypot(p[0], p[1]);
      lat = atan2(p[2], h) / D2R;
      if (lon < 0)
        lon += 360.0;
      if (!isfinite(lon) || !isfinite(lat))
        lon = lat = 0.0, c->stat[i] = -1;
      else
        c->stat[i] = 0;
      c->world[2 * i + c->lng] = lon;
      c->world[2 * i + 1 - c->lng] = lat;
    }
    {
      int st2[BATCH];
      memset(st2, 0, sizeof(int) * (size_t)m);
      for (int k = 0; k < m; k += c->batch)
        wcss2p(c->wcs, m - k < c->batch ? m - k : c->batch, 2, c->world + 2 * k, c->phi + k,
               c->theta + k, c->img + 2 * k, c->pix + 2 * k, st2 + k);
      for (int i = 0; i < m; i++) {
        size_t k = i0 + (size_t)i;
        if (c->stat[i] != 0 || st2[i] != 0 || !isfinite(c->pix[2 * i]) ||
            !isfinite(c->pix[2 * i + 1])) {
          x[k] = y[k] = NAN;
        } else {
          x[k] = c->pix[2 * i] - 1.0;
          y[k] = c->pix[2 * i + 1] - 1.0;
        }
      }
    }
  }
}
