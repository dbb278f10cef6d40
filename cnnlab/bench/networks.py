"""Whole networks timed side by side: ``cnnlab bench --op models`` and ``bench/models.py``.

torchvision's ResNet-18 and MobileNetV2 (random weights, evaluation mode) are exported to ONNX
and read with :func:`cnnlab.onnx.load`; one inference of a batch is timed in cnnlab (fused, as
a model predicts, and with ``cnnlab.config.FUSE = False``: every layer on its own), in PyTorch
and in onnxruntime. A training step (forward, backward, SGD update) of a small
three-convolution CIFAR-sized network at batch 32 is timed in cnnlab and PyTorch, and so is one
of ResNet-18 at batch 16, whole and with a frozen base (only the last layer trained).

Each engine runs in a process of its own (:mod:`cnnlab.bench.engine_worker`), with the same
thread count; the parent only sends requests. The engines take turns in rounds (round 1:
cnnlab, cnnlab unfused, PyTorch, onnxruntime; round 2: the same...), with a pause between
turns so that the thread pool of the engine that just ran has gone to sleep; each engine's
figure is the median of all its timed runs. A thread pool that spins after a call then spins
in an idle process, not in the next engine's. ``openblas="own"`` starts the workers without
``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE``, so that OpenBLAS chooses its kernels for the
processor as on a machine where neither is set; ``"both"`` measures both settings.

PyTorch and torchvision export the networks (``onnx_dir`` can hold exported files instead);
an engine that is not installed leaves its column empty (``-``).
"""

import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import cnnlab

from .. import config, optim
from .. import layers as L
from .measuring import maxrss_bytes, reset_peak_rss

NETWORKS = ("resnet18", "mobilenet_v2")
TRAIN_BATCH = 32
TRAIN_STEPS = 8
#: the batch of the ResNet-18 training rows (a step on 224x224 images, SGD)
RESNET_TRAIN_BATCH = 16
#: the variables removed from the workers' environment for OpenBLAS's own kernel choice
OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: seconds between two engines' turns: the spinning threads of the one that ran go to sleep
PAUSE = 0.3


def missing_modules():
    """The modules this suite needs that cannot be imported (empty when it can run)."""
    return [name for name in ("torch", "torchvision", "onnx", "onnxruntime") if importlib.util.find_spec(name) is None]


def export_onnx(torch, net, size):
    """The bytes of ``net`` exported to ONNX (opset 13) for ``size`` x ``size`` RGB images,
    the batch axis dynamic."""
    import io

    example = torch.randn(1, 3, size, size)
    buffer = io.BytesIO()
    torch.onnx.export(net, example, buffer, opset_version=13, input_names=["images"], output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- what the workers run

def _cnnlab_train_network(seed):
    x = cnnlab.Input((3, 32, 32))
    h = L.ReLU()(L.Conv2D(3, 32, 3, padding=1, seed=seed)(x))
    h = L.MaxPool2D(2)(L.ReLU()(L.Conv2D(32, 32, 3, padding=1, seed=seed + 1)(h)))
    h = L.MaxPool2D(2)(L.ReLU()(L.Conv2D(32, 64, 3, padding=1, seed=seed + 2)(h)))
    return cnnlab.Model(x, L.Dense(64 * 8 * 8, 10, seed=seed + 3)(L.Flatten()(h)))


def _train_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((TRAIN_BATCH * TRAIN_STEPS, 3, 32, 32)).astype(np.float32)
    return x, rng.integers(0, 10, len(x))


def cnnlab_training_step():
    """A function running :data:`TRAIN_STEPS` training steps (forward, cross-entropy, backward,
    SGD update) of a three-convolution network on 32x32x3 images at batch 32 (``Model.fit``)."""
    x, y = _train_data()
    model, optimizer = _cnnlab_train_network(seed=0), optim.SGD(0.01)

    def run():
        model.fit(x, y, epochs=1, batch_size=TRAIN_BATCH, optimizer=optimizer, shuffle=False, verbose=0)
    return run


def torch_training_step(torch):
    """The same :data:`TRAIN_STEPS` steps of the same network in PyTorch."""
    nn = torch.nn
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(64 * 8 * 8, 10))
    optimizer, loss_function = torch.optim.SGD(net.parameters(), 0.01), nn.CrossEntropyLoss()
    x, y = _train_data()
    tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def run():
        for start in range(0, len(x), TRAIN_BATCH):
            optimizer.zero_grad()
            loss_function(net(tx[start:start + TRAIN_BATCH]), ty[start:start + TRAIN_BATCH]).backward()
            optimizer.step()
    return run


