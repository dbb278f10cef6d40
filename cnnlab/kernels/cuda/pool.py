"""GPU pooling: one thread per output element, grid-stride loop.

The median needs no scratch memory: the window element with exactly
``(count-1)//2`` smaller elements (ties broken by position) is the lower
median (:func:`_window_choice`, shared with the backward).

Mirrors :mod:`cnnlab.kernels.cpu.pool`; same names, same parameters.
"""

import math

from numba import cuda

from .. import POOL_AVG, POOL_LP, POOL_MAX, POOL_MEDIAN, POOL_MIN
from ._launch import launch_shape

__all__ = [  # the kernels of this file
    "global_avg_pool2d_backward",
    "global_avg_pool2d_forward",
    "pool2d_backward",
    "pool2d_backward_with_indices",
    "pool2d_forward",
    "pool2d_forward_with_indices",
]


@cuda.jit(device=True)
def _avg_divisor(h0, w0, kernel_h, kernel_w, height, width, pad_bottom, pad_right, count_include_pad):
    """Divisor of the avg window at ``(h0, w0)``; as :func:`cnnlab.kernels.cpu.pool._avg_divisor`."""
    if count_include_pad:
        rows = min(h0 + kernel_h, height + pad_bottom) - h0
        cols = min(w0 + kernel_w, width + pad_right) - w0
    else:
        rows = min(h0 + kernel_h, height) - max(h0, 0)
        cols = min(w0 + kernel_w, width) - max(w0, 0)
    return rows * cols


