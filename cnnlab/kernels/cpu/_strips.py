"""Convolutions by strips of 8 output pixels and 32 filters, the input channels taken a chunk
at a time, the sums kept pixel by pixel in a small buffer and turned round into the output
planes once a row is done.

The tiles (:func:`cnnlab.kernels.cpu._tiles.tile_product`) keep 16 pixels by one vector of 16
filters: each step loads the step's weights and broadcasts 16 input values for 16 fused
multiply-adds, 17 loads for 16 multiply-adds, and their weights (every tap of 16 filters) fill
the L1 cache from a few hundred taps on. :func:`strip_product` keeps 8 pixels by two vectors of
filters: each input value broadcast feeds two multiply-adds (10 loads for 16), and a call sums
only a chunk of the channels (its weights a few kilobytes, read again by every strip of the
rows while they stay in the L1 cache), adding to what the chunks before left in the buffer.
When every chunk is summed, :func:`strip_finish` turns each 16 pixels by 16 filters of the
buffer round in registers (the tiles' transpose), applies the epilogue and stores each filter's
16 pixels into its output plane.

On the ``strided`` reference convolution (32 to 64 channels, 3x3 at stride 2 onto 32x32) one
thread summed at 90-96 GMAC/s with 8 to 16 channels a chunk against the tiles' 67-70 on the same
copied input (scratch timings); ``bench/strip_conv.py`` times the path against the one each
convolution takes without it.
"""

import functools

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ... import config
from .. import EPILOGUE_CLIP, EPILOGUE_NONE
from ._epilogue import _finish_row
from ._microkernel import (
    HALVED_VECTORS,
    VECTOR_BYTES,
    _summing_loop,
    _Vectors,
    available,
    flush_denormals,
    restore_denormals,
    window_offsets,
)
from ._tiles import TILE, _stage_rows, _store_finished, _transposed, block_items, packed_weights

#: output pixels of a strip (a run of one output row)
STRIP = 8
#: filters of a strip: two vectors of float32 lanes
PAIR = 2 * TILE
#: the convolutions by strips where :func:`by_strips` says so (False: never)
STRIPS = True
#: the least share of the filter lanes of its pairs of vectors a convolution's filters fill
STRIPS_MIN_FILL = 0.75
#: the most bytes of weights a chunk of channels brings (every tap of its channels, 32 filters)
STRIPS_CHUNK_BYTES = 16 * 1024
#: the most bytes of padded input rows (every channel) an item copies: the L2 cache's share
STRIPS_STAGED_BYTES = 512 * 1024
#: strips a chunk of weights serves before the next chunk comes, at least (rows together)
STRIPS_PER_PASS = 4
#: the most bytes of weights a sample of the call that :func:`by_strips` takes (the weights are
#: packed at every call and read from beyond the L2 cache by every item)
STRIPS_MAX_SAMPLE_WEIGHT_BYTES = 1536 * 1024
#: the fewest output pixels a plane that :func:`by_strips` takes
STRIPS_MIN_PIXELS = 49
#: the fewest taps (channels times the window) of a convolution at stride 1 onto small outputs
#: (fewer than ``config.GEMM_MIN_COLUMNS`` pixels) that :func:`by_strips` takes: with fewer, the
#: samples-innermost panels and the tiles keep up
STRIPS_SMALL_MIN_TAPS = 1152
#: the fewest input channels, and the most 2x2 output tiles a call, of a 3x3 convolution at
#: stride 1 that the strips take before F(2x2, 3x3) (:func:`before_winograd`)
STRIPS_BEFORE_WINOGRAD_CHANNELS = 128
STRIPS_BEFORE_WINOGRAD_TILES = 784
#: the strips take only the convolutions the panels would take without them: on a processor
#: whose 512-bit vectors are two halves (Zen 4: :func:`._microkernel.halved_vectors`) the strips
#: lost to every other path they replaced, 1.02x-1.88x its time, and beat only the panels
#: (0.84x, 0.89x; ``bench/strip_conv.py``, docs/performance.md)
STRIPS_ONLY_FOR_PANELS = HALVED_VECTORS


