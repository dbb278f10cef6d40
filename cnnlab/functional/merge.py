"""Merging tensors: broadcasting add and multiply, concatenation, and backward."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from ..device import kernels_for, to_device
from ..kernels import cpu as cpu_kernels
from ..shapes import check_int
from ..types import Any, Array, Sequence
from .common import FLOAT_DTYPES, KeptAnswers, as_float_array, check_grad


def index_array(kernels: Any, values: Sequence[int]) -> Array:
    """Integer geometry as an int64 array on the kernels' device."""
    values = np.asarray(values, dtype=np.int64)
    if kernels.DEVICE == "cuda":
        return to_device(values)
    return values


def checked_pair(a: Array, b: Array, grad_out: Array | None, kept: KeptAnswers,
                 geometry: Callable[[tuple, tuple, Any], Any]) -> tuple[Array, Array, Any, Any]:
    """The operands of a binary op checked (float arrays of one dtype, on one device, with
    ``grad_out`` when given): ``(a, b, kernels, answer)``, ``answer`` being ``geometry(a's
    shape, b's shape, kernels)``, kept in ``kept`` per pair of shapes for host operands (a model
    calls the same additions again and again; the kernels only read the answer)."""
    a = as_float_array("a", a)
    b = as_float_array("b", b, dtype=a.dtype)
    kernels = kernels_for(a=a, b=b, grad_out=grad_out)
    on_host = kernels.DEVICE != "cuda"
    answer = kept.get((a.shape, b.shape)) if on_host else None
    if answer is None:
        answer = geometry(tuple(a.shape), tuple(b.shape), kernels)
        if on_host:
            kept.keep((a.shape, b.shape), answer)
    return a, b, kernels, answer


_HOST_GEOMETRIES = KeptAnswers(512)  # (a's shape, b's shape) -> (swapped, dims, b_dims) with host index arrays


def _merge_geometry(a_shape, b_shape):
    """``(swapped, dims, b_dims)`` of :func:`_broadcast_operands` for these shapes (lists)."""
    def broadcasts(small, full):
        padded = (1,) * (len(full) - len(small)) + small
        return len(small) <= len(full) and all(m in (1, n) for m, n in zip(padded, full))

    swapped = not broadcasts(b_shape, a_shape)
    if swapped and not broadcasts(a_shape, b_shape):
        raise ValueError(
            f"a with shape {a_shape} and b with shape {b_shape} do not broadcast: one operand's "
            "axes must equal the other's or be 1 (NumPy's rule, the result having one operand's shape)"
        )
    full, small = (b_shape, a_shape) if swapped else (a_shape, b_shape)
    padded = (1,) * (len(full) - len(small)) + small
    dims, b_dims = [], []
    for n, m in zip(full, padded):
        if n == 1:
            continue
        if dims and (b_dims[-1] == 1) == (m == 1):
            dims[-1] *= n
            b_dims[-1] *= m
        else:
            dims.append(n)
            b_dims.append(m)
    return swapped, dims or [1], b_dims or [1]


def _merged_index_geometry(a_shape, b_shape, kernels):
    """:func:`_merge_geometry` with the kernels' index arrays: ``(swapped, dims, b_dims)``."""
    swapped, dims, b_dims = _merge_geometry(a_shape, b_shape)
    return swapped, index_array(kernels, dims), index_array(kernels, b_dims)


def _broadcast_operands(a, b, grad_out=None):
    """Check the operands of :func:`add` / :func:`multiply`.

    Returns ``(full, small, swapped, kernels, geometry)``: ``full`` has the result's shape and
    ``small`` broadcasts against it (``swapped`` when that is ``a``); ``geometry`` is the
    kernels' ``(dims, b_dims)``, adjacent axes of the same kind merged (for host operands kept
    per pair of shapes: a model calls the same additions again and again; the kernels only
    read them).
    """
    a, b, kernels, entry = checked_pair(a, b, grad_out, _HOST_GEOMETRIES, _merged_index_geometry)
    swapped = entry[0]
    full, small = (b, a) if swapped else (a, b)
    return full, small, swapped, kernels, entry[1:]


