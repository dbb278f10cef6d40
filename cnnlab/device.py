"""Where arrays live, and which kernels run on them.

The dispatch rule is one sentence: NumPy arrays run the CPU kernels; arrays
that live on an NVIDIA GPU (anything with ``__cuda_array_interface__``, or a
Numba CUDA-simulator array) run the GPU kernels, and the result stays on the
GPU.  Mixing the two in one call is a ``TypeError`` naming the argument that
lives elsewhere.

``numba.cuda`` is imported lazily, the first time a GPU is asked about, so
``import cnnlab`` needs neither a GPU nor the ``cuda`` extra.
"""

import importlib
import os
import sys

import numpy as np

from .shapes import c_strides

_cuda_module = None
_cuda_import_error = None
_CPU_KERNELS = None  # cnnlab.kernels.cpu once imported (kernels_for's answer for host arrays)


def _numba_cuda():
    """Return ``numba.cuda`` or ``None`` if it cannot be imported."""
    global _cuda_module, _cuda_import_error
    if _cuda_module is None and _cuda_import_error is None:
        try:
            _cuda_module = importlib.import_module("numba.cuda")
        except Exception as exc:  # ImportError, or a broken CUDA installation
            _cuda_import_error = exc
    return _cuda_module


def _driver_loadable():
    """Whether the NVIDIA driver's library loads, looked for where ``numba.cuda`` looks (the
    library path, then /usr/lib and /usr/lib64); True where this is not Linux, or where
    ``NUMBA_CUDA_DRIVER`` names the library."""
    if not sys.platform.startswith("linux") or os.environ.get("NUMBA_CUDA_DRIVER"):
        return True
    import ctypes

    for name in ("libcuda.so", "libcuda.so.1"):
        for folder in ("", "/usr/lib", "/usr/lib64"):
            try:
                ctypes.CDLL(os.path.join(folder, name) if folder else name)
            except OSError:
                continue
            return True
    return False


def cuda_available():
    """Whether GPU kernels can run here.

    True when ``numba.cuda`` imports and reports a usable device: a real
    NVIDIA GPU, or Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``).

    Returns
    -------
    bool
    """
    if not simulator_enabled() and not _driver_loadable():
        return False  # no driver: not worth importing numba.cuda (about a second) to be told so
    cuda = _numba_cuda()
    if cuda is None:
        return False
    try:
        return bool(cuda.is_available())
    except Exception:
        return False


def simulator_enabled():
    """Whether Numba's CUDA simulator stands in for a GPU in this process."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def require_cuda():
    if not cuda_available():
        reason = f" ({_cuda_import_error})" if _cuda_import_error is not None else ""
        raise RuntimeError(
            "no CUDA GPU is available" + reason + ": install the 'cuda' extra "
            "(pip install 'cnnlab[cuda]') on a machine with an NVIDIA GPU and driver, or set "
            "NUMBA_ENABLE_CUDASIM=1 before importing cnnlab to use Numba's CUDA simulator"
        )
    return _cuda_module


def is_gpu_array(a):
    """Whether ``a`` lives on a GPU (or on the CUDA simulator's stand-in).

    Parameters
    ----------
    a : object

    Returns
    -------
    bool
    """
    if isinstance(a, np.ndarray):
        return False
    if hasattr(a, "__cuda_array_interface__"):
        return True
    if "numba.cuda" in sys.modules and simulator_enabled():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return isinstance(a, FakeCUDAArray)
    return False


def to_device(a):
    """Copy an array to the GPU (a no-op for an array already there).

    Parameters
    ----------
    a : array_like

    Returns
    -------
    numba.cuda device array

    Raises
    ------
    RuntimeError
        If no GPU (or simulator) is available.
    """
    cuda = require_cuda()
    if is_gpu_array(a):
        return a
    return cuda.to_device(canonical_copy(a))


def canonical_copy(a):
    """``a`` as a C-contiguous NumPy array whose strides are the plain row-major ones.

    NumPy counts a view with a length-1 axis of any stride (``x[None]`` has stride 0 there) as
    contiguous, and ``np.ascontiguousarray`` returns it unchanged; Numba's device arrays count
    such a stride as broadcast, so the copy on the GPU would be non-contiguous. Such a view is
    copied; an array with plain strides is returned as it is.
    """
    a = np.ascontiguousarray(a)
    return a if a.strides == c_strides(a.shape, a.itemsize) else a.copy()


def to_host(a):
    """Copy an array to host memory as a NumPy array (a no-op for NumPy).

    Parameters
    ----------
    a : array_like or GPU array

    Returns
    -------
    numpy.ndarray
    """
    if isinstance(a, np.ndarray):
        return a
    if is_gpu_array(a):
        return as_kernel_array(a).copy_to_host()
    return np.asarray(a)


def as_kernel_array(a):
    """View a GPU array of any library (CuPy, PyTorch, Numba) as a Numba device array."""
    if hasattr(a, "copy_to_host"):
        return a
    return require_cuda().as_cuda_array(a)


def device_of(a):
    """``'cuda'`` for a GPU array, ``'cpu'`` otherwise."""
    return "cuda" if is_gpu_array(a) else "cpu"


def kernels_for(*arrays, **named_arrays):
    """Return the kernel module (``cpu`` or ``cuda``) for where the arrays live.

    Parameters
    ----------
    *arrays, **named_arrays
        The arrays of one call; ``None`` entries are ignored.  Keyword names
        are used in the error message.

    Returns
    -------
    module
        :mod:`cnnlab.kernels.cpu` or :mod:`cnnlab.kernels.cuda`.

    Raises
    ------
    TypeError
        If some arrays are on the GPU and others on the host.
    """
    for a in (*arrays, *named_arrays.values()):
        if a is not None and type(a) is not np.ndarray:
            break
    else:  # host arrays only: the common case, decided without naming them
        return _CPU_KERNELS or _cpu_kernels()
    items = [(f"argument {i}", a) for i, a in enumerate(arrays)] + list(named_arrays.items())
    items = [(name, a) for name, a in items if a is not None]
    devices = {name: device_of(a) for name, a in items}
    if "cuda" in devices.values() and "cpu" in devices.values():
        first_name, first_device = items[0][0], devices[items[0][0]]
        other = next(name for name, _ in items if devices[name] != first_device)
        raise TypeError(
            f"{other} is on the {devices[other]} but {first_name} is on the {first_device}: "
            "move both with cnnlab.to_device() or cnnlab.to_host()"
        )
    if "cuda" in devices.values():
        require_cuda()
        from .kernels import cuda as cuda_kernels

        return cuda_kernels
    return _cpu_kernels()


def _cpu_kernels():
    global _CPU_KERNELS
    from .kernels import cpu as cpu_kernels

    _CPU_KERNELS = cpu_kernels
    return cpu_kernels
