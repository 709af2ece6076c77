"""dask out: a tessera.Array as a dask array whose tasks run the engine.

The graph holds the Array once, under its own key (its pickle is its
recipe: file paths, arrays and header text, never C pointers); each block
task takes it as a dependency and computes its region serially through the
engine (dask supplies the parallelism).  In a process the recipe is lowered
to a C graph once and shared by the tasks of its threads, so every
scheduler -- threaded, processes, distributed -- runs the same engine code
on the same recipe and gives the same bits.
"""
import itertools

import numpy as np


def _block(arr, region):
    """One dask block: `region` ((start, stop) per axis) of Array `arr`."""
    return arr.compute(region=region, jobs=1)


def to_dask(arr, chunks=None):
    import dask.array as da
    from dask.array.core import normalize_chunks
    from dask.highlevelgraph import HighLevelGraph

    if chunks is None:
        chunks = arr.chunks if arr.ndim else ()
        # A leaf is one chunk of the whole array: let dask cut it.
        if arr.ndim and np.prod(chunks, dtype=np.int64) * arr.dtype.itemsize > (64 << 20):
            chunks = 'auto'
    chunks = normalize_chunks(chunks, arr.shape, dtype=arr.dtype)
    name = 'tessera-' + arr._token
    recipe = 'tessera-recipe-' + arr._token
    dsk = {recipe: arr}
    starts = [np.cumsum((0,) + c[:-1]) for c in chunks]
    for idx in itertools.product(*(range(len(c)) for c in chunks)):
        region = tuple((int(starts[a][i]), int(starts[a][i] + chunks[a][i]))
                       for a, i in enumerate(idx))
        dsk[(name,) + idx] = (_block, recipe, region)
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=())
    return da.Array(graph, name, chunks, dtype=arr.dtype,
                    meta=np.empty((0,) * arr.ndim, dtype=arr.dtype))
