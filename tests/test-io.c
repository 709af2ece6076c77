/* test-io.c -- FITS sources and sinks, header files and WCS validation (io/).
 *
 * Fixtures are written here with cfitsio into the harness's scratch
 * directory; every error test checks the exact words of the message.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>
#include <zlib.h>
#include <uv.h>

#include <fitsio.h>

#include "cfitsio.h"
#include "harness.h"
#include "internal.h"
#include "io.h"
#include "tiles.h"

/* Under AddressSanitizer, the leaks of this process so far (a forked test
 * exits with _exit, which LeakSanitizer never sees); 0 in other builds. */
#if defined(__SANITIZE_ADDRESS__)
#define TH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TH_ASAN 1
#endif
#endif
#ifdef TH_ASAN
#include <sanitizer/lsan_interface.h>
#define LEAKS() __lsan_do_recoverable_leak_check()
#else
#define LEAKS() 0
#endif

/* ------------------------------------------------------------------ */
/* Fixtures                                                           */

/* `status` is the caller's cfitsio status variable. */
#define CHECK_FITS(expr)                                                         \
  do {                                                                           \
    if ((expr) != 0) {                                                           \
      char th_t[FLEN_STATUS];                                                    \
      fits_get_errstatus(status, th_t);                                          \
      th_fail(__FILE__, __LINE__, "%s: cfitsio %d (%s)", #expr, status, th_t);   \
    }                                                                            \
  } while (0)

/* Write an image HDU (appending to `path` if `append`) with raw values of
 * `datatype`; `cards` (NULL-terminated, may be NULL) are written as they
 * are, and scaling is switched off for the write so values land raw. */
static void put_image(const char *path, bool append, int bitpix, int naxis, const long *naxes,
                      int datatype, const void *data, const char *const *cards) {
  fitsfile *f = NULL;
  int status = 0;
  long long count = 1;
  if (!append)
    unlink(path);
  if (append)
    CHECK_FITS(fits_open_diskfile(&f, path, READWRITE, &status));
  else
    CHECK_FITS(fits_create_diskfile(&f, path, &status));
  CHECK_FITS(fits_create_img(f, bitpix, naxis, (long *)naxes, &status));
  for (int i = 0; cards && cards[i]; i++)
    CHECK_FITS(fits_write_record(f, cards[i], &status));
  for (int a = 0; a < naxis; a++)
    count *= naxes[a];
  if (data != NULL && count > 0) {
    CHECK_FITS(fits_set_hdustruc(f, &status));
    CHECK_FITS(fits_set_bscale(f, 1.0, 0.0, &status));
    CHECK_FITS(fits_write_img(f, datatype, 1, count, (void *)data, &status));
  }
  CHECK_FITS(fits_close_file(f, &status));
}

/* An x + 100 y + 10000 z float image of the given shape. */
static float *ramp(int naxis, const long *naxes) {
  long n = 1;
  for (int a = 0; a < naxis; a++)
    n *= naxes[a];
  float *d = malloc((size_t)n * sizeof *d);
  for (long i = 0; i < n; i++) {
    long x = i % naxes[0], y = naxis > 1 ? (i / naxes[0]) % naxes[1] : 0;
    long z = naxis > 2 ? i / (naxes[0] * naxes[1]) : 0;
    d[i] = (float)(x + 100 * y + 10000 * z);
  }
  return d;
}

static const char *const tan_cards[] = {
    "CTYPE1  = 'RA---TAN'",      "CTYPE2  = 'DEC--TAN'",      "CRPIX1  = 16.5",
    "CRPIX2  = 10.5",            "CRVAL1  = 10.6847",         "CRVAL2  = 41.26875",
    "CDELT1  = -0.000277777777777778", "CDELT2  = 0.000277777777777778",
    "RADESYS = 'ICRS'",          NULL};

static const char tan_hdr[] = "SIMPLE  = T\n"
                              "NAXIS   = 2\n"
                              "NAXIS1  = 2048\n"
                              "NAXIS2  = 2048\n"
                              "CTYPE1  = 'RA---TAN'\n"
                              "CTYPE2  = 'DEC--TAN'\n"
                              "CRPIX1  = 1024.5\n"
                              "CRPIX2  = 1024.5\n"
                              "CRVAL1  = 10.6847\n"
                              "CRVAL2  = 41.26875\n"
                              "CDELT1  = -0.000277777777777778\n"
                              "CDELT2  = 0.000277777777777778\n"
                              "RADESYS = 'ICRS'\n"
                              "END\n";

static tsr_ctx_t *ctx_new(void) {
  tsr_ctx_t *ctx = NULL;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  return ctx;
}

static tsr_graph_t *graph_new(tsr_ctx_t *ctx) {
  tsr_graph_t *g = NULL;
  ASSERT_OK(tsr_graph_new(ctx, &g));
  return g;
}

static void write_text(const char *path, const char *text, size_t len) {
  FILE *fp = fopen(path, "wb");
  ASSERT(fp != NULL);
  ASSERT(fwrite(text, 1, len, fp) == len);
  fclose(fp);
}

/* Read a whole float image (and its header keywords on request) with cfitsio. */
static float *read_back(const char *path, int *naxis, long naxes[4], int *bitpix) {
  fitsfile *f = NULL;
  int status = 0, anynul = 0;
  long n = 1;
  float nul = NAN;
  naxes[0] = naxes[1] = naxes[2] = naxes[3] = 1;
  CHECK_FITS(fits_open_diskfile(&f, path, READONLY, &status));
  CHECK_FITS(fits_get_img_param(f, 4, bitpix, naxis, naxes, &status));
  for (int a = 0; a < *naxis; a++)
    n *= naxes[a];
  float *d = malloc((size_t)n * sizeof *d);
  CHECK_FITS(fits_read_img(f, TFLOAT, 1, n, &nul, d, &anynul, &status));
  CHECK_FITS(fits_close_file(f, &status));
  return d;
}

static void read_key(const char *path, const char *key, char *value) {
  fitsfile *f = NULL;
  int status = 0;
  CHECK_FITS(fits_open_diskfile(&f, path, READONLY, &status));
  CHECK_FITS(fits_read_keyword(f, key, value, NULL, &status));
  CHECK_FITS(fits_close_file(f, &status));
}

static bool file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}


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

