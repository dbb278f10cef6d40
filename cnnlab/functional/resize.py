"""Resizing images: :func:`resize` with ONNX's rules and :func:`interpolate` with PyTorch's, and
their backward."""

from __future__ import annotations

import math

import numpy as np

from ..device import kernels_for, to_device
from ..kernels import cpu as cpu_kernels
from ..shapes import check_int
from ..types import Any, Array
from .common import as_float_array, check_grad, unbatched
from .pool import adaptive_avg_pool2d

MODES = ("nearest", "bilinear", "linear")
COORDINATE_MODES = ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _word(name, value, words):
    if not isinstance(value, str) or value not in words:
        raise ValueError(f"{name} must be one of {sorted(words)}, got {value!r}")
    return value


def _scales(name, value):
    values = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in values):
        raise ValueError(f"{name} must be a positive number or a pair of them, got {value!r}")
    return tuple(float(v) for v in values)


def resize_geometry(in_hw: tuple[int, int], size=None, scale=None) -> tuple[tuple[int, int], tuple[float, float]]:
    """The output ``(height, width)`` and the per-axis scales the coordinates use: from ``size``
    (scales ``out / in``) or from ``scale`` (output ``floor(in * scale)``, ONNX's rule; the
    coordinates use the given scale). Exactly one of them."""
    if (size is None) == (scale is None):
        raise ValueError("give size or scale (scale_factor), one of them")
    if size is not None:
        sizes = (size, size) if not isinstance(size, (tuple, list)) else tuple(size)
        if len(sizes) != 2:
            raise ValueError(f"size must be an integer or a pair of integers, got {size!r}")
        out = tuple(check_int("size", s, 1) for s in sizes)
        return out, (out[0] / in_hw[0], out[1] / in_hw[1])
    scales = _scales("scale", scale)
    out = tuple(int(math.floor(n * s)) for n, s in zip(in_hw, scales))
    if min(out) < 1:
        raise ValueError(f"scale={scale!r} gives an empty output from an input of {in_hw}")
    return out, scales


def resize_codes(mode: str, coordinate_transformation_mode: str, nearest_mode: str) -> tuple[str, str, str]:
    """:func:`resize`'s three words, checked (``ValueError`` naming an unknown one)."""
    return (_word("mode", mode, MODES), _word("coordinate_transformation_mode", coordinate_transformation_mode,
                                              COORDINATE_MODES), _word("nearest_mode", nearest_mode, NEAREST_MODES))


def _source_coordinates(out_size, in_size, scale, transform, dtype):
    """Each output index's input coordinate along one axis, computed in ``dtype`` (as
    onnxruntime and PyTorch compute it for float32 images), clamped to the input."""
    o = np.arange(out_size, dtype=dtype)
    if transform == "align_corners":  # ONNX divides by the resized length less 1, in * scale - 1 (not floored)
        resized = dtype.type(in_size) * dtype.type(scale) - dtype.type(1)
        x = o * dtype.type(in_size - 1) / resized if resized > 0 else np.zeros_like(o)
    elif transform == "asymmetric":
        x = o / dtype.type(scale)
    else:
        x = (o + dtype.type(0.5)) / dtype.type(scale) - dtype.type(0.5)
        if transform == "pytorch_half_pixel" and out_size == 1:
            x[:] = 0
    return np.clip(x, 0, in_size - 1)


def _axis_table(out_size, in_size, scale, codes, dtype):
    """``(indices, weights)`` of one axis: the two input indices each output index reads, and the
    second one's weight (nearest-neighbour sampling: one index twice, weight 0)."""
    mode, transform, rounding = codes
    x = _source_coordinates(out_size, in_size, scale, transform, dtype)
    if mode == "nearest":
        rounded = {"floor": np.floor(x), "ceil": np.ceil(x), "round_prefer_ceil": np.floor(x + dtype.type(0.5)),
                   "round_prefer_floor": np.ceil(x - dtype.type(0.5))}[rounding]
        index = np.clip(rounded.astype(np.int64), 0, in_size - 1)
        return np.stack([index, index], axis=1), np.zeros(out_size, dtype)
    first = np.minimum(np.floor(x).astype(np.int64), in_size - 1)
    return np.stack([first, np.minimum(first + 1, in_size - 1)], axis=1), (x - first).astype(dtype)


def _tables(kernels, in_hw, out_hw, scales, codes, dtype):
    """The four sampling tables of the kernels, on their device."""
    tables = []
    for out_size, in_size, scale in zip(out_hw, in_hw, scales):
        indices, weights = _axis_table(out_size, in_size, scale, codes, np.dtype(dtype))
        tables += [indices, weights] if kernels.DEVICE == "cpu" else [to_device(indices), to_device(weights)]
    return tables


