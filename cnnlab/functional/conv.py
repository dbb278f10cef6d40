"""Convolution: :func:`conv2d` (with its fused epilogue) and its backward."""

from __future__ import annotations

import contextlib
import functools
import math
import threading

import numpy as np

from .. import config
from ..device import kernels_for
from ..dispatch import sliding_window
from ..kernels import (
    EPILOGUE_CLIP,
    EPILOGUE_GELU,
    EPILOGUE_HARDSIGMOID,
    EPILOGUE_HARDSWISH,
    EPILOGUE_LEAKY_RELU,
    EPILOGUE_MASK,
    EPILOGUE_NONE,
    EPILOGUE_SIGMOID,
    EPILOGUE_SILU,
    EPILOGUE_TANH,
)
from ..kernels import cpu as cpu_kernels
from ..parallel import blas_limited, cpu_workers, single_threaded_blas, thread_count
from ..shapes import check_flag, check_int, pair, plain_argument, resolve_padding, window_output_shape
from ..types import Array, DTypeLike, IntPair, Padding
from .activation import as_number, clip_bounds
from .common import (
    KeptAnswers,
    as_float_array,
    bias_or_zeros,
    blas_guard,
    check_grad,
    check_out,
    empty_batches,
    unbatched,
)
from .merge import add, add_backward, concatenate, concatenate_backward


def _bound_first(function):
    """Let :func:`conv2d` repeat a checked call cheaply: a call with host arrays of the shapes,
    arguments and settings of an earlier call that it checked (a :class:`BoundConv2d` that
    :meth:`~BoundConv2d.accepts` them) goes straight to that call's kernel work; any other goes
    through every check and is then bound for the next. The checks, the path's choice and the
    three wrappers below cost about 10 us a call: ``bench/functional_calls.py``, three rounds
    against the version before, LeNet's second layer at batch 64 114-122 -> 105-112 us, one
    image 60-67 -> 50-57 us. Bound calls are kept by the input's and the weight's shapes, a few
    per pair; they hold no array of the caller's."""
    @functools.wraps(function)
    def run(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, scale=None, residual=None,
            activation=None, out=None):
        bound_key = None
        if type(x) is np.ndarray and type(weight) is np.ndarray:
            bound_key = (x.shape, weight.shape)
            for bound in _BOUND_CALLS.get(bound_key, ()):
                if bound.accepts(x, weight, bias, stride, padding, dilation, groups, scale, residual, activation,
                                 out):
                    return bound(x, weight, bias, scale, residual, out)
        result = function(x, weight, bias, stride, padding, dilation, groups, scale=scale, residual=residual,
                          activation=activation, out=out)
        if bound_key is not None and type(result) is np.ndarray:
            bound = bind_conv2d(x, weight, bias, stride, padding, dilation, groups, scale=scale, residual=residual,
                                activation=activation)
            if bound is not None:
                kept = _BOUND_CALLS.get(bound_key) or _BOUND_CALLS.keep(bound_key, [])
                kept[:] = [bound] + kept[:_BOUND_PER_SHAPES - 1]  # the newest first
        return result
    return run


@_bound_first
@unbatched(4)
@sliding_window("convolution")
@empty_batches()
def conv2d(x: Array, weight: Array, bias: Array | None = None, stride: IntPair = 1, padding: Padding = 0,
           dilation: IntPair = 1, groups: int = 1, *, scale: Array | None = None, residual: Array | None = None,
           activation: str | tuple | None = None, out: Array | None = None) -> Array:
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
        ``'hardsigmoid'``, ``'sigmoid'``, ``'silu'``, ``'tanh'``, ``'gelu'`` (the exact form), ``'leaky_relu'``, or with
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
    geometry = conv_geometry(x.shape, weight.shape, x.dtype, stride, padding, dilation, groups)
    filters = weight.shape[0]
    code, low, high = epilogue_activation(activation)
    shift = bias_or_zeros(kernels, bias, filters, x.dtype)
    scale = kernels.ones((filters,), x.dtype) if scale is None else kernels.asarray(check_scale(scale, filters, x.dtype))
    out_shape = (x.shape[0], filters) + geometry.out_shape
    if out is None:
        out = kernels.empty(out_shape, x.dtype)
    else:
        out = check_out("out", out, out_shape, x.dtype, kernels)
    if residual is None:
        residual_array, has_residual = out, False
    else:
        residual_array = kernels.asarray(as_float_array("residual", residual, ndim=4, dtype=x.dtype))
        if tuple(residual_array.shape) != out_shape:
            raise ValueError(f"residual must have the output's shape {out_shape}, got {tuple(residual_array.shape)}")
        has_residual = True
    if kernels is cpu_kernels:  # the path first: only the GEMM paths need the BLAS pool held to one thread
        work = cpu_kernels.conv2d_forward_work(x.shape, weight.shape, out_shape, *geometry.args,
                                               geometry.filter_blocks, geometry.sample_block, dtype=x.dtype,
                                               sealed=cpu_kernels.conv2d_weight_sealed(weight))
        _run_cpu_work(work, (x, weight, scale, shift, residual_array, has_residual, int(code), float(low),
                             float(high), out))
        return out
    kernels.conv2d_forward(kernels.asarray(x), kernels.asarray(weight), scale, shift, residual_array,
                           has_residual, code, low, high, out, *geometry.args,
                           filter_blocks=geometry.filter_blocks, sample_block=geometry.sample_block)
    return out


def _run_cpu_work(work, arguments, compiled_shares=None):
    """Run a resolved CPU convolution (``cpu_kernels.conv2d_forward_work``) on ``arguments``,
    holding the BLAS pool to one thread only where its path calls a GEMM and no caller holds
    the limit already (a model call holds it once for all its kernels). ``compiled_shares``:
    as ``cpu_kernels.run_conv2d_forward_work`` takes it."""
    if blas_limited() or not cpu_kernels.conv2d_forward_work_calls_blas(work):
        cpu_kernels.run_conv2d_forward_work(work, *arguments, compiled_shares=compiled_shares)
    else:
        with single_threaded_blas():
            cpu_kernels.run_conv2d_forward_work(work, *arguments, compiled_shares=compiled_shares)


