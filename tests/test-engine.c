/* test-engine.c -- contexts, errors, keys, regions, graphs and the planner,
 * using in-memory buffer sources (no files). */
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <tessera/tessera.h>

#include "harness.h"
#include "internal.h"

TEST(error_names_and_texts) {
  ASSERT(strcmp(tsr_err_name(TSR_EINVAL), "EINVAL") == 0);
  ASSERT(strcmp(tsr_err_name(TSR_ECACHE), "ECACHE") == 0);
  ASSERT(strcmp(tsr_err_name(12345), "UNKNOWN") == 0);
  ASSERT_STR_CONTAINS(tsr_strerror(TSR_ENOMEM), "memory");
  ASSERT_INT_EQ(TSR_EINVAL, -1);
}

/* Anonymous memory (pages of their own) of the mappings that meet
 * [p, p + n), in kB, from /proc/self/smaps; -1 where there is none.  Per
 * mapping, so that a tool's own memory (valgrind's shadow) is not counted;
 * an anonymous mapping may have merged with its neighbours, which only
 * counts more. */
static long anon_kb_in(const void *p, size_t n) {
  FILE *f = fopen("/proc/self/smaps", "r");
  char line[512];
  uintptr_t lo = (uintptr_t)p, hi = lo + n;
  bool inside = false;
  long kb = f ? 0 : -1, v;
  while (f && fgets(line, sizeof line, f)) {
    unsigned long a, b;
    if (sscanf(line, "%lx-%lx ", &a, &b) == 2)
      inside = a < hi && b > lo;
    else if (inside && sscanf(line, "Anonymous: %ld kB", &v) == 1)
      kb += v;
  }
  if (f)
    fclose(f);
  return kb;
}

/* tsr_blank_alloc: every value right (NaN, 0, -0 and others, both dtypes,
 * sizes not a multiple of the template, values past the templates kept,
 * which are written), arrays of one value independent
 * of each other and of later ones (copy on write, the template never
 * written), and 2 x 64 MB read whole and written in 10 places cost under
 * 1 MB of anonymous memory (the pages written). */
TEST(blank_memory_holds_its_value_and_costs_only_the_pages_written) {
  tsr_ctx_t *ctx;
  struct { tsr_dtype_t dt; double v; } cases[] = {
      {TSR_F64, NAN}, {TSR_F64, 0.0}, {TSR_F64, -0.0}, {TSR_F64, 7.25},
      {TSR_F32, NAN}, {TSR_F32, 0.0}, {TSR_F32, 3.5},
      /* past the 8 templates kept: written by hand */
      {TSR_F64, 1e300}, {TSR_F32, -2.0}};
  size_t counts[] = {0, 1, 1000, 1000 * 1000 + 17};
  void *p = (void *)1;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
      size_t n = counts[k], es = tsr_dtype_size(cases[c].dt);
      unsigned char want[8];
      void *a, *b;
      if (cases[c].dt == TSR_F32) {
        float f = (float)cases[c].v;
        memcpy(want, &f, 4);
      } else {
        memcpy(want, &cases[c].v, 8);
      }
      ASSERT_OK(tsr_blank_alloc(ctx, n, cases[c].dt, cases[c].v, &a));
      ASSERT_OK(tsr_blank_alloc(ctx, n, cases[c].dt, cases[c].v, &b));
      ASSERT(a != NULL && b != NULL && a != b);
      ASSERT_INT_EQ((uintptr_t)a % 4096, 0);
      for (size_t i = 0; i < n; i++)
        if (memcmp((char *)a + i * es, want, es) != 0)
          th_fail(__FILE__, __LINE__, "case %zu count %zu: value %zu differs", c, n, i);
      for (size_t i = 0; i < n; i += n / 7 + 1)
        memset((char *)a + i * es, 0x5a, es);
      for (size_t i = 0; i < n; i++)
        if (memcmp((char *)b + i * es, want, es) != 0)
          th_fail(__FILE__, __LINE__, "case %zu count %zu: a write to one array changed value "
                  "%zu of another", c, n, i);
      tsr_blank_free(a);
      ASSERT_OK(tsr_blank_alloc(ctx, n, cases[c].dt, cases[c].v, &a));
      for (size_t i = 0; i < n; i++)
        if (memcmp((char *)a + i * es, want, es) != 0)
          th_fail(__FILE__, __LINE__, "case %zu count %zu: value %zu of a later array differs",
                  c, n, i);
      tsr_blank_free(a);
      tsr_blank_free(b);
    }
  tsr_blank_free(NULL);
  ASSERT_INT_EQ(tsr_blank_alloc(ctx, 10, (tsr_dtype_t)3, 0, &p), TSR_EINVAL);
  ASSERT(p == NULL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "dtype 3");
  ASSERT_INT_EQ(tsr_blank_alloc(ctx, SIZE_MAX / 2, TSR_F64, 0, &p), TSR_ENOMEM);
  ASSERT(p == NULL);
  {
    size_t n = (size_t)8 << 20; /* 64 MB of float64 each */
    double *nan_a, *zero_a, sum = 0;
    size_t nans = 0;
    ASSERT_OK(tsr_blank_alloc(ctx, n, TSR_F64, NAN, (void **)&nan_a));
    ASSERT_OK(tsr_blank_alloc(ctx, n, TSR_F64, 0.0, (void **)&zero_a));
    for (size_t i = 0; i < n; i++)
      nans += nan_a[i] != nan_a[i], sum += zero_a[i];
    ASSERT_INT_EQ(nans, n);
    ASSERT(sum == 0);
    for (size_t i = 0; i < n; i += n / 10)
      nan_a[i] = 1, zero_a[i] = 1;
    {
      long a = anon_kb_in(nan_a, n * 8), z = anon_kb_in(zero_a, n * 8);
      printf("# 2 x 64 MB read and written in 10 places: %ld and %ld kB of their own\n", a, z);
      if (a >= 0 && z >= 0)
        ASSERT(a < 256 && z < 256);
    }
    tsr_blank_free(nan_a);
    tsr_blank_free(zero_a);
  }
  tsr_ctx_free(ctx);
}

