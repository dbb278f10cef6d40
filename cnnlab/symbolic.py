"""Symbolic tensors and nodes: what calling a layer on a tensor from :func:`Input` builds.

Calling a layer on a symbolic tensor adds a :class:`Node`: one call of that layer, which records
the tensors it consumes and the tensor it produces, and infers the output shape with the
layer's ``output_shape``. This module knows no layer class: the layers (above it) call
:func:`call_layer`, and :mod:`cnnlab.graph` (above them) runs the nodes.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .checks import check_float_dtype
from .dispatch import register_symbolic_type

__all__ = ["Input", "SymbolicTensor", "TensorSpec", "Node", "call_layer", "is_symbolic"]


class TensorSpec(NamedTuple):
    """What is known of a tensor before the model runs: its ``shape`` (None for an axis known
    only at run time; None for the whole shape when even the rank is unknown), its ``dtype``,
    and its ``value`` when some of it is known (a NumPy object array of the tensor's shape whose
    entries are ints, floats or None: the shape vectors a network computes from its input's
    shape, e.g. ``[None, 3, None, None]`` for ``Shape`` of a batch of RGB images)."""

    shape: tuple | None
    dtype: np.dtype
    value: np.ndarray | None = None


class SymbolicTensor:
    """A placeholder for the values a node produces (or a model takes).

    Attributes
    ----------
    shape : tuple or None
        The whole shape, None for an axis known only when the model runs: ``(None, 3, 32, 32)``
        for a model input of RGB 32×32 images (the batch axis first, of any size). A tensor a
        network computes from shapes has no batch axis (``Shape`` of an image batch: ``(4,)``).
        None when not even the rank is known yet (a ``Sequential`` built without
        ``input_shape``).
    sample_shape : tuple or None
        ``shape[1:]``: one sample's shape, for a tensor whose first axis is the batch axis.
    dtype : numpy.dtype
        Any NumPy dtype: float images and activations, integer shapes and indices, booleans.
    value : numpy.ndarray or None
        What is known of the value before the model runs (see :class:`TensorSpec`).
    node : Node or None
        The node that produces it; None for a model input.
    name : str or None
    """

    def __init__(self, sample_shape, dtype, node=None, name=None, *, shape=None, value=None):
        if shape is None and sample_shape is not None:
            shape = (None,) + tuple(sample_shape)
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.value = value
        self.node = node
        self.name = name

    @property
    def shape(self):
        return self._shape

    @shape.setter
    def shape(self, shape):
        self._shape = None if shape is None else tuple(None if s is None else int(s) for s in shape)

    @property
    def sample_shape(self):
        return None if self._shape is None else self._shape[1:]

    @sample_shape.setter
    def sample_shape(self, sample_shape):
        first = None if not self._shape else self._shape[0]
        self.shape = None if sample_shape is None else (first,) + tuple(sample_shape)

    @property
    def spec(self):
        return TensorSpec(self._shape, self.dtype, self.value)

    def __repr__(self):
        source = "input" if self.node is None else type(self.node.layer).__name__
        name = f"{self.name!r}, " if self.name else ""
        return f"SymbolicTensor({name}shape={self.shape}, dtype={self.dtype.name}, from {source})"


register_symbolic_type(SymbolicTensor)  # cnnlab.functional's ops build nodes from these


def is_symbolic(value):
    return isinstance(value, SymbolicTensor)


def _is_dtype(value):
    try:
        np.dtype(value)
    except TypeError:
        return False
    return value is not None


def Input(shape, dtype="float32", name=None):
    """A model input: a symbolic batch of samples of ``shape`` (the batch axis is None).

    Parameters
    ----------
    shape : tuple of int or None
        One sample's shape, e.g. ``(3, 32, 32)``; None for an axis whose size is known only when
        the model runs: ``(3, None, None)`` takes images of any size (a fully convolutional
        network, or a classifier that ends in global pooling).
    dtype : 'float32', 'float64', or an integer or boolean dtype
        Integer inputs carry token ids, bytes or indices (a network turns them into floats).
    name : str or None

    Returns
    -------
    SymbolicTensor
        Call layers on it to build a graph, then ``cnnlab.Model(inputs, outputs)``.
    """
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"shape must be a tuple of integers (one sample's shape; () for scalars), got {shape!r}")
    if any(s is not None and (isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1) for s in shape):
        raise ValueError(f"shape must hold positive integers or None (no batch axis), got {tuple(shape)}")
    if _is_dtype(dtype) and (np.dtype(dtype).kind in "iub" or np.dtype(dtype) == np.float16):
        dtype = np.dtype(dtype)  # token ids, bytes, masks; half precision (only casts take it)
    else:
        dtype = check_float_dtype(dtype)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string or None, got {name!r}")
    return SymbolicTensor(shape, dtype, name=name)


class Node:
    """One call of ``layer``: it consumes ``inputs`` and produces ``output``.

    ``takes_list`` says whether the layer was given a list (merge layers: ``forward`` takes a
    list of arrays and ``backward`` returns a list of gradients)."""

    def __init__(self, layer, inputs, takes_list):
        self.layer = layer
        self.inputs = list(inputs)
        self.takes_list = takes_list
        self.name = None  # e.g. the ONNX node it was imported from: run-time errors name it
        try:
            spec = self.infer([t.spec for t in self.inputs])
        except (ValueError, TypeError) as exc:
            shown = [t.shape for t in self.inputs] if takes_list else self.inputs[0].shape
            raise type(exc)(f"{type(layer).__name__} cannot take an input of shape {shown}: {exc}") from None
        self.output = SymbolicTensor(None, spec.dtype, node=self, shape=spec.shape, value=spec.value)

    def infer(self, specs):
        """The :class:`TensorSpec` of this node's output for its inputs' ``specs``.

        A layer whose class declares ``whole_tensors`` infers it itself (``output_spec``, on whole
        shapes: its axes count the batch axis). Any other layer sees one sample's shape (its
        ``output_shape``) and keeps its first input's first axis: the batch axis."""
        layer = self.layer
        if layer.whole_tensors:
            return layer.output_spec(specs if self.takes_list else specs[0])
        if layer.passes_through and not self.takes_list:
            return specs[0]  # any tensor, as it is
        dtype = layer.dtype if layer.dtype is not None else specs[0].dtype
        floats = (np.float32, np.float64)
        if not layer.any_dtype and any(spec.dtype not in floats for spec in specs):
            found = ", ".join(sorted({spec.dtype.name for spec in specs if spec.dtype not in floats}))
            raise ValueError(f"{type(layer).__name__} takes float32 and float64 tensors, got {found}")
        if any(spec.shape is None for spec in specs):
            return TensorSpec(None, dtype)
        if any(len(spec.shape) == 0 for spec in specs):
            raise ValueError("a 0-d tensor has no batch axis")
        samples = [spec.shape[1:] for spec in specs]
        shape = layer.output_shape(samples if self.takes_list else samples[0])
        return TensorSpec((specs[0].shape[0],) + tuple(None if s is None else int(s) for s in shape), dtype)

    def apply(self, step, values):
        """``step(values)`` in the call form of this node: a list or the one value. A named node's
        ``ValueError`` (inputs that do not fit, seen when the model runs) names the node."""
        if self.name is None:
            return step(values if self.takes_list else values[0])
        try:
            return step(values if self.takes_list else values[0])
        except ValueError as exc:
            shapes = [tuple(v.shape) for v in values]
            raise ValueError(f"{type(self.layer).__name__} node {self.name!r} (inputs of shapes "
                             f"{shapes if self.takes_list else shapes[0]}): {exc}") from None


