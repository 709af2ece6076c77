"""reproject's public functions on the tessera engine.

    from tessera import reproject_interp      # was: from reproject import reproject_interp

reproject_interp, reproject_adaptive, reproject_exact, reproject_and_coadd
and find_optimal_celestial_wcs take reproject's arguments (0.10, as Debian
ships it, and the parameters 0.21 added), accept the same input forms and
raise reproject's exceptions with reproject's messages.  Each call becomes a
lazy tessera.Array -- a reprojection node over the input, read window by
window -- which is computed into numpy arrays (return_type='numpy'), or
returned as dask arrays whose tasks call the engine (return_type='dask'), or
as tessera.Arrays (return_type='tessera').

The engine maps two celestial (or two linear) axes and broadcasts leading
axes.  Cubes whose WCS has more axes (a spectral axis, in any order) are
handled here: the axes are put in the engine's order, the celestial planes
are reprojected, and each other axis -- which must be independent of the
celestial ones -- is resampled with the weights scipy's spline of the same
order gives along it, which is exactly what reproject's N-d interpolation
does for a separable mapping.
"""
import numbers
import os
import warnings

import numpy as np

from . import _array
from ._inputs import (parse_input_data, parse_input_shape, parse_input_weights,
                      parse_output_projection, to_fits_wcs, header_text)

__all__ = ['reproject_interp', 'reproject_adaptive', 'reproject_exact', 'reproject_and_coadd',
           'find_optimal_celestial_wcs', 'reproject_from_healpix', 'reproject_to_healpix',
           'reproject_to_hips']

ORDER = {'nearest-neighbor': 0, 'bilinear': 1, 'biquadratic': 2, 'bicubic': 3,
         # SWarp's kernels (tessera): 2a x 2a pixels, NaN within a pixels of the edge
         'lanczos2': 4, 'lanczos3': 5, 'lanczos4': 6}
LANCZOS2 = ORDER['lanczos2']


# ---------------------------------------------------------------------------
# Checks with reproject's messages

def _has_celestial(wcs):
    return wcs.has_celestial


def _validate_common(wcs_in, wcs_out, shape_in, shape_out, what="in input and output WCS"):
    if wcs_in.pixel_n_dim != wcs_out.pixel_n_dim:
        raise ValueError(f"Number of dimensions {what} should match")
    if len(shape_out) < wcs_out.pixel_n_dim:
        raise ValueError("Too few dimensions in shape_out")
    if len(shape_in) < wcs_in.pixel_n_dim:
        raise ValueError("Too few dimensions in input data")
    if len(shape_in) != len(shape_out):
        raise ValueError("Number of dimensions in input and output data should match")
    if tuple(shape_in[:-wcs_in.pixel_n_dim]) != tuple(shape_out[:-wcs_out.pixel_n_dim]):
        raise ValueError("Dimensions to be looped over must match exactly")


def _validate_interp(wcs_in, wcs_out, shape_in, shape_out):
    """reproject.interpolation.core._validate_wcs."""
    _validate_common(wcs_in, wcs_out, shape_in, shape_out)
    if _has_celestial(wcs_in) and not _has_celestial(wcs_out):
        raise ValueError("Input WCS has celestial components but output WCS does not")
    if _has_celestial(wcs_out) and not _has_celestial(wcs_in):
        raise ValueError("Output WCS has celestial components but input WCS does not")
    spec_in, spec_out = wcs_in.wcs.spec, wcs_out.wcs.spec
    if spec_in >= 0 and spec_out >= 0:
        if wcs_in.wcs.ctype[spec_in] != wcs_out.wcs.ctype[spec_out]:
            raise ValueError("The input ({}) and output ({}) spectral coordinate types are not "
                             "equivalent.".format(wcs_in.wcs.ctype[spec_in],
                                                  wcs_out.wcs.ctype[spec_out]))
    elif spec_in >= 0:
        raise ValueError("Input WCS has a spectral component but output WCS does not")
    elif spec_out >= 0:
        raise ValueError("Output WCS has a spectral component but input WCS does not")


def _validate_output_array(array, shape_out, what='output_array'):
    if array is None:
        return
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{what} should be a numpy array (np.memmap too), got "
                        f"{type(array).__name__}")
    if array.shape != tuple(shape_out):
        raise ValueError("Array sizes don't match.  Output array shape should be "
                         "{}".format(str(tuple(shape_out))))
    if array.dtype.kind != 'f':
        raise ValueError(f"{what} has dtype {array.dtype}; expected a floating-point array")
    if not array.flags.writeable:
        raise ValueError(f"{what} is read-only")


def _jobs(parallel, strict_type=False):
    """The engine's jobs for reproject's `parallel`: False = serial, True or
    'current-scheduler' = one per CPU, N = N."""
    if parallel is True or parallel == 'current-scheduler':
        return 0
    if parallel is False or parallel is None:
        return 1
    if isinstance(parallel, numbers.Integral) and not isinstance(parallel, bool):
        if parallel <= 0:
            raise ValueError("The number of processors to use must be strictly positive")
        return int(parallel)
    if strict_type:
        raise TypeError("The 'parallel' flag must be a boolean or integral value")
    raise ValueError(f"parallel={parallel!r}: expected False, True, 'current-scheduler' or a "
                     "positive integer")


def _return_type(return_type):
    if return_type is None:
        return 'numpy'
    if return_type not in ('numpy', 'dask', 'tessera'):
        raise ValueError("return_type should be set to 'numpy', 'dask' or 'tessera'")
    return return_type


def _check_dask_method(dask_method):
    # Dask inputs are always read window by window (only the chunks a
    # window meets are computed); both of reproject's methods mean that here.
    if dask_method not in (None, 'memmap', 'none'):
        raise ValueError("dask_method should be set to 'memmap' or 'none'")


def _block(block_size, shape_out):
    """The engine's output block (ny, nx) for reproject's block_size: a
    tuple over the output axes or its reprojected (last two) ones, -1 (and
    0, reproject 0.10's auto-split leftover) for the whole axis; None or
    'auto' = the engine's choice."""
    if block_size is None or (isinstance(block_size, str) and block_size == 'auto'):
        return None
    if isinstance(block_size, str):
        raise ValueError(f"block_size={block_size!r}: expected a tuple of integers or 'auto'")
    bs = [int(b) for b in block_size]
    if len(bs) < 2 or len(bs) > len(shape_out):
        raise ValueError(f"block_size {tuple(bs)} should have 2 to {len(shape_out)} entries for "
                         f"an output of shape {tuple(shape_out)}")
    ny, nx = bs[-2:]
    ny = shape_out[-2] if ny <= 0 else min(ny, shape_out[-2])
    nx = shape_out[-1] if nx <= 0 else min(nx, shape_out[-1])
    return (ny, nx)


# ---------------------------------------------------------------------------
# Axes: the engine's order, and the axes it does not map

def _wcs_axes(wcs):
    """(pair, others): the FITS pixel axes (0-based) the engine maps -- the
    celestial pair in their order, else the first two -- and the others."""
    n = wcs.pixel_n_dim
    if wcs.has_celestial:
        lng, lat = wcs.wcs.lng, wcs.wcs.lat
        pair = (lng, lat) if lng < lat else (lat, lng)
    else:
        pair = (0, 1)
    return pair, [a for a in range(n) if a not in pair]


def _check_separable(wcs, axes, what):
    corr = wcs.axis_correlation_matrix   # world x pixel
    n = wcs.pixel_n_dim
    for a in axes:
        worlds = np.nonzero(corr[:, a])[0]
        others = [p for p in range(n) if p != a]
        if corr[worlds][:, others].any():
            raise NotImplementedError(
                f"{what} WCS: pixel axis {a + 1} ({wcs.wcs.ctype[a]!r}) is coupled to other axes "
                "(PC/CD terms between them); tessera maps the celestial axes and resamples each "
                "other axis on its own")


