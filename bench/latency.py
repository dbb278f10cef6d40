"""Batch-1 latency of ONNX files in cnnlab, and the training epochs of ``cnnlab bench --op train``.

    python bench/latency.py FILE[:HxW] [FILE[:HxW] ...] [--repeat 40] [--threads 2] [--no-training]

Each file is read with :func:`cnnlab.onnx.load` and called on a random float32 batch of one
3-channel image (224x224 unless ``:HxW`` says otherwise); prints the median of ``--repeat``
calls after five warm-up calls, in milliseconds, then the median seconds of a training epoch
of the demo's network and of the CIFAR-sized one (:func:`cnnlab.bench.training.train_suite`,
3 epochs each). One line per run, so that two versions can be compared in alternating
processes::

    git worktree add /tmp/before COMMIT
    for round in 1 2 3; do PYTHONPATH=/tmp/before python bench/latency.py A.onnx B.onnx:48x192
                           python bench/latency.py A.onnx B.onnx:48x192; done
"""

import argparse

import numba
import numpy as np

import cnnlab.onnx
from cnnlab.bench.measuring import timed_runs
from cnnlab.bench.training import train_suite


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("files", nargs="+")
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-training", action="store_true")
    args = parser.parse_args()
    numba.set_num_threads(args.threads)
    cells = []
    for spec in args.files:
        path, _, size = spec.partition(":")
        height, width = (int(v) for v in size.split("x")) if size else (224, 224)
        model = cnnlab.onnx.load(path)
        x = np.random.default_rng(0).standard_normal((1, 3, height, width)).astype(np.float32)
        for _ in range(4):
            model(x)
        _, _, times = timed_runs(lambda: model(x), args.repeat)  # a fifth warm-up, then the timed calls
        cells.append(f"{sorted(times)[len(times) // 2] * 1e3:.2f} ms")
    if not args.no_training:
        cells += [f"{row['shape']} {row['seconds']:.3f} s" for row in train_suite(3, args.threads, [])]
    print(f"{cnnlab.__file__.rsplit('/cnnlab/', 1)[0]}: " + "  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
