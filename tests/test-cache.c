/* test-cache.c -- the on-disk chunk cache: hits equal computed bits, faults
 * are misses, a run killed or canceled halfway resumes, concurrent writers,
 * LRU eviction, changed inputs, and every executor. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

/* ------------------------------------------------------------------ */
/* A test op that counts its computations (in shared memory, so that pool
 * workers' computations count too).  Plane 0 is a smooth pattern or noise,
 * plane 1 a pattern, both depending only on the pixel: any sub-box is
 * computed bit-identically. */

static atomic_long *computes;

typedef struct {
  double scale;
  int noise;
  long fail_at;      /* > 0: the computation with this count fails */
} cnt_params_t;

static uint32_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return (uint32_t)x;
}

static int cnt_compute(tsr__task_t *t) {
  const cnt_params_t *pp = t->node->params;
  if (atomic_fetch_add(computes, 1) + 1 == pp->fail_at)
    return tsr__err(t->ctx, TSR_EIO, "test_count: failing on purpose");
  for (int64_t y = t->out.start[1]; y < t->out.stop[1]; y++)
    for (int64_t x = t->out.start[0]; x < t->out.stop[0]; x++) {
      size_t off = tsr__task_offset(t, x - t->out.start[0], y - t->out.start[1], 0, 0);
      float v = pp->noise ? (float)(mix((uint64_t)(y * 100003 + x)) / 4294967296.0)
                          : (float)(sin(0.01 * (double)x * pp->scale) + 0.001 * (double)y);
      if (t->planes[0])
        ((float *)t->planes[0])[off] = v;
      if (t->planes[1])
        ((float *)t->planes[1])[off] =
            pp->noise ? (float)(mix((uint64_t)(x * 7919 + y)) / 4294967296.0) : (float)((x + y) % 7);
    }
  return 0;
}

static void cnt_encode(const tsr_node_t *n, tsr__buf_t *b) {
  const cnt_params_t *pp = n->params;
  tsr__buf_put_f64(b, pp->scale);
  tsr__buf_put_i64(b, pp->noise);
}

static void cnt_free(tsr_ctx_t *c, void *p) { tsr__free(c, p); }

static const tsr__op_t cnt_op = {
    .name = "test_count",
    .version = 1,
    .flags = TSR__OP_SUBBOX,
    .compute = cnt_compute,
    .encode = cnt_encode,
    .free_params = cnt_free,
};

static tsr_ctx_t *ctx;
static tsr_graph_t *g;

static void setup(void) {
  computes = mmap(NULL, sizeof *computes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT(computes != MAP_FAILED);
  atomic_store(computes, 0);
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
}

static tsr_node_t *count_node(int64_t nx, int64_t ny, int64_t chunk, double scale, int noise) {
  cnt_params_t *pp = tsr__malloc(ctx, sizeof *pp);
  tsr_node_t *n;
  pp->scale = scale;
  pp->noise = noise;
  pp->fail_at = 0;
  n = tsr__node_alloc(g, &cnt_op, pp);
  ASSERT(n != NULL);
  n->ndim = 2;
  n->shape[0] = nx;
  n->shape[1] = ny;
  n->chunk[0] = n->chunk[1] = chunk;
  n->dtype = TSR_F32;
  n->n_planes = 2;
  n = tsr__node_finish(n);
  ASSERT(n != NULL);
  return n;
}

static float *compute_region(tsr_node_t *n, const tsr_region_t *r, tsr_cache_t *cache, int jobs,
                             int expect) {
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  tsr_region_t full = tsr_region_of(n);
  size_t count;
  float *out;
  int rc;
  if (r == NULL)
    r = &full;
  count = (size_t)tsr_region_size(r);
  out = malloc(count * sizeof(float));
  ro.cache = cache;
  ro.jobs = jobs;
  ro.executor = TSR_EXECUTOR_PROCESSES; /* the pool's paths (threads: test-threads) */
  rc = tsr_compute(g, n, r, out, count * sizeof(float), &ro);
  if (rc != expect)
    th_fail(__FILE__, __LINE__, "compute returned %d (%s), expected %d", rc, tsr_errmsg(ctx),
            expect);
  return out;
}

static float *compute(tsr_node_t *n, tsr_cache_t *cache) {
  return compute_region(n, NULL, cache, 1, 0);
}

static tsr_region_t box2(int64_t x0, int64_t x1, int64_t y0, int64_t y1) {
  tsr_region_t r = {{x0, y0, 0, 0}, {x1, y1, 1, 1}};
  return r;
}

/* The file of chunk (cx, cy) of n in cache directory dir. */
static const char *chunk_file(const char *dir, const tsr_node_t *n, int cx, int cy) {
  static char buf[4][1024];
  static int k;
  uint8_t key[16];
  char hex[33];
  tsr_node_key(n, key);
  for (int i = 0; i < 16; i++)
    snprintf(hex + 2 * i, 3, "%02x", key[i]);
  k = (k + 1) % 4;
  snprintf(buf[k], sizeof buf[k], "%s/%.2s/%s-%d.%d.0.0.tsc", dir, hex, hex, cx, cy);
  return buf[k];
}

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static long file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* ------------------------------------------------------------------ */

TEST(bad_budget_and_directory_are_reported) {
  tsr_cache_t *c = NULL;
  setup();
  ASSERT_INT_EQ(tsr_cache_open(ctx, th_path("b"), 0, &c), TSR_EINVAL);
  ASSERT(c == NULL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "cache: max_bytes=0 out of range [1 MiB, 2^62]");
  ASSERT_INT_EQ(tsr_cache_open(ctx, th_path("b"), (UINT64_C(1) << 62) + 1, &c), TSR_EINVAL);
  ASSERT_INT_EQ(tsr_cache_open(ctx, "", 1 << 20, &c), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "empty");
  ASSERT_OK(tsr_cache_open(ctx, th_path("b"), 1 << 20, &c));
  tsr_cache_close(c);
  tsr_cache_close(NULL);
}

TEST(a_hit_gives_the_computed_bits_and_computes_nothing) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  setup();
  tsr_node_t *n = count_node(300, 250, 64, 1.0, 0);   /* 5 x 4 chunks, edge ones partial */
  float *ref = compute(n, NULL);
  long base = atomic_load(computes);
  ASSERT_OK(tsr_cache_open(ctx, th_path("hit"), 64 << 20, &c));
  float *a = compute(n, c);
  ASSERT_INT_EQ(atomic_load(computes) - base, 20);
  float *b = compute(n, c);
  ASSERT_INT_EQ(atomic_load(computes) - base, 20);
  ASSERT(memcmp(ref, a, 300 * 250 * sizeof(float)) == 0);
  ASSERT(memcmp(ref, b, 300 * 250 * sizeof(float)) == 0);
  /* The footprint plane comes from the same files. */
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.entries, 20);
  ASSERT_INT_EQ(st.session_hits, 20);
  ASSERT_INT_EQ(st.session_misses, 20);
  ASSERT_INT_EQ(st.session_stores, 20);
  ASSERT_INT_EQ(st.raw_bytes, 300 * 250 * 2 * 4);
  ASSERT(st.ratio > 1.0);
  ASSERT_INT_EQ(st.warnings, 0);
  /* Each run's counts are in <dir>/stats, newest first. */
  ASSERT(st.n_runs == 2);
  ASSERT_INT_EQ(st.runs[0].hits, 20);
  ASSERT_INT_EQ(st.runs[0].misses, 0);
  ASSERT_INT_EQ(st.runs[1].misses, 20);
  ASSERT_INT_EQ(st.hits, 20);
  ASSERT_INT_EQ(st.misses, 20);
  tsr_cache_close(c);
  /* Another handle (another process, later) sees the same chunks. */
  ASSERT_OK(tsr_cache_open(ctx, th_path("hit"), 64 << 20, &c));
  float *d = compute(n, c);
  ASSERT_INT_EQ(atomic_load(computes) - base, 20);
  ASSERT(memcmp(ref, d, 300 * 250 * sizeof(float)) == 0);
  ASSERT_OK(tsr_cache_clear(c));
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.entries, 0);
  ASSERT_INT_EQ(st.n_runs, 0);
  tsr_cache_close(c);
  free(ref), free(a), free(b), free(d);
}

