/* bench-cache.c -- the chunk cache: a second request of a cached region
 * against computing it, decompression throughput, compression ratio and
 * speed.  Public API of tessera only (libzstd is used directly for one
 * reference number, the data plane's ratio alone).
 *
 * Data: by default the bench-interp case in memory (a 2048 x 2048 float32
 * TAN sky, smooth + noise, onto a 2048 x 2048 TAN target rotated 30 deg,
 * scale x1.1, shifted); with -i FILE -t HDR a FITS image and a target header
 * instead (e.g. the files of `tessera sample DIR`).  For each method
 * (interp, adaptive, exact), in one run:
 *
 *   nocache   tsr_compute of the region without a cache (median of -c runs)
 *   cold      the same with an empty cache: computes and stores every chunk
 *   warm      the same again, N times: every chunk is a hit (median)
 *
 * and one line per method:
 *
 *   bench=cache method=exact size=2048x2048 jobs=1 nocache_ms=.. cold_ms=.. warm_ms=..
 *     speedup=.. decomp_GBps=.. out_GBps=.. ratio=.. data_ratio=.. comp_MBps=.. entries=..
 *
 * speedup = nocache / warm; decomp_GBps = bytes of chunks decompressed (the
 * data plane of every chunk meeting the region) per second of the warm request; out_GBps = bytes of the requested
 * output per second; ratio = raw / on-disk bytes of the cache (headers and
 * the footprint plane included); data_ratio = the data plane alone,
 * byte-shuffled and zstd level 1 per 512^2 chunk; comp_MBps = raw bytes
 * stored per second of shuffling + compressing + writing.
 *
 *   bench-cache [-n REPEATS] [-c NOCACHE_REPEATS] [-s SIZE] [-m METHOD] [-j JOBS]
 *               [-d CACHEDIR] [-i FITS -t HDR] [-r X0:X1,Y0:Y1 (0-based, half-open)]
 */
#include <tessera/tessera.h>
#include <uv.h>
#include <zstd.h>

#include "bench.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef TSR_BENCH_BUILDTYPE
#define TSR_BENCH_BUILDTYPE "unknown"
#endif

static uint64_t median(uint64_t *t, int n)
{
  qsort(t, (size_t)n, sizeof *t, bench_cmp_u64);
  return t[n / 2];
}

typedef struct {
  tsr_ctx_t *ctx;
  const tsr_wcs_t *in_wcs, *out_wcs;
  const float *data;        /* in-memory input, or NULL with fits_path */
  int64_t n;
  const char *fits_path;
  int method;               /* 0 interp, 1 adaptive, 2 exact */
  int jobs;
  tsr_region_t region;
  int has_region;
  void *dst;
  size_t dst_bytes;
} bench_t;

static const char *const method_names[3] = {"interp", "adaptive", "exact"};

/* Build a fresh graph (untimed) and compute the region once; *ns = time of
 * tsr_compute alone, *out_bytes = bytes of the region. */
static int run_once(bench_t *b, tsr_cache_t *cache, uint64_t *ns, size_t *out_bytes)
{
  tsr_graph_t *g = NULL;
  tsr_node_t *src, *out = NULL;
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  int rc = tsr_graph_new(b->ctx, &g);
  if (rc != 0)
    return rc;
  if (b->fits_path) {
    src = tsr_source_fits(g, b->fits_path, 0);
  } else {
    int64_t shape[2] = {b->n, b->n};
    src = tsr_source_buffer_ref(g, TSR_F32, 2, shape, b->data, b->in_wcs);
  }
  if (b->method == 0) {
    out = tsr_reproject_interp(g, src, b->out_wcs, NULL);
  } else if (b->method == 1) {
    out = tsr_reproject_adaptive(g, src, b->out_wcs, NULL);
  } else {
    out = tsr_reproject_exact(g, src, b->out_wcs, NULL);
  }
  if (!out || tsr_graph_status(g) != 0) {
    printf("# building the graph: %s\n", tsr_graph_errmsg(g));
    tsr_graph_free(g);
    return -1;
  }
  tsr_region_t r = b->has_region ? b->region : tsr_region_of(out);
  size_t need = (size_t)tsr_region_size(&r) * tsr_dtype_size(tsr_node_dtype(out));
  if (need > b->dst_bytes) {
    printf("# output needs %zu bytes, buffer has %zu\n", need, b->dst_bytes);
    tsr_graph_free(g);
    return -1;
  }
  ro.jobs = b->jobs == 0 ? TSR_JOBS_PER_CPU : b->jobs; /* -j 0: one per CPU, as the CLI's */
  ro.cache = cache;
  uint64_t t0 = uv_hrtime();
  rc = tsr_compute(g, out, &r, b->dst, need, &ro);
  uint64_t t1 = uv_hrtime();
  if (rc != 0)
    printf("# tsr_compute: %s\n", tsr_errmsg(b->ctx));
  tsr_graph_free(g);
  *ns = t1 - t0;
  *out_bytes = need;
  return rc;
}

