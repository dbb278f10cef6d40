"""1x1 convolutions by rows of the weights as they lie (``tap_rows``) against a GEMM on
OpenBLAS, bound as the inference plan binds them.

    python bench/pointwise_rows.py [--repeat 200] [--threads 2] [--rounds 3]

For MobileNetV2's pointwise layers at batch 1 (ReLU6 epilogue; the projections without an
activation, as the network has them) prints the median microseconds of a bound call
(``cnnlab.functional.conv.bind_conv2d`` with ``compiled_shares``, its shares on Numba's
threading layer, BLAS held to one thread as a model call holds it), each way in turn per round:
``rows``, ``cnnlab.kernels.cpu.conv``'s ``_pointwise_rows_items`` (``POINTWISE_ROWS`` set, for
every layer here, whatever its channels); ``gemm``, ``_pointwise_forward_items`` (``POINTWISE_ROWS`` off). The
arrays stay in the cache from one call to the next; both ways run in this process, the same
kernels' threads (one library, not two engines). Needs a processor with AVX-512 (where the
rows path is taken at all).
"""

import argparse
import statistics

import numpy as np

from cnnlab import functional as F
from cnnlab.bench.measuring import kernel_bench_arguments, timed_runs
from cnnlab.functional import conv as functional_conv
from cnnlab.kernels.cpu import conv as conv_kernels
from cnnlab.parallel import single_threaded_blas

# (channels, filters, size, activation)
LAYERS = [(16, 96, 112, "relu6"), (24, 144, 56, "relu6"), (144, 24, 56, None), (32, 192, 28, "relu6"),
          (192, 32, 28, None), (64, 384, 14, "relu6"), (384, 64, 14, None), (96, 576, 14, "relu6"),
          (576, 96, 14, None), (160, 960, 7, "relu6"), (960, 160, 7, None), (320, 1280, 7, "relu6")]
WAYS = ("rows", "gemm")


def _bound(channels, filters, size, activation, rng):
    """A bound 1x1 convolution of these sizes and its arguments, as the way now set chooses."""
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    weight = (rng.standard_normal((filters, channels, 1, 1)) / np.sqrt(channels)).astype(np.float32)
    bias = rng.standard_normal(filters).astype(np.float32)
    F.conv2d(x, weight, bias, activation=activation)
    bound = functional_conv.bind_conv2d(x, weight, bias, activation=activation, compiled_shares=True)
    out = np.empty(bound.out_shape, np.float32)
    return bound, (x, weight, bias, None, None, out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = kernel_bench_arguments(parser, repeat=200)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not conv_kernels._pointwise_by_rows(49, 1 << 30, 4):
        parser.error("this processor does not take the rows path (it needs AVX-512)")
    rng = np.random.default_rng(0)
    times = {(layer, way): [] for layer in LAYERS for way in WAYS}
    saved = conv_kernels.POINTWISE_ROWS, conv_kernels.POINTWISE_ROWS_MIN_CHANNELS
    try:
        with single_threaded_blas():
            for _ in range(args.rounds):
                for layer in LAYERS:
                    for way in WAYS:
                        conv_kernels.POINTWISE_ROWS, conv_kernels.POINTWISE_ROWS_MIN_CHANNELS = way == "rows", 1
                        bound, arguments = _bound(*layer, rng)
                        for _ in range(4):
                            bound(*arguments)
                        times[layer, way].append(statistics.median(timed_runs(lambda: bound(*arguments),
                                                                              args.repeat)[2]) * 1e6)
    finally:
        conv_kernels.POINTWISE_ROWS, conv_kernels.POINTWISE_ROWS_MIN_CHANNELS = saved
    print(f"1x1 convolutions at batch 1, bound, {args.threads} threads: median us of {args.repeat} calls, "
          f"{args.rounds} rounds")
    print(f"{'layer':>20}  {'rows':>22}  {'gemm':>22}  rows/gemm")
    for layer in LAYERS:
        rows, gemm = times[layer, "rows"], times[layer, "gemm"]
        name = f"{layer[0]}->{layer[1]} @{layer[2]}"
        print(f"{name:>20}  {', '.join(f'{t:.1f}' for t in rows):>22}  {', '.join(f'{t:.1f}' for t in gemm):>22}  "
              f"{statistics.median(rows) / statistics.median(gemm):.2f}x")


if __name__ == "__main__":
    main()
