/* test-mpi.c -- the MPI executor, run as `mpirun -n 3 test-mpi`: every
 * method and region bit-identical to a serial run, FITS files identical,
 * a mismatched request refused on every rank, a task failing on one rank
 * retried on another, a task failing everywhere reported, and a HiPS
 * directory whose every file equals the serial one (a failure or cancel
 * on rank 0 midway ends the call on every rank, leaving nothing).  Rank 0
 * prints TAP; every rank takes part in every case. */
#define _XOPEN_SOURCE 700 /* nftw */
#include <ftw.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tessera/tessera.h>
#include <unistd.h>

static int rank, size, n_tests, n_failed;
static MPI_Comm comm;

static void result(int ok, const char *name, const char *detail) {
  int all_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_LAND, comm);
  n_tests++;
  n_failed += !all_ok;
  if (rank == 0) {
    printf("%s %d - %s\n", all_ok ? "ok" : "not ok", n_tests, name);
    if (!all_ok && detail && detail[0])
      printf("# %s\n", detail);
    fflush(stdout);
  }
}

static tsr_wcs_t *header(tsr_ctx_t *ctx, int n, const char *proj, double crval1, double cdelt,
                         double rot) {
  char h[1024];
  tsr_wcs_t *w;
  snprintf(h, sizeof h,
           "NAXIS = 2\nNAXIS1 = %d\nNAXIS2 = %d\nCTYPE1 = 'RA---%s'\nCTYPE2 = 'DEC--%s'\n"
           "CRVAL1 = %g\nCRVAL2 = 12.0\nCRPIX1 = %g\nCRPIX2 = %g\nCDELT1 = %g\nCDELT2 = %g\n"
           "PC1_1 = %.15g\nPC1_2 = %.15g\nPC2_1 = %.15g\nPC2_2 = %.15g\n",
           n, n, proj, proj, crval1, n / 2.0, n / 2.0 + 0.3, -cdelt, cdelt, cos(rot), -sin(rot),
           sin(rot), cos(rot));
  if (tsr_wcs_parse(ctx, h, strlen(h), "test", 1, &w) != 0) {
    fprintf(stderr, "header: %s\n", tsr_errmsg(ctx));
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  return w;
}

typedef struct {
  tsr_ctx_t *ctx;
  tsr_graph_t *g;
  tsr_wcs_t *win, *wout;
  float *img;
  tsr_node_t *nodes[6];
} scene_t;

static void scene_open(scene_t *s) {
  int64_t shape[2] = {160, 160};
  memset(s, 0, sizeof *s);
  tsr_ctx_new(&s->ctx, NULL);
  tsr_graph_new(s->ctx, &s->g);
  s->win = header(s->ctx, 160, "TAN", 40.0, 0.001, 0.0);
  s->wout = header(s->ctx, 150, "SIN", 40.01, 0.0011, 0.4);
  s->img = malloc(sizeof(float) * 160 * 160);
  for (int k = 0; k < 160 * 160; k++)
    s->img[k] = (float)(sin(k * 0.013) + cos((k / 160) * 0.07) + (k % 31 == 0 ? NAN : 0.0));
  tsr_node_t *src = tsr_source_buffer_ref(s->g, TSR_F32, 2, shape, s->img, s->win);
  for (int o = 0; o < 4; o++) {
    tsr_interp_opts_t io = TSR_INTERP_OPTS_INIT;
    io.order = o;
    io.block[0] = 32, io.block[1] = 24;
    s->nodes[o] = tsr_reproject_interp(s->g, src, s->wout, &io);
  }
  {
    tsr_adaptive_opts_t ao = TSR_ADAPTIVE_OPTS_INIT;
    ao.block[0] = ao.block[1] = 40;
    s->nodes[4] = tsr_reproject_adaptive(s->g, src, s->wout, &ao);
  }
  {
    tsr_exact_opts_t eo = TSR_EXACT_OPTS_INIT;
    eo.block[0] = eo.block[1] = 50;
    s->nodes[5] = tsr_reproject_exact(s->g, src, s->wout, &eo);
  }
  if (tsr_graph_status(s->g) != 0) {
    fprintf(stderr, "graph: %s\n", tsr_graph_errmsg(s->g));
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
}

static void scene_close(scene_t *s) {
  tsr_graph_free(s->g);
  tsr_wcs_free(s->win);
  tsr_wcs_free(s->wout);
  free(s->img);
  tsr_ctx_free(s->ctx);
}

static void every_method_equals_serial(void) {
  static const char *names[6] = {"nearest", "bilinear", "biquadratic", "bicubic", "adaptive", "exact"};
  scene_t s;
  scene_open(&s);
  for (int m = 0; m < 6; m++) {
    tsr_run_opts_t serial = TSR_RUN_OPTS_INIT, dist = TSR_RUN_OPTS_INIT;
    tsr_region_t full = tsr_region_of(s.nodes[m]), part = {{17, 29, 0, 0}, {111, 90, 1, 1}};
    for (int reg = 0; reg < 2; reg++) {
      tsr_region_t *r = reg ? &part : &full;
      size_t n = (size_t)tsr_region_size(r);
      float *a = calloc(n, sizeof *a), *b = calloc(n, sizeof *b);
      char name[128], detail[600] = "";
      int ok = 1;
      dist.mpi_comm = &comm;
      if (rank == 0 && tsr_compute(s.g, s.nodes[m], r, a, n * sizeof *a, &serial) != 0)
        ok = 0, snprintf(detail, sizeof detail, "serial: %s", tsr_errmsg(s.ctx));
      if (tsr_compute(s.g, s.nodes[m], r, b, n * sizeof *b, &dist) != 0)
        ok = 0, snprintf(detail, sizeof detail, "mpi: %s", tsr_errmsg(s.ctx));
      if (ok && rank == 0 && memcmp(a, b, n * sizeof *a) != 0)
        ok = 0, snprintf(detail, sizeof detail, "results differ");
      snprintf(name, sizeof name, "%s, %s: bit-identical to serial", names[m],
               reg ? "region 17:111 x 29:90" : "whole output");
      result(ok, name, detail);
      free(a);
      free(b);
    }
  }
  scene_close(&s);
}

static unsigned char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  unsigned char *buf;
  long n;
  if (f == NULL)
    return NULL;
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  fseek(f, 0, SEEK_SET);
  buf = malloc((size_t)n + 1);
  *len = fread(buf, 1, (size_t)n, f);
  fclose(f);
  return buf;
}

static void fits_files_equal_serial(const char *dir) {
  scene_t s;
  char ser[2][512], par[2][512], detail[600] = "";
  const char *sp[2] = {ser[0], ser[1]}, *pp[2] = {par[0], par[1]};
  int ok = 1;
  scene_open(&s);
  tsr_node_t *nodes[2] = {s.nodes[3], tsr_footprint(s.g, s.nodes[3])};
  snprintf(ser[0], sizeof ser[0], "%s/ser.fits", dir);
  snprintf(ser[1], sizeof ser[1], "%s/ser-fp.fits", dir);
  snprintf(par[0], sizeof par[0], "%s/mpi.fits", dir);
  snprintf(par[1], sizeof par[1], "%s/mpi-fp.fits", dir);
  tsr_run_opts_t serial = TSR_RUN_OPTS_INIT, dist = TSR_RUN_OPTS_INIT;
  dist.mpi_comm = &comm;
  if (rank == 0 && tsr_write_fits(s.g, 2, nodes, sp, NULL, &serial) != 0)
    ok = 0, snprintf(detail, sizeof detail, "serial: %s", tsr_errmsg(s.ctx));
  if (tsr_write_fits(s.g, 2, nodes, pp, NULL, &dist) != 0)
    ok = 0, snprintf(detail, sizeof detail, "mpi: %s", tsr_errmsg(s.ctx));
  if (ok && rank == 0)
    for (int f = 0; f < 2; f++) {
      size_t la = 0, lb = 0;
      unsigned char *a = slurp(ser[f], &la), *b = slurp(par[f], &lb);
      if (!a || !b || la != lb || memcmp(a, b, la) != 0)
        ok = 0, snprintf(detail, sizeof detail, "%s differs from %s", par[f], ser[f]);
      free(a);
      free(b);
    }
  result(ok, "write_fits (data and footprint): files identical to serial", detail);
  scene_close(&s);
}

static void mismatched_requests_are_refused(void) {
  scene_t s;
  char detail[600] = "";
  int ok;
  scene_open(&s);
  tsr_region_t r = {{0, 0, 0, 0}, {50, 50, 1, 1}};
  if (rank == 2)
    r.stop[0] = 51; /* rank 2 asks for something else */
  float *buf = calloc(51 * 50, sizeof *buf);
  tsr_run_opts_t dist = TSR_RUN_OPTS_INIT;
  dist.mpi_comm = &comm;
  int rc = tsr_compute(s.g, s.nodes[1], &r, buf, 51 * 50 * sizeof *buf, &dist);
  ok = rc == TSR_EINVAL && strstr(tsr_errmsg(s.ctx), "rank 2 asks for something else than rank 0");
  if (!ok)
    snprintf(detail, sizeof detail, "rank %d: rc %d, %s", rank, rc, tsr_errmsg(s.ctx));
  result(ok, "a rank asking for another region: refused on every rank, naming the rank", detail);
  free(buf);
  scene_close(&s);
}

/* Fails on rank 1 (or everywhere with *user == -1); else the pixel index. */
static int flaky(void *user, const tsr_block_t *b) {
  int who = *(int *)user;
  int64_t w = b->out.stop[0] - b->out.start[0];
  if (who == -1 || who == 1)
    return -1;
  for (int64_t y = b->out.start[1]; y < b->out.stop[1]; y++)
    for (int64_t x = b->out.start[0]; x < b->out.stop[0]; x++)
      ((double *)b->data)[(y - b->out.start[1]) * w + (x - b->out.start[0])] = (double)(y * 1000 + x);
  return 0;
}

static void failed_tasks_are_retried_elsewhere(void) {
  for (int everywhere = 0; everywhere < 2; everywhere++) {
    tsr_ctx_t *ctx;
    tsr_graph_t *g;
    int who = everywhere ? -1 : rank;
    double out[40 * 30];
    char detail[600] = "";
    int ok = 1;
    tsr_ctx_new(&ctx, NULL);
    tsr_graph_new(ctx, &g);
    tsr_map_blocks_opts_t o = TSR_MAP_BLOCKS_OPTS_INIT;
    o.name = "flaky";
    o.dtype = TSR_F64;
    o.ndim = 2;
    o.shape[0] = 40, o.shape[1] = 30;
    o.chunk[0] = 10, o.chunk[1] = 10;
    tsr_node_t *n = tsr_map_blocks(g, 0, NULL, flaky, &who, &o);
    tsr_run_opts_t dist = TSR_RUN_OPTS_INIT;
    dist.mpi_comm = &comm;
    int rc = tsr_compute(g, n, NULL, out, sizeof out, &dist);
    if (!everywhere) {
      ok = rc == 0;
      for (int k = 0; ok && rank == 0 && k < 1200; k++)
        ok = out[k] == (double)((k / 40) * 1000 + k % 40);
      if (!ok)
        snprintf(detail, sizeof detail, "rank %d: rc %d: %s", rank, rc, tsr_errmsg(ctx));
      result(ok, "tasks failing on rank 1 are retried on rank 2: right result", detail);
    } else {
      ok = rc != 0 && (rank != 0 || (strstr(tsr_errmsg(ctx), "failed 3 times") &&
                                     strstr(tsr_errmsg(ctx), "the callback failed")));
      if (!ok)
        snprintf(detail, sizeof detail, "rank %d: rc %d: %s", rank, rc, tsr_errmsg(ctx));
      result(ok, "a task failing on every rank ends the run on every rank, with the reason",
             detail);
    }
    tsr_graph_free(g);
    tsr_ctx_free(ctx);
  }
}

/* HiPS: the files under one directory compared with another's (rank 0). */
static const char *hips_other;  /* the directory compared with */
static size_t hips_root_len;
static int hips_files, hips_diff;
static char hips_detail[600];

/* properties without the two lines that differ from run to run. */
static void strip_run_lines(unsigned char *p, size_t *len) {
  size_t o = 0;
  for (size_t i = 0; i < *len;) {
    size_t e = i;
    while (e < *len && p[e] != '\n')
      e++;
    e += e < *len;
    if (strncmp((char *)p + i, "creator_did", 11) != 0 &&
        strncmp((char *)p + i, "hips_release_date", 17) != 0) {
      memmove(p + o, p + i, e - i);
      o += e - i;
    }
    i = e;
  }
  *len = o;
}

static int compare_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  char other[1024];
  size_t la = 0, lb = 0;
  unsigned char *a, *b;
  (void)st, (void)ftw;
  if (flag != FTW_F)
    return 0;
  snprintf(other, sizeof other, "%s%s", hips_other, path + hips_root_len);
  a = slurp(path, &la), b = slurp(other, &lb);
  if (a && b && strcmp(path + strlen(path) - 10, "properties") == 0)
    strip_run_lines(a, &la), strip_run_lines(b, &lb);
  hips_files++;
  if (!a || !b || la != lb || memcmp(a, b, la) != 0) {
    if (!hips_diff++)
      snprintf(hips_detail, sizeof hips_detail, "%s differs from %s (or is missing)", path, other);
  }
  free(a);
  free(b);
  return 0;
}

