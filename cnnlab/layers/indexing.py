"""Layers on whole tensors of any rank and dtype: what networks do with shapes, indices and the
axes of attention tensors. :class:`Shape` reads a tensor's shape as an int64 vector while the
model runs, and :class:`Cast`, :class:`Slice`, :class:`Gather`, :class:`Squeeze`,
:class:`Unsqueeze`, :class:`Concat`, :class:`Expand`, :class:`DynamicReshape`,
:class:`ConstantOfShape`, :class:`Range`, :class:`Tile`, :class:`Pad` and :class:`Where` take such vectors as well as
feature maps. Their axes count the batch axis (as ONNX's and PyTorch's do); each infers what it
can of its output's shape, and of the value of a small integer tensor, before the model runs.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..device import is_gpu_array, to_device, to_host
from ..dispatch import register_builder
from ..functional.indexing import expanded_shape, slice_geometry
from ..symbolic import TensorSpec
from ..types import Any, Array, DTypeLike, Sequence
from .base import WholeTensorLayer, known_value, operand_node, prepared_reshape, reshape_array, watched_attributes


def broadcast_dims(*shapes):
    """NumPy's broadcast of whole shapes whose sizes may be None (unknown); None if a rank is unknown."""
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)
    out = []
    for i in range(rank):
        dims = [s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0]
        sizes = {d for d in dims if d is not None and d != 1}
        if len(sizes) > 1:
            raise ValueError(f"shapes {' and '.join(str(tuple(s)) for s in shapes)} do not broadcast")
        if sizes:
            out.append(sizes.pop())
        else:
            out.append(None if None in dims else 1)
    return tuple(out)


def evaluate(function, *values):
    """``function`` on partly known values (object arrays); None when any is unknown or the
    function cannot run on them (arithmetic on an unknown entry)."""
    if any(v is None for v in values):
        return None
    try:
        return np.asarray(function(*values), dtype=object)
    except (TypeError, ValueError, IndexError):
        return None


def _ints(name, values):
    values = [values] if isinstance(values, (int, np.integer)) else list(np.asarray(values).reshape(-1))
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in values):
        raise TypeError(f"{name} must hold integers, got {values!r}")
    return [int(v) for v in values]


class Shape(WholeTensorLayer):
    """The input's shape (axes ``start`` to ``end``) as an int64 vector (ONNX ``Shape``)."""

    reads_only_shapes = True

    def __init__(self, start: int = 0, end: int | None = None) -> None:
        super().__init__()
        self.start, self.end = int(start), None if end is None else int(end)

    def forward(self, x: Array, training: bool = False) -> Array:
        return np.array(tuple(x.shape)[self.start:self.end], dtype=np.int64)

    def output_spec(self, x: Any) -> TensorSpec:
        if x.shape is None:
            return TensorSpec(None, np.dtype(np.int64))
        dims = x.shape[self.start:self.end]
        return TensorSpec((len(dims),), np.dtype(np.int64), np.array(list(dims), dtype=object))

    def config(self) -> dict:
        return dict(start=self.start, end=self.end)


class Cast(WholeTensorLayer):
    """The input converted to ``dtype`` (ONNX ``Cast``); float to float passes gradients."""

    def __init__(self, dtype: DTypeLike) -> None:
        super().__init__()
        self.target = np.dtype(dtype)

    def forward(self, x: Array, training: bool = False) -> Array:
        if training:
            self.saved = np.dtype(x.dtype)
        return F.cast(x, self.target)

    def backward(self, grad_out: Array) -> Array:
        source = self._need_saved()
        return F.cast(grad_out, source) if source.kind == "f" else None

    def output_spec(self, x: Any) -> TensorSpec:
        value = known_value(x)
        if value is not None and self.target.kind in "iub":
            value = evaluate(lambda v: [None if e is None else self.target.type(e) for e in v.reshape(-1)], value)
            value = None if value is None else value.reshape(x.shape)
        return TensorSpec(x.shape, self.target, value)

    def config(self) -> dict:
        return dict(dtype=self.target.name)


