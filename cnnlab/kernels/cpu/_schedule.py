"""How the CPU kernels split their work between threads (shared by every kernel module).

A kernel with much work to share has two compiled parts: a serial ``@njit`` worker that does
items ``first .. last-1``, and an ``@njit(parallel=True)`` driver whose ``prange`` gives each
thread a contiguous share of the items (its own slice of the output: no races, no atomics).
:func:`run_shared` calls the worker directly on the calling thread when there is a single
worker: small work then never wakes Numba's thread pool (cheaper, and on a busy machine it
cannot wait for a descheduled thread), and the parallel driver, which Numba compiles
separately, is compiled only once some work is large enough to need it.
"""

from numba import njit


@njit(cache=True)
def _share(worker, workers, items):
    """The items ``first .. last-1`` that ``worker`` of ``workers`` takes: contiguous, even shares."""
    return worker * items // workers, (worker + 1) * items // workers


@njit(cache=True)
def _sum_over_workers(partial, out):
    """``out = partial.sum(axis=0)`` for ``partial`` (workers, K) and ``out`` (K,)."""
    for k in range(out.shape[0]):
        total = partial[0, k]
        for worker in range(1, partial.shape[0]):
            total += partial[worker, k]
        out[k] = total


def run_shared(serial, parallel, items, workers, *arguments):
    """Run ``serial(*arguments, 0, items)`` on this thread when ``workers`` (capped at
    ``items``) is 1, else ``parallel(*arguments, items, workers)``."""
    workers = max(1, min(workers, items))
    if workers == 1:
        serial(*arguments, 0, items)
    else:
        parallel(*arguments, items, workers)
