"""tessera.reproject_to_healpix against reproject 0.10's (Debian's), the
lazy tessera.to_healpix, and the errors of each."""
import numpy as np
import pytest
from astropy.coordinates import FK5, Galactic
from astropy.io import fits
from astropy.wcs import WCS

import tessera

reproject = pytest.importorskip("reproject")
pytest.importorskip("astropy_healpix")


def image(shape=(60, 80), crval=(83.6, 22.0), cdelt=0.1, rot=20.0, seed=0, dtype=np.float32):
    w = WCS(naxis=2)
    w.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    w.wcs.crval = crval
    w.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2]
    t = np.radians(rot)
    w.wcs.cd = [[-cdelt * np.cos(t), cdelt * np.sin(t)], [cdelt * np.sin(t), cdelt * np.cos(t)]]
    rng = np.random.default_rng(seed)
    d = rng.standard_normal(shape).astype(dtype)
    d[rng.integers(0, shape[0], 10), rng.integers(0, shape[1], 10)] = np.nan
    return d, w.to_header()


def same(got, ref):
    g, r = got[0], ref[0]
    assert g.shape == r.shape and g.dtype == np.float64
    assert np.array_equal(np.isnan(g), np.isnan(r))
    finite = ~np.isnan(r)
    assert finite.sum() > 50
    assert np.max(np.abs(g[finite] - r[finite])) <= 1e-6 * np.ptp(r[finite])
    assert np.array_equal(got[1], (~np.isnan(g)).astype(float))


@pytest.mark.parametrize("order", ["nearest-neighbor", "bilinear", 0, 1])
@pytest.mark.parametrize("nested", [False, True])
@pytest.mark.parametrize("frame", ["galactic", "c", Galactic(), "icrs"])
def test_matches_reproject(order, nested, frame):
    d, h = image()
    got = tessera.reproject_to_healpix((d, h), frame, order=order, nested=nested, nside=128)
    ref = reproject.reproject_to_healpix((d, h), frame, order=order, nested=nested, nside=128)
    same(got, ref)


def test_input_forms(tmp_path):
    d, h = image(dtype=np.float64)
    path = tmp_path / "img.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(d, h)]).writeto(path)
    ref = reproject.reproject_to_healpix((d, h), "galactic", nside=64)
    same(tessera.reproject_to_healpix(str(path), "galactic", hdu_in=1, nside=64), ref)
    with fits.open(path) as hl:
        same(tessera.reproject_to_healpix(hl, "galactic", hdu_in=1, nside=64), ref)
        same(tessera.reproject_to_healpix(hl[1], "galactic", nside=64), ref)
    same(tessera.reproject_to_healpix((d, WCS(h)), Galactic, nside=64), ref)


def test_parallel_same_bits():
    d, h = image(shape=(200, 200), cdelt=0.05)
    a = tessera.reproject_to_healpix((d, h), "galactic", nside=512)
    b = tessera.reproject_to_healpix((d, h), "galactic", nside=512, parallel=2)
    assert np.array_equal(a[0], b[0], equal_nan=True) and np.array_equal(a[1], b[1])


def test_lazy_region_equals_whole():
    d, h = image()
    m = tessera.to_healpix(tessera.from_array(d, h), 64, coordsys="G", dtype="float64")
    assert m.shape == (12 * 64 * 64,)
    whole = m.compute()
    part = m.compute((slice(20000, 30000),))
    assert np.array_equal(part, whole[20000:30000], equal_nan=True)
    fp = m.footprint.compute()
    assert np.array_equal(fp, (~np.isnan(whole)).astype(fp.dtype))


def test_blank_arrays_are_ordinary_results():
    """The maps come in blank arrays (NaN and 0 that cost only the pages
    written): the same bits as arrays computed into ordinary memory, and
    arrays like any other: writable, independent, picklable, and freed
    with their last view."""
    import gc
    import pickle
    d, h = image(shape=(200, 200), cdelt=0.05)
    data, fp = tessera.reproject_to_healpix((d, h), "galactic", nside=256)
    m = tessera.to_healpix(tessera.from_array(d, h), 256, coordsys="G", dtype="float64")
    ref = (np.empty(m.shape), np.empty(m.shape))
    m.compute(out=ref, footprint=True, jobs=1)
    assert data.tobytes() == ref[0].tobytes() and fp.tobytes() == ref[1].tobytes()
    assert 0 < np.isfinite(data).sum() < data.size // 10
    assert data.flags.writeable and data.flags.c_contiguous and fp.flags.writeable
    again = tessera.reproject_to_healpix((d, h), "galactic", nside=256)
    data[:] = 5.0
    fp[::3] = 2.0
    assert again[0].tobytes() == ref[0].tobytes() and again[1].tobytes() == ref[1].tobytes()
    assert np.array_equal(pickle.loads(pickle.dumps(again[0])), ref[0], equal_nan=True)
    view = again[1][10:20]
    del again
    gc.collect()
    assert np.array_equal(view, ref[1][10:20])
    with pytest.raises(ValueError, match="blank=True"):
        m.compute(blank=True)
    with pytest.raises(ValueError, match="blank=True"):
        m.compute(out=ref, footprint=True, blank=True)


