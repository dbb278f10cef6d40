"""Convolutions by tiles of 16 output pixels and 16 filters, written finished into the output
planes: the input broadcast a value at a time, the weights read a vector of filters at a time,
and the tile turned round in registers before it is stored.

The panels (:func:`cnnlab.kernels.cpu._microkernel.tap_product`) hold filters in rows and
pixels in vectors: each tap's pixels must be one contiguous run, so the input is first copied
into planes whose runs are the taps' (polyphase planes at stride 2, the samples laid innermost
for small outputs), the products go into a buffer ``pitch`` wide, and a last pass copies the
output's columns out of it and applies the epilogue. On LeNet's second layer (64 samples, 6 to
16 channels, 5x5, onto 8x8) that staging and that copy took 55 of the layer's 178 us on one
thread (scratch timings). :func:`tile_product` turns the roles round, as oneDNN's direct convolutions do: its 16
accumulators are 16 output pixels, each a vector of 16 filters; a step broadcasts each pixel's
input value of one tap (from wherever it lies: a stride of 2 along the rows needs no copy of its
own) and multiplies it by the tap's 16 weights, one vector. No copy of the input is needed where
there is no padding, and after the sums a 16x16 transpose in registers (64 two-vector
shuffles) gives each filter's 16 pixels as one vector, which the epilogue finishes and one
store writes into the filter's output plane.

A tile's 16 pixels are one contiguous run of an output plane, so that each filter's vector is
one store: 16 pixels of one output row (outputs 16 or more wide; the last tile of a row starts
16 before its end and leaves the pixels the tile before wrote alone, by a masked store), two
rows of 8 or four rows of 4. Each shape of tile, and a stride of 1 or 2 along the rows, is a
kernel of its own (the pixels' offsets constants of its code): six in all.
"""

import functools

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ... import config
from .. import EPILOGUE_CLIP, EPILOGUE_NONE
from ._epilogue import _finish_row
from ._microkernel import (
    VECTOR_BYTES,
    _summing_loop,
    _Vectors,
    _when,
    available,
    flush_denormals,
    restore_denormals,
    window_offsets,
)

#: pixels and filters of a tile: float32 lanes of a 512-bit vector
TILE = 16
#: the convolutions by tiles where :func:`by_tiles` says so (False: never)
TILES = True
#: the least share of a tile's 16 filter lanes the filters fill, over the filter tiles (12 of 16)
TILES_MIN_FILL = 0.75
#: the most taps (channels times the window) of a convolution at stride 1 onto small outputs of
#: more than one tile that :func:`by_tiles` takes: the samples-innermost panels do as well from
#: about 400 on
TILES_SMALL_MAX_TAPS = 288
#: the most taps of a convolution onto outputs wider than a tile that :func:`by_tiles` takes from
#: the panels' path (from 216 taps the panels ran as fast or faster)
TILES_PANELS_MAX_TAPS = 160
#: the most bytes of padded input an item copies (its rows of every channel): the L2 cache's share
TILES_STAGED_BYTES = 512 * 1024


