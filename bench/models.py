"""Whole networks: torchvision's ResNet-18 and MobileNetV2 in cnnlab (imported through ONNX),
PyTorch and onnxruntime, in one process, with the same thread count.

    pip install torch==2.14.1 torchvision==0.29.1 onnx onnxruntime
    python bench/models.py [--threads 2] [--repeat 10] [--batches 1 16] [--size 224]

Prints, per network and batch, the median and spread (max - min) of one inference in each
runtime and the ratios (cnnlab time / peer time: below 1 means cnnlab is faster). Warns when
the machine is busy: the figures then measure the competition.
"""

import argparse
import io
import os
import sys

import numba
import numpy as np
import onnxruntime as ort
import torch
import torchvision

import cnnlab.onnx
from cnnlab.benchmarks import busy_warning, measure


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    args = parser.parse_args()
    warning = busy_warning(os.getloadavg()[0], os.cpu_count(), args.threads)
    if warning:
        print(warning, file=sys.stderr)
    numba.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    print(f"threads {args.threads}, {args.size}x{args.size} images, median of {args.repeat} (spread)")
    print(f"{'network':<14}{'batch':>6}{'cnnlab ms':>18}{'PyTorch ms':>18}{'onnxruntime ms':>18}"
          f"{'/PyTorch':>10}{'/ort':>8}")
    torch.manual_seed(0)
    for name in args.models:
        net = getattr(torchvision.models, name)(weights=None).eval()
        example = torch.randn(1, 3, args.size, args.size)
        buffer = io.BytesIO()
        torch.onnx.export(net, example, buffer, opset_version=13, input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        model = cnnlab.onnx.load(buffer.getvalue())
        session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        for batch in args.batches:
            x = np.random.default_rng(batch).standard_normal((batch, 3, args.size, args.size)).astype(np.float32)
            tx = torch.from_numpy(x)
            expected = session.run(None, {"images": x})[0]
            error = float(np.abs(model(x) - expected).max() / np.abs(expected).max())
            with torch.no_grad():
                runs = {"cnnlab": lambda: model(x), "torch": lambda: net(tx),
                        "ort": lambda: session.run(None, {"images": x})}
                times = {key: measure(run, args.repeat) for key, run in runs.items()}
            shown = "".join(f"{t[1] * 1e3:>10.1f} ({t[2] * 1e3:4.1f})" for t in times.values())
            print(f"{name:<14}{batch:>6}{shown}{times['cnnlab'][1] / times['torch'][1]:>10.2f}"
                  f"{times['cnnlab'][1] / times['ort'][1]:>8.2f}   (relative difference {error:.0e})", flush=True)


if __name__ == "__main__":
    main()
