/* bench-healpix-exact.c -- the exact (flux-conserving) HEALPix methods
 * against bilinear, side by side in one run, in memory, public API only.
 *
 * A generated float32 map (nside 1024, RING, Galactic: smooth field plus
 * hashed noise) in a buffer node, and the ANCHORS sky image (bench.h) with
 * a TAN header about M31.  Cases, each serial, one warm-up then N timed
 * tsr_compute calls of the whole output (a fresh graph each, untimed):
 *
 *   from  map -> S x S TAN image at 20 arcsec/px (map pixels 3.4 arcmin:
 *         about 10 x 10 output pixels each), bilinear and exact;
 *   from_fine  the same at 2 arcsec/px (about 100 x 100 each: the clip
 *         and the inscribed-circle shortcut);
 *   to    the S x S image at 20 arcsec/px -> the nside 1024 map,
 *         bilinear and exact (only the map pixels near the image run).
 *
 * One line per case and method:
 *
 *   bench=healpix_exact case=from method=exact size=512 nside=1024 n=3 median_ms=812.0
 *
 * then a line per case with the ratio exact / bilinear.
 *
 *   bench-healpix-exact [-n REPEATS] [-s SIZE] [-c CASE]
 */
#include <tessera/tessera.h>
#include <uv.h>

#include "bench.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TSR_BENCH_BUILDTYPE
#define TSR_BENCH_BUILDTYPE "unknown"
#endif

#define NSIDE 1024

typedef struct {
  tsr_ctx_t *ctx;
  const float *map;
  const float *img;
  const tsr_wcs_t *img_wcs;
  int64_t size;
  void *dst;
  size_t dst_bytes;
} bench_t;

/* One timed compute of case `cs` with method `exact`; ms, or -1. */
static double run_once(bench_t *b, const char *cs, const tsr_wcs_t *target, int exact) {
  tsr_graph_t *g = NULL;
  tsr_node_t *out = NULL;
  double ms = -1;
  if (tsr_graph_new(b->ctx, &g) != 0)
    return -1;
  if (strcmp(cs, "to") == 0) {
    int64_t shape[2] = {b->size, b->size};
    tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
    o.method = exact ? TSR_TO_HEALPIX_EXACT : TSR_TO_HEALPIX_INTERP;
    o.coordsys = "G";
    tsr_node_t *src = tsr_source_buffer_ref(g, TSR_F32, 2, shape, b->img, b->img_wcs);
    out = tsr_reproject_to_healpix(g, src, NSIDE, &o);
  } else {
    int64_t shape[1] = {12 * (int64_t)NSIDE * NSIDE};
    tsr_from_healpix_opts_t o = TSR_FROM_HEALPIX_OPTS_INIT;
    o.method = exact ? TSR_HEALPIX_EXACT : TSR_HEALPIX_INTERP;
    o.nested = 0;
    o.coordsys = "G";
    tsr_node_t *src = tsr_source_buffer_ref(g, TSR_F32, 1, shape, b->map, NULL);
    out = tsr_reproject_from_healpix(g, src, target, &o);
  }
  if (tsr_graph_status(g) != 0) {
    fprintf(stderr, "bench-healpix-exact: %s\n", tsr_graph_errmsg(g));
    goto out;
  }
  {
    uint64_t t0 = uv_hrtime();
    if (tsr_compute(g, out, NULL, b->dst, b->dst_bytes, NULL) != 0) {
      fprintf(stderr, "bench-healpix-exact: %s\n", tsr_errmsg(b->ctx));
      goto out;
    }
    ms = (double)(uv_hrtime() - t0) / 1e6;
  }
out:
  tsr_graph_free(g);
  return ms;
}

static double median(double *v, int n) {
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
      double t = v[j];
      v[j] = v[j - 1], v[j - 1] = t;
    }
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