/* ------------------------------------------------------------------ */
/* Hostile tile-compressed images (io/tiles.c)                         */

enum { TNX = 64, TNY = 40 };

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
  };
  char msg[512];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *path = put_tiled("keys.fits", RICE_1, false);
    set_card(path, cases[i].kw, cases[i].card);
    ASSERT(read_tiled(path, msg, sizeof msg) < 0);
    ASSERT_STR_CONTAINS(msg, "keys.fits\" HDU 2");
    ASSERT_STR_CONTAINS(msg, cases[i].why);
  }
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

/* ------------------------------------------------------------------ */
/* Header text                                                        */

static void block_of(char *out, const char *const *cards) {
  size_t n = 0;
  for (int i = 0; cards[i]; i++, n += 80) {
    char c[81];
    snprintf(c, sizeof c, "%-80s", cards[i]);
    memcpy(out + n, c, 80);
  }
  out[n] = '\0';
}

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

/* A celestial TAN header of 12 lines with line `line` (1-based) replaced. */
static const char *const wcs_lines[] = {
    "NAXIS   = 2",          "NAXIS1  = 40",         "NAXIS2  = 30",
    "CTYPE1  = 'RA---TAN'", "CTYPE2  = 'DEC--TAN'", "CRVAL1  = 10.6847",
    "CRVAL2  = 41.26875",   "CRPIX1  = 20.5",       "CRPIX2  = 15.5",
    "CDELT1  = -0.0002",    "CDELT2  = 0.0002",     "CUNIT1  = 'deg'",
    NULL};

static void wcs_text_with(char *buf, size_t cap, int line, const char *repl) {
  size_t n = 0;
  buf[0] = '\0';
  for (int i = 0; wcs_lines[i]; i++)
    n += (size_t)snprintf(buf + n, cap - n, "%s\n", i + 1 == line ? repl : wcs_lines[i]);
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

/* ------------------------------------------------------------------ */
/* Writing                                                            */

static tsr_wcs_t *tan_wcs(tsr_ctx_t *ctx, int nx, int ny) {
  char text[1024];
  tsr_wcs_t *w = NULL;
  snprintf(text, sizeof text,
           "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
           "CRPIX1 = 15.25 / Pixel coordinate of reference point\nCRPIX2 = 10.5\n"
           "CRVAL1 = 10.6847\nCRVAL2 = 41.26875\nCDELT1 = -0.001\nCDELT2 = 0.001\n"
           "BSCALE = 3\nHISTORY kept as it was\n",
           nx, ny);
  ASSERT_OK(tsr_wcs_parse(ctx, text, strlen(text), "tan", 1, &w));
  return w;
}

TEST(write_round_trip) {
  enum { NX = 30, NY = 20 };
  long naxes[2] = {NX, NY};
  float *d = ramp(2, naxes);
  double dd[NX * NY];
  const char *out = th_path("out.fits"), *out64 = th_path("out64.fits"),
             *sub = th_path("sub.fits");
  char v[FLEN_VALUE];
  int naxis, bitpix;
  long got[4];
  int64_t shape[2] = {NX, NY};
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_wcs_t *w = tan_wcs(ctx, NX, NY);
  d[7] = NAN;
  for (int i = 0; i < NX * NY; i++)
    dd[i] = d[i] + 0.25;
  tsr_node_t *n = tsr_source_buffer(g, TSR_F32, 2, shape, d, w);
  tsr_node_t *n64 = tsr_source_buffer(g, TSR_F64, 2, shape, dd, w);
  ASSERT(n && n64);
  write_text(out, "an older file", 13); /* replaced on success */
  ASSERT_OK(tsr_write_fits(g, 1, &n, &out, NULL, NULL));
  float *back = read_back(out, &naxis, got, &bitpix);
  ASSERT_INT_EQ(bitpix, -32);
  ASSERT_INT_EQ(naxis, 2);
  ASSERT_INT_EQ(got[0], NX);
  ASSERT_INT_EQ(got[1], NY);
  for (int i = 0; i < NX * NY; i++)
    if (i == 7)
      ASSERT(isnan(back[i]));
    else
      ASSERT_INT_EQ(back[i], d[i]);
  free(back);
  read_key(out, "CRPIX1", v);
  ASSERT_STR_CONTAINS(v, "15.25");
  read_key(out, "ORIGIN", v);
  ASSERT_STR_CONTAINS(v, "'tessera 0.1.0'");
  {
    fitsfile *f = NULL;
    int status = 0, nkeys = 0;
    char *hdr = NULL;
    CHECK_FITS(fits_open_diskfile(&f, out, READONLY, &status));
    CHECK_FITS(fits_hdr2str(f, 0, NULL, 0, &hdr, &nkeys, &status));
    ASSERT_STR_CONTAINS(hdr, "HISTORY tessera: buffer#1, region [0:30, 0:20]");
    ASSERT_STR_CONTAINS(hdr, "HISTORY kept as it was");
    ASSERT(strstr(hdr, "BSCALE") == NULL);
    ASSERT(strstr(strstr(hdr, "NAXIS2") + 80, "NAXIS") == NULL); /* no second NAXIS set */
    fits_free_memory(hdr, &status);
    CHECK_FITS(fits_close_file(f, &status));
  }
  /* The written header is a valid WCS again. */
  tsr_wcs_t *rw = NULL;
  ASSERT_OK(tsr_wcs_read_fits(ctx, out, 0, &rw));
  tsr_wcs_free(rw);

  ASSERT_OK(tsr_write_fits(g, 1, &n64, &out64, NULL, NULL));
  back = read_back(out64, &naxis, got, &bitpix);
  ASSERT_INT_EQ(bitpix, -64);
  ASSERT_NEAR(back[NX + 1], dd[NX + 1], 1e-6);
  free(back);

  /* A region: NAXISn of the region, CRPIX shifted so the WCS stays right. */
  tsr_region_t r = {{5, 4, 0, 0}, {25, 16, 1, 1}};
  ASSERT_OK(tsr_write_fits(g, 1, &n, &sub, &r, NULL));
  back = read_back(sub, &naxis, got, &bitpix);
  ASSERT_INT_EQ(got[0], 20);
  ASSERT_INT_EQ(got[1], 12);
  for (int y = 0; y < 12; y++)
    for (int x = 0; x < 20; x++)
      ASSERT_INT_EQ(back[y * 20 + x], d[(y + 4) * NX + x + 5]);
  free(back);
  read_key(sub, "CRPIX1", v);
  ASSERT_NEAR(atof(v), 10.25, 0);
  read_key(sub, "CRPIX2", v);
  ASSERT_NEAR(atof(v), 6.5, 0);
  {
    fitsfile *f = NULL;
    int status = 0;
    char card[FLEN_CARD];
    CHECK_FITS(fits_open_diskfile(&f, sub, READONLY, &status));
    CHECK_FITS(fits_read_card(f, "CRPIX1", card, &status));
    ASSERT_STR_CONTAINS(card, "/ Pixel coordinate of reference point");
    CHECK_FITS(fits_close_file(f, &status));
  }
  /* Same sky position at the same data pixel in both files. */
  tsr_wcs_t *wf = NULL, *ws = NULL;
  ASSERT_OK(tsr_wcs_read_fits(ctx, out, 0, &wf));
  ASSERT_OK(tsr_wcs_read_fits(ctx, sub, 0, &ws));
  double xf = 12, yf = 9, xs = 7, ys = 5, l1, b1, l2, b2;
  ASSERT_OK(tsr_wcs_pix2world(ctx, wf, 1, &xf, &yf, &l1, &b1));
  ASSERT_OK(tsr_wcs_pix2world(ctx, ws, 1, &xs, &ys, &l2, &b2));
  ASSERT_NEAR(l1, l2, 1e-12);
  ASSERT_NEAR(b1, b2, 1e-12);
  tsr_wcs_free(wf);
  tsr_wcs_free(ws);
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);

  /* No WCS on the node: no WCS cards, and no CRPIX invented. */
  const char *nowcs = th_path("nowcs-out.fits");
  tsr_node_t *plain = tsr_source_buffer(g, TSR_F32, 2, shape, d, NULL);
  ASSERT_OK(tsr_write_fits(g, 1, &plain, &nowcs, &r, NULL));
  {
    fitsfile *f = NULL;
    int status = 0;
    char val[FLEN_VALUE];
    CHECK_FITS(fits_open_diskfile(&f, nowcs, READONLY, &status));
    fits_read_keyword(f, "CRPIX1", val, NULL, &status);
    ASSERT_INT_EQ(status, KEY_NO_EXIST);
    status = 0;
    fits_clear_errmsg();
    CHECK_FITS(fits_close_file(f, &status));
  }
  tsr_wcs_free(w);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(d);
}

