"""CPU 2-D image filtering with scipy.signal's boundary rules.

``correlate2d_forward`` computes, for every output pixel ``(m, n)``,
``sum_{j,k} kernel[j, k] * image[row_start + m + j, col_start + n + k]``,
where an index outside the image is resolved by the boundary rule: the fill
value, a periodic wrap, or a symmetric reflection (edge pixel repeated).
Modes and convolution are expressed by ``row_start``/``col_start`` and a
flipped kernel, chosen by :mod:`cnnlab.filters`.

Mirrors :mod:`cnnlab.kernels.cuda.filter`.
"""

from numba import njit, prange

from .. import BOUNDARY_FILL, BOUNDARY_WRAP


@njit(cache=True)
def _resolve(index, size, boundary):
    """Map an out-of-range index into ``[0, size)``, or -1 for the fill value."""
    if 0 <= index < size:
        return index
    if boundary == BOUNDARY_FILL:
        return -1
    if boundary == BOUNDARY_WRAP:
        return index % size  # Python semantics: non-negative for a positive size
    # BOUNDARY_SYMM: ... 2 1 0 | 0 1 2 ... n-1 | n-1 n-2 ...
    period = index % (2 * size) if index >= 0 else (-index - 1) % (2 * size)
    return period if period < size else 2 * size - period - 1


@njit(cache=True)
def _filter_row(image, kernel, out, m, fillvalue, row_start, col_start, boundary):
    height, width = image.shape
    kernel_h, kernel_w = kernel.shape
    out_w = out.shape[1]
    r0 = row_start + m
    rows_inside = r0 >= 0 and r0 + kernel_h <= height
    for n in range(out_w):
        c0 = col_start + n
        acc = out[m, n]  # zero of the output dtype
        if rows_inside and c0 >= 0 and c0 + kernel_w <= width:
            for j in range(kernel_h):
                for k in range(kernel_w):
                    acc += kernel[j, k] * image[r0 + j, c0 + k]
        else:
            for j in range(kernel_h):
                r = _resolve(r0 + j, height, boundary)
                for k in range(kernel_w):
                    c = _resolve(c0 + k, width, boundary)
                    if r < 0 or c < 0:
                        acc += kernel[j, k] * fillvalue
                    else:
                        acc += kernel[j, k] * image[r, c]
        out[m, n] = acc


@njit(parallel=True, cache=True)
def correlate2d_forward(image, kernel, out, fillvalue, row_start, col_start, boundary):
    """Correlate a 2-D ``image`` with a 2-D ``kernel`` into ``out`` (zero-filled on entry).

    Parameters
    ----------
    image : (H, W) array
    kernel : (KH, KW) array of the same dtype
    out : (OH, OW) array of the same dtype, all zeros on entry
    fillvalue : scalar of the same dtype, used by ``BOUNDARY_FILL``
    row_start, col_start : int
        Image coordinates of the window of output pixel (0, 0).
    boundary : int
        ``BOUNDARY_FILL``, ``BOUNDARY_WRAP`` or ``BOUNDARY_SYMM``.
    """
    for m in prange(out.shape[0]):
        _filter_row(image, kernel, out, m, fillvalue, row_start, col_start, boundary)
