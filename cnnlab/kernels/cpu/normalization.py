"""CPU batch normalization over the (N, H, W) axes of NCHW input, one thread per channel; group
normalization over each sample's groups of channels, one thread per (sample, group); layer
normalization of rows in one pass of statistics and one of output, the rows shared between as
many threads as their size is worth.

Mirrors :mod:`cnnlab.kernels.cuda.normalization`.
"""

import math

import numpy as np
from numba import njit, prange

from ._schedule import run_split
from .activation import _float64_sum

__all__ = [  # the kernels of this file
    "fold_batch_norm",
    "batchnorm2d_backward",
    "batchnorm2d_forward",
    "batchnorm2d_statistics",
    "group_norm_backward",
    "group_norm_forward",
    "group_norm_statistics",
    "layer_norm_forward",
    "running_average",
]


@njit(parallel=True, cache=True)
def batchnorm2d_statistics(x, mean, variance):
    """Per-channel mean and biased variance of ``x`` (N, C, H, W), accumulated in float64, a
    plane at a time in reassociable additions (:func:`.activation._float64_sum`: one running
    sum is a chain of dependent additions that does not vectorize)."""
    samples, channels, height, width = x.shape
    count = samples * height * width
    planes = x.reshape(samples, channels, height * width)
    for c in prange(channels):
        total = 0.0
        for n in range(samples):
            total += _float64_sum(planes[n, c])
        mu = total / count
        squares = 0.0
        for n in range(samples):
            squares += _float64_squares(planes[n, c], mu)
        mean[c] = mu
        variance[c] = squares / count


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _float64_squares(values, center):
    """``sum((values - center) ** 2)`` in float64, reassociable (as :func:`.activation._float64_sum`)."""
    total = 0.0
    for k in range(values.shape[0]):
        d = values[k] - center
        total += d * d
    return total


@njit(cache=True, nogil=True, fastmath={"reassoc"})
def _float64_sums(g, x, center):
    """``(sum(g), sum(g * (x - center)))`` in float64, reassociable (as
    :func:`.activation._float64_sum`), in one pass."""
    total = dot = 0.0
    for k in range(g.shape[0]):
        total += g[k]
        dot += g[k] * (x[k] - center)
    return total, dot


@njit(parallel=True, cache=True)
def batchnorm2d_forward(x, mean, variance, gamma, beta, eps, out):
    """``out = gamma * (x - mean) / sqrt(variance + eps) + beta`` per channel.

    Each channel's scale and shift are computed in float64 and rounded to ``x``'s dtype (as
    :func:`fold_batch_norm` gives them to a convolution), so that the pass over the plane runs
    in that dtype and vectorizes at its width."""
    samples, channels, height, width = x.shape
    scales, shifts = np.empty(channels, x.dtype), np.empty(channels, x.dtype)
    for c in range(channels):
        scale = gamma[c] / math.sqrt(variance[c] + eps)
        scales[c] = scale
        shifts[c] = beta[c] - mean[c] * scale
    planes = x.reshape(samples, channels, height * width)
    out_planes = out.reshape(samples, channels, height * width)
    for task in prange(samples * channels):
        n, c = task // channels, task % channels
        source, target = planes[n, c], out_planes[n, c]
        scale, shift = scales[c], shifts[c]
        for k in range(height * width):
            target[k] = source[k] * scale + shift


@njit(parallel=True, cache=True)
def batchnorm2d_backward(x, grad_out, mean, variance, gamma, eps, grad_x, grad_gamma, grad_beta):
    """Gradients of training-mode :func:`batchnorm2d_forward` (batch statistics).

    With ``xhat = (x - mean) / std``: ``grad_beta = sum(g)``, ``grad_gamma = sum(g * xhat)``,
    ``grad_x = gamma / std * (g - grad_beta / M - xhat * grad_gamma / M)``, ``M = N*H*W``.
    """
    samples, channels, height, width = x.shape
    count = samples * height * width
    planes, grad_planes = x.reshape(samples, channels, height * width), grad_out.reshape(samples, channels, height * width)
    grad_x_planes = grad_x.reshape(samples, channels, height * width)
    for c in prange(channels):
        inv_std = 1.0 / math.sqrt(variance[c] + eps)
        sum_g = sum_g_x = 0.0  # sum(g), sum(g * (x - mean)): a plane at a time in reassociable additions
        for n in range(samples):
            plane_g, plane_g_x = _float64_sums(grad_planes[n, c], planes[n, c], mean[c])
            sum_g += plane_g
            sum_g_x += plane_g_x
        sum_g_xhat = sum_g_x * inv_std
        grad_beta[c] = sum_g
        grad_gamma[c] = sum_g_xhat
        # grad_x = factor * (g - sum_g / M - xhat * sum_g_xhat / M) = a * g + b * x + offset, in float64
        factor = gamma[c] * inv_std
        a = factor
        b = -factor * inv_std * sum_g_xhat / count
        offset = -factor * sum_g / count - b * mean[c]
        for n in range(samples):
            source, gradient, target = planes[n, c], grad_planes[n, c], grad_x_planes[n, c]
            for k in range(height * width):
                target[k] = a * gradient[k] + b * source[k] + offset


@njit(parallel=True, cache=True)
def running_average(running, batch, momentum, scale):
    """``running = (1 - momentum) * running + momentum * scale * batch`` (1-D arrays, in place)."""
    for i in prange(running.shape[0]):
        running[i] = (1.0 - momentum) * running[i] + momentum * scale * batch[i]


