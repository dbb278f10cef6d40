"""One registry from ONNX op type to the function that builds cnnlab layers for it.

A converter is a function decorated with :func:`converter`. It receives the import context and
the node's inputs (symbolic tensors, or NumPy arrays for constant inputs), with the node's
attributes as keyword arguments whose defaults are the ONNX specification's; it returns the
node's output tensor (or a tuple of them). Adding an op is one decorated function and one test
against onnxruntime or the ONNX reference cases.

>>> from cnnlab.onnx.registry import CONVERTERS
>>> 'Conv' in CONVERTERS and 'Relu' in CONVERTERS
True
"""

import inspect

__all__ = ["CONVERTERS", "converter", "onnx_module", "Unsupported"]

CONVERTERS = {}


class Unsupported(NotImplementedError):
    """An ONNX node cnnlab cannot import: names the op type, the node and what is unsupported."""


def converter(op_type, since=1):
    """Register ``function`` as the converter of ``op_type`` for opsets ``since`` and newer.

    The attributes a converter does not take as keyword arguments are refused at load time.
    """
    def register(function):
        parameters = inspect.signature(function).parameters
        attributes = {name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        CONVERTERS.setdefault(op_type, []).append((since, function, attributes))
        CONVERTERS[op_type].sort(key=lambda entry: entry[0])
        return function
    return register


def find(op_type, opset):
    """The newest converter of ``op_type`` not newer than ``opset``, with its attribute names."""
    entries = [(since, function, attributes) for since, function, attributes in CONVERTERS.get(op_type, [])
               if since <= opset]
    return entries[-1][1:] if entries else (None, None)


def onnx_module():
    """The ``onnx`` package, imported on first use (the ``onnx`` extra)."""
    try:
        import onnx
    except ImportError:  # pragma: no cover - depends on the installation
        raise ImportError("cnnlab.onnx needs the onnx package: pip install 'cnnlab[onnx]'") from None
    return onnx
