/* test-fits.c -- reading FITS images: every BITPIX, regions, HDUs, gzip, tile
 * compression and its hostile streams, truncation, identity, faults while
 * reading (io/fits.c, io/hdu.c, io/tiles.c).
 *
 * Fixtures are written with cfitsio into the harness's scratch directory
 * (io_fixtures.h); every error test checks the exact words of the message.
 */
#include "io_fixtures.h"

/* ------------------------------------------------------------------ */
/* Hostile tile-compressed images (io/tiles.c)                         */

enum { TNX = 64, TNY = 40 };


/* ------------------------------------------------------------------ */
/* Reading: BITPIX, scaling, BLANK, non-finite values                 */

typedef struct {
  int bitpix, datatype;
  double bscale, bzero;
  long long blank;     /* 0 = no BLANK card */
  tsr_dtype_t dtype;   /* expected node dtype */
} bitpix_case;

static void check_bitpix(const bitpix_case *c) {
  enum { NX = 7, NY = 5 };
  long naxes[2] = {NX, NY};
  double raw[NX * NY];
  unsigned char b8[NX * NY];
  short b16[NX * NY];
  int b32[NX * NY];
  long long b64[NX * NY];
  float f32[NX * NY];
  void *data;
  char scale[81], zero[81], blank[81];
  const char *cards[4] = {scale, zero, NULL, NULL};
  const char *path = th_path("bitpix.fits");

  snprintf(scale, sizeof scale, "BSCALE  = %.17g", c->bscale);
  snprintf(zero, sizeof zero, "BZERO   = %.17g", c->bzero);
  if (c->blank) {
    snprintf(blank, sizeof blank, "BLANK   = %lld", c->blank);
    cards[2] = blank;
  }
  for (int i = 0; i < NX * NY; i++) {
    raw[i] = (double)(i % 50) + 1;
    if (i == 3 && c->blank)
      raw[i] = (double)c->blank;
  }
  if (c->bitpix < 0) {
    raw[3] = NAN;
    raw[4] = INFINITY;
    raw[5] = -INFINITY;
  }
  for (int i = 0; i < NX * NY; i++) {
    b8[i] = (unsigned char)raw[i];
    b16[i] = (short)raw[i];
    b32[i] = (int)raw[i];
    b64[i] = (long long)raw[i];
    f32[i] = (float)raw[i];
  }
  data = c->bitpix == 8 ? (void *)b8 : c->bitpix == 16 ? (void *)b16 : c->bitpix == 32 ? (void *)b32
       : c->bitpix == 64 ? (void *)b64 : c->bitpix == -32 ? (void *)f32 : (void *)raw;
  put_image(path, false, c->bitpix, 2, naxes, c->datatype, data, cards);

  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = tsr_source_fits(g, path, 0);
  ASSERT(n != NULL);
  ASSERT_INT_EQ(tsr_node_dtype(n), c->dtype);
  ASSERT_INT_EQ(tsr_node_ndim(n), 2);
  ASSERT_INT_EQ(tsr_node_shape(n, 0), NX);
  ASSERT_INT_EQ(tsr_node_shape(n, 1), NY);
  ASSERT_INT_EQ(tsr_node_chunk(n, 1), NY);
  ASSERT(tsr_node_wcs(n) == NULL);
  double out[NX * NY];
  float outf[NX * NY];
  if (c->dtype == TSR_F64) {
    ASSERT_OK(tsr_compute(g, n, NULL, out, sizeof out, NULL));
  } else {
    ASSERT_OK(tsr_compute(g, n, NULL, outf, sizeof outf, NULL));
    for (int i = 0; i < NX * NY; i++)
      out[i] = outf[i];
  }
  for (int i = 0; i < NX * NY; i++) {
    bool nan = (i == 3 && c->blank) || (c->bitpix < 0 && i >= 3 && i <= 5);
    if (nan) {
      if (!isnan(out[i]))
        th_fail(__FILE__, __LINE__, "BITPIX %d: pixel %d is %g, expected NaN", c->bitpix, i,
                out[i]);
    } else {
      ASSERT_NEAR(out[i], raw[i] * c->bscale + c->bzero, 1e-6 * fabs(raw[i] * c->bscale + c->bzero));
    }
  }
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST(fits_bitpix_8_scaled_blank) {
  bitpix_case c = {BYTE_IMG, TBYTE, 2.0, 10.0, 255, TSR_F32};
  check_bitpix(&c);
}

TEST(fits_bitpix_16_scaled_blank) {
  bitpix_case c = {SHORT_IMG, TSHORT, 0.5, -3.0, -32768, TSR_F32};
  check_bitpix(&c);
}

TEST(fits_bitpix_32_is_float64) {
  bitpix_case c = {LONG_IMG, TINT, 1.0, 0.0, -999, TSR_F64};
  check_bitpix(&c);
  bitpix_case d = {LONG_IMG, TINT, 0.25, 7.0, -999, TSR_F64};
  check_bitpix(&d);
}

TEST(fits_bitpix_64_is_float64) {
  bitpix_case c = {LONGLONG_IMG, TLONGLONG, 1.0, 5.0, -77, TSR_F64};
  check_bitpix(&c);
}

TEST(fits_bitpix_m32_inf_is_nan) {
  bitpix_case c = {FLOAT_IMG, TFLOAT, 1.0, 0.0, 0, TSR_F32};
  check_bitpix(&c);
}

TEST(fits_bitpix_m64_scaled_inf_is_nan) {
  bitpix_case c = {DOUBLE_IMG, TDOUBLE, 2.0, 1.0, 0, TSR_F64};
  check_bitpix(&c);
}

/* ------------------------------------------------------------------ */
/* Regions, strides, cubes, HDUs, compression                          */

TEST(fits_region_equals_slice_of_full) {
  long naxes[2] = {37, 23};
  float *d = ramp(2, naxes), full[37 * 23], part[15 * 14];
  const char *path = th_path("ramp.fits");
  put_image(path, false, FLOAT_IMG, 2, naxes, TFLOAT, d, tan_cards);
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = tsr_source_fits(g, path, 0);
  ASSERT(n != NULL);
  ASSERT_OK(tsr_compute(g, n, NULL, full, sizeof full, NULL));
  for (int i = 0; i < 37 * 23; i++)
    ASSERT_INT_EQ(full[i], d[i]);
  tsr_region_t r = {{5, 3, 0, 0}, {20, 17, 1, 1}};
  ASSERT_OK(tsr_compute(g, n, &r, part, sizeof part, NULL));
  for (int y = 0; y < 14; y++)
    for (int x = 0; x < 15; x++)
      ASSERT_INT_EQ(part[y * 15 + x], full[(y + 3) * 37 + x + 5]);
  /* Out of range is the engine's error, before any read. */
  tsr_region_t bad = {{30, 0, 0, 0}, {40, 5, 1, 1}};
  ASSERT_INT_EQ(tsr_compute(g, n, &bad, part, sizeof part, NULL), TSR_ERANGE);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(d);
}

/* A gzip-compressed FITS file reads as the plain one (cfitsio inflates it);
 * one whose trailer claims an impossible size is refused before cfitsio
 * allocates that size (4 GiB for a 40-byte file, found by fuzzing). */
TEST(fits_gzip_and_damaged_gzip) {
  long naxes[2] = {37, 23};
  float *d = ramp(2, naxes), full[37 * 23];
  const char *path = th_path("gz.fits"), *gz = th_path("gz.fits.gz");
  char cmd[2048];
  put_image(path, false, FLOAT_IMG, 2, naxes, TFLOAT, d, tan_cards);
  snprintf(cmd, sizeof cmd, "gzip -c '%s' > '%s'", path, gz);
  ASSERT(system(cmd) == 0);
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = tsr_source_fits(g, gz, 0);
  ASSERT(n != NULL);
  ASSERT_OK(tsr_compute(g, n, NULL, full, sizeof full, NULL));
  for (int i = 0; i < 37 * 23; i++)
    ASSERT_INT_EQ(full[i], d[i]);
  tsr_graph_free(g);
  {
    /* The trailer's size field (the last 4 bytes) set to 2^32 - 1. */
    FILE *f = fopen(gz, "r+b");
    ASSERT(f != NULL);
    ASSERT(fseek(f, -4, SEEK_END) == 0);
    ASSERT(fwrite("\xff\xff\xff\xff", 1, 4, f) == 4);
    fclose(f);
  }
  g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, gz, 0) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), TSR_EFITS);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "gz.fits.gz\" is a damaged gzip file: its trailer claims "
                                           "4294967295 bytes inflated from");
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "(deflate expands at most 1032 to 1)");
  tsr_graph_free(g);
  write_text(gz, "\x1f\x8b\x08", 3);
  g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, gz, 0) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "gz.fits.gz\" is a truncated gzip file (3 bytes; expected at least 18)");
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(d);
}

/* A destination with padded rows and planes takes the row-by-row path. */
TEST(fits_strided_destination) {
  long naxes[3] = {11, 9, 4};
  float *d = ramp(3, naxes);
  const char *path = th_path("strided.fits");
  put_image(path, false, FLOAT_IMG, 3, naxes, TFLOAT, d, NULL);
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = tsr_source_fits(g, path, 0);
  ASSERT(n != NULL);
  tsr_region_t r = {{2, 1, 1, 0}, {9, 8, 4, 1}};
  int64_t stride[4] = {1, 10, 100, 300};
  float buf[300];
  void *dst[TSR__MAX_PLANES] = {buf, NULL};
  for (int i = 0; i < 300; i++)
    buf[i] = -1;
  tsr__run_t *run = NULL;
  ASSERT_OK(tsr__run_new(g, NULL, &run));
  ASSERT_OK(tsr__run_region(run, n, &r, dst, stride));
  tsr__run_free(run);
  for (int z = 0; z < 3; z++)
    for (int y = 0; y < 7; y++)
      for (int x = 0; x < 10; x++) {
        float v = buf[z * 100 + y * 10 + x];
        if (x < 7)
          ASSERT_INT_EQ(v, d[((z + 1) * 9 + y + 1) * 11 + x + 2]);
        else
          ASSERT_INT_EQ(v, -1); /* padding untouched */
      }
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(d);
}

TEST(fits_cube_region) {
  long naxes[3] = {10, 8, 6};
  float *d = ramp(3, naxes), part[5 * 4 * 3];
  const char *path = th_path("cube.fits");
  put_image(path, false, FLOAT_IMG, 3, naxes, TFLOAT, d, NULL);
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = tsr_source_fits(g, path, 0);
  ASSERT(n != NULL);
  ASSERT_INT_EQ(tsr_node_ndim(n), 3);
  ASSERT_INT_EQ(tsr_node_shape(n, 2), 6);
  tsr_region_t r = {{2, 1, 2, 0}, {7, 5, 5, 1}};
  ASSERT_OK(tsr_compute(g, n, &r, part, sizeof part, NULL));
  for (int z = 0; z < 3; z++)
    for (int y = 0; y < 4; y++)
      for (int x = 0; x < 5; x++)
        ASSERT_INT_EQ(part[(z * 4 + y) * 5 + x], (x + 2) + 100 * (y + 1) + 10000 * (z + 2));
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(d);
}

