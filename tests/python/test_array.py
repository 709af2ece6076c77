"""tessera.Array: constructors, operators and ufuncs against numpy,
reductions, slicing with the WCS kept, pickling, to_fits, coadd."""
import pickle

import numpy as np
import pytest
from astropy.io import fits

import tessera
from tessera import _core

from conftest import header_of, tan_wcs, write_fits


@pytest.fixture
def pair():
    rng = np.random.default_rng(7)
    a = rng.normal(0, 2, (30, 40))
    b = rng.normal(1, 1, (30, 40)).astype(np.float32)
    a[3, 4] = np.nan
    b[5, 6] = np.nan
    return a, b


def test_operators_and_comparisons_match_numpy(pair):
    a, b = pair
    A, B = tessera.from_array(a), tessera.from_array(b)
    cases = [
        (A + B, a + b), (A - B, a - b), (A * B, a * b), (A / B, a / b),
        (A + 2, a + 2), (2 - A, 2 - a), (3 * B, 3 * b), (1 / B, 1 / b), (B ** 2, b ** 2),
        (-A, -a), (+B, b), (abs(B), abs(b)),
        (A + b[0], a + b[0]), (A[:, :1] * B, a[:, :1] * b),
    ]
    for lazy, ref in cases:
        got = lazy.compute()
        assert got.shape == ref.shape
        np.testing.assert_array_equal(got, ref.astype(got.dtype))
    # pow goes through libm's pow in double: within an ulp of numpy's.
    for lazy, ref in [(abs(A) ** B, abs(a) ** b), (2.0 ** B, 2.0 ** b)]:
        np.testing.assert_allclose(lazy.compute(), ref, rtol=4e-16 if ref.dtype == np.float64 else 1.2e-7)
    assert (A + B).dtype == np.float64 and (B * 2).dtype == np.float32
    for lazy, ref in [(A < B, a < b), (A <= 0, a <= 0), (A > B, a > b), (B >= 1, b >= 1),
                      (A == A, a == a), (A != A, a != a), (0.5 < B, 0.5 < b)]:
        got = lazy.compute()
        assert got.dtype == np.bool_ and lazy.dtype == np.bool_
        np.testing.assert_array_equal(got, ref)


def test_ufuncs_lazy_where_the_engine_has_them(pair):
    a, b = pair
    A, B = tessera.from_array(a), tessera.from_array(b)
    pos = abs(B) + 0.5
    for f in (np.sqrt, np.exp, np.log, np.log10, np.absolute, np.negative):
        r = f(pos)
        assert isinstance(r, tessera.Array)
        # float32 values are computed in double and rounded: within an ulp
        # of numpy's float32 functions.
        np.testing.assert_allclose(r.compute(), f(abs(b) + 0.5), rtol=1.2e-7 * 2)
    r = np.isnan(A)
    assert isinstance(r, tessera.Array) and r.dtype == np.bool_
    np.testing.assert_array_equal(r.compute(), np.isnan(a))
    np.testing.assert_allclose(np.power(abs(A), B).compute(), abs(a) ** b, rtol=4e-16)
    for f in (np.minimum, np.maximum, np.add, np.greater):
        r = f(A, B)
        assert isinstance(r, tessera.Array)
        np.testing.assert_array_equal(r.compute(), f(a, b).astype(r.compute().dtype))
    # ndarray on the left: through __array_ufunc__ too.
    r = b + A
    assert isinstance(r, tessera.Array)
    np.testing.assert_array_equal(r.compute(), b + a)
    # Not in the engine: numpy on the computed values.
    np.testing.assert_allclose(np.sin(A), np.sin(a))
    np.testing.assert_array_equal(np.asarray(A), a)
    assert np.asarray(B, dtype=np.float64).dtype == np.float64


