"""The one place where an op of :mod:`cnnlab.functional` meets an array it does not compute on
itself: a ``dask.array.Array``.

Each op declares, with one of the decorators below, how a dask array may be chunked for it:

- :func:`per_sample`: its output rows depend on the same input rows only, so it runs chunk by
  chunk along the batch axis;
- :func:`elementwise`: each output element depends on the same input element only, so any
  chunking runs chunk by chunk;
- :func:`sliding_window` (``"convolution"`` or ``"pooling"``): blocks across the image, each
  reading its chunk plus the halo the op's geometry needs.

A dask array is recognized by the module of its type; this module never imports Dask. The first
time one arrives, :mod:`cnnlab.dask` is imported, and it registers the function that runs each
kind (:func:`register`). NumPy and GPU arrays go straight to the op.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

KINDS = ("per_sample", "elementwise", "convolution", "pooling")

#: kind -> handler(function, kind, x, args, kwargs), filled by cnnlab.dask when it is imported
HANDLERS: dict[str, Callable[..., Any]] = {}


def is_dask_array(x: object) -> bool:
    """Whether ``x`` is a ``dask.array.Array`` (without importing Dask).

    Parameters
    ----------
    x : object

    Returns
    -------
    bool
    """
    array_module = sys.modules.get("dask.array")
    return array_module is not None and isinstance(x, array_module.Array)


def register(kind: str, handler: Callable[..., Any]) -> None:
    """Run the ops of ``kind`` on a dask array with ``handler(function, x, args, kwargs)``,
    where ``function`` is the undecorated in-memory op."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    HANDLERS[kind] = handler


def handler_for(kind: str) -> Callable[..., Any]:
    """The registered handler of ``kind``, importing :mod:`cnnlab.dask` (which registers them) the
    first time."""
    if kind not in HANDLERS:
        importlib.import_module("cnnlab.dask")
    return HANDLERS[kind]


def chunked(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare that an op of ``kind`` (one of :data:`KINDS`) also takes a dask array."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(x, *args, **kwargs):
            if is_dask_array(x):
                return handler_for(kind)(function, x, args, kwargs)
            return function(x, *args, **kwargs)

        run.chunking = kind
        return run

    return decorate


per_sample = chunked("per_sample")
per_sample.__doc__ = """Let ``function(x, ...)``, whose output rows depend only on the same input rows, also take a
dask array chunked along the batch axis: it then runs chunk by chunk
(:func:`cnnlab.dask.map_batches`) and returns a dask array."""

elementwise = chunked("elementwise")
elementwise.__doc__ = """:func:`per_sample` for an element-wise op: a dask array may be chunked any way (so it runs
between convolutions and poolings chunked across the image)."""


def sliding_window(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """:func:`per_sample` for a sliding-window op (``kind`` ``"convolution"`` or ``"pooling"``): a
    dask array may also be chunked across the image (and, for pooling, the channels). It then
    runs block by block, each block reading its chunk plus the halo the geometry needs, with
    output chunks that line up with the input chunks (:func:`cnnlab.dask.map_windows`); the
    chunks run on the GPU when the weights are there."""
    if kind not in ("convolution", "pooling"):
        raise ValueError(f"kind must be 'convolution' or 'pooling', got {kind!r}")
    return chunked(kind)
