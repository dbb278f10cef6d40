"""CPU dropout with a counter-based random mask.

Whether element ``i`` is kept is a pure function of ``(seed, i)``: a 32-bit integer hash,
the same on the CPU and the GPU, so both backends drop the same elements for the same seed
and no random state lives on the device.

Mirrors :mod:`cnnlab.kernels.cuda.dropout`.
"""

from numba import njit, prange

__all__ = ["dropout_backward", "dropout_forward"]  # the kernels of this file

MASK32 = 0xFFFFFFFF


@njit(cache=True)
def keep_probability_hash(seed, index):
    """A uniform number in [0, 1) from ``(seed, index)``: two rounds of a 32-bit
    multiply-xorshift hash (multipliers below 2**31, so int64 never overflows)."""
    h = (index ^ (seed * 0x27D4EB2F)) & MASK32
    for _ in range(2):
        h ^= h >> 16
        h = (h * 0x7FEB352D) & MASK32
        h ^= h >> 15
        h = (h * 0x5BD1E995) & MASK32
        h ^= h >> 16
    return h / 4294967296.0


@njit(parallel=True, cache=True)
def dropout_forward(x, out, mask, p, seed):
    """Inverted dropout: ``mask[i] = 1/(1-p)`` if kept else 0; ``out = x * mask`` (1-D arrays).

    Parameters
    ----------
    x, out, mask : 1-D arrays of the same dtype
    p : float
        Drop probability, ``0 <= p < 1``.
    seed : int
        Non-negative, below 2**31.
    """
    scale = 1.0 / (1.0 - p)
    for i in prange(x.shape[0]):
        keep = keep_probability_hash(seed, i) >= p
        mask[i] = scale if keep else 0
        out[i] = x[i] * mask[i]


@njit(parallel=True, cache=True)
def dropout_backward(mask, grad_out, grad_x):
    """``grad_x = grad_out * mask`` (1-D arrays)."""
    for i in prange(mask.shape[0]):
        grad_x[i] = grad_out[i] * mask[i]
