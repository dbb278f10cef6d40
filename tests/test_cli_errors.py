"""The cnnlab command's errors: one line, exit status 2, no traceback; no finished work lost."""

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab import cli
from cnnlab.cli import error_line, main


def write_image(path, value, shape=(8, 8, 3)):
    pixels = np.full(shape, value, dtype=np.uint8)
    pixels[: shape[0] // 2] //= 2  # a little structure
    Image.fromarray(pixels).save(path)
    return path


def write_folder(root, classes=("dark", "light"), per_class=4):
    """A tiny image folder: one sub-folder per class, ``per_class`` 8x8 PNGs each."""
    for number, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            write_image(root / name / f"{index}.png", 40 + 160 * number + 5 * index)
    return root


@pytest.fixture
def photos(tmp_path):
    return write_folder(tmp_path / "photos")


def quick(*arguments):
    return ["train", *map(str, arguments), "--epochs", "1", "--size", "8", "--batch-size", "4"]


def one_error_line(capsys, command):
    """The command's one line on standard error, besides the report of kernels compiled on the way
    (which ones a command compiles first depends on what ran before it, and on the helper
    processes a cold run leaves compiling in the background)."""
    error = capsys.readouterr().err
    error = "".join(line for line in error.splitlines(keepends=True)
                    if not line.startswith("compiling kernels for this machine")
                    and not re.match(r"compiled \d+ kernels? in ", line))
    assert "Traceback" not in error
    assert error.count("\n") == 1 and error.startswith(f"cnnlab {command}: "), error
    return error


@pytest.fixture
def model_file(tmp_path, photos, capsys):
    """A model from cnnlab train on the tiny folder."""
    path = tmp_path / "trained.npz"
    assert main(quick(photos, "--out", path)) == 0
    capsys.readouterr()
    return path


# ---------------------------------------------------------------- one line, exit status 2


def test_a_missing_folder(tmp_path, capsys):
    assert main(quick(tmp_path / "nowhere", "--out", tmp_path / "m.npz")) == 2
    assert "no such folder" in one_error_line(capsys, "train")


def test_a_file_where_a_folder_is_expected(tmp_path, capsys):
    image = write_image(tmp_path / "cat.png", 100)
    assert main(quick(image, "--out", tmp_path / "m.npz")) == 2
    assert "is a file, not a folder" in one_error_line(capsys, "train")


def test_a_single_class_folder(tmp_path, capsys):
    folder = write_folder(tmp_path / "photos", classes=("only",))
    assert main(quick(folder, "--out", tmp_path / "m.npz")) == 2
    assert "single class" in one_error_line(capsys, "train")


def test_a_truncated_model_file(tmp_path, model_file, capsys):
    cut = tmp_path / "cut.npz"
    cut.write_bytes(model_file.read_bytes()[:300])
    image = write_image(tmp_path / "x.png", 90)
    assert main(["predict", str(cut), str(image)]) == 2
    assert "cut.npz" in one_error_line(capsys, "predict")


def test_a_damaged_zip_file_is_one_line_wherever_it_is_raised():
    line = error_line("predict", zipfile.BadZipFile("File is not a zip file"))
    assert line == ("cnnlab predict: File is not a zip file (the file is cut short or not a cnnlab model: "
                    "write it again)")


def test_a_learning_rate_too_high_says_to_lower_it(photos, tmp_path, capsys):
    out = tmp_path / "m.npz"
    arguments = quick(photos, "--out", out, "--lr", "1e30")
    arguments[arguments.index("--batch-size") + 1] = "1"  # several steps: the loss overflows after the first
    assert main(arguments) == 2
    assert "smaller --lr" in one_error_line(capsys, "train")
    assert not out.exists()


@pytest.mark.parametrize("out, message", [
    ("missing/model.npz", "no such folder"),
    ("model", "must end in .npz"),
])
def test_a_bad_out_is_refused_before_any_work(photos, tmp_path, capsys, out, message):
    assert main(quick(photos, "--out", tmp_path / out)) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""  # nothing loaded, nothing trained
    assert not (tmp_path / out).exists()


def test_inspect_out_must_not_be_a_file(tmp_path, model_file, capsys):
    taken = tmp_path / "notes.txt"
    taken.write_text("keep me")
    image = write_image(tmp_path / "x.png", 90)
    assert main(["inspect", str(model_file), str(image), "--out", str(taken)]) == 2
    assert "is a file, not a folder" in one_error_line(capsys, "inspect")
    assert taken.read_text() == "keep me"


def test_predict_on_an_empty_folder_is_an_error(tmp_path, model_file, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(model_file), str(tmp_path / "empty")]) == 2
    assert "no image files" in one_error_line(capsys, "predict")


