"""CPU kernels: Numba ``@njit(parallel=True, cache=True)`` drivers over serial workers.

Mirrors :mod:`cnnlab.kernels.cuda` name for name.  Besides the kernels, the
module offers the allocation helpers the dispatch layer uses to put a result
where the input lives (here: host memory).
"""

import numpy as np

from ..cache import cache_dir, kernels_cached_in

# every kernel module below is defined with its compiled code kept in the per-user cache
# folder (see cnnlab.kernels.cache), never inside the installed package
with kernels_cached_in(cache_dir()):
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

DEVICE = "cpu"


def empty(shape, dtype):
    """A new uninitialized host array."""
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype):
    """A new zero-filled host array."""
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype):
    """A new array of ones."""
    return np.ones(shape, dtype=dtype)


def asarray(a):
    """The array as a kernel argument (host arrays are passed as they are)."""
    return a
