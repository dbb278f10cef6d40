"""GPU kernels: ``@cuda.jit`` grid-stride kernels behind small host drivers.

Mirrors :mod:`cnnlab.kernels.cpu` name for name.  Importing this package
imports ``numba.cuda``; :mod:`cnnlab.device` does so only when an array
lives on the GPU.
"""

import numpy as np
from numba import cuda

from .activation import (
    clip_backward,
    clip_forward,
    hardsigmoid_backward,
    hardsigmoid_forward,
    hardswish_backward,
    hardswish_forward,
    leaky_relu_backward,
    leaky_relu_forward,
    log_softmax_backward,
    log_softmax_forward,
    relu_backward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    silu_backward,
    silu_forward,
    softmax_backward,
    softmax_forward,
    tanh_backward,
    tanh_forward,
)
from .conv import conv2d_backward_input, conv2d_backward_weight, conv2d_forward
from .dropout import dropout_backward, dropout_forward
from .filter import correlate2d_forward
from .linear import linear_backward, linear_forward
from .loss import (
    cross_entropy_backward,
    cross_entropy_forward,
    mse_backward,
    mse_forward,
    weight_losses_by_class,
    weighted_cross_entropy_backward,
)
from .merge import (
    add_backward,
    add_forward,
    concatenate_backward,
    concatenate_forward,
    global_max_pool2d_backward,
    global_max_pool2d_forward,
    multiply_backward,
    multiply_forward,
)
from .normalization import (
    batchnorm2d_backward,
    batchnorm2d_forward,
    batchnorm2d_statistics,
    running_average,
)
from .optim import adam_step, sgd_step
from .pool import (
    global_avg_pool2d_backward,
    global_avg_pool2d_forward,
    pool2d_backward,
    pool2d_backward_with_indices,
    pool2d_forward,
    pool2d_forward_with_indices,
)
from .tensor import classification_totals, gather_rows

DEVICE = "cuda"


def empty(shape, dtype):
    """A new uninitialized device array."""
    return cuda.device_array(shape, dtype=dtype)


def zeros(shape, dtype):
    """A new zero-filled device array."""
    return cuda.to_device(np.zeros(shape, dtype=dtype))


def ones(shape, dtype):
    """A new device array of ones."""
    return cuda.to_device(np.ones(shape, dtype=dtype))


def asarray(a):
    """The array as a kernel argument: any CUDA array viewed as a Numba device array."""
    if hasattr(a, "copy_to_host"):
        return a
    return cuda.as_cuda_array(a)