/* The data plane alone (in dst, float32, w x h): byte-shuffled and zstd
 * level 1 with a checksum per 512 x 512 chunk, as the cache would store it
 * without the footprint. */
static double data_plane_ratio(const float *d, int64_t w, int64_t h)
{
  size_t raw = 0, zip = 0, cap = ZSTD_compressBound(512 * 512 * 4);
  unsigned char *sh = malloc(512 * 512 * 4), *z = malloc(cap);
  ZSTD_CCtx *cc = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 1);
  ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
  for (int64_t y0 = 0; y0 < h; y0 += 512)
    for (int64_t x0 = 0; x0 < w; x0 += 512) {
      int64_t cw = w - x0 < 512 ? w - x0 : 512, ch = h - y0 < 512 ? h - y0 : 512;
      size_t n = (size_t)(cw * ch), k = 0;
      for (int64_t y = y0; y < y0 + ch; y++)
        for (int64_t x = x0; x < x0 + cw; x++, k++) {
          const unsigned char *p = (const unsigned char *)&d[y * w + x];
          for (int b = 0; b < 4; b++)
            sh[(size_t)b * n + k] = p[b];
        }
      size_t zs = ZSTD_compress2(cc, z, cap, sh, n * 4);
      if (!ZSTD_isError(zs)) {
        raw += n * 4;
        zip += zs + 128;
      }
    }
  ZSTD_freeCCtx(cc);
  free(sh);
  free(z);
  return zip ? (double)raw / (double)zip : 0.0;
}

static void usage(void)
{
  fprintf(stderr, "usage: bench-cache [-n REPEATS] [-c NOCACHE_REPEATS] [-s SIZE] [-m METHOD] "
                  "[-j JOBS] [-d CACHEDIR] [-i FITS -t HDR] [-r X0:X1,Y0:Y1]\n");
  exit(2);
}

