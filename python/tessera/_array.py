"""Lazy arrays: tessera.Array, tessera.open, tessera.from_array, tessera.coadd.

An Array is a recipe: a small tree of (op, args) whose leaves are FITS files
(path and HDU), numpy arrays (with WCS header text) or dask arrays.  It is
what gets pickled -- to dask workers, to other processes -- never a C
pointer.  Each process (and each Array) lowers the recipe to a C graph once,
when it is first needed, and keeps it; any number of threads then compute
regions of it at once.

Axis order: numpy's outside (the last axis varies fastest), FITS order inside
the C library; _core converts.  A node may have more axes than the Array:
integer indexing of leading axes and whole-array reductions leave leading
axes of length 1 in the C node, which the Array does not show.  The one
place that maps Array shapes and regions onto node ones is `_node_region`.
"""
import collections
import os
import threading
import uuid

import numpy as np

from . import _core

__all__ = ['Array', 'open', 'from_array', 'coadd', 'reproject']


# The engine's dtype for a source of numpy dtype `dt`: float64 for float64
# and for 32/64-bit integers (as FITS BITPIX 32/64 are read), else float32.
def _engine_dtype(dt):
    dt = np.dtype(dt)
    if dt.kind == 'f' and dt.itemsize == 8:
        return np.dtype(np.float64)
    if dt.kind in 'iu' and dt.itemsize >= 4:
        return np.dtype(np.float64)
    if dt.kind in 'biuf':
        return np.dtype(np.float32)
    raise ValueError(f"tessera: dtype {dt} is not supported; expected booleans, integers or floats")


def _header_text(wcs, shape):
    """WCS header text for the engine from an astropy WCS, a Header, header
    text or None; NAXISn of `shape` (numpy order) are added when missing."""
    if wcs is None:
        return None
    if isinstance(wcs, _core.Wcs):
        return wcs.cards
    if isinstance(wcs, (str, bytes)):
        return wcs.decode('latin-1') if isinstance(wcs, bytes) else wcs
    from astropy.io import fits
    from astropy.wcs import WCS
    if isinstance(wcs, WCS):
        header = wcs.to_header(relax=True)
        naxis = wcs.naxis
    elif isinstance(wcs, fits.Header):
        header = wcs.copy()
        naxis = header.get('NAXIS', header.get('WCSAXES', len(shape) if shape else 0))
    else:
        raise TypeError(f"tessera: expected an astropy WCS, a Header or header text, got "
                        f"{type(wcs).__name__}")
    if shape is not None:
        header['NAXIS'] = max(int(naxis), len(shape))
        for i, n in enumerate(reversed(shape)):
            header.set(f'NAXIS{i + 1}', int(n), after=f'NAXIS{i}' if i else 'NAXIS')
    return header.tostring()


def _astropy_wcs(cards, drop):
    from astropy.io import fits
    from astropy.wcs import WCS
    import warnings
    header = fits.Header.fromstring(cards)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        w = WCS(header)
    # Leading numpy axes the Array does not show are the last FITS axes.
    for c in sorted(drop, reverse=True):
        if c < w.naxis:
            w = w.dropaxis(c)
    return w


# ---------------------------------------------------------------------------
# Leaves

class _ArrayLeaf:
    """A numpy array (or memory map) with the key that identifies its values.

    A memory map pickles as its file, offset and view, and is mapped again
    on the other side (read-only), so a 1 GiB memmap costs nothing to send;
    its key is the file's identity, so it is never read whole to hash it.
    """

    def __init__(self, arr):
        self.arr = arr
        self._key = None
        self.mm = _memmap_origin(arr)

    def key(self):
        if self._key is None:
            if self.mm is not None:
                path, offset, _ = self.mm
                st = os.stat(path)
                self._key = (f'memmap:{path}:{st.st_dev}:{st.st_ino}:{st.st_size}:'
                             f'{st.st_mtime_ns}:{offset}').encode()
            else:
                self._key = _core.hash(self.arr)
        return self._key

    def file(self):
        """(path, offset) to read a memory map's windows from with pread (see
        py_sources.c), or None: its rows must be dense, and its mapping
        shared (a copy-on-write map's changes are not in the file)."""
        if self.mm is None or getattr(self.mm[2], 'mode', 'c') == 'c':
            return None
        a = self.arr
        if a.ndim and abs(a.strides[-1]) > 4 * a.dtype.itemsize:
            return None
        return self.mm[0], self.mm[1]

    def __reduce__(self):
        if self.mm is not None:
            path, offset, _ = self.mm
            return (_reopen_memmap, (path, offset, self.arr.dtype.str, self.arr.shape,
                                     self.arr.strides, self._key))
        return (_ArrayLeaf._restore, (self.arr, self._key))

    @staticmethod
    def _restore(arr, key):
        leaf = _ArrayLeaf(arr)
        leaf._key = key
        return leaf


