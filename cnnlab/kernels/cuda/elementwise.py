"""GPU element-wise math: grid-stride kernels for the unary functions, and binary ops where both
operands may broadcast.

Mirrors :mod:`cnnlab.kernels.cpu.elementwise`; same names, same parameters (``dims``,
``a_dims`` and ``b_dims`` are int64 device arrays). The loop bodies are the CPU twin's; the
domain checks in the scalar helpers also keep Numba's CUDA simulator, which runs them as
Python, from raising where a device gives NaN or inf.
"""

import math

from numba import cuda

from ._launch import launch_shape

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
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_TWO_OVER_SQRT_PI = 2 / math.sqrt(math.pi)
_GELU_TANH_SCALE = math.sqrt(2 / math.pi)
_GELU_TANH_CUBIC = 0.044715


# ----------------------------------------------------------------------------- scalar helpers


@cuda.jit(device=True)
def _sqrt(v):
    return math.sqrt(v) if v >= 0 else math.nan


@cuda.jit(device=True)
def _exp(v):
    return math.inf if v > _LARGEST_EXP else math.exp(v)


@cuda.jit(device=True)
def _log(v):
    return math.log(v) if v > 0 else (-math.inf if v == 0 else math.nan)


@cuda.jit(device=True)
def _sign(v):
    return 1.0 if v > 0 else (-1.0 if v < 0 else v)


@cuda.jit(device=True)
def _floor(v):
    if not abs(v) < _INTEGRAL:
        return v
    whole = float(int(v))
    return math.copysign(whole - 1.0 if whole > v else whole, v)


@cuda.jit(device=True)
def _ceil(v):
    if not abs(v) < _INTEGRAL:
        return v
    whole = float(int(v))
    return math.copysign(whole + 1.0 if whole < v else whole, v)


@cuda.jit(device=True)
def _gelu_tanh_inner(v):
    return math.tanh(_GELU_TANH_SCALE * (v + _GELU_TANH_CUBIC * v * v * v))


# ----------------------------------------------------------------------------- unary forward


@cuda.jit
def _sqrt_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = _sqrt(x[i])


@cuda.jit
def _exp_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = _exp(x[i])


@cuda.jit
def _log_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = _log(x[i])


@cuda.jit
def _erf_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = math.erf(x[i])


@cuda.jit
def _reciprocal_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = 1.0 / x[i]


@cuda.jit
def _abs_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = abs(x[i])


@cuda.jit
def _neg_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = -x[i]


@cuda.jit
def _floor_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = _floor(x[i])


@cuda.jit
def _ceil_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        out[i] = _ceil(x[i])


@cuda.jit
def _gelu_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        out[i] = 0.5 * v * math.erfc(-v * _SQRT_HALF)


@cuda.jit
def _gelu_tanh_kernel(x, out):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        out[i] = 0.5 * v * (1.0 + _gelu_tanh_inner(v))


