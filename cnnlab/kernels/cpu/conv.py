"""CPU convolution: im2col per sample into a per-thread buffer, then one BLAS GEMM.

For sample ``n`` and group ``g`` the column buffer has one row per filter tap
``(c, i, j)`` and one column per output pixel ``(oh, ow)``; the output planes
of every filter of the group are then a single matrix product
``weight[g] (Fg, Cg*KH*KW) @ columns (Cg*KH*KW, OH*OW)`` written straight
into ``out[n, g*Fg:(g+1)*Fg]``.  Threads take whole (sample, group, row
block) work items, so no two threads write the same output; the GEMM runs
single-threaded inside each thread (the dispatch layer limits the BLAS
thread pool while this kernel runs).

A work item normally covers all output rows of a sample.  When the column
buffer of a whole sample would be too large, the dispatch layer passes a
smaller ``block_rows``; the product then goes through a small buffer. At a stride, and at
stride 1 for narrow layers, the columns are copied through the stride's polyphase planes
(:func:`_by_planes`).

The backward kernels: :func:`conv2d_backward_weight` (im2col, then one GEMM per item against
the output gradient, split between threads by samples or, for large gradients, by blocks of
input channels) and :func:`conv2d_backward_input` (the column gradient by GEMM, then col2im).
At stride 1 the functional layer computes the input gradient as a forward convolution with
:func:`conv2d_flipped_weight`'s weight instead, where that is faster
(:func:`cnnlab.functional.conv.input_gradient`).

On a processor with AVX2 and FMA, a convolution at stride 1 or 2 whose weights fit the L2 cache
skips both im2col and BLAS (:func:`_by_panels`): :func:`_panel_forward_items` multiplies the
weights straight from the input's polyphase planes, a panel of columns at a time, by a vector
micro-kernel (:mod:`._microkernel`); so do the small outputs' path
(:func:`_interleaved_by_panels`) and the weight gradient (:func:`_weight_gradient_by_panels`).
A 3x3 convolution at stride 1 with enough channels and tiles takes Winograd's F(2x2, 3x3)
instead (:mod:`._winograd`, chosen by :func:`by_winograd`): 16 multiply-adds a 2x2 block of
outputs and channel where the others take 36. With AVX-512, float32 convolutions of enough
filters go by strips of 8 output pixels and 32 filters, the channels a chunk at a time
(:mod:`._strips`, :func:`by_strips`, looked at after F(2x2, 3x3) and before the panels), and
others a tile fits by tiles of 16 pixels and 16 filters (:mod:`._tiles`, :func:`by_tiles`).

Three kinds of convolution take other paths: a 1x1 convolution at stride 1 needs no im2col (its
input is its column matrix); a depthwise one, or one with few input channels per group, is
computed directly from the input's polyphase planes with no GEMM (:func:`_direct_forward_items`,
chosen by :func:`_is_direct`); and small outputs (:func:`_samples_innermost`), taken a block
of samples at a time, are copied with the samples innermost, so that each tap's columns are
long contiguous runs (:func:`_interleaved_forward_items`).

Each kernel is a plain function that runs its serial ``_..._items`` worker (``nogil``) on the
calling thread when there is one worker (small work: see ``cnnlab.functional.cpu_workers``), or
on several threads at once, each a contiguous share of the items
(:func:`cnnlab.kernels.cpu._schedule.run_shared`).

Every forward path ends with the same fused epilogue on each output row (:func:`_finish_row`):
``out = act(scale[f] * acc + shift[f] + residual)``, so a bias, a folded batch normalization,
a residual addition and an activation cost no extra pass over memory. The activation codes
are :data:`cnnlab.functional.EPILOGUE_ACTIVATIONS`'s.

Mirrors :mod:`cnnlab.kernels.cuda.conv`.
"""

import math
import os
import weakref

import numpy as np
from numba import njit

from ... import config
from .. import (
    EPILOGUE_CLIP,
    EPILOGUE_MASK,
    EPILOGUE_NONE,
)
from . import _strips, _tiles, _winograd
from ._blas import gemm_rows, gemm_rows_bt, small_gemm_limit
from ._epilogue import _finish_row
from ._microkernel import (
    DOT_ROWS,
    DOT_TAPS,
    MR,
    PANEL_BYTES,
    VECTOR_BYTES,
    flush_denormals,
    pack_rows,
    restore_denormals,
    tap_dots,
    tap_product,
    tap_rows,
    window_offsets,
)
from ._microkernel import available as panels_available
from ._planes import (
    DIRECT_SPARE,
    _fill_planes,
    _plane_extent,
    _planes_layout,
    _planes_tap_offsets,
)
from ._schedule import (
    _sum_over_workers,
    compiled_address,
    edges,
    pieces,
    run_on_layer,
    run_pieces,
    run_shared,
    run_split,
    shares,
)
from ._strips import STRIP, _strip_forward_items, before_winograd, by_strips, strip_geometry, strip_weights, strip_work
from ._tiles import _tile_forward_items, by_tiles, tile_weights, tile_work
from ._winograd import _winograd_forward_items, by_winograd, winograd_items, winograd_weights
from .activation import _float64_sum
from .pool import _global_avg_planes

__all__ = ["conv2d_backward_input", "conv2d_backward_weight", "conv2d_flipped_weight", "conv2d_forward"]  # the kernels of this file


#: column 0, as a plain int64 rather than the constant 0: a call with a constant argument
#: compiles the callee again, specialized to it (the copies below, for the weight gradient's
#: calls: 1.5 s of a cold first run)
FIRST = np.int64(0)


