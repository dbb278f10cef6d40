"""Dask arrays: filters over huge images and model predictions over big batches, chunk by chunk.

Every result is compared with the in-memory call on the computed array, over several chunkings
(uneven, smaller than the kernel) and on Dask's synchronous, threaded and process schedulers
and a local dask.distributed cluster.
"""

import pickle
import threading
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("dask.distributed")

from strategies import chunking

import cnnlab
import cnnlab.dask as cdask
from cnnlab import filters
from cnnlab import layers as L


def small_cnn():
    return cnnlab.Sequential([
        L.Conv2D(1, 4, 3, padding=1, seed=0), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
        L.Dense(64, 3, seed=1), L.Softmax(),
    ], input_shape=(1, 8, 8))


@pytest.fixture(scope="module")
def model():
    return small_cnn()


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return rng.random((37, 1, 8, 8)), np.arange(37) % 3


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    client = distributed.Client(cluster, set_as_default=False)
    yield client
    client.close()
    cluster.close()


def layer_keys(array, prefix):
    return [k for k in dict(array.__dask_graph__()) if isinstance(k, tuple) and k[0].startswith(prefix)]


def unwrap(value):
    return getattr(value, "value", value)


def holds_model(value):
    """Whether a graph value is, or literally holds, a model (Dask wraps literals in objects
    with a ``data`` or ``value`` attribute)."""
    for attribute in ("data", "value"):
        if type(value).__module__.startswith("dask") and hasattr(value, attribute):
            return holds_model(getattr(value, attribute))
    if isinstance(value, cnnlab.Model):
        return True
    if isinstance(value, (tuple, list)):
        return any(holds_model(v) for v in value)
    return isinstance(value, dict) and any(holds_model(v) for v in value.values())


# --- filters -----------------------------------------------------------------------------

@st.composite
def filter_problems(draw):
    shape = (draw(st.integers(5, 24)), draw(st.integers(5, 24)))
    kernel = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    chunks = (draw(chunking(shape[0])), draw(chunking(shape[1])))
    mode = draw(st.sampled_from(["same", "full", "valid"]))
    boundary = draw(st.sampled_from(["fill", "wrap", "symm"]))
    convolve = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return shape, kernel, chunks, mode, boundary, convolve, seed


@given(filter_problems())
def test_filters_equal_the_in_memory_result(problem):
    shape, kernel, chunks, mode, boundary, convolve, seed = problem
    rng = np.random.default_rng(seed)
    image, weights = rng.standard_normal(shape), rng.standard_normal(kernel)
    function = filters.convolve2d if convolve else filters.correlate2d
    expected = function(image, weights, mode, boundary, fillvalue=0.75)
    result = function(da.from_array(image, chunks=chunks), weights, mode, boundary, fillvalue=0.75)
    assert cdask.is_dask_array(result)
    if mode == "same":
        assert result.chunks == da.from_array(image, chunks=chunks).chunks
    da.utils.assert_eq(result, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunks", [(4, 3), (3, 2), ((3, 10, 1, 6), (11, 8)), (20, 19)])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
def test_apply_grayscale_and_rgb(chunks, boundary):
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, (20, 19)).astype(np.uint8)
    rgb = rng.random((20, 19, 3)).astype(np.float32)
    da.utils.assert_eq(filters.apply(da.from_array(gray, chunks=chunks), "edge", boundary=boundary),
                       filters.apply(gray, "edge", boundary=boundary), rtol=1e-12, atol=0)
    colour = da.from_array(rgb, chunks=chunks + (2,))
    result = filters.apply(colour, np.ones((5, 3)) / 15, boundary=boundary)
    assert result.chunks == colour.chunks and result.dtype == np.float32
    da.utils.assert_eq(result, filters.apply(rgb, np.ones((5, 3)) / 15, boundary=boundary), rtol=1e-6, atol=0)


def test_integer_images_wrap_and_fill_like_in_memory():
    image = np.arange(90, dtype=np.uint8).reshape(9, 10) * 7
    dimage = da.from_array(image, chunks=(4, 3))
    da.utils.assert_eq(filters.correlate2d(dimage, np.full((3, 3), 50, np.uint8), "same"),
                       filters.correlate2d(image, np.full((3, 3), 50, np.uint8), "same"))
    # the fill value is cast to the result dtype, as in memory
    da.utils.assert_eq(filters.correlate2d(dimage, np.ones((3, 3)) / 9, "full", fillvalue=0.5),
                       filters.correlate2d(image, np.ones((3, 3)) / 9, "full", fillvalue=0.5),
                       rtol=1e-12)


def recording(monkeypatch, name="correlate2d", pause=0.0):
    """Wrap an in-memory filter to record the blocks it sees and how many run at once."""
    seen = {"shapes": [], "running": 0, "most": 0}
    original = getattr(filters, name)
    lock = threading.Lock()

    def wrapper(in1, *args, **kwargs):
        with lock:
            seen["shapes"].append(np.shape(in1))
            seen["running"] += 1
            seen["most"] = max(seen["most"], seen["running"])
        try:
            time.sleep(pause)
            return original(in1, *args, **kwargs)
        finally:
            with lock:
                seen["running"] -= 1

    monkeypatch.setattr(filters, name, wrapper)
    return seen


def test_one_task_per_chunk_and_no_block_larger_than_its_share(monkeypatch):
    image = np.random.default_rng(2).random((40, 30))
    dimage = da.from_array(image, chunks=(10, 12))
    result = filters.correlate2d(dimage, np.ones((5, 3)), "same", "wrap")
    assert len(layer_keys(result, "cnnlab-correlate2d")) == dimage.npartitions
    graph = dict(result.__dask_graph__())
    assert all(np.size(unwrap(v)) <= 10 * 12 for v in graph.values() if isinstance(unwrap(v), np.ndarray))
    seen = recording(monkeypatch)
    np.testing.assert_allclose(result.compute(scheduler="sync"), filters.correlate2d(image, np.ones((5, 3)), "same", "wrap"),
                               rtol=1e-12)
    # each in-memory call sees its chunk plus the kernel's reach, never the whole image
    assert len(seen["shapes"]) == dimage.npartitions + 1  # + the reference call above
    assert max(s[0] for s in seen["shapes"][:-1]) <= 10 + 4 and max(s[1] for s in seen["shapes"][:-1]) <= 12 + 2


def test_chunks_smaller_than_the_kernel_are_merged_and_restored():
    image = np.random.default_rng(3).random((13, 11))
    dimage = da.from_array(image, chunks=(1, 2))
    result = filters.convolve2d(dimage, np.ones((7, 7)), "same", "symm")
    assert result.chunks == dimage.chunks
    da.utils.assert_eq(result, filters.convolve2d(image, np.ones((7, 7)), "same", "symm"), rtol=1e-12)


def lazy_bomb(shape, chunks, dtype=np.float64):
    """A dask array whose chunks raise when computed: building a graph must not compute it."""
    def explode(block):
        raise AssertionError("a chunk was computed")
    return da.zeros(shape, chunks=chunks, dtype=dtype).map_blocks(explode, dtype=dtype)


def test_nothing_is_computed_before_compute(model):
    out = filters.correlate2d(lazy_bomb((100, 100), 25), np.ones((3, 3)), "same")
    assert out.shape == (100, 100)
    assert model.predict_proba(lazy_bomb((50, 1, 8, 8), (10, 1, 8, 8))).shape == (50, 3)
    assert model.predict(lazy_bomb((50, 1, 8, 8), (10, 1, 8, 8))).shape == (50,)


@pytest.mark.parametrize("call, error, words", [
    (lambda: filters.correlate2d(da.ones(5, chunks=2), np.ones((3, 3))), ValueError, "in1 must be a 2-D array"),
    (lambda: filters.convolve2d(da.ones((5, 5), chunks=2), np.ones((3, 3)), mode="middle"), ValueError, "mode"),
    (lambda: filters.correlate2d(da.ones((5, 5), chunks=2), np.ones((3, 3)), boundary="edge"), ValueError, "boundary"),
    (lambda: filters.correlate2d(da.ones((5, 5), chunks=2), da.ones((3, 3))), TypeError, "in2"),
    (lambda: filters.correlate2d(da.ones((5, 5), dtype=np.float16, chunks=2), np.ones((3, 3), np.float16)),
     TypeError, "float16"),
    (lambda: filters.correlate2d(da.ones((5, 5), chunks=2), np.ones((6, 6)), mode="valid"), ValueError, "mode='valid'"),
    (lambda: filters.correlate2d(da.ones((2, 50), chunks=2), np.ones((7, 3)), "same", "wrap"), ValueError, "rows"),
    (lambda: filters.apply(da.ones((4, 4, 3, 2), chunks=2), "edge"), ValueError, "image must have shape"),
    (lambda: filters.apply(da.ones((4, 4), dtype=complex, chunks=2), "edge"), TypeError, "image must be numeric"),
    (lambda: filters.apply(da.ones((4, 4), chunks=2), "blur"), ValueError, "kernel must be one of"),
])
def test_bad_filter_input(call, error, words):
    with pytest.raises(error, match=words):
        call()


# --- batches and models ------------------------------------------------------------------