class Slice(WholeTensorLayer):
    """``x[starts:ends:steps]`` along ``axes`` (:func:`cnnlab.functional.slice`, ONNX ``Slice``)."""

    def __init__(self, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None = None,
                 steps: Sequence[int] | None = None) -> None:
        super().__init__()
        self.starts, self.ends = _ints("starts", starts), _ints("ends", ends)
        self.axes = None if axes is None else _ints("axes", axes)
        self.steps = None if steps is None else _ints("steps", steps)
        count = len(self.starts)
        if any(v is not None and len(v) != count for v in (self.ends, self.axes, self.steps)):
            raise ValueError("starts, ends, axes and steps must have one entry per sliced axis")
        if self.steps is not None and 0 in self.steps:
            raise ValueError("steps must not be 0")

    def _geometry(self, shape):
        return slice_geometry(shape, self.starts, self.ends, self.axes, self.steps)

    def forward(self, x: Array, training: bool = False) -> Array:
        if training:
            self.saved = tuple(x.shape)
        return F.slice(x, self.starts, self.ends, self.axes, self.steps)

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the slice's copy, its geometry worked out once (the
        layer's attributes watched)."""
        if self.constant_positions:
            return None
        run = F.indexing.bound_slice(x, out, self.starts, self.ends, self.axes, self.steps)
        return None if run is None else (run, watched_attributes(self), ())

    def backward(self, grad_out: Array) -> Array:
        return F.slice_backward(grad_out, self._need_saved(), self.starts, self.ends, self.axes, self.steps)

    def output_spec(self, x: Any) -> TensorSpec:
        if x.shape is None:
            return TensorSpec(None, x.dtype)
        index = self._geometry(tuple(1 if s is None else s for s in x.shape))
        # an axis of unknown size keeps an unknown size (how much a slice takes depends on it)
        shape = [None if size is None else len(range(size)[part]) for size, part in zip(x.shape, index)]
        value = evaluate(lambda v: v[self._geometry(v.shape)], known_value(x))
        return TensorSpec(tuple(shape), x.dtype, value)

    def config(self) -> dict:
        return dict(starts=self.starts, ends=self.ends, axes=self.axes, steps=self.steps)


class Gather(WholeTensorLayer):
    """Entries of the data along ``axis`` picked by integer indices (ONNX ``Gather``,
    ``numpy.take``); either operand may be a constant (``constants={1: indices}``)."""

    takes_list = True

    def __init__(self, axis: int = 0, constants: dict | None = None) -> None:
        super().__init__(constants)
        self.axis = int(axis)

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        data, indices = self.operands(inputs)
        if training:
            self.saved = (tuple(data.shape), indices)
        return F.gather(data, indices, self.axis)

    def backward(self, grad_out: Array) -> list[Array | None]:
        shape, indices = self._need_saved()
        return self.input_gradients([F.gather_backward(grad_out, shape, indices, self.axis), None])

    def output_spec(self, specs: Any) -> TensorSpec:
        data, indices = self.operand_specs(specs)
        if data.shape is None or indices.shape is None:
            return TensorSpec(None, data.dtype)
        axis = self.axis % len(data.shape)
        shape = data.shape[:axis] + indices.shape + data.shape[axis + 1:]
        value = evaluate(lambda d, i: np.take(d, i.astype(np.int64), axis=axis), known_value(data), known_value(indices))
        return TensorSpec(shape, data.dtype, value)

    def config(self) -> dict:
        return dict(axis=self.axis, constants=self.constants_config())


