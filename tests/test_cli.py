"""The cnnlab command, end to end."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

import cnnlab
from cnnlab.cli import main


def test_demo_reaches_97_percent_on_held_out_digits(tmp_path, capsys):
    out = tmp_path / "demo.npz"
    assert main(["demo", "--out", str(out), "--device", "cpu"]) == 0
    shown = capsys.readouterr().out
    accuracy = float(re.search(r"held-out accuracy: ([\d.]+)%", shown).group(1))
    assert accuracy >= 97.0
    assert "confusion matrix" in shown and "epoch 15/15" in shown and "Total parameters" in shown
    model = cnnlab.load(out)
    assert model.class_names == [str(d) for d in range(10)]


def test_faces_demo_runs(tmp_path, capsys):
    assert main(["demo", "--data", "faces", "--epochs", "2", "--out", str(tmp_path / "f.npz")]) == 0
    shown = capsys.readouterr().out
    assert "not face" in shown and "held-out accuracy" in shown


def test_tour_and_info(capsys):
    assert main(["tour", "--device", "cpu"]) == 0
    shown = capsys.readouterr().out
    assert "(1, 4, 512, 512)" in shown and "(1, 4, 256, 256)" in shown
    assert main(["info"]) == 0
    shown = capsys.readouterr().out
    assert "threads" in shown and "BLAS: " in shown


def test_bench_runs_a_custom_shape_and_writes_json(tmp_path, capsys):
    report = tmp_path / "bench.json"
    assert main(["bench", "--shapes", "2,1,8,8,2,3,1,1", "--repeat", "1", "--compare", "scipy",
                 "--json", str(report)]) == 0
    assert "vs scipy" in capsys.readouterr().out
    rows = json.loads(report.read_text())["rows"]
    assert rows[0]["shape"] == "2,1,8,8,2,3,1,1" and rows[0]["peers"]["scipy"] > 0


def test_bench_rejects_a_bad_shape(capsys):
    assert main(["bench", "--shapes", "1,2,3"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("cnnlab bench: shape must be one of") and "N,C,H,W,F,K,S,P" in error


def test_python_dash_m_and_help():
    result = subprocess.run([sys.executable, "-m", "cnnlab", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout and "bench" in result.stdout


def test_confusion_matrix():
    from cnnlab.metrics import confusion_matrix

    matrix = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2]), 3)
    np.testing.assert_array_equal(matrix, [[1, 1, 0], [0, 1, 0], [0, 0, 1]])


def test_bench_other_ops_memory_and_plot(tmp_path, capsys):
    shape = "2,2,8,8,2,3,1,1"
    for op in ("conv2d_backward", "pool", "activation", "linear"):
        assert main(["bench", "--op", op, "--shapes", shape, "--repeat", "1", "--compare", ""]) == 0
        assert op in capsys.readouterr().out
    assert main(["bench", "--op", "memory", "--shapes", shape]) == 0
    assert "peak +" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    plot = tmp_path / "ratios.png"
    assert main(["bench", "--shapes", shape, "--repeat", "1", "--compare", "scipy", "--plot", str(plot)]) == 0
    assert plot.stat().st_size > 1000


def test_confusion_table_columns_line_up():
    from cnnlab.metrics import format_confusion

    lines = format_confusion(np.array([[2, 0], [1, 13]]), ["astro", "coffee"]).splitlines()
    assert lines[0].startswith("true \\ predicted")
    ends = {line.index(word) + len(word) for line, word in zip(lines, ("coffee", "0", "13"))}
    assert len(ends) == 1  # the last column ends at the same place in every row


@pytest.mark.parametrize("arguments, message", [
    (["train", "photos", "--epochs", "0"], "--epochs: must be at least 1, got 0"),
    (["train", "photos", "--size", "3"], "--size: must be at least 4, got 3"),
    (["train", "photos", "--validation", "1.5"], "--validation: must be between 0 and 1"),
    (["train", "photos", "--validation", "0"], "--validation: must be a positive number"),
    (["train", "photos", "--lr", "-1"], "--lr: must be a positive number"),
    (["train", "photos", "--lr", "nan"], "--lr: must be a positive number"),
    (["train", "photos", "--batch-size", "two"], "--batch-size: must be an integer, got 'two'"),
    (["demo", "--epochs", "-3"], "--epochs: must be at least 1"),
    (["predict", "m.npz", "a.png", "--top-k", "0"], "--top-k: must be at least 1"),
    (["bench", "--repeat", "0"], "--repeat: must be at least 1"),
    (["bench", "--threads", "-1"], "--threads: must be at least 0"),
])
def test_bad_numbers_on_the_command_line_are_refused_by_name(arguments, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(arguments)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_output_cut_short_ends_quietly():
    reader = subprocess.Popen([sys.executable, "-m", "cnnlab", "info"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    reader.stdout.close()  # like `cnnlab info | head -0`: the reader is gone before anything is written
    error = reader.stderr.read().decode()
    assert reader.wait(timeout=120) == 1
    assert "Traceback" not in error and "BrokenPipe" not in error


def test_version_flag_prints_the_version(capsys):
    import cnnlab
    from cnnlab.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"cnnlab {cnnlab.__version__}"
