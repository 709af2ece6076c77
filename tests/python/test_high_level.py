"""tessera's reproject-compatible functions: every input form, parameter and
error; results bit for bit against the tessera CLI, and against reproject
0.10 (Debian's) where the semantics are the same.

The CLI comparisons need $TESSERA_CLI (meson sets it to the built tool).
"""
import os
import pathlib
import subprocess
import threading
import warnings

import numpy as np
import pytest
from astropy import units as u
from astropy.coordinates import FK5, Galactic, SkyCoord
from astropy.io import fits
from astropy.nddata import NDData
from astropy.wcs import WCS
from astropy.wcs.wcsapi import HighLevelWCSWrapper, SlicedLowLevelWCS

import tessera
from tessera import (find_optimal_celestial_wcs, reproject_adaptive, reproject_and_coadd,
                     reproject_exact, reproject_interp)

reproject = pytest.importorskip("reproject")
import reproject.mosaicking  # noqa: E402

SHAPE_IN = (50, 60)
SHAPE_OUT = (48, 56)


def sky_wcs(shape, crval=(10.68, 41.27), cdelt=2 / 3600, rot=0.0, crpix=None,
            ctype=('RA---TAN', 'DEC--TAN')):
    w = WCS(naxis=2)
    w.wcs.ctype = list(ctype)
    w.wcs.crval = crval
    w.wcs.crpix = crpix or ((shape[1] + 1) / 2, (shape[0] + 1) / 2)
    w.wcs.cdelt = (-cdelt, cdelt)
    a = np.radians(rot)
    w.wcs.pc = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return w


def sky_image(shape, seed=1, integers=False):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:shape[0], :shape[1]]
    img = 100 + 10 * np.sin(x / 5.0) + 5 * np.cos(y / 7.0) + rng.normal(0, 1, shape)
    return np.round(img) if integers else img


WCS_IN = sky_wcs(SHAPE_IN)
WCS_IN = WCS(WCS_IN.to_header())  # see WCS_OUT below
# SIN, rotated 20 degrees, 10% coarser, shifted: no exact shortcut applies.
WCS_OUT = sky_wcs(SHAPE_OUT, crval=(10.6805, 41.2705), cdelt=2.2 / 3600, rot=20,
                  ctype=('RA---SIN', 'DEC--SIN'))
# As its own header gives it back: astropy writes a Header's values to 14
# significant digits, while a WCS object is passed with every digit, so a WCS
# and its to_header() are two projections 1e-11 apart (in reproject too).
# The tests that compare the two forms (and FITS files) bit for bit start
# from one that both express exactly.
WCS_OUT = WCS(WCS_OUT.to_header())
IMG = sky_image(SHAPE_IN)


def header_out():
    h = WCS_OUT.to_header()
    h['NAXIS'] = 2
    h['NAXIS1'], h['NAXIS2'] = SHAPE_OUT[1], SHAPE_OUT[0]
    return h


