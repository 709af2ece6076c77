/* py_core.c -- the tessera._core extension: the module, errors, WCS
 * handles, caches, cancel tokens, graphs and their node constructors.
 *
 * DESIGN: a _core.Graph owns one tsr_graph_t and everything its nodes
 * borrow (numpy arrays, Python callables), so the graph never outlives
 * them.  Building a node holds the GIL and computing releases it, so the
 * library's rule -- a graph is built by one thread at a time and not while
 * it is computed -- is kept by counting computations under the GIL and
 * refusing to build while one runs.  A graph that met a build error keeps
 * it (the library's sticky error): every later constructor raises it.
 * Pure-Python code (tessera.Array, the reproject functions) makes a fresh
 * graph per recipe and process; nothing here is pickled.
 */
#define TSRPY_IMPORT_ARRAY
#include "py_core.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>

tsr_ctx_t *tsrpy_ctx;
PyObject *tsrpy_CancelledError;

/* ------------------------------------------------------------------ */
/* Errors                                                             */

PyObject *tsrpy_raise(int rc, const char *msg, const char *path) {
  PyObject *type = PyExc_ValueError;
  if (msg == NULL || msg[0] == '\0')
    msg = tsr_strerror(rc);
  switch (rc) {
  case TSR_ENOMEM:
    return PyErr_Format(PyExc_MemoryError, "%s", msg);
  case TSR_ECANCELED:
    return PyErr_Format(tsrpy_CancelledError, "%s", msg);
  case TSR_EIO:
  case TSR_EFITS:
  case TSR_ECACHE: {
    struct stat st;
    if (path != NULL && stat(path, &st) != 0) {
      /* OSError(errno, text, filename) becomes FileNotFoundError,
       * PermissionError, ... by errno. */
      PyObject *a = Py_BuildValue("(isz)", errno, msg, path);
      if (a != NULL) {
        PyErr_SetObject(PyExc_OSError, a);
        Py_DECREF(a);
      }
      return NULL;
    }
    type = PyExc_OSError;
    break;
  }
  case TSR_EWORKER:
  case TSR_EBUSY:
    type = PyExc_RuntimeError;
    break;
  default: /* EINVAL, ERANGE, EWCS, ESTATE, ENOTSUP */
    type = PyExc_ValueError;
    break;
  }
  return PyErr_Format(type, "%s", msg);
}

PyObject *tsrpy_raise_ctx(int rc, const char *path) {
  return tsrpy_raise(rc, tsr_errmsg(tsrpy_ctx), path);
}

/* ------------------------------------------------------------------ */
/* Axis order                                                         */

int tsrpy_axis_to_c(int ndim, long axis, const char *what) {
  long a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim) {
    PyErr_Format(PyExc_ValueError, "%s: axis %ld is out of range for an array of %d axes", what,
                 axis, ndim);
    return -1;
  }
  return ndim - 1 - (int)a;
}

PyObject *tsrpy_shape_tuple(const tsr_node_t *n, int chunks) {
  int nd = tsr_node_ndim(n);
  PyObject *t = PyTuple_New(nd);
  if (t == NULL)
    return NULL;
  for (int i = 0; i < nd; i++) {
    int64_t v = chunks ? tsr_node_chunk(n, nd - 1 - i) : tsr_node_shape(n, nd - 1 - i);
    PyObject *o = PyLong_FromLongLong((long long)v);
    if (o == NULL) {
      Py_DECREF(t);
      return NULL;
    }
    PyTuple_SET_ITEM(t, i, o);
  }
  return t;
}

/* One numpy-order entry of a region: a slice with step 1 (None ends
 * allowed, negative indices count from the end), an integer i (i:i+1) or a
 * pair (start, stop). */
static int region_entry(PyObject *e, int64_t len, int64_t *start, int64_t *stop, int axis) {
  Py_ssize_t s, t, step;
  if (PySlice_Check(e)) {
    if (PySlice_Unpack(e, &s, &t, &step) < 0)
      return -1;
    if (step != 1) {
      PyErr_Format(PyExc_ValueError, "region: axis %d has step %zd; a region takes step 1 "
                   "(slice the array for strided views)", axis, step);
      return -1;
    }
    PySlice_AdjustIndices((Py_ssize_t)len, &s, &t, step);
    *start = s, *stop = t;
    return 0;
  }
  if (PyIndex_Check(e)) {
    Py_ssize_t i = PyNumber_AsSsize_t(e, PyExc_IndexError);
    if (i == -1 && PyErr_Occurred())
      return -1;
    if (i < 0)
      i += (Py_ssize_t)len;
    *start = i, *stop = (int64_t)i + 1;
    return 0;
  }
  if (PyTuple_Check(e) && PyTuple_GET_SIZE(e) == 2) {
    long long a = PyLong_AsLongLong(PyTuple_GET_ITEM(e, 0));
    long long b = a == -1 && PyErr_Occurred() ? -1 : PyLong_AsLongLong(PyTuple_GET_ITEM(e, 1));
    if (PyErr_Occurred())
      return -1;
    *start = a, *stop = b;
    return 0;
  }
  PyErr_Format(PyExc_TypeError, "region: axis %d is %.80s; expected a slice, an integer or a "
               "(start, stop) pair", axis, Py_TYPE(e)->tp_name);
  return -1;
}

int tsrpy_region_from_py(const tsr_node_t *n, PyObject *obj, tsr_region_t *r) {
  int nd = tsr_node_ndim(n);
  PyObject *seq;
  Py_ssize_t k;
  *r = tsr_region_of(n);
  if (obj == NULL || obj == Py_None)
    return 0;
  if (PySlice_Check(obj) || PyIndex_Check(obj)) {
    seq = PyTuple_Pack(1, obj);
  } else {
    seq = PySequence_Tuple(obj);
  }
  if (seq == NULL)
    return -1;
  k = PyTuple_GET_SIZE(seq);
  if (k > nd) {
    PyErr_Format(PyExc_ValueError, "region: %zd axes given for an array of %d", k, nd);
    Py_DECREF(seq);
    return -1;
  }
  for (Py_ssize_t i = 0; i < k; i++) {
    int a = nd - 1 - (int)i;
    if (region_entry(PyTuple_GET_ITEM(seq, i), tsr_node_shape(n, a), &r->start[a], &r->stop[a],
                     (int)i) < 0) {
      Py_DECREF(seq);
      return -1;
    }
    if (r->start[a] < 0 || r->stop[a] > tsr_node_shape(n, a) || r->start[a] >= r->stop[a]) {
      PyErr_Format(PyExc_ValueError, "region: axis %zd is [%lld, %lld), outside or empty for "
                   "length %lld", i, (long long)r->start[a], (long long)r->stop[a],
                   (long long)tsr_node_shape(n, a));
      Py_DECREF(seq);
      return -1;
    }
  }
  Py_DECREF(seq);
  return 0;
}

PyObject *tsrpy_descr(tsr_dtype_t dt) {
  return (PyObject *)PyArray_DescrFromType(dt == TSR_F64 ? NPY_FLOAT64 : NPY_FLOAT32);
}

int tsrpy_dtype_from_py(PyObject *obj, int allow_none) {
  PyArray_Descr *d = NULL;
  int out = -1;
  if (obj == NULL || obj == Py_None) {
    if (allow_none)
      return 0;
    PyErr_SetString(PyExc_ValueError, "dtype: expected float32 or float64, got None");
    return -1;
  }
  if (!PyArray_DescrConverter(obj, &d))
    return -1;
  if (d->type_num == NPY_FLOAT32)
    out = TSR_F32;
  else if (d->type_num == NPY_FLOAT64)
    out = TSR_F64;
  else
    PyErr_Format(PyExc_ValueError, "dtype: %R is not supported; expected float32 or float64",
                 (PyObject *)d);
  Py_DECREF(d);
  return out;
}

/* ------------------------------------------------------------------ */
/* Wcs                                                                */

PyObject *tsrpy_wcs_wrap(tsr_wcs_t *w) {
  tsrpy_wcs_t *o = PyObject_New(tsrpy_wcs_t, &tsrpy_WcsType);
  if (o == NULL) {
    tsr_wcs_free(w);
    return NULL;
  }
  o->wcs = w;
  return (PyObject *)o;
}

static int parse_header(PyObject *obj, int need_shape, tsr_wcs_t **out) {
  const char *text;
  Py_ssize_t len;
  int rc;
  if (PyUnicode_Check(obj)) {
    text = PyUnicode_AsUTF8AndSize(obj, &len);
    if (text == NULL)
      return -1;
  } else if (PyBytes_Check(obj)) {
    text = PyBytes_AS_STRING(obj);
    len = PyBytes_GET_SIZE(obj);
  } else {
    PyErr_Format(PyExc_TypeError, "header: expected a _core.Wcs or header text (str), got %.80s",
                 Py_TYPE(obj)->tp_name);
    return -1;
  }
  if ((rc = tsr_wcs_parse(tsrpy_ctx, text, (size_t)len, "header", need_shape, out)) != 0) {
    tsrpy_raise_ctx(rc, NULL);
    return -1;
  }
  return 0;
}

int tsrpy_wcs_from_py(PyObject *obj, int need_shape, int allow_none, const tsr_wcs_t **out,
                      tsr_wcs_t **owned) {
  *out = NULL, *owned = NULL;
  if (obj == NULL || obj == Py_None) {
    if (allow_none)
      return 0;
    PyErr_SetString(PyExc_ValueError, "expected a WCS (a _core.Wcs or header text), got None");
    return -1;
  }
  if (PyObject_TypeCheck(obj, &tsrpy_WcsType)) {
    const tsr_wcs_t *w = ((tsrpy_wcs_t *)obj)->wcs;
    if (need_shape)
      for (int a = 0; a < tsr_wcs_naxis(w); a++)
        if (tsr_wcs_shape(w, a) < 1) {
          PyErr_Format(PyExc_ValueError, "WCS: NAXIS%d is missing; a target needs its shape", a + 1);
          return -1;
        }
    *out = w;
    return 0;
  }
  if (parse_header(obj, need_shape, owned) < 0)
    return -1;
  *out = *owned;
  return 0;
}

static PyObject *Wcs_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"header", "need_shape", NULL};
  PyObject *h;
  int need_shape = 0;
  tsr_wcs_t *w = NULL;
  (void)type;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|p:Wcs", kwlist, &h, &need_shape))
    return NULL;
  if (parse_header(h, need_shape, &w) < 0)
    return NULL;
  return tsrpy_wcs_wrap(w);
}

