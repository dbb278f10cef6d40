"""``cnnlab bench --op models``: rows, the memory report and the message for missing packages
(no timings are asserted)."""

import pytest
from test_cli_errors import one_error_line

from cnnlab import cli
from cnnlab.bench import networks, report


def test_missing_packages_are_named_in_one_line(capsys, monkeypatch):
    monkeypatch.setattr(networks, "missing_modules", lambda: ["torchvision", "onnxruntime"])
    assert cli.main(["bench", "--op", "models"]) == 2
    line = one_error_line(capsys, "bench")
    assert "torchvision, onnxruntime" in line and "cnnlab[bench]" in line


def test_format_memory():
    rows = [dict(network="resnet18", batch=16, input_bytes=9 * 2**20, unfused_peak_bytes=98 * 2**20,
                 fused_peak_bytes=0, pool_bytes=74 * 2**20)]
    text = report.format_memory(rows)
    assert "resnet18 b16: unfused +98 MiB, fused +0 MiB, and 74 MiB kept" in text
    assert "not measured" in report.format_memory([])


def test_rows_on_a_small_network():
    for name in ("torch", "torchvision", "onnx", "onnxruntime"):
        pytest.importorskip(name)
    rows = networks.inference_rows(threads=1, repeat=1, batches=(2,), size=32, networks=("resnet18",))
    assert [row["shape"] for row in rows] == ["resnet18 b2"]
    assert set(rows[0]["peers"]) == {"torch", "onnxruntime", "unfused"}
    assert rows[0]["relative_error"] < 1e-5  # the imported network computes what onnxruntime computes
    step, = networks.training_rows(threads=1, repeat=1)
    assert step["op"] == "training step" and step["seconds"] > 0 and "torch" in step["peers"]
    memory, = networks.memory_rows(batch=2, size=32, networks=("resnet18",))
    assert memory["pool_bytes"] > 0 and memory["unfused_peak_bytes"] >= 0
