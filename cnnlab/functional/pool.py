"""Pooling: max, average, min, median and L2-norm windows, global pooling, and backward."""

from __future__ import annotations

import math

import numpy as np

from .. import config
from ..device import is_gpu_array, kernels_for, to_device, to_host
from ..dispatch import is_dask_array, per_sample, sliding_window
from ..kernels import POOL_AVG, POOL_LP, POOL_MAX, POOL_MEDIAN, POOL_MIN
from ..parallel import cpu_workers, thread_count
from ..shapes import check_flag, check_int, check_padding, pair, plain_argument, window_output_shape
from ..types import Array, IntPair, Padding
from .common import KeptAnswers, as_float_array, check_grad, empty_batches, unbatched
from .conv import conv2d, conv2d_backward

POOL_MODES = {"max": POOL_MAX, "avg": POOL_AVG, "min": POOL_MIN, "median": POOL_MEDIAN, "lp": POOL_LP}


INDEX_DTYPE = np.dtype(np.int64)  # of pool2d(return_indices=True)'s indices, as PyTorch's

@unbatched(4)
@empty_batches()
def pool2d(x: Array, kernel_size: IntPair, stride: IntPair | None = None, padding: Padding = 0, mode: str = "max", *,
           dilation: IntPair = 1, ceil_mode: bool = False, count_include_pad: bool = True,
           return_indices: bool = False, positive_only: bool = False) -> Array | tuple[Array, Array]:
    """2-D pooling: one statistic of every window of every channel.

    Parameters
    ----------
    x : (N, C, H, W) array, float32 or float64
    kernel_size : int or (int, int)
        Window size.
    stride : int, (int, int) or None
        Step between windows; defaults to ``kernel_size`` (non-overlapping).
    padding : int, (int, int) or ((int, int), (int, int))
        Virtual padding: an int on all four sides, ``(ph, pw)`` (``ph`` above
        and below, ``pw`` left and right), or ``((top, bottom), (left, right))``.
        Every side is at most half the window along its axis
        (``kernel_size // 2``, PyTorch's rule, applied to each of the four
        sides), so that a window without dilation never lies entirely in the
        padding.  Max pads with -inf and min with +inf (padding never wins);
        avg counts padded zeros in the mean unless ``count_include_pad`` is
        False.  ``'median'`` and ``'lp'`` take padding 0 only.
    mode : {'max', 'avg', 'min', 'median', 'lp'}
        ``'median'`` of an even window is the lower middle value (as
        ``torch.median``); ``'lp'`` is the L2 norm ``sqrt(sum(v**2))``.
    dilation : int or (int, int), default 1
        Keyword-only, as ``ceil_mode`` and ``count_include_pad`` (PyTorch's
        max_pool2d and avg_pool2d order them differently).  Spacing between
        window taps; ``'max'`` and ``'min'`` only.  A dilated
        window whose taps all fall in the padding gives -inf (max) or +inf
        (min), as PyTorch.
    ceil_mode : bool, default False
        Round the output size up: a last, partial window covers the rows or
        columns the others leave over, if it starts inside the input or its
        leading padding (PyTorch's rule).  Not for ``'median'`` and ``'lp'``.
    count_include_pad : bool, default True
        ``'avg'`` only (the other modes never see padded values): divide by
        the window size counting padded positions (PyTorch's default; a
        window running past the trailing padding in ``ceil_mode`` counts only
        up to the end of the padding, as PyTorch), or, with False, by the
        number of input pixels in the window (ONNX AveragePool's default
        ``count_include_pad=0``).
    return_indices : bool, default False
        ``'max'`` and ``'min'`` only: also return, for every output element,
        where its value came from, as PyTorch's
        ``max_pool2d(return_indices=True)``; :func:`pool2d_backward` then
        scatters the gradient through them instead of searching every window
        again (what the training layers do).  Not for dask arrays.
    positive_only : bool, default False
        Mode ``'max'`` with ``return_indices`` only: index -1 (the gradient
        goes nowhere) for each window whose maximum is not greater than 0
        (NaN included).  For ``x`` a ReLU's output, :func:`pool2d_backward`
        through these indices is the gradient with respect to the ReLU's
        *input*: the ReLU's mask is applied in the scatter, and its own
        backward pass over the larger map is not needed (what a training
        step does for a ReLU that only a max pooling reads).

    Returns
    -------
    out : (N, C, OH, OW) array on the input's device
    indices : (N, C, OH, OW) int64 array on the input's device
        Only with ``return_indices``: the flat index ``h * W + w`` within its
        (H, W) plane of the element each window picked (the first of equal
        values in row-major order, the first NaN if there is one), or -1 for
        a dilated window lying entirely in the padding (no input element: its
        gradient goes nowhere).  int64, PyTorch's index dtype (and NumPy's
        default integer), so that the indices work as they are with
        ``torch.nn.functional.max_unpool2d`` and ``np.unravel_index``.
        With ``positive_only``, -1 also where the window's value is not
        greater than 0.

    Shape
    -----
    ``OH = floor((H + top + bottom - dh*(KH-1) - 1) / sh) + 1``, and likewise
    ``OW`` (:func:`cnnlab.output_size`).  With ``ceil_mode`` the floor is a
    ceiling, then ``OH - 1`` if ``(OH - 1)*sh >= H + top``.

    Raises
    ------
    ValueError
        A bad mode, padding beyond ``kernel_size // 2``, a dilation, padding
        or ``ceil_mode`` the mode does not take, a window larger than the
        padded input, or ``return_indices`` with a mode other than max and
        min; the message names the argument.
    TypeError
        A non-integer size, a ``ceil_mode``/``count_include_pad``/
        ``return_indices`` that is not a bool, or ``return_indices`` with a
        dask array.

    See Also
    --------
    cnnlab.kernels.cpu.pool.pool2d_forward, cnnlab.kernels.cuda.pool.pool2d_forward :
        the CPU/GPU twins.
    cnnlab.kernels.cpu.pool.pool2d_forward_with_indices,
    cnnlab.kernels.cuda.pool.pool2d_forward_with_indices : with ``return_indices``.
    torch.nn.functional.max_pool2d, torch.nn.functional.avg_pool2d, torch.nn.functional.lp_pool2d
    cnnlab.shapes.check_padding : the padding forms.

    Examples
    --------
    The textbook 4x4 feature map, 2x2 window, stride 2:

    >>> import numpy as np, cnnlab.functional as F
    >>> x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    >>> F.pool2d(x, 2)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    >>> F.pool2d(x[:, :, :3, :3], 2, ceil_mode=True)[0, 0]
    array([[ 5.,  6.],
           [ 9., 10.]], dtype=float32)

    Where each maximum came from (flat indices into the 4x4 plane):

    >>> out, indices = F.pool2d(x, 2, return_indices=True)
    >>> indices[0, 0]
    array([[ 5,  7],
           [13, 15]])
    """
    positive_only = check_flag("positive_only", positive_only)
    if check_flag("return_indices", return_indices):
        return _pool2d_with_indices(x, kernel_size, stride, padding, mode, dilation, ceil_mode, positive_only)
    if positive_only:
        raise ValueError("positive_only=True marks indices: it needs return_indices=True")
    return _pool2d(x, kernel_size, stride, padding, mode, dilation=dilation, ceil_mode=ceil_mode,
                   count_include_pad=count_include_pad)


