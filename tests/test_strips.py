"""Convolutions by strips (``cnnlab.kernels.cpu._strips``): the two kernels against their
definitions (compiled, and as the NumPy code kernels run interpreted), the path forced on every
geometry against loops, the rule and the items' split."""

import numpy as np
import pytest
from conv_paths import check_against_loops, check_rule, conv_problem, forward_items, run_forward
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numba import njit

from cnnlab.kernels.cpu import _strips
from cnnlab.kernels.cpu import conv as cpu_conv
from cnnlab.kernels.cpu._microkernel import VECTOR_BYTES, available
from cnnlab.kernels.cpu._strips import strip_finish, strip_product

_AVX512 = pytest.mark.skipif(not (available() and VECTOR_BYTES == 64), reason="the strips' path runs on AVX-512 only")


@njit(cache=False)
def _compiled_strip_product(a, a_start, a_step, offsets, k, w, w_start, s, s_start, accumulate):
    strip_product(a, a_start, a_step, offsets, k, w, w_start, s, s_start, accumulate)


@njit(cache=False)
def _compiled_strip_finish(s, s_start, pixels, c, c_start, ldc, filters, scale, shift, f_start, residual, finish,
                           has_residual, clip, low, high):
    strip_finish(s, s_start, pixels, c, c_start, ldc, filters, scale, shift, f_start, residual, finish, has_residual,
                 clip, low, high)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 2), st.integers(0, 9), st.booleans(), st.integers(0, 2**16))
def test_strip_product_matches_its_definition(a_step, k, accumulate, seed):
    """``s[s_start + p * 32 + f] (+)= sum_i a[a_start + p * a_step + offsets[i]] * w[w_start + i
    * 32 + f]`` for the 8 pixels and 32 filters of a strip, compiled (each stride's kernel) and in
    NumPy; nothing outside the strip's 256 values written."""
    rng = np.random.default_rng(seed)
    a_start, w_start, s_start = 3, 5, 7
    a = rng.standard_normal(a_start + 16 + 60).astype(np.float32)
    offsets = rng.integers(0, 60, k + 1).astype(np.uint64)
    w = rng.standard_normal(w_start + 32 * (k + 1)).astype(np.float32)
    s = rng.standard_normal(s_start + 256 + 9).astype(np.float32)
    expected = s.astype(np.float64)
    for p in range(8):
        for f in range(32):
            total = sum(float(a[a_start + p * a_step + int(offsets[i])]) * float(w[w_start + i * 32 + f])
                        for i in range(k))
            expected[s_start + p * 32 + f] = total + (expected[s_start + p * 32 + f] if accumulate else 0)
    for run in (_compiled_strip_product, strip_product):
        out = s.copy()
        run(a, a_start, a_step, offsets, k, w, w_start, out, s_start, accumulate)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 16), st.integers(1, 16), st.booleans(), st.booleans(), st.booleans(), st.booleans(),
       st.integers(0, 2**16))
def test_strip_finish_matches_its_definition(pixels, filters, finish, has_residual, clip, residual_is_c, seed):
    """16 pixels by 16 filters of the strips' buffer turned round into the output,
    ``c[c_start + f * ldc + p] = s[s_start + p * 32 + f]`` finished by the scale, shift, residual
    and clip, compiled and in NumPy: the pixels from ``pixels`` and the filters from ``filters``
    neither written nor read from the residual (which may be ``c`` itself)."""
    rng = np.random.default_rng(seed)
    s_start, c_start, f_start, ldc = 3, 2, 1, 21
    s = rng.standard_normal(s_start + 16 * 32).astype(np.float32)
    c = rng.standard_normal(c_start + 16 * ldc + 3).astype(np.float32)
    scale = rng.standard_normal(f_start + 16).astype(np.float32)
    shift = rng.standard_normal(f_start + 16).astype(np.float32)
    low, high = -0.5, 0.75
    for run in (_compiled_strip_finish, strip_finish):
        out = c.copy()
        residual = out if residual_is_c else rng.standard_normal(c.shape[0]).astype(np.float32)
        expected = out.astype(np.float64)
        for f in range(filters):
            for p in range(pixels):
                value = float(s[s_start + p * 32 + f])
                if finish:
                    value = float(scale[f_start + f]) * value + float(shift[f_start + f])
                    if has_residual:
                        value += float(residual[c_start + f * ldc + p])
                    if clip:
                        value = min(max(value, low), high)
                expected[c_start + f * ldc + p] = value
        run(s, s_start, pixels, out, c_start, ldc, filters, scale, shift, f_start, residual, finish, has_residual,
            clip, low, high)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


