"""cnnlab.filters equals scipy.signal in every mode and boundary, dtypes included."""

import naive
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import signal

from cnnlab import filters
from cnnlab.filters import KERNELS

MODES = ["full", "same", "valid"]
BOUNDARIES = ["fill", "wrap", "symm"]
DTYPES = [np.uint8, np.int16, np.int32, np.int64, np.uint32, np.float32, np.float64, np.complex128]


@st.composite
def filter_problems(draw):
    mode = draw(st.sampled_from(MODES))
    shape1 = (draw(st.integers(1, 7)), draw(st.integers(1, 7)))
    shape2 = (draw(st.integers(1, 9)), draw(st.integers(1, 9)))  # may exceed the image
    if mode == "valid" and not (all(a >= b for a, b in zip(shape1, shape2))
                                or all(b >= a for a, b in zip(shape1, shape2))):
        shape2 = (min(shape2[0], shape1[0]), min(shape2[1], shape1[1]))
    return dict(mode=mode, boundary=draw(st.sampled_from(BOUNDARIES)), shape1=shape1, shape2=shape2,
                dtype1=draw(st.sampled_from(DTYPES)), dtype2=draw(st.sampled_from(DTYPES)),
                fillvalue=draw(st.integers(0, 3)), seed=draw(st.integers(0, 2**16)))


def random_array(rng, shape, dtype):
    if np.dtype(dtype).kind in "iu":
        return rng.integers(0, 50, size=shape).astype(dtype)
    if np.dtype(dtype).kind == "c":
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def assert_same_as_scipy(ours, theirs):
    assert ours.dtype == theirs.dtype
    assert ours.shape == theirs.shape
    if theirs.dtype.kind in "iu":
        np.testing.assert_array_equal(ours, theirs)
    else:
        tol = 1e-4 if theirs.dtype in (np.float32, np.complex64) else 1e-10
        np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol)


@given(filter_problems())
def test_correlate2d_and_convolve2d_equal_scipy(p):
    rng = np.random.default_rng(p["seed"])
    in1 = random_array(rng, p["shape1"], p["dtype1"])
    in2 = random_array(rng, p["shape2"], p["dtype2"])
    for ours, theirs in [(filters.correlate2d, signal.correlate2d), (filters.convolve2d, signal.convolve2d)]:
        args = (in1, in2, p["mode"], p["boundary"], p["fillvalue"])
        assert_same_as_scipy(ours(*args), theirs(*args))


@given(filter_problems())
def test_correlate2d_equals_definition(p):
    rng = np.random.default_rng(p["seed"])
    in1 = random_array(rng, p["shape1"], np.float64)
    in2 = random_array(rng, p["shape2"], np.float64)
    if p["mode"] == "valid" and not all(a >= b for a, b in zip(in1.shape, in2.shape)):
        return  # scipy swaps the operands there; covered by the test above
    expected = naive.correlate2d_loops(in1, in2, p["mode"], p["boundary"], p["fillvalue"])
    np.testing.assert_allclose(filters.correlate2d(in1, in2, p["mode"], p["boundary"], p["fillvalue"]),
                               expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("boundary", BOUNDARIES)
@pytest.mark.parametrize("mode", MODES)
def test_kernel_larger_than_image(mode, boundary):
    rng = np.random.default_rng(0)
    image = rng.standard_normal((3, 2))
    kernel = rng.standard_normal((7, 8))
    for ours, theirs in [(filters.correlate2d, signal.correlate2d), (filters.convolve2d, signal.convolve2d)]:
        assert_same_as_scipy(ours(image, kernel, mode, boundary, 1.5), theirs(image, kernel, mode, boundary, 1.5))


def test_uint8_arithmetic_wraps_like_scipy():
    image = np.full((4, 4), 200, dtype=np.uint8)
    kernel = np.ones((2, 2), dtype=np.uint8)
    assert_same_as_scipy(filters.correlate2d(image, kernel), signal.correlate2d(image, kernel))


def test_textbook_edge_filter_gives_175():
    patch = np.array([[150, 45, 25], [250, 200, 80], [215, 250, 235]])
    out = filters.correlate2d(patch, KERNELS["edge"], mode="valid")
    assert out.shape == (1, 1) and out[0, 0] == 175
    assert KERNELS["edge"].sum() == 0  # an edge filter's weights sum to zero


def test_kernels_are_the_classic_ones():
    assert set(KERNELS) == {"identity", "edge", "sobel_x", "sobel_y", "sharpen", "box_blur", "gaussian_blur"}
    np.testing.assert_array_equal(KERNELS["sobel_y"], [[-1, -2, -1], [0, 0, 0], [1, 2, 1]])
    np.testing.assert_array_equal(KERNELS["sobel_x"], KERNELS["sobel_y"].T)
    assert KERNELS["box_blur"].sum() == pytest.approx(1) and KERNELS["gaussian_blur"].sum() == pytest.approx(1)
    assert KERNELS["sharpen"].sum() == 1
    with pytest.raises(ValueError):
        KERNELS["edge"][0, 0] = 1  # read-only


def test_identity_kernel_returns_the_image():
    image = np.random.default_rng(1).random((6, 5))
    np.testing.assert_array_equal(filters.apply(image, "identity"), image)


def test_apply_grayscale_and_rgb_per_channel():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(9, 7, 3)).astype(np.uint8)
    out = filters.apply(rgb, "sobel_x")
    assert out.shape == rgb.shape and out.dtype == np.float64
    for c in range(3):
        expected = signal.correlate2d(rgb[:, :, c].astype(np.float64), KERNELS["sobel_x"], "same")
        np.testing.assert_allclose(out[:, :, c], expected)
    gray = rgb[:, :, 0].astype(np.float32)
    assert filters.apply(gray, "edge").dtype == np.float32
    np.testing.assert_allclose(filters.apply(gray, [[0, 1]]), signal.correlate2d(gray, [[0, 1]], "same"))


