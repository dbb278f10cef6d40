"""Max and min pooling that saves where each value came from (``return_indices``), and the
backward that scatters through those indices: against loops, the backward that searches the
windows again, finite differences and the GPU twin, with ties, NaN, padding, dilation (windows
entirely in the padding included) and ceil_mode."""

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import pool_option_geometries

import cnnlab
import cnnlab.functional as F
from cnnlab import layers as L


def options(g):
    return dict(kernel_size=g["kernel"], stride=g["stride"], padding=g["padding"], mode=g["mode"],
                dilation=g["dilation"], ceil_mode=g["ceil_mode"])


def values(rng, shape, dtype, kind):
    """``'distinct'`` values well apart (a choice does not flip under a finite difference),
    ``'ties'`` from {-1, 0, 1} (many equal maxima), or ``'nan'``: ties with some NaN."""
    size = int(np.prod(shape))
    if kind == "distinct":
        x = (rng.permutation(size).reshape(shape) - size / 2) * 0.1 + 0.05
    else:
        x = rng.integers(-1, 2, shape).astype(np.float64)
        if kind == "nan":
            x[rng.random(shape) < 0.2] = np.nan
    return x.astype(dtype)


def problems(max_size=5):
    return st.tuples(pool_option_geometries(modes=("max", "min"), max_size=max_size),
                     st.sampled_from(["distinct", "ties", "nan"]))


# ----------------------------------------------------------------------------- properties


@given(problems())
def test_indices_match_the_reference_and_the_values(problem):
    g, kind = problem
    rng = np.random.default_rng(0)
    x = values(rng, (g["samples"], g["channels"], g["height"], g["width"]), g["dtype"], kind)
    out, indices = F.pool2d(x, **options(g), return_indices=True)
    expected_out, expected_indices = naive.pool2d_argmax(x, g["kernel"], g["stride"], g["padding"], g["mode"],
                                                         g["dilation"], g["ceil_mode"])
    assert indices.dtype == np.int64 and indices.shape == out.shape
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(out, expected_out)  # NaN where NaN
    np.testing.assert_array_equal(out, F.pool2d(x, **options(g)))  # the inference forward agrees
    # every index holds its value, and -1 only for a window without an input tap (infinite)
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    picked = np.take_along_axis(flat, np.maximum(indices, 0).reshape(flat.shape[:2] + (-1,)), axis=2)
    inside = indices.reshape(picked.shape) >= 0
    np.testing.assert_array_equal(picked[inside], out.reshape(picked.shape)[inside])
    assert np.all(np.isinf(out.reshape(picked.shape)[~inside]))


@given(problems())
def test_backward_through_indices_equals_the_searching_backward(problem):
    g, kind = problem
    rng = np.random.default_rng(1)
    x = values(rng, (g["samples"], g["channels"], g["height"], g["width"]), g["dtype"], kind)
    arguments = options(g)
    out, indices = F.pool2d(x, **arguments, return_indices=True)
    upstream = rng.standard_normal(out.shape).astype(g["dtype"])
    through_indices = F.pool2d_backward(x, out, upstream, **arguments, indices=indices)
    assert through_indices.dtype == x.dtype and through_indices.shape == x.shape
    searched = F.pool2d_backward(x, out, upstream, **arguments)
    # both add the windows' gradients in the same (output) order: equal to the last bit
    np.testing.assert_array_equal(through_indices, searched)
    tol = 1e-6 if g["dtype"] == np.float32 else 1e-12
    np.testing.assert_allclose(through_indices, naive.scatter_through_indices(upstream, indices, x.shape),
                               rtol=tol, atol=tol)
    # the input's shape is all the backward through indices needs, and ``out`` may be left out
    np.testing.assert_array_equal(F.pool2d_backward(x.shape, None, upstream, **arguments, indices=indices),
                                  through_indices)


def relu_pool_check(x, arguments):
    """Max pooling of ``relu(x)`` with ``positive_only``: the same output, the indices of the
    picks that are not positive -1, and the backward through them the gradient with respect to
    ``x``, bitwise that of the ReLU's backward after the plain scatter."""
    relu = F.relu(x)
    out, indices = F.pool2d(relu, **arguments, return_indices=True)
    masked_out, masked = F.pool2d(relu, **arguments, return_indices=True, positive_only=True)
    np.testing.assert_array_equal(masked_out, out)
    np.testing.assert_array_equal(masked, np.where(out > 0, indices, -1))
    upstream = np.random.default_rng(7).standard_normal(out.shape).astype(x.dtype)
    plain = F.relu_backward(x, F.pool2d_backward(x.shape, None, upstream, **arguments, indices=indices))
    np.testing.assert_array_equal(F.pool2d_backward(x.shape, None, upstream, **arguments, indices=masked), plain)
    return masked


