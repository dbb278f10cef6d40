"""What a model's first calls cost in a process: compiling what its kernels need, then running.

    CNNLAB_CACHE_DIR=$(mktemp -d) python bench/first_calls.py MODEL.onnx [--size 224] [--calls 3]

Reads the ONNX file with :func:`cnnlab.onnx.load` and calls it ``--calls`` times on one random
image, printing each call's seconds (two threads). With an empty kernel cache (a fresh
``CNNLAB_CACHE_DIR``) the first call compiles the kernels of the convolutions' first, checked
calls; the second, the inference plan's bound steps' own (the threading layer's driver, once per
kind of arguments); later calls run. With a warm cache every call runs.
"""

import argparse
import os
import time

import numba
import numpy as np

import cnnlab.onnx


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    if min(args.size, args.calls) < 1:
        parser.error("--size and --calls must be at least 1")
    if not os.path.isfile(args.model):
        parser.error(f"no file {args.model}")
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    model = cnnlab.onnx.load(args.model)
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    seconds = []
    for _ in range(args.calls):
        start = time.perf_counter()
        model(x)
        seconds.append(time.perf_counter() - start)
    print(f"{os.path.basename(args.model)}: " + ", ".join(f"call {n} {s:.2f} s" for n, s in enumerate(seconds, 1)))


if __name__ == "__main__":
    main()
