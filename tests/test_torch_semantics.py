"""cnnlab.functional follows PyTorch where PyTorch accepts more: one sample without its batch
axis, linear on (..., in), batch norm on (N, C) and (N, C, L), 0-d in gives 0-d out, and
one-element sizes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnlab
import cnnlab.functional as F

RNG = np.random.default_rng(0)
X = RNG.standard_normal((3, 7, 6)).astype(np.float32)  # one (C, H, W) sample
W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)


@pytest.mark.parametrize("op", [
    lambda x: F.conv2d(x, W, np.ones(4, np.float32), padding=1, stride=(2,)),
    lambda x: F.max_pool2d(x, 2),
    lambda x: F.avg_pool2d(x, 3, stride=1, padding=1, ceil_mode=True),
    lambda x: F.pool2d(x, 2, mode="median"),
    lambda x: F.global_avg_pool2d(x),
    lambda x: F.global_max_pool2d(x),
])
def test_an_unbatched_sample_gives_the_batched_result_without_its_batch_axis(op):
    batched = op(X[None])
    single = op(X)
    assert single.shape == batched.shape[1:]
    np.testing.assert_array_equal(single, batched[0])


def test_unbatched_pooling_with_indices_drops_the_batch_axis_of_both():
    out, indices = F.max_pool2d(X, 2, return_indices=True)
    batched_out, batched_indices = F.max_pool2d(X[None], 2, return_indices=True)
    np.testing.assert_array_equal(out, batched_out[0])
    np.testing.assert_array_equal(indices, batched_indices[0])


@pytest.mark.usefixtures("small_cuda_launches")
def test_an_unbatched_sample_on_the_gpu():
    out = F.conv2d(cnnlab.to_device(X), cnnlab.to_device(W), padding=1)
    np.testing.assert_allclose(cnnlab.to_host(out), F.conv2d(X[None], W, padding=1)[0], rtol=1e-5, atol=1e-5)


@settings(max_examples=20)
@given(st.lists(st.integers(1, 4), min_size=0, max_size=3))
def test_linear_keeps_any_leading_axes(leading):
    x = RNG.standard_normal((*leading, 5))
    weight, bias = RNG.standard_normal((3, 5)), RNG.standard_normal(3)
    out = F.linear(x, weight, bias)
    assert out.shape == (*leading, 3)
    np.testing.assert_allclose(out, x @ weight.T + bias, rtol=1e-12, atol=1e-12)
    upstream = RNG.standard_normal(out.shape)
    grad_x, grad_weight, grad_bias = F.linear_backward(x, weight, upstream)
    rows, grads = x.reshape(-1, 5), upstream.reshape(-1, 3)
    np.testing.assert_allclose(grad_x, upstream @ weight, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_weight, grads.T @ rows, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_bias, grads.sum(0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 7), (2, 3, 4, 5), (2, 3, 2, 2, 2)])
def test_batch_norm_takes_n_c_and_any_more_axes(shape):
    x = RNG.standard_normal(shape)
    gamma, beta = RNG.standard_normal(3), RNG.standard_normal(3)
    out, mean, variance = F.batch_norm2d(x, gamma, beta)
    axes = (0,) + tuple(range(2, len(shape)))
    reshape = (1, 3) + (1,) * (len(shape) - 2)
    expected = (x - x.mean(axes).reshape(reshape)) / np.sqrt(x.var(axes).reshape(reshape) + 1e-5)
    np.testing.assert_allclose(out, expected * gamma.reshape(reshape) + beta.reshape(reshape), atol=1e-10)
    grad_x, grad_gamma, _ = F.batch_norm2d_backward(x, np.ones(shape), mean, variance, gamma)
    assert grad_x.shape == shape and grad_gamma.shape == (3,)
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, ...\)"):
        F.batch_norm2d(x.reshape(-1), gamma, beta)


@pytest.mark.parametrize("op", [F.relu, F.sigmoid, F.tanh, F.silu, F.hardswish, F.relu6])
def test_a_0d_input_gives_a_0d_output(op):
    out = op(np.float64(-0.5))
    assert out.shape == ()
    np.testing.assert_allclose(out, op(np.array([-0.5]))[0])


def test_one_element_sizes_stand_for_both_axes():
    x = X[None]
    np.testing.assert_array_equal(F.conv2d(x, W, padding=(1,), stride=(2,), dilation=(1,)),
                                  F.conv2d(x, W, padding=1, stride=2))
    np.testing.assert_array_equal(F.max_pool2d(x, (2,), stride=(1,)), F.max_pool2d(x, 2, stride=1))
    assert cnnlab.output_size(7, 3, padding=(1,)) == 7


def test_an_unbatched_dask_sample_gives_the_in_memory_result():
    da = pytest.importorskip("dask.array")
    out = F.conv2d(da.from_array(X, chunks=(3, 4, 3)), W, padding=1)
    assert out.shape == (4, 7, 6)
    np.testing.assert_allclose(out.compute(scheduler="sync"), F.conv2d(X, W, padding=1), rtol=1e-6, atol=1e-6)


def test_empty_batches_through_linear_and_on_the_gpu():
    out = F.linear(np.zeros((0, 5)), np.ones((3, 5)))
    assert out.shape == (0, 3)
    with pytest.raises(ValueError, match="input features"):
        F.linear(np.zeros((0, 4)), np.ones((3, 5)))  # checked as for a real batch
    gpu = F.conv2d(cnnlab.to_device(np.zeros((0, 3, 7, 6), np.float32)), cnnlab.to_device(W), padding=1)
    assert not isinstance(gpu, np.ndarray) and tuple(gpu.shape) == (0, 4, 7, 6)


def naive_window_sums(x, kernel, stride, padding, ceil_mode):
    """Every window's sum over the zero-padded input (PyTorch's windows, ceil_mode included)."""
    n, c, h, w = x.shape
    padded = np.zeros((n, c, h + 2 * padding + kernel, w + 2 * padding + kernel))
    padded[:, :, padding:padding + h, padding:padding + w] = x
    sizes = []
    for size in (h, w):
        span = size + 2 * padding - kernel
        out = (-(-span // stride) if ceil_mode else span // stride) + 1
        if ceil_mode and (out - 1) * stride >= size + padding:
            out -= 1
        sizes.append(out)
    out = np.empty((n, c, *sizes))
    for i in range(sizes[0]):
        for j in range(sizes[1]):
            out[:, :, i, j] = padded[:, :, i * stride:i * stride + kernel, j * stride:j * stride + kernel].sum((2, 3))
    return out


@settings(max_examples=20)
@given(st.integers(1, 3), st.integers(1, 3), st.integers(0, 1), st.booleans(), st.integers(1, 12),
       st.integers(4, 8), st.integers(4, 8))
def test_divisor_override_divides_each_window_sum(kernel, stride, padding, ceil_mode, divisor, height, width):
    padding = min(padding, kernel // 2)
    x = RNG.standard_normal((2, 3, height, width))
    options = dict(ceil_mode=ceil_mode, divisor_override=divisor)
    out = F.avg_pool2d(x, kernel, stride, padding, **options)
    expected = naive_window_sums(x, kernel, stride, padding, ceil_mode) / divisor
    assert out.shape == F.avg_pool2d(x, kernel, stride, padding, ceil_mode=ceil_mode).shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    upstream = RNG.standard_normal(out.shape)
    grad = F.pool2d_backward(x, out, upstream, kernel, stride, padding, "avg", **options)

    def loss():
        return float(np.sum(F.avg_pool2d(x, kernel, stride, padding, **options) * upstream))

    from naive import numeric_gradient
    np.testing.assert_allclose(grad, numeric_gradient(loss, x), rtol=1e-6, atol=1e-8)


def test_divisor_override_bad_values():
    with pytest.raises(ValueError, match="divisor_override"):
        F.avg_pool2d(X[None], 2, divisor_override=0)
    with pytest.raises(TypeError, match="divisor_override"):
        F.avg_pool2d(X[None], 2, divisor_override=1.5)
    with pytest.raises(ValueError, match="divisor_override applies to mode 'avg' only"):
        F.pool2d_backward(X[None], None, np.ones((1, 3, 3, 3)), 2, mode="max", divisor_override=2)


@pytest.mark.usefixtures("small_cuda_launches")
def test_divisor_override_on_the_gpu():
    x = RNG.standard_normal((2, 3, 5, 5)).astype(np.float32)
    out = F.avg_pool2d(cnnlab.to_device(x), 3, 2, 1, ceil_mode=True, divisor_override=4)
    np.testing.assert_allclose(cnnlab.to_host(out), F.avg_pool2d(x, 3, 2, 1, ceil_mode=True, divisor_override=4),
                               rtol=1e-5, atol=1e-6)
    grad = F.pool2d_backward(cnnlab.to_device(x), out, cnnlab.to_device(np.ones(out.shape, np.float32)), 3, 2, 1,
                             "avg", ceil_mode=True, divisor_override=4)
    expected = F.pool2d_backward(x, None, np.ones(out.shape, np.float32), 3, 2, 1, "avg", ceil_mode=True,
                                 divisor_override=4)
    np.testing.assert_allclose(cnnlab.to_host(grad), expected, rtol=1e-5, atol=1e-6)


def test_softmax_of_a_scalar_empty_softmax_and_norms_and_dropout_of_everything():
    """PyTorch's edge cases: softmax over a 0-d tensor's only axis is 1 (log-softmax 0); an empty
    tensor gives an empty result; dropout with p = 1 zeroes everything."""
    import cnnlab.functional as F

    assert float(F.softmax(np.array(3.0, np.float32), 0)) == 1.0
    assert float(F.log_softmax(np.array(3.0, np.float32), -1)) == 0.0
    assert F.softmax(np.zeros((5, 0, 0), np.float32), -1).shape == (5, 0, 0)
    assert F.layer_norm(np.zeros((0, 3), np.float32), 3).shape == (0, 3)
    assert F.group_norm(np.zeros((0, 4, 2), np.float32), 2).shape == (0, 4, 2)
    out, mask = F.dropout(np.ones(4, np.float32), 1.0, 0)
    assert not out.any() and not mask.any()
