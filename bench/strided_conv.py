"""Strided convolutions on the GEMM path: columns through polyphase planes, or copied row by row.

    python bench/strided_conv.py [--rows] [--stride-1] [--repeat 20] [--threads 2]

Times the bound float32 convolution (with a ReLU epilogue, as an inference plan calls it) of
the stride-2 reference shape (32 to 64 channels at 64x64, batch 32), ResNet-18's 7x7 stem and
its three 3x3 stride-2 layers at batch 1, and a 5x5 stride-2 layer; with ``--stride-1``,
stride-1 layers instead, whose columns the rule copies through the padded input (LeNet's second
layer at batch 64, the CIFAR-sized 32-channel layer at batch 32, ResNet-18's 56x56 and 28x28
layers at batch 1) or row by row (its 14x14 layer). ``--rows`` copies every
tap's columns row by row (``cnnlab.kernels.cpu.conv.IM2COL_BY_PLANES = False``) instead of
through the stride's polyphase planes. Prints the median in microseconds and the multiply-adds
per second. Both ways in alternating processes::

    for round in 1 2; do python bench/strided_conv.py --rows; python bench/strided_conv.py; done
"""

import argparse

import numpy as np

from cnnlab.bench.measuring import kernel_bench_arguments, median_call_seconds
from cnnlab.functional.conv import bind_conv2d
from cnnlab.kernels.cpu import conv as cpu_conv

# (name, samples, channels, filters, size, window, stride, padding)
LAYERS = [("reference", 32, 32, 64, 64, 3, 2, 1), ("resnet stem", 1, 3, 64, 224, 7, 2, 3),
          ("resnet 64->128", 1, 64, 128, 56, 3, 2, 1), ("resnet 128->256", 1, 128, 256, 28, 3, 2, 1),
          ("resnet 256->512", 1, 256, 512, 14, 3, 2, 1), ("5x5 32->64", 4, 32, 64, 80, 5, 2, 2)]
STRIDE_ONE = [("lenet2", 64, 6, 16, 12, 5, 1, 0), ("cifar 32->32", 32, 32, 32, 32, 3, 1, 1),
              ("resnet 64->64", 1, 64, 64, 56, 3, 1, 1), ("resnet 128->128", 1, 128, 128, 28, 3, 1, 1),
              ("resnet 256->256", 1, 256, 256, 14, 3, 1, 1)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", action="store_true", help="columns copied row by row, not through planes")
    parser.add_argument("--stride-1", action="store_true", help="stride-1 layers instead of strided ones")
    args = kernel_bench_arguments(parser, repeat=20)
    if args.rows:
        cpu_conv.IM2COL_BY_PLANES = False
    print("columns row by row" if args.rows else "columns through polyphase planes where the rule says so")
    rng = np.random.default_rng(0)
    for name, samples, channels, filters, size, window, stride, padding in STRIDE_ONE if args.stride_1 else LAYERS:
        x = rng.standard_normal((samples, channels, size, size)).astype(np.float32)
        weight = rng.standard_normal((filters, channels, window, window)).astype(np.float32)
        bias = rng.standard_normal(filters).astype(np.float32)
        bound = bind_conv2d(x, weight, bias, stride=stride, padding=padding, activation="relu")
        out = np.empty(bound.out_shape, np.float32)
        median = median_call_seconds(lambda: bound(x, weight, bias, out=out), args.repeat)
        macs = out.size * channels * window * window
        print(f"{name:16s} batch {samples:2d} {size}x{size} {window}x{window}: {median * 1e6:9.1f} us "
              f"{macs / median / 1e9:6.1f} GMAC/s")


if __name__ == "__main__":
    main()
