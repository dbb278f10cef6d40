"""Read networks exported from PyTorch, Keras or any ONNX tool (needs the ``onnx`` extra).

>>> import cnnlab.onnx
>>> sorted(cnnlab.onnx.supported_ops())[:3]
['Add', 'AveragePool', 'BatchNormalization']

``cnnlab.onnx.load(path_or_bytes_or_ModelProto)`` returns a :class:`cnnlab.Model`;
``cnnlab.onnx.save(model, path)`` writes one that onnxruntime runs to the same outputs;
``docs/onnx.md`` lists the ops and attributes, and how to export a model from PyTorch.
"""

from . import (
    elementwise,  # the element-wise math layers' converters and exporters
    tensor_ops,  # the converters of whole tensors (registered last: they extend the others)
)
from .exporter import save
from .importer import MIN_OPSET, load
from .registry import CONVERTERS, Unsupported

__all__ = ["load", "save", "supported_ops", "Unsupported", "MIN_OPSET"]


def supported_ops() -> set[str]:
    """The ONNX op types cnnlab imports."""
    return set(CONVERTERS)
