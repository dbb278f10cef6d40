"""Convolutions by panels (the vector micro-kernels of ``cnnlab.kernels.cpu._microkernel``)
against im2col and OpenBLAS's GEMM, and 3x3 ones by F(2x2, 3x3) (``._winograd``) against panels.

    python bench/panel_conv.py [--blas] [--no-winograd] [--weight-gradient] [--layers NAME ...]
                               [--repeat 20] [--threads 2]

Times float32 convolutions of the reference shapes and of network layers (at stride 1, and at
stride 2: a 3x3 layer onto 16x16, a 5x5 one, ResNet-18's 7x7 stem): the forward call
(``cnnlab.functional.conv2d`` with a ReLU), or with ``--weight-gradient`` the weight and bias
gradients (``conv2d_backward(..., input_grad=False)``). ``--blas`` turns the panels off
(``cnnlab.kernels.cpu.conv.PANELS = False``, and no F(2x2, 3x3)); ``--no-winograd`` turns F(2x2,
3x3) off (``cnnlab.kernels.cpu._winograd.WINOGRAD = False``). Prints the path each layer takes, its median in
milliseconds and the multiply-adds per second. Both ways in alternating processes::

    for round in 1 2; do python bench/panel_conv.py --blas; python bench/panel_conv.py; done
"""

import argparse

import numpy as np

import cnnlab.functional as F
from cnnlab.bench.measuring import kernel_bench_arguments, median_call_seconds
from cnnlab.bench.ops import REFERENCE_SHAPES, forward_path
from cnnlab.functional.conv import conv_geometry
from cnnlab.kernels.cpu import _winograd as winograd
from cnnlab.kernels.cpu import conv as cpu_conv

# name: (samples, channels, height, width, filters, window, stride, padding); the reference
# shapes of cnnlab.bench.ops among them
LAYERS = {
    "lenet2 b64": REFERENCE_SHAPES["lenet2"],
    "cifar b64": REFERENCE_SHAPES["cifar"],
    "32->32 32x32 b32": (32, 32, 32, 32, 32, 3, 1, 1),
    "32->64 16x16 b32": (32, 32, 16, 16, 64, 3, 1, 1),
    "32->64 32x32 b32": (32, 32, 32, 32, 64, 3, 1, 1),
    "16->32 5x5 b32": (32, 16, 32, 32, 32, 5, 1, 2),
    "resnet 56x56 b32": (32, 64, 56, 56, 64, 3, 1, 1),
    "resnet 56x56 b1": (1, 64, 56, 56, 64, 3, 1, 1),
    "resnet 28x28 b16": (16, 128, 28, 28, 128, 3, 1, 1),
    "resnet 14x14 b16": (16, 256, 14, 14, 256, 3, 1, 1),
    "resnet 7x7 b16": (16, 512, 7, 7, 512, 3, 1, 1),
    "resnet 28x28 b1": (1, 128, 28, 28, 128, 3, 1, 1),
    "resnet 14x14 b1": (1, 256, 14, 14, 256, 3, 1, 1),
    "resnet 7x7 b1": (1, 512, 7, 7, 512, 3, 1, 1),
    "32->32 8x8 b4": (4, 32, 8, 8, 32, 3, 1, 1),
    "32->64 8x8 b64": (64, 32, 8, 8, 64, 3, 1, 1),
    "strided b32": REFERENCE_SHAPES["strided"],
    "16->32 s2 b64": (64, 16, 32, 32, 32, 3, 2, 1),
    "5x5 s2 32->64 b4": (4, 32, 80, 80, 64, 5, 2, 2),
    "resnet stem b1": (1, 3, 224, 224, 64, 7, 2, 3),
    "resnet stem b16": (16, 3, 224, 224, 64, 7, 2, 3),
}


def _path(x, weight, stride, padding, backward):
    """The items function the forward convolution takes (or, with ``backward``, whether the
    weight gradient takes its dot products by panels)."""
    if backward:
        geometry = conv_geometry(x.shape, weight.shape, x.dtype, stride, padding, 1, 1)
        out_shape = (x.shape[0], weight.shape[0], *geometry.out_shape)
        pitch = cpu_conv._plane_extent(out_shape[3], weight.shape[3], stride, 1)
        block_rows = geometry.args[7]
        dots = cpu_conv._weight_gradient_by_panels(out_shape[3], weight.shape[3], stride, stride, 1, weight.nbytes,
                                                   min(block_rows, out_shape[2]) * pitch)
        return "weight gradient by panels" if dots else "weight gradient by GEMM"
    return forward_path(x, weight, stride, padding)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--blas", action="store_true", help="im2col and OpenBLAS: no panels")
    parser.add_argument("--no-winograd", action="store_true", help="no F(2x2, 3x3): 3x3 layers by panels or GEMM")
    parser.add_argument("--weight-gradient", action="store_true", help="time the weight gradient, not the forward")
    parser.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS), metavar="LAYER")
    args = kernel_bench_arguments(parser, repeat=20)
    if args.blas:
        cpu_conv.PANELS = False
    if args.blas or args.no_winograd:
        winograd.WINOGRAD = False
    print("im2col + OpenBLAS" if args.blas else "panels" if args.no_winograd else "F(2x2, 3x3) and panels where "
          "the rules say so")
    rng = np.random.default_rng(0)
    for name in args.layers:
        samples, channels, height, width, filters, window, stride, padding = LAYERS[name]
        x = rng.standard_normal((samples, channels, height, width)).astype(np.float32)
        weight = (rng.standard_normal((filters, channels, window, window)) / window).astype(np.float32)
        bias = rng.standard_normal(filters).astype(np.float32)
        out = F.conv2d(x, weight, bias, stride=stride, padding=padding, activation="relu")
        if args.weight_gradient:
            upstream = rng.standard_normal(out.shape).astype(np.float32)
            median = median_call_seconds(lambda: F.conv2d_backward(x, weight, upstream, stride=stride,
                                                                   padding=padding, input_grad=False), args.repeat)
        else:
            median = median_call_seconds(lambda: F.conv2d(x, weight, bias, stride=stride, padding=padding,
                                                          activation="relu", out=out), args.repeat)
        macs = out.size * channels * window * window
        print(f"{name:18s} {median * 1e3:8.3f} ms {macs / median / 1e9:6.1f} GMAC/s  "
              f"{_path(x, weight, stride, padding, args.weight_gradient)}")


if __name__ == "__main__":
    main()