def _match_others(wcs_in, others_in, wcs_out, others_out):
    """Output axis for each input axis of `others_in`, by world physical type
    (or in order when types repeat)."""
    if len(others_in) != len(others_out):
        raise ValueError("Number of dimensions in input and output WCS should match")
    tin = [wcs_in.world_axis_physical_types[_world_of(wcs_in, a)] for a in others_in]
    tout = [wcs_out.world_axis_physical_types[_world_of(wcs_out, a)] for a in others_out]
    if len(set(tin)) == len(tin) and sorted(map(str, tin)) == sorted(map(str, tout)):
        return [others_out[tout.index(t)] for t in tin]
    return list(others_out)


def _world_of(wcs, pixel_axis):
    worlds = np.nonzero(wcs.axis_correlation_matrix[:, pixel_axis])[0]
    return int(worlds[0])


def _axis_weights(wcs_out, a_out, n_out, wcs_in, a_in, n_in, order, roundtrip):
    """W (n_out x n_in): output plane j of the axis = sum_k W[j, k] * input
    plane k, for independent axes a_out -> a_in.  The coordinates come from
    astropy (as reproject's pixel_to_pixel), the weights from scipy's
    map_coordinates of each unit vector with reproject's edge handling (pad
    by one edge pixel; NaN beyond half a pixel outside): a spline is linear
    in its data, so this is reproject's N-d interpolation along the axis."""
    from astropy.wcs.utils import pixel_to_pixel
    from scipy.ndimage import map_coordinates

    w_out, w_in = wcs_out.sub([a_out + 1]), wcs_in.sub([a_in + 1])
    z = np.arange(n_out, dtype=float)
    zin = np.asarray(pixel_to_pixel(w_out, w_in, z), dtype=float)
    if roundtrip:
        back = np.asarray(pixel_to_pixel(w_in, w_out, zin), dtype=float)
        with np.errstate(invalid='ignore'):
            zin = np.where(np.abs(back - z) > 1, np.nan, zin)
    W = np.empty((n_out, n_in))
    coords = (zin + 1)[None, :]
    for k in range(n_in):
        e = np.zeros(n_in)
        e[k] = 1.0
        W[:, k] = map_coordinates(np.pad(e, 1, mode='edge'), coords, order=order,
                                  mode='constant', cval=np.nan)
    with np.errstate(invalid='ignore'):
        outside = ~((zin >= -0.5) & (zin <= n_in - 0.5))
    W[outside] = np.nan
    return W


def _resample_axis(a, axis, W):
    """Lazy Array: `a` with numpy axis `axis` resampled by weights W."""
    lead = (slice(None),) * axis
    planes = []
    for row in W:
        if np.isnan(row).any():
            plane = a[lead + (slice(0, 1),)] * np.nan
        else:
            ks = np.nonzero(np.abs(row) > 1e-12)[0]
            plane = None
            for k in ks:
                term = a[lead + (slice(int(k), int(k) + 1),)]
                if row[k] != 1.0:
                    term = term * float(row[k])
                plane = term if plane is None else plane + term
            if plane is None:
                plane = a[lead + (slice(0, 1),)] * 0.0
        planes.append(plane)
    if len(planes) == 1:
        return planes[0]
    return np.concatenate(planes, axis=axis)


def _is_selection(W, n_in):
    """True when W picks input planes 0..n-1 in order (identity mapping)."""
    return (W.shape[0] == n_in and not np.isnan(W).any()
            and np.allclose(W, np.eye(n_in), rtol=0, atol=1e-9))


def _source(inp, perm, fold, wcs2, shape):
    """tessera.Array of Input `inp` with its numpy axes in order `perm` (None:
    as they are), its first `fold` axes folded into one (0: none), carrying
    the engine's 2-axis WCS `wcs2`."""
    if inp.data is None and perm is None and not fold and inp.wcs.pixel_n_dim == 2:
        return _array.open(inp.path, inp.hdu)
    data = inp.data
    if data is None:
        from astropy.io import fits
        with fits.open(inp.path) as hdul:
            data = hdul[inp.hdu].data   # a memory map where astropy can
    if perm is not None:
        data = data.transpose(perm)
    if fold:
        data = data.reshape((-1,) + tuple(data.shape[fold:]))
    return _array.from_array(data, header_text(wcs2, data.shape))


# _Plan.footprint when it is the footprint plane the engine computes with
# the data (made an Array only when one is returned: each Array is a graph).
PLANE = 'plane'


class _Plan:
    """A reprojection as lazy Arrays: `data` in the engine's axis order and
    of shape `engine_shape` (broadcast axes folded into one when there were
    too many for the engine's 4), `footprint` (PLANE: the engine's footprint
    plane of data; None: 1 where data is not NaN; or an Array); `shape` is
    the unfolded shape, and `perm` the transpose that puts it in the
    output's axis order (None: the same)."""

    def __init__(self, data, footprint, perm, shape):
        self.data, self.footprint, self.perm, self.shape = data, footprint, perm, shape
        self.engine_shape = data.shape


def _plan(method, inp, wcs_out, shape_out, options, resample_order=None):
    wcs_in, shape_in = inp.wcs, inp.shape
    n = wcs_in.pixel_n_dim
    nb = len(shape_in) - n
    pair_in, others_in = _wcs_axes(wcs_in)
    pair_out, others_out = _wcs_axes(wcs_out)
    if others_in:
        _check_separable(wcs_in, others_in, 'input')
        _check_separable(wcs_out, others_out, 'output')
        others_out = _match_others(wcs_in, others_in, wcs_out, others_out)
    fits_in = list(pair_in) + others_in
    fits_out = list(pair_out) + others_out
    nd_in, nd_out = len(shape_in), len(shape_out)
    perm_in = list(range(nb)) + [nd_in - 1 - a for a in reversed(fits_in)]
    perm_out = list(range(nb)) + [nd_out - 1 - a for a in reversed(fits_out)]
    canon_in = tuple(shape_in[p] for p in perm_in)
    canon_out = tuple(shape_out[p] for p in perm_out)

    # The engine has 4 axes: leading broadcast axes are independent images,
    # so when there are too many they fold into one.
    fold = nb if nd_in > 4 and nb > 1 else 0
    if nd_in - max(fold - 1, 0) > 4:
        raise NotImplementedError(f"tessera: {nd_in}-axis inputs with {len(others_in)} "
                                  "non-celestial WCS axes exceed the engine's 4 axes")
    nb_engine = 1 if fold else nb

    wcs2_in = wcs_in.sub([pair_in[0] + 1, pair_in[1] + 1]) if n > 2 else wcs_in
    wcs2_out = wcs_out.sub([pair_out[0] + 1, pair_out[1] + 1]) if n > 2 else wcs_out
    src = _source(inp, None if perm_in == list(range(nd_in)) else perm_in, fold, wcs2_in,
                  canon_in)
    target = header_text(wcs2_out, canon_out[-2:])
    data = _array.reproject(src, target, method=method, **options)
    footprint = PLANE

    # The other WCS axes, innermost first: numpy axis nb + len(others) - 1 - i.
    for i, (a_in, a_out) in enumerate(zip(others_in, others_out)):
        axis = nb_engine + len(others_in) - 1 - i
        n_in, n_out = canon_in[axis], canon_out[axis]
        # Lanczos resamples the celestial axes only: a bilinear W that picks
        # the planes one for one says whether this axis needs resampling.
        lanczos = resample_order is not None and resample_order >= LANCZOS2
        W = _axis_weights(wcs_out, a_out, n_out, wcs_in, a_in, n_in,
                          1 if lanczos else (resample_order or 0), options.get('roundtrip', True))
        if _is_selection(W, n_in):
            continue
        if resample_order is None:
            raise NotImplementedError(
                f"reproject_{method}: the input and output differ along WCS axis "
                f"{a_in + 1} ({wcs_in.wcs.ctype[a_in]!r}); only reproject_interp resamples "
                "axes other than the celestial ones")
        if lanczos:
            raise NotImplementedError(
                f"reproject_interp: the input and output differ along WCS axis {a_in + 1} "
                f"({wcs_in.wcs.ctype[a_in]!r}); the Lanczos orders resample the celestial axes "
                "only: use order 0-3 for it")
        data = _resample_axis(data, axis, W)
        footprint = None
    perm = None
    if perm_out != list(range(nd_out)):
        perm = list(np.argsort(perm_out))
    return _Plan(data, footprint, perm, canon_out)


