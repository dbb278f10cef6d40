"""Sequential: training, evaluation, saving, checkpoints, interrupts, and bad input."""

import json
import os
import signal

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
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


def test_a_loss_of_your_own_trains_through_the_loss_interface(digits):
    class Squared(cnnlab.losses.Loss):
        """Squared error in NumPy: the base class's training step, no change to the loop."""

        name = "squared"

        def forward(self, prediction, target):
            self._saved = prediction, target
            return float(np.mean((prediction.astype(np.float64) - target) ** 2))

        def backward(self):
            prediction, target = self._saved
            return (2 * (prediction - target) / prediction.size).astype(prediction.dtype)

        def targets_for(self, out, labels):
            return cnnlab.losses.MSE().targets_for(out, labels)

    x, y = digits
    runs = [small_cnn().fit(x, y, epochs=2, batch_size=16, loss=loss, optimizer=optim.SGD(0.5), seed=0, verbose=0)
            for loss in ("mse", Squared())]
    np.testing.assert_allclose(runs[1].history["loss"], runs[0].history["loss"], rtol=1e-4)
    with pytest.raises(ValueError, match="cross-entropy"):
        small_cnn().fit(x, y, loss=Squared(), class_weight="balanced", verbose=0)


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
    (dict(validation_split=0.2, validation_data=(np.zeros((3, 1, 8, 8), np.float32), [0, 1, 2])), ValueError,
     "not both"),
    (dict(validation_split=1.5), ValueError, "validation_split"),
    (dict(x=np.zeros((3, 1, 8, 8), np.float32), y=[0, 1, 2], validation_split=0.1), ValueError,
     "leaves 3 to train on and 0"),
    (dict(class_weight="heavy"), ValueError, "'balanced'"),
    (dict(class_weight=[1, 2, 3]), TypeError, "class_weight"),
    (dict(class_weight={5: 1.0}), ValueError, r"key 5.*\[0, 3\)"),
    (dict(class_weight={0: -1.0}), ValueError, r"class_weight\[0\]"),
    (dict(class_weight={0: 2.0}, loss="mse"), ValueError, "cross-entropy"),
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


def test_validation_split_holds_out_a_seeded_stratified_part_before_shuffling(digits):
    from cnnlab.data import train_test_split

    x, y = digits
    x, y = x[:90], y[:90]
    split = small_cnn().fit(x, y, epochs=2, batch_size=16, seed=4, verbose=0, validation_split=0.2)
    train, held_out, _, _ = train_test_split(np.arange(90), y, test_size=0.2, seed=4)
    train = np.sort(train)
    given = small_cnn().fit(x[train], y[train], epochs=2, batch_size=16, seed=4, verbose=0,
                            validation_data=(x[held_out], y[held_out]))
    assert split.history["val_loss"] == given.history["val_loss"]
    assert split.history["loss"] == given.history["loss"]
    assert np.bincount(y[held_out]).tolist() == [6, 6, 6]  # each class in proportion


def test_class_weights_weigh_the_loss_and_its_gradient():
    from naive import numeric_gradient

    rng = np.random.default_rng(0)
    logits, targets = rng.normal(size=(5, 3)), np.array([0, 2, 1, 2, 0])
    class_weights = np.array([2.0, 0.5, 3.0])
    loss, probabilities = F.weighted_cross_entropy(logits, targets, class_weights)
    plain, _ = F.cross_entropy_per_sample(logits, targets)
    assert loss == pytest.approx(np.mean(class_weights[targets] * plain))
    expected = numeric_gradient(lambda: F.weighted_cross_entropy(logits, targets, class_weights)[0], logits)
    np.testing.assert_allclose(F.weighted_cross_entropy_backward(probabilities, targets, class_weights), expected,
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="one weight per class"):
        F.weighted_cross_entropy(logits, targets, [1.0, 2.0])
    with pytest.raises(ValueError, match="finite"):
        F.weighted_cross_entropy(logits, targets, [1.0, np.nan, 1.0])


