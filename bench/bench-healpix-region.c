/* bench-healpix-region.c -- reprojection from a HEALPix FITS map in one
 * process: the whole output against a region of it, public API only.
 *
 * A command-line run pays ~9 ms of fixed cost (process start, the header,
 * the target's WCS, the output file) whatever it computes, so a small
 * region can never cost its share of the whole there.  This measures what
 * the library itself spends: the graph (HEALPix source, bilinear
 * reprojection, -j 1) is built once, then the whole output and a centred
 * square region are computed into memory, interleaved, after one warm-up
 * of each (the map's pages in the page cache and mapped), N times each.
 * bench/healpix runs it (its region case) on the map and target it
 * generates.  Output, one parseable line per measurement:
 *
 *   bench=healpix_region case=full size=2048x2048 n=7 median_ms=180.2 cpu_ms=179.8 min_ms=176.0
 *   bench=healpix_region case=region size=256x256 region=896:1152,896:1152 n=7 median_ms=3.1 ...
 *   bench=healpix_region fraction=0.0172 cpu_fraction=0.0170 pixels_fraction=0.0156
 *
 * (medians of wall and CPU time, and the fastest wall time).
 *
 *   bench-healpix-region MAP.fits TARGET.hdr [-n REPEATS (1-1000)] [-r SIDE] [-p]
 *
 * -p (for profilers): only the region, REPEATS times, no timings. */
#include <tessera/tessera.h>
#include <uv.h>

#include "bench.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef TSR_BENCH_BUILDTYPE
#define TSR_BENCH_BUILDTYPE "unknown"
#endif

static double median(double *v, int n) {
  for (int i = 1; i < n; i++) /* insertion sort: n is small */
    for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
      double t = v[j];
      v[j] = v[j - 1], v[j - 1] = t;
    }
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double cpu_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* One timed tsr_compute of `region` (NULL: all): wall ms, and the CPU ms
 * in *cpu (on a shared machine the wall time includes waiting for a CPU);
 * -1 with a message on failure. */
static double timed(tsr_ctx_t *ctx, tsr_graph_t *g, tsr_node_t *out, const tsr_region_t *region,
                    void *dst, size_t bytes, double *cpu) {
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  double c0 = cpu_ms();
  uint64_t t0 = uv_hrtime();
  if (tsr_compute(g, out, region, dst, bytes, &ro) != 0) {
    fprintf(stderr, "bench-healpix-region: %s\n", tsr_errmsg(ctx));
    return -1;
  }
  *cpu = cpu_ms() - c0;
  return (double)(uv_hrtime() - t0) / 1e6;
}

