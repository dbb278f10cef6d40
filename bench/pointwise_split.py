"""A 1x1 convolution at batch 1 on two threads: each thread a GEMM over a block of the pixels,
each a GEMM over half the filters, or one GEMM that OpenBLAS threads itself.

    python bench/pointwise_split.py --way pixels|filters|blas [--repeat 200] [--threads 2] [--onnx mobilenet_v2.onnx]

For MobileNetV2's pointwise layers (ReLU6 epilogue, batch 1) prints the median microseconds of
``conv2d_forward`` split that way: ``pixels``, cnnlab's two threads over pixel blocks sized for
the cache (``cnnlab.functional.conv._pointwise_rows``); ``filters``, cnnlab's two threads over
half the filters each, all the pixels; ``blas``, one cnnlab thread, OpenBLAS allowed two (the
others with OpenBLAS held to one thread per caller, as a model call holds it). With ``--onnx``
(a MobileNetV2 exported at 224x224), also the whole model at batch 1: with ``filters`` as the
library runs it (its 1x1 convolutions at batch 1 split by filters), with ``blas`` with every
pointwise convolution of more than one thread's work run as one
GEMM that OpenBLAS threads, its thread count raised to 2 around that call only. One way per
process (OpenBLAS's threads spin after a call and slow whatever runs next), alternating::

    for round in 1 2 3; do for way in pixels filters blas; do python bench/pointwise_split.py --way $way; done; done
"""

import argparse
import statistics

import numpy as np

from cnnlab import parallel
from cnnlab.bench.measuring import kernel_bench_arguments, timed_runs
from cnnlab.functional import conv as functional_conv
from cnnlab.kernels import cpu as cpu_kernels
from cnnlab.kernels.cpu import conv as conv_kernels

# (channels, filters, size)
LAYERS = [(16, 96, 112), (24, 144, 56), (144, 24, 56), (32, 192, 28), (192, 32, 28), (64, 384, 14), (384, 64, 14),
          (96, 576, 14), (576, 96, 14), (160, 960, 7), (960, 160, 7), (320, 1280, 7)]


def _median(function, repeat):
    """The median seconds of ``repeat`` calls after five untimed ones."""
    for _ in range(4):
        function()
    return statistics.median(timed_runs(function, repeat)[2])


def _with_blas_threads(count, function):
    libraries = parallel._blas_libraries()  # noqa: SLF001 (a benchmark of that setting)
    previous = [library.get_num_threads() for library in libraries]
    for library in libraries:
        library.set_num_threads(count)
    try:
        return function()
    finally:
        for library, threads in zip(libraries, previous):
            library.set_num_threads(threads)


def layer_rows(way, repeat):
    rng = np.random.default_rng(0)
    for channels, filters, size in LAYERS:
        x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
        weight = rng.standard_normal((filters, channels, 1, 1)).astype(np.float32)
        scale, shift = np.ones(filters, np.float32), rng.standard_normal(filters).astype(np.float32)
        out = np.empty((1, filters, size, size), np.float32)

        def run(block_rows, workers, filter_blocks=1):
            return lambda: conv_kernels.conv2d_forward(x, weight, scale, shift, out, False, 1, 0.0, 6.0, out,
                                                       1, 1, 0, 0, 1, 1, 1, block_rows, workers, filter_blocks)

        if way == "pixels":
            rows = min(functional_conv._pointwise_rows(channels + filters, size, np.float32),  # noqa: SLF001
                       (size + 1) // 2)
            seconds = _with_blas_threads(1, lambda: _median(run(rows, 2), repeat))
        elif way == "filters":
            seconds = _with_blas_threads(1, lambda: _median(run(size, 2, 2), repeat))
        else:
            seconds = _with_blas_threads(2, lambda: _median(run(size, 1), repeat))
        print(f"  {channels:3d}->{filters:3d} {size}x{size}: {seconds * 1e6:6.0f} us")


def model_row(way, path, repeat):
    import cnnlab.onnx

    model = cnnlab.onnx.load(path)
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    original = cpu_kernels.run_conv2d_forward_work
    libraries = parallel._blas_libraries()  # noqa: SLF001

    def blas_threaded(work, *arguments, **options):
        items, count, workers, trailing, bounds, prepare = work
        if items is not conv_kernels._pointwise_forward_items or workers == 1:  # noqa: SLF001
            return original(work, *arguments, **options)
        for library in libraries:
            library.set_num_threads(2)
        try:
            return original((items, count, 1, trailing, bounds, prepare), *arguments)
        finally:
            for library in libraries:
                library.set_num_threads(1)

    layer_shares = cpu_kernels.conv2d_layer_shares
    if way == "blas":  # (every bound call through run_conv2d_forward_work, none straight to the layer)
        cpu_kernels.run_conv2d_forward_work = blas_threaded
        cpu_kernels.conv2d_layer_shares = lambda *arguments: None
    try:
        seconds = _median(lambda: model(x), repeat)
    finally:
        cpu_kernels.run_conv2d_forward_work = original
        cpu_kernels.conv2d_layer_shares = layer_shares
    print(f"  MobileNetV2 b1: {seconds * 1e3:.2f} ms")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--way", choices=["pixels", "filters", "blas"], required=True)
    parser.add_argument("--onnx", help="MobileNetV2 exported to ONNX at 224x224")
    args = kernel_bench_arguments(parser, repeat=200)
    print(args.way)
    layer_rows(args.way, args.repeat)
    if args.onnx and args.way != "pixels":
        model_row(args.way, args.onnx, max(1, args.repeat // 5))


if __name__ == "__main__":
    main()
