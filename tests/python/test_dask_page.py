"""The examples of reproject's "Integration with dask and parallel
processing" page, verbatim but for the import (from tessera, not from
reproject), each checked against reproject 0.10's result for the same call.

Where the page warns that reproject does not work reliably with dask's
threaded scheduler (its default) or with several threads per
dask.distributed worker, these run exactly that.
"""
import numpy as np
import pytest

reproject = pytest.importorskip('reproject')


@pytest.fixture(scope='module')
def page():
    # testsetup of the page
    import numpy as np
    import dask.array as da
    input_array = np.random.random((1024, 1024))
    dask_array = da.from_array(input_array, chunks=(128, 128))
    from astropy.wcs import WCS
    wcs_in = WCS(naxis=2)
    wcs_out = WCS(naxis=2)
    ref = reproject.reproject_interp((input_array, wcs_in), wcs_out, shape_out=(2048, 2048))
    return input_array, dask_array, wcs_in, wcs_out, ref


def check(result, ref):
    array, footprint = (np.asarray(x) for x in result)
    assert array.shape == (2048, 2048)
    np.testing.assert_array_equal(np.isnan(array), np.isnan(ref[0]))
    np.testing.assert_allclose(array, ref[0], rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(footprint, ref[1])


def test_input_dask_arrays(page):
    input_array, dask_array, wcs_in, wcs_out, ref = page
    assert repr(dask_array).startswith('dask.array<array, shape=(1024, 1024), dtype=float64, '
                                       'chunksize=(128, 128)')
    from tessera import reproject_interp
    array, footprint = reproject_interp((dask_array, wcs_in), wcs_out,
                                        shape_out=(2048, 2048))
    check((array, footprint), ref)


def test_chunk_by_chunk_and_parallel(page):
    input_array, dask_array, wcs_in, wcs_out, ref = page
    from tessera import reproject_interp
    assert input_array.shape == (1024, 1024)
    array, footprint = reproject_interp((input_array, wcs_in), wcs_out,
                                        shape_out=(2048, 2048), block_size=(256, 256))
    check((array, footprint), ref)
    array, footprint = reproject_interp((input_array, wcs_in), wcs_out,
                                        shape_out=(2048, 2048), parallel=True)
    check((array, footprint), ref)
    array, footprint = reproject_interp((input_array, wcs_in), wcs_out,
                                        shape_out=(2048, 2048), block_size=(256, 256),
                                        parallel=4)
    check((array, footprint), ref)


def test_output_dask_arrays(page):
    input_array, dask_array, wcs_in, wcs_out, ref = page
    from tessera import reproject_interp
    array, footprint = reproject_interp((input_array, wcs_in), wcs_out,
                                        shape_out=(2048, 2048), block_size=(256, 256),
                                        return_type='dask')
    assert repr(array).startswith('dask.array<')
    assert 'shape=(2048, 2048), dtype=float64, chunksize=(256, 256)' in repr(array)
    assert array.npartitions == 64          # "done in 64 separate output chunks"
    # A section, then the whole, on dask's default (threaded) scheduler.
    section = array[700:1100, 300:900].compute()
    np.testing.assert_allclose(section, ref[0][700:1100, 300:900], rtol=1e-12, equal_nan=True)
    check((array.compute(), footprint.compute()), ref)
    # The same through a dask input, and a section under the processes
    # scheduler (which pickles the recipe, the input included, into every
    # task: a section keeps that short).
    array, footprint = reproject_interp((dask_array, wcs_in), wcs_out,
                                        shape_out=(2048, 2048), block_size=(256, 256),
                                        return_type='dask')
    import dask
    with dask.config.set(scheduler='processes', num_workers=2):
        a, f = dask.compute(array[:512, 256:1024], footprint[:512, 256:1024])
    np.testing.assert_allclose(a, ref[0][:512, 256:1024], rtol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(f, ref[1][:512, 256:1024])


def test_dask_distributed(page):
    input_array, dask_array, wcs_in, wcs_out, ref = page
    distributed = pytest.importorskip('distributed')
    from tessera import reproject_interp
    array, footprint = reproject_interp((input_array, wcs_in), wcs_out,
                                        shape_out=(2048, 2048), block_size=(256, 256),
                                        return_type='dask')
    # Several threads per worker and several workers (the page asks for one
    # thread per process with reproject).
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        check(client.compute([array, footprint], sync=True), ref)
