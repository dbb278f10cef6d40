"""GPU 2-D image filtering with scipy.signal's boundary rules; one thread per output pixel.

Mirrors :mod:`cnnlab.kernels.cpu.filter`; same name, same parameters.
"""

from numba import cuda

from .. import BOUNDARY_FILL, BOUNDARY_WRAP
from ._launch import launch_shape

__all__ = ["correlate2d_forward"]  # the kernels of this file


@cuda.jit(device=True)
def _resolve(index, size, boundary):
    if 0 <= index < size:
        return index
    if boundary == BOUNDARY_FILL:
        return -1
    if boundary == BOUNDARY_WRAP:
        return index % size
    period = index % (2 * size) if index >= 0 else (-index - 1) % (2 * size)
    return period if period < size else 2 * size - period - 1


@cuda.jit
def _correlate2d_kernel(image, kernel, out, fillvalue, row_start, col_start, boundary):
    height, width = image.shape
    kernel_h, kernel_w = kernel.shape
    out_h, out_w = out.shape
    for index in range(cuda.grid(1), out_h * out_w, cuda.gridsize(1)):
        m = index // out_w
        n = index % out_w
        acc = out[m, n]  # zero of the output dtype
        for j in range(kernel_h):
            r = _resolve(row_start + m + j, height, boundary)
            for k in range(kernel_w):
                c = _resolve(col_start + n + k, width, boundary)
                if r < 0 or c < 0:
                    acc += kernel[j, k] * fillvalue
                else:
                    acc += kernel[j, k] * image[r, c]
        out[m, n] = acc


def correlate2d_forward(image, kernel, out, fillvalue, row_start, col_start, boundary):
    """Correlate ``image`` with ``kernel`` into zero-filled ``out``; contract of
    :func:`cnnlab.kernels.cpu.filter.correlate2d_forward`."""
    blocks, threads = launch_shape(out.size)
    _correlate2d_kernel[blocks, threads](image, kernel, out, fillvalue, row_start, col_start,
                                         boundary)