# ---------------------------------------------------------------------------
# Results

def _not_nan(a):
    """Lazy footprint of interp/adaptive results: 1.0 where not NaN."""
    return (a == a).astype('float64')


def _transpose_lazy(x, perm):
    return x if perm is None else x.transpose(perm)


def _finish(plan, shape_out, output_array, output_footprint, return_footprint, jobs,
            return_type, block):
    folded = plan.engine_shape != plan.shape
    if return_type in ('dask', 'tessera'):
        if output_array is not None or output_footprint is not None:
            raise ValueError(f"output_array and output_footprint are for return_type='numpy', "
                             f"not {return_type!r}")
        fp = (plan.data.footprint if plan.footprint is PLANE else
              _not_nan(plan.data) if plan.footprint is None else plan.footprint)
        if return_type == 'tessera':
            if plan.perm is not None or folded:
                raise NotImplementedError(
                    "return_type='tessera': tessera.Arrays keep the engine's axis order and "
                    "at most 4 axes; this output has its celestial axes after others or more "
                    "axes (use 'numpy' or 'dask')")
            return (plan.data, fp) if return_footprint else plan.data
        chunks = None
        if block is not None:
            chunks = (1,) * (len(plan.engine_shape) - 2) + tuple(block)

        def lazy(x):
            d = x.to_dask(chunks)
            if folded:
                d = d.reshape(plan.shape)
            return _transpose_lazy(d, plan.perm)
        return (lazy(plan.data), lazy(fp)) if return_footprint else lazy(plan.data)

    out = output_array
    if out is None:
        out = np.empty(shape_out, dtype=np.float64)
    fp_out = output_footprint
    if fp_out is None and return_footprint:
        fp_out = np.empty(shape_out, dtype=np.float64)

    def dst(a):
        # The engine's view of an output array (True), or a temporary (False)
        # where the axes must be transposed or a fold cannot be a view.
        if a is None:
            return None, True
        if plan.perm is None and (not folded or a.flags.c_contiguous):
            return (a.reshape(plan.engine_shape) if folded else a), True
        return np.empty(plan.engine_shape, dtype=a.dtype), False
    (data_dst, data_view), (fp_dst, fp_view) = dst(out), dst(fp_out)
    if plan.footprint is PLANE and fp_out is not None:
        plan.data.compute(out=(data_dst, fp_dst), footprint=True, jobs=jobs)
    else:
        plan.data.compute(out=data_dst, jobs=jobs)
        if fp_dst is None:
            pass
        elif plan.footprint is None:
            np.logical_not(np.isnan(data_dst), out=fp_dst, casting='unsafe')
        else:
            plan.footprint.compute(out=fp_dst, jobs=jobs)
    for a, d, view in ((out, data_dst, data_view), (fp_out, fp_dst, fp_view)):
        if not view:
            a[...] = _transpose_lazy(d.reshape(plan.shape), plan.perm)
    return (out, fp_out) if return_footprint else out


def _engine_dtype(output_array):
    if output_array is not None and output_array.dtype == np.float32:
        return 'float32'
    return 'float64'


def _common_checks(input_data, output_projection, shape_out, hdu_in, output_array,
                   output_footprint, return_type, dask_method):
    return_type = _return_type(return_type)
    _check_dask_method(dask_method)
    inp = parse_input_data(input_data, hdu_in=hdu_in)
    wcs_out, shape_out = parse_output_projection(output_projection, shape_in=inp.shape,
                                                 shape_out=shape_out, output_array=output_array)
    return return_type, inp, wcs_out, shape_out


# ---------------------------------------------------------------------------
# The public functions

def reproject_interp(input_data, output_projection, shape_out=None, hdu_in=0,
                     order='bilinear', roundtrip_coords=True, output_array=None,
                     output_footprint=None, return_footprint=True, block_size=None,
                     parallel=False, return_type=None, dask_method=None, *,
                     independent_celestial_slices=False, mapping_tolerance=0.0):
    """Reproject data to a new projection by interpolation (reproject's
    reproject_interp, on the tessera engine).

    input_data: a FITS file name or pathlib.Path, an HDUList (HDU hdu_in,
    counted from 0), an image HDU (incl. CompImageHDU), a tuple (array, WCS or
    Header) with a numpy array (any dtype, byte order, strides, memmap) or a
    dask array (read window by window, never whole), or an NDData.  Leading
    axes the WCS does not describe are independent images (broadcast).
    output_projection: an astropy WCS (any APE-14 WCS with a FITS form) with
    shape_out, or a Header with NAXISn.  order: 'nearest-neighbor',
    'bilinear', 'biquadratic', 'bicubic' or 0-3, or (tessera) 'lanczos2',
    'lanczos3', 'lanczos4': SWarp's RESAMPLING_TYPE LANCZOSn, 2n x 2n input
    pixels, NaN where they leave the input or hold a NaN (celestial axes
    only).  roundtrip_coords: NaN where
    output -> input -> output moves a pixel by more than one.
    output_array / output_footprint: arrays (np.memmap too) written in place.
    block_size: the engine's output block (a tuple, -1 = whole axis, or
    'auto'); with return_type='dask' also the dask chunks.  parallel: False
    (serial), True (a thread per CPU) or N threads.  return_type: 'numpy'
    (default), 'dask' (dask arrays whose tasks call the engine) or 'tessera'
    (lazy tessera.Arrays).  dask_method: accepted for compatibility (dask
    inputs are always read by window).  mapping_tolerance (tessera): pixels
    of interpolated mapping error allowed between exact transforms on a
    32-pixel grid; 0 (the default) transforms every pixel exactly, as
    reproject does (TAN -> TAN is exact either way).

    Returns (array, footprint), or array with return_footprint=False.
    """
    if independent_celestial_slices:
        from astropy.utils.exceptions import AstropyDeprecationWarning
        warnings.warn('"independent_celestial_slices" was deprecated in version 0.6 and will '
                      'be removed in a future version. ', AstropyDeprecationWarning)
    return_type, inp, wcs_out, shape_out = _common_checks(
        input_data, output_projection, shape_out, hdu_in, output_array, output_footprint,
        return_type, dask_method)
    if isinstance(order, str):
        if order not in ORDER:
            raise ValueError(f"order={order!r}: expected one of {', '.join(ORDER)} or 0-3")
        order = ORDER[order]
    elif not 0 <= int(order) <= 3:
        raise ValueError(f"order={order!r}: expected 0-3 or one of {', '.join(ORDER)}")
    _validate_interp(inp.wcs, wcs_out, inp.shape, shape_out)
    _validate_output_array(output_array, shape_out)
    _validate_output_array(output_footprint, shape_out, 'output_footprint')
    jobs = _jobs(parallel)
    block = _block(block_size, shape_out)
    options = dict(order=int(order), roundtrip=bool(roundtrip_coords),
                   mapping_tolerance=float(mapping_tolerance),
                   dtype=_engine_dtype(output_array))
    if block is not None:
        options['block'] = block
    plan = _plan('interp', inp, wcs_out, shape_out, options, resample_order=int(order))
    return _finish(plan, shape_out, output_array, output_footprint, return_footprint, jobs,
                   return_type, block)


