"""Inverted dropout with a counter-based mask, identical on the CPU and the GPU: of elements
(:func:`dropout`) or of whole channels (:func:`dropout2d`)."""

from __future__ import annotations

import numpy as np

from ..device import kernels_for
from ..shapes import check_int
from ..types import Array
from .common import as_float_array, elementwise_backward
from .merge import multiply


def dropout(x: Array, p: float, seed: int) -> tuple[Array, Array]:
    """Inverted dropout: zero each element with probability ``p``, scale the rest by ``1/(1-p)``.

    Which elements drop is a pure function of ``(seed, position)`` (a counter-based hash),
    identical on the CPU and the GPU.

    Parameters
    ----------
    x : array, float32 or float64
    p : float in [0, 1] (1 drops everything)
    seed : int in [0, 2**31)

    Returns
    -------
    out : array like ``x``
    mask : array like ``x``, ``1/(1-p)`` where kept and 0 where dropped (for the backward)

    See Also
    --------
    cnnlab.kernels.cpu.dropout.dropout_forward, torch.nn.functional.dropout
    """
    x = as_float_array("x", x)
    p = check_probability(p)
    seed = check_int("seed", seed, 0)
    if seed >= 2**31:
        raise ValueError(f"seed must be below 2**31, got {seed}")
    kernels = kernels_for(x=x)
    if p == 1:  # every element dropped (PyTorch's p=1): zeros, and a zero gradient
        return kernels.zeros(x.shape, x.dtype), kernels.zeros(x.shape, x.dtype)
    out = kernels.empty(x.shape, x.dtype)
    mask = kernels.empty(x.shape, x.dtype)
    kernels.dropout_forward(kernels.asarray(x).reshape(-1), out.reshape(-1), mask.reshape(-1), p, seed)
    return out, mask


def check_probability(p: float) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
        raise TypeError(f"p must be a number, got {p!r}")
    if not 0 <= p <= 1:
        raise ValueError(f"p must be in [0, 1], got {p}")
    return float(p)


def dropout_backward(mask: Array, grad_out: Array) -> Array:
    """Gradient of :func:`dropout`: ``grad_out * mask``."""
    return elementwise_backward("dropout_backward", mask, grad_out)


def dropout2d(x: Array, p: float, seed: int) -> tuple[Array, Array]:
    """Channel dropout: zero each whole channel of each sample with probability ``p`` and scale
    the rest by ``1/(1-p)`` (``torch.nn.functional.dropout2d``; neighbouring pixels of a feature
    map are correlated, so dropping single pixels regularizes little).

    The channels' mask is :func:`dropout`'s mask of an ``(N, C)`` array of ones with the same
    ``seed``, identical on the CPU and the GPU.

    Parameters
    ----------
    x : (N, C, ...) array, float32 or float64
    p : float in [0, 1)
    seed : int in [0, 2**31)

    Returns
    -------
    out : array like ``x``
    mask : (N, C, 1, ...) array, ``1/(1-p)`` for a kept channel and 0 for a dropped one

    See Also
    --------
    dropout, torch.nn.functional.dropout2d
    """
    x = as_float_array("x", x)
    if len(x.shape) < 2:
        raise ValueError(f"x must have shape (N, C, ...), got shape {tuple(x.shape)}")
    kernels = kernels_for(x=x)
    _, mask = dropout(kernels.ones(tuple(x.shape[:2]), x.dtype), p, seed)
    mask = mask.reshape(tuple(x.shape[:2]) + (1,) * (len(x.shape) - 2))
    return multiply(x, mask), mask


def dropout2d_backward(mask: Array, grad_out: Array) -> Array:
    """Gradient of :func:`dropout2d` with respect to ``x``: ``grad_out * mask`` (``mask``
    broadcast over each channel)."""
    return multiply(grad_out, mask)
