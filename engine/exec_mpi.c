/* exec_mpi.c -- the distributed executor: block-tasks over MPI ranks.
 *
 * DESIGN: SPMD.  Every rank builds the same graph and makes the same call
 * (tsr_compute or tsr_write_fits) with tsr_run_opts_t.mpi_comm set.  The
 * call first checks, collectively, that every rank's request has the same
 * key (graph, node, region); then rank 0 plans and writes, and the other
 * ranks serve: they receive block-tasks, compute each with the same
 * tsr__run_chunk as the serial and pool executors (so results are
 * bit-identical, and a shared chunk cache is filled and consulted by the
 * ranks themselves), and send the block back.  Rank 0 hands tasks out on
 * demand, two in flight per rank, so fast ranks take more; a task that
 * fails on one rank is retried on another (up to `retries` times); at the
 * end rank 0 sends every rank the run's status, which every rank returns.
 * MPI offers no standard recovery from a dead rank: Open MPI ends the whole
 * job, and with a cache a rerun resumes from the stored blocks.
 *
 * Rank 0 does not compute blocks itself (with one rank, the run is serial).
 * Messages: a fixed-size header per task and per reply; block data follows
 * a reply, one message per plane.
 *
 * This file is built alone into the module libtessera-mpi.so, linked with
 * Open MPI and loaded by libtessera when a run first asks for MPI
 * (exec_mpi_load.c), so that programs that never use MPI do not load it.
 * The engine's functions reach it as a table (mpi_module.h): each name
 * below is defined to its entry, so the code reads as the engine's own.
 */
#include <inttypes.h>
#include <mpi.h>
#include <stdio.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#include "mpi_module.h"

static tsr__engine_api_t eng;
#define tsr__err eng.err
#define tsr_errmsg eng.errmsg
#define tsr__malloc eng.malloc
#define tsr__calloc eng.calloc
#define tsr__mallocarray eng.mallocarray
#define tsr__free eng.free
#define tsr_dtype_size eng.dtype_size
#define tsr_region_size eng.region_size
#define tsr__region_format eng.region_format
#define tsr__contiguous_strides eng.contiguous_strides
#define tsr__copy_box eng.copy_box
#define tsr__run_new_local eng.run_new_local
#define tsr__run_free eng.run_free
#define tsr__run_chunk eng.run_chunk
#define tsr__scratch_release eng.scratch_release

enum { TAG_TASK = 7101, TAG_REPLY = 7102, TAG_DATA = 7103 };
enum { T_TASK = 1, T_DONE = 2 };
#define DEPTH 2
#define MAX_BATCHES 32

typedef struct {
  int32_t type, node_id, planes, sparse;
  int32_t status;          /* T_DONE: the run's status */
  int32_t pad;
  int64_t task;            /* batch slot * 2^32 + task index */
  int64_t start[TSR_MAX_DIMS], stop[TSR_MAX_DIMS];
} task_msg_t;

typedef struct {
  int32_t status, planes;  /* planes: bit p set when plane p's data follow */
  int64_t task;
  int64_t bytes;           /* per plane */
  char msg[480];
} reply_msg_t;

typedef struct {
  int64_t start[TSR_MAX_DIMS], stop[TSR_MAX_DIMS];
  int attempts, state;     /* 0 waiting, 1 sent, 2 done */
  int last_rank;           /* where it failed last */
} mtask_t;

typedef struct {
  bool used;
  int64_t id;
  tsr_node_t *node;
  tsr_region_t region;
  void *dst[TSR__MAX_PLANES];
  int64_t stride[TSR_MAX_DIMS];
  mtask_t *tasks;
  int64_t n_tasks, next, n_done;
} mbatch_t;

struct tsr__mpi_s {
  tsr_ctx_t *ctx;
  MPI_Comm comm;
  int rank, size;
  tsr__run_t *run;         /* rank 0: the run it serves */
  mbatch_t batches[MAX_BATCHES];
  int64_t next_id;
  int *inflight;           /* per rank: tasks sent, not answered */
  void *buf;               /* one block of planes, for replies */
  size_t buf_bytes;
  int rc;
};