def sqrt_forward(x, out):
    """``out = sqrt(x)``; NaN below 0 (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _sqrt_kernel[blocks, threads](x, out)


def exp_forward(x, out):
    """``out = exp(x)``; inf where it overflows (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _exp_kernel[blocks, threads](x, out)


def log_forward(x, out):
    """``out = log(x)``: -inf at 0, NaN below (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _log_kernel[blocks, threads](x, out)


def erf_forward(x, out):
    """``out = erf(x)`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _erf_kernel[blocks, threads](x, out)


def reciprocal_forward(x, out):
    """``out = 1 / x`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _reciprocal_kernel[blocks, threads](x, out)


def abs_forward(x, out):
    """``out = |x|`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _abs_kernel[blocks, threads](x, out)


def neg_forward(x, out):
    """``out = -x`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _neg_kernel[blocks, threads](x, out)


def floor_forward(x, out):
    """``out = floor(x)``, NumPy's (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _floor_kernel[blocks, threads](x, out)


def ceil_forward(x, out):
    """``out = ceil(x)``, NumPy's (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _ceil_kernel[blocks, threads](x, out)


def gelu_forward(x, out):
    """``out = x / 2 * erfc(-x / sqrt(2))`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _gelu_kernel[blocks, threads](x, out)


def gelu_tanh_forward(x, out):
    """GELU's tanh form (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _gelu_tanh_kernel[blocks, threads](x, out)


# ----------------------------------------------------------------------------- unary backward


@cuda.jit
def _sqrt_backward_kernel(x, grad_out, grad_x):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        grad_x[i] = 0.5 * grad_out[i] / _sqrt(x[i])


@cuda.jit
def _exp_backward_kernel(x, grad_out, grad_x):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        grad_x[i] = grad_out[i] * _exp(x[i])


@cuda.jit
def _log_backward_kernel(x, grad_out, grad_x):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        grad_x[i] = grad_out[i] / x[i]


@cuda.jit
def _erf_backward_kernel(x, grad_out, grad_x):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        grad_x[i] = grad_out[i] * _TWO_OVER_SQRT_PI * math.exp(-v * v)


@cuda.jit
def _reciprocal_backward_kernel(x, grad_out, grad_x):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        grad_x[i] = -grad_out[i] / (v * v)


@cuda.jit
def _abs_backward_kernel(x, grad_out, grad_x):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        grad_x[i] = grad_out[i] * _sign(x[i])


@cuda.jit
def _neg_backward_kernel(x, grad_out, grad_x):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        grad_x[i] = -grad_out[i]


@cuda.jit
def _zero_kernel(grad_x):
    for i in range(cuda.grid(1), grad_x.shape[0], cuda.gridsize(1)):
        grad_x[i] = 0


@cuda.jit
def _gelu_backward_kernel(x, grad_out, grad_x):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        cdf = 0.5 * math.erfc(-v * _SQRT_HALF)
        grad_x[i] = grad_out[i] * (cdf + v * _INV_SQRT_2PI * math.exp(-0.5 * v * v))


@cuda.jit
def _gelu_tanh_backward_kernel(x, grad_out, grad_x):
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        v = x[i]
        t = _gelu_tanh_inner(v)
        slope = _GELU_TANH_SCALE * (1.0 + 3.0 * _GELU_TANH_CUBIC * v * v)
        grad_x[i] = grad_out[i] * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * slope)


def sqrt_backward(x, grad_out, grad_x):
    """``grad_x = grad_out / (2 * sqrt(x))`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _sqrt_backward_kernel[blocks, threads](x, grad_out, grad_x)


def exp_backward(x, grad_out, grad_x):
    """``grad_x = grad_out * exp(x)`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _exp_backward_kernel[blocks, threads](x, grad_out, grad_x)


def log_backward(x, grad_out, grad_x):
    """``grad_x = grad_out / x`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _log_backward_kernel[blocks, threads](x, grad_out, grad_x)


def erf_backward(x, grad_out, grad_x):
    """``grad_x = grad_out * 2 / sqrt(pi) * exp(-x**2)`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _erf_backward_kernel[blocks, threads](x, grad_out, grad_x)


def reciprocal_backward(x, grad_out, grad_x):
    """``grad_x = -grad_out / x**2`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _reciprocal_backward_kernel[blocks, threads](x, grad_out, grad_x)


def abs_backward(x, grad_out, grad_x):
    """``grad_x = grad_out * sign(x)`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _abs_backward_kernel[blocks, threads](x, grad_out, grad_x)


def neg_backward(x, grad_out, grad_x):
    """``grad_x = -grad_out`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _neg_backward_kernel[blocks, threads](x, grad_out, grad_x)


def floor_backward(x, grad_out, grad_x):
    """``grad_x = 0`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _zero_kernel[blocks, threads](grad_x)


def ceil_backward(x, grad_out, grad_x):
    """``grad_x = 0`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _zero_kernel[blocks, threads](grad_x)


def gelu_backward(x, grad_out, grad_x):
    """``grad_x = grad_out * (Phi(x) + x * phi(x))`` (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _gelu_backward_kernel[blocks, threads](x, grad_out, grad_x)


def gelu_tanh_backward(x, grad_out, grad_x):
    """Derivative of GELU's tanh form, PyTorch's formula (1-D device arrays)."""
    blocks, threads = launch_shape(x.shape[0])
    _gelu_tanh_backward_kernel[blocks, threads](x, grad_out, grad_x)


# ----------------------------------------------------------------------------- broadcasting


@cuda.jit(device=True)
def _operand_index(i, dims, x_dims):
    rest = i
    j = 0
    step = 1
    for k in range(dims.shape[0] - 1, -1, -1):
        if x_dims[k] != 1:
            j += (rest % dims[k]) * step
            step *= x_dims[k]
        rest //= dims[k]
    return j


@cuda.jit(device=True)
def _output_index(j, r, dims, x_dims):
    i = 0
    step = 1
    rest_j = j
    rest_r = r
    for k in range(dims.shape[0] - 1, -1, -1):
        if x_dims[k] != 1:
            i += (rest_j % dims[k]) * step
            rest_j //= dims[k]
        else:
            i += (rest_r % dims[k]) * step
            rest_r //= dims[k]
        step *= dims[k]
    return i


@cuda.jit(device=True)
def _maximum(u, v):
    return u if u > v or u != u else v


@cuda.jit(device=True)
def _minimum(u, v):
    return u if u < v or u != u else v


@cuda.jit(device=True)
def _maximum_share(own, other):
    return 0.5 if own == other else (0.0 if own < other else 1.0)


@cuda.jit(device=True)
def _minimum_share(own, other):
    return 0.5 if own == other else (0.0 if own > other else 1.0)


# ----------------------------------------------------------------------------- binary forward


@cuda.jit
def _subtract_kernel(a, b, out, dims, a_dims, b_dims):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = a[_operand_index(i, dims, a_dims)] - b[_operand_index(i, dims, b_dims)]


@cuda.jit
def _divide_kernel(a, b, out, dims, a_dims, b_dims):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = a[_operand_index(i, dims, a_dims)] / b[_operand_index(i, dims, b_dims)]


@cuda.jit
def _power_kernel(a, b, out, dims, a_dims, b_dims):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = a[_operand_index(i, dims, a_dims)] ** b[_operand_index(i, dims, b_dims)]


@cuda.jit
def _maximum_kernel(a, b, out, dims, a_dims, b_dims):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = _maximum(a[_operand_index(i, dims, a_dims)], b[_operand_index(i, dims, b_dims)])


@cuda.jit
def _minimum_kernel(a, b, out, dims, a_dims, b_dims):
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = _minimum(a[_operand_index(i, dims, a_dims)], b[_operand_index(i, dims, b_dims)])


def subtract_forward(a, b, out, dims, a_dims, b_dims):
    """``out = a - b``, broadcast; contract of :func:`cnnlab.kernels.cpu.elementwise.subtract_forward`."""
    blocks, threads = launch_shape(out.shape[0])
    _subtract_kernel[blocks, threads](a, b, out, dims, a_dims, b_dims)


def divide_forward(a, b, out, dims, a_dims, b_dims):
    """``out = a / b``, broadcast."""
    blocks, threads = launch_shape(out.shape[0])
    _divide_kernel[blocks, threads](a, b, out, dims, a_dims, b_dims)


def power_forward(a, b, out, dims, a_dims, b_dims):
    """``out = a ** b``, broadcast."""
    blocks, threads = launch_shape(out.shape[0])
    _power_kernel[blocks, threads](a, b, out, dims, a_dims, b_dims)


def maximum_forward(a, b, out, dims, a_dims, b_dims):
    """``out = max(a, b)``, NaN if either is NaN, broadcast."""
    blocks, threads = launch_shape(out.shape[0])
    _maximum_kernel[blocks, threads](a, b, out, dims, a_dims, b_dims)


def minimum_forward(a, b, out, dims, a_dims, b_dims):
    """``out = min(a, b)``, NaN if either is NaN, broadcast."""
    blocks, threads = launch_shape(out.shape[0])
    _minimum_kernel[blocks, threads](a, b, out, dims, a_dims, b_dims)


# ----------------------------------------------------------------------------- binary backward
# one launch per operand: each thread owns one element of the gradient and sums over the output
# elements that read it (no atomics)


@cuda.jit
def _subtract_backward_kernel(grad_out, grad_x, dims, x_dims, sign):
    repeats = grad_out.shape[0] // grad_x.shape[0]
    for j in range(cuda.grid(1), grad_x.shape[0], cuda.gridsize(1)):
        total = 0.0
        for r in range(repeats):
            total += grad_out[_output_index(j, r, dims, x_dims)]
        grad_x[j] = sign * total


@cuda.jit
def _divide_grad_a_kernel(b, grad_out, grad_a, dims, a_dims, b_dims):
    repeats = grad_out.shape[0] // grad_a.shape[0]
    for j in range(cuda.grid(1), grad_a.shape[0], cuda.gridsize(1)):
        total = 0.0
        for r in range(repeats):
            i = _output_index(j, r, dims, a_dims)
            total += grad_out[i] / b[_operand_index(i, dims, b_dims)]
        grad_a[j] = total


@cuda.jit
def _divide_grad_b_kernel(a, b, grad_out, grad_b, dims, a_dims, b_dims):
    repeats = grad_out.shape[0] // grad_b.shape[0]
    for j in range(cuda.grid(1), grad_b.shape[0], cuda.gridsize(1)):
        total = 0.0
        v = b[j]
        for r in range(repeats):
            i = _output_index(j, r, dims, b_dims)
            total -= grad_out[i] * a[_operand_index(i, dims, a_dims)] / (v * v)
        grad_b[j] = total


@cuda.jit
def _power_grad_a_kernel(a, b, grad_out, grad_a, dims, a_dims, b_dims):
    repeats = grad_out.shape[0] // grad_a.shape[0]
    for j in range(cuda.grid(1), grad_a.shape[0], cuda.gridsize(1)):
        total = 0.0
        base = a[j]
        for r in range(repeats):
            i = _output_index(j, r, dims, a_dims)
            e = b[_operand_index(i, dims, b_dims)]
            if e != 0:
                total += grad_out[i] * e * base ** (e - 1)
        grad_a[j] = total


@cuda.jit
def _power_grad_b_kernel(a, b, grad_out, grad_b, dims, a_dims, b_dims):
    repeats = grad_out.shape[0] // grad_b.shape[0]
    for j in range(cuda.grid(1), grad_b.shape[0], cuda.gridsize(1)):
        total = 0.0
        e = b[j]
        for r in range(repeats):
            i = _output_index(j, r, dims, b_dims)
            base = a[_operand_index(i, dims, a_dims)]
            if not (base == 0 and e >= 0):
                total += grad_out[i] * base ** e * _log(base)
        grad_b[j] = total


@cuda.jit
def _select_backward_kernel(own, other, grad_out, grad_own, dims, own_dims, other_dims, smaller):
    # maximum (smaller False) or minimum (smaller True): grad_own of one operand
    repeats = grad_out.shape[0] // grad_own.shape[0]
    for j in range(cuda.grid(1), grad_own.shape[0], cuda.gridsize(1)):
        total = 0.0
        for r in range(repeats):
            i = _output_index(j, r, dims, own_dims)
            w = other[_operand_index(i, dims, other_dims)]
            total += grad_out[i] * (_minimum_share(own[j], w) if smaller else _maximum_share(own[j], w))
        grad_own[j] = total


def subtract_backward(a, b, grad_out, grad_a, grad_b, dims, a_dims, b_dims):
    """``grad_a = sum(grad_out)``, ``grad_b = -sum(grad_out)`` over each one's broadcast axes."""
    blocks, threads = launch_shape(grad_a.shape[0])
    _subtract_backward_kernel[blocks, threads](grad_out, grad_a, dims, a_dims, 1.0)
    blocks, threads = launch_shape(grad_b.shape[0])
    _subtract_backward_kernel[blocks, threads](grad_out, grad_b, dims, b_dims, -1.0)


def divide_backward(a, b, grad_out, grad_a, grad_b, dims, a_dims, b_dims):
    """``grad_a = sum(grad_out / b)``, ``grad_b = sum(-grad_out * a / b**2)``."""
    blocks, threads = launch_shape(grad_a.shape[0])
    _divide_grad_a_kernel[blocks, threads](b, grad_out, grad_a, dims, a_dims, b_dims)
    blocks, threads = launch_shape(grad_b.shape[0])
    _divide_grad_b_kernel[blocks, threads](a, b, grad_out, grad_b, dims, a_dims, b_dims)


def power_backward(a, b, grad_out, grad_a, grad_b, dims, a_dims, b_dims):
    """PyTorch's rule; contract of :func:`cnnlab.kernels.cpu.elementwise.power_backward`."""
    blocks, threads = launch_shape(grad_a.shape[0])
    _power_grad_a_kernel[blocks, threads](a, b, grad_out, grad_a, dims, a_dims, b_dims)
    blocks, threads = launch_shape(grad_b.shape[0])
    _power_grad_b_kernel[blocks, threads](a, b, grad_out, grad_b, dims, a_dims, b_dims)


def maximum_backward(a, b, grad_out, grad_a, grad_b, dims, a_dims, b_dims):
    """``grad_out`` to the larger operand, half to each on a tie (PyTorch's rule)."""
    blocks, threads = launch_shape(grad_a.shape[0])
    _select_backward_kernel[blocks, threads](a, b, grad_out, grad_a, dims, a_dims, b_dims, False)
    blocks, threads = launch_shape(grad_b.shape[0])
    _select_backward_kernel[blocks, threads](b, a, grad_out, grad_b, dims, b_dims, a_dims, False)


def minimum_backward(a, b, grad_out, grad_a, grad_b, dims, a_dims, b_dims):
    """``grad_out`` to the smaller operand, half to each on a tie (PyTorch's rule)."""
    blocks, threads = launch_shape(grad_a.shape[0])
    _select_backward_kernel[blocks, threads](a, b, grad_out, grad_a, dims, a_dims, b_dims, True)
    blocks, threads = launch_shape(grad_b.shape[0])
    _select_backward_kernel[blocks, threads](b, a, grad_out, grad_b, dims, b_dims, a_dims, True)
