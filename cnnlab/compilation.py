"""Say so when Numba compiles kernels, and measure the time it takes.

The first run on a machine compiles cnnlab's kernels (tens of seconds; the CPU kernels are
cached on disk afterwards). :func:`report_compilation` listens to Numba's compile events and
writes one line about it, so that a first run is not a silent pause, and keeps the time spent
compiling so that progress bars can leave it out of their rates.

>>> import io
>>> from cnnlab.compilation import report_compilation
>>> with report_compilation(io.StringIO()) as compiling:
...     pass
>>> compiling.count, compiling.seconds
(0, 0.0)
"""

import contextlib
import copy
import hashlib
import os
import pickle
import subprocess
import sys
import threading
import time
import warnings

from numba.core import event

from .kernels.cache import cache_dir, kernel_dispatchers, load_cached, load_only

__all__ = ["report_compilation", "CompilationReport", "end_line", "record_kernels", "interpreting", "warm_up",
           "model_workload"]

MESSAGE = "compiling kernels for this machine (first run only; cached afterwards): {} done"
STARTED = "compiling kernels for this machine (first run only; cached afterwards) ..."
FINISHED = "compiled {} kernels in {:.1f} s"


class CompilationReport(event.Listener):
    """Counts finished compilations and the seconds spent in them (nested compilations
    counted once), and reports them on ``stream`` once compiling has taken ``min_seconds``.

    On a terminal :data:`MESSAGE` is redrawn in place with the count so far, until
    :meth:`end_line` (called before a progress bar draws, and on closing) ends the line. In a
    log, :data:`STARTED` is written once when compiling starts to show, and :data:`FINISHED`
    on closing."""

    def __init__(self, stream=None, min_seconds=0.5, clock=time.perf_counter):
        self.stream = stream
        self.min_seconds = float(min_seconds)
        self.clock = clock
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())
        self.count = 0
        self.seconds = 0.0
        self._depth = 0
        self._started = None
        self._line_open = False
        self._announced = False
        self._lock = threading.Lock()

    def elapsed(self):
        """Seconds spent compiling so far, the compilation in progress included."""
        with self._lock:
            running = self.clock() - self._started if self._depth else 0.0
            return self.seconds + running

    def on_start(self, event):
        with self._lock:
            if self._depth == 0:
                self._started = self.clock()
            self._depth += 1
        self._draw()

    def on_end(self, event):
        with self._lock:
            self._depth -= 1
            self.count += 1
            if self._depth == 0:
                self.seconds += self.clock() - self._started
        self._draw()

    def _visible(self):
        return self.stream is not None and self.count and self.elapsed() >= self.min_seconds

    def _draw(self):
        if not self._visible():
            return
        if self.interactive:
            print("\r" + MESSAGE.format(self.count), end="", file=self.stream, flush=True)
            self._line_open = True
        elif not self._announced:
            print(STARTED, file=self.stream, flush=True)
        self._announced = True

    def end_line(self):
        """End the line redrawn on a terminal, so that other output starts on a new line."""
        if self._line_open:
            print(file=self.stream, flush=True)
            self._line_open = False

    def close(self):
        """End the terminal line; in a log, say how many kernels were compiled and how long it took."""
        self.end_line()
        if self._announced and not self.interactive:
            print(FINISHED.format(self.count, self.seconds), file=self.stream, flush=True)


_active = None  # the report in progress: an inner report_compilation joins it


@contextlib.contextmanager
def report_compilation(stream=sys.stderr, min_seconds=0.5):
    """Within the block, report Numba compilations to ``stream`` (None: count them only).

    Yields a :class:`CompilationReport` whose ``count`` and ``seconds`` (or ``elapsed()``) say
    how many kernels were compiled and how long it took. Nothing is written when compiling took
    less than ``min_seconds`` in all (kernels loaded from Numba's cache are not compiled).
    Nested uses share the outermost report.
    """
    global _active
    if _active is not None:
        yield _active
        return
    report = CompilationReport(stream, min_seconds)
    _active = report
    try:
        with event.install_listener("numba:compile", report):
            yield report
    finally:
        _active = None
        report.close()


def end_line():
    """End the compilation report's terminal line, if one is being redrawn (see
    :meth:`CompilationReport.end_line`); progress bars call it before they draw."""
    if _active is not None:
        _active.end_line()


