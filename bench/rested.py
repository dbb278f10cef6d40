"""A batch-1 call after a rest against calls back to back, and how long the caller waits for
the second thread's shares.

    python bench/rested.py MODEL.onnx [MODEL.onnx ...] [--size 224 | --size 48x320]
                           [--pause 0.3] [--calls 15] [--rounds 2]

Each ONNX file is read with :func:`cnnlab.onnx.load` and called on one random image: ``--calls``
calls back to back, then ``--calls`` calls each ``--pause`` seconds after the last (as the
engines' turns in ``bench/models.py`` and ``bench/pretrained.py`` are). For both it prints the
median time of a call, the time the calling thread spent waiting for the team thread after
finishing its own shares (summed over the call's shared kernels, median over the calls) and
the context switches of the process per call. A rested call that waits as long as it works
runs its threads one after the other on one core. ``--rounds`` repeats both; every round is
printed. Two threads (the benchmarks' setting).
"""

import argparse
import os
import resource
import sys
import time

import numba
import numpy as np

import cnnlab.onnx
from cnnlab.bench.measuring import busy_warning
from cnnlab.kernels.cpu import _schedule


def _size(text):
    """``"224"`` -> (224, 224); ``"48x320"`` -> (48, 320)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts) or min(map(int, parts)) < 1:
        raise argparse.ArgumentTypeError(f"expected H or HxW (positive), got {text!r}")
    return int(parts[0]), int(parts[-1])


class WaitClock:
    """Adds up the time the caller spends waiting for team threads to finish their shares
    (in :func:`_schedule._watch_until`, the wait of :meth:`_schedule._Watcher.finish`)."""

    def __init__(self):
        self.total = 0.0
        self.original = _schedule._watch_until

    def __enter__(self):
        original = self.original

        def watch_until(*arguments):
            start = time.perf_counter()
            try:
                return original(*arguments)
            finally:
                self.total += time.perf_counter() - start

        _schedule._watch_until = watch_until
        return self

    def __exit__(self, *exc):
        _schedule._watch_until = self.original


def measure(model, x, calls, pause):
    """``(median seconds, median seconds waited, context switches per call)`` over ``calls``
    calls, each ``pause`` seconds after the previous one (0: back to back)."""
    times, waits = [], []
    before = resource.getrusage(resource.RUSAGE_SELF)
    with WaitClock() as clock:
        for _ in range(calls):
            if pause:
                time.sleep(pause)
            clock.total = 0.0
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
            waits.append(clock.total)
    after = resource.getrusage(resource.RUSAGE_SELF)
    switches = (after.ru_nivcsw - before.ru_nivcsw) / calls
    return float(np.median(times)), float(np.median(waits)), switches


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", help="ONNX files")
    parser.add_argument("--size", type=_size, default=(224, 224), help="H or HxW (default 224)")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds of rest before each rested call")
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    if args.calls < 1 or args.rounds < 1 or not args.pause > 0:
        parser.error("--calls and --rounds must be at least 1 and --pause above 0")
    numba.set_num_threads(2)
    warning = busy_warning(os.getloadavg()[0], os.cpu_count(), 2)
    if warning:
        print(warning, file=sys.stderr)
    x = np.random.default_rng(0).standard_normal((1, 3, *args.size)).astype(np.float32)
    print(f"batch 1, {args.size[0]}x{args.size[1]}, 2 threads; median of {args.calls} calls "
          f"(rested: {args.pause} s before each)")
    print(f"{'model':32s} {'round':>5s} {'back to back':>13s} {'waited':>7s} {'switches':>8s} "
          f"{'rested':>8s} {'waited':>7s} {'switches':>8s}")
    for path in args.models:
        model = cnnlab.onnx.load(path)
        for _ in range(3):
            model(x)
        for round_ in range(args.rounds):
            warm = measure(model, x, args.calls, 0)
            rested = measure(model, x, args.calls, args.pause)
            print(f"{os.path.basename(path)[:32]:32s} {round_ + 1:5d} {warm[0] * 1e3:10.2f} ms {warm[1] * 1e3:7.2f} "
                  f"{warm[2]:8.0f} {rested[0] * 1e3:5.2f} ms {rested[1] * 1e3:7.2f} {rested[2]:8.0f}")


if __name__ == "__main__":
    main()