int main(int argc, char **argv) {
  int repeats = 7, profile = 0;
  int64_t side = 256;
  const char *map = NULL, *hdr = NULL;
  tsr_ctx_t *ctx = NULL;
  tsr_graph_t *g = NULL;
  tsr_wcs_t *target = NULL;
  float *dst = NULL;
  double *full_ms = NULL, *reg_ms = NULL, *full_cpu = NULL, *reg_cpu = NULL, warm;
  int rc = 1;

  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
      repeats = atoi(argv[++i]);
    else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc)
      side = atoll(argv[++i]);
    else if (strcmp(argv[i], "-p") == 0)
      profile = 1;
    else if (argv[i][0] != '-' && map == NULL)
      map = argv[i];
    else if (argv[i][0] != '-' && hdr == NULL)
      hdr = argv[i];
    else
      map = NULL, i = argc;
  }
  if (map == NULL || hdr == NULL || repeats < 1 || repeats > 1000 || side < 1) {
    fprintf(stderr, "usage: bench-healpix-region MAP.fits TARGET.hdr [-n REPEATS (1-1000)] "
                    "[-r SIDE (>= 1)] [-p]\n");
    return 2;
  }
  printf("# bench-healpix-region buildtype=%s tessera=%s map=%s\n", TSR_BENCH_BUILDTYPE,
         tsr_version_string(), map);
  if (strcmp(TSR_BENCH_BUILDTYPE, "release") != 0)
    printf("# warning: not a release build; times are not representative\n");
  if (tsr_ctx_new(&ctx, NULL) != 0 || tsr_graph_new(ctx, &g) != 0)
    goto out;
  if (tsr_wcs_read_hdr(ctx, hdr, &target) != 0) {
    fprintf(stderr, "bench-healpix-region: %s\n", tsr_errmsg(ctx));
    goto out;
  }
  tsr_node_t *src = tsr_source_healpix(g, map, NULL);
  tsr_node_t *out = tsr_reproject_from_healpix(g, src, target, NULL);
  if (out == NULL) {
    fprintf(stderr, "bench-healpix-region: %s\n", tsr_graph_errmsg(g));
    goto out;
  }
  tsr_region_t all = tsr_region_of(out), reg = all;
  int64_t nx = all.stop[0], ny = all.stop[1];
  if (side > nx || side > ny) {
    fprintf(stderr, "bench-healpix-region: region side %lld is larger than the output "
                    "(%lld x %lld)\n", (long long)side, (long long)nx, (long long)ny);
    goto out;
  }
  /* Centred as bench/healpix's CLI region (1-based 897:1152 of 2048). */
  reg.start[0] = nx / 2 - side / 2, reg.stop[0] = reg.start[0] + side;
  reg.start[1] = ny / 2 - side / 2, reg.stop[1] = reg.start[1] + side;
  size_t bytes = (size_t)tsr_region_size(&all) * sizeof(float);
  dst = malloc(bytes);
  full_ms = malloc(sizeof(double) * (size_t)repeats * 4);
  if (dst == NULL || full_ms == NULL)
    goto out;
  reg_ms = full_ms + repeats, full_cpu = reg_ms + repeats, reg_cpu = full_cpu + repeats;
  if (profile) {
    for (int i = 0; i < repeats; i++)
      if (timed(ctx, g, out, &reg, dst, bytes, &warm) < 0)
        goto out;
    rc = 0;
    goto out;
  }
  if (timed(ctx, g, out, NULL, dst, bytes, &warm) < 0 ||
      timed(ctx, g, out, &reg, dst, bytes, &warm) < 0)
    goto out;
  for (int i = 0; i < repeats; i++)
    if ((full_ms[i] = timed(ctx, g, out, NULL, dst, bytes, &full_cpu[i])) < 0 ||
        (reg_ms[i] = timed(ctx, g, out, &reg, dst, bytes, &reg_cpu[i])) < 0)
      goto out;
  double fmed = median(full_ms, repeats), rmed = median(reg_ms, repeats);
  double fcpu = median(full_cpu, repeats), rcpu = median(reg_cpu, repeats);
  printf("bench=healpix_region case=full size=%lldx%lld n=%d median_ms=%.2f cpu_ms=%.2f "
         "min_ms=%.2f\n", (long long)nx, (long long)ny, repeats, fmed, fcpu, full_ms[0]);
  printf("bench=healpix_region case=region size=%lldx%lld region=%lld:%lld,%lld:%lld n=%d "
         "median_ms=%.3f cpu_ms=%.3f min_ms=%.3f\n",
         (long long)side, (long long)side, (long long)reg.start[0], (long long)reg.stop[0],
         (long long)reg.start[1], (long long)reg.stop[1], repeats, rmed, rcpu, reg_ms[0]);
  printf("bench=healpix_region fraction=%.4f cpu_fraction=%.4f pixels_fraction=%.4f\n",
         rmed / fmed, rcpu / fcpu, (double)(side * side) / (double)(nx * ny));
  rc = 0;
out:
  free(full_ms);
  free(dst);
  tsr_graph_free(g);
  tsr_wcs_free(target);
  tsr_ctx_free(ctx);
  return rc;
}
