"""Element-wise math layers: one input (:class:`Sqrt`, :class:`Exp`, :class:`Log`, :class:`Erf`,
:class:`Reciprocal`, :class:`Abs`, :class:`Neg`, :class:`Floor`, :class:`Ceil`, :class:`GELU`),
two inputs that broadcast against each other (:class:`Subtract`, :class:`Divide`,
:class:`Power`, :class:`Maximum`, :class:`Minimum`), and one input with a constant array
(:class:`ElementwiseConstant`)."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..shapes import broadcast_shapes
from ..types import Array, DTypeLike, Sequence
from .base import Layer, float_dtype, prepared_elementwise, reshape_array


class _Unary(Layer):
    """``forward_op(x, **arguments)``, differentiated by ``backward_op(x, grad_out, **arguments)``
    from the saved forward input."""

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


class Sqrt(_Unary):
    """``sqrt(x)`` (NaN below 0)."""

    forward_op = staticmethod(F.sqrt)
    backward_op = staticmethod(F.sqrt_backward)


class Exp(_Unary):
    """``exp(x)``."""

    forward_op = staticmethod(F.exp)
    backward_op = staticmethod(F.exp_backward)


class Log(_Unary):
    """``log(x)`` (-inf at 0, NaN below)."""

    forward_op = staticmethod(F.log)
    backward_op = staticmethod(F.log_backward)


class Erf(_Unary):
    """The error function."""

    forward_op = staticmethod(F.erf)
    backward_op = staticmethod(F.erf_backward)


class Reciprocal(_Unary):
    """``1 / x``."""

    forward_op = staticmethod(F.reciprocal)
    backward_op = staticmethod(F.reciprocal_backward)


class Abs(_Unary):
    """``|x|`` (gradient 0 at 0)."""

    forward_op = staticmethod(F.abs)
    backward_op = staticmethod(F.abs_backward)


class Neg(_Unary):
    """``-x``."""

    forward_op = staticmethod(F.neg)
    backward_op = staticmethod(F.neg_backward)


class Floor(_Unary):
    """``floor(x)`` (gradient 0)."""

    forward_op = staticmethod(F.floor)
    backward_op = staticmethod(F.floor_backward)


class Ceil(_Unary):
    """``ceil(x)`` (gradient 0)."""

    forward_op = staticmethod(F.ceil)
    backward_op = staticmethod(F.ceil_backward)


class GELU(_Unary):
    """Gaussian error linear unit, ``x * Phi(x)`` (``approximate='none'``) or PyTorch's tanh form
    (``approximate='tanh'``), as :func:`cnnlab.functional.gelu`."""

    forward_op = staticmethod(F.gelu)
    backward_op = staticmethod(F.gelu_backward)

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        F.gelu_kernels(approximate)  # checks the word
        self.approximate = approximate

    def fused_activation(self) -> str | None:
        return "gelu" if self.approximate == "none" else None

    def _arguments(self):
        return dict(approximate=self.approximate)


def _lift(x, rank):
    """A batched array with 1-axes inserted after its batch axis up to ``rank`` axes, so that its
    sample broadcasts against the other input's sample, aligned from the last axis."""
    missing = rank - len(x.shape)
    if missing <= 0:
        return x
    return reshape_array(x, (x.shape[0],) + (1,) * missing + tuple(x.shape[1:]))