TEST(fits_hdu_selection) {
  long naxes[2] = {6, 4}, one = 0;
  float *d = ramp(2, naxes), out[24];
  const char *path = th_path("hdus.fits");
  put_image(path, false, 8, 0, &one, TBYTE, NULL, NULL); /* empty primary */
  put_image(path, true, FLOAT_IMG, 2, naxes, TFLOAT, d, NULL);
  {
    fitsfile *f = NULL;
    int status = 0;
    char *ttype[] = {"A"}, *tform[] = {"1E"};
    CHECK_FITS(fits_open_diskfile(&f, path, READWRITE, &status));
    CHECK_FITS(fits_create_tbl(f, BINARY_TBL, 0, 1, ttype, tform, NULL, "T", &status));
    CHECK_FITS(fits_close_file(f, &status));
  }
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *a = tsr_source_fits(g, path, 0), *b = tsr_source_fits(g, path, 2);
  ASSERT(a != NULL);
  ASSERT(a == b); /* same file, same HDU: one node */
  ASSERT_OK(tsr_compute(g, a, NULL, out, sizeof out, NULL));
  for (int i = 0; i < 24; i++)
    ASSERT_INT_EQ(out[i], d[i]);
  ASSERT_STR_CONTAINS(tsr_node_name(a), "fits#1(\"hdus.fits\")");
  tsr_graph_free(g);

  g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, path, 1) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), TSR_EFITS);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "hdus.fits\" HDU 1 has no image data (NAXIS = 0)");
  /* The first error sticks: later constructors return NULL at once. */
  ASSERT(tsr_source_fits(g, path, 2) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "HDU 1 has no image data");
  tsr_graph_free(g);

  g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, path, 5) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "hdus.fits\" has no HDU 5 (it has 3)");
  tsr_graph_free(g);
  g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, path, 3) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "hdus.fits\" HDU 3 is a binary table, not an image");
  tsr_graph_free(g);
  g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, path, -1) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "HDUs count from 1");
  tsr_graph_free(g);

  /* Only empty HDUs. */
  const char *empty = th_path("empty-primary.fits");
  put_image(empty, false, 8, 0, &one, TBYTE, NULL, NULL);
  g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, empty, 0) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g),
                      "empty-primary.fits\" has no image HDU with data (NAXIS > 0) among its 1 HDUs");
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(d);
}

/* Write a FITS file by hand: HDUs of cards ("" is a blank card; END and the
 * padding are added) each followed by `bytes` of `data` (big-endian
 * already) padded to 2880 bytes. */
typedef struct {
  const char *const *cards;
  const void *data;
  size_t bytes;
} raw_hdu;

static void put_raw(const char *path, int n, const raw_hdu *hdus) {
  FILE *f = fopen(path, "wb");
  ASSERT(f != NULL);
  for (int h = 0; h < n; h++) {
    char card[81];
    long len = 0;
    for (int i = 0; hdus[h].cards[i]; i++, len += 80) {
      snprintf(card, sizeof card, "%-80s", hdus[h].cards[i]);
      fwrite(card, 1, 80, f);
    }
    snprintf(card, sizeof card, "%-80s", "END");
    fwrite(card, 1, 80, f);
    for (len += 80; len % 2880; len++)
      fputc(' ', f);
    if (hdus[h].bytes > 0)
      fwrite(hdus[h].data, 1, hdus[h].bytes, f);
    for (size_t b = hdus[h].bytes; b % 2880; b++)
      fputc(0, f);
  }
  ASSERT_OK(fclose(f));
}

/* Big-endian float32 or float64 copies of the ramp. */
static unsigned char *be_ramp(int naxis, const long *naxes, int bytes_per, size_t *len) {
  long n = 1;
  for (int a = 0; a < naxis; a++)
    n *= naxes[a];
  float *d = ramp(naxis, naxes);
  unsigned char *o = malloc((size_t)n * (size_t)bytes_per);
  for (long i = 0; i < n; i++) {
    unsigned char v[8];
    if (bytes_per == 4)
      memcpy(v, &d[i], 4);
    else {
      double x = d[i];
      memcpy(v, &x, 8);
    }
    for (int b = 0; b < bytes_per; b++)
      o[i * bytes_per + b] = v[bytes_per - 1 - b];
  }
  free(d);
  *len = (size_t)n * (size_t)bytes_per;
  return o;
}

/* What a source of `hdu` of `path` gives: node key, shape, dtype, WCS and
 * bits, read by hdu.c or (via_cfitsio) by cfitsio. */
typedef struct {
  uint8_t key[16];
  int ndim;
  int64_t shape[TSR_MAX_DIMS];
  tsr_dtype_t dtype;
  char wcs[2048];
  size_t bytes;
  void *data;
} read_result;

static void read_source(const char *path, int hdu, bool via_cfitsio, read_result *r) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  memset(r, 0, sizeof *r);
  tsr__plain_hdu_off = via_cfitsio;
  tsr_node_t *n = tsr_source_fits(g, path, hdu);
  tsr__plain_hdu_off = false;
  ASSERT(n != NULL);
  tsr_region_t reg = tsr_region_of(n);
  tsr_node_key(n, r->key);
  r->ndim = tsr_node_ndim(n);
  for (int a = 0; a < r->ndim; a++)
    r->shape[a] = tsr_node_shape(n, a);
  r->dtype = tsr_node_dtype(n);
  r->bytes = (size_t)tsr_region_size(&reg) * tsr_dtype_size(r->dtype);
  r->data = malloc(r->bytes);
  ASSERT_OK(tsr_compute(g, n, NULL, r->data, r->bytes, NULL));
  if (tsr_node_wcs(n))
    ASSERT_OK(tsr_wcs_describe(ctx, tsr_node_wcs(n), r->wcs, sizeof r->wcs));
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST(fits_plain_images_are_read_without_cfitsio_and_as_cfitsio_reads_them) {
  long n2[2] = {7, 5}, n3[3] = {6, 4, 3};
  size_t l2, l3;
  unsigned char *d2 = be_ramp(2, n2, 4, &l2), *d3 = be_ramp(3, n3, 8, &l3);
  static const char *const long_header[] = {
      "SIMPLE  =                    T", "BITPIX  =                  -32",
      "NAXIS   =                    2", "NAXIS1  =                    7",
      "NAXIS2  =                    5", "", "CTYPE1  = 'RA---TAN'", "CTYPE2  = 'DEC--TAN'",
      "CRVAL1  = 150.0 / deg", "CRVAL2  = 2.0", "CRPIX1  = 4.0", "", "CRPIX2  = 3.0",
      "CDELT1  = -0.001", "CDELT2  = 0.001", "C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7",
      "C8", "C9", "C10", "C11", "C12", "C13", "C14", "C15", "C16", "C17", "C18", "C19", "C20",
      "C21", "C22", "C23", "C24", "C25", "C26", "C27", "C28", "C29",
      "ENDTIME = '2026-11-27T04:00:00' / a keyword that begins with END", "", "", NULL};
  /* Cards "Cn" stand for 30 COMMENT cards: the header takes two blocks. */
  const char *cards[64];
  char comments[30][32];
  int k = 0;
  for (int i = 0; long_header[i]; i++) {
    if (long_header[i][0] == 'C' && long_header[i][1] >= '0' && long_header[i][1] <= '9') {
      snprintf(comments[k], sizeof comments[k], "COMMENT card %d", k);
      cards[i] = comments[k++];
    } else {
      cards[i] = long_header[i];
    }
    cards[i + 1] = NULL;
  }
  const char *p1 = th_path("plain-long.fits");
  put_raw(p1, 1, (raw_hdu[]){{cards, d2, l2}});

  static const char *const cube[] = {
      "SIMPLE  =                    T", "BITPIX  =                  -64",
      "NAXIS   =                    3", "NAXIS1  =                    6",
      "NAXIS2  =                    4", "NAXIS3  =                    3",
      "BSCALE  =                  1.0", "BZERO   =                  0.0", NULL};
  const char *p2 = th_path("plain-cube.fits");
  put_raw(p2, 1, (raw_hdu[]){{cube, d3, l3}});

  /* An empty primary, a binary table with a row, an image extension. */
  static const char *const empty[] = {"SIMPLE  =                    T",
                                      "BITPIX  =                    8",
                                      "NAXIS   =                    0", "EXTEND  =                    T",
                                      NULL};
  static const char *const table[] = {
      "XTENSION= 'BINTABLE'", "BITPIX  =                    8", "NAXIS   =                    2",
      "NAXIS1  =                    4", "NAXIS2  =                    1",
      "PCOUNT  =                    0", "GCOUNT  =                    1",
      "TFIELDS =                    1", "TFORM1  = '1E      '", NULL};
  static const char *const ext[] = {"XTENSION= 'IMAGE   '", "BITPIX  =                  -32",
                                    "NAXIS   =                    2", "NAXIS1  =                    7",
                                    "NAXIS2  =                    5", "PCOUNT  =                    0",
                                    "GCOUNT  =                    1", "EXTNAME = 'SCI     '", NULL};
  const char *p3 = th_path("plain-ext.fits");
  put_raw(p3, 3, (raw_hdu[]){{empty, NULL, 0}, {table, "\0\0\0\0", 4}, {ext, d2, l2}});

  const struct { const char *path; int hdu, ndim; } cases[] = {
      {p1, 0, 2}, {p2, 0, 3}, {p3, 0, 2}, {p3, 3, 2}};
  enum { N = sizeof cases / sizeof cases[0] };
  read_result plain[N], viacf;
  for (int i = 0; i < N; i++) {
    read_source(cases[i].path, cases[i].hdu, false, &plain[i]);
    ASSERT_INT_EQ(plain[i].ndim, cases[i].ndim);
  }
  ASSERT(tsr__cfitsio_loaded() == NULL); /* all read without loading cfitsio */
  ASSERT(memcmp(plain[2].key, plain[3].key, 16) == 0); /* HDU 0 found HDU 3 */
  for (int i = 0; i < N; i++) {
    read_source(cases[i].path, cases[i].hdu, true, &viacf);
    ASSERT(memcmp(plain[i].key, viacf.key, 16) == 0);
    ASSERT_INT_EQ(plain[i].ndim, viacf.ndim);
    ASSERT(memcmp(plain[i].shape, viacf.shape, sizeof viacf.shape) == 0);
    ASSERT_INT_EQ(plain[i].dtype, viacf.dtype);
    ASSERT(plain[i].bytes == viacf.bytes && memcmp(plain[i].data, viacf.data, viacf.bytes) == 0);
    ASSERT(strcmp(plain[i].wcs, viacf.wcs) == 0);
    free(plain[i].data), free(viacf.data);
  }
  ASSERT(tsr__cfitsio_loaded() != NULL);
  free(d2), free(d3);
}

