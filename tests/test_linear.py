"""linear: x @ weight.T + bias, PyTorch's (out, in) weight layout."""

import naive
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cnnlab.functional as F


@given(st.integers(1, 6), st.integers(1, 9), st.integers(1, 7), st.booleans(),
       st.sampled_from([np.float32, np.float64]))
def test_linear_matches_reference(samples, n_in, n_out, with_bias, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((samples, n_in)).astype(dtype)
    w = rng.standard_normal((n_out, n_in)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype) if with_bias else None
    out = F.linear(x, w, b)
    assert out.shape == (samples, n_out) and out.dtype == dtype
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, naive.linear(x, w, b), rtol=tol, atol=tol)


def test_textbook_fully_connected_input_count():
    """A 20x20x10 pooled volume gives 4000 inputs to the fully-connected layer."""
    volume = np.ones((1, 10, 20, 20), dtype=np.float32)
    flat = volume.reshape(1, -1)
    out = F.linear(flat, np.ones((3, 4000), dtype=np.float32))
    np.testing.assert_array_equal(out, [[4000, 4000, 4000]])


@pytest.mark.parametrize("x_shape, w_shape, b_shape, words", [
    ((2, 3), (4, 5), None, "input features"),
    ((2, 3), (4, 3), (5,), "bias"),
    ((2, 3, 1), (4, 3), None, "weight has 3 input features but x has 1 .x shape .2, 3, 1."),
    ((), (4, 3), None, "x must have at least 1 dimension"),
    ((2, 3), (3,), None, "weight must have 2 dimensions"),
])
def test_bad_linear_shapes(x_shape, w_shape, b_shape, words):
    b = None if b_shape is None else np.ones(b_shape)
    with pytest.raises(ValueError, match=words):
        F.linear(np.ones(x_shape), np.ones(w_shape), b)


@pytest.mark.parametrize("samples, workers", [(1, 2), (1, 3), (2, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fewer_samples_than_threads_share_the_output_features(samples, workers, dtype):
    """A prediction of one image: the threads take uneven blocks of the output features (each
    GEMM only its rows of the weights), with the bias, as the sample split would compute."""
    from cnnlab.kernels import cpu

    rng = np.random.default_rng(samples * 10 + workers)
    x = rng.standard_normal((samples, 37)).astype(dtype)
    weight = rng.standard_normal((23, 37)).astype(dtype)
    bias = rng.standard_normal(23).astype(dtype)
    out = np.full((samples, 23), np.nan, dtype)
    cpu.linear_forward(x, weight, bias, out, workers)
    np.testing.assert_allclose(out, naive.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