/* A FITS file copied through a source, in bands (a source has no chunk
 * rows, so bands are cut by size: use an image larger than one band). */
TEST(write_fits_source_in_bands) {
  long naxes[2] = {2100, 2200}; /* 18.5 MB of float32: two bands */
  float *d = ramp(2, naxes);
  const char *in = th_path("big.fits"), *out = th_path("big-out.fits");
  int naxis, bitpix;
  long got[4];
  put_image(in, false, FLOAT_IMG, 2, naxes, TFLOAT, d, tan_cards);
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = tsr_source_fits(g, in, 0);
  ASSERT(n != NULL);
  ASSERT_OK(tsr_write_fits(g, 1, &n, &out, NULL, NULL));
  float *back = read_back(out, &naxis, got, &bitpix);
  ASSERT_INT_EQ(got[1], 2200);
  for (long i = 0; i < 2100L * 2200L; i++)
    if (back[i] != d[i])
      th_fail(__FILE__, __LINE__, "pixel %ld: %g vs %g", i, back[i], d[i]);
  free(back);
  free(d);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* Brackets in names are not cfitsio's extended syntax here, and a file can
 * be rewritten from itself (the input closes before the rename). */
TEST(write_over_its_own_input) {
  long naxes[2] = {12, 9};
  float *d = ramp(2, naxes), out[54];
  const char *path = th_path("img[1].fits");
  int naxis, bitpix;
  long got[4];
  put_image(path, false, FLOAT_IMG, 2, naxes, TFLOAT, d, tan_cards);
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = tsr_source_fits(g, path, 0);
  ASSERT(n != NULL);
  ASSERT_STR_CONTAINS(tsr_node_name(n), "(\"img[1].fits\")");
  tsr_region_t r = {{3, 2, 0, 0}, {9, 11, 1, 1}};
  ASSERT_INT_EQ(tsr_write_fits(g, 1, &n, &path, &r, NULL), TSR_ERANGE);
  r.stop[1] = 8;
  ASSERT_OK(tsr_write_fits(g, 1, &n, &path, &r, NULL));
  tsr_graph_free(g);
  float *back = read_back(path, &naxis, got, &bitpix);
  ASSERT_INT_EQ(got[0], 6);
  ASSERT_INT_EQ(got[1], 6);
  {
    fitsfile *f = NULL;
    int status = 0, nkeys = 0;
    char *hdr = NULL, *first;
    CHECK_FITS(fits_open_diskfile(&f, path, READONLY, &status));
    CHECK_FITS(fits_hdr2str(f, 0, NULL, 0, &hdr, &nkeys, &status));
    /* cfitsio's boilerplate at most once, not once per generation. */
    first = strstr(hdr, "COMMENT   FITS (Flexible Image");
    ASSERT(first == NULL || strstr(first + 80, "COMMENT   FITS (Flexible Image") == NULL);
    ASSERT_STR_CONTAINS(hdr, "CRPIX1  =                 13.5");
    fits_free_memory(hdr, &status);
    CHECK_FITS(fits_close_file(f, &status));
  }
  for (int y = 0; y < 6; y++)
    for (int x = 0; x < 6; x++)
      ASSERT_INT_EQ(back[y * 6 + x], d[(y + 2) * 12 + x + 3]);
  free(back);
  /* And read again as a source: same values, through the new header. */
  g = graph_new(ctx);
  n = tsr_source_fits(g, path, 0);
  ASSERT(n != NULL && tsr_node_wcs(n) != NULL);
  ASSERT_OK(tsr_compute(g, n, NULL, out, sizeof out, NULL));
  ASSERT_INT_EQ(out[7], d[3 * 12 + 4]);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
  free(d);
}

/* A two-plane op that computes whole chunks, to check bands follow the
 * chunk grid and that planes of one owner are computed once, together. */
static int gen_calls, gen_fail_at;
static int gen_compute(tsr__task_t *t) {
  const tsr_region_t *r = &t->out;
  if (++gen_calls == gen_fail_at)
    return tsr__err(t->ctx, TSR_EINVAL, "gen: made to fail");
  for (int64_t z = r->start[2]; z < r->stop[2]; z++)
    for (int64_t y = r->start[1]; y < r->stop[1]; y++)
      for (int64_t x = r->start[0]; x < r->stop[0]; x++) {
        size_t o = tsr__task_offset(t, x - r->start[0], y - r->start[1], z - r->start[2], 0);
        float v = (float)(x + 100 * y + 10000 * z);
        if (t->planes[0])
          ((float *)t->planes[0])[o] = v;
        if (t->planes[1])
          ((float *)t->planes[1])[o] = -v;
      }
  return 0;
}
static void gen_encode(const tsr_node_t *n, tsr__buf_t *b) {
  (void)n;
  tsr__buf_put_str(b, "gen");
}
static const tsr__op_t gen_op = {.name = "gen", .version = 1, .compute = gen_compute,
                                 .encode = gen_encode};

static tsr_node_t *gen_node(tsr_graph_t *g) {
  tsr_node_t *n = tsr__node_alloc(g, &gen_op, NULL);
  ASSERT(n != NULL);
  n->ndim = 3;
  n->shape[0] = 23, n->shape[1] = 17, n->shape[2] = 3;
  n->chunk[0] = 7, n->chunk[1] = 5, n->chunk[2] = 2;
  n->n_planes = 2;
  n->dtype = TSR_F32;
  return tsr__node_finish(n);
}

TEST(write_planes_together_by_chunk_rows) {
  const char *pa = th_path("gen-data.fits"), *pb = th_path("gen-foot.fits");
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g), *fp = tsr_footprint(g, n);
  ASSERT(n && fp);
  tsr_node_t *nodes[2] = {n, fp};
  const char *paths[2] = {pa, pb};
  int naxis, bitpix;
  long got[4];

  gen_calls = 0;
  ASSERT_OK(tsr_write_fits(g, 2, nodes, paths, NULL, NULL));
  ASSERT_INT_EQ(gen_calls, 4 * 4 * 2); /* every chunk once, for both planes */
  float *a = read_back(pa, &naxis, got, &bitpix), *b = read_back(pb, &naxis, got, &bitpix);
  ASSERT_INT_EQ(naxis, 3);
  ASSERT_INT_EQ(got[2], 3);
  for (int z = 0; z < 3; z++)
    for (int y = 0; y < 17; y++)
      for (int x = 0; x < 23; x++) {
        ASSERT_INT_EQ(a[(z * 17 + y) * 23 + x], x + 100 * y + 10000 * z);
        ASSERT_INT_EQ(b[(z * 17 + y) * 23 + x], -(x + 100 * y + 10000 * z));
      }
  free(a);
  free(b);

  /* A region: only the chunks meeting it, each once. */
  tsr_region_t r = {{3, 2, 1, 0}, {20, 15, 3, 1}};
  gen_calls = 0;
  ASSERT_OK(tsr_write_fits(g, 2, nodes, paths, &r, NULL));
  ASSERT_INT_EQ(gen_calls, 3 * 3 * 2);
  a = read_back(pa, &naxis, got, &bitpix);
  ASSERT_INT_EQ(got[0], 17);
  ASSERT_INT_EQ(got[1], 13);
  ASSERT_INT_EQ(got[2], 2);
  for (int z = 0; z < 2; z++)
    for (int y = 0; y < 13; y++)
      for (int x = 0; x < 17; x++)
        ASSERT_INT_EQ(a[(z * 13 + y) * 17 + x], (x + 3) + 100 * (y + 2) + 10000 * (z + 1));
  free(a);

  /* The same node to two files shares one computation. */
  tsr_node_t *twice[2] = {n, n};
  gen_calls = 0;
  ASSERT_OK(tsr_write_fits(g, 2, twice, paths, NULL, NULL));
  ASSERT_INT_EQ(gen_calls, 32);
  b = read_back(pb, &naxis, got, &bitpix);
  ASSERT_INT_EQ(b[23 * 17 + 5], 5 + 10000);
  free(b);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

static volatile int cancel_flag;
static int progress_calls;
static int64_t progress_total;
static void cancel_after_3(void *ud, int64_t done, int64_t total) {
  (void)ud;
  progress_calls++;
  progress_total = total;
  if (done >= 3)
    cancel_flag = 1;
}

TEST(write_cancel_leaves_nothing) {
  const char *pa = th_path("cancel-a.fits"), *pb = th_path("cancel-b.fits");
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g), *fp = tsr_footprint(g, n);
  tsr_node_t *nodes[2] = {n, fp};
  const char *paths[2] = {pa, pb};
  tsr_run_opts_t opts = TSR_RUN_OPTS_INIT;
  char buf[32] = "";
  opts.progress = cancel_after_3;
  opts.cancel = &cancel_flag;
  write_text(pa, "previous", 8);
  ASSERT_INT_EQ(tsr_write_fits(g, 2, nodes, paths, NULL, &opts), TSR_ECANCELED);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "canceled");
  ASSERT_INT_EQ(progress_total, 32);
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  ASSERT(!file_exists(pb));
  FILE *f = fopen(pa, "rb");
  ASSERT(f != NULL);
  ASSERT(fread(buf, 1, sizeof buf, f) == 8);
  fclose(f);
  ASSERT(strcmp(buf, "previous") == 0);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST(write_error_mid_run_leaves_nothing) {
  const char *pa = th_path("fail-a.fits"), *pb = th_path("fail-b.fits");
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g), *fp = tsr_footprint(g, n);
  tsr_node_t *nodes[2] = {fp, n};
  const char *paths[2] = {pa, pb};
  gen_calls = 0;
  gen_fail_at = 20; /* after several bands were written */
  ASSERT_INT_EQ(tsr_write_fits(g, 2, nodes, paths, NULL, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "fits: writing \"");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "fail-a.fits\": gen#1 chunk [21:23, 0:5, 2:3]: gen: made to fail");
  ASSERT(!file_exists(pa) && !file_exists(pb));
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  gen_fail_at = 0;

  /* A source whose file changed under the graph. */
  long naxes[2] = {9, 7};
  float *d = ramp(2, naxes);
  const char *in = th_path("changing.fits");
  put_image(in, false, FLOAT_IMG, 2, naxes, TFLOAT, d, NULL);
  tsr_node_t *src = tsr_source_fits(g, in, 0);
  ASSERT(src != NULL);
  put_image(in, false, FLOAT_IMG, 2, naxes, TFLOAT, d, tan_cards);
  /* File times can be coarser than two writes apart: make the change plain. */
  struct timespec ts[2] = {{0, UTIME_OMIT}, {1000000000, 0}};
  ASSERT_OK(utimensat(AT_FDCWD, in, ts, 0));
  ASSERT_INT_EQ(tsr_write_fits(g, 1, &src, &pa, NULL, NULL), TSR_EIO);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "changing.fits\" changed since the graph was built");
  ASSERT(!file_exists(pa));
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  free(d);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST(write_unwritable_fails_before_computing) {
  char dir[4096], path[4200], good[4200];
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g);
  const char *paths[2];
  tsr_node_t *nodes[2] = {n, n};

  snprintf(good, sizeof good, "%s", th_path("fine.fits"));
  snprintf(path, sizeof path, "%s/no/such/dir/x.fits", th_tmpdir());
  paths[0] = good;
  paths[1] = path;
  gen_calls = 0;
  ASSERT_INT_EQ(tsr_write_fits(g, 2, nodes, paths, NULL, NULL), TSR_EIO);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "fits: cannot create \"");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "/no/such/dir/x.fits\": No such file or directory");
  ASSERT_INT_EQ(gen_calls, 0);
  ASSERT(!file_exists(good));
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);

  ASSERT_INT_EQ(tsr_write_fits(g, 1, nodes, (const char *[]){th_tmpdir()}, NULL, NULL), TSR_EIO);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "\" exists and is a directory; expected a regular file");

  paths[1] = good;
  ASSERT_INT_EQ(tsr_write_fits(g, 2, nodes, paths, NULL, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "write_fits: outputs 0 and 1 are the same file");

  if (geteuid() != 0) {
    snprintf(dir, sizeof dir, "%s", th_path("readonly"));
    ASSERT_OK(mkdir(dir, 0755));
    ASSERT_OK(chmod(dir, 0555));
    snprintf(path, sizeof path, "%s/x.fits", dir);
    paths[0] = path;
    ASSERT_INT_EQ(tsr_write_fits(g, 1, nodes, paths, NULL, NULL), TSR_EIO);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "readonly/x.fits\": Permission denied");
    ASSERT_INT_EQ(th_count_temps(dir), 0);
    chmod(dir, 0755);
  }
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* ------------------------------------------------------------------ */
/* Outputs: special files, symbolic links, temporaries, free space    */

