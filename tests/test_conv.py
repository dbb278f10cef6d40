"""conv2d against the loop definition and against scipy.signal.correlate2d."""

import naive
import numpy as np
import pytest
from conv_paths import check_against_loops, check_rule, conv_problem, run_forward
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import arrays, conv_geometries, conv_padding_geometries

import cnnlab
import cnnlab.functional as F
from cnnlab import config
from cnnlab.functional.conv import conv_geometry
from cnnlab.kernels.cpu._microkernel import VECTOR_BYTES
from cnnlab.kernels.cpu.conv import panels_available
from cnnlab.shapes import resolve_padding


def make_problem(g, seed=0):
    rng = np.random.default_rng(seed)
    x = arrays(rng, (g["samples"], g["channels"], g["height"], g["width"]), g["dtype"])
    weight = arrays(rng, (g["filters"], g["channels"] // g["groups"]) + g["kernel"], g["dtype"])
    bias = arrays(rng, (g["filters"],), g["dtype"]) if g["bias"] else None
    return x, weight, bias


def tolerance(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


@given(conv_geometries())
def test_conv2d_matches_scipy_and_loops(g):
    x, weight, bias = make_problem(g)
    out = F.conv2d(x, weight, bias, g["stride"], g["padding"], g["dilation"], g["groups"])
    pads = resolve_padding(g["padding"], g["kernel"], g["stride"], g["dilation"])
    args = (x, weight, bias, g["stride"], pads, g["dilation"], g["groups"])
    reference = naive.conv2d_scipy(*args)
    assert out.dtype == g["dtype"]
    np.testing.assert_allclose(out, reference, **tolerance(g["dtype"]))
    np.testing.assert_allclose(naive.conv2d_loops(*args), reference, rtol=1e-10, atol=1e-10)


@given(conv_geometries())
def test_conv2d_output_shape_is_output_size(g):
    x, weight, bias = make_problem(g)
    out = F.conv2d(x, weight, bias, g["stride"], g["padding"], g["dilation"], g["groups"])
    padding = g["padding"]
    pads = padding if isinstance(padding, tuple) else (padding, padding)
    expected = tuple(
        cnnlab.output_size(size, k, s, p, d)
        for size, k, s, p, d in zip((g["height"], g["width"]), g["kernel"], g["stride"], pads, g["dilation"])
    )
    assert out.shape == (g["samples"], g["filters"]) + expected


def test_textbook_5x5_input_3x3_kernel():
    image = np.array([[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3],
                      [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]], dtype=np.float64)
    kernel = np.array([[0, 1, 2], [2, 2, 0], [0, 1, 2]], dtype=np.float64)
    out = F.conv2d(image[None, None], kernel[None, None])
    np.testing.assert_array_equal(out[0, 0], [[12, 12, 17], [10, 17, 19], [9, 6, 14]])


def test_textbook_3x3_kernel_on_5x5_gives_nine_positions_and_padding_keeps_size():
    x = np.random.default_rng(1).random((1, 1, 5, 5))
    w = np.ones((1, 1, 3, 3))
    assert F.conv2d(x, w).shape == (1, 1, 3, 3)
    assert F.conv2d(x, w, padding=1).shape == (1, 1, 5, 5)
    assert F.conv2d(x, w, padding="same").shape == (1, 1, 5, 5)


def test_output_depth_is_number_of_filters():
    x = np.ones((2, 3, 8, 8), dtype=np.float32)
    w = np.ones((7, 3, 3, 3), dtype=np.float32)
    assert F.conv2d(x, w).shape == (2, 7, 6, 6)


def test_same_padding_even_kernel_splits_like_pytorch():
    """Even kernel: total padding 1 goes after (right/bottom), as torch's padding='same'."""
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    w = np.zeros((1, 1, 2, 2))
    w[0, 0, 0, 0] = 1.0  # picks the top-left tap: output (i, j) reads input (i, j)
    np.testing.assert_array_equal(F.conv2d(x, w, padding="same")[0, 0], x[0, 0])


def test_chunked_rows_give_the_same_result(monkeypatch):
    """A tiny im2col budget forces row blocks of one output row; the result is unchanged."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 11, 9))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    whole = F.conv2d(x, w, b, stride=(2, 1), padding=1, groups=2)
    monkeypatch.setattr(config, "IM2COL_MAX_BYTES", 1)
    blocked = F.conv2d(x, w, b, stride=(2, 1), padding=1, groups=2)
    np.testing.assert_allclose(blocked, whole, rtol=1e-12, atol=1e-12)


@settings(max_examples=30)
@given(st.integers(1, 4), st.integers(1, 12), st.integers(1, 12), st.integers(1, 4), st.integers(1, 4),
       st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 2), st.integers(0, 3),
       st.integers(0, 3), st.booleans())
def test_depthwise_matches_loops_with_row_blocks(channels, height, width, kh, kw, sh, sw, dh, dw, ph, pw, blocked):
    """The depthwise path (padded buffer, wide rows at stride 1) over odd shapes, strides,
    dilations, paddings wider than the kernel, with whole planes or one output row per item."""
    from hypothesis import assume

    assume(height + 2 * ph >= dh * (kh - 1) + 1 and width + 2 * pw >= dw * (kw - 1) + 1)
    rng = np.random.default_rng(channels * 1000 + height * 10 + width)
    x = rng.standard_normal((2, channels, height, width))
    w = rng.standard_normal((channels, 1, kh, kw))
    b = rng.standard_normal(channels)
    geometry = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=channels)
    if blocked:
        config.IM2COL_MAX_BYTES = 1
    try:
        out = F.conv2d(x, w, b, **geometry)
    finally:
        config.reset()
    reference = naive.conv2d_loops(x, w, b, (sh, sw), ((ph, ph), (pw, pw)), (dh, dw), channels)
    np.testing.assert_allclose(out, reference, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel", [(3, 3), (5, 5), (3, 5), (5, 3), (2, 3), (1, 7), (7, 7), (2, 7), (1, 6)])
@pytest.mark.parametrize("stride", [(1, 1), (2, 2), (1, 2), (2, 1), (3, 3)])
@pytest.mark.parametrize("dilation", [(1, 1), (2, 2)])
def test_depthwise_window_paths_match_loops(kernel, stride, dilation):
    """Each of the depthwise path's loops (a 3x3 window's nine taps at once, a window row's 3,
    5 or 7 taps at once, one tap at a time) over every polyphase split of the stride (the
    deinterleaved planes of stride 2 among them), uneven padding on each side, in float32 as a
    model runs it, with whole planes and one output row per item."""
    rng = np.random.default_rng(kernel[0] * 100 + kernel[1] * 10 + stride[0] + stride[1])
    x = rng.standard_normal((2, 3, 13, 12)).astype(np.float32)
    w = rng.standard_normal((3, 1) + kernel).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    padding = ((2, 1), (1, 3))
    reference = naive.conv2d_loops(x, w, b, stride, padding, dilation, 3)
    for budget in (None, 1):
        if budget is not None:
            config.IM2COL_MAX_BYTES = budget
        try:
            out = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=dilation, groups=3)
        finally:
            config.reset()
        np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 9), st.integers(1, 17), st.integers(-2, 3), st.integers(0, 12), st.integers(0, 5),
       st.integers(1, 12), st.integers(1, 3), st.integers(1, 3))
@example(4, 64, -1, 67, 1, 33, 2, 2)  # the stride-2 reference shape's rows: odd padding, 32 pairs a row
@example(3, 3, 0, 3, 7, 2, 1, 2)  # padding past every column a plane row holds
@example(3, 5, -1, 5, 1, 4, 1, 2)  # odd padding, a last column without a pair, a zero row
@example(2, 7, 0, 4, 2, 9, 2, 2)  # even padding, a last column without a pair
def test_fill_planes_matches_definition(height, width, top, rows_in, pad_w, pitch, stride_h, stride_w):
    """The polyphase planes' fill writes padded row ``r`` and column ``q`` (input row ``top + r``,
    column ``q - pad_w``; zeros in rows outside the input) to plane ``(r % stride_h, q %
    stride_w)``, row ``r // stride_h``, column ``q // stride_w``, for the columns that hold input
    and fall within a plane row's ``pitch``, and writes nothing else (stride 2 along the rows
    takes a loop of its own, over pairs of input columns)."""
    from cnnlab.kernels.cpu.conv import _fill_planes

    plane = np.random.default_rng(width * 100 + pad_w).standard_normal((height, width)).astype(np.float32)
    plane_rows = -(-rows_in // stride_h)
    size, base = plane_rows * pitch, 5
    buffer = np.full(base + stride_h * stride_w * size + 5, np.nan, np.float32)
    expected = buffer.copy()
    for r in range(rows_in):
        for q in range(pad_w, pad_w + width):
            if q // stride_w < pitch:
                h = top + r
                value = plane[h, q - pad_w] if 0 <= h < height else 0
                expected[base + ((r % stride_h) * stride_w + q % stride_w) * size + (r // stride_h) * pitch
                         + q // stride_w] = value
    _fill_planes(plane, top, rows_in, pad_w, buffer, base, pitch, plane_rows, stride_h, stride_w)
    np.testing.assert_array_equal(buffer, expected)


@pytest.mark.parametrize("samples", [1, 3])
@pytest.mark.parametrize("min_work", [1, 10**9])  # the blocks shared between two threads, or one thread
@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("small_gemm", [False, True])
def test_pointwise_convolution_in_cache_sized_pixel_blocks(samples, min_work, groups, small_gemm, monkeypatch):
    """A 1x1 convolution's pixels in blocks of a few rows (input and output columns within
    POINTWISE_BLOCK_BYTES, at least POINTWISE_MIN_PIXELS), the last block short, equals the
    definition, with the epilogue, with one group or two; and with each block's GEMM cut into
    tiles of 16 pixels for a small-matrix kernel. Where the GEMMs are cut into those tiles, the
    pixel blocks are not taken (the tiles keep their columns in the cache): the items are the
    threads' rows, whole samples on one thread."""
    from cnnlab.functional import conv as functional_conv
    from cnnlab.kernels.cpu import conv as cpu_conv

    channels, filters = 6 // groups * groups, 8
    monkeypatch.setattr(cpu_conv, "small_gemm_limit",
                        lambda dtype: filters // groups * channels // groups * 16 if small_gemm else 0)
    per_pixel = (channels + filters) // groups
    monkeypatch.setattr(functional_conv, "POINTWISE_BLOCK_BYTES", 3 * 13 * per_pixel * 4)  # 3 rows of 13
    monkeypatch.setattr(functional_conv, "POINTWISE_MIN_PIXELS", 20)  # ... at least 2 rows
    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", min_work)
    rng = np.random.default_rng(samples)
    x = rng.standard_normal((samples, channels, 11, 13)).astype(np.float32)  # (143 pixels: no sample blocks)
    w = rng.standard_normal((filters, channels // groups, 1, 1)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    geometry = functional_conv.conv_geometry(x.shape, w.shape, x.dtype, 1, 0, 1, groups)
    threads_rows = 6 if samples * groups < geometry.args[8] else 11  # fewer images than threads: half the rows each
    assert geometry.args[7] == (threads_rows if small_gemm else 3)  # pixel blocks: 4 of 3 rows, the last of 2
    out = F.conv2d(x, w, b, groups=groups, activation="relu6")
    expected = naive.conv2d_loops(x, w, b, groups=groups)
    np.testing.assert_allclose(out, np.clip(expected, 0, 6), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("scale", [None, 2.0])
def test_clip_epilogue_compares_with_its_bounds_rounded_and_gives_the_same_values(scale, residual):
    """The epilogue compares in the output's dtype: at and beside the rounded bounds (0.1 and 0.7
    are no float32 numbers), at zeros, NaN and infinities, the values of a clip by float64
    comparisons, and of the stand-alone clip; with a residual added too."""
    low, high = 0.1, 0.7
    edges = []
    for bound in (np.float32(low), np.float32(high)):
        edges += [np.nextafter(bound, np.float32(-1)), bound, np.nextafter(bound, np.float32(1))]
    values = np.array(edges + [-0.0, 0.0, np.nan, np.inf, -np.inf, 0.4, -3.0, 3.0], np.float32)
    x = (values / np.float32(scale or 1)).reshape(1, 1, 1, -1)  # (exact: halving)
    weight = np.ones((1, 1, 1, 1), np.float32)
    scales = None if scale is None else np.full(1, scale, np.float32)
    added = np.full((1, 1, 1, values.size), 0.25, np.float32) if residual else None
    fused = F.conv2d(x, weight, scale=scales, residual=added, activation=("clip", low, high)).ravel()
    plain = F.conv2d(x, weight, scale=scales, residual=added).ravel()
    wide = plain.astype(np.float64)
    by_float64 = np.where(wide < low, np.float32(low), np.where(wide > high, np.float32(high), plain))
    np.testing.assert_array_equal(fused, by_float64.astype(np.float32))
    np.testing.assert_array_equal(fused, F.clip(plain, low, high))
    assert np.array_equal(np.signbit(fused), np.signbit(F.clip(plain, low, high)))


@pytest.mark.parametrize("filters", [24, 32, 40])
def test_pointwise_convolution_of_one_image_shares_its_filters_from_32(filters, monkeypatch):
    """One image: from POINTWISE_SPLIT_FILTERS filters on, each thread a part of the filters
    over all the pixels (an odd part last); with fewer, blocks of pixel rows. Both equal the
    definition."""
    from cnnlab.functional import conv as functional_conv

    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1)
    rng = np.random.default_rng(filters)
    x = rng.standard_normal((1, 7, 9, 11)).astype(np.float32)
    w = rng.standard_normal((filters, 7, 1, 1)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    geometry = functional_conv.conv_geometry(x.shape, w.shape, x.dtype, 1, 0, 1, 1)
    if geometry.args[8] > 1:  # (two threads or more)
        by_filters = filters >= functional_conv.POINTWISE_SPLIT_FILTERS
        assert (geometry.filter_blocks > 1) == by_filters and (geometry.args[7] == 9) == by_filters
    out = F.conv2d(x, w, b, activation="relu6")
    np.testing.assert_allclose(out, np.clip(naive.conv2d_loops(x, w, b), 0, 6), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("channels, filters, groups, kernel, stride, size", [
    (3, 5, 1, 3, 2, 13),  # an RGB stem
    (3, 5, 1, 5, 1, 11),
    (1, 6, 1, 5, 1, 12),  # the demo's first layer
    (4, 6, 2, 3, 1, 9),  # 2 channels and 3 filters per group
    (8, 8, 2, 3, 3, 10),  # 4 channels per group, stride 3
    (3, 12, 1, 3, 1, 8),  # more than 8 filters at stride 1 on a small plane: the GEMM path
])
def test_few_channel_convolutions_match_loops(channels, filters, groups, kernel, stride, size):
    """Convolutions with few input channels per group, computed directly from the input planes
    (every channel's polyphase planes summed into each filter), with a dilation, uneven padding,
    a residual and an activation, whole planes and one output row per item."""
    from cnnlab.kernels.cpu import conv2d_is_direct

    rng = np.random.default_rng(channels * 10 + filters)
    x = rng.standard_normal((2, channels, size, size + 1)).astype(np.float32)
    w = rng.standard_normal((filters, channels // groups, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    padding = ((2, 1), (1, 2))
    reference = naive.conv2d_loops(x, w, b, (stride, stride), padding, (1, 2), groups)
    residual = rng.standard_normal(reference.shape).astype(np.float32)
    assert conv2d_is_direct(w.shape, groups, (stride, stride), reference.shape[2] * reference.shape[3]) \
        == (filters != 12)
    for budget in (None, 1):
        if budget is not None:
            config.IM2COL_MAX_BYTES = budget
        try:
            out = F.conv2d(x, w, b, stride=stride, padding=padding, dilation=(1, 2), groups=groups,
                           residual=residual, activation="relu")
        finally:
            config.reset()
        np.testing.assert_allclose(out, np.maximum(reference + residual, 0), rtol=1e-5, atol=1e-5)



@pytest.mark.parametrize("weight_shape, groups, samples, pixels, vector_bytes, expected", [
    ((32, 3, 3, 3), 1, 1, 112 * 112, 64, False),  # an RGB stem of 32 filters: panels with the 512-bit block
    ((32, 3, 3, 3), 1, 1, 112 * 112, 32, True),  # ... direct with the 256-bit one
    ((16, 3, 3, 3), 1, 1, 8 * 8, 64, False),  # 16 filters: panels however small the output
    ((8, 3, 3, 3), 1, 1, 112 * 112, 64, False),  # fewer filters onto 64x64 pixels or more: panels
    ((6, 1, 5, 5), 1, 64, 24 * 24, 64, False),  # ... LeNet's first layer at batch 64
    ((6, 1, 5, 5), 1, 64, 24 * 24, 32, True),  # ... direct with the 256-bit block
    ((6, 1, 5, 5), 1, 1, 24 * 24, 64, True),  # ... one small image: direct
    ((4, 1, 3, 3), 1, 64, 28 * 28, 64, True),  # half a block of filters or less: direct
    ((32, 2, 3, 3), 2, 64, 112 * 112, 64, True),  # grouped
    ((32, 1, 3, 3), 32, 64, 112 * 112, 64, True),  # depthwise
])
def test_few_channel_rule_leaves_wide_or_large_convolutions_to_the_512_bit_panels(monkeypatch, weight_shape, groups,
                                                                                   samples, pixels, vector_bytes,
                                                                                   expected):
    from cnnlab.kernels.cpu import conv as cpu_conv

    monkeypatch.setattr(cpu_conv, "VECTOR_BYTES", vector_bytes)  # (read by the Python rule, not compiled)
    monkeypatch.setattr(cpu_conv, "MR", 8 if vector_bytes == 64 else 4)
    monkeypatch.setattr(cpu_conv, "panels_available", lambda: True)
    assert cpu_conv._is_direct(weight_shape, groups, (2, 2), pixels, samples) == expected


@pytest.mark.skipif(not panels_available(), reason="the panel kernel needs AVX2 and FMA")
@pytest.mark.parametrize("shape, stride, padding, size", [((6, 1, 5, 5), 1, 0, (26, 28)), ((8, 3, 3, 3), 2, 1, (34, 36)),
                                                           ((6, 2, 3, 3), 1, 1, (20, 22))])
def test_few_channel_convolutions_by_panels_match_loops(monkeypatch, shape, stride, padding, size):
    """Few-channel convolutions the rule sends to the panels (with the 512-bit block; here
    whatever the block compiled), plane rows wider than the panels' width rule allows
    included (a 5x5 window: 28 columns for 24): the panels' output, equal to the loops."""
    from cnnlab.kernels.cpu import conv as cpu_conv

    monkeypatch.setattr(cpu_conv, "VECTOR_BYTES", 64)
    monkeypatch.setattr(cpu_conv, "MR", 8)
    rng = np.random.default_rng(shape[0])
    x = rng.standard_normal((16, shape[1], *size)).astype(np.float64)
    w = rng.standard_normal(shape).astype(np.float64)
    b = rng.standard_normal(shape[0]).astype(np.float64)
    out = F.conv2d(x, w, b, stride=stride, padding=padding, activation="relu")
    resolved = conv_geometry(x.shape, w.shape, x.dtype, stride, padding, 1, 1)
    work = cpu_conv._forward_work(x.shape, w.shape, out.shape, *resolved.args, resolved.filter_blocks,
                                  resolved.sample_block, dtype=x.dtype)
    assert work[0] is cpu_conv._panel_forward_items
    reference = naive.conv2d_loops(x, w, b, (stride, stride), ((padding, padding), (padding, padding)), (1, 1), 1)
    np.testing.assert_allclose(out, np.maximum(reference, 0), rtol=1e-12, atol=1e-12)

@settings(max_examples=30)
@given(st.integers(1, 3), st.integers(1, 9), st.integers(1, 3), st.integers(1, 5), st.integers(1, 3),
       st.integers(1, 3), st.integers(1, 2), st.integers(1, 2), st.integers(0, 2), st.integers(0, 2),
       st.booleans())
def test_im2col_paths_match_loops(height, width, kh, kw, sh, sw, dh, dw, ph, pw, one_row_at_a_time):
    """The GEMM path's column copy: each tap's span of in-row output columns found once
    (contiguous at stride 1, strided otherwise), zeros left and right of it, and the
    one-column case (a 1-D convolution along the height, width 1 or a window as wide as the
    padded row) as one pass down the rows; paddings up to the window, every stride."""
    from hypothesis import assume

    assume(height + 2 * ph >= dh * (kh - 1) + 1 and width + 2 * pw >= dw * (kw - 1) + 1)
    rng = np.random.default_rng(height * 100 + width * 10 + kh)
    x = rng.standard_normal((2, 3, height, width))
    w = rng.standard_normal((4, 3, kh, kw))
    b = rng.standard_normal(4)
    geometry = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw))
    if one_row_at_a_time:
        config.IM2COL_MAX_BYTES = 1
    try:
        out = F.conv2d(x, w, b, **geometry)
        width_one = F.conv2d(x[..., :1], w[..., :1], b, stride=(sh, 1), padding=(ph, 0), dilation=(dh, 1))
    finally:
        config.reset()
    reference = naive.conv2d_loops(x, w, b, (sh, sw), ((ph, ph), (pw, pw)), (dh, dw), 1)
    np.testing.assert_allclose(out, reference, rtol=1e-12, atol=1e-12)
    reference = naive.conv2d_loops(x[..., :1], w[..., :1], b, (sh, 1), ((ph, ph), (0, 0)), (dh, 1), 1)
    np.testing.assert_allclose(width_one, reference, rtol=1e-12, atol=1e-12)


@settings(max_examples=30)
@given(st.integers(1, 3), st.integers(2, 11), st.integers(1, 11), st.integers(1, 5), st.integers(1, 5),
       st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 2), st.integers(0, 3),
       st.integers(0, 3), st.sampled_from(["whole", "rows", "filters"]), st.integers(1, 2))
def test_im2col_by_polyphase_planes_matches_loops(samples, height, width, kh, kw, sh, sw, dh, dw, ph, pw, blocks,
                                                  groups):
    """The GEMM path's columns copied through the stride's polyphase planes (forced here for
    every geometry, not only where the rule takes them): whole samples, several samples side by
    side (small outputs), one-row blocks, and filter blocks (batch 1, few pixels) on two threads."""
    from hypothesis import assume

    from cnnlab.kernels.cpu import conv as cpu_conv

    assume(height + 2 * ph >= dh * (kh - 1) + 1 and width + 2 * pw >= dw * (kw - 1) + 1)
    rng = np.random.default_rng(samples * 1000 + height * 100 + width * 10 + kh)
    channels, filters = 6 * groups, (64 if blocks == "filters" else 5) * groups
    x = rng.standard_normal((1 if blocks == "filters" else samples, channels, height, width))
    w = rng.standard_normal((filters, 6, kh, kw))
    b = rng.standard_normal(filters)
    geometry = dict(stride=(sh, sw), padding=(ph, pw), dilation=(dh, dw), groups=groups)
    rule, innermost, panels, tiles, strips = cpu_conv._by_planes, cpu_conv._samples_innermost, cpu_conv.PANELS, \
        cpu_conv._tiles.TILES, cpu_conv._strips.STRIPS
    cpu_conv._by_planes = lambda out_w, *window: out_w > 1
    cpu_conv._samples_innermost = lambda *arguments: False  # (small outputs: side by side, not innermost)
    cpu_conv.PANELS = cpu_conv._tiles.TILES = cpu_conv._strips.STRIPS = False  # (im2col and the GEMM only)
    if blocks == "rows":
        config.IM2COL_MAX_BYTES = 1
    if blocks == "filters":
        config.PARALLEL_MIN_WORK = 1
    try:
        out = F.conv2d(x, w, b, **geometry)
        resolved = conv_geometry(x.shape, w.shape, x.dtype, **geometry)
        work = cpu_conv._forward_work(x.shape, w.shape, out.shape, *resolved.args, resolved.filter_blocks,
                                      resolved.sample_block, dtype=x.dtype)
    finally:
        cpu_conv._by_planes, cpu_conv._samples_innermost, cpu_conv.PANELS, cpu_conv._tiles.TILES, \
            cpu_conv._strips.STRIPS = rule, innermost, panels, tiles, strips
        config.reset()
    reference = naive.conv2d_loops(x, w, b, (sh, sw), ((ph, ph), (pw, pw)), (dh, dw), groups)
    np.testing.assert_allclose(out, reference, rtol=1e-12, atol=1e-12)
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):  # 1x1: the input is the column matrix
        assert work[0] is cpu_conv._pointwise_forward_items
    else:
        assert work[0] is cpu_conv._conv2d_forward_items and work[3][-2] == (out.shape[3] > 1)  # planes or not


@pytest.mark.skipif(not panels_available(), reason="the panel kernel needs AVX2 and FMA")
@settings(max_examples=40)
@given(st.integers(1, 3), st.integers(1, 11), st.integers(1, 30), st.integers(1, 5), st.integers(1, 5),
       st.integers(1, 2), st.integers(1, 2), st.integers(1, 2), st.integers(0, 2), st.integers(1, 13),
       st.integers(1, 2), st.sampled_from(["whole", "rows", "chunks", "pieces"]), st.sampled_from(["float32", "float64"]))
@example(2, 9, 20, 3, 3, 2, 1, 1, 1, 5, 1, "pieces", "float32")  # stride 2, taps in pieces of 4 (27 taps)
def test_convolution_by_panels_matches_loops(samples, height, width, kh, kw, stride, dh, dw, pad, filters, groups,
                                             blocks, dtype):
    """The convolution by panels (:func:`tap_product` straight from the polyphase planes),
    forced here for every geometry, not only where the rule takes it: strides, dilations,
    paddings, groups, filter counts that are not a multiple of the kernel's four rows, outputs
    narrower than a panel and not a multiple of it, one-row items, one-row chunks of an item's
    product and planes, the taps in pieces of 4 (each piece's sums added to the last's), both
    dtypes, with a residual and an activation in the epilogue."""
    from hypothesis import assume

    from cnnlab.kernels.cpu import conv as cpu_conv

    assume(height + 2 * pad >= dh * (kh - 1) + 1 and width + 2 * pad >= dw * (kw - 1) + 1)
    rng = np.random.default_rng(samples * 1000 + height * 100 + width * 10 + kh)
    x = rng.standard_normal((samples, 3 * groups, height, width)).astype(dtype)
    w = rng.standard_normal((filters * groups, 3, kh, kw)).astype(dtype)
    b = rng.standard_normal(filters * groups).astype(dtype)
    geometry = dict(stride=stride, padding=pad, dilation=(dh, dw), groups=groups)
    reference = naive.conv2d_loops(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                   (stride, stride), ((pad, pad), (pad, pad)), (dh, dw), groups)
    residual = rng.standard_normal(reference.shape).astype(dtype)
    rule, innermost, direct = cpu_conv._by_panels, cpu_conv._samples_innermost, cpu_conv._is_direct
    chunk_bytes, taps, tiles, strips = cpu_conv.PANEL_CHUNK_BYTES, cpu_conv.PANEL_TAPS, cpu_conv._tiles.TILES, \
        cpu_conv._strips.STRIPS
    cpu_conv._by_panels = lambda *geometry: True
    cpu_conv._samples_innermost = cpu_conv._is_direct = lambda *arguments: False
    cpu_conv._tiles.TILES = cpu_conv._strips.STRIPS = False
    config.GEMM_MIN_COLUMNS = 1  # (small outputs: one sample an item, not several side by side)
    if blocks == "rows":
        config.IM2COL_MAX_BYTES = 1
    if blocks == "chunks":
        cpu_conv.PANEL_CHUNK_BYTES = 1
    if blocks == "pieces":
        cpu_conv.PANEL_TAPS = 4
    try:
        out = F.conv2d(x, w, b, residual=residual, activation="relu", **geometry)
        resolved = conv_geometry(x.shape, w.shape, x.dtype, **geometry)
        work = cpu_conv._forward_work(x.shape, w.shape, out.shape, *resolved.args, resolved.filter_blocks,
                                      resolved.sample_block, dtype=x.dtype)
    finally:
        cpu_conv._by_panels, cpu_conv._samples_innermost, cpu_conv._is_direct = rule, innermost, direct
        cpu_conv.PANEL_CHUNK_BYTES, cpu_conv.PANEL_TAPS, cpu_conv._tiles.TILES, cpu_conv._strips.STRIPS = \
            chunk_bytes, taps, tiles, strips
        config.reset()
    pointwise = (kh, kw, stride, pad) == (1, 1, 1, 0)
    assert resolved.sample_block == resolved.filter_blocks == 1
    assert work[0] is (cpu_conv._pointwise_forward_items if pointwise else cpu_conv._panel_forward_items)
    if blocks == "chunks" and not pointwise:
        assert work[3][-2] == 1  # (one output row of product and planes at a time)
    if blocks == "pieces" and not pointwise:
        assert work[3][-1] == 4
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(out, np.maximum(reference + residual, 0), rtol=tolerance, atol=tolerance)


@pytest.mark.skipif(not panels_available() or VECTOR_BYTES != 64, reason="the rows path needs AVX-512")
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 13), st.integers(1, 19), st.integers(2, 9), st.integers(2, 16),
       st.integers(1, 2), st.sampled_from(["whole", "row blocks", "filters", "chunks"]),
       st.sampled_from([None, "relu6", "tanh"]), st.booleans(), st.sampled_from(["float32", "float64"]))
@example(1, 20, 13, 5, 8, 1, "row blocks", "relu6", True, "float32")  # 40 pixels in blocks of 16: the last 8 merged
@example(1, 7, 37, 7, 7, 1, "filters", None, False, "float32")  # 49 pixels: a panel of 32 and one of 17
def test_pointwise_convolution_by_rows_matches_loops(samples, channels, filters, height, width, groups, blocks,
                                                     activation, with_residual, dtype):
    """A 1x1 convolution by rows of the weights as they lie (:func:`tap_rows`), forced here for
    every shape with a vector of pixels or more: filter counts that are not a multiple of the
    kernel's rows, planes that are not whole panels (the last panels split so that each holds a
    vector), items by row blocks (a last block narrower than a vector taken by the one before),
    by filters, chunks of one panel, groups, with and without a residual, the clip finished in
    the kernel and another activation after it, both dtypes."""
    from hypothesis import assume

    from cnnlab.functional import conv as functional_conv
    from cnnlab.kernels.cpu import conv as cpu_conv
    from cnnlab.parallel import thread_count

    lanes = VECTOR_BYTES // np.dtype(dtype).itemsize
    assume(height * width >= lanes)
    rng = np.random.default_rng(samples * 1000 + channels * 100 + filters * 10 + height)
    x = rng.standard_normal((samples, channels * groups, height, width)).astype(dtype)
    w = rng.standard_normal((filters * groups, channels, 1, 1)).astype(dtype)
    b = rng.standard_normal(filters * groups).astype(dtype)
    reference = naive.conv2d_loops(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), (1, 1),
                                   ((0, 0), (0, 0)), (1, 1), groups)
    residual = rng.standard_normal(reference.shape).astype(dtype) if with_residual else None
    saved = (cpu_conv.POINTWISE_ROWS_MIN_CHANNELS, cpu_conv.PANEL_CHUNK_BYTES, functional_conv.POINTWISE_SPLIT_FILTERS,
             cpu_conv._samples_innermost)
    cpu_conv.POINTWISE_ROWS_MIN_CHANNELS = 1
    cpu_conv._samples_innermost = lambda *arguments: False
    if blocks == "row blocks":
        config.IM2COL_MAX_BYTES = 1
    if blocks == "filters":
        functional_conv.POINTWISE_SPLIT_FILTERS = 1
        config.PARALLEL_MIN_WORK = 1  # (two threads however small the work)
    if blocks == "chunks":
        cpu_conv.PANEL_CHUNK_BYTES = 1
    try:
        out = F.conv2d(x, w, b, groups=groups, residual=residual, activation=activation)
        resolved = conv_geometry(x.shape, w.shape, x.dtype, 1, 0, 1, groups)
        work = cpu_conv._forward_work(x.shape, w.shape, out.shape, *resolved.args, resolved.filter_blocks,
                                      resolved.sample_block, dtype=x.dtype)
    finally:
        (cpu_conv.POINTWISE_ROWS_MIN_CHANNELS, cpu_conv.PANEL_CHUNK_BYTES, functional_conv.POINTWISE_SPLIT_FILTERS,
         cpu_conv._samples_innermost) = saved
        config.reset()
    assert work[0] is cpu_conv._pointwise_rows_items
    if blocks == "row blocks":
        assert work[3][1] == height  # (one row a block: blocks of whole vectors of pixels)
    if blocks == "filters" and samples * groups == 1 and thread_count() > 1:
        assert work[3][2]  # (by filters)
    expected = reference + (0 if residual is None else residual)
    expected = {None: expected, "relu6": np.clip(expected, 0, 6), "tanh": np.tanh(expected)}[activation]
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