def test_any_other_error_is_one_line_too_and_debug_shows_the_traceback(monkeypatch, capsys):
    def broken(args):
        raise KeyError("surprise")

    monkeypatch.setattr(cli.info, "run", broken)
    assert main(["info"]) == 2
    assert "unexpected KeyError" in one_error_line(capsys, "info")
    with pytest.raises(KeyError):
        main(["--debug", "info"])
    with pytest.raises(KeyError):
        main(["info", "--debug"])


@pytest.mark.parametrize("error, hint", [
    (FileNotFoundError("no such folder: x"), "(check the path)"),
    (PermissionError("cannot write"), "(choose a path you may write to)"),
    (FloatingPointError("the loss became nan"), "(give a smaller --lr"),
])
def test_error_line_adds_how_to_fix(error, hint):
    assert hint in error_line("train", error)


def test_in_a_subprocess_exit_status_2_and_no_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cnnlab", "predict", str(tmp_path / "none.npz"), "x.png"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr == f"cnnlab predict: no such model file: {tmp_path / 'none.npz'} (check the path)\n"


# ---------------------------------------------------------------- no finished work thrown away


def test_train_refuses_to_overwrite_a_model_unless_forced(photos, tmp_path, capsys):
    out = tmp_path / "model.npz"
    out.write_bytes(b"a finished model")
    assert main(quick(photos, "--out", out)) == 2
    assert "--force" in one_error_line(capsys, "train")
    assert out.read_bytes() == b"a finished model"
    assert main(quick(photos, "--out", out, "--force")) == 0
    assert cnnlab.load(out).class_names == ["dark", "light"]
    assert not (tmp_path / "model.checkpoint.npz").exists()  # removed once the model is saved


def fail_after_first_epoch(monkeypatch, error):
    """Make fit raise ``error`` during its second epoch (KeyboardInterrupt: as if Ctrl-C came)."""
    real_fit = cnnlab.Sequential.fit

    def fit(self, x, y=None, epochs=1, **options):
        real_fit(self, x, y, epochs=1, **options)
        raise error

    monkeypatch.setattr(cnnlab.Sequential, "fit", fit)


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(photos, tmp_path, capsys, monkeypatch):
    out, checkpoint = tmp_path / "model.npz", tmp_path / "model.checkpoint.npz"
    arguments = quick(photos, "--out", out)
    arguments[arguments.index("--epochs") + 1] = "3"
    with monkeypatch.context() as patch:
        fail_after_first_epoch(patch, KeyboardInterrupt)
        assert main(arguments) == 130
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"--resume {checkpoint}" in error
    assert checkpoint.exists() and not out.exists()
    # the same command again would start over: refused, so the saved epoch is not lost
    assert main(arguments) == 2
    assert f"--resume {checkpoint}" in one_error_line(capsys, "train")
    assert main(arguments + ["--resume", str(checkpoint)]) == 0
    assert "epoch 3/3" in capsys.readouterr().out
    assert out.exists() and not checkpoint.exists()


def test_a_diverged_run_leaves_no_checkpoint_in_the_way_of_a_retry(photos, tmp_path, capsys, monkeypatch):
    arguments = quick(photos, "--out", tmp_path / "model.npz")
    with monkeypatch.context() as patch:
        fail_after_first_epoch(patch, FloatingPointError("the loss became inf: lower the learning rate"))
        assert main(arguments) == 2
    assert "smaller --lr" in one_error_line(capsys, "train")
    assert not (tmp_path / "model.checkpoint.npz").exists()
    assert main(arguments + ["--lr", "1e-4"]) == 0


def test_ctrl_c_in_a_real_process_exits_130(photos, tmp_path):
    checkpoint = tmp_path / "state.npz"
    command = [sys.executable, "-m", "cnnlab", *quick(photos, "--out", tmp_path / "m.npz",
                                                      "--checkpoint", checkpoint)]
    command[command.index("--epochs") + 1] = "5000"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("epoch 1/"):
            process.send_signal(signal.SIGINT)
            break
    _, error = process.communicate(timeout=300)
    assert process.returncode == 130
    assert "Traceback" not in error and f"--resume {checkpoint}" in error
    assert checkpoint.exists()


def test_checkpoint_and_plots_are_checked_before_any_work(photos, tmp_path, capsys):
    plots = tmp_path / "plots"
    plots.write_text("a file")
    assert main(quick(photos, "--out", tmp_path / "m.npz", "--plots", plots)) == 2
    assert "--plots" in one_error_line(capsys, "train")
    assert main(quick(photos, "--out", tmp_path / "m.npz", "--checkpoint", tmp_path / "state")) == 2
    assert "--checkpoint" in one_error_line(capsys, "train")
    assert main(quick(photos, "--out", tmp_path / "m.npz", "--resume", tmp_path / "none.npz")) == 2
    assert "--resume" in one_error_line(capsys, "train")


# ---------------------------------------------------------------- help, demo model, training options


