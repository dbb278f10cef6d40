"""float32 ``exp(-|v|)``, GELU's ``erfc`` and ``tanh`` written out so that the compiler
vectorizes the CPU kernels' loops of them (sigmoid, SiLU, GELU, tanh, the convolution epilogue).

Numba compiles ``math.exp`` to a call of the C library's ``exp``/``expf`` per element (no vector
math library ships with the PyPI builds of llvmlite), so a loop of sigmoids ran one element at a
time. For float32, :func:`exp_neg_abs` is Cephes' ``expf`` written out: ``t = -|v|`` reduced to
``r = t - n ln 2`` (``n`` the nearest integer of ``t / ln 2``, ``ln 2`` in two parts), a degree-5
polynomial for ``exp(r)``, and ``2**n`` built from its bits (``n`` is at most 0, at least -126 for
``t >= -87.34``, so always a normal float); below that ``exp(t)`` is 0 (as the C library's, which
would give a subnormal or 0). Within 1 ulp of the float64 result over ``[-87.3, 0]`` (checked in
``tests/test_activation.py``); NaN stays NaN. :func:`erfc_of_scaled_negative` (GELU) and
:func:`tanh` are built on it (Numerical Recipes' erfc with its exponent kept exact in two
float32 parts; Cephes' tanhf). float64 keeps the C library's functions throughout.
"""

import math

import numpy as np
from llvmlite import binding, ir
from numba import njit, types
from numba.extending import intrinsic, overload

_F = np.float32
_LOWEST = _F(-87.33654)  # exp of anything below is not a normal float32
_LOG2E = _F(1.44269504088896341)
_LN2_HIGH, _LN2_LOW = _F(0.693359375), _F(-2.12194440e-4)
_P0, _P1, _P2, _P3, _P4, _P5 = (_F(1.9875691500e-4), _F(1.3981999507e-3), _F(8.3334519073e-3),
                                _F(4.1665795894e-2), _F(1.6666665459e-1), _F(5.0000001201e-1))
_HALF, _ZERO, _TWO = _F(0.5), _F(0.0), _F(2.0)
ONE = _F(1.0)  # ONE / (ONE + e) stays float32 for a float32 e (a float64 literal would not)


@intrinsic
def _power_of_two(typingctx, n):
    """The float32 ``2**n`` for a float ``n`` that holds an integer from -126 to 127: its bits
    built as ``(n + 127) << 23`` in 32-bit integers (so that a loop of it vectorizes: a
    conversion to a 64-bit integer has no vector instruction before AVX-512)."""
    if n not in (types.float32, types.float64):
        return None

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        exponent = builder.add(builder.fptosi(args[0], i32), ir.Constant(i32, 127))
        return builder.bitcast(builder.shl(exponent, ir.Constant(i32, 23)), ir.FloatType())
    return types.float32(n), codegen


_HAS_FMA = bool(binding.get_host_cpu_features().get("fma"))


@intrinsic
def _fma(typingctx, a, b, c):
    """``a * b + c`` as one fused multiply-add, rounded once, where the processor has the
    instruction (every AVX2 processor); a product and a sum elsewhere, where LLVM's ``fma`` would
    be a library call. The polynomials below in Horner's form: GELU's loop took 0.19 ms with a
    product and a sum a step, 0.14 with one instruction (96x56x56, 2 threads, scratch timings)."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None

    def codegen(context, builder, signature, args):
        x, y, z = args
        return builder.fma(x, y, z) if _HAS_FMA else builder.fadd(builder.fmul(x, y), z)
    return a(a, b, c), codegen


@njit(inline="always")
def _exp_polynomial(r):
    """Cephes' ``expf`` polynomial, ``exp(r)`` for ``|r| <= ln(2) / 2`` (float32), its steps
    fused multiply-adds (:func:`_fma`)."""
    y = _fma(_fma(_fma(_fma(_fma(_P0, r, _P1), r, _P2), r, _P3), r, _P4), r, _P5)
    return _fma(y, r * r, r) + ONE


def exp_neg_abs(v):
    """``exp(-|v|)``, in ``[0, 1]``; compiled code gets :func:`_exp_neg_abs_overload`'s version."""
    return math.exp(-abs(v))


