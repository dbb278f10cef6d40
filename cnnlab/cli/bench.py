"""``cnnlab bench``: cnnlab timed against PyTorch CPU and scipy in one process, one suite of
:mod:`cnnlab.bench` per ``--op``, as a table and optionally a JSON file and a ratios chart."""

import os
import sys

import numba

from ..bench import filtering, measuring, networks, ops, report, startup, training
from .common import add_command, add_device_option, check_output_file, integer, pick_device, require_matplotlib


def add_parser(commands):
    """Add ``cnnlab bench`` and its arguments to the sub-commands."""
    p = add_command(commands, "bench", "time cnnlab against PyTorch CPU and scipy")
    p.add_argument("--op", default="conv2d", help="what to time",
                   choices=["conv2d", "conv2d_backward", "pool", "activation", "linear", "filter", "train",
                            "startup", "memory", "dask", "models", "all"])
    add_device_option(p, "cpu")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="the arrays' dtype")
    p.add_argument("--shapes", nargs="*", help="reference shape names or N,C,H,W,F,K,S,P (default: all "
                                               "reference shapes)")
    p.add_argument("--repeat", type=integer(1), default=10, help="timed runs per measurement (the median counts)")
    p.add_argument("--threads", type=integer(0), default=0, help="Numba and PyTorch threads (0: all)")
    p.add_argument("--compare", default="torch,scipy", help="peers to time alongside (those installed)")
    p.add_argument("--json", help="also write the results to this .json file")
    p.add_argument("--plot", help="also draw the ratios as a bar chart in this .png (needs matplotlib)")
    p.add_argument("--size", type=integer(3), default=16384,
                   help="--op dask: the image's side in pixels (16384: 1 GiB of float32)")
    p.add_argument("--chunk", type=integer(3), default=2048, help="--op dask: the chunks' side in pixels")
    p.add_argument("--rounds", type=integer(1), default=5,
                   help="--op models: rounds in which the engines (each in its own process) take turns")
    p.add_argument("--openblas", choices=["environment", "own", "both"], default="both",
                   help="--op models: OpenBLAS kernels of the environment's setting, OpenBLAS's own choice "
                        "(OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset in the workers), or both")
    p.set_defaults(run=run)


def run(args):
    """Time cnnlab's kernels against PyTorch CPU and scipy in one process."""
    if args.json:
        check_output_file("--json", args.json, (".json",))
    if args.plot:
        check_output_file("--plot", args.plot, (".png",))
        require_matplotlib()
    if args.threads:
        if args.threads > numba.config.NUMBA_NUM_THREADS:
            raise ValueError(f"--threads {args.threads}, but this machine allows at most "
                             f"{numba.config.NUMBA_NUM_THREADS} (give fewer, or 0 for all)")
        numba.set_num_threads(args.threads)
    threads = numba.get_num_threads()
    if args.op == "dask":
        return _bench_dask(args, threads)
    if args.op == "models":
        return _bench_models(args, threads)
    compare, missing = measuring.available_peers([c.strip() for c in args.compare.split(",") if c.strip()])
    shapes = [ops.parse_shape(s) for s in (args.shapes or list(ops.REFERENCE_SHAPES))]
    device = pick_device(args.device)
    _warn_if_busy(threads)
    peers = ", ".join(compare) or "no peer"
    absent = f" ({', '.join(missing)} not installed)" if missing else ""
    print(f"cnnlab bench: {args.op} on the {device}, {threads} threads, compared with {peers}{absent}",
          file=sys.stderr)
    rows = _suite_rows(args, shapes, threads, compare, device)
    print(report.format_table(rows))
    report.save_report(rows, threads, device, args.json, args.plot)
    return 0


def _warn_if_busy(threads):
    """Say on stderr when other work holds the cores the benchmark's ``threads`` need."""
    if hasattr(os, "getloadavg"):
        warning = measuring.busy_warning(os.getloadavg()[0], os.cpu_count(), threads)
        if warning:
            print(warning, file=sys.stderr)


