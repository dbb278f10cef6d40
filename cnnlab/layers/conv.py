"""Convolution layers: :class:`Conv2D` and :class:`ConvTranspose2D`."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..shapes import check_int, check_padding, pair, resolve_padding, window_output_shape
from ..types import Array, DTypeLike, IntPair, Padding
from .base import Layer, float_dtype, initialize, padding_config


class Conv2D(Layer):
    """2-D convolution layer: ``out_channels`` filters of ``kernel_size`` over ``in_channels``.

    Parameters
    ----------
    in_channels : int or None
        None (or left out, with the others given by keyword): found from the first input, as
        PyTorch's ``LazyConv2d`` and Keras do; the weights are made then.
    out_channels : int
    kernel_size : int or (int, int)
    stride, padding, dilation, groups
        As :func:`cnnlab.functional.conv2d`: padding takes an int, ``(ph, pw)``,
        ``((top, bottom), (left, right))``, 'valid', 'same' (stride 1), 'same_upper' and
        'same_lower' (ONNX's SAME rules, any stride).
    bias : bool
    dtype : 'float32' or 'float64'
    init : 'he' (default, for ReLU networks) or 'glorot'
    seed : int or None
        Seed of the initialization's generator.

    Shape
    -----
    ``(N, in_channels, H, W) -> (N, out_channels, OH, OW)``, ``OH = output_size(H, KH, sh, ph, dh)``.
    """

    returns_new_array = True

    def __init__(self, in_channels: int | None = None, out_channels: int | None = None,
                 kernel_size: IntPair | None = None, stride: IntPair = 1, padding: Padding = 0, dilation: IntPair = 1,
                 groups: int = 1, bias: bool = True, dtype: DTypeLike = "float32", init: str = "he",
                 seed: int | None = None) -> None:
        super().__init__()
        for label, value in (("out_channels", out_channels), ("kernel_size", kernel_size)):
            if value is None:
                raise TypeError(f"Conv2D needs {label}, e.g. Conv2D(out_channels=32, kernel_size=3)")
        self.in_channels = None if in_channels is None else check_int("in_channels", in_channels, 1)
        self.out_channels = check_int("out_channels", out_channels, 1)
        self.kernel_size = pair("kernel_size", kernel_size, 1)
        self.stride = pair("stride", stride, 1)
        self.dilation = pair("dilation", dilation, 1)
        self.padding = check_padding(padding)  # a word or ((top, bottom), (left, right))
        resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation, input_size=(1, 1))  # validates
        self.groups = check_int("groups", groups, 1)
        if init not in ("he", "glorot"):
            raise ValueError(f"init must be 'he' or 'glorot', got {init!r}")
        self.dtype = float_dtype(dtype)
        self.use_bias = bool(bias)
        self.init = init
        self.seed = seed
        self.input_grad = True  # a model switches it off where no gradient of the input is needed
        if self.in_channels is not None:
            self._make_weights()
        elif self.out_channels % self.groups:
            raise ValueError(f"groups={groups} must divide out_channels={out_channels}")

    def _make_weights(self):
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={self.groups} must divide in_channels={self.in_channels} and "
                             f"out_channels={self.out_channels}")
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        fan_out = self.out_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.make_parameter("weight", initialize(shape, fan_in, fan_out, self.init, self.dtype, self.seed,
                                                      f"Conv2D({self.in_channels}, {self.out_channels}, {self.kernel_size})"))
        if self.use_bias:
            self.make_parameter("bias", np.zeros(self.out_channels, dtype=self.dtype))

    def build(self, input_shape: tuple[int, ...]) -> None:
        if self.in_channels is None and len(input_shape) == 3 and input_shape[0] is not None:
            self.in_channels = check_int("in_channels", int(input_shape[0]), 1)
            self._make_weights()

    def geometry(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def sample_shape_hint(self) -> tuple | None:
        return None if self.in_channels is None else (self.in_channels, "H", "W")

    def forward(self, x: Array, training: bool = False, *, activation: str | None = None) -> Array:
        """The convolution of ``x``; ``activation`` (keyword-only, a name
        :func:`cnnlab.functional.conv2d` takes) is applied as the output is written: a training
        graph passes ``'relu'`` where a ``ReLU`` alone reads the output
        (:func:`cnnlab.fusion.training_fusion`). The backward is the convolution's own either way."""
        self.build(tuple(x.shape[1:]))
        x = self.prepare(x)
        out = F.conv2d(x, self.params["weight"], self.params.get("bias"), **self.geometry(), activation=activation)
        if training:
            self.saved = x
        return out

    def backward(self, grad_out: Array, *, relu_input: bool = False) -> Array:
        """The input's gradient (None without ``input_grad``); the parameters' go to
        :attr:`grads`. With ``relu_input`` (the input is a ReLU's output), the gradient with
        respect to that ReLU's input (:func:`cnnlab.functional.conv2d_backward`'s)."""
        x = self._need_saved()
        grad_x, grad_weight, grad_bias = F.conv2d_backward(
            x, self.params["weight"], grad_out, input_grad=self.input_grad, **self.geometry(), relu_input=relu_input)
        self.grads["weight"] = grad_weight
        if self.use_bias:
            self.grads["bias"] = grad_bias
        return grad_x

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.build(tuple(input_shape))
        if len(input_shape) != 3 or input_shape[0] is None or input_shape[0] != self.in_channels:
            raise ValueError(f"Conv2D expects ({self.in_channels}, H, W) inputs, got {tuple(input_shape)}")
        pads = resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation, input_shape[1:])
        return (self.out_channels, *window_output_shape(input_shape[1], input_shape[2], self.kernel_size,
                                                        self.stride, pads, self.dilation))

    def config(self) -> dict:
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,  # None until built
                    kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=padding_config(self.padding),
                    dilation=list(self.dilation), groups=self.groups, bias=self.use_bias,
                    dtype=self.dtype.name, init=self.init)