static void Wcs_dealloc(tsrpy_wcs_t *self) {
  tsr_wcs_free(self->wcs);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Wcs_read_fits(PyObject *cls, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"path", "hdu", NULL};
  PyObject *pathobj, *hduobj = Py_None, *bytes = NULL, *res = NULL;
  tsr_wcs_t *w = NULL;
  int hdu = 0, rc;
  (void)cls;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O:read_fits", kwlist, &pathobj, &hduobj))
    return NULL;
  if (!PyUnicode_FSConverter(pathobj, &bytes))
    return NULL;
  if (hduobj != Py_None) {
    long h = PyLong_AsLong(hduobj);
    if (h == -1 && PyErr_Occurred())
      goto out;
    if (h < 0 || h > 100000) {
      PyErr_Format(PyExc_ValueError, "hdu %ld out of range; HDUs count from 0 (the primary)", h);
      goto out;
    }
    hdu = (int)h + 1;
  }
  Py_BEGIN_ALLOW_THREADS
  rc = tsr_wcs_read_fits(tsrpy_ctx, PyBytes_AS_STRING(bytes), hdu, &w);
  Py_END_ALLOW_THREADS
  if (rc != 0)
    tsrpy_raise_ctx(rc, PyBytes_AS_STRING(bytes));
  else
    res = tsrpy_wcs_wrap(w);
out:
  Py_XDECREF(bytes);
  return res;
}

static PyObject *Wcs_read_hdr(PyObject *cls, PyObject *args) {
  PyObject *bytes = NULL;
  tsr_wcs_t *w = NULL;
  int rc;
  (void)cls;
  if (!PyArg_ParseTuple(args, "O&:read_hdr", PyUnicode_FSConverter, &bytes))
    return NULL;
  rc = tsr_wcs_read_hdr(tsrpy_ctx, PyBytes_AS_STRING(bytes), &w);
  if (rc != 0) {
    tsrpy_raise_ctx(rc, PyBytes_AS_STRING(bytes));
    Py_DECREF(bytes);
    return NULL;
  }
  Py_DECREF(bytes);
  return tsrpy_wcs_wrap(w);
}

static PyObject *Wcs_write_hdr(tsrpy_wcs_t *self, PyObject *args) {
  PyObject *bytes = NULL;
  int rc;
  if (!PyArg_ParseTuple(args, "O&:write_hdr", PyUnicode_FSConverter, &bytes))
    return NULL;
  rc = tsr_wcs_write_hdr(tsrpy_ctx, self->wcs, PyBytes_AS_STRING(bytes));
  if (rc != 0) {
    tsrpy_raise_ctx(rc, PyBytes_AS_STRING(bytes));
    Py_DECREF(bytes);
    return NULL;
  }
  Py_DECREF(bytes);
  Py_RETURN_NONE;
}

static PyObject *Wcs_describe(tsrpy_wcs_t *self, PyObject *unused) {
  char buf[512];
  int rc = tsr_wcs_describe(tsrpy_ctx, self->wcs, buf, sizeof buf);
  (void)unused;
  if (rc != 0)
    return tsrpy_raise_ctx(rc, NULL);
  return PyUnicode_FromString(buf);
}

static PyObject *Wcs_pix2world(tsrpy_wcs_t *self, PyObject *args) {
  PyObject *xo, *yo, *res = NULL;
  PyArrayObject *x = NULL, *y = NULL, *lon = NULL, *lat = NULL;
  int rc;
  if (!PyArg_ParseTuple(args, "OO:pix2world", &xo, &yo))
    return NULL;
  x = (PyArrayObject *)PyArray_FROMANY(xo, NPY_FLOAT64, 0, 0, NPY_ARRAY_CARRAY | NPY_ARRAY_ENSURECOPY);
  y = (PyArrayObject *)PyArray_FROMANY(yo, NPY_FLOAT64, 0, 0, NPY_ARRAY_CARRAY | NPY_ARRAY_ENSURECOPY);
  if (x == NULL || y == NULL)
    goto out;
  if (PyArray_SIZE(x) != PyArray_SIZE(y)) {
    PyErr_SetString(PyExc_ValueError, "pix2world: x and y differ in size");
    goto out;
  }
  lon = (PyArrayObject *)PyArray_NewLikeArray(x, NPY_CORDER, NULL, 0);
  lat = (PyArrayObject *)PyArray_NewLikeArray(x, NPY_CORDER, NULL, 0);
  if (lon == NULL || lat == NULL)
    goto out;
  rc = tsr_wcs_pix2world(tsrpy_ctx, self->wcs, (size_t)PyArray_SIZE(x), PyArray_DATA(x),
                         PyArray_DATA(y), PyArray_DATA(lon), PyArray_DATA(lat));
  if (rc != 0) {
    tsrpy_raise_ctx(rc, NULL);
    goto out;
  }
  res = PyTuple_Pack(2, (PyObject *)lon, (PyObject *)lat);
out:
  Py_XDECREF(x);
  Py_XDECREF(y);
  Py_XDECREF(lon);
  Py_XDECREF(lat);
  return res;
}

static PyObject *Wcs_get_naxis(tsrpy_wcs_t *self, void *c) {
  (void)c;
  return PyLong_FromLong(tsr_wcs_naxis(self->wcs));
}

static PyObject *Wcs_get_shape(tsrpy_wcs_t *self, void *c) {
  int nd = tsr_wcs_naxis(self->wcs);
  PyObject *t = PyTuple_New(nd);
  (void)c;
  for (int i = 0; t && i < nd; i++)
    PyTuple_SET_ITEM(t, i, PyLong_FromLongLong((long long)tsr_wcs_shape(self->wcs, nd - 1 - i)));
  return t;
}

static PyObject *Wcs_get_cards(tsrpy_wcs_t *self, void *c) {
  int n = 0;
  const char *cards = tsr_wcs_cards(self->wcs, &n);
  (void)c;
  return PyUnicode_DecodeLatin1(cards, (Py_ssize_t)n * 80, "replace");
}

