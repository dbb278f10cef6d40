"""Running a test's work on several threads at once."""

import threading


def errors_in_threads(work, count):
    """Run ``work(k)`` for each ``k`` below ``count``, each on a thread of its own, all at once;
    return the ``AssertionError``s they raised."""
    errors = []

    def guarded(k):
        try:
            work(k)
        except AssertionError as exc:  # pragma: no cover - the failure the tests look for
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors
