"""CPU resizing of (N, C, H, W) images by per-axis sampling tables (each output row and column
reads two input rows or columns with a weight for the second: nearest-neighbour sampling reads
one twice with weight 0), and its backward; one thread per (sample, channel) plane (so the
backward's scatter has no races).

Mirrors :mod:`cnnlab.kernels.cuda.resize`.
"""

import numpy as np
from numba import njit, prange

__all__ = ["resize_backward", "resize_forward"]  # the kernels of this file


@njit(parallel=True, cache=True)
def resize_forward(x, out, rows, row_weights, columns, column_weights):
    """``out[n, c, i, j]``: the mix of ``x[n, c]`` at rows ``rows[i]`` and columns ``columns[j]``
    (int64 ``(out, 2)`` tables) with the second one's weights ``row_weights[i]`` and
    ``column_weights[j]``.

    Row by row: the two input rows are mixed once (a vectorized pass; a weight of 0 takes the
    first row as it is, so nearest-neighbour sampling copies and infinities stay infinite), then
    each output column reads that line at its two columns; an output row with the same sampling
    as the one before (upsampling) is a copy of it."""
    samples, channels = x.shape[0], x.shape[1]
    width = x.shape[3]
    for plane in prange(samples * channels):
        n, c = plane // channels, plane % channels
        source, target = x[n, c], out[n, c]
        line = np.empty(width, x.dtype)
        for i in range(out.shape[2]):
            h0, h1, wh = rows[i, 0], rows[i, 1], row_weights[i]
            if i > 0 and h0 == rows[i - 1, 0] and h1 == rows[i - 1, 1] and wh == row_weights[i - 1]:
                previous, row = target[i - 1], target[i]
                for j in range(out.shape[3]):  # (loops, not slice assignments: those compile slowly)
                    row[j] = previous[j]
                continue
            if wh == 0:
                first = source[h0]
                for w in range(width):
                    line[w] = first[w]
            else:
                top, bottom = source[h0, :], source[h1, :]
                for w in range(width):
                    line[w] = top[w] * (1 - wh) + bottom[w] * wh
            row = target[i]
            for j in range(out.shape[3]):
                w0, ww = columns[j, 0], column_weights[j]
                row[j] = line[w0] if ww == 0 else line[w0] * (1 - ww) + line[columns[j, 1]] * ww


@njit(parallel=True, cache=True)
def resize_backward(grad_out, grad_x, rows, row_weights, columns, column_weights):
    """``grad_x`` (zeroed here) gets each output gradient back at the pixels it was read from,
    with the same weights."""
    samples, channels = grad_x.shape[0], grad_x.shape[1]
    for plane in prange(samples * channels):
        n, c = plane // channels, plane % channels
        for h in range(grad_x.shape[2]):
            for w in range(grad_x.shape[3]):
                grad_x[n, c, h, w] = 0
        for i in range(grad_out.shape[2]):
            h0, h1, wh = rows[i, 0], rows[i, 1], row_weights[i]
            for j in range(grad_out.shape[3]):
                w0, w1, ww = columns[j, 0], columns[j, 1], column_weights[j]
                g = grad_out[n, c, i, j]
                grad_x[n, c, h0, w0] += g * (1 - wh) * (1 - ww)
                grad_x[n, c, h0, w1] += g * (1 - wh) * ww
                grad_x[n, c, h1, w0] += g * wh * (1 - ww)
                grad_x[n, c, h1, w1] += g * wh * ww
