"""Ready-made architectures: ResNet and MobileNetV2, built from cnnlab layers as
:class:`cnnlab.Model` graphs, layer for layer as torchvision builds them, and the textbook CNN
(:func:`classic_cnn`) that ``cnnlab demo`` and ``cnnlab train`` start from.

Each function returns an untrained model (new weights, seeded by ``seed``) at any width and
input size: the full-size configurations have exactly torchvision's parameter counts, and
small ones (a few channels, 8x8 or 32x32 images) train in seconds on a laptop.

>>> import cnnlab.applications
>>> model = cnnlab.applications.resnet(18)
>>> model.parameter_count()
11689512
"""

import math
import numbers

import numpy as np

from .checks import check_float_dtype
from .graph import Input
from .layers import Add, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, ReLU6, Softmax
from .model import Model, Sequential
from .shapes import check_int

__all__ = ["resnet", "mobilenet_v2", "classic_cnn", "make_divisible", "RESNET_BLOCKS"]

#: Residual blocks per stage for each ResNet depth, and the block type.
RESNET_BLOCKS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}

# MobileNetV2's inverted residual stages: expansion t, output channels c, blocks n, stride s
_MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


class _Seeds:
    """One seed per layer, drawn from ``seed`` (None: every layer draws its own)."""

    def __init__(self, seed):
        if seed is not None:
            seed = check_int("seed", seed, 0)
        self.rng = None if seed is None else np.random.default_rng(seed)

    def __call__(self):
        return None if self.rng is None else int(self.rng.integers(2**31))

    def integer(self):
        """A seed that is always an integer (what ``Dropout`` takes)."""
        return int((self.rng or np.random.default_rng()).integers(2**31))


def _check_input_shape(input_shape, total_stride):
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
        raise TypeError(f"input_shape must be a (channels, height, width) tuple, got {input_shape!r}")
    for value in input_shape:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"input_shape must hold positive integers, got {tuple(input_shape)}")
    channels, height, width = (int(v) for v in input_shape)
    if height < total_stride or width < total_stride:
        raise ValueError(f"input_shape {tuple(input_shape)} is too small: the network downsamples by "
                         f"{total_stride}, so height and width must each be at least {total_stride}")
    return channels, height, width


