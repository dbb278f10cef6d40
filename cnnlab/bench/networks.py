"""Whole networks timed side by side: ``cnnlab bench --op models`` and ``bench/models.py``.

torchvision's ResNet-18 and MobileNetV2 (random weights, evaluation mode) are exported to ONNX
in memory and read with :func:`cnnlab.onnx.load`; one inference of a batch is timed in cnnlab
(fused, as a model predicts, and with ``cnnlab.config.FUSE = False``: every layer on its own),
in PyTorch and in onnxruntime, in one process with the same thread count. A training step
(forward, backward, SGD update) of a small three-convolution CIFAR-sized network at batch 32
is timed in cnnlab and PyTorch. :func:`memory_rows` measures the peak memory of one
inference with and without the inference plan. Needs torch, torchvision, onnx and onnxruntime
(the ``bench`` extra).
"""

import importlib.util
import io
import os

import numpy as np

import cnnlab

from .. import config, optim
from .. import layers as L
from .measuring import maxrss_bytes, measure, reset_peak_rss

NETWORKS = ("resnet18", "mobilenet_v2")
TRAIN_BATCH = 32
TRAIN_STEPS = 8


def missing_modules():
    """The modules this suite needs that cannot be imported (empty when it can run)."""
    return [name for name in ("torch", "torchvision", "onnx", "onnxruntime") if importlib.util.find_spec(name) is None]


def _export(torch, net, size):
    example = torch.randn(1, 3, size, size)
    buffer = io.BytesIO()
    torch.onnx.export(net, example, buffer, opset_version=13, input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return buffer.getvalue()


def _unfused(function):
    def run():
        previous, config.FUSE = config.FUSE, False
        try:
            return function()
        finally:
            config.FUSE = previous
    return run


def inference_rows(threads, repeat, batches=(1, 16), size=224, networks=NETWORKS, progress=None):
    """One row per network and batch: cnnlab's median seconds and spread, and the peers'
    medians (``torch``, ``onnxruntime``, ``unfused``: cnnlab with every layer on its own), and
    the largest difference from onnxruntime relative to its largest output."""
    import onnxruntime as ort
    import torch
    import torchvision

    import cnnlab.onnx

    torch.set_num_threads(threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    torch.manual_seed(0)
    rows = []
    for index, name in enumerate(networks):
        if progress:
            progress(index, len(networks), name)
        net = getattr(torchvision.models, name)(weights=None).eval()
        data = _export(torch, net, size)
        model = cnnlab.onnx.load(data)
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        for batch in batches:
            x = np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)
            tx = torch.from_numpy(x)
            expected = session.run(None, {"images": x})[0]
            error = float(np.abs(model(x) - expected).max() / np.abs(expected).max())
            with torch.no_grad():
                first, median, spread = measure(lambda: model(x), repeat)
                peers = {"unfused": measure(_unfused(lambda: model(x)), repeat)[1],
                         "torch": measure(lambda: net(tx), repeat)[1],
                         "onnxruntime": measure(lambda: session.run(None, {"images": x}), repeat)[1]}
            rows.append(dict(op="inference", shape=f"{name} b{batch}", dtype="float32", device="cpu",
                             seconds=median, spread=spread, jit_seconds=max(0.0, first - median),
                             samples_per_second=batch / median, peers=peers, relative_error=error))
    return rows


def _cnnlab_train_network(seed):
    x = cnnlab.Input((3, 32, 32))
    h = L.ReLU()(L.Conv2D(3, 32, 3, padding=1, seed=seed)(x))
    h = L.MaxPool2D(2)(L.ReLU()(L.Conv2D(32, 32, 3, padding=1, seed=seed + 1)(h)))
    h = L.MaxPool2D(2)(L.ReLU()(L.Conv2D(32, 64, 3, padding=1, seed=seed + 2)(h)))
    return cnnlab.Model(x, L.Dense(64 * 8 * 8, 10, seed=seed + 3)(L.Flatten()(h)))


def _torch_train_network(torch):
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64 * 8 * 8, 10))


def training_rows(threads, repeat, progress=None):
    """One row: seconds per training step (forward, cross-entropy, backward, SGD update) of a
    three-convolution network on 32x32x3 images at batch 32, cnnlab (``Model.fit`` over
    :data:`TRAIN_STEPS` batches, divided) and PyTorch (the same loop)."""
    import torch

    if progress:
        progress(0, 1, "training step")
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((TRAIN_BATCH * TRAIN_STEPS, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    model = _cnnlab_train_network(seed=0)
    optimizer = optim.SGD(0.01)

    def ours():
        model.fit(x, y, epochs=1, batch_size=TRAIN_BATCH, optimizer=optimizer, shuffle=False, verbose=0)

    first, median, spread = measure(ours, repeat)
    net = _torch_train_network(torch)
    torch_optimizer = torch.optim.SGD(net.parameters(), 0.01)
    loss_function = torch.nn.CrossEntropyLoss()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def theirs():
        for start in range(0, len(x), TRAIN_BATCH):
            torch_optimizer.zero_grad()
            loss_function(net(tx[start:start + TRAIN_BATCH]), ty[start:start + TRAIN_BATCH]).backward()
            torch_optimizer.step()

    torch_median = measure(theirs, repeat)[1]
    return [dict(op="training step", shape=f"3-conv 32x32 b{TRAIN_BATCH}", dtype="float32", device="cpu",
                 seconds=median / TRAIN_STEPS, spread=spread / TRAIN_STEPS,
                 jit_seconds=max(0.0, first - median), samples_per_second=len(x) / median,
                 peers={"torch": torch_median / TRAIN_STEPS})]


def memory_rows(batch=16, size=224, networks=NETWORKS, progress=None):
    """Peak memory of one inference of a batch, fused (the inference plan with its buffer
    pool, the default) and unfused (``cnnlab.config.FUSE = False``: every layer on its own, a
    new array per output), after one warm-up call each: the rise of the process's resident
    memory during the call (Linux ``VmHWM``, restarted just before it), and what the pool
    keeps between calls. Empty where ``/proc`` cannot tell."""
    import torch
    import torchvision

    import cnnlab.onnx

    if not os.path.exists("/proc/self/clear_refs"):  # the peak could not be restarted per call
        return []
    rows = []
    for index, name in enumerate(networks):
        if progress:
            progress(index, len(networks), f"{name} memory")
        torch.manual_seed(0)
        model = cnnlab.onnx.load(_export(torch, getattr(torchvision.models, name)(weights=None).eval(), size))
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
        row = dict(network=name, batch=batch, input_bytes=x.nbytes)
        for label, run in (("unfused", _unfused(lambda: model(x))), ("fused", lambda: model(x))):
            run()
            before = reset_peak_rss()  # the peak restarts from the current resident size
            run()
            row[f"{label}_peak_bytes"] = maxrss_bytes() - before
        row["pool_bytes"] = model.graph.buffer_pool().nbytes
        rows.append(row)
    return rows


def models_suite(threads, repeat, batches=(1, 16), size=224, networks=NETWORKS, progress=None):
    """The rows of :func:`inference_rows` and :func:`training_rows`."""
    return (inference_rows(threads, repeat, batches, size, networks, progress)
            + training_rows(threads, max(1, min(repeat, 5)), progress))
