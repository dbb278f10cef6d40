"""Read an ONNX file into a :class:`cnnlab.Model` built from cnnlab layers.

The graph is walked in its (topological) node order. Graph inputs that are not initializers
become :func:`cnnlab.Input` tensors; initializers and ``Constant`` nodes are NumPy arrays that
the converters fold into the layers that use them (weights, biases, clip bounds, shapes); every
other node is built by the converter registered for its op type (:mod:`cnnlab.onnx.ops`).
Anything without a converter, or an attribute value, dtype or training-mode node a converter
does not implement, is refused with :class:`NotImplementedError` naming the op type, the node
and what is unsupported: never a silently different network.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..model import Model
import numpy as np

from ..symbolic import SymbolicTensor
from . import ops  # noqa: F401  (registers the converters)
from .patterns import layer_norm_chain
from .registry import Unsupported, find, onnx_module

__all__ = ["load", "MIN_OPSET"]

MIN_OPSET = 7  # older ops' converters are registered by the opset they start at; a node a converter
# does not know (an attribute of an older version) is refused by name
_DTYPES = {1: np.float32, 11: np.float64}  # onnx.TensorProto.FLOAT, DOUBLE
#: integer and boolean graph inputs (token ids, bytes, masks), by onnx.TensorProto number
_OTHER_DTYPES = {2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_, 10: np.float16,
                 4: np.uint16, 12: np.uint32, 13: np.uint64}


def _model_proto(source):
    onnx = onnx_module()
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (bytes, bytearray)):
        return onnx.load_from_string(bytes(source))
    if isinstance(source, (str, os.PathLike)):
        if not os.path.exists(source):
            raise FileNotFoundError(f"no such ONNX file: {source}")
        try:
            return onnx.load(os.fspath(source))
        except Exception as exc:  # protobuf's DecodeError and friends
            raise ValueError(f"{source} is not a readable ONNX file: {exc}") from None
    raise TypeError(f"source must be a path, bytes or an onnx.ModelProto, got {type(source).__name__}")


class ImportContext:
    """What the converters see: constants, symbolic tensors, the node being converted."""

    def __init__(self, onnx, graph, opset, dtype):
        self.onnx = onnx
        self.opset = opset
        self.dtype = np.dtype(dtype)
        self.constants = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        self.tensors = {}
        self.node = None
        # how many nodes (or graph outputs) read each value: a constant may be folded into the
        # layer that produced a tensor only when nothing else reads that tensor
        self.uses = {}
        for node in graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        for output in graph.output:
            self.uses[output.name] = self.uses.get(output.name, 0) + 1
        self.graph_outputs = {output.name for output in graph.output}
        self.foldable = {}  # tensor name -> the layer whose bias/scale a following Add/Mul may absorb
        self.static_batch = None  # the graph inputs' batch size when the file fixes it

    def fail(self, what):
        """Refuse the current node."""
        node = self.node
        label = node.name or (node.output[0] if node.output else "?")
        raise Unsupported(f"ONNX {node.op_type} node {label!r}: {what}")

    def constant(self, value, what):
        """``value`` as a NumPy array; refuses the node when it is a computed tensor."""
        if isinstance(value, np.ndarray):
            return value
        self.fail(f"{what} must be a constant (an initializer or a Constant node), not a computed tensor")

    def weights(self, value, what):
        """A constant as an array of the model's dtype."""
        array = self.constant(value, what)
        if array.dtype.kind != "f":
            self.fail(f"{what} has dtype {array.dtype}; cnnlab imports float weights")
        return array.astype(self.dtype)

    def tensor(self, value, what):
        """``value`` as a symbolic tensor; refuses constants where a computed tensor is needed."""
        if isinstance(value, np.ndarray):
            self.fail(f"{what} is a constant; cnnlab imports it only as a layer's weights or settings")
        return value

    def dims(self, tensor):
        """The tensor's per-sample shape (without the batch axis); None for an axis known only at run time."""
        return tuple(None if d is None else int(d) for d in tuple(tensor.shape)[1:])


def _attributes(onnx, node):
    values = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        elif isinstance(value, onnx.TensorProto):
            value = onnx.numpy_helper.to_array(value)
        values[attribute.name] = value
    return values


