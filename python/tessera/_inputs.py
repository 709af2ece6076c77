"""The input and output forms of reproject's functions, parsed for the engine.

reproject accepts a file name or pathlib.Path, an HDUList, an image HDU
(PrimaryHDU, ImageHDU, CompImageHDU), a tuple (array, WCS or Header) where the
array is numpy (any dtype, byte order, strides, np.memmap) or dask, and an
NDData; the WCS may be any APE-14 WCS.  The engine needs data it can read
window by window and FITS WCS header text, so each form becomes an Input: an
astropy FITS WCS equal to the one reproject would use (APE-14 wrappers and
slices of FITS WCSs are turned back into FITS WCSs), the array shape, and
either the file and HDU the engine reads itself or the array it borrows.
"""
import os
import sys

import numpy as np

__all__ = ['Input', 'parse_input_data', 'parse_input_shape', 'parse_input_weights',
           'parse_output_projection', 'to_fits_wcs', 'header_text']


def _is_dask(x):
    mod = type(x).__module__
    return mod.startswith('dask.') and hasattr(x, 'chunks') and hasattr(x, 'dask')


def _is_array(x):
    return isinstance(x, np.ndarray) or _is_dask(x)


class Input:
    """One parsed input: `wcs` (astropy FITS WCS), `shape` (numpy order),
    `dtype`, and either `path` and `hdu` (a FITS file the engine reads) or
    `data` (a numpy or dask array)."""

    def __init__(self, wcs, shape, dtype, data=None, path=None, hdu=None):
        self.wcs, self.shape, self.dtype = wcs, tuple(int(n) for n in shape), np.dtype(dtype)
        self.data, self.path, self.hdu = data, path, hdu

    def numpy(self):
        """The values as a numpy array (reads a file's HDU, computes a dask
        array): for the few paths that need them all in memory."""
        if self.data is None:
            from astropy.io import fits
            with fits.open(self.path) as hdul:
                return np.array(hdul[self.hdu].data)
        return np.asarray(self.data)


def _resolve_hdu(hdul, hdu_in, what='hdu_in'):
    """Index of HDU `hdu_in` (an int, an EXTNAME or (EXTNAME, EXTVER)) of an
    HDUList; None is 0 when there is one HDU, else an error (reproject)."""
    if hdu_in is None:
        if len(hdul) > 1:
            raise ValueError("More than one HDU is present, please specify HDU to use with "
                             "``%s=`` option" % what)
        return 0
    if isinstance(hdu_in, (int, np.integer)):
        if not -len(hdul) <= hdu_in < len(hdul):
            raise IndexError(f"{what}={int(hdu_in)}: the file has {len(hdul)} HDUs "
                             f"(0 to {len(hdul) - 1})")
        return int(hdu_in) % len(hdul)
    return hdul.index_of(hdu_in)


def _wcs_from_header(header, hdulist=None):
    from astropy.wcs import WCS
    return WCS(header) if hdulist is None else WCS(header, fobj=hdulist)


def _hdu_input(hdu, what):
    # A CompImageHDU's data are decompressed by astropy here, as reproject
    # does (the engine decompresses tiles itself only for files).
    data = hdu.data
    if data is None:
        raise ValueError(f"{what}: the HDU has no data (NAXIS = 0); choose an image HDU with "
                         "hdu_in")
    return Input(to_fits_wcs(_wcs_from_header(hdu.header)), data.shape, data.dtype, data=data)