/* Every file of `a` equals its namesake in `b`, and the other way round
 * (so neither has a file more); the number of files compared. */
static int same_tree(const char *a, const char *b, int *n_files) {
  int diff = 0;
  for (int pass = 0; pass < 2; pass++) {
    hips_root_len = strlen(pass ? b : a);
    hips_other = pass ? a : b;
    hips_files = hips_diff = 0;
    nftw(pass ? b : a, compare_entry, 16, FTW_PHYS);
    diff += hips_diff;
    if (pass == 0)
      *n_files = hips_files;
  }
  return diff == 0;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)ftw;
  return flag == FTW_DP ? rmdir(path) : unlink(path);
}

/* scene_open's 160 x 160 input (3.6" pixels) as a HiPS of 32-pixel tiles
 * at its own resolution: some 40 tiles of order 11. */
#define HIPS_LEVEL 11

typedef struct {
  int what;                     /* 0 nothing, 1 cancel, 2 block a lower order's directory */
  int cancel;
  const char *dir;
} hips_fault_t;

/* The fault, on rank 0, once the first row of deepest tiles is written. */
static void hips_progress(void *ud, int64_t done, int64_t total) {
  hips_fault_t *f = ud;
  char path[600];
  (void)done, (void)total;
  if (f->what == 1)
    f->cancel = 1;
  if (f->what == 2) {
    /* A file where Norder{k-1} must be a directory: the lower order's
     * first tile cannot be written (after every deepest tile was). */
    FILE *o;
    snprintf(path, sizeof path, "%s/Norder%d", f->dir, HIPS_LEVEL - 1);
    if ((o = fopen(path, "w")) != NULL)
      fclose(o);
  }
}

