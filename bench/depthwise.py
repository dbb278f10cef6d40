"""Depthwise convolutions of real networks' shapes, batch 1, as an inference plan calls them.

    python bench/depthwise.py [--repeat 200] [--threads 2]

Each layer (MobileNetV2's 3x3 layers at stride 1 and 2, from 112x112 down to 7x7, and 5x5
layers of PP-LCNet's and MobileNetV3's shapes, 7x7 layers of PP-OCRv6's detector at 640x640 and
of ConvNeXt's) is a float32 ``conv2d`` with a ReLU6 epilogue,
bound once (:func:`cnnlab.functional.conv.bind_conv2d`, the fused step's fast path) and then
called ``--repeat`` times into the same output. Prints the median in microseconds and the
multiply-adds per second. Two versions, in alternating processes::

    git worktree add /tmp/before COMMIT
    for round in 1 2; do PYTHONPATH=/tmp/before python bench/depthwise.py; python bench/depthwise.py; done
"""

import argparse

import numpy as np

from cnnlab.bench.measuring import kernel_bench_arguments, median_call_seconds
from cnnlab.functional.conv import bind_conv2d

# (channels, height = width, window, stride)
LAYERS = [(96, 112, 3, 2), (32, 112, 3, 1), (144, 56, 3, 1), (144, 56, 3, 2), (192, 28, 3, 2), (576, 14, 3, 1),
          (576, 14, 3, 2), (960, 7, 3, 1), (64, 40, 5, 1), (256, 10, 5, 2), (512, 5, 5, 1), (96, 160, 7, 1),
          (96, 80, 7, 1), (96, 56, 7, 1), (384, 14, 7, 1)]


def main():
    args = kernel_bench_arguments(argparse.ArgumentParser(), repeat=200)
    rng = np.random.default_rng(0)
    for channels, size, window, stride in LAYERS:
        x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
        weight = rng.standard_normal((channels, 1, window, window)).astype(np.float32)
        bias = rng.standard_normal(channels).astype(np.float32)
        bound = bind_conv2d(x, weight, bias, stride=stride, padding=window // 2, groups=channels, activation="relu6")
        out = np.empty(bound.out_shape, np.float32)
        median = median_call_seconds(lambda: bound(x, weight, bias, out=out), args.repeat, warmup=10)
        macs = channels * out.shape[2] * out.shape[3] * window * window
        print(f"{channels:4d} x {size:3d}x{size:<3d} {window}x{window} stride {stride}: {median * 1e6:8.1f} us "
              f"{macs / median / 1e9:6.1f} GMAC/s")


if __name__ == "__main__":
    main()
