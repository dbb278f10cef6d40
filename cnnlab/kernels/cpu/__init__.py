"""CPU kernels: Numba ``@njit(parallel=True, cache=True)`` drivers over serial workers.

Mirrors :mod:`cnnlab.kernels.cuda` name for name.  Besides the kernels, the
module offers the allocation helpers the dispatch layer uses to put a result
where the input lives (here: host memory).
"""

import numpy as np

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

DEVICE = "cpu"


def empty(shape, dtype):
    """A new uninitialized host array."""
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype):
    """A new zero-filled host array."""
    return np.zeros(shape, dtype=dtype)


def asarray(a):
    """The array as a kernel argument (host arrays are passed as they are)."""
    return a
