"""Layers that change only how values are laid out: :class:`Flatten`, :class:`Reshape`, :class:`Transpose`,
:class:`Resize`, :class:`Identity`."""

from __future__ import annotations

import math

import numpy as np

from .. import functional as F
from ..device import is_gpu_array
from ..dispatch import register_builder
from ..functional.resize import bound_resize, resize_codes, resize_geometry
from ..functional.tensor import bound_transpose
from ..shapes import is_known, known_size
from ..symbolic import TensorSpec
from ..types import Any, Array, Sequence
from .base import Layer, prepared_reshape, reshape_array, watched_attributes


class Flatten(Layer):
    """``(N, ...) -> (N, prod(...))``: feature maps to the fully-connected layers."""

    ends_feature_extractor = True
    any_dtype = True

    def forward(self, x: Array, training: bool = False) -> Array:
        if training:
            self.saved = tuple(x.shape)
        features = math.prod(x.shape[1:])
        if is_gpu_array(x):
            return x.reshape(x.shape[0], features)
        return np.ascontiguousarray(x).reshape(x.shape[0], features)

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the reshape (:func:`prepared_reshape`)."""
        return prepared_reshape(self, x)

    def backward(self, grad_out: Array) -> Array:
        return grad_out.reshape(*self._need_saved())

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (known_size(input_shape),)  # None when an axis is known only at run time


class Identity(Layer):
    """Returns its input unchanged (a placeholder, or a skip path)."""

    passes_through = True
    any_dtype = True

    def forward(self, x: Array, training: bool = False) -> Array:
        if training:
            self.saved = True
        return x

    def backward(self, grad_out: Array) -> Array:
        self._need_saved()
        return grad_out


class Reshape(Layer):
    """Reshape each sample to ``shape`` (the batch axis is kept); one entry may be -1, inferred
    from the others.  ``Reshape((-1,))`` is :class:`Flatten`."""

    any_dtype = True

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        shape = (shape,) if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool) else shape
        if not isinstance(shape, (tuple, list)) or not shape:
            raise TypeError(f"shape must be a non-empty tuple of integers, got {shape!r}")
        if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or (s < 1 and s != -1)
               for s in shape) or list(shape).count(-1) > 1:
            raise ValueError(f"shape must hold positive integers and at most one -1, got {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Array, training: bool = False) -> Array:
        out_shape = self.output_shape(tuple(x.shape[1:]))
        if training:
            self.saved = tuple(x.shape)
        return reshape_array(x, (x.shape[0],) + out_shape)

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the reshape (:func:`prepared_reshape`)."""
        return prepared_reshape(self, x)

    def backward(self, grad_out: Array) -> Array:
        return reshape_array(grad_out, self._need_saved())

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if not is_known(input_shape):
            return tuple(None if s == -1 else s for s in self.shape)
        size = int(np.prod(input_shape, dtype=np.int64))
        known = int(np.prod([s for s in self.shape if s != -1], dtype=np.int64))
        if -1 in self.shape and size % known == 0:
            return tuple(size // known if s == -1 else s for s in self.shape)
        if size != known or -1 in self.shape:
            raise ValueError(f"Reshape cannot turn per-sample shape {tuple(input_shape)} ({size} values) "
                             f"into {self.shape}")
        return self.shape

    def config(self) -> dict:
        return dict(shape=list(self.shape))


class Transpose(Layer):
    """Permute the axes of the whole tensor: ``perm`` is a permutation of its axes, batch axis
    included (ONNX's ``Transpose``, ``torch.permute``); ``Transpose((0, 2, 3, 1))`` turns NCHW
    into NHWC (what ConvNeXt does around its LayerNorm and MLP), ``(2, 0, 3, 1, 4)`` splits
    attention's query, key and value."""

    returns_new_array = True
    whole_tensors = True

    def __init__(self, perm: Sequence[int]) -> None:
        super().__init__()
        if isinstance(perm, (str, bytes)) or not isinstance(perm, (Sequence, np.ndarray)) or len(perm) < 1:
            raise TypeError(f"perm must be a sequence of axes, got {perm!r}")
        self.perm = F.tensor.check_axes(perm, len(perm), "perm")

    def forward(self, x: Array, training: bool = False) -> Array:
        if len(x.shape) != len(self.perm):
            raise ValueError(f"Transpose{self.perm} takes arrays of {len(self.perm)} axes, got shape {tuple(x.shape)}")
        if np.dtype(x.dtype).kind != "f":
            return np.ascontiguousarray(np.transpose(x, self.perm))
        return F.transpose(x, self.perm)

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: :func:`cnnlab.functional.transpose`'s kernel call with
        its geometry worked out once (the permutation watched)."""
        if type(out) is not np.ndarray or not out.flags.c_contiguous or type(x) is not np.ndarray \
                or len(self.perm) != x.ndim or out.dtype != x.dtype or out.shape != tuple(x.shape[a] for a in self.perm):
            return None
        run = bound_transpose(x, self.perm)
        return None if run is None else (run, ((vars(self), "perm", self.perm),), ())

    def backward(self, grad_out: Array) -> Array:
        return F.transpose_backward(grad_out, self.perm)

    def output_spec(self, x: Any) -> TensorSpec:
        if x.shape is None:
            return TensorSpec(None, x.dtype)
        if len(x.shape) != len(self.perm):
            raise ValueError(f"Transpose{self.perm} takes tensors of {len(self.perm)} axes, got shape {x.shape}")
        value = None if x.value is None else np.asarray(x.value, dtype=object).transpose(self.perm)
        return TensorSpec(tuple(x.shape[a] for a in self.perm), x.dtype, value)

    def config(self) -> dict:
        return dict(perm=list(self.perm))


class Resize(Layer):
    """Resize each image's height and width (:func:`cnnlab.functional.resize`, ONNX's rules):
    to ``size``, or by ``scale`` (e.g. ``Resize(scale=2)``, the upsampling of feature pyramids and
    segmentation heads), nearest-neighbour or bilinear."""

    returns_new_array = True

    def __init__(self, size: int | tuple[int, int] | None = None, scale: float | tuple[float, float] | None = None,
                 mode: str = "nearest", coordinate_transformation_mode: str = "half_pixel",
                 nearest_mode: str = "round_prefer_floor") -> None:
        super().__init__()
        resize_codes(mode, coordinate_transformation_mode, nearest_mode)  # checks the words
        resize_geometry((1, 1) if size is not None else (1 << 20, 1 << 20), size, scale)  # and the sizes
        self.size = None if size is None else tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.scale = None if scale is None else tuple(
            float(s) for s in (scale if isinstance(scale, (tuple, list)) else (scale, scale)))
        self.options = dict(mode=mode, coordinate_transformation_mode=coordinate_transformation_mode,
                            nearest_mode=nearest_mode)

    def forward(self, x: Array, training: bool = False) -> Array:
        if training:
            self.saved = x
        return F.resize(x, self.size, self.scale, **self.options)

    def prepared_forward(self, x, out):
        """:meth:`Layer.prepared_forward`: the resize kernel call, its sampling tables made once
        (the layer's settings watched)."""
        if type(out) is not np.ndarray or not out.flags.c_contiguous or getattr(x, "dtype", None) != out.dtype:
            return None
        run = bound_resize(x, self.size, self.scale, **self.options)
        if run is None or run.shape != out.shape:
            return None
        options = self.options  # (a dict: its entries compared at each call too)
        return run, watched_attributes(self), ((options.copy, dict(options)),)

    def backward(self, grad_out: Array) -> Array:
        return F.resize_backward(self._need_saved(), grad_out, self.size, self.scale, **self.options)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if len(input_shape) != 3:
            raise ValueError(f"Resize expects (C, H, W) inputs, got {tuple(input_shape)}")
        if self.size is not None:
            return (input_shape[0],) + self.size
        return (input_shape[0],) + tuple(None if n is None else int(math.floor(n * s))
                                         for n, s in zip(input_shape[1:], self.scale))

    def config(self) -> dict:
        return dict(size=None if self.size is None else list(self.size),
                    scale=None if self.scale is None else list(self.scale), **self.options)


register_builder("transpose", lambda x, axes: Transpose(axes)(x))  # F.transpose on a symbolic tensor
