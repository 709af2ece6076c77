/* plan.c -- planning and the serial executor.
 *
 * DESIGN: a request is (node, region).  The planner lists the chunks of the
 * node that meet the region, in FITS order (axis 0 fastest), and for each
 * asks the op which window of every input it needs; a window that misses its
 * input (or that the op declares unnecessary) is never read, and the op fills
 * NaN.  Inputs are themselves requests, resolved depth first: a FITS leaf
 * reads exactly its window by subset, a lazy node computes only the chunks
 * meeting that window.  Memory held at any time is therefore one output
 * destination plus, per level of the graph, one task's input windows, never
 * a whole image.  Ops flagged TSR__OP_SUBBOX compute only the part of a chunk
 * inside the request (their values do not depend on the chunk), others
 * compute the whole chunk into scratch and the request's part is copied out.
 *
 * With a chunk cache (run options' `cache`), the unit is always a whole
 * chunk with all its planes: it is looked up before it is computed, and
 * stored after, in whichever process computes it (tsr__run_chunk), so a
 * second request costs only decompression and a rerun after a crash
 * computes only what was not stored.
 *
 * Per-node run state (op->start, e.g. wcslib copies) is created lazily the
 * first time a node runs and released when the run ends, in the process that
 * runs it.  Cancellation is checked between tasks.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cache.h"
#include "internal.h"
#include "run.h"


int tsr__run_new_local(tsr_graph_t *g, const tsr_run_opts_t *opts, tsr__run_t **out) {
  tsr__run_t *run = tsr__calloc(g->ctx, 1, sizeof *run);
  tsr_run_opts_t dflt = TSR_RUN_OPTS_INIT;
  *out = NULL;
  if (run == NULL)
    return tsr__err(g->ctx, TSR_ENOMEM, "run: out of memory");
  run->g = g;
  run->ctx = g->ctx;
  run->opts = opts ? *opts : dflt;
  g->running++;
  *out = run;
  return 0;
}

int tsr__run_new(tsr_graph_t *g, const tsr_run_opts_t *opts, tsr__run_t **out) {
  tsr__run_t *run;
  long jobs = opts ? opts->jobs : 1;
  int rc;

  if ((jobs < 0 && jobs != TSR_JOBS_PER_CPU) || jobs > 4096)
    return tsr__err(g->ctx, TSR_EINVAL,
                    "run: jobs = %ld out of range [0, 4096] or TSR_JOBS_PER_CPU (-1); 0 and 1 "
                    "mean serial",
                    jobs);
  if (opts && (opts->retries < 0 || opts->retries > 100))
    return tsr__err(g->ctx, TSR_EINVAL, "run: retries = %d out of range [0, 100]", opts->retries);
  if (opts && !(opts->task_timeout_s >= 0))
    return tsr__err(g->ctx, TSR_EINVAL, "run: task timeout %g s must be >= 0 (0 = none)",
                    opts->task_timeout_s);
  if (opts && (opts->executor < TSR_EXECUTOR_DEFAULT || opts->executor > TSR_EXECUTOR_THREADS))
    return tsr__err(g->ctx, TSR_EINVAL,
                    "run: executor = %d; expected TSR_EXECUTOR_DEFAULT, _PROCESSES or _THREADS",
                    (int)opts->executor);
  if ((rc = tsr__run_new_local(g, opts, &run)) != 0)
    return rc;
  if (jobs == TSR_JOBS_PER_CPU) {
    jobs = sysconf(_SC_NPROCESSORS_ONLN);
    if (jobs < 1)
      jobs = 1;
  }
  /* Workers are forked at the first task for them: a request served from
   * the cache costs no fork. */
  /* The default is threads (bench/threads: three times the pool's speed
   * into memory, where results go straight into the caller's buffer instead
   * of through shared slots, and within 5% of it writing files), unless a
   * task timeout asks for workers that can be killed. */
  if (jobs > 1 && !(opts && opts->mpi_comm)) {
    tsr_executor_t ex = opts ? opts->executor : TSR_EXECUTOR_DEFAULT;
    if (ex == TSR_EXECUTOR_DEFAULT)
      ex = opts && opts->task_timeout_s > 0 ? TSR_EXECUTOR_PROCESSES : TSR_EXECUTOR_THREADS;
    if (ex == TSR_EXECUTOR_THREADS)
      run->threads = (int)jobs;
    else
      run->lazy_jobs = (int)jobs;
  }
  *out = run;
  return 0;
}

