"""Convolutions with few input channels per group: computed directly, or by im2col and a GEMM.

    python bench/direct_conv.py [--gemm] [--repeat 40] [--threads 2]

Times the bound float32 convolution (with a ReLU epilogue, as an inference plan calls it) of
network stems (RGB at 224x224, 80x160, 48x192 and 640x640, stride 2; RGB to 64 filters at
stride 1), the CIFAR-sized training net's and the demo's first layers (batch 32), and grouped
convolutions of 4 and 2 channels per group. ``--gemm`` sends the few-channel ones through the
im2col + GEMM path instead (``cnnlab.kernels.cpu.conv.DIRECT_MAX_CHANNELS = 0``; depthwise
convolutions stay direct). Prints the median in microseconds and the multiply-adds per second.
Both ways in alternating processes::

    for round in 1 2; do python bench/direct_conv.py --gemm; python bench/direct_conv.py; done
"""

import argparse

import numpy as np

from cnnlab.bench.measuring import kernel_bench_arguments, median_call_seconds
from cnnlab.functional.conv import bind_conv2d
from cnnlab.kernels.cpu import conv as cpu_conv

# (samples, channels, filters, height, width, window, stride, groups)
LAYERS = [(1, 3, 32, 224, 224, 3, 2, 1), (1, 3, 16, 80, 160, 3, 2, 1), (1, 3, 8, 48, 192, 3, 2, 1),
          (1, 3, 24, 640, 640, 3, 2, 1), (1, 3, 64, 224, 224, 3, 1, 1), (32, 3, 16, 32, 32, 3, 1, 1),
          (32, 1, 6, 28, 28, 5, 1, 1), (1, 16, 16, 56, 56, 3, 1, 4), (1, 64, 64, 56, 56, 3, 1, 32)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gemm", action="store_true", help="few-channel convolutions by im2col and a GEMM")
    args = kernel_bench_arguments(parser, repeat=40)
    if args.gemm:
        cpu_conv.DIRECT_MAX_CHANNELS = 0
    print("im2col + GEMM" if args.gemm else "direct where the rule says so")
    rng = np.random.default_rng(0)
    for samples, channels, filters, height, width, window, stride, groups in LAYERS:
        x = rng.standard_normal((samples, channels, height, width)).astype(np.float32)
        weight = rng.standard_normal((filters, channels // groups, window, window)).astype(np.float32)
        bias = rng.standard_normal(filters).astype(np.float32)
        bound = bind_conv2d(x, weight, bias, stride=stride, padding=window // 2, groups=groups, activation="relu")
        out = np.empty(bound.out_shape, np.float32)
        median = median_call_seconds(lambda: bound(x, weight, bias, out=out), args.repeat)
        macs = out.size * (channels // groups) * window * window
        print(f"{samples:2d} x {channels:2d}->{filters:2d} {height}x{width} {window}x{window} stride {stride} "
              f"groups {groups:2d}: {median * 1e6:8.1f} us {macs / median / 1e9:6.1f} GMAC/s")


if __name__ == "__main__":
    main()
