/* test-pool.c -- the process-pool executor: same bits as serial, faults,
 * timeouts, cancellation, and no process left behind. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <tessera/tessera.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"

static tsr_ctx_t *ctx;
static tsr_graph_t *g;
static tsr_wcs_t *win, *wout;
static float *image;

static void setup(int n, int m) {
  char hi[1024], ho[1024];
  int64_t shape[2] = {n, n};
  snprintf(hi, sizeof hi,
           "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = 'RA---SIN'\nCTYPE2 = 'DEC--SIN'\n"
           "CRVAL1 = 150.0\nCRVAL2 = 2.0\nCRPIX1 = %g\nCRPIX2 = %g\nCDELT1 = -0.0003\n"
           "CDELT2 = 0.0003\n",
           n, n, n / 2.0, n / 2.0);
  snprintf(ho, sizeof ho,
           "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = 'GLON-ZEA'\nCTYPE2 = 'GLAT-ZEA'\n"
           "CRVAL1 = 236.8\nCRVAL2 = 42.0\nCRPIX1 = %g\nCRPIX2 = %g\nCDELT1 = -0.00033\n"
           "CDELT2 = 0.00033\nPC1_1 = 0.9\nPC1_2 = 0.43589\nPC2_1 = -0.43589\nPC2_2 = 0.9\n",
           m, m, m / 2.0, m / 2.0);
  ASSERT_OK(tsr_ctx_new(&ctx, NULL));
  ASSERT_OK(tsr_graph_new(ctx, &g));
  ASSERT_OK(tsr_wcs_parse(ctx, hi, strlen(hi), "input", 1, &win));
  ASSERT_OK(tsr_wcs_parse(ctx, ho, strlen(ho), "target", 1, &wout));
  image = malloc(sizeof(float) * (size_t)n * (size_t)n);
  for (int y = 0; y < n; y++)
    for (int x = 0; x < n; x++)
      image[(size_t)y * n + x] = (float)(sin(0.05 * x) + cos(0.031 * y) + 0.001 * x * y);
  (void)shape;
}

static tsr_node_t *reprojection(int n, int order, int64_t block) {
  int64_t shape[2] = {n, n};
  tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
  tsr_node_t *src = tsr_source_buffer_ref(g, TSR_F32, 2, shape, image, win);
  o.order = order;
  o.block[0] = o.block[1] = block;
  tsr_node_t *r = tsr_reproject_interp(g, src, wout, &o);
  if (r == NULL)
    th_fail(__FILE__, __LINE__, "%s", tsr_graph_errmsg(g));
  return r;
}

/* No child of this process may be left, running or zombie. */
static void assert_no_children(void) {
  int st;
  pid_t p = waitpid(-1, &st, WNOHANG);
  ASSERT(p == -1 && errno == ECHILD);
}

static float *compute(tsr_node_t *n, int m, const tsr_run_opts_t *ro, int expect) {
  float *out = malloc(sizeof(float) * (size_t)m * (size_t)m);
  int rc = tsr_compute(g, n, NULL, out, sizeof(float) * (size_t)m * (size_t)m, ro);
  if (rc != expect)
    th_fail(__FILE__, __LINE__, "compute returned %d (%s), expected %d", rc, tsr_errmsg(ctx),
            expect);
  return out;
}

TEST(pool_equals_serial_for_every_order) {
  setup(300, 280);
  for (int order = 0; order <= TSR_ORDER_LANCZOS4; order++) {
    tsr_node_t *n = reprojection(300, order, 48);
    tsr_run_opts_t serial = TSR_RUN_OPTS_INIT, pool = TSR_RUN_OPTS_INIT;
    float *a = compute(n, 280, &serial, 0);
    for (int jobs = 2; jobs <= 5; jobs += 3) {
      pool.jobs = jobs;
      pool.executor = TSR_EXECUTOR_PROCESSES;
      float *b = compute(n, 280, &pool, 0);
      ASSERT(memcmp(a, b, sizeof(float) * 280 * 280) == 0);
      free(b);
      assert_no_children();
    }
    free(a);
  }
}

/* The whole contents of a file, or NULL. */
static unsigned char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf = NULL;
  long n;
  if (f == NULL)
    return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
      (buf = malloc((size_t)n)) != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  *len = buf ? (size_t)n : 0;
  fclose(f);
  return buf;
}

/* Written with workers, the data and footprint files are the serial ones,
 * byte for byte, also when a worker dies mid-run (a one-band image: one
 * worker computes and writes it, the other has nothing to do). */
