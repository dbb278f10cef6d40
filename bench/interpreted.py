"""How fast the CPU kernels run as plain Python (:func:`cnnlab.compilation.interpreting`), the
rate behind ``cnnlab predict``'s choice to run a small cold prediction uncompiled.

    CNNLAB_CACHE_DIR=$(mktemp -d) python bench/interpreted.py

For the demo's network on one 8x8 grey image and :func:`cnnlab.applications.classic_cnn` on
one 32x32 and one 64x64 colour image: the kernels' element visits
(:func:`cnnlab.cli.common.python_work`), the seconds of one prediction with every kernel as
Python (run it with an empty kernel cache: cached kernels run compiled), and the microseconds
per visit, after one untimed prediction of the first network (Python's first calls into the
kernels' modules).
"""

import time

import numpy as np

from cnnlab import compilation
from cnnlab.applications import classic_cnn
from cnnlab.cli.common import python_work


def main():
    with compilation.interpreting():
        classic_cnn(1, 8, 10).predict_proba(np.zeros((1, 1, 8, 8), np.float32))
    for channels, size in [(1, 8), (3, 32), (3, 64)]:
        model = classic_cnn(channels, size, 10)
        x = np.random.default_rng(0).random((1, channels, size, size)).astype(np.float32)
        work = python_work(model, x.shape[1:])
        start = time.perf_counter()
        with compilation.interpreting():
            model.predict_proba(x)
        seconds = time.perf_counter() - start
        print(f"{channels}x{size}x{size}: {work:9d} visits, {seconds:.3f} s as Python, "
              f"{seconds / work * 1e6:.2f} us a visit")


if __name__ == "__main__":
    main()