@sliding_window("pooling")
def _pool2d(x, kernel_size, stride=None, padding=0, mode="max", *, dilation=1, ceil_mode=False,
            count_include_pad=True):
    """:func:`pool2d` without indices (chunk by chunk for a dask array)."""
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x)
    out_shape, args = pool_geometry(x.shape, kernel_size, stride, padding, mode, dilation, ceil_mode,
                                     count_include_pad)
    out = kernels.empty(out_shape, x.dtype)
    kernels.pool2d_forward(kernels.asarray(x), out, *args)
    return out


def bound_pool2d(x: Array, kernel_size: IntPair, stride: IntPair | None = None, padding: Padding = 0,
                 mode: str = "max", *, dilation: IntPair = 1, ceil_mode: bool = False, count_include_pad: bool = True):
    """For a caller that repeats :func:`pool2d` (without indices) on host arrays of this shape
    and dtype: ``(out_shape, run)``, ``run(x, out)`` writing the pooled maps into ``out`` (an
    array of ``out_shape``, C-contiguous) and returning it, the arguments checked and the
    kernel's geometry worked out now (a prepared inference plan: :mod:`cnnlab.prepared`, which
    checks the thread count). The same kernel call as :func:`pool2d`'s. None for anything but a
    C-contiguous host float array (N, C, H, W) with some values, or arguments it refuses."""
    if type(x) is not np.ndarray or x.ndim != 4 or x.dtype not in (np.float32, np.float64) or x.size == 0 \
            or not x.flags.c_contiguous:
        return None
    try:
        out_shape, args = pool_geometry(x.shape, kernel_size, stride, padding, mode, dilation, ceil_mode,
                                        count_include_pad)
    except (TypeError, ValueError):
        return None
    kernels = kernels_for(x=x)

    def run(x, out):
        kernels.pool2d_forward(x, out, *args)
        return out
    return tuple(out_shape), run


