"""Work done ahead in background threads: :class:`Prefetch` runs a stream of jobs (reading and
decoding the next batches) on a few threads while the caller computes, and hands the results
back in order.

At most ``ahead`` results exist at a time besides the one the caller holds (running, done or
waiting to be taken), so memory stays bounded however long the stream is. The threads end when the stream is exhausted, when
a job raises (the exception is raised to the caller), when the caller stops early
(:meth:`Prefetch.close`, leaving a ``with`` block, or dropping the iterator) and on Ctrl-C
while the caller waits for a result.

This module imports nothing from cnnlab: the modules that read data use it.
"""

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

__all__ = ["Prefetch", "THREAD_NAME"]

T = TypeVar("T")

#: the name every prefetching thread's name starts with
THREAD_NAME = "cnnlab-prefetch"


class Prefetch(Generic[T]):
    """Iterate over the results of ``jobs`` computed ahead on background threads.

    Parameters
    ----------
    jobs : iterable of zero-argument callables
        Each job returns one result. The iterable itself is advanced on the calling thread
        (it may draw from a random generator without a lock), the jobs run on the threads.
    threads : int
        Background threads; 0 runs each job on the calling thread when its result is asked
        for (nothing is read ahead).
    ahead : int
        The most results computed ahead of the one the caller holds (running, done or
        waiting to be taken).

    Raises
    ------
    TypeError, ValueError
        Naming ``threads`` or ``ahead`` for a value that is not an integer of at least 0
        (``threads``) or 1 (``ahead``).

    Notes
    -----
    The results come back in the order of the jobs. An exception raised by a job is raised
    by the ``next()`` that would have returned its result, after the threads have stopped.
    A job that is running when the iteration stops is allowed to finish (the threads are
    joined); the jobs not yet started are dropped.
    """

    def __init__(self, jobs: Iterable[Callable[[], T]], threads: int = 2, ahead: int = 4):
        for name, value, least in (("threads", threads, 0), ("ahead", ahead, 1)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, got {value!r}")
            if value < least:
                raise ValueError(f"{name} must be at least {least}, got {value}")
        self._jobs = iter(jobs)
        self._ahead = ahead
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix=THREAD_NAME) if threads else None
        self._pending: deque[Future] = deque()
        self._exhausted = False
        self._closed = False

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        try:
            if self._pool is None:
                job = next(self._jobs, None)
                if job is None:
                    raise StopIteration
                return job()
            self._top_up()
            if not self._pending:
                raise StopIteration
            future = self._pending.popleft()
            self._top_up()  # ``ahead`` jobs stay under way while the caller works on this result
            return future.result()
        except BaseException:  # the end, a job's exception, Ctrl-C while waiting: stop the threads
            self.close()
            raise

    def _top_up(self) -> None:
        while not self._exhausted and len(self._pending) < self._ahead:
            job = next(self._jobs, None)
            if job is None:
                self._exhausted = True
            else:
                self._pending.append(self._pool.submit(job))

    def close(self) -> None:
        """Stop: drop the jobs not yet started, wait for the running ones, end the threads.
        Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        close_jobs = getattr(self._jobs, "close", None)
        if close_jobs is not None:
            close_jobs()

    def __enter__(self) -> "Prefetch[T]":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.close()
        return False

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass
