"""Fully-connected layer: :class:`Dense`."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..functional.linear import bound_linear
from ..shapes import check_int
from ..types import Array, DTypeLike
from .base import Layer, float_dtype, initialize


class Dense(Layer):
    """Fully-connected layer: ``x @ weight.T + bias`` with ``weight`` of shape (out, in).

    ``in_features`` may be None (or left out, with ``out_features`` or Keras's ``units`` given by
    keyword): it is found from the first input and the weights are made then, as PyTorch's
    ``LazyLinear`` and Keras's ``Dense(units)`` do.

    Shape
    -----
    ``(N, in_features) -> (N, out_features)``; more axes are kept: ``(N, ..., in_features) -> (N, ...,
    out_features)`` (the last axis is the features', as ``torch.nn.Linear``).
    """

    replaceable_head = True

    returns_new_array = True

    def __init__(self, in_features: int | None = None, out_features: int | None = None, bias: bool = True,
                 dtype: DTypeLike = "float32", init: str = "he", seed: int | None = None, *,
                 units: int | None = None) -> None:
        super().__init__()
        if units is not None:
            if out_features is not None:
                raise TypeError("give out_features or units (Keras's name for it), not both")
            out_features = units
        if out_features is None:
            raise TypeError("Dense needs out_features (or units), e.g. Dense(out_features=10)")
        self.in_features = None if in_features is None else check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        if init not in ("he", "glorot"):
            raise ValueError(f"init must be 'he' or 'glorot', got {init!r}")
        self.dtype = float_dtype(dtype)
        self.use_bias = bool(bias)
        self.init = init
        self.seed = seed
        if self.in_features is not None:
            self._make_weights()

    def _make_weights(self):
        self.make_parameter("weight", initialize((self.out_features, self.in_features), self.in_features,
                                                 self.out_features, self.init, self.dtype, self.seed,
                                                 f"Dense({self.in_features}, {self.out_features})"))
        if self.use_bias:
            self.make_parameter("bias", np.zeros(self.out_features, dtype=self.dtype))

    def build(self, input_shape: tuple[int, ...]) -> None:
        if self.in_features is None and len(input_shape) >= 1 and input_shape[-1] is not None:
            self.in_features = check_int("in_features", int(input_shape[-1]), 1)
            self._make_weights()

    def forward(self, x: Array, training: bool = False) -> Array:
        self.build(tuple(x.shape[1:]))
        x = self.prepare(x)
        out = F.linear(x, self.params["weight"], self.params.get("bias"))
        if training:
            self.saved = x
        return out

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: :func:`cnnlab.functional.linear`'s kernel call with
        its checks made once, reading this layer's weight and bias arrays (watched)."""
        weight, bias = self.params.get("weight"), self.params.get("bias")
        if type(x) is not np.ndarray or x.dtype != self.dtype or type(out) is not np.ndarray \
                or not out.flags.c_contiguous or out.shape != x.shape[:-1] + (self.out_features,) \
                or out.dtype != self.dtype:
            return None
        run = bound_linear(x, weight, bias)
        if run is None:
            return None
        return run, ((self.params, "weight", weight), (self.params, "bias", bias)), ()

    def backward(self, grad_out: Array) -> Array:
        x = self._need_saved()
        grad_x, grad_weight, grad_bias = F.linear_backward(x, self.params["weight"], grad_out)
        self.grads["weight"] = grad_weight
        if self.use_bias:
            self.grads["bias"] = grad_bias
        return grad_x

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        self.build(tuple(input_shape))
        if len(input_shape) >= 1 and input_shape[-1] is None:
            raise ValueError(f"Dense needs a known input size, got {tuple(input_shape)} (the size depends on the "
                             "image size: put a global pooling layer, e.g. GlobalAvgPool2D, before it)")
        if len(input_shape) == 0 or input_shape[-1] != self.in_features:
            raise ValueError(f"Dense expects ({self.in_features},) inputs, got {tuple(input_shape)}"
                             " (put a Flatten layer before it for images)")
        return tuple(input_shape[:-1]) + (self.out_features,)  # leading axes kept, as torch.nn.Linear

    def config(self) -> dict:
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.use_bias,
                    dtype=self.dtype.name, init=self.init)
