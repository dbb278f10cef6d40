"""Training steps with their arrays from the step pool, or new arrays every step.

    python bench/step_pool.py [--no-pool] [--size 224] [--repeat 7] [--threads 2]

``Model.fit`` on ResNet-18 (``cnnlab.applications.resnet``) at batch 16, one step per call, as
``bench/models.py`` times its training row. On the CPU a step's arrays come from the graph's
``StepPool`` (``cnnlab.memory``); ``--no-pool`` makes every array new again, as before the pool.
Prints, for each step after the first (which compiles or loads the kernels): its time, the
minor page faults and the system time of the process during it, and the peak resident memory
of the process so far; then the median step. Both ways in alternating processes::

    for round in 1 2 3; do python bench/step_pool.py --no-pool; python bench/step_pool.py; done
"""

import argparse
import contextlib
import resource
import time

import numpy as np

from cnnlab import memory, optim
from cnnlab.applications import resnet
from cnnlab.bench.measuring import kernel_bench_arguments, maxrss_bytes


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--no-pool", action="store_true", help="new arrays every step, not the step pool's")
    parser.add_argument("--size", type=int, default=224, help="image height and width")
    args = kernel_bench_arguments(parser, repeat=7)
    if args.size < 32:
        parser.error("--size must be at least 32 (ResNet-18's total stride)")
    if args.no_pool:
        memory.StepPool.lending = lambda self: contextlib.nullcontext()
    model = resnet(18, seed=0, input_shape=(3, args.size, args.size))
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 3, args.size, args.size)).astype(np.float32)
    y = rng.integers(0, 1000, len(x))
    optimizer = optim.SGD(0.01)
    print(f"ResNet-18, batch 16, {args.size}x{args.size}, " + ("new arrays every step" if args.no_pool else "step pool"))
    times = []
    for step in range(args.repeat + 1):
        before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        model.fit(x, y, epochs=1, batch_size=16, optimizer=optimizer, shuffle=False, verbose=0)
        seconds, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
        if step == 0:
            continue
        times.append(seconds)
        print(f"step {step}: {seconds * 1e3:7.0f} ms, {after.ru_minflt - before.ru_minflt:6d} minor faults, "
              f"system {(after.ru_stime - before.ru_stime) * 1e3:4.0f} ms, peak resident {maxrss_bytes() / 2**20:5.0f} MB")
    print(f"median step {np.median(times) * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
