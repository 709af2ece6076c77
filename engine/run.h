/* run.h -- the state of one run, shared by the planner (plan.c) and the
 * process pool (exec_pool.c).  Private to engine/. */
#ifndef TSR_ENGINE_RUN_H
#define TSR_ENGINE_RUN_H

#include "internal.h"

typedef struct tsr__pool_s tsr__pool_t;

typedef struct {
  tsr_node_t *node;
  void *state;
} node_state_t;

/* Chunk-sized buffers, one per plane, reused from chunk to chunk. */
typedef struct {
  void *p[TSR__MAX_PLANES];
  size_t bytes;                 /* capacity of each, in bytes */
} tsr__scratch_t;

struct tsr__run_s {
  tsr_graph_t *g;
  tsr_ctx_t *ctx;
  tsr_run_opts_t opts;
  node_state_t *states;         /* op->start results of this process */
  int n_states, cap_states;
  int64_t done, total;          /* top-level tasks, for progress */
  tsr__pool_t *pool;            /* worker processes, or NULL to run here */
  int lazy_jobs;                /* > 1: a pool of this many is forked at the first miss */
  bool ok;                      /* tsr__run_succeeded was called: report cache warnings */
  bool sparse;                  /* see tsr__task_t */
  void *blank[TSR__MAX_PLANES]; /* the caller's destinations when they hold the blank
                                   (dst_blank): tasks writing straight into them are told so */
  /* In a pool worker: called before each chunk is computed (the crash hook,
   * and the shared record of what it computes, for timeouts and blame). */
  void (*chunk_hook)(void *ud, const tsr_node_t *n, const tsr_region_t *box);
  void *chunk_hook_ud;
  tsr__mpi_t *mpi;              /* rank 0 of an MPI run (exec_mpi.c), or NULL */
  struct { void *p; size_t bytes; } unforked[TSR__MAX_PLANES]; /* see shield_from_fork */
  int n_unforked;
  int threads;                  /* > 1: the threads executor with this many threads */
  bool worker;                  /* a thread's run inside a threads run (exec_threads.c) */
  tsr__scratch_t scratch;       /* a threads worker's chunk scratch */
  void *bufs[TSR__MAX_PLANES + 1]; /* tsr__run_buffer's, freed with the run */
  size_t buf_bytes[TSR__MAX_PLANES + 1];
};

/* The threads executor (exec_threads.c): item(run, ud, i) for every i in
 * [0, n) on `jobs` threads, each with its own serial run of run's graph
 * and options (the `run` it is given).  With `progress`, each item counts
 * as one of the run's tasks; otherwise the threads' own runs report their
 * tasks.  Returns when every item is done, or the first error (its message
 * on run's ctx in the calling thread), or TSR_ECANCELED. */
typedef int (*tsr__thread_item_fn)(tsr__run_t *run, void *ud, int64_t i);
int tsr__threads_run(tsr__run_t *run, int jobs, tsr__thread_item_fn item, void *ud, int64_t n,
                     bool progress);

/* The node's per-run state in this process, started on first use. */
int tsr__node_state(tsr__run_t *run, tsr_node_t *n, void **state);
/* Compute `sub` of owner node n into dst laid over `dreg` with strides;
 * resolves the inputs' windows first.  The unit of work of every executor. */
int tsr__run_task(tsr__run_t *run, tsr_node_t *n, void *state, const tsr_region_t *sub,
                  const tsr_region_t *dreg, void *const *dst, const int64_t *stride);

/* Compute `sub` (inside one chunk of owner node n) into dst laid over
 * `dreg`: through the run's cache when it has one (the whole chunk is
 * looked up, or computed into scratch, stored and the part copied out),
 * else as tsr__run_task, computing whole chunks into scratch for ops that
 * are not TSR__OP_SUBBOX.  Starts the node's run state (tsr__node_state)
 * only if it computes.  The serial executor and the pool workers both call
 * it, so every executor uses the cache. */
int tsr__run_chunk(tsr__run_t *run, tsr_node_t *n, const tsr_region_t *sub,
                   const tsr_region_t *dreg, void *const *dst, const int64_t *stride,
                   tsr__scratch_t *scratch);
void tsr__scratch_release(tsr_ctx_t *ctx, tsr__scratch_t *s);
/* A fresh run for a worker process: no states, no pool. */
int tsr__run_new_local(tsr_graph_t *g, const tsr_run_opts_t *opts, tsr__run_t **out);

/* The pool (exec_pool.c).  Forks `jobs` workers for the run's graph; the
 * caller must not have started threads. */
int tsr__pool_start(tsr__run_t *run, int jobs, tsr__pool_t **out);
/* Queue every chunk of owner n meeting `region` for the workers, results
 * into dst (which must stay valid until the wait); returns at once with a
 * ticket.  Requests are served in order; at most 32 in flight.  `skip` may
 * be NULL, or hold one flag per chunk of the region's chunk grid in FITS
 * order (axis 0 fastest): flagged chunks are left out (the caller fills
 * them, e.g. from the cache). */
int tsr__pool_submit(tsr__pool_t *p, tsr_node_t *n, const tsr_region_t *region, void *const *dst,
                     const int64_t *stride, const uint8_t *skip, int64_t *ticket);
/* Queue n job items (tsr__run_submit_jobs). */
int tsr__pool_submit_jobs(tsr__pool_t *p, tsr__job_fn fn, const void *args, size_t len,
                          int64_t n, bool last, const char *what, int64_t *ticket);
/* Run the pool until the request `ticket` is complete (later ones go on). */
int tsr__pool_wait(tsr__pool_t *p, int64_t ticket);
/* Submit and wait. */
int tsr__pool_run(tsr__pool_t *p, tsr_node_t *n, const tsr_region_t *region, void *const *dst,
                  const int64_t *stride);
/* Stop and reap every worker; frees the pool. */
void tsr__pool_stop(tsr__pool_t *p);

#endif
