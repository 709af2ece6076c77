/* test-healpix.c -- HEALPix geometry, HEALPix FITS sources (rows read only
 * as needed) and reprojection from them.  Conformance with reproject and
 * astropy-healpix is in tests/conformance/conformance_healpix.py. */
#include <fcntl.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "hpx.h"
#include "internal.h"
#include "overlap.h"
#include "reproject.h"
#include "sky.h"

extern _Atomic int64_t tsr__healpix_rows_read;

static void teardown(tsr_ctx_t *ctx, tsr_graph_t *g, tsr_wcs_t *t) {
  tsr_graph_free(g);
  tsr_wcs_free(t);
  tsr_ctx_free(ctx);
}

static tsr_ctx_t *ctx_new(void) {
  tsr_ctx_t *ctx;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr__hpx_load(ctx));
  return ctx;
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
  return rng_state;
}

TEST(pixel_centres_round_trip_both_orderings_up_to_nside_2_29) {
  tsr_ctx_t *ctx = ctx_new();
  int64_t nsides[] = {1, 2, 64, 1024, (int64_t)1 << 20, (int64_t)1 << 29};
  for (size_t k = 0; k < sizeof nsides / sizeof nsides[0]; k++)
    for (int nest = 0; nest < 2; nest++)
      for (int i = 0; i < 2000; i++) {
        int64_t ns = nsides[k], p = (int64_t)(rnd() % (uint64_t)tsr__hpx_npix(ns));
        double lon, lat, v[3];
        tsr__hpx_pix2ang(ns, nest, p, &lon, &lat);
        ASSERT_INT_EQ(tsr__hpx_ang2pix(ns, nest, lon, lat), p);
        tsr__hpx_pix2vec(ns, nest, p, v);
        ASSERT_INT_EQ(tsr__hpx_vec2pix(ns, nest, v), p);
        ASSERT_INT_EQ(tsr__hpx_nest2ring(ns, tsr__hpx_ring2nest(ns, p)), p);
      }
  tsr_ctx_free(ctx);
}

TEST(ring_layout_matches_pixel_latitudes) {
  tsr_ctx_t *ctx = ctx_new();
  int64_t nsides[] = {1, 3, 8, 1000, (int64_t)1 << 29};
  for (size_t k = 0; k < sizeof nsides / sizeof nsides[0]; k++) {
    int64_t ns = nsides[k], total = 0;
    for (int64_t r = 1; r < 4 * ns; r += ns > 100 ? ns / 7 + 1 : 1) {
      int64_t first, count;
      double lon0, lat0, lon1, lat1;
      tsr__hpx_ring_span(ns, r, &first, &count);
      ASSERT_INT_EQ(tsr__hpx_ring_of(ns, first), r);
      ASSERT_INT_EQ(tsr__hpx_ring_of(ns, first + count - 1), r);
      tsr__hpx_pix2ang(ns, false, first, &lon0, &lat0);
      tsr__hpx_pix2ang(ns, false, first + count - 1, &lon1, &lat1);
      ASSERT(lat0 == lat1);
      if (ns <= 100)
        total += count;
    }
    if (ns <= 100)
      ASSERT_INT_EQ(total, tsr__hpx_npix(ns));
  }
  tsr_ctx_free(ctx);
}

/* The ring latitudes are computed without libchealpix (so that a RING
 * bilinear run need not load it): they are its pix2ang_ring's, to the bit,
 * in every ring (caps, belt, near the poles). */
TEST(ring_latitudes_are_libchealpix_s_to_the_bit) {
  tsr_ctx_t *ctx = ctx_new();
  int64_t nsides[] = {1, 2, 3, 8, 13, 1000, 2048, 65536};
  static tsr__hpx_rings_t rs;
  for (size_t k = 0; k < sizeof nsides / sizeof nsides[0]; k++) {
    int64_t ns = nsides[k];
    tsr__hpx_rings_init(&rs, ns);
    for (int64_t r = 1; r < 4 * ns; r++) {
      int64_t first, count;
      double lon, want, wv[3];
      const tsr__hpx_ring_t *g = tsr__hpx_ring(&rs, r);
      tsr__hpx_ring_span(ns, r, &first, &count);
      tsr__hpx_pix2ang(ns, false, first, &lon, &want);
      if (memcmp(&g->lat, &want, sizeof want) != 0) {
        printf("# nside %lld ring %lld: %.17g, libchealpix %.17g\n", (long long)ns,
               (long long)r, g->lat, want);
        ASSERT(g->lat == want);
      }
      /* The ring's sine and cosine of latitude, and its layout. */
      tsr__hpx_pix2vec(ns, false, first, wv);
      ASSERT_NEAR(g->z, wv[2], 1e-15);
      ASSERT_NEAR(g->c, hypot(wv[0], wv[1]), 1e-15);
      ASSERT_INT_EQ(g->first, first);
      ASSERT_INT_EQ(g->count, count);
      ASSERT_NEAR((0 + g->phase) / (double)count * 2 * M_PI, lon, 1e-13);
    }
  }
  tsr_ctx_free(ctx);
}

/* The own RING -> NESTED conversion is libchealpix's, pixel for pixel:
 * every pixel of small maps, random ones (and each ring's ends) up to
 * nside 2^29. */
TEST(ring2nest_without_libchealpix_is_libchealpix_s) {
  tsr_ctx_t *ctx = ctx_new();
  int64_t nsides[] = {1, 2, 4, 8, 64, 2048, (int64_t)1 << 20, (int64_t)1 << 29};
  for (size_t k = 0; k < sizeof nsides / sizeof nsides[0]; k++) {
    int64_t ns = nsides[k], npix = tsr__hpx_npix(ns);
    for (int64_t i = 0; i < (npix <= 49152 ? npix : 200000); i++) {
      int64_t p = npix <= 49152 ? i : (int64_t)(rnd() % (uint64_t)npix);
      ASSERT_INT_EQ(tsr__hpx_ring2nest_fast(ns, p), tsr__hpx_ring2nest(ns, p));
    }
    for (int64_t r = 1; r < 4 * ns; r += ns > 64 ? ns / 3 + 1 : 1) {
      int64_t first, count;
      tsr__hpx_ring_span(ns, r, &first, &count);
      ASSERT_INT_EQ(tsr__hpx_ring2nest_fast(ns, first), tsr__hpx_ring2nest(ns, first));
      ASSERT_INT_EQ(tsr__hpx_ring2nest_fast(ns, first + count - 1),
                    tsr__hpx_ring2nest(ns, first + count - 1));
    }
  }
  tsr_ctx_free(ctx);
}

TEST(bilinear_weights_sum_to_one_and_reproduce_centres) {
  tsr_ctx_t *ctx = ctx_new();
  for (int i = 0; i < 20000; i++) {
    double lon = (double)(rnd() % 1000000) / 1e6 * 2 * M_PI;
    double lat = asin((double)(rnd() % 2000001) / 1e6 - 1.0);
    int64_t r[4];
    double w[4];
    tsr__hpx_interp_weights(64, lon, lat, r, w);
    ASSERT_NEAR(w[0] + w[1] + w[2] + w[3], 1.0, 1e-12);
    for (int q = 0; q < 4; q++)
      ASSERT(r[q] >= 0 && r[q] < tsr__hpx_npix(64));
  }
  /* At a pixel centre the pixel itself has all the weight. */
  for (int64_t p = 0; p < tsr__hpx_npix(16); p += 37) {
    double lon, lat, w[4];
    int64_t r[4];
    tsr__hpx_pix2ang(16, false, p, &lon, &lat);
    tsr__hpx_interp_weights(16, lon, lat, r, w);
    double own = 0;
    for (int q = 0; q < 4; q++)
      if (r[q] == p)
        own += w[q];
    ASSERT_NEAR(own, 1.0, 1e-9);
  }
  /* The fast path (unit vectors in, no libchealpix) gives the same
   * interpolation (each pixel's total weight, to rounding), in both caps, the
   * equatorial belt, near the poles and across longitude 0, at odd and even
   * nside up to 2^20; a NaN vector gets indices -1.  Pixel by pixel rather than slot
   * by slot: a point on a ring's latitude (to rounding) may take the ring
   * on either side, at weight 0.  The points are taken a row at a time, in a random walk
   * as output rows are, so that the ring cache is both hit and missed. */
  static tsr__hpx_rings_t rs;
  int64_t nsides[] = {1, 2, 3, 4, 5, 16, 17, 64, 255, 1024, 65536, (int64_t)1 << 20},
          same = 0, all = 0;
  for (size_t k = 0; k < sizeof nsides / sizeof nsides[0]; k++) {
    int64_t nside = nsides[k];
    /* Longitudes in units of a ring's pixels lose the digits of the ring's
     * pixel count, in both computations: 1e-12 up to nside 1024, then in
     * proportion. */
    double tol = 1e-12 * fmax(1.0, (double)nside / 1024);
    tsr__hpx_rings_init(&rs, nside);
    for (int row = 0; row < 100; row++) {
      enum { N = 64 };
      double x[N], y[N], z[N], lons[N], lats[N], wt[4 * N];
      int64_t rt[4 * N];
      double lon = (double)(rnd() % 1000000) / 1e6 * 2 * M_PI;
      double sl = (double)(rnd() % 2000001) / 1e6 - 1.0;
      double step = (row % 2 ? 1e-4 : 3e-2) / (double)nside;
      for (int i = 0; i < N; i++) {
        if (row % 3 == 0) { /* scattered */
          lon = (double)(rnd() % 1000000) / 1e6 * 2 * M_PI;
          sl = (double)(rnd() % 2000001) / 1e6 - 1.0;
        }
        lon = fmod(lon + step * (double)(rnd() % 100), 2 * M_PI);
        sl = fmax(-1, fmin(1, sl + step * ((double)(rnd() % 100) - 50)));
        double lat = asin(sl);
        lons[i] = lon, lats[i] = lat;
        x[i] = cos(lat) * cos(lon), y[i] = cos(lat) * sin(lon), z[i] = sin(lat);
      }
      x[N - 1] = NAN;
      tsr__hpx_bilinear(&rs, N, x, y, z, rt, wt);
      for (int i = 0; i < N - 1; i++) {
        int64_t r[4];
        double w[4];
        tsr__hpx_interp_weights(nside, lons[i], lats[i], r, w);
        for (int q = 0; q < 8; q++) {
          int64_t p = q < 4 ? r[q] : rt[4 * i + q - 4];
          double mine = 0, ref = 0;
          for (int e = 0; e < 4; e++) {
            mine += rt[4 * i + e] == p ? wt[4 * i + e] : 0;
            ref += r[e] == p ? w[e] : 0;
          }
          if (!(fabs(mine - ref) <= tol))
            printf("# nside %lld lon %.17g lat %.17g: pixel %lld weight %.17g, reference "
                   "%.17g\n", (long long)nside, lons[i], lats[i], (long long)p, mine, ref);
          ASSERT_NEAR(mine, ref, tol);
          same += q < 4 && rt[4 * i + q] == r[q];
          all += q < 4;
        }
      }
      for (int q = 0; q < 4; q++)
        ASSERT_INT_EQ(rt[4 * (N - 1) + q], -1);
    }
  }
  printf("# %lld of %lld neighbours the reference's in the same slot\n", (long long)same,
         (long long)all);
  ASSERT(same > all - all / 1000);
  tsr_ctx_free(ctx);
}

