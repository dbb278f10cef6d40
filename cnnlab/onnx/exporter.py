"""Write a :class:`cnnlab.Model` as an ONNX file that onnxruntime (or any ONNX runtime) runs.

Each layer type has one function in :data:`EXPORTERS` that appends the ONNX node(s) and
initializers for one call of the layer. The batch axis is symbolic; everything else comes from
the model's shapes, so a model must know its input shape.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..model import Model
import numpy as np

from .. import layers as L
from ..device import to_host
from ..shapes import resolve_padding
from .registry import onnx_module

__all__ = ["save", "EXPORTERS"]

EXPORTERS = {}
OPSET = 14  # HardSwish needs 14


def exporter(*layer_types, opset=OPSET):
    """Register ``function`` as the exporter of ``layer_types``; ``opset`` is the first ONNX opset
    that has the ops it writes, or a function of the layer that says it (the file gets the
    highest of the model's layers)."""
    def register(function):
        function.opset = opset
        for layer_type in layer_types:
            EXPORTERS[layer_type] = function
        return function
    return register


class ExportContext:
    """Collects nodes and initializers; hands out unique names."""

    def __init__(self, onnx, dtype):
        self.onnx = onnx
        self.dtype = np.dtype(dtype)
        self.nodes, self.initializers = [], []
        self._count = 0

    def name(self, hint):
        self._count += 1
        return f"{hint}_{self._count}"

    def constant(self, array, hint, dtype=None):
        name = self.name(hint)
        array = np.asarray(to_host(array), dtype=dtype or self.dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def node(self, op_type, inputs, output=None, **attributes):
        output = output or self.name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [output], name=output, **attributes))
        return output


def _pads(padding):
    (top, bottom), (left, right) = padding
    return [int(top), int(left), int(bottom), int(right)]  # ONNX: begins, then ends


@exporter(L.Conv2D)
def _conv(ctx, layer, inputs, output, shapes):
    pads = resolve_padding(layer.padding, layer.kernel_size, layer.stride, layer.dilation, shapes[0][1:])
    names = [inputs[0], ctx.constant(layer.params["weight"], "weight")]
    if layer.use_bias:
        names.append(ctx.constant(layer.params["bias"], "bias"))
    if None in pads[0] + pads[1]:  # 'same_upper'/'same_lower' at a stride, for a size known only at run time
        placement = dict(auto_pad=layer.padding.upper())
    else:
        placement = dict(pads=_pads(pads))
    return ctx.node("Conv", names, output, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                    dilations=list(layer.dilation), group=layer.groups, **placement)


@exporter(L.ConvTranspose2D)
def _conv_transpose(ctx, layer, inputs, output, shapes):
    pads = resolve_padding(layer.padding, layer.kernel_size, layer.stride, layer.dilation)
    names = [inputs[0], ctx.constant(layer.params["weight"], "weight")]
    if layer.use_bias:
        names.append(ctx.constant(layer.params["bias"], "bias"))
    return ctx.node("ConvTranspose", names, output, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                    pads=_pads(pads), dilations=list(layer.dilation), group=layer.groups,
                    output_padding=list(layer.output_padding))


@exporter(L.Dense)
def _dense(ctx, layer, inputs, output, shapes):
    if len(shapes[0]) > 1:  # (N, ..., in): Gemm takes matrices only
        product = ctx.node("MatMul", [inputs[0], ctx.constant(to_host(layer.params["weight"]).T, "weight")],
                           None if layer.use_bias else output)
        return ctx.node("Add", [product, ctx.constant(layer.params["bias"], "bias")], output) if layer.use_bias \
            else product
    names = [inputs[0], ctx.constant(layer.params["weight"], "weight")]
    if layer.use_bias:
        names.append(ctx.constant(layer.params["bias"], "bias"))
    return ctx.node("Gemm", names, output, transB=1)


def _window(layer):
    if isinstance(layer.padding, str):  # 'same_upper'/'same_lower': ONNX's auto_pad, resolved per input size
        placement = dict(auto_pad=layer.padding.upper())
    else:
        placement = dict(pads=_pads(layer.padding))
    return dict(kernel_shape=list(layer.kernel_size), strides=list(layer.stride), ceil_mode=int(layer.ceil_mode),
                **placement)