void tsr__run_free(tsr__run_t *run) {
  if (run == NULL)
    return;
  tsr__pool_stop(run->pool);
  for (int i = 0; i < run->n_unforked; i++)
    (void)madvise(run->unforked[i].p, run->unforked[i].bytes, MADV_DOFORK);
  /* Pool workers never free their runs, and a threads worker's run is part
   * of its caller's: this is the run that started it. */
  if (run->opts.cache && !run->worker)
    tsr__cache_run_end(run->opts.cache, run->ok ? run->ctx : NULL);
  tsr__scratch_release(run->ctx, &run->scratch);
  for (int p = 0; p <= TSR__MAX_PLANES; p++)
    tsr__free(run->ctx, run->bufs[p]);
  for (int i = run->n_states - 1; i >= 0; i--) {
    tsr_node_t *n = run->states[i].node;
    if (n->op->stop)
      n->op->stop(n, run->states[i].state);
  }
  tsr__free(run->ctx, run->states);
  run->g->running--;
  tsr__free(run->ctx, run);
}

int tsr__node_state(tsr__run_t *run, tsr_node_t *n, void **state) {
  int rc;
  for (int i = 0; i < run->n_states; i++)
    if (run->states[i].node == n) {
      *state = run->states[i].state;
      return 0;
    }
  *state = NULL;
  if (run->n_states == run->cap_states) {
    int cap = run->cap_states ? 2 * run->cap_states : 8;
    node_state_t *s = tsr__realloc(run->ctx, run->states, (size_t)cap * sizeof *s);
    if (s == NULL)
      return tsr__err(run->ctx, TSR_ENOMEM, "run: out of memory");
    run->states = s;
    run->cap_states = cap;
  }
  if (n->op->start && (rc = n->op->start(n, state)) != 0)
    return rc;
  run->states[run->n_states].node = n;
  run->states[run->n_states].state = *state;
  run->n_states++;
  return 0;
}

void tsr__run_set_request(tsr__run_t *run, int64_t total, const tsr_node_t *n,
                          const tsr_region_t *r) {
  tsr_region_t full;
  tsr__region_full(&full, n->ndim, n->shape);
  run->total = total;
  run->sparse = tsr_region_size(r) < tsr_region_size(&full) / 16;
}

void tsr__run_succeeded(tsr__run_t *run) { run->ok = true; }

/* The index range of chunks along each axis that meet `r`. */
static void chunk_span(const tsr_node_t *n, const tsr_region_t *r, int64_t lo[], int64_t hi[]) {
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    lo[a] = r->start[a] / n->chunk[a];
    hi[a] = (r->stop[a] + n->chunk[a] - 1) / n->chunk[a];
  }
}

int64_t tsr__run_count_tasks(tsr__run_t *run, tsr_node_t *n, const tsr_region_t *r) {
  int64_t lo[TSR_MAX_DIMS], hi[TSR_MAX_DIMS], total = 1;
  (void)run;
  n = n->owner;
  if (n->op->flags & TSR__OP_SOURCE)
    return 1;
  chunk_span(n, r, lo, hi);
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    total *= hi[a] - lo[a];
  return total;
}

void tsr__fill_nan(void *dst, tsr_dtype_t dt, const tsr_region_t *r, const int64_t *stride) {
  int64_t nx = r->stop[0] - r->start[0];
  for (int64_t w = 0; w < r->stop[3] - r->start[3]; w++)
    for (int64_t z = 0; z < r->stop[2] - r->start[2]; z++)
      for (int64_t y = 0; y < r->stop[1] - r->start[1]; y++) {
        size_t off = (size_t)(y * stride[1] + z * stride[2] + w * stride[3]);
        if (dt == TSR_F32) {
          float *p = (float *)dst + off;
          for (int64_t x = 0; x < nx; x++)
            p[x] = NAN;
        } else {
          double *p = (double *)dst + off;
          for (int64_t x = 0; x < nx; x++)
            p[x] = NAN;
        }
      }
}

void tsr__contiguous_strides(const tsr_region_t *r, int64_t stride[TSR_MAX_DIMS]) {
  stride[0] = 1;
  for (int a = 1; a < TSR_MAX_DIMS; a++)
    stride[a] = stride[a - 1] * (r->stop[a - 1] - r->start[a - 1]);
}

/* Copy box `sub` (absolute indices) from a buffer laid over region `from` with
 * strides sf into one laid over region `to` with strides st. */
void tsr__copy_box(void *dst, const tsr_region_t *to, const int64_t *st, const void *src,
                   const tsr_region_t *from, const int64_t *sf, const tsr_region_t *sub,
                   size_t esize) {
  int64_t nx = sub->stop[0] - sub->start[0];
  for (int64_t w = sub->start[3]; w < sub->stop[3]; w++)
    for (int64_t z = sub->start[2]; z < sub->stop[2]; z++)
      for (int64_t y = sub->start[1]; y < sub->stop[1]; y++) {
        int64_t od = (sub->start[0] - to->start[0]) + (y - to->start[1]) * st[1] +
                     (z - to->start[2]) * st[2] + (w - to->start[3]) * st[3];
        int64_t os = (sub->start[0] - from->start[0]) + (y - from->start[1]) * sf[1] +
                     (z - from->start[2]) * sf[2] + (w - from->start[3]) * sf[3];
        memcpy((char *)dst + (size_t)od * esize, (const char *)src + (size_t)os * esize,
               (size_t)nx * esize);
      }
}