int main(int argc, char **argv) {
  int repeats = 3, status = 0;
  const char *only = NULL;
  int64_t size = 512;
  bench_t b = {0};
  char hdr[4096];
  tsr_wcs_t *coarse = NULL, *fine = NULL;
  static const char *const cases[] = {"from", "from_fine", "to"};
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "-n") == 0)
      repeats = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "-s") == 0)
      size = atoll(argv[i + 1]);
    else if (strcmp(argv[i], "-c") == 0)
      only = argv[i + 1];
  }
  if (repeats < 1 || repeats > 100 || size < 16 || size > 8192) {
    fprintf(stderr, "usage: bench-healpix-exact [-n REPEATS (1-100)] [-s SIZE (16-8192)] "
                    "[-c from|from_fine|to]\n");
    return 2;
  }
  printf("# bench-healpix-exact buildtype=%s cpus=%d tessera=%s libs=\"%s\"\n",
         TSR_BENCH_BUILDTYPE, (int)uv_available_parallelism(), tsr_version_string(),
         tsr_library_versions());
  if (strcmp(TSR_BENCH_BUILDTYPE, "release") != 0)
    printf("# warning: not a release build; times are not representative\n");
  if (tsr_ctx_new(&b.ctx, NULL) != 0)
    return 1;
  b.size = size;
  {
    int64_t npix = 12 * (int64_t)NSIDE * NSIDE;
    float *map = malloc(sizeof(float) * (size_t)npix);
    if (map == NULL)
      return 1;
    for (int64_t p = 0; p < npix; p++) {
      uint64_t h = (uint64_t)(p + 1) * 0x9E3779B97F4A7C15ull;
      map[p] = (float)(100.0 + 10.0 * sin((double)p * 1e-5) + (double)(h >> 40) / 16777216.0);
    }
    b.map = map;
  }
  b.img = bench_make_sky(size);
  b.dst_bytes = sizeof(float) * (size_t)(size * size > 12 * NSIDE * NSIDE ? size * size
                                                                             : 12 * NSIDE * NSIDE);
  b.dst = malloc(b.dst_bytes);
  bench_tan_header(hdr, sizeof hdr, size, 20.0, 20.0, 0, 0);
  if (b.img == NULL || b.dst == NULL ||
      tsr_wcs_parse(b.ctx, hdr, strlen(hdr), "bench target", 1, &coarse) != 0)
    return 1;
  bench_tan_header(hdr, sizeof hdr, size, 2.0, 20.0, 0, 0);
  if (tsr_wcs_parse(b.ctx, hdr, strlen(hdr), "bench target", 1, &fine) != 0)
    return 1;
  b.img_wcs = coarse;
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    double med[2];
    if (only && strcmp(only, cases[c]) != 0)
      continue;
    for (int exact = 0; exact < 2; exact++) {
      const tsr_wcs_t *t = strcmp(cases[c], "from_fine") == 0 ? fine : coarse;
      double *ms = calloc((size_t)repeats, sizeof *ms);
      if (ms == NULL || run_once(&b, cases[c], t, exact) < 0) {
        status = 1;
        free(ms);
        continue;
      }
      for (int r = 0; r < repeats; r++)
        if ((ms[r] = run_once(&b, cases[c], t, exact)) < 0)
          status = 1;
      med[exact] = median(ms, repeats);
      printf("bench=healpix_exact case=%s method=%s size=%lld nside=%d n=%d median_ms=%.1f\n",
             cases[c], exact ? "exact" : "bilinear", (long long)size, NSIDE, repeats, med[exact]);
      fflush(stdout);
      free(ms);
    }
    if (status == 0)
      printf("bench=healpix_exact case=%s ratio_exact_over_bilinear=%.1f\n", cases[c],
             med[1] / med[0]);
  }
  tsr_wcs_free(coarse);
  tsr_wcs_free(fine);
  free((void *)b.map);
  free((void *)b.img);
  free(b.dst);
  tsr_ctx_free(b.ctx);
  return status;
}
