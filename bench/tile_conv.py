"""Convolutions by tiles (``cnnlab.kernels.cpu._tiles``) against the path each takes without them.

    python bench/tile_conv.py [--repeat 20] [--threads 2] [--rounds 2] [--layers NAME ...]

For the reference convolutions and network layers a tile fits, prints the path the tiles'
rule leaves it to (``TILES`` off), the median milliseconds of ``cnnlab.functional.conv2d``
(float32, with its bias and a ReLU, a new output each call) that way and by tiles (``TILES``
on, the rule's other limits lifted: every layer here by tiles), alternating in each round, and
the ratio of the best rounds (below 1: the tiles are faster) with whether the rule takes the
tiles for it. Both ways run in this process, on the same kernels' threads. Needs a processor
with AVX-512.
"""

import argparse

from cnnlab.bench.measuring import kernel_bench_arguments
from cnnlab.bench.ops import REFERENCE_SHAPES, path_against_before
from cnnlab.kernels.cpu import _tiles

# name: (samples, channels, height, width, filters, window, stride, padding)
LAYERS = {
    "lenet2": REFERENCE_SHAPES["lenet2"],
    "strided": REFERENCE_SHAPES["strided"],
    "32->64 8x8 b64": (64, 32, 8, 8, 64, 3, 1, 1),
    "64->64 8x8 b32": (32, 64, 8, 8, 64, 3, 1, 1),
    "32->64 4x4 b64": (64, 32, 4, 4, 64, 3, 1, 1),
    "64->32 4x4 b32": (32, 64, 4, 4, 32, 3, 1, 1),
    "16->32 s2 b64": (64, 16, 32, 32, 32, 3, 2, 1),
    "32->32 s2 b64": (64, 32, 32, 32, 32, 3, 2, 1),
    "64->64 s2 onto 8x8 b32": (32, 64, 16, 16, 64, 3, 2, 1),
    "128->128 s2 onto 8x8 b16": (16, 128, 16, 16, 128, 3, 2, 1),
    "resnet 64->128 s2 b16": (16, 64, 56, 56, 128, 3, 2, 1),
    "resnet 64->128 s2 b1": (1, 64, 56, 56, 128, 3, 2, 1),
    "resnet stem b16": (16, 3, 224, 224, 64, 7, 2, 3),
    "resnet stem b1": (1, 3, 224, 224, 64, 7, 2, 3),
    "mobilenet stem b1": (1, 3, 224, 224, 32, 3, 2, 1),
    "16->32 5x5 b32": (32, 16, 32, 32, 32, 5, 1, 2),
    "24->64 s2 b32": (32, 24, 64, 64, 64, 3, 2, 1),
    "32->32 s2 b32": (32, 32, 64, 64, 32, 3, 2, 1),
    "48->64 s2 b16": (16, 48, 64, 64, 64, 3, 2, 1),
    "16->64 s2 b32": (32, 16, 64, 64, 64, 3, 2, 1),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--layers", nargs="+", choices=list(LAYERS), default=list(LAYERS), metavar="LAYER")
    args = kernel_bench_arguments(parser, repeat=20)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not _tiles.by_tiles((16, 6, 5, 5), 1, (1, 1), (64, 16, 8, 8), 4):
        parser.error("this processor does not take the tiles' path (it needs AVX-512)")
    print(f"convolutions by tiles, {args.threads} threads: median ms of {args.repeat} calls, {args.rounds} rounds")
    saved = _tiles.TILES, _tiles.TILES_MIN_FILL, _tiles.TILES_SMALL_MAX_TAPS

    def set_way(way):  # (the tiles off; on, the rule's other limits lifted; as found)
        _tiles.TILES, _tiles.TILES_MIN_FILL, _tiles.TILES_SMALL_MAX_TAPS = \
            saved if way is None else (True, 0.0, 1 << 30) if way == "path" else (False, *saved[1:])

    path_against_before([(name, LAYERS[name]) for name in args.layers], "_tile_forward_items", "tiles", set_way,
                        args.rounds, args.repeat)


if __name__ == "__main__":
    main()