static PyMethodDef Wcs_methods[] = {
    {"read_fits", (PyCFunction)(void (*)(void))Wcs_read_fits, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
     "Wcs.read_fits(path, hdu=None) -> Wcs\n\nThe WCS and shape of an image HDU of a FITS file; "
     "hdu counts from 0 (the primary) as in astropy, None = the first HDU with image data."},
    {"read_hdr", (PyCFunction)Wcs_read_hdr, METH_VARARGS | METH_CLASS,
     "Wcs.read_hdr(path) -> Wcs\n\nA target from a header text file (one card per line, "
     "NAXISn required)."},
    {"write_hdr", (PyCFunction)Wcs_write_hdr, METH_VARARGS,
     "write_hdr(path)\n\nWrite the cards as a header text file (astropy's Header.totextfile)."},
    {"describe", (PyCFunction)Wcs_describe, METH_NOARGS, "describe() -> str\n\nA one-line summary."},
    {"pix2world", (PyCFunction)Wcs_pix2world, METH_VARARGS,
     "pix2world(x, y) -> (lon, lat)\n\n0-based pixel coordinates (FITS x = numpy's last axis) to "
     "degrees of the celestial axes, NaN where undefined."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Wcs_getset[] = {
    {"naxis", (getter)Wcs_get_naxis, NULL, "number of pixel axes (NAXIS)", NULL},
    {"shape", (getter)Wcs_get_shape, NULL, "NAXISn in numpy order (0 where unknown)", NULL},
    {"cards", (getter)Wcs_get_cards, NULL, "the header cards, 80 characters each, no END", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject tsrpy_WcsType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tessera._core.Wcs",
    .tp_basicsize = sizeof(tsrpy_wcs_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Wcs(header, need_shape=False)\n\nA FITS WCS header (80-column cards back to back, or "
              "one card per line), validated by wcslib; need_shape requires NAXISn.",
    .tp_new = Wcs_new,
    .tp_dealloc = (destructor)Wcs_dealloc,
    .tp_methods = Wcs_methods,
    .tp_getset = Wcs_getset,
};

/* ------------------------------------------------------------------ */
/* Cache                                                              */

static PyObject *Cache_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"dir", "max_bytes", "read_only", NULL};
  PyObject *dirobj, *bytes = NULL;
  unsigned long long max_bytes = TSR_CACHE_DEFAULT_BYTES;
  int read_only = 0, rc;
  tsr_cache_t *c = NULL;
  tsrpy_cache_t *self;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Kp:Cache", kwlist, &dirobj, &max_bytes, &read_only))
    return NULL;
  if (!PyUnicode_FSConverter(dirobj, &bytes))
    return NULL;
  rc = read_only ? tsr_cache_open_read_only(tsrpy_ctx, PyBytes_AS_STRING(bytes), &c)
                 : tsr_cache_open(tsrpy_ctx, PyBytes_AS_STRING(bytes), (uint64_t)max_bytes, &c);
  if (rc != 0) {
    tsrpy_raise_ctx(rc, NULL);
    Py_DECREF(bytes);
    return NULL;
  }
  self = (tsrpy_cache_t *)type->tp_alloc(type, 0);
  if (self == NULL) {
    tsr_cache_close(c);
    Py_DECREF(bytes);
    return NULL;
  }
  self->cache = c;
  self->dir = PyUnicode_DecodeFSDefault(PyBytes_AS_STRING(bytes));
  Py_DECREF(bytes);
  return (PyObject *)self;
}

static void Cache_dealloc(tsrpy_cache_t *self) {
  tsr_cache_close(self->cache);
  Py_XDECREF(self->dir);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static int cache_open(tsrpy_cache_t *self) {
  if (self->cache == NULL) {
    PyErr_SetString(PyExc_ValueError, "cache: the handle is closed");
    return 0;
  }
  return 1;
}

static PyObject *Cache_close(tsrpy_cache_t *self, PyObject *unused) {
  (void)unused;
  if (self->n_users > 0) {
    PyErr_SetString(PyExc_RuntimeError, "cache: close while a computation uses it");
    return NULL;
  }
  tsr_cache_close(self->cache);
  self->cache = NULL;
  Py_RETURN_NONE;
}

static PyObject *Cache_stats(tsrpy_cache_t *self, PyObject *unused) {
  tsr_cache_stats_t s;
  int rc;
  (void)unused;
  if (!cache_open(self))
    return NULL;
  Py_BEGIN_ALLOW_THREADS
  rc = tsr_cache_stats(self->cache, &s);
  Py_END_ALLOW_THREADS
  if (rc != 0)
    return tsrpy_raise_ctx(rc, NULL);
  return Py_BuildValue("{s:K,s:K,s:K,s:d,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K,s:K}", "entries",
                       (unsigned long long)s.entries, "bytes", (unsigned long long)s.bytes,
                       "raw_bytes", (unsigned long long)s.raw_bytes, "ratio", s.ratio, "max_bytes",
                       (unsigned long long)s.max_bytes, "hits", (unsigned long long)s.hits,
                       "misses", (unsigned long long)s.misses, "stores",
                       (unsigned long long)s.stores, "evictions", (unsigned long long)s.evictions,
                       "dropped", (unsigned long long)s.dropped, "session_hits",
                       (unsigned long long)s.session_hits, "session_misses",
                       (unsigned long long)s.session_misses, "session_stores",
                       (unsigned long long)s.session_stores, "warnings",
                       (unsigned long long)s.warnings);
}

static PyObject *Cache_trim(tsrpy_cache_t *self, PyObject *unused) {
  int rc;
  (void)unused;
  if (!cache_open(self))
    return NULL;
  Py_BEGIN_ALLOW_THREADS
  rc = tsr_cache_trim(self->cache);
  Py_END_ALLOW_THREADS
  if (rc != 0)
    return tsrpy_raise_ctx(rc, NULL);
  Py_RETURN_NONE;
}

static PyObject *Cache_clear(tsrpy_cache_t *self, PyObject *unused) {
  int rc;
  (void)unused;
  if (!cache_open(self))
    return NULL;
  Py_BEGIN_ALLOW_THREADS
  rc = tsr_cache_clear(self->cache);
  Py_END_ALLOW_THREADS
  if (rc != 0)
    return tsrpy_raise_ctx(rc, NULL);
  Py_RETURN_NONE;
}

static PyObject *Cache_get_warning(tsrpy_cache_t *self, void *c) {
  (void)c;
  if (!cache_open(self))
    return NULL;
  return PyUnicode_FromString(tsr_cache_warning(self->cache));
}

static PyObject *Cache_get_dir(tsrpy_cache_t *self, void *c) {
  (void)c;
  Py_INCREF(self->dir);
  return self->dir;
}

static PyMethodDef Cache_methods[] = {
    {"stats", (PyCFunction)Cache_stats, METH_NOARGS,
     "stats() -> dict\n\nEntries, bytes, raw_bytes, ratio, max_bytes, the cumulative hits, misses, "
     "stores, evictions and dropped files, and this handle's session counts."},
    {"trim", (PyCFunction)Cache_trim, METH_NOARGS, "trim()\n\nEvict down to the budget."},
    {"clear", (PyCFunction)Cache_clear, METH_NOARGS, "clear()\n\nDelete every chunk file."},
    {"close", (PyCFunction)Cache_close, METH_NOARGS, "close()\n\nRecord the counts and release."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Cache_getset[] = {
    {"warning", (getter)Cache_get_warning, NULL, "the handle's last warning, '' if none", NULL},
    {"dir", (getter)Cache_get_dir, NULL, "the directory", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject tsrpy_CacheType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tessera._core.Cache",
    .tp_basicsize = sizeof(tsrpy_cache_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Cache(dir, max_bytes=4 GiB, read_only=False)\n\nAn on-disk chunk cache (tsr_cache_open): "
              "pass it as cache= to compute; a second request of a region costs only "
              "decompression.  Several processes may share the directory.",
    .tp_new = Cache_new,
    .tp_dealloc = (destructor)Cache_dealloc,
    .tp_methods = Cache_methods,
    .tp_getset = Cache_getset,
};

/* ------------------------------------------------------------------ */
/* CancelToken                                                        */

static PyObject *Cancel_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  tsrpy_cancel_t *self;
  if (!PyArg_ParseTuple(args, ":CancelToken") || (kw && PyDict_Size(kw))) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_TypeError, "CancelToken() takes no arguments");
    return NULL;
  }
  self = (tsrpy_cancel_t *)type->tp_alloc(type, 0);
  if (self)
    self->flag = 0;
  return (PyObject *)self;
}

static PyObject *Cancel_cancel(tsrpy_cancel_t *self, PyObject *unused) {
  (void)unused;
  self->flag = 1;
  Py_RETURN_NONE;
}

static PyObject *Cancel_reset(tsrpy_cancel_t *self, PyObject *unused) {
  (void)unused;
  self->flag = 0;
  Py_RETURN_NONE;
}

static PyObject *Cancel_get_cancelled(tsrpy_cancel_t *self, void *c) {
  (void)c;
  return PyBool_FromLong(self->flag != 0);
}

static PyMethodDef Cancel_methods[] = {
    {"cancel", (PyCFunction)Cancel_cancel, METH_NOARGS,
     "cancel()\n\nStop the computations given this token (from any thread): they raise "
     "tessera.CancelledError."},
    {"reset", (PyCFunction)Cancel_reset, METH_NOARGS, "reset()\n\nMake the token usable again."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Cancel_getset[] = {
    {"cancelled", (getter)Cancel_get_cancelled, NULL, "whether cancel() was called", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject tsrpy_CancelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tessera._core.CancelToken",
    .tp_basicsize = sizeof(tsrpy_cancel_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "CancelToken()\n\nPass as cancel= to compute; token.cancel() from another thread "
              "stops it between blocks.",
    .tp_new = Cancel_new,
    .tp_methods = Cancel_methods,
    .tp_getset = Cancel_getset,
};

/* ------------------------------------------------------------------ */
/* Node                                                               */

PyObject *tsrpy_node_wrap(tsrpy_graph_t *g, tsr_node_t *n) {
  tsrpy_node_t *o;
  if (n == NULL) {
    int rc = tsr_graph_status(g->g);
    return tsrpy_raise(rc ? rc : TSR_EINVAL, tsr_graph_errmsg(g->g), NULL);
  }
  o = PyObject_New(tsrpy_node_t, &tsrpy_NodeType);
  if (o == NULL)
    return NULL;
  Py_INCREF(g);
  o->graph = g;
  o->node = n;
  return (PyObject *)o;
}

static void Node_dealloc(tsrpy_node_t *self) {
  Py_XDECREF(self->graph);
  PyObject_Free(self);
}

static PyObject *Node_get_shape(tsrpy_node_t *self, void *c) {
  (void)c;
  return tsrpy_shape_tuple(self->node, 0);
}
static PyObject *Node_get_chunks(tsrpy_node_t *self, void *c) {
  (void)c;
  return tsrpy_shape_tuple(self->node, 1);
}
static PyObject *Node_get_ndim(tsrpy_node_t *self, void *c) {
  (void)c;
  return PyLong_FromLong(tsr_node_ndim(self->node));
}
static PyObject *Node_get_dtype(tsrpy_node_t *self, void *c) {
  (void)c;
  return tsrpy_descr(tsr_node_dtype(self->node));
}
static PyObject *Node_get_name(tsrpy_node_t *self, void *c) {
  (void)c;
  return PyUnicode_DecodeUTF8(tsr_node_name(self->node), (Py_ssize_t)strlen(tsr_node_name(self->node)),
                              "replace");
}
static PyObject *Node_get_key(tsrpy_node_t *self, void *c) {
  uint8_t key[16];
  (void)c;
  tsr_node_key(self->node, key);
  return PyBytes_FromStringAndSize((const char *)key, 16);
}
static PyObject *Node_get_graph(tsrpy_node_t *self, void *c) {
  (void)c;
  Py_INCREF(self->graph);
  return (PyObject *)self->graph;
}
static PyObject *Node_get_wcs(tsrpy_node_t *self, void *c) {
  const tsr_wcs_t *w = tsr_node_wcs(self->node);
  tsr_wcs_t *copy;
  (void)c;
  if (w == NULL)
    Py_RETURN_NONE;
  if (tsr_wcs_copy(tsrpy_ctx, w, &copy) != 0)
    return PyErr_NoMemory();
  return tsrpy_wcs_wrap(copy);
}

static PyObject *Node_repr(tsrpy_node_t *self) {
  PyObject *shape = tsrpy_shape_tuple(self->node, 0), *r;
  if (shape == NULL)
    return NULL;
  r = PyUnicode_FromFormat("<tessera._core.Node %s shape=%R %s>", tsr_node_name(self->node), shape,
                           tsr_dtype_name(tsr_node_dtype(self->node)));
  Py_DECREF(shape);
  return r;
}

static PyGetSetDef Node_getset[] = {
    {"shape", (getter)Node_get_shape, NULL, "shape in numpy order", NULL},
    {"chunks", (getter)Node_get_chunks, NULL, "chunk shape in numpy order", NULL},
    {"ndim", (getter)Node_get_ndim, NULL, "number of axes", NULL},
    {"dtype", (getter)Node_get_dtype, NULL, "numpy dtype (float32 or float64)", NULL},
    {"name", (getter)Node_get_name, NULL, "name for messages", NULL},
    {"key", (getter)Node_get_key, NULL, "16-byte content key: equal keys mean equal data", NULL},
    {"graph", (getter)Node_get_graph, NULL, "the graph the node lives in", NULL},
    {"wcs", (getter)Node_get_wcs, NULL, "a copy of the node's WCS (a Wcs) or None", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject tsrpy_NodeType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tessera._core.Node",
    .tp_basicsize = sizeof(tsrpy_node_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A lazy array of a Graph (made by its methods; keeps the graph alive).",
    .tp_dealloc = (destructor)Node_dealloc,
    .tp_repr = (reprfunc)Node_repr,
    .tp_getset = Node_getset,
};

/* ------------------------------------------------------------------ */
/* Graph                                                              */

static PyObject *Graph_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
  tsrpy_graph_t *self;
  int rc;
  if (!PyArg_ParseTuple(args, ":Graph") || (kw && PyDict_Size(kw))) {
    if (!PyErr_Occurred())
      PyErr_SetString(PyExc_TypeError, "Graph() takes no arguments");
    return NULL;
  }
  self = (tsrpy_graph_t *)type->tp_alloc(type, 0);
  if (self == NULL)
    return NULL;
  if ((self->keep = PyList_New(0)) == NULL) {
    Py_DECREF(self);
    return NULL;
  }
  if ((rc = tsr_graph_new(tsrpy_ctx, &self->g)) != 0) {
    Py_DECREF(self);
    return tsrpy_raise_ctx(rc, NULL);
  }
  return (PyObject *)self;
}

static void Graph_dealloc(tsrpy_graph_t *self) {
  /* The nodes borrow what `keep` holds: free the graph first. */
  tsr_graph_free(self->g);
  Py_XDECREF(self->keep);
  Py_XDECREF(self->pending);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

int tsrpy_graph_buildable(tsrpy_graph_t *g) {
  if (g->running > 0) {
    PyErr_SetString(PyExc_RuntimeError,
                    "graph: a node cannot be added while the graph is being computed; build "
                    "first, or use another Graph");
    return 0;
  }
  return 1;
}

static tsr_node_t *node_arg(tsrpy_graph_t *g, PyObject *o, const char *what) {
  if (!PyObject_TypeCheck(o, &tsrpy_NodeType)) {
    PyErr_Format(PyExc_TypeError, "%s: expected a _core.Node, got %.80s", what, Py_TYPE(o)->tp_name);
    return NULL;
  }
  if (((tsrpy_node_t *)o)->graph != g) {
    PyErr_Format(PyExc_ValueError, "%s: the node belongs to another graph", what);
    return NULL;
  }
  return ((tsrpy_node_t *)o)->node;
}

/* A list of nodes (allowing None entries when allow_none) into a new array. */
static tsr_node_t **nodes_arg(tsrpy_graph_t *g, PyObject *seq, const char *what, int allow_none,
                              int *n) {
  PyObject *t = PySequence_Tuple(seq);
  tsr_node_t **out;
  if (t == NULL)
    return NULL;
  *n = (int)PyTuple_GET_SIZE(t);
  out = PyMem_Calloc((size_t)(*n ? *n : 1), sizeof *out);
  if (out == NULL) {
    Py_DECREF(t);
    PyErr_NoMemory();
    return NULL;
  }
  for (int i = 0; i < *n; i++) {
    PyObject *e = PyTuple_GET_ITEM(t, i);
    if (allow_none && e == Py_None)
      continue;
    if ((out[i] = node_arg(g, e, what)) == NULL) {
      PyMem_Free(out);
      Py_DECREF(t);
      return NULL;
    }
  }
  Py_DECREF(t);
  return out;
}

static PyObject *Graph_source_fits(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"path", "hdu", NULL};
  PyObject *bytes = NULL, *hduobj = Py_None, *res;
  int hdu = 0;
  tsr_node_t *n;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|O:source_fits", kwlist, PyUnicode_FSConverter,
                                   &bytes, &hduobj))
    return NULL;
  if (!tsrpy_graph_buildable(self)) {
    Py_DECREF(bytes);
    return NULL;
  }
  if (hduobj != Py_None) {
    long h = PyLong_AsLong(hduobj);
    if (h == -1 && PyErr_Occurred()) {
      Py_DECREF(bytes);
      return NULL;
    }
    if (h < 0 || h > 100000) {
      Py_DECREF(bytes);
      return PyErr_Format(PyExc_ValueError,
                          "source_fits: hdu %ld out of range; HDUs count from 0 (the primary)", h);
    }
    hdu = (int)h + 1;
  }
  n = tsr_source_fits(self->g, PyBytes_AS_STRING(bytes), hdu);
  if (n == NULL) {
    int rc = tsr_graph_status(self->g);
    res = tsrpy_raise(rc ? rc : TSR_EIO, tsr_graph_errmsg(self->g), PyBytes_AS_STRING(bytes));
  } else {
    res = tsrpy_node_wrap(self, n);
  }
  Py_DECREF(bytes);
  return res;
}

/* Reprojection options shared by the three methods. */
static int target_and_block(PyObject *targetobj, PyObject *blockobj, PyObject *dtypeobj,
                            const tsr_wcs_t **target, tsr_wcs_t **owned, int64_t block[2],
                            int *dtype) {
  block[0] = block[1] = 0;
  if ((*dtype = tsrpy_dtype_from_py(dtypeobj, 1)) < 0)
    return -1;
  if (blockobj != NULL && blockobj != Py_None) {
    long long by, bx;
    if (!PyArg_ParseTuple(blockobj, "LL;block: expected (ny, nx)", &by, &bx))
      return -1;
    if (by < 1 || bx < 1) {
      PyErr_Format(PyExc_ValueError, "block: (%lld, %lld); expected positive sizes", by, bx);
      return -1;
    }
    block[0] = bx, block[1] = by;
  }
  return tsrpy_wcs_from_py(targetobj, 1, 0, target, owned);
}

static int parse_enum(PyObject *o, int (*parse)(const char *), const char *what, int *out) {
  if (PyLong_Check(o)) {
    *out = (int)PyLong_AsLong(o);
    return PyErr_Occurred() ? -1 : 0;
  }
  if (!PyUnicode_Check(o)) {
    PyErr_Format(PyExc_TypeError, "%s: expected a string, got %.80s", what, Py_TYPE(o)->tp_name);
    return -1;
  }
  *out = parse(PyUnicode_AsUTF8(o));
  if (*out < 0) {
    PyErr_Format(PyExc_ValueError, "%s: unknown value %R", what, o);
    return -1;
  }
  return 0;
}

static int order_parse(const char *s) {
  if (strcmp(s, "nearest") == 0)
    return TSR_ORDER_NEAREST;
  return tsr_order_parse(s);
}

static PyObject *Graph_reproject_interp(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"src", "target", "order", "roundtrip", "mapping_tolerance", "dtype",
                           "block", NULL};
  PyObject *srcobj, *targetobj, *orderobj = NULL, *dtypeobj = Py_None, *blockobj = Py_None;
  tsr_interp_opts_t o = TSR_INTERP_OPTS_INIT;
  int k = 0;
  const tsr_wcs_t *target;
  tsr_wcs_t *owned = NULL;
  tsr_node_t *src, *n;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O$pdOO:reproject_interp", kwlist, &srcobj,
                                   &targetobj, &orderobj, &o.roundtrip, &o.mapping_tolerance,
                                   &dtypeobj, &blockobj))
    return NULL;
  if (!tsrpy_graph_buildable(self) || (src = node_arg(self, srcobj, "reproject_interp")) == NULL)
    return NULL;
  if (orderobj && parse_enum(orderobj, order_parse, "reproject_interp: order", &k) < 0)
    return NULL;
  if (orderobj)
    o.order = (tsr_order_t)k;
  if (target_and_block(targetobj, blockobj, dtypeobj, &target, &owned, o.block, &o.dtype) < 0)
    return NULL;
  n = tsr_reproject_interp(self->g, src, target, &o);
  tsr_wcs_free(owned);
  return tsrpy_node_wrap(self, n);
}

static PyObject *Graph_reproject_adaptive(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"src", "target", "kernel", "kernel_width", "sample_region_width",
                           "boundary_mode", "boundary_fill_value", "boundary_ignore_threshold",
                           "x_cyclic", "y_cyclic", "center_jacobian", "despike_jacobian",
                           "conserve_flux", "bad_value_mode", "bad_fill_value", "roundtrip",
                           "mapping_tolerance", "dtype", "block", NULL};
  PyObject *srcobj, *targetobj, *kernel = NULL, *boundary = NULL, *bad = NULL;
  PyObject *dtypeobj = Py_None, *blockobj = Py_None;
  tsr_adaptive_opts_t o = TSR_ADAPTIVE_OPTS_INIT;
  int k[3] = {o.kernel, o.boundary_mode, o.bad_value_mode};
  const tsr_wcs_t *target;
  tsr_wcs_t *owned = NULL;
  tsr_node_t *src, *n;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|$OddOddpppppOdpdOO:reproject_adaptive", kwlist,
                                   &srcobj, &targetobj, &kernel, &o.kernel_width,
                                   &o.sample_region_width, &boundary, &o.boundary_fill_value,
                                   &o.boundary_ignore_threshold, &o.x_cyclic, &o.y_cyclic,
                                   &o.center_jacobian, &o.despike_jacobian, &o.conserve_flux, &bad,
                                   &o.bad_fill_value, &o.roundtrip, &o.mapping_tolerance,
                                   &dtypeobj, &blockobj))
    return NULL;
  if (!tsrpy_graph_buildable(self) || (src = node_arg(self, srcobj, "reproject_adaptive")) == NULL)
    return NULL;
  /* Each into an int first: the option fields are enums, which may be unsigned. */
  if ((kernel && parse_enum(kernel, tsr_kernel_parse, "reproject_adaptive: kernel", &k[0]) < 0) ||
      (boundary &&
       parse_enum(boundary, tsr_boundary_parse, "reproject_adaptive: boundary_mode", &k[1]) < 0) ||
      (bad && parse_enum(bad, tsr_bad_value_parse, "reproject_adaptive: bad_value_mode", &k[2]) < 0))
    return NULL;
  o.kernel = (tsr_kernel_t)k[0];
  o.boundary_mode = (tsr_boundary_t)k[1];
  o.bad_value_mode = (tsr_bad_value_t)k[2];
  if (target_and_block(targetobj, blockobj, dtypeobj, &target, &owned, o.block, &o.dtype) < 0)
    return NULL;
  n = tsr_reproject_adaptive(self->g, src, target, &o);
  tsr_wcs_free(owned);
  return tsrpy_node_wrap(self, n);
}

static int nan_mode_parse(const char *s) {
  return strcmp(s, "propagate") == 0 ? TSR_NAN_PROPAGATE : strcmp(s, "ignore") == 0 ? TSR_NAN_IGNORE : -1;
}

static PyObject *Graph_reproject_exact(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"src", "target", "nan_mode", "dtype", "block", NULL};
  PyObject *srcobj, *targetobj, *nanobj = NULL, *dtypeobj = Py_None, *blockobj = Py_None;
  tsr_exact_opts_t o = TSR_EXACT_OPTS_INIT;
  int k = o.nan_mode;
  const tsr_wcs_t *target;
  tsr_wcs_t *owned = NULL;
  tsr_node_t *src, *n;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|$OOO:reproject_exact", kwlist, &srcobj, &targetobj,
                                   &nanobj, &dtypeobj, &blockobj))
    return NULL;
  if (!tsrpy_graph_buildable(self) || (src = node_arg(self, srcobj, "reproject_exact")) == NULL)
    return NULL;
  if (nanobj && parse_enum(nanobj, nan_mode_parse, "reproject_exact: nan_mode", &k) < 0)
    return NULL;
  o.nan_mode = (tsr_nan_mode_t)k;
  if (target_and_block(targetobj, blockobj, dtypeobj, &target, &owned, o.block, &o.dtype) < 0)
    return NULL;
  n = tsr_reproject_exact(self->g, src, target, &o);
  tsr_wcs_free(owned);
  return tsrpy_node_wrap(self, n);
}

