"""The panel micro-kernel (``cnnlab.kernels.cpu._microkernel.tap_product``) alone, for a register
block of one's choosing, in the loop the stride-2 convolution by panels runs.

    python bench/tap_product.py [--block VECTOR_BYTES MR NV ...] [--pitch 33] [--piece 144]

The planes are a stride-2 3x3 convolution's (the reference shape's: 32 channels, four polyphase
planes each, 32 output rows of ``--pitch`` columns, 544 KB: in the L2 cache), the weights 64
filters packed ``MR`` rows a block; each panel of ``NV`` vectors of columns takes the taps
``--piece`` at a time and every filter block over each piece, as
``cnnlab.kernels.cpu.conv._panel_forward_items`` does. One thread; prints the multiply-adds per
second for each block, each in a process of its own (the block is read when the kernels compile).
Default: the 256-bit block with 4 rows, the 512-bit one with 4 rows and with 8 (the last two
need AVX-512).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


def measure(vector_bytes, mr, nv, pitch, piece):
    """Multiply-adds per second of the loop for one register block (run in a fresh process)."""
    from numba import njit

    from cnnlab.kernels.cpu import _microkernel as micro

    micro.VECTOR_BYTES, micro.MR, micro.NV = vector_bytes, mr, nv  # (before anything compiles)
    tap_product = micro.tap_product
    nr = nv * vector_bytes // 4
    channels, filters, rows = 32, 64, 32
    plane = (rows + 1) * pitch
    offsets = np.array([c * 4 * plane + ((i % 2) * 2 + j % 2) * plane + (i // 2) * pitch + j // 2
                        for c in range(channels) for i in range(3) for j in range(3)], np.uint64)
    taps, blocks = len(offsets), filters // mr

    @njit(nogil=True)
    def panels(a, b, offsets, c, repeat, length):
        for _ in range(repeat):
            for start in range(0, length, nr):
                for t0 in range(0, taps, piece):
                    for block in range(blocks):
                        tap_product(a, (block * taps + t0) * mr, b, start, offsets, t0, c,
                                    block * mr * length + start, min(piece, taps - t0), length, t0 > 0)

    length = -(-rows * pitch // nr) * nr
    rng = np.random.default_rng(0)
    a = rng.standard_normal(blocks * mr * taps).astype(np.float32)
    b = rng.standard_normal(channels * 4 * plane + nr).astype(np.float32)
    c = np.zeros(blocks * mr * length, np.float32)
    panels(a, b, offsets, c, 1, length)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        panels(a, b, offsets, c, 10, length)
        best = min(best, time.perf_counter() - start)
    return 10 * (length // nr) * taps * filters * nr / best


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--block", nargs=3, type=int, action="append", metavar=("VECTOR_BYTES", "MR", "NV"))
    parser.add_argument("--pitch", type=int, default=33, help="columns a plane row (output width 32 and one)")
    parser.add_argument("--piece", type=int, default=144, help="taps a filter block takes at a time")
    parser.add_argument("--one", nargs=3, type=int, help=argparse.SUPPRESS)  # (a child process)
    args = parser.parse_args()
    if args.one:
        print(measure(*args.one, args.pitch, args.piece))
        return
    if args.pitch < 1 or args.piece < 1:
        parser.error("--pitch and --piece must be at least 1")
    for vector_bytes, mr, nv in args.block or [(32, 4, 3), (64, 4, 3), (64, 8, 3)]:
        if vector_bytes not in (32, 64) or 64 % mr or mr < 1 or nv < 1:
            parser.error("VECTOR_BYTES is 32 or 64, MR a divisor of 64 (the filters), NV at least 1")
        with tempfile.TemporaryDirectory() as cache:  # (a block's kernels never meet another's in a cache)
            result = subprocess.run([sys.executable, __file__, "--one", str(vector_bytes), str(mr), str(nv),
                                     "--pitch", str(args.pitch), "--piece", str(args.piece)],
                                    capture_output=True, text=True, env=dict(os.environ, NUMBA_CACHE_DIR=cache))
        if result.returncode:
            print(f"{vector_bytes * 8}-bit, MR {mr}, NV {nv}: failed\n{result.stderr}", file=sys.stderr)
            continue
        print(f"{vector_bytes * 8}-bit vectors, MR {mr}, NV {nv}: {float(result.stdout) / 1e9:.1f} GMAC/s")


if __name__ == "__main__":
    main()
