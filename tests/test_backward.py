"""Every backward equals central finite differences of its forward (float64)."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from naive import conv2d_gradients_loops, flipped_weight, numeric_gradient
from strategies import conv_geometries, pool_geometries

import cnnlab.functional as F

TOL = dict(rtol=1e-5, atol=1e-7)


def weighted_sum(output, weights):
    return float(np.sum(output * weights))


@settings(max_examples=15)
@given(conv_geometries(max_size=4))
def test_conv2d_backward_matches_finite_differences(g):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((g["samples"], g["channels"], g["height"], g["width"]))
    w = rng.standard_normal((g["filters"], g["channels"] // g["groups"]) + g["kernel"])
    b = rng.standard_normal(g["filters"])
    geometry = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"], groups=g["groups"])
    out = F.conv2d(x, w, b, **geometry)
    upstream = rng.standard_normal(out.shape)
    grad_x, grad_w, grad_b = F.conv2d_backward(x, w, upstream, **geometry)

    def loss():
        return weighted_sum(F.conv2d(x, w, b, **geometry), upstream)

    np.testing.assert_allclose(grad_x, numeric_gradient(loss, x), **TOL)
    np.testing.assert_allclose(grad_w, numeric_gradient(loss, w), **TOL)
    np.testing.assert_allclose(grad_b, numeric_gradient(loss, b), **TOL)
    assert F.conv2d_backward(x, w, upstream, input_grad=False, **geometry)[0] is None


def check_relu_input(x_before_relu, w, geometry):
    """``conv2d_backward(relu(z), ..., relu_input=True)``: the input gradient bitwise what the
    ReLU's backward makes of the plain one, the parameters' gradients unchanged."""
    x = F.relu(x_before_relu)
    out = F.conv2d(x, w, **geometry)
    upstream = np.random.default_rng(4).standard_normal(out.shape).astype(x.dtype)
    plain = F.conv2d_backward(x, w, upstream, **geometry)
    masked = F.conv2d_backward(x, w, upstream, **geometry, relu_input=True)
    np.testing.assert_array_equal(masked[0], F.relu_backward(x_before_relu, plain[0]))
    for ours, theirs in zip(masked[1:], plain[1:]):
        np.testing.assert_array_equal(ours, theirs)
    return masked[0]


@settings(max_examples=20)
@given(conv_geometries(max_size=5))
def test_conv2d_backward_through_a_relu_equals_the_relus_backward(g):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((g["samples"], g["channels"], g["height"], g["width"])).astype(g["dtype"])
    w = rng.standard_normal((g["filters"], g["channels"] // g["groups"]) + g["kernel"]).astype(g["dtype"])
    check_relu_input(z, w, dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"], groups=g["groups"]))


@pytest.mark.parametrize("channels, filters, kernel, stride, groups", [
    (32, 32, 3, 1, 1),  # the input gradient a convolution by im2col and a GEMM: the mask in its epilogue
    (16, 16, 3, 1, 16),  # depthwise: the direct kernel's epilogue, after its wide rows are copied out
    (8, 24, 1, 1, 1),  # pointwise blocks
    (8, 16, 3, 2, 1),  # stride 2: col2im, then the ReLU's backward in place
])
def test_conv2d_backward_through_a_relu_on_each_path(channels, filters, kernel, stride, groups):
    rng = np.random.default_rng(5)
    z = rng.standard_normal((4, channels, 12, 12)).astype(np.float32)
    w = rng.standard_normal((filters, channels // groups, kernel, kernel)).astype(np.float32)
    grad = check_relu_input(z, w, dict(stride=stride, padding=kernel // 2, groups=groups))
    assert np.any(grad[z <= 0] == 0) and np.all(grad[z <= 0] == 0) and np.any(grad != 0)
    with pytest.raises(TypeError, match="relu_input"):
        F.conv2d_backward(z, w, np.ones_like(F.conv2d(z, w, stride=stride, padding=kernel // 2, groups=groups)),
                          stride=stride, padding=kernel // 2, groups=groups, relu_input="yes")


@settings(max_examples=20)
@given(pool_geometries())
def test_pool2d_backward_matches_finite_differences(g):
    rng = np.random.default_rng(1)
    # distinct values, well apart: max/min/median choices do not flip under the finite difference
    size = g["samples"] * g["channels"] * g["height"] * g["width"]
    x = (rng.permutation(size).reshape(g["samples"], g["channels"], g["height"], g["width"]) * 0.1 + 0.05)
    x = x * np.where(rng.random(x.shape) < 0.5, -1, 1) if g["mode"] != "lp" else x
    arguments = dict(kernel_size=g["kernel"], stride=g["stride"], padding=g["padding"], mode=g["mode"])
    out = F.pool2d(x, **arguments)
    upstream = rng.standard_normal(out.shape)
    grad_x = F.pool2d_backward(x, out, upstream, **arguments)
    expected = numeric_gradient(lambda: weighted_sum(F.pool2d(x, **arguments), upstream), x, eps=1e-4)
    np.testing.assert_allclose(grad_x, expected, rtol=1e-5, atol=1e-6)


def test_max_pool_routes_to_first_maximum_on_ties():
    x = np.ones((1, 1, 2, 2))
    grad = F.pool2d_backward(x, F.max_pool2d(x, 2), np.array([[[[3.0]]]]), 2, mode="max")
    np.testing.assert_array_equal(grad[0, 0], [[3, 0], [0, 0]])


def test_global_avg_pool_backward():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 4, 5))
    upstream = rng.standard_normal((2, 3))
    expected = numeric_gradient(lambda: weighted_sum(F.global_avg_pool2d(x), upstream), x)
    np.testing.assert_allclose(F.global_avg_pool2d_backward(x, upstream), expected, **TOL)


@pytest.mark.parametrize("forward, backward, uses_output", [
    (F.relu, F.relu_backward, False),
    (lambda x: F.leaky_relu(x, 0.2), lambda x, g: F.leaky_relu_backward(x, g, 0.2), False),
    (F.sigmoid, F.sigmoid_backward, True),
    (F.tanh, F.tanh_backward, True),
    (F.softmax, F.softmax_backward, True),
    (F.log_softmax, F.log_softmax_backward, True),
    (lambda x: F.softmax(x, axis=0), lambda y, g: F.softmax_backward(y, g, axis=0), True),
])
def test_activation_backward_matches_finite_differences(forward, backward, uses_output):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 2))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from ReLU's kink
    upstream = rng.standard_normal(x.shape)
    saved = forward(x) if uses_output else x
    expected = numeric_gradient(lambda: weighted_sum(forward(x), upstream), x)
    np.testing.assert_allclose(backward(saved, upstream), expected, **TOL)


@given(st.integers(1, 5), st.integers(1, 6), st.integers(1, 5))
def test_linear_backward_matches_finite_differences(samples, n_in, n_out):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((samples, n_in))
    w = rng.standard_normal((n_out, n_in))
    b = rng.standard_normal(n_out)
    upstream = rng.standard_normal((samples, n_out))
    grad_x, grad_w, grad_b = F.linear_backward(x, w, upstream)

    def loss():
        return weighted_sum(F.linear(x, w, b), upstream)

    np.testing.assert_allclose(grad_x, numeric_gradient(loss, x), **TOL)
    np.testing.assert_allclose(grad_w, numeric_gradient(loss, w), **TOL)
    np.testing.assert_allclose(grad_b, numeric_gradient(loss, b), **TOL)


def test_cross_entropy_value_and_gradient():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((4, 5)) * 3
    targets = np.array([0, 4, 2, 2])
    loss, probabilities = F.cross_entropy(logits, targets)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    assert loss == pytest.approx(-log_p[np.arange(4), targets].mean(), rel=1e-12)
    expected = numeric_gradient(lambda: F.cross_entropy(logits, targets)[0], logits)
    np.testing.assert_allclose(F.cross_entropy_backward(probabilities, targets), expected, **TOL)


def test_cross_entropy_is_finite_for_huge_logits():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]])
    loss, probabilities = F.cross_entropy(logits, np.array([1, 1]))
    assert np.isfinite(loss) and loss == pytest.approx(1e4)
    assert np.all(np.isfinite(F.cross_entropy_backward(probabilities, np.array([1, 1]))))


def test_mse_gradient():
    rng = np.random.default_rng(6)
    prediction, target = rng.standard_normal((2, 3, 4))
    expected = numeric_gradient(lambda: F.mse(prediction, target), prediction)
    np.testing.assert_allclose(F.mse_backward(prediction, target), expected, **TOL)


def test_dropout_mask_scaling_and_gradient():
    x = np.ones((200, 50))
    out, mask = F.dropout(x, 0.3, seed=7)
    kept = mask > 0
    assert 0.65 < kept.mean() < 0.75  # 10,000 draws: the share kept is close to 0.7
    np.testing.assert_allclose(out[kept], 1 / 0.7)
    assert np.all(out[~kept] == 0)
    upstream = np.random.default_rng(8).standard_normal(x.shape)
    np.testing.assert_allclose(F.dropout_backward(mask, upstream), upstream * mask)
    same, _ = F.dropout(x, 0.3, seed=7)
    other, _ = F.dropout(x, 0.3, seed=8)
    np.testing.assert_array_equal(same, out)
    assert not np.array_equal(other, out)


def test_batch_norm_backward_matches_finite_differences():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 2, 3, 2))
    gamma, beta = rng.standard_normal(2), rng.standard_normal(2)
    upstream = rng.standard_normal(x.shape)
    out, mean, variance = F.batch_norm2d(x, gamma, beta)
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(variance, x.var(axis=(0, 2, 3)))
    grad_x, grad_gamma, grad_beta = F.batch_norm2d_backward(x, upstream, mean, variance, gamma)

    def loss():
        return weighted_sum(F.batch_norm2d(x, gamma, beta)[0], upstream)

    np.testing.assert_allclose(grad_x, numeric_gradient(loss, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_gamma, numeric_gradient(loss, gamma), **TOL)
    np.testing.assert_allclose(grad_beta, numeric_gradient(loss, beta), **TOL)


@pytest.mark.parametrize("call, error, words", [
    (lambda: F.conv2d_backward(np.ones((1, 1, 4, 4)), np.ones((1, 1, 3, 3)), np.ones((1, 1, 3, 3))),
     ValueError, "grad_out must have shape"),
    (lambda: F.pool2d_backward(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)), np.ones((1, 1, 3, 3)), 2),
     ValueError, "grad_out"),
    (lambda: F.relu_backward(np.ones(3), np.ones(4)), ValueError, "grad_out"),
    (lambda: F.cross_entropy(np.ones((2, 3)), [0, 3]), ValueError, "targets must lie in"),
    (lambda: F.cross_entropy(np.ones((2, 3)), [0.5, 1]), TypeError, "targets"),
    (lambda: F.cross_entropy(np.ones((2, 3)), [0]), ValueError, "one label per sample"),
    (lambda: F.dropout(np.ones(3), 1.5, 0), ValueError, "p must be"),
    (lambda: F.dropout(np.ones(3), 0.5, -1), ValueError, "seed"),
])
def test_bad_backward_input(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_conv2d_backward_with_row_blocks_gives_the_same_gradients(monkeypatch):
    """A tiny im2col budget forces one output row per work item in both backward kernels."""
    from cnnlab import config

    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 4, 9, 7))
    w = rng.standard_normal((6, 2, 3, 3))
    upstream = rng.standard_normal(F.conv2d(x, w, stride=(2, 1), padding=1, groups=2).shape)
    whole = F.conv2d_backward(x, w, upstream, stride=(2, 1), padding=1, groups=2)
    monkeypatch.setattr(config, "IM2COL_MAX_BYTES", 1)
    blocked = F.conv2d_backward(x, w, upstream, stride=(2, 1), padding=1, groups=2)
    for a, b in zip(whole, blocked):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


# (x shape, weight shape, stride, padding as pairs, dilation, groups, whether the rule computes the
# input gradient as a convolution with the flipped weight, whether it can): each branch of the rule
INPUT_GRADIENT_CASES = [
    ((2, 5, 6, 7), (9, 5, 1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1), 1, True, True),  # 1x1: the pointwise blocks
    ((2, 4, 7, 6), (4, 1, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 4, True, True),  # depthwise: direct
    ((1, 4, 9, 9), (8, 1, 5, 5), (1, 1), ((4, 4), (4, 4)), (2, 2), 4, True, True),  # two filters per channel, dilated
    ((2, 6, 7, 8), (6, 6, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, True, True),  # the GEMM
    ((2, 6, 7, 8), (11, 6, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, True, True),  # filters < 2 x channels
    ((2, 6, 7, 8), (12, 6, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, True, True),  # twice the channels
    ((2, 6, 7, 8), (13, 6, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1, False, True),  # more: col2im
    ((2, 6, 7, 8), (6, 6, 3, 3), (1, 1), ((3, 1), (1, 1)), (1, 1), 1, False, False),  # padding past the reach
    ((2, 6, 7, 8), (6, 6, 3, 3), (1, 1), ((2, 0), (1, 2)), (1, 1), 1, True, True),  # four-sided padding
    ((2, 6, 9, 8), (6, 6, 3, 2), (1, 1), ((2, 2), (0, 1)), (2, 1), 1, True, True),  # dilated, not square
    ((1, 16, 6, 6), (12, 8, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 2, True, True),  # groups
    ((1, 8, 6, 6), (6, 4, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 2, True, True),  # groups of 3 filters: direct
    ((2, 6, 7, 8), (6, 6, 3, 3), (2, 1), ((1, 1), (1, 1)), (1, 1), 1, False, False),  # a stride: col2im
    ((2, 6, 9, 1), (5, 6, 3, 1), (1, 1), ((1, 1), (0, 0)), (1, 1), 1, True, True),  # one column wide
]


@pytest.mark.parametrize("case", INPUT_GRADIENT_CASES)
@pytest.mark.parametrize("way", ["rule", "never", "always"])
@pytest.mark.parametrize("split", [False, True])
def test_input_gradient_as_a_convolution_and_by_col2im_match_loops(case, way, split, monkeypatch):
    """The input gradient of a stride-1 convolution is a convolution of the output gradient with
    the flipped weight where the rule says so, by col2im otherwise (or when that is switched off,
    or everywhere it can be, as bench/conv_backward.py measures the rule); each way, whole or in
    one-row blocks on two threads, equals the definition."""
    from cnnlab import config
    from cnnlab.functional import conv as functional_conv

    x_shape, w_shape, stride, padding, dilation, groups, flipped, possible = case
    monkeypatch.setattr(functional_conv, "FLIPPED_INPUT_GRADIENT", way != "never")
    monkeypatch.setattr(functional_conv, "FLIPPED_ALWAYS", way == "always")
    if split:
        monkeypatch.setattr(config, "IM2COL_MAX_BYTES", 1)
        monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1)
    rng = np.random.default_rng(12)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    upstream = rng.standard_normal(F.conv2d(x, w, **geometry).shape)
    resolved = functional_conv.conv_geometry(x.shape, w.shape, x.dtype, stride, padding, dilation, groups)
    takes_it = functional_conv._flipped_geometry(upstream.shape, w.shape, x.shape, x.dtype, resolved) is not None
    assert takes_it == {"rule": flipped, "never": False, "always": possible}[way]
    grad_x, grad_w, _ = F.conv2d_backward(x, w, upstream, **geometry)
    expected_x, expected_w = conv2d_gradients_loops(x, w, upstream, stride, padding, dilation, groups)
    np.testing.assert_allclose(grad_x, expected_x, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_w, expected_w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", [INPUT_GRADIENT_CASES[6], INPUT_GRADIENT_CASES[12]])
def test_col2im_input_gradient_in_small_gemm_tiles_matches_loops(case, monkeypatch):
    """col2im's column gradient cut for a small-matrix GEMM kernel (a limit low enough here that
    its 54 taps are blocks of 32 and 22, its depth, the filters, parts of 3 or 1) gives the same
    input gradient, in float32 (the rule's cases above say that these take col2im)."""
    from cnnlab.kernels.cpu import conv as cpu_conv

    x_shape, w_shape, stride, padding, dilation, groups, _, _ = case
    limit = 32 * w_shape[0] * 16
    monkeypatch.setattr(cpu_conv, "small_gemm_limit", lambda dtype: limit)
    rng = np.random.default_rng(14)
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    upstream = rng.standard_normal(F.conv2d(x, w, **geometry).shape).astype(np.float32)
    grad_x, _, _ = F.conv2d_backward(x, w, upstream, **geometry)
    expected_x, _ = conv2d_gradients_loops(x.astype(np.float64), w.astype(np.float64), upstream.astype(np.float64),
                                           stride, padding, dilation, groups)
    np.testing.assert_allclose(grad_x, expected_x, rtol=1e-5, atol=1e-5 * np.abs(expected_x).max())


@pytest.mark.parametrize("groups", [1, 2])
def test_weight_gradient_in_small_gemm_pieces_matches_loops(groups, monkeypatch):
    """The weight gradient's products cut for a small-matrix GEMM kernel against a transposed
    copy of the output gradient (a limit here that cuts 72 taps into blocks of 32, 32 and 8, a
    16x16 output's 256 pixels into 6 parts of 43) give the same gradients, in float32, on two threads."""
    from cnnlab import config
    from cnnlab.kernels.cpu import conv as cpu_conv

    filters_per_group = 5
    monkeypatch.setattr(cpu_conv, "small_gemm_limit", lambda dtype: 32 * 64 * 43)  # 92,160 multiply-adds an item
    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1)
    rng = np.random.default_rng(15)
    x = rng.standard_normal((3, 8 * groups, 16, 16)).astype(np.float32)
    w = rng.standard_normal((filters_per_group * groups, 8, 3, 3)).astype(np.float32)
    upstream = rng.standard_normal((3, filters_per_group * groups, 16, 16)).astype(np.float32)
    _, grad_w, grad_b = F.conv2d_backward(x, w, upstream, padding=1, groups=groups)
    _, expected_w = conv2d_gradients_loops(x.astype(np.float64), w.astype(np.float64), upstream.astype(np.float64),
                                           (1, 1), ((1, 1), (1, 1)), (1, 1), groups)
    np.testing.assert_allclose(grad_w, expected_w, rtol=1e-5, atol=1e-5 * np.abs(expected_w).max())
    np.testing.assert_allclose(grad_b, upstream.sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("small", [False, True])
@pytest.mark.parametrize("stride, padding, dilation, groups", [(1, 1, 1, 1), (2, 2, 1, 2), (1, 2, 2, 1), (2, 0, 1, 1)])
def test_weight_gradient_through_planes_matches_loops(stride, padding, dilation, groups, small, monkeypatch):
    """The weight gradient with its columns copied through polyphase planes (pitch-wide rows,
    the output gradient's rows widened with zeros, or transposed so for small-matrix GEMM
    pieces), in blocks of a few output rows on two threads, against loops; and without planes."""
    from cnnlab import config
    from cnnlab.kernels.cpu import conv as cpu_conv

    for planes in (True, False):
        monkeypatch.setattr(cpu_conv, "_by_planes", lambda *geometry: planes)
        monkeypatch.setattr(cpu_conv, "small_gemm_limit", lambda dtype: 32 * 6 * 8 if small else 0)  # < an item
        monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1)
        monkeypatch.setattr(config, "IM2COL_MAX_BYTES", 4 * 9 * 4 * 11 * 3 * 2)  # three output rows an item
        rng = np.random.default_rng(16)
        x = rng.standard_normal((3, 4 * groups, 21, 23)).astype(np.float32)
        w = rng.standard_normal((6 * groups, 4, 3, 3)).astype(np.float32)
        out_shape = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups).shape
        upstream = rng.standard_normal(out_shape).astype(np.float32)
        _, grad_w, grad_b = F.conv2d_backward(x, w, upstream, stride=stride, padding=padding, dilation=dilation,
                                              groups=groups, input_grad=False)
        _, expected_w = conv2d_gradients_loops(x.astype(np.float64), w.astype(np.float64),
                                               upstream.astype(np.float64), (stride, stride),
                                               ((padding, padding), (padding, padding)), (dilation, dilation), groups)
        np.testing.assert_allclose(grad_w, expected_w, rtol=1e-5, atol=1e-5 * np.abs(expected_w).max())
        np.testing.assert_allclose(grad_b, upstream.sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-4)