@given(problems())
def test_positive_only_indices_apply_the_mask_of_the_relu_before(problem):
    g, kind = problem
    g["mode"] = "max"
    x = values(np.random.default_rng(8), (g["samples"], g["channels"], g["height"], g["width"]), g["dtype"], kind)
    relu_pool_check(x, options(g))


@settings(max_examples=20)
@given(st.integers(1, 3), st.integers(2, 9), st.integers(2, 9), st.sampled_from([np.float32, np.float64]),
       st.sampled_from(["distinct", "ties", "nan"]))
def test_positive_only_in_two_by_two_windows(channels, height, width, dtype, kind):
    x = values(np.random.default_rng(height * 10 + width), (2, channels, height, width), dtype, kind)
    masked = relu_pool_check(x, dict(kernel_size=2, stride=2))
    if kind == "ties":  # windows of zeros and -1s: their gradient goes nowhere
        assert np.any(masked == -1)


def finite_weighted_sum(out, upstream):
    return float(np.sum(np.where(np.isfinite(out), out * upstream, 0.0)))


@settings(max_examples=15)
@given(pool_option_geometries(modes=("max", "min"), max_size=4))
def test_backward_through_indices_matches_finite_differences(g):
    rng = np.random.default_rng(2)
    x = values(rng, (g["samples"], g["channels"], g["height"], g["width"]), np.float64, "distinct")
    arguments = options(g)
    out, indices = F.pool2d(x, **arguments, return_indices=True)
    upstream = rng.standard_normal(out.shape)
    grad_x = F.pool2d_backward(x.shape, None, upstream, **arguments, indices=indices)
    expected = naive.numeric_gradient(lambda: finite_weighted_sum(F.pool2d(x, **arguments), upstream), x, eps=1e-4)
    np.testing.assert_allclose(grad_x, expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- worked examples


@settings(max_examples=40)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(2, 9), st.integers(2, 9), st.sampled_from(["max", "min"]),
       st.sampled_from([np.float32, np.float64]), st.sampled_from(["distinct", "ties", "nan"]), st.booleans())
def test_two_by_two_windows_at_stride_two(samples, channels, height, width, mode, dtype, kind, ceil_mode):
    """The textbook pooling has a kernel of its own (odd sizes leave a row or column out, or,
    with ceil_mode, take the general kernel's partial windows): the same values and indices."""
    rng = np.random.default_rng(height * 10 + width)
    x = values(rng, (samples, channels, height, width), dtype, kind)
    out, indices = F.pool2d(x, 2, 2, 0, mode, ceil_mode=ceil_mode, return_indices=True)
    expected_out, expected_indices = naive.pool2d_argmax(x, (2, 2), (2, 2), ((0, 0), (0, 0)), mode,
                                                         ceil_mode=ceil_mode)
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_array_equal(F.pool2d(x, 2, 2, 0, mode, ceil_mode=ceil_mode), expected_out)


def test_textbook_example_and_first_of_equal_maxima():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    out, indices = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(out[0, 0], [[5, 7], [13, 15]])
    np.testing.assert_array_equal(indices[0, 0], [[5, 7], [13, 15]])  # as torch's max_pool2d
    ones = np.ones((1, 1, 4, 4))
    _, indices = F.max_pool2d(ones, 2, return_indices=True)
    np.testing.assert_array_equal(indices[0, 0], [[0, 2], [8, 10]])  # each window's first tap
    _, indices = F.min_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(indices[0, 0], [[0, 2], [8, 10]])


def test_overlapping_windows_that_pick_the_same_element_sum_their_gradients():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 5.0  # the maximum of all four 2x2 windows (stride 1)
    out, indices = F.max_pool2d(x, 2, 1, return_indices=True)
    np.testing.assert_array_equal(indices[0, 0], [[4, 4], [4, 4]])
    grad = F.pool2d_backward(x, out, np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), 2, 1, indices=indices)
    assert grad[0, 0, 1, 1] == 10.0 and np.count_nonzero(grad) == 1


def test_nan_is_picked_first():
    x = np.array([[[[1.0, np.nan], [np.nan, 7.0]]]])
    for pool in (F.max_pool2d, F.min_pool2d):
        out, indices = pool(x, 2, return_indices=True)
        assert np.isnan(out[0, 0, 0, 0]) and indices[0, 0, 0, 0] == 1


