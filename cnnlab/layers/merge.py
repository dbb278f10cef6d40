"""Layers that merge several inputs: :class:`Add`, :class:`Multiply`, :class:`Concatenate`; and an input
with a learnable array: :class:`Bias`, :class:`Scale`."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..functional.normalization import bound_channel_affine
from ..shapes import broadcast_shapes, check_int
from ..types import Array, DTypeLike, Sequence
from .base import Layer, float_dtype, same_kind_out


class _MergeLayer(Layer):
    """A layer of several inputs: ``forward(inputs)`` takes a list of arrays and
    ``backward(grad_out)`` returns a list of gradients, one per input."""

    takes_list = True

    def _check_inputs(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"{type(self).__name__} takes a list of arrays, got {type(inputs).__name__}")
        if len(inputs) < 2:
            raise ValueError(f"{type(self).__name__} takes at least 2 inputs, got {len(inputs)}")
        return list(inputs)

    def _check_shapes(self, shapes):
        shapes = self._check_inputs(shapes)
        return [tuple(s) for s in shapes]


def _prepared_pair(op, inputs, out):
    """:meth:`Layer.prepared_forward` of a binary op on two inputs (``op``: ``"add"`` or
    ``"multiply"``), or None."""
    if len(inputs) != 2 or type(out) is not np.ndarray or not out.flags.c_contiguous or out.dtype != inputs[0].dtype:
        return None
    run = F.merge.bound_binary(op, inputs[0], inputs[1])
    if run is None or out.shape != np.broadcast_shapes(inputs[0].shape, inputs[1].shape):
        return None

    def prepared(inputs, out):
        return run(inputs[0], inputs[1], out)
    return prepared, (), ()


def _broadcast_result(name, shapes):
    """The shape every one of ``shapes`` broadcasts against, which must be one of them."""
    try:
        result = broadcast_shapes(*shapes)
    except ValueError:
        result = None
    if result not in shapes:
        raise ValueError(f"{name} inputs of shapes {shapes} do not broadcast against one of them")
    return result


class Add(_MergeLayer):
    """Sum of 2 or more inputs (the ResNet shortcut); each may broadcast against the largest."""

    returns_new_array = True

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        inputs = self._check_inputs(inputs)
        out = inputs[0]
        for other in inputs[1:]:
            out = F.add(out, other)
        if training:
            self.saved = inputs
        return out

    def backward(self, grad_out: Array) -> list[Array]:
        # each input's gradient is grad_out summed over the axes that input was broadcast along:
        # grad_out itself for an input of the output's shape (a ResNet shortcut), shared, as no
        # backward writes into the gradient it is given (a copy of each cost ResNet-18's
        # training step at batch 16 about 140 ms)
        shape = tuple(grad_out.shape)
        return [grad_out if tuple(x.shape) == shape else F.add_backward(grad_out, x, grad_out)[1]
                for x in self._need_saved()]

    def output_shape(self, input_shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
        return _broadcast_result("Add", self._check_shapes(input_shapes))

    def prepared_forward(self, inputs, out):
        """:meth:`Layer.prepared_forward`: two inputs, :func:`cnnlab.functional.add`'s kernel call
        with its checks made once (the layer reads nothing else)."""
        return _prepared_pair("add", inputs, out)


class Multiply(_MergeLayer):
    """Product of 2 inputs; one may broadcast against the other, as a squeeze-excitation gate
    (N, C, 1, 1) against feature maps (N, C, H, W)."""

    returns_new_array = True

    def _check_inputs(self, inputs):
        inputs = super()._check_inputs(inputs)
        if len(inputs) != 2:
            raise ValueError(f"Multiply takes exactly 2 inputs, got {len(inputs)}")
        return inputs

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        a, b = self._check_inputs(inputs)
        if training:
            self.saved = (a, b)
        return F.multiply(a, b)

    def backward(self, grad_out: Array) -> list[Array]:
        return list(F.multiply_backward(*self._need_saved(), grad_out))

    def prepared_forward(self, inputs, out):
        """:meth:`Layer.prepared_forward`: :func:`cnnlab.functional.multiply`'s kernel call with
        its checks made once (the layer reads nothing else)."""
        return _prepared_pair("multiply", inputs, out)

    def output_shape(self, input_shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
        return _broadcast_result("Multiply", self._check_shapes(input_shapes))


class Concatenate(_MergeLayer):
    """Join 2 or more inputs along ``axis`` (of the batched arrays: 1 is the channel axis of
    NCHW; negative values count from the end; the batch axis 0 is not allowed)."""

    returns_new_array = True

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = check_int("axis", axis)
        if self.axis == 0:
            raise ValueError("axis=0 is the batch axis; Concatenate joins along a per-sample axis")

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        inputs = self._check_inputs(inputs)
        out = F.concatenate(inputs, self.axis)
        if training:
            self.saved = [int(x.shape[self.axis]) for x in inputs]
        return out

    def prepared_forward(self, inputs, out):
        """:meth:`Layer.prepared_forward`: :func:`cnnlab.functional.concatenate`'s kernel calls
        with their checks made once (the axis watched)."""
        if type(out) is not np.ndarray or not out.flags.c_contiguous or not isinstance(inputs, (list, tuple)) \
                or len(inputs) < 2 or getattr(inputs[0], "dtype", None) != out.dtype:
            return None
        run = F.merge.bound_concatenate(inputs, self.axis)
        return None if run is None else (run, ((vars(self), "axis", self.axis),), ())

    def backward(self, grad_out: Array) -> list[Array]:
        return F.concatenate_backward(grad_out, self._need_saved(), self.axis)

    def output_shape(self, input_shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
        shapes = self._check_shapes(input_shapes)
        first = shapes[0]
        axis = self.axis - 1 if self.axis > 0 else self.axis  # per-sample shapes have no batch axis
        if not -len(first) <= axis < len(first):
            raise ValueError(f"axis={self.axis} is out of range for per-sample shapes {shapes}")
        axis %= len(first)
        for shape in shapes[1:]:
            if len(shape) != len(first) or any(m != n and m is not None and n is not None
                                               for k, (m, n) in enumerate(zip(shape, first)) if k != axis):
                raise ValueError(f"Concatenate(axis={self.axis}) inputs must match except along that "
                                 f"axis, got shapes {shapes}")
        joined = [s[axis] for s in shapes]
        along = None if None in joined else sum(joined)
        others = [next((s[k] for s in shapes if s[k] is not None), None) for k in range(len(first))]
        return tuple(others[:axis]) + (along,) + tuple(others[axis + 1:])

    def config(self) -> dict:
        return dict(axis=self.axis)


class _ConstantOperand(Layer):
    """An element-wise op of the input and a learnable array (``weight``) that broadcasts against
    each sample, NumPy's way; ``value`` may also carry a leading batch axis of 1 (as ONNX
    constants do), which is dropped. The output has the input's shape."""

    returns_new_array = True
    op = op_backward = None
    op_name = None  # (the functional op's name, for bound_binary)

    def __init__(self, value: Array | None = None, *, shape: Sequence[int] | None = None,
                 dtype: DTypeLike = "float32") -> None:
        super().__init__()
        if (value is None) == (shape is None):
            raise TypeError(f"{type(self).__name__} takes value (an array) or shape, one of them")
        self.dtype = float_dtype(dtype)
        array = np.zeros(tuple(shape), self.dtype) if value is None else np.array(value, dtype=self.dtype)
        self.params["weight"] = array

    def _value_shape(self, sample_shape):
        value = tuple(self.params["weight"].shape)
        if len(value) == len(sample_shape) + 1 and value[0] == 1:
            value = value[1:]
        return value

    def forward(self, x: Array, training: bool = False) -> Array:
        x = self.prepare(x)
        value = self.params["weight"]
        shape = self._value_shape(tuple(x.shape[1:]))
        value = value.reshape(shape)
        if training:
            self.saved = (x, value)
        return type(self).op(x, value)

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the op's kernel call with its checks made once, on a
        view of this layer's ``weight`` (watched; read at each call: edits in place are seen)."""
        weight = self.params.get("weight")
        if type(x) is not np.ndarray or x.dtype != self.dtype or type(weight) is not np.ndarray \
                or not weight.flags.c_contiguous or type(out) is not np.ndarray or out.shape != x.shape \
                or out.dtype != x.dtype or not out.flags.c_contiguous:
            return None
        value = weight.reshape(self._value_shape(tuple(x.shape[1:])))  # (a view: the live array)
        run = F.merge.bound_binary(type(self).op_name, x, value)
        if run is None or np.broadcast_shapes(x.shape, value.shape) != x.shape:
            return None

        def prepared(x, out):
            return run(x, value, out)
        return prepared, ((self.params, "weight", weight),), ()

    def backward(self, grad_out: Array) -> Array:
        x, value = self._need_saved()
        grad_x, grad_value = type(self).op_backward(x, value, grad_out)
        self.grads["weight"] = grad_value.reshape(tuple(self.params["weight"].shape))
        return grad_x

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        value = self._value_shape(tuple(input_shape))
        try:
            result = broadcast_shapes(tuple(input_shape), value)
        except ValueError:
            result = None
        if result is None or len(value) > len(input_shape) or any(
                r != s and s is not None for r, s in zip(result, input_shape)):
            raise ValueError(f"{type(self).__name__}'s value of shape {tuple(self.params['weight'].shape)} does not "
                             f"broadcast against samples of shape {tuple(input_shape)}")
        return tuple(input_shape)

    def config(self) -> dict:
        return dict(shape=list(self.params["weight"].shape), dtype=self.dtype.name)