/* The bilinear weights' arctangent (longitudes in turns) is libm's atan2
 * to 2e-15 rad (a few units in the last place of 2 pi) over millions of
 * directions: every octant, both axes, near-zero and huge components. */
TEST(atan2_in_turns_is_libm_s_within_2e_15_rad) {
  static tsr__hpx_rings_t rs;
  double worst = 0;
  tsr__hpx_rings_init(&rs, 1);
  for (int i = 0; i < 4000000; i++) {
    double x = (double)(int64_t)(rnd() >> 11) / 4503599627370496.0 - 1.0;
    double y = (double)(int64_t)(rnd() >> 11) / 4503599627370496.0 - 1.0;
    if (i % 4 == 1) /* far from the diagonal: one component tiny */
      y *= ldexp(1.0, -(int)(rnd() % 60));
    else if (i % 4 == 2)
      x *= ldexp(1.0, -(int)(rnd() % 60));
    else if (i % 4 == 3) /* scaled: only the ratio matters */
      x *= 1e200, y *= 1e200;
    double want = atan2(y, x);
    if (want < 0)
      want += 2 * M_PI;
    double got = tsr__hpx_atan2_turns(&rs, y, x) * 2 * M_PI;
    double err = fabs(got - want);
    err = fmin(err, fabs(err - 2 * M_PI)); /* 0 and 2 pi are one longitude */
    if (err > worst)
      worst = err;
    ASSERT(got >= 0 && got < 2 * M_PI);
  }
  const double axes[][2] = {{0, 1}, {1, 0}, {0, -1}, {-1, 0}, {1, 1}, {-1, 1}, {-1, -1}, {1, -1}};
  for (size_t k = 0; k < sizeof axes / sizeof axes[0]; k++) {
    double want = atan2(axes[k][0], axes[k][1]);
    want += want < 0 ? 2 * M_PI : 0;
    ASSERT_NEAR(tsr__hpx_atan2_turns(&rs, axes[k][0], axes[k][1]) * 2 * M_PI, want, 2e-15);
  }
  printf("# worst error %.3g rad\n", worst);
  ASSERT(worst <= 2e-15);
}

TEST(disc_range_holds_every_centre_in_the_disc) {
  tsr_ctx_t *ctx = ctx_new();
  for (int nest = 0; nest < 2; nest++)
    for (int i = 0; i < 40; i++) {
      int64_t ns = 32, lo, hi;
      double c[3], radius = 0.01 + (double)(rnd() % 1000) / 1000 * 0.5;
      tsr__hpx_pix2vec(ns, nest, (int64_t)(rnd() % (uint64_t)tsr__hpx_npix(ns)), c);
      tsr__hpx_disc_range(ns, nest, c, radius, &lo, &hi);
      for (int64_t p = 0; p < tsr__hpx_npix(ns); p++) {
        double v[3];
        tsr__hpx_pix2vec(ns, nest, p, v);
        if (acos(fmin(1, v[0] * c[0] + v[1] * c[1] + v[2] * c[2])) <= radius)
          ASSERT(p >= lo && p < hi);
      }
      ASSERT(hi - lo < tsr__hpx_npix(ns)); /* a small disc is not the whole map */
    }
  tsr_ctx_free(ctx);
}

TEST(disc_pixels_list_every_centre_in_the_disc_and_range_once_ascending) {
  tsr_ctx_t *ctx = ctx_new();
  static int64_t out[12 * 32 * 32];
  static unsigned char listed[12 * 32 * 32];
  for (int nest = 0; nest < 2; nest++)
    for (int i = 0; i < 40; i++) {
      int64_t ns = i % 3 == 0 ? 32 : i % 3 == 1 ? 16 : 8, npix = tsr__hpx_npix(ns);
      int64_t lo = i % 2 ? (int64_t)(rnd() % (uint64_t)npix) : 0;
      int64_t hi = i % 2 ? lo + (int64_t)(rnd() % (uint64_t)(npix - lo)) + 1 : npix;
      double c[3], radius = 0.01 + (double)(rnd() % 1000) / 1000 * (i % 5 ? 0.5 : 3.5);
      tsr__hpx_pix2vec(ns, nest, (int64_t)(rnd() % (uint64_t)npix), c);
      size_t n = tsr__hpx_disc_pixels_in(ns, nest, c, radius, lo, hi, out, sizeof out / sizeof out[0]);
      memset(listed, 0, sizeof listed);
      for (size_t k = 0; k < n; k++) {
        ASSERT(out[k] >= lo && out[k] < hi);
        ASSERT(k == 0 || out[k] > out[k - 1]);
        listed[out[k]] = 1;
      }
      for (int64_t p = lo; p < hi; p++) {
        double v[3];
        tsr__hpx_pix2vec(ns, nest, p, v);
        if (acos(fmin(1, v[0] * c[0] + v[1] * c[1] + v[2] * c[2])) <= radius)
          ASSERT(listed[p]);
      }
    }
  tsr_ctx_free(ctx);
}

/* How write_map_as departs from a good map, for the bad-file cases. */
typedef struct {
  const char *ordering;  /* ORDERING value; NULL = 'RING' */
  const char *coordsys;  /* COORDSYS value; NULL = 'G' */
  const char *nside;     /* NSIDE card's value text; NULL = the map's nside */
  int64_t rows;          /* NAXIS2; 0 = as many as the pixels need */
  int64_t cut;           /* bytes cut from the end of the file */
} map_flaw_t;

/* A map of `nside` (12 nside^2 pixels, rows of 1024) whose value at each
 * pixel is its index, written by hand as the HEALPix convention says, with
 * the header changed as `flaw` says (NULL: none). */
