"""Compiling a workload's kernels in helper processes (cnnlab.compilation.warm_up): which kernels
a workload needs, found without compiling; the same results with helpers as without; a warmed
workload starts no helper the next time."""

import functools
import os
import subprocess
import sys

import numpy as np
import pytest

import cnnlab
from cnnlab import compilation
from cnnlab.applications import classic_cnn


def run_python(code, cache, **variables):
    environment = dict(os.environ, CNNLAB_CACHE_DIR=str(cache), **variables)
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_recording_lists_the_kernels_a_workload_calls_and_compiles_nothing(tmp_path):
    code = """
import numpy as np, cnnlab.functional as F
from cnnlab import compilation
from cnnlab.kernels.cache import kernel_dispatchers
x = np.random.default_rng(0).random((2, 1, 6, 6)).astype(np.float32)
w = np.ones((3, 1, 3, 3), np.float32)
out = []
called = compilation.record_kernels(lambda: out.append(F.max_pool2d(F.relu(F.conv2d(x, w, padding=1)), 2)))
names = [name for name, _ in called]
print(names)
print(sum(len(d.signatures) for d in kernel_dispatchers().values()))
expected = F.max_pool2d(F.relu(F.conv2d(x, w, padding=1)), 2)
print(np.allclose(out[0], expected, rtol=1e-5, atol=1e-6))
print(all("float32" in str(signature[0]) for _, signature in called))
"""
    names, compiled, same, float32 = run_python(code, tmp_path).splitlines()
    names = eval(names)
    assert names[0] == "conv._direct_forward_items" and "activation._relu_forward_items" in names  # (1 channel: direct)
    assert "pool._extreme_pool_2x2" in names  # 2x2 windows at stride 2: their own kernel
    assert compiled == "0"  # recording ran every kernel as Python
    assert same == "True" and float32 == "True"


def test_recording_lists_a_kernels_callees_with_the_types_its_compiled_version_gives_them(tmp_path):
    # a helper compiles the first kernel's callees while the main process compiles the kernel,
    # which then loads them from the cache: only if the types match
    code = """
import numpy as np, cnnlab.functional as F
from cnnlab import compilation
from cnnlab.kernels.cache import kernel_dispatchers
from cnnlab.kernels.cpu import _tiles
_tiles.TILES = False  # (the samples-innermost path, whose kernel calls several compiled functions)
x = np.random.default_rng(0).random((4, 3, 8, 8)).astype(np.float32)
w = np.ones((16, 3, 3, 3), np.float32)
callees = {}
called = compilation.record_kernels(lambda: F.conv2d(x, w, padding=1, activation="relu"), callees)
print([name for name, _ in called])
print(sorted(callees))
from cnnlab.kernels.cpu.conv import panels_available
kernel = "conv._interleaved_panel_items" if panels_available() else "conv._interleaved_forward_items"
seen = callees[kernel]
print([name for name, _ in seen])
F.conv2d(x, w, padding=1, activation="relu")  # compiled now
dispatchers = kernel_dispatchers()
print(all(signature in dispatchers[name].signatures for name, signature in seen))
"""
    names, kernels, seen, compiled_so = run_python(code, tmp_path).splitlines()
    # (3 channels onto 16 filters, 8x8 outputs of four samples: the small outputs' path, the
    # samples innermost, by panels where the processor runs them)
    from cnnlab.kernels.cpu.conv import panels_available

    kernel = "conv._interleaved_panel_items" if panels_available() else "conv._interleaved_forward_items"
    assert kernel in eval(names)
    assert eval(kernels) == [kernel]  # the only one that calls compiled functions
    seen = eval(seen)
    # its own callees, in the order of their first calls, not theirs (_finish_row's activations)
    assert seen.index("conv._stage_interleaved") < seen.index("conv._interleaved_finish")
    assert "_epilogue._finish_row" not in seen
    assert "activation._sigmoid" not in seen
    assert compiled_so == "True"


