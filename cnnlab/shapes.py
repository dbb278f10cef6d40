"""Output-size arithmetic and argument normalization shared by every op.

The one formula behind every sliding-window op (convolution and pooling) is

.. math::

    O = \\left\\lfloor \\frac{W + 2P - D (K - 1) - 1}{S} \\right\\rfloor + 1

for an input of size ``W``, a window (kernel) of size ``K``, padding ``P``,
stride ``S`` and dilation ``D``.  With ``D = 1`` and a stride that divides
evenly it is the familiar ``O = (W - K + 2P) / S + 1``.

All user-facing checking of geometry lives here, so that every op reports a
bad argument with the same words.
"""

import numbers

PADDING_WORDS = ("valid", "same")


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
    """Normalize ``int | (int, int)`` to a ``(height, width)`` tuple of ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an integer or a pair of integers, got {value!r}")
        return (check_int(name, value[0], minimum), check_int(name, value[1], minimum))
    value = check_int(name, value, minimum)
    return (value, value)


def output_size(size, kernel_size, stride=1, padding=0, dilation=1):
    """Size of one spatial dimension after a sliding-window op.

    Parameters
    ----------
    size : int
        Input size along the dimension (``W`` in the textbook formula).
    kernel_size : int
        Window size ``K``.
    stride : int, default 1
        Step ``S`` between windows.
    padding : int or {'valid', 'same'}, default 0
        Zeros ``P`` added on *each* side.  ``'valid'`` means 0; ``'same'``
        (stride 1 only) pads so that the output size equals ``size``.
    dilation : int, default 1
        Spacing ``D`` between window taps.

    Returns
    -------
    int
        ``floor((size + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1``.

    Raises
    ------
    TypeError
        If an argument is not an integer (or a padding word).
    ValueError
        If an argument is out of range, or the window does not fit the
        padded input (the result would be < 1).

    Examples
    --------
    The textbook 3x3 filter on a 5x5 feature map gives 9 positions:

    >>> output_size(5, 3)
    3
    >>> output_size(5, 3, padding=1)        # padded to 7x7: 5x5 positions
    5
    >>> output_size(4, 2, stride=2)         # the 2x2 max pool with stride 2
    2
    """
    size = check_int("size", size, 1)
    kernel_size = check_int("kernel_size", kernel_size, 1)
    stride = check_int("stride", stride, 1)
    dilation = check_int("dilation", dilation, 1)
    if isinstance(padding, str):
        word = _padding_word(padding)
        if word == "valid":
            padding = 0
        else:
            if stride != 1:
                raise ValueError(f"padding='same' needs stride=1, got stride={stride}")
            return size
    padding = check_int("padding", padding, 0)
    span = dilation * (kernel_size - 1) + 1
    if span > size + 2 * padding:
        raise ValueError(
            f"kernel_size={kernel_size} with dilation={dilation} spans {span} pixels, more than the "
            f"padded input: size={size} + 2*padding={padding} gives {size + 2 * padding}"
        )
    return (size + 2 * padding - span) // stride + 1


def _padding_word(padding):
    word = padding.lower()
    if word not in PADDING_WORDS:
        raise ValueError(f"padding must be an integer, a pair, 'valid' or 'same'; got {padding!r}")
    return word


def resolve_padding(padding, kernel_size, stride, dilation):
    """Resolve a padding argument to ``((top, bottom), (left, right))``.

    ``kernel_size``, ``stride`` and ``dilation`` are ``(h, w)`` pairs.
    ``'same'`` splits the total padding ``dilation*(kernel_size-1)`` as
    PyTorch does: ``total // 2`` before, the rest after.
    """
    if isinstance(padding, str):
        if _padding_word(padding) == "valid":
            return ((0, 0), (0, 0))
        if stride != (1, 1):
            raise ValueError(f"padding='same' needs stride=1, got stride={stride}")
        result = []
        for k, d in zip(kernel_size, dilation):
            total = d * (k - 1)
            result.append((total // 2, total - total // 2))
        return tuple(result)
    ph, pw = pair("padding", padding, 0)
    return ((ph, ph), (pw, pw))


def window_output_shape(height, width, kernel_size, stride, padding, dilation):
    """Output ``(height, width)`` of a 2-D sliding window with resolved geometry.

    ``padding`` is ``((top, bottom), (left, right))`` as from
    :func:`resolve_padding`; the other arguments are ``(h, w)`` pairs.
    Raises ``ValueError`` when the window does not fit.
    """
    out = []
    for axis, size, k, s, (before, after), d in zip(
        ("height", "width"), (height, width), kernel_size, stride, padding, dilation
    ):
        span = d * (k - 1) + 1
        if span > size + before + after:
            raise ValueError(
                f"kernel_size={k} with dilation={d} spans {span} pixels along the {axis}, more than "
                f"the padded input: {size} + padding {before}+{after} = {size + before + after}"
            )
        out.append((size + before + after - span) // s + 1)
    return tuple(out)
