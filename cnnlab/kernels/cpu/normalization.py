"""CPU batch normalization over the (N, H, W) axes of NCHW input, one thread per channel.

Mirrors :mod:`cnnlab.kernels.cuda.normalization`.
"""

import math

from numba import njit, prange

__all__ = [  # the kernels of this file
    "batchnorm2d_backward",
    "batchnorm2d_forward",
    "batchnorm2d_statistics",
    "running_average",
]


@njit(parallel=True, cache=True)
def batchnorm2d_statistics(x, mean, variance):
    """Per-channel mean and biased variance of ``x`` (N, C, H, W), accumulated in float64."""
    samples, channels, height, width = x.shape
    count = samples * height * width
    for c in prange(channels):
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


@njit(parallel=True, cache=True)
def batchnorm2d_forward(x, mean, variance, gamma, beta, eps, out):
    """``out = gamma * (x - mean) / sqrt(variance + eps) + beta`` per channel."""
    samples, channels, height, width = x.shape
    for c in prange(channels):
        scale = gamma[c] / math.sqrt(variance[c] + eps)
        shift = beta[c] - mean[c] * scale
        for n in range(samples):
            for h in range(height):
                for w in range(width):
                    out[n, c, h, w] = x[n, c, h, w] * scale + shift


@njit(parallel=True, cache=True)
def batchnorm2d_backward(x, grad_out, mean, variance, gamma, eps, grad_x, grad_gamma, grad_beta):
    """Gradients of training-mode :func:`batchnorm2d_forward` (batch statistics).

    With ``xhat = (x - mean) / std``: ``grad_beta = sum(g)``, ``grad_gamma = sum(g * xhat)``,
    ``grad_x = gamma / std * (g - grad_beta / M - xhat * grad_gamma / M)``, ``M = N*H*W``.
    """
    samples, channels, height, width = x.shape
    count = samples * height * width
    for c in prange(channels):
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
        factor = gamma[c] * inv_std
        for n in range(samples):
            for h in range(height):
                for w in range(width):
                    xhat = (x[n, c, h, w] - mean[c]) * inv_std
                    grad_x[n, c, h, w] = factor * (grad_out[n, c, h, w] - sum_g / count - xhat * sum_g_xhat / count)


@njit(parallel=True, cache=True)
def running_average(running, batch, momentum, scale):
    """``running = (1 - momentum) * running + momentum * scale * batch`` (1-D arrays, in place)."""
    for i in prange(running.shape[0]):
        running[i] = (1.0 - momentum) * running[i] + momentum * scale * batch[i]
