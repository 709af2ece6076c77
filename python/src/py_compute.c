/* py_compute.c -- running graphs from Python: compute, write_fits,
 * match_background, with the GIL released and Ctrl-C honoured.
 *
 * DESIGN: the engine runs without the GIL.  Python delivers signals to the
 * main thread only, and only when it runs bytecode or PyErr_CheckSignals:
 * so a computation asked for by the main thread runs on a helper thread
 * while the main thread waits on a condition variable, waking every 20 ms
 * to check for signals (and a CancelToken).  A signal whose handler raises
 * (KeyboardInterrupt) sets the run's cancel flag; the engine stops between
 * blocks, its threads or worker processes end, and the exception is raised
 * once the run has returned -- nothing is left running.  Other threads (a
 * dask worker's) compute on their own thread with the GIL released and
 * the token's flag as the run's.  The library keeps a run's error message
 * with the thread that ran it, so the running thread copies it out.
 */
#include "py_core.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static unsigned long main_ident;   /* threading.main_thread().ident, read at first use */

static int is_main_thread(void) {
  if (main_ident == 0) {
    PyObject *th = PyImport_ImportModule("threading"), *mt = NULL, *id = NULL;
    if (th && (mt = PyObject_CallMethod(th, "main_thread", NULL)) &&
        (id = PyObject_GetAttrString(mt, "ident")))
      main_ident = PyLong_AsUnsignedLong(id);
    Py_XDECREF(th);
    Py_XDECREF(mt);
    Py_XDECREF(id);
    PyErr_Clear();
  }
  return PyThread_get_thread_ident() == main_ident;
}

/* ------------------------------------------------------------------ */
/* Releasing the GIL, with signals                                    */

typedef struct {
  int (*fn)(void *);
  void *arg;
  int rc, done;
  pthread_mutex_t mu;
  pthread_cond_t cv;
} helper_t;

static void *helper_main(void *p) {
  helper_t *h = p;
  int rc = h->fn(h->arg);
  pthread_mutex_lock(&h->mu);
  h->rc = rc;
  h->done = 1;
  pthread_cond_signal(&h->cv);
  pthread_mutex_unlock(&h->mu);
  return NULL;
}

int tsrpy_run_released(int (*fn)(void *), void *arg, volatile int *cancel,
                       volatile int *token_flag, int *interrupted) {
  helper_t h;
  pthread_t th;
  pthread_condattr_t ca;
  int rc;

  *interrupted = 0;
  if (!is_main_thread()) {
    Py_BEGIN_ALLOW_THREADS
    rc = fn(arg);
    Py_END_ALLOW_THREADS
    return rc;
  }
  memset(&h, 0, sizeof h);
  h.fn = fn, h.arg = arg;
  pthread_mutex_init(&h.mu, NULL);
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&h.cv, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&th, NULL, helper_main, &h) != 0) {
    /* No thread to spare: run here, without signal checks. */
    pthread_cond_destroy(&h.cv);
    pthread_mutex_destroy(&h.mu);
    Py_BEGIN_ALLOW_THREADS
    rc = fn(arg);
    Py_END_ALLOW_THREADS
    return rc;
  }
  Py_BEGIN_ALLOW_THREADS
  pthread_mutex_lock(&h.mu);
  while (!h.done) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += 20 * 1000 * 1000;
    if (ts.tv_nsec >= 1000000000L)
      ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&h.cv, &h.mu, &ts);
    if (h.done || *cancel)
      continue;
    pthread_mutex_unlock(&h.mu);
    if (token_flag && *token_flag)
      *cancel = 1;
    Py_BLOCK_THREADS
    if (PyErr_CheckSignals() < 0) {
      /* The handler raised: stop the run and raise once it has ended. */
      *interrupted = 1;
      *cancel = 1;
    }
    Py_UNBLOCK_THREADS
    pthread_mutex_lock(&h.mu);
  }
  pthread_mutex_unlock(&h.mu);
  pthread_join(th, NULL);
  Py_END_ALLOW_THREADS
  pthread_cond_destroy(&h.cv);
  pthread_mutex_destroy(&h.mu);
  return h.rc;
}

/* ------------------------------------------------------------------ */
/* Run options                                                        */

static PyObject *cache_dirs;   /* dict: directory -> Cache, opened once per process */