@pytest.mark.parametrize('axis', [None, 0, 1, -1])
def test_reductions_match_numpy(pair, axis):
    a, _ = pair
    A = tessera.from_array(a)
    clean = np.where(np.isnan(a), 1.5, a)
    C = tessera.from_array(clean)
    for name, ref in [('sum', np.sum), ('mean', np.mean), ('min', np.min), ('max', np.max),
                      ('std', np.std)]:
        np.testing.assert_allclose(getattr(C, name)(axis=axis).compute(), ref(clean, axis=axis),
                                   rtol=1e-12)
        got = getattr(A, name)(axis=axis).compute()
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref(a, axis=axis)))
    for name, ref in [('nansum', np.nansum), ('nanmean', np.nanmean), ('nanmin', np.nanmin),
                      ('nanmax', np.nanmax), ('nanstd', np.nanstd)]:
        np.testing.assert_allclose(getattr(A, name)(axis=axis).compute(), ref(a, axis=axis),
                                   rtol=1e-12)
        # numpy's functions stay lazy through __array_function__.
        lazy = ref(A, axis=axis)
        assert isinstance(lazy, tessera.Array)
        np.testing.assert_allclose(lazy.compute(), ref(a, axis=axis), rtol=1e-12)
    np.testing.assert_array_equal(A.count(axis=axis).compute(),
                                  np.sum(~np.isnan(a), axis=axis))
    r = A.nanmean(axis=axis)
    assert r.shape == np.nanmean(a, axis=axis).shape
    if axis is None:
        assert np.isscalar(r.compute()) and float(r.compute()) == pytest.approx(np.nanmean(a))


def test_slicing_with_steps_keeps_the_wcs(pair):
    a, _ = pair
    w = tan_wcs(shape=a.shape, rot=30)
    A = tessera.from_array(a, w)
    for key in [(slice(2, 27, 3), slice(None, None, 2)), (slice(5, None), slice(1, 39, 4)),
                (Ellipsis, slice(3, 9)), 4, (-1, slice(None, None, 5))]:
        S = A[key]
        ref = a[key]
        assert S.shape == ref.shape
        np.testing.assert_array_equal(S.compute(), ref)
    S = A[2:27:3, ::2]
    ws = S.wcs
    y, x = np.mgrid[0:S.shape[0], 0:S.shape[1]]
    lon, lat = ws.wcs_pix2world(x.ravel(), y.ravel(), 0)
    lon0, lat0 = w.wcs_pix2world(2 * x.ravel(), 2 + 3 * y.ravel(), 0)
    np.testing.assert_allclose(lon, lon0, atol=1e-10)
    np.testing.assert_allclose(lat, lat0, atol=1e-10)
    # A sliced Array reprojects where its pixels are on the sky.
    target = tan_wcs(shape=(20, 20), scale=2e-3)
    R1 = tessera.reproject(S, target, shape_out=(20, 20), order='nearest-neighbor')
    assert R1.shape == (20, 20)
    for bad in [(slice(None, None, -1),), (slice(3, 3),), (slice(None), 2), (None,), ([1, 2],)]:
        with pytest.raises(IndexError):
            A[bad]


