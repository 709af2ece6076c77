/* test-sky.c -- sky/: celestial frames against astropy (computed now, by
 * frames_astropy.py), the frame each kind of header is in, unsupported
 * frames, headers that need astropy's fixes, read the same way by every
 * path (parse, reproject), and linear (non-celestial) axes as their own
 * frame. */
#include <tessera/tessera.h>

#include "harness.h"
#include "internal.h"
#include "sky.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FRAMES 32
#define MAX_POINTS 1024

/* The angle between two unit vectors, in milli-arcseconds. */
static double sep_mas(const double *a, const double *b) {
  double c[3] = {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]};
  double s = sqrt(c[0] * c[0] + c[1] * c[1] + c[2] * c[2]);
  double d = a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  return atan2(s, d) * 180.0 / M_PI * 3600.0e3;
}

TEST(frames_agree_with_astropy_over_the_sky_for_every_pair) {
  char cmd[4096], line[512];
  tsr__frame_t frames[MAX_FRAMES];
  static double pts[MAX_POINTS][3];
  int nf = 0, np = 0, npairs = 0, from = -1, to = -1, k = 0;
  double worst = 0, worst_at[2] = {0, 0};
  tsr__frame_xform_t xf;
  FILE *p;

  snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/frames_astropy.py 2>&1", th_srcdir());
  p = popen(cmd, "r");
  ASSERT(p != NULL);
  while (fgets(line, sizeof line, p)) {
    int i, kind;
    double eq, ob, lon, lat, v[3], mine[3];
    if (sscanf(line, "F %d %d %lf %lf", &i, &kind, &eq, &ob) == 4) {
      ASSERT(i == nf && nf < MAX_FRAMES);
      frames[nf].kind = (tsr__frame_kind_t)kind;
      frames[nf].equinox = eq;
      frames[nf].obstime = ob;
      nf++;
    } else if (sscanf(line, "P %lf %lf", &lon, &lat) == 2) {
      ASSERT(np < MAX_POINTS);
      lon *= M_PI / 180, lat *= M_PI / 180;
      pts[np][0] = cos(lat) * cos(lon), pts[np][1] = cos(lat) * sin(lon), pts[np][2] = sin(lat);
      np++;
    } else if (sscanf(line, "T %d %d", &from, &to) == 2) {
      ASSERT(from >= 0 && from < nf && to >= 0 && to < nf);
      tsr__frame_xform(&frames[from], &frames[to], &xf);
      npairs++;
      k = 0;
    } else if (sscanf(line, "%lf %lf %lf", &v[0], &v[1], &v[2]) == 3) {
      ASSERT(from >= 0 && k < np);
      memcpy(mine, pts[k], sizeof mine);
      tsr__frame_apply(&xf, 1, mine);
      double e = sep_mas(mine, v);
      if (!(e <= worst)) {
        worst = e, worst_at[0] = from, worst_at[1] = to;
        if (!(e < 1.0)) {
          char a[64], b[64];
          tsr__frame_name(&frames[from], a, sizeof a);
          tsr__frame_name(&frames[to], b, sizeof b);
          th_fail(__FILE__, __LINE__, "%s -> %s, point %d: %.6g mas from astropy", a, b, k, e);
        }
      }
      k++;
    } else {
      /* astropy's warnings, or the reason it could not run */
      fprintf(stderr, "# frames_astropy.py: %s", line);
    }
  }
  ASSERT_INT_EQ(pclose(p), 0);
  ASSERT(nf >= 13 && np >= 400);
  ASSERT_INT_EQ(npairs, nf * (nf - 1));
  printf("# %d frames, %d pairs, %d points each: worst %.3g mas (frames %g -> %g)\n", nf, npairs,
         np, worst, worst_at[0], worst_at[1]);
}