PyObject *tsrpy_cache_for_dir(PyObject *dir) {
  PyObject *c;
  if (cache_dirs == NULL && (cache_dirs = PyDict_New()) == NULL)
    return NULL;
  if ((c = PyDict_GetItemWithError(cache_dirs, dir)) != NULL) {
    Py_INCREF(c);
    return c;
  }
  if (PyErr_Occurred())
    return NULL;
  c = PyObject_CallOneArg((PyObject *)&tsrpy_CacheType, dir);
  if (c && PyDict_SetItem(cache_dirs, dir, c) < 0)
    Py_CLEAR(c);
  return c;
}

static void progress_cb(void *ud, int64_t done, int64_t total) {
  tsrpy_run_t *run = ud;
  PyGILState_STATE gs = PyGILState_Ensure();
  if (run->pending_progress == NULL) {
    PyObject *r = PyObject_CallFunction(run->progress, "LL", (long long)done, (long long)total);
    if (r == NULL) {
      PyObject *type, *value, *tb;
      PyErr_Fetch(&type, &value, &tb);
      PyErr_NormalizeException(&type, &value, &tb);
      if (value && tb)
        PyException_SetTraceback(value, tb);
      run->pending_progress = value;
      Py_XDECREF(type);
      Py_XDECREF(tb);
      /* Stop the run: its flag is the one the engine reads. */
      if (run->opts.cancel)
        *run->opts.cancel = 1;
    }
    Py_XDECREF(r);
  }
  PyGILState_Release(gs);
}

int tsrpy_run_prepare(tsrpy_run_t *run, tsrpy_graph_t *g, PyObject *jobs, PyObject *executor,
                      PyObject *cache, PyObject *cancel, PyObject *progress) {
  tsr_run_opts_t dflt = TSR_RUN_OPTS_INIT;
  memset(run, 0, sizeof *run);
  run->opts = dflt;
  if (jobs && jobs != Py_None) {
    long j = PyLong_AsLong(jobs);
    if (j == -1 && PyErr_Occurred())
      return -1;
    if (j < 0 || j > 4096) {
      PyErr_Format(PyExc_ValueError, "jobs = %ld out of range [0, 4096] (0 = one per CPU)", j);
      return -1;
    }
    /* Python's jobs=0 is one per CPU (its documented meaning); the C
     * library's 0 is serial. */
    run->opts.jobs = j == 0 ? TSR_JOBS_PER_CPU : (int)j;
  }
  if (executor && executor != Py_None) {
    const char *e = PyUnicode_Check(executor) ? PyUnicode_AsUTF8(executor) : NULL;
    if (e && strcmp(e, "threads") == 0)
      run->opts.executor = TSR_EXECUTOR_THREADS;
    else if (e && strcmp(e, "processes") == 0)
      run->opts.executor = TSR_EXECUTOR_PROCESSES;
    else {
      PyErr_Format(PyExc_ValueError, "executor %R; expected None, 'threads' or 'processes'", executor);
      return -1;
    }
    if (run->opts.executor == TSR_EXECUTOR_PROCESSES && g->py_callbacks && run->opts.jobs != 1) {
      PyErr_SetString(PyExc_ValueError,
                      "executor 'processes': the graph reads a source through Python (a dask "
                      "array or a callable), which forked workers cannot call; use 'threads'");
      return -1;
    }
  }
  if (cache == NULL || cache == Py_None) {
    const char *env = getenv("TESSERA_CACHE");
    if (env && env[0]) {
      PyObject *d = PyUnicode_DecodeFSDefault(env);
      cache = d ? tsrpy_cache_for_dir(d) : NULL;
      Py_XDECREF(d);
      if (cache == NULL)
        return -1;
      run->cache = (tsrpy_cache_t *)cache; /* the new reference */
    }
  } else if (cache == Py_False) {
    /* none */
  } else if (PyObject_TypeCheck(cache, &tsrpy_CacheType)) {
    Py_INCREF(cache);
    run->cache = (tsrpy_cache_t *)cache;
  } else {
    PyObject *d = PyOS_FSPath(cache);
    PyObject *c = d ? tsrpy_cache_for_dir(d) : NULL;
    Py_XDECREF(d);
    if (c == NULL)
      return -1;
    run->cache = (tsrpy_cache_t *)c;
  }
  if (run->cache) {
    if (run->cache->cache == NULL) {
      PyErr_SetString(PyExc_ValueError, "cache: the handle is closed");
      Py_CLEAR(run->cache);
      return -1;
    }
    run->cache->n_users++;
    run->opts.cache = run->cache->cache;
  }
  if (cancel && cancel != Py_None) {
    if (!PyObject_TypeCheck(cancel, &tsrpy_CancelType)) {
      PyErr_Format(PyExc_TypeError, "cancel: expected a CancelToken, got %.80s",
                   Py_TYPE(cancel)->tp_name);
      tsrpy_run_done(run);
      return -1;
    }
    Py_INCREF(cancel);
    run->token = (tsrpy_cancel_t *)cancel;
  }
  if (progress && progress != Py_None) {
    if (!PyCallable_Check(progress)) {
      PyErr_SetString(PyExc_TypeError, "progress: expected a callable(done, total)");
      tsrpy_run_done(run);
      return -1;
    }
    Py_INCREF(progress);
    run->progress = progress;
    run->opts.progress = progress_cb;
    run->opts.progress_ud = run;
  }
  return 0;
}

