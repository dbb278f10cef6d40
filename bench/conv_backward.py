"""A convolution's backward: the weight gradient, and the input gradient as a convolution or by col2im.

    python bench/conv_backward.py [--col2im | --flipped] [--by-samples] [--repeat 10] [--threads 2]

Times, for the 3x3 layers of the CIFAR-sized training network (batch 32), of ResNet-18 (batch
4) and MobileNetV2's depthwise and 1x1 layers (batch 4), the two halves of a float32
convolution's backward as a training step calls them: the weight and bias gradients
(``conv2d_backward(..., input_grad=False)``) and the input gradient
(``cnnlab.functional.conv.input_gradient``). ``--col2im`` computes every input gradient by
multiplying into columns and scattering them back (``FLIPPED_INPUT_GRADIENT = False``) instead of
as a convolution of the output gradient with the flipped weight where the rule says so;
``--flipped`` computes every stride-1 input gradient as a convolution, also where the rule keeps
col2im (twice as many filters as channels or more). Prints
the medians in microseconds. ``--by-samples`` splits every weight gradient between the threads by
samples, each summing into an accumulator of its own (``CHANNEL_SPLIT_BYTES`` set out of reach),
also where the rule splits it by blocks of input channels (gradients over 1 MB). Both ways in alternating processes::

    for round in 1 2; do python bench/conv_backward.py --col2im --by-samples; python bench/conv_backward.py; done
"""

import argparse

import numpy as np

from cnnlab.bench.measuring import kernel_bench_arguments, median_call_seconds
from cnnlab.functional import conv as functional_conv
from cnnlab.functional.common import blas_guard
from cnnlab.kernels import cpu as cpu_kernels
from cnnlab.kernels.cpu import conv as cpu_conv

# (name, samples, channels, filters, size, window, padding, groups)
LAYERS = [("cifar 3->32", 32, 3, 32, 32, 3, 1, 1), ("cifar 32->32", 32, 32, 32, 32, 3, 1, 1),
          ("cifar 32->64", 32, 32, 64, 16, 3, 1, 1), ("resnet 64", 4, 64, 64, 56, 3, 1, 1),
          ("resnet 128", 4, 128, 128, 28, 3, 1, 1), ("resnet 256", 4, 256, 256, 14, 3, 1, 1),
          ("resnet 512", 4, 512, 512, 7, 3, 1, 1), ("depthwise 96", 4, 96, 96, 56, 3, 1, 96),
          ("1x1 16->96", 4, 16, 96, 56, 1, 0, 1), ("1x1 96->24", 4, 96, 24, 56, 1, 0, 1)]


def main():
    parser = argparse.ArgumentParser()
    ways = parser.add_mutually_exclusive_group()
    ways.add_argument("--col2im", action="store_true", help="every input gradient by columns and col2im")
    ways.add_argument("--flipped", action="store_true", help="every stride-1 input gradient as a convolution")
    parser.add_argument("--by-samples", action="store_true", help="every weight gradient split by samples")
    args = kernel_bench_arguments(parser, repeat=10)
    if args.col2im:
        functional_conv.FLIPPED_INPUT_GRADIENT = False
    if args.flipped:
        functional_conv.FLIPPED_ALWAYS = True
    if args.by_samples:
        cpu_conv.CHANNEL_SPLIT_BYTES = 1 << 62
    way = "by col2im" if args.col2im else "as convolutions at stride 1" if args.flipped else \
        "as convolutions where the rule says so"
    print("input gradients " + way
          + ", weight gradients split by " + ("samples" if args.by_samples else "channels where the rule says so"))
    rng = np.random.default_rng(0)
    for name, samples, channels, filters, size, window, padding, groups in LAYERS:
        x = rng.standard_normal((samples, channels, size, size)).astype(np.float32)
        weight = (0.1 * rng.standard_normal((filters, channels // groups, window, window))).astype(np.float32)
        geometry = functional_conv.conv_geometry(x.shape, weight.shape, x.dtype, 1, padding, 1, groups)
        grad_out = rng.standard_normal((samples, filters) + geometry.out_shape).astype(np.float32)
        grad_x = np.empty_like(x)

        def input_gradient():
            with blas_guard(cpu_kernels):
                functional_conv.input_gradient(cpu_kernels, grad_out, weight, grad_x, geometry)

        weight_seconds = median_call_seconds(lambda: functional_conv.conv2d_backward(
            x, weight, grad_out, padding=padding, groups=groups, input_grad=False), args.repeat)
        input_seconds = median_call_seconds(input_gradient, args.repeat)
        print(f"{name:13s} batch {samples:2d} {size}x{size}: weight gradient {weight_seconds * 1e6:8.1f} us, "
              f"input gradient {input_seconds * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
