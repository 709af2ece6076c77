/* py_sources.c -- numpy arrays and Python callables as graph sources.
 *
 * DESIGN: a native float32/float64 C-contiguous array is lent to the
 * library in place (tsr_source_buffer_ref).  Any other array -- integers,
 * float16, the other byte order, strided views, memory maps whose identity
 * stands in for a hash -- becomes a tsr_source_callback whose callback
 * converts exactly the window asked for, in C, without the GIL, so threads
 * convert in parallel and the whole array is never copied (a 1 GiB
 * big-endian memmap costs only the windows read).  A Python callable (a
 * dask array's windows) is a tsr_source_callback that takes the GIL for
 * each window.  What a callback borrows lives in a capsule on the graph's
 * `keep` list, freed after the graph.
 */
#include "py_core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

/* ------------------------------------------------------------------ */
/* Converting rows of any numeric dtype to float32/float64             */

typedef struct {
  PyArrayObject *arr;         /* strong reference, via the capsule */
  const char *data;           /* element (0, ..., 0) */
  int nd;                     /* numpy axes */
  npy_intp shape[TSR_MAX_DIMS], strides[TSR_MAX_DIMS]; /* numpy order, bytes */
  char kind;                  /* 'b', 'i', 'u', 'f' */
  int itemsize;
  int swap;                   /* values are in the other byte order */
  int fd;                     /* >= 0: read the bytes from this file (pread), not memory */
  int64_t file_offset;        /* byte offset in fd of element (0, ..., 0) */
} array_src_t;

static inline uint64_t load_bits(const char *p, int size, int swap) {
  uint8_t u8;
  uint16_t u16;
  uint32_t u32;
  uint64_t u64;
  switch (size) {
  case 1:
    memcpy(&u8, p, 1);
    return u8;
  case 2:
    memcpy(&u16, p, 2);
    return swap ? __builtin_bswap16(u16) : u16;
  case 4:
    memcpy(&u32, p, 4);
    return swap ? __builtin_bswap32(u32) : u32;
  default:
    memcpy(&u64, p, 8);
    return swap ? __builtin_bswap64(u64) : u64;
  }
}

static double half_to_double(uint16_t h) {
  int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  double v = e == 0 ? ldexp((double)m, -24) : e == 31 ? (m ? NAN : INFINITY)
                                                      : ldexp((double)(m | 0x400), e - 25);
  return (h & 0x8000) ? -v : v;
}

static inline double to_double(uint64_t b, char kind, int size) {
  switch (kind) {
  case 'b':
    return b != 0;
  case 'u':
    return (double)b;
  case 'i':
    switch (size) {
    case 1: return (double)(int8_t)b;
    case 2: return (double)(int16_t)b;
    case 4: return (double)(int32_t)b;
    default: return (double)(int64_t)b;
    }
  default:
    if (size == 2)
      return half_to_double((uint16_t)b);
    if (size == 4) {
      uint32_t u = (uint32_t)b;
      float f;
      memcpy(&f, &u, 4);
      return f;
    } else {
      double d;
      memcpy(&d, &b, 8);
      return d;
    }
  }
}

/* Row of n values from src (byte stride s) into dst as float32 or float64. */
static void convert_row(const array_src_t *a, const char *src, npy_intp s, int64_t n, void *dst,
                        tsr_dtype_t dt) {
  int es = (int)tsr_dtype_size(dt);
  if (a->kind == 'f' && a->itemsize == es && !a->swap && s == es) {
    memcpy(dst, src, (size_t)n * (size_t)es);
    return;
  }
  if (a->kind == 'f' && a->itemsize == 4 && dt == TSR_F32) {
    /* float32 to float32 through double would be exact too, but keep the
     * bits of NaN payloads and skip the widening. */
    float *o = dst;
    for (int64_t i = 0; i < n; i++) {
      uint32_t u = (uint32_t)load_bits(src + i * s, 4, a->swap);
      memcpy(&o[i], &u, 4);
    }
    return;
  }
  if (dt == TSR_F32) {
    float *o = dst;
    for (int64_t i = 0; i < n; i++)
      o[i] = (float)to_double(load_bits(src + i * s, a->itemsize, a->swap), a->kind, a->itemsize);
  } else {
    double *o = dst;
    for (int64_t i = 0; i < n; i++)
      o[i] = to_double(load_bits(src + i * s, a->itemsize, a->swap), a->kind, a->itemsize);
  }
}