int main(int argc, char **argv)
{
  int repeats = 7, cold_repeats = 1, only = -1, jobs = 1;
  int64_t n = 2048;
  const char *dir = NULL, *fits = NULL, *hdr = NULL, *region = NULL;
  char dirbuf[1024];
  for (int i = 1; i < argc; i++) {
    if (i + 1 >= argc)
      usage();
    if (!strcmp(argv[i], "-n"))
      repeats = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-c"))
      cold_repeats = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-s"))
      n = atoll(argv[++i]);
    else if (!strcmp(argv[i], "-j"))
      jobs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-d"))
      dir = argv[++i];
    else if (!strcmp(argv[i], "-i"))
      fits = argv[++i];
    else if (!strcmp(argv[i], "-t"))
      hdr = argv[++i];
    else if (!strcmp(argv[i], "-r"))
      region = argv[++i];
    else if (!strcmp(argv[i], "-m")) {
      const char *m = argv[++i];
      for (int k = 0; k < 3; k++)
        if (!strcmp(m, method_names[k]))
          only = k;
      if (only < 0)
        usage();
    } else
      usage();
  }
  if (repeats < 1 || cold_repeats < 1 || n < 16 || jobs < 0 || (fits == NULL) != (hdr == NULL))
    usage();
  if (dir == NULL) {
    const char *t = getenv("TMPDIR");
    snprintf(dirbuf, sizeof dirbuf, "%s/tessera-bench-cache.%ld", t ? t : "/tmp", (long)uv_os_getpid());
    dir = dirbuf;
  }

  uv_cpu_info_t *cpus = NULL;
  int ncpu = 0;
  const char *model = "unknown";
  if (uv_cpu_info(&cpus, &ncpu) == 0 && ncpu > 0)
    model = cpus[0].model;
  printf("# bench-cache buildtype=%s cpus=%d cpu=\"%s\" tessera=%s libuv=%s zstd=%s cache=%s\n",
         TSR_BENCH_BUILDTYPE, ncpu, model, tsr_version_string(), uv_version_string(),
         ZSTD_versionString(), dir);
  if (cpus)
    uv_free_cpu_info(cpus, ncpu);
  if (!strcmp(TSR_BENCH_BUILDTYPE, "debug") || !strcmp(TSR_BENCH_BUILDTYPE, "plain"))
    printf("# WARNING: %s build: timings are not representative; use buildtype=release\n",
           TSR_BENCH_BUILDTYPE);
  fflush(stdout);

  int status = 0;
  tsr_ctx_t *ctx = NULL;
  tsr_wcs_t *win = NULL, *wout = NULL;
  float *data = NULL;
  if (tsr_ctx_new(&ctx, NULL) != 0)
    return 1;
  if (fits) {
    if (tsr_wcs_read_hdr(ctx, hdr, &wout) != 0) {
      printf("# %s\n", tsr_errmsg(ctx));
      return 1;
    }
  } else {
    char in_hdr[4096], out_hdr[4096];
    bench_tan_header(in_hdr, sizeof in_hdr, n, 1.0, 0.0, 0.0, 0.0);
    bench_tan_header(out_hdr, sizeof out_hdr, n, 1.1, 30.0, 0.05 * (double)n, 0.03 * (double)n);
    data = bench_make_sky(n);
    if (data == NULL || tsr_wcs_parse(ctx, in_hdr, strlen(in_hdr), "input", 1, &win) != 0 ||
        tsr_wcs_parse(ctx, out_hdr, strlen(out_hdr), "target", 1, &wout) != 0) {
      printf("# setup: %s\n", tsr_errmsg(ctx));
      return 1;
    }
  }
  int64_t ow = tsr_wcs_shape(wout, 0), oh = tsr_wcs_shape(wout, 1);
  size_t dst_bytes = (size_t)(ow * oh) * sizeof(double);
  bench_t b = {ctx, win, wout, data, n, fits, 0, jobs, {{0}, {0}}, 0, malloc(dst_bytes), dst_bytes};
  if (region) {
    long long x0, x1, y0, y1;
    if (sscanf(region, "%lld:%lld,%lld:%lld", &x0, &x1, &y0, &y1) != 4)
      usage();
    tsr_region_t r = {{x0, y0, 0, 0}, {x1, y1, 1, 1}};
    b.region = r;
    b.has_region = 1;
  }
  uint64_t *t = malloc((size_t)(repeats > cold_repeats ? repeats : cold_repeats) * sizeof *t);

  for (int m = 0; m < 3; m++) {
    if (only >= 0 && m != only)
      continue;
    tsr_cache_t *cache = NULL;
    tsr_cache_stats_t st0, st1, st2;
    uint64_t ns, nocache, cold, warm;
    size_t ob = 0;
    int rc;
    b.method = m;
    rc = run_once(&b, NULL, &ns, &ob); /* warm-up: page cache, code */
    for (int r = 0; rc == 0 && r < cold_repeats; r++)
      rc = run_once(&b, NULL, &t[r], &ob);
    if (rc != 0) {
      status = 1;
      continue;
    }
    nocache = median(t, cold_repeats);
    if (tsr_cache_open(ctx, dir, UINT64_C(1) << 34, &cache) != 0 || tsr_cache_clear(cache) != 0) {
      printf("# cache: %s\n", tsr_errmsg(ctx));
      status = 1;
      break;
    }
    tsr_cache_stats(cache, &st0);
    rc = run_once(&b, cache, &cold, &ob);
    tsr_cache_stats(cache, &st1);
    double data_ratio = data_plane_ratio(b.dst, b.has_region ? b.region.stop[0] - b.region.start[0] : ow,
                                         b.has_region ? b.region.stop[1] - b.region.start[1] : oh);
    for (int r = 0; rc == 0 && r < repeats; r++)
      rc = run_once(&b, cache, &t[r], &ob);
    tsr_cache_stats(cache, &st2);
    if (rc != 0 || st2.session_hits - st1.session_hits != (uint64_t)repeats * st1.entries ||
        st2.warnings) {
      printf("# %s: warm runs did not hit every chunk (%llu hits, %llu entries, warning \"%s\")\n",
             method_names[m], (unsigned long long)(st2.session_hits - st1.session_hits),
             (unsigned long long)st1.entries, tsr_cache_warning(cache));
      status = 1;
    }
    warm = median(t, repeats);
    /* What a warm request decompresses: the data plane of every chunk
     * meeting the region (the footprint is a frame of its own, not read). */
    double raw = (double)st1.raw_bytes / 2.0;
    double comp_s = st1.session_compress_s - st0.session_compress_s;
    printf("bench=cache method=%s size=%lldx%lld jobs=%d n=%d nocache_ms=%.2f cold_ms=%.2f "
           "warm_ms=%.3f speedup=%.1f decomp_GBps=%.2f out_GBps=%.2f ratio=%.3f data_ratio=%.3f "
           "comp_MBps=%.0f entries=%llu disk_MB=%.2f raw_MB=%.2f\n",
           method_names[m], (long long)ow, (long long)oh, jobs, repeats, (double)nocache / 1e6,
           (double)cold / 1e6, (double)warm / 1e6, (double)nocache / (double)warm,
           raw / (double)warm, (double)ob / (double)warm, st1.ratio, data_ratio,
           comp_s > 0 ? (double)(st1.session_raw_stored - st0.session_raw_stored) / comp_s / 1e6 : 0.0,
           (unsigned long long)st1.entries, (double)st1.bytes / 1e6, raw / 1e6);
    fflush(stdout);
    tsr_cache_clear(cache);
    tsr_cache_close(cache);
  }
  /* An emptied cache leaves its directory and tmp/: remove what we made. */
  if (dir == dirbuf) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s/tmp", dir);
    rmdir(tmp);
    rmdir(dir);
  }
  free(t);
  free(b.dst);
  free(data);
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  tsr_ctx_free(ctx);
  return status;
}
