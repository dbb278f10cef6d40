"""Layers: state (parameters, gradients, what the backward needs) around functional calls.

One module per op family, named like :mod:`cnnlab.functional`'s: ``conv``, ``linear``, ``pool``,
``activation``, ``merge``, ``normalization``, ``dropout``, ``tensor``; ``base`` holds the layer
protocol (:class:`Layer`) and the facts a layer class declares for the executor. Every layer
class registers itself in :data:`LAYER_TYPES` by name when it is defined (what a saved
architecture names), so a new layer needs no list to be added to.
"""

from .activation import Clip, HardSigmoid, HardSwish, LeakyReLU, LogSoftmax, ReLU, ReLU6, Sigmoid, SiLU, Softmax, Tanh
from .base import LAYER_TYPES, Layer
from .conv import Conv2D, ConvTranspose2D
from .dropout import Dropout, Dropout2D
from .elementwise import (
                          GELU,
                          Abs,
                          Ceil,
                          Divide,
                          ElementwiseConstant,
                          Erf,
                          Exp,
                          Floor,
                          Log,
                          Maximum,
                          Minimum,
                          Neg,
                          Power,
                          Reciprocal,
                          Sqrt,
                          Subtract,
)
from .indexing import (
                       Cast,
                       Chunk,
                       Concat,
                       ConstantOfShape,
                       DynamicPad,
                       DynamicReshape,
                       Expand,
                       Gather,
                       Pad,
                       Range,
                       Shape,
                       Slice,
                       Squeeze,
                       Tile,
                       Unsqueeze,
                       Where,
)
from .linear import Dense
from .merge import Add, Affine, Bias, Concatenate, Multiply, Scale
from .normalization import BatchNorm2D, GroupNorm, InstanceNorm, LayerNorm
from .pool import AvgPool2D, GlobalAvgPool2D, GlobalMaxPool2D, LPPool2D, MaxPool2D, MedianPool2D, MinPool2D
from .tensor import Flatten, Identity, Reshape, Resize, Transpose
from .tensor_math import Arithmetic, Function, MatMul, Reduce

__all__ = [
    "Layer", "Conv2D", "Dense", "MaxPool2D", "AvgPool2D", "MinPool2D", "MedianPool2D", "LPPool2D",
    "GlobalAvgPool2D", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Flatten", "Dropout",
    "BatchNorm2D", "GlobalMaxPool2D", "ReLU6", "Clip", "HardSigmoid", "HardSwish", "SiLU", "Identity",
    "Reshape", "Add", "Multiply", "Concatenate", "LogSoftmax", "GroupNorm", "Dropout2D", "Bias", "Scale", "Affine", "Transpose",
    "LayerNorm", "InstanceNorm", "ConvTranspose2D", "Resize", "LAYER_TYPES",
    "Sqrt", "Exp", "Log", "Erf", "Reciprocal", "Abs", "Neg", "Floor", "Ceil", "GELU", "Subtract", "Divide", "Power",
    "Maximum", "Minimum", "ElementwiseConstant",
    "Shape", "Cast", "Slice", "Gather", "Squeeze", "Unsqueeze", "Concat", "Expand", "DynamicReshape",
    "ConstantOfShape", "Range", "Tile", "Pad", "DynamicPad", "Chunk", "Where", "Arithmetic", "Function", "Reduce", "MatMul",
]
