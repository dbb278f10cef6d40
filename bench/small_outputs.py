"""Convolutions onto small outputs (fewer than 128 pixels, at a batch), forward and weight
gradient, as functional calls.

    python bench/small_outputs.py [--repeat 20] [--rounds 7] [--threads 2]

Times ``cnnlab.functional.conv2d`` and ``conv2d_backward(..., input_grad=False)`` (float32,
``--threads`` Numba threads) on LeNet's second layer (``lenet2``), the demo's second layer (32 to 64
channels at 4x4, batch 32), a CIFAR-sized 64-channel layer at 8x8 (batch 32) and a ResNet-18
layer at 7x7 whose weight gradient is split by input channels (batch 16). Prints, per shape,
the fastest of ``--rounds`` runs of ``--repeat`` calls, in microseconds a call. Two versions
in alternating processes::

    git worktree add /tmp/before COMMIT
    for round in 1 2 3; do PYTHONPATH=/tmp/before python bench/small_outputs.py; python bench/small_outputs.py; done
"""

import argparse
import timeit

import numpy as np

import cnnlab.functional as F
from cnnlab.bench.measuring import kernel_bench_arguments
from cnnlab.bench.ops import REFERENCE_SHAPES, reference_inputs

SHAPES = {  # (N, C, H, W, filters, kernel, stride, padding)
    "lenet2": REFERENCE_SHAPES["lenet2"],
    "demo's second layer": (32, 32, 4, 4, 64, 3, 1, 1),
    "64 channels at 8x8": (32, 64, 8, 8, 64, 3, 1, 1),
    "ResNet-18 7x7, 512 to 128": (16, 512, 7, 7, 128, 3, 1, 1),
}


def fastest(function, repeat, rounds):
    """The fastest of ``rounds`` runs of ``repeat`` calls, in seconds a call (after one call)."""
    function()
    return min(timeit.repeat(function, number=repeat, repeat=rounds)) / repeat


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    args = kernel_bench_arguments(parser, repeat=20)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    print(f"{'shape':28} {'forward us':>11} {'weight gradient us':>19}")
    for name, shape in SHAPES.items():
        x, w, b = reference_inputs(shape, np.float32)
        stride, padding = shape[6], shape[7]
        out = F.conv2d(x, w, b, stride=stride, padding=padding)
        grad = np.random.default_rng(0).standard_normal(out.shape).astype(np.float32)
        forward = fastest(lambda: F.conv2d(x, w, b, stride=stride, padding=padding), args.repeat, args.rounds)
        backward = fastest(lambda: F.conv2d_backward(x, w, grad, stride=stride, padding=padding, input_grad=False),
                           args.repeat, args.rounds)
        print(f"{name:28} {forward * 1e6:11.0f} {backward * 1e6:19.0f}")


if __name__ == "__main__":
    main()
