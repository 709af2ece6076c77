/* fuzz_hdr.c -- libFuzzer target: header text (as in a .hdr target file) ->
 * tsr_wcs_parse -> wcslib, and the celestial WCS the reprojections build. */
#include <stddef.h>
#include <stdint.h>
#include <tessera/tessera.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tsr_ctx_t *ctx;
  tsr_wcs_t *w = NULL;
  if (tsr_ctx_new(&ctx, NULL) != 0)
    return 0;
  if (tsr_wcs_parse(ctx, (const char *)data, size, "fuzz", 1, &w) == 0) {
    char buf[512];
    double x[3] = {0, 10.5, -3}, y[3] = {0, 7.25, 1e6}, lon[3], lat[3];
    tsr_wcs_describe(ctx, w, buf, sizeof buf);
    tsr_wcs_pix2world(ctx, w, 3, x, y, lon, lat);
    {
      /* A reprojection onto itself exercises the mapping's set-up. */
      tsr_graph_t *g;
      if (tsr_graph_new(ctx, &g) == 0) {
        int64_t shape[2] = {4, 4};
        float img[16] = {0};
        tsr_node_t *src = tsr_source_buffer(g, TSR_F32, 2, shape, img, w);
        (void)tsr_reproject_interp(g, src, w, NULL);
        tsr_graph_free(g);
      }
    }
    tsr_wcs_free(w);
  }
  tsr_ctx_free(ctx);
  return 0;
}
