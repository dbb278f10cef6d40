"""CPU activations: element-wise loops over flat arrays, and softmax over one axis.

Element-wise kernels take 1-D (flattened) arrays; softmax kernels take the
input viewed as ``(outer, K, inner)`` and normalize over the middle axis.

Mirrors :mod:`cnnlab.kernels.cuda.activation`.
"""

import math

import numpy as np
from numba import njit, prange

from ._exp import ONE, exp_neg_abs, tanh
from ._schedule import run_split

_ZERO, _THREE, _SIX = np.float32(0.0), np.float32(3.0), np.float32(6.0)

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


@njit(cache=True, nogil=True, error_model="numpy")
def _relu_forward_items(x, out, first, last):
    x, out = x[first:last], out[first:last]  # indices from 0: no negative-index test, the loop vectorizes
    for i in range(x.shape[0]):
        v = x[i]
        out[i] = 0 if v < 0 else v  # NaN stays NaN


def relu_forward(x, out):
    """``out = max(x, 0)`` element-wise (1-D arrays)."""
    run_split(_relu_forward_items, x.shape[0], x.shape[0], x, out)


@njit(parallel=True, cache=True)
def leaky_relu_forward(x, out, negative_slope):
    """``out = x if x > 0 else negative_slope * x`` element-wise (1-D arrays)."""
    for i in prange(x.shape[0]):
        v = x[i]
        out[i] = v if v > 0 else negative_slope * v


@njit(cache=True, error_model="numpy")  # no zero-division test in the loops that call it
def _sigmoid(v):
    # e = exp(-|v|) never overflows; one expression for both signs (a select, no branch), so
    # that loops of it vectorize
    e = exp_neg_abs(v)
    s = ONE / (ONE + e)
    return s if v >= 0 else e * s


@njit(parallel=True, cache=True)
def sigmoid_forward(x, out):
    """``out = 1 / (1 + exp(-x))`` element-wise, without overflow (1-D arrays)."""
    for i in prange(x.shape[0]):
        out[i] = _sigmoid(x[i])


@njit(parallel=True, cache=True, error_model="numpy")
def tanh_forward(x, out):
    """``out = tanh(x)`` element-wise (1-D arrays)."""
    for i in prange(x.shape[0]):
        out[i] = tanh(x[i])


SOFTMAX_BLOCK = 256  # positions along the inner axis one share of a strided softmax takes at a time