def test_map_batches_runs_per_chunk_and_refuses_other_chunkings():
    x = da.arange(60.0, chunks=12).reshape(10, 6).rechunk((3, 6))
    seen = []

    def total(b, scale):
        seen.append(b.shape)
        return b.sum(axis=1) * scale

    result = cdask.map_batches(total, x, 2.0, sample_shape=(), dtype=np.float64)
    assert result.chunks == ((3, 3, 3, 1),)
    assert len(layer_keys(result, "cnnlab-map-batches")) == 4
    np.testing.assert_array_equal(result.compute(scheduler="sync"), np.arange(60.0).reshape(10, 6).sum(1) * 2)
    assert sorted(seen) == [(1, 6), (3, 6), (3, 6), (3, 6)]  # one call per chunk, each its own share
    with pytest.raises(ValueError, match=r"chunked along axis 1 .*rechunk"):
        cdask.map_batches(np.negative, x.rechunk((3, 2)))


@pytest.mark.parametrize("chunks", [10, 37, 1, (5, 20, 12)])
def test_predictions_equal_the_in_memory_result(model, batch, chunks):
    x, y = batch
    dx = da.from_array(x, chunks=(chunks, 1, 8, 8))
    probabilities = model.predict_proba(dx)
    assert cdask.is_dask_array(probabilities) and probabilities.chunks[0] == dx.chunks[0]
    da.utils.assert_eq(probabilities, model.predict_proba(x), rtol=1e-6, atol=1e-7)
    da.utils.assert_eq(model.predict(dx), model.predict(x))
    expected = model.evaluate(x, y)
    for labels in (y, da.from_array(y, chunks=9)):
        scores = model.evaluate(dx, labels)
        assert scores["accuracy"] == expected["accuracy"]
        assert scores["loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_model_is_in_the_graph_once(model, batch):
    x, _ = batch
    dx = da.from_array(x, chunks=(5, 1, 8, 8))
    for result in (model.predict_proba(dx), model.predict(dx)):
        graph = dict(result.__dask_graph__())
        holders = [k for k, v in graph.items() if holds_model(unwrap(v))]
        assert len(holders) == 1
        size = len(pickle.dumps(small_cnn()))
        tasks = layer_keys(result, "cnnlab-predict")
        assert len(tasks) == dx.npartitions  # one task per chunk, none for the whole batch
        assert all(len(pickle.dumps(graph[k])) < size / 2 for k in tasks)


@pytest.mark.parametrize("call, error, words", [
    (lambda m: m.predict(da.ones((4, 1, 8, 8), dtype=np.uint8, chunks=2)), TypeError, "integer dtype"),
    (lambda m: m.predict_proba(da.ones((4, 1, 8, 8), dtype=complex, chunks=2)), TypeError, "float32 or float64"),
    (lambda m: m.predict(da.ones((1, 8, 8), chunks=2)), ValueError, "takes a batch"),
    (lambda m: m.predict(da.ones((4, 1, 10, 10), chunks=(2, 1, 10, 10))), ValueError, "does not fit layer"),
    (lambda m: m.predict(da.ones((4, 1, 8, 8), chunks=(2, 1, 4, 8))), ValueError, r"axis 2 .*rechunk"),
    (lambda m: m.evaluate(da.ones((4, 1, 8, 8), chunks=2).rechunk((2, 1, 8, 8)), np.zeros(3, int)),
     ValueError, "same length"),
])
def test_bad_model_input(model, call, error, words):
    with pytest.raises(error, match=words):
        call(model)


@pytest.mark.parametrize("x", [np.ones((4, 1, 10, 10)), np.ones((1, 8, 8)), np.ones((4, 1, 8, 8), np.uint8),
                               np.ones((4, 1, 8, 8), np.complex64)])
def test_model_errors_are_the_in_memory_ones(model, x):
    with pytest.raises((ValueError, TypeError)) as in_memory:
        model.predict(x)
    with pytest.raises(in_memory.type) as chunked:
        model.predict(da.from_array(x, chunks=2))
    assert str(chunked.value) == str(in_memory.value)


def test_non_finite_values_are_refused_when_computed(model):
    x = np.zeros((6, 1, 8, 8))
    x[4, 0, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        model.predict(da.from_array(x, chunks=(3, 1, 8, 8))).compute(scheduler="sync")


# --- schedulers and threading ------------------------------------------------------------

def test_threaded_scheduler_runs_kernels_at_once(monkeypatch, model, batch):
    image = np.random.default_rng(4).random((64, 64))
    dimage = da.from_array(image, chunks=16)
    expected = filters.correlate2d(image, filters.KERNELS["edge"], "same", "symm")
    seen = recording(monkeypatch, pause=0.02)
    result = filters.correlate2d(dimage, filters.KERNELS["edge"], "same", "symm")
    np.testing.assert_array_equal(result.compute(scheduler="threads", num_workers=4), expected)
    if cnnlab.parallel.threading_layer() != "workqueue":
        assert seen["most"] > 1
    x, _ = batch
    probabilities = model.predict_proba(da.from_array(x, chunks=(4, 1, 8, 8)))
    np.testing.assert_allclose(probabilities.compute(scheduler="threads", num_workers=4),
                               model.predict_proba(x), rtol=1e-6, atol=1e-7)


def test_workqueue_layer_serializes_chunk_calls(monkeypatch):
    import numba

    cnnlab.parallel.threading_layer()  # a kernel has run: the real layer is chosen
    monkeypatch.setattr(numba, "threading_layer", lambda: "workqueue")
    seen = recording(monkeypatch, pause=0.02)
    image = np.random.default_rng(5).random((48, 48))
    result = filters.correlate2d(da.from_array(image, chunks=12), np.ones((3, 3)), "same")
    out = result.compute(scheduler="threads", num_workers=4)
    assert seen["most"] == 1
    monkeypatch.undo()
    np.testing.assert_allclose(out, filters.correlate2d(image, np.ones((3, 3)), "same"), rtol=1e-12)


def test_processes_scheduler(model, batch):
    x, _ = batch
    image = np.random.default_rng(6).random((30, 20))
    dimage = da.from_array(image, chunks=(8, 7))
    with dask.config.set(scheduler="processes", num_workers=2):
        out = filters.convolve2d(dimage, np.ones((3, 4)), "full", "wrap").compute()
        probabilities = model.predict_proba(da.from_array(x, chunks=(10, 1, 8, 8))).compute()
    np.testing.assert_allclose(out, filters.convolve2d(image, np.ones((3, 4)), "full", "wrap"), rtol=1e-12)
    np.testing.assert_allclose(probabilities, model.predict_proba(x), rtol=1e-6, atol=1e-7)


def test_distributed_cluster(client, model, batch):
    x, y = batch
    image = np.random.default_rng(7).random((40, 36))
    dimage = da.from_array(image, chunks=(9, 10))
    dx = da.from_array(x, chunks=(8, 1, 8, 8))
    filtered = filters.apply(dimage, "gaussian_blur", boundary="symm")
    np.testing.assert_allclose(client.compute(filtered).result(),
                               filters.apply(image, "gaussian_blur", boundary="symm"), rtol=1e-12)
    np.testing.assert_array_equal(client.compute(model.predict(dx)).result(), model.predict(x))
    with dask.config.set(scheduler=client):
        scores = model.evaluate(dx, y)
    expected = model.evaluate(x, y)
    assert scores["accuracy"] == expected["accuracy"]
    assert scores["loss"] == pytest.approx(expected["loss"], rel=1e-6)


def test_docs_examples_run(capsys):
    import doctest
    import pathlib
    import re

    assert doctest.testmod(cdask, optionflags=doctest.NORMALIZE_WHITESPACE).failed == 0
    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "dask.md").read_text()
    namespace = {}
    for block in re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL):
        if "scheduler-address" not in block:  # needs a running cluster
            with dask.config.set(scheduler="threads"):
                exec(compile(block, "docs/dask.md", "exec"), namespace)
    shown = capsys.readouterr().out
    assert "True True" in shown and "(2000, 10) ((500, 500, 500, 500),) ['accuracy', 'loss']" in shown