def test_help_shows_every_default():
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if a.choices and "train" in a.choices).choices
    for name, command in commands.items():
        text = " ".join(command.format_help().split())
        for action in command._actions:
            has_default = action.default is not None and action.default is not False
            if action.option_strings and has_default and action.default != argparse.SUPPRESS:
                assert f"(default: {action.default})" in text, (name, action.dest)
    train_help = " ".join(commands["train"].format_help().split())
    assert "(default: 20)" in train_help and "the shuffling (default: 0)" in train_help


def test_the_demo_model_works_with_predict_inspect_and_train_base(tmp_path, photos, capsys):
    pytest.importorskip("matplotlib")
    demo = tmp_path / "demo.npz"
    assert main(["demo", "--epochs", "1", "--device", "cpu", "--out", str(demo)]) == 0
    assert cnnlab.load(demo).preprocessing == dict(size=[8, 8], color="gray", mean=[0.0], std=[1.0])
    from sklearn.datasets import load_digits

    digit = load_digits().images[0] / 16.0  # a 0, as an 8-bit grey image twice the size
    image = tmp_path / "zero.png"
    Image.fromarray((np.kron(digit, np.ones((2, 2))) * 255).astype(np.uint8)).save(image)
    capsys.readouterr()
    assert main(["predict", str(demo), str(image)]) == 0
    assert "zero.png" in capsys.readouterr().out
    assert main(["inspect", str(demo), str(image), "--out", str(tmp_path / "look")]) == 0
    assert (tmp_path / "look" / "feature_maps.png").exists()
    assert main(["train", str(photos), "--base", str(demo), "--epochs", "1", "--out", str(tmp_path / "t.npz")]) == 0
    assert cnnlab.load(tmp_path / "t.npz").preprocessing["size"] == [8, 8]


def test_train_reports_the_best_epoch_and_passes_its_options_to_fit(photos, tmp_path, capsys, monkeypatch):
    seen = {}
    real_fit = cnnlab.Sequential.fit

    def fit(self, x, y=None, **options):
        seen.update(options)
        return real_fit(self, x, y, **options)

    monkeypatch.setattr(cnnlab.Sequential, "fit", fit)
    out = tmp_path / "m.npz"
    assert main(quick(photos, "--out", out, "--patience", "2", "--class-weight", "balanced",
                      "--resize", "crop")) == 0
    assert "best validation accuracy" in capsys.readouterr().out
    stop = seen["callbacks"][0]
    assert (stop.monitor, stop.patience, stop.restore_best_weights) == ("val_accuracy", 2, True)
    assert seen["class_weight"] == "balanced"
    assert cnnlab.load(out).preprocessing["resize"] == "crop"


def test_predict_reads_an_image_as_the_model_was_trained(photos, tmp_path, monkeypatch):
    out = tmp_path / "m.npz"
    assert main(quick(photos, "--out", out, "--resize", "pad")) == 0
    wide = write_image(tmp_path / "wide.png", 200, shape=(8, 24, 3))
    from cnnlab.data import read_image, standardize

    model = cnnlab.load(out)
    settings = model.preprocessing
    expected = standardize(read_image(wide, (8, 8), "rgb", resize="pad")[None], settings["mean"], settings["std"])[0]
    np.testing.assert_array_equal(cli.models.prepare_image(model, wide), expected)


def test_predict_says_when_kernels_compile(tmp_path, model_file, monkeypatch):
    import contextlib

    import cnnlab.compilation

    streams = []

    @contextlib.contextmanager
    def report_compilation(stream):
        streams.append(stream)
        yield cnnlab.compilation.CompilationReport(None)

    monkeypatch.setattr(cnnlab.compilation, "report_compilation", report_compilation)
    image = write_image(tmp_path / "x.png", 90)
    assert main(["predict", str(model_file), str(image)]) == 0
    assert streams == [sys.stderr]


# ---------------------------------------------------------------- filter and bench


def test_filter_edges_have_no_frame_and_use_the_full_range(tmp_path, capsys):
    flat = write_image(tmp_path / "flat.png", 120, shape=(16, 16))
    step = tmp_path / "step.png"
    Image.fromarray(np.repeat([[0] * 8 + [200] * 8], 16, axis=0).astype(np.uint8)).save(step)
    assert main(["filter", str(flat), "--kernel", "edge", "--out", str(tmp_path / "flat-edges.png")]) == 0
    pixels = np.asarray(Image.open(tmp_path / "flat-edges.png"))
    flat_rows = pixels[list(range(6)) + list(range(10, 16))]  # away from the half-brightness line
    assert flat_rows.max() == 0  # no bright frame around a flat image
    assert main(["filter", str(step), "--kernel", "sobel_x", "--out", str(tmp_path / "step-edges.png")]) == 0
    edges = np.asarray(Image.open(tmp_path / "step-edges.png"))
    assert edges.max() == 255 and edges[:, 7:9].min() == 255 and edges[:, :6].max() == 0