TEST(a_region_stores_whole_chunks_and_a_second_request_is_served_from_them) {
  tsr_cache_t *c;
  setup();
  tsr_node_t *n = count_node(256, 256, 64, 2.0, 0);
  tsr_node_t *fp = tsr_footprint(g, n);
  tsr_region_t r = box2(30, 100, 40, 70);   /* meets chunks (0..1, 0..1) */
  float *ref = compute(n, NULL), *reffp = compute(fp, NULL);
  long base = atomic_load(computes);
  ASSERT_OK(tsr_cache_open(ctx, th_path("region"), 64 << 20, &c));
  float *a = compute_region(n, &r, c, 1, 0);
  ASSERT_INT_EQ(atomic_load(computes) - base, 4);
  for (int64_t y = 40; y < 70; y++)
    ASSERT(memcmp(a + (y - 40) * 70, ref + y * 256 + 30, 70 * sizeof(float)) == 0);
  /* The footprint of the same chunks: no computation. */
  float *b = compute_region(fp, &r, c, 1, 0);
  ASSERT_INT_EQ(atomic_load(computes) - base, 4);
  for (int64_t y = 40; y < 70; y++)
    ASSERT(memcmp(b + (y - 40) * 70, reffp + y * 256 + 30, 70 * sizeof(float)) == 0);
  /* The whole image: only the other 12 chunks. */
  float *d = compute(n, c);
  ASSERT_INT_EQ(atomic_load(computes) - base, 16);
  ASSERT(memcmp(d, ref, 256 * 256 * sizeof(float)) == 0);
  tsr_cache_close(c);
  free(ref), free(reffp), free(a), free(b), free(d);
}

/* Damage one chunk file, rerun: the chunk is recomputed, the file replaced,
 * the result right and a warning recorded. */
static void damage_case(const char *name, void (*damage)(const char *path),
                        const char *expect_warning) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  setup();
  tsr_node_t *n = count_node(128, 128, 64, 3.0, 0);
  const char *dir = th_path(name);
  float *ref = compute(n, NULL);
  long base = atomic_load(computes);
  ASSERT_OK(tsr_cache_open(ctx, dir, 64 << 20, &c));
  free(compute(n, c));
  ASSERT_INT_EQ(atomic_load(computes) - base, 4);
  const char *f = chunk_file(dir, n, 1, 0);
  long good = file_size(f);
  ASSERT(good > 128);
  damage(f);
  float *a = compute(n, c);
  ASSERT(memcmp(a, ref, 128 * 128 * sizeof(float)) == 0);
  ASSERT_INT_EQ(atomic_load(computes) - base, 5);
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.session_dropped, 1);
  ASSERT_INT_EQ(st.warnings, 1);
  ASSERT_STR_CONTAINS(tsr_cache_warning(c), "dropped chunk file");
  ASSERT_STR_CONTAINS(tsr_cache_warning(c), expect_warning);
  /* The run succeeded; its message says what happened. */
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "dropped chunk file");
  ASSERT_INT_EQ(file_size(f), good);
  free(compute(n, c));
  ASSERT_INT_EQ(atomic_load(computes) - base, 5);
  tsr_cache_close(c);
  free(ref), free(a);
}

