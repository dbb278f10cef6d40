"""Sequential: training, evaluation, saving, checkpoints, interrupts, and bad input."""

import json
import os
import signal

import numpy as np
import pytest

import cnnlab
from cnnlab import layers as L
from cnnlab import optim


def small_cnn(seed=0, dtype=None, dropout=0.0, batch_norm=False):
    layers = [L.Conv2D(1, 4, 3, padding=1, seed=seed)]
    if batch_norm:
        layers.append(L.BatchNorm2D(4))
    layers += [L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.Dense(4 * 4 * 4, 16, seed=seed + 1), L.ReLU()]
    if dropout:
        layers.append(L.Dropout(dropout))
    layers += [L.Dense(16, 3, seed=seed + 2), L.Softmax()]
    return cnnlab.Sequential(layers, input_shape=(1, 8, 8), dtype=dtype)


@pytest.fixture(scope="module")
def digits():
    """The first three classes of scikit-learn's digits, as 1x8x8 images in [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    keep = data.target < 3
    x = (data.images[keep] / 16.0).astype(np.float32)[:, None]
    return x[:240], data.target[keep][:240].astype(np.int64)


def weights(model):
    return [layer.params[name].copy() for layer, name in model.parameters(trainable_only=False)]


def test_fit_lowers_the_loss_and_learns(digits):
    x, y = digits
    model = small_cnn()
    before = model.evaluate(x, y)
    history = model.fit(x, y, epochs=4, batch_size=16, optimizer=optim.Adam(3e-3), seed=0, verbose=0,
                        validation_data=(x[:60], y[:60]))
    assert history.history["loss"][-1] < history.history["loss"][0] < before["loss"]
    assert set(history.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
    assert len(history.history["loss"]) == 4
    assert model.evaluate(x, y)["accuracy"] > 0.9
    probabilities = model.predict_proba(x[:5])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(model.predict(x[:5]), probabilities.argmax(axis=1))


def test_fit_with_squared_error_on_one_hot_rows(digits):
    x, y = digits
    model = small_cnn()
    history = model.fit(x, y, epochs=3, batch_size=16, loss="mse", optimizer=optim.Adam(3e-3), seed=0,
                        verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.8
    assert model.evaluate(x, y, loss="mse")["loss"] < history.history["loss"][0]


def test_fit_is_reproducible_with_a_seed(digits):
    x, y = digits
    runs = []
    for _ in range(2):
        model = small_cnn(dropout=0.3)
        model.fit(x, y, epochs=2, batch_size=32, optimizer=optim.SGD(0.05, momentum=0.9), seed=5, verbose=0)
        runs.append(weights(model))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_progress_bar_and_quiet_mode(digits, capsys):
    x, y = digits
    model = small_cnn()
    model.fit(x[:64], y[:64], epochs=2, batch_size=32, verbose=1, seed=0)
    shown = capsys.readouterr().out
    assert "epoch 1/2" in shown and "epoch 2/2" in shown and "samples/s" in shown and "loss" in shown
    model.fit(x[:64], y[:64], epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_save_and_load_give_identical_predictions(digits, tmp_path):
    x, y = digits
    model = small_cnn(dtype="float64", batch_norm=True, dropout=0.2)
    model.class_names = ["zero", "one", "two"]
    model.fit(x, y, epochs=1, batch_size=32, seed=0, verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = cnnlab.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert loaded.class_names == ["zero", "one", "two"]
    assert loaded.summary(print_fn=None) == model.summary(print_fn=None)
    assert not [f for f in os.listdir(tmp_path) if f != "model.npz"]  # no temporary left behind
    with np.load(path, allow_pickle=False) as archive:  # a plain npz: JSON + arrays, no pickle
        assert json.loads(str(archive["architecture"]))["layers"][0]["type"] == "Conv2D"


def test_loading_something_else_is_a_clear_error(tmp_path):
    np.savez(tmp_path / "other.npz", a=np.ones(3))
    with pytest.raises(ValueError, match="not a cnnlab model"):
        cnnlab.load(tmp_path / "other.npz")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(ValueError, match="not a cnnlab model"):
        cnnlab.load(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        cnnlab.load(tmp_path / "missing.npz")
    model = small_cnn()
    model.save(tmp_path / "model.npz")
    with np.load(tmp_path / "model.npz", allow_pickle=False) as archive:
        arrays = dict(archive)
    arrays["param/0/weight"] = np.ones((2, 2))
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(ValueError, match="wrong shape"):
        cnnlab.load(tmp_path / "broken.npz")


def test_frozen_layers_do_not_change(digits):
    x, y = digits
    model = small_cnn()
    model.layers[0].trainable = False
    frozen = model.layers[0].weight.copy()
    trained = model.layers[4].weight.copy()
    model.fit(x, y, epochs=1, batch_size=32, seed=0, verbose=0)
    np.testing.assert_array_equal(model.layers[0].weight, frozen)
    assert not np.array_equal(model.layers[4].weight, trained)
    assert "Non-trainable parameters: 40" in model.summary(print_fn=None)
    model.unfreeze().freeze(up_to=3)
    assert [layer.trainable for layer in model.layers[:4]] == [False, False, False, True]


def test_resume_from_checkpoint_matches_an_uninterrupted_run(digits, tmp_path):
    x, y = digits
    straight = small_cnn(dropout=0.25)
    straight.fit(x, y, epochs=3, batch_size=32, optimizer=optim.Adam(2e-3), seed=3, verbose=0)

    first = small_cnn(dropout=0.25)
    first.fit(x, y, epochs=1, batch_size=32, optimizer=optim.Adam(2e-3), seed=3, verbose=0,
              checkpoint=tmp_path / "ckpt.npz")
    resumed = small_cnn(dropout=0.25, seed=99)  # different initial weights: all come from the file
    history = resumed.fit(x, y, epochs=3, batch_size=32, seed=3, verbose=0, resume=tmp_path / "ckpt.npz",
                          checkpoint=tmp_path / "ckpt.npz")
    assert len(history.history["loss"]) == 3
    for a, b in zip(weights(straight), weights(resumed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert cnnlab.load(tmp_path / "ckpt.npz").predict(x[:4]).shape == (4,)


class InterruptAt(L.Layer):
    """A pass-through layer that sends the process Ctrl-C during a chosen backward pass."""

    def __init__(self, step):
        super().__init__()
        self.step, self.calls = step, 0

    def forward(self, x, training=False):
        return x

    def backward(self, grad_out):
        self.calls += 1
        if self.calls == self.step:
            os.kill(os.getpid(), signal.SIGINT)
        return grad_out

    def config(self):
        return {"step": self.step}


def test_interrupt_finishes_the_step_and_keeps_the_checkpoint_valid(digits, tmp_path):
    x, y = digits

    def model_with(extra):
        base = small_cnn()
        return cnnlab.Sequential(base.layers[:4] + [extra] + base.layers[4:], input_shape=(1, 8, 8))

    reference = model_with(L.Flatten())
    reference.fit(x[:96], y[:96], epochs=1, batch_size=32, shuffle=False, seed=0, verbose=0)  # 3 steps
    interrupted = model_with(InterruptAt(step=3 + 3))  # the third step of the second epoch
    path = tmp_path / "ckpt.npz"
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(x[:96], y[:96], epochs=3, batch_size=32, shuffle=False, seed=0, verbose=0,
                        checkpoint=path)
    with np.load(path, allow_pickle=False) as checkpoint:  # the checkpoint holds epoch 1, complete
        for index, layer in enumerate(reference.layers):
            for name, value in layer.params.items():
                np.testing.assert_allclose(checkpoint[f"param/{index}/{name}"], value, rtol=1e-6)
    assert interrupted.optimizer.steps == 6  # the interrupted step was completed, then training stopped


@pytest.mark.parametrize("bad, error, words", [
    (dict(y=np.array([0, 1, 5] * 10)), ValueError, r"y must lie in \[0, 3\)"),
    (dict(y=np.array([0.5, 1, 2] * 10)), TypeError, "integer class"),
    (dict(y=np.array(["a", "b", "c"] * 10)), TypeError, "integer class"),
    (dict(y=np.zeros(29, dtype=int)), ValueError, "same length"),
    (dict(x=np.zeros((30, 1, 10, 10), np.float32)), ValueError, "does not fit layer 4"),
    (dict(x=np.zeros((30, 3, 8, 8), np.float32)), ValueError, "does not fit layer 0"),
    (dict(x=np.full((30, 1, 8, 8), np.nan, np.float32)), ValueError, "NaN or infinite"),
    (dict(x=np.full((30, 1, 8, 8), np.inf, np.float32)), ValueError, "NaN or infinite"),
    (dict(x=np.zeros((30, 1, 8, 8), np.uint8)), TypeError, "normalize"),
    (dict(x="images"), TypeError, "x must be an array"),
    (dict(epochs=0), ValueError, "epochs"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(loss="hinge"), ValueError, "loss"),
    (dict(validation_data=(np.zeros((4, 1, 8, 8), np.float32), np.array([0, 1, 2, 9]))), ValueError, "validation y"),
])
def test_bad_fit_input_is_refused_before_any_step(bad, error, words):
    model = small_cnn()
    before = weights(model)
    arguments = dict(x=np.zeros((30, 1, 8, 8), np.float32), y=np.array([0, 1, 2] * 10), epochs=1, verbose=0)
    arguments.update(bad)
    with pytest.raises(error, match=words):
        model.fit(**arguments)
    for a, b in zip(before, weights(model)):
        np.testing.assert_array_equal(a, b)
    assert model.optimizer is None or model.optimizer.steps == 0


def test_bad_predict_input():
    model = small_cnn()
    with pytest.raises(ValueError, match="does not fit"):
        model.predict(np.zeros((2, 1, 7, 7), np.float32))
    with pytest.raises(TypeError, match="host"):
        model.predict(cnnlab.to_device(np.zeros((2, 1, 8, 8), np.float32)))
    with pytest.raises(ValueError, match="device"):
        model.to("gpu")


def test_summary_lists_shapes_and_parameter_counts():
    text = small_cnn().summary(print_fn=None)
    assert "(None, 4, 8, 8)" in text and "(None, 4, 4, 4)" in text and "(None, 64)" in text
    total = 4 * 9 + 4 + 64 * 16 + 16 + 16 * 3 + 3
    assert f"Total parameters: {total:,}" in text
    assert "Param #" in text
    lazy = cnnlab.Sequential([L.Flatten(), L.Dense(12, 2)])
    assert "(None, 2)" in lazy.summary(input_shape=(3, 2, 2), print_fn=None)


def test_training_on_the_gpu_matches_the_cpu(digits):
    x, y = digits
    x, y = x[:48], y[:48]
    cpu = small_cnn(dtype="float64")
    gpu = small_cnn(dtype="float64").to("cuda")
    for model in (cpu, gpu):
        model.fit(x, y, epochs=1, batch_size=16, optimizer=optim.SGD(0.1, momentum=0.9), seed=1, verbose=0)
    assert gpu.optimizer.state[0]["velocity"].__class__ is not np.ndarray  # state stayed on the device
    gpu.to("cpu")
    for a, b in zip(weights(cpu), weights(gpu)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_copy_of_a_gpu_model_stays_on_the_gpu(digits):
    x, _ = digits
    gpu = small_cnn(dtype="float64").to("cuda")
    twin = gpu.copy()
    assert twin.device == "cuda" and twin.layers[0].params["weight"].__class__ is not np.ndarray
    np.testing.assert_array_equal(twin.predict_proba(x[:4]), gpu.predict_proba(x[:4]))
