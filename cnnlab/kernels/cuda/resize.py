"""GPU resizing by per-axis sampling tables: one thread per output element for the forward, one
per (sample, channel) plane for the backward's scatter (no atomics).

Mirrors :mod:`cnnlab.kernels.cpu.resize`; same names, same parameters.
"""

from numba import cuda

from ._launch import launch_shape

__all__ = ["resize_backward", "resize_forward"]  # the kernels of this file


@cuda.jit
def _resize_kernel(x, out, rows, row_weights, columns, column_weights):
    channels, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    for index in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        j = index % out_w
        i = (index // out_w) % out_h
        c = (index // (out_w * out_h)) % channels
        n = index // (out_w * out_h * channels)
        h0, h1, wh = rows[i, 0], rows[i, 1], row_weights[i]
        w0, w1, ww = columns[j, 0], columns[j, 1], column_weights[j]
        # a weight of 0 takes the first sample as it is (inf * 0 would be NaN), as the CPU kernel
        top = x[n, c, h0, w0] if ww == 0 else x[n, c, h0, w0] * (1 - ww) + x[n, c, h0, w1] * ww
        if wh == 0:
            out[n, c, i, j] = top
        else:
            bottom = x[n, c, h1, w0] if ww == 0 else x[n, c, h1, w0] * (1 - ww) + x[n, c, h1, w1] * ww
            out[n, c, i, j] = top * (1 - wh) + bottom * wh


@cuda.jit
def _resize_backward_kernel(grad_out, grad_x, rows, row_weights, columns, column_weights):
    samples, channels = grad_x.shape[0], grad_x.shape[1]
    for plane in range(cuda.grid(1), samples * channels, cuda.gridsize(1)):
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


def resize_forward(x, out, rows, row_weights, columns, column_weights):
    """Sample ``out`` from ``x``; contract of :func:`cnnlab.kernels.cpu.resize.resize_forward`."""
    blocks, threads = launch_shape(out.size)
    _resize_kernel[blocks, threads](x, out, rows, row_weights, columns, column_weights)


def resize_backward(grad_out, grad_x, rows, row_weights, columns, column_weights):
    """Scatter ``grad_out`` back into ``grad_x``; contract of the CPU twin."""
    blocks, threads = launch_shape(grad_x.shape[0] * grad_x.shape[1])
    _resize_backward_kernel[blocks, threads](grad_out, grad_x, rows, row_weights, columns, column_weights)