@overload(exp_neg_abs, jit_options={"error_model": "numpy"})
def _exp_neg_abs_overload(v):
    if v != types.float32:
        return lambda v: math.exp(-abs(v))

    def exp_neg_abs_float32(v):
        t = -abs(v)
        c = _LOWEST if t < _LOWEST else t  # NaN passes through
        n = np.floor(c * _LOG2E + _HALF)  # (math.floor would give an int64, and float64 arithmetic after it)
        r = c - n * _LN2_HIGH - n * _LN2_LOW
        y = _exp_polynomial(r) * _power_of_two(n)
        return _ZERO if t < _LOWEST else y
    return exp_neg_abs_float32


_SQRT_HALF = math.sqrt(0.5)
_ERFC = [_F(c) for c in (-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806, 0.27886807,
                          -1.13520398, 1.48851587, -0.82215223, 0.17087277)]
_HALF_SQRT_HALF = _F(0.5 * math.sqrt(0.5))
_SPLIT = _F(4097.0)  # 2**12 + 1: Veltkamp's split of a float32 into 12 bits and the rest


def erfc_of_scaled_negative(v):
    """``erfc(-v / sqrt(2))`` (GELU's ``2 Phi(v)``); compiled code gets the overload's version."""
    return math.erfc(-v * _SQRT_HALF)


@overload(erfc_of_scaled_negative, jit_options={"error_model": "numpy"})
def _erfc_of_scaled_negative_overload(v):
    if v != types.float32:
        return lambda v: math.erfc(-v * _SQRT_HALF)
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 = _ERFC

    def erfc_float32(v):
        # Numerical Recipes' erfc (relative error under 1.2e-7 for a >= 0): erfc(a) = t exp(-a**2
        # + P(t)), t = 1 / (1 + a / 2); erfc(-a) = 2 - erfc(a). Both signs in one expression, all
        # of it float32 (twice the lanes a vector that float64 had). The exponent's -a**2 =
        # -v**2 / 2 (down to -87) is kept exact: |v| split into a high part of 12 bits and the rest
        # (Veltkamp), whose products are exact in float32, and its high square reduced by
        # n * ln(2)'s high part first (an exact difference), so that the exponent's rounding does
        # not grow with it.
        av = abs(v)
        t = ONE / (ONE + av * _HALF_SQRT_HALF)
        p = _fma(t, _fma(t, _fma(t, _fma(t, _fma(t, _fma(t, _fma(t, _fma(t, _fma(t, c9, c8), c7), c6), c5), c4), c3),
                                                  c2), c1), c0)
        s = av * _SPLIT
        high = s - (s - av)
        rest = av - high
        c = min(p - _HALF * av * av, _ZERO)  # (at most about 3e-8 above 0, a = 0)
        low = c < _LOWEST
        c = _LOWEST if low else c  # NaN passes through
        n = np.floor(c * _LOG2E + _HALF)
        r = (-_HALF * high * high - n * _LN2_HIGH) + (((p - high * rest) - _HALF * rest * rest) - n * _LN2_LOW)
        y = _exp_polynomial(r) * _power_of_two(n)
        e = _ZERO if low else t * y
        return e if v < 0 else _TWO - e
    return erfc_float32


def gelu(v):
    """GELU, ``v Phi(v) = v / 2 * erfc(-v / sqrt(2))``; compiled code gets the overload's version."""
    return 0.5 * v * math.erfc(-v * _SQRT_HALF)


@overload(gelu, jit_options={"error_model": "numpy"})
def _gelu_overload(v):
    if v != types.float32:
        return lambda v: 0.5 * v * math.erfc(-v * _SQRT_HALF)
    return lambda v: _HALF * v * erfc_of_scaled_negative(v)  # (a float64 0.5 would make it float64)


_TANH = [_F(c) for c in (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
                          -3.33332819422e-1)]
_TANH_SMALL = _F(0.625)


def tanh(v):
    """``tanh(v)``; compiled code gets the overload's version."""
    return math.tanh(v)


@overload(tanh, jit_options={"error_model": "numpy"})
def _tanh_overload(v):
    if v != types.float32:
        return lambda v: math.tanh(v)
    t0, t1, t2, t3, t4 = _TANH

    def tanh_float32(v):
        # Cephes' tanhf: an odd polynomial below |v| = 0.625, else (1 - e) / (1 + e) with
        # e = exp(-2 |v|) <= 0.29 (no cancellation); both computed, one selected, so loops vectorize
        z = v * v
        small = v * (ONE + ((((t0 * z + t1) * z + t2) * z + t3) * z + t4) * z)  # keeps the sign of 0
        e = exp_neg_abs(_TWO * v)
        large = (ONE - e) / (ONE + e)
        large = large if v >= 0 else -large
        return small if abs(v) < _TANH_SMALL else large  # NaN: large, which is NaN
    return tanh_float32