def _check_indices_mode(mode, argument):
    if mode not in ("max", "min"):
        raise ValueError(f"{argument} applies to mode 'max' and 'min' only (the element a window picks), "
                         f"got mode={mode!r}")


def _indices_kernel_arguments(args):
    """The integer arguments of the kernels with indices, out of :func:`pool_geometry`'s."""
    kernel_h, kernel_w, stride_h, stride_w, top, left, _, _, dilation_h, dilation_w, mode, _, workers = args
    return kernel_h, kernel_w, stride_h, stride_w, top, left, dilation_h, dilation_w, mode, workers


def _pool2d_with_indices(x, kernel_size, stride, padding, mode, dilation, ceil_mode, positive_only=False):
    """:func:`pool2d` with ``return_indices=True``: ``(out, indices)``."""
    if is_dask_array(x):
        raise TypeError("return_indices=True takes a NumPy or GPU array, not a dask array: "
                        "compute the chunk first, or pool without indices")
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x)
    out_shape, args = pool_geometry(x.shape, kernel_size, stride, padding, mode, dilation, ceil_mode)
    _check_indices_mode(mode, "return_indices=True")
    if positive_only and mode != "max":
        raise ValueError(f"positive_only=True applies to mode 'max' only (a ReLU's output), got mode={mode!r}")
    out = kernels.empty(out_shape, x.dtype)
    indices = kernels.empty(out_shape, INDEX_DTYPE)
    kernels.pool2d_forward_with_indices(kernels.asarray(x), out, indices, *_indices_kernel_arguments(args),
                                        positive_only=positive_only)
    return out, indices


def pool_arguments(kernel_size: IntPair, stride: IntPair | None = None, padding: Padding = 0, mode: str = "max",
                   dilation: IntPair = 1, ceil_mode: bool = False, count_include_pad: bool = True) -> dict:
    """Validate the arguments of :func:`pool2d` without an input; return them normalized.

    Returns
    -------
    dict
        ``kernel_size``, ``stride`` and ``dilation`` as ``(h, w)`` pairs, ``padding`` as
        ``((top, bottom), (left, right))``, ``mode``, and the two flags as bools.

    Raises
    ------
    ValueError, TypeError
        As :func:`pool2d` does for the same arguments (the layers check them when built).
    """
    if not isinstance(mode, str) or mode not in POOL_MODES:
        raise ValueError(f"mode must be one of {sorted(POOL_MODES)}, got {mode!r}")
    kernel = pair("kernel_size", kernel_size, 1)
    stride = kernel if stride is None else pair("stride", stride, 1)
    dilation = pair("dilation", dilation, 1)
    ceil_mode = check_flag("ceil_mode", ceil_mode)
    count_include_pad = check_flag("count_include_pad", count_include_pad)
    if isinstance(padding, str):
        raise ValueError(f"padding of a pooling op must be an integer, a pair or a pair of pairs "
                         f"((top, bottom), (left, right)), got {padding!r}")
    pads = check_padding(padding)
    for axis, (before, after), k in zip(("height", "width"), pads, kernel):
        if before > k // 2 or after > k // 2:
            raise ValueError(
                f"padding={padding!r} must be at most half the window on every side "
                f"(kernel_size={kernel_size}: at most {k // 2} along the {axis}, got {before} before "
                f"and {after} after): a window could otherwise lie entirely in the padding"
            )
    if mode in ("median", "lp") and pads != ((0, 0), (0, 0)):
        raise ValueError(f"mode={mode!r} takes padding=0 only, got padding={padding!r}")
    if mode not in ("max", "min") and dilation != (1, 1):
        raise ValueError(f"dilation applies to mode 'max' and 'min' only, got dilation={dilation} "
                         f"with mode={mode!r}")
    if mode in ("median", "lp") and ceil_mode:
        raise ValueError(f"ceil_mode=True applies to mode 'max', 'min' and 'avg' only, got mode={mode!r}")
    return dict(kernel_size=kernel, stride=stride, padding=pads, mode=mode, dilation=dilation,
                ceil_mode=ceil_mode, count_include_pad=count_include_pad)