@exporter(L.MaxPool2D)
def _max_pool(ctx, layer, inputs, output, shapes):
    return ctx.node("MaxPool", inputs, output, dilations=list(layer.dilation), **_window(layer))


@exporter(L.MinPool2D)
def _min_pool(ctx, layer, inputs, output, shapes):  # min(x) = -max(-x)
    negated = ctx.node("Neg", inputs)
    pooled = ctx.node("MaxPool", [negated], dilations=list(layer.dilation), **_window(layer))
    return ctx.node("Neg", [pooled], output)


@exporter(L.AvgPool2D)
def _avg_pool(ctx, layer, inputs, output, shapes):
    return ctx.node("AveragePool", inputs, output, count_include_pad=int(layer.count_include_pad), **_window(layer))


@exporter(L.LPPool2D)
def _lp_pool(ctx, layer, inputs, output, shapes):
    window = _window(layer)
    window.pop("ceil_mode")  # an attribute of LpPool only from opset 18; cnnlab's 'lp' refuses it anyway
    return ctx.node("LpPool", inputs, output, p=2, **window)


@exporter(L.GlobalAvgPool2D, L.GlobalMaxPool2D)
def _global_pool(ctx, layer, inputs, output, shapes):
    op = "GlobalAveragePool" if isinstance(layer, L.GlobalAvgPool2D) else "GlobalMaxPool"
    if layer.keepdims:
        return ctx.node(op, inputs, output)
    return ctx.node("Flatten", [ctx.node(op, inputs)], output, axis=1)


def _simple(op_type, **attributes):
    def export(ctx, layer, inputs, output, shapes):
        return ctx.node(op_type, inputs, output, **{k: v(layer) for k, v in attributes.items()})
    return export


exporter(L.ReLU)(_simple("Relu"))
exporter(L.Sigmoid)(_simple("Sigmoid"))
exporter(L.Tanh)(_simple("Tanh"))
exporter(L.HardSwish)(_simple("HardSwish"))
exporter(L.Identity, L.Dropout, L.Dropout2D)(_simple("Identity"))  # dropout does nothing at inference
exporter(L.Flatten)(_simple("Flatten", axis=lambda layer: 1))
exporter(L.LeakyReLU)(_simple("LeakyRelu", alpha=lambda layer: float(layer.negative_slope)))
exporter(L.HardSigmoid)(_simple("HardSigmoid", alpha=lambda layer: float(layer.alpha),
                                beta=lambda layer: float(layer.beta)))
exporter(L.Softmax)(_simple("Softmax", axis=lambda layer: int(layer.axis)))
exporter(L.LogSoftmax)(_simple("LogSoftmax", axis=lambda layer: int(layer.axis)))
exporter(L.Concatenate)(_simple("Concat", axis=lambda layer: int(layer.axis)))
exporter(L.Multiply)(_simple("Mul"))


@exporter(L.Add)
def _add(ctx, layer, inputs, output, shapes):
    return ctx.node("Sum", inputs, output) if len(inputs) > 2 else ctx.node("Add", inputs, output)


@exporter(L.ReLU6, L.Clip)
def _clip(ctx, layer, inputs, output, shapes):
    low, high = (0.0, 6.0) if isinstance(layer, L.ReLU6) else (layer.min, layer.max)
    bounds = [ctx.constant(np.array(v), "bound") if v is not None else "" for v in (low, high)]
    return ctx.node("Clip", [inputs[0]] + bounds, output)


@exporter(L.SiLU)
def _silu(ctx, layer, inputs, output, shapes):
    return ctx.node("Mul", [inputs[0], ctx.node("Sigmoid", inputs)], output)


@exporter(L.Reshape)
def _reshape(ctx, layer, inputs, output, shapes):
    shape = ctx.constant(np.array((0,) + tuple(layer.shape)), "shape", dtype=np.int64)  # 0: keep the batch
    return ctx.node("Reshape", [inputs[0], shape], output)


