"""Checks that several parts of cnnlab make, each written once: a leaf module (NumPy only).

The messages name the argument and the values seen, as every error of cnnlab does.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEVICES", "FLOAT_DTYPES", "check_device", "check_float_dtype", "check_image_dtype"]

DEVICES = ("cpu", "cuda")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_float_dtype(dtype: object) -> np.dtype:
    """The dtype word of layers, inputs and models: float32 or float64 (``TypeError`` otherwise).

    >>> check_float_dtype("float64")
    dtype('float64')
    """
    dtype = np.dtype(dtype)
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype}")
    return dtype


def check_device(device: object) -> str:
    """The device word of layers and models: ``'cpu'`` or ``'cuda'`` (``ValueError`` otherwise)."""
    if not isinstance(device, str) or device not in DEVICES:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return device


def check_image_dtype(name: str, dtype: object) -> None:
    """A model's input must hold float32 or float64 values: ``TypeError`` for integer images (with
    the pointer to :func:`cnnlab.data.normalize`) and for anything else that is not a float."""
    kind = np.dtype(dtype).kind
    if kind in "biu":
        raise TypeError(f"{name} has integer dtype {dtype}: scale 0-255 images with "
                        "cnnlab.data.normalize(images) first")
    if kind != "f":
        raise TypeError(f"{name} must hold float32 or float64 values, got dtype {dtype}")
