"""CPU element-wise math: unary functions over flat arrays, and binary ops where both operands
may broadcast.

Unary kernels take 1-D (flattened) arrays; ``*_backward`` takes the forward input ``x`` and
``grad_out``. Values outside a function's domain give what NumPy gives (NaN for the square
root or logarithm of a negative number, -inf for log 0, inf for 1/0), never an error.

Binary kernels take flat arrays and the broadcast geometry as three int64 arrays of one length:
``dims``, the output's shape, and ``a_dims``, ``b_dims``, the operands' shapes with 1 on every
axis they are broadcast along (adjacent axes may be merged beforehand). Element ``i`` of the
output reads ``a[operand_index(i, dims, a_dims)]`` and ``b[operand_index(i, dims, b_dims)]``.
In ``*_backward`` each thread owns one element of ``grad_a`` (then of ``grad_b``) and sums, in
float64, over the output elements that read it: no atomics.

Mirrors :mod:`cnnlab.kernels.cuda.elementwise`.
"""

import math

import numpy as np
from numba import njit, prange

from ._broadcast import DIVIDE, MAXIMUM, MINIMUM, POWER, SUBTRACT, operand_index, run_binary
from ._exp import gelu

__all__ = [  # the kernels of this file
    "abs_backward",
    "abs_forward",
    "ceil_backward",
    "ceil_forward",
    "divide_backward",
    "divide_forward",
    "erf_backward",
    "erf_forward",
    "exp_backward",
    "exp_forward",
    "floor_backward",
    "floor_forward",
    "gelu_backward",
    "gelu_forward",
    "gelu_tanh_backward",
    "gelu_tanh_forward",
    "log_backward",
    "log_forward",
    "maximum_backward",
    "maximum_forward",
    "minimum_backward",
    "minimum_forward",
    "neg_backward",
    "neg_forward",
    "power_backward",
    "power_forward",
    "reciprocal_backward",
    "reciprocal_forward",
    "sqrt_backward",
    "sqrt_forward",
    "subtract_backward",
    "subtract_forward",
]

_LARGEST_EXP = 709.782712893384  # log of the largest float64: exp of anything above is inf
_INTEGRAL = 4503599627370496.0  # 2**52: every float at least this large is an integer
_SQRT_HALF = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)  # the standard normal density at 0
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)  # the derivative of erf at 0
_GELU_TANH_SCALE = math.sqrt(2 / math.pi)  # gelu's tanh form: tanh(scale * (x + cubic * x**3))
_GELU_TANH_CUBIC = 0.044715


# ----------------------------------------------------------------------------- scalar helpers


@njit(cache=True)
def _sqrt(v):
    return math.sqrt(v) if v >= 0 else math.nan  # NaN stays NaN


@njit(cache=True)
def _exp(v):
    return math.inf if v > _LARGEST_EXP else math.exp(v)  # NaN stays NaN


@njit(cache=True)
def _log(v):
    return math.log(v) if v > 0 else (-math.inf if v == 0 else math.nan)


@njit(cache=True)
def _sign(v):
    return 1.0 if v > 0 else (-1.0 if v < 0 else v)  # 0 and NaN give themselves


@njit(cache=True)
def _floor(v):
    """Largest integer not above ``v``, as a float with ``v``'s sign (``floor(-0.5)`` is -1,
    ``floor(-0.0)`` is -0.0); NaN and infinities stay."""
    if not abs(v) < _INTEGRAL:
        return v
    whole = float(int(v))  # rounded toward zero
    return math.copysign(whole - 1.0 if whole > v else whole, v)


@njit(cache=True)
def _ceil(v):
    """Smallest integer not below ``v``, as a float with ``v``'s sign (``ceil(-0.5)`` is -0.0)."""
    if not abs(v) < _INTEGRAL:
        return v
    whole = float(int(v))
    return math.copysign(whole + 1.0 if whole < v else whole, v)


@njit(cache=True)
def _gelu_tanh_inner(v):
    return math.tanh(_GELU_TANH_SCALE * (v + _GELU_TANH_CUBIC * v * v * v))


# ----------------------------------------------------------------------------- unary forward


@njit(parallel=True, cache=True)
def sqrt_forward(x, out):
    """``out = sqrt(x)``; NaN below 0 (1-D arrays)."""
    for i in prange(x.shape[0]):
        out[i] = _sqrt(x[i])


@njit(parallel=True, cache=True)
def exp_forward(x, out):
    """``out = exp(x)``; inf where it overflows (1-D arrays)."""
    for i in prange(x.shape[0]):
        out[i] = _exp(x[i])