TEST(ctx_rejects_partial_allocator) {
  tsr_ctx_t *ctx = (tsr_ctx_t *)1;
  tsr_ctx_options_t o;
  memset(&o, 0, sizeof o);
  o.alloc.malloc_fn = NULL;
  o.alloc.free_fn = (void (*)(void *, void *))1;
  ASSERT_INT_EQ(tsr_ctx_new(&ctx, &o), TSR_EINVAL);
  ASSERT(ctx == NULL);
}

static int n_allocs, fail_at, n_frees;
static void *count_malloc(void *ud, size_t n) {
  (void)ud;
  if (++n_allocs == fail_at)
    return NULL;
  return malloc(n);
}
static void *count_realloc(void *ud, void *p, size_t n) {
  (void)ud;
  if (++n_allocs == fail_at)
    return NULL;
  return realloc(p, n);
}
static void count_free(void *ud, void *p) {
  (void)ud;
  if (p != NULL)
    n_frees++;
  free(p);
}

/* A context on the counting allocator (fail_at says which allocation fails). */
static int counting_ctx(tsr_ctx_t **ctx) {
  tsr_ctx_options_t co;
  memset(&co, 0, sizeof co);
  co.alloc.malloc_fn = count_malloc;
  co.alloc.realloc_fn = count_realloc;
  co.alloc.free_fn = count_free;
  return tsr_ctx_new(ctx, &co);
}

/* Fail each allocation in turn while building and computing a small graph:
 * every run must end in success or TSR_ENOMEM, never a crash. */
TEST(allocation_failures_are_clean) {
  float data[6 * 5];
  int64_t shape[2] = {6, 5};
  for (int i = 0; i < 30; i++)
    data[i] = (float)i;
  for (fail_at = 1; fail_at < 60; fail_at++) {
    tsr_ctx_t *ctx = NULL;
    tsr_graph_t *g = NULL;
    float out[30];
    int rc;
    n_allocs = 0;
    rc = counting_ctx(&ctx);
    if (rc != 0) {
      ASSERT_INT_EQ(rc, TSR_ENOMEM);
      continue;
    }
    rc = tsr_graph_new(ctx, &g);
    if (rc == 0) {
      tsr_node_t *n = tsr_source_buffer(g, TSR_F32, 2, shape, data, NULL);
      if (n == NULL) {
        ASSERT_INT_EQ(tsr_graph_status(g), TSR_ENOMEM);
      } else {
        rc = tsr_compute(g, n, NULL, out, sizeof out, NULL);
        ASSERT(rc == 0 || rc == TSR_ENOMEM);
        if (rc == 0)
          ASSERT(memcmp(out, data, sizeof out) == 0);
      }
    } else {
      ASSERT_INT_EQ(rc, TSR_ENOMEM);
    }
    tsr_graph_free(g);
    tsr_ctx_free(ctx);
  }
}

