/* exec_pool.c -- the process-pool executor: block-tasks on forked workers.
 *
 * DESIGN: workers are forked from the caller when the run hands out its
 * first task, after the graph is built and before this process starts any
 * thread or event loop, so they inherit the graph, user callbacks and
 * caller memory without a copy (a request served from the cache forks
 * none).  Each worker owns its own per-run op states (wcslib copies, open
 * files), runs as SCHED_BATCH (woken with work, it does not preempt the
 * parent that is handing out more), and loops on blocking reads of
 * fixed-size messages from a socketpair.  A message is either a chunk
 * task, computed with the same tsr__run_chunk the serial executor uses
 * into a result slot of a shared anonymous mapping made before the fork
 * (so results are bit-identical, and a run's chunk cache is consulted and
 * filled by the workers themselves), or a job item (tsr__run_submit_jobs):
 * a caller's function run with the worker's own serial run, such as the
 * FITS writer computing a whole band and writing it.  Bulk data never
 * crosses the sockets.  Workers answer results in small batches while
 * more work waits in their socket: each wake-up of the parent costs CPU.
 *
 * The parent drives everything from a libuv loop: one uv_pipe_t per worker,
 * tasks handed out on demand (no static split; even workers from the front
 * of a batch, odd ones from the back, so each goes through neighbours),
 * results copied from their slot into the destination as they arrive, a
 * timer that watches the cancel flag and per-chunk timeouts.  Each worker
 * keeps a record in shared memory of the chunk it computes and since
 * when, so a timeout or a death inside a job item still names the chunk.
 * A worker that dies (a signal, an exit, or a kill after a timeout) shows
 * up as end-of-file on its socket: the parent reaps it, forks a replacement
 * and retries its task, up to `retries` times, after which the run fails
 * with a message naming the node, the chunk and how the worker died.
 * Workers ignore SIGINT: the parent decides, and on any exit from the pool
 * every worker is sent SIGKILL and reaped, so no zombies or strays are
 * left.  A worker with nothing left of a finished request is killed at
 * once, so that its exit overlaps the others' last work.
 *
 * Process ownership: everything here is touched by the parent only, except
 * worker_main and what it calls, which run in the child.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "run.h"

#define MSG_MAGIC 0x50525354u /* "TSRP" */
#define MSG_VERSION 1
enum { MSG_TASK = 1, MSG_DONE = 2, MSG_FAIL = 3 };

/* One message, either way: fixed size, zeroed before use (Redis childinfo). */
#define MSG_SPARSE 1u

typedef struct {
  uint32_t magic;
  uint16_t version;
  uint16_t type;
  int32_t node_id;              /* owner node computed */
  int32_t slot;                 /* result slot */
  int32_t attempt;              /* 0 on the first try */
  int32_t rc;                   /* MSG_FAIL: the error code */
  uint32_t planes;              /* bit p: plane p wanted */
  uint32_t flags;               /* MSG_SPARSE: the run is sparse (tsr__task_t) */
  int64_t start[TSR_MAX_DIMS];  /* the task's box */
  int64_t stop[TSR_MAX_DIMS];
  uint64_t job_fn;              /* a job item (tsr__job_fn) rather than a chunk; 0 if not */
  int64_t job_item;             /* its index */
  int64_t tasks;                /* reply: chunk tasks the job item computed (progress) */
  _Alignas(16) unsigned char job_args[TSR__JOB_ARGS];
  char msg[512];                /* MSG_FAIL: the worker's message */
} pool_msg_t;

enum { TASK_PENDING = 0, TASK_RUNNING = 1, TASK_DONE = 2 };

typedef struct {
  int64_t start[TSR_MAX_DIMS], stop[TSR_MAX_DIMS];
  int attempt;
  int state;                    /* TASK_* */
} pool_task_t;

/* One submitted request: the chunks of a node meeting a region, and where
 * their results go; or the items of a job.  Batches are served in
 * submission order. */
typedef struct {
  bool used;
  int64_t id;                   /* submission number */
  tsr__job_fn job_fn;           /* a job: node is NULL, a task per item */
  unsigned char job_args[TSR__JOB_ARGS];
  char job_what[160];
  tsr_node_t *node;
  tsr_region_t region;
  void *dst[TSR__MAX_PLANES];
  int64_t stride[TSR_MAX_DIMS];
  pool_task_t *tasks;
  int64_t n_tasks, n_done;
  int64_t next, back;           /* pending tasks lie in [next, back) */
} batch_t;

#define MAX_BATCHES 32
/* Tasks a worker may hold at once: the others wait in its socket while it
 * computes one, so it never waits for the parent between tasks. */
#define DEPTH 8
/* A worker answers after this many results, or sooner when nothing else is
 * queued for it, or for a job item or a failure.  Waking a process costs
 * tens of microseconds of CPU on a virtual machine, for the sleeper and
 * for the waker, so the parent wakes once per batch of results. */
#define REPLY_BATCH 4

typedef struct {
  int batch;                    /* index into pool->batches */
  int64_t task;
  int slot;
} inflight_t;

/* What a worker process is doing, in shared memory, a cache line each:
 * written by the worker, read by the parent for task timeouts and, when
 * the worker dies, to know which task it was computing and which chunk. */
