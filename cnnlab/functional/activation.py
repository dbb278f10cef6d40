"""Activations: ReLU and its relatives, sigmoid, tanh, softmax, and their backward."""

from __future__ import annotations

import functools
import math

import numpy as np

from ..device import kernels_for
from ..dispatch import elementwise as elementwise_chunks
from ..kernels import cpu as cpu_kernels
from ..shapes import check_int
from ..types import Any, Array
from .common import as_float_array, check_grad, elementwise, elementwise_backward, empty_batches


def relu_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`relu`: ``grad_out`` where ``x > 0``, else 0 (``x`` the forward input)."""
    return elementwise_backward("relu_backward", x, grad_out)


def leaky_relu_backward(x: Array, grad_out: Array, negative_slope: float = 0.01) -> Array:
    """Gradient of :func:`leaky_relu` (``x`` the forward input)."""
    return elementwise_backward("leaky_relu_backward", x, grad_out, float(negative_slope))


def sigmoid_backward(y: Array, grad_out: Array) -> Array:
    """Gradient of :func:`sigmoid` from its output ``y``: ``grad_out * y * (1 - y)``."""
    return elementwise_backward("sigmoid_backward", y, grad_out)


def tanh_backward(y: Array, grad_out: Array) -> Array:
    """Gradient of :func:`tanh` from its output ``y``: ``grad_out * (1 - y**2)``."""
    return elementwise_backward("tanh_backward", y, grad_out)


def _axis_view(name, shape, axis):
    """Check ``axis`` and return the ``(outer, K, inner)`` view the softmax kernels normalize
    along the middle of (no data moves)."""
    ndim = len(shape)
    axis = check_int("axis", axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for {name} with shape {tuple(shape)}")
    axis %= ndim
    return (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))  # (np.prod: 2 us each)


def _softmax_backward_like(kernel_name, y, grad_out, axis):
    y = as_float_array("y", y)
    kernels = kernels_for(y=y, grad_out=grad_out)
    grad_out = check_grad("grad_out", grad_out, y.shape, y.dtype)
    view = _axis_view("y", y.shape, axis)
    grad_x = kernels.empty(y.shape, y.dtype)
    getattr(kernels, kernel_name)(kernels.asarray(y).reshape(view), kernels.asarray(grad_out).reshape(view),
                                  grad_x.reshape(view))
    return grad_x


def softmax_backward(y: Array, grad_out: Array, axis: int = 1) -> Array:
    """Gradient of :func:`softmax` from its output ``y``: ``y * (grad_out - sum(grad_out * y))``."""
    return _softmax_backward_like("softmax_backward", y, grad_out, axis)


def log_softmax_backward(y: Array, grad_out: Array, axis: int = 1) -> Array:
    """Gradient of :func:`log_softmax` from its output ``y``: ``grad_out - exp(y) * sum(grad_out)``."""
    return _softmax_backward_like("log_softmax_backward", y, grad_out, axis)


@elementwise_chunks
@empty_batches(elementwise=True)
def relu(x: Array) -> Array:
    """Rectified linear unit, ``max(x, 0)`` element-wise (NaN stays NaN).

    Parameters
    ----------
    x : array of any shape, float32 or float64

    Returns
    -------
    array of the same shape, on the input's device

    See Also
    --------
    cnnlab.kernels.cpu.activation.relu_forward, cnnlab.kernels.cuda.activation.relu_forward
    torch.nn.functional.relu
    """
    return elementwise("relu", "relu_forward", x)


@elementwise_chunks
@empty_batches(elementwise=True)
def leaky_relu(x: Array, negative_slope: float = 0.01) -> Array:
    """Leaky ReLU: ``x`` for positive ``x``, ``negative_slope * x`` otherwise.

    Parameters
    ----------
    x : array of any shape, float32 or float64
    negative_slope : float

    See Also
    --------
    cnnlab.kernels.cpu.activation.leaky_relu_forward, torch.nn.functional.leaky_relu
    """
    if isinstance(negative_slope, bool) or not isinstance(negative_slope, (int, float, np.floating, np.integer)):
        raise TypeError(f"negative_slope must be a number, got {negative_slope!r}")
    if not math.isfinite(negative_slope):
        raise ValueError(f"negative_slope must be finite, got {negative_slope}")
    return elementwise("leaky_relu", "leaky_relu_forward", x, float(negative_slope))


@elementwise_chunks
@empty_batches(elementwise=True)
def sigmoid(x: Array) -> Array:
    """Logistic sigmoid ``1 / (1 + exp(-x))``, computed without overflow.

    See Also
    --------
    cnnlab.kernels.cpu.activation.sigmoid_forward, torch.sigmoid
    """
    return elementwise("sigmoid", "sigmoid_forward", x)


@elementwise_chunks
@empty_batches(elementwise=True)
def tanh(x: Array) -> Array:
    """Hyperbolic tangent element-wise.

    See Also
    --------
    cnnlab.kernels.cpu.activation.tanh_forward, torch.tanh
    """
    return elementwise("tanh", "tanh_forward", x)


def _softmax_like(kernel_name, x, axis):
    x = as_float_array("x", x)
    kernels = kernels_for(x=x)
    view = _axis_view("x", x.shape, axis)
    out = kernels.empty(x.shape, x.dtype)
    getattr(kernels, kernel_name)(kernels.asarray(x).reshape(view), out.reshape(view))
    return out


def bound_softmax(x: Array, axis: int, log: bool = False) -> Any:
    """For a caller that repeats :func:`softmax` (``log``: :func:`log_softmax`) along ``axis``
    on host arrays of ``x``'s shape and dtype: ``run(x, out)`` writing it into ``out``
    (C-ordered, of ``x``'s shape and dtype) and returning it, with the checks made now (a
    prepared inference plan: :mod:`cnnlab.prepared`). The same kernel call, so the same values.
    None for anything but C-ordered host float arrays of at least one axis and one element."""
    if type(x) is not np.ndarray or not x.flags.c_contiguous or x.dtype not in (np.float32, np.float64) \
            or x.ndim == 0 or x.size == 0:
        return None
    try:
        view = _axis_view("x", x.shape, axis)
    except (TypeError, ValueError):
        return None
    name = "log_softmax_forward" if log else "softmax_forward"

    def run(x, out):
        getattr(cpu_kernels, name)(x.reshape(view), out.reshape(view))  # (looked up at each call, as a call of softmax)
        return out
    return run


def _scalar_softmax(value):
    """Softmax of a 0-d tensor over its only axis (``dim`` 0 or -1, as PyTorch takes it): ``value``
    (1 for softmax, 0 for log-softmax) of the input's dtype."""
    def decorate(function):
        @functools.wraps(function)
        def run(x, axis=1):
            if getattr(x, "shape", None) == () and not isinstance(axis, bool) and axis in (0, -1):
                x = as_float_array("x", x)
                return kernels_for(x=x).zeros((), x.dtype) + x.dtype.type(value)
            return function(x, axis)
        return run
    return decorate