static int mpi_fail(tsr_ctx_t *ctx, int err, const char *what) {
  char s[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(err, s, &len);
  return tsr__err(ctx, TSR_EWORKER, "mpi: %s: %.*s", what, len, s);
}

/* Wait until a message with `tag` from `src` is there, sleeping between
 * probes: a blocking MPI_Recv spins, and rank 0 spinning takes a CPU from
 * the ranks that compute when there are as many ranks as CPUs (or more). */
static void await(tsr__mpi_t *m, int src, int tag) {
  struct timespec t0, now;
  int flag = 0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    if (MPI_Iprobe(src, tag, m->comm, &flag, MPI_STATUS_IGNORE) != MPI_SUCCESS || flag)
      return;
    clock_gettime(CLOCK_MONOTONIC, &now);
    /* Yield for the first 200 us (a reply is usually that close), then
     * sleep: a nanosleep costs the kernel's 50 us timer slack at least. */
    if ((now.tv_sec - t0.tv_sec) * 1000000000L + (now.tv_nsec - t0.tv_nsec) < 200000) {
      sched_yield();
    } else {
      struct timespec ts = {0, 20000};
      nanosleep(&ts, NULL);
    }
  }
}

int tsr__mpi_rank(const tsr_run_opts_t *opts) {
  int rank = 0;
  if (opts && opts->mpi_comm)
    MPI_Comm_rank(*(MPI_Comm *)opts->mpi_comm, &rank);
  return rank;
}

int tsr__mpi_open(tsr_ctx_t *ctx, const tsr_run_opts_t *opts, const tsr_node_t *root,
                  const tsr_region_t *r, tsr__mpi_t **out) {
  tsr__mpi_t *m;
  int flag = 0, err;
  unsigned char mine[16 + sizeof *r], *all = NULL;
  int32_t status = 0, bad_rank = -1;

  *out = NULL;
  MPI_Initialized(&flag);
  if (!flag)
    return tsr__err(ctx, TSR_EINVAL, "mpi: MPI is not initialised (call MPI_Init first)");
  m = tsr__calloc(ctx, 1, sizeof *m);
  if (m == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "mpi: out of memory");
  m->ctx = ctx;
  if ((err = MPI_Comm_dup(*(MPI_Comm *)opts->mpi_comm, &m->comm)) != MPI_SUCCESS) {
    tsr__free(ctx, m);
    return mpi_fail(ctx, err, "cannot duplicate the communicator");
  }
  MPI_Comm_set_errhandler(m->comm, MPI_ERRORS_RETURN);
  MPI_Comm_rank(m->comm, &m->rank);
  MPI_Comm_size(m->comm, &m->size);
  /* Every rank's request must be the same: compare the keys on rank 0. */
  memcpy(mine, root->key, 16);
  memcpy(mine + 16, r, sizeof *r);
  if (m->rank == 0 && (all = tsr__mallocarray(ctx, (size_t)m->size, sizeof mine)) == NULL)
    status = TSR_ENOMEM;
  MPI_Gather(mine, (int)sizeof mine, MPI_BYTE, all, (int)sizeof mine, MPI_BYTE, 0, m->comm);
  if (m->rank == 0 && all)
    for (int k = 1; k < m->size && bad_rank < 0; k++)
      if (memcmp(all + k * sizeof mine, mine, sizeof mine) != 0)
        bad_rank = k, status = TSR_EINVAL;
  tsr__free(ctx, all);
  {
    int32_t v[2] = {status, bad_rank};
    MPI_Bcast(v, 2, MPI_INT32_T, 0, m->comm);
    status = v[0], bad_rank = v[1];
  }
  if (status != 0) {
    MPI_Comm_free(&m->comm);
    tsr__free(ctx, m);
    if (bad_rank >= 0)
      return tsr__err(ctx, TSR_EINVAL,
                      "mpi: rank %d asks for something else than rank 0 (its graph, node or region "
                      "has another key): every rank must build the same graph and make the same call",
                      (int)bad_rank);
    return tsr__err(ctx, status, "mpi: rank 0 ran out of memory checking the ranks' requests");
  }
  m->inflight = tsr__calloc(ctx, (size_t)m->size, sizeof *m->inflight);
  if (m->inflight == NULL) {
    MPI_Comm_free(&m->comm);
    tsr__free(ctx, m);
    return tsr__err(ctx, TSR_ENOMEM, "mpi: out of memory");
  }
  *out = m;
  return 0;
}

