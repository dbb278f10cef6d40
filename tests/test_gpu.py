"""The GPU twins equal the CPU kernels; results stay on the GPU.

Without a GPU these run under Numba's CUDA simulator (see conftest.py), with
tiny blocks and a capped grid so that several blocks run and every
grid-stride loop goes round more than once.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from scipy import signal
from strategies import arrays, conv_geometries, pool_geometries

import cnnlab
import cnnlab.functional as F
from cnnlab import filters
from cnnlab.device import is_gpu_array

pytestmark = pytest.mark.usefixtures("small_cuda_launches")


def test_a_gpu_or_the_simulator_is_there():
    """The GPU twins are always exercised: a silent skip would hide them."""
    assert cnnlab.cuda_available()


def on_gpu(*arrays_):
    return [cnnlab.to_device(a) if a is not None else None for a in arrays_]


def assert_gpu_equals_cpu(gpu_result, cpu_result, dtype):
    assert is_gpu_array(gpu_result)
    host = cnnlab.to_host(gpu_result)
    assert host.dtype == cpu_result.dtype and host.shape == cpu_result.shape
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(host, cpu_result, rtol=tol, atol=tol)


@settings(max_examples=8)
@given(conv_geometries(max_size=4))
def test_conv2d_gpu_equals_cpu(g):
    rng = np.random.default_rng(0)
    x = arrays(rng, (g["samples"], g["channels"], g["height"], g["width"]), g["dtype"])
    w = arrays(rng, (g["filters"], g["channels"] // g["groups"]) + g["kernel"], g["dtype"])
    b = arrays(rng, (g["filters"],), g["dtype"]) if g["bias"] else None
    geometry = (g["stride"], g["padding"], g["dilation"], g["groups"])
    assert_gpu_equals_cpu(F.conv2d(*on_gpu(x, w, b), *geometry), F.conv2d(x, w, b, *geometry), g["dtype"])


@pytest.mark.parametrize("tile", [0, 3])
def test_conv2d_direct_and_tiled_kernels_agree(tile):
    """Both GPU forward kernels (config.GPU_CONV_TILE = 0 is the direct one), including
    partial tiles, partial filter blocks, groups, stride and dilation."""
    from cnnlab import config

    rng = np.random.default_rng(20)
    x = rng.standard_normal((2, 4, 7, 5)).astype(np.float32)
    w = rng.standard_normal((10, 2, 3, 2)).astype(np.float32)
    b = rng.standard_normal(10).astype(np.float32)
    previous = config.GPU_CONV_TILE
    config.GPU_CONV_TILE = tile
    try:
        gpu = F.conv2d(*on_gpu(x, w, b), stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    finally:
        config.GPU_CONV_TILE = previous
    assert_gpu_equals_cpu(gpu, F.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2), groups=2), np.float32)


def test_conv2d_too_large_for_shared_memory_uses_the_direct_kernel():
    from cnnlab.kernels.cuda.conv import _tiled_launch

    x, w = on_gpu(np.ones((1, 1, 12, 12), np.float32), np.ones((1, 1, 9, 9), np.float32))
    out = cnnlab.to_device(np.zeros((1, 1, 4, 4), np.float32))
    assert _tiled_launch(x, w, out, 1, 1, 1, 1, 1) is None  # 81 taps > MAX_TAPS
    np.testing.assert_allclose(cnnlab.to_host(F.conv2d(x, w)), np.full((1, 1, 4, 4), 81.0))


@settings(max_examples=10)
@given(pool_geometries())
def test_pool2d_gpu_equals_cpu(g):
    x = arrays(np.random.default_rng(1), (1, g["channels"], g["height"], g["width"]), g["dtype"])
    args = (g["kernel"], g["stride"], g["padding"], g["mode"])
    assert_gpu_equals_cpu(F.pool2d(cnnlab.to_device(x), *args), F.pool2d(x, *args), g["dtype"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_gpu_equal_cpu(dtype):
    x = np.random.default_rng(2).standard_normal((2, 3, 2, 2)).astype(dtype) * 5
    x[0, 0, 0, 0] = 1e4
    x[0, 1, 0, 0] = -1e4
    gx = cnnlab.to_device(x)
    for op in (F.relu, F.leaky_relu, F.sigmoid, F.tanh, F.softmax, F.log_softmax, F.global_avg_pool2d,
               lambda a: F.leaky_relu(a, 0.3), lambda a: F.softmax(a, axis=-1), lambda a: F.log_softmax(a, 0)):
        assert_gpu_equals_cpu(op(gx), op(x), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_gpu_equals_cpu(dtype):
    rng = np.random.default_rng(3)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in [(3, 5), (4, 5), (4,)])
    assert_gpu_equals_cpu(F.linear(*on_gpu(x, w, b)), F.linear(x, w, b), dtype)
    assert_gpu_equals_cpu(F.linear(*on_gpu(x, w)), F.linear(x, w), dtype)


@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
@pytest.mark.parametrize("mode", ["full", "same", "valid"])
def test_filters_gpu_equal_scipy(mode, boundary):
    rng = np.random.default_rng(4)
    image = rng.integers(0, 255, size=(5, 4)).astype(np.uint8)
    kernel = rng.standard_normal((3, 2))
    for ours, theirs in [(filters.correlate2d, signal.correlate2d), (filters.convolve2d, signal.convolve2d)]:
        gpu = ours(*on_gpu(image, kernel), mode, boundary, 2)
        assert is_gpu_array(gpu)
        expected = theirs(image, kernel, mode, boundary, 2)
        np.testing.assert_allclose(cnnlab.to_host(gpu), expected, rtol=1e-12, atol=1e-9)
    # 'valid' with the operands swapped (scipy flips the result)
    gpu = filters.correlate2d(*on_gpu(kernel, image.astype(np.float64)), "valid")
    np.testing.assert_allclose(cnnlab.to_host(gpu), signal.correlate2d(kernel, image.astype(np.float64), "valid"))


def test_textbook_examples_on_gpu():
    image = np.array([[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3],
                      [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]], dtype=np.float32)
    kernel = np.array([[0, 1, 2], [2, 2, 0], [0, 1, 2]], dtype=np.float32)
    out = F.conv2d(*on_gpu(image[None, None], kernel[None, None]))
    np.testing.assert_array_equal(cnnlab.to_host(out)[0, 0], [[12, 12, 17], [10, 17, 19], [9, 6, 14]])
    pooled = F.max_pool2d(cnnlab.to_device(np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)), 2)
    np.testing.assert_array_equal(cnnlab.to_host(pooled)[0, 0], [[5, 7], [13, 15]])


def test_mixed_devices_name_the_argument():
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    with pytest.raises(TypeError, match="weight is on the cuda"):
        F.conv2d(x, cnnlab.to_device(w))
    with pytest.raises(TypeError, match="bias is on the cuda"):
        F.conv2d(x, w, cnnlab.to_device(np.ones(1, np.float32)))
    with pytest.raises(TypeError, match="weight is on the cpu"):
        F.linear(cnnlab.to_device(np.ones((1, 2))), np.ones((1, 2)))


def test_gpu_input_errors_are_the_same():
    with pytest.raises(TypeError, match="normalize"):
        F.relu(cnnlab.to_device(np.ones(3, np.uint8)))
    with pytest.raises(ValueError, match="4 dimensions"):
        F.conv2d(cnnlab.to_device(np.ones((4, 4), np.float32)), cnnlab.to_device(np.ones((1, 1, 3, 3), np.float32)))


def test_to_device_and_back():
    x = np.arange(6.0).reshape(2, 3)
    d = cnnlab.to_device(x)
    assert is_gpu_array(d) and cnnlab.to_device(d) is d
    np.testing.assert_array_equal(cnnlab.to_host(d), x)
    np.testing.assert_array_equal(cnnlab.to_device(x.T).copy_to_host(), x.T)  # non-contiguous input


def test_launches_in_these_tests_use_several_looping_blocks():
    from cnnlab.kernels.cuda._launch import launch_shape

    assert launch_shape(100) == (3, 4)  # 12 threads for 100 items: every thread loops


# ----------------------------------------------------------------------------- backward twins


@settings(max_examples=6)
@given(conv_geometries(max_size=3))
def test_conv2d_backward_gpu_equals_cpu(g):
    rng = np.random.default_rng(10)
    x = arrays(rng, (g["samples"], g["channels"], g["height"], g["width"]), g["dtype"])
    w = arrays(rng, (g["filters"], g["channels"] // g["groups"]) + g["kernel"], g["dtype"])
    geometry = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"], groups=g["groups"])
    upstream = arrays(rng, F.conv2d(x, w, **geometry).shape, g["dtype"])
    cpu = F.conv2d_backward(x, w, upstream, **geometry)
    gpu = F.conv2d_backward(*on_gpu(x, w, upstream), **geometry)
    for ours, theirs in zip(gpu, cpu):
        assert_gpu_equals_cpu(ours, theirs, g["dtype"])


@pytest.mark.parametrize("groups", [1, 2])
def test_flipped_weight_gpu_equals_cpu(groups):
    from cnnlab.kernels import cpu, cuda

    w = np.random.default_rng(15).standard_normal((4 * groups, 3, 3, 2)).astype(np.float32)
    host = np.empty((3 * groups, 4, 3, 2), np.float32)
    cpu.conv2d_flipped_weight(w, groups, host)
    device = cnnlab.to_device(np.zeros_like(host))
    cuda.conv2d_flipped_weight(cnnlab.to_device(w), groups, device)
    np.testing.assert_array_equal(cnnlab.to_host(device), host)


@pytest.mark.parametrize("w_shape, groups", [((6, 6, 3, 3), 1), ((6, 1, 3, 3), 6), ((4, 6, 1, 1), 1)])
def test_stride_one_input_gradient_as_a_convolution_gpu_equals_cpu(w_shape, groups):
    """The input gradient that both devices compute as a convolution with the flipped weight."""
    rng = np.random.default_rng(16)
    x = arrays(rng, (2, 6, 5, 4), np.float32)
    w = arrays(rng, w_shape, np.float32)
    padding = w_shape[2] // 2
    upstream = arrays(rng, F.conv2d(x, w, padding=padding, groups=groups).shape, np.float32)
    cpu = F.conv2d_backward(x, w, upstream, padding=padding, groups=groups)
    gpu = F.conv2d_backward(*on_gpu(x, w, upstream), padding=padding, groups=groups)
    for ours, theirs in zip(gpu, cpu):
        assert_gpu_equals_cpu(ours, theirs, np.float32)


@settings(max_examples=10)
@given(pool_geometries())
def test_pool2d_backward_gpu_equals_cpu(g):
    rng = np.random.default_rng(11)
    size = g["channels"] * g["height"] * g["width"]
    x = (rng.permutation(size).reshape(1, g["channels"], g["height"], g["width"]) - size / 2).astype(g["dtype"])
    arguments = dict(kernel_size=g["kernel"], stride=g["stride"], padding=g["padding"], mode=g["mode"])
    out = F.pool2d(x, **arguments)
    upstream = arrays(rng, out.shape, g["dtype"])
    assert_gpu_equals_cpu(F.pool2d_backward(*on_gpu(x, out, upstream), **arguments),
                          F.pool2d_backward(x, out, upstream, **arguments), g["dtype"])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_backward_gpu_equal_cpu(dtype):
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 2, 2)).astype(dtype)
    upstream = rng.standard_normal(x.shape).astype(dtype)
    gx, gu = on_gpu(x, upstream)
    pairs = [
        (F.relu_backward, x), (lambda s, g: F.leaky_relu_backward(s, g, 0.1), x),
        (F.sigmoid_backward, F.sigmoid(x)), (F.tanh_backward, F.tanh(x)),
        (F.softmax_backward, F.softmax(x)), (F.log_softmax_backward, F.log_softmax(x)),
        (F.dropout_backward, F.dropout(x, 0.5, 3)[1]),
    ]
    for backward, saved in pairs:
        assert_gpu_equals_cpu(backward(cnnlab.to_device(saved), gu), backward(saved, upstream), dtype)
    assert_gpu_equals_cpu(F.global_avg_pool2d_backward(gx, cnnlab.to_device(upstream[:, :, 0, 0].copy())),
                          F.global_avg_pool2d_backward(x, upstream[:, :, 0, 0].copy()), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dropout_gpu_drops_the_same_elements(dtype):
    x = np.random.default_rng(13).standard_normal((3, 40)).astype(dtype)
    out, mask = F.dropout(x, 0.4, seed=123)
    gpu_out, gpu_mask = F.dropout(cnnlab.to_device(x), 0.4, seed=123)
    np.testing.assert_array_equal(cnnlab.to_host(gpu_mask), mask)
    assert_gpu_equals_cpu(gpu_out, out, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_backward_and_losses_gpu_equal_cpu(dtype):
    rng = np.random.default_rng(14)
    x, w, upstream = (rng.standard_normal(s).astype(dtype) for s in [(3, 5), (4, 5), (3, 4)])
    for ours, theirs in zip(F.linear_backward(*on_gpu(x, w, upstream)), F.linear_backward(x, w, upstream)):
        assert_gpu_equals_cpu(ours, theirs, dtype)
    targets = np.array([0, 3, 1])
    loss, probabilities = F.cross_entropy(upstream, targets)
    gpu_loss, gpu_probabilities = F.cross_entropy(cnnlab.to_device(upstream), cnnlab.to_device(targets))
    assert gpu_loss == pytest.approx(loss, rel=1e-6)
    assert_gpu_equals_cpu(gpu_probabilities, probabilities, dtype)
    assert_gpu_equals_cpu(F.cross_entropy_backward(gpu_probabilities, cnnlab.to_device(targets)),
                          F.cross_entropy_backward(probabilities, targets), dtype)
    prediction, target = upstream, np.ones_like(upstream)
    assert F.mse(*on_gpu(prediction, target)) == pytest.approx(F.mse(prediction, target), rel=1e-6)
    assert_gpu_equals_cpu(F.mse_backward(*on_gpu(prediction, target)), F.mse_backward(prediction, target), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_gpu_equals_cpu(dtype):
    rng = np.random.default_rng(15)
    x = rng.standard_normal((2, 3, 2, 2)).astype(dtype)
    gamma, beta = rng.standard_normal((2, 3)).astype(dtype)
    upstream = rng.standard_normal(x.shape).astype(dtype)
    out, mean, variance = F.batch_norm2d(x, gamma, beta)
    gpu_out, gpu_mean, gpu_variance = F.batch_norm2d(*on_gpu(x, gamma, beta))
    for ours, theirs in [(gpu_out, out), (gpu_mean, mean), (gpu_variance, variance)]:
        assert_gpu_equals_cpu(ours, theirs, dtype)
    cpu_grads = F.batch_norm2d_backward(x, upstream, mean, variance, gamma)
    gpu_grads = F.batch_norm2d_backward(*on_gpu(x, upstream), gpu_mean, gpu_variance, cnnlab.to_device(gamma))
    for ours, theirs in zip(gpu_grads, cpu_grads):
        assert_gpu_equals_cpu(ours, theirs, dtype)
    running = np.zeros(3, dtype)
    gpu_running = cnnlab.to_device(running.copy())
    F.running_average(running, variance, 0.1, 1.5)
    F.running_average(gpu_running, gpu_variance, 0.1, 1.5)
    assert_gpu_equals_cpu(gpu_running, running, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_optimizer_steps_gpu_equal_cpu(dtype):
    rng = np.random.default_rng(16)
    param, grad = rng.standard_normal((2, 7)).astype(dtype)
    cpu = [param.copy(), np.zeros_like(param)]
    gpu = on_gpu(param, np.zeros_like(param))
    for _ in range(3):
        F.sgd_update(cpu[0], grad, cpu[1], 0.1, 0.9, 0.01, True)
        F.sgd_update(gpu[0], cnnlab.to_device(grad), gpu[1], 0.1, 0.9, 0.01, True)
    assert_gpu_equals_cpu(gpu[0], cpu[0], dtype)
    cpu = [param.copy(), np.zeros_like(param), np.zeros_like(param)]
    gpu = on_gpu(param, np.zeros_like(param), np.zeros_like(param))
    for step in range(1, 4):
        F.adam_update(cpu[0], grad, cpu[1], cpu[2], step, 0.01, weight_decay=0.1)
        F.adam_update(gpu[0], cnnlab.to_device(grad), gpu[1], gpu[2], step, 0.01, weight_decay=0.1)
    assert_gpu_equals_cpu(gpu[0], cpu[0], dtype)


def test_gather_rows_and_classification_totals_gpu_equal_cpu():
    rng = np.random.default_rng(17)
    x = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    index = np.array([4, 0, 4, 2], dtype=np.int64)
    assert_gpu_equals_cpu(F.gather_rows(*on_gpu(x, index)), F.gather_rows(x, index), np.float32)
    np.testing.assert_array_equal(F.gather_rows(x, index), x[index])
    labels = np.array([0, 2, 1, 1], dtype=np.int64)
    losses, probabilities = F.cross_entropy_per_sample(x[:4, 0, 0], labels)
    totals = np.zeros(2)
    F.add_classification_totals(losses, probabilities, labels, totals)
    gpu_totals = cnnlab.to_device(np.zeros(2))
    F.add_classification_totals(*on_gpu(losses, probabilities, labels), gpu_totals)
    np.testing.assert_allclose(cnnlab.to_host(gpu_totals), totals, rtol=1e-6)
    assert totals[0] == pytest.approx(float(losses.sum()), rel=1e-6)
    assert totals[1] == (probabilities.argmax(axis=1) == labels).sum()