typedef struct {
  _Alignas(64) volatile int32_t slot; /* of the task or job item, -1 between them */
  volatile int32_t node_id;     /* the chunk being computed: its node, or -1 */
  volatile int64_t since_ns;    /* uv_hrtime() when that chunk started */
  volatile int64_t start[TSR_MAX_DIMS], stop[TSR_MAX_DIMS];
} worker_state_t;

typedef struct worker_s {
  struct tsr__pool_s *pool;
  pid_t pid;                    /* 0 when no process */
  bool retired;                 /* killed because the request is done; reaped at stop */
  int fd;                       /* parent end of the socketpair */
  uv_pipe_t *pipe;              /* watching fd; heap, freed when libuv has closed it */
  inflight_t inflight[DEPTH];   /* sent, not answered, oldest first */
  int n_inflight;
  int n_items;                  /* job items among them */
  pool_msg_t rx;                /* the reply being read */
  size_t rx_len;
} worker_t;

struct tsr__pool_s {
  tsr__run_t *run;
  tsr_ctx_t *ctx;
  int jobs;
  pid_t parent;                 /* this process */
  worker_t *workers;
  unsigned char *slots;         /* shared: n_slots x slot_bytes, then `states` */
  worker_state_t *states;       /* shared: one per worker */
  size_t slot_bytes, map_bytes;
  int n_slots;
  bool *slot_busy;
  uv_loop_t loop;
  bool loop_open;
  uv_timer_t timer;
  batch_t batches[MAX_BATCHES];
  int64_t next_id;
  bool last;                    /* the request's work is all submitted */
  int64_t waiting;              /* the batch tsr__pool_wait is waiting for */
  int rc;                       /* first failure, 0 if none */
};

static size_t region_count(const int64_t *start, const int64_t *stop) {
  size_t n = 1;
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    n *= (size_t)(stop[a] - start[a]);
  return n;
}

/* ------------------------------------------------------------------ */
/* Worker side (child process)                                        */


/* The worker's view while it computes: its shared record and the attempt
 * number of the task or job item in hand. */
typedef struct {
  worker_state_t *state;
  int attempt;
} worker_ctx_t;

/* Before each chunk a worker computes (tsr__run_t.chunk_hook): record it,
 * then the test hook (tsr__test_hooks.crash_chunk). */
static void chunk_hook(void *ud, const tsr_node_t *n, const tsr_region_t *box) {
  worker_ctx_t *wc = ud;
  const char *e = tsr__test_hooks.crash_chunk;
  long long cx, cy;
  char mode[16] = "";

  wc->state->node_id = n->id;
  memcpy((int64_t *)wc->state->start, box->start, sizeof box->start);
  memcpy((int64_t *)wc->state->stop, box->stop, sizeof box->stop);
  wc->state->since_ns = (int64_t)uv_hrtime();
  if (e == NULL || sscanf(e, "%lld,%lld,%15s", &cx, &cy, mode) < 2)
    return;
  if (box->start[0] / n->chunk[0] != cx || box->start[1] / n->chunk[1] != cy)
    return;
  if (strcmp(mode, "hang") == 0)
    for (;;)
      pause();
  if (wc->attempt == 0 || strcmp(mode, "always") == 0) {
    /* The default action, not a sanitizer's handler: die by the signal. */
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
  }
}

/* Do task or job item m into reply r. */
static void worker_do(tsr__pool_t *p, tsr__run_t *run, tsr__scratch_t *scratch,
                      const pool_msg_t *m, pool_msg_t *r) {
  tsr_node_t *n = NULL;
  void *dst[TSR__MAX_PLANES] = {0};
  int64_t stride[TSR_MAX_DIMS];
  tsr_region_t box;
  size_t count, es;
  int rc;

  memset(r, 0, sizeof *r);
  r->magic = MSG_MAGIC;
  r->version = MSG_VERSION;
  r->slot = m->slot;
  if (m->job_fn != 0) {
    int64_t before = run->done;
    rc = ((tsr__job_fn)(uintptr_t)m->job_fn)(run, m->job_args, m->job_item);
    r->tasks = run->done - before;
    goto out;
  }
  for (n = p->run->g->first; n && n->id != m->node_id; n = n->next)
    ;
  if (n == NULL)
    _exit(5);
  memcpy(box.start, m->start, sizeof box.start);
  memcpy(box.stop, m->stop, sizeof box.stop);
  count = region_count(m->start, m->stop);
  es = tsr_dtype_size(n->dtype);
  for (int pl = 0; pl < n->n_planes; pl++)
    if (m->planes & (1u << pl))
      dst[pl] = p->slots + (size_t)m->slot * p->slot_bytes + (size_t)pl * count * es;
  tsr__contiguous_strides(&box, stride);
  run->sparse = (m->flags & MSG_SPARSE) != 0;
  rc = tsr__run_chunk(run, n, &box, &box, dst, stride, scratch);
out:
  r->type = rc == 0 ? MSG_DONE : MSG_FAIL;
  r->rc = rc;
  if (rc != 0)
    snprintf(r->msg, sizeof r->msg, "%s", tsr_errmsg(run->ctx));
}

