"""F.conv2d and the pooling ops on dask arrays chunked across the image, and chunks on the GPU.

Every result is compared with the in-memory call on the computed array over hypothesis-drawn
chunkings (uneven, smaller than the kernel or the stride, one chunk) and geometries (stride,
four-sided and 'same' padding, dilation, ceil_mode, count_include_pad); a geometry the
in-memory op refuses must be refused the same way, before anything is computed. The GPU tests
run on the GPU where there is one, under Numba's CUDA simulator elsewhere (conftest.py).
"""

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from strategies import chunking

import cnnlab
import cnnlab.dask as cdask
import cnnlab.dask.windows
import cnnlab.functional as F
import cnnlab.functional.pool
from cnnlab.device import is_gpu_array
from cnnlab.shapes import axis_output_size

CONV = F.conv2d.__wrapped__  # the in-memory op, as the tasks run it
POOL = cnnlab.functional.pool._pool2d.__wrapped__


def random_array(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape)


def layer_keys(array, prefix):
    return [k for k in dict(array.__dask_graph__()) if isinstance(k, tuple) and k[0].startswith(prefix)]


def assert_same_outcome(in_memory, chunked):
    """``chunked()`` (a dask array) equals ``in_memory()``, or both raise the same error."""
    try:
        expected = in_memory()
    except (ValueError, TypeError) as error:
        event("refused in memory")
        with pytest.raises(type(error)) as raised:
            chunked()
        assert str(raised.value) == str(error)
        return None
    result = chunked()
    event("equal" + (" across the image" if any(len(c) > 1 for c in result.chunks[2:]) else ""))
    assert cdask.is_dask_array(result)
    assert result.shape == expected.shape and result.dtype == expected.dtype
    computed = result.compute(scheduler="sync")
    np.testing.assert_allclose(computed, expected, rtol=1e-12, atol=1e-12)
    return result


# --- the plan along one axis ----------------------------------------------------------------

@settings(max_examples=300)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(1, 5), st.integers(1, 3), st.integers(0, 6),
       st.integers(0, 6), st.booleans(), st.data())
def test_axis_plan_blocks_give_exactly_the_outputs(size, kernel, stride, dilation, before, after, ceil_mode, data):
    """Each block's rows with its own padding give exactly its outputs (the in-memory size
    formula, ceil_mode included), at the same window positions, never with more padding than
    the op's (so pooling's padding limit holds), reading its chunk plus the window's reach."""
    try:
        total = axis_output_size(None, size, kernel, stride, before, after, dilation, ceil_mode)
    except ValueError:
        return
    span = dilation * (kernel - 1) + 1
    chunks = cdask.windows._minimum_chunks(tuple(_sizes(data, size)), span - 1)
    blocks, out_chunks = cdask.windows._window_axis_plan(chunks, size, kernel, stride, dilation, before, after, ceil_mode)
    assert sum(out_chunks) == total and min(out_chunks) > 0 and len(blocks) <= len(chunks)
    first = 0
    for (start, stop, pad_before, pad_after), count in zip(blocks, out_chunks):
        assert 0 <= start < stop <= size
        assert pad_before <= before and pad_after <= after
        assert axis_output_size(None, stop - start, kernel, stride, pad_before, pad_after, dilation,
                                 ceil_mode) == count
        assert start - pad_before == first * stride - before  # the block's first window is output `first`'s
        if len(blocks) > 1:
            assert stop - start <= max(chunks) + span - 1 + stride - 1
        first += count
    pieces = sum(len(cdask.windows._chunk_pieces(chunks, start, stop)) for start, stop, _, _ in blocks)
    assert pieces <= 3 * len(chunks)  # tasks grow with the chunks


def _sizes(data, length):
    sizes, left = [], length
    while left:
        size = data.draw(st.integers(1, left))
        sizes.append(size)
        left -= size
    return sizes


# --- conv2d ---------------------------------------------------------------------------------

