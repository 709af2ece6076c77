/* test-header.c -- header text files and WCS parsing: blocks and lines, errors with
 * line and keyword, numbers, pix2world (sky/wcshdr.c).
 *
 * Fixtures are written with cfitsio into the harness's scratch directory
 * (io_fixtures.h); every error test checks the exact words of the message.
 */
#include "io_fixtures.h"

TEST(header_block_and_lines) {
  static const char *const cards[] = {
      "SIMPLE  =                    T", "NAXIS   =                    2",
      "NAXIS1  =                  300", "NAXIS2  =                  200",
      "CTYPE1  = 'GLON-CAR'",           "CTYPE2  = 'GLAT-CAR'",
      "CRPIX1  = 150.5",                "CRPIX2  = 100.5",
      "CDELT1  = -0.01",                "CDELT2  = 0.01",
      "END",                            "this is after END and ignored", NULL};
  char block[80 * 16], buf[256];
  tsr_ctx_t *ctx = ctx_new();
  tsr_wcs_t *a = NULL, *b = NULL, *c = NULL;
  int na, nb, nc;
  block_of(block, cards);
  ASSERT_OK(tsr_wcs_parse(ctx, block, strlen(block), "block", 1, &a));
  ASSERT_INT_EQ(tsr_wcs_naxis(a), 2);
  ASSERT_INT_EQ(tsr_wcs_shape(a, 0), 300);
  ASSERT_INT_EQ(tsr_wcs_shape(a, 1), 200);
  tsr_wcs_cards(a, &na);
  ASSERT_INT_EQ(na, 10);
  ASSERT_OK(tsr_wcs_describe(ctx, a, buf, sizeof buf));
  ASSERT_STR_CONTAINS(buf, "CAR Galactic, 300 x 200, 36.000 arcsec/px, centre l 0.00000 b 0.00000");

  /* The same as loose lines, with CRLF, blank lines, tabs and short lines. */
  const char *lines = "SIMPLE = T\r\n"
                      "\r\n"
                      "naxis = 2\r\n"
                      "naxis1  = 300\r\n"
                      "NAXIS2\t= 200\r\n"
                      "CTYPE1  = 'GLON-CAR'\r\n"
                      "CTYPE2  = 'GLAT-CAR'\r\n"
                      "CRPIX1  = 150.5 / reference pixel\r\n"
                      "CRPIX2  = 100.5\r\n"
                      "CDELT1  = -0.01\r\n"
                      "CDELT2  = 0.01\r\n"
                      "END\r\n";
  ASSERT_OK(tsr_wcs_parse(ctx, lines, strlen(lines), "lines", 1, &b));
  ASSERT_INT_EQ(tsr_wcs_shape(b, 1), 200);
  const char *cb = tsr_wcs_cards(b, &nb);
  ASSERT_INT_EQ(nb, 10);
  ASSERT(strncmp(cb + 1 * 80, "NAXIS   = 2 ", 12) == 0);
  ASSERT(strncmp(cb + 3 * 80, "NAXIS2  = 200 ", 14) == 0);

  /* One card per line without END, as Montage writes templates. */
  ASSERT_OK(tsr_wcs_parse(ctx, tan_hdr, strlen(tan_hdr) - 4, "montage", 1, &c));
  tsr_wcs_cards(c, &nc);
  ASSERT_INT_EQ(nc, 13);
  ASSERT_OK(tsr_wcs_describe(ctx, c, buf, sizeof buf));
  ASSERT_STR_CONTAINS(buf, "TAN ICRS, 2048 x 2048, 1.000 arcsec/px, centre RA 10.68470 Dec 41.26875");

  /* need_shape = 0 accepts a header without NAXISn. */
  tsr_wcs_t *d = NULL;
  const char *noshape = "CTYPE1 = 'RA---SIN'\nCTYPE2 = 'DEC--SIN'\nCDELT1 = -1\nCDELT2 = 1\n";
  ASSERT_OK(tsr_wcs_parse(ctx, noshape, strlen(noshape), "noshape", 0, &d));
  ASSERT_INT_EQ(tsr_wcs_naxis(d), 2);
  ASSERT_INT_EQ(tsr_wcs_shape(d, 0), 0);
  tsr_wcs_free(a);
  tsr_wcs_free(b);
  tsr_wcs_free(c);
  tsr_wcs_free(d);
  tsr_ctx_free(ctx);
}

