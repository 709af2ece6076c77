"""tessera._core: sources, reprojections against the C CLI bit for bit,
regions and output arrays, errors, caches, cancellation, executors."""
import os
import pickle
import threading

import numpy as np
import pytest
from astropy.io import fits

import tessera
from tessera import _core

from conftest import header_of, tan_wcs, write_fits


def graph_of(data, w):
    g = _core.Graph()
    return g, g.source_array(data, header_of(w, data.shape).tostring())


# ---------------------------------------------------------------------------
# Sources

@pytest.mark.parametrize('dtype', ['>f8', '<f8', '>f4', '<f4', 'f2', 'i1', '>i2', '<u2', '>i4',
                                   'u4', '>i8', 'u8', 'bool', 'u1'])
def test_source_array_converts_every_dtype_and_byte_order(dtype):
    rng = np.random.default_rng(1)
    ref = rng.integers(0, 100, (30, 41)) if np.dtype(dtype).kind in 'iub' else rng.random((30, 41))
    a = ref.astype(dtype)
    g = _core.Graph()
    n = g.source_array(a)
    dt = np.dtype(dtype)
    wide = dt.itemsize >= 4 and dt.kind in 'iu' or (dt.kind, dt.itemsize) == ('f', 8)
    assert n.dtype == (np.float64 if wide else np.float32)
    out = g.compute(n)
    assert np.array_equal(out, a.astype(n.dtype))
    # A region reads just that window, converted.
    assert np.array_equal(g.compute(n, region=(slice(3, 17), slice(20, 41))),
                          a[3:17, 20:41].astype(n.dtype))


def test_source_array_strided_views_and_4d():
    rng = np.random.default_rng(2)
    base = rng.random((5, 6, 40, 50))
    for view in (base[1], base[:, 2, ::3, 1::2], base.transpose(3, 2, 1, 0)[::2],
                 np.asfortranarray(base[0, 0]), base[..., ::-1][0, 0]):
        g = _core.Graph()
        n = g.source_array(view)
        assert n.shape == view.shape
        assert np.array_equal(g.compute(n), view)


def test_source_array_memmap_read_by_window_with_file_identity_key(tmp_path):
    path = tmp_path / 'big.dat'
    mm = np.memmap(path, dtype='>f4', mode='w+', shape=(300, 200))
    mm[:] = np.arange(300 * 200, dtype=np.float64).reshape(300, 200) % 977
    mm.flush()
    ro = np.memmap(path, dtype='>f4', mode='r', shape=(300, 200))
    g = _core.Graph()
    # The caller's key names the file and where the view starts; _core adds
    # the view's dtype, shape and strides.
    key = b'memmap:' + str(path).encode() + b':40'
    n = g.source_array(ro[10:250:2], key=key)
    n2 = g.source_array(ro[10:250:2], key=key)
    assert n.key == n2.key
    assert g.source_array(ro[10:250:3], key=key).key != n.key
    assert np.array_equal(g.compute(n, region=(slice(5, 9),)), ro[20:28:2].astype(np.float32))


def rss_mb():
    with open('/proc/self/status') as f:
        for ln in f:
            if ln.startswith('VmRSS:'):
                return int(ln.split()[1]) / 1024


