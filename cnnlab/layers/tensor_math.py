"""Math on whole tensors of any rank and dtype: :class:`Arithmetic` (NumPy's broadcasting
arithmetic, comparisons and logic, for integer shapes as for floats), :class:`Function` (sqrt,
exp, floor, ceil... of any tensor), :class:`Reduce` (over any axes) and :class:`MatMul` (the N-d
product of two tensors, attention's ``Q Kᵀ``).
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..device import is_gpu_array, to_device, to_host
from ..dispatch import register_builder
from ..functional.indexing import on_host
from ..functional.reduce import bound_reduce, reduction_axes
from ..symbolic import TensorSpec
from ..types import Any, Array, Sequence
from .base import WholeTensorLayer, known_value, operand_node, watched_attributes
from .indexing import broadcast_dims, evaluate


def _divide(a, b):
    """ONNX's ``Div``: integers truncate toward zero (C's division), floats divide."""
    if np.result_type(a, b).kind in "iu":
        a, b = np.asarray(a), np.asarray(b)
        return (np.abs(a) // np.abs(b)) * np.sign(a) * np.sign(b)
    return np.divide(a, b)


def _power(a, b):
    result = np.power(a, b)
    return result.astype(np.result_type(np.asarray(a).dtype, np.float32)) if np.asarray(a).dtype.kind == "f" else result


#: the operations of :class:`Arithmetic` by name, and whether they compare (a boolean result)
OPERATIONS = {
    "add": (np.add, False), "subtract": (np.subtract, False), "multiply": (np.multiply, False),
    "divide": (_divide, False), "power": (_power, False), "maximum": (np.maximum, False),
    "minimum": (np.minimum, False), "mod": (np.mod, False), "fmod": (np.fmod, False),
    "equal": (np.equal, True), "less": (np.less, True), "less_equal": (np.less_equal, True),
    "greater": (np.greater, True), "greater_equal": (np.greater_equal, True),
    "logical_and": (np.logical_and, True), "logical_or": (np.logical_or, True),
    "logical_xor": (np.logical_xor, True),
}

#: the operations whose gradient :class:`Arithmetic` computes
DIFFERENTIABLE = ("add", "subtract", "multiply", "divide", "power", "maximum", "minimum")


def _gradients(op, a, b, grad):
    if op == "add":
        return grad, grad
    if op == "subtract":
        return grad, -grad
    if op == "multiply":
        return grad * b, grad * a
    if op == "divide":
        return grad / b, -grad * a / (b * b)
    if op == "power":
        with np.errstate(divide="ignore", invalid="ignore"):
            log_a = np.where(a > 0, np.log(np.where(a > 0, a, 1)), 0)
            return grad * b * np.power(a, b - 1), grad * np.power(a, b) * log_a
    pick = (a >= b) if op == "maximum" else (a <= b)
    return grad * pick, grad * ~pick


class Arithmetic(WholeTensorLayer):
    """``op(a, b)`` of two operands that broadcast (NumPy's rules, ONNX's binary ops): ``'add'``,
    ``'subtract'``, ``'multiply'``, ``'divide'`` (integers truncate toward zero), ``'power'``,
    ``'maximum'``, ``'minimum'``, ``'mod'``, ``'fmod'``, comparisons (``'equal'``, ``'less'``,
    ...) and logic (``'logical_and'`` ...). Either operand may be a constant. Works on any dtype
    (the shape arithmetic of a network is int64); float results of the first seven
    differentiate. :class:`Add`, :class:`Subtract` and the rest are the kernels for float feature
    maps."""

    takes_list = True

    def __init__(self, op: str, constants: dict | None = None) -> None:
        if op not in OPERATIONS:
            raise ValueError(f"op must be one of {', '.join(OPERATIONS)}, got {op!r}")
        super().__init__(constants)
        self.op = op

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        a, b = self.operands(inputs)
        if training:
            self.saved = (a, b)
        with np.errstate(divide="ignore", invalid="ignore"):  # NaN and inf as the operands give them
            return on_host(lambda x, y: np.asarray(OPERATIONS[self.op][0](x, y)))(a, b)

    def backward(self, grad_out: Array) -> list[Array | None]:
        a, b = self._need_saved()
        if self.op not in DIFFERENTIABLE:
            raise ValueError(f"Arithmetic({self.op!r}) has no gradient")
        gpu = is_gpu_array(grad_out)
        a_host, b_host, grad = (to_host(v) if is_gpu_array(v) else np.asarray(v) for v in (a, b, grad_out))
        grads = [F.sum_to_shape(np.asarray(g, dtype=grad.dtype), np.shape(v))
                 for g, v in zip(_gradients(self.op, a_host, b_host, grad), (a_host, b_host))]
        return self.input_gradients([to_device(g) if gpu else g for g in grads])

    def output_spec(self, specs: Any) -> TensorSpec:
        a, b = self.operand_specs(specs)
        function, compares = OPERATIONS[self.op]
        dtype = np.dtype(bool) if compares else np.result_type(a.dtype, b.dtype)
        if self.op == "power" and a.dtype.kind == "f":
            dtype = a.dtype
        value = evaluate(lambda x, y: function(x, y), known_value(a), known_value(b))
        if value is not None and any(v is None for v in value.reshape(-1)):
            value = None
        return TensorSpec(broadcast_dims(a.shape, b.shape), dtype, value)

    def config(self) -> dict:
        return dict(op=self.op, constants=self.constants_config())


class Reduce(WholeTensorLayer):
    """Reduce over ``axes`` with ``op`` (:func:`cnnlab.functional.reduce`; ONNX's ``Reduce*``).
    ``axes=None`` reduces over every axis."""

    def __init__(self, op: str = "mean", axes: Sequence[int] | None = None, keepdims: bool = True) -> None:
        super().__init__()
        if op not in F.REDUCTIONS:
            raise ValueError(f"op must be one of {', '.join(F.REDUCTIONS)}, got {op!r}")
        self.op, self.keepdims = op, bool(keepdims)
        self.axes = None if axes is None else [int(a) for a in ([axes] if np.isscalar(axes) else axes)]

    def forward(self, x: Array, training: bool = False) -> Array:
        out = F.reduce(x, self.op, self.axes, self.keepdims)
        if training:
            self.saved = (x, out)
        return out

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: :func:`cnnlab.functional.reduce`'s NumPy call with its
        axes resolved once (the op, axes and keepdims watched)."""
        run = bound_reduce(x, self.op, self.axes, self.keepdims)
        if run is None or type(out) is not np.ndarray or out.dtype != x.dtype:
            return None
        axes = reduction_axes(self.axes, x.ndim)
        shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape)) if self.keepdims else \
            tuple(s for i, s in enumerate(x.shape) if i not in axes)
        if out.shape != shape:
            return None
        return run, tuple((vars(self), name, getattr(self, name)) for name in ("op", "axes", "keepdims")), ()

    def backward(self, grad_out: Array) -> Array:
        x, out = self._need_saved()
        return F.reduce_backward(x, out, grad_out, self.op, self.axes, self.keepdims)

    def output_spec(self, x: Any) -> TensorSpec:
        if x.shape is None:
            return TensorSpec(None, x.dtype)
        axes = set(reduction_axes(self.axes, len(x.shape)))
        shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape)) if self.keepdims else \
            tuple(s for i, s in enumerate(x.shape) if i not in axes)
        return TensorSpec(shape, x.dtype)

    def config(self) -> dict:
        return dict(op=self.op, axes=self.axes, keepdims=self.keepdims)


