"""cnnlab.output_size: the textbook O = (W - K + 2P)/S + 1, generalized, and its errors."""

import naive
import pytest
from hypothesis import given
from hypothesis import strategies as st

import cnnlab
from cnnlab.shapes import pair, resolve_padding


@given(size=st.integers(1, 64), kernel=st.integers(1, 9), stride=st.integers(1, 5),
       padding=st.integers(0, 4), dilation=st.integers(1, 3))
def test_output_size_counts_window_positions(size, kernel, stride, padding, dilation):
    span = dilation * (kernel - 1) + 1
    if span > size + 2 * padding:
        with pytest.raises(ValueError, match="kernel_size"):
            cnnlab.output_size(size, kernel, stride, padding, dilation)
    else:
        expected = naive.output_size(size, kernel, stride, padding, dilation)
        assert cnnlab.output_size(size, kernel, stride, padding, dilation) == expected
        assert expected == (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


@given(size=st.integers(1, 64), kernel=st.integers(1, 9), stride=st.integers(1, 4),
       padding=st.integers(0, 4))
def test_textbook_formula_when_stride_divides(size, kernel, stride, padding):
    """O = (W - K + 2P) / S + 1 exactly, whenever the division is exact."""
    numerator = size - kernel + 2 * padding
    if numerator >= 0 and numerator % stride == 0:
        assert cnnlab.output_size(size, kernel, stride, padding) == numerator // stride + 1


def test_textbook_examples():
    assert cnnlab.output_size(5, 3) == 3            # 3x3 kernel on 5x5: nine positions
    assert cnnlab.output_size(5, 3, padding=1) == 5  # padded to 7x7
    assert cnnlab.output_size(4, 2, stride=2) == 2   # 2x2 max pool, stride 2
    assert cnnlab.output_size(4, 3) == 2             # 4x4 image, 3x3 kernel: 2x2
    assert cnnlab.output_size(5, 3, stride=2, padding=1) == 3
    assert cnnlab.output_size(32, 5, padding=2) == 32


@given(size=st.integers(1, 64), kernel=st.integers(1, 9), dilation=st.integers(1, 3))
def test_same_padding_keeps_size(size, kernel, dilation):
    assert cnnlab.output_size(size, kernel, 1, "same", dilation) == size
    (top, bottom), _ = resolve_padding("same", (kernel, kernel), (1, 1), (dilation, dilation))
    assert top + bottom == dilation * (kernel - 1)
    assert top == (dilation * (kernel - 1)) // 2


def test_valid_is_zero_padding():
    assert cnnlab.output_size(10, 3, padding="valid") == 8
    assert cnnlab.output_size(10, 3, padding="VALID") == 8


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(size=0, kernel_size=3), ValueError, "size"),
    (dict(size=5, kernel_size=0), ValueError, "kernel_size"),
    (dict(size=5, kernel_size=3, stride=0), ValueError, "stride"),
    (dict(size=5, kernel_size=3, stride=-1), ValueError, "stride"),
    (dict(size=5, kernel_size=3, dilation=0), ValueError, "dilation"),
    (dict(size=5, kernel_size=3, padding=-1), ValueError, "padding"),
    (dict(size=5, kernel_size=3, padding=1.5), TypeError, "padding"),
    (dict(size=5, kernel_size=3, padding="full"), ValueError, "padding"),
    (dict(size=5, kernel_size=3, padding="same", stride=2), ValueError, "stride"),
    (dict(size=5, kernel_size=7), ValueError, "kernel_size=7"),
    (dict(size=5, kernel_size=3, dilation=3), ValueError, "dilation=3"),
    (dict(size="5", kernel_size=3), TypeError, "size"),
    (dict(size=5.0, kernel_size=3), TypeError, "size"),
    (dict(size=5, kernel_size=True), TypeError, "kernel_size"),
    (dict(size=5, kernel_size=None), TypeError, "kernel_size"),
])
def test_bad_geometry_names_the_argument(kwargs, error, words):
    with pytest.raises(error, match=words):
        cnnlab.output_size(**kwargs)


def test_pair():
    assert pair("stride", 2) == (2, 2)
    assert pair("stride", (1, 3)) == (1, 3)
    with pytest.raises(ValueError, match="stride"):
        pair("stride", (1, 2, 3))
    with pytest.raises(ValueError, match="stride"):
        pair("stride", (1, 0), 1)