def _graph_inputs(onnx, graph, constants):
    """(name, dtype, per-sample shape) of the graph inputs that are not initializers."""
    inputs = []
    for value in graph.input:
        if value.name in constants:
            continue
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            raise Unsupported(f"ONNX graph input {value.name!r}: a {kind}, cnnlab imports tensors only")
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type not in _DTYPES and tensor_type.elem_type not in _OTHER_DTYPES:
            name = onnx.TensorProto.DataType.Name(tensor_type.elem_type)
            raise Unsupported(f"ONNX graph input {value.name!r}: dtype {name}; cnnlab imports float, "
                              "integer and boolean inputs")
        dims = list(tensor_type.shape.dim)
        if not dims:  # a scalar (a bound, a count): no batch axis
            inputs.append((value.name, {**_DTYPES, **_OTHER_DTYPES}[tensor_type.elem_type], None))
            continue
        # an axis without a fixed size (symbolic, e.g. 'height') is known only when the model runs
        sample = [int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else None for dim in dims[1:]]
        inputs.append((value.name, {**_DTYPES, **_OTHER_DTYPES}[tensor_type.elem_type], tuple(sample)))
    return inputs


def _float_dtype_of(graph):
    """The float dtype of a graph whose inputs are integers (token ids, bytes): its float
    initializers'; float32 when it has none or they mix."""
    kinds = {t.data_type for t in graph.initializer if t.data_type in _DTYPES}
    return _DTYPES[kinds.pop()] if len(kinds) == 1 else np.float32


def _as_constant(result, foldable):
    """A computed tensor whose value is known in full before the model runs (a shape computed
    from sizes the file fixes) as that constant, for the converters that take constants."""
    value = getattr(result, "value", None)
    if not foldable or value is None or any(v is None for v in np.asarray(value, dtype=object).reshape(-1)):
        return result
    return np.asarray(np.asarray(value, dtype=object).tolist(), dtype=result.dtype).reshape(result.shape)


def _fold_constant_node(onnx, node, context, opset):
    """A node whose inputs are all constants computes a constant: evaluate it with ONNX's reference
    implementation and keep the result for the layers that use it (exporters leave such chains:
    an Identity of a shared weight, a shape computed with Concat or Cast)."""
    from onnx.reference import ReferenceEvaluator

    feeds = {name: context.constants[name] for name in node.input if name}
    inputs = [onnx.helper.make_tensor_value_info(name, onnx.helper.np_dtype_to_tensor_dtype(value.dtype),
                                                 value.shape) for name, value in feeds.items()]
    outputs = [onnx.helper.make_empty_tensor_value_info(name) for name in node.output if name]
    graph = onnx.helper.make_graph([node], "constant", inputs, outputs)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)])
    try:
        results = ReferenceEvaluator(model).run(None, feeds)
    except Exception as exc:  # the reference implementation does not know the op, or refuses it
        context.fail(f"a node of constants that could not be evaluated ({exc})")
    for name, value in zip([n for n in node.output if n], results):
        context.constants[name] = np.asarray(value)


def load(source: str | os.PathLike | bytes | Any) -> Model:
    """Build a :class:`cnnlab.Model` from an ONNX model.

    Parameters
    ----------
    source : path, bytes or onnx.ModelProto
        An ONNX model of opset 7 or newer whose ops cnnlab implements
        (``docs/onnx.md`` lists them with their attributes).

    Returns
    -------
    cnnlab.Model
        Its inputs are the graph inputs that are not initializers, in graph order (any axis
        may be symbolic; integer inputs stay integers); its outputs the graph outputs. Initializers become the layers'
        parameters (trainable: an imported network fine-tunes), constant inputs and
        ``Constant`` nodes are folded into the layers that use them.

    Raises
    ------
    NotImplementedError
        Naming the op type, the node and what is unsupported, for an op, attribute value, dtype,
        opset or training-mode node cnnlab does not implement.
    ValueError, FileNotFoundError, TypeError
        For a file that is not ONNX, a missing file, or a source of another type.
    ImportError
        When the ``onnx`` package is not installed (``pip install 'cnnlab[onnx]'``).
    """
    import cnnlab

    onnx = onnx_module()
    proto = _model_proto(source)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < MIN_OPSET:
        raise Unsupported(f"ONNX opset {opset}: cnnlab reads opset {MIN_OPSET} and newer (convert the "
                          "file with onnx.version_converter.convert_version(model, 13))")
    graph = proto.graph
    context, inputs = _context_and_inputs(onnx, graph, opset)
    producers = {name: node for node in graph.node for name in node.output if name}
    for node in graph.node:
        context.node = node
        if node.domain not in ("", "ai.onnx"):
            context.fail(f"domain {node.domain!r}; cnnlab implements the default ONNX domain only")
        if node.input and all(name == "" or name in context.constants for name in node.input):
            _fold_constant_node(onnx, node, context, opset)
            continue
        fused = _fused_chain(context, node, producers)
        _store_results(context, node, _convert_node(onnx, context, node, opset) if fused is None else (fused,))
    outputs = []
    for value in graph.output:
        if value.name in context.tensors:
            outputs.append(context.tensors[value.name])
        else:
            raise Unsupported(f"ONNX graph output {value.name!r} is a constant or is not computed; "
                              "cnnlab models compute every output from their inputs")
    if not inputs:
        raise Unsupported("the ONNX graph has no input besides its initializers")
    used = cnnlab.graph.Graph.used_inputs(inputs, outputs)
    for tensor in inputs:
        if id(tensor) not in used:
            raise Unsupported(f"ONNX graph input {tensor.name!r} reaches no output (cnnlab reads only its dtype "
                              "or nothing); cnnlab models use every input")
    return cnnlab.Model(inputs if len(inputs) > 1 else inputs[0], outputs if len(outputs) > 1 else outputs[0])


