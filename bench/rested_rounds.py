"""Rounds of a reference convolution after rests, and where the two threads ran in each.

    python bench/rested_rounds.py [--shape lenet1] [--rounds 8] [--calls 20] [--pause 0.3]

Each round sleeps ``--pause`` seconds (as the engines' turns in ``bench/conv_engines.py`` do),
then calls ``cnnlab.functional.conv2d`` on the reference shape ``--calls`` times back to back.
Prints, per round, the median call, the core each thread last ran on (the calling thread and
the team's thread, from ``/proc/self/task/TID/stat``), the cores the team thread may run on and
the team thread's voluntary context switches in the round (about one a share it took). A round
whose two threads end on one core, the team thread switching little, ran the shares one after
the other. Linux only; two threads (the benchmarks' setting).
"""

import argparse
import os
import statistics
import threading
import time

import numba
import numpy as np

import cnnlab.functional as F
from cnnlab.bench.measuring import timed_runs
from cnnlab.bench.ops import REFERENCE_SHAPES, reference_inputs
from cnnlab.kernels.cpu import _schedule


def _last_core(tid):
    with open(f"/proc/self/task/{tid}/stat") as stat:
        return int(stat.read().rsplit(")", 1)[1].split()[36])


def _voluntary_switches(tid):
    with open(f"/proc/self/task/{tid}/status") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches"):
                return int(line.split(":")[1])
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="lenet1", choices=list(REFERENCE_SHAPES))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--pause", type=float, default=0.3)
    args = parser.parse_args()
    if args.rounds < 1 or args.calls < 1 or args.pause < 0:
        parser.error("--rounds and --calls must be at least 1, --pause at least 0")
    if not os.path.exists("/proc/self/task") or numba.config.NUMBA_NUM_THREADS < 2:
        parser.error("needs Linux's /proc and two Numba threads")
    numba.set_num_threads(2)
    shape = REFERENCE_SHAPES[args.shape]
    x, weight, bias = reference_inputs(shape, np.float32)
    call = lambda: F.conv2d(x, weight, bias, stride=shape[6], padding=shape[7])  # noqa: E731
    call()
    team = getattr(_schedule._team, "members", None)
    if not team:
        parser.error("no watching team thread here (the shape ran on one thread, or no sched_yield)")
    member, caller = team[0], threading.get_native_id()
    for _ in range(args.rounds):
        time.sleep(args.pause)
        switches = _voluntary_switches(member.thread.native_id)
        _, _, times = timed_runs(call, args.calls)
        switched = _voluntary_switches(member.thread.native_id) - switches
        print(f"{args.shape}: median {statistics.median(times) * 1e3:.3f} ms; caller on core "
              f"{_last_core(caller)}, team thread on {_last_core(member.thread.native_id)} (may run on "
              f"{sorted(os.sched_getaffinity(member.thread.native_id))}), {switched} voluntary switches")


if __name__ == "__main__":
    main()