def test_pointwise_by_rows_rule():
    """The rows path takes 1x1 convolutions whose sums are ``POINTWISE_ROWS_MIN_CHANNELS`` long or
    longer, onto planes of a vector of pixels at least, on AVX-512 only; ``POINTWISE_ROWS``
    turns it off."""
    from cnnlab.kernels.cpu import conv as cpu_conv

    on_avx512 = panels_available() and VECTOR_BYTES == 64
    assert cpu_conv._pointwise_by_rows(49, 160, 4) == on_avx512
    assert cpu_conv._pointwise_by_rows(49, 96, 4) == on_avx512
    assert not cpu_conv._pointwise_by_rows(49, 64, 4)
    assert not cpu_conv._pointwise_by_rows(15, 160, 4)
    assert cpu_conv._pointwise_by_rows(8, 160, 8) == on_avx512  # (a float64 vector: 8 pixels)
    saved = cpu_conv.POINTWISE_ROWS
    cpu_conv.POINTWISE_ROWS = False
    try:
        assert not cpu_conv._pointwise_by_rows(49, 160, 4)
    finally:
        cpu_conv.POINTWISE_ROWS = saved


_TILES = pytest.mark.skipif(not (panels_available() and VECTOR_BYTES == 64),
                            reason="the tiles' path runs on AVX-512 only")