class MatMul(WholeTensorLayer):
    """The matrix product of two tensors (:func:`cnnlab.functional.matmul`: leading axes
    broadcast, 1-D operands are vectors); either may be a constant. :class:`Dense` is the layer
    for a learned weight matrix."""

    takes_list = True

    def forward(self, inputs: Sequence[Array], training: bool = False) -> Array:
        a, b = self.operands(inputs)
        if training:
            self.saved = (a, b)
        return F.matmul(a, b)

    def prepared_forward(self, inputs, out):
        """:meth:`Layer.prepared_forward`: NumPy's ``matmul`` into the plan's array, the operands'
        shapes checked once (the constants read at each call, their arrays watched)."""
        a, b = self.operands(inputs)
        if type(out) is not np.ndarray or not out.flags.c_contiguous or type(a) is not np.ndarray \
                or type(b) is not np.ndarray or a.dtype != b.dtype or a.dtype not in (np.float32, np.float64) \
                or out.dtype != a.dtype or a.ndim == 0 or b.ndim == 0:
            return None
        try:  # (on zeros: the stand-ins hold any values, NaN among them)
            if np.matmul(np.zeros(a.shape, a.dtype), np.zeros(b.shape, b.dtype)).shape != out.shape:
                return None
        except ValueError:
            return None
        operands = self.operands

        def run(inputs, out):
            return np.matmul(*operands(inputs), out=out)
        return run, watched_attributes(self), ()

    def backward(self, grad_out: Array) -> list[Array | None]:
        a, b = self._need_saved()
        return self.input_gradients(list(F.matmul_backward(a, b, grad_out)))

    def output_spec(self, specs: Any) -> TensorSpec:
        a, b = self.operand_specs(specs)
        if a.shape is None or b.shape is None:
            return TensorSpec(None, np.result_type(a.dtype, b.dtype))
        if not a.shape or not b.shape:
            raise ValueError("MatMul takes tensors of at least one axis")
        inner_a, inner_b = a.shape[-1], b.shape[-2 if len(b.shape) > 1 else 0]
        if None not in (inner_a, inner_b) and inner_a != inner_b:
            raise ValueError(f"the last axis of {a.shape} does not match {b.shape}")
        lead = broadcast_dims(a.shape[:-2], b.shape[:-2])
        shape = lead + (a.shape[-2:-1] if len(a.shape) > 1 else ()) + (b.shape[-1:] if len(b.shape) > 1 else ())
        return TensorSpec(shape, np.result_type(a.dtype, b.dtype))

    def config(self) -> dict:
        return dict(constants=self.constants_config())