class BoundConv2d:
    """:func:`conv2d` for host arrays of one set of shapes and arguments, checked once.

    Made by :func:`bind_conv2d` after a :func:`conv2d` call succeeded with these arguments (an
    inference plan's fused convolution, :class:`cnnlab.fusion.FusedConv`, calls the same layer
    again and again). :meth:`accepts` tells, cheaply, whether a new call's arrays are of the
    same kind (host NumPy arrays, C-contiguous, the same shapes and dtype, the same geometry,
    activation and settings); :meth:`__call__` then goes straight to the CPU kernel's work
    (``cnnlab.kernels.cpu.conv2d_forward_work``: the path, items and threads), the epilogue's
    code and the default scale and shift resolved at binding. Any other
    call must go through :func:`conv2d`, which checks everything.

    With ``compiled_shares``, a call whose work is one even share per thread has the shares run
    by Numba's threading layer from compiled code, which starts the second thread's share
    sooner than the kernels' thread team (``cnnlab.kernels.cpu._schedule.run_on_layer``; the
    bound call keeps the items' compiled address) but compiles the layer's driver for each kind
    of arguments the first time on a machine: the inference plan's steps, called again and
    again, ask for it.

    Attributes
    ----------
    out_shape : tuple
    dtype : numpy.dtype
    """

    def __init__(self, x, weight, bias, stride, padding, dilation, groups, scale, residual, activation,
                 compiled_shares=False):
        self.compiled_shares = {} if compiled_shares else None  # (where the kernel keeps its items' address)
        self.x_shape, self.dtype, self.weight_shape = x.shape, x.dtype, weight.shape
        self.filters = (weight.shape[0],)
        self.arguments = (stride, padding, dilation, groups)
        self.has_bias, self.has_scale, self.has_residual = bias is not None, scale is not None, residual is not None
        self.activation, self.activation_type = activation, type(activation)
        self.settings = _settings(x.dtype)
        self.geometry = conv_geometry(x.shape, weight.shape, x.dtype, stride, padding, dilation, groups)
        self.out_shape = (x.shape[0], weight.shape[0]) + self.geometry.out_shape
        self.code, self.low, self.high = epilogue_activation(activation)
        self.ones = np.ones((weight.shape[0],), x.dtype)
        self.zeros = np.zeros((weight.shape[0],), x.dtype)
        self.sealed = cpu_kernels.conv2d_weight_sealed(weight)  # (its packing kept: the path may differ)
        self.work = cpu_kernels.conv2d_forward_work(x.shape, weight.shape, self.out_shape, *self.geometry.args,
                                                    self.geometry.filter_blocks, self.geometry.sample_block,
                                                    dtype=x.dtype, sealed=self.sealed)
        self.calls_blas = cpu_kernels.conv2d_forward_work_calls_blas(self.work)
        self.layer_shares = None  # (see __call__)

    def __getstate__(self):
        """A copy made elsewhere (pickled) starts without the compiled address its kernel kept:
        an address is this process's."""
        state = dict(self.__dict__)
        if state["compiled_shares"] is not None:
            state["compiled_shares"] = {}
        state["layer_shares"] = None
        return state

    def _fits(self, a, shape):
        # C-contiguous by NumPy's flag, which lets an axis of length 1 have any stride: the
        # kernels never step along one (conv2d hands such arrays to the same kernels)
        return type(a) is np.ndarray and a.shape == shape and (a.dtype is self.dtype or a.dtype == self.dtype) \
            and a.flags.c_contiguous

    def _same_arguments(self, arguments):
        return all(a is b or (plain_argument(a) is not None and a == b) for a, b in zip(arguments, self.arguments))

    def accepts(self, x, weight, bias, stride, padding, dilation, groups, scale, residual, activation, out=None):
        """Whether :meth:`__call__` computes what :func:`conv2d` would for these arguments.

        Asked at every step of every model call, so the common case is one flat expression, with
        no method call: host arrays whose dtype is the bound dtype object itself, the same
        argument objects as at binding and the settings tuple :func:`_settings` gave then (it
        hands out the same tuple while the settings stay the same). Anything else gets the full
        comparison, by value."""
        dtype, filters, arguments = self.dtype, self.filters, self.arguments
        held = _HELD.__dict__.get("settings")  # (as _settings reads them, without its call in a model's call)
        settings = held.get(dtype) if held is not None else None
        if settings is None:
            settings = _settings(dtype)
        if (type(x) is np.ndarray and x.dtype is dtype and x.shape == self.x_shape and x.flags.c_contiguous
                and type(weight) is np.ndarray and weight.dtype is dtype and weight.shape == self.weight_shape
                and weight.flags.c_contiguous and ((weight.flags.writeable and not self.sealed)
                                                   or cpu_kernels.conv2d_weight_sealed(weight) is self.sealed)
                and (type(bias) is np.ndarray and bias.dtype is dtype and bias.shape == filters
                     and bias.flags.c_contiguous if self.has_bias else bias is None)
                and (type(scale) is np.ndarray and scale.dtype is dtype and scale.shape == filters
                     and scale.flags.c_contiguous if self.has_scale else scale is None)
                and (type(residual) is np.ndarray and residual.dtype is dtype and residual.shape == self.out_shape
                     and residual.flags.c_contiguous if self.has_residual else residual is None)
                and out is None and activation is self.activation and stride is arguments[0]
                and padding is arguments[1] and dilation is arguments[2] and groups is arguments[3]
                and settings is self.settings):
            return True
        return self._accepts_by_value(x, weight, bias, stride, padding, dilation, groups, scale, residual,
                                      activation, out)

    def _accepts_by_value(self, x, weight, bias, stride, padding, dilation, groups, scale, residual, activation,
                          out):
        """:meth:`accepts`, comparing what is not the same object by value."""
        fits, filters = self._fits, self.filters
        arguments = self.arguments
        return (fits(x, self.x_shape) and fits(weight, self.weight_shape)
                and cpu_kernels.conv2d_weight_sealed(weight) is self.sealed
                and (fits(bias, filters) if self.has_bias else bias is None)
                and (fits(scale, filters) if self.has_scale else scale is None)
                and (fits(residual, self.out_shape) if self.has_residual else residual is None)
                and (out is None or (fits(out, self.out_shape) and out.flags.writeable))
                and (activation is self.activation or (type(activation) is self.activation_type
                                                       and activation == self.activation))
                and ((stride is arguments[0] and padding is arguments[1] and dilation is arguments[2]
                      and groups is arguments[3]) or self._same_arguments((stride, padding, dilation, groups)))
                and _settings(self.dtype) == self.settings)

    def __call__(self, x, weight, bias=None, scale=None, residual=None, out=None):
        """``conv2d(x, weight, bias, ..., scale=scale, residual=residual, out=out)`` for arguments
        :meth:`accepts` (the geometry and activation bound). Once the kernel has kept the address
        of shares it runs on the threading layer, later calls hand them to it straight
        (``cpu_kernels.run_conv2d_on_layer``), without looking the path up again."""
        if out is None:  # (from the lender's pool where one is set: a training step's, as conv2d's)
            out = cpu_kernels.empty(self.out_shape, self.dtype)
        arguments = (x, weight, self.ones if scale is None else scale, self.zeros if bias is None else bias,
                     out if residual is None else residual, residual is not None, self.code, self.low, self.high, out)
        shares = self.layer_shares
        if shares is not None and (not self.calls_blas or blas_limited()):
            cpu_kernels.run_conv2d_on_layer(shares[0], arguments + shares[1], shares[2], shares[3])
            return out
        _run_cpu_work(self.work, arguments, self.compiled_shares)
        if self.compiled_shares:
            self.layer_shares = cpu_kernels.conv2d_layer_shares(self.work, self.compiled_shares)
        return out

    def kernel_call(self, x, weight, bias, scale, residual, out):
        """A function of no arguments that does what ``self(x, weight, bias, scale, residual,
        out)`` does and returns ``out``, for a caller that repeats the call on these very arrays
        within a model call (:meth:`cnnlab.fusion.FusedStep.prepare`): the shares on the
        threading layer with their arguments made once. None where the call has no such form
        (its shares' address not kept yet, or a path that prepares its weights at each call)."""
        shares = self.layer_shares
        if shares is None:
            return None
        arguments = (shares[0], (x, weight, self.ones if scale is None else scale, self.zeros if bias is None else bias,
                                 out if residual is None else residual, residual is not None, self.code, self.low,
                                 self.high, out) + shares[1], shares[2], shares[3])

        def call():
            cpu_kernels.run_conv2d_on_layer(*arguments)
            return out
        return call


