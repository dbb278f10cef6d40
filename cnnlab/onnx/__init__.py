"""Read networks exported from PyTorch, Keras or any ONNX tool (needs the ``onnx`` extra).

>>> import cnnlab.onnx
>>> sorted(cnnlab.onnx.supported_ops())[:3]
['Add', 'AveragePool', 'BatchNormalization']

``cnnlab.onnx.load(path_or_bytes_or_ModelProto)`` returns a :class:`cnnlab.Model`;
``docs/onnx.md`` lists the ops and attributes, and how to export a model from PyTorch.
"""

from .importer import MIN_OPSET, load
from .registry import CONVERTERS, Unsupported

__all__ = ["load", "supported_ops", "Unsupported", "MIN_OPSET"]


def supported_ops():
    """The ONNX op types cnnlab imports."""
    return set(CONVERTERS)