static int to_healpix_method_parse(const char *s) {
  return strcmp(s, "interp") == 0 ? TSR_TO_HEALPIX_INTERP
         : strcmp(s, "exact") == 0 ? TSR_TO_HEALPIX_EXACT : -1;
}

static PyObject *Graph_reproject_to_healpix(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"src",   "nside", "order",  "nested",   "coordsys",
                           "dtype", "chunk", "method", "nan_mode", NULL};
  PyObject *srcobj, *orderobj = NULL, *dtypeobj = Py_None, *methodobj = NULL, *nanobj = NULL;
  long long nside, chunk = 0;
  const char *coordsys = NULL;
  tsr_to_healpix_opts_t o = TSR_TO_HEALPIX_OPTS_INIT;
  int k = 0;
  tsr_node_t *src;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OL|O$pzOLOO:reproject_to_healpix", kwlist, &srcobj,
                                   &nside, &orderobj, &o.nested, &coordsys, &dtypeobj, &chunk,
                                   &methodobj, &nanobj))
    return NULL;
  if (!tsrpy_graph_buildable(self) ||
      (src = node_arg(self, srcobj, "reproject_to_healpix")) == NULL)
    return NULL;
  if (orderobj && parse_enum(orderobj, order_parse, "reproject_to_healpix: order", &k) < 0)
    return NULL;
  if (orderobj)
    o.order = (tsr_order_t)k;
  if (methodobj &&
      parse_enum(methodobj, to_healpix_method_parse, "reproject_to_healpix: method", &k) < 0)
    return NULL;
  if (methodobj)
    o.method = (tsr_to_healpix_method_t)k;
  if (nanobj && parse_enum(nanobj, nan_mode_parse, "reproject_to_healpix: nan_mode", &k) < 0)
    return NULL;
  if (nanobj)
    o.nan_mode = (tsr_nan_mode_t)k;
  if ((o.dtype = tsrpy_dtype_from_py(dtypeobj, 1)) < 0)
    return NULL;
  o.coordsys = coordsys;
  o.chunk = chunk;
  return tsrpy_node_wrap(self, tsr_reproject_to_healpix(self->g, src, nside, &o));
}