def _check_dtype(dtype):
    return check_float_dtype(dtype).name


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, never going more than 10%
    below ``value`` (torchvision's ``_make_divisible``, from the MobileNet reference code).

    Parameters
    ----------
    value : float
        The channel count before rounding (e.g. ``32 * width_multiplier``).
    divisor : int
    min_value : int or None
        The smallest result; ``divisor`` when None.

    Returns
    -------
    int

    Examples
    --------
    >>> make_divisible(32 * 0.35), make_divisible(1280 * 1.4), make_divisible(24 * 0.5)
    (16, 1792, 16)
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv_bn(x, in_channels, out_channels, kernel_size, stride, seeds, dtype, groups=1):
    """Conv2D without bias (the batch norm shifts) then BatchNorm2D, as torchvision."""
    x = Conv2D(in_channels, out_channels, kernel_size, stride=stride, padding=(kernel_size - 1) // 2,
               groups=groups, bias=False, dtype=dtype, seed=seeds())(x)
    return BatchNorm2D(out_channels, dtype=dtype)(x)


def _basic_block(x, in_channels, channels, stride, seeds, dtype):
    """Two 3x3 convolutions; the shortcut is a strided 1x1 convolution where the shape changes."""
    out = ReLU()(_conv_bn(x, in_channels, channels, 3, stride, seeds, dtype))
    out = _conv_bn(out, channels, channels, 3, 1, seeds, dtype)
    if stride != 1 or in_channels != channels:
        x = _conv_bn(x, in_channels, channels, 1, stride, seeds, dtype)
    return ReLU()(Add()([out, x])), channels


def _bottleneck_block(x, in_channels, channels, stride, seeds, dtype):
    """1x1 reduce, 3x3 (strided: ResNet v1.5, as torchvision), 1x1 expand by 4."""
    out_channels = channels * 4
    out = ReLU()(_conv_bn(x, in_channels, channels, 1, 1, seeds, dtype))
    out = ReLU()(_conv_bn(out, channels, channels, 3, stride, seeds, dtype))
    out = _conv_bn(out, channels, out_channels, 1, 1, seeds, dtype)
    if stride != 1 or in_channels != out_channels:
        x = _conv_bn(x, in_channels, out_channels, 1, stride, seeds, dtype)
    return ReLU()(Add()([out, x])), out_channels


def resnet(depth: int = 18, classes: int = 1000, width: int = 64, input_shape: tuple[int, int, int] = (3, 224, 224),
           stem: str = "imagenet", seed: int | None = None, dtype: str = "float32") -> Model:
    """A residual network (He et al., 2015) as torchvision's ``resnet18`` ... ``resnet152``.

    The stem, then four stages of residual blocks with ``width``, ``2*width``, ``4*width`` and
    ``8*width`` channels (times 4 at the output of bottleneck blocks), each stage after the
    first halving the image with a stride-2 convolution; global average pooling; a ``Dense``
    classifier. Every convolution is ``Conv2D(..., bias=False)`` followed by ``BatchNorm2D``;
    a block whose shape changes adds its input through a strided 1x1 convolution and batch
    norm (torchvision's ``downsample``). Bottleneck blocks stride their 3x3 convolution
    (ResNet v1.5, torchvision's choice).

    Parameters
    ----------
    depth : {18, 34, 50, 101, 152}
        18 and 34 use basic blocks (two 3x3 convolutions), 50, 101 and 152 bottleneck blocks.
    classes : int
        Outputs of the final ``Dense`` layer (logits; the cross-entropy loss applies softmax).
    width : int
        Channels of the stem and of the first stage (torchvision: 64).
    input_shape : (channels, height, width)
        One image's shape. Height and width must be at least the network's total stride:
        32 with the ImageNet stem, 8 with the small one.
    stem : {'imagenet', 'small'}
        'imagenet': 7x7 convolution with stride 2 and a 3x3 max pool with stride 2
        (torchvision). 'small': one 3x3 convolution with stride 1 and no pooling, for small
        images (CIFAR-10's 32x32, scikit-learn's 8x8 digits).
    seed : int or None
        Seed of the weight initialization (He normal for convolutions and the classifier;
        batch norm starts at scale 1, shift 0).
    dtype : 'float32' or 'float64'

    Returns
    -------
    cnnlab.Model
        Named ``'resnet<depth>'``; its input is named ``'images'``.

    Raises
    ------
    ValueError
        For a depth not in the table, a width or class count below 1, an unknown stem, or an
        input smaller than the total stride.
    TypeError
        For arguments of the wrong type.

    Shape
    -----
    ``(N, C, H, W) -> (N, classes)``. The last stage's feature maps are ``H/32 x W/32``
    (``H/8 x W/8`` with the small stem), each step rounded as ``output_size``.

    See Also
    --------
    mobilenet_v2 : a lighter network of depthwise-separable blocks.
    torchvision.models.resnet18 : the PyTorch counterpart (same layers, same parameter count).

    Examples
    --------
    >>> model = resnet(18, classes=10, width=8, input_shape=(3, 32, 32), stem="small", seed=0)
    >>> model.parameter_count()
    176402
    """
    depth = check_int("depth", depth)
    if depth not in RESNET_BLOCKS:
        raise ValueError(f"depth must be one of {sorted(RESNET_BLOCKS)}, got {depth}")
    classes = check_int("classes", classes, 1)
    width = check_int("width", width, 1)
    if stem not in ("imagenet", "small"):
        raise ValueError(f"stem must be 'imagenet' or 'small', got {stem!r}")
    channels, _, _ = _check_input_shape(input_shape, 32 if stem == "imagenet" else 8)
    dtype = _check_dtype(dtype)
    seeds = _Seeds(seed)
    kind, counts = RESNET_BLOCKS[depth]
    block = _basic_block if kind == "basic" else _bottleneck_block

    inputs = Input(tuple(input_shape), dtype=dtype, name="images")
    if stem == "imagenet":
        x = ReLU()(_conv_bn(inputs, channels, width, 7, 2, seeds, dtype))
        x = MaxPool2D(3, stride=2, padding=1)(x)
    else:
        x = ReLU()(_conv_bn(inputs, channels, width, 3, 1, seeds, dtype))
    current = width
    for stage, count in enumerate(counts):
        for index in range(count):
            stride = 2 if stage > 0 and index == 0 else 1
            x, current = block(x, current, width * 2**stage, stride, seeds, dtype)
    outputs = Dense(current, classes, dtype=dtype, seed=seeds())(GlobalAvgPool2D()(x))
    return Model(inputs, outputs, name=f"resnet{depth}")


def _inverted_residual(x, in_channels, out_channels, stride, expansion, seeds, dtype):
    """1x1 expansion (unless ``expansion`` is 1), 3x3 depthwise, 1x1 linear projection;
    the input is added back when the stride is 1 and the channels match."""
    hidden = round(in_channels * expansion)
    out = x
    if expansion != 1:
        out = ReLU6()(_conv_bn(out, in_channels, hidden, 1, 1, seeds, dtype))
    out = ReLU6()(_conv_bn(out, hidden, hidden, 3, stride, seeds, dtype, groups=hidden))
    out = _conv_bn(out, hidden, out_channels, 1, 1, seeds, dtype)
    if stride == 1 and in_channels == out_channels:
        out = Add()([x, out])
    return out


def mobilenet_v2(classes: int = 1000, width_multiplier: float = 1.0,
                 input_shape: tuple[int, int, int] = (3, 224, 224), seed: int | None = None,
                 dtype: str = "float32") -> Model:
    """MobileNetV2 (Sandler et al., 2018) as torchvision's ``mobilenet_v2``.

    A 3x3 stride-2 convolution with 32 channels, seventeen inverted residual blocks
    (torchvision's table: expansion, channels, repeats, stride), a 1x1 convolution to 1280
    channels, global average pooling, ``Dropout(0.2)`` and a ``Dense`` classifier. An inverted
    residual block expands the channels with a 1x1 convolution, filters each channel with a
    3x3 depthwise convolution (``groups`` = channels), both followed by batch norm and ReLU6,
    and projects back with a 1x1 convolution and batch norm (no activation); it adds its input
    when the stride is 1 and the channel counts match. Convolutions have no bias.

    Parameters
    ----------
    classes : int
        Outputs of the final ``Dense`` layer (logits).
    width_multiplier : float
        Scales every channel count, rounded with :func:`make_divisible` to a multiple of 8
        (at least 8); the last convolution keeps its 1280 channels below 1.0 and widens above.
    input_shape : (channels, height, width)
        One image's shape; height and width at least 32 (the network's total stride).
    seed : int or None
        Seed of the weight initialization (Dropout's masks included).
    dtype : 'float32' or 'float64'

    Returns
    -------
    cnnlab.Model
        Named ``'mobilenet_v2'``; its input is named ``'images'``.

    Raises
    ------
    ValueError
        For a class count below 1, a width multiplier that is not positive and finite, or an
        input smaller than 32x32.
    TypeError
        For arguments of the wrong type.

    Shape
    -----
    ``(N, C, H, W) -> (N, classes)``; the last feature maps are ``H/32 x W/32``.

    See Also
    --------
    resnet
    torchvision.models.mobilenet_v2 : the PyTorch counterpart (same layers and parameter count).

    Examples
    --------
    >>> mobilenet_v2().parameter_count()
    3504872
    """
    classes = check_int("classes", classes, 1)
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, numbers.Real):
        raise TypeError(f"width_multiplier must be a number, got {width_multiplier!r} of type "
                        f"{type(width_multiplier).__name__}")
    if not math.isfinite(width_multiplier) or width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be positive and finite, got {width_multiplier}")
    channels, _, _ = _check_input_shape(input_shape, 32)
    dtype = _check_dtype(dtype)
    seeds = _Seeds(seed)

    inputs = Input(tuple(input_shape), dtype=dtype, name="images")
    current = make_divisible(32 * width_multiplier)
    x = ReLU6()(_conv_bn(inputs, channels, current, 3, 2, seeds, dtype))
    for expansion, stage_channels, count, stage_stride in _MOBILENET_V2_STAGES:
        out_channels = make_divisible(stage_channels * width_multiplier)
        for index in range(count):
            x = _inverted_residual(x, current, out_channels, stage_stride if index == 0 else 1, expansion,
                                   seeds, dtype)
            current = out_channels
    last = make_divisible(1280 * max(1.0, width_multiplier))
    x = ReLU6()(_conv_bn(x, current, last, 1, 1, seeds, dtype))
    x = Dropout(0.2, seed=seeds.integer())(GlobalAvgPool2D()(x))
    outputs = Dense(last, classes, dtype=dtype, seed=seeds())(x)
    return Model(inputs, outputs, name="mobilenet_v2")


def classic_cnn(in_channels: int, image_size: int, classes: int, conv_filters: tuple[int, int] = (32, 64),
                hidden: int = 128, seed: int = 0) -> Sequential:
    """The textbook architecture: two convolution modules (3x3 convolution + ReLU + 2x2 max
    pool), then two fully-connected layers ending in softmax."""
    first, second = conv_filters
    size = (image_size // 2) // 2
    return Sequential([
        Conv2D(in_channels, first, 3, padding=1, seed=seed), ReLU(), MaxPool2D(2),
        Conv2D(first, second, 3, padding=1, seed=seed + 1), ReLU(), MaxPool2D(2),
        Flatten(), Dense(second * size * size, hidden, seed=seed + 2), ReLU(),
        Dense(hidden, classes, seed=seed + 3), Softmax(),
    ], input_shape=(in_channels, image_size, image_size))
