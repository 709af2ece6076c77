/* bench-regions.c -- many threads asking one graph for small regions.
 *
 * Builds one graph (a FITS input reprojected bilinearly onto a target
 * header) and computes R regions of S x S output pixels spread over the
 * output: one after the other in this thread, then all at once, one thread
 * each (every call serial: the concurrency is the callers').  Prints the
 * median of both and the peak resident memory, one parseable line:
 *   bench=regions regions=8 size=256 n=5 sequential_ms=... concurrent_ms=... maxrss_mb=...
 * bench/threads turns them into the ratio against the machine's
 * capacity.  Usage: bench-regions INPUT.fits TARGET.hdr [-n REPEATS] [-r REGIONS] [-s SIZE]
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <tessera/tessera.h>
#include <uv.h>

#include "bench.h"

typedef struct {
  tsr_graph_t *g;
  tsr_node_t *node;
  tsr_region_t r;
  float *out;
  size_t bytes;
  int rc;
} call_t;

static void *call_main(void *p) {
  call_t *c = p;
  c->rc = tsr_compute(c->g, c->node, &c->r, c->out, c->bytes, NULL);
  return NULL;
}

static double median(uint64_t *t, int n) {
  qsort(t, (size_t)n, sizeof *t, bench_cmp_u64);
  return n % 2 ? (double)t[n / 2] : 0.5 * ((double)t[n / 2 - 1] + (double)t[n / 2]);
}

int main(int argc, char **argv) {
  int repeats = 5, nreg = 8, size = 256, status = 0;
  tsr_ctx_t *ctx = NULL;
  tsr_graph_t *g = NULL;
  tsr_wcs_t *target = NULL;
  call_t calls[64];
  pthread_t tid[64];
  uint64_t seq[64], par[64];

  if (argc < 3) {
    fprintf(stderr, "usage: bench-regions INPUT.fits TARGET.hdr [-n REPEATS] [-r REGIONS] [-s SIZE]\n");
    return 2;
  }
  for (int i = 3; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "-n"))
      repeats = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-r"))
      nreg = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "-s"))
      size = atoi(argv[i + 1]);
  }
  if (repeats < 1 || repeats > 64 || nreg < 1 || nreg > 64 || size < 1)
    return 2;
  if (tsr_ctx_new(&ctx, NULL) != 0 || tsr_wcs_read_hdr(ctx, argv[2], &target) != 0 ||
      tsr_graph_new(ctx, &g) != 0) {
    fprintf(stderr, "bench-regions: %s\n", ctx ? tsr_errmsg(ctx) : "no context");
    return 1;
  }
  tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
  tsr_node_t *node = tsr_reproject_interp(g, tsr_source_fits(g, argv[1], 0), target, &io);
  if (tsr_graph_status(g) != 0) {
    fprintf(stderr, "bench-regions: %s\n", tsr_graph_errmsg(g));
    return 1;
  }
  int64_t w = tsr_node_shape(node, 0), h = tsr_node_shape(node, 1);
  for (int k = 0; k < nreg; k++) {
    call_t *c = &calls[k];
    /* Spread along the diagonal, away from the edges. */
    int64_t x0 = w / 8 + (w * 3 / 4 - size) * k / (nreg > 1 ? nreg - 1 : 1);
    int64_t y0 = h / 8 + (h * 3 / 4 - size) * ((k * 5) % nreg) / (nreg > 1 ? nreg - 1 : 1);
    memset(c, 0, sizeof *c);
    c->g = g;
    c->node = node;
    c->r = (tsr_region_t){{x0, y0, 0, 0}, {x0 + size, y0 + size, 1, 1}};
    c->bytes = sizeof(float) * (size_t)size * (size_t)size;
    c->out = malloc(c->bytes);
  }
  for (int rep = -1; rep < repeats; rep++) { /* rep -1 warms the page cache */
    uint64_t t0 = uv_hrtime();
    for (int k = 0; k < nreg; k++)
      call_main(&calls[k]);
    uint64_t t1 = uv_hrtime();
    for (int k = 0; k < nreg; k++)
      pthread_create(&tid[k], NULL, call_main, &calls[k]);
    for (int k = 0; k < nreg; k++)
      pthread_join(tid[k], NULL);
    uint64_t t2 = uv_hrtime();
    for (int k = 0; k < nreg; k++)
      if (calls[k].rc != 0) {
        fprintf(stderr, "bench-regions: region %d: %s\n", k, tsr_errmsg(ctx));
        status = 1;
      }
    if (rep >= 0) {
      seq[rep] = t1 - t0;
      par[rep] = t2 - t1;
    }
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("bench=regions regions=%d size=%d n=%d sequential_ms=%.2f concurrent_ms=%.2f "
         "maxrss_mb=%.1f\n",
         nreg, size, repeats, median(seq, repeats) / 1e6, median(par, repeats) / 1e6,
         ru.ru_maxrss / 1024.0);
  for (int k = 0; k < nreg; k++)
    free(calls[k].out);
  tsr_graph_free(g);
  tsr_wcs_free(target);
  tsr_ctx_free(ctx);
  return status;
}