def strip_product(a, a_start, a_step, offsets, k, w, w_start, s, s_start, accumulate):
    """The sums of a strip: ``s[s_start + p * 32 + f] (+)= sum_i a[a_start + p * a_step +
    offsets[i]] * w[w_start + i * 32 + f]`` for the 8 pixels ``p``, the 32 filters ``f`` and the
    ``k`` steps ``i``, added to what ``s`` holds with ``accumulate``, else written. ``a_step``
    1 or 2; flat float32 arrays (``offsets`` uint64), every index in bounds. Compiled kernels run
    one of two intrinsics (:func:`_strip_kernel`); from Python (kernels run interpreted) NumPy
    computes the same, within rounding."""
    pixels = a_start + np.arange(STRIP) * a_step
    sums = np.zeros((STRIP, PAIR), np.float64)
    for i in range(k):
        sums += np.outer(a[pixels + int(offsets[i])], w[w_start + i * PAIR:][:PAIR])
    place = s[s_start:s_start + STRIP * PAIR].reshape(STRIP, PAIR)
    place[:] = sums + place if accumulate else sums


def _strip_code(step, context, builder, signature, args):
    """:func:`strip_product`'s IR at a stride of ``step`` along the row: 16 accumulators (8
    pixels by two vectors of filters), from the buffer or zeros, one loop over the steps."""
    a, a_start, offsets, k, w, w_start, s, s_start, accumulate = args
    v = _Vectors(types.float32, builder)
    i32 = ir.IntType(32)

    def data(position, value):
        return context.make_array(signature.args[position])(context, builder, value).data

    pa, pw = builder.gep(data(0, a), [a_start]), builder.gep(data(4, w), [w_start])
    step_offsets = data(2, offsets)
    places = [builder.gep(data(6, s), [builder.add(s_start, v.at(p * PAIR + h * TILE))])
              for p in range(STRIP) for h in range(2)]
    undefined = ir.Constant(v.vector, ir.Undefined)
    zeros = ir.Constant(ir.VectorType(i32, TILE), [0] * TILE)
    entry = builder.block
    with builder.if_then(accumulate):
        loaded = [v.load(place) for place in places]
        loaded_in = builder.block
    initial = []
    for value in loaded:
        phi = builder.phi(v.vector)
        phi.add_incoming(ir.Constant(v.vector, [0.0] * TILE), entry)
        phi.add_incoming(value, loaded_in)
        initial.append(phi)

    def step_sums(i, sums, fma):
        run = builder.gep(pa, [builder.load(builder.gep(step_offsets, [i]))])
        weights = [v.load(builder.gep(pw, [builder.add(builder.mul(i, v.at(PAIR)), v.at(h * TILE))]))
                   for h in range(2)]
        updated = []
        for p in range(STRIP):
            value = builder.load(builder.gep(run, [v.at(p * step)]))
            spread = builder.shuffle_vector(builder.insert_element(undefined, value, ir.Constant(i32, 0)), undefined,
                                            zeros)
            updated += [fma(spread, weights[h], sums[2 * p + h]) for h in range(2)]
        return updated

    for value, place in zip(_summing_loop(v, k, 2 * STRIP, step_sums, initial), places):
        v.store(value, place)
    return context.get_dummy_value()


def _strip_kernel(step):
    """The intrinsic of :func:`strip_product` at a stride of ``step`` along the row."""
    @intrinsic
    def kernel(typingctx, a, a_start, offsets, k, w, w_start, s, s_start, accumulate):
        arrays = (a, w, s)
        if not all(isinstance(t, types.Array) and t.layout == "C" and t.dtype == types.float32 for t in arrays) \
                or not isinstance(offsets, types.Array) or offsets.dtype != types.uint64:
            return None
        i = types.intp
        return types.void(a, i, offsets, i, w, i, s, i, types.boolean), functools.partial(_strip_code, step)
    return kernel


_STRIP_1, _STRIP_2 = _strip_kernel(1), _strip_kernel(2)


@overload(strip_product)
def _strip_product_overload(a, a_start, a_step, offsets, k, w, w_start, s, s_start, accumulate):
    def call(a, a_start, a_step, offsets, k, w, w_start, s, s_start, accumulate):
        if a_step == 1:
            _STRIP_1(a, a_start, offsets, k, w, w_start, s, s_start, bool(accumulate))
        else:
            _STRIP_2(a, a_start, offsets, k, w, w_start, s, s_start, bool(accumulate))
    return call