@_AVX512
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 20), st.integers(1, 4), st.integers(1, 5), st.integers(1, 3),
       st.integers(1, 2), st.integers(1, 2), st.integers(1, 2), st.tuples(*[st.integers(0, 2)] * 4),
       st.integers(1, 70), st.integers(1, 40), st.integers(1, 6),
       st.sampled_from(["none", "relu", "residual", "mask", "tanh"]), st.integers(1, 3), st.integers(1, 2))
@example(2, 32, 3, 3, 2, 2, 1, 1, (1, 0, 1, 0), 64, 32, 5, "relu", 1, 2)  # the stride-2 reference shape's kind
@example(1, 20, 3, 3, 1, 1, 1, 1, (1, 1, 1, 1), 40, 7, 7, "residual", 3, 2)  # 7 wide: a strip past the row's end
@example(2, 3, 7, 7, 2, 2, 1, 1, (2, 1, 2, 1), 33, 17, 2, "tanh", 2, 1)  # a stem: chunks of 1 channel
def test_convolution_by_strips_matches_loops(samples, channels, kh, kw, sh, sw, dh, dw, pads, filters, out_w, out_h,
                                             epilogue, chunk, workers):
    """The convolution by strips, forced on: outputs of any width (the last strip of a row past
    its end), strides of 1 and 2 along the rows (any down them), dilations, four-sided padding,
    filter counts that are not whole pairs of vectors, chunks of channels that do not divide
    them, passes of several rows, items of a row or two (blocks of a sample), one thread or two,
    and each epilogue: in the kernel (the clip, a residual) or after it (tanh, the mask)."""
    problem = conv_problem(samples, channels, kh, kw, sh, sw, dh, dw, pads, filters, out_w, out_h, epilogue)
    saved = (cpu_conv.by_strips, cpu_conv.by_winograd, cpu_conv._is_direct, _strips.STRIPS_CHUNK_BYTES,
             _strips.STRIPS_STAGED_BYTES, _strips.STRIPS_PER_PASS)
    cpu_conv.by_strips = lambda *arguments: True
    cpu_conv.by_winograd = cpu_conv._is_direct = lambda *arguments: False
    _strips.STRIPS_CHUNK_BYTES = chunk * kh * kw * 32 * 4
    _strips.STRIPS_STAGED_BYTES = 1 if out_h % 2 else 1 << 20  # (one row an item, or whole samples)
    _strips.STRIPS_PER_PASS = 12
    try:
        work = run_forward(problem, workers)
    finally:
        (cpu_conv.by_strips, cpu_conv.by_winograd, cpu_conv._is_direct, _strips.STRIPS_CHUNK_BYTES,
         _strips.STRIPS_STAGED_BYTES, _strips.STRIPS_PER_PASS) = saved
    assert work[0] is _strips._strip_forward_items
    assert work[3][-2] == min(chunk, channels)
    if out_h % 2:
        assert work[3][-3] == 1
    check_against_loops(problem)


