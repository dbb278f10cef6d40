"""Symbolic tensors and nodes: what calling a layer on a tensor from :func:`Input` builds.

Calling a layer on a symbolic tensor adds a :class:`Node`: one call of that layer, which records
the tensors it consumes and the tensor it produces, and infers the output shape with the
layer's ``output_shape``. This module knows no layer class: the layers (above it) call
:func:`call_layer`, and :mod:`cnnlab.graph` (above them) runs the nodes.
"""

from __future__ import annotations

import numpy as np

from .checks import check_float_dtype

__all__ = ["Input", "SymbolicTensor", "Node", "call_layer", "is_symbolic"]


class SymbolicTensor:
    """A placeholder for the batch of values a node produces (or a model takes).

    Attributes
    ----------
    shape : tuple or None
        ``(None, *sample_shape)``; None when the sample shape is not known yet (a
        ``Sequential`` built without ``input_shape``).
    dtype : numpy.dtype
    node : Node or None
        The node that produces it; None for a model input.
    name : str or None
    """

    def __init__(self, sample_shape, dtype, node=None, name=None):
        self.sample_shape = None if sample_shape is None else tuple(None if s is None else int(s) for s in sample_shape)
        self.dtype = np.dtype(dtype)
        self.node = node
        self.name = name

    @property
    def shape(self):
        return None if self.sample_shape is None else (None,) + self.sample_shape

    def __repr__(self):
        source = "input" if self.node is None else type(self.node.layer).__name__
        name = f"{self.name!r}, " if self.name else ""
        return f"SymbolicTensor({name}shape={self.shape}, dtype={self.dtype.name}, from {source})"


def is_symbolic(value):
    return isinstance(value, SymbolicTensor)


def Input(shape, dtype="float32", name=None):
    """A model input: a symbolic batch of samples of ``shape`` (the batch axis is None).

    Parameters
    ----------
    shape : tuple of int or None
        One sample's shape, e.g. ``(3, 32, 32)``; None for an axis whose size is known only when
        the model runs: ``(3, None, None)`` takes images of any size (a fully convolutional
        network, or a classifier that ends in global pooling).
    dtype : 'float32' or 'float64'
    name : str or None

    Returns
    -------
    SymbolicTensor
        Call layers on it to build a graph, then ``cnnlab.Model(inputs, outputs)``.
    """
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not shape:
        raise TypeError(f"shape must be a non-empty tuple of integers (one sample's shape), got {shape!r}")
    if any(s is not None and (isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1) for s in shape):
        raise ValueError(f"shape must hold positive integers or None (no batch axis), got {tuple(shape)}")
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
        if any(t.sample_shape is None for t in self.inputs):
            shape = None
        else:
            shapes = [t.sample_shape for t in self.inputs]
            try:
                shape = layer.output_shape(shapes if takes_list else shapes[0])
            except (ValueError, TypeError) as exc:
                shown = [t.shape for t in self.inputs] if takes_list else self.inputs[0].shape
                raise type(exc)(f"{type(layer).__name__} cannot take an input of shape {shown}: {exc}") from None
        dtype = layer.dtype if layer.dtype is not None else self.inputs[0].dtype
        self.output = SymbolicTensor(shape, dtype, node=self)

    def apply(self, step, values):
        """``step(values)`` in the call form of this node: a list or the one value."""
        return step(values if self.takes_list else values[0])


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
