"""Dask arrays through cnnlab: huge images and big batches, computed chunk by chunk.

The functions here take a ``dask.array.Array`` and return one, built from the in-memory
functions of :mod:`cnnlab.filters` and :class:`cnnlab.Model` applied to each chunk, so the
kernels never see Dask and every chunk gives exactly what the in-memory call gives:

- :func:`correlate2d`, :func:`convolve2d` and :func:`apply` exchange a halo as deep as the
  kernel's reach between neighbouring chunks (``dask.array.overlap.overlap``) and filter each
  chunk with its halo; the result has the image's chunks (mode 'same').
- :func:`map_batches` runs a function of an in-memory batch over a dask array chunked along
  the batch axis only; :func:`predict_proba`, :func:`predict` and :func:`evaluate` use it for
  a model, which is placed in the task graph once.
- :func:`map_windows` runs a sliding-window op (convolution, pooling) over an (N, C, H, W) dask
  array chunked across the image: each output chunk is computed from its input chunk and the
  halo its windows reach, with the op's padding at the image's edges only; ``F.conv2d`` and
  the poolings use it for such arrays.
- ``device='cuda'`` (or weights on the GPU) runs the chunks' kernels on the GPU: each task
  copies its chunk there and the result back, so the chunks stay NumPy arrays.
- :func:`read_image_folder` lists image files and folders now and reads them later, one task
  per chunk of images; :func:`classify_images` standardizes and classifies them in the tasks
  and :func:`compute_chunks` hands a result over chunk by chunk (``cnnlab predict --dask``).

``cnnlab.filters.correlate2d``, ``convolve2d``, ``apply`` and ``Model.predict_proba``,
``predict`` and ``evaluate`` call these when they are given a dask array, so user code does
not change. Results are lazy: ``.compute()`` runs them on the current scheduler, a
``dask.distributed`` cluster included.

Dask itself is imported only when a dask array is used (the ``dask`` extra).
"""

import threading
import inspect
from contextlib import nullcontext
from itertools import pairwise

import numpy as np

from . import functional
from .functional import dispatch
from .functional.dispatch import is_dask_array

__all__ = [
    "apply",
    "classify_images",
    "compute_chunks",
    "convolve2d",
    "correlate2d",
    "evaluate",
    "is_dask_array",
    "kernel_lock",
    "map_batches",
    "map_windows",
    "predict",
    "predict_proba",
    "read_image_folder",
]

_LOCK = threading.Lock()


def kernel_lock():
    """A context that serializes kernel calls when Numba's threading layer is not thread-safe.

    Numba's ``workqueue`` layer must not be entered by several threads at once (Dask's threaded
    scheduler would do that); ``tbb`` and ``omp`` may. The layer is read with
    :func:`cnnlab.parallel.threading_layer`, which starts Numba's threads if needed.

    Returns
    -------
    context manager
        A process-wide lock under 'workqueue', otherwise a context that does nothing.
    """
    from .parallel import threading_layer

    return _LOCK if threading_layer() == "workqueue" else nullcontext()


# --- devices -------------------------------------------------------------------------------

_DEVICES = ("cpu", "cuda")


def _resolve_device(device, *arrays):
    """'cpu' or 'cuda' for the chunks' tasks: ``device`` as given, or (None) 'cuda' when one of
    ``arrays`` (weights, kernels, arguments) lives on the GPU, else 'cpu'."""
    from .device import _require_cuda, is_gpu_array

    if device is None:
        return "cuda" if any(is_gpu_array(a) for a in arrays) else "cpu"
    if not isinstance(device, str) or device not in _DEVICES:
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {device!r}")
    if device == "cuda":
        _require_cuda()  # the clear 'no CUDA GPU' RuntimeError now, not in a task
    return device


def _to_host_values(values):
    """GPU arrays among ``values`` copied to NumPy: the task graph holds host arrays only (it
    can be pickled and sent to a cluster); the tasks copy them to the device."""
    from .device import is_gpu_array, to_host

    return type(values)(to_host(v) if is_gpu_array(v) else v for v in values)


def _on_device(function, block, args, kwargs, device):
    """``function(block, *args, **kwargs)`` on ``device``: for 'cuda' the block and every NumPy
    array among the arguments are copied to the GPU first and the result is copied back, so a
    dask array's chunks stay NumPy arrays."""
    if device != "cuda":
        with kernel_lock():
            return function(block, *args, **kwargs)
    from .device import to_device, to_host

    def move(value):
        return to_device(value) if isinstance(value, np.ndarray) else value

    args = tuple(move(a) for a in args)
    kwargs = {key: move(value) for key, value in kwargs.items()}
    with kernel_lock():
        out = function(to_device(block), *args, **kwargs)
    return to_host(out)


# --- filters -------------------------------------------------------------------------------

def _dask_modules():
    try:
        import dask
        import dask.array as da
    except ImportError:  # pragma: no cover - only without the extra
        raise ImportError("dask arrays need the 'dask' extra: pip install cnnlab[dask]") from None
    return dask, da


def _check_image(name, x, ndims, kinds):
    """The in-memory checks on a dask array's shape and dtype, without computing it."""
    shapes = " or ".join("(H, W)" if n == 2 else "(H, W, C)" for n in ndims)
    if x.ndim not in ndims:
        if ndims == (2,):
            raise ValueError(f"{name} must be a 2-D array, got shape {tuple(x.shape)}")
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(x.shape)}")
    if np.dtype(x.dtype).kind not in kinds:
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    if any(np.isnan(s) for s in x.shape):
        raise ValueError(f"{name} has unknown chunk sizes {x.chunks}: call {name}.compute_chunk_sizes() first")
    if 0 in x.shape:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")


