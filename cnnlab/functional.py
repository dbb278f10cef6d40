"""Stateless CNN operations with PyTorch-shaped signatures.

Every function here validates its arguments (a clear ``TypeError`` or
``ValueError`` naming the argument), resolves the geometry with
:mod:`cnnlab.shapes`, allocates the result where the input lives, and calls
exactly one kernel: the CPU kernel for NumPy input, the GPU kernel for GPU
input (the result then stays on the GPU).  See :mod:`cnnlab.device`.

All arrays are NCHW and float32 or float64; an integer image is refused with
a pointer to :func:`cnnlab.data.normalize`.
"""

import contextlib
import functools
import math

import numba
import numpy as np

from . import config
from .device import is_gpu_array, kernels_for, to_host
from .kernels import POOL_AVG, POOL_LP, POOL_MAX, POOL_MEDIAN, POOL_MIN
from .shapes import check_flag, check_int, check_padding, pair, resolve_padding, window_output_shape

__all__ = [
    "conv2d",
    "pool2d",
    "max_pool2d",
    "avg_pool2d",
    "min_pool2d",
    "global_avg_pool2d",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
    "linear",
    "global_max_pool2d",
    "clip",
    "relu6",
    "hardsigmoid",
    "hardswish",
    "silu",
    "add",
    "multiply",
    "concatenate",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
POOL_MODES = {"max": POOL_MAX, "avg": POOL_AVG, "min": POOL_MIN, "median": POOL_MEDIAN, "lp": POOL_LP}


# ----------------------------------------------------------------------------- validation


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
        return np.ascontiguousarray(a)
    contiguous = getattr(a, "is_c_contiguous", None)
    if contiguous is not None and not contiguous():
        raise ValueError(f"{name} is a non-contiguous GPU array; make a contiguous copy first")
    return a


def _bias_or_zeros(kernels, bias, size, dtype):
    if bias is None:
        return kernels.zeros((size,), dtype)
    bias = kernels.asarray(as_float_array("bias", bias, ndim=1, dtype=dtype))
    if bias.shape[0] != size:
        raise ValueError(f"bias must have {size} entries (one per output), got shape {tuple(bias.shape)}")
    return bias


# ----------------------------------------------------------------------------- BLAS threads

_blas_controllers = None


def _blas_libraries():
    global _blas_controllers
    if _blas_controllers is None:
        # Numba's np.dot calls the BLAS behind scipy.linalg.cython_blas: load it before looking
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _blas_controllers = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    return _blas_controllers


def per_sample(function):
    """Let ``function(x, ...)``, whose output rows depend only on the same input rows, also take
    a dask array chunked along the batch axis: it then runs chunk by chunk
    (:func:`cnnlab.dask.map_batches`) and returns a dask array; the element-wise activations
    also take any other chunking (:func:`cnnlab.dask.per_sample_op`). NumPy and GPU arrays are
    untouched; dask itself is imported only when a dask array is seen."""
    @functools.wraps(function)
    def run(x, *args, **kwargs):
        from . import dask as dask_support

        if dask_support.is_dask_array(x):
            return dask_support.per_sample_op(function, x, args, kwargs)
        return function(x, *args, **kwargs)
    return run


def sliding_window(function):
    """:func:`per_sample` for a sliding-window op (:func:`conv2d`, :func:`pool2d`): a dask array
    may also be chunked across the image (and, for pooling, the channels). It then runs block
    by block, each block reading its chunk plus the halo the geometry needs, with output
    chunks that line up with the input chunks (:func:`cnnlab.dask.map_windows`); the chunks
    run on the GPU when the weights are there. NumPy and GPU arrays are untouched."""
    @functools.wraps(function)
    def run(x, *args, **kwargs):
        from . import dask as dask_support

        if dask_support.is_dask_array(x):
            return dask_support.sliding_window_op(function, x, args, kwargs)
        return function(x, *args, **kwargs)
    return run


def cpu_workers(work):
    """How many threads a CPU kernel should share ``work`` (multiply-adds or element visits)
    between: Numba's thread count, but no more than gives each thread ``config.PARALLEL_MIN_WORK``
    (so 1 for small work). Below that, waking the thread pool costs more than it saves."""
    return max(1, min(numba.get_num_threads(), work // max(1, config.PARALLEL_MIN_WORK)))


@contextlib.contextmanager
def single_threaded_blas():
    """Run the enclosed CPU kernels with one BLAS thread per caller.

    The CPU convolution and linear kernels call GEMM from inside their own
    parallel loops; the BLAS library must not start threads of its own there
    (it would oversubscribe the cores, and OpenBLAS warns about an OpenMP
    loop), nor anywhere else in a training step: BLAS worker threads that
    spin-wait after a call take the cores from Numba's threads (measured:
    a digits training run 15x slower).  The previous thread counts are
    restored on exit.
    """
    libraries = _blas_libraries()
    previous = [lib.get_num_threads() for lib in libraries]
    for lib in libraries:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, count in zip(libraries, previous):
            lib.set_num_threads(count)


# ----------------------------------------------------------------------------- convolution


@sliding_window
def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, scale=None,
           residual=None, activation=None, out=None):
    """2-D convolution (cross-correlation, as in every CNN library) of a batch of images.

    Each of the ``F`` filters slides over the input, multiplies its weights
    with the tile under it and sums over the tile and the input channels;
    the output depth is the number of filters.

    Parameters
    ----------
    x : (N, C, H, W) array, float32 or float64
        Input batch, on the host or on the GPU.
    weight : (F, C // groups, KH, KW) array of the same dtype
        The filters.
    bias : (F,) array or None
        Added to every pixel of output channel ``f``.
    stride : int or (int, int)
        Step between tiles.
    padding : int, (int, int), ((int, int), (int, int)), 'valid', 'same', 'same_upper' or 'same_lower'
        Zeros added around the input: an int on all four sides, ``(ph, pw)``
        (``ph`` above and below, ``pw`` left and right), or
        ``((top, bottom), (left, right))`` for four different sides (ONNX's
        ``pads = (top, left, bottom, right)`` and PyTorch's ``F.pad`` order
        ``(left, right, top, bottom)`` both convert to this; four numbers in
        a flat sequence are refused as ambiguous).  ``'same'`` (stride 1
        only) keeps the spatial size, splitting an odd total as PyTorch does
        (the extra zero goes after).  ``'same_upper'`` and ``'same_lower'``
        (any stride; ONNX's ``auto_pad`` ``SAME_UPPER``/``SAME_LOWER``) give
        ``ceil(H / sh)`` rows, the odd zero after or before.
    dilation : int or (int, int)
        Spacing between kernel taps.
    groups : int
        Split the channels into ``groups`` independent convolutions.
    scale : (F,) array or None, keyword-only
        Multiplies filter ``f``'s sums before the bias is added: with ``scale = gamma / sqrt(var
        + eps)`` and ``bias = beta + (b - mean) * scale`` the call is the convolution followed by
        an inference-mode batch normalization, in one pass (what a model does when it runs a
        ``Conv2D`` followed by a ``BatchNorm2D`` for prediction).
    residual : (N, F, OH, OW) array or None, keyword-only
        Added to the output before the activation (a residual connection, ResNet's
        ``relu(conv(x) + shortcut)``).
    activation : str, tuple or None, keyword-only
        Applied to each output as it is written: ``'relu'``, ``'relu6'``, ``'hardswish'``,
        ``'hardsigmoid'``, ``'sigmoid'``, ``'silu'``, ``'tanh'``, ``'leaky_relu'``, or with
        parameters ``('clip', min, max)``, ``('leaky_relu', negative_slope)``,
        ``('hardsigmoid', alpha, beta)``; exactly the values of the stand-alone functions
        (:func:`relu`, :func:`clip`, ...).  See :func:`epilogue_activation`.
    out : (N, F, OH, OW) array or None, keyword-only
        Write the result here (C-contiguous, the input's dtype and device) instead of a new
        array; it must not overlap ``x``, ``weight`` or ``residual``.

    The whole computation is ``out = activation(scale * conv(x, weight) + bias + residual)``,
    the last three steps done in the kernel's output write (no extra pass over memory).

    Returns
    -------
    (N, F, OH, OW) array on the input's device (``out`` when given)

    Shape
    -----
    ``OH = floor((H + top + bottom - dh*(KH-1) - 1) / sh) + 1``, and likewise
    ``OW`` with ``left + right`` (:func:`cnnlab.output_size`); ``top = bottom = ph``
    for symmetric padding.

    See Also
    --------
    cnnlab.kernels.cpu.conv.conv2d_forward, cnnlab.kernels.cuda.conv.conv2d_forward :
        the CPU/GPU twins.
    torch.nn.functional.conv2d : the PyTorch counterpart.
    scipy.signal.correlate2d : one channel of one filter, ``mode='valid'``.

    Examples
    --------
    The textbook 5x5 input and 3x3 kernel:

    >>> import numpy as np, cnnlab.functional as F
    >>> x = np.array([[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3],
    ...               [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]], dtype=np.float32)
    >>> k = np.array([[0, 1, 2], [2, 2, 0], [0, 1, 2]], dtype=np.float32)
    >>> F.conv2d(x[None, None], k[None, None])[0, 0]
    array([[12., 12., 17.],
           [10., 17., 19.],
           [ 9.,  6., 14.]], dtype=float32)
    """
    x = as_float_array("x", x, ndim=4)
    weight = as_float_array("weight", weight, ndim=4, dtype=x.dtype)
    kernels = kernels_for(x=x, weight=weight, bias=bias, scale=scale, residual=residual, out=out)
    geometry = _conv_geometry(x.shape, weight.shape, x.dtype, stride, padding, dilation, groups)
    filters = weight.shape[0]
    code, low, high = epilogue_activation(activation)
    shift = _bias_or_zeros(kernels, bias, filters, x.dtype)
    if scale is None:
        scale = kernels.ones((filters,), x.dtype)
    else:
        scale = kernels.asarray(as_float_array("scale", scale, ndim=1, dtype=x.dtype))
        if scale.shape[0] != filters:
            raise ValueError(f"scale must have {filters} entries (one per filter), got shape {tuple(scale.shape)}")
    out_shape = (x.shape[0], filters) + geometry.out_shape
    if out is None:
        out = kernels.empty(out_shape, x.dtype)
    else:
        out = _check_out("out", out, out_shape, x.dtype, kernels)
    if residual is None:
        residual_array, has_residual = out, False
    else:
        residual_array = kernels.asarray(as_float_array("residual", residual, ndim=4, dtype=x.dtype))
        if tuple(residual_array.shape) != out_shape:
            raise ValueError(f"residual must have the output's shape {out_shape}, got {tuple(residual_array.shape)}")
        has_residual = True
    with _blas_guard(kernels):
        kernels.conv2d_forward(kernels.asarray(x), kernels.asarray(weight), scale, shift, residual_array,
                               has_residual, code, low, high, out, *geometry.args,
                               filter_blocks=geometry.filter_blocks, sample_block=geometry.sample_block)
    return out


EPILOGUE_ACTIVATIONS = {
    # name: (kernel code, default parameters, parameter names)
    "relu": (1, (0.0, math.inf), ()),
    "relu6": (1, (0.0, 6.0), ()),
    "clip": (1, None, ("min", "max")),
    "leaky_relu": (2, (0.01, 0.0), ("negative_slope",)),
    "hardsigmoid": (3, (1 / 6, 0.5), ("alpha", "beta")),
    "hardswish": (4, (0.0, 0.0), ()),
    "sigmoid": (5, (0.0, 0.0), ()),
    "silu": (6, (0.0, 0.0), ()),
    "tanh": (7, (0.0, 0.0), ()),
}


def epilogue_activation(activation):
    """The kernel form ``(code, low, high)`` of a fused activation (see :func:`conv2d`).

    Parameters
    ----------
    activation : None, str or tuple
        None; a name of :data:`EPILOGUE_ACTIVATIONS`; or ``(name, *parameters)``:
        ``('clip', min, max)`` (None for an open side), ``('leaky_relu', negative_slope)``,
        ``('hardsigmoid', alpha, beta)``.

    Returns
    -------
    (int, float, float)
        The code the convolution kernels understand and its two parameters.

    Raises
    ------
    ValueError, TypeError
        An unknown name or bad parameters, naming ``activation``.
    """
    if activation is None:
        return 0, 0.0, 0.0
    name, parameters = (activation, ()) if isinstance(activation, str) else (None, None)
    if isinstance(activation, tuple) and activation and isinstance(activation[0], str):
        name, parameters = activation[0], tuple(activation[1:])
    if name not in EPILOGUE_ACTIVATIONS:
        known = ", ".join(repr(n) for n in EPILOGUE_ACTIVATIONS)
        raise ValueError(f"activation must be None, one of {known}, or a tuple (name, *parameters), "
                         f"got {activation!r}")
    code, defaults, names = EPILOGUE_ACTIVATIONS[name]
    if len(parameters) not in ((0, len(names)) if defaults is not None else (len(names),)):
        raise ValueError(f"activation {name!r} takes the parameters {names or 'none'}, got {parameters!r}")
    if name == "clip":
        low, high = clip_bounds(*parameters)
    elif parameters:
        values = [as_number(f"activation's {n}", v) for n, v in zip(names, parameters)]
        low, high = (values + [0.0])[:2]
    else:
        low, high = defaults
    return code, float(low), float(high)


def _check_out(name, out, shape, dtype, kernels):
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


class _ConvGeometry:
    """Resolved convolution geometry: output size and the kernels' integer arguments."""

    def __init__(self, out_shape, args, filter_blocks=1, sample_block=1):
        self.out_shape = out_shape
        self.args = args
        self.filter_blocks = filter_blocks
        self.sample_block = sample_block


def _conv_geometry(x_shape, weight_shape, dtype, stride, padding, dilation, groups):
    groups = check_int("groups", groups, 1)
    samples, channels, height, width = x_shape
    filters, channels_per_group, kernel_h, kernel_w = weight_shape
    if channels % groups:
        raise ValueError(f"groups={groups} must divide the input channels, got C={channels}")
    if filters % groups:
        raise ValueError(f"groups={groups} must divide the number of filters, got F={filters}")
    if channels_per_group != channels // groups:
        raise ValueError(
            f"weight has {channels_per_group} input channels per filter but x has C={channels} "
            f"channels in groups={groups} (expected weight shape ({filters}, {channels // groups}, "
            f"{kernel_h}, {kernel_w}))"
        )
    stride = pair("stride", stride, 1)
    dilation = pair("dilation", dilation, 1)
    pads = resolve_padding(padding, (kernel_h, kernel_w), stride, dilation, (height, width))
    out_h, out_w = window_output_shape(height, width, (kernel_h, kernel_w), stride, pads, dilation)
    taps = channels_per_group * kernel_h * kernel_w
    workers = cpu_workers(samples * filters * out_h * out_w * taps)
    row_bytes = taps * out_w * np.dtype(dtype).itemsize * workers
    block_rows = max(1, min(out_h, int(config.IM2COL_MAX_BYTES) // max(1, row_bytes)))
    filter_blocks = sample_block = 1
    if samples * groups < workers:  # fewer images than threads: share each image's work too
        pieces = -(-workers // (samples * groups))
        if 4 * out_h * out_w <= filters // groups and channels_per_group > 1:
            filter_blocks = pieces  # deep layer, very few pixels: each thread a part of the filters
        else:
            block_rows = min(block_rows, max(1, -(-out_h // pieces)))  # each thread a part of the rows
    elif block_rows == out_h and out_h * out_w < config.GEMM_MIN_COLUMNS and groups == 1:
        # small outputs (7x7 layers): the samples' columns side by side make one wide GEMM per
        # thread (an equal share of the samples each), within the column buffers' budget. The
        # share is of Numba's thread count, not of this call's workers, so that a result does
        # not depend on whether the call ran serial or parallel (the GEMMs' widths, and with
        # them BLAS's rounding, stay the same)
        budget = max(1, int(config.IM2COL_MAX_BYTES) // max(1, row_bytes * out_h))
        sample_block = max(1, min(-(-samples // numba.get_num_threads()), budget))
    args = (stride[0], stride[1], pads[0][0], pads[1][0], dilation[0], dilation[1], groups,
            block_rows, workers)
    return _ConvGeometry((out_h, out_w), args, filter_blocks, sample_block)


def _blas_guard(kernels):
    return single_threaded_blas() if kernels.DEVICE == "cpu" else contextlib.nullcontext()


def _check_grad(name, grad, shape, dtype):
    grad = as_float_array(name, grad, dtype=dtype)
    if tuple(grad.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (the forward output), got {tuple(grad.shape)}")
    return grad


def conv2d_backward(x, weight, grad_out, stride=1, padding=0, dilation=1, groups=1, input_grad=True):
    """Gradients of :func:`conv2d` with respect to ``x``, ``weight`` and ``bias``.

    Parameters
    ----------
    x, weight, stride, padding, dilation, groups
        As given to :func:`conv2d`.
    grad_out : (N, F, OH, OW) array
        Gradient of the loss with respect to the convolution's output.
    input_grad : bool
        Compute ``grad_x`` (a first layer does not need it).

    Returns
    -------
    grad_x : (N, C, H, W) array or None
    grad_weight : (F, C // groups, KH, KW) array
    grad_bias : (F,) array

    See Also
    --------
    cnnlab.kernels.cpu.conv.conv2d_backward_input, cnnlab.kernels.cpu.conv.conv2d_backward_weight,
    and their cuda twins.
    """
    x = as_float_array("x", x, ndim=4)
    weight = as_float_array("weight", weight, ndim=4, dtype=x.dtype)
    kernels = kernels_for(x=x, weight=weight, grad_out=grad_out)
    geometry = _conv_geometry(x.shape, weight.shape, x.dtype, stride, padding, dilation, groups)
    grad_out = _check_grad("grad_out", grad_out, (x.shape[0], weight.shape[0]) + geometry.out_shape, x.dtype)
    x, weight, grad_out = kernels.asarray(x), kernels.asarray(weight), kernels.asarray(grad_out)
    grad_weight = kernels.empty(weight.shape, x.dtype)
    grad_bias = kernels.empty((weight.shape[0],), x.dtype)
    grad_x = kernels.empty(x.shape, x.dtype) if input_grad else None
    with _blas_guard(kernels):
        kernels.conv2d_backward_weight(x, grad_out, grad_weight, grad_bias, *geometry.args)
        if input_grad:
            kernels.conv2d_backward_input(grad_out, weight, grad_x, *geometry.args)
    return grad_x, grad_weight, grad_bias


# ----------------------------------------------------------------------------- pooling

INDEX_DTYPE = np.dtype(np.int64)  # of pool2d(return_indices=True)'s indices, as PyTorch's

def pool2d(x, kernel_size, stride=None, padding=0, mode="max", *, dilation=1, ceil_mode=False,
           count_include_pad=True, return_indices=False):
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
    if check_flag("return_indices", return_indices):
        return _pool2d_with_indices(x, kernel_size, stride, padding, mode, dilation, ceil_mode)
    return _pool2d(x, kernel_size, stride, padding, mode, dilation=dilation, ceil_mode=ceil_mode,
                   count_include_pad=count_include_pad)


@sliding_window
def _pool2d(x, kernel_size, stride=None, padding=0, mode="max", *, dilation=1, ceil_mode=False,
            count_include_pad=True):
    """:func:`pool2d` without indices (chunk by chunk for a dask array)."""
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x)
    out_shape, args = _pool_geometry(x.shape, kernel_size, stride, padding, mode, dilation, ceil_mode,
                                     count_include_pad)
    out = kernels.empty(out_shape, x.dtype)
    kernels.pool2d_forward(kernels.asarray(x), out, *args)
    return out


def _check_indices_mode(mode, argument):
    if mode not in ("max", "min"):
        raise ValueError(f"{argument} applies to mode 'max' and 'min' only (the element a window picks), "
                         f"got mode={mode!r}")


def _indices_kernel_arguments(args):
    """The integer arguments of the kernels with indices, out of :func:`_pool_geometry`'s."""
    kernel_h, kernel_w, stride_h, stride_w, top, left, _, _, dilation_h, dilation_w, mode, _, workers = args
    return kernel_h, kernel_w, stride_h, stride_w, top, left, dilation_h, dilation_w, mode, workers


def _pool2d_with_indices(x, kernel_size, stride, padding, mode, dilation, ceil_mode):
    """:func:`pool2d` with ``return_indices=True``: ``(out, indices)``."""
    from . import dask as dask_support

    if dask_support.is_dask_array(x):
        raise TypeError("return_indices=True takes a NumPy or GPU array, not a dask array: "
                        "compute the chunk first, or pool without indices")
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x)
    out_shape, args = _pool_geometry(x.shape, kernel_size, stride, padding, mode, dilation, ceil_mode)
    _check_indices_mode(mode, "return_indices=True")
    out = kernels.empty(out_shape, x.dtype)
    indices = kernels.empty(out_shape, INDEX_DTYPE)
    kernels.pool2d_forward_with_indices(kernels.asarray(x), out, indices, *_indices_kernel_arguments(args))
    return out, indices


def pool_arguments(kernel_size, stride=None, padding=0, mode="max", dilation=1, ceil_mode=False,
                   count_include_pad=True):
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


def _pool_geometry(x_shape, kernel_size, stride, padding, mode, dilation=1, ceil_mode=False,
                   count_include_pad=True):
    """Validate pooling arguments; return the output shape and the kernel's integer arguments."""
    options = pool_arguments(kernel_size, stride, padding, mode, dilation, ceil_mode, count_include_pad)
    kernel, stride, pads, dilation = (options[k] for k in ("kernel_size", "stride", "padding", "dilation"))
    samples, channels, height, width = x_shape
    out_h, out_w = window_output_shape(height, width, kernel, stride, pads, dilation, options["ceil_mode"])
    workers = cpu_workers(samples * channels * out_h * out_w * kernel[0] * kernel[1])
    (top, bottom), (left, right) = pads
    args = (kernel[0], kernel[1], stride[0], stride[1], top, left, bottom, right, dilation[0], dilation[1],
            POOL_MODES[mode], int(options["count_include_pad"]), workers)
    return (samples, channels, out_h, out_w), args


def pool2d_backward(x, out, grad_out, kernel_size, stride=None, padding=0, mode="max", *, dilation=1,
                    ceil_mode=False, count_include_pad=True, indices=None):
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
    if indices is not None:
        return _pool2d_backward_with_indices(x, out, grad_out, indices, kernel_size, stride, padding, mode,
                                             dilation, ceil_mode)
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x, out=out, grad_out=grad_out)
    out_shape, args = _pool_geometry(x.shape, kernel_size, stride, padding, mode, dilation, ceil_mode,
                                     count_include_pad)
    out = _check_grad("out", out, out_shape, x.dtype)
    grad_out = _check_grad("grad_out", grad_out, out_shape, x.dtype)
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


def _check_indices(indices, shape, plane_size, kernels):
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
    if isinstance(indices, np.ndarray):
        indices = np.ascontiguousarray(indices)
        low, high = int(indices.min()), int(indices.max())
        if low < -1 or high >= plane_size:
            raise ValueError(f"indices must lie in -1 .. {plane_size - 1} (flat indices into each "
                             f"{shape[2:]} -> H*W = {plane_size} plane, -1 for none), got {low} .. {high}")
        return indices
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
    out_shape, _ = _pool_geometry(shape, kernel_size, stride, padding, mode, dilation, ceil_mode)
    _check_indices_mode(mode, "indices")
    grad_out = _check_grad("grad_out", grad_out, out_shape, dtype)
    if out is not None:
        _check_grad("out", out, out_shape, dtype)
    indices = _check_indices(indices, out_shape, shape[2] * shape[3], kernels)
    grad_x = kernels.empty(shape, dtype)
    workers = cpu_workers(math.prod(shape) + math.prod(out_shape))
    kernels.pool2d_backward_with_indices(kernels.asarray(grad_out), indices, grad_x, workers)
    return grad_x


def global_avg_pool2d_backward(x, grad_out):
    """Gradient of :func:`global_avg_pool2d`: every pixel of plane ``(n, c)`` gets
    ``grad_out[n, c] / (H * W)``."""
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x, grad_out=grad_out)
    grad_out = _check_grad("grad_out", grad_out, x.shape[:2], x.dtype)
    grad_x = kernels.empty(x.shape, x.dtype)
    kernels.global_avg_pool2d_backward(kernels.asarray(grad_out), grad_x)
    return grad_x


def max_pool2d(x, kernel_size, stride=None, padding=0, *, dilation=1, ceil_mode=False,
               count_include_pad=True, return_indices=False):
    """Max pooling: :func:`pool2d` with ``mode='max'`` (``count_include_pad`` has no effect);
    with ``return_indices=True`` it returns ``(out, indices)`` as
    ``torch.nn.functional.max_pool2d`` (int64 flat indices into each (H, W) plane)."""
    return pool2d(x, kernel_size, stride, padding, "max", dilation=dilation, ceil_mode=ceil_mode,
                  count_include_pad=count_include_pad, return_indices=return_indices)


def avg_pool2d(x, kernel_size, stride=None, padding=0, *, dilation=1, ceil_mode=False,
               count_include_pad=True):
    """Average pooling (padded zeros counted unless ``count_include_pad=False``):
    :func:`pool2d` with ``mode='avg'`` (``dilation`` must be 1)."""
    return pool2d(x, kernel_size, stride, padding, "avg", dilation=dilation, ceil_mode=ceil_mode,
                  count_include_pad=count_include_pad)


def min_pool2d(x, kernel_size, stride=None, padding=0, *, dilation=1, ceil_mode=False,
               count_include_pad=True, return_indices=False):
    """Min pooling: :func:`pool2d` with ``mode='min'`` (``count_include_pad`` has no effect);
    ``return_indices=True`` returns ``(out, indices)`` as :func:`max_pool2d`."""
    return pool2d(x, kernel_size, stride, padding, "min", dilation=dilation, ceil_mode=ceil_mode,
                  count_include_pad=count_include_pad, return_indices=return_indices)


@per_sample
def global_avg_pool2d(x):
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


@per_sample
def global_max_pool2d(x):
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


def global_max_pool2d_backward(x, grad_out):
    """Gradient of :func:`global_max_pool2d`: ``grad_out[n, c]`` goes to the first maximum of
    plane ``(n, c)`` (the first NaN if there is one), 0 to every other pixel."""
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x, grad_out=grad_out)
    grad_out = _check_grad("grad_out", grad_out, x.shape[:2], x.dtype)
    grad_x = kernels.empty(x.shape, x.dtype)
    kernels.global_max_pool2d_backward(kernels.asarray(x), kernels.asarray(grad_out), grad_x)
    return grad_x


# ----------------------------------------------------------------------------- activations


def _elementwise(name, kernel_name, x, *scalars):
    x = as_float_array("x", x)
    kernels = kernels_for(x=x)
    out = kernels.empty(x.shape, x.dtype)
    flat_in = kernels.asarray(x).reshape(-1)
    getattr(kernels, kernel_name)(flat_in, out.reshape(-1), *scalars)
    return out


def _elementwise_backward(kernel_name, saved, grad_out, *scalars):
    """Run an element-wise backward kernel on ``saved`` (forward input or output) and ``grad_out``."""
    saved = as_float_array("saved", saved)
    kernels = kernels_for(saved=saved, grad_out=grad_out)
    grad_out = _check_grad("grad_out", grad_out, saved.shape, saved.dtype)
    grad_x = kernels.empty(saved.shape, saved.dtype)
    getattr(kernels, kernel_name)(kernels.asarray(saved).reshape(-1), kernels.asarray(grad_out).reshape(-1),
                                  grad_x.reshape(-1), *scalars)
    return grad_x


def relu_backward(x, grad_out):
    """Gradient of :func:`relu`: ``grad_out`` where ``x > 0``, else 0 (``x`` the forward input)."""
    return _elementwise_backward("relu_backward", x, grad_out)


def leaky_relu_backward(x, grad_out, negative_slope=0.01):
    """Gradient of :func:`leaky_relu` (``x`` the forward input)."""
    return _elementwise_backward("leaky_relu_backward", x, grad_out, float(negative_slope))


def sigmoid_backward(y, grad_out):
    """Gradient of :func:`sigmoid` from its output ``y``: ``grad_out * y * (1 - y)``."""
    return _elementwise_backward("sigmoid_backward", y, grad_out)


def tanh_backward(y, grad_out):
    """Gradient of :func:`tanh` from its output ``y``: ``grad_out * (1 - y**2)``."""
    return _elementwise_backward("tanh_backward", y, grad_out)


def _axis_view(name, shape, axis):
    """Check ``axis`` and return the ``(outer, K, inner)`` view the softmax kernels normalize
    along the middle of (no data moves)."""
    ndim = len(shape)
    axis = check_int("axis", axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for {name} with shape {tuple(shape)}")
    axis %= ndim
    return (int(np.prod(shape[:axis], dtype=np.int64)), shape[axis], int(np.prod(shape[axis + 1:], dtype=np.int64)))


def _softmax_backward_like(kernel_name, y, grad_out, axis):
    y = as_float_array("y", y)
    kernels = kernels_for(y=y, grad_out=grad_out)
    grad_out = _check_grad("grad_out", grad_out, y.shape, y.dtype)
    view = _axis_view("y", y.shape, axis)
    grad_x = kernels.empty(y.shape, y.dtype)
    getattr(kernels, kernel_name)(kernels.asarray(y).reshape(view), kernels.asarray(grad_out).reshape(view),
                                  grad_x.reshape(view))
    return grad_x


def softmax_backward(y, grad_out, axis=1):
    """Gradient of :func:`softmax` from its output ``y``: ``y * (grad_out - sum(grad_out * y))``."""
    return _softmax_backward_like("softmax_backward", y, grad_out, axis)


def log_softmax_backward(y, grad_out, axis=1):
    """Gradient of :func:`log_softmax` from its output ``y``: ``grad_out - exp(y) * sum(grad_out)``."""
    return _softmax_backward_like("log_softmax_backward", y, grad_out, axis)


@per_sample
def relu(x):
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
    return _elementwise("relu", "relu_forward", x)


@per_sample
def leaky_relu(x, negative_slope=0.01):
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
    return _elementwise("leaky_relu", "leaky_relu_forward", x, float(negative_slope))


@per_sample
def sigmoid(x):
    """Logistic sigmoid ``1 / (1 + exp(-x))``, computed without overflow.

    See Also
    --------
    cnnlab.kernels.cpu.activation.sigmoid_forward, torch.sigmoid
    """
    return _elementwise("sigmoid", "sigmoid_forward", x)


@per_sample
def tanh(x):
    """Hyperbolic tangent element-wise.

    See Also
    --------
    cnnlab.kernels.cpu.activation.tanh_forward, torch.tanh
    """
    return _elementwise("tanh", "tanh_forward", x)


def _softmax_like(kernel_name, x, axis):
    x = as_float_array("x", x)
    kernels = kernels_for(x=x)
    view = _axis_view("x", x.shape, axis)
    out = kernels.empty(x.shape, x.dtype)
    getattr(kernels, kernel_name)(kernels.asarray(x).reshape(view), out.reshape(view))
    return out


def softmax(x, axis=1):
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


def log_softmax(x, axis=1):
    """Logarithm of :func:`softmax`, computed as ``x - max - log(sum(exp(x - max)))``
    (finite for huge logits, no ``log(0)``).

    See Also
    --------
    cnnlab.kernels.cpu.activation.log_softmax_forward, torch.log_softmax, scipy.special.log_softmax
    """
    return _softmax_like("log_softmax_forward", x, axis)


def as_number(name, value, allow_infinite=False):
    """``value`` as a float: a real number, not NaN (and finite unless ``allow_infinite``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if math.isnan(value) or not (allow_infinite or math.isfinite(value)):
        raise ValueError(f"{name} must be {'a number' if allow_infinite else 'finite'}, got {value}")
    return float(value)


def clip_bounds(low, high):
    """``(min, max)`` of :func:`clip` checked, ``None`` read as an open side (-inf or +inf)."""
    if low is None and high is None:
        raise ValueError("clip needs min or max (or both), got min=None and max=None")
    low = -math.inf if low is None else as_number("min", low, allow_infinite=True)
    high = math.inf if high is None else as_number("max", high, allow_infinite=True)
    if low > high:
        raise ValueError(f"min must not exceed max, got min={low} and max={high}")
    return low, high


@per_sample
def clip(x, min=None, max=None):
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
    return _elementwise("clip", "clip_forward", x, low, high)


def clip_backward(x, grad_out, min=None, max=None):
    """Gradient of :func:`clip`: ``grad_out`` where ``min < x < max``, else 0 (``x`` the forward
    input; 0 at the boundaries, PyTorch's hardtanh rule)."""
    low, high = clip_bounds(min, max)
    return _elementwise_backward("clip_backward", x, grad_out, low, high)


def relu6(x):
    """ReLU capped at 6, ``min(max(x, 0), 6)``: :func:`clip` with ``min=0, max=6`` (MobileNet).

    See Also
    --------
    clip, cnnlab.kernels.cpu.activation.clip_forward, torch.nn.functional.relu6
    """
    return clip(x, 0.0, 6.0)


def relu6_backward(x, grad_out):
    """Gradient of :func:`relu6`: ``grad_out`` where ``0 < x < 6``, else 0 (as PyTorch)."""
    return clip_backward(x, grad_out, 0.0, 6.0)


@per_sample
def hardsigmoid(x, alpha=1 / 6, beta=0.5):
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
    return _elementwise("hardsigmoid", "hardsigmoid_forward", x, alpha, beta)


def hardsigmoid_backward(x, grad_out, alpha=1 / 6, beta=0.5):
    """Gradient of :func:`hardsigmoid` (``x`` the forward input)."""
    return _elementwise_backward("hardsigmoid_backward", x, grad_out, as_number("alpha", alpha),
                                 as_number("beta", beta))


@per_sample
def hardswish(x):
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
    return _elementwise("hardswish", "hardswish_forward", x)


def hardswish_backward(x, grad_out):
    """Gradient of :func:`hardswish` (``x`` the forward input)."""
    return _elementwise_backward("hardswish_backward", x, grad_out)


@per_sample
def silu(x):
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
    return _elementwise("silu", "silu_forward", x)


def silu_backward(x, grad_out):
    """Gradient of :func:`silu`: ``grad_out * s * (1 + x * (1 - s))``, ``s = sigmoid(x)``
    (``x`` the forward input)."""
    return _elementwise_backward("silu_backward", x, grad_out)


# ----------------------------------------------------------------------------- merge


def _index_array(kernels, values):
    """Integer geometry as an int64 array on the kernels' device."""
    values = np.asarray(values, dtype=np.int64)
    if kernels.DEVICE == "cuda":
        from .device import to_device

        return to_device(values)
    return values


def _broadcast_operands(a, b, grad_out=None):
    """Check the operands of :func:`add` / :func:`multiply`.

    Returns ``(full, small, swapped, kernels, geometry)``: ``full`` has the result's shape and
    ``small`` broadcasts against it (``swapped`` when that is ``a``); ``geometry`` is the
    kernels' ``(dims, b_dims)``, adjacent axes of the same kind merged.
    """
    a = as_float_array("a", a)
    b = as_float_array("b", b, dtype=a.dtype)
    kernels = kernels_for(a=a, b=b, grad_out=grad_out)
    a_shape, b_shape = tuple(a.shape), tuple(b.shape)

    def broadcasts(small, full):
        padded = (1,) * (len(full) - len(small)) + small
        return len(small) <= len(full) and all(m in (1, n) for m, n in zip(padded, full))

    swapped = not broadcasts(b_shape, a_shape)
    if swapped and not broadcasts(a_shape, b_shape):
        raise ValueError(
            f"a with shape {a_shape} and b with shape {b_shape} do not broadcast: one operand's "
            "axes must equal the other's or be 1 (NumPy's rule, the result having one operand's shape)"
        )
    full, small = (b, a) if swapped else (a, b)
    padded = (1,) * (len(full.shape) - len(small.shape)) + tuple(small.shape)
    dims, b_dims = [], []
    for n, m in zip(full.shape, padded):
        if n == 1:
            continue
        if dims and (b_dims[-1] == 1) == (m == 1):
            dims[-1] *= n
            b_dims[-1] *= m
        else:
            dims.append(n)
            b_dims.append(m)
    geometry = (_index_array(kernels, dims or [1]), _index_array(kernels, b_dims or [1]))
    return full, small, swapped, kernels, geometry


def add(a, b):
    """Element-wise sum ``a + b``, one operand broadcast NumPy-style against the other.

    Parameters
    ----------
    a, b : arrays, float32 or float64, of one dtype and on one device
        Either shapes are equal, or one operand's axes are each 1 or equal to the other's
        (missing leading axes count as 1), e.g. (N, C, H, W) and (N, C, 1, 1).

    Returns
    -------
    array with the shape of the larger operand, on the inputs' device

    Shape
    -----
    ``numpy.broadcast_shapes(a.shape, b.shape)``, which must be one of the two shapes.

    See Also
    --------
    cnnlab.kernels.cpu.merge.add_forward, cnnlab.kernels.cuda.merge.add_forward : the CPU/GPU twins.
    torch.add, numpy.add

    Examples
    --------
    >>> import numpy as np, cnnlab.functional as F
    >>> F.add(np.ones((2, 3)), np.array([0.0, 1.0, 2.0]))
    array([[1., 2., 3.],
           [1., 2., 3.]])
    """
    full, small, _, kernels, geometry = _broadcast_operands(a, b)
    out = kernels.empty(full.shape, full.dtype)
    kernels.add_forward(kernels.asarray(full).reshape(-1), kernels.asarray(small).reshape(-1),
                        out.reshape(-1), *geometry)
    return out


def add_backward(a, b, grad_out):
    """Gradients of :func:`add`: ``(grad_a, grad_b)``, each ``grad_out`` summed over the axes
    its operand was broadcast along (only the shapes of ``a`` and ``b`` are used)."""
    full, small, swapped, kernels, geometry = _broadcast_operands(a, b, grad_out)
    grad_out = _check_grad("grad_out", grad_out, full.shape, full.dtype)
    grad_full = kernels.empty(full.shape, full.dtype)
    grad_small = kernels.empty(small.shape, full.dtype)
    kernels.add_backward(kernels.asarray(grad_out).reshape(-1), grad_full.reshape(-1),
                         grad_small.reshape(-1), *geometry)
    return (grad_small, grad_full) if swapped else (grad_full, grad_small)


def multiply(a, b):
    """Element-wise product ``a * b``, one operand broadcast NumPy-style against the other: a
    squeeze-excitation gate (N, C, 1, 1) times feature maps (N, C, H, W).

    Parameters
    ----------
    a, b : arrays, float32 or float64, of one dtype and on one device
        Shapes as for :func:`add`.

    Returns
    -------
    array with the shape of the larger operand, on the inputs' device

    Shape
    -----
    ``numpy.broadcast_shapes(a.shape, b.shape)``, which must be one of the two shapes.

    See Also
    --------
    cnnlab.kernels.cpu.merge.multiply_forward, cnnlab.kernels.cuda.merge.multiply_forward :
        the CPU/GPU twins.
    torch.mul, numpy.multiply
    """
    full, small, _, kernels, geometry = _broadcast_operands(a, b)
    out = kernels.empty(full.shape, full.dtype)
    kernels.multiply_forward(kernels.asarray(full).reshape(-1), kernels.asarray(small).reshape(-1),
                             out.reshape(-1), *geometry)
    return out


def multiply_backward(a, b, grad_out):
    """Gradients of :func:`multiply`: ``grad_a = grad_out * b`` and ``grad_b = grad_out * a``,
    each summed over the axes its operand was broadcast along."""
    full, small, swapped, kernels, geometry = _broadcast_operands(a, b, grad_out)
    grad_out = _check_grad("grad_out", grad_out, full.shape, full.dtype)
    grad_full = kernels.empty(full.shape, full.dtype)
    grad_small = kernels.empty(small.shape, full.dtype)
    kernels.multiply_backward(kernels.asarray(full).reshape(-1), kernels.asarray(small).reshape(-1),
                              kernels.asarray(grad_out).reshape(-1), grad_full.reshape(-1),
                              grad_small.reshape(-1), *geometry)
    return (grad_small, grad_full) if swapped else (grad_full, grad_small)


def _concatenation_axis(axis, shape):
    ndim = len(shape)
    axis = check_int("axis", axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of range for arrays of shape {tuple(shape)}")
    return axis % ndim


def _three_axes(shape, axis):
    """``(outer, K, inner)``: ``shape`` seen around ``axis`` (no data moves)."""
    return (int(np.prod(shape[:axis], dtype=np.int64)), shape[axis],
            int(np.prod(shape[axis + 1:], dtype=np.int64)))


def concatenate(arrays, axis=1):
    """Join arrays along ``axis`` (the channel axis by default, as DenseNet and Inception do).

    Parameters
    ----------
    arrays : list or tuple of arrays, float32 or float64, of one dtype and on one device
        Equal shapes except along ``axis``.
    axis : int, default 1
        Negative values count from the end.

    Returns
    -------
    array on the inputs' device

    Shape
    -----
    The shape of ``arrays[0]`` with ``shape[axis] = sum(a.shape[axis] for a in arrays)``.

    See Also
    --------
    concatenate_backward
    cnnlab.kernels.cpu.merge.concatenate_forward, cnnlab.kernels.cuda.merge.concatenate_forward :
        the CPU/GPU twins.
    torch.cat, numpy.concatenate
    """
    if not isinstance(arrays, (list, tuple)):
        raise TypeError(f"arrays must be a list or tuple of arrays, got {type(arrays).__name__}")
    if not arrays:
        raise ValueError("arrays is empty: concatenate needs at least one array")
    first = as_float_array("arrays[0]", arrays[0])
    arrays = [first] + [as_float_array(f"arrays[{i}]", a, ndim=len(first.shape), dtype=first.dtype)
                        for i, a in enumerate(arrays[1:], 1)]
    kernels = kernels_for(**{f"arrays[{i}]": a for i, a in enumerate(arrays)})
    axis = _concatenation_axis(axis, first.shape)
    for i, a in enumerate(arrays[1:], 1):
        if any(m != n for k, (m, n) in enumerate(zip(a.shape, first.shape)) if k != axis):
            raise ValueError(f"arrays[{i}] has shape {tuple(a.shape)} but arrays[0] has shape "
                             f"{tuple(first.shape)}: they may differ along axis={axis} only")
    shape = list(first.shape)
    shape[axis] = sum(a.shape[axis] for a in arrays)
    out = kernels.empty(tuple(shape), first.dtype)
    out_view = out.reshape(_three_axes(shape, axis))
    offset = 0
    for a in arrays:
        kernels.concatenate_forward(kernels.asarray(a).reshape(_three_axes(a.shape, axis)), out_view, offset)
        offset += a.shape[axis]
    return out


def concatenate_backward(grad_out, sizes, axis=1):
    """Gradient of :func:`concatenate`: ``grad_out`` split along ``axis`` into pieces of
    ``sizes`` (the inputs' extents along ``axis``); returns a list of arrays."""
    grad_out = as_float_array("grad_out", grad_out)
    kernels = kernels_for(grad_out=grad_out)
    axis = _concatenation_axis(axis, grad_out.shape)
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise TypeError(f"sizes must be a non-empty list of extents along axis={axis}, got {sizes!r}")
    sizes = [check_int("sizes", s, 1) for s in sizes]
    if sum(sizes) != grad_out.shape[axis]:
        raise ValueError(f"sizes {sizes} must add up to grad_out's extent {grad_out.shape[axis]} "
                         f"along axis={axis} (grad_out shape {tuple(grad_out.shape)})")
    source = kernels.asarray(grad_out).reshape(_three_axes(grad_out.shape, axis))
    grads = []
    offset = 0
    for size in sizes:
        shape = list(grad_out.shape)
        shape[axis] = size
        grad = kernels.empty(tuple(shape), grad_out.dtype)
        kernels.concatenate_backward(source, grad.reshape(_three_axes(shape, axis)), offset)
        grads.append(grad)
        offset += size
    return grads


# ----------------------------------------------------------------------------- linear


@per_sample
def linear(x, weight, bias=None):
    """Fully-connected layer: ``x @ weight.T + bias``.

    Parameters
    ----------
    x : (N, in_features) array, float32 or float64
    weight : (out_features, in_features) array of the same dtype (PyTorch layout)
    bias : (out_features,) array or None

    Returns
    -------
    (N, out_features) array on the input's device

    See Also
    --------
    cnnlab.kernels.cpu.linear.linear_forward, cnnlab.kernels.cuda.linear.linear_forward
    torch.nn.functional.linear
    """
    x = as_float_array("x", x, ndim=2)
    weight = as_float_array("weight", weight, ndim=2, dtype=x.dtype)
    kernels = kernels_for(x=x, weight=weight, bias=bias)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(
            f"weight has {weight.shape[1]} input features but x has {x.shape[1]} "
            f"(x shape {tuple(x.shape)}, weight shape {tuple(weight.shape)})"
        )
    bias = _bias_or_zeros(kernels, bias, weight.shape[0], x.dtype)
    out = kernels.empty((x.shape[0], weight.shape[0]), x.dtype)
    with _blas_guard(kernels):
        kernels.linear_forward(kernels.asarray(x), kernels.asarray(weight), bias, out,
                               cpu_workers(x.shape[0] * weight.size))
    return out


def linear_backward(x, weight, grad_out):
    """Gradients of :func:`linear`: ``(grad_out @ weight, grad_out.T @ x, grad_out.sum(0))``.

    Returns
    -------
    grad_x : (N, in_features) array
    grad_weight : (out_features, in_features) array
    grad_bias : (out_features,) array
    """
    x = as_float_array("x", x, ndim=2)
    weight = as_float_array("weight", weight, ndim=2, dtype=x.dtype)
    kernels = kernels_for(x=x, weight=weight, grad_out=grad_out)
    grad_out = _check_grad("grad_out", grad_out, (x.shape[0], weight.shape[0]), x.dtype)
    grad_x = kernels.empty(x.shape, x.dtype)
    grad_weight = kernels.empty(weight.shape, x.dtype)
    grad_bias = kernels.empty((weight.shape[0],), x.dtype)
    with _blas_guard(kernels):
        kernels.linear_backward(kernels.asarray(x), kernels.asarray(weight), kernels.asarray(grad_out),
                                grad_x, grad_weight, grad_bias, cpu_workers(x.shape[0] * weight.size))
    return grad_x, grad_weight, grad_bias


# ----------------------------------------------------------------------------- regularization


def dropout(x, p, seed):
    """Inverted dropout: zero each element with probability ``p``, scale the rest by ``1/(1-p)``.

    Which elements drop is a pure function of ``(seed, position)`` (a counter-based hash),
    identical on the CPU and the GPU.

    Parameters
    ----------
    x : array, float32 or float64
    p : float in [0, 1)
    seed : int in [0, 2**31)

    Returns
    -------
    out : array like ``x``
    mask : array like ``x``, ``1/(1-p)`` where kept and 0 where dropped (for the backward)

    See Also
    --------
    cnnlab.kernels.cpu.dropout.dropout_forward, torch.nn.functional.dropout
    """
    x = as_float_array("x", x)
    p = _probability(p)
    seed = check_int("seed", seed, 0)
    if seed >= 2**31:
        raise ValueError(f"seed must be below 2**31, got {seed}")
    kernels = kernels_for(x=x)
    out = kernels.empty(x.shape, x.dtype)
    mask = kernels.empty(x.shape, x.dtype)
    kernels.dropout_forward(kernels.asarray(x).reshape(-1), out.reshape(-1), mask.reshape(-1), p, seed)
    return out, mask


def _probability(p):
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
        raise TypeError(f"p must be a number, got {p!r}")
    if not 0 <= p < 1:
        raise ValueError(f"p must be in [0, 1), got {p}")
    return float(p)


def dropout_backward(mask, grad_out):
    """Gradient of :func:`dropout`: ``grad_out * mask``."""
    return _elementwise_backward("dropout_backward", mask, grad_out)


def batch_norm2d(x, gamma, beta, eps=1e-5, mean=None, variance=None):
    """Batch normalization of NCHW input per channel.

    With ``mean``/``variance`` given (evaluation, running statistics) they are used;
    otherwise the batch's own statistics are computed and returned (training).

    Returns
    -------
    out : (N, C, H, W) array
    mean, variance : (C,) arrays, the statistics used (biased variance)

    See Also
    --------
    cnnlab.kernels.cpu.normalization.batchnorm2d_forward, torch.nn.functional.batch_norm
    """
    x = as_float_array("x", x, ndim=4)
    channels = x.shape[1]
    gamma = _check_grad("gamma", gamma, (channels,), x.dtype)
    beta = _check_grad("beta", beta, (channels,), x.dtype)
    kernels = kernels_for(x=x, gamma=gamma, beta=beta, mean=mean, variance=variance)
    x = kernels.asarray(x)
    if mean is None or variance is None:
        mean = kernels.empty((channels,), x.dtype)
        variance = kernels.empty((channels,), x.dtype)
        kernels.batchnorm2d_statistics(x, mean, variance)
    else:
        mean = kernels.asarray(_check_grad("mean", mean, (channels,), x.dtype))
        variance = kernels.asarray(_check_grad("variance", variance, (channels,), x.dtype))
    out = kernels.empty(x.shape, x.dtype)
    kernels.batchnorm2d_forward(x, mean, variance, kernels.asarray(gamma), kernels.asarray(beta), float(eps), out)
    return out, mean, variance


def running_average(running, batch, momentum, scale=1.0):
    """Update ``running`` in place: ``(1 - momentum) * running + momentum * scale * batch``."""
    kernels = kernels_for(running=running, batch=batch)
    kernels.running_average(kernels.asarray(running), kernels.asarray(batch), float(momentum), float(scale))


def batch_norm2d_backward(x, grad_out, mean, variance, gamma, eps=1e-5):
    """Gradients of training-mode :func:`batch_norm2d`: ``(grad_x, grad_gamma, grad_beta)``."""
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x, grad_out=grad_out, gamma=gamma)
    grad_out = _check_grad("grad_out", grad_out, x.shape, x.dtype)
    channels = x.shape[1]
    grad_x = kernels.empty(x.shape, x.dtype)
    grad_gamma = kernels.empty((channels,), x.dtype)
    grad_beta = kernels.empty((channels,), x.dtype)
    kernels.batchnorm2d_backward(kernels.asarray(x), kernels.asarray(grad_out), kernels.asarray(mean),
                                 kernels.asarray(variance), kernels.asarray(gamma), float(eps),
                                 grad_x, grad_gamma, grad_beta)
    return grad_x, grad_gamma, grad_beta


# ----------------------------------------------------------------------------- losses


def as_targets(name, targets, samples, classes):
    """Check class-index targets: integers in ``[0, classes)``, one per sample; int64 result."""
    if is_gpu_array(targets):
        if np.dtype(targets.dtype) != np.int64 or tuple(targets.shape) != (samples,):
            raise TypeError(f"{name} on the GPU must be int64 of shape ({samples},), "
                            f"got {targets.dtype} {tuple(targets.shape)}")
        return targets
    if isinstance(targets, (str, bytes)):
        raise TypeError(f"{name} must be integer class indices, got {type(targets).__name__}")
    targets = np.asarray(targets)
    if targets.dtype.kind == "f" and targets.size and np.all(np.isfinite(targets)) \
            and np.all(targets == np.round(targets)):
        targets = targets.astype(np.int64)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer class indices, got dtype {targets.dtype}")
    if targets.shape != (samples,):
        raise ValueError(f"{name} must have shape ({samples},) (one label per sample), got {targets.shape}")
    if targets.size and (targets.min() < 0 or targets.max() >= classes):
        raise ValueError(f"{name} must lie in [0, {classes}) for {classes} classes, "
                         f"got values from {targets.min()} to {targets.max()}")
    return np.ascontiguousarray(targets, dtype=np.int64)


def cross_entropy(logits, targets):
    """Mean softmax cross-entropy of ``(N, K)`` logits against class indices, fused and stable.

    Returns
    -------
    loss : float
        ``mean(-log softmax(logits)[n, targets[n]])``.
    probabilities : (N, K) array
        ``softmax(logits)``, kept for :func:`cross_entropy_backward`.

    See Also
    --------
    cnnlab.kernels.cpu.loss.cross_entropy_forward, torch.nn.functional.cross_entropy
    """
    losses, probabilities = cross_entropy_per_sample(logits, targets)
    return float(np.mean(to_host(losses), dtype=np.float64)), probabilities


def cross_entropy_per_sample(logits, targets):
    """Per-sample cross-entropy losses and the softmax, both left on the logits' device
    (no host copy: what a training step on the GPU needs)."""
    logits = as_float_array("logits", logits, ndim=2)
    kernels = kernels_for(logits=logits, targets=targets)
    targets = kernels.asarray(as_targets("targets", targets, logits.shape[0], logits.shape[1]))
    losses = kernels.empty((logits.shape[0],), logits.dtype)
    probabilities = kernels.empty(logits.shape, logits.dtype)
    kernels.cross_entropy_forward(kernels.asarray(logits), targets, losses, probabilities)
    return losses, probabilities


def add_classification_totals(losses, probabilities, targets, totals):
    """Add a batch's loss sum and number of correct predictions to the float64 pair ``totals``
    (all on one device)."""
    kernels = kernels_for(losses=losses, probabilities=probabilities, targets=targets, totals=totals)
    kernels.classification_totals(kernels.asarray(losses), kernels.asarray(probabilities),
                                  kernels.asarray(targets), kernels.asarray(totals))


def gather_rows(source, index):
    """``source[index]`` for the first axis, on ``source``'s device (``index`` int64 there too)."""
    kernels = kernels_for(source=source, index=index)
    samples = index.shape[0]
    shape = (samples,) + tuple(source.shape[1:])
    width = int(np.prod(source.shape[1:], dtype=np.int64))
    out = kernels.empty(shape, source.dtype)
    kernels.gather_rows(kernels.asarray(source).reshape(source.shape[0], width), kernels.asarray(index),
                        out.reshape(samples, width))
    return out


def cross_entropy_backward(probabilities, targets):
    """Gradient of the mean cross-entropy with respect to the logits: ``(softmax - one_hot) / N``."""
    probabilities = as_float_array("probabilities", probabilities, ndim=2)
    kernels = kernels_for(probabilities=probabilities, targets=targets)
    targets = kernels.asarray(as_targets("targets", targets, *probabilities.shape))
    grad = kernels.empty(probabilities.shape, probabilities.dtype)
    kernels.cross_entropy_backward(kernels.asarray(probabilities), targets, grad, 1.0 / probabilities.shape[0])
    return grad


def mse(prediction, target):
    """Mean squared error; returns the loss as a float."""
    prediction = as_float_array("prediction", prediction)
    target = _check_grad("target", target, prediction.shape, prediction.dtype)
    kernels = kernels_for(prediction=prediction, target=target)
    losses = kernels.empty(prediction.shape, prediction.dtype)
    kernels.mse_forward(kernels.asarray(prediction).reshape(-1), kernels.asarray(target).reshape(-1),
                        losses.reshape(-1))
    return float(np.mean(to_host(losses), dtype=np.float64))


def mse_backward(prediction, target):
    """Gradient of the mean squared error with respect to ``prediction``."""
    prediction = as_float_array("prediction", prediction)
    target = _check_grad("target", target, prediction.shape, prediction.dtype)
    kernels = kernels_for(prediction=prediction, target=target)
    grad = kernels.empty(prediction.shape, prediction.dtype)
    size = int(np.prod(prediction.shape))
    kernels.mse_backward(kernels.asarray(prediction).reshape(-1), kernels.asarray(target).reshape(-1),
                         grad.reshape(-1), 1.0 / size)
    return grad


def _class_weights(kernels, class_weights, classes, dtype):
    """``class_weights`` checked ((K,), finite, >= 0) and cast to ``dtype`` on the kernels' device."""
    if is_gpu_array(class_weights):
        if tuple(class_weights.shape) != (classes,) or np.dtype(class_weights.dtype) != np.dtype(dtype):
            raise TypeError(f"class_weights on the GPU must be {np.dtype(dtype)} of shape ({classes},), "
                            f"got {class_weights.dtype} {tuple(class_weights.shape)}")
        return kernels.asarray(class_weights)
    weights = as_float_array("class_weights", np.asarray(class_weights, dtype=np.float64), ndim=1)
    if weights.shape != (classes,):
        raise ValueError(f"class_weights must have one weight per class, shape ({classes},), "
                         f"got {weights.shape}")
    if not np.all(np.isfinite(weights)) or weights.min() < 0:
        raise ValueError(f"class_weights must be finite and >= 0, got {weights.tolist()}")
    from .device import to_device

    weights = weights.astype(dtype)
    return to_device(weights) if kernels.DEVICE == "cuda" else weights


def weighted_cross_entropy_per_sample(logits, targets, class_weights):
    """Per-sample cross-entropy times the weight of each sample's class, and the softmax, both
    left on the logits' device.

    ``class_weights`` is ``(K,)``: sample ``n`` weighs ``class_weights[targets[n]]``.
    """
    losses, probabilities = cross_entropy_per_sample(logits, targets)
    kernels = kernels_for(logits=logits, targets=targets)
    targets = kernels.asarray(as_targets("targets", targets, *probabilities.shape))
    weights = _class_weights(kernels, class_weights, probabilities.shape[1], probabilities.dtype)
    kernels.weight_losses_by_class(losses, targets, weights)
    return losses, probabilities


def weighted_cross_entropy(logits, targets, class_weights):
    """Class-weighted softmax cross-entropy: ``sum(w[t_n] * loss_n) / N`` (Keras' rule for
    ``class_weight``), and the softmax for :func:`weighted_cross_entropy_backward`.

    See Also
    --------
    cross_entropy, torch.nn.functional.cross_entropy (``weight=``, which divides by the sum of
    the weights instead of N)
    """
    losses, probabilities = weighted_cross_entropy_per_sample(logits, targets, class_weights)
    return float(np.mean(to_host(losses), dtype=np.float64)), probabilities


def weighted_cross_entropy_backward(probabilities, targets, class_weights):
    """Gradient of :func:`weighted_cross_entropy` with respect to the logits:
    ``w[t_n] * (softmax - one_hot) / N``."""
    probabilities = as_float_array("probabilities", probabilities, ndim=2)
    kernels = kernels_for(probabilities=probabilities, targets=targets)
    targets = kernels.asarray(as_targets("targets", targets, *probabilities.shape))
    weights = _class_weights(kernels, class_weights, probabilities.shape[1], probabilities.dtype)
    grad = kernels.empty(probabilities.shape, probabilities.dtype)
    kernels.weighted_cross_entropy_backward(kernels.asarray(probabilities), targets, weights, grad,
                                                 1.0 / probabilities.shape[0])
    return grad


# ----------------------------------------------------------------------------- optimizer updates


def sgd_update(param, grad, velocity, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """One SGD step on ``param`` in place (on its device); ``velocity`` is updated too."""
    kernels = kernels_for(param=param, grad=grad, velocity=velocity)
    kernels.sgd_step(kernels.asarray(param).reshape(-1), kernels.asarray(grad).reshape(-1),
                     kernels.asarray(velocity).reshape(-1), float(lr), float(momentum),
                     float(weight_decay), bool(nesterov))


def adam_update(param, grad, first_moment, second_moment, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0):
    """One Adam step (``step`` counts from 1) on ``param`` in place; the moments are updated too."""
    kernels = kernels_for(param=param, grad=grad, first_moment=first_moment, second_moment=second_moment)
    kernels.adam_step(kernels.asarray(param).reshape(-1), kernels.asarray(grad).reshape(-1),
                      kernels.asarray(first_moment).reshape(-1), kernels.asarray(second_moment).reshape(-1),
                      float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), int(step))
