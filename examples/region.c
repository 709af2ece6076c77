/* region.c -- the README's example: build a lazy graph, compute one region.
 *   region INPUT.fits TARGET.hdr
 * Uses only the public header. */
#include <stdio.h>
#include <stdlib.h>
#include <tessera/tessera.h>

int main(int argc, char **argv) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_wcs_t *target;
  if (argc != 3 || tsr_ctx_new(&ctx, NULL) != 0) return 2;
  if (tsr_wcs_read_hdr(ctx, argv[2], &target) != 0 || tsr_graph_new(ctx, &g) != 0) {
    fprintf(stderr, "%s\n", tsr_errmsg(ctx));
    return 1;
  }
  /* Build lazily: nothing is read or computed yet. */
  tsr_node_t *sky = tsr_source_fits(g, argv[1], 0);
  tsr_interp_opts_t opts = TSR_INTERP_OPTS_INIT;
  opts.order = TSR_ORDER_BICUBIC;
  tsr_node_t *out = tsr_reproject_interp(g, sky, target, &opts);
  if (tsr_graph_status(g) != 0) {            /* one check after building */
    fprintf(stderr, "%s\n", tsr_graph_errmsg(g));
    return 1;
  }
  /* Compute a 256 x 256 region: only the blocks and input windows it needs. */
  tsr_region_t r = {{772, 772, 0, 0}, {1028, 1028, 1, 1}};  /* zero-based, half-open */
  float *buf = malloc(256 * 256 * sizeof *buf);
  if (tsr_compute(g, out, &r, buf, 256 * 256 * sizeof *buf, NULL) != 0) {
    fprintf(stderr, "%s\n", tsr_errmsg(ctx));
    return 1;
  }
  printf("centre value %g\n", buf[128 * 256 + 128]);
  free(buf);
  tsr_graph_free(g);
  tsr_wcs_free(target);
  tsr_ctx_free(ctx);
  return 0;
}