static void truncate_half(const char *path) { ASSERT_OK(truncate(path, file_size(path) / 2)); }
static void truncate_header(const char *path) { ASSERT_OK(truncate(path, 20)); }
static void flip_frame_byte(const char *path) {
  FILE *f = fopen(path, "r+b");
  unsigned char le[8];
  long frame0 = 0, at;
  int ch;
  /* The middle of the data plane's frame (its size is at byte 104). */
  fseek(f, 104, SEEK_SET);
  ASSERT(fread(le, 1, 8, f) == 8);
  for (int i = 7; i >= 0; i--)
    frame0 = frame0 << 8 | le[i];
  at = 128 + frame0 / 2;
  fseek(f, at, SEEK_SET);
  ch = fgetc(f);
  fseek(f, at, SEEK_SET);
  fputc(ch ^ 0x5a, f);
  fclose(f);
}
static void other_version(const char *path) {
  FILE *f = fopen(path, "r+b");
  fseek(f, 4, SEEK_SET);
  fputc(99, f);
  fclose(f);
}
static void append_bytes(const char *path) {
  FILE *f = fopen(path, "ab");
  fputs("trailing garbage", f);
  fclose(f);
}
static void empty_file(const char *path) { ASSERT_OK(truncate(path, 0)); }

TEST(a_truncated_chunk_file_is_a_miss) { damage_case("trunc", truncate_half, "truncated"); }
TEST(a_chunk_file_cut_inside_its_header_is_a_miss) {
  damage_case("trunchdr", truncate_header, "truncated");
}
TEST(an_empty_chunk_file_is_a_miss) { damage_case("empty", empty_file, "truncated"); }
TEST(a_corrupt_chunk_file_is_a_miss) { damage_case("corrupt", flip_frame_byte, "zstd"); }
TEST(a_chunk_file_of_another_version_is_a_miss) {
  damage_case("version", other_version, "format version 99");
}
TEST(a_chunk_file_of_the_wrong_size_is_a_miss) {
  damage_case("size", append_bytes, "wrong size");
}

TEST(a_file_in_place_of_the_directory_sets_the_cache_aside) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  setup();
  tsr_node_t *n = count_node(128, 128, 64, 4.0, 0);
  float *ref = compute(n, NULL);
  FILE *f = fopen(th_path("plainfile"), "w");
  fputs("not a directory\n", f);
  fclose(f);
  ASSERT_OK(tsr_cache_open(ctx, th_path("plainfile"), 64 << 20, &c));
  ASSERT_STR_CONTAINS(tsr_cache_warning(c), "cannot use");
  float *a = compute(n, c);
  ASSERT(memcmp(a, ref, 128 * 128 * sizeof(float)) == 0);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "running without a cache");
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.session_stores, 0);
  ASSERT_INT_EQ(st.entries, 0);
  ASSERT_OK(tsr_cache_trim(c));
  ASSERT_OK(tsr_cache_clear(c));
  tsr_cache_close(c);
  /* Below a file: ENOTDIR. */
  ASSERT_OK(tsr_cache_open(ctx, th_path("plainfile/sub"), 64 << 20, &c));
  ASSERT_STR_CONTAINS(tsr_cache_warning(c), "Not a directory");
  free(compute(n, c));
  tsr_cache_close(c);
  free(ref), free(a);
}

TEST(a_store_that_fails_midway_steps_aside_and_the_run_succeeds) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  char tmp[1024];
  setup();
  tsr_node_t *n = count_node(256, 128, 64, 5.0, 0);
  const char *dir = th_path("failing");
  float *ref = compute(n, NULL);
  ASSERT_OK(tsr_cache_open(ctx, dir, 64 << 20, &c));
  /* A file where the temporary directory was: every store fails, as on a
   * full disk. */
  snprintf(tmp, sizeof tmp, "%s/tmp", dir);
  ASSERT_OK(rmdir(tmp));
  FILE *f = fopen(tmp, "w");
  fclose(f);
  float *a = compute(n, c);
  ASSERT(memcmp(a, ref, 256 * 128 * sizeof(float)) == 0);
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.session_stores, 0);
  ASSERT_INT_EQ(st.warnings, 1);   /* once, not once per chunk */
  ASSERT_STR_CONTAINS(tsr_cache_warning(c), "not storing chunks");
  tsr_cache_close(c);
  free(ref), free(a);
}

TEST(a_write_cut_short_steps_aside_and_leaves_no_temporary_file) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  struct rlimit rl = {8192, 8192};
  char tmp[1024];
  setup();
  tsr_node_t *n = count_node(256, 128, 128, 12.0, 1);   /* noise: ~100 kB per chunk */
  const char *dir = th_path("efbig");
  float *ref = compute(n, NULL);
  ASSERT_OK(tsr_cache_open(ctx, dir, 64 << 20, &c));
  /* Files may not grow past 8 kB: every write fails partway (EFBIG), as it
   * would on a disk that fills up. */
  signal(SIGXFSZ, SIG_IGN);
  ASSERT_OK(setrlimit(RLIMIT_FSIZE, &rl));
  float *a = compute(n, c);
  ASSERT(memcmp(a, ref, 256 * 128 * sizeof(float)) == 0);
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.session_stores, 0);
  ASSERT_INT_EQ(st.entries, 0);
  ASSERT_INT_EQ(st.warnings, 1);
  ASSERT_STR_CONTAINS(tsr_cache_warning(c), "cannot write");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "not storing chunks");
  snprintf(tmp, sizeof tmp, "%s/tmp", dir);
  DIR *d = opendir(tmp);
  struct dirent *de;
  int left = 0;
  while ((de = readdir(d)) != NULL)
    left += de->d_name[0] != '.' && strncmp(de->d_name, "stats.", 6) != 0;
  closedir(d);
  ASSERT_INT_EQ(left, 0);
  tsr_cache_close(c);
  free(ref), free(a);
}

TEST(a_failed_run_keeps_its_error_message_over_cache_warnings) {
  tsr_cache_t *c;
  char tmp[1024];
  setup();
  tsr_node_t *n = count_node(256, 128, 64, 13.0, 0);
  ((cnt_params_t *)n->params)->fail_at = 3;
  const char *dir = th_path("failrun");
  ASSERT_OK(tsr_cache_open(ctx, dir, 64 << 20, &c));
  snprintf(tmp, sizeof tmp, "%s/tmp", dir);
  ASSERT_OK(rmdir(tmp));
  fclose(fopen(tmp, "w"));
  free(compute_region(n, NULL, c, 1, TSR_EIO));
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "failing on purpose");
  ASSERT_STR_CONTAINS(tsr_cache_warning(c), "not storing chunks");
  tsr_cache_close(c);
}