def strip_finish(s, s_start, pixels, c, c_start, ldc, filters, scale, shift, f_start, residual, finish,
                 has_residual, clip, low, high):
    """16 pixels of the strips' buffer ``s`` (pixel ``p``'s 16 filters at ``s_start + p * 32``)
    into the output: ``c[c_start + f * ldc + p] = s[s_start + p * 32 + f]`` for the ``p`` below
    ``pixels`` and the ``f`` below ``filters``, finished with ``finish`` as the epilogue's clip
    case computes it (:func:`cnnlab.kernels.cpu._tiles.tile_product`'s, its scale and shift
    from ``f_start``, its residual read where ``c`` is written). The buffer must hold 16 pixels
    from ``s_start`` whatever ``pixels`` is. Compiled: one intrinsic (a 16x16 transpose in
    registers, masked stores); from Python, NumPy."""
    block = s[s_start:s_start + (TILE - 1) * PAIR + TILE].astype(np.float64)
    for f in range(filters):
        row = block[f::PAIR][:pixels]
        if finish:
            row = float(scale[f_start + f]) * row + float(shift[f_start + f])
            if has_residual:
                row = row + residual[c_start + f * ldc:][:pixels]
            if clip:
                row = np.clip(row, low, high)
        c[c_start + f * ldc:][:pixels] = row


def _finish_code(context, builder, signature, args):
    """:func:`strip_finish`'s IR."""
    (s, s_start, pixels, c, c_start, ldc, filters, scale, shift, f_start, residual, finish, has_residual, clip, low,
     high) = args
    v = _Vectors(types.float32, builder)
    i32 = ir.IntType(32)

    def data(position, value):
        return context.make_array(signature.args[position])(context, builder, value).data

    ps = builder.gep(data(0, s), [s_start])
    by_pixel = [v.load(builder.gep(ps, [v.at(p * PAIR)])) for p in range(TILE)]
    index_vector = ir.VectorType(ir.IntType(64), TILE)
    undefined, zeros = ir.Constant(index_vector, ir.Undefined), ir.Constant(ir.VectorType(i32, TILE), [0] * TILE)

    def spread(value, vector):
        return builder.shuffle_vector(builder.insert_element(vector, value, ir.Constant(i32, 0)), vector, zeros)

    stored = builder.icmp_signed("<", ir.Constant(index_vector, list(range(TILE))), spread(pixels, undefined))
    vector_undefined = ir.Constant(v.vector, ir.Undefined)
    _store_finished(builder, v, _transposed(builder, by_pixel), stored, builder.gep(data(3, c), [c_start]),
                    builder.gep(data(10, residual), [c_start]), ldc, filters,
                    builder.gep(data(7, scale), [f_start]), builder.gep(data(8, shift), [f_start]), finish,
                    has_residual, clip, spread(low, vector_undefined), spread(high, vector_undefined))
    return context.get_dummy_value()


@intrinsic
def _finish_kernel(typingctx, s, s_start, pixels, c, c_start, ldc, filters, scale, shift, f_start, residual, finish,
                   has_residual, clip, low, high):
    arrays = (s, c, scale, shift, residual)
    if not all(isinstance(t, types.Array) and t.layout == "C" and t.dtype == types.float32 for t in arrays) \
            or low != types.float32 or high != types.float32:
        return None
    i, flag = types.intp, types.boolean
    return (types.void(s, i, i, c, i, i, i, scale, shift, i, residual, flag, flag, flag, types.float32, types.float32),
            _finish_code)


@overload(strip_finish)
def _strip_finish_overload(s, s_start, pixels, c, c_start, ldc, filters, scale, shift, f_start, residual, finish,
                           has_residual, clip, low, high):
    def call(s, s_start, pixels, c, c_start, ldc, filters, scale, shift, f_start, residual, finish, has_residual,
             clip, low, high):
        _finish_kernel(s, s_start, pixels, c, c_start, ldc, filters, scale, shift, f_start, residual, bool(finish),
                       bool(has_residual), bool(clip), np.float32(low), np.float32(high))
    return call


