"""Classic image filtering, scipy.signal-compatible, on cnnlab's own kernels.

:func:`correlate2d` and :func:`convolve2d` take the same arguments as
``scipy.signal.correlate2d`` / ``convolve2d`` and give the same results and
dtypes in every ``mode`` ('full', 'valid', 'same') and ``boundary`` ('fill',
'wrap', 'symm'), integers included; the sums run in cnnlab's Numba kernels,
on the CPU for NumPy input and on the GPU for GPU input.

:data:`KERNELS` holds the textbook classic 3x3 kernels, and :func:`apply` runs
one of them over a grayscale or RGB image::

    from skimage import data
    from cnnlab import filters
    edges = filters.apply(data.camera(), "edge")
"""

from __future__ import annotations

import numpy as np

from .device import is_gpu_array, kernels_for, to_device, to_host
from .dispatch import chunked
from .kernels import BOUNDARY_FILL, BOUNDARY_SYMM, BOUNDARY_WRAP
from .types import Array, DTypeLike

__all__ = ["correlate2d", "convolve2d", "apply", "KERNELS"]

_MODES = ("full", "same", "valid")
_BOUNDARIES = {
    "fill": BOUNDARY_FILL,
    "pad": BOUNDARY_FILL,
    "wrap": BOUNDARY_WRAP,
    "circular": BOUNDARY_WRAP,
    "symm": BOUNDARY_SYMM,
    "symmetric": BOUNDARY_SYMM,
}
# dtypes the kernels compute in (scipy.signal refuses bool and float16 results too)
_SUPPORTED_KINDS = "iufc"
_UNSUPPORTED = (np.dtype(np.float16), np.dtype(np.longdouble), np.dtype(np.clongdouble))


def _kernel(rows):
    kernel = np.array(rows, dtype=np.float64)
    kernel.setflags(write=False)
    return kernel