void tsr__mpi_attach(tsr__mpi_t *m, tsr__run_t *run) {
  m->run = run;
  run->mpi = m;
}

static MPI_Comm world;
static int we_initialised;

static int module_init(tsr_ctx_t *ctx, int *argc, char ***argv, void **comm, int *rank, int *size) {
  int flag = 0, err;
  MPI_Initialized(&flag);
  if (!flag) {
    if ((err = MPI_Init(argc, argv)) != MPI_SUCCESS)
      return mpi_fail(ctx, err, "MPI_Init failed");
    we_initialised = 1;
  }
  world = MPI_COMM_WORLD;
  *comm = &world;
  MPI_Comm_rank(world, rank);
  MPI_Comm_size(world, size);
  return 0;
}

static void module_finalize(void) {
  int flag = 0;
  MPI_Finalized(&flag);
  if (we_initialised && !flag)
    MPI_Finalize();
  we_initialised = 0;
}

/* Room for one block of every plane of node n. */
static int grow_buf(tsr__mpi_t *m, size_t bytes) {
  if (bytes <= m->buf_bytes)
    return 0;
  tsr__free(m->ctx, m->buf);
  m->buf = tsr__malloc(m->ctx, bytes);
  m->buf_bytes = m->buf ? bytes : 0;
  return m->buf ? 0 : tsr__err(m->ctx, TSR_ENOMEM, "mpi: out of memory for a block of %zu bytes", bytes);
}

int tsr__mpi_serve(tsr__mpi_t *m, tsr_graph_t *g, const tsr_run_opts_t *opts) {
  tsr__run_t *run = NULL;
  tsr__scratch_t scratch = {{0}, 0};
  tsr_run_opts_t local = *opts;
  int rc;

  local.jobs = 1;
  local.progress = NULL;
  local.mpi_comm = NULL;
  if ((rc = tsr__run_new_local(g, &local, &run)) != 0)
    return rc;
  for (;;) {
    task_msg_t t;
    reply_msg_t r;
    tsr_node_t *n;
    tsr_region_t box;
    void *dst[TSR__MAX_PLANES] = {0};
    int64_t stride[TSR_MAX_DIMS];
    size_t count, es;
    int err;

    await(m, 0, TAG_TASK);
    if ((err = MPI_Recv(&t, (int)sizeof t, MPI_BYTE, 0, TAG_TASK, m->comm, MPI_STATUS_IGNORE)) !=
        MPI_SUCCESS) {
      rc = mpi_fail(m->ctx, err, "rank 0 is gone");
      break;
    }
    if (t.type == T_DONE) {
      rc = t.status;
      if (rc != 0)
        tsr__err(m->ctx, rc, "mpi: the run failed on rank 0 (status %d)", rc);
      break;
    }
    for (n = g->first; n && n->id != t.node_id; n = n->next)
      ;
    memset(&r, 0, sizeof r);
    r.task = t.task;
    if (n == NULL) {
      r.status = TSR_EINVAL;
      snprintf(r.msg, sizeof r.msg, "mpi: rank %d has no node %d", m->rank, (int)t.node_id);
      MPI_Send(&r, (int)sizeof r, MPI_BYTE, 0, TAG_REPLY, m->comm);
      continue;
    }
    memcpy(box.start, t.start, sizeof box.start);
    memcpy(box.stop, t.stop, sizeof box.stop);
    count = (size_t)tsr_region_size(&box);
    es = tsr_dtype_size(n->dtype);
    if ((rc = grow_buf(m, count * es * TSR__MAX_PLANES)) != 0)
      break;
    for (int pl = 0; pl < n->n_planes; pl++)
      if (t.planes & (1 << pl))
        dst[pl] = (char *)m->buf + (size_t)pl * count * es;
    tsr__contiguous_strides(&box, stride);
    run->sparse = t.sparse != 0;
    rc = tsr__run_chunk(run, n, &box, &box, dst, stride, &scratch);
    r.status = rc;
    r.planes = rc == 0 ? t.planes : 0;
    r.bytes = (int64_t)(count * es);
    if (rc != 0)
      snprintf(r.msg, sizeof r.msg, "%s (on rank %d)", tsr_errmsg(m->ctx), m->rank);
    MPI_Send(&r, (int)sizeof r, MPI_BYTE, 0, TAG_REPLY, m->comm);
    if (rc == 0)
      for (int pl = 0; pl < n->n_planes; pl++)
        if (dst[pl])
          MPI_Send(dst[pl], (int)(count * es), MPI_BYTE, 0, TAG_DATA, m->comm);
    rc = 0;
  }
  tsr__scratch_release(m->ctx, &scratch);
  tsr__run_free(run);
  return rc;
}

