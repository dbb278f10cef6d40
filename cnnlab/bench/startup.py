"""Start-up and memory, each measured in a fresh Python process: the import time and the first
conv2d with a cold and a warm kernel cache, and the peak memory one conv2d adds."""

import os
import subprocess
import sys
import tempfile

_STARTUP = """
import time
start = time.perf_counter()
import numpy as np
import cnnlab.functional as F
imported = time.perf_counter()
F.conv2d(np.ones((1, 1, 8, 8), np.float32), np.ones((1, 1, 3, 3), np.float32))
done = time.perf_counter()
print(imported - start, done - imported)
"""


def startup_suite(progress=None):
    """Fresh processes: import time and first conv2d, with a warm and with a cold kernel cache."""
    rows = []
    with tempfile.TemporaryDirectory() as cold_cache:
        for index, (name, environment) in enumerate([
                ("cold cache", dict(os.environ, CNNLAB_CACHE_DIR=cold_cache)),
                ("warm cache", dict(os.environ))]):
            if progress:
                progress(index, 2, f"startup {name}")
            if name == "warm cache":  # make sure the cache is filled
                subprocess.run([sys.executable, "-c", _STARTUP], env=environment, capture_output=True, check=True)
            output = subprocess.run([sys.executable, "-c", _STARTUP], env=environment, capture_output=True,
                                    text=True, check=True).stdout.split()
            imported, first = float(output[0]), float(output[1])
            rows.append(dict(op="startup", shape=name, dtype="float32", device="cpu", seconds=imported + first,
                             spread=0.0, jit_seconds=first, import_seconds=imported, peers={}))
    return rows


_MEMORY = """
import resource, sys
import numpy as np
import cnnlab, cnnlab.functional as F
n, c, h, w, f, k, s, p = (int(v) for v in sys.argv[1].split(","))
backward = sys.argv[2] == "1"
rng = np.random.default_rng(0)
x = rng.standard_normal((n, c, h, w)).astype(np.float32)
weight = rng.standard_normal((f, c, k, k)).astype(np.float32)
F.conv2d(x[:1, :, :8, :8].copy() if h >= 8 and w >= 8 else x[:1], weight, padding=p)  # load the kernels
if backward:
    small = x[:1]
    F.conv2d_backward(small, weight, F.conv2d(small, weight, stride=s, padding=p), s, p)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = F.conv2d(x, weight, stride=s, padding=p)
if backward:
    F.conv2d_backward(x, weight, out, s, p)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, out.nbytes, x.nbytes)
"""


def memory_suite(shapes, progress=None):
    """Peak resident memory added by one conv2d forward (and forward + backward), per shape,
    measured in a fresh process; compared with the size of the output (and input)."""
    rows = []
    for index, (name, shape) in enumerate(shapes):
        for backward in (False, True):
            if progress:
                progress(index, len(shapes), f"memory {name}{' backward' if backward else ''}")
            output = subprocess.run([sys.executable, "-c", _MEMORY, ",".join(map(str, shape)), str(int(backward))],
                                    capture_output=True, text=True, check=True).stdout.split()
            peak, out_bytes, in_bytes = (int(float(v)) for v in output)
            rows.append(dict(op="memory" + ("+backward" if backward else ""), shape=name, dtype="float32",
                             device="cpu", seconds=0.0, spread=0.0, jit_seconds=0.0, peak_bytes=peak,
                             output_bytes=out_bytes, input_bytes=in_bytes, peers={}))
    return rows