static void worker_main(tsr__pool_t *p, int index, int fd) {
  tsr__run_t *run = NULL;
  tsr__scratch_t scratch = {{0}, 0};  /* whole chunks, kept from task to task */
  pool_msg_t m, replies[REPLY_BATCH];
  worker_ctx_t wc = {&p->states[index], 0};
  int n_replies = 0;

  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_DFL);
  signal(SIGPIPE, SIG_IGN);
  /* A parent killed outright takes the workers with it at once, rather
   * than after they finished every task queued in their sockets. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != p->parent)
    _exit(6);
  {
    /* A batch process: woken (given a task) it does not preempt the
     * parent, which would otherwise wait out a time slice on this CPU
     * before it hands the other workers theirs. */
    struct sched_param sp = {0};
    (void)sched_setscheduler(0, SCHED_BATCH, &sp);
  }
  /* A fresh run: this process opens its own files and wcslib copies.  It
   * reports progress through its replies, not by itself. */
  if (tsr__run_new_local(p->run->g, &p->run->opts, &run) != 0)
    _exit(3);
  run->opts.progress = NULL;
  run->chunk_hook = chunk_hook;
  run->chunk_hook_ud = &wc;
  while (tsr__read_full(fd, &m, sizeof m)) {
    int queued = 0;
    if (m.magic != MSG_MAGIC || m.version != MSG_VERSION || m.type != MSG_TASK)
      _exit(4);
    wc.attempt = m.attempt;
    wc.state->node_id = -1;
    wc.state->since_ns = (int64_t)uv_hrtime();
    wc.state->slot = m.slot;
    worker_do(p, run, &scratch, &m, &replies[n_replies]);
    wc.state->slot = -1;
    /* Results wait for company while more work is queued here. */
    if (++n_replies < REPLY_BATCH && m.job_fn == 0 && replies[n_replies - 1].type == MSG_DONE &&
        ioctl(fd, FIONREAD, &queued) == 0 && queued >= (int)sizeof m)
      continue;
    if (!tsr__write_full(fd, replies, (size_t)n_replies * sizeof *replies))
      break;
    n_replies = 0;
  }
  /* Leave without freeing: the memory is the parent's copy-on-write image,
   * and atexit handlers belong to the parent. */
  _exit(0);
}

/* ------------------------------------------------------------------ */
/* Parent side                                                        */

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void worker_died(worker_t *w);

static void on_pipe_closed(uv_handle_t *h) { free(h); }

/* Watch w->fd on the loop. */
static int watch(tsr__pool_t *p, worker_t *w) {
  /* libuv owns the handle until its close callback: plain malloc, freed there. */
  w->pipe = malloc(sizeof *w->pipe);
  if (w->pipe == NULL)
    return tsr__err(p->ctx, TSR_ENOMEM, "executor: out of memory");
  uv_pipe_init(&p->loop, w->pipe, 0);
  w->pipe->data = w;
  if (uv_pipe_open(w->pipe, w->fd) != 0) {
    uv_close((uv_handle_t *)w->pipe, on_pipe_closed);
    w->pipe = NULL;
    return tsr__err(p->ctx, TSR_EWORKER, "executor: cannot watch a worker's socket");
  }
  return 0;
}

static void unwatch(worker_t *w) {
  if (w->pipe) {
    uv_read_stop((uv_stream_t *)w->pipe);
    uv_close((uv_handle_t *)w->pipe, on_pipe_closed); /* closes fd too */
    w->pipe = NULL;
    w->fd = -1;
  }
}

/* 0 if the descriptors that a process's first uv_loop_init needs are free
 * (libuv's signal pipe, the epoll instance and the loop's eventfd), else
 * the errno.  libuv aborts the process when it cannot make its signal
 * pipe: under ulimit -n 8 a -j 2 run died of SIGABRT. */
static int loop_descriptors(void) {
  int fds[4], n = 0, e = 0;
  while (n < 4 && (fds[n] = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0)
    n++;
  if (n < 4)
    e = errno == EMFILE || errno == ENFILE ? errno : 0;
  while (n > 0)
    close(fds[--n]);
  return e;
}

static int fork_worker(tsr__pool_t *p, worker_t *w) {
  int sv[2];
  pid_t pid;

  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    char why[160];
    return tsr__err(p->ctx, TSR_EWORKER, "executor: cannot create a socket pair: %s",
                    tsr__strerror_fd(errno, why, sizeof why));
  }
  p->states[w - p->workers].slot = -1;
  fflush(NULL);
  pid = fork();
  if (pid < 0) {
    int e = errno;
    close(sv[0]);
    close(sv[1]);
    return tsr__err(p->ctx, TSR_EWORKER, "executor: cannot fork a worker: %s", strerror(e));
  }
  if (pid == 0) {
    /* Only this worker's end stays open: another worker's socket held here
     * would hide that worker's death from the parent. */
    for (int i = 0; i < p->jobs; i++)
      if (p->workers[i].pid != 0 && p->workers[i].fd >= 0)
        close(p->workers[i].fd);
    close(sv[0]);
    worker_main(p, (int)(w - p->workers), sv[1]);
  }
  close(sv[1]);
  memset(w, 0, sizeof *w);
  w->pool = p;
  w->pid = pid;
  w->fd = sv[0];
  return p->loop_open ? watch(p, w) : 0;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  worker_t *w = h->data;
  (void)suggested;
  *buf = uv_buf_init((char *)&w->rx + w->rx_len, (unsigned)(sizeof w->rx - w->rx_len));
}