def test_planes_of_a_cube_drop_their_axis():
    rng = np.random.default_rng(3)
    cube = rng.random((4, 20, 30))
    C = tessera.from_array(cube)
    P = C[2]
    assert P.shape == (20, 30) and P.ndim == 2
    np.testing.assert_array_equal(P.compute(), cube[2])
    np.testing.assert_array_equal((P + C[1]).compute(), cube[2] + cube[1])
    np.testing.assert_allclose(P.sum(axis=0).compute(), cube[2].sum(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(C[1:3, ::2].compute(), cube[1:3, ::2])
    np.testing.assert_array_equal(P.compute(region=(slice(3, 9), (4, 10))), cube[2, 3:9, 4:10])
    np.testing.assert_array_equal(np.stack([P, C[0]]).compute(), np.stack([cube[2], cube[0]]))


def test_regions_out_arrays_and_fits(tmp_path, sky):
    data, w, target = sky
    path = write_fits(tmp_path / 'in.fits', data.astype('>f4'), w)
    A = tessera.open(path)
    assert A.shape == data.shape and A.dtype == np.float32
    assert A.wcs.wcs.compare(w.wcs, tolerance=1e-12)
    R = tessera.reproject(A, target, method='adaptive')
    full, fp = R.compute(footprint=True)
    np.testing.assert_array_equal(R.footprint.compute(), fp)
    part = R.compute(region=(slice(10, 30), slice(5, 25)))
    np.testing.assert_array_equal(part, full[10:30, 5:25])
    mm = np.memmap(tmp_path / 'o.dat', dtype=np.float32, mode='w+', shape=(20, 20))
    assert R.compute(region=(slice(10, 30), slice(5, 25)), out=mm) is mm
    np.testing.assert_array_equal(np.asarray(mm), part)
    strided = np.zeros((20, 40), np.float64)[:, ::2]
    R.compute(region=(slice(10, 30), slice(5, 25)), out=strided)
    np.testing.assert_array_equal(strided, part)
    R.to_fits(tmp_path / 'r.fits', region=(slice(10, 30), slice(5, 25)),
              footprint_path=tmp_path / 'f.fits')
    np.testing.assert_array_equal(fits.getdata(tmp_path / 'r.fits'), part)
    np.testing.assert_array_equal(fits.getdata(tmp_path / 'f.fits'), fp[10:30, 5:25])
    with pytest.raises(FileNotFoundError):
        tessera.open(tmp_path / 'missing.fits')
    with pytest.raises(ValueError, match='out must be a numpy array'):
        R.compute(out=np.zeros((3, 3)))


def test_pickles_as_its_recipe(tmp_path, sky):
    data, w, target = sky
    path = tmp_path / 'big.dat'
    mm = np.memmap(path, dtype='<f4', mode='w+', shape=(512, 512))
    mm[:] = np.random.default_rng(5).random((512, 512))
    mm.flush()
    ro = np.memmap(path, dtype='<f4', mode='r', shape=(512, 512))
    M = tessera.from_array(ro[100:400:3, 50:], header_of(tan_wcs(shape=(100, 462)), (100, 462)))
    blob = pickle.dumps(M * 2)
    assert len(blob) < 20000    # the file's name, not its 1 MiB
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back.compute(), ro[100:400:3, 50:] * 2)
    assert back.node.key == (M * 2).node.key
    F = tessera.open(write_fits(tmp_path / 'in.fits', data, w))
    for lazy in (tessera.from_array(data, w) + F, tessera.reproject(F, target).footprint,
                 F[::2, 3:].nanmean(axis=0)):
        again = pickle.loads(pickle.dumps(lazy))
        assert again.shape == lazy.shape and again.dtype == lazy.dtype
        np.testing.assert_array_equal(again.compute(), lazy.compute())


def test_coadd_and_background_matching(sky):
    data, w, target = sky
    big = tan_wcs(crval=(150.002, 2.001), shape=(90, 110), scale=1e-3)
    parts = [tessera.from_array(data + k, tan_wcs(crval=(150 + 0.01 * k, 2.0))) for k in range(3)]
    R = [tessera.reproject(p, big, shape_out=(90, 110)) for p in parts]
    M = tessera.coadd(R)
    g = _core.Graph()
    ns = [g.reproject_interp(g.source_array(data + k, header_of(tan_wcs(crval=(150 + 0.01 * k, 2.0)), data.shape).tostring()),
                             header_of(big, (90, 110)).tostring()) for k in range(3)]
    ref = g.compute(g.coadd(ns))
    np.testing.assert_array_equal(M.compute(), ref)
    np.testing.assert_array_equal(M.footprint.compute(), g.compute(g.footprint(g.coadd(ns))))
    S = tessera.coadd(R, combine='sum', blank=0.0)
    assert np.all(np.isfinite(S.compute()))
    B = tessera.coadd(R, match_background=True, background_reference=0)
    offsets = dict(B._args[2])['offsets']
    np.testing.assert_allclose(offsets, [0, 1, 2], atol=0.05)
    with pytest.raises(TypeError):
        tessera.coadd([data])