@_TILES
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 4), st.integers(1, 5), st.integers(1, 3),
       st.integers(1, 2), st.integers(1, 2), st.integers(1, 2), st.tuples(*[st.integers(0, 2)] * 4),
       st.integers(1, 40), st.sampled_from([4, 8, 16, 19, 33]), st.integers(0, 4),
       st.sampled_from(["none", "relu", "residual", "mask", "tanh"]), st.booleans(), st.integers(1, 2))
@example(2, 6, 5, 5, 1, 1, 1, 1, (0, 0, 0, 0), 16, 8, 3, "relu", False, 2)  # LeNet's second layer, read where it lies
@example(1, 3, 3, 3, 2, 2, 1, 1, (1, 0, 1, 0), 33, 16, 1, "residual", True, 2)  # stride 2, one tile row a block
@example(2, 3, 3, 3, 1, 1, 1, 1, (0, 0, 0, 2), 16, 16, 1, "tanh", False, 1)  # padded on the right only: a copy
@example(2, 3, 3, 3, 1, 1, 1, 1, (0, 2, 0, 0), 16, 16, 1, "none", False, 1)  # ... below only
def test_convolution_by_tiles_matches_loops(samples, channels, kh, kw, sh, sw, dh, dw, pads, filters, out_w, extra_h,
                                            epilogue, small_blocks, workers):
    """The convolution by tiles (:func:`tile_product`), forced for every geometry a tile fits:
    outputs 4, 8 or 16 and more wide (the last tile of a row overlapping the one before), plane
    heights that are not whole tiles (the last tile back over the rows above), strides of 1 and
    2 along the rows (any down them), dilations, four-sided padding (read from a padded copy),
    none (read where it lies), filter counts that are not whole tiles, items of one tile row
    (one block's first tile back over the block before), one thread or two, and each epilogue:
    in the kernel (the clip, a residual) or after it (tanh, the mask)."""
    from cnnlab.kernels.cpu import _tiles
    from cnnlab.kernels.cpu import conv as cpu_conv

    rows = _tiles.tile_rows(out_w)
    out_h = rows + extra_h
    problem = conv_problem(samples, channels, kh, kw, sh, sw, dh, dw, pads, filters, out_w, out_h, epilogue)
    saved = cpu_conv.by_tiles, cpu_conv.by_strips, cpu_conv._is_direct, _tiles.TILES_STAGED_BYTES
    cpu_conv.by_tiles = lambda *arguments: True
    cpu_conv.by_strips = cpu_conv._is_direct = lambda *arguments: False
    if small_blocks:
        _tiles.TILES_STAGED_BYTES = 1  # (one tile row an item)
    try:
        work = run_forward(problem, workers)
    finally:
        cpu_conv.by_tiles, cpu_conv.by_strips, cpu_conv._is_direct, _tiles.TILES_STAGED_BYTES = saved
    assert work[0] is _tiles._tile_forward_items
    if small_blocks:
        assert work[3][-1] == rows
    check_against_loops(problem)


