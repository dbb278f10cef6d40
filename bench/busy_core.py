"""Even shares against claimed pieces (``config.CLAIM_MIN_WORK``), on an idle machine and
beside a busy loop that takes one core's time.

    python bench/busy_core.py [--repeat 10] [--rounds 6] [--threads 2] [--only idle|busy]

The CPU kernels whose items write disjoint outputs cut large work into pieces that the
threads claim as they go (:func:`cnnlab.kernels.cpu._schedule.pieces`). This times, in one
process, rounds that alternate the two ways (the claim threshold at its default, or out of
reach: one even share a thread) on the forward convolutions of the ``cifar`` and ``strided``
reference shapes, the backward pass of a 32-channel 3x3 layer at 32x32 (batch 32: input and
weight gradients) and the CIFAR-sized training step of ``cnnlab bench --op models``
(:func:`cnnlab.bench.networks.cnnlab_training_step`, ms a step). It does so with the machine
idle, then again while another process runs ``while True: pass`` (a user's other work: its
core is then shared, and a thread there runs at about half speed). Prints the median of each
way's ``--rounds`` medians, in milliseconds, and their ratio (below 1: the pieces are faster).
"""

import argparse
import statistics
import subprocess
import sys
import time

import numpy as np

import cnnlab.config as config
import cnnlab.functional as F
from cnnlab.bench.measuring import kernel_bench_arguments
from cnnlab.bench.networks import TRAIN_STEPS, cnnlab_training_step
from cnnlab.bench.ops import REFERENCE_SHAPES, reference_inputs

WAYS = {"even shares": 1 << 62, "claimed pieces": config.CLAIM_MIN_WORK}


def cases():
    """``{name: (function, calls it stands for)}``."""
    result = {}
    for name in ("cifar", "strided"):
        shape = REFERENCE_SHAPES[name]
        x, w, b = reference_inputs(shape, np.float32)
        result[f"conv2d {name}"] = ((lambda x=x, w=w, b=b, s=shape: F.conv2d(x, w, b, stride=s[6], padding=s[7])), 1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 32, 32, 32)).astype(np.float32)
    w = (rng.standard_normal((32, 32, 3, 3)) / 17).astype(np.float32)
    grad = rng.standard_normal((32, 32, 32, 32)).astype(np.float32)
    result["conv2d_backward 32 at 32x32"] = (lambda: F.conv2d_backward(x, w, grad, padding=1), 1)
    result["training step"] = (cnnlab_training_step(), TRAIN_STEPS)
    return result


def median_ms(function, calls, repeat):
    function()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) / calls * 1e3)
    return statistics.median(times)


def compare(label, timed, repeat, rounds):
    print(f"{label}:")
    print(f"  {'case':30} {'even shares ms':>15} {'claimed pieces ms':>18} {'ratio':>6}")
    for name, (function, calls) in timed.items():
        medians = {way: [] for way in WAYS}
        for _ in range(rounds):
            for way, threshold in WAYS.items():
                config.CLAIM_MIN_WORK = threshold
                medians[way].append(median_ms(function, calls, repeat))
        even, claimed = (statistics.median(medians[way]) for way in WAYS)
        print(f"  {name:30} {even:15.2f} {claimed:18.2f} {claimed / even:6.2f}", flush=True)
    config.reset()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--only", choices=["idle", "busy"])
    args = kernel_bench_arguments(parser, repeat=10)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    timed = cases()
    if args.only != "busy":
        compare("idle", timed, args.repeat, args.rounds)
    if args.only != "idle":
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            compare("beside a busy loop", timed, args.repeat, args.rounds)
        finally:
            busy.kill()


if __name__ == "__main__":
    main()