static void expect_parse_error(const char *text, int need_shape, int code, const char *msg) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_wcs_t *w = (tsr_wcs_t *)1;
  int rc = tsr_wcs_parse(ctx, text, strlen(text), "target \"t.hdr\"", need_shape, &w);
  if (rc != code)
    th_fail(__FILE__, __LINE__, "rc %d (%s), expected %d; message: %s", rc, tsr_err_name(rc), code,
            tsr_errmsg(ctx));
  ASSERT(w == NULL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), msg);
  tsr_ctx_free(ctx);
}

TEST(header_errors) {
  expect_parse_error("NAXIS = 2\nNAXIS1 = 100\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n", 1,
                     TSR_EINVAL,
                     "target \"t.hdr\": NAXIS2 missing; a target header needs NAXIS and NAXISn "
                     "(the output shape)");
  expect_parse_error("CTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n", 1, TSR_EINVAL,
                     "target \"t.hdr\": NAXIS missing; a target header needs NAXIS and NAXISn");
  expect_parse_error("NAXIS = 2\nNAXIS1 = 10\nNAXIS2 = 10\nCTYPE1 = 'RA---XYZ'\n"
                     "CTYPE2 = 'DEC--XYZ'\n",
                     1, TSR_EWCS,
                     "target \"t.hdr\": wcslib: Unrecognized projection code (XYZ in CTYPE1); the "
                     "header has CTYPE1 = 'RA---XYZ'; expected a FITS projection code (TAN, SIN");
  expect_parse_error("NAXIS = 2\nNAXIS1 = 10\nNAXIS2 = 10\nCRPIX1 = 5\nOBJECT = 'M31'\n", 1,
                     TSR_EWCS, "target \"t.hdr\": no WCS (no CTYPEn keywords)");
  expect_parse_error("NAXIS = 2\nNAXIS1 = 10\nNAXIS2 = 10\nCTYPE1 = 'RA---TAN'   / this comment "
                     "makes the line far longer than eighty columns\n",
                     1, TSR_EINVAL, "target \"t.hdr\": line 4 is 82 characters long; a header card "
                                    "has at most 80");
  expect_parse_error("NAXIS = 5\nCTYPE1 = 'RA---TAN'\n", 1, TSR_ENOTSUP,
                     "target \"t.hdr\": NAXIS = 5; at most 4 axes are supported");
  expect_parse_error("NAXIS = 2\nNAXIS1 = 0\nNAXIS2 = 10\nCTYPE1 = 'RA---TAN'\n", 1, TSR_EINVAL,
                     "target \"t.hdr\": line 2: NAXIS1 = 0: zero-size axis (expected >= 1)");
  expect_parse_error("NAXIS = 2\nNAXIS1 = 10\nNAXIS2 = 10\nCTYPE1 = 'RA---TAN'\n"
                     "CTYPE2 = 'DEC--TAN'\nCD1_1 = 1e-4\nCD1_2 = 2e-4\nCD2_1 = 1e-4\nCD2_2 = 2e-4\n",
                     1, TSR_EWCS, "target \"t.hdr\": the linear transformation (CDi_j, or PCi_j "
                                  "times CDELTi) is singular");
  expect_parse_error("NAXIS = 2\nNAXIS1 = 10\nNAXIS2 = 10\nCTYPE1 = 'RA---TAN'\n"
                     "CTYPE2 = 'DEC--SIN'\n",
                     1, TSR_EWCS,
                     "wcslib: Inconsistent projection types (expected DEC--TAN, got DEC--SIN in "
                     "CTYPE2); the header has CTYPE2 = 'DEC--SIN'");
  expect_parse_error("NAXIS = 2\nNAXIS1 = 10\nNAXIS2 = 10\nCTYPE1 = 'RA---TAN'\n", 1, TSR_EWCS,
                     "wcslib: Unmatched celestial axes; the header has CTYPE1 = 'RA---TAN'");
  expect_parse_error("NAXIS = 2\nNAXIS1 = 1\xc3\xa9\n", 1, TSR_EINVAL,
                     "target \"t.hdr\": line 2, column 11: byte 0xc3 is not printable ASCII");
  expect_parse_error("\n\n   \nEND\n", 1, TSR_EINVAL, "target \"t.hdr\": empty header");
}