/* The bytes of one window row of a file-backed array: n values from byte
 * `off` of the file with stride s, into buf (room for the row's span).
 * Returns the row's first value in buf, or NULL on a failed or short read. */
static const char *read_row(const array_src_t *a, int64_t off, npy_intp s, int64_t n, char *buf) {
  int64_t lo = s < 0 ? off + (n - 1) * s : off;
  size_t span = (size_t)((n - 1) * (s < 0 ? -s : s)) + (size_t)a->itemsize, got = 0;
  while (got < span) {
    ssize_t r = pread(a->fd, buf + got, span - got, (off_t)(lo + (int64_t)got));
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return NULL;
    got += (size_t)r;
  }
  return buf + (off - lo);
}

/* tsr_block_fn of a converted array: GIL-free, any thread or worker.  When
 * the run asks for a small part of its output (b->sparse), a memory map of
 * a file is read with pread rather than through its mapping: a page fault
 * reads ahead around the page (128 KiB), so a window of short rows far
 * apart costs a hundred times its size in I/O.  Otherwise the mapping
 * serves: a pread per window row costs more than the faults of a scan
 * (measured: 16384^2 whole, 5.5 s mapped against 9 s with pread). */
static int array_window(void *user, const tsr_block_t *b) {
  const array_src_t *a = user;
  int nd = a->nd;
  size_t es = tsr_dtype_size(b->dtype);
  int64_t nx = b->out.stop[0] - b->out.start[0];
  char *dst = b->data, *buf = NULL;
  int rc = 0;
  /* C axis c is numpy axis nd - 1 - c; C axes past nd are [0, 1). */
  npy_intp st[TSR_MAX_DIMS] = {0, 0, 0, 0};
  for (int c = 0; c < nd; c++)
    st[c] = a->strides[nd - 1 - c];
  int use_fd = a->fd >= 0 && b->sparse;
  if (a->fd >= 0 && !use_fd) {
    /* Through the mapping: a file truncated since it was mapped would kill
     * the process with SIGBUS at the first page past its end; check first. */
    int64_t lo = 0, hi = 0;
    struct stat sb;
    for (int c = 0; c < TSR_MAX_DIMS; c++) {
      int64_t p0 = b->out.start[c] * st[c], p1 = (b->out.stop[c] - 1) * st[c];
      lo += p0 < p1 ? p0 : p1;
      hi += p0 < p1 ? p1 : p0;
    }
    if (fstat(a->fd, &sb) != 0 || a->file_offset + lo < 0 ||
        (int64_t)sb.st_size < a->file_offset + hi + a->itemsize)
      return TSR_EIO;
  }
  if (use_fd &&
      (buf = malloc((size_t)((nx - 1) * (st[0] < 0 ? -st[0] : st[0])) + (size_t)a->itemsize)) == NULL)
    return TSR_ENOMEM;
  for (int64_t w = b->out.start[3]; w < b->out.stop[3] && rc == 0; w++)
    for (int64_t z = b->out.start[2]; z < b->out.stop[2] && rc == 0; z++)
      for (int64_t y = b->out.start[1]; y < b->out.stop[1]; y++) {
        int64_t off = b->out.start[0] * st[0] + y * st[1] + z * st[2] + w * st[3];
        const char *src = use_fd ? read_row(a, a->file_offset + off, st[0], nx, buf)
                                 : a->data + off;
        if (src == NULL) {
          rc = TSR_EIO;
          break;
        }
        convert_row(a, src, st[0], nx, dst, b->dtype);
        dst += (size_t)nx * es;
      }
  free(buf);
  return rc;
}

