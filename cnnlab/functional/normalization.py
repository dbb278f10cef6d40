"""Normalization: batch normalization of NCHW input per channel, running averages, group
normalization of each sample's groups of channels, and layer normalization over the last axes."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from ..device import is_gpu_array, kernels_for, to_device, to_host
from ..kernels import cpu as cpu_kernels
from ..shapes import check_int
from ..types import Any, Array
from .common import as_float_array, check_grad, empty_batches
from .merge import add_backward, multiply_backward


def batch_norm2d(x: Array, gamma: Array, beta: Array, eps: float = 1e-05, mean: Array | None = None,
                 variance: Array | None = None) -> tuple[Array, ...]:
    """Batch normalization per channel of ``(N, C, ...)`` input: ``(N, C)``, ``(N, C, L)``,
    ``(N, C, H, W)`` and more axes, as ``torch.nn.functional.batch_norm``.

    With ``mean``/``variance`` given (evaluation, running statistics) they are used;
    otherwise the batch's own statistics are computed and returned (training).

    Returns
    -------
    out : (N, C, H, W) array
    mean, variance : (C,) arrays, the statistics used (biased variance)

    See Also
    --------
    cnnlab.kernels.cpu.normalization.batchnorm2d_forward, torch.nn.functional.batch_norm
    """
    x, shape = _as_nchw(x)
    channels = x.shape[1]
    gamma = check_grad("gamma", gamma, (channels,), x.dtype)
    beta = check_grad("beta", beta, (channels,), x.dtype)
    kernels = kernels_for(x=x, gamma=gamma, beta=beta, mean=mean, variance=variance)
    x = kernels.asarray(x)
    if mean is None or variance is None:
        mean = kernels.empty((channels,), x.dtype)
        variance = kernels.empty((channels,), x.dtype)
        kernels.batchnorm2d_statistics(x, mean, variance)
    else:
        mean = kernels.asarray(check_grad("mean", mean, (channels,), x.dtype))
        variance = kernels.asarray(check_grad("variance", variance, (channels,), x.dtype))
    out = kernels.empty(x.shape, x.dtype)
    kernels.batchnorm2d_forward(x, mean, variance, kernels.asarray(gamma), kernels.asarray(beta), float(eps), out)
    return out.reshape(shape), mean, variance


def _as_nchw(x):
    """``x`` of shape ``(N, C, ...)`` (``(N, C)``, ``(N, C, L)``, ``(N, C, H, W)``, ...) as the
    kernels' 4-D ``(N, C, L, 1)`` (a view), with its own shape."""
    x = as_float_array("x", x)
    shape = tuple(x.shape)
    if len(shape) < 2:
        raise ValueError(f"x must have shape (N, C, ...), got shape {shape}")
    if len(shape) == 4:
        return x, shape
    return x.reshape(shape[:2] + (math.prod(shape[2:]), 1)), shape


def running_average(running: Array, batch: Array, momentum: float, scale: float = 1.0) -> None:
    """Update ``running`` in place: ``(1 - momentum) * running + momentum * scale * batch``."""
    kernels = kernels_for(running=running, batch=batch)
    kernels.running_average(kernels.asarray(running), kernels.asarray(batch), float(momentum), float(scale))


def batch_norm2d_backward(x: Array, grad_out: Array, mean: Array, variance: Array, gamma: Array,
                          eps: float = 1e-05) -> tuple[Array, ...]:
    """Gradients of training-mode :func:`batch_norm2d`: ``(grad_x, grad_gamma, grad_beta)``."""
    x, shape = _as_nchw(x)
    kernels = kernels_for(x=x, grad_out=grad_out, gamma=gamma)
    grad_out = check_grad("grad_out", grad_out, shape, x.dtype).reshape(tuple(x.shape))
    channels = x.shape[1]
    grad_x = kernels.empty(x.shape, x.dtype)
    grad_gamma = kernels.empty((channels,), x.dtype)
    grad_beta = kernels.empty((channels,), x.dtype)
    kernels.batchnorm2d_backward(kernels.asarray(x), kernels.asarray(grad_out), kernels.asarray(mean),
                                 kernels.asarray(variance), kernels.asarray(gamma), float(eps),
                                 grad_x, grad_gamma, grad_beta)
    return grad_x.reshape(shape), grad_gamma, grad_beta