class ConvTranspose2D(Layer):
    """Transposed convolution layer (:func:`cnnlab.functional.conv_transpose2d`), as
    ``torch.nn.ConvTranspose2d``: upsamples by ``stride``; ``weight`` is ``(in_channels,
    out_channels // groups, KH, KW)``.

    Shape
    -----
    ``(N, in_channels, H, W) -> (N, out_channels, OH, OW)``, ``OH = (H - 1) * stride - top - bottom +
    dilation * (KH - 1) + output_padding + 1``.
    """

    returns_new_array = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: Padding = 0, output_padding: IntPair = 0, groups: int = 1, bias: bool = True,
                 dilation: IntPair = 1, dtype: DTypeLike = "float32", init: str = "he",
                 seed: int | None = None) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.out_channels = check_int("out_channels", out_channels, 1)
        self.kernel_size = pair("kernel_size", kernel_size, 1)
        self.stride, self.dilation = pair("stride", stride, 1), pair("dilation", dilation, 1)
        self.output_padding = pair("output_padding", output_padding, 0)
        self.padding = check_padding(padding)
        if isinstance(self.padding, str):
            raise ValueError(f"padding of ConvTranspose2D must be an integer, a pair or a pair of pairs, got {padding!r}")
        self.groups = check_int("groups", groups, 1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}")
        self.dtype, self.use_bias, self.init = float_dtype(dtype), bool(bias), init
        fan_in = self.out_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        shape = (self.in_channels, self.out_channels // self.groups) + self.kernel_size
        self.make_parameter("weight", initialize(shape, fan_in, self.in_channels * self.kernel_size[0]
                                                 * self.kernel_size[1], init, self.dtype, seed,
                                                 f"ConvTranspose2D({in_channels}, {out_channels}, {self.kernel_size})"))
        if self.use_bias:
            self.make_parameter("bias", np.zeros(self.out_channels, dtype=self.dtype))

    def geometry(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, output_padding=self.output_padding,
                    groups=self.groups, dilation=self.dilation)

    def forward(self, x: Array, training: bool = False) -> Array:
        x = self.prepare(x)
        if training:
            self.saved = x
        return F.conv_transpose2d(x, self.params["weight"], self.params.get("bias"), **self.geometry())

    def backward(self, grad_out: Array) -> Array:
        grad_x, grad_weight, grad_bias = F.conv_transpose2d_backward(self._need_saved(), self.params["weight"],
                                                                     grad_out, **self.geometry())
        self.grads["weight"] = grad_weight
        if self.use_bias:
            self.grads["bias"] = grad_bias
        return grad_x

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ValueError(f"ConvTranspose2D expects ({self.in_channels}, H, W) inputs, got {tuple(input_shape)}")
        pads = resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation)
        sizes = tuple(None if size is None else (size - 1) * s - before - after + d * (k - 1) + e + 1
                      for size, s, (before, after), d, k, e in zip(input_shape[1:], self.stride, pads, self.dilation,
                                                                   self.kernel_size, self.output_padding))
        if any(size is not None and size < 1 for size in sizes):
            raise ValueError(f"ConvTranspose2D of samples {tuple(input_shape)} gives an empty output {sizes}")
        return (self.out_channels,) + sizes

    def config(self) -> dict:
        return dict(in_channels=self.in_channels, out_channels=self.out_channels, kernel_size=list(self.kernel_size),
                    stride=list(self.stride), padding=padding_config(self.padding),
                    output_padding=list(self.output_padding), groups=self.groups, bias=self.use_bias,
                    dilation=list(self.dilation), dtype=self.dtype.name, init=self.init)
