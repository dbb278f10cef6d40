"""Where the compiled CPU kernels are kept between runs.

Numba compiles every ``@njit(cache=True)`` kernel for this machine's CPU the first time it
runs and stores the machine code so that later runs load it instead of compiling again.
Numba would store it next to the source files, inside the installed package, where pip does
not know about it: an uninstall or reinstall then leaves a stray ``cnnlab/kernels`` folder
behind that Python imports as an empty package.  cnnlab keeps it in a per-user folder
instead, one sub-folder per cnnlab and Python version and state of the kernel sources (a
stamp of their sizes and times: an edited helper that kernels of other files call invalidates
them all):

- ``$CNNLAB_CACHE_DIR`` when set (a folder cnnlab owns: ``cnnlab cache clear`` empties it),
- else ``$NUMBA_CACHE_DIR/cnnlab`` when Numba's own setting is given,
- else ``%LOCALAPPDATA%\\cnnlab\\Cache`` on Windows, ``$XDG_CACHE_HOME/cnnlab`` or
  ``~/.cache/cnnlab`` elsewhere.

When that folder cannot be written, a folder under the system's temporary directory is used.
``cnnlab info`` shows the folder; ``cnnlab cache clear`` removes every cached kernel.

Only cnnlab's kernels are affected: Numba's setting for other code is restored as soon as
the kernel modules are defined.
"""

import contextlib
import hashlib
import importlib
import os
import pkgutil
import shutil
import sys
import tempfile

from .._version import __version__

__all__ = ["cache_root", "cache_dir", "clear", "kernels_cached_in", "kernel_dispatchers", "load_only", "load_cached"]


def cache_root():
    """The folder holding the compiled kernels of every cnnlab version.

    Returns
    -------
    str
        An absolute path (it need not exist yet).
    """
    explicit = os.environ.get("CNNLAB_CACHE_DIR")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    numba_folder = os.environ.get("NUMBA_CACHE_DIR")
    if numba_folder:
        return os.path.join(os.path.abspath(os.path.expanduser(numba_folder)), "cnnlab")
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~")
        return os.path.join(base, "cnnlab", "Cache")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "cnnlab")


def _source_stamp(root=None):
    """A short hash of the sizes and modification times of the kernel modules under ``root``
    (default: this folder). Numba checks only the file that defines a cached kernel, but it
    compiles the helpers a kernel calls from other files into the kernel's own code: after an
    edit of such a helper (a working copy, an editable install) the cached caller would keep
    the old code. A new stamp is a new folder."""
    digest = hashlib.sha1()
    root = os.path.dirname(os.path.abspath(__file__)) if root is None else root
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            if name.endswith(".py"):
                info = os.stat(os.path.join(folder, name))
                digest.update(f"{os.path.relpath(os.path.join(folder, name), root)}:{info.st_size}:{info.st_mtime_ns};"
                              .encode())
    return digest.hexdigest()[:10]


def _version_folder():
    return f"kernels-{__version__}-py{sys.version_info[0]}{sys.version_info[1]}-{_source_stamp()}"


def _writable(folder):
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def cache_dir():
    """This cnnlab version's kernel cache folder, created if needed.

    Returns
    -------
    str
        ``cache_root()/kernels-<cnnlab version>-py<python version>-<source stamp>``, or a
        folder in the temporary directory when that one cannot be written.
    """
    folder = os.path.join(cache_root(), _version_folder())
    if _writable(folder):
        return folder
    user = os.environ.get("USER") or os.environ.get("USERNAME") or str(os.getuid() if hasattr(os, "getuid") else "")
    fallback = os.path.join(tempfile.gettempdir(), f"cnnlab-{user}", _version_folder())
    _writable(fallback)
    return fallback


def clear():
    """Delete every cached kernel of every cnnlab version; the next run compiles afresh.

    Returns
    -------
    tuple of (str, int)
        The folder that was cleared and the number of files removed.
    """
    root = cache_root()
    removed = 0
    if os.path.isdir(root):
        for name in os.listdir(root):
            path = os.path.join(root, name)
            if name.startswith("kernels-") and os.path.isdir(path):
                removed += sum(len(files) for _, _, files in os.walk(path))
                shutil.rmtree(path, ignore_errors=True)
    return root, removed


@contextlib.contextmanager
def kernels_cached_in(folder):
    """Define ``@njit(cache=True)`` functions inside this block to cache them in ``folder``.

    Numba picks a function's cache location when it is decorated, from
    ``numba.config.CACHE_DIR``; the setting is restored on leaving the block.
    """
    from numba.core import config

    previous = config.CACHE_DIR
    config.CACHE_DIR = folder
    try:
        yield
    finally:
        config.CACHE_DIR = previous


def kernel_dispatchers():
    """``{'module.function': dispatcher}`` of every compiled CPU function of
    :mod:`cnnlab.kernels.cpu`: the kernels, their serial workers and their helpers, in every
    module of the package, the kernel files and the private ones they share (found, not
    listed: a new module's functions are seen by the warm-up's recording with no list to add
    it to)."""
    from numba.core.registry import CPUDispatcher

    from . import cpu

    modules = [importlib.import_module(f"{cpu.__name__}.{name}") for _, name, _ in pkgutil.iter_modules(cpu.__path__)]
    return {f"{module.__name__.rsplit('.', 1)[-1]}.{name}": obj for module in modules
            for name, obj in vars(module).items()
            if isinstance(obj, CPUDispatcher) and obj.py_func.__module__ == module.__name__}


def load_only(dispatcher):
    """Let ``dispatcher`` load its compiled versions from the cache but write none there (a
    process compiling beside another one that writes them)."""
    dispatcher._cache.save_overload = lambda *arguments: None


def load_cached(dispatcher, signature):
    """The compiled version of ``dispatcher`` for ``signature`` from the on-disk cache, made
    this process's (as ``dispatcher.compile`` does on a cache hit), or None when it is not there."""
    from numba.core.compiler_lock import global_compiler_lock

    with global_compiler_lock:
        compiled = dispatcher._cache.load_overload(signature, dispatcher.targetctx)
        if compiled is None:
            return None
        dispatcher.targetctx.insert_user_function(compiled.entry_point, compiled.fndesc, [compiled.library])
        dispatcher.add_overload(compiled)
        return compiled.entry_point
