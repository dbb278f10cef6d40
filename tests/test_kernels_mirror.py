"""The cpu and cuda kernel packages mirror each other file for file and name for name."""

import inspect
import pathlib

import cnnlab.kernels.cpu as cpu
import cnnlab.kernels.cuda as cuda

KERNELS_DIR = pathlib.Path(cpu.__file__).parent.parent
KERNEL_NAMES = cpu.KERNEL_NAMES  # the union of the cpu kernel files' __all__


def public_kernels(module):
    names = {}
    for name, obj in vars(module).items():
        if name in KERNEL_NAMES:
            function = getattr(obj, "py_func", obj)  # a Numba dispatcher wraps the Python function
            names[name] = list(inspect.signature(function).parameters)
    return names


def test_same_kernel_names_and_parameters():
    cpu_kernels = public_kernels(cpu)
    cuda_kernels = public_kernels(cuda)
    assert set(cpu_kernels) == KERNEL_NAMES == cuda.KERNEL_NAMES
    assert cpu_kernels == cuda_kernels
    assert len(KERNEL_NAMES) >= 56  # every kernel file was found


def test_each_file_lists_its_kernels():
    """A kernel file's ``__all__`` is its kernels: every public function but the shared device
    helpers, the same list on both sides, so the packages export them without a list of their own."""
    import ast

    for side in ("cpu", "cuda"):
        for path in (KERNELS_DIR / side).glob("*.py"):
            if path.name.startswith("_"):
                continue
            tree = ast.parse(path.read_text())
            public = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)
                      and not node.name.startswith("_")} - {"keep_probability_hash"}
            module = __import__(f"cnnlab.kernels.{side}.{path.stem}", fromlist=["x"])
            assert set(module.__all__) == public, (side, path.name)
    for name in cpu.KERNEL_MODULES:
        cpu_module = __import__(f"cnnlab.kernels.cpu.{name}", fromlist=["x"])
        cuda_module = __import__(f"cnnlab.kernels.cuda.{name}", fromlist=["x"])
        assert sorted(cpu_module.__all__) == sorted(cuda_module.__all__), name


def test_same_files():
    cpu_files = sorted(p.name for p in (KERNELS_DIR / "cpu").glob("*.py") if not p.name.startswith("_"))
    cuda_files = sorted(p.name for p in (KERNELS_DIR / "cuda").glob("*.py") if not p.name.startswith("_"))
    assert cpu_files == cuda_files


def test_each_file_defines_the_same_kernels():
    for path in (KERNELS_DIR / "cpu").glob("*.py"):
        if path.name.startswith("_"):
            continue
        module = path.stem
        cpu_module = __import__(f"cnnlab.kernels.cpu.{module}", fromlist=["x"])
        cuda_module = __import__(f"cnnlab.kernels.cuda.{module}", fromlist=["x"])
        assert public_kernels(cpu_module) == public_kernels(cuda_module), module