static void write_map_as(const char *path, int64_t nside, const map_flaw_t *flaw) {
  static const map_flaw_t none = {NULL, NULL, NULL, 0, 0};
  FILE *f = fopen(path, "wb");
  char hdr[2880 * 2];
  int64_t npix = 12 * nside * nside, rows = npix / 1024;
  int k = 0;
  if (flaw == NULL)
    flaw = &none;
  ASSERT(f != NULL);
  memset(hdr, ' ', sizeof hdr);
#define CARD(...) (snprintf(hdr + 80 * k, 81, __VA_ARGS__), hdr[80 * k + strlen(hdr + 80 * k)] = ' ', k++)
  CARD("SIMPLE  = %20s", "T");
  CARD("BITPIX  = %20d", 8);
  CARD("NAXIS   = %20d", 0);
  CARD("EXTEND  = %20s", "T");
  CARD("END");
  fwrite(hdr, 1, 2880, f);
  memset(hdr, ' ', sizeof hdr);
  k = 0;
  CARD("XTENSION= 'BINTABLE'");
  CARD("BITPIX  = %20d", 8);
  CARD("NAXIS   = %20d", 2);
  CARD("NAXIS1  = %20d", 4096);
  CARD("NAXIS2  = %20lld", (long long)(flaw->rows ? flaw->rows : rows));
  CARD("PCOUNT  = %20d", 0);
  CARD("GCOUNT  = %20d", 1);
  CARD("TFIELDS = %20d", 1);
  CARD("TTYPE1  = 'SIGNAL  '");
  CARD("TFORM1  = '1024E   '");
  CARD("PIXTYPE = 'HEALPIX '");
  CARD("ORDERING= '%-8s'", flaw->ordering ? flaw->ordering : "RING");
  if (flaw->nside)
    CARD("NSIDE   = %20s", flaw->nside);
  else
    CARD("NSIDE   = %20lld", (long long)nside);
  CARD("COORDSYS= '%-8s'", flaw->coordsys ? flaw->coordsys : "G");
  CARD("INDXSCHM= 'IMPLICIT'");
  CARD("END");
#undef CARD
  fwrite(hdr, 1, 2880, f);
  for (int64_t p = 0; p < npix; p++) {
    float v = (float)p;
    uint32_t u;
    unsigned char b[4];
    memcpy(&u, &v, 4);
    b[0] = (unsigned char)(u >> 24), b[1] = (unsigned char)(u >> 16);
    b[2] = (unsigned char)(u >> 8), b[3] = (unsigned char)u;
    fwrite(b, 1, 4, f);
  }
  for (int64_t pad = (2880 - (npix * 4) % 2880) % 2880; pad > 0; pad--)
    fputc(0, f);
  fclose(f);
  if (flaw->cut > 0) {
    FILE *t = fopen(path, "r+b");
    ASSERT(t != NULL);
    ASSERT(fseek(t, 0, SEEK_END) == 0);
    ASSERT_OK(ftruncate(fileno(t), ftell(t) - flaw->cut));
    fclose(t);
  }
}

static void write_map(const char *path, int64_t nside) { write_map_as(path, nside, NULL); }

static tsr_wcs_t *tan_target(tsr_ctx_t *ctx, int n) {
  char text[1024];
  tsr_wcs_t *w;
  snprintf(text, sizeof text,
           "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = 'GLON-TAN'\nCTYPE2 = 'GLAT-TAN'\n"
           "CRPIX1 = %g\nCRPIX2 = %g\nCRVAL1 = 40.3\nCRVAL2 = 12.7\nCDELT1 = -0.02\n"
           "CDELT2 = 0.02\n",
           n, n, n / 2 + 0.5, n / 2 + 0.5);
  ASSERT_OK(tsr_wcs_parse(ctx, text, strlen(text), "target", 1, &w));
  return w;
}

TEST(a_small_region_reads_only_the_rows_it_needs) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  const char *path = th_path("map256.fits");
  tsr_wcs_t *t = tan_target(ctx, 64);
  static float got[64 * 64];
  write_map(path, 256);
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *src = tsr_source_healpix(g, path, NULL);
  tsr_from_healpix_opts_t o = TSR_FROM_HEALPIX_OPTS_INIT;
  o.order = TSR_ORDER_NEAREST;
  tsr_node_t *out = tsr_reproject_from_healpix(g, src, t, &o);
  ASSERT_INT_EQ(tsr_graph_status(g), 0);
  ASSERT_INT_EQ(tsr_node_shape(src, 0), 786432);
  /* The copy path (a view reads in place: see the test after next). */
  tsr__test_hooks.map_nothing = 1;
  atomic_store(&tsr__healpix_rows_read, 0);
  ASSERT_OK(tsr_compute(g, out, NULL, got, sizeof got, NULL));
  int64_t rows = atomic_load(&tsr__healpix_rows_read);
  tsr__test_hooks.map_nothing = 0;
  printf("# a 1.3 deg patch read %lld of 768 rows\n", (long long)rows);
  ASSERT(rows > 0 && rows < 768 / 20);
  /* Each value is the index of the pixel that holds the pixel centre. */
  {
    tsr__cel_t *cel;
    ASSERT_OK(tsr__cel_new(ctx, t, "target", &cel));
    for (int y = 0; y < 64; y += 7)
      for (int x = 0; x < 64; x += 5) {
        double px = x, py = y, v[3];
        tsr__cel_pix2vec(cel, 1, &px, &py, v);
        ASSERT_INT_EQ((int64_t)got[y * 64 + x], tsr__hpx_vec2pix(256, false, v));
      }
    tsr__cel_free(cel);
  }
  teardown(ctx, g, t);
}

/* A 256^2 region of a 1024^2 output reads fewer rows than the whole
 * output, and gives the same values as the whole output's slice. */
TEST(a_region_of_an_output_reads_fewer_rows_than_all_of_it) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  const char *path = th_path("map256r.fits");
  tsr_wcs_t *t = tan_target(ctx, 1024);   /* 20 degrees across */
  static float all[1024 * 1024], part[256 * 256];
  tsr_region_t r = {{384, 384, 0, 0}, {640, 640, 1, 1}};
  write_map(path, 256);
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *out = tsr_reproject_from_healpix(g, tsr_source_healpix(g, path, NULL), t, NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), 0);
  tsr__test_hooks.map_nothing = 1; /* the copy path */
  atomic_store(&tsr__healpix_rows_read, 0);
  ASSERT_OK(tsr_compute(g, out, NULL, all, sizeof all, NULL));
  int64_t rows_all = atomic_load(&tsr__healpix_rows_read);
  atomic_store(&tsr__healpix_rows_read, 0);
  ASSERT_OK(tsr_compute(g, out, &r, part, sizeof part, NULL));
  int64_t rows_part = atomic_load(&tsr__healpix_rows_read);
  tsr__test_hooks.map_nothing = 0;
  printf("# whole 1024^2 output: %lld rows read; its central 256^2: %lld (of 768)\n",
         (long long)rows_all, (long long)rows_part);
  ASSERT(rows_part > 0 && rows_part * 4 < rows_all);   /* blocks read their own rows: all > 768 */
  ASSERT(rows_part < 768 / 4);
  for (int y = 0; y < 256; y++)
    ASSERT(memcmp(part + y * 256, all + (384 + y) * 1024 + 384, 256 * sizeof(float)) == 0);
  tsr_graph_free(g);
  tsr_wcs_free(t);
  tsr_ctx_free(ctx);
}

/* Pages of `path` in the page cache (mincore over a mapping of it). */
static int64_t pages_cached(const char *path) {
  int fd = open(path, O_RDONLY);
  struct stat sb;
  long page = sysconf(_SC_PAGESIZE);
  int64_t n = 0;
  ASSERT(fd >= 0 && fstat(fd, &sb) == 0);
  size_t pages = ((size_t)sb.st_size + (size_t)page - 1) / (size_t)page;
  void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
  static unsigned char vec[1 << 16];
  ASSERT(m != MAP_FAILED && pages <= sizeof vec);
  ASSERT_OK(mincore(m, (size_t)sb.st_size, vec));
  for (size_t i = 0; i < pages; i++)
    n += vec[i] & 1;
  munmap(m, (size_t)sb.st_size);
  close(fd);
  return n;
}