class Squeeze(WholeTensorLayer):
    """Drop axes of size 1 (:func:`cnnlab.functional.squeeze`)."""

    returns_new_array = False

    def __init__(self, axes: Sequence[int] | None = None) -> None:
        super().__init__()
        self.axes = None if axes is None else _ints("axes", axes)

    def forward(self, x: Array, training: bool = False) -> Array:
        if training:
            self.saved = tuple(x.shape)
        return F.squeeze(x, self.axes)

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the reshape (:func:`prepared_reshape`)."""
        return prepared_reshape(self, x)

    def backward(self, grad_out: Array) -> Array:
        return reshape_array(grad_out, self._need_saved())

    def output_spec(self, x: Any) -> TensorSpec:
        if x.shape is None:
            return TensorSpec(None, x.dtype)
        rank = len(x.shape)
        if self.axes is None:
            if None in x.shape:
                raise ValueError("Squeeze without axes needs every size known")
            axes = [i for i, s in enumerate(x.shape) if s == 1]
        else:
            axes = [a % rank for a in self.axes]
        for axis in axes:
            if x.shape[axis] not in (1, None):
                raise ValueError(f"axis {axis} has size {x.shape[axis]}; Squeeze drops axes of size 1")
        value = known_value(x)
        shape = tuple(s for i, s in enumerate(x.shape) if i not in axes)
        return TensorSpec(shape, x.dtype, None if value is None else value.reshape(shape))

    def config(self) -> dict:
        return dict(axes=self.axes)


class Unsqueeze(WholeTensorLayer):
    """Insert axes of size 1 (:func:`cnnlab.functional.unsqueeze`)."""

    returns_new_array = False

    def __init__(self, axes: Sequence[int]) -> None:
        super().__init__()
        self.axes = _ints("axes", axes)

    def forward(self, x: Array, training: bool = False) -> Array:
        if training:
            self.saved = tuple(x.shape)
        return F.unsqueeze(x, self.axes)

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the reshape (:func:`prepared_reshape`)."""
        return prepared_reshape(self, x)

    def backward(self, grad_out: Array) -> Array:
        return reshape_array(grad_out, self._need_saved())

    def output_spec(self, x: Any) -> TensorSpec:
        if x.shape is None:
            return TensorSpec(None, x.dtype)
        rank = len(x.shape) + len(self.axes)
        axes = {a % rank for a in self.axes}
        dims = iter(x.shape)
        shape = tuple(1 if i in axes else next(dims) for i in range(rank))
        value = known_value(x)
        return TensorSpec(shape, x.dtype, None if value is None else value.reshape(shape))

    def config(self) -> dict:
        return dict(axes=self.axes)


class Concat(WholeTensorLayer):
    """Join tensors of any rank and dtype along ``axis`` (ONNX ``Concat``, ``numpy.concatenate``),
    constants among them; :class:`Concatenate` is the kernel for float feature maps."""

    takes_list = True

    def __init__(self, axis: int, constants: dict | None = None) -> None:
        super().__init__(constants)
        self.axis = int(axis)

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        arrays = self.operands(inputs)
        if training:
            self.saved = [int(a.shape[self.axis]) for a in arrays]
        if any(np.dtype(a.dtype) != np.dtype(arrays[0].dtype) for a in arrays):
            raise ValueError(f"Concat joins tensors of one dtype, got {[np.dtype(a.dtype).name for a in arrays]}")
        return F.indexing.on_host(lambda *a: np.concatenate(a, axis=self.axis))(*arrays)

    def backward(self, grad_out: Array) -> list[Array | None]:
        sizes = self._need_saved()
        bounds = np.cumsum([0] + sizes)
        grads = [F.slice(grad_out, [int(lo)], [int(hi)], [self.axis]) for lo, hi in zip(bounds[:-1], bounds[1:])]
        return self.input_gradients(grads)

    def output_spec(self, specs: Any) -> TensorSpec:
        specs = self.operand_specs(specs)
        if any(s.shape is None for s in specs):
            return TensorSpec(None, specs[0].dtype)
        rank = len(specs[0].shape)
        if any(len(s.shape) != rank for s in specs):
            raise ValueError(f"Concat joins tensors of one rank, got shapes {[s.shape for s in specs]}")
        axis = self.axis % rank
        shape = []
        for i in range(rank):
            dims = [s.shape[i] for s in specs]
            if i == axis:
                shape.append(None if None in dims else sum(dims))
            else:
                known = {d for d in dims if d is not None}
                if len(known) > 1:
                    raise ValueError(f"Concat: axis {i} differs between the inputs ({dims})")
                shape.append(known.pop() if known else None)
        value = evaluate(lambda *v: np.concatenate(v, axis=axis), *[known_value(s) for s in specs])
        return TensorSpec(tuple(shape), specs[0].dtype, value)

    def config(self) -> dict:
        return dict(axis=self.axis, constants=self.constants_config())


