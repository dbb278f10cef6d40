"""Do two threads' GEMMs run at the same time? And how does conv2d scale from 1 thread to 2?

    python bench/gemm_threads.py [--rounds 5] [--repeat 20]

0. **A control**: a compute-bound Numba loop (no BLAS, no memory traffic) on two items, 1
   thread against 2, before and after the GEMMs: below 2x, another program holds a core and
   no kernel can be expected to scale.
1. **GEMMs from a Numba prange**: the (filters x taps) . (taps x pixels) products of ResNet-18's
   convolutions at batch 1 (224x224), the way cnnlab's CPU convolution calls them: each item
   of a ``prange`` makes its own product with ``np.dot`` (SciPy's OpenBLAS, held to one thread
   per caller by :func:`cnnlab.parallel.single_threaded_blas`). Two items on 1 Numba thread
   (one after the other) against the same two items on 2 threads (at once): the speed-up is
   ``t(1 thread) / t(2 threads)``; 2.0 means the two GEMMs overlap perfectly, 1.0 not at all.
2. **Two Python threads calling scipy.linalg.blas.sgemm**: the same question asked through
   SciPy's Python wrapper (20 calls per thread).
3. **cnnlab.functional.conv2d on the reference shapes**: 1 against 2 Numba threads.

The rounds alternate the thread counts (1, 2, 1, 2, ...); each figure is the median of all
runs. Prints the BLAS library and its kernels, and warns when the machine is busy.
"""

import argparse
import os
import statistics
import sys
import threading
import time

import numba
import numpy as np
from numba import njit, prange

import cnnlab.functional as F
from cnnlab.bench.measuring import busy_warning
from cnnlab.bench.ops import REFERENCE_SHAPES
from cnnlab.parallel import blas_kernels, single_threaded_blas

# ResNet-18 at batch 1, 224x224: (filters, taps = channels x 3 x 3 or 7 x 7, output pixels)
RESNET18_GEMMS = [
    ("conv1 7x7/2", 64, 147, 12544),
    ("layer1 3x3", 64, 576, 3136),
    ("layer2 3x3/2", 128, 576, 784),
    ("layer2 3x3", 128, 1152, 784),
    ("layer3 3x3", 256, 2304, 196),
    ("layer4 3x3", 512, 4608, 49),
]


@njit(parallel=True, cache=False)
def spin(out, steps):
    """A compute-bound loop per item, no BLAS and no memory traffic: the control."""
    for t in prange(out.shape[0]):
        value = 0.5 + t
        for _ in range(steps):
            value = value * 0.999999 + 0.5 / (1.0 + value)
        out[t] = value


@njit(parallel=True, cache=False)
def products(a, b, out):
    """``out[t] = a[t] @ b[t]`` for every ``t``, the items shared by Numba's threads."""
    for t in prange(a.shape[0]):
        np.dot(a[t], b[t], out[t])


def median_time(function, repeat):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def alternate(function, rounds, repeat):
    """``{threads: median seconds}`` of ``function()`` with Numba at 1 and 2 threads, taking turns."""
    times = {1: [], 2: []}
    for _ in range(rounds):
        for threads in (1, 2):
            numba.set_num_threads(threads)
            function()  # warm-up at this thread count
            times[threads].append(median_time(function, repeat))
    numba.set_num_threads(2)
    return {threads: statistics.median(values) for threads, values in times.items()}


def control_row(rounds, repeat):
    out = np.zeros(2)
    t = alternate(lambda: spin(out, 2_000_000), rounds, max(1, repeat // 4))
    print(f"0. control, a compute-bound Numba loop without BLAS, two items: 1 thread {t[1] * 1e3:.1f} ms, "
          f"2 threads {t[2] * 1e3:.1f} ms, speed-up {t[1] / t[2]:.2f}x (below 2: the second core is not free)")


def gemm_rows(rounds, repeat):
    rng = np.random.default_rng(0)
    print("1. two GEMMs per prange, one per item (OpenBLAS held to 1 thread per caller)")
    print(f"   {'layer':<14} {'product':>22} {'1 thread ms':>12} {'2 threads ms':>13} {'speed-up':>9} {'GFLOP/s 2t':>11}")
    for name, m, k, n in RESNET18_GEMMS:
        a = rng.standard_normal((2, m, k)).astype(np.float32)
        b = rng.standard_normal((2, k, n)).astype(np.float32)
        out = np.empty((2, m, n), np.float32)
        with single_threaded_blas():
            t = alternate(lambda: products(a, b, out), rounds, repeat)
        print(f"   {name:<14} {f'{m}x{k} . {k}x{n}':>22} {t[1] * 1e3:12.3f} {t[2] * 1e3:13.3f} "
              f"{t[1] / t[2]:8.2f}x {2 * 2 * m * k * n / t[2] / 1e9:11.1f}")


def python_thread_rows(rounds, repeat):
    from scipy.linalg.blas import sgemm

    rng = np.random.default_rng(0)
    m, k, n = 64, 576, 3136
    a, b = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((k, n)).astype(np.float32)

    def calls():
        for _ in range(20):
            sgemm(1.0, a, b)

    def two_threads():
        workers = [threading.Thread(target=calls) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()

    print("2. Python threads calling scipy.linalg.blas.sgemm (64x576 . 576x3136, 20 calls per thread)")
    with single_threaded_blas():
        one = statistics.median(median_time(calls, 1) for _ in range(rounds * repeat // 4 or 1))
        two = statistics.median(median_time(two_threads, 1) for _ in range(rounds * repeat // 4 or 1))
    print(f"   one thread's 20 calls {one * 1e3:.1f} ms; two threads' 2 x 20 calls {two * 1e3:.1f} ms "
          f"(overlap: {2 * one / two:.2f}x)")


def conv_rows(rounds, repeat):
    print("3. cnnlab.functional.conv2d, reference shapes, float32")
    print(f"   {'shape':<8} {'1 thread ms':>12} {'2 threads ms':>13} {'speed-up':>9}")
    for name, (n, c, h, w, f, k, s, p) in REFERENCE_SHAPES.items():
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        weight = (rng.standard_normal((f, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
        bias = rng.standard_normal(f).astype(np.float32)
        t = alternate(lambda: F.conv2d(x, weight, bias, s, p), rounds, max(1, repeat // 2))
        print(f"   {name:<8} {t[1] * 1e3:12.2f} {t[2] * 1e3:13.2f} {t[1] / t[2]:8.2f}x")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    if args.rounds < 1 or args.repeat < 1:
        parser.error("--rounds and --repeat must be at least 1")
    if numba.config.NUMBA_NUM_THREADS < 2:
        parser.error("needs at least 2 Numba threads")
    warning = busy_warning(os.getloadavg()[0], os.cpu_count(), 2)
    if warning:
        print(warning, file=sys.stderr)
    print(f"GEMMs on {blas_kernels()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}; "
          f"{args.rounds} rounds alternating 1 and 2 Numba threads, median of {args.repeat} runs each")
    control_row(args.rounds, args.repeat)
    gemm_rows(args.rounds, args.repeat)
    control_row(args.rounds, args.repeat)
    python_thread_rows(args.rounds, args.repeat)
    conv_rows(args.rounds, args.repeat)
    warning = busy_warning(os.getloadavg()[0], os.cpu_count(), 2)
    if warning:
        print(f"at the end: {warning}", file=sys.stderr)


if __name__ == "__main__":
    main()
