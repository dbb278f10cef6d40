"""ONNX converters and exporters of the element-wise math layers (:mod:`cnnlab.layers.elementwise`).

Import: ``Sqrt``, ``Exp``, ``Log``, ``Erf``, ``Reciprocal``, ``Abs``, ``Neg``, ``Floor``, ``Ceil``,
``Gelu`` (opset 20); ``Pow``, ``Max``, ``Min`` (two computed tensors, or a tensor and constants);
and the ``Sub`` and ``Div`` of two computed tensors, or of a constant and a tensor (these
converters are registered after those of :mod:`cnnlab.onnx.ops`, for the same opsets, so they are
the ones found; they hand a tensor and a constant subtrahend or divisor to those, which fold it).

Export: one node per layer; ``GELU`` as ``Erf`` or ``Tanh`` arithmetic, since the files are opset
14 and ``Gelu`` came with opset 20.
"""

import math

import numpy as np

from .. import layers as L
from ..device import to_host
from . import ops  # the converters registered before these (Sub, Div)
from .exporter import exporter
from .registry import converter

# ----------------------------------------------------------------------------- import


def _unary(layer_type):
    def convert(ctx, x):
        return layer_type()(ctx.tensor(x, "X"))
    return convert


for _op, _layer in (("Sqrt", L.Sqrt), ("Exp", L.Exp), ("Log", L.Log), ("Erf", L.Erf), ("Reciprocal", L.Reciprocal),
                    ("Abs", L.Abs), ("Neg", L.Neg), ("Floor", L.Floor), ("Ceil", L.Ceil)):
    converter(_op)(_unary(_layer))


@converter("Gelu", since=20)
def gelu(ctx, x, *, approximate="none"):
    if approximate not in ("none", "tanh"):
        ctx.fail(f"approximate={approximate!r} is not an ONNX value ('none' or 'tanh')")
    return L.GELU(approximate=approximate)(ctx.tensor(x, "X"))


def _two_tensors(ctx, layer_type, a, b):
    """``layer_type()([a, b])`` of two computed tensors of one rank: ONNX aligns shapes from the
    last axis, batch axis included, so a tensor of fewer axes would meet the batch with another."""
    ranks = len(tuple(a.shape)), len(tuple(b.shape))
    if ranks[0] != ranks[1]:
        ctx.fail(f"inputs of ranks {ranks[0]} and {ranks[1]}: ONNX would broadcast the batch axis of one "
                 "against another axis of the other, which cnnlab does not implement")
    return layer_type()([a, b])


def _with_constant(ctx, op, tensor, constant, first=False):
    """``op`` of a computed tensor and a constant that broadcasts against each sample (and does not
    vary along the batch axis): an :class:`~cnnlab.layers.ElementwiseConstant` holding it."""
    constant = np.asarray(constant)
    if constant.dtype.kind not in "iuf":
        ctx.fail(f"a constant operand of dtype {constant.dtype}; cnnlab takes numbers")
    rank = len(tuple(tensor.shape))
    if constant.ndim > rank or (constant.ndim == rank and constant.shape[0] != 1):
        ctx.fail(f"a constant of shape {constant.shape} varies along the batch axis of a tensor of rank {rank}")
    return L.ElementwiseConstant(op, constant.astype(ctx.dtype), first=first, dtype=ctx.dtype.name)(tensor)


def _binary(ctx, op, layer_type, a, b):
    a_constant, b_constant = isinstance(a, np.ndarray), isinstance(b, np.ndarray)
    if a_constant and b_constant:  # the importer evaluates nodes of constants only; here for completeness
        ctx.fail("both inputs are constants")
    if a_constant:
        return _with_constant(ctx, op, b, a, first=True)
    if b_constant:
        return _with_constant(ctx, op, a, b)
    return _two_tensors(ctx, layer_type, a, b)


@converter("Pow", since=7)
def pow_(ctx, x, y):
    return _binary(ctx, "power", L.Power, x, y)


def _select(ctx, op, layer_type, fold, inputs):
    """Max or Min of 1 or more inputs: computed tensors in pairs, then the constants, folded into
    one, as a last operand (the order does not matter: both are commutative and associative,
    NaN included)."""
    tensors = [t for t in inputs if not isinstance(t, np.ndarray)]
    constants = [np.asarray(t) for t in inputs if isinstance(t, np.ndarray)]
    out = tensors[0]
    for other in tensors[1:]:
        out = _two_tensors(ctx, layer_type, out, other)
    if constants:
        out = _with_constant(ctx, op, out, fold.reduce(np.broadcast_arrays(*constants)) if len(constants) > 1
                             else constants[0])
    elif len(tensors) == 1:
        out = L.Identity()(out)  # the node's output is a tensor of its own
    return out