@_scalar_softmax(1)
@empty_batches(elementwise=True)
def softmax(x: Array, axis: int = 1) -> Array:
    """Softmax along ``axis``: ``exp(x) / sum(exp(x))``, shifted by the maximum so that
    logits of any size (even +-1e4) give finite probabilities.

    Parameters
    ----------
    x : array, float32 or float64
    axis : int, default 1 (the class axis of (N, K) logits)

    See Also
    --------
    cnnlab.kernels.cpu.activation.softmax_forward, torch.softmax, scipy.special.softmax
    """
    return _softmax_like("softmax_forward", x, axis)


@_scalar_softmax(0)
@empty_batches(elementwise=True)
def log_softmax(x: Array, axis: int = 1) -> Array:
    """Logarithm of :func:`softmax`, computed as ``x - max - log(sum(exp(x - max)))``
    (finite for huge logits, no ``log(0)``).

    See Also
    --------
    cnnlab.kernels.cpu.activation.log_softmax_forward, torch.log_softmax, scipy.special.log_softmax
    """
    return _softmax_like("log_softmax_forward", x, axis)


def as_number(name: str, value: object, allow_infinite: bool = False) -> float:
    """``value`` as a float: a real number, not NaN (and finite unless ``allow_infinite``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if math.isnan(value) or not (allow_infinite or math.isfinite(value)):
        raise ValueError(f"{name} must be {'a number' if allow_infinite else 'finite'}, got {value}")
    return float(value)


def clip_bounds(low: float | None, high: float | None) -> tuple[float, float]:
    """``(min, max)`` of :func:`clip` checked, ``None`` read as an open side (-inf or +inf)."""
    if low is None and high is None:
        raise ValueError("clip needs min or max (or both), got min=None and max=None")
    low = -math.inf if low is None else as_number("min", low, allow_infinite=True)
    high = math.inf if high is None else as_number("max", high, allow_infinite=True)
    if low > high:
        raise ValueError(f"min must not exceed max, got min={low} and max={high}")
    return low, high


@elementwise_chunks
@empty_batches(elementwise=True)
def clip(x: Array, min: float | None = None, max: float | None = None) -> Array:
    """Clamp every element to ``[min, max]``: ``min(max(x, min), max)`` (NaN stays NaN).

    The gradient (:func:`clip_backward`) is 1 strictly inside ``(min, max)`` and 0 outside
    and at the boundaries themselves, as PyTorch's ``hardtanh`` and ``relu6``.

    Parameters
    ----------
    x : array of any shape, float32 or float64
    min, max : float or None
        The bounds; ``None`` leaves that side open (not both).  ``min <= max``.

    Returns
    -------
    array of the same shape, on the input's device

    Shape
    -----
    Element-wise: the output has the input's shape.

    See Also
    --------
    cnnlab.kernels.cpu.activation.clip_forward, cnnlab.kernels.cuda.activation.clip_forward :
        the CPU/GPU twins.
    torch.clamp, torch.nn.functional.hardtanh, numpy.clip
    """
    low, high = clip_bounds(min, max)
    return elementwise("clip", "clip_forward", x, low, high)


def clip_backward(x: Array, grad_out: Array, min: float | None = None, max: float | None = None) -> Array:
    """Gradient of :func:`clip`: ``grad_out`` where ``min < x < max``, else 0 (``x`` the forward
    input; 0 at the boundaries, PyTorch's hardtanh rule)."""
    low, high = clip_bounds(min, max)
    return elementwise_backward("clip_backward", x, grad_out, low, high)


def relu6(x: Array) -> Array:
    """ReLU capped at 6, ``min(max(x, 0), 6)``: :func:`clip` with ``min=0, max=6`` (MobileNet).

    See Also
    --------
    clip, cnnlab.kernels.cpu.activation.clip_forward, torch.nn.functional.relu6
    """
    return clip(x, 0.0, 6.0)


def relu6_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`relu6`: ``grad_out`` where ``0 < x < 6``, else 0 (as PyTorch)."""
    return clip_backward(x, grad_out, 0.0, 6.0)


@elementwise_chunks
@empty_batches(elementwise=True)
def hardsigmoid(x: Array, alpha: float = 1 / 6, beta: float = 0.5) -> Array:
    """Hard sigmoid, ``max(0, min(1, alpha * x + beta))``.

    The defaults give PyTorch's ``relu6(x + 3) / 6``; ONNX ``HardSigmoid`` sets
    ``alpha=0.2, beta=0.5`` by default.  The gradient is ``alpha`` where
    ``0 < alpha * x + beta < 1`` and 0 elsewhere (boundaries included, as PyTorch).

    Parameters
    ----------
    x : array of any shape, float32 or float64
    alpha, beta : float
        Slope and offset (finite).

    Shape
    -----
    Element-wise: the output has the input's shape.

    See Also
    --------
    cnnlab.kernels.cpu.activation.hardsigmoid_forward, cnnlab.kernels.cuda.activation.hardsigmoid_forward :
        the CPU/GPU twins.
    torch.nn.functional.hardsigmoid
    """
    alpha, beta = as_number("alpha", alpha), as_number("beta", beta)
    return elementwise("hardsigmoid", "hardsigmoid_forward", x, alpha, beta)


def hardsigmoid_backward(x: Array, grad_out: Array, alpha: float = 1 / 6, beta: float = 0.5) -> Array:
    """Gradient of :func:`hardsigmoid` (``x`` the forward input)."""
    return elementwise_backward("hardsigmoid_backward", x, grad_out, as_number("alpha", alpha),
                                 as_number("beta", beta))


@elementwise_chunks
@empty_batches(elementwise=True)
def hardswish(x: Array) -> Array:
    """Hard swish, ``x * relu6(x + 3) / 6`` (MobileNetV3).

    The gradient is PyTorch's: 0 for ``x < -3``, ``x / 3 + 1/2`` for ``-3 <= x <= 3``, 1 above.

    Shape
    -----
    Element-wise: the output has the input's shape.

    See Also
    --------
    cnnlab.kernels.cpu.activation.hardswish_forward, cnnlab.kernels.cuda.activation.hardswish_forward :
        the CPU/GPU twins.
    torch.nn.functional.hardswish
    """
    return elementwise("hardswish", "hardswish_forward", x)


def hardswish_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`hardswish` (``x`` the forward input)."""
    return elementwise_backward("hardswish_backward", x, grad_out)


@elementwise_chunks
@empty_batches(elementwise=True)
def silu(x: Array) -> Array:
    """SiLU (swish), ``x * sigmoid(x)``, without overflow for any ``x`` (EfficientNet).

    Shape
    -----
    Element-wise: the output has the input's shape.

    See Also
    --------
    cnnlab.kernels.cpu.activation.silu_forward, cnnlab.kernels.cuda.activation.silu_forward :
        the CPU/GPU twins.
    torch.nn.functional.silu
    """
    return elementwise("silu", "silu_forward", x)


def silu_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`silu`: ``grad_out * s * (1 + x * (1 - s))``, ``s = sigmoid(x)``
    (``x`` the forward input)."""
    return elementwise_backward("silu_backward", x, grad_out)