/* The frame of a 2-D TAN header with `extra` cards. */
static int header_frame(tsr_ctx_t *ctx, const char *ctype1, const char *ctype2, const char *extra,
                        tsr__frame_t *f) {
  char hdr[2048];
  tsr_wcs_t *w = NULL;
  tsr__cel_t *c = NULL;
  int rc;
  snprintf(hdr, sizeof hdr,
           "NAXIS   = 2\nNAXIS1  = 10\nNAXIS2  = 10\nCTYPE1  = '%s'\nCTYPE2  = '%s'\n"
           "CRVAL1  = 10\nCRVAL2  = 20\nCRPIX1  = 5\nCRPIX2  = 5\nCDELT1  = -0.001\n"
           "CDELT2  = 0.001\n%s",
           ctype1, ctype2, extra);
  if ((rc = tsr_wcs_parse(ctx, hdr, strlen(hdr), "hdr", 1, &w)) != 0)
    return rc;
  rc = tsr__cel_new(ctx, w, "hdr", &c);
  if (rc == 0)
    *f = *tsr__cel_frame(c);
  tsr__cel_free(c);
  tsr_wcs_free(w);
  return rc;
}

TEST(headers_name_their_frame_as_astropy_reads_them) {
  static const struct {
    const char *ctype1, *ctype2, *extra;
    tsr__frame_kind_t kind;
    double equinox; /* Besselian for FK4, Julian otherwise; 0 = none */
  } cases[] = {
      {"RA---TAN", "DEC--TAN", "", TSR__SKY_ICRS, 0},
      {"RA---TAN", "DEC--TAN", "EQUINOX = 1950\n", TSR__SKY_FK4, 1950},
      {"RA---TAN", "DEC--TAN", "EPOCH   = 1950\n", TSR__SKY_FK4, 1950},
      {"RA---TAN", "DEC--TAN", "EQUINOX = 1983.5\n", TSR__SKY_FK4, 1983.5},
      {"RA---TAN", "DEC--TAN", "EQUINOX = 1984\n", TSR__SKY_FK5, 1984},
      {"RA---TAN", "DEC--TAN", "EQUINOX = 2000\n", TSR__SKY_FK5, 2000},
      {"RA---TAN", "DEC--TAN", "RADESYS = 'FK4'\n", TSR__SKY_FK4, 1950},
      {"RA---TAN", "DEC--TAN", "RADESYS = 'FK4'\nEQUINOX = 1975\n", TSR__SKY_FK4, 1975},
      {"RA---TAN", "DEC--TAN", "RADECSYS= 'FK4'\nEQUINOX = 1950\nMJD-OBS = 48000\n", TSR__SKY_FK4, 1950},
      {"RA---TAN", "DEC--TAN", "RADESYS = 'FK4-NO-E'\nEQUINOX = 1950\n", TSR__SKY_FK4_NO_E, 1950},
      {"RA---TAN", "DEC--TAN", "RADESYS = 'FK5'\n", TSR__SKY_FK5, 2000},
      {"RA---TAN", "DEC--TAN", "RADESYS = 'FK5'\nEQUINOX = 1975\n", TSR__SKY_FK5, 1975},
      {"RA---TAN", "DEC--TAN", "RADESYS = 'ICRS'\nEQUINOX = 2000\n", TSR__SKY_ICRS, 0},
      {"GLON-TAN", "GLAT-TAN", "RADESYS = 'FK5'\n", TSR__SKY_GALACTIC, 0},
      {"DEC--TAN", "RA---TAN", "RADESYS = 'FK5'\nEQUINOX = 1975\n", TSR__SKY_FK5, 1975},
      {"SLON-TAN", "SLAT-TAN", "", TSR__SKY_SUPERGALACTIC, 0},
      {"ELON-TAN", "ELAT-TAN", "", TSR__SKY_ECLIPTIC, 2000},
      {"ELON-TAN", "ELAT-TAN", "RADESYS = 'FK5'\nEQUINOX = 2010\n", TSR__SKY_ECLIPTIC, 2010},
  };
  tsr_ctx_t *ctx;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tsr__frame_t f;
    if (header_frame(ctx, cases[i].ctype1, cases[i].ctype2, cases[i].extra, &f) != 0)
      th_fail(__FILE__, __LINE__, "case %zu: %s", i, tsr_errmsg(ctx));
    if (f.kind != cases[i].kind)
      th_fail(__FILE__, __LINE__, "case %zu (%s): kind %d, expected %d", i, cases[i].extra,
              (int)f.kind, (int)cases[i].kind);
    if (cases[i].equinox > 0) {
      double want = cases[i].kind == TSR__SKY_FK4 || cases[i].kind == TSR__SKY_FK4_NO_E
                        ? tsr__sky_byear_jd(cases[i].equinox)
                        : tsr__sky_jyear_jd(cases[i].equinox);
      ASSERT_NEAR(f.equinox, want, 1e-9);
      /* astropy: obstime defaults to the equinox; DATE-OBS and MJD-OBS
       * are not used (wcs_to_celestial_frame). */
      if (f.kind == TSR__SKY_FK4 || f.kind == TSR__SKY_FK4_NO_E)
        ASSERT_NEAR(f.obstime, f.equinox, 1e-9);
    }
  }
  tsr_ctx_free(ctx);
}