def test_helpers_take_every_kernels_callees_first_then_the_kernels_the_last_called_first():
    """A helper compiles the callees of every kernel, not only of the first (a later kernel's own
    can be the longest compile), each once, then the kernels, both the last called first, in
    turns with the other helpers."""
    called = [("a", 1), ("b", 2), ("c", 3)]
    callees = {"a": [("x", 1), ("y", 1)], "c": [("y", 1), ("z", 1)]}
    assert compilation._helper_work(called, callees, 0, 1) == ([("z", 1), ("y", 1), ("x", 1)],
                                                               [("c", 3), ("b", 2), ("a", 1)])
    assert compilation._helper_work(called, callees, 0, 2) == ([("z", 1), ("x", 1)], [("c", 3), ("a", 1)])
    assert compilation._helper_work(called, callees, 1, 2) == ([("y", 1)], [("b", 2)])


def test_recording_follows_a_workload_whose_kernels_share_work_between_threads(tmp_path):
    # two threads and every kernel worth sharing: outside the recording the convolution hands
    # shares to the thread team, whose waits are compiled code that cannot run as Python
    code = """
import numpy as np, cnnlab
from cnnlab import compilation, config
config.PARALLEL_MIN_WORK = 1
from cnnlab.applications import classic_cnn
model = classic_cnn(1, 8, 3, conv_filters=(2, 4), hidden=8)
x = np.random.default_rng(3).random((2, 1, 8, 8)).astype(np.float32)
called = compilation.record_kernels(
    lambda: compilation.model_workload(model, x, np.array([0, 2]), cnnlab.optim.Adam()))
print([name for name, _ in called])
"""
    names = eval(run_python(code, tmp_path, NUMBA_NUM_THREADS="2"))
    assert names[0] == "conv._direct_forward_items"  # (1 and 2 input channels: computed directly)
    # (the second layer's input gradient: the flipped weight, then the direct kernel again; the
    # weight gradients of the 8x8 and 4x4 outputs with the samples innermost)
    for later in ("conv._interleaved_weight_gradient_items", "conv._flipped_weight_items", "loss.cross_entropy_backward",
                  "optim._adam_items", "activation._softmax_rows"):
        assert later in names


def test_model_workload_leaves_the_model_and_optimizer_alone():
    model = classic_cnn(1, 8, 3, conv_filters=(2, 2), hidden=4)
    before = [p.copy() for layer in model.layers for p in layer.params.values()]
    optimizer = cnnlab.optim.Adam()
    x = np.random.default_rng(1).random((2, 1, 8, 8)).astype(np.float32)
    compilation.model_workload(model, x, np.array([0, 2]), optimizer)
    after = [p for layer in model.layers for p in layer.params.values()]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_warm_up_gives_the_same_training_and_is_skipped_once_warm(tmp_path):
    code = """
import functools, numpy as np, cnnlab
from cnnlab import compilation
from cnnlab.applications import classic_cnn
rng = np.random.default_rng(2)
x, y = rng.random((12, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 12)
def train(warm):
    model, optimizer = classic_cnn(1, 8, 3, conv_filters=(2, 4), hidden=8), cnnlab.optim.Adam()
    workload = functools.partial(compilation.model_workload, model, x[:2], y[:2], optimizer)
    with compilation.warm_up(workload, key="test", processes=1 if warm else 0) as helpers:
        started = len(helpers.processes)
        model.fit(x, y, epochs=2, batch_size=4, optimizer=optimizer, seed=0, verbose=0)
        p = model.predict_proba(x)
    return p, started
warmed, started = train(True)
print(started)
again, started = train(True)
print(started)  # the marker says the kernels are cached: no helper
plain, _ = train(False)
print(np.array_equal(warmed, plain) and np.array_equal(again, plain))
"""
    first, second, same = run_python(code, tmp_path).splitlines()
    assert (first, second, same) == ("1", "0", "True")
    # every kernel the helper or this process compiled loads from the cache in a new process
    code = """
import numpy as np, cnnlab
from cnnlab.kernels.cache import kernel_dispatchers
from cnnlab.applications import classic_cnn
rng = np.random.default_rng(2)
x, y = rng.random((12, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 12)
model = classic_cnn(1, 8, 3, conv_filters=(2, 4), hidden=8)
model.fit(x, y, epochs=1, batch_size=4, optimizer=cnnlab.optim.Adam(), seed=0, verbose=0)
model.predict(x)
print([n for n, d in kernel_dispatchers().items() if d.stats.cache_misses])
"""
    assert run_python(code, tmp_path).strip() == "[]"