static void fail(tsr__pool_t *p, int rc) {
  if (p->rc == 0)
    p->rc = rc;
  uv_stop(&p->loop);
}

/* A write in flight: its own request and copy of the message, because the
 * worker's reply (and the next task) can come before libuv calls back. */
typedef struct {
  uv_write_t req;
  worker_t *w;
  pid_t pid;                    /* the worker it was for */
  pool_msg_t msg;
} write_t;

static void on_written(uv_write_t *req, int status) {
  write_t *wr = req->data;
  worker_t *w = wr->w;
  tsr_ctx_t *ctx = w->pool->ctx;
  if (status != 0 && w->pid == wr->pid && w->pid != 0)
    worker_died(w);
  tsr__free(ctx, wr);
}

/* Does batch b have a pending task?  Narrows [next, back) to them. */
static bool has_pending(batch_t *b) {
  while (b->next < b->back && b->tasks[b->next].state != TASK_PENDING)
    b->next++;
  while (b->back > b->next && b->tasks[b->back - 1].state != TASK_PENDING)
    b->back--;
  return b->next < b->back;
}

/* The task worker w takes next: of the oldest batch with one pending, the
 * first pending, or the last for odd workers, so that two workers each go
 * through neighbouring tasks (whose inputs overlap) from either end and
 * meet in the middle.  False if none. */
static bool next_task(tsr__pool_t *p, const worker_t *w, int *bi, int64_t *ti) {
  bool from_back = (w - p->workers) % 2 == 1;
  int best = -1;
  for (int i = 0; i < MAX_BATCHES; i++) {
    batch_t *b = &p->batches[i];
    if (!b->used || !has_pending(b))
      continue;
    /* A job item waits in a worker's socket while it does another only
     * while plenty are left: the worker goes on without waiting for the
     * parent (a wake-up on a busy machine can take a millisecond or two),
     * and near the end the last items go to whichever worker frees up
     * first, none held back behind another. */
    if (b->job_fn != NULL &&
        (w->n_items >= 2 || (w->n_items == 1 && b->back - b->next < 2 * p->jobs)))
      continue;
    if (best < 0 || b->id < p->batches[best].id)
      best = i;
  }
  if (best < 0)
    return false;
  *bi = best;
  *ti = from_back ? p->batches[best].back - 1 : p->batches[best].next;
  return true;
}

/* Send worker w its next task; false if it has none to take. */
static bool dispatch_one(tsr__pool_t *p, worker_t *w) {
  int slot = -1, bi;
  int64_t ti;
  batch_t *b;
  pool_task_t *t;
  write_t *wr;
  uv_buf_t buf;

  if (p->run->opts.cancel && *p->run->opts.cancel) {
    tsr__err(p->ctx, TSR_ECANCELED, "run: canceled");
    fail(p, TSR_ECANCELED);
    return false;
  }
  if (!next_task(p, w, &bi, &ti))
    return false;
  for (int s = 0; s < p->n_slots && slot < 0; s++)
    if (!p->slot_busy[s])
      slot = s;
  if (slot < 0)
    return false;
  b = &p->batches[bi];
  t = &b->tasks[ti];
  wr = tsr__calloc(p->ctx, 1, sizeof *wr);
  if (wr == NULL) {
    tsr__err(p->ctx, TSR_ENOMEM, "executor: out of memory");
    fail(p, TSR_ENOMEM);
    return false;
  }
  wr->w = w;
  wr->pid = w->pid;
  wr->msg.magic = MSG_MAGIC;
  wr->msg.version = MSG_VERSION;
  wr->msg.type = MSG_TASK;
  wr->msg.slot = slot;
  wr->msg.attempt = t->attempt;
  if (b->job_fn != NULL) {
    wr->msg.job_fn = (uint64_t)(uintptr_t)b->job_fn;
    wr->msg.job_item = ti;
    memcpy(wr->msg.job_args, b->job_args, sizeof wr->msg.job_args);
    w->n_items++;
  } else {
    wr->msg.node_id = b->node->id;
    wr->msg.flags = p->run->sparse ? MSG_SPARSE : 0;
    for (int pl = 0; pl < b->node->n_planes; pl++)
      if (b->dst[pl])
        wr->msg.planes |= 1u << pl;
    memcpy(wr->msg.start, t->start, sizeof t->start);
    memcpy(wr->msg.stop, t->stop, sizeof t->stop);
  }
  t->state = TASK_RUNNING;
  p->slot_busy[slot] = true;
  w->inflight[w->n_inflight++] = (inflight_t){bi, ti, slot};
  wr->req.data = wr;
  buf = uv_buf_init((char *)&wr->msg, sizeof wr->msg);
  if (uv_write(&wr->req, (uv_stream_t *)w->pipe, &buf, 1, on_written) != 0) {
    tsr__free(p->ctx, wr);
    worker_died(w);
    return false;
  }
  return true;
}

/* Hand out pending tasks until every worker holds DEPTH or has nothing it
 * may take, round by round: the least loaded workers first, one each. */
static void dispatch(tsr__pool_t *p) {
  for (bool gave = true; gave && p->rc == 0;) {
    gave = false;
    for (int load = 0; load < DEPTH; load++)
      for (int i = 0; i < p->jobs && p->rc == 0; i++) {
        worker_t *w = &p->workers[i];
        if (w->pid != 0 && !w->retired && w->n_inflight == load && dispatch_one(p, w))
          gave = true;
      }
  }
}

