"""cnnlab.data.normalize: 0-255 pixels to 0-1 floats."""

import numpy as np
import pytest

from cnnlab.data import normalize


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.uint16, np.float64])
def test_normalize_any_numeric_dtype(dtype):
    images = np.array([[0, 51], [102, 255]], dtype=dtype)
    out = normalize(images)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0, 0.2], [0.4, 1]], rtol=1e-7)
    assert normalize(images, dtype=np.float64).dtype == np.float64


def test_normalize_real_image():
    from skimage import data

    out = normalize(data.camera())
    assert out.shape == (512, 512) and 0 <= out.min() and out.max() <= 1


@pytest.mark.parametrize("bad, error, words", [
    (np.array([0, 256]), ValueError, "0-255"),
    (np.array([-1, 5]), ValueError, "0-255"),
    (np.array([np.nan, 5.0]), ValueError, "0-255"),
    (np.array([], dtype=np.uint8), ValueError, "empty"),
    ("image.png", TypeError, "images"),
    (np.array(["a"]), TypeError, "numeric"),
])
def test_normalize_bad_input(bad, error, words):
    with pytest.raises(error, match=words):
        normalize(bad)


def test_normalize_bad_dtype():
    with pytest.raises(TypeError, match="dtype"):
        normalize(np.zeros(3, np.uint8), dtype=np.int32)
