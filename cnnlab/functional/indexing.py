"""Ops that select, reshape and combine arrays of any rank and dtype (floats, integer shapes and
indices, booleans), as ONNX and NumPy define them: :func:`slice`, :func:`gather`,
:func:`squeeze`, :func:`unsqueeze`, :func:`expand`, :func:`cast`, :func:`where`, :func:`pad`
(constant, reflect, edge, wrap), and the gradients :func:`slice_backward`, :func:`gather_backward`,
:func:`pad_backward`, :func:`sum_to_shape`.

They move data and compute nothing, so NumPy's own indexing does the work: no kernel pair. A GPU
array is brought to the host, and the result sent back (these ops are a network's bookkeeping;
the convolutions around them stay on the GPU).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence

import numpy as np

from ..device import is_gpu_array, to_device, to_host
from ..dispatch import symbolic
from ..types import Any, Array, DTypeLike

__all__ = ["slice", "slice_backward", "gather", "gather_backward", "squeeze", "unsqueeze", "expand",
           "sum_to_shape", "cast", "where", "pad", "pad_backward", "PAD_MODES", "on_host"]


def on_host(function):
    """Run ``function`` on host copies of GPU arguments and send a GPU caller's result back."""
    def run(*arrays, **options):
        gpu = any(is_gpu_array(a) for a in arrays)
        result = function(*[to_host(a) if is_gpu_array(a) else a for a in arrays], **options)
        return to_device(np.ascontiguousarray(result)) if gpu else result
    run.__name__, run.__doc__, run.__wrapped__ = function.__name__, function.__doc__, function
    return run


def _array(name, x):
    if is_gpu_array(x):
        return x
    if isinstance(x, (list, tuple)) or np.isscalar(x):
        return np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    return x


def _axis(axis, rank, name="axis"):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {axis!r}")
    if not -rank <= axis < rank:
        raise ValueError(f"{name}={axis} is outside the {rank} axes of the input")
    return int(axis) % rank


def _axes(axes, rank, name="axes"):
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        axes = (axes,)
    if isinstance(axes, (str, bytes)) or not isinstance(axes, (Sequence, np.ndarray)):
        raise TypeError(f"{name} must be a sequence of integers, got {axes!r}")
    resolved = tuple(_axis(a, rank, name) for a in axes)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"{name} names an axis twice: {tuple(axes)}")
    return resolved


def slice_geometry(shape: Sequence[int], starts: Sequence[int], ends: Sequence[int],
                   axes: Sequence[int] | None = None, steps: Sequence[int] | None = None) -> tuple:
    """The tuple of Python slices ONNX's ``Slice`` takes on an array of ``shape`` (clamped
    starts and ends, negative values counting from the end, steps of either sign)."""
    rank = len(shape)
    axes = tuple(range(len(starts))) if axes is None else _axes(axes, rank)
    steps = (1,) * len(starts) if steps is None else tuple(int(s) for s in steps)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError(f"starts, ends, axes and steps must have one entry per sliced axis, got "
                         f"{len(starts)}, {len(ends)}, {len(axes)}, {len(steps)}")
    if 0 in steps:
        raise ValueError("steps must not be 0")
    index = [builtins.slice(None)] * rank
    for start, end, axis, step in zip(starts, ends, axes, steps):
        # Python's slices clamp the same way ONNX does; huge sentinels (INT64_MAX) just mean "to the end"
        index[axis] = builtins.slice(int(start), int(end), step)
    return tuple(index)


@symbolic("slice")
@on_host
def slice(x: Array, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None = None,
          steps: Sequence[int] | None = None) -> Array:
    """``x[starts:ends:steps]`` along ``axes`` (ONNX ``Slice``; ``torch.narrow`` and indexing).

    Parameters
    ----------
    x : array of any rank and dtype
    starts, ends : sequence of int
        One per sliced axis; negative values count from the end, out-of-range values are clamped.
    axes : sequence of int, optional
        The sliced axes (default: the first ``len(starts)``).
    steps : sequence of int, optional
        Non-zero; negative steps walk backwards.

    Returns
    -------
    array
        A new array (never a view of ``x``).
    """
    x = _array("x", x)
    return np.array(x[slice_geometry(x.shape, starts, ends, axes, steps)])