class Bias(_ConstantOperand):
    """``x + weight``: a learnable array added to each sample (``weight`` broadcasts against it),
    e.g. an ONNX ``Add`` of a constant that no convolution before it can take."""

    op = staticmethod(F.add)
    op_backward = staticmethod(F.add_backward)
    op_name = "add"


class Scale(_ConstantOperand):
    """``x * weight``: each sample multiplied by a learnable array that broadcasts against it
    (a layer scale, an ONNX ``Mul`` by a constant)."""

    op = staticmethod(F.multiply)
    op_backward = staticmethod(F.multiply_backward)
    op_name = "multiply"


class Affine(Layer):
    """``x * weight[c] + bias[c]`` per channel ``c`` of ``(N, C, ...)`` input (learnable, ``weight``
    1 and ``bias`` 0 to start): a Scale and a Bias in one pass (:func:`cnnlab.functional.channel_affine`),
    as ONNX imports write a per-channel ``Mul`` followed by an ``Add``."""

    returns_new_array = True

    def __init__(self, num_channels: int, dtype: DTypeLike = "float32") -> None:
        super().__init__()
        self.num_channels = check_int("num_channels", num_channels, 1)
        self.dtype = float_dtype(dtype)
        self.params["weight"] = np.ones(self.num_channels, self.dtype)
        self.params["bias"] = np.zeros(self.num_channels, self.dtype)

    def forward(self, x: Array, training: bool = False) -> Array:
        x = self.prepare(x)
        if training:
            self.saved = x
        return F.channel_affine(x, self.params["weight"], self.params["bias"])

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: :func:`cnnlab.functional.channel_affine`'s kernel call
        with its checks made once (the parameters read at each call, their arrays watched)."""
        if not same_kind_out(x, out):
            return None
        weight, bias = self.params["weight"], self.params["bias"]
        run = bound_channel_affine(x, weight, bias)
        return None if run is None else (run, ((self.params, "weight", weight), (self.params, "bias", bias)), ())

    def backward(self, grad_out: Array) -> Array:
        grad_x, self.grads["weight"], self.grads["bias"] = F.channel_affine_backward(
            self._need_saved(), self.params["weight"], grad_out)
        return grad_x

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not input_shape or input_shape[0] not in (None, self.num_channels):
            raise ValueError(f"Affine({self.num_channels}) expects ({self.num_channels}, ...) samples, "
                             f"got {tuple(input_shape)}")
        return tuple(input_shape)

    def config(self) -> dict:
        return dict(num_channels=self.num_channels, dtype=self.dtype.name)
