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
import threading

import numba  # importing Numba does not choose its threading layer: load_tbb still comes first

__all__ = ["blas_kernels", "blas_limited", "cpu_workers", "load_tbb", "single_threaded_blas", "thread_count",
           "threading_layer"]

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
    try:
        return numba.threading_layer()
    except ValueError:  # not started yet: asking for the thread count starts it
        numba.get_num_threads()
        return numba.threading_layer()


def blas_kernels():
    """The BLAS library the convolutions' GEMMs call and the kernels it runs, e.g.
    ``'OpenBLAS 0.3.29 (SkylakeX kernels)'`` (:func:`cnnlab.kernels.cpu.gemm_blas`).

    Returns
    -------
    str
    """
    from .kernels import cpu

    info = cpu.gemm_blas()
    if info is None:
        return "unknown"
    name = {"openblas": "OpenBLAS", "mkl": "MKL", "blis": "BLIS"}.get(info.get("internal_api"), info.get("internal_api"))
    architecture = info.get("architecture")
    return f"{name} {info.get('version')}" + (f" ({architecture} kernels)" if architecture else "")


# ----------------------------------------------------------------------------- work and BLAS threads

_blas_controllers = None
_BLAS_STATE = threading.local()  # how deep this thread is in single_threaded_blas


def _blas_libraries():
    global _blas_controllers
    if _blas_controllers is None:
        # Numba's np.dot calls the BLAS behind scipy.linalg.cython_blas: load it before looking
        import scipy.linalg.cython_blas  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _blas_controllers = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    return _blas_controllers


_blas_switches = None


def _thread_switches():
    """``[(get, set), ...]``: the functions that read and set each BLAS library's thread count.
    For OpenBLAS, its own two functions called through ctypes: a threadpoolctl call goes through
    a symbol lookup and a check of which Python thread controls the library, and
    :func:`single_threaded_blas` entered and left that way took 7.2 us against 4.1 (two
    libraries, NumPy's and SciPy's; scratch timing). Other libraries (MKL, BLIS) keep
    threadpoolctl's calls."""
    global _blas_switches
    if _blas_switches is None:
        _blas_switches = [_openblas_switch(lib) or (lib.get_num_threads, lib.set_num_threads)
                          for lib in _blas_libraries()]
    return _blas_switches


def _openblas_switch(controller):
    """OpenBLAS's ``(openblas_get_num_threads, openblas_set_num_threads)`` in the library that
    ``controller`` (threadpoolctl's) describes, under the names its build gives them (NumPy's and
    SciPy's wheels prefix ``scipy_``, a 64-bit integer build appends ``64_``), or None."""
    if getattr(controller, "internal_api", None) != "openblas":
        return None
    try:
        library = ctypes.CDLL(controller.filepath)
    except OSError:
        return None
    for prefix in ("scipy_", ""):
        for suffix in ("64_", ""):
            get = getattr(library, f"{prefix}openblas_get_num_threads{suffix}", None)
            put = getattr(library, f"{prefix}openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                return get, put
    return None


def cpu_workers(work):
    """How many threads a CPU kernel should share ``work`` (multiply-adds or element visits)
    between: Numba's thread count, but no more than gives each thread ``config.PARALLEL_MIN_WORK``
    (so 1 for small work). Below that, waking the thread pool costs more than it saves (the
    rule of the kernels' own :func:`cnnlab.kernels.cpu._schedule.workers_for`). Inside a model
    call the thread count is the one read when the call began (:func:`thread_count`), not asked
    of Numba again."""
    from .kernels.cpu._schedule import workers_for

    return workers_for(work, thread_count() if blas_limited() else None)


def blas_limited():
    """Whether this thread runs inside :func:`single_threaded_blas` (a kernel called there need
    not enter it again)."""
    return getattr(_BLAS_STATE, "depth", 0) > 0


def thread_count():
    """``numba.get_num_threads()``, as it was when this thread entered :func:`single_threaded_blas`
    when it is inside (a model call reads it once, not once per kernel: Numba answers through a
    ctypes call of about 0.8 us)."""
    return _BLAS_STATE.threads if getattr(_BLAS_STATE, "depth", 0) > 0 else numba.get_num_threads()


def single_threaded_blas():
    """Run the enclosed CPU kernels with one BLAS thread per caller (a context manager).

    The CPU convolution and linear kernels call GEMM from inside their own
    parallel loops; the BLAS library must not start threads of its own there
    (it would oversubscribe the cores, and OpenBLAS warns about an OpenMP
    loop), nor anywhere else in a training step: BLAS worker threads that
    spin-wait after a call take the cores from Numba's threads (measured:
    a digits training run 15x slower).  The previous thread counts are
    restored on exit.  Nested uses cost nothing: a model call holds the limit once for all its
    kernels.
    """
    return _SingleThreadedBlas()


class _SingleThreadedBlas:
    """:func:`single_threaded_blas`'s context manager: a plain class, since every functional call
    on the host enters one (a generator-based one cost 1.3 us more per entry and exit). A
    library already at one thread is neither set nor restored."""

    __slots__ = ("previous",)

    def __enter__(self):
        depth = getattr(_BLAS_STATE, "depth", 0)
        if depth:  # inside another: one limit per model call, not one per kernel call (5 us each)
            _BLAS_STATE.depth = depth + 1
            self.previous = None
            return
        previous = []
        for get, put in _thread_switches():
            count = get()
            if count != 1:
                put(1)
                previous.append((put, count))
        self.previous = previous
        _BLAS_STATE.threads = numba.get_num_threads()
        _BLAS_STATE.depth = 1

    def __exit__(self, *exception):
        if self.previous is None:
            _BLAS_STATE.depth -= 1
            return
        _BLAS_STATE.depth = 0
        for put, count in self.previous:
            put(count)