_GEOMETRIES = KeptAnswers(512)  # pool_geometry's answers, per arguments and settings


def pool_geometry(x_shape: tuple[int, ...], kernel_size: IntPair, stride: IntPair, padding: Padding, mode: str, dilation: IntPair = 1,
                  ceil_mode: bool = False, count_include_pad: bool = True) -> tuple[tuple[int, ...], tuple]:
    """Validate pooling arguments; return the output shape and the kernel's integer arguments.

    Kept per set of arguments (ints, strs, bools and tuples of ints) and settings (Numba's
    thread count, ``config.PARALLEL_MIN_WORK``): a model pools the same shapes call after call,
    and checking the arguments took longer than pooling a small map."""
    flags = tuple(flag if type(flag) is bool else None for flag in (ceil_mode, count_include_pad))
    key = (tuple(x_shape), plain_argument(kernel_size), "window" if stride is None else plain_argument(stride),
           plain_argument(padding), plain_argument(mode), plain_argument(dilation), *flags,
           config.PARALLEL_MIN_WORK, thread_count())
    if None in key:
        return _pool_geometry(x_shape, kernel_size, stride, padding, mode, dilation, ceil_mode, count_include_pad)
    geometry = _GEOMETRIES.get(key)
    if geometry is None:
        geometry = _GEOMETRIES.keep(key, _pool_geometry(x_shape, kernel_size, stride, padding, mode, dilation,
                                                        ceil_mode, count_include_pad))
    return geometry


def _pool_geometry(x_shape, kernel_size, stride, padding, mode, dilation, ceil_mode, count_include_pad):
    options = pool_arguments(kernel_size, stride, padding, mode, dilation, ceil_mode, count_include_pad)
    kernel, stride, pads, dilation = (options[k] for k in ("kernel_size", "stride", "padding", "dilation"))
    samples, channels, height, width = x_shape
    out_h, out_w = window_output_shape(height, width, kernel, stride, pads, dilation, options["ceil_mode"])
    workers = cpu_workers(samples * channels * out_h * out_w * kernel[0] * kernel[1])
    (top, bottom), (left, right) = pads
    args = (kernel[0], kernel[1], stride[0], stride[1], top, left, bottom, right, dilation[0], dilation[1],
            POOL_MODES[mode], int(options["count_include_pad"]), workers)
    return (samples, channels, out_h, out_w), args