@_TILES
@pytest.mark.parametrize("x_shape, weight_shape, stride, padding, taken", [
    ((64, 6, 12, 12), (16, 6, 5, 5), 1, 0, True),  # LeNet's second layer: 150 taps onto 8x8
    ((32, 32, 64, 64), (64, 32, 3, 3), 2, 1, False),  # the stride-2 reference shape: 288 taps, the panels'
    ((32, 16, 64, 64), (64, 16, 3, 3), 2, 1, True),  # 144 taps: tiles
    ((64, 32, 32, 32), (32, 32, 3, 3), 2, 1, True),  # 288 taps onto 16x16: tiles
    ((1, 3, 224, 224), (64, 3, 7, 7), 2, 3, True),  # ResNet's stem
    ((64, 32, 8, 8), (64, 32, 3, 3), 1, 1, True),  # 288 taps onto 8x8
    ((32, 64, 8, 8), (64, 64, 3, 3), 1, 1, False),  # 576 taps onto 8x8 at stride 1: the samples-innermost panels
    ((32, 64, 4, 4), (32, 64, 3, 3), 1, 1, True),  # ... onto 4x4, one tile a plane: tiles
    ((32, 64, 16, 16), (64, 64, 3, 3), 2, 1, True),  # ... at stride 2: tiles
    ((64, 6, 12, 12), (20, 6, 5, 5), 1, 0, False),  # 20 filters fill 20 of 32 lanes
    ((64, 6, 12, 12), (12, 6, 5, 5), 1, 0, True),  # 12 of 16
    ((16, 512, 9, 9), (512, 512, 3, 3), 1, 0, False),  # 7x7 outputs: no tile fits
    ((4, 16, 32, 32), (32, 16, 1, 1), 2, 0, False),  # a 1x1 window
    ((4, 16, 32, 32), (32, 16, 3, 3), 3, 1, False),  # a stride of 3 along the rows
    ((4, 16, 8, 8), (32, 4, 3, 3), 1, 1, False)])  # four groups
def test_tiles_rule(x_shape, weight_shape, stride, padding, taken, monkeypatch):
    """Which convolutions take the tiles where the strips do not (``STRIPS`` off): float32,
    one group, wider than 1x1, a stride of 1 or 2 along the rows, outputs a tile fits, filters
    that fill three quarters of their tiles' lanes, at stride 1 onto small outputs at most
    ``TILES_SMALL_MAX_TAPS`` taps, and from the panels at most ``TILES_PANELS_MAX_TAPS`` taps or
    outputs of one tile's width; never float64, and never with ``TILES`` off."""
    from cnnlab.kernels.cpu import _strips, _tiles

    monkeypatch.setattr(_strips, "STRIPS", False)
    check_rule(_tiles, "TILES", _tiles._tile_forward_items, x_shape, weight_shape, stride, padding, taken)


@pytest.mark.parametrize("samples, filters, out_h, out_w, workers, staged, expected", [
    (64, 16, 8, 8, 2, 1 << 20, (64, 8)),  # whole samples: 64 items
    (1, 16, 8, 8, 2, 1 << 20, (4, 2)),  # one sample: four blocks of one tile row (two rows of 8)
    (1, 64, 56, 56, 2, 1 << 30, (4, 56)),  # four tiles of filters make enough items
    (1, 16, 56, 56, 2, 1 << 30, (4, 14)),  # one tile of filters: four blocks of 14 rows
    (1, 64, 56, 56, 2, 64 * 1024, (4 * 28, 2)),  # at most 64 KB of input an item: 28 blocks of 2 rows
    (2, 32, 30, 16, 1, 1 << 20, (4, 30))])  # one thread: whole samples
