"""Convolutions of 3x3 windows at stride 1 by Winograd's minimal filtering F(2x2, 3x3) (Lavin and
Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).

Directly, a 2x2 block of one filter's outputs (a *tile*) costs 36 multiply-adds a channel; F(2x2,
3x3) gets it from 16. The tile's 4x4 input patch ``d`` is transformed, ``V = B^T d B``, the
filter's 3x3 window ``g`` too, ``U = G g G^T``, the two multiplied element by element and summed
over the channels, ``M = sum_c U * V``, and the sum transformed back, ``Y = A^T M A``::

    B^T = [[1, 0, -1, 0],     G = [[1, 0, 0],          A^T = [[1, 1, 1, 0],
           [0, 1, 1, 0],           [1/2, 1/2, 1/2],           [0, 1, -1, -1]]
           [0, -1, 1, 0],          [1/2, -1/2, 1/2],
           [0, 1, 0, -1]]          [0, 0, 1]]

Summed over the channels, each of the 16 positions ``xi`` of ``M`` is a matrix product, filters
by channels (``U[xi]``) times channels by tiles (``V[xi]``): 16 GEMMs, which
:func:`tap_product` computes (its offsets one per channel). The transforms are adds and
subtracts only (``G``'s halves are applied to the weights, once a call), written as vector
kernels over a vector of tiles at a time (8 float32 with AVX2, 16 with AVX-512; :func:`winograd_input`,
:func:`winograd_store`). The output transform stores each tile row's outputs straight into the
output planes, finished there when the epilogue is a clip or none (masked stores at a row's
odd end).

:func:`_winograd_forward_items` takes a group of ``WINOGRAD_TILES`` tiles at a time, so that the
group's transformed input and products (16 positions each) stay in the L2 cache: the input rows
of a chunk of tile rows go, zero-padded, into two planes, the even and the odd columns
(:func:`_fill_planes` at a stride of 2 along the rows), in which each of a tile's four columns is
a contiguous run over the tiles.

The results differ from the direct sums by rounding only: the transforms add at most nine terms
and halve exactly (largest differences from float64 loops in float32, 8 to 256 channels:
1.4e-7 to 6.1e-7 of the largest output).
"""

import functools

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from .. import EPILOGUE_CLIP, EPILOGUE_NONE
from ._epilogue import _finish_row
from ._microkernel import (
    MR,
    PANEL_BYTES,
    VECTOR_BYTES,
    _summing_loop,
    _Vectors,
    available,
    flush_denormals,
    restore_denormals,
    tap_product,
)
from ._planes import _fill_planes
from ._schedule import edges, run_on_layer, run_shared, shares

#: tiles a group of :func:`_winograd_forward_items` transforms and multiplies at a time: a float32
#: panel of :func:`tap_product` (two float64 ones)
WINOGRAD_TILES = PANEL_BYTES // 4
#: spare columns past a group's tiles in the transformed input and the products: the transforms
#: run whole vectors (up to a vector's float32 lanes of tiles) past the group's last tile
WINOGRAD_SPARE = VECTOR_BYTES // 4
#: the 3x3 convolutions at stride 1 by F(2x2, 3x3) where :func:`by_winograd` says so (False: never)
WINOGRAD = True
#: the fewest input channels and filters a group that :func:`by_winograd` takes
WINOGRAD_MIN_CHANNELS = 8
#: the fewest tiles (2x2 outputs of all samples) a call needs for :func:`by_winograd`
WINOGRAD_MIN_TILES = 192
#: the most bytes of a group's transformed weights (16 values a filter and channel) for :func:`by_winograd`
WINOGRAD_MAX_WEIGHT_BYTES = 4 << 20
#: the most bytes of a chunk's planes (its tile rows' input, padded): the L2 cache's share
WINOGRAD_PLANES_BYTES = 256 * 1024


