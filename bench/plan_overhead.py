"""The Python of a batch-1 inference plan alone: the network's steps with the kernels they
call replaced by functions that do nothing.

    python bench/plan_overhead.py MODEL.onnx [MODEL.onnx ...] [--size 224] [--repeat 300]

Each ONNX file is read with :func:`cnnlab.onnx.load`, called twice on a random batch of one
image (the plan is built and bound), then :mod:`cnnlab.kernels.cpu`'s ``conv2d_forward``,
``linear_forward``, ``pool2d_forward`` and ``global_avg_pool2d_forward``, and the runners of the
plan's bound steps (``HOST_RUNNERS``: a bound convolution's work, a squeeze's gates), become no-ops
and ``model(x)`` is timed:
what is left is walking the plan, the fused steps' checks and buffers, and the calls down to
the kernels (not the kernels' own Python entry, nor handing work to other threads: see
``bench/node_overhead.py`` for everything outside the compiled code). Prints the best of 5
batches of ``--repeat`` calls, per call and per step of the plan.
"""

import argparse
import time

import numpy as np

import cnnlab.kernels.cpu as kernels
import cnnlab.onnx

# the kernels, and the runners of the plan's bound steps (a bound convolution calls
# run_conv2d_forward_work, or run_conv2d_on_layer once its shares are kept, not conv2d_forward)
STUBBED = ("conv2d_forward", "linear_forward", "global_avg_pool2d_forward", "pool2d_forward") + kernels.HOST_RUNNERS


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("models", nargs="+")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    originals = {name: getattr(kernels, name) for name in STUBBED}
    for path in args.models:
        for name, kernel in originals.items():
            setattr(kernels, name, kernel)
        model = cnnlab.onnx.load(path)
        x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
        model(x)
        model(x)
        steps = len(model.graph.inference_plan())
        for name in STUBBED:
            setattr(kernels, name, lambda *arguments, **options: None)
        model(x)
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(args.repeat):
                model(x)
            best = min(best, (time.perf_counter() - start) / args.repeat)
        print(f"{path}: {steps} steps, {best * 1e6:.0f} us a call, {best * 1e6 / steps:.1f} us a step")


if __name__ == "__main__":
    main()
