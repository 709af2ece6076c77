/* fuzz_fits.c -- libFuzzer target: a FITS file (through cfitsio) -> its
 * header's WCS, the lazy source, and a read of up to 64 x 64 pixels. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <tessera/tessera.h>
#include <unistd.h>

#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_file(data, size, "");
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_wcs_t *w = NULL;
  if (path == NULL || tsr_ctx_new(&ctx, NULL) != 0)
    return 0;
  if (tsr_wcs_read_fits(ctx, path, 0, &w) == 0)
    tsr_wcs_free(w);
  if (tsr_graph_new(ctx, &g) == 0) {
    tsr_node_t *src = tsr_source_fits(g, path, 0);
    if (src && tsr_node_shape(src, 0) * tsr_node_shape(src, 1) * tsr_node_shape(src, 2) *
                       tsr_node_shape(src, 3) <= 4096) {
      size_t n = (size_t)(tsr_node_shape(src, 0) * tsr_node_shape(src, 1) * tsr_node_shape(src, 2) *
                          tsr_node_shape(src, 3));
      double *buf = malloc(n * sizeof *buf + 8);
      tsr_node_t *d = tsr_astype(g, src, TSR_F64);
      if (buf && d)
        tsr_compute(g, d, NULL, buf, n * sizeof *buf, NULL);
      free(buf);
    }
    tsr_graph_free(g);
  }
  tsr_ctx_free(ctx);
  unlink(path);
  return 0;
}