def same(a, b):
    """Bit for bit, NaN where NaN (in native byte order: FITS files are
    big-endian)."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.dtype.kind == b.dtype.kind
    assert a.dtype.itemsize == b.dtype.itemsize
    a, b = a.astype(a.dtype.newbyteorder('=')), b.astype(b.dtype.newbyteorder('='))
    assert np.array_equal(np.isnan(a), np.isnan(b))
    assert np.array_equal(np.nan_to_num(a, nan=0.0).view(np.uint8),
                          np.nan_to_num(b, nan=0.0).view(np.uint8))


def close_to_reproject(a, b, rtol):
    assert np.array_equal(np.isnan(a), np.isnan(b)), "NaN pixels differ"
    np.testing.assert_allclose(a, b, rtol=rtol, equal_nan=True)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp('hl')
    p = d / 'in.fits'
    fits.PrimaryHDU(IMG, WCS_IN.to_header()).writeto(p)
    t = d / 'target.hdr'
    header_out().totextfile(t)
    return d, p, t


# ---------------------------------------------------------------------------
# Bit for bit with the CLI

CLI_CASES = [
    ('interp', {'order': 'nearest-neighbor'}, ['--order', 'nearest-neighbor']),
    ('interp', {'order': 'bilinear'}, ['--order', 'bilinear']),
    ('interp', {'order': 'biquadratic'}, ['--order', 'biquadratic']),
    ('interp', {'order': 'bicubic', 'roundtrip_coords': False}, ['--order', 'bicubic',
                                                                  '--no-roundtrip']),
    ('interp', {'order': 'bilinear', 'mapping_tolerance': 1e-4}, ['--mapping-tolerance', '1e-4']),
    ('interp', {'order': 'lanczos2'}, ['--order', 'lanczos2']),
    ('interp', {'order': 'lanczos3'}, ['--order', 'LANCZOS3']),
    ('interp', {'order': 'lanczos4', 'mapping_tolerance': 1e-4}, ['--order', 'lanczos4',
                                                                   '--mapping-tolerance', '1e-4']),
    ('adaptive', {}, []),
    ('adaptive', {'kernel': 'hann', 'boundary_mode': 'ignore', 'center_jacobian': True},
     ['--kernel', 'hann', '--boundary-mode', 'ignore', '--center-jacobian']),
    ('adaptive', {'conserve_flux': True, 'boundary_mode': 'constant', 'boundary_fill_value': 3,
                  'kernel_width': 1.5, 'sample_region_width': 5},
     ['--conserve-flux', '--boundary-mode', 'constant', '--boundary-fill-value', '3',
      '--kernel-width', '1.5', '--sample-region-width', '5']),
    ('exact', {}, []),
]


@pytest.mark.parametrize('method, kwargs, args', CLI_CASES,
                         ids=[f'{m}-{"-".join(a) or "default"}' for m, _, a in CLI_CASES])
def test_bit_for_bit_with_the_cli(files, method, kwargs, args):
    cli = os.environ.get('TESSERA_CLI')
    if not cli:
        pytest.skip('TESSERA_CLI is not set (meson sets it)')
    d, p, t = files
    out, fp = d / f'{method}-{len(args)}.fits', d / f'{method}-{len(args)}-fp.fits'
    if method != 'exact' and 'mapping_tolerance' not in kwargs:
        args = args + ['--mapping-tolerance', '0']
    subprocess.run([cli, 'reproject', str(p), '--target', str(t), '-o', str(out), '--footprint',
                    str(fp), '--method', method, '--dtype', 'float64', '-j', '1', '--quiet']
                   + args, check=True)
    fn = {'interp': reproject_interp, 'adaptive': reproject_adaptive,
          'exact': reproject_exact}[method]
    array, footprint = fn(str(p), header_out(), **kwargs)
    same(array, fits.getdata(out))
    same(footprint, fits.getdata(fp))


def test_lanczos_orders_by_name_only(files):
    """reproject's integer orders stay 0-3: 4-6 are not Lanczos by number."""
    d, p, t = files
    with pytest.raises(ValueError, match="order=5: expected 0-3 or one of"):
        reproject_interp(str(p), header_out(), order=5)
    with pytest.raises(ValueError, match="'lanczos5': expected one of .*lanczos4"):
        reproject_interp(str(p), header_out(), order='lanczos5')
    array, footprint = reproject_interp(str(p), header_out(), order='lanczos3')
    assert np.isfinite(array).sum() > array.size // 4
    same(footprint, np.isfinite(array).astype(footprint.dtype))


# ---------------------------------------------------------------------------
# Agreement with reproject 0.10

@pytest.mark.parametrize('order', ['nearest-neighbor', 'bilinear', 'biquadratic', 'bicubic'])
@pytest.mark.parametrize('target', ['sin', 'galactic-car'])
def test_interp_agrees_with_reproject(order, target):
    wcs_out = WCS_OUT if target == 'sin' else sky_wcs(
        SHAPE_OUT, crval=(121.17, -21.57), cdelt=2.2 / 3600, ctype=('GLON-CAR', 'GLAT-CAR'))
    a, fa = reproject_interp((IMG, WCS_IN), wcs_out, shape_out=SHAPE_OUT, order=order)
    b, fb = reproject.reproject_interp((IMG, WCS_IN), wcs_out, shape_out=SHAPE_OUT, order=order)
    assert np.isfinite(a).sum() > 1000
    close_to_reproject(a, b, 1e-10)
    same(fa, fb)


@pytest.mark.parametrize('kwargs', [{}, {'kernel': 'hann'}, {'center_jacobian': True},
                                    {'boundary_mode': 'nearest', 'conserve_flux': True}])
