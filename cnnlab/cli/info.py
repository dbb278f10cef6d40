"""``cnnlab info`` (version, devices, threads, BLAS, kernel cache) and ``cnnlab cache`` (show
or empty the folder of compiled kernels)."""

import os

import numba
import numpy as np

import cnnlab

from ..device import simulator_enabled
from ..kernels import cache
from ..parallel import blas_kernels, threading_layer
from .common import add_command


def add_parser(commands):
    """Add ``cnnlab info`` and ``cnnlab cache`` and their arguments to the sub-commands."""
    p = add_command(commands, "info", "version, devices, threads, cache")
    p.set_defaults(run=run)

    p = add_command(commands, "cache", "show or empty the folder of compiled kernels")
    p.add_argument("action", nargs="?", choices=["info", "clear"], default="info",
                   help="info: where the compiled kernels are and how much room they take; clear: delete "
                        "them (the next run compiles them again)")
    p.set_defaults(run=run_cache)


def run(args):
    """Version, devices, threading layer, cache directory."""
    print(f"cnnlab {cnnlab.__version__}")
    print(f"numba {numba.__version__}, numpy {np.__version__}")
    print(f"threads: {numba.get_num_threads()}")
    gpu = cnnlab.cuda_available()
    if gpu and simulator_enabled():
        print("cuda available: Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), not a GPU")
    else:
        print(f"cuda available: {gpu}")
    if gpu and not simulator_enabled():
        from numba import cuda

        name = cuda.get_current_device().name
        print(f"cuda device: {name.decode() if isinstance(name, bytes) else name}")
    print(f"threading layer: {threading_layer()}")
    print(f"BLAS: {blas_kernels()}")

    print(f"kernel cache: {cache.cache_dir()} (compiled kernels; set CNNLAB_CACHE_DIR to move it, "
          "cnnlab cache clear to empty it)")
    return 0


def run_cache(args):
    """Show or empty the folder of compiled kernels."""
    if args.action == "clear":
        root, removed = cache.clear()
        print(f"removed {removed} cached kernel files from {root}; the next run compiles them again")
    else:
        folder = cache.cache_dir()
        files = [os.path.join(top, name) for top, _, names in os.walk(folder) for name in names]
        size = sum(os.path.getsize(f) for f in files)
        print(f"{folder}: {len(files)} files, {size / 1e6:.1f} MB")
    return 0