@pytest.mark.parametrize("pool, infinity", [(F.max_pool2d, -np.inf), (F.min_pool2d, np.inf)])
def test_dilated_window_entirely_in_the_padding_has_index_minus_one(pool, infinity):
    # 1x1 input, kernel 2, padding 1, dilation 2: the one window's taps (-1 and 1 on both axes)
    # all fall in the padding: no element, no gradient
    x = np.array([[[[3.0]]]])
    out, indices = pool(x, 2, 1, 1, dilation=2, return_indices=True)
    assert out[0, 0, 0, 0] == infinity and indices[0, 0, 0, 0] == -1
    mode = "max" if pool is F.max_pool2d else "min"
    grad = F.pool2d_backward(x, out, np.ones_like(out), 2, 1, 1, mode, dilation=2, indices=indices)
    assert grad[0, 0, 0, 0] == 0
    # 1x3 input, kernel (2, 1), dilation (2, 1), padding (1, 0): a whole row of windows (inside
    # the plane horizontally, so pooled row-wise) whose taps all miss the input
    x = np.arange(3.0).reshape(1, 1, 1, 3)
    out, indices = pool(x, (2, 1), 1, (1, 0), dilation=(2, 1), return_indices=True)
    expected_out, expected_indices = naive.pool2d_argmax(x, (2, 1), (1, 1), ((1, 1), (0, 0)), mode, (2, 1))
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_array_equal(indices, [[[[-1, -1, -1]]]])


def test_ceil_mode_partial_windows():
    x = np.arange(25, dtype=np.float32).reshape(1, 1, 5, 5)
    out, indices = F.max_pool2d(x, 2, 2, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(indices[0, 0], [[6, 8, 9], [16, 18, 19], [21, 23, 24]])
    np.testing.assert_array_equal(out[0, 0], indices[0, 0])  # x[k] == k


def test_without_return_indices_pool2d_returns_one_array():
    x = np.ones((1, 1, 2, 2), np.float32)
    assert isinstance(F.pool2d(x, 2), np.ndarray)
    assert isinstance(F.max_pool2d(x, 2, return_indices=False), np.ndarray)
    assert isinstance(F.pool2d(x, 2, return_indices=True), tuple)


# ----------------------------------------------------------------------------- layers


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer", [L.MaxPool2D(3, 2, padding=1, ceil_mode=True), L.MinPool2D((2, 3), (1, 2)),
                                   L.MaxPool2D(2, 1, padding=1, dilation=2)])
def test_layers_save_indices_and_give_the_same_gradient(layer, dtype):
    rng = np.random.default_rng(3)
    x = values(rng, (2, 3, 7, 6), dtype, "ties")
    out = layer.forward(x, training=True)
    shape, _, indices = layer.saved
    assert shape == x.shape and indices.dtype == np.int64 and indices.shape == out.shape
    assert not any(a is x for a in layer.saved)  # the input is not kept alive
    upstream = rng.standard_normal(out.shape).astype(dtype)
    arguments = layer._arguments(x.shape)
    np.testing.assert_array_equal(out, F.pool2d(x, **arguments))
    np.testing.assert_array_equal(layer.backward(upstream), F.pool2d_backward(x, out, upstream, **arguments))


def test_layers_of_other_modes_keep_their_input():
    x = np.ones((1, 1, 4, 4), np.float32)
    for layer in (L.AvgPool2D(2), L.MedianPool2D(2), L.LPPool2D(2)):
        layer.forward(x, training=True)
        assert layer.saved[0] is x and layer.saved[2] is None
        np.testing.assert_array_equal(layer.backward(np.ones((1, 1, 2, 2), np.float32)).shape, x.shape)


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("mode", ["avg", "median", "lp"])
def test_return_indices_only_for_max_and_min(mode):
    with pytest.raises(ValueError, match="return_indices"):
        F.pool2d(np.ones((1, 1, 4, 4)), 2, mode=mode, return_indices=True)


def test_return_indices_must_be_a_bool():
    with pytest.raises(TypeError, match="return_indices"):
        F.pool2d(np.ones((1, 1, 4, 4)), 2, return_indices="yes")