def _target_shape(value):
    """A shape operand's value as a list of ints or None (unknown entries)."""
    return [None if v is None else int(v) for v in np.asarray(value, dtype=object).reshape(-1)]


class Expand(WholeTensorLayer):
    """Broadcast the input to a shape, an operand (ONNX ``Expand``: both shapes broadcast)."""

    takes_list = True

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        x, shape = self.operands(inputs)
        if training:
            self.saved = tuple(x.shape)
        return F.expand(x, to_host(shape))

    def backward(self, grad_out: Array) -> list[Array | None]:
        return self.input_gradients([F.sum_to_shape(grad_out, self._need_saved()), None])

    def output_spec(self, specs: Any) -> TensorSpec:
        x, shape = self.operand_specs(specs)
        target = None if shape.value is None else _target_shape(shape.value)
        if target is None and shape.shape is not None and shape.shape[0] is not None:
            target = [None] * shape.shape[0]
        if target is None or x.shape is None:
            return TensorSpec(None, x.dtype)
        out = broadcast_dims(x.shape, tuple(None if t is None else t for t in target))
        if None not in target and None not in x.shape:
            out = expanded_shape(x.shape, target)
        return TensorSpec(out, x.dtype)

    def config(self) -> dict:
        return dict(constants=self.constants_config())


def resolve_reshape(in_shape, target, allowzero=False):
    """The shape ONNX's ``Reshape`` makes of ``in_shape`` for ``target`` (0 copies the input's
    size at that position unless ``allowzero``, -1 takes the rest); sizes may be None."""
    out = [in_shape[i] if t == 0 and not allowzero and i < len(in_shape) else t for i, t in enumerate(target)]
    if out.count(-1) > 1:
        raise ValueError(f"shape {target} has two -1 entries")
    if -1 in out:
        out[out.index(-1)] = _remaining_size(in_shape, out)
    if None not in out and None not in in_shape and np.prod(out, dtype=np.int64) != np.prod(in_shape, dtype=np.int64):
        raise ValueError(f"cannot reshape {tuple(in_shape)} into {tuple(target)}")
    return tuple(out)


def _remaining_size(in_shape, out):
    """The size a -1 in ``out`` takes, or None when unknown. An unknown output size at a position
    where the input's size is unknown too is taken to be that size (``[N, -1]`` of an ``(N, C, 1,
    1)`` batch, N read from the input's shape: the pattern exporters write for a flatten); the
    model checks the real sizes when it runs."""
    ins = [s for i, s in enumerate(in_shape) if not (s is None and i < len(out) and out[i] is None)]
    outs = [s for i, s in enumerate(out) if s != -1 and not (s is None and i < len(in_shape) and in_shape[i] is None)]
    if None in ins or None in outs:
        return None
    total, known = int(np.prod(ins, dtype=np.int64)), int(np.prod(outs, dtype=np.int64))
    if known == 0 or total % known:
        raise ValueError(f"cannot reshape {tuple(in_shape)} into {tuple(out)}")
    return total // known


