"""The polyphase planes the direct, panel and Winograd convolutions read their taps from: a
chunk of an input's rows, zero-padded, split by the stride into planes in which every tap of the
window reads one contiguous run (:func:`_fill_planes`), with the layout and the taps' offsets
(:func:`_planes_layout`, :func:`_tap_offsets`)."""

import functools

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ._microkernel import VECTOR_BYTES, _summing_loop, _Vectors

#: elements past a direct item's rows that its tap loops may compute (and drop), so that they
#: run whole vectors: the planes and row buffers have this much spare room
DIRECT_SPARE = 16


@njit(cache=True)
def _plane_extent(size, kernel, stride, dilation):
    """How many rows (or columns) of each of the stride's polyphase planes ``size`` output rows
    (or columns) of a window ``kernel`` wide read: a plane row's ``pitch`` for the output's
    width."""
    return ((size - 1) * stride + (kernel - 1) * dilation + stride) // stride


@njit(cache=True)
def _planes_layout(x, channels, block_rows, out_w, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w):
    """The polyphase planes of ``channels`` input channels for items of ``block_rows`` output
    rows ``out_w`` wide (:func:`_fill_planes`): ``(pitch, plane_rows, channel_size, padded,
    offsets)``, a plane's row width and row count, one channel's planes' size, the buffer
    (zeros, so that the reads of the columns past the output's, which are dropped, always meet
    numbers, with ``DIRECT_SPARE`` more for the direct loops' whole vectors) and each tap's
    offset in it (:func:`_tap_offsets`)."""
    pitch = _plane_extent(out_w, kernel_w, stride_w, dilation_w)
    plane_rows = _plane_extent(block_rows, kernel_h, stride_h, dilation_h)
    channel_size = stride_h * stride_w * plane_rows * pitch
    padded = np.zeros(channels * channel_size + 2 * pitch + kernel_w * dilation_w + DIRECT_SPARE, x.dtype)
    offsets = _tap_offsets(kernel_h, kernel_w, pitch, plane_rows * pitch, stride_h, stride_w, dilation_h, dilation_w)
    return pitch, plane_rows, channel_size, padded, offsets