@unbatched(4)
def resize(x: Array, size: int | tuple[int, int] | None = None, scale: float | tuple[float, float] | None = None,
           mode: str = "nearest", coordinate_transformation_mode: str = "half_pixel",
           nearest_mode: str = "round_prefer_floor") -> Array:
    """Resize the height and width of images, as ONNX's ``Resize`` (``mode`` 'nearest' or
    'linear'/'bilinear').

    Output index ``o`` reads input coordinate ``half_pixel``: ``(o + 0.5) / scale - 0.5``;
    ``pytorch_half_pixel``: the same, 0 for an output of size 1; ``asymmetric``: ``o / scale``;
    ``align_corners``: ``o * (in - 1) / (out - 1)``; clamped to the input. 'nearest' rounds it by
    ``nearest_mode``; 'bilinear' mixes the four pixels around it.

    Parameters
    ----------
    x : (N, C, H, W) array (or one (C, H, W) sample), float32 or float64
    size : int or (int, int), optional
        The output's height and width.
    scale : float or (float, float), optional
        Or a factor per axis: output ``floor(in * scale)``.
    mode, coordinate_transformation_mode, nearest_mode : str

    Returns
    -------
    (N, C, OH, OW) array

    See Also
    --------
    interpolate, cnnlab.kernels.cpu.resize.resize_forward, cnnlab.kernels.cuda.resize.resize_forward
    """
    x = as_float_array("x", x, ndim=4)
    codes = resize_codes(mode, coordinate_transformation_mode, nearest_mode)
    out_hw, scales = resize_geometry(tuple(x.shape[2:]), size, scale)
    kernels = kernels_for(x=x)
    out = kernels.empty((x.shape[0], x.shape[1]) + out_hw, x.dtype)
    kernels.resize_forward(kernels.asarray(x), out, *_tables(kernels, tuple(x.shape[2:]), out_hw, scales, codes,
                                                             x.dtype))
    return out


def bound_resize(x: Array, size: int | tuple[int, int] | None, scale: float | tuple[float, float] | None,
                 mode: str, coordinate_transformation_mode: str, nearest_mode: str) -> Any:
    """For a caller that repeats :func:`resize` with these settings on host arrays of ``x``'s
    shape and dtype: ``run(x, out)`` writing it into ``out`` (C-ordered, of the output's shape)
    and returning it, the sampling tables made now (a prepared inference plan:
    :mod:`cnnlab.prepared`). The same kernel call, so the same values. None for anything but
    a C-ordered host float array of 4 axes."""
    if type(x) is not np.ndarray or x.ndim != 4 or not x.flags.c_contiguous or x.dtype not in (np.float32, np.float64):
        return None
    try:
        codes = resize_codes(mode, coordinate_transformation_mode, nearest_mode)
        out_hw, scales = resize_geometry(tuple(x.shape[2:]), size, scale)
    except (TypeError, ValueError):
        return None
    tables = _tables(cpu_kernels, tuple(x.shape[2:]), out_hw, scales, codes, x.dtype)
    shape = (x.shape[0], x.shape[1]) + tuple(out_hw)

    def run(x, out):
        cpu_kernels.resize_forward(x, out, *tables)
        return out
    run.shape = shape
    return run


def resize_backward(x: Array, grad_out: Array, size: int | tuple[int, int] | None = None,
                    scale: float | tuple[float, float] | None = None, mode: str = "nearest",
                    coordinate_transformation_mode: str = "half_pixel",
                    nearest_mode: str = "round_prefer_floor") -> Array:
    """Gradient of :func:`resize` with respect to ``x`` (only its shape is read): each output
    gradient goes back to the pixels it was read from, with the same weights."""
    x = as_float_array("x", x, ndim=4)
    codes = resize_codes(mode, coordinate_transformation_mode, nearest_mode)
    out_hw, scales = resize_geometry(tuple(x.shape[2:]), size, scale)
    kernels = kernels_for(x=x, grad_out=grad_out)
    grad_out = check_grad("grad_out", grad_out, (x.shape[0], x.shape[1]) + out_hw, x.dtype)
    grad_x = kernels.empty(tuple(x.shape), x.dtype)
    kernels.resize_backward(kernels.asarray(grad_out), grad_x, *_tables(kernels, tuple(x.shape[2:]), out_hw, scales,
                                                                       codes, x.dtype))
    return grad_x


def interpolate_arguments(mode: str = "nearest", align_corners: bool | None = None) -> dict:
    """:func:`resize`'s rules for ``torch.nn.functional.interpolate``'s ``mode`` and
    ``align_corners``: 'nearest' reads ``floor(o / scale)``; 'nearest-exact' ``floor((o + 0.5) /
    scale)``; 'bilinear' and 'linear' read with half-pixel centres (``(o + 0.5) / scale - 0.5``,
    clamped at 0, PyTorch's ``area_pixel_compute_source_index``), or corner to corner with
    ``align_corners=True``."""
    if mode in ("nearest", "nearest-exact"):
        if align_corners is not None:
            raise ValueError("align_corners applies to the linear modes ('linear', 'bilinear', 'trilinear') only")
        if mode == "nearest-exact":
            return dict(mode="nearest", coordinate_transformation_mode="half_pixel", nearest_mode="round_prefer_ceil")
        return dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    if mode not in ("bilinear", "linear"):
        raise ValueError(f"mode must be one of 'nearest', 'nearest-exact', 'linear', 'bilinear', 'trilinear', "
                         f"'area', got {mode!r}")
    corners = bool(align_corners)
    return dict(mode="bilinear", coordinate_transformation_mode="align_corners" if corners else "half_pixel")