static bool batch_done(tsr__pool_t *p, int64_t id) {
  for (int i = 0; i < MAX_BATCHES; i++)
    if (p->batches[i].used && p->batches[i].id == id)
      return p->batches[i].n_done == p->batches[i].n_tasks;
  return true;
}

static void dispatch_all(tsr__pool_t *p) {
  dispatch(p);
  if (batch_done(p, p->waiting))
    uv_stop(&p->loop);
}

/* The request's work is all done or handed out (its tasks are all done, or
 * the caller said its last submission went out): a worker with nothing
 * left is killed now and exits (freeing its memory takes a millisecond or
 * two) while the others finish and the caller writes the last band,
 * instead of when the pool stops.  A later submission (the request's task
 * count was short) forks new ones (revive). */
static void retire_idle(tsr__pool_t *p) {
  for (int i = 0; i < MAX_BATCHES; i++) {
    batch_t *b = &p->batches[i];
    if (b->used && has_pending(b))
      return; /* pending work is left */
  }
  for (int i = 0; i < p->jobs; i++) {
    worker_t *w = &p->workers[i];
    if (w->pid != 0 && !w->retired && w->n_inflight == 0) {
      unwatch(w);
      kill(w->pid, SIGKILL);
      w->retired = true;
    }
  }
}

static int revive(tsr__pool_t *p) {
  for (int i = 0; i < p->jobs; i++) {
    worker_t *w = &p->workers[i];
    int status, rc;
    if (!w->retired)
      continue;
    while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
      ;
    w->pid = 0;
    w->retired = false;
    if ((rc = fork_worker(p, w)) != 0)
      return rc;
    uv_read_start((uv_stream_t *)w->pipe, alloc_cb, on_read);
  }
  return 0;
}

static void handle_reply(worker_t *w) {
  tsr__pool_t *p = w->pool;
  pool_msg_t *r = &w->rx;
  inflight_t f;
  batch_t *b;
  pool_task_t *t;

  if (r->magic != MSG_MAGIC || r->version != MSG_VERSION || w->n_inflight == 0 ||
      r->slot != w->inflight[0].slot) {
    tsr__err(p->ctx, TSR_EWORKER, "executor: a worker sent a malformed reply");
    fail(p, TSR_EWORKER);
    return;
  }
  /* Replies come in the order tasks were sent. */
  f = w->inflight[0];
  memmove(w->inflight, w->inflight + 1, (size_t)--w->n_inflight * sizeof *w->inflight);
  b = &p->batches[f.batch];
  t = &b->tasks[f.task];
  w->n_items -= b->job_fn != NULL;
  if (r->type == MSG_FAIL) {
    /* An error of the computation itself (bad data, out of memory): as in
     * a serial run, the run fails with the worker's message. */
    p->slot_busy[f.slot] = false;
    tsr__err(p->ctx, r->rc < 0 ? r->rc : TSR_EWORKER, "%.*s", (int)sizeof r->msg, r->msg);
    fail(p, r->rc < 0 ? r->rc : TSR_EWORKER);
    return;
  }
  if (b->job_fn == NULL) {
    tsr_node_t *n = b->node;
    size_t count = region_count(t->start, t->stop), es = tsr_dtype_size(n->dtype);
    tsr_region_t box;
    int64_t st[TSR_MAX_DIMS];
    memcpy(box.start, t->start, sizeof box.start);
    memcpy(box.stop, t->stop, sizeof box.stop);
    tsr__contiguous_strides(&box, st);
    for (int pl = 0; pl < n->n_planes; pl++)
      if (b->dst[pl])
        tsr__copy_box(b->dst[pl], &b->region, b->stride,
                      p->slots + (size_t)f.slot * p->slot_bytes + (size_t)pl * count * es, &box,
                      st, &box, es);
  }
  p->slot_busy[f.slot] = false;
  t->state = TASK_DONE;
  b->n_done++;
  /* Progress counts chunk tasks: a job item reports how many it did. */
  p->run->done += b->job_fn != NULL ? r->tasks : 1;
  if (p->run->opts.progress)
    p->run->opts.progress(p->run->opts.progress_ud, p->run->done, p->run->total);
  dispatch_all(p);
  if (p->last || (p->run->total > 0 && p->run->done >= p->run->total))
    retire_idle(p);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  worker_t *w = s->data;
  (void)buf;
  if (nread < 0) {
    worker_died(w);
    return;
  }
  w->rx_len += (size_t)nread;
  if (w->rx_len == sizeof w->rx) {
    w->rx_len = 0;
    handle_reply(w);
  }
}

static void on_closed(uv_handle_t *h) { (void)h; }

