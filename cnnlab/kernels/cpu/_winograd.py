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
:func:`winograd_output`).

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
from numba.extending import intrinsic, overload

from ._epilogue import _finish_row
from ._microkernel import MR, PANEL_BYTES, VECTOR_BYTES, _summing_loop, _Vectors, available, tap_product
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


def winograd_output(m, m_start, m_step, y, y_start, y_pitch, count):
    """``Y = A^T M A`` of ``count`` vectors of tiles: tile ``t``'s position ``xi`` at ``m[m_start
    + xi * m_step + t]``, its 2x2 outputs to ``y[y_start + r * y_pitch + 2 * t + q]`` (row
    ``r``, column ``q``). Flat arrays of one dtype, C-contiguous; nothing is checked. Compiled
    kernels run the intrinsic below; from Python, NumPy computes the same."""
    tiles = count * (VECTOR_BYTES // m.itemsize)
    p = [m[m_start + xi * m_step:][:tiles] for xi in range(16)]
    a = [p[j] + p[4 + j] + p[8 + j] for j in range(4)]
    b = [p[4 + j] - p[8 + j] - p[12 + j] for j in range(4)]
    for r, s in enumerate((a, b)):
        row = y[y_start + r * y_pitch:][:2 * tiles]
        row[0::2] = s[0] + s[1] + s[2]
        row[1::2] = s[1] - s[2] - s[3]


@intrinsic
def _winograd_output(typingctx, m, m_start, m_step, y, y_start, y_pitch, count):
    """:func:`winograd_output`, compiled."""
    if not _same_float_arrays(m, y):
        return None
    signature = types.void(m, types.intp, types.intp, y, types.intp, types.intp, types.intp)
    return signature, functools.partial(_winograd_output_code, m.dtype)


@overload(winograd_output)
def _winograd_output_overload(m, m_start, m_step, y, y_start, y_pitch, count):
    def call(m, m_start, m_step, y, y_start, y_pitch, count):
        _winograd_output(m, m_start, m_step, y, y_start, y_pitch, count)
    return call


def _winograd_output_code(dtype, context, builder, signature, args):
    """:func:`winograd_output`'s IR: a loop over the vectors, 16 loads, 16 adds, and each row's
    two outputs of a tile interleaved (two shuffles) into two stores."""
    m_array, m_start, m_step, y_array, y_start, y_pitch, count = args
    v = _Vectors(dtype, builder)
    source = builder.gep(context.make_array(signature.args[0])(context, builder, m_array).data, [m_start])
    target = builder.gep(context.make_array(signature.args[3])(context, builder, y_array).data, [y_start])
    lanes, i32 = v.lanes, ir.IntType(32)
    # the lanes of (even, odd) interleaved: the first half of each, then the second
    low = ir.Constant(ir.VectorType(i32, lanes), [k // 2 + (lanes if k % 2 else 0) for k in range(lanes)])
    high = ir.Constant(ir.VectorType(i32, lanes), [lanes // 2 + k // 2 + (lanes if k % 2 else 0) for k in range(lanes)])

    def step(k, sums, fma):
        at = builder.mul(k, v.at(lanes))
        p = [v.load(builder.gep(source, [builder.add(at, builder.mul(m_step, v.at(xi)))])) for xi in range(16)]
        a = [builder.fadd(builder.fadd(p[j], p[4 + j]), p[8 + j]) for j in range(4)]
        b = [builder.fsub(builder.fsub(p[4 + j], p[8 + j]), p[12 + j]) for j in range(4)]
        out = builder.gep(target, [builder.mul(at, v.at(2))])
        for r, s in enumerate((a, b)):
            even = builder.fadd(builder.fadd(s[0], s[1]), s[2])
            odd = builder.fsub(builder.fsub(s[1], s[2]), s[3])
            row = builder.gep(out, [builder.mul(y_pitch, v.at(r))])
            v.store(builder.shuffle_vector(even, odd, low), row)
            v.store(builder.shuffle_vector(even, odd, high), builder.gep(row, [v.at(lanes)]))
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
    the output transform, whose 2x2 outputs are copied into the output rows. Each output row of
    the chunk is then finished by the epilogue (:func:`_finish_row`)."""
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
    tile_out = np.empty(per_group * 4 * wide, x.dtype)
    offsets = np.empty(channels, np.uint64)
    for c in range(channels):
        offsets[c] = c * wide
    out_planes = out.reshape(out.shape[0], filters, out_h * out_w)
    residual_planes = residual.reshape(out.shape[0], filters, out_h * out_w)
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
                for f in range(per_group):
                    winograd_output(products, f * wide, m_step, tile_out, f * 4 * wide, 2 * wide,
                                    (group_tiles + lanes - 1) // lanes)
                _copy_tiles(tile_out, wide, out_planes, n, g * per_group, per_group, t0, group_tiles, chunk, tiles_w,
                            out_h, out_w)
            first_pixel = 2 * chunk * out_w
            pixels = min(out_h, 2 * (chunk + count)) * out_w - first_pixel
            for f in range(per_group):
                k = g * per_group + f
                _finish_row(out_planes[n, k, first_pixel:first_pixel + pixels],
                            residual_planes[n, k, first_pixel:first_pixel + pixels], has_residual, scale[k], shift[k],
                            activation, low, high)


@njit(cache=True)
def _copy_tiles(tile_out, wide, out_planes, n, first_filter, filters, t0, group_tiles, chunk, tiles_w, out_h, out_w):
    """Copy a group's 2x2 outputs (:func:`winograd_output`'s rows ``2 * wide`` apart, each
    filter's ``4 * wide`` apart) into the output planes, a tile row's run at a time, dropping
    the row and column past an odd output's edge."""
    t = t0
    while t < t0 + group_tiles:
        row, column = t // tiles_w, t % tiles_w
        run = min(tiles_w - column, t0 + group_tiles - t)
        top = 2 * (chunk + row)
        first, width = 2 * column, min(out_w - 2 * column, 2 * run)
        source = 2 * (t - t0)
        for f in range(filters):
            span = out_planes[n, first_filter + f]
            at = np.uint64(top * out_w + first)
            base = np.uint64(f * 4 * wide + source)
            for q in range(width):
                span[at + np.uint64(q)] = tile_out[base + np.uint64(q)]
            if top + 1 < out_h:
                at, base = at + np.uint64(out_w), base + np.uint64(2 * wide)
                for q in range(width):
                    span[at + np.uint64(q)] = tile_out[base + np.uint64(q)]
        t += run


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


__all__ = ["WINOGRAD_TILES", "by_winograd", "winograd_chunk_rows", "winograd_items", "winograd_input", "winograd_output", "winograd_weights"]
