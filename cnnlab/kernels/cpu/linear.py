"""CPU fully-connected layer: one BLAS GEMM, then the bias in parallel.

Mirrors :mod:`cnnlab.kernels.cuda.linear`.
"""

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def _add_bias_rows(out, bias):
    for n in prange(out.shape[0]):
        for o in range(out.shape[1]):
            out[n, o] += bias[o]


@njit(cache=True)
def linear_forward(x, weight, bias, out):
    """``out = x @ weight.T + bias``.

    Parameters
    ----------
    x : (N, in_features) float array, C-contiguous
    weight : (out_features, in_features) array of the same dtype (PyTorch layout)
    bias : (out_features,) array (zeros for no bias)
    out : (N, out_features) array, overwritten
    """
    np.dot(x, weight.T, out)
    _add_bias_rows(out, bias)
