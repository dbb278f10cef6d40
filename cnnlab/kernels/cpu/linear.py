"""CPU fully-connected layer: the batch split over threads, one single-threaded GEMM each.

The dispatch layer holds the BLAS pool to one thread while these kernels run, as for the
convolution: BLAS threads spinning next to Numba's would fight over the same cores.

Mirrors :mod:`cnnlab.kernels.cuda.linear`.
"""

import numpy as np
from numba import njit

from ._blas import matmul
from ._schedule import (
    _sum_over_workers,
    run_in_threads,
    run_on_layer,
    run_shared,
    shares,
)

__all__ = ["linear_backward", "linear_forward"]  # the kernels of this file


@njit(cache=True, nogil=True)
def _linear_forward_rows(x, weight_t, bias, out, first, last):
    """Samples ``first .. last-1`` of :func:`linear_forward` (serial: one thread's share)."""
    rows = out[first:last]
    matmul(x[first:last], weight_t, rows)
    for n in range(rows.shape[0]):
        for o in range(rows.shape[1]):
            rows[n, o] += bias[o]


def linear_forward(x, weight, bias, out, workers):
    """``out = x @ weight.T + bias``.

    Parameters
    ----------
    x : (N, in_features) float array, C-contiguous
    weight : (out_features, in_features) array of the same dtype (PyTorch layout)
    bias : (out_features,) array (zeros for no bias)
    out : (N, out_features) array, overwritten
    workers : int
        Threads sharing the samples; 1 runs on the calling thread alone. With fewer samples than
        workers (a prediction of one image), they share the output features instead: each
        thread's matrix-vector products read only its rows of the weights, which at batch 1 is all
        the work (a 1280 x 1000 layer streams 5 MB of weights for 1.3 M multiply-adds). Those
        shares run on Numba's threading layer (:func:`cnnlab.kernels.cpu._schedule.run_on_layer`):
        the kernels' own team would hand the second block to a thread that must take the GIL
        to start it, several microseconds, and tens when it has gone to sleep since its last
        share, as it has in a batch-1 prediction whose convolutions share their work this way
        too (MobileNetV2's classifier started its second block 64 us after the first,
        ``bench/team_wait.py``).
    """
    if x.shape[0] < workers and weight.shape[0] >= 2 * workers:
        run_on_layer(_linear_forward_features, (x, weight, bias, out, workers), np.arange(workers + 1, dtype=np.int64))
    else:
        run_shared(_linear_forward_rows, x.shape[0], workers, x, weight.T, bias, out)


@njit(cache=True, nogil=True)
def _linear_forward_features(x, weight, bias, out, blocks, first, last):
    """Blocks ``first .. last-1`` of :func:`linear_forward`'s output features, out of ``blocks``
    even ones, for every sample: ``out[:, o0:o1] = x @ weight[o0:o1].T + bias[o0:o1]``."""
    outputs = weight.shape[0]
    for block in range(first, last):
        o0, o1 = block * outputs // blocks, (block + 1) * outputs // blocks
        for n in range(x.shape[0]):  # a matrix-vector product (BLAS GEMV) per sample: a GEMM one row
            # high ran 3-6x slower (1280 -> 1000 features, one thread: 480 us against 97)
            np.dot(weight[o0:o1], x[n], out[n, o0:o1])
            for o in range(o0, o1):
                out[n, o] += bias[o]


@njit(cache=True, nogil=True)
def _linear_backward_rows(x, weight, grad_out, grad_x, partial_weight, partial_bias, first, last):
    """Samples ``first .. last-1`` of :func:`linear_backward`: their rows of ``grad_x``, and
    their weight and bias gradients added to one worker's accumulators."""
    matmul(grad_out[first:last], weight, grad_x[first:last])
    product = np.empty(partial_weight.shape, dtype=partial_weight.dtype)
    matmul(grad_out[first:last].T, x[first:last], product)
    for o in range(partial_weight.shape[0]):
        for i in range(partial_weight.shape[1]):
            partial_weight[o, i] += product[o, i]
    for n in range(first, last):
        for o in range(grad_out.shape[1]):
            partial_bias[o] += grad_out[n, o]


def linear_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, workers):
    """Gradients of :func:`linear_forward`: ``grad_x = grad_out @ weight``,
    ``grad_weight = grad_out.T @ x``, ``grad_bias = grad_out.sum(0)``; all overwritten.

    Each worker takes a chunk of samples: its rows of ``grad_x``, and private partial sums
    of the weight and bias gradients, added at the end.
    """
    samples = x.shape[0]
    workers = max(1, min(workers, samples))
    out_features, in_features = grad_weight.shape
    partial_weight = np.zeros((workers, out_features, in_features), dtype=grad_weight.dtype)
    partial_bias = np.zeros((workers, out_features), dtype=grad_bias.dtype)
    run_in_threads(_linear_backward_rows, [(x, weight, grad_out, grad_x, partial_weight[w], partial_bias[w], first, last)
                                           for w, (first, last) in enumerate(shares(samples, workers))])
    _sum_over_workers(partial_weight.reshape(workers, out_features * in_features),
                      grad_weight.reshape(out_features * in_features))
    _sum_over_workers(partial_bias, grad_bias)
