"""Whole networks on an NVIDIA GPU: torchvision's ResNet-18 and MobileNetV2 in cnnlab (imported
through ONNX, run with ``model.to("cuda")``) against the same networks in PyTorch CUDA (cuDNN).

    python bench/gpu_models.py [--batches 1 64] [--repeat 20] [--size 224] [--json FILE]

Random weights with BatchNorm statistics set, evaluation mode. The input already lies on the
GPU for both engines and each timed call ends with a device synchronisation; the first call
(cnnlab: kernel compilation; PyTorch: cuDNN's algorithm search) is reported apart. Prints per
network and batch: the first call, the median of ``--repeat`` calls for each engine, their
ratio (cnnlab / PyTorch, below 1: cnnlab is faster) and the largest difference between the
two outputs relative to the largest output.
"""

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from cnnlab.bench.measuring import timed_runs


def _torch_network(torch, torchvision, name):
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return net


def _timed(call, synchronize, repeat):
    def synced():
        call()
        synchronize()

    _, first, _ = timed_runs(synced, 1)  # the first call, then a warm-up
    _, _, times = timed_runs(synced, repeat)  # another warm-up, then the timed calls
    return first, statistics.median(times)


def run_network(name, batches, repeat, size, folder):
    import torch
    import torchvision
    from numba import cuda

    import cnnlab
    import cnnlab.onnx
    from cnnlab.bench.networks import export_onnx

    net = _torch_network(torch, torchvision, name)
    path = Path(folder) / f"{name}.onnx"
    path.write_bytes(export_onnx(torch, net, size))
    model = cnnlab.onnx.load(path).to("cuda")
    net = net.cuda()
    rows = []
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
        x_gpu, x_torch = cnnlab.to_device(x), torch.from_numpy(x).cuda()
        with torch.inference_mode():
            ours_first, ours = _timed(lambda: model(x_gpu), cuda.synchronize, repeat)
            theirs_first, theirs = _timed(lambda: net(x_torch), torch.cuda.synchronize, repeat)
            reference = net(x_torch).cpu().numpy()
        out = cnnlab.to_host(model(x_gpu))
        error = float(np.abs(out - reference).max() / np.abs(reference).max())
        rows.append(dict(network=name, batch=batch, cnnlab_first_s=ours_first, torch_first_s=theirs_first,
                         cnnlab_s=ours, torch_s=theirs, ratio=ours / theirs, relative_error=error,
                         same_classes=bool((out.argmax(1) == reference.argmax(1)).all())))
        row = rows[-1]
        print(f"{name:13s} batch {batch:3d}: cnnlab {ours * 1e3:8.2f} ms (first {ours_first:6.2f} s)  "
              f"PyTorch CUDA {theirs * 1e3:7.2f} ms (first {theirs_first:5.2f} s)  ratio {ours / theirs:6.2f}  "
              f"max rel diff {error:.1e}  same classes {row['same_classes']}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--networks", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--json", help="also write the rows to this .json file")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench/gpu_models.py needs PyTorch with CUDA and an NVIDIA GPU")
    print(f"{torch.cuda.get_device_name()}, PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in args.networks:
            try:
                rows += run_network(name, args.batches, args.repeat, args.size, folder)
            except Exception as error:  # report and go on with the next network
                print(f"{name}: {type(error).__name__}: {error}", flush=True)
                rows.append(dict(network=name, error=f"{type(error).__name__}: {error}"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
