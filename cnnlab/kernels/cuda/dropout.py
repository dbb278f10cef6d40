"""GPU dropout with the same counter-based mask as the CPU twin.

Mirrors :mod:`cnnlab.kernels.cpu.dropout`; same names, same parameters, same mask bits.
"""

from numba import cuda

from ._launch import launch_shape

__all__ = ["dropout_backward", "dropout_forward"]  # the kernels of this file

MASK32 = 0xFFFFFFFF


@cuda.jit(device=True)
def keep_probability_hash(seed, index):
    """A uniform number in [0, 1) from ``(seed, index)``; identical to the CPU twin."""
    h = (index ^ (seed * 0x27D4EB2F)) & MASK32
    for _ in range(2):
        h ^= h >> 16
        h = (h * 0x7FEB352D) & MASK32
        h ^= h >> 15
        h = (h * 0x5BD1E995) & MASK32
        h ^= h >> 16
    return h / 4294967296.0


@cuda.jit
def _dropout_kernel(x, out, mask, p, seed):
    scale = 1.0 / (1.0 - p)
    for i in range(cuda.grid(1), x.shape[0], cuda.gridsize(1)):
        keep = keep_probability_hash(seed, i) >= p
        mask[i] = scale if keep else 0
        out[i] = x[i] * mask[i]


@cuda.jit
def _dropout_backward_kernel(mask, grad_out, grad_x):
    for i in range(cuda.grid(1), mask.shape[0], cuda.gridsize(1)):
        grad_x[i] = grad_out[i] * mask[i]


def dropout_forward(x, out, mask, p, seed):
    """Inverted dropout; contract of :func:`cnnlab.kernels.cpu.dropout.dropout_forward`."""
    blocks, threads = launch_shape(x.shape[0])
    _dropout_kernel[blocks, threads](x, out, mask, p, seed)


def dropout_backward(mask, grad_out, grad_x):
    """``grad_x = grad_out * mask`` (1-D device arrays)."""
    blocks, threads = launch_shape(mask.shape[0])
    _dropout_backward_kernel[blocks, threads](mask, grad_out, grad_x)
