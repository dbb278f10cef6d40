"""3x3 convolutions at stride 1 by F(2x2, 3x3) (``cnnlab.kernels.cpu._winograd``): the transforms
compiled and in NumPy against their matrices, the weights' transform, the whole convolution
against loops for every geometry the path takes, and the rules that choose it."""

import naive
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numba import njit

import cnnlab.functional as F
from cnnlab.functional.conv import conv_geometry
from cnnlab.kernels import EPILOGUE_CLIP, EPILOGUE_LEAKY_RELU, EPILOGUE_NONE
from cnnlab.kernels.cpu import _winograd as winograd
from cnnlab.kernels.cpu import conv as cpu_conv
from cnnlab.kernels.cpu._microkernel import MR, VECTOR_BYTES, available

pytestmark = pytest.mark.skipif(not available(), reason="the transforms' products need AVX2 and FMA")

B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)


@njit(cache=False)
def _compiled_input(padded, start, pitch, plane, v, v_start, v_step, count):
    winograd.winograd_input(padded, start, pitch, plane, v, v_start, v_step, count)


@njit(cache=False)
def _compiled_store(m, m_start, m_step, y, y_start, y_pitch, count, width, rows, scale, shift, residual, has_residual,
                    finish, clip, low, high):
    winograd.winograd_store(m, m_start, m_step, y, y_start, y_pitch, count, width, rows, scale, shift, residual,
                            has_residual, finish, clip, low, high)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 3), st.integers(0, 5), st.integers(1, 7), st.sampled_from(["float32", "float64"]),
       st.integers(0, 2**16))
def test_input_transform_matches_its_matrices(count, start, extra, dtype, seed):
    """``V = B^T d B`` of each tile's 4x4 patch, its columns 0 and 2 from the even plane (at
    the tile and the next), 1 and 3 from the odd one, every position ``v_step`` apart."""
    rng = np.random.default_rng(seed)
    tiles = count * VECTOR_BYTES // np.dtype(dtype).itemsize
    pitch = tiles + extra
    plane = 4 * pitch + 3
    padded = rng.standard_normal(start + 2 * plane + 8).astype(dtype)
    v_start, v_step = 2, tiles + 5
    v = rng.standard_normal(v_start + 16 * v_step).astype(dtype)
    expected = v.astype(np.float64)
    for t in range(tiles):
        d = np.empty((4, 4))
        for r in range(4):
            row = start + r * pitch + t
            d[r] = padded[row], padded[row + plane], padded[row + 1], padded[row + plane + 1]
        values = B_T @ d @ B_T.T
        for xi in range(16):
            expected[v_start + xi * v_step + t] = values[xi // 4, xi % 4]
    tolerance = 1e-6 if dtype == "float32" else 1e-13
    for run in (_compiled_input, winograd.winograd_input):
        out = v.copy()
        run(padded, start, pitch, plane, out, v_start, v_step, count)
        np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(0, 4), st.integers(0, 40), st.integers(1, 2),
       st.sampled_from(["none", "finish", "residual", "clip"]), st.sampled_from(["float32", "float64"]),
       st.integers(0, 2**16))
@example(2, 1, 3, 1, "clip", "float32", 0)  # an odd end in the last vector, one row
def test_output_store_matches_its_matrices(count, m_start, short, rows, epilogue, dtype, seed):
    """``Y = A^T M A`` of each tile's positions, ``m_step`` apart, its 2x2 outputs side by side
    in row ``r`` at ``y_start + r * y_pitch``: only the ``width`` columns (``short`` fewer than
    the vectors' tiles make, an odd count too) and the ``rows`` rows asked for are written,
    finished (scale, shift, the residual read where the output goes, the clip) or not."""
    side = 4
    rng = np.random.default_rng(seed)
    tiles = count * VECTOR_BYTES // np.dtype(dtype).itemsize
    width = max(1, 2 * tiles - short)
    m_step, y_start, y_pitch = tiles + 3, 1, 2 * tiles + 3
    m = rng.standard_normal(m_start + side * side * m_step).astype(dtype)
    y = rng.standard_normal(y_start + 2 * y_pitch + 2 * tiles).astype(dtype)
    residual = rng.standard_normal(y.shape).astype(dtype)
    scale, shift = np.dtype(dtype).type(rng.uniform(0.5, 2)), np.dtype(dtype).type(rng.standard_normal())
    finish, has_residual, clip = epilogue != "none", epilogue in ("residual", "clip"), epilogue == "clip"
    low, high = -0.25, 0.5
    expected = y.astype(np.float64)
    for t in range(tiles):
        positions = np.array([m[m_start + xi * m_step + t] for xi in range(side * side)], np.float64)
        values = A_T @ positions.reshape(side, side) @ A_T.T
        for r in range(rows):
            for q in range(2):
                at = y_start + r * y_pitch + 2 * t + q
                if 2 * t + q < width:
                    value = values[r, q]
                    if finish:
                        value = float(scale) * value + float(shift) + (residual[at] if has_residual else 0)
                        value = min(max(value, low), high) if clip else value
                    expected[at] = value
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    for run in (_compiled_store, winograd.winograd_store):
        out = y.copy()
        run(m, m_start, m_step, out, y_start, y_pitch, count, width, rows, scale, shift, residual, has_residual, finish,
            clip, low, high)
        np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("filters, channels, groups", [(5, 3, 1), (8, 2, 2), (4, 1, 4), (14, 3, 2)])