TEST(files_written_by_workers_equal_serial_ones) {
  setup(300, 280);
  for (int order = 1; order <= 3; order += 2) {
    tsr_node_t *n = reprojection(300, order, 40);
    tsr_node_t *nodes[2] = {n, tsr_footprint(g, n)};
    const char *ser[2] = {th_path("ser-data.fits"), th_path("ser-fp.fits")};
    const char *par[2] = {th_path("par-data.fits"), th_path("par-fp.fits")};
    tsr_run_opts_t serial = TSR_RUN_OPTS_INIT, pool = TSR_RUN_OPTS_INIT;
    ASSERT(nodes[1] != NULL);
    ASSERT_OK(tsr_write_fits(g, 2, nodes, ser, NULL, &serial));
    pool.jobs = 2;
    pool.executor = TSR_EXECUTOR_PROCESSES;
    for (int crash = 0; crash < 2; crash++) {
      if (crash)
        tsr__test_hooks.crash_chunk = "3,2";
      ASSERT_OK(tsr_write_fits(g, 2, nodes, par, NULL, &pool));
      tsr__test_hooks.crash_chunk = NULL;
      assert_no_children();
      for (int f = 0; f < 2; f++) {
        size_t la, lb;
        unsigned char *a = slurp(ser[f], &la), *b = slurp(par[f], &lb);
        ASSERT(a != NULL && b != NULL);
        ASSERT_INT_EQ(la, lb);
        ASSERT(memcmp(a, b, la) == 0);
        free(a);
        free(b);
      }
    }
  }
}

static void count_progress(void *ud, int64_t done, int64_t total) {
  int64_t *seen = ud;
  seen[0] = done;
  seen[1] = total;
}

static bool same_files(const char *pa, const char *pb) {
  size_t la, lb;
  unsigned char *a = slurp(pa, &la), *b = slurp(pb, &lb);
  bool same = a != NULL && b != NULL && la == lb && memcmp(a, b, la) == 0;
  free(a);
  free(b);
  return same;
}

/* Whole bands computed and written by the workers (band jobs), several for
 * each, from both ends of the image: three files of two owners (a bilinear
 * reprojection's data and footprint, a bicubic one) are the serial ones
 * byte for byte, also when a worker dies mid-band, and progress counts
 * every chunk task. */
TEST(band_jobs_write_the_serial_files) {
  setup(1024, 2048); /* 2048^2 float32 outputs: bands of 256 rows */
  tsr_node_t *a = reprojection(1024, 1, 0), *b = reprojection(1024, 3, 0);
  tsr_node_t *nodes[3] = {a, tsr_footprint(g, a), b};
  const char *ser[3] = {th_path("bs-a.fits"), th_path("bs-fp.fits"), th_path("bs-b.fits")};
  const char *par[3] = {th_path("bp-a.fits"), th_path("bp-fp.fits"), th_path("bp-b.fits")};
  tsr_run_opts_t serial = TSR_RUN_OPTS_INIT, pool = TSR_RUN_OPTS_INIT;
  int64_t seen[2] = {0, 0};
  ASSERT(nodes[1] != NULL && b != NULL);
  ASSERT_OK(tsr_write_fits(g, 3, nodes, ser, NULL, &serial));
  pool.jobs = 2;
  pool.executor = TSR_EXECUTOR_PROCESSES;
  pool.progress = count_progress;
  pool.progress_ud = seen;
  for (int crash = 0; crash < 2; crash++) {
    if (crash)
      tsr__test_hooks.crash_chunk = "3,5";
    seen[0] = seen[1] = 0;
    ASSERT_OK(tsr_write_fits(g, 3, nodes, par, NULL, &pool));
    tsr__test_hooks.crash_chunk = NULL;
    assert_no_children();
    for (int f = 0; f < 3; f++)
      ASSERT(same_files(ser[f], par[f]));
    ASSERT(seen[1] >= 2 * 64); /* two owners, 8 x 8 chunks each */
    ASSERT_INT_EQ(seen[0], seen[1]);
  }
}

/* A band job whose chunk keeps crashing, hangs, or whose write finds the
 * disk full: the write fails naming the chunk (or the file), and leaves
 * no file, no temporary and no process. */