def pool2d_backward(x: Array, out: Array, grad_out: Array, kernel_size: IntPair, stride: IntPair | None = None,
                    padding: Padding = 0, mode: str = "max", *, dilation: IntPair = 1, ceil_mode: bool = False,
                    count_include_pad: bool = True, indices: Array | None = None,
                    divisor_override: int | None = None) -> Array:
    """Gradient of :func:`pool2d` with respect to ``x``.

    Max and min route each window's gradient to the element it picked (the first one on
    ties; nowhere for a dilated window lying entirely in the padding), median to its lower
    middle element, avg spreads it evenly over the window's input pixels, each getting
    ``grad / divisor`` with the forward's divisor (``count_include_pad``), lp scales it by
    ``x / out``.  With the ``indices`` of ``pool2d(..., return_indices=True)`` (max and min),
    the windows are not searched again: each gradient is added at its index (the same result,
    several times faster).

    Parameters
    ----------
    x : (N, C, H, W) array, the forward input; with ``indices``, its shape ``(N, C, H, W)`` is enough
    out : (N, C, OH, OW) array, the forward output; with ``indices`` it is not read and may be None
    grad_out : (N, C, OH, OW) array
    kernel_size, stride, padding, mode, dilation, ceil_mode, count_include_pad
        As given to :func:`pool2d`.
    divisor_override : int, optional
        Keyword-only, mode ``'avg'``: as given to :func:`avg_pool2d` (each window's gradient
        spread over its positions divided by this number).
    indices : (N, C, OH, OW) int64 array, optional
        Keyword-only: what ``pool2d(x, ..., return_indices=True)`` returned (mode ``'max'`` or
        ``'min'``), on ``grad_out``'s device.  Flat indices ``h * W + w`` into each (H, W)
        plane; -1 sends a gradient nowhere.  On the CPU an index outside ``-1 .. H*W-1`` is a
        ValueError; on a GPU (where checking would cost a transfer) it adds nowhere.

    Returns
    -------
    (N, C, H, W) array

    Shape
    -----
    ``out``, ``grad_out`` and ``indices`` have the shape :func:`pool2d` gives ``x``.

    Raises
    ------
    ValueError
        Arguments :func:`pool2d` refuses, an ``out``/``grad_out``/``indices`` of another shape,
        ``indices`` with a mode other than max and min, or (CPU) an index out of range.
    TypeError
        ``indices`` that are not an int64 array, or arrays on different devices.

    See Also
    --------
    cnnlab.kernels.cpu.pool.pool2d_backward, cnnlab.kernels.cuda.pool.pool2d_backward
    cnnlab.kernels.cpu.pool.pool2d_backward_with_indices,
    cnnlab.kernels.cuda.pool.pool2d_backward_with_indices : with ``indices``.
    """
    if divisor_override is not None:
        if mode != "avg":
            raise ValueError(f"divisor_override applies to mode 'avg' only, got mode={mode!r}")
        return _window_sums_backward(x, grad_out, kernel_size, stride, padding, dilation, ceil_mode, divisor_override)
    if indices is not None:
        return _pool2d_backward_with_indices(x, out, grad_out, indices, kernel_size, stride, padding, mode,
                                             dilation, ceil_mode)
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x, out=out, grad_out=grad_out)
    out_shape, args = pool_geometry(x.shape, kernel_size, stride, padding, mode, dilation, ceil_mode,
                                     count_include_pad)
    out = check_grad("out", out, out_shape, x.dtype)
    grad_out = check_grad("grad_out", grad_out, out_shape, x.dtype)
    grad_x = kernels.empty(x.shape, x.dtype)
    kernels.pool2d_backward(kernels.asarray(x), kernels.asarray(out), kernels.asarray(grad_out), grad_x, *args)
    return grad_x


def _input_shape(x):
    """The forward input's shape, from the input or from the shape itself."""
    if isinstance(x, (tuple, list)):
        if len(x) != 4:
            raise ValueError(f"x must be the forward input or its shape (N, C, H, W), got {tuple(x)!r}")
        return tuple(check_int("x (the input shape)", s, 1) for s in x)
    return None


def _check_indices(indices, shape, kernels):
    if isinstance(indices, (str, bytes)):
        raise TypeError(f"indices must be an int64 array, got {type(indices).__name__}")
    if not is_gpu_array(indices):
        try:
            indices = np.asarray(indices)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"indices could not be read as an array: {exc}") from None
    if np.dtype(indices.dtype) != INDEX_DTYPE:
        raise TypeError(f"indices must have dtype int64 (as pool2d(..., return_indices=True) gives them), "
                        f"got {indices.dtype}")
    if tuple(indices.shape) != tuple(shape):
        raise ValueError(f"indices must have shape {tuple(shape)} (the forward output), got {tuple(indices.shape)}")
    if isinstance(indices, np.ndarray):  # (their range: counted by the CPU scatter as it reads them)
        return np.ascontiguousarray(indices)
    contiguous = getattr(indices, "is_c_contiguous", None)
    if contiguous is not None and not contiguous():
        raise ValueError("indices is a non-contiguous GPU array; make a contiguous copy first")
    return kernels.asarray(indices)


