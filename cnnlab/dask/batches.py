"""A function of an in-memory batch over a dask array chunked along the batch axis."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..dispatch import is_dask_array
from ..types import Any, Array, DaskArray, DTypeLike, Sequence
from .base import check_batch_chunks, dask_modules, on_device, resolve_device, to_host_values


def batch_blocks(function, x, args, kwargs, sample_shape, dtype, token, name="x", device="cpu"):
    dask, da = dask_modules()
    check_batch_chunks(x, name)
    sample_shape = tuple(int(s) for s in sample_shape)
    chunks = (x.chunks[0],) + tuple((s,) for s in sample_shape)
    new_axis = drop_axis = None
    extra = len(sample_shape) - (x.ndim - 1)
    if extra < 0:
        drop_axis = list(range(x.ndim + extra, x.ndim))
    elif extra > 0:
        new_axis = list(range(x.ndim, x.ndim + extra))
    # function and arguments go into the graph once, as one key each chunk task refers to
    packed = dask.delayed((function, tuple(args), dict(kwargs), device), traverse=False)
    return da.map_blocks(
        run_packed, x, packed, chunks=chunks, dtype=dtype, drop_axis=drop_axis, new_axis=new_axis,
        meta=np.empty((0,) * len(chunks), dtype), token=token,
    )


def run_packed(block, packed):
    function, args, kwargs, device = packed
    return on_device(function, block, args, kwargs, device)


def map_batches(function: Callable[..., Array], x: DaskArray, *args: Any, sample_shape: Sequence[int] | None = None,
                dtype: DTypeLike = None, device: str | None = None, **kwargs: Any) -> DaskArray:
    """Run ``function(batch, *args, **kwargs)`` on each chunk of a dask array of samples.

    ``x`` must be chunked along its first (batch) axis only; each chunk is one in-memory
    batch and ``function`` must return one result row per sample. ``function``, ``args`` and
    ``kwargs`` are placed in the task graph once (a single key, shipped once to each worker of
    a distributed cluster), not copied into every task.

    Parameters
    ----------
    function : callable
        Takes an in-memory batch ``(n, ...)`` and returns an array ``(n, *sample_shape)``.
    x : dask.array.Array
        ``(N, ...)``, chunked along axis 0 only.
    *args, **kwargs
        Passed to ``function`` after the batch.
    sample_shape : tuple of int, optional
        The shape of one result row. When it or ``dtype`` is not given, ``function`` is run
        once on a batch of one zero sample to find them (``x`` itself is not computed).
    dtype : dtype, optional
        The result's dtype.
    device : {None, 'cpu', 'cuda'}
        Where ``function`` runs. 'cuda': inside each chunk's task the chunk and every NumPy
        array among ``args`` and ``kwargs`` are copied to the GPU, ``function`` runs on them
        there and its result is copied back, so the result's chunks are NumPy arrays. None:
        'cuda' when one of ``args`` or ``kwargs`` is a GPU array (weights on the device mean
        chunks go to the device), else 'cpu'. GPU arrays among the arguments are kept in the
        graph as host copies (a graph can then be sent to a cluster).

    Returns
    -------
    dask.array.Array
        ``(N, *sample_shape)``, with ``x``'s chunks along the batch axis.

    Raises
    ------
    ValueError
        If ``x`` is chunked along another axis (rechunk it) or has fewer than one axis; for an
        unknown ``device``.
    TypeError
        If ``x`` is not a dask array or ``function`` is not callable.
    RuntimeError
        For ``device='cuda'`` where there is no GPU (nor the CUDA simulator).

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from cnnlab.dask import map_batches
    >>> x = da.ones((10, 3), chunks=(4, 3))
    >>> map_batches(lambda b: b.sum(axis=1), x).compute()
    array([3., 3., 3., 3., 3., 3., 3., 3., 3., 3.])
    """
    dask_modules()
    if not is_dask_array(x):
        raise TypeError(f"x must be a dask array, got {type(x).__name__}")
    if not callable(function):
        raise TypeError(f"function must be callable, got {type(function).__name__}")
    if x.ndim < 1:
        raise ValueError(f"x must have a batch axis, got shape {x.shape}")
    check_batch_chunks(x, "x")
    device = resolve_device(device, *args, *kwargs.values())
    args = to_host_values(tuple(args))
    kwargs = dict(zip(kwargs, to_host_values(tuple(kwargs.values()))))
    if sample_shape is None or dtype is None:
        zeros = np.zeros((1,) + x.shape[1:], x.dtype)
        probe = np.asarray(on_device(function, zeros, args, kwargs, device))
        sample_shape = probe.shape[1:] if sample_shape is None else sample_shape
        dtype = probe.dtype if dtype is None else dtype
    name = getattr(function, "__name__", "function")
    return batch_blocks(function, x, args, kwargs, sample_shape, np.dtype(dtype),
                    token=f"cnnlab-map-batches-{name}", device=device)