def test_no_helpers_when_asked_for_none_or_the_workload_cannot_be_sent():
    with compilation.warm_up(lambda: None, processes=1) as helpers:  # a lambda does not pickle
        assert helpers.processes == []
    with compilation.warm_up(functools.partial(print), processes=0) as helpers:
        assert helpers.processes == []


def test_interpreting_runs_uncached_kernels_as_python_and_loads_cached_ones(tmp_path):
    code = """
import numpy as np
from cnnlab import compilation
from cnnlab.applications import classic_cnn
from cnnlab.kernels.cache import kernel_dispatchers
model = classic_cnn(1, 8, 3, conv_filters=(2, 4), hidden=8)
x = np.random.default_rng(4).random((3, 1, 8, 8)).astype(np.float32)
with compilation.interpreting():
    interpreted = model.predict_proba(x)
print(sum(len(d.signatures) for d in kernel_dispatchers().values()))  # nothing compiled
compiled = model.predict_proba(x)  # compiles, into the cache
print(np.allclose(interpreted, compiled, rtol=1e-5, atol=1e-7))
"""
    nothing, same = run_python(code, tmp_path).splitlines()
    assert nothing == "0" and same == "True"
    code = """
import numpy as np
from cnnlab import compilation
from cnnlab.applications import classic_cnn
from cnnlab.kernels.cache import kernel_dispatchers
model = classic_cnn(1, 8, 3, conv_filters=(2, 4), hidden=8)
x = np.random.default_rng(4).random((3, 1, 8, 8)).astype(np.float32)
with compilation.interpreting():
    model.predict_proba(x)
loaded = kernel_dispatchers()["conv._direct_forward_items"]  # (few channels: computed directly)
print(len(loaded.signatures), loaded.stats.cache_misses == {})
"""
    assert run_python(code, tmp_path).split() == ["1", "True"]  # the cached kernel ran compiled


def test_the_tiles_path_run_as_python_gives_the_compiled_values(tmp_path):
    """A convolution by tiles (LeNet's second layer: cnnlab.kernels.cpu._tiles) with its kernels
    run as Python, the tile kernel's NumPy version among them, and compiled: the same values
    within float32 rounding (the Python sums in float64)."""
    code = """
import numpy as np, cnnlab.functional as F
from cnnlab import compilation
from cnnlab.kernels.cpu import _tiles
rng = np.random.default_rng(0)
x = rng.standard_normal((3, 6, 12, 12)).astype(np.float32)
w = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
b = rng.standard_normal(16).astype(np.float32)
with compilation.interpreting():
    interpreted = F.conv2d(x, w, b, activation="relu")
print(len(_tiles._tile_forward_items.signatures))  # nothing compiled
compiled = F.conv2d(x, w, b, activation="relu")
print(len(_tiles._tile_forward_items.signatures), np.allclose(interpreted, compiled, rtol=1e-5, atol=1e-4))
"""
    from cnnlab.kernels.cpu import _tiles

    if not _tiles.by_tiles((16, 6, 5, 5), 1, (1, 1), (3, 16, 8, 8), 4):
        pytest.skip("the tiles' path runs on AVX-512 only")
    assert run_python(code, tmp_path).split() == ["0", "1", "True"]


def test_the_strips_path_run_as_python_gives_the_compiled_values(tmp_path):
    """A convolution by strips (a stride-2 layer of 32 filters, two chunks of channels:
    cnnlab.kernels.cpu._strips) with its kernels run as Python, the strip kernels' NumPy
    versions among them, and compiled: the same values within float32 rounding."""
    code = """
import numpy as np, cnnlab.functional as F
from cnnlab import compilation
from cnnlab.kernels.cpu import _strips
_strips.STRIPS_CHUNK_BYTES = 4 * 9 * 32 * 4
_strips.STRIPS_ONLY_FOR_PANELS = False  # (as tests/conftest.py sets it)
rng = np.random.default_rng(0)
x = rng.standard_normal((2, 6, 23, 21)).astype(np.float32)
w = rng.standard_normal((32, 6, 3, 3)).astype(np.float32)
b = rng.standard_normal(32).astype(np.float32)
with compilation.interpreting():
    interpreted = F.conv2d(x, w, b, stride=2, padding=1, activation="relu")
print(len(_strips._strip_forward_items.signatures))  # nothing compiled
compiled = F.conv2d(x, w, b, stride=2, padding=1, activation="relu")
print(len(_strips._strip_forward_items.signatures), np.allclose(interpreted, compiled, rtol=1e-5, atol=1e-4))
"""
    from cnnlab.kernels.cpu import _strips

    if not _strips.by_strips((32, 6, 3, 3), 1, (2, 2), (2, 32, 12, 11), 4):
        pytest.skip("the strips' path runs on AVX-512 only")
    assert run_python(code, tmp_path).split() == ["0", "1", "True"]


def test_a_small_cold_predict_runs_as_python_while_a_detached_helper_compiles_for_the_next_run(tmp_path):
    code = f"""
import numpy as np, cnnlab
from PIL import Image
from cnnlab.applications import classic_cnn
model = classic_cnn(1, 8, 3, conv_filters=(2, 4), hidden=8)
model.class_names = ["a", "b", "c"]
model.preprocessing = dict(size=[8, 8], color="gray", mean=[0.0], std=[1.0])
model.save(r"{tmp_path / 'model.npz'}")
Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 4).save(r"{tmp_path / 'x.png'}")
"""
    run_python(code, tmp_path / "cache")
    code = f"""
import sys
from cnnlab.cli import main
from cnnlab.kernels.cache import kernel_dispatchers
status = main(["predict", r"{tmp_path / 'model.npz'}", r"{tmp_path / 'x.png'}", "--json"])
print(sum(len(d.signatures) for d in kernel_dispatchers().values()), file=sys.stderr)
sys.exit(status)
"""
    environment = dict(os.environ, CNNLAB_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr.split()[-1] == "0"  # nothing compiled in the command itself
    import json

    assert json.loads(result.stdout)["results"][0]["predictions"][0]["label"] in ("a", "b", "c")
    # the helper goes on after the command; once it has marked the workload warm, a prediction
    # loads every kernel it needs from the cache
    code = """
import glob, os, time
from cnnlab.kernels.cache import cache_dir
folder = os.path.join(cache_dir(), "compiling")
for _ in range(600):
    if glob.glob(os.path.join(folder, "warm-*")):
        break
    time.sleep(0.5)
print(bool(glob.glob(os.path.join(folder, "warm-*"))))
"""
    assert run_python(code, tmp_path / "cache").strip() == "True"
    code = f"""
import cnnlab
from cnnlab.cli.models import load_trained_model, prepare_image
from cnnlab.kernels.cache import kernel_dispatchers
model, _ = load_trained_model(r"{tmp_path / 'model.npz'}")
model.predict_proba(prepare_image(model, r"{tmp_path / 'x.png'}"))
print([n for n, d in kernel_dispatchers().items() if d.stats.cache_misses])
"""
    assert run_python(code, tmp_path / "cache").strip() == "[]"


def test_helpers_import_this_cnnlab_whatever_the_working_folder(tmp_path):
    # a user runs the demo in the checkout they installed from: python -c would put that
    # folder, and its other copy of cnnlab, first on the helper's path
    decoy = tmp_path / "checkout" / "cnnlab"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("raise ImportError('the checkout, not the installed cnnlab')\n")
    script = tmp_path / "run.py"
    script.write_text("""
import functools, numpy as np, cnnlab
from cnnlab import compilation
from cnnlab.applications import classic_cnn
x = np.random.default_rng(5).random((2, 1, 8, 8)).astype(np.float32)
workload = functools.partial(compilation.model_workload, classic_cnn(1, 8, 3, conv_filters=(2, 2), hidden=4), x)
helpers = compilation.warm_up(workload, processes=1)
print(helpers.processes[0].wait())
""")
    environment = dict(os.environ, CNNLAB_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path / "checkout", env=environment,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"  # the helper imported the installed cnnlab and compiled