class DynamicReshape(WholeTensorLayer):
    """Reshape the whole input (batch axis included) to a shape that is an operand: a constant or
    a tensor computed while the model runs (ONNX ``Reshape``: 0 copies the input's size at that
    position unless ``allowzero``, -1 takes the rest)."""

    takes_list = True
    returns_new_array = False

    def __init__(self, allowzero: bool = False, constants: dict | None = None) -> None:
        super().__init__(constants)
        self.allowzero = bool(allowzero)

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        x, shape = self.operands(inputs)
        target = [int(s) for s in to_host(shape).reshape(-1)]
        if training:
            self.saved = tuple(x.shape)
        return reshape_array(x, resolve_reshape(tuple(x.shape), target, self.allowzero))

    def prepared_forward(self, inputs, out):
        """:meth:`Layer.prepared_forward`: the reshape (:func:`prepared_reshape`), where the
        shape operand is a constant: the layer's, or a value the plan computes once (passed
        read-only: the same at every call). None for a shape computed at each call."""
        if self.constant_positions != [1] and (self.constant_positions or type(inputs[1]) is not np.ndarray
                                               or inputs[1].flags.writeable):
            return None
        return prepared_reshape(self, inputs)

    def backward(self, grad_out: Array) -> list[Array | None]:
        return self.input_gradients([reshape_array(grad_out, self._need_saved()), None])

    def output_spec(self, specs: Any) -> TensorSpec:
        x, shape = self.operand_specs(specs)
        if shape.shape is None or len(shape.shape) != 1:
            raise ValueError(f"the shape operand must be a vector, got shape {shape.shape}")
        if shape.value is None:
            return TensorSpec(None if shape.shape[0] is None else (None,) * shape.shape[0], x.dtype)
        target = _target_shape(shape.value)
        in_shape = x.shape if x.shape is not None else (None,) * len(target)
        out = resolve_reshape(in_shape, target, self.allowzero)
        value = known_value(x)
        if value is not None and None not in out:
            value = evaluate(lambda v: v.reshape(out), value)
        return TensorSpec(tuple(out), x.dtype, value if None not in out else None)

    def config(self) -> dict:
        return dict(allowzero=self.allowzero, constants=self.constants_config())


class ConstantOfShape(WholeTensorLayer):
    """A tensor of the shape given by its input, every entry ``value`` (ONNX ``ConstantOfShape``)."""

    def __init__(self, value: float | int = 0.0, dtype: DTypeLike = "float32") -> None:
        super().__init__()
        self.value, self.fill_dtype = value, np.dtype(dtype)

    def forward(self, shape: Array, training: bool = False) -> Array:
        return np.full(tuple(int(s) for s in np.asarray(shape).reshape(-1)), self.value, self.fill_dtype)

    def output_spec(self, shape: Any) -> TensorSpec:
        if shape.value is not None:
            return TensorSpec(tuple(_target_shape(shape.value)), self.fill_dtype)
        return TensorSpec(None if shape.shape is None or shape.shape[0] is None else (None,) * shape.shape[0],
                          self.fill_dtype)

    def config(self) -> dict:
        value = self.value.item() if isinstance(self.value, np.generic) else self.value
        return dict(value=value, dtype=self.fill_dtype.name)


class Range(WholeTensorLayer):
    """``start, start + delta, ...`` up to ``limit`` (excluded), three scalar operands (ONNX ``Range``)."""

    takes_list = True

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        start, limit, delta = (np.asarray(v) for v in self.operands(inputs))
        return np.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)

    def output_spec(self, specs: Any) -> TensorSpec:
        start, limit, delta = self.operand_specs(specs)
        values = [known_value(s) for s in (start, limit, delta)]
        if any(v is not None and None in v.reshape(-1) for v in values):
            values = [None]
        value = evaluate(lambda a, b, c: np.arange(a.item(), b.item(), c.item()), *values)
        return TensorSpec((None,) if value is None else value.shape, start.dtype, value)

    def config(self) -> dict:
        return dict(constants=self.constants_config())


class Where(WholeTensorLayer):
    """``a`` where the condition holds, else ``b`` (ONNX ``Where``; all three broadcast)."""

    takes_list = True

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        condition, a, b = self.operands(inputs)
        if training:
            self.saved = (condition, tuple(a.shape), tuple(b.shape))
        return F.where(condition, a, b)

    def backward(self, grad_out: Array) -> list[Array | None]:
        condition, a_shape, b_shape = self._need_saved()
        grad, mask = to_host(grad_out), to_host(condition)
        grads = [F.sum_to_shape(np.where(mask, grad, 0).astype(grad.dtype), a_shape),
                 F.sum_to_shape(np.where(mask, 0, grad).astype(grad.dtype), b_shape)]
        if is_gpu_array(grad_out):
            grads = [to_device(g) for g in grads]
        return self.input_gradients([None] + grads)

    def output_spec(self, specs: Any) -> TensorSpec:
        condition, a, b = self.operand_specs(specs)
        value = evaluate(lambda c, x, y: np.where(c.astype(bool), x, y), known_value(condition), known_value(a),
                         known_value(b))
        return TensorSpec(broadcast_dims(condition.shape, a.shape, b.shape), np.result_type(a.dtype, b.dtype), value)

    def config(self) -> dict:
        return dict(constants=self.constants_config())


