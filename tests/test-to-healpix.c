/* test-to-healpix.c -- reprojection onto HEALPix maps (tsr_reproject_to_healpix),
 * HEALPix tables out (tsr_write_healpix) and mosaics of maps.  Known
 * answers come from an image linear in its pixels, where bilinear
 * interpolation is exact, against wcslib's own world -> pixel mapping of
 * each map pixel centre.  Conformance with reproject 0.10 is in
 * tests/conformance/conformance_to_healpix.py. */
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"
#include "hpx.h"
#include "internal.h"
#include "sky.h"

static tsr_ctx_t *ctx_new(void) {
  tsr_ctx_t *ctx;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr__hpx_load(ctx));
  return ctx;
}

/* A TAN (or other) WCS of nx x ny pixels at (lon, lat), `scale` deg/px,
 * rotated `rot` degrees, in frame ctype RA/DEC or GLON/GLAT. */
static tsr_wcs_t *image_wcs(tsr_ctx_t *ctx, int nx, int ny, const char *lon_ct,
                            const char *lat_ct, double lon, double lat, double scale, double rot) {
  char text[2048];
  tsr_wcs_t *w;
  double r = rot * M_PI / 180;
  snprintf(text, sizeof text,
           "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = '%s'\nCTYPE2 = '%s'\n"
           "CRPIX1 = %.17g\nCRPIX2 = %.17g\nCRVAL1 = %.17g\nCRVAL2 = %.17g\n"
           "CD1_1 = %.17g\nCD1_2 = %.17g\nCD2_1 = %.17g\nCD2_2 = %.17g\n",
           nx, ny, lon_ct, lat_ct, nx / 2 + 0.5, ny / 2 + 0.3, lon, lat, -scale * cos(r),
           scale * sin(r), scale * sin(r), scale * cos(r));
  ASSERT_OK(tsr_wcs_parse(ctx, text, strlen(text), "image", 1, &w));
  return w;
}

static double linear(double x, double y) { return 3 * x + 5 * y + 1; }

static double *linear_image(int nx, int ny) {
  static double buf[4][400 * 400];
  static int next;
  double *d = buf[next++ % 4];
  ASSERT(nx * ny <= 400 * 400);
  for (int y = 0; y < ny; y++)
    for (int x = 0; x < nx; x++)
      d[y * nx + x] = linear(x, y);
  return d;
}

/* The image pixel coordinates of map pixels (map frame `cs`), by wcslib. */
typedef struct {
  tsr__cel_t *cel;
  tsr__frame_xform_t xf;
  int64_t nside;
  bool nested;
} locator_t;

static void locator_open(tsr_ctx_t *ctx, locator_t *l, const tsr_wcs_t *w, int64_t nside,
                         bool nested, char cs) {
  tsr__frame_t mf;
  ASSERT_OK(tsr__cel_new(ctx, w, "image", &l->cel));
  tsr__hpx_frame(cs, &mf);
  tsr__frame_xform(&mf, tsr__cel_frame(l->cel), &l->xf);
  l->nside = nside, l->nested = nested;
}

static void where_in_image(locator_t *l, int64_t p, double *x, double *y) {
  double v[3];
  tsr__hpx_pix2vec(l->nside, l->nested, p, v);
  tsr__frame_apply(&l->xf, 1, v);
  tsr__cel_vec2pix(l->cel, 1, v, x, y);
}

/* Every map value against the known answer: NaN off [0, n - 1], the
 * linear function (bilinear) or its value at the rounded pixel (nearest). */