def test_apply_on_a_real_image():
    from skimage import data

    camera = data.camera()
    edges = filters.apply(camera, "edge", mode="valid")
    assert edges.shape == (camera.shape[0] - 2, camera.shape[1] - 2)
    np.testing.assert_allclose(edges, signal.correlate2d(camera.astype(float), KERNELS["edge"], "valid"))


@pytest.mark.parametrize("call, error, words", [
    (lambda: filters.correlate2d(np.ones(3), np.ones((2, 2))), ValueError, "in1 must be a 2-D"),
    (lambda: filters.correlate2d(np.ones((3, 3)), np.ones((2, 2, 1))), ValueError, "in2 must be a 2-D"),
    (lambda: filters.correlate2d(np.ones((3, 3)), np.ones((2, 2)), mode="fulll"), ValueError, "mode"),
    (lambda: filters.correlate2d(np.ones((3, 3)), np.ones((2, 2)), boundary="reflect"), ValueError, "boundary"),
    (lambda: filters.correlate2d(np.ones((3, 3)), np.ones((2, 2)), fillvalue=[1, 2]), ValueError, "fillvalue"),
    (lambda: filters.correlate2d(np.ones((3, 3)), np.ones((2, 2)), fillvalue="x"), ValueError, "malformed string"),  # as scipy.signal
    (lambda: filters.correlate2d(np.ones((3, 3), np.uint8), np.ones((2, 2), np.uint8), fillvalue=300),
     ValueError, "fillvalue"),
    (lambda: filters.correlate2d(np.ones((3, 1)), np.ones((1, 3)), mode="valid"), ValueError, "valid"),
    (lambda: filters.correlate2d(np.ones((0, 3)), np.ones((1, 1))), ValueError, "in1 is empty"),
    (lambda: filters.correlate2d(np.ones((3, 3), bool), np.ones((2, 2), bool)), TypeError, "dtype"),
    (lambda: filters.correlate2d(np.ones((3, 3), np.float16), np.ones((2, 2), np.float16)), TypeError, "dtype"),
    (lambda: filters.correlate2d("abc", np.ones((2, 2))), TypeError, "in1"),
    (lambda: filters.correlate2d(np.array([["a"]]), np.ones((1, 1))), TypeError, "in1 must be numeric"),
    (lambda: filters.apply(np.ones((3, 3)), "laplace"), ValueError, "kernel must be one of"),
    (lambda: filters.apply(np.ones(3), "edge"), ValueError, "image must have shape"),
])
def test_bad_filter_input(call, error, words):
    with pytest.raises(error, match=words):
        call()


@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning")
def test_complex_fillvalue_on_real_data_is_refused_like_scipy():
    with pytest.raises(ValueError):
        signal.correlate2d(np.ones((2, 2)), np.ones((2, 2)), fillvalue=2 + 1j)
    with pytest.raises(ValueError, match="fillvalue"):
        filters.correlate2d(np.ones((2, 2)), np.ones((2, 2)), fillvalue=2 + 1j)


def test_fractional_fillvalue_on_integers_truncates_like_scipy():
    image = np.ones((2, 2), np.uint8)
    assert_same_as_scipy(filters.correlate2d(image, image, fillvalue=1.5),
                         signal.correlate2d(image, image, fillvalue=1.5))


@pytest.mark.filterwarnings("ignore::numpy.exceptions.ComplexWarning", "ignore::RuntimeWarning")
@pytest.mark.parametrize("fillvalue", ["x", [1, 2], [], object(), 1 + 2j, np.nan, None, "3", b"3", True,
                                       np.float32(7), 1e300, "1+2j"])
@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_bad_fillvalues_raise_what_scipy_raises(fillvalue, dtype):
    """Same exception type and message as scipy.signal for every fill value it refuses, the same
    result for every one it takes."""
    image, kernel = np.arange(9, dtype=dtype).reshape(3, 3), np.ones((2, 2), dtype)
    try:
        expected = signal.correlate2d(image, kernel, mode="full", fillvalue=fillvalue)
    except (ValueError, TypeError) as exc:
        with pytest.raises(type(exc)) as caught:
            filters.correlate2d(image, kernel, mode="full", fillvalue=fillvalue)
        assert str(caught.value) == str(exc)
    else:
        assert_same_as_scipy(filters.correlate2d(image, kernel, mode="full", fillvalue=fillvalue), expected)