static mode_t lstat_type(const char *path) {
  struct stat st;
  ASSERT_OK(lstat(path, &st));
  return st.st_mode & S_IFMT;
}

/* A path of each kind a writer must refuse; `dev` is a private copy of
 * /dev/full when we may make one (root), else /dev/full itself, which only
 * root could replace. */
static int special_paths(const char *paths[4], const char *names[4]) {
  static char fifo[4096], sock[4096], dev[4096], dir[4096];
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  int fd;
  snprintf(fifo, sizeof fifo, "%s", th_path("a-fifo"));
  snprintf(sock, sizeof sock, "%s", th_path("a-socket"));
  snprintf(dir, sizeof dir, "%s", th_path("a-dir"));
  snprintf(dev, sizeof dev, "%s", th_path("a-device"));
  if (access(fifo, F_OK) != 0) {
    ASSERT_OK(mkfifo(fifo, 0644));
    ASSERT_OK(mkdir(dir, 0755));
    ASSERT(strlen(sock) < sizeof sa.sun_path);
    strcpy(sa.sun_path, sock);
    ASSERT((fd = socket(AF_UNIX, SOCK_STREAM, 0)) >= 0);
    ASSERT_OK(bind(fd, (struct sockaddr *)&sa, sizeof sa));
    close(fd);
    if (geteuid() != 0 || mknod(dev, S_IFCHR | 0666, makedev(1, 7)) != 0)
      snprintf(dev, sizeof dev, "/dev/full");
  }
  paths[0] = dev, names[0] = "character device";
  paths[1] = fifo, names[1] = "FIFO";
  paths[2] = sock, names[2] = "socket";
  paths[3] = dir, names[3] = "directory";
  return 4;
}