def test_class_weights_on_the_gpu_match_the_cpu():
    rng = np.random.default_rng(1)
    logits, targets = rng.normal(size=(7, 4)), rng.integers(0, 4, 7)
    class_weights = np.array([1.0, 0.25, 4.0, 2.0])
    losses, probabilities = F.weighted_cross_entropy_per_sample(logits, targets, class_weights)
    device_losses, device_probabilities = F.weighted_cross_entropy_per_sample(
        cnnlab.to_device(logits), cnnlab.to_device(targets.astype(np.int64)), class_weights)
    np.testing.assert_allclose(cnnlab.to_host(device_losses), losses, rtol=1e-12)
    grad = F.weighted_cross_entropy_backward(probabilities, targets, class_weights)
    device_grad = F.weighted_cross_entropy_backward(device_probabilities, cnnlab.to_device(targets.astype(np.int64)),
                                                    cnnlab.to_device(class_weights))
    np.testing.assert_allclose(cnnlab.to_host(device_grad), grad, rtol=1e-12)


def test_a_heavier_class_is_predicted_more(digits):
    x, y = digits
    probabilities = []
    for class_weight in (None, {0: 8.0}):
        model = small_cnn()
        model.fit(x, y, epochs=1, batch_size=32, optimizer=optim.SGD(0.05), seed=0, verbose=0,
                  class_weight=class_weight)
        probabilities.append(model.predict_proba(x)[:, 0].mean())
    assert probabilities[1] > probabilities[0] + 0.05


def test_balanced_class_weights_follow_scikit_learns_rule(digits):
    x, y = digits
    x, y = x[:50], np.r_[np.zeros(30, int), np.ones(15, int), np.full(5, 2)]
    rule = {c: 50 / (3 * n) for c, n in enumerate([30, 15, 5])}
    runs = []
    for class_weight in ("balanced", rule):
        model = small_cnn()
        model.class_names = ["zero", "one", "two"]
        model.fit(x, y, epochs=1, batch_size=16, seed=0, verbose=0, class_weight=class_weight)
        runs.append(weights(model))
    named = small_cnn()
    named.class_names = ["zero", "one", "two"]
    named.fit(x, y, epochs=1, batch_size=16, seed=0, verbose=0,
              class_weight={"zero": rule[0], "one": rule[1], 2: rule[2]})
    runs.append(weights(named))
    for a, b, c in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-6)
        np.testing.assert_allclose(a, c, rtol=1e-6)


