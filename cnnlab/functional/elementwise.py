"""Element-wise math: unary functions (square root, exponential, logarithm, erf, reciprocal,
absolute value, negation, floor, ceil, GELU) and binary ops where both operands broadcast
NumPy's way (subtract, divide, power, maximum, minimum), with their backward.

Values outside a function's domain give what NumPy gives (``log(-1)`` is NaN, ``1 / 0`` is inf),
never an error. Every ``*_backward`` of a unary function takes the forward input ``x``.
"""

from __future__ import annotations

import numpy as np

from ..device import kernels_for
from ..dispatch import elementwise as elementwise_chunks
from ..types import Array
from .common import KeptAnswers, check_grad, elementwise, elementwise_backward, empty_batches
from .merge import checked_pair, host_float_pair, index_array

# ----------------------------------------------------------------------------- unary functions


@elementwise_chunks
@empty_batches(elementwise=True)
def sqrt(x: Array) -> Array:
    """Square root element-wise; NaN for negative values (``sqrt(-0.0)`` is -0.0).

    Parameters
    ----------
    x : array of any shape, float32 or float64

    Returns
    -------
    array of the same shape, on the input's device

    See Also
    --------
    cnnlab.kernels.cpu.elementwise.sqrt_forward, cnnlab.kernels.cuda.elementwise.sqrt_forward :
        the CPU/GPU twins.
    torch.sqrt, numpy.sqrt
    """
    return elementwise("sqrt", "sqrt_forward", x)


def sqrt_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`sqrt`: ``grad_out / (2 * sqrt(x))`` (inf at 0, NaN below)."""
    return elementwise_backward("sqrt_backward", x, grad_out)


@elementwise_chunks
@empty_batches(elementwise=True)
def exp(x: Array) -> Array:
    """Exponential element-wise (inf where it overflows).

    See Also
    --------
    cnnlab.kernels.cpu.elementwise.exp_forward, torch.exp, numpy.exp
    """
    return elementwise("exp", "exp_forward", x)


def exp_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`exp`: ``grad_out * exp(x)``."""
    return elementwise_backward("exp_backward", x, grad_out)


@elementwise_chunks
@empty_batches(elementwise=True)
def log(x: Array) -> Array:
    """Natural logarithm element-wise: -inf at 0, NaN for negative values.

    See Also
    --------
    cnnlab.kernels.cpu.elementwise.log_forward, torch.log, numpy.log
    """
    return elementwise("log", "log_forward", x)


def log_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`log`: ``grad_out / x``."""
    return elementwise_backward("log_backward", x, grad_out)


@elementwise_chunks
@empty_batches(elementwise=True)
def erf(x: Array) -> Array:
    """The error function ``2 / sqrt(pi) * integral of exp(-t**2) from 0 to x``, element-wise.

    See Also
    --------
    cnnlab.kernels.cpu.elementwise.erf_forward, torch.erf, scipy.special.erf
    """
    return elementwise("erf", "erf_forward", x)


def erf_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`erf`: ``grad_out * 2 / sqrt(pi) * exp(-x**2)``."""
    return elementwise_backward("erf_backward", x, grad_out)


@elementwise_chunks
@empty_batches(elementwise=True)
def reciprocal(x: Array) -> Array:
    """``1 / x`` element-wise (+-inf at +-0).

    See Also
    --------
    cnnlab.kernels.cpu.elementwise.reciprocal_forward, torch.reciprocal, numpy.reciprocal
    """
    return elementwise("reciprocal", "reciprocal_forward", x)


def reciprocal_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`reciprocal`: ``-grad_out / x**2``."""
    return elementwise_backward("reciprocal_backward", x, grad_out)


@elementwise_chunks
@empty_batches(elementwise=True)
def abs(x: Array) -> Array:
    """Absolute value element-wise.

    See Also
    --------
    cnnlab.kernels.cpu.elementwise.abs_forward, torch.abs, numpy.abs
    """
    return elementwise("abs", "abs_forward", x)


def abs_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`abs`: ``grad_out * sign(x)``, 0 at 0 (as PyTorch)."""
    return elementwise_backward("abs_backward", x, grad_out)


@elementwise_chunks
@empty_batches(elementwise=True)
def neg(x: Array) -> Array:
    """``-x`` element-wise.

    See Also
    --------
    cnnlab.kernels.cpu.elementwise.neg_forward, torch.neg, numpy.negative
    """
    return elementwise("neg", "neg_forward", x)


