"""Pooling options of PyTorch and ONNX networks: ceil_mode, count_include_pad, dilation and
padding that differs on the four sides, against loops, finite differences, the GPU twin and
values worked out by hand with PyTorch's rules."""

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import arrays, pool_option_geometries

import cnnlab
import cnnlab.functional as F
from cnnlab import layers as L


def options(g):
    return dict(kernel_size=g["kernel"], stride=g["stride"], padding=g["padding"], mode=g["mode"],
                dilation=g["dilation"], ceil_mode=g["ceil_mode"], count_include_pad=g["count_include_pad"])


def distinct_values(rng, shape, dtype=np.float64):
    """Values well apart, of both signs: a max/min choice does not flip under a finite difference."""
    size = int(np.prod(shape))
    x = rng.permutation(size).reshape(shape) * 0.1 + 0.05
    return (x * np.where(rng.random(shape) < 0.5, -1, 1)).astype(dtype)


def finite_weighted_sum(out, upstream):
    """``sum(out * upstream)`` over the finite outputs (a dilated window lying entirely in the
    padding gives -inf or +inf, and no gradient)."""
    return float(np.sum(np.where(np.isfinite(out), out * upstream, 0.0)))


# ----------------------------------------------------------------------------- properties


@pytest.mark.parametrize("mode", ["max", "avg", "min"])
@given(data=st.data())
def test_pool2d_options_match_reference_and_output_size(mode, data):
    g = data.draw(pool_option_geometries(modes=(mode,)))
    x = arrays(np.random.default_rng(0), (g["samples"], g["channels"], g["height"], g["width"]), g["dtype"])
    out = F.pool2d(x, **options(g))
    (top, bottom), (left, right) = g["padding"]
    reference = naive.pool2d_options(x, g["kernel"], g["stride"], g["padding"], g["mode"], g["dilation"],
                                     g["ceil_mode"], g["count_include_pad"])
    assert out.dtype == g["dtype"]
    tol = 1e-5 if g["dtype"] == np.float32 else 1e-12
    np.testing.assert_allclose(out, reference, rtol=tol, atol=tol)
    expected = tuple(cnnlab.output_size(size, k, s, sides, d, ceil_mode=g["ceil_mode"]) for size, k, s, sides, d
                     in zip((g["height"], g["width"]), g["kernel"], g["stride"], g["padding"], g["dilation"]))
    assert out.shape == (g["samples"], g["channels"]) + expected


@pytest.mark.parametrize("mode", ["max", "avg"])
def test_small_geometries_one_by_one_match_reference(mode):
    """Every small geometry in turn, so that each combination of padding side, ceil_mode and
    count_include_pad (avg) or dilation (max) meets every partial last window."""
    import itertools

    x = np.random.default_rng(5).standard_normal((1, 1, 6, 7))
    choices = itertools.product((3, 4, 5), (2, 3), (1, 2, 3), itertools.product((0, 1), (0, 1)), (False, True),
                                (False, True) if mode == "avg" else (1, 2))
    for size, k, s, (before, after), ceil_mode, option in choices:
        if (k - 1) * (option if mode == "max" else 1) + 1 > size + before + after:
            continue
        extra = dict(count_include_pad=option) if mode == "avg" else dict(dilation=option)
        sides = ((before, after), (after, before))
        window = x[:, :, :size, :size + 1]
        out = F.pool2d(window, k, s, sides, mode, ceil_mode=ceil_mode, **extra)
        reference = naive.pool2d_options(window, (k, k), (s, s), sides, mode, (extra.get("dilation", 1),) * 2,
                                         ceil_mode, extra.get("count_include_pad", True))
        np.testing.assert_allclose(out, reference, rtol=1e-12, atol=1e-12,
                                   err_msg=f"size={size} k={k} s={s} sides={sides} ceil_mode={ceil_mode} {extra}")


@given(size=st.integers(1, 40), kernel=st.integers(1, 7), stride=st.integers(1, 4),
       before=st.integers(0, 3), after=st.integers(0, 3), dilation=st.integers(1, 3), ceil_mode=st.booleans())
