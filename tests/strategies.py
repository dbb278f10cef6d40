"""Hypothesis strategies for valid op geometries (small, so the loops in naive.py stay quick)."""

import numpy as np
from hypothesis import strategies as st

dtypes = st.sampled_from([np.float32, np.float64])


@st.composite
def conv_geometries(draw, max_size=9):
    """A consistent conv2d problem: shapes, stride, padding (any accepted form), dilation, groups."""
    groups = draw(st.integers(1, 3))
    channels = groups * draw(st.integers(1, 2))
    filters = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding_form = draw(st.sampled_from(["int", "pair", "valid", "same"] if stride == (1, 1)
                                        else ["int", "pair", "valid"]))
    if padding_form == "int":
        padding = draw(st.integers(0, 2))
        pads = (padding, padding)
    elif padding_form == "pair":
        padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
        pads = padding
    else:
        padding = padding_form
        pads = (0, 0)
    sizes = []
    for k, d, p in zip(kernel, dilation, pads):
        span = d * (k - 1) + 1
        sizes.append(draw(st.integers(max(1, span - 2 * p), max(span - 2 * p, 1) + max_size)))
    return dict(
        samples=draw(st.integers(1, 3)), channels=channels, height=sizes[0], width=sizes[1],
        filters=filters, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
        groups=groups, bias=draw(st.booleans()), dtype=draw(dtypes),
    )


@st.composite
def pool_geometries(draw, modes=("max", "avg", "min", "median", "lp")):
    """A consistent pool2d problem."""
    mode = draw(st.sampled_from(modes))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    if mode in ("median", "lp"):
        pads = (0, 0)
    else:
        pads = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
    height = draw(st.integers(max(1, kernel[0] - 2 * pads[0]), kernel[0] + 8))
    width = draw(st.integers(max(1, kernel[1] - 2 * pads[1]), kernel[1] + 8))
    return dict(
        samples=draw(st.integers(1, 2)), channels=draw(st.integers(1, 3)), height=height,
        width=width, kernel=kernel, stride=stride, padding=pads, mode=mode, dtype=draw(dtypes),
    )


@st.composite
def four_sided_padding(draw, kernel, maximum=None):
    """``((top, bottom), (left, right))``, each side at most ``maximum`` (default kernel // 2)."""
    limits = [k // 2 if maximum is None else maximum for k in kernel]
    return tuple((draw(st.integers(0, m)), draw(st.integers(0, m))) for m in limits)


@st.composite
def pool_option_geometries(draw, modes=("max", "avg", "min"), max_size=6):
    """A pool2d problem with the ONNX/PyTorch options: four-sided padding, dilation (max and
    min), ceil_mode, count_include_pad (avg)."""
    mode = draw(st.sampled_from(modes))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if mode != "avg" else (1, 1)
    padding = draw(four_sided_padding(kernel))
    sizes = []
    for k, d, (before, after) in zip(kernel, dilation, padding):
        span = d * (k - 1) + 1
        sizes.append(draw(st.integers(max(1, span - before - after), max(1, span - before - after) + max_size)))
    return dict(
        samples=draw(st.integers(1, 2)), channels=draw(st.integers(1, 2)), height=sizes[0], width=sizes[1],
        kernel=kernel, stride=stride, padding=padding, dilation=dilation, mode=mode,
        ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()), dtype=draw(dtypes),
    )


@st.composite
def conv_padding_geometries(draw, max_size=6):
    """A conv2d problem with four-sided padding or ONNX's 'same_upper'/'same_lower' (any stride)."""
    groups = draw(st.integers(1, 2))
    channels = groups * draw(st.integers(1, 2))
    filters = groups * draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    form = draw(st.sampled_from(["sides", "same_upper", "same_lower"]))
    padding = draw(four_sided_padding(kernel, maximum=3)) if form == "sides" else form
    pads = padding if form == "sides" else ((0, 0), (0, 0))
    sizes = []
    for k, d, (before, after) in zip(kernel, dilation, pads):
        span = d * (k - 1) + 1
        sizes.append(draw(st.integers(max(1, span - before - after), max(1, span - before - after) + max_size)))
    return dict(
        samples=draw(st.integers(1, 2)), channels=channels, height=sizes[0], width=sizes[1],
        filters=filters, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
        groups=groups, bias=draw(st.booleans()), dtype=draw(dtypes),
    )


def arrays(rng, shape, dtype):
    """Standard-normal data of ``dtype``."""
    return rng.standard_normal(shape).astype(dtype)


@st.composite
def chunking(draw, length):
    """Dask chunks along an axis of ``length``: one chunk size (dask splits evenly), or uneven
    sizes that add up to ``length``."""
    if draw(st.booleans()):
        return draw(st.integers(1, length))
    sizes, left = [], length
    while left:
        size = draw(st.integers(1, left))
        sizes.append(size)
        left -= size
    return tuple(sizes)