def test_adaptive_agrees_with_reproject(kwargs):
    a, fa = reproject_adaptive((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, **kwargs)
    b, fb = reproject.reproject_adaptive((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, **kwargs)
    close_to_reproject(a, b, 1e-10)
    same(fa, fb)


def test_exact_agrees_with_reproject():
    # reproject 0.10 intersects arcsecond pixels on the sphere and loses
    # ~1e-4 of a pixel's area to rounding (its 0.20 fix, a planar path, is
    # what tessera does): values agree to 1e-5, footprints to 3e-4.
    a, fa = reproject_exact((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT)
    b, fb = reproject.reproject_exact((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT)
    close_to_reproject(a, b, 1e-5)
    np.testing.assert_allclose(fa, fb, atol=3e-4)


def test_exact_keeps_surface_brightness_on_small_pixels():
    # 0.01 arcsec pixels, where reproject 0.10 warns of precision issues
    # (and its footprints are off by up to 0.17 here): fully covered output
    # pixels have footprint 1 to 1e-8, and no warning is given.
    res = 0.01 / 3600
    w1 = sky_wcs((19, 19), crval=(13, 80), cdelt=res)
    w2 = sky_wcs((5, 5), crval=(13, 80), cdelt=3 * res)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        array, footprint = reproject_exact((np.ones((19, 19)), w1), w2, shape_out=(5, 5))
    np.testing.assert_allclose(array, 1, rtol=1e-12)
    np.testing.assert_allclose(footprint[1:4, 1:4], 1, atol=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        _, theirs = reproject.reproject_exact((np.ones((19, 19)), w1), w2, shape_out=(5, 5))
    assert np.abs(theirs[1:4, 1:4] - 1).max() > 1e-2


# ---------------------------------------------------------------------------
# Input forms

INT_IMG = sky_image(SHAPE_IN, integers=True)   # exact in every dtype below
# The WCS as a header holds it (astropy writes 14 significant digits), so
# that the forms made from a header and those from a WCS are one WCS.
WCS_HDR = WCS(WCS_IN.to_header())


def _reference():
    return reproject_interp((INT_IMG, WCS_HDR), header_out())


def _forms(tmp_path):
    hdr = WCS_HDR.to_header()
    path = tmp_path / 'int.fits'
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(INT_IMG.astype(np.int16), hdr, name='SCI')]
                 ).writeto(path)
    cpath = tmp_path / 'comp.fits'
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(INT_IMG.astype(np.int32), hdr)]
                 ).writeto(cpath)
    mm = np.memmap(tmp_path / 'mm.dat', dtype='>f8', mode='w+', shape=SHAPE_IN)
    mm[:] = INT_IMG
    mm.flush()
    big = np.zeros((SHAPE_IN[0] * 2, SHAPE_IN[1] * 3))
    big[::2, ::3] = INT_IMG
    import dask.array as da
    forms = {
        'str': (str(path), {'hdu_in': 1}),
        'Path': (pathlib.Path(path), {'hdu_in': 'SCI'}),
        'HDUList': (fits.open(path), {'hdu_in': 1}),
        'ImageHDU': (fits.ImageHDU(INT_IMG.astype('>i2'), hdr), {}),
        'PrimaryHDU': (fits.PrimaryHDU(INT_IMG.astype(np.float32), hdr), {}),
        'CompImageHDU': (fits.open(cpath)[1], {}),
        'compressed-file': (str(cpath), {'hdu_in': 1}),
        'array-Header': ((INT_IMG, hdr), {}),
        'NDData': (NDData(INT_IMG, wcs=WCS_HDR), {}),
        'APE14-wrapper': ((INT_IMG, HighLevelWCSWrapper(SlicedLowLevelWCS(WCS_HDR, Ellipsis))), {}),
        'memmap-big-endian': ((mm, WCS_HDR), {}),
        'strided-view': ((big[::2, ::3], WCS_HDR), {}),
        'dask': ((da.from_array(INT_IMG, chunks=(16, 16)), WCS_HDR), {}),
    }
    for dt in ['u1', 'i2', '>u2', 'i4', '<i8', '>f4', 'f2', 'f8']:
        forms['dtype-' + dt] = ((INT_IMG.astype(dt), WCS_HDR), {})
    return forms


def test_every_input_form_gives_the_same_bits(tmp_path):
    ref_a, ref_f = _reference()
    assert np.isfinite(ref_a).sum() > 1000
    for name, (data, kw) in _forms(tmp_path).items():
        a, f = reproject_interp(data, header_out(), **kw)
        try:
            same(a, ref_a)
            same(f, ref_f)
        except AssertionError as e:
            raise AssertionError(f'input form {name}: {e}') from None


def test_hdu_in_errors(tmp_path):
    path = tmp_path / 'two.fits'
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(IMG, WCS_IN.to_header())]).writeto(path)
    with pytest.raises(ValueError, match='has no data'):
        reproject_interp(str(path), WCS_OUT, shape_out=SHAPE_OUT)       # hdu_in=0: no data
    with pytest.raises(IndexError, match='hdu_in=5: the file has 2 HDUs'):
        reproject_interp(str(path), WCS_OUT, shape_out=SHAPE_OUT, hdu_in=5)
    with pytest.raises(ValueError, match='More than one HDU is present'):
        reproject_and_coadd([str(path)], WCS_OUT, shape_out=SHAPE_OUT,
                            reproject_function=reproject_interp)
    with pytest.raises(TypeError, match='input_data should either be an HDU object'):
        reproject_interp([1, 2, 3], WCS_OUT, shape_out=SHAPE_OUT)