TEST(unsupported_frames_name_the_keyword) {
  static const struct {
    const char *ctype1, *ctype2, *extra, *msg;
  } cases[] = {
      {"HPLN-TAN", "HPLT-TAN", "", "CTYPE1 = 'HPLN-TAN', CTYPE2 = 'HPLT-TAN': helioprojective"},
      {"TLON-TAN", "TLAT-TAN", "", "terrestrial (ITRS) coordinates are not supported"},
      {"RA---TAN", "DEC--TAN", "RADESYS = 'GAPPT'\n", "RADESYS = 'GAPPT' is not supported"},
      {"ELON-TAN", "ELAT-TAN", "EQUINOX = 1950\n",
       "ecliptic axes (CTYPE1 = 'ELON-TAN') referred to RADESYS = 'FK4'"},
  };
  tsr_ctx_t *ctx;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tsr__frame_t f;
    ASSERT_INT_EQ(header_frame(ctx, cases[i].ctype1, cases[i].ctype2, cases[i].extra, &f),
                  TSR_ENOTSUP);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), cases[i].msg);
  }
  tsr_ctx_free(ctx);
}

/* An image reprojected from a header (as the input's WCS) onto another
 * (the target), and the same with the roles swapped: 64 x 64 floats each. */
static void reproject_both_ways(const char *a, const char *b, float *ab, float *ba) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_wcs_t *wa = NULL, *wb = NULL;
  static float img[64 * 64];
  int64_t shape[2] = {64, 64};
  for (int i = 0; i < 64 * 64; i++)
    img[i] = (float)(1 + sin(0.1 * (i % 64)) * cos(0.13 * (i / 64)));
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
  if (tsr_wcs_parse(ctx, a, strlen(a), "a", 1, &wa) != 0 ||
      tsr_wcs_parse(ctx, b, strlen(b), "b", 1, &wb) != 0)
    th_fail(__FILE__, __LINE__, "parse: %s", tsr_errmsg(ctx));
  for (int k = 0; k < 2; k++) {
    tsr_node_t *src = tsr_source_buffer(g, TSR_F32, 2, shape, img, k ? wb : wa);
    tsr_node_t *r = tsr_reproject_interp(g, src, k ? wa : wb, NULL);
    if (r == NULL)
      th_fail(__FILE__, __LINE__, "reproject_interp: %s", tsr_graph_errmsg(g));
    if (tsr_compute(g, r, NULL, k ? ba : ab, sizeof(float) * 64 * 64, NULL) != 0)
      th_fail(__FILE__, __LINE__, "compute: %s", tsr_errmsg(ctx));
  }
  tsr_wcs_free(wa);
  tsr_wcs_free(wb);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

static void assert_same_floats(const float *a, const float *b, size_t n) {
  size_t finite = 0;
  for (size_t i = 0; i < n; i++) {
    ASSERT_INT_EQ(isnan(a[i]), isnan(b[i]));
    if (!isnan(a[i])) {
      ASSERT(a[i] == b[i]);
      finite++;
    }
  }
  ASSERT(finite > n / 4);
}