@st.composite
def conv_problems(draw):
    samples, channels = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    height, width = draw(st.integers(1, 13)), draw(st.integers(1, 13))
    groups = draw(st.sampled_from([1, channels]))
    filters = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    form = draw(st.sampled_from(["int", "pair", "sides", "same", "same_upper", "same_lower", "valid"]))
    if form == "int":
        padding = draw(st.integers(0, 4))
    elif form == "pair":
        padding = (draw(st.integers(0, 3)), draw(st.integers(0, 3)))
    elif form == "sides":
        padding = tuple((draw(st.integers(0, 4)), draw(st.integers(0, 4))) for _ in range(2))
    else:
        padding = form
        if form == "same" and draw(st.booleans()):
            stride = (1, 1)
    chunks = (draw(chunking(samples)), draw(chunking(channels)), draw(chunking(height)), draw(chunking(width)))
    return {"shape": (samples, channels, height, width), "weight": (filters, channels // groups) + kernel,
                "bias": draw(st.booleans()), "stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
                "chunks": chunks, "seed": draw(st.integers(0, 2**16))}


@given(conv_problems())
def test_conv2d_equals_the_in_memory_result(problem):
    x = random_array(problem["seed"], problem["shape"])
    weight = random_array(problem["seed"] + 1, problem["weight"])
    bias = random_array(problem["seed"] + 2, problem["weight"][:1]) if problem["bias"] else None
    geometry = {key: problem[key] for key in ("stride", "padding", "dilation", "groups")}
    dx = da.from_array(x, chunks=problem["chunks"])
    result = assert_same_outcome(lambda: F.conv2d(x, weight, bias, **geometry),
                                 lambda: F.conv2d(dx, weight, bias, **geometry))
    if result is not None:
        assert result.chunks[0] == dx.chunks[0]


def test_same_padding_keeps_the_chunks_and_a_stride_shrinks_them():
    x = random_array(0, (2, 3, 20, 18))
    dx = da.from_array(x, chunks=(1, 3, (6, 8, 6), (5, 5, 8)))
    weight = random_array(1, (4, 3, 3, 5))
    same = F.conv2d(dx, weight, padding="same")
    assert same.chunks == ((1, 1), (4,), (6, 8, 6), (5, 5, 8))
    np.testing.assert_allclose(same.compute(), F.conv2d(x, weight, padding="same"), rtol=1e-12)
    strided = F.conv2d(dx, weight, stride=2, padding=(1, 2))
    assert strided.chunks[2:] == ((3, 4, 3), (3, 2, 4))  # output o is centred on input row 2*o
    np.testing.assert_allclose(strided.compute(), F.conv2d(x, weight, stride=2, padding=(1, 2)), rtol=1e-12)


def test_conv2d_options_and_channel_chunks():
    """The fused per-filter scale and activation go to every block; the channel axis is joined."""
    x = random_array(2, (3, 4, 11, 9))
    weight, bias, scale = random_array(3, (6, 2, 3, 3)), random_array(4, (6,)), random_array(5, (6,))
    dx = da.from_array(x, chunks=(2, 1, 4, 4))
    options = {"stride": (2, 1), "padding": ((2, 0), (1, 1)), "groups": 2, "scale": scale, "activation": "relu"}
    result = F.conv2d(dx, weight, bias, **options)
    assert result.chunks[1] == (6,)
    np.testing.assert_allclose(result.compute(scheduler="threads"), F.conv2d(x, weight, bias, **options),
                               rtol=1e-12, atol=1e-12)


# --- pooling --------------------------------------------------------------------------------

@st.composite
def pool_problems(draw):
    mode = draw(st.sampled_from(["max", "avg", "min", "median", "lp"]))
    height, width = draw(st.integers(1, 13)), draw(st.integers(1, 13))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    options = {}
    if mode in ("max", "min", "avg"):
        padding = tuple((draw(st.integers(0, k // 2)), draw(st.integers(0, k // 2))) for k in kernel)
        options["ceil_mode"] = draw(st.booleans())
        if mode == "avg":
            options["count_include_pad"] = draw(st.booleans())
        else:
            options["dilation"] = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    else:
        padding = 0
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), height, width)
    chunks = tuple(draw(chunking(n)) for n in shape)
    return {"shape": shape, "kernel": kernel, "stride": stride, "padding": padding, "mode": mode, "options": options,
                "chunks": chunks, "seed": draw(st.integers(0, 2**16))}


@settings(max_examples=40)  # fast: about 10 ms an example
@given(pool_problems())
def test_pooling_equals_the_in_memory_result(problem):
    x = random_array(problem["seed"], problem["shape"])
    dx = da.from_array(x, chunks=problem["chunks"])
    arguments = (problem["kernel"], problem["stride"], problem["padding"], problem["mode"])
    result = assert_same_outcome(lambda: F.pool2d(x, *arguments, **problem["options"]),
                                 lambda: F.pool2d(dx, *arguments, **problem["options"]))
    if result is not None:
        assert result.chunks[:2] == dx.chunks[:2]  # batch and channel chunks stay


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("rows", [(3, 4), (4, 3), (2, 2, 3), (7,), (1, 1, 1, 1, 1, 1, 1)])
def test_avg_pool_ceil_mode_divisor_of_the_last_partial_window(rows, count_include_pad):
    """H=7, kernel 3, stride 2, padding 1, ceil_mode: the last window starts at row 5 and runs
    past the trailing padding; its divisor (rows up to the end of the padding, or input rows
    only) must be the in-memory one whichever block it falls in."""
    x = random_array(6, (1, 2, 7, 6)) + 3.0
    options = {"ceil_mode": True, "count_include_pad": count_include_pad}
    expected = F.avg_pool2d(x, 3, 2, 1, **options)
    assert expected.shape[2] == 4
    result = F.avg_pool2d(da.from_array(x, chunks=(1, 1, rows, 4)), 3, 2, 1, **options)
    np.testing.assert_allclose(result.compute(scheduler="sync"), expected, rtol=1e-12)
    # a window made of padding and input rows only at the bottom edge gives a different mean
    # with the other count_include_pad: the test would see a wrong divisor
    other = F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=not count_include_pad)
    assert not np.allclose(other[:, :, -1], expected[:, :, -1])


@pytest.mark.parametrize("call", [
    lambda x: F.max_pool2d(x, 3, 2, 1, dilation=2, ceil_mode=True),
    lambda x: F.min_pool2d(x, (2, 3), (3, 1), ((1, 0), (0, 1)), ceil_mode=True),
    lambda x: F.avg_pool2d(x, 2),
    lambda x: F.pool2d(x, 3, 1, 0, "median"),
    lambda x: F.pool2d(x, 2, 1, 0, "lp"),
])
def test_pool_helpers_on_uneven_chunks(call):
    x = random_array(7, (3, 4, 15, 12))
    dx = da.from_array(x, chunks=(2, (1, 3), (1, 6, 2, 6), (5, 1, 6)))
    result = call(dx)
    assert result.chunks[1] == (1, 3)
    np.testing.assert_allclose(result.compute(scheduler="threads"), call(x), rtol=1e-12)


def test_activations_take_any_chunking_and_per_sample_ops_refuse_it():
    """Element-wise activations run between spatially chunked layers; ops whose output mixes a
    whole sample (linear, global pooling) still ask for a rechunk."""
    x = random_array(18, (2, 3, 8, 8))
    dx = da.from_array(x, chunks=(1, 2, 3, 5))
    for op in (F.relu, lambda a: F.leaky_relu(a, 0.2), lambda a: F.clip(a, -0.5, 0.5), F.silu, F.hardswish):
        result = op(dx)
        assert result.chunks == dx.chunks
        np.testing.assert_allclose(result.compute(scheduler="sync"), op(x), rtol=1e-12)
    with pytest.raises(ValueError, match=r"axis 1 .*rechunk"):
        F.global_avg_pool2d(dx)
    with pytest.raises(TypeError, match="integer dtype"):
        F.relu(dx.astype(np.int32))


# --- graph size, memory and laziness --------------------------------------------------------

def test_one_task_per_output_block_and_pieces_in_proportion():
    x = random_array(8, (2, 3, 40, 36))
    dx = da.from_array(x, chunks=(1, 3, 10, 9))
    weight = random_array(9, (4, 3, 3, 3))
    out = F.conv2d(dx, weight, padding=1)
    assert out.chunks[2:] == dx.chunks[2:]
    assert len(layer_keys(out, "cnnlab-conv2d-")) == out.npartitions == 2 * 4 * 4
    halo_tasks = len(layer_keys(out, "cnnlab-halo-conv2d-"))
    assert halo_tasks <= 9 * dx.npartitions  # at most the 3x3 neighbours' edges per chunk
    total = len(dict(out.__dask_graph__()))
    assert total <= 12 * dx.npartitions
    pooled = F.max_pool2d(F.relu(out), 2)
    assert len(layer_keys(pooled, "cnnlab-pool2d-")) == pooled.npartitions
    np.testing.assert_allclose(pooled.compute(), F.max_pool2d(F.relu(F.conv2d(x, weight, padding=1)), 2),
                               rtol=1e-12)


def test_no_block_reads_more_than_its_chunk_and_the_halo():
    x = random_array(10, (1, 2, 50, 47))
    dx = da.from_array(x, chunks=(1, 2, (12, 12, 2, 12, 12), 10))
    weight = random_array(11, (3, 2, 3, 4))
    seen = []

    def recording(block, *args, **kwargs):
        seen.append(block.shape)
        return CONV(block, *args, **kwargs)

    out = cdask.map_windows(recording, dx, weight, None, kernel_size=(3, 4), stride=2, padding=(1, 2),
                            dilation=(2, 1), out_channels=3)
    np.testing.assert_allclose(out.compute(scheduler="sync"),
                               F.conv2d(x, weight, stride=2, padding=(1, 2), dilation=(2, 1)), rtol=1e-12)
    assert len(seen) == out.npartitions
    # chunk 12 rows (the 2-row chunk is merged) + dilated reach 4 + stride 2; 10 columns + reach 3 + 2
    assert max(s[2] for s in seen) <= 14 + 4 + 1 and max(s[3] for s in seen) <= 10 + 3 + 1


def lazy_bomb(shape, chunks):
    def explode(block):
        raise AssertionError("a chunk was computed")
    return da.zeros(shape, chunks=chunks).map_blocks(explode, dtype=np.float64)


def test_nothing_is_computed_before_compute():
    bomb = lazy_bomb((2, 3, 30, 30), (1, 1, 7, 8))
    out = F.avg_pool2d(F.conv2d(bomb, np.ones((4, 3, 3, 3)), stride=2, padding="same_upper"), 3, 2, 1,
                       ceil_mode=True)
    assert out.shape == (2, 4, 8, 8)
    with pytest.raises(AssertionError, match="a chunk was computed"):
        out.compute(scheduler="sync")


def test_threads_and_a_process_cluster():
    distributed = pytest.importorskip("dask.distributed")
    x = random_array(12, (2, 2, 24, 20))
    dx = da.from_array(x, chunks=(1, 2, 7, 6))
    weight = random_array(13, (3, 2, 3, 3))
    out = F.max_pool2d(F.conv2d(dx, weight, padding=1), 3, 2, 1, ceil_mode=True)
    expected = F.max_pool2d(F.conv2d(x, weight, padding=1), 3, 2, 1, ceil_mode=True)
    np.testing.assert_allclose(out.compute(scheduler="threads", num_workers=2), expected, rtol=1e-12)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        np.testing.assert_allclose(client.compute(out).result(), expected, rtol=1e-12)


# --- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda x: F.conv2d(x.astype(np.uint8), np.ones((1, 3, 3, 3))),
    lambda x: F.conv2d(x.astype(np.float16), np.ones((1, 3, 3, 3))),
    lambda x: F.conv2d(x, np.ones((1, 3, 3, 3), np.float32)),
    lambda x: F.conv2d(x[0, 0], np.ones((1, 3, 3, 3))),
    lambda x: F.conv2d(x, np.ones((1, 2, 3, 3))),
    lambda x: F.conv2d(x, np.ones((2, 3, 3, 3)), np.ones(3)),
    lambda x: F.conv2d(x, np.ones((1, 3, 3, 3)), stride=2, padding="same"),
    lambda x: F.conv2d(x, np.ones((1, 3, 3, 3)), padding=(1, 2, 3, 4)),
    lambda x: F.conv2d(x, np.ones((1, 3, 9, 3))),
    lambda x: F.conv2d(x, np.ones((1, 3, 3, 3)), stride=0),
    lambda x: F.conv2d(x, np.ones((1, 3, 3, 3)), activation="swish"),
    lambda x: F.pool2d(x, 3, padding=2),
    lambda x: F.pool2d(x, 3, padding=1, mode="median"),
    lambda x: F.pool2d(x, 2, mode="lp", ceil_mode=True),
    lambda x: F.avg_pool2d(x, 2, dilation=2),
    lambda x: F.max_pool2d(x, 9),
    lambda x: F.max_pool2d(x, 2, padding="same"),
    lambda x: F.pool2d(x, 2, mode="mean"),
    lambda x: F.max_pool2d(x, 2.0),
])
def test_errors_are_the_in_memory_ones(call):
    x = np.zeros((2, 3, 8, 7))
    with pytest.raises((ValueError, TypeError)) as in_memory:
        call(x)
    with pytest.raises(in_memory.type) as chunked:
        call(da.from_array(x, chunks=(1, 3, 4, 4)))
    assert str(chunked.value) == str(in_memory.value)