def _context_and_inputs(onnx, graph, opset):
    """The import context, and a symbolic tensor for each graph input that is not an initializer."""
    import cnnlab

    constants = {t.name for t in graph.initializer}
    declared = _graph_inputs(onnx, graph, constants)
    dtypes = {dtype for _, dtype, shape in declared if np.dtype(dtype) in (np.float32, np.float64) and shape is not None}
    if len(dtypes) > 1:
        raise Unsupported("ONNX graph inputs mix FLOAT and DOUBLE; cnnlab models have one float dtype")
    dtype = dtypes.pop() if dtypes else _float_dtype_of(graph)
    context = ImportContext(onnx, graph, opset, dtype)
    batches = {value.type.tensor_type.shape.dim[0].dim_value for value in graph.input
               if value.name not in constants and value.type.tensor_type.shape.dim
               and value.type.tensor_type.shape.dim[0].dim_value > 0}
    context.static_batch = batches.pop() if len(batches) == 1 else None  # a file exported with batch 1
    inputs = []
    for name, input_dtype, shape in declared:
        if shape is None:
            tensor = SymbolicTensor(None, input_dtype, name=name, shape=())
        else:
            tensor = cnnlab.Input(shape, dtype=np.dtype(input_dtype).name, name=name)
        context.tensors[name] = tensor
        inputs.append(tensor)
    return context, inputs


def _fused_chain(context, node, producers):
    """The tensor of a chain of nodes ending at ``node`` that imports as one layer
    (:mod:`cnnlab.onnx.patterns`: a layer normalization written as its formula), or None."""
    if node.op_type not in ("Add", "Mul", "Div"):
        return None
    try:
        return layer_norm_chain(context, node, producers)
    except (ValueError, TypeError, Unsupported):  # (a layer that refused it: the nodes import one by one)
        return None


def _convert_node(onnx, context, node, opset):
    """The results of the converter of ``node`` (a tuple), or a refusal naming it."""
    function, names = find(node.op_type, opset)
    if function is None:
        context.fail("cnnlab has no converter for this op type (docs/onnx.md lists the supported ops)")
    attributes = _attributes(onnx, node)
    unknown = sorted(set(attributes) - names)
    if unknown:
        context.fail(f"attribute(s) {', '.join(unknown)} not supported")
    arguments = []
    for name in node.input:
        if name == "":
            arguments.append(None)
        elif name in context.constants:
            arguments.append(context.constants[name])
        elif name in context.tensors:
            arguments.append(context.tensors[name])
        else:
            context.fail(f"input {name!r} is neither a graph input, an initializer nor an earlier "
                         "node's output")
    try:
        results = function(context, *arguments, **attributes)
    except TypeError as exc:
        context.fail(f"unexpected inputs ({exc})")
    except ValueError as exc:  # a layer refused the geometry or the shapes
        context.fail(str(exc))
    except (IndexError, KeyError, AttributeError) as exc:  # a case no converter foresaw: refused, named
        context.fail(f"cnnlab could not convert it ({type(exc).__name__}: {exc})")
    return results if isinstance(results, tuple) else (results,)


def _store_results(context, node, results):
    """Keep a node's results by output name: constants (values known in full) apart from tensors."""
    for index, name in enumerate(node.output):
        if not name:
            continue
        if index >= len(results) or results[index] is None:
            if context.uses.get(name):
                context.fail(f"output {index} ({name!r}) is used, and cnnlab does not compute it")
            continue
        result = _as_constant(results[index], name not in context.graph_outputs)
        store = context.constants if isinstance(result, np.ndarray) else context.tensors
        store[name] = result
        made = getattr(results[index], "node", None)
        if made is not None and made.name is None:  # run-time errors name the ONNX node
            made.name = f"{node.op_type} {node.name or name}"
