"""tessera.reproject_from_healpix: reproject 0.10's signature, input forms and
results, on the engine.

Compared with Debian's python3-reproject 0.10 (bilinear: within 1e-6 of the
range, identical NaN masks; nearest: the same pixel wherever the output
pixel centre is not within rounding of a HEALPix pixel edge), with the CLI
(`tessera reproject MAP.fits`: the same bits), and between the input forms
(file, HDU, (array, frame), gzip file, partial-sky tables).
"""
import gzip
import os
import shutil
import subprocess

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from conftest import header_of, tan_wcs

import tessera

hp = pytest.importorskip('astropy_healpix')
reproject = pytest.importorskip('reproject')

UNSEEN = -1.6375e30


def smooth_map(nside, nested, seed=0):
    """Values smooth on the sky (so bilinear is a real test) plus noise."""
    h = hp.HEALPix(nside=nside, order='nested' if nested else 'ring')
    lon, lat = h.healpix_to_lonlat(np.arange(h.npix))
    rng = np.random.default_rng(seed)
    v = (np.sin(3 * lon.rad) * np.cos(2 * lat.rad) * 10 + 20
         + rng.normal(0, 0.05, h.npix))
    return v


def write_map(path, values, nested, coordsys='G', repeat=1024, fmt='E', extra=None):
    npix = values.size
    repeat = min(repeat, npix)
    rows = npix // repeat
    col = fits.Column(name='SIGNAL', format=f'{repeat}{fmt}',
                      array=values.reshape(rows, repeat))
    t = fits.BinTableHDU.from_columns([col])
    t.header.update(PIXTYPE='HEALPIX', ORDERING='NESTED' if nested else 'RING',
                    NSIDE=int(round((npix / 12) ** 0.5)), COORDSYS=coordsys,
                    INDXSCHM='IMPLICIT', FIRSTPIX=0, LASTPIX=npix - 1)
    if extra:
        t.header.update(extra)
    t.writeto(path, overwrite=True)
    return str(path)


def target(frame='galactic', shape=(60, 70), crval=(40.3, 12.7), scale=0.15, rot=17.0):
    w = tan_wcs(crval=crval, shape=shape, scale=scale, rot=rot)
    if frame == 'galactic':
        w.wcs.ctype = ['GLON-TAN', 'GLAT-TAN']
    return w


def off_edges(w, shape, nside, nested, frame):
    """Output pixels whose centre is not within 1e-9 rad of a HEALPix pixel
    edge: there, two correct implementations may pick either neighbour."""
    from astropy.coordinates import SkyCoord
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx]
    c = w.pixel_to_world(x, y).transform_to(frame)
    h = hp.HEALPix(nside=nside, order='nested' if nested else 'ring', frame=frame)
    ok = np.ones(shape, bool)
    for dlon, dlat in ((1, 0), (-1, 0), (0, 1), (0, -1)):
        eps = 1e-9
        c2 = SkyCoord(c.spherical.lon.rad + dlon * eps, c.spherical.lat.rad + dlat * eps,
                      unit='rad', frame=frame)
        ok &= h.skycoord_to_healpix(c2) == h.skycoord_to_healpix(c)
    return ok


def same(a, b):
    """The same values, NaN where NaN (bit-for-bit for finite float64)."""
    return np.array_equal(a, b, equal_nan=True)


def range_of(a):
    return float(np.nanmax(a) - np.nanmin(a))


@pytest.mark.parametrize('nested', [False, True])
@pytest.mark.parametrize('order', ['bilinear', 'nearest-neighbor'])
def test_file_matches_reproject(tmp_path, nested, order):
    nside = 64
    values = smooth_map(nside, nested).astype(np.float32)
    path = write_map(tmp_path / 'map.fits', values, nested)
    w = target()
    h = header_of(w, (60, 70))
    got, fp = tessera.reproject_from_healpix(path, h, order=order)
    ref, _ = reproject.reproject_from_healpix(path, h, order=order)
    assert got.shape == ref.shape == (60, 70) and got.dtype == np.float64
    assert np.array_equal(np.isnan(got), np.isnan(ref))
    if order == 'bilinear':
        assert np.nanmax(np.abs(got - ref)) <= 1e-6 * range_of(ref)
    else:
        ok = off_edges(w, (60, 70), nside, nested, 'galactic')
        assert ok.mean() > 0.99
        assert same(got[ok], ref[ok])
    assert fp.dtype == np.float64 and (fp == 1).all()


