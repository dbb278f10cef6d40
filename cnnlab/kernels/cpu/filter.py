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

__all__ = ["correlate2d_forward"]  # the kernels of this file


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
def _filter_pixel(image, kernel, out, m, n, fillvalue, row_start, col_start, boundary):
    """One output pixel with the boundary rule applied to every tap."""
    height, width = image.shape
    kernel_h, kernel_w = kernel.shape
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


@njit(cache=True)
def _filter_row(image, kernel, out, m, fillvalue, row_start, col_start, boundary):
    """Output row ``m``: the columns whose window lies inside the image tap by tap over the
    whole row (contiguous, vectorizable loops, the same order of additions per pixel), the
    others pixel by pixel with the boundary rule."""
    height, width = image.shape
    kernel_h, kernel_w = kernel.shape
    out_w = out.shape[1]
    r0 = row_start + m
    first, last = 0, 0  # interior columns: first <= n < last
    if r0 >= 0 and r0 + kernel_h <= height:
        first = min(max(0, -col_start), out_w)
        last = max(first, min(out_w, width - kernel_w - col_start + 1))
    inside = out[m, first:last]
    for j in range(kernel_h):
        if last == first:
            break
        for k in range(kernel_w):
            weight = kernel[j, k]
            # slices starting at 0: no negative-index handling in the loop, so it vectorizes
            source = image[r0 + j, first + col_start + k:last + col_start + k]
            for n in range(inside.shape[0]):
                inside[n] += weight * source[n]
    for n in range(0, first):
        _filter_pixel(image, kernel, out, m, n, fillvalue, row_start, col_start, boundary)
    for n in range(last, out_w):
        _filter_pixel(image, kernel, out, m, n, fillvalue, row_start, col_start, boundary)


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