static int run_owner(tsr__run_t *run, tsr_node_t *n, const tsr_region_t *region,
                     void *const *dst, const int64_t *stride, bool top);

static int compute_task(void *t) {
  tsr__task_t *task = t;
  return task->node->op->compute(task);
}

/* Compute one task: `sub` of owner node n into dst (laid over `dreg`).
 * Inputs that are planes of one owner over the same window (a
 * reprojection's data and footprint) are computed together, once. */
int tsr__run_task(tsr__run_t *run, tsr_node_t *n, void *state, const tsr_region_t *sub,
                    const tsr_region_t *dreg, void *const *dst, const int64_t *stride) {
  tsr_ctx_t *ctx = run->ctx;
  tsr__task_t t;
  tsr__window_t in_inline[TSR__INLINE_INPUTS];
  bool need_inline[TSR__INLINE_INPUTS];
  bool *need = need_inline, any_view = false, bus;
  int rc = 0;

  memset(&t, 0, sizeof t);
  t.ctx = ctx;
  t.node = n;
  t.state = state;
  t.sparse = run->sparse;
  t.out = *sub;
  /* Only a task writing into the caller's own blank destinations may skip
   * the blank: scratch, cache chunks and the pool's slots hold anything. */
  for (int p = 0; p < n->n_planes; p++)
    if (dst[p] != NULL) {
      t.dst_blank = dst[p] == run->blank[p];
      if (!t.dst_blank)
        break;
    }
  memcpy(t.stride, stride, sizeof t.stride);
  for (int p = 0; p < n->n_planes; p++) {
    if (dst[p] == NULL)
      continue;
    size_t off = tsr__task_offset(&t, sub->start[0] - dreg->start[0], sub->start[1] - dreg->start[1],
                                  sub->start[2] - dreg->start[2], sub->start[3] - dreg->start[3]);
    t.planes[p] = (char *)dst[p] + off * tsr_dtype_size(n->dtype);
  }
  t.n_in = n->n_inputs;
  t.in = in_inline;
  if (n->n_inputs > TSR__INLINE_INPUTS) {
    t.in = tsr__calloc(ctx, (size_t)n->n_inputs, sizeof *t.in);
    need = tsr__calloc(ctx, (size_t)n->n_inputs, sizeof *need);
    if (t.in == NULL || need == NULL) {
      rc = tsr__err(ctx, TSR_ENOMEM, "run: out of memory for %d inputs", n->n_inputs);
      goto out;
    }
  } else {
    memset(in_inline, 0, sizeof in_inline);
  }
  /* The windows first, then the reads, so that planes can be grouped. */
  for (int i = 0; i < n->n_inputs; i++) {
    tsr_node_t *in = n->inputs[i];
    tsr_region_t full;
    bool empty = false;

    t.in[i].node = in;
    t.in[i].data = NULL;
    need[i] = false;
    rc = n->op->input_region(n, state, i, sub, &t.in[i].win, &empty);
    if (rc != 0)
      goto out;
    tsr__region_full(&full, in->ndim, in->shape);
    need[i] = !empty && tsr__region_intersect(&t.in[i].win, &full, &t.in[i].win, in->ndim);
  }
  for (int i = 0; i < n->n_inputs; i++) {
    tsr_node_t *in = n->inputs[i];
    const tsr_region_t *win = &t.in[i].win;
    int64_t st[TSR_MAX_DIMS];
    void *pl[TSR__MAX_PLANES] = {0};

    if (!need[i] || t.in[i].data != NULL)
      continue;
    /* A source that can show the window in place spares the copy to an op
     * that reads it so. */
    if (n->op->takes_view && n->op->takes_view(n, i) && in->owner == in && in->op->view) {
      void *in_state;
      if ((rc = tsr__node_state(run, in, &in_state)) != 0)
        goto out;
      if (in->op->view(in, in_state, win, &t.in[i].data, t.in[i].stride, &t.in[i].big_endian)) {
        t.in[i].view = any_view = true;
        continue;
      }
    }
    tsr__contiguous_strides(win, st);
    /* Always a compact copy, even of caller memory: windows of odd widths
     * avoid the cache-set aliasing of power-of-two image rows, which makes
     * interpolation over a rotated footprint a third slower. */
    for (int k = i; k < n->n_inputs; k++) {
      tsr_node_t *o = n->inputs[k];
      if (!need[k] || t.in[k].data != NULL || o->owner != in->owner || pl[o->plane] != NULL ||
          memcmp(&t.in[k].win, win, sizeof *win) != 0)
        continue;
      pl[o->plane] = tsr__mallocarray(ctx, (size_t)tsr_region_size(win), tsr_dtype_size(o->dtype));
      if (pl[o->plane] == NULL) {
        rc = tsr__err(ctx, TSR_ENOMEM,
                      "run: out of memory for an input window of %" PRId64 " values",
                      tsr_region_size(win));
        goto out; /* those made so far are held by their inputs */
      }
      t.in[k].data = pl[o->plane];
      memcpy(t.in[k].stride, st, sizeof st);
    }
    if ((rc = run_owner(run, in->owner, win, pl, st, false)) != 0)
      goto out;
  }
  if (!any_view) {
    rc = n->op->compute(&t);
  } else if ((rc = tsr__sigbus_guard(compute_task, &t, &bus)) != 0 && bus) {
    int i = 0;
    while (!t.in[i].view)
      i++;
    rc = tsr__err(ctx, TSR_EIO, "run: %s, an input of %s, was truncated while it was read",
                  t.in[i].node->name, n->name);
  }
out:
  /* Each buffer is held by exactly one input; views by their source, which
   * keeps its file open for them until they are given back, also when the
   * task failed. */
  for (int i = 0; t.in && i < n->n_inputs; i++) {
    tsr_node_t *in = n->inputs[i];
    void *in_state;
    if (!t.in[i].view) {
      tsr__free(ctx, (void *)t.in[i].data);
    } else if (in->op->recheck && tsr__node_state(run, in, &in_state) == 0) {
      int r = in->op->recheck(in, in_state, rc == 0);
      rc = rc != 0 ? rc : r;
    }
  }
  if (t.in != in_inline)
    tsr__free(ctx, t.in);
  if (need != need_inline)
    tsr__free(ctx, need);
  return rc;
}