def test_input_forms_agree(tmp_path):
    """File, HDU (also gzip-compressed, read through astropy), (array, frame)
    with the frame as object, class, name or letter: the same bits."""
    from astropy.coordinates import Galactic
    nside = 32
    values = smooth_map(nside, False)
    path = write_map(tmp_path / 'map.fits', values, False, fmt='D')
    with open(path, 'rb') as f, gzip.open(str(tmp_path / 'map.fits.gz'), 'wb') as g:
        shutil.copyfileobj(f, g)
    w = target()
    want, wfp = tessera.reproject_from_healpix(path, w, shape_out=(60, 70))
    assert np.isfinite(want).all()
    with fits.open(path) as hl:
        forms = [hl[1], hl]
        got = [tessera.reproject_from_healpix(hl[1], w, shape_out=(60, 70))[0]]
    got.append(tessera.reproject_from_healpix(str(tmp_path / 'map.fits.gz'), w,
                                              shape_out=(60, 70))[0])
    got.append(tessera.reproject_from_healpix(tmp_path / 'map.fits', w, shape_out=(60, 70))[0])

    for frame in (Galactic(), Galactic, 'galactic', 'g', 'G'):
        got.append(tessera.reproject_from_healpix((values, frame), w, shape_out=(60, 70),
                                                  nested=False)[0])
    del forms
    for i, g in enumerate(got):
        assert same(g, want), f'form {i} differs'


def test_frames_and_ordering_of_arrays():
    """An array in ICRS onto a galactic target equals reproject's; nested
    maps given as arrays need nested=True."""
    nside = 32
    for nested in (False, True):
        values = smooth_map(nside, nested, seed=3)
        w = target()
        got, _ = tessera.reproject_from_healpix((values, 'icrs'), w, shape_out=(60, 70),
                                                nested=nested)
        ref, _ = reproject.reproject_from_healpix((values, 'icrs'), w, shape_out=(60, 70),
                                                  nested=nested)
        assert np.array_equal(np.isnan(got), np.isnan(ref))
        assert np.nanmax(np.abs(got - ref)) <= 1e-6 * range_of(ref)


def test_nan_and_unseen_spoil_their_neighbours(tmp_path):
    """A NaN among the four bilinear neighbours gives NaN, as reproject;
    UNSEEN is NaN too (reproject 0.10 interpolates it as a number)."""
    nside = 16
    values = smooth_map(nside, False)
    w = target(scale=0.4)
    h = hp.HEALPix(nside=nside, order='ring', frame='galactic')
    from astropy.coordinates import SkyCoord
    centre = SkyCoord(40.3, 12.7, unit='deg', frame='galactic')
    p = int(h.skycoord_to_healpix(centre))
    nan_map = values.copy()
    nan_map[p] = np.nan
    unseen_map = values.copy()
    unseen_map[p] = UNSEEN
    got_nan, _ = tessera.reproject_from_healpix((nan_map, 'g'), w, shape_out=(60, 70),
                                                nested=False)
    ref_nan, _ = reproject.reproject_from_healpix((nan_map, 'g'), w, shape_out=(60, 70),
                                                  nested=False)
    assert np.isnan(got_nan).sum() > 0
    assert np.array_equal(np.isnan(got_nan), np.isnan(ref_nan))
    got_unseen, _ = tessera.reproject_from_healpix((unseen_map.astype(np.float32), 'g'), w,
                                                   shape_out=(60, 70), nested=False)
    assert np.array_equal(np.isnan(got_unseen), np.isnan(got_nan))
    path = write_map(tmp_path / 'unseen.fits', unseen_map.astype(np.float32), False)
    got_file, _ = tessera.reproject_from_healpix(path, w, shape_out=(60, 70))
    assert np.array_equal(np.isnan(got_file), np.isnan(got_nan))


