"""CPU fully-connected layer: the batch split over threads, one single-threaded GEMM each.

The dispatch layer holds the BLAS pool to one thread while these kernels run, as for the
convolution: BLAS threads spinning next to Numba's would fight over the same cores.

Mirrors :mod:`cnnlab.kernels.cuda.linear`.
"""

import numpy as np
from numba import njit, prange

from .conv import _matmul


@njit(parallel=True, cache=True)
def linear_forward(x, weight, bias, out, workers):
    """``out = x @ weight.T + bias``.

    Parameters
    ----------
    x : (N, in_features) float array, C-contiguous
    weight : (out_features, in_features) array of the same dtype (PyTorch layout)
    bias : (out_features,) array (zeros for no bias)
    out : (N, out_features) array, overwritten
    workers : int
        Parallel chunks of samples.
    """
    samples = x.shape[0]
    workers = max(1, min(workers, samples))
    weight_t = weight.T
    for worker in prange(workers):
        first = worker * samples // workers
        last = (worker + 1) * samples // workers
        rows = out[first:last]
        _matmul(x[first:last], weight_t, rows)
        for n in range(rows.shape[0]):
            for o in range(rows.shape[1]):
                rows[n, o] += bias[o]


@njit(parallel=True, cache=True)
def linear_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, workers):
    """Gradients of :func:`linear_forward`: ``grad_x = grad_out @ weight``,
    ``grad_weight = grad_out.T @ x``, ``grad_bias = grad_out.sum(0)``; all overwritten.

    Each worker takes a chunk of samples: its rows of ``grad_x``, and private partial sums
    of the weight and bias gradients, added at the end.
    """
    samples = x.shape[0]
    workers = max(1, min(workers, samples))
    partial_weight = np.zeros((workers,) + grad_weight.shape, dtype=grad_weight.dtype)
    partial_bias = np.zeros((workers, grad_bias.shape[0]), dtype=grad_bias.dtype)
    for worker in prange(workers):
        first = worker * samples // workers
        last = (worker + 1) * samples // workers
        _matmul(grad_out[first:last], weight, grad_x[first:last])
        _matmul(grad_out[first:last].T, x[first:last], partial_weight[worker])
        for n in range(first, last):
            for o in range(grad_out.shape[1]):
                partial_bias[worker, o] += grad_out[n, o]
    grad_weight[:] = partial_weight.sum(axis=0)
    grad_bias[:] = partial_bias.sum(axis=0)
