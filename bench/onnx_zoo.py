"""torchvision's architectures through ONNX: export each with random weights, load it with
cnnlab.onnx, compare with onnxruntime. Needs torch, torchvision, onnx and onnxruntime:

    pip install torch==2.14.1 torchvision==0.29.1 onnx onnxruntime
    python bench/onnx_zoo.py [--size 224] [--models resnet18 mobilenet_v2 ...]

Prints one line per model: imported or refused (with the reason), the largest absolute
difference relative to the largest output, and the time of one batch-1 forward in each.
"""

import argparse
import io
import time

import numpy as np
import onnxruntime as ort
import torch
import torchvision

import cnnlab
import cnnlab.onnx

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "densenet121",
          "squeezenet1_0", "squeezenet1_1", "googlenet", "efficientnet_b0", "regnet_y_400mf", "mnasnet0_5",
          "shufflenet_v2_x0_5", "alexnet", "vgg11"]


def best_of(function, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="*", default=MODELS)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    for name in args.models:
        kwargs = dict(aux_logits=False, init_weights=True) if name == "googlenet" else {}
        net = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
        buffer = io.BytesIO()
        torch.onnx.export(net, torch.from_numpy(x), buffer, opset_version=13, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}}, dynamo=False)
        data = buffer.getvalue()
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        expected = session.run(None, {"images": x})[0]
        try:
            model = cnnlab.onnx.load(data)
        except NotImplementedError as exc:
            print(f"{name}: refused: {exc}")
            continue
        got = model(x)
        error = float(np.abs(got - expected).max() / np.abs(expected).max())
        ours = best_of(lambda: model(x))
        theirs = best_of(lambda: session.run(None, {"images": x}))
        print(f"{name}: imported, {len(model.layers)} layers, relative error {error:.1e}, "
              f"batch 1 forward cnnlab {ours * 1e3:.0f} ms, onnxruntime {theirs * 1e3:.0f} ms", flush=True)


if __name__ == "__main__":
    main()