def test_partial_sky_tables(tmp_path):
    """Explicit (PIXEL column, field not counting it) and FIRSTPIX/LASTPIX
    tables, from a file and as HDUs, equal the full map with NaN where no
    pixel is held."""
    nside = 32
    npix = 12 * nside * nside
    values = smooth_map(nside, True)
    held = np.arange(2048, 4096)       # base pixels 2 and 3, whole
    full = np.full(npix, np.nan)
    full[held] = values[held]
    w = target(crval=(200.0, 30.0), scale=0.6, frame='icrs')
    want, _ = tessera.reproject_from_healpix((full, 'icrs'), w, shape_out=(60, 70), nested=True)
    assert np.isfinite(want).any() and np.isnan(want).any()

    t = fits.BinTableHDU.from_columns([
        fits.Column(name='PIXEL', format='K', array=held[::-1].copy()),   # any order
        fits.Column(name='OTHER', format='E', array=np.zeros(held.size, np.float32)),
        fits.Column(name='SIGNAL', format='D', array=values[held][::-1].copy())])
    t.header.update(PIXTYPE='HEALPIX', ORDERING='NESTED', NSIDE=nside, COORDSYS='C',
                    INDXSCHM='EXPLICIT')
    path = str(tmp_path / 'explicit.fits')
    t.writeto(path)
    for field in (1, 'SIGNAL', 'signal'):
        assert same(tessera.reproject_from_healpix(path, w, shape_out=(60, 70),
                                                             field=field)[0], want)
        assert same(tessera.reproject_from_healpix(t, w, shape_out=(60, 70),
                                                             field=field)[0], want)

    first, last = 2000, 8999
    part = np.full(npix, np.nan)
    part[first:last + 1] = values[first:last + 1]
    want2, _ = tessera.reproject_from_healpix((part, 'icrs'), w, shape_out=(60, 70), nested=True)
    t = fits.BinTableHDU.from_columns([
        fits.Column(name='SIGNAL', format='D', array=values[first:last + 1])])
    t.header.update(PIXTYPE='HEALPIX', ORDERING='NESTED', NSIDE=nside, COORDSYS='C',
                    INDXSCHM='IMPLICIT', FIRSTPIX=first, LASTPIX=last)
    path = str(tmp_path / 'firstpix.fits')
    t.writeto(path)
    assert same(tessera.reproject_from_healpix(path, w, shape_out=(60, 70))[0], want2)
    assert same(tessera.reproject_from_healpix(t, w, shape_out=(60, 70))[0], want2)

    # A table with fewer values than its NSIDE needs is refused, as the engine
    # refuses such a file (reproject 0.10 would take the values for another nside).
    t = fits.BinTableHDU.from_columns([fits.Column(name='V', format='E',
                                                   array=np.zeros(3072, np.float32))])
    t.header.update(NSIDE=512, COORDSYS='G', ORDERING='RING')
    with pytest.raises(ValueError, match='holds 3072 values; NSIDE 512 with FIRSTPIX 0 and '
                                         'LASTPIX 3145727 needs 3145728'):
        tessera.reproject_from_healpix(t, w, shape_out=(60, 70))


