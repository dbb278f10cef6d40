"""List every function Numba compiles while a cnnlab command runs, with its argument types and
the seconds it took (a function's time includes the functions it calls, listed indented above
it), then the total of the outermost ones.

Run it with an empty kernel cache, e.g.::

    CNNLAB_CACHE_DIR=$(mktemp -d) python bench/cold_start.py demo --epochs 1 2>&1 >/dev/null | tail -60

Compilations in helper processes (``cnnlab.compilation.warm_up``) are not seen here.
"""

import sys
import time

from numba.core import event

records, stack = [], []


class Listener(event.Listener):
    def on_start(self, ev):
        stack.append((time.perf_counter(), ev.data))

    def on_end(self, ev):
        started, data = stack.pop()
        function = data["dispatcher"].py_func
        records.append((len(stack), time.perf_counter() - started, f"{function.__module__}.{function.__qualname__}",
                        str(data["args"])))


def main():
    event.register("numba:compile", Listener())
    from cnnlab.cli import main as cnnlab_main

    status = cnnlab_main(sys.argv[1:])
    total = sum(seconds for depth, seconds, _, _ in records if depth == 0)
    print(f"\n{len(records)} compilations, the outermost {total:.1f} s in all", file=sys.stderr)
    for depth, seconds, name, arguments in records:
        print(f"{'  ' * depth}{seconds:6.2f} {name} {arguments}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