def test_output_size_counts_windows_with_ceil_mode_and_two_sided_padding(size, kernel, stride, before, after,
                                                                         dilation, ceil_mode):
    span = dilation * (kernel - 1) + 1
    if span > size + before + after:
        with pytest.raises(ValueError, match="kernel_size"):
            cnnlab.output_size(size, kernel, stride, (before, after), dilation, ceil_mode=ceil_mode)
        return
    counted = naive.pool_output_size(size, kernel, stride, before, after, dilation, ceil_mode)
    assert cnnlab.output_size(size, kernel, stride, (before, after), dilation, ceil_mode=ceil_mode) == counted
    numerator = size + before + after - span
    if ceil_mode:  # PyTorch's formula, then its rule for a last window starting in the trailing padding
        expected = -(-numerator // stride) + 1
        expected -= (expected - 1) * stride >= size + before
    else:
        expected = numerator // stride + 1
    assert counted == expected


@settings(max_examples=15)
@given(pool_option_geometries(max_size=4))
def test_pool2d_options_backward_matches_finite_differences(g):
    rng = np.random.default_rng(1)
    x = distinct_values(rng, (g["samples"], g["channels"], g["height"], g["width"]))
    arguments = options(g)
    out = F.pool2d(x, **arguments)
    upstream = rng.standard_normal(out.shape)
    grad_x = F.pool2d_backward(x, out, upstream, **arguments)
    expected = naive.numeric_gradient(lambda: finite_weighted_sum(F.pool2d(x, **arguments), upstream), x, eps=1e-4)
    np.testing.assert_allclose(grad_x, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arguments", [
    dict(kernel_size=3, stride=2, padding=1, mode="avg", ceil_mode=True),  # clipped divisor
    dict(kernel_size=3, stride=2, padding=1, mode="avg", count_include_pad=False),
    dict(kernel_size=2, stride=2, mode="max", ceil_mode=True),
    dict(kernel_size=2, stride=1, padding=1, mode="max", dilation=2),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=1, mode="min", dilation=(2, 1), ceil_mode=True),
    dict(kernel_size=3, stride=1, padding=((1, 0), (0, 1)), mode="avg"),
    dict(kernel_size=3, stride=2, padding=((0, 1), (1, 0)), mode="max", ceil_mode=True),
])
def test_each_option_backward_matches_finite_differences(arguments):
    rng = np.random.default_rng(8)
    x = distinct_values(rng, (1, 2, 5, 6))
    out = F.pool2d(x, **arguments)
    upstream = rng.standard_normal(out.shape)
    grad_x = F.pool2d_backward(x, out, upstream, **arguments)
    expected = naive.numeric_gradient(lambda: finite_weighted_sum(F.pool2d(x, **arguments), upstream), x, eps=1e-4)
    np.testing.assert_allclose(grad_x, expected, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- GPU twin


def gpu_equals_cpu(gpu_result, cpu_result, dtype):
    host = cnnlab.to_host(gpu_result)
    assert host.shape == cpu_result.shape and host.dtype == cpu_result.dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(host, cpu_result, rtol=tol, atol=tol)


@pytest.mark.usefixtures("small_cuda_launches")
@settings(max_examples=8)
@given(pool_option_geometries(max_size=3))
def test_pool2d_options_gpu_equals_cpu_forward_and_backward(g):
    rng = np.random.default_rng(2)
    x = distinct_values(rng, (1, g["channels"], g["height"], g["width"]), g["dtype"])
    arguments = options(g)
    out = F.pool2d(x, **arguments)
    gpu_out = F.pool2d(cnnlab.to_device(x), **arguments)
    gpu_equals_cpu(gpu_out, out, g["dtype"])
    upstream = arrays(rng, out.shape, g["dtype"])
    gpu_grad = F.pool2d_backward(cnnlab.to_device(x), gpu_out, cnnlab.to_device(upstream), **arguments)
    gpu_equals_cpu(gpu_grad, F.pool2d_backward(x, out, upstream, **arguments), g["dtype"])


@pytest.mark.usefixtures("small_cuda_launches")
def test_dilated_window_in_the_padding_on_gpu():
    x = cnnlab.to_device(np.array([[[[3.0]]]]))
    assert cnnlab.to_host(F.max_pool2d(x, 2, 1, 1, dilation=2))[0, 0, 0, 0] == -np.inf
    assert cnnlab.to_host(F.min_pool2d(x, 2, 1, 1, dilation=2))[0, 0, 0, 0] == np.inf


@pytest.mark.usefixtures("small_cuda_launches")
@pytest.mark.parametrize("arguments", [
    dict(kernel_size=3, stride=2, padding=1, mode="avg", ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=((1, 0), (0, 1)), mode="avg", ceil_mode=True, count_include_pad=False),
    dict(kernel_size=(2, 3), stride=(2, 1), padding=((0, 1), (1, 1)), mode="max", dilation=(2, 1), ceil_mode=True),
    dict(kernel_size=2, stride=1, padding=((1, 0), (0, 1)), mode="min", dilation=2),
])
def test_each_option_on_gpu_equals_cpu(arguments):
    x = distinct_values(np.random.default_rng(6), (1, 2, 6, 5))
    out = F.pool2d(x, **arguments)
    gpu_out = F.pool2d(cnnlab.to_device(x), **arguments)
    gpu_equals_cpu(gpu_out, out, np.float64)
    upstream = np.random.default_rng(7).standard_normal(out.shape)
    gpu_grad = F.pool2d_backward(cnnlab.to_device(x), gpu_out, cnnlab.to_device(upstream), **arguments)
    gpu_equals_cpu(gpu_grad, F.pool2d_backward(x, out, upstream, **arguments), np.float64)


# ----------------------------------------------------------------------------- worked by hand
# PyTorch is not needed to run these: each expected array follows from PyTorch's documented
# rules (torch.nn.MaxPool2d / AvgPool2d, ceil_mode and count_include_pad), worked out below.

GRID_5x5 = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)  # x[h, w] = 5h + w