@converter("Max", since=8)
def max_(ctx, *inputs):
    return _select(ctx, "maximum", L.Maximum, np.maximum, inputs)


@converter("Min", since=8)
def min_(ctx, *inputs):
    return _select(ctx, "minimum", L.Minimum, np.minimum, inputs)


@converter("Sub", since=7)
def sub(ctx, a, b):
    """Two computed tensors: :class:`~cnnlab.layers.Subtract`; a tensor and a constant:
    :func:`cnnlab.onnx.ops.sub` (a bias, folded into the layer before when it can be)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return ops.sub(ctx, a, b)
    return _two_tensors(ctx, L.Subtract, a, b)


@converter("Div", since=7)
def div(ctx, a, b):
    """Two computed tensors: :class:`~cnnlab.layers.Divide`; a constant divided by a tensor: an
    :class:`~cnnlab.layers.ElementwiseConstant`; a tensor divided by a constant:
    :func:`cnnlab.onnx.ops.div` (a scale by its inverse, folded when it can be)."""
    if isinstance(b, np.ndarray):
        return ops.div(ctx, a, b)
    if isinstance(a, np.ndarray):
        return _with_constant(ctx, "divide", b, a, first=True)
    return _two_tensors(ctx, L.Divide, a, b)


# ----------------------------------------------------------------------------- export


def _node(op_type):
    def export(ctx, layer, inputs, output, shapes):
        return ctx.node(op_type, inputs, output)
    return export


for _layer, _op in ((L.Sqrt, "Sqrt"), (L.Exp, "Exp"), (L.Log, "Log"), (L.Erf, "Erf"), (L.Reciprocal, "Reciprocal"),
                    (L.Abs, "Abs"), (L.Neg, "Neg"), (L.Floor, "Floor"), (L.Ceil, "Ceil")):
    exporter(_layer)(_node(_op))


@exporter(L.GELU)
def _gelu(ctx, layer, inputs, output, shapes):
    """``x / 2 * (1 + erf(x / sqrt(2)))``, or the tanh form, in opset-14 nodes."""
    x = inputs[0]

    def times(name, value):
        return ctx.node("Mul", [name, ctx.constant(np.array(value), "constant")])

    if layer.approximate == "tanh":
        cube = ctx.node("Mul", [ctx.node("Mul", [x, x]), x])
        inner = times(ctx.node("Add", [x, times(cube, 0.044715)]), math.sqrt(2 / math.pi))
        curve = ctx.node("Tanh", [inner])
    else:
        curve = ctx.node("Erf", [times(x, math.sqrt(0.5))])
    one_plus = ctx.node("Add", [curve, ctx.constant(np.array(1.0), "one")])
    return ctx.node("Mul", [times(x, 0.5), one_plus], output)


def _aligned(ctx, name, shape, rank):
    """The input ``name`` (one sample of ``shape``) with 1-axes after its batch axis up to
    ``rank`` sample axes, as the layers align a sample of fewer axes (a Reshape when the sizes
    are known, else an Unsqueeze)."""
    missing = rank - len(shape)
    if missing <= 0:
        return name
    if None not in shape:
        target = ctx.constant(np.array((0,) + (1,) * missing + tuple(shape)), "shape", dtype=np.int64)
        return ctx.node("Reshape", [name, target])
    axes = ctx.constant(np.arange(1, missing + 1), "axes", dtype=np.int64)
    return ctx.node("Unsqueeze", [name, axes])


BINARY_NODES = {L.Subtract: "Sub", L.Divide: "Div", L.Power: "Pow", L.Maximum: "Max", L.Minimum: "Min"}


@exporter(*BINARY_NODES)
def _binary_layer(ctx, layer, inputs, output, shapes):
    rank = max(len(s) for s in shapes)
    names = [_aligned(ctx, name, tuple(shape), rank) for name, shape in zip(inputs, shapes)]
    return ctx.node(BINARY_NODES[type(layer)], names, output)


CONSTANT_NODES = {"subtract": "Sub", "divide": "Div", "power": "Pow", "maximum": "Max", "minimum": "Min"}


@exporter(L.ElementwiseConstant)
def _elementwise_constant(ctx, layer, inputs, output, shapes):
    value = ctx.constant(to_host(layer.buffers["value"]), "value")
    names = [value, inputs[0]] if layer.first else [inputs[0], value]
    return ctx.node(CONSTANT_NODES[layer.op], names, output)
