"""The fused epilogue every forward convolution path ends with, on each output row
(:func:`_finish_row`): ``out = act(scale[f] * acc + shift[f] + residual)``, so a bias, a folded
batch normalization, a residual addition and an activation cost no extra pass over memory. The
activation codes are :data:`cnnlab.functional.EPILOGUE_ACTIVATIONS`'s."""

from numba import njit

from .. import (
    EPILOGUE_CLIP,
    EPILOGUE_GELU,
    EPILOGUE_HARDSIGMOID,
    EPILOGUE_HARDSWISH,
    EPILOGUE_LEAKY_RELU,
    EPILOGUE_MASK,
    EPILOGUE_SIGMOID,
    EPILOGUE_SILU,
    EPILOGUE_TANH,
)
from ._exp import gelu, tanh
from .activation import _hardswish, _sigmoid


@njit(cache=True)
def _finish_row(row, residual, has_residual, s, b, activation, low, high):
    """The fused epilogue of one output row: ``row = act(s * row + b + residual)``.

    ``activation``: 0 none, 1 clip to ``[low, high]`` (ReLU is ``[0, inf]``, ReLU6 ``[0, 6]``),
    2 leaky ReLU with slope ``low``, 3 hard sigmoid ``clip(low * v + high, 0, 1)``, 4 hard swish,
    5 sigmoid, 6 SiLU, 7 tanh, 8 GELU; each exactly as the stand-alone activation kernel computes it;
    9 (with ``has_residual`` False) 0 where ``residual`` is not > 0: an input gradient through
    the mask of the ReLU whose output ``residual`` is, as the ReLU's backward kernel computes it.
    One loop per case, so each vectorizes; the clip (ReLU, ReLU6) in one pass with the rest.

    The clip compares with its bounds rounded to the row's dtype: the same values as comparing
    with the float64 bounds (no number of the dtype lies strictly between a bound and its
    rounding, and a value equal to the rounded bound is that bound either way), where the
    float64 comparison converted every value and ran about three times slower
    (``bench/small_kernels.py``)."""
    n = row.shape[0]
    if activation == EPILOGUE_CLIP:  # (ReLU, ReLU6): one pass
        lo, hi = row.dtype.type(low), row.dtype.type(high)
        if has_residual:
            for p in range(n):
                v = s * row[p] + b + residual[p]
                row[p] = lo if v < lo else (hi if v > hi else v)
        else:  # (s * v is v bitwise where s is 1: no loop of its own, less to compile)
            for p in range(n):
                v = s * row[p] + b
                row[p] = lo if v < lo else (hi if v > hi else v)
        return
    if has_residual:
        for p in range(n):
            row[p] = s * row[p] + b + residual[p]
    else:
        for p in range(n):
            row[p] = s * row[p] + b
    if activation == EPILOGUE_LEAKY_RELU:
        for p in range(n):
            v = row[p]
            row[p] = v if v > 0 else low * v
    elif activation == EPILOGUE_HARDSIGMOID:
        for p in range(n):
            z = low * row[p] + high
            row[p] = 0 if z < 0 else (1 if z > 1 else z)
    elif activation == EPILOGUE_HARDSWISH:
        for p in range(n):
            v = row[p]
            row[p] = _hardswish(v)
    elif activation == EPILOGUE_SIGMOID:
        for p in range(n):
            row[p] = _sigmoid(row[p])
    elif activation == EPILOGUE_SILU:
        for p in range(n):
            row[p] = row[p] * _sigmoid(row[p])
    elif activation == EPILOGUE_TANH:
        for p in range(n):
            row[p] = tanh(row[p])
    elif activation == EPILOGUE_GELU:
        for p in range(n):
            row[p] = gelu(row[p])
    elif activation == EPILOGUE_MASK:
        for p in range(n):
            row[p] = row[p] if residual[p] > 0 else 0
