/* test-alloc.c -- allocation-failure injection: through the allocator
 * hooks, fail the k-th allocation, for every k of a run, of a reprojection
 * by each method (and the exact ones from and to HEALPix), a mosaic, a
 * chain of array ops and a FITS write.  Every
 * run must end in success (with the right result) or in TSR_ENOMEM with
 * an "out of memory" message, and give back every byte it took. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tessera/tessera.h>
#include <unistd.h>

#include "harness.h"

typedef struct {
  long count;        /* allocations so far */
  long fail_at;      /* fail this one (1-based); 0 = never */
  long live;         /* blocks held */
  int failed;        /* the failure happened */
} alloc_state_t;

static void *a_malloc(void *ud, size_t n) {
  alloc_state_t *s = ud;
  if (++s->count == s->fail_at) {
    s->failed = 1;
    return NULL;
  }
  void *p = malloc(n);
  s->live += p != NULL;
  return p;
}

static void *a_realloc(void *ud, void *p, size_t n) {
  alloc_state_t *s = ud;
  if (++s->count == s->fail_at) {
    s->failed = 1;
    return NULL;
  }
  void *q = realloc(p, n);
  if (p == NULL && q != NULL)
    s->live++;
  return q;
}

static void a_free(void *ud, void *p) {
  alloc_state_t *s = ud;
  if (p)
    s->live--;
  free(p);
}

static float image[48 * 40], image2[48 * 40], hpxmap[12 * 16 * 16];

/* One scenario: build a graph and compute `out` (count values); returns the
 * status.  `what` 0..5 reprojections (orders 0-3, adaptive, exact), 6 a
 * mosaic, 7 array ops, 8 a FITS write, 9 drizzle, 10 its context, 11 blot,
 * 12 adaptive with center_jacobian (its start opens two more WCS copies
 * after the shared mapping: a failure there unwinds through its stop), 13
 * exact from an nside 16 map, 14 exact onto one, 15 drizzle's variance with
 * BACKGROUND weights and a DQ map (the second image's words). */
/* The n float32 values of a FITS file's first HDU as doubles, read with
 * stdio (not through tessera, whose allocator the test is failing). */