static void check_against_wcslib(tsr_ctx_t *ctx, const tsr_wcs_t *w, int nx, int ny,
                                 int64_t nside, bool nested, char cs, int order,
                                 const double *map, int64_t *n_in) {
  locator_t l;
  locator_open(ctx, &l, w, nside, nested, cs);
  *n_in = 0;
  for (int64_t p = 0; p < tsr__hpx_npix(nside); p++) {
    double x, y, want;
    where_in_image(&l, p, &x, &y);
    if (!(x >= 0 && x <= nx - 1 && y >= 0 && y <= ny - 1)) {
      if (map[p] == map[p])
        th_fail(__FILE__, __LINE__, "pixel %lld at image (%.9f, %.9f) is %g; expected NaN",
                (long long)p, x, y, map[p]);
      continue;
    }
    /* A centre within 1e-6 px of the image's edge may fall either side. */
    if (fmin(fmin(x, nx - 1 - x), fmin(y, ny - 1 - y)) < 1e-6 && map[p] != map[p])
      continue;
    want = order == 0 ? linear(floor(x + 0.5), floor(y + 0.5)) : linear(x, y);
    if (order == 0 && (fabs(x - floor(x) - 0.5) < 1e-6 || fabs(y - floor(y) - 0.5) < 1e-6))
      continue; /* a tie: rounding either way is right */
    if (!(fabs(map[p] - want) < 1e-7))
      th_fail(__FILE__, __LINE__, "pixel %lld at image (%.9f, %.9f) is %.12g; expected %.12g",
              (long long)p, x, y, map[p], want);
    (*n_in)++;
  }
  tsr__cel_free(l.cel);
}

static double *compute_map(tsr_graph_t *g, tsr_node_t *n, const tsr_run_opts_t *ro) {
  int64_t npix = tsr_node_shape(n, 0);
  double *map = tsr__malloc(g->ctx, (size_t)npix * sizeof *map);
  ASSERT(map != NULL);
  ASSERT(tsr_node_dtype(n) == TSR_F64);
  ASSERT_OK(tsr_compute(g, n, NULL, map, (size_t)npix * sizeof *map, ro));
  return map;
}

TEST(values_are_the_image_at_each_pixel_centre_for_every_layout) {
  tsr_ctx_t *ctx = ctx_new();
  struct {
    const char *lon, *lat;
    double clon, clat, scale, rot;
    int64_t nside;
    int nested;
    char cs;
    int order;
  } cases[] = {
      {"RA---TAN", "DEC--TAN", 83.6, 22.0, 0.2, 30, 64, 0, 'G', 1},
      {"RA---TAN", "DEC--TAN", 83.6, 22.0, 0.2, 30, 64, 1, 'C', 0},
      {"GLON-TAN", "GLAT-TAN", 120.0, 88.0, 0.3, -10, 128, 0, 'E', 1}, /* over the pole */
      {"RA---SIN", "DEC--SIN", 0.3, -40.0, 0.25, 45, 100, 0, 'C', 1},  /* nside not 2^k */
      {"RA---ZEA", "DEC--ZEA", 359.8, 10.0, 0.4, 0, 32, 1, 'G', 0},    /* across lon 0 */
      {"GLON-CAR", "GLAT-CAR", 200.0, -5.0, 0.5, 0, 64, 0, 'G', 1},
  };
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    tsr_graph_t *g;
    int nx = 60, ny = 45;
    int64_t shape[2] = {nx, ny}, n_in;
    tsr_wcs_t *w = image_wcs(ctx, nx, ny, cases[c].lon, cases[c].lat, cases[c].clon,
                             cases[c].clat, cases[c].scale, cases[c].rot);
    char cs[2] = {cases[c].cs, 0};
    tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
    ASSERT_OK(tsr_graph_new(ctx, &g));
    o.order = (tsr_order_t)cases[c].order;
    o.nested = cases[c].nested;
    o.coordsys = cs;
    tsr_node_t *src = tsr_source_buffer(g, TSR_F64, 2, shape, linear_image(nx, ny), w);
    tsr_node_t *m = tsr_reproject_to_healpix(g, src, cases[c].nside, &o);
    ASSERT_INT_EQ(tsr_graph_status(g), 0);
    ASSERT_INT_EQ(tsr_node_ndim(m), 1);
    ASSERT_INT_EQ(tsr_node_shape(m, 0), 12 * cases[c].nside * cases[c].nside);
    double *map = compute_map(g, m, NULL);
    check_against_wcslib(ctx, w, nx, ny, cases[c].nside, cases[c].nested, cases[c].cs,
                         cases[c].order, map, &n_in);
    ASSERT(n_in > 20);
    tsr__free(ctx, map);
    tsr_graph_free(g);
    tsr_wcs_free(w);
  }
  tsr_ctx_free(ctx);
}

