"""Top-k accuracy: the metric by hand, ties, its checks, and ``evaluate(top_k=...)``."""

import numpy as np
import pytest
from test_model import digits, small_cnn  # noqa: F401 - digits is a fixture

from cnnlab import optim
from cnnlab.metrics import top_k_accuracy, top_k_correct


def test_top_k_accuracy_by_hand():
    scores = np.array([[0.1, 0.6, 0.3],    # classes by score: 1, 2, 0
                       [0.5, 0.2, 0.3],    # 0, 2, 1
                       [0.2, 0.2, 0.6]])   # 2, then 0 and 1 tied
    labels = np.array([2, 2, 1])           # each the second most likely (the last one tied)
    assert top_k_accuracy(scores, labels, k=1) == 0.0
    assert top_k_accuracy(scores, labels, k=2) == 1.0  # the tie at the boundary counts for the label
    assert top_k_correct(scores, labels, 2) == 3
    assert top_k_accuracy(scores, np.array([1, 2, 2]), k=1) == 2 / 3
    assert top_k_accuracy(scores, np.eye(3)[labels], k=2) == 1.0  # one-hot rows: their largest entry
    assert top_k_accuracy(np.log(scores), labels, k=2) == 1.0  # any scores in the same order
    rng = np.random.default_rng(0)
    many, truth = rng.random((50, 6)), rng.integers(0, 6, 50)
    assert top_k_accuracy(many, truth, 1) == np.mean(many.argmax(axis=1) == truth)
    assert top_k_accuracy(many, truth, 6) == 1.0


@pytest.mark.parametrize("call, error, words", [
    (lambda: top_k_accuracy(np.ones((2, 3)), [0, 1], 4), ValueError, r"at most the number of classes \(3\), got 4"),
    (lambda: top_k_accuracy(np.ones((2, 3)), [0, 1], 0), ValueError, "k must be >= 1"),
    (lambda: top_k_accuracy(np.ones((2, 3)), [0, 1], 1.5), TypeError, "k must be an integer"),
    (lambda: top_k_accuracy(np.ones((2, 3)), [0, 3], 1), ValueError, r"labels must lie in \[0, 3\)"),
    (lambda: top_k_accuracy(np.ones((2, 3)), [0, 1, 2], 1), ValueError, r"\(2,\) integer class labels"),
    (lambda: top_k_accuracy(np.ones(3), [0], 1), ValueError, r"\(N, classes\)"),
])
def test_bad_top_k_arguments(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_evaluate_adds_the_top_k_accuracy(digits):  # noqa: F811
    x, y = digits
    model = small_cnn()
    model.fit(x, y, epochs=1, batch_size=32, optimizer=optim.SGD(0.05), seed=0, verbose=0)
    scores = model.evaluate(x, y, batch_size=50, top_k=2)
    assert set(scores) == {"loss", "accuracy", "top_2_accuracy"}
    assert scores["top_2_accuracy"] == pytest.approx(top_k_accuracy(model.predict_proba(x), y, 2))
    assert scores["top_2_accuracy"] >= scores["accuracy"]
    assert model.evaluate(x, y, top_k=1)["top_1_accuracy"] == pytest.approx(scores["accuracy"])
    assert model.evaluate(x, y, top_k=3)["top_3_accuracy"] == 1.0
    assert set(model.evaluate(x, y)) == {"loss", "accuracy"}  # only when asked
    with pytest.raises(ValueError, match=r"top_k must be at most the number of classes \(3\), got 4"):
        model.evaluate(x, y, top_k=4)
    with pytest.raises(ValueError, match="batch_size"):
        model.evaluate(x, y, batch_size=0)