/* nested= of the HEALPix methods: None (-1, the map's own), or a bool. */
static int nested_arg(PyObject *o, const char *what) {
  int k;
  if (o == NULL || o == Py_None)
    return -1;
  if ((k = PyObject_IsTrue(o)) < 0)
    PyErr_Format(PyExc_TypeError, "%s: nested: expected None, True or False", what);
  return k;
}

/* An integer argument of source_healpix in [lo, hi] (lo >= 0), or -1 with
 * the exception set (TypeError, or ValueError saying `why`). */
static long long_in_range(PyObject *o, long lo, long hi, const char *what, const char *why) {
  long v = PyLong_AsLong(o);
  if (v == -1 && PyErr_Occurred())
    return -1;
  if (v < lo || v > hi) {
    PyErr_Format(PyExc_ValueError, "source_healpix: %s %ld out of range; %s", what, v, why);
    return -1;
  }
  return v;
}

static PyObject *Graph_source_healpix(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"path", "hdu", "field", "nested", "coordsys", NULL};
  PyObject *bytes = NULL, *hduobj = Py_None, *fieldobj = NULL, *nestobj = Py_None, *res = NULL;
  tsr_healpix_opts_t o = TSR_HEALPIX_OPTS_INIT;
  tsr_node_t *n;
  long h;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|OOOz:source_healpix", kwlist,
                                   PyUnicode_FSConverter, &bytes, &hduobj, &fieldobj, &nestobj,
                                   &o.coordsys))
    return NULL;
  if (!tsrpy_graph_buildable(self))
    goto out;
  if (hduobj != Py_None) {
    if ((h = long_in_range(hduobj, 1, 100000, "hdu",
                           "HDUs count from 0 (the primary, which cannot hold a table), so a "
                           "HEALPix table is at 1 or later")) < 0)
      goto out;
    o.hdu = (int)h + 1;
  }
  if (fieldobj != NULL && PyUnicode_Check(fieldobj)) {
    o.field_name = PyUnicode_AsUTF8(fieldobj);
  } else if (fieldobj != NULL) {
    if ((h = long_in_range(fieldobj, 0, 998, "field",
                           "expected a value column index in [0, 998] or a column name")) < 0)
      goto out;
    o.field = (int)h;
  }
  o.nested = nested_arg(nestobj, "source_healpix");
  if (PyErr_Occurred())
    goto out;
  /* The header walk and an explicit table's PIXEL column are read now:
   * without the GIL, as reads of a big file may take a while. */
  Py_BEGIN_ALLOW_THREADS
  n = tsr_source_healpix(self->g, PyBytes_AS_STRING(bytes), &o);
  Py_END_ALLOW_THREADS
  if (n == NULL) {
    int rc = tsr_graph_status(self->g);
    res = tsrpy_raise(rc ? rc : TSR_EIO, tsr_graph_errmsg(self->g), PyBytes_AS_STRING(bytes));
  } else {
    res = tsrpy_node_wrap(self, n);
  }
out:
  Py_XDECREF(bytes);
  return res;
}

static PyObject *Graph_reproject_from_healpix(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"src",   "target", "order",  "nested",   "coordsys",
                           "dtype", "block",  "method", "nan_mode", NULL};
  PyObject *srcobj, *targetobj, *orderobj = NULL, *nestobj = Py_None, *dtypeobj = Py_None;
  PyObject *blockobj = Py_None, *methodobj = NULL, *nanobj = NULL;
  tsr_from_healpix_opts_t o = TSR_FROM_HEALPIX_OPTS_INIT;
  int k = o.order;
  const tsr_wcs_t *target;
  tsr_wcs_t *owned = NULL;
  tsr_node_t *src, *n;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|O$OzOOOO:reproject_from_healpix", kwlist,
                                   &srcobj, &targetobj, &orderobj, &nestobj, &o.coordsys,
                                   &dtypeobj, &blockobj, &methodobj, &nanobj))
    return NULL;
  if (!tsrpy_graph_buildable(self) ||
      (src = node_arg(self, srcobj, "reproject_from_healpix")) == NULL)
    return NULL;
  if (orderobj && parse_enum(orderobj, order_parse, "reproject_from_healpix: order", &k) < 0)
    return NULL;
  o.order = k;
  /* method: 'interp' or 'exact', the same values as to_healpix's. */
  if (methodobj &&
      parse_enum(methodobj, to_healpix_method_parse, "reproject_from_healpix: method", &k) < 0)
    return NULL;
  if (methodobj)
    o.method = k == TSR_TO_HEALPIX_EXACT ? TSR_HEALPIX_EXACT : TSR_HEALPIX_INTERP;
  if (nanobj && parse_enum(nanobj, nan_mode_parse, "reproject_from_healpix: nan_mode", &k) < 0)
    return NULL;
  if (nanobj)
    o.nan_mode = (tsr_nan_mode_t)k;
  o.nested = nested_arg(nestobj, "reproject_from_healpix");
  if (PyErr_Occurred())
    return NULL;
  if (target_and_block(targetobj, blockobj, dtypeobj, &target, &owned, o.block, &o.dtype) < 0)
    return NULL;
  n = tsr_reproject_from_healpix(self->g, src, target, &o);
  tsr_wcs_free(owned);
  return tsrpy_node_wrap(self, n);
}

static PyObject *Graph_footprint(tsrpy_graph_t *self, PyObject *arg) {
  tsr_node_t *n = node_arg(self, arg, "footprint"), *f;
  if (n == NULL || !tsrpy_graph_buildable(self))
    return NULL;
  if ((f = tsr_footprint(self->g, n)) == NULL) {
    if (tsr_graph_status(self->g) != 0)
      return tsrpy_node_wrap(self, NULL);
    return PyErr_Format(PyExc_ValueError, "footprint: %s has no footprint (only reprojections and "
                        "mosaics have one)", tsr_node_name(n));
  }
  return tsrpy_node_wrap(self, f);
}

/* Elementwise op names, in tsr_elementwise_t order. */
static const char *const ew_names[] = {"add", "sub", "mul", "div", "pow", "min", "max",
                                       "abs", "sqrt", "exp", "log", "log10", "isnan",
                                       "lt", "le", "gt", "ge", "eq", "ne"};
#define N_EW ((int)(sizeof ew_names / sizeof ew_names[0]))

static int ew_code(PyObject *o, const char *what) {
  const char *s;
  if (PyLong_Check(o))
    return (int)PyLong_AsLong(o);
  if ((s = PyUnicode_AsUTF8(o)) == NULL)
    return -1;
  for (int i = 0; i < N_EW; i++)
    if (strcmp(s, ew_names[i]) == 0)
      return i;
  PyErr_Format(PyExc_ValueError, "%s: unknown op %R", what, o);
  return -1;
}

static PyObject *Graph_binary(tsrpy_graph_t *self, PyObject *args) {
  PyObject *op, *ao, *bo;
  tsr_node_t *a, *b;
  int code;
  if (!PyArg_ParseTuple(args, "OOO:binary", &op, &ao, &bo) || !tsrpy_graph_buildable(self))
    return NULL;
  if ((code = ew_code(op, "binary")) < 0 || (a = node_arg(self, ao, "binary")) == NULL ||
      (b = node_arg(self, bo, "binary")) == NULL)
    return NULL;
  return tsrpy_node_wrap(self, tsr_binary(self->g, code, a, b));
}

static PyObject *Graph_binary_scalar(tsrpy_graph_t *self, PyObject *args) {
  PyObject *op, *ao;
  double s;
  tsr_node_t *a;
  int code;
  if (!PyArg_ParseTuple(args, "OOd:binary_scalar", &op, &ao, &s) || !tsrpy_graph_buildable(self))
    return NULL;
  if ((code = ew_code(op, "binary_scalar")) < 0 || (a = node_arg(self, ao, "binary_scalar")) == NULL)
    return NULL;
  return tsrpy_node_wrap(self, tsr_binary_scalar(self->g, code, a, s));
}