@settings(max_examples=30)
@given(st.integers(1, 19), st.integers(1, 8), st.integers(1, 8), st.integers(1, 3), st.integers(1, 3),
       st.integers(1, 2), st.integers(1, 2), st.integers(1, 2), st.tuples(*[st.integers(0, 2)] * 4),
       st.integers(1, 2))
def test_weight_gradient_with_the_samples_innermost_matches_loops(samples, height, width, kh, kw, stride, dh, dw,
                                                                  pads, workers):
    """The weight gradient of small outputs (:func:`_interleaved_weight_gradient_items`) against
    the definition: blocks of samples that leave a smaller last one, one or two workers, every
    stride, dilation and four-sided padding; the bias gradient is the output gradient's sum."""
    from hypothesis import assume

    from cnnlab.kernels.cpu import conv as cpu_conv

    top, bottom, left, right = pads
    out_h = (height + top + bottom - dh * (kh - 1) - 1) // stride + 1
    out_w = (width + left + right - dw * (kw - 1) - 1) // stride + 1
    assume(out_h >= 1 and out_w >= 1 and (kh - 1) * dh + 1 >= stride and (kw - 1) * dw + 1 >= stride)
    rng = np.random.default_rng(samples * 100 + height * 10 + width)
    x = rng.standard_normal((samples, 3, height, width))
    upstream = rng.standard_normal((samples, 4, out_h, out_w))
    grad_w, grad_b = np.empty((4, 3, kh, kw)), np.empty(4)
    called = []
    kernel = cpu_conv._interleaved_weight_gradient_items
    cpu_conv._interleaved_weight_gradient_items = lambda *arguments: called.append(1) or kernel(*arguments)
    try:
        cpu_conv.conv2d_backward_weight(x, upstream, grad_w, grad_b, stride, stride, top, left, dh, dw, 1, out_h,
                                        workers)
    finally:
        cpu_conv._interleaved_weight_gradient_items = kernel
    assert called
    _, expected_w = conv2d_gradients_loops(x, np.zeros((4, 3, kh, kw)), upstream, (stride, stride),
                                           ((top, bottom), (left, right)), (dh, dw), 1)
    np.testing.assert_allclose(grad_w, expected_w, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_b, upstream.sum(axis=(0, 2, 3)), rtol=1e-10, atol=1e-10)