def _axis_plan(chunks, size, mode, flip):
    """Geometry along one axis: where each output row reads, the halo depth and output chunks.

    Output row ``o`` reads input rows ``o + start`` to ``o + start + size - 1``.
    """
    if mode == "full":
        start = -(size - 1)
        out_chunks = chunks[:-1] + (chunks[-1] + size - 1,)
    elif mode == "same":
        start = (size - 1) // 2 - (size - 1) if flip else -((size - 1) // 2)
        out_chunks = chunks
    else:  # valid: the last rows drop out, taken from the last chunks first
        start = 0
        drop, out = size - 1, list(chunks)
        for i in range(len(out) - 1, -1, -1):
            cut = min(drop, out[i])
            out[i] -= cut
            drop -= cut
        out_chunks = tuple(out)
    # a chunk's block is the chunk with `depth` rows each side; its last output row reads up to
    # (chunk + size - 1 + start) rows past the chunk's first row (the full mode's last chunk most)
    after = max(c_out + size - 1 + start - c for c, c_out in zip(chunks, out_chunks))
    depth = max(-start, after, 0)
    return start, depth, out_chunks


def _filter_block(block, weights, starts, depths, flip, channels, device="cpu", edge_fill=None,
                  block_info=None):
    """Filter one block (a chunk with its halo) with the in-memory 'valid' filter, on
    ``device``. With ``edge_fill`` (the 'fill' boundary) the halo exchange left the image's
    outer sides bare: a block at an edge of the image pads that side itself with the fill
    value (no extra chunks of fill values in the graph, as dask-image does)."""
    from . import filters

    if edge_fill is not None:
        grid, count = block_info[0]["chunk-location"], block_info[0]["num-chunks"]
        pads = [(depths[a] if grid[a] == 0 else 0, depths[a] if grid[a] == count[a] - 1 else 0) for a in (0, 1)]
        if any(before or after for before, after in pads):
            block = np.pad(block, pads + [(0, 0)] * (block.ndim - 2), constant_values=edge_fill)
    location = block_info[None]["array-location"]
    lengths = [stop - begin for begin, stop in location]
    crop = tuple(slice(d + s, d + s + n + k - 1)
                 for d, s, n, k in zip(depths, starts, lengths[:2], weights.shape))
    dtype = np.result_type(block.dtype, weights.dtype)
    if 0 in lengths:
        return np.zeros(lengths, dtype)
    function = filters.convolve2d if flip else filters.correlate2d
    valid = {"mode": "valid"}
    if not channels:
        return _on_device(function, block[crop], (weights,), valid, device)
    return np.stack([_on_device(function, block[crop + (c,)], (weights,), valid, device)
                     for c in range(block.shape[2])], axis=-1)


def _filter(in1, in2, mode, boundary, fillvalue, flip, channels=False, name="in1", device=None):
    from . import filters

    dask, da = _dask_modules()
    if is_dask_array(in2):
        raise TypeError("in2 (the kernel) must be an in-memory array, got a dask array: pass "
                        "in2.compute() (kernels are small)")
    weights = filters._as_2d("in2", in2)
    device = _resolve_device(device, weights)
    if not isinstance(mode, str) or mode not in filters._MODES:
        raise ValueError(f"mode must be 'full', 'same' or 'valid', got {mode!r}")
    if not isinstance(boundary, str) or boundary not in filters._BOUNDARIES:
        raise ValueError(
            f"boundary must be 'fill', 'wrap' (or 'circular') or 'symm' (or 'symmetric'), got {boundary!r}"
        )
    dtype = np.result_type(in1.dtype, weights.dtype)
    if dtype.kind not in filters._SUPPORTED_KINDS or dtype in filters._UNSUPPORTED:
        raise TypeError(
            f"in1 ({in1.dtype}) and in2 ({weights.dtype}) give result dtype {dtype}, which has no "
            "filter kernel (as in scipy.signal); cast the inputs, e.g. to float64"
        )
    fill = filters._fill_scalar(fillvalue, dtype)
    height, width = in1.shape[:2]
    if mode == "valid" and not all(a >= b for a, b in zip((height, width), weights.shape)):
        if all(b >= a for a, b in zip((height, width), weights.shape)):
            raise ValueError(f"mode='valid' with a kernel {weights.shape} larger than the dask array "
                             f"{name} {(height, width)} is not supported: the result is at most the "
                             "kernel's size, compute it in memory")
        raise ValueError(
            "For 'valid' mode, one must be at least as large as the other in every dimension: "
            f"in1 shape {(height, width)}, in2 shape {tuple(weights.shape)}"
        )
    weights = np.ascontiguousarray(filters.to_host(weights).astype(dtype, copy=False))
    image = in1.astype(dtype)

    # chunks at least as deep as the halo (dask needs it), as few changes as possible
    plans = [_axis_plan(c, k, mode, flip) for c, k in zip(image.chunks, weights.shape)]
    depths = [plan[1] for plan in plans]
    for axis, (length, depth) in enumerate(zip((height, width), depths)):
        if length < depth and mode != "valid":
            raise ValueError(f"{name} has {length} {'rows' if axis == 0 else 'columns'}, fewer than the "
                             f"kernel's reach ({depth}) with mode={mode!r}: a dask array must be at "
                             "least that large along each axis")
    if any(min(c) < d for c, d in zip(image.chunks, depths)):
        new = tuple(da.overlap.ensure_minimum_chunksize(d, c) if min(c) < d else c
                    for c, d in zip(image.chunks[:2], depths))
        image = image.rechunk(new + image.chunks[2:])
        plans = [_axis_plan(c, k, mode, flip) for c, k in zip(image.chunks, weights.shape)]
    starts = tuple(plan[0] for plan in plans)
    out_chunks = tuple(plan[2] for plan in plans) + image.chunks[2:]

    kind = "fill" if boundary in ("fill", "pad") or mode == "valid" else boundary
    dask_boundary = {"fill": fill, "wrap": "periodic", "circular": "periodic",
                     "symm": "reflect", "symmetric": "reflect"}[kind]
    edge_fill = fill if kind == "fill" else None  # each edge block pads itself: fewer tasks
    if edge_fill is not None:
        dask_boundary = "none"
    depth = {0: depths[0], 1: depths[1]}
    bound = {0: dask_boundary, 1: dask_boundary}
    if channels:
        depth[2], bound[2] = 0, "none"
    padded = da.overlap.overlap(image, depth=depth, boundary=bound)
    meta = da.utils.meta_from_array(in1, ndim=in1.ndim, dtype=dtype)
    result = da.map_blocks(
        _filter_block, padded, dask.delayed(weights), starts, tuple(depths), flip, channels, device, edge_fill,
        chunks=out_chunks, dtype=dtype, meta=meta,
        token="cnnlab-" + ("convolve2d" if flip else "correlate2d"),
    )
    if mode == "same" and result.chunks != in1.chunks:
        result = result.rechunk(in1.chunks)
    return result


