"""Convolutions by strips (``cnnlab.kernels.cpu._strips``) against the path each takes without them.

    python bench/strip_conv.py [--repeat 20] [--threads 2] [--rounds 2] [--layers NAME ...]

For the reference convolutions and network layers, prints the path the strips' rule leaves it
to (``STRIPS`` off), the median milliseconds of ``cnnlab.functional.conv2d`` (float32, with its
bias and a ReLU, a new output each call) that way and by strips (``STRIPS`` on, the rule's
limits lifted and F(2x2, 3x3) off: every layer here by strips), alternating in each round, and
the ratio of the best rounds (below 1: the strips are faster) with whether the rule takes the
strips for it. Both ways run in this process, on the same kernels' threads. Needs a processor
with AVX-512.
"""

import argparse

from cnnlab.bench.measuring import kernel_bench_arguments
from cnnlab.bench.ops import REFERENCE_SHAPES, path_against_before
from cnnlab.kernels.cpu import _strips, _winograd

# name: (samples, channels, height, width, filters, window, stride, padding)
LAYERS = {
    "strided": REFERENCE_SHAPES["strided"],
    "cifar": REFERENCE_SHAPES["cifar"],
    "resnet": REFERENCE_SHAPES["resnet"],
    "32->64 8x8 b64": (64, 32, 8, 8, 64, 3, 1, 1),
    "64->64 8x8 b32": (32, 64, 8, 8, 64, 3, 1, 1),
    "128->128 8x8 b32": (32, 128, 8, 8, 128, 3, 1, 1),
    "256->256 8x8 b16": (16, 256, 8, 8, 256, 3, 1, 1),
    "32->32 s2 b64": (64, 32, 32, 32, 32, 3, 2, 1),
    "64->64 s2 onto 8x8 b32": (32, 64, 16, 16, 64, 3, 2, 1),
    "16->32 5x5 b32": (32, 16, 32, 32, 32, 5, 1, 2),
    "resnet stem b1": (1, 3, 224, 224, 64, 7, 2, 3),
    "resnet stem b16": (16, 3, 224, 224, 64, 7, 2, 3),
    "mobilenet stem b1": (1, 3, 224, 224, 32, 3, 2, 1),
    "resnet 56x56 b1": (1, 64, 56, 56, 64, 3, 1, 1),
    "resnet 28x28 b1": (1, 128, 28, 28, 128, 3, 1, 1),
    "resnet 14x14 b1": (1, 256, 14, 14, 256, 3, 1, 1),
    "resnet 7x7 b1": (1, 512, 7, 7, 512, 3, 1, 1),
    "resnet 64->128 s2 b1": (1, 64, 56, 56, 128, 3, 2, 1),
    "resnet 128->256 s2 b1": (1, 128, 28, 28, 256, 3, 2, 1),
    "resnet 256->512 s2 b1": (1, 256, 14, 14, 512, 3, 2, 1),
    "resnet 28x28 b16": (16, 128, 28, 28, 128, 3, 1, 1),
    "resnet 14x14 b16": (16, 256, 14, 14, 256, 3, 1, 1),
    "resnet 7x7 b16": (16, 512, 7, 7, 512, 3, 1, 1),
    "resnet 64->128 s2 b16": (16, 64, 56, 56, 128, 3, 2, 1),
    "resnet 128->256 s2 b16": (16, 128, 28, 28, 256, 3, 2, 1),
    "resnet 256->512 s2 b16": (16, 256, 14, 14, 512, 3, 2, 1),
}
LIMITS = ("STRIPS", "STRIPS_MAX_SAMPLE_WEIGHT_BYTES", "STRIPS_MIN_PIXELS", "STRIPS_SMALL_MIN_TAPS")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS), metavar="LAYER")
    args = kernel_bench_arguments(parser, repeat=20)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not _strips.by_strips((64, 32, 3, 3), 1, (2, 2), (32, 64, 32, 32), 4):
        parser.error("this processor does not take the strips' path (it needs AVX-512)")
    print(f"convolutions by strips, {args.threads} threads: median ms of {args.repeat} calls, {args.rounds} rounds")
    saved = (*(getattr(_strips, name) for name in LIMITS), _winograd.WINOGRAD)

    def set_way(way):  # (the strips off; on, their limits lifted and F(2x2, 3x3) off; as found)
        values = saved if way is None else (True, 1 << 40, 0, 0, False) if way == "path" \
            else (False, *saved[1:])
        for name, value in zip(LIMITS, values):
            setattr(_strips, name, value)
        _winograd.WINOGRAD = values[-1]

    path_against_before([(name, LAYERS[name]) for name in args.layers], "_strip_forward_items", "strips", set_way,
                        args.rounds, args.repeat)


if __name__ == "__main__":
    main()
