"""``cnnlab bench --op dask``: the suite's rows, the agreement check and the messages for
missing packages (no timings are asserted)."""

import sys

import numpy as np
import pytest

from cnnlab import cli, filters
from cnnlab.bench import filtering, report

pytest.importorskip("dask.array")
pytest.importorskip("distributed")

DASK_FIELDS = {"op", "method", "shape", "seconds", "spread", "first_seconds", "jit_seconds",
               "mpixels_per_second", "generate_seconds", "worker_idle_bytes", "worker_held_bytes",
               "worker_peak_bytes", "result_sum", "peers"}


def test_suite_rows_on_a_two_process_cluster():
    pytest.importorskip("dask_image")
    rows = filtering.dask_suite(size=256, chunk=64, repeat=1)
    assert [row["method"] for row in rows] == ["cnnlab-dask", "dask-image", "in-memory cnnlab"]
    for row in rows[:2]:
        assert DASK_FIELDS <= set(row)
        assert row["shape"] == "256x256/64"
        assert len(row["worker_peak_bytes"]) == filtering.DASK_WORKERS
        assert all(peak >= held > 0 for peak, held in zip(row["worker_peak_bytes"], row["worker_held_bytes"]))
    in_memory = rows[2]
    assert {"seconds", "first_seconds", "mpixels_per_second", "peak_increase_bytes", "image_bytes"} <= set(in_memory)
    assert in_memory["image_bytes"] == 256 * 256 * 4
    ours = rows[0]
    assert set(ours["peers"]) == {"dask-image", "in-memory cnnlab"}
    assert ours["missing"] == []
    # every method filtered the same image to the same result
    assert set(ours["agreement"]) == {"in-memory cnnlab", "dask-image", "scipy.ndimage"}
    assert max(ours["agreement"].values()) < 1e-5 and ours["agreement_full"]["dask-image"] < 1e-5
    assert rows[1]["result_sum"] == pytest.approx(ours["result_sum"], rel=1e-4)
    assert in_memory["result_sum"] == pytest.approx(ours["result_sum"], rel=1e-4)
    table = report.format_dask_table(rows)
    assert "cnnlab-dask / dask-image:" in table and "cnnlab-dask / in-memory cnnlab:" in table
    assert "per worker" in table


@pytest.mark.parametrize("kernel", ["edge", "sobel_x", "gaussian_blur"])
def test_cnnlab_and_dask_image_agree_kernel_flip_and_border_included(kernel):
    ndfilters = pytest.importorskip("dask_image.ndfilters")
    weights = filters.KERNELS[kernel].astype(np.float32)  # sobel_x is not symmetric: checks the flip
    differences = filtering.dask_agreement(weights, ndfilters, size=96, chunk=32)
    assert set(differences) == {"in-memory cnnlab", "dask-image", "scipy.ndimage"}
    assert max(differences.values()) < 1e-5


def test_a_disagreement_is_refused(monkeypatch):
    ndfilters = pytest.importorskip("dask_image.ndfilters")

    class Shifted:  # a 'peer' whose origin is off by one pixel
        @staticmethod
        def convolve(image, weights, mode, cval):
            return ndfilters.convolve(image, weights, mode=mode, cval=cval, origin=1)

    with pytest.raises(RuntimeError, match="disagree"):
        filtering.dask_agreement(filters.KERNELS["sobel_x"].astype(np.float32), Shifted, size=64, chunk=32)


def test_without_dask_image_the_others_are_still_timed(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "dask_image", None)
    monkeypatch.setitem(sys.modules, "dask_image.ndfilters", None)
    rows = filtering.dask_suite(size=128, chunk=64, repeat=1, processes=False)
    assert [row["method"] for row in rows] == ["cnnlab-dask", "in-memory cnnlab"]
    assert rows[0]["missing"] == ["dask-image"] and set(rows[0]["agreement"]) == {"in-memory cnnlab"}
    assert "dask-image: not installed, not timed" in report.format_dask_table(rows)


def test_cli_says_in_one_line_that_dask_image_is_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "dask_image", None)
    monkeypatch.setitem(sys.modules, "dask_image.ndfilters", None)
    calls = []
    monkeypatch.setattr(filtering, "dask_suite", lambda *args, **kwargs: calls.append(args) or [])
    monkeypatch.setattr(report, "format_dask_table", lambda rows: "table")
    assert cli.main(["bench", "--op", "dask", "--size", "64", "--chunk", "32"]) == 0
    err = capsys.readouterr().err
    missing = [line for line in err.splitlines() if "dask-image" in line]
    assert missing == [f"cnnlab bench: {filtering.DASK_IMAGE_MISSING}"]
    assert "pip install dask-image" in missing[0]
    assert calls and calls[0][:2] == (64, 32)


def test_missing_dask_extra_is_one_clear_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"'dask' extra: pip install 'cnnlab\[dask\]'"):
        filtering.dask_suite(size=64, chunk=32)
    assert cli.main(["bench", "--op", "dask", "--size", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"cnnlab bench: {filtering.DASK_EXTRA_MESSAGE}"


def test_dask_is_not_part_of_all_and_bad_sizes_are_refused(capsys):
    import inspect

    source = inspect.getsource(cli.bench.run)
    assert 'args.op in ("dask", "all")' not in source and 'args.op == "dask"' in source
    assert cli.main(["bench", "--op", "dask", "--size", "64", "--chunk", "128"]) == 2
    assert "--chunk 128 is larger than --size 64" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "--op", "dask", "--size", "2"])
