"""cnnlab: readable, fast convolutional neural networks.

Every compute kernel is Numba: ``@njit(parallel=True)`` loops for the CPU and
``@cuda.jit`` kernels for NVIDIA GPUs, behind one API that runs where the
data already lives.

>>> import numpy as np, cnnlab, cnnlab.functional as F
>>> cnnlab.output_size(5, 3)
3
"""

from ._version import __version__
from .parallel import load_tbb as _load_tbb

_load_tbb()  # before Numba picks its threading layer: see cnnlab.parallel

from . import applications, callbacks, compilation, config, data, filters, functional, layers, losses, optim
from .device import cuda_available, to_device, to_host
from .model import Model, Sequential, load
from .shapes import output_size
from .symbolic import Input

__all__ = [
    "__version__",
    "applications",
    "callbacks",
    "compilation",
    "config",
    "cuda_available",
    "data",
    "filters",
    "functional",
    "Input",
    "layers",
    "load",
    "losses",
    "Model",
    "optim",
    "output_size",
    "Sequential",
    "to_device",
    "to_host",
]