@settings(max_examples=40)
@given(st.integers(1, 3), st.integers(1, 12), st.integers(1, 20), st.integers(1, 5), st.integers(1, 5),
       st.integers(1, 2), st.integers(1, 2), st.integers(1, 2), st.tuples(*[st.integers(0, 2)] * 4),
       st.integers(1, 9), st.integers(1, 2), st.sampled_from([None, 1, 2]), st.sampled_from(["float32", "float64"]))
@example(2, 9, 17, 3, 3, 1, 1, 1, (1, 1, 1, 1), 5, 1, 2, "float64")  # a smaller last row block
def test_weight_gradient_by_panels_matches_loops(samples, height, width, kh, kw, stride, dh, dw, pads, filters,
                                                 groups, block_rows, dtype):
    """The weight gradient's dot products by :func:`tap_dots` straight from the polyphase planes
    and the widened gradient rows, forced here for every geometry (not only where the rule takes
    them): strides, dilations, four-sided paddings, groups, filter and tap counts that are not
    multiples of the kernel's blocks, items of one or two output rows, both dtypes, two threads."""
    from hypothesis import assume

    from cnnlab import config
    from cnnlab.kernels.cpu import conv as cpu_conv

    if not cpu_conv.panels_available():
        return
    top, bottom, left, right = pads
    out_h = (height + top + bottom - dh * (kh - 1) - 1) // stride + 1
    out_w = (width + left + right - dw * (kw - 1) - 1) // stride + 1
    assume(out_h >= 1 and out_w >= 1)
    rng = np.random.default_rng(samples * 100 + height * 10 + width)
    x = rng.standard_normal((samples, 2 * groups, height, width)).astype(dtype)
    upstream = rng.standard_normal((samples, filters * groups, out_h, out_w)).astype(dtype)
    grad_w, grad_b = np.full((filters * groups, 2, kh, kw), np.nan, dtype), np.full(filters * groups, np.nan, dtype)
    rule, innermost, threshold = cpu_conv._weight_gradient_by_panels, cpu_conv._samples_innermost, \
        cpu_conv.CHANNEL_SPLIT_BYTES
    taken = []
    cpu_conv._weight_gradient_by_panels = lambda *geometry: taken.append(geometry) or True
    cpu_conv._samples_innermost = lambda *arguments: False
    cpu_conv.CHANNEL_SPLIT_BYTES = 1 << 40  # (the samples' path, not the channel blocks')
    config.PARALLEL_MIN_WORK = 1
    try:
        cpu_conv.conv2d_backward_weight(x, upstream, grad_w, grad_b, stride, stride, top, left, dh, dw, groups,
                                        block_rows or out_h, 2)
    finally:
        cpu_conv._weight_gradient_by_panels, cpu_conv._samples_innermost = rule, innermost
        cpu_conv.CHANNEL_SPLIT_BYTES = threshold
        config.reset()
    assert taken
    _, expected_w = conv2d_gradients_loops(x.astype(np.float64), np.zeros(grad_w.shape), upstream.astype(np.float64),
                                           (stride, stride), ((top, bottom), (left, right)), (dh, dw), groups)
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(grad_w, expected_w, rtol=tolerance, atol=tolerance * max(1, np.abs(expected_w).max()))
    np.testing.assert_allclose(grad_b, upstream.sum(axis=(0, 2, 3)), rtol=tolerance, atol=tolerance * 10)