/* Drop `path` from the page cache; false where the system keeps it. */
static bool uncache(const char *path) {
  int fd = open(path, O_RDONLY);
  ASSERT(fd >= 0);
  ASSERT_OK(fsync(fd));
  (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
  return pages_cached(path) <= 2; /* the headers may stay */
}

/* Store a big-endian float32 at pixel p of a map written by write_map. */
static void poke(const char *path, int64_t p, float v) {
  int fd = open(path, O_WRONLY);
  uint32_t u;
  unsigned char b[4];
  memcpy(&u, &v, 4);
  b[0] = (unsigned char)(u >> 24), b[1] = (unsigned char)(u >> 16);
  b[2] = (unsigned char)(u >> 8), b[3] = (unsigned char)u;
  ASSERT(fd >= 0 && pwrite(fd, b, 4, 2 * 2880 + 4 * p) == 4);
  close(fd);
}

/* A full-sky float32 table is read in place (io/healpix.c): the outputs
 * are those of the copy path to the bit, UNSEEN, NaN and infinities made
 * NaN alike, in both orderings and both orders; and a region, from a cold
 * page cache, reads only pages of the pixels it looks up: far fewer than
 * the rows its copied window would have been. */
TEST(a_table_read_in_place_gives_the_copys_values_and_reads_less) {
  tsr_ctx_t *ctx = ctx_new();
  const char *path = th_path("map256v.fits");
  tsr_wcs_t *t = tan_target(ctx, 512);   /* 10 degrees across */
  static float view[512 * 512], copy[512 * 512];
  tsr_region_t r = {{192, 192, 0, 0}, {320, 320, 1, 1}};
  write_map(path, 256);
  {
    /* Bad values where the patch looks: pixels under its centre. */
    double px = 256, py = 256, v[3];
    tsr__cel_t *cel;
    ASSERT_OK(tsr__cel_new(ctx, t, "target", &cel));
    tsr__cel_pix2vec(cel, 1, &px, &py, v);
    tsr__cel_free(cel);
    int64_t p = tsr__hpx_vec2pix(256, false, v);
    poke(path, p, (float)TSR__HPX_UNSEEN);
    poke(path, p + 7, NAN);
    poke(path, p + 1500, INFINITY);
    poke(path, p - 1400, (float)(TSR__HPX_UNSEEN * (1 + 5e-6)));
  }
  for (int nest = 0; nest < 2; nest++)
    for (int order = 0; order < 2; order++) {
      tsr_healpix_opts_t ho = TSR_HEALPIX_OPTS_INIT;
      tsr_from_healpix_opts_t o = TSR_FROM_HEALPIX_OPTS_INIT;
      tsr_graph_t *g;
      ho.nested = nest;
      o.order = order;
      ASSERT_OK(tsr_graph_new(ctx, &g));
      tsr_node_t *out = tsr_reproject_from_healpix(g, tsr_source_healpix(g, path, &ho), t, &o);
      ASSERT_INT_EQ(tsr_graph_status(g), 0);
      tsr__test_hooks.map_nothing = 1;
      ASSERT_OK(tsr_compute(g, out, NULL, copy, sizeof copy, NULL));
      tsr__test_hooks.map_nothing = 0;
      atomic_store(&tsr__healpix_rows_read, 0);
      ASSERT_OK(tsr_compute(g, out, NULL, view, sizeof view, NULL));
      ASSERT_INT_EQ(atomic_load(&tsr__healpix_rows_read), 0); /* nothing copied */
      ASSERT(memcmp(view, copy, sizeof view) == 0);
      int64_t nan = 0;
      for (int k = 0; k < 512 * 512; k++)
        nan += view[k] != view[k];
      printf("# %s, %s: %lld NaN of %d, same bits in place and copied\n",
             nest ? "NESTED" : "RING", order ? "bilinear" : "nearest", (long long)nan, 512 * 512);
      ASSERT(nan < 512 * 512 / 100 && (nest || nan > 0)); /* poked in RING order */
      if (order == 1) {
        tsr__test_hooks.map_nothing = 1;
        atomic_store(&tsr__healpix_rows_read, 0);
        ASSERT_OK(tsr_compute(g, out, &r, copy, sizeof copy, NULL));
        int64_t rows = atomic_load(&tsr__healpix_rows_read);
        tsr__test_hooks.map_nothing = 0;
        if (!uncache(path)) {
          /* (as under valgrind, seen in CI) */
          printf("# the page cache keeps %s: pages read not counted\n", path);
          ASSERT_OK(tsr_compute(g, out, &r, view, sizeof view, NULL));
        } else {
          int64_t before = pages_cached(path);
          ASSERT_OK(tsr_compute(g, out, &r, view, sizeof view, NULL));
          int64_t pages = pages_cached(path) - before;
          printf("# %s: a 128^2 region read %lld pages (of 768) in place; its copy %lld rows\n",
                 nest ? "NESTED" : "RING", (long long)pages, (long long)rows);
          ASSERT(pages > 0 && pages * 2 < rows && pages < 768 / 10);
        }
        ASSERT(memcmp(view, copy, 128 * 128 * sizeof(float)) == 0);
      }
      tsr_graph_free(g);
    }
  tsr_wcs_free(t);
  tsr_ctx_free(ctx);
}

/* Each flaw of a HEALPix file is refused by tsr_source_healpix and
 * tsr_healpix_info alike, with a message naming the file, the HDU and what
 * was expected. */
TEST(bad_files_are_refused_case_by_case) {
  static const struct {
    const char *name;
    map_flaw_t flaw;
    const char *msg;
  } cases[] = {
      {"wrong row count", {NULL, NULL, NULL, 700, 0},
       "700 rows of 1024 values hold 716800 pixels; NSIDE 256 with FIRSTPIX 0 and LASTPIX "
       "786431 needs 786432 (768 rows)"},
      {"NSIDE not a power of 2 (NESTED)", {"NESTED", NULL, "200", 0, 0},
       "NSIDE = 200; expected a power of 2 (NESTED) in [1, 2^29]"},
      {"NSIDE 0", {NULL, NULL, "0", 0, 0}, "NSIDE = 0; expected an integer in [1, 2^29]"},
      {"NSIDE not an integer", {NULL, NULL, "'big'", 0, 0}, "has no integer NSIDE keyword"},
      {"unknown ORDERING", {"SPIRAL", NULL, NULL, 0, 0},
       "ORDERING = 'SPIRAL'; expected RING or NESTED"},
      {"unknown COORDSYS", {NULL, "X", NULL, 0, 0},
       "COORDSYS = 'X'; expected G (Galactic), C (celestial, ICRS) or E (ecliptic)"},
      {"truncated table", {NULL, NULL, NULL, 0, 2880 * 3},
       "is truncated: HDU 2's table needs 768 rows of 4096 bytes"},
  };
  tsr_ctx_t *ctx = ctx_new();
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char name[64];
    tsr_graph_t *g;
    tsr_healpix_info_t info;
    snprintf(name, sizeof name, "bad%zu.fits", i);
    const char *path = th_path(name);
    write_map_as(path, 256, &cases[i].flaw);
    printf("# %s\n", cases[i].name);
    ASSERT_OK(tsr_graph_new(ctx, &g));
    ASSERT(tsr_source_healpix(g, path, NULL) == NULL);
    ASSERT_INT_EQ(tsr_graph_status(g), TSR_EFITS);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), cases[i].msg);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), name);
    ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "HDU 2");
    ASSERT_INT_EQ(tsr_healpix_info(ctx, path, NULL, &info), TSR_EFITS);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), cases[i].msg);
    tsr_graph_free(g);
  }
  tsr_ctx_free(ctx);
}

/* tsr_healpix_info describes the table: the column read and every value
 * column with its index, the HDU's EXTNAME. */
TEST(info_lists_the_fields) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_healpix_info_t info;
  tsr_healpix_opts_t o = TSR_HEALPIX_OPTS_INIT;
  const char *path = th_path("map16.fits");
  write_map(path, 16);
  ASSERT_OK(tsr_healpix_info(ctx, path, NULL, &info));
  {
    const int64_t got[] = {info.hdu, info.nside, info.nested, info.coordsys, info.explicit_index,
                           info.n_pixels, info.first_pixel, info.last_pixel, info.n_rows,
                           info.repeat, info.type, info.field, info.n_fields,
                           info.fields[0].type, info.fields[0].repeat};
    const int64_t want[] = {2, 16, 0, 'G', 0, 3072, 0, 3071, 3, 1024, 'E', 0, 1, 'E', 1024};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
      ASSERT_INT_EQ(got[i], want[i]);
  }
  ASSERT(strcmp(info.column, "SIGNAL") == 0 && strcmp(info.fields[0].name, "SIGNAL") == 0);
  ASSERT(info.pixel_column[0] == '\0' && info.extname[0] == '\0');
  o.field_name = "signal";
  ASSERT_OK(tsr_healpix_info(ctx, path, &o, &info));
  ASSERT_INT_EQ(info.field, 0);
  o.field_name = NULL;
  o.field = 1;
  ASSERT_INT_EQ(tsr_healpix_info(ctx, path, &o, &info), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "field 1 asked for; it has 1 value column (fields 0 to 0)");
  tsr_ctx_free(ctx);
}

TEST(a_buffer_needs_its_ordering_and_frame) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  static float map[12 * 16 * 16];
  int64_t shape[1] = {12 * 16 * 16};
  tsr_wcs_t *t = tan_target(ctx, 8);
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *src = tsr_source_buffer(g, TSR_F32, 1, shape, map, NULL);
  ASSERT(tsr_reproject_from_healpix(g, src, t, NULL) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "give its ordering (nested) and frame (coordsys)");
  teardown(ctx, g, t);
}


/* Solid angle of the polygon v (n vertices) in the gnomonic plane at
 * unit vector c, as the exact reprojection measures it. */
static double polygon_area(const double c[3], const double *v, int n, double *x, double *y) {
  double e1[3] = {-c[1], c[0], 0}, e2[3];
  double r = sqrt(e1[0] * e1[0] + e1[1] * e1[1]);
  e1[0] /= r, e1[1] /= r;
  e2[0] = c[1] * e1[2] - c[2] * e1[1], e2[1] = c[2] * e1[0] - c[0] * e1[2],
  e2[2] = c[0] * e1[1] - c[1] * e1[0];
  for (int i = 0; i < n; i++) {
    const double *u = v + 3 * i;
    double d = u[0] * c[0] + u[1] * c[1] + u[2] * c[2];
    x[i] = (u[0] * e1[0] + u[1] * e1[1] + u[2] * e1[2]) / d;
    y[i] = (u[0] * e2[0] + u[1] * e2[1] + u[2] * e2[2]) / d;
  }
  return tsr__gnomonic_area(x, y, n);
}

