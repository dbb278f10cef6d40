"""cnnlab train streams its folder (cnnlab.data.ImageFolder): the split, the statistics, the
weights, the messages and the saved model are those of the in-memory pipeline it replaced, and
no more than a batch of images is in memory at a time."""

import io
import os
import threading

import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab import data
from cnnlab.applications import classic_cnn
from cnnlab.callbacks import EarlyStopping
from cnnlab.cli import main
from cnnlab.prefetch import THREAD_NAME


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of noisy colour casts, and three files that are not readable images (one of
    them with a header that reads: only decoding finds it)."""
    root = tmp_path_factory.mktemp("casts")
    rng = np.random.default_rng(3)
    for k, name in enumerate(("blue", "green", "red")):
        os.makedirs(root / name)
        for i in range(12 + 2 * k):
            pixels = rng.integers(0, 200, (10, 12, 3), dtype=np.uint8)
            pixels[:, :, 2 - k] += 55
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    (root / "red" / "notes.txt").write_text("not an image")
    (root / "green" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / "blue" / "cut.jpg").write_bytes(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    return root


def in_memory_pipeline(folder, epochs, seed, augment, validation=0.2):
    """What cnnlab train did before it streamed: load every image, split, standardize, fit."""
    with pytest.warns(UserWarning, match="skipped 3 file"):
        images, labels, names = data.load_image_folder(folder, size=(8, 8))
    x_train, x_val, y_train, y_val = data.train_test_split(images, labels, test_size=validation, seed=seed)
    x_train, mean, std = data.standardize(x_train)
    x_val, _, _ = data.standardize(x_val, mean, std)
    model = classic_cnn(3, 8, len(names), seed=seed)
    model.fit(x_train, y_train, epochs=epochs, batch_size=8, optimizer=cnnlab.optim.Adam(1e-3),
              validation_data=(x_val, y_val), seed=seed, augment=augment, verbose=0,
              callbacks=[EarlyStopping(monitor="val_accuracy", patience=None, restore_best_weights=True)])
    return model, mean, std, len(x_val)


@pytest.mark.parametrize("augment", [False, True])
def test_train_streams_to_the_model_the_in_memory_pipeline_gave(folder, tmp_path, capsys, monkeypatch, augment):
    expected, mean, std, held_out = in_memory_pipeline(folder, epochs=3, seed=5, augment=augment)
    read = []
    real_read_batch = data.ImageFolder.read_batch

    def read_batch(self, indices, *args, **kwargs):
        read.append(len(indices))
        return real_read_batch(self, indices, *args, **kwargs)

    monkeypatch.setattr(data.ImageFolder, "read_batch", read_batch)
    monkeypatch.setattr(data, "load_image_folder", None)  # the folder is never loaded whole
    out = tmp_path / "casts.npz"
    with pytest.warns(UserWarning) as caught:
        assert main(["train", str(folder), "--epochs", "3", "--size", "8", "--batch-size", "8", "--seed", "5",
                     "--out", str(out), "--device", "cpu"] + (["--augment"] if augment else [])) == 0
    skipped = [str(warning.message) for warning in caught if "skipped" in str(warning.message)]
    assert len(skipped) == 1 and skipped[0].startswith("skipped 3 file(s) that are not readable images")
    shown = capsys.readouterr().out
    assert "42 images of 3 classes (blue 12, green 14, red 16), resized (stretch) to 8x8 rgb" in shown
    assert f"on {held_out} held-out images" in shown and "epoch 3/3" in shown
    assert read and max(read) <= 256  # batches of 8 to train, of 256 to validate; never the folder

    model = cnnlab.load(out)
    assert model.class_names == ["blue", "green", "red"]
    np.testing.assert_allclose(model.preprocessing["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(model.preprocessing["std"], std, rtol=1e-12)
    got, want = model.get_weights(), expected.get_weights()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert [t for t in threading.enumerate() if t.name.startswith(THREAD_NAME)] == []


def test_transfer_uses_the_base_models_statistics_without_computing_any(folder, tmp_path, monkeypatch):
    base_path = tmp_path / "base.npz"
    with pytest.warns(UserWarning):
        assert main(["train", str(folder), "--epochs", "1", "--size", "8", "--out", str(base_path),
                     "--device", "cpu"]) == 0
    base = cnnlab.load(base_path)
    monkeypatch.setattr(data.ImageFolder, "statistics", None)
    out = tmp_path / "transferred.npz"
    with pytest.warns(UserWarning):
        assert main(["train", str(folder), "--epochs", "1", "--base", str(base_path), "--out", str(out),
                     "--device", "cpu"]) == 0
    assert cnnlab.load(out).preprocessing["mean"] == base.preprocessing["mean"]