@pytest.mark.parametrize("vector_bytes, out_w, kernel_w, stride, weight_bytes, columns, expected", [
    (32, 32, 3, 1, 36864, 1088, True),  # the CIFAR-sized 32-channel layer
    (32, 56, 3, 1, 147456, 870, True),  # ResNet's 56x56 layer, 15 rows an item
    (32, 16, 3, 1, 73728, 288, False),  # 32 to 64 channels at 16x16: 288 columns an item
    (32, 32, 3, 1, 160 * 1024 + 4, 1088, False), (32, 32, 3, 1, 160 * 1024, 512, True),
    (32, 32, 3, 2, 36864, 1088, False), (32, 15, 3, 1, 36864, 1088, False),
    (64, 56, 3, 1, 147456, 870, False),  # 16 lanes: ResNet's 56x56 layer's sums are 2.4 MB
    (64, 32, 3, 1, 80 * 1024, 1088, True), (64, 32, 3, 1, 80 * 1024 + 4, 1088, False)])
def test_weight_gradient_panels_rule(vector_bytes, out_w, kernel_w, stride, weight_bytes, columns, expected,
                                     monkeypatch):
    """Where the forward takes panels, within 1.25 MB of lane sums (160 KB of weights with 8
    lanes, 80 KB with 16), on items of 512 columns or more."""
    from cnnlab.kernels.cpu import conv as cpu_conv

    monkeypatch.setattr(cpu_conv, "panels_available", lambda: True)
    monkeypatch.setattr(cpu_conv, "VECTOR_BYTES", vector_bytes)  # (read by the Python rule, not compiled)
    assert cpu_conv._weight_gradient_by_panels(out_w, kernel_w, stride, stride, 1, weight_bytes, columns) == expected


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("groups", [1, 2, 3])
def test_flipped_weight_kernel_swaps_filters_and_channels_and_turns_the_window(groups, shared, monkeypatch):
    from cnnlab import config
    from cnnlab.kernels import cpu

    if shared:  # the filters shared between the threads (as a large weight's are)
        monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1)
    w = np.random.default_rng(13).standard_normal((6 * groups, 4, 3, 2)).astype(np.float32)
    out = np.empty((4 * groups, 6, 3, 2), np.float32)
    cpu.conv2d_flipped_weight(w, groups, out)
    np.testing.assert_array_equal(out, flipped_weight(w, groups))