def winograd_input(padded, start, pitch, plane, v, v_start, v_step, count):
    """``V = B^T d B`` of ``count`` vectors of tiles (``VECTOR_BYTES // itemsize`` tiles each):
    tile ``t``'s 4x4 patch has rows ``r`` at ``start + r * pitch + t`` (columns 0 and 2 in the
    even plane, from ``t`` and ``t + 1``) and at ``start + plane + r * pitch + t`` (columns 1
    and 3, the odd plane); position ``xi`` of the result goes to ``v[v_start + xi * v_step +
    t]``. ``padded`` and ``v`` flat, of one dtype, C-contiguous; nothing is checked. Compiled
    kernels run the intrinsic below; from Python, NumPy computes the same."""
    tiles = count * (VECTOR_BYTES // padded.itemsize)

    def run(offset, row):
        return padded[start + offset + row * pitch:][:tiles]

    columns = [[run(shift, r) for r in range(4)] for shift in (0, plane, 1, plane + 1)]  # patch columns 0..3
    rows = [[c[0] - c[2], c[1] + c[2], c[2] - c[1], c[1] - c[3]] for c in columns]  # B^T d, by column
    for i in range(4):
        values = (rows[0][i] - rows[2][i], rows[1][i] + rows[2][i], rows[2][i] - rows[1][i], rows[1][i] - rows[3][i])
        for j in range(4):
            v[v_start + (4 * i + j) * v_step:][:tiles] = values[j]


@intrinsic
def _winograd_input(typingctx, padded, start, pitch, plane, v, v_start, v_step, count):
    """:func:`winograd_input`, compiled."""
    if not (_same_float_arrays(padded, v)):
        return None
    signature = types.void(padded, types.intp, types.intp, types.intp, v, types.intp, types.intp, types.intp)
    return signature, functools.partial(_winograd_input_code, padded.dtype)


@overload(winograd_input)
def _winograd_input_overload(padded, start, pitch, plane, v, v_start, v_step, count):
    def call(padded, start, pitch, plane, v, v_start, v_step, count):
        _winograd_input(padded, start, pitch, plane, v, v_start, v_step, count)
    return call


def _same_float_arrays(a, b):
    return all(isinstance(t, types.Array) and t.layout == "C" for t in (a, b)) and a.dtype == b.dtype \
        and a.dtype in (types.float32, types.float64)


def _winograd_input_code(dtype, context, builder, signature, args):
    """:func:`winograd_input`'s IR: a loop over the vectors, 16 loads, 32 adds and 16 stores each."""
    padded, start, pitch, plane, v_array, v_start, v_step, count = args
    v = _Vectors(dtype, builder)
    source = builder.gep(context.make_array(signature.args[0])(context, builder, padded).data, [start])
    target = builder.gep(context.make_array(signature.args[4])(context, builder, v_array).data, [v_start])

    def step(k, sums, fma):
        at = builder.mul(k, v.at(v.lanes))
        first, odd = builder.gep(source, [at]), builder.gep(source, [builder.add(at, plane)])
        columns = []  # each of the patch's columns (even plane at t, odd at t, even at t + 1, odd at t + 1), B^T applied
        for base, shift in ((first, 0), (odd, 0), (first, 1), (odd, 1)):
            d = [v.load(builder.gep(base, [builder.add(builder.mul(pitch, v.at(r)), v.at(shift))])) for r in range(4)]
            columns.append([builder.fsub(d[0], d[2]), builder.fadd(d[1], d[2]), builder.fsub(d[2], d[1]),
                            builder.fsub(d[1], d[3])])
        out = builder.gep(target, [at])
        for i in range(4):
            c0, c1, c2, c3 = (column[i] for column in columns)
            values = (builder.fsub(c0, c2), builder.fadd(c1, c2), builder.fsub(c2, c1), builder.fsub(c1, c3))
            for j in range(4):
                v.store(values[j], builder.gep(out, [builder.mul(v_step, v.at(4 * i + j))]))
        return []

    _summing_loop(v, count, 0, step)
    return context.get_dummy_value()


#: ``A^T`` of F(2x2, 3x3): the two output rows' (and columns') coefficients of the 4 positions
OUTPUT_ROWS = ((1, 1, 1, 0), (0, 1, -1, -1))


def _combined(builder, coefficients, values):
    """``sum_i coefficients[i] * values[i]`` for coefficients of 1, -1 and 0: adds and subtracts,
    left to right from the first term of coefficient 1."""
    terms = [(c, value) for c, value in zip(coefficients, values) if c]
    total = terms[0][1]
    for c, value in terms[1:]:
        total = builder.fadd(total, value) if c > 0 else builder.fsub(total, value)
    return total


def winograd_store(m, m_start, m_step, y, y_start, y_pitch, count, width, rows, scale, shift, residual,
                   has_residual, finish, clip, low, high):
    """``Y = A^T M A`` of ``count`` vectors of tiles (F(2x2, 3x3)) stored into the output: tile
    ``t``'s position ``xi`` at ``m[m_start + xi * m_step + t]``, its output in row ``r`` and
    column ``q`` to ``y[y_start + r * y_pitch + 2 * t + q]``, for the ``width`` columns ``2 * t +
    q`` and the ``rows`` rows (1 or 2) that hold output (nothing else is written). With
    ``finish``, as the epilogue's clip case computes it: ``scale * Y + shift``, plus
    ``residual`` (read where ``y`` is written) with ``has_residual``, clipped to ``[low, high]``
    with ``clip``. Flat arrays of one dtype, C-contiguous; nothing is checked. Compiled kernels
    run the intrinsic below (masked loads and stores); from Python, NumPy computes the same."""
    output_rows, side = OUTPUT_ROWS, len(OUTPUT_ROWS[0])
    tiles = count * (VECTOR_BYTES // m.itemsize)
    p = [m[m_start + xi * m_step:][:tiles] for xi in range(side * side)]
    for r in range(rows):
        s = [sum(c * p[side * i + j] for i, c in enumerate(output_rows[r]) if c) for j in range(side)]
        values = np.empty(2 * tiles, m.dtype)
        for q in range(2):
            values[q::2] = sum(c * s[j] for j, c in enumerate(output_rows[q]) if c)
        values = values[:width]
        at = y_start + r * y_pitch
        if finish:
            values = scale * values + shift
            if has_residual:
                values = values + residual[at:at + width]
            if clip:
                values = np.clip(values, y.dtype.type(low), y.dtype.type(high))
        y[at:at + width] = values


def _winograd_store_signature(m, y, scale, residual):
    """The signature of :func:`winograd_store`'s intrinsics, None for other types."""
    if not (_same_float_arrays(m, y) and _same_float_arrays(m, residual)) or scale != m.dtype:
        return None
    i, b = types.intp, types.boolean
    return types.void(m, i, i, y, i, i, i, i, i, m.dtype, m.dtype, residual, b, b, b, types.float64, types.float64)


@intrinsic
def _winograd_store(typingctx, m, m_start, m_step, y, y_start, y_pitch, count, width, rows, scale, shift, residual,
                    has_residual, finish, clip, low, high):
    """:func:`winograd_store`, compiled."""
    signature = _winograd_store_signature(m, y, scale, residual)
    return None if signature is None else (signature, functools.partial(_store_code, m.dtype))


@overload(winograd_store)
def _winograd_store_overload(m, m_start, m_step, y, y_start, y_pitch, count, width, rows, scale, shift, residual,
                             has_residual, finish, clip, low, high):
    def call(m, m_start, m_step, y, y_start, y_pitch, count, width, rows, scale, shift, residual, has_residual,
             finish, clip, low, high):
        _winograd_store(m, m_start, m_step, y, y_start, y_pitch, count, width, rows, scale, shift, residual,
                        bool(has_residual), bool(finish), bool(clip), float(low), float(high))
    return call


def _store_code(dtype, context, builder, signature, args):
    """:func:`winograd_store`'s IR: a loop over the vectors of tiles, a load a position, the adds
    of ``A^T M`` and of its product with ``A``, each row's two outputs of a tile interleaved
    (two shuffles), finished, and stored under masks (the columns below ``width``, the second
    row where ``rows`` is 2). No branch in the loop: the flags select."""
    (m_array, m_start, m_step, y_array, y_start, y_pitch, count, width, rows, scale, shift, residual, has_residual,
     finish, clip, low, high) = args
    v = _Vectors(dtype, builder)
    lanes, i32 = v.lanes, ir.IntType(32)

    def data(position, value):
        return context.make_array(signature.args[position])(context, builder, value).data

    source = builder.gep(data(0, m_array), [m_start])
    target, beside = builder.gep(data(3, y_array), [y_start]), builder.gep(data(11, residual), [y_start])
    output_rows, side = OUTPUT_ROWS, len(OUTPUT_ROWS[0])
    # the lanes of (even, odd) interleaved: the first half of each, then the second
    halves = [ir.Constant(ir.VectorType(i32, lanes), [h * lanes // 2 + k // 2 + (lanes if k % 2 else 0)
                                                      for k in range(lanes)]) for h in range(2)]
    undefined = ir.Constant(v.vector, ir.Undefined)
    index_vector = ir.VectorType(v.index, lanes)
    spread_mask = ir.Constant(ir.VectorType(i32, lanes), [0] * lanes)

    def spread(value, vector=undefined):
        return builder.shuffle_vector(builder.insert_element(vector, value, ir.Constant(i32, 0)), vector, spread_mask)

    scale_v, shift_v = spread(scale), spread(shift)
    low_v, high_v = (spread(builder.fptrunc(bound, v.scalar) if v.scalar != bound.type else bound) for bound in (low, high))
    widths = spread(width, ir.Constant(index_vector, ir.Undefined))
    lane_ids = ir.Constant(index_vector, list(range(lanes)))
    zeros = ir.Constant(v.vector, [0.0] * lanes)
    mask_type = ir.VectorType(ir.IntType(1), lanes)
    pointer = v.vector.as_pointer()
    suffix = f"v{lanes}{v.scalar.intrinsic_name}"
    masked_load = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(v.vector, [pointer, i32, mask_type, v.vector]), f"llvm.masked.load.{suffix}.p0{suffix}")
    masked_store = cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(ir.VoidType(), [v.vector, pointer, i32, mask_type]),
        f"llvm.masked.store.{suffix}.p0{suffix}")
    align = ir.Constant(i32, v.align)
    second_row = builder.icmp_signed(">", rows, v.at(1))
    no_lanes = ir.Constant(mask_type, [0] * lanes)

    def step(k, sums, fma):
        at = builder.mul(k, v.at(lanes))
        p = [v.load(builder.gep(source, [builder.add(at, builder.mul(m_step, v.at(xi)))]))
             for xi in range(side * side)]
        for r, row_coefficients in enumerate(output_rows):
            s = [_combined(builder, row_coefficients, p[j::side]) for j in range(side)]  # row r of A^T M
            even, odd = (_combined(builder, coefficients, s) for coefficients in output_rows)
            for h in range(2):
                column = builder.add(builder.mul(at, v.at(2)), v.at(h * lanes))
                stored = builder.icmp_signed("<", builder.add(spread(column, ir.Constant(index_vector, ir.Undefined)),
                                                              lane_ids), widths)
                if r:
                    stored = builder.select(second_row, stored, no_lanes)
                offset = builder.add(builder.mul(y_pitch, v.at(r)), column)
                place, near = (builder.bitcast(builder.gep(base, [offset]), pointer) for base in (target, beside))
                value = builder.shuffle_vector(even, odd, halves[h])
                added = builder.call(masked_load, [near, align, builder.select(has_residual, stored, no_lanes), zeros])
                scaled = builder.fadd(builder.fmul(scale_v, value), shift_v)
                scaled = builder.select(has_residual, builder.fadd(scaled, added), scaled)
                clipped = builder.select(builder.fcmp_ordered("<", scaled, low_v), low_v,
                                         builder.select(builder.fcmp_ordered(">", scaled, high_v), high_v, scaled))
                value = builder.select(finish, builder.select(clip, clipped, scaled), value)
                builder.call(masked_store, [value, place, align, stored])
        return []

    _summing_loop(v, count, 0, step)
    return context.get_dummy_value()


