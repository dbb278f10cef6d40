"""CPU pooling: threads share the (sample, channel) planes.

``mode`` is one of the integer codes of :mod:`cnnlab.kernels` (max, avg,
min, median, lp).  Padding is virtual and may differ on the four sides: max
ignores padded positions (as if padded with -inf), min likewise (+inf), avg
counts them as zeros in its divisor or not (``count_include_pad``).  The
output shape says how many windows there are, so ``ceil_mode``'s partial
last windows need nothing more than the bounds checks.

Mirrors :mod:`cnnlab.kernels.cuda.pool`.
"""

import math

import numpy as np
from numba import njit

from .. import POOL_AVG, POOL_MAX, POOL_MEDIAN, POOL_MIN
from ._schedule import run_shared, run_split
from .activation import _sum_in_lanes

__all__ = [  # the kernels of this file
    "global_avg_pool2d_backward",
    "global_avg_pool2d_forward",
    "pool2d_backward",
    "pool2d_backward_with_indices",
    "pool2d_forward",
    "pool2d_forward_with_indices",
]


@njit(cache=True)
def _avg_divisor(h0, w0, kernel_h, kernel_w, height, width, pad_bottom, pad_right, count_include_pad):
    """What the sum of the (undilated) window at ``(h0, w0)`` is divided by: with
    ``count_include_pad`` the window clipped to the end of the padded input (PyTorch's rule for
    a ``ceil_mode`` window running past it), else the number of input pixels it covers."""
    if count_include_pad:
        rows = min(h0 + kernel_h, height + pad_bottom) - h0
        cols = min(w0 + kernel_w, width + pad_right) - w0
    else:
        rows = min(h0 + kernel_h, height) - max(h0, 0)
        cols = min(w0 + kernel_w, width) - max(w0, 0)
    return rows * cols