TEST(a_nan_spoils_its_whole_stencil_even_at_zero_weight) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  int nx = 40, ny = 40;
  int64_t shape[2] = {nx, ny}, nside = 256;
  double *img = linear_image(nx, ny);
  tsr_wcs_t *w = image_wcs(ctx, nx, ny, "RA---TAN", "DEC--TAN", 10, 10, 0.1, 15);
  tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
  int nan_seen = 0, fine = 0;
  locator_t l;
  img[17 * nx + 23] = NAN;
  o.coordsys = "C";
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *m = tsr_reproject_to_healpix(g, tsr_source_buffer(g, TSR_F64, 2, shape, img, w),
                                           nside, &o);
  double *map = compute_map(g, m, NULL);
  locator_open(ctx, &l, w, nside, false, 'C');
  for (int64_t p = 0; p < tsr__hpx_npix(nside); p++) {
    double x, y;
    where_in_image(&l, p, &x, &y);
    if (!(x >= 0 && x <= nx - 1 && y >= 0 && y <= ny - 1))
      continue;
    bool touches = floor(x) <= 23 && floor(x) + 1 >= 23 && floor(y) <= 17 && floor(y) + 1 >= 17;
    ASSERT((map[p] != map[p]) == touches);
    nan_seen += touches;
    fine += !touches;
  }
  ASSERT(nan_seen > 0 && fine > 100);
  tsr__cel_free(l.cel);
  tsr__free(ctx, map);
  tsr_graph_free(g);
  tsr_wcs_free(w);
  tsr_ctx_free(ctx);
}

/* The tilted image of the bit-identity tests: nx x ny, its WCS into *w
 * and its values returned; maps of it are nside 128. */
enum { TILT_NX = 200, TILT_NY = 150, TILT_NSIDE = 128 };
static double *tilted_image(tsr_ctx_t *ctx, tsr_wcs_t **w) {
  *w = image_wcs(ctx, TILT_NX, TILT_NY, "RA---TAN", "DEC--TAN", 150, 60, 0.06, 40);
  return linear_image(TILT_NX, TILT_NY);
}

TEST(every_chunk_size_ordering_and_executor_gives_the_same_bits) {
  tsr_ctx_t *ctx = ctx_new();
  int nx = TILT_NX, ny = TILT_NY;
  int64_t shape[2] = {nx, ny}, nside = TILT_NSIDE, npix = tsr__hpx_npix(nside);
  tsr_wcs_t *w;
  double *img = tilted_image(ctx, &w);
  for (int nested = 0; nested < 2; nested++) {
    double *ref = NULL;
    int64_t chunks[] = {0, 1000, 64, 4096, 77777};
    for (size_t k = 0; k < sizeof chunks / sizeof chunks[0]; k++)
      for (int jobs = 1; jobs <= 2; jobs++) {
        tsr_graph_t *g;
        tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
        tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
        o.nested = nested;
        o.chunk = chunks[k];
        o.coordsys = "G";
        ro.jobs = jobs;
        ro.executor = TSR_EXECUTOR_THREADS;
        ASSERT_OK(tsr_graph_new(ctx, &g));
        tsr_node_t *m =
            tsr_reproject_to_healpix(g, tsr_source_buffer(g, TSR_F64, 2, shape, img, w), nside, &o);
        ASSERT_INT_EQ(tsr_graph_status(g), 0);
        double *map = compute_map(g, m, &ro);
        if (ref == NULL) {
          int64_t n_in;
          check_against_wcslib(ctx, w, nx, ny, nside, nested, 'G', 1, map, &n_in);
          ASSERT(n_in > 200);
          ref = map;
        } else {
          ASSERT(memcmp(map, ref, (size_t)npix * sizeof *map) == 0);
          tsr__free(ctx, map);
        }
        tsr_graph_free(g);
      }
    tsr__free(ctx, ref);
  }
  tsr_wcs_free(w);
  tsr_ctx_free(ctx);
}

/* Data and footprint of map node m into d and f, laid out as the map. */
static void compute_both(tsr_graph_t *g, tsr_node_t *m, void *d, void *f, size_t bytes,
                         const tsr_run_opts_t *ro) {
  tsr_node_t *nodes[2] = {m, tsr_footprint(g, m)};
  void *dsts[2] = {d, f};
  ASSERT(nodes[1] != NULL);
  ASSERT_OK(tsr_compute_planes(g, 2, nodes, NULL, dsts, bytes, ro));
}