@_AVX512
@pytest.mark.parametrize("x_shape, weight_shape, stride, padding, taken", [
    ((32, 32, 64, 64), (64, 32, 3, 3), 2, 1, True),  # the stride-2 reference shape
    ((1, 3, 224, 224), (64, 3, 7, 7), 2, 3, True),  # ResNet's stem
    ((1, 64, 56, 56), (128, 64, 3, 3), 2, 1, True),  # ResNet-18's stride-2 layers at batch 1
    ((1, 128, 28, 28), (256, 128, 3, 3), 2, 1, True),  # ... 1.2 MB of weights
    ((1, 256, 14, 14), (512, 256, 3, 3), 2, 1, False),  # ... 4.7 MB of weights for one sample
    ((1, 256, 14, 14), (256, 256, 3, 3), 1, 1, False),  # its 14x14 3x3 layers at batch 1: 2.4 MB
    ((2, 256, 14, 14), (256, 256, 3, 3), 1, 1, True),  # ... at batch 2: 1.2 MB a sample
    ((16, 256, 14, 14), (512, 256, 3, 3), 2, 1, True),  # ... for 16, onto 7x7
    ((1, 512, 9, 9), (512, 512, 3, 3), 1, 0, False),  # 9.4 MB for one sample
    ((32, 64, 10, 10), (64, 64, 3, 3), 1, 0, False),  # 8x8 outputs at stride 1, 576 taps: the panels'
    ((32, 128, 10, 10), (128, 128, 3, 3), 1, 0, True),  # ... 1,152 taps
    ((32, 64, 18, 18), (64, 64, 3, 3), 2, 1, True),  # 8x8 outputs at stride 2
    ((32, 64, 6, 6), (64, 64, 3, 3), 1, 0, False),  # 4x4 outputs at stride 1, 576 taps
    ((16, 256, 6, 6), (256, 256, 3, 3), 1, 0, False),  # ... of 2,304 taps: fewer than 49 pixels
    ((16, 256, 15, 15), (256, 256, 3, 3), 2, 0, True),  # 7x7 outputs (49 pixels) at stride 2
    ((64, 16, 32, 32), (32, 16, 3, 3), 1, 1, False),  # the CIFAR-sized 3x3 at stride 1: F(2x2, 3x3)
    ((1, 64, 56, 56), (64, 64, 3, 3), 1, 1, False),  # ResNet-18's at 56x56, batch 1 (64 channels): F(2x2, 3x3)
    ((16, 128, 28, 28), (128, 128, 3, 3), 1, 1, False),  # ... at 28x28, batch 16 (3,136 tiles): F(2x2, 3x3)
    ((1, 128, 28, 28), (128, 128, 3, 3), 1, 1, True),  # ... at batch 1 (196 tiles): strips
    ((16, 256, 14, 14), (256, 256, 3, 3), 1, 1, True),  # ... at 14x14, batch 16 (784 tiles): strips
    ((4, 6, 20, 20), (16, 6, 5, 5), 1, 0, False),  # 16 filters fill 16 of 32 lanes
    ((4, 6, 20, 20), (24, 6, 5, 5), 1, 0, True),  # 24 of 32
    ((4, 6, 20, 20), (40, 6, 5, 5), 1, 0, False),  # 40 of 64
    ((4, 16, 32, 32), (32, 16, 1, 1), 2, 0, False),  # a 1x1 window
    ((4, 16, 32, 32), (32, 16, 3, 3), 3, 1, False),  # a stride of 3 along the rows
    ((4, 16, 16, 16), (32, 4, 3, 3), 1, 1, False)])  # four groups
def test_strips_rule(x_shape, weight_shape, stride, padding, taken):
    """Which convolutions take the strips: float32, one group, wider than 1x1, a stride of 1 or
    2 along the rows, filters that fill three quarters of their pairs' lanes, at least 49 output
    pixels a plane, at stride 1 onto small outputs at least ``STRIPS_SMALL_MIN_TAPS`` taps, at
    most ``STRIPS_MAX_SAMPLE_WEIGHT_BYTES`` of weights a sample, and where F(2x2, 3x3) would
    take it, only with many channels and few tiles (:func:`before_winograd`); never float64,
    and never with ``STRIPS`` off."""
    check_rule(_strips, "STRIPS", _strips._strip_forward_items, x_shape, weight_shape, stride, padding, taken)