def kernel_settings(dtype):
    """The settings a bound convolution's geometry and kernel work were chosen by for arrays of
    ``dtype`` (:func:`_settings`): the same tuple object while they stay the same, so that a
    caller that kept it can compare by identity."""
    return _settings(dtype)


def _settings(dtype):
    """Everything besides the arguments that a convolution's geometry (:func:`conv_geometry`)
    and its kernel work (a :class:`BoundConv2d`'s) are chosen by, for arrays of ``dtype``: Numba's
    thread count, ``config``'s sizes, this module's ``POINTWISE_*`` sizes, whether 1x1
    convolutions take pixel blocks, and the kernels' path settings. Within
    :func:`held_settings`, read once per dtype."""
    held = _HELD.__dict__.get("settings")
    if held is None:
        return _read_settings(dtype)
    settings = held.get(dtype)
    if settings is None:
        settings = held[dtype] = _read_settings(dtype)
    return settings


@contextlib.contextmanager
def held_settings():
    """Within the block, on this thread, :func:`_settings` reads the settings once per dtype and
    gives the same tuple after: an inference plan's walk, whose bound convolutions would each
    read them again (about a microsecond a step in a MobileNetV2 call; the settings choose a
    kernel's path and cut, never its values, and nothing in a model call changes them)."""
    previous = _HELD.__dict__.get("settings")
    _HELD.settings = {}
    try:
        yield
    finally:
        _HELD.settings = previous


_HELD = threading.local()  # .settings: the settings held on this thread by dtype (held_settings), or None


def _read_settings(dtype):
    """:func:`_settings` of ``dtype``, read now: the tuple handed out last time for ``dtype`` where
    the settings are the same (so that :meth:`BoundConv2d.accepts` can compare them by
    identity), a new one where they changed."""
    settings = _settings_now(dtype)
    last = _LAST_SETTINGS.get(dtype)
    if last is not None and last == settings:
        return last
    _LAST_SETTINGS[dtype] = settings
    return settings


_LAST_SETTINGS = {}  # dtype -> the settings tuple _read_settings handed out last


def _settings_now(dtype):
    """The settings :func:`_settings` describes, as a new tuple."""
    return (thread_count(), config.IM2COL_MAX_BYTES, config.IM2COL_CACHE_BYTES, config.PARALLEL_MIN_WORK,
            config.GEMM_MIN_COLUMNS, config.CLAIM_MIN_WORK, POINTWISE_BLOCK_BYTES, POINTWISE_MIN_PIXELS,
            POINTWISE_SPLIT_FILTERS, cpu_kernels.conv2d_pointwise_pixel_blocks(dtype),
            cpu_kernels.conv2d_path_settings())