/* dst_blank: into tsr_blank_alloc's NaN and 0 the run gives the bits of an
 * ordinary run, on every executor and through a cache.  Where the task
 * writes straight into the caller's memory (serial, threads) it writes
 * only the pixels that get a value: destinations holding a sentinel
 * instead of the blank (a broken promise, to see what is written) keep it
 * everywhere else.  Through the pool's slots or the cache's chunks every
 * pixel is written, as those hold no blank. */
TEST(blank_destinations_get_only_the_mapped_pixels_and_the_same_bits) {
  tsr_ctx_t *ctx = ctx_new();
  int64_t shape[2] = {TILT_NX, TILT_NY}, npix = tsr__hpx_npix(TILT_NSIDE);
  tsr_wcs_t *w;
  double *img = tilted_image(ctx, &w);
  tsr_cache_t *cache;
  ASSERT_OK(tsr_cache_open(ctx, th_path("blank-cache"), (uint64_t)64 << 20, &cache));
  /* Each case: method (1 exact), dtype, NESTED, runs (below) to try; few
   * enough for valgrind. */
  static const struct { int method, dt, nested, runs; } cases[] = {
      {0, TSR_F64, 0, 4}, {0, TSR_F32, 1, 4}, {1, TSR_F64, 0, 1},
      {1, TSR_F32, 1, 2}};
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    int method = cases[c].method, dt = cases[c].dt, nested = cases[c].nested;
    {
      tsr_graph_t *g;
      tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
      tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
      size_t es = tsr_dtype_size((tsr_dtype_t)dt), bytes = (size_t)npix * es;
      char *ref_d = tsr__malloc(ctx, bytes), *ref_f = tsr__malloc(ctx, bytes);
      char *sd = tsr__malloc(ctx, bytes), *sf = tsr__malloc(ctx, bytes);
      int64_t mapped = 0;
      o.nested = nested;
      o.coordsys = "G";
      o.dtype = dt;
      o.method = method ? TSR_TO_HEALPIX_EXACT : TSR_TO_HEALPIX_INTERP;
      o.chunk = 4096; /* several chunks, most off the image */
      ASSERT(ref_d && ref_f && sd && sf);
      ASSERT_OK(tsr_graph_new(ctx, &g));
      tsr_node_t *m = tsr_reproject_to_healpix(g, tsr_source_buffer(g, TSR_F64, 2, shape, img, w),
                                               TILT_NSIDE, &o);
      ASSERT_INT_EQ(tsr_graph_status(g), 0);
      compute_both(g, m, ref_d, ref_f, bytes, &ro);
      for (int run = 0; run < cases[c].runs; run++) {
        /* serial, threads, processes, serial through the cache */
        void *bd, *bf;
        tsr_run_opts_t rb = TSR_RUN_OPTS_INIT;
        rb.dst_blank = 1;
        rb.jobs = run == 1 || run == 2 ? 2 : 1;
        rb.executor = run == 2 ? TSR_EXECUTOR_PROCESSES : TSR_EXECUTOR_THREADS;
        rb.cache = run == 3 ? cache : NULL;
        ASSERT_OK(tsr_blank_alloc(ctx, (size_t)npix, (tsr_dtype_t)dt, NAN, &bd));
        ASSERT_OK(tsr_blank_alloc(ctx, (size_t)npix, (tsr_dtype_t)dt, 0.0, &bf));
        compute_both(g, m, bd, bf, bytes, &rb);
        ASSERT(memcmp(bd, ref_d, bytes) == 0);
        ASSERT(memcmp(bf, ref_f, bytes) == 0);
        tsr_blank_free(bd);
        tsr_blank_free(bf);
        /* The sentinel: -7 in data, 9 in the footprint. */
        for (int64_t p = 0; p < npix; p++) {
          if (dt == TSR_F32)
            ((float *)sd)[p] = -7, ((float *)sf)[p] = 9;
          else
            ((double *)sd)[p] = -7, ((double *)sf)[p] = 9;
        }
        compute_both(g, m, sd, sf, bytes, &rb);
        mapped = 0;
        for (int64_t p = 0; p < npix; p++) {
          double rd = dt == TSR_F32 ? ((float *)ref_d)[p] : ((double *)ref_d)[p];
          double rf = dt == TSR_F32 ? ((float *)ref_f)[p] : ((double *)ref_f)[p];
          double vd = dt == TSR_F32 ? ((float *)sd)[p] : ((double *)sd)[p];
          double vf = dt == TSR_F32 ? ((float *)sf)[p] : ((double *)sf)[p];
          bool direct = run <= 1;
          if (rd == rd || rf != 0) {
            mapped++;
            if (!(vd == rd || (vd != vd && rd != rd)) || vf != rf)
              th_fail(__FILE__, __LINE__, "method %d run %d pixel %lld: %g, %g; expected %g, %g",
                      method, run, (long long)p, vd, vf, rd, rf);
          } else if (direct ? (vd != -7 || vf != 9) : (vd == vd || vf != 0)) {
            th_fail(__FILE__, __LINE__, "method %d run %d pixel %lld off the image: %g, %g; "
                    "expected %s", method, run, (long long)p, vd, vf,
                    direct ? "-7, 9 (untouched)" : "NaN, 0");
          }
        }
      }
      ASSERT(mapped > 200 && mapped < npix / 4);
      tsr__free(ctx, ref_d);
      tsr__free(ctx, ref_f);
      tsr__free(ctx, sd);
      tsr__free(ctx, sf);
      tsr_graph_free(g);
    }
  }
  tsr_cache_close(cache);
  tsr_wcs_free(w);
  tsr_ctx_free(ctx);
}