TEST(band_jobs_fail_clearly_and_leave_nothing) {
  setup(1024, 2048);
  tsr_node_t *n = reprojection(1024, 1, 0);
  const char *path = th_path("failing.fits");
  tsr_run_opts_t pool = TSR_RUN_OPTS_INIT;
  pool.jobs = 2;
  pool.executor = TSR_EXECUTOR_PROCESSES;
  tsr__test_hooks.crash_chunk = "2,6,always";
  ASSERT_INT_EQ(tsr_write_fits(g, 1, &n, &path, NULL, &pool), TSR_EWORKER);
  tsr__test_hooks.crash_chunk = NULL;
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "fits: writing \"");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx),
                      "failing.fits\": executor: chunk [512:768, 1536:1792] of node reproject_interp#");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "killed by signal 11");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "after 2 retries");
  ASSERT(access(path, F_OK) != 0);
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  assert_no_children();

  tsr__test_hooks.crash_chunk = "7,0,hang";
  pool.retries = 1;
  /* Well above a 256^2 bilinear block under valgrind on a loaded machine
   * (0.3 s killed a sound block once). */
  pool.task_timeout_s = 1.5;
  ASSERT_INT_EQ(tsr_write_fits(g, 1, &n, &path, NULL, &pool), TSR_EWORKER);
  tsr__test_hooks.crash_chunk = NULL;
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "executor: chunk [1792:2048, 0:256] of node reproject_interp#");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "killed by signal 9");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "after 1 retry");
  ASSERT(access(path, F_OK) != 0);
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  assert_no_children();

  /* The first data write of each worker fails, as on a full disk. */
  tsr__test_hooks.write_fail = 1;
  pool.task_timeout_s = 0;
  ASSERT_INT_EQ(tsr_write_fits(g, 1, &n, &path, NULL, &pool), TSR_EIO);
  tsr__test_hooks.write_fail = 0;
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "failing.fits\": No space left on device");
  ASSERT(access(path, F_OK) != 0);
  ASSERT_INT_EQ(th_count_temps(th_tmpdir()), 0);
  assert_no_children();
}

TEST(more_workers_than_blocks_and_a_single_block) {
  setup(120, 100);
  tsr_node_t *one = reprojection(120, 1, 0); /* 512 default: one block */
  tsr_run_opts_t serial = TSR_RUN_OPTS_INIT, pool = TSR_RUN_OPTS_INIT;
  float *a = compute(one, 100, &serial, 0);
  pool.jobs = 8;
  pool.executor = TSR_EXECUTOR_PROCESSES;
  float *b = compute(one, 100, &pool, 0);
  ASSERT(memcmp(a, b, sizeof(float) * 100 * 100) == 0);
  free(b);
  tsr_node_t *few = reprojection(120, 1, 60); /* 4 blocks, 8 workers */
  b = compute(few, 100, &pool, 0);
  ASSERT(memcmp(a, b, sizeof(float) * 100 * 100) == 0);
  free(a);
  free(b);
  assert_no_children();
}

TEST(workers_retired_when_the_request_is_done_come_back_for_more) {
  setup(200, 200);
  tsr_node_t *n = reprojection(200, 1, 50); /* 16 blocks */
  tsr_run_opts_t serial = TSR_RUN_OPTS_INIT, pool = TSR_RUN_OPTS_INIT;
  float *ref = compute(n, 200, &serial, 0), *out = calloc(200 * 200, sizeof(float));
  tsr_region_t whole = tsr_region_of(n), top = whole, bottom = whole;
  int64_t stride[TSR_MAX_DIMS], ticket;
  tsr__run_t *run;
  top.stop[1] = bottom.start[1] = 100;
  tsr__contiguous_strides(&whole, stride);
  pool.jobs = 2;
  pool.executor = TSR_EXECUTOR_PROCESSES;
  ASSERT_OK(tsr__run_new(g, &pool, &run));
  /* The request is said to be 16 tasks: the workers retire after the
   * second half, and the third submission must bring them back. */
  tsr__run_set_request(run, 16, n, &whole);
  for (int k = 0; k < 3; k++) {
    const tsr_region_t *r = k == 1 ? &bottom : &top;
    void *dst[TSR__MAX_PLANES] = {out + (k == 1 ? 100 * 200 : 0)}; /* no footprint */
    memset(dst[0], 0, 100 * 200 * sizeof(float));
    ASSERT_OK(tsr__run_submit(run, n, r, dst, stride, &ticket));
    ASSERT_OK(tsr__run_wait(run, ticket));
    ASSERT(memcmp(dst[0], ref + (k == 1 ? 100 * 200 : 0), 100 * 200 * sizeof(float)) == 0);
  }
  tsr__run_succeeded(run);
  tsr__run_free(run);
  assert_no_children();
  free(ref), free(out);
}