TEST(outputs_refuse_special_files_before_computing) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g), *fp = tsr_footprint(g, n);
  int64_t shape[2] = {4, 3};
  static float img[12];
  tsr_node_t *flat = tsr_source_buffer(g, TSR_F32, 2, shape, img, NULL);
  const char *paths[4], *names[4], *link = th_path("link-to-special");
  char want[512];
  tsr_wcs_t *wcs;
  ASSERT(fp != NULL && flat != NULL);
  ASSERT_OK(tsr_wcs_parse(ctx, tan_hdr, sizeof tan_hdr - 1, "tan", 1, &wcs));
  int k = special_paths(paths, names);
  for (int i = 0; i < k; i++) {
    mode_t before = lstat_type(paths[i]);
    const char *two[2] = {th_path("beside.fits"), paths[i]};
    tsr_node_t *nodes[2] = {n, fp};
    snprintf(want, sizeof want, "output \"%s\" exists and is a %s; expected a regular file or a new path",
             paths[i], names[i]);
    gen_calls = 0;
    ASSERT_INT_EQ(tsr_write_fits(g, 2, nodes, two, NULL, NULL), TSR_EIO);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "fits: ");
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), want);
    ASSERT_INT_EQ(gen_calls, 0);
    ASSERT(!file_exists(two[0]));
    ASSERT_INT_EQ(tsr_write_png(g, flat, paths[i], NULL), TSR_EIO);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "preview: ");
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), want);
    ASSERT_INT_EQ(tsr_wcs_write_hdr(ctx, wcs, paths[i]), TSR_EIO);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "header: ");
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), want);
    ASSERT_INT_EQ(lstat_type(paths[i]), before);
    /* A link to one is refused the same way, and stays. */
    unlink(link);
    ASSERT_OK(symlink(paths[i], link));
    ASSERT_INT_EQ(tsr_write_fits(g, 1, &n, &link, NULL, NULL), TSR_EIO);
    snprintf(want, sizeof want, "leads to \"%s\", which is a %s;", paths[i], names[i]);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), want);
    ASSERT_INT_EQ(lstat_type(link), S_IFLNK);
    ASSERT_INT_EQ(lstat_type(paths[i]), before);
  }
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  tsr_wcs_free(wcs);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST(outputs_replace_what_a_link_leads_to) {
  char dir[4096], real[4200], chain[4200];
  const char *link = th_path("out-link.fits"), *dang = th_path("dangling.fits");
  const char *made = th_path("made-by-link.fits"), *hdr = th_path("hdr-link.hdr");
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g);
  tsr_wcs_t *wcs, *back;
  int naxis, bitpix;
  long got[4];
  char buf[16] = "";
  snprintf(dir, sizeof dir, "%s", th_path("link-target-dir"));
  ASSERT_OK(mkdir(dir, 0755));
  snprintf(real, sizeof real, "%s/real.fits", dir);
  write_text(real, "previous", 8);
  ASSERT_OK(symlink("link-target-dir/real.fits", link)); /* relative to the link */
  snprintf(chain, sizeof chain, "%s", th_path("chain.fits"));
  ASSERT_OK(symlink("out-link.fits", chain));            /* a link to a link */
  gen_calls = 0, gen_fail_at = 3;
  ASSERT_INT_EQ(tsr_write_fits(g, 1, &n, (const char *[]){chain}, NULL, NULL), TSR_EINVAL);
  gen_fail_at = 0;
  FILE *f = fopen(real, "rb");
  ASSERT(f != NULL && fread(buf, 1, sizeof buf, f) == 8);
  fclose(f);
  ASSERT(strcmp(buf, "previous") == 0); /* a failed run leaves the target alone */
  ASSERT_INT_EQ(lstat_type(chain), S_IFLNK);
  ASSERT_OK(tsr_write_fits(g, 1, &n, (const char *[]){chain}, NULL, NULL));
  ASSERT_INT_EQ(lstat_type(chain), S_IFLNK);
  ASSERT_INT_EQ(lstat_type(link), S_IFLNK);
  ASSERT_INT_EQ(lstat_type(real), S_IFREG);
  float *d = read_back(link, &naxis, got, &bitpix);
  ASSERT(naxis == 3 && got[0] == 23 && got[1] == 17 && d[23 * 4 + 9] == 409.0f);
  free(d);
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()) + th_count_temps(dir), 0);
  /* A dangling link: the file it names is created. */
  ASSERT_OK(symlink("made-by-link.fits", dang));
  ASSERT_OK(tsr_write_fits(g, 1, &n, &dang, NULL, NULL));
  ASSERT_INT_EQ(lstat_type(dang), S_IFLNK);
  ASSERT_INT_EQ(lstat_type(made), S_IFREG);
  /* Header files follow the same rules. */
  ASSERT_OK(tsr_wcs_parse(ctx, tan_hdr, sizeof tan_hdr - 1, "tan", 1, &wcs));
  write_text(real, "previous", 8);
  ASSERT_OK(symlink("link-target-dir/real.fits", hdr));
  ASSERT_OK(tsr_wcs_write_hdr(ctx, wcs, hdr));
  ASSERT_INT_EQ(lstat_type(hdr), S_IFLNK);
  ASSERT_OK(tsr_wcs_read_hdr(ctx, real, &back));
  ASSERT_INT_EQ(tsr_wcs_shape(back, 0), 2048);
  tsr_wcs_free(back);
  tsr_wcs_free(wcs);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* While a file is written, its directory shows no temporary (O_TMPFILE);
 * where the filesystem has none (tsr__test_hooks.no_tmpfile), one named and
 * locked temporary that the run removes or renames. */
