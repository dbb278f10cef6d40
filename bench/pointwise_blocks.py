"""1x1 convolutions at batch 1 by pixel blocks sized for the cache, or in as few blocks as threads;
on small maps at batch 16, with the samples innermost or a GEMM per sample.

    python bench/pointwise_blocks.py [--whole | --blocks] [--repeat 40] [--threads 2]
    python bench/pointwise_blocks.py --small [--per-sample | --expansion E]

Times the bound float32 1x1 convolutions (ReLU6 epilogue, as an inference plan calls them) of
MobileNetV2's shapes, from 16 -> 96 channels at 112x112 to 96 -> 576 at 14x14, at batch 1 and 16.
By default each work item is a block of pixels whose input and output columns fit in
``cnnlab.functional.conv.POINTWISE_BLOCK_BYTES``; ``--whole`` lifts that budget, so that each
thread takes one block of rows (the earlier way). The blocks are taken only where the GEMMs are not
cut into tiles for OpenBLAS's small-matrix kernel (``cnnlab.kernels.cpu.conv2d_pointwise_pixel_blocks``:
its AVX-512 kernels keep the tiles' columns in the cache themselves); ``--blocks`` takes them
whatever the BLAS. Prints the geometry's rows per item and the median in microseconds. Two
ways in alternating processes::

    for round in 1 2; do python bench/pointwise_blocks.py --whole; python bench/pointwise_blocks.py; done
    for round in 1 2; do python bench/pointwise_blocks.py --blocks; python bench/pointwise_blocks.py; done

``--small`` times MobileNetV2's 1x1 convolutions of 7x7 maps at batch 16 instead, and prints
each one's path; ``--per-sample`` turns off the rule that sends those expanding the channels to
the samples-innermost path (``cnnlab.kernels.cpu.conv.POINTWISE_EXPANSION``), and ``--expansion
E`` sets that rule's ratio of filters to channels (0: every one of them that way), so that the
ways can be run in alternating processes::

    for round in 1 2 3; do python bench/pointwise_blocks.py --small --per-sample; python bench/pointwise_blocks.py --small; done
"""

import argparse

import numpy as np

from cnnlab.bench.measuring import kernel_bench_arguments, median_call_seconds
from cnnlab.functional import conv as functional_conv
from cnnlab.kernels import cpu as cpu_kernels
from cnnlab.kernels.cpu import conv as cpu_conv

# (batch, channels, filters, size)
LAYERS = [(1, 16, 96, 112), (1, 32, 16, 112), (1, 24, 144, 56), (1, 144, 24, 56), (1, 32, 192, 28),
          (1, 96, 576, 14), (16, 24, 144, 56), (16, 144, 24, 56), (16, 32, 192, 28), (16, 192, 32, 28),
          (16, 64, 384, 14), (16, 96, 576, 14), (16, 576, 96, 14)]
SMALL_LAYERS = [(16, 160, 960, 7), (16, 960, 160, 7), (16, 960, 320, 7), (16, 320, 1280, 7), (16, 576, 160, 7)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--whole", action="store_true", help="one block of rows per thread")
    parser.add_argument("--blocks", action="store_true", help="cache-sized pixel blocks whatever the BLAS")
    parser.add_argument("--small", action="store_true", help="MobileNetV2's 7x7 layers at batch 16")
    parser.add_argument("--per-sample", action="store_true", help="no 1x1 convolution with the samples innermost")
    parser.add_argument("--expansion", type=int, help="the samples-innermost rule's ratio of filters to channels")
    args = kernel_bench_arguments(parser, repeat=40)
    if args.per_sample:
        cpu_conv.POINTWISE_EXPANSION = 1 << 40
    elif args.expansion is not None:
        cpu_conv.POINTWISE_EXPANSION = args.expansion
    if args.blocks:
        cpu_kernels.conv2d_pointwise_pixel_blocks = lambda dtype: True
    if args.whole:
        functional_conv.POINTWISE_BLOCK_BYTES = 1 << 40
    print("one block of rows per thread" if args.whole else
          f"pixel blocks of at most {functional_conv.POINTWISE_BLOCK_BYTES} bytes")
    rng = np.random.default_rng(0)
    for batch, channels, filters, size in SMALL_LAYERS if args.small else LAYERS:
        x = rng.standard_normal((batch, channels, size, size)).astype(np.float32)
        weight = rng.standard_normal((filters, channels, 1, 1)).astype(np.float32)
        bias = rng.standard_normal(filters).astype(np.float32)
        bound = functional_conv.bind_conv2d(x, weight, bias, activation="relu6")
        out = np.empty(bound.out_shape, np.float32)
        median = median_call_seconds(lambda: bound(x, weight, bias, out=out), args.repeat)
        print(f"{batch:2d} x {channels:3d}->{filters:3d} {size}x{size}: rows per item {bound.geometry.args[7]:3d}, "
              f"{bound.work[0].__name__}, {median * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
