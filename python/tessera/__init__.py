"""tessera: a lazy dataflow engine for astronomical image reprojection.

The C library (``tessera._core``) builds graphs of lazy arrays -- FITS files,
numpy arrays, dask arrays -- and their reprojections, array operations and
mosaics, and computes any region of them with the GIL released, reading only
the input windows the region needs.  ``tessera.Array`` is the lazy array of
Python: a picklable recipe lowered to such a graph in each process.
reproject's public functions (reproject_interp, reproject_adaptive,
reproject_exact, reproject_and_coadd, find_optimal_celestial_wcs,
reproject_from_healpix, reproject_to_healpix, and reproject 0.21's
reproject_to_hips) take reproject's arguments and return what reproject returns: switching is one
import.
"""
from ._core import (Cache, CancelledError, CancelToken, Graph, Node, Wcs,  # noqa: F401
                    has_mpi, optimal_wcs)
from ._core import version as _c_version
from ._array import (Array, coadd, from_array, open, reproject, to_healpix,  # noqa: F401
                     write_hips)
from .high_level import (find_optimal_celestial_wcs, reproject_adaptive,  # noqa: F401
                         reproject_and_coadd, reproject_exact, reproject_from_healpix,
                         reproject_interp, reproject_to_healpix, reproject_to_hips)

__version__ = _c_version()