void tsrpy_run_done(tsrpy_run_t *run) {
  if (run->cache)
    run->cache->n_users--;
  Py_CLEAR(run->cache);
  Py_CLEAR(run->token);
  Py_CLEAR(run->progress);
  Py_CLEAR(run->pending_progress);
}

PyObject *tsrpy_run_raise(tsrpy_graph_t *g, tsrpy_run_t *run, int rc, int interrupted,
                          const char *msg) {
  if (interrupted && PyErr_Occurred())
    return NULL;
  if (g->pending || run->pending_progress) {
    PyObject *exc = g->pending ? g->pending : run->pending_progress;
    PyObject *note = PyUnicode_FromFormat("tessera: %s", msg);
    if (g->pending)
      g->pending = NULL;
    else
      run->pending_progress = NULL;
    if (note) {
      PyObject *r = PyObject_CallMethod(exc, "add_note", "O", note);
      Py_XDECREF(r);
      Py_DECREF(note);
      PyErr_Clear();
    }
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
    return NULL;
  }
  return tsrpy_raise(rc, msg, NULL);
}

/* Run fn(job) over graph g with run's options, the GIL released; `msg` is
 * the job's copy of the run's message.  0, or -1 with the exception set. */
static int run_on_graph(tsrpy_graph_t *g, tsrpy_run_t *run, volatile int *flag,
                        int (*fn)(void *), void *job, const char *msg) {
  int rc, interrupted = 0;
  /* A token cancelled before the run stops it at once, not at the first
   * signal check. */
  *flag = run->token ? run->token->flag : 0;
  run->opts.cancel = flag;
  if (run->token && !is_main_thread())
    run->opts.cancel = &run->token->flag;
  g->running++;
  rc = tsrpy_run_released(fn, job, run->opts.cancel, run->token ? &run->token->flag : NULL,
                          &interrupted);
  g->running--;
  if (rc != 0 || interrupted || run->pending_progress) {
    tsrpy_run_raise(g, run, rc ? rc : TSR_ECANCELED, interrupted, msg);
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* compute                                                            */

typedef struct {
  tsr_graph_t *g;
  int n;
  tsr_node_t *nodes[2];
  tsr_region_t region;
  void *dst[2];
  size_t bytes;
  const tsr_run_opts_t *opts;
  char msg[1024];              /* the run's message, from the thread that ran it */
} compute_job_t;

static int compute_job(void *p) {
  compute_job_t *j = p;
  int rc = j->n == 1 ? tsr_compute(j->g, j->nodes[0], &j->region, j->dst[0], j->bytes, j->opts)
                     : tsr_compute_planes(j->g, j->n, j->nodes, &j->region, j->dst, j->bytes,
                                          j->opts);
  if (rc != 0)
    snprintf(j->msg, sizeof j->msg, "%s", tsr_errmsg(tsrpy_ctx));
  return rc;
}

static void blank_capsule_free(PyObject *cap) {
  tsr_blank_free(PyCapsule_GetPointer(cap, "tessera.blank"));
}

/* A new C-ordered array of `value` in tsr_blank_alloc's memory, which a
 * capsule (its base) unmaps with the array. */
static PyArrayObject *blank_array(int nd, const npy_intp *dims, int tn, tsr_dtype_t dt,
                                  double value) {
  npy_intp size = 1;
  PyArrayObject *a;
  PyObject *cap;
  void *p;
  int rc;
  for (int k = 0; k < nd; k++)
    size *= dims[k];
  Py_BEGIN_ALLOW_THREADS
  rc = tsr_blank_alloc(tsrpy_ctx, (size_t)size, dt, value, &p);
  Py_END_ALLOW_THREADS
  if (rc != 0)
    return (PyArrayObject *)tsrpy_raise(rc, tsr_errmsg(tsrpy_ctx), NULL);
  if ((cap = PyCapsule_New(p, "tessera.blank", blank_capsule_free)) == NULL) {
    tsr_blank_free(p);
    return NULL;
  }
  a = (PyArrayObject *)PyArray_New(&PyArray_Type, nd, (npy_intp *)dims, tn, NULL, p, 0,
                                   NPY_ARRAY_CARRAY, NULL);
  if (a == NULL || PyArray_SetBaseObject(a, cap) < 0) { /* steals cap, also when it fails */
    Py_XDECREF(a);
    if (a == NULL)
      Py_DECREF(cap);
    return NULL;
  }
  return a;
}

/* The arrays to compute into: the caller's when they fit (dtype, C order,
 * alignment, writable), else new ones copied into the caller's after; new
 * ones are blank arrays of blank[i] when `blank` is a sequence (no out). */
static int out_arrays(PyObject *outobj, PyObject *blank, int n, tsr_node_t *const *nodes, int nd,
                      const npy_intp *dims, PyArrayObject **user, PyArrayObject **tmp) {
  PyObject *t = NULL, *b = NULL;
  for (int i = 0; i < n; i++)
    user[i] = tmp[i] = NULL;
  if (blank && blank != Py_None) {
    if (outobj && outobj != Py_None) {
      PyErr_SetString(PyExc_ValueError, "compute: blank is for new arrays; not with out");
      return -1;
    }
    if ((b = PySequence_Tuple(blank)) == NULL)
      return -1;
    if (PyTuple_GET_SIZE(b) != n) {
      PyErr_Format(PyExc_ValueError, "compute: %zd blank values for %d nodes",
                   PyTuple_GET_SIZE(b), n);
      Py_DECREF(b);
      return -1;
    }
  }
  if (outobj && outobj != Py_None) {
    if (n == 1 && PyArray_Check(outobj)) {
      t = PyTuple_Pack(1, outobj);
    } else {
      t = PySequence_Tuple(outobj);
    }
    if (t == NULL)
      return -1;
    if (PyTuple_GET_SIZE(t) != n) {
      PyErr_Format(PyExc_ValueError, "compute: %zd output arrays for %d nodes", PyTuple_GET_SIZE(t), n);
      Py_DECREF(t);
      return -1;
    }
  }
  for (int i = 0; i < n; i++) {
    int tn = tsr_node_dtype(nodes[i]) == TSR_F64 ? NPY_FLOAT64 : NPY_FLOAT32;
    PyObject *o = t ? PyTuple_GET_ITEM(t, i) : Py_None;
    if (o != Py_None) {
      PyArrayObject *a;
      npy_intp size = 1;
      if (!PyArray_Check(o)) {
        PyErr_Format(PyExc_TypeError, "compute: out must be a numpy array, got %.80s",
                     Py_TYPE(o)->tp_name);
        goto fail;
      }
      a = (PyArrayObject *)o;
      for (int k = 0; k < nd; k++)
        size *= dims[k];
      if (PyArray_SIZE(a) != size ||
          (PyArray_NDIM(a) == nd && memcmp(PyArray_DIMS(a), dims, sizeof(npy_intp) * (size_t)nd))) {
        PyObject *want = PyTuple_New(nd);
        for (int k = 0; want && k < nd; k++)
          PyTuple_SET_ITEM(want, k, PyLong_FromSsize_t(dims[k]));
        PyErr_Format(PyExc_ValueError, "compute: out has shape %R; the region has shape %R",
                     PyObject_GetAttrString(o, "shape"), want);
        Py_XDECREF(want);
        goto fail;
      }
      if (!PyArray_ISWRITEABLE(a)) {
        PyErr_SetString(PyExc_ValueError, "compute: out is read-only");
        goto fail;
      }
      Py_INCREF(a);
      user[i] = a;
      if (PyArray_TYPE(a) == tn && PyArray_IS_C_CONTIGUOUS(a) && PyArray_ISALIGNED(a) &&
          PyArray_ISNBO(PyArray_DESCR(a)->byteorder))
        continue;
    }
    if (b) {
      double v = PyFloat_AsDouble(PyTuple_GET_ITEM(b, i));
      if (v == -1 && PyErr_Occurred())
        goto fail;
      tmp[i] = blank_array(nd, dims, tn, tsr_node_dtype(nodes[i]), v);
    } else {
      tmp[i] = (PyArrayObject *)PyArray_SimpleNew(nd, (npy_intp *)dims, tn);
    }
    if (tmp[i] == NULL)
      goto fail;
  }
  Py_XDECREF(t);
  Py_XDECREF(b);
  return 0;
fail:
  Py_XDECREF(t);
  Py_XDECREF(b);
  for (int i = 0; i < n; i++) {
    Py_CLEAR(user[i]);
    Py_CLEAR(tmp[i]);
  }
  return -1;
}

PyObject *tsrpy_graph_compute(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"nodes", "region", "out", "jobs", "executor", "cache", "cancel",
                           "progress", "blank", NULL};
  PyObject *nodesobj, *regionobj = Py_None, *outobj = Py_None, *jobs = NULL, *executor = NULL;
  PyObject *cache = NULL, *cancel = NULL, *progress = NULL, *res = NULL, *nodes_t = NULL;
  PyObject *blank = Py_None;
  PyArrayObject *user[2] = {NULL, NULL}, *tmp[2] = {NULL, NULL};
  tsrpy_run_t run;
  compute_job_t job;
  npy_intp dims[TSR_MAX_DIMS];
  volatile int flag = 0;
  int nd, rc, single;

  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OO$OOOOOO:compute", kwlist, &nodesobj, &regionobj,
                                   &outobj, &jobs, &executor, &cache, &cancel, &progress, &blank))
    return NULL;
  memset(&job, 0, sizeof job);
  single = PyObject_TypeCheck(nodesobj, &tsrpy_NodeType);
  nodes_t = single ? PyTuple_Pack(1, nodesobj) : PySequence_Tuple(nodesobj);
  if (nodes_t == NULL)
    return NULL;
  job.n = (int)PyTuple_GET_SIZE(nodes_t);
  if (job.n < 1 || job.n > 2) {
    Py_DECREF(nodes_t);
    return PyErr_Format(PyExc_ValueError, "compute: %d nodes; expected a node, or a node and its "
                        "footprint", job.n);
  }
  for (int i = 0; i < job.n; i++) {
    PyObject *o = PyTuple_GET_ITEM(nodes_t, i);
    if (!PyObject_TypeCheck(o, &tsrpy_NodeType) || ((tsrpy_node_t *)o)->graph != self) {
      Py_DECREF(nodes_t);
      return PyErr_Format(PyExc_TypeError, "compute: expected nodes of this graph");
    }
    job.nodes[i] = ((tsrpy_node_t *)o)->node;
  }
  if (tsr_graph_status(self->g) != 0) {
    Py_DECREF(nodes_t);
    return tsrpy_raise(TSR_ESTATE, tsr_graph_errmsg(self->g), NULL);
  }
  if (tsrpy_region_from_py(job.nodes[0], regionobj, &job.region) < 0) {
    Py_DECREF(nodes_t);
    return NULL;
  }
  nd = tsr_node_ndim(job.nodes[0]);
  for (int i = 0; i < nd; i++)
    dims[i] = (npy_intp)(job.region.stop[nd - 1 - i] - job.region.start[nd - 1 - i]);
  if (out_arrays(outobj, blank, job.n, job.nodes, nd, dims, user, tmp) < 0) {
    Py_DECREF(nodes_t);
    return NULL;
  }
  if (tsrpy_run_prepare(&run, self, jobs, executor, cache, cancel, progress) < 0)
    goto out;
  run.opts.dst_blank = blank != Py_None;
  for (int i = 0; i < job.n; i++) {
    PyArrayObject *a = tmp[i] ? tmp[i] : user[i];
    job.dst[i] = PyArray_DATA(a);
    job.bytes = (size_t)PyArray_NBYTES(a);
  }
  job.g = self->g;
  job.opts = &run.opts;
  rc = run_on_graph(self, &run, &flag, compute_job, &job, job.msg);
  tsrpy_run_done(&run);
  if (rc != 0)
    goto out;
  for (int i = 0; i < job.n; i++)
    if (user[i] && tmp[i] && PyArray_CopyInto(user[i], tmp[i]) < 0)
      goto out;
  if (single) {
    res = (PyObject *)(user[0] ? user[0] : tmp[0]);
    Py_INCREF(res);
  } else {
    res = PyTuple_Pack(2, user[0] ? (PyObject *)user[0] : (PyObject *)tmp[0],
                       user[1] ? (PyObject *)user[1] : (PyObject *)tmp[1]);
  }
