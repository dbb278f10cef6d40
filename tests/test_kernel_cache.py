"""Compiled CPU kernels are cached in a per-user folder, never inside the installed package."""

import os
import pathlib
import subprocess
import sys

import numba

import cnnlab
import cnnlab.kernels.cpu as cpu
from cnnlab.kernels import cache

PACKAGE = pathlib.Path(cnnlab.__file__).parent


def cpu_dispatchers():
    modules = [getattr(cpu, name) for name in ("activation", "conv", "dropout", "filter", "linear", "loss",
                                               "merge", "normalization", "optim", "pool", "tensor", "_schedule")]
    return {f"{module.__name__}.{name}": obj for module in modules for name, obj in vars(module).items()
            if isinstance(obj, numba.core.registry.CPUDispatcher)}


def test_every_cpu_kernel_caches_in_the_user_folder():
    folder = cache.cache_dir()
    dispatchers = cpu_dispatchers()
    assert len(dispatchers) > 50
    for name, dispatcher in dispatchers.items():
        path = dispatcher._cache._cache_path
        assert path.startswith(folder + os.sep), (name, path)
        assert not path.startswith(str(PACKAGE)), (name, path)


def test_numba_setting_for_other_code_is_left_alone():
    assert numba.config.CACHE_DIR == os.environ.get("NUMBA_CACHE_DIR", "")


def test_cache_folder_precedence(monkeypatch, tmp_path):
    for variable in ("CNNLAB_CACHE_DIR", "NUMBA_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_root() == str(tmp_path / "home" / ".cache" / "cnnlab")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == str(tmp_path / "xdg" / "cnnlab")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    assert cache.cache_root() == str(tmp_path / "numba" / "cnnlab")
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "mine"))
    assert cache.cache_root() == str(tmp_path / "mine")
    folder = cache.cache_dir()
    assert folder.startswith(str(tmp_path / "mine" / "kernels-" ) + cnnlab.__version__)
    assert os.path.isdir(folder)


def test_an_unwritable_cache_folder_falls_back_to_the_temporary_directory(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(blocker / "cache"))
    folder = cache.cache_dir()
    assert not folder.startswith(str(blocker))
    assert os.path.isdir(folder) and os.access(folder, os.W_OK)


def test_kernels_compile_into_the_folder_and_clear_removes_them(tmp_path):
    environment = dict(os.environ, CNNLAB_CACHE_DIR=str(tmp_path))
    code = ("import numpy as np, cnnlab.functional as F\n"
            "F.relu(np.ones(4, np.float32))\n")
    subprocess.run([sys.executable, "-c", code], env=environment, check=True)
    written = [p for p in tmp_path.rglob("*") if p.suffix in (".nbi", ".nbc")]
    assert any(p.name.startswith("activation._relu_forward_items") for p in written)  # relu_forward's worker
    assert all(p.relative_to(tmp_path).parts[0].startswith("kernels-") for p in written)
    result = subprocess.run([sys.executable, "-c", "from cnnlab.kernels import cache; print(cache.clear()[1])"],
                            env=environment, check=True, capture_output=True, text=True)
    assert int(result.stdout) == len(written)
    assert not any(p.suffix in (".nbi", ".nbc") for p in tmp_path.rglob("*"))


def test_nothing_is_written_inside_the_package(tmp_path):
    """Running kernels (cold and warm cache) adds no file under the installed package."""
    before = {p for p in PACKAGE.rglob("*") if p.is_file()}
    environment = dict(os.environ, CNNLAB_CACHE_DIR=str(tmp_path))
    code = ("import numpy as np, cnnlab.functional as F\n"
            "x = np.ones((2, 1, 6, 6), np.float32)\n"
            "F.max_pool2d(F.relu(F.conv2d(x, np.ones((2, 1, 3, 3), np.float32))), 2)\n")
    for _ in range(2):  # a cold cache, then a warm one
        subprocess.run([sys.executable, "-c", code], env=environment, check=True)
    after = {p for p in PACKAGE.rglob("*") if p.is_file()}
    assert not [p for p in after - before if p.suffix in (".nbi", ".nbc")]


def test_cli_shows_and_clears_the_cache(monkeypatch, tmp_path, capsys):
    from cnnlab.cli import main

    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path))
    folder = cache.cache_dir()
    with open(os.path.join(folder, "conv.conv2d_forward-1.py311.nbi"), "wb") as stream:
        stream.write(b"x" * 2000)
    assert main(["info"]) == 0
    assert f"kernel cache: {folder}" in capsys.readouterr().out
    assert main(["cache"]) == 0
    assert f"{folder}: 1 files" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert f"removed 1 cached kernel files from {tmp_path}" in capsys.readouterr().out
    assert not os.path.exists(folder)


def test_the_cache_folder_changes_when_any_kernel_source_changes(tmp_path):
    """Numba checks only the file that defines a cached kernel, yet compiles helpers from other
    files into it: the folder name carries a stamp of every kernel module, so an edited helper
    cannot leave its callers' stale machine code in use."""
    (tmp_path / "cpu").mkdir()
    helper = tmp_path / "cpu" / "_helper.py"
    helper.write_text("x = 1\n")
    (tmp_path / "cpu" / "conv.py").write_text("y = 2\n")
    first = cache._source_stamp(str(tmp_path))
    assert cache._source_stamp(str(tmp_path)) == first
    helper.write_text("x = 10\n")
    os.utime(helper, ns=(helper.stat().st_atime_ns, helper.stat().st_mtime_ns + 1_000_000))
    assert cache._source_stamp(str(tmp_path)) != first
    assert cache.cache_dir().endswith("-" + cache._source_stamp())
