"""GPU data movement and batch statistics; the batch never leaves the device.

Mirrors :mod:`cnnlab.kernels.cpu.tensor`; same names, same parameters.
"""

from numba import cuda

from ._launch import launch_shape

__all__ = ["classification_totals", "gather_rows", "transpose_forward"]  # the kernels of this file


@cuda.jit
def _gather_rows_kernel(source, index, out):
    width = source.shape[1]
    for position in range(cuda.grid(1), index.shape[0] * width, cuda.gridsize(1)):
        k = position // width
        j = position % width
        out[k, j] = source[index[k], j]


@cuda.jit
def _classification_totals_kernel(losses, probabilities, targets, totals):
    # one thread: a mini-batch is small, and one thread keeps the sums free of atomics
    if cuda.grid(1) == 0:
        loss_sum = 0.0
        hits = 0
        for n in range(losses.shape[0]):
            loss_sum += losses[n]
            best = 0
            for k in range(1, probabilities.shape[1]):
                if probabilities[n, k] > probabilities[n, best]:
                    best = k
            if best == targets[n]:
                hits += 1
        totals[0] += loss_sum
        totals[1] += hits


@cuda.jit
def _transpose_kernel(x, out, out_shape, source_strides):
    rank = out_shape.shape[0]
    for position in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        rest = position
        source = 0
        for k in range(rank - 1, -1, -1):
            index = rest % out_shape[k]
            rest //= out_shape[k]
            source += index * source_strides[k]
        out[position] = x[source]


def transpose_forward(x, out, out_shape, source_strides):
    """Permute axes; contract of :func:`cnnlab.kernels.cpu.tensor.transpose_forward`."""
    blocks, threads = launch_shape(out.shape[0])
    _transpose_kernel[blocks, threads](x, out, out_shape, source_strides)


def gather_rows(source, index, out):
    """``out[k] = source[index[k]]``; contract of :func:`cnnlab.kernels.cpu.tensor.gather_rows`."""
    blocks, threads = launch_shape(out.size)
    _gather_rows_kernel[blocks, threads](source, index, out)


def classification_totals(losses, probabilities, targets, totals):
    """Add a batch's loss sum and hits to ``totals``; contract of the CPU twin."""
    _classification_totals_kernel[1, 1](losses, probabilities, targets, totals)