def _memmap_origin(arr):
    """(path, byte offset in the file of arr's first element, root) when arr
    views a np.memmap of a file, else None."""
    root, base = None, arr
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap) and getattr(base, 'filename', None):
            root = base
        base = base.base
    if root is None or not isinstance(arr, np.ndarray):
        return None
    import mmap
    if not isinstance(base, mmap.mmap):
        return None
    # root's first element sits at root.offset in the file.
    delta = arr.__array_interface__['data'][0] - root.__array_interface__['data'][0]
    return (os.path.realpath(root.filename), root.offset + delta, root)


def _reopen_memmap(path, offset, dtype, shape, strides, key):
    dtype = np.dtype(dtype)
    extent = 0
    for n, s in zip(shape, strides):
        extent += (n - 1) * abs(s)
    lo = offset - sum((n - 1) * -s for n, s in zip(shape, strides) if s < 0)
    mm = np.memmap(path, dtype=np.uint8, mode='r', offset=lo, shape=(extent + dtype.itemsize,))
    arr = np.ndarray(shape, dtype=dtype, buffer=mm, offset=offset - lo, strides=strides)
    leaf = _ArrayLeaf(arr)
    leaf.mm = (path, offset, mm)
    leaf._key = key
    return leaf


class _DaskWindow:
    """A dask array's windows for the engine: only the chunks a window meets
    are computed, with dask's synchronous scheduler (the engine already runs
    windows in parallel, and a scheduler inside a dask worker's task would
    wait for the workers it occupies).  Neighbouring output blocks need
    overlapping windows, so the chunks computed last are kept, up to
    `budget` bytes (least recently used first out): memory stays bounded by
    the windows in flight plus that budget, and a chunk is rarely computed
    twice."""

    BUDGET = 64 << 20

    def __init__(self, darr, budget=None):
        self.darr = darr
        self.budget = self.BUDGET if budget is None else budget
        self._setup()

    def _setup(self):
        self.bounds = [np.cumsum((0,) + tuple(c)) for c in self.darr.chunks]
        self.cache = collections.OrderedDict()   # chunk index -> ndarray
        self.nbytes = 0
        self.lock = threading.Lock()

    def __getstate__(self):
        return {'darr': self.darr, 'budget': self.budget}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._setup()

    def __call__(self, window):
        import itertools
        import dask
        from dask.local import get_sync
        spans = []
        for s, b in zip(window, self.bounds):
            spans.append(range(int(np.searchsorted(b, s.start, 'right')) - 1,
                               int(np.searchsorted(b, s.stop, 'left'))))
        needed = list(itertools.product(*spans))
        have = {}
        with self.lock:
            for i in needed:
                if i in self.cache:
                    self.cache.move_to_end(i)
                    have[i] = self.cache[i]
        missing = [i for i in needed if i not in have]
        if missing:
            # The scheduler function itself: by name, dask warns when a
            # distributed client is active.
            values = dask.compute(*[self.darr.blocks[i] for i in missing], scheduler=get_sync)
            with self.lock:
                for i, v in zip(missing, values):
                    v = have[i] = np.asarray(v)
                    if i not in self.cache:
                        self.cache[i] = v
                        self.nbytes += v.nbytes
                while self.nbytes > self.budget and self.cache:
                    self.nbytes -= self.cache.popitem(last=False)[1].nbytes
        out = np.empty(tuple(s.stop - s.start for s in window), dtype=self.darr.dtype)
        for i, v in have.items():
            src, dst = [], []
            for ax, (s, b) in enumerate(zip(window, self.bounds)):
                lo, hi = max(s.start, int(b[i[ax]])), min(s.stop, int(b[i[ax] + 1]))
                src.append(slice(lo - int(b[i[ax]]), hi - int(b[i[ax]])))
                dst.append(slice(lo - s.start, hi - s.start))
            out[tuple(dst)] = v[tuple(src)]
        return out


# ---------------------------------------------------------------------------
# Lowering: recipe -> C graph, once per process and Array

_LOWERED = collections.OrderedDict()   # token -> (graph, node), for unpickled Arrays only
_LOWERED_MAX = 8
_lock = threading.Lock()

_EW_DTYPE_BOOL = {'lt', 'le', 'gt', 'ge', 'eq', 'ne', 'isnan'}


