/* bench-interp.c -- reproject_interp throughput, in memory, public API only.
 *
 * A 2048 x 2048 float32 TAN image (1 arcsec/px, smooth sky + noise) held in a
 * buffer node is reprojected onto a 2048 x 2048 TAN target rotated 30 deg,
 * pixel scale x1.1, shifted (the ANCHORS case), and the whole output is
 * computed with tsr_compute.  For each order and for mapping tolerance 1e-4
 * (the default: grid + interpolation) and 0 (exact transform at every pixel):
 * one warm-up, then N timed runs with uv_hrtime(); the median is printed as
 *
 *   bench=interp order=bilinear tol=1e-4 size=2048x2048 n=7 median_ms=61.2 Mpix_s=68.5 ...
 *
 * followed by min_ms, the output dtype and the fraction of finite output
 * pixels (a sanity check: about 0.75 here).
 * Each run builds a fresh graph (untimed) so nothing computed before can be
 * reused; only tsr_compute is timed.
 *
 *   bench-interp [-n REPEATS] [-s SIZE] [-o ORDER] [-t TOL]
 *
 * The public API is still being filled in: functions the library does not
 * export yet are weak references here, so this program builds anyway and
 * reports what is missing (exit 77 = skipped) instead of breaking the build.
 */
#include <tessera/tessera.h>
#include <uv.h>

#include "bench.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TSR_BENCH_BUILDTYPE
#define TSR_BENCH_BUILDTYPE "unknown"
#endif

/* Functions of the public header that libtessera did not export yet when this
 * was written: weak references, NULL at run time while missing.  (Every other
 * call is a normal reference, which also keeps libtessera in DT_NEEDED under
 * --as-needed.)  Drop a line once its function has landed. */
#pragma weak tsr_wcs_parse
#pragma weak tsr_reproject_interp

#define N_ORDERS 7 /* tsr_order_t: 0-3, then lanczos2..4 */
static const char *const order_names[N_ORDERS] = {
  "nearest-neighbor", "bilinear", "biquadratic", "bicubic", "lanczos2", "lanczos3", "lanczos4"
};
static const struct { double tol; const char *name; } tols[] = {
  { 1e-4, "1e-4" }, { 0.0, "0" }
};

/* ------------------------------------------------------------------ */
/* Data and headers                                                   */

static int missing_api(void)
{
  static const struct { const char *name; const void *fn; } need[] = {
#define F(f) { #f, (const void *)(uintptr_t)f }
    F(tsr_wcs_parse), F(tsr_reproject_interp),
#undef F
  };
  int nmiss = 0;
  for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
    if (!need[i].fn) {
      printf("# missing from libtessera: %s\n", need[i].name);
      nmiss++;
    }
  return nmiss;
}

typedef struct {
  tsr_ctx_t *ctx;
  const tsr_wcs_t *in_wcs, *out_wcs;
  const float *data;
  int64_t n;
  void *dst;
  size_t dst_bytes;
  tsr_dtype_t out_dtype;   /* of the last run's output in dst */
  int jobs;                /* -j: 1 = serial, 0 = one per CPU (TSR_JOBS_PER_CPU) */
  int executor;            /* tsr_run_opts_t.executor */
  int64_t block;           /* output block edge; 0 = the default */
} bench_t;

/* Fraction of finite values in the last output: a run that computed nothing
 * would be fast and wrong (the ANCHORS case gives about 0.75). */
static double finite_fraction(const bench_t *b)
{
  int64_t n = b->n * b->n, good = 0;
  if (b->out_dtype == TSR_F64) {
    const double *d = b->dst;
    for (int64_t i = 0; i < n; i++)
      good += isfinite(d[i]) ? 1 : 0;
  } else {
    const float *d = b->dst;
    for (int64_t i = 0; i < n; i++)
      good += isfinite(d[i]) ? 1 : 0;
  }
  return (double)good / (double)n;
}

/* Build a fresh graph and compute the whole output once; *ns = time of
 * tsr_compute alone.  On error prints a message and returns non-zero. */