@exporter(L.Bias, L.Scale)
def _constant_operand(ctx, layer, inputs, output, shapes):
    value = to_host(layer.params["weight"])
    return ctx.node("Add" if isinstance(layer, L.Bias) else "Mul", [inputs[0], ctx.constant(value, "value")], output)


@exporter(L.Resize)
def _resize(ctx, layer, inputs, output, shapes):
    options = layer.options
    attributes = dict(mode="linear" if options["mode"] in ("bilinear", "linear") else "nearest",
                      coordinate_transformation_mode=options["coordinate_transformation_mode"],
                      nearest_mode=options["nearest_mode"])
    if layer.scale is not None:
        scales = ctx.constant(np.array((1.0, 1.0) + layer.scale), "scales", dtype=np.float32)
        return ctx.node("Resize", [inputs[0], "", scales], output, **attributes)
    sizes = ctx.constant(np.array(layer.size), "sizes", dtype=np.int64)  # of axes 2 and 3 (opset 18)
    return ctx.node("Resize", [inputs[0], "", "", sizes], output, axes=[2, 3], **attributes)


_resize.opset = lambda layer: OPSET if layer.scale is not None else 18  # Resize's axes are from opset 18


@exporter(L.Transpose)
def _transpose(ctx, layer, inputs, output, shapes):
    return ctx.node("Transpose", inputs, output, perm=list(layer.perm))


@exporter(L.LayerNorm, opset=17)
def _layer_norm(ctx, layer, inputs, output, shapes):
    shape = layer.normalized_shape
    weight = to_host(layer.params["weight"]) if "weight" in layer.params else np.ones(shape)
    names = [inputs[0], ctx.constant(weight, "scale")]
    if "bias" in layer.params:
        names.append(ctx.constant(layer.params["bias"], "bias"))
    return ctx.node("LayerNormalization", names, output, axis=-len(shape), epsilon=float(layer.eps))


@exporter(L.BatchNorm2D)
def _batch_norm(ctx, layer, inputs, output, shapes):
    names = [inputs[0]] + [ctx.constant(store[key], key) for store, key in (
        (layer.params, "weight"), (layer.params, "bias"), (layer.buffers, "running_mean"),
        (layer.buffers, "running_var"))]
    return ctx.node("BatchNormalization", names, output, epsilon=float(layer.eps), momentum=1 - float(layer.momentum))


@exporter(L.InstanceNorm)
def _instance_norm(ctx, layer, inputs, output, shapes):
    channels = layer.num_channels
    weight = to_host(layer.params["weight"]) if layer.affine else np.ones(channels)
    bias = to_host(layer.params["bias"]) if layer.affine else np.zeros(channels)
    return ctx.node("InstanceNormalization", [inputs[0], ctx.constant(weight, "scale"), ctx.constant(bias, "bias")],
                    output, epsilon=float(layer.eps))


@exporter(L.GroupNorm)
def _group_norm(ctx, layer, inputs, output, shapes):
    """Opset 14 has no GroupNormalization: the groups are normalized as instances of a
    (N, groups, C/groups * H * W) reshape, then scaled and shifted per channel."""
    groups, shape = layer.num_groups, tuple(shapes[0])
    grouped = ctx.node("Reshape", [inputs[0], ctx.constant(np.array((0, groups, -1)), "shape", dtype=np.int64)])
    ones, zeros = ctx.constant(np.ones(groups), "scale"), ctx.constant(np.zeros(groups), "bias")
    normalized = ctx.node("InstanceNormalization", [grouped, ones, zeros], epsilon=float(layer.eps))
    if None in shape:  # an axis known only when the model runs: x's own shape
        back = ctx.node("Shape", [inputs[0]])
    else:
        back = ctx.constant(np.array((0,) + shape), "shape", dtype=np.int64)
    if not layer.affine:
        return ctx.node("Reshape", [normalized, back], output)
    restored = ctx.node("Reshape", [normalized, back])
    per_channel = (shape[0],) + (1,) * (len(shape) - 1)
    weight = ctx.constant(to_host(layer.params["weight"]).reshape(per_channel), "weight")
    bias = ctx.constant(to_host(layer.params["bias"]).reshape(per_channel), "bias")
    return ctx.node("Add", [ctx.node("Mul", [restored, weight]), bias], output)