def test_positive_only_needs_return_indices_and_max_and_a_bool():
    x = np.ones((1, 1, 4, 4))
    with pytest.raises(ValueError, match="positive_only.*return_indices"):
        F.pool2d(x, 2, positive_only=True)
    with pytest.raises(ValueError, match="positive_only.*'max'"):
        F.pool2d(x, 2, mode="min", return_indices=True, positive_only=True)
    with pytest.raises(TypeError, match="positive_only"):
        F.pool2d(x, 2, return_indices=True, positive_only="yes")
    with pytest.raises(ValueError, match="positive_only.*training"):
        L.MaxPool2D(2).forward(x, positive_only=True)
    with pytest.raises(ValueError, match="positive_only"):
        L.AvgPool2D(2).forward(x, training=True, positive_only=True)


def test_max_and_min_pool2d_pass_positive_only_on():
    """``max_pool2d`` and ``min_pool2d`` hand ``positive_only`` to :func:`pool2d`: the same
    indices as ``pool2d``'s, the same refusals."""
    x = np.array([[[[-1.0, -2.0, 3.0, 0.5], [-3.0, -4.0, 1.0, 2.0]]]])
    expected = F.pool2d(x, 2, return_indices=True, positive_only=True)[1]
    np.testing.assert_array_equal(expected.ravel(), [-1, 2])
    np.testing.assert_array_equal(F.max_pool2d(x, 2, return_indices=True, positive_only=True)[1], expected)
    with pytest.raises(ValueError, match="positive_only.*return_indices"):
        F.max_pool2d(x, 2, positive_only=True)
    with pytest.raises(ValueError, match="positive_only.*'max'"):
        F.min_pool2d(x, 2, return_indices=True, positive_only=True)


def test_return_indices_refuses_a_dask_array():
    da = pytest.importorskip("dask.array")
    with pytest.raises(TypeError, match="dask"):
        F.max_pool2d(da.ones((2, 1, 4, 4), chunks=(1, 1, 4, 4)), 2, return_indices=True)


def good():
    x = np.random.default_rng(4).standard_normal((2, 3, 4, 4))
    out, indices = F.max_pool2d(x, 2, return_indices=True)
    return x, out, indices


@pytest.mark.parametrize("change, error, words", [
    (lambda i: i.astype(np.int32), TypeError, "indices must have dtype int64"),
    (lambda i: i.astype(np.float64), TypeError, "indices must have dtype int64"),
    (lambda i: "indices", TypeError, "indices"),
    (lambda i: i[:, :, :1], ValueError, r"indices must have shape \(2, 3, 2, 2\)"),
    (lambda i: i.reshape(-1), ValueError, "indices must have shape"),
    (lambda i: i + 16, ValueError, r"indices must lie in -1 \.\. 15"),
    (lambda i: i - 10, ValueError, "indices must lie in"),
])
def test_bad_indices(change, error, words):
    x, out, indices = good()
    with pytest.raises(error, match=words):
        F.pool2d_backward(x, out, out, 2, indices=change(indices))


@pytest.mark.parametrize("mode", ["avg", "median", "lp"])
def test_indices_only_for_max_and_min(mode):
    x, out, indices = good()
    with pytest.raises(ValueError, match="indices"):
        F.pool2d_backward(x, out, out, 2, mode=mode, indices=indices)


@pytest.mark.parametrize("shape, error", [((2, 3, 4), ValueError), ((2, 3, 4, 0), ValueError),
                                          ((2, 3, 4.0, 4), TypeError)])
def test_bad_input_shape_with_indices(shape, error):
    _, out, indices = good()
    with pytest.raises(error, match="x"):
        F.pool2d_backward(shape, None, out, 2, indices=indices)


def test_backward_checks_grad_out_and_out_with_indices():
    x, out, indices = good()
    with pytest.raises(ValueError, match="grad_out"):
        F.pool2d_backward(x, out, out[:, :, :1], 2, indices=indices)
    with pytest.raises(ValueError, match="out"):
        F.pool2d_backward(x, out[:1], out, 2, indices=indices)
    with pytest.raises(TypeError, match="grad_out"):
        F.pool2d_backward(x, None, out.astype(np.float32), 2, indices=indices)


# ----------------------------------------------------------------------------- GPU twin