class Tile(WholeTensorLayer):
    """The input repeated ``repeats[i]`` times along each axis ``i`` (ONNX ``Tile``,
    ``numpy.tile``); ``repeats`` is an operand (a constant or a computed int64 vector)."""

    takes_list = True

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        x, repeats = self.operands(inputs)
        repeats = [int(r) for r in to_host(repeats).reshape(-1)]
        if len(repeats) != len(x.shape) or min(repeats, default=0) < 0:
            raise ValueError(f"repeats must hold one non-negative count per axis of the input {tuple(x.shape)}, "
                             f"got {repeats}")
        if training:
            self.saved = (tuple(x.shape), repeats)
        return F.indexing.on_host(lambda a: np.tile(a, repeats))(x)

    def backward(self, grad_out: Array) -> list[Array | None]:
        shape, repeats = self._need_saved()
        grad = to_host(grad_out)
        split = [n for pair in zip(repeats, shape) for n in pair]
        summed = np.ascontiguousarray(grad.reshape(split).sum(axis=tuple(range(0, 2 * len(shape), 2))))
        return self.input_gradients([to_device(summed) if is_gpu_array(grad_out) else summed, None])

    def output_spec(self, specs: Any) -> TensorSpec:
        x, repeats = self.operand_specs(specs)
        if x.shape is None:
            return TensorSpec(None, x.dtype)
        counts = [None] * len(x.shape) if repeats.value is None else _target_shape(repeats.value)
        return TensorSpec(tuple(None if s is None or r is None else s * r for s, r in zip(x.shape, counts)), x.dtype)

    def config(self) -> dict:
        return dict(constants=self.constants_config())