def softmax_forward(x, out):
    """Softmax over axis 1 of ``x`` viewed as (outer, K, inner); max-shifted, so stable.

    With ``inner`` 1 (the last axis) each row is three contiguous passes (the maximum, the
    exponentials and their float64 sum, the division); otherwise a block of up to
    :data:`SOFTMAX_BLOCK` positions along the inner axis goes through the same three passes
    together, a contiguous stretch of each of the K rows at a time. Either way every inner loop
    is one the compiler vectorizes (the exponential is :func:`._exp.exp_neg_abs` of the
    shifted value, which is at most 0; the sums are kept in eight lanes, or, for rows of at
    least :data:`LONG_ROW`, summed in reassociable additions and their maximum taken by
    :func:`_wide_max`: a recognizer's 40 rows of 18,710 classes on 2 threads took 487 us with
    eight lanes, 301 us so, scratch timings)."""
    outer, size, inner = x.shape
    if inner == 1:
        run_split(_softmax_rows, outer, 2 * x.size, x.reshape(outer, size), out.reshape(outer, size))
    else:
        blocks = -(-inner // SOFTMAX_BLOCK)
        run_split(_softmax_blocks, outer * blocks, 2 * x.size, x, out, blocks)


LONG_ROW = 512  # a softmax row at least this long takes its maximum and sum in the wide forms below
_WIDE = 256  # the running maxima of a long row: one per position of a block this long


@njit(cache=True, nogil=True, error_model="numpy")  # x / 0 as in a prange: no test per element
def _softmax_rows(x, out, first, last):
    size = x.shape[1]
    whole = size - size % 8  # the passes with a running result keep it in 8 lanes, so that they vectorize
    highest = np.empty(max(8, _WIDE), x.dtype)
    lanes = np.empty(8, np.float64)
    for o in range(first, last):
        row, dest = x[o], out[o]
        if size >= LONG_ROW:
            largest = _wide_max(row, highest)
        else:
            largest = row[0]  # (a NaN anywhere makes every output NaN below, whatever this picks)
            if whole:
                for j in range(8):
                    highest[j] = row[j]
                for k in range(8, whole, 8):
                    for j in range(8):
                        highest[j] = max(highest[j], row[k + j])
                for j in range(8):
                    largest = max(largest, highest[j])
            for k in range(whole, size):
                largest = max(largest, row[k])
        for k in range(size):
            dest[k] = exp_neg_abs(row[k] - largest)
        # (in float64: the product rounds to the float32 quotient but once in ~1e8)
        scale = 1.0 / (_float64_sum(dest) if size >= LONG_ROW else _sum_in_lanes(dest, lanes))
        for k in range(size):
            dest[k] = dest[k] * scale


@njit(cache=True, inline="always")
def _wide_max(row, highest):
    """The largest of ``row`` (at least :data:`_WIDE` long; a NaN may or may not be picked:
    softmax's output is NaN either way), with ``highest`` (scratch, :data:`_WIDE` long) holding
    one running maximum per position of a block: the loop over a block is element-wise and
    vectorizes, where a running maximum in eight lanes did not (one thread, 40 rows of 18,710:
    210 -> 53 us). The block is a view indexed by the loop's counter (an index plus a variable
    may be negative for the compiler, whose wraparound keeps a loop scalar)."""
    size = row.shape[0]
    whole = size - size % _WIDE
    start = row[:_WIDE]
    for j in range(_WIDE):
        highest[j] = start[j]
    for k in range(_WIDE, whole, _WIDE):
        block = row[k:]
        for j in range(_WIDE):
            v = block[j]
            highest[j] = v if v > highest[j] else highest[j]
    largest = highest[0]
    for j in range(_WIDE):
        largest = max(largest, highest[j])
    for k in range(whole, size):
        largest = max(largest, row[k])
    return largest


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _float64_sum(values):
    """The float64 sum of the 1-D ``values``, its additions free to be reordered (``reassoc``),
    so that the compiler splits it into vectors of running sums: one running sum is a chain of
    dependent additions (a 32x32 plane 12 us, against 3.3 us summed this way, the plane read from memory). Not
    inlined by Numba, which would compile it with its caller's strict flags. A convolution's
    bias gradient, batch normalization's statistics."""
    total = 0.0
    for k in range(values.shape[0]):
        total += values[k]
    return total


@njit(cache=True, nogil=True, inline="always")  # (inlined: a call per short plane cost 40 %)
def _sum_in_lanes(values, lanes):
    """The float64 sum of the 1-D ``values``, kept in the eight float64 ``lanes`` (scratch) over
    whole groups of eight and then added up with the rest: independent running sums, so that
    the loop vectorizes (one running sum is a chain of dependent additions, about 0.55 ns an
    element against 0.1). Softmax's normalizer and global average pooling's plane sums."""
    size = values.shape[0]
    whole = size - size % 8
    for j in range(8):
        lanes[j] = 0.0
    for k in range(0, whole, 8):
        for j in range(8):
            lanes[j] += values[k + j]
    total = 0.0
    for j in range(8):
        total += lanes[j]
    for k in range(whole, size):
        total += values[k]
    return total


@njit(cache=True, nogil=True, error_model="numpy")
def _softmax_blocks(x, out, blocks, first, last):
    size, inner = x.shape[1], x.shape[2]
    largest = np.empty(SOFTMAX_BLOCK, x.dtype)
    total = np.empty(SOFTMAX_BLOCK, np.float64)
    for task in range(first, last):
        o, start = task // blocks, (task % blocks) * SOFTMAX_BLOCK
        width = min(SOFTMAX_BLOCK, inner - start)
        for j in range(width):
            largest[j] = x[o, 0, start + j]
            total[j] = 0.0
        for k in range(1, size):
            row = x[o, k, start:start + width]
            for j in range(width):
                largest[j] = max(largest[j], row[j])
        for k in range(size):
            row, dest = x[o, k, start:start + width], out[o, k, start:start + width]
            for j in range(width):
                e = exp_neg_abs(row[j] - largest[j])
                dest[j] = e
                total[j] += e
        for k in range(size):
            dest = out[o, k, start:start + width]
            for j in range(width):
                dest[j] = dest[j] / total[j]


@njit(parallel=True, cache=True)
def log_softmax_forward(x, out):
    """Log-softmax over axis 1 of ``x`` viewed as (outer, K, inner): ``x - max - log(sum(exp(x - max)))``."""
    outer, size, inner = x.shape
    for task in prange(outer * inner):
        o = task // inner
        i = task % inner
        largest = x[o, 0, i]
        for k in range(1, size):
            largest = max(largest, x[o, k, i])
        total = 0.0
        for k in range(size):
            total += math.exp(x[o, k, i] - largest)
        shift = largest + math.log(total)
        for k in range(size):
            out[o, k, i] = x[o, k, i] - shift


@njit(cache=True, nogil=True, error_model="numpy")
def _relu_backward_items(x, grad_out, grad_x, first, last):
    x, grad_out, grad_x = x[first:last], grad_out[first:last], grad_x[first:last]  # (as _relu_forward_items)
    for i in range(x.shape[0]):
        grad_x[i] = grad_out[i] if x[i] > 0 else 0


def relu_backward(x, grad_out, grad_x):
    """``grad_x = grad_out * (x > 0)`` (1-D arrays; the forward input ``x``)."""
    run_split(_relu_backward_items, x.shape[0], x.shape[0], x, grad_out, grad_x)


@njit(parallel=True, cache=True)
def leaky_relu_backward(x, grad_out, grad_x, negative_slope):
    """``grad_x = grad_out * (1 if x > 0 else negative_slope)`` (1-D arrays)."""
    for i in prange(x.shape[0]):
        grad_x[i] = grad_out[i] if x[i] > 0 else negative_slope * grad_out[i]


@njit(parallel=True, cache=True)
def sigmoid_backward(y, grad_out, grad_x):
    """``grad_x = grad_out * y * (1 - y)`` from the forward output ``y`` (1-D arrays)."""
    for i in prange(y.shape[0]):
        grad_x[i] = grad_out[i] * y[i] * (1 - y[i])


@njit(parallel=True, cache=True)
def tanh_backward(y, grad_out, grad_x):
    """``grad_x = grad_out * (1 - y**2)`` from the forward output ``y`` (1-D arrays)."""
    for i in prange(y.shape[0]):
        grad_x[i] = grad_out[i] * (1 - y[i] * y[i])


@njit(parallel=True, cache=True)
def softmax_backward(y, grad_out, grad_x):
    """``grad_x = y * (grad_out - sum(grad_out * y))`` along axis 1 of (outer, K, inner) views."""
    outer, size, inner = y.shape
    for task in prange(outer * inner):
        o = task // inner
        i = task % inner
        dot = 0.0
        for k in range(size):
            dot += grad_out[o, k, i] * y[o, k, i]
        for k in range(size):
            grad_x[o, k, i] = y[o, k, i] * (grad_out[o, k, i] - dot)


@njit(parallel=True, cache=True)
def log_softmax_backward(y, grad_out, grad_x):
    """``grad_x = grad_out - exp(y) * sum(grad_out)`` along axis 1, ``y`` the log-probabilities."""
    outer, size, inner = y.shape
    for task in prange(outer * inner):
        o = task // inner
        i = task % inner
        total = 0.0
        for k in range(size):
            total += grad_out[o, k, i]
        for k in range(size):
            grad_x[o, k, i] = grad_out[o, k, i] - math.exp(y[o, k, i]) * total


@njit(parallel=True, cache=True)
def clip_forward(x, out, low, high):
    """``out = min(max(x, low), high)`` element-wise (1-D arrays; NaN stays NaN)."""
    for i in prange(x.shape[0]):
        v = x[i]
        out[i] = low if v < low else (high if v > high else v)


@njit(parallel=True, cache=True)
def clip_backward(x, grad_out, grad_x, low, high):
    """``grad_x = grad_out`` where ``low < x < high``, else 0 (PyTorch's hardtanh rule)."""
    for i in prange(x.shape[0]):
        grad_x[i] = grad_out[i] if low < x[i] < high else 0


@njit(parallel=True, cache=True)
def hardsigmoid_forward(x, out, alpha, beta):
    """``out = max(0, min(1, alpha * x + beta))`` element-wise (1-D arrays)."""
    for i in prange(x.shape[0]):
        z = alpha * x[i] + beta
        out[i] = 0 if z < 0 else (1 if z > 1 else z)


@njit(parallel=True, cache=True)
def hardsigmoid_backward(x, grad_out, grad_x, alpha, beta):
    """``grad_x = alpha * grad_out`` where ``0 < alpha * x + beta < 1``, else 0 (1-D arrays)."""
    for i in prange(x.shape[0]):
        z = alpha * x[i] + beta
        grad_x[i] = alpha * grad_out[i] if 0 < z < 1 else 0


@njit(parallel=True, cache=True)
def hardswish_forward(x, out):
    """``out = x * min(max(x + 3, 0), 6) / 6`` element-wise (1-D arrays), in ``x``'s dtype
    (:func:`_hardswish`, as the convolution's epilogue computes it)."""
    for i in prange(x.shape[0]):
        out[i] = _hardswish(x[i])


@njit(cache=True)
def _hardswish(v):
    """``v * min(max(v + 3, 0), 6) / 6`` with float32 constants (exact: 0, 3 and 6), so that a
    float32 ``v`` is computed in float32 (float64 constants would make the loops of it float64,
    half as wide), a float64 one in float64."""
    return v * min(max(v + _THREE, _ZERO), _SIX) / _SIX


@njit(parallel=True, cache=True)
def hardswish_backward(x, grad_out, grad_x):
    """``grad_x = grad_out * (0 if x < -3, x / 3 + 1/2 if x <= 3, else 1)`` (PyTorch's rule)."""
    for i in prange(x.shape[0]):
        v = x[i]
        grad_x[i] = 0 if v < -3 else (grad_out[i] * (v / 3 + 0.5) if v <= 3 else grad_out[i])


@njit(parallel=True, cache=True)
def silu_forward(x, out):
    """``out = x * sigmoid(x)`` element-wise, without overflow (1-D arrays)."""
    for i in prange(x.shape[0]):
        out[i] = x[i] * _sigmoid(x[i])


@njit(parallel=True, cache=True)
def silu_backward(x, grad_out, grad_x):
    """``grad_x = grad_out * s * (1 + x * (1 - s))`` with ``s = sigmoid(x)`` (1-D arrays)."""
    for i in prange(x.shape[0]):
        s = _sigmoid(x[i])
        grad_x[i] = grad_out[i] * s * (1 + x[i] * (1 - s))