/* Pixels to measure at nside ns: all of them for small maps, else the
 * polar rings, the cap-belt transition, the equator and random ones. */
static int64_t pick_pixel(int64_t ns, int i, int n) {
  int64_t npix = tsr__hpx_npix(ns), first, count;
  if (npix <= n)
    return i < npix ? i : -1;
  int64_t rings[] = {1, 2, ns - 1, ns, ns + 1, 2 * ns, 3 * ns, 4 * ns - 1};
  int r = i % 10;
  if (r < 8) {
    int64_t ring = rings[r] < 1 ? 1 : rings[r] > 4 * ns - 1 ? 4 * ns - 1 : rings[r];
    tsr__hpx_ring_span(ns, ring, &first, &count);
    return first + (int64_t)(rnd() % (uint64_t)count);
  }
  return (int64_t)(rnd() % (uint64_t)npix);
}

#define FINE_CAP (4 << TSR__HPX_MAX_DEPTH)

/* The numbers in the README: uniform k points per edge (astropy-healpix's
 * boundaries_lonlat(step=k)) converge only as 0.1 / k^2 next to the poles,
 * where the edges stay curved at every nside; the adaptive boundary
 * converges as about 2.5 x tol everywhere, and at the exact method's
 * tolerance stays within 1e-6 of 4 pi / npix. */
TEST(boundary_polygon_areas_converge_to_4_pi_over_npix) {
  tsr_ctx_t *ctx = ctx_new();
  static double v[3 * FINE_CAP], x[FINE_CAP], y[FINE_CAP];
  int ks[] = {1, 4, 16};
  double tols[] = {1e-6, TSR__HPX_EXACT_TOL, 1e-8};
  int64_t nsides[] = {1, 2, 8, 64, 512, 2048, 8192, 65536};
  printf("# max |area / (4 pi / npix) - 1| over pixels everywhere (polar rings, transition,\n"
         "# equator, random); uniform k points per edge, and adaptive (sag <= tol x pixel\n"
         "# size) with its mean vertex count\n");
  printf("# nside      k=1      k=4     k=16 | tol=1e-6    n | tol=%.0e  n | tol=1e-8    n\n",
         TSR__HPX_EXACT_TOL);
  for (size_t in = 0; in < sizeof nsides / sizeof nsides[0]; in++) {
    int64_t ns = nsides[in];
    char line[256];
    int len = snprintf(line, sizeof line, "# %5lld", (long long)ns);
    double exact = 4 * M_PI / (double)tsr__hpx_npix(ns);
    for (size_t ik = 0; ik < sizeof ks / sizeof ks[0] + sizeof tols / sizeof tols[0]; ik++) {
      double worst = 0, nv = 0, npx = 0;
      for (int nest = 0; nest < 2; nest++)
        for (int i = 0; i < 300; i++) {
          int64_t p = pick_pixel(ns, i, 300);
          double c[3];
          int n;
          if (p < 0)
            break;
          if (ik < 3) {
            n = 4 * ks[ik];
            tsr__hpx_boundary(ns, nest, p, ks[ik], v);
          } else
            n = tsr__hpx_boundary_fine(ns, nest, p, tols[ik - 3], TSR__HPX_MAX_DEPTH, v, FINE_CAP);
          ASSERT(n >= 4);
          tsr__hpx_pix2vec(ns, nest, p, c);
          worst = fmax(worst, fabs(polygon_area(c, v, n, x, y) / exact - 1));
          nv += n, npx++;
        }
      if (ik < 3)
        len += snprintf(line + len, sizeof line - (size_t)len, " %8.1e", worst);
      else
        len += snprintf(line + len, sizeof line - (size_t)len, " | %7.1e %4.0f", worst, nv / npx);
      if (ik == 4)
        ASSERT(worst < 1e-6);
    }
    printf("%s\n", line);
  }
  tsr_ctx_free(ctx);
}

TEST(boundary_points_agree_with_astropy_healpix) {
  tsr_ctx_t *ctx = ctx_new();
  char cmd[4096], line[256];
  static double v[3 * 4 * 64];
  long long nside, pix;
  int nested, k = 0, i = 0, npix = 0;
  double worst = 0;
  FILE *p;
  snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s/hpx_boundaries_astropy.py 2>&1", th_srcdir());
  p = popen(cmd, "r");
  ASSERT(p != NULL);
  while (fgets(line, sizeof line, p)) {
    double lon, lat;
    if (sscanf(line, "B %lld %d %lld %d", &nside, &nested, &pix, &k) == 4) {
      ASSERT(k >= 1 && k <= 64);
      tsr__hpx_boundary(nside, nested, pix, k, v);
      i = 0;
      npix++;
    } else if (sscanf(line, "%lf %lf", &lon, &lat) == 2) {
      ASSERT(i < 4 * k);
      double u[3] = {cos(lat) * cos(lon), cos(lat) * sin(lon), sin(lat)};
      double *m = v + 3 * i++;
      double cx = u[1] * m[2] - u[2] * m[1], cy = u[2] * m[0] - u[0] * m[2],
             cz = u[0] * m[1] - u[1] * m[0];
      double e = atan2(sqrt(cx * cx + cy * cy + cz * cz), u[0] * m[0] + u[1] * m[1] + u[2] * m[2]);
      if (!(e <= 1e-12))
        th_fail(__FILE__, __LINE__, "nside %lld %s pixel %lld, k %d, point %d: %.3g rad from astropy-healpix",
                nside, nested ? "NESTED" : "RING", pix, k, i - 1, e);
      worst = fmax(worst, e);
    } else
      th_fail(__FILE__, __LINE__, "hpx_boundaries_astropy.py: %s", line);
  }
  ASSERT_INT_EQ(pclose(p), 0);
  printf("# %d boundaries, worst point %.2g rad from astropy-healpix\n", npix, worst);
  ASSERT(npix > 300);
  tsr_ctx_free(ctx);
}

/* ------------------------------------------------------------------ */
/* Exact reprojection from HEALPix                                      */

/* A TAN target of nx x ny pixels of `scale` degrees at (lon, lat) in
 * frame `sys` ("GLON"/"GLAT" or "RA--"/"DEC-"), rotated by `rot` degrees. */
static tsr_wcs_t *target_at(tsr_ctx_t *ctx, const char *lon_t, const char *lat_t, int nx, int ny,
                            double lon, double lat, double scale, double rot) {
  char text[1024];
  tsr_wcs_t *w;
  double c = cos(rot * M_PI / 180), s = sin(rot * M_PI / 180);
  snprintf(text, sizeof text,
           "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = '%s-TAN'\nCTYPE2 = '%s-TAN'\n"
           "CRPIX1 = %.17g\nCRPIX2 = %.17g\nCRVAL1 = %.17g\nCRVAL2 = %.17g\n"
           "CD1_1 = %.17g\nCD1_2 = %.17g\nCD2_1 = %.17g\nCD2_2 = %.17g\n",
           nx, ny, lon_t, lat_t, nx / 2 + 0.5, ny / 2 + 0.5, lon, lat, -scale * c, scale * s,
           scale * s, scale * c);
  ASSERT_OK(tsr_wcs_parse(ctx, text, strlen(text), "target", 1, &w));
  return w;
}

/* A smooth map with structure at the pixel scale: v = 2 + sin(5 lon) cos(3
 * lat) + 0.3 (pixel hash in [0, 1)). */
static void fill_map(double *m, int64_t nside, bool nested) {
  for (int64_t p = 0; p < tsr__hpx_npix(nside); p++) {
    double lon, lat;
    uint64_t h = (uint64_t)p * 0x9E3779B97F4A7C15ull;
    tsr__hpx_pix2ang(nside, nested, p, &lon, &lat);
    m[p] = 2 + sin(5 * lon) * cos(3 * lat) + 0.3 * (double)(h >> 11) / 9007199254740992.0;
  }
}

/* Output pixel solid angles (the quadrilaterals between the corners). */
static double *pixel_areas(tsr_ctx_t *ctx, const tsr_wcs_t *t, int nx, int ny) {
  tsr__cel_t *cel;
  double *a = malloc(sizeof(double) * (size_t)nx * (size_t)ny);
  ASSERT(a != NULL);
  ASSERT_OK(tsr__cel_new(ctx, t, "target", &cel));
  for (int y = 0; y < ny; y++)
    for (int x = 0; x < nx; x++) {
      double xs[4] = {x - 0.5, x + 0.5, x + 0.5, x - 0.5}, ys[4] = {y - 0.5, y - 0.5, y + 0.5, y + 0.5};
      double v[12];
      tsr__cel_pix2vec(cel, 4, xs, ys, v);
      a[y * nx + x] = tsr__sph_area(v, 4);
    }
  tsr__cel_free(cel);
  return a;
}

/* A new graph *g holding map m (a caller buffer of nside's 12 nside^2
 * doubles, ordering and frame given) as a source, and exact options for
 * it in *o.  Returns the source. */