def reproject_adaptive(input_data, output_projection, shape_out=None, hdu_in=0,
                       return_footprint=True, center_jacobian=False, despike_jacobian=False,
                       roundtrip_coords=True, conserve_flux=False, kernel='gaussian',
                       kernel_width=1.3, sample_region_width=4, boundary_mode='strict',
                       boundary_fill_value=0, boundary_ignore_threshold=0.5, x_cyclic=False,
                       y_cyclic=False, bad_value_mode='strict', bad_fill_value=0,
                       output_array=None, output_footprint=None, block_size=None,
                       parallel=False, return_type=None, dask_method=None, *,
                       mapping_tolerance=0.0):
    """Reproject by the DeForest (2004) adaptive, anti-aliased resampling
    (reproject's reproject_adaptive, on the tessera engine), with every
    parameter of reproject 0.21: center_jacobian, despike_jacobian,
    conserve_flux, kernel ('gaussian' or 'hann'), kernel_width,
    sample_region_width, boundary_mode ('strict', 'constant',
    'grid-constant', 'ignore', 'ignore_threshold', 'nearest'),
    boundary_fill_value, boundary_ignore_threshold, x_cyclic, y_cyclic,
    bad_value_mode ('strict', 'ignore', 'constant') and bad_fill_value.
    The other arguments are those of reproject_interp.  One difference: the
    singular values of the Jacobian are padded by magnitude, keeping their
    sign, so an axis that is both flipped and down-sampled still averages
    (reproject pads the signed value)."""
    return_type, inp, wcs_out, shape_out = _common_checks(
        input_data, output_projection, shape_out, hdu_in, output_array, output_footprint,
        return_type, dask_method)
    _validate_common(inp.wcs, wcs_out, inp.shape, shape_out,
                     what="between input and output WCS")
    _validate_output_array(output_array, shape_out)
    _validate_output_array(output_footprint, shape_out, 'output_footprint')
    if _has_celestial(inp.wcs) != _has_celestial(wcs_out):
        side = 'Input' if _has_celestial(inp.wcs) else 'Output'
        other = 'output' if side == 'Input' else 'input'
        raise ValueError(f"{side} WCS has celestial components but {other} WCS does not")
    jobs = _jobs(parallel)
    block = _block(block_size, shape_out)
    options = dict(kernel=str(kernel).lower(), kernel_width=float(kernel_width),
                   sample_region_width=float(sample_region_width),
                   boundary_mode=str(boundary_mode), boundary_fill_value=float(boundary_fill_value),
                   boundary_ignore_threshold=float(boundary_ignore_threshold),
                   x_cyclic=bool(x_cyclic), y_cyclic=bool(y_cyclic),
                   center_jacobian=bool(center_jacobian), despike_jacobian=bool(despike_jacobian),
                   conserve_flux=bool(conserve_flux), bad_value_mode=str(bad_value_mode),
                   bad_fill_value=float(bad_fill_value), roundtrip=bool(roundtrip_coords),
                   mapping_tolerance=float(mapping_tolerance),
                   dtype=_engine_dtype(output_array))
    if block is not None:
        options['block'] = block
    plan = _plan('adaptive', inp, wcs_out, shape_out, options)
    return _finish(plan, shape_out, output_array, output_footprint, return_footprint, jobs,
                   return_type, block)


def reproject_exact(input_data, output_projection, shape_out=None, hdu_in=0,
                    output_array=None, output_footprint=None, return_footprint=True,
                    block_size=None, parallel=False, return_type=None, dask_method=None):
    """Reproject by exact spherical-polygon overlap (reproject's
    reproject_exact, on the tessera engine): each output pixel is the mean of
    the input pixels it overlaps weighted by overlap area (surface brightness
    is conserved); the footprint is the summed overlap fraction.  Arguments
    as reproject_interp.  Small pixels (under ~20 arcsec) are clipped in the
    tangent plane, as reproject 0.20 does, so there is no precision warning
    at 0.05 arcsec (there is, as in 0.21, below 1e-6 arcsec)."""
    return_type, inp, wcs_out, shape_out = _common_checks(
        input_data, output_projection, shape_out, hdu_in, output_array, output_footprint,
        return_type, dask_method)
    wcs_in = inp.wcs
    if not (wcs_in.has_celestial and wcs_in.pixel_n_dim == 2 and wcs_in.world_n_dim == 2):
        raise NotImplementedError("Currently only data with a 2-d celestial WCS can be "
                                  "reprojected using flux-conserving algorithm")
    jobs = _jobs(parallel, strict_type=True)
    from astropy.wcs.utils import proj_plane_pixel_area
    threshold = (1e-6 / 3600) ** 2
    if (proj_plane_pixel_area(wcs_in) < threshold
            or (wcs_out.has_celestial and proj_plane_pixel_area(wcs_out.celestial) < threshold)):
        warnings.warn("The reproject_exact function currently has precision issues with images "
                      "that have resolutions below ~1e-6 arcsec, so the results may not be "
                      "accurate.", UserWarning)
    _validate_common(wcs_in, wcs_out, inp.shape, shape_out)
    _validate_output_array(output_array, shape_out)
    _validate_output_array(output_footprint, shape_out, 'output_footprint')
    block = _block(block_size, shape_out)
    options = dict(nan_mode='propagate', dtype=_engine_dtype(output_array))
    if block is not None:
        options['block'] = block
    plan = _plan('exact', inp, wcs_out, shape_out, options)
    return _finish(plan, shape_out, output_array, output_footprint, return_footprint, jobs,
                   return_type, block)


# ---------------------------------------------------------------------------
# Mosaics

_METHODS = ('reproject_interp', 'reproject_adaptive', 'reproject_exact')


def _method_of(fn):
    """'interp', 'adaptive' or 'exact' for tessera's or reproject's function."""
    name = getattr(fn, '__tessera_substitute__', None) or getattr(fn, '__name__', None)
    module = getattr(fn, '__module__', '') or ''
    if name in _METHODS and (fn is globals().get(name) or module.startswith('tessera')
                             or module.startswith('reproject')):
        return name[len('reproject_'):]
    raise TypeError("reproject_function should be reproject_interp, reproject_adaptive or "
                    "reproject_exact (tessera's or reproject's), got %r" % (fn,))


def _lazy_reprojection(method, inp, wcs_out, shape_out, kwargs, block):
    """The data Array of reprojecting `inp` with reproject-style keyword
    arguments `kwargs` of function `method` (as reproject_and_coadd forwards
    them), and the jobs they ask for."""
    fn = {'interp': reproject_interp, 'adaptive': reproject_adaptive,
          'exact': reproject_exact}[method]
    kw = dict(kwargs)
    for bad in ('output_array', 'output_footprint', 'return_type', 'return_footprint'):
        if bad in kw:
            raise ValueError(f"reproject_and_coadd: {bad} is not a keyword to forward to the "
                             "reprojection function")
    if block is not None:
        kw['block_size'] = block
    arr = fn(inp, wcs_out, shape_out=shape_out, return_type='tessera',
             return_footprint=False, **kw)
    return arr, _jobs(kw.get('parallel', False))