def _per_channel(name, values, channels, dtype):
    values = as_float_array(name, values, dtype=dtype)
    if tuple(values.shape) != (channels,):
        raise ValueError(f"{name} must have shape ({channels},) (one entry per channel), got {tuple(values.shape)}")
    return values


def _group_geometry(x, num_groups, weight, bias):
    """Check :func:`group_norm`'s arguments; ``(x as (N, C, L), kernels, weight, bias)``."""
    x = as_float_array("x", x)
    if len(x.shape) < 2:
        raise ValueError(f"x must have shape (N, C, ...), got shape {tuple(x.shape)}")
    num_groups = check_int("num_groups", num_groups, 1)
    channels = x.shape[1]
    if channels % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide the channels of x, got C={channels}")
    kernels = kernels_for(x=x, weight=weight, bias=bias)
    weight = kernels.ones((channels,), x.dtype) if weight is None else _per_channel("weight", weight, channels, x.dtype)
    bias = kernels.zeros((channels,), x.dtype) if bias is None else _per_channel("bias", bias, channels, x.dtype)
    flat = kernels.asarray(x).reshape((x.shape[0], channels, -1))
    return flat, kernels, kernels.asarray(weight), kernels.asarray(bias)


def _epsilon(eps):
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    return float(eps)


@empty_batches(elementwise=True)
def group_norm(x: Array, num_groups: int, weight: Array | None = None, bias: Array | None = None, eps: float = 1e-05,
               *, return_statistics: bool = False) -> Array | tuple[Array, ...]:
    """Group normalization: each sample's channels in ``num_groups`` groups, each group
    normalized by its own mean and variance, then scaled and shifted per channel.

    ``out[n, c] = (x[n, c] - mean[n, g]) / sqrt(var[n, g] + eps) * weight[c] + bias[c]`` where
    group ``g = c // (C / num_groups)`` and the statistics run over the group's channels and all
    positions (biased variance). Unlike batch normalization it does not depend on the batch.

    Parameters
    ----------
    x : (N, C, ...) array, float32 or float64
    num_groups : int
        Divides ``C``. ``num_groups=1`` is a layer norm over ``(C, ...)``; ``num_groups=C`` an
        instance norm.
    weight, bias : (C,) arrays or None
        Per-channel scale (default 1) and shift (default 0).
    eps : float > 0
    return_statistics : bool
        Also return ``mean`` and ``rstd`` (each ``(N, num_groups)``, ``rstd = 1/sqrt(var + eps)``),
        what :func:`group_norm_backward` takes.

    Returns
    -------
    out : array like ``x``
        With ``return_statistics``: ``(out, mean, rstd)``.

    Shape
    -----
    The output has the input's shape.

    See Also
    --------
    cnnlab.kernels.cpu.normalization.group_norm_forward, cnnlab.kernels.cuda.normalization.group_norm_forward,
    torch.nn.functional.group_norm
    """
    flat, kernels, weight, bias = _group_geometry(x, num_groups, weight, bias)
    eps = _epsilon(eps)
    mean = kernels.empty((flat.shape[0], num_groups), flat.dtype)
    rstd = kernels.empty((flat.shape[0], num_groups), flat.dtype)
    kernels.group_norm_statistics(flat, num_groups, eps, mean, rstd)
    out = kernels.empty(flat.shape, flat.dtype)
    kernels.group_norm_forward(flat, weight, bias, mean, rstd, out)
    out = out.reshape(tuple(x.shape))
    return (out, mean, rstd) if return_statistics else out


def instance_norm(x: Array, running_mean: Array | None = None, running_var: Array | None = None,
                  weight: Array | None = None, bias: Array | None = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-05) -> Array:
    """``torch.nn.functional.instance_norm``: each sample's channels normalized by their own mean
    and variance over the positions (:func:`group_norm` with one channel per group), then scaled
    and shifted per channel. With ``use_input_stats=False``, the running statistics normalize
    instead (:func:`batch_norm2d`'s inference). ``momentum`` and the running statistics are not
    updated here (a functional call has no state to keep).
    """
    x = as_float_array("x", x)
    if len(x.shape) < 2:
        raise ValueError(f"x must be (N, C, ...), got shape {tuple(x.shape)}")
    if use_input_stats:
        return group_norm(x, int(x.shape[1]), weight, bias, eps)
    if running_mean is None or running_var is None:
        raise ValueError("use_input_stats=False needs running_mean and running_var")
    channels = int(x.shape[1])
    weight = np.ones(channels, x.dtype) if weight is None else weight
    bias = np.zeros(channels, x.dtype) if bias is None else bias
    return batch_norm2d(x, weight, bias, eps, running_mean, running_var)[0]


