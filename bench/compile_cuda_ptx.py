"""Compile every CUDA kernel that cnnlab launches to PTX, without a GPU.

Each CUDA host driver is called with NumPy arrays; the kernel launch is intercepted and the
kernel compiled for the launch's argument types with numba-cuda's compiler for compute
capability 9.0 (H100/H200). It catches typing errors in the GPU twins on a machine that has
the CUDA compiler libraries but no GPU (``pip install "numba-cuda[cu13]"``).

    python bench/compile_cuda_ptx.py

Kernels that call ``@cuda.jit(device=True)`` functions cannot be compiled this way without a
driver; their device functions are compiled on their own at the end.
"""
import sys
import types

import numba
import numpy as np
from numba.cuda import compile_ptx
from numba.cuda.dispatcher import CUDADispatcher

compiled = {}
failures = []

class Recorder:
    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
    def __call__(self, *args):
        sig = tuple(numba.typeof(a) for a in args)
        key = (self.dispatcher.py_func.__qualname__, sig)
        if key in compiled:
            return
        try:
            compile_ptx(self.dispatcher.py_func, sig, cc=(9, 0))
            compiled[key] = True
        except Exception as exc:
            compiled[key] = False
            failures.append((key, str(exc).splitlines()[0:3]))

CUDADispatcher.__getitem__ = lambda self, config: Recorder(self)

import cnnlab.device as device  # noqa: E402 (once the launches are intercepted)
import cnnlab.kernels.cuda as cuda_kernels  # noqa: E402 (once the launches are intercepted)

proxy = types.SimpleNamespace(**{k: getattr(cuda_kernels, k) for k in dir(cuda_kernels) if not k.startswith('__')})
proxy.empty = lambda shape, dtype: np.empty(shape, dtype)
proxy.zeros = lambda shape, dtype: np.zeros(shape, dtype)
proxy.ones = lambda shape, dtype: np.ones(shape, dtype)
proxy.asarray = lambda a: a
proxy.DEVICE = "cuda"
device.kernels_for = lambda *a, **k: proxy
import cnnlab.filters as filters  # noqa: E402 (once the launches are intercepted)
import cnnlab.functional as F  # noqa: E402 (once the launches are intercepted)

F.kernels_for = device.kernels_for
filters.kernels_for = device.kernels_for

for dtype in (np.float32, np.float64):
    x = np.random.rand(2, 2, 6, 6).astype(dtype)
    w = np.random.rand(4, 2, 3, 3).astype(dtype)
    F.conv2d(x, w, np.zeros(4, dtype), padding=1)
    F.conv2d(x, w, np.zeros(4, dtype), padding=1, scale=np.ones(4, dtype), residual=np.ones((2, 4, 6, 6), dtype),
             activation="silu")
    from cnnlab import config
    config.GPU_CONV_TILE = 0
    F.conv2d(x, w, np.zeros(4, dtype), padding=1)
    config.reset()
    F.conv2d_backward(x, w, np.ones((2, 4, 4, 4), dtype))
    for mode in ("max", "avg", "min", "median", "lp"):
        out = F.pool2d(x, 2, mode=mode)
        F.pool2d_backward(x, out, out, 2, mode=mode)
    for mode in ("max", "min"):
        out, indices = F.pool2d(x, 2, mode=mode, return_indices=True)
        # the launches are only compiled, not run: give the backward valid indices
        F.pool2d_backward(x, None, out, 2, mode=mode, indices=np.zeros(indices.shape, np.int64))
    g = F.global_avg_pool2d(x)
    F.global_avg_pool2d_backward(x, g)
    for f, b in ((F.relu, F.relu_backward), (F.sigmoid, F.sigmoid_backward), (F.tanh, F.tanh_backward)):
        b(f(x), x)
    F.leaky_relu_backward(x, F.leaky_relu(x), 0.1)
    F.softmax_backward(F.softmax(x), x)
    F.log_softmax_backward(F.log_softmax(x), x)
    xl = x.reshape(2, -1)
    wl = np.random.rand(3, 72).astype(dtype)
    F.linear(xl, wl)
    F.linear_backward(xl, wl, np.ones((2, 3), dtype))
    out, mask = F.dropout(x, 0.5, 1)
    F.dropout_backward(mask, x)
    logits = np.random.rand(4, 3).astype(dtype)
    t = np.array([0, 1, 2, 0])
    p = np.random.rand(4, 3).astype(dtype)
    cuda_kernels.cross_entropy_forward(logits, t, np.empty(4, dtype), np.empty((4, 3), dtype))
    F.cross_entropy_backward(p, t)
    cuda_kernels.mse_forward(xl.ravel(), xl.ravel(), np.empty(xl.size, dtype))
    F.mse_backward(x, x)
    gamma = np.ones(2, dtype)
    beta = np.zeros(2, dtype)
    o, m, v = F.batch_norm2d(x, gamma, beta)
    F.batch_norm2d_backward(x, x, m, v, gamma)
    F.running_average(m.copy(), m, 0.1, 1.0)
    cuda_kernels.gather_rows(xl, np.array([1, 0]), np.empty_like(xl))
    cuda_kernels.classification_totals(np.ones(4, dtype), logits, t, np.zeros(2))
    p_ = np.ones(5, dtype)
    F.sgd_update(p_, p_, p_.copy(), 0.1, 0.9, 0.0, True)
    F.adam_update(p_, p_, p_.copy(), p_.copy(), 1, 0.1)
for dtype in (np.uint8, np.float32, np.float64, np.complex128):
    cuda_kernels.correlate2d_forward(np.ones((5, 5), dtype), np.ones((3, 3), dtype), np.zeros((5, 5), dtype),
                                     np.zeros(1, dtype)[0], -1, -1, 2)

import cnnlab.kernels.cuda.activation as activation_module  # noqa: E402 (once the launches are intercepted)
import cnnlab.kernels.cuda.dropout as dropout_module  # noqa: E402 (once the launches are intercepted)
import cnnlab.kernels.cuda.filter as filter_module  # noqa: E402 (once the launches are intercepted)
import cnnlab.kernels.cuda.pool as pool_module  # noqa: E402 (once the launches are intercepted)

device_functions = 0
for element in (numba.float32, numba.float64):
    compile_ptx(pool_module._window_choice.py_func, (element[:, :, :, ::1],) + (numba.int64,) * 9, device=True,
                cc=(9, 0))
    device_functions += 1
for element in (numba.float32, numba.float64):
    compile_ptx(activation_module._sigmoid.py_func, (element,), device=True, cc=(9, 0))
    device_functions += 1
compile_ptx(dropout_module.keep_probability_hash.py_func, (numba.int64, numba.int64), device=True, cc=(9, 0))
compile_ptx(filter_module._resolve.py_func, (numba.int64,) * 3, device=True, cc=(9, 0))
device_functions += 2
driver_needed = [key for key, message in failures if "driver" in " ".join(message)]
errors = [(key, message) for key, message in failures if "driver" not in " ".join(message)]
print(f"compiled to PTX for sm_90: {sum(compiled.values())} kernel signatures and {device_functions} device "
      f"function signatures; {len(driver_needed)} kernel signatures call device functions and need a driver; "
      f"{len(errors)} errors")
for key, message in errors:
    print(key[0], message)
sys.exit(1 if errors else 0)