TEST(regions) {
  tsr_region_t a = {{0, 0, 0, 0}, {10, 10, 1, 1}}, b = {{5, -3, 0, 0}, {20, 4, 1, 1}}, r;
  char buf[64];
  ASSERT(tsr__region_intersect(&a, &b, &r, 2));
  ASSERT_INT_EQ(r.start[0], 5);
  ASSERT_INT_EQ(r.stop[0], 10);
  ASSERT_INT_EQ(r.start[1], 0);
  ASSERT_INT_EQ(r.stop[1], 4);
  ASSERT_INT_EQ(tsr_region_size(&r), 20);
  b.start[0] = 10;
  ASSERT(!tsr__region_intersect(&a, &b, &r, 2));
  tsr__region_format(&a, 2, buf, sizeof buf);
  ASSERT(strcmp(buf, "[0:10, 0:10]") == 0);
}

TEST(keys_are_canonical) {
  tsr_ctx_t *ctx;
  tsr__buf_t b1, b2;
  uint8_t k1[16], k2[16];
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  /* -0.0 is 0.0, and every NaN the same NaN: equal keys, each pair alone. */
  {
    uint64_t payload = 0x7ff8000000000123u;
    double odd_nan, neg_nan = -NAN;
    memcpy(&odd_nan, &payload, 8);
    const double same[3][2] = {{0.0, -0.0}, {NAN, odd_nan}, {NAN, neg_nan}};
    for (int i = 0; i < 3; i++) {
      tsr__buf_init(&b1, ctx);
      tsr__buf_init(&b2, ctx);
      tsr__buf_put_f64(&b1, same[i][0]);
      tsr__buf_put_f64(&b2, same[i][1]);
      tsr__hash128(b1.p, b1.len, k1);
      tsr__hash128(b2.p, b2.len, k2);
      ASSERT(b1.len == b2.len && memcmp(b1.p, b2.p, b1.len) == 0);
      ASSERT(memcmp(k1, k2, 16) == 0);
      tsr__buf_release(&b1);
      tsr__buf_release(&b2);
    }
  }
  /* Length prefixes keep "ab"+"c" apart from "a"+"bc". */
  tsr__buf_init(&b1, ctx);
  tsr__buf_init(&b2, ctx);
  tsr__buf_put_str(&b1, "ab");
  tsr__buf_put_str(&b1, "c");
  tsr__buf_put_str(&b2, "a");
  tsr__buf_put_str(&b2, "bc");
  tsr__hash128(b1.p, b1.len, k1);
  tsr__hash128(b2.p, b2.len, k2);
  ASSERT(memcmp(k1, k2, 16) != 0);
  tsr__buf_release(&b1);
  tsr__buf_release(&b2);
  tsr_ctx_free(ctx);
}