static PyObject *Graph_scalar_binary(tsrpy_graph_t *self, PyObject *args) {
  PyObject *op, *ao;
  double s;
  tsr_node_t *a;
  int code;
  if (!PyArg_ParseTuple(args, "OdO:scalar_binary", &op, &s, &ao) || !tsrpy_graph_buildable(self))
    return NULL;
  if ((code = ew_code(op, "scalar_binary")) < 0 || (a = node_arg(self, ao, "scalar_binary")) == NULL)
    return NULL;
  return tsrpy_node_wrap(self, tsr_scalar_binary(self->g, code, s, a));
}

static PyObject *Graph_unary(tsrpy_graph_t *self, PyObject *args) {
  PyObject *op, *ao;
  tsr_node_t *a;
  int code;
  if (!PyArg_ParseTuple(args, "OO:unary", &op, &ao) || !tsrpy_graph_buildable(self))
    return NULL;
  if ((code = ew_code(op, "unary")) < 0 || (a = node_arg(self, ao, "unary")) == NULL)
    return NULL;
  return tsrpy_node_wrap(self, tsr_unary(self->g, code, a));
}

static PyObject *Graph_clip(tsrpy_graph_t *self, PyObject *args) {
  PyObject *ao;
  double lo, hi;
  tsr_node_t *a;
  if (!PyArg_ParseTuple(args, "Odd:clip", &ao, &lo, &hi) || !tsrpy_graph_buildable(self) ||
      (a = node_arg(self, ao, "clip")) == NULL)
    return NULL;
  return tsrpy_node_wrap(self, tsr_clip(self->g, a, lo, hi));
}

static PyObject *Graph_where(tsrpy_graph_t *self, PyObject *args) {
  PyObject *mo, *ao, *bo;
  tsr_node_t *m, *a, *b;
  if (!PyArg_ParseTuple(args, "OOO:where", &mo, &ao, &bo) || !tsrpy_graph_buildable(self))
    return NULL;
  if ((m = node_arg(self, mo, "where")) == NULL || (a = node_arg(self, ao, "where")) == NULL ||
      (b = node_arg(self, bo, "where")) == NULL)
    return NULL;
  return tsrpy_node_wrap(self, tsr_where(self->g, m, a, b));
}

static PyObject *Graph_nan_to_num(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"a", "nan", "posinf", "neginf", NULL};
  PyObject *ao, *pos = Py_None, *neg = Py_None;
  double nan = 0.0, p = NAN, q = NAN;
  tsr_node_t *a;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|dOO:nan_to_num", kwlist, &ao, &nan, &pos, &neg) ||
      !tsrpy_graph_buildable(self) || (a = node_arg(self, ao, "nan_to_num")) == NULL)
    return NULL;
  if ((pos != Py_None && (p = PyFloat_AsDouble(pos), PyErr_Occurred())) ||
      (neg != Py_None && (q = PyFloat_AsDouble(neg), PyErr_Occurred())))
    return NULL;
  return tsrpy_node_wrap(self, tsr_nan_to_num(self->g, a, nan, p, q));
}

static PyObject *Graph_astype(tsrpy_graph_t *self, PyObject *args) {
  PyObject *ao, *dto;
  tsr_node_t *a;
  int dt;
  if (!PyArg_ParseTuple(args, "OO:astype", &ao, &dto) || !tsrpy_graph_buildable(self) ||
      (a = node_arg(self, ao, "astype")) == NULL || (dt = tsrpy_dtype_from_py(dto, 0)) < 0)
    return NULL;
  return tsrpy_node_wrap(self, tsr_astype(self->g, a, (tsr_dtype_t)dt));
}

static const char *const reduce_names[] = {"sum", "mean", "min", "max", "count", "std"};

static PyObject *Graph_reduce(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"op", "a", "axis", "nan_ignoring", NULL};
  const char *op;
  PyObject *ao, *axisobj = Py_None;
  int nan_ignoring = 0, code = -1, axis = -1;
  tsr_node_t *a;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "sO|Op:reduce", kwlist, &op, &ao, &axisobj,
                                   &nan_ignoring) ||
      !tsrpy_graph_buildable(self) || (a = node_arg(self, ao, "reduce")) == NULL)
    return NULL;
  for (int i = 0; i < 6; i++)
    if (strcmp(op, reduce_names[i]) == 0)
      code = i;
  if (code < 0)
    return PyErr_Format(PyExc_ValueError, "reduce: unknown op '%s'; expected sum, mean, min, max, "
                        "count or std", op);
  if (axisobj != Py_None) {
    long ax = PyLong_AsLong(axisobj);
    if ((ax == -1 && PyErr_Occurred()) ||
        (axis = tsrpy_axis_to_c(tsr_node_ndim(a), ax, "reduce")) < 0)
      return NULL;
  }
  return tsrpy_node_wrap(self, tsr_reduce(self->g, code, a, axis, nan_ignoring));
}

/* A numpy-order sequence of ndim integers into FITS order; NULL obj
 * leaves `dflt` on every axis. */
static int int64_list(PyObject *obj, int ndim, int64_t *out, int64_t dflt, const char *what) {
  PyObject *t;
  for (int a = 0; a < TSR_MAX_DIMS; a++)
    out[a] = dflt;
  if (obj == NULL || obj == Py_None)
    return 0;
  if ((t = PySequence_Tuple(obj)) == NULL)
    return -1;
  if (PyTuple_GET_SIZE(t) != ndim) {
    PyErr_Format(PyExc_ValueError, "%s: %zd values for an array of %d axes", what,
                 PyTuple_GET_SIZE(t), ndim);
    Py_DECREF(t);
    return -1;
  }
  for (int i = 0; i < ndim; i++) {
    long long v = PyLong_AsLongLong(PyTuple_GET_ITEM(t, i));
    if (v == -1 && PyErr_Occurred()) {
      Py_DECREF(t);
      return -1;
    }
    out[ndim - 1 - i] = v;
  }
  Py_DECREF(t);
  return 0;
}

static PyObject *Graph_slice(tsrpy_graph_t *self, PyObject *args) {
  PyObject *ao, *so, *eo, *to;
  int64_t start[TSR_MAX_DIMS], stop[TSR_MAX_DIMS], step[TSR_MAX_DIMS];
  tsr_node_t *a;
  int nd;
  if (!PyArg_ParseTuple(args, "OOOO:slice", &ao, &so, &eo, &to) || !tsrpy_graph_buildable(self) ||
      (a = node_arg(self, ao, "slice")) == NULL)
    return NULL;
  nd = tsr_node_ndim(a);
  if (int64_list(so, nd, start, 0, "slice: start") < 0 || int64_list(eo, nd, stop, 0, "slice: stop") < 0 ||
      int64_list(to, nd, step, 1, "slice: step") < 0)
    return NULL;
  if (eo == Py_None)
    for (int i = 0; i < nd; i++)
      stop[i] = tsr_node_shape(a, i);
  return tsrpy_node_wrap(self, tsr_slice(self->g, a, start, stop, step));
}

static PyObject *Graph_stack(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"nodes", "axis", "concatenate", NULL};
  PyObject *seq, *res;
  long axis = 0;
  int concat = 0, n, ax;
  tsr_node_t **nodes;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|lp:stack", kwlist, &seq, &axis, &concat) ||
      !tsrpy_graph_buildable(self) || (nodes = nodes_arg(self, seq, "stack", 0, &n)) == NULL)
    return NULL;
  if (n < 1) {
    PyMem_Free(nodes);
    return PyErr_Format(PyExc_ValueError, "stack: no arrays given");
  }
  ax = tsrpy_axis_to_c(tsr_node_ndim(nodes[0]) + (concat ? 0 : 1), axis,
                       concat ? "concatenate" : "stack");
  if (ax < 0) {
    PyMem_Free(nodes);
    return NULL;
  }
  res = tsrpy_node_wrap(self, concat ? tsr_concatenate(self->g, n, nodes, ax)
                                     : tsr_stack(self->g, n, nodes, ax));
  PyMem_Free(nodes);
  return res;
}

static PyObject *Graph_cutout(tsrpy_graph_t *self, PyObject *args) {
  PyObject *ao;
  double lon, lat;
  long long w, h;
  tsr_node_t *a;
  if (!PyArg_ParseTuple(args, "Oddd(LL):cutout", &ao, &lon, &lat, &h, &w) ||
      !tsrpy_graph_buildable(self) || (a = node_arg(self, ao, "cutout")) == NULL)
    return NULL;
  return tsrpy_node_wrap(self, tsr_cutout(self->g, a, lon, lat, w, h));
}

static PyObject *Graph_crop_to(tsrpy_graph_t *self, PyObject *args) {
  PyObject *ao, *bo, *res;
  const tsr_wcs_t *box;
  tsr_wcs_t *owned;
  tsr_node_t *a;
  if (!PyArg_ParseTuple(args, "OO:crop_to", &ao, &bo) || !tsrpy_graph_buildable(self) ||
      (a = node_arg(self, ao, "crop_to")) == NULL || tsrpy_wcs_from_py(bo, 1, 0, &box, &owned) < 0)
    return NULL;
  res = tsrpy_node_wrap(self, tsr_crop_to(self->g, a, box));
  tsr_wcs_free(owned);
  return res;
}

static int combine_parse(const char *s) { return tsr_combine_parse(s); }

