"""Output-size arithmetic and argument normalization shared by every op.

The one formula behind every sliding-window op (convolution and pooling) is

.. math::

    O = \\left\\lfloor \\frac{W + 2P - D (K - 1) - 1}{S} \\right\\rfloor + 1

for an input of size ``W``, a window (kernel) of size ``K``, padding ``P``,
stride ``S`` and dilation ``D``.  With ``D = 1`` and a stride that divides
evenly it is the familiar ``O = (W - K + 2P) / S + 1``.  With different
amounts before and after (``P_b``, ``P_a``), ``2P`` becomes ``P_b + P_a``;
pooling's ``ceil_mode`` rounds the division up.

All user-facing checking of geometry lives here, so that every op reports a
bad argument with the same words.
"""

import math
import numbers

import numpy as np

PADDING_WORDS = ("valid", "same", "same_upper", "same_lower")


def check_int(name, value, minimum=None):
    """Return ``value`` as a Python int, or raise naming ``name``.

    Raises
    ------
    TypeError
        If ``value`` is not an integer (``bool`` and floats are refused,
        even ``2.0``).
    ValueError
        If ``value`` is smaller than ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} of type {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def pair(name, value, minimum=None):
    """Normalize ``int | (int, int)`` to a ``(height, width)`` tuple of ints (a one-element
    ``(int,)`` stands for both, as in PyTorch)."""
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            value = (value[0], value[0])
        if len(value) != 2:
            raise ValueError(f"{name} must be an integer or a pair of integers, got {value!r}")
        return (check_int(name, value[0], minimum), check_int(name, value[1], minimum))
    value = check_int(name, value, minimum)
    return (value, value)


def plain_argument(value):
    """``value`` when it is an int (not a bool), a str or a tuple of such (nested once), else
    None: the arguments whose hash and equality tell them apart exactly (``1``, ``1.0`` and
    ``True`` are equal keys, but not the same argument)."""
    if type(value) is int or type(value) is str:
        return value
    if type(value) is tuple and all(type(v) is int or (type(v) is tuple and all(type(w) is int for w in v))
                                    for v in value):
        return value
    return None


def c_strides(shape, itemsize):
    """The byte strides of a C-contiguous (row-major) array of ``shape`` and ``itemsize``."""
    strides, step = [], itemsize
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def output_size(size, kernel_size, stride=1, padding=0, dilation=1, ceil_mode=False):
    """Size of one spatial dimension after a sliding-window op.

    Parameters
    ----------
    size : int
        Input size along the dimension (``W`` in the textbook formula).
    kernel_size : int
        Window size ``K``.
    stride : int, default 1
        Step ``S`` between windows.
    padding : int, (int, int) or {'valid', 'same', 'same_upper', 'same_lower'}, default 0
        Zeros ``P`` added on *each* side, or ``(before, after)`` for
        different amounts on the two sides.  ``'valid'`` means 0; ``'same'``
        (stride 1 only) pads so that the output size equals ``size``;
        ``'same_upper'`` and ``'same_lower'`` (any stride, ONNX's
        ``SAME_UPPER``/``SAME_LOWER``) give ``ceil(size / stride)``.
    dilation : int, default 1
        Spacing ``D`` between window taps.
    ceil_mode : bool, default False
        Round the division up (pooling, as PyTorch's ``ceil_mode``): one
        more, partial window when the windows do not reach the end of the
        padded input exactly, kept only if it starts inside the input or
        its leading padding.

    Returns
    -------
    int
        ``floor((size + before + after - dilation*(kernel_size - 1) - 1) / stride) + 1``
        (``ceil`` with ``ceil_mode``; ``before = after = padding`` for an int).

    Raises
    ------
    TypeError
        If an argument is not an integer (or a padding word).
    ValueError
        If an argument is out of range, or the window does not fit the
        padded input (the result would be < 1).

    See Also
    --------
    window_output_shape : both axes at once, with resolved padding.
    torch.nn.Conv2d, torch.nn.MaxPool2d : the same formula in PyTorch's documentation.

    Examples
    --------
    The textbook 3x3 filter on a 5x5 feature map gives 9 positions:

    >>> output_size(5, 3)
    3
    >>> output_size(5, 3, padding=1)        # padded to 7x7: 5x5 positions
    5
    >>> output_size(4, 2, stride=2)         # the 2x2 max pool with stride 2
    2
    >>> output_size(5, 2, stride=2, ceil_mode=True)  # a last window of one column
    3
    >>> output_size(5, 3, stride=2, padding=(0, 1))
    2
    """
    size = check_int("size", size, 1)
    kernel_size = check_int("kernel_size", kernel_size, 1)
    stride = check_int("stride", stride, 1)
    dilation = check_int("dilation", dilation, 1)
    ceil_mode = check_flag("ceil_mode", ceil_mode)
    if isinstance(padding, str):
        word = _padding_word(padding)
        if word == "same" and stride != 1:
            raise ValueError(f"padding='same' needs stride=1, got stride={stride} "
                             "(padding='same_upper' or 'same_lower' take any stride)")
        before, after = _word_padding(word, size, kernel_size, stride, dilation)
    elif isinstance(padding, (tuple, list)):
        before, after = pair("padding", padding, 0)
    else:
        before = after = check_int("padding", padding, 0)
    return axis_output_size(None, size, kernel_size, stride, before, after, dilation, ceil_mode)


def check_flag(name, value):
    """Return ``value`` as a bool: ``True``/``False`` (NumPy's too) or the integers 0 and 1."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral) and value in (0, 1):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r} of type {type(value).__name__}")


def _padding_word(padding):
    word = padding.lower()
    if word not in PADDING_WORDS:
        raise ValueError(
            "padding must be an integer, a pair (height, width), a pair of pairs "
            f"((top, bottom), (left, right)), or one of {', '.join(map(repr, PADDING_WORDS))}; "
            f"got {padding!r}"
        )
    return word


def _word_padding(word, size, kernel_size, stride, dilation):
    """``(before, after)`` of one axis for a padding word. ``size`` may be None (known only when
    the model runs): at stride 1 the padding does not depend on it; otherwise it is ``(None,
    None)``, unknown too."""
    if word == "valid":
        return (0, 0)
    span = dilation * (kernel_size - 1) + 1
    if stride == 1:
        total = span - 1
    elif size is None:
        return (None, None)
    else:  # ONNX's SAME_UPPER / SAME_LOWER: output ceil(size / stride)
        out = -(-size // stride)
        total = max(0, (out - 1) * stride + span - size)
    before = total - total // 2 if word == "same_lower" else total // 2
    return (before, total - before)


def check_padding(padding):
    """Normalize a padding argument without looking at any geometry.

    Returns a lower-case padding word, or ``((top, bottom), (left, right))``
    for an int ``p`` (all four sides ``p``), a pair ``(ph, pw)`` (``ph``
    above and below, ``pw`` left and right) or a pair of pairs.

    Four numbers in a flat sequence are refused: PyTorch's ``F.pad`` orders
    them ``(left, right, top, bottom)`` and ONNX's ``pads``
    ``(top, left, bottom, right)``; cnnlab spells the sides out as
    ``((top, bottom), (left, right))``.
    """
    if isinstance(padding, str):
        return _padding_word(padding)
    if isinstance(padding, (tuple, list)):
        if len(padding) == 1 and not isinstance(padding[0], (tuple, list, str)):
            padding = (padding[0], padding[0])  # PyTorch's one-element padding: both axes
        if len(padding) != 2:
            raise ValueError(
                "padding must be an integer, a pair (height, width) or a pair of pairs "
                f"((top, bottom), (left, right)); got {padding!r} with {len(padding)} entries "
                "(write four sides as ((top, bottom), (left, right)): PyTorch's F.pad order "
                "(left, right, top, bottom) and ONNX's pads order (top, left, bottom, right) differ)"
            )
        if any(isinstance(side, (tuple, list)) for side in padding):
            sides = []
            for axis, side in zip(("height", "width"), padding):
                if not isinstance(side, (tuple, list)) or len(side) != 2:
                    raise ValueError(
                        f"padding along the {axis} must be a pair (before, after) in "
                        f"((top, bottom), (left, right)), got {side!r} in padding={padding!r}"
                    )
                sides.append((check_int("padding", side[0], 0), check_int("padding", side[1], 0)))
            return tuple(sides)
    ph, pw = pair("padding", padding, 0)
    return ((ph, ph), (pw, pw))


def resolve_padding(padding, kernel_size, stride, dilation, input_size=None):
    """Resolve a padding argument to ``((top, bottom), (left, right))``.

    ``kernel_size``, ``stride``, ``dilation`` and ``input_size`` are
    ``(h, w)`` pairs.  ``padding`` takes every form of :func:`check_padding`.
    ``'same'`` (stride 1) splits the total padding ``dilation*(kernel_size-1)``
    as PyTorch does: ``total // 2`` before, the rest after.  ``'same_upper'``
    and ``'same_lower'`` follow ONNX's ``SAME_UPPER``/``SAME_LOWER``: output
    ``ceil(size / stride)``, total ``max(0, (out-1)*stride + span - size)``,
    an odd zero after (upper) or before (lower); with a stride above 1 that
    total depends on ``input_size``, which must then be given.
    """
    padding = check_padding(padding)
    if not isinstance(padding, str):
        return padding
    if padding == "same" and tuple(stride) != (1, 1):
        raise ValueError(f"padding='same' needs stride=1, got stride={stride} "
                         "(padding='same_upper' or 'same_lower' take any stride)")
    if input_size is None:
        if padding != "valid" and tuple(stride) != (1, 1):
            raise ValueError(f"padding={padding!r} with stride={stride} depends on the input size: "
                             "input_size is needed to resolve it")
        input_size = (None, None)
    return tuple(_word_padding(padding, size, k, s, d)
                 for size, k, s, d in zip(input_size, kernel_size, stride, dilation))


def axis_output_size(axis, size, k, s, before, after, d, ceil_mode):
    """One axis's output size (None when ``size`` is None: known only when the model runs)."""
    if size is None:
        return None
    where = "" if axis is None else f" along the {axis}"
    span = d * (k - 1) + 1
    total = size + before + after
    if span > total:
        raise ValueError(
            f"kernel_size={k} with dilation={d} spans {span} pixels{where}, more than the padded "
            f"input: size={size} + padding {before}+{after} gives {total}"
        )
    if not ceil_mode:
        return (total - span) // s + 1
    out = -(-(total - span) // s) + 1
    if (out - 1) * s >= size + before:  # the last window must start inside the input or its leading padding
        out -= 1
    return out


def window_output_shape(height, width, kernel_size, stride, padding, dilation, ceil_mode=False):
    """Output ``(height, width)`` of a 2-D sliding window with resolved geometry.

    ``padding`` is ``((top, bottom), (left, right))`` as from
    :func:`resolve_padding`; the other arguments are ``(h, w)`` pairs.
    ``ceil_mode`` rounds up as :func:`output_size` does.
    Raises ``ValueError`` when the window does not fit. An unknown (None) size gives None.
    """
    return tuple(
        axis_output_size(axis, size, k, s, before, after, d, ceil_mode)
        for axis, size, k, s, (before, after), d in zip(
            ("height", "width"), (height, width), kernel_size, stride, padding, dilation)
    )


def is_known(shape) -> bool:
    """Whether every axis of a per-sample ``shape`` has a size (none is None)."""
    return shape is not None and all(s is not None for s in shape)


def known_size(shape):
    """The number of values of ``shape``, or None when an axis is unknown."""
    return math.prod(shape) if is_known(shape) else None


def broadcast_shapes(*shapes):
    """NumPy's broadcast of per-sample shapes where an axis may be None (unknown): an unknown
    axis against 1 or against an unknown axis stays unknown, against a size becomes that size
    (the sizes must then agree when the model runs). ``ValueError`` when known sizes differ."""
    rank = max(len(s) for s in shapes)
    padded = [(1,) * (rank - len(s)) + tuple(s) for s in shapes]
    result = []
    for sizes in zip(*padded):
        known = {s for s in sizes if s is not None and s != 1}
        if len(known) > 1:
            raise ValueError(f"shapes {shapes} do not broadcast")
        if known:
            result.append(known.pop())
        elif any(s is None for s in sizes):
            result.append(None)
        else:
            result.append(1)
    return tuple(result)