static int hips_run(scene_t *s, const char *dir, int mpi, hips_fault_t *fault) {
  tsr_hips_opts_t o = TSR_HIPS_OPTS_INIT;
  tsr_run_opts_t ro = TSR_RUN_OPTS_INIT;
  int64_t shape[2] = {160, 160};
  tsr_node_t *src = tsr_source_buffer_ref(s->g, TSR_F32, 2, shape, s->img, s->win);
  o.tile_width = 32;
  o.level = HIPS_LEVEL;
  o.title = "test-mpi";
  o.run = &ro;
  if (mpi)
    ro.mpi_comm = &comm;
  if (fault) {
    ro.progress = hips_progress;
    ro.progress_ud = fault;
    ro.cancel = &fault->cancel;
  }
  return tsr_write_hips(s->g, 1, &src, dir, &o, NULL);
}

static void hips_equals_serial(const char *tmp) {
  scene_t s;
  char ser[600], par[600], detail[800] = "";
  int ok = 1, rc, n_files = 0;
  scene_open(&s);
  snprintf(ser, sizeof ser, "%s/hips-ser", tmp);
  snprintf(par, sizeof par, "%s/hips-mpi", tmp);
  if (rank == 0) {
    nftw(ser, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    nftw(par, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if ((rc = hips_run(&s, ser, 0, NULL)) != 0)
      ok = 0, snprintf(detail, sizeof detail, "serial: %s", tsr_errmsg(s.ctx));
  }
  MPI_Barrier(comm);
  if ((rc = hips_run(&s, par, 1, NULL)) != 0)
    ok = 0, snprintf(detail, sizeof detail, "rank %d: mpi: %s", rank, tsr_errmsg(s.ctx));
  if (ok && rank == 0) {
    ok = same_tree(ser, par, &n_files) && n_files >= 20;
    snprintf(detail, sizeof detail, "%d files: %s", n_files, hips_detail);
  }
  result(ok, "write_hips: every file (tiles, Allsky, MOC, properties) identical to serial",
         detail);
  if (rank == 0 && ok) {
    nftw(ser, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    nftw(par, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
  }
  scene_close(&s);
}

static void hips_failure_leaves_nothing(const char *tmp) {
  for (int what = 1; what <= 2; what++) {
    scene_t s;
    char dir[600], detail[800] = "";
    hips_fault_t f = {rank == 0 ? what : 0, 0, dir};
    struct stat st;
    int ok, rc;
    scene_open(&s);
    snprintf(dir, sizeof dir, "%s/hips-fail", tmp);
    if (rank == 0)
      nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    MPI_Barrier(comm);
    rc = hips_run(&s, dir, 1, &f);
    ok = rc == (what == 1 ? TSR_ECANCELED : TSR_EIO);
    if (rank == 0)
      ok = ok && stat(dir, &st) != 0 &&
           (what == 1 || strstr(tsr_errmsg(s.ctx), "cannot create directory") != NULL);
    if (!ok)
      snprintf(detail, sizeof detail, "rank %d: rc %d (%s): %s", rank, rc, tsr_err_name(rc),
               tsr_errmsg(s.ctx));
    result(ok, what == 1 ? "write_hips cancelled on rank 0 midway: every rank returns "
                           "TSR_ECANCELED, nothing is left"
                         : "write_hips failing on rank 0 after the deepest tiles: every rank "
                           "returns its TSR_EIO, the directory is removed",
           detail);
    scene_close(&s);
  }
}

int main(int argc, char **argv) {
  char dir[512];
  MPI_Init(&argc, &argv);
  MPI_Comm_dup(MPI_COMM_WORLD, &comm);
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  if (!tsr_has_mpi()) {
    if (rank == 0)
      printf("1..0 # SKIP tessera built without MPI\n");
    MPI_Finalize();
    return 0;
  }
  snprintf(dir, sizeof dir, "%s", getenv("TSR_TEST_TMP") ? getenv("TSR_TEST_TMP") : "/tmp");
  if (rank == 0)
    printf("1..%d\n# %d ranks\n", 19, size);
  every_method_equals_serial();
  fits_files_equal_serial(dir);
  mismatched_requests_are_refused();
  failed_tasks_are_retried_elsewhere();
  hips_equals_serial(dir);
  hips_failure_leaves_nothing(dir);
  if (rank == 0)
    printf("# %d passed, %d failed\n", n_tests - n_failed, n_failed);
  MPI_Comm_free(&comm);
  MPI_Finalize();
  return n_failed ? 1 : 0;
}