KERNELS = {
    "identity": _kernel([[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
    # the textbook high-pass filter: 4-neighbour Laplacian, weights sum to zero
    "edge": _kernel([[0, -1, 0], [-1, 4, -1], [0, -1, 0]]),
    # x-gradient (responds to vertical edges)
    "sobel_x": _kernel([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
    # y-gradient (the textbook horizontal edge detector)
    "sobel_y": _kernel([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
    "sharpen": _kernel([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
    "box_blur": _kernel(np.ones((3, 3)) / 9.0),
    "gaussian_blur": _kernel(np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 16.0),
}
"""Named 3x3 kernels (read-only float64 arrays)."""


def as_2d(name: str, a: Array) -> Array:
    if isinstance(a, (str, bytes)) or a is None:
        raise TypeError(f"{name} must be a 2-D numeric array, got {type(a).__name__}")
    if not is_gpu_array(a):
        try:
            a = np.asarray(a)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"{name} could not be read as an array: {exc}") from None
    if len(a.shape) != 2:
        raise ValueError(f"{name} must be a 2-D array, got shape {tuple(a.shape)}")
    if np.dtype(a.dtype).kind not in _SUPPORTED_KINDS + "b":
        raise TypeError(f"{name} must be numeric, got dtype {a.dtype}")
    if 0 in a.shape:
        raise ValueError(f"{name} is empty (shape {tuple(a.shape)})")
    return a


def fill_scalar(fillvalue: object, dtype: np.dtype) -> np.generic:
    """The fill value as a scalar of ``dtype``, converted, and refused, as scipy.signal does: one
    element, read as a complex number first (a string as Python's ``complex`` reads it, None as
    NaN), then cast to the output dtype if it can be without loss of its imaginary part or range.

    Raises
    ------
    ValueError
        An empty array, more than one element, a malformed string, or a value the output dtype
        cannot hold, with scipy's messages.
    TypeError
        Anything else that is not a number (scipy's message too).
    """
    cannot_cast = "could not cast `fillvalue` directly to the output type (it was first converted to complex)."
    arr = np.asarray(fillvalue)
    if arr.size == 0:
        raise ValueError("`fillvalue` cannot be an empty array.")
    if arr.size != 1:
        raise ValueError("`fillvalue` must be scalar or an array with one element.")
    item = arr.reshape(()).item()
    if item is None:
        value = complex(np.nan)
    elif isinstance(item, (str, bytes)):
        value = complex(item.decode() if isinstance(item, bytes) else item)
    elif isinstance(item, (bool, int, float, complex)):
        value = complex(item)
    else:
        raise TypeError(f"must be real number, not {type(item).__name__}")
    if dtype.kind == "c":
        return np.array(value, dtype=dtype)[()]
    if value.imag != 0:
        raise ValueError(cannot_cast)
    real = value.real
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        if not np.isfinite(real) or not info.min <= int(real) <= info.max:
            raise ValueError(cannot_cast)
        return np.array(int(real), dtype=dtype)[()]
    return np.array(real, dtype=dtype)[()]


def check_arguments(in1_dtype: DTypeLike, in2_dtype: DTypeLike, mode: str, boundary: str,
                    fillvalue: float) -> tuple[np.dtype, np.generic]:
    """Check :func:`correlate2d`'s ``mode``, ``boundary`` and ``fillvalue`` for inputs of the given
    dtypes, as scipy.signal does; return the result dtype and the fill value as a scalar of it.

    Raises
    ------
    ValueError
        An unknown ``mode`` or ``boundary``, or a ``fillvalue`` the result dtype cannot hold.
    TypeError
        A result dtype without a kernel, or a ``fillvalue`` that is not a number.
    """
    if not isinstance(mode, str) or mode not in _MODES:
        raise ValueError(f"mode must be 'full', 'same' or 'valid', got {mode!r}")
    if not isinstance(boundary, str) or boundary not in _BOUNDARIES:
        raise ValueError(
            f"boundary must be 'fill', 'wrap' (or 'circular') or 'symm' (or 'symmetric'), got {boundary!r}"
        )
    dtype = np.result_type(in1_dtype, in2_dtype)
    if dtype.kind not in _SUPPORTED_KINDS or dtype in _UNSUPPORTED:
        raise TypeError(
            f"in1 ({in1_dtype}) and in2 ({in2_dtype}) give result dtype {dtype}, which has no "
            "filter kernel (as in scipy.signal); cast the inputs, e.g. to float64"
        )
    return dtype, fill_scalar(fillvalue, dtype)


def _filter(in1, in2, mode, boundary, fillvalue, flip):
    in1 = as_2d("in1", in1)
    in2 = as_2d("in2", in2)
    kernels = kernels_for(in1=in1, in2=in2)
    dtype, fill = check_arguments(in1.dtype, in2.dtype, mode, boundary, fillvalue)

    swapped = False
    if mode == "valid":
        fits = all(a >= b for a, b in zip(in1.shape, in2.shape))
        fits_swapped = all(b >= a for a, b in zip(in1.shape, in2.shape))
        if not (fits or fits_swapped):
            raise ValueError(
                "For 'valid' mode, one must be at least as large as the other in every dimension: "
                f"in1 shape {tuple(in1.shape)}, in2 shape {tuple(in2.shape)}"
            )
        if not fits:
            in1, in2, swapped = in2, in1, True

    on_gpu = kernels.DEVICE == "cuda"
    # the small operand is prepared on the host: cast, conjugate (correlation) or flip (convolution)
    weights = to_host(in2).astype(dtype, copy=False)
    weights = np.ascontiguousarray(weights[::-1, ::-1] if flip else weights.conj())
    image = in1
    if on_gpu:
        if np.dtype(in1.dtype) != dtype:
            image = to_device(to_host(in1).astype(dtype))
        image = kernels.asarray(image)
        weights = to_device(weights)
    else:
        image = np.ascontiguousarray(in1, dtype=dtype)

    height, width = in1.shape
    kernel_h, kernel_w = in2.shape
    if mode == "full":
        out_shape = (height + kernel_h - 1, width + kernel_w - 1)
        starts = (-(kernel_h - 1), -(kernel_w - 1))
    elif mode == "same":
        out_shape = (height, width)
        if flip:
            starts = ((kernel_h - 1) // 2 - (kernel_h - 1), (kernel_w - 1) // 2 - (kernel_w - 1))
        else:
            starts = (-((kernel_h - 1) // 2), -((kernel_w - 1) // 2))
    else:
        out_shape = (height - kernel_h + 1, width - kernel_w + 1)
        starts = (0, 0)
    out = kernels.zeros(out_shape, dtype)
    kernels.correlate2d_forward(image, weights, out, fill, starts[0], starts[1], _BOUNDARIES[boundary])
    if swapped and not flip:
        result = np.ascontiguousarray(to_host(out)[::-1, ::-1])
        return to_device(result) if on_gpu else result
    return out


@chunked("correlate2d")
def correlate2d(in1: Array, in2: Array, mode: str = "full", boundary: str = "fill", fillvalue: float = 0) -> Array:
    """Cross-correlate two 2-D arrays, exactly as ``scipy.signal.correlate2d``.

    Parameters
    ----------
    in1 : (H, W) array_like or GPU array
        The image.
    in2 : (KH, KW) array_like or GPU array
        The kernel (any size, even larger than the image).
    mode : {'full', 'valid', 'same'}
        Output size: every overlap ``(H+KH-1, W+KW-1)``; only full overlaps
        ``(H-KH+1, W-KW+1)``; or the size of ``in1``, centred on 'full'.
    boundary : {'fill', 'wrap', 'symm'}
        How pixels outside ``in1`` read: ``fillvalue``, periodic, or
        mirrored with the edge repeated (aliases 'pad', 'circular',
        'symmetric').
    fillvalue : scalar
        The outside value for ``boundary='fill'``.

    Returns
    -------
    ndarray or GPU array
        dtype ``np.result_type(in1, in2)`` (integer arithmetic wraps around
        as in scipy).

    Shape
    -----
    'valid' along one axis is the textbook ``O = W - K + 1``
    (:func:`cnnlab.output_size` with padding 0, stride 1).

    See Also
    --------
    cnnlab.kernels.cpu.filter.correlate2d_forward, cnnlab.kernels.cuda.filter.correlate2d_forward :
        the CPU/GPU twins.
    scipy.signal.correlate2d : the reference semantics.

    Examples
    --------
    The textbook edge filter at the centre of a 3x3 patch:

    >>> import numpy as np
    >>> from cnnlab.filters import KERNELS, correlate2d
    >>> patch = np.array([[150, 45, 25], [250, 200, 80], [215, 250, 235]])
    >>> correlate2d(patch, KERNELS["edge"], mode="valid")
    array([[175.]])
    """
    return _filter(in1, in2, mode, boundary, fillvalue, flip=False)


@chunked("convolve2d")
def convolve2d(in1: Array, in2: Array, mode: str = "full", boundary: str = "fill", fillvalue: float = 0) -> Array:
    """Convolve two 2-D arrays (correlation with the flipped kernel), exactly as
    ``scipy.signal.convolve2d``.

    Parameters and returns as :func:`correlate2d`.

    See Also
    --------
    cnnlab.kernels.cpu.filter.correlate2d_forward, scipy.signal.convolve2d
    """
    return _filter(in1, in2, mode, boundary, fillvalue, flip=True)


@chunked("filter")
def apply(image: Array, kernel: str | Array, mode: str = "same", boundary: str = "fill", fillvalue: float = 0) -> Array:
    """Filter a grayscale (H, W) or colour (H, W, C) image, channel by channel.

    The image is computed in floating point (float32 input stays float32,
    anything else becomes float64), so that kernels with negative weights
    give signed results.

    Parameters
    ----------
    image : (H, W) or (H, W, C) array_like
        E.g. ``skimage.data.camera()`` or ``skimage.data.astronaut()``.
    kernel : str or 2-D array_like
        A name from :data:`KERNELS` or the weights themselves.
    mode, boundary, fillvalue
        As :func:`correlate2d`; 'same' keeps the image size.

    Returns
    -------
    ndarray of the image's shape ('same') or the mode's shape.

    Examples
    --------
    >>> import numpy as np
    >>> from cnnlab import filters
    >>> rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    >>> filters.apply(rgb, "box_blur").shape
    (4, 4, 3)
    """
    if isinstance(kernel, str):
        if kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {sorted(KERNELS)} or an array, got {kernel!r}")
        kernel = KERNELS[kernel]
    if isinstance(image, (str, bytes)) or image is None:
        raise TypeError(f"image must be an array, got {type(image).__name__}")
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must have shape (H, W) or (H, W, C), got {image.shape}")
    if image.dtype.kind not in "biuf":
        raise TypeError(f"image must be numeric, got dtype {image.dtype}")
    dtype = np.float32 if image.dtype == np.float32 else np.float64
    image = image.astype(dtype, copy=False)
    weights = np.asarray(kernel).astype(dtype)
    if image.ndim == 2:
        return correlate2d(image, weights, mode, boundary, fillvalue)
    channels = [correlate2d(image[:, :, c], weights, mode, boundary, fillvalue)
                for c in range(image.shape[2])]
    return np.stack(channels, axis=-1)