int tsr__mpi_submit(tsr__mpi_t *m, tsr_node_t *n, const tsr_region_t *region, void *const *dst,
                    const int64_t *stride, int64_t *ticket) {
  int64_t lo[TSR_MAX_DIMS], hi[TSR_MAX_DIMS], c[TSR_MAX_DIMS], count = 1;
  mbatch_t *b = NULL;
  for (int i = 0; i < MAX_BATCHES && b == NULL; i++)
    if (!m->batches[i].used)
      b = &m->batches[i];
  if (b == NULL)
    return tsr__err(m->ctx, TSR_EBUSY, "mpi: more than %d requests in flight", MAX_BATCHES);
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    lo[a] = region->start[a] / n->chunk[a];
    hi[a] = (region->stop[a] + n->chunk[a] - 1) / n->chunk[a];
    count *= hi[a] - lo[a];
  }
  memset(b, 0, sizeof *b);
  b->tasks = tsr__calloc(m->ctx, (size_t)count, sizeof *b->tasks);
  if (b->tasks == NULL)
    return tsr__err(m->ctx, TSR_ENOMEM, "mpi: out of memory for %" PRId64 " tasks", count);
  b->used = true;
  b->id = ++m->next_id;
  b->node = n;
  b->region = *region;
  memcpy(b->dst, dst, sizeof b->dst);
  memcpy(b->stride, stride, sizeof b->stride);
  memcpy(c, lo, sizeof c);
  for (int64_t k = 0; k < count; k++) {
    mtask_t *t = &b->tasks[b->n_tasks++];
    t->last_rank = -1;
    for (int a = 0; a < TSR_MAX_DIMS; a++) {
      int64_t s = c[a] * n->chunk[a], e = s + n->chunk[a];
      t->start[a] = s > region->start[a] ? s : region->start[a];
      t->stop[a] = e < region->stop[a] ? e : region->stop[a];
    }
    tsr__chunk_next(c, lo, hi);
  }
  *ticket = b->id;
  return 0;
}

/* The next waiting task, oldest batch first, preferably not last failed on `rank`. */
static bool next_task(tsr__mpi_t *m, int rank, int *bi, int64_t *ti) {
  int64_t best = INT64_MAX;
  *bi = -1;
  for (int i = 0; i < MAX_BATCHES; i++) {
    mbatch_t *b = &m->batches[i];
    if (!b->used || b->id >= best)
      continue;
    for (int64_t k = 0; k < b->n_tasks; k++)
      if (b->tasks[k].state == 0 && (b->tasks[k].last_rank != rank || m->size <= 2)) {
        *bi = i, *ti = k, best = b->id;
        break;
      }
  }
  return *bi >= 0;
}