def test_weighted_training_on_the_gpu_matches_the_cpu(digits):
    x, y = digits
    x, y = x[:24], y[:24]
    cpu = small_cnn(dtype="float64")
    gpu = small_cnn(dtype="float64").to("cuda")
    for model in (cpu, gpu):
        model.fit(x, y, epochs=1, batch_size=12, optimizer=optim.SGD(0.1), seed=1, verbose=0,
                  class_weight={1: 3.0})
    gpu.to("cpu")
    for a, b in zip(weights(cpu), weights(gpu)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def write_images(folder, count):
    from skimage import io

    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        paths.append(folder / f"{i}.png")
        io.imsave(paths[-1], (rng.random((10, 12)) * 255).astype(np.uint8), check_contrast=False)
    return paths


def test_predict_files_reads_and_standardizes_as_saved(tmp_path):
    from cnnlab.data import read_image, standardize

    model = small_cnn()
    model.class_names = ["zero", "one", "two"]
    model.preprocessing = dict(size=[8, 8], color="gray", mean=[0.5], std=[0.25])
    paths = write_images(tmp_path, 3)
    results = model.predict_files(paths, top_k=2)
    images = np.stack([read_image(p, (8, 8), "gray") for p in paths])
    expected = model.predict_proba(standardize(images, [0.5], [0.25])[0])
    assert [r["file"] for r in results] == [str(p) for p in paths]
    for result, row in zip(results, expected):
        best = int(row.argmax())
        assert result["label"] == model.class_names[best] and result["index"] == best
        assert result["probability"] == pytest.approx(row[best])
        assert len(result["top_k"]) == 2 and result["top_k"][0] == (result["label"], result["probability"])
        assert result["top_k"][1][1] <= result["top_k"][0][1]
    assert model.predict_files(paths[0])[0]["file"] == str(paths[0])  # one path is a list of one
    with pytest.raises(ValueError, match="top_k"):
        model.predict_files(paths, top_k=4)


def test_predict_files_passes_the_saved_resize_mode(tmp_path, monkeypatch):
    import cnnlab.data

    calls = []

    def fake_read_image(path, size, color="rgb", **keywords):
        calls.append(keywords)
        return np.zeros((1, *size), np.float32)

    monkeypatch.setattr(cnnlab.data, "read_image", fake_read_image)
    model = small_cnn()
    model.preprocessing = dict(size=[8, 8], color="gray", mean=[0.0], std=[1.0])
    model.predict_files(["a.png"])
    model.preprocessing["resize"] = "crop"
    model.predict_files(["a.png"])
    assert calls == [{}, {"resize": "crop"}]


def test_predict_files_without_preprocessing_says_how_to_set_it(tmp_path):
    with pytest.raises(ValueError, match=r"model\.preprocessing = dict\(size="):
        small_cnn().predict_files(write_images(tmp_path, 1))


def test_length_indexing_and_repr():
    model = small_cnn()
    assert len(model) == len(model.layers) == 8
    assert model[0] is model.layers[0] and model[-1] is model.layers[-1]
    assert model[1:3] == model.layers[1:3] and isinstance(model[1:3], list)
    with pytest.raises(TypeError, match="index"):
        model["conv"]
    assert repr(model) == "Sequential(8 layers, input_shape=(1, 8, 8), parameters=1,131, device='cpu')"


def test_one_image_without_its_batch_axis_gets_a_hint(digits):
    x, y = digits
    hint = "x has shape (1, 8, 8); the model takes a batch (N, 1, 8, 8): pass x[None] for one image"
    model = small_cnn()
    for call in (lambda: model.predict(x[0]), lambda: model.predict_proba(x[0]),
                 lambda: model.evaluate(x[0], y[:1]), lambda: model.fit(x[0], y[:1], verbose=0)):
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value) == hint
    with pytest.raises(ValueError, match=r"pass x\[:, None\] to add the channel axis"):
        model.predict(x[:5, 0])
    lazy = cnnlab.Sequential([L.Conv2D(1, 2, 3), L.Flatten()])
    with pytest.raises(ValueError, match=r"batch \(N, 1, H, W\): pass x\[None\]"):
        lazy.predict(x[0])


def test_progress_leaves_compile_time_out_of_the_rate_and_eta():
    from cnnlab.callbacks import ProgbarLogger

    now, compiled = [0.0], [1.0]
    progress = ProgbarLogger(clock=lambda: now[0])
    progress.set_params(dict(epochs=1, samples=300, batch_size=100, compiling=lambda: compiled[0]))
    progress.on_epoch_begin(0, {})
    now[0], compiled[0] = 10.0, 9.0  # 8 of the 10 seconds went to compiling
    line = progress._line(100, 0.5, 0.25, final=False)
    assert "50 samples/s" in line and "ETA 4.0s" in line  # 100 samples in 2 s of running
    assert "10.0s" in progress._line(300, 0.5, 0.25, final=True)


def test_predict_infers_the_layer_shapes_once_per_image_shape_and_set_of_layers(monkeypatch):
    model = small_cnn()
    calls = []
    original = model.output_shapes
    monkeypatch.setattr(model, "output_shapes", lambda shape: calls.append(tuple(shape)) or original(shape))
    x = np.zeros((2, 1, 8, 8), np.float32)
    model.predict(x)
    model.predict(x[:1])
    assert calls == [(1, 8, 8)]
    model.replace_head(5)  # another layer: checked again
    assert model.predict(x).shape == (2,)
    assert calls == [(1, 8, 8)] * 2
    for _ in range(2):  # a misfit is refused every time, not remembered
        with pytest.raises(ValueError, match="does not fit layer 0"):
            model.predict(np.zeros((1, 3, 8, 8), np.float32))
    assert len(calls) == 4
