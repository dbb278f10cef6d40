"""conv2d against the loop definition and against scipy.signal.correlate2d."""

import numpy as np
from hypothesis import given

import cnnlab
import cnnlab.functional as F
from cnnlab import config
from cnnlab.shapes import resolve_padding

import naive
from strategies import arrays, conv_geometries


def make_problem(g, seed=0):
    rng = np.random.default_rng(seed)
    x = arrays(rng, (g["samples"], g["channels"], g["height"], g["width"]), g["dtype"])
    weight = arrays(rng, (g["filters"], g["channels"] // g["groups"]) + g["kernel"], g["dtype"])
    bias = arrays(rng, (g["filters"],), g["dtype"]) if g["bias"] else None
    return x, weight, bias


def tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


@given(conv_geometries())
def test_conv2d_matches_scipy_and_loops(g):
    x, weight, bias = make_problem(g)
    out = F.conv2d(x, weight, bias, g["stride"], g["padding"], g["dilation"], g["groups"])
    pads = resolve_padding(g["padding"], g["kernel"], g["stride"], g["dilation"])
    args = (x, weight, bias, g["stride"], pads, g["dilation"], g["groups"])
    reference = naive.conv2d_scipy(*args)
    assert out.dtype == g["dtype"]
    np.testing.assert_allclose(out, reference, **tolerance(g["dtype"]))
    np.testing.assert_allclose(naive.conv2d_loops(*args), reference, rtol=1e-10, atol=1e-10)


@given(conv_geometries())
def test_conv2d_output_shape_is_output_size(g):
    x, weight, bias = make_problem(g)
    out = F.conv2d(x, weight, bias, g["stride"], g["padding"], g["dilation"], g["groups"])
    padding = g["padding"]
    pads = padding if isinstance(padding, tuple) else (padding, padding)
    expected = tuple(
        cnnlab.output_size(size, k, s, p, d)
        for size, k, s, p, d in zip((g["height"], g["width"]), g["kernel"], g["stride"], pads, g["dilation"])
    )
    assert out.shape == (g["samples"], g["filters"]) + expected


def test_textbook_5x5_input_3x3_kernel():
    image = np.array([[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3],
                      [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]], dtype=np.float64)
    kernel = np.array([[0, 1, 2], [2, 2, 0], [0, 1, 2]], dtype=np.float64)
    out = F.conv2d(image[None, None], kernel[None, None])
    np.testing.assert_array_equal(out[0, 0], [[12, 12, 17], [10, 17, 19], [9, 6, 14]])


def test_textbook_3x3_kernel_on_5x5_gives_nine_positions_and_padding_keeps_size():
    x = np.random.default_rng(1).random((1, 1, 5, 5))
    w = np.ones((1, 1, 3, 3))
    assert F.conv2d(x, w).shape == (1, 1, 3, 3)
    assert F.conv2d(x, w, padding=1).shape == (1, 1, 5, 5)
    assert F.conv2d(x, w, padding="same").shape == (1, 1, 5, 5)


def test_output_depth_is_number_of_filters():
    x = np.ones((2, 3, 8, 8), dtype=np.float32)
    w = np.ones((7, 3, 3, 3), dtype=np.float32)
    assert F.conv2d(x, w).shape == (2, 7, 6, 6)


def test_same_padding_even_kernel_splits_like_pytorch():
    """Even kernel: total padding 1 goes after (right/bottom), as torch's padding='same'."""
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    w = np.zeros((1, 1, 2, 2))
    w[0, 0, 0, 0] = 1.0  # picks the top-left tap: output (i, j) reads input (i, j)
    np.testing.assert_array_equal(F.conv2d(x, w, padding="same")[0, 0], x[0, 0])


def test_chunked_rows_give_the_same_result(monkeypatch):
    """A tiny im2col budget forces row blocks of one output row; the result is unchanged."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 11, 9))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    whole = F.conv2d(x, w, b, stride=(2, 1), padding=1, groups=2)
    monkeypatch.setattr(config, "IM2COL_MAX_BYTES", 1)
    blocked = F.conv2d(x, w, b, stride=(2, 1), padding=1, groups=2)
    np.testing.assert_allclose(blocked, whole, rtol=1e-12, atol=1e-12)


def test_non_contiguous_input_is_accepted():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 8, 3)).transpose(0, 3, 1, 2)  # NHWC memory seen as NCHW
    w = rng.standard_normal((4, 3, 3, 3))
    np.testing.assert_allclose(F.conv2d(x, w), F.conv2d(np.ascontiguousarray(x), w))


def test_float32_large_batch_matches_float64():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 8, 20, 20))
    w = rng.standard_normal((12, 8, 5, 5))
    exact = F.conv2d(x, w, padding=2)
    approx = F.conv2d(x.astype(np.float32), w.astype(np.float32), padding=2)
    np.testing.assert_allclose(approx, exact, rtol=1e-4, atol=1e-4)


def test_blas_thread_count_is_restored():
    from threadpoolctl import threadpool_info

    before = [(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
    F.conv2d(np.ones((2, 1, 5, 5)), np.ones((1, 1, 3, 3)))
    after = [(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
    assert before == after
