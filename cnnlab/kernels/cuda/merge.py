"""GPU merge kernels: broadcast add and multiply, concatenation, global max pooling.

Mirrors :mod:`cnnlab.kernels.cpu.merge`; same names, same parameters (``dims`` and
``b_dims`` are int64 device arrays).
"""

import math

from numba import cuda

from ._launch import launch_shape

__all__ = [  # the kernels of this file
    "add_backward",
    "add_forward",
    "concatenate_backward",
    "concatenate_forward",
    "global_max_pool2d_backward",
    "global_max_pool2d_forward",
    "multiply_backward",
    "multiply_forward",
]


@cuda.jit(device=True)
def _b_index(i, dims, b_dims):
    rest = i
    j = 0
    step = 1
    for k in range(dims.shape[0] - 1, -1, -1):
        if b_dims[k] != 1:
            j += (rest % dims[k]) * step
            step *= b_dims[k]
        rest //= dims[k]
    return j


@cuda.jit(device=True)
def _sum_over_broadcast(grad_out, a, j, repeats, dims, b_dims, times_a):
    total = 0.0
    for r in range(repeats):
        i = 0
        step = 1
        rest_j = j
        rest_r = r
        for k in range(dims.shape[0] - 1, -1, -1):
            if b_dims[k] != 1:
                i += (rest_j % dims[k]) * step
                rest_j //= dims[k]
            else:
                i += (rest_r % dims[k]) * step
                rest_r //= dims[k]
            step *= dims[k]
        total += grad_out[i] * a[i] if times_a else grad_out[i]
    return total


@cuda.jit
def _broadcast_kernel(a, b, out, dims, b_dims, multiply):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        v = b[_b_index(i, dims, b_dims)]
        out[i] = a[i] * v if multiply else a[i] + v


@cuda.jit
def _scaled_copy_kernel(grad_out, b, grad_a, dims, b_dims, multiply):
    for i in range(cuda.grid(1), grad_out.shape[0], cuda.gridsize(1)):
        grad_a[i] = grad_out[i] * b[_b_index(i, dims, b_dims)] if multiply else grad_out[i]


@cuda.jit
def _reduce_kernel(grad_out, a, grad_b, dims, b_dims, multiply):
    repeats = grad_out.shape[0] // grad_b.shape[0]
    for j in range(cuda.grid(1), grad_b.shape[0], cuda.gridsize(1)):
        grad_b[j] = _sum_over_broadcast(grad_out, a, j, repeats, dims, b_dims, multiply)


def add_forward(a, b, out, dims, b_dims):
    """``out = a + b`` with ``b`` broadcast; contract of :func:`cnnlab.kernels.cpu.merge.add_forward`."""
    blocks, threads = launch_shape(out.shape[0])
    _broadcast_kernel[blocks, threads](a, b, out, dims, b_dims, False)


def add_backward(grad_out, grad_a, grad_b, dims, b_dims):
    """``grad_a = grad_out``; ``grad_b`` summed over the broadcast axes."""
    blocks, threads = launch_shape(grad_out.shape[0])
    _scaled_copy_kernel[blocks, threads](grad_out, grad_out, grad_a, dims, b_dims, False)
    blocks, threads = launch_shape(grad_b.shape[0])
    _reduce_kernel[blocks, threads](grad_out, grad_out, grad_b, dims, b_dims, False)


def multiply_forward(a, b, out, dims, b_dims):
    """``out = a * b`` with ``b`` broadcast; contract of :func:`cnnlab.kernels.cpu.merge.multiply_forward`."""
    blocks, threads = launch_shape(out.shape[0])
    _broadcast_kernel[blocks, threads](a, b, out, dims, b_dims, True)


def multiply_backward(a, b, grad_out, grad_a, grad_b, dims, b_dims):
    """``grad_a = grad_out * b``; ``grad_b = grad_out * a`` summed over the broadcast axes."""
    blocks, threads = launch_shape(grad_out.shape[0])
    _scaled_copy_kernel[blocks, threads](grad_out, b, grad_a, dims, b_dims, True)
    blocks, threads = launch_shape(grad_b.shape[0])
    _reduce_kernel[blocks, threads](grad_out, a, grad_b, dims, b_dims, True)


@cuda.jit
def _concatenate_kernel(source, target, offset, into_target):
    # copies between source (outer, K, inner) and target[:, offset:offset + K, :]
    outer, size, inner = source.shape
    for index in range(cuda.grid(1), outer * size * inner, cuda.gridsize(1)):
        i = index % inner
        k = (index // inner) % size
        o = index // (inner * size)
        if into_target:
            target[o, offset + k, i] = source[o, k, i]
        else:
            source[o, k, i] = target[o, offset + k, i]


def concatenate_forward(x, out, offset):
    """Copy ``x`` (outer, K, inner) into ``out[:, offset:offset + K, :]``."""
    blocks, threads = launch_shape(x.size)
    _concatenate_kernel[blocks, threads](x, out, offset, True)


def concatenate_backward(grad_out, grad_x, offset):
    """Copy ``grad_out[:, offset:offset + K, :]`` into ``grad_x`` (outer, K, inner)."""
    blocks, threads = launch_shape(grad_x.size)
    _concatenate_kernel[blocks, threads](grad_x, grad_out, offset, False)


@cuda.jit(device=True)
def _plane_argmax(x, n, c):
    width = x.shape[3]
    best = 0
    best_value = x[n, c, 0, 0]
    for index in range(1, x.shape[2] * width):
        v = x[n, c, index // width, index % width]
        if v > best_value or (math.isnan(v) and not math.isnan(best_value)):
            best = index
            best_value = v
    return best


@cuda.jit
def _global_max_pool2d_forward_kernel(x, out):
    channels, width = x.shape[1], x.shape[3]
    for plane in range(cuda.grid(1), x.shape[0] * channels, cuda.gridsize(1)):
        n = plane // channels
        c = plane % channels
        best = _plane_argmax(x, n, c)
        out[n, c] = x[n, c, best // width, best % width]


@cuda.jit
def _global_max_pool2d_backward_kernel(x, grad_out, grad_x):
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    for plane in range(cuda.grid(1), x.shape[0] * channels, cuda.gridsize(1)):
        n = plane // channels
        c = plane % channels
        best = _plane_argmax(x, n, c)
        for h in range(height):
            for w in range(width):
                grad_x[n, c, h, w] = grad_out[n, c] if h * width + w == best else 0


def global_max_pool2d_forward(x, out):
    """Maximum of every plane; contract of :func:`cnnlab.kernels.cpu.merge.global_max_pool2d_forward`."""
    blocks, threads = launch_shape(out.size)
    _global_max_pool2d_forward_kernel[blocks, threads](x, out)


def global_max_pool2d_backward(x, grad_out, grad_x):
    """Gradient routed to each plane's first maximum (one thread per plane)."""
    blocks, threads = launch_shape(grad_out.size)
    _global_max_pool2d_backward_kernel[blocks, threads](x, grad_out, grad_x)