void tsr__scratch_release(tsr_ctx_t *ctx, tsr__scratch_t *s) {
  for (int p = 0; p < TSR__MAX_PLANES; p++) {
    tsr__free(ctx, s->p[p]);
    s->p[p] = NULL;
  }
  s->bytes = 0;
}

int tsr__run_chunk(tsr__run_t *run, tsr_node_t *n, const tsr_region_t *sub,
                   const tsr_region_t *dreg, void *const *dst, const int64_t *stride,
                   tsr__scratch_t *scratch) {
  tsr_ctx_t *ctx = run->ctx;
  tsr_cache_t *cache = run->opts.cache;
  tsr_region_t chunk;
  int64_t cst[TSR_MAX_DIMS];
  size_t es = tsr_dtype_size(n->dtype), need;
  void *planes[TSR__MAX_PLANES] = {0};
  void *state = NULL;
  int rc;

  if (run->chunk_hook)
    run->chunk_hook(run->chunk_hook_ud, n, sub);
  if (cache == NULL && (n->op->flags & TSR__OP_SUBBOX)) {
    if ((rc = tsr__node_state(run, n, &state)) != 0)
      return rc;
    return tsr__run_task(run, n, state, sub, dreg, dst, stride);
  }
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    chunk.start[a] = sub->start[a] / n->chunk[a] * n->chunk[a];
    chunk.stop[a] = chunk.start[a] + n->chunk[a];
    if (chunk.stop[a] > n->shape[a])
      chunk.stop[a] = n->shape[a];
  }
  /* The node's run state (wcslib copies, mapping set-up) is made only when
   * a chunk is computed: a request served from the cache never pays it. */
  if (cache && tsr__cache_get(cache, n, &chunk, sub, dreg, dst, stride))
    return 0;
  if ((rc = tsr__node_state(run, n, &state)) != 0)
    return rc;
  need = (size_t)tsr_region_size(&chunk) * es;
  if (scratch->bytes < need) {
    /* Sized for a full chunk of this node, so edge chunks reuse it. */
    int64_t full = 1;
    for (int a = 0; a < TSR_MAX_DIMS; a++)
      full *= n->chunk[a];
    tsr__scratch_release(ctx, scratch);
    scratch->bytes = (size_t)full * es > need ? (size_t)full * es : need;
  }
  /* The cache keeps every plane; without it only the planes asked for. */
  for (int p = 0; p < n->n_planes; p++) {
    if (cache == NULL && dst[p] == NULL)
      continue;
    if (scratch->p[p] == NULL && (scratch->p[p] = tsr__malloc(ctx, scratch->bytes)) == NULL)
      return tsr__err(ctx, TSR_ENOMEM, "run: out of memory for a chunk of %s", n->name);
    planes[p] = scratch->p[p];
  }
  tsr__contiguous_strides(&chunk, cst);
  rc = tsr__run_task(run, n, state, &chunk, &chunk, planes, cst);
  if (rc != 0)
    return rc;
  if (cache)
    tsr__cache_put(cache, n, &chunk, planes);
  for (int p = 0; p < n->n_planes; p++)
    if (dst[p])
      tsr__copy_box(dst[p], dreg, stride, planes[p], &chunk, cst, sub, es);
  return 0;
}