@pytest.mark.parametrize("workers, compiled_shares", [(1, False), (2, False), (2, True)])
def test_weights_transform_is_G_g_Gt_packed_by_filter_blocks(filters, channels, groups, workers, compiled_shares,
                                                            monkeypatch):
    """Every group's blocks, on one thread or shared between two (the threshold at one pair), by
    the kernels' team or on the threading layer (an inference plan's call)."""
    monkeypatch.setattr(winograd, "WINOGRAD_SHARED_PAIRS", 1)
    rng = np.random.default_rng(filters)
    weight = rng.standard_normal((filters, channels, 3, 3))
    packed = winograd.winograd_weights(weight, groups, workers, compiled_shares)
    per_group = filters // groups
    blocks = -(-per_group // MR)
    size = blocks * MR * channels
    assert packed.shape == (groups * 16 * size,)
    for f in range(filters):
        g, row = divmod(f, per_group)
        for c in range(channels):
            u = G @ weight[f, c] @ G.T
            for xi in range(16):
                at = (g * 16 + xi) * size + (row // MR) * MR * channels + c * MR + row % MR
                assert packed[at] == pytest.approx(u[xi // 4, xi % 4], abs=1e-12)
    for g in range(groups):  # the rows past a group's filters: zeros
        for xi in range(16):
            last = packed[(g * 16 + xi) * size + (blocks - 1) * MR * channels:][:MR * channels].reshape(channels, MR)
            assert not last[:, per_group - (blocks - 1) * MR:].any()


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 17), st.integers(1, 23), st.integers(1, 7), st.integers(1, 10),
       st.integers(0, 3), st.integers(0, 3), st.integers(1, 2), st.sampled_from(["whole", "chunks", "split"]),
       st.sampled_from(["float32", "float64"]), st.booleans(), st.sampled_from(["relu", "none", "leaky"]))
@example(1, 5, 5, 3, 5, 1, 1, 1, "split", "float32", True, "relu")  # odd output rows and columns, one image on two threads
@example(2, 9, 20, 2, 13, 0, 2, 2, "chunks", "float64", False, "leaky")  # one tile row a chunk, groups, no padding across
def test_convolution_by_winograd_matches_loops(samples, height, width, channels, filters, pad_h, pad_w, groups,
                                               blocks, dtype, with_residual, activation):
    """Forced for every size (the rule not asked): odd and even outputs, outputs
    narrower than a tile group or than a vector, paddings of 0 to 3 on either axis, groups,
    filter counts that are not a multiple of the kernel's four rows, one tile row a chunk, an
    image's tile rows split between items, both dtypes, with a residual and an activation in the
    epilogue: a clip and none (applied as the outputs are stored), a leaky ReLU (applied to the
    rows after)."""
    from hypothesis import assume

    assume(height + 2 * pad_h >= 3 and width + 2 * pad_w >= 3)
    rng = np.random.default_rng(samples * 1000 + height * 100 + width * 10 + channels)
    x = rng.standard_normal((samples, channels * groups, height, width)).astype(dtype)
    w = rng.standard_normal((filters * groups, channels, 3, 3)).astype(dtype)
    b = rng.standard_normal(filters * groups).astype(dtype)
    padding = ((pad_h, pad_h), (pad_w, pad_w))
    reference = naive.conv2d_loops(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), (1, 1),
                                   padding, (1, 1), groups)
    residual = rng.standard_normal(reference.shape).astype(dtype) if with_residual else None
    rule, direct, budget = cpu_conv.by_winograd, cpu_conv._is_direct, winograd.WINOGRAD_PLANES_BYTES
    blocks = cpu_conv._by_channel_blocks
    cpu_conv._by_channel_blocks = lambda *arguments: False  # (depthwise ones too)
    cpu_conv.by_winograd = lambda *arguments: True  # (every geometry here is 3x3 at stride 1)
    cpu_conv._is_direct = lambda *arguments: False
    if blocks == "chunks":
        winograd.WINOGRAD_PLANES_BYTES = 1
    try:
        out_shape = reference.shape
        resolved = conv_geometry(x.shape, w.shape, x.dtype, 1, padding, 1, groups)
        workers = 2 * samples * groups if blocks == "split" else resolved.args[-1]
        work = cpu_conv._forward_work(x.shape, w.shape, out_shape, *resolved.args[:-1], workers, dtype=x.dtype)
        out = np.empty(out_shape, dtype)
        scale = np.ones(filters * groups, dtype)
        kind, low, high = {"relu": (EPILOGUE_CLIP, 0.0, np.inf), "none": (EPILOGUE_NONE, 0.0, 0.0),
                           "leaky": (EPILOGUE_LEAKY_RELU, 0.125, 0.0)}[activation]
        cpu_conv._run_forward(work, x, w, scale, b, out if residual is None else residual, residual is not None,
                              kind, low, high, out)
    finally:
        cpu_conv.by_winograd, cpu_conv._is_direct, winograd.WINOGRAD_PLANES_BYTES = rule, direct, budget
        cpu_conv._by_channel_blocks = blocks
    assert work[0] is winograd._winograd_forward_items
    tiles_h = (out_shape[2] + 1) // 2
    if blocks == "chunks":
        assert work[3][-1] == 1  # (one tile row's planes at a time)
    if blocks == "split":
        assert work[3][-2] == -(-tiles_h // -(-workers // (samples * groups)))  # (each image in parts)
    expected = reference + (0 if residual is None else residual)
    expected = {"relu": np.maximum(expected, 0), "none": expected,
                "leaky": np.where(expected < 0, 0.125 * expected, expected)}[activation]
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(out, expected, rtol=tolerance, atol=tolerance)


def test_items_run_as_python_give_the_compiled_results():
    """The items function run as plain Python (as kernels run interpreted, the transforms and the
    products in NumPy) against the compiled one."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8, 9, 11)).astype(np.float32)
    w = rng.standard_normal((10, 8, 3, 3)).astype(np.float32)
    packed = winograd.winograd_weights(w, 1)
    scale, shift = np.ones(10, np.float32), rng.standard_normal(10).astype(np.float32)
    outs = []
    for run in (winograd._winograd_forward_items, winograd._winograd_forward_items.py_func):
        out = np.empty((2, 10, 9, 11), np.float32)
        run(x, packed, scale, shift, out, False, 0, 0.0, 0.0, out, 1, 1, 1, 5, 2, 0, 2)
        outs.append(out)
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outs[0], F.conv2d(x, w, shift, padding=1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("group, tiles_w, channels, tile_rows, itemsize, expected", [
    (24, 28, 64, 28, 4, 6),  # ResNet's 56x56 layer: six rows of 28 tiles are seven whole groups
    (24, 16, 16, 16, 4, 15),  # the CIFAR-sized layer: every multiple of 3 rows fills whole groups; the most that fit
    (24, 28, 64, 2, 4, 2),  # no more than an item's rows
    (24, 7, 1024, 4, 4, 1),  # the planes of two tile rows past the budget: one
    (24, 12, 32, 12, 8, 12),  # float64: 12 rows of 12 tiles are six groups
    (48, 28, 64, 28, 4, 5),  # groups of 48 (AVX-512): 140 tiles leave 4 of three groups empty; 7 rows fit
    (48, 16, 16, 16, 4, 15),  # every multiple of 3 rows fills whole groups
])
def test_chunk_rows_fit_the_budget_and_leave_the_least_group_empty(monkeypatch, group, tiles_w, channels, tile_rows,
                                                                   itemsize, expected):
    monkeypatch.setattr(winograd, "WINOGRAD_TILES", group)  # (read by the Python rule, not compiled)
    rows = winograd.winograd_chunk_rows(tiles_w, channels, tile_rows, itemsize)
    assert rows == expected
    assert rows == 1 or channels * 2 * (2 * rows + 2) * (tiles_w + 1) * itemsize <= winograd.WINOGRAD_PLANES_BYTES


@pytest.mark.parametrize("weight_shape, groups, stride, dilation, out_shape, itemsize, expected", [
    ((64, 64, 3, 3), 1, (1, 1), (1, 1), (1, 64, 56, 56), 4, True),
    ((32, 16, 3, 3), 1, (1, 1), (1, 1), (3, 32, 16, 15), 4, True),  # 192 tiles (odd sides round up)
    ((32, 16, 3, 3), 1, (1, 1), (1, 1), (2, 32, 18, 18), 4, False),  # 162 tiles: too few
    ((32, 16, 3, 3), 1, (1, 1), (1, 1), (64, 32, 8, 8), 4, False),  # 1,024 tiles, but 16 an image
    ((32, 16, 3, 3), 1, (1, 1), (1, 1), (11, 32, 11, 9), 4, True),  # 30 an image (odd sides round up)
    ((64, 64, 3, 3), 1, (2, 2), (1, 1), (1, 64, 56, 56), 4, False),  # a stride
    ((64, 64, 3, 3), 1, (1, 1), (2, 2), (1, 64, 56, 56), 4, False),  # a dilation
    ((64, 64, 5, 5), 1, (1, 1), (1, 1), (1, 64, 56, 56), 4, False),  # another window
    ((64, 64, 3, 1), 1, (1, 1), (1, 1), (1, 64, 56, 56), 4, False),
    ((64, 1, 3, 3), 64, (1, 1), (1, 1), (1, 64, 56, 56), 4, False),  # depthwise
    ((8, 7, 3, 3), 1, (1, 1), (1, 1), (1, 8, 56, 56), 4, False),  # too few channels
    ((14, 16, 3, 3), 2, (1, 1), (1, 1), (1, 14, 56, 56), 4, False),  # too few filters a group
    ((256, 256, 3, 3), 1, (1, 1), (1, 1), (1, 256, 56, 56), 4, True),  # 4 MB of transformed weights
    ((512, 256, 3, 3), 2, (1, 1), (1, 1), (1, 512, 56, 56), 4, True),  # (a group's)
    ((257, 256, 3, 3), 1, (1, 1), (1, 1), (1, 257, 56, 56), 4, False),  # more
    ((256, 256, 3, 3), 1, (1, 1), (1, 1), (1, 256, 56, 56), 8, False),  # more in float64
])
def test_rule_takes_3x3_at_stride_1_with_enough_channels_and_tiles(monkeypatch, weight_shape, groups, stride, dilation,
                                                                   out_shape, itemsize, expected):
    monkeypatch.setattr(winograd, "WINOGRAD_TILES", 24)  # groups of 24 tiles (AVX2; read by the Python rule)
    assert winograd.by_winograd(weight_shape, groups, stride, dilation, out_shape, itemsize) == expected


@pytest.mark.parametrize("out_shape, expected", [
    ((11, 32, 11, 9), False),  # 30 tiles an image: fewer than a group
    ((4, 32, 14, 14), True),  # 49, and 196 in the call
    ((3, 32, 14, 14), False),  # 147 in the call
])
def test_rule_wants_a_group_of_tiles_an_image(monkeypatch, out_shape, expected):
    monkeypatch.setattr(winograd, "WINOGRAD_TILES", 48)  # groups of 48 tiles (AVX-512)
    assert winograd.by_winograd((32, 16, 3, 3), 1, (1, 1), (1, 1), out_shape, 4) == expected


def test_the_reference_layers_take_it():
    """ResNet's 56x56 layer and the CIFAR-sized one go by F(2x2, 3x3), with the weights
    transformed once a call."""
    for shape in ((32, 64, 56, 56), (64, 16, 32, 32)):
        weight_shape = (64, 64, 3, 3) if shape[1] == 64 else (32, 16, 3, 3)
        geometry = conv_geometry(shape, weight_shape, np.float32, 1, 1, 1, 1)
        work = cpu_conv._forward_work(shape, weight_shape, (shape[0], weight_shape[0], *shape[2:]), *geometry.args,
                                      dtype=np.float32)
        assert work[0] is winograd._winograd_forward_items
        assert work[5] == (winograd.winograd_weights, 1, work[2])
        assert not cpu_conv._calls_blas(work)
