"""Data movement: :func:`transpose` (any permutation of any rank) and its backward."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..device import kernels_for
from ..dispatch import symbolic
from ..types import Array
from .common import as_float_array
from .merge import index_array


def check_axes(axes: Sequence[int], rank: int, name: str = "axes") -> tuple[int, ...]:
    """A permutation of ``range(rank)`` (negative axes count from the end), as a tuple."""
    if isinstance(axes, (str, bytes)) or not isinstance(axes, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of axes, got {axes!r}")
    if any(isinstance(a, bool) or not isinstance(a, (int, np.integer)) for a in axes):
        raise TypeError(f"{name} must hold integers, got {tuple(axes)}")
    resolved = tuple(int(a) % rank if -rank <= int(a) < rank else None for a in axes)
    if len(resolved) != rank or None in resolved or sorted(resolved) != list(range(rank)):
        raise ValueError(f"{name} must be a permutation of the {rank} axes (0..{rank - 1}), got {tuple(axes)}")
    return resolved


@symbolic("transpose")
def transpose(x: Array, axes: Sequence[int]) -> Array:
    """Permute the axes of ``x``: output axis ``k`` is input axis ``axes[k]`` (``numpy.transpose``,
    ``torch.permute``), a new C-contiguous array on the input's device.

    Parameters
    ----------
    x : array of any rank, float32 or float64
    axes : sequence of int
        A permutation of ``range(x.ndim)``; negative axes count from the end.

    Returns
    -------
    array of shape ``[x.shape[a] for a in axes]``

    See Also
    --------
    cnnlab.kernels.cpu.tensor.transpose_forward, cnnlab.kernels.cuda.tensor.transpose_forward
    """
    x = as_float_array("x", x)
    axes = check_axes(axes, len(x.shape))
    kernels = kernels_for(x=x)
    shape = tuple(int(s) for s in x.shape)
    out = kernels.empty(tuple(shape[a] for a in axes), x.dtype)
    if out.size:
        dims, steps = _transpose_geometry(shape, axes)
        kernels.transpose_forward(kernels.asarray(x).reshape(-1), out.reshape(-1),
                                  index_array(kernels, dims), index_array(kernels, steps))
    return out


def _transpose_geometry(shape, axes):
    """The transpose kernels' ``(dims, steps)`` for a C-contiguous input of ``shape``: axes of
    length 1 left out, and an output axis merged into the one before it where the input steps
    over both as one (fewer axes: less index arithmetic)."""
    strides = [math.prod(shape[k + 1:]) for k in range(len(shape))]
    dims, steps = [], []
    for a in axes:
        if shape[a] == 1:
            continue
        if dims and steps[-1] == strides[a] * shape[a]:
            dims[-1], steps[-1] = dims[-1] * shape[a], strides[a]
        else:
            dims.append(shape[a])
            steps.append(strides[a])
    return dims or [1], steps or [0]


def bound_transpose(x: Array, axes: Sequence[int]):
    """For a caller that repeats :func:`transpose` on host arrays of this shape and dtype: a
    function ``run(x, out)`` that writes the permuted array into ``out`` (C-contiguous, of the
    output's shape) and returns it, its geometry worked out now (a prepared inference plan:
    :mod:`cnnlab.prepared`). The same kernel call as :func:`transpose`'s. None for anything but
    a C-contiguous host float array with some values."""
    if type(x) is not np.ndarray or x.dtype not in (np.float32, np.float64) or not x.flags.c_contiguous \
            or x.size == 0:
        return None
    try:
        axes = check_axes(axes, len(x.shape))
    except (TypeError, ValueError):
        return None
    kernels = kernels_for(x=x)
    dims, steps = _transpose_geometry(tuple(int(s) for s in x.shape), axes)
    dims, steps = index_array(kernels, dims), index_array(kernels, steps)

    def run(x, out):
        kernels.transpose_forward(x.reshape(-1), out.reshape(-1), dims, steps)
        return out
    return run


def transpose_backward(grad_out: Array, axes: Sequence[int]) -> Array:
    """Gradient of :func:`transpose`: ``grad_out`` permuted back by the inverse permutation."""
    grad_out = as_float_array("grad_out", grad_out)
    axes = check_axes(axes, len(grad_out.shape))
    return transpose(grad_out, tuple(int(i) for i in np.argsort(axes)))