static PyObject *Graph_coadd(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"inputs", "weights", "combine", "blank", "dtype", "block", "offsets", NULL};
  PyObject *ins, *ws = Py_None, *combine = NULL, *dtypeobj = Py_None, *blockobj = Py_None;
  PyObject *offobj = Py_None, *res = NULL;
  tsr_coadd_opts_t o = TSR_COADD_OPTS_INIT;
  int k = o.combine;
  tsr_node_t **inputs = NULL, **weights = NULL;
  double *offsets = NULL;
  int n = 0, nw = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|O$OdOOO:coadd", kwlist, &ins, &ws, &combine, &o.blank,
                                   &dtypeobj, &blockobj, &offobj) ||
      !tsrpy_graph_buildable(self))
    return NULL;
  if ((inputs = nodes_arg(self, ins, "coadd: inputs", 0, &n)) == NULL)
    return NULL;
  if (ws != Py_None && (weights = nodes_arg(self, ws, "coadd: weights", 1, &nw)) == NULL)
    goto out;
  if (weights && nw != n) {
    PyErr_Format(PyExc_ValueError, "coadd: %d weights for %d inputs", nw, n);
    goto out;
  }
  if (combine && parse_enum(combine, combine_parse, "coadd: combine", &k) < 0)
    goto out;
  o.combine = (tsr_combine_t)k;
  if ((o.dtype = tsrpy_dtype_from_py(dtypeobj, 1)) < 0)
    goto out;
  if (blockobj != Py_None) {
    long long by, bx;
    if (!PyArg_ParseTuple(blockobj, "LL;block: expected (ny, nx)", &by, &bx))
      goto out;
    o.block[0] = bx, o.block[1] = by;
  }
  if (offobj != Py_None) {
    PyObject *t = PySequence_Tuple(offobj);
    if (t == NULL)
      goto out;
    if (PyTuple_GET_SIZE(t) != n) {
      PyErr_Format(PyExc_ValueError, "coadd: %zd offsets for %d inputs", PyTuple_GET_SIZE(t), n);
      Py_DECREF(t);
      goto out;
    }
    offsets = PyMem_Calloc((size_t)(n ? n : 1), sizeof *offsets);
    for (int i = 0; offsets && i < n; i++)
      offsets[i] = PyFloat_AsDouble(PyTuple_GET_ITEM(t, i));
    Py_DECREF(t);
    if (offsets == NULL) {
      PyErr_NoMemory();
      goto out;
    }
    if (PyErr_Occurred())
      goto out;
    o.offsets = offsets;
  }
  res = tsrpy_node_wrap(self, tsr_coadd(self->g, n, inputs, weights, &o));
out:
  PyMem_Free(inputs);
  PyMem_Free(weights);
  PyMem_Free(offsets);
  return res;
}

static PyObject *Graph_get_status(tsrpy_graph_t *self, void *c) {
  (void)c;
  if (tsr_graph_status(self->g) == 0)
    Py_RETURN_NONE;
  return PyUnicode_FromString(tsr_graph_errmsg(self->g));
}

static PyObject *Graph_get_py_callbacks(tsrpy_graph_t *self, void *c) {
  (void)c;
  return PyBool_FromLong(self->py_callbacks);
}

#define KW (METH_VARARGS | METH_KEYWORDS)
#define FN(f) (PyCFunction)(void (*)(void))(f)

static PyMethodDef Graph_methods[] = {
    {"source_fits", FN(Graph_source_fits), KW,
     "source_fits(path, hdu=None) -> Node\n\nA lazy FITS image (tsr_source_fits): only the header is "
     "read now, data by subset when needed.  hdu counts from 0 (the primary) as in astropy; None = "
     "the first HDU with image data.  Integers are read as float (float64 for 32/64-bit ones), "
     "with BSCALE/BZERO/BLANK applied."},
    {"source_array", FN(tsrpy_graph_source_array), KW,
     "source_array(array, header=None, key=None, dtype=None, file=None) -> Node\n\nA numpy array "
     "(1 to 4 axes, any numeric dtype, byte order and strides, np.memmap) as a node.  Native "
     "float32/64 C-contiguous arrays are read in place; any other is converted window by window "
     "as the engine reads it, never whole.  header: a Wcs or header text (WCS of the array).  "
     "key: bytes that identify the values (e.g. a memmap's file identity); None hashes the "
     "content.  dtype: the node's type (default float64 for float64 and 32/64-bit integers, else "
     "float32).  file: (path, offset) when the array's bytes are in that file from that byte "
     "offset (a shared memory map): windows are read with pread, not through the mapping.  The "
     "graph keeps a reference to the array: do not change it while the graph is used."},
    {"source_callback", FN(tsrpy_graph_source_callback), KW,
     "source_callback(fn, shape, dtype, name, key, header=None) -> Node\n\nA source whose windows "
     "come from fn(window) (tsr_source_callback), called with the GIL for each window a "
     "computation needs: window is a tuple of slices in numpy order; fn returns an array-like of "
     "that shape (converted to dtype).  name and key (bytes) identify the values for the node "
     "key.  Graphs with such sources refuse the processes executor."},
    {"reproject_interp", FN(Graph_reproject_interp), KW,
     "reproject_interp(src, target, order='bilinear', *, roundtrip=True, mapping_tolerance=1e-4, "
     "dtype=None, block=None) -> Node\n\nInterpolation onto target (a Wcs or header text with "
     "NAXISn).  order: 'nearest-neighbor' ('nearest'), 'bilinear', 'biquadratic', 'bicubic' or "
     "0-3, 'lanczos2', 'lanczos3', 'lanczos4' (SWarp's kernels).  roundtrip: NaN where output->input->output moves over 1 px (reproject's "
     "roundtrip_coords).  mapping_tolerance: pixels, 0 = exact transform at every pixel.  dtype: "
     "None (float32, float64 for float64 input), 'float32' or 'float64'.  block: output chunk "
     "(ny, nx).  The footprint is footprint(node)."},
    {"reproject_adaptive", FN(Graph_reproject_adaptive), KW,
     "reproject_adaptive(src, target, *, kernel='gaussian', kernel_width=1.3, "
     "sample_region_width=4, boundary_mode='strict', boundary_fill_value=0, "
     "boundary_ignore_threshold=0.5, x_cyclic=False, y_cyclic=False, center_jacobian=False, "
     "despike_jacobian=False, conserve_flux=False, bad_value_mode='strict', bad_fill_value=0, "
     "roundtrip=True, mapping_tolerance=1e-4, dtype=None, block=None) -> Node\n\nAdaptive "
     "anti-aliased resampling (DeForest 2004) as tsr_reproject_adaptive.  kernel: 'gaussian' or "
     "'hann'; boundary_mode: 'strict', 'constant', 'grid-constant', 'ignore', "
     "'ignore_threshold', 'nearest'; bad_value_mode: 'strict', 'ignore', 'constant'."},
    {"reproject_exact", FN(Graph_reproject_exact), KW,
     "reproject_exact(src, target, *, nan_mode='propagate', dtype=None, block=None) -> Node\n\n"
     "Exact spherical-polygon overlap (flux-conserving).  nan_mode 'propagate' (reproject) or "
     "'ignore'.  Footprint: the summed overlap fractions."},
    {"reproject_to_healpix", FN(Graph_reproject_to_healpix), KW,
     "reproject_to_healpix(src, nside, order='bilinear', *, nested=False, coordsys=None, "
     "dtype=None, chunk=0, method='interp', nan_mode='propagate') -> Node\n\nsrc (a 2-D image "
     "with a celestial WCS) onto a HEALPix map of 12 nside^2 pixels (tsr_reproject_to_healpix, "
     "reproject_to_healpix's semantics; method 'exact': flux-conserving overlap, with "
     "nan_mode 'propagate' or 'ignore').  "
     "coordsys: the map's frame, 'G', 'C', 'E' or 'galactic', 'icrs', 'ecliptic' (None = the "
     "input's).  chunk: map pixels per chunk (0 = default).  The footprint is footprint(node)."},
    {"source_healpix", FN(Graph_source_healpix), KW,
     "source_healpix(path, hdu=None, field=0, nested=None, coordsys=None) -> Node\n\nA HEALPix "
     "FITS binary table as a lazy 1-D node of 12 nside^2 pixels (tsr_source_healpix): the header "
     "(and an explicit table's PIXEL column) is read now, values row by row as computations need "
     "them; pixels not held, UNSEEN and nulls are NaN.  hdu counts from 0 as in astropy (None = "
     "the first binary table); field: a value column's index (the PIXEL column not counted) or "
     "name; nested: None = the file's ORDERING, else True/False; coordsys: None = the file's "
     "COORDSYS, else 'G', 'C', 'E' (or 'galactic', 'icrs', 'ecliptic')."},
    {"reproject_from_healpix", FN(Graph_reproject_from_healpix), KW,
     "reproject_from_healpix(src, target, order='bilinear', *, nested=None, coordsys=None, "
     "dtype=None, block=None, method='interp', nan_mode='propagate') -> Node\n\nA HEALPix map "
     "(a source_healpix node, or any 1-D node of 12 nside^2 values with nested and coordsys "
     "given) onto target (tsr_reproject_from_healpix): order 'nearest-neighbor' (0) or "
     "'bilinear' (1, astropy-healpix's four-neighbour scheme; a NaN among the four gives NaN).  "
     "The footprint, footprint(node), is 1 where the output pixel is on the sky.  method "
     "'exact': flux-conserving overlap (nan_mode 'propagate' or 'ignore'; the footprint is the "
     "covered fraction)."},
    {"footprint", (PyCFunction)Graph_footprint, METH_O,
     "footprint(node) -> Node\n\nThe footprint plane of a reprojection or mosaic node, computed "
     "together with its data (compute both at once with compute([data, footprint]))."},
    {"binary", (PyCFunction)Graph_binary, METH_VARARGS,
     "binary(op, a, b) -> Node\n\na OP b elementwise with numpy broadcasting; op: 'add', 'sub', "
     "'mul', 'div', 'pow', 'min', 'max' (NaN-propagating), 'lt', 'le', 'gt', 'ge', 'eq', 'ne' (1 "
     "or 0)."},
    {"binary_scalar", (PyCFunction)Graph_binary_scalar, METH_VARARGS,
     "binary_scalar(op, a, s) -> Node\n\na OP s (s a float)."},
    {"scalar_binary", (PyCFunction)Graph_scalar_binary, METH_VARARGS,
     "scalar_binary(op, s, a) -> Node\n\ns OP a (s a float)."},
    {"unary", (PyCFunction)Graph_unary, METH_VARARGS,
     "unary(op, a) -> Node\n\nop: 'abs', 'sqrt', 'exp', 'log', 'log10', 'isnan'."},
    {"clip", (PyCFunction)Graph_clip, METH_VARARGS, "clip(a, lo, hi) -> Node"},
    {"where", (PyCFunction)Graph_where, METH_VARARGS,
     "where(mask, a, b) -> Node\n\na where mask is nonzero (NaN counts as nonzero), else b."},
    {"nan_to_num", FN(Graph_nan_to_num), KW,
     "nan_to_num(a, nan=0.0, posinf=None, neginf=None) -> Node\n\nAs numpy.nan_to_num."},
    {"astype", (PyCFunction)Graph_astype, METH_VARARGS, "astype(a, dtype) -> Node (float32/64)"},
    {"reduce", FN(Graph_reduce), KW,
     "reduce(op, a, axis=None, nan_ignoring=False) -> Node\n\nop: 'sum', 'mean', 'min', 'max', "
     "'count', 'std' (ddof 0) over numpy axis `axis` (removed) or all (a 1-element result).  "
     "nan_ignoring: nansum, nanmean, ...  float64 result."},
    {"slice", (PyCFunction)Graph_slice, METH_VARARGS,
     "slice(a, start, stop, step) -> Node\n\na[start:stop:step] per numpy axis (sequences of ndim "
     "integers, None = defaults; steps >= 1).  The WCS follows."},
    {"stack", FN(Graph_stack), KW,
     "stack(nodes, axis=0, concatenate=False) -> Node\n\nnumpy.stack (a new axis) or, with "
     "concatenate, numpy.concatenate along an existing axis."},
    {"cutout", (PyCFunction)Graph_cutout, METH_VARARGS,
     "cutout(a, lon, lat, (height, width)) -> Node\n\nastropy's Cutout2D (mode 'trim') about "
     "(lon, lat) in degrees of a's frame."},
    {"crop_to", (PyCFunction)Graph_crop_to, METH_VARARGS,
     "crop_to(a, wcs) -> Node\n\nThe smallest box of a holding the footprint of the image wcs "
     "describes."},
    {"coadd", FN(Graph_coadd), KW,
     "coadd(inputs, weights=None, *, combine='mean', blank=nan, dtype=None, block=None, "
     "offsets=None) -> Node\n\nA mosaic of reprojection nodes on one grid (tsr_coadd).  combine: "
     "'mean', 'sum', 'first', 'last', 'min', 'max', 'median'.  weights: None or a node (or None) "
     "per input.  offsets: one background offset per input, subtracted."},
    {"match_background", FN(tsrpy_graph_match_background), KW,
     "match_background(inputs, weights=None, reference=-1, jobs=1, executor=None, cache=None, "
     "cancel=None) -> list of float\n\nBackground offsets for coadd (tsr_coadd_match_background); "
     "computes the overlaps now with the GIL released."},
    {"compute", FN(tsrpy_graph_compute), KW,
     "compute(nodes, region=None, out=None, *, jobs=1, executor=None, cache=None, cancel=None, "
     "progress=None, blank=None) -> ndarray or tuple\n\nCompute region (numpy order: a tuple of slices, "
     "integers or (start, stop) pairs per axis; None = all) of a node, or of a list of planes of "
     "one computation (a reprojection and its footprint: computed once).  out: an array (or one "
     "per node) to write into, of the region's shape (np.memmap too); else new arrays are "
     "returned.  jobs: 1 = serial, N = N threads or processes, 0 = one per CPU.  executor: None, "
     "'threads' or 'processes'.  cache: a Cache, a directory (str), False for none, None = the "
     "TESSERA_CACHE directory if set.  cancel: a CancelToken.  progress: callable(done, total).  "
     "blank: None, or each node's blank value (NaN for data, 0 for a footprint), without out: "
     "the new arrays start as it in memory that costs only the pages written (tsr_blank_alloc), "
     "and ops that can (reproject_to_healpix) write only the pixels that get a value.  "
     "The GIL is released while the engine runs; Ctrl-C raises KeyboardInterrupt promptly."},
    {"write_fits", FN(tsrpy_graph_write_fits), KW,
     "write_fits(nodes, paths, region=None, *, jobs=1, executor=None, cache=None, cancel=None, "
     "progress=None)\n\nCompute region of nodes (equal shapes) and write each to its FITS file, "
     "band by band (bounded memory); files appear only when complete."},
    {"write_hips", FN(tsrpy_graph_write_hips), KW,
     "write_hips(nodes, directory, *, level=-1, tile_width=0, frame=None, order=1, "
     "mapping_tolerance=1e-4, combine='mean', formats='fits,png', moc=True, title=None, "
     "cut=None, stretch='linear', jobs=1, executor=None, cache=None, cancel=None, "
     "progress=None)\n\nWrite the 2-D celestial images `nodes` as a HiPS directory "
     "(tsr_write_hips): tiles of every order, Allsky, Moc.fits, properties.  directory must be "
     "new (its parent must exist) or empty; on failure what was written is removed.  level -1: "
     "from the finest input's resolution; tile_width 0: 512; frame 'equatorial', 'galactic' or "
     "'ecliptic'; order 0-3; cut (low, high) for the PNG grey scale (default: percentiles of a "
     "sample).  progress counts tiles.  Returns {'level', 'tile_width', 'candidates', "
     "'tiles_deepest', 'tiles_total', 'cut'}."},
    {NULL, NULL, 0, NULL}};