def _lower_into(g, a, nodes):
    """The node of Array `a` in graph g, building what is missing."""
    node = nodes.get(a._token)
    if node is not None:
        return node
    op, args = a._op, a._args

    def sub(x):
        return _lower_into(g, x, nodes)

    if op == 'fits':
        node = g.source_fits(args[0], hdu=args[1])
    elif op == 'array':
        leaf, header = args
        node = g.source_array(leaf.arr, header=header, key=leaf.key(), file=leaf.file())
    elif op == 'dask':
        darr, header, key = args
        node = g.source_callback(_DaskWindow(darr), darr.shape, _engine_dtype(darr.dtype), 'dask',
                                 key, header=header)
    elif op == 'binary':
        node = g.binary(args[0], sub(args[1]), sub(args[2]))
    elif op == 'binary_scalar':
        node = g.binary_scalar(args[0], sub(args[1]), args[2])
    elif op == 'scalar_binary':
        node = g.scalar_binary(args[0], args[1], sub(args[2]))
    elif op == 'unary':
        node = g.unary(args[0], sub(args[1]))
    elif op == 'reduce':
        node = g.reduce(args[0], sub(args[1]), axis=args[2], nan_ignoring=args[3])
    elif op == 'slice':
        node = g.slice(sub(args[0]), args[1], args[2], args[3])
    elif op == 'astype':
        node = g.astype(sub(args[0]), args[1])
    elif op == 'clip':
        node = g.clip(sub(args[0]), args[1], args[2])
    elif op == 'where':
        node = g.where(sub(args[0]), sub(args[1]), sub(args[2]))
    elif op == 'nan_to_num':
        node = g.nan_to_num(sub(args[0]), args[1], args[2], args[3])
    elif op == 'stack':
        node = g.stack([sub(x) for x in args[0]], axis=args[1], concatenate=args[2])
    elif op in ('reproject_interp', 'reproject_adaptive', 'reproject_exact'):
        node = getattr(g, op)(sub(args[0]), args[1], **dict(args[2]))
    elif op == 'reproject_to_healpix':
        node = g.reproject_to_healpix(sub(args[0]), args[1], **dict(args[2]))
    elif op == 'footprint':
        node = g.footprint(sub(args[0]))
    elif op == 'coadd':
        ins, ws, opts = args
        node = g.coadd([sub(x) for x in ins],
                       None if ws is None else [None if w is None else sub(w) for w in ws],
                       **dict(opts))
    else:
        raise AssertionError(f"tessera: unknown op {op!r}")
    nodes[a._token] = node
    return node


def _lowered(a):
    """(graph, node) of Array a in this process."""
    low = a.__dict__.get('_low')
    if low is not None:
        return low
    with _lock:
        low = a.__dict__.get('_low')
        if low is None and a._shared:
            low = _LOWERED.get(a._token)
            if low is not None:
                _LOWERED.move_to_end(a._token)
        if low is None:
            g = _core.Graph()
            low = (g, _lower_into(g, a, {}))
            if a._shared:
                # Unpickled copies of one recipe (a dask task's) share it.
                _LOWERED[a._token] = low
                while len(_LOWERED) > _LOWERED_MAX:
                    _LOWERED.popitem(last=False)
        a.__dict__['_low'] = low
    return low


# ---------------------------------------------------------------------------
# Array

_UFUNC_BINARY = {
    np.add: 'add', np.subtract: 'sub', np.multiply: 'mul', np.true_divide: 'div',
    np.power: 'pow', np.minimum: 'min', np.maximum: 'max', np.less: 'lt',
    np.less_equal: 'le', np.greater: 'gt', np.greater_equal: 'ge', np.equal: 'eq',
    np.not_equal: 'ne',
}
_UFUNC_UNARY = {np.absolute: 'abs', np.sqrt: 'sqrt', np.exp: 'exp', np.log: 'log',
                np.log10: 'log10', np.isnan: 'isnan'}


def _is_scalar(x):
    return isinstance(x, (int, float, np.integer, np.floating, np.bool_)) and not isinstance(x, Array)