/* A source that counts the windows asked of it and their pixels. */
static _Atomic int64_t windows_read, pixels_read;
static const double *counted_image;
static int counted_nx;

static int counted_window(void *user, const tsr_block_t *b) {
  double *d = b->data;
  int64_t k = 0;
  (void)user;
  atomic_fetch_add(&windows_read, 1);
  atomic_fetch_add(&pixels_read, tsr_region_size(&b->out));
  for (int64_t y = b->out.start[1]; y < b->out.stop[1]; y++)
    for (int64_t x = b->out.start[0]; x < b->out.stop[0]; x++)
      d[k++] = counted_image[y * counted_nx + x];
  return 0;
}

TEST(chunks_off_the_image_read_nothing_and_tilted_strips_read_little) {
  tsr_ctx_t *ctx = ctx_new();
  int nx = 200, ny = 200;
  int64_t nside = 256, npix = tsr__hpx_npix(nside), n_in;
  /* 0.2 deg/px (the map's pixels are 0.23 deg), tilted 45 deg to the rings. */
  tsr_wcs_t *w = image_wcs(ctx, nx, ny, "RA---TAN", "DEC--TAN", 30, 20, 0.2, 45);
  tsr_source_callback_opts_t so = {"counted", "v1", 2, TSR_F64, 2, {nx, ny, 1, 1}, w};
  counted_image = linear_image(nx, ny);
  counted_nx = nx;
  for (int nested = 0; nested < 2; nested++)
    for (int small = 0; small < 2; small++) {
      tsr_graph_t *g;
      tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
      o.coordsys = "C";
      o.nested = nested;
      o.chunk = small ? 4096 : 0;
      ASSERT_OK(tsr_graph_new(ctx, &g));
      tsr_node_t *m = tsr_reproject_to_healpix(
          g, tsr_source_callback(g, counted_window, NULL, &so), nside, &o);
      ASSERT_INT_EQ(tsr_graph_status(g), 0);
      atomic_store(&windows_read, 0);
      atomic_store(&pixels_read, 0);
      double *map = compute_map(g, m, NULL);
      n_in = 0;
      for (int64_t p = 0; p < npix; p++)
        n_in += map[p] == map[p]; /* the values are checked in the other tests */
      int64_t chunks = (npix + tsr_node_chunk(m, 0) - 1) / tsr_node_chunk(m, 0);
      printf("# %s, %lld chunks of %lld: %lld windows read, %lld image pixels (%.2f times the "
             "image) for %lld map pixels on it\n",
             nested ? "NESTED" : "RING", (long long)chunks, (long long)tsr_node_chunk(m, 0),
             (long long)windows_read, (long long)pixels_read,
             (double)pixels_read / (nx * ny), (long long)n_in);
      /* The image covers 2.4% of the sky: the parts of chunks that miss
       * it read nothing (a RING chunk of 4096 pixels has 256 parts, a NESTED
       * one 16), and with the
       * default chunks the windows of those that meet it add up to a few
       * times the image, also in RING order, where the rings cross it at
       * 45 degrees.  Small chunks have small parts, whose margins add up;
       * a RING chunk of one ring (4096) is a strip, whose parts' boxes are
       * as wide as they are long: more is read then. */
      ASSERT(windows_read > 0 && windows_read < chunks * (nested ? 4 : 16));
      ASSERT(pixels_read < (small ? nested ? 8 : 60 : 4) * (int64_t)nx * ny);
      tsr__free(ctx, map);
      tsr_graph_free(g);
    }
  tsr_wcs_free(w);
  tsr_ctx_free(ctx);
}