@njit(cache=True)
def _im2col(x, n, first_channel, first_row, rows, columns, kernel_h, kernel_w, out_w,
            stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, first_column=0):
    """Fill ``columns[:, first_column:first_column + rows*out_w]`` with the pixels each tap
    sees, output rows ``first_row .. first_row+rows`` of sample ``n``; padding reads as zero.

    Each tap's range of output columns that read inside the input row (``lo .. hi``) is worked
    out once, so that each row is a zero fill, a copy without bounds tests and a zero fill, all
    indexed by unsigned integers (no test for negative indices): loops the compiler vectorizes.
    A bounds test per value ran two to three times slower (``bench/small_kernels.py``'s im2col
    row)."""
    height, width = x.shape[2], x.shape[3]
    first_column = max(first_column, 0)
    for tap in range(columns.shape[0]):
        channel = first_channel + tap // (kernel_h * kernel_w)
        i = (tap // kernel_w) % kernel_h
        offset = (tap % kernel_w) * dilation_w - pad_w  # the input column of output column ow: ow * stride_w + offset
        lo = min(out_w, -(offset // stride_w) if offset < 0 else 0)
        hi = max(lo, min(out_w, (width - 1 - offset) // stride_w + 1)) if offset < width else lo
        target = columns[tap]
        for r in range(rows):
            h = (first_row + r) * stride_h - pad_h + i * dilation_h
            start = first_column + r * out_w
            if h < 0 or h >= height:
                for ow in range(out_w):
                    target[np.uint64(start + ow)] = 0
                continue
            source = x[n, channel, h]
            for ow in range(lo):
                target[np.uint64(start + ow)] = 0
            if stride_w == 1:
                for ow in range(lo, hi):
                    target[np.uint64(start + ow)] = source[np.uint64(ow + offset)]
            else:
                for ow in range(lo, hi):
                    target[np.uint64(start + ow)] = source[np.uint64(ow * stride_w + offset)]
            for ow in range(hi, out_w):
                target[np.uint64(start + ow)] = 0


@njit(cache=True)
def _im2col_one_column(x, n, first_channel, first_row, rows, columns, kernel_h, kernel_w, stride_h, pad_h, pad_w,
                       dilation_h, dilation_w, first_column):
    """:func:`_im2col` for an output one column wide (a 1-D convolution along the height, as a
    byte classifier's): one pass down the rows per tap, instead of a row loop one element long
    per row (about 5 ns a row)."""
    height, width = x.shape[2], x.shape[3]
    first_column = max(first_column, 0)
    for tap in range(columns.shape[0]):
        channel = first_channel + tap // (kernel_h * kernel_w)
        i = (tap // kernel_w) % kernel_h
        w = (tap % kernel_w) * dilation_w - pad_w
        if w < 0 or w >= width:
            for r in range(rows):
                columns[tap, first_column + r] = 0
            continue
        for r in range(rows):
            h = (first_row + r) * stride_h - pad_h + i * dilation_h
            columns[tap, first_column + r] = x[n, channel, h, w] if 0 <= h < height else 0


@njit(cache=True)
def _columns(x, n, first_channel, first_row, rows, columns, kernel_h, kernel_w, out_w, stride_h, stride_w,
             pad_h, pad_w, dilation_h, dilation_w, first_column):
    """:func:`_im2col`'s copy, or :func:`_im2col_one_column`'s for an output one column wide (a
    separate function: a branch inside :func:`_im2col` slowed its 2-D copy down)."""
    if out_w == 1:
        _im2col_one_column(x, n, first_channel, first_row, rows, columns, kernel_h, kernel_w, stride_h, pad_h,
                           pad_w, dilation_h, dilation_w, first_column)
    else:
        _im2col(x, n, first_channel, first_row, rows, columns, kernel_h, kernel_w, out_w, stride_h, stride_w,
                pad_h, pad_w, dilation_h, dilation_w, first_column)


@njit(cache=True)
def _gemm_in_small_pieces(m, n, k, a, lda, b, ldb, beta, c, ldc, limit):
    """Row-major ``c[:m, :n] = a[:m, :k] @ b[:k, :n] + beta * c[:m, :n]`` (:func:`gemm_rows`:
    blocks given by their first element and the distance between rows; ``beta`` 0 or 1) by BLAS
    GEMMs of at most ``limit`` multiply-adds each, where the BLAS runs those through its
    small-matrix kernel (``limit`` from :func:`small_gemm_limit`; 0: one GEMM).

    The pieces: blocks of 32 rows of ``a`` (filters, or taps), ``k`` in equal parts of at most
    what a block by 64 columns allows (each part after the first adds onto the product), and
    tiles of columns as wide as the limit then allows, a multiple of 16. The tile is the outer
    loop, so that its columns stay in cache for every block, and a block's parts the inner one,
    so that its product does. One GEMM where the product is that small already."""
    if m * n * k <= limit or limit == 0:
        gemm_rows(m, n, k, a, lda, b, ldb, beta, c, ldc)
        return
    rows = min(m, 32)
    parts = -(-k // max(1, limit // (rows * 64)))
    depth = -(-k // parts)
    tile = max(16, limit // (rows * depth) // 16 * 16)
    for first in range(0, n, tile):
        width = min(tile, n - first)
        for f in range(0, m, rows):
            for d in range(0, k, depth):
                gemm_rows(min(rows, m - f), width, min(depth, k - d), a[f:, d:], lda, b[d:, first:], ldb,
                          beta if d == 0 else 1.0, c[f:, first:], ldc)


@njit(cache=True)
def _matmul_in_small_pieces(a, b, out, limit):
    """``out = a @ b`` (C-contiguous matrices) by :func:`_gemm_in_small_pieces`."""
    m, k = a.shape
    n = b.shape[1]
    _gemm_in_small_pieces(m, n, k, a, k, b, n, 0.0, out, n, limit)


@njit(cache=True, nogil=True)
def _conv2d_forward_items(x, weight, scale, shift, residual, has_residual, activation, low, high, out,
                          stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, block_rows,
                          filter_blocks, sample_block, planes, small_gemm, first_item, last_item):
    """Work items ``first_item .. last_item-1`` of :func:`conv2d_forward`, one after another
    (serial: one thread's share, with its own column and product buffers). An item is a
    (block of samples, group, block of output rows, block of filters); consecutive items of one
    row block reuse its columns. Several samples per item (small outputs: deep layers, LeNet)
    put their columns side by side, so that one wider GEMM serves them all.

    With ``planes`` (where :func:`_by_planes` says so; :func:`_im2col_by_planes`),
    each channel's input rows are first split into the stride's polyphase planes, and each tap's
    columns are one contiguous copy from them, ``pitch`` columns per output row (the output's
    width and a few more); the GEMM computes those few more too, and only the output's columns
    are copied out.

    ``small_gemm``: the GEMMs are cut to this many multiply-adds each
    (:func:`_matmul_in_small_pieces`; 0: not cut)."""
    before = flush_denormals()  # (denormal inputs read as zero: the docstring of flush_denormals)
    samples = x.shape[0]
    filters, channels_per_group, kernel_h, kernel_w = weight.shape
    out_h, out_w = out.shape[2], out.shape[3]
    filters_per_group = filters // groups
    taps = channels_per_group * kernel_h * kernel_w
    weight_by_group = weight.reshape(groups, filters_per_group, taps)
    out_by_group = out.reshape(samples, groups, filters_per_group, out_h * out_w)
    residual_by_group = residual.reshape(samples, groups, filters_per_group, out_h * out_w)
    blocks = (out_h + block_rows - 1) // block_rows
    per_block = (filters_per_group + filter_blocks - 1) // filter_blocks
    # the planes' buffer (of no channels, and its rows the output's, without planes)
    pitch, plane_rows, channel_size, padded, offsets = _planes_layout(x, channels_per_group if planes else 0,
                                                                      block_rows, out_w, kernel_h, kernel_w,
                                                                      stride_h, stride_w, dilation_h, dilation_w)
    if not planes:
        pitch = out_w
    width = sample_block * block_rows * pitch  # columns of one item
    column_buffer = np.empty(taps * width, dtype=x.dtype)
    product_buffer = np.empty(min(per_block, filters_per_group) * width, dtype=x.dtype)
    filled = -1  # the (sample block, group, row block) whose columns the buffer holds
    for item in range(first_item, last_item):
        piece = item // filter_blocks
        n0 = (piece // (groups * blocks)) * sample_block
        g = (piece // blocks) % groups
        first_row = (piece % blocks) * block_rows
        f0 = (item % filter_blocks) * per_block
        f1 = min(filters_per_group, f0 + per_block)
        if f0 >= f1:
            continue
        count = min(sample_block, samples - n0)
        rows = min(block_rows, out_h - first_row)
        pixels = rows * out_w
        wide = rows * pitch  # a sample's columns in the buffer
        first_pixel = first_row * out_w
        columns = column_buffer[:taps * count * wide].reshape(taps, count * wide)
        if piece != filled:
            for s in range(count):
                if planes:
                    _im2col_by_planes(x, n0 + s, g * channels_per_group, first_row, rows, columns, kernel_h,
                                      stride_h, stride_w, pad_h, pad_w, dilation_h, padded, channel_size, pitch,
                                      plane_rows, offsets, s * wide)
                else:
                    _columns(x, n0 + s, g * channels_per_group, first_row, rows, columns, kernel_h, kernel_w,
                             out_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, s * pixels)
            filled = piece
        if count == 1 and rows == out_h and not planes:  # the product is the output planes themselves
            _matmul_in_small_pieces(weight_by_group[g, f0:f1], columns, out_by_group[n0, g, f0:f1], small_gemm)
        else:
            product = product_buffer[:(f1 - f0) * count * wide].reshape(f1 - f0, count * wide)
            _matmul_in_small_pieces(weight_by_group[g, f0:f1], columns, product, small_gemm)
            for s in range(count):
                planes_out = out_by_group[n0 + s, g]
                for f in range(f1 - f0):
                    target = planes_out[f0 + f, first_pixel:first_pixel + pixels]
                    source = product[f, s * wide:(s + 1) * wide]
                    for r in range(rows):
                        for k in range(out_w):
                            target[np.uint64(r * out_w + k)] = source[np.uint64(r * pitch + k)]
        for s in range(count):
            planes_out = out_by_group[n0 + s, g]
            for f in range(f0, f1):
                k = g * filters_per_group + f
                _finish_row(planes_out[f, first_pixel:first_pixel + pixels],
                            residual_by_group[n0 + s, g, f, first_pixel:first_pixel + pixels], has_residual,
                            scale[k], shift[k], activation, low, high)
    restore_denormals(before)


@njit(cache=True)
def _im2col_by_planes(x, n, first_channel, first_row, rows, columns, kernel_h, stride_h, stride_w, pad_h, pad_w,
                      dilation_h, padded, channel_size, pitch, plane_rows, offsets, first_column):
    """:func:`_im2col` through polyphase planes: output rows ``first_row .. first_row+rows`` of
    sample ``n``, ``pitch`` columns per output row (those past the output's width are computed
    and dropped). Each channel's input rows go, zero-padded, into its stride's planes in
    ``padded`` (:func:`_fill_planes`); each tap's columns are then one contiguous copy of
    ``rows * pitch`` values from the plane it reads, at its offset (:func:`_tap_offsets`),
    instead of a short copy per output row."""
    kernel_w = offsets.shape[1]
    window = kernel_h * kernel_w
    length = rows * pitch
    first_column = max(first_column, 0)
    for c in range(columns.shape[0] // window):
        base = c * channel_size
        _fill_planes(x[n, first_channel + c], first_row * stride_h - pad_h,
                     (rows - 1) * stride_h + (kernel_h - 1) * dilation_h + 1, pad_w, padded, base, pitch,
                     plane_rows, stride_h, stride_w)
        for i in range(kernel_h):
            for j in range(kernel_w):
                start = np.uint64(base) + offsets[i, j]
                row = columns[c * window + i * kernel_w + j]
                for k in range(length):
                    row[np.uint64(first_column + k)] = padded[start + np.uint64(k)]


@njit(cache=True, nogil=True)
def _pointwise_forward_items(x, weight, scale, shift, residual, has_residual, activation, low, high, out,
                             groups, blocks, by_filters, small_gemm, first_item, last_item):
    """Items of a 1x1 convolution with stride 1 and no padding: ``weight[g] @ x[n, g]`` straight
    on the input, whose (channels, H*W) view is already the column matrix (no im2col). An item
    is a (sample, group, block): the blocks split the pixels (each GEMM reads only its columns
    of the input and writes its columns of the output, through :func:`gemm_rows`), or, with
    ``by_filters`` (few pixels, many filters: deep layers), the filters. The GEMMs are cut to
    ``small_gemm`` multiply-adds a piece (:func:`_gemm_in_small_pieces`)."""
    before = flush_denormals()  # (denormal inputs read as zero: the docstring of flush_denormals)
    samples, channels = x.shape[0], x.shape[1]
    filters = weight.shape[0]
    filters_per_group, channels_per_group = filters // groups, channels // groups
    pixels = out.shape[2] * out.shape[3]
    x_by_group = x.reshape(samples, groups, channels_per_group, pixels)
    weight_by_group = weight.reshape(groups, filters_per_group, channels_per_group)
    out_by_group = out.reshape(samples, groups, filters_per_group, pixels)
    residual_by_group = residual.reshape(samples, groups, filters_per_group, pixels)
    size = filters_per_group if by_filters else pixels
    per_block = (size + blocks - 1) // blocks
    for item in range(first_item, last_item):
        n = item // (groups * blocks)
        g = (item // blocks) % groups
        first = (item % blocks) * per_block
        last = min(size, first + per_block)
        if first >= last:
            continue
        if by_filters:
            _matmul_in_small_pieces(weight_by_group[g, first:last], x_by_group[n, g], out_by_group[n, g, first:last],
                                   small_gemm)
            f0, f1, p0, p1 = first, last, 0, pixels
        else:
            _gemm_in_small_pieces(filters_per_group, last - first, channels_per_group, weight_by_group[g],
                                  channels_per_group, x_by_group[n, g, :, first:], pixels, 0.0,
                                  out_by_group[n, g, :, first:], pixels, small_gemm)
            f0, f1, p0, p1 = 0, filters_per_group, first, last
        for f in range(f0, f1):
            k = g * filters_per_group + f
            _finish_row(out_by_group[n, g, f, p0:p1], residual_by_group[n, g, f, p0:p1], has_residual,
                        scale[k], shift[k], activation, low, high)
    restore_denormals(before)


@njit(cache=True, nogil=True)
def _pointwise_rows_items(x, weight, scale, shift, residual, has_residual, activation, low, high, out,
                          groups, blocks, by_filters, chunk_bytes, first_item, last_item):
    """Items of a 1x1 convolution with stride 1 and no padding by :func:`tap_rows`: ``MR``
    filters of the weights as they lie against a panel of the input's planes as they lie, no
    copy of either (OpenBLAS packs both at every call). The items are those of
    :func:`_pointwise_forward_items` (a sample, a group and a block of its pixels or, with
    ``by_filters``, of its filters), their blocks cut at whole vectors of pixels or ``MR``
    filters; a last block of pixels narrower than a vector goes to the block before it. An
    item's pixels are taken in chunks whose input and output columns fit in ``chunk_bytes``
    (:func:`_pointwise_chunk_columns`). Without an activation or with a clip (ReLU, ReLU6) the
    kernel writes each value finished; otherwise a chunk's rows are finished by the epilogue
    after its products, while they are in the cache."""
    before = flush_denormals()  # (denormal inputs read as zero: the docstring of flush_denormals)
    samples, channels = x.shape[0], x.shape[1]
    filters = weight.shape[0]
    filters_per_group, channels_per_group = filters // groups, channels // groups
    pixels = out.shape[2] * out.shape[3]
    lanes = VECTOR_BYTES // x.itemsize
    nr = PANEL_BYTES // x.itemsize
    in_kernel = activation == EPILOGUE_NONE or activation == EPILOGUE_CLIP
    flat = (x.reshape(-1), weight.reshape(-1), out.reshape(-1), residual.reshape(-1))
    residual_by_group = residual.reshape(samples, groups, filters_per_group, pixels)
    out_by_group = out.reshape(samples, groups, filters_per_group, pixels)
    unit = MR if by_filters else lanes
    size = filters_per_group if by_filters else pixels
    per_block = ((size + blocks - 1) // blocks + unit - 1) // unit * unit
    for item in range(first_item, last_item):
        n = item // (groups * blocks)
        g = (item // blocks) % groups
        first = (item % blocks) * per_block
        last = min(size, first + per_block)
        if not by_filters:
            if first > 0 and size - first < lanes:
                continue  # (taken by the block before)
            if size - last < lanes:
                last = size
        if first >= last:
            continue
        f0, f1, p0, p1 = (first, last, 0, pixels) if by_filters else (0, filters_per_group, first, last)
        chunk = _pointwise_chunk_columns(channels_per_group + f1 - f0, x.itemsize, chunk_bytes, nr)
        first_filter = g * filters_per_group + f0
        for c0 in range(p0, p1, chunk):
            c1 = min(p1, c0 + chunk)
            if c1 < p1 and p1 - c1 < lanes:
                c1 = p1  # (no chunk narrower than a vector)
            _pointwise_rows_chunk(flat, first_filter, f1 - f0, channels_per_group,
                                  (n * channels + g * channels_per_group) * pixels + c0, pixels, c1 - c0,
                                  (n * filters + first_filter) * pixels + c0, scale, shift, in_kernel, has_residual,
                                  activation == EPILOGUE_CLIP, low, high)
            if not in_kernel:
                for f in range(f0, f1):
                    k = g * filters_per_group + f
                    _finish_row(out_by_group[n, g, f, c0:c1], residual_by_group[n, g, f, c0:c1], has_residual,
                                scale[k], shift[k], activation, low, high)
            if c1 == p1:
                break
    restore_denormals(before)


@njit(cache=True)
def _pointwise_rows_chunk(flat, first_filter, filters, channels, x_start, pixels, columns, o_start, scale, shift,
                          finish, has_residual, clip, low, high):
    """``out[o_start + f * pixels + q] = sum_c weight[(first_filter + f) * channels + c] * x[x_start
    + c * pixels + q]`` for the ``filters`` filters ``f`` and the ``columns`` pixels ``q`` (at
    least a vector's lanes), ``flat`` the flat ``(x, weight, out, residual)``, finished with
    ``finish`` as :func:`tap_rows` says: ``MR`` filters at a time, against panels of at most
    ``panel_width`` pixels, the last two of a chunk that is not whole panels split so that each
    holds a vector."""
    x, weight, out, residual = flat
    lanes = VECTOR_BYTES // x.itemsize
    nr = PANEL_BYTES // x.itemsize
    steps = np.arange(channels).astype(np.uint64) * np.uint64(pixels)
    for f in range(0, filters, MR):
        s = 0
        while s < columns:
            left = columns - s
            width = nr if left >= nr + lanes or left == nr else (left if left <= nr else nr - lanes)
            at = o_start + f * pixels + s
            tap_rows(weight, (first_filter + f) * channels, channels, 1, min(MR, filters - f), x, x_start + s, steps, 0,
                     width, out, at, pixels, channels, False, scale, shift, first_filter + f, residual, at, finish,
                     has_residual, clip, low, high)
            s += width


@njit(cache=True)
def _pointwise_chunk_columns(rows, itemsize, chunk_bytes, nr):
    """Pixels a chunk of :func:`_pointwise_rows_items` takes: whole panels (``nr`` pixels) of
    ``rows`` values each (input channels and the item's filters), within ``chunk_bytes``; at
    least one panel."""
    return max(1, chunk_bytes // max(1, rows * itemsize * nr)) * nr


@njit(cache=True, nogil=True)
def _direct_forward_items(x, weight, scale, shift, residual, has_residual, activation, low, high, out,
                          stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, block_rows,
                          first_item, last_item):
    """Items of a convolution computed directly from the input planes, with no column buffer and
    no GEMM: a depthwise convolution (one filter per input channel, where the GEMM would be a
    1 x taps matrix per channel) and one with few input channels per group (an RGB stem, where
    the GEMM's inner dimension would be only ``channels x taps``). An item is a (sample, group,
    block of output rows), for every filter of the group.

    The item's input rows of each of the group's channels are first copied, zero-padded, into a
    buffer split by the stride into its polyphase planes (:func:`_fill_planes`):
    plane ``(a, b)`` holds the padded rows ``a, a + stride_h, ...`` and, of each, the columns
    ``b, b + stride_w, ...``, every plane row ``pitch`` wide (about the output's width). Each tap
    then reads one plane as the output rows read it, shifted by a constant
    (:func:`_tap_offsets`): a filter's output rows are computed ``pitch`` wide, back to back, in
    one long loop per channel and tap (a 3x3 window's nine taps, or a window row's 3 or 5 taps,
    summed in one loop), with no border test and no strided read, so the loops vectorize
    whatever the stride, dilation and plane size (:func:`_direct_taps`); they run a multiple of
    ``DIRECT_SPARE`` long, past the rows' end into the buffers' spare room, so that no scalar
    tail is left (on 7x7 and 14x14 planes the tail was a third of the loop). Without a residual
    the epilogue runs over those wide rows before the valid columns are copied out; with one,
    once over the item's rows after. A depthwise layer of 960 channels at 7x7 took 183 us on
    one thread before these two, 150 after (scratch)."""
    before = flush_denormals()  # (denormal inputs read as zero: the docstring of flush_denormals)
    per_group = weight.shape[1]
    filters_per_group = weight.shape[0] // groups
    kernel_h, kernel_w = weight.shape[2], weight.shape[3]
    out_h, out_w = out.shape[2], out.shape[3]
    blocks = (out_h + block_rows - 1) // block_rows
    out_planes = out.reshape(out.shape[0], weight.shape[0], out_h * out_w)
    residual_planes = residual.reshape(out.shape[0], weight.shape[0], out_h * out_w)
    pitch, plane_rows, channel_size, padded, offsets = _planes_layout(x, per_group, block_rows, out_w, kernel_h,
                                                                      kernel_w, stride_h, stride_w, dilation_h,
                                                                      dilation_w)
    wide = np.empty(block_rows * pitch + DIRECT_SPARE, x.dtype)
    reads_residual = has_residual or activation == EPILOGUE_MASK  # (laid out as the output, not as wide)
    # a depthwise 3x3 layer's clip (ReLU, ReLU6) in its taps loop: one pass over the row buffer less
    clipped_in_taps = per_group == 1 and kernel_h == kernel_w == 3 and activation == EPILOGUE_CLIP \
        and not reads_residual
    for item in range(first_item, last_item):
        n = item // (groups * blocks)
        g = (item // blocks) % groups
        first_row = (item % blocks) * block_rows
        rows = min(out_h, first_row + block_rows) - first_row
        length = (rows * pitch + DIRECT_SPARE - 1) // DIRECT_SPARE * DIRECT_SPARE  # whole vectors: no scalar tail
        for c in range(per_group):
            _fill_planes(x[n, g * per_group + c], first_row * stride_h - pad_h,
                         (rows - 1) * stride_h + (kernel_h - 1) * dilation_h + 1, pad_w, padded, c * channel_size,
                         pitch, plane_rows, stride_h, stride_w)
        for f in range(g * filters_per_group, (g + 1) * filters_per_group):
            if clipped_in_taps:
                _clipped_taps_3x3(padded, offsets, weight[f, 0], wide, length, scale[f], shift[f], low, high)
            else:
                for c in range(per_group):
                    _direct_taps(padded, c * channel_size, offsets, weight[f, c], wide, length, c > 0)
                if not reads_residual:  # the epilogue over the wide rows, one vector loop, before the copy
                    _finish_row(wide[:length], wide, False, scale[f], shift[f], activation, low, high)
            span = out_planes[n, f, first_row * out_w:(first_row + rows) * out_w]
            for r in range(rows):
                for k in range(out_w):
                    span[np.uint64(r * out_w + k)] = wide[np.uint64(r * pitch + k)]
            if reads_residual:  # the epilogue once over the item's rows, contiguous in the output plane
                _finish_row(span, residual_planes[n, f, first_row * out_w:(first_row + rows) * out_w], has_residual,
                            scale[f], shift[f], activation, low, high)
    restore_denormals(before)


#: the channels a :func:`_depthwise_blocks_items` item computes side by side (a 512-bit vector of
#: float32 values; two of float64)
CHANNEL_BLOCK = 16


@njit(cache=True, nogil=True)
def _depthwise_blocks_items(x, weight, scale, shift, residual, has_residual, activation, low, high, out,
                            stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, block_rows,
                            first_item, last_item):
    """Items of a depthwise 3x3 convolution (one filter per channel) computed for
    ``CHANNEL_BLOCK`` channels at once, the channels innermost: an item is a (sample, block of
    channels), its whole output planes. Where the planes are small, :func:`_direct_forward_items`
    pays its set-up (a padded copy of the rows, a loop per channel and tap, a copy out) per
    channel and row, and at stride 2 a copy that splits every row into its two phases.

    Here the block's input is gathered once into a zero-padded buffer with the channels
    innermost (pixel ``(r, q)`` of the padded planes at ``(r * cols + q) * CHANNEL_BLOCK``), so
    that each tap of each output pixel is one contiguous run of ``CHANNEL_BLOCK`` values at any
    stride and dilation (:func:`_channel_block_taps`), then the sums are scattered back to the
    planes. The taps are summed in the order of :func:`_direct_taps`, and the epilogue is the
    same (the clip of ReLU and ReLU6 in the taps' loop, as :func:`_clipped_taps_3x3`; any other
    by :func:`_finish_row` over the planes): the values are the direct path's, bit for bit.
    One thread, MobileNetV2's shapes with their ReLU6, medians of two rounds against the direct
    path (``bench/small_kernels.py`` against its ``--blocks none``, us): 960 channels at 7x7
    126.7-131.4 -> 58.2-63.6, 576 at 14x14 stride 2 158.4-162.5 -> 64.5-67.9, 192 at 28x28
    stride 2 102.3-105.6 -> 72.6-74.3; 384 at 14x14 90.0-94.4 -> 72.5-73.6 (``--blocks all``).
    On larger planes the direct path is faster (192 at 28x28 stride 1: 108 against 155),
    hence :func:`_by_channel_blocks`."""
    before = flush_denormals()  # (denormal inputs read as zero: the docstring of flush_denormals)
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w = out.shape[2], out.shape[3]
    lanes = CHANNEL_BLOCK
    blocks = (channels + lanes - 1) // lanes
    rows = (out_h - 1) * stride_h + 2 * dilation_h + 1
    cols = (out_w - 1) * stride_w + 2 * dilation_w + 1
    staged = np.zeros(rows * cols * lanes, x.dtype)  # (the padding stays zero)
    result = np.empty(out_h * out_w * lanes, x.dtype)
    taps = np.zeros(9 * lanes, x.dtype)
    lane_scale, lane_shift = np.zeros(lanes, x.dtype), np.zeros(lanes, x.dtype)
    offsets = np.empty(9, np.uint64)
    for t in range(9):
        offsets[t] = ((t // 3) * dilation_h * cols + (t % 3) * dilation_w) * lanes
    clipped = activation == EPILOGUE_CLIP and not has_residual
    lo, hi = x.dtype.type(low), x.dtype.type(high)
    first_row, stop_row = max(0, pad_h), min(rows, pad_h + height)  # the padded rows, columns holding input
    first_col, stop_col = max(0, pad_w), min(cols, pad_w + width)
    flat, plane_size = x.reshape(-1), np.uint64(height * width)
    out_planes = out.reshape(out.shape[0], channels, out_h * out_w)
    residual_planes = residual.reshape(out.shape[0], channels, out_h * out_w)
    for item in range(first_item, last_item):
        n, first = item // blocks, (item % blocks) * lanes
        count = min(lanes, channels - first)
        for c in range(count):
            for t in range(9):
                taps[t * lanes + c] = weight[first + c, 0, t // 3, t % 3]
            lane_scale[c], lane_shift[c] = scale[first + c], shift[first + c]
        start = (np.uint64(n) * np.uint64(channels) + np.uint64(first)) * plane_size
        for r in range(first_row, stop_row):
            for q in range(first_col, stop_col):
                source = start + np.uint64((r - pad_h) * width + q - pad_w)
                target = np.uint64((r * cols + q) * lanes)
                for c in range(count):  # (a gather along the channels' planes)
                    staged[target + np.uint64(c)] = flat[source + np.uint64(c) * plane_size]
        _channel_block_taps(staged, taps, offsets, result, out_h, out_w, cols, stride_h, stride_w, lane_scale,
                            lane_shift, clipped, lo, hi)
        for c in range(count):
            plane = out_planes[n, first + c]
            for p in range(out_h * out_w):
                plane[np.uint64(p)] = result[np.uint64(p * lanes + c)]
            if not clipped:
                _finish_row(plane, residual_planes[n, first + c], has_residual, scale[first + c], shift[first + c],
                            activation, low, high)
    restore_denormals(before)


@njit(cache=True, nogil=True)
def _channel_block_taps(staged, taps, offsets, result, out_h, out_w, cols, stride_h, stride_w, lane_scale,
                        lane_shift, clipped, lo, hi):
    """:func:`_depthwise_blocks_items`'s sums: for each output pixel ``p`` and lane ``c``,
    ``result[p * CHANNEL_BLOCK + c]`` = the nine taps ``taps[t * CHANNEL_BLOCK + c]`` times the
    padded input at the pixel's window corner plus ``offsets[t]``, summed in
    :func:`_direct_taps`'s order; with ``clipped``, then ``clip(s * v + b, lo, hi)`` (the lanes'
    scale and shift) as :func:`_clipped_taps_3x3`. Unsigned indices: the lanes' loop vectorizes."""
    lanes = np.uint64(CHANNEL_BLOCK)
    o0, o1, o2, o3, o4, o5, o6, o7, o8 = (offsets[0], offsets[1], offsets[2], offsets[3], offsets[4], offsets[5],
                                          offsets[6], offsets[7], offsets[8])
    for i in range(out_h):
        for j in range(out_w):
            base = np.uint64((i * stride_h * cols + j * stride_w) * CHANNEL_BLOCK)
            at = np.uint64((i * out_w + j) * CHANNEL_BLOCK)
            for c in range(CHANNEL_BLOCK):
                u = np.uint64(c)
                v = (taps[u] * staged[base + o0 + u] + taps[lanes + u] * staged[base + o1 + u]
                     + taps[2 * lanes + u] * staged[base + o2 + u] + taps[3 * lanes + u] * staged[base + o3 + u]
                     + taps[4 * lanes + u] * staged[base + o4 + u] + taps[5 * lanes + u] * staged[base + o5 + u]
                     + taps[6 * lanes + u] * staged[base + o6 + u] + taps[7 * lanes + u] * staged[base + o7 + u]
                     + taps[8 * lanes + u] * staged[base + o8 + u])
                if clipped:
                    v = lane_scale[u] * v + lane_shift[u]
                    v = lo if v < lo else (hi if v > hi else v)
                result[at + u] = v


@njit(cache=True, nogil=True)
def _panel_forward_items(x, weight, scale, shift, residual, has_residual, activation, low, high, out,
                         stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, block_rows, chunk_rows,
                         tap_piece, first_item, last_item):
    """Items of a convolution by panels (:func:`_by_panels`), with no column matrix and no BLAS:
    an item is a (sample, group, block of output rows), for every filter of the group.

    The item's output rows are taken ``chunk_rows`` at a time (:func:`_panel_chunk_rows`: the
    chunk's planes and product stay in the L2 cache). A chunk's input rows are copied,
    zero-padded, into the stride's polyphase planes, as for :func:`_direct_forward_items`, so
    that each tap reads a contiguous run of them from its own offset (:func:`_tap_offsets`):
    the column matrix, row ``(c, i, j)``, is the planes from that tap's offset on, ``pitch``
    columns per output row. :func:`tap_product` multiplies the weights, packed ``MR`` filters
    at a time (:func:`pack_rows`), into ``panel_width`` of those columns at a time, reading them
    straight from the planes, ``tap_piece`` taps at a time (each piece's sums added to the
    last's), every filter block of a piece in turn: the planes' rows a piece of a panel reads
    stay in the L1 cache while the filter blocks read them again. The product, ``pitch``
    wide, goes into a buffer, and its output columns into the output, finished by the
    epilogue."""
    before = flush_denormals()  # (denormal inputs read as zero: the docstring of flush_denormals)
    filters, per_group, kernel_h, kernel_w = weight.shape
    filters_per_group = filters // groups
    taps = per_group * kernel_h * kernel_w
    out_h, out_w = out.shape[2], out.shape[3]
    blocks = (out_h + block_rows - 1) // block_rows
    out_planes = out.reshape(out.shape[0], filters, out_h * out_w)
    residual_planes = residual.reshape(out.shape[0], filters, out_h * out_w)
    nr = PANEL_BYTES // x.itemsize
    pitch, plane_rows, channel_size, layout, offsets = _planes_layout(x, per_group, chunk_rows, out_w, kernel_h,
                                                                      kernel_w, stride_h, stride_w, dilation_h,
                                                                      dilation_w)
    padded = np.zeros(layout.shape[0] + nr, x.dtype)  # (a chunk's last panel reads up to nr - 1 past its rows)
    tap_offsets = _planes_tap_offsets(offsets, taps, channel_size, 0)
    row_blocks = (filters_per_group + MR - 1) // MR
    group_size = row_blocks * MR * taps
    packed = np.empty(groups * group_size, x.dtype)
    weight_by_group = weight.reshape(groups, filters_per_group, taps)
    for g in range(groups):
        pack_rows(weight_by_group[g], packed[g * group_size:(g + 1) * group_size])
    longest = (chunk_rows * pitch + nr - 1) // nr * nr
    product = np.empty(row_blocks * MR * longest, x.dtype)
    for item in range(first_item, last_item):
        n = item // (groups * blocks)
        g = (item // blocks) % groups
        first_row = (item % blocks) * block_rows
        rows = min(out_h, first_row + block_rows) - first_row
        for chunk in range(first_row, first_row + rows, chunk_rows):
            count = min(chunk_rows, first_row + rows - chunk)
            for c in range(per_group):
                _fill_planes(x[n, g * per_group + c], chunk * stride_h - pad_h,
                             (count - 1) * stride_h + (kernel_h - 1) * dilation_h + 1, pad_w, padded,
                             c * channel_size, pitch, plane_rows, stride_h, stride_w)
            length = (count * pitch + nr - 1) // nr * nr
            for start in range(0, length, nr):
                for t0 in range(0, taps, tap_piece):
                    for block in range(row_blocks):
                        tap_product(packed, g * group_size + (block * taps + t0) * MR, padded, start, tap_offsets,
                                    t0, product, block * MR * length + start, min(tap_piece, taps - t0), length,
                                    t0 > 0)
            first_pixel = chunk * out_w
            for f in range(filters_per_group):
                k = g * filters_per_group + f
                span = out_planes[n, k, first_pixel:first_pixel + count * out_w]
                for r in range(count):
                    for q in range(out_w):
                        span[np.uint64(r * out_w + q)] = product[np.uint64(f * length + r * pitch + q)]
                _finish_row(span, residual_planes[n, k, first_pixel:first_pixel + count * out_w], has_residual,
                            scale[k], shift[k], activation, low, high)
    restore_denormals(before)


@njit(cache=True, nogil=True)
def _interleaved_forward_items(x, weight, scale, shift, residual, has_residual, activation, low, high, out,
                               stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, sample_block, gemm_rows,
                               small_gemm, first_item, last_item):
    """Items of a convolution onto small outputs (LeNet's second layer, ResNet's 7x7 layers) at
    a batch: an item is a block of ``sample_block`` samples, for every filter (one group).

    The block's input is first copied, zero-padded, into a buffer with the samples innermost,
    ``[channel, row, column, sample]`` (:func:`_stage_interleaved`). A tap's columns for one
    output row are then one contiguous run of ``out_w * samples`` values at a stride of 1 (runs
    of ``samples`` at a stride), where the samples laid side by side as planes need one short
    copy per tap, row and sample (8 values on LeNet's 8x8 outputs), or, through polyphase
    planes, a GEMM over half as many columns again as the output has
    (:func:`_interleaved_columns`). The GEMMs take ``gemm_rows`` output rows at a time; their
    product, ``[filter, row, column, sample]``, is finished by the epilogue and copied into the
    output planes (:func:`_interleaved_finish`). Where the processor runs the panels, at stride
    1 along the rows, :func:`_interleaved_panel_items` takes the items instead (a function of
    its own: a first run compiles only the one it takes)."""
    before = flush_denormals()  # (denormal inputs read as zero: the docstring of flush_denormals)
    samples, channels = x.shape[0], x.shape[1]
    filters, _, kernel_h, kernel_w = weight.shape
    out_h, out_w = out.shape[2], out.shape[3]
    taps = channels * kernel_h * kernel_w
    span_h = (out_h - 1) * stride_h + (kernel_h - 1) * dilation_h + 1  # the padded input rows read
    span_w = (out_w - 1) * stride_w + (kernel_w - 1) * dilation_w + 1
    staged = np.empty(channels * span_h * span_w * sample_block, x.dtype)
    columns = np.empty(taps * gemm_rows * out_w * sample_block, x.dtype)
    product = np.empty((filters + 1) * out_h * out_w * sample_block, x.dtype)  # (room for a GEMM's offset view)
    flat_weight = weight.reshape(filters, taps)
    out_planes = out.reshape(samples, filters, out_h * out_w)
    residual_planes = residual.reshape(samples, filters, out_h * out_w)
    for item in range(first_item, last_item):
        first = item * sample_block
        count = min(sample_block, samples - first)
        _stage_interleaved(x, first, count, pad_h, pad_w, span_h, span_w, staged)
        run = out_w * count  # the columns of one output row
        wide = out_h * run
        for first_row in range(0, out_h, gemm_rows):
            rows = min(gemm_rows, out_h - first_row)
            _interleaved_columns(staged, channels, count, span_h, span_w, first_row, rows, kernel_h, kernel_w,
                                 stride_h, stride_w, dilation_h, dilation_w, out_w, columns)
            offset = first_row * run  # (a C-contiguous view that starts there, the same type for every row block)
            _gemm_in_small_pieces(filters, rows * run, taps, flat_weight, taps,
                                  columns[:taps * rows * run].reshape(taps, rows * run), rows * run, 0.0,
                                  product[offset:offset + filters * wide].reshape(filters, wide), wide, small_gemm)
        _interleaved_finish(product[:filters * wide].reshape(filters, wide), run, count, first, out_planes,
                            residual_planes, has_residual, scale, shift, activation, low, high)
    restore_denormals(before)


@njit(cache=True, nogil=True)
def _interleaved_panel_items(x, weight, scale, shift, residual, has_residual, activation, low, high, out,
                             stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, sample_block, first_item,
                             last_item):
    """:func:`_interleaved_forward_items` by panels (at stride 1 along the rows, where
    :func:`_interleaved_by_panels` allows): no columns and no GEMM, :func:`tap_product`
    multiplies the packed weights straight from the staged input, each tap's run of an output
    row at its offset, ``panel_width`` columns a call; each output row's product is rounded up
    to whole panels (LeNet's 64 columns to 72)."""
    before = flush_denormals()  # (denormal inputs read as zero: the docstring of flush_denormals)
    samples, channels = x.shape[0], x.shape[1]
    filters, _, kernel_h, kernel_w = weight.shape
    out_h, out_w = out.shape[2], out.shape[3]
    taps = channels * kernel_h * kernel_w
    span_h = (out_h - 1) * stride_h + (kernel_h - 1) * dilation_h + 1  # the padded input rows read
    span_w = (out_w - 1) * stride_w + (kernel_w - 1) * dilation_w + 1
    nr = PANEL_BYTES // x.itemsize
    staged = np.empty(channels * span_h * span_w * sample_block + nr, x.dtype)  # (a row's last panel reads past)
    row_blocks = (filters + MR - 1) // MR
    row_pitch = (out_w * sample_block + nr - 1) // nr * nr
    product = np.empty(row_blocks * MR * out_h * row_pitch, x.dtype)
    packed = np.empty(row_blocks * MR * taps, x.dtype)
    pack_rows(weight.reshape(filters, taps), packed)
    tap_offsets = np.empty(taps, np.uint64)
    offsets_count = 0  # the samples a block the offsets are for: they change only with it (the last block)
    out_planes = out.reshape(samples, filters, out_h * out_w)
    residual_planes = residual.reshape(samples, filters, out_h * out_w)
    for item in range(first_item, last_item):
        first = item * sample_block
        count = min(sample_block, samples - first)
        _stage_interleaved(x, first, count, pad_h, pad_w, span_h, span_w, staged)
        run = out_w * count  # the columns of one output row
        pitch = (run + nr - 1) // nr * nr  # ... and their place in the product
        wide = out_h * pitch
        if count != offsets_count:  # (three divisions a tap: 11 us a call on LeNet's second layer, made once)
            window_offsets(tap_offsets, kernel_h, kernel_w, dilation_h, dilation_w, span_h, span_w, count)
            offsets_count = count
        for r in range(out_h):
            for start in range(0, run, nr):
                for block in range(row_blocks):
                    tap_product(packed, block * MR * taps, staged, r * stride_h * span_w * count + start,
                                tap_offsets, 0, product, block * MR * wide + r * pitch + start, taps, wide, False)
        _interleaved_finish(product[:filters * wide].reshape(filters, wide), pitch, count, first, out_planes,
                            residual_planes, has_residual, scale, shift, activation, low, high)
    restore_denormals(before)


@njit(cache=True, nogil=True)
def _interleaved_finish(products, pitch, count, first, out_planes, residual_planes, has_residual, scale, shift,
                        activation, low, high):
    """The small outputs' product ``products`` (filters, out_h * pitch), ``[filter, row, column,
    sample]`` with ``pitch`` values a row, of the ``count`` samples from ``first``: the epilogue
    (over the product's rows where it reads no residual, else over each output plane after the
    copy) and the copy into ``out_planes`` (N, F, out_h * out_w)."""
    filters = products.shape[0]
    out_h = products.shape[1] // pitch
    out_w = out_planes.shape[2] // out_h
    reads_residual = has_residual or activation == EPILOGUE_MASK  # (laid out as the output, not as the product)
    # (has_residual is False here: passed as the variable, since a constant would compile _finish_row again for it)
    if not reads_residual:
        for f in range(filters):
            _finish_row(products[f], products[f], has_residual, scale[f], shift[f], activation, low, high)
    for s in range(count):
        for f in range(filters):
            target = out_planes[first + s, f]
            source = products[f, s:]
            for r in range(out_h):
                for q in range(out_w):
                    target[np.uint64(r * out_w + q)] = source[np.uint64(r * pitch + q * count)]
            if reads_residual:
                _finish_row(target, residual_planes[first + s, f], has_residual, scale[f], shift[f], activation,
                            low, high)


@njit(cache=True)
def _stage_interleaved(x, first, count, pad_h, pad_w, span_h, span_w, staged):
    """``staged[c, r, q, s] = x[first + s, c, r - pad_h, q - pad_w]`` (zero outside ``x``) for
    ``r < span_h``, ``q < span_w`` and the ``count`` samples: the input with its samples
    innermost (:func:`_interleaved_forward_items`). Each input row is read once, contiguously;
    its values are written ``count`` apart."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    flat = x.reshape(-1)
    row_size = span_w * count
    low_q, high_q = min(max(0, pad_w), span_w), min(span_w, max(0, pad_w + width))
    low_r, high_r = min(max(0, pad_h), span_h), min(span_h, max(0, pad_h + height))
    sides = low_q > 0 or high_q < span_w
    for c in range(channels):  # the padding's zeros
        for r in range(span_h):
            start = (c * span_h + r) * row_size
            if r < low_r or r >= high_r:
                staged[start:start + row_size] = 0
            elif sides:
                staged[start:start + low_q * count] = 0
                staged[start + high_q * count:start + row_size] = 0
    for s in range(count):
        for c in range(channels):
            for r in range(low_r, high_r):
                source = (((first + s) * channels + c) * height + r - pad_h) * width - pad_w
                target = (c * span_h + r) * row_size + s
                for q in range(low_q, high_q):
                    staged[np.uint64(target + q * count)] = flat[np.uint64(source + q)]


@njit(cache=True)
def _interleaved_columns(staged, channels, count, span_h, span_w, first_row, rows, kernel_h, kernel_w, stride_h,
                         stride_w, dilation_h, dilation_w, out_w, columns):
    """The columns of output rows ``first_row .. first_row+rows-1`` from
    :func:`_stage_interleaved`'s buffer: row ``(c, i, j)`` (a tap), column ``(row, column,
    sample)``, ``rows * out_w * count`` columns, rows one after another in ``columns``."""
    run = out_w * count
    width = rows * run
    for c in range(channels):
        for i in range(kernel_h):
            for j in range(kernel_w):
                tap = (c * kernel_h + i) * kernel_w + j
                for r in range(rows):
                    source = ((c * span_h + (first_row + r) * stride_h + i * dilation_h) * span_w
                              + j * dilation_w) * count
                    target = np.uint64(tap * width + r * run)
                    if stride_w == 1:  # one run
                        for k in range(run):
                            columns[target + np.uint64(k)] = staged[np.uint64(source + k)]
                    else:
                        for q in range(out_w):
                            start = source + q * stride_w * count
                            for s in range(count):
                                columns[target + np.uint64(q * count + s)] = staged[np.uint64(start + s)]


@njit(cache=True)
def _direct_taps(padded, base, offsets, taps, wide, length, accumulate):
    """``wide[:length]`` (output rows ``pitch`` wide, back to back) = (``wide`` plus, with
    ``accumulate``) the sum over the window ``taps`` (KH, KW) of each tap times ``padded`` from
    ``base`` plus the tap's offset (:func:`_tap_offsets`): one loop for a 3x3 window, one per
    window row for windows 3, 5 or 7 wide, one per tap otherwise."""
    kernel_h, kernel_w = taps.shape
    base = np.uint64(base)
    if kernel_h == 3 and kernel_w == 3:
        o0, o1, o2 = base + offsets[0, 0], base + offsets[0, 1], base + offsets[0, 2]
        o3, o4, o5 = base + offsets[1, 0], base + offsets[1, 1], base + offsets[1, 2]
        o6, o7, o8 = base + offsets[2, 0], base + offsets[2, 1], base + offsets[2, 2]
        w0, w1, w2 = taps[0, 0], taps[0, 1], taps[0, 2]
        w3, w4, w5 = taps[1, 0], taps[1, 1], taps[1, 2]
        w6, w7, w8 = taps[2, 0], taps[2, 1], taps[2, 2]
        if accumulate:
            for k in range(length):
                u = np.uint64(k)
                wide[k] += (w0 * padded[o0 + u] + w1 * padded[o1 + u] + w2 * padded[o2 + u] + w3 * padded[o3 + u]
                            + w4 * padded[o4 + u] + w5 * padded[o5 + u] + w6 * padded[o6 + u] + w7 * padded[o7 + u]
                            + w8 * padded[o8 + u])
            return
        for k in range(length):
            u = np.uint64(k)
            wide[k] = (w0 * padded[o0 + u] + w1 * padded[o1 + u] + w2 * padded[o2 + u] + w3 * padded[o3 + u]
                       + w4 * padded[o4 + u] + w5 * padded[o5 + u] + w6 * padded[o6 + u] + w7 * padded[o7 + u]
                       + w8 * padded[o8 + u])
        return
    if not accumulate:
        for k in range(length):
            wide[k] = 0
    last = kernel_w - 1
    for i in range(kernel_h):
        if kernel_w == 3 or kernel_w == 5:
            o0, o1, o2 = base + offsets[i, 0], base + offsets[i, 1], base + offsets[i, 2]
            o3, o4 = base + offsets[i, last - 1], base + offsets[i, last]
            w0, w1, w2, w3, w4 = taps[i, 0], taps[i, 1], taps[i, 2], taps[i, last - 1], taps[i, last]
            if kernel_w == 3:
                for k in range(length):
                    u = np.uint64(k)
                    wide[k] += w0 * padded[o0 + u] + w1 * padded[o1 + u] + w2 * padded[o2 + u]
            else:
                for k in range(length):
                    u = np.uint64(k)
                    wide[k] += (w0 * padded[o0 + u] + w1 * padded[o1 + u] + w2 * padded[o2 + u]
                                + w3 * padded[o3 + u] + w4 * padded[o4 + u])
            continue
        if kernel_w == 7:  # (ConvNeXt's and PP-OCRv6's depthwise 7x7: 7 passes over wide, not 49)
            o0, o1, o2, o3 = base + offsets[i, 0], base + offsets[i, 1], base + offsets[i, 2], base + offsets[i, 3]
            o4, o5, o6 = base + offsets[i, 4], base + offsets[i, 5], base + offsets[i, 6]
            w0, w1, w2, w3 = taps[i, 0], taps[i, 1], taps[i, 2], taps[i, 3]
            w4, w5, w6 = taps[i, 4], taps[i, 5], taps[i, 6]
            for k in range(length):
                u = np.uint64(k)
                wide[k] += (w0 * padded[o0 + u] + w1 * padded[o1 + u] + w2 * padded[o2 + u] + w3 * padded[o3 + u]
                            + w4 * padded[o4 + u] + w5 * padded[o5 + u] + w6 * padded[o6 + u])
            continue
        for j in range(kernel_w):
            tap, offset = taps[i, j], base + offsets[i, j]
            for k in range(length):
                wide[k] += tap * padded[offset + np.uint64(k)]


@njit(cache=True)
def _clipped_taps_3x3(padded, offsets, taps, wide, length, s, b, low, high):
    """``wide[:length]`` = the epilogue ``clip(s * v + b, low, high)`` of :func:`_direct_taps`'s
    sum ``v`` of a 3x3 window over the plane at the start of ``padded``, in the same loop: the
    same values as the taps, then :func:`_finish_row` (each step in the row's dtype, in the same
    order), without the second pass over ``wide``. Whole depthwise layers with their ReLU6 at
    batch 1, one thread (``bench/small_kernels.py``'s depthwise rows, medians): 32 channels at
    112x112 262-291 -> 246-259 us, 384 at 14x14 108-199 -> 102-105 us, 960 at 7x7 151-160 ->
    134-137 us."""
    o0, o1, o2 = offsets[0, 0], offsets[0, 1], offsets[0, 2]
    o3, o4, o5 = offsets[1, 0], offsets[1, 1], offsets[1, 2]
    o6, o7, o8 = offsets[2, 0], offsets[2, 1], offsets[2, 2]
    w0, w1, w2 = taps[0, 0], taps[0, 1], taps[0, 2]
    w3, w4, w5 = taps[1, 0], taps[1, 1], taps[1, 2]
    w6, w7, w8 = taps[2, 0], taps[2, 1], taps[2, 2]
    lo, hi = wide.dtype.type(low), wide.dtype.type(high)
    for k in range(length):
        u = np.uint64(k)
        v = (w0 * padded[o0 + u] + w1 * padded[o1 + u] + w2 * padded[o2 + u] + w3 * padded[o3 + u]
             + w4 * padded[o4 + u] + w5 * padded[o5 + u] + w6 * padded[o6 + u] + w7 * padded[o7 + u]
             + w8 * padded[o8 + u])
        v = s * v + b
        wide[k] = lo if v < lo else (hi if v > hi else v)


@njit(cache=True, nogil=True)
def _squeeze_gates(x, first, first_scale, first_shift, first_code, first_low, first_high,
                   second, second_scale, second_shift, second_code, second_low, second_high, out):
    """A squeeze-excitation block's gates, for each sample: the mean of each channel's plane of
    ``x`` (N, C, H, W), as global average pooling computes it, then two 1x1 convolutions on
    that (N, C, 1, 1) vector, each with its fused epilogue, written to ``out`` (N, F2, 1, 1).

    ``first`` (F1, C) and ``second`` (F2, F1) are the convolutions' weights as matrices; each
    has per-filter ``scale`` and ``shift`` (ones and the bias, or a batch normalization folded
    in) and an activation ``(code, low, high)`` as :func:`_finish_row` takes it. Not a kernel
    of its own (no CUDA twin): the inference plan's fused squeeze step calls it on host arrays,
    one call instead of three steps."""
    samples, channels = x.shape[0], x.shape[1]
    planes = x.reshape(samples, channels, x.shape[2] * x.shape[3])
    gates = out.reshape(samples, second.shape[0])
    pooled = np.empty(channels, x.dtype)
    hidden = np.empty(first.shape[0], x.dtype)
    unit = np.ones(1, x.dtype)
    for n in range(samples):
        _global_avg_planes(planes[n], pooled, 0, channels)  # the pooling kernel's own channel means
        np.dot(first, pooled, hidden)
        _per_filter_epilogue(hidden, first_scale, first_shift, first_code, first_low, first_high, unit)
        row = gates[n]
        np.dot(second, hidden, row)
        _per_filter_epilogue(row, second_scale, second_shift, second_code, second_low, second_high, unit)


def _squeeze(x, first, first_scale, first_shift, first_code, first_low, first_high,
             second, second_scale, second_shift, second_code, second_low, second_high, out):
    """:func:`_squeeze_gates`, looked up when called (so that
    :func:`cnnlab.compilation.interpreting` can stand in for the compiled function)."""
    _squeeze_gates(x, first, first_scale, first_shift, first_code, first_low, first_high,
                   second, second_scale, second_shift, second_code, second_low, second_high, out)


@njit(cache=True)
def _per_filter_epilogue(values, scale, shift, code, low, high, unit):
    """``values[f] = act(scale[f] * values[f] + shift[f])`` (one value per filter)."""
    for f in range(values.shape[0]):
        values[f] = scale[f] * values[f] + shift[f]
    _finish_row(values, values, False, unit[0], unit[0] - unit[0], code, low, high)


#: the most input channels per group a convolution computed directly (not by a GEMM) may have
DIRECT_MAX_CHANNELS = 4


def _is_direct(weight_shape, groups, stride, out_pixels, samples=1):
    """Whether a convolution of these weights (F, C // groups, KH, KW) at ``stride`` (a pair)
    onto ``samples`` output planes of ``out_pixels`` is computed directly from the input planes
    (:func:`_direct_forward_items`) rather than by im2col and a GEMM: a depthwise one, or one
    with at most ``DIRECT_MAX_CHANNELS`` input channels per group and a square window 3 or 5
    wide (those whose taps the direct loops sum at once), except at stride 1 with more than 8
    filters per group on planes under 64x64 (a CIFAR-sized stem), where the GEMM's columns
    are compact and the GEMM wins (``bench/direct_conv.py``).

    With the micro-kernel's 512-bit block (AVX-512), an ungrouped convolution is not direct
    either where the panels run it faster (:func:`_few_channels_by_panels`)."""
    filters, per_group = weight_shape[:2]
    if per_group == 1 and filters == groups:
        return True
    if not _few_channels(weight_shape) or _few_channels_by_panels(weight_shape, groups, samples * out_pixels):
        return False
    return tuple(stride) != (1, 1) or filters // groups <= 8 or out_pixels >= 64 * 64


def _by_channel_blocks(weight_shape, groups, stride, out_pixels):
    """Whether a convolution of these weights (F, C // groups, KH, KW) at ``stride`` (a pair)
    onto output planes of ``out_pixels`` (any stride and dilation) takes the depthwise path by
    blocks of channels (:func:`_depthwise_blocks_items`) rather than the direct one: a depthwise
    3x3 convolution (one filter per channel) onto planes of at most ``BLOCKS_MAX_PIXELS``
    pixels. On MobileNetV2's shapes (``bench/small_kernels.py --blocks all`` against
    ``--blocks none``) faster onto 7x7 and 14x14 planes at stride 1 and 2, slower onto 28x28
    ones at stride 1 and on larger planes."""
    filters, per_group, kernel_h, kernel_w = weight_shape
    return per_group == 1 and filters == groups and kernel_h == kernel_w == 3 and out_pixels <= BLOCKS_MAX_PIXELS


#: the largest output planes (pixels) a depthwise 3x3 convolution takes by blocks of channels
#: (:func:`_by_channel_blocks`)
BLOCKS_MAX_PIXELS = 196


def _few_channels(weight_shape):
    """Whether weights (F, C // groups, KH, KW) have the few input channels per group and the
    window (square, 3 or 5 wide) of the direct loops (:func:`_is_direct`)."""
    per_group, kernel_h, kernel_w = weight_shape[1:]
    return per_group <= DIRECT_MAX_CHANNELS and kernel_h == kernel_w and kernel_w in (3, 5)


def _few_channels_by_panels(weight_shape, groups, pixels):
    """Whether a convolution of these weights (F, C // groups, KH, KW) onto ``pixels`` output
    pixels in all (every sample's), ungrouped and of few channels (:func:`_few_channels`), is
    computed by panels rather than by the direct loops (:func:`_is_direct`, and the panels' path
    in :func:`_forward_path`): with the micro-kernel's 512-bit block (AVX-512) only, for at least
    ``PANEL_STEM_MIN_FILTERS`` filters, or more than half a block of ``MR`` filters on at least
    ``PANEL_FEW_MIN_PIXELS`` pixels. The panels' width rule (:func:`_by_panels`) does not apply
    to these: the direct loops, not im2col, are what the panels replace.

    ``bench/direct_conv.py --direct`` against ``bench/direct_conv.py``, float32, a ReLU after, 2
    threads, two rounds, us, direct -> panels: RGB to 32 filters at 224x224, stride 2, batch 1,
    268-269 -> 142-170; to 24 at 640x640 1,916-1,945 -> 976-1,065; to 64 at stride 1 2,840-2,942
    -> 1,591-1,692. With fewer filters (samples x channels->filters, size, window): 64 x 1->6,
    28x28, 5x5 (LeNet's first layer) 205-215 -> 115-128; 32 x 3->6, 32x32, 5x5 325-344 ->
    163-176; 32 x 3->8, 32x32, 3x3 185-192 -> 101-106; 64 x 4->8, 12x12, 3x3 151-156 -> 65-70.
    Not taken: 4 filters, and single small images (1 x 3->8 at 32x32 and 1 x 1->6 at 28x28, 17-25
    us either way)."""
    if VECTOR_BYTES != 64 or groups != 1 or not _few_channels(weight_shape) or not panels_available():
        return False
    filters = weight_shape[0]
    return filters >= PANEL_STEM_MIN_FILTERS or filters > MR // 2 and pixels >= PANEL_FEW_MIN_PIXELS


#: with the 512-bit micro-kernel, an ungrouped few-channel convolution of this many filters or more goes to
#: the panels, not the direct path (:func:`_few_channels_by_panels`) ...
PANEL_STEM_MIN_FILTERS = 16
#: ... as does one of fewer (but more than half of ``MR``) onto this many output pixels in all
PANEL_FEW_MIN_PIXELS = 64 * 64

#: the GEMM path's columns through polyphase planes where :func:`_by_planes` says so (False: never)
IM2COL_BY_PLANES = True

#: at stride 1, the most extra multiply-adds per tap and output row (filters per group times the
#: columns a plane row has past the output's) the planes may add to the GEMM
PLANES_MAX_EXTRA = 64
#: ... or, on wider outputs, this many per output column: what the row copy of a value cost over a
#: plane's copy when it tested every value's bounds (about 0.55 ns, scratch timings), in
#: multiply-adds of a GEMM at 30 GMAC/s (see _by_planes)
PLANES_COPY_MACS = 16


def _by_planes(out_w, kernel_h, kernel_w, stride_h, stride_w, dilation_w, filters_per_group):
    """Whether the GEMM path copies its columns through polyphase planes
    (:func:`_im2col_by_planes`), one contiguous copy per tap instead of one short copy per tap
    and output row, at the price of the GEMM computing (and dropping) the columns a plane row has
    past the output's.

    At a stride, where each plane serves two taps or more (a 3x3 window at stride 2, a 7x7 stem)
    and the plane rows are at most a sixteenth wider than the output's. There every tap's row
    copy would otherwise be a strided gather (``bench/strided_conv.py``: the stride-2 reference
    shape, 32 to 64 channels at 64x64, batch 32, 11.0 -> 9.4 ms; ResNet-18's 7x7 stem at batch 1
    2.3 -> 1.9 ms). On narrow outputs the GEMM's extra columns cost what the copy saves
    (ResNet-18's 3x3 stride-2 layers onto 14x14 and 7x7: 0.77 -> 0.78-0.85 ms, 0.83 -> 0.86 ms).

    At stride 1 (a single plane: the padded input), where the extra columns cost the GEMM at
    most ``PLANES_MAX_EXTRA`` multiply-adds per tap and output row, about what a row's copy costs
    (LeNet's second layer, 6 to 16 channels 5x5 onto 8x8, batch 64: 0.26 -> 0.21 ms; 3 to 32
    channels 3x3 at 32x32, batch 32: 0.50 -> 0.44 ms), or, on wider outputs, at most
    ``PLANES_COPY_MACS`` per output column: a plane's copy per tap costs a fifth of the
    bounds-checked copy per tap and row, about 0.55 ns less per value copied (scratch timings of
    the copies alone: 64 channels at 56x56, 1,238 -> 238 us; 128 at 28x28, 664 -> 123 us; 32 at
    16x16, 54 -> 12 us), which pays for 3.6 % and 7 % more GEMM on ResNet's 56x56 and 28x28
    layers (batch 16: 36.5 -> 29.1-34.8 ms and 30.1-31.2 -> 27.6-28.6 ms; batch 1: 2.5 -> 2.1 ms,
    1.9 -> 1.8 ms). ResNet's 7x7 and 14x14 layers (512 and 256 filters, 29 % and 14 % more) lose:
    23 -> 27 ms and 21 -> 23 ms at batch 16 (and, timed again with NumPy's OpenBLAS, 25.6-26.2 ->
    26.6-30.0 ms for the 14x14 one).

    These thresholds were set against a row copy that tested every value's bounds. Without that
    test (:func:`_im2col`) the row copy runs two to three times faster, and the planes still win
    or tie where the rule takes them (``bench/strided_conv.py --stride-1 [--rows]``, batch 1
    unless said: LeNet's second layer at batch 64 309-318 us against 384-401 by rows, the
    CIFAR-sized 32-channel layer at batch 32 5.15-5.18 ms against 5.32-5.90, ResNet's 56x56 and
    28x28 layers within 2 %)."""
    if not IM2COL_BY_PLANES or out_w == 1:
        return False
    pitch = _plane_extent(out_w, kernel_w, stride_w, dilation_w)
    if stride_h == stride_w == 1:
        return filters_per_group * (pitch - out_w) <= max(PLANES_MAX_EXTRA, PLANES_COPY_MACS * out_w)
    return kernel_h * kernel_w >= 2 * stride_h * stride_w and 16 * (pitch - out_w) <= out_w


def _row_blocks(out_h, block_rows):
    return (out_h + block_rows - 1) // block_rows


def conv2d_forward(x, weight, scale, shift, residual, has_residual, activation, low, high, out,
                   stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, block_rows, workers,
                   filter_blocks=1, sample_block=1):
    """2-D cross-correlation of ``x`` with ``weight``, finished by the fused epilogue
    ``out = act(scale * conv + shift + residual)``, written into ``out``.

    Parameters
    ----------
    x : (N, C, H, W) float array, C-contiguous
    weight : (F, C // groups, KH, KW) array of the same dtype, C-contiguous
    scale, shift : (F,) arrays of the same dtype
        Per-filter multiplier and offset (ones and the bias for a plain convolution; a batch
        normalization folded in otherwise).
    residual : (N, F, OH, OW) array, C-contiguous
        Added before the activation when ``has_residual``; with activation ``EPILOGUE_MASK``
        (and ``has_residual`` False), the mask: outputs where it is not > 0 are 0 (pass ``out``
        itself otherwise).
    has_residual : bool
    activation : int
        The epilogue's activation code (see :func:`_finish_row`); ``low`` and ``high`` are its
        parameters (clip bounds, the leaky slope, the hard sigmoid's alpha and beta).
    low, high : float
    out : (N, F, OH, OW) array, C-contiguous, overwritten
    stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w : int
        Resolved geometry; ``pad_h``/``pad_w`` are the top/left padding
        (the output shape fixes the rest).
    groups : int
        Channel groups; ``C`` and ``F`` are multiples of it.
    block_rows : int
        Output rows per work item (``OH`` for whole samples); bounds the
        per-thread column buffer to ``taps * block_rows * OW`` elements.
    workers : int
        Threads sharing the (sample, group, row block, filter block) items, each with its own
        buffers; 1 runs on the calling thread alone.
    filter_blocks : int
        Pieces the filters of a group are split into (the GEMM path): with fewer images than
        threads and small outputs (deep layers), threads share an image's filters rather than
        its few rows, so that each GEMM keeps its full width and reads only its part of the
        weights.
    sample_block : int
        Samples per work item on the GEMM path (with whole-sample row blocks): their columns
        side by side make one wider GEMM where a single sample's output is small.
    """
    _run_forward(_forward_work(x.shape, weight.shape, out.shape, stride_h, stride_w, pad_h, pad_w, dilation_h,
                               dilation_w, groups, block_rows, workers, filter_blocks, sample_block,
                               dtype=x.dtype),
                 x, weight, scale, shift, residual, bool(has_residual), int(activation), float(low), float(high), out)


def _forward_work(x_shape, weight_shape, out_shape, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                  groups, block_rows, workers, filter_blocks=1, sample_block=1, *, dtype, sealed=False):
    """The work :func:`conv2d_forward` hands out for arrays of these shapes and this geometry
    (its arguments): ``(items function, item count, workers, trailing arguments, the pieces of
    the items the workers take, None or the weights' preparation)``, for :func:`_run_forward`
    (the F(2x2, 3x3) path takes its weights transformed by :func:`winograd_weights`, the tiles'
    path packed by :func:`tile_weights`, once a call). Resolved once, it lets a caller that
    repeats the same convolution (an inference plan's bound step) skip choosing the path on
    every call. ``sealed``: the weights are :func:`_sealed` (their preparation is made once and
    kept, so the paths that prepare them are taken for more weights)."""
    items, count, workers, trailing = _forward_path(x_shape, weight_shape, out_shape, stride_h, stride_w, pad_h,
                                                    pad_w, dilation_h, dilation_w, groups, block_rows, workers,
                                                    filter_blocks, sample_block, dtype, sealed)
    workers = max(1, min(workers, count))
    # the weights as the items function takes them, made once a call: (function, its arguments after the weight)
    prepare = (winograd_weights, groups, workers) if items is _winograd_forward_items else \
        (tile_weights,) if items is _tile_forward_items else (strip_weights,) if items is _strip_forward_items else None
    return items, count, workers, trailing, pieces(count, workers, _gemm_visits(out_shape, weight_shape)), prepare


def _path_settings():
    """The module settings that :func:`_forward_work`'s choice of path and cut reads (the
    switches and sizes a bench or a test may set between calls): a caller that keeps a
    resolved work (``cnnlab.functional.conv.BoundConv2d``) compares them before using it."""
    w = _winograd
    return (PANELS, PANEL_MAX_WEIGHT_BYTES, PANEL_CHUNK_BYTES, PANEL_TAPS, PANEL_FEW_MIN_PIXELS, PANEL_STEM_MIN_FILTERS,
            IM2COL_BY_PLANES, PLANES_MAX_EXTRA, PLANES_COPY_MACS, DIRECT_MAX_CHANNELS, INTERLEAVED_SAMPLES,
            POINTWISE_EXPANSION, POINTWISE_ROWS, POINTWISE_ROWS_MIN_CHANNELS, BLOCKS_MAX_PIXELS,
            w.WINOGRAD, w.WINOGRAD_MIN_CHANNELS, w.WINOGRAD_MIN_TILES, w.WINOGRAD_MAX_WEIGHT_BYTES,
            w.WINOGRAD_PLANES_BYTES, _tiles.TILES, _tiles.TILES_MIN_FILL, _tiles.TILES_SMALL_MAX_TAPS,
            _tiles.TILES_PANELS_MAX_TAPS, _tiles.TILES_STAGED_BYTES, _strips.STRIPS, _strips.STRIPS_MIN_FILL,
            _strips.STRIPS_CHUNK_BYTES, _strips.STRIPS_STAGED_BYTES, _strips.STRIPS_PER_PASS,
            _strips.STRIPS_MAX_SAMPLE_WEIGHT_BYTES, _strips.STRIPS_MIN_PIXELS,
            _strips.STRIPS_SMALL_MIN_TAPS, _strips.STRIPS_BEFORE_WINOGRAD_CHANNELS, _strips.STRIPS_BEFORE_WINOGRAD_TILES,
            _strips.STRIPS_ONLY_FOR_PANELS)


def _gemm_visits(out_shape, weight_shape):
    """A convolution's multiply-adds onto ``out_shape`` with weights of ``weight_shape``, in
    element visits (``config.CLAIM_MIN_WORK``'s unit: a sixteenth of a visit each, as
    :func:`cnnlab.functional.conv.conv_work` weighs the GEMM path's)."""
    return math.prod(out_shape) * math.prod(weight_shape[1:]) // 16


def _forward_path(x_shape, weight_shape, out_shape, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w,
                  groups, block_rows, workers, filter_blocks, sample_block, dtype, sealed=False, strips_allowed=True):
    """:func:`_forward_work`'s path: ``(items function, item count, workers, trailing arguments)``;
    with ``strips_allowed`` False, the path the rules choose without the strips."""
    blocks = _row_blocks(out_shape[2], block_rows)
    filters, channels_per_group, kernel_h, kernel_w = weight_shape
    small_gemm = small_gemm_limit(dtype)
    if _by_channel_blocks(weight_shape, groups, (stride_h, stride_w), out_shape[2] * out_shape[3]):
        return (_depthwise_blocks_items, x_shape[0] * -(-filters // CHANNEL_BLOCK), workers,
                (stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, block_rows))
    if _is_direct(weight_shape, groups, (stride_h, stride_w), out_shape[2] * out_shape[3], x_shape[0]):
        return (_direct_forward_items, x_shape[0] * groups * blocks, workers,
                (stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, block_rows))
    if kernel_h == kernel_w == 1 and stride_h == stride_w == 1 and pad_h == pad_w == 0 \
            and tuple(out_shape[2:]) == tuple(x_shape[2:]) \
            and not _pointwise_by_samples(out_shape, weight_shape, groups, block_rows, filter_blocks):
        # pointwise: the input is the column matrix
        by_filters = filter_blocks > 1  # else the pixels, in as many blocks as the rows were asked in
        blocks = filter_blocks if by_filters else blocks
        if _pointwise_by_rows(out_shape[2] * out_shape[3], channels_per_group, np.dtype(dtype).itemsize):
            return (_pointwise_rows_items, x_shape[0] * groups * blocks, workers,
                    (groups, blocks, by_filters, int(PANEL_CHUNK_BYTES)))
        return (_pointwise_forward_items, x_shape[0] * groups * blocks, workers,
                (groups, blocks, by_filters, small_gemm))
    strips = strips_allowed and by_strips(weight_shape, groups, (stride_h, stride_w), out_shape,
                                          np.dtype(dtype).itemsize, sealed)
    if strips and _strips.STRIPS_ONLY_FOR_PANELS:
        strips = _forward_path(x_shape, weight_shape, out_shape, stride_h, stride_w, pad_h, pad_w, dilation_h,
                               dilation_w, groups, block_rows, workers, filter_blocks, sample_block, dtype, sealed,
                               False)[0] is _panel_forward_items
    if by_winograd(weight_shape, groups, (stride_h, stride_w), (dilation_h, dilation_w), out_shape,
                   np.dtype(dtype).itemsize) and not (strips and before_winograd(weight_shape, out_shape)):
        count, rows = winograd_items(x_shape[0], groups, out_shape, channels_per_group, workers,
                                     np.dtype(dtype).itemsize)
        return _winograd_forward_items, count, workers, (pad_h, pad_w, groups, *rows)
    weight_bytes = math.prod(weight_shape) // groups * np.dtype(dtype).itemsize
    panels = filter_blocks == sample_block == 1 and (
        _by_panels(out_shape[3], kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, weight_bytes)
        or _few_channels_by_panels(weight_shape, groups, x_shape[0] * out_shape[2] * out_shape[3])
        and _panels_fit(weight_bytes))  # (taken from the direct loops)
    if strips:
        chunk, pass_rows = strip_geometry(channels_per_group, out_shape[3], kernel_h * kernel_w)
        span_w = (-(-out_shape[3] // STRIP) * STRIP - 1) * stride_w + (kernel_w - 1) * dilation_w + 1
        count, rows = strip_work(x_shape[0], filters, channels_per_group, out_shape[2], span_w, stride_h,
                                 (kernel_h - 1) * dilation_h, workers)
        return (_strip_forward_items, count, workers,
                (stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, kernel_h, kernel_w, rows, chunk, pass_rows))
    if by_tiles(weight_shape, groups, (stride_h, stride_w), out_shape, np.dtype(dtype).itemsize, panels):
        count, rows = tile_work(x_shape[0], filters, channels_per_group, out_shape[2], out_shape[3],
                                (out_shape[3] - 1) * stride_w + (kernel_w - 1) * dilation_w + 1, stride_h,
                                (kernel_h - 1) * dilation_h, workers)
        return (_tile_forward_items, count, workers,
                (stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, kernel_h, kernel_w, rows))
    sample_blocks = (x_shape[0] + sample_block - 1) // sample_block
    if _samples_innermost(out_shape, weight_shape, stride_h, stride_w, dilation_h, dilation_w, groups, block_rows,
                          filter_blocks):
        if _interleaved_by_panels(stride_w, math.prod(weight_shape) * np.dtype(dtype).itemsize):
            return (_interleaved_panel_items, sample_blocks, workers,
                    (stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, sample_block))
        return (_interleaved_forward_items, sample_blocks, workers,
                (stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, sample_block,
                 _interleaved_gemm_rows(out_shape[2], out_shape[3], sample_block, filters), small_gemm))
    if panels:
        chunk_rows = _panel_chunk_rows(filters // groups, channels_per_group,
                                       _plane_extent(out_shape[3], kernel_w, stride_w, dilation_w), stride_h, stride_w,
                                       min(block_rows, out_shape[2]), np.dtype(dtype).itemsize)
        return (_panel_forward_items, x_shape[0] * groups * blocks, workers,
                (stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, block_rows, chunk_rows,
                 int(PANEL_TAPS)))
    planes = _by_planes(out_shape[3], kernel_h, kernel_w, stride_h, stride_w, dilation_w, filters // groups)
    return (_conv2d_forward_items, sample_blocks * groups * blocks * filter_blocks, workers,
            (stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, block_rows, filter_blocks,
             sample_block, planes, small_gemm))


#: the convolutions by packed panels where :func:`_by_panels` says so (False: never)
PANELS = True


def _l2_cache_bytes(root="/sys/devices/system/cpu/cpu0/cache"):
    """The first core's L2 cache in bytes, as Linux describes it under ``root`` (its
    ``index*/level``, ``type`` and ``size`` files, the size as ``2048K`` or ``1M``); None where
    that is not known."""
    try:
        for index in sorted(os.listdir(root)):
            folder = os.path.join(root, index)
            with open(os.path.join(folder, "level")) as level, open(os.path.join(folder, "type")) as kind:
                if level.read().strip() != "2" or kind.read().strip() not in ("Unified", "Data"):
                    continue
            with open(os.path.join(folder, "size")) as size:
                text = size.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
            return int(text.rstrip("KM")) * scale
    except (OSError, ValueError):
        pass
    return None


def _panel_chunk_bytes(l2_bytes):
    """``PANEL_CHUNK_BYTES`` for a core of ``l2_bytes`` of L2 cache (None: unknown): a quarter of
    it, and at least 256 KB.

    256 KB suits the L2 caches of 512 KB and 1 MB it was measured on. With 2 MB (an Intel Xeon
    with AVX-512), 512 KB chunks compute fewer columns past the output's and copy fewer halo
    rows (``bench/panel_conv.py --threads 1``, two rounds, ms: the stride-2 reference shape
    11.71-12.18 -> 10.47-10.49, ResNet-18's 7x7 stem at batch 16 33.2-34.6 -> 31.8-32.1)."""
    return max(256 * 1024, (l2_bytes or 0) // 4)


#: the most bytes of product and planes a chunk of a panel item keeps: the L2 cache's share
PANEL_CHUNK_BYTES = _panel_chunk_bytes(_l2_cache_bytes())
#: the most taps :func:`_panel_forward_items` runs a panel's filter blocks over at a time: the
#: planes' rows those taps read stay in the L1 cache
PANEL_TAPS = 144


def _panel_chunk_rows(filters, channels, pitch, stride_h, stride_w, block_rows, itemsize):
    """Output rows :func:`_panel_forward_items` computes at a time: as many as keep the product
    of every filter (rounded up to ``MR``), ``pitch`` values a row, and the planes of the
    ``channels`` (``stride_h * stride_w`` plane rows each an output row) within
    ``PANEL_CHUNK_BYTES``, in chunks of one size (32 rows where 30 fit: two chunks of 16, not
    30 and 2); at least one, at most ``block_rows``."""
    per_row = (-(-filters // MR) * MR + channels * stride_h * stride_w) * pitch * itemsize
    fitting = max(1, min(block_rows, int(PANEL_CHUNK_BYTES) // per_row))
    return -(-block_rows // -(-block_rows // fitting))


def _by_panels(out_w, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w, weight_bytes):
    """Whether a GEMM convolution (not direct, pointwise or onto small outputs) takes
    :func:`_panel_forward_items` rather than im2col and OpenBLAS: where the processor runs
    :func:`tap_product` natively, with at most ``PANEL_MAX_WEIGHT_BYTES`` of weights a group
    (every panel reads them all: they stay in the L2 cache), where the columns it computes past
    each output row (a plane row's ``pitch`` less the output's width: ``(kernel_w - 1) *
    dilation_w`` at stride 1) are at most an eighth more, at stride 1, or at a stride of 2 by a
    window wider than the stride (each plane then serves a tap or more; a 1x1 window at stride 2
    would fill four planes to read one).

    Against im2col and OpenBLAS's GEMM, float32, 2 threads, two rounds (``bench/panel_conv.py``
    against ``--blas``), ms: the CIFAR-sized 16 to 32 channels at batch 64, 5.77-5.84 ->
    4.09-4.41; 32 to 32 channels at batch 32, 4.96-5.47 -> 3.72-4.32; 32 to 64 at 16x16,
    2.29-2.51 -> 1.99-2.16; a 5x5 window, 7.20-7.22 -> 5.12-5.18; ResNet's 56x56 layer at
    batch 32, 51.6-53.4 -> 50.5-50.8, at batch 1, 1.84-1.87 -> 1.77-1.84. Not taken: its 28x28
    layer (576 KB of weights) at batch 16, 24.1-25.3 -> 25.0-25.6; its 14x14 one (2.25 MB, and a
    seventh more columns).

    At stride 2, with each chunk's planes kept in the L2 cache and the taps in pieces
    (:func:`_panel_forward_items`; the kernel then runs at 48 GMAC/s on one thread where it ran at
    37 with an item's whole planes and all its taps at once), best of three rounds, ms: the
    stride-2 reference shape 9.36 -> 8.64; ResNet-18's 7x7 stem at batch 1 1.93 -> 1.71, at batch
    16 33.1 -> 28.6; a 5x5 window, 32 to 64 channels onto 40x40 at batch 4, 4.71 -> 4.16; 16 to 32
    channels onto 16x16 at batch 64, 1.67 -> 1.39. Not taken: a 2x2 window at stride 2 (2.39 ->
    2.40), a 1x1 one (1.69 -> 2.26)."""
    if stride_h > 2 or stride_w > 2 or (stride_h, stride_w) != (1, 1) and (
            (kernel_h - 1) * dilation_h + 1 <= stride_h or (kernel_w - 1) * dilation_w + 1 <= stride_w):
        return False
    return _panel_rows_fit(out_w, kernel_w, stride_w, dilation_w, weight_bytes)


def _panel_rows_fit(out_w, kernel_w, stride_w, dilation_w, weight_bytes):
    """:func:`_panels_fit`, and a plane row at most an eighth wider than the output row."""
    extra = _plane_extent(out_w, kernel_w, stride_w, dilation_w) - out_w
    return _panels_fit(weight_bytes) and 8 * extra <= out_w


def _panels_fit(weight_bytes):
    """Whether panels may be taken at all: turned on (``PANELS``), on a processor that runs
    :func:`tap_product` natively, for at most ``PANEL_MAX_WEIGHT_BYTES`` of weights a group."""
    return bool(PANELS) and panels_available() and weight_bytes <= PANEL_MAX_WEIGHT_BYTES


#: the most bytes of weights (a group's) a convolution by panels takes: the L2 cache's share
PANEL_MAX_WEIGHT_BYTES = 256 * 1024


def _weight_gradient_by_panels(out_w, kernel_w, stride_h, stride_w, dilation_w, weight_bytes, item_columns):
    """Whether :func:`_conv2d_backward_weight_items` takes its dot products by :func:`tap_dots`
    rather than by im2col and OpenBLAS: at stride 1, where the forward convolution would take
    panels (:func:`_by_panels`), with at most ``DOTS_MAX_SUM_BYTES`` of lane sums (a worker's:
    the weights' bytes times a vector's lanes, 8 float32 with AVX2, 16 with AVX-512), on items
    of at least ``DOTS_MIN_COLUMNS`` columns
    (``item_columns``: an item's output rows times the planes' ``pitch``; each call of
    :func:`tap_dots` costs about as much as 6 of its vector steps).

    Against im2col and OpenBLAS's GEMM, float32, 2 threads, two rounds (``bench/panel_conv.py
    --weight-gradient`` against ``--blas``), ms: the CIFAR-sized 16 to 32 channels at batch 64,
    5.65-5.89 -> 4.42-4.55; 32 to 32 at batch 32, 5.02-5.13 -> 4.08-4.34; 32 to 64 at 32x32,
    8.74-8.94 -> 8.08-8.27; a 5x5 window, 7.18-7.23 -> 5.80-5.87; ResNet's 56x56 layer at batch
    32, 52.3-52.6 -> 47.1-47.4 (at batch 1, 1.84-1.91 -> 1.89-1.93). Not taken: 32 to 64
    channels at 16x16 (288 columns an item; forced, scratch: 2.41-2.44 -> 3.14-3.26).

    With AVX-512 the lane sums of ResNet's 56x56 layer (147 KB of weights) take 2.4 MB, past the
    L2 cache: by panels it ran in 36.1-37.7 ms at batch 32 and 1.59-1.80 at batch 1, by OpenBLAS
    (SkylakeX kernels) in 29.3-35.7 and 1.14-1.27 (two rounds, same command)."""
    lanes = VECTOR_BYTES // 4  # (float32's: the sums of the dtype the rule is tuned for)
    return stride_h == stride_w == 1 and _panel_rows_fit(out_w, kernel_w, 1, dilation_w, weight_bytes) \
        and weight_bytes * lanes <= DOTS_MAX_SUM_BYTES and item_columns >= DOTS_MIN_COLUMNS


#: the most bytes of a worker's lane sums (a group's weights times a vector's float32 lanes)
#: :func:`_weight_gradient_by_panels` takes: 160 KB of weights with AVX2, 80 KB with AVX-512
DOTS_MAX_SUM_BYTES = 160 * 1024 * 8
#: the fewest columns an item of a weight gradient by panels has
DOTS_MIN_COLUMNS = 512


def _interleaved_by_panels(stride_w, weight_bytes):
    """Whether the small outputs' path multiplies by panels (:func:`_interleaved_panel_items`)
    rather than by im2col and
    OpenBLAS: at stride 1 along the rows (each tap's columns of an output row are then one run)
    and with at most ``PANEL_MAX_WEIGHT_BYTES`` of weights (see :func:`_by_panels`).

    LeNet's second layer at batch 64, 2 threads (``bench/panel_conv.py`` against ``--blas``):
    0.337-0.352 -> 0.253-0.254 ms; 32 to 64 channels onto 8x8, 1.22 -> 1.10-1.40 ms (two rounds).
    ResNet-18's 7x7 layers at batch 16 (9.4 MB of weights) ran twice as slow (scratch: 22 -> 45
    ms)."""
    return _panels_fit(weight_bytes) and stride_w == 1


def _pointwise_pixel_blocks(dtype):
    """Whether a 1x1 convolution's items are cut into cache-sized pixel blocks
    (``cnnlab.functional.conv.POINTWISE_BLOCK_BYTES``): only where its GEMMs of ``dtype`` are not
    already cut into tiles for the BLAS's small-matrix kernel (:func:`small_gemm_limit`), whose
    columns stay in the cache by themselves. On OpenBLAS's AVX2 kernels the blocks paid
    (docs/performance.md, "1x1 convolutions in cache-sized pixel blocks"); with the AVX-512
    tiles, whole samples ran faster at batch 16 and as fast at batch 1
    (``bench/pointwise_blocks.py`` against ``--blocks``)."""
    return not small_gemm_limit(dtype)


def _pointwise_by_rows(pixels, channels, itemsize):
    """Whether a 1x1 convolution at stride 1 (no padding) of ``pixels`` pixels a plane and
    ``channels`` input channels a group takes :func:`_pointwise_rows_items` rather than a GEMM
    a sample: ``POINTWISE_ROWS`` set, the processor runs :func:`tap_rows` with 512-bit vectors
    (AVX-512: where it was measured), a plane holds a vector of pixels at least, and the sums
    are ``POINTWISE_ROWS_MIN_CHANNELS`` long at least. MobileNetV2's 1x1 layers at batch 1,
    bound, 2 threads (``bench/pointwise_rows.py``, two runs): from 96 channels, 0.77-0.99 of
    the GEMM's time (its projections at every size, its expansions onto 14x14 and 7x7 maps);
    from 16 to 64 channels, 0.96-1.15 (docs/performance.md, "Blocks of a network as one
    call")."""
    return bool(POINTWISE_ROWS) and panels_available() and VECTOR_BYTES == 64 \
        and pixels >= VECTOR_BYTES // itemsize and channels >= POINTWISE_ROWS_MIN_CHANNELS


#: 1x1 convolutions by :func:`tap_rows` where :func:`_pointwise_by_rows` says so (False: never)
POINTWISE_ROWS = True
#: the fewest input channels (a group's) of a 1x1 convolution by :func:`tap_rows`
POINTWISE_ROWS_MIN_CHANNELS = 96


def _pointwise_by_samples(out_shape, weight_shape, groups, block_rows, filter_blocks):
    """Whether a 1x1 convolution (stride 1, no padding) onto small outputs takes the
    samples-innermost path (:func:`_samples_innermost`) rather than a GEMM per sample straight
    on its input: where it expands the channels ``POINTWISE_EXPANSION`` times or more, so that
    the weights (the larger operand) are read once for a block of samples, not once a sample.
    MobileNetV2's 7x7 layers at batch 16, 2 threads, three rounds against ``--per-sample``
    (``bench/pointwise_blocks.py --small``): 160 to 960 channels 1.49-1.51 -> 1.13-1.15 ms, 320
    to 1280 3.44-3.57 -> 3.02-3.07 ms. Those that shrink the channels were no faster that way
    (``--expansion 0`` against the rule, two rounds: 960 to 160 1.31-1.37 against 1.23-1.28 ms,
    576 to 160 0.79-0.81 against 0.75-0.78, 960 to 320 2.28-2.30 against 2.31-2.47)."""
    return weight_shape[0] // groups >= POINTWISE_EXPANSION * weight_shape[1] \
        and _samples_innermost(out_shape, weight_shape, 1, 1, 1, 1, groups, block_rows, filter_blocks)


#: the least ratio of filters to channels (per group) at which :func:`_pointwise_by_samples` holds
POINTWISE_EXPANSION = 4


def _samples_innermost(out_shape, weight_shape, stride_h, stride_w, dilation_h, dilation_w, groups, block_rows,
                       filter_blocks):
    """Whether a GEMM convolution takes :func:`_interleaved_forward_items`: small outputs (fewer
    than ``GEMM_MIN_COLUMNS`` pixels) of one group, computed a whole sample at a time (not cut
    into row or filter blocks), by a window whose reads leave no gap (at least as wide as its
    stride: a 1x1 window at stride 2 would copy input it never reads). Whatever the block of
    samples, so that a model's first calls on two samples (the warm-up's recording) take the
    same path as its batches."""
    out_h, out_w = out_shape[2], out_shape[3]
    kernel_h, kernel_w = weight_shape[2], weight_shape[3]
    return groups == 1 and filter_blocks == 1 and block_rows >= out_h and out_h * out_w < int(config.GEMM_MIN_COLUMNS) \
        and (kernel_h - 1) * dilation_h + 1 >= stride_h and (kernel_w - 1) * dilation_w + 1 >= stride_w


#: the most samples an item of a convolution onto small outputs takes, forward and weight gradient
#: (:func:`_interleaved_forward_items`, :func:`_interleaved_weight_gradient_items`)
INTERLEAVED_SAMPLES = 8


def _interleaved_sample_block(samples, threads, budget=INTERLEAVED_SAMPLES, panel_columns=0, itemsize=4):
    """Samples per item of the small-output path: blocks of at most ``INTERLEAVED_SAMPLES`` (and
    ``budget``) samples, in a number of blocks ``threads`` share evenly (20 samples on two
    threads in blocks of 5, not 8, 8, 4); one sample a block where there are no more samples
    than threads.

    By panels (:func:`_interleaved_panel_items`, ``panel_columns`` the output's width), each
    output row of a block, ``panel_columns`` times the block's samples wide, is rounded up to
    whole panels; the block is then the one, from half that size to twice it (within
    ``budget``), whose items take the fewest panels on the busiest thread, the default size
    first, then the smaller. LeNet's second layer at batch 64 with 48-column panels (AVX-512):
    8 samples make 64 columns, two panels a row; 6 make one (``bench/panel_conv.py``, 2 threads,
    three rounds: 0.156-0.182 -> 0.134-0.147 ms; 32 to 64 channels onto 8x8 at batch 64,
    0.818-0.880 -> 0.664-0.701)."""
    blocks = -(-max(threads, -(-samples // max(1, min(budget, INTERLEAVED_SAMPLES)))) // threads) * threads
    block = max(1, -(-samples // blocks))
    if panel_columns <= 0 or block >= samples:
        return block
    nr = PANEL_BYTES // itemsize

    def busiest(size):  # panels a row times the items of the busiest thread
        items = -(-samples // size)
        return -(-items // threads) * -(-panel_columns * size // nr)

    sizes = [block] + list(range(max(1, (block + 1) // 2), min(samples, 2 * block, max(block, budget)) + 1))
    return min(sizes, key=busiest)


def _interleaved_gemm_rows(out_h, out_w, sample_block, filters):
    """The output rows each GEMM of :func:`_interleaved_forward_items` takes: as many as make
    ``max(GEMM_MIN_COLUMNS, 2 * filters)`` columns, at least one."""
    columns = max(int(config.GEMM_MIN_COLUMNS), 2 * filters)
    return max(1, min(out_h, columns // (out_w * sample_block)))


def _paired_work(x_shape, weight_shape, out_shape, geometry_args, second_work, workers, dtype):
    """How a 1x1 convolution (stride 1, no padding, one group) and the depthwise convolution of
    as many channels that reads its output (``second_work``, its :func:`_forward_work`) run as
    one loop on the threading layer, share ``i`` of the second on the thread that ran share
    ``i`` of the first and reading only what that share wrote
    (``cnnlab.kernels.cpu.run_conv2d_pair_on_layer``):
    ``(items, trailing, first_edges, second_edges)``, the first's items function and its
    arguments after the arrays and epilogue, then both kernels' share edges; None where the two
    cannot be split alike (another path for either, filters that do not fall into whole units,
    fewer units than ``workers``).

    The first's items are its filters in units of what the second's item takes (16 channels
    by channel blocks, ``MR`` where it computes one channel an item, by rows) for each sample,
    in the same order as the second's, so that the same shares of both cover the same
    channels of the same samples. ``geometry_args``: the first's geometry (``stride_h`` to
    ``workers``, as :func:`conv2d_forward` takes them)."""
    samples, filters = x_shape[0], weight_shape[0]
    items, count = second_work[0], second_work[1]
    if items is _depthwise_blocks_items:
        unit = CHANNEL_BLOCK
        per_unit = 1
    elif items is _direct_forward_items and count % (samples * filters) == 0:
        unit = MR
        per_unit = MR * (count // (samples * filters))
    else:
        return None
    units = filters // unit
    if filters % unit or samples * units < workers or second_work[5] is not None:
        return None
    first = _forward_work(x_shape, weight_shape, out_shape, *geometry_args[:-1], workers, units, 1, dtype=dtype)
    if first[0] not in (_pointwise_rows_items, _pointwise_forward_items) or first[1] != samples * units \
            or not first[3][2]:
        return None
    first_edges = edges(shares(first[1], workers))
    return first[0], first[3], first_edges, first_edges * per_unit


def _calls_blas(work):
    """Whether :func:`_run_forward` of ``work`` (from :func:`_forward_work`) calls BLAS: the GEMM
    paths (im2col, pointwise, the small outputs' GEMMs) do, and their caller holds the BLAS pool
    to one thread; the direct, panel, tile, strip and F(2x2, 3x3) paths never do."""
    return work[0] in (_conv2d_forward_items, _pointwise_forward_items, _interleaved_forward_items)


def _run_forward(work, x, weight, scale, shift, residual, has_residual, activation, low, high, out,
                 compiled_shares=None):
    """:func:`conv2d_forward` of these arrays (its arguments; ``has_residual`` a bool,
    ``activation`` an int, ``low`` and ``high`` floats) for ``work`` from :func:`_forward_work`:
    :func:`run_shared`'s work, with its pieces worked out once, in the work.

    With ``compiled_shares`` (a dict, empty at first, in which the caller keeps the items'
    compiled address and the shares' edges for its next calls; None: the team), work of one
    even share per thread (too small to be claimed in pieces) is shared by Numba's threading layer from compiled code
    (:func:`cnnlab.kernels.cpu._schedule.run_on_layer`) rather than by the kernels' thread team.
    The team hands the second share to a resident thread that must take the GIL and call the
    items from Python: it starts about 11 us after the hand (``bench/team_wait.py``), which a
    batch-1 MobileNetV2 layer of 50-150 us feels; the threading layer's worker starts the
    compiled share at once. Only the inference plan's bound steps ask for it: their steps run
    again and again, and the layer's driver compiles once per kind of arguments."""
    items, count, workers, trailing, bounds, prepare = work
    shared = _on_layer(work, compiled_shares)
    if prepare is not None:
        weight = _prepared_weight(weight, prepare, shared)
    arguments = (x, weight, scale, shift, residual, has_residual, activation, low, high, out, *trailing)
    if workers == 1:
        items(*arguments, 0, count)
    elif shared:
        address_and_edges = compiled_shares.get(items)
        if address_and_edges is None:  # (the bound call's arrays keep their types: shapes, dtypes and layout)
            address_and_edges = compiled_shares[items] = (compiled_address(items, arguments), edges(bounds))
        run_on_layer(items, arguments, address_and_edges[1], address_and_edges[0])
    else:
        run_pieces(items, [arguments + piece for piece in bounds], workers)


def _sealed(weight):
    """Whether ``weight`` cannot be written: a read-only view of a read-only array that owns its
    data (what :meth:`cnnlab.Model.lock_weights` makes of the parameters), whose flag cannot be
    set back (NumPy refuses it for a view of a read-only array). Only these have their
    preparation for a path kept from one call to the next (:func:`_prepared_weight`)."""
    base = weight.base
    return not weight.flags.writeable and type(base) is np.ndarray and base.flags.owndata \
        and not base.flags.writeable


def _sealed_copy(array):
    """A :func:`_sealed` array of ``array``'s values: a read-only view of a read-only copy."""
    base = np.array(array)
    base.flags.writeable = False
    view = base.view()
    view.flags.writeable = False
    return view


_PREPARED = {}  # id(weight) -> (weak reference to it, its preparation's function and arguments, the result)


def _prepared_weight(weight, prepare, shared):
    """``weight`` as the items take it: ``prepare[0](weight, *prepare[1:], shared)``, made at
    each call, or, for a :func:`_sealed` weight, made once and kept while the array lives (its
    values cannot change)."""
    if not _sealed(weight):
        return prepare[0](weight, *prepare[1:], shared)
    key = id(weight)
    kept = _PREPARED.get(key)
    if kept is not None and kept[0]() is weight and kept[1] == prepare:
        return kept[2]
    made = prepare[0](weight, *prepare[1:], shared)
    _PREPARED[key] = (weakref.ref(weight, lambda _, key=key: _PREPARED.pop(key, None)), prepare, made)
    return made


def _layer_shares(work, compiled_shares):
    """``(items, trailing, edges, address)`` where :func:`_run_forward` shares ``work`` on Numba's
    threading layer with nothing to prepare per call (no weight transform) and an earlier call
    kept the items' compiled address in ``compiled_shares``; None otherwise. A caller that repeats
    the call (a bound convolution) then runs it as :func:`_run_forward` would, by
    ``run_on_layer(items, arguments + trailing, edges, address)``, its ``arguments`` those of
    :func:`_run_forward` after ``work``, without looking the path up again."""
    items, _, _, trailing, _, prepare = work
    if prepare is not None or not _on_layer(work, compiled_shares):
        return None
    kept = compiled_shares.get(items)
    return None if kept is None else (items, trailing, kept[1], kept[0])


def _on_layer(work, compiled_shares):
    """Whether :func:`_run_forward` shares ``work`` on Numba's threading layer: asked to
    (``compiled_shares`` a dict), in even shares, one a thread (work too small to be claimed in
    pieces)."""
    workers, bounds = work[2], work[4]
    return compiled_shares is not None and workers > 1 and len(bounds) == workers


@njit(cache=True)
def _col2im(columns, grad_x, n, first_channel, first_row, rows, kernel_h, kernel_w, out_w,
            stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w):
    """Add each column-buffer entry back onto the input pixel it was copied from
    (the adjoint of :func:`_im2col`); padding positions are dropped. Each tap's columns that
    land inside the image are worked out once, so the inner loop tests nothing."""
    height, width = grad_x.shape[2], grad_x.shape[3]
    for tap in range(columns.shape[0]):
        channel = first_channel + tap // (kernel_h * kernel_w)
        i = (tap // kernel_w) % kernel_h
        offset = (tap % kernel_w) * dilation_w - pad_w  # input column of output column 0
        first = max(0, -((offset // stride_w)))  # the first output column with offset + ow*stride >= 0
        last = min(out_w, (width - 1 - offset) // stride_w + 1) if width - 1 - offset >= 0 else 0
        for r in range(rows):
            h = (first_row + r) * stride_h - pad_h + i * dilation_h
            if h < 0 or h >= height:
                continue
            line = grad_x[n, channel, h]
            source = columns[tap, r * out_w:(r + 1) * out_w]
            for ow in range(first, last):
                line[np.uint64(offset + ow * stride_w)] += source[ow]


@njit(cache=True)
def _owned_rows(block, blocks, block_rows, stride_h, pad_h, height):
    """The input rows ``[lo, hi)`` row block ``block`` of the output gradient owns: the blocks'
    ranges split ``0 .. height`` in order, and a block's windows start inside its own range."""
    lo = 0 if block == 0 else min(max(block * block_rows * stride_h - pad_h, 0), height)
    hi = height if block == blocks - 1 else min(max((block + 1) * block_rows * stride_h - pad_h, 0), height)
    return lo, hi


@njit(cache=True, nogil=True)
def _conv2d_backward_input_items(grad_out, weight_t, grad_x, kernel_h, kernel_w, stride_h, stride_w,
                                 pad_h, pad_w, dilation_h, dilation_w, groups, block_rows, small_gemm, phase,
                                 first_item, last_item):
    """(sample, group, row block) items ``first_item .. last_item-1`` of :func:`conv2d_backward_input`
    in ``phase``; ``weight_t`` is (groups, taps, filters per group). The column gradient's GEMM
    is cut to ``small_gemm`` multiply-adds a piece (:func:`_gemm_in_small_pieces`).

    Phase 0 (windows that do not overlap along the height: each block of output rows writes its
    own input rows): every block zeroes its rows and adds its columns. Where the windows
    overlap, a block also adds onto the first rows of the next block, so the blocks go in two
    phases: 1, the even blocks zero their own and the next block's rows and add their columns;
    2, the odd blocks add theirs. Each pixel then receives its sums in the same order whatever
    the number of threads."""
    samples = grad_x.shape[0]
    taps, filters_per_group = weight_t.shape[1], weight_t.shape[2]
    channels_per_group = grad_x.shape[1] // groups
    height = grad_x.shape[2]
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    grad_by_group = grad_out.reshape(samples, groups, filters_per_group, out_h * out_w)
    blocks = (out_h + block_rows - 1) // block_rows
    per_piece = blocks if phase == 0 else (blocks + 2 - phase) // 2  # this phase's blocks per (sample, group)
    column_buffer = np.empty(taps * block_rows * out_w, dtype=grad_x.dtype)
    for item in range(first_item, last_item):
        n = item // (groups * per_piece)
        g = (item // per_piece) % groups
        block = item % per_piece if phase == 0 else 2 * (item % per_piece) + phase - 1
        first_channel = g * channels_per_group
        lo, hi = _owned_rows(block, blocks, block_rows, stride_h, pad_h, height)
        if phase == 1 and block + 1 < blocks:
            hi = _owned_rows(block + 1, blocks, block_rows, stride_h, pad_h, height)[1]
        if phase < 2:
            for c in range(first_channel, first_channel + channels_per_group):
                for h in range(lo, hi):
                    line = grad_x[n, c, h]
                    for w in range(line.shape[0]):
                        line[w] = 0
        first_row = block * block_rows
        rows = min(block_rows, out_h - first_row)
        pixels = rows * out_w
        columns = column_buffer[:taps * pixels].reshape(taps, pixels)
        _gemm_in_small_pieces(taps, pixels, filters_per_group, weight_t[g], filters_per_group,
                              grad_by_group[n, g, :, first_row * out_w:], out_h * out_w, 0.0, columns, pixels,
                              small_gemm)
        _col2im(columns, grad_x, n, first_channel, first_row, rows, kernel_h, kernel_w, out_w,
                stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w)


def conv2d_flipped_weight(weight, groups, out):
    """The weight of the convolution that maps a stride-1 convolution's output gradient to its
    input gradient: each group's filters and channels swapped, the window turned by 180 degrees.

    A copy that memory bounds: the filters are shared between the threads where the weight is
    worth it (``run_split``). ResNet-18's 512 by 512 3x3 weight, medians of three rounds of
    ``bench/small_kernels.py`` against the version on one thread: 2.25-2.32 -> 1.18-1.31 ms
    (256 by 256: 0.53-0.57 -> 0.31-0.33 ms); a training step at batch 16 makes 13 of these,
    three of the larger size.

    Parameters
    ----------
    weight : (F, C // groups, KH, KW) array
    groups : int
    out : (C, F // groups, KH, KW) array of the same dtype, overwritten:
        ``out[g*Cg + c, f, i, j] = weight[g*Fg + f, c, KH-1-i, KW-1-j]``
    """
    run_split(_flipped_weight_items, weight.shape[0], weight.size, weight, groups, out)


@njit(cache=True, nogil=True)
def _flipped_weight_items(weight, groups, out, first_item, last_item):
    """Filters ``first_item .. last_item - 1`` (group-major) of :func:`conv2d_flipped_weight`."""
    filters, channels_per_group, kernel_h, kernel_w = weight.shape
    filters_per_group = filters // groups
    for item in range(first_item, last_item):
        g, f = item // filters_per_group, item % filters_per_group
        for c in range(channels_per_group):
            for i in range(kernel_h):
                for j in range(kernel_w):
                    out[g * channels_per_group + c, f, i, j] = weight[item, c, kernel_h - 1 - i, kernel_w - 1 - j]


#: the filters :func:`_transposed_weight` moves at a time
TRANSPOSE_TILE = 16


@njit(cache=True)
def _transposed_weight(weight, groups):
    """``weight`` (F, Cg, KH, KW) as (groups, Cg*KH*KW, F // groups): each group's matrix
    transposed, contiguous for the GEMM."""
    filters = weight.shape[0]
    filters_per_group = filters // groups
    taps = weight.shape[1] * weight.shape[2] * weight.shape[3]
    flat = weight.reshape(filters, taps)
    weight_t = np.empty((groups, taps, filters_per_group), dtype=weight.dtype)
    for g in range(groups):
        # a tile of filters at a time: its writes a run of the tile's filters for each tap, its
        # reads the tile's rows along (one filter at a time wrote a value per tap a whole row of
        # filters apart, a cache line each)
        for first in range(0, filters_per_group, TRANSPOSE_TILE):
            for t in range(taps):
                for f in range(first, min(filters_per_group, first + TRANSPOSE_TILE)):
                    weight_t[g, t, f] = flat[g * filters_per_group + f, t]
    return weight_t


def _tiling_windows(x_shape, out_shape, weight_shape, stride_h, stride_w, pad_h, pad_w):
    """Whether the windows of a convolution of input ``x_shape`` onto ``out_shape`` tile the
    input exactly: each window as many taps as its stride, no padding, and the input as large
    as the strides make (a transposed convolution whose stride is its window, as the text
    detectors' 2x2 upsampling: each pixel then receives one value, :func:`_tiled_input_items`).
    The size rules out dilated windows (their holes make the input larger: a window reaches
    ``(KH - 1) * DH + 1`` rows), so the dilation need not be asked."""
    return weight_shape[2] == stride_h and weight_shape[3] == stride_w and pad_h == pad_w == 0 \
        and x_shape[2] == out_shape[2] * stride_h and x_shape[3] == out_shape[3] * stride_w


#: the most bytes of column gradient an item of :func:`_tiled_input_items` makes
TILED_COLUMN_BYTES = 1 << 20


def _tiled_blocks(samples, channels, window, out_h, out_w, itemsize, workers):
    """``(channels, rows)`` an item of :func:`_tiled_input_items` takes, of ``channels`` input
    channels and ``out_h`` rows of the output gradient a (sample, group), for ``samples``
    (sample, group) pairs: as many blocks of channels as give ``workers`` threads two items
    each, then, where the channels are too few, blocks of rows too; fewer where an item's
    column gradient (``window`` taps a channel, ``itemsize`` bytes a value) would pass
    ``TILED_COLUMN_BYTES``."""
    wanted = -(-2 * workers // samples)  # items a (sample, group)
    block = max(1, min(-(-channels // wanted), TILED_COLUMN_BYTES // (window * out_h * out_w * itemsize)))
    row_blocks = max(-(-wanted // -(-channels // block)), -(-block * window * out_h * out_w * itemsize
                                                           // TILED_COLUMN_BYTES))
    return block, -(-out_h // min(out_h, row_blocks))


@njit(cache=True, nogil=True)
def _tiled_input_items(grad_out, weight_t, grad_x, kernel_h, kernel_w, groups, channel_block, block_rows, small_gemm,
                       first_item, last_item):
    """Items of :func:`conv2d_backward_input` whose windows tile the input
    (:func:`_tiling_windows`): an item is a (sample, group, block of ``channel_block`` input
    channels, block of ``block_rows`` rows of the output gradient). The item's column
    gradient, the rows of ``weight_t`` (groups, taps, filters per group) for its channels' taps
    times its rows of the output gradient, is one GEMM (cut to ``small_gemm`` multiply-adds a
    piece); each tap's row then goes into every ``kernel_h``-th row and ``kernel_w``-th column
    of its channel from the tap's offset. Every pixel receives one value: nothing is zeroed or
    added. Against the row blocks of :func:`_conv2d_backward_input_items` (zeros, a GEMM a
    block, the columns added), 2 threads: a text detector's 2x2 upsampling of 24 channels at
    80x80, batch 1, 0.42-0.45 -> 0.25-0.27 ms; at batch 4 1.53-1.60 -> 0.93-1.00 ms."""
    samples = grad_x.shape[0]
    filters_per_group = weight_t.shape[2]
    channels_per_group = grad_x.shape[1] // groups
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    window = kernel_h * kernel_w
    channel_blocks = (channels_per_group + channel_block - 1) // channel_block
    row_blocks = (out_h + block_rows - 1) // block_rows
    grad_by_group = grad_out.reshape(samples, groups, filters_per_group, out_h * out_w)
    column_buffer = np.empty(channel_block * window * block_rows * out_w, dtype=grad_x.dtype)
    for item in range(first_item, last_item):
        n, g = item // (groups * channel_blocks * row_blocks), (item // (channel_blocks * row_blocks)) % groups
        first_channel = (item // row_blocks) % channel_blocks * channel_block
        first_row = item % row_blocks * block_rows
        rows, taps = min(block_rows, out_h - first_row), min(channel_block, channels_per_group - first_channel) * window
        pixels = rows * out_w
        columns = column_buffer[:taps * pixels].reshape(taps, pixels)
        _gemm_in_small_pieces(taps, pixels, filters_per_group, weight_t[g, first_channel * window:], filters_per_group,
                              grad_by_group[n, g, :, first_row * out_w:], out_h * out_w, 0.0, columns, pixels,
                              small_gemm)
        for t in range(taps):
            plane = grad_x[n, g * channels_per_group + first_channel + t // window]
            i, j = (t // kernel_w) % kernel_h, t % kernel_w
            source = columns[t]
            for r in range(rows):
                line = plane[(first_row + r) * kernel_h + i]
                for q in range(out_w):
                    line[np.uint64(q * kernel_w + j)] = source[np.uint64(r * out_w + q)]


def conv2d_backward_input(grad_out, weight, grad_x, stride_h, stride_w, pad_h, pad_w,
                          dilation_h, dilation_w, groups, block_rows, workers):
    """Gradient of :func:`conv2d_forward` with respect to its input, written into ``grad_x``
    (also the forward pass of a transposed convolution).

    For each (sample, group, block of output rows) the column gradient ``weight[g].T @
    grad_out[n, g, rows]`` is one GEMM, read in place; :func:`_col2im` adds it back onto the
    input pixels. A thread owns whole row blocks, hence their input rows: where windows overlap
    along the height, the even blocks go first, then the odd ones, so no two threads add to the
    same pixel.

    Parameters
    ----------
    grad_out : (N, F, OH, OW) array
    weight : (F, C // groups, KH, KW) array
    grad_x : (N, C, H, W) array, overwritten
    stride_h, ..., block_rows, workers : int
        As :func:`conv2d_forward`.
    """
    out_h = grad_out.shape[2]
    reach_h = (weight.shape[2] - 1) * dilation_h + 1
    overlap = reach_h > stride_h
    samples = grad_x.shape[0] * groups  # (sample, group) pairs
    if overlap:
        if samples < workers:  # each phase needs a block per thread: twice the blocks
            block_rows = min(block_rows, -(-out_h // (2 * -(-workers // samples))))
        # a block's windows must not reach past the next block
        block_rows = min(out_h, max(block_rows, -(-(reach_h - stride_h) // stride_h)))
    blocks = _row_blocks(out_h, block_rows)
    weight_t = _transposed_weight(weight, groups)
    small_gemm = small_gemm_limit(grad_x.dtype)
    arguments = (grad_out, weight_t, grad_x, weight.shape[2], weight.shape[3], stride_h, stride_w, pad_h, pad_w,
                 dilation_h, dilation_w, groups, block_rows, small_gemm)
    work = _gemm_visits(grad_out.shape, weight.shape)
    if _tiling_windows(grad_x.shape, grad_out.shape, weight.shape, stride_h, stride_w, pad_h, pad_w):
        channels = grad_x.shape[1] // groups
        block, rows = _tiled_blocks(samples, channels, weight.shape[2] * weight.shape[3], out_h, grad_out.shape[3],
                                    grad_x.itemsize, workers)
        run_shared(_tiled_input_items, samples * -(-channels // block) * -(-out_h // rows), workers, grad_out,
                   weight_t, grad_x, weight.shape[2], weight.shape[3], groups, block, rows, small_gemm, work=work)
        return
    if not overlap:
        run_shared(_conv2d_backward_input_items, samples * blocks, workers, *arguments, 0, work=work)
        return
    run_shared(_conv2d_backward_input_items, samples * ((blocks + 1) // 2), workers, *arguments, 1, work=work // 2)
    if blocks > 1:
        run_shared(_conv2d_backward_input_items, samples * (blocks // 2), workers, *arguments, 2, work=work // 2)


@njit(cache=True)
def _transpose_into(rows, out):
    """``out[p, f] = rows[f, p]``: ``rows`` (F, P), ``out`` (P, F), C-contiguous rows, in blocks
    of 16 columns of ``rows`` (its reads contiguous, its writes within a few cache lines)."""
    filters, pixels = rows.shape
    for p0 in range(0, pixels, 16):
        for f in range(filters):
            line = rows[f]
            for p in range(p0, min(p0 + 16, pixels)):
                out[p, f] = line[p]


@njit(cache=True, nogil=True)
def _conv2d_backward_weight_items(x, grad_out, partial_weight, partial_bias, kernel_h, kernel_w, stride_h,
                                  stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, block_rows,
                                  small_gemm, planes, panels, first_item, last_item):
    """Adds the weight and bias gradients of items ``first_item .. last_item-1`` to one
    worker's accumulators ``partial_weight`` (groups, taps, Fg: each group's gradient
    transposed) and ``partial_bias`` (F,).

    The product of an item's columns and its output gradient is one GEMM against the gradient
    read in place (``columns @ rows.T``), or, where the BLAS has a small-matrix kernel
    (``small_gemm``, its limit), GEMMs of that size against a transposed copy of the gradient's
    rows (:func:`_gemm_in_small_pieces`). With ``planes`` (:func:`_by_planes`, as the forward)
    the columns are copied through polyphase planes, ``pitch`` columns per output row, and the
    gradient's rows are copied as wide, the extra columns zero (they add nothing).

    With ``panels`` (and ``planes``: :func:`_weight_gradient_by_panels`) there are no columns
    and no GEMM: the input rows go into the planes only, and :func:`tap_dots` takes the dot
    products of ``DOT_ROWS`` of the widened gradient rows with ``DOT_TAPS`` taps' runs of the
    planes at a time, straight from both, in vector lanes."""
    samples = x.shape[0]
    taps, filters_per_group = partial_weight.shape[1], partial_weight.shape[2]
    channels_per_group = x.shape[1] // groups
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    grad_by_group = grad_out.reshape(samples, groups, filters_per_group, out_h * out_w)
    flat_grad = grad_out.reshape(grad_out.size)
    blocks = (out_h + block_rows - 1) // block_rows
    pitch, plane_rows, channel_size, padded, offsets = _planes_layout(x, channels_per_group if planes else 0,
                                                                      block_rows, out_w, kernel_h, kernel_w,
                                                                      stride_h, stride_w, dilation_h, dilation_w)
    if not planes:
        pitch = out_w
    column_buffer = np.empty(0 if panels else taps * block_rows * pitch, dtype=x.dtype)
    # the gradient's rows, pitch wide (zeros past the output's columns, never written), or transposed
    wide_rows = np.zeros(filters_per_group * block_rows * pitch if planes and not panels else 0, dtype=x.dtype)
    transposed_buffer = np.zeros(block_rows * pitch * filters_per_group if small_gemm else 0, dtype=x.dtype)
    lanes = VECTOR_BYTES // x.itemsize
    dots_pitch = (block_rows * pitch + lanes - 1) // lanes * lanes  # (a filter's gradient rows, whole vectors)
    dots_rows = np.zeros((filters_per_group + DOT_ROWS) * dots_pitch if panels else 0, dtype=x.dtype)
    tap_offsets = _planes_tap_offsets(offsets, taps if panels else 0, channel_size, DOT_TAPS)
    # the dot products' lanes, a group's blocks of DOT_ROWS filters by DOT_TAPS taps
    group_sums = -(-filters_per_group // DOT_ROWS) * -(-taps // DOT_TAPS) * DOT_ROWS * DOT_TAPS * lanes
    sums = np.zeros(groups * group_sums if panels else 0, dtype=x.dtype)
    for item in range(first_item, last_item):
        n = item // (groups * blocks)
        g = (item // blocks) % groups
        first_row = (item % blocks) * block_rows
        rows = min(block_rows, out_h - first_row)
        pixels = rows * out_w
        wide = rows * pitch
        first_pixel = first_row * out_w
        gradient = grad_by_group[n, g, :, first_pixel:first_pixel + pixels]
        for f in range(filters_per_group):  # (a contiguous 1-D slice: the sum vectorizes)
            start = ((n * groups + g) * filters_per_group + f) * out_h * out_w + first_pixel
            partial_bias[g * filters_per_group + f] += _float64_sum(flat_grad[start:start + pixels])
        if panels:
            _weight_gradient_dots(x[n], g * channels_per_group, channels_per_group, first_row, rows, gradient,
                                  sums[g * group_sums:(g + 1) * group_sums], padded, channel_size, pitch, plane_rows,
                                  tap_offsets, dots_rows, dots_pitch, kernel_h, stride_h, stride_w, pad_h, pad_w,
                                  dilation_h)
            continue
        columns = column_buffer[:taps * wide].reshape(taps, wide)
        if planes:
            _im2col_by_planes(x, n, g * channels_per_group, first_row, rows, columns, kernel_h, stride_h, stride_w,
                              pad_h, pad_w, dilation_h, padded, channel_size, pitch, plane_rows, offsets, FIRST)
        else:
            _columns(x, n, g * channels_per_group, first_row, rows, columns, kernel_h, kernel_w,
                     out_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, FIRST)
        # the item's columns times its gradient rows, added to the transposed accumulator
        if small_gemm and taps * filters_per_group * wide > small_gemm:
            transposed = transposed_buffer[:wide * filters_per_group].reshape(wide, filters_per_group)
            for r in range(rows):
                _transpose_into(gradient[:, r * out_w:(r + 1) * out_w], transposed[r * pitch:r * pitch + out_w])
            _gemm_in_small_pieces(taps, filters_per_group, wide, columns, wide, transposed, filters_per_group,
                                  1.0, partial_weight[g], filters_per_group, small_gemm)
        elif planes:
            rows_wide = wide_rows[:filters_per_group * wide].reshape(filters_per_group, wide)
            for f in range(filters_per_group):
                for r in range(rows):
                    for k in range(out_w):
                        rows_wide[f, np.uint64(r * pitch + k)] = gradient[f, np.uint64(r * out_w + k)]
            gemm_rows_bt(taps, filters_per_group, wide, columns, wide, rows_wide, wide, 1.0, partial_weight[g],
                         filters_per_group)
        else:  # the rows read in place: OpenBLAS runs columns @ rows.T 1.3-1.6x faster than rows @ columns.T
            # on these shapes (32 or 64 filters, 288 taps, 256-1024 pixels: 43-48 against 27-38
            # GMAC/s on one core)
            gemm_rows_bt(taps, filters_per_group, pixels, columns, pixels, grad_by_group[n, g, :, first_pixel:],
                         out_h * out_w, 1.0, partial_weight[g], filters_per_group)
    for g in range(groups if panels else 0):
        _weight_gradient_from_lanes(sums[g * group_sums:(g + 1) * group_sums], partial_weight[g], lanes)


@njit(cache=True)
def _weight_gradient_dots(sample, first_channel, channels, first_row, rows, gradient, sums, padded, channel_size,
                          pitch, plane_rows, tap_offsets, dots_rows, dots_pitch, kernel_h, stride_h, stride_w, pad_h,
                          pad_w, dilation_h):
    """One item of :func:`_conv2d_backward_weight_items` by panels: ``sums`` plus the dot
    products of the item's output-gradient rows (``gradient``, Fg x its pixels) with each tap's
    columns, lane by lane (:func:`tap_dots`: blocks of ``DOT_ROWS`` filters by ``DOT_TAPS``
    taps, a block's lanes together). The input rows go into the planes (:func:`_fill_planes`),
    the gradient's rows into ``dots_rows`` ``pitch`` wide, zeros past the output's columns and
    up to whole vectors (so that the planes' extra columns add nothing)."""
    filters = gradient.shape[0]
    taps = tap_offsets.shape[0] - DOT_TAPS
    out_w = gradient.shape[1] // rows
    lanes = VECTOR_BYTES // padded.itemsize
    wide = rows * pitch
    vectors = (wide + lanes - 1) // lanes
    for c in range(channels):
        _fill_planes(sample[first_channel + c], first_row * stride_h - pad_h,
                     (rows - 1) * stride_h + (kernel_h - 1) * dilation_h + 1, pad_w, padded, c * channel_size,
                     pitch, plane_rows, stride_h, stride_w)
    for f in range(filters):
        base = f * dots_pitch
        for r in range(rows):
            for k in range(out_w):
                dots_rows[np.uint64(base + r * pitch + k)] = gradient[f, np.uint64(r * out_w + k)]
        for q in range(wide, vectors * lanes):  # (a later row of an earlier, longer item)
            dots_rows[base + q] = 0
    block = DOT_ROWS * DOT_TAPS * lanes
    for f0 in range(0, filters, DOT_ROWS):
        for t0 in range(0, taps, DOT_TAPS):
            tap_dots(dots_rows, f0 * dots_pitch, dots_pitch, padded, 0, tap_offsets, t0, sums,
                     ((f0 // DOT_ROWS) * ((taps + DOT_TAPS - 1) // DOT_TAPS) + t0 // DOT_TAPS) * block, vectors)


@njit(cache=True)
def _weight_gradient_from_lanes(sums, accumulator, lanes):
    """``accumulator`` (taps, Fg) plus :func:`_weight_gradient_dots`'s lane sums, each block's
    lanes added up in order."""
    taps, filters = accumulator.shape
    tap_blocks = (taps + DOT_TAPS - 1) // DOT_TAPS
    for f in range(filters):
        for t in range(taps):
            start = (((f // DOT_ROWS) * tap_blocks + t // DOT_TAPS) * DOT_ROWS * DOT_TAPS
                     + (f % DOT_ROWS) * DOT_TAPS + t % DOT_TAPS) * lanes
            total = sums[start]
            for lane in range(1, lanes):
                total += sums[start + lane]
            accumulator[t, f] += total


@njit(cache=True, nogil=True)
def _interleaved_weight_gradient_items(x, grad_out, partial_weight, partial_bias, kernel_h, kernel_w, stride_h,
                                       stride_w, pad_h, pad_w, dilation_h, dilation_w, sample_block, first_item,
                                       last_item):
    """:func:`_conv2d_backward_weight_items` for small outputs (:func:`_samples_innermost`) with
    the samples innermost, as :func:`_interleaved_forward_items`: an item is a block of
    ``sample_block`` samples (one group), whose input is staged (:func:`_stage_interleaved`) and
    whose columns, every output row at once (:func:`_interleaved_columns`), are multiplied by
    the output gradient laid out the same way, ``[filter, row, column, sample]``, into the
    worker's transposed accumulator ``partial_weight`` (1, taps, F); ``partial_bias`` (F,) sums
    the gradient's planes."""
    samples, channels = x.shape[0], x.shape[1]
    filters, out_h, out_w = grad_out.shape[1], grad_out.shape[2], grad_out.shape[3]
    taps = partial_weight.shape[1]
    span_h = (out_h - 1) * stride_h + (kernel_h - 1) * dilation_h + 1
    span_w = (out_w - 1) * stride_w + (kernel_w - 1) * dilation_w + 1
    staged = np.empty(channels * span_h * span_w * sample_block, x.dtype)
    columns = np.empty(taps * out_h * out_w * sample_block, x.dtype)
    gradient = np.empty(filters * out_h * out_w * sample_block, x.dtype)
    planes = grad_out.reshape(samples, filters, out_h * out_w)
    for item in range(first_item, last_item):
        first = item * sample_block
        count = min(sample_block, samples - first)
        wide = out_h * out_w * count
        _stage_interleaved(x, first, count, pad_h, pad_w, span_h, span_w, staged)
        _interleaved_columns(staged, channels, count, span_h, span_w, FIRST, out_h, kernel_h, kernel_w, stride_h,
                             stride_w, dilation_h, dilation_w, out_w, columns)
        for s in range(count):  # the bias's sums, and the gradient with its samples innermost
            for f in range(filters):
                row = planes[first + s, f]
                partial_bias[f] += _float64_sum(row)
                for p in range(out_h * out_w):
                    gradient[np.uint64(f * wide + p * count + s)] = row[p]
        gemm_rows_bt(taps, filters, wide, columns[:taps * wide].reshape(taps, wide), wide,
                     gradient[:filters * wide].reshape(filters, wide), wide, 1.0, partial_weight[0], filters)


@njit(cache=True, nogil=True)
def _weight_gradient_by_channels_items(x, grad_out, grad_weight, grad_bias, kernel_h, kernel_w, stride_h, stride_w,
                                       pad_h, pad_w, dilation_h, dilation_w, groups, block_rows, channel_blocks,
                                       first_item, last_item):
    """(group, block of input channels) items ``first_item .. last_item-1`` of
    :func:`conv2d_backward_weight`: each sums, over every sample, the output gradient's rows
    times its channels' columns (``rows @ columns.T``) into its own taps of ``grad_weight``, and
    its share of the filters into ``grad_bias``."""
    samples = x.shape[0]
    filters, channels_per_group = grad_weight.shape[0], grad_weight.shape[1]
    filters_per_group = filters // groups
    window = kernel_h * kernel_w
    taps = channels_per_group * window
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    plane = out_h * out_w
    grad_by_group = grad_out.reshape(samples, groups, filters_per_group, plane)
    flat_grad = grad_out.reshape(grad_out.size)
    gradient = grad_weight.reshape(groups, filters_per_group, taps)
    blocks = (out_h + block_rows - 1) // block_rows
    per_block = (channels_per_group + channel_blocks - 1) // channel_blocks
    column_buffer = np.empty(per_block * window * block_rows * out_w, dtype=x.dtype)
    for item in range(first_item, last_item):
        g = item // channel_blocks
        block = item % channel_blocks
        c0 = block * per_block
        c1 = min(channels_per_group, c0 + per_block)
        for f in range(block * filters_per_group // channel_blocks, (block + 1) * filters_per_group // channel_blocks):
            total = 0.0
            for n in range(samples):
                start = ((n * groups + g) * filters_per_group + f) * plane
                total += _float64_sum(flat_grad[start:start + plane])
            grad_bias[g * filters_per_group + f] = total
        if c0 >= c1:
            continue
        t0, count = c0 * window, (c1 - c0) * window
        beta = 0.0  # the first product overwrites: nothing to zero
        for n in range(samples):
            for row_block in range(blocks):
                first_row = row_block * block_rows
                rows = min(block_rows, out_h - first_row)
                pixels = rows * out_w
                columns = column_buffer[:count * pixels].reshape(count, pixels)
                _columns(x, n, g * channels_per_group + c0, first_row, rows, columns, kernel_h, kernel_w, out_w,
                         stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, FIRST)
                gemm_rows_bt(filters_per_group, count, pixels, grad_by_group[n, g, :, first_row * out_w:], plane,
                             columns, pixels, beta, gradient[g, :, t0:], taps)
                beta = 1.0


#: a weight gradient larger than this (in bytes) is split between threads by blocks of input
#: channels and written in place; a smaller one by samples, each thread summing into an
#: accumulator of its own (``bench/conv_backward.py --by-samples`` compares the two)
CHANNEL_SPLIT_BYTES = 1 << 20
#: the most memory the weight gradient's private accumulators may take when its items are cut
#: into pieces the threads claim (:func:`cnnlab.kernels.cpu._schedule.pieces`); above, one each
PIECES_MAX_ACCUMULATOR_BYTES = 8 << 20


def conv2d_backward_weight(x, grad_out, grad_weight, grad_bias, stride_h, stride_w, pad_h, pad_w,
                           dilation_h, dilation_w, groups, block_rows, workers):
    """Gradients of :func:`conv2d_forward` with respect to ``weight`` and ``bias``.

    Deep layers (a gradient over ``CHANNEL_SPLIT_BYTES``, with eight (group, input channel)
    pairs per worker or more): each worker takes a block of input channels and sums, over every
    sample, the output gradient against their columns (one GEMM per sample and row block) into
    its own taps of the gradient, so no two threads write the same memory and nothing is added
    up afterwards. ResNet-18's 512-channel 3x3 layer at batch 4: 20 ms with an accumulator of
    9.4 MB per thread, 5.5 ms so. Otherwise each piece of the samples (a worker's share, or, for
    large work, the pieces the workers claim as they go: :func:`_schedule.pieces`) sums
    ``columns @ grad_out[n, g].T`` into a private, transposed accumulator (OpenBLAS runs this
    product 1.1-1.6x faster than ``grad_out[n, g] @ columns.T`` on convolution shapes, and its
    full height beats the channel blocks' half on small layers), and the accumulators are added,
    in the pieces' order, and transposed at the end.

    Parameters
    ----------
    x : (N, C, H, W) array, the forward input
    grad_out : (N, F, OH, OW) array
    grad_weight : (F, C // groups, KH, KW) array, overwritten
    grad_bias : (F,) array, overwritten
    stride_h, ..., block_rows, workers : int
        As :func:`conv2d_forward`.
    """
    filters, channels_per_group, kernel_h, kernel_w = grad_weight.shape
    taps = channels_per_group * kernel_h * kernel_w
    geometry = (kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, block_rows)
    if grad_weight.nbytes > CHANNEL_SPLIT_BYTES and groups * channels_per_group >= 8 * workers:
        channel_blocks = min(channels_per_group, workers)
        run_shared(_weight_gradient_by_channels_items, groups * channel_blocks, workers, x, grad_out, grad_weight,
                   grad_bias, *geometry, channel_blocks)
        return
    samples = x.shape[0]
    innermost = _samples_innermost(grad_out.shape, grad_weight.shape, stride_h, stride_w, dilation_h, dilation_w,
                                   groups, block_rows, 1)
    if innermost:  # blocks of samples, as many blocks as make an even share for each worker
        sample_block = _interleaved_sample_block(samples, max(1, workers))
        items = -(-samples // sample_block)
    else:
        items = samples * groups * _row_blocks(grad_out.shape[2], block_rows)
    workers = max(1, min(workers, items))
    # a private accumulator per piece, added up in the pieces' order: the same sum whichever
    # thread takes which piece
    bounds = pieces(items, workers, _gemm_visits(grad_out.shape, grad_weight.shape))
    if len(bounds) * grad_weight.nbytes > PIECES_MAX_ACCUMULATOR_BYTES:
        bounds = shares(items, workers)
    partial_weight = np.zeros((len(bounds), groups, taps, filters // groups), dtype=x.dtype)
    partial_bias = np.zeros((len(bounds), filters), dtype=x.dtype)
    if innermost:
        run_pieces(_interleaved_weight_gradient_items,
                   [(x, grad_out, partial_weight[p], partial_bias[p], *geometry[:8], sample_block, first, last)
                    for p, (first, last) in enumerate(bounds)], workers)
    else:
        small_gemm = small_gemm_limit(x.dtype)
        planes = _by_planes(grad_out.shape[3], kernel_h, kernel_w, stride_h, stride_w, dilation_w, filters // groups)
        pitch = _plane_extent(grad_out.shape[3], kernel_w, stride_w, dilation_w)
        panels = _weight_gradient_by_panels(grad_out.shape[3], kernel_w, stride_h, stride_w, dilation_w,
                                            grad_weight.nbytes // groups, min(block_rows, grad_out.shape[2]) * pitch)
        run_pieces(_conv2d_backward_weight_items,
                   [(x, grad_out, partial_weight[p], partial_bias[p], *geometry, small_gemm, planes or panels, panels,
                     first, last) for p, (first, last) in enumerate(bounds)], workers)
    summed = np.empty((groups, taps, filters // groups), dtype=x.dtype)
    _sum_over_workers(partial_weight.reshape(len(bounds), filters * taps), summed.reshape(filters * taps))
    grad_weight.reshape(groups, filters // groups, taps)[...] = summed.transpose(0, 2, 1)
    _sum_over_workers(partial_bias, grad_bias)