/* Bad numbers in a target header were taken as they came: CRVAL1 = nan or
 * 1e400 (infinity) or CRPIX1 = 1e300 gave exit 0 and an all-NaN image. */
TEST(header_bad_numbers_are_refused_with_line_and_keyword) {
  static const struct {
    int line;
    const char *card;
    int code;
    const char *msg;
  } cases[] = {
      {6, "CRVAL1  = nan", TSR_EWCS, "line 6: CRVAL1 = nan is not a finite number"},
      {6, "CRVAL1  = 1e400", TSR_EWCS, "line 6: CRVAL1 = 1e400 is not a finite number"},
      {7, "CRVAL2  = -1D400 / overflows", TSR_EWCS, "line 7: CRVAL2 = -1D400 is not a finite number"},
      {6, "crval1  = inf", TSR_EWCS, "line 6: CRVAL1 = inf is not a finite number"},
      {8, "CRPIX1  = 1e300", TSR_ERANGE,
       "line 8: CRPIX1 = 1e300 is out of range [-1e12, 1e12] (a reference pixel"},
      {9, "CRPIX2  = -2e12", TSR_ERANGE, "line 9: CRPIX2 = -2e12 is out of range [-1e12, 1e12]"},
      {10, "CDELT1  = 0", TSR_EWCS,
       "line 10: CDELT1 = 0 is not a pixel scale (expected a nonzero number, or a CD matrix)"},
      {11, "CDELT2  = 1e-400", TSR_EWCS, "line 11: CDELT2 = 1e-400 is not a pixel scale"},
      {11, "CDELT2  = NaN", TSR_EWCS, "line 11: CDELT2 = NaN is not a finite number"},
      {12, "PC1_2   = nan", TSR_EWCS, "line 12: PC1_2 = nan is not a finite number"},
      {12, "CD2_2   = 1e999", TSR_EWCS, "line 12: CD2_2 = 1e999 is not a finite number"},
      {12, "PV2_1   = inf", TSR_EWCS, "line 12: PV2_1 = inf is not a finite number"},
      {12, "CROTA2  = nan", TSR_EWCS, "line 12: CROTA2 = nan is not a finite number"},
      {12, "LONPOLE = 1e400", TSR_EWCS, "line 12: LONPOLE = 1e400 is not a finite number"},
      {12, "A_0_2   = nan", TSR_EWCS, "line 12: A_0_2 = nan is not a finite number"},
      {7, "CRVAL2  = 95", TSR_ERANGE,
       "line 7: CRVAL2 = 95 is not a latitude (expected -90 to 90 degrees)"},
      {6, "CRVAL1  = 1e300", TSR_ERANGE,
       "line 6: CRVAL1 = 1e300 is out of range [-1e6, 1e6] (a longitude in degrees)"},
      {6, "CRVAL1  = 0x10", TSR_EWCS, "line 6: CRVAL1 = 0x10 is not a number (expected FITS' form"},
      {6, "CRVAL1  = '10.0'", TSR_EWCS, "line 6: CRVAL1 = '10.0' is not a number"},
      {3, "NAXIS2  = 2000000000000", TSR_ERANGE,
       "line 3: NAXIS2 = 2000000000000 is out of range [1, 2^40]"},
      {2, "NAXIS1  = 4.5", TSR_EINVAL, "line 2: NAXIS1 = 4.5 is not an integer"},
  };
  char text[2048];
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    char want[256];
    wcs_text_with(text, sizeof text, cases[k].line, cases[k].card);
    snprintf(want, sizeof want, "target \"t.hdr\": %s", cases[k].msg);
    expect_parse_error(text, 1, cases[k].code, want);
  }
  /* The same in a FITS header block: the card number is given. */
  {
    char block[80 * 13 + 1];
    const char *cards[13];
    for (int i = 0; i < 13; i++)
      cards[i] = i == 5 ? "CRVAL1  =                  nan" : wcs_lines[i];
    block_of(block, cards);
    expect_parse_error(block, 1, TSR_EWCS, "target \"t.hdr\": card 6: CRVAL1 = nan is not a finite number");
  }
}