@njit(parallel=True, cache=True)
def group_norm_statistics(x, groups, eps, mean, rstd):
    """Mean and ``1/sqrt(biased variance + eps)`` of each sample's groups of channels.

    ``x`` is (N, C, L) (the spatial axes flattened), ``mean`` and ``rstd`` (N, groups); group
    ``g`` holds channels ``g*C/groups`` to ``(g+1)*C/groups - 1``. Sums in float64."""
    samples, channels, length = x.shape
    per_group = channels // groups
    count = per_group * length
    for item in prange(samples * groups):
        n, g = item // groups, item % groups
        total = 0.0
        for c in range(g * per_group, (g + 1) * per_group):
            for i in range(length):
                total += x[n, c, i]
        mu = total / count
        squares = 0.0
        for c in range(g * per_group, (g + 1) * per_group):
            for i in range(length):
                d = x[n, c, i] - mu
                squares += d * d
        mean[n, g] = mu
        rstd[n, g] = 1.0 / math.sqrt(squares / count + eps)


@njit(parallel=True, cache=True)
def group_norm_forward(x, gamma, beta, mean, rstd, out):
    """``out = (x - mean) * rstd * gamma[c] + beta[c]`` with the statistics of each sample's
    group (:func:`group_norm_statistics`); (N, C, L) arrays."""
    samples, channels, length = x.shape
    groups = mean.shape[1]
    per_group = channels // groups
    for item in prange(samples * channels):
        n, c = item // channels, item % channels
        g = c // per_group
        for i in range(length):
            out[n, c, i] = (x[n, c, i] - mean[n, g]) * rstd[n, g] * gamma[c] + beta[c]


@njit(parallel=True, cache=True)
def group_norm_backward(x, grad_out, gamma, mean, rstd, grad_x, grad_gamma, grad_beta):
    """Gradients of :func:`group_norm_forward` with respect to ``x``, ``gamma`` and ``beta``.

    With ``xhat = (x - mean) * rstd`` and ``d = grad_out * gamma``, over each sample's group
    ``grad_x = rstd * (d - mean(d) - xhat * mean(d * xhat))``; ``grad_gamma`` and ``grad_beta``
    sum ``grad_out * xhat`` and ``grad_out`` over the samples and positions of each channel."""
    samples, channels, length = x.shape
    groups = mean.shape[1]
    per_group = channels // groups
    count = per_group * length
    for item in prange(samples * groups):
        n, g = item // groups, item % groups
        mu, r = mean[n, g], rstd[n, g]
        sum_d = 0.0
        sum_d_xhat = 0.0
        for c in range(g * per_group, (g + 1) * per_group):
            for i in range(length):
                d = grad_out[n, c, i] * gamma[c]
                sum_d += d
                sum_d_xhat += d * (x[n, c, i] - mu) * r
        mean_d, mean_d_xhat = sum_d / count, sum_d_xhat / count
        for c in range(g * per_group, (g + 1) * per_group):
            for i in range(length):
                xhat = (x[n, c, i] - mu) * r
                grad_x[n, c, i] = r * (grad_out[n, c, i] * gamma[c] - mean_d - xhat * mean_d_xhat)
    for c in prange(channels):
        g = c // per_group
        sum_g = 0.0
        sum_g_xhat = 0.0
        for n in range(samples):
            for i in range(length):
                value = grad_out[n, c, i]
                sum_g += value
                sum_g_xhat += value * (x[n, c, i] - mean[n, g]) * rstd[n, g]
        grad_beta[c] = sum_g
        grad_gamma[c] = sum_g_xhat


@njit(cache=True, nogil=True)
def fold_batch_norm(gamma, beta, mean, variance, bias, has_bias, eps, scale, shift):
    """Inference batch normalization after a convolution with ``bias`` (used when ``has_bias``)
    as one per-filter affine: ``scale = gamma / sqrt(variance + eps)``, ``shift = beta + (bias -
    mean) * scale``, in float64, written to ``scale`` and ``shift`` in their dtype (an inference
    plan's fused convolution calls it each time: one call instead of a dozen NumPy ones)."""
    for k in range(scale.shape[0]):
        s = gamma[k] / math.sqrt(np.float64(variance[k]) + eps)
        offset = (np.float64(bias[k]) if has_bias else 0.0) - mean[k]
        scale[k] = s
        shift[k] = beta[k] + offset * s


def layer_norm_forward(x, weight, bias, eps, out, mean, rstd):
    """Layer normalization of each row of ``x`` (rows, K): ``mean`` and ``rstd = 1 / sqrt(biased
    variance + eps)`` of the row (``(rows,)``, summed in float64), then ``out = (x - mean) *
    rstd * weight + bias`` (``weight`` and ``bias`` of K values), each operation rounded to
    the dtype as :func:`group_norm_forward` followed by the product and the sum would. One
    call for what took four (the statistics, the normalization, the scale and the shift)."""
    run_split(_layer_norm_rows, x.shape[0], 3 * x.size, x, weight, bias, eps, out, mean, rstd)


@njit(cache=True, nogil=True)
def _layer_norm_rows(x, weight, bias, eps, out, mean, rstd, first, last):
    size = x.shape[1]
    for r in range(first, last):
        row, dest = x[r], out[r]
        mu = _float64_sum(row) / size
        mean[r] = mu
        rstd[r] = 1.0 / math.sqrt(_float64_squares(row, mu) / size + eps)
        m, s = mean[r], rstd[r]  # (rounded to the dtype, as the group normalization's are)
        for k in range(size):
            dest[k] = (row[k] - m) * s * weight[k] + bias[k]