def _erf(x):
    from scipy.special import erf

    return erf(x)


#: the functions of :class:`Function` by name: (NumPy function, derivative from x and the output or
#: None where it is 0 almost everywhere)
FUNCTIONS = {
    "sqrt": (np.sqrt, lambda x, y: 0.5 / y), "exp": (np.exp, lambda x, y: y), "log": (np.log, lambda x, y: 1 / x),
    "abs": (np.abs, lambda x, y: np.sign(x)), "neg": (np.negative, lambda x, y: -np.ones_like(x)),
    "reciprocal": (np.reciprocal, lambda x, y: -y * y), "floor": (np.floor, None), "ceil": (np.ceil, None),
    "round": (np.round, None), "sign": (np.sign, None),
    "erf": (_erf, lambda x, y: 2 / np.sqrt(np.pi) * np.exp(-x * x)),
}


class Function(WholeTensorLayer):
    """``op(x)`` of a tensor of any rank (0-d included) and dtype, with NumPy: ``'sqrt'``,
    ``'exp'``, ``'log'``, ``'abs'``, ``'neg'``, ``'reciprocal'``, ``'floor'``, ``'ceil'``,
    ``'round'`` (half to even, as ONNX), ``'sign'``, ``'erf'``: the arithmetic of sizes (``ceil(H
    / stride)`` of TensorFlow's "same" padding). :class:`Sqrt` and the rest are the kernels for
    float feature maps."""

    def __init__(self, op: str) -> None:
        if op not in FUNCTIONS:
            raise ValueError(f"op must be one of {', '.join(FUNCTIONS)}, got {op!r}")
        super().__init__()
        self.op = op

    def forward(self, x: Array, training: bool = False) -> Array:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = on_host(lambda v: np.asarray(FUNCTIONS[self.op][0](v)).astype(np.asarray(v).dtype))(x)
        if training:
            self.saved = (x, out)
        return out

    def backward(self, grad_out: Array) -> Array:
        x, out = self._need_saved()
        derivative = FUNCTIONS[self.op][1]
        gpu = is_gpu_array(grad_out)
        x, out, grad = (to_host(v) if is_gpu_array(v) else np.asarray(v) for v in (x, out, grad_out))
        with np.errstate(divide="ignore", invalid="ignore"):
            result = np.zeros_like(grad) if derivative is None else (grad * derivative(x, out)).astype(grad.dtype)
        return to_device(result) if gpu else result

    def output_spec(self, x: Any) -> TensorSpec:
        value = known_value(x)
        if value is not None and None not in value.reshape(-1):
            value = evaluate(lambda v: FUNCTIONS[self.op][0](v.astype(np.float64)).astype(object), value)
        else:
            value = None
        return TensorSpec(x.shape, x.dtype, value)

    def config(self) -> dict:
        return dict(op=self.op)


# cnnlab.functional's ops called on symbolic tensors build these layers' nodes (cnnlab.dispatch.symbolic)
register_builder("reduce", lambda x, op="mean", axes=None, keepdims=False: Reduce(op, axes, keepdims)(x))
register_builder("matmul", lambda a, b: operand_node(MatMul, (a, b)))
