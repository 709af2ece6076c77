/* sample.c -- a deterministic synthetic sky for the demo, the README and the
 * benchmarks: a 2048 x 2048 TAN image of the Orion Nebula's coordinates in
 * ICRS at 1 arcsec/px, and a target in Galactic ZEA at 1.2 arcsec/px, so
 * the demo changes projection, frame, scale and orientation at once.  The
 * image is written through the public API (a buffer node written with
 * tsr_write_fits), like any user program would. */
#include "sample.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <tessera/tessera.h>

#define N 2048

/* xorshift64*: the same numbers on every machine. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static double urand(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return (double)((rng_state * 2685821657736338717ull) >> 11) * (1.0 / 9007199254740992.0);
}
static double nrand(void) {
  double u = urand(), v = urand();
  if (u < 1e-300)
    u = 1e-300;
  return sqrt(-2.0 * log(u)) * cos(2.0 * M_PI * v);
}

static void add_gaussian(float *img, double cx, double cy, double flux, double sigma) {
  int r = (int)ceil(4 * sigma);
  double norm = flux / (2 * M_PI * sigma * sigma);
  for (int y = (int)cy - r; y <= (int)cy + r; y++) {
    if (y < 0 || y >= N)
      continue;
    for (int x = (int)cx - r; x <= (int)cx + r; x++) {
      if (x < 0 || x >= N)
        continue;
      double dx = x - cx, dy = y - cy;
      img[(size_t)y * N + x] += (float)(norm * exp(-(dx * dx + dy * dy) / (2 * sigma * sigma)));
    }
  }
}

static void add_galaxy(float *img, double cx, double cy, double amp, double re, double q,
                       double pa) {
  int r = (int)(6 * re);
  double c = cos(pa), s = sin(pa);
  for (int y = (int)cy - r; y <= (int)cy + r; y++) {
    if (y < 0 || y >= N)
      continue;
    for (int x = (int)cx - r; x <= (int)cx + r; x++) {
      if (x < 0 || x >= N)
        continue;
      double dx = x - cx, dy = y - cy, u = c * dx + s * dy, v = (-s * dx + c * dy) / q;
      double rr = sqrt(u * u + v * v) / re;
      img[(size_t)y * N + x] += (float)(amp * exp(-7.67 * (pow(rr, 0.25) - 1.0)) * 0.001);
    }
  }
}

static const char sky_header[] =
    "SIMPLE  =                    T\n"
    "BITPIX  =                  -32\n"
    "NAXIS   =                    2\n"
    "NAXIS1  =                 2048\n"
    "NAXIS2  =                 2048\n"
    "OBJECT  = 'tessera sample sky'\n"
    "BUNIT   = 'adu     '\n"
    "CTYPE1  = 'RA---TAN'\n"
    "CTYPE2  = 'DEC--TAN'\n"
    "CRVAL1  =              83.8221\n"
    "CRVAL2  =              -5.3911\n"
    "CRPIX1  =               1024.5\n"
    "CRPIX2  =               1024.5\n"
    "CDELT1  = -2.7777777777778E-04\n"
    "CDELT2  =  2.7777777777778E-04\n"
    "CUNIT1  = 'deg     '\n"
    "CUNIT2  = 'deg     '\n"
    "RADESYS = 'ICRS    '\n";

static const char target_header[] =
    "SIMPLE  =                    T\n"
    "BITPIX  =                  -32\n"
    "NAXIS   =                    2\n"
    "NAXIS1  =                 1800\n"
    "NAXIS2  =                 1800\n"
    "CTYPE1  = 'GLON-ZEA'\n"
    "CTYPE2  = 'GLAT-ZEA'\n"
    "CRVAL1  =             209.0137\n"
    "CRVAL2  =             -19.3816\n"
    "CRPIX1  =                900.5\n"
    "CRPIX2  =                900.5\n"
    "CDELT1  = -3.3333333333333E-04\n"
    "CDELT2  =  3.3333333333333E-04\n"
    "CUNIT1  = 'deg     '\n"
    "CUNIT2  = 'deg     '\n"
    "END\n";

int tsr_cli_sample_write(const char *dir, char *msg, size_t cap) {
  tsr_ctx_t *ctx = NULL;
  tsr_graph_t *g = NULL;
  tsr_wcs_t *wcs = NULL, *twcs = NULL;
  tsr_node_t *node;
  float *img = NULL;
  char path[4096], tpath[4096];
  int64_t shape[2] = {N, N};
  int rc = -1;

  if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
    snprintf(msg, cap, "sample: cannot create directory \"%s\": %s", dir, strerror(errno));
    return -1;
  }
  img = malloc((size_t)N * N * sizeof *img);
  if (img == NULL || tsr_ctx_new(&ctx, NULL) != 0) {
    snprintf(msg, cap, "sample: out of memory");
    goto out;
  }
  rng_state = 0x9E3779B97F4A7C15ull;
  /* Sky background with a gentle gradient, and read noise. */
  for (int y = 0; y < N; y++)
    for (int x = 0; x < N; x++)
      img[(size_t)y * N + x] = (float)(100.0 + 0.01 * x - 0.005 * y + 2.0 * nrand());
  /* A nebula: a few broad overlapping Gaussians near the centre. */
  for (int k = 0; k < 12; k++)
    add_gaussian(img, 1024 + 300 * nrand(), 1024 + 300 * nrand(), 4e6 * (0.5 + urand()),
                 80 + 120 * urand());
  /* Stars: a power law in flux, a 1.8 px seeing disc. */
  for (int k = 0; k < 4000; k++)
    add_gaussian(img, urand() * N, urand() * N, 200.0 * pow(urand() + 1e-3, -1.5), 1.8);
  for (int k = 0; k < 6; k++)
    add_galaxy(img, 200 + urand() * (N - 400), 200 + urand() * (N - 400), 4000 * (0.5 + urand()),
               8 + 20 * urand(), 0.3 + 0.6 * urand(), M_PI * urand());

  if (tsr_wcs_parse(ctx, sky_header, sizeof sky_header - 1, "sample sky header", 1, &wcs) != 0 ||
      tsr_graph_new(ctx, &g) != 0) {
    snprintf(msg, cap, "sample: %s", tsr_errmsg(ctx));
    goto out;
  }
  node = tsr_source_buffer_ref(g, TSR_F32, 2, shape, img, wcs);
  if (node == NULL) {
    snprintf(msg, cap, "sample: %s", tsr_graph_errmsg(g));
    goto out;
  }
  snprintf(path, sizeof path, "%s/%s", dir, TSR_SAMPLE_IMAGE);
  {
    const char *paths[1] = {path};
    if (tsr_write_fits(g, 1, &node, paths, NULL, NULL) != 0) {
      snprintf(msg, cap, "sample: %s", tsr_errmsg(ctx));
      goto out;
    }
  }
  snprintf(tpath, sizeof tpath, "%s/%s", dir, TSR_SAMPLE_TARGET);
  if (tsr_wcs_parse(ctx, target_header, sizeof target_header - 1, "sample target header", 1,
                    &twcs) != 0 ||
      tsr_wcs_write_hdr(ctx, twcs, tpath) != 0) {
    snprintf(msg, cap, "sample: %s", tsr_errmsg(ctx));
    goto out;
  }
  snprintf(msg, cap, "wrote %s (2048 x 2048 float32, TAN, ICRS) and %s (1800 x 1800, ZEA, Galactic)",
           path, tpath);
  rc = 0;
out:
  tsr_graph_free(g);
  tsr_wcs_free(wcs);
  tsr_wcs_free(twcs);
  tsr_ctx_free(ctx);
  free(img);
  return rc;
}
