"""What every op of :mod:`cnnlab.functional` checks: float arrays, optional biases, ``out=`` and
gradient arrays; one home for each check."""

from __future__ import annotations

import contextlib
import functools
import threading

import numpy as np

from ..device import is_gpu_array, kernels_for
from ..parallel import single_threaded_blas

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class KeptAnswers(dict):
    """Answers kept by their key (the checked geometry of an op, per shapes, arguments and
    settings: a model asks for the same few again and again), emptied whenever it reaches
    ``kept`` entries so that it never grows without bound."""

    def __init__(self, kept):
        super().__init__()
        self.kept = kept

    def keep(self, key, answer):
        """Keep ``answer`` for ``key``; return it."""
        if len(self) >= self.kept:
            self.clear()
        self[key] = answer
        return answer


def as_float_array(name, a, ndim=None, dtype=None):
    """Check that ``a`` is a non-empty float32/float64 array (host or GPU) and return it.

    Host input is converted with ``np.asarray`` and made C-contiguous; a GPU
    array is returned as it is.

    Parameters
    ----------
    name : str
        The argument's name, for messages.
    a : array_like or GPU array
    ndim : int or None
        Required number of dimensions.
    dtype : numpy.dtype or None
        Required dtype (that of the op's first array).

    Raises
    ------
    TypeError
        For non-numeric input, integer or boolean images (use
        :func:`cnnlab.data.normalize`), other float or complex dtypes, or a
        dtype different from ``dtype``.
    ValueError
        For a wrong number of dimensions or an empty array.
    """
    if type(a) is np.ndarray and a.dtype in FLOAT_DTYPES and a.flags.c_contiguous and a.ndim \
            and (dtype is None or a.dtype == dtype) and (ndim is None or a.ndim == ndim) and a.size:
        return a  # the common case, a host array that passes every check below as it is
    if isinstance(a, (str, bytes)) or a is None:
        raise TypeError(f"{name} must be an array of float32 or float64, got {type(a).__name__}")
    if not is_gpu_array(a):
        try:
            a = np.asarray(a)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} could not be read as an array: {exc}") from None
    kind = np.dtype(a.dtype).kind
    if kind in "biu":
        raise TypeError(
            f"{name} has integer dtype {a.dtype}; network ops take float32 or float64 images: "
            "scale 0-255 images with cnnlab.data.normalize(images)"
        )
    if np.dtype(a.dtype) not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {a.dtype}")
    if dtype is not None and np.dtype(a.dtype) != np.dtype(dtype):
        raise TypeError(
            f"{name} has dtype {a.dtype} but the input has dtype {np.dtype(dtype)}: "
            "cast one of them (e.g. arr.astype(np.float32))"
        )
    if ndim is not None and len(a.shape) != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(a.shape)}")
    if any(s == 0 for s in a.shape):
        raise ValueError(f"{name} is empty (shape {tuple(a.shape)})")
    if isinstance(a, np.ndarray):
        return np.ascontiguousarray(a) if a.ndim else a.copy()  # 0-d stays 0-d
    contiguous = getattr(a, "is_c_contiguous", None)
    if contiguous is not None and not contiguous():
        raise ValueError(f"{name} is a non-contiguous GPU array; make a contiguous copy first")
    return a


def bias_or_zeros(kernels, bias, size, dtype):
    if bias is None:
        return kernels.zeros((size,), dtype)
    bias = kernels.asarray(as_float_array("bias", bias, ndim=1, dtype=dtype))
    if bias.shape[0] != size:
        raise ValueError(f"bias must have {size} entries (one per output), got shape {tuple(bias.shape)}")
    return bias


def check_out(name, out, shape, dtype, kernels):
    """An ``out=`` array checked: the right shape, dtype and device, C-contiguous."""
    if kernels.DEVICE == "cpu":
        if not isinstance(out, np.ndarray):
            raise TypeError(f"{name} must be a NumPy array on the CPU, got {type(out).__name__}")
        if not out.flags.c_contiguous or not out.flags.writeable:
            raise ValueError(f"{name} must be a writeable C-contiguous array")
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(out.shape)}")
    if np.dtype(out.dtype) != np.dtype(dtype):
        raise TypeError(f"{name} must have dtype {np.dtype(dtype)}, got {out.dtype}")
    return out


def blas_guard(kernels):
    return single_threaded_blas() if kernels.DEVICE == "cpu" else contextlib.nullcontext()


