"""Activations and softmax against NumPy/SciPy, including huge logits."""

import naive
import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

import cnnlab.functional as F

finite = st.floats(-50, 50, allow_nan=False, width=32)


@given(arrays(st.sampled_from([np.float32, np.float64]), array_shapes(max_dims=4, max_side=5), elements=finite))
def test_elementwise_activations(x):
    tol = 1e-6 if x.dtype == np.float32 else 1e-12
    for op, reference in [
        (F.relu, np.maximum(x, 0)),
        (F.leaky_relu, np.where(x > 0, x, 0.01 * x)),
        (F.sigmoid, scipy.special.expit(x)),
        (F.tanh, np.tanh(x)),
    ]:
        out = op(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        np.testing.assert_allclose(out, reference, rtol=tol, atol=tol)
    np.testing.assert_allclose(F.leaky_relu(x, 0.2), np.where(x > 0, x, 0.2 * x), rtol=tol, atol=tol)


@given(arrays(st.sampled_from([np.float32, np.float64]), array_shapes(min_dims=1, max_dims=4, max_side=5),
              elements=st.floats(-1e4, 1e4, allow_nan=False, width=32)),
       st.integers(-4, 3))
def test_softmax_and_log_softmax_any_axis(x, axis):
    if not -x.ndim <= axis < x.ndim:
        with pytest.raises(ValueError, match="axis"):
            F.softmax(x, axis)
        return
    tol = 1e-5 if x.dtype == np.float32 else 1e-12
    p = F.softmax(x, axis)
    logp = F.log_softmax(x, axis)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(logp))
    np.testing.assert_allclose(p, naive.softmax(x, axis), rtol=tol, atol=tol)
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=tol * 10)
    np.testing.assert_allclose(logp, naive.log_softmax(x, axis), rtol=tol, atol=tol * 1e4 * (x.dtype == np.float32) + tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    p = F.softmax(logits)
    logp = F.log_softmax(logits)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(logp))
    np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3] * 3, [0.5, 0.5, 0]], atol=1e-7)
    np.testing.assert_allclose(logp, scipy.special.log_softmax(logits.astype(np.float64), axis=1), rtol=1e-6)


def test_sigmoid_does_not_overflow():
    x = np.array([-1e4, -800.0, 0.0, 800.0, 1e4])
    with np.errstate(over="raise"):
        np.testing.assert_allclose(F.sigmoid(x), [0, 0, 0.5, 1, 1])


def test_relu_textbook_definition():
    x = np.array([-2.0, -0.0, 0.0, 3.0, np.nan])
    out = F.relu(x)
    np.testing.assert_array_equal(out[:4], [0, 0, 0, 3])
    assert np.isnan(out[4])


@pytest.mark.parametrize("slope, error", [("0.1", TypeError), (None, TypeError), (float("nan"), ValueError)])
def test_bad_negative_slope(slope, error):
    with pytest.raises(error, match="negative_slope"):
        F.leaky_relu(np.ones(3), slope)