static int run_owner(tsr__run_t *run, tsr_node_t *n, const tsr_region_t *region,
                     void *const *dst, const int64_t *stride, bool top) {
  tsr_ctx_t *ctx = run->ctx;
  int64_t lo[TSR_MAX_DIMS], hi[TSR_MAX_DIMS], c[TSR_MAX_DIMS];
  tsr__scratch_t scratch = {{0}, 0};
  int rc;

  if (n->op->flags & TSR__OP_SOURCE) {
    void *state = NULL;
    if ((rc = tsr__node_state(run, n, &state)) != 0)
      return rc;
    rc = tsr__run_task(run, n, state, region, region, dst, stride);
    if (rc == 0 && top && (++run->done, run->opts.progress))
      run->opts.progress(run->opts.progress_ud, run->done, run->total);
    return rc;
  }
  chunk_span(n, region, lo, hi);
  memcpy(c, lo, sizeof c);
  for (;;) {
    tsr_region_t chunk, sub;
    for (int a = 0; a < TSR_MAX_DIMS; a++) {
      chunk.start[a] = c[a] * n->chunk[a];
      chunk.stop[a] = chunk.start[a] + n->chunk[a];
      if (chunk.stop[a] > n->shape[a])
        chunk.stop[a] = n->shape[a];
    }
    if (run->opts.cancel && *run->opts.cancel) {
      rc = tsr__err(ctx, TSR_ECANCELED, "run: canceled");
      goto out;
    }
    if (tsr__region_intersect(&chunk, region, &sub, n->ndim)) {
      rc = tsr__run_chunk(run, n, &sub, region, dst, stride, &scratch);
      if (rc != 0) {
        char where[128];
        tsr__region_format(&sub, n->ndim, where, sizeof where);
        tsr__err_prefix(ctx, "%s chunk %s", n->name, where);
        goto out;
      }
      if (top && (++run->done, run->opts.progress))
        run->opts.progress(run->opts.progress_ud, run->done, run->total);
    }
    if (!tsr__chunk_next(c, lo, hi))
      break;
  }
  rc = 0;
out:
  tsr__scratch_release(ctx, &scratch);
  return rc;
}

bool tsr__run_pooled(const tsr__run_t *run) {
  return run->mpi == NULL && (run->pool != NULL || run->lazy_jobs > 1);
}

bool tsr__run_parallel(const tsr__run_t *run) {
  return tsr__run_pooled(run) || (run->mpi == NULL && run->threads > 1);
}

bool tsr__run_async(const tsr__run_t *run) {
  return run->pool != NULL || run->lazy_jobs > 1 || run->mpi != NULL;
}

void *tsr__run_buffer(tsr__run_t *run, int i, size_t bytes) {
  if (run->buf_bytes[i] < bytes) {
    tsr__free(run->ctx, run->bufs[i]);
    run->buf_bytes[i] = 0;
    if ((run->bufs[i] = tsr__malloc(run->ctx, bytes)) == NULL)
      return NULL;
    run->buf_bytes[i] = bytes;
    tsr__advise_huge(run->bufs[i], bytes);
  }
  return run->bufs[i];
}

/* The threads executor over the chunks of owner n meeting a region: item
 * i is the i-th chunk in FITS order, computed by a thread's own run
 * straight into dst. */
typedef struct {
  tsr_node_t *n;
  const tsr_region_t *region;
  void *const *dst;
  const int64_t *stride;
  int64_t lo[TSR_MAX_DIMS], hi[TSR_MAX_DIMS];
} region_items_t;

static int region_item(tsr__run_t *run, void *ud, int64_t i) {
  const region_items_t *ri = ud;
  tsr_node_t *n = ri->n;
  tsr_region_t chunk, sub;
  int rc;
  for (int a = 0; a < TSR_MAX_DIMS; a++) {
    int64_t span = ri->hi[a] - ri->lo[a], c = ri->lo[a] + i % span;
    i /= span;
    chunk.start[a] = c * n->chunk[a];
    chunk.stop[a] = chunk.start[a] + n->chunk[a];
    if (chunk.stop[a] > n->shape[a])
      chunk.stop[a] = n->shape[a];
  }
  if (!tsr__region_intersect(&chunk, ri->region, &sub, n->ndim))
    return 0;
  rc = tsr__run_chunk(run, n, &sub, ri->region, ri->dst, ri->stride, &run->scratch);
  if (rc != 0 && rc != TSR_ECANCELED) {
    char where[128];
    tsr__region_format(&sub, n->ndim, where, sizeof where);
    tsr__err_prefix(run->ctx, "%s chunk %s", n->name, where);
  }
  return rc;
}