TEST(fits_other_images_load_cfitsio) {
  long naxes[2] = {6, 4};
  short d[24];
  float out[24];
  for (int i = 0; i < 24; i++)
    d[i] = (short)i;
  const char *path = th_path("int16.fits");
  put_image(path, false, SHORT_IMG, 2, naxes, TSHORT, d, NULL);
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  ASSERT(tsr__cfitsio_loaded() == NULL);
  tsr_node_t *n = tsr_source_fits(g, path, 0);
  ASSERT(n != NULL);
  ASSERT(tsr__cfitsio_loaded() != NULL);
  ASSERT_OK(tsr_compute(g, n, NULL, out, sizeof out, NULL));
  for (int i = 0; i < 24; i++)
    ASSERT_INT_EQ(out[i], i);
  tsr_graph_free(g);

  /* A float image whose header has a byte outside printable ASCII: hdu.c
   * declines it and cfitsio reads it as before. */
  long n2[2] = {7, 5};
  size_t len;
  unsigned char *be = be_ramp(2, n2, 4, &len);
  static const char *const latin[] = {"SIMPLE  =                    T",
                                      "BITPIX  =                  -32",
                                      "NAXIS   =                    2",
                                      "NAXIS1  =                    7",
                                      "NAXIS2  =                    5",
                                      "OBSERVER= 'Jos\xe9'", NULL};
  const char *p2 = th_path("latin.fits");
  put_raw(p2, 1, (raw_hdu[]){{latin, be, len}});
  g = graph_new(ctx);
  float o2[35];
  n = tsr_source_fits(g, p2, 0);
  ASSERT(n != NULL);
  ASSERT_OK(tsr_compute(g, n, NULL, o2, sizeof o2, NULL));
  for (int i = 0; i < 35; i++)
    ASSERT_INT_EQ(o2[i], (i % 7) + 100 * (i / 7));
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(be);
}

TEST(fits_tile_compressed) {
  enum { NX = 64, NY = 40 };
  long naxes[2] = {NX, NY};
  short d[NX * NY];
  float out[NX * NY], part[20 * 10];
  const char *path = th_path("rice.fits");
  fitsfile *f = NULL;
  int status = 0;
  for (int i = 0; i < NX * NY; i++)
    d[i] = (short)((i * 37) % 3000 - 1000);
  unlink(path);
  CHECK_FITS(fits_create_diskfile(&f, path, &status));
  CHECK_FITS(fits_set_compression_type(f, RICE_1, &status));
  CHECK_FITS(fits_create_img(f, SHORT_IMG, 2, naxes, &status));
  for (int i = 0; tan_cards[i]; i++)
    CHECK_FITS(fits_write_record(f, tan_cards[i], &status));
  CHECK_FITS(fits_write_img(f, TSHORT, 1, NX * NY, d, &status));
  CHECK_FITS(fits_close_file(f, &status));

  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = tsr_source_fits(g, path, 0);
  ASSERT(n != NULL);
  ASSERT_INT_EQ(tsr_node_dtype(n), TSR_F32);
  ASSERT_INT_EQ(tsr_node_shape(n, 0), NX);
  ASSERT(tsr_node_wcs(n) != NULL);
  ASSERT_INT_EQ(tsr_wcs_shape(tsr_node_wcs(n), 1), NY);
  ASSERT_OK(tsr_compute(g, n, NULL, out, sizeof out, NULL));
  for (int i = 0; i < NX * NY; i++)
    ASSERT_INT_EQ(out[i], d[i]);
  tsr_region_t r = {{30, 25, 0, 0}, {50, 35, 1, 1}};
  ASSERT_OK(tsr_compute(g, n, &r, part, sizeof part, NULL));
  for (int y = 0; y < 10; y++)
    for (int x = 0; x < 20; x++)
      ASSERT_INT_EQ(part[y * 20 + x], d[(y + 25) * NX + x + 30]);
  /* The WCS of a compressed image has the image's keywords, not the table's. */
  int nc = 0;
  const char *cards = tsr_wcs_cards(tsr_node_wcs(n), &nc);
  ASSERT(strstr(cards, "ZIMAGE") == NULL);
  ASSERT(strstr(cards, "TFORM1") == NULL);
  ASSERT_STR_CONTAINS(cards, "CTYPE1  = 'RA---TAN'");
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* A TNX x TNY image in HDU 2 of `name`, compressed with `type` in 32 x 16
 * tiles (3 x 2 + the clipped last row = 6 tiles), int16 or float data. */
static const char *put_tiled(const char *name, int type, bool floats) {
  long naxes[2] = {TNX, TNY}, tile[2] = {32, 16};
  short d[TNX * TNY];
  float fd[TNX * TNY];
  const char *path = th_path(name);
  fitsfile *f = NULL;
  int status = 0;
  for (int i = 0; i < TNX * TNY; i++) {
    d[i] = (short)(type == PLIO_1 ? (i * 7) % 50 : (i * 37) % 3000 - 1000);
    fd[i] = (float)sin(i * 0.01) * 100.0f;
  }
  unlink(path);
  CHECK_FITS(fits_create_diskfile(&f, path, &status));
  CHECK_FITS(fits_set_compression_type(f, type, &status));
  CHECK_FITS(fits_set_tile_dim(f, 2, tile, &status));
  CHECK_FITS(fits_create_img(f, floats ? FLOAT_IMG : SHORT_IMG, 2, naxes, &status));
  if (floats)
    CHECK_FITS(fits_write_img(f, TFLOAT, 1, TNX * TNY, fd, &status));
  else
    CHECK_FITS(fits_write_img(f, TSHORT, 1, TNX * TNY, d, &status));
  CHECK_FITS(fits_close_file(f, &status));
  return path;
}

/* Where tile `row` (1-based) of the compressed image in HDU 2 of `path`
 * is: the file offsets of its descriptor and of its stream, the stream's
 * length and its offset in the heap. */
static void tile_place(const char *path, int row, long long *desc, long long *at, long long *len,
                       long long *heap_off) {
  fitsfile *f = NULL;
  int status = 0, col = 0;
  long long head, data, end, naxis1, naxis2, theap, off;
  CHECK_FITS(fits_open_diskfile(&f, path, READONLY, &status));
  CHECK_FITS(fits_movabs_hdu(f, 2, NULL, &status));
  CHECK_FITS(fits_get_hduaddrll(f, &head, &data, &end, &status));
  CHECK_FITS(fits_read_key(f, TLONGLONG, "NAXIS1", &naxis1, NULL, &status));
  CHECK_FITS(fits_read_key(f, TLONGLONG, "NAXIS2", &naxis2, NULL, &status));
  if (fits_read_key(f, TLONGLONG, "THEAP", &theap, NULL, &status) == KEY_NO_EXIST) {
    status = 0;
    theap = naxis1 * naxis2;
  }
  CHECK_FITS(fits_get_colnum(f, CASEINSEN, "COMPRESSED_DATA", &col, &status));
  ASSERT_INT_EQ(col, 1); /* so its descriptor opens the row */
  CHECK_FITS(fits_read_descriptll(f, col, row, len, &off, &status));
  CHECK_FITS(fits_close_file(f, &status));
  *desc = data + (row - 1) * naxis1;
  *at = data + theap + off;
  *heap_off = off;
}

static void patch(const char *path, long long at, const void *bytes, size_t n) {
  int fd = open(path, O_WRONLY);
  ASSERT(fd >= 0);
  ASSERT(pwrite(fd, bytes, n, (off_t)at) == (ssize_t)n);
  close(fd);
}

/* Overwrite tile `row`'s stream from byte `from` on with `fill`, or xor it
 * with 0x5a when fill < 0. */
static void spoil_tile(const char *path, int row, long long from, int fill) {
  long long desc, at, len, off;
  unsigned char b[8192];
  tile_place(path, row, &desc, &at, &len, &off);
  ASSERT(len > from && len <= (long long)sizeof b);
  int fd = open(path, O_RDWR);
  ASSERT(fd >= 0);
  ASSERT(pread(fd, b, (size_t)len, (off_t)at) == (ssize_t)len);
  for (long long i = from; i < len; i++)
    b[i] = fill < 0 ? b[i] ^ 0x5a : (unsigned char)fill;
  ASSERT(pwrite(fd, b, (size_t)len, (off_t)at) == (ssize_t)len);
  close(fd);
}

/* Set tile `row`'s descriptor (a 'P' one: two big-endian int32). */
static void set_descriptor(const char *path, int row, long long count, long long off) {
  long long desc, at, len, heap_off;
  unsigned char b[8];
  tile_place(path, row, &desc, &at, &len, &heap_off);
  for (int i = 0; i < 4; i++) {
    b[i] = (unsigned char)((uint32_t)count >> (24 - 8 * i));
    b[4 + i] = (unsigned char)((uint32_t)off >> (24 - 8 * i));
  }
  patch(path, desc, b, 8);
}

/* Read the whole image of `path`: 0, or the error with its message in msg. */
static int read_tiled(const char *path, char *msg, size_t cap) {
  static float out[TNX * TNY];
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = tsr_source_fits(g, path, 0);
  int rc = n == NULL ? tsr_graph_status(g) : tsr_compute(g, n, NULL, out, sizeof out, NULL);
  snprintf(msg, cap, "%s", rc == 0 ? "" : n == NULL ? tsr_graph_errmsg(g) : tsr_errmsg(ctx));
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  return rc;
}

/* cfitsio's Rice decoder read far past a corrupt stream (ASan: SEGV in
 * fits_rdecomp for float data) or returned "non-CFITSIO program error"; a
 * corrupt GZIP tile leaked its compressed bytes in cfitsio; a corrupt
 * HCOMPRESS one leaked the decoder's scratch (or made it write as many
 * pixels as the stream claims). */
TEST(tiles_corrupt_streams_are_refused_without_leaks) {
  static const struct {
    const char *name;
    int type;
    bool floats;
    int row, from, fill;
    const char *why;
  } cases[] = {
      {"rice16.fits", RICE_1, false, 6, 2, 0xff, "tile 6 of the compressed image is corrupt (its "
                                                 "Rice stream ends before its 256 pixels)"},
      {"ricef.fits", RICE_1, true, 2, 4, 0xff, "tile 2 of the compressed image is corrupt (its "
                                               "Rice stream has the invalid block code 31 at byte 4)"},
      {"gz1.fits", GZIP_1, false, 3, 12, -1, "tile 3 of the compressed image is corrupt (its gzip "
                                             "stream does not inflate)"},
      {"gz2.fits", GZIP_2, false, 1, 0, 0, "tile 1 of the compressed image is corrupt (its gzip "
                                           "stream does not inflate)"},
      {"hc.fits", HCOMPRESS_1, false, 2, 30, -1, "tile 2 of the compressed image is corrupt (its "
                                                 "HCOMPRESS stream has the bad bit plane code"},
      {"hc0.fits", HCOMPRESS_1, false, 4, 2, 0, "tile 4 of the compressed image is corrupt (its "
                                                "HCOMPRESS stream is 0 x 0 for 512 pixels)"},
  };
  char msg[512];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *path = put_tiled(cases[i].name, cases[i].type, cases[i].floats);
    ASSERT_OK(read_tiled(path, msg, sizeof msg));
    spoil_tile(path, cases[i].row, cases[i].from, cases[i].fill);
    ASSERT_INT_EQ(read_tiled(path, msg, sizeof msg), TSR_EFITS);
    ASSERT_STR_CONTAINS(msg, cases[i].name);
    ASSERT_STR_CONTAINS(msg, "\" HDU 2: ");
    ASSERT_STR_CONTAINS(msg, cases[i].why);
  }
  ASSERT_INT_EQ(LEAKS(), 0);
}

