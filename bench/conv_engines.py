"""The forward convolution of the reference shapes, cnnlab against PyTorch, each engine in a
process of its own with the same thread count, taking turns.

    pip install torch
    python bench/conv_engines.py [--threads 2] [--repeat 20] [--rounds 5] [--shapes lenet1 lenet2 ...]
                                 [--openblas both]

``cnnlab bench --op conv2d --compare torch`` times both libraries in one process, where one's
thread pool, still spinning after its calls, takes the cores from the other's; here each runs
in its own worker (:mod:`cnnlab.bench.engine_worker`) while the other waits, for ``--rounds``
turns of ``--repeat`` calls each (``cnnlab.functional.conv2d`` and
``torch.nn.functional.conv2d``, float32, with the bias, a new output per call). Prints, per
OpenBLAS setting (as ``bench/models.py``), each engine's median per shape and cnnlab's ratio
(below 1: cnnlab is faster). Warns when the machine is busy.
"""

import argparse
import os
import sys

from cnnlab.bench.measuring import busy_warning, threading_warning
from cnnlab.bench.networks import conv_rows, openblas_settings, start_engines, worker_environment
from cnnlab.bench.ops import REFERENCE_SHAPES
from cnnlab.bench.report import format_models_table


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--shapes", nargs="+", default=list(REFERENCE_SHAPES), choices=list(REFERENCE_SHAPES))
    parser.add_argument("--openblas", choices=["environment", "own", "both"], default="both")
    args = parser.parse_args()
    if args.threads < 1 or args.repeat < 1 or args.rounds < 1:
        parser.error(f"--threads, --repeat and --rounds must be at least 1, got {args.threads}, {args.repeat}, "
                     f"{args.rounds}")
    warning = busy_warning(os.getloadavg()[0], os.cpu_count(), args.threads)
    if warning:
        print(warning, file=sys.stderr)
    print(f"threads {args.threads}, {args.rounds} rounds of {args.repeat} calls per engine, engines in separate "
          "processes")
    for setting in openblas_settings(args.openblas):
        engines = start_engines(args.threads, worker_environment(setting))
        try:
            info = engines["cnnlab"].ask(task="info")
            rows = conv_rows(engines, args.repeat, args.rounds, args.shapes,
                             progress=lambda i, n, name: print(f"  {name} ...", file=sys.stderr, flush=True))
        finally:
            for engine in engines.values():
                engine.close()
        print(f"OpenBLAS {setting}: GEMMs on {info['blas']}, Numba's {info['threading']} threading layer")
        print(format_models_table(rows))
        warning = threading_warning(info["threading"])
        if warning:
            print(warning, file=sys.stderr)
    warning = busy_warning(os.getloadavg()[0], os.cpu_count(), args.threads)
    if warning:
        print(f"at the end: {warning}", file=sys.stderr)


if __name__ == "__main__":
    main()