def _resnet_train_data(size):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((RESNET_TRAIN_BATCH, 3, size, size)).astype(np.float32)
    return x, rng.integers(0, 1000, len(x))


def cnnlab_resnet_step(path, size, frozen):
    """A function running one training step (forward, cross-entropy, backward, SGD) of the
    ResNet-18 read from the ONNX file ``path``, at batch :data:`RESNET_TRAIN_BATCH`; ``frozen``:
    every layer but the last frozen (``Model.freeze``: the base runs as in inference, its batch
    normalizations on their running statistics, and no gradient is computed for it)."""
    import cnnlab.onnx

    model = cnnlab.onnx.load(path)
    if frozen:
        model.freeze(up_to=len(model.layers) - 1)
    x, y = _resnet_train_data(size)
    optimizer = optim.SGD(0.01)

    def run():
        model.fit(x, y, epochs=1, batch_size=RESNET_TRAIN_BATCH, optimizer=optimizer, shuffle=False, verbose=0)
    return run


def torch_resnet_step(torch, size, frozen):
    """The same step of torchvision's ResNet-18 in PyTorch; ``frozen``: only ``fc`` trains, the
    rest in evaluation mode (batch normalization on its running statistics, as cnnlab's frozen
    base) with ``requires_grad = False``."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).train()
    if frozen:
        net.eval()
        net.fc.train()
        for name, parameter in net.named_parameters():
            parameter.requires_grad = name.startswith("fc.")
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], 0.01)
    loss_function = torch.nn.CrossEntropyLoss()
    x, y = _resnet_train_data(size)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    def run():
        optimizer.zero_grad()
        loss_function(net(tx), ty).backward()
        optimizer.step()
    return run


def inference_memory(model, name, x):
    """Peak memory of one inference of ``x``, fused (the inference plan with its buffer pool,
    the default) and unfused (``cnnlab.config.FUSE = False``: a new array per output), after
    one warm-up call each: the rise of the process's resident memory during the call (Linux
    ``VmHWM``, restarted just before it), and what the pool keeps between calls. None where
    ``/proc`` cannot tell."""
    if not os.path.exists("/proc/self/clear_refs"):  # the peak could not be restarted per call
        return None

    def unfused():
        previous, config.FUSE = config.FUSE, False
        try:
            model(x)
        finally:
            config.FUSE = previous

    row = dict(network=name, batch=len(x), input_bytes=x.nbytes)
    for label, run in (("unfused", unfused), ("fused", lambda: model(x))):
        run()
        before = reset_peak_rss()  # the peak restarts from the current resident size
        run()
        row[f"{label}_peak_bytes"] = maxrss_bytes() - before
    row["pool_bytes"] = model.graph.buffer_pool().nbytes
    return row


def training_memory(make_step):
    """The memory training steps take: ``make_step()`` builds the network, its data and
    optimizer and returns a function that runs the steps (:func:`cnnlab_training_step` and the
    like), run twice. Returns ``{"step_bytes": the rise of resident memory during the second
    run, over the size it started at (Linux ``VmHWM``, restarted just before it); "total_bytes":
    the peak over the process's size before ``make_step`` was called, either run; "kept_bytes":
    what the process held more between the runs}``, or None where ``/proc`` cannot tell. Run in
    a process started for it: memory an earlier task freed but the allocator kept would serve
    the steps unseen."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    base = reset_peak_rss()
    run = make_step()
    run()
    first = maxrss_bytes() - base
    before = reset_peak_rss()
    run()
    step = maxrss_bytes() - before
    return dict(step_bytes=step, total_bytes=max(first, step + before - base), kept_bytes=before - base)


#: the training-memory rows: (label, request)
TRAINING_MEMORY = (("CIFAR-sized net b32", dict(network="cifar")),
                   ("resnet18 b16", dict(network="resnet18", frozen=False)),
                   ("resnet18 frozen base b16", dict(network="resnet18", frozen=True)))


