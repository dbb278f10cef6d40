"""Checks that several parts of cnnlab make, each written once: a leaf module (NumPy only).

The messages name the argument and the values seen, as every error of cnnlab does.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["DEVICES", "FLOAT_DTYPES", "available_memory", "check_device", "check_float_dtype", "check_image_dtype",
           "check_memory", "format_bytes"]

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


def available_memory() -> int | None:
    """Bytes of memory a new allocation can have without swapping: Linux's ``MemAvailable``,
    else the free physical pages; None where neither is known."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def format_bytes(count: float) -> str:
    """``1536`` -> ``'1.5 KiB'``: a byte count for people."""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"  # pragma: no cover - the loop returns


def check_memory(needed: int, what: str, fix: str) -> None:
    """Refuse, before allocating, what cannot fit: ``MemoryError`` saying that ``what`` needs
    ``needed`` bytes, what is available, and ``fix``, when more than the available memory is
    asked for (the system would otherwise kill the process without a word)."""
    available = available_memory()
    if available is not None and needed > available:
        raise MemoryError(f"{what} needs {format_bytes(needed)} but {format_bytes(available)} of memory is "
                          f"available: {fix}")