def check_grad(name, grad, shape, dtype):
    grad = as_float_array(name, grad, dtype=dtype)
    if tuple(grad.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (the forward output), got {tuple(grad.shape)}")
    return grad


def elementwise(name, kernel_name, x, *scalars):
    x = as_float_array("x", x)
    kernels = kernels_for(x=x)
    out = kernels.empty(x.shape, x.dtype)
    flat_in = kernels.asarray(x).reshape(-1)
    getattr(kernels, kernel_name)(flat_in, out.reshape(-1), *scalars)
    calls = _SEEN.__dict__.get("calls")
    if calls is not None:  # (bound_elementwise asks which kernel call an op made)
        calls.append((kernels, kernel_name, scalars))
    return out


_SEEN = threading.local()


def bound_elementwise(function, x, *args, **kwargs):
    """For a caller that repeats ``function(x, *args, **kwargs)``, an element-wise op that
    makes one kernel call through :func:`elementwise`, on host arrays of ``x``'s shape and dtype:
    ``run(x, out)`` that makes that call into ``out`` (C-ordered, of ``x``'s shape and dtype)
    and returns it, with the checks made now (a prepared inference plan:
    :mod:`cnnlab.prepared`). Found by running the op once on values drawn at random (of ``x``'s
    rank, at most 4 along each axis: the call reads and writes the values flat, whatever their
    shape) and checked to give its values bit for bit; None for an op that does anything else,
    or other arrays than C-ordered host float arrays with elements."""
    if type(x) is not np.ndarray or not x.flags.c_contiguous or x.dtype not in FLOAT_DTYPES or x.size == 0:
        return None
    probe = np.random.default_rng(0).standard_normal(tuple(min(s, 4) for s in x.shape)).astype(x.dtype) * 4
    _SEEN.calls = calls = []
    try:
        expected = function(probe, *args, **kwargs)
    finally:
        _SEEN.calls = None
    if len(calls) != 1 or calls[0][0].DEVICE != "cpu" or type(expected) is not np.ndarray:
        return None
    kernels, name, scalars = calls[0]

    def run(x, out):
        getattr(kernels, name)(x.reshape(-1), out.reshape(-1), *scalars)  # (looked up at each call, as the op does)
        return out
    got = run(probe, np.empty_like(probe))
    return run if expected.dtype == got.dtype and np.array_equal(expected, got, equal_nan=True) else None


def elementwise_backward(kernel_name, saved, grad_out, *scalars):
    """Run an element-wise backward kernel on ``saved`` (forward input or output) and ``grad_out``."""
    saved = as_float_array("saved", saved)
    kernels = kernels_for(saved=saved, grad_out=grad_out)
    grad_out = check_grad("grad_out", grad_out, saved.shape, saved.dtype)
    grad_x = kernels.empty(saved.shape, saved.dtype)
    getattr(kernels, kernel_name)(kernels.asarray(saved).reshape(-1), kernels.asarray(grad_out).reshape(-1),
                                  grad_x.reshape(-1), *scalars)
    return grad_x


def unbatched(batched_ndim: int):
    """Let an op of batched input (``batched_ndim`` dimensions, the first the batch) also take one
    sample without its batch axis, as PyTorch does: ``(C, H, W)`` in, the output without its
    batch axis out (each array of a tuple). Anything else goes to the op as it is."""
    def decorate(function):
        @functools.wraps(function)
        def run(x, *args, **kwargs):
            shape = getattr(x, "shape", None)
            if shape is None or len(shape) != batched_ndim - 1 or (isinstance(x, np.ndarray) and x.dtype == object):
                return function(x, *args, **kwargs)
            out = function(x.reshape((1,) + tuple(shape)), *args, **kwargs)
            if isinstance(out, tuple):
                return tuple(item.reshape(tuple(item.shape[1:])) for item in out)
            return out.reshape(tuple(out.shape[1:]))
        return run
    return decorate


def empty_batches(elementwise: bool = False):
    """Let an op take an empty batch, as PyTorch does: an input with no samples (or, for an
    ``elementwise`` op, no elements) gives an empty output of the right shape, dtype and device.
    The op runs once on a one-sample input of zeros, so every argument is checked as for a real
    batch and the output's other axes are the op's own."""
    def decorate(function):
        @functools.wraps(function)
        def run(x, *args, **kwargs):
            shape = getattr(x, "shape", None)
            if shape is None or 0 not in tuple(shape) or np.dtype(getattr(x, "dtype", object)).kind not in "biuf":
                return function(x, *args, **kwargs)
            shape = tuple(int(s) for s in shape)
            if elementwise:
                probe_shape = tuple(max(s, 1) for s in shape)
            elif shape[0] == 0 and 0 not in shape[1:]:
                probe_shape = (1,) + shape[1:]
            else:
                return function(x, *args, **kwargs)  # its own message for an empty sample
            kernels = kernels_for(x=x)
            out = function(kernels.zeros(probe_shape, x.dtype), *args, **kwargs)

            def empty_like(item):
                return kernels.empty(shape if elementwise else (0,) + tuple(item.shape[1:]), item.dtype)
            return tuple(empty_like(item) for item in out) if isinstance(out, tuple) else empty_like(out)
        return run
    return decorate