def group_norm_backward(x: Array, grad_out: Array, num_groups: int, weight: Array | None = None,
                        mean: Array | None = None, rstd: Array | None = None, eps: float = 1e-05) -> tuple[Array, ...]:
    """Gradients of :func:`group_norm`: ``(grad_x, grad_weight, grad_bias)``.

    ``mean`` and ``rstd`` are the forward's statistics (``return_statistics=True``); without
    them they are computed again from ``x`` and ``eps``.
    """
    flat, kernels, weight, _ = _group_geometry(x, num_groups, weight, None)
    grad_out = kernels.asarray(check_grad("grad_out", grad_out, tuple(x.shape), flat.dtype)).reshape(flat.shape)
    samples, channels = flat.shape[:2]
    if mean is None or rstd is None:
        mean = kernels.empty((samples, num_groups), flat.dtype)
        rstd = kernels.empty((samples, num_groups), flat.dtype)
        kernels.group_norm_statistics(flat, num_groups, _epsilon(eps), mean, rstd)
    else:
        mean = kernels.asarray(check_grad("mean", mean, (samples, num_groups), flat.dtype))
        rstd = kernels.asarray(check_grad("rstd", rstd, (samples, num_groups), flat.dtype))
    grad_x = kernels.empty(flat.shape, flat.dtype)
    grad_weight = kernels.empty((channels,), flat.dtype)
    grad_bias = kernels.empty((channels,), flat.dtype)
    kernels.group_norm_backward(flat, grad_out, weight, mean, rstd, grad_x, grad_weight, grad_bias)
    return grad_x.reshape(tuple(x.shape)), grad_weight, grad_bias


def _layer_rows(x, normalized_shape):
    """``x`` as ``(rows, 1, K)`` for the group-norm kernels (K the size of the normalized axes)."""
    x = as_float_array("x", x)
    if isinstance(normalized_shape, (int, np.integer)) and not isinstance(normalized_shape, bool):
        normalized_shape = (int(normalized_shape),)
    normalized_shape = tuple(int(s) for s in normalized_shape)
    shape = tuple(int(s) for s in x.shape)
    if not normalized_shape or len(normalized_shape) > len(shape) or shape[len(shape) - len(normalized_shape):] \
            != normalized_shape:
        raise ValueError(f"normalized_shape must be the last axes of x, got {normalized_shape} for x of shape {shape}")
    size = math.prod(normalized_shape)
    return x.reshape((-1, 1, size)), normalized_shape


@empty_batches(elementwise=True)
def layer_norm(x: Array, normalized_shape: int | Sequence[int], weight: Array | None = None,
               bias: Array | None = None, eps: float = 1e-5, *,
               return_statistics: bool = False) -> Array | tuple[Array, ...]:
    """Layer normalization: each position's values over the last axes ``normalized_shape``
    normalized by their own mean and biased variance, then scaled by ``weight`` and shifted by
    ``bias`` (each of shape ``normalized_shape``), as ``torch.nn.functional.layer_norm``.

    Runs on one kernel (``layer_norm_forward``): each row's statistics, then its values
    normalized, scaled and shifted, the rows shared between the threads.

    Parameters
    ----------
    x : array, float32 or float64, whose last axes are ``normalized_shape``
    normalized_shape : int or tuple of int
    weight, bias : arrays of shape ``normalized_shape``, or None (1 and 0)
    eps : float > 0
    return_statistics : bool
        Also return ``mean`` and ``rstd`` (one per row, shape ``(rows, 1)``) for
        :func:`layer_norm_backward`.

    Returns
    -------
    out : array like ``x`` (with the statistics when asked)

    See Also
    --------
    group_norm, torch.nn.functional.layer_norm
    """
    rows, normalized_shape = _layer_rows(x, normalized_shape)
    kernels = kernels_for(x=rows, weight=weight, bias=bias)
    size = rows.shape[2]
    weight = kernels.ones((size,), rows.dtype) if weight is None else \
        kernels.asarray(_checked_affine("weight", weight, normalized_shape, rows.dtype)).reshape(size)
    bias = kernels.zeros((size,), rows.dtype) if bias is None else \
        kernels.asarray(_checked_affine("bias", bias, normalized_shape, rows.dtype)).reshape(size)
    flat = rows.reshape(rows.shape[0], size)
    out = kernels.empty(tuple(flat.shape), rows.dtype)
    mean, rstd = kernels.empty((rows.shape[0],), rows.dtype), kernels.empty((rows.shape[0],), rows.dtype)
    kernels.layer_norm_forward(flat, weight, bias, _epsilon(eps), out, mean, rstd)
    out = out.reshape(tuple(x.shape))
    return (out, mean.reshape(-1, 1), rstd.reshape(-1, 1)) if return_statistics else out


