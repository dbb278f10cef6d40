"""Sliding windows (convolution, pooling) over an (N, C, H, W) dask array chunked across the image."""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import numpy as np

from .. import functional
from ..dispatch import is_dask_array
from ..shapes import axis_output_size, check_flag, check_int, pair, resolve_padding, window_output_shape
from ..types import Any, Array, DaskArray, DTypeLike, IntPair, Padding
from .base import check_known_shape, dask_modules, on_device, resolve_device, to_host_values


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
    span = dilation * (kernel - 1) + 1
    total = axis_output_size(None, size, kernel, stride, before, after, dilation, ceil_mode)
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
    return on_device(function, block, args, dict(kwargs, padding=padding), device)


def _minimum_chunks(chunks, reach):
    """Chunks of at least ``reach`` rows (merging as few as possible), so that a block's
    windows reach no further than the chunks either side of its own."""
    from dask.array.overlap import ensure_minimum_chunksize

    if len(chunks) == 1 or min(chunks) >= reach:
        return chunks
    if sum(chunks) <= reach:
        return (sum(chunks),)
    return ensure_minimum_chunksize(reach, chunks)


def window_blocks(function, x, args, kwargs, kernel, stride, padding, dilation, ceil_mode, out_channels,
             dtype, device, token):
    """The dask array of a sliding-window op on ``x`` (N, C, H, W), block by block.

    ``function(block, *args, stride=, padding=, dilation=, [ceil_mode=,] **kwargs)`` is the
    in-memory op; ``padding`` is resolved ``((top, bottom), (left, right))``; ``ceil_mode``
    None means the op has none. ``out_channels`` None: output channel ``c`` depends on input
    channel ``c`` only (pooling), and the channel chunks stay; an int: every input channel is
    needed (convolution), and the channel axis is made one chunk.
    """
    dask, da = dask_modules()
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


def check_network_input(name, x, ndim=4):
    """The in-memory checks of a network op's input (``as_float_array``) on a dask array's
    dtype and shape, with the same messages, without computing it."""
    functional.as_float_array(name, np.empty((1,) * x.ndim, x.dtype))  # dtype: the in-memory errors
    if x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    check_known_shape(name, x)


def chunked_across_samples(x):
    """Whether ``x`` is chunked along an axis other than the batch axis."""
    return any(len(c) > 1 for c in x.chunks[1:])


def map_windows(function: Callable[..., Array], x: DaskArray, *args: Any, kernel_size: IntPair, stride: IntPair = 1,
                padding: Padding = 0, dilation: IntPair = 1, ceil_mode: bool | None = None,
                out_channels: int | None = None, dtype: DTypeLike = None, device: str | None = None,
                **kwargs: Any) -> DaskArray:
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
    dask_modules()
    if not is_dask_array(x):
        raise TypeError(f"x must be a dask array, got {type(x).__name__}")
    if not callable(function):
        raise TypeError(f"function must be callable, got {type(function).__name__}")
    if x.ndim != 4:
        raise ValueError(f"x must have 4 dimensions (N, C, H, W), got shape {tuple(x.shape)}")
    check_known_shape("x", x)
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
    device = resolve_device(device, *args, *kwargs.values())
    args = to_host_values(tuple(args))
    kwargs = dict(zip(kwargs, to_host_values(tuple(kwargs.values()))))
    dtype = np.dtype(x.dtype if dtype is None else dtype)
    name = getattr(function, "__name__", "function")
    return window_blocks(function, x, args, kwargs, kernel, stride, pads, dilation, ceil_mode, out_channels,
                    dtype, device, token=f"cnnlab-map-windows-{name}")
