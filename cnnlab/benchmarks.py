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


def parse_shape(text):
    """A named reference shape or ``N,C,H,W,F,K,S,P``."""
    if text in REFERENCE_SHAPES:
        return text, REFERENCE_SHAPES[text]
    parts = text.split(",")
    if len(parts) != 8 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"shape must be one of {sorted(REFERENCE_SHAPES)} or N,C,H,W,F,K,S,P; got {text!r}")
    return text, tuple(int(p) for p in parts)


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


def conv2d_suite(shapes, repeat, threads, compare, dtype="float32", device="cpu", progress=None):
    """Time conv2d forward on each shape; returns a list of result dicts."""
    import cnnlab
    import cnnlab.functional as F

    torch = _torch(threads) if "torch" in compare else None
    rows = []
    for index, (name, (n, c, h, w, f, k, s, p)) in enumerate(shapes):
        if progress:
            progress(index, len(shapes), name)
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, c, h, w)).astype(dtype)
        weight = rng.standard_normal((f, c, k, k)).astype(dtype)
        bias = rng.standard_normal(f).astype(dtype)
        out_size = cnnlab.output_size(h, k, s, p)
        flops = 2.0 * n * f * c * k * k * out_size * out_size
        if device == "cuda":
            from numba import cuda

            x, weight, bias = (cnnlab.to_device(a) for a in (x, weight, bias))

            def run():
                F.conv2d(x, weight, bias, s, p)
                cuda.synchronize()
        else:
            def run():
                F.conv2d(x, weight, bias, s, p)

        first, median, spread = measure(run, repeat)
        row = dict(op="conv2d", shape=name, dtype=dtype, device=device, seconds=median, spread=spread,
                   jit_seconds=max(0.0, first - median), gflops=flops / median / 1e9, peers={})
        host = [cnnlab.to_host(a) for a in (x, weight, bias)]
        if torch is not None:
            _pause()
            tx, tw, tb = (torch.from_numpy(a) for a in host)
            if device == "cuda" and torch.cuda.is_available():
                tx, tw, tb = tx.cuda(), tw.cuda(), tb.cuda()

            def run_torch():
                with torch.no_grad():
                    torch.nn.functional.conv2d(tx, tw, tb, s, p)
                if tx.is_cuda:
                    torch.cuda.synchronize()

            row["peers"]["torch"] = measure(run_torch, repeat)[1]
            _pause()
        if "scipy" in compare:
            row["peers"]["scipy"] = measure(lambda: _scipy_conv2d(*host, s, p), 1)[1]
        rows.append(row)
    return rows


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
    """The seeds' 3x3 edge filter on one ``size`` x ``size`` float32 image."""
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
    """A plain-text table: time, spread, JIT, throughput and the ratio to every peer."""
    peers = sorted({peer for row in rows for peer in row["peers"]})
    header = ["op", "shape", "cnnlab ms", "spread ms", "jit s", "rate"] + [f"vs {p}" for p in peers]
    lines = [header]
    for row in rows:
        if "gflops" in row:
            rate = f"{row['gflops']:.1f} GFLOP/s"
        elif "gbytes" in row:
            rate = f"{row['gbytes']:.2f} GB/s"
        else:
            rate = f"{row['samples_per_second']:,.0f} samples/s"
        line = [row["op"], row["shape"], f"{row['seconds'] * 1e3:.2f}", f"{row['spread'] * 1e3:.2f}",
                f"{row['jit_seconds']:.2f}", rate]
        for peer in peers:
            t = row["peers"].get(peer)
            line.append(f"{row['seconds'] / t:.2f}x" if t else "-")
        lines.append(line)
    for op in sorted({row["op"] for row in rows}):
        op_rows = [r for r in rows if r["op"] == op]
        if len(op_rows) > 1:
            line = [op, "geomean", "", "", "", ""]
            for peer in peers:
                ratios = [r["seconds"] / r["peers"][peer] for r in op_rows if r["peers"].get(peer)]
                line.append(f"{geometric_mean(ratios):.2f}x" if ratios else "-")
            lines.append(line)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(v).rjust(w) for v, w in zip(line, widths)) for line in lines)


# ----------------------------------------------------------------------------- training


TRAIN_NETWORKS = {
    # name: (input shape, classes, conv filters, hidden units, samples per epoch, batch size)
    "demo-digits": ((1, 8, 8), 10, (32, 64), 128, None, 32),
    "cifar-sized": ((3, 32, 32), 10, (32, 64), 128, 1024, 64),
}


def _training_data(name):
    shape, classes, _, _, samples, _ = TRAIN_NETWORKS[name]
    if name == "demo-digits":
        from .cli import load_demo_data
        from .data import train_test_split

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
    from .cli import seeds_cnn

    torch = _torch(threads) if "torch" in compare else None
    rows = []
    for index, name in enumerate(TRAIN_NETWORKS):
        if progress:
            progress(index, len(TRAIN_NETWORKS), name)
        (channels, size, _), classes, filters, hidden, _, batch = TRAIN_NETWORKS[name]
        x, y = _training_data(name)
        model = seeds_cnn(channels, size, classes, filters, hidden, seed=0).to(device)
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