static int send_task(tsr__mpi_t *m, int rank, int bi, int64_t ti) {
  mbatch_t *b = &m->batches[bi];
  mtask_t *t = &b->tasks[ti];
  task_msg_t msg;
  int err;
  memset(&msg, 0, sizeof msg);
  msg.type = T_TASK;
  msg.node_id = b->node->id;
  msg.sparse = m->run && m->run->sparse;
  msg.task = ((int64_t)bi << 32) | ti;
  for (int pl = 0; pl < b->node->n_planes; pl++)
    if (b->dst[pl])
      msg.planes |= 1 << pl;
  memcpy(msg.start, t->start, sizeof msg.start);
  memcpy(msg.stop, t->stop, sizeof msg.stop);
  if ((err = MPI_Send(&msg, (int)sizeof msg, MPI_BYTE, rank, TAG_TASK, m->comm)) != MPI_SUCCESS)
    return mpi_fail(m->ctx, err, "cannot send a task");
  t->state = 1;
  m->inflight[rank]++;
  return 0;
}

static int dispatch(tsr__mpi_t *m) {
  for (int rank = 1; rank < m->size; rank++)
    while (m->inflight[rank] < DEPTH) {
      int bi;
      int64_t ti;
      int rc;
      if (!next_task(m, rank, &bi, &ti))
        break; /* none for this rank; maybe for the next */
      if ((rc = send_task(m, rank, bi, ti)) != 0)
        return rc;
    }
  return 0;
}

/* Take one reply (and its data) from any rank. */
static int take_reply(tsr__mpi_t *m) {
  reply_msg_t r;
  MPI_Status st;
  mbatch_t *b;
  mtask_t *t;
  int err, src, retries = m->run ? m->run->opts.retries : 2;
  int64_t ti;
  await(m, MPI_ANY_SOURCE, TAG_REPLY);
  if ((err = MPI_Recv(&r, (int)sizeof r, MPI_BYTE, MPI_ANY_SOURCE, TAG_REPLY, m->comm, &st)) !=
      MPI_SUCCESS)
    return mpi_fail(m->ctx, err, "a rank is gone (Open MPI ends the job; rerun with a cache to "
                                 "resume)");
  src = st.MPI_SOURCE;
  m->inflight[src]--;
  b = &m->batches[r.task >> 32];
  ti = r.task & 0xffffffff;
  t = &b->tasks[ti];
  if (r.status != 0) {
    char where[128];
    tsr_region_t box;
    memcpy(box.start, t->start, sizeof box.start);
    memcpy(box.stop, t->stop, sizeof box.stop);
    t->state = 0;
    t->last_rank = src;
    if (++t->attempts > retries) {
      tsr__region_format(&box, b->node->ndim, where, sizeof where);
      return tsr__err(m->ctx, r.status < 0 ? r.status : TSR_EWORKER,
                      "%s chunk %s failed %d times; last: %.*s", b->node->name, where, t->attempts,
                      (int)sizeof r.msg, r.msg);
    }
    return 0;
  }
  {
    tsr_node_t *n = b->node;
    tsr_region_t box;
    int64_t st2[TSR_MAX_DIMS];
    size_t count, es = tsr_dtype_size(n->dtype);
    int rc;
    memcpy(box.start, t->start, sizeof box.start);
    memcpy(box.stop, t->stop, sizeof box.stop);
    count = (size_t)tsr_region_size(&box);
    if ((rc = grow_buf(m, count * es)) != 0)
      return rc;
    tsr__contiguous_strides(&box, st2);
    for (int pl = 0; pl < n->n_planes; pl++) {
      if (!(r.planes & (1 << pl)))
        continue;
      if ((err = MPI_Recv(m->buf, (int)(count * es), MPI_BYTE, src, TAG_DATA, m->comm,
                          MPI_STATUS_IGNORE)) != MPI_SUCCESS)
        return mpi_fail(m->ctx, err, "cannot receive a block");
      tsr__copy_box(b->dst[pl], &b->region, b->stride, m->buf, &box, st2, &box, es);
    }
  }
  t->state = 2;
  b->n_done++;
  if (m->run && m->run->opts.progress)
    m->run->opts.progress(m->run->opts.progress_ud, ++m->run->done, m->run->total);
  return 0;
}

/* Take one reply from any rank and drop it (and its data): the run is
 * ending, and the batch it belongs to may be gone. */
