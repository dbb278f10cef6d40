"""Which of Numba's threading layers the CPU kernels run on, and why.

Numba runs ``prange`` loops on one of three threading layers: ``tbb`` (Intel oneTBB), ``omp``
(OpenMP) or ``workqueue``, the first of them that loads. cnnlab depends on the ``tbb`` package
and makes sure Numba can load it, because it is the one that stays fast on a shared machine:

- TBB shares a loop's chunks by work stealing and lets idle threads sleep. When another program
  takes a core, the threads that still run take over the descheduled thread's chunks.
- GNU OpenMP starts every parallel loop with all its threads and ends it at a barrier where
  the early threads spin. With one busy program beside it on two cores, a parallel loop waits a
  whole scheduler time slice for the thread that lost its core, over and over: the demo's
  training ran 3-5 times slower than beside nothing (``docs/performance.md`` has the table).
  ``OMP_WAIT_POLICY=PASSIVE`` stops the spinning but costs about half the speed on an idle
  machine.
- ``workqueue`` is slow to start loops and must not be entered by several threads at once.

TBB is also safe to call from several threads (a Dask or web-server worker) and after a fork.

The GEMMs inside the convolution and fully-connected kernels are OpenBLAS's (SciPy's build,
which Numba calls). OpenBLAS picks its kernels for the processor at load time, unless
``OPENBLAS_CORETYPE`` names them; the choice matters (on an AVX-512 processor its AVX2
``Haswell`` kernels run ResNet's GEMM shapes at about half the speed of its ``SkylakeX``
ones). :func:`blas_kernels` reports which it runs (``cnnlab info``, ``cnnlab bench``).
"""

import ctypes
import importlib.metadata
import os
import sys

__all__ = ["blas_kernels", "load_tbb", "threading_layer"]

_TBB_LIBRARIES = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib"}


def load_tbb():
    """Load the ``tbb`` package's shared library so that Numba's TBB threading layer can start.

    Returns
    -------
    str or None
        The path of the library loaded, or None when the ``tbb`` package is not installed,
        has no library for this platform, or cannot be loaded (Numba then uses OpenMP or its
        workqueue).
    """
    name = _TBB_LIBRARIES.get(sys.platform)
    if name is None:
        return None
    try:
        files = importlib.metadata.files("tbb") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == name:
            path = os.path.abspath(str(entry.locate()))
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            except OSError:
                return None
            return path
    return None


def threading_layer():
    """The threading layer Numba uses, starting its threads if they are not running yet.

    Returns
    -------
    str
        ``'tbb'``, ``'omp'`` or ``'workqueue'``.
    """
    import numba
    import numpy as np

    from . import functional as F

    try:
        return numba.threading_layer()
    except ValueError:  # not started yet: run one parallel kernel
        F.relu(np.zeros(4, np.float32))
        return numba.threading_layer()


def blas_kernels():
    """The BLAS library Numba's GEMMs call and the kernels it runs, e.g.
    ``'OpenBLAS 0.3.29 (SkylakeX kernels)'``; loads SciPy's BLAS if needed.

    Returns
    -------
    str
    """
    import scipy.linalg.cython_blas  # noqa: F401 - what Numba's np.dot calls
    import threadpoolctl

    found = [info for info in threadpoolctl.threadpool_info() if info.get("user_api") == "blas"
             and "scipy_openblas" in os.path.basename(info.get("filepath", "")) and "64_" not in info["filepath"]]
    if not found:
        found = [info for info in threadpoolctl.threadpool_info() if info.get("user_api") == "blas"]
    if not found:
        return "unknown"
    info = found[0]
    name = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(info.get("internal_api"), info.get("internal_api"))
    architecture = info.get("architecture")
    return f"{name} {info.get('version')}" + (f" ({architecture} kernels)" if architecture else "")