static tsr_node_t *exact_setup(tsr_ctx_t *ctx, tsr_graph_t **g, const double *m, int64_t nside,
                               bool nested, const char *coordsys, tsr_from_healpix_opts_t *o) {
  int64_t shape[1] = {tsr__hpx_npix(nside)};
  tsr_from_healpix_opts_t d = TSR_FROM_HEALPIX_OPTS_INIT;
  ASSERT_OK(tsr_graph_new(ctx, g));
  *o = d;
  o->method = TSR_HEALPIX_EXACT;
  o->nested = nested;
  o->coordsys = coordsys;
  return tsr_source_buffer_ref(*g, TSR_F64, 1, shape, m, NULL);
}

typedef struct {
  const char *lon_t, *lat_t, *coordsys;
  int64_t nside;
  bool nested;
  double lon, lat, scale, rot, patch_deg;
  int n;
} flux_case_t;

/* Flux: the map is the smooth field inside a disc of patch_deg about the
 * image centre and 0 outside; the image covers the disc with room to
 * spare, so sum(out x pixel solid angle) must equal sum(v x 4 pi / npix)
 * over the map's pixels. */
static void flux_case(const flux_case_t *fc) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  int64_t npix = tsr__hpx_npix(fc->nside);
  double *m = malloc(sizeof(double) * (size_t)npix), *out = malloc(sizeof(double) * (size_t)(fc->n * fc->n));
  double *fp = malloc(sizeof(double) * (size_t)(fc->n * fc->n));
  tsr_wcs_t *t = target_at(ctx, fc->lon_t, fc->lat_t, fc->n, fc->n, fc->lon, fc->lat, fc->scale, fc->rot);
  double centre[3], want = 0, got = 0, *area;
  tsr__frame_t from, to;
  tsr__frame_xform_t xf;
  tsr__cel_t *cel;
  ASSERT(m && out && fp);
  fill_map(m, fc->nside, fc->nested);
  /* The image centre, in the map's frame. */
  ASSERT_OK(tsr__cel_new(ctx, t, "target", &cel));
  {
    double x = fc->n / 2 - 0.5 + 0.5, y = x;
    tsr__cel_pix2vec(cel, 1, &x, &y, centre);
  }
  from = *tsr__cel_frame(cel);
  ASSERT_OK(tsr__hpx_frame(fc->coordsys[0], &to));
  tsr__frame_xform(&from, &to, &xf);
  tsr__frame_apply(&xf, 1, centre);
  tsr__cel_free(cel);
  for (int64_t p = 0; p < npix; p++) {
    double v[3];
    tsr__hpx_pix2vec(fc->nside, fc->nested, p, v);
    if (acos(fmin(1, v[0] * centre[0] + v[1] * centre[1] + v[2] * centre[2])) > fc->patch_deg * M_PI / 180)
      m[p] = 0;
    want += m[p] * 4 * M_PI / (double)npix;
  }
  tsr_from_healpix_opts_t o;
  tsr_node_t *src = exact_setup(ctx, &g, m, fc->nside, fc->nested, fc->coordsys, &o);
  tsr_node_t *r = tsr_reproject_from_healpix(g, src, t, &o);
  tsr_node_t *planes[2] = {r, tsr_footprint(g, r)};
  void *dsts[2] = {out, fp};
  ASSERT_INT_EQ(tsr_graph_status(g), 0);
  ASSERT_OK(tsr_compute_planes(g, 2, planes, NULL, dsts, sizeof(double) * (size_t)(fc->n * fc->n), NULL));
  area = pixel_areas(ctx, t, fc->n, fc->n);
  double worst_fp = 0;
  for (int k = 0; k < fc->n * fc->n; k++) {
    ASSERT(isfinite(out[k]));
    got += out[k] * area[k];
    worst_fp = fmax(worst_fp, fabs(fp[k] - 1));
  }
  printf("# nside %lld %s at (%g, %g) %s, %g deg/px: flux %.12g vs %.12g (%.2g), footprint 1 - %.2g\n",
         (long long)fc->nside, fc->nested ? "NESTED" : "RING", fc->lon, fc->lat, fc->coordsys,
         fc->scale, got, want, got / want - 1, worst_fp);
  ASSERT(want > 0);
  ASSERT_NEAR(got / want, 1.0, 1e-6);
  ASSERT(worst_fp < 5e-8); /* MIN_FRAC drops slivers of rounding */
  free(area);
  free(m);
  free(out);
  free(fp);
  teardown(ctx, g, t);
}

TEST(exact_conserves_flux_upsampling_equator_and_transition) {
  flux_case_t a = {"GLON", "GLAT", "G", 64, false, 40.3, 12.7, 0.05, 17, 3.0, 200};
  flux_case(&a);
  flux_case_t b = {"GLON", "GLAT", "G", 64, true, 100.0, 41.81, 0.05, -30, 3.0, 200};
  flux_case(&b);
}

TEST(exact_conserves_flux_at_the_poles_and_with_a_frame_change) {
  flux_case_t a = {"GLON", "GLAT", "G", 32, true, 10.0, 89.5, 0.1, 5, 4.0, 150};
  flux_case(&a);
  flux_case_t b = {"RA--", "DEC-", "G", 128, false, 200.0, -88.0, 0.03, 0, 1.5, 160};
  flux_case(&b);
}

TEST(exact_conserves_flux_downsampling) {
  /* Map pixels 0.057 deg, output pixels 0.2 deg: many map pixels each. */
  flux_case_t a = {"RA--", "DEC-", "C", 1024, true, 33.0, -20.0, 0.2, 10, 2.0, 30};
  flux_case(&a);
}

/* Sub-pixel (i, j) of s x s of pixel (x, y) of WCS cel: its solid angle
 * (the quadrilateral between its corners), and its centre in c. */
static double sub_pixel(tsr__cel_t *cel, int x, int y, int i, int j, int s, double c[3]) {
  double x0 = x - 0.5 + (double)i / s, y0 = y - 0.5 + (double)j / s, d = 1.0 / s;
  double xs[5] = {x0, x0 + d, x0 + d, x0, x0 + d / 2}, ys[5] = {y0, y0, y0 + d, y0 + d, y0 + d / 2};
  double v[15];
  tsr__cel_pix2vec(cel, 5, xs, ys, v);
  memcpy(c, v + 12, 3 * sizeof(double));
  return tsr__sph_area(v, 4);
}

/* Brute force: each output pixel split into s x s sub-pixels (their own
 * quadrilaterals, weighted by solid angle), each given the value of the
 * map pixel holding its centre. */
TEST(exact_agrees_with_a_brute_force_sampled_reference) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  int64_t nside = 32;
  const int n = 24, s = 48;
  static double m[12 * 32 * 32], out[24 * 24];
  tsr_wcs_t *t = target_at(ctx, "GLON", "GLAT", n, n, 120.0, 60.0, 0.25, 20);
  tsr__cel_t *cel;
  double worst = 0, sum2 = 0;
  fill_map(m, nside, false);
  tsr_from_healpix_opts_t o;
  tsr_node_t *src = exact_setup(ctx, &g, m, nside, 0, "G", &o);
  tsr_node_t *r = tsr_reproject_from_healpix(g, src, t, &o);
  ASSERT_INT_EQ(tsr_graph_status(g), 0);
  ASSERT_OK(tsr_compute(g, r, NULL, out, sizeof out, NULL));
  ASSERT_OK(tsr__cel_new(ctx, t, "target", &cel));
  for (int y = 0; y < n; y++)
    for (int x = 0; x < n; x++) {
      double num = 0, den = 0;
      for (int j = 0; j < s; j++)
        for (int i = 0; i < s; i++) {
          double c[3], a = sub_pixel(cel, x, y, i, j, s, c);
          num += a * m[tsr__hpx_vec2pix(nside, false, c)];
          den += a;
        }
      double e = fabs(out[y * n + x] - num / den);
      worst = fmax(worst, e);
      sum2 += e * e;
    }
  printf("# %dx%d output pixels of 0.25 deg from nside 32 (1.8 deg): |exact - brute force "
         "(%dx%d sub-pixels)| max %.3g, rms %.3g (values 1..3.3)\n",
         n, n, s, s, worst, sqrt(sum2 / (n * n)));
  /* A sub-pixel straddling a map edge is wholly given to one side: the
   * reference's own error is a random walk of (jump) / s^2 steps along the
   * edges, a few 1e-4 here (measured 4.7e-4 at most, 4.6e-5 rms); a
   * wrong overlap would show as the jump (0.3 to 2) times its area. */
  ASSERT(worst < 2e-3);
  ASSERT(sqrt(sum2 / (n * n)) < 3e-4);
  tsr__cel_free(cel);
  teardown(ctx, g, t);
}

/* The same result, bit for bit, from any block size, any region (a
 * slice of the whole) and the threads executor. */