# --- functional ops on a dask array chunked along the batch axis ------------------------------


@pytest.mark.parametrize("op", [
    lambda x, F: F.conv2d(x, np.linspace(-1, 1, 4 * 3 * 9, dtype=np.float32).reshape(4, 3, 3, 3), padding=1),
    lambda x, F: F.max_pool2d(x, 2),
    lambda x, F: F.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    lambda x, F: F.global_max_pool2d(F.relu6(F.hardswish(x))),
    lambda x, F: F.linear(x.reshape(x.shape[0], -1), np.ones((5, 3 * 8 * 8), np.float32)),
    lambda x, F: F.silu(F.leaky_relu(F.tanh(F.sigmoid(x)), 0.2)),
])
def test_functional_ops_run_chunk_by_chunk_over_the_batch(op):
    import cnnlab.functional as F

    x = np.random.default_rng(0).standard_normal((7, 3, 8, 8)).astype(np.float32)
    lazy = op(da.from_array(x, chunks=(3, 3, 8, 8)), F)
    assert isinstance(lazy, da.Array) and lazy.chunks[0] == (3, 3, 1)
    np.testing.assert_allclose(lazy.compute(), op(x, F), rtol=1e-6, atol=1e-6)


def test_ops_without_a_window_geometry_refuse_an_array_chunked_across_the_image():
    """conv2d and the poolings take spatial chunks (tests/test_dask_spatial.py); a global
    pooling reads the whole image, so it names the axis to rechunk."""
    import cnnlab.functional as F

    x = da.zeros((4, 3, 8, 8), chunks=(2, 3, 4, 8), dtype=np.float32)
    with pytest.raises(ValueError, match="axis 2"):
        F.global_avg_pool2d(x)