/* `odd` and `fixed` headers reproject the same, as input and as target. */
static void assert_reads_as(const char *odd, const char *fixed, const char *other) {
  static float a1[64 * 64], b1[64 * 64], a2[64 * 64], b2[64 * 64];
  reproject_both_ways(fixed, other, a1, b1);
  reproject_both_ways(odd, other, a2, b2);
  assert_same_floats(a1, a2, 64 * 64);
  assert_same_floats(b1, b2, 64 * 64);
}

#define BASE_HDR                                                                        \
  "NAXIS   = 2\nNAXIS1  = 64\nNAXIS2  = 64\nCTYPE1  = 'RA---TAN'\nCTYPE2  = 'DEC--TAN'\n" \
  "CRVAL1  = 150\nCRVAL2  = 2\nCRPIX1  = 32.5\nCRPIX2  = 32.5\n"

TEST(cunit_DEG_is_read_as_deg_by_every_path) {
  /* astropy's unitfix reads units case aside; before sky/, the header
   * reader accepted 'DEG' and the reprojection's own parser refused it. */
  static const char other[] = BASE_HDR "CDELT1  = -0.0011\nCDELT2  = 0.0011\nCROTA2  = 20\n";
  static const char deg[] = BASE_HDR "CDELT1  = -0.001\nCDELT2  = 0.001\n"
                                     "CUNIT1  = 'deg'\nCUNIT2  = 'deg'\n";
  static const char DEG[] = BASE_HDR "CDELT1  = -0.001\nCDELT2  = 0.001\n"
                                     "CUNIT1  = 'DEG'\nCUNIT2  = 'Degrees'\n";
  assert_reads_as(DEG, deg, other);
}

TEST(cd_matrix_missing_a_row_is_completed_as_astropy_does) {
  /* cdfix: an axis whose row and column of CDi_j are all absent gets
   * CDi_i = 1, as astropy's WCS() does (here the latitude axis: 1 degree a
   * pixel).  Before sky/, the reader accepted it and the reprojection's
   * parser found the matrix singular. */
  static const char other[] = BASE_HDR "CDELT1  = -0.0011\nCDELT2  = 0.9\n";
  static const char missing[] = BASE_HDR "CD1_1   = -0.001\n";
  static const char full[] = BASE_HDR "CD1_1   = -0.001\nCD2_2   = 1\n";
  assert_reads_as(missing, full, other);
}