static int run_once(bench_t *b, int order, double tol, uint64_t *ns)
{
  tsr_graph_t *g = NULL;
  int rc = tsr_graph_new(b->ctx, &g);
  if (rc != 0) {
    printf("# tsr_graph_new: %s\n", tsr_errmsg(b->ctx));
    return rc;
  }
  int64_t shape[2] = { b->n, b->n };
  tsr_interp_opts_t opts = TSR_INTERP_OPTS_INIT;
  opts.order = order;
  opts.mapping_tolerance = tol;
  opts.block[0] = opts.block[1] = b->block;
  tsr_node_t *src = tsr_source_buffer(g, TSR_F32, 2, shape, b->data, b->in_wcs);
  tsr_node_t *out = tsr_reproject_interp(g, src, b->out_wcs, &opts);
  if (!out || tsr_graph_status(g) != 0) {
    printf("# building the graph: %s\n", tsr_graph_errmsg(g));
    tsr_graph_free(g);
    return -1;
  }
  size_t need = (size_t)(tsr_node_shape(out, 0) * tsr_node_shape(out, 1)) *
                tsr_dtype_size(tsr_node_dtype(out));
  if (need > b->dst_bytes) {
    printf("# output needs %zu bytes, buffer has %zu\n", need, b->dst_bytes);
    tsr_graph_free(g);
    return -1;
  }
  b->out_dtype = tsr_node_dtype(out);
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  ro.jobs = b->jobs == 0 ? TSR_JOBS_PER_CPU : b->jobs; /* -j 0: one per CPU, as the CLI's */
  ro.executor = (tsr_executor_t)b->executor;
  uint64_t t0 = uv_hrtime();
  rc = tsr_compute(g, out, NULL, b->dst, need, &ro);
  uint64_t t1 = uv_hrtime();
  if (rc != 0)
    printf("# tsr_compute: %s\n", tsr_errmsg(b->ctx));
  tsr_graph_free(g);
  *ns = t1 - t0;
  return rc;
}

static void usage(void)
{
  fprintf(stderr, "usage: bench-interp [-n REPEATS] [-s SIZE] [-o ORDER] [-t 1e-4|0] [-j JOBS] "
                  "[-b BLOCK] [-e processes|threads] [-F icrs|fk4]\n"
                  "  -F FRAME: an input in FRAME onto a Galactic target (frame changes)\n");
  exit(2);
}

