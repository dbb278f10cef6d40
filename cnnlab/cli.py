"""The ``cnnlab`` command: ``cnnlab demo | bench | info``."""

import argparse
import json
import sys
import time

import numpy as np


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def demo(args):
    """The seeds' pipeline on a real photograph: edge filter, then conv -> ReLU -> max pool."""
    from skimage import data as samples

    import cnnlab
    import cnnlab.functional as F
    from cnnlab import filters
    from cnnlab.data import normalize

    device = _pick_device(args.device)
    print(f"cnnlab {cnnlab.__version__} demo on the {device}")
    camera = samples.camera()
    print(f"image: scikit-image 'camera', {camera.shape[0]}x{camera.shape[1]} {camera.dtype}")

    image = normalize(camera)
    edges, seconds = _timed(filters.apply, image, "edge")
    print(f"edge filter (0 -1 0 / -1 4 -1 / 0 -1 0), mode 'same': {image.shape} -> {edges.shape}"
          f" in {seconds * 1e3:.1f} ms (first call includes compiling or loading the kernel)")
    _, seconds = _timed(filters.apply, image, "edge")
    print(f"  again: {seconds * 1e3:.1f} ms")

    names = ["edge", "sobel_x", "sobel_y", "sharpen"]
    weight = np.stack([filters.KERNELS[n] for n in names])[:, None].astype(np.float32)
    x = image[None, None]
    if device == "cuda":
        x, weight = cnnlab.to_device(x), cnnlab.to_device(weight)
    print(f"convolution module with {len(names)} filters ({', '.join(names)}):")
    for attempt in ("first call", "warm"):
        start = time.perf_counter()
        convolved = F.conv2d(x, weight, padding=1)
        activated = F.relu(convolved)
        pooled = F.max_pool2d(activated, 2)
        host = cnnlab.to_host(pooled)
        total = time.perf_counter() - start
        print(f"  {attempt}: {total * 1e3:.1f} ms")
    print(f"  input {tuple(x.shape)} -> conv2d 3x3 padding 1 {tuple(convolved.shape)}"
          f" -> relu {tuple(activated.shape)} -> max_pool2d 2x2 stride 2 {tuple(pooled.shape)}")
    share = [float((host[0, i] > 0).mean()) for i in range(len(names))]
    print("  share of positive pixels per feature map after ReLU and pooling: "
          + ", ".join(f"{n} {s:.0%}" for n, s in zip(names, share)))
    return 0


def _pick_device(requested):
    import cnnlab

    if requested == "auto":
        return "cuda" if cnnlab.cuda_available() else "cpu"
    if requested == "cuda" and not cnnlab.cuda_available():
        raise SystemExit("cnnlab: --device cuda, but no CUDA GPU is available "
                         "(install the 'cuda' extra on a machine with an NVIDIA GPU)")
    return requested


def bench(args):
    """Time cnnlab's kernels against PyTorch CPU and scipy in one process."""
    import numba

    from . import benchmarks

    if args.threads:
        numba.set_num_threads(args.threads)
    threads = numba.get_num_threads()
    compare = [c.strip() for c in args.compare.split(",") if c.strip()]
    shapes = [benchmarks.parse_shape(s) for s in (args.shapes or list(benchmarks.REFERENCE_SHAPES))]
    device = _pick_device(args.device)

    def progress(index, total, name):
        print(f"  [{index + 1}/{total}] {name} ...", file=sys.stderr, flush=True)

    print(f"cnnlab bench: {args.op} on the {device}, {threads} threads, compare {compare or 'nothing'}",
          file=sys.stderr)
    rows = []
    if args.op in ("conv2d", "all"):
        rows += benchmarks.conv2d_suite(shapes, args.repeat, threads, compare, args.dtype, device, progress)
    if args.op in ("filter", "all"):
        rows += benchmarks.filter_suite(args.repeat, threads, compare, progress=progress)
    print(benchmarks.format_table(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(dict(threads=threads, device=device, rows=rows), handle, indent=2)
        print(f"results written to {args.json}")
    return 0


def info(args):
    """Version, devices, threading layer, cache directory."""
    import numba

    import cnnlab

    print(f"cnnlab {cnnlab.__version__}")
    print(f"numba {numba.__version__}, numpy {np.__version__}")
    print(f"threads: {numba.get_num_threads()}")
    gpu = cnnlab.cuda_available()
    print(f"cuda available: {gpu}")
    if gpu:
        from numba import cuda

        print(f"cuda device: {cuda.get_current_device().name}")
    print(f"kernel cache: {numba.config.CACHE_DIR or 'next to the installed cnnlab sources (__pycache__)'}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="cnnlab", description="Readable, fast CNNs in Numba.")
    commands = parser.add_subparsers(dest="command")

    p = commands.add_parser("demo", help="the seeds' filter and conv/ReLU/pool module on a real image")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.set_defaults(run=demo)

    p = commands.add_parser("bench", help="time cnnlab against PyTorch CPU and scipy")
    p.add_argument("--op", choices=["conv2d", "filter", "all"], default="conv2d")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--shapes", nargs="*", help="reference shape names or N,C,H,W,F,K,S,P")
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--threads", type=int, default=0, help="Numba and PyTorch threads (default: all)")
    p.add_argument("--compare", default="torch,scipy", help="peers: torch, scipy (those installed)")
    p.add_argument("--json", help="also write the results to this file")
    p.set_defaults(run=bench)

    p = commands.add_parser("info", help="version, devices, threads, cache")
    p.set_defaults(run=info)

    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