TEST(cube_without_a_cd_row_for_its_spectral_axis_reprojects) {
  /* The common real case: a cube whose CD matrix covers only the celestial
   * axes. */
  static const char cel[] =
      "NAXIS   = 3\nNAXIS1  = 64\nNAXIS2  = 64\nNAXIS3  = 2\nCTYPE1  = 'RA---SIN'\n"
      "CTYPE2  = 'DEC--SIN'\nCTYPE3  = 'FREQ'\nCRVAL1  = 150\nCRVAL2  = 2\nCRVAL3  = 1.4E9\n"
      "CRPIX1  = 32.5\nCRPIX2  = 32.5\nCRPIX3  = 1\nCUNIT3  = 'Hz'\n"
      "CD1_1   = -0.001\nCD1_2   = 0.0001\nCD2_1   = 0.0001\nCD2_2   = 0.001\n";
  static const char target[] = BASE_HDR "CDELT1  = -0.0012\nCDELT2  = 0.0012\n";
  char with3[1024];
  static float img[64 * 64 * 2], out[2][64 * 64 * 2];
  int64_t shape[3] = {64, 64, 2};
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_wcs_t *wt = NULL;
  snprintf(with3, sizeof with3, "%sCD3_3   = 1\n", cel);
  for (int i = 0; i < 64 * 64 * 2; i++)
    img[i] = (float)(i % 97);
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
  ASSERT_OK(tsr_wcs_parse(ctx, target, strlen(target), "target", 1, &wt));
  for (int k = 0; k < 2; k++) {
    const char *h = k ? cel : with3;
    tsr_wcs_t *w = NULL;
    if (tsr_wcs_parse(ctx, h, strlen(h), "cube", 1, &w) != 0)
      th_fail(__FILE__, __LINE__, "parse: %s", tsr_errmsg(ctx));
    tsr_node_t *src = tsr_source_buffer(g, TSR_F32, 3, shape, img, w);
    tsr_node_t *r = tsr_reproject_interp(g, src, wt, NULL);
    if (r == NULL)
      th_fail(__FILE__, __LINE__, "reproject_interp: %s", tsr_graph_errmsg(g));
    ASSERT_INT_EQ(tsr_node_ndim(r), 3);
    if (tsr_compute(g, r, NULL, out[k], sizeof out[k], NULL) != 0)
      th_fail(__FILE__, __LINE__, "compute: %s", tsr_errmsg(ctx));
    tsr_wcs_free(w);
  }
  assert_same_floats(out[0], out[1], 64 * 64 * 2);
  tsr_wcs_free(wt);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* Two linear axes (astropy's WCS(naxis=2)) open only where the caller
 * allows them, as the "linear" frame: their world values as they are, the
 * identity to another linear WCS, and no transform to a sky frame. */
TEST(linear_axes_open_as_their_own_frame) {
  const char *hdr = "NAXIS   = 2\nNAXIS1  = 10\nNAXIS2  = 10\nCTYPE1  = 'OFFSETX'\n"
                    "CRVAL1  = 10\nCRVAL2  = 20\nCRPIX1  = 5\nCRPIX2  = 5\nCDELT1  = -0.5\n"
                    "CDELT2  = 2\nCUNIT1  = 'arcsec'\n";
  tsr_ctx_t *ctx;
  tsr_wcs_t *w = NULL;
  tsr__cel_t *c = NULL;
  tsr__frame_xform_t xf;
  tsr__frame_t icrs = tsr__frame_default(TSR__SKY_ICRS);
  double x[2] = {4, 6}, y[2] = {4, 1}, v[6], bx[2], by[2];
  char name[32];
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_wcs_parse(ctx, hdr, strlen(hdr), "hdr", 1, &w));
  ASSERT_INT_EQ(tsr__cel_new(ctx, w, "hdr", &c), TSR_EWCS);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "hdr: no celestial axes (CTYPE1 = 'OFFSETX'");
  ASSERT_OK(tsr__cel_open(ctx, w, "hdr", true, &c));
  ASSERT_INT_EQ(tsr__cel_frame(c)->kind, TSR__SKY_LINEAR);
  ASSERT(tsr__cel_is_plain_linear(c) && !tsr__cel_is_plain_tan(c));
  ASSERT(strcmp(tsr__cel_proj(c), "") == 0);
  ASSERT(strcmp(tsr__cel_unit(c, 0), "arcsec") == 0 && strcmp(tsr__cel_unit(c, 1), "") == 0);
  tsr__frame_name(tsr__cel_frame(c), name, sizeof name);
  ASSERT(strcmp(name, "linear") == 0);
  /* Pixel (4, 4) is the 1-based reference pixel (5, 5). */
  tsr__cel_pix2vec(c, 2, x, y, v);
  ASSERT_NEAR(v[0], 10.0, 1e-12);
  ASSERT_NEAR(v[1], 20.0, 1e-12);
  ASSERT_NEAR(v[2], 0.0, 0.0);
  ASSERT_NEAR(v[3], 10.0 - 0.5 * 2, 1e-12);
  ASSERT_NEAR(v[4], 20.0 + 2 * -3, 1e-12);
  tsr__frame_xform(tsr__cel_frame(c), tsr__cel_frame(c), &xf);
  ASSERT(tsr__frame_identity(&xf));
  tsr__frame_apply(&xf, 2, v);
  tsr__cel_vec2pix(c, 2, v, bx, by);
  for (int k = 0; k < 2; k++) {
    ASSERT_NEAR(bx[k], x[k], 1e-12);
    ASSERT_NEAR(by[k], y[k], 1e-12);
  }
  tsr__frame_xform(tsr__cel_frame(c), &icrs, &xf);
  ASSERT(tsr__frame_identity(&xf));
  tsr__frame_xform(&icrs, tsr__cel_frame(c), &xf);
  ASSERT(tsr__frame_identity(&xf));
  tsr__cel_free(c);
  tsr_wcs_free(w);
  tsr_ctx_free(ctx);
}

TEST_MAIN()