static int threads_region(tsr__run_t *run, tsr_node_t *n, const tsr_region_t *region,
                          void *const *dst, const int64_t *stride) {
  region_items_t ri = {n, region, dst, stride, {0}, {0}};
  int64_t count = 1;
  chunk_span(n, region, ri.lo, ri.hi);
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    count *= ri.hi[a] - ri.lo[a];
  return tsr__threads_run(run, run->threads, region_item, &ri, count, true);
}

/* Job items on threads: the job function is an item function. */
typedef struct {
  tsr__job_fn fn;
  const void *args;
} job_items_t;

static int job_item(tsr__run_t *run, void *ud, int64_t i) {
  const job_items_t *ji = ud;
  return ji->fn(run, ji->args, i);
}

/* Before the pool's first fork: the destination's pages are left out of
 * the workers (MADV_DONTFORK) until the run ends.  Workers never touch it
 * (results come back through shared slots), but shared with them every
 * page the parent then copies a result into would first be copied whole
 * (copy-on-write): 64 MB of page faults and copies for a 4096^2 float32
 * request, more than the workers saved.  Not when a source node of the
 * graph reads that memory (the workers need it). */
static void shield_from_fork(tsr__run_t *run, const tsr_node_t *n, const tsr_region_t *region,
                             void *const *dst, const int64_t *stride) {
  long page = sysconf(_SC_PAGESIZE);
  size_t bytes = tsr_dtype_size(n->dtype);
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    bytes += (size_t)((region->stop[a] - region->start[a] - 1) * stride[a]) * tsr_dtype_size(n->dtype);
  for (int pl = 0; pl < n->n_planes && page > 0; pl++) {
    uintptr_t lo = ((uintptr_t)dst[pl] + (uintptr_t)page - 1) / (uintptr_t)page * (uintptr_t)page;
    uintptr_t hi = ((uintptr_t)dst[pl] + bytes) / (uintptr_t)page * (uintptr_t)page;
    if (dst[pl] == NULL || hi <= lo || tsr__buffer_overlaps(run->g, dst[pl], bytes))
      continue;
    if (run->n_unforked < TSR__MAX_PLANES && madvise((void *)lo, hi - lo, MADV_DONTFORK) == 0) {
      run->unforked[run->n_unforked].p = (void *)lo;
      run->unforked[run->n_unforked++].bytes = hi - lo;
    }
  }
}

/* The pool for a first submission into dst, if it has none yet. */
static int ensure_pool(tsr__run_t *run, const tsr_node_t *n, const tsr_region_t *region,
                       void *const *dst, const int64_t *stride) {
  if (run->pool != NULL)
    return 0;
  shield_from_fork(run, n, region, dst, stride);
  return tsr__pool_start(run, run->lazy_jobs, &run->pool);
}

/* A pool run with a cache: the planner asks the cache before scheduling.
 * Chunks whose files exist are left out of the workers' batch and read
 * here, after the batch is handed out, so the workers compute the misses
 * while this process decompresses the hits (a file that turns out bad is
 * computed here).  A request that is all hits never touches the workers:
 * a cached region costs decompression only, on any executor. */
static int submit_cached(tsr__run_t *run, tsr_node_t *n, const tsr_region_t *region,
                         void *const *dst, const int64_t *stride, int64_t *ticket) {
  tsr_ctx_t *ctx = run->ctx;
  int64_t lo[TSR_MAX_DIMS], hi[TSR_MAX_DIMS], c[TSR_MAX_DIMS], count = 1, k, n_skip = 0;
  tsr__scratch_t scratch = {{0}, 0};
  uint8_t *skip = NULL;
  int rc = 0;

  chunk_span(n, region, lo, hi);
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    count *= hi[a] - lo[a];
  skip = tsr__calloc(ctx, (size_t)count, 1);
  if (skip == NULL)
    return tsr__err(ctx, TSR_ENOMEM, "run: out of memory planning %" PRId64 " chunks", count);
  /* Two passes over the chunk grid in FITS order, as the pool numbers it. */
  for (int pass = 0; pass < 2; pass++) {
    memcpy(c, lo, sizeof c);
    for (k = 0; k < count; k++) {
      tsr_region_t chunk, sub;
      for (int a = 0; a < TSR_MAX_DIMS; a++) {
        chunk.start[a] = c[a] * n->chunk[a];
        chunk.stop[a] = chunk.start[a] + n->chunk[a];
        if (chunk.stop[a] > n->shape[a])
          chunk.stop[a] = n->shape[a];
      }
      if (pass == 0) {
        skip[k] = tsr__cache_has(run->opts.cache, n, &chunk);
        n_skip += skip[k];
      } else if (skip[k] && tsr__region_intersect(&chunk, region, &sub, n->ndim)) {
        if (run->opts.cancel && *run->opts.cancel) {
          rc = tsr__err(ctx, TSR_ECANCELED, "run: canceled");
          goto out;
        }
        if ((rc = tsr__run_chunk(run, n, &sub, region, dst, stride, &scratch)) != 0) {
          char where[128];
          tsr__region_format(&sub, n->ndim, where, sizeof where);
          tsr__err_prefix(ctx, "%s chunk %s", n->name, where);
          goto out;
        }
        if ((++run->done, run->opts.progress))
          run->opts.progress(run->opts.progress_ud, run->done, run->total);
      }
      tsr__chunk_next(c, lo, hi);
    }
    if (pass == 0 && n_skip < count) {
      if ((rc = ensure_pool(run, n, region, dst, stride)) != 0)
        goto out;
      if ((rc = tsr__pool_submit(run->pool, n, region, dst, stride, skip, ticket)) != 0)
        goto out;
    }
  }
out:
  tsr__scratch_release(ctx, &scratch);
  tsr__free(ctx, skip);
  return rc;
}