TEST(orders_2_and_3_follow_a_linear_image_inside) {
  tsr_ctx_t *ctx = ctx_new();
  int nx = 80, ny = 70;
  int64_t shape[2] = {nx, ny}, nside = 128;
  tsr_wcs_t *w = image_wcs(ctx, nx, ny, "RA---TAN", "DEC--TAN", 250, -20, 0.1, 10);
  for (int order = 2; order <= 3; order++) {
    tsr_graph_t *g;
    tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
    int inside = 0;
    locator_t l;
    o.order = (tsr_order_t)order;
    o.coordsys = "C";
    ASSERT_OK(tsr_graph_new(ctx, &g));
    tsr_node_t *m = tsr_reproject_to_healpix(
        g, tsr_source_buffer(g, TSR_F64, 2, shape, linear_image(nx, ny), w), nside, &o);
    double *map = compute_map(g, m, NULL);
    locator_open(ctx, &l, w, nside, false, 'C');
    for (int64_t p = 0; p < tsr__hpx_npix(nside); p++) {
      double x, y;
      if (map[p] != map[p])
        continue;
      where_in_image(&l, p, &x, &y);
      ASSERT(x >= 0 && x <= nx - 1 && y >= 0 && y <= ny - 1);
      if (x > 6 && x < nx - 7 && y > 6 && y < ny - 7) {
        ASSERT_NEAR(map[p], linear(x, y), 1e-3);
        inside++;
      }
    }
    ASSERT(inside > 50);
    tsr__cel_free(l.cel);
    tsr__free(ctx, map);
    tsr_graph_free(g);
  }
  tsr_wcs_free(w);
  tsr_ctx_free(ctx);
}

TEST(written_tables_read_back_full_partial_and_ranged) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  int nx = 60, ny = 60;
  int64_t shape[2] = {nx, ny}, nside = 64, npix = tsr__hpx_npix(nside), finite = 0;
  tsr_wcs_t *w = image_wcs(ctx, nx, ny, "GLON-TAN", "GLAT-TAN", 300, -30, 0.2, 25);
  tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
  tsr_healpix_write_opts_t wo = TSR_HEALPIX_WRITE_OPTS_INIT;
  tsr_healpix_info_t info;
  const char *full = th_path("full.fits"), *part = th_path("partial.fits");
  const char *ranged = th_path("ranged.fits");
  tsr_region_t r;
  o.nested = 1;
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *m = tsr_reproject_to_healpix(
      g, tsr_source_buffer(g, TSR_F64, 2, shape, linear_image(nx, ny), w), nside, &o);
  double *map = compute_map(g, m, NULL);
  for (int64_t p = 0; p < npix; p++)
    finite += map[p] == map[p];
  ASSERT(finite > 100);
  ASSERT_OK(tsr_write_healpix(g, m, full, NULL, &wo));
  wo.partial = 1;
  wo.column = "TEMPERATURE";
  ASSERT_OK(tsr_write_healpix(g, m, part, NULL, &wo));
  wo.partial = 0;
  wo.column = NULL;
  r = tsr_region_of(m);
  r.start[0] = 1000, r.stop[0] = 1000 + 2048;
  ASSERT_OK(tsr_write_healpix(g, m, ranged, &r, &wo));
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);

  ASSERT_OK(tsr_healpix_info(ctx, full, NULL, &info));
  ASSERT(info.nside == nside && info.nested && info.coordsys == 'G' && !info.explicit_index);
  ASSERT(info.repeat == 1024 && info.type == 'D' && info.n_pixels == npix);
  ASSERT_OK(tsr_healpix_info(ctx, part, NULL, &info));
  ASSERT(info.explicit_index && info.n_pixels == finite && info.type == 'D');
  ASSERT_STR_CONTAINS(info.column, "TEMPERATURE");
  ASSERT_OK(tsr_healpix_info(ctx, ranged, NULL, &info));
  ASSERT(info.first_pixel == 1000 && info.last_pixel == 3047 && info.repeat == 1024);
  for (int k = 0; k < 3; k++) {
    const char *path = k == 0 ? full : k == 1 ? part : ranged;
    tsr_node_t *back = tsr_source_healpix(g, path, NULL);
    ASSERT_INT_EQ(tsr_graph_status(g), 0);
    double *got = compute_map(g, back, NULL);
    for (int64_t p = 0; p < npix; p++) {
      bool in = k != 2 || (p >= 1000 && p < 3048);
      double want = in ? map[p] : NAN;
      ASSERT((got[p] != got[p]) == (want != want));
      if (want == want)
        ASSERT(got[p] == want);
    }
    tsr__free(ctx, got);
  }
  /* What is not a map, and where a map cannot go. */
  ASSERT(tsr_write_healpix(g, tsr_source_buffer(g, TSR_F64, 2, shape, map, w), full, NULL, NULL) ==
         TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "is not a HEALPix map");
  ASSERT(tsr_write_healpix(g, m, th_tmpdir(), NULL, NULL) == TSR_EIO);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "is a directory");
  wo.column = "bad'name";
  ASSERT(tsr_write_healpix(g, m, full, NULL, &wo) == TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "column name");
  tsr__free(ctx, map);
  tsr_graph_free(g);
  tsr_wcs_free(w);
  tsr_ctx_free(ctx);
}

