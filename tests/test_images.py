"""Images in, classifier out: folders, preprocessing, augmentation, the CLI, plots, transfer."""

import json
import os
import re

import numpy as np
import pytest
from skimage import io

import cnnlab
from cnnlab import data
from cnnlab.cli import main


def stripes(rng, horizontal, size=16):
    """An RGB uint8 image of stripes (horizontal or vertical) with noise."""
    line = (np.arange(size) // 2 % 2) * 180 + 40
    image = np.broadcast_to(line[:, None] if horizontal else line[None, :], (size, size)).astype(np.float64)
    image = image + rng.normal(0, 20, (size, size))
    return np.clip(np.stack([image, image * 0.8, image * 0.6], axis=-1), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name, horizontal in (("horizontal", True), ("vertical", False)):
        os.makedirs(root / name)
        for i in range(14):
            suffix = "png" if i % 2 else "jpg"
            io.imsave(root / name / f"{i}.{suffix}", stripes(rng, horizontal), check_contrast=False)
    (root / "vertical" / "notes.txt").write_text("not an image")
    (root / "vertical" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return root


def test_load_image_folder_skips_bad_files_with_a_warning(folder):
    with pytest.warns(UserWarning, match="skipped 2 file"):
        images, labels, names = data.load_image_folder(folder, size=(12, 10), color="rgb")
    assert names == ["horizontal", "vertical"]
    assert images.shape == (28, 3, 12, 10) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1
    assert (labels == 0).sum() == 14 and (labels == 1).sum() == 14
    with pytest.warns(UserWarning):
        gray, _, _ = data.load_image_folder(folder, size=8, color="gray")
    assert gray.shape == (28, 1, 8, 8)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        data.load_image_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match="no readable images"):
        data.load_image_folder(tmp_path)
    os.makedirs(tmp_path / "only")
    io.imsave(tmp_path / "only" / "a.png", np.zeros((4, 4), np.uint8), check_contrast=False)
    with pytest.raises(ValueError, match="single class"):
        data.load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="color"):
        data.read_image(tmp_path / "only" / "a.png", (4, 4), color="cmyk")


def test_augmentation_keeps_shape_and_dtype_and_repeats_with_a_seed():
    batch = np.random.default_rng(1).random((5, 3, 12, 12)).astype(np.float32)
    augment = data.Augmenter()
    first = augment(batch, np.random.default_rng(7))
    again = augment(batch, np.random.default_rng(7))
    other = augment(batch, np.random.default_rng(8))
    assert first.shape == batch.shape and first.dtype == batch.dtype
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, batch) and not np.allclose(first, other)
    flip_only = data.Augmenter(shift=0, flip=True, rotation=0, zoom=0, brightness=0, contrast=0)
    flipped = flip_only(batch, np.random.default_rng(0))
    for original, result in zip(batch, flipped):
        assert np.array_equal(result, original) or np.array_equal(result, original[:, :, ::-1])


@pytest.mark.parametrize("arguments, error, message", [
    (dict(shift=1.0), ValueError, r"shift must lie in \[0, 1\)"),
    (dict(shift=-0.1), ValueError, "shift must lie"),
    (dict(rotation=-5), ValueError, r"rotation must lie in \[0, 180\]"),
    (dict(zoom=1), ValueError, "zoom must lie"),
    (dict(brightness=float("nan")), ValueError, "brightness must lie"),
    (dict(contrast="0.1"), TypeError, "contrast must be a number"),
    (dict(flip="no"), TypeError, "flip must be True or False"),
])
def test_augmenter_refuses_bad_settings_by_name(arguments, error, message):
    with pytest.raises(error, match=message):
        data.Augmenter(**arguments)


def test_augmenter_refuses_integer_or_unbatched_images():
    rng = np.random.default_rng(0)
    with pytest.raises(TypeError, match="float images .*normalize"):
        data.Augmenter()(np.zeros((2, 1, 4, 4), np.uint8), rng)
    with pytest.raises(ValueError, match="NCHW"):
        data.Augmenter()(np.zeros((1, 4, 4), np.float32), rng)


def test_fit_with_augmentation_never_touches_validation_data():
    calls = []

    def augment(batch, rng):
        calls.append(len(batch))
        return batch

    from cnnlab.layers import Dense, Flatten

    model = cnnlab.Sequential([Flatten(), Dense(4, 2, seed=0)], input_shape=(1, 2, 2))
    x = np.random.default_rng(2).random((10, 1, 2, 2)).astype(np.float32)
    y = np.array([0, 1] * 5)
    model.fit(x, y, epochs=2, batch_size=4, validation_data=(x[:6], y[:6]), augment=augment, verbose=0)
    assert calls == [4, 4, 2] * 2  # training batches only
    with pytest.raises(TypeError, match="augment"):
        model.fit(x, y, augment="yes", verbose=0)