/* Every coding's check ends exactly where a good stream ends: one byte
 * less is refused (a GZIP tile cut short made cfitsio grow its buffer
 * until memory ran out). */
TEST(tiles_streams_one_byte_short_are_refused) {
  static const struct {
    const char *name;
    int type;
    bool floats;
    const char *why;
  } cases[] = {
      {"s-rice.fits", RICE_1, false, "its Rice stream ends before its 512 pixels"},
      {"s-ricef.fits", RICE_1, true, "its Rice stream ends before its 512 pixels"},
      {"s-gzip.fits", GZIP_1, false, "its gzip stream ends early"},
      {"s-gzip2.fits", GZIP_2, true, "its gzip stream ends early"},
      {"s-hc.fits", HCOMPRESS_1, false, "its HCOMPRESS stream ends before its 512 pixels"},
      {"s-plio.fits", PLIO_1, false, "its PLIO line list claims"},
  };
  char msg[512];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *path = put_tiled(cases[i].name, cases[i].type, cases[i].floats);
    long long desc, at, len, off;
    tile_place(path, 1, &desc, &at, &len, &off);
    ASSERT_OK(read_tiled(path, msg, sizeof msg));
    set_descriptor(path, 1, len - 1, off);
    ASSERT_INT_EQ(read_tiled(path, msg, sizeof msg), TSR_EFITS);
    ASSERT_STR_CONTAINS(msg, "tile 1 of the compressed image is corrupt");
    ASSERT_STR_CONTAINS(msg, cases[i].why);
  }
  ASSERT_INT_EQ(LEAKS(), 0);
}

/* Descriptors are checked against the heap, and the heap against the
 * file, when the source is built: tessera info refuses them too. */
TEST(tiles_bad_descriptors_and_truncation_fail_at_build) {
  char msg[512];
  const char *path = put_tiled("desc.fits", RICE_1, false);
  set_descriptor(path, 5, 100, 1 << 30);
  ASSERT_INT_EQ(read_tiled(path, msg, sizeof msg), TSR_EFITS);
  ASSERT_STR_CONTAINS(msg, "desc.fits\" HDU 2: tile 5 of the compressed image is corrupt (its "
                           "descriptor says 100 elements of 1 bytes at heap offset 1073741824, "
                           "past the heap's");
  path = put_tiled("desc2.fits", RICE_1, false);
  set_descriptor(path, 2, -5, 0);
  ASSERT_INT_EQ(read_tiled(path, msg, sizeof msg), TSR_EFITS);
  ASSERT_STR_CONTAINS(msg, "tile 2 of the compressed image is corrupt (its descriptor says");
  path = put_tiled("trunc-tiles.fits", GZIP_1, false);
  struct stat st;
  ASSERT_OK(stat(path, &st));
  ASSERT_OK(truncate(path, st.st_size - 2880));
  ASSERT_INT_EQ(read_tiled(path, msg, sizeof msg), TSR_EFITS);
  ASSERT_STR_CONTAINS(msg, "trunc-tiles.fits\" is truncated: HDU 2's compressed image needs");
  ASSERT_INT_EQ(LEAKS(), 0);
}

/* Replace the first card of `path` whose keyword is `kw` with `card`. */
static void set_card(const char *path, const char *kw, const char *card) {
  char c[TSR__CARD + 1], k[9];
  int fd = open(path, O_RDWR);
  ASSERT(fd >= 0);
  for (off_t at = 0;; at += TSR__CARD) {
    ASSERT(pread(fd, c, TSR__CARD, at) == TSR__CARD);
    tsr__card_keyword(c, k);
    if (strcmp(k, kw) == 0) {
      snprintf(c, sizeof c, "%-80s", card);
      ASSERT(pwrite(fd, c, TSR__CARD, at) == TSR__CARD);
      break;
    }
  }
  close(fd);
}

/* cfitsio parses a compressed image's keywords as soon as it moves to the
 * HDU and divides by the tile sizes and the Rice block size: 0 was a
 * SIGFPE inside fits_movabs_hdu (found by fuzzing), for the image sought
 * and for one passed on the way to another HDU. */
TEST(tiles_keywords_cfitsio_divides_by_are_checked_first) {
  static const struct {
    const char *kw, *card, *why;
  } cases[] = {
      {"ZVAL1", "ZVAL1   =                    0", "Rice block size ZVAL1 = 0; expected 16 or 32"},
      {"ZTILE1", "ZTILE1  =                    0", "ZTILE1 = 0; expected at least 1"},
      {"ZTILE2", "ZTILE2  =                  1.5", "ZTILE2 = 1.5 is not an integer"},
      {"ZNAXIS", "ZNAXIS  =                    7", "has 7 axes; 1 to 4 are supported"},
      /* cfitsio reads the 0 in column 10; the standard's value (column 11 on) is 16. */
      {"ZTILE1", "ZTILE1  =0                  16", "ZTILE1 is there twice, or not as \"ZTILE1 = "
                                                   "value\""},
      /* Not a keyword cfitsio divides by, but one it copies into 70 bytes:
       * a glibc abort (found by fuzzing). */
      {"TTYPE1", "TTYPE1  = AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
       "TTYPE1 is not a column name (expected TTYPE1 = 'name')"},
      /* cfitsio finds a keyword in an ESO HIERARCH card too (a SIGFPE in
       * CI's fuzzing): it is refused, not missed. */
      {"ZTILE1", "HIERARCH ZTILE1 = 0", "ZTILE1 is there twice, or not as \"ZTILE1 = value\""},
      {"ZVAL1", "HIERARCH  zval1= 0", "ZVAL1 is there twice, or not as \"ZVAL1 = value\""},
  };
  char msg[512];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *path = put_tiled("keys.fits", RICE_1, false);
    set_card(path, cases[i].kw, cases[i].card);
    ASSERT(read_tiled(path, msg, sizeof msg) < 0);
    ASSERT_STR_CONTAINS(msg, "keys.fits\" HDU 2");
    ASSERT_STR_CONTAINS(msg, cases[i].why);
  }
  /* A HIERARCH ZIMAGE makes the table a compressed image for cfitsio. */
  const char *hz = put_tiled("keys-hz.fits", RICE_1, false);
  set_card(hz, "ZTILE1", "ZTILE1  =                    0");
  set_card(hz, "ZIMAGE", "HIERARCH ZIMAGE = T");
  ASSERT(read_tiled(hz, msg, sizeof msg) < 0);
  ASSERT_STR_CONTAINS(msg, "keys-hz.fits\" HDU 2");
  ASSERT_STR_CONTAINS(msg, "ZTILE1 = 0; expected at least 1");
  /* Passed on the way to HDU 3. */
  long naxes[2] = {8, 8};
  float *d = ramp(2, naxes);
  const char *path = put_tiled("keys3.fits", RICE_1, false);
  put_image(path, true, FLOAT_IMG, 2, naxes, TFLOAT, d, NULL);
  set_card(path, "ZVAL1", "ZVAL1   =                    0");
  free(d);
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, path, 3) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "keys3.fits\" HDU 2: the compressed image's table is "
                                           "corrupt (Rice block size ZVAL1 = 0");
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* The Rice walk on hand-made streams (bytepix 2: 4-bit block codes). */
TEST(tiles_rice_walk) {
  char why[128];
  /* First pixel, then two blocks of equal pixels (code 0). */
  static const unsigned char flat[] = {0x12, 0x34, 0x00};
  ASSERT(tsr__tiles_rice_ok(flat, 3, 2, 32, 64, why, sizeof why));
  ASSERT(!tsr__tiles_rice_ok(flat, 3, 2, 32, 96, why, sizeof why));
  ASSERT_STR_CONTAINS(why, "ends before its 96 pixels");
  ASSERT(!tsr__tiles_rice_ok(flat, 2, 2, 32, 1, why, sizeof why));
  ASSERT_STR_CONTAINS(why, "too short");
  /* Code 1 (fs = 0): 32 pixels of one bit each ("1" = difference 0). */
  static const unsigned char ones[] = {0, 0, 0x1f, 0xff, 0xff, 0xff, 0xf0};
  ASSERT(tsr__tiles_rice_ok(ones, 7, 2, 32, 32, why, sizeof why));
  ASSERT(!tsr__tiles_rice_ok(ones, 6, 2, 32, 32, why, sizeof why));
  /* A unary run of zeros to the end of the stream. */
  static const unsigned char zeros[] = {0, 0, 0x10, 0, 0, 0};
  ASSERT(!tsr__tiles_rice_ok(zeros, 6, 2, 32, 32, why, sizeof why));
  ASSERT_STR_CONTAINS(why, "ends before its 32 pixels");
  /* For 32-bit pixels (5-bit codes), code 31 is past fsmax + 1. */
  static const unsigned char bad[] = {0, 0, 0, 0, 0xf8, 0};
  ASSERT(!tsr__tiles_rice_ok(bad, 6, 4, 32, 32, why, sizeof why));
  ASSERT_STR_CONTAINS(why, "invalid block code 31 at byte 4");
  /* 1024 pixels in blocks of 32 with code 1 and a "1" per pixel, long
   * enough for the 64-bit steps: 2 + 32 * 36 / 8 = 146 bytes, not one less. */
  unsigned char lng[146] = {0};
  for (int64_t bit = 0, blk = 0; blk < 32; blk++) {
    lng[2 + (bit + 3) / 8] |= (unsigned char)(0x80 >> ((bit + 3) % 8));
    bit += 4;
    for (int px = 0; px < 32; px++, bit++)
      lng[2 + bit / 8] |= (unsigned char)(0x80 >> (bit % 8));
  }
  ASSERT(tsr__tiles_rice_ok(lng, 146, 2, 32, 1024, why, sizeof why));
  ASSERT(!tsr__tiles_rice_ok(lng, 145, 2, 32, 1024, why, sizeof why));
  ASSERT(!tsr__tiles_rice_ok(lng, 146, 2, 32, 1025, why, sizeof why));
  /* Block size 0 would never advance. */
  ASSERT(!tsr__tiles_rice_ok(flat, 3, 2, 0, 64, why, sizeof why));
}

/* ------------------------------------------------------------------ */
/* Bad files                                                          */

TEST(fits_truncated_is_reported) {
  long naxes[2] = {200, 200};
  float *d = ramp(2, naxes);
  const char *path = th_path("trunc.fits");
  put_image(path, false, FLOAT_IMG, 2, naxes, TFLOAT, d, NULL);
  ASSERT_OK(truncate(path, 50000));
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, path, 0) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), TSR_EFITS);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g),
                      "trunc.fits\" is truncated: HDU 1 needs 160000 bytes of data ending at byte "
                      "162880, the file ends after 50000");
  tsr_graph_free(g);
  /* A header cut short: cfitsio's own words, and no crash. */
  ASSERT_OK(truncate(path, 1000));
  g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, path, 0) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "fits: cannot open \"");
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "trunc.fits\": cfitsio ");
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(d);
}

