"""Fully-connected layer: :class:`Dense`."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..shapes import check_int
from ..types import Array, DTypeLike
from .base import Layer, float_dtype, initialize


class Dense(Layer):
    """Fully-connected layer: ``x @ weight.T + bias`` with ``weight`` of shape (out, in).

    Shape
    -----
    ``(N, in_features) -> (N, out_features)``.
    """

    replaceable_head = True

    returns_new_array = True

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: DTypeLike = "float32",
                 init: str = "he", seed: int | None = None) -> None:
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        self.dtype = float_dtype(dtype)
        self.use_bias = bool(bias)
        self.init = init
        self.params["weight"] = initialize((self.out_features, self.in_features), self.in_features,
                                            self.out_features, init, self.dtype, seed)
        if self.use_bias:
            self.params["bias"] = np.zeros(self.out_features, dtype=self.dtype)

    def forward(self, x: Array, training: bool = False) -> Array:
        x = self.prepare(x)
        out = F.linear(x, self.params["weight"], self.params.get("bias"))
        if training:
            self.saved = x
        return out

    def backward(self, grad_out: Array) -> Array:
        x = self._need_saved()
        grad_x, grad_weight, grad_bias = F.linear_backward(x, self.params["weight"], grad_out)
        self.grads["weight"] = grad_weight
        if self.use_bias:
            self.grads["bias"] = grad_bias
        return grad_x

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(f"Dense expects ({self.in_features},) inputs, got {tuple(input_shape)}"
                             " (put a Flatten layer before it for images)")
        return (self.out_features,)

    def config(self) -> dict:
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.use_bias,
                    dtype=self.dtype.name, init=self.init)