static const char *temps_dir;
static int temps_seen;
static void count_temps_now(void *ud, int64_t done, int64_t total) {
  (void)ud, (void)done, (void)total;
  int k = th_count_temps(temps_dir);
  if (k > temps_seen)
    temps_seen = k;
}

TEST(outputs_leave_no_named_temporary_while_written) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g);
  const char *out = th_path("unnamed.fits");
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  temps_dir = th_tmpdir();
  ro.progress = count_temps_now;
  for (int fallback = 0; fallback < 2; fallback++) {
    if (fallback)
      tsr__test_hooks.no_tmpfile = 1;
    for (int jobs = 1; jobs <= 2; jobs++) {
      temps_seen = 0;
      ro.jobs = jobs;
      ASSERT_OK(tsr_write_fits(g, 1, &n, &out, NULL, &ro));
      ASSERT_INT_EQ(temps_seen, fallback);
      ASSERT_INT_EQ(th_count_temps(temps_dir), 0);
      int naxis, bitpix;
      long got[4];
      float *d = read_back(out, &naxis, got, &bitpix);
      ASSERT(d[2 * 23 * 17 + 23 * 16 + 22] == 22 + 1600 + 20000);
      free(d);
    }
    tsr__test_hooks.no_tmpfile = 0;
  }
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* Temporaries left by killed runs (".NAME.tsr-PID.tmp") are removed by the
 * next run writing NAME when their process is gone and their lock free;
 * nothing else is touched. */