TEST(fits_not_fits_missing_empty) {
  const char *txt = th_path("notes.txt"), *none = th_path("missing.fits"),
             *empty = th_path("empty.fits");
  write_text(txt, "hello, this is not FITS\n", 24);
  write_text(empty, "", 0);
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, txt, 0) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), TSR_EFITS);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g),
                      "notes.txt\" is not a FITS file (it does not begin with \"SIMPLE  =\")");
  tsr_graph_free(g);
  g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, none, 0) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), TSR_EIO);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "fits: cannot open \"");
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "missing.fits\": No such file or directory");
  tsr_graph_free(g);
  g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, empty, 0) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "empty.fits\" is empty (0 bytes), not a FITS file");
  tsr_graph_free(g);
  g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, th_tmpdir(), 0) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "Is a directory");
  tsr_graph_free(g);
  tsr_wcs_t *w = NULL;
  ASSERT_INT_EQ(tsr_wcs_read_fits(ctx, none, 0, &w), TSR_EIO);
  ASSERT(w == NULL);
  tsr_ctx_free(ctx);
}

/* Building a source of HDU `hdu` of `path` fails with `code` and `msg`. */
static void source_fails(tsr_ctx_t *ctx, const char *path, int hdu, int code, const char *msg) {
  tsr_graph_t *g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, path, hdu) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), code);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), msg);
  tsr_graph_free(g);
}

TEST(fits_shape_errors) {
  long zero[2] = {10, 0}, five[5] = {2, 2, 2, 2, 2};
  float d[32] = {0};
  const char *z = th_path("zero.fits"), *f5 = th_path("five.fits");
  put_image(z, false, FLOAT_IMG, 2, zero, TFLOAT, NULL, NULL);
  put_image(f5, false, FLOAT_IMG, 5, five, TFLOAT, d, NULL);
  tsr_ctx_t *ctx = ctx_new();
  source_fails(ctx, z, 0, TSR_EINVAL, "zero.fits\" HDU 1: NAXIS2 = 0: zero-size axis");
  source_fails(ctx, f5, 0, TSR_ENOTSUP, "five.fits\" HDU 1 has NAXIS = 5; at most 4 axes are supported");
  tsr_ctx_free(ctx);
}

/* A 20 KB file may declare 2^31 x 2^31 pixels: the size arithmetic must
 * refuse it (it overflowed, and a run then read far past the mapping), by
 * both header paths.  A source under the limit but beyond the file is
 * truncated; a buffer or a target over it is refused when built. */
TEST(huge_declared_sizes_are_refused) {
  static const char *const huge[] = {"SIMPLE  =                    T", "BITPIX  =                  -32",
                                     "NAXIS   =                    2", "NAXIS1  =           2147483648",
                                     "NAXIS2  =           2147483648", NULL};
  static const char *const big[] = {"SIMPLE  =                    T", "BITPIX  =                  -32",
                                    "NAXIS   =                    2", "NAXIS1  =              1048576",
                                    "NAXIS2  =              1048576", NULL};
  static const char zeros[17280];
  const char *hp = th_path("declares-huge.fits"), *bp = th_path("big-empty.fits");
  put_raw(hp, 1, (raw_hdu[]){{huge, zeros, sizeof zeros}});
  put_raw(bp, 1, (raw_hdu[]){{big, zeros, sizeof zeros}});
  tsr_ctx_t *ctx = ctx_new();
  for (int via = 0; via < 2; via++) {
    tsr_graph_t *g = graph_new(ctx);
    tsr__plain_hdu_off = via;
    ASSERT(tsr_source_fits(g, hp, 0) == NULL);
    ASSERT_INT_EQ(tsr_graph_status(g), TSR_EFITS);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "declares-huge.fits\" HDU 1: image too large: 2147483648 x "
                                             "2147483648 values of BITPIX -32 is more than 2^60 bytes");
    tsr_graph_free(g);
    g = graph_new(ctx);
    ASSERT(tsr_source_fits(g, bp, 0) == NULL);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "big-empty.fits\" is truncated: HDU 1 needs "
                                             "4398046511104 bytes of data");
    tsr_graph_free(g);
    tsr__plain_hdu_off = false;
  }
  int64_t shape[4] = {INT64_C(1) << 40, INT64_C(1) << 40, INT64_C(1) << 40, 2};
  float one = 1;
  tsr_graph_t *g = graph_new(ctx);
  ASSERT(tsr_source_buffer_ref(g, TSR_F32, 4, shape, &one, NULL) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "source_buffer: image too large: 1099511627776 x "
                                           "1099511627776 x 1099511627776 x 2 values");
  tsr_graph_free(g);
  /* A target of 2^40 x 2^40 pixels (from a header file) onto a small input. */
  const char *hdr = th_path("huge-target.hdr");
  static const char text[] = "NAXIS   = 2\nNAXIS1  = 1099511627776\nNAXIS2  = 1099511627776\n"
                             "CTYPE1  = 'RA---TAN'\nCTYPE2  = 'DEC--TAN'\nCRVAL1  = 10\n"
                             "CRVAL2  = 10\nCRPIX1  = 1\nCRPIX2  = 1\nCDELT1  = -1e-3\n"
                             "CDELT2  = 1e-3\n";
  write_text(hdr, text, sizeof text - 1);
  tsr_wcs_t *target = NULL;
  ASSERT_OK(tsr_wcs_read_hdr(ctx, hdr, &target));
  int64_t s2[2] = {4, 4};
  float d[16] = {0};
  g = graph_new(ctx);
  tsr_node_t *src = tsr_source_buffer_ref(g, TSR_F32, 2, s2, d, target);
  ASSERT(src != NULL);
  tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
  ASSERT(tsr_reproject_interp(g, src, target, &io) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "image too large: 1099511627776 x 1099511627776 "
                                           "float32 values is more than 2^60 bytes");
  tsr_graph_free(g);
  tsr_wcs_free(target);
  /* Region sizes saturate instead of wrapping. */
  tsr_region_t r = {{0, 0, 0, 0}, {INT64_C(1) << 40, INT64_C(1) << 40, INT64_C(1) << 40, 1}};
  ASSERT_INT_EQ(tsr_region_size(&r), INT64_MAX);
  tsr_ctx_free(ctx);
}

/* cfitsio overruns memory opening a header of more than about 100 axes
 * (NAXIS = 999 crashed `tessera info`): the header walk refuses them, by
 * either path, and an image of more than 4 axes is refused by name. */
TEST(too_many_axes_never_reach_cfitsio) {
  static const int counts[] = {5, 104, 999};
  static const char one[] = "NAXIS%-3d=                    1";
  tsr_ctx_t *ctx = ctx_new();
  for (size_t c = 0; c < sizeof counts / sizeof counts[0]; c++) {
    int n = counts[c];
    const char **cards = calloc((size_t)n + 8, sizeof *cards);
    char(*text)[81] = calloc((size_t)n, sizeof *text);
    int k = 0;
    cards[k++] = "SIMPLE  =                    T";
    cards[k++] = "BITPIX  =                  -32";
    char nax[81];
    snprintf(nax, sizeof nax, "NAXIS   = %20d", n);
    cards[k++] = nax;
    for (int a = 0; a < n; a++) {
      snprintf(text[a], sizeof text[a], one, a + 1);
      cards[k++] = text[a];
    }
    cards[k] = NULL;
    char want[128];
    snprintf(want, sizeof want, "\" HDU 1 has NAXIS = %d; at most 4 axes are supported", n);
    static const float zero[720];
    put_raw(th_path("axes.fits"), 1, (raw_hdu[]){{cards, zero, sizeof zero}});
    {
      /* The same, gzipped: cfitsio inflates it itself, so it is walked inflated. */
      FILE *f = fopen(th_path("axes.fits"), "rb");
      gzFile z = gzopen(th_path("axes.fits.gz"), "wb");
      char b[2880];
      size_t got;
      ASSERT(f != NULL && z != NULL);
      while ((got = fread(b, 1, sizeof b, f)) > 0)
        ASSERT(gzwrite(z, b, (unsigned)got) == (int)got);
      ASSERT_OK(fclose(f));
      ASSERT_INT_EQ(gzclose(z), Z_OK);
    }
    for (int via = 0; via < 3; via++) {
      tsr_graph_t *g = graph_new(ctx);
      tsr__plain_hdu_off = via == 1;
      ASSERT(tsr_source_fits(g, th_path(via == 2 ? "axes.fits.gz" : "axes.fits"), 0) == NULL);
      tsr__plain_hdu_off = false;
      ASSERT_INT_EQ(tsr_graph_status(g), TSR_ENOTSUP);
      ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), want);
      tsr_graph_free(g);
    }
    free(cards);
    free(text);
  }
  tsr_ctx_free(ctx);
}

/* A header the walk declines (an END card followed by NUL bytes, found by
 * fuzzing) is still checked for its axes, and so is an extension after it,
 * before cfitsio reads either. */
static void raw_cards(FILE *f, const char *const *cards, long *len) {
  char card[81];
  for (int i = 0; cards && cards[i]; i++, *len += 80) {
    snprintf(card, sizeof card, "%-80s", cards[i]);
    fwrite(card, 1, 80, f);
  }
}

/* A header: `cards`, NAXIS1..n = 1, `tail`, END (with NUL bytes after END
 * when `junk_end`), padded; then one block of zero data if n_axes > 0. */
static void raw_header(FILE *f, const char *const *cards, int n_axes, const char *const *tail,
                       bool junk_end) {
  static const char zeros[2880];
  char card[81];
  long len = 0;
  raw_cards(f, cards, &len);
  for (int a = 0; a < n_axes; a++, len += 80) {
    char kw[9];
    snprintf(kw, sizeof kw, "NAXIS%d", a + 1);
    snprintf(card, sizeof card, "%-8s= %20d%50s", kw, 1, "");
    fwrite(card, 1, 80, f);
  }
  raw_cards(f, tail, &len);
  snprintf(card, sizeof card, "%-80s", "END");
  if (junk_end)
    memset(card + 50, 0, 30);
  fwrite(card, 1, 80, f);
  for (len += 80; len % 2880; len++)
    fputc(' ', f);
  if (n_axes > 0)
    fwrite(zeros, 1, sizeof zeros, f);
}

TEST(axes_of_headers_the_walk_declines_are_checked) {
  static const char *const prim104[] = {"SIMPLE  =                    T", "BITPIX  =                  -32",
                                        "NAXIS   =                  104", NULL};
  static const char *const prim0[] = {"SIMPLE  =                    T", "BITPIX  =                    8",
                                      "NAXIS   =                    0", "EXTEND  =                    T", NULL};
  static const char *const ext500[] = {"XTENSION= 'IMAGE   '", "BITPIX  =                  -32",
                                       "NAXIS   =                  500", NULL};
  static const char *const tail[] = {"PCOUNT  =                    0", "GCOUNT  =                    1", NULL};
  const char *a = th_path("junk-end.fits"), *b = th_path("junk-then-ext.fits");
  FILE *f = fopen(a, "wb");
  ASSERT(f != NULL);
  raw_header(f, prim104, 104, NULL, true);
  ASSERT_OK(fclose(f));
  f = fopen(b, "wb");
  ASSERT(f != NULL);
  raw_header(f, prim0, 0, NULL, true);
  raw_header(f, ext500, 500, tail, false);
  ASSERT_OK(fclose(f));
  tsr_ctx_t *ctx = ctx_new();
  source_fails(ctx, a, 0, TSR_ENOTSUP, "junk-end.fits\" HDU 1 has NAXIS = 104; at most 4 axes");
  source_fails(ctx, b, 2, TSR_ENOTSUP, "junk-then-ext.fits\" HDU 2 has NAXIS = 500; at most 4 axes");
  tsr_ctx_free(ctx);
}

