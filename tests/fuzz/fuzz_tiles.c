/* fuzz_tiles.c -- libFuzzer target: tile-compressed FITS images (seeds:
 * tiny RICE_1, GZIP_1, GZIP_2, HCOMPRESS_1 and PLIO_1 files) -> the
 * source, whose table and tile descriptors io/tiles.c checks, then reads of
 * the whole image and of one corner, so that every tile's stream goes
 * through the checks and then cfitsio's decoders.  Unlike fuzz_fits, which
 * mostly meets headers, the corpus here is images whose damage lands in the
 * heap. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <tessera/tessera.h>
#include <unistd.h>

#include "fuzz_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Images up to this many pixels are read (the seeds have 256 to 1024). */
#define MAX_PIXELS 65536

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fuzz_file(data, size, "tiles-");
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  if (path == NULL || tsr_ctx_new(&ctx, NULL) != 0)
    return 0;
  if (tsr_graph_new(ctx, &g) == 0) {
    tsr_node_t *src = tsr_source_fits(g, path, 0);
    int64_t n = 1;
    for (int a = 0; src && a < 4; a++)
      n *= tsr_node_shape(src, a);
    if (src && n <= MAX_PIXELS) {
      float *buf = malloc((size_t)n * sizeof *buf + 8);
      tsr_region_t corner = {{0, 0, 0, 0}, {1, 1, 1, 1}};
      for (int a = 0; a < 4; a++)
        corner.start[a] = tsr_node_shape(src, a) - 1, corner.stop[a] = tsr_node_shape(src, a);
      tsr_node_t *d = tsr_astype(g, src, TSR_F32);
      if (buf && d) {
        /* The corner first: a run that checks only the last tile. */
        tsr_compute(g, d, &corner, buf, sizeof *buf, NULL);
        tsr_compute(g, d, NULL, buf, (size_t)n * sizeof *buf, NULL);
      }
      free(buf);
    }
    tsr_graph_free(g);
  }
  tsr_ctx_free(ctx);
  unlink(path);
  return 0;
}
