"""The CPU kernels run on Numba's TBB threading layer where the tbb package is installed."""

import importlib.metadata
import os
import subprocess
import sys

import pytest

from cnnlab import parallel


def tbb_installed():
    try:
        importlib.metadata.distribution("tbb")
    except importlib.metadata.PackageNotFoundError:
        return False
    return sys.platform == "linux"


def layer_in_a_fresh_process(**environment):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    env.update(environment)
    code = "import cnnlab.parallel as p; print(p.threading_layer())"
    return subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.mark.skipif(not tbb_installed(), reason="the tbb package is a dependency on Linux x86_64 only")
def test_tbb_is_the_threading_layer():
    assert parallel.load_tbb().endswith("libtbb.so.12")
    assert layer_in_a_fresh_process() == "tbb"


def test_the_users_choice_of_layer_wins():
    assert layer_in_a_fresh_process(NUMBA_THREADING_LAYER="workqueue") == "workqueue"


def test_without_the_tbb_package_nothing_is_loaded(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    assert parallel.load_tbb() is None


@pytest.mark.skipif(not tbb_installed(), reason="needs a thread-safe layer")
def test_kernels_called_from_several_threads_at_once(tmp_path):
    """Several Python threads (a Dask or web-server worker) may run parallel kernels at once."""
    code = """
import concurrent.futures, numpy as np, cnnlab.functional as F
from cnnlab import config
config.PARALLEL_MIN_WORK = 0
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 3, 16, 16)).astype(np.float32)
w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
expected = F.max_pool2d(F.relu(F.conv2d(x, w, padding=1)), 2)
def work(_):
    return F.max_pool2d(F.relu(F.conv2d(x, w, padding=1)), 2)
with concurrent.futures.ThreadPoolExecutor(4) as pool:
    results = list(pool.map(work, range(32)))
assert all(np.array_equal(r, expected) for r in results)
import numba; print(numba.threading_layer())
"""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "tbb"



def test_blas_kernels_names_the_library_numba_calls():
    from cnnlab.parallel import blas_kernels

    text = blas_kernels()
    assert text.split()[0] in ("OpenBLAS", "MKL", "BLIS")
    import threadpoolctl

    architectures = {i.get("architecture") for i in threadpoolctl.threadpool_info() if i.get("architecture")}
    if architectures:  # OpenBLAS says which kernels it runs; the report names one of them
        assert any(f"({a} kernels)" in text for a in architectures)


def test_openblas_thread_counts_are_set_through_its_own_functions():
    """OpenBLAS's thread count is read and set by its own functions (ctypes), found under the
    names the library's build gives them; what they set is what threadpoolctl reads."""
    import ctypes

    from cnnlab import parallel

    libraries = parallel._blas_libraries()
    switches = parallel._thread_switches()
    assert len(switches) == len(libraries)
    for lib, (get, put) in zip(libraries, switches):
        if lib.internal_api != "openblas":
            continue
        assert isinstance(get, ctypes._CFuncPtr) and isinstance(put, ctypes._CFuncPtr)
        before = get()
        assert before == lib.get_num_threads()
        try:
            put(1)
            assert lib.get_num_threads() == 1
        finally:
            put(before)
        assert lib.get_num_threads() == before
    assert parallel._openblas_switch(type("Other", (), {"internal_api": "mkl"})()) is None


def test_blas_threads_are_limited_once_per_model_call(monkeypatch):
    """Nested limits cost nothing: the BLAS libraries are asked once per model call, however many
    convolutions it runs, and their thread counts come back afterwards."""
    import numpy as np

    import cnnlab
    from cnnlab import parallel
    from cnnlab.layers import Conv2D, Dense, Flatten, ReLU

    calls = []
    original = parallel._blas_libraries
    switches = parallel._thread_switches()

    def counted(get):
        def ask():
            calls.append(1)
            return get()
        return ask

    monkeypatch.setattr(parallel, "_blas_switches", [(counted(get), put) for get, put in switches])
    model = cnnlab.Sequential([Conv2D(1, 4, 3, padding=1), ReLU(), Conv2D(4, 4, 3, padding=1), ReLU(),
                               Conv2D(4, 4, 3, padding=1), Flatten(), Dense(64, 3)], input_shape=(1, 4, 4))
    before = [lib.get_num_threads() for lib in original()]
    model(np.ones((2, 1, 4, 4), np.float32))
    assert len(calls) == len(switches)  # each library asked once
    assert [lib.get_num_threads() for lib in original()] == before
    with parallel.single_threaded_blas():
        assert all(lib.get_num_threads() == 1 for lib in original())
        with parallel.single_threaded_blas():
            pass
        assert all(lib.get_num_threads() == 1 for lib in original())  # the inner exit restores nothing
    assert [lib.get_num_threads() for lib in original()] == before


def test_thread_count_is_read_once_per_model_call():
    """Inside single_threaded_blas (a model call) the kernels see the thread count of its entry;
    outside, Numba's current setting."""
    import numba

    from cnnlab.parallel import single_threaded_blas, thread_count

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert thread_count() == 1
        with single_threaded_blas():
            numba.set_num_threads(before)
            assert thread_count() == 1  # the count the call began with
            with single_threaded_blas():  # nested: still the outer entry's
                assert thread_count() == 1
        assert thread_count() == before
    finally:
        numba.set_num_threads(before)


def test_cpu_workers_inside_a_model_call_use_its_thread_count():
    """cpu_workers follows the thread count a model call began with (not asked of Numba per
    kernel), and outside one Numba's current setting; small work stays on one thread."""
    import numba

    from cnnlab import config
    from cnnlab.parallel import cpu_workers, single_threaded_blas

    before = numba.get_num_threads()
    if before < 2:
        pytest.skip("needs two threads")
    large = 100 * max(1, config.PARALLEL_MIN_WORK)
    try:
        with single_threaded_blas():
            numba.set_num_threads(1)
            assert cpu_workers(large) == before
            assert cpu_workers(1) == 1
        assert cpu_workers(large) == 1  # outside: Numba's setting now
    finally:
        numba.set_num_threads(before)


def test_single_threaded_blas_sets_only_the_libraries_not_at_one_thread_and_restores_them(monkeypatch):
    """A BLAS already at one thread is neither set nor restored; another is set to one and put
    back on exit, after an error too; a nested entry changes nothing."""
    from cnnlab import parallel

    class Library:
        def __init__(self, count):
            self.count, self.calls = count, []

        def get_num_threads(self):
            return self.count

        def set_num_threads(self, count):
            self.calls.append(count)
            self.count = count

    single, pooled = Library(1), Library(3)
    monkeypatch.setattr(parallel, "_blas_switches", [(lib.get_num_threads, lib.set_num_threads)
                                                     for lib in (single, pooled)])
    with pytest.raises(RuntimeError, match="inside"):
        with parallel.single_threaded_blas():
            assert (single.count, pooled.count) == (1, 1)
            with parallel.single_threaded_blas():
                assert pooled.calls == [1]
            assert parallel.blas_limited()
            raise RuntimeError("inside")
    assert not parallel.blas_limited()
    assert (single.calls, pooled.calls, pooled.count) == ([], [1, 3], 3)


def test_conv2d_holds_the_blas_limit_for_the_gemm_paths_only(monkeypatch):
    """``conv2d`` on the host holds the BLAS pool to one thread around the paths that call a
    GEMM (im2col, 1x1, small outputs without panels) and skips the limit's library calls for
    those that never do (direct, panels, F(2x2, 3x3)): the path decides, not the call."""
    import numpy as np

    import cnnlab.functional as F
    from cnnlab import parallel
    from cnnlab.kernels import cpu
    from cnnlab.kernels.cpu import _strips as strips
    from cnnlab.kernels.cpu import _tiles as tiles
    from cnnlab.kernels.cpu import _winograd as winograd
    from cnnlab.kernels.cpu import conv as cpu_conv

    seen = []
    run = cpu.run_conv2d_forward_work

    def recorded(work, *arguments, **options):
        seen.append((work[0].__name__, parallel.blas_limited(), cpu.conv2d_forward_work_calls_blas(work)))
        return run(work, *arguments, **options)

    monkeypatch.setattr(cpu, "run_conv2d_forward_work", recorded)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 40, 40)).astype(np.float32)
    F.conv2d(x, rng.standard_normal((8, 1, 3, 3)).astype(np.float32), padding=1, groups=8)  # direct
    F.conv2d(x, rng.standard_normal((16, 8, 1, 1)).astype(np.float32))  # 1x1: a GEMM
    monkeypatch.setattr(cpu_conv, "PANELS", False)
    monkeypatch.setattr(winograd, "WINOGRAD", False)
    monkeypatch.setattr(tiles, "TILES", False)
    F.conv2d(x, rng.standard_normal((16, 8, 3, 3)).astype(np.float32), padding=1)  # im2col and a GEMM
    expected = [("_direct_forward_items", False), ("_pointwise_forward_items", True),
                ("_conv2d_forward_items", True)]
    monkeypatch.setattr(cpu_conv, "PANELS", True)
    if cpu_conv.panels_available():  # (AVX2 and FMA)
        F.conv2d(x, rng.standard_normal((16, 8, 3, 3)).astype(np.float32), padding=1)  # panels
        monkeypatch.setattr(tiles, "TILES", True)
        if tiles.by_tiles((16, 8, 3, 3), 1, (1, 1), (2, 16, 40, 40), 4):  # (AVX-512)
            F.conv2d(x, rng.standard_normal((16, 8, 3, 3)).astype(np.float32), padding=1)  # tiles
        if strips.by_strips((32, 8, 3, 3), 1, (1, 1), (2, 32, 40, 40), 4):  # (AVX-512)
            F.conv2d(x, rng.standard_normal((32, 8, 3, 3)).astype(np.float32), padding=1)  # strips
        monkeypatch.setattr(winograd, "WINOGRAD", True)
        F.conv2d(x, rng.standard_normal((16, 8, 3, 3)).astype(np.float32), padding=1)  # F(2x2, 3x3)
        expected += [("_panel_forward_items", False)]
        if tiles.by_tiles((16, 8, 3, 3), 1, (1, 1), (2, 16, 40, 40), 4):
            expected += [("_tile_forward_items", False)]
        if strips.by_strips((32, 8, 3, 3), 1, (1, 1), (2, 32, 40, 40), 4):
            expected += [("_strip_forward_items", False)]
        expected += [("_winograd_forward_items", False)]
    assert [(name, limited) for name, limited, _ in seen] == expected
    assert all(limited == calls for _, limited, calls in seen)
    with parallel.single_threaded_blas():  # inside a model call's limit: held, whatever the path
        F.conv2d(x, rng.standard_normal((8, 1, 3, 3)).astype(np.float32), padding=1, groups=8)
    assert seen[-1][:2] == ("_direct_forward_items", True)