out:
  for (int i = 0; i < 2; i++) {
    Py_XDECREF(user[i]);
    Py_XDECREF(tmp[i]);
  }
  Py_DECREF(nodes_t);
  return res;
}

/* ------------------------------------------------------------------ */
/* write_fits                                                         */

typedef struct {
  tsr_graph_t *g;
  int n;
  tsr_node_t **nodes;
  const char **paths;
  const tsr_region_t *region;
  const tsr_run_opts_t *opts;
  char msg[1024];
} write_job_t;

static int write_job(void *p) {
  write_job_t *j = p;
  int rc = tsr_write_fits(j->g, j->n, j->nodes, j->paths, j->region, j->opts);
  if (rc != 0)
    snprintf(j->msg, sizeof j->msg, "%s", tsr_errmsg(tsrpy_ctx));
  return rc;
}

PyObject *tsrpy_graph_write_fits(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"nodes", "paths", "region", "jobs", "executor", "cache", "cancel",
                           "progress", NULL};
  PyObject *nodesobj, *pathsobj, *regionobj = Py_None, *jobs = NULL, *executor = NULL;
  PyObject *cache = NULL, *cancel = NULL, *progress = NULL, *nt = NULL, *pt = NULL, *res = NULL;
  PyObject **pbytes = NULL;
  tsrpy_run_t run;
  write_job_t job;
  tsr_region_t region;
  volatile int flag = 0;
  int n, prepared = 0;

  if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O$OOOOO:write_fits", kwlist, &nodesobj, &pathsobj,
                                   &regionobj, &jobs, &executor, &cache, &cancel, &progress))
    return NULL;
  memset(&job, 0, sizeof job);
  nt = PyObject_TypeCheck(nodesobj, &tsrpy_NodeType) ? PyTuple_Pack(1, nodesobj)
                                                      : PySequence_Tuple(nodesobj);
  pt = PyUnicode_Check(pathsobj) || PyBytes_Check(pathsobj) || !PySequence_Check(pathsobj)
           ? PyTuple_Pack(1, pathsobj)
           : PySequence_Tuple(pathsobj);
  if (nt == NULL || pt == NULL)
    goto out;
  n = (int)PyTuple_GET_SIZE(nt);
  if (n < 1 || PyTuple_GET_SIZE(pt) != n) {
    PyErr_Format(PyExc_ValueError, "write_fits: %d nodes and %zd paths; expected one path per node",
                 n, PyTuple_GET_SIZE(pt));
    goto out;
  }
  job.nodes = PyMem_Calloc((size_t)n, sizeof *job.nodes);
  job.paths = PyMem_Calloc((size_t)n, sizeof *job.paths);
  pbytes = PyMem_Calloc((size_t)n, sizeof *pbytes);
  if (!job.nodes || !job.paths || !pbytes) {
    PyErr_NoMemory();
    goto out;
  }
  job.n = n;
  for (int i = 0; i < n; i++) {
    PyObject *o = PyTuple_GET_ITEM(nt, i);
    if (!PyObject_TypeCheck(o, &tsrpy_NodeType) || ((tsrpy_node_t *)o)->graph != self) {
      PyErr_SetString(PyExc_TypeError, "write_fits: expected nodes of this graph");
      goto out;
    }
    job.nodes[i] = ((tsrpy_node_t *)o)->node;
    if (!PyUnicode_FSConverter(PyTuple_GET_ITEM(pt, i), &pbytes[i]))
      goto out;
    job.paths[i] = PyBytes_AS_STRING(pbytes[i]);
  }
  if (tsrpy_region_from_py(job.nodes[0], regionobj, &region) < 0)
    goto out;
  if (tsrpy_run_prepare(&run, self, jobs, executor, cache, cancel, progress) < 0)
    goto out;
  prepared = 1;
  job.g = self->g;
  job.region = &region;
  job.opts = &run.opts;
  if (run_on_graph(self, &run, &flag, write_job, &job, job.msg) < 0)
    goto out;
  res = Py_None;
  Py_INCREF(res);
