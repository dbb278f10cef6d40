"""CPU data movement and batch statistics: gathering rows, summing a batch's loss and hits.

Mirrors :mod:`cnnlab.kernels.cuda.tensor`.
"""

from numba import njit, prange

__all__ = ["classification_totals", "gather_rows"]  # the kernels of this file


@njit(parallel=True, cache=True)
def gather_rows(source, index, out):
    """``out[k] = source[index[k]]`` for 2-D ``source`` and ``out`` (a mini-batch of samples)."""
    for k in prange(index.shape[0]):
        row = index[k]
        for j in range(source.shape[1]):
            out[k, j] = source[row, j]


@njit(cache=True)
def classification_totals(losses, probabilities, targets, totals):
    """``totals[0] += sum(losses)``; ``totals[1] +=`` the samples whose most probable class
    (the first on ties) is the target.  ``totals`` is a float64 pair, kept across steps."""
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
