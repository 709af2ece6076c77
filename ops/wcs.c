/* wcs.c -- wcslib wrapper for mapping: parse, per-process copies, batched
 * pixel <-> unit-vector transforms, and celestial frame rotations.
 *
 * Positions travel between WCSs as unit vectors, so a frame change is one
 * 3x3 rotation and there is no longitude wrap to get wrong.  The rotations
 * are built from the same defining constants astropy uses (USNO circular 179
 * frame bias for ICRS -> FK5, the J2000 Galactic pole and longitude of the
 * NCP, and the IAU 2006 Fukushima-Williams angles at J2000 for the mean
 * ecliptic), so they agree with astropy to rounding.  wcslib calls are
 * batched (its projection routines are vectorised) through scratch arrays
 * owned by the tsr__cel_t.
 *
 * A WCS without celestial axes whose first two axes are linear (astropy's
 * WCS(naxis=2), detector or offset coordinates) is accepted where the caller
 * allows it: its "vectors" carry the two world values as they are, and its
 * frame, TSR__FRAME_LINEAR, only maps to another linear WCS in the same
 * units, as astropy's pixel_to_pixel would.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <wcslib/wcs.h>
#include <wcslib/wcserr.h>
#include <wcslib/wcshdr.h>
#include <wcslib/wcsmath.h>

#include "wcs.h"

#define BATCH 512
#undef D2R
#define D2R (M_PI / 180.0)
#define AS2R (M_PI / (180.0 * 3600.0))

struct tsr__cel_s {
  tsr_ctx_t *ctx;
  struct wcsprm *wcs;       /* 2-axis celestial copy, wcsset done */
  int lng;                  /* world axis of longitude in wcs (0 or 1) */
  tsr__frame_t frame;
  bool linear;              /* two linear axes (TSR__FRAME_LINEAR): world = the vector's x, y */
  bool plain_tan;
  bool plain_linear;        /* linear without distortions */
  int batch;                /* points per wcslib call: BATCH, or 1 (see tsr__cel_new) */
  char proj[4];
  double pix[2 * BATCH], img[2 * BATCH], phi[BATCH], theta[BATCH], world[2 * BATCH];
  int stat[BATCH];
};

static void card_string(const tsr_wcs_t *w, const char *kw, char *buf, size_t cap) {
  int i = tsr__wcs_find(w, kw);
  char v[72];
  size_t n = 0;
  buf[0] = '\0';
  if (i < 0)
    return;
  tsr__card_value(w->cards + (size_t)i * 80, v, sizeof v);
  for (const char *p = v; *p && n + 1 < cap; p++)
    if (*p != '\'' && *p != ' ')
      buf[n++] = *p;
  buf[n] = '\0';
}

