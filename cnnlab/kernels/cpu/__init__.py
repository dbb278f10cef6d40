"""CPU kernels: Numba ``@njit(parallel=True, cache=True)`` drivers over serial workers.

Mirrors :mod:`cnnlab.kernels.cuda` file for file and name for name: every module here that does
not start with ``_`` holds the kernels of one op family and lists them in its ``__all__``, and
this package exports them all (:data:`KERNEL_NAMES`), so a new kernel needs no entry here.
Besides the kernels, the package offers the allocation helpers the dispatch layer uses to put a
result where the input lives (here: host memory).
"""

import importlib
import pkgutil
import threading

import numpy as np

from ..cache import cache_dir, kernels_cached_in

#: the kernel files, by op family
KERNEL_MODULES = tuple(sorted(name for _, name, _ in pkgutil.iter_modules(__path__) if not name.startswith("_")))

# every kernel module is defined with its compiled code kept in the per-user cache folder (see
# cnnlab.kernels.cache), never inside the installed package
with kernels_cached_in(cache_dir()):
    _modules = [importlib.import_module(f"{__name__}.{name}") for name in KERNEL_MODULES]

#: every kernel's name (the ``__all__`` of the kernel files)
KERNEL_NAMES = frozenset(name for module in _modules for name in module.__all__)
globals().update({name: getattr(module, name) for module in _modules for name in module.__all__})

DEVICE = "cpu"

# not kernels (no cuda twin; host-only callers): whether a convolution is computed directly
# rather than by a GEMM (the geometry's work estimate and blocks follow it), the samples an item
# of the small-output path takes (the geometry's blocks) and whether it goes by panels, whether a 1x1
# convolution's items are pixel blocks, a convolution's path
# resolved once for a caller that repeats it (cnnlab.functional.conv.BoundConv2d) and the settings it read, the call
# that runs it and whether that calls BLAS, its shares on the threading layer once their address is known and the call
# that runs those, a 1x1 convolution and the depthwise one after it as one loop of shares (the work, the compiled
# address of a kernel's items, the call: cnnlab.functional.conv.BoundConvPair), and a squeeze-excitation block's gates
# in one call (cnnlab.fusion.FusedSqueeze), whether a convolution's weights are sealed (their packing kept) and a sealed copy of an array;
# and the BLAS library the kernels' GEMMs call (cnnlab.parallel.blas_kernels names it)
from ._blas import gemm_blas  # noqa: E402
from ._schedule import compiled_address as conv2d_compiled_address  # noqa: E402
from ._schedule import edges as conv2d_share_edges  # noqa: E402
from ._schedule import run_on_layer as run_conv2d_on_layer  # noqa: E402
from ._schedule import run_pair_on_layer as run_conv2d_pair_on_layer  # noqa: E402
from .conv import _calls_blas as conv2d_forward_work_calls_blas  # noqa: E402
from .conv import _forward_work as conv2d_forward_work  # noqa: E402
from .conv import _interleaved_by_panels as conv2d_interleaved_by_panels  # noqa: E402
from .conv import _interleaved_sample_block as conv2d_interleaved_sample_block  # noqa: E402
from .conv import _is_direct as conv2d_is_direct  # noqa: E402
from .conv import _layer_shares as conv2d_layer_shares  # noqa: E402
from .conv import _paired_work as conv2d_paired_work  # noqa: E402
from .conv import _path_settings as conv2d_path_settings  # noqa: E402
from .conv import _pointwise_pixel_blocks as conv2d_pointwise_pixel_blocks  # noqa: E402
from .conv import _run_forward as run_conv2d_forward_work  # noqa: E402
from .conv import _sealed as conv2d_weight_sealed  # noqa: E402
from .conv import _sealed_copy as sealed_copy  # noqa: E402
from .conv import _squeeze as squeeze_gates  # noqa: E402

#: the host-only callables above that run compiled work (timed as kernel time by cnnlab.bench.overhead)
HOST_RUNNERS = ("run_conv2d_forward_work", "run_conv2d_on_layer", "run_conv2d_pair_on_layer", "squeeze_gates")

_LENDER = threading.local()  # .take: where this thread's empty() takes arrays from, when set


def empty(shape, dtype):
    """A new uninitialized host array; while :func:`lend_from` has set a lender on this thread,
    an array the lender hands out (a reused buffer of the inference plan's pool)."""
    take = getattr(_LENDER, "take", None)
    return np.empty(shape, dtype=dtype) if take is None else take(shape, dtype)


def lend_from(take):
    """Make :func:`empty` on this thread return ``take(shape, dtype)`` (None: new arrays again);
    returns the lender it replaces, for the caller to put back."""
    previous = getattr(_LENDER, "take", None)
    _LENDER.take = take
    return previous


def zeros(shape, dtype):
    """A new zero-filled host array."""
    return np.zeros(shape, dtype=dtype)


def ones(shape, dtype):
    """A new array of ones."""
    return np.ones(shape, dtype=dtype)


def asarray(a):
    """The array as a kernel argument (host arrays are passed as they are)."""
    return a