@cuda.jit(device=True)
def _window_choice(x, n, c, h0, w0, kernel_h, kernel_w, dilation_h, dilation_w, mode):
    """Flat index ``h * W + w`` of the element a max/min/median window picks (first on ties);
    -1 for a window lying entirely in the padding."""
    height, width = x.shape[2], x.shape[3]
    if mode == POOL_MEDIAN:
        size = kernel_h * kernel_w
        rank = (size - 1) // 2
        for a in range(size):
            va = x[n, c, h0 + a // kernel_w, w0 + a % kernel_w]
            below = 0
            for b in range(size):
                vb = x[n, c, h0 + b // kernel_w, w0 + b % kernel_w]
                if vb < va or (vb == va and b < a):
                    below += 1
            if below == rank:
                return (h0 + a // kernel_w) * width + w0 + a % kernel_w
        return h0 * width + w0
    best = -1
    best_value = x[n, c, 0, 0]
    for i in range(kernel_h):
        h = h0 + i * dilation_h
        if h < 0 or h >= height:
            continue
        for j in range(kernel_w):
            w = w0 + j * dilation_w
            if w < 0 or w >= width:
                continue
            v = x[n, c, h, w]
            better = False
            if best < 0:
                better = True
            elif mode == POOL_MAX:
                better = v > best_value or (math.isnan(v) and not math.isnan(best_value))
            else:
                better = v < best_value or (math.isnan(v) and not math.isnan(best_value))
            if better:
                best = h * width + w
                best_value = v
    return best


@cuda.jit
def _pool2d_forward_kernel(x, out, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom,
                           pad_right, dilation_h, dilation_w, mode, count_include_pad):
    samples, channels, out_h, out_w = out.shape
    height, width = x.shape[2], x.shape[3]
    size = samples * channels * out_h * out_w
    for index in range(cuda.grid(1), size, cuda.gridsize(1)):
        ow = index % out_w
        oh = (index // out_w) % out_h
        c = (index // (out_w * out_h)) % channels
        n = index // (out_w * out_h * channels)
        h0 = oh * stride_h - pad_top
        w0 = ow * stride_w - pad_left
        if mode == POOL_MEDIAN:
            chosen = _window_choice(x, n, c, h0, w0, kernel_h, kernel_w, dilation_h, dilation_w, mode)
            out[n, c, oh, ow] = x[n, c, chosen // width, chosen % width]
            continue
        if mode == POOL_MAX:
            acc = -math.inf  # padding never wins; a window entirely in the padding gives -inf
        elif mode == POOL_MIN:
            acc = math.inf
        else:
            acc = 0.0
        for i in range(kernel_h):
            h = h0 + i * dilation_h
            if h < 0 or h >= height:
                continue
            for j in range(kernel_w):
                w = w0 + j * dilation_w
                if w < 0 or w >= width:
                    continue
                v = x[n, c, h, w]
                if mode == POOL_MAX:
                    if v > acc or math.isnan(v):
                        acc = v
                elif mode == POOL_MIN:
                    if v < acc or math.isnan(v):
                        acc = v
                elif mode == POOL_AVG:
                    acc += v
                else:  # POOL_LP
                    acc += v * v
        if mode == POOL_AVG:
            acc = acc / _avg_divisor(h0, w0, kernel_h, kernel_w, height, width, pad_bottom, pad_right,
                                     count_include_pad)
        elif mode != POOL_MAX and mode != POOL_MIN:
            acc = math.sqrt(acc)
        out[n, c, oh, ow] = acc


@cuda.jit
def _global_avg_pool2d_forward_kernel(x, out):
    samples, channels, height, width = x.shape
    for index in range(cuda.grid(1), samples * channels, cuda.gridsize(1)):
        n = index // channels
        c = index % channels
        total = 0.0
        for h in range(height):
            for w in range(width):
                total += x[n, c, h, w]
        out[n, c] = total / (height * width)


def pool2d_forward(x, out, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, pad_bottom, pad_right,
                   dilation_h, dilation_w, mode, count_include_pad, workers):
    """Pool every plane of ``x`` into ``out``; contract of :func:`cnnlab.kernels.cpu.pool.pool2d_forward`
    (``workers`` is a CPU schedule: ignored here)."""
    blocks, threads = launch_shape(out.size)
    _pool2d_forward_kernel[blocks, threads](x, out, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                                            pad_bottom, pad_right, dilation_h, dilation_w, mode,
                                            count_include_pad)


def global_avg_pool2d_forward(x, out):
    """Mean of every plane; contract of :func:`cnnlab.kernels.cpu.pool.global_avg_pool2d_forward`."""
    blocks, threads = launch_shape(out.size)
    _global_avg_pool2d_forward_kernel[blocks, threads](x, out)


@cuda.jit
def _pool2d_backward_kernel(x, out, grad_out, grad_x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                            pad_bottom, pad_right, dilation_h, dilation_w, mode, count_include_pad):
    samples, channels, height, width = x.shape
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    span_h = dilation_h * (kernel_h - 1) + 1
    span_w = dilation_w * (kernel_w - 1) + 1
    for index in range(cuda.grid(1), grad_x.size, cuda.gridsize(1)):
        w = index % width
        h = (index // width) % height
        c = (index // (width * height)) % channels
        n = index // (width * height * channels)
        acc = grad_out[0, 0, 0, 0] * 0
        # the windows that span (h, w): oh * stride_h - pad_top <= h < oh * stride_h - pad_top + span_h
        first_oh = max(0, (h + pad_top - span_h) // stride_h + 1)
        last_oh = min(out_h - 1, (h + pad_top) // stride_h)
        first_ow = max(0, (w + pad_left - span_w) // stride_w + 1)
        last_ow = min(out_w - 1, (w + pad_left) // stride_w)
        for oh in range(first_oh, last_oh + 1):
            h0 = oh * stride_h - pad_top
            for ow in range(first_ow, last_ow + 1):
                w0 = ow * stride_w - pad_left
                g = grad_out[n, c, oh, ow]
                if mode == POOL_AVG:
                    acc += g / _avg_divisor(h0, w0, kernel_h, kernel_w, height, width, pad_bottom, pad_right,
                                            count_include_pad)
                elif mode == POOL_LP:
                    norm = out[n, c, oh, ow]
                    if norm > 0:
                        acc += g * x[n, c, h, w] / norm
                elif _window_choice(x, n, c, h0, w0, kernel_h, kernel_w, dilation_h, dilation_w,
                                    mode) == h * width + w:
                    acc += g
        grad_x[n, c, h, w] = acc


@cuda.jit
def _global_avg_pool2d_backward_kernel(grad_out, grad_x):
    samples, channels, height, width = grad_x.shape
    for index in range(cuda.grid(1), grad_x.size, cuda.gridsize(1)):
        c = (index // (width * height)) % channels
        n = index // (width * height * channels)
        grad_x[n, c, (index // width) % height, index % width] = grad_out[n, c] / (height * width)


def pool2d_backward(x, out, grad_out, grad_x, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                    pad_bottom, pad_right, dilation_h, dilation_w, mode, count_include_pad, workers):
    """Gradient of pooling; contract of :func:`cnnlab.kernels.cpu.pool.pool2d_backward`
    (``workers`` is a CPU schedule: ignored here).
    One thread per input pixel gathers from the windows that contain it."""
    blocks, threads = launch_shape(grad_x.size)
    _pool2d_backward_kernel[blocks, threads](x, out, grad_out, grad_x, kernel_h, kernel_w, stride_h, stride_w,
                                             pad_top, pad_left, pad_bottom, pad_right, dilation_h, dilation_w,
                                             mode, count_include_pad)


def global_avg_pool2d_backward(grad_out, grad_x):
    """Gradient of global average pooling; contract of the CPU twin."""
    blocks, threads = launch_shape(grad_x.size)
    _global_avg_pool2d_backward_kernel[blocks, threads](grad_out, grad_x)


# ----------------------------------------------------------------------------- max/min with indices


@cuda.jit
def _pool2d_forward_with_indices_kernel(x, out, indices, kernel_h, kernel_w, stride_h, stride_w, pad_top,
                                        pad_left, dilation_h, dilation_w, mode, positive_only):
    samples, channels, out_h, out_w = out.shape
    width = x.shape[3]
    size = samples * channels * out_h * out_w
    for index in range(cuda.grid(1), size, cuda.gridsize(1)):
        ow = index % out_w
        oh = (index // out_w) % out_h
        c = (index // (out_w * out_h)) % channels
        n = index // (out_w * out_h * channels)
        chosen = _window_choice(x, n, c, oh * stride_h - pad_top, ow * stride_w - pad_left, kernel_h, kernel_w,
                                dilation_h, dilation_w, mode)
        if chosen >= 0:
            out[n, c, oh, ow] = x[n, c, chosen // width, chosen % width]
        elif mode == POOL_MAX:  # a dilated window lying entirely in the padding
            out[n, c, oh, ow] = -math.inf
        else:
            out[n, c, oh, ow] = math.inf
        # (with positive_only, a pick that is not > 0 sends its gradient nowhere)
        indices[n, c, oh, ow] = chosen if not positive_only or out[n, c, oh, ow] > 0 else -1


def pool2d_forward_with_indices(x, out, indices, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left,
                                dilation_h, dilation_w, mode, workers, positive_only=False):
    """Max or min pooling and the flat index of each window's pick; contract of
    :func:`cnnlab.kernels.cpu.pool.pool2d_forward_with_indices` (``workers`` is a CPU schedule:
    ignored here).  One thread per output element: the window's choice (first on ties, first
    NaN, -1 for a window entirely in the padding), then its value."""
    blocks, threads = launch_shape(out.size)
    _pool2d_forward_with_indices_kernel[blocks, threads](x, out, indices, kernel_h, kernel_w, stride_h, stride_w,
                                                         pad_top, pad_left, dilation_h, dilation_w, mode,
                                                         bool(positive_only))


@cuda.jit
def _zero_kernel(a):
    for index in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        a[index] = 0


@cuda.jit
def _scatter_kernel(grad_out, indices, grad_x):
    planes, plane_size = grad_x.shape
    outputs = grad_out.shape[1]
    for index in range(cuda.grid(1), planes * outputs, cuda.gridsize(1)):
        plane = index // outputs
        k = index % outputs
        chosen = indices[plane, k]
        if 0 <= chosen < plane_size:
            cuda.atomic.add(grad_x, (plane, chosen), grad_out[plane, k])


def pool2d_backward_with_indices(grad_out, indices, grad_x, workers):
    """Gradient of max or min pooling through saved indices; contract of
    :func:`cnnlab.kernels.cpu.pool.pool2d_backward_with_indices` (``workers`` is a CPU
    schedule: ignored here), except that it returns None: indices outside ``-1 .. H*W-1`` add
    nowhere, uncounted (counting would cost a transfer back to the host).

    A scatter, as on the CPU: one launch zeroes ``grad_x``, then one thread per output element
    adds its gradient at its index with an atomic add.  Atomics are needed only where windows
    overlap (stride < kernel) and two of them picked the same element; for the usual
    non-overlapping pooling every input element receives at most one gradient, so the atomics
    never contend and the result is exact.  Where they do overlap, the order of the additions
    (so the last bits of a float sum) may vary from run to run.  A gather (one thread per input
    element searching the windows over it) would be deterministic but needs the geometry, and
    would route an index that lies outside its own window differently from the CPU scatter.
    """
    planes = grad_x.shape[0] * grad_x.shape[1]
    flat_grad_x = grad_x.reshape(planes, grad_x.size // planes)
    blocks, threads = launch_shape(grad_x.size)
    _zero_kernel[blocks, threads](grad_x.reshape(grad_x.size))
    blocks, threads = launch_shape(grad_out.size)
    _scatter_kernel[blocks, threads](grad_out.reshape(planes, grad_out.size // planes),
                                     indices.reshape(planes, indices.size // planes), flat_grad_x)