def test_filter_out_is_checked_before_work(tmp_path, capsys):
    image = write_image(tmp_path / "x.png", 100)
    assert main(["filter", str(image), "--out", str(tmp_path / "edges.xyz")]) == 2
    assert "must end in .png" in one_error_line(capsys, "filter")
    assert main(["filter", str(tmp_path / "none.png"), "--out", str(tmp_path / "e.png")]) == 2
    assert "no such image" in one_error_line(capsys, "filter")


def test_bench_names_the_peers_it_has_and_reads_its_ratios(capsys, monkeypatch):
    from cnnlab.bench import measuring, report

    monkeypatch.setattr(measuring, "available_peers", lambda compare: (["scipy"], ["torch"]))
    assert main(["bench", "--shapes", "1,1,8,8,1,3,1,1", "--repeat", "1"]) == 0
    captured = capsys.readouterr()
    assert "compared with scipy (torch not installed)" in captured.err
    assert report.RATIO_NOTE in captured.out.splitlines()[0]
    assert "0.00x" not in captured.out


def test_available_peers():
    from cnnlab.bench.measuring import available_peers

    installed, missing = available_peers(["scipy"])
    assert (installed, missing) == (["scipy"], [])
    with pytest.raises(ValueError, match="unknown peer.*tensorflow"):
        available_peers(["tensorflow"])


def test_format_ratio_never_shows_zero():
    from cnnlab.bench.report import format_ratio

    assert format_ratio(0.5) == "0.50x" and format_ratio(0.0031) == "0.0031x" and format_ratio(12) == "12.00x"


@pytest.mark.parametrize("load, cores, threads, busy", [
    (0.2, 8, 8, False), (1.5, 8, 8, True), (3.0, 8, 4, False), (4.8, 8, 4, True), (0.0, 2, 2, False),
])
def test_busy_warning(load, cores, threads, busy):
    from cnnlab.bench.measuring import busy_warning

    warning = busy_warning(load, cores, threads)
    assert (warning is not None) == busy
    if busy:
        assert f"load average {load:.1f}" in warning and "not meaningful" in warning


def test_threading_warning_names_a_missing_tbb_where_cnnlab_depends_on_it():
    from cnnlab.bench.measuring import threading_warning

    warning = threading_warning("omp", "Linux", "x86_64")
    assert "omp threading layer" in warning and "pip install tbb" in warning
    assert threading_warning("workqueue", "Linux", "x86_64") is not None
    assert threading_warning("tbb", "Linux", "x86_64") is None
    assert threading_warning("omp", "Darwin", "arm64") is None  # (no tbb dependency there)
    assert threading_warning("omp", "Linux", "aarch64") is None


def test_plot_filters_refuses_a_layer_without_filters(tmp_path):
    pytest.importorskip("matplotlib")
    from cnnlab import viz
    from cnnlab.layers import Dense, ReLU

    for layer, name in ((Dense(4, 2), "Dense"), (ReLU(), "ReLU")):
        with pytest.raises(ValueError, match=f"got {name}"):
            viz.plot_filters(layer, os.path.join(tmp_path, "f.png"))


def test_a_second_training_with_the_same_out_is_refused_naming_the_first(photos, tmp_path, capsys):
    out = tmp_path / "same.npz"
    command = [sys.executable, "-m", "cnnlab", *quick(photos, "--out", out)]
    command[command.index("--epochs") + 1] = "5000"
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stdout:
            if line.startswith("epoch 1/"):
                break
        deadline = time.monotonic() + 120
        while not (tmp_path / "same.checkpoint.npz").exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # the first run's checkpoint is its own, not an earlier run's to resume
        assert (tmp_path / "same.checkpoint.npz").exists()
        assert main(quick(photos, "--out", out)) == 2
        error = one_error_line(capsys, "train")
        assert f"{out} is being written by another run (process {first.pid}, `cnnlab train" in error
        assert "give another --out" in error and not out.exists()
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=300)
    assert not (tmp_path / "same.npz.lock.owner").exists()  # the first run let go when it ended
    assert main(quick(photos, "--out", tmp_path / "other.npz")) == 0


def test_a_network_too_large_for_memory_is_one_line_with_the_fix(photos, tmp_path, capsys, monkeypatch):
    from cnnlab import checks

    monkeypatch.setattr(checks, "available_memory", lambda: 1000)  # less than the first layer's weights
    assert main(quick(photos, "--out", tmp_path / "m.npz")) == 2
    error = one_error_line(capsys, "train")
    assert "weights) needs" in error and "of memory is available" in error
    assert error.rstrip().endswith("(for cnnlab train: a smaller --size or --batch-size)")
    assert not (tmp_path / "m.npz").exists()
