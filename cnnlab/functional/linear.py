"""Fully-connected layers: :func:`linear` and its backward."""

from __future__ import annotations

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