def host_float_pair(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are C-contiguous host NumPy arrays of one float dtype: what the
    bound forms of the binary ops take (:func:`bound_binary`,
    :func:`cnnlab.functional.elementwise.bound_binary_kernel`)."""
    return type(a) is np.ndarray and type(b) is np.ndarray and a.dtype == b.dtype and a.dtype in FLOAT_DTYPES \
        and a.flags.c_contiguous and b.flags.c_contiguous


def bound_binary(op: str, a: Array, b: Array) -> Callable | None:
    """For a caller that repeats :func:`add` (``op="add"``) or :func:`multiply` (``"multiply"``)
    on host arrays of these shapes and dtype: a function ``run(a, b, out)`` that writes the
    result into ``out`` (an array of the result's shape and dtype, C-contiguous) and returns
    it, with the checks made now, not at each call (a prepared inference plan:
    :mod:`cnnlab.prepared`). The same kernel call as ``op``'s, so the same values. None for
    anything but C-contiguous host arrays of one float dtype whose shapes broadcast."""
    if op not in ("add", "multiply") or not host_float_pair(a, b):
        return None
    try:
        _, _, swapped, kernels, geometry = _broadcast_operands(a, b)
    except (TypeError, ValueError):
        return None
    if kernels.DEVICE == "cuda":
        return None
    name = op + "_forward"

    def run(a, b, out):
        full, small = (b, a) if swapped else (a, b)
        getattr(kernels, name)(full.reshape(-1), small.reshape(-1), out.reshape(-1), *geometry)
        return out
    return run


def add(a: Array, b: Array) -> Array:
    """Element-wise sum ``a + b``, one operand broadcast NumPy-style against the other.

    Parameters
    ----------
    a, b : arrays, float32 or float64, of one dtype and on one device
        Either shapes are equal, or one operand's axes are each 1 or equal to the other's
        (missing leading axes count as 1), e.g. (N, C, H, W) and (N, C, 1, 1).

    Returns
    -------
    array with the shape of the larger operand, on the inputs' device

    Shape
    -----
    ``numpy.broadcast_shapes(a.shape, b.shape)``, which must be one of the two shapes.

    See Also
    --------
    cnnlab.kernels.cpu.merge.add_forward, cnnlab.kernels.cuda.merge.add_forward : the CPU/GPU twins.
    torch.add, numpy.add

    Examples
    --------
    >>> import numpy as np, cnnlab.functional as F
    >>> F.add(np.ones((2, 3)), np.array([0.0, 1.0, 2.0]))
    array([[1., 2., 3.],
           [1., 2., 3.]])
    """
    full, small, _, kernels, geometry = _broadcast_operands(a, b)
    out = kernels.empty(full.shape, full.dtype)
    kernels.add_forward(kernels.asarray(full).reshape(-1), kernels.asarray(small).reshape(-1),
                        out.reshape(-1), *geometry)
    return out


def add_backward(a: Array, b: Array, grad_out: Array) -> tuple[Array, Array]:
    """Gradients of :func:`add`: ``(grad_a, grad_b)``, each ``grad_out`` summed over the axes
    its operand was broadcast along (only the shapes of ``a`` and ``b`` are used)."""
    full, small, swapped, kernels, geometry = _broadcast_operands(a, b, grad_out)
    grad_out = check_grad("grad_out", grad_out, full.shape, full.dtype)
    grad_full = kernels.empty(full.shape, full.dtype)
    grad_small = kernels.empty(small.shape, full.dtype)
    kernels.add_backward(kernels.asarray(grad_out).reshape(-1), grad_full.reshape(-1),
                         grad_small.reshape(-1), *geometry)
    return (grad_small, grad_full) if swapped else (grad_full, grad_small)


def multiply(a: Array, b: Array) -> Array:
    """Element-wise product ``a * b``, one operand broadcast NumPy-style against the other: a
    squeeze-excitation gate (N, C, 1, 1) times feature maps (N, C, H, W).

    Parameters
    ----------
    a, b : arrays, float32 or float64, of one dtype and on one device
        Shapes as for :func:`add`.

    Returns
    -------
    array with the shape of the larger operand, on the inputs' device

    Shape
    -----
    ``numpy.broadcast_shapes(a.shape, b.shape)``, which must be one of the two shapes.

    See Also
    --------
    cnnlab.kernels.cpu.merge.multiply_forward, cnnlab.kernels.cuda.merge.multiply_forward :
        the CPU/GPU twins.
    torch.mul, numpy.multiply
    """
    full, small, _, kernels, geometry = _broadcast_operands(a, b)
    out = kernels.empty(full.shape, full.dtype)
    kernels.multiply_forward(kernels.asarray(full).reshape(-1), kernels.asarray(small).reshape(-1),
                             out.reshape(-1), *geometry)
    return out


def multiply_backward(a: Array, b: Array, grad_out: Array) -> tuple[Array, Array]:
    """Gradients of :func:`multiply`: ``grad_a = grad_out * b`` and ``grad_b = grad_out * a``,
    each summed over the axes its operand was broadcast along."""
    full, small, swapped, kernels, geometry = _broadcast_operands(a, b, grad_out)
    grad_out = check_grad("grad_out", grad_out, full.shape, full.dtype)
    grad_full = kernels.empty(full.shape, full.dtype)
    grad_small = kernels.empty(small.shape, full.dtype)
    kernels.multiply_backward(kernels.asarray(full).reshape(-1), kernels.asarray(small).reshape(-1),
                              kernels.asarray(grad_out).reshape(-1), grad_full.reshape(-1),
                              grad_small.reshape(-1), *geometry)
    return (grad_small, grad_full) if swapped else (grad_full, grad_small)


def _concatenation_axis(axis, shape):
    ndim = len(shape)
    axis = check_int("axis", axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for arrays of shape {tuple(shape)}")
    return axis % ndim


def _three_axes(shape, axis):
    """``(outer, K, inner)``: ``shape`` seen around ``axis`` (no data moves)."""
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])


def concatenate(arrays: Sequence[Array], axis: int = 1) -> Array:
    """Join arrays along ``axis`` (the channel axis by default, as DenseNet and Inception do).

    Parameters
    ----------
    arrays : list or tuple of arrays, float32 or float64, of one dtype and on one device
        Equal shapes except along ``axis``.
    axis : int, default 1
        Negative values count from the end.

    Returns
    -------
    array on the inputs' device

    Shape
    -----
    The shape of ``arrays[0]`` with ``shape[axis] = sum(a.shape[axis] for a in arrays)``.

    See Also
    --------
    concatenate_backward
    cnnlab.kernels.cpu.merge.concatenate_forward, cnnlab.kernels.cuda.merge.concatenate_forward :
        the CPU/GPU twins.
    torch.cat, numpy.concatenate
    """
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"arrays must be a list or tuple of arrays, got {type(arrays).__name__}")
    if not arrays:
        raise ValueError("arrays is empty: concatenate needs at least one array")
    first = as_float_array("arrays[0]", arrays[0])
    arrays = [first] + [as_float_array(f"arrays[{i}]", a, ndim=len(first.shape), dtype=first.dtype)
                        for i, a in enumerate(arrays[1:], 1)]
    kernels = kernels_for(**{f"arrays[{i}]": a for i, a in enumerate(arrays)})
    axis = _concatenation_axis(axis, first.shape)
    for i, a in enumerate(arrays[1:], 1):
        if any(m != n for k, (m, n) in enumerate(zip(a.shape, first.shape)) if k != axis):
            raise ValueError(f"arrays[{i}] has shape {tuple(a.shape)} but arrays[0] has shape "
                             f"{tuple(first.shape)}: they may differ along axis={axis} only")
    shape = list(first.shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    out = kernels.empty(tuple(shape), first.dtype)
    out_view = out.reshape(_three_axes(shape, axis))
    offset = 0
    for a in arrays:
        kernels.concatenate_forward(kernels.asarray(a).reshape(_three_axes(a.shape, axis)), out_view, offset)
        offset += a.shape[axis]
    return out


def bound_concatenate(arrays: Sequence[Array], axis: int) -> Callable | None:
    """For a caller that repeats :func:`concatenate` along ``axis`` on host arrays of these
    shapes and dtype: ``run(arrays, out)`` writing the result into ``out`` (C-ordered, of the
    result's shape) and returning it, with the checks made now (a prepared inference plan:
    :mod:`cnnlab.prepared`). The same kernel calls, so the same values. None for anything but
    C-ordered host float arrays of one dtype that join along ``axis``."""
    if not isinstance(arrays, (list, tuple)) or len(arrays) < 2 \
            or any(type(a) is not np.ndarray or not a.flags.c_contiguous for a in arrays) \
            or arrays[0].dtype not in (np.float32, np.float64) or any(a.dtype != arrays[0].dtype for a in arrays):
        return None
    try:
        axis = _concatenation_axis(axis, arrays[0].shape)
    except (TypeError, ValueError):
        return None
    first = arrays[0].shape
    if any(len(a.shape) != len(first) or any(m != n for k, (m, n) in enumerate(zip(a.shape, first)) if k != axis)
           for a in arrays):
        return None
    shape = list(first)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    views = [_three_axes(a.shape, axis) for a in arrays]
    out_view = _three_axes(shape, axis)
    offsets = np.cumsum([0] + [a.shape[axis] for a in arrays])[:-1].tolist()

    def run(arrays, out):
        into = out.reshape(out_view)
        for a, view, offset in zip(arrays, views, offsets):
            cpu_kernels.concatenate_forward(a.reshape(view), into, offset)
        return out
    return run


def concatenate_backward(grad_out: Array, sizes: Sequence[int], axis: int = 1) -> Array:
    """Gradient of :func:`concatenate`: ``grad_out`` split along ``axis`` into pieces of
    ``sizes`` (the inputs' extents along ``axis``); returns a list of arrays."""
    grad_out = as_float_array("grad_out", grad_out)
    kernels = kernels_for(grad_out=grad_out)
    axis = _concatenation_axis(axis, grad_out.shape)
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise TypeError(f"sizes must be a non-empty list of extents along axis={axis}, got {sizes!r}")
    sizes = [check_int("sizes", s, 1) for s in sizes]
    if sum(sizes) != grad_out.shape[axis]:
        raise ValueError(f"sizes {sizes} must add up to grad_out's extent {grad_out.shape[axis]} "
                         f"along axis={axis} (grad_out shape {tuple(grad_out.shape)})")
    source = kernels.asarray(grad_out).reshape(_three_axes(grad_out.shape, axis))
    grads = []
    offset = 0
    for size in sizes:
        shape = list(grad_out.shape)
        shape[axis] = size
        grad = kernels.empty(tuple(shape), grad_out.dtype)
        kernels.concatenate_backward(source, grad.reshape(_three_axes(shape, axis)), offset)
        grads.append(grad)
        offset += size
    return grads