static volatile int cancel_flag;
static void cancel_after_3(void *ud, int64_t done, int64_t total) {
  (void)ud, (void)total;
  if (done == 3)
    cancel_flag = 1;
}

TEST(a_canceled_run_resumes_computing_only_what_was_not_stored) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  setup();
  tsr_node_t *n = count_node(256, 256, 64, 6.0, 0);
  float *ref = compute(n, NULL), *a = malloc(256 * 256 * sizeof(float));
  long base = atomic_load(computes);
  ASSERT_OK(tsr_cache_open(ctx, th_path("cancel"), 64 << 20, &c));
  ro.cache = c;
  ro.cancel = &cancel_flag;
  ro.progress = cancel_after_3;
  ASSERT_INT_EQ(tsr_compute(g, n, NULL, a, 256 * 256 * sizeof(float), &ro), TSR_ECANCELED);
  ASSERT_INT_EQ(atomic_load(computes) - base, 3);
  cancel_flag = 0;
  ro.progress = NULL;
  ASSERT_OK(tsr_compute(g, n, NULL, a, 256 * 256 * sizeof(float), &ro));
  ASSERT_INT_EQ(atomic_load(computes) - base, 16);
  ASSERT(memcmp(a, ref, 256 * 256 * sizeof(float)) == 0);
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.runs[0].hits, 3);
  ASSERT_INT_EQ(st.runs[0].misses, 13);
  tsr_cache_close(c);
  free(ref), free(a);
}

static void die_after_5(void *ud, int64_t done, int64_t total) {
  (void)ud, (void)total;
  if (done == 5)
    raise(SIGKILL);
}

TEST(a_killed_run_resumes_on_rerun_serial_and_pool) {
  for (int jobs = 1; jobs <= 2; jobs++) {
    tsr_cache_t *c;
    char name[32];
    setup();
    tsr_node_t *n = count_node(1024, 1024, 64, 7.0 + jobs, 0); /* 256 chunks */
    float *ref = compute(n, NULL);
    long base = atomic_load(computes);
    snprintf(name, sizeof name, "killed%d", jobs);
    const char *dir = th_path(name);
    pid_t pid = fork();
    if (pid == 0) {
      /* Its own handle, as another process would have. */
      tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
      float *a = malloc(1024 * 1024 * sizeof(float));
      if (tsr_cache_open(ctx, dir, 64 << 20, &c) != 0)
        _exit(2);
      ro.cache = c;
      ro.jobs = jobs;
      ro.executor = TSR_EXECUTOR_PROCESSES; /* the pool's paths (threads: test-threads) */
      ro.progress = die_after_5;
      tsr_compute(g, n, NULL, a, 1024 * 1024 * sizeof(float), &ro);
      _exit(0);
    }
    int status;
    ASSERT(waitpid(pid, &status, 0) == pid);
    ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    /* The killed parent's workers die with it (they may have finished a
     * few queued tasks first): wait until nothing computes any more.  The
     * run must have been cut short: most chunks are left. */
    long first = -1;
    while (first != atomic_load(computes) - base) {
      first = atomic_load(computes) - base;
      usleep(300000);
    }
    ASSERT(first >= 5 && first < 128);
    ASSERT_OK(tsr_cache_open(ctx, dir, 64 << 20, &c));
    float *a = compute_region(n, NULL, c, jobs, 0);
    ASSERT(memcmp(a, ref, 1024 * 1024 * sizeof(float)) == 0);
    tsr_cache_stats_t st;
    ASSERT_OK(tsr_cache_stats(c, &st));
    ASSERT(st.runs[0].hits >= 5);
    ASSERT_INT_EQ(st.runs[0].hits + st.runs[0].misses, 256);
    /* Only what was not stored was computed again. */
    ASSERT_INT_EQ(atomic_load(computes) - base - first, (long)st.runs[0].misses);
    tsr_cache_close(c);
    free(ref), free(a);
    tsr_graph_free(g);
    tsr_ctx_free(ctx);
  }
}

TEST(two_processes_storing_the_same_chunks_at_once_both_succeed) {
  const char *dir = th_path("concurrent");
  pid_t kids[2];
  setup();
  tsr_node_t *n = count_node(512, 512, 32, 9.0, 1);   /* 256 noisy chunks */
  float *ref = compute(n, NULL);
  long base = atomic_load(computes);
  for (int k = 0; k < 2; k++) {
    kids[k] = fork();
    if (kids[k] == 0) {
      tsr_cache_t *c;
      tsr_cache_stats_t st;
      int bad = 0;
      if (tsr_cache_open(ctx, dir, 256 << 20, &c) != 0)
        _exit(2);
      for (int round = 0; round < 2; round++) {
        float *a = compute_region(n, NULL, c, 1, 0);
        bad |= memcmp(a, ref, 512 * 512 * sizeof(float)) != 0;
        free(a);
      }
      tsr_cache_stats(c, &st);
      tsr_cache_close(c);
      free(ref); /* (valgrind's leak check runs at _exit in the child too) */
      _exit(bad ? 3 : st.warnings ? 4 : 0);
    }
  }
  for (int k = 0; k < 2; k++) {
    int status;
    ASSERT(waitpid(kids[k], &status, 0) == kids[k]);
    ASSERT(WIFEXITED(status));
    ASSERT_INT_EQ(WEXITSTATUS(status), 0);
  }
  /* Between 256 (perfect sharing) and 512 (no sharing) computations. */
  long done = atomic_load(computes) - base;
  ASSERT(done >= 256 && done <= 512);
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  ASSERT_OK(tsr_cache_open(ctx, dir, 256 << 20, &c));
  float *a = compute(n, c);
  ASSERT_INT_EQ(atomic_load(computes) - base, done);
  ASSERT(memcmp(a, ref, 512 * 512 * sizeof(float)) == 0);
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.entries, 256);
  ASSERT_INT_EQ(st.warnings, 0);
  /* No temporary file is left. */
  char tmp[1024];
  snprintf(tmp, sizeof tmp, "%s/tmp", dir);
  DIR *d = opendir(tmp);
  struct dirent *de;
  int left = 0;
  while ((de = readdir(d)) != NULL)
    left += de->d_name[0] != '.';
  closedir(d);
  ASSERT_INT_EQ(left, 0);
  tsr_cache_close(c);
  free(ref), free(a);
}

