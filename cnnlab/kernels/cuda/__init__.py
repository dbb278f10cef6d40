"""GPU kernels: ``@cuda.jit`` grid-stride kernels behind small host drivers.

Mirrors :mod:`cnnlab.kernels.cpu` file for file and name for name (each kernel file lists its
kernels in ``__all__``; this package exports them all).  Importing this package imports
``numba.cuda``; :mod:`cnnlab.device` does so only when an array lives on the GPU.
"""

import importlib
import pkgutil

import numpy as np
from numba import cuda

#: the kernel files, by op family
KERNEL_MODULES = tuple(sorted(name for _, name, _ in pkgutil.iter_modules(__path__) if not name.startswith("_")))
_modules = [importlib.import_module(f"{__name__}.{name}") for name in KERNEL_MODULES]

#: every kernel's name (the ``__all__`` of the kernel files)
KERNEL_NAMES = frozenset(name for module in _modules for name in module.__all__)
globals().update({name: getattr(module, name) for module in _modules for name in module.__all__})

DEVICE = "cuda"


def empty(shape, dtype):
    """A new uninitialized device array."""
    return cuda.device_array(shape, dtype=dtype)


def zeros(shape, dtype):
    """A new zero-filled device array."""
    return cuda.to_device(np.zeros(shape, dtype=dtype))


def ones(shape, dtype):
    """A new device array of ones."""
    return cuda.to_device(np.ones(shape, dtype=dtype))


def asarray(a):
    """The array as a kernel argument: any CUDA array viewed as a Numba device array."""
    if hasattr(a, "copy_to_host"):
        return a
    return cuda.as_cuda_array(a)
