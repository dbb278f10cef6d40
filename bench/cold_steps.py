"""The same inference plan's Python on small and on large feature maps: how much of a step's
Python overhead comes from the caches the kernels have filled with their data.

    python bench/cold_steps.py [--shapes 8x4 64x56 32x112] [--steps 50] [--repeat 50] [--threads 2]

For each ``CxS`` a chain of ``--steps`` 1x1 convolutions (C to C channels) each followed by a ReLU
(one fused step each) runs on a batch of one ``C x S x S`` input, and
:func:`cnnlab.bench.overhead.node_overhead` splits the call into the time inside the kernels
and the rest, as ``bench/node_overhead.py`` does for ONNX files. The steps' Python is the same
at every size; on small maps the interpreter's own data stays in the caches between steps, on
large ones each step's kernel streams megabytes through them first. Prints one line per shape.
"""

import argparse

import numpy as np

import cnnlab
from cnnlab.bench.measuring import kernel_bench_arguments
from cnnlab.bench.overhead import format_overhead, node_overhead
from cnnlab.layers import Conv2D, ReLU


def _shape(text):
    """``"64x56"`` -> (64, 56)."""
    try:
        channels, size = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is CxS (channels x size), e.g. 64x56, got {text!r}") from None
    if channels < 1 or size < 1:
        raise argparse.ArgumentTypeError(f"channels and size must be at least 1, got {text!r}")
    return channels, size


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--shapes", nargs="+", type=_shape, default=[(8, 4), (64, 56), (32, 112)])
    parser.add_argument("--steps", type=int, default=50)
    args = kernel_bench_arguments(parser, repeat=50)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    for channels, size in args.shapes:
        layers = []
        for _ in range(args.steps):
            layers += [Conv2D(channels, channels, 1), ReLU()]
        model = cnnlab.Sequential(layers, input_shape=(channels, size, size))
        x = np.random.default_rng(0).random((1, channels, size, size), dtype=np.float32)
        for _ in range(10):
            model(x)
        print(format_overhead(f"{channels}x{size}x{size}", node_overhead(model, x, args.repeat)).splitlines()[0])


if __name__ == "__main__":
    main()
