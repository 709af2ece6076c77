/* mpi_module.h -- between libtessera and the MPI executor module
 * (libtessera-mpi.so, exec_mpi.c), which it loads when a run first asks for
 * MPI (exec_mpi_load.c says why).  The module calls back into the engine
 * only through tsr__engine_api_t, never by linking libtessera: a program
 * that links the engine statically would otherwise hold two engines.  Both
 * sides are built from one tree, so the structures they share (nodes, runs)
 * have one layout; TSR__MPI_MODULE_ABI names this interface. */
#ifndef TSR_MPI_MODULE_H
#define TSR_MPI_MODULE_H

#include "run.h"

#define TSR__MPI_MODULE_ABI 1
#define TSR__MPI_MODULE_ENTRY "tsr_mpi_module_v1"

/* The engine functions exec_mpi.c calls. */
typedef struct {
  int (*err)(tsr_ctx_t *ctx, int code, const char *fmt, ...) TSR__PRINTF(3, 4);
  const char *(*errmsg)(const tsr_ctx_t *ctx);
  void *(*malloc)(tsr_ctx_t *ctx, size_t size);
  void *(*calloc)(tsr_ctx_t *ctx, size_t n, size_t size);
  void *(*mallocarray)(tsr_ctx_t *ctx, size_t n, size_t size);
  void (*free)(tsr_ctx_t *ctx, void *p);
  size_t (*dtype_size)(tsr_dtype_t dt);
  int64_t (*region_size)(const tsr_region_t *r);
  void (*region_format)(const tsr_region_t *r, int ndim, char *buf, size_t cap);
  void (*contiguous_strides)(const tsr_region_t *r, int64_t stride[TSR_MAX_DIMS]);
  void (*copy_box)(void *dst, const tsr_region_t *to, const int64_t *st, const void *src,
                   const tsr_region_t *from, const int64_t *sf, const tsr_region_t *sub,
                   size_t esize);
  int (*run_new_local)(tsr_graph_t *g, const tsr_run_opts_t *opts, tsr__run_t **out);
  void (*run_free)(tsr__run_t *run);
  int (*run_chunk)(tsr__run_t *run, tsr_node_t *n, const tsr_region_t *sub,
                   const tsr_region_t *dreg, void *const *dst, const int64_t *stride,
                   tsr__scratch_t *scratch);
  void (*scratch_release)(tsr_ctx_t *ctx, tsr__scratch_t *s);
} tsr__engine_api_t;

/* The executor's entry points (the tsr__mpi_* of internal.h, and the
 * public tsr_mpi_init / tsr_mpi_finalize). */
typedef struct {
  int abi;
  int (*init)(tsr_ctx_t *ctx, int *argc, char ***argv, void **comm, int *rank, int *size);
  void (*finalize)(void);
  int (*rank)(const tsr_run_opts_t *opts);
  int (*open)(tsr_ctx_t *ctx, const tsr_run_opts_t *opts, const tsr_node_t *root,
              const tsr_region_t *r, tsr__mpi_t **out);
  void (*attach)(tsr__mpi_t *m, tsr__run_t *run);
  int (*serve)(tsr__mpi_t *m, tsr_graph_t *g, const tsr_run_opts_t *opts);
  int (*submit)(tsr__mpi_t *m, tsr_node_t *n, const tsr_region_t *region, void *const *dst,
                const int64_t *stride, int64_t *ticket);
  int (*wait)(tsr__mpi_t *m, int64_t ticket);
  void (*close)(tsr__mpi_t *m, int status);
} tsr__mpi_module_t;

/* The module's one exported symbol: its entry points, given the engine's. */
typedef const tsr__mpi_module_t *(*tsr__mpi_module_fn)(const tsr__engine_api_t *engine);

#endif
