"""GPU activations: grid-stride element-wise kernels, and softmax over one axis.

Mirrors :mod:`cnnlab.kernels.cpu.activation`; same names, same parameters.
"""

import math

from numba import cuda

from ._launch import launch_shape

__all__ = [  # the kernels of this file
    "clip_backward",
    "clip_forward",
    "hardsigmoid_backward",
    "hardsigmoid_forward",
    "hardswish_backward",
    "hardswish_forward",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "log_softmax_backward",
    "log_softmax_forward",
    "relu_backward",
    "relu_forward",
    "sigmoid_backward",
    "sigmoid_forward",
    "silu_backward",
    "silu_forward",
    "softmax_backward",
    "softmax_forward",
    "tanh_backward",
    "tanh_forward",
]


@cuda.jit
def _relu_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        out[i] = 0 if v < 0 else v  # NaN stays NaN


@cuda.jit
def _leaky_relu_kernel(x, out, negative_slope):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        out[i] = v if v > 0 else negative_slope * v


@cuda.jit
def _sigmoid_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        if v >= 0:
            out[i] = 1.0 / (1.0 + math.exp(-v))
        else:
            e = math.exp(v)
            out[i] = e / (1.0 + e)


@cuda.jit
def _tanh_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = math.tanh(x[i])


@cuda.jit
def _softmax_kernel(x, out, take_log):
    outer, size, inner = x.shape
    for task in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = task // inner
        i = task % inner
        largest = x[o, 0, i]
        for k in range(1, size):
            largest = max(largest, x[o, k, i])
        total = 0.0
        for k in range(size):
            total += math.exp(x[o, k, i] - largest)
        if take_log:
            shift = largest + math.log(total)
            for k in range(size):
                out[o, k, i] = x[o, k, i] - shift
        else:
            for k in range(size):
                out[o, k, i] = math.exp(x[o, k, i] - largest) / total