@njit(parallel=True, cache=True)
def log_forward(x, out):
    """``out = log(x)``: -inf at 0, NaN below (1-D arrays)."""
    for i in prange(x.shape[0]):
        out[i] = _log(x[i])


@njit(parallel=True, cache=True)
def erf_forward(x, out):
    """``out = erf(x)``, the error function (1-D arrays)."""
    for i in prange(x.shape[0]):
        out[i] = math.erf(x[i])


@njit(parallel=True, cache=True)
def reciprocal_forward(x, out):
    """``out = 1 / x``; +-inf at +-0 (1-D arrays)."""
    for i in prange(x.shape[0]):
        out[i] = 1.0 / x[i]


@njit(parallel=True, cache=True)
def abs_forward(x, out):
    """``out = |x|`` (1-D arrays)."""
    for i in prange(x.shape[0]):
        out[i] = abs(x[i])


@njit(parallel=True, cache=True)
def neg_forward(x, out):
    """``out = -x`` (1-D arrays)."""
    for i in prange(x.shape[0]):
        out[i] = -x[i]


@njit(parallel=True, cache=True)
def floor_forward(x, out):
    """``out = floor(x)``, NumPy's (signed zeros, NaN and infinities kept; 1-D arrays)."""
    for i in prange(x.shape[0]):
        out[i] = _floor(x[i])


@njit(parallel=True, cache=True)
def ceil_forward(x, out):
    """``out = ceil(x)``, NumPy's (signed zeros, NaN and infinities kept; 1-D arrays)."""
    for i in prange(x.shape[0]):
        out[i] = _ceil(x[i])


@njit(parallel=True, cache=True, error_model="numpy")
def gelu_forward(x, out):
    """``out = x * Phi(x) = x / 2 * erfc(-x / sqrt(2))``: GELU with the normal distribution's
    ``Phi`` (erfc keeps its precision for negative ``x``; 1-D arrays)."""
    for i in prange(x.shape[0]):
        v = x[i]
        out[i] = gelu(v)


@njit(parallel=True, cache=True)
def gelu_tanh_forward(x, out):
    """``out = x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x**3)))``: GELU's tanh form
    (1-D arrays)."""
    for i in prange(x.shape[0]):
        v = x[i]
        out[i] = 0.5 * v * (1.0 + _gelu_tanh_inner(v))


# ----------------------------------------------------------------------------- unary backward


@njit(parallel=True, cache=True)
def sqrt_backward(x, grad_out, grad_x):
    """``grad_x = grad_out / (2 * sqrt(x))`` (inf at 0, NaN below; 1-D arrays)."""
    for i in prange(x.shape[0]):
        grad_x[i] = 0.5 * grad_out[i] / _sqrt(x[i])


@njit(parallel=True, cache=True)
def exp_backward(x, grad_out, grad_x):
    """``grad_x = grad_out * exp(x)`` (1-D arrays)."""
    for i in prange(x.shape[0]):
        grad_x[i] = grad_out[i] * _exp(x[i])


@njit(parallel=True, cache=True)
def log_backward(x, grad_out, grad_x):
    """``grad_x = grad_out / x`` (1-D arrays)."""
    for i in prange(x.shape[0]):
        grad_x[i] = grad_out[i] / x[i]


@njit(parallel=True, cache=True)
def erf_backward(x, grad_out, grad_x):
    """``grad_x = grad_out * 2 / sqrt(pi) * exp(-x**2)`` (1-D arrays)."""
    for i in prange(x.shape[0]):
        v = x[i]
        grad_x[i] = grad_out[i] * _TWO_OVER_SQRT_PI * math.exp(-v * v)


@njit(parallel=True, cache=True)
def reciprocal_backward(x, grad_out, grad_x):
    """``grad_x = -grad_out / x**2`` (1-D arrays)."""
    for i in prange(x.shape[0]):
        v = x[i]
        grad_x[i] = -grad_out[i] / (v * v)


@njit(parallel=True, cache=True)
def abs_backward(x, grad_out, grad_x):
    """``grad_x = grad_out * sign(x)``: 0 at 0, NaN at NaN, as PyTorch (1-D arrays)."""
    for i in prange(x.shape[0]):
        grad_x[i] = grad_out[i] * _sign(x[i])


@njit(parallel=True, cache=True)
def neg_backward(x, grad_out, grad_x):
    """``grad_x = -grad_out`` (1-D arrays; ``x`` is not read)."""
    for i in prange(x.shape[0]):
        grad_x[i] = -grad_out[i]


@njit(parallel=True, cache=True)
def floor_backward(x, grad_out, grad_x):
    """``grad_x = 0``: a step function's derivative, as PyTorch (1-D arrays)."""
    for i in prange(x.shape[0]):
        grad_x[i] = 0