def test_dask_specific_errors():
    x = da.zeros((2, 3, 8, 8), chunks=(1, 3, 4, 4))
    with pytest.raises(TypeError, match="weight must be an in-memory array"):
        F.conv2d(x, da.ones((1, 3, 3, 3), chunks=1))
    with pytest.raises(TypeError, match="residual"):
        F.conv2d(x, np.ones((1, 3, 3, 3)), residual=np.zeros((2, 1, 6, 6)))
    unknown = x[x[:, 0, 0, 0] >= 0]  # a boolean selection: unknown batch sizes
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        F.max_pool2d(unknown, 2)
    with pytest.raises(ValueError, match="device must be"):
        cdask.map_windows(POOL, x, 2, kernel_size=2, device="tpu")
    with pytest.raises(ValueError, match="kernel_size=9"):
        cdask.map_windows(POOL, x, 9, kernel_size=9)


# --- chunks on the GPU (the CUDA simulator where there is no GPU) ---------------------------

@pytest.fixture
def device_copies(monkeypatch):
    """Count the copies to the device the chunks' tasks make."""
    from cnnlab import device

    counter = {"copies": 0}
    original = device.to_device

    def counting(a):
        counter["copies"] += 1
        return original(a)

    monkeypatch.setattr(device, "to_device", counting)
    return counter