TEST(the_budget_evicts_least_recently_used_chunks_first) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  const char *dir = th_path("lru");
  setup();
  /* 12 chunks of 128 x 128 x 2 planes of noise: about 100 kB each stored,
   * so a 1 MiB budget holds about 10. */
  tsr_node_t *n = count_node(128 * 12, 128, 128, 1.0, 1);
  ASSERT_OK(tsr_cache_open(ctx, dir, 1 << 20, &c));
  for (int k = 0; k < 6; k++) {
    tsr_region_t r = box2(128 * k, 128 * k + 128, 0, 128);
    free(compute_region(n, &r, c, 1, 0));
  }
  long one = file_size(chunk_file(dir, n, 0, 0));
  ASSERT(one > 80000 && one < 140000);
  /* Use chunk 0 again: it becomes the most recently used. */
  long base = atomic_load(computes);
  tsr_region_t r0 = box2(0, 128, 0, 128);
  free(compute_region(n, &r0, c, 1, 0));
  ASSERT_INT_EQ(atomic_load(computes) - base, 0);
  for (int k = 6; k < 12; k++) {
    tsr_region_t r = box2(128 * k, 128 * k + 128, 0, 128);
    free(compute_region(n, &r, c, 1, 0));
  }
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT(st.bytes <= (1u << 20));
  ASSERT(st.entries < 12);
  /* Evicted oldest first: 1, 2, ... go before 0, and the newest stay. */
  ASSERT(exists(chunk_file(dir, n, 0, 0)));
  ASSERT(!exists(chunk_file(dir, n, 1, 0)));
  ASSERT(exists(chunk_file(dir, n, 11, 0)));
  ASSERT(exists(chunk_file(dir, n, 10, 0)));
  int kept = 0;
  bool gap = false, ok = true;
  for (int k = 1; k < 12; k++) {
    bool e = exists(chunk_file(dir, n, k, 0));
    kept += e;
    if (!e && gap)
      ok = false; /* a missing chunk after a kept one: not LRU order */
    gap |= e;
  }
  ASSERT(ok);
  ASSERT_INT_EQ(kept + 1, (long)st.entries);
  tsr_cache_close(c);
  /* A smaller budget at the next open trims at once. */
  ASSERT_OK(tsr_cache_open(ctx, dir, 1 << 20, &c));
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT(st.bytes <= (1u << 20));
  tsr_cache_close(c);
}

TEST(pool_with_a_cache_equals_serial) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  setup();
  tsr_node_t *n = count_node(300, 300, 64, 11.0, 0);   /* 25 chunks */
  tsr_region_t r = box2(10, 290, 70, 200);
  float *ref = compute_region(n, &r, NULL, 1, 0);
  ASSERT_OK(tsr_cache_open(ctx, th_path("pool"), 64 << 20, &c));
  long base = atomic_load(computes);
  float *a = compute_region(n, &r, c, 2, 0);    /* cold, on workers */
  ASSERT_INT_EQ(atomic_load(computes) - base, 15);
  float *b = compute_region(n, &r, c, 2, 0);    /* warm, on workers */
  float *d = compute_region(n, &r, c, 1, 0);    /* warm, serial */
  ASSERT_INT_EQ(atomic_load(computes) - base, 15);
  size_t bytes = (size_t)tsr_region_size(&r) * sizeof(float);
  ASSERT(memcmp(a, ref, bytes) == 0);
  ASSERT(memcmp(b, ref, bytes) == 0);
  ASSERT(memcmp(d, ref, bytes) == 0);
  ASSERT_OK(tsr_cache_stats(c, &st));
  /* The workers' counts reach the parent. */
  ASSERT_INT_EQ(st.session_stores, 15);
  ASSERT_INT_EQ(st.session_hits, 30);
  ASSERT_INT_EQ(st.runs[1].hits, 15);
  tsr_cache_close(c);
  free(ref), free(a), free(b), free(d);
}

TEST(pool_with_partly_cached_and_corrupt_chunks) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  const char *dir = th_path("poolmix");
  setup();
  tsr_node_t *n = count_node(256, 256, 64, 14.0, 0);   /* 16 chunks */
  float *ref = compute(n, NULL);
  long base = atomic_load(computes);
  tsr_region_t r = box2(30, 100, 40, 70);
  ASSERT_OK(tsr_cache_open(ctx, dir, 64 << 20, &c));
  free(compute_region(n, &r, c, 2, 0));        /* 4 chunks, on workers */
  ASSERT_INT_EQ(atomic_load(computes) - base, 4);
  float *a = compute_region(n, NULL, c, 2, 0);  /* 4 hits here, 12 on workers */
  ASSERT_INT_EQ(atomic_load(computes) - base, 16);
  ASSERT(memcmp(a, ref, 256 * 256 * sizeof(float)) == 0);
  truncate_half(chunk_file(dir, n, 2, 2));
  float *b = compute_region(n, NULL, c, 2, 0);  /* the bad one is recomputed */
  ASSERT_INT_EQ(atomic_load(computes) - base, 17);
  ASSERT(memcmp(b, ref, 256 * 256 * sizeof(float)) == 0);
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.entries, 16);
  ASSERT_INT_EQ(st.session_dropped, 1);
  ASSERT_INT_EQ(st.runs[0].hits, 15);
  ASSERT_INT_EQ(st.runs[1].hits, 4);
  tsr_cache_close(c);
  free(ref), free(a), free(b);
}

