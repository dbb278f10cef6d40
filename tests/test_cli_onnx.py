"""The command line takes networks exported to ONNX: predict with one, or transfer from it."""

import numpy as np
import pytest

pytest.importorskip("onnx")

from test_cli_errors import write_folder  # noqa: E402

import cnnlab  # noqa: E402
import cnnlab.onnx  # noqa: E402
from cnnlab.cli import main  # noqa: E402
from cnnlab.cli.models import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from cnnlab.layers import Conv2D, Dense, GlobalAvgPool2D, ReLU  # noqa: E402


@pytest.fixture
def onnx_file(tmp_path):
    """A small network exported to ONNX, as torch.onnx.export would give one: 3x8x8 RGB in, logits out."""
    model = cnnlab.Sequential([Conv2D(3, 4, 3, padding=1, seed=0), ReLU(), GlobalAvgPool2D(), Dense(4, 5, seed=1)],
                              input_shape=(3, 8, 8))
    path = tmp_path / "net.onnx"
    cnnlab.onnx.save(model, path)
    return path, model


def test_predict_with_an_onnx_file_uses_the_imagenet_normalization(onnx_file, tmp_path, capsys):
    path, model = onnx_file
    photos = write_folder(tmp_path / "photos")
    assert main(["predict", str(path), str(photos / "dark" / "0.png"), "--json"]) == 0
    captured = capsys.readouterr()
    assert "ImageNet mean and std" in captured.err
    import json

    guess = json.loads(captured.out)["results"][0]["predictions"][0]
    image = cnnlab.data.read_image(photos / "dark" / "0.png", 8)[None]
    x, _, _ = cnnlab.data.standardize(image, IMAGENET_MEAN, IMAGENET_STD)
    probabilities = model.predict_proba(x)[0]
    assert guess["label"] == str(int(np.argmax(probabilities)))
    assert guess["probability"] == pytest.approx(float(probabilities.max()), rel=1e-5)


def test_train_from_an_onnx_base(onnx_file, tmp_path, capsys):
    path, base = onnx_file
    photos = write_folder(tmp_path / "photos")
    out = tmp_path / "tuned.npz"
    assert main(["train", str(photos), "--base", str(path), "--epochs", "2", "--batch-size", "4",
                 "--out", str(out)]) == 0
    assert "transferring from" in capsys.readouterr().out
    tuned = cnnlab.load(out)
    assert tuned.preprocessing["size"] == [8, 8] and tuned.preprocessing["mean"] == IMAGENET_MEAN
    assert tuned.class_names == ["dark", "light"]
    convolution = next(layer for layer in tuned.layers if isinstance(layer, Conv2D))
    np.testing.assert_array_equal(convolution.weight, base.layers[0].weight)  # the frozen base kept