# (x shape, weight shape, groups, how conv2d_backward_weight splits the work between two threads)
WEIGHT_GRADIENT_CASES = [
    ((3, 16, 6, 5), (8, 16, 3, 3), 1, "channels"),
    ((3, 17, 6, 5), (8, 17, 3, 3), 1, "channels"),  # blocks of 9 and 8 channels
    ((2, 18, 5, 5), (6, 6, 3, 3), 3, "channels"),  # two blocks in each group
    ((2, 16, 6, 6), (16, 1, 3, 3), 16, "channels"),  # depthwise: a channel a block
    ((2, 16, 9, 1), (4, 16, 3, 1), 1, "channels"),  # one column wide
    ((3, 16, 6, 5), (8, 16, 3, 3), 1, "samples"),
    ((3, 3, 6, 5), (8, 3, 3, 3), 1, "samples"),  # an RGB layer: too few channels to split
]


@pytest.mark.parametrize("case", WEIGHT_GRADIENT_CASES)
@pytest.mark.parametrize("block_rows", [None, 1])
def test_weight_gradient_by_channel_blocks_or_samples_matches_loops(case, block_rows, monkeypatch):
    """The weight gradient split between threads by blocks of input channels (where it is large:
    here every size is) or by samples, whole (small outputs: with the samples innermost) or in
    one-row blocks, equals the definition, and the bias gradient the sum of the output gradient."""
    from cnnlab import config
    from cnnlab.kernels.cpu import conv as cpu_conv

    x_shape, w_shape, groups, split = case
    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1)
    if block_rows:
        monkeypatch.setattr(config, "IM2COL_MAX_BYTES", 1)
    monkeypatch.setattr(cpu_conv, "CHANNEL_SPLIT_BYTES", 0 if split == "channels" else 1 << 62)
    calls = {"channels": 0, "samples": 0, "innermost": 0}
    for name, key in (("_weight_gradient_by_channels_items", "channels"), ("_conv2d_backward_weight_items", "samples"),
                      ("_interleaved_weight_gradient_items", "innermost")):
        def counted(*arguments, _kernel=getattr(cpu_conv, name), _key=key):
            calls[_key] += 1
            _kernel(*arguments)
        monkeypatch.setattr(cpu_conv, name, counted)
    if split == "samples" and not block_rows:
        split = "innermost"
    rng = np.random.default_rng(14)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    padding = ((1, 1), (w_shape[3] // 2, w_shape[3] // 2))
    upstream = rng.standard_normal(F.conv2d(x, w, padding=padding, groups=groups).shape)
    _, grad_w, grad_b = F.conv2d_backward(x, w, upstream, padding=padding, groups=groups, input_grad=False)
    assert calls[split] >= 1 and sum(calls.values()) == calls[split]
    _, expected_w = conv2d_gradients_loops(x, w, upstream, padding=padding, groups=groups)
    np.testing.assert_allclose(grad_w, expected_w, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(grad_b, upstream.sum(axis=(0, 2, 3)), rtol=1e-10, atol=1e-10)