TEST(exact_gives_the_same_bits_for_blocks_regions_and_threads) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  int64_t nside = 64;
  enum { N = 90 };
  static double m[12 * 64 * 64];
  static float a[N * N], b[N * N], c[N * N], fa[N * N], fb[N * N];
  tsr_wcs_t *t = target_at(ctx, "RA--", "DEC-", N, N, 250.0, 70.0, 0.08, 33);
  fill_map(m, nside, true);
  tsr_from_healpix_opts_t o;
  tsr_node_t *src = exact_setup(ctx, &g, m, nside, 1, "G", &o);
  o.dtype = TSR_F32;
  tsr_node_t *r1 = tsr_reproject_from_healpix(g, src, t, &o);
  o.block[0] = 17, o.block[1] = 29;
  tsr_node_t *r2 = tsr_reproject_from_healpix(g, src, t, &o);
  ASSERT_INT_EQ(tsr_graph_status(g), 0);
  ASSERT(r1 != r2);
  tsr_node_t *p1[2] = {r1, tsr_footprint(g, r1)}, *p2[2] = {r2, tsr_footprint(g, r2)};
  void *d1[2] = {a, fa}, *d2[2] = {b, fb};
  ASSERT_OK(tsr_compute_planes(g, 2, p1, NULL, d1, sizeof a, NULL));
  ASSERT_OK(tsr_compute_planes(g, 2, p2, NULL, d2, sizeof b, NULL));
  ASSERT(memcmp(a, b, sizeof a) == 0);
  ASSERT(memcmp(fa, fb, sizeof fa) == 0);
  {
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    ro.jobs = 2;
    ro.executor = TSR_EXECUTOR_THREADS;
    ASSERT_OK(tsr_compute(g, r2, NULL, c, sizeof c, &ro));
    ASSERT(memcmp(a, c, sizeof a) == 0);
  }
  {
    tsr_region_t reg = {{13, 40, 0, 0}, {71, 57, 1, 1}};
    static float sub[58 * 17];
    ASSERT_OK(tsr_compute(g, r1, &reg, sub, sizeof sub, NULL));
    for (int y = 0; y < 17; y++)
      ASSERT(memcmp(sub + y * 58, a + (y + 40) * N + 13, 58 * sizeof(float)) == 0);
  }
  for (int k = 0; k < N * N; k++)
    ASSERT(isfinite(a[k]) && fabsf(fa[k] - 1) < 1e-6f);
  teardown(ctx, g, t);
}

TEST(exact_nan_and_unseen_pixels_propagate_or_are_ignored) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  int64_t nside = 16;
  enum { N = 40 };
  static double m[12 * 16 * 16], vp[N * N], fpp[N * N], vi[N * N], fpi[N * N], v0[N * N], f0[N * N];
  tsr_wcs_t *t = target_at(ctx, "GLON", "GLAT", N, N, 60.0, 20.0, 0.25, 0);
  tsr__cel_t *cel;
  int64_t bad1, bad2;
  int spoiled = 0;
  fill_map(m, nside, false);
  bad1 = tsr__hpx_ang2pix(nside, false, 60.0 * M_PI / 180, 20.0 * M_PI / 180);
  bad2 = tsr__hpx_ang2pix(nside, false, 63.0 * M_PI / 180, 17.0 * M_PI / 180);
  ASSERT(bad1 != bad2);
  tsr_from_healpix_opts_t o;
  tsr_node_t *src = exact_setup(ctx, &g, m, nside, 0, "G", &o);
  tsr_node_t *rp = tsr_reproject_from_healpix(g, src, t, &o);
  o.nan_mode = TSR_NAN_IGNORE;
  tsr_node_t *ri = tsr_reproject_from_healpix(g, src, t, &o);
  tsr_node_t *pp[2] = {rp, tsr_footprint(g, rp)}, *pi[2] = {ri, tsr_footprint(g, ri)};
  void *dp[2] = {vp, fpp}, *di[2] = {vi, fpi}, *d0[2] = {v0, f0};
  ASSERT_INT_EQ(tsr_graph_status(g), 0);
  ASSERT_OK(tsr_compute_planes(g, 2, pp, NULL, d0, sizeof v0, NULL));
  m[bad1] = NAN;
  m[bad2] = TSR__HPX_UNSEEN;
  ASSERT_OK(tsr_compute_planes(g, 2, pp, NULL, dp, sizeof vp, NULL));
  ASSERT_OK(tsr_compute_planes(g, 2, pi, NULL, di, sizeof vi, NULL));
  ASSERT_OK(tsr__cel_new(ctx, t, "target", &cel));
  for (int y = 0; y < N; y++)
    for (int x = 0; x < N; x++) {
      int k = y * N + x;
      /* Does this pixel's centre lie in a bad map pixel?  Then it overlaps it. */
      double px = x, py = y, v[3];
      tsr__cel_pix2vec(cel, 1, &px, &py, v);
      int64_t p = tsr__hpx_vec2pix(nside, false, v);
      /* Overlaps under MIN_FRAC (1e-8) of an output pixel are dropped as
       * rounding: a bad pixel touching less neither spoils nor counts. */
      bool touches = fpi[k] < 1 - 5e-9, surely = fpi[k] < 1 - 1e-7;
      if (p == bad1 || p == bad2)
        ASSERT(surely);
      /* propagate: NaN exactly where a bad pixel overlaps, footprint whole */
      ASSERT(!isnan(vp[k]) || touches);
      ASSERT(isnan(vp[k]) || !surely);
      ASSERT_NEAR(fpp[k], 1.0, 1e-9);
      spoiled += touches;
      /* ignore: the mean over the good pixels, footprint their coverage */
      ASSERT(isfinite(vi[k]) || fpi[k] < 1e-9);
      if (!touches)
        ASSERT(vi[k] == v0[k]);
    }
  printf("# %d of %d output pixels meet the NaN or UNSEEN map pixel\n", spoiled, N * N);
  ASSERT(spoiled > 100 && spoiled < N * N / 2);
  tsr__cel_free(cel);
  teardown(ctx, g, t);
}

TEST(exact_reads_only_the_rows_a_small_region_needs) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  const char *path = th_path("map256x.fits");
  tsr_wcs_t *t = tan_target(ctx, 64);
  static float got[64 * 64], fp[64 * 64];
  write_map(path, 256);
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *src = tsr_source_healpix(g, path, NULL);
  tsr_from_healpix_opts_t o = TSR_FROM_HEALPIX_OPTS_INIT;
  o.method = TSR_HEALPIX_EXACT;
  tsr_node_t *out = tsr_reproject_from_healpix(g, src, t, &o);
  tsr_node_t *planes[2] = {out, tsr_footprint(g, out)};
  void *dsts[2] = {got, fp};
  ASSERT_INT_EQ(tsr_graph_status(g), 0);
  atomic_store(&tsr__healpix_rows_read, 0);
  ASSERT_OK(tsr_compute_planes(g, 2, planes, NULL, dsts, sizeof got, NULL));
  int64_t rows = atomic_load(&tsr__healpix_rows_read);
  printf("# exact: a 1.3 deg patch read %lld of 768 rows\n", (long long)rows);
  ASSERT(rows > 0 && rows < 768 / 20);
  /* Values are pixel indices: each output is a mean of the indices of the
   * map pixels it meets, which all hold... within the range of those. */
  for (int k = 0; k < 64 * 64; k++)
    ASSERT(isfinite(got[k]) && fabsf(fp[k] - 1) < 1e-5f);
  teardown(ctx, g, t);
}

TEST(exact_method_and_nan_mode_are_checked) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  static float map[12 * 4 * 4];
  int64_t shape[1] = {12 * 4 * 4};
  tsr_wcs_t *t = tan_target(ctx, 8);
  tsr_from_healpix_opts_t o = TSR_FROM_HEALPIX_OPTS_INIT;
  o.nested = 0, o.coordsys = "C";
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *src = tsr_source_buffer(g, TSR_F32, 1, shape, map, NULL);
  o.method = (tsr_healpix_method_t)7;
  ASSERT(tsr_reproject_from_healpix(g, src, t, &o) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "method 7 is not TSR_HEALPIX_INTERP (0) or TSR_HEALPIX_EXACT (1)");
  tsr_graph_free(g);
  ASSERT_OK(tsr_graph_new(ctx, &g));
  src = tsr_source_buffer(g, TSR_F32, 1, shape, map, NULL);
  o.method = TSR_HEALPIX_EXACT;
  o.nan_mode = (tsr_nan_mode_t)3;
  ASSERT(tsr_reproject_from_healpix(g, src, t, &o) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "nan_mode 3 is not TSR_NAN_PROPAGATE (0)");
  teardown(ctx, g, t);
}

/* ------------------------------------------------------------------ */
/* Exact reprojection to HEALPix                                        */

/* A smooth image with pixel-scale structure over target t (nx x ny). */
static double *fill_image(int nx, int ny) {
  double *im = malloc(sizeof(double) * (size_t)nx * (size_t)ny);
  ASSERT(im != NULL);
  for (int y = 0; y < ny; y++)
    for (int x = 0; x < nx; x++) {
      uint64_t h = (uint64_t)(y * nx + x + 1) * 0x9E3779B97F4A7C15ull;
      im[y * nx + x] = 2 + sin(0.3 * x) * cos(0.2 * y) + 0.3 * (double)(h >> 11) / 9007199254740992.0;
    }
  return im;
}