@_AVX512
@pytest.mark.parametrize("x_shape, weight_shape, stride, padding, taken", [
    ((32, 32, 64, 64), (64, 32, 3, 3), 2, 1, True),  # the stride-2 reference shape: else the panels
    ((32, 16, 32, 32), (32, 16, 5, 5), 1, 2, True),  # 5x5 windows: else the panels
    ((1, 128, 28, 28), (128, 128, 3, 3), 1, 1, False),  # ResNet-18 at 28x28, batch 1: else F(2x2, 3x3)
    ((1, 128, 28, 28), (256, 128, 3, 3), 2, 1, False),  # ... its stride-2 layer: else im2col and GEMM
    ((1, 3, 224, 224), (64, 3, 7, 7), 2, 3, False),  # ... its stem: else the tiles
    ((16, 256, 14, 14), (512, 256, 3, 3), 2, 1, False)])  # ... onto 7x7, batch 16: else samples innermost
def test_strips_only_for_the_panels_where_vectors_are_halved(x_shape, weight_shape, stride, padding, taken):
    """On a processor whose 512-bit vectors are two halves (Zen 4), ``STRIPS_ONLY_FOR_PANELS``
    (its default there) keeps the strips only where the panels would take the convolution without
    them (all six shapes take the strips with the switch off)."""
    from cnnlab.kernels.cpu._microkernel import halved_vectors

    assert halved_vectors("znver4") and not halved_vectors("znver5") and not halved_vectors("skylake-avx512")
    assert forward_items(x_shape, weight_shape, stride, padding) is _strips._strip_forward_items
    _strips.STRIPS_ONLY_FOR_PANELS = True  # (tests/conftest.py puts it back)
    assert (forward_items(x_shape, weight_shape, stride, padding) is _strips._strip_forward_items) == taken
    saved, _strips.STRIPS = _strips.STRIPS, False
    try:
        alternative = forward_items(x_shape, weight_shape, stride, padding)
    finally:
        _strips.STRIPS = saved
    assert (alternative is cpu_conv._panel_forward_items) == taken


@pytest.mark.parametrize("samples, filters, out_h, workers, staged, expected", [
    (32, 64, 32, 2, 1 << 30, (64, 32)),  # whole samples: 32 samples, two pairs of vectors
    (32, 64, 32, 2, 40 * 64 * 4 * (2 + 16), (128, 16)),  # an item's input rows past the limit: two blocks
    (1, 64, 28, 2, 1 << 30, (4, 14)),  # one sample, two pairs: blocks of 14 rows make four items
    (1, 32, 28, 2, 1 << 30, (4, 7)),  # one pair: four blocks
    (1, 32, 3, 2, 1 << 30, (3, 1)),  # no more blocks than rows
])
def test_strip_work_items(samples, filters, out_h, workers, staged, expected):
    """Items of the strips' path: whole samples where they make two items a thread, else as many
    blocks of rows as do, and fewer rows where an item's input rows (40 channels 64 wide, stride
    1, a 3x3 window) would be more than ``STRIPS_STAGED_BYTES``."""
    saved, _strips.STRIPS_STAGED_BYTES = _strips.STRIPS_STAGED_BYTES, staged
    try:
        assert _strips.strip_work(samples, filters, 40, out_h, 64, 1, 2, workers) == expected
    finally:
        _strips.STRIPS_STAGED_BYTES = saved


def test_strip_geometry():
    """Chunks of channels whose weights (their taps, 32 filters) fit ``STRIPS_CHUNK_BYTES``, at
    least one and no more than there are; passes of whole rows of at least
    ``STRIPS_PER_PASS`` strips."""
    saved = _strips.STRIPS_CHUNK_BYTES, _strips.STRIPS_PER_PASS
    _strips.STRIPS_CHUNK_BYTES, _strips.STRIPS_PER_PASS = 16 * 1024, 4
    try:
        assert _strips.strip_geometry(32, 32, 9) == (14, 1)  # 14 channels of 9 taps: 16,128 bytes
        assert _strips.strip_geometry(3, 112, 49) == (2, 1)  # 2 of a 7x7 window's
        assert _strips.strip_geometry(3, 112, 200) == (1, 1)  # one, whatever its size
        assert _strips.strip_geometry(8, 7, 9) == (8, 4)  # all 8; one strip a row: four rows a pass
        assert _strips.strip_geometry(64, 17, 9) == (14, 2)  # three strips a row: two rows
    finally:
        _strips.STRIPS_CHUNK_BYTES, _strips.STRIPS_PER_PASS = saved