TEST(a_map_chains_into_from_healpix_and_mosaics) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_graph_t *g;
  int nx = 50, ny = 50;
  int64_t shape[2] = {nx, ny}, nside = 512, npix = tsr__hpx_npix(nside);
  tsr_wcs_t *w1 = image_wcs(ctx, nx, ny, "RA---TAN", "DEC--TAN", 180, 45, 0.05, 0);
  tsr_wcs_t *w2 = image_wcs(ctx, nx, ny, "RA---TAN", "DEC--TAN", 180.8, 45.4, 0.05, 30);
  tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
  tsr_coadd_opts_t co = TSR_COADD_OPTS_INIT;
  double *img2 = linear_image(nx, ny);
  static double back[50 * 50];
  ASSERT_OK(tsr_graph_new(ctx, &g));
  for (int k = 0; k < nx * ny; k++)
    img2[k] = 1000 - img2[k];
  tsr_node_t *m1 = tsr_reproject_to_healpix(
      g, tsr_source_buffer(g, TSR_F64, 2, shape, linear_image(nx, ny), w1), nside, &o);
  tsr_node_t *m2 =
      tsr_reproject_to_healpix(g, tsr_source_buffer(g, TSR_F64, 2, shape, img2, w2), nside, &o);
  /* Back onto the first image: the map's 0.11 deg pixels smooth a linear
   * image's values by well under its range (250 .. 1 + 3 * 49 + 5 * 49). */
  tsr_node_t *b = tsr_reproject_from_healpix(g, m1, w1, NULL);
  tsr_node_t *maps[2] = {m1, m2};
  ASSERT_INT_EQ(tsr_graph_status(g), 0);
  ASSERT_OK(tsr_compute(g, b, NULL, back, sizeof back, NULL));
  for (int y = 3; y < ny - 3; y++)
    for (int x = 3; x < nx - 3; x++)
      ASSERT_NEAR(back[y * nx + x], linear(x, y), 2.0);
  double *a1 = compute_map(g, m1, NULL), *a2 = compute_map(g, m2, NULL);
  for (int c = 0; c < 3; c++) {
    int64_t both = 0;
    co.combine = c == 0 ? TSR_COMBINE_MEAN : c == 1 ? TSR_COMBINE_MIN : TSR_COMBINE_LAST;
    tsr_node_t *mos = tsr_coadd(g, 2, maps, NULL, &co);
    ASSERT_INT_EQ(tsr_graph_status(g), 0);
    ASSERT_INT_EQ(tsr_node_ndim(mos), 1);
    double *got = compute_map(g, mos, NULL);
    for (int64_t p = 0; p < npix; p++) {
      double u = a1[p], v = a2[p], want;
      if (u != u && v != v)
        want = NAN;
      else if (u != u)
        want = v;
      else if (v != v)
        want = u;
      else {
        want = c == 0 ? (u + v) / 2 : c == 1 ? fmin(u, v) : v;
        both++;
      }
      ASSERT((got[p] != got[p]) == (want != want));
      if (want == want)
        ASSERT_NEAR(got[p], want, 1e-9);
    }
    ASSERT(both > 100);
    tsr__free(ctx, got);
  }
  /* Maps of different layouts do not mix. */
  o.nested = 1;
  tsr_node_t *m3 = tsr_reproject_to_healpix(
      g, tsr_source_buffer(g, TSR_F64, 2, shape, img2, w2), nside, &o);
  maps[1] = m3;
  ASSERT(tsr_coadd(g, 2, maps, NULL, &co) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "HEALPix map: nside, ordering and frame");
  tsr__free(ctx, a1);
  tsr__free(ctx, a2);
  tsr_graph_free(g);
  tsr_wcs_free(w1);
  tsr_wcs_free(w2);
  tsr_ctx_free(ctx);
}