static void array_src_free(PyObject *cap) {
  array_src_t *a = PyCapsule_GetPointer(cap, "tessera.array_src");
  if (a) {
    if (a->fd >= 0)
      close(a->fd);
    Py_XDECREF(a->arr);
    PyMem_Free(a);
  }
}

/* XXH3-128 of the values of `arr` in C order, with its dtype and shape. */
static int hash_array(PyArrayObject *arr, uint8_t key[16]) {
  XXH3_state_t *st = XXH3_createState();
  PyArray_Descr *d = PyArray_DESCR(arr);
  int nd = PyArray_NDIM(arr);
  npy_intp *shape = PyArray_DIMS(arr);
  npy_intp idx[NPY_MAXDIMS] = {0};
  XXH128_hash_t h;
  char head[64];
  if (st == NULL) {
    PyErr_NoMemory();
    return -1;
  }
  XXH3_128bits_reset(st);
  snprintf(head, sizeof head, "%c%c%d:%d", d->kind, d->byteorder, d->elsize, nd);
  XXH3_128bits_update(st, head, strlen(head));
  XXH3_128bits_update(st, shape, (size_t)nd * sizeof *shape);
  if (PyArray_SIZE(arr) > 0) {
    /* Row by row along the last axis, which is contiguous in the common case. */
    npy_intp last = nd ? shape[nd - 1] : 1, ls = nd ? PyArray_STRIDES(arr)[nd - 1] : 0;
    for (;;) {
      const char *p = PyArray_DATA(arr);
      for (int k = 0; k < nd - 1; k++)
        p += idx[k] * PyArray_STRIDES(arr)[k];
      if (ls == d->elsize)
        XXH3_128bits_update(st, p, (size_t)last * (size_t)d->elsize);
      else
        for (npy_intp i = 0; i < last; i++)
          XXH3_128bits_update(st, p + i * ls, (size_t)d->elsize);
      int k = nd - 2;
      for (; k >= 0; k--) {
        if (++idx[k] < shape[k])
          break;
        idx[k] = 0;
      }
      if (k < 0)
        break;
    }
  }
  h = XXH3_128bits_digest(st);
  XXH3_freeState(st);
  memcpy(key, &h.low64, 8);
  memcpy(key + 8, &h.high64, 8);
  return 0;
}

PyObject *tsrpy_hash(PyObject *self, PyObject *args) {
  PyObject *o;
  PyArrayObject *arr;
  uint8_t key[16];
  int rc;
  (void)self;
  if (!PyArg_ParseTuple(args, "O:hash", &o))
    return NULL;
  if ((arr = (PyArrayObject *)PyArray_FROMANY(o, NPY_NOTYPE, 0, 0, 0)) == NULL)
    return NULL;
  Py_BEGIN_ALLOW_THREADS
  rc = hash_array(arr, key);
  Py_END_ALLOW_THREADS
  Py_DECREF(arr);
  if (rc < 0)
    return NULL;
  return PyBytes_FromStringAndSize((const char *)key, 16);
}

/* Keep `cap` (a new reference) with the graph; steals it. */
static int keep(tsrpy_graph_t *g, PyObject *cap) {
  int rc;
  if (cap == NULL)
    return -1;
  rc = PyList_Append(g->keep, cap);
  Py_DECREF(cap);
  return rc;
}