TEST(fits_bad_wcs_is_a_build_error) {
  long naxes[2] = {8, 8};
  float d[64] = {0};
  const char *bad[] = {"CTYPE1  = 'RA---XYZ'", "CTYPE2  = 'DEC--XYZ'", NULL};
  const char *path = th_path("badwcs.fits"), *plain = th_path("nowcs.fits");
  put_image(path, false, FLOAT_IMG, 2, naxes, TFLOAT, d, bad);
  put_image(plain, false, FLOAT_IMG, 2, naxes, TFLOAT, d, NULL);
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  ASSERT(tsr_source_fits(g, path, 0) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), TSR_EWCS);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g),
                      "badwcs.fits\" HDU 1: wcslib: Unrecognized projection code (XYZ in CTYPE1); "
                      "the header has CTYPE1 = 'RA---XYZ'");
  tsr_graph_free(g);
  g = graph_new(ctx);
  tsr_node_t *n = tsr_source_fits(g, plain, 0);
  ASSERT(n != NULL);
  ASSERT(tsr_node_wcs(n) == NULL);
  tsr_graph_free(g);
  tsr_wcs_t *w = NULL;
  ASSERT_INT_EQ(tsr_wcs_read_fits(ctx, plain, 0, &w), TSR_EWCS);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "nowcs.fits\" HDU 1: no WCS (no CTYPEn keywords)");
  tsr_ctx_free(ctx);
}

TEST(fits_read_wcs) {
  long naxes[2] = {32, 20};
  float *d = ramp(2, naxes);
  const char *path = th_path("wcs.fits");
  put_image(path, false, FLOAT_IMG, 2, naxes, TFLOAT, d, tan_cards);
  tsr_ctx_t *ctx = ctx_new();
  tsr_wcs_t *w = NULL;
  char buf[256];
  ASSERT_OK(tsr_wcs_read_fits(ctx, path, 0, &w));
  ASSERT_INT_EQ(tsr_wcs_naxis(w), 2);
  ASSERT_INT_EQ(tsr_wcs_shape(w, 0), 32);
  ASSERT_INT_EQ(tsr_wcs_shape(w, 1), 20);
  ASSERT_OK(tsr_wcs_describe(ctx, w, buf, sizeof buf));
  ASSERT_STR_CONTAINS(buf, "TAN ICRS, 32 x 20, 1.000 arcsec/px, centre RA 10.68470 Dec 41.26875");
  tsr_wcs_free(w);
  tsr_ctx_free(ctx);
  free(d);
}

/* ------------------------------------------------------------------ */
/* Keys                                                               */

TEST(fits_key_follows_file_identity) {
  long naxes[2] = {9, 7};
  float *d = ramp(2, naxes), out[63];
  const char *path = th_path("key.fits");
  uint8_t k1[16], k2[16], k3[16];
  put_image(path, false, FLOAT_IMG, 2, naxes, TFLOAT, d, NULL);
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g1 = graph_new(ctx), *g2 = graph_new(ctx), *g3;
  tsr_node_t *a = tsr_source_fits(g1, path, 0), *b = tsr_source_fits(g2, path, 1);
  ASSERT(a && b);
  tsr_node_key(a, k1);
  tsr_node_key(b, k2);
  ASSERT(memcmp(k1, k2, 16) == 0);

  struct stat st;
  ASSERT_OK(stat(path, &st));
  struct timespec ts[2] = {st.st_atim, st.st_mtim};
  ts[1].tv_sec += 10;
  ts[1].tv_nsec = 123456789;
  ASSERT_OK(utimensat(AT_FDCWD, path, ts, 0));
  g3 = graph_new(ctx);
  tsr_node_t *c = tsr_source_fits(g3, path, 0);
  ASSERT(c != NULL);
  tsr_node_key(c, k3);
  ASSERT(memcmp(k1, k3, 16) != 0);
  ASSERT_OK(tsr_compute(g3, c, NULL, out, sizeof out, NULL));
  /* The old graph's node stands for the file as it was. */
  ASSERT_INT_EQ(tsr_compute(g1, a, NULL, out, sizeof out, NULL), TSR_EIO);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "key.fits\" changed since the graph was built");
  tsr_graph_free(g1);
  tsr_graph_free(g2);
  tsr_graph_free(g3);
  tsr_ctx_free(ctx);
  free(d);
}

/* A FITS input's WCS cards get the same checks, naming the file. */
TEST(fits_bad_numbers_are_refused) {
  long naxes[2] = {8, 6};
  float d[48] = {0};
  static const char *const cards[][6] = {
      {"CTYPE1  = 'RA---TAN'", "CTYPE2  = 'DEC--TAN'", "CRVAL1  = 1e400", "CDELT1  = -0.01",
       "CDELT2  = 0.01", NULL},
      {"CTYPE1  = 'RA---TAN'", "CTYPE2  = 'DEC--TAN'", "CRPIX2  = 1e300", "CDELT1  = -0.01",
       "CDELT2  = 0.01", NULL},
  };
  static const char *const want[] = {"CRVAL1 = 1e400 is not a finite number",
                                     "CRPIX2 = 1e300 is out of range [-1e12, 1e12]"};
  const char *path = th_path("badnum.fits");
  tsr_ctx_t *ctx = ctx_new();
  for (int k = 0; k < 2; k++) {
    char msg[256];
    tsr_wcs_t *w = NULL;
    tsr_graph_t *g = graph_new(ctx);
    put_image(path, false, FLOAT_IMG, 2, naxes, TFLOAT, d, cards[k]);
    snprintf(msg, sizeof msg, "badnum.fits\" HDU 1: %s", want[k]);
    ASSERT(tsr_source_fits(g, path, 0) == NULL);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), msg);
    tsr_graph_free(g);
    ASSERT(tsr_wcs_read_fits(ctx, path, 0, &w) != 0);
    ASSERT(w == NULL);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), msg);
  }
  tsr_ctx_free(ctx);
}

/* Lower-case keywords: astropy reads "crval1  = 10" as CRVAL1, and a .hdr
 * was read that way, but a FITS input with such cards had "no WCS".  Both
 * now give what upper case gives: the same cards, keys and pixels. */
static void lower_keywords(char *text, size_t len, bool lines, bool fits_file) {
  /* Columns 1-8 of each card (or line); in a FITS file not the mandatory
   * keywords, nor cfitsio's COMMENT cards. */
  static const char *const keep[] = {"END", "SIMPLE", "BITPIX", "NAXIS", "EXTEND", "COMMENT"};
  for (size_t i = 0; i < len;) {
    size_t e = i;
    bool lower = true;
    while (e < len && text[e] != '\n' && (lines || e - i < 80))
      e++;
    for (size_t k = 0; fits_file && k < sizeof keep / sizeof keep[0]; k++)
      lower &= strncmp(text + i, keep[k], strlen(keep[k])) != 0;
    if (lower)
      for (size_t j = i; j < e && j < i + 8; j++)
        text[j] = (char)tolower((unsigned char)text[j]);
    i = e + (lines ? 1 : 0);
  }
}

TEST(lowercase_keywords_read_as_upper_case) {
  long naxes[2] = {32, 20};
  float *d = ramp(2, naxes);
  const char *up = th_path("upper.fits"), *low = th_path("lower.fits");
  char text[2048], block[80 * 16], upkey[2][16], lowkey[2][16];
  float out[2][40 * 30];
  tsr_ctx_t *ctx = ctx_new();
  tsr_wcs_t *wt[2] = {NULL, NULL}, *wf[2] = {NULL, NULL}, *wb = NULL;

  /* Targets: a .hdr in lines, upper and lower case, and a block. */
  wcs_text_with(text, sizeof text, 0, NULL);
  ASSERT_OK(tsr_wcs_parse(ctx, text, strlen(text), "up.hdr", 1, &wt[0]));
  lower_keywords(text, strlen(text), true, false);
  ASSERT(strstr(text, "crval1  = 10.6847") != NULL);
  ASSERT_OK(tsr_wcs_parse(ctx, text, strlen(text), "low.hdr", 1, &wt[1]));
  block_of(block, wcs_lines);
  lower_keywords(block, strlen(block), false, false);
  ASSERT(strncmp(block + 5 * 80, "crval1  =", 9) == 0);
  ASSERT_OK(tsr_wcs_parse(ctx, block, strlen(block), "low-block.hdr", 1, &wb));
  {
    int n0, n1, nb;
    const char *c0 = tsr_wcs_cards(wt[0], &n0), *c1 = tsr_wcs_cards(wt[1], &n1);
    const char *cb = tsr_wcs_cards(wb, &nb);
    ASSERT_INT_EQ(n0, n1);
    ASSERT_INT_EQ(n0, nb);
    ASSERT(memcmp(c0, c1, (size_t)n0 * 80) == 0);
    ASSERT(memcmp(c0, cb, (size_t)n0 * 80) == 0);
  }

  /* Inputs: the same FITS file, its WCS keywords upper and lower case. */
  put_image(up, false, FLOAT_IMG, 2, naxes, TFLOAT, d, tan_cards);
  {
    FILE *f = fopen(up, "rb");
    char *raw = malloc(2880 * 3);
    size_t len;
    ASSERT(f != NULL);
    len = fread(raw, 1, 2880 * 3, f);
    fclose(f);
    lower_keywords(raw, 2880, false, true);
    ASSERT(raw[80 * 3] == 'N' && raw[80 * 5] == 'E');
    {
      int found = 0;
      for (int c = 0; c < 36; c++)
        found += strncmp(raw + c * 80, "ctype1  = 'RA---TAN'", 20) == 0;
      ASSERT_INT_EQ(found, 1);
    }
    write_text(low, raw, len);
    free(raw);
  }
  ASSERT_OK(tsr_wcs_read_fits(ctx, up, 0, &wf[0]));
  ASSERT_OK(tsr_wcs_read_fits(ctx, low, 0, &wf[1]));
  {
    int n0, n1;
    const char *c0 = tsr_wcs_cards(wf[0], &n0), *c1 = tsr_wcs_cards(wf[1], &n1);
    ASSERT_INT_EQ(n0, n1);
    ASSERT(memcmp(c0, c1, (size_t)n0 * 80) == 0);
  }
  /* Reprojected onto the upper- and lower-case targets: the same keys (a
   * node key hashes the target's cards) and the same pixels. */
  for (int k = 0; k < 2; k++) {
    tsr_graph_t *g = graph_new(ctx);
    tsr_node_t *src = tsr_source_fits(g, k ? low : up, 0);
    ASSERT(src != NULL);
    ASSERT(tsr_node_wcs(src) != NULL);
    tsr_node_t *r0 = tsr_reproject_interp(g, src, wt[0], NULL);
    tsr_node_t *r1 = tsr_reproject_interp(g, src, k ? wt[1] : wb, NULL);
    ASSERT(r0 != NULL && r1 != NULL);
    tsr_node_key(r0, (uint8_t *)(k ? lowkey[0] : upkey[0]));
    tsr_node_key(r1, (uint8_t *)(k ? lowkey[1] : upkey[1]));
    ASSERT_OK(tsr_compute(g, r1, NULL, out[k], sizeof out[k], NULL));
    tsr_graph_free(g);
  }
  ASSERT(memcmp(upkey[0], upkey[1], 16) == 0);
  ASSERT(memcmp(lowkey[0], lowkey[1], 16) == 0);
  ASSERT(memcmp(out[0], out[1], sizeof out[0]) == 0);
  {
    int finite = 0;
    for (int i = 0; i < 40 * 30; i++)
      finite += isfinite(out[0][i]);
    ASSERT(finite > 100);
  }
  for (int k = 0; k < 2; k++) {
    tsr_wcs_free(wt[k]);
    tsr_wcs_free(wf[k]);
  }
  tsr_wcs_free(wb);
  tsr_ctx_free(ctx);
  free(d);
}