def test_a_region_of_a_big_memmap_reads_only_its_windows(tmp_path):
    n = 4096                                    # 128 MiB of big-endian float64
    path = tmp_path / 'big.dat'
    mm = np.memmap(path, dtype='>f8', mode='w+', shape=(n, n))
    for y in range(0, n, 512):
        mm[y:y + 512] = np.arange(y, y + 512)[:, None] + np.arange(n)[None, :] * 1e-3
    mm.flush()
    del mm
    ro = np.memmap(path, dtype='>f8', mode='r', shape=(n, n))
    w = tan_wcs(shape=(n, n), scale=1e-4)
    target = tan_wcs(crval=(150.001, 2.0), shape=(n, n), scale=1e-4, rot=10)
    A = tessera.from_array(ro, w)
    before = rss_mb()
    R = tessera.reproject(A, target, shape_out=(n, n))
    # A small region is a sparse run: its windows are read with pread.
    part = R.compute(region=(slice(2000, 2064), slice(2000, 2064)), jobs=2)
    cut = A[1000:1064, 3000:3064].compute()
    grown = rss_mb() - before
    assert grown < 24, f'RSS grew by {grown:.1f} MB for a 64^2 region of a 128 MiB memmap'
    assert len(pickle.dumps(R)) < 50000   # the memmap travels as its file name
    np.testing.assert_array_equal(cut, ro[1000:1064, 3000:3064])
    # The whole (read through the mapping) has the same bits there.
    np.testing.assert_array_equal(R.compute()[2000:2064, 2000:2064], part)
    # A file truncated under the map is an error, not a SIGBUS.
    short = tessera.from_array(ro, w)
    with open(path, 'r+b') as f:
        f.truncate(n * n * 4)
    with pytest.raises(OSError, match='callback failed'):
        short[3000:3064, 10:20].compute()             # pread past the end
    with pytest.raises(OSError, match='callback failed'):
        short.compute(jobs=1)                         # the mapping, checked first


def test_in_place_and_converted_sources_give_the_same_bits(sky):
    data, w, target = sky
    h = header_of(w, data.shape).tostring()
    g = _core.Graph()
    a = g.source_array(data, h)                       # in place
    b = g.source_array(data.astype('>f8'), h)        # converted window by window
    c = g.source_array(np.asfortranarray(data), h)   # strided
    t = header_of(target, (50, 60)).tostring()
    outs = [g.compute(g.reproject_interp(x, t)) for x in (a, b, c)]
    assert np.array_equal(outs[0], outs[1], equal_nan=True)
    assert np.array_equal(outs[0], outs[2], equal_nan=True)


def logged_source(g, data, w):
    """A callback source over `data` and the list of windows it was asked for."""
    windows = []

    def fn(window):
        windows.append(window)
        return data[window]
    return g.source_callback(fn, data.shape, 'float64', 'sky', b'v1',
                             header=header_of(w, data.shape).tostring()), windows


def test_source_callback_gets_only_the_windows_it_needs(sky):
    data, w, target = sky
    g = _core.Graph()
    n, windows = logged_source(g, data, w)
    assert g.py_callbacks
    part = g.compute(g.binary_scalar('mul', n, 2.0), region=(slice(10, 20), slice(30, 45)))
    assert np.array_equal(part, data[10:20, 30:45] * 2)
    assert windows == [(slice(10, 20), slice(30, 45))]
    ref = g.compute(g.reproject_interp(g.source_array(data, header_of(w, data.shape).tostring()),
                                       header_of(target, (50, 60)).tostring(), block=(16, 16)))
    r = g.reproject_interp(n, header_of(target, (50, 60)).tostring(), block=(16, 16))
    for jobs in (1, 2):
        windows.clear()
        assert np.array_equal(g.compute(r, jobs=jobs, executor='threads'), ref, equal_nan=True)
        # One window per output block that meets the input.
        assert 0 < len(windows) <= 4 * 4
        assert all(s.stop - s.start < 40 for win in windows for s in win)


def test_source_callback_errors_are_raised_with_the_engine_message():
    class Boom(Exception):
        pass

    def fn(window):
        raise Boom('no data here')
    g = _core.Graph()
    n = g.source_callback(fn, (10, 10), 'float32', 'boom', b'')
    with pytest.raises(Boom, match='no data here') as ei:
        g.compute(n)
    assert any('callback failed' in note for note in ei.value.__notes__)
    bad = g.source_callback(lambda win: np.zeros((3, 3)), (10, 10), 'float32', 'bad', b'')
    with pytest.raises(ValueError, match=r'returned shape \(3, 3\) for window'):
        g.compute(bad)
    with pytest.raises(ValueError, match="use 'threads'"):
        g.compute(bad, jobs=2, executor='processes')