TEST(identical_nodes_are_merged) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  double d1[4] = {1, 2, 3, 4}, d2[4] = {1, 2, 3, 4}, d3[4] = {1, 2, 3, 5};
  int64_t shape[2] = {2, 2};
  tsr_node_t *a, *b, *c;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
  a = tsr_source_buffer(g, TSR_F64, 2, shape, d1, NULL);
  b = tsr_source_buffer(g, TSR_F64, 2, shape, d2, NULL);
  c = tsr_source_buffer(g, TSR_F64, 2, shape, d3, NULL);
  ASSERT(a != NULL && a == b && c != a);
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST(build_errors_are_sticky) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  float d[4] = {0};
  int64_t bad[2] = {2, 0}, good[2] = {2, 2};
  float out[4];
  tsr_node_t *before;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
  before = tsr_source_buffer(g, TSR_F32, 2, good, d, NULL);
  ASSERT(before != NULL);
  ASSERT(tsr_source_buffer(g, TSR_F32, 2, bad, d, NULL) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "axis 1 has length 0");
  /* Later constructors return NULL at once and keep the first message. */
  ASSERT(tsr_source_buffer(g, TSR_F32, 2, good, d, NULL) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "axis 1 has length 0");
  /* A node built fine before the error is refused too (documented in
   * tessera.h: the graph is not the one the caller described). */
  ASSERT_INT_EQ(tsr_compute(g, before, NULL, out, sizeof out, NULL), TSR_ESTATE);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "compute: the graph has an error: ");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "axis 1 has length 0");
  ASSERT_INT_EQ(tsr_write_fits(g, 1, &before, &(const char *){th_path("refused.fits")}, NULL, NULL),
                TSR_ESTATE);
  ASSERT_INT_EQ(tsr_write_png(g, before, th_path("refused.png"), NULL), TSR_ESTATE);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "preview: the graph has an error: ");
  {
    double off[1];
    ASSERT_INT_EQ(tsr_coadd_match_background(g, 1, &before, NULL, 0, NULL, off), TSR_ESTATE);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "match_background: the graph has an error: ");
  }
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

TEST(compute_regions_of_a_buffer) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  float d[7 * 5 * 3], out[7 * 5 * 3];
  int64_t shape[3] = {7, 5, 3};
  tsr_node_t *n;
  tsr_region_t r = {{2, 1, 1, 0}, {6, 4, 3, 1}};
  for (int i = 0; i < 105; i++)
    d[i] = (float)i;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
  n = tsr_source_buffer(g, TSR_F32, 3, shape, d, NULL);
  ASSERT(n != NULL);
  ASSERT_OK(tsr_compute(g, n, &r, out, sizeof out, NULL));
  for (int z = 1; z < 3; z++)
    for (int y = 1; y < 4; y++)
      for (int x = 2; x < 6; x++)
        ASSERT_INT_EQ(out[((z - 1) * 3 + (y - 1)) * 4 + (x - 2)], d[(z * 5 + y) * 7 + x]);
  /* Requests outside the node or empty are errors with the extent. */
  r.stop[0] = 8;
  ASSERT_INT_EQ(tsr_compute(g, n, &r, out, sizeof out, NULL), TSR_ERANGE);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "outside buffer#1");
  r.stop[0] = 2;
  ASSERT_INT_EQ(tsr_compute(g, n, &r, out, sizeof out, NULL), TSR_ERANGE);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "is empty");
  ASSERT_INT_EQ(tsr_compute(g, n, NULL, out, 10, NULL), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "too small");
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

static void count_progress(void *ud, int64_t done, int64_t total) {
  int64_t *seen = ud;
  seen[0] = done;
  seen[1] = total;
}

TEST(cancel_stops_a_run) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_wcs_t *w;
  static float d[64 * 64], out[64 * 64];
  int64_t shape[2] = {64, 64};
  static const char hdr[] =
      "NAXIS   = 2\nNAXIS1  = 64\nNAXIS2  = 64\nCTYPE1  = 'RA---TAN'\nCTYPE2  = 'DEC--TAN'\n"
      "CRVAL1  = 10.0\nCRVAL2  = 20.0\nCRPIX1  = 32.5\nCRPIX2  = 32.5\nCDELT1  = -0.001\n"
      "CDELT2  = 0.001\n";
  tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
  volatile int cancel = 1;
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  int64_t seen[2] = {0, 0};
  tsr_node_t *src, *rp;

  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
  ASSERT_OK(tsr_wcs_parse(ctx, hdr, sizeof hdr - 1, "test header", 1, &w));
  src = tsr_source_buffer(g, TSR_F32, 2, shape, d, w);
  o.block[0] = o.block[1] = 16;
  rp = tsr_reproject_interp(g, src, w, &o);
  ASSERT(rp != NULL);
  ro.cancel = (volatile int *)&cancel;
  ASSERT_INT_EQ(tsr_compute(g, rp, NULL, out, sizeof out, &ro), TSR_ECANCELED);
  cancel = 0;
  ro.progress = count_progress;
  ro.progress_ud = seen;
  ASSERT_OK(tsr_compute(g, rp, NULL, out, sizeof out, &ro));
  ASSERT_INT_EQ(seen[0], 16);
  ASSERT_INT_EQ(seen[1], 16);
  tsr_graph_free(g);
  tsr_wcs_free(w);
  tsr_ctx_free(ctx);
}

