"""How every suite measures: the median of timed runs, the peers, the machine's load, and the
peak resident memory of a process."""

import importlib.util
import statistics
import sys
import time

PEERS = ("torch", "scipy")


def timed_runs(function, repeat):
    """``(result of the first call, its seconds, [seconds of each of repeat more calls])``."""
    start = time.perf_counter()
    result = function()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return result, first, times


def measure(function, repeat):
    """``(first_call_seconds, median_seconds, spread_seconds)``; the spread is max - min."""
    _, first, times = timed_runs(function, repeat)
    return first, statistics.median(times), max(times) - min(times)


def pause():
    """Let the other runtime's spinning worker threads go to sleep before the next peer runs."""
    time.sleep(0.05)


def import_torch(threads):
    """PyTorch set to ``threads`` threads, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def available_peers(compare):
    """``(installed, missing)``: the peers named in ``compare`` that can be imported, and the rest.

    Raises
    ------
    ValueError
        For a name that is not one of :data:`PEERS`.
    """
    unknown = [peer for peer in compare if peer not in PEERS]
    if unknown:
        raise ValueError(f"--compare: unknown peer(s) {', '.join(unknown)} (choose from {', '.join(PEERS)})")
    installed = [peer for peer in compare if importlib.util.find_spec(peer) is not None]
    return installed, [peer for peer in compare if peer not in installed]


def busy_warning(load, cores, threads):
    """A warning when other work holds the cores the benchmark needs, else None.

    The machine is busy when its 1-minute load average ``load`` exceeds the cores the
    benchmark's ``threads`` leave free (``cores - threads``) by more than half a core: the
    timings would then measure the competition, not the code.
    """
    if load <= cores - threads + 0.5:
        return None
    return (f"warning: the machine is busy (1-minute load average {load:.1f} on {cores} cores, {threads} "
            "of them for the benchmark): the figures are not meaningful; run again when it is idle, "
            "or with fewer --threads")


def threading_warning(layer, system=None, machine=None):
    """A warning when the cnnlab worker of a comparison runs Numba's ``layer`` other than
    ``tbb`` on a platform where cnnlab depends on the ``tbb`` package (Linux x86-64), else None:
    the environment lacks it (one made by hand for the peers, say), and the figures are not
    those an install gives (OpenMP's threads spin after each parallel loop)."""
    import platform

    system = platform.system() if system is None else system
    machine = platform.machine() if machine is None else machine
    if layer == "tbb" or system != "Linux" or machine != "x86_64":  # (setup.cfg: the tbb dependency)
        return None
    return (f"warning: cnnlab ran on Numba's {layer} threading layer: this environment lacks the tbb package "
            "that installing cnnlab brings here (pip install tbb), so the figures are not an install's")


def kernel_bench_arguments(parser, repeat):
    """Parse a kernel benchmark's command line (``bench/depthwise.py`` and the like) with
    ``--repeat`` (default ``repeat``) and ``--threads`` (default 2) added to ``parser``: refuse
    values under 1 with one line of usage, set Numba's thread count, print
    :func:`busy_warning`'s warning when there is one. Returns the parsed arguments."""
    import os

    import numba

    parser.add_argument("--repeat", type=int, default=repeat)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.repeat < 1 or args.threads < 1:
        parser.error("--repeat and --threads must be at least 1")
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    warning = busy_warning(os.getloadavg()[0], os.cpu_count(), args.threads)
    if warning:
        print(warning, file=sys.stderr)
    return args


def onnx_image_bench(parser, calls):
    """For a benchmark of one ONNX file called on one image (``bench/predict_latency.py``,
    ``bench/kernel_replay.py``): parse its command line with the file, ``--size`` (224),
    ``--calls`` (default ``calls``) and ``--rounds`` (3) added to ``parser``, refusing values
    under 1 and a missing file with one line of usage; set Numba to two threads; read the file
    with :func:`cnnlab.onnx.load`. Returns ``(arguments, model, image)``, the image a random
    ``(1, 3, size, size)`` float32 array."""
    import os

    import numba
    import numpy as np

    import cnnlab.onnx

    parser.add_argument("model")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=calls)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if min(args.size, args.calls, args.rounds) < 1:
        parser.error("--size, --calls and --rounds must be at least 1")
    if not os.path.isfile(args.model):
        parser.error(f"no file {args.model}")
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    image = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    return args, cnnlab.onnx.load(args.model), image


def median_call_seconds(function, repeat, warmup=5):
    """The median seconds of ``repeat`` calls of ``function`` after ``warmup`` untimed ones, with
    the BLAS pool held to one thread per caller as a model call holds it."""
    from ..parallel import single_threaded_blas

    with single_threaded_blas():
        for _ in range(warmup):
            function()
        return statistics.median(timed_runs(function, repeat)[2])


def maxrss_bytes():
    """This process's peak resident memory in bytes.

    On Linux the kernel's high-water mark of this process's own memory (``VmHWM`` in
    ``/proc/self/status``), which :func:`reset_peak_rss` can restart: ``ru_maxrss`` would not do,
    as a process started by fork and exec (a Dask worker) keeps its parent's peak in it.
    Elsewhere ``ru_maxrss`` (bytes on macOS).
    """
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource  # Unix only: imported where /proc could not tell

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def reset_peak_rss():
    """Start this process's peak resident memory again from its current size (Linux:
    ``/proc/self/clear_refs``); returns the new peak (:func:`maxrss_bytes`). Elsewhere the
    peak is left alone and the figure is the process's lifetime peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass
    return maxrss_bytes()