int tsr__run_submit(tsr__run_t *run, tsr_node_t *n, const tsr_region_t *region,
                    void *const *dst, const int64_t *stride, int64_t *ticket) {
  *ticket = 0;
  if (run->mpi && !(n->op->flags & TSR__OP_SOURCE))
    return tsr__mpi_submit(run->mpi, n, region, dst, stride, ticket);
  if (run->threads > 1 && !(n->op->flags & TSR__OP_SOURCE))
    return threads_region(run, n, region, dst, stride); /* done on return */
  if ((run->pool || run->lazy_jobs > 1) && !(n->op->flags & TSR__OP_SOURCE)) {
    int rc;
    if (run->opts.cache)
      return submit_cached(run, n, region, dst, stride, ticket);
    if ((rc = ensure_pool(run, n, region, dst, stride)) != 0)
      return rc;
    return tsr__pool_submit(run->pool, n, region, dst, stride, NULL, ticket);
  }
  return run_owner(run, n, region, dst, stride, true);
}

int tsr__run_submit_jobs(tsr__run_t *run, tsr__job_fn fn, const void *args, size_t len,
                         int64_t n, bool last, const char *what, int64_t *ticket) {
  int rc;
  *ticket = 0;
  if (len > TSR__JOB_ARGS)
    return tsr__err(run->ctx, TSR_EINVAL, "run: %zu bytes of job arguments; at most %d", len,
                    TSR__JOB_ARGS);
  if (tsr__run_pooled(run)) {
    if (run->pool == NULL && (rc = tsr__pool_start(run, run->lazy_jobs, &run->pool)) != 0)
      return rc;
    return tsr__pool_submit_jobs(run->pool, fn, args, len, n, last, what, ticket);
  }
  if (run->threads > 1 && run->mpi == NULL) {
    job_items_t ji = {fn, args};
    return tsr__threads_run(run, run->threads, job_item, &ji, n, false);
  }
  for (int64_t i = 0; i < n; i++) {
    if (run->opts.cancel && *run->opts.cancel)
      return tsr__err(run->ctx, TSR_ECANCELED, "run: canceled");
    if ((rc = fn(run, args, i)) != 0)
      return rc;
  }
  return 0;
}

tsr_ctx_t *tsr__run_ctx(tsr__run_t *run) { return run->ctx; }

int tsr__run_wait(tsr__run_t *run, int64_t ticket) {
  if (ticket != 0 && run->mpi)
    return tsr__mpi_wait(run->mpi, ticket);
  return ticket != 0 ? tsr__pool_wait(run->pool, ticket) : 0;
}

int tsr__run_region(tsr__run_t *run, tsr_node_t *n, const tsr_region_t *region,
                    void *const *dst, const int64_t *stride) {
  /* Sources are one read: not worth a trip to a worker. */
  if ((tsr__run_parallel(run) || run->mpi) && !(n->op->flags & TSR__OP_SOURCE)) {
    int64_t ticket = 0;
    int rc = tsr__run_submit(run, n, region, dst, stride, &ticket);
    return rc != 0 ? rc : tsr__run_wait(run, ticket);
  }
  return run_owner(run, n, region, dst, stride, true);
}

/* Check a request against a node; on error set the message. */
static int check_request(tsr_graph_t *g, tsr_node_t *node, const tsr_region_t *region,
                         tsr_region_t *r) {
  char where[160];
  if (g->status != 0)
    return tsr__err(g->ctx, TSR_ESTATE, "compute: the graph has an error: %s", g->errmsg);
  if (node == NULL || node->graph != g)
    return tsr__err(g->ctx, TSR_EINVAL, "compute: node is NULL or from another graph");
  if (region == NULL) {
    tsr__region_full(r, node->ndim, node->shape);
    return 0;
  }
  *r = *region;
  for (int a = node->ndim; a < TSR_MAX_DIMS; a++)
    r->start[a] = 0, r->stop[a] = 1;
  if (!tsr__region_within(r, node->ndim, node->shape)) {
    tsr__region_format(r, node->ndim, where, sizeof where);
    if (tsr_region_size(r) == 0)
      return tsr__err(g->ctx, TSR_ERANGE, "compute: region %s of %s is empty", where, node->name);
    char shp[160];
    tsr_region_t full;
    tsr__region_full(&full, node->ndim, node->shape);
    tsr__region_format(&full, node->ndim, shp, sizeof shp);
    return tsr__err(g->ctx, TSR_ERANGE, "compute: region %s is outside %s, whose extent is %s",
                    where, node->name, shp);
  }
  return 0;
}