class BoundConvPair:
    """A 1x1 convolution and the depthwise convolution that reads its output (each a
    :class:`BoundConv2d`, bound with ``compiled_shares``), run as one loop of shares on Numba's
    threading layer (``cnnlab.kernels.cpu.run_conv2d_pair_on_layer``): each thread computes its
    part of the first's filters over the whole image, then the depthwise convolution of those
    channels, which it reads from its own core's cache. One start of the layer's threads for
    the two, none between them, and one call from Python (an inverted residual block's
    expansion and depthwise layers: MobileNet, EfficientNet).

    With a ``third`` bound convolution reading the depthwise one's output (the block's
    projection, with its residual), its shares run in a second loop of the same compiled call.
    Made by :func:`bind_conv2d_pair`; called with arguments each bound call
    :meth:`BoundConv2d.accepts`.

    Attributes
    ----------
    first, second, third : BoundConv2d (third None without one)
    calls_blas : bool
        Whether the first's or the third's items call BLAS: then the pair runs only where BLAS
        is held to one thread (:func:`cnnlab.parallel.blas_limited`), as a model call holds it.
    """

    def __init__(self, first, second, work, third=None):
        self.first, self.second, self.third = first, second, third
        self.items, self.trailing, self.first_edges, self.second_edges = work
        self.third_edges = None if third is None else cpu_kernels.conv2d_share_edges(third.work[4])
        self.calls_blas = cpu_kernels.conv2d_forward_work_calls_blas((self.items,)) \
            or (third is not None and third.calls_blas)
        self.addresses = None  # (the items functions' compiled addresses, found at the first call)

    def __call__(self, x, first_parameters, middle, second_parameters, between, third_parameters=None, out=None):
        """The last convolution's output for input ``x``: each convolution's parameters
        ``(weight, bias, scale)`` (``bias`` and ``scale`` may be None; the third's followed by
        its residual or None) and output array (``middle``, the first's; ``between``, the
        second's, returned without a third; ``out``, the third's, returned)."""
        cpu_kernels.run_conv2d_pair_on_layer(*self._kernels(x, first_parameters, middle, second_parameters, between,
                                                             third_parameters, out))
        return between if self.third is None else out

    def kernel_call(self, x, first_parameters, middle, second_parameters, between, third_parameters=None, out=None):
        """A function of no arguments that does what ``self(...)`` does on these very arrays and
        returns what it returns, for a caller that repeats the call within a model call
        (:meth:`cnnlab.fusion.FusedStep.prepare`): the kernels' arguments made once."""
        kernels = self._kernels(x, first_parameters, middle, second_parameters, between, third_parameters, out)
        result = between if self.third is None else out

        def call():
            cpu_kernels.run_conv2d_pair_on_layer(*kernels)
            return result
        return call

    def _kernels(self, x, first_parameters, middle, second_parameters, between, third_parameters, out):
        """``(function, arguments, edges, address)`` of each kernel, as
        ``cpu_kernels.run_conv2d_pair_on_layer`` takes them. Written out step by step, without
        a loop: a model call makes one such call for each of its blocks."""
        first, second, third = self.first, self.second, self.third
        weight, bias, scale = first_parameters
        first_arguments = (x, weight, first.ones if scale is None else scale, first.zeros if bias is None else bias,
                           middle, False, first.code, first.low, first.high, middle) + self.trailing
        weight, bias, scale = second_parameters
        second_arguments = (middle, weight, second.ones if scale is None else scale,
                            second.zeros if bias is None else bias, between, False, second.code, second.low,
                            second.high, between) + second.work[3]
        third_arguments = None
        if third is not None:
            weight, bias, scale, residual = third_parameters
            third_arguments = (between, weight, third.ones if scale is None else scale,
                               third.zeros if bias is None else bias, out if residual is None else residual,
                               residual is not None, third.code, third.low, third.high, out) + third.work[3]
        addresses = self.addresses
        if addresses is None:
            addresses = self.addresses = (
                cpu_kernels.conv2d_compiled_address(self.items, first_arguments),
                cpu_kernels.conv2d_compiled_address(second.work[0], second_arguments),
                None if third is None else cpu_kernels.conv2d_compiled_address(third.work[0], third_arguments))
        if third is None:
            return ((self.items, first_arguments, self.first_edges, addresses[0]),
                    (second.work[0], second_arguments, self.second_edges, addresses[1]))
        return ((self.items, first_arguments, self.first_edges, addresses[0]),
                (second.work[0], second_arguments, self.second_edges, addresses[1]),
                (third.work[0], third_arguments, self.third_edges, addresses[2]))

    def __getstate__(self):
        """A copy made elsewhere (pickled) finds the compiled addresses again: an address is this
        process's."""
        return dict(self.__dict__, addresses=None)


def bind_conv2d_pair(first: BoundConv2d | None, second: BoundConv2d | None,
                     third: BoundConv2d | None = None) -> BoundConvPair | None:
    """A :class:`BoundConvPair` of ``first``, a bound 1x1 convolution (stride 1, no padding, one
    group, no residual), ``second``, a bound depthwise convolution (no residual) of the first's
    output, and ``third`` where given and it can join them: a bound 1x1 convolution of the
    second's output (stride 1, one group) whose work is one even share a thread. None where
    the first two cannot run as one loop (``first`` or ``second`` None, not bound with
    ``compiled_shares``, not of those kinds, paths or shapes, or work that one thread runs
    alone). All must be bound under the same settings."""
    if not _pointwise_bound(first) or second is None \
            or second.compiled_shares is None or first.has_residual or second.has_residual \
            or first.settings is not second.settings:
        return None
    filters = first.weight_shape[0]
    if second.x_shape != first.out_shape or second.arguments[3] != filters or second.weight_shape[:2] != (filters, 1):
        return None
    workers = thread_count()
    if workers < 2 or second.work[2] < 2:
        return None
    work = cpu_kernels.conv2d_paired_work(first.x_shape, first.weight_shape, first.out_shape, first.geometry.args,
                                          second.work, workers, first.dtype)
    if work is None:
        return None
    third_fits = _pointwise_bound(third, second) and third.settings is first.settings and third.work[5] is None \
        and len(third.work[4]) == third.work[2] > 1
    return BoundConvPair(first, second, work, third if third_fits else None)


def _pointwise_bound(bound, before=None):
    """Whether ``bound`` is a :class:`BoundConv2d` with ``compiled_shares`` of a 1x1 convolution of
    one group at stride 1 with no padding; with ``before`` (the call it would follow), of
    ``before``'s output."""
    if bound is None or bound.compiled_shares is None or bound.weight_shape[2:] != (1, 1) or bound.arguments[3] != 1:
        return False
    return bound.geometry.args[:4] == (1, 1, 0, 0) and (before is None or bound.x_shape == before.out_shape)