WORKLOAD = """
import numpy as np, numba, cnnlab, cnnlab.functional as F, cnnlab.filters as filters, cnnlab.kernels.cpu as cpu
from cnnlab import config, layers as L
x = np.random.default_rng(0).random((4, 1, 6, 6)).astype(np.float32)
y = np.array([0, 1, 0, 1])
for minimum in (1 << 40, 0):  # every kernel on the calling thread, then every one through the thread pool
    config.PARALLEL_MIN_WORK = minimum
    for optimizer, weights in ((cnnlab.optim.SGD(0.1, momentum=0.9), None), (cnnlab.optim.Adam(), "balanced"),
                               (cnnlab.optim.AdamW(), None), (cnnlab.optim.RMSprop(momentum=0.9, centered=True), None)):
        model = cnnlab.Sequential([L.Conv2D(1, 2, 3, padding=1), L.BatchNorm2D(2), L.ReLU(), L.MaxPool2D(2),
                                   L.LeakyReLU(), L.Sigmoid(), L.Tanh(), L.Flatten(), L.Dropout(0.5),
                                   L.Dense(18, 2), L.Softmax()])
        model.fit(x, y, epochs=1, batch_size=4, optimizer=optimizer, verbose=0, class_weight=weights)
    model.predict(x)  # inference: the batch norm folded into the convolution (fold_batch_norm)
    for mode in ("max", "avg", "min", "median", "lp"):
        out = F.pool2d(x, 2, mode=mode)
        F.pool2d_backward(x, out, out, 2, mode=mode)
    F.conv2d_backward(x, np.ones((1, 1, 3, 3), np.float32), x[:, :, :4, :4].copy())
g = F.global_avg_pool2d(x)
F.global_avg_pool2d_backward(x, g)
for forward, backward in ((F.softmax, F.softmax_backward), (F.log_softmax, F.log_softmax_backward)):
    backward(forward(x), x)
F.mse_backward(x, x), F.mse(x, x)
F.gather_rows(x, np.array([1, 0]))
filters.correlate2d(np.ones((4, 4)), np.ones((2, 2)))
gate = x[:, :, :1, :1].copy()
F.add_backward(x, gate, F.add(x, gate)); F.multiply_backward(x, gate, F.multiply(x, gate))
F.concatenate_backward(F.concatenate([x, x]), [1, 1])
F.global_max_pool2d_backward(x, F.global_max_pool2d(x))
for forward, backward in ((F.relu6, F.relu6_backward), (F.hardswish, F.hardswish_backward),
                          (F.hardsigmoid, F.hardsigmoid_backward), (F.silu, F.silu_backward)):
    backward(x, forward(x))
F.weighted_cross_entropy_backward(F.softmax(x[:, 0, 0]), np.array([0, 1, 2, 3]), np.ones(6, np.float32))
rows = np.eye(6, dtype=np.float32)[[0, 1, 2, 3]]
F.cross_entropy_backward(F.cross_entropy(x[:, 0, 0], rows, 0.1)[1], rows, 0.1)
F.binary_cross_entropy_backward(x, x, True), F.binary_cross_entropy(x, x, False)
F.group_norm_backward(x, F.group_norm(x, 1), 1)
F.transpose(x, (0, 2, 3, 1))
F.resize_backward(x, F.resize(x, scale=2), scale=2)
for n in ("sqrt", "exp", "log", "erf", "reciprocal", "abs", "neg", "floor", "ceil", "gelu"): getattr(F, f"{n}_backward")(x, getattr(F, n)(x))
F.gelu_backward(x, F.gelu(x, "tanh"), "tanh"); [getattr(F, f"{n}_backward")(x, gate, getattr(F, n)(x, gate)) for n in ("subtract", "divide", "power", "maximum", "minimum")]
# every compiled CPU function (kernels, their serial workers and parallel drivers) that ran
dispatchers = {f"{module.__name__}.{name}": obj for module in [getattr(cpu, m) for m in cpu.KERNEL_MODULES] + [cpu._schedule] for name, obj in vars(module).items()
               if isinstance(obj, numba.core.registry.CPUDispatcher)}
used = {name: d for name, d in dispatchers.items() if d.stats.cache_hits or d.stats.cache_misses}
compiled = [name for name, d in used.items() if d.stats.cache_misses]
unused = [name for name in KERNEL_NAMES
          if isinstance(getattr(cpu, name), numba.core.registry.CPUDispatcher) and name not in {n.split(".")[-1] for n in used}]
print(",".join(sorted(compiled + unused)))
"""


def test_cpu_kernels_load_from_the_disk_cache():
    """Every CPU kernel is compiled with cache=True and really cacheable: a second process
    loads all of them (serial workers and parallel drivers alike) from disk instead of
    compiling."""
    import subprocess
    import sys

    for _ in range(2):  # the first run may be the one that fills the cache
        code = f"KERNEL_NAMES = {sorted(KERNEL_NAMES)!r}\n" + WORKLOAD
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "", f"compiled instead of loaded from cache: {result.stdout}"
