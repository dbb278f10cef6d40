"""Subgraphs of ONNX nodes imported as one layer: what an exporter writes out op by op for an
operation cnnlab has a layer for.

Files of opsets before 17 (PyTorch's older exports, Paddle's) have no ``LayerNormalization``:
they write layer normalization as its formula, nine nodes,

    mean = ReduceMean(x, axes)            (the trailing axes, kept as 1s)
    d = Sub(x, mean)
    v = ReduceMean(Pow(d, 2), axes)       (or Mul(d, d))
    y = Div(d, Sqrt(Add(v, epsilon)))
    out = Add(Mul(y, scale), bias)        (scale and bias optional)

:func:`layer_norm_chain` finds such a chain ending at a node and makes it one
:class:`cnnlab.layers.LayerNorm`, as onnxruntime's graph optimizations do. The nodes of the
chain before its end have been converted already, one by one; their layers are left behind,
read by nothing in the model.

The match is made on the ONNX nodes (their op types, constant inputs and how many nodes read
each value), not on the layers they were imported as, as the activations written out are
(:mod:`cnnlab.onnx.tensor_ops`): the same constant ``Add`` imports as a ``Bias``, an ``Affine``
with the ``Mul`` before it or an ``Arithmetic``, with the shapes and dtypes around it.
"""

from __future__ import annotations

import numpy as np

from . import tensor_ops


def layer_norm_chain(context, node, producers):
    """The results of importing ``node`` as the end of a layer normalization written as its
    formula (module docstring), or None where it is not one. ``producers`` maps each value's
    name to the node that computes it. The chain's values between its nodes must be read by
    the chain alone (and be no graph output), ``scale``, ``bias`` and ``epsilon`` constants
    (``scale`` and ``bias`` of the normalized axes' shape, or broadcasting to it), the two
    means over the same trailing axes of ``x`` after its first, of known sizes."""
    matched = _chain(context, node, producers)
    if matched is None:
        return None
    x_name, axes, epsilon, scale, bias, between = matched
    x = context.tensors.get(x_name)
    if x is None or x.shape is None or x.dtype not in (np.float32, np.float64) or epsilon <= 0 \
            or any(context.uses.get(name, 0) != uses or name in context.graph_outputs for name, uses in between):
        return None
    rank = len(x.shape)
    trailing = sorted({a % rank for a in axes}) if axes and all(-rank <= a < rank for a in axes) else []
    if not trailing or trailing != list(range(trailing[0], rank)) or trailing[0] == 0 or None in x.shape[trailing[0]:]:
        return None
    normalized = tuple(x.shape[trailing[0]:])
    fitted = [None if value is None else _fitted(value, normalized) for value in (scale, bias)]
    if any(value is not None and fit is None for value, fit in zip((scale, bias), fitted)):
        return None
    scale = np.ones(normalized, context.dtype) if fitted[0] is None else fitted[0]
    return tensor_ops.layer_normalization(context, x, scale, fitted[1], axis=trailing[0], epsilon=epsilon)


def _chain(context, end, producers):
    """``(x, axes, epsilon, scale or None, bias or None, [(value, its uses)])`` of the chain
    ending at ``end``, the values between its nodes with the number of reads each must have;
    None where the nodes do not match."""
    between, node, scale, bias = [], end, None, None
    if node.op_type == "Add":
        bias, node = _constant_operand(context, node, producers, between)
    if node is not None and node.op_type == "Mul":
        scale, node = _constant_operand(context, node, producers, between)
    if node is None or node.op_type != "Div":
        return None
    d_name, root_name = node.input
    root = _producer(producers, root_name, "Sqrt", between)
    shifted = None if root is None else _producer(producers, root.input[0], "Add", between)
    if shifted is None:
        return None
    epsilon, variance = _constant_operand(context, shifted, producers, between)
    if epsilon is None or epsilon.size != 1 or variance is None or variance.op_type != "ReduceMean":
        return None
    squares = _producer(producers, variance.input[0], ("Pow", "Mul"), between)
    if squares is None or squares.input[0] != d_name or (
            squares.op_type == "Mul" and squares.input[1] != d_name
            or squares.op_type == "Pow" and not _is_constant(context, squares.input[1], 2.0)):
        return None
    difference = _producer(producers, d_name, "Sub", [])
    between.append((d_name, 2 if squares.op_type == "Pow" else 3))
    mean = None if difference is None else _producer(producers, difference.input[1], "ReduceMean", between)
    if mean is None or mean.input[0] != difference.input[0]:
        return None
    axes = _mean_axes(context, mean)
    if axes is None or axes != _mean_axes(context, variance):
        return None
    return difference.input[0], axes, float(np.asarray(epsilon).reshape(-1)[0]), scale, bias, between


def _constant_operand(context, node, producers, between):
    """``(the constant operand of a two-input node, the node computing the other)`` (that value
    added to ``between``, read once), or ``(None, None)``."""
    if len(node.input) != 2:
        return None, None
    for constant, other in (node.input, node.input[::-1]):
        if constant in context.constants and other not in context.constants:
            producer = producers.get(other)
            if producer is not None:
                between.append((other, 1))
            return context.constants[constant], producer
    return None, None


def _producer(producers, name, op_types, between):
    """The node computing ``name`` where it is of one of ``op_types`` (``name`` added to
    ``between``, read once), else None."""
    node = producers.get(name)
    if node is None or node.op_type not in ((op_types,) if isinstance(op_types, str) else op_types):
        return None
    between.append((name, 1))
    return node


def _is_constant(context, name, value):
    array = context.constants.get(name)
    return array is not None and array.size == 1 and float(np.asarray(array).reshape(-1)[0]) == value


def _mean_axes(context, node):
    """The axes a ``ReduceMean`` that keeps them reduces (an attribute, or from opset 18 its
    second input, a constant), or None."""
    attributes = {a.name: context.onnx.helper.get_attribute_value(a) for a in node.attribute}
    if attributes.get("keepdims", 1) != 1 or attributes.get("noop_with_empty_axes", 0):
        return None
    if len(node.input) > 1 and node.input[1]:
        axes = context.constants.get(node.input[1])
        return None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    axes = attributes.get("axes")
    return None if axes is None else [int(a) for a in axes]


def _fitted(value, normalized):
    """A scale or bias constant as an array of the normalized axes' shape (leading axes of 1
    dropped, then broadcast), or None where it does not fit them."""
    value = np.asarray(value)
    while value.ndim > len(normalized) and value.shape[0] == 1:
        value = value.reshape(value.shape[1:])
    try:
        return np.array(np.broadcast_to(value, normalized))
    except ValueError:
        return None