TEST(progress_counts_every_block) {
  setup(200, 200);
  tsr_node_t *n = reprojection(200, 1, 50);
  tsr_run_opts_t pool = TSR_RUN_OPTS_INIT;
  int64_t seen[2] = {0, 0};
  pool.jobs = 2;
  pool.executor = TSR_EXECUTOR_PROCESSES;
  pool.progress = count_progress;
  pool.progress_ud = seen;
  free(compute(n, 200, &pool, 0));
  ASSERT_INT_EQ(seen[0], 16);
  ASSERT_INT_EQ(seen[1], 16);
}

TEST(a_worker_crashing_once_is_replaced_and_the_result_is_right) {
  setup(200, 200);
  tsr_node_t *n = reprojection(200, 1, 50);
  tsr_run_opts_t serial = TSR_RUN_OPTS_INIT, pool = TSR_RUN_OPTS_INIT;
  float *a = compute(n, 200, &serial, 0);
  tsr__test_hooks.crash_chunk = "1,2";
  pool.jobs = 2;
  pool.executor = TSR_EXECUTOR_PROCESSES;
  float *b = compute(n, 200, &pool, 0);
  tsr__test_hooks.crash_chunk = NULL;
  ASSERT(memcmp(a, b, sizeof(float) * 200 * 200) == 0);
  free(a);
  free(b);
  assert_no_children();
}

TEST(a_task_that_keeps_crashing_fails_the_run_clearly) {
  setup(200, 200);
  tsr_node_t *n = reprojection(200, 1, 50);
  tsr_run_opts_t pool = TSR_RUN_OPTS_INIT;
  tsr__test_hooks.crash_chunk = "1,2,always";
  pool.jobs = 2;
  pool.executor = TSR_EXECUTOR_PROCESSES;
  free(compute(n, 200, &pool, TSR_EWORKER));
  tsr__test_hooks.crash_chunk = NULL;
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "executor: chunk [50:100, 100:150] of node reproject_interp#");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "killed by signal 11");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "after 2 retries");
  assert_no_children();
}

TEST(a_hanging_task_times_out) {
  setup(200, 200);
  tsr_node_t *n = reprojection(200, 1, 50);
  tsr_run_opts_t pool = TSR_RUN_OPTS_INIT;
  tsr__test_hooks.crash_chunk = "0,0,hang";
  pool.jobs = 2;
  pool.executor = TSR_EXECUTOR_PROCESSES;
  pool.retries = 1;
  pool.task_timeout_s = 0.3;
  free(compute(n, 200, &pool, TSR_EWORKER));
  tsr__test_hooks.crash_chunk = NULL;
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "killed by signal 9");
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "after 1 retry");
  assert_no_children();
}

/* Cancellation raised by the progress callback once a few blocks are done,
 * with the workers busy: the run stops with most blocks never computed, and
 * no worker is left.  Cancelled before the start, nothing runs at all. */
typedef struct {
  volatile int cancel;
  int64_t at, last, total;
} cancel_state_t;

static void cancel_after(void *ud, int64_t done, int64_t total) {
  cancel_state_t *c = ud;
  c->last = done, c->total = total;
  if (done >= c->at)
    c->cancel = 1;
}

TEST(cancel_stops_the_workers) {
  setup(300, 300);
  tsr_node_t *n = reprojection(300, 3, 10); /* 900 blocks */
  for (int before = 0; before < 2; before++) {
    tsr_run_opts_t pool = TSR_RUN_OPTS_INIT;
    cancel_state_t c = {before, 3, 0, 0};
    pool.jobs = 2;
    pool.executor = TSR_EXECUTOR_PROCESSES;
    pool.cancel = &c.cancel;
    pool.progress = cancel_after;
    pool.progress_ud = &c;
    free(compute(n, 300, &pool, TSR_ECANCELED));
    ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "canceled");
    if (before)
      ASSERT_INT_EQ(c.last, 0);
    else
      ASSERT(c.last >= 3 && c.last < c.total / 4 && c.total == 900);
    assert_no_children();
  }
}

TEST(bad_run_options_are_reported) {
  setup(50, 50);
  tsr_node_t *n = reprojection(50, 1, 0);
  tsr_run_opts_t o = TSR_RUN_OPTS_INIT;
  o.jobs = -3;
  o.executor = TSR_EXECUTOR_PROCESSES;
  free(compute(n, 50, &o, TSR_EINVAL));
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "jobs = -3 out of range [0, 4096]");
  o.jobs = 2;
  o.executor = TSR_EXECUTOR_PROCESSES;
  o.retries = -1;
  free(compute(n, 50, &o, TSR_EINVAL));
  ASSERT_STR_CONTAINS(tsr_errmsg(ctx), "retries = -1 out of range [0, 100]");
}