def relu_forward(x, out):
    """``out = max(x, 0)`` element-wise (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _relu_kernel[blocks, threads](x, out)


def leaky_relu_forward(x, out, negative_slope):
    """``out = x if x > 0 else negative_slope * x`` element-wise (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _leaky_relu_kernel[blocks, threads](x, out, negative_slope)


def sigmoid_forward(x, out):
    """Logistic sigmoid element-wise, without overflow (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _sigmoid_kernel[blocks, threads](x, out)


def tanh_forward(x, out):
    """``out = tanh(x)`` element-wise (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _tanh_kernel[blocks, threads](x, out)


def softmax_forward(x, out):
    """Softmax over axis 1 of ``x`` viewed as (outer, K, inner)."""
    blocks, threads = launch_shape(x.shape[0] * x.shape[2])
    _softmax_kernel[blocks, threads](x, out, False)


def log_softmax_forward(x, out):
    """Log-softmax over axis 1 of ``x`` viewed as (outer, K, inner)."""
    blocks, threads = launch_shape(x.shape[0] * x.shape[2])
    _softmax_kernel[blocks, threads](x, out, True)


@cuda.jit
def _relu_backward_kernel(x, grad_out, grad_x):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        grad_x[i] = grad_out[i] if x[i] > 0 else 0


@cuda.jit
def _leaky_relu_backward_kernel(x, grad_out, grad_x, negative_slope):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        grad_x[i] = grad_out[i] if x[i] > 0 else negative_slope * grad_out[i]


@cuda.jit
def _sigmoid_backward_kernel(y, grad_out, grad_x):
    for i in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
        grad_x[i] = grad_out[i] * y[i] * (1 - y[i])


@cuda.jit
def _tanh_backward_kernel(y, grad_out, grad_x):
    for i in range(cuda.grid(1), y.shape[0], cuda.gridsize(1)):
        grad_x[i] = grad_out[i] * (1 - y[i] * y[i])


@cuda.jit
def _softmax_backward_kernel(y, grad_out, grad_x, take_log):
    outer, size, inner = y.shape
    for task in range(cuda.grid(1), outer * inner, cuda.gridsize(1)):
        o = task // inner
        i = task % inner
        total = 0.0
        for k in range(size):
            total += grad_out[o, k, i] if take_log else grad_out[o, k, i] * y[o, k, i]
        for k in range(size):
            if take_log:
                grad_x[o, k, i] = grad_out[o, k, i] - math.exp(y[o, k, i]) * total
            else:
                grad_x[o, k, i] = y[o, k, i] * (grad_out[o, k, i] - total)


def relu_backward(x, grad_out, grad_x):
    """``grad_x = grad_out * (x > 0)`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _relu_backward_kernel[blocks, threads](x, grad_out, grad_x)


def leaky_relu_backward(x, grad_out, grad_x, negative_slope):
    """``grad_x = grad_out * (1 if x > 0 else negative_slope)`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _leaky_relu_backward_kernel[blocks, threads](x, grad_out, grad_x, negative_slope)


def sigmoid_backward(y, grad_out, grad_x):
    """``grad_x = grad_out * y * (1 - y)`` (1-D device arrays)."""
    blocks, threads = launch_shape(y.shape[0])
    _sigmoid_backward_kernel[blocks, threads](y, grad_out, grad_x)


def tanh_backward(y, grad_out, grad_x):
    """``grad_x = grad_out * (1 - y**2)`` (1-D device arrays)."""
    blocks, threads = launch_shape(y.shape[0])
    _tanh_backward_kernel[blocks, threads](y, grad_out, grad_x)


def softmax_backward(y, grad_out, grad_x):
    """Softmax gradient along axis 1 of (outer, K, inner) views."""
    blocks, threads = launch_shape(y.shape[0] * y.shape[2])
    _softmax_backward_kernel[blocks, threads](y, grad_out, grad_x, False)


def log_softmax_backward(y, grad_out, grad_x):
    """Log-softmax gradient along axis 1 of (outer, K, inner) views."""
    blocks, threads = launch_shape(y.shape[0] * y.shape[2])
    _softmax_backward_kernel[blocks, threads](y, grad_out, grad_x, True)


@cuda.jit(device=True)
def _sigmoid(v):
    if v >= 0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@cuda.jit
def _clip_kernel(x, out, low, high):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        out[i] = low if v < low else (high if v > high else v)


@cuda.jit
def _clip_backward_kernel(x, grad_out, grad_x, low, high):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        grad_x[i] = grad_out[i] if low < x[i] < high else 0


@cuda.jit
def _hardsigmoid_kernel(x, out, alpha, beta):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        z = alpha * x[i] + beta
        out[i] = 0 if z < 0 else (1 if z > 1 else z)


@cuda.jit
def _hardsigmoid_backward_kernel(x, grad_out, grad_x, alpha, beta):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        z = alpha * x[i] + beta
        grad_x[i] = alpha * grad_out[i] if 0 < z < 1 else 0


@cuda.jit
def _hardswish_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        out[i] = v * min(max(v + 3.0, 0.0), 6.0) / 6.0


@cuda.jit
def _hardswish_backward_kernel(x, grad_out, grad_x):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        grad_x[i] = 0 if v < -3 else (grad_out[i] * (v / 3 + 0.5) if v <= 3 else grad_out[i])


@cuda.jit
def _silu_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = x[i] * _sigmoid(x[i])


@cuda.jit
def _silu_backward_kernel(x, grad_out, grad_x):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        s = _sigmoid(x[i])
        grad_x[i] = grad_out[i] * s * (1 + x[i] * (1 - s))


def clip_forward(x, out, low, high):
    """``out = min(max(x, low), high)`` element-wise (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _clip_kernel[blocks, threads](x, out, low, high)


def clip_backward(x, grad_out, grad_x, low, high):
    """``grad_x = grad_out`` where ``low < x < high``, else 0 (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _clip_backward_kernel[blocks, threads](x, grad_out, grad_x, low, high)


def hardsigmoid_forward(x, out, alpha, beta):
    """``out = max(0, min(1, alpha * x + beta))`` element-wise (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _hardsigmoid_kernel[blocks, threads](x, out, alpha, beta)


def hardsigmoid_backward(x, grad_out, grad_x, alpha, beta):
    """``grad_x = alpha * grad_out`` where ``0 < alpha * x + beta < 1``, else 0 (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _hardsigmoid_backward_kernel[blocks, threads](x, grad_out, grad_x, alpha, beta)


def hardswish_forward(x, out):
    """``out = x * min(max(x + 3, 0), 6) / 6`` element-wise (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _hardswish_kernel[blocks, threads](x, out)


def hardswish_backward(x, grad_out, grad_x):
    """Hardswish gradient, PyTorch's rule (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _hardswish_backward_kernel[blocks, threads](x, grad_out, grad_x)


def silu_forward(x, out):
    """``out = x * sigmoid(x)`` element-wise, without overflow (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _silu_kernel[blocks, threads](x, out)


def silu_backward(x, grad_out, grad_x):
    """``grad_x = grad_out * s * (1 + x * (1 - s))`` with ``s = sigmoid(x)`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _silu_backward_kernel[blocks, threads](x, grad_out, grad_x)