def correlate2d(in1, in2, mode="full", boundary="fill", fillvalue=0, device=None):
    """Cross-correlate a 2-D dask array with an in-memory kernel, chunk by chunk.

    The same result as :func:`cnnlab.filters.correlate2d` on the computed array (and so as
    ``scipy.signal.correlate2d``), with each chunk filtered together with a halo of its
    neighbours as deep as the kernel's reach.

    Parameters
    ----------
    in1 : (H, W) dask.array.Array
        The image, chunked any way (chunks smaller than the kernel's reach are merged).
    in2 : (KH, KW) array_like or GPU array
        The kernel, in memory (host or GPU).
    mode : {'full', 'valid', 'same'}
        As :func:`cnnlab.filters.correlate2d`. 'same' keeps ``in1``'s chunks; 'full' grows
        the last chunk of each axis by ``K - 1`` and 'valid' shrinks the last chunks.
    boundary : {'fill', 'wrap', 'symm'}
        As :func:`cnnlab.filters.correlate2d` (aliases 'pad', 'circular', 'symmetric').
    fillvalue : scalar
        The outside value for ``boundary='fill'``.
    device : {None, 'cpu', 'cuda'}
        Where each chunk is filtered: 'cuda' copies the chunk (with its halo) to the GPU inside
        its task, runs the GPU kernel there and copies the result back, so the result's chunks
        are NumPy arrays either way. None: 'cuda' when ``in2`` is a GPU array, else 'cpu'.

    Returns
    -------
    dask.array.Array
        dtype ``np.result_type(in1, in2)``, computed lazily.

    Raises
    ------
    ValueError
        For a bad ``mode``, ``boundary`` or shape, as in memory; for an image smaller than the
        kernel's reach along an axis, or a 'valid' kernel larger than the image.
    TypeError
        For a non-numeric dtype, or a dask array as the kernel.
    RuntimeError
        For ``device='cuda'`` where there is no GPU (nor the CUDA simulator).

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> from cnnlab import filters
    >>> image = da.ones((6, 6), chunks=3)
    >>> out = filters.correlate2d(image, filters.KERNELS["box_blur"], mode="same", boundary="symm")
    >>> out.chunks
    ((3, 3), (3, 3))
    >>> round(float(out.sum().compute()), 6)
    36.0
    """
    _dask_modules()
    _check_image("in1", in1, (2,), "iufcb")
    return _filter(in1, in2, mode, boundary, fillvalue, flip=False, device=device)


def convolve2d(in1, in2, mode="full", boundary="fill", fillvalue=0, device=None):
    """Convolve a 2-D dask array with an in-memory kernel, chunk by chunk.

    Parameters, returns and errors as :func:`correlate2d`; the result equals
    :func:`cnnlab.filters.convolve2d` on the computed array.
    """
    _dask_modules()
    _check_image("in1", in1, (2,), "iufcb")
    return _filter(in1, in2, mode, boundary, fillvalue, flip=True, device=device)


def apply(image, kernel, mode="same", boundary="fill", fillvalue=0, device=None):
    """Filter a grayscale (H, W) or colour (H, W, C) dask image, channel by channel.

    As :func:`cnnlab.filters.apply`: computed in float32 for float32 input, float64 otherwise.
    The channel axis may be chunked too.

    Parameters
    ----------
    image : (H, W) or (H, W, C) dask.array.Array
    kernel : str or 2-D array_like
        A name from :data:`cnnlab.filters.KERNELS` or the weights, in memory (host or GPU).
    mode, boundary, fillvalue, device
        As :func:`correlate2d`.

    Returns
    -------
    dask.array.Array
        Of ``image``'s chunks ('same').
    """
    from . import filters

    _dask_modules()
    if isinstance(kernel, str):
        if kernel not in filters.KERNELS:
            raise ValueError(f"kernel must be one of {sorted(filters.KERNELS)} or an array, got {kernel!r}")
        kernel = filters.KERNELS[kernel]
    _check_image("image", image, (2, 3), "biuf")
    dtype = np.float32 if image.dtype == np.float32 else np.float64
    if is_dask_array(kernel):
        raise TypeError("kernel must be an in-memory array, got a dask array: pass kernel.compute()")
    from .device import to_host

    device = _resolve_device(device, kernel)
    weights = to_host(kernel).astype(dtype)
    return _filter(image.astype(dtype), weights, mode, boundary, fillvalue, flip=False,
                   channels=image.ndim == 3, name="image", device=device)


# --- batches and models -------------------------------------------------------------------

def _check_batch_chunks(x, name):
    for axis in range(1, x.ndim):
        if len(x.chunks[axis]) > 1:
            whole = ", ".join(f"{a}: -1" for a in range(1, x.ndim))
            raise ValueError(
                f"{name} is chunked along axis {axis} (chunks {x.chunks[axis]}); a batch must be "
                f"chunked along the batch axis (0) only: rechunk with {name}.rechunk({{{whole}}})"
            )
    if any(np.isnan(c) for c in x.chunks[0]):
        raise ValueError(f"{name} has unknown chunk sizes along the batch axis: call "
                         f"{name}.compute_chunk_sizes() first")


def _batches(function, x, args, kwargs, sample_shape, dtype, token, name="x", device="cpu"):
    dask, da = _dask_modules()
    _check_batch_chunks(x, name)
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
        _run_packed, x, packed, chunks=chunks, dtype=dtype, drop_axis=drop_axis, new_axis=new_axis,
        meta=np.empty((0,) * len(chunks), dtype), token=token,
    )