def bound_layer_norm(x: Array, normalized_shape: Sequence[int], weight: Array | None, bias: Array | None,
                     eps: float) -> Any:
    """For a caller that repeats :func:`layer_norm` on host arrays of ``x``'s shape and dtype
    with these ``weight`` and ``bias`` arrays (read at each call: edits in place are seen):
    ``run(x, out)`` writing the result into ``out`` (C-ordered, of ``x``'s shape) and returning
    it, with the checks made now (a prepared inference plan: :mod:`cnnlab.prepared`). The same
    kernel call, so the same values. None for anything but C-ordered host float arrays."""
    if type(x) is not np.ndarray or not x.flags.c_contiguous or x.dtype not in (np.float32, np.float64) \
            or any(v is not None and (type(v) is not np.ndarray or v.dtype != x.dtype or not v.flags.c_contiguous)
                   for v in (weight, bias)):
        return None
    try:
        rows, normalized_shape = _layer_rows(x, normalized_shape)
        weight, bias = (None if v is None else _checked_affine(name, v, normalized_shape, x.dtype)
                        for name, v in (("weight", weight), ("bias", bias)))
        eps = _epsilon(eps)
    except (TypeError, ValueError):
        return None
    count, size = rows.shape[0], rows.shape[2]
    weight = np.ones(size, x.dtype) if weight is None else weight.reshape(size)
    bias = np.zeros(size, x.dtype) if bias is None else bias.reshape(size)
    mean, rstd = np.empty(count, x.dtype), np.empty(count, x.dtype)
    def run(x, out):
        cpu_kernels.layer_norm_forward(x.reshape(count, size), weight, bias, eps, out.reshape(count, size), mean, rstd)
        return out
    return run


def _checked_affine(name, values, normalized_shape, dtype):
    values = as_float_array(name, values, dtype=dtype)
    if tuple(values.shape) != tuple(normalized_shape):
        raise ValueError(f"{name} must have shape {tuple(normalized_shape)} (normalized_shape), got {tuple(values.shape)}")
    return values


def layer_norm_backward(x: Array, grad_out: Array, normalized_shape: int | Sequence[int], weight: Array | None = None,
                        mean: Array | None = None, rstd: Array | None = None,
                        eps: float = 1e-5) -> tuple[Array, Array, Array]:
    """Gradients of :func:`layer_norm`: ``(grad_x, grad_weight, grad_bias)``, the last two of
    ``normalized_shape`` (what the gradients of a weight of ones and a bias of zeros would be when
    ``weight``/``bias`` were None). ``mean`` and ``rstd`` are the forward's statistics, computed
    again from ``x`` and ``eps`` when not given."""
    rows, normalized_shape = _layer_rows(x, normalized_shape)
    if mean is None or rstd is None:
        _, mean, rstd = group_norm(rows, 1, eps=eps, return_statistics=True)
    grad_out = check_grad("grad_out", grad_out, tuple(x.shape), rows.dtype)
    normalized = group_norm(rows, 1, eps=eps).reshape(tuple(x.shape))  # what the affine part saw
    weight = _ones_like_shape(normalized_shape, grad_out) if weight is None else \
        _checked_affine("weight", weight, normalized_shape, rows.dtype)
    grad_normalized, grad_weight = multiply_backward(normalized, weight, grad_out)
    grad_bias = add_backward(grad_out, _ones_like_shape(normalized_shape, grad_out), grad_out)[1]
    grad_rows, _, _ = group_norm_backward(rows, grad_normalized.reshape(tuple(rows.shape)), 1, None, mean, rstd)
    return grad_rows.reshape(tuple(x.shape)), grad_weight, grad_bias