class Pad(WholeTensorLayer):
    """Pad the last axes (:func:`cnnlab.functional.pad`, PyTorch's ``F.pad`` order: the last axis
    first; a negative amount crops): ``'constant'`` with ``value``, ``'reflect'``, ``'edge'``
    or ``'wrap'``."""

    def __init__(self, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> None:
        super().__init__()
        self.pad = _ints("pad", pad)
        if len(self.pad) % 2:
            raise ValueError(f"pad must hold two values per axis, got {self.pad}")
        F.pad(np.zeros(1), [0, 0], mode)  # checks the mode's name
        self.mode = {"replicate": "edge", "circular": "wrap"}.get(mode, mode)  # PyTorch's names
        self.value = float(value)

    def forward(self, x: Array, training: bool = False) -> Array:
        if training:
            self.saved = tuple(x.shape)
        return F.pad(x, self.pad, self.mode, self.value)

    def backward(self, grad_out: Array) -> Array:
        return F.pad_backward(grad_out, self._need_saved(), self.pad, self.mode)

    def output_spec(self, x: Any) -> TensorSpec:
        if x.shape is None:
            return TensorSpec(None, x.dtype)
        if len(self.pad) // 2 > len(x.shape) or len(self.pad) % 2:
            raise ValueError(f"pad {self.pad} holds two values per axis for at most {len(x.shape)} axes")
        shape = list(x.shape)
        for k in range(len(self.pad) // 2):
            axis = len(shape) - 1 - k
            if shape[axis] is not None:
                shape[axis] += self.pad[2 * k] + self.pad[2 * k + 1]
        return TensorSpec(tuple(shape), x.dtype)

    def config(self) -> dict:
        return dict(pad=self.pad, mode=self.mode, value=self.value)


class Chunk(WholeTensorLayer):
    """Part ``index`` of ``parts`` near-equal parts along ``axis`` (``torch.chunk``; ONNX's
    ``Split`` into equal parts): parts of ``ceil(size / parts)`` entries, the last one shorter,
    for an axis whose size is known only when the model runs."""

    def __init__(self, axis: int, parts: int, index: int) -> None:
        super().__init__()
        self.axis, self.parts, self.index = int(axis), int(parts), int(index)
        if not 0 <= self.index < self.parts:
            raise ValueError(f"index must lie in [0, parts), got {index} of {parts}")

    def _bounds(self, size):
        part = -(-size // self.parts)
        return min(self.index * part, size), min((self.index + 1) * part, size)

    def forward(self, x: Array, training: bool = False) -> Array:
        start, end = self._bounds(int(x.shape[self.axis]))
        if training:
            self.saved = tuple(x.shape)
        return F.slice(x, [start], [end], [self.axis])

    def backward(self, grad_out: Array) -> Array:
        shape = self._need_saved()
        start, end = self._bounds(shape[self.axis])
        return F.slice_backward(grad_out, shape, [start], [end], [self.axis])

    def output_spec(self, x: Any) -> TensorSpec:
        if x.shape is None:
            return TensorSpec(None, x.dtype)
        shape = list(x.shape)
        axis = self.axis % len(shape)
        if shape[axis] is not None:
            start, end = self._bounds(shape[axis])
            shape[axis] = end - start
        return TensorSpec(tuple(shape), x.dtype)

    def config(self) -> dict:
        return dict(axis=self.axis, parts=self.parts, index=self.index)


def onnx_pads_to_pairs(pads):
    """ONNX's ``[begin of each axis..., end of each axis...]`` as PyTorch's pairs, last axis first."""
    pads = [int(p) for p in pads]
    rank = len(pads) // 2
    return [p for axis in range(rank - 1, -1, -1) for p in (pads[axis], pads[axis + rank])]


class DynamicPad(WholeTensorLayer):
    """:class:`Pad` by amounts that are an operand computed while the model runs, in ONNX's order
    (``[begin of each axis..., end of each axis...]``, as TensorFlow's "same" padding exports)."""

    takes_list = True

    def __init__(self, mode: str = "constant", value: float = 0.0, constants: dict | None = None) -> None:
        super().__init__(constants)
        F.pad(np.zeros(1), [0, 0], mode)  # checks the mode's name
        self.mode = {"replicate": "edge", "circular": "wrap"}.get(mode, mode)
        self.value = float(value)

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        x, pads = self.operands(inputs)
        pairs = onnx_pads_to_pairs(to_host(pads).reshape(-1))
        if training:
            self.saved = (tuple(x.shape), pairs)
        return F.pad(x, pairs, self.mode, self.value)

    def backward(self, grad_out: Array) -> list[Array | None]:
        shape, pairs = self._need_saved()
        return self.input_gradients([F.pad_backward(grad_out, shape, pairs, self.mode), None])

    def output_spec(self, specs: Any) -> TensorSpec:
        x, pads = self.operand_specs(specs)
        value = known_value(pads)
        if x.shape is None or value is None:
            return TensorSpec(None if x.shape is None else (None,) * len(x.shape), x.dtype)
        rank = len(x.shape)
        amounts = _target_shape(value)
        shape = tuple(None if s is None or amounts[i] is None or amounts[i + rank] is None
                      else s + amounts[i] + amounts[i + rank] for i, s in enumerate(x.shape))
        return TensorSpec(shape, x.dtype)

    def config(self) -> dict:
        return dict(mode=self.mode, value=self.value, constants=self.constants_config())


# cnnlab.functional's ops called on symbolic tensors build these layers' nodes (cnnlab.dispatch.symbolic)
register_builder("slice", lambda x, starts, ends, axes=None, steps=None: Slice(starts, ends, axes, steps)(x))
register_builder("gather", lambda x, indices, axis=0: operand_node(Gather, (x, indices), axis=axis))
register_builder("squeeze", lambda x, axes=None: Squeeze(axes)(x))
register_builder("unsqueeze", lambda x, axes: Unsqueeze(axes)(x))
register_builder("expand", lambda x, shape: operand_node(Expand, (x, shape)))
register_builder("cast", lambda x, dtype: Cast(dtype)(x))
register_builder("where", lambda condition, a, b: operand_node(Where, (condition, a, b)))
register_builder("pad", lambda x, pad, mode="constant", value=0.0: Pad(pad, mode, value)(x))