def neg_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`neg`: ``-grad_out`` (``x`` gives the shape, device and dtype)."""
    return elementwise_backward("neg_backward", x, grad_out)


@elementwise_chunks
@empty_batches(elementwise=True)
def floor(x: Array) -> Array:
    """Largest integer not above each element, as a float (NumPy's: ``floor(-0.5)`` is -1.0,
    signed zeros, NaN and infinities kept). Its gradient is 0 (:func:`floor_backward`).

    See Also
    --------
    cnnlab.kernels.cpu.elementwise.floor_forward, torch.floor, numpy.floor
    """
    return elementwise("floor", "floor_forward", x)


def floor_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`floor`: zeros (a step function's derivative, as PyTorch)."""
    return elementwise_backward("floor_backward", x, grad_out)


@elementwise_chunks
@empty_batches(elementwise=True)
def ceil(x: Array) -> Array:
    """Smallest integer not below each element, as a float (NumPy's: ``ceil(-0.5)`` is -0.0).
    Its gradient is 0 (:func:`ceil_backward`).

    See Also
    --------
    cnnlab.kernels.cpu.elementwise.ceil_forward, torch.ceil, numpy.ceil
    """
    return elementwise("ceil", "ceil_forward", x)


def ceil_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`ceil`: zeros (as PyTorch)."""
    return elementwise_backward("ceil_backward", x, grad_out)


#: the ``approximate`` words of :func:`gelu` -> its kernels (forward, backward)
GELU_FORMS = {"none": ("gelu_forward", "gelu_backward"), "tanh": ("gelu_tanh_forward", "gelu_tanh_backward")}


def gelu_kernels(approximate: str) -> tuple[str, str]:
    """The forward and backward kernels of :func:`gelu` for ``approximate`` ('none' or 'tanh')."""
    if not isinstance(approximate, str):
        raise TypeError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    if approximate not in GELU_FORMS:
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return GELU_FORMS[approximate]


@elementwise_chunks
@empty_batches(elementwise=True)
def gelu(x: Array, approximate: str = "none") -> Array:
    """Gaussian error linear unit, PyTorch's two forms.

    ``approximate='none'``: ``x * Phi(x) = x / 2 * (1 + erf(x / sqrt(2)))``, with ``Phi`` the
    standard normal distribution (computed as ``x / 2 * erfc(-x / sqrt(2))``, which keeps its
    precision for negative ``x``). ``approximate='tanh'``:
    ``x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``.

    Parameters
    ----------
    x : array of any shape, float32 or float64
    approximate : 'none' or 'tanh'

    Returns
    -------
    array of the same shape, on the input's device

    See Also
    --------
    cnnlab.kernels.cpu.elementwise.gelu_forward, cnnlab.kernels.cpu.elementwise.gelu_tanh_forward :
        the CPU kernels (same names under ``cuda``).
    torch.nn.functional.gelu
    """
    forward, _ = gelu_kernels(approximate)
    return elementwise("gelu", forward, x)


def gelu_backward(x: Array, grad_out: Array, approximate: str = "none") -> Array:
    """Gradient of :func:`gelu` (``x`` the forward input): ``Phi(x) + x * phi(x)`` for 'none',
    PyTorch's formula for 'tanh'."""
    _, backward = gelu_kernels(approximate)
    return elementwise_backward(backward, x, grad_out)


# ----------------------------------------------------------------------------- binary ops


def broadcast_geometry(a_shape: tuple, b_shape: tuple) -> tuple[tuple, list, list, list]:
    """NumPy's broadcast of two shapes, as the binary kernels take it.

    Returns ``(shape, dims, a_dims, b_dims)``: the result's shape, and the result's axes of more
    than one element, adjacent axes merged where both operands are broadcast alike (``a_dims``,
    ``b_dims``: 1 on the axes that operand is broadcast along). ``ValueError`` naming both shapes
    when they do not broadcast.
    """
    a_shape, b_shape = tuple(int(s) for s in a_shape), tuple(int(s) for s in b_shape)
    try:
        shape = np.broadcast_shapes(a_shape, b_shape)
    except ValueError:
        raise ValueError(f"a with shape {a_shape} and b with shape {b_shape} do not broadcast: each axis "
                         "(counted from the end) must be equal or 1 in one of them (NumPy's rule)") from None
    rank = len(shape)
    a_padded = (1,) * (rank - len(a_shape)) + a_shape
    b_padded = (1,) * (rank - len(b_shape)) + b_shape
    dims, a_dims, b_dims = [], [], []
    for n, m_a, m_b in zip(shape, a_padded, b_padded):
        if n == 1:
            continue
        if dims and (a_dims[-1] == 1, b_dims[-1] == 1) == (m_a == 1, m_b == 1):
            dims[-1] *= n
            a_dims[-1] *= m_a
            b_dims[-1] *= m_b
        else:
            dims.append(n)
            a_dims.append(m_a)
            b_dims.append(m_b)
    return shape, dims or [1], a_dims or [1], b_dims or [1]