def test_tile_work_items(samples, filters, out_h, out_w, workers, staged, expected):
    """Items of the tiles' path: whole samples where they make two items a thread, else as many
    blocks of whole tile rows as do, and fewer rows where an item's input rows (3x3, stride 1, 64
    channels here) would pass ``TILES_STAGED_BYTES``."""
    from cnnlab.kernels.cpu import _tiles

    saved, _tiles.TILES_STAGED_BYTES = _tiles.TILES_STAGED_BYTES, staged
    try:
        assert _tiles.tile_work(samples, filters, 64, out_h, out_w, out_w + 2, 1, 2, workers) == expected
    finally:
        _tiles.TILES_STAGED_BYTES = saved


@pytest.mark.parametrize("filters, channels, pitch, stride, block_rows, itemsize, expected", [
    (32, 16, 34, 1, 32, 4, 32),  # the CIFAR-sized layer: product and planes fit whole
    (32, 32, 34, 1, 32, 4, 16),  # 30 rows fit: two chunks of 16, not 30 and 2
    (64, 64, 58, 1, 56, 4, 8),  # ResNet's 56x56 layer: 8 rows of 30 KB
    (64, 32, 33, 2, 32, 4, 8),  # the stride-2 reference shape: four plane rows a channel per output row
    (64, 32, 33, 2, 32, 8, 5),  # ... in float64: 5 rows fit, 7 chunks of at most 5
    (5, 3, 10, 1, 7, 4, 7),  # never more than the item's rows
    (4096, 512, 4096, 1, 9, 4, 1)])  # at least one