out:
  if (prepared)
    tsrpy_run_done(&run);
  for (int i = 0; pbytes && i < job.n; i++)
    Py_XDECREF(pbytes[i]);
  PyMem_Free(pbytes);
  PyMem_Free(job.nodes);
  PyMem_Free((void *)job.paths);
  Py_XDECREF(nt);
  Py_XDECREF(pt);
  return res;
}

/* ------------------------------------------------------------------ */
/* write_hips                                                         */

typedef struct {
  tsr_graph_t *g;
  int n;
  tsr_node_t **nodes;
  const char *dir;
  const tsr_hips_opts_t *opts;
  tsr_hips_report_t report;
  char msg[1024];
} hips_job_t;

static int hips_job(void *p) {
  hips_job_t *j = p;
  int rc = tsr_write_hips(j->g, j->n, j->nodes, j->dir, j->opts, &j->report);
  if (rc != 0)
    snprintf(j->msg, sizeof j->msg, "%s", tsr_errmsg(tsrpy_ctx));
  return rc;
}

/* The PNG stretch by name (the CLI's --stretch names). */
static int stretch_parse(const char *s) {
  static const char *names[] = {"linear", "sqrt", "log", "asinh"};
  for (int k = 0; k < 4; k++)
    if (strcmp(s, names[k]) == 0)
      return TSR_STRETCH_LINEAR + k;
  return -1;
}