# ----------------------------------------------------------------------------- compiling in parallel
# A cold run spends most of its time compiling kernels one after another on one core. warm_up
# starts helper processes that find out which kernels a workload needs (record_kernels: the
# workload run once on tiny data with every kernel as plain Python, which compiles nothing) and
# compile shares of them, from the last one needed backwards, into the on-disk cache, while this
# process runs the workload and compiles from the first one forwards; it loads from the cache
# what a helper has compiled. A lock file per kernel (held while compiling it) keeps two
# processes from compiling the same kernel; only the process holding it writes the kernel's
# cache entry (Numba's cache index is not safe for concurrent writes of one function).


def _signature(dispatcher, arguments):
    """Numba's argument types for a call of ``dispatcher`` with these Python values."""
    from numba.core import types
    from numba.core.dispatcher import OmittedArg

    return tuple(types.Omitted(a.value) if isinstance(a, OmittedArg) else dispatcher.typeof_pyval(a)
                 for a in arguments)


@contextlib.contextmanager
def _kernels_as_python(first_call, callee_call=None):
    """Within the block, a CPU kernel called from Python with no compiled version for its
    arguments (in this process) runs as plain Python, and so do the kernels it calls. Before
    that, ``first_call(name, dispatcher, signature)`` is told of it (the name is
    ``'module.function'`` within :mod:`cnnlab.kernels.cpu`, the signature Numba's argument
    types) and may return a compiled callable to run instead; ``callee_call(name, dispatcher,
    arguments)``, when given, of each call such a kernel makes itself (its direct callees). The
    kernels run on one thread: their shares on the calling one, for the thread team waits in
    compiled code that cannot run as Python."""
    import numba
    import numpy as np
    from numba.core.dispatcher import OmittedArg

    dispatchers = kernel_dispatchers()
    depth = threading.local()

    def plain(dispatcher):
        def run(*arguments):
            depth.value = getattr(depth, "value", 0) + 1
            try:
                return dispatcher.py_func(*[a.value if isinstance(a, OmittedArg) else a for a in arguments])
            finally:
                depth.value -= 1
        return run

    def replacement(name, dispatcher):
        def compile_for_args(*arguments):  # what Numba calls when no compiled version fits
            level = getattr(depth, "value", 0)
            if not level:
                compiled = first_call(name, dispatcher, _signature(dispatcher, arguments))
                if compiled is not None:
                    return compiled
            elif level == 1 and callee_call is not None:
                callee_call(name, dispatcher, arguments)
            return plain(dispatcher)
        return compile_for_args

    for name, dispatcher in dispatchers.items():
        dispatcher._compile_for_args = replacement(name, dispatcher)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            yield
    finally:
        numba.set_num_threads(threads)
        for dispatcher in dispatchers.values():
            dispatcher.__dict__.pop("_compile_for_args", None)  # (once for a dispatcher kept under two names)


def record_kernels(workload, callees=None):
    """Run ``workload()`` with every CPU kernel not compiled yet run as plain Python (nothing is
    compiled), and return the kernels it called from Python, in order of first call.

    Parameters
    ----------
    workload : callable
    callees : dict or None
        When given, filled with ``{kernel name: [(name, argument types), ...]}``: the compiled
        functions each kernel called itself, in order of first call (those its compiled version
        would compile first; the branches the workload did not take are not seen).

    Returns
    -------
    list of (str, tuple)
        ``(name, argument types)``: the name is ``'module.function'`` within
        :mod:`cnnlab.kernels.cpu`, the types Numba's, ready for ``dispatcher.compile``. Kernels
        already compiled in this process run compiled and are not listed. When the workload
        raises, the kernels it called until then.
    """
    called = []
    running = [None]  # the kernel whose Python is running

    def record(name, dispatcher, signature):
        running[0] = name
        if (name, signature) not in called:
            called.append((name, signature))

    def record_callee(name, dispatcher, arguments):
        seen = callees.setdefault(running[0], [])
        if all(name != callee for callee, _ in seen):
            seen.append((name, _signature(dispatcher, arguments)))

    try:
        with _kernels_as_python(record, None if callees is None else record_callee):
            workload()
    except Exception:
        pass  # what was called until then is still worth compiling
    return called