def test_ceil_mode_5x5_kernel_2_stride_2_gives_3x3():
    # floor((5 - 2) / 2) + 1 = 2 windows per axis; ceil gives 3, the last one covering only
    # row/column 4 (it starts at 4, inside the input, so it is kept)
    assert F.max_pool2d(GRID_5x5, 2).shape == (1, 1, 2, 2)
    np.testing.assert_array_equal(F.max_pool2d(GRID_5x5, 2, ceil_mode=True)[0, 0],
                                  [[6, 8, 9], [16, 18, 19], [21, 23, 24]])
    # avg of the partial windows divides by the pixels left (padding 0: the padded input ends
    # at the input): (4 + 9) / 2 = 6.5, (20 + 21) / 2 = 20.5, 24 / 1
    np.testing.assert_array_equal(F.avg_pool2d(GRID_5x5, 2, ceil_mode=True)[0, 0],
                                  [[3, 5, 6.5], [13, 15, 16.5], [20.5, 22.5, 24]])
    assert cnnlab.output_size(5, 2, 2, ceil_mode=True) == 3


def test_ceil_mode_drops_a_last_window_that_would_start_in_the_trailing_padding():
    # 3x3 input, kernel 2, stride 2, padding 1: ceil((3 + 2 - 2) / 2) + 1 = 3, but the third
    # window would start at padded index 4 = 3 + 1 (in the trailing padding): 2 windows, which
    # start at -1 and 1 and see rows {0} and {1, 2}
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    assert cnnlab.output_size(3, 2, 2, 1, ceil_mode=True) == 2
    np.testing.assert_array_equal(F.max_pool2d(x, 2, 2, 1, ceil_mode=True)[0, 0], [[0, 2], [6, 8]])


def test_avg_count_include_pad_at_a_padded_corner():
    # kernel 3, stride 2, padding 1: the corner window covers x[0:2, 0:2] = 0, 1, 5, 6 (sum 12)
    # and five padded zeros: 12 / 9 counting them (PyTorch's default), 12 / 4 without (ONNX's)
    included = F.avg_pool2d(GRID_5x5, 3, 2, 1)[0, 0]
    excluded = F.avg_pool2d(GRID_5x5, 3, 2, 1, count_include_pad=False)[0, 0]
    assert included[0, 0] == pytest.approx(12 / 9)
    assert excluded[0, 0] == pytest.approx(3.0)
    # the middle window lies inside the input: both divide by 9 (x[1:4, 1:4] sums to 108)
    assert included[1, 1] == excluded[1, 1] == pytest.approx(12.0)
    # an edge window x[0:2, 1:4] (1+2+3+6+7+8 = 27): 27 / 9 and 27 / 6
    assert included[0, 1] == pytest.approx(3.0)
    assert excluded[0, 1] == pytest.approx(4.5)