PyObject *tsrpy_graph_source_array(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"array", "header", "key", "dtype", "file", NULL};
  PyObject *obj, *hdr = Py_None, *keyobj = Py_None, *dtypeobj = Py_None, *fileobj = Py_None;
  PyObject *res = NULL;
  PyArrayObject *arr = NULL;
  PyArray_Descr *d;
  const tsr_wcs_t *wcs = NULL;
  tsr_wcs_t *owned = NULL;
  int64_t shape[TSR_MAX_DIMS];
  tsr_node_t *n;
  int nd, dt;

  if (!PyArg_ParseTupleAndKeywords(args, kw, "O|OOOO:source_array", kwlist, &obj, &hdr, &keyobj,
                                   &dtypeobj, &fileobj) ||
      !tsrpy_graph_buildable(self))
    return NULL;
  if (keyobj != Py_None && !PyBytes_Check(keyobj))
    return PyErr_Format(PyExc_TypeError, "source_array: key must be bytes or None, got %.80s",
                        Py_TYPE(keyobj)->tp_name);
  if (!PyArray_Check(obj))
    return PyErr_Format(PyExc_TypeError, "source_array: expected a numpy array, got %.80s",
                        Py_TYPE(obj)->tp_name);
  arr = (PyArrayObject *)obj;
  Py_INCREF(arr);
  d = PyArray_DESCR(arr);
  nd = PyArray_NDIM(arr);
  if (nd < 1 || nd > TSR_MAX_DIMS) {
    PyErr_Format(PyExc_ValueError, "source_array: the array has %d axes; expected 1 to %d", nd,
                 TSR_MAX_DIMS);
    goto out;
  }
  if (!(d->kind == 'b' || d->kind == 'i' || d->kind == 'u' ||
        (d->kind == 'f' && (d->elsize == 2 || d->elsize == 4 || d->elsize == 8)))) {
    PyErr_Format(PyExc_ValueError, "source_array: dtype %R is not supported; expected booleans, "
                 "integers or floats of 16, 32 or 64 bits", (PyObject *)d);
    goto out;
  }
  for (int i = 0; i < nd; i++) {
    if (PyArray_DIM(arr, i) < 1) {
      PyErr_Format(PyExc_ValueError, "source_array: axis %d has length 0", i);
      goto out;
    }
    shape[nd - 1 - i] = PyArray_DIM(arr, i);
  }
  if ((dt = tsrpy_dtype_from_py(dtypeobj, 1)) < 0)
    goto out;
  if (dt == 0)
    dt = (d->kind == 'f' && d->elsize == 8) || ((d->kind == 'i' || d->kind == 'u') && d->elsize >= 4)
             ? TSR_F64
             : TSR_F32;
  if (tsrpy_wcs_from_py(hdr, 0, 1, &wcs, &owned) < 0)
    goto out;
  if (fileobj == Py_None && keyobj == Py_None && d->kind == 'f' && (int)tsr_dtype_size(dt) == d->elsize &&
      PyArray_ISNBO(d->byteorder) && PyArray_IS_C_CONTIGUOUS(arr) && PyArray_ISALIGNED(arr)) {
    /* In place; the library hashes the bytes for the key. */
    Py_BEGIN_ALLOW_THREADS
    n = tsr_source_buffer_ref(self->g, (tsr_dtype_t)dt, nd, shape, PyArray_DATA(arr), wcs);
    Py_END_ALLOW_THREADS
    if (n != NULL && PyList_Append(self->keep, obj) < 0)
      goto out;
    res = tsrpy_node_wrap(self, n);
  } else {
    tsr_source_callback_opts_t o;
    array_src_t *a = PyMem_Calloc(1, sizeof *a);
    uint8_t key[16];
    char params[64];
    int rc = 0;
    if (a == NULL) {
      PyErr_NoMemory();
      goto out;
    }
    a->arr = arr;
    Py_INCREF(arr);
    a->data = PyArray_DATA(arr);
    a->nd = nd;
    for (int i = 0; i < nd; i++)
      a->shape[i] = PyArray_DIM(arr, i), a->strides[i] = PyArray_STRIDE(arr, i);
    a->kind = d->kind;
    a->itemsize = d->elsize;
    a->swap = d->elsize > 1 && !PyArray_ISNBO(d->byteorder);
    a->fd = -1;
    if (fileobj != Py_None) {
      PyObject *pathb = NULL;
      long long foff;
      if (!PyArg_ParseTuple(fileobj, "O&L;file: expected (path, offset)", PyUnicode_FSConverter,
                            &pathb, &foff)) {
        Py_DECREF(arr);
        PyMem_Free(a);
        goto out;
      }
      a->fd = open(PyBytes_AS_STRING(pathb), O_RDONLY | O_CLOEXEC);
      a->file_offset = foff;
      if (a->fd < 0) {
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, pathb);
        Py_DECREF(pathb);
        Py_DECREF(arr);
        PyMem_Free(a);
        goto out;
      }
      Py_DECREF(pathb);
    }
    if (keep(self, PyCapsule_New(a, "tessera.array_src", array_src_free)) < 0) {
      if (!PyErr_Occurred())
        PyErr_NoMemory();
      Py_DECREF(arr);
      PyMem_Free(a);
      goto out;
    }
    memset(&o, 0, sizeof o);
    o.name = "array";
    o.dtype = dt;
    o.ndim = nd;
    memcpy(o.shape, shape, sizeof shape);
    o.wcs = wcs;
    if (keyobj != Py_None) {
      /* The caller's identity (a memmap's file), qualified by the view. */
      PyObject *kb = PyBytes_FromFormat("%c%c%d|", d->kind, d->byteorder, d->elsize);
      for (int i = 0; kb && i < nd; i++) {
        PyObject *part = PyBytes_FromFormat("%zd:%zd|", (Py_ssize_t)a->shape[i],
                                            (Py_ssize_t)a->strides[i]);
        PyBytes_ConcatAndDel(&kb, part);
      }
      if (kb == NULL)
        goto out;
      PyBytes_Concat(&kb, keyobj);
      if (kb == NULL || keep(self, kb) < 0)
        goto out;
      o.params = PyBytes_AS_STRING(kb);
      o.params_len = (size_t)PyBytes_GET_SIZE(kb);
    } else {
      Py_BEGIN_ALLOW_THREADS
      rc = hash_array(arr, key);
      Py_END_ALLOW_THREADS
      if (rc < 0)
        goto out;
      memcpy(params, key, 16);
      o.params = params;
      o.params_len = 16;
    }
    n = tsr_source_callback(self->g, array_window, a, &o);
    res = tsrpy_node_wrap(self, n);
  }