def test_fits_source_hdu_counts_from_zero_as_astropy(tmp_path, sky):
    data, w, _ = sky
    path = tmp_path / 'two.fits'
    hl = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data.astype('>f4'), header=w.to_header()),
                       fits.ImageHDU(data[:10] * 2, header=w.to_header())])
    hl.writeto(path)
    g = _core.Graph()
    assert np.array_equal(g.compute(g.source_fits(str(path))), data.astype(np.float32))
    assert np.array_equal(g.compute(g.source_fits(path, hdu=1)), data.astype(np.float32))
    assert np.array_equal(g.compute(g.source_fits(path, hdu=2)), data[:10] * 2)
    with pytest.raises(OSError, match='HDU 1 has no image data'):
        _core.Graph().source_fits(path, hdu=0)


# ---------------------------------------------------------------------------
# Reprojections: the same bits as the CLI

@pytest.mark.parametrize('method,opts,cli_opts', [
    ('interp', {}, []),
    ('interp', {'order': 'bicubic'}, ['--order', 'bicubic']),
    ('interp', {'order': 'nearest-neighbor', 'roundtrip': False}, ['--order', 'nearest-neighbor', '--no-roundtrip']),
    ('interp', {'mapping_tolerance': 0.0, 'dtype': 'float64'}, ['--mapping-tolerance', '0', '--dtype', 'float64']),
    ('adaptive', {}, []),
    ('adaptive', {'kernel': 'hann', 'conserve_flux': True, 'boundary_mode': 'constant',
                  'boundary_fill_value': 3.0, 'center_jacobian': True},
     ['--kernel', 'hann', '--conserve-flux', '--boundary-mode', 'constant',
      '--boundary-fill-value', '3', '--center-jacobian']),
    ('adaptive', {'bad_value_mode': 'ignore', 'kernel_width': 2.0, 'sample_region_width': 5.0},
     ['--bad-value-mode', 'ignore', '--kernel-width', '2', '--sample-region-width', '5']),
    ('exact', {}, []),
    ('exact', {'nan_mode': 'ignore'}, ['--nan-mode', 'ignore']),
])
def test_reprojections_match_the_cli_bit_for_bit(tmp_path, sky, cli, method, opts, cli_opts):
    data, w, target = sky
    data = data.copy()
    data[20:23, 30:33] = np.nan
    src = write_fits(tmp_path / 'in.fits', data.astype(np.float32), w)
    hdr = tmp_path / 't.hdr'
    header_of(target, (50, 60)).totextfile(hdr)
    cli('reproject', src, '--target', hdr, '-o', tmp_path / 'out.fits', '--footprint',
        tmp_path / 'fp.fits', '--method', method, '-j', '1', '--quiet', '--no-cache', *cli_opts)
    g = _core.Graph()
    n = getattr(g, 'reproject_' + method)(g.source_fits(src), _core.Wcs.read_hdr(str(hdr)), **opts)
    d, f = g.compute([n, g.footprint(n)], jobs=2)
    ref = fits.getdata(tmp_path / 'out.fits')
    reff = fits.getdata(tmp_path / 'fp.fits')
    assert d.dtype == ref.dtype.newbyteorder('=')
    assert np.array_equal(d, ref, equal_nan=True)
    assert np.array_equal(f, reff, equal_nan=True)
    # From the array in memory: the same bits again.
    g2 = _core.Graph()
    n2 = getattr(g2, 'reproject_' + method)(
        g2.source_array(data.astype(np.float32), header_of(w, data.shape).tostring()),
        header_of(target, (50, 60)).tostring(), **opts)
    assert np.array_equal(g2.compute(n2), ref, equal_nan=True)


def test_interp_agrees_with_reproject(sky):
    from reproject import reproject_interp, reproject_exact
    data, w, target = sky
    g = _core.Graph()
    s = g.source_array(data, header_of(w, data.shape).tostring())
    t = header_of(target, (50, 60)).tostring()
    for order in ('nearest-neighbor', 'bilinear', 'bicubic'):
        n = g.reproject_interp(s, t, order=order, mapping_tolerance=0.0)
        d, f = g.compute([n, g.footprint(n)])
        ref, reff = reproject_interp((data, w), target, shape_out=(50, 60), order=order)
        assert np.array_equal(np.isnan(d), np.isnan(ref))
        np.testing.assert_allclose(d, ref, rtol=1e-9, atol=1e-9)
        assert np.array_equal(f, reff)
    n = g.reproject_exact(s, t)
    ref, _ = reproject_exact((data, w), target, shape_out=(50, 60))
    # reproject 0.10's exact overlap is off by up to 3e-4 of a pixel's area
    # on small pixels (see ANCHORS.md); ours is the precise planar one.
    np.testing.assert_allclose(g.compute(n), ref, rtol=1e-5, atol=1e-4)