def test_hdu_in_and_ordering_from_the_header(tmp_path):
    """hdu_in counts from 0 (default 1) or names the HDU; the header's
    ORDERING wins over nested= (as in reproject); without ORDERING nested=
    decides, and without either it is reproject's ValueError."""
    nside = 16
    values = smooth_map(nside, True)
    t = fits.BinTableHDU.from_columns([fits.Column(name='V', format='D', array=values)])
    t.header.update(PIXTYPE='HEALPIX', ORDERING='NESTED', NSIDE=nside, COORDSYS='G',
                    EXTNAME='MAP')
    other = fits.ImageHDU(np.zeros((4, 4)), name='JUNK')
    path = str(tmp_path / 'two.fits')
    fits.HDUList([fits.PrimaryHDU(), other, t]).writeto(path)
    w = target(scale=0.5)
    want, _ = tessera.reproject_from_healpix((values, 'g'), w, shape_out=(60, 70), nested=True)
    for kw in ({'hdu_in': 2}, {'hdu_in': 'MAP'}, {'hdu_in': 2, 'nested': False}):
        got, _ = tessera.reproject_from_healpix(path, w, shape_out=(60, 70), **kw)
        assert same(got, want), kw
    with pytest.raises(Exception, match='not a binary table|not a HEALPix'):
        tessera.reproject_from_healpix(path, w, shape_out=(60, 70), hdu_in=1)
    with open(path, 'rb') as f, gzip.open(path + '.gz', 'wb') as gz:
        shutil.copyfileobj(f, gz)
    got, _ = tessera.reproject_from_healpix(path + '.gz', w, shape_out=(60, 70), hdu_in='MAP')
    assert same(got, want)
    with pytest.raises(ValueError, match="HDU 1 .* is a ImageHDU, not a HEALPix table"):
        tessera.reproject_from_healpix(path + '.gz', w, shape_out=(60, 70), hdu_in=1)

    del t.header['ORDERING']
    path = str(tmp_path / 'noorder.fits')
    t.writeto(path)
    got, _ = tessera.reproject_from_healpix(path, w, shape_out=(60, 70), nested=True)
    assert same(got, want)
    with pytest.raises(ValueError, match="Could not determine whether the data follows"):
        tessera.reproject_from_healpix(path, w, shape_out=(60, 70))
    with pytest.raises(ValueError, match="Could not determine whether the data follows"):
        tessera.reproject_from_healpix((values, 'g'), w, shape_out=(60, 70))


def test_errors_as_reproject():
    values = np.zeros(12 * 4 * 4)
    w = target()
    with pytest.raises(ValueError, match='^Only nearest-neighbor and bilinear interpolation are '
                                         'supported$'):
        tessera.reproject_from_healpix((values, 'g'), w, shape_out=(6, 7), order='bicubic',
                                       nested=False)
    with pytest.raises(ValueError, match='Only nearest-neighbor and bilinear'):
        tessera.reproject_from_healpix((values, 'g'), w, shape_out=(6, 7), order=2, nested=False)
    with pytest.raises(TypeError, match=r'input_data should either be an HDU object or a tuple '
                                        r'of \(array, frame\)'):
        tessera.reproject_from_healpix(values, w, shape_out=(6, 7))
    with pytest.raises(ValueError, match='12 \\* nside \\*\\* 2'):
        tessera.reproject_from_healpix((np.zeros(100), 'g'), w, shape_out=(6, 7), nested=False)
    with pytest.raises(ValueError, match='Could not determine frame for system=spam'):
        tessera.reproject_from_healpix((values, 'spam'), w, shape_out=(6, 7), nested=False)
    with pytest.raises(NotImplementedError, match='FK5'):
        tessera.reproject_from_healpix((values, 'fk5'), w, shape_out=(6, 7), nested=False)
    with pytest.raises(ValueError, match='Need to specify shape_out'):
        tessera.reproject_from_healpix((values, 'g'), WCS(naxis=2), nested=False)


def test_ecliptic_maps_are_read():
    """COORDSYS E (barycentric mean ecliptic, J2000), which reproject 0.10
    refuses as 'e', against astropy-healpix's interpolation done by hand."""
    from astropy.coordinates import BarycentricMeanEcliptic
    nside = 32
    values = smooth_map(nside, False, seed=5)
    w = target(frame='icrs', crval=(150.0, 20.0), scale=0.3)
    got, _ = tessera.reproject_from_healpix((values, 'e'), w, shape_out=(60, 70), nested=False)
    y, x = np.mgrid[0:60, 0:70]
    c = w.pixel_to_world(x, y).transform_to(BarycentricMeanEcliptic())
    ref = hp.HEALPix(nside=nside, order='ring').interpolate_bilinear_lonlat(
        c.lon, c.lat, values)
    assert np.nanmax(np.abs(got - ref)) <= 1e-6 * range_of(ref)
    got2, _ = tessera.reproject_from_healpix((values, BarycentricMeanEcliptic()), w,
                                             shape_out=(60, 70), nested=False)
    assert same(got, got2)


