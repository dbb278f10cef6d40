"""CPU pooling: one thread per (sample, channel) plane.

``mode`` is one of the integer codes of :mod:`cnnlab.kernels` (max, avg,
min, median, lp).  Padding is virtual: max ignores padded positions (as if
padded with -inf), min likewise (+inf), avg counts them as zeros.

Mirrors :mod:`cnnlab.kernels.cuda.pool`.
"""

import math

import numpy as np
from numba import njit, prange

from .. import POOL_AVG, POOL_LP, POOL_MAX, POOL_MEDIAN, POOL_MIN


@njit(cache=True)
def _pool_plane(plane, out_plane, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, mode,
                window):
    """Pool one (H, W) plane into one (OH, OW) plane; ``window`` is scratch of KH*KW values."""
    height, width = plane.shape
    out_h, out_w = out_plane.shape
    for oh in range(out_h):
        h0 = oh * stride_h - pad_h
        for ow in range(out_w):
            w0 = ow * stride_w - pad_w
            count = 0
            for i in range(kernel_h):
                h = h0 + i
                if h < 0 or h >= height:
                    continue
                for j in range(kernel_w):
                    w = w0 + j
                    if 0 <= w < width:
                        window[count] = plane[h, w]
                        count += 1
            if mode == POOL_MEDIAN:
                # lower median, as torch.median: element (count-1)//2 in sorted order
                out_plane[oh, ow] = np.sort(window[:count])[(count - 1) // 2]
                continue
            acc = window[0]
            if mode == POOL_MAX:
                for k in range(1, count):
                    v = window[k]
                    if v > acc or math.isnan(v):
                        acc = v
                        if math.isnan(v):
                            break
            elif mode == POOL_MIN:
                for k in range(1, count):
                    v = window[k]
                    if v < acc or math.isnan(v):
                        acc = v
                        if math.isnan(v):
                            break
            elif mode == POOL_AVG:
                for k in range(1, count):
                    acc += window[k]
                acc = acc / (kernel_h * kernel_w)
            else:  # POOL_LP: Euclidean norm of the window
                acc = acc * acc
                for k in range(1, count):
                    acc += window[k] * window[k]
                acc = math.sqrt(acc)
            out_plane[oh, ow] = acc


@njit(parallel=True, cache=True)
def pool2d_forward(x, out, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, mode):
    """Pool every plane of ``x`` (N, C, H, W) into ``out`` (N, C, OH, OW).

    Parameters
    ----------
    x : (N, C, H, W) float array
    out : (N, C, OH, OW) array of the same dtype, overwritten
    kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w : int
        Resolved window geometry (symmetric padding).
    mode : int
        ``POOL_MAX``, ``POOL_AVG``, ``POOL_MIN``, ``POOL_MEDIAN`` or ``POOL_LP``.
    """
    samples, channels = x.shape[0], x.shape[1]
    for plane in prange(samples * channels):
        n = plane // channels
        c = plane % channels
        window = np.empty(kernel_h * kernel_w, dtype=x.dtype)
        _pool_plane(x[n, c], out[n, c], kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w,
                    mode, window)


@njit(parallel=True, cache=True)
def global_avg_pool2d_forward(x, out):
    """Mean of every (H, W) plane of ``x`` (N, C, H, W) into ``out`` (N, C).

    The sum is accumulated in float64 whatever the dtype.
    """
    samples, channels, height, width = x.shape
    for plane in prange(samples * channels):
        n = plane // channels
        c = plane % channels
        total = 0.0
        for h in range(height):
            for w in range(width):
                total += x[n, c, h, w]
        out[n, c] = total / (height * width)
