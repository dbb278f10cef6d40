"""Activation layers: ReLU and its relatives, sigmoid, tanh, softmax."""

from __future__ import annotations

from .. import functional as F
from ..functional.activation import bound_softmax
from ..shapes import check_int
from ..types import Array
from .base import Layer, prepared_elementwise, same_kind_out


def _held(layer, value):
    """``value``, a layer's ``fused_activation()``, or the equal tuple it gave last time: the same
    object call after call while the layer's parameters stay the same, so that a bound
    convolution (``cnnlab.functional.conv.BoundConv2d.accepts``) compares it by identity. A new
    tuple at every step sent its check down the comparison by value, twice as long."""
    last = layer.__dict__.get("_fused_activation")
    if last == value:
        return last
    layer._fused_activation = value
    return value


def _prepared_softmax(layer, x, out, log):
    """:meth:`Layer.prepared_forward` of :class:`Softmax` (``log``: :class:`LogSoftmax`) along
    its ``axis``, which is watched."""
    run = bound_softmax(x, layer.axis, log=log) if same_kind_out(x, out) else None
    return None if run is None else (run, ((vars(layer), "axis", layer.axis),), ())


class ReLU(Layer):
    """``max(x, 0)``, the textbook activation after every convolution."""

    returns_new_array = True

    def fused_activation(self) -> str | tuple | None:
        return "relu"

    def forward(self, x: Array, training: bool = False) -> Array:
        if training:
            self.saved = x
        return F.relu(x)

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the element-wise kernel call (:func:`prepared_elementwise`)."""
        return prepared_elementwise(self, F.relu, x, out)

    def backward(self, grad_out: Array) -> Array:
        return F.relu_backward(self._need_saved(), grad_out)


class LeakyReLU(Layer):
    """``x`` for positive ``x``, ``negative_slope * x`` otherwise."""

    returns_new_array = True

    def fused_activation(self) -> str | tuple | None:
        return _held(self, ("leaky_relu", self.negative_slope))

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x: Array, training: bool = False) -> Array:
        if training:
            self.saved = x
        return F.leaky_relu(x, self.negative_slope)

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the element-wise kernel call (:func:`prepared_elementwise`)."""
        return prepared_elementwise(self, F.leaky_relu, x, out, negative_slope=self.negative_slope)

    def backward(self, grad_out: Array) -> Array:
        return F.leaky_relu_backward(self._need_saved(), grad_out, self.negative_slope)

    def config(self) -> dict:
        return dict(negative_slope=self.negative_slope)


class Sigmoid(Layer):
    """Logistic sigmoid."""

    returns_new_array = True

    def fused_activation(self) -> str | tuple | None:
        return "sigmoid"

    def forward(self, x: Array, training: bool = False) -> Array:
        out = F.sigmoid(x)
        if training:
            self.saved = out
        return out

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the element-wise kernel call (:func:`prepared_elementwise`)."""
        return prepared_elementwise(self, F.sigmoid, x, out)

    def backward(self, grad_out: Array) -> Array:
        return F.sigmoid_backward(self._need_saved(), grad_out)


class Tanh(Layer):
    """Hyperbolic tangent."""

    returns_new_array = True

    def fused_activation(self) -> str | tuple | None:
        return "tanh"

    def forward(self, x: Array, training: bool = False) -> Array:
        out = F.tanh(x)
        if training:
            self.saved = out
        return out

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the element-wise kernel call (:func:`prepared_elementwise`)."""
        return prepared_elementwise(self, F.tanh, x, out)

    def backward(self, grad_out: Array) -> Array:
        return F.tanh_backward(self._need_saved(), grad_out)


