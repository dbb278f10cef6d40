"""One engine timed in a process of its own (``cnnlab bench --op models``).

    python -m cnnlab.bench.engine_worker ENGINE --threads N

``ENGINE`` is ``cnnlab``, ``torch`` or ``onnxruntime``. The process reads one JSON request per
line on standard input and answers each with one JSON line on standard output (anything the
libraries print goes to standard error). Between requests it only waits, so an engine whose
thread pool spins after a call spins in its own process, while no other engine is timed
(:mod:`cnnlab.bench.networks` alternates the engines and pauses between them).

Requests (``{"task": ...}``):

- ``export``: ``network``, ``size``, ``path`` (torch): write torchvision's network (random
  weights, ``torch.manual_seed(0)``) to ``path`` as ONNX, the batch axis dynamic.
- ``inference``: ``network``, ``onnx``, ``batch``, ``size``, ``repeat``, optional ``unfused`` and
  ``lock`` (cnnlab's weights locked: :meth:`cnnlab.Model.lock_weights`)
  (cnnlab with ``config.FUSE = False``) and ``save`` (a ``.npy`` path for the output of the
  first call): ``{"first": s, "times": [s, ...]}``.
- ``train``: ``repeat``: seconds of each timed run of :data:`~cnnlab.bench.networks.TRAIN_STEPS`
  training steps (cnnlab, torch).
- ``train_resnet``: ``onnx``, ``size``, ``frozen``, ``repeat``: one training step of ResNet-18
  at batch :data:`~cnnlab.bench.networks.RESNET_TRAIN_BATCH`, whole or with a frozen base
  (cnnlab from the ONNX file, torch from torchvision).
- ``conv2d``: ``shape`` (a name of :data:`cnnlab.bench.ops.REFERENCE_SHAPES`), ``repeat``: the
  forward convolution of that shape in float32 (``cnnlab.functional.conv2d``,
  ``torch.nn.functional.conv2d``), bias included, a new output each call.
- ``overhead``: ``onnx``, ``batch``, ``size``, ``repeat`` (cnnlab): :func:`cnnlab.bench.overhead.node_overhead`.
- ``memory``: ``network``, ``onnx``, ``batch``, ``size`` (cnnlab): one row of peak memory.
- ``train_memory``: ``network`` (``"cifar"``: the ``train`` task's steps; ``"resnet18"``: the
  ``train_resnet`` task's step, with ``onnx``, ``size``, ``frozen``) (cnnlab, torch):
  :func:`cnnlab.bench.networks.training_memory` of those steps, in a worker started for it.
- ``info``: the engine's version and, for cnnlab, the BLAS kernels.
"""

import argparse
import json
import os
import sys
import traceback

import numpy as np

from .measuring import timed_runs

ENGINES = ("cnnlab", "torch", "onnxruntime")


def _conv_inputs(name):
    """``(x, weight, bias, stride, padding)`` of the reference convolution ``name``."""
    from .ops import REFERENCE_SHAPES, reference_inputs

    shape = REFERENCE_SHAPES[name]
    return (*reference_inputs(shape, np.float32), shape[6], shape[7])


def _input(batch, size):
    return np.random.default_rng(batch).standard_normal((batch, 3, size, size)).astype(np.float32)


class _Cnnlab:
    def __init__(self, threads):
        import numba

        numba.set_num_threads(threads)
        self.models = {}

    def model(self, path, locked=False):
        """The network of the ONNX file at ``path``, loaded once; ``locked``: a second copy with
        its weights locked (:meth:`cnnlab.Model.lock_weights`)."""
        import cnnlab.onnx

        if (path, locked) not in self.models:
            self.models[path, locked] = cnnlab.onnx.load(path)
            if locked:
                self.models[path, locked].lock_weights()
        return self.models[path, locked]

    def inference(self, request):
        from .. import config

        model, x = self.model(request["onnx"], request.get("lock", False)), _input(request["batch"], request["size"])
        previous, config.FUSE = config.FUSE, not request.get("unfused", False)
        try:
            return timed_runs(lambda: model(x), request["repeat"])
        finally:
            config.FUSE = previous

    def overhead(self, request):
        from .overhead import node_overhead

        return node_overhead(self.model(request["onnx"], request.get("lock", False)),
                             _input(request["batch"], request["size"]), request["repeat"])

    def memory(self, request):
        from .networks import inference_memory

        x = _input(request["batch"], request["size"])
        return inference_memory(self.model(request["onnx"]), request["network"], x) or {}

    def train(self, request):
        from .networks import cnnlab_training_step

        run = cnnlab_training_step()
        return timed_runs(run, request["repeat"])[1:]

    def conv2d(self, request):
        import cnnlab.functional as F

        x, weight, bias, stride, padding = _conv_inputs(request["shape"])
        return timed_runs(lambda: F.conv2d(x, weight, bias, stride=stride, padding=padding), request["repeat"])[1:]

    def train_resnet(self, request):
        from .networks import cnnlab_resnet_step

        run = cnnlab_resnet_step(request["onnx"], request["size"], request["frozen"])
        return timed_runs(run, request["repeat"])[1:]

    def train_memory(self, request):
        from .networks import cnnlab_resnet_step, cnnlab_training_step, training_memory

        if request["network"] == "cifar":
            return training_memory(cnnlab_training_step) or {}
        return training_memory(lambda: cnnlab_resnet_step(request["onnx"], request["size"], request["frozen"])) or {}

    def info(self, request):
        from .._version import __version__
        from ..parallel import blas_kernels, threading_layer

        return dict(version=__version__, blas=blas_kernels(), threading=threading_layer())