/* What the checks must let through: D exponents, a far reference pixel, a
 * zero CDELT that a CD matrix overrides, a big CRVAL on a spectral axis, a
 * latitude in radians (wcslib converts it), an undefined value. */
TEST(header_good_numbers_are_accepted) {
  static const char *const good[][2] = {
      {"6", "CRVAL1  = 1.05D+01"},      {"8", "CRPIX1  = -9.9e11"},
      {"7", "CRVAL2  = -90"},          {"6", "CRVAL1  = 1e6"},
      {"12", "CRVAL2  ="},             {"12", "LATPOLE = +9.0E1"},
  };
  char text[2048];
  tsr_ctx_t *ctx = ctx_new();
  for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
    tsr_wcs_t *w = NULL;
    wcs_text_with(text, sizeof text, atoi(good[k][0]), good[k][1]);
    if (tsr_wcs_parse(ctx, text, strlen(text), "t.hdr", 1, &w) != 0)
      th_fail(__FILE__, __LINE__, "%s refused: %s", good[k][1], tsr_errmsg(ctx));
    tsr_wcs_free(w);
  }
  static const char *const others[] = {
      /* CD matrix with a stray CDELT1 = 0, which wcslib ignores */
      "NAXIS = 2\nNAXIS1 = 10\nNAXIS2 = 10\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
      "CDELT1 = 0\nCD1_1 = -0.01\nCD2_2 = 0.01\nCD1_2 = 0\nCD2_1 = 0\n",
      /* a frequency axis */
      "NAXIS = 3\nNAXIS1 = 10\nNAXIS2 = 10\nNAXIS3 = 4\nCTYPE1 = 'RA---TAN'\n"
      "CTYPE2 = 'DEC--TAN'\nCTYPE3 = 'FREQ'\nCRVAL3 = 1.420405752E9\nCDELT3 = 1e6\n"
      "CDELT1 = -0.01\nCDELT2 = 0.01\nCUNIT3 = 'Hz'\n",
      /* angles in radians */
      "NAXIS = 2\nNAXIS1 = 10\nNAXIS2 = 10\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
      "CUNIT1 = 'rad'\nCUNIT2 = 'rad'\nCRVAL1 = 200\nCRVAL2 = 1.2\nCDELT1 = -1e-4\n"
      "CDELT2 = 1e-4\n",
  };
  for (size_t k = 0; k < sizeof others / sizeof others[0]; k++) {
    tsr_wcs_t *w = NULL;
    if (tsr_wcs_parse(ctx, others[k], strlen(others[k]), "t.hdr", 1, &w) != 0)
      th_fail(__FILE__, __LINE__, "header %zu refused: %s", k, tsr_errmsg(ctx));
    tsr_wcs_free(w);
  }
  /* 1.05D+01 is 10.5, as a D exponent means. */
  {
    tsr_wcs_t *a = NULL, *b = NULL;
    double x = 0, y = 0, lon[2], lat[2];
    wcs_text_with(text, sizeof text, 6, "CRVAL1  = 1.05D+01");
    ASSERT_OK(tsr_wcs_parse(ctx, text, strlen(text), "d.hdr", 1, &a));
    wcs_text_with(text, sizeof text, 6, "CRVAL1  = 10.5");
    ASSERT_OK(tsr_wcs_parse(ctx, text, strlen(text), "e.hdr", 1, &b));
    ASSERT_OK(tsr_wcs_pix2world(ctx, a, 1, &x, &y, &lon[0], &lat[0]));
    ASSERT_OK(tsr_wcs_pix2world(ctx, b, 1, &x, &y, &lon[1], &lat[1]));
    if (!(lon[0] == lon[1] && lat[0] == lat[1]))
      th_fail(__FILE__, __LINE__, "D exponent: (%.17g, %.17g) vs (%.17g, %.17g)", lon[0], lat[0],
              lon[1], lat[1]);
    tsr_wcs_free(a);
    tsr_wcs_free(b);
  }
  tsr_ctx_free(ctx);
}