static void describe_status(int status, char *buf, size_t cap) {
  if (WIFSIGNALED(status))
    snprintf(buf, cap, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
  else if (WIFEXITED(status))
    snprintf(buf, cap, "exited with status %d", WEXITSTATUS(status));
  else
    snprintf(buf, cap, "ended (status 0x%x)", status);
}

/* The worker's socket closed: reap it, retry its tasks on a replacement. */
static void worker_died(worker_t *w) {
  tsr__pool_t *p = w->pool;
  int status = 0;
  char how[128];

  if (w->pid == 0)
    return;
  unwatch(w);
  while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
    ;
  w->pid = 0;
  describe_status(status, how, sizeof how);
  /* Every task it held is pending again.  Only the one it was computing is
   * to blame: done ones wait in its unsent replies, queued ones in its
   * socket (the oldest, if it died between tasks, so that a worker that
   * keeps dying still ends the run). */
  int blamed = 0;
  const worker_state_t *st = &p->states[w - p->workers];
  for (int k = 0; k < w->n_inflight; k++)
    if (w->inflight[k].slot == st->slot)
      blamed = k;
  for (int k = 0; k < w->n_inflight; k++) {
    inflight_t *f = &w->inflight[k];
    batch_t *b = &p->batches[f->batch];
    pool_task_t *t = &b->tasks[f->task];
    p->slot_busy[f->slot] = false;
    t->state = TASK_PENDING;
    if (f->task < b->next)
      b->next = f->task;
    if (f->task >= b->back)
      b->back = f->task + 1;
    if (k == blamed && ++t->attempt > p->run->opts.retries && p->rc == 0) {
      const char *retries = p->run->opts.retries == 1 ? "retry" : "retries";
      const tsr_node_t *n = b->node;
      char where[160];
      tsr_region_t box;
      memcpy(box.start, t->start, sizeof box.start);
      memcpy(box.stop, t->stop, sizeof box.stop);
      if (b->job_fn != NULL) {
        /* A job item: name the chunk it was computing, if any. */
        for (n = p->run->g->first; n && n->id != st->node_id; n = n->next)
          ;
        memcpy(box.start, (const int64_t *)st->start, sizeof box.start);
        memcpy(box.stop, (const int64_t *)st->stop, sizeof box.stop);
      }
      if (n != NULL) {
        tsr__region_format(&box, n->ndim, where, sizeof where);
        tsr__err(p->ctx, TSR_EWORKER, "executor: chunk %s of node %s: worker %s after %d %s",
                 where, n->name, how, p->run->opts.retries, retries);
      } else {
        tsr__err(p->ctx, TSR_EWORKER, "executor: %s: worker %s after %d %s", b->job_what, how,
                 p->run->opts.retries, retries);
      }
      fail(p, TSR_EWORKER);
    }
  }
  w->n_inflight = 0;
  w->n_items = 0;
  if (p->rc != 0)
    return;
  if (fork_worker(p, w) != 0) {
    fail(p, TSR_EWORKER);
    return;
  }
  uv_read_start((uv_stream_t *)w->pipe, alloc_cb, on_read);
  dispatch_all(p);
}

static void on_timer(uv_timer_t *tm) {
  tsr__pool_t *p = tm->data;
  double limit = p->run->opts.task_timeout_s;
  if (p->run->opts.cancel && *p->run->opts.cancel) {
    tsr__err(p->ctx, TSR_ECANCELED, "run: canceled");
    fail(p, TSR_ECANCELED);
    return;
  }
  if (limit > 0) {
    int64_t now = (int64_t)uv_hrtime();
    for (int i = 0; i < p->jobs; i++) {
      /* The limit holds for each chunk, inside a job item too. */
      worker_t *w = &p->workers[i];
      if (w->pid != 0 && !w->retired && p->states[i].slot >= 0 &&
          (double)(now - p->states[i].since_ns) > limit * 1e9)
        kill(w->pid, SIGKILL); /* its end-of-file brings it to worker_died */
    }
  }
}

/* The largest chunk result any node of the graph can produce. */
static size_t largest_chunk_bytes(tsr_graph_t *g) {
  size_t m = 0;
  for (tsr_node_t *n = g->first; n; n = n->next) {
    if (n->op == NULL || (n->op->flags & TSR__OP_SOURCE))
      continue;
    size_t c = (size_t)n->n_planes * tsr_dtype_size(n->dtype);
    for (int a = 0; a < TSR_MAX_DIMS; a++)
      c *= (size_t)n->chunk[a];
    if (c > m)
      m = c;
  }
  return m;
}

int tsr__pool_start(tsr__run_t *run, int jobs, tsr__pool_t **out) {
  tsr_ctx_t *ctx = run->ctx;
  tsr__pool_t *p;
  int rc = TSR_ENOMEM, e;

  *out = NULL;
  p = tsr__calloc(ctx, 1, sizeof *p);
  if (p == NULL)
    return tsr__err(ctx, rc, "executor: out of memory");
  p->run = run;
  p->ctx = ctx;
  p->jobs = jobs;
  p->parent = getpid();
  p->n_slots = DEPTH * jobs;
  p->slot_bytes = (largest_chunk_bytes(run->g) + 63) / 64 * 64;
  if (p->slot_bytes == 0)
    p->slot_bytes = 64;
  p->workers = tsr__calloc(ctx, (size_t)jobs, sizeof *p->workers);
  p->slot_busy = tsr__calloc(ctx, (size_t)p->n_slots, sizeof *p->slot_busy);
  if (p->workers == NULL || p->slot_busy == NULL) {
    tsr__err(ctx, rc, "executor: out of memory");
    goto out;
  }
  for (int i = 0; i < jobs; i++)
    p->workers[i].fd = -1;
  /* Shared before the fork, so every worker writes where the parent reads. */
  p->map_bytes = p->slot_bytes * (size_t)p->n_slots + (size_t)jobs * sizeof *p->states;
  p->slots = mmap(NULL, p->map_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p->slots == MAP_FAILED) {
    p->slots = NULL;
    rc = tsr__err(ctx, TSR_ENOMEM, "executor: cannot map %zu bytes of shared memory: %s",
                  p->map_bytes, strerror(errno));
    goto out;
  }
  p->states = (worker_state_t *)(p->slots + p->slot_bytes * (size_t)p->n_slots);
  for (int i = 0; i < jobs; i++)
    if ((rc = fork_worker(p, &p->workers[i])) != 0)
      goto out;
  /* The loop comes after the first forks: the workers never see it. */
  if ((e = loop_descriptors()) != 0 || (e = -uv_loop_init(&p->loop)) != 0) {
    char why[160];
    rc = tsr__err(ctx, TSR_EWORKER, "executor: cannot create an event loop: %s",
                  tsr__strerror_fd(e, why, sizeof why));
    goto out;
  }
  p->loop_open = true;
  uv_timer_init(&p->loop, &p->timer);
  p->timer.data = p;
  for (int i = 0; i < jobs; i++)
    if ((rc = watch(p, &p->workers[i])) != 0)
      goto out;
  for (int i = 0; i < jobs; i++)
    uv_read_start((uv_stream_t *)p->workers[i].pipe, alloc_cb, on_read);
  *out = p;
  return 0;
out:
  tsr__pool_stop(p);
  return rc;
}

/* Writing a task to a worker that just died raises SIGPIPE, which would
 * kill the caller.  A library must not change the process's dispositions,
 * so SIGPIPE is blocked while the pool talks to its workers and a SIGPIPE
 * raised meanwhile is discarded (the dead worker shows up as end-of-file). */
typedef struct {
  sigset_t old;
  bool pending_before;
} sigpipe_guard_t;

static void sigpipe_block(sigpipe_guard_t *g) {
  sigset_t set, pend;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  sigprocmask(SIG_BLOCK, &set, &g->old);
  sigpending(&pend);
  g->pending_before = sigismember(&pend, SIGPIPE);
}

static void sigpipe_restore(const sigpipe_guard_t *g) {
  sigset_t set, pend;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  sigpending(&pend);
  if (!g->pending_before && sigismember(&pend, SIGPIPE)) {
    struct timespec zero = {0, 0};
    while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
      ;
  }
  sigprocmask(SIG_SETMASK, &g->old, NULL);
}

static int pool_submit(tsr__pool_t *p, tsr_node_t *n, const tsr_region_t *region,
                       void *const *dst, const int64_t *stride, const uint8_t *skip,
                       int64_t *ticket);

int tsr__pool_submit(tsr__pool_t *p, tsr_node_t *n, const tsr_region_t *region, void *const *dst,
                     const int64_t *stride, const uint8_t *skip, int64_t *ticket) {
  sigpipe_guard_t g;
  int rc;
  sigpipe_block(&g);
  rc = pool_submit(p, n, region, dst, stride, skip, ticket);
  sigpipe_restore(&g);
  return rc;
}

/* A free batch for a new submission, with workers to serve it (retired
 * ones come back); the pool's failure if it has failed. */
static int free_batch(tsr__pool_t *p, batch_t **out) {
  *out = NULL;
  if (p->rc != 0)
    return p->rc;
  if ((p->rc = revive(p)) != 0)
    return p->rc;
  for (int i = 0; i < MAX_BATCHES && *out == NULL; i++)
    if (!p->batches[i].used)
      *out = &p->batches[i];
  if (*out == NULL)
    return tsr__err(p->ctx, TSR_EBUSY, "executor: more than %d requests in flight", MAX_BATCHES);
  return 0;
}

static int pool_submit(tsr__pool_t *p, tsr_node_t *n, const tsr_region_t *region,
                       void *const *dst, const int64_t *stride, const uint8_t *skip,
                       int64_t *ticket) {
  int64_t lo[TSR_MAX_DIMS], hi[TSR_MAX_DIMS], c[TSR_MAX_DIMS], count = 1, k = 0;
  batch_t *b;
  int rc;

  if ((rc = free_batch(p, &b)) != 0)
    return rc;
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    lo[a] = region->start[a] / n->chunk[a];
    hi[a] = (region->stop[a] + n->chunk[a] - 1) / n->chunk[a];
    count *= hi[a] - lo[a];
  }
  memset(b, 0, sizeof *b);
  p->last = false;
  b->tasks = tsr__calloc(p->ctx, (size_t)count, sizeof *b->tasks);
  if (b->tasks == NULL)
    return tsr__err(p->ctx, TSR_ENOMEM, "executor: out of memory for %" PRId64 " tasks", count);
  b->used = true;
  b->id = ++p->next_id;
  b->node = n;
  b->region = *region;
  for (int pl = 0; pl < TSR__MAX_PLANES; pl++)
    b->dst[pl] = dst[pl];
  memcpy(b->stride, stride, sizeof b->stride);
  /* The tasks: each chunk's part of the region, in FITS order. */
  memcpy(c, lo, sizeof c);
  for (;;) {
    pool_task_t *t = &b->tasks[b->n_tasks];
    bool empty = false;
    for (int a = 0; a < TSR_MAX_DIMS; a++) {
      int64_t s0 = c[a] * n->chunk[a], e = s0 + n->chunk[a];
      t->start[a] = s0 > region->start[a] ? s0 : region->start[a];
      t->stop[a] = e < region->stop[a] ? e : region->stop[a];
      if (t->stop[a] > n->shape[a])
        t->stop[a] = n->shape[a];
      empty |= t->stop[a] <= t->start[a];
    }
    if (!empty && !(skip && skip[k]))
      b->n_tasks++;
    k++;
    if (!tsr__chunk_next(c, lo, hi))
      break;
  }
  b->back = b->n_tasks;
  *ticket = b->id;
  /* Hand out what idle workers can take now; the rest goes out as results
   * come back, inside tsr__pool_wait. */
  dispatch(p);
  return p->rc;
}

