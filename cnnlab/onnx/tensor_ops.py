"""ONNX converters for whole tensors of any rank and dtype (:mod:`cnnlab.layers.indexing` and
:mod:`cnnlab.layers.tensor_math`): the shape arithmetic exporters write (``Shape → Gather →
Unsqueeze → Concat → Reshape``, ``Range``, ``ConstantOfShape``), the slicing, splitting and
squeezing of attention heads, comparisons and ``Where``, reductions over any axes and the product
of two computed tensors.

A constant operand is an ordinary operand here (the layers keep it). The element-wise converters
of :mod:`cnnlab.onnx.ops` and :mod:`cnnlab.onnx.elementwise` keep their float fast paths (a bias
folded into the convolution before it, a kernel per op); these converters are registered after
them, for the same opsets, and take the cases those refuse: integer or boolean operands, operands
of different ranks, constants that vary along the first axis.
"""

import numpy as np

from .. import layers as L
from ..device import to_host
from ..layers.indexing import broadcast_dims
from . import elementwise, ops
from .exporter import OPSET, exporter
from .registry import converter

_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
                9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def _split(values):
    """The computed tensors among ``values`` and ``{position: constant}`` for the others."""
    tensors = [v for v in values if not isinstance(v, np.ndarray)]
    constants = {i: np.asarray(v) for i, v in enumerate(values) if isinstance(v, np.ndarray)}
    return tensors, constants


def _general(layer_type, values, **options):
    """``layer_type(constants=..., **options)`` called on the computed tensors among ``values``."""
    tensors, constants = _split(values)
    return layer_type(constants=constants, **options)(tensors)


def _float_model_tensor(ctx, value):
    return not isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.shape is not None


def _needs_general(ctx, values):
    """Whether an element-wise node is beyond the float kernels' layers: an integer or boolean
    operand, two tensors of different ranks, a constant that varies along the first axis or has
    more axes than the tensor."""
    tensors = [v for v in values if not isinstance(v, np.ndarray)]
    if not all(_float_model_tensor(ctx, t) for t in tensors):
        return True
    ranks = {len(t.shape) for t in tensors}
    if len(ranks) > 1:
        return True
    if len(tensors) > 1 and broadcast_dims(*[t.shape for t in tensors]) not in [t.shape for t in tensors]:
        return True  # the kernels' layers take operands one of which has the result's shape
    rank = ranks.pop()
    for value in values:
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "iuf" or value.ndim > rank or (value.ndim == rank and value.shape[0] != 1):
                return True
            if broadcast_dims(tensors[0].shape, value.shape) != tensors[0].shape:
                return True  # the constant makes the result larger than the tensor
    return rank == 0