def _pool2d_backward_with_indices(x, out, grad_out, indices, kernel_size, stride, padding, mode, dilation,
                                  ceil_mode):
    """:func:`pool2d_backward` through the indices of the forward: a scatter."""
    shape = _input_shape(x)
    if shape is None:
        x = as_float_array("x", x, ndim=4)
        shape, dtype = tuple(x.shape), x.dtype
        kernels = kernels_for(x=x, out=out, grad_out=grad_out, indices=indices)
        grad_out = as_float_array("grad_out", grad_out, dtype=dtype)
    else:
        kernels = kernels_for(out=out, grad_out=grad_out, indices=indices)
        grad_out = as_float_array("grad_out", grad_out)
        dtype = grad_out.dtype
    out_shape, _ = pool_geometry(shape, kernel_size, stride, padding, mode, dilation, ceil_mode)
    _check_indices_mode(mode, "indices")
    grad_out = check_grad("grad_out", grad_out, out_shape, dtype)
    if out is not None:
        check_grad("out", out, out_shape, dtype)
    plane_size = shape[2] * shape[3]
    indices = _check_indices(indices, out_shape, kernels)
    grad_x = kernels.empty(shape, dtype)
    workers = cpu_workers(math.prod(shape) + math.prod(out_shape))
    if kernels.pool2d_backward_with_indices(kernels.asarray(grad_out), indices, grad_x, workers):
        low, high = int(indices.min()), int(indices.max())  # (host indices: the CPU kernel counted them)
        raise ValueError(f"indices must lie in -1 .. {plane_size - 1} (flat indices into each "
                         f"{shape[2:]} -> H*W = {plane_size} plane, -1 for none), got {low} .. {high}")
    return grad_x


def global_avg_pool2d_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`global_avg_pool2d`: every pixel of plane ``(n, c)`` gets
    ``grad_out[n, c] / (H * W)``."""
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x, grad_out=grad_out)
    grad_out = check_grad("grad_out", grad_out, x.shape[:2], x.dtype)
    grad_x = kernels.empty(x.shape, x.dtype)
    kernels.global_avg_pool2d_backward(kernels.asarray(grad_out), grad_x)
    return grad_x


def max_pool2d(x: Array, kernel_size: IntPair, stride: IntPair | None = None, padding: Padding = 0, *,
               dilation: IntPair = 1, ceil_mode: bool = False, count_include_pad: bool = True,
               return_indices: bool = False, positive_only: bool = False) -> Array | tuple[Array, Array]:
    """Max pooling: :func:`pool2d` with ``mode='max'`` (``count_include_pad`` has no effect);
    with ``return_indices=True`` it returns ``(out, indices)`` as
    ``torch.nn.functional.max_pool2d`` (int64 flat indices into each (H, W) plane)."""
    return pool2d(x, kernel_size, stride, padding, "max", dilation=dilation, ceil_mode=ceil_mode,
                  count_include_pad=count_include_pad, return_indices=return_indices, positive_only=positive_only)


def avg_pool2d(x: Array, kernel_size: IntPair, stride: IntPair | None = None, padding: Padding = 0, *,
               dilation: IntPair = 1, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Array:
    """Average pooling (padded zeros counted unless ``count_include_pad=False``):
    :func:`pool2d` with ``mode='avg'`` (``dilation`` must be 1).

    ``divisor_override`` (PyTorch's): divide every window's sum by this number instead of the
    window's size (``count_include_pad`` then plays no part). The sums are a convolution with
    a window of ones, so the kernels are the convolution's."""
    if divisor_override is None:
        return pool2d(x, kernel_size, stride, padding, "avg", dilation=dilation, ceil_mode=ceil_mode,
                      count_include_pad=count_include_pad)
    return _window_sums(x, kernel_size, stride, padding, dilation, ceil_mode, divisor_override)


@unbatched(4)
@empty_batches()
def _window_sums(x, kernel_size, stride, padding, dilation, ceil_mode, divisor):
    """Each window's sum over ``divisor``: a depthwise convolution with a window of ``1 / divisor``."""
    x = as_float_array("x", x, ndim=4)
    flat, weight, geometry, out_shape = _sum_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, divisor)
    return conv2d(flat, weight, **geometry).reshape(out_shape)


