"""Pooling layers: max, average, min, median and L2-norm windows, and global pooling."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..functional.pool import bound_pool2d
from ..kernels import cpu as cpu_kernels
from ..shapes import PADDING_WORDS, resolve_padding, window_output_shape
from ..types import Array, IntPair, Padding
from .base import Layer, padding_config, reshape_array


class _Pool2D(Layer):
    """Pooling layer; the arguments are :func:`cnnlab.functional.pool2d`'s."""

    returns_new_array = True

    mode = None

    def __init__(self, kernel_size: IntPair, stride: IntPair | None = None, padding: Padding = 0,
                 dilation: IntPair = 1, ceil_mode: bool = False, count_include_pad: bool = True) -> None:
        super().__init__()
        # a padding word ('same_upper', 'same_lower': ONNX's auto_pad) is resolved for each input size
        word = padding.lower() if isinstance(padding, str) else None
        if word is not None and word not in PADDING_WORDS:
            raise ValueError(f"padding must be an integer, a pair, a pair of pairs or one of {PADDING_WORDS}, "
                             f"got {padding!r}")
        options = F.pool_arguments(kernel_size, stride, 0 if word else padding, self.mode, dilation, ceil_mode,
                                   count_include_pad)
        self.kernel_size, self.stride = options["kernel_size"], options["stride"]
        self.padding = word or options["padding"]
        self.dilation, self.ceil_mode = options["dilation"], options["ceil_mode"]
        self.count_include_pad = options["count_include_pad"]

    def _padding_for(self, height, width):
        if not isinstance(self.padding, str):
            return self.padding
        return resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation, (height, width))

    def _arguments(self, shape):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self._padding_for(*shape[-2:]),
                    mode=self.mode, dilation=self.dilation, ceil_mode=self.ceil_mode,
                    count_include_pad=self.count_include_pad)

    def forward(self, x: Array, training: bool = False, *, positive_only: bool = False) -> Array:
        """Pool ``x``. In training max and min pooling save where each value came from; with
        ``positive_only`` (max pooling in training, ``x`` the output of a ReLU) only the
        positive picks, so that :meth:`backward` gives the gradient with respect to the ReLU's
        input (:func:`cnnlab.functional.pool2d`'s ``positive_only``)."""
        arguments = self._arguments(tuple(x.shape))
        if positive_only and not (training and self.mode == "max"):
            raise ValueError(f"positive_only=True applies to max pooling in training, got mode={self.mode!r} "
                             f"and training={training!r}")
        if training and self.mode in ("max", "min"):
            # save where each value came from (and the input's shape), not x and out: the
            # backward is then a scatter instead of a second search of every window
            out, indices = F.pool2d(x, **arguments, return_indices=True, positive_only=positive_only)
            self.saved = (tuple(x.shape), None, indices)
            return out
        out = F.pool2d(x, **arguments)
        if training:
            self.saved = (x, out, None)
        return out

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: :func:`cnnlab.functional.pool2d`'s kernel call with its
        arguments checked once (the pooling's arguments watched)."""
        if type(x) is not np.ndarray or x.ndim != 4 or type(out) is not np.ndarray or out.dtype != x.dtype \
                or not out.flags.c_contiguous:
            return None
        bound = bound_pool2d(x, **self._arguments(tuple(x.shape)))
        if bound is None or bound[0] != out.shape:
            return None
        names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "count_include_pad")
        return bound[1], tuple((vars(self), name, getattr(self, name)) for name in names), ((lambda: self.mode, self.mode),)

    def backward(self, grad_out: Array) -> Array:
        x, out, indices = self._need_saved()
        shape = x if isinstance(x, tuple) else tuple(x.shape)
        return F.pool2d_backward(x, out, grad_out, **self._arguments(shape), indices=indices)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} expects (C, H, W) inputs, got {tuple(input_shape)}")
        height, width = input_shape[1:]
        if isinstance(self.padding, str) and (height is None or width is None):
            return (input_shape[0], None, None)
        return (input_shape[0], *window_output_shape(height, width, self.kernel_size, self.stride,
                                                     self._padding_for(height, width), self.dilation,
                                                     self.ceil_mode))

    def config(self) -> dict:
        return dict(kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=padding_config(self.padding), dilation=list(self.dilation),
                    ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)