# ---------------------------------------------------------------------------
# compute: regions, output arrays, executors

def test_regions_in_numpy_order_and_output_arrays(tmp_path, sky):
    data, w, target = sky
    g, s = graph_of(data, w)
    n = g.reproject_interp(s, header_of(target, (50, 60)).tostring(), block=(16, 16))
    full = g.compute(n)
    assert full.shape == (50, 60)
    part = g.compute(n, region=(slice(5, 27), slice(-20, None)))
    assert np.array_equal(part, full[5:27, 40:], equal_nan=True)
    assert np.array_equal(g.compute(n, region=((5, 27), (40, 60))), part, equal_nan=True)
    out = np.full((22, 20), -1, np.float64)
    assert g.compute(n, region=(slice(5, 27), slice(40, 60)), out=out) is out
    assert np.array_equal(out, part, equal_nan=True)
    out32 = np.full((22, 20), -1, np.float32)
    assert g.compute(n, region=(slice(5, 27), slice(40, 60)), out=out32) is out32
    assert np.array_equal(out32, part.astype(np.float32), equal_nan=True)
    # A float64 and a non-contiguous out: through a temporary.
    out64 = np.zeros((50, 60, 2))[:, :, 0]
    g.compute(n, out=out64)
    assert np.array_equal(out64, full.astype(np.float64), equal_nan=True)
    mm = np.memmap(tmp_path / 'o.dat', dtype=np.float64, mode='w+', shape=(50, 60))
    fp = np.memmap(tmp_path / 'f.dat', dtype=np.float64, mode='w+', shape=(50, 60))
    d, f = g.compute([n, g.footprint(n)], out=[mm, fp])
    assert d is mm and f is fp
    assert np.array_equal(np.asarray(mm), full, equal_nan=True)
    with pytest.raises(ValueError, match=r'out has shape \(10, 10\); the region has shape \(50, 60\)'):
        g.compute(n, out=np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match='read-only'):
        ro = np.zeros((50, 60), np.float32)
        ro.flags.writeable = False
        g.compute(n, out=ro)
    with pytest.raises(ValueError, match='outside or empty'):
        g.compute(n, region=(slice(10, 10),))


@pytest.mark.parametrize('jobs,executor', [(1, None), (2, None), (2, 'threads'), (2, 'processes'),
                                           (0, None)])
def test_every_executor_gives_the_same_bits(sky, jobs, executor):
    data, w, target = sky
    g, s = graph_of(data, w)
    t = header_of(target, (50, 60)).tostring()
    for make in (lambda: g.reproject_interp(s, t, block=(16, 16)),
                 lambda: g.reproject_adaptive(s, t, block=(16, 16)),
                 lambda: g.reproject_exact(s, t, block=(16, 16))):
        n = make()
        ref = g.compute(n)
        assert np.array_equal(g.compute(n, jobs=jobs, executor=executor), ref, equal_nan=True)


def test_many_python_threads_compute_one_graph(sky):
    data, w, target = sky
    g, s = graph_of(data, w)
    n = g.reproject_adaptive(s, header_of(target, (50, 60)).tostring(), block=(8, 8))
    ref = g.compute(n)
    results, errors = [], []

    def work(k):
        try:
            for _ in range(3):
                results.append(np.array_equal(g.compute(n, jobs=1 + k % 2), ref, equal_nan=True))
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append(e)
    ts = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors and len(results) == 18 and all(results)


