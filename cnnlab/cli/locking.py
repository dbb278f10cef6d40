"""One run at a time per output file: a command that writes a model (and its checkpoint) holds
a lock on each for the whole run, so a second run with the same ``--out`` is refused at once,
naming the process that holds it, instead of silently replacing the first one's results.

The locks are ``filelock``'s (the operating system's file locks, released by the system when a
process dies); beside each lock a small JSON file says which process holds it.
"""

import contextlib
import json
import os
import sys
import time

from filelock import FileLock, Timeout

__all__ = ["claim_outputs"]


def _owner_path(path):
    return path + ".lock.owner"


def _holder(path):
    """Who holds the lock on ``path``, in words, from its owner file."""
    try:
        with open(_owner_path(path)) as file:
            owner = json.load(file)
        return f"process {int(owner['pid'])}, `{owner['command']}`, started {owner['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _write_owner(path):
    owner = dict(pid=os.getpid(), command=" ".join(["cnnlab"] + sys.argv[1:]),
                 started=time.strftime("%Y-%m-%d %H:%M:%S"))
    temporary = _owner_path(path) + f".{os.getpid()}.tmp"
    with open(temporary, "w") as file:
        json.dump(owner, file)
    os.replace(temporary, _owner_path(path))


def _release(lock, path):
    with contextlib.suppress(OSError):
        os.remove(_owner_path(path))
    lock.release()
    with contextlib.suppress(OSError):
        os.remove(path + ".lock")


@contextlib.contextmanager
def claim_outputs(paths, option="--out"):
    """Hold a lock on each of ``paths`` (the files a run will write) until the block ends.

    Raises
    ------
    RuntimeError
        When another process holds one of them: names that process and the fix.
    """
    held = []
    try:
        for path in dict.fromkeys(os.path.abspath(p) for p in paths):
            lock = FileLock(path + ".lock", timeout=0)
            try:
                lock.acquire()
            except Timeout:
                raise RuntimeError(f"{path} is being written by another run ({_holder(path)}): wait for it to "
                                   f"finish, or give another {option}") from None
            held.append((lock, path))
            _write_owner(path)
        yield
    finally:
        for lock, path in reversed(held):
            _release(lock, path)