def _interpolation_size(x, size, scale_factor, spatial):
    """PyTorch's output size (``floor(in * scale_factor)``) and the scales the coordinates use."""
    if (size is None) == (scale_factor is None):
        raise ValueError("give size or scale_factor, one of them")
    in_size = tuple(int(s) for s in x.shape[2:])
    if size is not None:
        sizes = (size,) * spatial if not isinstance(size, (tuple, list)) else tuple(size)
        if len(sizes) != spatial:
            raise ValueError(f"size must be an integer or {spatial} of them for a {spatial + 2}-D input, got {size!r}")
        out = tuple(check_int("size", s, 1) for s in sizes)
        return out, None
    scales = (scale_factor,) * spatial if not isinstance(scale_factor, (tuple, list)) else tuple(scale_factor)
    if len(scales) != spatial or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0
                                     for v in scales):
        raise ValueError(f"scale_factor must be a positive number or {spatial} of them, got {scale_factor!r}")
    out = tuple(int(math.floor(n * float(s))) for n, s in zip(in_size, scales))
    if min(out) < 1:
        raise ValueError(f"scale_factor={scale_factor!r} gives an empty output from an input of {in_size}")
    return out, tuple(float(s) for s in scales)


def _resize_2d(x, out, scales, arguments):
    """Resize the last two axes of a 4-D batch to ``out`` (coordinates by ``scales`` when given)."""
    if arguments is None:  # 'area'
        return adaptive_avg_pool2d(x, out)
    return resize(x, out, None, **arguments) if scales is None else resize(x, None, scales, **arguments)


def interpolate(x: Array, size: int | tuple[int, ...] | None = None,
                scale_factor: float | tuple[float, ...] | None = None, mode: str = "nearest",
                align_corners: bool | None = None, recompute_scale_factor: bool | None = None) -> Array:
    """``torch.nn.functional.interpolate`` of a batch: ``(N, C, L)`` (modes 'nearest',
    'nearest-exact', 'linear', 'area'), ``(N, C, H, W)`` ('nearest', 'nearest-exact', 'bilinear',
    'area') or ``(N, C, D, H, W)`` ('nearest', 'nearest-exact', 'trilinear', 'area'), on
    :func:`resize`'s kernels (see :func:`interpolate_arguments`), one pair of axes at a time
    (each mode is separable).

    The output size is ``size``, or ``floor(in * scale_factor)``; the coordinates use the given
    ``scale_factor`` unless ``recompute_scale_factor`` (then ``out / in``, as with ``size``) or
    ``align_corners=True`` (corner to corner: ``o * (in - 1) / (out - 1)``). 'area' is
    :func:`cnnlab.functional.adaptive_avg_pool2d` to the output size. 'bicubic' is refused
    (``ValueError``).
    """
    ndim = len(getattr(x, "shape", ()))
    if ndim not in (3, 4, 5):
        raise ValueError(f"x must be (N, C, L), (N, C, H, W) or (N, C, D, H, W), got shape "
                         f"{tuple(getattr(x, 'shape', ()))}")
    spatial = ndim - 2
    linear = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial]
    if mode in ("linear", "bilinear", "trilinear") and mode != linear:
        raise ValueError(f"mode={mode!r} does not take a {ndim}-D input (use {linear!r})")
    out, scales = _interpolation_size(x, size, scale_factor, spatial)
    if mode == "area":
        if align_corners is not None:
            raise ValueError("align_corners applies to the linear modes ('linear', 'bilinear', 'trilinear') only")
        arguments = None
    else:
        arguments = interpolate_arguments("bilinear" if mode == linear else mode, align_corners)
    if recompute_scale_factor or align_corners or mode == "area":
        scales = None  # the coordinates follow the sizes
    n, c = int(x.shape[0]), int(x.shape[1])
    if spatial == 1:
        wide = _resize_2d(x.reshape((n, c, 1, x.shape[2])), (1, out[0]), None if scales is None else (1.0, scales[0]),
                          arguments)
        return wide.reshape((n, c, out[0]))
    if spatial == 2:
        return _resize_2d(x, out, scales, arguments)
    depth = int(x.shape[2])
    planes = _resize_2d(x.reshape((n, c * depth) + tuple(x.shape[3:])), out[1:],
                        None if scales is None else scales[1:], arguments)
    columns = planes.reshape((n, c, depth, out[1] * out[2]))
    deep = _resize_2d(columns, (out[0], out[1] * out[2]), None if scales is None else (scales[0], 1.0), arguments)
    return deep.reshape((n, c) + out)