/* Fail the k-th allocation for k = 1, 2, ... until a run needs fewer: each
 * time the answer is success or TSR_ENOMEM, and nothing leaks. */
static int oom_k, oom_n, oom_live;
static void *oom_malloc(void *ud, size_t n) {
  (void)ud;
  if (++oom_n == oom_k)
    return NULL;
  void *p = malloc(n);
  oom_live += p != NULL;
  return p;
}
static void *oom_realloc(void *ud, void *p, size_t n) {
  (void)ud;
  if (++oom_n == oom_k)
    return NULL;
  void *q = realloc(p, n);
  oom_live += q != NULL && p == NULL;
  return q;
}
static void oom_free(void *ud, void *p) {
  (void)ud;
  oom_live -= p != NULL;
  free(p);
}

TEST(out_of_memory_is_reported) {
  long naxes[2] = {40, 30};
  float *d = ramp(2, naxes);
  const char *in = th_path("oom.fits"), *out = th_path("oom-out.fits");
  tsr_ctx_options_t opts = {{oom_malloc, oom_realloc, oom_free, NULL}};
  put_image(in, false, FLOAT_IMG, 2, naxes, TFLOAT, d, tan_cards);
  for (oom_k = 1;; oom_k++) {
    tsr_ctx_t *ctx = NULL;
    tsr_graph_t *g = NULL;
    tsr_wcs_t *w = NULL;
    int rc;
    oom_n = 0;
    oom_live = 0;
    unlink(out);
    if (tsr_ctx_new(&ctx, &opts) != 0)
      continue;
    if (tsr_graph_new(ctx, &g) == 0) {
      tsr_node_t *n = tsr_source_fits(g, in, 0);
      rc = n ? tsr_write_fits(g, 1, &n, &out, NULL, NULL) : tsr_graph_status(g);
      if (rc != 0) {
        ASSERT_INT_EQ(rc, TSR_ENOMEM);
        ASSERT_STR_CONTAINS(n ? tsr_errmsg(ctx) : tsr_graph_errmsg(g), "out of memory");
        ASSERT(!file_exists(out));
      }
      tsr_graph_free(g);
    }
    rc = tsr_wcs_parse(ctx, tan_hdr, strlen(tan_hdr), "t", 1, &w);
    if (rc != 0)
      ASSERT_INT_EQ(rc, TSR_ENOMEM);
    else {
      char buf[200];
      double x = 3, y = 4, lon, lat;
      rc = tsr_wcs_describe(ctx, w, buf, sizeof buf);
      ASSERT(rc == 0 || rc == TSR_ENOMEM);
      rc = tsr_wcs_pix2world(ctx, w, 1, &x, &y, &lon, &lat);
      ASSERT(rc == 0 || rc == TSR_ENOMEM);
    }
    tsr_wcs_free(w);
    tsr_ctx_free(ctx);
    if (oom_live != 0)
      th_fail(__FILE__, __LINE__, "failing allocation %d leaks %d blocks", oom_k, oom_live);
    if (oom_n < oom_k)
      break; /* nothing failed: every path was tried */
  }
  ASSERT(oom_k > 10);
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  free(d);
}

/* The SIGBUS guard is per thread: one thread touching a truncated mapping
 * inside its guard over and over while another reads a sound mapping inside
 * its own.  Each fault must come back to the thread that faulted (the old
 * guard kept one process-wide jump buffer and swapped the process's handler
 * around every call, so a fault could jump into the other thread's stack).
 * A fault outside any guard still kills the process with SIGBUS. */
typedef struct {
  const volatile unsigned char *p;
  size_t len;
  int faults, rounds;
  volatile int *stop;
} touch_job;

static int touch_pages(void *arg) {
  touch_job *j = arg;
  unsigned sum = 0;
  for (size_t i = 0; i < j->len; i += 4096)
    sum += j->p[i];
  return (int)(sum & 0);
}

static void *touch_loop(void *arg) {
  touch_job *j = arg;
  while (!*j->stop && j->rounds < 20000) {
    bool bus;
    int rc = tsr__sigbus_guard(touch_pages, j, &bus);
    j->rounds++;
    if (bus && rc == TSR_EIO)
      j->faults++;
  }
  return NULL;
}

TEST(sigbus_guard_is_per_thread) {
  const char *good = th_path("guard-good.bin"), *cut = th_path("guard-cut.bin");
  size_t len = 64 * 4096;
  int fg = open(good, O_RDWR | O_CREAT | O_TRUNC, 0644), fc = open(cut, O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT(fg >= 0 && fc >= 0);
  ASSERT_OK(ftruncate(fg, (off_t)len));
  ASSERT_OK(ftruncate(fc, (off_t)len));
  void *mg = mmap(NULL, len, PROT_READ, MAP_SHARED, fg, 0), *mc = mmap(NULL, len, PROT_READ, MAP_SHARED, fc, 0);
  ASSERT(mg != MAP_FAILED && mc != MAP_FAILED);
  ASSERT_OK(ftruncate(fc, 4096)); /* every page of mc but the first now faults */
  volatile int stop = 0;
  touch_job a = {mg, len, 0, 0, &stop}, b = {mc, len, 0, 0, &stop};
  pthread_t ta, tb;
  ASSERT_OK(pthread_create(&ta, NULL, touch_loop, &a));
  ASSERT_OK(pthread_create(&tb, NULL, touch_loop, &b));
  ASSERT_OK(pthread_join(tb, NULL));
  stop = 1;
  ASSERT_OK(pthread_join(ta, NULL));
  ASSERT_INT_EQ(a.faults, 0);
  ASSERT_INT_EQ(b.faults, b.rounds);
  ASSERT(a.rounds > 0 && b.rounds == 20000);
  /* Outside a guard the fault is fatal, as it would be without tessera. */
  pid_t pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    volatile unsigned char x = ((const volatile unsigned char *)mc)[8192];
    (void)x;
    _exit(0);
  }
  int st;
  ASSERT(waitpid(pid, &st, 0) == pid);
  /* (Under AddressSanitizer its own handler, installed before ours and so
   * called by ours, reports the fault and exits 1.) */
  ASSERT((WIFSIGNALED(st) && WTERMSIG(st) == SIGBUS) || (WIFEXITED(st) && WEXITSTATUS(st) != 0));
  munmap(mg, len);
  munmap(mc, len);
  close(fg);
  close(fc);
}

/* Rewrite the data of fault_path in place (same size, other values), as an
 * editor or a second job would, after the first block of a run. */
static void rewrite_after_first(void *ud, int64_t done, int64_t total) {
  (void)total;
  if (done != 1)
    return;
  int fd = open(fault_path, O_WRONLY);
  ASSERT(fd >= 0);
  for (off_t off = 2880; off < *(const off_t *)ud; off += 4096) {
    unsigned char junk[4] = {0x40, 0x49, 0x0f, 0xdb}; /* 3.14159 as a big-endian float32 */
    ASSERT(pwrite(fd, junk, sizeof junk, off) == (ssize_t)sizeof junk);
  }
  ASSERT_OK(close(fd));
}

/* An input rewritten in place (same size) while a run reads it: the run
 * fails, whether it read copies (float32 by mapping, int16 through cfitsio)
 * or views (bicubic), and stores nothing computed after the change; the
 * graph built again gives the new values, from a cache that holds the old
 * ones.  Before, the run succeeded with old and new values mixed. */
TEST(input_rewritten_while_read_fails_the_run) {
  enum { W = 400, H = 300 };
  static float img[W * H], res[W * H], want[W * H];
  int64_t shape[2] = {W, H};
  char text[512], cdir[4096];
  tsr_ctx_t *ctx = ctx_new();
  tsr_wcs_t *wcs;
  snprintf(text, sizeof text,
           "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
           "CRPIX1 = 200\nCRPIX2 = 150\nCRVAL1 = 10.0\nCRVAL2 = 41.0\nCDELT1 = -0.001\n"
           "CDELT2 = 0.001\n", W, H);
  ASSERT_OK(tsr_wcs_parse(ctx, text, strlen(text), "rewrite", 1, &wcs));
  for (int k = 0; k < W * H; k++)
    img[k] = (float)(k % 977);
  for (int kind = 0; kind < 3; kind++) {
    const char *in = th_path("rewritten.fits");
    tsr_graph_t *g = graph_new(ctx);
    struct stat st;
    if (kind == 1) {
      long nax[2] = {W, H};
      short *iv = malloc(sizeof(short) * W * H);
      for (int k = 0; k < W * H; k++)
        iv[k] = (short)(k % 977);
      unlink(in);
      put_image(in, false, SHORT_IMG, 2, nax, TSHORT, iv, NULL);
      free(iv);
    } else {
      tsr_node_t *src = tsr_source_buffer(g, TSR_F32, 2, shape, img, wcs);
      ASSERT_OK(tsr_write_fits(g, 1, &src, &in, NULL, NULL));
    }
    /* A modification time in the past, so that the rewrite moves it even
     * within the filesystem's clock tick. */
    ASSERT_OK(stat(in, &st));
    struct timespec ts[2] = {st.st_atim, {st.st_mtim.tv_sec - 3600, 0}};
    ASSERT_OK(utimensat(AT_FDCWD, in, ts, 0));
    snprintf(cdir, sizeof cdir, "%s/rewrite-cache-%d", th_tmpdir(), kind);
    tsr_cache_t *cache;
    ASSERT_OK(tsr_cache_open(ctx, cdir, 1 << 30, &cache));

    tsr_node_t *f = tsr_source_fits(g, in, 0), *r;
    if (kind == 2) {
      tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
      io.order = 3;
      io.block[0] = 50, io.block[1] = 30;
      r = tsr_reproject_interp(g, f, wcs, &io);
    } else {
      tsr_map_blocks_opts_t o = TSR_MAP_BLOCKS_OPTS_INIT;
      o.name = "copy";
      o.dtype = TSR_F32;
      o.chunk[0] = 50, o.chunk[1] = 30;
      r = tsr_map_blocks(g, 1, &f, copy_block, NULL, &o);
    }
    ASSERT(r != NULL);
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    off_t size = st.st_size;
    ro.cache = cache;
    ro.progress = rewrite_after_first;
    ro.progress_ud = &size;
    fault_path = in;
    ASSERT_INT_EQ(tsr_compute(g, r, NULL, res, sizeof res, &ro), TSR_EIO);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "rewritten.fits\" changed while it was read");
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "no result computed from it was kept");
    /* The graph built again stands for the new file; the same graph
     * without a cache gives the reference values. */
    tsr_graph_free(g);
    g = graph_new(ctx);
    f = tsr_source_fits(g, in, 0);
    tsr_map_blocks_opts_t o = TSR_MAP_BLOCKS_OPTS_INIT;
    o.name = "copy";
    o.dtype = TSR_F32;
    o.chunk[0] = 50, o.chunk[1] = 30;
    r = tsr_map_blocks(g, 1, &f, copy_block, NULL, &o);
    ASSERT(r != NULL);
    ro.progress = NULL;
    ASSERT_OK(tsr_compute(g, r, NULL, res, sizeof res, &ro));
    ro.cache = NULL;
    ASSERT_OK(tsr_compute(g, r, NULL, want, sizeof want, &ro));
    ASSERT(memcmp(res, want, sizeof res) == 0);
    ASSERT(want[1024] == 3.14159274f || kind == 1);
    tsr_graph_free(g);
    tsr_cache_close(cache);
  }
  tsr_wcs_free(wcs);
  tsr_ctx_free(ctx);
}

