"""tessera.reproject_to_hips (reproject 0.21's signature): its deepest tiles
against reproject 0.10's reproject_interp onto their own headers, the same
files as `tessera hips`, threads, progress_bar, properties, and reproject's
errors for what it refuses (nothing written then)."""
import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

import tessera
from conftest import tan_wcs

reproject = pytest.importorskip("reproject")
pytest.importorskip("astropy_healpix")

RUN_LINES = (b"creator_did", b"hips_release_date")   # differ from run to run


def image(shape=(60, 80), seed=0):
    """A smooth float32 image with some NaN, 0.01 deg TAN pixels at (83.6, 22)."""
    w = tan_wcs(crval=(83.6, 22.0), shape=shape, scale=0.01, rot=20.0)
    w.pixel_shape = None
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    rng = np.random.default_rng(seed)
    d = (np.sin(x / 6.0) * np.cos(y / 4.0) * 10 + 20 + rng.normal(0, 0.1, shape)).astype(np.float32)
    d[rng.integers(0, shape[0], 10), rng.integers(0, shape[1], 10)] = np.nan
    return d, w.to_header()


def tree(root):
    """{relative path: bytes} under root; properties without its run's lines."""
    out = {}
    for d, _, fs in os.walk(root):
        for f in fs:
            with open(os.path.join(d, f), 'rb') as fh:
                data = fh.read()
            if f == 'properties':
                data = b''.join(line for line in data.splitlines(True)
                                if not line.startswith(RUN_LINES))
            out[os.path.relpath(os.path.join(d, f), root)] = data
    return out


def properties(root):
    with open(os.path.join(root, 'properties')) as f:
        return {k.strip(): v.strip() for k, v in (line.split('=', 1) for line in f if '=' in line)}


def hips(tmp_path, name='h', data=None, **kw):
    d, h = data if data is not None else image()
    out = tmp_path / name
    args = dict(coord_system_out='equatorial', reproject_function=tessera.reproject_interp,
                output_directory=str(out), tile_size=32)
    args.update(kw)
    assert tessera.reproject_to_hips((d, h), **args) is None
    return out


def test_deepest_tiles_are_reproject_interp_onto_their_headers(tmp_path):
    d, h = image()
    out = hips(tmp_path, data=(d, h), coord_system_out='galactic')
    order = int(properties(out)['hips_order'])
    tiles = [os.path.join(dp, f) for dp, _, fs in os.walk(out / f"Norder{order}") for f in fs
             if f.endswith('.fits') and f.startswith('Npix')]
    assert len(tiles) >= 8
    rng = np.nanmax(d) - np.nanmin(d)
    for t in tiles:
        with fits.open(t) as hl:
            got, th = hl[0].data, hl[0].header
        assert th['CTYPE1'] == 'GLON-HPX' and got.shape == (32, 32)
        ref, fp = reproject.reproject_interp((d, h), WCS(th), shape_out=(32, 32), order='bilinear')
        ref[fp == 0] = np.nan
        assert np.array_equal(np.isnan(got), np.isnan(ref)), t
        ok = ~np.isnan(ref)
        assert np.max(np.abs(got[ok] - ref[ok]), initial=0) <= 1e-5 * rng, t


def test_level_none_is_reproject_choice(tmp_path):
    # 0.01 deg pixels, 32-pixel tiles: reproject takes the nside whose pixels
    # are nearest 0.32 deg (astropy-healpix), whatever tessera's CLI would.
    from astropy import units as u
    from astropy_healpix import nside_to_level, pixel_resolution_to_nside
    want = int(nside_to_level(pixel_resolution_to_nside(0.01 * 32 * u.deg)))
    out = hips(tmp_path)
    assert int(properties(out)['hips_order']) == want
    assert os.path.isdir(out / f"Norder{want}")
    assert not os.path.isdir(out / f"Norder{want + 1}")


def test_same_files_as_the_cli(tmp_path, cli):
    d, h = image()
    path = tmp_path / "img.fits"
    fits.PrimaryHDU(d, h).writeto(path)
    a = hips(tmp_path, 'py', level=9, properties={'obs_title': 'same'})
    cli('hips', path, '-o', tmp_path / 'cli', '--tile-width', 32, '--level', 9, '--title', 'same',
        '--quiet')
    got, want = tree(a), tree(tmp_path / 'cli')
    assert len(want) > 20
    assert sorted(got) == sorted(want)
    assert [k for k in want if got[k] != want[k]] == []


def test_threads_same_files(tmp_path):
    a = hips(tmp_path, 'serial', properties={'obs_title': 't'})
    b = hips(tmp_path, 'threads', threads=2, properties={'obs_title': 't'})
    assert tree(a) == tree(b)


def test_progress_bar_wraps_the_tiles(tmp_path):
    seen = []

    def bar(iterable):
        seen.append(len(iterable))
        for x in iterable:
            seen.append(x)
            yield x

    out = hips(tmp_path, progress_bar=bar)
    total = seen[0]
    assert total >= 8 and seen[1:] == list(range(total))
    order = properties(out)['hips_order']
    written = sum(len(fs) for _, _, fs in os.walk(out / f"Norder{order}"))
    assert 0 < written