def by_strips(weight_shape, groups, stride, out_shape, itemsize, sealed=False):
    """Whether a convolution onto ``out_shape`` (N, F, OH, OW) takes :func:`_strip_forward_items`:
    float32 on a processor with AVX-512, one group, a window wider than 1x1, a stride of 1 or 2
    along the rows, filters that fill ``STRIPS_MIN_FILL`` of the lanes of their pairs of
    vectors, at least ``STRIPS_MIN_PIXELS`` output pixels a plane, at least
    ``STRIPS_SMALL_MIN_TAPS`` taps at stride 1 onto small outputs (fewer than
    ``config.GEMM_MIN_COLUMNS`` pixels) and at most ``STRIPS_MAX_SAMPLE_WEIGHT_BYTES`` of
    weights a sample, unless they are ``sealed`` (packed once and kept:
    :func:`cnnlab.kernels.cpu.conv._sealed`): ResNet-18's 3x3 layers at 14x14 and 7x7, batch 1,
    ran 1.05 and 1.10 ms by strips on weights packed before, against 1.43 and 1.60 by
    im2col and GEMM (scratch timings, 2 threads)."""
    filters, channels, kernel_h, kernel_w = weight_shape
    pixels = out_shape[2] * out_shape[3]
    small = stride[1] == 1 and pixels < int(config.GEMM_MIN_COLUMNS)
    return bool(STRIPS) and available() and VECTOR_BYTES == 64 and itemsize == 4 and groups == 1 \
        and kernel_h * kernel_w > 1 and stride[1] in (1, 2) \
        and filters >= STRIPS_MIN_FILL * PAIR * -(-filters // PAIR) \
        and pixels >= STRIPS_MIN_PIXELS and not (small and channels * kernel_h * kernel_w < STRIPS_SMALL_MIN_TAPS) \
        and (sealed or filters * channels * kernel_h * kernel_w * itemsize <= STRIPS_MAX_SAMPLE_WEIGHT_BYTES * out_shape[0])


def before_winograd(weight_shape, out_shape):
    """Whether a convolution that both the strips (:func:`by_strips`) and F(2x2, 3x3) would
    take goes to the strips: at least ``STRIPS_BEFORE_WINOGRAD_CHANNELS`` input channels and at
    most ``STRIPS_BEFORE_WINOGRAD_TILES`` 2x2 output tiles in the call. There F(2x2, 3x3)'s
    weight transform (16 values a filter and channel, each call) and its groups of tiles, few
    an image, cost more than its 2.25 times fewer multiply-adds save: ResNet-18's 3x3 layers
    at 28x28, batch 1, and at 14x14, batch 16, ran 0.90x and 0.91x by strips; at 56x56, batch 1
    (64 channels), and at 28x28, batch 16 (3,136 tiles), 1.14x and 1.43x (``bench/strip_conv.py``)."""
    tiles = out_shape[0] * -(-out_shape[2] // 2) * -(-out_shape[3] // 2)
    return weight_shape[1] >= STRIPS_BEFORE_WINOGRAD_CHANNELS and tiles <= STRIPS_BEFORE_WINOGRAD_TILES


def strip_geometry(channels, out_w, window):
    """``(channels a chunk, rows a pass)`` of :func:`_strip_forward_items` for an output
    ``out_w`` wide, a window of ``window`` taps a channel: chunks whose weights are at most
    ``STRIPS_CHUNK_BYTES``, passes of whole rows of at least ``STRIPS_PER_PASS`` strips."""
    chunk = max(1, min(channels, STRIPS_CHUNK_BYTES // (window * PAIR * 4)))
    return chunk, max(1, -(-STRIPS_PER_PASS // -(-out_w // STRIP)))


def strip_work(samples, filters, channels, out_h, span_w, rows_in, halo, workers):
    """``(item count, rows an item takes)`` of :func:`_strip_forward_items`, its output ``out_h``
    rows high, its input rows ``span_w`` columns wide (padded), each output row ``rows_in`` input
    rows down from the last, a window ``halo`` rows more: an item is a sample, a block of output
    rows and a pair of filter vectors. Whole samples where there are at least two items a
    thread; else the rows in as many blocks as make that many. Fewer rows where an item's input
    rows (every channel's) would be more than ``STRIPS_STAGED_BYTES``."""
    return block_items(samples, -(-filters // PAIR), out_h, 1, channels * rows_in * span_w * 4,
                       channels * halo * span_w * 4, STRIPS_STAGED_BYTES, workers)


def strip_weights(weight, shared=False):
    """``weight`` (F, C, KH, KW) packed for :func:`strip_product`: each tap's filters in pairs of
    vectors side by side (:func:`cnnlab.kernels.cpu._tiles.packed_weights` in 32 lanes). Once a
    call, before the items (``shared``, :func:`cnnlab.kernels.cpu.conv._run_forward`'s, is not
    needed)."""
    return packed_weights(weight, PAIR)


@njit(cache=True, nogil=True)
def _strip_forward_items(x, packed, scale, shift, residual, has_residual, activation, low, high, out, stride_h,
                         stride_w, pad_h, pad_w, dilation_h, dilation_w, kernel_h, kernel_w, block_rows, chunk,
                         pass_rows, first_item, last_item):
    """Items of a convolution by strips (:func:`by_strips`): an item is a (sample, block of
    ``block_rows`` output rows, pair of filter vectors), the pairs innermost.

    The item's input rows (every channel, zero-padded, and wide enough for whole strips) are
    first copied into a buffer (not again for the next item where it reads the same rows: the
    next pair). Then, a pass of ``pass_rows`` rows at a time, each chunk of ``chunk`` channels
    adds its sums of every strip of the pass into the strips' buffer, and :func:`strip_finish`
    writes the pass's rows finished (the clip in the kernel); another activation, or the mask
    of a ReLU's backward, is applied to the rows after. The weights come ``packed`` by
    :func:`strip_weights` (once a call); ``chunk`` and ``pass_rows`` from
    :func:`strip_geometry`."""
    before = flush_denormals()  # (denormal inputs read as zero: the docstring of flush_denormals)
    channels = x.shape[1]
    filters, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
    window = kernel_h * kernel_w
    taps = channels * window
    pairs = (filters + PAIR - 1) // PAIR
    blocks = (out_h + block_rows - 1) // block_rows
    strips = (out_w + STRIP - 1) // STRIP
    wide = strips * STRIP
    span_w = (wide - 1) * stride_w + (kernel_w - 1) * dilation_w + 1
    span_h = (block_rows - 1) * stride_h + (kernel_h - 1) * dilation_h + 1
    plane_in = span_h * span_w
    staged = np.zeros(channels * plane_in, x.dtype)
    offsets = np.empty(chunk * window, np.uint64)  # (a chunk's taps, from its first channel)
    window_offsets(offsets, kernel_h, kernel_w, dilation_h, dilation_w, span_h, span_w, 1)
    # (a finish reads 16 pixels' rows: past the pass's last strip, zeros, never garbage that is slow to compute with)
    sums = np.zeros(pass_rows * wide * PAIR + TILE * PAIR, x.dtype)
    plane = out_h * out_w
    flat_out, flat_residual = out.reshape(-1), residual.reshape(-1)
    in_kernel = activation == EPILOGUE_NONE or activation == EPILOGUE_CLIP
    staged_for = -1
    for item in range(first_item, last_item):
        n, block, g = item // (blocks * pairs), (item // pairs) % blocks, item % pairs
        first_row = block * block_rows
        last_row = min(out_h, first_row + block_rows)
        if staged_for != n * blocks + block:
            _stage_rows(x, n, first_row * stride_h - pad_h, (last_row - 1 - first_row) * stride_h
                        + (kernel_h - 1) * dilation_h + 1, pad_w, span_h, span_w, staged)
            staged_for = n * blocks + block
        pair_filters = min(PAIR, filters - g * PAIR)
        for r0 in range(first_row, last_row, pass_rows):
            rows = min(pass_rows, last_row - r0)
            for c0 in range(0, channels, chunk):
                steps = min(chunk, channels - c0) * window
                for r in range(rows):
                    at = (r0 - first_row + r) * stride_h * span_w + c0 * plane_in
                    for q in range(strips):
                        strip_product(staged, at + q * STRIP * stride_w, stride_w, offsets, steps, packed,
                                      (g * taps + c0 * window) * PAIR, sums, (r * wide + q * STRIP) * PAIR, c0 > 0)
            for r in range(rows):
                for p0 in range(0, out_w, TILE):
                    for h in range(2):
                        if h * TILE < pair_filters:
                            f0 = g * PAIR + h * TILE
                            strip_finish(sums, (r * wide + p0) * PAIR + h * TILE, min(TILE, out_w - p0), flat_out,
                                         (n * filters + f0) * plane + (r0 + r) * out_w + p0, plane,
                                         min(TILE, pair_filters - h * TILE), scale, shift, f0, flat_residual,
                                         in_kernel, has_residual, activation == EPILOGUE_CLIP, low, high)
        if not in_kernel:
            for f in range(g * PAIR, g * PAIR + pair_filters):
                _finish_row(out[n, f].reshape(-1)[first_row * out_w:last_row * out_w],
                            residual[n, f].reshape(-1)[first_row * out_w:last_row * out_w], has_residual, scale[f],
                            shift[f], activation, low, high)
    restore_denormals(before)
