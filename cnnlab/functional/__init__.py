"""Stateless CNN operations with PyTorch-shaped signatures.

Every function here validates its arguments (a clear ``TypeError`` or
``ValueError`` naming the argument), resolves the geometry with
:mod:`cnnlab.shapes`, allocates the result where the input lives, and calls
exactly one kernel: the CPU kernel for NumPy input, the GPU kernel for GPU
input (the result then stays on the GPU).  See :mod:`cnnlab.device`.

All arrays are NCHW and float32 or float64; an integer image is refused with
a pointer to :func:`cnnlab.data.normalize`.

One module per op family, named like the kernel files (:mod:`cnnlab.kernels.cpu`):
``conv``, ``pool``, ``activation``, ``merge``, ``linear``, ``dropout``, ``normalization``,
``loss``, ``optim``; ``common`` holds the checks they share. How each op takes a dask array is
declared with the decorators of :mod:`cnnlab.dispatch`.
"""

from ..dispatch import elementwise, per_sample, sliding_window
from ..parallel import cpu_workers, single_threaded_blas
from .activation import (
                         as_number,
                         clip,
                         clip_backward,
                         clip_bounds,
                         hardsigmoid,
                         hardsigmoid_backward,
                         hardswish,
                         hardswish_backward,
                         leaky_relu,
                         leaky_relu_backward,
                         log_softmax,
                         log_softmax_backward,
                         relu,
                         relu6,
                         relu6_backward,
                         relu_backward,
                         sigmoid,
                         sigmoid_backward,
                         silu,
                         silu_backward,
                         softmax,
                         softmax_backward,
                         tanh,
                         tanh_backward,
)
from .common import FLOAT_DTYPES, as_float_array
from .conv import (
                         EPILOGUE_ACTIVATIONS,
                         conv2d,
                         conv2d_backward,
                         conv_transpose2d,
                         conv_transpose2d_backward,
                         epilogue_activation,
)
from .dropout import dropout, dropout2d, dropout2d_backward, dropout_backward
from .elementwise import (
                         abs,
                         abs_backward,
                         ceil,
                         ceil_backward,
                         divide,
                         divide_backward,
                         erf,
                         erf_backward,
                         exp,
                         exp_backward,
                         floor,
                         floor_backward,
                         gelu,
                         gelu_backward,
                         gelu_kernels,
                         log,
                         log_backward,
                         maximum,
                         maximum_backward,
                         minimum,
                         minimum_backward,
                         neg,
                         neg_backward,
                         power,
                         power_backward,
                         reciprocal,
                         reciprocal_backward,
                         sqrt,
                         sqrt_backward,
                         subtract,
                         subtract_backward,
)
from .indexing import (
                         cast,
                         expand,
                         gather,
                         gather_backward,
                         pad,
                         pad_backward,
                         slice,
                         slice_backward,
                         squeeze,
                         sum_to_shape,
                         unsqueeze,
                         where,
)
from .linear import linear, linear_backward
from .loss import (
                         add_classification_totals,
                         as_target_rows,
                         as_targets,
                         binary_cross_entropy,
                         binary_cross_entropy_backward,
                         check_label_smoothing,
                         cross_entropy,
                         cross_entropy_backward,
                         cross_entropy_per_sample,
                         gather_rows,
                         is_target_rows,
                         mse,
                         mse_backward,
                         one_hot,
                         soft_cross_entropy_per_sample,
                         weighted_cross_entropy,
                         weighted_cross_entropy_backward,
                         weighted_cross_entropy_per_sample,
)
from .merge import add, add_backward, concatenate, concatenate_backward, multiply, multiply_backward
from .normalization import (
    batch_norm2d,
    batch_norm2d_backward,
    channel_affine,
    channel_affine_backward,
    group_norm,
    group_norm_backward,
    instance_norm,
    layer_norm,
    layer_norm_backward,
    running_average,
)
from .optim import adam_update, adamw_update, rmsprop_update, sgd_update
from .pool import (
                         INDEX_DTYPE,
                         POOL_MODES,
                         adaptive_avg_pool2d,
                         adaptive_avg_pool2d_backward,
                         avg_pool2d,
                         global_avg_pool2d,
                         global_avg_pool2d_backward,
                         global_max_pool2d,
                         global_max_pool2d_backward,
                         max_pool2d,
                         min_pool2d,
                         pool2d,
                         pool2d_backward,
                         pool_arguments,
)
from .reduce import REDUCTIONS, matmul, matmul_backward, reduce, reduce_backward
from .resize import interpolate, resize, resize_backward
from .tensor import transpose, transpose_backward

__all__ = [
    "conv2d",
    "pool2d",
    "max_pool2d",
    "avg_pool2d",
    "min_pool2d",
    "global_avg_pool2d",
    "relu",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "softmax",
    "log_softmax",
    "linear",
    "global_max_pool2d",
    "clip",
    "relu6",
    "hardsigmoid",
    "hardswish",
    "silu",
    "add",
    "multiply",
    "concatenate",
    "group_norm",
    "dropout",
    "dropout2d",
    "transpose",
    "layer_norm",
    "conv_transpose2d",
    "resize",
    "interpolate",
    "sqrt", "exp", "log", "erf", "reciprocal", "abs", "neg", "floor", "ceil", "gelu",
    "subtract", "divide", "power", "maximum", "minimum",
    "adaptive_avg_pool2d", "instance_norm", "slice", "gather", "squeeze", "unsqueeze", "expand", "cast", "where", "reduce", "matmul", "pad",
]
