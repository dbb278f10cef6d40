"""The network ops (conv2d, its backward pass, pooling, ReLU, a dense layer) timed on the
reference shapes against PyTorch and scipy.signal."""

import statistics

import numpy as np

import cnnlab
import cnnlab.functional as F

from ..functional.conv import conv_geometry
from ..kernels import cpu as cpu_kernels
from .measuring import import_torch, measure, pause, timed_runs

# The design's reference shapes: (N, C, H, W, filters, kernel, stride, padding)
REFERENCE_SHAPES = {
    "lenet1": (64, 1, 28, 28, 6, 5, 1, 0),
    "lenet2": (64, 6, 12, 12, 16, 5, 1, 0),
    "cifar": (64, 16, 32, 32, 32, 3, 1, 1),
    "resnet": (32, 64, 56, 56, 64, 3, 1, 1),
    "strided": (32, 32, 64, 64, 64, 3, 2, 1),
}


def parse_shape(text):
    """A named reference shape or ``N,C,H,W,F,K,S,P``."""
    if text in REFERENCE_SHAPES:
        return text, REFERENCE_SHAPES[text]
    parts = text.split(",")
    if len(parts) != 8 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"shape must be one of {sorted(REFERENCE_SHAPES)} or N,C,H,W,F,K,S,P; got {text!r}")
    return text, tuple(int(p) for p in parts)


def reference_inputs(shape, dtype):
    """``(x, weight, bias)`` of a reference shape ``(N, C, H, W, filters, kernel, stride,
    padding)``, seeded."""
    n, c, h, w, f, k, s, p = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    weight = (rng.standard_normal((f, c, k, k)) / np.sqrt(c * k * k)).astype(dtype)
    bias = rng.standard_normal(f).astype(dtype)
    return x, weight, bias


# One builder per op: (shape, output size, x, weight, bias, host copies, torch tensors or None, torch or None)
# -> (run cnnlab, run torch, run scipy or None, work, unit)


def _conv2d(shape, out_size, x, weight, bias, host, tensors, torch):
    n, c, h, w, f, k, s, p = shape
    work, unit = 2.0 * n * f * c * k * k * out_size * out_size, "GFLOP/s"

    def ours():
        F.conv2d(x, weight, bias, s, p)

    def theirs():
        with torch.no_grad():
            torch.nn.functional.conv2d(tensors[0], tensors[1], tensors[2], s, p)

    def scipy_run():
        _scipy_conv2d(*host, s, p)
    return ours, theirs, scipy_run, work, unit


def _conv2d_backward(shape, out_size, x, weight, bias, host, tensors, torch):
    n, c, h, w, f, k, s, p = shape
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
    return ours, theirs, None, work, unit


def _pool(shape, out_size, x, weight, bias, host, tensors, torch):
    work, unit = float(x.size * x.dtype.itemsize), "GB/s"

    def ours():
        F.max_pool2d(x, 2, 2)

    def theirs():
        with torch.no_grad():
            torch.nn.functional.max_pool2d(tensors[0], 2, 2)
    return ours, theirs, None, work, unit


def _activation(shape, out_size, x, weight, bias, host, tensors, torch):
    work, unit = 2.0 * x.size * x.dtype.itemsize, "GB/s"

    def ours():
        F.relu(x)

    def theirs():
        with torch.no_grad():
            torch.relu(tensors[0])
    return ours, theirs, None, work, unit


def _linear(shape, out_size, x, weight, bias, host, tensors, torch):
    n, c, h, w, f, k, s, p = shape
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
    return ours, theirs, None, work, unit


_OPS = {"conv2d": _conv2d, "conv2d_backward": _conv2d_backward, "pool": _pool, "activation": _activation,
        "linear": _linear}


