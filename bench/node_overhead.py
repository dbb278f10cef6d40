"""Where a batch-1 inference's time goes in cnnlab: kernels against the Python around them.

    python bench/node_overhead.py MODEL.onnx [MODEL.onnx ...] [--batch 1] [--size 224 | --size 48x192]
                                  [--repeat 50] [--rounds 3] [--threads 2] [--plain]

Each ONNX file is read with :func:`cnnlab.onnx.load` and ``model(x)`` is timed on a random
batch (:func:`cnnlab.bench.overhead.node_overhead`): the total (median of plain calls), the
time inside the CPU kernels of :mod:`cnnlab.kernels.cpu` (median over calls with every kernel
timed), the rest (the Python overhead: walking the inference plan, checks, parameter
preparation, allocation, dispatch) in all, per step of the plan and as a share of the run;
then, per kind of step, its wall time and the part inside kernels. ``--rounds`` repeats the
whole measurement; every round is printed. The networks can be exported with PyTorch once
(``python bench/models.py --onnx-dir DIR`` keeps them as ``DIR/NAME-SIZE.onnx``).
``--plain`` walks the plain inference plan at every call (``cnnlab.config.PREPARE`` off: no
plan prepared for the input's shape, :mod:`cnnlab.prepared`).
"""

import argparse
import os
import sys

import numba
import numpy as np

import cnnlab.config
import cnnlab.onnx
from cnnlab.bench.measuring import busy_warning
from cnnlab.bench.overhead import format_overhead, node_overhead
from cnnlab.parallel import blas_kernels


def _size(text):
    """``"224"`` -> (224, 224); ``"48x192"`` -> (48, 192)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected H or HxW, got {text!r}")
    height, width = (int(parts[0]), int(parts[-1]))
    return height, width


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+", help="ONNX files")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=_size, default=(224, 224), help="H or HxW (default 224)")
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plain", action="store_true", help="no prepared plan (cnnlab.config.PREPARE off)")
    args = parser.parse_args()
    if min(args.batch, *args.size, args.repeat, args.rounds, args.threads) < 1:
        parser.error("--batch, --size, --repeat, --rounds and --threads must be at least 1")
    numba.set_num_threads(args.threads)
    cnnlab.config.PREPARE = not args.plain
    warning = busy_warning(os.getloadavg()[0], os.cpu_count(), args.threads)
    if warning:
        print(warning, file=sys.stderr)
    print(f"batch {args.batch}, {args.size[0]}x{args.size[1]}, {args.threads} threads, median of {args.repeat} calls"
          f"{', plain plan' if args.plain else ''}; "
          f"GEMMs on {blas_kernels()}")
    x = np.random.default_rng(0).standard_normal((args.batch, 3, *args.size)).astype(np.float32)
    for path in args.models:
        model = cnnlab.onnx.load(path)
        print(f"{os.path.basename(path)}: {len(model.graph.nodes)} nodes")
        for round_ in range(args.rounds):
            result = node_overhead(model, x, args.repeat)
            text = format_overhead(f"round {round_ + 1}", result)
            print(text if round_ == args.rounds - 1 else text.splitlines()[0])
    warning = busy_warning(os.getloadavg()[0], os.cpu_count(), args.threads)
    if warning:
        print(f"at the end: {warning}", file=sys.stderr)


if __name__ == "__main__":
    main()