static void read_float32_fits(const char *path, double *out, int n) {
  char card[81] = {0};
  long data = -1;
  FILE *f = fopen(path, "rb");
  ASSERT(f != NULL);
  for (long at = 0; data < 0 && fread(card, 1, 80, f) == 80; at += 80)
    if (memcmp(card, "END     ", 8) == 0)
      data = (at / 2880 + 1) * 2880;
  ASSERT(data > 0 && fseek(f, data, SEEK_SET) == 0);
  for (int i = 0; i < n; i++) {
    unsigned char b[4];
    uint32_t u;
    float v;
    ASSERT(fread(b, 1, 4, f) == 4);
    u = (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
    memcpy(&v, &u, 4);
    out[i] = v;
  }
  fclose(f);
}

static int scenario(tsr_ctx_t *ctx, int what, double *out, int *n_out) {
  static const char *hin =
      "NAXIS = 2\nNAXIS1 = 48\nNAXIS2 = 40\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
      "CRVAL1 = 20.0\nCRVAL2 = 5.0\nCRPIX1 = 24.5\nCRPIX2 = 20.5\nCDELT1 = -0.001\nCDELT2 = 0.001\n";
  static const char *hin2 =
      "NAXIS = 2\nNAXIS1 = 48\nNAXIS2 = 40\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
      "CRVAL1 = 20.02\nCRVAL2 = 5.01\nCRPIX1 = 24.5\nCRPIX2 = 20.5\nCDELT1 = -0.001\nCDELT2 = 0.001\n";
  static const char *hout =
      "NAXIS = 2\nNAXIS1 = 50\nNAXIS2 = 44\nCTYPE1 = 'RA---SIN'\nCTYPE2 = 'DEC--SIN'\n"
      "CRVAL1 = 20.01\nCRVAL2 = 5.0\nCRPIX1 = 25\nCRPIX2 = 22\nCDELT1 = -0.0011\nCDELT2 = 0.0011\n"
      "PC1_1 = 0.96\nPC1_2 = -0.28\nPC2_1 = 0.28\nPC2_2 = 0.96\n";
  tsr_wcs_t *wi = NULL, *wi2 = NULL, *wo = NULL;
  tsr_graph_t *g = NULL;
  tsr_node_t *n = NULL;
  int64_t shape[2] = {48, 40};
  int rc;

  if ((rc = tsr_wcs_parse(ctx, hin, strlen(hin), "in", 1, &wi)) != 0 ||
      (rc = tsr_wcs_parse(ctx, hin2, strlen(hin2), "in2", 1, &wi2)) != 0 ||
      (rc = tsr_wcs_parse(ctx, hout, strlen(hout), "out", 1, &wo)) != 0 ||
      (rc = tsr_graph_new(ctx, &g)) != 0)
    goto out;
  {
    tsr_node_t *src = tsr_source_buffer_ref(g, TSR_F32, 2, shape, image, wi);
    tsr_node_t *src2 = tsr_source_buffer_ref(g, TSR_F32, 2, shape, image2, wi2);
    tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
    io.block[0] = 20, io.block[1] = 16;
    if (what <= 3) {
      io.order = what;
      n = tsr_reproject_interp(g, src, wo, &io);
    } else if (what == 4 || what == 12) {
      tsr_adaptive_opts_t ao = TSR_ADAPTIVE_OPTS_INIT;
      ao.block[0] = ao.block[1] = 24;
      ao.center_jacobian = what == 12;
      n = tsr_reproject_adaptive(g, src, wo, &ao);
    } else if (what == 5) {
      tsr_exact_opts_t eo = TSR_EXACT_OPTS_INIT;
      eo.block[0] = eo.block[1] = 24;
      n = tsr_reproject_exact(g, src, wo, &eo);
    } else if (what == 9 || what == 10 || what == 15) {
      tsr_node_t *in2[2] = {src, src2}, *dq[2] = {src2, NULL};
      tsr_drizzle_opts_t dz = TSR_DRIZZLE_OPTS_INIT;
      dz.block[0] = 24, dz.block[1] = 20;
      if (what == 15) {
        dz.weight_type = TSR_WEIGHT_BACKGROUND;
        dz.back_size = 16;
        dz.dq = dq;
        dz.dq_bits = 1;
      }
      n = tsr_drizzle(g, 2, in2, NULL, wo, &dz);
      if (what == 10)
        n = tsr_drizzle_context(g, n, 0);
      if (what == 15)
        n = tsr_drizzle_product(g, n, TSR_DRIZZLE_OUT_VARIANCE);
    } else if (what == 11) {
      tsr_blot_opts_t bo = TSR_BLOT_OPTS_INIT;
      bo.block[0] = 24, bo.block[1] = 20;
      n = tsr_blot(g, src, wo, &bo);
    } else if (what == 13) {
      int64_t hshape[1] = {12 * 16 * 16};
      tsr_from_healpix_opts_t ho = TSR_FROM_HEALPIX_OPTS_INIT;
      ho.method = TSR_HEALPIX_EXACT, ho.nested = 0, ho.coordsys = "C";
      ho.block[0] = ho.block[1] = 24;
      n = tsr_reproject_from_healpix(g, tsr_source_buffer_ref(g, TSR_F32, 1, hshape, hpxmap, NULL),
                                     wo, &ho);
    } else if (what == 14) {
      tsr_to_healpix_opts_t to = TSR_TO_HEALPIX_OPTS_INIT;
      to.method = TSR_TO_HEALPIX_EXACT, to.nested = 1, to.chunk = 256;
      n = tsr_reproject_to_healpix(g, src, 16, &to);
    } else if (what == 6 || what == 8) {
      tsr_node_t *r[2] = {tsr_reproject_interp(g, src, wo, &io), tsr_reproject_interp(g, src2, wo, &io)};
      tsr_coadd_opts_t co = TSR_COADD_OPTS_INIT;
      co.combine = what == 6 ? TSR_COMBINE_MEDIAN : TSR_COMBINE_MEAN;
      n = tsr_coadd(g, 2, r, NULL, &co);
    } else {
      tsr_node_t *r = tsr_reproject_interp(g, src, wo, &io);
      tsr_node_t *s = tsr_binary(g, TSR_ADD, tsr_unary(g, TSR_SQRT, tsr_binary_scalar(g, TSR_MUL, r, 2)), r);
      int64_t st[2] = {2, 3}, sp[2] = {50, 44}, step[2] = {2, 1};
      n = tsr_reduce(g, TSR_REDUCE_SUM, tsr_slice(g, s, st, sp, step), 0, 1);
    }
  }
  if ((rc = tsr_graph_status(g)) != 0)
    goto out;
  *n_out = (int)(tsr_node_shape(n, 0) * tsr_node_shape(n, 1));
  if (what == 8) {
    char path[512];
    const char *p = path;
    snprintf(path, sizeof path, "%s", th_path("alloc.fits"));
    rc = tsr_write_fits(g, 1, &n, &p, NULL, NULL);
    if (rc == 0) {
      read_float32_fits(path, out, *n_out);
      unlink(path);
    } else if (access(path, F_OK) == 0) {
      th_fail(__FILE__, __LINE__, "a failed write left %s behind", path);
    }
  } else {
    tsr_node_t *d = tsr_node_dtype(n) == TSR_F64 ? n : tsr_astype(g, n, TSR_F64);
    if ((rc = tsr_graph_status(g)) == 0)
      rc = tsr_compute(g, d, NULL, out, sizeof(double) * (size_t)*n_out, NULL);
  }
out:
  tsr_graph_free(g);
  tsr_wcs_free(wi);
  tsr_wcs_free(wi2);
  tsr_wcs_free(wo);
  return rc;
}

static void inject(int what, const char *name) {
  static double ref[12 * 16 * 16], out[12 * 16 * 16];
  alloc_state_t s = {0, 0, 0, 0};
  tsr_ctx_options_t o;
  tsr_ctx_t *ctx;
  int n_ref = 0, n = 0, ok = 0, enomem = 0;
  long total;

  for (int k = 0; k < 48 * 40; k++) {
    image[k] = (float)(sin(k * 0.05) + (k % 17 == 0 ? NAN : 1.0));
    image2[k] = (float)(cos(k * 0.03) + 0.5);
  }
  for (int k = 0; k < 12 * 16 * 16; k++)
    hpxmap[k] = (float)(sin(k * 0.37) + (k % 23 == 0 ? NAN : 2.0));
  memset(&o, 0, sizeof o);
  o.alloc.malloc_fn = a_malloc, o.alloc.realloc_fn = a_realloc, o.alloc.free_fn = a_free;
  o.alloc.ud = &s;
  ASSERT_OK(tsr_ctx_new(&ctx, &o));
  ASSERT_OK(scenario(ctx, what, ref, &n_ref));
  tsr_ctx_free(ctx);
  total = s.count;
  ASSERT_INT_EQ(s.live, 0);
  for (long k = 1; k <= total + 1; k++) {
    alloc_state_t f = {0, k, 0, 0};
    int rc;
    o.alloc.ud = &f;
    if (tsr_ctx_new(&ctx, &o) != 0) {
      ASSERT(f.failed && f.live == 0);
      enomem++;
      continue;
    }
    rc = scenario(ctx, what, out, &n);
    if (rc == 0) {
      ok++;
      if (memcmp(ref, out, sizeof(double) * (size_t)n_ref) != 0)
        th_fail(__FILE__, __LINE__, "%s: allocation %ld failed, the run succeeded with another result",
                name, k);
    } else {
      if (rc != TSR_ENOMEM || !strstr(tsr_errmsg(ctx), "out of memory"))
        th_fail(__FILE__, __LINE__, "%s: allocation %ld of %ld failed: rc %d, \"%s\"", name, k, total,
                rc, tsr_errmsg(ctx));
      enomem++;
    }
    tsr_ctx_free(ctx);
    if (f.live != 0)
      th_fail(__FILE__, __LINE__, "%s: allocation %ld failed: %ld blocks never freed", name, k, f.live);
  }
  printf("# %s: %ld allocations; %d runs ended in TSR_ENOMEM, %d succeeded\n", name, total, enomem, ok);
}

TEST(interp_nearest) { inject(0, "interp nearest"); }
TEST(interp_bilinear) { inject(1, "interp bilinear"); }
TEST(interp_biquadratic) { inject(2, "interp biquadratic"); }
TEST(interp_bicubic) { inject(3, "interp bicubic"); }
TEST(adaptive) { inject(4, "adaptive"); }
TEST(exact) { inject(5, "exact"); }
TEST(mosaic_median) { inject(6, "mosaic median"); }
TEST(array_ops_chain) { inject(7, "array ops"); }
TEST(mosaic_written_to_fits) { inject(8, "mosaic to FITS"); }
TEST(drizzle) { inject(9, "drizzle"); }
TEST(drizzle_context) { inject(10, "drizzle context"); }
TEST(blot) { inject(11, "blot"); }
TEST(adaptive_center_jacobian) { inject(12, "adaptive, center_jacobian"); }
TEST(exact_from_healpix) { inject(13, "exact from HEALPix"); }
TEST(exact_to_healpix) { inject(14, "exact to HEALPix"); }
TEST(drizzle_variance_background_dq) { inject(15, "drizzle variance, BACKGROUND, DQ"); }

TEST_MAIN()