/* Files too big to map whole for a run are read with pread (here: every
 * file, through the test hook): the same values as the mapping gives, for
 * float32 and float64 cubes, whole-row and narrow windows, a sparse
 * request (which asks for its rows' pages first), non-finite values made
 * NaN; and a file truncated mid-run is reported as such, never read short. */
TEST(fits_unmapped_files_read_as_mapped_ones) {
  long naxes[3] = {300, 40, 3};
  const long n = 300 * 40 * 3;
  float *d = ramp(3, naxes);
  double *dd = malloc((size_t)n * sizeof *dd);
  float *mapped = malloc((size_t)n * sizeof(double)), *unmapped = malloc((size_t)n * sizeof(double));
  const char *p32 = th_path("unmapped32.fits"), *p64 = th_path("unmapped64.fits");
  d[5] = INFINITY, d[301] = -INFINITY, d[n - 1] = NAN;
  for (long i = 0; i < n; i++)
    dd[i] = (double)d[i] * 1.25;
  put_image(p32, false, FLOAT_IMG, 3, naxes, TFLOAT, d, NULL);
  put_image(p64, false, DOUBLE_IMG, 3, naxes, TDOUBLE, dd, NULL);
  const tsr_region_t regions[] = {
      {{0, 0, 0, 0}, {300, 40, 3, 1}},  /* all */
      {{0, 7, 1, 0}, {300, 30, 3, 1}},  /* whole rows */
      {{17, 3, 0, 0}, {60, 39, 2, 1}},  /* a window */
      {{250, 38, 2, 0}, {253, 40, 3, 1}}, /* sparse and narrow */
  };
  for (int f = 0; f < 2; f++)
    for (size_t k = 0; k < sizeof regions / sizeof regions[0]; k++) {
      size_t bytes = (size_t)tsr_region_size(&regions[k]) * (f ? 8 : 4);
      for (int pass = 0; pass < 2; pass++) {
        tsr_ctx_t *ctx = ctx_new();
        tsr_graph_t *g = graph_new(ctx);
        if (pass == 1)
          tsr__test_hooks.map_nothing = 1;
        tsr_node_t *src = tsr_source_fits(g, f ? p64 : p32, 0);
        ASSERT(src != NULL);
        ASSERT_OK(tsr_compute(g, src, &regions[k], pass ? unmapped : mapped, bytes, NULL));
        tsr__test_hooks.map_nothing = 0;
        tsr_graph_free(g);
        tsr_ctx_free(ctx);
      }
      ASSERT(memcmp(mapped, unmapped, bytes) == 0);
      if (k == 0 && f == 0)
        ASSERT(isnan(unmapped[5]) && isnan(unmapped[301]) && isnan(unmapped[n - 1]) &&
               unmapped[302] == d[302]);
      if (k == 2 && f == 1)
        ASSERT(((double *)unmapped)[0] == dd[3 * 300 + 17]);
    }
  /* Truncated after the first block was read. */
  {
    tsr_ctx_t *ctx = ctx_new();
    tsr_graph_t *g = graph_new(ctx);
    tsr__test_hooks.map_nothing = 1;
    tsr_node_t *src = tsr_source_fits(g, p32, 0);
    tsr_map_blocks_opts_t o = TSR_MAP_BLOCKS_OPTS_INIT;
    o.name = "copy";
    o.dtype = TSR_F32;
    o.chunk[0] = 300, o.chunk[1] = 10, o.chunk[2] = 1;
    tsr_node_t *m = tsr_map_blocks(g, 1, &src, copy_block, NULL, &o);
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    ASSERT(m != NULL);
    ro.progress = fault_after_first;
    fault_path = p32, fault_kind = 1;
    ASSERT_INT_EQ(tsr_compute(g, m, NULL, mapped, (size_t)n * 4, &ro), TSR_EIO);
    fault_kind = 0;
    tsr__test_hooks.map_nothing = 0;
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "unmapped32.fits\" was truncated while being read (reading [");
    tsr_graph_free(g);
    tsr_ctx_free(ctx);
  }
  free(d);
  free(dd);
  free(mapped);
  free(unmapped);
}

/* Inputs the fuzzers found crashing or leaking (tests/fuzz/regress): each
 * must be refused or read without a crash, and, under the sanitizers or
 * valgrind, without a leak. */
TEST(fuzz_regressions) {
  char dir[1024];
  DIR *d;
  struct dirent *e;
  int n = 0;
  snprintf(dir, sizeof dir, "%s/fuzz/regress", th_srcdir());
  d = opendir(dir);
  ASSERT(d != NULL);
  while ((e = readdir(d)) != NULL) {
    char path[2048];
    FILE *f;
    char *buf;
    long len;
    tsr_ctx_t *ctx;
    tsr_wcs_t *w = NULL;
    tsr_graph_t *g;
    if (e->d_name[0] == '.')
      continue;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    f = fopen(path, "rb");
    ASSERT(f != NULL);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)len + 1);
    ASSERT(fread(buf, 1, (size_t)len, f) == (size_t)len);
    fclose(f);
    ASSERT_OK(tsr_ctx_new(&ctx, NULL));
    if (tsr_wcs_parse(ctx, buf, (size_t)len, "fuzz input", 1, &w) == 0) {
      /* As fuzz_hdr does: a reprojection onto itself parses the cards
       * again in ops/ (where one crash was). */
      int64_t shape[2] = {4, 4};
      float img[16] = {0};
      ASSERT_OK(tsr_graph_new(ctx, &g));
      (void)tsr_reproject_interp(g, tsr_source_buffer(g, TSR_F32, 2, shape, img, w), w, NULL);
      tsr_graph_free(g);
      tsr_wcs_free(w);
    }
    w = NULL;
    if (tsr_wcs_read_fits(ctx, path, 0, &w) == 0)
      tsr_wcs_free(w);
    ASSERT_OK(tsr_graph_new(ctx, &g));
    /* As fuzz_fits and fuzz_tiles do: read the pixels of small images
     * (tile-compressed ones are checked tile by tile when read). */
    tsr_node_t *src = tsr_source_fits(g, path, 0), *f32 = src ? tsr_astype(g, src, TSR_F32) : NULL;
    int64_t npix = 1;
    for (int a = 0; f32 && a < 4; a++)
      npix *= tsr_node_shape(f32, a);
    if (f32 && npix <= 65536) {
      float *pix = malloc((size_t)npix * sizeof *pix);
      (void)tsr_compute(g, f32, NULL, pix, (size_t)npix * sizeof *pix, NULL);
      free(pix);
    }
    tsr_graph_free(g);
    tsr_ctx_free(ctx);
    free(buf);
    n++;
  }
  closedir(d);
  ASSERT(n >= 4);
  ASSERT(LEAKS() == 0); /* a forked test's _exit escapes LeakSanitizer's own check */
}

/* wcslib overran a buffer on an unclosed string (found by fuzzing). */
TEST(unclosed_string_value_is_refused) {
  static const char hdr[] = "NAXIS = 2\nNAXIS1 = 10\nNAXIS2 = 8\nCTYPE1 = 'RA\n"
                            "CTYPE2 = 'DEC--TAN'\nCRVAL1 = 30\n";
  static const char bad[] = "NAXIS = 2\nCRVAL1 = 3x0\n";
  tsr_ctx_t *ctx;
  tsr_wcs_t *w = NULL;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT(tsr_wcs_parse(ctx, hdr, strlen(hdr), "t.hdr", 1, &w) == TSR_EWCS);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "t.hdr: line 4: CTYPE1 has a string value with no closing quote");
  ASSERT(tsr_wcs_parse(ctx, bad, strlen(bad), "t.hdr", 0, &w) == TSR_EWCS);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "t.hdr: line 2: CRVAL1 = 3x0 is not a FITS value");
  tsr_ctx_free(ctx);
}

/* wcslib's DSS plate-solution translation read uninitialised memory (an
 * incomplete set made a valid TAN header singular, found by fuzzing): such
 * keywords are left out and the CTYPEn solution is used. */
TEST(dss_keywords_are_left_out) {
  static const char tan[] = "NAXIS = 2\nNAXIS1 = 10\nNAXIS2 = 8\nCTYPE1 = 'RA---TAN'\n"
                            "CTYPE2 = 'DEC--TAN'\nCRVAL1 = 30\nCRVAL2 = 10\nCDELT1 = -0.01\n"
                            "CDELT2 = 0.01\nCRPIX1 = 5\nCRPIX2 = 4\n";
  static const char dss[] = "CNPIX2  = 4\nPLTRAH  = 3\nPPO3    = 127000.\nAMDX1   = 67.1\n"
                            "XPIXELSZ= 25.28\nPLATEID = 'A0X1'\n";
  char both[1024];
  double x[2] = {0, 7.5}, y[2] = {0, 3.25}, lon[2][2], lat[2][2];
  tsr_ctx_t *ctx;
  tsr_wcs_t *a = NULL, *b = NULL;
  snprintf(both, sizeof both, "%s%s", tan, dss);
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_wcs_parse(ctx, tan, strlen(tan), "tan.hdr", 1, &a));
  ASSERT_OK(tsr_wcs_parse(ctx, both, strlen(both), "dss.hdr", 1, &b));
  ASSERT_OK(tsr_wcs_pix2world(ctx, a, 2, x, y, lon[0], lat[0]));
  ASSERT_OK(tsr_wcs_pix2world(ctx, b, 2, x, y, lon[1], lat[1]));
  for (int i = 0; i < 2; i++)
    ASSERT(lon[0][i] == lon[1][i] && lat[0][i] == lat[1][i]);
  tsr_wcs_free(a);
  tsr_wcs_free(b);
  tsr_ctx_free(ctx);
}

TEST_MAIN()