def test_building_while_computing_is_refused(sky):
    data, w, target = sky
    g, s = graph_of(data, w)
    seen = []

    def progress(done, total):
        if not seen:
            try:
                g.binary_scalar('add', s, 1.0)
            except RuntimeError as e:
                seen.append(str(e))
    n = g.reproject_interp(s, header_of(target, (50, 60)).tostring(), block=(16, 16))
    g.compute(n, progress=progress)
    assert seen and 'cannot be added while the graph is being computed' in seen[0]


def test_progress_reports_every_block_and_its_errors_stop_the_run(sky):
    data, w, target = sky
    g, s = graph_of(data, w)
    n = g.reproject_interp(s, header_of(target, (50, 60)).tostring(), block=(16, 16))
    calls = []
    g.compute(n, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (16, 16) and len(calls) == 16

    def bad(d, t):
        raise KeyError('stop here')
    with pytest.raises(KeyError, match='stop here'):
        g.compute(n, progress=bad)


def test_cancel_token_stops_a_computation(sky):
    data, w, target = sky
    g, s = graph_of(data, w)
    n = g.reproject_adaptive(s, header_of(target, (50, 60)).tostring(), block=(4, 4))
    tok = _core.CancelToken()
    tok.cancel()
    assert tok.cancelled
    with pytest.raises(tessera.CancelledError, match='cancel'):
        g.compute(n, cancel=tok)
    errors = []

    def from_thread():  # the token's flag is the run's off the main thread
        try:
            g.compute(n, cancel=tok)
        except tessera.CancelledError as e:
            errors.append(e)
    t = threading.Thread(target=from_thread)
    t.start()
    t.join()
    assert len(errors) == 1
    tok.reset()
    assert g.compute(n, cancel=tok).shape == (50, 60)


# ---------------------------------------------------------------------------
# Errors

def test_errors_become_python_exceptions_with_the_library_message(tmp_path, sky):
    data, w, target = sky
    g = _core.Graph()
    with pytest.raises(FileNotFoundError, match='nope.fits'):
        g.source_fits(tmp_path / 'nope.fits')
    bad = tmp_path / 'bad.fits'
    bad.write_bytes(b'SIMPLE  =                    T' + b' ' * 50 + b'garbage' * 100)
    with pytest.raises(OSError) as ei:
        _core.Graph().source_fits(bad)
    assert 'bad.fits' in str(ei.value)
    with pytest.raises(ValueError, match='CTYPE|projection|WCS|wcs'):
        _core.Wcs("NAXIS = 2\nNAXIS1 = 10\nNAXIS2 = 10\nCTYPE1 = 'RA---XYZ'\nCTYPE2 = 'DEC--XYZ'\n",
                  need_shape=True)
    g, s = graph_of(data, w)
    with pytest.raises(ValueError, match='NAXIS'):
        g.reproject_interp(s, w.to_header().tostring())          # a target without its shape
    with pytest.raises(ValueError, match="order: unknown value 'trilinear'"):
        g.reproject_interp(s, header_of(target, (5, 5)).tostring(), order='trilinear')
    with pytest.raises(ValueError, match='boundary_mode'):
        g.reproject_adaptive(s, header_of(target, (5, 5)).tostring(), boundary_mode='wrap')
    g2, s2 = graph_of(data, w)
    with pytest.raises(ValueError, match='shapes do not broadcast'):
        g2.binary('add', s2, g2.source_array(np.zeros((3, 3))))
    with pytest.raises(ValueError, match='graph has an error|shapes do not broadcast'):
        g2.unary('abs', s2)   # the graph keeps its first error
    g3, s3 = graph_of(data, w)
    with pytest.raises(ValueError, match=r'jobs = -1 out of range'):
        g3.compute(s3, jobs=-1)
    with pytest.raises(ValueError, match="executor 'fast'"):
        g3.compute(s3, executor='fast')
    with pytest.raises(ValueError, match='dtype'):
        g.source_array(np.zeros((3, 3), complex))
    with pytest.raises(ValueError, match='axis 0 has length 0'):
        g.source_array(np.zeros((0, 3)))
    with pytest.raises(TypeError, match='expected nodes of this graph'):
        _core.Graph().compute(s)


def test_write_fits_and_its_errors(tmp_path, sky):
    data, w, target = sky
    g, s = graph_of(data, w)
    n = g.reproject_interp(s, header_of(target, (50, 60)).tostring())
    g.write_fits([n, g.footprint(n)], [tmp_path / 'd.fits', tmp_path / 'f.fits'],
                 region=(slice(10, 30), slice(0, 20)), jobs=2)
    d, f = g.compute([n, g.footprint(n)], region=(slice(10, 30), slice(0, 20)))
    assert np.array_equal(fits.getdata(tmp_path / 'd.fits'), d, equal_nan=True)
    assert np.array_equal(fits.getdata(tmp_path / 'f.fits'), f)
    hdr = fits.getheader(tmp_path / 'd.fits')
    assert hdr['CRPIX2'] == pytest.approx(target.wcs.crpix[1] - 10)
    with pytest.raises(OSError):
        g.write_fits(n, tmp_path / 'no' / 'such' / 'dir.fits')
    assert not (tmp_path / 'no').exists()


# ---------------------------------------------------------------------------
# Caches

def test_cache_from_python_and_from_the_environment(tmp_path, sky, monkeypatch):
    data, w, target = sky
    g, s = graph_of(data, w)
    n = g.reproject_exact(s, header_of(target, (50, 60)).tostring(), block=(16, 16))
    ref = g.compute(n, cache=False)
    c = _core.Cache(str(tmp_path / 'c1'))
    assert np.array_equal(g.compute(n, cache=c), ref, equal_nan=True)
    st = c.stats()
    assert st['session_stores'] == 16 and st['session_hits'] == 0
    assert np.array_equal(g.compute(n, cache=c), ref, equal_nan=True)
    assert c.stats()['session_hits'] == 16
    c.close()
    with pytest.raises(ValueError, match='closed'):
        g.compute(n, cache=c)
    # A directory, and $TESSERA_CACHE: one handle per directory and process.
    # Blocks served from the cache never ask the source for windows.
    g = _core.Graph()
    s, calls = logged_source(g, data, w)
    n = g.reproject_exact(s, header_of(target, (50, 60)).tostring(), block=(16, 16))
    monkeypatch.setenv('TESSERA_CACHE', str(tmp_path / 'c2'))
    assert np.array_equal(g.compute(n), ref, equal_nan=True)
    assert len(list((tmp_path / 'c2').rglob('*.tsc'))) == 16 and calls
    calls.clear()
    assert np.array_equal(g.compute(n, jobs=2), ref, equal_nan=True)
    assert np.array_equal(g.compute(n, cache=str(tmp_path / 'c2')), ref, equal_nan=True)
    assert not calls
    assert np.array_equal(g.compute(n, cache=False), ref, equal_nan=True)
    assert calls
    monkeypatch.setenv('TESSERA_CACHE', '')
    assert g.compute(n, cache=False).shape == (50, 60)


# ---------------------------------------------------------------------------
# WCS helpers

def test_wcs_handles_and_optimal_wcs(tmp_path, sky):
    data, w, target = sky
    hw = _core.Wcs(header_of(w, data.shape).tostring(), need_shape=True)
    assert hw.naxis == 2 and hw.shape == data.shape
    assert 'TAN' in hw.describe()
    lon, lat = hw.pix2world([39.5, 0.0], [31.5, 0.0])
    ra, dec = w.wcs_pix2world([39.5, 0.0], [31.5, 0.0], 0)
    np.testing.assert_allclose(lon, ra, atol=1e-10)
    np.testing.assert_allclose(lat, dec, atol=1e-10)
    hw.write_hdr(str(tmp_path / 'w.hdr'))
    assert _core.Wcs.read_hdr(str(tmp_path / 'w.hdr')).cards == hw.cards
    opt = _core.optimal_wcs([hw, header_of(target, (50, 60)).tostring()])
    assert opt.naxis == 2 and min(opt.shape) > 40
    with pytest.raises(TypeError):
        _core.Wcs(12)
    assert isinstance(pickle.dumps(tessera.from_array(data, w)), bytes)