def tile_product(a, a_start, a_row, a_step, rows, offsets, k, w, w_start, c, c_start, ldc, filters, skip, scale,
                 shift, s_start, residual, finish, has_residual, clip, low, high):
    """The 16 filters ``f`` below ``filters`` and 16 pixels ``p`` of a tile,
    ``c[c_start + f * ldc + p] = sum_i a[a_start + (p // (16 // rows)) * a_row + (p % (16 // rows))
    * a_step + offsets[i]] * w[w_start + i * 16 + f]`` for the ``k`` steps ``i``: pixels in
    ``rows`` rows (1, 2 or 4) of ``16 // rows``, ``a_step`` apart along a row (1 or 2) and
    ``a_row`` apart between rows; the weights of a step one vector of 16 filters.

    With ``finish``, each sum ``v`` of filter ``f`` is written as the convolution epilogue's
    clip case computes it: ``scale[s_start + f] * v + shift[s_start + f]``, plus
    ``residual[c_start + f * ldc + p]`` with ``has_residual``, then clipped to ``[low, high]``
    with ``clip``. The pixels below ``skip`` are neither read from the residual nor written
    (a tile that overlaps the one before it). ``a``, ``w``, ``c``, ``scale``, ``shift`` and
    ``residual`` flat float32 arrays, ``offsets`` uint64, all C-contiguous; the caller keeps
    every index in bounds. Compiled kernels run one of six intrinsics (:func:`_tile_kernel`);
    from Python (kernels run interpreted) NumPy computes the same, within rounding."""
    width = TILE // rows
    pixels = np.array([a_start + (p // width) * a_row + (p % width) * a_step for p in range(TILE)])
    sums = np.zeros((TILE, TILE), np.float64)  # [filter, pixel]
    for i in range(k):
        values = a[pixels + int(offsets[i])].astype(np.float64)
        sums += np.outer(w[w_start + i * TILE:][:TILE].astype(np.float64), values)
    for f in range(filters):
        row = sums[f, skip:]
        if finish:
            row = float(scale[s_start + f]) * row + float(shift[s_start + f])
            if has_residual:
                row = row + residual[c_start + f * ldc + skip:][:TILE - skip]
            if clip:
                row = np.clip(row, low, high)
        c[c_start + f * ldc + skip:][:TILE - skip] = row


def _transposed(builder, vectors):
    """The 16 vectors of 16 lanes ``vectors`` turned round (lane ``j`` of vector ``i`` becomes lane
    ``i`` of vector ``j``): four rounds of two-vector shuffles, round ``b`` swapping bit ``b`` of
    the vector's index with bit ``b`` of the lane's."""
    rows = list(vectors)
    mask_type = ir.VectorType(ir.IntType(32), TILE)
    for bit in range(4):
        s = 1 << bit
        low = ir.Constant(mask_type, [j if not j & s else TILE + (j ^ s) for j in range(TILE)])
        high = ir.Constant(mask_type, [j | s if not j & s else TILE + j for j in range(TILE)])
        turned = list(rows)
        for i in range(TILE):
            if not i & s:
                turned[i] = builder.shuffle_vector(rows[i], rows[i | s], low)
                turned[i | s] = builder.shuffle_vector(rows[i], rows[i | s], high)
        rows = turned
    return rows


def _store_finished(builder, v, by_filter, stored, pc, pr, ldc, filters, scales, shifts, finish, has_residual,
                    clip, low_v, high_v):
    """Store the 16 vectors ``by_filter`` (filter ``f``'s pixels, the tile turned round) at
    ``pc + f * ldc`` for the ``f`` below ``filters``, the lanes where the i1 vector ``stored``
    holds: with ``finish``, as the epilogue's clip case computes them (``scales[f]``,
    ``shifts[f]``, the residual at ``pr + f * ldc`` with ``has_residual``, clipped to the vectors
    ``low_v`` and ``high_v`` with ``clip``). The tiles' (:func:`tile_product`) and the strips'
    (:func:`cnnlab.kernels.cpu._strips.strip_finish`) last step."""
    i32 = ir.IntType(32)
    undefined = ir.Constant(v.vector, ir.Undefined)
    zeros = ir.Constant(ir.VectorType(i32, TILE), [0] * TILE)

    def spread(value):
        return builder.shuffle_vector(builder.insert_element(undefined, value, ir.Constant(i32, 0)), undefined, zeros)

    pointer = v.vector.as_pointer()
    masked_load = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(v.vector, [pointer, i32, stored.type, v.vector]), "llvm.masked.load.v16f32.p0v16f32")
    masked_store = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [v.vector, pointer, i32, stored.type]),
        "llvm.masked.store.v16f32.p0v16f32")
    align = ir.Constant(i32, 4)

    def finished(f, sums):
        scaled = builder.fadd(builder.fmul(sums, spread(builder.load(builder.gep(scales, [v.at(f)])))),
                              spread(builder.load(builder.gep(shifts, [v.at(f)]))))
        place = builder.bitcast(builder.gep(pr, [builder.mul(ldc, v.at(f))]), pointer)
        added = _when(builder, has_residual, [scaled], lambda: [
            builder.fadd(scaled, builder.call(masked_load, [place, align, stored, undefined]))])[0]
        return [builder.select(clip, builder.select(builder.fcmp_ordered("<", added, low_v), low_v,
                                                    builder.select(builder.fcmp_ordered(">", added, high_v), high_v,
                                                                   added)), added)]

    for f in range(TILE):
        with builder.if_then(builder.icmp_signed(">", filters, v.at(f))):
            value = _when(builder, finish, [by_filter[f]], lambda f=f: finished(f, by_filter[f]))[0]
            builder.call(masked_store, [value, builder.bitcast(builder.gep(pc, [builder.mul(ldc, v.at(f))]), pointer),
                                        align, stored])