/* Where each block of a map_blocks node ran: on the calling thread or not. */
typedef struct {
  pthread_t caller;
  _Atomic int on_caller, elsewhere;
} where_t;

static int note_thread(void *user, const tsr_block_t *b) {
  where_t *w = user;
  if (pthread_equal(pthread_self(), w->caller))
    w->on_caller++;
  else
    w->elsewhere++;
  memset(b->data, 0, (size_t)tsr_region_size(&b->out) * tsr_dtype_size(b->dtype));
  return 0;
}

/* A zeroed tsr_run_opts_t is the documented default, serial in the calling
 * thread, as TSR_RUN_OPTS_INIT is; one worker per CPU is asked for by name. */
TEST(zeroed_run_opts_run_serially) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  static float d[64 * 64], out[64 * 64];
  int64_t shape[2] = {64, 64};
  tsr_map_blocks_opts_t o = TSR_MAP_BLOCKS_OPTS_INIT;
  tsr_run_opts_t zero, init = TSR_RUN_OPTS_INIT;
  where_t w;
  tsr_node_t *src, *m;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);

  memset(&zero, 0, sizeof zero);
  ASSERT_INT_EQ(init.jobs, 1);
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
  src = tsr_source_buffer(g, TSR_F32, 2, shape, d, NULL);
  o.name = "where";
  o.dtype = TSR_F32;
  o.chunk[0] = o.chunk[1] = 16;
  m = tsr_map_blocks(g, 1, &src, note_thread, &w, &o);
  ASSERT(m != NULL);
  w.caller = pthread_self();
  w.on_caller = w.elsewhere = 0;
  ASSERT_OK(tsr_compute(g, m, NULL, out, sizeof out, &zero));
  ASSERT_INT_EQ(w.on_caller, 16);
  ASSERT_INT_EQ(w.elsewhere, 0);
  /* TSR_JOBS_PER_CPU on the threads executor: the calling thread only
   * waits, so with more than one CPU every block runs elsewhere. */
  zero.jobs = TSR_JOBS_PER_CPU;
  zero.executor = TSR_EXECUTOR_THREADS;
  w.on_caller = w.elsewhere = 0;
  ASSERT_OK(tsr_compute(g, m, NULL, out, sizeof out, &zero));
  ASSERT_INT_EQ(w.on_caller + w.elsewhere, 16);
  ASSERT_INT_EQ(w.elsewhere, ncpu > 1 ? 16 : 0);
  zero.jobs = -2;
  ASSERT_INT_EQ(tsr_compute(g, m, NULL, out, sizeof out, &zero), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "jobs = -2 out of range [0, 4096] or TSR_JOBS_PER_CPU (-1)");
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}

static const char small_hdr[] =
    "NAXIS   = 2\nNAXIS1  = 64\nNAXIS2  = 32\nCTYPE1  = 'RA---TAN'\nCTYPE2  = 'DEC--TAN'\n"
    "CRVAL1  = 10.0\nCRVAL2  = 20.0\nCRPIX1  = 32.5\nCRPIX2  = 16.5\nCDELT1  = -0.001\n"
    "CDELT2  = 0.001\n";

/* tsr_wcs_copy answers as its siblings do: a code, and *out set or NULL. */
TEST(wcs_copy_returns_a_code_and_an_out_parameter) {
  tsr_ctx_t *ctx;
  tsr_wcs_t *w, *c = (tsr_wcs_t *)1;
  int na, nc;
  const char *ca, *cc;

  fail_at = 0;
  ASSERT_OK(counting_ctx(&ctx));
  ASSERT_OK(tsr_wcs_parse(ctx, small_hdr, sizeof small_hdr - 1, "small", 1, &w));
  ASSERT_OK(tsr_wcs_copy(ctx, w, &c));
  ASSERT(c != NULL && c != w);
  ca = tsr_wcs_cards(w, &na);
  cc = tsr_wcs_cards(c, &nc);
  ASSERT_INT_EQ(na, nc);
  ASSERT(ca != cc && memcmp(ca, cc, (size_t)na * 80) == 0);
  ASSERT_INT_EQ(tsr_wcs_naxis(c), 2);
  ASSERT_INT_EQ(tsr_wcs_shape(c, 0), 64);
  ASSERT_INT_EQ(tsr_wcs_shape(c, 1), 32);
  tsr_wcs_free(c);
  /* Each of the copy's two allocations failing: TSR_ENOMEM, *out = NULL. */
  for (int k = 1; k <= 2; k++) {
    c = (tsr_wcs_t *)1;
    fail_at = n_allocs + k;
    ASSERT_INT_EQ(tsr_wcs_copy(ctx, w, &c), TSR_ENOMEM);
    ASSERT(c == NULL);
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "wcs: out of memory");
  }
  fail_at = 0;
  tsr_wcs_free(w);
  ASSERT_INT_EQ(tsr__ctx_live(ctx), 0);
  tsr_ctx_free(ctx);
}