class Array:
    """A lazy array computed by the tessera engine.

    Made by tessera.open, tessera.from_array, the reprojection functions
    (return_type='tessera'), tessera.coadd, and operations on Arrays:
    ``+ - * / **``, comparisons, ``abs``, numpy ufuncs the engine has
    (np.sqrt, np.exp, np.log, np.log10, np.isnan, np.minimum, ...),
    reductions (sum, mean, nanmean, min, max, std, count), slicing with
    steps (the WCS follows).  Nothing runs until compute(), np.asarray,
    to_fits or a task of to_dask() asks for a region, and then only the
    blocks and input windows that region needs.  Pickles as its recipe.
    """

    __array_priority__ = 20
    __hash__ = None

    def __init__(self, *a, **k):
        raise TypeError("tessera.Array is made by tessera.open, tessera.from_array, the "
                        "reprojection functions or operations on Arrays")

    @classmethod
    def _make(cls, op, args, shape=None, dtype=None, hide=0):
        """An Array of op over args, lowered now (which checks it); shape
        None = the node's without its first `hide` axes."""
        self = object.__new__(cls)
        self._op, self._args = op, args
        self._token = uuid.uuid4().hex
        self._shared = False
        node = _lowered(self)[1]
        nshape = node.shape
        if shape is None:
            shape = nshape[hide:]
        shape = tuple(int(n) for n in shape)
        lead = len(nshape) - len(shape)
        if lead < 0 or tuple(nshape[lead:]) != shape or any(n != 1 for n in nshape[:lead]):
            raise AssertionError(f"tessera: {op} gave a node of shape {nshape} for an array of "
                                 f"shape {shape}")
        self._shape, self._lead = shape, lead
        self._dtype = np.dtype(dtype) if dtype is not None else node.dtype
        return self

    # Pickling: the recipe only.
    def __reduce__(self):
        return (_rebuild, (self._op, self._args, self._shape, self._lead, self._dtype.str,
                           self._token))

    # --- properties
    @property
    def shape(self):
        return self._shape

    @property
    def ndim(self):
        return len(self._shape)

    @property
    def size(self):
        return int(np.prod(self._shape, dtype=np.int64))

    @property
    def dtype(self):
        return self._dtype

    @property
    def nbytes(self):
        return self.size * self._dtype.itemsize

    @property
    def chunks(self):
        """The engine's chunk shape (numpy order)."""
        return tuple(_lowered(self)[1].chunks[self._lead:])

    @property
    def wcs(self):
        """An astropy WCS of the array (None without one); axes the Array does
        not show are dropped."""
        w = _lowered(self)[1].wcs
        if w is None:
            return None
        nd = len(self._shape) + self._lead
        return _astropy_wcs(w.cards, [nd - 1 - i for i in range(self._lead)])

    @property
    def footprint(self):
        """The footprint of a reprojection or mosaic, as a lazy Array."""
        return Array._make('footprint', (self,), self._shape)

    @property
    def node(self):
        """This process's _core.Node of the array (its graph: node.graph)."""
        return _lowered(self)[1]

    def __len__(self):
        if not self._shape:
            raise TypeError("len() of a 0-d tessera.Array")
        return self._shape[0]

    def __repr__(self):
        return f"tessera.Array<{self._op}, shape={self._shape}, dtype={self._dtype}>"

    # --- computing
    def _node_region(self, region):
        """An Array region (a tuple of slices, integers or (start, stop) pairs,
        numpy order; None = all) as a node region, and the box's shape."""
        if region is None:
            return None, self._shape
        if not isinstance(region, tuple):
            region = (region,)
        if len(region) > len(self._shape):
            raise ValueError(f"tessera: region of {len(region)} axes for an array of "
                             f"{len(self._shape)}")
        box, shape = [], []
        for i, n in enumerate(self._shape):
            e = region[i] if i < len(region) else slice(None)
            if isinstance(e, slice):
                start, stop, step = e.indices(n)
                if step != 1:
                    raise ValueError("tessera: a region takes step 1; slice the Array for strides")
            elif isinstance(e, tuple) and len(e) == 2:
                start, stop = int(e[0]), int(e[1])
            else:
                start = int(e)
                if start < 0:
                    start += n
                stop = start + 1
            if not 0 <= start < stop <= n:
                raise ValueError(f"tessera: region axis {i} is [{start}, {stop}), outside or "
                                 f"empty for length {n}")
            box.append((start, stop))
            shape.append(stop - start)
        return tuple([(0, 1)] * self._lead + box), tuple(shape)

    def compute(self, region=None, *, out=None, jobs=0, executor=None, cache=None, cancel=None,
                progress=None, footprint=False, blank=False):
        """Compute `region` (None = all; a tuple of slices, integers or (start,
        stop) pairs per axis, a box whose shape the result has) into a new
        numpy array or `out` (np.memmap too).  jobs: 0 = one thread per CPU,
        1 = serial, N; executor None, 'threads' or 'processes'; cache: a
        tessera.Cache, a directory, False, or None for $TESSERA_CACHE;
        cancel: a tessera.CancelToken; progress: callable(done, total).
        With footprint=True, returns (data, footprint) computed together;
        with blank=True too (and no out), the new arrays start as NaN and 0
        in memory that costs only the pages written, and ops that can
        (reproject_to_healpix) write only the pixels that get a value: for
        mostly blank results such as a HEALPix map of one image.
        The GIL is released while the engine runs; Ctrl-C raises
        KeyboardInterrupt promptly."""
        g, node = _lowered(self)
        nreg, shape = self._node_region(region)
        nodes = [node, g.footprint(node)] if footprint else node
        if blank and (not footprint or out is not None):
            raise ValueError("tessera: blank=True is for new (data, footprint) arrays: "
                             "footprint=True and no out")
        outs = None
        if out is not None:
            outs = list(out) if footprint else [out]
            for o in outs:
                if not isinstance(o, np.ndarray) or o.shape != tuple(shape):
                    raise ValueError(f"tessera: out must be a numpy array of the region's shape "
                                     f"{tuple(shape)}, got {getattr(o, 'shape', type(o))}")
            # The engine writes C order over the node's region; _core copies
            # through a temporary when an out array is not so laid out.
            nshape = (1,) * self._lead + tuple(shape)
            views = [o.reshape(nshape) if o.flags.c_contiguous else None for o in outs]
            if any(v is None for v in views):
                res = self.compute(region, jobs=jobs, executor=executor, cache=cache,
                                   cancel=cancel, progress=progress, footprint=footprint)
                for o, r in zip(outs, res if footprint else [res]):
                    o[...] = r
                return out
            outs = views if footprint else views[0]
        res = g.compute(nodes, region=nreg, out=outs, jobs=jobs, executor=executor, cache=cache,
                        cancel=cancel, progress=progress,
                        blank=(np.nan, 0.0) if blank else None)
        if out is not None:
            return out
        if footprint:
            return (self._finish(res[0], shape), res[1].reshape(shape))
        return self._finish(res, shape)

    def _finish(self, arr, shape):
        arr = arr.reshape(shape)
        if self._dtype == np.bool_:
            arr = arr != 0
        if not shape:
            return arr[()]
        return arr

    def __array__(self, dtype=None):
        arr = np.asarray(self.compute())
        return arr.astype(dtype, copy=False) if dtype is not None else arr

    def to_fits(self, path, region=None, *, jobs=0, executor=None, cache=None, cancel=None,
                progress=None, footprint_path=None):
        """Write `region` (None = all) to a FITS file, band by band (memory
        bounded by a band), with the WCS shifted to the region; the file
        appears only when complete.  footprint_path: the footprint too."""
        g, node = _lowered(self)
        nreg, _ = self._node_region(region)
        nodes, paths = [node], [os.fspath(path)]
        if footprint_path is not None:
            nodes.append(g.footprint(node))
            paths.append(os.fspath(footprint_path))
        g.write_fits(nodes, paths, region=nreg, jobs=jobs, executor=executor, cache=cache,
                     cancel=cancel, progress=progress)

    def to_dask(self, chunks=None):
        """A dask array whose tasks compute their block through the engine
        (each task carries the pickled recipe, not C pointers): identical
        results on dask's threaded, processes and distributed schedulers.
        chunks: dask chunks (None = the engine's chunk shape)."""
        from ._dask import to_dask
        return to_dask(self, chunks)

    # --- operators
    def _binary(self, op, other, reflected=False):
        if isinstance(other, np.ndarray) or _is_dask(other):
            other = from_array(other)
        if isinstance(other, Array):
            a, b = (other, self) if reflected else (self, other)
            shape = np.broadcast_shapes(a._shape, b._shape)
            dtype = np.bool_ if op in _EW_DTYPE_BOOL else None
            return Array._make('binary', (op, a, b), shape, dtype)
        if _is_scalar(other):
            s = float(other)
            dtype = np.bool_ if op in _EW_DTYPE_BOOL else None
            if reflected:
                return Array._make('scalar_binary', (op, s, self), self._shape, dtype)
            return Array._make('binary_scalar', (op, self, s), self._shape, dtype)
        return NotImplemented

    def __add__(self, o): return self._binary('add', o)
    def __radd__(self, o): return self._binary('add', o, True)
    def __sub__(self, o): return self._binary('sub', o)
    def __rsub__(self, o): return self._binary('sub', o, True)
    def __mul__(self, o): return self._binary('mul', o)
    def __rmul__(self, o): return self._binary('mul', o, True)
    def __truediv__(self, o): return self._binary('div', o)
    def __rtruediv__(self, o): return self._binary('div', o, True)
    def __pow__(self, o): return self._binary('pow', o)
    def __rpow__(self, o): return self._binary('pow', o, True)
    def __lt__(self, o): return self._binary('lt', o)
    def __le__(self, o): return self._binary('le', o)
    def __gt__(self, o): return self._binary('gt', o)
    def __ge__(self, o): return self._binary('ge', o)
    def __eq__(self, o): return self._binary('eq', o)
    def __ne__(self, o): return self._binary('ne', o)

    def _unary(self, op):
        dtype = np.bool_ if op in _EW_DTYPE_BOOL else None
        return Array._make('unary', (op, self), self._shape, dtype)

    def __abs__(self):
        return self._unary('abs')

    def __neg__(self):
        # x * -1 flips the sign bit exactly (also of 0 and inf), as numpy's negative.
        return Array._make('binary_scalar', ('mul', self, -1.0), self._shape)

    def __pos__(self):
        return self

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method == '__call__' and not kwargs.get('out') and set(kwargs) <= {'out'}:
            if ufunc in _UFUNC_BINARY and len(inputs) == 2:
                a, b = inputs
                if isinstance(a, Array):
                    return a._binary(_UFUNC_BINARY[ufunc], b)
                return b._binary(_UFUNC_BINARY[ufunc], a, reflected=True)
            if ufunc in _UFUNC_UNARY and len(inputs) == 1:
                return inputs[0]._unary(_UFUNC_UNARY[ufunc])
            if ufunc is np.negative:
                return -inputs[0]
            if ufunc is np.positive:
                return inputs[0]
        # Not an engine op: numpy on the computed values.
        inputs = tuple(np.asarray(x) if isinstance(x, Array) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        impl = _FUNCTIONS.get(func)
        if impl is not None:
            res = impl(*args, **kwargs)
            if res is not NotImplemented:
                return res
        # Not lazy: numpy on the computed values.
        conv = lambda x: np.asarray(x) if isinstance(x, Array) else (
            type(x)(conv(y) for y in x) if isinstance(x, (list, tuple)) else x)
        return func(*conv(args), **{k: conv(v) for k, v in kwargs.items()})

    # --- reductions
    def _reduce(self, op, axis, nan):
        if isinstance(axis, tuple):
            if sorted(a % max(self.ndim, 1) for a in axis) != list(range(self.ndim)):
                raise NotImplementedError("tessera: reductions take one axis or all of them")
            axis = None
        if axis is None:
            return Array._make('reduce', (op, self, None, nan), ())
        axis = int(axis)
        if not -self.ndim <= axis < self.ndim:
            raise ValueError(f"tessera: axis {axis} out of range for {self.ndim} axes")
        axis %= self.ndim
        shape = self._shape[:axis] + self._shape[axis + 1:]
        return Array._make('reduce', (op, self, axis + self._lead, nan), shape)

    def sum(self, axis=None): return self._reduce('sum', axis, False)
    def mean(self, axis=None): return self._reduce('mean', axis, False)
    def min(self, axis=None): return self._reduce('min', axis, False)
    def max(self, axis=None): return self._reduce('max', axis, False)
    def std(self, axis=None): return self._reduce('std', axis, False)
    def nansum(self, axis=None): return self._reduce('sum', axis, True)
    def nanmean(self, axis=None): return self._reduce('mean', axis, True)
    def nanmin(self, axis=None): return self._reduce('min', axis, True)
    def nanmax(self, axis=None): return self._reduce('max', axis, True)
    def nanstd(self, axis=None): return self._reduce('std', axis, True)

    def count(self, axis=None):
        """The number of non-NaN values (over `axis` or all)."""
        return self._reduce('count', axis, True)

    def astype(self, dtype):
        dtype = np.dtype(dtype)
        if dtype == np.bool_:
            return self != 0
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"tessera: astype({dtype}): the engine computes float32 or float64")
        return Array._make('astype', (self, dtype.name), self._shape)

    def clip(self, lo, hi):
        return Array._make('clip', (self, float(lo), float(hi)), self._shape)

    # --- slicing
    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if any(k is None for k in key):
            raise IndexError("tessera: new axes (None) are not supported")
        if sum(k is Ellipsis for k in key) > 1:
            raise IndexError("tessera: one Ellipsis at most")
        if Ellipsis in key:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (self.ndim - len(key) + 1) + key[i + 1:]
        if len(key) > self.ndim:
            raise IndexError(f"tessera: {len(key)} indices for an array of {self.ndim} axes")
        key = key + (slice(None),) * (self.ndim - len(key))
        start, stop, step, shape = [0] * self._lead, [1] * self._lead, [1] * self._lead, []
        dropped = 0
        for i, (k, n) in enumerate(zip(key, self._shape)):
            if isinstance(k, slice):
                a, b, s = k.indices(n)
                if s < 1:
                    raise IndexError("tessera: negative steps are not supported")
                m = len(range(a, b, s))
                if m == 0:
                    raise IndexError(f"tessera: axis {i} would be empty ({k})")
                start.append(a), stop.append(b), step.append(s), shape.append(m)
            elif isinstance(k, (int, np.integer)):
                k = int(k)
                if not -n <= k < n:
                    raise IndexError(f"tessera: index {k} out of range for axis {i} of length {n}")
                k %= n
                if len(shape) != 0:
                    raise IndexError("tessera: integer indices only on leading axes (take a "
                                     f"length-1 slice, {k}:{k + 1}, on axis {i})")
                dropped += 1
                start.append(k), stop.append(k + 1), step.append(1)
            else:
                raise IndexError(f"tessera: index {k!r} is not supported (slices with steps "
                                 f">= 1 and integers)")
        return Array._make('slice', (self, tuple(start), tuple(stop), tuple(step)), tuple(shape),
                           self._dtype)


