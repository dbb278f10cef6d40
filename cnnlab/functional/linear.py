"""Fully-connected layers: :func:`linear` and its backward."""

from __future__ import annotations

import numpy as np

from ..device import kernels_for
from ..dispatch import per_sample
from ..parallel import cpu_workers
from ..types import Array
from .common import as_float_array, bias_or_zeros, blas_guard, check_grad, empty_batches


@per_sample
@empty_batches()
def linear(x: Array, weight: Array, bias: Array | None = None) -> Array:
    """Fully-connected layer: ``x @ weight.T + bias``.

    Parameters
    ----------
    x : (..., in_features) array, float32 or float64
        Usually ``(N, in_features)``; any leading axes are kept (PyTorch's rule), one sample
        ``(in_features,)`` included.
    weight : (out_features, in_features) array of the same dtype (PyTorch layout)
    bias : (out_features,) array or None

    Returns
    -------
    (..., out_features) array on the input's device

    See Also
    --------
    cnnlab.kernels.cpu.linear.linear_forward, cnnlab.kernels.cuda.linear.linear_forward
    torch.nn.functional.linear
    """
    x, leading = _as_rows("x", x)
    weight = as_float_array("weight", weight, ndim=2, dtype=x.dtype)
    kernels = kernels_for(x=x, weight=weight, bias=bias)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"weight has {weight.shape[1]} input features but x has {x.shape[1]} "
            f"(x shape {leading + (x.shape[1],)}, weight shape {tuple(weight.shape)})"
        )
    bias = bias_or_zeros(kernels, bias, weight.shape[0], x.dtype)
    out = kernels.empty((x.shape[0], weight.shape[0]), x.dtype)
    with blas_guard(kernels):
        kernels.linear_forward(kernels.asarray(x), kernels.asarray(weight), bias, out,
                               cpu_workers(x.shape[0] * weight.size))
    return out.reshape(leading + (weight.shape[0],))


def bound_linear(x: Array, weight: Array, bias: Array | None = None):
    """For a caller that repeats :func:`linear` on host arrays of these shapes and dtype with
    these very ``weight`` and ``bias`` arrays (read at each call: edits in place are seen): a
    function ``run(x, out)`` that writes the result into ``out`` (C-contiguous, of the result's
    shape) and returns it, with the checks made now, not at each call (a prepared inference
    plan, :mod:`cnnlab.prepared`, which holds BLAS to one thread and checks the thread count).
    The same kernel call as :func:`linear`'s, so the same values. None for anything but
    C-contiguous host arrays of one float dtype that :func:`linear` takes, with some rows."""
    if type(x) is not np.ndarray or type(weight) is not np.ndarray or x.dtype not in (np.float32, np.float64) \
            or weight.dtype != x.dtype or x.ndim == 0 or weight.ndim != 2 or x.shape[-1] != weight.shape[1] \
            or x.size == 0 or not (x.flags.c_contiguous and weight.flags.c_contiguous) \
            or (bias is not None and (type(bias) is not np.ndarray or bias.dtype != x.dtype
                                      or bias.shape != weight.shape[:1] or not bias.flags.c_contiguous)):
        return None
    rows, features, filters = x.size // x.shape[-1], x.shape[-1], weight.shape[0]
    shift = bias if bias is not None else np.zeros(filters, x.dtype)
    workers = cpu_workers(rows * weight.size)
    kernels = kernels_for(x=x, weight=weight)

    def run(x, out):
        kernels.linear_forward(x.reshape(rows, features), weight, shift, out.reshape(rows, filters), workers)
        return out
    return run


def _as_rows(name, x):
    """``x`` of shape ``(..., features)`` as a 2-D ``(rows, features)`` array, with the leading shape."""
    x = as_float_array(name, x)
    if len(x.shape) == 0:
        raise ValueError(f"{name} must have at least 1 dimension (..., in_features), got a 0-d array")
    leading = tuple(x.shape[:-1])
    return (x if len(x.shape) == 2 else x.reshape((-1, x.shape[-1]))), leading


def linear_backward(x: Array, weight: Array, grad_out: Array) -> tuple[Array, ...]:
    """Gradients of :func:`linear`: ``(grad_out @ weight, grad_out.T @ x, grad_out.sum(0))``.

    Returns
    -------
    grad_x : (..., in_features) array, as ``x``
    grad_weight : (out_features, in_features) array
    grad_bias : (out_features,) array
    """
    x, leading = _as_rows("x", x)
    weight = as_float_array("weight", weight, ndim=2, dtype=x.dtype)
    kernels = kernels_for(x=x, weight=weight, grad_out=grad_out)
    grad_out = check_grad("grad_out", grad_out, leading + (weight.shape[0],), x.dtype).reshape(
        (x.shape[0], weight.shape[0]))
    grad_x = kernels.empty(x.shape, x.dtype)
    grad_weight = kernels.empty(weight.shape, x.dtype)
    grad_bias = kernels.empty((weight.shape[0],), x.dtype)
    with blas_guard(kernels):
        kernels.linear_backward(kernels.asarray(x), kernels.asarray(weight), kernels.asarray(grad_out),
                                grad_x, grad_weight, grad_bias, cpu_workers(x.shape[0] * weight.size))
    return grad_x.reshape(leading + (x.shape[1],)), grad_weight, grad_bias