/* Graphs, WCS handles and caches belong to the context that made them: it
 * counts them, they may be freed in any order, and then the context. */
TEST(ctx_counts_its_graphs_wcs_and_caches) {
  static const int orders[3][4] = {{0, 1, 2, 3}, {3, 2, 1, 0}, {2, 0, 3, 1}};
  static float d[64 * 32];
  int64_t shape[2] = {64, 32};
  for (int k = 0; k < 3; k++) {
    tsr_ctx_t *ctx;
    tsr_graph_t *g;
    tsr_wcs_t *w, *c;
    tsr_cache_t *cache;
    ASSERT_OK(tsr_ctx_new(&ctx, NULL));
    ASSERT_INT_EQ(tsr__ctx_live(ctx), 0);
    ASSERT_OK(tsr_wcs_parse(ctx, small_hdr, sizeof small_hdr - 1, "small", 1, &w));
    ASSERT_OK(tsr_wcs_copy(ctx, w, &c));
    ASSERT_OK(tsr_graph_new(ctx, &g));
    ASSERT_OK(tsr_cache_open(ctx, th_path("live-cache"), TSR_CACHE_MIN_BYTES, &cache));
    ASSERT_INT_EQ(ctx->n_wcs, 2);
    ASSERT_INT_EQ(ctx->n_graphs, 1);
    ASSERT_INT_EQ(ctx->n_caches, 1);
    /* A node's WCS is the graph's (a copy), counted until the graph goes. */
    ASSERT(tsr_source_buffer(g, TSR_F32, 2, shape, d, w) != NULL);
    ASSERT_INT_EQ(ctx->n_wcs, 3);
    for (int i = 0; i < 4; i++) {
      switch (orders[k][i]) {
      case 0: tsr_wcs_free(w); break;
      case 1: tsr_graph_free(g); break;
      case 2: tsr_cache_close(cache); break;
      default: tsr_wcs_free(c); break;
      }
      ASSERT(tsr__ctx_live(ctx) > 0 || i == 3);
    }
    ASSERT_INT_EQ(ctx->n_wcs, 0);
    ASSERT_INT_EQ(ctx->n_graphs, 0);
    ASSERT_INT_EQ(ctx->n_caches, 0);
    tsr_ctx_free(ctx);
  }
}

/* tsr_ctx_free with a live object is an API misuse: it asserts; with
 * assertions compiled out (NDEBUG) it frees nothing, so the objects keep a
 * valid context (a leak, not a use-after-free), and a later tsr_ctx_free,
 * once they are gone, frees it. */
TEST(ctx_free_with_live_objects_is_refused) {
  tsr_ctx_t *ctx;
  tsr_wcs_t *w;
  int frees;

  fail_at = 0;
  ASSERT_OK(counting_ctx(&ctx));
  ASSERT_OK(tsr_wcs_parse(ctx, small_hdr, sizeof small_hdr - 1, "small", 1, &w));
#ifdef NDEBUG
  frees = n_frees;
  tsr_ctx_free(ctx);
  ASSERT_INT_EQ(n_frees, frees); /* the context is still there */
  tsr_wcs_free(w);               /* and usable by its objects */
  ASSERT_INT_EQ(tsr__ctx_live(ctx), 0);
  tsr_ctx_free(ctx);
  ASSERT_INT_EQ(n_frees, frees + 3); /* the WCS, its cards, the context */
#else
  {
    int status;
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
      fclose(stderr); /* the assertion's message is expected */
      tsr_ctx_free(ctx);
      _exit(0);
    }
    ASSERT(waitpid(pid, &status, 0) == pid);
    ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
  }
  (void)frees;
  tsr_wcs_free(w);
  tsr_ctx_free(ctx);