static PyGetSetDef Graph_getset[] = {
    {"error", (getter)Graph_get_status, NULL, "the first build error's message, or None", NULL},
    {"py_callbacks", (getter)Graph_get_py_callbacks, NULL,
     "whether a source of the graph calls Python", NULL},
    {NULL, NULL, NULL, NULL, NULL}};

PyTypeObject tsrpy_GraphType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "tessera._core.Graph",
    .tp_basicsize = sizeof(tsrpy_graph_t),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Graph()\n\nA lazy tessera graph.  Build nodes with its methods (shapes, regions and "
              "axes in numpy order), then compute(): any number of threads may compute one built "
              "graph at once, but nodes cannot be added while it computes.  After a build error "
              "the graph keeps it; make a new Graph.",
    .tp_new = Graph_new,
    .tp_dealloc = (destructor)Graph_dealloc,
    .tp_methods = Graph_methods,
    .tp_getset = Graph_getset,
};

/* ------------------------------------------------------------------ */
/* Module                                                             */

static PyObject *mod_optimal_wcs(PyObject *mod, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"inputs", "frame", "projection", "resolution", "reference",
                           "auto_rotate", NULL};
  PyObject *ins, *t = NULL, *refobj = Py_None, *res = NULL;
  const char *frame = NULL, *proj = NULL;
  tsr_optimal_wcs_opts_t o = TSR_OPTIMAL_WCS_OPTS_INIT;
  const tsr_wcs_t **ws = NULL;
  tsr_wcs_t **owned = NULL, *out = NULL;
  Py_ssize_t n = 0;
  int rc;
  (void)mod;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|$zzdOp:optimal_wcs", kwlist, &ins, &frame, &proj,
                                   &o.resolution, &refobj, &o.auto_rotate))
    return NULL;
  if ((t = PySequence_Tuple(ins)) == NULL)
    return NULL;
  n = PyTuple_GET_SIZE(t);
  ws = PyMem_Calloc((size_t)(n ? n : 1), sizeof *ws);
  owned = PyMem_Calloc((size_t)(n ? n : 1), sizeof *owned);
  if (ws == NULL || owned == NULL) {
    PyErr_NoMemory();
    goto out;
  }
  for (Py_ssize_t i = 0; i < n; i++)
    if (tsrpy_wcs_from_py(PyTuple_GET_ITEM(t, i), 1, 0, &ws[i], &owned[i]) < 0)
      goto out;
  if (refobj != Py_None) {
    if (!PyArg_ParseTuple(refobj, "dd;reference: expected (lon, lat) in degrees", &o.reference_lon,
                          &o.reference_lat))
      goto out;
    o.has_reference = 1;
  }
  o.frame = frame, o.projection = proj;
  rc = tsr_optimal_wcs(tsrpy_ctx, (int)n, ws, &o, &out);
  if (rc != 0)
    tsrpy_raise_ctx(rc, NULL);
  else
    res = tsrpy_wcs_wrap(out);
out:
  for (Py_ssize_t i = 0; owned && i < n; i++)
    tsr_wcs_free(owned[i]);
  PyMem_Free(owned);
  PyMem_Free((void *)ws);
  Py_XDECREF(t);
  return res;
}

static PyObject *mod_version(PyObject *mod, PyObject *unused) {
  (void)mod, (void)unused;
  return PyUnicode_FromString(tsr_version_string());
}

static PyObject *mod_has_mpi(PyObject *mod, PyObject *unused) {
  (void)mod, (void)unused;
  return PyBool_FromLong(tsr_has_mpi());
}

static PyMethodDef mod_methods[] = {
    {"optimal_wcs", FN(mod_optimal_wcs), KW,
     "optimal_wcs(inputs, *, frame=None, projection=None, resolution=0.0, reference=None, "
     "auto_rotate=False) -> Wcs\n\nA target covering every input WCS (Wcs or header text with "
     "NAXISn): frame 'icrs', 'fk5', 'galactic', 'ecliptic' (None = the first input's); projection "
     "three letters (None = TAN); resolution degrees/pixel (0 = the finest input's); reference "
     "(lon, lat) degrees as CRVAL."},
    {"version", mod_version, METH_NOARGS, "version() -> str: the C library's version"},
    {"has_mpi", mod_has_mpi, METH_NOARGS, "has_mpi() -> bool"},
    {"hash", tsrpy_hash, METH_VARARGS,
     "hash(array) -> bytes\n\nThe 16-byte XXH3-128 of an array's values with its dtype and shape "
     "(any strides), as source_array keys the arrays it hashes."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moddef = {
    PyModuleDef_HEAD_INIT, "tessera._core",
    "The tessera C library for Python: graphs of lazy arrays (FITS files, numpy arrays, "
    "callbacks), reprojections, array ops, mosaics, computed with the GIL released.  Shapes, "
    "regions and axes are in numpy order.", -1, mod_methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__core(void);
PyMODINIT_FUNC PyInit__core(void) {
  PyObject *m;
  PyTypeObject *types[] = {&tsrpy_WcsType, &tsrpy_CacheType, &tsrpy_CancelType, &tsrpy_GraphType,
                           &tsrpy_NodeType};
  const char *names[] = {"Wcs", "Cache", "CancelToken", "Graph", "Node"};
  int rc;

  import_array();
  if (tsrpy_ctx == NULL && (rc = tsr_ctx_new(&tsrpy_ctx, NULL)) != 0)
    return PyErr_Format(PyExc_ImportError, "tessera: cannot make a context: %s", tsr_strerror(rc));
  m = PyModule_Create(&moddef);
  if (m == NULL)
    return NULL;
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
    if (PyType_Ready(types[i]) < 0 || PyModule_AddObjectRef(m, names[i], (PyObject *)types[i]) < 0) {
      Py_DECREF(m);
      return NULL;
    }
  }
  tsrpy_CancelledError = PyErr_NewExceptionWithDoc(
      "tessera.CancelledError", "A computation was stopped by its CancelToken.",
      PyExc_RuntimeError, NULL);
  if (tsrpy_CancelledError == NULL ||
      PyModule_AddObjectRef(m, "CancelledError", tsrpy_CancelledError) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
