"""The one place where a cnnlab op meets an array it does not compute on itself: a
``dask.array.Array``, or a symbolic tensor (:func:`symbolic`: the op adds a node to a graph).

Each op that takes a dask array declares it with :func:`chunked` and a *kind* that says how
the array may be chunked for it:

- ``"per_sample"`` (:data:`per_sample`): its output rows depend on the same input rows only, so
  it runs chunk by chunk along the batch axis;
- ``"elementwise"`` (:data:`elementwise`): each output element depends on the same input
  element only, so any chunking runs chunk by chunk;
- ``"convolution"``, ``"pooling"`` (:func:`sliding_window`): blocks across the image, each
  reading its chunk plus the halo the op's geometry needs;
- ``"correlate2d"``, ``"convolve2d"``, ``"filter"`` (:mod:`cnnlab.filters`): image filters with
  a halo as deep as the kernel's reach;
- ``"predict_proba"``, ``"predict"``, ``"evaluate"`` (:class:`cnnlab.Model`): a model over
  batch chunks.

A dask array is recognized by the module of its type; this module never imports Dask. The first
time one arrives, :mod:`cnnlab.dask` is imported, and it registers the function that runs each
kind (:func:`register`). Everything else goes straight to the op, untouched. This is the only
link from the ops below to :mod:`cnnlab.dask` above them: the import is by name, at run time.
"""

from __future__ import annotations

import functools
import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["chunked", "elementwise", "handler_for", "is_dask_array", "per_sample", "register", "sliding_window",
           "symbolic", "register_builder", "register_symbolic_type"]

#: kind -> handler(function, args, kwargs), filled by cnnlab.dask when it is imported;
#: ``function`` is the undecorated op and ``args``/``kwargs`` its arguments as given
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
    """Run the ops declared ``chunked(kind)`` on a dask array with
    ``handler(function, args, kwargs)``."""
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a string, got {type(kind).__name__}")
    HANDLERS[kind] = handler


def handler_for(kind: str) -> Callable[..., Any]:
    """The handler registered for ``kind``, importing :mod:`cnnlab.dask` (which registers them)
    the first time."""
    if kind not in HANDLERS:
        importlib.import_module("cnnlab.dask")
    if kind not in HANDLERS:
        raise TypeError(f"no function runs {kind!r} ops on dask arrays")
    return HANDLERS[kind]


def chunked(kind: str, argument: int = 0) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare that an op also takes a dask array as its positional argument ``argument`` (1
    for a method's first argument after ``self``), run by the handler of ``kind``."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(*args, **kwargs):
            if len(args) > argument and is_dask_array(args[argument]):
                return handler_for(kind)(function, args, kwargs)
            return function(*args, **kwargs)

        run.chunking = kind
        return run

    return decorate


#: an op whose output rows depend only on the same input rows (a dask array chunked along the
#: batch axis runs chunk by chunk: :func:`cnnlab.dask.map_batches`)
per_sample = chunked("per_sample")

#: an element-wise op: a dask array chunked any way runs chunk by chunk (so it runs between
#: convolutions and poolings chunked across the image)
elementwise = chunked("elementwise")


def sliding_window(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A sliding-window op (``kind`` ``"convolution"`` or ``"pooling"``): a dask array may also be
    chunked across the image (and, for pooling, the channels). It then runs block by block,
    each block reading its chunk plus the halo the geometry needs, with output chunks that line
    up with the input chunks (:func:`cnnlab.dask.map_windows`); the chunks run on the GPU when
    the weights are there."""
    if kind not in ("convolution", "pooling"):
        raise ValueError(f"kind must be 'convolution' or 'pooling', got {kind!r}")
    return chunked(kind)


# --- symbolic tensors: an op called on one builds a node (Keras 3's rule) -----------------------

#: the symbolic tensor classes (cnnlab.symbolic registers its own when it is imported)
SYMBOLIC_TYPES: tuple = ()
#: op name -> builder(*args, **kwargs) returning the output tensor of a new node (cnnlab.layers
#: registers one per op that has a layer)
BUILDERS: dict[str, Callable[..., Any]] = {}


def register_symbolic_type(cls: type) -> None:
    """Recognize instances of ``cls`` as symbolic tensors (called by :mod:`cnnlab.symbolic`)."""
    global SYMBOLIC_TYPES
    if cls not in SYMBOLIC_TYPES:
        SYMBOLIC_TYPES = SYMBOLIC_TYPES + (cls,)


def register_builder(name: str, builder: Callable[..., Any]) -> None:
    """Build a node with ``builder(*args, **kwargs)`` when op ``name`` meets a symbolic tensor."""
    BUILDERS[name] = builder


def symbolic(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare that op ``name``, called on a symbolic tensor (from :func:`cnnlab.Input` or a layer
    call) among its positional arguments, adds a node to the graph instead of computing: the
    builder its layer registered makes the node and returns its output tensor."""
    def decorate(function):
        @functools.wraps(function)
        def run(*args, **kwargs):
            if SYMBOLIC_TYPES and any(isinstance(a, SYMBOLIC_TYPES) for a in args):
                builder = BUILDERS.get(name)
                if builder is None:
                    raise TypeError(f"{name} has no layer to build a node with: call it on arrays")
                return builder(*args, **kwargs)
            return function(*args, **kwargs)
        return run
    return decorate
