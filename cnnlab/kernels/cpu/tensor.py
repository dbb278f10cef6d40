"""CPU data movement and batch statistics: gathering rows, permuting axes, summing a batch's loss
and hits.

Mirrors :mod:`cnnlab.kernels.cuda.tensor`.
"""

import numpy as np
from numba import njit, prange

__all__ = ["classification_totals", "gather_rows", "transpose_forward"]  # the kernels of this file


@njit(parallel=True, cache=True)
def gather_rows(source, index, out):
    """``out[k] = source[index[k]]`` for 2-D ``source`` and ``out`` (a mini-batch of samples)."""
    for k in prange(index.shape[0]):
        row = index[k]
        for j in range(source.shape[1]):
            out[k, j] = source[row, j]


@njit(cache=True)
def classification_totals(losses, probabilities, targets, totals):
    """``totals[0] += sum(losses)``; ``totals[1] +=`` the samples whose most probable class
    (the first on ties) is the target.  ``totals`` is a float64 pair, kept across steps."""
    loss_sum = 0.0
    hits = 0
    for n in range(losses.shape[0]):
        loss_sum += losses[n]
        best = 0
        for k in range(1, probabilities.shape[1]):
            if probabilities[n, k] > probabilities[n, best]:
                best = k
        if best == targets[n]:
            hits += 1
    totals[0] += loss_sum
    totals[1] += hits


@njit(parallel=True, cache=True)
def transpose_forward(x, out, out_shape, source_strides):
    """``out`` (flat, C order) = ``x`` (flat) with its axes permuted: output element of multi-index
    ``i`` (in ``out_shape``) is input element ``sum(i[k] * source_strides[k])`` (the input's
    element strides, in the output's axis order). A row of the last axis at a time: its first
    input offset found once, then one step along the input per element."""
    last = out_shape.shape[0] - 1
    inner = out_shape[last]
    step = source_strides[last]
    for row in prange(out.shape[0] // inner):
        first = row * inner
        source = _source_offset(first, out_shape, source_strides)
        for k in range(inner):
            out[first + k] = x[source + k * step]


@njit(cache=True)
def _source_offset(position, out_shape, source_strides):
    """The flat input offset of the output element at flat ``position``."""
    rest = np.int64(position)  # prange's index is unsigned: int64 keeps the arithmetic in integers
    source = np.int64(0)
    for k in range(out_shape.shape[0] - 1, -1, -1):
        source += (rest % out_shape[k]) * source_strides[k]
        rest //= out_shape[k]
    return source