#endif
}

/* The option structs' enum fields are enum types, which gcc makes unsigned
 * when no value is negative: a negative value put there (from a parse
 * function's -1, say) must still be refused, not taken for a large one. */
TEST(negative_enum_options_are_refused) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_wcs_t *w;
  static float d[64 * 32];
  int64_t shape[2] = {64, 32};
  tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
  tsr_adaptive_opts_t ao = TSR_ADAPTIVE_OPTS_INIT;
  tsr_coadd_opts_t co = TSR_COADD_OPTS_INIT;
  tsr_preview_opts_t po = TSR_PREVIEW_OPTS_INIT;
  tsr_node_t *src, *rp;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_wcs_parse(ctx, small_hdr, sizeof small_hdr - 1, "small", 1, &w));
#define FRESH_SRC()                                             \
  do {                                                          \
    ASSERT_OK(tsr_graph_new(ctx, &g));                          \
    src = tsr_source_buffer(g, TSR_F32, 2, shape, d, w);        \
    ASSERT(src != NULL);                                        \
  } while (0)
  FRESH_SRC();
  io.order = (tsr_order_t)tsr_order_parse("trilinear");
  ASSERT(tsr_reproject_interp(g, src, w, &io) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "reproject_interp: order -1 out of range [0, 6]");
  tsr_graph_free(g);
  FRESH_SRC();
  ao.boundary_mode = (tsr_boundary_t)tsr_boundary_parse("wrap");
  ASSERT(tsr_reproject_adaptive(g, src, w, &ao) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), TSR_EINVAL);
  tsr_graph_free(g);
  FRESH_SRC();
  rp = tsr_reproject_interp(g, src, w, NULL);
  co.combine = (tsr_combine_t)tsr_combine_parse("averag");
  ASSERT(tsr_coadd(g, 1, &rp, NULL, &co) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "coadd: combine -1 out of range");
  tsr_graph_free(g);
  FRESH_SRC();
  po.stretch = (tsr_stretch_t)-1;
  ASSERT_INT_EQ(tsr_write_png(g, src, th_path("neg.png"), &po), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "stretch -1");
  ASSERT_INT_EQ(tsr_unary(g, (tsr_elementwise_t)-1, src) == NULL, 1);
  ASSERT_INT_EQ(tsr_graph_status(g), TSR_EINVAL);
  tsr_graph_free(g);
  FRESH_SRC();
  ASSERT(tsr_reduce(g, (tsr_reduce_t)-1, src, -1, 0) == NULL);
  ASSERT_INT_EQ(tsr_graph_status(g), TSR_EINVAL);
  tsr_graph_free(g);
#undef FRESH_SRC
  tsr_wcs_free(w);
  tsr_ctx_free(ctx);
}

/* The API misuse catalogue: each wrong graph gives its exact message, on
 * the graph (a build error) or on the context (a compute error). */
static int noop_block(void *user, const tsr_block_t *b) {
  (void)user, (void)b;
  return 0;
}