def test_avg_ceil_mode_window_past_the_padding_divides_by_the_clipped_window():
    # 6x6 ones, kernel 3, stride 2, padding 1, ceil_mode: ceil((6 + 2 - 3) / 2) + 1 = 4 windows
    # starting at -1, 1, 3, 5. The last spans 5..7 but the padded input ends at 6 + 1 = 7, so
    # PyTorch divides by 2 per axis, and the window holds 1 input pixel per axis. Per axis:
    # input pixels (2, 3, 3, 1) over divisors (3, 3, 3, 2): factors a = (2/3, 1, 1, 1/2).
    x = np.ones((1, 1, 6, 6))
    a = np.array([2 / 3, 1, 1, 1 / 2])
    np.testing.assert_allclose(F.avg_pool2d(x, 3, 2, 1, ceil_mode=True)[0, 0], np.outer(a, a), rtol=1e-15)
    # without padded positions every window is the mean of ones
    np.testing.assert_allclose(F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)[0, 0],
                               np.ones((4, 4)), rtol=1e-15)


def test_dilated_max_and_min_pool():
    # kernel 2, dilation 2: taps (0, 0), (0, 2), (2, 0), (2, 2) from each window's corner
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(F.max_pool2d(x, 2, 1, dilation=2)[0, 0], [[10, 11], [14, 15]])
    np.testing.assert_array_equal(F.min_pool2d(x, 2, 1, dilation=2)[0, 0], [[0, 1], [4, 5]])
    grad = F.pool2d_backward(x, F.max_pool2d(x, 2, 1, dilation=2), np.ones((1, 1, 2, 2)), 2, 1, dilation=2)
    expected = np.zeros((4, 4))
    expected[2:, 2:] = 1  # each window's maximum is its bottom-right tap
    np.testing.assert_array_equal(grad[0, 0], expected)


def test_dilated_window_entirely_in_the_padding_is_infinite_and_gets_no_gradient():
    # 1x1 input, kernel 2, padding 1, dilation 2: the one window has taps at -1 and 1 on both
    # axes, all in the padding (PyTorch gives -inf for max)
    x = np.array([[[[3.0]]]])
    assert F.max_pool2d(x, 2, 1, 1, dilation=2)[0, 0, 0, 0] == -np.inf
    assert F.min_pool2d(x, 2, 1, 1, dilation=2)[0, 0, 0, 0] == np.inf
    out = F.max_pool2d(x, 2, 1, 1, dilation=2)
    assert F.pool2d_backward(x, out, np.ones_like(out), 2, 1, 1, dilation=2)[0, 0, 0, 0] == 0


def test_four_sided_padding():
    # padding ((1, 0), (0, 1)): one row of padding above, one column on the right; kernel 2,
    # stride 1 gives (3 + 1 - 2) + 1 = 3 windows per axis, starting at row -1 and column 0
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)
    sides = ((1, 0), (0, 1))
    np.testing.assert_array_equal(F.max_pool2d(x, 2, 1, sides)[0, 0], [[1, 2, 2], [4, 5, 5], [7, 8, 8]])
    # avg counting the padding divides every window by 4: the first row sees 0+1, 1+2, 2
    np.testing.assert_allclose(F.avg_pool2d(x, 2, 1, sides)[0, 0][0], [0.25, 0.75, 0.5])
    np.testing.assert_allclose(F.avg_pool2d(x, 2, 1, sides, count_include_pad=False)[0, 0][0], [0.5, 1.5, 2.0])
    # the same sides given as a pair (ph, pw) equal the pair of pairs ((ph, ph), (pw, pw))
    np.testing.assert_array_equal(F.avg_pool2d(x, 3, 1, (1, 0)), F.avg_pool2d(x, 3, 1, ((1, 1), (0, 0))))


def test_count_include_pad_does_not_change_max_min_or_unpadded_avg():
    x = np.random.default_rng(3).standard_normal((1, 2, 5, 5))
    for op in (F.max_pool2d, F.min_pool2d):
        np.testing.assert_array_equal(op(x, 3, 2, 1, count_include_pad=False), op(x, 3, 2, 1))
    np.testing.assert_array_equal(F.avg_pool2d(x, 2, count_include_pad=False), F.avg_pool2d(x, 2))