def _rebuild(op, args, shape, lead, dtype, token):
    self = object.__new__(Array)
    self._op, self._args = op, args
    self._shape, self._lead, self._dtype, self._token = shape, lead, np.dtype(dtype), token
    self._shared = True
    return self


def _is_dask(x):
    mod = type(x).__module__
    return mod.startswith('dask.') and hasattr(x, 'chunks') and hasattr(x, 'dask')


# ---------------------------------------------------------------------------
# Constructors

def open(path, hdu=None):
    """A FITS image as a lazy Array: only its header is read now, and later
    only the windows computations need.  hdu counts from 0 (the primary) as
    in astropy; None = the first HDU with image data."""
    path = os.path.abspath(os.fspath(path))
    return Array._make('fits', (path, None if hdu is None else int(hdu)))


def from_array(x, wcs=None):
    """A lazy Array over a numpy array (any numeric dtype, byte order,
    strides, np.memmap) or a dask array, with an optional WCS (astropy WCS,
    Header or header text).  Numpy arrays are borrowed, not copied (do not
    change them while the Array is used); non-float ones are converted
    window by window as the engine reads them.  Dask arrays are read window
    by window: only the chunks that a window meets are computed."""
    if isinstance(x, Array):
        return x
    if _is_dask(x):
        header = _header_text(wcs, x.shape)
        return Array._make('dask', (x, header, f'{x.name}|{x.dtype.str}'.encode()), x.shape,
                           _engine_dtype(x.dtype))
    x = np.asanyarray(x)
    if x.ndim == 0:
        raise ValueError("tessera: from_array needs at least one axis")
    header = _header_text(wcs, x.shape)
    return Array._make('array', (_ArrayLeaf(x), header), x.shape)