TEST(api_misuse_catalogue) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g, *h;
  int64_t s8[2] = {8, 8}, s4[2] = {4, 8};
  static float a[64], b[32];
  double out[64];
  tsr_map_blocks_opts_t o = TSR_MAP_BLOCKS_OPTS_INIT;
  tsr_node_t *A, *B, *C, *in[2];
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
#define FRESH()                                                                                    \
  do {                                                                                             \
    ASSERT_OK(tsr_graph_new(ctx, &g));                                                             \
    A = tsr_source_buffer(g, TSR_F32, 2, s8, a, NULL);                                             \
    C = tsr_source_buffer(g, TSR_F32, 2, s4, b, NULL);                                             \
    ASSERT(A != NULL && C != NULL);                                                                \
  } while (0)
  ASSERT_OK(tsr_graph_new(ctx, &h));
  B = tsr_source_buffer(h, TSR_F32, 2, s8, a, NULL);

  /* Edges between graphs (the only way to try to close a cycle: a node
   * names its inputs when it is made, and they must exist). */
  FRESH();
  ASSERT(tsr_binary(g, TSR_ADD, A, B) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g),
                      "input 2 is a node of another graph; a node's inputs must be nodes of its own graph");
  tsr_graph_free(g);
  FRESH();
  in[0] = B;
  o.name = "cb";
  o.dtype = TSR_F32;
  ASSERT(tsr_map_blocks(g, 1, in, noop_block, NULL, &o) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "input 1 is a node of another graph");
  tsr_graph_free(g);
  FRESH();
  ASSERT(tsr_footprint(g, B) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "footprint: node is a node of another graph");
  tsr_graph_free(g);
  FRESH();
  ASSERT(tsr_compute(g, B, NULL, out, sizeof out, NULL) == TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "compute: node is NULL or from another graph");
  tsr_graph_free(g);

  /* NULL operands. */
  FRESH();
  ASSERT(tsr_binary(g, TSR_ADD, A, NULL) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "add: operand 2 is NULL");
  tsr_graph_free(g);

  /* Shapes and dtypes of user callbacks and elementwise ops. */
  FRESH();
  in[0] = A, in[1] = C;
  ASSERT(tsr_map_blocks(g, 2, in, noop_block, NULL, &o) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "map_blocks \"cb\": input 2 has 4 on axis 1 but the "
                                           "output has 8; inputs must have the output's shape");
  tsr_graph_free(g);
  FRESH();
  o.dtype = 0;
  ASSERT(tsr_map_blocks(g, 1, &A, noop_block, NULL, &o) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "map_blocks \"cb\": output dtype 0; expected float32 or float64");
  tsr_graph_free(g);
  FRESH();
  ASSERT(tsr_binary(g, TSR_ADD, A, C) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "add: shapes do not broadcast: axis 1 has 4 in");
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "expected equal lengths or 1");
  /* A build error is sticky: later calls return NULL and keep the first message. */
  ASSERT(tsr_binary_scalar(g, TSR_MUL, A, 2.0) == NULL);
  ASSERT_STR_CONTAINS(tsr_graph_errmsg(g), "add: shapes do not broadcast");
  tsr_graph_free(g);
#undef FRESH
  tsr_graph_free(h);
  tsr_ctx_free(ctx);
}

TEST_MAIN()

/* Is a library whose file name contains `name` mapped into this process? */
static int mapped(const char *name) {
  char line[4096];
  int found = 0;
  FILE *f = fopen("/proc/self/maps", "r");
  ASSERT(f != NULL);
  while (!found && fgets(line, sizeof line, f))
    found = strstr(line, name) != NULL;
  fclose(f);
  return found;
}

/* Open MPI is loaded only when MPI is asked for: building and computing a
 * graph (serially and on threads) leaves it out of the process; asking
 * whether MPI is there loads the executor module, and with it Open MPI. */
TEST(mpi_is_loaded_only_when_asked_for) {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  float in[64 * 64], out[64 * 64];
  int64_t shape[2] = {64, 64};
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  for (int i = 0; i < 64 * 64; i++)
    in[i] = (float)i;
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
  tsr_node_t *n = tsr_unary(g, TSR_SQRT, tsr_source_buffer(g, TSR_F32, 2, shape, in, NULL));
  ASSERT(n != NULL);
  ASSERT_OK(tsr_compute(g, n, NULL, out, sizeof out, NULL));
  ro.jobs = 2;
  ro.executor = TSR_EXECUTOR_THREADS;
  ASSERT_OK(tsr_compute(g, n, NULL, out, sizeof out, &ro));
  ASSERT(!mapped("libtessera-mpi") && !mapped("libmpi"));
  if (tsr_has_mpi()) {
    ASSERT(mapped("libtessera-mpi") && mapped("libmpi"));
  } else {
    tsr_ctx_t *c2;
    void *comm;
    int rank, size;
    ASSERT_OK(tsr_ctx_new(&c2, NULL));
    ASSERT_INT_EQ(tsr_mpi_init(c2, NULL, NULL, &comm, &rank, &size), TSR_ENOTSUP);
    ASSERT_STR_CONTAINS(tsr_errmsg(c2), "mpi: ");
    tsr_ctx_free(c2);
  }
  tsr_graph_free(g);
  tsr_ctx_free(ctx);
}
