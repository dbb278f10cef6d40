"""Every backward equals central finite differences of its forward (float64)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from naive import numeric_gradient
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
