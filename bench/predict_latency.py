"""What a single image's ``predict`` costs around the model call.

    python bench/predict_latency.py MODEL.onnx [--size 224] [--calls 40] [--rounds 3]

Reads the ONNX file with :func:`cnnlab.onnx.load` and, per round, takes the median of
``--calls`` calls (after 5 untimed ones, ``median_call_seconds``) of the model call ``model(x)``, of ``model.predict(x)``
(the input's checks, the call, a softmax where the model ends without one, and the arg-max) and
of ``model.check_inputs(x)`` alone, on a random ``(1, 3, size, size)`` float32 image; prints
them in milliseconds. Two threads.
"""

import argparse

from cnnlab.bench.measuring import median_call_seconds, onnx_image_bench


def main():
    args, model, x = onnx_image_bench(argparse.ArgumentParser(description=__doc__.splitlines()[0]), calls=40)
    for number in range(1, args.rounds + 1):
        call, predict, check = (median_call_seconds(function, args.calls) * 1e3
                                for function in (lambda: model(x), lambda: model.predict(x),
                                                 lambda: model.check_inputs(x)))
        print(f"round {number}: model(x) {call:.2f} ms, predict {predict:.2f} ms, check_inputs {check:.3f} ms")


if __name__ == "__main__":
    main()
