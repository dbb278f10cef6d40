"""Where a network's convolution time goes: each convolution kernel call timed on its own.

    python bench/conv_layers.py MODEL.onnx [--batch 1] [--size 224] [--calls 20] [--top 20] [--lock-weights]
    python bench/conv_layers.py RESNET18.onnx --train [--calls 2]

Inference (default): the ONNX file read with :func:`cnnlab.onnx.load` and called on a random
batch of ``--size`` (H or HxW, default 224) with 3 channels, 5 untimed calls, then ``--calls`` timed ones; every forward convolution the
plan runs (``cnnlab.kernels.cpu.run_conv2d_forward_work``, and ``run_conv2d_on_layer`` where
a bound call hands its shares to the threading layer straight) is timed, and each block of
convolutions run as one call (``run_conv2d_pair_on_layer``: its kind is ``block``, its path
the items functions joined by ``+``, its shapes each one's). Prints the call's median
time, the convolutions' share, the time by path (the items function) and the largest entries
by (input, weight shape, output, path), in microseconds a call, with how many such calls a call makes. ``--train``: the ResNet-18
training step of ``bench/models.py`` (batch 16, SGD; the ONNX file is ResNet-18's), with the
forward convolutions, the weight gradients (``conv2d_backward_weight``) and the input
gradients (``conv2d_backward_input``) timed, in milliseconds a step. Two threads. The timers
are Python wrappers around each call (about a microsecond each).
"""

import argparse
import collections
import os
import statistics
import time

import numba
import numpy as np

from cnnlab.kernels import cpu as cpu_kernels
from cnnlab.parallel import single_threaded_blas


def _wrap(name, key, spent, counts):
    """Replace ``cpu_kernels.NAME`` by a wrapper adding each call's seconds to ``spent[key(args)]``
    and 1 to ``counts[key(args)]``."""
    original = getattr(cpu_kernels, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        result = original(*args, **kwargs)
        spent[key(args)] += time.perf_counter() - start
        counts[key(args)] += 1
        return result

    setattr(cpu_kernels, name, timed)


def _forward_key(args):
    work, x, weight, out = args[0], args[1], args[2], args[10]
    return ("forward", work[0].__name__, tuple(x.shape[1:]), tuple(weight.shape), tuple(out.shape[1:]))


def _layer_key(args):
    """The key of a bound convolution's shares handed to the threading layer straight
    (``cnnlab.kernels.cpu.run_conv2d_on_layer(items, arguments, edges, address)``)."""
    items, arguments = args[0], args[1]
    x, weight, out = arguments[0], arguments[1], arguments[9]
    return ("forward", items.__name__, tuple(x.shape[1:]), tuple(weight.shape), tuple(out.shape[1:]))


def _block_key(args):
    """The key of a block's convolutions run as one call
    (``cnnlab.kernels.cpu.run_conv2d_pair_on_layer(*kernels)``, each ``(items, arguments, edges,
    address)``): its items functions and each one's input, weight and output shapes."""
    return ("block", " + ".join(items.__name__ for items, *_ in args),
            tuple(tuple(arguments[0].shape[1:]) for _, arguments, *_ in args),
            tuple(tuple(arguments[1].shape) for _, arguments, *_ in args),
            tuple(tuple(arguments[9].shape[1:]) for _, arguments, *_ in args))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", default="224", help="H or HxW of the inference input (default 224)")
    parser.add_argument("--calls", type=int)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--train", action="store_true", help="ResNet-18's training step (the model is its ONNX file)")
    parser.add_argument("--lock-weights", action="store_true", help="inference with the weights locked "
                        "(Model.lock_weights: read-only, their packing kept)")
    args = parser.parse_args()
    calls = args.calls if args.calls is not None else (2 if args.train else 20)
    if args.batch < 1 or calls < 1 or args.top < 0:
        parser.error("--batch and --calls must be at least 1, --top at least 0")
    try:
        height, width = (int(v) for v in (args.size.split("x") * 2)[:2])
    except ValueError:
        parser.error(f"--size must be H or HxW, got {args.size!r}")
    if height < 1 or width < 1:
        parser.error(f"--size must be positive, got {args.size!r}")
    if not os.path.isfile(args.model):
        parser.error(f"no such ONNX file: {args.model}")
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    spent, counts = collections.defaultdict(float), collections.Counter()
    _wrap("run_conv2d_forward_work", _forward_key, spent, counts)
    _wrap("run_conv2d_on_layer", _layer_key, spent, counts)
    _wrap("run_conv2d_pair_on_layer", _block_key, spent, counts)
    if args.train:
        from cnnlab.bench import networks

        _wrap("conv2d_backward_weight", lambda a: ("weight gradient", "", tuple(a[0].shape[1:]), tuple(a[2].shape), ()),
              spent, counts)
        _wrap("conv2d_backward_input", lambda a: ("input gradient", "", (), tuple(a[1].shape), ()), spent, counts)
        step = networks.cnnlab_resnet_step(args.model, 224, False)
        unit, scale, warm = "ms a step", 1e3, 2
    else:
        import cnnlab.onnx

        model = cnnlab.onnx.load(args.model)
        if args.lock_weights:
            model.lock_weights()
        x = np.random.default_rng(0).standard_normal((args.batch, 3, height, width)).astype(np.float32)

        def step():
            with single_threaded_blas():  # (as a model call holds it)
                model(x)
        unit, scale, warm = "us a call", 1e6, 5
    for _ in range(warm):
        step()
    spent.clear()
    counts.clear()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    total = sum(spent.values()) / calls
    print(f"{args.model}: {statistics.median(times) * scale:.1f} {unit} (median of {calls}), "
          f"convolutions {total * scale:.1f} ({total / statistics.mean(times):.0%} of the mean)")
    by_path = collections.defaultdict(float)
    for key, seconds in spent.items():
        by_path[key[:2]] += seconds / calls
    for (kind, path), seconds in sorted(by_path.items(), key=lambda item: -item[1]):
        print(f"  {seconds * scale:9.1f}  {kind} {path}")
    print(f"largest ({unit}; x n: the convolutions of these shapes a call): kind, path, input, weight, output")
    for key, seconds in sorted(spent.items(), key=lambda item: -item[1])[:args.top]:
        print(f"  {seconds / calls * scale:9.1f} x {counts[key] // calls}  {key[0]} {key[1]} {key[2]} {key[3]} {key[4]}")


if __name__ == "__main__":
    main()