@njit(parallel=True, cache=True)
def ceil_backward(x, grad_out, grad_x):
    """``grad_x = 0``: a step function's derivative, as PyTorch (1-D arrays)."""
    for i in prange(x.shape[0]):
        grad_x[i] = 0


@njit(parallel=True, cache=True)
def gelu_backward(x, grad_out, grad_x):
    """``grad_x = grad_out * (Phi(x) + x * phi(x))``, ``phi`` the normal density (1-D arrays)."""
    for i in prange(x.shape[0]):
        v = x[i]
        cdf = 0.5 * math.erfc(-v * _SQRT_HALF)
        grad_x[i] = grad_out[i] * (cdf + v * _INV_SQRT_2PI * math.exp(-0.5 * v * v))


@njit(parallel=True, cache=True)
def gelu_tanh_backward(x, grad_out, grad_x):
    """Derivative of :func:`gelu_tanh_forward`, written as PyTorch writes it:
    ``(1 + t) / 2 + x / 2 * (1 - t**2) * sqrt(2 / pi) * (1 + 3 * 0.044715 * x**2)`` with ``t`` the
    tanh (1-D arrays)."""
    for i in prange(x.shape[0]):
        v = x[i]
        t = _gelu_tanh_inner(v)
        slope = _GELU_TANH_SCALE * (1.0 + 3.0 * _GELU_TANH_CUBIC * v * v)
        grad_x[i] = grad_out[i] * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * slope)


# ----------------------------------------------------------------------------- broadcasting


@njit(cache=True)
def _output_index(j, r, dims, x_dims):
    """Flat index of the ``r``-th output element (in row-major order) that reads element ``j``
    of an operand of shape ``x_dims``: ``r`` runs over the axes the operand is broadcast along."""
    i = 0
    step = 1
    rest_j = np.int64(j)
    rest_r = np.int64(r)
    for k in range(dims.shape[0] - 1, -1, -1):
        if x_dims[k] != 1:
            i += (rest_j % dims[k]) * step
            rest_j //= dims[k]
        else:
            i += (rest_r % dims[k]) * step
            rest_r //= dims[k]
        step *= dims[k]
    return i


@njit(cache=True)
def _maximum_share(own, other):
    """The part of the gradient of ``maximum`` that goes to ``own`` (PyTorch's rule): all of it
    when it is larger, half on a tie, none when smaller; all of it when either is NaN."""
    return 0.5 if own == other else (0.0 if own < other else 1.0)


@njit(cache=True)
def _minimum_share(own, other):
    """As :func:`_maximum_share` for ``minimum``: none when ``own`` is larger."""
    return 0.5 if own == other else (0.0 if own > other else 1.0)


# ----------------------------------------------------------------------------- binary forward


def _binary_forward(op, a, b, out, dims, a_dims, b_dims):
    run_binary(a, b, out, dims, a_dims, b_dims, op)


def subtract_forward(a, b, out, dims, a_dims, b_dims):
    """``out = a - b``, each operand broadcast where its dims are 1."""
    _binary_forward(SUBTRACT, a, b, out, dims, a_dims, b_dims)


def divide_forward(a, b, out, dims, a_dims, b_dims):
    """``out = a / b`` (+-inf or NaN where ``b`` is 0), each operand broadcast where its dims are 1."""
    _binary_forward(DIVIDE, a, b, out, dims, a_dims, b_dims)


def power_forward(a, b, out, dims, a_dims, b_dims):
    """``out = a ** b`` (NaN for a negative base and a fractional exponent), broadcast."""
    _binary_forward(POWER, a, b, out, dims, a_dims, b_dims)


def maximum_forward(a, b, out, dims, a_dims, b_dims):
    """``out = max(a, b)``, NaN if either is NaN, broadcast."""
    _binary_forward(MAXIMUM, a, b, out, dims, a_dims, b_dims)


def minimum_forward(a, b, out, dims, a_dims, b_dims):
    """``out = min(a, b)``, NaN if either is NaN, broadcast."""
    _binary_forward(MINIMUM, a, b, out, dims, a_dims, b_dims)


# ----------------------------------------------------------------------------- binary backward
# grad_a[j] sums over the output elements i that read a[j] (grad_out.size // grad_a.size of them);
# likewise grad_b.