def parse_input_data(input_data, hdu_in=None, what='input_data'):
    """An Input from any form reproject accepts (utils.parse_input_data)."""
    from astropy.io import fits

    if isinstance(input_data, Input):
        return input_data
    if isinstance(input_data, (str, os.PathLike)):
        path = os.path.abspath(os.fspath(input_data))
        with fits.open(path) as hdul:
            index = _resolve_hdu(hdul, hdu_in)
            hdu = hdul[index]
            if not isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
                raise ValueError(f"{what}: HDU {index} of {path!r} is a "
                                 f"{type(hdu).__name__}, not an image")
            header = hdu.header
            shape = hdu.shape
            if not shape or hdu.header.get('NAXIS', 0) == 0:
                raise ValueError(f"{what}: HDU {index} of {path!r} has no data (NAXIS = 0); "
                                 "choose an image HDU with hdu_in")
            wcs = to_fits_wcs(_wcs_from_header(header))
            bitpix = header.get('ZBITPIX', header.get('BITPIX'))
        dtype = np.float64 if bitpix in (-64, 32, 64) else np.float32
        return Input(wcs, shape, dtype, path=path, hdu=index)
    if isinstance(input_data, fits.HDUList):
        index = _resolve_hdu(input_data, hdu_in)
        return parse_input_data(input_data[index], what=what)
    if isinstance(input_data, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return _hdu_input(input_data, what)
    if isinstance(input_data, tuple) and len(input_data) == 2 and _is_array(input_data[0]):
        data, coords = input_data
        if isinstance(coords, fits.Header):
            wcs = _wcs_from_header(coords)
        else:
            wcs = to_fits_wcs(coords)
        return Input(wcs, data.shape, data.dtype, data=data)
    # An NDData's module is loaded already: a process without one is spared
    # importing astropy.nddata (60 ms).
    if 'astropy.nddata' in sys.modules and isinstance(
            input_data, sys.modules['astropy.nddata'].NDDataBase):
        data = input_data.data
        if input_data.wcs is None:
            raise ValueError(f"{what}: the NDData has no WCS")
        if not _is_array(data):
            data = np.asarray(data)
        return Input(to_fits_wcs(input_data.wcs), data.shape, data.dtype, data=data)
    raise TypeError("input_data should either be an HDU object or a tuple of (array, WCS) or "
                    "(array, Header)")


def parse_input_shape(input_shape, hdu_in=None):
    """(shape, WCS) from the forms find_optimal_celestial_wcs takes: those of
    parse_input_data, (shape tuple, WCS or Header), or a WCS with array_shape.
    The WCS is returned as given (APE-14 semantics are the caller's)."""
    from astropy.io import fits
    from astropy.nddata import NDDataBase
    from astropy.wcs.wcsapi import BaseHighLevelWCS, BaseLowLevelWCS

    if isinstance(input_shape, (str, os.PathLike)):
        with fits.open(os.fspath(input_shape)) as hdul:
            return parse_input_shape(hdul, hdu_in=hdu_in)
    if isinstance(input_shape, fits.HDUList):
        return parse_input_shape(input_shape[_resolve_hdu(input_shape, hdu_in)])
    if isinstance(input_shape, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return input_shape.shape, _wcs_from_header(input_shape.header)
    if isinstance(input_shape, tuple) and len(input_shape) == 2:
        first, coords = input_shape
        if _is_array(first):
            shape = first.shape
        elif isinstance(first, tuple):
            shape = first
        else:
            shape = None
        if shape is not None:
            if isinstance(coords, fits.Header):
                return shape, _wcs_from_header(coords)
            return shape, coords
    if isinstance(input_shape, NDDataBase):
        return np.shape(input_shape.data), input_shape.wcs
    if isinstance(input_shape, (BaseLowLevelWCS, BaseHighLevelWCS)):
        low = getattr(input_shape, 'low_level_wcs', input_shape)
        if low.array_shape is not None:
            return tuple(low.array_shape), input_shape
    raise TypeError("input_shape should either be an HDU object or a tuple of "
                    "(array-or-shape, WCS) or (array-or-shape, Header)")


def parse_input_weights(input_weights, hdu_weights=None):
    """A weight map (an array) from a file name, HDUList, HDU or array."""
    from astropy.io import fits
    if isinstance(input_weights, (str, os.PathLike)):
        with fits.open(os.fspath(input_weights)) as hdul:
            return np.array(hdul[_resolve_hdu(hdul, hdu_weights, 'hdu_weights')].data)
    if isinstance(input_weights, fits.HDUList):
        return input_weights[_resolve_hdu(input_weights, hdu_weights, 'hdu_weights')].data
    if isinstance(input_weights, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)):
        return input_weights.data
    if _is_array(input_weights):
        return input_weights
    raise TypeError("input_weights should either be an HDU object or a Numpy array")


def parse_output_projection(output_projection, shape_in=None, shape_out=None, output_array=None):
    """(astropy FITS WCS, shape_out) as reproject's parse_output_projection:
    a Header's NAXISn win over shape_out; a WCS needs shape_out or its
    array_shape; a str is a FITS file (its primary HDU); leading input axes
    the output WCS lacks are prepended (broadcasting)."""
    from astropy.io import fits
    from astropy.wcs.wcsapi import BaseHighLevelWCS, BaseLowLevelWCS

    if shape_out is None:
        if output_array is not None:
            shape_out = output_array.shape
    elif output_array is not None and tuple(shape_out) != tuple(output_array.shape):
        raise ValueError("shape_out does not match shape of output_array")

    if isinstance(output_projection, fits.Header):
        wcs_out = _wcs_from_header(output_projection)
        try:
            shape_out = [output_projection[f"NAXIS{i + 1}"]
                         for i in range(output_projection["NAXIS"])][::-1]
        except KeyError:
            if shape_out is None:
                raise ValueError("Need to specify shape since output header does not contain "
                                 "complete shape information") from None
    elif isinstance(output_projection, (BaseHighLevelWCS, BaseLowLevelWCS)):
        wcs_out = output_projection
        if shape_out is None:
            low = getattr(output_projection, 'low_level_wcs', output_projection)
            if low.array_shape is None:
                raise ValueError("Need to specify shape_out when specifying output_projection "
                                 "as WCS object")
            shape_out = tuple(low.array_shape)
    elif isinstance(output_projection, (str, os.PathLike)):
        with fits.open(os.fspath(output_projection)) as hdul:
            shape_out = hdul[0].data.shape
            wcs_out = _wcs_from_header(hdul[0].header)
    else:
        raise TypeError("output_projection should either be a Header, a WCS object, or a "
                        "filename")

    shape_out = tuple(int(n) for n in shape_out)
    if len(shape_out) == 0:
        raise ValueError("The shape of the output image should not be an empty tuple")
    wcs_out = to_fits_wcs(wcs_out)
    if (shape_in is not None and len(shape_out) < len(shape_in)
            and len(shape_out) == wcs_out.pixel_n_dim):
        shape_out = tuple(shape_in[:-len(shape_out)]) + shape_out
    return wcs_out, shape_out


def to_fits_wcs(wcs):
    """An astropy.wcs.WCS equal to APE-14 WCS `wcs`: a FITS WCS as it is, a
    HighLevelWCSWrapper unwrapped, a SlicedLowLevelWCS of a FITS WCS turned
    into the sliced FITS WCS (ranges shift CRPIX; an integer index drops an
    axis that no other axis depends on).  Anything else (gwcs, ...) has no
    FITS form for the engine: NotImplementedError."""
    from astropy.wcs import WCS
    from astropy.wcs.wcsapi import HighLevelWCSWrapper, SlicedLowLevelWCS

    if isinstance(wcs, WCS):
        return wcs
    if isinstance(wcs, HighLevelWCSWrapper):
        return to_fits_wcs(wcs.low_level_wcs)
    if isinstance(wcs, SlicedLowLevelWCS):
        base = to_fits_wcs(wcs._wcs)
        slices = list(wcs._slices_array)    # numpy order, one per pixel axis
        ranges = tuple(s if isinstance(s, slice) else slice(None) for s in slices)
        if any(s != slice(None) for s in ranges):
            base = base.slice(ranges)
        drop = [base.naxis - 1 - i for i, s in enumerate(slices) if not isinstance(s, slice)]
        if drop:
            corr = base.axis_correlation_matrix   # world x pixel
            keep = [a for a in range(base.naxis) if a not in drop]
            for a in drop:
                index = slices[base.naxis - 1 - a]
                worlds = np.nonzero(corr[:, a])[0]
                if corr[worlds][:, keep].any():
                    raise NotImplementedError(
                        f"the WCS is a slice at index {index} of pixel axis {a + 1}, which "
                        "other axes depend on: it has no FITS form tessera can use")
            # An independent axis dropped at any index leaves the others as
            # they are.
            base = base.sub([a + 1 for a in keep])
        return base
    name = type(wcs).__name__
    raise NotImplementedError(
        f"tessera: a {name} WCS has no FITS form; the engine needs a WCS that astropy.wcs.WCS "
        "can express (FITS WCS, SIP/TPV distortions, slices of them)")


def _card(key, value):
    if isinstance(value, str):
        return f"{key:<8}= {value}".ljust(80)
    return f"{key:<8}= {value:>20}".ljust(80)


def header_text(wcs, shape=None):
    """FITS header text (80-column cards) of astropy WCS `wcs` for the
    engine, with NAXIS/NAXISn of `shape` (numpy order) when given."""
    if any(getattr(wcs, k, None) is not None for k in ('cpdis1', 'cpdis2', 'det2im1', 'det2im2')):
        raise NotImplementedError("tessera: the WCS has distortion lookup tables (CPDIS/D2IM); "
                                  "the engine takes SIP, TPV and TPD distortions")
    if wcs.sip is None:
        # wcslib's own cards, as astropy's to_header makes them but with 17
        # significant digits (every double as astropy holds it) and without
        # the cost of building and verifying a Header (a 64x64 call's budget).
        from astropy.wcs import WCSHDO_P17, WCSHDO_all
        text = wcs.wcs.to_header(WCSHDO_all | WCSHDO_P17)
    else:
        text = wcs.to_header(relax=True).tostring()
    cards = [text[i:i + 80] for i in range(0, len(text), 80)]
    keys = {c[:8].rstrip() for c in cards}
    if cards and cards[-1].startswith('END'):
        cards.pop()
    # wcslib and astropy leave out empty CTYPEs (linear axes, as in
    # WCS(naxis=2)); the engine takes a header without CTYPEn for one
    # without a WCS.
    cards += [_card(f'CTYPE{i + 1}', "''") for i in range(wcs.naxis)
              if f'CTYPE{i + 1}' not in keys]
    if shape is not None:
        cards = [c for c in cards if not c.startswith('NAXIS')]
        cards += [_card('NAXIS', len(shape))]
        cards += [_card(f'NAXIS{i + 1}', int(n)) for i, n in enumerate(reversed(shape))]
    return ''.join(cards)