def winograd_weights(weight, groups, workers=1, compiled_shares=False):
    """The transformed weights ``U = G g G^T`` of ``weight`` (F, C // groups, 3, 3), packed for
    :func:`tap_product`: group ``g``'s position ``xi``, its filters in blocks of ``MR`` (rows
    past a group's filters zero), at ``((g * 16 + xi) * blocks + block) * MR * channels``, channel
    ``c`` of filter ``block * MR + r`` at ``c * MR + r`` past that; the blocks shared between
    ``workers`` threads from ``WINOGRAD_SHARED_PAIRS`` filters and channels on
    (:func:`_winograd_weights_items`): by the kernels' team, or with ``compiled_shares`` (the
    convolution's own shares go to the threading layer) on that layer
    (:func:`cnnlab.kernels.cpu._schedule.run_on_layer`): handed to the kernels' team instead,
    these transforms (7 a ResNet-18 call at batch 1) kept its thread spinning beside the
    threading layer's on the other core."""
    filters, channels = weight.shape[0], weight.shape[1]
    blocks = -(-(filters // groups) // MR)
    packed = np.empty(groups * 16 * blocks * MR * channels, weight.dtype)
    workers = min(groups * blocks, workers if filters * channels >= WINOGRAD_SHARED_PAIRS else 1)
    if workers > 1 and compiled_shares:
        run_on_layer(_winograd_weights_items, (weight, groups, packed), edges(shares(groups * blocks, workers)))
    else:
        run_shared(_winograd_weights_items, groups * blocks, workers, weight, groups, packed)
    return packed


#: the fewest filters times channels whose transform :func:`winograd_weights` shares between threads
WINOGRAD_SHARED_PAIRS = 4096


@njit(cache=True, nogil=True)
def _winograd_weights_items(weight, groups, packed, first_item, last_item):
    """:func:`winograd_weights` of the blocks of ``MR`` filters ``first_item .. last_item - 1``
    (of every group, group-major), into ``packed``.

    A block at a time: its nine taps of every channel side by side, in the packed order,
    transformed (:func:`_transform_taps`) and copied to each position's contiguous run. (A
    filter and channel at a time, straight into the packed order, took 55 ns a pair: 3.6 ms for
    256 by 256 channels; a block at a time 18-19 ns.)"""
    filters, channels = weight.shape[0], weight.shape[1]
    per_group = filters // groups
    blocks = (per_group + MR - 1) // MR
    size = blocks * MR * channels
    run = MR * channels
    step = run + 16
    taps = np.empty(9 * step, np.float64)
    transformed = np.empty(16 * step, weight.dtype)
    flat = weight.reshape(filters, channels * 9)
    for item in range(first_item, last_item):
        g, block = item // blocks, item % blocks
        if block == blocks - 1:
            taps[:] = 0  # (the rows past the group's filters)
        for r in range(min(MR, per_group - block * MR)):
            source = flat[g * per_group + block * MR + r]
            for c in range(channels):
                for t in range(9):
                    taps[t * step + c * MR + r] = source[c * 9 + t]
        _transform_taps(taps, transformed, run, step)
        for xi in range(16):
            packed[(g * 16 + xi) * size + block * run:][:run] = transformed[xi * step:][:run]


@njit(cache=True)
def _transform_taps(taps, transformed, count, step):
    """``transformed[xi * step + k] = (G g G^T)[xi]`` of the 3x3 windows ``g``, tap ``t`` at
    ``taps[t * step + k]`` (float64), for ``k < count``: ``G`` down each column, then along
    each row. (Flat, rows ``step`` apart: a step off a multiple of 4 KB keeps the 16 rows'
    stores apart in the cache; at 4 KB the transform ran five times slower.)"""
    for kk in range(count):
        k = np.uint64(kk)
        s = np.uint64(step)
        w0, w1, w2 = taps[k], taps[s + k], taps[np.uint64(2) * s + k]
        w3, w4, w5 = taps[np.uint64(3) * s + k], taps[np.uint64(4) * s + k], taps[np.uint64(5) * s + k]
        w6, w7, w8 = taps[np.uint64(6) * s + k], taps[np.uint64(7) * s + k], taps[np.uint64(8) * s + k]
        rows = ((w0, w1, w2), (0.5 * (w0 + w3 + w6), 0.5 * (w1 + w4 + w7), 0.5 * (w2 + w5 + w8)),
                (0.5 * (w0 - w3 + w6), 0.5 * (w1 - w4 + w7), 0.5 * (w2 - w5 + w8)), (w6, w7, w8))  # G g
        for row in range(4):  # (G g) G^T, row by row
            x0, x1, x2 = rows[row]
            at = np.uint64(4 * row) * s + k
            transformed[at] = x0
            transformed[at + s] = 0.5 * (x0 + x1 + x2)
            transformed[at + np.uint64(2) * s] = 0.5 * (x0 - x1 + x2)
            transformed[at + np.uint64(3) * s] = x2


@njit(cache=True, nogil=True)
def _winograd_forward_items(x, packed, scale, shift, residual, has_residual, activation, low, high, out, pad_h, pad_w,
                            groups, tile_rows, chunk_rows, first_item, last_item):
    """Items of a 3x3 convolution at stride 1 by F(2x2, 3x3) (the module's docstring), with
    ``packed`` from :func:`winograd_weights`: an item is a (sample, group, block of
    ``tile_rows`` tile rows), for every filter of the group.

    The item's tile rows are taken ``chunk_rows`` at a time (:func:`winograd_chunk_rows`): their
    input rows, zero-padded, go into the even- and odd-column planes of each channel, and their
    tiles, in row order, ``WINOGRAD_TILES`` at a time (a group), through the input transform, the
    16 products (each filter block of ``MR`` against the group's tiles, :func:`tap_product`) and
    the output transform, which stores the 2x2 outputs into the output rows, finished there for
    a clip or no activation (:func:`winograd_store`); the other activations finish each chunk's
    rows after (:func:`_finish_row`)."""
    before = flush_denormals()  # (denormal inputs read as zero: the docstring of flush_denormals)
    channels = x.shape[1] // groups
    filters, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    per_group = filters // groups
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    blocks = (tiles_h + tile_rows - 1) // tile_rows
    lanes = VECTOR_BYTES // x.itemsize
    nr = PANEL_BYTES // x.itemsize
    line = 64 // x.itemsize
    # the planes: per channel the even then the odd padded columns, 2 * chunk_rows + 2 rows each
    pitch = tiles_w + 1
    plane_rows = 2 * chunk_rows + 2
    plane = plane_rows * pitch
    padded = np.zeros(channels * 2 * plane + 2 * lanes + 2, x.dtype)  # (whole vectors read past the last tile)
    # a group's transformed input, products and outputs; position strides off a multiple of 4 KB
    wide = WINOGRAD_TILES + WINOGRAD_SPARE
    blocks_f = (per_group + MR - 1) // MR
    v_step, m_step = channels * wide + line, blocks_f * MR * wide + line
    transformed = np.zeros(16 * v_step, x.dtype)
    products = np.zeros(16 * m_step, x.dtype)
    offsets = np.empty(channels, np.uint64)
    for c in range(channels):
        offsets[c] = c * wide
    plane_out = out_h * out_w
    flat_out, flat_residual = out.reshape(-1), residual.reshape(-1)
    for item in range(first_item, last_item):
        n = item // (groups * blocks)
        g = (item // blocks) % groups
        first_tile_row = (item % blocks) * tile_rows
        item_rows = min(tiles_h, first_tile_row + tile_rows) - first_tile_row
        for chunk in range(first_tile_row, first_tile_row + item_rows, chunk_rows):
            count = min(chunk_rows, first_tile_row + item_rows - chunk)
            for c in range(channels):
                _fill_planes(x[n, g * channels + c], 2 * chunk - pad_h, 2 * count + 2, pad_w, padded, c * 2 * plane,
                             pitch, plane_rows, 1, 2)
            tiles = count * tiles_w
            for t0 in range(0, tiles, WINOGRAD_TILES):
                group_tiles = min(WINOGRAD_TILES, tiles - t0)
                t = t0
                while t < t0 + group_tiles:  # the input transform, a tile row's run at a time
                    row, column = t // tiles_w, t % tiles_w
                    run = min(tiles_w - column, t0 + group_tiles - t)
                    for c in range(channels):
                        winograd_input(padded, c * 2 * plane + 2 * row * pitch + column, pitch, plane, transformed,
                                       c * wide + t - t0, v_step, (run + lanes - 1) // lanes)
                    t += run
                for xi in range(16):
                    for block in range(blocks_f):
                        for start in range(0, group_tiles, nr):
                            tap_product(packed, ((g * 16 + xi) * blocks_f + block) * MR * channels, transformed,
                                        xi * v_step + start, offsets, 0, products,
                                        xi * m_step + block * MR * wide + start, channels, wide, False)
                for f in range(g * per_group, (g + 1) * per_group):
                    _store_group(products, (f - g * per_group) * wide, m_step, flat_out, (n * filters + f) * plane_out,
                                 flat_residual, t0, group_tiles, chunk, tiles_w, out_h, out_w, scale[f], shift[f],
                                 has_residual, activation, low, high)
            if activation != EPILOGUE_NONE and activation != EPILOGUE_CLIP:
                _finish_rows(out, residual, has_residual, scale, shift, activation, low, high, n, g * per_group,
                             (g + 1) * per_group, 2 * chunk, min(out_h, 2 * (chunk + count)))
    restore_denormals(before)


@njit(cache=True)
def _store_group(products, m_start, m_step, flat_out, out_start, flat_residual, t0, group_tiles, chunk, tiles_w,
                 out_h, out_w, scale, shift, has_residual, activation, low, high):
    """A group's outputs of one filter (its products from ``products[m_start]``, positions
    ``m_step`` apart) transformed and stored into the filter's output plane at ``out_start``, a
    tile row's run at a time (:func:`winograd_store`), finished in the store where the epilogue
    is the clip case or none."""
    lanes = VECTOR_BYTES // products.itemsize
    finish = activation == EPILOGUE_NONE or activation == EPILOGUE_CLIP
    t = t0
    while t < t0 + group_tiles:
        row, column = t // tiles_w, t % tiles_w
        run = min(tiles_w - column, t0 + group_tiles - t)
        top = 2 * (chunk + row)
        winograd_store(products, m_start + t - t0, m_step, flat_out, out_start + top * out_w + 2 * column, out_w,
                       (run + lanes - 1) // lanes, min(2 * run, out_w - 2 * column), min(2, out_h - top), scale, shift,
                       flat_residual, has_residual, finish, activation == EPILOGUE_CLIP, low, high)
        t += run


@njit(cache=True)
def _finish_rows(out, residual, has_residual, scale, shift, activation, low, high, n, first_filter, last_filter,
                 first_row, last_row):
    """The epilogue (:func:`_finish_row`) on output rows ``first_row .. last_row - 1`` of sample
    ``n``'s filters ``first_filter .. last_filter - 1``: for the activations the stores do not
    apply."""
    out_w = out.shape[3]
    for f in range(first_filter, last_filter):
        _finish_row(out[n, f].reshape(-1)[first_row * out_w:last_row * out_w],
                    residual[n, f].reshape(-1)[first_row * out_w:last_row * out_w], has_residual, scale[f], shift[f],
                    activation, low, high)


def by_winograd(weight_shape, groups, stride, dilation, out_shape, itemsize):
    """Whether a 3x3 convolution onto ``out_shape`` (N, F, OH, OW) takes
    :func:`_winograd_forward_items`: at stride 1 without dilation, on a processor that runs
    :func:`tap_product` natively, with at least ``WINOGRAD_MIN_CHANNELS`` input channels and
    filters a group, at least ``WINOGRAD_MIN_TILES`` tiles (2x2 outputs) in the call and a
    group's worth (``WINOGRAD_TILES``) an image, and at most ``WINOGRAD_MAX_WEIGHT_BYTES`` of
    transformed weights a group.

    Against the panels or im2col and OpenBLAS, 2 threads, two rounds (``bench/panel_conv.py``
    against ``--no-winograd``), ms: the CIFAR-sized layer at batch 64 3.95-4.13 -> 3.02-3.32;
    32 to 32 channels at 32x32, batch 32, 4.08-4.15 -> 2.56-2.65; ResNet's 56x56 layer at batch
    32 45.8-46.1 -> 26.4-26.5, at batch 1 1.62-1.64 -> 0.93-1.02; its 28x28 one at batch 16
    24.0-24.4 -> 12.6-13.0, its 14x14 one at batch 16 23.2-24.2 -> 19.4-19.6 (4 MB of
    transformed weights); its 28x28 one at batch 1 (196 tiles), with the weights' transform at 20
    ns a filter and channel, 1.63 -> 1.28-1.33. Not taken: fewer tiles, where the weights' transform, before the
    items run, costs more than it saves (its 14x14 layer at batch 1, 49 tiles: 1.73 -> 2.60
    ms, of which 1.25 the transform; 32 channels at 8x8, batch 4: 0.10-0.11 -> 0.14-0.15; about
    even at 128 to 196 tiles of 32 and 64 channels); larger weights, which every group of
    tiles reads again (ResNet's 7x7 layer at batch 16, 16 MB transformed: 21.7-22.0 ->
    35.9-38.3); and images of fewer tiles than a group, whose groups run part empty (the small
    outputs' path, with the samples innermost, keeps them: 8x8 outputs, 32 to 64 channels at
    batch 64, 1.15-1.34 -> 1.18-1.26)."""
    filters, channels, kernel_h, kernel_w = weight_shape
    per_group = filters // groups
    image_tiles = ((out_shape[2] + 1) // 2) * ((out_shape[3] + 1) // 2)
    return (kernel_h, kernel_w) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) \
        and bool(WINOGRAD) and available() and min(channels, per_group) >= WINOGRAD_MIN_CHANNELS \
        and image_tiles >= WINOGRAD_TILES and out_shape[0] * image_tiles >= WINOGRAD_MIN_TILES \
        and 16 * channels * per_group * itemsize <= WINOGRAD_MAX_WEIGHT_BYTES


def winograd_items(samples, groups, out_shape, channels, workers, itemsize):
    """``(items, (tile_rows, chunk_rows))`` of :func:`_winograd_forward_items` onto
    ``out_shape`` (N, F, OH, OW) with ``channels`` input channels a group: an item is a whole
    image's (and group's) tile rows, or, with fewer images than ``workers``, a share of them;
    its chunks from :func:`winograd_chunk_rows`."""
    tiles_h, tiles_w = (out_shape[2] + 1) // 2, (out_shape[3] + 1) // 2
    tile_rows = -(-tiles_h // -(-workers // (samples * groups)))
    return samples * groups * -(-tiles_h // tile_rows), (tile_rows,
                                                         winograd_chunk_rows(tiles_w, channels, tile_rows, itemsize))


def winograd_chunk_rows(tiles_w, channels, tile_rows, itemsize):
    """Tile rows :func:`_winograd_forward_items` fills the planes of at a time: at most
    ``tile_rows`` (an item's), with the planes of ``channels`` channels (two planes ``tiles_w +
    1`` wide, two rows a tile row and two more) within ``WINOGRAD_PLANES_BYTES``, at least one;
    among those, the count whose tiles leave the least of their last group empty (ResNet's 56x56
    layer: 6 rows of 28 tiles, seven whole groups of 24; 3 rows left half a group empty, and its
    products took 15 % longer, 10.6 against 9.2 ms for 8 samples on one thread)."""
    plane_rows = int(WINOGRAD_PLANES_BYTES) // (channels * 2 * (tiles_w + 1) * itemsize)  # (each 2 * R + 2)
    fitting = max(1, min(tile_rows, (plane_rows - 2) // 2))
    best, least = 1, 1.0
    for rows in range(1, fitting + 1):
        tiles = rows * tiles_w
        empty = (-tiles % WINOGRAD_TILES) / (tiles + -tiles % WINOGRAD_TILES)
        if empty <= least:
            best, least = rows, empty
    return best


__all__ = ["WINOGRAD_TILES", "by_winograd", "winograd_chunk_rows", "winograd_items", "winograd_input", "winograd_store",
           "winograd_weights"]