def _opset(function, layer):
    """The first opset that has the ops ``function`` writes for ``layer``."""
    return function.opset(layer) if callable(function.opset) else function.opset


def _elem(onnx, dtype):
    """The ONNX element type of a NumPy dtype."""
    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def _dims(name, shape):
    """An ONNX value's dims: the symbolic batch, then each axis's size, or a symbolic name
    (``<name>_axis2``) for an axis known only when the model runs."""
    return ["batch"] + [f"{name}_axis{axis}" if size is None else size for axis, size in enumerate(shape, start=1)]


def save(model: Model, path: str | os.PathLike, opset: int | None = None) -> None:
    """Write ``model`` as an ONNX file with a symbolic batch axis: opset 14, or the first opset
    that has every op the model's layers need (17 with a ``LayerNorm``), or ``opset`` when given.

    Parameters
    ----------
    model : cnnlab.Model or cnnlab.Sequential
        Its input shape must be known. Layers run as in evaluation mode (dropout off, batch
        normalization with the running statistics).
    path : path
        The ``.onnx`` file to write.

    Returns
    -------
    onnx.ModelProto
        The model written.

    Raises
    ------
    NotImplementedError
        For a layer with no ONNX equivalent (``MedianPool2D``), naming it.
    ValueError
        When the model's input shape is not known.
    """
    onnx = onnx_module()
    graph = model.graph
    if model.input_shape is None:
        raise ValueError("the model's input shape is not known: build it with input_shape=... (or from "
                         "cnnlab.Input) before exporting")
    input_shapes = [tuple(model.input_shape)] if len(graph.inputs) == 1 else [tuple(s) for s in model.input_shape]
    shapes = graph.sample_shapes(input_shapes)
    shapes.update({id(t): s for t, s in zip(graph.inputs, input_shapes)})
    dtype = np.dtype(model.dtype)
    ctx = ExportContext(onnx, dtype)
    names = {}
    inputs = []
    for index, tensor in enumerate(graph.inputs):
        names[id(tensor)] = tensor.name or ("input" if len(graph.inputs) == 1 else f"input_{index}")
        inputs.append(onnx.helper.make_tensor_value_info(names[id(tensor)], _elem(onnx, tensor.dtype),
                                                         _dims(names[id(tensor)], shapes[id(tensor)])))
    for node in graph.nodes:
        function = EXPORTERS.get(type(node.layer))
        if function is None:
            raise NotImplementedError(f"{type(node.layer).__name__} has no ONNX equivalent; cnnlab cannot "
                                      "export a model that uses it")
        output = ctx.name(type(node.layer).__name__.lower())
        names[id(node.output)] = function(ctx, node.layer, [names[id(t)] for t in node.inputs], output,
                                          [shapes[id(t)] for t in node.inputs])
    outputs = []
    for index, tensor in enumerate(graph.outputs):
        name = "output" if len(graph.outputs) == 1 else f"output_{index}"
        ctx.nodes.append(onnx.helper.make_node("Identity", [names[id(tensor)]], [name], name=name))
        outputs.append(onnx.helper.make_tensor_value_info(name, _elem(onnx, tensor.dtype), _dims(name, shapes[id(tensor)])))
    onnx_graph = onnx.helper.make_graph(ctx.nodes, model.name or "cnnlab", inputs, outputs, ctx.initializers)
    needed = max([OPSET] + [_opset(EXPORTERS[type(node.layer)], node.layer) for node in graph.nodes])
    if opset is not None and opset < needed:
        raise ValueError(f"opset={opset}: the model's layers need opset {needed} or newer")
    # the oldest IR version of the opset, not the installed onnx package's newest: an onnxruntime
    # a release older than that package refuses a newer IR version the file does not need
    opsets = [onnx.helper.make_opsetid("", opset or needed)]
    proto = onnx.helper.make_model(onnx_graph, opset_imports=opsets, producer_name="cnnlab",
                                   ir_version=onnx.helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return proto