@pytest.mark.usefixtures("small_cuda_launches")
@settings(max_examples=8)
@given(pool_option_geometries(modes=("max", "min"), max_size=3), st.sampled_from(["distinct", "ties", "nan"]))
def test_gpu_indices_and_backward_equal_cpu(g, kind):
    from cnnlab.device import is_gpu_array

    rng = np.random.default_rng(5)
    x = values(rng, (1, g["channels"], g["height"], g["width"]), g["dtype"], kind)
    arguments = options(g)
    out, indices = F.pool2d(x, **arguments, return_indices=True)
    gpu_out, gpu_indices = F.pool2d(cnnlab.to_device(x), **arguments, return_indices=True)
    assert is_gpu_array(gpu_out) and is_gpu_array(gpu_indices)
    np.testing.assert_array_equal(cnnlab.to_host(gpu_indices), indices)
    np.testing.assert_array_equal(cnnlab.to_host(gpu_out), out)
    upstream = rng.standard_normal(out.shape).astype(g["dtype"])
    gpu_grad = F.pool2d_backward(x.shape, None, cnnlab.to_device(upstream), **arguments, indices=gpu_indices)
    assert is_gpu_array(gpu_grad)
    host = cnnlab.to_host(gpu_grad)
    assert host.dtype == x.dtype and host.shape == x.shape
    tol = 1e-6 if g["dtype"] == np.float32 else 1e-12
    np.testing.assert_allclose(host, F.pool2d_backward(x.shape, None, upstream, **arguments, indices=indices),
                               rtol=tol, atol=tol)


@pytest.mark.usefixtures("small_cuda_launches")
@settings(max_examples=6)
@given(pool_option_geometries(modes=("max",), max_size=3))
def test_gpu_positive_only_indices_equal_cpu(g):
    x = values(np.random.default_rng(9), (1, g["channels"], g["height"], g["width"]), g["dtype"], "ties")
    arguments = options(g)
    out, indices = F.pool2d(x, **arguments, return_indices=True, positive_only=True)
    gpu_out, gpu_indices = F.pool2d(cnnlab.to_device(x), **arguments, return_indices=True, positive_only=True)
    np.testing.assert_array_equal(cnnlab.to_host(gpu_out), out)
    np.testing.assert_array_equal(cnnlab.to_host(gpu_indices), indices)


@pytest.mark.usefixtures("small_cuda_launches")
def test_gpu_window_in_the_padding_and_layer():
    x = cnnlab.to_device(np.array([[[[3.0]]]]))
    out, indices = F.max_pool2d(x, 2, 1, 1, dilation=2, return_indices=True)
    assert cnnlab.to_host(indices)[0, 0, 0, 0] == -1 and cnnlab.to_host(out)[0, 0, 0, 0] == -np.inf
    grad = F.pool2d_backward(x, out, cnnlab.to_device(np.ones((1, 1, 1, 1))), 2, 1, 1, dilation=2,
                             indices=indices)
    assert cnnlab.to_host(grad)[0, 0, 0, 0] == 0
    host = np.random.default_rng(6).standard_normal((2, 2, 5, 5)).astype(np.float32)
    layer = L.MaxPool2D(2, 1)
    layer.forward(cnnlab.to_device(host), training=True)
    upstream = np.ones((2, 2, 4, 4), np.float32)
    np.testing.assert_array_equal(cnnlab.to_host(layer.backward(cnnlab.to_device(upstream))),
                                  F.pool2d_backward(host, F.max_pool2d(host, 2, 1), upstream, 2, 1))


@pytest.mark.usefixtures("small_cuda_launches")
def test_indices_on_another_device_are_refused():
    x, out, indices = good()
    with pytest.raises(TypeError, match="indices"):
        F.pool2d_backward(cnnlab.to_device(x), None, cnnlab.to_device(out), 2, indices=indices)


@pytest.mark.parametrize("plane", [0, -1])
def test_an_index_out_of_range_in_any_plane_is_refused_when_threads_share_the_planes(plane):
    """The CPU scatter counts the indices outside -1 .. H*W-1 as it reads them (no pass over
    the indices first): one wrong index in the first or the last plane, with the planes shared
    by two threads, is refused naming the range."""
    from cnnlab import config

    x = np.random.default_rng(6).standard_normal((8, 16, 32, 32)).astype(np.float32)
    out, indices = F.max_pool2d(x, 2, return_indices=True)
    wrong = indices.copy()
    wrong.reshape(-1, 256)[plane, 3] = 1024
    config.PARALLEL_MIN_WORK = 1
    try:
        with pytest.raises(ValueError, match=r"indices must lie in -1 \.\. 1023 .*\(32, 32\).* got 0 \.\. 1024"):
            F.pool2d_backward(x, out, out, 2, indices=wrong)
        np.testing.assert_array_equal(F.pool2d_backward(x, out, out, 2, indices=indices),
                                      F.pool2d_backward(x, out, out, 2))
    finally:
        config.reset()