int tsr__check_request(tsr_graph_t *g, tsr_node_t *node, const tsr_region_t *region,
                       tsr_region_t *r) {
  return check_request(g, node, region, r);
}

/* tsr_compute and tsr_compute_planes: planes[p] of node's owner. */
static int compute_planes(tsr_graph_t *g, tsr_node_t *node, const tsr_region_t *r,
                          void *const *planes, const tsr_run_opts_t *opts) {
  tsr__run_t *run = NULL;
  tsr__mpi_t *mpi = NULL;
  int64_t stride[TSR_MAX_DIMS];
  int rc;

  {
    bool served;
    if ((rc = tsr__mpi_enter(g, opts, node, r, &mpi, &served)) != 0 || served)
      return rc;
  }
  if ((rc = tsr__run_new(g, opts, &run)) != 0) {
    tsr__mpi_close(mpi, rc);
    return rc;
  }
  if (mpi)
    tsr__mpi_attach(mpi, run);
  if (opts && opts->dst_blank)
    memcpy(run->blank, planes, sizeof run->blank);
  tsr__contiguous_strides(r, stride);
  tsr__run_set_request(run, tsr__run_count_tasks(run, node, r), node, r);
  rc = tsr__run_region(run, node->owner, r, planes, stride);
  if (rc == 0)
    tsr__run_succeeded(run);
  tsr__mpi_close(mpi, rc);
  tsr__run_free(run);
  return rc;
}

static int check_dst(tsr_graph_t *g, const tsr_node_t *node, const tsr_region_t *r,
                     const void *dst, size_t dst_bytes) {
  if (dst == NULL || dst_bytes < (size_t)tsr_region_size(r) * tsr_dtype_size(node->dtype))
    return tsr__err(g->ctx, TSR_EINVAL,
                    "compute: destination of %zu bytes is too small for %" PRId64
                    " values of %s",
                    dst_bytes, tsr_region_size(r), tsr_dtype_name(node->dtype));
  return 0;
}

int tsr_compute(tsr_graph_t *g, tsr_node_t *node, const tsr_region_t *region, void *dst,
                size_t dst_bytes, const tsr_run_opts_t *opts) {
  tsr_region_t r;
  void *planes[TSR__MAX_PLANES] = {0};
  int rc;

  tsr__api_check(g != NULL, "tsr_compute: graph is NULL");
  if ((rc = check_request(g, node, region, &r)) != 0)
    return rc;
  if ((rc = check_dst(g, node, &r, dst, dst_bytes)) != 0)
    return rc;
  planes[node->plane] = dst;
  return compute_planes(g, node, &r, planes, opts);
}

int tsr_compute_planes(tsr_graph_t *g, int n, tsr_node_t *const *nodes,
                       const tsr_region_t *region, void *const *dsts, size_t dst_bytes,
                       const tsr_run_opts_t *opts) {
  tsr_region_t r;
  void *planes[TSR__MAX_PLANES] = {0};
  int rc;

  tsr__api_check(g != NULL, "tsr_compute_planes: graph is NULL");
  if (n < 1 || nodes == NULL || dsts == NULL)
    return tsr__err(g->ctx, TSR_EINVAL, "compute_planes: %d nodes; expected at least 1", n);
  if ((rc = check_request(g, nodes[0], region, &r)) != 0)
    return rc;
  for (int i = 0; i < n; i++) {
    if (nodes[i] == NULL || nodes[i]->graph != g)
      return tsr__err(g->ctx, TSR_EINVAL, "compute_planes: node %d is NULL or from another graph",
                      i + 1);
    if (nodes[i]->owner != nodes[0]->owner)
      return tsr__err(g->ctx, TSR_EINVAL,
                      "compute_planes: node %d (%s) is not a plane of %s; expected the node and "
                      "its tsr_footprint",
                      i + 1, nodes[i]->name, nodes[0]->owner->name);
    if (planes[nodes[i]->plane] != NULL)
      return tsr__err(g->ctx, TSR_EINVAL, "compute_planes: node %d (%s) is asked for twice", i + 1,
                      nodes[i]->name);
    if ((rc = check_dst(g, nodes[i], &r, dsts[i], dst_bytes)) != 0)
      return rc;
    planes[nodes[i]->plane] = dsts[i];
  }
  return compute_planes(g, nodes[0], &r, planes, opts);
}
