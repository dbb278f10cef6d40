"""Benchmark suites behind ``cnnlab bench``: cnnlab against its peers in one process.

Method (see docs/performance.md): every op is timed side by side with its
peers in the same process, on the same inputs, with the same thread count;
each timing is the median of ``repeat`` runs after one warm-up run, and the
first (compiling) call of cnnlab is reported separately as JIT time.
Ratios are ``cnnlab time / peer time``: below 1 means cnnlab is faster.
"""

import math
import statistics
import time

import numpy as np

# The design's reference shapes: (N, C, H, W, filters, kernel, stride, padding)
REFERENCE_SHAPES = {
    "lenet1": (64, 1, 28, 28, 6, 5, 1, 0),
    "lenet2": (64, 6, 12, 12, 16, 5, 1, 0),
    "cifar": (64, 16, 32, 32, 32, 3, 1, 1),
    "resnet": (32, 64, 56, 56, 64, 3, 1, 1),
    "strided": (32, 32, 64, 64, 64, 3, 2, 1),
}
EDGE_IMAGE_SIZE = 2048
PEERS = ("torch", "scipy")
RATIO_NOTE = "ratio = cnnlab time / peer time: below 1 means cnnlab is faster"


def parse_shape(text):
    """A named reference shape or ``N,C,H,W,F,K,S,P``."""
    if text in REFERENCE_SHAPES:
        return text, REFERENCE_SHAPES[text]
    parts = text.split(",")
    if len(parts) != 8 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"shape must be one of {sorted(REFERENCE_SHAPES)} or N,C,H,W,F,K,S,P; got {text!r}")
    return text, tuple(int(p) for p in parts)


def available_peers(compare):
    """``(installed, missing)``: the peers named in ``compare`` that can be imported, and the rest.

    Raises
    ------
    ValueError
        For a name that is not one of :data:`PEERS`.
    """
    import importlib.util

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


def format_ratio(ratio):
    """``0.42x``; small ratios keep two significant digits (``0.0031x``), never ``0.00x``."""
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def measure(function, repeat):
    """``(first_call_seconds, median_seconds, spread_seconds)``; the spread is max - min."""
    start = time.perf_counter()
    function()
    first = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), max(times) - min(times)


def _pause():
    # let the other runtime's spinning worker threads go to sleep before the next peer runs
    time.sleep(0.05)


def _torch(threads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def _reference_inputs(shape, dtype):
    n, c, h, w, f, k, s, p = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = (rng.standard_normal((f, c, k, k)) / np.sqrt(c * k * k)).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype)
    return x, weight, bias


