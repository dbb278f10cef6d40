"""GPU kernels: ``@cuda.jit`` grid-stride kernels behind small host drivers.

Mirrors :mod:`cnnlab.kernels.cpu` name for name.  Importing this package
imports ``numba.cuda``; :mod:`cnnlab.device` does so only when an array
lives on the GPU.
"""

import numpy as np
from numba import cuda

from .activation import (
    leaky_relu_forward,
    log_softmax_forward,
    relu_forward,
    sigmoid_forward,
    softmax_forward,
    tanh_forward,
)
from .conv import conv2d_forward
from .filter import correlate2d_forward
from .linear import linear_forward
from .pool import global_avg_pool2d_forward, pool2d_forward

DEVICE = "cuda"


def empty(shape, dtype):
    """A new uninitialized device array."""
    return cuda.device_array(shape, dtype=dtype)


def zeros(shape, dtype):
    """A new zero-filled device array."""
    return cuda.to_device(np.zeros(shape, dtype=dtype))


def asarray(a):
    """The array as a kernel argument: any CUDA array viewed as a Numba device array."""
    if hasattr(a, "copy_to_host"):
        return a
    return cuda.as_cuda_array(a)