static int frame_of(tsr_ctx_t *ctx, const struct wcsprm *wcs, const tsr_wcs_t *w,
                    const char *what, tsr__frame_t *frame) {
  char radesys[72], xc[5];
  double equinox = wcs->equinox;
  bool has_equinox = !undefined(equinox) && !isnan(equinox);

  memcpy(xc, wcs->ctype[wcs->lng], 4);
  xc[4] = '\0';
  card_string(w, "RADESYS", radesys, sizeof radesys);
  if (radesys[0] == '\0')
    card_string(w, "RADECSYS", radesys, sizeof radesys);
  if (strcmp(xc, "GLON") == 0) {
    *frame = TSR__FRAME_GAL;
    return 0;
  }
  if (strcmp(xc, "ELON") == 0) {
    if (has_equinox && fabs(equinox - 2000.0) > 1e-9)
      return tsr__err(ctx, TSR_ENOTSUP,
                      "%s: ecliptic coordinates of equinox %g are not supported; "
                      "expected EQUINOX = 2000",
                      what, equinox);
    *frame = TSR__FRAME_ECL;
    return 0;
  }
  if (strcmp(xc, "RA--") != 0)
    return tsr__err(ctx, TSR_ENOTSUP,
                    "%s: celestial axes %.8s / %.8s are not supported; expected RA/DEC, "
                    "GLON/GLAT or ELON/ELAT",
                    what, wcs->ctype[wcs->lng], wcs->ctype[wcs->lat]);
  if (radesys[0] == '\0')
    strcpy(radesys, !has_equinox ? "ICRS" : equinox < 1984.0 ? "FK4" : "FK5");
  if (strcmp(radesys, "ICRS") == 0) {
    *frame = TSR__FRAME_ICRS;
    return 0;
  }
  if (strcmp(radesys, "FK5") == 0) {
    if (has_equinox && fabs(equinox - 2000.0) > 1e-9)
      return tsr__err(ctx, TSR_ENOTSUP,
                      "%s: FK5 with EQUINOX = %g is not supported; expected EQUINOX = 2000",
                      what, equinox);
    *frame = TSR__FRAME_FK5;
    return 0;
  }
  return tsr__err(ctx, TSR_ENOTSUP,
                  "%s: RADESYS = '%s' is not supported; expected ICRS or FK5 (J2000)", what,
                  radesys);
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
  struct wcsprm *all = NULL;
  char *hdr = NULL;
  int nreject = 0, nwcs = 0, status, rc = TSR_ENOMEM;
  int nsub = 2, axes[2] = {1, 2};

  *out = NULL;
  c = tsr__calloc(ctx, 1, sizeof *c);
  if (c)
    c->ctx = ctx; /* tsr__cel_free needs it, whatever fails next */
  hdr = tsr__malloc(ctx, (size_t)w->ncards * 80 + 81);
  if (c == NULL || hdr == NULL) {
    tsr__err(ctx, rc, "%s: out of memory", what);
    goto out;
  }
  c->ctx = ctx;
  {
    /* The same cards io/ validated with: wcspih crashed on others. */
    int k = tsr__cards_for_wcslib(w->cards, w->ncards, hdr);
    memset(hdr + (size_t)k * 80, ' ', 80);
    hdr[(size_t)k * 80 + 80] = '\0';
    status = wcspih(hdr, k, WCSHDR_all, 0, &nreject, &nwcs, &all);
  }
  if (status != 0 || nwcs < 1) {
    rc = tsr__err(ctx, TSR_EWCS, "%s: no WCS could be parsed from the header", what);
    goto out;
  }
  wcserr_enable(1);
  if ((status = wcsset(&all[0])) != 0) {
    rc = tsr__err(ctx, TSR_EWCS, "%s: wcslib: %s", what,
                  all[0].err && all[0].err->msg ? all[0].err->msg : wcs_errmsg[status]);
    goto out;
  }
  if (linear_ok && all[0].lng < 0 && all[0].lat < 0 && all[0].naxis >= 2 &&
      axis_kind(&all[0], 0) == 0 && axis_kind(&all[0], 1) == 0) {
    c->linear = true;
  } else if (all[0].lng < 0 || all[0].lat < 0) {
    if (linear_ok)
      rc = tsr__err(ctx, TSR_EWCS,
                    "%s: no celestial axes (CTYPE1 = '%s', CTYPE2 = '%s'); expected a celestial "
                    "pair or two linear axes",
                    what, all[0].ctype[0], all[0].naxis > 1 ? all[0].ctype[1] : "");
    else
      rc = tsr__err(ctx, TSR_EWCS, "%s: no celestial axes (CTYPE1 = '%s', CTYPE2 = '%s')", what,
                    all[0].ctype[0], all[0].naxis > 1 ? all[0].ctype[1] : "");
    goto out;
  } else if (!((all[0].lng == 0 && all[0].lat == 1) || (all[0].lng == 1 && all[0].lat == 0))) {
    rc = tsr__err(ctx, TSR_ENOTSUP,
                  "%s: celestial axes must be the first two (they are axes %d and %d)", what,
                  all[0].lng + 1, all[0].lat + 1);
    goto out;
  }
  c->wcs = tsr__calloc(ctx, 1, sizeof *c->wcs);
  if (c->wcs == NULL) {
    rc = tsr__err(ctx, TSR_ENOMEM, "%s: out of memory", what);
    goto out;
  }
  c->wcs->flag = -1;
  if ((status = wcssub(1, &all[0], &nsub, axes, c->wcs)) != 0 || (status = wcsset(c->wcs)) != 0) {
    rc = tsr__err(ctx, TSR_EWCS, "%s: wcslib: %s", what,
                  c->wcs->err && c->wcs->err->msg ? c->wcs->err->msg : wcs_errmsg[status]);
    goto out;
  }
  c->batch = BATCH;
  if (c->linear) {
    c->lng = 0;
    c->frame = TSR__FRAME_LINEAR;
    c->plain_linear = c->wcs->lin.dispre == NULL && c->wcs->lin.disseq == NULL;
  } else {
    c->lng = c->wcs->lng;
    if ((rc = frame_of(ctx, c->wcs, w, what, &c->frame)) != 0)
      goto out;
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
  if (all)
    wcsvfree(&nwcs, &all);
  tsr__free(ctx, hdr);
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

tsr__frame_t tsr__cel_frame(const tsr__cel_t *c) { return c->frame; }
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

/* astropy's rotation_matrix(angle, axis): rotates the coordinate frame. */
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

static void mul(const double a[9], const double b[9], double r[9]) {
  double t[9];
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++)
      t[3 * i + j] = a[3 * i] * b[j] + a[3 * i + 1] * b[3 + j] + a[3 * i + 2] * b[6 + j];
  memcpy(r, t, sizeof t);
}

static void transpose(double m[9]) {
  for (int i = 0; i < 3; i++)
    for (int j = i + 1; j < 3; j++) {
      double t = m[3 * i + j];
      m[3 * i + j] = m[3 * j + i];
      m[3 * j + i] = t;
    }
}

/* ICRS -> each frame. */
static void from_icrs(tsr__frame_t f, double m[9]) {
  double a[9], b[9];
  static const double ident[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
  /* Linear "frames" only ever meet each other (tsr__map_new checks). */
  if (f == TSR__FRAME_ICRS || f == TSR__FRAME_LINEAR) {
    memcpy(m, ident, sizeof ident);
    return;
  }
  if (f == TSR__FRAME_ECL) {
    /* erfa.ecm06 at J2000: R1(eps_A) . fw2m(gamb, phib, psib, eps_A), whose
     * obliquity factors cancel, leaving R3(-psib) R1(phib) R3(gamb). */
    rot(2, -(-0.041775) * AS2R, m);
    rot(0, 84381.412819 * AS2R, a);
    mul(m, a, m);
    rot(2, -0.052928 * AS2R, a);
    mul(m, a, m);
    return;
  }
  /* USNO circular 179 frame bias, as astropy's _icrs_to_fk5_matrix. */
  rot(0, 19.9 / 3600000.0 * D2R, m);
  rot(1, 9.1 / 3600000.0 * D2R, a);
  mul(m, a, m);
  rot(2, -22.9 / 3600000.0 * D2R, a);
  mul(m, a, m);
  if (f == TSR__FRAME_FK5)
    return;
  /* FK5 J2000 -> Galactic from the north Galactic pole and lon of the NCP. */
  rot(2, (180.0 - 122.9319185680026) * D2R, a);
  rot(1, (90.0 - 27.12825118085622) * D2R, b);
  mul(a, b, a);
  rot(2, 192.8594812065348 * D2R, b);
  mul(a, b, a);
  mul(a, m, m);
}

void tsr__frame_matrix(tsr__frame_t from, tsr__frame_t to, double m[9]) {
  double a[9];
  from_icrs(from, a);
  transpose(a);
  from_icrs(to, m);
  mul(m, a, m);
}