def _arithmetic(op, fast):
    def convert(ctx, a, b):
        if _needs_general(ctx, (a, b)):
            values = [np.asarray(v, dtype=ctx.dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
                      for v in (a, b)]
            return _general(L.Arithmetic, values, op=op)
        return fast(ctx, a, b)
    convert.__name__ = f"convert_{op}"
    return convert


for _op_type, _op, _fast in (("Add", "add", ops.add), ("Mul", "multiply", ops.mul), ("Sub", "subtract", elementwise.sub),
                             ("Div", "divide", elementwise.div), ("Pow", "power", elementwise.pow_)):
    converter(_op_type, since=7)(_arithmetic(_op, _fast))


def _comparison(op):
    def convert(ctx, a, b):
        return _general(L.Arithmetic, (a, b), op=op)
    return convert


for _op_type, _op in (("Equal", "equal"), ("Less", "less"), ("Greater", "greater"), ("LessOrEqual", "less_equal"),
                      ("GreaterOrEqual", "greater_equal"), ("And", "logical_and"), ("Or", "logical_or"),
                      ("Xor", "logical_xor")):
    converter(_op_type, since=7)(_comparison(_op))


@converter("Not")
def not_(ctx, x):
    return L.Arithmetic("logical_xor", constants={1: np.array(True)})([ctx.tensor(x, "X")])


@converter("Mod", since=10)
def mod(ctx, a, b, *, fmod=0):
    return _general(L.Arithmetic, (a, b), op="fmod" if fmod else "mod")


@converter("Where", since=9)
def where(ctx, condition, a, b):
    return _general(L.Where, (condition, a, b))


@converter("Shape", since=1)
def shape(ctx, x, *, start=0, end=None):
    x = ctx.tensor(x, "data")
    known = None if x.shape is None else x.shape[start:end]
    if known is not None and None not in known:
        return np.array(known, dtype=np.int64)  # a constant: the sizes are fixed in the file
    return L.Shape(start, end)(x)


@converter("Size", since=1)
def size(ctx, x):
    x = ctx.tensor(x, "data")
    if x.shape is not None and None not in x.shape:
        return np.array(int(np.prod(x.shape, dtype=np.int64)), dtype=np.int64)
    return L.Reduce("prod", None, keepdims=False)(L.Shape()(x))


@converter("Cast", since=6)
def cast(ctx, x, *, to, saturate=1, round_mode="up"):
    if to not in _ONNX_DTYPES:
        ctx.fail(f"to={to}: cnnlab casts to the float, integer and bool types only")
    dtype = _ONNX_DTYPES[to]
    if np.dtype(dtype).kind == "f" and x.dtype.kind == "f":
        dtype = x.dtype if np.dtype(dtype).itemsize >= x.dtype.itemsize else dtype  # floats keep the model's dtype
    if np.dtype(dtype) == x.dtype:
        return L.Identity()(x)
    return L.Cast(dtype)(x)


@converter("CastLike", since=15)
def cast_like(ctx, x, like, *, saturate=1, round_mode="up"):
    dtype = like.dtype
    if np.dtype(dtype) == x.dtype:
        return L.Identity()(ctx.tensor(x, "input"))
    return L.Cast(dtype)(ctx.tensor(x, "input"))


def _ints(ctx, value, what):
    return [int(v) for v in ctx.constant(value, what).reshape(-1)]


@converter("Slice", since=10)
def slice_(ctx, x, starts, ends, axes=None, steps=None):
    x = ctx.tensor(x, "data")
    starts, ends = _ints(ctx, starts, "starts"), _ints(ctx, ends, "ends")
    axes = None if axes is None else _ints(ctx, axes, "axes")
    steps = None if steps is None else _ints(ctx, steps, "steps")
    return L.Slice(starts, ends, axes, steps)(x)


@converter("Slice", since=1)
def slice_1(ctx, x, *, starts, ends, axes=None):
    return L.Slice(list(starts), list(ends), None if axes is None else list(axes))(ctx.tensor(x, "data"))


def _split_sizes(ctx, x, axis, split, outputs):
    if split is not None:
        return [int(s) for s in split]
    size = None if x.shape is None else x.shape[axis]
    if size is None:
        ctx.fail("a split into equal parts of an axis whose size is known only when the model runs")
    part = -(-size // outputs)
    return [min(part, size - k * part) for k in range(outputs)]


def _split_outputs(ctx, x, axis, sizes):
    bounds = np.cumsum([0] + sizes)
    return tuple(L.Slice([int(lo)], [int(hi)], [axis])(x) for lo, hi in zip(bounds[:-1], bounds[1:]))


@converter("Split", since=13)
def split(ctx, x, split=None, *, axis=0, num_outputs=None):
    x = ctx.tensor(x, "input")
    sizes = _split_sizes(ctx, x, axis, None if split is None else ctx.constant(split, "split").reshape(-1),
                         num_outputs or len(ctx.node.output))
    return _split_outputs(ctx, x, axis, sizes)


@converter("Split", since=2)
def split_2(ctx, x, *, axis=0, split=None):
    x = ctx.tensor(x, "input")
    return _split_outputs(ctx, x, axis, _split_sizes(ctx, x, axis, split, len(ctx.node.output)))


@converter("Gather", since=1)
def gather(ctx, data, indices, *, axis=0):
    if isinstance(data, np.ndarray) and np.asarray(data).dtype.kind == "f":
        data = np.asarray(data, dtype=ctx.dtype)
    return _general(L.Gather, (data, indices), axis=axis)


def _axes_operand(ctx, axes_input, axes):
    if axes_input is not None:
        return _ints(ctx, axes_input, "axes")
    return None if axes is None else [int(a) for a in axes]


@converter("Squeeze", since=1)
def squeeze(ctx, x, axes_input=None, *, axes=None):
    return L.Squeeze(_axes_operand(ctx, axes_input, axes))(ctx.tensor(x, "data"))


@converter("Unsqueeze", since=1)
def unsqueeze(ctx, x, axes_input=None, *, axes=None):
    axes = _axes_operand(ctx, axes_input, axes)
    if axes is None:
        ctx.fail("no axes")
    return L.Unsqueeze(axes)(ctx.tensor(x, "data"))


@converter("Expand", since=8)
def expand(ctx, x, shape):
    if isinstance(x, np.ndarray) and np.asarray(x).dtype.kind == "f":
        x = np.asarray(x, dtype=ctx.dtype)
    return _general(L.Expand, (x, shape))


@converter("ConstantOfShape", since=9)
def constant_of_shape(ctx, shape, *, value=None):
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    dtype = ctx.dtype if value.dtype.kind == "f" else value.dtype
    return L.ConstantOfShape(value[0].item(), dtype=np.dtype(dtype).name)(ctx.tensor(shape, "input"))


@converter("Range", since=11)
def range_(ctx, start, limit, delta):
    return _general(L.Range, (start, limit, delta))


def _reduce(op):
    def convert(ctx, x, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
        x = ctx.tensor(x, "data")
        axes = _axes_operand(ctx, axes_input, axes)
        if not axes:
            if noop_with_empty_axes:
                return L.Identity()(x)
            axes = None
        if op == "mean" and x.shape is not None and len(x.shape) == 4 and axes is not None \
                and sorted(a % 4 for a in axes) == [2, 3] and x.dtype.kind == "f":
            return L.GlobalAvgPool2D(keepdims=bool(keepdims))(x)  # the pooling kernel
        return L.Reduce(op, axes, keepdims=bool(keepdims))(x)
    return convert


for _op_type, _op in (("ReduceMean", "mean"), ("ReduceSum", "sum"), ("ReduceMax", "max"), ("ReduceMin", "min"),
                      ("ReduceProd", "prod"), ("ReduceSumSquare", "sum_square"), ("ReduceL1", "l1"),
                      ("ReduceL2", "l2"), ("ReduceLogSumExp", "log_sum_exp")):
    converter(_op_type, since=1)(_reduce(_op))


@converter("MatMul", since=1)
def matmul(ctx, a, b):
    """A tensor times a constant matrix: :func:`cnnlab.onnx.ops.matmul` (a :class:`~cnnlab.layers.Dense`
    layer); anything else (two computed tensors, attention's ``Q Kᵀ``): :class:`~cnnlab.layers.MatMul`."""
    if isinstance(b, np.ndarray) and not isinstance(a, np.ndarray) and np.asarray(b).ndim == 2 \
            and a.dtype.kind == "f" and a.shape is not None and len(a.shape) >= 2 \
            and a.shape[-1] == np.asarray(b).shape[0]:
        return ops.matmul(ctx, a, b)
    values = [np.asarray(v, dtype=ctx.dtype) if isinstance(v, np.ndarray) else v for v in (a, b)]
    return _general(L.MatMul, values)


@converter("Tile", since=6)
def tile(ctx, x, repeats):
    if isinstance(x, np.ndarray) and np.asarray(x).dtype.kind == "f":
        x = np.asarray(x, dtype=ctx.dtype)
    return _general(L.Tile, (x, repeats))


# ----------------------------------------------------------------------------- export


def _operand_names(ctx, layer, inputs):
    """The ONNX names of a whole-tensor layer's operands: its inputs and its constants, in order."""
    names, inputs = [], list(inputs)
    for position in range(len(inputs) + len(layer.constant_positions)):
        if position in layer.constant_positions:
            value = to_host(layer.buffers[f"constant{position}"])
            names.append(ctx.constant(value, "constant", dtype=np.asarray(value).dtype))
        else:
            names.append(inputs.pop(0))
    return names


def _ints_constant(ctx, values, hint):
    return ctx.constant(np.array(values, dtype=np.int64), hint, dtype=np.int64)


_TO_ONNX = {np.dtype(v): k for k, v in _ONNX_DTYPES.items()}


@exporter(L.Shape, opset=lambda layer: 15 if (layer.start, layer.end) != (0, None) else OPSET)
def _shape(ctx, layer, inputs, output, shapes):
    options = {} if (layer.start, layer.end) == (0, None) else dict(
        start=layer.start, **({} if layer.end is None else dict(end=layer.end)))
    return ctx.node("Shape", inputs, output, **options)


@exporter(L.Cast)
def _cast(ctx, layer, inputs, output, shapes):
    return ctx.node("Cast", inputs, output, to=_TO_ONNX[layer.to])


@exporter(L.Slice)
def _slice(ctx, layer, inputs, output, shapes):
    names = [inputs[0], _ints_constant(ctx, layer.starts, "starts"), _ints_constant(ctx, layer.ends, "ends")]
    if layer.axes is not None or layer.steps is not None:
        names.append(_ints_constant(ctx, layer.axes if layer.axes is not None else range(len(layer.starts)), "axes"))
    if layer.steps is not None:
        names.append(_ints_constant(ctx, layer.steps, "steps"))
    return ctx.node("Slice", names, output)


@exporter(L.Squeeze, L.Unsqueeze)
def _squeeze(ctx, layer, inputs, output, shapes):
    names = list(inputs) + ([] if layer.axes is None else [_ints_constant(ctx, layer.axes, "axes")])
    return ctx.node(type(layer).__name__, names, output)


@exporter(L.Gather, L.Concat)
def _axis_op(ctx, layer, inputs, output, shapes):
    return ctx.node(type(layer).__name__, _operand_names(ctx, layer, inputs), output, axis=layer.axis)


@exporter(L.Expand, L.Range, L.Where, L.Tile, L.MatMul)
def _plain(ctx, layer, inputs, output, shapes):
    return ctx.node(type(layer).__name__, _operand_names(ctx, layer, inputs), output)


@exporter(L.DynamicReshape)
def _dynamic_reshape(ctx, layer, inputs, output, shapes):
    return ctx.node("Reshape", _operand_names(ctx, layer, inputs), output, allowzero=int(layer.allowzero))


@exporter(L.ConstantOfShape)
def _constant_of_shape(ctx, layer, inputs, output, shapes):
    value = ctx.onnx.numpy_helper.from_array(np.array([layer.value], dtype=layer.fill_dtype))
    return ctx.node("ConstantOfShape", inputs, output, value=value)


_ARITHMETIC = {"add": "Add", "subtract": "Sub", "multiply": "Mul", "divide": "Div", "power": "Pow",
               "maximum": "Max", "minimum": "Min", "mod": "Mod", "fmod": "Mod", "equal": "Equal", "less": "Less",
               "less_equal": "LessOrEqual", "greater": "Greater", "greater_equal": "GreaterOrEqual",
               "logical_and": "And", "logical_or": "Or", "logical_xor": "Xor"}


@exporter(L.Arithmetic)
def _arithmetic_export(ctx, layer, inputs, output, shapes):
    options = dict(fmod=int(layer.op == "fmod")) if layer.op in ("mod", "fmod") else {}
    return ctx.node(_ARITHMETIC[layer.op], _operand_names(ctx, layer, inputs), output, **options)


_REDUCE = {"mean": "ReduceMean", "sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin", "prod": "ReduceProd",
           "sum_square": "ReduceSumSquare", "l1": "ReduceL1", "l2": "ReduceL2", "log_sum_exp": "ReduceLogSumExp"}


@exporter(L.Reduce)
def _reduce_export(ctx, layer, inputs, output, shapes):
    """Opset 14: ReduceSum takes its axes as an input, the others as an attribute."""
    if layer.op == "sum":
        names = list(inputs) + ([] if layer.axes is None else [_ints_constant(ctx, layer.axes, "axes")])
        return ctx.node("ReduceSum", names, output, keepdims=int(layer.keepdims))
    options = {} if layer.axes is None else dict(axes=list(layer.axes))
    return ctx.node(_REDUCE[layer.op], inputs, output, keepdims=int(layer.keepdims), **options)