TEST(outputs_remove_stale_temporaries_only) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = gen_node(g);
  const char *out = th_path("st.fits");
  char dead[4200], mine[4200], live[4200], other[4200], locked[4200], link[4200], victim[4200];
  /* PIDs above the kernel's limit (2^22) never exist. */
  snprintf(dead, sizeof dead, "%s/.st.fits.tsr-99999999.tmp", th_tmpdir());
  snprintf(mine, sizeof mine, "%s/.st.fits.tsr-%ld.tmp", th_tmpdir(), (long)getpid());
  snprintf(live, sizeof live, "%s/.st.fits.tsr-%ld.tmp", th_tmpdir(), (long)getppid());
  snprintf(other, sizeof other, "%s/.other.fits.tsr-99999999.tmp", th_tmpdir());
  snprintf(locked, sizeof locked, "%s/.st.fits.tsr-99999997.tmp", th_tmpdir());
  snprintf(link, sizeof link, "%s/.st.fits.tsr-99999998.tmp", th_tmpdir());
  snprintf(victim, sizeof victim, "%s", th_path("not-a-temporary"));
  write_text(dead, "x", 1);
  write_text(mine, "x", 1);
  write_text(live, "x", 1);
  write_text(other, "x", 1);
  write_text(locked, "x", 1);
  write_text(victim, "x", 1);
  ASSERT_OK(symlink(victim, link));
  int lfd = open(locked, O_RDONLY);
  ASSERT(lfd >= 0 && flock(lfd, LOCK_EX) == 0); /* a writer still at work, elsewhere */
  tsr__test_hooks.no_tmpfile = 1;
  ASSERT_OK(tsr_write_fits(g, 1, &n, &out, NULL, NULL));
  tsr__test_hooks.no_tmpfile = 0;
  ASSERT(!file_exists(dead) && !file_exists(mine));
  ASSERT(file_exists(live) && file_exists(other) && file_exists(locked) && file_exists(victim));
  ASSERT_INT_EQ(lstat_type(link), S_IFLNK);
  close(lfd);
  ASSERT_OK(tsr_write_fits(g, 1, &n, &out, NULL, NULL));
  ASSERT(!file_exists(locked) && file_exists(live));
  unlink(live), unlink(other), unlink(link), unlink(victim);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* An output bigger than the free space is refused before anything is
 * planned or computed.  (A file size limit keeps a regression from filling
 * the disk.) */