def test_properties(tmp_path):
    out = hips(tmp_path, properties={'obs_title': 'My survey', 'hips_pixel_cut': '10 30',
                                     'hips_creator': 'someone', 'hips_status': 'private'})
    p = properties(out)
    assert p['obs_title'] == 'My survey' and p['hips_pixel_cut'] == '10 30'
    assert p['hips_creator'] == 'someone' and p['hips_status'] == 'private'
    assert p['hips_frame'] == 'equatorial' and p['hips_tile_width'] == '32'


@pytest.mark.parametrize("kw, exc, msg", [
    (dict(coord_system_out='icrs'), ValueError,
     "coord_system_out should be one of equatorial/galactic/ecliptic"),
    (dict(tile_size=33), ValueError, "tile_size should be even"),
    (dict(tile_size=100), ValueError, "expected a power of two from 8 to 4096"),
    (dict(properties={'hips_order': 3}), ValueError, "Cannot override property hips_order"),
    (dict(properties={'hips_pixel_cut': 'low'}), ValueError, "expected 'low high'"),
    (dict(reproject_function=tessera.reproject_exact), NotImplementedError,
     "reproject_interp only"),
    (dict(reproject_function=len), TypeError, "reproject_function should be"),
    (dict(roundtrip_coords=False), TypeError, "unexpected keyword argument 'roundtrip_coords'"),
    (dict(order='lanczos3'), ValueError, "order='lanczos3'"),
])
def test_refused_arguments_write_nothing(tmp_path, kw, exc, msg):
    with pytest.raises(exc, match=msg):
        hips(tmp_path, **kw)
    assert os.listdir(tmp_path) == []


def test_refused_inputs_write_nothing(tmp_path):
    d, h = image()
    cube = np.zeros((3,) + d.shape, np.float32)
    w3 = WCS(naxis=3)
    w3.wcs.ctype = ['RA---TAN', 'DEC--TAN', 'FREQ']
    with pytest.raises(NotImplementedError, match="HiPS3D"):
        hips(tmp_path, data=(cube, w3.to_header()))
    lin = WCS(naxis=2)
    lin.wcs.ctype = ['X', 'Y']
    with pytest.raises(Exception, match="Only data with a celestial WCS"):
        hips(tmp_path, data=(d, lin.to_header()))
    with pytest.raises(NotImplementedError, match="not PNG or JPEG"):
        tessera.reproject_to_hips(str(tmp_path / 'a.png'), coord_system_out='equatorial',
                                  reproject_function=tessera.reproject_interp,
                                  output_directory=str(tmp_path / 'h'))
    assert os.listdir(tmp_path) == []


def test_existing_directory_is_refused(tmp_path):
    (tmp_path / 'h').mkdir()
    (tmp_path / 'h' / 'keep.txt').write_text('mine')
    with pytest.raises(FileExistsError):
        hips(tmp_path)
    assert os.listdir(tmp_path / 'h') == ['keep.txt']


def test_reproject_s_own_function_and_order(tmp_path):
    # reproject's reproject_interp names the same method; order= is forwarded.
    a = hips(tmp_path, 'ours', order='nearest-neighbor', properties={'obs_title': 't'})
    b = hips(tmp_path, 'theirs', reproject_function=reproject.reproject_interp, order=0,
             properties={'obs_title': 't'})
    c = hips(tmp_path, 'bilinear', properties={'obs_title': 't'})
    assert tree(a) == tree(b) and tree(a) != tree(c)


def test_write_hips_lazy_arrays_report_and_cancel(tmp_path):
    # tessera.write_hips: two lazy Arrays as one mosaic, its report; a
    # cancelled token stops it and leaves nothing.
    d, h = image()
    a = tessera.from_array(d, h)
    b = tessera.from_array(d[:, ::-1].copy(), h)
    rep = tessera.write_hips([a, b], tmp_path / 'm', tile_width=32, level=9, formats='fits',
                             combine='max', jobs=2)
    assert rep['level'] == 9 and rep['tile_width'] == 32
    files = tree(tmp_path / 'm')
    assert not any(k.endswith('.png') for k in files)
    assert rep['tiles_total'] == sum(1 for k in files if os.path.basename(k).startswith('Npix'))
    assert 0 < rep['tiles_deepest'] <= rep['candidates']
    tok = tessera.CancelToken()
    tok.cancel()
    with pytest.raises(tessera.CancelledError):
        tessera.write_hips(a, tmp_path / 'c', tile_width=32, cancel=tok)
    assert not os.path.exists(tmp_path / 'c')
    with pytest.raises(ValueError, match="formats 'png'"):
        tessera.write_hips(a, tmp_path / 'c', formats='png')
    with pytest.raises(ValueError, match="tile width 100"):
        tessera.write_hips(a, tmp_path / 'c', tile_width=100)
    assert not os.path.exists(tmp_path / 'c')