def _run_packed(block, packed):
    function, args, kwargs, device = packed
    return _on_device(function, block, args, kwargs, device)


def map_batches(function, x, *args, sample_shape=None, dtype=None, device=None, **kwargs):
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
    _dask_modules()
    if not is_dask_array(x):
        raise TypeError(f"x must be a dask array, got {type(x).__name__}")
    if not callable(function):
        raise TypeError(f"function must be callable, got {type(function).__name__}")
    if x.ndim < 1:
        raise ValueError(f"x must have a batch axis, got shape {x.shape}")
    _check_batch_chunks(x, "x")
    device = _resolve_device(device, *args, *kwargs.values())
    args = _to_host_values(tuple(args))
    kwargs = dict(zip(kwargs, _to_host_values(tuple(kwargs.values()))))
    if sample_shape is None or dtype is None:
        zeros = np.zeros((1,) + x.shape[1:], x.dtype)
        probe = np.asarray(_on_device(function, zeros, args, kwargs, device))
        sample_shape = probe.shape[1:] if sample_shape is None else sample_shape
        dtype = probe.dtype if dtype is None else dtype
    name = getattr(function, "__name__", "function")
    return _batches(function, x, args, kwargs, sample_shape, np.dtype(dtype),
                    token=f"cnnlab-map-batches-{name}", device=device)


# --- sliding windows over an image chunked across its height and width --------------------