def _target_text(target, shape_out):
    text = _header_text(target, shape_out)
    if shape_out is None and not isinstance(target, (str, bytes, _core.Wcs)):
        from astropy.wcs import WCS
        if isinstance(target, WCS):
            if target.pixel_shape is None:
                raise ValueError("tessera: shape_out is needed with a WCS that has no pixel_shape")
            text = _header_text(target, tuple(reversed(target.pixel_shape)))
    return text


def reproject(a, target, shape_out=None, method='interp', **options):
    """A lazy reprojection of Array (or array-like) `a` onto `target` (an
    astropy WCS, a Header, header text or a _core.Wcs), method 'interp',
    'adaptive' or 'exact', with the options of _core.Graph's
    reproject_<method> (order, roundtrip, mapping_tolerance, dtype, block,
    kernel, boundary_mode, ... nan_mode).  Its footprint is .footprint."""
    if method not in ('interp', 'adaptive', 'exact'):
        raise ValueError(f"tessera: method {method!r}; expected 'interp', 'adaptive' or 'exact'")
    if not isinstance(a, Array):
        raise TypeError("tessera.reproject: expected a tessera.Array (tessera.open, "
                        "tessera.from_array)")
    text = _target_text(target, shape_out)
    opts = tuple(sorted(options.items()))
    # Leading axes the source does not show stay hidden.
    return Array._make('reproject_' + method, (a, text, opts), hide=a._lead)