def _tile_code(rows, step, context, builder, signature, args):
    """:func:`tile_product`'s IR for tiles of ``rows`` rows at a stride of ``step`` along them."""
    (a, a_start, a_row, steps, k, w, w_start, c, c_start, ldc, filters, skip, scale, shift, s_start, residual,
     finish, has_residual, clip, low, high) = args
    v = _Vectors(types.float32, builder)
    i32 = ir.IntType(32)

    def data(position, value):
        return context.make_array(signature.args[position])(context, builder, value).data

    pa, pw = builder.gep(data(0, a), [a_start]), builder.gep(data(5, w), [w_start])
    pc, pr = builder.gep(data(7, c), [c_start]), builder.gep(data(15, residual), [c_start])
    step_offsets = data(3, steps)
    scales, shifts = builder.gep(data(12, scale), [s_start]), builder.gep(data(13, shift), [s_start])
    row_starts = [builder.gep(pa, [builder.mul(a_row, v.at(r))]) for r in range(rows)]
    width = TILE // rows
    undefined = ir.Constant(v.vector, ir.Undefined)
    zeros = ir.Constant(ir.VectorType(i32, TILE), [0] * TILE)

    def spread(value, vector=undefined):
        return builder.shuffle_vector(builder.insert_element(vector, value, ir.Constant(i32, 0)), vector, zeros)

    def step_sums(i, sums, fma):
        offset = builder.load(builder.gep(step_offsets, [i]))
        weights = v.load(builder.gep(pw, [builder.mul(i, v.at(TILE))]))
        updated = []
        for r in range(rows):
            run = builder.gep(row_starts[r], [offset])
            for q in range(width):
                updated.append(fma(spread(builder.load(builder.gep(run, [v.at(q * step)]))), weights,
                                   sums[r * width + q]))
        return updated

    by_filter = _transposed(builder, _summing_loop(v, k, TILE, step_sums))
    index_vector = ir.VectorType(ir.IntType(64), TILE)
    stored = builder.icmp_signed(">=", ir.Constant(index_vector, list(range(TILE))),
                                 spread(skip, ir.Constant(index_vector, ir.Undefined)))
    _store_finished(builder, v, by_filter, stored, pc, pr, ldc, filters, scales, shifts, finish, has_residual, clip,
                    spread(low), spread(high))
    return context.get_dummy_value()


def _tile_kernel(rows, step):
    """The intrinsic of :func:`tile_product` for tiles of ``rows`` rows at a stride of ``step``
    along them (float32 arrays only)."""
    @intrinsic
    def kernel(typingctx, a, a_start, a_row, offsets, k, w, w_start, c, c_start, ldc, filters, skip, scale, shift,
               s_start, residual, finish, has_residual, clip, low, high):
        arrays = (a, w, c, scale, shift, residual)
        if not all(isinstance(t, types.Array) and t.layout == "C" and t.dtype == types.float32 for t in arrays) \
                or not isinstance(offsets, types.Array) or offsets.dtype != types.uint64 \
                or low != types.float32 or high != types.float32:
            return None
        i, flag = types.intp, types.boolean
        signature = types.void(a, i, i, offsets, i, w, i, c, i, i, i, i, scale, shift, i, residual, flag, flag, flag,
                               types.float32, types.float32)
        return signature, functools.partial(_tile_code, rows, step)
    return kernel


_ONE_ROW, _TWO_ROWS, _FOUR_ROWS = _tile_kernel(1, 1), _tile_kernel(2, 1), _tile_kernel(4, 1)
_ONE_ROW_2, _TWO_ROWS_2, _FOUR_ROWS_2 = _tile_kernel(1, 2), _tile_kernel(2, 2), _tile_kernel(4, 2)


