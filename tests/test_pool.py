"""Every pooling mode against a plain NumPy loop, and the textbook max pool."""

import naive
import numpy as np
import pytest
from hypothesis import given
from strategies import arrays, pool_geometries

import cnnlab
import cnnlab.functional as F


@given(pool_geometries())
def test_pool2d_matches_reference_and_output_size(g):
    rng = np.random.default_rng(0)
    x = arrays(rng, (g["samples"], g["channels"], g["height"], g["width"]), g["dtype"])
    out = F.pool2d(x, g["kernel"], g["stride"], g["padding"], g["mode"])
    stride = g["stride"] or g["kernel"]
    reference = naive.pool2d(x, g["kernel"], stride, g["padding"], g["mode"])
    assert out.dtype == g["dtype"]
    tol = 1e-5 if g["dtype"] == np.float32 else 1e-12
    np.testing.assert_allclose(out, reference, rtol=tol, atol=tol)
    expected = tuple(cnnlab.output_size(s, k, st, p)
                     for s, k, st, p in zip((g["height"], g["width"]), g["kernel"], stride, g["padding"]))
    assert out.shape == (g["samples"], g["channels"]) + expected


def test_textbook_max_pool_4x4_window_2_stride_2():
    x = np.array([[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]], dtype=np.float32)
    out = F.max_pool2d(x[None, None], 2, 2)
    np.testing.assert_array_equal(out[0, 0], [[6, 8], [3, 4]])
    assert out.shape == (1, 1, 2, 2)


def test_named_modes_agree_with_pool2d():
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 6))
    np.testing.assert_array_equal(F.max_pool2d(x, 3, 2, 1), F.pool2d(x, 3, 2, 1, "max"))
    np.testing.assert_array_equal(F.avg_pool2d(x, 3, 2, 1), F.pool2d(x, 3, 2, 1, "avg"))
    np.testing.assert_array_equal(F.min_pool2d(x, 3, 2, 1), F.pool2d(x, 3, 2, 1, "min"))


def test_avg_counts_padded_zeros_and_max_ignores_padding():
    x = -np.ones((1, 1, 2, 2))
    np.testing.assert_array_equal(F.max_pool2d(x, 3, 1, 1), -np.ones((1, 1, 2, 2)))
    np.testing.assert_allclose(F.avg_pool2d(x, 3, 1, 1), np.full((1, 1, 2, 2), -4 / 9))
    np.testing.assert_array_equal(F.min_pool2d(-x, 3, 1, 1), np.ones((1, 1, 2, 2)))


def test_median_of_even_window_is_lower_middle():
    x = np.array([[4.0, 1.0], [3.0, 2.0]]).reshape(1, 1, 2, 2)
    assert F.pool2d(x, 2, mode="median")[0, 0, 0, 0] == 2.0


def test_lp_is_euclidean_norm():
    x = np.array([[3.0, 4.0], [0.0, 0.0]]).reshape(1, 1, 2, 2)
    assert F.pool2d(x, 2, mode="lp")[0, 0, 0, 0] == 5.0


def test_max_pool_propagates_nan():
    x = np.array([[1.0, np.nan], [3.0, 2.0]]).reshape(1, 1, 2, 2)
    assert np.isnan(F.max_pool2d(x, 2)[0, 0, 0, 0])
    assert np.isnan(F.min_pool2d(x, 2)[0, 0, 0, 0])


def test_global_avg_pool():
    x = np.random.default_rng(3).standard_normal((3, 4, 5, 6)).astype(np.float32)
    out = F.global_avg_pool2d(x)
    assert out.shape == (3, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, x.mean(axis=(2, 3)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(kernel_size=2, mode="mean"), ValueError, "mode"),
    (dict(kernel_size=0), ValueError, "kernel_size"),
    (dict(kernel_size=2, stride=0), ValueError, "stride"),
    (dict(kernel_size=2, padding=2), ValueError, "padding"),
    (dict(kernel_size=3, padding=-1), ValueError, "padding"),
    (dict(kernel_size=2, padding=1, mode="median"), ValueError, "padding"),
    (dict(kernel_size=2, padding=1, mode="lp"), ValueError, "padding"),
    (dict(kernel_size=2, padding="same"), ValueError, "padding"),
    (dict(kernel_size=9), ValueError, "kernel_size=9"),
    (dict(kernel_size=2.0), TypeError, "kernel_size"),
])
def test_bad_pool_arguments(kwargs, error, words):
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(error, match=words):
        F.pool2d(x, **kwargs)


def test_windows_by_lines_equal_the_general_kernel(monkeypatch):
    """The kernel by lines (ResNet's pooling, OCR networks' 2x2 at stride 1, up to 3x3 three taps
    a loop; YOLO's 5x5 at stride 1 and other larger windows a pass a row and a column) gives
    what the general one gives, bitwise, for max and min, with NaN and infinities among the
    values, at strides 1 to 3, every padding the window allows, ceil_mode or not, on planes from
    1 to 9 pixels a side; and the dispatch takes it (but for 2x2 at stride 2 without padding,
    which has a kernel of its own)."""
    import itertools

    from cnnlab.kernels.cpu import pool as cpu_pool

    taken = []
    original = cpu_pool._extreme_pool_lines
    monkeypatch.setattr(cpu_pool, "_extreme_pool_lines", lambda *a: (taken.append(a[2:4]), original(*a)))
    rng = np.random.default_rng(7)
    for height, width in ((1, 1), (2, 5), (3, 3), (7, 9), (9, 4)):
        x = rng.standard_normal((2, 3, height, width)).astype(np.float32)
        x.flat[rng.integers(0, x.size, 3)] = [np.nan, np.inf, -np.inf]
        windows = ((3, 3), (2, 2), (2, 3), (3, 1), (1, 2), (5, 5), (4, 2), (1, 6), (7, 3))
        for (kh, kw), stride, ceil_mode, mode in itertools.product(windows, (1, 2, 3), (False, True), ("max", "min")):
            for top, left in itertools.product(range(kh // 2 + 1), range(kw // 2 + 1)):
                if kh > height + 2 * top or kw > width + 2 * left:
                    continue
                out = F.pool2d(x, (kh, kw), stride, ((top, top), (left, left)), mode, ceil_mode=ceil_mode)
                general = np.empty_like(out)
                code = cpu_pool.POOL_MAX if mode == "max" else cpu_pool.POOL_MIN
                cpu_pool._extreme_pool_planes(x, general, cpu_pool._NO_INDICES, kh, kw, stride, stride, top, left, 1, 1,
                                              code, False, 0, 6)
                np.testing.assert_array_equal(out, general,
                                              err_msg=f"{height}x{width} {kh}x{kw} s{stride} {top},{left} {mode}")
    assert set(windows) <= set(taken)
