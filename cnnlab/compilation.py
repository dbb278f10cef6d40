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
import sys
import threading
import time

from numba.core import event

__all__ = ["report_compilation", "CompilationReport", "end_line"]

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