out:
  tsr_wcs_free(owned);
  Py_XDECREF(arr);
  return res;
}

/* ------------------------------------------------------------------ */
/* Python callables                                                   */

typedef struct {
  PyObject *fn;               /* strong reference, via the capsule */
  tsrpy_graph_t *graph;       /* borrowed: the capsule lives in graph->keep */
  int nd;
} py_src_t;

static void py_src_free(PyObject *cap) {
  py_src_t *p = PyCapsule_GetPointer(cap, "tessera.py_src");
  if (p) {
    Py_XDECREF(p->fn);
    PyMem_Free(p);
  }
}

/* The window as a tuple of slices in numpy order. */
static PyObject *window_slices(const tsr_region_t *r, int nd) {
  PyObject *t = PyTuple_New(nd);
  for (int i = 0; t && i < nd; i++) {
    int c = nd - 1 - i;
    PyObject *a = PyLong_FromLongLong((long long)r->start[c]);
    PyObject *b = PyLong_FromLongLong((long long)r->stop[c]);
    PyObject *s = a && b ? PySlice_New(a, b, NULL) : NULL;
    Py_XDECREF(a);
    Py_XDECREF(b);
    if (s == NULL) {
      Py_DECREF(t);
      return NULL;
    }
    PyTuple_SET_ITEM(t, i, s);
  }
  return t;
}