def _op_definition(op, shape, x, weight, bias, torch):
    """``(run cnnlab, run torch or None, run scipy or None, work, unit)`` for one op and shape."""
    import cnnlab
    import cnnlab.functional as F

    n, c, h, w, f, k, s, p = shape
    out_size = cnnlab.output_size(h, k, s, p)
    host = [cnnlab.to_host(a) for a in (x, weight, bias)]
    tensors = [torch.from_numpy(a) for a in host] if torch is not None else None
    if tensors is not None and not isinstance(x, np.ndarray) and torch.cuda.is_available():
        tensors = [t.cuda() for t in tensors]
    scipy_run = None
    if op == "conv2d":
        work, unit = 2.0 * n * f * c * k * k * out_size * out_size, "GFLOP/s"

        def ours():
            F.conv2d(x, weight, bias, s, p)

        def theirs():
            with torch.no_grad():
                torch.nn.functional.conv2d(tensors[0], tensors[1], tensors[2], s, p)

        def scipy_run():
            _scipy_conv2d(*host, s, p)
    elif op == "conv2d_backward":
        work, unit = 3 * 2.0 * n * f * c * k * k * out_size * out_size, "GFLOP/s"
        upstream = F.conv2d(x, weight, bias, s, p)

        def ours():
            F.conv2d(x, weight, bias, s, p)
            F.conv2d_backward(x, weight, upstream, s, p)

        if tensors is not None:
            tx = tensors[0].clone().requires_grad_(True)
            tw = tensors[1].clone().requires_grad_(True)
            tb = tensors[2].clone().requires_grad_(True)

        def theirs():
            out = torch.nn.functional.conv2d(tx, tw, tb, s, p)
            out.backward(torch.ones_like(out))
    elif op == "pool":
        work, unit = float(x.size * x.itemsize), "GB/s"

        def ours():
            F.max_pool2d(x, 2, 2)

        def theirs():
            with torch.no_grad():
                torch.nn.functional.max_pool2d(tensors[0], 2, 2)
    elif op == "activation":
        work, unit = 2.0 * x.size * x.itemsize, "GB/s"

        def ours():
            F.relu(x)

        def theirs():
            with torch.no_grad():
                torch.relu(tensors[0])
    elif op == "linear":
        flat = x.reshape(n, c * h * w) if isinstance(x, np.ndarray) else x.reshape(n, c * h * w)
        dense = np.random.default_rng(1).standard_normal((f, c * h * w)).astype(host[0].dtype)
        dense = cnnlab.to_device(dense) if not isinstance(x, np.ndarray) else dense
        work, unit = 2.0 * n * f * c * h * w, "GFLOP/s"

        def ours():
            F.linear(flat, dense, bias)

        if tensors is not None:
            t_flat, t_dense = tensors[0].reshape(n, -1), torch.from_numpy(cnnlab.to_host(dense))
            if tensors[0].is_cuda:
                t_dense = t_dense.cuda()

        def theirs():
            with torch.no_grad():
                torch.nn.functional.linear(t_flat, t_dense, tensors[2])
    else:
        raise ValueError(f"unknown op {op!r}")
    return ours, (theirs if torch is not None else None), scipy_run, work, unit


def op_suite(op, shapes, repeat, threads, compare, dtype="float32", device="cpu", progress=None):
    """Time one op (conv2d, conv2d_backward, pool, activation, linear) on each shape."""
    import cnnlab

    torch = _torch(threads) if "torch" in compare else None
    synchronize = None
    if device == "cuda":
        from numba import cuda

        synchronize = cuda.synchronize
    rows = []
    for index, (name, shape) in enumerate(shapes):
        if progress:
            progress(index, len(shapes), f"{op} {name}")
        x, weight, bias = _reference_inputs(shape, dtype)
        if device == "cuda":
            x, weight, bias = (cnnlab.to_device(a) for a in (x, weight, bias))
        ours, theirs, scipy_run, work, unit = _op_definition(op, shape, x, weight, bias, torch)

        def run(function):
            def timed():
                function()
                if synchronize is not None:
                    synchronize()
                if torch is not None and device == "cuda" and torch.cuda.is_available():
                    torch.cuda.synchronize()
            return timed

        first, median, spread = measure(run(ours), repeat)
        row = dict(op=op, shape=name, dtype=dtype, device=device, seconds=median, spread=spread,
                   jit_seconds=max(0.0, first - median), peers={})
        row["gflops" if unit == "GFLOP/s" else "gbytes"] = work / median / 1e9
        if theirs is not None:
            _pause()
            row["peers"]["torch"] = measure(run(theirs), repeat)[1]
            _pause()
        if scipy_run is not None and "scipy" in compare:
            row["peers"]["scipy"] = measure(scipy_run, 1)[1]
        rows.append(row)
    return rows


def conv2d_suite(shapes, repeat, threads, compare, dtype="float32", device="cpu", progress=None):
    """Time conv2d forward on each shape; returns a list of result dicts."""
    return op_suite("conv2d", shapes, repeat, threads, compare, dtype, device, progress)


def _scipy_conv2d(x, weight, bias, stride, padding):
    """The scipy.signal way: one correlate2d per (sample, filter, channel)."""
    from scipy import signal

    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out = []
    for sample in padded:
        planes = []
        for f in range(weight.shape[0]):
            plane = signal.correlate2d(sample[0], weight[f, 0], mode="valid")
            for c in range(1, weight.shape[1]):
                plane += signal.correlate2d(sample[c], weight[f, c], mode="valid")
            planes.append(plane[::stride, ::stride] + bias[f])
        out.append(planes)
    return np.array(out)


