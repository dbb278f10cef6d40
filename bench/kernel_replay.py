"""What a batch-1 model call costs beyond its convolution kernels: the call against a replay of
the same kernel calls alone.

    python bench/kernel_replay.py MODEL.onnx [--size 224] [--calls 300] [--rounds 3]

Reads the ONNX file with :func:`cnnlab.onnx.load`, calls the model on a random ``(1, 3, size,
size)`` float32 image until its steps are bound, then records, in one more call, every
convolution the plan hands to Numba's threading layer straight (``cnnlab.kernels.cpu.
run_conv2d_on_layer``: its items, arguments, shares and compiled address, the arrays those
are; and each block of convolutions run as one call, ``run_conv2d_pair_on_layer``). Per round it times, one call of each after the other, ``--calls`` times: the model call,
and the recorded convolutions called again in order from a bare loop with their recorded
arrays (the kernels alone, as the call leaves them: the same buffers, nothing between them).
Prints the medians in milliseconds and their difference: the Python of the steps (the plan's
walk, each step's checks, the buffer pool) and the steps that are not such convolutions (a
classifier's head, a max pooling, a convolution whose work the team claims in pieces or one
thread runs). Two threads.
"""

import argparse
import statistics
import time

import cnnlab.kernels.cpu as cpu_kernels
from cnnlab.bench.measuring import onnx_image_bench
from cnnlab.parallel import single_threaded_blas

RUNNERS = ("run_conv2d_on_layer", "run_conv2d_pair_on_layer")


def recorded_layer_calls(model, x):
    """The ``run_conv2d_on_layer`` and ``run_conv2d_pair_on_layer`` calls of one ``model(x)``, as
    ``(runner, its arguments)``, in order."""
    calls = []
    real = {name: getattr(cpu_kernels, name) for name in RUNNERS}

    def recorder(name):
        def record(*arguments):
            calls.append((real[name], arguments))
            return real[name](*arguments)
        return record

    for name in RUNNERS:
        setattr(cpu_kernels, name, recorder(name))
    try:
        model(x)
    finally:
        for name in RUNNERS:
            setattr(cpu_kernels, name, real[name])
    return calls


def main():
    args, model, x = onnx_image_bench(argparse.ArgumentParser(description=__doc__.splitlines()[0]), calls=300)
    for _ in range(5):
        model(x)
    calls = recorded_layer_calls(model, x)

    def kernels_alone():
        with single_threaded_blas():  # (as a model call holds BLAS to one thread)
            for run, arguments in calls:
                run(*arguments)

    print(f"{args.model}: {len(calls)} calls of convolutions handed to the threading layer straight, of "
          f"{len(model.graph.inference_plan())} steps")
    for number in range(1, args.rounds + 1):
        times = {"call": [], "kernels": []}
        for _ in range(args.calls):
            for name, function in (("call", lambda: model(x)), ("kernels", kernels_alone)):
                start = time.perf_counter()
                function()
                times[name].append(time.perf_counter() - start)
        call, alone = (statistics.median(times[name]) * 1e3 for name in ("call", "kernels"))
        print(f"round {number}: model call {call:.2f} ms, its straight convolutions alone {alone:.2f} ms, "
              f"the rest {call - alone:.2f} ms ({(call - alone) / call:.0%})")


if __name__ == "__main__":
    main()