def to_healpix(a, nside, **options):
    """A lazy HEALPix map (a 1-D Array of 12 nside^2 values) of Array `a`,
    a 2-D image with a celestial WCS, with the options of _core.Graph's
    reproject_to_healpix (order, nested, coordsys, dtype, chunk, method,
    nan_mode).  Its
    footprint is .footprint."""
    if not isinstance(a, Array):
        raise TypeError("tessera.to_healpix: expected a tessera.Array (tessera.open, "
                        "tessera.from_array)")
    return Array._make('reproject_to_healpix', (a, int(nside), tuple(sorted(options.items()))))


def write_hips(arrays, directory, **options):
    """Write 2-D Arrays with celestial WCS (one, or several as one mosaic) as a
    HiPS directory (tsr_write_hips), with the options of _core.Graph's
    write_hips (level, tile_width, frame, order, combine, formats, moc,
    title, cut, stretch, jobs, executor, cache, cancel, progress in tiles).
    Returns its report (a dict: level, tile_width, tiles written...)."""
    arrays = [arrays] if isinstance(arrays, Array) else list(arrays)
    if not arrays or not all(isinstance(x, Array) for x in arrays):
        raise TypeError("tessera.write_hips: expected a tessera.Array or a non-empty list of them")
    g, nodes = _core.Graph(), {}
    return g.write_hips([_lower_into(g, x, nodes) for x in arrays], os.fspath(directory),
                        **options)


