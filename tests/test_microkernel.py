"""The vector micro-kernels of ``cnnlab.kernels.cpu._microkernel`` (and the planes' pairs of
``._planes``, the tiles' kernel of ``._tiles``): compiled, and as the NumPy code that kernels run interpreted, against their
definitions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from cnnlab.kernels.cpu._microkernel import (
    DOT_ROWS,
    DOT_TAPS,
    MR,
    available,
    panel_width,
    tap_dots,
    tap_product,
    tap_rows,
)
from cnnlab.kernels.cpu._planes import deinterleave_pairs
from cnnlab.kernels.cpu._tiles import tile_product

pytestmark = pytest.mark.skipif(not available(), reason="the micro-kernels need AVX2 and FMA")


@njit(cache=False)
def _compiled_tap_product(a, a_start, b, b_start, offsets, o_start, c, c_start, k, ldc, accumulate):
    tap_product(a, a_start, b, b_start, offsets, o_start, c, c_start, k, ldc, accumulate)


@njit(cache=False)
def _compiled_tap_dots(g, g_start, ldg, b, b_start, offsets, o_start, sums, s_start, vectors):
    tap_dots(g, g_start, ldg, b, b_start, offsets, o_start, sums, s_start, vectors)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 9), st.integers(0, 5), st.integers(0, 3), st.booleans(), st.sampled_from(["float32", "float64"]),
       st.integers(0, 2**16))
def test_tap_product_matches_its_definition(k, a_start, o_start, accumulate, dtype, seed):
    """``c[c_start + r * ldc + q] (+)= sum_i a[a_start + i * MR + r] * b[b_start + offsets[o_start + i] + q]``,
    compiled and in NumPy, for every count of steps (none too), offsets read from ``o_start`` on,
    and the sums added to what ``c`` holds or written over it."""
    rng = np.random.default_rng(seed)
    width = panel_width(np.empty(0, dtype))
    a = rng.standard_normal(a_start + k * MR + 3).astype(dtype)
    b = rng.standard_normal(64 + width).astype(dtype)
    offsets = rng.integers(0, 60, o_start + k + 2).astype(np.uint64)
    ldc, c_start, b_start = width + 5, 2, 3
    c = rng.standard_normal(c_start + MR * ldc).astype(dtype)
    expected = c.copy()
    for r in range(MR):
        total = expected[c_start + r * ldc:][:width].astype(np.float64) if accumulate else np.zeros(width)
        for i in range(k):
            total += float(a[a_start + i * MR + r]) * b[b_start + int(offsets[o_start + i]):][:width]
        expected[c_start + r * ldc:][:width] = total
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    for run in (_compiled_tap_product, tap_product):
        out = c.copy()
        run(a, a_start, b, b_start, offsets, o_start, out, c_start, k, ldc, accumulate)
        np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


@njit(cache=False)
def _compiled_tap_rows(a, a_start, a_row, a_step, rows, b, b_start, offsets, o_start, columns, c, c_start, ldc, k,
                       accumulate, scale, shift, s_start, residual, r_start, finish, has_residual, clip, low, high):
    tap_rows(a, a_start, a_row, a_step, rows, b, b_start, offsets, o_start, columns, c, c_start, ldc, k, accumulate,
             scale, shift, s_start, residual, r_start, finish, has_residual, clip, low, high)


def _tap_rows_expected(a, a_start, a_row, a_step, rows, b, b_start, offsets, o_start, columns, c, c_start, ldc, k,
                       accumulate, scale, shift, s_start, residual, r_start, finish, has_residual, clip, low, high):
    """:func:`tap_rows`'s definition in float64, on a copy of ``c``; the residual read from
    ``residual`` as it was before any write (it may be ``c`` itself)."""
    out, before = c.copy(), residual.copy()
    for r in range(rows):
        total = c[c_start + r * ldc:][:columns].astype(np.float64) if accumulate else np.zeros(columns)
        for i in range(k):
            total += float(a[a_start + r * a_row + i * a_step]) * b[b_start + int(offsets[o_start + i]):][:columns]
        if finish:
            total = float(scale[s_start + r]) * total + float(shift[s_start + r])
            if has_residual:
                total += before[r_start + r * ldc:][:columns]
            if clip:
                total = np.clip(total, low, high)
        out[c_start + r * ldc:][:columns] = total
    return out


@settings(max_examples=60, deadline=None)
@given(st.integers(1, MR), st.integers(0, 2), st.integers(0, 9), st.booleans(), st.booleans(), st.booleans(),
       st.booleans(), st.booleans(), st.booleans(), st.sampled_from(["float32", "float64"]), st.integers(0, 2**16),
       st.data())
def test_tap_rows_matches_its_definition(rows, vectors_less, k, packed, accumulate, finish, has_residual, clip,
                                         residual_is_c, dtype, seed, data):
    """``c[c_start + r * ldc + q] (+)= sum_i a[a_start + r * a_row + i * a_step] * b[b_start +
    offsets[o_start + i] + q]``, finished by the epilogue's scale, shift, residual and clip,
    compiled and in NumPy: for every count of rows up to ``MR`` (the rows past them untouched),
    every count of columns from one vector to a panel (the last vector overlapping the one
    before), weights as they lie or packed, and a residual that is ``c`` itself."""
    rng = np.random.default_rng(seed)
    width = panel_width(np.empty(0, dtype))
    lanes = width // 3
    columns = data.draw(st.integers(lanes, width - lanes * vectors_less), label="columns")
    a_row, a_step = (1, MR) if packed else (k + 2, 1)
    a_start, o_start, b_start, c_start, s_start = 3, 1, 2, 5, 1
    a = rng.standard_normal(a_start + MR * (k + 2) + 4).astype(dtype)
    b = rng.standard_normal(70 + width).astype(dtype)
    offsets = rng.integers(0, 60, o_start + k + 2).astype(np.uint64)
    ldc = columns + 3
    c = rng.standard_normal(c_start + MR * ldc + 2).astype(dtype)
    scale = rng.standard_normal(s_start + MR).astype(dtype)
    shift = rng.standard_normal(s_start + MR).astype(dtype)
    low, high = -0.5, 0.75
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    for run in (_compiled_tap_rows, tap_rows):
        out = c.copy()
        residual = out if residual_is_c else rng.standard_normal(c.shape[0]).astype(dtype)
        r_start = c_start if residual_is_c else 4
        expected = _tap_rows_expected(a, a_start, a_row, a_step, rows, b, b_start, offsets, o_start, columns, out,
                                      c_start, ldc, k, accumulate, scale, shift, s_start, residual, r_start, finish,
                                      has_residual, clip, low, high)
        run(a, a_start, a_row, a_step, rows, b, b_start, offsets, o_start, columns, out, c_start, ldc, k, accumulate,
            scale, shift, s_start, residual, r_start, finish, has_residual, clip, low, high)
        np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 4), st.integers(0, 3), st.sampled_from(["float32", "float64"]), st.integers(0, 2**16))
def test_tap_dots_matches_its_definition(vectors, o_start, dtype, seed):
    """``sums[s_start + (r * DOT_TAPS + t) * lanes + l] += sum_v g[...] * b[...]``, lane by lane,
    compiled and in NumPy."""
    rng = np.random.default_rng(seed)
    lanes = panel_width(np.empty(0, dtype)) // 3
    ldg, g_start, b_start, s_start = vectors * lanes + 3, 1, 2, 4
    g = rng.standard_normal(g_start + DOT_ROWS * ldg).astype(dtype)
    b = rng.standard_normal(b_start + 40 + vectors * lanes).astype(dtype)  # (offsets below 40)
    offsets = rng.integers(0, 40, o_start + DOT_TAPS).astype(np.uint64)
    sums = rng.standard_normal(s_start + DOT_ROWS * DOT_TAPS * lanes + 2).astype(dtype)
    expected = sums.astype(np.float64)
    for r in range(DOT_ROWS):
        row = g[g_start + r * ldg:][:vectors * lanes].reshape(vectors, lanes)
        for t in range(DOT_TAPS):
            run = b[b_start + int(offsets[o_start + t]):][:vectors * lanes].reshape(vectors, lanes)
            expected[s_start + (r * DOT_TAPS + t) * lanes:][:lanes] += (row.astype(np.float64) * run).sum(axis=0)
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    for run in (_compiled_tap_dots, tap_dots):
        out = sums.copy()
        run(g, g_start, ldg, b, b_start, offsets, o_start, out, s_start, vectors)
        np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


@njit(cache=False)
def _compiled_deinterleave_pairs(source, s_start, target, first_at, second_at, count):
    deinterleave_pairs(source, s_start, target, first_at, second_at, count)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 4), st.integers(0, 5), st.integers(0, 40), st.integers(0, 40),
       st.sampled_from(["float32", "float64"]), st.integers(0, 2**16))
def test_deinterleave_pairs_matches_its_definition(count, s_start, first_at, second_at, dtype, seed):
    """``target[first_at + i] = source[s_start + 2 * i]``, ``target[second_at + i] = source[s_start
    + 2 * i + 1]`` for a whole number of vectors' pairs (none too), compiled and in NumPy, and
    nothing else written."""
    rng = np.random.default_rng(seed)
    pairs = count * panel_width(np.empty(0, dtype)) // 3
    source = rng.standard_normal(s_start + 2 * pairs + 3).astype(dtype)
    target = rng.standard_normal(max(first_at, second_at) + pairs + 2).astype(dtype)
    if abs(first_at - second_at) < pairs:  # (the two runs may not overlap)
        second_at = first_at + pairs
        target = np.concatenate([target, rng.standard_normal(pairs).astype(dtype)])
    expected = target.copy()
    expected[first_at:first_at + pairs] = source[s_start:s_start + 2 * pairs:2]
    expected[second_at:second_at + pairs] = source[s_start + 1:s_start + 2 * pairs:2]
    for run in (_compiled_deinterleave_pairs, deinterleave_pairs):
        out = target.copy()
        run(source, s_start, out, first_at, second_at, count)
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("features, block", [
    ({"avx2": True, "fma": True, "avx512f": True}, (64, 8, 3)),  # 512-bit vectors, 24 of 32 registers
    ({"avx2": True, "fma": True, "avx512f": False}, (32, 4, 3)),  # 256-bit vectors, 12 of 16 registers
    ({"avx2": True, "fma": True}, (32, 4, 3)),
])
def test_register_block_follows_the_processor(features, block):
    from cnnlab.kernels.cpu import _microkernel

    assert _microkernel.register_block(features) == block
    vector_bytes, mr, nv = _microkernel.register_block()  # this processor's, as the module took it
    assert (_microkernel.VECTOR_BYTES, _microkernel.MR, _microkernel.NV) == (vector_bytes, mr, nv)
    assert _microkernel.PANEL_BYTES == nv * vector_bytes and panel_width(np.zeros(1, np.float32)) == nv * vector_bytes // 4


@njit(cache=False)
def _compiled_tile_product(a, a_start, a_row, a_step, rows, offsets, k, w, w_start, c, c_start, ldc, filters, skip,
                           scale, shift, s_start, residual, finish, has_residual, clip, low, high):
    tile_product(a, a_start, a_row, a_step, rows, offsets, k, w, w_start, c, c_start, ldc, filters, skip, scale,
                 shift, s_start, residual, finish, has_residual, clip, low, high)


def _tile_product_expected(a, a_start, a_row, a_step, rows, offsets, k, w, w_start, c, c_start, ldc, filters, skip,
                           scale, shift, s_start, residual, finish, has_residual, clip, low, high):
    """:func:`tile_product`'s definition, value by value, in float64."""
    out = c.astype(np.float64)
    width = 16 // rows
    for f in range(filters):
        for p in range(skip, 16):
            pixel = a_start + (p // width) * a_row + (p % width) * a_step
            total = sum(float(a[pixel + int(offsets[i])]) * float(w[w_start + i * 16 + f]) for i in range(k))
            if finish:
                total = float(scale[s_start + f]) * total + float(shift[s_start + f])
                if has_residual:
                    total += float(residual[c_start + f * ldc + p])
                if clip:
                    total = min(max(total, low), high)
            out[c_start + f * ldc + p] = total
    return out


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([1, 2, 4]), st.integers(1, 2), st.integers(0, 9), st.integers(1, 16), st.integers(0, 15),
       st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.integers(0, 2**16))