class _Torch:
    def __init__(self, threads):
        import torch

        torch.set_num_threads(threads)
        self.torch, self.nets = torch, {}

    def net(self, name):
        import torchvision

        if name not in self.nets:
            self.torch.manual_seed(0)
            self.nets[name] = getattr(torchvision.models, name)(weights=None).eval()
        return self.nets[name]

    def export(self, request):
        from .networks import export_onnx

        with open(request["path"], "wb") as handle:
            handle.write(export_onnx(self.torch, self.net(request["network"]), request["size"]))
        return {}

    def inference(self, request):
        net, x = self.net(request["network"]), self.torch.from_numpy(_input(request["batch"], request["size"]))
        with self.torch.no_grad():
            result, first, times = timed_runs(lambda: net(x), request["repeat"])
        return result.numpy(), first, times

    def train(self, request):
        from .networks import torch_training_step

        return timed_runs(torch_training_step(self.torch), request["repeat"])[1:]

    def conv2d(self, request):
        x, weight, bias, stride, padding = (self.torch.from_numpy(a) if isinstance(a, np.ndarray) else a
                                            for a in _conv_inputs(request["shape"]))
        with self.torch.no_grad():
            return timed_runs(lambda: self.torch.nn.functional.conv2d(x, weight, bias, stride, padding),
                              request["repeat"])[1:]

    def train_resnet(self, request):
        from .networks import torch_resnet_step

        return timed_runs(torch_resnet_step(self.torch, request["size"], request["frozen"]), request["repeat"])[1:]

    def train_memory(self, request):
        from .networks import torch_resnet_step, torch_training_step, training_memory

        if request["network"] == "cifar":
            return training_memory(lambda: torch_training_step(self.torch)) or {}
        return training_memory(lambda: torch_resnet_step(self.torch, request["size"], request["frozen"])) or {}

    def info(self, request):
        return dict(version=self.torch.__version__)


class _OnnxRuntime:
    def __init__(self, threads):
        import onnxruntime

        self.ort, self.threads, self.sessions = onnxruntime, threads, {}

    def inference(self, request):
        path = request["onnx"]
        if path not in self.sessions:
            options = self.ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            self.sessions[path] = self.ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        session, x = self.sessions[path], _input(request["batch"], request["size"])
        result, first, times = timed_runs(lambda: session.run(None, {session.get_inputs()[0].name: x}), request["repeat"])
        return result[0], first, times

    def info(self, request):
        return dict(version=self.ort.__version__)


def _answer(engine, request):
    task = request.get("task")
    if task == "inference":
        result, first, times = engine.inference(request)
        if request.get("save"):
            np.save(request["save"], np.asarray(result))
        return dict(first=first, times=times)
    if task in ("train", "train_resnet", "conv2d"):
        first, times = getattr(engine, task)(request)
        return dict(first=first, times=times)
    handler = getattr(engine, task, None) if isinstance(task, str) else None
    if handler is None:
        raise ValueError(f"the {type(engine).__name__.strip('_').lower()} worker has no task {task!r}")
    return handler(request)


def serve(engine, requests, replies):
    """Answer each JSON line of ``requests`` with one JSON line on ``replies``: the result, or
    ``{"error": message}``."""
    for line in requests:
        if not line.strip():
            continue
        try:
            reply = _answer(engine, json.loads(line))
        except Exception as error:  # reported to the parent, which skips the row
            traceback.print_exc(file=sys.stderr)
            reply = dict(error=f"{type(error).__name__}: {error}")
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def make_engine(name, threads):
    """The engine ``name`` (one of :data:`ENGINES`) set to ``threads`` threads."""
    if name not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")
    return {"cnnlab": _Cnnlab, "torch": _Torch, "onnxruntime": _OnnxRuntime}[name](threads)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m cnnlab.bench.engine_worker")
    parser.add_argument("engine", choices=ENGINES)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    replies = os.fdopen(os.dup(1), "w")  # the answers; whatever else is printed goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    engine = make_engine(args.engine, args.threads)
    serve(engine, sys.stdin, replies)


if __name__ == "__main__":
    main()