@njit(cache=True)
def _pool_pixel(plane, out_plane, oh, ow, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                pad_bottom, pad_right, dilation_h, dilation_w, mode, count_include_pad, window):
    """One output pixel: gather its window's in-range values into ``window``, then reduce."""
    height, width = plane.shape
    h0 = oh * stride_h - pad_top
    w0 = ow * stride_w - pad_left
    count = 0
    for i in range(kernel_h):
        h = h0 + i * dilation_h
        if h < 0 or h >= height:
            continue
        for j in range(kernel_w):
            w = w0 + j * dilation_w
            if 0 <= w < width:
                window[count] = plane[h, w]
                count += 1
    if count == 0:  # a dilated window lying entirely in the padding (max and min only)
        out_plane[oh, ow] = -math.inf if mode == POOL_MAX else math.inf
        return
    if mode == POOL_MEDIAN:
        # lower median, as torch.median: element (count-1)//2 in sorted order (an insertion
        # sort: windows are small, and np.sort would add seconds of compiling to every mode)
        for k in range(1, count):
            v = window[k]
            m = k - 1
            while m >= 0 and window[m] > v:
                window[m + 1] = window[m]
                m -= 1
            window[m + 1] = v
        out_plane[oh, ow] = window[(count - 1) // 2]
        return
    acc = window[0]
    if mode == POOL_AVG:
        for k in range(1, count):
            acc += window[k]
        acc = acc / _avg_divisor(h0, w0, kernel_h, kernel_w, height, width, pad_bottom, pad_right,
                                 count_include_pad)
    else:  # POOL_LP: Euclidean norm of the window
        acc = acc * acc
        for k in range(1, count):
            acc += window[k] * window[k]
        acc = math.sqrt(acc)
    out_plane[oh, ow] = acc


@njit(cache=True)
def _pool_row_interior(plane, row, oh, first, last, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                       pad_bottom, pad_right, dilation_h, dilation_w, mode, count_include_pad):
    """Avg of the windows ``first <= ow < last`` of output row ``oh`` (windows inside
    the plane horizontally), tap by tap over the whole row: the same order of operations per
    pixel as :func:`_pool_pixel`, in loops the compiler can vectorize."""
    height, width = plane.shape
    h0 = oh * stride_h - pad_top
    target = row[first:last]
    count = last - first
    started = False
    for i in range(kernel_h):
        h = h0 + i * dilation_h
        if h < 0 or h >= height:
            continue
        for j in range(kernel_w):
            start = first * stride_w + j * dilation_w - pad_left
            # a slice from 0 with the stride: no negative-index handling inside the loops
            source = plane[h, start:start + (count - 1) * stride_w + 1:stride_w]
            if not started:
                for k in range(count):
                    target[k] = source[k]
                started = True
            else:
                for k in range(count):
                    target[k] += source[k]
    if not started:  # every tap row in the padding (dilated max and min only)
        for k in range(count):
            target[k] = -math.inf if mode == POOL_MAX else math.inf
    elif mode == POOL_AVG:
        divisor = _avg_divisor(h0, first * stride_w - pad_left, kernel_h, kernel_w, height, width,
                               pad_bottom, pad_right, count_include_pad)
        for k in range(count):
            target[k] = target[k] / divisor


@njit(cache=True)
def _pool_plane(plane, out_plane, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                pad_right, dilation_h, dilation_w, mode, count_include_pad, window):
    """Pool one (H, W) plane into one (OH, OW) plane; ``window`` is scratch of KH*KW values."""
    width = plane.shape[1]
    out_h, out_w = out_plane.shape
    span_w = dilation_w * (kernel_w - 1) + 1
    first, last = 0, 0  # output columns whose windows lie inside the plane horizontally
    if mode == POOL_AVG:
        first = min(out_w, (pad_left + stride_w - 1) // stride_w)
        last = max(first, min(out_w, (width - span_w + pad_left) // stride_w + 1))
    for oh in range(out_h):
        if last > first:
            _pool_row_interior(plane, out_plane[oh], oh, first, last, kernel_h, kernel_w, stride_h, stride_w,
                               pad_top, pad_left, pad_bottom, pad_right, dilation_h, dilation_w, mode,
                               count_include_pad)
        for ow in range(0, first):
            _pool_pixel(plane, out_plane, oh, ow, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                        pad_bottom, pad_right, dilation_h, dilation_w, mode, count_include_pad, window)
        for ow in range(last, out_w):
            _pool_pixel(plane, out_plane, oh, ow, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                        pad_bottom, pad_right, dilation_h, dilation_w, mode, count_include_pad, window)


@njit(cache=True, nogil=True)
def _pool_planes(x, out, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right,
                 dilation_h, dilation_w, mode, count_include_pad, first, last):
    """Pool the (sample, channel) planes ``first .. last-1`` of ``x`` (serial: one thread's share)."""
    channels = x.shape[1]
    window = np.empty(kernel_h * kernel_w, dtype=x.dtype)
    for plane in range(first, last):
        n = plane // channels
        c = plane % channels
        _pool_plane(x[n, c], out[n, c], kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                    pad_right, dilation_h, dilation_w, mode, count_include_pad, window)


def _by_lines(x_shape, out_shape, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h,
              dilation_w):
    """Whether :func:`_extreme_pool_lines` pools these shapes: windows without dilation, each
    with a row and a column in the plane (the padding less than the window, the last window
    starting inside)."""
    return dilation_h == dilation_w == 1 and pad_top < kernel_h \
        and pad_left < kernel_w and (out_shape[2] - 1) * stride_h - pad_top < x_shape[2] \
        and (out_shape[3] - 1) * stride_w - pad_left < x_shape[3]


def pool2d_forward(x, out, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right,
                   dilation_h, dilation_w, mode, count_include_pad, workers):
    """Pool every plane of ``x`` (N, C, H, W) into ``out`` (N, C, OH, OW).

    Window ``(oh, ow)`` has the taps ``(oh*stride_h - pad_top + i*dilation_h,
    ow*stride_w - pad_left + j*dilation_w)``; taps outside the plane are padding.

    Parameters
    ----------
    x : (N, C, H, W) float array
    out : (N, C, OH, OW) array of the same dtype, overwritten; its shape fixes how many
        windows there are (``ceil_mode`` is already in it)
    kernel_h, kernel_w, stride_h, stride_w : int
        Resolved window geometry.
    pad_top, pad_left, pad_bottom, pad_right : int
        Padding on each side; the bottom and right amounts only bound the divisor of
        ``'avg'`` with ``count_include_pad``.
    dilation_h, dilation_w : int
        Spacing between taps (1 for avg, median and lp).
    mode : int
        ``POOL_MAX``, ``POOL_AVG``, ``POOL_MIN``, ``POOL_MEDIAN`` or ``POOL_LP``.
    count_include_pad : int
        1: avg divides by the window clipped to the padded input; 0: by the input pixels in it.
    workers : int
        Threads sharing the planes; 1 runs on the calling thread alone.
    """
    if mode == POOL_MAX or mode == POOL_MIN:
        kernel, geometry = _extreme_kernel(x, out, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                                           dilation_h, dilation_w)
        if kernel is _extreme_pool_planes and _by_lines(x.shape, out.shape, kernel_h, kernel_w, stride_h, stride_w,
                                                        pad_top, pad_left, dilation_h, dilation_w):
            run_shared(_extreme_pool_lines, x.shape[0] * x.shape[1], workers, x, out, kernel_h, kernel_w, stride_h,
                       stride_w, pad_top, pad_left, mode)
            return  # else the kernel training uses too, without the indices
        run_shared(kernel, x.shape[0] * x.shape[1], workers, x, out, _NO_INDICES, *geometry, mode, False)
        return
    run_shared(_pool_planes, x.shape[0] * x.shape[1], workers,
               x, out, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right,
               dilation_h, dilation_w, mode, count_include_pad)


def global_avg_pool2d_forward(x, out):
    """Mean of every (H, W) plane of ``x`` (N, C, H, W) into ``out`` (N, C).

    The sum is accumulated in float64 whatever the dtype, in eight lanes so that it vectorizes
    (:func:`.activation._sum_in_lanes`, which softmax's normalizer uses too).
    """
    planes = x.shape[0] * x.shape[1]
    run_split(_global_avg_planes, planes, x.size // 4, x.reshape(planes, -1), out.reshape(planes))


@njit(cache=True, nogil=True, error_model="numpy")
def _global_avg_planes(x, out, first, last):
    lanes = np.empty(8, np.float64)
    for plane in range(first, last):
        out[plane] = _sum_in_lanes(x[plane], lanes) / x.shape[1]


@njit(cache=True)
def _window_choice(plane, h0, w0, kernel_h, kernel_w, dilation_h, dilation_w, mode):
    """Flat index ``h * W + w`` of the element a max/min/median window picks (first on ties;
    the median's lower middle element in stable sorted order); -1 for a window lying entirely
    in the padding."""
    width = plane.shape[1]
    if mode == POOL_MEDIAN:
        size = kernel_h * kernel_w
        rank = (size - 1) // 2
        for a in range(size):
            va = plane[h0 + a // kernel_w, w0 + a % kernel_w]
            below = 0
            for b in range(size):
                vb = plane[h0 + b // kernel_w, w0 + b % kernel_w]
                if vb < va or (vb == va and b < a):
                    below += 1
            if below == rank:
                return (h0 + a // kernel_w) * width + w0 + a % kernel_w
        return h0 * width + w0
    return _extreme_choice(plane, h0, w0, kernel_h, kernel_w, dilation_h, dilation_w, mode == POOL_MAX)


@njit(cache=True)
def _extreme_choice(plane, h0, w0, kernel_h, kernel_w, dilation_h, dilation_w, is_max):
    """Flat index ``h * W + w`` of the element a max (``is_max``) or min window at ``(h0, w0)``
    picks, bounds checked: the first of equal ones, the first NaN if there is one; -1 for a
    window lying entirely in the padding."""
    height, width = plane.shape
    best = -1
    best_value = plane[0, 0]
    for i in range(kernel_h):
        h = h0 + i * dilation_h
        if h < 0 or h >= height:
            continue
        for j in range(kernel_w):
            w = w0 + j * dilation_w
            if w < 0 or w >= width:
                continue
            v = plane[h, w]
            if best < 0 or (math.isnan(v) and not math.isnan(best_value)) \
                    or (v > best_value if is_max else v < best_value):
                best = h * width + w
                best_value = v
    return best


@njit(cache=True)
def _pool_plane_backward(plane, out_plane, grad_plane, grad_in, kernel_h, kernel_w, stride_h, stride_w,
                         pad_top, pad_left, pad_bottom, pad_right, dilation_h, dilation_w, mode, count_include_pad):
    height, width = plane.shape
    out_h, out_w = grad_plane.shape
    for h in range(height):
        for w in range(width):
            grad_in[h, w] = 0
    for oh in range(out_h):
        h0 = oh * stride_h - pad_top
        for ow in range(out_w):
            w0 = ow * stride_w - pad_left
            g = grad_plane[oh, ow]
            if mode == POOL_MAX or mode == POOL_MIN or mode == POOL_MEDIAN:
                chosen = _window_choice(plane, h0, w0, kernel_h, kernel_w, dilation_h, dilation_w, mode)
                if chosen >= 0:
                    grad_in[chosen // width, chosen % width] += g
                continue
            if mode == POOL_AVG:
                share = g / _avg_divisor(h0, w0, kernel_h, kernel_w, height, width, pad_bottom, pad_right,
                                         count_include_pad)
            else:  # POOL_LP: d sqrt(sum v^2) / dv = v / norm (0 where the norm is 0)
                norm = out_plane[oh, ow]
                share = g / norm if norm > 0 else 0.0 * g
            for i in range(kernel_h):
                h = h0 + i
                if h < 0 or h >= height:
                    continue
                for j in range(kernel_w):
                    w = w0 + j
                    if 0 <= w < width:
                        grad_in[h, w] += share if mode == POOL_AVG else share * plane[h, w]


@njit(cache=True, nogil=True)
def _pool_planes_backward(x, out, grad_out, grad_x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                          pad_bottom, pad_right, dilation_h, dilation_w, mode, count_include_pad, first, last):
    """Gradient of the planes ``first .. last-1`` (serial: one thread's share)."""
    channels = x.shape[1]
    for plane in range(first, last):
        n = plane // channels
        c = plane % channels
        _pool_plane_backward(x[n, c], out[n, c], grad_out[n, c], grad_x[n, c], kernel_h, kernel_w,
                             stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right, dilation_h,
                             dilation_w, mode, count_include_pad)


def pool2d_backward(x, out, grad_out, grad_x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                    pad_bottom, pad_right, dilation_h, dilation_w, mode, count_include_pad, workers):
    """Gradient of :func:`pool2d_forward` with respect to ``x``, written into ``grad_x``.

    Max and min route each output's gradient to the element the window picked (the first
    one on ties; nowhere for a window lying entirely in the padding), median to the lower
    middle element, avg spreads ``grad / divisor`` over the window's input pixels (the
    forward's divisor), lp scales it by ``x / out``.  One thread per plane.

    Parameters
    ----------
    x : (N, C, H, W) array, the forward input
    out : (N, C, OH, OW) array, the forward output (used by 'lp')
    grad_out : (N, C, OH, OW) array
    grad_x : (N, C, H, W) array, overwritten
    kernel_h, ..., count_include_pad, workers : int
        As :func:`pool2d_forward`.
    """
    run_shared(_pool_planes_backward, x.shape[0] * x.shape[1], workers,
               x, out, grad_out, grad_x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
               pad_right, dilation_h, dilation_w, mode, count_include_pad)


def global_avg_pool2d_backward(grad_out, grad_x):
    """Gradient of :func:`global_avg_pool2d_forward`: each plane gets ``grad / (H * W)``."""
    planes = grad_x.shape[0] * grad_x.shape[1]
    run_split(_global_avg_planes_backward, planes, grad_x.size, grad_out.reshape(planes),
              grad_x.reshape(planes, -1))


@njit(cache=True, nogil=True, error_model="numpy")
def _global_avg_planes_backward(grad_out, grad_x, first, last):
    for plane in range(first, last):
        target = grad_x[plane]
        share = grad_out[plane] / target.shape[0]
        for k in range(target.shape[0]):
            target[k] = share


# ----------------------------------------------------------------------------- max and min
# Max and min pooling, the common case, have a kernel of their own: one function without
# callees (Numba optimizes a callee's code again inside each caller, so a chain of helpers
# costs its compile time several times over), serving inference and training alike. Training
# also saves, per output element, the flat index h * W + w (within its (H, W) plane) of the
# input element the window picked, so that the backward is a scatter instead of a second search.


@njit(cache=True, inline="always")
def _replaces(v, t, is_max):
    """Whether ``v`` replaces the window's pick ``t``: strictly better, or the first NaN (bitwise:
    the loops vectorize)."""
    return ((v > t) if is_max else (v < t)) | ((v != v) & (t == t))


@njit(cache=True, inline="always")
def _extreme_of(v, t, is_max):
    """``t`` if it replaces the pick ``v`` (:func:`_replaces`), else ``v``."""
    return t if _replaces(t, v, is_max) else v


@njit(cache=True, nogil=True)
def _extreme_pool_2x2(x, out, indices, mode, positive_only, first_plane, last_plane):
    """:func:`_extreme_pool_planes` for 2x2 windows at stride 2 inside the plane (no padding):
    the four taps of each window in one loop over the output row, which vectorizes (the taps'
    loads at stride 2 interleave), where the general kernel's passes per tap and row spent most
    of their time around short rows (``bench/small_kernels.py``: 32x16x16x16 on one thread,
    median 872-1101 -> 51-53 us, 1027-1091 -> 71-73 us with the indices). The picks are the same: the
    first of equal values in row-major order, the first NaN if there is one."""
    channels, width = x.shape[1], x.shape[3]
    out_h, out_w = out.shape[2], out.shape[3]
    keep = indices.shape[0] != 0
    is_max = mode == POOL_MAX
    picks = np.empty(out_w, dtype=np.int32)
    for p in range(first_plane, last_plane):
        n, c = p // channels, p % channels
        for oh in range(out_h):
            top, bottom, row = x[n, c, 2 * oh], x[n, c, 2 * oh + 1], out[n, c, oh]
            for ow in range(out_w):
                a, b, d, e = top[2 * ow], top[2 * ow + 1], bottom[2 * ow], bottom[2 * ow + 1]
                best, at = a, np.int32(0)
                better = _replaces(b, best, is_max)
                best = b if better else best
                at = np.int32(1) if better else at
                better = _replaces(d, best, is_max)
                best = d if better else best
                at = np.int32(width) if better else at
                better = _replaces(e, best, is_max)
                best = e if better else best
                at = np.int32(width + 1) if better else at
                row[ow] = best
                picks[ow] = at
            if keep:
                chosen = indices[n, c, oh]
                origin = 2 * oh * width
                for ow in range(out_w):
                    index = origin + 2 * ow + picks[ow]
                    chosen[ow] = index if not positive_only or row[ow] > 0 else -1


@njit(cache=True, nogil=True)
def _extreme_pool_lines(x, out, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, mode, first_plane,
                        last_plane):
    """Max or min pooling, values only, by windows without dilation (ResNet's 3x3 at stride 2,
    the 2x2 and 3x3 ones at stride 1 of OCR and detection networks, YOLO's 5x5 at stride 1)
    every one of which overlaps the plane: per output row, the window's input rows are reduced
    column by column into a line, then each window's columns along the line (padding there:
    -inf for max, +inf for min).

    Up to 3x3, each loop takes three taps at once and vectorizes, where
    :func:`_extreme_pool_planes`' passes per tap did not (``bench/elementwise.py``: ResNet-18's
    at batch 16, 16x64x112x112, 27-32 -> 4.5 ms on 2 threads); a window of fewer taps repeats
    its last one, and a row in the padding is replaced by one of the window's rows inside the
    plane: the max or min over a value twice is the same. Larger windows take a pass over the
    line for each further row and column of the window, where the general kernel took them one
    window at a time (``bench/elementwise.py``, 2 threads: NudeNet's 5x5 at stride 1 on 128
    channels at 10x10, 0.34-0.37 -> 0.08 ms; on 64 channels at 40x40, 0.75-0.78 -> 0.36-0.37
    ms). The values are the general kernel's: NaN wins.

    The loops index views (``line[second:]``, ``line[pad_left:]``) by the loop's counter, not
    ``line[ow + second]``: an index that a variable is added to may be negative as far as the
    compiler knows, and Numba's wraparound of negative indices kept those loops scalar (2x2 at
    stride 1 on 24 channels at 320x320, one thread: 4.3 ms, of which the row pass 3.0; with
    views 0.37 for the row pass; scratch timings)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w = out.shape[2], out.shape[3]
    is_max = mode == POOL_MAX
    line = np.empty((out_w - 1) * stride_w + kernel_w, dtype=x.dtype)  # line[k]: input column k - pad_left
    nothing = -math.inf if is_max else math.inf
    for k in range(line.shape[0]):
        line[k] = nothing
    columns = min(width, line.shape[0] - pad_left)
    second, third = min(1, kernel_w - 1), kernel_w - 1  # the window's columns along the line
    large = kernel_h > 3 or kernel_w > 3
    for p in range(first_plane, last_plane):
        n, c = p // channels, p % channels
        plane = x[n, c]
        for oh in range(out_h):
            top = oh * stride_h - pad_top
            low, high = max(top, 0), min(top + kernel_h, height) - 1  # the window's rows in the plane
            row = out[n, c, oh]
            if large:
                _line_of_rows(plane, low, high, line, pad_left, columns, is_max)
                _windows_along(line, row, stride_w, kernel_w, is_max)
                continue
            a, b, d = plane[low], plane[min(max(top + 1, low), high)], plane[high]
            inside = line[pad_left:]  # (views, not offsets added to the index: see below)
            for w in range(columns):
                inside[w] = _extreme_of(_extreme_of(a[w], b[w], is_max), d[w], is_max)
            if stride_w == 1:  # (a constant stride: the loads vectorize)
                middle, last = line[second:], line[third:]
                for ow in range(out_w):
                    row[ow] = _extreme_of(_extreme_of(line[ow], middle[ow], is_max), last[ow], is_max)
            elif stride_w == 2 and kernel_w == 3:  # (the three loads one interleaved group)
                for ow in range(out_w):
                    row[ow] = _extreme_of(_extreme_of(line[2 * ow], line[2 * ow + 1], is_max), line[2 * ow + 2],
                                          is_max)
            else:
                for ow in range(out_w):
                    start = ow * stride_w
                    row[ow] = _extreme_of(_extreme_of(line[start], line[start + second], is_max),
                                          line[start + third], is_max)


@njit(cache=True)
def _line_of_rows(plane, low, high, line, at, columns, is_max):
    """``line[at + w]``: the max (``is_max``) or min of ``plane``'s rows ``low .. high`` at column
    ``w``, for the ``columns`` first columns: a pass over the line a row."""
    first, inside = plane[low], line[at:]  # (a view: see _extreme_pool_lines)
    for w in range(columns):
        inside[w] = first[w]
    for h in range(low + 1, high + 1):
        values = plane[h]
        for w in range(columns):
            inside[w] = _extreme_of(inside[w], values[w], is_max)


@njit(cache=True)
def _windows_along(line, row, stride, kernel, is_max):
    """``row[k]``: the max or min of ``line[k * stride .. k * stride + kernel - 1]``: a pass over
    the row a tap of the window."""
    for k in range(row.shape[0]):
        row[k] = line[k * stride]
    for j in range(1, kernel):
        if stride == 1:  # (a constant stride and a view: the loads vectorize)
            tap = line[j:]
            for k in range(row.shape[0]):
                row[k] = _extreme_of(row[k], tap[k], is_max)
        else:
            for k in range(row.shape[0]):
                row[k] = _extreme_of(row[k], line[k * stride + j], is_max)


@njit(cache=True)
def _drop_nonpositive(chosen, row):
    """Index -1 (the gradient goes nowhere) where the pooled value ``row`` is not > 0."""
    for k in range(row.shape[0]):
        chosen[k] = chosen[k] if row[k] > 0 else -1


@njit(cache=True, nogil=True)
def _extreme_pool_planes(x, out, indices, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                         dilation_h, dilation_w, mode, positive_only, first_plane, last_plane):
    """Max or min pool the planes ``first_plane .. last_plane-1`` of ``x`` (serial: one thread's
    share), and write the chosen flat indices unless ``indices`` is empty (-1 where the pick is
    not positive with ``positive_only``).

    A tap replaces a window's choice only if strictly better, or the first NaN, so the first of
    equal elements (in tap order, which is flat-index order) wins. The windows inside the plane
    horizontally go tap by tap over the whole output row, keeping the pick as an int32 offset from
    the window's first tap (the compare-and-select then vectorizes at float32 width; one more
    pass turns the offsets into flat indices); without indices each tap is one contiguous pass
    over the input row at full resolution and every stride-th value is kept at the end; the
    other windows one by one with bounds checks. 2x2 windows at stride 2 inside the plane (the
    textbook pooling) take :func:`_extreme_pool_2x2` instead (:func:`_extreme_kernel`)."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w = out.shape[2], out.shape[3]
    keep = indices.shape[0] != 0
    is_max = mode == POOL_MAX
    nothing = -math.inf if is_max else math.inf  # the value of a window without an input element
    span_w = dilation_w * (kernel_w - 1) + 1
    first = min(out_w, (pad_left + stride_w - 1) // stride_w)
    last = max(first, min(out_w, (width - span_w + pad_left) // stride_w + 1))
    if (kernel_h - 1) * dilation_h * width + span_w > 2147483647:
        last = first  # offsets within a window would overflow int32: every window one by one
    count = last - first
    offsets = np.empty(max(count, 1), dtype=np.int32)
    length = max(count - 1, 0) * stride_w + 1  # the input columns the inner windows span
    accumulator = np.empty(length, dtype=x.dtype)
    for p in range(first_plane, last_plane):
        n, c = p // channels, p % channels
        plane = x[n, c]
        for oh in range(out_h):
            h0 = oh * stride_h - pad_top
            row = out[n, c, oh]
            if count > 0:
                target = row[first:last]
                acc = target if keep or stride_w == 1 else accumulator[:length]
                started = False
                for i in range(kernel_h):
                    h = h0 + i * dilation_h
                    if h < 0 or h >= height:
                        continue
                    for j in range(kernel_w):
                        start = first * stride_w + j * dilation_w - pad_left
                        if not keep:  # one contiguous pass at full resolution (a slice strided at run
                            line = plane[h, start:start + length]  # time did not vectorize); every
                            if not started:  # stride-th value is kept at the end
                                for k in range(length):
                                    acc[k] = line[k]
                            else:  # a select: vectorizes, NaN wins (unswitched on is_max)
                                for k in range(length):
                                    v, t = line[k], acc[k]
                                    acc[k] = v if ((v > t) if is_max else (v < t)) | (v != v) else t
                            started = True
                            continue
                        source = plane[h, start:start + (count - 1) * stride_w + 1:stride_w]
                        offset = np.int32(i * dilation_h * width + j * dilation_w)
                        if not started:
                            for k in range(count):
                                target[k] = source[k]
                                offsets[k] = offset
                            started = True
                        else:  # (the loops are unswitched on is_max by the compiler)
                            for k in range(count):
                                v, t = source[k], target[k]
                                # strictly better, or the first NaN (bitwise: the loop vectorizes)
                                better = ((v > t) if is_max else (v < t)) | ((v != v) & (t == t))
                                target[k] = v if better else t
                                offsets[k] = offset if better else offsets[k]
                if not started:  # every tap row in the padding (dilated windows only)
                    for k in range(count):
                        target[k] = nothing
                    if keep:
                        indices[n, c, oh, first:last] = -1
                elif keep:
                    chosen = indices[n, c, oh, first:last]
                    origin = h0 * width + first * stride_w - pad_left  # the first window's first tap
                    for k in range(count):
                        chosen[k] = origin + k * stride_w + offsets[k]
                elif stride_w != 1:
                    for k in range(count):
                        target[k] = acc[k * stride_w]
            for ow in range(out_w):
                if first <= ow < last:
                    continue
                best = _extreme_choice(plane, h0, ow * stride_w - pad_left, kernel_h, kernel_w, dilation_h,
                                       dilation_w, is_max)
                row[ow] = plane[best // width, best % width] if best >= 0 else nothing  # (-1: all padding)
                if keep:
                    indices[n, c, oh, ow] = best
            if keep and positive_only:
                _drop_nonpositive(indices[n, c, oh], row)


_NO_INDICES = np.empty((0, 0, 0, 0), dtype=np.int64)


def _extreme_kernel(x, out, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w):
    """The max and min pooling kernel for this geometry, with its trailing arguments: the 2x2
    one at stride 2 where every window lies inside the plane, else the general one. Two
    kernels compiled apart, not one calling the other: Numba compiles a callee again into each
    caller, and a model compiles only the one it uses."""
    if kernel_h == kernel_w == stride_h == stride_w == 2 and dilation_h == dilation_w == 1 \
            and pad_top == pad_left == 0 and 2 * out.shape[2] <= x.shape[2] and 2 * out.shape[3] <= x.shape[3]:
        return _extreme_pool_2x2, ()
    return _extreme_pool_planes, (kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w)


def pool2d_forward_with_indices(x, out, indices, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                                dilation_h, dilation_w, mode, workers, positive_only=False):
    """Max or min pool every plane of ``x`` into ``out`` and write where each value came from.

    ``out`` gets what :func:`pool2d_forward` gives; ``indices[n, c, oh, ow]`` is the flat
    index ``h * W + w`` within plane ``(n, c)`` of the element window ``(oh, ow)`` picked: the
    first one (in row-major order) of equal maxima (minima), the first NaN if there is one, and
    -1 for a dilated window lying entirely in the padding (its value is -inf for max, +inf for
    min, and its gradient goes nowhere).  :func:`pool2d_forward` runs the same kernel without
    the indices; the backward of this one is :func:`pool2d_backward_with_indices`.

    Parameters
    ----------
    x : (N, C, H, W) float array
    out : (N, C, OH, OW) array of the same dtype, overwritten
    indices : (N, C, OH, OW) int64 array, overwritten
    kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w : int
        As :func:`pool2d_forward` (the bottom and right padding only bound avg's divisor).
    mode : int
        ``POOL_MAX`` or ``POOL_MIN``.
    workers : int
        Threads sharing the planes; 1 runs on the calling thread.
    positive_only : bool, default False
        Write -1 (no input element) where the window's value is not greater than 0 (NaN
        included): the backward through these indices is then that of max pooling a ReLU's
        output, taken with respect to the ReLU's input (the ReLU's mask is applied with the
        scatter).
    """
    kernel, geometry = _extreme_kernel(x, out, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                                       dilation_h, dilation_w)
    run_shared(kernel, x.shape[0] * x.shape[1], workers, x, out, indices, *geometry, mode, bool(positive_only))


@njit(cache=True, nogil=True)
def _scatter_planes(grad_out, indices, grad_x, outside, first, last):
    """Zero the planes ``first .. last-1`` of ``grad_x`` (planes, H*W), then add each
    ``grad_out[plane, k]`` at ``indices[plane, k]`` (planes, OH*OW); an index outside
    ``0 .. H*W-1`` (-1: a window entirely in the padding) adds nowhere, and ``outside[plane]``
    counts the plane's indices that are not -1 either (serial: one thread's share)."""
    size = grad_x.shape[1]
    for plane in range(first, last):
        target = grad_x[plane]
        for k in range(size):
            target[k] = 0
        source = grad_out[plane]
        chosen = indices[plane]
        wrong = 0
        for k in range(source.shape[0]):
            index = chosen[k]
            if 0 <= index < size:
                target[index] += source[k]
            elif index != -1:
                wrong += 1
        outside[plane] = wrong


def pool2d_backward_with_indices(grad_out, indices, grad_x, workers):
    """Gradient of max or min pooling through the indices :func:`pool2d_forward_with_indices`
    saved: ``grad_x`` is zeroed, then each ``grad_out[n, c, oh, ow]`` is added to
    ``grad_x[n, c]`` at flat index ``indices[n, c, oh, ow]`` (in output order, so overlapping
    windows that picked the same element sum their gradients in a fixed order); an index
    outside ``0 .. H*W-1`` (-1 marks a window entirely in the padding) adds nowhere.
    Each (sample, channel) plane is independent: threads share whole planes (no races).

    Parameters
    ----------
    grad_out : (N, C, OH, OW) float array, C-contiguous
    indices : (N, C, OH, OW) int64 array, C-contiguous
    grad_x : (N, C, H, W) array of ``grad_out``'s dtype, C-contiguous, overwritten
    workers : int
        Threads sharing the planes; 1 runs on the calling thread.

    Returns
    -------
    int
        How many indices lie outside ``-1 .. H*W-1`` (counted as the scatter reads them, so
        that the caller need not pass over the indices first to refuse them).
    """
    planes = grad_x.shape[0] * grad_x.shape[1]
    outside = np.empty(planes, np.int64)
    run_shared(_scatter_planes, planes, workers,
               grad_out.reshape(planes, -1), indices.reshape(planes, -1), grad_x.reshape(planes, -1), outside)
    return int(outside.sum())
