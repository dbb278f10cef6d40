"""Normalization layers: :class:`BatchNorm2D`, :class:`GroupNorm` and :class:`LayerNorm`."""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..device import is_gpu_array, to_device
from ..functional.normalization import bound_batch_norm2d, bound_layer_norm
from ..shapes import check_int
from ..types import Array, DTypeLike, Sequence
from .base import Layer, float_dtype, same_kind_out


class BatchNorm2D(Layer):
    """Batch normalization per channel with learned scale (``weight``) and shift (``bias``).

    Training normalizes with the batch's statistics and updates the running ones
    (``running = (1 - momentum) * running + momentum * batch``, with the unbiased batch
    variance, as PyTorch); evaluation uses the running statistics.

    A frozen layer (``trainable = False``, e.g. after ``Model.freeze``) runs in inference mode
    in training too (Keras's rule): it normalizes with the running statistics and leaves them
    unchanged, and its backward pass is that of the fixed per-channel affine map,
    ``grad_x = grad_out * weight / sqrt(running_var + eps)``. (PyTorch keeps using and updating
    the batch statistics of a module whose parameters are frozen until it is put in eval mode.)
    """

    returns_new_array = True

    def __init__(self, num_features: int, eps: float = 1e-05, momentum: float = 0.1,
                 dtype: DTypeLike = "float32") -> None:
        super().__init__()
        self.num_features = check_int("num_features", num_features, 1)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.dtype = float_dtype(dtype)
        self.params["weight"] = np.ones(self.num_features, dtype=self.dtype)
        self.params["bias"] = np.zeros(self.num_features, dtype=self.dtype)
        self.buffers["running_mean"] = np.zeros(self.num_features, dtype=self.dtype)
        self.buffers["running_var"] = np.ones(self.num_features, dtype=self.dtype)

    def forward(self, x: Array, training: bool = False) -> Array:
        x = self.prepare(x)
        if not training or not self.trainable:
            out, _, _ = F.batch_norm2d(x, self.params["weight"], self.params["bias"], self.eps,
                                       self.buffers["running_mean"], self.buffers["running_var"])
            if training:  # frozen: the backward pass of the fixed affine map needs nothing of x
                self.saved = None, None, None
            return out
        out, mean, variance = F.batch_norm2d(x, self.params["weight"], self.params["bias"], self.eps)
        count = x.shape[0] * x.shape[2] * x.shape[3]
        F.running_average(self.buffers["running_mean"], mean, self.momentum)
        F.running_average(self.buffers["running_var"], variance, self.momentum, count / max(count - 1, 1))
        self.saved = x, mean, variance
        return out

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward` (inference, by the running statistics):
        :func:`cnnlab.functional.batch_norm2d`'s kernel call with its checks made once (the
        parameters and statistics read at each call, their arrays and ``eps`` watched)."""
        if not same_kind_out(x, out):
            return None
        arrays = (self.params["weight"], self.params["bias"], self.buffers["running_mean"], self.buffers["running_var"])
        run = bound_batch_norm2d(x, arrays[0], arrays[1], self.eps, arrays[2], arrays[3])
        watched = ((self.params, "weight", arrays[0]), (self.params, "bias", arrays[1]),
                   (self.buffers, "running_mean", arrays[2]), (self.buffers, "running_var", arrays[3]),
                   (vars(self), "eps", self.eps))
        return None if run is None else (run, watched, ())

    def backward(self, grad_out: Array) -> Array:
        x, mean, variance = self._need_saved()
        if x is None:  # frozen, inference mode: grad_x = grad_out * weight / sqrt(running_var + eps)
            return self._frozen_backward(grad_out)
        grad_x, grad_gamma, grad_beta = F.batch_norm2d_backward(x, grad_out, mean, variance,
                                                                self.params["weight"], self.eps)
        self.grads["weight"] = grad_gamma
        self.grads["bias"] = grad_beta
        return grad_x

    def _frozen_backward(self, grad_out):
        """The gradient of the inference-mode map with respect to its input: batch
        normalization of ``grad_out`` with a zero mean, the running variance and no shift."""
        running_var = self.buffers["running_var"]
        zeros = np.zeros(self.num_features, dtype=self.dtype)
        if is_gpu_array(running_var):
            zeros = to_device(zeros)
        grad_x, _, _ = F.batch_norm2d(grad_out, self.params["weight"], zeros, self.eps, zeros, running_var)
        return grad_x

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3 or input_shape[0] != self.num_features:
            raise ValueError(f"BatchNorm2D expects ({self.num_features}, H, W) inputs, got {tuple(input_shape)}")
        return tuple(input_shape)

    def config(self) -> dict:
        return dict(num_features=self.num_features, eps=self.eps, momentum=self.momentum, dtype=self.dtype.name)


class GroupNorm(Layer):
    """Group normalization (:func:`cnnlab.functional.group_norm`): each sample's channels in
    ``num_groups`` groups normalized by the group's own statistics, then a learned per-channel
    scale (``weight``, 1 to start) and shift (``bias``, 0), as ``torch.nn.GroupNorm``. It does not
    depend on the batch, so training and evaluation compute the same thing.
    """

    returns_new_array = True

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-05, affine: bool = True,
                 dtype: DTypeLike = "float32") -> None:
        super().__init__()
        self.num_groups = check_int("num_groups", num_groups, 1)
        self.num_channels = check_int("num_channels", num_channels, 1)
        if self.num_channels % self.num_groups:
            raise ValueError(f"num_groups={self.num_groups} must divide num_channels={self.num_channels}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.affine = bool(affine)
        self.dtype = float_dtype(dtype)
        if self.affine:
            self.params["weight"] = np.ones(self.num_channels, dtype=self.dtype)
            self.params["bias"] = np.zeros(self.num_channels, dtype=self.dtype)

    def forward(self, x: Array, training: bool = False) -> Array:
        x = self.prepare(x)
        out, mean, rstd = F.group_norm(x, self.num_groups, self.params.get("weight"), self.params.get("bias"),
                                       self.eps, return_statistics=True)
        if training:
            self.saved = x, mean, rstd
        return out

    def backward(self, grad_out: Array) -> Array:
        x, mean, rstd = self._need_saved()
        grad_x, grad_weight, grad_bias = F.group_norm_backward(x, grad_out, self.num_groups, self.params.get("weight"),
                                                               mean, rstd)
        if self.affine:
            self.grads["weight"] = grad_weight
            self.grads["bias"] = grad_bias
        return grad_x

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) < 1 or input_shape[0] != self.num_channels:
            raise ValueError(f"GroupNorm expects ({self.num_channels}, ...) inputs, got {tuple(input_shape)}")
        return tuple(input_shape)

    def config(self) -> dict:
        return dict(num_groups=self.num_groups, num_channels=self.num_channels, eps=self.eps, affine=self.affine,
                    dtype=self.dtype.name)


class InstanceNorm(GroupNorm):
    """Instance normalization (``torch.nn.InstanceNorm2d`` with ``track_running_stats=False``):
    each sample's channels normalized by their own mean and variance over the positions, then
    (with ``affine``, PyTorch's default False) a learned per-channel scale and shift. A
    :class:`GroupNorm` of one channel per group."""

    def __init__(self, num_features: int, eps: float = 1e-05, affine: bool = False,
                 dtype: DTypeLike = "float32") -> None:
        super().__init__(num_features, num_features, eps=eps, affine=affine, dtype=dtype)

    def config(self) -> dict:
        return dict(num_features=self.num_channels, eps=self.eps, affine=self.affine, dtype=self.dtype.name)


class LayerNorm(Layer):
    """Layer normalization (:func:`cnnlab.functional.layer_norm`) over the last axes
    ``normalized_shape`` of each sample, with a learned scale (``weight``, 1 to start) and shift
    (``bias``, 0) of that shape, as ``torch.nn.LayerNorm``. ConvNeXt normalizes its channels this
    way after moving them last (:class:`cnnlab.layers.Transpose`)."""

    returns_new_array = True

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, dtype: DTypeLike = "float32") -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
        self.normalized_shape = tuple(check_int("normalized_shape", s, 1) for s in shape)
        if not self.normalized_shape:
            raise ValueError("normalized_shape must name at least one axis")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.elementwise_affine, self.use_bias = bool(elementwise_affine), bool(bias)
        self.dtype = float_dtype(dtype)
        if self.elementwise_affine:
            self.params["weight"] = np.ones(self.normalized_shape, dtype=self.dtype)
            if self.use_bias:
                self.params["bias"] = np.zeros(self.normalized_shape, dtype=self.dtype)

    def forward(self, x: Array, training: bool = False) -> Array:
        x = self.prepare(x)
        out, mean, rstd = F.layer_norm(x, self.normalized_shape, self.params.get("weight"), self.params.get("bias"),
                                       self.eps, return_statistics=True)
        if training:
            self.saved = x, mean, rstd
        return out

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: :func:`cnnlab.functional.layer_norm`'s kernel call
        with its checks made once (the parameters read at each call, their arrays and the
        layer's settings watched)."""
        if not same_kind_out(x, out):
            return None
        weight, bias = self.params.get("weight"), self.params.get("bias")
        run = bound_layer_norm(x, self.normalized_shape, weight, bias, self.eps)
        watched = ((self.params, "weight", weight), (self.params, "bias", bias),
                   (vars(self), "normalized_shape", self.normalized_shape), (vars(self), "eps", self.eps))
        return None if run is None else (run, watched, ())

    def backward(self, grad_out: Array) -> Array:
        x, mean, rstd = self._need_saved()
        grad_x, grad_weight, grad_bias = F.layer_norm_backward(x, grad_out, self.normalized_shape,
                                                               self.params.get("weight"), mean, rstd, self.eps)
        if "weight" in self.params:
            self.grads["weight"] = grad_weight
        if "bias" in self.params:
            self.grads["bias"] = grad_bias
        return grad_x

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        rank = len(self.normalized_shape)
        if len(input_shape) < rank or tuple(input_shape[len(input_shape) - rank:]) != self.normalized_shape:
            raise ValueError(f"LayerNorm{self.normalized_shape} expects samples ending in {self.normalized_shape}, "
                             f"got {tuple(input_shape)}")
        return tuple(input_shape)

    def config(self) -> dict:
        return dict(normalized_shape=list(self.normalized_shape), eps=self.eps,
                    elementwise_affine=self.elementwise_affine, bias=self.use_bias, dtype=self.dtype.name)