def training_memory_rows(threads, env, resnet=None, size=224, progress=None):
    """:func:`training_memory` of the training steps of :data:`TRAINING_MEMORY` (the ResNet-18
    ones where ``resnet``, its ONNX file, is given), cnnlab and PyTorch (when installed), each
    in a worker process started for it: ``[{"label": ..., "engines": {name: training_memory
    row}}]``."""
    names = ["cnnlab"] + (["torch"] if importlib.util.find_spec("torch") is not None else [])
    rows = []
    for index, (label, request) in enumerate(TRAINING_MEMORY):
        if request["network"] == "resnet18" and not resnet:
            continue
        if progress:
            progress(index, len(TRAINING_MEMORY), f"training memory {label}")
        row = dict(label=label, engines={})
        for name in names:
            engine = Engine(name, threads, env)
            try:
                answer = engine.ask(task="train_memory", onnx=resnet, size=size, **request)
            except RuntimeError as error:
                print(f"cnnlab bench: training memory {label} {name} not measured ({error})", file=sys.stderr)
                continue
            finally:
                engine.close()
            if answer:
                row["engines"][name] = answer
        if row["engines"]:
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------- the parent's side

class Engine:
    """A worker process (:mod:`cnnlab.bench.engine_worker`) and the requests sent to it."""

    def __init__(self, name, threads, env=None, python=None):
        self.name = name
        self.process = subprocess.Popen([python or sys.executable, "-m", "cnnlab.bench.engine_worker", name,
                                         "--threads", str(threads)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)

    def ask(self, **request):
        """The worker's answer to ``request``; raises RuntimeError with the worker's message when
        it failed."""
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.name} worker ended (exit status {self.process.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {answer['error']}")
        return answer

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=60)


def worker_environment(openblas):
    """The workers' environment: this one (``openblas="environment"``), or without
    :data:`OPENBLAS_VARIABLES` (``"own"``: OpenBLAS picks its kernels itself)."""
    if openblas not in ("environment", "own"):
        raise ValueError(f"openblas must be 'environment' or 'own', got {openblas!r}")
    env = dict(os.environ)
    if openblas == "own":
        for name in OPENBLAS_VARIABLES:
            env.pop(name, None)
    return env


def openblas_settings(openblas):
    """The settings ``openblas`` (``'environment'``, ``'own'`` or ``'both'``) names; ``'both'``
    is only ``['environment']`` when neither variable is set (the two would be the same)."""
    if openblas not in ("environment", "own", "both"):
        raise ValueError(f"--openblas must be 'environment', 'own' or 'both', got {openblas!r}")
    if openblas != "both":
        return [openblas]
    return ["environment", "own"] if any(name in os.environ for name in OPENBLAS_VARIABLES) else ["environment"]


def start_engines(threads, env, python=None):
    """``{name: Engine}`` for cnnlab and the peers that are installed."""
    names = ["cnnlab"] + [name for name in ("torch", "onnxruntime") if importlib.util.find_spec(name) is not None]
    return {name: Engine(name, threads, env, python) for name in names}


def _turns(engines, requests, rounds, progress_label=None):
    """``{key: [seconds, ...]}`` and ``{key: first-call seconds}`` for ``requests`` (``key ->
    (engine name, request)``), taking turns for ``rounds`` rounds; a request that fails is left
    out with a message on stderr."""
    times, first, failed = {}, {}, set()
    for _ in range(rounds):
        for key, (name, request) in requests.items():
            if key in failed or name not in engines:
                continue
            try:
                answer = engines[name].ask(**request)
            except RuntimeError as error:
                print(f"cnnlab bench: {progress_label or ''} {key} not timed ({error})", file=sys.stderr)
                failed.add(key)
                continue
            first.setdefault(key, answer["first"])
            times.setdefault(key, []).extend(answer["times"])
            time.sleep(PAUSE)
    return times, first


def onnx_files(engines, networks, size, folder, progress=None):
    """``{network: path}``: ``folder/NETWORK.onnx`` where it exists, else exported there by the
    torch worker; a network that can be neither is left out (with a message)."""
    paths = {}
    os.makedirs(folder, exist_ok=True)
    for index, name in enumerate(networks):
        path = os.path.join(folder, f"{name}-{size}.onnx")
        if not os.path.exists(path):
            if "torch" not in engines or importlib.util.find_spec("torchvision") is None:
                print(f"cnnlab bench: {name} skipped: no {path} and no torch and torchvision to export it",
                      file=sys.stderr)
                continue
            if progress:
                progress(index, len(networks), f"exporting {name}")
            try:
                engines["torch"].ask(task="export", network=name, size=size, path=path)
            except RuntimeError as error:
                print(f"cnnlab bench: {name} skipped: the export failed ({error})", file=sys.stderr)
                continue
        paths[name] = path
    return paths


def _relative_error(folder, name, batch):
    ours = os.path.join(folder, f"out-cnnlab-{name}-{batch}.npy")
    for peer in ("onnxruntime", "torch"):
        theirs = os.path.join(folder, f"out-{peer}-{name}-{batch}.npy")
        if os.path.exists(ours) and os.path.exists(theirs):
            a, b = np.load(ours), np.load(theirs)
            return float(np.abs(a - b).max() / np.abs(b).max()), peer
    return None, None


def _row(op, shape, times, first, peers, samples):
    median = statistics.median(times)
    return dict(op=op, shape=shape, dtype="float32", device="cpu", seconds=median,
                spread=max(times) - min(times), jit_seconds=max(0.0, first - median),
                samples_per_second=samples / median, peers=peers)


def _first_calls(engines, common, folder):
    """``{engine: seconds}`` of each engine's first call of ``common``, its output saved for
    :func:`_relative_error`; an engine that fails is left out (with a message)."""
    firsts = {}
    for engine in engines:
        path = os.path.join(folder, f"out-{engine}-{common['network']}-{common['batch']}.npy")
        try:
            firsts[engine] = engines[engine].ask(**common, repeat=0, save=path)["first"]
        except RuntimeError as error:
            print(f"cnnlab bench: {common['network']} batch {common['batch']} not run in {error}", file=sys.stderr)
    return firsts


def inference_rows(engines, paths, repeat, rounds, batches, size, folder, progress=None, lock_weights=False):
    """One row per network and batch: cnnlab's median seconds and spread, the peers' medians
    (``torch``, ``onnxruntime``, ``unfused``), the per-step Python overhead
    (:func:`cnnlab.bench.overhead.node_overhead`) and the largest difference from onnxruntime
    (or PyTorch) relative to its largest output. ``lock_weights``: cnnlab's networks with
    their weights locked (:meth:`cnnlab.Model.lock_weights`), as onnxruntime's are constants."""
    rows = []
    for index, (name, path) in enumerate(paths.items()):
        for batch in batches:
            if progress:
                progress(index, len(paths), f"{name} batch {batch}")
            common = dict(task="inference", network=name, onnx=path, batch=batch, size=size, lock=lock_weights)
            firsts = _first_calls(engines, common, folder)
            requests = {engine: (engine, dict(common, repeat=repeat)) for engine in firsts}
            requests["unfused"] = ("cnnlab", dict(common, repeat=repeat, unfused=True))
            requests = {key: requests[key] for key in ("cnnlab", "unfused", "torch", "onnxruntime") if key in requests}
            times, _ = _turns(engines, requests, rounds, name)
            if "cnnlab" not in times or "cnnlab" not in firsts:
                continue
            peers = {key: statistics.median(values) for key, values in times.items() if key != "cnnlab"}
            row = _row("inference", f"{name} b{batch}", times["cnnlab"], firsts["cnnlab"], peers, batch)
            row["relative_error"], row["compared_with"] = _relative_error(folder, name, batch)
            overhead = engines["cnnlab"].ask(task="overhead", onnx=path, batch=batch, size=size,
                                             repeat=max(5, repeat), lock=lock_weights)
            row.update(overhead_fraction=overhead["overhead_fraction"],
                       overhead_per_step=overhead["overhead_per_step_seconds"], steps=overhead["steps"])
            rows.append(row)
    return rows


def training_rows(engines, repeat, rounds, progress=None, resnet=None, size=224):
    """Seconds per training step of :func:`cnnlab_training_step` and, where PyTorch is
    installed, of :func:`torch_training_step`; with ``resnet`` (the path of the exported
    ResNet-18), two rows more: a whole step of ResNet-18 at batch :data:`RESNET_TRAIN_BATCH`
    and one with a frozen base (:func:`cnnlab_resnet_step`, :func:`torch_resnet_step`)."""
    kinds = [("3-conv 32x32", dict(task="train"), TRAIN_STEPS, TRAIN_BATCH)]
    if resnet is not None:
        for frozen, label in ((False, "resnet18"), (True, "resnet18 frozen base")):
            kinds.append((f"{label} {size}x{size}", dict(task="train_resnet", onnx=resnet, size=size, frozen=frozen),
                          1, RESNET_TRAIN_BATCH))
    rows = []
    for done, (label, request, steps_per_run, batch) in enumerate(kinds):
        if progress:
            progress(done, len(kinds), f"training step {label}")
        requests = {name: (name, dict(request, repeat=repeat)) for name in ("cnnlab", "torch") if name in engines}
        times, first = _turns(engines, requests, rounds, "training")
        if "cnnlab" not in times:
            continue
        steps = {key: [t / steps_per_run for t in values] for key, values in times.items()}
        peers = {"torch": statistics.median(steps["torch"])} if "torch" in steps else {}
        rows.append(_row("training step", f"{label} b{batch}", steps["cnnlab"], first["cnnlab"] / steps_per_run,
                         peers, batch))
    return rows


def conv_rows(engines, repeat, rounds, shapes=None, progress=None):
    """The forward convolution of each reference shape (``shapes``: names of
    :data:`cnnlab.bench.ops.REFERENCE_SHAPES`, default all) in float32, cnnlab against PyTorch,
    each engine in its own worker process, taking turns for ``rounds`` rounds of ``repeat``
    calls: rows as :func:`training_rows` gives, ``op`` ``"conv2d"``."""
    from .ops import REFERENCE_SHAPES

    rows = []
    names = list(REFERENCE_SHAPES) if shapes is None else list(shapes)
    for done, name in enumerate(names):
        if name not in REFERENCE_SHAPES:
            raise ValueError(f"shape must be one of {sorted(REFERENCE_SHAPES)}, got {name!r}")
        if progress:
            progress(done, len(names), f"conv2d {name}")
        requests = {engine: (engine, dict(task="conv2d", shape=name, repeat=repeat))
                    for engine in ("cnnlab", "torch") if engine in engines}
        times, first = _turns(engines, requests, rounds, "conv2d")
        if "cnnlab" not in times:
            continue
        peers = {"torch": statistics.median(times["torch"])} if "torch" in times else {}
        rows.append(_row("conv2d", name, times["cnnlab"], first["cnnlab"], peers, REFERENCE_SHAPES[name][0]))
    return rows


def models_suite(threads, repeat, rounds=5, batches=(1, 16), size=224, networks=NETWORKS, openblas="both",
                 training=True, memory=False, onnx_dir=None, progress=None, lock_weights=False):
    """Per OpenBLAS setting (see :func:`openblas_settings`): ``{"openblas": setting, "blas":
    the kernels the cnnlab worker runs, "threading": its Numba threading layer, "rows":
    inference and training rows, "memory": memory rows, "training_memory":
    :func:`training_memory_rows` (with ``memory`` and ``training``)}``, the engines in worker
    processes taking turns for ``rounds`` rounds of ``repeat`` runs each; ``lock_weights`` as
    :func:`inference_rows` takes it."""
    if rounds < 1 or repeat < 1:
        raise ValueError(f"rounds and repeat must be at least 1, got {rounds} and {repeat}")
    results = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as folder:
        for setting in openblas_settings(openblas):
            engines = start_engines(threads, worker_environment(setting))
            try:
                info = engines["cnnlab"].ask(task="info")
                paths = onnx_files(engines, networks, size, onnx_dir or folder, progress)
                rows = inference_rows(engines, paths, repeat, rounds, batches, size, folder, progress, lock_weights)
                if training:
                    rows += training_rows(engines, max(1, min(repeat, 5)), rounds, progress,
                                          resnet=paths.get("resnet18"), size=size)
                memory_rows = [engines["cnnlab"].ask(task="memory", network=name, onnx=path, batch=16, size=size)
                               for name, path in paths.items()] if memory else []
            finally:
                for engine in engines.values():
                    engine.close()
            training_memory = training_memory_rows(threads, worker_environment(setting), paths.get("resnet18"),
                                                   size, progress) if memory and training else []
            results.append(dict(openblas=setting, blas=info["blas"], threading=info["threading"], rows=rows,
                                memory=[m for m in memory_rows if m], training_memory=training_memory))
    return results
