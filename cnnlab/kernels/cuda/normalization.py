"""GPU batch, group and layer normalization; one thread per channel (batch norm), per (sample,
group) (group norm) or per row (layer norm) for the statistics and the gradients' sums, one per
element for the element-wise parts.

Mirrors :mod:`cnnlab.kernels.cpu.normalization`; same names, same parameters.
"""

import math

from numba import cuda

from ._launch import launch_shape

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


@cuda.jit
def _statistics_kernel(x, mean, variance):
    samples, channels, height, width = x.shape
    count = samples * height * width
    for c in range(cuda.grid(1), channels, cuda.gridsize(1)):
        total = 0.0
        for n in range(samples):
            for h in range(height):
                for w in range(width):
                    total += x[n, c, h, w]
        mu = total / count
        squares = 0.0
        for n in range(samples):
            for h in range(height):
                for w in range(width):
                    d = x[n, c, h, w] - mu
                    squares += d * d
        mean[c] = mu
        variance[c] = squares / count


@cuda.jit
def _normalize_kernel(x, mean, variance, gamma, beta, eps, out):
    samples, channels, height, width = x.shape
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        c = (index // (width * height)) % channels
        n = index // (width * height * channels)
        h = (index // width) % height
        w = index % width
        scale = gamma[c] / math.sqrt(variance[c] + eps)
        out[n, c, h, w] = (x[n, c, h, w] - mean[c]) * scale + beta[c]


@cuda.jit
def _gradient_sums_kernel(x, grad_out, mean, variance, eps, grad_gamma, grad_beta):
    samples, channels, height, width = x.shape
    for c in range(cuda.grid(1), channels, cuda.gridsize(1)):
        inv_std = 1.0 / math.sqrt(variance[c] + eps)
        sum_g = 0.0
        sum_g_xhat = 0.0
        for n in range(samples):
            for h in range(height):
                for w in range(width):
                    g = grad_out[n, c, h, w]
                    sum_g += g
                    sum_g_xhat += g * (x[n, c, h, w] - mean[c]) * inv_std
        grad_beta[c] = sum_g
        grad_gamma[c] = sum_g_xhat


@cuda.jit
def _grad_input_kernel(x, grad_out, mean, variance, gamma, eps, grad_gamma, grad_beta, grad_x):
    samples, channels, height, width = x.shape
    count = samples * height * width
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        c = (index // (width * height)) % channels
        n = index // (width * height * channels)
        h = (index // width) % height
        w = index % width
        inv_std = 1.0 / math.sqrt(variance[c] + eps)
        xhat = (x[n, c, h, w] - mean[c]) * inv_std
        grad_x[n, c, h, w] = gamma[c] * inv_std * (
            grad_out[n, c, h, w] - grad_beta[c] / count - xhat * grad_gamma[c] / count)


@cuda.jit
def _running_average_kernel(running, batch, momentum, scale):
    for i in range(cuda.grid(1), running.shape[0], cuda.gridsize(1)):
        running[i] = (1.0 - momentum) * running[i] + momentum * scale * batch[i]


def batchnorm2d_statistics(x, mean, variance):
    """Per-channel mean and biased variance; contract of the CPU twin."""
    blocks, threads = launch_shape(x.shape[1])
    _statistics_kernel[blocks, threads](x, mean, variance)


def batchnorm2d_forward(x, mean, variance, gamma, beta, eps, out):
    """``gamma * (x - mean) / sqrt(variance + eps) + beta``; contract of the CPU twin."""
    blocks, threads = launch_shape(x.size)
    _normalize_kernel[blocks, threads](x, mean, variance, gamma, beta, eps, out)


def batchnorm2d_backward(x, grad_out, mean, variance, gamma, eps, grad_x, grad_gamma, grad_beta):
    """Training-mode batch-norm gradients; contract of the CPU twin."""
    blocks, threads = launch_shape(x.shape[1])
    _gradient_sums_kernel[blocks, threads](x, grad_out, mean, variance, eps, grad_gamma, grad_beta)
    blocks, threads = launch_shape(x.size)
    _grad_input_kernel[blocks, threads](x, grad_out, mean, variance, gamma, eps, grad_gamma, grad_beta, grad_x)


def running_average(running, batch, momentum, scale):
    """``running = (1 - momentum) * running + momentum * scale * batch`` in place."""
    blocks, threads = launch_shape(running.shape[0])
    _running_average_kernel[blocks, threads](running, batch, momentum, scale)


@cuda.jit
def _group_statistics_kernel(x, groups, eps, mean, rstd):
    samples, channels, length = x.shape
    per_group = channels // groups
    count = per_group * length
    for item in range(cuda.grid(1), samples * groups, cuda.gridsize(1)):
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


@cuda.jit
def _group_normalize_kernel(x, gamma, beta, mean, rstd, out):
    samples, channels, length = x.shape
    per_group = channels // mean.shape[1]
    for index in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        i = index % length
        c = (index // length) % channels
        n = index // (length * channels)
        g = c // per_group
        out[n, c, i] = (x[n, c, i] - mean[n, g]) * rstd[n, g] * gamma[c] + beta[c]


@cuda.jit
def _group_grad_input_kernel(x, grad_out, gamma, mean, rstd, grad_x):
    samples, channels, length = x.shape
    groups = mean.shape[1]
    per_group = channels // groups
    count = per_group * length
    for item in range(cuda.grid(1), samples * groups, cuda.gridsize(1)):
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


@cuda.jit
def _group_gradient_sums_kernel(x, grad_out, mean, rstd, grad_gamma, grad_beta):
    samples, channels, length = x.shape
    per_group = channels // mean.shape[1]
    for c in range(cuda.grid(1), channels, cuda.gridsize(1)):
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


def group_norm_statistics(x, groups, eps, mean, rstd):
    """Each sample's group mean and reciprocal standard deviation; contract of the CPU twin."""
    blocks, threads = launch_shape(x.shape[0] * groups)
    _group_statistics_kernel[blocks, threads](x, groups, eps, mean, rstd)


def group_norm_forward(x, gamma, beta, mean, rstd, out):
    """``(x - mean) * rstd * gamma + beta`` per group; contract of the CPU twin."""
    blocks, threads = launch_shape(x.size)
    _group_normalize_kernel[blocks, threads](x, gamma, beta, mean, rstd, out)


def group_norm_backward(x, grad_out, gamma, mean, rstd, grad_x, grad_gamma, grad_beta):
    """Group-norm gradients; contract of the CPU twin."""
    blocks, threads = launch_shape(x.shape[0] * mean.shape[1])
    _group_grad_input_kernel[blocks, threads](x, grad_out, gamma, mean, rstd, grad_x)
    blocks, threads = launch_shape(x.shape[1])
    _group_gradient_sums_kernel[blocks, threads](x, grad_out, mean, rstd, grad_gamma, grad_beta)


@cuda.jit
def _fold_kernel(gamma, beta, mean, variance, bias, has_bias, eps, scale, shift):
    for k in range(cuda.grid(1), scale.shape[0], cuda.gridsize(1)):
        s = gamma[k] / math.sqrt(variance[k] + eps)
        offset = (bias[k] if has_bias else 0.0) - mean[k]
        scale[k] = s
        shift[k] = beta[k] + offset * s


def fold_batch_norm(gamma, beta, mean, variance, bias, has_bias, eps, scale, shift):
    """``scale = gamma / sqrt(variance + eps)``, ``shift = beta + (bias - mean) * scale`` per filter
    (``bias`` used when ``has_bias``)."""
    blocks, threads = launch_shape(scale.shape[0])
    _fold_kernel[blocks, threads](gamma, beta, mean, variance, bias, has_bias, eps, scale, shift)


@cuda.jit
def _layer_norm_kernel(x, weight, bias, eps, out, mean, rstd):
    rows, size = x.shape
    for r in range(cuda.grid(1), rows, cuda.gridsize(1)):
        total = 0.0
        for k in range(size):
            total += x[r, k]
        mu = total / size
        squares = 0.0
        for k in range(size):
            d = x[r, k] - mu
            squares += d * d
        mean[r] = mu
        rstd[r] = 1.0 / math.sqrt(squares / size + eps)
        m, s = mean[r], rstd[r]
        for k in range(size):
            out[r, k] = (x[r, k] - m) * s * weight[k] + bias[k]


def layer_norm_forward(x, weight, bias, eps, out, mean, rstd):
    """Each row's statistics and normalized, scaled and shifted values; contract of the CPU
    twin (one thread per row)."""
    blocks, threads = launch_shape(x.shape[0])
    _layer_norm_kernel[blocks, threads](x, weight, bias, eps, out, mean, rstd)
