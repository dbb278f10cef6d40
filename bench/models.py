"""Whole networks: torchvision's ResNet-18 and MobileNetV2 in cnnlab (imported through ONNX),
PyTorch and onnxruntime, each engine in a process of its own, with the same thread count; and
a training step.

    pip install torch==2.14.1 torchvision==0.29.1 onnx onnxruntime
    python bench/models.py [--threads 2] [--repeat 10] [--rounds 5] [--batches 1 16] [--size 224]
                           [--openblas both] [--onnx-dir DIR] [--memory] [--lock-weights]

The same suite as ``cnnlab bench --op models`` (:mod:`cnnlab.bench.networks`). The engines take
turns in rounds (cnnlab, cnnlab unfused, PyTorch, onnxruntime; again...), ``--repeat`` timed
runs per turn, and each figure is the median of all of an engine's runs. Prints, per OpenBLAS
setting (``--openblas``: this environment's, OpenBLAS's own kernel choice with
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE`` unset in the workers, or both), each engine's
median, cnnlab's ratios to PyTorch and onnxruntime (below 1: cnnlab is faster), the Python
overhead of cnnlab's inference plan (share of the run and microseconds per step, see
``bench/node_overhead.py``) and the largest difference from onnxruntime. ``--onnx-dir`` keeps
the exported networks (``NAME-SIZE.onnx``) for later runs, which then need no PyTorch.
``--memory`` adds the peak memory of one inference (cnnlab) and of training steps (cnnlab and
PyTorch, each in a process started for it: :func:`cnnlab.bench.networks.training_memory`).
``--lock-weights`` runs cnnlab's inference rows with the networks' weights locked
(:meth:`cnnlab.Model.lock_weights`: read-only, what the kernels make of them kept), as
onnxruntime takes a file's weights for constants. Warns when the machine is busy: the figures then measure the competition.
"""

import argparse
import json
import os
import sys

from cnnlab.bench.measuring import busy_warning, threading_warning
from cnnlab.bench.networks import NETWORKS, models_suite
from cnnlab.bench.report import format_memory, format_models, format_training_memory


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=list(NETWORKS))
    parser.add_argument("--openblas", choices=["environment", "own", "both"], default="both")
    parser.add_argument("--onnx-dir", help="where the exported networks are kept (read if there)")
    parser.add_argument("--no-training", action="store_true", help="skip the training step")
    parser.add_argument("--lock-weights", action="store_true",
                        help="cnnlab's networks with their weights locked (Model.lock_weights), for inference")
    parser.add_argument("--memory", action="store_true",
                        help="also measure peak memory: one inference, and training steps against PyTorch")
    parser.add_argument("--json", help="also write the results to this .json file")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    warning = busy_warning(os.getloadavg()[0], os.cpu_count(), args.threads)
    if warning:
        print(warning, file=sys.stderr)
    print(f"threads {args.threads}, {args.size}x{args.size} images, {args.rounds} rounds of {args.repeat} runs "
          "per engine, engines in separate processes")
    results = models_suite(args.threads, args.repeat, args.rounds, args.batches, args.size, args.models,
                           args.openblas, training=not args.no_training, memory=args.memory, onnx_dir=args.onnx_dir,
                           progress=lambda i, n, name: print(f"  {name} ...", file=sys.stderr, flush=True),
                           lock_weights=args.lock_weights)
    if args.lock_weights:
        print("cnnlab's weights locked (Model.lock_weights): inference rows")
    print(format_models(results))
    for result in results if args.memory else []:
        print(format_memory(result["memory"]))
        print(format_training_memory(result["training_memory"]))
    for warning in {threading_warning(result["threading"]) for result in results} - {None}:
        print(warning, file=sys.stderr)
    warning = busy_warning(os.getloadavg()[0], os.cpu_count(), args.threads)
    if warning:
        print(f"at the end: {warning}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
