"""What handing a share of a CPU kernel's work to another thread costs.

    python bench/handoff.py [--repeat 200]

Times :func:`cnnlab.kernels.cpu._schedule.run_shared` on a compiled busy loop split into two
items, on one thread and on two, for items of about 0, 10, 50 and 150 microseconds each:
the difference at 0 is the cost of a handoff; at 150 the two threads should take half the time
of one, plus that cost. Medians and the 10th and 90th percentiles, in microseconds.
"""

import argparse
import time

import numpy as np
from numba import njit

from cnnlab.bench.measuring import timed_runs
from cnnlab.kernels.cpu._schedule import run_shared


@njit(nogil=True)
def _busy(values, loops, first, last):
    total = 0.0
    for _ in range(first, last):
        for j in range(loops):
            total += values[j % 16] * 1.000001
    values[0] += total * 1e-30


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    values = np.ones(16)
    _busy(values, 1, 0, 1)
    start = time.perf_counter()
    _busy(values, 10**6, 0, 1)
    loops_per_us = 10**6 / ((time.perf_counter() - start) * 1e6)
    print("item   one thread (median p10 p90, us)   two threads (median p10 p90, us)")
    for item_us in (0, 10, 50, 150):
        loops = int(item_us * loops_per_us)
        cells = []
        for workers in (1, 2):
            for _ in range(19):
                run_shared(_busy, 2, workers, values, loops)
            # a twentieth warm-up, then the timed calls
            _, _, times = timed_runs(lambda: run_shared(_busy, 2, workers, values, loops), args.repeat)
            times.sort()
            n = len(times)
            cells.append(f"{times[n // 2] * 1e6:7.1f} {times[n // 10] * 1e6:7.1f} {times[9 * n // 10] * 1e6:7.1f}")
        print(f"{item_us:4d} us {cells[0]:>30s}   {cells[1]:>30s}")


if __name__ == "__main__":
    main()