def _op_definition(op, shape, x, weight, bias, torch):
    """``(run cnnlab, run torch or None, run scipy or None, work, unit)`` for one op and shape."""
    n, c, h, w, f, k, s, p = shape
    out_size = cnnlab.output_size(h, k, s, p)
    host = [cnnlab.to_host(a) for a in (x, weight, bias)]
    tensors = [torch.from_numpy(a) for a in host] if torch is not None else None
    if tensors is not None and not isinstance(x, np.ndarray) and torch.cuda.is_available():
        tensors = [t.cuda() for t in tensors]
    if op not in _OPS:
        raise ValueError(f"unknown op {op!r}")
    ours, theirs, scipy_run, work, unit = _OPS[op](shape, out_size, x, weight, bias, host, tensors, torch)
    return ours, (theirs if torch is not None else None), scipy_run, work, unit


def op_suite(op, shapes, repeat, threads, compare, dtype="float32", device="cpu", progress=None):
    """Time one op (conv2d, conv2d_backward, pool, activation, linear) on each shape."""
    torch = import_torch(threads) if "torch" in compare else None
    synchronize = None
    if device == "cuda":
        from numba import cuda

        synchronize = cuda.synchronize
    rows = []
    for index, (name, shape) in enumerate(shapes):
        if progress:
            progress(index, len(shapes), f"{op} {name}")
        x, weight, bias = reference_inputs(shape, dtype)
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
            pause()
            row["peers"]["torch"] = measure(run(theirs), repeat)[1]
            pause()
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


def forward_path(x, weight, stride, padding):
    """The name of the items function ``cnnlab.functional.conv2d`` runs on the CPU for ``x`` and
    ``weight`` (one group, no dilation) as the kernels' settings now stand."""
    geometry = conv_geometry(x.shape, weight.shape, x.dtype, stride, padding, 1, 1)
    out_shape = (x.shape[0], weight.shape[0], *geometry.out_shape)
    work = cpu_kernels.conv2d_forward_work(x.shape, weight.shape, out_shape, *geometry.args, geometry.filter_blocks,
                                           geometry.sample_block, dtype=x.dtype)
    return work[0].py_func.__name__


def path_against_before(layers, path, label, set_way, rounds, repeat):
    """A forward convolution path against the one each layer takes without it: for each
    ``(name, (samples, channels, height, width, filters, window, stride, padding))`` of
    ``layers``, prints the path without it, the median milliseconds of ``repeat`` calls of
    ``cnnlab.functional.conv2d`` (float32, with its bias and a ReLU, a new output each call)
    without it and by it, alternating for ``rounds`` rounds, the ratio of the best rounds and
    whether the rule as found takes ``path`` (the items function's name; ``label`` names it in
    the table). ``set_way(way)`` sets
    the kernels' settings for ``"before"`` (the path off) or ``"path"`` (on, every layer by
    it), or, for None, back as they were found; they are left so."""
    rng = np.random.default_rng(0)
    width = max(len(name) for name, _ in layers)
    print(f"{'layer':>{width}}  {'path before':>28}  {'before':>16}  {label:>16}  ratio  rule")
    try:
        for name, (samples, channels, height, image_w, filters, window, stride, padding) in layers:
            x = rng.standard_normal((samples, channels, height, image_w)).astype(np.float32)
            weight = (rng.standard_normal((filters, channels, window, window)) / window / np.sqrt(channels)) \
                .astype(np.float32)
            bias = rng.standard_normal(filters).astype(np.float32)
            taken = forward_path(x, weight, stride, padding) == path
            set_way("before")
            before = forward_path(x, weight, stride, padding)
            times = {"before": [], "path": []}
            for _ in range(rounds):
                for way in times:
                    set_way(way)

                    def call():
                        return F.conv2d(x, weight, bias, stride=stride, padding=padding, activation="relu")

                    call()
                    times[way].append(statistics.median(timed_runs(call, repeat)[2]) * 1e3)
            set_way(None)
            ratio = min(times["path"]) / min(times["before"])
            print(f"{name:>{width}}  {before:>28}  {', '.join(f'{t:.3f}' for t in times['before']):>16}  "
                  f"{', '.join(f'{t:.3f}' for t in times['path']):>16}  {ratio:.2f}x  {label if taken else '-'}",
                  flush=True)
    finally:
        set_way(None)