PyObject *tsrpy_graph_write_hips(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"nodes", "directory", "level", "tile_width", "frame", "order",
                           "mapping_tolerance", "combine", "formats", "moc", "title", "cut",
                           "stretch", "jobs", "executor", "cache", "cancel", "progress", NULL};
  PyObject *nodesobj, *dirobj, *cutobj = Py_None, *jobs = NULL, *executor = NULL, *cache = NULL;
  PyObject *cancel = NULL, *progress = NULL, *nt = NULL, *dirbytes = NULL, *res = NULL;
  const char *frame = NULL, *combine = "mean", *formats = "fits,png", *title = NULL;
  const char *stretch = "linear";
  tsr_hips_opts_t o = TSR_HIPS_OPTS_INIT;
  int order = TSR_ORDER_BILINEAR, moc = 1, n, prepared = 0, k;
  tsrpy_run_t run;
  hips_job_t job;
  volatile int flag = 0;

  if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|$iizidsspzOsOOOOO:write_hips", kwlist, &nodesobj,
                                   &dirobj, &o.level, &o.tile_width, &frame, &order,
                                   &o.mapping_tolerance, &combine, &formats, &moc, &title, &cutobj,
                                   &stretch, &jobs, &executor, &cache, &cancel, &progress))
    return NULL;
  memset(&job, 0, sizeof job);
  /* The library checks ranges and says what it expected; names are
   * translated here. */
  o.frame = frame;
  o.order = (tsr_order_t)order;
  o.moc = moc;
  o.title = title;
  if ((k = tsr_combine_parse(combine)) < 0) {
    return PyErr_Format(PyExc_ValueError, "write_hips: combine '%s'; expected mean, sum, first, "
                        "last, min, max or median", combine);
  }
  o.combine = (tsr_combine_t)k;
  if (strcmp(formats, "fits") == 0)
    o.formats = TSR_HIPS_FITS;
  else if (strcmp(formats, "fits,png") == 0 || strcmp(formats, "png,fits") == 0)
    o.formats = TSR_HIPS_FITS | TSR_HIPS_PNG;
  else
    return PyErr_Format(PyExc_ValueError, "write_hips: formats '%s'; expected 'fits' or "
                        "'fits,png' (FITS tiles are always written: lower orders are made from "
                        "them)", formats);
  if ((k = stretch_parse(stretch)) < 0)
    return PyErr_Format(PyExc_ValueError, "write_hips: stretch '%s'; expected linear, sqrt, log "
                        "or asinh", stretch);
  o.stretch = (tsr_stretch_t)k;
  if (cutobj != Py_None) {
    if (!PyArg_ParseTuple(cutobj, "dd;write_hips: cut: expected (low, high)", &o.cut[0],
                          &o.cut[1]))
      return NULL;
    o.has_cut = 1;
  }
  nt = PyObject_TypeCheck(nodesobj, &tsrpy_NodeType) ? PyTuple_Pack(1, nodesobj)
                                                      : PySequence_Tuple(nodesobj);
  if (nt == NULL || !PyUnicode_FSConverter(dirobj, &dirbytes))
    goto out;
  n = (int)PyTuple_GET_SIZE(nt);
  if ((job.nodes = PyMem_Calloc(n ? (size_t)n : 1, sizeof *job.nodes)) == NULL) {
    PyErr_NoMemory();
    goto out;
  }
  for (int i = 0; i < n; i++) {
    PyObject *x = PyTuple_GET_ITEM(nt, i);
    if (!PyObject_TypeCheck(x, &tsrpy_NodeType) || ((tsrpy_node_t *)x)->graph != self) {
      PyErr_SetString(PyExc_TypeError, "write_hips: expected nodes of this graph");
      goto out;
    }
    job.nodes[i] = ((tsrpy_node_t *)x)->node;
  }
  /* It adds the reprojections onto the tiles to the graph. */
  if (tsrpy_graph_buildable(self) < 0 ||
      tsrpy_run_prepare(&run, self, jobs, executor, cache, cancel, progress) < 0)
    goto out;
  prepared = 1;
  job.g = self->g;
  job.n = n;
  job.dir = PyBytes_AS_STRING(dirbytes);
  o.run = &run.opts;
  job.opts = &o;
  if (run_on_graph(self, &run, &flag, hips_job, &job, job.msg) < 0)
    goto out;
  res = Py_BuildValue("{s:i,s:i,s:L,s:L,s:L,s:(dd)}", "level", job.report.level, "tile_width",
                      job.report.tile_width, "candidates", (long long)job.report.candidates,
                      "tiles_deepest", (long long)job.report.tiles_deepest, "tiles_total",
                      (long long)job.report.tiles_total, "cut", job.report.cut[0],
                      job.report.cut[1]);
