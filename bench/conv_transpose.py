"""Transposed convolutions whose window is their stride (the text detectors' 2x2 upsampling):
the items that write each output pixel once against the general path, in one process.

    python bench/conv_transpose.py [--threads 2] [--repeat 40] [--rounds 3]

``F.conv_transpose2d`` on the detectors' shapes (float32, batch 1 unless said), each way in
turn for ``--rounds`` rounds of ``--repeat`` calls: as it runs (``_tiled_input_items``, a GEMM a
block of output channels), and with the tiling rule turned off (``_tiling_windows`` False: the
row blocks of ``_conv2d_backward_input_items``, zeros, a GEMM a block of rows, the columns
added). Prints each way's median per round (ms) and the ratio of the best rounds.
"""

import argparse
import time

import numba
import numpy as np

import cnnlab.functional as F
from cnnlab.kernels.cpu import conv as cpu_conv

#: (name, x shape, output channels, bias)
SHAPES = [
    ("det 24 -> 24 at 80x80", (1, 24, 80, 80), 24, False),
    ("det 24 -> 1 at 160x160", (1, 24, 160, 160), 1, False),
    ("det 16 -> 16 at 80x80", (1, 16, 80, 80), 16, False),
    ("slider 128 -> 128 at 40x40, bias", (1, 128, 40, 40), 128, True),
    ("det 24 -> 24 at 80x80, batch 4", (4, 24, 80, 80), 24, False),
]


def _median_ms(call, repeat):
    for _ in range(5):
        call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if min(args.threads, args.repeat, args.rounds) < 1:
        parser.error("--threads, --repeat and --rounds must be at least 1")
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(0)
    tiling = cpu_conv._tiling_windows
    print(f"{args.threads} threads, medians of {args.repeat} calls, {args.rounds} rounds (ms)")
    for name, shape, filters, with_bias in SHAPES:
        x = rng.standard_normal(shape).astype(np.float32)
        weight = rng.standard_normal((shape[1], filters, 2, 2)).astype(np.float32)
        bias = rng.standard_normal(filters).astype(np.float32) if with_bias else None
        ways = {"tiled": [], "general": []}
        for _ in range(args.rounds):
            for way in ways:
                cpu_conv._tiling_windows = tiling if way == "tiled" else (lambda *arguments: False)
                try:
                    ways[way].append(_median_ms(lambda: F.conv_transpose2d(x, weight, bias, stride=2), args.repeat))
                finally:
                    cpu_conv._tiling_windows = tiling
        rounds = "  ".join(f"{way} {', '.join(f'{t:.3f}' for t in times)}" for way, times in ways.items())
        print(f"{name:34s} {rounds}  ratio {min(ways['tiled']) / min(ways['general']):.2f}x")


if __name__ == "__main__":
    main()
