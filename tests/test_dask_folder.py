"""Folders of image files read lazily chunk by chunk, and ``cnnlab predict --dask``.

The CSV rows of ``--dask`` equal the in-memory ``cnnlab predict`` results for the same folder,
on the synchronous and threaded schedulers and on an in-process dask.distributed cluster.
"""

import csv
import json
import socket

import numpy as np
import pytest
from PIL import Image

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("dask.distributed")

import cnnlab.dask as cdask
from cnnlab.cli import main
from cnnlab.data import read_image


def write_image(path, value, shape=(8, 8, 3)):
    pixels = np.full(shape, value, dtype=np.uint8)
    pixels[: shape[0] // 2] //= 2  # a little structure
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model of cnnlab train, and a folder to classify: 11 images in two levels, an unreadable
    .png and a text file."""
    root = tmp_path_factory.mktemp("folder")
    for number, name in enumerate(("dark", "light")):
        (root / "train" / name).mkdir(parents=True)
        for index in range(4):
            write_image(root / "train" / name / f"{index}.png", 40 + 160 * number + 5 * index)
    model = root / "model.npz"
    assert main(["train", str(root / "train"), "--epochs", "1", "--size", "8", "--batch-size", "4",
                 "--out", str(model)]) == 0
    photos = root / "photos"
    (photos / "more").mkdir(parents=True)
    for index in range(7):
        write_image(photos / f"{index}.png", 20 + 30 * index)
    for index in range(4):
        write_image(photos / "more" / f"{index}.PNG", 200 - 40 * index, shape=(6, 10, 3))
    (photos / "broken.png").write_text("not an image")
    (photos / "notes.txt").write_text("not listed")
    return model, photos


def read_rows(path):
    with open(path, newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["file", "class", "probability"]
    return rows[1:]


def in_memory(capsys, model, photos):
    capsys.readouterr()
    assert main(["predict", str(model), str(photos), "--json", "--top-k", "2"]) == 0
    shown = json.loads(capsys.readouterr().out)
    return shown["results"], [error["file"] for error in shown["errors"]]


def assert_same_rows(rows, results):
    expected = [(r["file"], g["label"], g["probability"]) for r in results for g in r["predictions"]]
    # rows come in the order chunks finish; within a file, most probable first
    by_file = {}
    for file, label, probability in rows:
        by_file.setdefault(file, []).append((label, float(probability)))
    assert sorted(by_file) == sorted({file for file, _, _ in expected})
    for file, label, probability in expected:
        seen = dict(by_file[file])
        assert label in seen and seen[label] == pytest.approx(probability, abs=1e-6)
    for result in results:
        assert [label for label, _ in by_file[result["file"]]] == [g["label"] for g in result["predictions"]]


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_dask_rows_equal_the_in_memory_predictions(trained, tmp_path, capsys, scheduler):
    model, photos = trained
    results, failed = in_memory(capsys, model, photos)
    assert len(results) == 11 and failed == [str(photos / "broken.png")]
    out = tmp_path / "predictions.csv"
    assert main(["predict", str(model), str(photos), "--top-k", "2", "--dask", scheduler, "--csv", str(out),
                 "--chunk-size", "3"]) == 0
    error = capsys.readouterr().err
    assert_same_rows(read_rows(out), results)
    # progress after every chunk of 3 of the 12 files, then the unreadable file with its reason
    assert [line for line in error.splitlines() if line.endswith(" images")] == [
        "3/12 images", "6/12 images", "9/12 images", "12/12 images"]
    assert f"{photos / 'broken.png'}: skipped (" in error and "not a readable image" in error
    assert "11 images classified into" in error


def test_dask_rows_on_a_distributed_cluster(trained, tmp_path, capsys):
    model, photos = trained
    results, _ = in_memory(capsys, model, photos)
    out = tmp_path / "cluster.csv"
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        assert main(["predict", str(model), str(photos), "--top-k", "2", "--csv", str(out),
                     "--chunk-size", "4", "--dask", cluster.scheduler_address]) == 0
    assert_same_rows(read_rows(out), results)
    assert "12/12 images" in capsys.readouterr().err


def test_csv_without_dask_writes_the_same_rows(trained, tmp_path, capsys):
    model, photos = trained
    results, _ = in_memory(capsys, model, photos)
    out = tmp_path / "memory.csv"
    assert main(["predict", str(model), str(photos), "--top-k", "2", "--csv", str(out)]) == 0
    rows = read_rows(out)
    assert_same_rows(rows, results)
    assert [row[0] for row in rows[::2]] == [r["file"] for r in results]  # in file order


def one_error_line(capsys):
    error = capsys.readouterr().err
    assert "Traceback" not in error
    assert error.count("\n") == 1 and error.startswith("cnnlab predict: "), error
    return error


def test_dask_without_csv_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    from cnnlab import cli

    def no_work(*args):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(cli.predict, "load_trained_model", no_work)
    assert main(["predict", str(tmp_path / "missing.npz"), str(tmp_path), "--dask", "threads"]) == 2
    assert "add --csv FILE" in one_error_line(capsys)
    assert main(["predict", str(tmp_path / "missing.npz"), str(tmp_path), "--dask"]) == 2
    assert "--csv" in one_error_line(capsys)
    assert main(["predict", "m.npz", str(tmp_path), "--dask", "--csv", str(tmp_path / "out.txt")]) == 2
    assert "must end in .csv" in one_error_line(capsys)
    assert main(["predict", "m.npz", str(tmp_path), "--dask", "nowhere", "--csv", str(tmp_path / "o.csv")]) == 2
    assert "--dask nowhere: give threads, processes, synchronous" in one_error_line(capsys)


def test_an_unreachable_scheduler_is_one_line(trained, tmp_path, capsys):
    model, photos = trained
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(["predict", str(model), str(photos), "--csv", str(tmp_path / "o.csv"),
                     "--dask", f"tcp://127.0.0.1:{port}"]) == 2
    assert f"--dask tcp://127.0.0.1:{port}: cannot reach a Dask scheduler" in one_error_line(capsys)


# --- the reader -----------------------------------------------------------------------------

def test_reader_has_one_task_per_chunk_and_reads_like_read_image(trained):
    _, photos = trained
    files, images = cdask.read_image_folder([photos / "more", photos / "0.png", str(photos / "1.png")], 5,
                                            color="gray", resize="pad", chunk_size=4)
    assert files == [str(photos / "more" / f"{i}.PNG") for i in range(4)] + [str(photos / "0.png"),
                                                                           str(photos / "1.png")]
    assert images.shape == (6, 1, 5, 5) and images.dtype == np.float32 and images.chunks[0] == (4, 2)
    graph = dict(images.__dask_graph__())
    assert len(graph) == images.numblocks[0] == 2
    assert max(images.chunks[0]) <= 4
    expected = np.stack([read_image(f, 5, "gray", "pad") for f in files])
    np.testing.assert_array_equal(images.compute(scheduler="sync"), expected)


def test_reader_lists_a_folder_like_predict(trained):
    _, photos = trained
    files, images = cdask.read_image_folder(photos, 8, chunk_size=5)
    assert len(files) == 12 and str(photos / "notes.txt") not in files
    assert files == sorted(files[:8]) + files[8:] and files[-1] == str(photos / "more" / "3.PNG")
    assert images.chunks == ((5, 5, 2), (3,), (8,), (8,))


def test_an_unreadable_file_raises_naming_it_or_gives_nan(trained):
    _, photos = trained
    paths = [photos / "0.png", photos / "broken.png", photos / "1.png"]
    _, images = cdask.read_image_folder(paths, 8, chunk_size=2)
    with pytest.raises(ValueError, match="broken.png is not a readable image"):
        images.compute(scheduler="sync")
    np.testing.assert_array_equal(images[2:].compute(scheduler="sync")[0], read_image(paths[2], 8))
    _, images = cdask.read_image_folder(paths, 8, chunk_size=2, errors="nan")
    readable = ~da.isnan(images[:, 0, 0, 0])
    assert readable.compute(scheduler="sync").tolist() == [True, False, True]


@pytest.mark.parametrize("arguments, error, words", [
    ({"chunk_size": 0}, ValueError, "chunk_size must be at least 1"),
    ({"chunk_size": 2.5}, TypeError, "chunk_size must be an integer"),
    ({"errors": "skip"}, ValueError, "errors must be 'raise' or 'nan'"),
    ({"color": "cmyk"}, ValueError, "color must be"),
    ({"resize": "fit"}, ValueError, "resize must be"),
    ({"size": 0}, ValueError, "size"),
])
def test_bad_reader_arguments(trained, arguments, error, words):
    _, photos = trained
    options = {"paths": photos, "size": 8} | arguments
    with pytest.raises(error, match=words):
        cdask.read_image_folder(**options)


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        cdask.read_image_folder(tmp_path / "missing", 8)
    with pytest.raises(ValueError, match="paths holds no image files"):
        cdask.read_image_folder(tmp_path, 8)
    with pytest.raises(TypeError, match="paths must"):
        cdask.read_image_folder(3, 8)


def test_compute_chunks_yields_every_chunk_once(trained):
    x = da.arange(10, chunks=3)
    for scheduler in ("synchronous", "threads", None):
        pieces = list(cdask.compute_chunks(x, scheduler))
        assert [start for start, _ in pieces] == [0, 3, 6, 9]
        np.testing.assert_array_equal(np.concatenate([block for _, block in pieces]), np.arange(10))
    with pytest.raises(ValueError, match="scheduler must be"):
        list(cdask.compute_chunks(x, "gpu"))
    with pytest.raises(TypeError, match="x must be a dask array"):
        list(cdask.compute_chunks(np.arange(3)))