def test_panel_chunks_keep_product_and_planes_within_the_budget(filters, channels, pitch, stride, block_rows,
                                                                itemsize, expected, monkeypatch):
    """A panel item's output rows go in chunks of one size whose product (every filter, rounded
    up to 4, ``pitch`` values a row) and planes (``stride ** 2`` plane rows a channel per output
    row) fit ``PANEL_CHUNK_BYTES`` (here 256 KB, its least)."""
    from cnnlab.kernels.cpu import conv as cpu_conv

    monkeypatch.setattr(cpu_conv, "PANEL_CHUNK_BYTES", 256 * 1024)

    rows = cpu_conv._panel_chunk_rows(filters, channels, pitch, stride, stride, block_rows, itemsize)
    assert rows == expected
    per_row = (-(-filters // 4) * 4 + channels * stride * stride) * pitch * itemsize
    assert rows == 1 or rows * per_row <= cpu_conv.PANEL_CHUNK_BYTES


def _cache_folders(root, caches):
    """A stand-in for Linux's ``cpu0/cache`` folder under ``root``: one ``indexN`` folder per
    ``(level, type, size)``."""
    for number, (level, kind, size) in enumerate(caches):
        folder = root / f"index{number}"
        folder.mkdir()
        for name, text in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(f"{text}\n")
    return str(root)


@pytest.mark.parametrize("caches, expected", [
    ([("1", "Data", "48K"), ("1", "Instruction", "64K"), ("2", "Unified", "2048K"), ("3", "Unified", "491520K")],
     2 << 20),
    ([("1", "Data", "32K"), ("2", "Unified", "1M")], 1 << 20),
    ([("1", "Data", "32K"), ("1", "Instruction", "32K")], None),  # no L2
    ([("2", "Unified", "lots")], None)])  # a size that does not read
def test_the_l2_cache_is_read_from_linux_cache_folders(tmp_path, caches, expected):
    from cnnlab.kernels.cpu import conv as cpu_conv

    assert cpu_conv._l2_cache_bytes(_cache_folders(tmp_path, caches)) == expected
    assert cpu_conv._l2_cache_bytes(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("l2_bytes, expected", [(None, 256 << 10), (512 << 10, 256 << 10), (1 << 20, 256 << 10),
                                                (2 << 20, 512 << 10), (4 << 20, 1 << 20)])
def test_panel_chunks_take_a_quarter_of_the_l2_cache_and_at_least_256_kb(l2_bytes, expected):
    from cnnlab.kernels.cpu import conv as cpu_conv

    assert cpu_conv._panel_chunk_bytes(l2_bytes) == expected


@pytest.mark.skipif(not panels_available(), reason="the panel kernel needs AVX2 and FMA")
@pytest.mark.parametrize("stride, kernel, dilation", [((2, 1), (5, 4), (1, 1)), ((1, 2), (4, 4), (2, 1)),
                                                      ((2, 2), (3, 5), (1, 1)), ((2, 1), (3, 2), (2, 1))])
def test_panels_at_a_stride_of_2_on_either_axis_match_loops(stride, kernel, dilation):
    """The rule's own choice (not forced) at a stride of 2 on one axis or both, float64, two
    samples: the panels, equal to the loops."""
    from cnnlab.kernels.cpu import conv as cpu_conv

    rng = np.random.default_rng(sum(stride) * 10 + kernel[0])
    x, w, b = rng.standard_normal((2, 3, 30, 33)), rng.standard_normal((7, 3) + kernel), rng.standard_normal(7)
    geometry = conv_geometry(x.shape, w.shape, x.dtype, stride, 1, dilation, 1)
    work = cpu_conv._forward_work(x.shape, w.shape, (2, 7) + geometry.out_shape, *geometry.args,
                                  geometry.filter_blocks, geometry.sample_block, dtype=x.dtype)
    assert work[0] is cpu_conv._panel_forward_items
    out = F.conv2d(x, w, b, stride, 1, dilation)
    np.testing.assert_allclose(out, naive.conv2d_loops(x, w, b, stride, ((1, 1), (1, 1)), dilation, 1),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("out_w, kernel_w, stride, dilation, weight_bytes, expected", [
    (32, 3, 1, 1, 18432, True), (56, 3, 1, 1, 147456, True), (28, 3, 1, 1, 589824, False),
    (16, 3, 1, 1, 1000, True), (15, 3, 1, 1, 1000, False), (14, 3, 1, 1, 1000, False), (7, 3, 1, 1, 1000, False),
    (32, 5, 1, 1, 1000, True), (31, 5, 1, 1, 1000, False), (32, 3, 1, 2, 1000, True), (31, 3, 1, 2, 1000, False),
    (64, 1, 1, 1, 1000, True), (56, 3, 1, 1, 256 * 1024, True),
    (56, 3, 1, 1, 256 * 1024 + 1, False), (14, 3, 1, 1, 2359296, False),
    (32, 3, 2, 1, 73728, True), (8, 3, 2, 1, 1000, True), (7, 3, 2, 1, 1000, False), (112, 7, 2, 1, 37632, True),
    (32, 3, 2, 2, 1000, True), (32, 2, 2, 1, 1000, False), (32, 1, 2, 1, 1000, False), (32, 3, 3, 1, 1000, False),
    (32, 3, 2, 1, 256 * 1024 + 1, False)])
def test_panels_rule_takes_stride_1_and_2_where_the_extra_columns_are_few(out_w, kernel_w, stride, dilation,
                                                                           weight_bytes, expected, monkeypatch):
    """At stride 1, or 2 by a window wider than the stride (not 1x1 or 2x2 at stride 2, nor
    anything at stride 3), where a plane row's extra columns (the window's width less one,
    times the dilation, at stride 1; about half that at stride 2) are at most an eighth of the
    output's, and the weights fit the L2 cache's share (at most 256 KB: ResNet's 56x56 layer's
    144 KB, not its 28x28 one's 576 KB); never on a processor without AVX2 and FMA. Onto small
    outputs (the samples innermost), at stride 1 along the rows, within the same weights."""
    from cnnlab.kernels.cpu import conv as cpu_conv

    geometry = (out_w, kernel_w, kernel_w, stride, stride, dilation, dilation, weight_bytes)
    monkeypatch.setattr(cpu_conv, "panels_available", lambda: True)
    assert cpu_conv._by_panels(*geometry) == expected
    assert cpu_conv._interleaved_by_panels(stride, weight_bytes) == (stride == 1 and weight_bytes <= 256 * 1024)
    monkeypatch.setattr(cpu_conv, "panels_available", lambda: False)
    assert not cpu_conv._by_panels(*geometry)
    assert not cpu_conv._interleaved_by_panels(stride, weight_bytes)


@pytest.mark.parametrize("out_w, shape, stride, dilation, filters, expected", [
    (32, (3, 3), (2, 2), 1, 64, True), (112, (7, 7), (2, 2), 1, 64, True), (32, (1, 1), (2, 2), 1, 64, False),
    (32, (2, 2), (2, 2), 1, 64, False), (32, (3, 3), (3, 3), 1, 64, False),
    (32, (3, 1), (2, 1), 1, 64, False), (32, (5, 1), (2, 1), 1, 64, True),
    (16, (3, 3), (2, 2), 1, 64, True), (14, (3, 3), (2, 2), 1, 64, False), (40, (7, 7), (2, 2), 1, 64, False),
    (32, (3, 3), (2, 2), 3, 64, False), (1, (3, 3), (2, 2), 1, 64, False),
    # stride 1: filters times the plane row's extra columns at most PLANES_MAX_EXTRA, or at most
    # PLANES_COPY_MACS (16) per output column
    (8, (5, 5), (1, 1), 1, 32, True), (8, (5, 5), (1, 1), 1, 33, False), (2, (5, 5), (1, 1), 1, 16, True),
    (2, (5, 5), (1, 1), 1, 17, False), (32, (3, 3), (1, 1), 1, 32, True),
    (16, (3, 3), (1, 1), 1, 128, True), (16, (3, 3), (1, 1), 1, 129, False), (3, (3, 3), (1, 1), 1, 32, True),
    (56, (3, 3), (1, 1), 1, 64, True), (28, (3, 3), (1, 1), 1, 128, True), (14, (3, 3), (1, 1), 1, 256, False),
    (7, (3, 3), (1, 1), 1, 512, False), (32, (3, 3), (1, 1), 2, 16, True),
    (32, (3, 3), (1, 1), 2, 129, False), (32, (3, 1), (1, 1), 1, 512, True), (1, (3, 3), (1, 1), 1, 1, False)])
def test_planes_rule_takes_windows_that_share_their_planes(out_w, shape, stride, dilation, filters, expected):
    """At a stride, two taps or more per plane, plane rows at most a sixteenth wider than the
    output's; at stride 1, where the extra columns cost the GEMM little (few filters, or a wide
    output); never for an output one column wide (its own copy)."""
    from cnnlab.kernels.cpu import conv as cpu_conv

    assert cpu_conv._by_planes(out_w, *shape, *stride, dilation, filters) == expected


@pytest.mark.parametrize("samples, columns, panel_bytes, budget, expected", [
    (64, 8, 192, 10**6, 6),  # 48-column panels: 6 samples of 8 columns fill one, 8 would take two
    (64, 8, 96, 10**6, 8),  # 24-column panels: 8 samples take three, as many on the busiest thread as 6 do
    (20, 8, 192, 10**6, 5),  # 4 blocks of 5, one panel each
    (64, 8, 192, 5, 5),  # within the budget
    (64, 0, 192, 10**6, 8),  # not by panels: the default
])
def test_small_outputs_by_panels_take_blocks_that_fill_panels(monkeypatch, samples, columns, panel_bytes, budget,
                                                               expected):
    from cnnlab.kernels.cpu import conv as cpu_conv

    monkeypatch.setattr(cpu_conv, "PANEL_BYTES", panel_bytes)  # (read by the Python rule, not compiled)
    assert cpu_conv._interleaved_sample_block(samples, 2, budget, columns, 4) == expected


@pytest.mark.parametrize("x_shape, filters, samples, gemm_rows", [
    ((64, 6, 12, 12), 16, 8, 2),  # LeNet's second layer (5x5 onto 8x8): 8 blocks of 8, 128 columns a GEMM
    ((16, 64, 9, 9), 64, 8, 2),  # 7x7 outputs: 2 rows of 8 samples make 112 columns, 3 would pass 128
    ((16, 512, 9, 9), 512, 8, 7),  # twice the filters, 1,024 columns: every row at once
    ((16, 160, 9, 9), 160, 8, 5),  # 320 columns: 5 rows of 56
    ((20, 6, 12, 12), 16, 5, 3),  # 4 blocks of 5 that two threads share evenly, not 8, 8, 4
    ((3, 512, 9, 9), 512, 2, 7),  # fewer samples than a block holds: a share per thread
    ((2, 6, 12, 12), 16, 1, 8)])  # one sample a block, the same path (what the warm-up records on two samples)
def test_small_outputs_put_the_samples_innermost(x_shape, filters, samples, gemm_rows, monkeypatch):
    """A batch of small outputs is computed in blocks of at most ``INTERLEAVED_SAMPLES``
    samples, in a number of blocks two threads share evenly, by GEMMs (without panels) of as
    many output rows as make ``GEMM_MIN_COLUMNS`` or twice the filters columns."""
    import numba

    from cnnlab.kernels.cpu import conv as cpu_conv

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two Numba threads")
    threads = numba.get_num_threads()
    numba.set_num_threads(2)
    monkeypatch.setattr(cpu_conv, "PANELS", False)
    monkeypatch.setattr(cpu_conv._tiles, "TILES", False)  # (the samples-innermost path, not the tiles')
    monkeypatch.setattr(cpu_conv._strips, "STRIPS", False)  # (nor the strips')
    try:
        window = 5 if x_shape[2] == 12 else 3
        weight_shape = (filters, x_shape[1], window, window)
        geometry = conv_geometry(x_shape, weight_shape, np.float32, 1, 0, 1, 1)
    finally:
        numba.set_num_threads(threads)
    out_shape = (x_shape[0], filters) + geometry.out_shape
    work = cpu_conv._forward_work(x_shape, weight_shape, out_shape, *geometry.args, geometry.filter_blocks,
                                  geometry.sample_block, dtype=np.float32)
    assert geometry.sample_block == samples
    assert work[0] is cpu_conv._interleaved_forward_items and work[3][7] == gemm_rows


@settings(max_examples=40)
@given(st.integers(2, 9), st.integers(1, 9), st.integers(1, 9), st.integers(1, 4), st.integers(1, 4),
       st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 2),
       st.tuples(*[st.integers(0, 2)] * 4), st.integers(2, 4), st.booleans(), st.integers(1, 2),
       st.sampled_from(["none", "relu", "residual", "mask"]), st.booleans())
@example(3, 9, 7, 3, 2, 2, 1, 1, 2, (1, 0, 2, 1), 2, False, 2, "relu", True)  # panels, rows at a stride
@example(5, 8, 8, 3, 3, 1, 1, 2, 1, (2, 2, 1, 1), 4, False, 1, "residual", True)  # panels, a dilation
def test_samples_innermost_path_matches_loops(samples, height, width, kh, kw, sh, sw, dh, dw, pads, sample_block,
                                              one_row, workers, epilogue, panels):
    """The small-output path (the samples innermost, :func:`_interleaved_forward_items`, and by
    panels :func:`_interleaved_panel_items`) against
    the loops: every stride, dilation and four-sided padding, blocks of samples that leave a
    smaller last one, GEMMs of one output row or of all, one thread or two, each epilogue, by
    panels (at stride 1 along the rows, where the processor runs them) or by GEMMs. A window
    with gaps between its reads (narrower than the stride) takes the planes' path."""
    from hypothesis import assume

    from cnnlab.functional import epilogue_activation
    from cnnlab.kernels import EPILOGUE_MASK
    from cnnlab.kernels.cpu import conv as cpu_conv

    top, bottom, left, right = pads
    out_h = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + left + right - dw * (kw - 1) - 1) // sw + 1
    assume(out_h >= 1 and out_w >= 1)
    rng = np.random.default_rng(samples * 1000 + height * 100 + width * 10 + kh)
    x = rng.standard_normal((samples, 5, height, width))
    w = rng.standard_normal((3, 5, kh, kw))
    scale, shift = rng.standard_normal(3), rng.standard_normal(3)
    other = rng.standard_normal((samples, 3, out_h, out_w))
    code, low, high = epilogue_activation("relu" if epilogue == "relu" else None)
    if epilogue == "mask":
        code = EPILOGUE_MASK
    out = np.full((samples, 3, out_h, out_w), np.nan)
    rows, rule = cpu_conv._interleaved_gemm_rows, cpu_conv._interleaved_by_panels
    if one_row:
        cpu_conv._interleaved_gemm_rows = lambda *arguments: 1
    if not panels:
        cpu_conv._interleaved_by_panels = lambda *arguments: False
    try:
        work = cpu_conv._forward_work(x.shape, w.shape, out.shape, sh, sw, top, left, dh, dw, 1, out_h, workers, 1,
                                      sample_block, dtype=x.dtype)
        cpu_conv._run_forward(work, x, w, scale, shift, other, epilogue == "residual", code, low, high, out)
    finally:
        cpu_conv._interleaved_gemm_rows, cpu_conv._interleaved_by_panels = rows, rule
    padding = ((top, bottom), (left, right))
    expected = naive.fused_conv2d(x, w, shift, (sh, sw), padding, (dh, dw), 1, scale=scale,
                                  residual=other if epilogue == "residual" else None,
                                  spec="relu" if epilogue == "relu" else None)
    if epilogue == "mask":
        expected = np.where(other > 0, expected, 0)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    if (kh, kw, sh, sw) == (1, 1, 1, 1) and pads == (0, 0, 0, 0):
        assert work[0] is cpu_conv._pointwise_forward_items
    elif (kh - 1) * dh + 1 < sh or (kw - 1) * dw + 1 < sw:
        assert work[0] is cpu_conv._conv2d_forward_items
    else:
        by_panels = panels and sw == 1 and panels_available()
        assert work[0] is (cpu_conv._interleaved_panel_items if by_panels else cpu_conv._interleaved_forward_items)


@pytest.mark.parametrize("m, k, n, limit", [
    (32, 288, 1024, 1_000_000),  # one part of 288, tiles of 96 columns
    (70, 100, 333, 1_000_000),  # blocks of 32, 32 and 6 rows; tiles of 304 and 29 columns
    (48, 40, 150, 40_000),  # parts of 14, 14 and 12; tiles of 80 and 70; blocks of 32 and 16
    (8, 2000, 40, 1_000_000),  # two parts of 1,000, one tile
    (16, 150, 64, 1_000_000),  # small already: one GEMM
    (32, 288, 1024, 0)])  # no small-matrix kernel: one GEMM
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_gemm_in_small_pieces_is_the_product(m, k, n, limit, beta):
    """A GEMM cut into blocks of rows, parts of its depth and tiles of columns for the BLAS's
    small-matrix kernel computes the same product as one GEMM, overwriting or adding on."""
    from cnnlab.kernels.cpu import conv as cpu_conv

    rng = np.random.default_rng(m + k + n)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    before = rng.standard_normal((m, n))
    out = before.copy() if beta else np.full((m, n), np.nan)
    cpu_conv._gemm_in_small_pieces(m, n, k, a, k, b, n, beta, out, n, limit)
    np.testing.assert_allclose(out, a @ b + beta * before, rtol=1e-12, atol=1e-12)


@settings(max_examples=15)
@given(st.integers(1, 3), st.integers(3, 12), st.integers(1, 3), st.integers(1, 2), st.integers(0, 2),
       st.sampled_from([33, 70]))
@example(2, 8, 1, 1, 0, 70)  # 1x1: the pixel blocks
@example(2, 8, 3, 1, 1, 70)  # the GEMM path
def test_convolution_in_small_gemm_tiles_matches_loops(samples, size, kernel, stride, padding, filters):
    """A convolution whose GEMMs are cut for a small-matrix kernel (a limit low enough here that
    every GEMM is blocks of 32 filters, four or five parts of its taps and tiles of 64 pixels), by
    im2col or (1x1) on the input itself, equals the loops."""
    from hypothesis import assume

    from cnnlab.kernels.cpu import conv as cpu_conv

    assume(size + 2 * padding >= kernel)
    rng = np.random.default_rng(samples * 100 + size * 10 + kernel)
    x = rng.standard_normal((samples, 9, size, size)).astype(np.float32)
    w = rng.standard_normal((filters, 9, kernel, kernel)).astype(np.float32)
    b = rng.standard_normal(filters).astype(np.float32)
    limit, panels, tiles = cpu_conv.small_gemm_limit, cpu_conv.PANELS, cpu_conv._tiles.TILES
    cpu_conv.small_gemm_limit = lambda dtype: 32 * 9 * kernel * kernel * 16
    cpu_conv.PANELS = cpu_conv._tiles.TILES = False  # (the GEMM path's pieces, not the panels or the tiles)
    try:
        out = F.conv2d(x, w, b, stride=stride, padding=padding)
        work = cpu_conv._forward_work(x.shape, w.shape, out.shape,
                                      *conv_geometry(x.shape, w.shape, x.dtype, stride, padding, 1, 1).args,
                                      dtype=x.dtype)
    finally:
        cpu_conv.small_gemm_limit, cpu_conv.PANELS, cpu_conv._tiles.TILES = limit, panels, tiles
    reference = naive.conv2d_loops(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                                   (stride, stride), ((padding, padding),) * 2, (1, 1), 1)
    np.testing.assert_allclose(out, reference, rtol=2e-5, atol=2e-5 * np.abs(reference).max())
    if work[0] is not cpu_conv._direct_forward_items:  # the GEMM path, or 1x1's pixel blocks
        assert work[3][-1] == 32 * 9 * kernel * kernel * 16


@pytest.mark.parametrize("info, expected", [
    ({"internal_api": "openblas", "architecture": "SkylakeX"}, 1_000_000),
    ({"internal_api": "openblas", "architecture": "Haswell"}, 0),
    ({"internal_api": "mkl"}, 0), (None, 0)])
def test_small_gemm_limit_follows_the_blas_kernels(info, expected, monkeypatch):
    """GEMMs are cut for OpenBLAS's small-matrix kernel only where its AVX-512 kernels run."""
    from cnnlab.kernels.cpu import _blas

    monkeypatch.setattr(_blas, "gemm_blas", lambda: info)
    _blas.small_gemm_limit.cache_clear()
    try:
        assert _blas.small_gemm_limit(np.float32) == expected
        assert _blas.small_gemm_limit(np.float64) == 0  # single precision only
    finally:
        _blas.small_gemm_limit.cache_clear()


def test_blas_that_cannot_be_queried_leaves_gemms_whole(monkeypatch):
    """When threadpoolctl fails to describe the loaded libraries, the GEMMs stay whole and the
    BLAS is reported unknown, instead of every convolution failing."""
    import threadpoolctl

    from cnnlab.kernels.cpu import _blas
    from cnnlab.parallel import blas_kernels

    def broken():
        raise OSError("cannot read the library's version")

    monkeypatch.setattr(threadpoolctl, "threadpool_info", broken)
    _blas.small_gemm_limit.cache_clear()
    try:
        assert _blas.gemm_blas() is None and _blas.small_gemm_limit(np.float32) == 0
        assert blas_kernels() == "unknown"
    finally:
        _blas.small_gemm_limit.cache_clear()


def test_non_contiguous_input_is_accepted():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 8, 8, 3)).transpose(0, 3, 1, 2)  # NHWC memory seen as NCHW
    w = rng.standard_normal((4, 3, 3, 3))
    np.testing.assert_allclose(F.conv2d(x, w), F.conv2d(np.ascontiguousarray(x), w))


