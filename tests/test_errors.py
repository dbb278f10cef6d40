"""Bad input gets a clear TypeError/ValueError naming the argument, never a Numba error."""

import numpy as np
import pytest

import cnnlab.functional as F

X = np.zeros((2, 4, 8, 8), dtype=np.float32)
W = np.zeros((6, 4, 3, 3), dtype=np.float32)


@pytest.mark.parametrize("args, kwargs, error, words", [
    ((X[0, 0], W), {}, ValueError, "x must have 4 dimensions"),
    ((X, W[0]), {}, ValueError, "weight must have 4 dimensions"),
    ((X, np.zeros((6, 3, 3, 3), np.float32)), {}, ValueError, "weight has 3 input channels"),
    ((X, W), dict(bias=np.zeros(5, np.float32)), ValueError, "bias must have 6"),
    ((X, W), dict(bias=np.zeros((6, 1), np.float32)), ValueError, "bias must have 1 dimensions"),
    ((X, np.zeros((6, 2, 3, 3), np.float32)), dict(groups=3), ValueError, "groups=3 must divide the input"),
    ((X, np.zeros((6, 2, 3, 3), np.float32)), dict(groups=4), ValueError, "groups=4 must divide the number of filters"),
    ((X, W), dict(groups=0), ValueError, "groups"),
    ((X, W), dict(groups=1.0), TypeError, "groups"),
    ((X, W), dict(stride=0), ValueError, "stride"),
    ((X, W), dict(stride=(1, -2)), ValueError, "stride"),
    ((X, W), dict(dilation=0), ValueError, "dilation"),
    ((X, W), dict(padding=-1), ValueError, "padding"),
    ((X, W), dict(padding=0.5), TypeError, "padding"),
    ((X, W), dict(padding=(1, 2, 3)), ValueError, "padding"),
    ((X, W), dict(padding="full"), ValueError, "padding"),
    ((X, W), dict(padding="same", stride=2), ValueError, "stride"),
    ((X, np.zeros((6, 4, 11, 3), np.float32)), {}, ValueError, "kernel_size=11"),
    ((X, W), dict(dilation=5), ValueError, "dilation=5"),
    ((np.zeros((2, 4, 0, 8), np.float32), W), {}, ValueError, "x is empty"),
    ((X, np.zeros((0, 4, 3, 3), np.float32)), {}, ValueError, "weight is empty"),
    ((X.astype(np.uint8), W), {}, TypeError, "normalize"),
    ((X.astype(np.int64), W), {}, TypeError, "normalize"),
    ((X.astype(bool), W), {}, TypeError, "x has integer"),
    ((X.astype(np.float16), W), {}, TypeError, "float32 or float64"),
    ((X.astype(np.complex64), W), {}, TypeError, "float32 or float64"),
    ((X, W.astype(np.float64)), {}, TypeError, "weight has dtype float64"),
    ((X, W), dict(bias=np.zeros(6, np.float64)), TypeError, "bias has dtype float64"),
    (("image", W), {}, TypeError, "x must be an array"),
    ((X, None), {}, TypeError, "weight must be an array"),
    ((np.array(["a", "b"]), W), {}, TypeError, "x must have dtype"),
    (([[1, 2], [3]], W), {}, TypeError, "x could not be read"),
])
def test_conv2d_bad_input(args, kwargs, error, words):
    with pytest.raises(error, match=words):
        F.conv2d(*args, **kwargs)


@pytest.mark.parametrize("op", [F.relu, F.sigmoid, F.tanh, F.leaky_relu, F.softmax, F.log_softmax,
                                F.global_avg_pool2d, lambda x: F.max_pool2d(x, 2)])
@pytest.mark.parametrize("bad, error, words", [
    (np.zeros((2, 3, 4, 4), np.uint8), TypeError, "normalize"),
    ("pixels", TypeError, "x must be an array"),
])
def test_every_op_rejects_bad_input(op, bad, error, words):
    with pytest.raises(error, match=words):
        op(bad)


@pytest.mark.parametrize("op", [F.relu, F.sigmoid, F.tanh, F.leaky_relu, F.softmax, F.log_softmax,
                                F.global_avg_pool2d, lambda x: F.max_pool2d(x, 2),
                                lambda x: F.conv2d(x, np.ones((5, 3, 3, 3), np.float32), padding=1)])
def test_an_empty_batch_gives_an_empty_result_and_an_empty_sample_is_refused(op):
    """PyTorch's rule: no samples in, no samples out, of the shape a real batch would give."""
    out = op(np.zeros((0, 3, 4, 4), np.float32))
    expected = op(np.zeros((1, 3, 4, 4), np.float32))
    assert out.shape == (0,) + expected.shape[1:] and out.dtype == np.float32
    with pytest.raises(TypeError, match="normalize"):
        op(np.zeros((0, 3, 4, 4), np.uint8))  # the arguments are checked as for a real batch
    if op not in (F.relu, F.sigmoid, F.tanh, F.leaky_relu, F.softmax, F.log_softmax):  # these take any empty array
        with pytest.raises(ValueError, match="x is empty"):
            op(np.zeros((2, 3, 0, 4), np.float32))


@pytest.mark.parametrize("op", [F.global_avg_pool2d, lambda x: F.pool2d(x, 2)])
def test_pooling_needs_nchw(op):
    """(N, C, H, W), or one (C, H, W) sample as PyTorch takes it; nothing less."""
    with pytest.raises(ValueError, match="4 dimensions"):
        op(np.zeros((4, 4), np.float32))


def test_python_lists_of_floats_are_accepted():
    out = F.conv2d([[[[1.0, 2.0], [3.0, 4.0]]]], [[[[1.0]]]])
    np.testing.assert_array_equal(out, [[[[1, 2], [3, 4]]]])