int tsr__pool_submit_jobs(tsr__pool_t *p, tsr__job_fn fn, const void *args, size_t len,
                          int64_t n, bool last, const char *what, int64_t *ticket) {
  sigpipe_guard_t g;
  batch_t *b;
  int rc;

  *ticket = 0;
  if ((rc = free_batch(p, &b)) != 0)
    return rc;
  memset(b, 0, sizeof *b);
  b->tasks = tsr__calloc(p->ctx, n > 0 ? (size_t)n : 1, sizeof *b->tasks);
  if (b->tasks == NULL)
    return tsr__err(p->ctx, TSR_ENOMEM, "executor: out of memory for %" PRId64 " job items", n);
  b->used = true;
  b->id = ++p->next_id;
  b->job_fn = fn;
  memcpy(b->job_args, args, len);
  snprintf(b->job_what, sizeof b->job_what, "%s", what);
  b->n_tasks = b->back = n;
  p->last = last;
  *ticket = b->id;
  sigpipe_block(&g);
  dispatch(p);
  rc = p->rc;
  sigpipe_restore(&g);
  return rc;
}

static int pool_wait(tsr__pool_t *p, int64_t ticket);

int tsr__pool_wait(tsr__pool_t *p, int64_t ticket) {
  sigpipe_guard_t g;
  int rc;
  sigpipe_block(&g);
  rc = pool_wait(p, ticket);
  sigpipe_restore(&g);
  return rc;
}

