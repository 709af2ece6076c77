/* exec_threads.c -- the threads executor: a run's work on N threads of the
 * calling process.
 *
 * DESIGN: the unit of work is the same as the process pool's: the chunks of
 * a request (tsr_compute: each written straight into the caller's buffer,
 * no copy through shared slots) or coarse job items (tsr_write_fits: a band
 * computed and written by one thread, as a pool worker does it).  Each
 * thread has its own serial run of the graph (tsr__run_new_local), so per-run
 * node state -- wcslib copies, open files, spline tile caches, scratch -- is
 * never shared between threads, exactly as between pool workers; the graph
 * itself is only read.  Items are handed out one at a time under a mutex
 * (items take milliseconds), the even threads taking them from the front of
 * the list and the odd ones from the back, as the pool's workers do, so each
 * thread works through neighbouring chunks whose input windows overlap.
 *
 * Errors: the first failure stops the others (they finish the item they
 * are in) and its message, which the failing thread wrote into its own
 * slot of the context (ctx.c), is carried to the calling thread.  A cancel
 * flag is checked before every item.  The progress callback is called from
 * whichever thread finished an item, under the mutex, so never twice at
 * once.  What the threads executor does not give is the pool's isolation: a
 * crashing block takes the process with it, and a hung one cannot be killed
 * (task_timeout_s and retries do not apply).
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "run.h"

typedef struct tsr__threads_s {
  tsr__run_t *run;              /* the caller's */
  tsr__thread_item_fn item;
  void *ud;
  int64_t front, back;          /* items [front, back) are left; guarded by lock */
  bool progress;                /* report items as the run's tasks */
  pthread_mutex_t lock;
  int rc;                       /* first error; guarded by lock */
  char msg[TSR__ERRMSG_CAP];    /* its message */
} threads_t;

typedef struct {
  threads_t *t;
  int index;
  pthread_t tid;
  bool started;
} worker_t;

/* The next item for worker `index`, or -1 when none is left or the run
 * stops. */
static int64_t take(threads_t *t, int index) {
  int64_t i = -1;
  volatile int *cancel = t->run->opts.cancel;
  pthread_mutex_lock(&t->lock);
  if (t->rc == 0 && cancel && *cancel) {
    t->rc = TSR_ECANCELED;
    snprintf(t->msg, sizeof t->msg, "run: canceled");
  }
  if (t->rc == 0 && t->front < t->back)
    i = index % 2 == 0 ? t->front++ : --t->back;
  pthread_mutex_unlock(&t->lock);
  return i;
}

/* One more of the caller's tasks is done; under the lock. */
static void count_task(threads_t *t) {
  tsr__run_t *run = t->run;
  run->done++;
  if (run->opts.progress)
    run->opts.progress(run->opts.progress_ud, run->done, run->total);
}

static void finish(threads_t *t, int rc, tsr_ctx_t *ctx) {
  pthread_mutex_lock(&t->lock);
  if (rc != 0) {
    if (t->rc == 0) {
      t->rc = rc;
      snprintf(t->msg, sizeof t->msg, "%s", tsr_errmsg(ctx));
    }
  } else if (t->progress) {
    count_task(t);
  }
  pthread_mutex_unlock(&t->lock);
}

/* A thread's run finished one of its own tasks (job items). */
static void forward_progress(void *ud, int64_t done, int64_t total) {
  threads_t *t = ud;
  (void)done, (void)total;
  pthread_mutex_lock(&t->lock);
  count_task(t);
  pthread_mutex_unlock(&t->lock);
}

static void *worker_main(void *arg) {
  worker_t *wk = arg;
  threads_t *t = wk->t;
  tsr__run_t *parent = t->run, *local = NULL;
  tsr_run_opts_t o = parent->opts;
  int rc;

  o.jobs = 1;
  o.progress = t->progress ? NULL : forward_progress;
  o.progress_ud = t;
  o.mpi_comm = NULL;
  if ((rc = tsr__run_new_local(parent->g, &o, &local)) != 0) {
    finish(t, rc, parent->ctx);
    return NULL;
  }
  local->worker = true;
  local->sparse = parent->sparse;
  memcpy(local->blank, parent->blank, sizeof local->blank);
  for (int64_t i; (i = take(t, wk->index)) >= 0;) {
    rc = t->item(local, t->ud, i);
    finish(t, rc, parent->ctx);
    if (rc != 0)
      break;
  }
  tsr__run_free(local);
  return NULL;
}

int tsr__threads_run(tsr__run_t *run, int jobs, tsr__thread_item_fn item, void *ud, int64_t n,
                     bool progress) {
  tsr_ctx_t *ctx = run->ctx;
  threads_t t;
  worker_t *wk;
  int rc = 0;

  if (n <= 0)
    return 0;
  if (jobs > n)
    jobs = (int)n;
  memset(&t, 0, sizeof t);
  t.run = run;
  t.item = item;
  t.ud = ud;
  t.back = n;
  t.progress = progress;
  wk = tsr__calloc(ctx, (size_t)jobs, sizeof *wk);
  if (wk == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "run: out of memory starting %d threads", jobs);
  pthread_mutex_init(&t.lock, NULL);
  for (int k = 0; k < jobs; k++) {
    int e;
    wk[k].t = &t;
    wk[k].index = k;
    if ((e = pthread_create(&wk[k].tid, NULL, worker_main, &wk[k])) != 0) {
      /* Fewer threads still finish the work; none at all is an error. */
      if (k == 0)
        rc = tsr__err(ctx, TSR_ENOMEM, "run: cannot start a thread: %s", strerror(e));
      break;
    }
    wk[k].started = true;
  }
  for (int k = 0; k < jobs; k++)
    if (wk[k].started)
      pthread_join(wk[k].tid, NULL);
  pthread_mutex_destroy(&t.lock);
  tsr__free(ctx, wk);
  if (rc == 0 && t.rc != 0)
    rc = tsr__err(ctx, t.rc, "%s", t.msg);
  return rc;
}