/* A constructor call that must fail with `code` and a message holding `what`. */
static void refused(tsr_ctx_t *ctx, const tsr_wcs_t *w, int ndim, int64_t nside,
                    const tsr_to_healpix_opts_t *o, int code, const char *what) {
  tsr_graph_t *g;
  static double data[60 * 45 * 2];
  int64_t shape[3] = {60, 45, 2};
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *src = tsr_source_buffer(g, TSR_F64, ndim, shape, data, w);
  ASSERT(tsr_reproject_to_healpix(g, src, nside, o) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), code);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), what);
  tsr_graph_free(g);
}

TEST(bad_arguments_are_refused_clearly) {
  tsr_ctx_t *ctx = ctx_new();
  tsr_wcs_t *w = image_wcs(ctx, 60, 45, "RA---TAN", "DEC--TAN", 10, 10, 0.1, 0);
  tsr_wcs_t *fk5;
  tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
  const char *t = "NAXIS = 2\nNAXIS1 = 60\nNAXIS2 = 45\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
                  "CRPIX1 = 30\nCRPIX2 = 22\nCRVAL1 = 10\nCRVAL2 = 10\nCDELT1 = -0.1\n"
                  "CDELT2 = 0.1\nRADESYS = 'FK5'\nEQUINOX = 2000.0\n";
  ASSERT_OK(tsr_wcs_parse(ctx, t, strlen(t), "fk5", 1, &fk5));
  refused(ctx, w, 2, 0, NULL, TSR_EINVAL, "nside 0 out of range; expected 1 to 2^29");
  o.nested = 1;
  refused(ctx, w, 2, 12, &o, TSR_EINVAL, "a power of 2 for NESTED");
  o = (tsr_to_healpix_opts_t)TSR_TO_HEALPIX_OPTS_INIT;
  o.order = (tsr_order_t)4;
  refused(ctx, w, 2, 16, &o, TSR_EINVAL, "order 4 out of range [0, 3]");
  o = (tsr_to_healpix_opts_t)TSR_TO_HEALPIX_OPTS_INIT;
  o.method = (tsr_to_healpix_method_t)7;
  refused(ctx, w, 2, 16, &o, TSR_EINVAL, "method 7 unknown");
  o = (tsr_to_healpix_opts_t)TSR_TO_HEALPIX_OPTS_INIT;
  o.chunk = -5;
  refused(ctx, w, 2, 16, &o, TSR_EINVAL, "chunk -5 out of range");
  o = (tsr_to_healpix_opts_t)TSR_TO_HEALPIX_OPTS_INIT;
  o.coordsys = "supergalactic";
  refused(ctx, w, 2, 16, &o, TSR_EINVAL, "coordsys \"supergalactic\"; expected G, C or E");
  o = (tsr_to_healpix_opts_t)TSR_TO_HEALPIX_OPTS_INIT;
  o.dtype = 9;
  refused(ctx, w, 2, 16, &o, TSR_EINVAL, "dtype 9 is not float32 or float64");
  refused(ctx, w, 3, 16, NULL, TSR_EINVAL, "expected a 2-D image with a celestial WCS");
  refused(ctx, fk5, 2, 16, NULL, TSR_EINVAL, "has no HEALPix COORDSYS; give the map's frame");
  refused(ctx, NULL, 2, 16, NULL, TSR_EWCS, "has no WCS");
  tsr_wcs_free(fk5);
  tsr_wcs_free(w);
  tsr_ctx_free(ctx);
}

TEST_MAIN()