int main(int argc, char **argv)
{
  int repeats = 7, only_order = -1, only_tol = -1, jobs = 1, executor = TSR_EXECUTOR_DEFAULT;
  int64_t n = 2048, block = 0;
  const char *frame = NULL;
  for (int i = 1; i < argc; i++) {
    if (i + 1 >= argc)
      usage();
    if (!strcmp(argv[i], "-n"))
      repeats = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-s"))
      n = atoll(argv[++i]);
    else if (!strcmp(argv[i], "-o")) {
      const char *o = argv[++i];
      for (int k = 0; k < N_ORDERS; k++)
        if (!strcmp(o, order_names[k]) || (o[0] == '0' + k && o[1] == '\0'))
          only_order = k;
      if (only_order < 0)
        usage();
    } else if (!strcmp(argv[i], "-t"))
      only_tol = atof(argv[++i]) == 0.0 ? 1 : 0;
    else if (!strcmp(argv[i], "-j"))
      jobs = atoi(argv[++i]);
    else if (!strcmp(argv[i], "-e")) {
      const char *e = argv[++i];
      executor = !strcmp(e, "threads") ? TSR_EXECUTOR_THREADS
                 : !strcmp(e, "processes") ? TSR_EXECUTOR_PROCESSES : -1;
      if (executor < 0)
        usage();
    } else if (!strcmp(argv[i], "-b"))
      block = atoll(argv[++i]);
    else if (!strcmp(argv[i], "-F")) {
      frame = argv[++i];
      if (strcmp(frame, "icrs") && strcmp(frame, "fk4"))
        usage();
    } else
      usage();
  }
  if (repeats < 1 || n < 16 || jobs < 0 || block < 0)
    usage();

  uv_cpu_info_t *cpus = NULL;
  int ncpu = 0;
  const char *model = "unknown";
  if (uv_cpu_info(&cpus, &ncpu) == 0 && ncpu > 0)
    model = cpus[0].model;
  printf("# bench-interp buildtype=%s cpus=%d available=%u cpu=\"%s\" tessera=%s libuv=%s\n",
         TSR_BENCH_BUILDTYPE, ncpu, uv_available_parallelism(), model,
         tsr_version_string(), uv_version_string());
  if (cpus)
    uv_free_cpu_info(cpus, ncpu);
  if (!strcmp(TSR_BENCH_BUILDTYPE, "debug") || !strcmp(TSR_BENCH_BUILDTYPE, "plain"))
    printf("# WARNING: %s build: timings are not representative; use buildtype=release\n",
           TSR_BENCH_BUILDTYPE);
#ifndef __OPTIMIZE__
  printf("# WARNING: compiled without optimisation\n");
#endif
  fflush(stdout);

  if (missing_api() > 0) {
    printf("# SKIP: the library does not export every function this benchmark needs yet\n");
    return 77;
  }

  int status = 0;
  char in_hdr[4096], out_hdr[4096];
  if (frame != NULL) {
    bench_frame_header(in_hdr, sizeof in_hdr, n, 1.0, 0.0, frame);
    bench_frame_header(out_hdr, sizeof out_hdr, n, 1.1, 30.0, "galactic");
  } else {
    bench_tan_header(in_hdr, sizeof in_hdr, n, 1.0, 0.0, 0.0, 0.0);
    bench_tan_header(out_hdr, sizeof out_hdr, n, 1.1, 30.0, 0.05 * (double)n, 0.03 * (double)n);
  }

  tsr_ctx_t *ctx = NULL;
  tsr_wcs_t *win = NULL, *wout = NULL;
  float *data = bench_make_sky(n);
  size_t dst_bytes = (size_t)(n * n) * sizeof(double);
  void *dst = malloc(dst_bytes);
  uint64_t *t = malloc((size_t)repeats * sizeof *t);
  if (!data || !dst || !t || tsr_ctx_new(&ctx, NULL) != 0) {
    fprintf(stderr, "bench-interp: out of memory\n");
    return 1;
  }
  if (tsr_wcs_parse(ctx, in_hdr, strlen(in_hdr), "input header", 1, &win) != 0 ||
      tsr_wcs_parse(ctx, out_hdr, strlen(out_hdr), "target header", 1, &wout) != 0) {
    printf("# tsr_wcs_parse: %s\n", tsr_errmsg(ctx));
    status = 1;
    goto done;
  }
  bench_t b = { ctx, win, wout, data, n, dst, dst_bytes, TSR_F32, jobs, executor, block };

  for (size_t ti = 0; ti < sizeof tols / sizeof tols[0]; ti++) {
    if (only_tol >= 0 && (int)ti != only_tol)
      continue;
    for (int order = 0; order < N_ORDERS; order++) {
      if (only_order >= 0 && order != only_order)
        continue;
      uint64_t ns;
      int rc = run_once(&b, order, tols[ti].tol, &ns); /* warm-up */
      for (int r = 0; rc == 0 && r < repeats; r++)
        rc = run_once(&b, order, tols[ti].tol, &t[r]);
      if (rc != 0) {
        printf("bench=interp order=%s tol=%s size=%lldx%lld error=%d\n", order_names[order],
               tols[ti].name, (long long)n, (long long)n, rc);
        status = 1;
        continue;
      }
      qsort(t, (size_t)repeats, sizeof *t, bench_cmp_u64);
      double med = repeats % 2 ? (double)t[repeats / 2]
                               : 0.5 * ((double)t[repeats / 2 - 1] + (double)t[repeats / 2]);
      printf("bench=interp order=%s tol=%s size=%lldx%lld%s%s%s jobs=%d executor=%s block=%lld n=%d "
             "median_ms=%.2f Mpix_s=%.1f min_ms=%.2f dtype=%s finite=%.4f\n", order_names[order],
             tols[ti].name, (long long)n, (long long)n, frame ? " frames=" : "",
             frame ? frame : "", frame ? "->galactic" : "", jobs,
             executor == TSR_EXECUTOR_THREADS ? "threads"
             : executor == TSR_EXECUTOR_PROCESSES ? "processes" : "default",
             (long long)block, repeats, med / 1e6,
             (double)(n * n) / (med / 1e9) / 1e6, (double)t[0] / 1e6,
             tsr_dtype_name(b.out_dtype), finite_fraction(&b));
      fflush(stdout);
    }
  }

done:
  tsr_wcs_free(win);
  tsr_wcs_free(wout);
  tsr_ctx_free(ctx);
  free(data);
  free(dst);
  free(t);
  return status;
}
