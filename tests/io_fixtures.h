/* io_fixtures.h -- what the io tests (test-fits.c, test-header.c,
 * test-write.c) share: cfitsio-written images, contexts, scratch files, the
 * fault hooks, and the leak check under AddressSanitizer.  Static helpers,
 * included by each test program; one may leave some unused. */
#ifndef TSR_TESTS_IO_FIXTURES_H
#define TSR_TESTS_IO_FIXTURES_H

#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-variable"

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

static bool file_exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
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

#endif