_HOST_GEOMETRIES = KeptAnswers(512)  # (a's shape, b's shape) -> (shape, (dims, a_dims, b_dims) as host index arrays)


def _operands(a, b, grad_out=None):
    """The operands of a binary op checked (float, one dtype, one device, shapes that broadcast):
    ``(a, b, shape, kernels, geometry)``, ``geometry`` the kernels' ``(dims, a_dims, b_dims)``
    (for host operands kept per pair of shapes; the kernels only read them)."""
    a, b, kernels, entry = checked_pair(a, b, grad_out, _HOST_GEOMETRIES, _indexed_geometry)
    return a, b, entry[0], kernels, entry[1]


def _indexed_geometry(a_shape, b_shape, kernels):
    """:func:`broadcast_geometry` with the kernels' index arrays: ``(shape, (dims, a_dims, b_dims))``."""
    shape, *geometry = broadcast_geometry(a_shape, b_shape)
    return shape, tuple(index_array(kernels, g) for g in geometry)


def _empty_operand(a, b):
    """Whether an operand has no elements (NumPy then broadcasts to an empty result)."""
    return 0 in np.shape(a) or 0 in np.shape(b)


def _probe(a):
    """An operand with no elements as one of ones of its shape with each 0 made 1 (the checks
    of a real call then run on it), else ``a`` as it is."""
    shape = tuple(getattr(a, "shape", ()))
    if 0 not in shape or np.dtype(getattr(a, "dtype", object)).kind not in "biuf":
        return a
    return kernels_for(a=a).ones(tuple(max(s, 1) for s in shape), a.dtype)


def _binary(kernel_name, a, b):
    if _empty_operand(a, b):
        shape = broadcast_geometry(np.shape(a), np.shape(b))[0]
        a, b, _, kernels, _ = _operands(_probe(a), _probe(b))
        return kernels.empty(shape, a.dtype)
    a, b, shape, kernels, geometry = _operands(a, b)
    out = kernels.empty(shape, a.dtype)
    getattr(kernels, kernel_name)(kernels.asarray(a).reshape(-1), kernels.asarray(b).reshape(-1), out.reshape(-1),
                                  *geometry)
    return out


def bound_binary_kernel(kernel_name: str, a: Array, b: Array):
    """For a caller that repeats ``_binary(kernel_name, a, b)`` (:func:`subtract`,
    :func:`divide`, :func:`power`, :func:`maximum`, :func:`minimum`) on host arrays of these
    shapes and dtype: ``(run, shape)``, ``run(a, b, out)`` making that kernel call into ``out``
    (C-contiguous, of the result's ``shape`` and dtype) with the checks made now (a prepared
    inference plan: :mod:`cnnlab.prepared`); the kernel is looked up at each call. None for
    anything but C-contiguous host arrays of one float dtype, with elements, that broadcast."""
    if not host_float_pair(a, b) or _empty_operand(a, b):
        return None
    try:
        _, _, shape, kernels, geometry = _operands(a, b)
    except (TypeError, ValueError):
        return None
    if kernels.DEVICE == "cuda":
        return None

    def run(a, b, out):
        getattr(kernels, kernel_name)(a.reshape(-1), b.reshape(-1), out.reshape(-1), *geometry)
        return out
    return run, shape


def _binary_backward(kernel_name, a, b, grad_out):
    if _empty_operand(a, b):
        shape = broadcast_geometry(np.shape(a), np.shape(b))[0]
        a_shape, b_shape = np.shape(a), np.shape(b)
        a, b, _, kernels, _ = _operands(_probe(a), _probe(b), grad_out)
        if tuple(getattr(grad_out, "shape", ())) != shape:
            raise ValueError(f"grad_out must have shape {shape} (the forward output), got "
                             f"{tuple(getattr(grad_out, 'shape', ()))}")
        return kernels.zeros(a_shape, a.dtype), kernels.zeros(b_shape, a.dtype)  # sums of nothing
    a, b, shape, kernels, geometry = _operands(a, b, grad_out)
    grad_out = check_grad("grad_out", grad_out, shape, a.dtype)
    grad_a = kernels.empty(a.shape, a.dtype)
    grad_b = kernels.empty(b.shape, a.dtype)
    getattr(kernels, kernel_name)(kernels.asarray(a).reshape(-1), kernels.asarray(b).reshape(-1),
                                  kernels.asarray(grad_out).reshape(-1), grad_a.reshape(-1), grad_b.reshape(-1),
                                  *geometry)
    return grad_a, grad_b