def filter_suite(repeat, threads, compare, size=EDGE_IMAGE_SIZE, progress=None):
    """The textbook 3x3 edge filter on one ``size`` x ``size`` float32 image."""
    from scipy import ndimage, signal

    from . import filters

    if progress:
        progress(0, 1, f"edge {size}x{size}")
    image = np.random.default_rng(0).random((size, size)).astype(np.float32)
    kernel = filters.KERNELS["edge"].astype(np.float32)
    first, median, spread = measure(lambda: filters.correlate2d(image, kernel, mode="same"), repeat)
    row = dict(op="filter", shape=f"edge{size}", dtype="float32", device="cpu", seconds=median,
               spread=spread, jit_seconds=max(0.0, first - median),
               gbytes=2 * image.nbytes / median / 1e9, peers={})
    if "scipy" in compare:
        row["peers"]["scipy.signal"] = measure(lambda: signal.correlate2d(image, kernel, mode="same"),
                                               max(1, repeat // 3))[1]
        row["peers"]["scipy.ndimage"] = measure(lambda: ndimage.correlate(image, kernel, mode="constant"),
                                                repeat)[1]
    return [row]


def geometric_mean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def format_table(rows):
    """A plain-text table: time, spread, JIT, throughput and the ratio to every peer ('-' where a
    row has no such peer), under one line saying which way a ratio reads."""
    peers = sorted({peer for row in rows for peer in row["peers"]})
    header = ["op", "shape", "cnnlab ms", "spread ms", "jit s", "rate"] + [f"vs {p}" for p in peers]
    lines = [header]
    for row in rows:
        if "peak_bytes" in row:
            rate = (f"peak +{row['peak_bytes'] / 2**20:.1f} MiB (output {row['output_bytes'] / 2**20:.1f} MiB, "
                    f"input {row['input_bytes'] / 2**20:.1f} MiB)")
        elif "import_seconds" in row:
            rate = f"import {row['import_seconds']:.2f} s + first conv2d {row['jit_seconds']:.2f} s"
        elif "gflops" in row:
            rate = f"{row['gflops']:.1f} GFLOP/s"
        elif "gbytes" in row:
            rate = f"{row['gbytes']:.2f} GB/s"
        else:
            rate = f"{row['samples_per_second']:,.0f} samples/s"
        line = [row["op"], row["shape"], f"{row['seconds'] * 1e3:.2f}", f"{row['spread'] * 1e3:.2f}",
                f"{row['jit_seconds']:.2f}", rate]
        for peer in peers:
            t = row["peers"].get(peer)
            line.append(format_ratio(row["seconds"] / t) if t else "-")
        lines.append(line)
    for op in sorted({row["op"] for row in rows}):
        op_rows = [r for r in rows if r["op"] == op]
        if len(op_rows) > 1 and any(r["peers"] for r in op_rows):
            line = [op, "geomean", "", "", "", ""]
            for peer in peers:
                ratios = [r["seconds"] / r["peers"][peer] for r in op_rows if r["peers"].get(peer)]
                line.append(format_ratio(geometric_mean(ratios)) if ratios else "-")
            lines.append(line)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    table = "\n".join("  ".join(str(v).rjust(w) for v, w in zip(line, widths)) for line in lines)
    return f"{RATIO_NOTE}\n{table}" if peers else table


# ----------------------------------------------------------------------------- training


TRAIN_NETWORKS = {
    # name: (input shape, classes, conv filters, hidden units, samples per epoch, batch size)
    "demo-digits": ((1, 8, 8), 10, (32, 64), 128, None, 32),
    "cifar-sized": ((3, 32, 32), 10, (32, 64), 128, 1024, 64),
}


def _training_data(name):
    shape, classes, _, _, samples, _ = TRAIN_NETWORKS[name]
    if name == "demo-digits":
        from .data import load_demo_data, train_test_split

        images, labels, _ = load_demo_data("digits")
        x, _, y, _ = train_test_split(images, labels, test_size=0.25, seed=0)
        return x, y
    rng = np.random.default_rng(0)
    return rng.random((samples,) + shape, dtype=np.float32), rng.integers(0, classes, samples)


def _torch_network(torch, name):
    (channels, size, _), classes, (first, second), hidden, _, _ = TRAIN_NETWORKS[name]
    nn = torch.nn
    flat = second * (size // 4) * (size // 4)
    return nn.Sequential(
        nn.Conv2d(channels, first, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(first, second, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def train_suite(repeat, threads, compare, device="cpu", progress=None):
    """Seconds per training epoch (Adam, cross-entropy) of the demo network and of a
    CIFAR-sized network, against the same network and batches in PyTorch."""
    from . import optim
    from .applications import classic_cnn

    torch = _torch(threads) if "torch" in compare else None
    rows = []
    for index, name in enumerate(TRAIN_NETWORKS):
        if progress:
            progress(index, len(TRAIN_NETWORKS), name)
        (channels, size, _), classes, filters, hidden, _, batch = TRAIN_NETWORKS[name]
        x, y = _training_data(name)
        model = classic_cnn(channels, size, classes, filters, hidden, seed=0).to(device)
        optimizer = optim.Adam(1e-3)

        def epoch():
            model.fit(x, y, epochs=1, batch_size=batch, optimizer=optimizer, seed=0, verbose=0)

        first, median, spread = measure(epoch, repeat)
        row = dict(op="train", shape=name, dtype="float32", device=device, seconds=median, spread=spread,
                   jit_seconds=max(0.0, first - median), samples_per_second=len(x) / median, peers={})
        if torch is not None:
            _pause()
            network = _torch_network(torch, name)
            torch_optimizer = torch.optim.Adam(network.parameters(), 1e-3)
            loss_function = torch.nn.CrossEntropyLoss()
            tx, ty = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))
            order = np.random.default_rng(0).permutation(len(x))

            def torch_epoch():
                for start in range(0, len(x), batch):
                    chosen = torch.from_numpy(order[start:start + batch])
                    torch_optimizer.zero_grad()
                    loss = loss_function(network(tx[chosen]), ty[chosen])
                    loss.backward()
                    torch_optimizer.step()

            row["peers"]["torch"] = measure(torch_epoch, repeat)[1]
            _pause()
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- start-up and memory

_STARTUP = """
import time
start = time.perf_counter()
import numpy as np
import cnnlab.functional as F
imported = time.perf_counter()
F.conv2d(np.ones((1, 1, 8, 8), np.float32), np.ones((1, 1, 3, 3), np.float32))
done = time.perf_counter()
print(imported - start, done - imported)
"""


def startup_suite(progress=None):
    """Fresh processes: import time and first conv2d, with a warm and with a cold kernel cache."""
    import os
    import subprocess
    import sys
    import tempfile

    rows = []
    with tempfile.TemporaryDirectory() as cold_cache:
        for index, (name, environment) in enumerate([
                ("cold cache", dict(os.environ, CNNLAB_CACHE_DIR=cold_cache)),
                ("warm cache", dict(os.environ))]):
            if progress:
                progress(index, 2, f"startup {name}")
            if name == "warm cache":  # make sure the cache is filled
                subprocess.run([sys.executable, "-c", _STARTUP], env=environment, capture_output=True, check=True)
            output = subprocess.run([sys.executable, "-c", _STARTUP], env=environment, capture_output=True,
                                    text=True, check=True).stdout.split()
            imported, first = float(output[0]), float(output[1])
            rows.append(dict(op="startup", shape=name, dtype="float32", device="cpu", seconds=imported + first,
                             spread=0.0, jit_seconds=first, import_seconds=imported, peers={}))
    return rows


_MEMORY = """
import resource, sys
import numpy as np
import cnnlab, cnnlab.functional as F
n, c, h, w, f, k, s, p = (int(v) for v in sys.argv[1].split(","))
backward = sys.argv[2] == "1"
rng = np.random.default_rng(0)
x = rng.standard_normal((n, c, h, w)).astype(np.float32)
weight = rng.standard_normal((f, c, k, k)).astype(np.float32)
F.conv2d(x[:1, :, :8, :8].copy() if h >= 8 and w >= 8 else x[:1], weight, padding=p)  # load the kernels
if backward:
    small = x[:1]
    F.conv2d_backward(small, weight, F.conv2d(small, weight, stride=s, padding=p), s, p)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = F.conv2d(x, weight, stride=s, padding=p)
if backward:
    F.conv2d_backward(x, weight, out, s, p)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, out.nbytes, x.nbytes)
"""


def memory_suite(shapes, progress=None):
    """Peak resident memory added by one conv2d forward (and forward + backward), per shape,
    measured in a fresh process; compared with the size of the output (and input)."""
    import subprocess
    import sys

    rows = []
    for index, (name, shape) in enumerate(shapes):
        for backward in (False, True):
            if progress:
                progress(index, len(shapes), f"memory {name}{' backward' if backward else ''}")
            output = subprocess.run([sys.executable, "-c", _MEMORY, ",".join(map(str, shape)), str(int(backward))],
                                    capture_output=True, text=True, check=True).stdout.split()
            peak, out_bytes, in_bytes = (int(float(v)) for v in output)
            rows.append(dict(op="memory" + ("+backward" if backward else ""), shape=name, dtype="float32",
                             device="cpu", seconds=0.0, spread=0.0, jit_seconds=0.0, peak_bytes=peak,
                             output_bytes=out_bytes, input_bytes=in_bytes, peers={}))
    return rows


def plot_ratios(rows, path):
    """A bar chart of every row's ratio to each peer (log scale; below 1 = cnnlab faster)."""
    from .viz import pyplot

    plt = pyplot()
    labels, ratios, peers = [], [], []
    for row in rows:
        for peer, seconds in row["peers"].items():
            if seconds:
                labels.append(f"{row['op']} {row['shape']}")
                ratios.append(row["seconds"] / seconds)
                peers.append(peer)
    figure, axis = plt.subplots(figsize=(max(6, 0.45 * len(ratios) + 2), 4))
    colours = {peer: colour for peer, colour in zip(sorted(set(peers)), ["tab:blue", "tab:orange", "tab:green",
                                                                         "tab:red"])}
    axis.bar(range(len(ratios)), ratios, color=[colours[p] for p in peers])
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_yscale("log")
    axis.set_xticks(range(len(ratios)), [f"{l}\nvs {p}" for l, p in zip(labels, peers)], rotation=60,
                    ha="right", fontsize=7)
    axis.set_ylabel("cnnlab time / peer time")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


# ----------------------------------------------------------------------------- huge images on Dask

DASK_IMAGE_SIZE = 16384
DASK_CHUNK = 2048
DASK_WORKERS = 2
DASK_CHECK_SIZE = 512
DASK_EXTRA_MESSAGE = ("cnnlab bench --op dask needs dask and distributed, the 'dask' extra: "
                      "pip install 'cnnlab[dask]'")
DASK_IMAGE_MISSING = ("dask-image is not installed: its row is left out "
                      "(pip install dask-image, or the 'bench' extra)")


def _dask_bench_modules():
    """``(dask.array, distributed, dask_image.ndfilters or None)``; ImportError naming the extra."""
    try:
        import dask.array as da
        import distributed
    except ImportError:
        raise ImportError(DASK_EXTRA_MESSAGE) from None
    try:
        import dask_image.ndfilters as ndfilters
    except ImportError:
        ndfilters = None
    return da, distributed, ndfilters


def _maxrss_bytes():
    """This process's peak resident memory in bytes.

    On Linux the kernel's high-water mark of this process's own memory (``VmHWM`` in
    ``/proc/self/status``), which :func:`_reset_peak_rss` can restart: ``ru_maxrss`` would not do,
    as a process started by fork and exec (a Dask worker) keeps its parent's peak in it.
    Elsewhere ``ru_maxrss`` (bytes on macOS).
    """
    import resource
    import sys

    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _reset_peak_rss():
    """Start this process's peak resident memory again from its current size (Linux:
    ``/proc/self/clear_refs``); returns the new peak (:func:`_maxrss_bytes`). Elsewhere the
    peak is left alone and the figure is the process's lifetime peak."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass
    return _maxrss_bytes()


def _worker_imports():
    """Run on each worker before timing: the modules the methods use, and the worker's
    resident memory with nothing computed yet."""
    import numpy  # noqa: F401
    import scipy.ndimage  # noqa: F401

    import cnnlab.filters  # noqa: F401
    try:
        import dask_image.ndfilters  # noqa: F401
    except ImportError:
        pass
    return _maxrss_bytes()


def _dask_image(da, size, chunk, seed=0):
    """The lazy float32 test image: uniform [0, 1) values, generated chunk by chunk where it is
    computed (the same values on any scheduler)."""
    return da.random.default_rng(seed).random((size, size), dtype=np.float32, chunks=chunk)


def _dask_methods(kernel, ndfilters):
    """``{name: function(dask image) -> lazy filtered image}``: cnnlab on dask and dask-image,
    both true convolutions, mode 'same', zeros outside the image."""
    from . import filters

    methods = {"cnnlab-dask": lambda image: filters.convolve2d(image, kernel, mode="same", boundary="fill",
                                                                fillvalue=0)}
    if ndfilters is not None:
        methods["dask-image"] = lambda image: ndfilters.convolve(image, kernel, mode="constant", cval=0.0)
    return methods


def dask_agreement(kernel, ndfilters=None, size=DASK_CHECK_SIZE, chunk=None):
    """Max absolute differences on a small image (synchronous scheduler) between cnnlab on dask
    and cnnlab in memory and, when dask-image is given, dask-image and scipy.ndimage.convolve.

    Returns
    -------
    dict
        ``{'in-memory cnnlab': d, 'dask-image': d, 'scipy.ndimage': d}`` (max |cnnlab-dask - other|).

    Raises
    ------
    RuntimeError
        When a result is not ``allclose`` to cnnlab-dask's: timing different answers means nothing.
    """
    from scipy import ndimage

    from . import filters

    da, _, _ = _dask_bench_modules()
    chunk = chunk or max(size // 4, 8)
    image = _dask_image(da, size, chunk)
    whole = image.compute(scheduler="synchronous")
    methods = _dask_methods(kernel, ndfilters)
    ours = methods["cnnlab-dask"](image).compute(scheduler="synchronous")
    others = {"in-memory cnnlab": filters.convolve2d(whole, kernel, mode="same")}
    if ndfilters is not None:
        others["dask-image"] = methods["dask-image"](image).compute(scheduler="synchronous")
        others["scipy.ndimage"] = ndimage.convolve(whole, kernel, mode="constant", cval=0.0)
    differences = {}
    for name, theirs in others.items():
        if theirs.shape != ours.shape or not np.allclose(ours, theirs, rtol=1e-5, atol=1e-6):
            raise RuntimeError(f"cnnlab on dask and {name} disagree on a {size}x{size} image (max difference "
                               f"{np.max(np.abs(ours.astype(np.float64) - theirs)):.3g}): not timing them")
        differences[name] = float(np.max(np.abs(ours.astype(np.float64) - theirs)))
    return differences


def _dask_cluster(distributed, workers, memory_limit, processes):
    """A quiet LocalCluster of ``workers`` single-threaded workers whose Numba uses one thread
    (so that the workers do not compete for the cores), and a client not set as default."""
    import logging

    options = dict(n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=None,
                   silence_logs=logging.ERROR, memory_limit=memory_limit)
    if processes:
        options["env"] = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cluster = distributed.LocalCluster(**options)
    return cluster, distributed.Client(cluster, set_as_default=False)


def _time_on_cluster(name, method, size, chunk, repeat, workers, processes, distributed, da, check=None):
    """One method on a fresh cluster: the image persisted on the workers, then ``repeat`` + 1
    runs of ``method(image).sum()`` computed there; the workers' peak memory read after. With
    ``check`` (another method), then max |check(image) - method(image)| over the whole image."""
    memory_limit = max(4 * 2**30, 4 * size * size * 4 // workers)  # no spilling: timings, not disk
    cluster, client = _dask_cluster(distributed, workers, memory_limit, processes)
    try:
        idle = client.run(_worker_imports)
        start = time.perf_counter()
        image = client.persist(_dask_image(da, size, chunk))
        with client.as_current():
            distributed.wait(image)
        generate = time.perf_counter() - start
        held = client.run(_reset_peak_rss)
        total = method(image).sum()
        sums = []
        first, median, spread = measure(lambda: sums.append(float(client.compute(total, sync=True))), repeat)
        peaks = client.run(_maxrss_bytes)
        if check is not None:
            difference = abs(check(image) - method(image)).max()
            difference = float(client.compute(difference, sync=True))
    finally:
        client.close()
        cluster.close()
    addresses = sorted(peaks)
    return dict(op="dask", method=name, shape=f"{size}x{size}/{chunk}", dtype="float32", device="cpu",
                seconds=median, spread=spread, first_seconds=first, jit_seconds=max(0.0, first - median),
                mpixels_per_second=size * size / median / 1e6, generate_seconds=generate,
                worker_idle_bytes=[idle[a] for a in addresses], worker_held_bytes=[held[a] for a in addresses],
                worker_peak_bytes=[peaks[a] for a in addresses], result_sum=sums[-1], peers={},
                **({"full_max_difference": difference} if check is not None else {}))


def dask_suite(size=DASK_IMAGE_SIZE, chunk=DASK_CHUNK, repeat=3, threads=None, kernel="edge",
               workers=DASK_WORKERS, processes=True, progress=None):
    """A ``size`` x ``size`` float32 image edge-filtered chunk by chunk on a Dask LocalCluster,
    by cnnlab (``cnnlab.filters.convolve2d`` on the dask array) and by
    ``dask_image.ndfilters.convolve`` on the same chunks, against cnnlab on the whole image in
    this process.

    Method:

    - The kernel (``cnnlab.filters.KERNELS[kernel]``, float32) is applied as a true convolution,
      mode 'same', zeros outside the image (cnnlab ``boundary='fill'``; ndimage
      ``mode='constant', cval=0``). Before timing, :func:`dask_agreement` checks on a small image
      that all methods agree (``RuntimeError`` otherwise) and its max differences are returned.
    - The image (uniform random, seeded) is generated on the workers and persisted there; the
      client never holds it. Each timed run computes ``filtered.sum()`` on the cluster, which
      forces every chunk and brings one number home. The first run (loading the compiled kernels
      on the workers) is reported apart; the time is the median of the ``repeat`` runs after it.
    - Each method gets a fresh cluster of ``workers`` processes with one thread each (and one
      Numba thread), so that the peak memories do not mix. A worker's peak is the kernel's
      high-water mark of its resident memory (Linux ``VmHWM``, restarted with ``clear_refs``
      once the image is persisted; ``ru_maxrss`` elsewhere): exact, where distributed's monitor
      samples every 0.5 s and misses short peaks.
    - In-memory cnnlab filters the whole image in this process with ``threads`` Numba threads;
      its memory is the peak resident memory added by the call (the output and any workspace).

    Returns
    -------
    list of dict
        One row per method (``method`` 'cnnlab-dask', 'dask-image' when installed, 'in-memory
        cnnlab'), with ``seconds`` (median), ``spread``, ``first_seconds``,
        ``mpixels_per_second``, the workers' ``worker_idle_bytes`` / ``worker_held_bytes`` /
        ``worker_peak_bytes`` (Dask rows) or ``peak_increase_bytes`` (in memory); the
        cnnlab-dask row's ``peers`` hold the other methods' medians, its ``agreement`` the
        small-image differences and ``missing`` names dask-image when absent.

    Raises
    ------
    ImportError
        Without dask or distributed (the ``dask`` extra), in one line.
    """
    from . import filters

    da, distributed, ndfilters = _dask_bench_modules()
    if threads is None:
        import numba

        threads = numba.get_num_threads()
    if size < 3 or chunk < 3:
        raise ValueError(f"--size and --chunk must be at least 3 (the kernel's size), got {size} and {chunk}")
    chunk = min(chunk, size)
    weights = filters.KERNELS[kernel].astype(np.float32)
    steps = 2 + (ndfilters is not None)
    if progress:
        progress(0, steps + 1, f"agreement check, {min(size, DASK_CHECK_SIZE)}x{min(size, DASK_CHECK_SIZE)}")
    agreement = dask_agreement(weights, ndfilters, size=min(size, DASK_CHECK_SIZE),
                               chunk=min(chunk, max(min(size, DASK_CHECK_SIZE) // 4, 8)))

    # in memory first, while this process's peak is still its own
    if progress:
        progress(1, steps + 1, f"in-memory cnnlab, {size}x{size}")
    whole = np.empty((size, size), np.float32)
    da.store(_dask_image(da, size, chunk), whole, scheduler="synchronous", lock=False)
    filters.convolve2d(whole[:8, :8], weights, mode="same")  # load the kernel
    before = _reset_peak_rss()
    sums = []
    first, median, spread = measure(
        lambda: sums.append(float(filters.convolve2d(whole, weights, mode="same").sum(dtype=np.float64))), repeat)
    in_memory = dict(op="dask", method="in-memory cnnlab", shape=f"{size}x{size}", dtype="float32", device="cpu",
                     seconds=median, spread=spread, first_seconds=first, jit_seconds=max(0.0, first - median),
                     mpixels_per_second=size * size / median / 1e6, image_bytes=whole.nbytes,
                     peak_increase_bytes=max(0, _maxrss_bytes() - before), threads=threads,
                     result_sum=sums[-1], peers={})
    del whole

    rows = []
    methods = _dask_methods(weights, ndfilters)
    for index, (name, method) in enumerate(methods.items()):
        if progress:
            progress(2 + index, steps + 1, f"{name} on {workers} workers, {size}x{size} in {chunk}x{chunk} chunks")
        check = methods["cnnlab-dask"] if name == "dask-image" else None  # after its peak is read
        rows.append(_time_on_cluster(name, method, size, chunk, repeat, workers, processes, distributed, da,
                                     check))
    rows.append(in_memory)
    ours = rows[0]
    ours["peers"] = {row["method"]: row["seconds"] for row in rows[1:]}
    ours["agreement"] = agreement
    ours["check_size"] = min(size, DASK_CHECK_SIZE)
    if ndfilters is not None:
        ours["agreement_full"] = {"dask-image": rows[1].pop("full_max_difference")}
    ours["missing"] = [] if ndfilters is not None else ["dask-image"]
    ours.update(kernel=kernel, chunk=chunk, workers=workers)
    return rows


def format_dask_table(rows):
    """The table of :func:`dask_suite`: one line per method, then the ratios and the agreement."""
    ours = rows[0]
    header = ["method", "first s", "median s", "spread s", "Mpixel/s", "peak memory"]
    lines = [header]
    for row in rows:
        if "worker_peak_bytes" in row:
            peaks, held, idle = (", ".join(f"{b / 2**20:,.0f}" for b in row[key]) for key in
                                 ("worker_peak_bytes", "worker_held_bytes", "worker_idle_bytes"))
            memory = f"per worker {peaks} MiB (idle {idle}; holding the image {held})"
        else:
            memory = (f"+{row['peak_increase_bytes'] / 2**20:,.0f} MiB over the image's "
                      f"{row['image_bytes'] / 2**20:,.0f} MiB (this process)")
        lines.append([row["method"], f"{row['first_seconds']:.2f}", f"{row['seconds']:.3f}",
                      f"{row['spread']:.3f}", f"{row['mpixels_per_second']:,.0f}", memory])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(v.ljust(w) if i in (0, 5) else v.rjust(w)
                      for i, (v, w) in enumerate(zip(line, widths))).rstrip() for line in lines]
    for peer, seconds in ours["peers"].items():
        text.append(f"cnnlab-dask / {peer}: {format_ratio(ours['seconds'] / seconds)}")
    for name in ours.get("missing", []):
        text.append(f"{name}: not installed, not timed")
    check = ", ".join(f"{name} {d:.2g}" for name, d in ours["agreement"].items())
    size = ours["check_size"]
    text.append(f"max |cnnlab-dask - other|, {size}x{size} check image: {check}")
    for name, d in ours.get("agreement_full", {}).items():
        text.append(f"max |cnnlab-dask - {name}|, whole image: {d:.2g}")
    return "\n".join(text)
