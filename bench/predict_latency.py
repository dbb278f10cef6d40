"""What a single image's ``predict`` costs around the model call.

    python bench/predict_latency.py MODEL.onnx [--size 224] [--calls 40] [--rounds 3]

Reads the ONNX file with :func:`cnnlab.onnx.load` and, per round, takes the median of
``--calls`` calls (after 5 untimed ones, ``median_call_seconds``) of the model call ``model(x)``, of ``model.predict(x)``
(the input's checks, the call, a softmax where the model ends without one, and the arg-max) and
of ``model.check_inputs(x)`` alone, on a random ``(1, 3, size, size)`` float32 image; prints
them in milliseconds. Two threads.
"""

import argparse
import os

import numba
import numpy as np

import cnnlab.onnx
from cnnlab.bench.measuring import median_call_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if min(args.size, args.calls, args.rounds) < 1:
        parser.error("--size, --calls and --rounds must be at least 1")
    if not os.path.isfile(args.model):
        parser.error(f"no file {args.model}")
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    model = cnnlab.onnx.load(args.model)
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    for number in range(1, args.rounds + 1):
        call, predict, check = (median_call_seconds(function, args.calls) * 1e3
                                for function in (lambda: model(x), lambda: model.predict(x),
                                                 lambda: model.check_inputs(x)))
        print(f"round {number}: model(x) {call:.2f} ms, predict {predict:.2f} ms, check_inputs {check:.3f} ms")


if __name__ == "__main__":
    main()