@overload(tile_product)
def _tile_product_overload(a, a_start, a_row, a_step, rows, offsets, k, w, w_start, c, c_start, ldc, filters, skip,
                           scale, shift, s_start, residual, finish, has_residual, clip, low, high):
    def call(a, a_start, a_row, a_step, rows, offsets, k, w, w_start, c, c_start, ldc, filters, skip, scale, shift,
             s_start, residual, finish, has_residual, clip, low, high):
        arguments = (a, a_start, a_row, offsets, k, w, w_start, c, c_start, ldc, filters, skip, scale, shift, s_start,
                     residual, bool(finish), bool(has_residual), bool(clip), np.float32(low), np.float32(high))
        if a_step == 1:
            if rows == 1:
                _ONE_ROW(*arguments)
            elif rows == 2:
                _TWO_ROWS(*arguments)
            else:
                _FOUR_ROWS(*arguments)
        elif rows == 1:
            _ONE_ROW_2(*arguments)
        elif rows == 2:
            _TWO_ROWS_2(*arguments)
        else:
            _FOUR_ROWS_2(*arguments)
    return call


def tile_rows(out_w):
    """Output rows a tile spans onto outputs ``out_w`` wide (1 from 16 on, else 2 or 4 whole
    rows); 0 where no tile fits (a width of 5 to 7, 9 to 15, or less than 4)."""
    return 1 if out_w >= TILE else {8: 2, 4: 4}.get(out_w, 0)


