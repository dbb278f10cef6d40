"""Reductions over any axes (:func:`reduce`: mean, sum, max, min, prod, sum of squares, L1 and
L2 norms) and the N-d :func:`matmul` of two tensors (attention's ``Q Kᵀ``), with their
backward.

Both are NumPy calls: its reductions are already vectorized loops and its ``matmul`` calls the
same BLAS as the convolutions (with a batched loop over the leading axes), so a kernel pair
would add nothing. A GPU array is brought to the host and the result sent back.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..device import is_gpu_array, to_device, to_host
from ..dispatch import symbolic
from ..types import Array
from .indexing import on_host, sum_to_shape

__all__ = ["REDUCTIONS", "reduce", "reduce_backward", "matmul", "matmul_backward", "reduction_axes"]

#: the reductions :func:`reduce` knows, by name
REDUCTIONS = ("mean", "sum", "max", "min", "prod", "sum_square", "l1", "l2", "log_sum_exp")


def reduction_axes(axes: int | Sequence[int] | None, rank: int) -> tuple[int, ...]:
    """``axes`` as sorted non-negative axes of a rank-``rank`` array; None means all of them."""
    if axes is None:
        return tuple(range(rank))
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        axes = (axes,)
    if isinstance(axes, (str, bytes)) or not isinstance(axes, (Sequence, np.ndarray)):
        raise TypeError(f"axes must be an integer, a sequence of integers or None, got {axes!r}")
    resolved = []
    for axis in axes:
        if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
            raise TypeError(f"axes must hold integers, got {tuple(axes)}")
        if not -rank <= axis < rank:
            raise ValueError(f"axis {axis} is outside the {rank} axes of the input")
        resolved.append(int(axis) % rank)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"axes names an axis twice: {tuple(axes)}")
    return tuple(sorted(resolved))


def _check_op(op):
    if op not in REDUCTIONS:
        raise ValueError(f"op must be one of {', '.join(REDUCTIONS)}, got {op!r}")


def bound_reduce(x: Array, op: str = "mean", axes: int | Sequence[int] | None = None, keepdims: bool = False):
    """For a caller that repeats :func:`reduce` on host arrays of this shape and dtype: a
    function ``run(x, out)`` that writes the reduction into ``out`` (an array of its shape and
    dtype) and returns it, the axes resolved now (a prepared inference plan:
    :mod:`cnnlab.prepared`). The same NumPy call as :func:`reduce`'s, so the same values. None
    for ops other than mean, sum, max, min and prod, arrays other than host float arrays, and
    reductions over an empty axis."""
    if op not in ("mean", "sum", "max", "min", "prod") or type(x) is not np.ndarray or x.dtype.kind != "f":
        return None
    try:
        axes = reduction_axes(axes, x.ndim)
    except (TypeError, ValueError):
        return None
    if any(x.shape[a] == 0 for a in axes):
        return None
    function, keep = getattr(np, op), bool(keepdims)

    def run(x, out):
        with np.errstate(invalid="ignore", divide="ignore"):
            out[...] = function(x, axis=axes, keepdims=keep)
        return out
    return run


@symbolic("reduce")
@on_host
def reduce(x: Array, op: str = "mean", axes: int | Sequence[int] | None = None, keepdims: bool = False) -> Array:
    """Reduce ``x`` over ``axes`` with ``op`` (ONNX's ``Reduce*``; ``torch.mean(x, dim, keepdim)``).

    Parameters
    ----------
    x : array of any rank (float; integers for sum, max, min and prod)
    op : {'mean', 'sum', 'max', 'min', 'prod', 'sum_square', 'l1', 'l2', 'log_sum_exp'}
    axes : int, sequence of int or None
        None reduces over every axis (a 0-d result, or all ones with ``keepdims``).
    keepdims : bool
        Keep the reduced axes with size 1.

    Returns
    -------
    array
        The reduction; an empty reduction (an axis of size 0) gives ONNX's identity: 0 for
        sums, 1 for a product, NaN for a mean, -inf for max and +inf for min.
    """
    _check_op(op)
    x = np.asarray(x)
    axes = reduction_axes(axes, x.ndim)
    keep = bool(keepdims)
    if op in ("max", "min") and any(x.shape[a] == 0 for a in axes):  # ONNX: the identity, -inf or +inf
        shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape)) if keep else \
            tuple(s for i, s in enumerate(x.shape) if i not in axes)
        if x.dtype.kind == "f":
            identity = -np.inf if op == "max" else np.inf
        elif x.dtype.kind == "b":
            identity = op == "min"
        else:
            identity = np.iinfo(x.dtype).min if op == "max" else np.iinfo(x.dtype).max
        return np.full(shape, identity, x.dtype)
    if op in ("mean", "sum", "max", "min", "prod"):
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.asarray(getattr(np, op)(x, axis=axes, keepdims=keep))
    if op == "sum_square":
        return np.asarray(np.sum(x * x, axis=axes, keepdims=keep))
    if op == "l1":
        return np.asarray(np.sum(np.abs(x), axis=axes, keepdims=keep))
    if op == "l2":
        return np.asarray(np.sqrt(np.sum(x * x, axis=axes, keepdims=keep)))
    top = np.max(x, axis=axes, keepdims=True) if x.size else np.zeros([1] * x.ndim, x.dtype)
    top = np.where(np.isfinite(top), top, 0)
    with np.errstate(divide="ignore"):  # an empty reduction: log(0) = -inf, ONNX's identity
        out = np.log(np.sum(np.exp(x - top), axis=axes, keepdims=True)) + top
    return out if keep else out.reshape([s for i, s in enumerate(out.shape) if i not in axes])


def reduce_backward(x: Array, out: Array, grad_out: Array, op: str = "mean",
                    axes: int | Sequence[int] | None = None, keepdims: bool = False) -> Array:
    """Gradient of :func:`reduce` with respect to ``x``, from the forward input ``x``, its result
    ``out`` and ``grad_out``; ties of max and min share the gradient equally."""
    _check_op(op)
    gpu = any(is_gpu_array(a) for a in (x, out, grad_out))
    x, out, grad_out = (to_host(a) if is_gpu_array(a) else np.asarray(a) for a in (x, out, grad_out))
    axes = reduction_axes(axes, x.ndim)
    kept = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
    grad, out = grad_out.reshape(kept), out.reshape(kept)
    if op == "sum":
        result = np.broadcast_to(grad, x.shape)
    elif op == "mean":
        count = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
        result = np.broadcast_to(grad / max(count, 1), x.shape)
    elif op in ("max", "min"):
        mask = (x == out)
        result = grad * mask / np.sum(mask, axis=axes, keepdims=True)
    elif op == "prod":
        with np.errstate(invalid="ignore", divide="ignore"):
            result = grad * np.where(x != 0, out / np.where(x != 0, x, 1), _prod_without(x, axes))
    elif op == "sum_square":
        result = grad * 2 * x
    elif op == "l1":
        result = grad * np.sign(x)
    elif op == "l2":
        with np.errstate(invalid="ignore", divide="ignore"):
            result = grad * np.where(out > 0, x / np.where(out > 0, out, 1), 0)
    else:  # log_sum_exp
        result = grad * np.exp(x - out)
    result = np.ascontiguousarray(result, dtype=x.dtype)
    return to_device(result) if gpu else result


def _prod_without(x, axes):
    """For each entry, the product of the others over ``axes`` (the derivative of a product at a
    zero entry): computed one entry at a time, only where a zero makes the quotient fail."""
    moved = np.moveaxis(x, axes, tuple(range(x.ndim - len(axes), x.ndim)))
    flat = moved.reshape(moved.shape[:moved.ndim - len(axes)] + (-1,))
    result = np.empty_like(flat)
    for k in range(flat.shape[-1]):
        result[..., k] = np.prod(np.delete(flat, k, axis=-1), axis=-1)
    return np.moveaxis(result.reshape(moved.shape), tuple(range(x.ndim - len(axes), x.ndim)), axes)


@symbolic("matmul")
@on_host
def matmul(a: Array, b: Array) -> Array:
    """The matrix product of ``a`` and ``b`` with NumPy's (and ONNX's ``MatMul``) rules: 1-D
    operands are vectors, leading axes broadcast (``(B, h, n, d) @ (B, h, d, m)``)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul takes arrays of at least 1 axis, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul: the last axis of a ({a.shape}) must match the "
                         f"{'second-to-last' if b.ndim > 1 else 'only'} axis of b ({b.shape})")
    try:
        return np.matmul(a, b)
    except ValueError as exc:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not broadcast ({exc})") from None


def matmul_backward(a: Array, b: Array, grad_out: Array) -> tuple[Array, Array]:
    """Gradients of :func:`matmul` with respect to ``a`` and ``b`` (summed over broadcast axes)."""
    gpu = any(is_gpu_array(v) for v in (a, b, grad_out))
    a, b, grad = (to_host(v) if is_gpu_array(v) else np.asarray(v) for v in (a, b, grad_out))
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    g2 = grad.reshape(np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1]))
    grad_a = sum_to_shape(np.matmul(g2, np.swapaxes(b2, -1, -2)), a2.shape).reshape(a.shape)
    grad_b = sum_to_shape(np.matmul(np.swapaxes(a2, -1, -2), g2), b2.shape).reshape(b.shape)
    grad_a, grad_b = (np.ascontiguousarray(g, dtype=v.dtype) for g, v in ((grad_a, a), (grad_b, b)))
    return (to_device(grad_a), to_device(grad_b)) if gpu else (grad_a, grad_b)
