"""cnnlab.prefetch.Prefetch: jobs run ahead on background threads, results in order, a bounded
number ahead, and the threads end however the iteration ends."""

import threading
import time

import pytest

from cnnlab.prefetch import THREAD_NAME, Prefetch


def prefetch_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith(THREAD_NAME)]


def wait_until(condition, seconds=5.0):
    end = time.monotonic() + seconds
    while not condition() and time.monotonic() < end:
        time.sleep(0.005)
    return condition()


def test_results_come_back_in_order_from_background_threads():
    callers = set()

    def job(i):
        def run():
            time.sleep(0.002 * (5 - i % 5))  # later jobs finish first
            callers.add(threading.current_thread().name)
            return i * i
        return run

    with Prefetch((job(i) for i in range(20)), threads=3, ahead=4) as results:
        assert list(results) == [i * i for i in range(20)]
    assert callers and all(name.startswith(THREAD_NAME) for name in callers)
    assert prefetch_threads() == []


def test_no_more_than_ahead_jobs_are_started_before_their_results_are_taken():
    started = []

    def job(i):
        return lambda: started.append(i) or i

    results = Prefetch((job(i) for i in range(100)), threads=2, ahead=3)
    assert next(results) == 0
    assert wait_until(lambda: len(started) == 4)
    time.sleep(0.05)
    assert sorted(started) == [0, 1, 2, 3]  # the one taken and three ahead: no more
    results.close()
    assert prefetch_threads() == []


def test_a_jobs_exception_reaches_the_caller_and_the_threads_end():
    def job(i):
        def run():
            if i == 3:
                raise ValueError("image 3 is broken")
            return i
        return run

    results = Prefetch((job(i) for i in range(10)), threads=2, ahead=4)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="image 3 is broken"):
        next(results)
    assert prefetch_threads() == []
    with pytest.raises(StopIteration):  # closed for good
        next(results)


def test_stopping_early_ends_the_threads_and_drops_the_jobs_not_started():
    started = []

    def job(i):
        return lambda: started.append(i) or time.sleep(0.01) or i

    for value in Prefetch((job(i) for i in range(1000)), threads=2, ahead=4):
        if value == 2:
            break
    assert wait_until(lambda: prefetch_threads() == [])  # the dropped iterator closed itself
    assert len(started) <= 7

    results = Prefetch((job(i) for i in range(1000)), threads=2, ahead=4)
    next(results)
    results.close()
    results.close()  # twice is harmless
    assert prefetch_threads() == [] and len(started) <= 14


def test_ctrl_c_while_waiting_for_a_result_ends_the_threads():
    def slow():
        time.sleep(0.2)
        return "late"

    def interrupt():  # what the caller sees is what Ctrl-C raises while it waits
        raise KeyboardInterrupt

    results = Prefetch(iter([interrupt, slow, slow, slow]), threads=2, ahead=3)
    with pytest.raises(KeyboardInterrupt):
        next(results)
    assert prefetch_threads() == []  # the running jobs were let finish, the threads joined


def test_the_jobs_generator_is_closed_when_the_iteration_stops():
    finished = []

    def jobs():
        try:
            for i in range(100):
                yield lambda i=i: i
        finally:
            finished.append(True)

    with Prefetch(jobs(), threads=1, ahead=2) as results:
        next(results)
    assert finished == [True]


def test_no_threads_runs_each_job_on_the_calling_thread_when_asked():
    ran = []
    results = Prefetch((lambda i=i: ran.append(threading.current_thread()) or i for i in range(3)), threads=0)
    assert ran == []
    assert list(results) == [0, 1, 2]
    assert ran == [threading.current_thread()] * 3


@pytest.mark.parametrize("arguments, error, message", [
    (dict(threads=-1), ValueError, "threads must be at least 0"),
    (dict(ahead=0), ValueError, "ahead must be at least 1"),
    (dict(threads=1.5), TypeError, "threads must be an integer"),
    (dict(ahead=True), TypeError, "ahead must be an integer"),
])
def test_bad_settings_are_refused_by_name(arguments, error, message):
    with pytest.raises(error, match=message):
        Prefetch([], **arguments)