def bound_slice(x: Array, out: Array, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None = None,
                steps: Sequence[int] | None = None) -> Any:
    """For a caller that repeats :func:`slice` on host arrays of ``x``'s shape: ``run(x, out)``
    copying the slice into ``out`` (an array of the slice's shape and ``x``'s dtype, as the one
    given) and returning it, the slice's geometry worked out now (a prepared inference plan:
    :mod:`cnnlab.prepared`). None for anything but host arrays, or an ``out`` of another shape
    or dtype than the slice's."""
    if type(x) is not np.ndarray or type(out) is not np.ndarray or out.dtype != x.dtype:
        return None
    try:
        index = slice_geometry(x.shape, starts, ends, axes, steps)
    except (TypeError, ValueError):
        return None
    if x[index].shape != out.shape:
        return None

    def run(x, out):
        np.copyto(out, x[index])
        return out
    return run


def slice_backward(grad_out: Array, input_shape: Sequence[int], starts: Sequence[int], ends: Sequence[int],
                   axes: Sequence[int] | None = None, steps: Sequence[int] | None = None) -> Array:
    """Gradient of :func:`slice`: ``grad_out`` written into zeros of ``input_shape``."""
    gpu = is_gpu_array(grad_out)
    grad_out = to_host(grad_out) if gpu else np.asarray(grad_out)
    grad = np.zeros(tuple(input_shape), grad_out.dtype)
    grad[slice_geometry(grad.shape, starts, ends, axes, steps)] = grad_out
    return to_device(grad) if gpu else grad


@symbolic("gather")
@on_host
def gather(x: Array, indices: Array, axis: int = 0) -> Array:
    """Pick entries of ``x`` along ``axis`` (ONNX ``Gather``, ``numpy.take``): the output's shape
    is ``x.shape[:axis] + indices.shape + x.shape[axis + 1:]``; negative indices count from the
    end; an index out of range is a ``ValueError``."""
    x, indices = _array("x", x), _array("indices", indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers, got dtype {indices.dtype}")
    axis = _axis(axis, x.ndim)
    size = x.shape[axis]
    if indices.size and (indices.min() < -size or indices.max() >= size):
        raise ValueError(f"indices must lie in [-{size}, {size}) for axis {axis} of size {size}, "
                         f"got {indices.min()}..{indices.max()}")
    return np.asarray(np.take(x, np.where(indices < 0, indices + size, indices), axis=axis))  # (a 0-d array, not a scalar)


def gather_backward(grad_out: Array, input_shape: Sequence[int], indices: Array, axis: int = 0) -> Array:
    """Gradient of :func:`gather`: each picked entry's gradient added back where it came from
    (an index picked twice gets the sum)."""
    gpu = is_gpu_array(grad_out)
    grad_out = to_host(grad_out) if gpu else np.asarray(grad_out)
    indices = np.asarray(indices)
    axis = _axis(axis, len(input_shape))
    size = input_shape[axis]
    indices = np.where(indices < 0, indices + size, indices)
    grad = np.zeros(tuple(input_shape), grad_out.dtype)
    moved = np.moveaxis(grad, axis, 0)
    picked = np.moveaxis(grad_out, list(range(axis, axis + indices.ndim)), list(range(indices.ndim)))
    np.add.at(moved, indices, picked)
    return to_device(grad) if gpu else grad


@symbolic("squeeze")
def squeeze(x: Array, axes: int | Sequence[int] | None = None) -> Array:
    """Drop axes of size 1 (all of them when ``axes`` is None); a ``ValueError`` for a named axis
    whose size is not 1."""
    x = _array("x", x)
    shape = tuple(x.shape)
    axes = tuple(i for i, s in enumerate(shape) if s == 1) if axes is None else _axes(axes, len(shape))
    for axis in axes:
        if shape[axis] != 1:
            raise ValueError(f"axis {axis} has size {shape[axis]}; squeeze drops axes of size 1")
    return x.reshape(tuple(s for i, s in enumerate(shape) if i not in axes))


@symbolic("unsqueeze")
def unsqueeze(x: Array, axes: int | Sequence[int]) -> Array:
    """Insert axes of size 1 at ``axes`` (positions in the output; negative count from its end)."""
    x = _array("x", x)
    if isinstance(axes, (int, np.integer)) and not isinstance(axes, bool):
        axes = (axes,)
    rank = len(x.shape) + len(axes)
    axes = _axes(axes, rank)
    dims = iter(x.shape)
    return x.reshape(tuple(1 if i in axes else next(dims) for i in range(rank)))


def expanded_shape(shape: Sequence[int], target: Sequence[int]) -> tuple[int, ...]:
    """The shape ONNX's ``Expand`` gives: ``shape`` and ``target`` broadcast both ways."""
    try:
        return tuple(int(s) for s in np.broadcast_shapes(tuple(shape), tuple(int(t) for t in target)))
    except ValueError:
        raise ValueError(f"shape {tuple(shape)} does not broadcast to {tuple(int(t) for t in target)}") from None


@symbolic("expand")
@on_host
def expand(x: Array, shape: Sequence[int]) -> Array:
    """Broadcast ``x`` to ``shape`` (ONNX ``Expand``: both shapes broadcast against each other,
    so a 1 in ``shape`` keeps ``x``'s size); a new array."""
    x = _array("x", x)
    return np.array(np.broadcast_to(x, expanded_shape(x.shape, np.asarray(shape).reshape(-1))))


def sum_to_shape(grad: Array, shape: Sequence[int]) -> Array:
    """Sum ``grad`` over the axes that broadcasting added or stretched from ``shape``: the
    gradient of any op that broadcasts an operand of ``shape``."""
    shape = tuple(int(s) for s in shape)
    if tuple(grad.shape) == shape:
        return grad
    gpu = is_gpu_array(grad)
    host = to_host(grad) if gpu else np.asarray(grad)
    extra = host.ndim - len(shape)
    host = host.sum(axis=tuple(range(extra))) if extra else host
    stretched = tuple(i for i, s in enumerate(shape) if s == 1 and host.shape[i] != 1)
    host = host.sum(axis=stretched, keepdims=True) if stretched else host
    host = np.ascontiguousarray(host.reshape(shape))
    return to_device(host) if gpu else host


@symbolic("cast")
def cast(x: Array, dtype: DTypeLike) -> Array:
    """``x`` converted to ``dtype`` (ONNX ``Cast``): floats to integers truncate toward zero, as
    NumPy and C do; the array itself when it has that dtype already."""
    x = _array("x", x)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a NumPy dtype, got {dtype!r}") from None
    if np.dtype(x.dtype) == dtype:
        return x
    if is_gpu_array(x):
        return to_device(to_host(x).astype(dtype))
    return x.astype(dtype)


@symbolic("where")
@on_host
def where(condition: Array, a: Array, b: Array) -> Array:
    """``a`` where ``condition`` is true, else ``b``, all three broadcast (ONNX ``Where``)."""
    condition = _array("condition", condition)
    if condition.dtype != np.bool_:
        raise TypeError(f"condition must be boolean, got dtype {condition.dtype}")
    return np.where(condition, _array("a", a), _array("b", b))


PAD_MODES = ("constant", "reflect", "edge", "wrap")
_PAD_ALIASES = {"replicate": "edge", "circular": "wrap"}


def _pad_pairs(pad, rank):
    """``pad`` (PyTorch's order: (before, after) pairs from the last axis backwards) as
    ``{axis: (before, after)}``."""
    if isinstance(pad, (str, bytes)) or not isinstance(pad, (Sequence, np.ndarray)):
        raise TypeError(f"pad must be a sequence of integers, got {pad!r}")
    pad = list(np.asarray(pad).reshape(-1)) if isinstance(pad, np.ndarray) else list(pad)
    if any(isinstance(p, bool) or not isinstance(p, (int, np.integer)) for p in pad):
        raise TypeError(f"pad must hold integers, got {pad!r}")
    if len(pad) % 2 or len(pad) // 2 > rank:
        raise ValueError(f"pad must hold an even number of values, two per axis for at most {rank} axes, got {pad}")
    return {rank - 1 - k: (int(pad[2 * k]), int(pad[2 * k + 1])) for k in range(len(pad) // 2)}


def _pad_mode(mode):
    mode = _PAD_ALIASES.get(mode, mode)
    if mode not in PAD_MODES:
        raise ValueError(f"mode must be one of {', '.join(PAD_MODES + tuple(_PAD_ALIASES))}, got {mode!r}")
    return mode


def _source_indices(size, before, after, mode):
    """For each output position along an axis, the input position it copies (-1: the fill value).
    Negative amounts crop first; the padding then repeats, mirrors or wraps what is left (as
    PyTorch does: ``pad([0 1 2 3], (-1, 1), 'circular')`` is ``[1 2 3 1]``)."""
    start = max(-before, 0)
    kept = size - start - max(-after, 0)
    before, after = max(before, 0), max(after, 0)
    positions = np.arange(-before, kept + after)
    if mode == "constant":
        return np.where((positions >= 0) & (positions < kept), positions + start, -1)
    if kept <= 0:
        raise ValueError(f"mode={mode!r} cannot pad an empty axis")
    if mode == "edge":
        return np.clip(positions, 0, kept - 1) + start
    if mode == "wrap":
        return positions % kept + start
    if max(before, after) >= kept:
        raise ValueError(f"mode='reflect' pads by less than the axis size ({kept}), got {before} and {after}")
    period = 2 * (kept - 1) if kept > 1 else 1
    folded = np.abs(positions) % period
    return np.where(folded < kept, folded, period - folded) + start


@symbolic("pad")
@on_host
def pad(x: Array, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Array:
    """Pad ``x`` (``torch.nn.functional.pad``; ONNX ``Pad``): ``pad`` holds (before, after) pairs
    for the last axes, last axis first; a negative amount crops.

    Parameters
    ----------
    x : array of any rank and dtype
    pad : sequence of int
        ``(left, right)`` pads the last axis, ``(left, right, top, bottom)`` the last two, ...
    mode : {'constant', 'reflect', 'edge', 'wrap'}
        Also PyTorch's names ``'replicate'`` (edge) and ``'circular'`` (wrap). ``'reflect'``
        mirrors without repeating the edge (``[1 2 3]`` → ``[3 2 | 1 2 3 | 2 1]``) and pads by
        less than the axis size.
    value : float
        The fill value of ``'constant'``.

    Returns
    -------
    array
        A new array.
    """
    x = _array("x", x)
    mode = _pad_mode(mode)
    out = x
    for axis, (before, after) in sorted(_pad_pairs(pad, x.ndim).items()):
        if -(before + after) > out.shape[axis] or min(before, after) < -out.shape[axis]:
            raise ValueError(f"pad crops axis {axis} of size {out.shape[axis]} by more than its size")
        index = _source_indices(out.shape[axis], before, after, mode)
        taken = np.take(out, np.maximum(index, 0), axis=axis) if out.shape[axis] else \
            np.zeros(out.shape[:axis] + (len(index),) + out.shape[axis + 1:], out.dtype)
        if mode == "constant" and (index < 0).any():
            shape = [1] * out.ndim
            shape[axis] = len(index)
            taken = np.where((index < 0).reshape(shape), np.asarray(value, dtype=out.dtype), taken)
        out = taken
    return np.array(out)


def pad_backward(grad_out: Array, input_shape: Sequence[int], pad: Sequence[int], mode: str = "constant") -> Array:
    """Gradient of :func:`pad`: each output entry's gradient added to the input entry it copies."""
    gpu = is_gpu_array(grad_out)
    grad = to_host(grad_out) if gpu else np.asarray(grad_out)
    mode = _pad_mode(mode)
    pairs = _pad_pairs(pad, len(input_shape))
    sizes = list(input_shape)
    for axis, (before, after) in sorted(pairs.items(), reverse=True):
        index = _source_indices(sizes[axis], before, after, mode)
        moved = np.moveaxis(grad, axis, 0)
        summed = np.zeros((sizes[axis],) + moved.shape[1:], grad.dtype)
        keep = index >= 0
        np.add.at(summed, index[keep], moved[keep])
        grad = np.moveaxis(summed, 0, axis)
    grad = np.ascontiguousarray(grad)
    return to_device(grad) if gpu else grad
