"""``cnnlab bench --op models``: rows, the memory report and the message for missing packages
(no timings are asserted)."""

import io
import json
import os

import numba
import numpy as np
import pytest
from test_cli_errors import one_error_line

from cnnlab import cli
from cnnlab.bench import engine_worker, networks, report


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


def test_format_training_memory():
    rows = [dict(label="resnet18 b16", engines=dict(cnnlab=dict(step_bytes=15 * 2**20, total_bytes=705 * 2**20),
                                                    torch=dict(step_bytes=232 * 2**20, total_bytes=787 * 2**20)))]
    text = report.format_training_memory(rows)
    assert "resnet18 b16: cnnlab +15 MiB (705 MiB), torch +232 MiB (787 MiB)" in text
    assert "not measured" in report.format_training_memory([])


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="the peak is restarted through /proc")
def test_training_memory_sees_what_the_steps_allocate():
    """A step that fills 64 MiB: its rise is seen in each run, and in the total; an array the
    network builds and keeps counts in the total and in what is kept, not in the step's rise."""
    kept = []

    def make_step():
        kept.append(np.ones(32 * 2**20 // 4, np.float32))  # 32 MiB, held for the whole run

        def run():
            np.ones(64 * 2**20 // 4, np.float32)
        return run

    row = networks.training_memory(make_step)
    assert 56 * 2**20 < row["step_bytes"] < 80 * 2**20
    assert row["kept_bytes"] >= 30 * 2**20
    assert row["total_bytes"] >= row["step_bytes"] + 30 * 2**20


def test_worker_measures_the_memory_of_training_steps():
    reply, = serve_cnnlab('{"task": "train_memory", "network": "cifar"}\n')
    if os.path.exists("/proc/self/clear_refs"):
        assert reply["total_bytes"] > 0 and reply["step_bytes"] >= 0 and reply["kept_bytes"] > 0
    else:
        assert reply == {}


def test_rows_on_a_small_network():
    for name in ("torch", "torchvision", "onnx", "onnxruntime"):
        pytest.importorskip(name)
    results = networks.models_suite(threads=1, repeat=1, rounds=1, batches=(2,), size=32, networks=("resnet18",),
                                    openblas="environment", memory=True)
    rows = results[0]["rows"]
    assert [row["shape"] for row in rows] == ["resnet18 b2", "3-conv 32x32 b32", "resnet18 32x32 b16",
                                              "resnet18 frozen base 32x32 b16"]
    assert all("torch" in row["peers"] for row in rows[2:])
    assert set(rows[0]["peers"]) == {"torch", "onnxruntime", "unfused"}
    assert rows[0]["relative_error"] < 1e-5  # the imported network computes what onnxruntime computes
    assert 0 <= rows[0]["overhead_fraction"] < 1 and rows[0]["steps"] > 0
    assert rows[1]["op"] == "training step" and rows[1]["seconds"] > 0 and "torch" in rows[1]["peers"]
    memory, = results[0]["memory"]
    assert memory["pool_bytes"] > 0 and memory["unfused_peak_bytes"] >= 0
    assert [row["label"] for row in results[0]["training_memory"]] == [label for label, _ in networks.TRAINING_MEMORY]
    assert all(set(row["engines"]) == {"cnnlab", "torch"} for row in results[0]["training_memory"])
    assert "resnet18 b2" in report.format_models(results)


def test_openblas_settings(monkeypatch):
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.setenv("OPENBLAS_L2_SIZE", "1048576")
    assert networks.openblas_settings("both") == ["environment", "own"]
    env = networks.worker_environment("own")
    assert "OPENBLAS_CORETYPE" not in env and "OPENBLAS_L2_SIZE" not in env
    assert networks.worker_environment("environment")["OPENBLAS_CORETYPE"] == "Haswell"
    monkeypatch.delenv("OPENBLAS_CORETYPE")
    monkeypatch.delenv("OPENBLAS_L2_SIZE")
    assert networks.openblas_settings("both") == ["environment"]  # the same setting twice: measured once
    with pytest.raises(ValueError, match="openblas"):
        networks.openblas_settings("haswell")


def serve_cnnlab(lines):
    """The cnnlab worker's replies to these request lines, served in this process."""
    replies = io.StringIO()
    threads = numba.get_num_threads()
    try:
        engine_worker.serve(engine_worker.make_engine("cnnlab", 1), io.StringIO(lines), replies)
    finally:
        numba.set_num_threads(threads)  # the worker sets the thread count of its process
    return [json.loads(line) for line in replies.getvalue().splitlines()]


def test_worker_answers_each_line_and_reports_errors():
    first, second = serve_cnnlab('{"task": "nothing"}\n\n{"task": "info"}\n')
    assert "no task 'nothing'" in first["error"]
    assert second["version"] and second["blas"] and second["threading"]


def test_worker_times_a_reference_convolution_and_rows_compare_it():
    reply, = serve_cnnlab('{"task": "conv2d", "shape": "lenet2", "repeat": 2}\n')
    assert reply["first"] > 0 and len(reply["times"]) == 2

    class Engine:  # answers as a worker would, without a process
        def __init__(self, seconds):
            self.seconds = seconds

        def ask(self, **request):
            assert request == dict(task="conv2d", shape="lenet1", repeat=3)
            return dict(first=1.0, times=[self.seconds] * 3)

    rows = networks.conv_rows(dict(cnnlab=Engine(0.002), torch=Engine(0.004)), 3, 2, ["lenet1"])
    assert [(row["op"], row["shape"]) for row in rows] == [("conv2d", "lenet1")]
    assert rows[0]["seconds"] == 0.002 and rows[0]["peers"] == {"torch": 0.004}
    with pytest.raises(ValueError, match="shape must be one of"):
        networks.conv_rows(dict(cnnlab=Engine(0.002)), 3, 2, ["lenet9"])


def test_format_models_side_by_side():
    row = dict(op="inference", shape="resnet18 b1", seconds=0.02, spread=0.001, jit_seconds=0.0,
               samples_per_second=50.0, peers={"torch": 0.016, "onnxruntime": 0.008, "unfused": 0.024},
               relative_error=5e-7, overhead_fraction=0.12, overhead_per_step=25e-6, steps=23)
    other = dict(row, seconds=0.018)
    text = report.format_models([dict(openblas="environment", blas="OpenBLAS (Haswell kernels)", threading="tbb",
                                      rows=[row]),
                                 dict(openblas="own", blas="OpenBLAS (SkylakeX kernels)", threading="tbb", rows=[other])])
    assert "1.25x" in text and "12.0%" in text and "25 us" in text
    assert "GEMMs on OpenBLAS (Haswell kernels), Numba's tbb threading layer" in text  # (omp: its pool spins)
    assert "inference resnet18 b1: 20.00 | 18.00 ms, vs torch 1.25x | 1.12x, vs onnxruntime 2.50x | 2.25x" in text


def test_worker_trains_an_onnx_network_whole_and_with_a_frozen_base(tmp_path):
    # what the ResNet-18 training rows ask the cnnlab worker, on a small network of 1000 classes
    import cnnlab
    import cnnlab.onnx
    from cnnlab import layers as L

    x = cnnlab.Input((3, 32, 32))
    h = L.GlobalAvgPool2D()(L.ReLU()(L.BatchNorm2D(4)(L.Conv2D(3, 4, 3, padding=1)(x))))
    path = tmp_path / "small.onnx"
    cnnlab.onnx.save(cnnlab.Model(x, L.Dense(4, 1000)(h)), path)
    lines = [json.dumps(dict(task="train_resnet", onnx=str(path), size=32, frozen=frozen, repeat=2))
             for frozen in (False, True)]
    replies = io.StringIO()
    threads = numba.get_num_threads()
    try:
        engine_worker.serve(engine_worker.make_engine("cnnlab", 1), io.StringIO("\n".join(lines)), replies)
    finally:
        numba.set_num_threads(threads)
    for reply in map(json.loads, replies.getvalue().splitlines()):
        assert "error" not in reply and reply["first"] > 0 and len(reply["times"]) == 2
