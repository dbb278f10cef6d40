"""The element-wise, pooling and resizing kernels at the sizes of detection networks' feature maps.

    python bench/elementwise.py [--threads 2] [--repeat 30]

Each row: the median of ``--repeat`` calls of one :mod:`cnnlab.functional` op (the output's
allocation included) after three warm-up calls, in milliseconds. The ops are those the packaged
OCR and detection networks spend their non-convolution time in (docs/kernels.md): broadcasting
arithmetic, sigmoid and GELU, max pooling (stride 1 and 2; ResNet's after its stem, at batch 16;
YOLO's 5x5 at stride 1), 2x upsampling, the recognizers' softmax over their character classes, the
squeeze-excitation blocks' global average pooling.
"""

import argparse

import numba
import numpy as np

import cnnlab.functional as F
from cnnlab.bench.measuring import measure


def timed(function, repeat):
    """Median seconds of ``repeat`` calls after three warm-up calls (the last of them timed and
    left out by :func:`cnnlab.bench.measuring.measure`)."""
    for _ in range(2):
        function()
    return measure(function, repeat)[1]


def rows():
    rng = np.random.default_rng(0)
    x, y = (rng.standard_normal((1, 64, 160, 160)).astype(np.float32) for _ in range(2))
    plane = rng.standard_normal((1, 16, 320, 320)).astype(np.float32)
    small = rng.standard_normal((1, 16, 160, 160)).astype(np.float32)
    logits = rng.standard_normal((1, 40, 6906)).astype(np.float32)
    head = rng.standard_normal((1, 40, 18710)).astype(np.float32)  # PP-OCRv6's recognizer head
    features = rng.standard_normal((1, 96, 160, 160)).astype(np.float32)
    stem = rng.standard_normal((16, 64, 112, 112)).astype(np.float32)  # ResNet's stem output at batch 16
    sppf = rng.standard_normal((1, 128, 10, 10)).astype(np.float32)  # NudeNet 320n's SPPF block
    sppf_large = rng.standard_normal((1, 64, 40, 40)).astype(np.float32)
    return [
        ("multiply 64x160x160", lambda: F.multiply(x, y)),
        ("subtract 64x160x160", lambda: F.subtract(x, y)),
        ("sigmoid 64x160x160", lambda: F.sigmoid(x)),
        ("gelu 64x160x160", lambda: F.gelu(x)),
        ("max pool 2x2 stride 1 16x320x320", lambda: F.max_pool2d(plane, 2, stride=1)),
        ("max pool 3x3 stride 2 16x320x320", lambda: F.max_pool2d(plane, 3, stride=2, padding=1)),
        ("max pool 2x2 stride 2 16x320x320", lambda: F.max_pool2d(plane, 2)),
        ("max pool 3x3 stride 2 ResNet b16 16x64x112x112", lambda: F.max_pool2d(stem, 3, stride=2, padding=1)),
        ("max pool 3x3 stride 1 16x320x320", lambda: F.max_pool2d(plane, 3, stride=1, padding=1)),
        ("max pool 5x5 stride 1 YOLO SPPF 128x10x10", lambda: F.max_pool2d(sppf, 5, stride=1, padding=2)),
        ("max pool 5x5 stride 1 64x40x40", lambda: F.max_pool2d(sppf_large, 5, stride=1, padding=2)),
        ("resize nearest x2 16x160x160", lambda: F.resize(small, scale=2, mode="nearest")),
        ("resize bilinear x2 16x160x160", lambda: F.resize(small, scale=2, mode="bilinear")),
        ("softmax over 6906 classes, 40x6906", lambda: F.softmax(logits, axis=-1)),
        ("softmax over 18710 classes, 40x18710", lambda: F.softmax(head, axis=-1)),
        ("global average pool 96x160x160", lambda: F.global_avg_pool2d(features)),
    ]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    if args.threads < 1 or args.repeat < 1:
        parser.error("--threads and --repeat must be at least 1")
    numba.set_num_threads(args.threads)
    print(f"{args.threads} threads, median of {args.repeat} calls")
    table = rows()
    for _ in range(50):  # (the threads' start: the first op timed in a process read up to 4x slower)
        table[0][1]()
    for name, function in table:
        print(f"{name:36s} {timed(function, args.repeat) * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
