"""What every dask op of cnnlab needs: Dask itself, the kernel lock, and where the chunks run."""

import threading
from contextlib import AbstractContextManager, nullcontext

import numpy as np

from .. import device as device_module
from ..device import is_gpu_array, require_cuda, to_host
from ..parallel import threading_layer

_LOCK = threading.Lock()


def kernel_lock() -> AbstractContextManager:
    """A context that serializes kernel calls when Numba's threading layer is not thread-safe.

    Numba's ``workqueue`` layer must not be entered by several threads at once (Dask's threaded
    scheduler would do that); ``tbb`` and ``omp`` may. The layer is read with
    :func:`cnnlab.parallel.threading_layer`, which starts Numba's threads if needed.

    Returns
    -------
    context manager
        A process-wide lock under 'workqueue', otherwise a context that does nothing.
    """
    return _LOCK if threading_layer() == "workqueue" else nullcontext()



_DEVICES = ("cpu", "cuda")


def resolve_device(device, *arrays):
    """'cpu' or 'cuda' for the chunks' tasks: ``device`` as given, or (None) 'cuda' when one of
    ``arrays`` (weights, kernels, arguments) lives on the GPU, else 'cpu'."""
    if device is None:
        return "cuda" if any(is_gpu_array(a) for a in arrays) else "cpu"
    if not isinstance(device, str) or device not in _DEVICES:
        raise ValueError(f"device must be 'cpu', 'cuda' or None, got {device!r}")
    if device == "cuda":
        require_cuda()  # the clear 'no CUDA GPU' RuntimeError now, not in a task
    return device


def to_host_values(values):
    """GPU arrays among ``values`` copied to NumPy: the task graph holds host arrays only (it
    can be pickled and sent to a cluster); the tasks copy them to the device."""
    return type(values)(to_host(v) if is_gpu_array(v) else v for v in values)


def on_device(function, block, args, kwargs, device):
    """``function(block, *args, **kwargs)`` on ``device``: for 'cuda' the block and every NumPy
    array among the arguments are copied to the GPU first and the result is copied back, so a
    dask array's chunks stay NumPy arrays."""
    if device != "cuda":
        with kernel_lock():
            return function(block, *args, **kwargs)
    to_device = device_module.to_device  # looked up per call: a test may count the copies

    def move(value):
        return to_device(value) if isinstance(value, np.ndarray) else value

    args = tuple(move(a) for a in args)
    kwargs = {key: move(value) for key, value in kwargs.items()}
    with kernel_lock():
        out = function(to_device(block), *args, **kwargs)
    return device_module.to_host(out)


def dask_modules():
    try:
        import dask
        import dask.array as da
    except ImportError:  # pragma: no cover - only without the extra
        raise ImportError("dask arrays need the 'dask' extra: pip install cnnlab[dask]") from None
    return dask, da


def check_known_shape(name, x):
    """The dask array ``x`` has known chunk sizes and is not empty (``ValueError`` naming ``name``)."""
    if any(np.isnan(s) for s in x.shape):
        raise ValueError(f"{name} has unknown chunk sizes {x.chunks}: call {name}.compute_chunk_sizes() first")
    if 0 in x.shape:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")


def check_batch_chunks(x, name):
    for axis in range(1, x.ndim):
        if len(x.chunks[axis]) > 1:
            whole = ", ".join(f"{a}: -1" for a in range(1, x.ndim))
            raise ValueError(
                f"{name} is chunked along axis {axis} (chunks {x.chunks[axis]}); a batch must be "
                f"chunked along the batch axis (0) only: rechunk with {name}.rechunk({{{whole}}})"
            )
    if any(np.isnan(c) for c in x.chunks[0]):
        raise ValueError(f"{name} has unknown chunk sizes along the batch axis: call "
                         f"{name}.compute_chunk_sizes() first")