def test_ape14_wcs_without_fits_form_is_refused():
    class Opaque(HighLevelWCSWrapper):
        pass
    low = SlicedLowLevelWCS(WCS_IN, Ellipsis)

    class NotFits:
        pixel_n_dim = 2
    from tessera._inputs import to_fits_wcs
    with pytest.raises(NotImplementedError, match='has no FITS form'):
        to_fits_wcs(NotFits())
    # A wrapper of a FITS WCS is unwrapped (same bits as the FITS WCS).
    a, _ = reproject_interp((IMG, Opaque(low)), WCS_OUT, shape_out=SHAPE_OUT)
    b, _ = reproject_interp((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT)
    same(a, b)


def test_sliced_wcs_becomes_the_sliced_fits_wcs():
    sliced = HighLevelWCSWrapper(SlicedLowLevelWCS(WCS_IN, (slice(5, 45), slice(10, 50))))
    a, _ = reproject_interp((IMG[5:45, 10:50], sliced), WCS_OUT, shape_out=SHAPE_OUT)
    b, _ = reproject.reproject_interp((IMG[5:45, 10:50], sliced), WCS_OUT, shape_out=SHAPE_OUT)
    close_to_reproject(a, b, 1e-10)


# ---------------------------------------------------------------------------
# Output projection and shape

def test_output_projection_forms(tmp_path):
    # The WCS as its header holds it (14 digits), for the forms made of one.
    wcs_out = WCS(header_out())
    ref, _ = reproject_interp((IMG, WCS_IN), wcs_out, shape_out=SHAPE_OUT)
    a, _ = reproject_interp((IMG, WCS_IN), header_out())
    same(a, ref)
    w = wcs_out.deepcopy()
    w.array_shape = SHAPE_OUT
    a, _ = reproject_interp((IMG, WCS_IN), w)
    same(a, ref)
    t = tmp_path / 'target.fits'
    fits.PrimaryHDU(np.zeros(SHAPE_OUT), wcs_out.to_header()).writeto(t)
    a, _ = reproject_interp((IMG, WCS_IN), str(t))
    same(a, ref)
    # NAXISn of a header win over shape_out (reproject's rule).
    a, _ = reproject_interp((IMG, WCS_IN), header_out(), shape_out=(3, 3))
    same(a, ref)
    with pytest.raises(ValueError, match='Need to specify shape since output header'):
        reproject_interp((IMG, WCS_IN), WCS_OUT.to_header())
    with pytest.raises(ValueError, match='Need to specify shape_out when specifying'):
        reproject_interp((IMG, WCS_IN), WCS_OUT)
    with pytest.raises(TypeError, match='output_projection should either be'):
        reproject_interp((IMG, WCS_IN), 42, shape_out=SHAPE_OUT)
    with pytest.raises(ValueError, match='should not be an empty tuple'):
        reproject_interp((IMG, WCS_IN), WCS_OUT, shape_out=())


# ---------------------------------------------------------------------------
# Outputs, blocks, parallelism, return types

@pytest.mark.parametrize('fn', [reproject_interp, reproject_adaptive, reproject_exact])
def test_output_arrays_are_written_in_place(tmp_path, fn):
    ref_a, ref_f = fn((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT)
    out = np.memmap(tmp_path / 'out.dat', dtype=np.float64, mode='w+', shape=SHAPE_OUT)
    fp = np.full(SHAPE_OUT, 7.0)
    a, f = fn((IMG, WCS_IN), WCS_OUT, output_array=out, output_footprint=fp)
    assert a is out and f is fp
    same(np.asarray(out), ref_a)
    same(fp, ref_f)
    a = fn((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, return_footprint=False)
    assert isinstance(a, np.ndarray)
    same(a, ref_a)
    # A float32 output array gets float32 results; a transposed one is filled too.
    out32 = np.empty(SHAPE_OUT, dtype=np.float32)
    fn((IMG, WCS_IN), WCS_OUT, output_array=out32, return_footprint=False)
    np.testing.assert_allclose(out32, ref_a, rtol=1e-6, equal_nan=True)
    outT = np.empty(SHAPE_OUT[::-1]).T
    fn((IMG, WCS_IN), WCS_OUT, output_array=outT, return_footprint=False)
    same(np.ascontiguousarray(outT), ref_a)
    with pytest.raises(ValueError, match="Array sizes don't match"):
        fn((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, output_footprint=np.empty((3, 3)))
    with pytest.raises(ValueError, match='shape_out does not match shape of output_array'):
        fn((IMG, WCS_IN), WCS_OUT, shape_out=(3, 3), output_array=np.empty(SHAPE_OUT))
    with pytest.raises(ValueError, match='expected a floating-point array'):
        fn((IMG, WCS_IN), WCS_OUT, output_array=np.empty(SHAPE_OUT, dtype=np.int32))


@pytest.mark.parametrize('fn', [reproject_interp, reproject_adaptive, reproject_exact])
def test_blocks_and_parallel_give_the_same_bits(fn):
    ref_a, ref_f = fn((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT)
    for kw in [{'block_size': (16, 16)}, {'block_size': (-1, 8)}, {'block_size': 'auto'},
               {'parallel': True}, {'parallel': 2, 'block_size': (7, 9)}]:
        a, f = fn((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, **kw)
        same(a, ref_a)
        same(f, ref_f)
    with pytest.raises(ValueError, match='The number of processors to use must be strictly'):
        fn((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, parallel=-1)
    with pytest.raises(ValueError, match='block_size'):
        fn((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, block_size=(1, 2, 3, 4))


def test_parallel_type_is_checked_by_exact():
    with pytest.raises(TypeError, match="The 'parallel' flag must be a boolean or integral"):
        reproject_exact((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, parallel=1.5)


@pytest.mark.parametrize('fn', [reproject_interp, reproject_adaptive, reproject_exact])
def test_return_types(fn):
    import dask.array as da
    ref_a, ref_f = fn((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT)
    a, f = fn((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, block_size=(16, 20),
              return_type='dask')
    assert isinstance(a, da.Array) and isinstance(f, da.Array)
    assert a.chunksize == (16, 20) and a.npartitions == 3 * 3
    same(a.compute(), ref_a)
    same(f.compute(), ref_f)
    same(a[10:30, 5:25].compute(), ref_a[10:30, 5:25])
    a = fn((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, return_type='dask',
           return_footprint=False)
    same(a.compute(), ref_a)
    a, f = fn((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, return_type='tessera')
    assert isinstance(a, tessera.Array) and isinstance(f, tessera.Array)
    same(np.asarray(a), ref_a)
    same(np.asarray(f), ref_f)
    with pytest.raises(ValueError, match="return_type should be set to 'numpy', 'dask' or"):
        fn((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, return_type='zarr')
    with pytest.raises(ValueError, match="are for return_type='numpy'"):
        fn((IMG, WCS_IN), WCS_OUT, output_array=np.empty(SHAPE_OUT), return_type='dask')
    with pytest.raises(ValueError, match="dask_method should be set to 'memmap' or 'none'"):
        fn((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, dask_method='zarr')
    for method in ('memmap', 'none'):
        a, _ = fn((da.from_array(IMG, chunks=(10, 10)), WCS_IN), WCS_OUT, shape_out=SHAPE_OUT,
                  dask_method=method)
        same(a, ref_a)


def test_calls_from_several_threads_at_once():
    ref, _ = reproject_interp((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, order='bicubic')
    results = [None] * 6

    def work(i):
        results[i] = reproject_interp((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT,
                                      order='bicubic', block_size=(8, 8))[0]
    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        same(r, ref)


# ---------------------------------------------------------------------------
# Parameters and errors of each method

def test_order_names_and_numbers():
    for name, number in [('nearest-neighbor', 0), ('bilinear', 1), ('biquadratic', 2),
                         ('bicubic', 3)]:
        a, _ = reproject_interp((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, order=name)
        b, _ = reproject_interp((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, order=number)
        same(a, b)
    with pytest.raises(ValueError, match="order='cubic'"):
        reproject_interp((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, order='cubic')
    from astropy.utils.exceptions import AstropyDeprecationWarning
    with pytest.warns(AstropyDeprecationWarning, match='independent_celestial_slices'):
        reproject_interp((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT,
                         independent_celestial_slices=True)


def test_roundtrip_coords_masks_what_does_not_map_back():
    # An all-sky CAR target: points behind the TAN input's plane do not map
    # back; with roundtrip_coords they are NaN, as in reproject.
    car = sky_wcs((90, 180), crval=(0, 0), cdelt=2.0, ctype=('RA---CAR', 'DEC--CAR'))
    wide = sky_wcs((64, 64), crval=(10, 40), cdelt=1.0)
    img = sky_image((64, 64))
    for rt in (True, False):
        a, _ = reproject_interp((img, wide), car, shape_out=(90, 180), roundtrip_coords=rt)
        b, _ = reproject.reproject_interp((img, wide), car, shape_out=(90, 180),
                                          roundtrip_coords=rt)
        close_to_reproject(a, b, 1e-9)


def test_adaptive_options_match_reproject_and_are_checked():
    img = IMG.copy()
    img[20:23, 30:33] = np.nan
    for kw in [{'bad_value_mode': 'ignore'}, {'bad_value_mode': 'constant', 'bad_fill_value': 5},
               {'x_cyclic': True, 'boundary_mode': 'ignore'},
               {'boundary_mode': 'ignore_threshold', 'boundary_ignore_threshold': 0.2},
               {'despike_jacobian': True}]:
        a, fa = reproject_adaptive((img, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, **kw)
        assert np.isfinite(a).sum() > 500, kw
        same(fa, (~np.isnan(a)).astype(float))
    # bad_value_mode (reproject >= 0.11): ignoring NaN samples leaves no NaN
    # where strict mode has one next to the hole.
    s, _ = reproject_adaptive((img, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT)
    i, _ = reproject_adaptive((img, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT,
                              bad_value_mode='ignore')
    assert np.isnan(s).sum() > np.isnan(i).sum()
    with pytest.raises(ValueError, match='kernel'):
        reproject_adaptive((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, kernel='boxcar')
    with pytest.raises(ValueError, match='boundary_mode'):
        reproject_adaptive((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT, boundary_mode='wrap')
    with pytest.raises(ValueError, match='Output WCS has celestial components but input'):
        reproject_adaptive((IMG, WCS(naxis=2)), WCS_OUT, shape_out=SHAPE_OUT)


def test_exact_refuses_what_it_cannot_do():
    with pytest.raises(NotImplementedError, match='only data with a 2-d celestial WCS'):
        reproject_exact((IMG, WCS(naxis=2)), WCS(naxis=2), shape_out=SHAPE_OUT)
    cube_wcs = WCS(naxis=3)
    cube_wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN', 'VELO-LSR']
    with pytest.raises(NotImplementedError, match='only data with a 2-d celestial WCS'):
        reproject_exact((np.ones((2, 3, 4)), cube_wcs), cube_wcs, shape_out=(2, 3, 4))


def test_linear_wcs_maps_like_reproject():
    w_in = WCS(naxis=2)
    w_in.wcs.crpix = 30.5, 25.5
    w_in.wcs.cdelt = 1, 1
    w_out = WCS(naxis=2)
    w_out.wcs.crpix = 20.3, 24.1
    w_out.wcs.cdelt = 1.5, 0.75
    w_out.wcs.pc = [[0.8, 0.2], [-0.2, 0.8]]
    for fn in (reproject_interp, reproject_adaptive):
        a, _ = fn((IMG, w_in), w_out, shape_out=SHAPE_OUT)
        b, _ = getattr(reproject, fn.__name__)((IMG, w_in), w_out, shape_out=SHAPE_OUT)
        close_to_reproject(a, b, 1e-10)
    with pytest.raises(ValueError, match='Input WCS has celestial components but output'):
        reproject_interp((IMG, WCS_IN), w_out, shape_out=SHAPE_OUT)


# ---------------------------------------------------------------------------
# Cubes

def cube_wcs(shape, spec_crpix, crval=(10.68, 41.27), ctype=('RA---TAN', 'DEC--TAN'), rot=0):
    w = WCS(naxis=3)
    w.wcs.ctype = list(ctype) + ['VOPT']
    w.wcs.cunit = ['deg', 'deg', 'm/s']
    w.wcs.crval = list(crval) + [1000.0]
    w.wcs.cdelt = [-2 / 3600, 2 / 3600, 500.0]
    w.wcs.crpix = [(shape[2] + 1) / 2, (shape[1] + 1) / 2, spec_crpix]
    a = np.radians(rot)
    pc = np.eye(3)
    pc[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    w.wcs.pc = pc
    return w


@pytest.mark.parametrize('order', ['nearest-neighbor', 'bilinear', 'bicubic'])
def test_cube_with_a_shifted_spectral_axis_matches_reproject(order):
    rng = np.random.default_rng(3)
    cube = rng.normal(10, 1, (6, 20, 24))
    w_in = cube_wcs(cube.shape, 2.0)
    w_out = cube_wcs((5, 18, 22), 1.6, ctype=('GLON-TAN', 'GLAT-TAN'),
                     crval=(121.17, -21.57), rot=15)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')   # astropy: no observer for SpectralCoord
        a, fa = reproject_interp((cube, w_in), w_out, shape_out=(5, 18, 22), order=order)
        b, fb = reproject.reproject_interp((cube, w_in), w_out, shape_out=(5, 18, 22),
                                           order=order)
    assert np.isfinite(a).sum() > 200
    close_to_reproject(a, b, 1e-9)
    same(fa, fb)


def test_cube_axes_in_any_order():
    rng = np.random.default_rng(4)
    cube = rng.normal(10, 1, (6, 20, 24))
    w_in = cube_wcs(cube.shape, 2.0)
    w_out = cube_wcs((5, 18, 22), 1.5, rot=10)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        ref, _ = reproject_interp((cube, w_in), w_out, shape_out=(5, 18, 22))
        # Spectral axis first in FITS order (last in numpy order), input and output.
        a, _ = reproject_interp((np.moveaxis(cube, 0, -1), w_in.sub([3, 1, 2])),
                                w_out.sub([3, 1, 2]), shape_out=(18, 22, 5))
    np.testing.assert_allclose(np.moveaxis(a, -1, 0), ref, rtol=1e-12, equal_nan=True)


def test_broadcast_leading_axes_up_to_five():
    stack = np.stack([IMG * k for k in range(1, 7)]).reshape(3, 2, 1, *SHAPE_IN)
    ref, _ = reproject_interp((IMG, WCS_IN), WCS_OUT, shape_out=SHAPE_OUT)
    for shape_out in (SHAPE_OUT, stack.shape[:-2] + SHAPE_OUT):
        a, f = reproject_interp((stack, WCS_IN), WCS_OUT, shape_out=shape_out)
        assert a.shape == stack.shape[:-2] + SHAPE_OUT
        for k in range(6):
            np.testing.assert_allclose(a.reshape(6, *SHAPE_OUT)[k], ref * (k + 1), rtol=1e-12,
                                       equal_nan=True)
    with pytest.raises(ValueError, match='Dimensions to be looped over must match exactly'):
        reproject_interp((stack, WCS_IN), WCS_OUT, shape_out=(3, 3, 1) + SHAPE_OUT)


# ---------------------------------------------------------------------------
# Mosaics

def tiles():
    """Three overlapping cutouts of one image, each with an offset."""
    views = [(0, 30, 0, 35), (15, 50, 20, 60), (5, 40, 10, 45)]
    out = []
    for k, (j0, j1, i0, i1) in enumerate(views):
        w = WCS_IN.deepcopy()
        w.wcs.crpix = w.wcs.crpix[0] - i0, w.wcs.crpix[1] - j0
        out.append((IMG[j0:j1, i0:i1] + k, w))
    return out


def per_tile(fn=reproject_interp):
    return [fn(t, WCS_IN, shape_out=SHAPE_IN) for t in tiles()]


@pytest.mark.parametrize('combine', ['mean', 'sum', 'first', 'last', 'min', 'max', 'median'])
def test_coadd_combines_as_documented(combine):
    parts = per_tile()
    a = np.array([np.where(f > 0, np.nan_to_num(x), np.nan) for x, f in parts])
    fp = np.array([f for _, f in parts])
    cover = fp.sum(0) > 0
    with np.errstate(invalid='ignore', all='ignore'), warnings.catch_warnings():
        warnings.simplefilter('ignore')
        want = {'mean': np.nansum(a * fp, 0) / fp.sum(0), 'sum': np.nansum(a * fp, 0),
                'min': np.nanmin(a, 0), 'max': np.nanmax(a, 0), 'median': np.nanmedian(a, 0),
                'first': next_valid(a), 'last': next_valid(a[::-1])}[combine]
    want = np.where(cover, want, -1.0)
    array, footprint = reproject_and_coadd(tiles(), WCS_IN, shape_out=SHAPE_IN,
                                           reproject_function=reproject_interp,
                                           combine_function=combine, blank_pixel_value=-1)
    np.testing.assert_allclose(array, want, rtol=1e-12)
    assert (footprint[cover] > 0).all() and (footprint[~cover] == 0).all()


def next_valid(a):
    out = np.full(a.shape[1:], np.nan)
    for layer in a[::-1]:
        out = np.where(np.isnan(layer), out, layer)
    return out


def test_coadd_with_reproject_functions_weights_background_and_outputs():
    ref, ref_fp = reproject_and_coadd(tiles(), WCS_IN, shape_out=SHAPE_IN,
                                      reproject_function=reproject_exact)
    # reproject's own function object is mapped onto tessera's.
    a, f = reproject_and_coadd(tiles(), WCS_IN, shape_out=SHAPE_IN,
                               reproject_function=reproject.reproject_exact)
    same(a, ref)
    same(f, ref_fp)
    # Uniform weights change nothing; a zero weight drops a tile.
    w = [np.full(t[0].shape, 2.0) for t in tiles()]
    a, _ = reproject_and_coadd(tiles(), WCS_IN, shape_out=SHAPE_IN, input_weights=w,
                               reproject_function=reproject_exact)
    np.testing.assert_allclose(a, ref, rtol=1e-12)
    w[1][:] = 0
    a, _ = reproject_and_coadd(tiles(), WCS_IN, shape_out=SHAPE_IN, input_weights=w,
                               reproject_function=reproject_exact, blank_pixel_value=np.nan)
    b, _ = reproject_and_coadd([tiles()[0], tiles()[2]], WCS_IN, shape_out=SHAPE_IN,
                               reproject_function=reproject_exact, blank_pixel_value=np.nan)
    np.testing.assert_allclose(a, b, rtol=1e-12, equal_nan=True)
    # Background matching takes the offsets (0, 1, 2) out, relative to tile 0.
    a, _ = reproject_and_coadd(tiles(), WCS_IN, shape_out=SHAPE_IN,
                               reproject_function=reproject_interp, match_background=True,
                               background_reference=0)
    b, fb = reproject_interp((IMG, WCS_IN), WCS_IN, shape_out=SHAPE_IN)
    cover = ref_fp > 0
    np.testing.assert_allclose(a[cover], b[cover], atol=1e-9)
    # Output arrays, block sizes per input, a progress bar.
    seen = []

    def bar(it):
        seen.append(True)
        return it
    out, fp = np.empty(SHAPE_IN), np.empty(SHAPE_IN)
    r = reproject_and_coadd(tiles(), WCS_IN, reproject_function=reproject_exact,
                            output_array=out, output_footprint=fp,
                            block_sizes=[(8, 8), (16, 16), (50, 60)], progress_bar=bar)
    assert r[0] is out and r[1] is fp and seen
    same(out, ref)
    d, _ = reproject_and_coadd(tiles(), WCS_IN, shape_out=SHAPE_IN, return_type='dask',
                               reproject_function=reproject_exact, block_size=(16, 16))
    same(d.compute(), ref)
    with pytest.raises(ValueError, match='combine_function should be one of'):
        reproject_and_coadd(tiles(), WCS_IN, shape_out=SHAPE_IN,
                            reproject_function=reproject_exact, combine_function='mode')
    with pytest.raises(ValueError, match='reprojection function should be specified'):
        reproject_and_coadd(tiles(), WCS_IN, shape_out=SHAPE_IN)
    with pytest.raises(TypeError, match='reproject_function should be'):
        reproject_and_coadd(tiles(), WCS_IN, shape_out=SHAPE_IN, reproject_function=print)


def test_coadd_agrees_with_reproject_where_both_cover():
    a, fa = reproject_and_coadd(tiles(), WCS_OUT, shape_out=SHAPE_OUT,
                                reproject_function=reproject_interp)
    b, fb = reproject.mosaicking.reproject_and_coadd(tiles(), WCS_OUT, shape_out=SHAPE_OUT,
                                          reproject_function=reproject.reproject_interp)
    cover = fb > 0
    np.testing.assert_allclose(a[cover], b[cover], rtol=1e-10)
    np.testing.assert_allclose(fa, fb, rtol=1e-12)
    assert (a[~cover] == 0).all()    # blank_pixel_value=0 (0.10 left NaN)


# ---------------------------------------------------------------------------
# Optimal WCS

@pytest.mark.parametrize('kwargs', [{}, {'frame': FK5()}, {'frame': 'galactic'},
                                    {'frame': Galactic(), 'projection': 'CAR'},
                                    {'resolution': 3 * u.arcsec},
                                    {'reference': SkyCoord(10.7, 41.3, unit='deg')},
                                    {'auto_rotate': True}])
def test_optimal_wcs_agrees_with_reproject(kwargs):
    inputs = [(IMG, WCS_IN), (IMG[:30, :40], sky_wcs((30, 40), crval=(10.70, 41.28), rot=25))]
    w, shape = find_optimal_celestial_wcs(inputs, **kwargs)
    v, ref_shape = reproject.mosaicking.find_optimal_celestial_wcs(inputs, **kwargs)
    assert tuple(w.wcs.ctype) == tuple(v.wcs.ctype)
    assert shape == ref_shape
    np.testing.assert_allclose(w.wcs.crval, v.wcs.crval, atol=1e-9)
    np.testing.assert_allclose(w.wcs.cdelt, v.wcs.cdelt, rtol=1e-9)
    np.testing.assert_allclose(w.wcs.crpix, v.wcs.crpix, atol=1e-6)
    np.testing.assert_allclose(w.wcs.get_pc(), v.wcs.get_pc(), atol=1e-9)
    assert w.wcs.radesys == v.wcs.radesys


def test_optimal_wcs_input_forms_and_errors(tmp_path):
    path = tmp_path / 'in.fits'
    fits.PrimaryHDU(IMG, WCS_IN.to_header()).writeto(path)
    ref = find_optimal_celestial_wcs([(IMG, WCS_IN)])
    for single in [str(path), fits.open(path), fits.open(path)[0], (IMG.shape, WCS_IN),
                   (IMG, WCS_IN.to_header()), NDData(IMG, wcs=WCS_IN)]:
        w, shape = find_optimal_celestial_wcs(single, hdu_in=0 if isinstance(single, str)
                                              else None)
        assert shape == ref[1]
        np.testing.assert_allclose(w.wcs.crpix, ref[0].wcs.crpix)
    with pytest.raises(ValueError, match=r'Input data is not 2-dimensional \(got shape'):
        find_optimal_celestial_wcs([(np.ones((2, 3, 4)), WCS_IN)])
    with pytest.raises(TypeError, match='WCS does not have celestial components'):
        find_optimal_celestial_wcs([(IMG, WCS(naxis=2))])
    from astropy.coordinates import FK4
    with pytest.raises(NotImplementedError, match='frame FK4 is not supported'):
        find_optimal_celestial_wcs([(IMG, WCS_IN)], frame=FK4())
