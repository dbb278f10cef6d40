"""Fully-connected layers: :func:`linear` and its backward."""

from __future__ import annotations

from ..device import kernels_for
from ..dispatch import per_sample
from ..parallel import cpu_workers
from ..types import Array
from .common import as_float_array, bias_or_zeros, blas_guard, check_grad


@per_sample
def linear(x: Array, weight: Array, bias: Array | None = None) -> Array:
    """Fully-connected layer: ``x @ weight.T + bias``.

    Parameters
    ----------
    x : (N, in_features) array, float32 or float64
    weight : (out_features, in_features) array of the same dtype (PyTorch layout)
    bias : (out_features,) array or None

    Returns
    -------
    (N, out_features) array on the input's device

    See Also
    --------
    cnnlab.kernels.cpu.linear.linear_forward, cnnlab.kernels.cuda.linear.linear_forward
    torch.nn.functional.linear
    """
    x = as_float_array("x", x, ndim=2)
    weight = as_float_array("weight", weight, ndim=2, dtype=x.dtype)
    kernels = kernels_for(x=x, weight=weight, bias=bias)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"weight has {weight.shape[1]} input features but x has {x.shape[1]} "
            f"(x shape {tuple(x.shape)}, weight shape {tuple(weight.shape)})"
        )
    bias = bias_or_zeros(kernels, bias, weight.shape[0], x.dtype)
    out = kernels.empty((x.shape[0], weight.shape[0]), x.dtype)
    with blas_guard(kernels):
        kernels.linear_forward(kernels.asarray(x), kernels.asarray(weight), bias, out,
                               cpu_workers(x.shape[0] * weight.size))
    return out


def linear_backward(x: Array, weight: Array, grad_out: Array) -> tuple[Array, ...]:
    """Gradients of :func:`linear`: ``(grad_out @ weight, grad_out.T @ x, grad_out.sum(0))``.

    Returns
    -------
    grad_x : (N, in_features) array
    grad_weight : (out_features, in_features) array
    grad_bias : (out_features,) array
    """
    x = as_float_array("x", x, ndim=2)
    weight = as_float_array("weight", weight, ndim=2, dtype=x.dtype)
    kernels = kernels_for(x=x, weight=weight, grad_out=grad_out)
    grad_out = check_grad("grad_out", grad_out, (x.shape[0], weight.shape[0]), x.dtype)
    grad_x = kernels.empty(x.shape, x.dtype)
    grad_weight = kernels.empty(weight.shape, x.dtype)
    grad_bias = kernels.empty((weight.shape[0],), x.dtype)
    with blas_guard(kernels):
        kernels.linear_backward(kernels.asarray(x), kernels.asarray(weight), kernels.asarray(grad_out),
                                grad_x, grad_weight, grad_bias, cpu_workers(x.shape[0] * weight.size))
    return grad_x, grad_weight, grad_bias
