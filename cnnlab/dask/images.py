"""Folders of image files read lazily, one task per chunk, classified chunk by chunk."""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterator

import numpy as np

from ..data import check_color, check_resize, image_files, read_image, standardize
from ..dispatch import is_dask_array
from ..shapes import pair
from ..types import Any, Array, DaskArray, Sequence
from .base import dask_modules
from .batches import batch_blocks
from .models import check_model_input

_READ_ERRORS = ("raise", "nan")
_LOCAL_SCHEDULERS = ("threads", "processes", "synchronous", "sync", "single-threaded")


def _read_chunk(files, size, color, resize, errors):
    """The images of ``files`` as one (n, C, H, W) float32 block; NaN images for unreadable
    files when ``errors='nan'``."""
    channels = 3 if color == "rgb" else 1
    block = np.empty((len(files), channels) + tuple(size), np.float32)
    for index, file in enumerate(files):
        try:
            block[index] = read_image(file, size, color, resize)
        except (FileNotFoundError, ValueError):
            if errors == "raise":
                raise
            block[index] = np.nan
    return block


def read_image_folder(paths: str | os.PathLike | Sequence[str | os.PathLike], size: int | tuple[int, int],
                      color: str = "rgb", resize: str = "stretch", chunk_size: int = 256,
                      errors: str = "raise") -> tuple[list, DaskArray]:
    """Image files and folders as a lazy (N, C, H, W) dask array, read chunk by chunk.

    The files are listed now; they are read and decoded only when a chunk is computed, inside
    that chunk's task, by :func:`cnnlab.data.read_image` (so a folder larger than memory can be
    classified, and a cluster's workers read the files themselves). The array is chunked along
    the batch axis only, which is what :meth:`cnnlab.Model.predict_proba` and
    :func:`map_batches` take.

    Parameters
    ----------
    paths : str, path, or list of them
        Image files (taken as they are, whatever their suffix) and folders, searched
        recursively for files ending in one of :data:`cnnlab.data.IMAGE_SUFFIXES` (any case),
        each folder's files in sorted order (the order ``cnnlab predict`` lists them in).
    size : int or (int, int)
        Every image is resized to (height, width); one int means a square.
    color : {'rgb', 'gray'}
        As :func:`cnnlab.data.read_image`: 3 or 1 channels.
    resize : {'stretch', 'crop', 'pad'}
        As :func:`cnnlab.data.read_image`.
    chunk_size : int
        Images per chunk (and per task); the last chunk holds the rest.
    errors : {'raise', 'nan'}
        What a file that cannot be read (not an image, damaged, removed since it was listed)
        gives when its chunk is computed. 'raise': the ``ValueError`` (or
        ``FileNotFoundError``) of :func:`cnnlab.data.read_image`, naming the file. 'nan': an
        image of NaN, so that the other images are still read; ``da.isnan(images[:, 0, 0, 0])``
        marks them, computed from the same chunks. A model refuses NaN images: leave those rows
        out before predicting (``cnnlab predict --dask`` does so and reports the files).

    Returns
    -------
    files : list of str
        The N files, in the order of the images.
    images : (N, C, H, W) dask.array.Array
        float32 in [0, 1], chunks of ``chunk_size`` images along the batch axis, one task per
        chunk.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If no image file is found; naming ``size``, ``color``, ``resize``, ``chunk_size`` or
        ``errors`` for a bad value.
    TypeError
        Naming ``paths``, ``size`` or ``chunk_size`` for a value of the wrong type.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from PIL import Image
    >>> from cnnlab.dask import read_image_folder
    >>> folder = tempfile.mkdtemp()
    >>> for i in range(5):
    ...     Image.fromarray(np.full((8, 8), 50 * i, np.uint8)).save(os.path.join(folder, f"{i}.png"))
    >>> files, images = read_image_folder(folder, 4, color="gray", chunk_size=2)
    >>> images.shape, images.chunks[0]
    ((5, 1, 4, 4), (2, 2, 1))
    >>> float(images[:, 0, 0, 0].compute(scheduler="sync")[4])
    0.7843137383460999
    """
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    _, da = dask_modules()
    size = pair("size", size, 1)
    check_color(color)
    check_resize(resize)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"chunk_size must be an integer, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if not isinstance(errors, str) or errors not in _READ_ERRORS:
        raise ValueError(f"errors must be 'raise' or 'nan', got {errors!r}")
    files = image_files(paths)
    absolute = [os.path.abspath(f) for f in files]  # a worker's working folder may differ
    starts = range(0, len(files), int(chunk_size))
    name = "cnnlab-read-images-" + tokenize(absolute, size, color, resize, int(chunk_size), errors)
    graph = {(name, index, 0, 0, 0): (_read_chunk, absolute[start:start + chunk_size], size, color, resize, errors)
             for index, start in enumerate(starts)}
    channels = 3 if color == "rgb" else 1
    chunks = (tuple(min(chunk_size, len(files) - start) for start in starts), (channels,), (size[0],), (size[1],))
    images = da.Array(HighLevelGraph.from_collections(name, graph, dependencies=()), name, chunks,
                      dtype=np.float32, meta=np.empty((0, 0, 0, 0), np.float32))
    return files, images


def _classify_block(batch, model, mean, std, batch_size):
    """Standardize each readable image of ``batch`` as ``cnnlab predict`` does and return the
    model's probabilities; rows of NaN images stay NaN."""
    readable = np.isfinite(batch).reshape(len(batch), -1).all(axis=1)
    out = np.full((len(batch), model.num_classes()), np.nan, dtype=model.dtype)
    if readable.any():
        x = np.concatenate([standardize(image[None], mean, std)[0] for image in batch[readable]])
        out[readable] = model.predict_proba(x, batch_size)
    return out


