"""How the CPU kernels split their work between threads (shared by every kernel module).

A kernel with much work to share is a serial ``@njit(nogil=True)`` worker that does items
``first .. last-1``. :func:`run_shared` calls it directly on the calling thread when there is a
single worker (small work), and otherwise gives each of ``workers`` threads a contiguous, even
share of the items (its own slice of the output: no races, no atomics): the calling thread
takes the first share, the threads of a small resident team (:func:`run_in_threads`) the
others. The worker releases the GIL, so the shares run at once.

Sharing the work from Python rather than from an ``@njit(parallel=True)`` driver around the
worker compiles nothing more: Numba compiles a ``prange`` driver separately, and optimizes the
worker's whole code again inside it (1 to 4 s per kernel on the first run on a machine). Handing
a share to a waiting thread costs some tens of microseconds, as waking Numba's pool does.
"""

import os
import queue
import threading

from numba import njit


@njit(cache=True, nogil=True)
def _sum_over_workers(partial, out):
    """``out = partial.sum(axis=0)`` for ``partial`` (workers, K) and ``out`` (K,)."""
    for k in range(out.shape[0]):
        total = partial[0, k]
        for worker in range(1, partial.shape[0]):
            total += partial[worker, k]
        out[k] = total


class _Team:
    """Resident daemon threads that run shares handed to them, one at a time each."""

    def __init__(self):
        self.tasks = queue.SimpleQueue()
        self.size = 0
        self.lock = threading.Lock()

    def grow(self, size):
        """Start threads until there are ``size``."""
        with self.lock:
            while self.size < size:
                threading.Thread(target=self.serve, name=f"cnnlab-kernels-{self.size}", daemon=True).start()
                self.size += 1

    def serve(self):
        while True:
            function, arguments, done = self.tasks.get()
            try:
                function(*arguments)
            except BaseException as exc:  # handed back to the caller, which raises it
                done.put(exc)
            else:
                done.put(None)


_team = _Team()


def _new_team_after_fork():
    global _team
    _team = _Team()  # a forked child has none of the parent's threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_team_after_fork)


def run_in_threads(function, shares):
    """Call ``function(*share)`` for every argument tuple in ``shares`` at once: the first on
    the calling thread, the others on the team's threads; return when all are done (raising
    the first error). ``function`` must release the GIL (``nogil=True``) to run in parallel."""
    team = _team
    team.grow(len(shares) - 1)
    done = queue.SimpleQueue()
    for arguments in shares[1:]:
        team.tasks.put((function, arguments, done))
    error = None
    try:
        function(*shares[0])
    except BaseException as exc:
        error = exc
    for _ in shares[1:]:
        failed = done.get()
        if error is None:
            error = failed
    if error is not None:
        raise error


def shares(items, workers):
    """``(first, last)`` of each worker's contiguous, even share of ``items``."""
    return [(w * items // workers, (w + 1) * items // workers) for w in range(workers)]


def run_shared(serial, items, workers, *arguments):
    """Run ``serial(*arguments, first, last)`` over ``0 .. items-1``: on this thread alone when
    ``workers`` (capped at ``items``) is 1, else in even shares on ``workers`` threads."""
    workers = max(1, min(workers, items))
    if workers == 1:
        serial(*arguments, 0, items)
    else:
        run_in_threads(serial, [arguments + share for share in shares(items, workers)])