def _window_axis_plan(chunks, size, kernel, stride, dilation, before, after, ceil_mode):
    """The output blocks of a sliding window along one chunked axis, and what each one reads.

    Output ``o`` covers input rows ``o*stride - before`` to ``o*stride - before + span - 1``
    (``span = dilation*(kernel - 1) + 1``; rows outside the input are padding); its window's
    centre row is ``o*stride - before + (span - 1)//2``. Output block ``j`` holds the outputs
    whose centre lies in input chunk ``j``; the first block also those centred in the leading
    padding, the last one those to the end of the output. So 'same' padding at stride 1 keeps
    the input's chunks, and a stride ``s`` makes each chunk about ``1/s`` as long. A chunk in
    which no window is centred (one smaller than the stride) gives no block, and a first block
    whose windows lie in the leading padding alone joins the next one. A block reads the input
    rows its windows cover, clipped to the input; what is clipped becomes the block's own
    padding, so that the in-memory op on those rows with that padding gives exactly the
    block's outputs. With ``ceil_mode`` the last block keeps the input's end and its trailing
    padding, so its partial last window (and avg pooling's divisor) is the in-memory one; every
    other block fits its windows exactly, where ``ceil_mode`` changes nothing.

    Returns
    -------
    blocks : list of (start, stop, pad_before, pad_after)
        Input rows ``[start, stop)`` and the padding of each output block, in order.
    out_chunks : tuple of int
        The number of outputs of each block.
    """
    from .shapes import _axis_output_size

    span = dilation * (kernel - 1) + 1
    total = _axis_output_size(None, size, kernel, stride, before, after, dilation, ceil_mode)
    offset = before - (span - 1) // 2  # output o is centred on input row o*stride - offset
    inside = min(total, -(-(size + offset) // stride))  # outputs centred before the input ends
    bounds, position = [0], 0
    for chunk in chunks[:-1]:
        position += chunk
        first = -(-(position + offset) // stride)  # the first output centred in the next chunk
        if bounds[-1] < first < inside:
            bounds.append(first)
    bounds.append(total)
    if len(bounds) > 2 and (bounds[1] - 1) * stride - before + span <= 0:
        del bounds[1]  # windows in the leading padding alone: read with the next block's rows
    # ceil_mode's partial last window alone does not make an input the window fits: join the
    # block before (the in-memory op refuses an input shorter than the window)
    while ceil_mode and len(bounds) > 2 and size - max(bounds[-2] * stride - before, 0) \
            + max(before - bounds[-2] * stride, 0) + after < span:
        del bounds[-2]
    if len(bounds) == 2 and (total - 1) * stride - before + span <= 0:
        return [(0, size, before, after)], (total,)  # no window reaches the input: the in-memory call
    blocks = []
    for index, (first, stop) in enumerate(pairwise(bounds)):
        low = first * stride - before
        high = (stop - 1) * stride - before + span
        start = max(low, 0)
        if ceil_mode and index == len(bounds) - 2 and (high > size + after or high - span >= size):
            end, pad_after = size, after  # a partial last window, or one in the trailing padding
        else:
            end = min(high, size)
            pad_after = high - end
        blocks.append((start, end, start - low, pad_after))
    return blocks, tuple(stop - first for first, stop in pairwise(bounds))


def _chunk_pieces(chunks, start, stop):
    """``(chunk index, slice in the chunk, whole chunk?)`` for each chunk rows ``[start, stop)``
    cross."""
    pieces, offset = [], 0
    for index, length in enumerate(chunks):
        low, high = max(start, offset), min(stop, offset + length)
        if low < high:
            pieces.append((index, slice(low - offset, high - offset), high - low == length))
        offset += length
    return pieces


def _window_block(packed, pieces, padding):
    """One output block: the input pieces joined into the block's rows and columns, then the
    in-memory op with the block's own padding."""
    function, args, kwargs, device = packed
    block = pieces[0][0] if len(pieces) == 1 and len(pieces[0]) == 1 else np.block(pieces)
    return _on_device(function, block, args, dict(kwargs, padding=padding), device)


def _minimum_chunks(chunks, reach):
    """Chunks of at least ``reach`` rows (merging as few as possible), so that a block's
    windows reach no further than the chunks either side of its own."""
    from dask.array.overlap import ensure_minimum_chunksize

    if len(chunks) == 1 or min(chunks) >= reach:
        return chunks
    if sum(chunks) <= reach:
        return (sum(chunks),)
    return ensure_minimum_chunksize(reach, chunks)


def _windows(function, x, args, kwargs, kernel, stride, padding, dilation, ceil_mode, out_channels,
             dtype, device, token):
    """The dask array of a sliding-window op on ``x`` (N, C, H, W), block by block.

    ``function(block, *args, stride=, padding=, dilation=, [ceil_mode=,] **kwargs)`` is the
    in-memory op; ``padding`` is resolved ``((top, bottom), (left, right))``; ``ceil_mode``
    None means the op has none. ``out_channels`` None: output channel ``c`` depends on input
    channel ``c`` only (pooling), and the channel chunks stay; an int: every input channel is
    needed (convolution), and the channel axis is made one chunk.
    """
    dask, da = _dask_modules()
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    wanted = {1: -1} if out_channels is not None and len(x.chunks[1]) > 1 else {}
    for axis, span in zip((2, 3), spans):
        chunks = _minimum_chunks(x.chunks[axis], span - 1)
        if chunks != x.chunks[axis]:
            wanted[axis] = chunks
    if wanted:
        x = x.rechunk(wanted)
    flag = bool(ceil_mode)
    plans = [_window_axis_plan(x.chunks[axis], x.shape[axis], k, s, d, before, after, flag)
             for axis, k, s, d, (before, after) in zip((2, 3), kernel, stride, dilation, padding)]
    (row_blocks, row_out), (col_blocks, col_out) = plans
    options = dict(kwargs, stride=tuple(stride), dilation=tuple(dilation))
    if ceil_mode is not None:
        options["ceil_mode"] = flag
    packed = dask.delayed((function, tuple(args), options, device), traverse=False)
    key = tokenize(x.name, packed.key, plans, out_channels, np.dtype(dtype).str)
    name = f"{token}-{key}"
    piece_name = token.replace("cnnlab-", "cnnlab-halo-", 1) + f"-{key}"  # the rows of a chunk a block needs
    graph = {}
    rows = [_chunk_pieces(x.chunks[2], start, stop) for start, stop, _, _ in row_blocks]
    cols = [_chunk_pieces(x.chunks[3], start, stop) for start, stop, _, _ in col_blocks]
    for n in range(len(x.chunks[0])):
        for c in range(len(x.chunks[1])):
            for p, (row_pieces, row_block) in enumerate(zip(rows, row_blocks)):
                for q, (col_pieces, col_block) in enumerate(zip(cols, col_blocks)):
                    pieces = []
                    for jr, row_slice, whole_rows in row_pieces:
                        line = []
                        for jc, col_slice, whole_cols in col_pieces:
                            source = (x.name, n, c, jr, jc)
                            if not (whole_rows and whole_cols):  # only the rows and columns needed
                                piece = (piece_name, n, c, p, q, jr, jc)
                                graph[piece] = (_take, source, row_slice, col_slice)
                                source = piece
                            line.append(source)
                        pieces.append(line)
                    padding_block = (row_block[2:], col_block[2:])
                    graph[(name, n, c, p, q)] = (_window_block, packed.key, pieces, padding_block)
    channels = x.chunks[1] if out_channels is None else (out_channels,)
    chunks = (x.chunks[0], channels, row_out, col_out)
    layers = HighLevelGraph.from_collections(name, graph, dependencies=[x, packed])
    return da.Array(layers, name, chunks, dtype=dtype, meta=np.empty((0,) * 4, dtype))


def _take(block, rows, cols):
    """The part of a neighbour chunk a block needs, copied: a view would keep the whole chunk
    in memory until the block has run."""
    return block[:, :, rows, cols].copy()


def _check_network_input(name, x, ndim=4):
    """The in-memory checks of a network op's input (``as_float_array``) on a dask array's
    dtype and shape, with the same messages, without computing it."""
    functional.as_float_array(name, np.empty((1,) * x.ndim, x.dtype))  # dtype: the in-memory errors
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if any(np.isnan(s) for s in x.shape):
        raise ValueError(f"{name} has unknown chunk sizes {x.chunks}: call {name}.compute_chunk_sizes() first")
    if 0 in x.shape:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")


def _chunked_across_samples(x):
    """Whether ``x`` is chunked along an axis other than the batch axis."""
    return any(len(c) > 1 for c in x.chunks[1:])


def map_windows(function, x, *args, kernel_size, stride=1, padding=0, dilation=1, ceil_mode=None,
                out_channels=None, dtype=None, device=None, **kwargs):
    """Run a sliding-window op of in-memory images block by block over a dask array chunked
    across its height and width (and batch, and channels).

    Along each spatial axis, output block ``j`` holds the outputs whose window starts in
    input chunk ``j`` (the first block also those starting in the leading padding, the last
    one those to the end of the output; a chunk smaller than the stride, in which no window
    starts, gives no block). A block's task reads only the rows and columns its windows cover:
    its chunk plus a halo of ``dilation*(kernel_size - 1)`` rows and columns of the next
    chunks (chunks smaller than that are merged first). It runs ``function`` on them with the
    block's own padding: the part of the window's reach that lies outside the input, which is
    the op's padding at the image's edges and nothing inside. So every output equals the
    in-memory result, and the output's chunks are these blocks.

    Parameters
    ----------
    function : callable
        ``function(block, *args, stride=(sh, sw), padding=((top, bottom), (left, right)),
        dilation=(dh, dw), **kwargs)`` (and ``ceil_mode=`` when ``ceil_mode`` is not None)
        returns the op's output ``(n, C_out, OH, OW)`` of an in-memory ``(n, C, h, w)`` block,
        with ``OH = floor((h + top + bottom - dh*(KH - 1) - 1) / sh) + 1`` (ceil with
        ``ceil_mode``, as :func:`cnnlab.output_size`) and likewise ``OW``: as
        :func:`cnnlab.functional.conv2d` and :func:`cnnlab.functional.pool2d` do.
    x : (N, C, H, W) dask.array.Array
        Chunked along any axes.
    *args, **kwargs
        Passed to ``function`` after the block (``kernel_size`` is not: pass it in ``args``
        if ``function`` takes it).
    kernel_size : int or (int, int)
        The window.
    stride, dilation : int or (int, int)
    padding : int, (int, int), ((int, int), (int, int)) or str
        Any form :func:`cnnlab.functional.conv2d` takes, 'same', 'same_upper' and
        'same_lower' included; resolved with ``x``'s size.
    ceil_mode : bool or None
        Pooling's ``ceil_mode``; None for an op without one (it is then not passed).
    out_channels : int or None
        None: output channel ``c`` depends on input channel ``c`` only (pooling), so channel
        chunks stay as they are. An int: the number of output channels, each depending on
        every input channel (convolution); the channel axis is then made one chunk.
    dtype : dtype, optional
        The result's dtype; ``x``'s by default.
    device : {None, 'cpu', 'cuda'}
        As :func:`map_batches`: 'cuda' runs each block on the GPU (copied there and back in
        its task); None: 'cuda' when an argument is a GPU array.

    Returns
    -------
    dask.array.Array
        ``(N, C_out, OH, OW)`` with ``OH``, ``OW`` the in-memory output size; ``x``'s batch
        chunks, the output blocks along height and width.

    Raises
    ------
    ValueError
        For a bad geometry (as :func:`cnnlab.output_size`), a window that does not fit, a
        non-4-D ``x``, unknown chunk sizes or an unknown ``device``.
    TypeError
        If ``x`` is not a dask array, ``function`` is not callable, or for non-integer sizes.

    See Also
    --------
    map_batches : for an op whose output rows depend on the same samples only.
    dask.array.map_overlap : the same idea for ops that keep the image's size.

    Examples
    --------
    >>> import numpy as np, dask.array as da
    >>> import cnnlab.functional as F
    >>> from cnnlab.dask import map_windows
    >>> x = da.ones((1, 1, 10, 10), chunks=(1, 1, 4, 5))
    >>> out = map_windows(F.max_pool2d, x, 3, kernel_size=3, stride=2, padding=1, ceil_mode=False)
    >>> out.chunks[2:]
    ((2, 2, 1), (3, 2))
    >>> bool((out.compute() == 1).all())
    True
    """
    from .shapes import (
        check_flag,
        check_int,
        pair,
        resolve_padding,
        window_output_shape,
    )

    _dask_modules()
    if not is_dask_array(x):
        raise TypeError(f"x must be a dask array, got {type(x).__name__}")
    if not callable(function):
        raise TypeError(f"function must be callable, got {type(function).__name__}")
    if x.ndim != 4:
        raise ValueError(f"x must have 4 dimensions (N, C, H, W), got shape {tuple(x.shape)}")
    if any(np.isnan(s) for s in x.shape):
        raise ValueError(f"x has unknown chunk sizes {x.chunks}: call x.compute_chunk_sizes() first")
    if 0 in x.shape:
        raise ValueError(f"x is empty (shape {tuple(x.shape)})")
    kernel = pair("kernel_size", kernel_size, 1)
    stride = pair("stride", stride, 1)
    dilation = pair("dilation", dilation, 1)
    size = tuple(int(s) for s in x.shape[2:])
    pads = resolve_padding(padding, kernel, stride, dilation, size)
    if ceil_mode is not None:
        ceil_mode = check_flag("ceil_mode", ceil_mode)
    window_output_shape(*size, kernel, stride, pads, dilation, bool(ceil_mode))
    if out_channels is not None:
        out_channels = check_int("out_channels", out_channels, 1)
    device = _resolve_device(device, *args, *kwargs.values())
    args = _to_host_values(tuple(args))
    kwargs = dict(zip(kwargs, _to_host_values(tuple(kwargs.values()))))
    dtype = np.dtype(x.dtype if dtype is None else dtype)
    name = getattr(function, "__name__", "function")
    return _windows(function, x, args, kwargs, kernel, stride, pads, dilation, ceil_mode, out_channels,
                    dtype, device, token=f"cnnlab-map-windows-{name}")


def _conv2d_on_dask(function, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **options):
    """``conv2d`` (the in-memory ``function``) of a dask ``x``: the in-memory checks first,
    then batch chunks with :func:`map_batches` or blocks across the image with
    :func:`_windows`; the chunks run where ``weight`` lives. ``options`` are conv2d's
    keyword-only ones: the per-filter ``scale`` and the ``activation`` go to every block;
    ``residual`` and ``out`` take in-memory arrays only."""
    from .device import kernels_for, to_host
    from .shapes import pair, resolve_padding

    _check_network_input("x", x)
    for label in ("residual", "out"):
        if options.get(label) is not None:
            raise TypeError(f"{label}= is for in-memory arrays: with a dask array x, leave it out "
                            f"(and add a residual to the result afterwards)")
        options.pop(label, None)
    scale = options.get("scale")
    for label, value in (("weight", weight), ("bias", bias), ("scale", scale)):
        if is_dask_array(value):
            raise TypeError(f"{label} must be an in-memory array (host or GPU), got a dask array: "
                            f"pass {label}.compute() (weights are small)")
    weight = functional.as_float_array("weight", weight, ndim=4, dtype=x.dtype)
    kernels = kernels_for(weight=weight, bias=bias, scale=scale)
    shape = tuple(int(s) for s in x.shape)
    geometry = functional.conv.conv_geometry(shape, tuple(weight.shape), x.dtype, stride, padding, dilation, groups)
    filters = weight.shape[0]
    checked_bias = functional.common.bias_or_zeros(kernels, bias, filters, x.dtype)
    if scale is not None:
        scale = functional.as_float_array("scale", scale, ndim=1, dtype=x.dtype)
        if scale.shape[0] != filters:
            raise ValueError(f"scale must have {filters} entries (one per filter), got shape {tuple(scale.shape)}")
        options["scale"] = to_host(scale)
    if options.get("activation") is not None and hasattr(functional, "epilogue_activation"):
        functional.epilogue_activation(options["activation"])
    device = _resolve_device(None, weight, bias, scale)
    weight, bias = to_host(weight), (None if bias is None else to_host(checked_bias))
    if not _chunked_across_samples(x):
        return map_batches(function, x, weight, bias, stride, padding, dilation, groups,
                           sample_shape=(filters,) + tuple(geometry.out_shape), dtype=x.dtype, device=device,
                           **options)
    kernel, stride, dilation = tuple(weight.shape[2:]), pair("stride", stride, 1), pair("dilation", dilation, 1)
    pads = resolve_padding(padding, kernel, stride, dilation, shape[2:])
    return _windows(function, x, (weight, bias), dict(options, groups=groups), kernel, stride, pads, dilation,
                    None, filters, x.dtype, device, token="cnnlab-conv2d")


def _pool2d_on_dask(function, x, kernel_size, stride=None, padding=0, mode="max", *, dilation=1,
                    ceil_mode=False, count_include_pad=True):
    """``pool2d`` (the in-memory ``function``) of a dask ``x``, as :func:`_conv2d_on_dask`;
    channel chunks stay."""

    _check_network_input("x", x)
    shape = tuple(int(s) for s in x.shape)
    out_shape, _ = functional.pool.pool_geometry(shape, kernel_size, stride, padding, mode, dilation, ceil_mode,
                                             count_include_pad)
    options = functional.pool_arguments(kernel_size, stride, padding, mode, dilation, ceil_mode, count_include_pad)
    if not _chunked_across_samples(x):
        return map_batches(function, x, kernel_size, stride, padding, mode, dilation=dilation,
                           ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                           sample_shape=tuple(out_shape[1:]), dtype=x.dtype, device="cpu")
    kernel = options["kernel_size"]
    return _windows(function, x, (kernel,), {"mode": mode, "count_include_pad": options["count_include_pad"]},
                    kernel, options["stride"], options["padding"], options["dilation"], options["ceil_mode"],
                    None, x.dtype, "cpu", token="cnnlab-pool2d")


def per_sample_op(function, x, args, kwargs):
    """Run the in-memory op ``function`` of :mod:`cnnlab.functional` whose output rows depend on
    the same samples only on a dask array: chunk by chunk along the batch axis
    (:func:`map_batches`). Called by :func:`cnnlab.functional.dispatch.per_sample`.

    Parameters
    ----------
    function : callable
        The undecorated in-memory op.
    x : dask.array.Array
    args : tuple
    kwargs : dict

    Returns
    -------
    dask.array.Array
    """
    return map_batches(function, x, *args, **kwargs)


def elementwise_op(function, x, args, kwargs):
    """Run the in-memory element-wise op ``function`` (an activation) on a dask array chunk by
    chunk whatever the chunking (so it runs between spatially chunked convolutions and
    poolings). Called by :func:`cnnlab.functional.dispatch.elementwise`.

    Parameters
    ----------
    function : callable
        The undecorated in-memory op.
    x : dask.array.Array
    args : tuple
    kwargs : dict

    Returns
    -------
    dask.array.Array
    """
    if not _chunked_across_samples(x):
        return map_batches(function, x, *args, **kwargs)
    dask, da = _dask_modules()
    if any(np.isnan(s) for s in x.shape) or 0 in x.shape:
        return map_batches(function, x, *args, **kwargs)  # its errors
    device = _resolve_device(None, *args, *kwargs.values())
    args = _to_host_values(tuple(args))
    kwargs = dict(zip(kwargs, _to_host_values(tuple(kwargs.values()))))
    probe = np.asarray(_on_device(function, np.zeros((1,) * x.ndim, x.dtype), args, kwargs, device))  # the checks
    packed = dask.delayed((function, args, kwargs, device), traverse=False)
    return da.map_blocks(_run_packed, x, packed, dtype=probe.dtype, meta=np.empty((0,) * x.ndim, probe.dtype),
                         token=f"cnnlab-{function.__name__}")


def _sliding_window_op(on_dask, function, x, args, kwargs):
    """Run the in-memory sliding-window op ``function`` (``conv2d`` or ``pool2d``) on a dask
    array: batch chunks with :func:`map_batches`, blocks across the image with the halo its
    geometry needs (see :func:`map_windows`). Bad arguments give the in-memory errors before
    anything is computed. Called through :func:`cnnlab.functional.dispatch.sliding_window`
    with ``on_dask`` the op kind's function (:func:`_conv2d_on_dask`, :func:`_pool2d_on_dask`).

    Parameters
    ----------
    function : callable
        The undecorated in-memory op.
    x : (N, C, H, W) dask.array.Array
    args : tuple
    kwargs : dict
        The op's other arguments, as given.

    Returns
    -------
    dask.array.Array
    """
    bound = inspect.signature(function).bind(x, *args, **kwargs)
    named = dict(bound.arguments)
    named.pop(next(iter(named)))
    return on_dask(function, x, **named)


def convolution_op(function, x, args, kwargs):
    """:func:`cnnlab.functional.conv2d` (the undecorated ``function``) on a dask ``x``."""
    return _sliding_window_op(_conv2d_on_dask, function, x, args, kwargs)


def pooling_op(function, x, args, kwargs):
    """:func:`cnnlab.functional.pool2d` (the undecorated ``function``) on a dask ``x``."""
    return _sliding_window_op(_pool2d_on_dask, function, x, args, kwargs)


dispatch.register("per_sample", per_sample_op)
dispatch.register("elementwise", elementwise_op)
dispatch.register("convolution", convolution_op)
dispatch.register("pooling", pooling_op)


def _check_model_input(model, x, name="x"):
    """``Model._check_inputs`` on a dask array, without computing it (non-finite values are
    found chunk by chunk, when the chunks are computed)."""
    model._require_classifier("fit, evaluate and predict")
    model._check_batch_axis(x, name)
    kind = np.dtype(x.dtype).kind
    if kind in "biu":
        raise TypeError(f"{name} has integer dtype {x.dtype}: scale 0-255 images with "
                        "cnnlab.data.normalize(images) first")
    if kind != "f":
        raise TypeError(f"{name} must hold float32 or float64 values, got dtype {x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch (N, ...), got shape {x.shape}")
    model.output_shapes(x.shape[1:])
    _check_batch_chunks(x, name)
    if model.input_shape is None:
        model.input_shape = tuple(x.shape[1:])


def _predict_proba_block(batch, model, batch_size):
    return model.predict_proba(batch, batch_size)


def _predict_block(batch, model, batch_size):
    return model.predict(batch, batch_size)


def predict_proba(model, x, batch_size=256):
    """Class probabilities of a dask batch, chunk by chunk: ``model.predict_proba`` per chunk.

    The model is copied (its weights at the time of the call) into the task graph once.

    Parameters
    ----------
    model : cnnlab.Model
        A classifier (one input, one output).
    x : (N, C, H, W) dask.array.Array
        float32 or float64, chunked along the batch axis only.
    batch_size : int
        The in-memory batch size within a chunk.

    Returns
    -------
    dask.array.Array
        ``(N, classes)``, chunked as ``x`` along the batch axis.

    Raises
    ------
    ValueError, TypeError
        As ``Model.predict_proba`` for bad shapes and dtypes; a ``ValueError`` that says how to
        rechunk when ``x`` is chunked along another axis. NaN or infinite values raise the
        in-memory ``ValueError`` when their chunk is computed.
    """
    _check_model_input(model, x)
    classes = model._classes()
    return _batches(_predict_proba_block, x, (model.copy(), batch_size), {}, (classes,),
                    np.dtype(model.dtype), token="cnnlab-predict-proba")


def predict(model, x, batch_size=256):
    """Predicted class indices ``(N,)`` of a dask batch, as a dask array (see
    :func:`predict_proba`)."""
    _check_model_input(model, x)
    return _batches(_predict_block, x, (model.copy(), batch_size), {}, (), np.dtype(np.intp),
                    token="cnnlab-predict")


def _evaluate_block(batch, labels, model, batch_size, loss):
    n = batch.shape[0]
    with kernel_lock():
        scores = model.evaluate(batch, labels, batch_size, loss)
    return np.array([[scores["loss"] * n, scores["accuracy"] * n, n]], dtype=np.float64)


def evaluate(model, x, y, batch_size=256, loss=None):
    """``{'loss': mean loss, 'accuracy': fraction correct}`` of a dask batch, computed chunk
    by chunk on the current Dask scheduler.

    Parameters
    ----------
    model : cnnlab.Model
    x : (N, C, H, W) dask.array.Array
        Chunked along the batch axis only.
    y : (N,) array_like or dask.array.Array
        Integer class labels (a dask array is rechunked to ``x``'s batch chunks).
    batch_size : int
    loss : str, loss object or None
        As ``Model.evaluate``.

    Returns
    -------
    dict
        Python floats, as ``Model.evaluate``.
    """
    from . import losses as losses_module

    dask, da = _dask_modules()
    _check_model_input(model, x)
    samples = x.shape[0]
    if is_dask_array(y):
        if y.ndim != 1 or y.shape[0] != samples:
            raise ValueError(f"x and y must have the same length: {samples} images but y has "
                             f"shape {y.shape}")
        labels = y.rechunk((x.chunks[0],))
    else:
        labels = da.from_array(model._check_labels(y, samples), chunks=(x.chunks[0],))
    loss = losses_module.get(loss or model.loss or "cross_entropy")
    packed = dask.delayed((model.copy(), batch_size, loss), traverse=False)
    parts = da.map_blocks(
        _evaluate_packed, x, labels[(slice(None),) + (None,) * (x.ndim - 1)], packed,
        chunks=((1,) * len(x.chunks[0]), (3,)), drop_axis=list(range(2, x.ndim)) or None,
        dtype=np.float64, meta=np.empty((0, 0), np.float64), token="cnnlab-evaluate",
    )
    total_loss, correct, count = parts.sum(axis=0).compute()
    return {"loss": float(total_loss / count), "accuracy": float(round(correct) / count)}


def _evaluate_packed(batch, labels, packed):
    model, batch_size, loss = packed
    return _evaluate_block(batch, labels.reshape(-1), model, batch_size, loss)


# --- image files ---------------------------------------------------------------------------

_READ_ERRORS = ("raise", "nan")
_LOCAL_SCHEDULERS = ("threads", "processes", "synchronous", "sync", "single-threaded")


def _read_chunk(files, size, color, resize, errors):
    """The images of ``files`` as one (n, C, H, W) float32 block; NaN images for unreadable
    files when ``errors='nan'``."""
    from .data import read_image

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


def read_image_folder(paths, size, color="rgb", resize="stretch", chunk_size=256, errors="raise"):
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
    import numbers
    import os

    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    from .data import _check_color, _check_resize
    from .shapes import pair

    _, da = _dask_modules()
    size = pair("size", size, 1)
    _check_color(color)
    _check_resize(resize)
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
        raise TypeError(f"chunk_size must be an integer, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    if not isinstance(errors, str) or errors not in _READ_ERRORS:
        raise ValueError(f"errors must be 'raise' or 'nan', got {errors!r}")
    from .data import image_files

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
    from .data import standardize

    readable = np.isfinite(batch).reshape(len(batch), -1).all(axis=1)
    out = np.full((len(batch), model._classes()), np.nan, dtype=model.dtype)
    if readable.any():
        x = np.concatenate([standardize(image[None], mean, std)[0] for image in batch[readable]])
        out[readable] = model.predict_proba(x, batch_size)
    return out


def classify_images(model, images, mean=None, std=None, batch_size=256):
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
    _check_model_input(model, images, "images")
    mean = None if mean is None else np.asarray(mean, dtype=np.float64)
    std = None if std is None else np.asarray(std, dtype=np.float64)
    return _batches(_classify_block, images, (model.copy(), mean, std, batch_size), {},
                    (model._classes(),), np.dtype(model.dtype), token="cnnlab-classify-images",
                    name="images")


def compute_chunks(x, scheduler=None):
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
    import os

    dask, _ = _dask_modules()
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
