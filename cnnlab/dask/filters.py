"""Image filters on dask arrays: a halo as deep as the kernel's reach between chunks."""

from __future__ import annotations

import numpy as np

from .. import filters as image_filters
from ..device import to_host
from ..dispatch import is_dask_array
from ..types import Array, DaskArray
from .base import check_known_shape, dask_modules, on_device, resolve_device


def _check_image(name, x, ndims, kinds):
    """The in-memory checks on a dask array's shape and dtype, without computing it."""
    shapes = " or ".join("(H, W)" if n == 2 else "(H, W, C)" for n in ndims)
    if x.ndim not in ndims:
        if ndims == (2,):
            raise ValueError(f"{name} must be a 2-D array, got shape {tuple(x.shape)}")
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(x.shape)}")
    if np.dtype(x.dtype).kind not in kinds:
        raise TypeError(f"{name} must be numeric, got dtype {x.dtype}")
    check_known_shape(name, x)


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
    function = image_filters.convolve2d if flip else image_filters.correlate2d
    valid = {"mode": "valid"}
    if not channels:
        return on_device(function, block[crop], (weights,), valid, device)
    return np.stack([on_device(function, block[crop + (c,)], (weights,), valid, device)
                     for c in range(block.shape[2])], axis=-1)


def _filter(in1, in2, mode, boundary, fillvalue, flip, channels=False, name="in1", device=None):
    dask, da = dask_modules()
    if is_dask_array(in2):
        raise TypeError("in2 (the kernel) must be an in-memory array, got a dask array: pass "
                        "in2.compute() (kernels are small)")
    weights = image_filters.as_2d("in2", in2)
    device = resolve_device(device, weights)
    dtype, fill = image_filters.check_arguments(in1.dtype, weights.dtype, mode, boundary, fillvalue)
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
    weights = np.ascontiguousarray(to_host(weights).astype(dtype, copy=False))
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


def correlate2d(in1: DaskArray, in2: Array, mode: str = "full", boundary: str = "fill", fillvalue: float = 0,
                device: str | None = None) -> DaskArray:
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
    dask_modules()
    _check_image("in1", in1, (2,), "iufcb")
    return _filter(in1, in2, mode, boundary, fillvalue, flip=False, device=device)


def convolve2d(in1: DaskArray, in2: Array, mode: str = "full", boundary: str = "fill", fillvalue: float = 0,
               device: str | None = None) -> DaskArray:
    """Convolve a 2-D dask array with an in-memory kernel, chunk by chunk.

    Parameters, returns and errors as :func:`correlate2d`; the result equals
    :func:`cnnlab.filters.convolve2d` on the computed array.
    """
    dask_modules()
    _check_image("in1", in1, (2,), "iufcb")
    return _filter(in1, in2, mode, boundary, fillvalue, flip=True, device=device)


def apply(image: DaskArray, kernel: str | Array, mode: str = "same", boundary: str = "fill", fillvalue: float = 0,
          device: str | None = None) -> DaskArray:
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
    dask_modules()
    if isinstance(kernel, str):
        if kernel not in image_filters.KERNELS:
            raise ValueError(f"kernel must be one of {sorted(image_filters.KERNELS)} or an array, got {kernel!r}")
        kernel = image_filters.KERNELS[kernel]
    _check_image("image", image, (2, 3), "biuf")
    dtype = np.float32 if image.dtype == np.float32 else np.float64
    if is_dask_array(kernel):
        raise TypeError("kernel must be an in-memory array, got a dask array: pass kernel.compute()")
    device = resolve_device(device, kernel)
    weights = to_host(kernel).astype(dtype)
    return _filter(image.astype(dtype), weights, mode, boundary, fillvalue, flip=False,
                   channels=image.ndim == 3, name="image", device=device)