@pytest.mark.usefixtures("small_cuda_launches")
def test_weights_on_the_gpu_send_the_chunks_there(device_copies):
    x = random_array(14, (1, 2, 9, 7)).astype(np.float32)
    weight, bias = random_array(15, (2, 2, 3, 3)).astype(np.float32), np.float32([0.5, -1])
    expected = F.conv2d(x, weight, bias, padding=1)
    on_gpu = [cnnlab.to_device(a) for a in (weight, bias)]
    for chunks in [(1, 2, 5, 4), (1, 2, 9, 7)]:  # across the image, and batch chunks only
        device_copies["copies"] = 0
        result = F.conv2d(da.from_array(x, chunks=chunks), *on_gpu, padding=1)
        out = result.compute(scheduler="sync")
        assert type(out) is np.ndarray and device_copies["copies"] >= 3 * result.npartitions
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="bias is on the cpu but weight is on the cuda"):
        F.conv2d(da.from_array(x, chunks=(1, 2, 5, 4)), on_gpu[0], bias)


@pytest.mark.usefixtures("small_cuda_launches")
def test_map_windows_map_batches_and_filters_on_the_device(device_copies):
    x = random_array(16, (2, 1, 8, 6))
    seen = []

    def pool_recording(block, *args, **kwargs):
        seen.append(is_gpu_array(block))
        return POOL(block, *args, **kwargs)

    pooled = cdask.map_windows(pool_recording, da.from_array(x, chunks=(1, 1, 4, 3)), 3, kernel_size=3, stride=2,
                               padding=1, ceil_mode=True, mode="avg", count_include_pad=False, device="cuda")
    np.testing.assert_allclose(pooled.compute(scheduler="sync"),
                               F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False), rtol=1e-12)
    assert seen and all(seen)
    scaled = cdask.map_batches(F.relu, da.from_array(x, chunks=(1, 1, 8, 6)), device="cuda")
    np.testing.assert_array_equal(scaled.compute(scheduler="sync"), F.relu(x))
    image = x[0, 0]
    device_copies["copies"] = 0
    edges = cdask.correlate2d(da.from_array(image, chunks=(4, 3)), cnnlab.to_device(np.ones((3, 3))), "same",
                              "symm")
    np.testing.assert_allclose(edges.compute(scheduler="sync"),
                               cnnlab.filters.correlate2d(image, np.ones((3, 3)), "same", "symm"), rtol=1e-12)
    assert device_copies["copies"] >= edges.npartitions


@pytest.mark.usefixtures("small_cuda_launches")
def test_model_on_the_gpu_predicts_a_dask_batch():
    from cnnlab import layers as L

    model = cnnlab.Sequential([L.Conv2D(1, 2, 3, padding=1, seed=0), L.ReLU(), L.Flatten(),
                               L.Dense(2 * 6 * 6, 3, seed=1), L.Softmax()], input_shape=(1, 6, 6))
    x = random_array(17, (5, 1, 6, 6)).astype(np.float32)
    expected = model.predict_proba(x)
    model.to("cuda")
    probabilities = model.predict_proba(da.from_array(x, chunks=(2, 1, 6, 6))).compute(scheduler="sync")
    assert type(probabilities) is np.ndarray
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-6)
    labels = model.predict(da.from_array(x, chunks=(3, 1, 6, 6))).compute(scheduler="sync")
    np.testing.assert_array_equal(labels, expected.argmax(axis=1))