class _Binary(Layer):
    """``op(a, b)`` of two inputs whose samples broadcast NumPy's way (either, or both, may
    broadcast; a sample of fewer axes is aligned with the other's last axes). ``forward`` takes a
    list of two arrays and ``backward`` returns their two gradients."""

    takes_list = True
    returns_new_array = True
    op = op_backward = None
    kernel = None  # (the op's kernel, for its prepared form: bound_binary_kernel)

    def _check_inputs(self, inputs):
        name = type(self).__name__
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"{name} takes a list of 2 arrays, got {type(inputs).__name__}")
        if len(inputs) != 2:
            raise ValueError(f"{name} takes exactly 2 inputs, got {len(inputs)}")
        return list(inputs)

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        a, b = self._check_inputs(inputs)
        rank = max(len(a.shape), len(b.shape))
        lifted = _lift(a, rank), _lift(b, rank)
        if training:
            self.saved = (lifted, (tuple(a.shape), tuple(b.shape)))
        return type(self).op(*lifted)

    def backward(self, grad_out: Array) -> list[Array]:
        (a, b), shapes = self._need_saved()
        grads = type(self).op_backward(a, b, grad_out)
        return [reshape_array(grad, shape) for grad, shape in zip(grads, shapes)]

    def output_shape(self, input_shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
        a, b = (tuple(s) for s in self._check_inputs(input_shapes))
        return broadcast_shapes(a, b)

    def prepared_forward(self, inputs, out):
        """:meth:`Layer.prepared_forward`: the op's kernel call with its checks made once
        (:func:`cnnlab.functional.elementwise.bound_binary_kernel`), on the inputs lifted to one
        rank as ``forward`` lifts them (the kernel reads them flat: the lift moves no value)."""
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2 or type(out) is not np.ndarray \
                or not out.flags.c_contiguous:
            return None
        a, b = inputs
        rank = max(len(a.shape), len(b.shape))
        bound = F.elementwise.bound_binary_kernel(type(self).kernel, _lift(a, rank), _lift(b, rank))
        if bound is None or bound[1] != out.shape or out.dtype != a.dtype:
            return None
        run = bound[0]

        def prepared(inputs, out):
            return run(inputs[0], inputs[1], out)
        return prepared, (), ()


class Subtract(_Binary):
    """``a - b`` of two inputs that broadcast against each other."""

    op = staticmethod(F.subtract)
    op_backward = staticmethod(F.subtract_backward)
    kernel = "subtract_forward"


class Divide(_Binary):
    """``a / b`` of two inputs that broadcast against each other."""

    op = staticmethod(F.divide)
    op_backward = staticmethod(F.divide_backward)
    kernel = "divide_forward"


class Power(_Binary):
    """``a ** b`` of two inputs that broadcast against each other."""

    op = staticmethod(F.power)
    op_backward = staticmethod(F.power_backward)
    kernel = "power_forward"


class Maximum(_Binary):
    """The larger of two inputs that broadcast against each other (ties split the gradient)."""

    op = staticmethod(F.maximum)
    op_backward = staticmethod(F.maximum_backward)
    kernel = "maximum_forward"


class Minimum(_Binary):
    """The smaller of two inputs that broadcast against each other (ties split the gradient)."""

    op = staticmethod(F.minimum)
    op_backward = staticmethod(F.minimum_backward)
    kernel = "minimum_forward"


#: the ops of :class:`ElementwiseConstant`: name -> (op, its backward)
CONSTANT_OPS = {
    "subtract": (F.subtract, F.subtract_backward),
    "divide": (F.divide, F.divide_backward),
    "power": (F.power, F.power_backward),
    "maximum": (F.maximum, F.maximum_backward),
    "minimum": (F.minimum, F.minimum_backward),
}


class ElementwiseConstant(Layer):
    """``op(x, value)`` (or ``op(value, x)`` with ``first=True``) for a constant array ``value``
    that broadcasts against each sample NumPy's way, e.g. ``x ** 2`` or ``max(x, c)`` of an ONNX
    file. ``value`` may carry a leading batch axis of 1 (as ONNX constants do), which is dropped;
    it may make the sample larger (``(1, H, W)`` against a ``(C, 1, 1)`` value gives ``(C, H, W)``).

    ``value`` is a buffer: saved with the model and moved with it, never trained (a learnt
    exponent would meet the logarithm of negative bases). Unlike :class:`Bias` and :class:`Scale`,
    whose arrays are trainable weights.

    Parameters
    ----------
    op : 'subtract', 'divide', 'power', 'maximum' or 'minimum'
    value : array_like, or None with ``shape``
        The constant (a number is a 0-d array).
    shape : sequence of int, optional
        Build with a zero array of this shape instead (what :func:`cnnlab.load` does before it
        reads the saved value).
    first : bool
        ``value`` is the first operand (``value - x``, ``value / x``, ``value ** x``).
    dtype : 'float32' or 'float64'
    """

    returns_new_array = True

    def __init__(self, op: str, value: Array | float | None = None, *, shape: Sequence[int] | None = None,
                 first: bool = False, dtype: DTypeLike = "float32") -> None:
        super().__init__()
        if not isinstance(op, str) or op not in CONSTANT_OPS:
            raise ValueError(f"op must be one of {', '.join(map(repr, CONSTANT_OPS))}, got {op!r}")
        if (value is None) == (shape is None):
            raise TypeError("ElementwiseConstant takes value (an array) or shape, one of them")
        if not isinstance(first, (bool, np.bool_)):
            raise TypeError(f"first must be a bool, got {first!r}")
        self.op, self.first = op, bool(first)
        self.dtype = float_dtype(dtype)
        array = np.zeros(tuple(shape), self.dtype) if value is None else np.array(value, dtype=self.dtype)
        self.buffers["value"] = array

    def _value_shape(self, sample_shape):
        value = tuple(self.buffers["value"].shape)
        if len(value) == len(sample_shape) + 1 and value[0] == 1:
            value = value[1:]
        return value

    def forward(self, x: Array, training: bool = False) -> Array:
        x = self.prepare(x)
        value = reshape_array(self.buffers["value"], self._value_shape(tuple(x.shape[1:])))
        if training:
            self.saved = (x, value)
        op, _ = CONSTANT_OPS[self.op]
        return op(value, x) if self.first else op(x, value)

    def backward(self, grad_out: Array) -> Array:
        x, value = self._need_saved()
        _, op_backward = CONSTANT_OPS[self.op]
        if self.first:
            return op_backward(value, x, grad_out)[1]
        return op_backward(x, value, grad_out)[0]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        value = self._value_shape(input_shape)
        if len(value) > len(input_shape):
            raise ValueError(f"ElementwiseConstant's value of shape {tuple(self.buffers['value'].shape)} has more "
                             f"axes than samples of shape {input_shape} (it would vary along the batch)")
        return broadcast_shapes(input_shape, value)

    def config(self) -> dict:
        return dict(op=self.op, shape=list(self.buffers["value"].shape), first=self.first, dtype=self.dtype.name)