TEST(outputs_that_cannot_fit_are_refused_at_once) {
  struct rlimit rl = {64 << 20, 64 << 20};
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  tsr_node_t *n = tsr__node_alloc(g, &gen_op, NULL);
  const char *pa = th_path("huge.fits"), *pb = th_path("huge-fp.fits");
  signal(SIGXFSZ, SIG_IGN);
  ASSERT_OK(setrlimit(RLIMIT_FSIZE, &rl));
  n->ndim = 2;
  n->shape[0] = n->shape[1] = 1000000;
  n->chunk[0] = n->chunk[1] = 1024;
  n->n_planes = 2;
  n->dtype = TSR_F32;
  ASSERT((n = tsr__node_finish(n)) != NULL);
  tsr_node_t *nodes[2] = {n, tsr_footprint(g, n)};
  const char *paths[2] = {pa, pb};
  gen_calls = 0;
  uint64_t t0 = uv_hrtime();
  ASSERT_INT_EQ(tsr_write_fits(g, 1, nodes, paths, NULL, NULL), TSR_EIO);
  ASSERT(uv_hrtime() - t0 < 1000000000u);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "fits: output \"");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "huge.fits\" needs 4.0 TB, ");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), " free on /");
  ASSERT_INT_EQ(tsr_write_fits(g, 2, nodes, paths, NULL, NULL), TSR_EIO);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "huge.fits\" needs 8.0 TB with the other outputs on that "
                                       "filesystem, ");
  ASSERT_INT_EQ(gen_calls, 0);
  ASSERT(!file_exists(pa) && !file_exists(pb));
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST(write_checks_its_arguments) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx), *g2 = graph_new(ctx);
  int64_t s1[2] = {4, 4}, s2[2] = {4, 5};
  float d[20] = {0};
  tsr_node_t *a = tsr_source_buffer(g, TSR_F32, 2, s1, d, NULL);
  tsr_node_t *b = tsr_source_buffer(g, TSR_F32, 2, s2, d, NULL);
  tsr_node_t *c = tsr_source_buffer(g2, TSR_F32, 2, s1, d, NULL);
  const char *paths[2] = {th_path("a1.fits"), th_path("a2.fits")};
  tsr_node_t *ab[2] = {a, b}, *ac[2] = {a, c};
  ASSERT_INT_EQ(tsr_write_fits(g, 2, ab, paths, NULL, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "has extent [0:4, 0:5] but buffer#1");
  ASSERT_INT_EQ(tsr_write_fits(g, 2, ac, paths, NULL, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "write_fits: node 1 is NULL or from another graph");
  tsr_region_t r = {{0, 0, 0, 0}, {5, 4, 1, 1}};
  ASSERT_INT_EQ(tsr_write_fits(g, 1, ab, paths, &r, NULL), TSR_ERANGE);
  ASSERT(!file_exists(paths[0]));
  ASSERT_INT_EQ(tsr_write_fits(g, 0, ab, paths, NULL, NULL), TSR_EINVAL);
  tsr_graph_free(g);
  tsr_graph_free(g2);
  tsr_ctx_free(ctx);
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

/* Copies its input (a way to read a source in small chunks). */
static int copy_block(void *user, const tsr_block_t *b) {
  (void)user;
  memcpy(b->data, b->inputs[0], (size_t)tsr_region_size(&b->out) * sizeof(float));
  return 0;
}

static const char *fault_path;
static int fault_kind; /* 1: truncate the input; 2: remove the cache directory */
static void fault_after_first(void *ud, int64_t done, int64_t total) {
  (void)total;
  if (done == 1 && fault_kind == 1)
    ASSERT_OK(truncate(fault_path, 2880 * 2));
  if (done == 1 && fault_kind == 2) {
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", (const char *)ud);
    ASSERT(system(cmd) == 0);
  }
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
      tsr_map_blocks_opts_t o = {0};
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
    tsr_map_blocks_opts_t o = {0};
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

/* Faults in the middle of a run: a full disk under the output, the input
 * truncated while it is read, the cache directory removed.  Each gives a
 * clear error or the right result, never a partial output. */
TEST(io_faults_mid_run) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g = graph_new(ctx);
  const char *out = th_path("faulty.fits");
  /* 1. Full disk: the second data write fails. */
  {
    tsr_node_t *n = gen_node(g);
    tsr__test_hooks.write_fail = 2;
    ASSERT_INT_EQ(tsr_write_fits(g, 1, &n, &out, NULL, NULL), TSR_EIO);
    tsr__test_hooks.write_fail = 0;
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "faulty.fits\": No space left on device");
    ASSERT(!file_exists(out));
    ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  }
  /* 2. The input truncated after the first block was read. */
  {
    static float img[200 * 150];
    static float res[200 * 150];
    int64_t shape[2] = {200, 150};
    const char *in = th_path("shrinking.fits");
    for (int k = 0; k < 200 * 150; k++)
      img[k] = (float)k;
    tsr_node_t *src = tsr_source_buffer(g, TSR_F32, 2, shape, img, NULL);
    ASSERT_OK(tsr_write_fits(g, 1, &src, &in, NULL, NULL));
    tsr_node_t *f = tsr_source_fits(g, in, 0);
    tsr_map_blocks_opts_t o = {0};
    o.name = "copy";
    o.dtype = TSR_F32;
    o.chunk[0] = 50, o.chunk[1] = 30;
    tsr_node_t *m = tsr_map_blocks(g, 1, &f, copy_block, NULL, &o);
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    ASSERT(m != NULL);
    ro.progress = fault_after_first;
    fault_path = in, fault_kind = 1;
    int rc = tsr_compute(g, m, NULL, res, sizeof res, &ro);
    fault_kind = 0;
    if (rc == 0)
      ASSERT(memcmp(res, img, sizeof img) == 0); /* read before it shrank */
    else /* by a fault on the mapping, or by the identity check after it */
      ASSERT(strstr(tsr_errmsg(ctx), "was truncated while being read") != NULL ||
             strstr(tsr_errmsg(ctx), "changed while it was read") != NULL);
  }
  /* 2b. The same under a bicubic reprojection, which reads the file in
   * place (a view of the mapping) rather than a copy: the tiles it needs
   * after the first block lie past the new end. */
  {
    enum { W = 600, H = 300 };
    static float img[W * H], res[W * H];
    int64_t shape[2] = {W, H};
    char text[512];
    tsr_wcs_t *wcs;
    const char *in = th_path("shrinking-view.fits");
    for (int k = 0; k < W * H; k++)
      img[k] = (float)(k % 977);
    snprintf(text, sizeof text,
             "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
             "CRPIX1 = 300\nCRPIX2 = 150\nCRVAL1 = 10.0\nCRVAL2 = 41.0\nCDELT1 = -0.001\n"
             "CDELT2 = 0.001\n", W, H);
    ASSERT_OK(tsr_wcs_parse(ctx, text, strlen(text), "view", 1, &wcs));
    tsr_node_t *src = tsr_source_buffer(g, TSR_F32, 2, shape, img, wcs);
    ASSERT_OK(tsr_write_fits(g, 1, &src, &in, NULL, NULL));
    tsr_node_t *f = tsr_source_fits(g, in, 0);
    tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
    io.order = 3;
    io.block[0] = 50, io.block[1] = 30;
    tsr_node_t *r = tsr_reproject_interp(g, f, wcs, &io);
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    ASSERT(r != NULL);
    ro.progress = fault_after_first;
    fault_path = in, fault_kind = 1;
    ASSERT_INT_EQ(tsr_compute(g, r, NULL, res, sizeof res, &ro), TSR_EIO);
    fault_kind = 0;
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "shrinking-view.fits");
    ASSERT(strstr(tsr_errmsg(ctx), "was truncated while it was read") != NULL ||
           strstr(tsr_errmsg(ctx), "changed while it was read") != NULL);
    tsr_wcs_free(wcs);
  }
  /* 3. The cache directory removed after the first block: the run goes on
   * (the cache makes its directories again as it stores) with the right
   * values. */
  {
    char dir[4096];
    static float res2[23 * 17 * 3];
    tsr_cache_t *cache;
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    tsr_node_t *n = gen_node(g);
    snprintf(dir, sizeof dir, "%s", th_path("vanishing-cache"));
    ASSERT_OK(tsr_cache_open(ctx, dir, 1 << 26, &cache));
    ro.cache = cache;
    ro.progress = fault_after_first;
    ro.progress_ud = dir;
    fault_kind = 2;
    gen_calls = 0, gen_fail_at = 0;
    ASSERT_OK(tsr_compute(g, n, NULL, res2, sizeof res2, &ro));
    fault_kind = 0;
    for (int z = 0; z < 3; z++)
      for (int y = 0; y < 17; y++)
        for (int x = 0; x < 23; x++)
          ASSERT(res2[(z * 17 + y) * 23 + x] == (float)(x + 100 * y + 10000 * z));
    tsr_cache_close(cache);
  }
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

/* Inputs the fuzzers found crashing or leaking (tests/fuzz/regress): each
 * must be refused or read without a crash, and, under the sanitizers or
 * valgrind, without a leak. */
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
    tsr_map_blocks_opts_t o = {0};
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