def _ones_like_shape(shape, like):
    return kernels_for(like=like).ones(tuple(shape), like.dtype)


def channel_affine(x: Array, weight: Array, bias: Array) -> Array:
    """``x * weight[c] + bias[c]`` for each channel ``c`` of ``(N, C, ...)`` input: one pass on the
    batch normalization kernel (a zero mean, a unit variance and no epsilon make its scale the
    weight and its shift the bias, exactly)."""
    x = as_float_array("x", x)
    if len(x.shape) < 2:
        raise ValueError(f"x must have shape (N, C, ...), got shape {tuple(x.shape)}")
    channels = int(x.shape[1])
    kernels = kernels_for(x=x)
    zeros, ones = kernels.zeros((channels,), x.dtype), kernels.zeros((channels,), x.dtype) + x.dtype.type(1)
    return batch_norm2d(x, weight, bias, 0.0, zeros, ones)[0]


def bound_batch_norm2d(x: Array, gamma: Array, beta: Array, eps: float, mean: Array, variance: Array) -> Any:
    """For a caller that repeats :func:`batch_norm2d` with these statistics (inference) on host
    arrays of ``x``'s shape and dtype, the arrays read at each call (edits in place are seen):
    ``run(x, out)`` writing it into ``out`` (C-ordered, of ``x``'s shape) and returning it, with
    the checks made now (a prepared inference plan: :mod:`cnnlab.prepared`). The same kernel
    call, so the same values. None for anything but C-ordered host float arrays of
    ``(N, C, ...)`` and per-channel arrays of their dtype."""
    if type(x) is not np.ndarray or not x.flags.c_contiguous or x.dtype not in (np.float32, np.float64) \
            or x.ndim < 2 or any(type(v) is not np.ndarray or v.dtype != x.dtype or v.shape != (x.shape[1],)
                                 or not v.flags.c_contiguous for v in (gamma, beta, mean, variance)):
        return None
    shape, eps = _as_nchw(x)[0].shape, float(eps)

    def run(x, out):
        cpu_kernels.batchnorm2d_forward(x.reshape(shape), mean, variance, gamma, beta, eps, out.reshape(shape))
        return out
    return run


def bound_channel_affine(x: Array, weight: Array, bias: Array) -> Any:
    """:func:`bound_batch_norm2d` of :func:`channel_affine`: ``run(x, out)`` for a caller that
    repeats it with these ``weight`` and ``bias`` arrays, or None."""
    channels = x.shape[1] if isinstance(x, np.ndarray) and x.ndim >= 2 else 0
    dtype = getattr(x, "dtype", np.float64)
    return bound_batch_norm2d(x, weight, bias, 0.0, np.zeros(channels, dtype), np.ones(channels, dtype))


def channel_affine_backward(x: Array, weight: Array, grad_out: Array) -> tuple[Array, Array, Array]:
    """Gradients of :func:`channel_affine`: ``(grad_x, grad_weight, grad_bias)``."""
    grad_out = as_float_array("grad_out", grad_out)
    channels = int(grad_out.shape[1])
    grad_x = channel_affine(grad_out, weight, kernels_for(x=grad_out).zeros((channels,), grad_out.dtype))
    axes = (0,) + tuple(range(2, len(grad_out.shape)))
    gpu = is_gpu_array(grad_out)
    g, values = (to_host(grad_out), to_host(x)) if gpu else (np.asarray(grad_out), np.asarray(x))
    grad_weight = np.ascontiguousarray((g * values).sum(axis=axes), dtype=g.dtype)
    grad_bias = np.ascontiguousarray(g.sum(axis=axes), dtype=g.dtype)
    return (grad_x, to_device(grad_weight), to_device(grad_bias)) if gpu else (grad_x, grad_weight, grad_bias)