def call_layer(layer, inputs):
    """What ``layer(inputs)`` does: add a node on symbolic ``inputs``, return its output."""
    takes_list = isinstance(inputs, (list, tuple))
    items = list(inputs) if takes_list else [inputs]
    name = type(layer).__name__
    for i, item in enumerate(items):
        if not is_symbolic(item):
            where = f"inputs[{i}]" if takes_list else "its input"
            raise TypeError(f"{name} was called on {type(item).__name__} ({where}): call a layer on symbolic "
                            "tensors from cnnlab.Input to build a model, or run it on arrays with "
                            "layer.forward(x)")
    if takes_list != layer.takes_list:
        wanted = "a list of symbolic tensors" if layer.takes_list else "one symbolic tensor"
        raise TypeError(f"{name} takes {wanted}, got {'a list' if takes_list else 'one tensor'}")
    if not items:
        raise ValueError(f"{name} was called on an empty list")
    return Node(layer, items, takes_list).output


def as_tensor_list(name, value):
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"{name} is empty: pass one symbolic tensor or a list of them")
    for i, item in enumerate(items):
        if not is_symbolic(item):
            raise TypeError(f"{name}[{i}] must be a symbolic tensor (from cnnlab.Input or a layer call), "
                            f"got {type(item).__name__}")
    return items