def subtract(a: Array, b: Array) -> Array:
    """``a - b`` element-wise, with NumPy broadcasting: either operand, or both, may broadcast,
    e.g. (N, 1, W) and (N, C, 1) give (N, C, W).

    Parameters
    ----------
    a, b : arrays, float32 or float64, of one dtype and on one device

    Returns
    -------
    array of shape ``numpy.broadcast_shapes(a.shape, b.shape)``, on the inputs' device

    See Also
    --------
    subtract_backward
    cnnlab.kernels.cpu.elementwise.subtract_forward, cnnlab.kernels.cuda.elementwise.subtract_forward :
        the CPU/GPU twins.
    torch.sub, numpy.subtract
    """
    return _binary("subtract_forward", a, b)


def subtract_backward(a: Array, b: Array, grad_out: Array) -> tuple[Array, Array]:
    """Gradients of :func:`subtract`: ``(grad_a, grad_b)`` = ``grad_out`` and ``-grad_out``, each
    summed over the axes its operand was broadcast along (only the shapes of ``a``, ``b`` are used)."""
    return _binary_backward("subtract_backward", a, b, grad_out)


def divide(a: Array, b: Array) -> Array:
    """``a / b`` element-wise with NumPy broadcasting (+-inf, or NaN for 0 / 0, where ``b`` is 0).

    See Also
    --------
    subtract : the broadcasting rule.
    cnnlab.kernels.cpu.elementwise.divide_forward, torch.div, numpy.divide
    """
    return _binary("divide_forward", a, b)


def divide_backward(a: Array, b: Array, grad_out: Array) -> tuple[Array, Array]:
    """Gradients of :func:`divide`: ``grad_a = grad_out / b`` and ``grad_b = -grad_out * a / b**2``,
    each summed over the axes its operand was broadcast along."""
    return _binary_backward("divide_backward", a, b, grad_out)


def power(a: Array, b: Array) -> Array:
    """``a ** b`` element-wise with NumPy broadcasting (NaN for a negative base and a fractional
    exponent, inf for 0 to a negative power).

    See Also
    --------
    subtract : the broadcasting rule.
    cnnlab.kernels.cpu.elementwise.power_forward, torch.pow, numpy.power
    """
    return _binary("power_forward", a, b)


def power_backward(a: Array, b: Array, grad_out: Array) -> tuple[Array, Array]:
    """Gradients of :func:`power`, PyTorch's rule: ``grad_a = grad_out * b * a**(b - 1)``, 0
    where ``b == 0``; ``grad_b = grad_out * a**b * log(a)``, 0 where ``a == 0`` and ``b >= 0``
    (NaN for a negative base); each summed over the axes its operand was broadcast along."""
    return _binary_backward("power_backward", a, b, grad_out)


def maximum(a: Array, b: Array) -> Array:
    """The larger of ``a`` and ``b`` element-wise with NumPy broadcasting; NaN where either is NaN.

    The gradient (:func:`maximum_backward`) goes to the larger operand, half to each where they
    are equal, as PyTorch's ``torch.maximum``.

    See Also
    --------
    subtract : the broadcasting rule.
    cnnlab.kernels.cpu.elementwise.maximum_forward, torch.maximum, numpy.maximum
    """
    return _binary("maximum_forward", a, b)


def maximum_backward(a: Array, b: Array, grad_out: Array) -> tuple[Array, Array]:
    """Gradients of :func:`maximum`: ``grad_out`` to the larger operand, ``grad_out / 2`` to each
    on a tie, all of it to both where either is NaN (PyTorch's rule); each summed over the axes
    its operand was broadcast along."""
    return _binary_backward("maximum_backward", a, b, grad_out)


def minimum(a: Array, b: Array) -> Array:
    """The smaller of ``a`` and ``b`` element-wise with NumPy broadcasting; NaN where either is NaN.
    The gradient splits ties equally, as :func:`maximum`'s.

    See Also
    --------
    subtract : the broadcasting rule.
    cnnlab.kernels.cpu.elementwise.minimum_forward, torch.minimum, numpy.minimum
    """
    return _binary("minimum_forward", a, b)


def minimum_backward(a: Array, b: Array, grad_out: Array) -> tuple[Array, Array]:
    """Gradients of :func:`minimum`: ``grad_out`` to the smaller operand, half to each on a tie
    (PyTorch's rule); each summed over the axes its operand was broadcast along."""
    return _binary_backward("minimum_backward", a, b, grad_out)