@njit(parallel=True, cache=True)
def subtract_backward(a, b, grad_out, grad_a, grad_b, dims, a_dims, b_dims):
    """``grad_a = sum(grad_out)``, ``grad_b = -sum(grad_out)`` over each one's broadcast axes
    (``a`` and ``b`` are not read)."""
    repeats = grad_out.shape[0] // grad_a.shape[0]
    for j in prange(grad_a.shape[0]):
        total = 0.0
        for r in range(repeats):
            total += grad_out[_output_index(j, r, dims, a_dims)]
        grad_a[j] = total
    repeats = grad_out.shape[0] // grad_b.shape[0]
    for j in prange(grad_b.shape[0]):
        total = 0.0
        for r in range(repeats):
            total -= grad_out[_output_index(j, r, dims, b_dims)]
        grad_b[j] = total


@njit(parallel=True, cache=True)
def divide_backward(a, b, grad_out, grad_a, grad_b, dims, a_dims, b_dims):
    """``grad_a = sum(grad_out / b)``, ``grad_b = sum(-grad_out * a / b**2)`` over each one's
    broadcast axes."""
    repeats = grad_out.shape[0] // grad_a.shape[0]
    for j in prange(grad_a.shape[0]):
        total = 0.0
        for r in range(repeats):
            i = _output_index(j, r, dims, a_dims)
            total += grad_out[i] / b[operand_index(i, dims, b_dims)]
        grad_a[j] = total
    repeats = grad_out.shape[0] // grad_b.shape[0]
    for j in prange(grad_b.shape[0]):
        total = 0.0
        v = b[j]
        for r in range(repeats):
            i = _output_index(j, r, dims, b_dims)
            total -= grad_out[i] * a[operand_index(i, dims, a_dims)] / (v * v)
        grad_b[j] = total


@njit(parallel=True, cache=True)
def power_backward(a, b, grad_out, grad_a, grad_b, dims, a_dims, b_dims):
    """PyTorch's rule: ``grad_a = sum(grad_out * b * a**(b - 1))``, 0 where ``b == 0``;
    ``grad_b = sum(grad_out * a**b * log(a))``, 0 where ``a == 0`` and ``b >= 0`` (NaN for a
    negative base); each over its broadcast axes."""
    repeats = grad_out.shape[0] // grad_a.shape[0]
    for j in prange(grad_a.shape[0]):
        total = 0.0
        base = a[j]
        for r in range(repeats):
            i = _output_index(j, r, dims, a_dims)
            e = b[operand_index(i, dims, b_dims)]
            if e != 0:
                total += grad_out[i] * e * base ** (e - 1)
        grad_a[j] = total
    repeats = grad_out.shape[0] // grad_b.shape[0]
    for j in prange(grad_b.shape[0]):
        total = 0.0
        e = b[j]
        for r in range(repeats):
            i = _output_index(j, r, dims, b_dims)
            base = a[operand_index(i, dims, a_dims)]
            if not (base == 0 and e >= 0):
                total += grad_out[i] * base ** e * _log(base)
        grad_b[j] = total


@njit(parallel=True, cache=True)
def maximum_backward(a, b, grad_out, grad_a, grad_b, dims, a_dims, b_dims):
    """``grad_out`` to the larger operand, half to each on a tie, all to both where either is
    NaN (PyTorch's rule); each summed over its broadcast axes."""
    repeats = grad_out.shape[0] // grad_a.shape[0]
    for j in prange(grad_a.shape[0]):
        total = 0.0
        for r in range(repeats):
            i = _output_index(j, r, dims, a_dims)
            total += grad_out[i] * _maximum_share(a[j], b[operand_index(i, dims, b_dims)])
        grad_a[j] = total
    repeats = grad_out.shape[0] // grad_b.shape[0]
    for j in prange(grad_b.shape[0]):
        total = 0.0
        for r in range(repeats):
            i = _output_index(j, r, dims, b_dims)
            total += grad_out[i] * _maximum_share(b[j], a[operand_index(i, dims, a_dims)])
        grad_b[j] = total


@njit(parallel=True, cache=True)
def minimum_backward(a, b, grad_out, grad_a, grad_b, dims, a_dims, b_dims):
    """``grad_out`` to the smaller operand, half to each on a tie, all to both where either is
    NaN (PyTorch's rule); each summed over its broadcast axes."""
    repeats = grad_out.shape[0] // grad_a.shape[0]
    for j in prange(grad_a.shape[0]):
        total = 0.0
        for r in range(repeats):
            i = _output_index(j, r, dims, a_dims)
            total += grad_out[i] * _minimum_share(a[j], b[operand_index(i, dims, b_dims)])
        grad_a[j] = total
    repeats = grad_out.shape[0] // grad_b.shape[0]
    for j in prange(grad_b.shape[0]):
        total = 0.0
        for r in range(repeats):
            i = _output_index(j, r, dims, b_dims)
            total += grad_out[i] * _minimum_share(b[j], a[operand_index(i, dims, a_dims)])
        grad_b[j] = total
