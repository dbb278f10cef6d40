"""Convolutions with few input channels per group: computed directly, or by im2col and a GEMM.

    python bench/direct_conv.py [--gemm | --direct] [--repeat 40] [--threads 2]

Times the bound float32 convolution (with a ReLU epilogue, as an inference plan calls it) of
network stems (RGB at 224x224, 80x160, 48x192 and 640x640, stride 2; RGB to 64 filters at
stride 1), the CIFAR-sized training net's and the demo's first layers (batch 32), grouped
convolutions of 4 and 2 channels per group, and few-channel layers of fewer filters (LeNet's
first layer at batch 64 and 1, and others of 4 to 8 filters). ``--gemm`` sends the few-channel
ones through the im2col + GEMM path instead (``cnnlab.kernels.cpu.conv.DIRECT_MAX_CHANNELS =
0``; depthwise convolutions stay direct); ``--direct`` keeps every few-channel one on the direct
loops, none by the 512-bit panels (``_few_channels_by_panels`` false). Prints the path, the
median in microseconds and the multiply-adds per second. Two ways in alternating processes::

    for round in 1 2; do python bench/direct_conv.py --direct; python bench/direct_conv.py; done
"""

import argparse

import numpy as np

from cnnlab.bench.measuring import kernel_bench_arguments, median_call_seconds
from cnnlab.functional.conv import bind_conv2d
from cnnlab.kernels.cpu import conv as cpu_conv

# (samples, channels, filters, height, width, window, stride, groups)
LAYERS = [(1, 3, 32, 224, 224, 3, 2, 1), (1, 3, 16, 80, 160, 3, 2, 1), (1, 3, 8, 48, 192, 3, 2, 1),
          (1, 3, 24, 640, 640, 3, 2, 1), (1, 3, 64, 224, 224, 3, 1, 1), (32, 3, 16, 32, 32, 3, 1, 1),
          (32, 1, 6, 28, 28, 5, 1, 1), (1, 16, 16, 56, 56, 3, 1, 4), (1, 64, 64, 56, 56, 3, 1, 32),
          (64, 1, 6, 28, 28, 5, 1, 1), (1, 1, 6, 28, 28, 5, 1, 1), (32, 3, 6, 32, 32, 5, 1, 1),
          (32, 3, 8, 32, 32, 3, 1, 1), (1, 3, 8, 32, 32, 3, 1, 1), (64, 4, 8, 12, 12, 3, 1, 1),
          (16, 3, 4, 64, 64, 3, 1, 1), (64, 1, 4, 28, 28, 3, 1, 1), (128, 1, 8, 8, 8, 3, 1, 1)]


def main():
    parser = argparse.ArgumentParser()
    ways = parser.add_mutually_exclusive_group()
    ways.add_argument("--gemm", action="store_true", help="few-channel convolutions by im2col and a GEMM")
    ways.add_argument("--direct", action="store_true", help="few-channel convolutions by the direct loops, "
                                                             "none by the 512-bit panels")
    args = kernel_bench_arguments(parser, repeat=40)
    if args.gemm:
        cpu_conv.DIRECT_MAX_CHANNELS = 0
    if args.direct:
        cpu_conv._few_channels_by_panels = lambda weight_shape, groups, pixels: False
    print("im2col + GEMM" if args.gemm else "direct loops" if args.direct else "the rule's paths")
    rng = np.random.default_rng(0)
    for samples, channels, filters, height, width, window, stride, groups in LAYERS:
        x = rng.standard_normal((samples, channels, height, width)).astype(np.float32)
        weight = rng.standard_normal((filters, channels // groups, window, window)).astype(np.float32)
        bias = rng.standard_normal(filters).astype(np.float32)
        bound = bind_conv2d(x, weight, bias, stride=stride, padding=window // 2, groups=groups, activation="relu")
        out = np.empty(bound.out_shape, np.float32)
        median = median_call_seconds(lambda: bound(x, weight, bias, out=out), args.repeat)
        macs = out.size * (channels // groups) * window * window
        path = bound.work[0].__name__.strip("_").replace("_items", "") if hasattr(bound, "work") else ""
        print(f"{samples:3d} x {channels:2d}->{filters:2d} {height}x{width} {window}x{window} stride {stride} "
              f"groups {groups:2d}: {median * 1e6:8.1f} us {macs / median / 1e9:6.1f} GMAC/s  {path}")


if __name__ == "__main__":
    main()