/* Processes named `comm` whose command line mentions `needle`. */
static int count_processes(const char *comm, const char *needle) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  int found = 0;
  while (d && (e = readdir(d)) != NULL) {
    char path[512], buf[8192];
    FILE *f;
    size_t n;
    if (e->d_name[0] < '0' || e->d_name[0] > '9')
      continue;
    snprintf(path, sizeof path, "/proc/%s/comm", e->d_name);
    if ((f = fopen(path, "r")) == NULL)
      continue;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (strncmp(buf, comm, strlen(comm)) != 0)
      continue;
    snprintf(path, sizeof path, "/proc/%s/cmdline", e->d_name);
    if ((f = fopen(path, "r")) == NULL)
      continue;
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    for (size_t i = 0; i < n; i++)
      if (buf[i] == '\0')
        buf[i] = ' ';
    buf[n] = '\0';
    if (strstr(buf, needle))
      found++;
  }
  if (d)
    closedir(d);
  return found;
}

/* Interrupt the CLI mid-run: exit 130, no output, no temp file, no process. */
/* True if process `pid` has an unnamed temporary file of `dir` open. */
static bool writing_in(pid_t pid, const char *dir) {
  char fds[64], link[4200], target[4200];
  struct dirent *e;
  bool found = false;
  snprintf(fds, sizeof fds, "/proc/%ld/fd", (long)pid);
  DIR *d = opendir(fds);
  while (d != NULL && !found && (e = readdir(d)) != NULL) {
    snprintf(link, sizeof link, "%s/%s", fds, e->d_name);
    ssize_t k = readlink(link, target, sizeof target - 1);
    if (k <= 0)
      continue;
    target[k] = '\0';
    found = strncmp(target, dir, strlen(dir)) == 0 && strncmp(target + strlen(dir), "/#", 2) == 0;
  }
  if (d)
    closedir(d);
  return found;
}

TEST(sigint_to_the_cli_leaves_nothing_behind) {
  char tessera[4096], in[4096], tgt[4096], out[4096];
  snprintf(tessera, sizeof tessera, "%s/cli/tessera", th_builddir());
  if (access(tessera, X_OK) != 0)
    th_skip("no built tessera");
  setup(2048, 2048);
  {
    int64_t shape[2] = {2048, 2048};
    tsr_node_t *src = tsr_source_buffer_ref(g, TSR_F32, 2, shape, image, win);
    const char *p = th_path("big.fits");
    ASSERT_OK(tsr_write_fits(g, 1, &src, &p, NULL, NULL));
    snprintf(in, sizeof in, "%s", p);
  }
  {
    int nc;
    const char *cards = tsr_wcs_cards(wout, &nc);
    snprintf(tgt, sizeof tgt, "%s", th_path("target.hdr"));
    FILE *f = fopen(tgt, "w");
    ASSERT(f != NULL);
    for (int i = 0; i < nc; i++)
      fprintf(f, "%.80s\n", cards + 80 * i);
    fclose(f);
  }
  snprintf(out, sizeof out, "%s", th_path("interrupted.fits"));
  pid_t pid = fork();
  if (pid == 0) {
    /* Exact transforms at every pixel, bicubic, small blocks: seconds of
     * work to interrupt. */
    execl(tessera, "tessera", "reproject", in, "--target", tgt, "-o", out, "--mapping-tolerance",
          "0", "--order", "bicubic", "--block", "24x24", "-j", "2", "--quiet", (char *)NULL);
    _exit(127);
  }
  /* Interrupt once the output is being written: its unnamed temporary
   * (O_TMPFILE, "DIR/#inode (deleted)" in /proc) is open. */
  {
    for (int i = 0; i < 200 && !writing_in(pid, th_tmpdir()); i++) {
      struct timespec ts = {0, 10 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  kill(pid, SIGINT);
  int st = 0;
  ASSERT(waitpid(pid, &st, 0) == pid);
  ASSERT(WIFEXITED(st));
  ASSERT_INT_EQ(WEXITSTATUS(st), 130);
  ASSERT(access(out, F_OK) != 0);
  /* Workers die with their parent's pool: no tessera process may remain. */
  ASSERT_INT_EQ(count_processes("tessera", out), 0);
  {
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "ls -a '%s' | grep -c tsr- || true", th_tmpdir());
    FILE *ls = popen(cmd, "r");
    char line[64] = "0";
    if (ls && fgets(line, sizeof line, ls) == NULL)
      strcpy(line, "0");
    if (ls)
      pclose(ls);
    ASSERT_INT_EQ(atoi(line), 0);
  }
}

TEST_MAIN()