def by_tiles(weight_shape, groups, stride, out_shape, itemsize, panels=False):
    """Whether a convolution takes :func:`_tile_forward_items`: float32 on a processor with
    AVX-512, one group, a window wider than 1x1, a stride of 1 or 2 along the rows, outputs a
    tile fits (:func:`tile_rows`: whole tiles down the plane) and filters that fill
    ``TILES_MIN_FILL`` of their tiles' lanes. At stride 1 onto small outputs (fewer than
    ``config.GEMM_MIN_COLUMNS`` pixels, the samples-innermost panels' shapes), at most
    ``TILES_SMALL_MAX_TAPS`` taps unless one tile is the whole plane; where the panels would take it (``panels``), at most
    ``TILES_PANELS_MAX_TAPS`` taps or outputs at most 16 wide.

    Against the path each took before, float32, 2 threads, two rounds alternating with the
    tiles off, ms (``python bench/tile_conv.py``): LeNet's second layer at batch 64 (6 to 16
    channels, 5x5 onto 8x8) 0.132-0.152 -> 0.111-0.113; 32 to 64 channels onto 8x8 at batch 64
    0.640-0.650 -> 0.563-0.570, onto 4x4 0.205-0.218 -> 0.198-0.203; at stride 2, 32 to 32 onto
    16x16 at batch 64 1.53-1.55 -> 1.31-1.33, 64 to 64 onto 8x8 at batch 32 0.989 -> 0.689-0.696,
    ResNet-18's 64 to 128 onto 28x28 at batch 16 10.0-10.2 -> 8.5-8.6 (0.63-0.67 -> 0.56-0.59
    at batch 1); the stems of ResNet-18 at batch 16 17.8-18.4 -> 16.3-17.1 and of MobileNetV2 at
    batch 1 0.177-0.180 -> 0.152-0.170. Not taken: 64 to 64 channels onto 8x8 at stride 1, batch
    32 (576 taps), 0.571-0.587 -> 0.608-0.618 (onto 4x4, one tile a plane, 64 to 32 channels at
    batch 32, 0.144-0.158 -> 0.139-0.144: taken); from the panels, stride-2 convolutions onto 32x32
    of 216 to 432 taps (the ``strided`` reference shape among them) and a 5x5 one of 400 taps,
    0.97-1.04x in this run (the ``strided`` shape 1.02-1.06x in two others).
    """
    filters, channels, kernel_h, kernel_w = weight_shape
    out_h, out_w = out_shape[2], out_shape[3]
    rows, taps = tile_rows(out_w), channels * kernel_h * kernel_w
    small = stride[1] == 1 and out_h * out_w < int(config.GEMM_MIN_COLUMNS)
    return bool(TILES) and available() and VECTOR_BYTES == 64 and itemsize == 4 and groups == 1 \
        and kernel_h * kernel_w > 1 and stride[1] in (1, 2) and rows > 0 and out_h >= rows \
        and filters >= TILES_MIN_FILL * TILE * -(-filters // TILE) \
        and not (small and taps > TILES_SMALL_MAX_TAPS and out_h * out_w > TILE) \
        and not (panels and taps > TILES_PANELS_MAX_TAPS and out_w > TILE)


def tile_work(samples, filters, channels, out_h, out_w, span_w, rows_in, halo, workers):
    """``(item count, rows an item takes)`` of :func:`_tile_forward_items`, its output ``out_h``
    by ``out_w``, its input rows ``span_w`` columns wide (padded), each output row ``rows_in`` input
    rows down from the last, a window ``halo`` rows more: an item is a sample, a block of output
    rows (whole tiles) and a tile of filters. Whole samples where there are at least two items
    a thread; else the rows in as many blocks as make that many. Fewer rows where an item's
    input rows (every channel's) would be more than ``TILES_STAGED_BYTES``: with padding, the
    copy it reads from."""
    return block_items(samples, -(-filters // TILE), out_h, tile_rows(out_w), channels * rows_in * span_w * 4,
                       channels * halo * span_w * 4, TILES_STAGED_BYTES, workers)


def block_items(samples, filter_groups, out_h, rows, row_bytes, halo_bytes, limit, workers):
    """``(item count, output rows an item takes)`` where an item is a sample, a block of output
    rows (whole units of ``rows`` rows) and a group of filters (``filter_groups`` a sample), the
    groups innermost: whole samples where there are at least two items a thread; else the rows
    in as many blocks as make that many; fewer rows where an item's input rows, ``row_bytes`` an
    output row and ``halo_bytes`` more, would pass ``limit`` bytes. The tiles' items
    (:func:`tile_work`) and the strips' (:func:`cnnlab.kernels.cpu._strips.strip_work`)."""
    units = -(-out_h // rows)
    blocks = min(units, max(1, -(-2 * workers // (samples * filter_groups))))
    fitting = max(1, (limit - halo_bytes) // (rows * row_bytes))
    blocks = max(blocks, -(-units // fitting))
    block = -(-units // blocks) * rows
    return samples * -(-out_h // block) * filter_groups, block


def tile_weights(weight, shared=False):
    """``weight`` (F, C, KH, KW) packed for :func:`tile_product` (:func:`packed_weights` in 16
    lanes). Once a call, before the items (``shared``,
    :func:`cnnlab.kernels.cpu.conv._run_forward`'s, is not needed)."""
    return packed_weights(weight, TILE)


def packed_weights(weight, lanes):
    """``weight`` (F, C, KH, KW) with the filters in groups of ``lanes`` side by side for each
    tap ``t`` (channel-major, as a weight's row): filter ``lanes * g + l`` at ``(g * taps + t) *
    lanes + l``, zeros past the last filter. The tiles' weights (16 lanes) and the strips' (32:
    ``lanes`` is one of the two)."""
    filters = weight.shape[0]
    packed = np.empty(-(-filters // lanes) * lanes * (weight.size // filters), weight.dtype)
    (_pack_16 if lanes == 16 else _pack_32)(weight.reshape(filters, -1), packed)
    return packed


@njit(cache=True)
def _pack_16(rows, packed):
    """:func:`packed_weights` in 16 lanes (a constant: the loops compile for it, twice as fast
    as for a lane count passed in)."""
    _pack_lanes(rows, packed, 16)


@njit(cache=True)
def _pack_32(rows, packed):
    """:func:`packed_weights` in 32 lanes."""
    _pack_lanes(rows, packed, 32)


@njit(inline="always")
def _pack_lanes(rows, packed, lanes):
    """:func:`packed_weights` of ``rows`` (F, taps) into ``packed``: each tap's ``lanes`` values
    written side by side, the rows read along."""
    filters, taps = rows.shape
    for g in range((filters + lanes - 1) // lanes):
        for t in range(taps):
            at = (g * taps + t) * lanes
            for lane in range(lanes):
                f = g * lanes + lane
                packed[at + lane] = rows[f, t] if f < filters else 0


@njit(cache=True, nogil=True)
def _tile_forward_items(x, packed, scale, shift, residual, has_residual, activation, low, high, out, stride_h,
                        stride_w, pad_h, pad_w, dilation_h, dilation_w, kernel_h, kernel_w, block_rows, first_item,
                        last_item):
    """Items of a convolution by tiles (:func:`by_tiles`): an item is a (sample, block of
    ``block_rows`` output rows, tile of 16 filters), the tiles of filters innermost.

    Without padding, :func:`tile_product` reads the input where it lies. With padding, the
    item's input rows (every channel) are first copied, zero-padded, into a buffer (not again
    for the next item where it reads the same rows: the next tile of filters). The weights come
    ``packed`` by :func:`tile_weights` (once a call). Each tile of output pixels is written finished (the clip in the kernel); another
    activation, or the mask of a ReLU's backward, is applied to the item's rows after."""
    before = flush_denormals()  # (denormal inputs read as zero: the docstring of flush_denormals)
    samples, channels, height, width = x.shape
    filters, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    taps = channels * kernel_h * kernel_w
    filter_tiles = (filters + 15) // 16
    blocks = (out_h + block_rows - 1) // block_rows
    rows = 1 if out_w >= 16 else 16 // out_w
    row_width = 16 // rows
    span_w = (out_w - 1) * stride_w + (kernel_w - 1) * dilation_w + 1  # the padded input columns read
    # (a copy where any read falls outside the input: padding on any side)
    padded = pad_h > 0 or pad_w > 0 or span_w > width or (out_h - 1) * stride_h + (kernel_h - 1) * dilation_h >= height
    if padded:  # (rows of every channel: an item's and the rows its first tile may share with the block before)
        line, span_h = span_w, (block_rows + rows - 1) * stride_h + (kernel_h - 1) * dilation_h + 1
    else:
        line, span_h = width, height
    staged = np.zeros(channels * span_h * span_w if padded else 1, x.dtype)
    source = staged if padded else x.reshape(-1)
    offsets = np.empty(taps, np.uint64)
    window_offsets(offsets, kernel_h, kernel_w, dilation_h, dilation_w, span_h, line, 1)
    plane = out_h * out_w
    flat_out, flat_residual = out.reshape(-1), residual.reshape(-1)
    in_kernel = activation == EPILOGUE_NONE or activation == EPILOGUE_CLIP
    staged_for = -1
    for item in range(first_item, last_item):
        n, block, ft = item // (blocks * filter_tiles), (item // filter_tiles) % blocks, item % filter_tiles
        first_row = block * block_rows
        last_row = min(out_h, first_row + block_rows)
        top = min(first_row, out_h - rows)  # (the block's first tile: back to whole tiles at the plane's end)
        if padded:
            if staged_for != n * blocks + block:
                _stage_rows(x, n, top * stride_h - pad_h, (last_row - 1 - top) * stride_h
                            + (kernel_h - 1) * dilation_h + 1, pad_w, span_h, span_w, staged)
                staged_for = n * blocks + block
            base = -top * stride_h * line
        else:
            base = n * channels * height * width
        tile_filters = min(16, filters - ft * 16)
        out_base = (n * filters + ft * 16) * plane
        for r0 in range(first_row, last_row, rows):
            oy = min(r0, out_h - rows)
            for q0 in range(0, out_w, row_width):
                ox = min(q0, out_w - row_width)
                at = out_base + oy * out_w + ox
                tile_product(source, base + oy * stride_h * line + ox * stride_w, stride_h * line, stride_w, rows,
                             offsets, taps, packed, ft * taps * 16, flat_out, at, plane, tile_filters,
                             (r0 - oy) * out_w + q0 - ox, scale, shift, ft * 16, flat_residual, in_kernel,
                             has_residual, activation == EPILOGUE_CLIP, low, high)
        if not in_kernel:
            for f in range(ft * 16, ft * 16 + tile_filters):
                _finish_row(out[n, f].reshape(-1)[first_row * out_w:last_row * out_w],
                            residual[n, f].reshape(-1)[first_row * out_w:last_row * out_w], has_residual, scale[f],
                            shift[f], activation, low, high)
    restore_denormals(before)


@njit(cache=True)
def _stage_rows(x, n, top, rows_in, pad_w, span_h, span_w, staged):
    """``staged[c, r, q] = x[n, c, top + r, q - pad_w]`` (zero outside ``x``) for the ``rows_in``
    rows ``r`` (of ``span_h`` a channel) and the ``span_w`` columns ``q``. The columns outside
    ``x`` are never written with input (``staged`` starts as zeros); rows outside it are
    zeroed."""
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    flat = x.reshape(-1)
    low_q, high_q = min(max(0, pad_w), span_w), min(span_w, max(0, pad_w + width))
    for c in range(channels):
        for r in range(rows_in):
            h = top + r
            line = (c * span_h + r) * span_w
            if h < 0 or h >= height:
                staged[line:line + span_w] = 0
                continue
            source = ((n * channels + c) * height + h) * width - pad_w
            for q in range(low_q, high_q):
                staged[np.uint64(line + q)] = flat[np.uint64(source + q)]