def bind_conv2d(x: Array, weight: Array, bias: Array | None = None, stride: IntPair = 1, padding: Padding = 0,
                dilation: IntPair = 1, groups: int = 1, *, scale: Array | None = None,
                residual: Array | None = None, activation: str | tuple | None = None,
                compiled_shares: bool = False) -> BoundConv2d | None:
    """A :class:`BoundConv2d` for calls like this one, or None where every call must go
    through :func:`conv2d` (arrays that are not C-contiguous host float arrays of one dtype, an
    empty or unbatched input, arguments of other types than int, str and tuples of ints).
    Call it after :func:`conv2d` accepted the same arguments: it checks nothing else.
    ``compiled_shares``: see :class:`BoundConv2d`."""
    arrays = [a for a in (x, weight, bias, scale, residual) if a is not None]
    if any(type(a) is not np.ndarray or not a.flags.c_contiguous or a.dtype != x.dtype for a in arrays) \
            or x.dtype not in (np.float32, np.float64) or x.ndim != 4 or weight.ndim != 4 or 0 in x.shape \
            or None in (plain_argument(stride), plain_argument(padding), plain_argument(dilation), plain_argument(groups)):
        return None
    if not (activation is None or type(activation) is str or type(activation) is tuple):
        return None
    return BoundConv2d(x, weight, bias, stride, padding, dilation, groups, scale, residual, activation,
                       compiled_shares)


EPILOGUE_ACTIVATIONS = {
    # name: (kernel code, default parameters, parameter names)
    "relu": (EPILOGUE_CLIP, (0.0, math.inf), ()),
    "relu6": (EPILOGUE_CLIP, (0.0, 6.0), ()),
    "clip": (EPILOGUE_CLIP, None, ("min", "max")),
    "leaky_relu": (EPILOGUE_LEAKY_RELU, (0.01, 0.0), ("negative_slope",)),
    "hardsigmoid": (EPILOGUE_HARDSIGMOID, (1 / 6, 0.5), ("alpha", "beta")),
    "hardswish": (EPILOGUE_HARDSWISH, (0.0, 0.0), ()),
    "sigmoid": (EPILOGUE_SIGMOID, (0.0, 0.0), ()),
    "silu": (EPILOGUE_SILU, (0.0, 0.0), ()),
    "tanh": (EPILOGUE_TANH, (0.0, 0.0), ()),
    "gelu": (EPILOGUE_GELU, (0.0, 0.0), ()),
}


def epilogue_activation(activation: str | tuple | None) -> tuple[int, float, float]:
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
        return EPILOGUE_NONE, 0.0, 0.0
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


class ConvGeometry:
    """Resolved convolution geometry: output size and the kernels' integer arguments."""

    def __init__(self, out_shape: tuple[int, int], args: tuple, filter_blocks: int = 1,
                 sample_block: int = 1) -> None:
        self.out_shape = out_shape
        self.args = args
        self.filter_blocks = filter_blocks
        self.sample_block = sample_block


#: resolved geometries by their arguments and the settings they depend on (see conv_geometry)
_GEOMETRIES = KeptAnswers(4096)
#: (x's shape, weight's shape) -> the calls of :func:`conv2d` bound for them, newest first (:func:`_bound_first`)
_BOUND_CALLS = KeptAnswers(256)
#: bound calls kept per pair of shapes (other arguments, activations or settings)
_BOUND_PER_SHAPES = 4


def conv_geometry(x_shape: tuple[int, ...], weight_shape: tuple[int, ...], dtype: DTypeLike, stride: IntPair,
                  padding: Padding, dilation: IntPair, groups: int) -> ConvGeometry:
    """The resolved geometry of a convolution (:class:`ConvGeometry`), checking the arguments.

    Computed once per set of arguments and settings (:func:`_settings`: Numba's thread count,
    ``config``'s sizes, this module's ``POINTWISE_*`` sizes, the kernels' path settings) and kept:
    a model calls the same few convolutions over and over. Arguments of other types than int, str
    and tuples of ints are resolved every time.
    """
    arguments = (plain_argument(stride), plain_argument(padding), plain_argument(dilation), plain_argument(groups))
    if None in arguments:
        return _resolve_geometry(x_shape, weight_shape, dtype, stride, padding, dilation, groups)
    key = (tuple(x_shape), tuple(weight_shape), np.dtype(dtype), *arguments, _settings(dtype))
    geometry = _GEOMETRIES.get(key)
    if geometry is None:
        geometry = _GEOMETRIES.keep(key, _resolve_geometry(x_shape, weight_shape, dtype, stride, padding, dilation,
                                                           groups))
    return geometry