static void drain_reply(tsr__mpi_t *m) {
  reply_msg_t r;
  MPI_Status st;
  if (MPI_Recv(&r, (int)sizeof r, MPI_BYTE, MPI_ANY_SOURCE, TAG_REPLY, m->comm, &st) != MPI_SUCCESS) {
    for (int rank = 1; rank < m->size; rank++)
      m->inflight[rank] = 0; /* a rank is gone: nothing more will come */
    return;
  }
  m->inflight[st.MPI_SOURCE]--;
  for (int pl = 0; pl < TSR__MAX_PLANES; pl++)
    if ((r.planes & (1 << pl)) && grow_buf(m, (size_t)r.bytes) == 0)
      MPI_Recv(m->buf, (int)r.bytes, MPI_BYTE, st.MPI_SOURCE, TAG_DATA, m->comm, MPI_STATUS_IGNORE);
}

static void drain(tsr__mpi_t *m) {
  for (int rank = 1; rank < m->size; rank++)
    while (m->inflight[rank] > 0)
      drain_reply(m);
}

int tsr__mpi_wait(tsr__mpi_t *m, int64_t ticket) {
  mbatch_t *b = NULL;
  int rc = 0;
  for (int i = 0; i < MAX_BATCHES; i++)
    if (m->batches[i].used && m->batches[i].id == ticket)
      b = &m->batches[i];
  if (b == NULL)
    return tsr__err(m->ctx, TSR_EINVAL, "mpi: no request %" PRId64 " in flight", ticket);
  if (m->size < 2) {
    /* One rank: nobody to hand tasks to. */
    tsr__scratch_t scratch = {{0}, 0};
    for (int64_t k = 0; k < b->n_tasks && rc == 0; k++) {
      tsr_region_t box;
      memcpy(box.start, b->tasks[k].start, sizeof box.start);
      memcpy(box.stop, b->tasks[k].stop, sizeof box.stop);
      rc = tsr__run_chunk(m->run, b->node, &box, &b->region, b->dst, b->stride, &scratch);
    }
    tsr__scratch_release(m->ctx, &scratch);
  } else {
    while (rc == 0 && b->n_done < b->n_tasks) {
      if (m->run && m->run->opts.cancel && *m->run->opts.cancel) {
        rc = tsr__err(m->ctx, TSR_ECANCELED, "run: canceled");
        break;
      }
      if ((rc = dispatch(m)) == 0)
        rc = take_reply(m);
    }
  }
  if (rc != 0)
    drain(m); /* so that the ranks are idle before DONE */
  tsr__free(m->ctx, b->tasks);
  memset(b, 0, sizeof *b);
  return rc;
}

void tsr__mpi_close(tsr__mpi_t *m, int status) {
  if (m == NULL)
    return;
  if (m->rank == 0) {
    task_msg_t done;
    drain(m);
    memset(&done, 0, sizeof done);
    done.type = T_DONE;
    done.status = status;
    for (int rank = 1; rank < m->size; rank++)
      MPI_Send(&done, (int)sizeof done, MPI_BYTE, rank, TAG_TASK, m->comm);
  }
  for (int i = 0; i < MAX_BATCHES; i++)
    tsr__free(m->ctx, m->batches[i].tasks);
  MPI_Comm_free(&m->comm);
  tsr__free(m->ctx, m->inflight);
  tsr__free(m->ctx, m->buf);
  tsr__free(m->ctx, m);
}

__attribute__((visibility("default"))) const tsr__mpi_module_t *
tsr_mpi_module_v1(const tsr__engine_api_t *engine);

const tsr__mpi_module_t *tsr_mpi_module_v1(const tsr__engine_api_t *engine) {
  static const tsr__mpi_module_t module = {
      TSR__MPI_MODULE_ABI, module_init,      module_finalize, tsr__mpi_rank, tsr__mpi_open,
      tsr__mpi_attach,     tsr__mpi_serve,   tsr__mpi_submit, tsr__mpi_wait, tsr__mpi_close};
  eng = *engine;
  return &module;
}