def test_ecliptic_frame():
    d, h = image()
    got = tessera.reproject_to_healpix((d, h), "barycentricmeanecliptic", nside=64)
    ref = reproject.reproject_to_healpix((d, h), "barycentricmeanecliptic", nside=64)
    same(got, ref)
    same(tessera.reproject_to_healpix((d, h), "e", nside=64), ref)


def test_errors():
    d, h = image()
    with pytest.raises(NotImplementedError, match="2-d celestial WCS"):
        w3 = WCS(naxis=3)
        w3.wcs.ctype = ['RA---TAN', 'DEC--TAN', 'FREQ']
        tessera.reproject_to_healpix((np.zeros((2, 3, 4)), w3), "galactic")
    with pytest.raises(ValueError, match="order='cubic'"):
        tessera.reproject_to_healpix((d, h), "galactic", order="cubic")
    with pytest.raises(NotImplementedError, match="COORDSYS"):
        tessera.reproject_to_healpix((d, h), FK5(equinox="J2000"))
    with pytest.raises(ValueError, match="nside 3 out of range"):
        tessera.reproject_to_healpix((d, h), "galactic", nside=3, nested=True)
    with pytest.raises(ValueError, match="nside 0 out of range"):
        tessera.reproject_to_healpix((d, h), "galactic", nside=0)


def pixel_solid_angles(h, shape):
    """Solid angles of the image's pixels (quadrilaterals between corners)."""
    w = WCS(h)
    yy, xx = np.mgrid[0:shape[0] + 1, 0:shape[1] + 1] - 0.5
    c = w.pixel_to_world(xx, yy).spherical
    lon, lat = c.lon.rad, c.lat.rad
    v = np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], -1)

    def tri(a, b, c):
        num = np.einsum("...i,...i", a, np.cross(b, c))
        den = 1 + np.einsum("...i,...i", a, b) + np.einsum("...i,...i", b, c) + \
            np.einsum("...i,...i", c, a)
        return 2 * np.arctan2(num, den)
    p0, p1, p2, p3 = v[:-1, :-1], v[:-1, 1:], v[1:, 1:], v[1:, :-1]
    return np.abs(tri(p0, p1, p2) + tri(p0, p2, p3))


@pytest.mark.parametrize("nested", [False, True])
def test_exact_conserves_flux(nested):
    d, h = image(dtype=np.float64)
    d = np.nan_to_num(d) + 3.0
    data, fp = tessera.reproject_to_healpix((d, h), "galactic", order="exact", nested=nested,
                                            nside=256)
    want = np.sum(d * pixel_solid_angles(h, d.shape))
    got = np.nansum(data * fp) * 4 * np.pi / data.size
    assert abs(got / want - 1) < 1e-6
    assert ((fp > 0) == np.isfinite(data)).all() and fp.max() <= 1
    assert (fp == 1).sum() > 100 and ((fp > 0) & (fp < 1)).sum() > 10


def test_exact_nan_modes_and_lazy_map():
    d, h = image(dtype=np.float64)  # has NaN pixels
    data, fp = tessera.reproject_to_healpix((d, h), "icrs", order="exact", nside=128)
    m = tessera.to_healpix(tessera.from_array(d, h), 128, method="exact", nan_mode="ignore",
                           coordsys="icrs", dtype="float64")
    ign, fpi = m.compute(), m.footprint.compute()
    spoiled = np.isnan(data) & (fp > 0)
    assert spoiled.sum() > 5
    assert np.isfinite(ign[spoiled]).all() and (fpi[spoiled] < fp[spoiled]).all()
    ok = np.isfinite(data)
    assert np.array_equal(ign[ok], data[ok]) and np.array_equal(fpi[ok], fp[ok])
    with pytest.raises(ValueError, match="method"):
        tessera.to_healpix(tessera.from_array(d, h), 128, method="drizzle").compute()