class Softmax(Layer):
    """Softmax along ``axis`` (class probabilities).  As the last layer of a model trained with
    cross-entropy, the model feeds the loss the logits before it (fused and stable)."""

    outputs_probabilities = True

    returns_new_array = True

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = check_int("axis", axis)

    def forward(self, x: Array, training: bool = False) -> Array:
        out = F.softmax(x, self.axis)
        if training:
            self.saved = out
        return out

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the softmax kernel call with its axis checked once."""
        return _prepared_softmax(self, x, out, log=False)

    def backward(self, grad_out: Array) -> Array:
        return F.softmax_backward(self._need_saved(), grad_out, self.axis)

    def config(self) -> dict:
        return dict(axis=self.axis)


class LogSoftmax(Layer):
    """Log-softmax along ``axis`` (log-probabilities; stable for huge logits), as
    :func:`cnnlab.functional.log_softmax`."""

    returns_new_array = True

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = check_int("axis", axis)

    def forward(self, x: Array, training: bool = False) -> Array:
        out = F.log_softmax(x, self.axis)
        if training:
            self.saved = out
        return out

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the softmax kernel call with its axis checked once."""
        return _prepared_softmax(self, x, out, log=True)

    def backward(self, grad_out: Array) -> Array:
        return F.log_softmax_backward(self._need_saved(), grad_out, self.axis)

    def config(self) -> dict:
        return dict(axis=self.axis)


class _ElementwiseActivation(Layer):
    """An activation whose backward needs the forward input: ``forward_op(x, **arguments)``
    and ``backward_op(x, grad_out, **arguments)``."""

    returns_new_array = True

    forward_op = backward_op = None

    def _arguments(self):
        return {}

    def forward(self, x: Array, training: bool = False) -> Array:
        if training:
            self.saved = x
        return type(self).forward_op(x, **self._arguments())

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the element-wise kernel call (:func:`prepared_elementwise`)."""
        return prepared_elementwise(self, type(self).forward_op, x, out, **self._arguments())

    def backward(self, grad_out: Array) -> Array:
        return type(self).backward_op(self._need_saved(), grad_out, **self._arguments())

    def config(self) -> dict:
        return self._arguments()


class ReLU6(_ElementwiseActivation):
    """``min(max(x, 0), 6)`` (MobileNet); gradient 1 strictly inside (0, 6), as PyTorch."""

    def fused_activation(self) -> str | tuple | None:
        return "relu6"

    forward_op = staticmethod(F.relu6)
    backward_op = staticmethod(F.relu6_backward)


class Clip(_ElementwiseActivation):
    """``min(max(x, min), max)``; ``None`` leaves a side open.  Gradient 1 strictly inside."""

    def fused_activation(self) -> str | tuple | None:
        return _held(self, ("clip", self.min, self.max))

    forward_op = staticmethod(F.clip)
    backward_op = staticmethod(F.clip_backward)

    def __init__(self, min: float | None = None, max: float | None = None) -> None:
        super().__init__()
        low, high = F.clip_bounds(min, max)
        self.min = None if min is None else low
        self.max = None if max is None else high

    def _arguments(self):
        return dict(min=self.min, max=self.max)


class HardSigmoid(_ElementwiseActivation):
    """``max(0, min(1, alpha * x + beta))``; the defaults are PyTorch's ``relu6(x + 3) / 6``."""

    def fused_activation(self) -> str | tuple | None:
        return _held(self, ("hardsigmoid", self.alpha, self.beta))

    forward_op = staticmethod(F.hardsigmoid)
    backward_op = staticmethod(F.hardsigmoid_backward)

    def __init__(self, alpha: float = 1 / 6, beta: float = 0.5) -> None:
        super().__init__()
        self.alpha = F.as_number("alpha", alpha)
        self.beta = F.as_number("beta", beta)

    def _arguments(self):
        return dict(alpha=self.alpha, beta=self.beta)


class HardSwish(_ElementwiseActivation):
    """``x * relu6(x + 3) / 6`` (MobileNetV3)."""

    def fused_activation(self) -> str | tuple | None:
        return "hardswish"

    forward_op = staticmethod(F.hardswish)
    backward_op = staticmethod(F.hardswish_backward)


class SiLU(_ElementwiseActivation):
    """``x * sigmoid(x)``, also called swish (EfficientNet)."""

    def fused_activation(self) -> str | tuple | None:
        return "silu"

    forward_op = staticmethod(F.silu)
    backward_op = staticmethod(F.silu_backward)