/* A small image with a TAN WCS written to a FITS file through the API. */
static void write_fits_image(const char *path, float bias) {
  char hdr[1024];
  tsr_wcs_t *w;
  tsr_graph_t *g2;
  int64_t shape[2] = {60, 50};
  float *data = malloc(60 * 50 * sizeof(float));
  for (int i = 0; i < 60 * 50; i++)
    data[i] = (float)(i % 60) * 0.5f + (float)(i / 60) + bias;
  snprintf(hdr, sizeof hdr,
           "NAXIS = 2\nNAXIS1 = 60\nNAXIS2 = 50\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
           "CRVAL1 = 10.0\nCRVAL2 = 20.0\nCRPIX1 = 30\nCRPIX2 = 25\nCDELT1 = -0.001\n"
           "CDELT2 = 0.001\n");
  ASSERT_OK(tsr_wcs_parse(ctx, hdr, strlen(hdr), "img", 1, &w));
  ASSERT_OK(tsr_graph_new(ctx, &g2));
  tsr_node_t *src = tsr_source_buffer(g2, TSR_F32, 2, shape, data, w);
  ASSERT(src != NULL);
  ASSERT_OK(tsr_write_fits(g2, 1, &src, &path, NULL, NULL));
  tsr_graph_free(g2);
  tsr_wcs_free(w);
  free(data);
}

static float *reproject_file(const char *path, tsr_cache_t *c) {
  char hdr[1024];
  tsr_wcs_t *t;
  tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
  snprintf(hdr, sizeof hdr,
           "NAXIS = 2\nNAXIS1 = 40\nNAXIS2 = 40\nCTYPE1 = 'RA---TAN'\nCTYPE2 = 'DEC--TAN'\n"
           "CRVAL1 = 10.0\nCRVAL2 = 20.0\nCRPIX1 = 20\nCRPIX2 = 20\nCDELT1 = -0.0012\n"
           "CDELT2 = 0.0012\nCROTA2 = 15\n");
  ASSERT_OK(tsr_wcs_parse(ctx, hdr, strlen(hdr), "target", 1, &t));
  tsr_graph_free(g);
  ASSERT_OK(tsr_graph_new(ctx, &g));
  o.block[0] = o.block[1] = 16;
  tsr_node_t *src = tsr_source_fits(g, path, 0);
  tsr_node_t *r = tsr_reproject_interp(g, src, t, &o);
  if (r == NULL)
    th_fail(__FILE__, __LINE__, "%s", tsr_graph_errmsg(g));
  tsr_wcs_free(t);
  return compute_region(r, NULL, c, 1, 0);
}

TEST(a_changed_input_file_gives_fresh_results) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  const char *img = th_path("input.fits");
  setup();
  ASSERT_OK(tsr_cache_open(ctx, th_path("changed"), 64 << 20, &c));
  write_fits_image(img, 0.0f);
  float *ref1 = reproject_file(img, NULL);
  float *a1 = reproject_file(img, c);
  float *b1 = reproject_file(img, c);
  ASSERT(memcmp(a1, ref1, 40 * 40 * sizeof(float)) == 0);
  ASSERT(memcmp(b1, ref1, 40 * 40 * sizeof(float)) == 0);
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.runs[0].misses, 0);
  /* Rewrite the file with other data: a new identity, a new key. */
  write_fits_image(img, 100.0f);
  float *ref2 = reproject_file(img, NULL);
  float *a2 = reproject_file(img, c);
  ASSERT(memcmp(a2, ref2, 40 * 40 * sizeof(float)) == 0);
  ASSERT(memcmp(a2, ref1, 40 * 40 * sizeof(float)) != 0);
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.runs[0].hits, 0);
  ASSERT_INT_EQ(st.runs[0].misses, 9);
  tsr_cache_close(c);
  free(ref1), free(a1), free(b1), free(ref2), free(a2);
}

/* ------------------------------------------------------------------ */
/* Foreign entries: anything in the cache that is not a regular file (or a
 * real subdirectory) was put there by someone else.  It is never followed,
 * opened, counted or deleted. */

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *de;
  int n = 0;
  ASSERT(d != NULL);
  while ((de = readdir(d)) != NULL)
    n += de->d_name[0] != '.';
  closedir(d);
  return n;
}

static bool is_kind(const char *path, mode_t kind) {
  struct stat st;
  return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == kind;
}

/* The subdirectory holding n's chunk files. */
static const char *chunk_subdir(const char *dir, const tsr_node_t *n) {
  static char buf[1024];
  const char *f = chunk_file(dir, n, 0, 0);
  snprintf(buf, sizeof buf, "%.*s", (int)(strrchr(f, '/') - f), f);
  return buf;
}

TEST(a_symlinked_subdirectory_is_neither_followed_nor_cleared) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  char sub[1024];
  const char *dir = th_path("symdir"), *other = th_path("symdir-elsewhere");
  setup();
  tsr_node_t *n = count_node(128, 128, 64, 5.0, 0);   /* 4 chunks in one subdirectory */
  float *ref = compute(n, NULL);
  ASSERT_OK(tsr_cache_open(ctx, dir, 64 << 20, &c));
  free(compute(n, c));
  /* The reported case: the subdirectory moved elsewhere, a symlink to it in its place. */
  snprintf(sub, sizeof sub, "%s", chunk_subdir(dir, n));
  ASSERT_OK(rename(sub, other));
  ASSERT_OK(symlink(other, sub));
  long base = atomic_load(computes);
  float *a = compute(n, c);
  ASSERT(memcmp(a, ref, 128 * 128 * sizeof(float)) == 0);
  ASSERT_INT_EQ(atomic_load(computes) - base, 4);   /* read through the link: misses */
  ASSERT_INT_EQ(count_entries(other), 4);           /* and nothing stored there */
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.entries, 0);
  ASSERT_INT_EQ(st.bytes, 0);
  ASSERT_INT_EQ(st.foreign, 1);
  ASSERT_OK(tsr_cache_trim(c));
  ASSERT_OK(tsr_cache_clear(c));
  ASSERT_INT_EQ(count_entries(other), 4);
  ASSERT(is_kind(sub, S_IFLNK));
  tsr_cache_close(c);
  free(ref), free(a);
}

