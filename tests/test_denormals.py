"""Forward convolutions run with denormals flushed (``cnnlab.kernels.cpu._microkernel.flush_denormals``):
on every path, a denormal input counts as zero and a result that would be denormal is zero, and
the calling thread's floating-point control word is its own again after the call."""

import numpy as np
import pytest
from numba import njit

import cnnlab.functional as F
from cnnlab.functional.conv import conv_geometry
from cnnlab.kernels.cpu import conv as cpu_conv
from cnnlab.kernels.cpu._microkernel import FLUSH_FLAGS, _x86, flush_denormals, restore_denormals

pytestmark = pytest.mark.skipif(not _x86(), reason="the flags are x86's (MXCSR)")

TINY = np.finfo(np.float32).tiny  # the smallest normal float32

# (x shape, weight shape, stride, padding, groups): shapes that take the forward paths
CASES = [
    ((2, 32, 16, 16), (64, 32, 3, 3), 2, 1, 1),
    ((8, 16, 32, 32), (32, 16, 3, 3), 1, 1, 1),
    ((1, 96, 14, 14), (192, 96, 1, 1), 1, 0, 1),
    ((1, 16, 28, 28), (32, 16, 1, 1), 1, 0, 1),
    ((1, 32, 28, 28), (32, 1, 3, 3), 1, 1, 32),
    ((1, 96, 28, 28), (96, 1, 7, 7), 1, 3, 96),
    ((16, 1, 28, 28), (6, 1, 5, 5), 1, 0, 1),
    ((16, 6, 12, 12), (16, 6, 5, 5), 1, 0, 1),
    ((2, 24, 56, 56), (12, 24, 2, 2), 2, 0, 1),
    ((8, 64, 8, 8), (64, 64, 3, 3), 1, 1, 1),
    ((4, 3, 32, 32), (8, 3, 3, 3), 1, 1, 1),
    ((2, 8, 20, 20), (12, 4, 3, 3), 1, 1, 2),
    ((4, 64, 8, 8), (128, 64, 3, 3), 1, 1, 1),
    ((1, 64, 14, 14), (64, 1, 3, 3), 1, 1, 64),
    ((2, 16, 12, 12), (32, 8, 5, 5), 1, 2, 2),
]


@njit(cache=False)
def _control_word():
    """This thread's MXCSR (set and put back at once)."""
    before = flush_denormals()
    restore_denormals(before)
    return before


def _path(x_shape, w_shape, stride, padding, groups):
    geometry = conv_geometry(x_shape, w_shape, np.float32, stride, padding, 1, groups)
    out_shape = (x_shape[0], w_shape[0]) + tuple(
        (size + 2 * padding - k) // stride + 1 for size, k in zip(x_shape[2:], w_shape[2:]))
    return cpu_conv._forward_work(x_shape, w_shape, out_shape, *geometry.args, dtype=np.float32)[0].__name__


def test_every_path_reads_denormal_inputs_as_zero_and_writes_no_denormal():
    """On every path: an input of denormals alone gives zeros (without the flags, sums of
    products of denormals with weights near 1: denormal too); inputs and weights of 1e-21,
    whose products are denormal (1e-42), give zeros; an input half of denormals, the output of
    that input with those values zeroed, bit for bit."""
    rng = np.random.default_rng(0)
    paths = set()
    for x_shape, w_shape, stride, padding, groups in CASES:
        paths.add(_path(x_shape, w_shape, stride, padding, groups))
        arguments = dict(stride=stride, padding=padding, groups=groups)
        w = rng.uniform(0.5, 1.5, w_shape).astype(np.float32)
        denormals = (rng.integers(1, 1 << 20, x_shape) * np.float32(2.0 ** -149)).astype(np.float32)
        assert np.all((denormals != 0) & (denormals < TINY))
        np.testing.assert_array_equal(F.conv2d(denormals, w, **arguments), 0)
        tiny = np.full(x_shape, np.float32(1e-21))
        np.testing.assert_array_equal(F.conv2d(tiny, np.full(w_shape, np.float32(1e-21)), **arguments), 0)
        x = rng.standard_normal(x_shape).astype(np.float32)
        half = rng.random(x_shape) < 0.5
        b = rng.standard_normal(w_shape[0]).astype(np.float32)
        np.testing.assert_array_equal(F.conv2d(np.where(half, denormals, x), w, b, **arguments),
                                      F.conv2d(np.where(half, np.float32(0), x), w, b, **arguments))
    assert len(paths) >= 11 or not cpu_conv.panels_available(), paths  # (with AVX-512: all eleven)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_callers_control_word_is_its_own_after_a_convolution(threads):
    """The flags are set and put back by the items on each thread: the calling thread (which
    runs the first share) has its own control word after a call, on one thread or two."""
    import numba

    previous = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        before = _control_word()
        assert before & FLUSH_FLAGS == 0
        x = np.random.default_rng(1).standard_normal((8, 16, 32, 32)).astype(np.float32)
        F.conv2d(x, np.ones((32, 16, 3, 3), np.float32), padding=1)
        assert _control_word() == before
        assert np.float32(TINY) / np.float32(4) != 0  # (NumPy on this thread: denormals as before)
    finally:
        numba.set_num_threads(previous)
