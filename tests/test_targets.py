"""One-hot and probability targets in fit and evaluate (Keras's categorical cross-entropy),
label smoothing in training, and binary cross-entropy on a binary classifier."""

import numpy as np
import pytest
import test_losses
import test_model
from test_model import small_cnn, weights

import cnnlab
from cnnlab import optim

digits = test_model.digits  # the fixture, shared with test_model


def test_one_hot_labels_train_and_evaluate_exactly_as_their_indices(digits):
    x, y = digits
    rows = np.eye(3, dtype=np.float32)[y]
    runs = []
    for targets, validation in ((y, y[:40]), (rows, rows[:40])):
        model = small_cnn()
        history = model.fit(x, targets, epochs=2, batch_size=32, seed=0, verbose=0, validation_data=(x[:40], validation))
        runs.append((history.history, weights(model), model.evaluate(x, targets)))
    assert runs[1][0]["loss"] == pytest.approx(runs[0][0]["loss"], rel=1e-6)
    assert runs[1][0]["val_accuracy"] == runs[0][0]["val_accuracy"]
    for a, b in zip(runs[0][1], runs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert runs[1][2] == pytest.approx(runs[0][2], rel=1e-6)
    model = small_cnn()
    model.fit(x, rows, epochs=1, seed=0, verbose=0, validation_split=0.25, class_weight="balanced")
    assert model.evaluate(x, rows, loss="mse")["accuracy"] == model.evaluate(x, y, loss="mse")["accuracy"]


def test_soft_targets_and_label_smoothing_train(digits):
    x, y = digits
    soft = np.full((len(y), 3), 0.05, np.float32)
    soft[np.arange(len(y)), y] = 0.9
    model = small_cnn()
    history = model.fit(x, soft, epochs=3, batch_size=16, optimizer=optim.Adam(3e-3), seed=0, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.evaluate(x, y)["accuracy"] > 0.9
    smoothed = small_cnn()
    smoothed.fit(x, y, epochs=3, batch_size=16, optimizer=optim.Adam(3e-3), seed=0, verbose=0,
                 loss=cnnlab.losses.CrossEntropy(label_smoothing=0.1))
    assert smoothed.evaluate(x, y)["accuracy"] > 0.9
    # (1 - 0.15) * one-hot + 0.15 / 3 is those soft rows: the same training
    same = small_cnn()
    same.fit(x, y, epochs=3, batch_size=16, optimizer=optim.Adam(3e-3), seed=0, verbose=0,
             loss=cnnlab.losses.CrossEntropy(label_smoothing=0.15))
    for a, b in zip(weights(model), weights(same)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rows, error, words", [
    (np.zeros((30, 4), np.float32), ValueError, r"shape \(30, 4\): one-hot or probability rows need one column per "
                                                r"class \(3"),
    (np.zeros((30, 1), np.int64), ValueError, r"for class labels pass y.ravel\(\)"),
    (np.full((30, 3), 2.0), ValueError, r"in \[0, 1\], got values from 2.0"),
    (np.full((30, 3), np.nan), ValueError, "NaN"),
    (np.full((30, 3), "a"), TypeError, "one-hot rows"),
])
def test_bad_target_rows_are_refused_before_any_step(rows, error, words):
    model = small_cnn()
    with pytest.raises(error, match=words):
        model.fit(np.zeros((30, 1, 8, 8), np.float32), rows, verbose=0)
    assert model.optimizer is None


def test_a_loss_without_target_rows_says_so():
    class Labels(cnnlab.losses.MSE):
        categorical_targets = False

    x, rows = np.zeros((6, 1, 8, 8), np.float32), np.eye(3)[[0, 1, 2] * 2]
    with pytest.raises(ValueError, match=r"y has shape \(6, 3\): the loss 'mse' takes \(6,\) integer class labels "
                                         r"\(for one-hot rows pass y.argmax\(axis=1\)\)"):
        small_cnn().fit(x, rows, loss=Labels(), verbose=0)


def test_one_hot_training_on_the_gpu_matches_the_cpu(digits):
    x, y = digits
    x, rows = x[:24], np.eye(3)[y[:24]]
    cpu = small_cnn(dtype="float64")
    gpu = small_cnn(dtype="float64").to("cuda")
    for model in (cpu, gpu):
        model.fit(x, rows, epochs=1, batch_size=12, optimizer=optim.SGD(0.1), seed=1, verbose=0,
                  loss=cnnlab.losses.CrossEntropy(label_smoothing=0.1), class_weight={1: 2.0})
    assert gpu.evaluate(x, rows) == pytest.approx(cpu.evaluate(x, rows), rel=1e-9)
    gpu.to("cpu")
    for a, b in zip(weights(cpu), weights(gpu)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_a_binary_classifier_learns_with_binary_crossentropy():
    from sklearn.datasets import load_digits

    from cnnlab import layers as L

    data = load_digits()
    keep = data.target < 2
    x, y = (data.images[keep] / 16.0).astype(np.float32)[:, None], data.target[keep]
    for loss, head in (("binary_crossentropy", [L.Sigmoid()]), (cnnlab.losses.BinaryCrossEntropy(from_logits=True), [])):
        model = cnnlab.Sequential([L.Conv2D(1, 4, 3, padding=1, seed=0), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                                   L.Dense(64, 1, seed=1)] + head, input_shape=(1, 8, 8))
        history = model.fit(x, y, epochs=3, batch_size=16, optimizer=cnnlab.optim.Adam(1e-2), loss=loss, seed=0,
                            verbose=0)
        assert history.history["loss"][-1] < history.history["loss"][0]
        scores = model.evaluate(x, y)
        assert scores["accuracy"] > 0.95 and scores["loss"] == pytest.approx(
            test_losses.bce_reference(model.forward(x), y[:, None].astype(np.float32), not head), rel=1e-4)