def test_tile_product_matches_its_definition(rows, a_step, k, filters, skip, finish, has_residual, clip, residual_is_c,
                                             seed):
    """A tile of 16 pixels (``rows`` rows of ``16 // rows``, ``a_step`` apart along a row) and
    the filters below ``filters``, ``c[c_start + f * ldc + p] = sum_i a[pixel p + offsets[i]] *
    w[w_start + i * 16 + f]``, finished by the scale, shift, residual and clip, compiled (each of
    the six kernels) and in NumPy: the filters past ``filters`` and the pixels below ``skip``
    neither written nor read from the residual (which may be ``c`` itself)."""
    rng = np.random.default_rng(seed)
    a_start, a_row, w_start, c_start, s_start, ldc = 3, 40, 5, 2, 1, 21
    a = rng.standard_normal(a_start + 3 * a_row + 32 + 60).astype(np.float32)
    offsets = rng.integers(0, 60, k + 1).astype(np.uint64)
    w = rng.standard_normal(w_start + 16 * (k + 1)).astype(np.float32)
    c = rng.standard_normal(c_start + 16 * ldc + 3).astype(np.float32)
    scale = rng.standard_normal(s_start + 16).astype(np.float32)
    shift = rng.standard_normal(s_start + 16).astype(np.float32)
    low, high = -0.5, 0.75
    for run in (_compiled_tile_product, tile_product):
        out = c.copy()
        residual = out if residual_is_c else rng.standard_normal(c.shape[0]).astype(np.float32)
        expected = _tile_product_expected(a, a_start, a_row, a_step, rows, offsets, k, w, w_start, out, c_start, ldc,
                                          filters, skip, scale, shift, s_start, residual, finish, has_residual, clip,
                                          low, high)
        run(a, a_start, a_row, a_step, rows, offsets, k, w, w_start, out, c_start, ldc, filters, skip, scale, shift,
            s_start, residual, finish, has_residual, clip, low, high)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