TEST(header_file) {
  const char *crlf = th_path("crlf.hdr"), *empty = th_path("empty.hdr"),
             *missing = th_path("nope.hdr");
  char text[2048], *o = text;
  for (const char *p = tan_hdr; *p; p++) {
    if (*p == '\n')
      *o++ = '\r';
    *o++ = *p;
  }
  *o = '\0';
  write_text(crlf, text, strlen(text));
  write_text(empty, "", 0);
  tsr_ctx_t *ctx = ctx_new();
  tsr_wcs_t *w = NULL;
  ASSERT_OK(tsr_wcs_read_hdr(ctx, crlf, &w));
  ASSERT_INT_EQ(tsr_wcs_shape(w, 0), 2048);
  tsr_wcs_free(w);
  w = NULL;
  ASSERT_INT_EQ(tsr_wcs_read_hdr(ctx, missing, &w), TSR_EIO);
  ASSERT(w == NULL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "target \"");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "nope.hdr\": cannot open: No such file or directory");
  ASSERT_INT_EQ(tsr_wcs_read_hdr(ctx, empty, &w), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "empty.hdr\": the file is empty; expected FITS header cards");
  /* A FITS file read as a header: the block up to END, data ignored. */
  long naxes[2] = {32, 20};
  float *d = ramp(2, naxes);
  const char *fits = th_path("as-header.fits");
  put_image(fits, false, FLOAT_IMG, 2, naxes, TFLOAT, d, tan_cards);
  ASSERT_OK(tsr_wcs_read_hdr(ctx, fits, &w));
  ASSERT_INT_EQ(tsr_wcs_shape(w, 0), 32);
  tsr_wcs_free(w);
  free(d);
  tsr_ctx_free(ctx);
}

TEST(wcs_pix2world) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_wcs_t *w = NULL;
  ASSERT_OK(tsr_wcs_parse(ctx, tan_hdr, strlen(tan_hdr), "t", 1, &w));
  double x[3] = {1023.5, 1023.5 + 3600, 0}, y[3] = {1023.5, 1023.5, 0}, lon[3], lat[3];
  ASSERT_OK(tsr_wcs_pix2world(ctx, w, 3, x, y, lon, lat));
  ASSERT_NEAR(lon[0], 10.6847, 1e-10);
  ASSERT_NEAR(lat[0], 41.26875, 1e-10);
  /* One degree east along the row through the reference point: RA decreases with x. */
  ASSERT(lon[1] < 10.6847);
  ASSERT_NEAR(lat[1], 41.26875, 0.02);
  tsr_wcs_free(w);

  /* Outside a SIN projection's disc there is no sky: NaN. */
  const char *sin = "NAXIS = 2\nNAXIS1 = 10\nNAXIS2 = 10\nCTYPE1 = 'RA---SIN'\n"
                    "CTYPE2 = 'DEC--SIN'\nCRPIX1 = 1\nCRPIX2 = 1\nCDELT1 = -1\nCDELT2 = 1\n";
  ASSERT_OK(tsr_wcs_parse(ctx, sin, strlen(sin), "sin", 1, &w));
  double sx[2] = {0, 200}, sy[2] = {0, 0};
  ASSERT_OK(tsr_wcs_pix2world(ctx, w, 2, sx, sy, lon, lat));
  ASSERT(isfinite(lon[0]) && isfinite(lat[0]));
  ASSERT(isnan(lon[1]) && isnan(lat[1]));
  tsr_wcs_free(w);

  const char *lin = "NAXIS = 1\nNAXIS1 = 10\nCTYPE1 = 'WAVE'\nCRVAL1 = 5e-7\nCDELT1 = 1e-9\n";
  char buf[128];
  ASSERT_OK(tsr_wcs_parse(ctx, lin, strlen(lin), "lin", 1, &w));
  ASSERT_OK(tsr_wcs_describe(ctx, w, buf, sizeof buf));
  ASSERT_STR_CONTAINS(buf, "non-celestial (WAVE), 10");
  ASSERT_INT_EQ(tsr_wcs_pix2world(ctx, w, 2, sx, sy, lon, lat), TSR_EWCS);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "no celestial axes");
  tsr_wcs_free(w);
  tsr_ctx_free(ctx);
}

TEST_MAIN()