@njit(cache=True)
def _tap_offsets(kernel_h, kernel_w, pitch, size, stride_h, stride_w, dilation_h, dilation_w):
    """(KH, KW) unsigned offsets: where tap ``(i, j)``'s reads for output 0 start in
    :func:`_fill_planes`'s buffer (planes of ``size`` elements): its plane, then the
    plane row and column the tap is offset by."""
    offsets = np.empty((kernel_h, kernel_w), np.uint64)
    for i in range(kernel_h):
        for j in range(kernel_w):
            row, column = i * dilation_h, j * dilation_w
            plane = (row % stride_h) * stride_w + column % stride_w
            offsets[i, j] = plane * size + (row // stride_h) * pitch + column // stride_w
    return offsets


@njit(cache=True)
def _planes_tap_offsets(offsets, taps, channel_size, spare):
    """Where each of ``taps`` taps ``(c, i, j)`` (channel-major, as a weight's row) starts
    reading :func:`_fill_planes`'s buffer of channels ``channel_size`` apart, from
    :func:`_tap_offsets`'s ``offsets`` of one channel; followed by ``spare`` zeros."""
    kernel_h, kernel_w = offsets.shape
    flat = np.zeros(taps + spare, np.uint64)
    for t in range(taps):
        flat[t] = np.uint64((t // (kernel_h * kernel_w)) * channel_size) + offsets[(t // kernel_w) % kernel_h,
                                                                                   t % kernel_w]
    return flat


@njit(cache=True)
def _fill_planes(plane, top, rows_in, pad_w, padded, base, pitch, plane_rows, stride_h, stride_w):
    """Copy input rows ``top .. top+rows_in-1`` of ``plane`` (H, W), padded on the left by
    ``pad_w`` columns and with zeros outside the plane, into the polyphase planes that start at
    ``padded[base]``:
    padded row ``r`` and column ``q`` go to plane ``(r % stride_h, q % stride_w)``, at row
    ``r // stride_h`` and column ``q // stride_w`` (planes of ``plane_rows`` rows ``pitch``
    wide, one after another).

    Only the columns that hold input columns are written (input, or zeros in rows above or
    below the plane): the others are the same zeros for every item of a call (``padded`` starts
    as zeros). Flat unsigned indices, no view per row (a view costs two reference-count
    updates), and no division per row."""
    if stride_w == 2:  # both planes of a row in one pass over it
        _deinterleaved_rows(plane, top, rows_in, pad_w, padded, base, pitch, plane_rows, stride_h)
        return
    height, width = plane.shape
    size = plane_rows * pitch
    phase = plane_row = 0  # r % stride_h, r // stride_h
    for r in range(rows_in):
        h = top + r
        line = base + phase * stride_w * size + plane_row * pitch  # plane (phase, 0)'s row
        phase += 1
        if phase == stride_h:
            phase, plane_row = 0, plane_row + 1
        inside = 0 <= h < height
        if stride_w == 1:  # (no division: an integer division costs more than a short row's copy)
            first, last = min(pad_w, pitch), min(pad_w + width, pitch)
            source = np.uint64(first - pad_w if inside else 0)
            for m in range(line + first, line + max(first, last)):
                padded[np.uint64(m)] = plane[np.uint64(h), source + np.uint64(m - line - first)] if inside else 0
            continue
        for b in range(stride_w):
            # the plane's columns m reading input column m * stride_w + b - pad_w inside 0 .. width-1
            first = min(pitch, max(0, (pad_w - b + stride_w - 1) // stride_w))
            last = max(first, min(pitch, (pad_w + width - b + stride_w - 1) // stride_w))
            start, column = line + b * size, first * stride_w + b - pad_w
            if not inside:
                for m in range(start + first, start + last):
                    padded[np.uint64(m)] = 0
            else:
                for m in range(last - first):
                    padded[np.uint64(start + first + m)] = plane[np.uint64(h), np.uint64(column + m * stride_w)]


@njit(cache=True)
def _deinterleaved_rows(plane, top, rows_in, pad_w, padded, base, pitch, plane_rows, stride_h):
    """:func:`_fill_planes` at stride 2 along the rows: each input row ``top .. top+rows_in-1``
    of ``plane`` (zeros outside it), padded on the left by ``pad_w`` columns, has its even
    padded columns go to plane ``(r % stride_h, 0)`` and its odd ones to plane
    ``(r % stride_h, 1)``, at row ``r // stride_h``; those that hold input columns only.

    The input columns are read in pairs from the row's first on, each pair to both planes (with
    an odd ``pad_w`` a pair's first column is an odd padded one): a vector of pairs at a time
    by :func:`deinterleave_pairs`, the rest one by one. (A loop LLVM vectorized itself, with
    its checks on every row, took 2.1 ms for the stride-2 reference shape's 32 samples on one
    thread, 0.5 ns a value.) All rows in one call: a call per row cost as much again as its copy on
    MobileNetV2's 14-wide rows (576 channels at 14x14, the whole fill 215 -> 101 us, one
    thread), and pairs of padded columns left a 64-wide row with an odd padding 31 pairs, of
    which the vector loop took 16 and a scalar loop the rest."""
    height, width = plane.shape
    size = plane_rows * pitch
    first, stop = min(pad_w, 2 * pitch), min(pad_w + width, 2 * pitch)  # padded columns holding a row
    if first >= stop:
        return
    count, lead, last = (stop - first) // 2, first // 2, stop - 1
    flat, lanes = plane.reshape(-1), VECTOR_BYTES // plane.itemsize
    phase = plane_row = 0  # r % stride_h, r // stride_h
    for r in range(rows_in):
        h = top + r
        even = base + phase * 2 * size + plane_row * pitch
        odd = even + size
        phase += 1
        if phase == stride_h:
            phase, plane_row = 0, plane_row + 1
        # where a pair's first and second columns go
        to_first, to_second = (even + lead, odd + lead) if first % 2 == 0 else (odd + lead, even + lead + 1)
        to_last = np.uint64((even if last % 2 == 0 else odd) + last // 2)  # the last column, without a pair
        if not 0 <= h < height:
            for i in range(count):
                padded[np.uint64(to_first + i)] = 0
                padded[np.uint64(to_second + i)] = 0
            if (stop - first) % 2:
                padded[to_last] = 0
            continue
        row, source = np.uint64(h), np.uint64(first - pad_w)
        deinterleave_pairs(flat, h * width + first - pad_w, padded, to_first, to_second, count // lanes)
        for i in range(count // lanes * lanes, count):
            padded[np.uint64(to_first + i)] = plane[row, source + np.uint64(2 * i)]
            padded[np.uint64(to_second + i)] = plane[row, source + np.uint64(2 * i + 1)]
        if (stop - first) % 2:
            padded[to_last] = plane[row, np.uint64(last - pad_w)]


def deinterleave_pairs(source, s_start, target, first_at, second_at, count):
    """``target[first_at + i] = source[s_start + 2 * i]`` and ``target[second_at + i] =
    source[s_start + 2 * i + 1]`` for ``i`` below ``count`` vectors' lanes (``VECTOR_BYTES //
    itemsize`` pairs a vector): flat C-contiguous arrays of one dtype; nothing is checked.
    Compiled kernels run the intrinsic below (two loads, two shuffles and two stores a vector);
    from Python, NumPy computes the same."""
    pairs = count * (VECTOR_BYTES // source.itemsize)
    run = source[s_start:s_start + 2 * pairs]
    target[first_at:first_at + pairs] = run[0::2]
    target[second_at:second_at + pairs] = run[1::2]


@intrinsic
def _deinterleave_pairs(typingctx, source, s_start, target, first_at, second_at, count):
    """:func:`deinterleave_pairs`, compiled."""
    if not (all(isinstance(t, types.Array) and t.layout == "C" and t.ndim == 1 for t in (source, target))
            and source.dtype == target.dtype and source.dtype in (types.float32, types.float64)):
        return None
    signature = types.void(source, types.intp, target, types.intp, types.intp, types.intp)
    return signature, functools.partial(_deinterleave_pairs_code, source.dtype)


@overload(deinterleave_pairs)
def _deinterleave_pairs_overload(source, s_start, target, first_at, second_at, count):
    def call(source, s_start, target, first_at, second_at, count):
        _deinterleave_pairs(source, s_start, target, first_at, second_at, count)
    return call


def _deinterleave_pairs_code(dtype, context, builder, signature, args):
    source, s_start, target, first_at, second_at, count = args
    v = _Vectors(dtype, builder)
    read = builder.gep(context.make_array(signature.args[0])(context, builder, source).data, [s_start])
    data = context.make_array(signature.args[2])(context, builder, target).data
    firsts, seconds = builder.gep(data, [first_at]), builder.gep(data, [second_at])
    i32 = ir.IntType(32)
    evens = ir.Constant(ir.VectorType(i32, v.lanes), [2 * k for k in range(v.lanes)])
    odds = ir.Constant(ir.VectorType(i32, v.lanes), [2 * k + 1 for k in range(v.lanes)])

    def step(k, sums, fma):
        at = builder.mul(k, v.at(v.lanes))
        low = v.load(builder.gep(read, [builder.mul(at, v.at(2))]))
        high = v.load(builder.gep(read, [builder.add(builder.mul(at, v.at(2)), v.at(v.lanes))]))
        v.store(builder.shuffle_vector(low, high, evens), builder.gep(firsts, [at]))
        v.store(builder.shuffle_vector(low, high, odds), builder.gep(seconds, [at]))
        return []

    _summing_loop(v, count, 0, step)
    return context.get_dummy_value()