def classify_images(model: Any, images: DaskArray, mean: Array | None = None, std: Array | None = None,
                    batch_size: int = 256) -> DaskArray:
    """Class probabilities of a dask batch of images, standardized image by image in the tasks.

    Each image is standardized with ``mean`` and ``std`` as :func:`cnnlab.data.standardize`
    does (with both None: by its own statistics), then ``model.predict_proba`` runs on the
    chunk. An image holding NaN (an unreadable file of :func:`read_image_folder` with
    ``errors='nan'``) gives a row of NaN instead of an error. The model is placed in the task
    graph once.

    Parameters
    ----------
    model : cnnlab.Model
        A classifier (one input, one output).
    images : (N, C, H, W) dask.array.Array
        float32 or float64 in [0, 1], chunked along the batch axis only.
    mean, std : (C,) array_like or None
        The per-channel statistics (``model.preprocessing['mean']`` and ``['std']`` for a
        model of ``cnnlab train``).
    batch_size : int
        The in-memory batch size within a chunk.

    Returns
    -------
    dask.array.Array
        ``(N, classes)`` in the model's dtype, chunked as ``images`` along the batch axis.

    Raises
    ------
    ValueError, TypeError
        As :func:`predict_proba` for bad shapes, dtypes and chunkings.
    """
    check_model_input(model, images, "images")
    mean = None if mean is None else np.asarray(mean, dtype=np.float64)
    std = None if std is None else np.asarray(std, dtype=np.float64)
    return batch_blocks(_classify_block, images, (model.copy(), mean, std, batch_size), {},
                    (model.num_classes(),), np.dtype(model.dtype), token="cnnlab-classify-images",
                    name="images")


def compute_chunks(x: DaskArray, scheduler: Any = None) -> Iterator[tuple[int, np.ndarray]]:
    """Compute a dask array chunk by chunk along its first axis, yielding each chunk as it is done.

    A result too large for memory is written piece by piece this way (a CSV file, a database),
    each chunk freed once it has been handled.

    Parameters
    ----------
    x : dask.array.Array
        Chunked along axis 0 (other axes may be chunked too: their blocks are joined).
    scheduler : None, {'threads', 'processes', 'synchronous'} or dask.distributed.Client
        A ``Client``: every chunk is submitted to its cluster at once and yielded as it
        finishes (in any order). A local scheduler name (None: 'threads'): as many chunks as
        the scheduler has workers are computed together, and yielded in order.

    Yields
    ------
    start : int
        The index along axis 0 of the chunk's first row.
    block : ndarray
        The computed chunk.

    Raises
    ------
    TypeError
        If ``x`` is not a dask array or ``scheduler`` is not a name or a ``Client``.
    ValueError
        For an unknown scheduler name or unknown chunk sizes.

    Examples
    --------
    >>> import dask.array as da
    >>> from cnnlab.dask import compute_chunks
    >>> [(start, block.tolist()) for start, block in compute_chunks(da.arange(5, chunks=2), "synchronous")]
    [(0, [0, 1]), (2, [2, 3]), (4, [4])]
    """
    dask, _ = dask_modules()
    if not is_dask_array(x):
        raise TypeError(f"x must be a dask array, got {type(x).__name__}")
    if x.ndim < 1 or any(np.isnan(c) for c in x.chunks[0]):
        raise ValueError(f"x must have known chunk sizes along axis 0, got chunks {x.chunks}")
    if x.ndim > 1 and any(len(c) > 1 for c in x.chunks[1:]):
        x = x.rechunk({axis: -1 for axis in range(1, x.ndim)})
    starts = np.concatenate([[0], np.cumsum(x.chunks[0])[:-1]]).astype(int).tolist()
    pieces = list(x.to_delayed().reshape(-1))
    if scheduler is None:
        scheduler = "threads"
    if not isinstance(scheduler, str):
        try:
            from dask.distributed import Client, as_completed
        except ImportError:  # pragma: no cover - only without the extra
            Client = None
        if Client is None or not isinstance(scheduler, Client):
            raise TypeError(f"scheduler must be 'threads', 'processes', 'synchronous' or a "
                            f"dask.distributed.Client, got {type(scheduler).__name__}")
        futures = scheduler.compute(pieces)
        where = {future.key: start for future, start in zip(futures, starts)}
        completed = as_completed(futures, loop=scheduler.loop)
        del futures  # each chunk is released on the cluster once it has been yielded
        for future in completed:
            start, block = where.pop(future.key), future.result()
            future.release()
            yield start, block
        return
    if scheduler not in _LOCAL_SCHEDULERS:
        raise ValueError(f"scheduler must be 'threads', 'processes', 'synchronous' or a "
                         f"dask.distributed.Client, got {scheduler!r}")
    if scheduler in ("synchronous", "sync", "single-threaded"):
        for start, piece in zip(starts, pieces):
            yield start, dask.compute(piece, scheduler="synchronous")[0]
        return
    workers = dask.config.get("num_workers", None) or os.cpu_count() or 1
    if scheduler == "threads":
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(workers)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context(dask.config.get("multiprocessing.context", "spawn"))
        pool = ProcessPoolExecutor(workers, mp_context=context)
    with pool:  # one pool for every window of chunks
        for first in range(0, len(pieces), workers):
            blocks = dask.compute(*pieces[first:first + workers], scheduler=scheduler, pool=pool)
            yield from zip(starts[first:first + workers], blocks)