def _progress(index, total, name):
    print(f"  [{index + 1}/{total}] {name} ...", file=sys.stderr, flush=True)


def _suite_rows(args, shapes, threads, compare, device):
    """The rows of the suites ``--op`` names (``all``: every one but memory, dask and models)."""
    rows = []
    for op in ("conv2d", "conv2d_backward", "pool", "activation", "linear"):
        if args.op in (op, "all"):
            rows += ops.op_suite(op, shapes, args.repeat, threads, compare, args.dtype, device, _progress)
    if args.op in ("filter", "all"):
        rows += filtering.filter_suite(args.repeat, threads, compare, progress=_progress)
    if args.op in ("train", "all"):
        rows += training.train_suite(max(1, min(args.repeat, 3)), threads, compare, device, _progress)
    if args.op == "memory":
        rows += startup.memory_suite(shapes, _progress)
    if args.op in ("startup", "all"):
        rows += startup.startup_suite(_progress)
    return rows


def _bench_models(args, threads):
    """``bench --op models``: ResNet-18 and MobileNetV2 through ONNX against PyTorch and
    onnxruntime, and training steps (a small network, ResNet-18 whole and with a frozen base),
    each engine in a process of its own (see
    :mod:`cnnlab.bench.networks`)."""
    missing = networks.missing_modules()
    if "onnx" in missing or {"torch", "torchvision"} & set(missing):
        raise ModuleNotFoundError(f"--op models needs {', '.join(missing)} (pip install \"cnnlab[bench]\")")
    if missing:
        print(f"cnnlab bench: {', '.join(missing)} not installed, not timed", file=sys.stderr)
    _warn_if_busy(threads)
    print(f"cnnlab bench: models, {threads} threads, 224x224 images, engines in separate processes taking "
          f"turns, {args.rounds} rounds of {args.repeat} runs (the median of all counts)", file=sys.stderr)
    results = networks.models_suite(threads, args.repeat, args.rounds, openblas=args.openblas, memory=True,
                                    progress=_progress)
    print(report.format_models(results))
    for warning in {measuring.threading_warning(result["threading"]) for result in results} - {None}:
        print(warning, file=sys.stderr)
    for result in results:
        print(report.format_memory(result["memory"]))
        print(report.format_training_memory(result["training_memory"]))
    rows = [dict(row, openblas=result["openblas"], blas=result["blas"]) for result in results
            for row in result["rows"]]
    report.save_report(rows, threads, "cpu", args.json, args.plot,
                       memory=[m for result in results for m in result["memory"]])
    return 0


def _bench_dask(args, threads):
    """``bench --op dask``: a huge image filtered on a 2-process LocalCluster by cnnlab and by
    dask-image, and by cnnlab in memory (see :func:`cnnlab.bench.filtering.dask_suite`)."""
    _, _, ndfilters = filtering.dask_bench_modules()  # the extra's one-line message before anything else
    if args.chunk > args.size:
        raise ValueError(f"--chunk {args.chunk} is larger than --size {args.size} (give at most --size)")
    workers = filtering.DASK_WORKERS
    _warn_if_busy(max(threads, workers))
    repeat = max(1, min(args.repeat, 5))
    print(f"cnnlab bench: dask, edge filter (3x3) on a {args.size}x{args.size} float32 image in "
          f"{args.chunk}x{args.chunk} chunks, {workers} worker processes x 1 thread, in memory with {threads} "
          f"threads, median of {repeat}", file=sys.stderr)
    if ndfilters is None:
        print(f"cnnlab bench: {filtering.DASK_IMAGE_MISSING}", file=sys.stderr)
    rows = filtering.dask_suite(args.size, args.chunk, repeat, threads, progress=_progress)
    print(report.format_dask_table(rows))
    report.save_report(rows, threads, "cpu", args.json, args.plot)
    return 0