class MaxPool2D(_Pool2D):
    """Max pooling; ``stride`` defaults to ``kernel_size``; ``dilation``, ``ceil_mode`` and
    4-sided ``padding`` as :func:`cnnlab.functional.pool2d`.  Gradient routed to the maximum: a
    training forward saves each window's choice (``return_indices``), the backward scatters through it."""

    mode = "max"


class AvgPool2D(_Pool2D):
    """Average pooling; padded zeros count in the mean unless ``count_include_pad=False``
    (PyTorch's default is True, ONNX AveragePool's False); gradient spread evenly over the window."""

    mode = "avg"


class MinPool2D(_Pool2D):
    """Min pooling; gradient routed to the minimum (through the indices a training forward saves)."""

    mode = "min"


class MedianPool2D(_Pool2D):
    """Median pooling (lower middle value of even windows); gradient routed to the median."""

    mode = "median"


class LPPool2D(_Pool2D):
    """L2-norm pooling ``sqrt(sum(v**2))`` of each window."""

    mode = "lp"


class _GlobalPool2D(Layer):
    returns_new_array = True
    forward_op = backward_op = None
    forward_kernel = None  # (the CPU kernel forward_op runs, its prepared form's)

    def __init__(self, keepdims: bool = False) -> None:
        super().__init__()
        if not isinstance(keepdims, (bool, np.bool_)):
            raise TypeError(f"keepdims must be True or False, got {keepdims!r}")
        self.keepdims = bool(keepdims)

    def forward(self, x: Array, training: bool = False) -> Array:
        out = type(self).forward_op(x)
        if training:
            self.saved = x
        return reshape_array(out, tuple(out.shape) + (1, 1)) if self.keepdims else out

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the global pooling kernel into the plan's array, seen
        as ``(N, C)`` (the layer's ``keepdims`` watched)."""
        if type(x) is not np.ndarray or x.ndim != 4 or not x.flags.c_contiguous or x.dtype not in (np.float32, np.float64) \
                or type(out) is not np.ndarray or not out.flags.c_contiguous or out.dtype != x.dtype \
                or out.shape != tuple(x.shape[:2]) + ((1, 1) if self.keepdims else ()):
            return None
        name, pairs = type(self).forward_kernel, tuple(x.shape[:2])

        def run(x, out):
            getattr(cpu_kernels, name)(x, out.reshape(pairs))
            return out
        return run, ((vars(self), "keepdims", self.keepdims),), ()

    def backward(self, grad_out: Array) -> Array:
        x = self._need_saved()
        if self.keepdims:
            if tuple(grad_out.shape) != tuple(x.shape[:2]) + (1, 1):
                raise ValueError(f"grad_out must have shape {tuple(x.shape[:2]) + (1, 1)} (the forward "
                                 f"output), got {tuple(grad_out.shape)}")
            grad_out = reshape_array(grad_out, x.shape[:2])
        return type(self).backward_op(x, grad_out)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} expects (C, H, W) inputs, got {tuple(input_shape)}")
        return (input_shape[0], 1, 1) if self.keepdims else (input_shape[0],)

    def config(self) -> dict:
        return dict(keepdims=self.keepdims)


class GlobalAvgPool2D(_GlobalPool2D):
    """Mean of each channel: ``(N, C, H, W) -> (N, C)``, or ``(N, C, 1, 1)`` with
    ``keepdims=True`` (what a squeeze-excitation gate multiplies by)."""

    ends_feature_extractor = True

    forward_op = staticmethod(F.global_avg_pool2d)
    forward_kernel = "global_avg_pool2d_forward"
    backward_op = staticmethod(F.global_avg_pool2d_backward)


class GlobalMaxPool2D(_GlobalPool2D):
    """Maximum of each channel: ``(N, C, H, W) -> (N, C)``, or ``(N, C, 1, 1)`` with
    ``keepdims=True``; the gradient goes to each plane's first maximum."""

    forward_op = staticmethod(F.global_max_pool2d)
    forward_kernel = "global_max_pool2d_forward"
    backward_op = staticmethod(F.global_max_pool2d_backward)