def reproject_and_coadd(input_data, output_projection, shape_out=None, input_weights=None,
                        hdu_in=None, reproject_function=None, hdu_weights=None,
                        combine_function='mean', match_background=False,
                        background_reference=None, output_array=None, output_footprint=None,
                        block_sizes=None, progress_bar=None, blank_pixel_value=0,
                        return_type=None, **kwargs):
    """Reproject several images onto one grid and combine them (reproject's
    reproject_and_coadd, on the tessera engine: one lazy mosaic in which each
    input is read only where it can cover the output).

    input_data: an iterable of inputs (any form reproject_interp takes).
    input_weights: None or one weight map per input (file, HDUList, HDU or
    array, on the input's grid), reprojected like the input; NaN weights
    count as 0.  reproject_function: reproject_interp, reproject_adaptive or
    reproject_exact, tessera's or reproject's; **kwargs go to it (order,
    roundtrip_coords, parallel, ...).  combine_function: 'mean', 'sum',
    'first', 'last', 'min', 'max' or 'median'.  match_background: additive
    offsets from the median differences of overlapping pairs, solved by
    least squares (exactly, where reproject runs a shuffled gradient
    descent), relative to input background_reference (None: mean offset 0).
    blank_pixel_value: the value where no input covers (0, as reproject
    0.21; 0.10 left NaN for 'mean').  block_sizes: one output block for all
    inputs or one per input (block_size= is an alias).  progress_bar: a
    callable wrapping the iterable of inputs (e.g. tqdm).  return_type:
    'numpy', 'dask' or 'tessera'.  Returns (array, footprint)."""
    combines = ('mean', 'sum', 'first', 'last', 'min', 'max', 'median')
    if combine_function not in combines:
        raise ValueError("combine_function should be one of " + "/".join(combines))
    if reproject_function is None:
        raise ValueError("reprojection function should be specified with the "
                         "reproject_function argument")
    method = _method_of(reproject_function)
    return_type = _return_type(return_type)
    if return_type != 'numpy' and (output_array is not None or output_footprint is not None):
        raise ValueError("output_array and output_footprint are for return_type='numpy'")
    if 'block_size' in kwargs:
        if block_sizes is not None:
            raise ValueError("block_sizes and block_size are the same argument: give one")
        block_sizes = kwargs.pop('block_size')
    wcs_out, shape_out = parse_output_projection(output_projection, shape_out=shape_out,
                                                 output_array=output_array)
    if len(shape_out) != 2:
        raise ValueError(f"reproject_and_coadd: the output should be 2-dimensional (got shape "
                         f"{shape_out})")
    _validate_output_array(output_array, shape_out)
    _validate_output_array(output_footprint, shape_out, 'output_footprint')
    inputs = list(input_data)
    if input_weights is not None:
        input_weights = list(input_weights)
        if len(input_weights) != len(inputs):
            raise ValueError(f"input_weights has {len(input_weights)} entries for "
                             f"{len(inputs)} inputs")
    if block_sizes is None or (len(block_sizes) == 2 and
                               all(isinstance(b, numbers.Integral) for b in block_sizes)):
        blocks = [block_sizes] * len(inputs)
    else:
        blocks = list(block_sizes)
        if len(blocks) != len(inputs):
            raise ValueError(f"block_sizes has {len(blocks)} entries for {len(inputs)} inputs")

    arrays, weights, jobs = [], [], 1
    indices = range(len(inputs))
    for i in (progress_bar(indices) if progress_bar is not None else indices):
        inp = parse_input_data(inputs[i], hdu_in=hdu_in)
        if inp.wcs.pixel_n_dim != 2 or len(inp.shape) != 2:
            raise ValueError(f"reproject_and_coadd: input {i} has shape {inp.shape} and a "
                             f"{inp.wcs.pixel_n_dim}-axis WCS; expected 2-d images")
        arr, jobs = _lazy_reprojection(method, inp, wcs_out, shape_out, kwargs, blocks[i])
        arrays.append(arr)
        if input_weights is None:
            weights.append(None)
            continue
        w = parse_input_weights(input_weights[i], hdu_weights=hdu_weights)
        if tuple(np.shape(w)) != inp.shape:
            raise ValueError(f"input_weights[{i}] has shape {tuple(np.shape(w))}; expected the "
                             f"input's {inp.shape}")
        if isinstance(w, np.ndarray) and w.dtype.kind == 'f' and np.isnan(w).any():
            w = np.nan_to_num(w)
        winp = type(inp)(inp.wcs, inp.shape, w.dtype, data=w)
        warr, _ = _lazy_reprojection(method, winp, wcs_out, shape_out, kwargs, blocks[i])
        weights.append(warr)
    if not arrays:
        raise ValueError("reproject_and_coadd: input_data is empty")
    mosaic = _array.coadd(arrays, None if input_weights is None else weights,
                          combine=combine_function, blank=float(blank_pixel_value),
                          match_background=bool(match_background),
                          background_reference=background_reference)
    plan = _Plan(mosaic, PLANE, None, tuple(shape_out))
    return _finish(plan, shape_out, output_array, output_footprint, True, jobs, return_type,
                   _block(blocks[0], shape_out))


_COORDSYS = {'icrs': 'C', 'galactic': 'G', 'ecliptic': 'E'}


def _healpix_coordsys(frame):
    """The HEALPix COORDSYS letter of a frame (object, class, name, or
    reproject's 'g' / 'c'; 'e' too, which reproject 0.10 refuses)."""
    if isinstance(frame, str) and frame.lower() in ('g', 'c', 'e'):
        return frame.upper()
    name = _frame_name(frame)
    if name not in _COORDSYS:
        raise NotImplementedError(f"tessera: a HEALPix map's frame is ICRS, Galactic or "
                                  f"BarycentricMeanEcliptic (J2000) (COORDSYS C, G, E), not {name}")
    return _COORDSYS[name]


def reproject_to_healpix(input_data, coord_system_out, hdu_in=0, order='bilinear', nested=False,
                         nside=128, *, parallel=False):
    """Reproject an image onto a HEALPix map (reproject's reproject_to_healpix,
    on the tessera engine): each map pixel centre, taken into the image,
    gets scipy.ndimage.map_coordinates' value there (mode 'constant', NaN
    outside [0, n - 1]).

    input_data: a FITS file name, an HDUList (HDU hdu_in), an image HDU, a
    tuple (array, WCS or Header) or an NDData, with a 2-D celestial WCS.
    coord_system_out: the map's frame, an astropy frame (object, class or
    name: 'icrs', 'galactic', 'barycentricmeanecliptic') or 'g', 'c', 'e'.
    order: 'nearest-neighbor', 'bilinear', 'biquadratic', 'bicubic' or
    0-3 (orders 2 and 3 are reproject_interp's splines), or (tessera)
    'exact': flux-conserving, each map pixel the mean of the image pixels
    it overlaps weighted by the overlaps' solid angles, the footprint its
    covered fraction (NaN image pixels spoil the map pixels they overlap:
    tessera.to_healpix(..., method='exact', nan_mode='ignore') leaves them
    out).  nested: NESTED
    (True) or RING (False) order.  nside: the map's resolution.
    parallel (tessera): False (serial), True (a thread per CPU) or N.

    Returns (array, footprint): 12 nside^2 float64 values, and 1 where the
    value is finite, 0 elsewhere (exact: the covered fraction).
    """
    inp = parse_input_data(input_data, hdu_in=hdu_in)
    wcs = inp.wcs
    if not (_has_celestial(wcs) and wcs.pixel_n_dim == 2 and wcs.world_n_dim == 2):
        raise NotImplementedError("Only data with a 2-d celestial WCS can be reprojected to a "
                                  "HEALPIX projection")
    method = {}
    if isinstance(order, str) and order == 'exact':
        method, order = {'method': 'exact'}, 1
    elif isinstance(order, str):
        if order not in ORDER:
            raise ValueError(f"order={order!r}: expected one of {', '.join(ORDER)}, 0-3 or "
                             "'exact'")
        order = ORDER[order]
    coordsys = _healpix_coordsys(coord_system_out)
    jobs = _jobs(parallel)
    src = _source(inp, None, 0, wcs, inp.shape)
    hp = _array.to_healpix(src, int(nside), order=int(order), nested=bool(nested),
                           coordsys=coordsys, dtype='float64', **method)
    # A map of one image is mostly blank: new arrays that start as NaN and 0
    # cost only the pages that get a value (most of the run's time else).
    return hp.compute(footprint=True, jobs=jobs, blank=True)


def _frame_name(frame):
    """The engine's frame name for an astropy frame (object, class or name)."""
    from astropy.coordinates import (FK5, ICRS, BarycentricMeanEcliptic, Galactic, SkyCoord,
                                     frame_transform_graph)
    from astropy.time import Time
    if isinstance(frame, str):
        cls = frame_transform_graph.lookup_name(frame)
        if cls is None:
            raise ValueError(f"frame {frame!r} is not a known astropy frame")
        frame = cls()
    elif isinstance(frame, type):
        frame = frame()
    if isinstance(frame, SkyCoord):
        frame = frame.frame
    j2000 = Time('J2000')
    if isinstance(frame, ICRS):
        return 'icrs'
    if isinstance(frame, FK5) and frame.equinox == j2000:
        return 'fk5'
    if isinstance(frame, Galactic):
        return 'galactic'
    if isinstance(frame, BarycentricMeanEcliptic) and frame.equinox == j2000:
        return 'ecliptic'
    raise NotImplementedError(f"tessera: frame {frame.__class__.__name__} is not supported; "
                              "expected ICRS, FK5 (J2000), Galactic or BarycentricMeanEcliptic "
                              "(J2000)")