def _sum_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, divisor):
    """The convolution that gives :func:`avg_pool2d`'s ``divisor_override`` result: ``x`` as
    ``(N * C, 1, H, W)``, the window, the padding (extended at the bottom and right so that
    ``ceil_mode``'s last windows exist, their extra rows adding zeros) and the output shape; the
    window holds ``1 / divisor``, so the forward and its gradient use the same one."""
    divisor = check_int("divisor_override", divisor, 1)
    options = pool_arguments(kernel_size, stride, padding, "avg", dilation, ceil_mode)
    out_shape, _ = pool_geometry(x.shape, kernel_size, stride, padding, "avg", dilation, ceil_mode)
    (kernel_h, kernel_w), (stride_h, stride_w) = options["kernel_size"], options["stride"]
    (top, bottom), (left, right) = options["padding"]
    extra_h = max(0, (out_shape[2] - 1) * stride_h + kernel_h - (x.shape[2] + top + bottom))
    extra_w = max(0, (out_shape[3] - 1) * stride_w + kernel_w - (x.shape[3] + left + right))
    kernels = kernels_for(x=x)
    samples, channels, height, width = x.shape
    flat = kernels.asarray(x).reshape((samples * channels, 1, height, width))
    weight = np.full((1, 1, kernel_h, kernel_w), 1.0 / divisor, x.dtype)
    weight = to_device(weight) if kernels.DEVICE == "cuda" else weight
    geometry = dict(stride=(stride_h, stride_w), padding=((top, bottom + extra_h), (left, right + extra_w)))
    return flat, weight, geometry, tuple(out_shape)


def min_pool2d(x: Array, kernel_size: IntPair, stride: IntPair | None = None, padding: Padding = 0, *,
               dilation: IntPair = 1, ceil_mode: bool = False, count_include_pad: bool = True,
               return_indices: bool = False, positive_only: bool = False) -> Array | tuple[Array, Array]:
    """Min pooling: :func:`pool2d` with ``mode='min'`` (``count_include_pad`` has no effect);
    ``return_indices=True`` returns ``(out, indices)`` as :func:`max_pool2d`."""
    return pool2d(x, kernel_size, stride, padding, "min", dilation=dilation, ceil_mode=ceil_mode,
                  count_include_pad=count_include_pad, return_indices=return_indices, positive_only=positive_only)


@unbatched(4)
@per_sample
@empty_batches()
def global_avg_pool2d(x: Array) -> Array:
    """Mean over each whole (H, W) plane.

    Parameters
    ----------
    x : (N, C, H, W) array, float32 or float64

    Returns
    -------
    (N, C) array on the input's device

    See Also
    --------
    cnnlab.kernels.cpu.pool.global_avg_pool2d_forward, cnnlab.kernels.cuda.pool.global_avg_pool2d_forward
    torch.nn.functional.adaptive_avg_pool2d : with output size 1.
    """
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x)
    out = kernels.empty(x.shape[:2], x.dtype)
    kernels.global_avg_pool2d_forward(kernels.asarray(x), out)
    return out


@unbatched(4)
@per_sample
@empty_batches()
def global_max_pool2d(x: Array) -> Array:
    """Maximum over each whole (H, W) plane (NaN propagates, as in max pooling).

    Parameters
    ----------
    x : (N, C, H, W) array, float32 or float64

    Returns
    -------
    (N, C) array on the input's device

    Shape
    -----
    ``(N, C, H, W) -> (N, C)``.

    See Also
    --------
    cnnlab.kernels.cpu.merge.global_max_pool2d_forward, cnnlab.kernels.cuda.merge.global_max_pool2d_forward :
        the CPU/GPU twins.
    torch.nn.functional.adaptive_max_pool2d : with output size 1.
    """
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x)
    out = kernels.empty(x.shape[:2], x.dtype)
    kernels.global_max_pool2d_forward(kernels.asarray(x), out)
    return out


