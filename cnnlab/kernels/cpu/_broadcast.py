"""Broadcasting binary operations on the CPU: the one worker behind add, subtract, multiply,
divide, power, maximum and minimum (:mod:`.merge`, :mod:`.elementwise`).

Operands and output are flat arrays; ``dims`` is the output's shape and ``a_dims``, ``b_dims``
the operands' shapes with 1 on every axis they are broadcast along (one length; adjacent axes
of the same kind merged beforehand, so that equal shapes are one axis). The worker goes
through its share of the output a *row segment* at a time (a stretch of the last axis): each
operand either varies along it (a contiguous slice) or is one value for the whole segment, so
every inner loop is a plain slice loop that the compiler vectorizes; an operand's index is
computed once per segment, not per element. An equal-shape or scalar operation is one segment
per thread.
"""

import numpy as np
from numba import njit

from ._schedule import run_split

ADD, SUBTRACT, MULTIPLY, DIVIDE, POWER, MAXIMUM, MINIMUM = range(7)  # the operations' codes


@njit(cache=True)
def operand_index(i, dims, x_dims):
    """Flat index into an operand of shape ``x_dims`` (1 where broadcast) of the element that
    output element ``i`` (of shape ``dims``) reads."""
    rest = np.int64(i)  # a prange index may be unsigned: signed arithmetic throughout
    j = 0
    step = 1
    for k in range(dims.shape[0] - 1, -1, -1):
        if x_dims[k] != 1:
            j += (rest % dims[k]) * step
            step *= x_dims[k]
        rest //= dims[k]
    return j


@njit(cache=True)
def maximum(u, v):
    return u if u > v or u != u else v  # NaN in either gives NaN, as numpy.maximum


@njit(cache=True)
def minimum(u, v):
    return u if u < v or u != u else v


@njit(cache=True, inline="always", error_model="numpy")
def apply(op, u, v):
    """``u op v`` for an operation code (division by 0 gives +-inf or NaN, a negative base to a
    fractional power NaN, as NumPy)."""
    if op == ADD:
        return u + v
    if op == SUBTRACT:
        return u - v
    if op == MULTIPLY:
        return u * v
    if op == DIVIDE:
        return u / v
    if op == MAXIMUM:
        return maximum(u, v)
    if op == MINIMUM:
        return minimum(u, v)
    return u * u if v == 2 else u ** v  # LayerNorm's square written as Pow: one multiply


@njit(cache=True, nogil=True, error_model="numpy")
def _both_vary(x, y, out, op):
    # one loop per operation once the compiler takes the invariant test on op out of it
    for k in range(out.shape[0]):
        out[k] = apply(op, x[k], y[k])


@njit(cache=True, nogil=True, error_model="numpy")
def _one_varies(x, value, out, op, value_first):
    if value_first:
        for k in range(out.shape[0]):
            out[k] = apply(op, value, x[k])
    else:
        for k in range(out.shape[0]):
            out[k] = apply(op, x[k], value)


@njit(cache=True, nogil=True, error_model="numpy")
def binary_items(a, b, out, dims, a_dims, b_dims, op, first, last):
    """``out[i] = a[.] op b[.]`` for the output elements ``first .. last-1`` (a serial worker of
    :func:`cnnlab.kernels.cpu._schedule.run_split`)."""
    axis = dims.shape[0] - 1
    inner = dims[axis]
    a_varies, b_varies = a_dims[axis] != 1, b_dims[axis] != 1
    i = first
    while i < last:
        start = i - i % inner  # the segment: from i to the end of its row or of the share
        end = min(start + inner, last)
        n = end - i
        ja = operand_index(start, dims, a_dims) + (i - start if a_varies else 0)
        jb = operand_index(start, dims, b_dims) + (i - start if b_varies else 0)
        segment = out[i:end]
        if a_varies and b_varies:
            _both_vary(a[ja:ja + n], b[jb:jb + n], segment, op)
        elif a_varies:
            _one_varies(a[ja:ja + n], b[jb], segment, op, False)
        elif b_varies:
            _one_varies(b[jb:jb + n], a[ja], segment, op, True)
        else:
            value = apply(op, a[ja], b[jb])
            for k in range(n):  # (a loop, not a slice assignment: that compiles slowly)
                segment[k] = value
        i = end


def run_binary(a, b, out, dims, a_dims, b_dims, op):
    """``out = a op b`` (:func:`binary_items` over the whole output), shared between threads by
    :func:`cnnlab.kernels.cpu._schedule.run_split`. An element costs about a third of an
    element visit (the unit of ``config.PARALLEL_MIN_WORK``): the vectorized loop takes 0.2 to
    0.3 ns an element; an addition of 16K elements ran in 12 us on one thread and 20 us on two,
    of 64K in 20 and 22 to 26 us, of 256K in 48 to 52 and 39 to 43 us (``bench/thread_split.py``)."""
    run_split(binary_items, out.shape[0], out.shape[0] // 3, a, b, out, dims, a_dims, b_dims, op)