@contextlib.contextmanager
def interpreting():
    """Within the block, the CPU kernels that are not compiled for their arguments, neither in
    this process nor in the on-disk cache, run as plain Python (on one thread) instead of being
    compiled; those in the cache are loaded and run compiled.

    On a machine whose cache lacks a model's kernels, compiling them takes seconds, while a
    small workload (one 8x8 image through the demo's network: about 0.01 s, see
    ``bench/interpreted.py``) runs as Python in a fraction of that. :func:`warm_up` with
    ``detach=True`` meanwhile compiles them for the next run. The results are those of the
    compiled kernels, within float rounding (the same operations, in the same order, in NumPy
    scalars). The switch is process-wide: kernels that other threads call meanwhile run the
    same way, and Numba's thread count is 1 within the block (for the calling thread).

    >>> from cnnlab.compilation import interpreting
    >>> with interpreting():
    ...     pass
    """
    with _kernels_as_python(lambda name, dispatcher, signature: load_cached(dispatcher, signature)):
        yield


def model_workload(model, x, y=None, optimizer=None, loss="cross_entropy"):
    """What :func:`warm_up` runs for a model: one training step on ``x``, ``y`` with a
    validation pass (when ``y`` is given), then a prediction, all on a copy of the model and the
    optimizer. ``x`` should be a batch of a few samples shaped and typed as the real ones."""
    model = copy.deepcopy(model)
    if y is not None:
        model.fit(x, y, epochs=1, batch_size=len(x), optimizer=copy.deepcopy(optimizer), loss=loss,
                  validation_data=(x, y), verbose=0)
    model.predict(x)


def _lock_folder():
    folder = os.path.join(cache_dir(), "compiling")
    os.makedirs(folder, exist_ok=True)
    return folder


@contextlib.contextmanager
def _kernel_lock(folder, name, wait):
    """Hold the lock file of kernel ``name``; yields False (without waiting) when another
    process holds it and ``wait`` is False."""
    import fcntl

    with open(os.path.join(folder, name + ".lock"), "a") as stream:
        try:
            fcntl.flock(stream, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(stream, fcntl.LOCK_UN)


def _compile_share(helper, helpers, marker=""):
    """A helper process: record the workload (pickled on stdin), then compile its share of
    the kernels, the last needed first, skipping those another process is compiling. With a
    ``marker`` (a detached helper, compiling the whole workload alone), every kernel is
    compiled or found cached, and the marker is written at the end; else the helper stops at
    the first kernel it finds cached (the main process has come that far).

    Its share of the kernels' callees comes first, the last called first: the main process
    compiles the first kernel (the first convolution: half its time goes to compiling its
    callees one by one) while this one starts, and loads from the cache each callee a helper
    has compiled by the time its compiler reaches it. The callees of every kernel, not only of
    the first: a later kernel's own (the weight gradient's im2col copies, which a forward
    convolution with its samples innermost does not share) took 3 s of a 5 s compile that the
    main process then waited for (the demo's first run: 10.5-10.7 s with the first kernel's
    callees, 9.8 with none)."""
    workload = pickle.load(sys.stdin.buffer)
    callees = {}
    called = record_kernels(workload, callees)
    helping, share = _helper_work(called, callees, helper, helpers)
    dispatchers = kernel_dispatchers()
    mine = {name for name, _ in share + helping}
    for name, dispatcher in dispatchers.items():
        if name not in mine:  # compiled here only inside its share's kernels: cached by others
            load_only(dispatcher)
    folder = _lock_folder()
    for index, (name, signature) in enumerate(helping + share):
        with _kernel_lock(folder, name, wait=False) as locked:
            if not locked:
                continue  # another process is compiling it
            dispatcher = dispatchers[name]
            hits = dispatcher.stats.cache_hits.copy()
            dispatcher.compile(signature)
            if dispatcher.stats.cache_hits != hits and not marker and index >= len(helping):
                return  # compiled already: the main process has come this far
    if marker:
        with open(marker, "w"):
            pass


def _helper_work(called, callees, helper, helpers):
    """Helper number ``helper``'s (of ``helpers``) ``(callees, kernels)`` to compile, each list
    ``(name, signature)`` pairs, the last called first: every kernel's callees (each once, in
    the order of their first calls) and the kernels, in turns with the other helpers."""
    every = []
    for name, _ in called:
        every += [callee for callee in callees.get(name, []) if callee not in every]
    return every[::-1][helper::helpers], called[::-1][helper::helpers]


def _waiting_compile(folder, name, compile):
    """``compile`` once no helper holds the kernel's lock (then it loads what the helper
    compiled). Numba's compiler lock is taken first: one thread of this process at a time
    waits or compiles, so that two threads cannot wait on each other's lock files."""
    from numba.core.compiler_lock import global_compiler_lock

    def locked(signature):
        with global_compiler_lock, _kernel_lock(folder, name, wait=True):
            return compile(signature)
    return locked


class WarmUp:
    """The helper processes :func:`warm_up` started; :meth:`close` (or leaving the ``with``
    block) ends them and gives this process back its ordinary compiling."""

    def __init__(self, processes, dispatchers, marker, detached=False):
        self.processes = processes
        self.dispatchers = dispatchers
        self.marker = marker
        self.detached = detached

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc_info):
        self.close(finished=exc_type is None)

    def close(self, finished=True):
        """End the helpers: once this process has run the workload it needs nothing more from
        them (what they compiled is in the cache; a helper ended while compiling leaves no
        entry). ``finished``: the workload ran to its end, so its kernels are all cached, and
        later calls with the same key start no helper."""
        if self.detached:
            self.processes, self.dispatchers, self.marker = [], [], None
            return  # it goes on compiling for the next run, and writes the marker itself
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        for dispatcher in self.dispatchers:
            dispatcher.__dict__.pop("compile", None)
        if self.marker is not None and finished:
            with open(self.marker, "w"):
                pass
        self.processes, self.dispatchers, self.marker = [], [], None