out:
  if (prepared)
    tsrpy_run_done(&run);
  PyMem_Free(job.nodes);
  Py_XDECREF(nt);
  Py_XDECREF(dirbytes);
  return res;
}

/* ------------------------------------------------------------------ */
/* match_background                                                   */

typedef struct {
  tsr_graph_t *g;
  int n, reference;
  tsr_node_t **inputs, **weights;
  const tsr_run_opts_t *opts;
  double *offsets;
  char msg[1024];
} bg_job_t;

static int bg_job(void *p) {
  bg_job_t *j = p;
  int rc = tsr_coadd_match_background(j->g, j->n, j->inputs, j->weights, j->reference, j->opts,
                                      j->offsets);
  if (rc != 0)
    snprintf(j->msg, sizeof j->msg, "%s", tsr_errmsg(tsrpy_ctx));
  return rc;
}

PyObject *tsrpy_graph_match_background(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"inputs", "weights", "reference", "jobs", "executor", "cache", "cancel",
                           NULL};
  PyObject *ins, *ws = Py_None, *jobs = NULL, *executor = NULL, *cache = NULL, *cancel = NULL;
  PyObject *it = NULL, *wt = NULL, *res = NULL;
  tsrpy_run_t run;
  bg_job_t job;
  volatile int flag = 0;
  int prepared = 0;

  memset(&job, 0, sizeof job);
  job.reference = -1;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Oi$OOOO:match_background", kwlist, &ins, &ws,
                                   &job.reference, &jobs, &executor, &cache, &cancel) ||
      !tsrpy_graph_buildable(self))
    return NULL;
  if ((it = PySequence_Tuple(ins)) == NULL)
    return NULL;
  job.n = (int)PyTuple_GET_SIZE(it);
  if (ws != Py_None && ((wt = PySequence_Tuple(ws)) == NULL || PyTuple_GET_SIZE(wt) != job.n)) {
    if (!PyErr_Occurred())
      PyErr_Format(PyExc_ValueError, "match_background: %zd weights for %d inputs",
                   PyTuple_GET_SIZE(wt), job.n);
    goto out;
  }
  job.inputs = PyMem_Calloc((size_t)(job.n ? job.n : 1), sizeof *job.inputs);
  job.weights = wt ? PyMem_Calloc((size_t)(job.n ? job.n : 1), sizeof *job.weights) : NULL;
  job.offsets = PyMem_Calloc((size_t)(job.n ? job.n : 1), sizeof *job.offsets);
  if (!job.inputs || !job.offsets || (wt && !job.weights)) {
    PyErr_NoMemory();
    goto out;
  }
  for (int i = 0; i < job.n; i++) {
    PyObject *o = PyTuple_GET_ITEM(it, i), *w = wt ? PyTuple_GET_ITEM(wt, i) : Py_None;
    if (!PyObject_TypeCheck(o, &tsrpy_NodeType) || ((tsrpy_node_t *)o)->graph != self ||
        (w != Py_None && (!PyObject_TypeCheck(w, &tsrpy_NodeType) || ((tsrpy_node_t *)w)->graph != self))) {
      PyErr_SetString(PyExc_TypeError, "match_background: expected nodes of this graph");
      goto out;
    }
    job.inputs[i] = ((tsrpy_node_t *)o)->node;
    if (w != Py_None)
      job.weights[i] = ((tsrpy_node_t *)w)->node;
  }
  if (tsrpy_run_prepare(&run, self, jobs, executor, cache, cancel, NULL) < 0)
    goto out;
  prepared = 1;
  job.g = self->g;
  job.opts = &run.opts;
  if (run_on_graph(self, &run, &flag, bg_job, &job, job.msg) < 0)
    goto out;
  res = PyList_New(job.n);
  for (int i = 0; res && i < job.n; i++)
    PyList_SET_ITEM(res, i, PyFloat_FromDouble(job.offsets[i]));
out:
  if (prepared)
    tsrpy_run_done(&run);
  PyMem_Free(job.inputs);
  PyMem_Free(job.weights);
  PyMem_Free(job.offsets);
  Py_XDECREF(it);
  Py_XDECREF(wt);
  return res;
}
