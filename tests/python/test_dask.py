"""dask in (window by window) and dask out (threaded, processes and
dask.distributed schedulers give the same bits), and the cache through dask."""
import os
import threading

import numpy as np
import pytest

import tessera

from conftest import tan_wcs

da = pytest.importorskip('dask.array')
import dask  # noqa: E402


class ChunkLog:
    """Records which chunks of a dask array get computed."""

    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()

    def __call__(self, block, block_info=None):
        with self.lock:
            self.seen.append(tuple(block_info[0]['chunk-location']))
        return block


def logged(arr, chunks):
    log = ChunkLog()
    return da.from_array(arr, chunks=chunks).map_blocks(log, dtype=arr.dtype), log


@pytest.fixture
def field():
    rng = np.random.default_rng(11)
    y, x = np.mgrid[0:256, 0:256]
    data = (np.sin(x / 9.0) + np.cos(y / 13.0)) * 100 + rng.normal(0, 1, (256, 256))
    w = tan_wcs(shape=(256, 256), scale=2e-4)
    target = tan_wcs(crval=(150.002, 2.001), shape=(200, 220), scale=2.2e-4, rot=15)
    return data.astype(np.float32), w, target


def test_dask_input_is_read_window_by_window(field):
    data, w, target = field
    ref = tessera.reproject(tessera.from_array(data, w), target, shape_out=(200, 220),
                            block=(64, 64)).compute()
    darr, log = logged(data, (32, 32))
    R = tessera.reproject(tessera.from_array(darr, w), target, shape_out=(200, 220),
                          block=(64, 64))
    # A region: only the chunks under its window are computed.
    part = R.compute(region=(slice(0, 64), slice(0, 64)), jobs=1)
    np.testing.assert_array_equal(part, ref[:64, :64])
    assert 0 < len(set(log.seen)) < 64 / 4
    # The whole: every chunk, each block asking only for its own window.
    log.seen.clear()
    np.testing.assert_array_equal(R.compute(jobs=2), ref)
    assert len(set(log.seen)) <= 64
    # Recent chunks are kept for the neighbouring windows: few are computed
    # twice (two threads may both miss one).
    assert len(log.seen) < 1.5 * 64
    # With no room to keep any, every window computes its own chunks: only
    # the ones it meets, the same bits.
    darr2, log2 = logged(data, (32, 32))
    budget = tessera._array._DaskWindow.BUDGET
    try:
        tessera._array._DaskWindow.BUDGET = 0
        R2 = tessera.reproject(tessera.from_array(darr2, w), target, shape_out=(200, 220),
                               block=(64, 64))
        np.testing.assert_array_equal(R2.compute(jobs=1), ref)
    finally:
        tessera._array._DaskWindow.BUDGET = budget
    assert len(set(log2.seen)) <= 64 and len(log2.seen) > 64


@pytest.mark.parametrize('dtype', ['>i2', '<u2', 'f2', '>f8', 'i4'])
def test_dask_input_of_other_dtypes(field, dtype):
    data, w, target = field
    raw = (data * 10).astype(dtype)
    ref = tessera.from_array(raw, w)
    D = tessera.from_array(da.from_array(raw, chunks=(100, 60)), w)
    assert D.dtype == ref.dtype
    np.testing.assert_array_equal(D.compute(), ref.compute())
    np.testing.assert_array_equal(tessera.reproject(D, target, shape_out=(200, 220)).compute(),
                                  tessera.reproject(ref, target, shape_out=(200, 220)).compute())


def test_to_dask_blocks_and_sections(field):
    data, w, target = field
    R = tessera.reproject(tessera.from_array(data, w), target, shape_out=(200, 220))
    ref = R.compute()
    D = R.to_dask(chunks=(64, 64))
    assert D.chunks == ((64, 64, 64, 8), (64, 64, 64, 28))
    assert D.dtype == ref.dtype
    np.testing.assert_array_equal(D[70:130, 10:90].compute(scheduler='threads'), ref[70:130, 10:90])
    # The engine's own chunks when none are given (a small leaf is one chunk).
    assert tessera.from_array(data).to_dask().chunks == ((256,), (256,))
    assert R.to_dask().chunks == tuple((c,) * (n // c) + ((n % c,) if n % c else ())
                                       for c, n in zip(R.chunks, R.shape))
    # Reductions and dask-side arithmetic on it.
    np.testing.assert_allclose(float(D.astype(np.float64).sum().compute()),
                               float(ref.sum(dtype=np.float64)), rtol=1e-12)


def test_to_dask_on_the_threaded_and_processes_schedulers(field):
    data, w, target = field
    D0 = tessera.from_array(da.from_array(data, chunks=(64, 64)), w)
    for src in (tessera.from_array(data, w), D0):
        R = tessera.reproject(src, target, shape_out=(200, 220), method='adaptive')
        ref = R.compute()
        D = R.to_dask(chunks=(50, 110))
        for scheduler in ('threads', 'processes', 'sync'):
            with dask.config.set(num_workers=2):
                np.testing.assert_array_equal(D.compute(scheduler=scheduler), ref)


def test_to_dask_on_dask_distributed(field, tmp_path, monkeypatch):
    distributed = pytest.importorskip('distributed')
    data, w, target = field
    path = tmp_path / 'in.dat'
    mm = np.memmap(path, dtype=np.float32, mode='w+', shape=data.shape)
    mm[:] = data
    mm.flush()
    src = tessera.from_array(np.memmap(path, dtype=np.float32, mode='r', shape=data.shape), w)
    R = tessera.reproject(src, target, shape_out=(200, 220), method='exact') * 2
    ref = R.compute()
    # The workers inherit TESSERA_CACHE: the second run is all hits.
    monkeypatch.setenv('TESSERA_CACHE', str(tmp_path / 'cache'))
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        D = R.to_dask(chunks=(64, 64))
        np.testing.assert_array_equal(client.compute(D).result(timeout=120), ref)
        assert len(list((tmp_path / 'cache').rglob('*.tsc'))) > 0
        np.testing.assert_array_equal(client.compute(D).result(timeout=120), ref)
        # A dask input travels with the tasks too.
        DI = tessera.from_array(da.from_array(data, chunks=(64, 64)), w)
        RI = tessera.reproject(DI, target, shape_out=(200, 220))
        np.testing.assert_array_equal(client.compute(RI.to_dask(chunks=(100, 100))).result(timeout=120),
                                      RI.compute(cache=False))


def test_dask_errors_surface(field):
    data, w, _ = field

    def boom(block):
        raise ArithmeticError('chunk exploded')
    darr = da.from_array(data, chunks=(64, 64)).map_blocks(boom, dtype=data.dtype)
    A = tessera.from_array(darr, w)
    with pytest.raises(ArithmeticError, match='chunk exploded'):
        A.compute()
    with pytest.raises(ValueError, match="use 'threads'"):
        (A + 1).compute(jobs=2, executor='processes')