def _resolve_geometry(x_shape, weight_shape, dtype, stride, padding, dilation, groups):
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
    direct = cpu_kernels.conv2d_is_direct(weight_shape, groups, stride, out_h * out_w, samples)  # no GEMM, no columns
    workers = cpu_workers(conv_work(samples * filters * out_h * out_w, taps, direct))
    row_bytes = taps * out_w * np.dtype(dtype).itemsize * workers
    block_rows = max(1, min(out_h, int(config.IM2COL_MAX_BYTES) // max(1, row_bytes)))
    filter_blocks = sample_block = 1
    pointwise = kernel_h == kernel_w == 1 and tuple(stride) == (1, 1) and (out_h, out_w) == (height, width)
    if samples * groups < workers:  # fewer images than threads: share each image's work too
        pieces = -(-workers // (samples * groups))
        if (4 * out_h * out_w <= filters // groups or pointwise and filters // groups >= POINTWISE_SPLIT_FILTERS) \
                and not direct:
            # deep layer, very few pixels, or a 1x1 convolution with enough filters: each thread a
            # part of the filters over all the pixels. A 1x1 convolution's GEMMs split by pixels
            # ran up to 2.6x slower (MobileNetV2's 64->384 at 14x14, batch 1: 121-249 -> 84-85 us;
            # bench/pointwise_split.py); with 24 filters, 12 rows a GEMM, about even or slower
            filter_blocks = pieces
        else:
            block_rows = min(block_rows, max(1, -(-out_h // pieces)))  # each thread a part of the rows
    elif block_rows == out_h and out_h * out_w < config.GEMM_MIN_COLUMNS and groups == 1:
        # small outputs (7x7 layers, LeNet's 8x8): blocks of a few samples, each computed with its
        # samples innermost (the kernel's _interleaved_forward_items, whose GEMMs take as many
        # output rows as make max(GEMM_MIN_COLUMNS, twice the filters) columns), within the
        # column buffers' budget, in a number of blocks the threads share evenly
        # (cpu_kernels.conv2d_interleaved_sample_block). The blocks follow Numba's thread count,
        # not this call's workers, so that a result does not depend on whether the call ran
        # serial or parallel (the GEMMs' widths, and with them BLAS's rounding, stay the same).
        # Blocks of 8 and 16 samples ran within 4 % of each other (LeNet's second layer at batch
        # 64, ResNet-18's 7x7 layers at batch 16: scratch timings)
        budget = max(1, int(config.IM2COL_MAX_BYTES) // max(1, row_bytes * out_h))
        by_panels = cpu_kernels.conv2d_interleaved_by_panels(stride[1], math.prod(weight_shape) * np.dtype(dtype).itemsize)
        sample_block = cpu_kernels.conv2d_interleaved_sample_block(samples, thread_count(), budget,
                                                                   out_w if by_panels else 0, np.dtype(dtype).itemsize)
    row_block = taps * out_w * np.dtype(dtype).itemsize
    if sample_block == 1 and block_rows * row_block > int(config.IM2COL_CACHE_BYTES):
        # columns a few rows at a time, in the core's cache, rather than one GEMM over columns that
        # stream from memory (96 to 24 channels, 3x3, 160x160, batch 1: 71 ms -> 12 ms; ResNet's
        # 3x3 64-channel layer at batch 16: 67 -> 57 ms)
        block_rows = max(1, int(config.IM2COL_CACHE_BYTES) // row_block)
    if pointwise and sample_block == filter_blocks == 1 and cpu_kernels.conv2d_pointwise_pixel_blocks(dtype):
        block_rows = min(block_rows, _pointwise_rows(channels_per_group + filters // groups, out_w, dtype))
    args = (stride[0], stride[1], pads[0][0], pads[1][0], dilation[0], dilation[1], groups,
            block_rows, workers)
    return ConvGeometry((out_h, out_w), args, filter_blocks, sample_block)


#: a 1x1 convolution's pixel block (its input and output columns together), at most
POINTWISE_BLOCK_BYTES = 160 * 1024
#: ... but no fewer pixels than this (smaller GEMMs lose more than the cache gains)
POINTWISE_MIN_PIXELS = 96


#: a 1x1 convolution of one image (and group) shares its filters between the threads from this
#: many filters (per group) on, its pixels below (see _resolve_geometry)
POINTWISE_SPLIT_FILTERS = 32


def _pointwise_rows(values_per_pixel, out_w, dtype):
    """Output rows per work item of a 1x1 convolution at stride 1 (whose input is its own column
    matrix): blocks of pixels whose input and output columns (``values_per_pixel`` values a
    pixel) fit in ``POINTWISE_BLOCK_BYTES``, so that the epilogue reads the GEMM's output from
    the core's cache, but of at least ``POINTWISE_MIN_PIXELS`` pixels. MobileNetV2's 16->96
    layer at 112x112, batch 1: 512-533 us in two blocks of 56 rows, 373-386 us in blocks of 3
    rows (``bench/pointwise_blocks.py``, docs/performance.md)."""
    row_bytes = max(1, values_per_pixel * out_w * np.dtype(dtype).itemsize)
    return max(1, POINTWISE_BLOCK_BYTES // row_bytes, -(-POINTWISE_MIN_PIXELS // out_w))


def conv_work(outputs: int, taps: int, direct: bool) -> int:
    """A convolution's work in element visits, the unit of ``config.PARALLEL_MIN_WORK``
    (:func:`cnnlab.parallel.cpu_workers`), for ``outputs`` output elements of ``taps``
    multiply-adds each.

    A multiply-add inside the GEMM path's matrix product costs about a sixteenth of an element
    visit, and each output element about six multiply-adds more (its column and its epilogue);
    a multiply-add of a convolution computed directly (``direct``: depthwise, or few input
    channels per group; no GEMM), about a visit. Measured with
    ``bench/thread_split.py``: a convolution that takes under about 20 us on one thread runs
    slower when shared between two (handing a share over and waiting for it costs about 8 us),
    and these weights put that point near ``2 * PARALLEL_MIN_WORK`` (pointwise 8 to 24
    channels at 12x96: 14.6 us on one thread, 17.7 us on two)."""
    if direct:
        return outputs * (taps + 1)
    return outputs * (taps + 6) // 16


def check_scale(scale: Array, filters: int, dtype: DTypeLike) -> Array:
    """:func:`conv2d`'s ``scale``: a 1-D float array of ``dtype`` with one entry per filter."""
    scale = as_float_array("scale", scale, ndim=1, dtype=dtype)
    if scale.shape[0] != filters:
        raise ValueError(f"scale must have {filters} entries (one per filter), got shape {tuple(scale.shape)}")
    return scale


def conv2d_backward(x: Array, weight: Array, grad_out: Array, stride: IntPair = 1, padding: Padding = 0,
                    dilation: IntPair = 1, groups: int = 1, input_grad: bool = True, *,
                    relu_input: bool = False) -> tuple[Array, ...]:
    """Gradients of :func:`conv2d` with respect to ``x``, ``weight`` and ``bias``.

    Parameters
    ----------
    x, weight, stride, padding, dilation, groups
        As given to :func:`conv2d`.
    grad_out : (N, F, OH, OW) array
        Gradient of the loss with respect to the convolution's output.
    input_grad : bool
        Compute ``grad_x`` (a first layer does not need it).
    relu_input : bool, default False
        Keyword-only: ``x`` is the output of a ReLU, and ``grad_x`` is wanted with respect to
        that ReLU's input: 0 where ``x`` is not > 0, as :func:`cnnlab.functional.relu_backward`
        would make it (bitwise). On the CPU, where the input gradient is a convolution (stride
        1), the mask is applied as its output is written; otherwise in a pass after it.

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
    relu_input = check_flag("relu_input", relu_input)
    x = as_float_array("x", x, ndim=4)
    weight = as_float_array("weight", weight, ndim=4, dtype=x.dtype)
    kernels = kernels_for(x=x, weight=weight, grad_out=grad_out)
    geometry = conv_geometry(x.shape, weight.shape, x.dtype, stride, padding, dilation, groups)
    grad_out = check_grad("grad_out", grad_out, (x.shape[0], weight.shape[0]) + geometry.out_shape, x.dtype)
    x, weight, grad_out = kernels.asarray(x), kernels.asarray(weight), kernels.asarray(grad_out)
    grad_weight = kernels.empty(weight.shape, x.dtype)
    grad_bias = kernels.empty((weight.shape[0],), x.dtype)
    grad_x = kernels.empty(x.shape, x.dtype) if input_grad else None
    with blas_guard(kernels):
        kernels.conv2d_backward_weight(x, grad_out, grad_weight, grad_bias, *geometry.args)
        if input_grad:
            input_gradient(kernels, grad_out, weight, grad_x, geometry, mask=x if relu_input else None)
    return grad_x, grad_weight, grad_bias


def input_gradient(kernels, grad_out: Array, weight: Array, grad_x: Array, geometry: ConvGeometry,
                   mask: Array | None = None) -> None:
    """Write the input gradient of the convolution of ``geometry`` into ``grad_x`` (also the
    forward pass of a transposed convolution), on ``kernels``' device, inside the caller's
    ``blas_guard``; with ``mask`` (of ``grad_x``'s shape), 0 where it is not > 0 (the gradient
    through the mask of a ReLU whose output ``mask`` is).

    At stride 1 (with no more padding than the window reaches), the input gradient is itself a
    convolution: of ``grad_out``, padded by the window's reach less the forward's padding, with
    the flipped weight (:func:`cnnlab.kernels.cpu.conv.conv2d_flipped_weight`). It then takes
    the forward's paths: a GEMM over ``taps`` rows of columns (the filters' taps: 288 for 32
    filters of 3x3), the direct kernel for depthwise layers, the pointwise blocks for 1x1 ones.
    Otherwise :func:`cnnlab.kernels.cpu.conv.conv2d_backward_input` multiplies the gradient into
    columns and scatters them back (col2im), a GEMM over only ``filters`` rows. The CIFAR-sized
    network's 32-channel 3x3 layer at batch 32: 6.8-7.3 ms by col2im, 5.1 ms as a convolution;
    MobileNetV2's depthwise 96-channel layer at 56x56, batch 4: 3.3 ms, 0.37-0.38 ms
    (``python bench/conv_backward.py [--col2im]``)."""
    flipped = _flipped_geometry(grad_out.shape, weight.shape, grad_x.shape, grad_x.dtype, geometry)
    in_epilogue = mask is not None and flipped is not None and kernels is cpu_kernels
    if flipped is None:
        kernels.conv2d_backward_input(grad_out, weight, grad_x, *geometry.args)
    else:
        channels, dtype = grad_x.shape[1], grad_x.dtype
        groups = geometry.args[6]
        flipped_weight = kernels.empty((channels, weight.shape[0] // groups) + tuple(weight.shape[2:]), dtype)
        kernels.conv2d_flipped_weight(weight, groups, flipped_weight)
        kernels.conv2d_forward(grad_out, flipped_weight, kernels.ones((channels,), dtype),
                               kernels.zeros((channels,), dtype), mask if in_epilogue else grad_x, False,
                               EPILOGUE_MASK if in_epilogue else EPILOGUE_NONE, 0.0, 0.0, grad_x, *flipped.args,
                               flipped.filter_blocks, flipped.sample_block)
    if mask is not None and not in_epilogue:  # the ReLU's backward, in place
        flat = grad_x.reshape(-1)
        kernels.relu_backward(mask.reshape(-1), flat, flat)


#: compute a stride-1 convolution's input gradient as a convolution where that is faster (see
#: input_gradient); False always multiplies into columns and scatters them back (col2im)
FLIPPED_INPUT_GRADIENT = True


#: True: every stride-1 input gradient as a convolution, also where the rule keeps col2im (to measure the rule)
FLIPPED_ALWAYS = False


def _flipped_pays(weight_shape, flipped_shape, groups, pixels):
    """Whether the input gradient as a convolution with ``flipped_shape``'s weight (onto planes
    of ``pixels``) beats col2im: for 1x1 and direct convolutions, and for a GEMM with at most
    twice as many filters as channels per group. With more, the GEMM has few rows (the
    channels) over many taps (the filters'), and col2im is about as fast or faster (an RGB layer
    with 32 filters, 64 to 256 channels at 14x14; ``python bench/conv_backward.py --flipped``
    forces the convolution: docs/performance.md)."""
    filters_per_group, channels_per_group = weight_shape[0] // groups, weight_shape[1]
    return FLIPPED_ALWAYS or tuple(weight_shape[2:]) == (1, 1) or filters_per_group <= 2 * channels_per_group \
        or cpu_kernels.conv2d_is_direct(flipped_shape, groups, (1, 1), pixels)


def _flipped_geometry(grad_out_shape, weight_shape, grad_x_shape, dtype, geometry):
    """The geometry of the input gradient as a forward convolution of the output gradient (see
    :func:`input_gradient`), or None where it is not one (a stride above 1, or more padding on
    a side than the window reaches) or where :func:`_flipped_pays` says col2im is faster."""
    stride_h, stride_w, top, left, dilation_h, dilation_w, groups = geometry.args[:7]
    if (stride_h, stride_w) != (1, 1) or not FLIPPED_INPUT_GRADIENT:
        return None
    pads = []
    for before, kernel, dilation, size, out in ((top, weight_shape[2], dilation_h, grad_x_shape[2],
                                                 grad_out_shape[2]),
                                                (left, weight_shape[3], dilation_w, grad_x_shape[3],
                                                 grad_out_shape[3])):
        reach = dilation * (kernel - 1)
        after = size - out + before  # the window's reach less the forward's padding after the image
        if before > reach or after < 0:
            return None
        pads.append((reach - before, after))
    flipped_shape = (grad_x_shape[1], weight_shape[0] // groups) + tuple(weight_shape[2:])
    if not _flipped_pays(weight_shape, flipped_shape, groups, grad_x_shape[2] * grad_x_shape[3]):
        return None
    return conv_geometry(tuple(grad_out_shape), flipped_shape, dtype, 1, tuple(pads), (dilation_h, dilation_w),
                         groups)


def _transpose_geometry(x, weight, stride, padding, output_padding, groups, dilation):
    """The geometry of :func:`conv_transpose2d`: ``(out_shape, base_shape, geometry, zeros,
    arguments)``. The output is the input-gradient of a convolution that maps ``base_shape`` back
    to ``x``'s size, followed by ``zeros`` rows and columns of zeros at the bottom and right (where
    ``output_padding`` reaches past the bottom and right padding, nothing is scattered);
    ``output_padding`` within that padding only crops less of it."""
    samples, channels, height, width = x.shape
    if weight.shape[0] != channels:
        raise ValueError(f"weight has {weight.shape[0]} input channels (its first axis) but x has C={channels} "
                         f"(conv_transpose2d's weight is (in_channels, out_channels // groups, KH, KW), got "
                         f"{tuple(weight.shape)})")
    groups = check_int("groups", groups, 1)
    stride, dilation = pair("stride", stride, 1), pair("dilation", dilation, 1)
    extra = pair("output_padding", output_padding, 0)
    if isinstance(padding, str):
        raise ValueError(f"padding of conv_transpose2d must be an integer, a pair or a pair of pairs, got {padding!r}")
    pads = resolve_padding(padding, tuple(weight.shape[2:]), stride, dilation)
    for axis, e, s, d in zip(("height", "width"), extra, stride, dilation):
        if e >= max(s, d):
            raise ValueError(f"output_padding={output_padding} must be smaller than the stride or the dilation "
                             f"along the {axis} (got {e} with stride {s}, dilation {d})")
    base_pads = tuple((before, max(after - e, 0)) for (before, after), e in zip(pads, extra))
    zeros = tuple(max(e - after, 0) for (_, after), e in zip(pads, extra))
    base_hw = tuple((size - 1) * s - before - after + d * (k - 1) + 1 for size, s, (before, after), d, k in
                    zip((height, width), stride, base_pads, dilation, weight.shape[2:]))
    out_hw = tuple(b + z for b, z in zip(base_hw, zeros))
    if min(base_hw) < 1:
        raise ValueError(f"conv_transpose2d of x {tuple(x.shape)} gives an empty output {out_hw}: less padding")
    base_shape = (samples, weight.shape[1] * groups) + base_hw
    geometry = conv_geometry(base_shape, tuple(weight.shape), x.dtype, stride, base_pads, dilation, groups)
    arguments = dict(stride=stride, padding=base_pads, dilation=dilation, groups=groups)
    return base_shape[:2] + out_hw, base_shape, geometry, zeros, arguments


def _grow(out, zeros, kernels):
    """``out`` with ``zeros`` rows and columns of zeros appended at the bottom and right."""
    for axis, count in zip((2, 3), zeros):
        if count:
            shape = list(out.shape)
            shape[axis] = count
            out = concatenate([out, kernels.zeros(tuple(shape), out.dtype)], axis=axis)
    return out


def _shrink(grad, zeros):
    """``grad`` without the rows and columns :func:`_grow` appended."""
    for axis, count in zip((2, 3), zeros):
        if count:
            grad = concatenate_backward(grad, [grad.shape[axis] - count, count], axis=axis)[0]
    return grad


@unbatched(4)
def conv_transpose2d(x: Array, weight: Array, bias: Array | None = None, stride: IntPair = 1, padding: Padding = 0,
                     output_padding: IntPair = 0, groups: int = 1, dilation: IntPair = 1) -> Array:
    """2-D transposed convolution ("deconvolution"), as ``torch.nn.functional.conv_transpose2d``:
    the gradient of :func:`conv2d` with respect to its input, used to upsample (U-Net decoders,
    text detectors' heads).

    Each input pixel spreads its values, weighted by the kernel, over a window of the output;
    overlapping windows add up.

    Parameters
    ----------
    x : (N, C_in, H, W) array (or one (C_in, H, W) sample), float32 or float64
    weight : (C_in, C_out // groups, KH, KW) array (PyTorch's layout for transposed convolutions)
    bias : (C_out,) array or None
    stride, padding, dilation, groups
        As the convolution this is the gradient of (padding: an int, a pair or a pair of pairs).
    output_padding : int or (int, int)
        Rows and columns added at the bottom and right of the output (smaller than the stride
        or the dilation), to reach sizes a strided convolution maps to the same input size.

    Returns
    -------
    (N, C_out, OH, OW) array, ``OH = (H - 1) * stride - top - bottom + dilation * (KH - 1) +
    output_padding + 1``

    See Also
    --------
    cnnlab.kernels.cpu.conv.conv2d_backward_input : the kernel that computes it (and its cuda twin).
    """
    x = as_float_array("x", x, ndim=4)
    weight = as_float_array("weight", weight, ndim=4, dtype=x.dtype)
    kernels = kernels_for(x=x, weight=weight, bias=bias)
    out_shape, base_shape, geometry, zeros, _ = _transpose_geometry(x, weight, stride, padding, output_padding,
                                                                     groups, dilation)
    out = kernels.empty(base_shape, x.dtype)
    with blas_guard(kernels):
        input_gradient(kernels, kernels.asarray(x), kernels.asarray(weight), out, geometry)
    out = _grow(out, zeros, kernels)
    if bias is not None:
        bias = bias_or_zeros(kernels, bias, out_shape[1], x.dtype)
        out = add(out, bias.reshape((out_shape[1], 1, 1)))
    return out


def conv_transpose2d_backward(x: Array, weight: Array, grad_out: Array, stride: IntPair = 1, padding: Padding = 0,
                              output_padding: IntPair = 0, groups: int = 1,
                              dilation: IntPair = 1) -> tuple[Array, Array, Array]:
    """Gradients of :func:`conv_transpose2d`: ``(grad_x, grad_weight, grad_bias)``. The input's
    gradient is the convolution of ``grad_out``; the weight's is the convolution's weight gradient
    with the roles of input and output swapped."""
    x = as_float_array("x", x, ndim=4)
    weight = as_float_array("weight", weight, ndim=4, dtype=x.dtype)
    out_shape, _, _, zeros, arguments = _transpose_geometry(x, weight, stride, padding, output_padding, groups,
                                                            dilation)
    grad_out = check_grad("grad_out", grad_out, out_shape, x.dtype)
    base = _shrink(grad_out, zeros)
    grad_x = conv2d(base, weight, **arguments)
    _, grad_weight, _ = conv2d_backward(base, weight, x, input_grad=False, **arguments)
    kernels = kernels_for(x=x, grad_out=grad_out)
    grad_bias = add_backward(grad_out, kernels.zeros((out_shape[1], 1, 1), x.dtype), grad_out)[1]
    return grad_x, grad_weight, grad_bias.reshape((out_shape[1],))
