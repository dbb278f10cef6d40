"""One thread or two: where sharing a small kernel between threads starts to pay.

    python bench/thread_split.py [--rounds 5] [--calls 200]

For each op and size: the time of one call on the calling thread alone (``PARALLEL_MIN_WORK``
set so high that nothing is shared) and shared between two threads (``PARALLEL_MIN_WORK`` 1),
each the best of ``--rounds`` rounds of ``--calls`` back-to-back calls, the two settings
alternating round by round in this one process. The columns: the work the kernel reports to
:func:`cnnlab.parallel.cpu_workers` (element visits; see
:func:`cnnlab.functional.conv.conv_work`), the two times, what the default setting chooses,
and whether that is the faster of the two (within 1 us). Needs at least two Numba threads.
The convolutions are called through their bound form (as an inference plan calls them), the
rest through :mod:`cnnlab.functional`.
"""

import argparse
import time

import numba
import numpy as np

import cnnlab.functional as F
from cnnlab import config
from cnnlab.functional.conv import bind_conv2d, conv_geometry, conv_work
from cnnlab.kernels import cpu as cpu_kernels
from cnnlab.parallel import cpu_workers, single_threaded_blas


def _best_of(function, rounds, calls, default):
    """``{1: seconds, 2: seconds}``: the best round of ``calls`` calls at each setting."""
    best = {1: float("inf"), 2: float("inf")}
    try:
        for _ in range(rounds):
            for threads, min_work in ((1, 1 << 60), (2, 1)):
                config.PARALLEL_MIN_WORK = min_work
                call = function()
                for _ in range(10):
                    call()
                start = time.perf_counter()
                for _ in range(calls):
                    call()
                best[threads] = min(best[threads], (time.perf_counter() - start) / calls)
    finally:
        config.PARALLEL_MIN_WORK = default
    return best


def _conv(rng, channels, filters, size, kernel, groups, stride=1):
    x = rng.standard_normal((1, channels, *size)).astype(np.float32)
    weight = rng.standard_normal((filters, channels // groups, kernel, kernel)).astype(np.float32)
    bias = np.zeros(filters, np.float32)
    options = dict(stride=stride, padding=kernel // 2, groups=groups)

    def prepare():  # the geometry (and with it the split) of the setting now in force
        bound = bind_conv2d(x, weight, bias, **options, activation="relu")
        out = np.empty(bound.out_shape, np.float32)
        return lambda: bound(x, weight, bias, None, None, out)

    out_h, out_w = conv_geometry(x.shape, weight.shape, x.dtype, stride, kernel // 2, 1, groups).out_shape
    work = conv_work(filters * out_h * out_w, (channels // groups) * kernel * kernel,
                     cpu_kernels.conv2d_is_direct((filters, channels // groups, kernel, kernel), groups,
                                                   (stride, stride), out_h * out_w))
    return prepare, work


def cases(rng):
    rows = []
    for channels, filters, height, width in [(8, 8, 12, 96), (8, 24, 12, 96), (16, 16, 24, 48), (32, 32, 14, 14),
                                             (24, 72, 24, 96), (64, 64, 28, 28)]:
        rows.append((f"pointwise {channels}->{filters} {height}x{width}",
                     *_conv(rng, channels, filters, (height, width), 1, 1)))
    for channels, height, width, stride in [(8, 24, 96, 2), (24, 12, 96, 1), (32, 28, 28, 1), (64, 28, 28, 1)]:
        rows.append((f"depthwise 3x3 {channels} {height}x{width} s{stride}",
                     *_conv(rng, channels, channels, (height, width), 3, channels, stride)))
    for channels, filters, height, width, stride in [(3, 8, 48, 192, 2), (8, 8, 24, 24, 1), (16, 16, 28, 28, 1)]:
        rows.append((f"3x3 {channels}->{filters} {height}x{width} s{stride}",
                     *_conv(rng, channels, filters, (height, width), 3, 1, stride)))
    for size in (16384, 65536, 262144):
        a, b = (rng.standard_normal((1, size // 64, 8, 8)).astype(np.float32) for _ in range(2))
        rows.append((f"add {size}", lambda a=a, b=b: (lambda: F.add(a, b)), size // 3))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    if numba.get_num_threads() < 2:
        parser.error("needs at least two Numba threads (NUMBA_NUM_THREADS)")
    numba.set_num_threads(2)
    default = config.PARALLEL_MIN_WORK
    print(f"2 threads, PARALLEL_MIN_WORK {default}; best of {args.rounds} rounds of {args.calls} calls, us")
    print(f"{'op':34s} {'work':>8s} {'1 thread':>9s} {'2 threads':>9s}  default  right")
    with single_threaded_blas():
        for name, function, work in cases(np.random.default_rng(0)):
            best = _best_of(function, args.rounds, args.calls, default)
            chosen = cpu_workers(work)
            right = best[chosen] <= min(best.values()) + 1e-6
            print(f"{name:34s} {work:8d} {best[1] * 1e6:9.1f} {best[2] * 1e6:9.1f}  {chosen:>7d}  {'yes' if right else 'no'}")


if __name__ == "__main__":
    main()