def _send(process, payload):
    """Write ``payload`` to the helper ``process``'s standard input and close it; a helper that
    died at once (its pipe broken) is left to :meth:`WarmUp.close`."""
    try:
        process.stdin.write(payload)
        process.stdin.close()
    except OSError:
        pass


def warm_up(workload, key=None, processes=None, detach=False):
    """Compile the CPU kernels ``workload()`` needs in helper processes, while this process
    goes on (and compiles what it reaches first).

    Parameters
    ----------
    workload : picklable callable
        Runs in each helper on tiny data what this process is about to run, e.g.
        ``functools.partial(model_workload, model, x[:2], y[:2], optimizer)``.
    key : str or None
        Names the workload: once its kernels are all in the cache, later calls with the same
        key start nothing. None: helpers are started every time (they find the kernels cached).
    processes : int or None
        Helpers to start; default one fewer than the CPU cores this process may use, at most 3.
        0 starts none.
    detach : bool
        Start one helper that compiles the whole workload for later runs, whatever this
        process does (it runs the workload :func:`interpreting`, say); :meth:`WarmUp.close`
        leaves it running, and it marks the workload warm when it is done.

    Returns
    -------
    WarmUp
        Close it (or use it in a ``with`` block) when the workload has run. Where file locks are
        not available (Windows), or the kernels are known to be cached, it starts nothing.
    """
    if processes is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        processes = 1 if detach else max(0, min(3, cores - 1))
    processes = min(processes, 1) if detach else processes
    if processes < 1 or os.name != "posix":
        return WarmUp([], [], None)
    folder = _lock_folder()
    marker = None
    if key is not None:
        marker = os.path.join(folder, "warm-" + hashlib.sha1(key.encode()).hexdigest()[:16])
        if os.path.exists(marker):
            return WarmUp([], [], None)
    try:
        payload = pickle.dumps(workload)
    except Exception:  # a workload that cannot be sent: compile here as usual
        return WarmUp([], [], None)
    # the helper imports this very cnnlab: ``python -c`` puts the working folder first on the
    # path, and a checkout there (pip install . run in it) would be another copy, whose kernels
    # are cached under other file names
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = ("import sys; sys.path.insert(0, sys.argv[4]); from cnnlab.compilation import _compile_share; "
            "_compile_share(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])")
    started = []
    for helper in range(processes):
        try:
            process = subprocess.Popen([sys.executable, "-c", code, str(helper), str(processes),
                                        (marker or os.devnull) if detach else "", root],
                                       stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError:  # no Python to start (an embedded interpreter)
            break
        # handed over by a thread: a workload larger than the pipe's buffer (the demo's: a model
        # and a few samples) waits for the helper to read it, after its 0.5 s of imports
        threading.Thread(target=_send, args=(process, payload), daemon=True).start()
        started.append(process)
    if detach:
        return WarmUp(started, [], None, detached=True)
    dispatchers = kernel_dispatchers()
    for name, dispatcher in dispatchers.items():
        dispatcher.compile = _waiting_compile(folder, name, dispatcher.compile)
    return WarmUp(started, list(dispatchers.values()), marker)