static int py_window(void *user, const tsr_block_t *b) {
  py_src_t *p = user;
  PyGILState_STATE gs = PyGILState_Ensure();
  PyObject *win = NULL, *res = NULL;
  PyArrayObject *dst = NULL, *val = NULL;
  npy_intp dims[TSR_MAX_DIMS];
  int rc = -1;

  for (int i = 0; i < p->nd; i++)
    dims[i] = (npy_intp)(b->out.stop[p->nd - 1 - i] - b->out.start[p->nd - 1 - i]);
  if ((win = window_slices(&b->out, p->nd)) == NULL)
    goto out;
  if ((res = PyObject_CallOneArg(p->fn, win)) == NULL)
    goto out;
  if ((val = (PyArrayObject *)PyArray_FROMANY(res, NPY_NOTYPE, 0, 0, 0)) == NULL)
    goto out;
  if (PyArray_NDIM(val) != p->nd || memcmp(PyArray_DIMS(val), dims, sizeof(npy_intp) * (size_t)p->nd)) {
    PyObject *got = PyObject_GetAttrString((PyObject *)val, "shape");
    PyErr_Format(PyExc_ValueError, "source_callback: the callable returned shape %R for window %R",
                 got, win);
    Py_XDECREF(got);
    goto out;
  }
  dst = (PyArrayObject *)PyArray_New(&PyArray_Type, p->nd, dims,
                                     b->dtype == TSR_F64 ? NPY_FLOAT64 : NPY_FLOAT32, NULL, b->data,
                                     0, NPY_ARRAY_CARRAY, NULL);
  if (dst == NULL || PyArray_CopyInto(dst, val) < 0)
    goto out;
  rc = 0;
out:
  if (rc != 0 && p->graph->pending == NULL) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value && tb)
      PyException_SetTraceback(value, tb);
    p->graph->pending = value;
    Py_XDECREF(type);
    Py_XDECREF(tb);
  }
  PyErr_Clear();
  Py_XDECREF(win);
  Py_XDECREF(res);
  Py_XDECREF(val);
  Py_XDECREF(dst);
  PyGILState_Release(gs);
  return rc;
}

PyObject *tsrpy_graph_source_callback(tsrpy_graph_t *self, PyObject *args, PyObject *kw) {
  static char *kwlist[] = {"fn", "shape", "dtype", "name", "key", "header", NULL};
  PyObject *fn, *shapeobj, *dtypeobj, *keyobj, *hdr = Py_None, *t = NULL, *res = NULL;
  const char *name;
  const tsr_wcs_t *wcs = NULL;
  tsr_wcs_t *owned = NULL;
  tsr_source_callback_opts_t o;
  py_src_t *p;
  int dt, nd;

  if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOsO!|O:source_callback", kwlist, &fn, &shapeobj,
                                   &dtypeobj, &name, &PyBytes_Type, &keyobj, &hdr) ||
      !tsrpy_graph_buildable(self))
    return NULL;
  if (!PyCallable_Check(fn))
    return PyErr_Format(PyExc_TypeError, "source_callback: fn is not callable");
  if ((dt = tsrpy_dtype_from_py(dtypeobj, 0)) < 0)
    return NULL;
  if ((t = PySequence_Tuple(shapeobj)) == NULL)
    return NULL;
  nd = (int)PyTuple_GET_SIZE(t);
  memset(&o, 0, sizeof o);
  if (nd < 1 || nd > TSR_MAX_DIMS) {
    PyErr_Format(PyExc_ValueError, "source_callback: %d axes; expected 1 to %d", nd, TSR_MAX_DIMS);
    goto out;
  }
  for (int i = 0; i < nd; i++) {
    long long v = PyLong_AsLongLong(PyTuple_GET_ITEM(t, i));
    if (v == -1 && PyErr_Occurred())
      goto out;
    o.shape[nd - 1 - i] = v;
  }
  if (tsrpy_wcs_from_py(hdr, 0, 1, &wcs, &owned) < 0)
    goto out;
  if ((p = PyMem_Calloc(1, sizeof *p)) == NULL) {
    PyErr_NoMemory();
    goto out;
  }
  Py_INCREF(fn);
  p->fn = fn;
  p->graph = self;
  p->nd = nd;
  if (keep(self, PyCapsule_New(p, "tessera.py_src", py_src_free)) < 0) {
    Py_DECREF(fn);
    PyMem_Free(p);
    goto out;
  }
  if (PyList_Append(self->keep, keyobj) < 0)
    goto out;
  o.name = name;
  o.params = PyBytes_AS_STRING(keyobj);
  o.params_len = (size_t)PyBytes_GET_SIZE(keyobj);
  o.dtype = dt;
  o.ndim = nd;
  o.wcs = wcs;
  self->py_callbacks = 1;
  res = tsrpy_node_wrap(self, tsr_source_callback(self->g, py_window, p, &o));
out:
  tsr_wcs_free(owned);
  Py_XDECREF(t);
  return res;
}
