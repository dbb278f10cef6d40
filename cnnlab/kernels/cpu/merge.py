"""CPU merge kernels: add and multiply with a broadcast second operand, concatenation along
one axis, and the global max pooling that squeeze-excitation and classifier heads use.

Add and multiply take flat (1-D) arrays and the broadcast geometry as two int64 arrays:
``dims``, the shape of ``a`` (and of the output), and ``b_dims``, the shape of ``b`` with
1 on every broadcast axis (same length; adjacent axes may be merged beforehand).
Concatenation takes ``(outer, K, inner)`` views and the offset along ``K``.

Mirrors :mod:`cnnlab.kernels.cuda.merge`.
"""

import math

import numpy as np
from numba import njit, prange

from ._broadcast import ADD, MULTIPLY, operand_index, run_binary

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


@njit(cache=True)
def _sum_over_broadcast(grad_out, a, j, repeats, dims, b_dims, times_a):
    """Sum of ``grad_out[i]`` (times ``a[i]`` when ``times_a``) over the ``repeats`` flat
    indices ``i`` of ``a`` that meet ``b``'s flat index ``j``; accumulated in float64."""
    total = 0.0
    for r in range(repeats):
        i = 0
        step = 1
        rest_j = np.int64(j)
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


def add_forward(a, b, out, dims, b_dims):
    """``out = a + b`` with ``b`` broadcast over the axes where ``b_dims`` is 1 (the vectorized
    worker of :mod:`._broadcast`, a row segment at a time)."""
    run_binary(a, b, out, dims, dims, b_dims, ADD)


@njit(parallel=True, cache=True)
def add_backward(grad_out, grad_a, grad_b, dims, b_dims):
    """``grad_a = grad_out``; ``grad_b`` = ``grad_out`` summed over the broadcast axes."""
    repeats = grad_out.shape[0] // grad_b.shape[0]
    for i in prange(grad_out.shape[0]):
        grad_a[i] = grad_out[i]
        if repeats == 1:  # nothing broadcast: a copy (not an index walk per element)
            grad_b[i] = grad_out[i]
    if repeats > 1:
        for j in prange(grad_b.shape[0]):
            grad_b[j] = _sum_over_broadcast(grad_out, grad_out, j, repeats, dims, b_dims, False)


def multiply_forward(a, b, out, dims, b_dims):
    """``out = a * b`` with ``b`` broadcast over the axes where ``b_dims`` is 1 (as
    :func:`add_forward`)."""
    run_binary(a, b, out, dims, dims, b_dims, MULTIPLY)


@njit(parallel=True, cache=True)
def multiply_backward(a, b, grad_out, grad_a, grad_b, dims, b_dims):
    """``grad_a = grad_out * b`` (broadcast); ``grad_b`` = ``grad_out * a`` summed over the
    broadcast axes."""
    for i in prange(grad_out.shape[0]):
        grad_a[i] = grad_out[i] * b[operand_index(i, dims, b_dims)]
    repeats = grad_out.shape[0] // grad_b.shape[0]
    for j in prange(grad_b.shape[0]):
        grad_b[j] = _sum_over_broadcast(grad_out, a, j, repeats, dims, b_dims, True)


@njit(parallel=True, cache=True)
def concatenate_forward(x, out, offset):
    """Copy ``x`` (outer, K, inner) into ``out[:, offset:offset + K, :]``."""
    outer, size, inner = x.shape
    for row in prange(outer * size):
        o = row // size
        k = row % size
        for i in range(inner):
            out[o, offset + k, i] = x[o, k, i]


@njit(parallel=True, cache=True)
def concatenate_backward(grad_out, grad_x, offset):
    """Copy ``grad_out[:, offset:offset + K, :]`` into ``grad_x`` (outer, K, inner)."""
    outer, size, inner = grad_x.shape
    for row in prange(outer * size):
        o = row // size
        k = row % size
        for i in range(inner):
            grad_x[o, k, i] = grad_out[o, offset + k, i]


@njit(cache=True)
def _plane_argmax(x, n, c):
    """Flat index ``h * W + w`` of the maximum of plane ``(n, c)``: the first one on ties, the
    first NaN if there is one (NaN propagates, as in max pooling)."""
    width = x.shape[3]
    best = 0
    best_value = x[n, c, 0, 0]
    for index in range(1, x.shape[2] * width):
        v = x[n, c, index // width, index % width]
        if v > best_value or (math.isnan(v) and not math.isnan(best_value)):
            best = index
            best_value = v
    return best


@njit(parallel=True, cache=True)
def global_max_pool2d_forward(x, out):
    """Maximum of every (H, W) plane of ``x`` (N, C, H, W) into ``out`` (N, C)."""
    channels, width = x.shape[1], x.shape[3]
    for plane in prange(x.shape[0] * channels):
        n = plane // channels
        c = plane % channels
        best = _plane_argmax(x, n, c)
        out[n, c] = x[n, c, best // width, best % width]


@njit(parallel=True, cache=True)
def global_max_pool2d_backward(x, grad_out, grad_x):
    """Gradient of :func:`global_max_pool2d_forward`: ``grad_out[n, c]`` to the element the
    forward picked, 0 elsewhere."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    for plane in prange(x.shape[0] * channels):
        n = plane // channels
        c = plane % channels
        best = _plane_argmax(x, n, c)
        for h in range(height):
            for w in range(width):
                grad_x[n, c, h, w] = grad_out[n, c] if h * width + w == best else 0