def test_defaults_are_unchanged_and_options_are_keyword_only():
    x = np.random.default_rng(4).standard_normal((1, 1, 5, 5))
    np.testing.assert_array_equal(F.pool2d(x, 3, 2, 1, "avg"),
                                  F.pool2d(x, 3, 2, 1, "avg", dilation=1, ceil_mode=False, count_include_pad=True))
    with pytest.raises(TypeError):
        F.max_pool2d(x, 2, 2, 0, 2)  # dilation must be named (PyTorch's avg_pool2d has ceil_mode there)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(kernel_size=3, padding=(1, 0, 1, 0)), ValueError, "padding"),
    (dict(kernel_size=3, padding=((1,), (0, 1))), ValueError, "padding"),
    (dict(kernel_size=3, padding=((1, 0), 1)), ValueError, "padding"),
    (dict(kernel_size=3, padding=((-1, 0), (0, 0))), ValueError, "padding"),
    (dict(kernel_size=3, padding=((0, 2), (0, 0))), ValueError, "at most 1 along the height"),
    (dict(kernel_size=3, padding=((0.5, 0), (0, 0))), TypeError, "padding"),
    (dict(kernel_size=2, dilation=0), ValueError, "dilation"),
    (dict(kernel_size=2, dilation=2, mode="avg"), ValueError, "dilation"),
    (dict(kernel_size=2, dilation=2, mode="median"), ValueError, "dilation"),
    (dict(kernel_size=2, dilation=(1, 2), mode="lp"), ValueError, "dilation"),
    (dict(kernel_size=2, ceil_mode=True, mode="median"), ValueError, "ceil_mode"),
    (dict(kernel_size=2, ceil_mode=True, mode="lp"), ValueError, "ceil_mode"),
    (dict(kernel_size=2, ceil_mode="yes"), TypeError, "ceil_mode"),
    (dict(kernel_size=2, count_include_pad=None), TypeError, "count_include_pad"),
    (dict(kernel_size=2, count_include_pad=2), TypeError, "count_include_pad"),
    (dict(kernel_size=3, dilation=3), ValueError, "dilation=3"),
])
def test_bad_pool_options(kwargs, error, words):
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(error, match=words):
        F.pool2d(x, **kwargs)
    if "mode" not in kwargs:
        with pytest.raises(error, match=words):
            F.pool2d_backward(x, np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 2, 2)), **kwargs)


def test_backward_checks_the_ceil_mode_output_shape():
    x = np.zeros((1, 1, 5, 5))
    out = F.max_pool2d(x, 2, ceil_mode=True)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(1, 1, 3, 3\)"):
        F.pool2d_backward(x, out, np.zeros((1, 1, 2, 2)), 2, ceil_mode=True)


# --- the layers take the same options ----------------------------------------------------


@pytest.mark.parametrize("layer, arguments", [
    (L.MaxPool2D(3, stride=2, padding=((1, 0), (0, 1)), dilation=(1, 2), ceil_mode=True),
     dict(kernel_size=3, stride=2, padding=((1, 0), (0, 1)), mode="max", dilation=(1, 2), ceil_mode=True)),
    (L.AvgPool2D(2, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
     dict(kernel_size=2, stride=2, padding=1, mode="avg", ceil_mode=True, count_include_pad=False)),
])
def test_pooling_layers_take_the_options_and_keep_them_in_their_config(layer, arguments):
    x = np.random.default_rng(3).random((2, 3, 7, 6))
    expected = F.pool2d(x, **arguments)
    np.testing.assert_array_equal(layer.forward(x), expected)
    assert layer.output_shape(x.shape[1:]) == expected.shape[1:]
    rebuilt = type(layer)(**{k: tuple(v) if isinstance(v, list) else v for k, v in layer.config().items()})
    np.testing.assert_array_equal(rebuilt.forward(x), expected)


def test_layers_refuse_bad_pooling_options_when_built():
    with pytest.raises(ValueError, match="dilation applies to mode 'max' and 'min' only"):
        L.AvgPool2D(2, dilation=2)
    with pytest.raises(ValueError, match="ceil_mode=True applies"):
        L.MedianPool2D(2, ceil_mode=True)


def test_convolution_layer_with_four_sided_and_same_upper_padding():
    x = np.random.default_rng(4).random((2, 2, 7, 8))
    for padding, stride in ((((1, 0), (2, 1)), 1), ("same_upper", 2)):
        layer = L.Conv2D(2, 3, 3, stride=stride, padding=padding, dtype="float64", seed=0)
        expected = F.conv2d(x, layer.weight, layer.bias, stride=stride, padding=padding)
        np.testing.assert_allclose(layer.forward(x), expected)
        assert layer.output_shape(x.shape[1:]) == expected.shape[1:]
        rebuilt = L.Conv2D(**{k: tuple(v) if isinstance(v, list) else v for k, v in layer.config().items()})
        assert rebuilt.padding == layer.padding
