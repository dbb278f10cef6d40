"""Whole networks: torchvision's ResNet-18 and MobileNetV2 in cnnlab (imported through ONNX),
PyTorch and onnxruntime, in one process, with the same thread count; and a training step.

    pip install torch==2.14.1 torchvision==0.29.1 onnx onnxruntime
    python bench/models.py [--threads 2] [--repeat 10] [--batches 1 16] [--size 224]

The same suite as ``cnnlab bench --op models`` (:mod:`cnnlab.bench.networks`). Prints, per
network and batch, cnnlab's median and spread (max - min) of one inference and the ratios
(cnnlab time / peer time: below 1 means cnnlab is faster) to PyTorch, onnxruntime and to
cnnlab with fusion off ("unfused"); then a training step against PyTorch. Warns when the
machine is busy: the figures then measure the competition.
"""

import argparse
import os
import sys

import numba

from cnnlab.bench.measuring import busy_warning
from cnnlab.bench.networks import NETWORKS, inference_rows, training_rows
from cnnlab.bench.report import format_table


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=list(NETWORKS))
    parser.add_argument("--no-training", action="store_true", help="skip the training step")
    args = parser.parse_args()
    warning = busy_warning(os.getloadavg()[0], os.cpu_count(), args.threads)
    if warning:
        print(warning, file=sys.stderr)
    numba.set_num_threads(args.threads)
    print(f"threads {args.threads}, {args.size}x{args.size} images, median of {args.repeat}")
    rows = inference_rows(args.threads, args.repeat, args.batches, args.size, args.models)
    if not args.no_training:
        rows += training_rows(args.threads, max(1, min(args.repeat, 5)))
    print(format_table(rows))
    for row in rows:
        if "relative_error" in row:
            print(f"{row['shape']}: largest difference from onnxruntime {row['relative_error']:.0e} of the "
                  "largest output")


if __name__ == "__main__":
    main()