def global_max_pool2d_backward(x: Array, grad_out: Array) -> Array:
    """Gradient of :func:`global_max_pool2d`: ``grad_out[n, c]`` goes to the first maximum of
    plane ``(n, c)`` (the first NaN if there is one), 0 to every other pixel."""
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x, grad_out=grad_out)
    grad_out = check_grad("grad_out", grad_out, x.shape[:2], x.dtype)
    grad_x = kernels.empty(x.shape, x.dtype)
    kernels.global_max_pool2d_backward(kernels.asarray(x), kernels.asarray(grad_out), grad_x)
    return grad_x


def _window_sums_backward(x, grad_out, kernel_size, stride, padding, dilation, ceil_mode, divisor):
    """Gradient of :func:`_window_sums`: the convolution's input gradient."""
    x = as_float_array("x", x, ndim=4)
    flat, weight, geometry, out_shape = _sum_geometry(x, kernel_size, stride, padding, dilation, ceil_mode, divisor)
    grad_out = check_grad("grad_out", grad_out, out_shape, x.dtype)
    samples, channels = out_shape[:2]
    flat_grad = grad_out.reshape((samples * channels, 1) + tuple(out_shape[2:]))
    grad_x, _, _ = conv2d_backward(flat, weight, flat_grad, **geometry)
    return grad_x.reshape(tuple(x.shape))


def _adaptive_sizes(output_size, in_hw):
    sizes = (output_size, output_size) if not isinstance(output_size, (tuple, list)) else tuple(output_size)
    if len(sizes) != 2:
        raise ValueError(f"output_size must be an integer, None or a pair of them, got {output_size!r}")
    return tuple(n if s is None else check_int("output_size", s, 1) for s, n in zip(sizes, in_hw))


def adaptive_average_matrix(out_size: int, in_size: int, dtype=np.float64) -> np.ndarray:
    """The ``(out_size, in_size)`` matrix whose row ``i`` averages input indices
    ``floor(i * in / out)`` to ``ceil((i + 1) * in / out)`` (PyTorch's adaptive windows)."""
    matrix = np.zeros((out_size, in_size), dtype)
    for i in range(out_size):
        start, end = (i * in_size) // out_size, -(-((i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


@unbatched(4)
def adaptive_avg_pool2d(x: Array, output_size: int | tuple[int | None, int | None]) -> Array:
    """``torch.nn.functional.adaptive_avg_pool2d``: average windows that tile the input into
    ``output_size`` (output pixel ``i`` averages rows ``floor(i·H/OH)`` to ``ceil((i+1)·H/OH)``,
    and likewise for columns; None keeps that axis). Separable, so two small matrix products per
    image (BLAS); a GPU array goes through the host.

    Parameters
    ----------
    x : (N, C, H, W) array (or one (C, H, W) sample), float32 or float64
    output_size : int, None or a pair of them

    Returns
    -------
    (N, C, OH, OW) array
    """
    gpu = is_gpu_array(x)
    x = as_float_array("x", x, ndim=4)
    host = to_host(x) if gpu else x
    oh, ow = _adaptive_sizes(output_size, tuple(host.shape[2:]))
    rows = adaptive_average_matrix(oh, host.shape[2], host.dtype)
    cols = adaptive_average_matrix(ow, host.shape[3], host.dtype)
    out = np.ascontiguousarray(np.matmul(np.matmul(rows, host), cols.T))
    return to_device(out) if gpu else out


def adaptive_avg_pool2d_backward(x: Array, grad_out: Array, output_size: int | tuple[int | None, int | None]) -> Array:
    """Gradient of :func:`adaptive_avg_pool2d` with respect to ``x`` (only its shape is read)."""
    gpu = is_gpu_array(grad_out)
    shape = tuple(x.shape)
    grad = to_host(grad_out) if gpu else np.asarray(grad_out)
    oh, ow = _adaptive_sizes(output_size, shape[2:])
    grad = check_grad("grad_out", grad, shape[:2] + (oh, ow), grad.dtype)
    rows = adaptive_average_matrix(oh, shape[2], grad.dtype)
    cols = adaptive_average_matrix(ow, shape[3], grad.dtype)
    out = np.ascontiguousarray(np.matmul(np.matmul(rows.T, grad), cols))
    return to_device(out) if gpu else out
