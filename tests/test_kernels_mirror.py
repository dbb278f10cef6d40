"""The cpu and cuda kernel packages mirror each other file for file and name for name."""

import inspect
import pathlib

import cnnlab.kernels.cpu as cpu
import cnnlab.kernels.cuda as cuda

KERNELS_DIR = pathlib.Path(cpu.__file__).parent.parent
KERNEL_NAMES = {
    "conv2d_forward", "conv2d_backward_input", "conv2d_backward_weight",
    "pool2d_forward", "pool2d_backward", "global_avg_pool2d_forward", "global_avg_pool2d_backward",
    "pool2d_forward_with_indices", "pool2d_backward_with_indices",
    "relu_forward", "relu_backward", "leaky_relu_forward", "leaky_relu_backward",
    "sigmoid_forward", "sigmoid_backward", "tanh_forward", "tanh_backward",
    "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
    "linear_forward", "linear_backward", "dropout_forward", "dropout_backward",
    "cross_entropy_forward", "cross_entropy_backward", "mse_forward", "mse_backward",
    "batchnorm2d_statistics", "batchnorm2d_forward", "batchnorm2d_backward", "running_average",
    "sgd_step", "adam_step", "correlate2d_forward", "gather_rows", "classification_totals",
    "weighted_cross_entropy_backward", "weight_losses_by_class",
    "clip_forward", "clip_backward", "hardsigmoid_forward", "hardsigmoid_backward",
    "hardswish_forward", "hardswish_backward", "silu_forward", "silu_backward",
    "add_forward", "add_backward", "multiply_forward", "multiply_backward",
    "concatenate_forward", "concatenate_backward", "global_max_pool2d_forward", "global_max_pool2d_backward",
}


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
    assert set(cpu_kernels) == KERNEL_NAMES
    assert cpu_kernels == cuda_kernels


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
    for optimizer, weights in ((cnnlab.optim.SGD(0.1, momentum=0.9), None), (cnnlab.optim.Adam(), "balanced")):
        model = cnnlab.Sequential([L.Conv2D(1, 2, 3, padding=1), L.BatchNorm2D(2), L.ReLU(), L.MaxPool2D(2),
                                   L.LeakyReLU(), L.Sigmoid(), L.Tanh(), L.Flatten(), L.Dropout(0.5),
                                   L.Dense(18, 2), L.Softmax()])
        model.fit(x, y, epochs=1, batch_size=4, optimizer=optimizer, verbose=0, class_weight=weights)
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
# every compiled CPU function (kernels, their serial workers and parallel drivers) that ran
dispatchers = {f"{module.__name__}.{name}": obj for module in (cpu.activation, cpu.conv, cpu.dropout,
               cpu.filter, cpu.linear, cpu.loss, cpu.merge, cpu.normalization, cpu.optim, cpu.pool,
               cpu.tensor, cpu._schedule) for name, obj in vars(module).items()
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