static int pool_wait(tsr__pool_t *p, int64_t ticket) {
  batch_t *b = NULL;
  int rc;
  for (int i = 0; i < MAX_BATCHES; i++)
    if (p->batches[i].used && p->batches[i].id == ticket)
      b = &p->batches[i];
  if (b == NULL)
    return tsr__err(p->ctx, TSR_EINVAL, "executor: no request %" PRId64 " in flight", ticket);
  p->waiting = ticket;
  uv_timer_start(&p->timer, on_timer, 50, 50);
  /* Not dispatch_all: a uv_stop made outside uv_run would stay pending and
   * end the next wait's loop before it starts. */
  dispatch(p);
  while (b->n_done < b->n_tasks && p->rc == 0)
    uv_run(&p->loop, UV_RUN_DEFAULT);
  uv_timer_stop(&p->timer);
  rc = p->rc;
  if (rc == 0 && b->n_done < b->n_tasks)
    rc = tsr__err(p->ctx, TSR_EWORKER,
                  "executor: the event loop stopped with %" PRId64 " of %" PRId64 " tasks done",
                  b->n_done, b->n_tasks);
  tsr__free(p->ctx, b->tasks);
  memset(b, 0, sizeof *b);
  return rc;
}

int tsr__pool_run(tsr__pool_t *p, tsr_node_t *n, const tsr_region_t *region, void *const *dst,
                  const int64_t *stride) {
  int64_t ticket;
  int rc = tsr__pool_submit(p, n, region, dst, stride, NULL, &ticket);
  return rc != 0 ? rc : tsr__pool_wait(p, ticket);
}

void tsr__pool_stop(tsr__pool_t *p) {
  if (p == NULL)
    return;
  /* Workers may be mid-task after a failure or a cancel: kill rather than
   * wait, then reap every one. */
  for (int i = 0; p->workers && i < p->jobs; i++) {
    worker_t *w = &p->workers[i];
    if (w->pid != 0)
      kill(w->pid, SIGKILL);
  }
  for (int i = 0; p->workers && i < p->jobs; i++) {
    worker_t *w = &p->workers[i];
    int status;
    if (w->pipe)
      unwatch(w);
    else if (w->fd >= 0)
      close(w->fd);
    if (w->pid != 0)
      while (waitpid(w->pid, &status, 0) < 0 && errno == EINTR)
        ;
    w->pid = 0;
  }
  if (p->loop_open) {
    uv_close((uv_handle_t *)&p->timer, on_closed);
    /* Run the close callbacks (they free the pipe handles).  A uv_stop made
     * outside the loop (a failure or cancel while submitting) ends the first
     * run at once, so run until nothing is left. */
    for (int k = 0; k < 8 && uv_run(&p->loop, UV_RUN_DEFAULT) != 0; k++)
      ;
    uv_loop_close(&p->loop);
  }
  if (p->slots)
    munmap(p->slots, p->map_bytes);
  for (int i = 0; i < MAX_BATCHES; i++)
    tsr__free(p->ctx, p->batches[i].tasks);
  tsr__free(p->ctx, p->workers);
  tsr__free(p->ctx, p->slot_busy);
  tsr__free(p->ctx, p);
}