/* The exact map of image im over t into nside (ordering, frame cs), with
 * opts changed by the caller through *o first; map and footprint out. */
static void to_exact(tsr_ctx_t *ctx, const double *im, const tsr_wcs_t *t, int64_t nside,
                     const tsr_to_healpix_opts_t *o, double *map, double *fp) {
  tsr_graph_t *g;
  int64_t shape[2] = {tsr_wcs_shape(t, 0), tsr_wcs_shape(t, 1)};
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *src = tsr_source_buffer_ref(g, TSR_F64, 2, shape, im, t);
  tsr_node_t *r = tsr_reproject_to_healpix(g, src, nside, o);
  tsr_node_t *planes[2] = {r, tsr_footprint(g, r)};
  void *dsts[2] = {map, fp};
  ASSERT_INT_EQ(tsr_graph_status(g), 0);
  ASSERT_OK(tsr_compute_planes(g, 2, planes, NULL, dsts, sizeof(double) * (size_t)tsr__hpx_npix(nside),
                               NULL));
  tsr_graph_free(g);
}

static void to_flux_case(const flux_case_t *fc) {
  tsr_ctx_t *ctx = ctx_new();
  int64_t npix = tsr__hpx_npix(fc->nside);
  tsr_wcs_t *t = target_at(ctx, fc->lon_t, fc->lat_t, fc->n, fc->n, fc->lon, fc->lat, fc->scale, fc->rot);
  double *im = fill_image(fc->n, fc->n), *area = pixel_areas(ctx, t, fc->n, fc->n);
  double *map = malloc(sizeof(double) * (size_t)npix), *fp = malloc(sizeof(double) * (size_t)npix);
  double want = 0, got = 0;
  int64_t full = 0;
  tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
  ASSERT(map && fp);
  o.method = TSR_TO_HEALPIX_EXACT;
  o.nested = fc->nested;
  o.coordsys = fc->coordsys;
  to_exact(ctx, im, t, fc->nside, &o, map, fp);
  for (int k = 0; k < fc->n * fc->n; k++)
    want += im[k] * area[k];
  for (int64_t p = 0; p < npix; p++) {
    if (fp[p] > 0) {
      ASSERT(isfinite(map[p]));
      got += map[p] * fp[p] * 4 * M_PI / (double)npix;
      full += fp[p] > 1 - 1e-9;
    } else
      ASSERT(isnan(map[p]));
  }
  printf("# image %dx%d at %g deg/px -> nside %lld %s %s at (%g, %g): flux %.12g vs %.12g "
         "(%.2g), %lld map pixels covered whole\n",
         fc->n, fc->n, fc->scale, (long long)fc->nside, fc->nested ? "NESTED" : "RING",
         fc->coordsys, fc->lon, fc->lat, got, want, got / want - 1, (long long)full);
  ASSERT_NEAR(got / want, 1.0, 1e-6);
  free(im);
  free(area);
  free(map);
  free(fp);
  tsr_wcs_free(t);
  tsr_ctx_free(ctx);
}

TEST(to_healpix_exact_conserves_flux) {
  flux_case_t a = {"GLON", "GLAT", "G", 64, false, 40.3, 12.7, 0.05, 17, 0, 120};
  to_flux_case(&a); /* map pixels larger than the image's */
  flux_case_t b = {"RA--", "DEC-", "G", 1024, true, 100.0, 41.81, 0.2, -30, 0, 40};
  to_flux_case(&b); /* smaller, and a frame change */
  flux_case_t c = {"RA--", "DEC-", "C", 128, false, 10.0, 89.6, 0.03, 5, 0, 90};
  to_flux_case(&c); /* on the pole */
}

/* Brute force: every image pixel split into s x s sub-pixels, each worth
 * its solid angle, given to the map pixel holding its centre; a map
 * pixel's value is the weighted mean of what it gets. */
TEST(to_healpix_exact_agrees_with_a_brute_force_sampled_reference) {
  tsr_ctx_t *ctx = ctx_new();
  const int n = 40, s = 24;
  int64_t nside = 32, npix = tsr__hpx_npix(nside);
  tsr_wcs_t *t = target_at(ctx, "GLON", "GLAT", n, n, 120.0, 60.0, 0.4, 20);
  double *im = fill_image(n, n);
  static double map[12 * 32 * 32], fp[12 * 32 * 32], num[12 * 32 * 32], den[12 * 32 * 32];
  tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
  tsr__cel_t *cel;
  double worst = 0, wfp = 0;
  int compared = 0;
  o.method = TSR_TO_HEALPIX_EXACT;
  to_exact(ctx, im, t, nside, &o, map, fp);
  ASSERT_OK(tsr__cel_new(ctx, t, "target", &cel));
  for (int y = 0; y < n; y++)
    for (int x = 0; x < n; x++)
      for (int j = 0; j < s; j++)
        for (int i = 0; i < s; i++) {
          double c[3], a = sub_pixel(cel, x, y, i, j, s, c);
          int64_t p = tsr__hpx_vec2pix(nside, false, c);
          num[p] += a * im[y * n + x];
          den[p] += a;
        }
  for (int64_t p = 0; p < npix; p++) {
    if (den[p] == 0) {
      ASSERT(!(fp[p] > 1e-3));
      continue;
    }
    double ref = num[p] / den[p];
    /* Where the image covers a sliver of the pixel the reference has few
     * sub-pixels: compare where it covers a tenth or more. */
    wfp = fmax(wfp, fabs(fp[p] - den[p] / (4 * M_PI / (double)npix)));
    if (fp[p] < 0.1)
      continue;
    worst = fmax(worst, fabs(map[p] - ref));
    compared++;
  }
  printf("# %d map pixels of nside 32 over a %dx%d image of 0.4 deg (%dx%d sub-pixels): "
         "|exact - brute force| max %.3g; footprint max diff %.3g\n",
         compared, n, n, s, s, worst, wfp);
  ASSERT(compared > 10);
  ASSERT(worst < 2e-3); /* measured 3.2e-4 */
  ASSERT(wfp < 3e-3);   /* measured 7.3e-4 */
  tsr__cel_free(cel);
  free(im);
  tsr_wcs_free(t);
  tsr_ctx_free(ctx);
}

TEST(to_healpix_exact_same_bits_for_chunks_and_threads_and_nan) {
  tsr_ctx_t *ctx = ctx_new();
  const int n = 60;
  int64_t nside = 64, npix = tsr__hpx_npix(nside);
  tsr_wcs_t *t = target_at(ctx, "RA--", "DEC-", n, n, 250.0, -30.0, 0.1, 33);
  double *im = fill_image(n, n);
  static double a[12 * 64 * 64], fa[12 * 64 * 64], b[12 * 64 * 64], fb[12 * 64 * 64];
  tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
  o.method = TSR_TO_HEALPIX_EXACT;
  o.nested = 1;
  o.coordsys = "G";
  to_exact(ctx, im, t, nside, &o, a, fa);
  o.chunk = 37;
  to_exact(ctx, im, t, nside, &o, b, fb);
  ASSERT(memcmp(a, b, sizeof a) == 0 && memcmp(fa, fb, sizeof fa) == 0);
  {
    tsr_graph_t *g;
    int64_t shape[2] = {n, n};
    tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
    ro.jobs = 2;
    ro.executor = TSR_EXECUTOR_THREADS;
    ASSERT_OK(tsr_graph_new(ctx, &g));
    tsr_node_t *r = tsr_reproject_to_healpix(g, tsr_source_buffer_ref(g, TSR_F64, 2, shape, im, t),
                                             nside, &o);
    ASSERT_OK(tsr_compute(g, r, NULL, b, sizeof b, &ro));
    ASSERT(memcmp(a, b, sizeof a) == 0);
    tsr_graph_free(g);
  }
  /* One NaN image pixel: propagate spoils the map pixels it overlaps
   * (footprint unchanged), ignore leaves it out. */
  im[30 * n + 30] = NAN;
  o.chunk = 0;
  to_exact(ctx, im, t, nside, &o, b, fb);
  int spoiled = 0;
  for (int64_t p = 0; p < npix; p++) {
    ASSERT(fb[p] == fa[p]);
    if (isnan(b[p]) && !isnan(a[p]))
      spoiled++;
    else
      ASSERT(b[p] == a[p] || (isnan(a[p]) && isnan(b[p])));
  }
  ASSERT(spoiled >= 1 && spoiled <= 4);
  o.nan_mode = TSR_NAN_IGNORE;
  to_exact(ctx, im, t, nside, &o, b, fb);
  for (int64_t p = 0; p < npix; p++)
    ASSERT(isnan(b[p]) == isnan(a[p]) && (fb[p] < fa[p]) == (fb[p] != fa[p]));
  free(im);
  tsr_wcs_free(t);
  tsr_ctx_free(ctx);
}

TEST_MAIN()
