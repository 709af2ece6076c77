/* exec_mpi_none.c -- the MPI executor's entry points in a build without MPI:
 * asking for it is an error that says how to get it. */
#include "run.h"

int tsr_has_mpi(void) { return 0; }

static int none(tsr_ctx_t *ctx) {
  return tsr__err(ctx, TSR_ENOTSUP,
                  "mpi: this tessera was built without MPI (install libopenmpi-dev and rebuild; "
                  "meson option -Dmpi=enabled)");
}

int tsr_mpi_init(tsr_ctx_t *ctx, int *argc, char ***argv, void **comm, int *rank, int *size) {
  (void)argc, (void)argv;
  *comm = NULL, *rank = 0, *size = 1;
  return none(ctx);
}

void tsr_mpi_finalize(void) {}

int tsr__mpi_rank(const tsr_run_opts_t *opts) {
  (void)opts;
  return 0;
}

int tsr__mpi_open(tsr_ctx_t *ctx, const tsr_run_opts_t *opts, const tsr_node_t *root,
                  const tsr_region_t *r, tsr__mpi_t **out) {
  (void)opts, (void)root, (void)r;
  *out = NULL;
  return none(ctx);
}

void tsr__mpi_attach(tsr__mpi_t *m, tsr__run_t *run) { (void)m, (void)run; }

int tsr__mpi_serve(tsr__mpi_t *m, tsr_graph_t *g, const tsr_run_opts_t *opts) {
  (void)m, (void)opts;
  return none(g->ctx);
}

int tsr__mpi_submit(tsr__mpi_t *m, tsr_node_t *n, const tsr_region_t *region, void *const *dst,
                    const int64_t *stride, int64_t *ticket) {
  (void)m, (void)region, (void)dst, (void)stride, (void)ticket;
  return none(n->graph->ctx);
}

int tsr__mpi_wait(tsr__mpi_t *m, int64_t ticket) {
  (void)m, (void)ticket;
  return TSR_ENOTSUP;
}

void tsr__mpi_close(tsr__mpi_t *m, int status) { (void)m, (void)status; }