def coadd(arrays, weights=None, *, combine='mean', blank=np.nan, match_background=False,
          background_reference=None, dtype=None, block=None):
    """A lazy mosaic (tsr_coadd) of reprojections of one grid (tessera.reproject
    or the reprojection functions with return_type='tessera'): combine 'mean',
    'sum', 'first', 'last', 'min', 'max', 'median'; weights: None or one
    Array (or None) per input; blank: value where nothing covers.  With
    match_background, the background offsets are computed now (the overlaps
    of the inputs) and subtracted, relative to input background_reference
    (None: mean offset 0).  Its footprint is .footprint."""
    arrays = list(arrays)
    if not arrays or not all(isinstance(x, Array) for x in arrays):
        raise TypeError("tessera.coadd: expected a non-empty list of tessera.Array reprojections")
    ws = None if weights is None else tuple(weights)
    if ws is not None and len(ws) != len(arrays):
        raise ValueError(f"tessera.coadd: {len(ws)} weights for {len(arrays)} inputs")
    opts = {'combine': combine, 'blank': float(blank)}
    if dtype is not None:
        opts['dtype'] = np.dtype(dtype).name
    if block is not None:
        opts['block'] = tuple(block)
    if match_background:
        g, nodes = _core.Graph(), {}
        ins = [_lower_into(g, x, nodes) for x in arrays]
        wn = None if ws is None else [None if w is None else _lower_into(g, w, nodes) for w in ws]
        ref = -1 if background_reference is None else int(background_reference)
        opts['offsets'] = tuple(g.match_background(ins, wn, reference=ref))
    return Array._make('coadd', (tuple(arrays), ws, tuple(sorted(opts.items()))),
                       hide=arrays[0]._lead)


# numpy functions that stay lazy through __array_function__.
def _reduction(name, nan):
    def impl(a, axis=None, **kw):
        if kw or not isinstance(a, Array):
            return NotImplemented
        return a._reduce(name, axis, nan)
    return impl


def _where(cond, a, b):
    arrs = [x if isinstance(x, Array) else from_array(np.asarray(x, dtype=np.float64))
            if not _is_scalar(x) else None for x in (cond, a, b)]
    if any(x is None for x in arrs):
        return NotImplemented
    shape = np.broadcast_shapes(*(x.shape for x in arrs))
    return Array._make('where', tuple(arrs), shape)


def _stack(arrays, axis=0, concatenate=False):
    arrays = [from_array(x) if not isinstance(x, Array) else x for x in arrays]
    lead = arrays[0]._lead
    if any(x._lead != lead for x in arrays):
        return NotImplemented
    nd = arrays[0].ndim + (0 if concatenate else 1)
    axis = int(axis) % nd
    if concatenate:
        shape = list(arrays[0].shape)
        shape[axis] = sum(x.shape[axis] for x in arrays)
    else:
        shape = list(arrays[0].shape)
        shape.insert(axis, len(arrays))
    # The hidden leading axes of the nodes stay in front.
    return Array._make('stack', (tuple(arrays), axis + lead, concatenate), tuple(shape))


def _nan_to_num(a, copy=True, nan=0.0, posinf=None, neginf=None):
    if not isinstance(a, Array):
        return NotImplemented
    return Array._make('nan_to_num', (a, float(nan), posinf, neginf), a.shape)


_FUNCTIONS = {
    np.sum: _reduction('sum', False), np.mean: _reduction('mean', False),
    np.min: _reduction('min', False), np.max: _reduction('max', False),
    np.amin: _reduction('min', False), np.amax: _reduction('max', False),
    np.std: _reduction('std', False), np.nansum: _reduction('sum', True),
    np.nanmean: _reduction('mean', True), np.nanmin: _reduction('min', True),
    np.nanmax: _reduction('max', True), np.nanstd: _reduction('std', True),
    np.where: lambda c, a=None, b=None: NotImplemented if a is None else _where(c, a, b),
    np.clip: lambda a, lo, hi, **kw: NotImplemented if kw or not isinstance(a, Array)
    else a.clip(lo, hi),
    np.stack: lambda arrays, axis=0: _stack(arrays, axis),
    np.concatenate: lambda arrays, axis=0: _stack(arrays, axis, True),
    np.nan_to_num: _nan_to_num,
}
