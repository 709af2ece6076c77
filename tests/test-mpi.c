/* test-mpi.c -- the MPI executor, run as `mpirun -n 3 test-mpi`: every
 * method and region bit-identical to a serial run, FITS files identical,
 * a mismatched request refused on every rank, a task failing on one rank
 * retried on another, and a task failing everywhere reported.  Rank 0
 * prints TAP; every rank takes part in every case. */
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
    printf("1..%d\n# %d ranks\n", 16, size);
  every_method_equals_serial();
  fits_files_equal_serial(dir);
  mismatched_requests_are_refused();
  failed_tasks_are_retried_elsewhere();
  if (rank == 0)
    printf("# %d passed, %d failed\n", n_tests - n_failed, n_failed);
  MPI_Comm_free(&comm);
  MPI_Finalize();
  return n_failed ? 1 : 0;
}
