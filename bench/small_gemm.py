"""Convolutions' GEMMs cut for OpenBLAS's small-matrix kernel, or taken whole.

    python bench/small_gemm.py [--one-gemm] [--repeat 20] [--threads 2]

OpenBLAS's AVX-512 kernels run a single-precision GEMM of at most 1,000,000 multiply-adds
through a small-matrix kernel that packs nothing; the convolutions cut their GEMMs into blocks
of rows, parts of the depth and tiles of columns that fit
(``cnnlab.kernels.cpu.conv._gemm_in_small_pieces``) where ``small_gemm_limit`` finds those
kernels. Times, in float32: the bound forward convolution (with a ReLU epilogue, as an inference
plan calls it) of CIFAR-, ResNet- and MobileNet-sized layers, 1x1 layers among them; the weight
gradient of four layers small enough to be split by samples; and the input gradient by col2im
of two layers that take it.
``--one-gemm`` takes every GEMM whole (the limit set to 0). Prints the BLAS, then the median in
microseconds and the multiply-adds per second. Both ways in alternating processes::

    for round in 1 2; do python bench/small_gemm.py --one-gemm; python bench/small_gemm.py; done
"""

import argparse

import numpy as np

from cnnlab.bench.measuring import kernel_bench_arguments, median_call_seconds
from cnnlab.functional import conv as functional_conv
from cnnlab.functional.common import blas_guard
from cnnlab.functional.conv import bind_conv2d
from cnnlab.kernels import cpu as cpu_kernels
from cnnlab.kernels.cpu import conv as cpu_conv
from cnnlab.parallel import blas_kernels

# (name, samples, channels, filters, size, window, stride)
FORWARD = [("cifar 32->32", 32, 32, 32, 32, 3, 1), ("cifar 32->64", 32, 32, 64, 16, 3, 1),
           ("stride-2 reference", 32, 32, 64, 64, 3, 2), ("resnet stem", 1, 3, 64, 224, 7, 2),
           ("resnet 64", 4, 64, 64, 56, 3, 1), ("resnet 128", 4, 128, 128, 28, 3, 1),
           ("resnet 256", 4, 256, 256, 14, 3, 1), ("1x1 96->576", 1, 96, 576, 14, 1, 1),
           ("1x1 960->160", 1, 960, 160, 7, 1, 1), ("1x1 384->64", 16, 384, 64, 14, 1, 1)]
# weight gradients split by samples (at most 1 MB)
WEIGHT = [("cifar 32->32", 32, 32, 32, 32, 3, 1), ("cifar 32->64", 32, 32, 64, 16, 3, 1),
          ("resnet 64", 4, 64, 64, 56, 3, 1), ("resnet 128", 4, 128, 128, 28, 3, 1)]
# input gradients by col2im: more than twice as many filters as channels, and a stride
BACKWARD = [("16->64", 32, 16, 64, 32, 3, 1), ("resnet 64->128", 4, 64, 128, 56, 3, 2)]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--one-gemm", action="store_true", help="every GEMM whole, not cut for a small-matrix kernel")
    args = kernel_bench_arguments(parser, repeat=20)
    if args.one_gemm:
        cpu_conv.small_gemm_limit = lambda dtype: 0
    print(f"{blas_kernels()}: GEMMs " + ("whole" if args.one_gemm else
                                         f"cut to {cpu_conv.small_gemm_limit(np.float32):,} multiply-adds where they fit"))
    rng = np.random.default_rng(0)
    for name, samples, channels, filters, size, window, stride in FORWARD:
        x = rng.standard_normal((samples, channels, size, size)).astype(np.float32)
        weight = (0.1 * rng.standard_normal((filters, channels, window, window))).astype(np.float32)
        bias = rng.standard_normal(filters).astype(np.float32)
        bound = bind_conv2d(x, weight, bias, stride=stride, padding=window // 2, activation="relu")
        out = np.empty(bound.out_shape, np.float32)
        median = median_call_seconds(lambda: bound(x, weight, bias, out=out), args.repeat)
        report(f"forward {name}", samples, size, out.size * channels * window * window, median)
    for name, samples, channels, filters, size, window, stride in WEIGHT:
        x = rng.standard_normal((samples, channels, size, size)).astype(np.float32)
        weight = (0.1 * rng.standard_normal((filters, channels, window, window))).astype(np.float32)
        grad_out = rng.standard_normal(functional_conv.conv2d(x, weight, stride=stride, padding=window // 2).shape)
        grad_out = grad_out.astype(np.float32)
        median = median_call_seconds(lambda: functional_conv.conv2d_backward(
            x, weight, grad_out, stride=stride, padding=window // 2, input_grad=False), args.repeat)
        report(f"weight gradient {name}", samples, size, grad_out.size * channels * window * window, median)
    for name, samples, channels, filters, size, window, stride in BACKWARD:
        x = rng.standard_normal((samples, channels, size, size)).astype(np.float32)
        weight = (0.1 * rng.standard_normal((filters, channels, window, window))).astype(np.float32)
        geometry = functional_conv.conv_geometry(x.shape, weight.shape, x.dtype, stride, window // 2, 1, 1)
        grad_out = rng.standard_normal((samples, filters) + geometry.out_shape).astype(np.float32)
        grad_x = np.empty_like(x)

        def input_gradient():
            with blas_guard(cpu_kernels):
                functional_conv.input_gradient(cpu_kernels, grad_out, weight, grad_x, geometry)

        median = median_call_seconds(input_gradient, args.repeat)
        report(f"input gradient {name}", samples, size, grad_out.size * channels * window * window, median)


def report(name, samples, size, macs, seconds):
    print(f"{name:30s} batch {samples:2d} {size:3d}x{size:<3d}: {seconds * 1e6:9.1f} us {macs / seconds / 1e9:6.1f} GMAC/s")


if __name__ == "__main__":
    main()