TEST(a_chunk_file_reached_through_a_symlink_is_a_miss_and_stays) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  const char *dir = th_path("symfile"), *moved = th_path("symfile-moved.tsc");
  setup();
  tsr_node_t *n = count_node(128, 128, 64, 6.0, 0);
  float *ref = compute(n, NULL);
  ASSERT_OK(tsr_cache_open(ctx, dir, 64 << 20, &c));
  free(compute(n, c));
  /* A valid chunk file, but reached through a symlink: its bits are not trusted. */
  const char *f = chunk_file(dir, n, 1, 0);
  long size = file_size(f);
  ASSERT_OK(rename(f, moved));
  ASSERT_OK(symlink(moved, f));
  long base = atomic_load(computes);
  float *a = compute(n, c);
  ASSERT(memcmp(a, ref, 128 * 128 * sizeof(float)) == 0);
  ASSERT_INT_EQ(atomic_load(computes) - base, 1);
  ASSERT(is_kind(f, S_IFLNK));
  ASSERT_INT_EQ(file_size(moved), size);
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.entries, 3);
  ASSERT_INT_EQ(st.foreign, 1);
  ASSERT_INT_EQ(st.warnings, 0);
  ASSERT_OK(tsr_cache_clear(c));
  ASSERT(is_kind(f, S_IFLNK));
  ASSERT_INT_EQ(file_size(moved), size);
  ASSERT(!exists(chunk_file(dir, n, 0, 0)));
  tsr_cache_close(c);
  free(ref), free(a);
}

TEST(a_symlink_to_a_huge_sparse_file_counts_nothing_and_evicts_nothing) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  const char *dir = th_path("sparse"), *huge = th_path("sparse-huge");
  int fd;
  setup();
  /* 4 chunks of noise, about 100 kB each: well within a 1 MiB budget. */
  tsr_node_t *n = count_node(128 * 4, 128, 128, 1.0, 1);
  ASSERT_OK(tsr_cache_open(ctx, dir, 1 << 20, &c));
  free(compute(n, c));
  tsr_cache_close(c);
  fd = open(huge, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ASSERT(fd >= 0);
  ASSERT_OK(ftruncate(fd, (off_t)100 << 30));   /* 100 GB, sparse */
  close(fd);
  char link[1024];
  snprintf(link, sizeof link, "%s", chunk_file(dir, n, 9, 0));  /* named like a chunk of n */
  ASSERT_OK(symlink(huge, link));
  /* Opening trims to the budget: it must not see 100 GB. */
  ASSERT_OK(tsr_cache_open(ctx, dir, 1 << 20, &c));
  for (int k = 0; k < 4; k++)
    ASSERT(exists(chunk_file(dir, n, k, 0)));
  long base = atomic_load(computes);
  free(compute(n, c));
  ASSERT_INT_EQ(atomic_load(computes) - base, 0);
  /* Stores push the running total up: still no eviction because of the link. */
  tsr_node_t *m = count_node(128 * 2, 128, 128, 2.0, 1);
  free(compute(m, c));
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.entries, 6);
  ASSERT(st.bytes < (1u << 20));
  ASSERT_INT_EQ(st.foreign, 1);
  ASSERT_OK(tsr_cache_trim(c));
  tsr_cache_close(c);
  for (int k = 0; k < 4; k++)
    ASSERT(exists(chunk_file(dir, n, k, 0)));
  ASSERT(is_kind(link, S_IFLNK));
  ASSERT_INT_EQ(file_size(huge), (long)100 << 30);
}

TEST(fifos_in_the_cache_are_never_opened) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  char stats[1024], tmpname[1024], fake_sub[1024];
  const char *dir = th_path("fifo");
  setup();
  tsr_node_t *n = count_node(128, 128, 64, 7.0, 0);
  float *ref = compute(n, NULL);
  ASSERT_OK(tsr_cache_open(ctx, dir, 64 << 20, &c));
  free(compute(n, c));
  tsr_cache_close(c);
  /* A FIFO at a chunk's name, at the stats file, at the temporary name this
   * process will store chunk (0, 1) under, and at a subdirectory's name.
   * Opening any of them would block until the harness's timeout. */
  const char *f11 = chunk_file(dir, n, 1, 1), *f01 = chunk_file(dir, n, 0, 1);
  const char *base01 = strrchr(f01, '/') + 1;
  snprintf(stats, sizeof stats, "%s/stats", dir);
  snprintf(tmpname, sizeof tmpname, "%s/tmp/%.*s.%ld.tmp", dir, (int)(strlen(base01) - 4),
           base01, (long)getpid());
  snprintf(fake_sub, sizeof fake_sub, "%s/ff", dir);
  ASSERT_OK(unlink(f11));
  ASSERT_OK(unlink(f01));
  ASSERT_OK(unlink(stats));
  ASSERT_OK(mkfifo(f11, 0644));
  ASSERT_OK(mkfifo(stats, 0644));
  ASSERT_OK(mkfifo(tmpname, 0644));
  ASSERT_OK(mkfifo(fake_sub, 0644));
  ASSERT_OK(tsr_cache_open(ctx, dir, 64 << 20, &c));
  long base = atomic_load(computes);
  float *a = compute(n, c);
  ASSERT(memcmp(a, ref, 128 * 128 * sizeof(float)) == 0);
  ASSERT_INT_EQ(atomic_load(computes) - base, 2);
  /* The pool's workers look up and store too. */
  float *b = compute_region(n, NULL, c, 2, 0);
  ASSERT(memcmp(b, ref, 128 * 128 * sizeof(float)) == 0);
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.foreign, 4);
  ASSERT_OK(tsr_cache_trim(c));
  ASSERT_OK(tsr_cache_clear(c));
  tsr_cache_close(c);
  ASSERT(is_kind(f11, S_IFIFO));
  ASSERT(is_kind(stats, S_IFIFO));
  ASSERT(is_kind(tmpname, S_IFIFO));
  ASSERT(is_kind(fake_sub, S_IFIFO));
  free(ref), free(a), free(b);
}