def test_footprint_is_zero_off_the_sky():
    """An all-sky AIT target: pixels outside the ellipse are NaN with
    footprint 0, inside they are finite with footprint 1."""
    w = WCS(naxis=2)
    w.wcs.ctype = ['GLON-AIT', 'GLAT-AIT']
    w.wcs.crval = [0, 0]
    w.wcs.crpix = [40.5, 20.5]
    w.wcs.cdelt = [-4.8, 4.8]
    values = smooth_map(8, False)
    data, fp = tessera.reproject_from_healpix((values, 'g'), w, shape_out=(40, 80), nested=False)
    assert set(np.unique(fp)) == {0.0, 1.0}
    assert same(fp == 0, np.isnan(data))
    assert (fp == 0).sum() > 100


def test_parallel_and_blocks_give_the_same_bits(tmp_path):
    values = smooth_map(64, False)
    path = write_map(tmp_path / 'map.fits', values.astype(np.float32), False)
    w = target(shape=(300, 280), scale=0.05)
    want, _ = tessera.reproject_from_healpix(path, w, shape_out=(300, 280))
    for kw in ({'parallel': 2}, {'parallel': True}, {'block_size': (64, 48)},
               {'parallel': 2, 'block_size': (37, 300)}):
        got, _ = tessera.reproject_from_healpix(path, w, shape_out=(300, 280), **kw)
        assert same(got, want), kw


def test_same_bits_as_the_cli(tmp_path):
    exe = os.environ.get('TESSERA_CLI')
    if not exe or not os.path.exists(exe):
        pytest.skip('the tessera CLI is not built (TESSERA_CLI)')
    values = smooth_map(64, True)
    path = write_map(tmp_path / 'map.fits', values.astype(np.float32), True, coordsys='C')
    w = target(frame='icrs', crval=(83.6, 22.0), scale=0.05)
    hdr = str(tmp_path / 't.hdr')
    header_of(w, (60, 70)).totextfile(hdr)
    for order in ('bilinear', 'nearest-neighbor'):
        out = str(tmp_path / f'{order}.fits')
        subprocess.run([exe, 'reproject', path, '--target', hdr, '-o', out, '--order', order,
                        '--dtype', 'float64', '-j', '1', '--quiet'], check=True)
        got, _ = tessera.reproject_from_healpix(path, header_of(w, (60, 70)), order=order)
        assert same(got, fits.getdata(out)), order


def test_exact_order_conserves_flux():
    """order='exact' (tessera): sum(value x pixel solid angle) over the
    image equals sum(v x 4 pi / npix) over the map pixels inside it (the
    map is 0 outside a 2 degree disc the image covers)."""
    from astropy.coordinates import Galactic, SkyCoord
    import astropy.units as u
    from astropy_healpix import HEALPix
    hp = HEALPix(nside=64, order="ring", frame=Galactic())
    lon, lat = hp.healpix_to_lonlat(np.arange(hp.npix))
    v = 2 + np.sin(5 * lon.rad) * np.cos(3 * lat.rad)
    centre = SkyCoord(40.3 * u.deg, 12.7 * u.deg, frame="galactic")
    v[hp.healpix_to_skycoord(np.arange(hp.npix)).separation(centre).deg > 2.0] = 0
    w = WCS(naxis=2)
    w.wcs.ctype = ["GLON-TAN", "GLAT-TAN"]
    w.wcs.crval = [40.3, 12.7]
    w.wcs.crpix = [75.5, 65.5]
    w.wcs.cdelt = [-0.05, 0.05]
    data, fp = tessera.reproject_from_healpix((v, "galactic"), w, shape_out=(130, 150),
                                              order="exact", nested=False)
    from test_to_healpix import pixel_solid_angles
    area = pixel_solid_angles(w.to_header(), (130, 150))
    assert abs(np.sum(data * area) / (np.sum(v) * 4 * np.pi / hp.npix) - 1) < 1e-6
    assert np.abs(fp - 1).max() < 1e-7
    with pytest.raises(ValueError, match="'exact'"):
        tessera.reproject_from_healpix((v, "galactic"), w, shape_out=(130, 150), order="cubic",
                                       nested=False)