def test_float32_large_batch_matches_float64():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 8, 20, 20))
    w = rng.standard_normal((12, 8, 5, 5))
    exact = F.conv2d(x, w, padding=2)
    approx = F.conv2d(x.astype(np.float32), w.astype(np.float32), padding=2)
    np.testing.assert_allclose(approx, exact, rtol=1e-4, atol=1e-4)


def test_blas_thread_count_is_restored():
    from threadpoolctl import threadpool_info

    before = [(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
    F.conv2d(np.ones((2, 1, 5, 5)), np.ones((1, 1, 3, 3)))
    after = [(i["filepath"], i["num_threads"]) for i in threadpool_info() if i["user_api"] == "blas"]
    assert before == after


# ----------------------------------------------------------------------------- four-sided and ONNX 'same' padding


def resolved_sides(g):
    return resolve_padding(g["padding"], g["kernel"], g["stride"], g["dilation"], (g["height"], g["width"]))


@given(conv_padding_geometries())
def test_conv2d_four_sided_and_same_upper_lower_padding_match_loops(g):
    x, weight, bias = make_problem(g)
    out = F.conv2d(x, weight, bias, g["stride"], g["padding"], g["dilation"], g["groups"])
    sides = resolved_sides(g)
    reference = naive.conv2d_loops(x, weight, bias, g["stride"], sides, g["dilation"], g["groups"])
    np.testing.assert_allclose(out, reference, **tolerance(g["dtype"]))
    expected = tuple(cnnlab.output_size(size, k, s, padding, d) for size, k, s, padding, d in zip(
        (g["height"], g["width"]), g["kernel"], g["stride"],
        [g["padding"]] * 2 if isinstance(g["padding"], str) else g["padding"], g["dilation"]))
    assert out.shape[2:] == expected
    if isinstance(g["padding"], str):  # ONNX: ceil(size / stride) whatever the kernel
        assert expected == tuple(-(-size // s) for size, s in zip((g["height"], g["width"]), g["stride"]))


@settings(max_examples=10)
@given(conv_padding_geometries(max_size=3))
def test_conv2d_backward_with_four_sided_padding_matches_finite_differences(g):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((g["samples"], g["channels"], g["height"], g["width"]))
    w = rng.standard_normal((g["filters"], g["channels"] // g["groups"]) + g["kernel"])
    b = rng.standard_normal(g["filters"])
    geometry = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"], groups=g["groups"])
    upstream = rng.standard_normal(F.conv2d(x, w, b, **geometry).shape)
    grad_x, grad_w, grad_b = F.conv2d_backward(x, w, upstream, **geometry)

    def loss():
        return float(np.sum(F.conv2d(x, w, b, **geometry) * upstream))

    for grad, array in ((grad_x, x), (grad_w, w), (grad_b, b)):
        np.testing.assert_allclose(grad, naive.numeric_gradient(loss, array), rtol=1e-5, atol=1e-7)


@pytest.mark.usefixtures("small_cuda_launches")
@settings(max_examples=6)
@given(conv_padding_geometries(max_size=3))
def test_conv2d_four_sided_padding_gpu_equals_cpu(g):
    x, weight, bias = make_problem(g, seed=7)
    geometry = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"], groups=g["groups"])
    out = F.conv2d(x, weight, bias, **geometry)
    gpu = F.conv2d(*(cnnlab.to_device(a) if a is not None else None for a in (x, weight, bias)), **geometry)
    np.testing.assert_allclose(cnnlab.to_host(gpu), out, **tolerance(g["dtype"]))
    upstream = arrays(np.random.default_rng(8), out.shape, g["dtype"])
    cpu_grads = F.conv2d_backward(x, weight, upstream, **geometry)
    gpu_grads = F.conv2d_backward(*(cnnlab.to_device(a) for a in (x, weight, upstream)), **geometry)
    for ours, theirs in zip(gpu_grads, cpu_grads):
        np.testing.assert_allclose(cnnlab.to_host(ours), theirs, **tolerance(g["dtype"]))
    # through a ReLU's mask: on the GPU a pass after the input gradient, on the CPU in its epilogue
    relu = np.maximum(x, 0)
    cpu_masked = F.conv2d_backward(relu, weight, upstream, **geometry, relu_input=True)[0]
    gpu_masked = F.conv2d_backward(*(cnnlab.to_device(a) for a in (relu, weight, upstream)), **geometry,
                                   relu_input=True)[0]
    np.testing.assert_allclose(cnnlab.to_host(gpu_masked), cpu_masked, **tolerance(g["dtype"]))
    assert np.all(cpu_masked[relu <= 0] == 0)


def test_four_sided_padding_equals_explicitly_padded_input():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((1, 2, 5, 4))
    w = rng.standard_normal((3, 2, 3, 2))
    padded = np.pad(x, ((0, 0), (0, 0), (2, 0), (1, 3)))  # top 2, bottom 0, left 1, right 3
    np.testing.assert_allclose(F.conv2d(x, w, padding=((2, 0), (1, 3))), F.conv2d(padded, w), rtol=1e-12)


def test_same_upper_and_same_lower_put_the_odd_zero_after_and_before():
    # 5 pixels, kernel 2, stride 2: ONNX wants ceil(5 / 2) = 3 outputs, which need
    # (3 - 1) * 2 + 2 - 5 = 1 zero: after the input for SAME_UPPER, before it for SAME_LOWER
    x = np.arange(25, dtype=np.float64).reshape(1, 1, 5, 5)
    w = np.zeros((1, 1, 2, 2))
    w[0, 0, 0, 0] = 1.0  # reads the window's top-left pixel
    upper = F.conv2d(x, w, stride=2, padding="same_upper")[0, 0]
    lower = F.conv2d(x, w, stride=2, padding="SAME_LOWER")[0, 0]
    np.testing.assert_array_equal(upper, x[0, 0, ::2, ::2])      # windows start at 0, 2, 4
    np.testing.assert_array_equal(lower[1:, 1:], x[0, 0, 1::2, 1::2])  # windows start at -1, 1, 3
    assert (lower[0] == 0).all() and (lower[:, 0] == 0).all()
    assert resolve_padding("same_upper", (2, 2), (2, 2), (1, 1), (5, 5)) == ((0, 1), (0, 1))
    assert resolve_padding("same_lower", (2, 2), (2, 2), (1, 1), (5, 5)) == ((1, 0), (1, 0))
    # at stride 1 'same_upper' is PyTorch's 'same'
    np.testing.assert_array_equal(F.conv2d(x, w, padding="same_upper"), F.conv2d(x, w, padding="same"))


@pytest.mark.parametrize("padding, error, words", [
    ((1, 0, 1, 0), ValueError, "4 entries"),
    (((1, 0), (1, 0, 0)), ValueError, "width"),
    (((1, -1), (0, 0)), ValueError, "padding must be >= 0"),
    (((1, 0), (0.5, 0)), TypeError, "padding"),
    ("same", ValueError, "same_upper"),
    ("full", ValueError, "same_lower"),
])
def test_bad_conv_padding(padding, error, words):
    with pytest.raises(error, match=words):
        F.conv2d(np.zeros((1, 1, 5, 5)), np.zeros((1, 1, 2, 2)), stride=2, padding=padding)


def test_resolving_same_upper_with_a_stride_needs_the_input_size():
    with pytest.raises(ValueError, match="input_size"):
        resolve_padding("same_upper", (3, 3), (2, 2), (1, 1))
    assert resolve_padding("same_upper", (3, 3), (1, 1), (1, 1)) == ((1, 1), (1, 1))


# --- the CPU's direct paths: depthwise (one filter per channel) and pointwise (1x1) ----------


@pytest.mark.parametrize("stride, padding, dilation", [
    (1, 1, 1), (2, 1, 1), (1, ((2, 0), (1, 2)), 1), (3, 0, 1), (1, 2, 2), (2, "same_upper", 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_convolution_equals_the_definition(stride, padding, dilation, dtype):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 5, 9, 8)).astype(dtype)
    weight = rng.standard_normal((5, 1, 3, 3)).astype(dtype)
    bias = rng.standard_normal(5).astype(dtype)
    got = F.conv2d(x, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=5)
    pads = resolve_padding(padding, (3, 3), (stride, stride), (dilation, dilation), (9, 8))
    expected = naive.conv2d_loops(x, weight, bias, (stride, stride), pads, (dilation, dilation), groups=5)
    np.testing.assert_allclose(got, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("samples", [1, 3])
def test_pointwise_convolution_equals_the_definition(groups, samples):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((samples, 4, 5, 6))
    weight = rng.standard_normal((6, 4 // groups, 1, 1))
    bias = rng.standard_normal(6)
    np.testing.assert_allclose(F.conv2d(x, weight, bias, groups=groups),
                               naive.conv2d_loops(x, weight, bias, groups=groups), rtol=1e-12, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6), st.integers(3, 20), st.integers(3, 20), st.sampled_from([1, 2]), st.sampled_from([1, 2]),
       st.integers(0, 2), st.sampled_from([np.float32, np.float64]), st.sampled_from(["relu", "relu6", "clip"]))
def test_depthwise_3x3_clip_in_its_taps_loop_gives_the_unfused_values_bitwise(channels, height, width, stride,
                                                                              dilation, padding, dtype, activation):
    """A depthwise 3x3 layer's clip runs inside its taps loop: the values, bit for bit, of the
    convolution with its scale and bias, then the stand-alone clip (values at and beside the
    bounds included: the scale and bias move many of the first sample's sums onto them; the
    second sample's sums are rounded, so the taps must be summed in the same order)."""
    if (height + 2 * padding - 2 * dilation - 1) < 0 or (width + 2 * padding - 2 * dilation - 1) < 0:
        return
    rng = np.random.default_rng(channels * 1000 + height * 31 + width)
    x = rng.standard_normal((2, channels, height, width)) * 4
    x[0] = np.round(x[0])  # small integers (sums on the bounds); the other sample's sums are rounded
    x = x.astype(dtype)
    weight = (rng.integers(-2, 3, (channels, 1, 3, 3)) + rng.choice([0.0, 0.1], (channels, 1, 3, 3))).astype(dtype)
    scale = rng.choice([0.5, 1.0, 2.0], channels).astype(dtype)
    bias = rng.choice([-0.5, 0.0, 3.0], channels).astype(dtype)
    low, high = {"relu": (0.0, np.inf), "relu6": (0.0, 6.0), "clip": (-1.5, 0.1)}[activation]
    named = ("clip", low, high) if activation == "clip" else activation
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=channels)
    fused = F.conv2d(x, weight, bias, **geometry, scale=scale, activation=named)
    plain = F.conv2d(x, weight, bias, **geometry, scale=scale)
    np.testing.assert_array_equal(fused, F.clip(plain, low, high))
    assert np.array_equal(np.signbit(fused), np.signbit(F.clip(plain, low, high)))


@pytest.mark.parametrize("vector_bytes, expected", [(64, "_panel_forward_items"), (32, "_conv2d_forward_items")])
def test_few_channel_panels_past_the_width_rule_only_where_the_512_bit_rule_takes_them(monkeypatch, vector_bytes,
                                                                                       expected):
    """RGB to 16 filters, 5x5, onto 28x28 (plane rows of 32 columns: past the panels' width rule;
    not direct at stride 1 on a small plane): the panels with the 512-bit block, which the
    few-channel rule sends there; im2col and the GEMM with the 256-bit one, as before."""
    from cnnlab.kernels.cpu import conv as cpu_conv

    monkeypatch.setattr(cpu_conv, "VECTOR_BYTES", vector_bytes)
    monkeypatch.setattr(cpu_conv, "MR", 8 if vector_bytes == 64 else 4)
    monkeypatch.setattr(cpu_conv, "panels_available", lambda: True)
    monkeypatch.setattr(cpu_conv._tiles, "TILES", False)  # (the panels' rule, not the tiles')
    work = cpu_conv._forward_work((4, 3, 32, 32), (16, 3, 5, 5), (4, 16, 28, 28), 1, 1, 0, 0, 1, 1, 1, 28, 2,
                                  dtype=np.float32)
    assert work[0].__name__ == expected


@pytest.mark.parametrize("batch", [1, 2, 16])
@pytest.mark.parametrize("channels, filters", [(4, 16), (4, 12), (16, 4)])
def test_expanding_1x1_on_small_maps_takes_the_samples_innermost_path_and_is_exact(batch, channels, filters):
    """A 1x1 convolution onto small maps (fewer pixels than GEMM_MIN_COLUMNS) that expands the
    channels POINTWISE_EXPANSION times or more goes through the samples-innermost path when the
    geometry gives whole samples to an item (not at batch 1 on two threads, whose items split the
    filters); any other 1x1 stays a GEMM per sample. Either way it is the naive convolution."""
    from cnnlab.kernels import cpu

    rng = np.random.default_rng(21)
    x = rng.standard_normal((batch, channels, 7, 7)).astype(np.float32)
    weight = rng.standard_normal((filters, channels, 1, 1)).astype(np.float32)
    bias = rng.standard_normal(filters).astype(np.float32)
    geometry = conv_geometry(x.shape, weight.shape, x.dtype, 1, 0, 1, 1)
    work = cpu.conv2d_forward_work(x.shape, weight.shape, (batch, filters, 7, 7), *geometry.args,
                                   geometry.filter_blocks, geometry.sample_block, dtype=x.dtype)
    by_samples = filters >= 4 * channels and geometry.filter_blocks == 1
    assert (work[0].__name__ != "_pointwise_forward_items") == by_samples
    np.testing.assert_allclose(F.conv2d(x, weight, bias), naive.conv2d_loops(x, weight, bias), rtol=1e-5, atol=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.integers(1, 40), st.integers(3, 12), st.integers(3, 12), st.sampled_from([1, 2]),
       st.sampled_from([1, 2]), st.tuples(*[st.integers(0, 2)] * 4),
       st.sampled_from(["none", "relu6", "hardswish", "residual", "mask"]), st.sampled_from([np.float32, np.float64]))
@example(1, 960, 7, 7, 1, 1, (1, 1, 1, 1), "relu6", np.float32)  # MobileNetV2's last depthwise layers
@example(1, 576, 14, 14, 2, 1, (1, 1, 1, 1), "relu6", np.float32)
def test_depthwise_3x3_by_channel_blocks_gives_the_direct_paths_values(samples, channels, height, width, stride,
                                                                       dilation, pads, epilogue, dtype):
    """The depthwise path by blocks of channels (small planes): against the loops, and bit for bit
    the direct path's values (the rule switched off), with partial blocks, every stride, dilation,
    four-sided padding, the clip in the taps' loop, another activation, a residual and a mask."""
    from hypothesis import assume

    from cnnlab.functional import epilogue_activation
    from cnnlab.kernels import EPILOGUE_MASK
    from cnnlab.kernels.cpu import conv as cpu_conv

    top, bottom, left, right = pads
    out_h = (height + top + bottom - 2 * dilation - 1) // stride + 1
    out_w = (width + left + right - 2 * dilation - 1) // stride + 1
    assume(out_h >= 1 and out_w >= 1)
    rng = np.random.default_rng(channels * 100 + height * 10 + width)
    x = rng.standard_normal((samples, channels, height, width)).astype(dtype)
    w = rng.standard_normal((channels, 1, 3, 3)).astype(dtype)
    scale, shift = rng.uniform(0.5, 2, channels).astype(dtype), rng.standard_normal(channels).astype(dtype)
    other = rng.standard_normal((samples, channels, out_h, out_w)).astype(dtype)
    code, low, high = epilogue_activation({"relu6": "relu6", "hardswish": "hardswish"}.get(epilogue))
    if epilogue == "mask":
        code = EPILOGUE_MASK
    results = []
    for blocks in (True, False):
        rule = cpu_conv._by_channel_blocks
        if not blocks:
            cpu_conv._by_channel_blocks = lambda *arguments: False
        try:
            out = np.full((samples, channels, out_h, out_w), np.nan, dtype)
            work = cpu_conv._forward_work(x.shape, w.shape, out.shape, stride, stride, top, left, dilation, dilation,
                                          channels, out_h, 2, dtype=dtype)
            cpu_conv._run_forward(work, x, w, scale, shift, other, epilogue == "residual", code, low, high, out)
        finally:
            cpu_conv._by_channel_blocks = rule
        taken = work[0] is cpu_conv._depthwise_blocks_items
        assert taken == (blocks and out_h * out_w <= 196)
        results.append(out)
    np.testing.assert_array_equal(results[0], results[1])
    spec = {"relu6": "relu6", "hardswish": "hardswish"}.get(epilogue)
    expected = naive.fused_conv2d(x, w, shift, (stride, stride), ((top, bottom), (left, right)), (dilation, dilation),
                                  channels, scale=scale, residual=other if epilogue == "residual" else None, spec=spec)
    if epilogue == "mask":
        expected = np.where(other > 0, expected, 0)
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(results[0], expected, rtol=tolerance, atol=tolerance)