/* Root ignores permission bits.  To meet a real permission failure, `fn`
 * runs in a child that, when started as root, gives `tree` to nobody and
 * becomes nobody; the test fails if the child does.  `fn` NULL: only the
 * change of owner. */
static void as_nobody(const char *tree, void (*fn)(const char *), const char *arg) {
  int status;
  pid_t pid;
  if (geteuid() == 0) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "chown -R 65534:65534 '%s'", tree);
    ASSERT_OK(system(cmd));
    ASSERT_OK(chmod(th_tmpdir(), 0711));
  }
  fflush(stdout);
  pid = fork();
  ASSERT(pid >= 0);
  if (pid == 0) {
    if (geteuid() == 0 && (setgroups(0, NULL) != 0 || setgid(65534) != 0 || setuid(65534) != 0))
      _exit(2);
    if (fn)
      fn(arg);
    fflush(stdout);
    _exit(0);
  }
  ASSERT(waitpid(pid, &status, 0) == pid);
  ASSERT(WIFEXITED(status));
  ASSERT_INT_EQ(WEXITSTATUS(status), 0);
}

/* Names, kinds, sizes and mtimes (ns) of everything under dir. */
static void snapshot(const char *dir, char *out, size_t cap) {
  char cmd[2048];
  FILE *p;
  size_t k;
  snprintf(cmd, sizeof cmd, "cd '%s' && find . -printf '%%p %%y %%s %%T@\\n' | sort", dir);
  p = popen(cmd, "r");
  ASSERT(p != NULL);
  k = fread(out, 1, cap - 1, p);
  out[k] = '\0';
  pclose(p);
  ASSERT(k > 0 && k < cap - 1);
}

static tsr_node_t *ro_node;

static void stats_read_only(const char *dir) {
  tsr_cache_t *c;
  tsr_cache_stats_t st;
  char tmp[1024];
  /* Truly read-only for a non-root user: no write can succeed. */
  snprintf(tmp, sizeof tmp, "%s/tmp", dir);
  ASSERT(access(dir, W_OK) != 0 && access(tmp, W_OK) != 0);
  ASSERT_OK(tsr_cache_open_read_only(ctx, dir, &c));
  ASSERT(tsr_cache_warning(c)[0] == '\0');
  ASSERT_OK(tsr_cache_stats(c, &st));
  ASSERT_INT_EQ(st.entries, 4);
  ASSERT_INT_EQ(st.stores, 4);
  ASSERT_INT_EQ(st.n_runs, 1);
  /* Lookups hit, and a hit does not touch the file. */
  long base = atomic_load(computes);
  free(compute(ro_node, c));
  ASSERT_INT_EQ(atomic_load(computes) - base, 0);
  ASSERT_INT_EQ(tsr_cache_trim(c), TSR_EINVAL);
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "read-only");
  ASSERT_INT_EQ(tsr_cache_clear(c), TSR_EINVAL);
  tsr_cache_close(c);
}

TEST(stats_on_a_read_only_cache_works_and_writes_nothing) {
  tsr_cache_t *c;
  char cmd[2048], stale[1024];
  static char before[1 << 16], after[1 << 16];
  const char *dir = th_path("readonly");
  struct timespec old[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
  setup();
  ro_node = count_node(128, 128, 64, 8.0, 0);
  ASSERT_OK(tsr_cache_open(ctx, dir, 64 << 20, &c));
  free(compute(ro_node, c));
  tsr_cache_close(c);
  /* A leftover of a long dead writer, which a writable open would remove. */
  snprintf(stale, sizeof stale, "%s/tmp/x.999999999.tmp", dir);
  fclose(fopen(stale, "w"));
  ASSERT_OK(utimensat(AT_FDCWD, stale, old, 0));
  snprintf(cmd, sizeof cmd, "chmod -R a-w '%s'", dir);
  ASSERT_OK(system(cmd));
  snapshot(dir, before, sizeof before);
  as_nobody(dir, stats_read_only, dir);
  snapshot(dir, after, sizeof after);
  ASSERT(strcmp(before, after) == 0);
  snprintf(cmd, sizeof cmd, "chmod -R u+w '%s'", dir);
  ASSERT_OK(system(cmd));
}

static void clear_blocked(const char *dir) {
  tsr_cache_t *c;
  ASSERT_OK(tsr_cache_open(ctx, dir, 64 << 20, &c));
  ASSERT_INT_EQ(tsr_cache_clear(c), TSR_ECACHE);
  /* 4 chunks of one node and the stats file go; the other node's 4 stay. */
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "cache clear: removed 5 files; could not remove 4: ");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "Permission denied");
  tsr_cache_close(c);
}

TEST(clear_reports_what_it_could_not_remove) {
  tsr_cache_t *c;
  char cmd[2048], blocked[1024];
  const char *dir = th_path("blocked");
  setup();
  tsr_node_t *n = count_node(128, 128, 64, 9.0, 0), *m = NULL;
  snprintf(blocked, sizeof blocked, "%s", chunk_subdir(dir, n));
  /* A second node whose chunks live in another subdirectory. */
  for (double s = 10.0; m == NULL || strcmp(chunk_subdir(dir, m), blocked) == 0; s++)
    m = count_node(128, 128, 64, s, 0);
  ASSERT_OK(tsr_cache_open(ctx, dir, 64 << 20, &c));
  free(compute(n, c));
  free(compute(m, c));
  tsr_cache_close(c);
  as_nobody(dir, NULL, NULL);   /* only the chown */
  snprintf(cmd, sizeof cmd, "chmod a-w '%s'", blocked);
  ASSERT_OK(system(cmd));
  as_nobody(dir, clear_blocked, dir);
  for (int k = 0; k < 4; k++) {
    ASSERT(exists(chunk_file(dir, n, k % 2, k / 2)));
    ASSERT(!exists(chunk_file(dir, m, k % 2, k / 2)));
  }
  snprintf(cmd, sizeof cmd, "chmod u+w '%s'", blocked);
  ASSERT_OK(system(cmd));
}

TEST_MAIN()
