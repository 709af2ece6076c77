/* py_core.h -- what the files of the tessera._core extension share.
 *
 * Conventions of the module: shapes, regions, block sizes and axes are in
 * numpy order (the last axis varies fastest); the C library speaks FITS
 * order (axis 0 fastest).  They are converted here and nowhere else:
 * tsrpy_shape_to_c / tsrpy_region_from_py / tsrpy_axis_to_c.
 */
#ifndef TSR_PY_CORE_H
#define TSR_PY_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#ifndef TSRPY_IMPORT_ARRAY
#define NO_IMPORT_ARRAY
#endif
#define PY_ARRAY_UNIQUE_SYMBOL tsrpy_ARRAY_API
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <tessera/tessera.h>

/* The one context of the process: graphs, WCS handles and caches of the
 * module all use it (a context may be shared; its error messages are per
 * thread).  Made when the module loads, never freed. */
extern tsr_ctx_t *tsrpy_ctx;

/* Exceptions of the module. */
extern PyObject *tsrpy_CancelledError;

typedef struct {
  PyObject_HEAD
  tsr_wcs_t *wcs;             /* owned */
} tsrpy_wcs_t;

typedef struct {
  PyObject_HEAD
  tsr_cache_t *cache;         /* owned; NULL once closed */
  PyObject *dir;              /* str */
  int n_users;                /* computations using it now (GIL) */
} tsrpy_cache_t;

typedef struct {
  PyObject_HEAD
  volatile int flag;          /* the run's cancel flag when this token is given */
} tsrpy_cancel_t;

typedef struct {
  PyObject_HEAD
  tsr_graph_t *g;             /* owned */
  PyObject *keep;             /* list: arrays and callables the graph's nodes borrow */
  PyObject *pending;          /* the first exception a Python callback raised, or NULL (GIL) */
  int running;                /* computations under way (GIL): building is refused then */
  int py_callbacks;           /* a source calls into Python: no process executor */
} tsrpy_graph_t;

typedef struct {
  PyObject_HEAD
  tsrpy_graph_t *graph;       /* strong reference: the node lives in it */
  tsr_node_t *node;           /* borrowed from graph */
} tsrpy_node_t;

extern PyTypeObject tsrpy_WcsType, tsrpy_CacheType, tsrpy_CancelType, tsrpy_GraphType,
    tsrpy_NodeType;

/* Raise the Python exception for a failed call with TSR code `rc` and the
 * message `msg` (the library's text, kept whole): ValueError for bad
 * arguments, OSError (FileNotFoundError, PermissionError from `path`'s
 * errno when it is given and cannot be read) for files, MemoryError,
 * tessera.CancelledError.  Returns NULL. */
PyObject *tsrpy_raise(int rc, const char *msg, const char *path);
/* The same with the calling thread's message on the module context. */
PyObject *tsrpy_raise_ctx(int rc, const char *path);

/* Conversions between numpy order and FITS order (see the top). */
int tsrpy_region_from_py(const tsr_node_t *n, PyObject *obj, tsr_region_t *r);
PyObject *tsrpy_shape_tuple(const tsr_node_t *n, int chunks);
int tsrpy_axis_to_c(int ndim, long axis, const char *what);
/* A numpy dtype object for a tsr dtype (new reference). */
PyObject *tsrpy_descr(tsr_dtype_t dt);
/* None / "float32" / "float64" / a numpy dtype -> 0, TSR_F32, TSR_F64; -1
 * with ValueError set. */
int tsrpy_dtype_from_py(PyObject *obj, int allow_none);
/* A WCS from a tsrpy_wcs_t, a str/bytes header, or None (-> *out NULL when
 * allow_none).  *owned is set when the caller must free *out. */
int tsrpy_wcs_from_py(PyObject *obj, int need_shape, int allow_none, const tsr_wcs_t **out,
                      tsr_wcs_t **owned);
PyObject *tsrpy_wcs_wrap(tsr_wcs_t *w);   /* takes ownership */

/* Graph nodes: wrap a node of graph g (NULL -> the graph's error raised). */
PyObject *tsrpy_node_wrap(tsrpy_graph_t *g, tsr_node_t *n);
/* The graph may be built now (no computation of it under way); else raises. */
int tsrpy_graph_buildable(tsrpy_graph_t *g);

/* Sources (py_sources.c). */
PyObject *tsrpy_graph_source_array(tsrpy_graph_t *self, PyObject *args, PyObject *kw);
PyObject *tsrpy_graph_source_callback(tsrpy_graph_t *self, PyObject *args, PyObject *kw);
PyObject *tsrpy_hash(PyObject *self, PyObject *args);

/* Running (py_compute.c). */
PyObject *tsrpy_graph_compute(tsrpy_graph_t *self, PyObject *args, PyObject *kw);
PyObject *tsrpy_graph_write_fits(tsrpy_graph_t *self, PyObject *args, PyObject *kw);
PyObject *tsrpy_graph_write_hips(tsrpy_graph_t *self, PyObject *args, PyObject *kw);
PyObject *tsrpy_graph_match_background(tsrpy_graph_t *self, PyObject *args, PyObject *kw);
/* Run options from keyword values; fills *cache_used with a borrowed
 * Cache object to release with tsrpy_run_opts_done. */
typedef struct {
  tsr_run_opts_t opts;
  tsrpy_cache_t *cache;       /* strong reference or NULL */
  tsrpy_cancel_t *token;      /* strong reference or NULL */
  PyObject *progress;         /* strong reference or NULL */
  PyObject *pending_progress; /* an exception the progress callable raised */
} tsrpy_run_t;
int tsrpy_run_prepare(tsrpy_run_t *run, tsrpy_graph_t *g, PyObject *jobs, PyObject *executor,
                      PyObject *cache, PyObject *cancel, PyObject *progress);
void tsrpy_run_done(tsrpy_run_t *run);
/* Run fn(arg) with the GIL released so that Ctrl-C stops it: from the main
 * thread fn runs on a helper thread while this one waits and checks for
 * signals; a signal sets *cancel and waits for fn to return.  Returns fn's
 * result; *interrupted = 1 when a signal handler raised (the exception is
 * set). */
int tsrpy_run_released(int (*fn)(void *), void *arg, volatile int *cancel,
                       volatile int *token_flag, int *interrupted);
/* After a failed run of graph g: raise its pending callback exception, the
 * signal's exception, or the library's message. */
PyObject *tsrpy_run_raise(tsrpy_graph_t *g, tsrpy_run_t *run, int rc, int interrupted,
                          const char *path);

/* Caches (py_compute.c): the handle for a directory, opened once per
 * process (TESSERA_CACHE, or a str given as cache=). */
PyObject *tsrpy_cache_for_dir(PyObject *dir);

#endif