def test_standardize_one_hot_and_batches():
    x = np.random.default_rng(3).random((6, 2, 4, 4)).astype(np.float32) * 5 + 2
    z, mean, std = data.standardize(x)
    np.testing.assert_allclose(z.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=(0, 2, 3)), 1, rtol=1e-4)
    again, _, _ = data.standardize(x[:2], mean, std)  # prediction reuses the training statistics
    np.testing.assert_allclose(again, z[:2], rtol=1e-6)
    np.testing.assert_array_equal(data.one_hot(np.array([2, 0]), 3), [[0, 0, 1], [1, 0, 0]])
    with pytest.raises(ValueError):
        data.one_hot(np.array([3]), 3)
    sizes = [len(b) for b, _ in data.batches(x, np.arange(6), batch_size=4, shuffle=True, seed=0)]
    assert sizes == [4, 2]


def test_bad_labels_and_colour_are_refused_by_name(folder):
    with pytest.raises(ValueError, match="y must be one label per sample"):
        data.train_test_split(np.ones((4, 1)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="color must be 'rgb' or 'gray'"):
        data.load_image_folder(folder, size=8, color="cmyk")


def test_train_test_split_is_stratified_and_seeded():
    y = np.array([0] * 40 + [1] * 20)
    x = np.arange(60)
    x_train, x_test, y_train, y_test = data.train_test_split(x, y, test_size=0.25, seed=1)
    assert (y_test == 0).sum() == 10 and (y_test == 1).sum() == 5
    assert sorted(np.concatenate([x_train, x_test])) == list(range(60))
    np.testing.assert_array_equal(data.train_test_split(x, y, 0.25, seed=1)[1], x_test)


def assert_refused(capsys, arguments, pattern):
    """The command fails with one line on stderr matching ``pattern`` and exit status 2."""
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and re.search(pattern, error), error


def test_cli_train_predict_and_filter(folder, tmp_path, capsys):
    model_path = tmp_path / "stripes.npz"
    with pytest.warns(UserWarning, match="skipped"):
        assert main(["train", str(folder), "--epochs", "6", "--size", "16", "--augment", "--lr", "3e-3",
                     "--out", str(model_path), "--device", "cpu"]) == 0
    shown = capsys.readouterr().out
    assert "validation accuracy" in shown and "epoch 6/6" in shown
    model = cnnlab.load(model_path)
    assert model.class_names == ["horizontal", "vertical"]
    assert model.preprocessing["size"] == [16, 16] and len(model.preprocessing["mean"]) == 3

    assert main(["predict", str(model_path), str(folder / "horizontal"), "--json", "--top-k", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert len(report["results"]) == 14
    assert all(len(r["predictions"]) == 2 for r in report["results"])
    right = sum(r["predictions"][0]["label"] == "horizontal" for r in report["results"])
    assert right >= 12  # stripes are easy: the network must have learned them

    assert main(["predict", str(model_path), str(folder / "vertical" / "1.png")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["file", "class", "probability"]
    assert table[1].split()[0].endswith("1.png") and len(table) == 2
    assert main(["predict", str(model_path), str(folder / "vertical" / "broken.png")]) == 1

    out = tmp_path / "edges.png"
    assert main(["filter", str(folder / "vertical" / "1.png"), "--kernel", "sobel_x", "--out", str(out)]) == 0
    written = io.imread(out)
    assert written.shape[:2] == (16, 16) and written.max() > 0


def test_cli_errors_for_missing_and_wrong_files(tmp_path, folder, capsys):
    assert_refused(capsys, ["predict", str(tmp_path / "none.npz"), str(folder)], "no such model")
    np.savez(tmp_path / "other.npz", a=np.ones(2))
    assert_refused(capsys, ["predict", str(tmp_path / "other.npz"), str(folder)], "not a cnnlab model")
    assert_refused(capsys, ["filter", str(tmp_path / "none.png"), "--out", str(tmp_path / "o.png")],
                   "no such image")
    assert_refused(capsys, ["filter", str(folder / "vertical" / "notes.txt"), "--out", str(tmp_path / "o.png")],
                   "not a readable image")


def test_cli_train_plots_and_inspect(folder, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    model_path, plots, inspected = tmp_path / "m.npz", tmp_path / "plots", tmp_path / "inspect"
    with pytest.warns(UserWarning, match="skipped"):
        assert main(["train", str(folder), "--epochs", "2", "--size", "12", "--out", str(model_path),
                     "--device", "cpu", "--plots", str(plots)]) == 0
    shown = capsys.readouterr().out
    assert "confusion matrix on the validation images" in shown and "plots written" in shown
    expected = {"filters.png", "filters_layer3.png", "feature_maps.png", "history.png", "confusion_matrix.png"}
    assert {p.name for p in plots.iterdir()} == expected
    for path in plots.iterdir():
        image = io.imread(path)
        assert image.shape[0] > 100 and image.std() > 0

    assert main(["inspect", str(model_path), str(folder / "vertical" / "1.png"), "--out", str(inspected)]) == 0
    shown = capsys.readouterr().out
    assert "1.png: " in shown and "layer 2: MaxPool2D" in shown and "-> 32 x 6 x 6" in shown
    assert {p.name for p in inspected.iterdir()} == {"filters.png", "filters_layer3.png", "feature_maps.png"}
    assert io.imread(inspected / "feature_maps.png").std() > 0

    assert_refused(capsys, ["inspect", str(model_path), str(tmp_path / "none.png"), "--out", str(inspected)],
                   "no such image")
    assert_refused(capsys, ["inspect", str(model_path), str(folder / "vertical" / "notes.txt"),
                            "--out", str(inspected)], "not a readable image|cannot read")
    assert_refused(capsys, ["inspect", str(tmp_path / "none.npz"), str(folder / "vertical" / "1.png")],
                   "no such model")


def test_cli_transfer_from_a_trained_model(folder, tmp_path, capsys):
    base_path, tuned_path = tmp_path / "base.npz", tmp_path / "tuned.npz"
    with pytest.warns(UserWarning, match="skipped"):
        assert main(["train", str(folder), "--epochs", "2", "--size", "16", "--out", str(base_path),
                     "--device", "cpu"]) == 0
    new = tmp_path / "new"  # three new classes: fine stripes either way, and flat grey
    rng = np.random.default_rng(1)
    for name in ("across", "down", "flat"):
        (new / name).mkdir(parents=True)
        for i in range(6):
            image = stripes(rng, name == "across", 20) if name != "flat" else np.full((20, 20, 3), 90 + 3 * i, np.uint8)
            io.imsave(new / name / f"{i}.png", image, check_contrast=False)
    capsys.readouterr()
    assert main(["train", str(new), "--base", str(base_path), "--epochs", "2", "--out", str(tuned_path),
                 "--device", "cpu"]) == 0
    assert "layers 0-5 frozen, a new 3-class head" in capsys.readouterr().out
    base, tuned = cnnlab.load(base_path), cnnlab.load(tuned_path)
    assert tuned.class_names == ["across", "down", "flat"]
    assert tuned.output_shapes(tuned.input_shape)[-1] == (3,)
    assert tuned.preprocessing == dict(base.preprocessing)  # the base's size, colour and statistics
    for index in (0, 3):  # the convolutions stayed as the base learned them
        np.testing.assert_array_equal(tuned.layers[index].weight, base.layers[index].weight)
    assert not np.array_equal(tuned.layers[7].weight, base.layers[7].weight)  # the dense part learned

    assert_refused(capsys, ["train", str(new), "--base", str(base_path), "--size", "24"],
                   "--size 24 differs from the base model's 16")
    assert_refused(capsys, ["train", str(new), "--freeze", "3"], "--freeze needs --base")
    assert_refused(capsys, ["train", str(new), "--base", str(base_path), "--freeze", "12"], "only 11 layers")
    assert_refused(capsys, ["train", str(new), "--base", str(tmp_path / "none.npz")], "no such model")


def test_cli_train_needs_two_images_per_class(tmp_path, capsys):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        io.imsave(tmp_path / name / "0.png", np.full((8, 8), 200 if name == "a" else 30, np.uint8), check_contrast=False)
    io.imsave(tmp_path / "a" / "1.png", np.full((8, 8), 190, np.uint8), check_contrast=False)
    assert_refused(capsys, ["train", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "m.npz")],
                   "at least 2 images.*too few in: b ")


def test_plots_need_matplotlib(monkeypatch, folder, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    assert_refused(capsys, ["train", str(folder), "--epochs", "1", "--plots", str(tmp_path / "p"),
                            "--out", str(tmp_path / "m.npz")], "pip install 'cnnlab\\[viz\\]'")
    assert not (tmp_path / "m.npz").exists()  # refused before any training


def test_plots_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    from cnnlab import viz
    from cnnlab.applications import classic_cnn

    model = classic_cnn(1, 8, 3, (4, 6), 8, seed=0)
    x = np.random.default_rng(4).random((12, 1, 8, 8)).astype(np.float32)
    history = model.fit(x, np.arange(12) % 3, epochs=2, validation_data=(x, np.arange(12) % 3), verbose=0)
    paths = [
        viz.plot_filters(model.layers[0], tmp_path / "f.png"),
        viz.plot_feature_maps(model, x[0], tmp_path / "m.png"),
        viz.plot_history(history, tmp_path / "h.png"),
        viz.plot_confusion_matrix(np.array([[3, 1], [0, 4]]), ["a", "b"], tmp_path / "c.png"),
    ]
    for path in paths:
        image = io.imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0  # a real, non-blank picture


def test_replace_head_for_transfer():
    from cnnlab.applications import classic_cnn

    model = classic_cnn(1, 8, 5, (4, 6), 8, seed=0)
    base = [layer.weight.copy() for layer in model.layers[:4] if layer.params]
    model.replace_head(3, seed=1).freeze(up_to=7)
    assert model.output_shapes((1, 8, 8))[-1] == (3,)
    x = np.random.default_rng(5).random((9, 1, 8, 8)).astype(np.float32)
    model.fit(x, np.arange(9) % 3, epochs=2, verbose=0)
    for before, layer in zip(base, [layer for layer in model.layers[:4] if layer.params]):
        np.testing.assert_array_equal(layer.weight, before)


def test_copy_is_independent_of_the_original():
    from cnnlab.applications import classic_cnn

    model = classic_cnn(1, 8, 5, (4, 6), 8, seed=0)
    model.class_names = list("abcde")
    x = np.random.default_rng(6).random((10, 1, 8, 8)).astype(np.float32)
    model.fit(x, np.arange(10) % 5, epochs=1, verbose=0)
    model.layers[0].trainable = False
    before = model.predict_proba(x)
    twin = model.copy()
    np.testing.assert_array_equal(twin.predict_proba(x), before)
    assert twin.optimizer is None and twin.class_names == model.class_names
    assert [layer.trainable for layer in twin.layers] == [layer.trainable for layer in model.layers]
    twin.class_names.append("f")
    twin.replace_head(3, seed=1).unfreeze().fit(x, np.arange(10) % 3, epochs=2, verbose=0)
    np.testing.assert_array_equal(model.predict_proba(x), before)  # the original is untouched
    assert model.class_names == list("abcde") and not model.layers[0].trainable


def test_freeze_refuses_a_bad_up_to():
    from cnnlab.applications import classic_cnn

    model = classic_cnn(1, 8, 5, (4, 6), 8, seed=0)
    with pytest.raises(TypeError, match="up_to"):
        model.freeze(up_to="3")
    with pytest.raises(ValueError, match="up_to"):
        model.freeze(up_to=-1)
    with pytest.raises(ValueError, match="up_to"):
        model.freeze(up_to=len(model.layers) + 1)
    assert all(layer.trainable for layer in model.layers)


def _transfer_example():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "transfer_digits.py"
    spec = importlib.util.spec_from_file_location("transfer_digits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_transfer_example_command_line(monkeypatch, capsys):
    example = _transfer_example()
    monkeypatch.setattr("sys.argv", ["transfer_digits.py", "--seeds", "1", "--per-class", "2,3", "--steps", "4"])
    example.main()
    out = capsys.readouterr().out
    assert "seed 0, 3 per class: transferred" in out
    assert "2 per class, 1 seeds: transferred" in out and "from scratch" in out


def test_transfer_example_reuses_one_base_for_every_count():
    example = _transfer_example()
    images, labels = example.load()
    results = example.run(0, per_class=(2, 4), data=(images, labels))
    assert set(results) == {2, 4}
    for transferred, scratch in results.values():
        assert 0.2 < transferred <= 1 and 0.2 < scratch <= 1  # both learned something
    summary = example.summary([(0.9, 0.8), (0.7, 0.8), (0.5, 0.5)])
    assert (summary["wins"], summary["ties"], summary["losses"]) == (1, 1, 1)
    assert summary["difference"] == pytest.approx(0.0)
