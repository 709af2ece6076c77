"""tessera: a lazy dataflow engine for astronomical image reprojection.

The C library (``tessera._core``) builds graphs of lazy arrays -- FITS files,
numpy arrays, dask arrays -- and their reprojections, array operations and
mosaics, and computes any region of them with the GIL released, reading only
the input windows the region needs.  ``tessera.Array`` is the lazy array of
Python: a picklable recipe lowered to such a graph in each process.
"""
from ._core import (Cache, CancelledError, CancelToken, Graph, Node, Wcs,  # noqa: F401
                    has_mpi, optimal_wcs)
from ._core import version as _c_version
from ._array import Array, coadd, from_array, open, reproject  # noqa: F401

__version__ = _c_version()