def _is_single_input(x):
    from astropy.io import fits
    from astropy.nddata import NDDataBase
    from astropy.wcs.wcsapi import BaseHighLevelWCS, BaseLowLevelWCS
    import os
    if isinstance(x, (str, os.PathLike, fits.HDUList, fits.PrimaryHDU, fits.ImageHDU,
                      fits.CompImageHDU, NDDataBase, BaseLowLevelWCS, BaseHighLevelWCS)):
        return True
    if isinstance(x, tuple) and len(x) == 2:
        from astropy.wcs import WCS
        return isinstance(x[1], (fits.Header, WCS, BaseLowLevelWCS, BaseHighLevelWCS))
    return False


def find_optimal_celestial_wcs(input_data, hdu_in=None, frame=None, auto_rotate=False,
                               projection='TAN', resolution=None, reference=None):
    """The WCS and shape of an image covering every input (reproject's
    find_optimal_celestial_wcs, computed by the engine's tsr_optimal_wcs):
    `projection` about the mean of the inputs' reference positions (FITS
    WCS: CRPIX; other APE-14 WCSs: the image centre), at the finest input
    resolution (or `resolution`, a Quantity), in `frame` (default the first
    input's), optionally rotated to the minimum-area rectangle.

    input_data: one input or an iterable of them (file, HDUList, HDU,
    (array or shape, WCS or Header), NDData, a WCS with array_shape).
    Returns (astropy WCS, shape)."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord
    from astropy.wcs import WCS
    from astropy.wcs.utils import pixel_to_skycoord, proj_plane_pixel_scales

    if _is_single_input(input_data):
        input_data = [input_data]
    parsed = [parse_input_shape(x, hdu_in=hdu_in) for x in input_data]
    if not parsed:
        raise ValueError("find_optimal_celestial_wcs: input_data is empty")
    fits_wcs, references, resolutions, any_ape14 = [], [], [], False
    for shape, wcs in parsed:
        if len(shape) != 2:
            raise ValueError(f"Input data is not 2-dimensional (got shape {tuple(shape)!r})")
        if wcs.pixel_n_dim != 2 or wcs.world_n_dim != 2:
            raise ValueError("Input WCS is not 2-dimensional")
        ny, nx = shape
        if isinstance(wcs, WCS):
            if not wcs.has_celestial:
                raise TypeError("WCS does not have celestial components")
            xp, yp = wcs.wcs.crpix
            references.append(pixel_to_skycoord(xp, yp, wcs, origin=1).icrs.frame)
            resolutions.append(np.min(np.abs(proj_plane_pixel_scales(wcs))))
        else:
            any_ape14 = True
            if not isinstance(wcs.pixel_to_world(0, 0), SkyCoord):
                raise TypeError("WCS does not have celestial components")
            xp, yp = (nx - 1) / 2, (ny - 1) / 2
            references.append(wcs.pixel_to_world(xp, yp).icrs.frame)
            cs = wcs.pixel_to_world(np.array([xp, xp, xp + 1]), np.array([yp, yp + 1, yp]))
            resolutions.append(min(abs(cs[0].separation(cs[2]).deg),
                                   abs(cs[0].separation(cs[1]).deg)))
        fits_wcs.append(header_text(to_fits_wcs(wcs).celestial, shape))

    if frame is None:
        first = parsed[0][1]
        if isinstance(first, WCS):
            from astropy.wcs.utils import wcs_to_celestial_frame
            frame = wcs_to_celestial_frame(first)
        else:
            frame = first.pixel_to_world(0, 0).frame.replicate_without_data()
    name = _frame_name(frame)
    ref = None
    if reference is None and any_ape14:
        # The engine takes each FITS WCS's CRPIX position; reproject takes
        # the centre of other APE-14 WCSs: give it the mean reproject forms.
        refs = SkyCoord(references)
        reference = SkyCoord(refs.data.mean(), frame=refs.frame)
    if reference is not None:
        sc = reference if isinstance(reference, SkyCoord) else SkyCoord(reference)
        sph = sc.transform_to(_frame_object(name)).represent_as('unitspherical')
        ref = (float(sph.lon.deg), float(sph.lat.deg))
    if resolution is not None:
        res = float(u.Quantity(resolution).to_value(u.deg))
    elif any_ape14:
        res = float(np.min(resolutions))
    else:
        res = 0.0
    out = _core_optimal(fits_wcs, name, projection, res, ref, bool(auto_rotate))
    from astropy.io import fits
    header = fits.Header.fromstring(out.cards)
    shape = (int(header['NAXIS2']), int(header['NAXIS1']))
    return WCS(header), shape


def _frame_object(name):
    from astropy.coordinates import FK5, ICRS, BarycentricMeanEcliptic, Galactic
    return {'icrs': ICRS(), 'fk5': FK5(equinox='J2000'), 'galactic': Galactic(),
            'ecliptic': BarycentricMeanEcliptic()}[name]


def _core_optimal(inputs, frame, projection, resolution, reference, auto_rotate):
    from . import _core
    return _core.optimal_wcs(inputs, frame=frame, projection=projection, resolution=resolution,
                             reference=reference, auto_rotate=auto_rotate)


# ---------------------------------------------------------------------------
# HEALPix

# healpy's UNSEEN, the blank of HEALPix maps; the engine's file reader makes
# it NaN (within 1e-5 relative, as float32 rounds it), and so do array inputs.
_UNSEEN = -1.6375e30


def _healpix_coordsys(system):
    """The engine's COORDSYS letter for reproject's coordinate system: a
    frame object or class, or a string ('g', 'c', 'e' as in COORDSYS, or an
    astropy frame name).  reproject 0.10 refuses 'e'; the engine reads
    ecliptic maps (barycentric mean ecliptic of J2000)."""
    from astropy.coordinates import (BaseCoordinateFrame, BarycentricMeanEcliptic, Galactic,
                                     ICRS, frame_transform_graph)
    from astropy.time import Time
    if isinstance(system, str):
        key = system.lower()
        if key in ('g', 'c', 'e'):
            return key.upper()
        cls = frame_transform_graph.lookup_name(key)
        if cls is None:
            raise ValueError(f"Could not determine frame for system={key}")
        system = cls()
    elif isinstance(system, type) and issubclass(system, BaseCoordinateFrame):
        system = system()
    if not isinstance(system, BaseCoordinateFrame):
        raise TypeError(f"coordinate system {system!r}: expected a frame or its name")
    if isinstance(system, Galactic):
        return 'G'
    if isinstance(system, ICRS):
        return 'C'
    if isinstance(system, BarycentricMeanEcliptic) and system.equinox == Time('J2000'):
        return 'E'
    raise NotImplementedError(f"tessera: HEALPix maps in frame {system.__class__.__name__} are "
                              "not supported; expected Galactic, ICRS or BarycentricMeanEcliptic "
                              "(J2000), as the COORDSYS values G, C and E")


def _healpix_table_map(hdu, field, nested):
    """(values over the whole sky, coordsys letter, nested) of an in-memory
    HEALPix table HDU, as the engine's file reader would give them: the
    implicit scheme from FIRSTPIX, the explicit one through its PIXEL
    column (which `field` does not count), NaN where no pixel is held."""
    header, data = hdu.header, hdu.data
    if 'COORDSYS' not in header:
        raise KeyError("Keyword 'COORDSYS' not found.")
    coordsys = _healpix_coordsys(str(header['COORDSYS']))
    if 'ORDERING' in header:
        # reproject: the header's ordering wins over nested=.
        nested = str(header['ORDERING']).strip().lower() in ('nested', 'nest')
    names = list(data.columns.names)
    explicit = str(header.get('INDXSCHM', 'IMPLICIT')).strip().upper() == 'EXPLICIT'
    pixcol = None
    if explicit:
        upper = [n.upper() for n in names]
        pixcol = names[upper.index('PIXEL')] if 'PIXEL' in upper else names[0]
    values = [n for n in names if n != pixcol]
    if isinstance(field, str):
        matches = [n for n in values if n.lower() == field.lower()]
        if not matches:
            raise ValueError(f"reproject_from_healpix: the table has no column named {field!r} "
                             f"(value columns: {', '.join(values)})")
        col = matches[0]
    else:
        if not 0 <= int(field) < len(values):
            raise IndexError(f"reproject_from_healpix: field {field} asked for; the table has "
                             f"{len(values)} value column(s) (fields 0 to {len(values) - 1})")
        col = values[int(field)]
    vals = np.asarray(data[col]).ravel()
    nside = header.get('NSIDE')
    if not explicit and 'FIRSTPIX' not in header and nside is None:
        return vals, coordsys, nested          # a whole map without NSIDE: by its length
    if nside is None:
        raise ValueError("reproject_from_healpix: a partial HEALPix table needs NSIDE")
    npix = 12 * int(nside) ** 2
    if not explicit and int(header.get('FIRSTPIX', 0)) == 0 and vals.size == npix:
        return vals, coordsys, nested
    full = np.full(npix, np.nan, dtype=np.float64)
    if explicit:
        pix = np.asarray(data[pixcol]).ravel().astype(np.int64)
        if pix.size and (pix.min() < 0 or pix.max() >= npix):
            raise ValueError(f"reproject_from_healpix: PIXEL values outside [0, {npix}) for "
                             f"NSIDE {nside}")
        full[pix] = vals
    else:
        # As the engine reads files: LASTPIX defaults to the last pixel.
        first = int(header.get('FIRSTPIX', 0))
        last = int(header.get('LASTPIX', npix - 1))
        n = last - first + 1
        if first < 0 or last >= npix or n < 1 or n > vals.size:
            raise ValueError(f"reproject_from_healpix: the table holds {vals.size} values; NSIDE "
                             f"{nside} with FIRSTPIX {first} and LASTPIX {last} needs {n}")
        full[first:last + 1] = vals[:n]
    return full, coordsys, nested


def _without_unseen(a):
    """`a` with UNSEEN values made NaN (a copy only when it has any)."""
    if a.dtype.kind != 'f':
        return a
    # |v / UNSEEN - 1| < 1e-5, as the engine's reader tests it, by two
    # comparisons (no temporary the size of the map in float64).
    with np.errstate(invalid='ignore'):
        bad = (a > _UNSEEN * (1 + 1e-5)) & (a < _UNSEEN * (1 - 1e-5))
    if not bad.any():
        return a
    a = a.copy()
    a[bad] = np.nan
    return a


def reproject_from_healpix(input_data, output_projection, shape_out=None, hdu_in=1,
                           order='bilinear', nested=None, field=0, *, parallel=False,
                           block_size=None):
    """Reproject a HEALPix map onto a WCS (reproject's reproject_from_healpix,
    on the tessera engine).

    input_data: a HEALPix FITS file name (or pathlib.Path), read lazily by the
    engine -- only the table rows the output needs -- from HDU hdu_in (an
    index counted from 0 as in astropy, default 1, or an EXTNAME); a
    BinTableHDU/TableHDU; or a tuple (array of 12 nside^2 values, frame),
    the frame an astropy frame or its name ('galactic', 'icrs', 'g', 'c',
    'e', ...).  output_projection: a WCS with shape_out, or a Header.  order:
    'nearest-neighbor' (0: the pixel holding each output pixel centre) or
    'bilinear' (1: astropy-healpix's four-neighbour interpolation; a NaN
    among the four gives NaN), or (tessera) 'exact': flux-conserving, each
    output pixel the mean of the map pixels it overlaps weighted by the
    overlaps' solid angles (NaN and UNSEEN map pixels make the output
    pixels they overlap NaN), the footprint the covered fraction.  nested:
    the ordering when the map does not
    say (a header's ORDERING wins, as in reproject).  field: the value
    column, by index (the PIXEL column of an explicit partial-sky table not
    counted) or name.  parallel (tessera): False, True (a thread per CPU) or
    N threads; block_size (tessera): the output block (ny, nx).

    UNSEEN (-1.6375e30) and pixels a partial map does not hold are NaN
    (reproject 0.10 interpolates UNSEEN as a number and cannot read partial
    maps); COORDSYS 'E' is read (0.10 refuses it).  Returns (array,
    footprint), float64, the footprint 1 where the output pixel is on the
    sky and 0 off the projection's edge (0.10: all ones)."""
    import os
    from astropy.io import fits
    from . import _core

    method = 'interp'
    if isinstance(order, str) and order == 'exact':
        method, order = 'exact', 1
    elif isinstance(order, str):
        if order not in ORDER:
            raise ValueError(f"order={order!r}: expected 'nearest-neighbor', 'bilinear' (or 0, "
                             f"1) or 'exact'")
        order = ORDER[order]
    if order not in (0, 1):
        raise ValueError("Only nearest-neighbor and bilinear interpolation are supported")
    wcs_out, shape_out = parse_output_projection(output_projection, shape_out=shape_out)
    if len(shape_out) != 2 or wcs_out.pixel_n_dim != 2 or not wcs_out.has_celestial:
        raise ValueError(f"reproject_from_healpix: the output must be a 2-d celestial image "
                         f"(got shape {tuple(shape_out)} and a {wcs_out.pixel_n_dim}-axis WCS)")
    jobs = _jobs(parallel)
    block = _block(block_size, shape_out)
    target = header_text(wcs_out, shape_out)
    g = _core.Graph()

    table = None
    if isinstance(input_data, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(input_data))
        with fits.open(path) as hdul:
            index = hdu_in or 1
            index = hdul.index_of(index) if not isinstance(index, (int, np.integer)) else int(index)
            if not 0 <= index < len(hdul):
                raise IndexError(f"hdu_in={hdu_in}: {path!r} has {len(hdul)} HDUs "
                                 f"(0 to {len(hdul) - 1})")
            header = hdul[index].header
            is_table = isinstance(hdul[index], (fits.BinTableHDU, fits.TableHDU))
            gzipped = getattr(hdul.fileinfo(0)['file'], 'compression', None) is not None
            if gzipped:
                # The engine reads tables in place, row by row; a gzip file
                # cannot be, so astropy inflates it (as reproject does).
                if not is_table:
                    raise ValueError(f"reproject_from_healpix: HDU {index} of {path!r} is a "
                                     f"{type(hdul[index]).__name__}, not a HEALPix table")
                table = type(hdul[index])(data=hdul[index].data.copy(), header=header.copy())
        if table is None:
            if is_table and 'ORDERING' not in header and nested is None:
                raise ValueError("Could not determine whether the data follows the 'ring' or "
                                 "'nested' ordering, so you should set nested=True or "
                                 "nested=False explicitly.")
            src = g.source_healpix(path, hdu=index, field=field,
                                   nested=None if 'ORDERING' in header else bool(nested))
            values = None
    elif isinstance(input_data, (fits.BinTableHDU, fits.TableHDU)):
        table = input_data
    elif isinstance(input_data, tuple) and len(input_data) == 2 and isinstance(input_data[0],
                                                                               np.ndarray):
        values, coordsys = input_data[0], _healpix_coordsys(input_data[1])
    else:
        raise TypeError("input_data should either be an HDU object or a tuple of (array, frame)")
    if table is not None:
        values, coordsys, nested = _healpix_table_map(table, field, nested)

    if values is not None:
        if nested is None:
            raise ValueError("Could not determine whether the data follows the 'ring' or "
                             "'nested' ordering, so you should set nested=True or nested=False "
                             "explicitly.")
        values = np.asarray(values)
        if values.ndim != 1:
            values = values.ravel()
        npix = values.size
        nside = int(round((npix / 12) ** 0.5))
        if npix == 0 or 12 * nside * nside != npix:
            raise ValueError("Number of pixels must be of the form 12 * nside ** 2")
        values = _without_unseen(values)
        src = g.source_array(values)
        data = g.reproject_from_healpix(src, target, order, nested=bool(nested),
                                        coordsys=coordsys, dtype='float64', block=block,
                                        method=method)
    else:
        data = g.reproject_from_healpix(src, target, order, dtype='float64', block=block,
                                        method=method)
    return g.compute([data, g.footprint(data)], jobs=jobs)

# ---------------------------------------------------------------------------
# HiPS

_HIPS_FRAMES = ('equatorial', 'galactic', 'ecliptic')
# Properties reproject 0.21 will not let a caller override.
_HIPS_RESERVED = ('dataproduct_type', 'hips_version', 'hips_tile_format', 'hips_tile_width',
                  'hips_order', 'hips_frame')


def _hips_level(wcs, tile_size):
    """reproject 0.21's order when level=None: the HEALPix order whose pixels
    are nearest a tile of the input's finest pixels (at its reference point)."""
    from astropy import units as u
    from astropy.wcs.utils import proj_plane_pixel_scales
    from astropy_healpix import nside_to_level, pixel_resolution_to_nside
    cel = wcs.celestial
    scale = min(abs(s) * u.Unit(c) for s, c in zip(proj_plane_pixel_scales(cel), cel.wcs.cunit))
    return int(nside_to_level(pixel_resolution_to_nside(scale * tile_size)))


class _TileProgress:
    """reproject's progress_bar (a callable wrapping an iterable, as tqdm)
    driven by the engine's tile counts: the iterable is range(total), made
    at the first report, and advanced one step per tile done."""

    def __init__(self, progress_bar):
        self.progress_bar, self.it, self.done = progress_bar, None, 0

    def __call__(self, done, total):
        if self.it is None:
            self.it = iter(self.progress_bar(range(total)))
        for _ in range(done - self.done):
            next(self.it, None)
        self.done = done

    def close(self):
        if self.it is not None:
            for _ in self.it:
                pass


def _update_properties(directory, extra):
    """Set the keys of `extra` in directory/properties (replaced where the
    file has them, appended otherwise), written to a temporary name and
    renamed as the engine writes it."""
    path = os.path.join(directory, 'properties')
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    left = dict(extra)
    out = []
    for line in lines:
        key = line.split('=', 1)[0].strip()
        if key in left:
            line = f"{key:<20} = {left.pop(key)}"
        out.append(line)
    out += [f"{k:<20} = {v}" for k, v in left.items()]
    tmp = f"{path}.tsr-{os.getpid()}.tmp"
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write('\n'.join(out) + '\n')
    os.replace(tmp, path)


def reproject_to_hips(input_data, *, coord_system_out, reproject_function, output_directory,
                      level=None, level_depth=None, hdu_in=0, tile_size=512, tile_depth=16,
                      progress_bar=None, threads=False, properties=None, **kwargs):
    """Reproject an image to a HiPS directory (reproject 0.21's
    reproject.hips.reproject_to_hips, on the tessera engine: tsr_write_hips).

    input_data: the forms reproject takes (a FITS file name, HDUList, image
    HDU, (array, WCS or Header), NDData) with a 2-d celestial WCS.
    coord_system_out: 'equatorial', 'galactic' or 'ecliptic'.
    reproject_function: reproject_interp (tessera's or reproject's); kwargs
    may give its `order` (the only keyword forwarded).  output_directory:
    must not exist (its parents are made).  level: the deepest order (None:
    reproject's choice, the order whose pixels are nearest the size of a
    tile of the input's pixels).  tile_size: a power of two from 8 to 4096
    (reproject takes any even size; the engine's tiles are powers of two).
    progress_bar: a callable wrapping an iterable (tqdm), advanced once per
    deepest tile.  threads: False (serial), True (a thread per CPU) or N.
    properties: extra keys for the properties file (obs_title and
    hips_pixel_cut set the title and the PNG cut too; reproject's reserved
    keys raise ValueError).  level_depth and tile_depth apply to spectral
    cubes (HiPS3D), which are not supported: they are ignored for images,
    as reproject ignores them.

    Writes FITS tiles (and, unlike reproject, PNG tiles and Allsky files
    too) with reproject 0.21's tile geometry; lower orders are the 2x2
    NaN-ignoring means of their children.  Returns None.
    """
    import errno
    from pathlib import Path

    if isinstance(input_data, (str, Path)) and os.fspath(input_data).lower().endswith(
            ('.png', '.jpg', '.jpeg')):
        raise NotImplementedError("tessera: reproject_to_hips takes FITS images, not PNG or "
                                  "JPEG files with AVM metadata")
    inp = parse_input_data(input_data, hdu_in=hdu_in)
    wcs = inp.wcs
    if not _has_celestial(wcs):
        raise Exception("Only data with a celestial WCS can be reprojected to HiPS tiles")
    if wcs.pixel_n_dim != wcs.world_n_dim:
        raise Exception(f"Number of pixel ({wcs.pixel_n_dim}) and world ({wcs.world_n_dim}) "
                        f"dimensions do not match")
    if wcs.pixel_n_dim == 3:
        raise NotImplementedError("tessera: HiPS3D (a cube with a spectral axis) is not "
                                  "supported; reproject_to_hips takes a 2-d image here")
    if wcs.pixel_n_dim != 2:
        raise Exception("Can only reproject data with 2-d or 3-d WCS")
    if len(inp.shape) != 2:
        raise NotImplementedError(f"tessera: reproject_to_hips takes a 2-d array (an RGB image "
                                  f"is not supported), got shape {tuple(inp.shape)}")
    if _method_of(reproject_function) != 'interp':
        raise NotImplementedError("tessera: reproject_to_hips makes tiles with reproject_interp "
                                  f"only, not {reproject_function.__name__}")
    order = kwargs.pop('order', 'bilinear')
    if kwargs:
        raise TypeError(f"reproject_to_hips: unexpected keyword argument "
                        f"{sorted(kwargs)[0]!r} (tessera forwards only order= to "
                        f"reproject_interp)")
    if isinstance(order, str):
        if order not in ORDER or ORDER[order] > 3:
            raise ValueError(f"order={order!r}: expected nearest-neighbor, bilinear, "
                             "biquadratic, bicubic or 0-3")
        order = ORDER[order]
    if isinstance(tile_size, bool) or not isinstance(tile_size, numbers.Integral):
        raise TypeError(f"tile_size should be an integer, got {tile_size!r}")
    if tile_size % 2 != 0:
        raise ValueError("tile_size should be even")
    if not (8 <= tile_size <= 4096 and tile_size & (tile_size - 1) == 0):
        raise ValueError(f"tessera: tile_size={tile_size}: expected a power of two from 8 to "
                         "4096 (the engine's HiPS tiles)")
    if coord_system_out not in _HIPS_FRAMES:
        raise ValueError("coord_system_out should be one of " + "/".join(_HIPS_FRAMES))
    properties = dict(properties or {})
    for key in properties:
        if key in _HIPS_RESERVED:
            raise ValueError(f"Cannot override property {key}")
    options = {}
    if 'obs_title' in properties:
        options['title'] = str(properties['obs_title'])
    if 'hips_pixel_cut' in properties:
        cut = properties['hips_pixel_cut']
        try:
            lo, hi = (float(x) for x in (cut.split() if isinstance(cut, str) else cut))
        except (TypeError, ValueError):
            raise ValueError(f"properties['hips_pixel_cut'] = {cut!r}: expected 'low high'") \
                from None
        options['cut'] = (lo, hi)
    if level is None:
        level = _hips_level(wcs, tile_size)
    if os.path.exists(output_directory):
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fspath(output_directory))
    parent = os.path.dirname(os.path.abspath(os.fspath(output_directory)))
    os.makedirs(parent, exist_ok=True)
    prog = _TileProgress(progress_bar) if progress_bar is not None else None
    try:
        _array.write_hips(_source(inp, None, 0, wcs, inp.shape), output_directory,
                          level=int(level), tile_width=int(tile_size), frame=coord_system_out,
                          order=int(order), jobs=_jobs(threads), progress=prog, **options)
    finally:
        if prog is not None:
            prog.close()
    rest = {k: v for k, v in properties.items() if k not in ('obs_title', 'hips_pixel_cut')}
    if rest:
        _update_properties(output_directory, rest)
