"""Scoring a classifier's predictions: the confusion matrix and its plain-text table, and
top-k accuracy.

>>> import numpy as np
>>> from cnnlab.metrics import confusion_matrix, top_k_accuracy
>>> confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 2)
array([[1, 1],
       [0, 1]])
>>> top_k_accuracy(np.array([[0.5, 0.3, 0.2], [0.1, 0.3, 0.6]]), np.array([1, 0]), k=2)
0.5
"""

from typing import Any

import numpy as np

from .shapes import check_int

__all__ = ["confusion_matrix", "format_confusion", "top_k_accuracy", "top_k_correct"]


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """The ``(classes, classes)`` int64 counts: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    return matrix


def format_confusion(matrix: np.ndarray, names: list[str]) -> str:
    """A confusion matrix as a text table, one row per true class, the columns lined up."""
    corner = "true \\ predicted"
    label = max(len(corner), max(len(n) for n in names)) + 2
    width = max(5, max(len(n) for n in names) + 1, len(str(matrix.max())) + 1)
    lines = [corner.ljust(label) + "".join(n.rjust(width) for n in names)]
    for name, row in zip(names, matrix):
        lines.append(name.ljust(label) + "".join(str(v).rjust(width) for v in row))
    return "\n".join(lines)


def top_k_correct(probabilities: Any, labels: Any, k: int) -> int:
    """How many samples have their class among the ``k`` highest scores (see
    :func:`top_k_accuracy`)."""
    scores = np.asarray(probabilities)
    if scores.ndim != 2 or scores.dtype.kind not in "biuf":
        raise ValueError(f"probabilities must be an (N, classes) array of scores, got shape {scores.shape} "
                         f"and dtype {scores.dtype}")
    samples, classes = scores.shape
    k = check_int("k", k, 1)
    if k > classes:
        raise ValueError(f"k must be at most the number of classes ({classes}), got {k}")
    labels = np.asarray(labels)
    if labels.ndim == 2:
        if labels.shape != scores.shape:
            raise ValueError(f"labels as rows must have the shape of probabilities {scores.shape}, got {labels.shape}")
        labels = labels.argmax(axis=1)
    if labels.shape != (samples,) or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be ({samples},) integer class labels or ({samples}, {classes}) rows, "
                         f"got shape {labels.shape} and dtype {labels.dtype}")
    if samples and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must lie in [0, {classes}), got values from {labels.min()} to {labels.max()}")
    own = scores[np.arange(samples), labels]
    higher = (scores > own[:, None]).sum(axis=1)
    return int((higher < k).sum())


def top_k_accuracy(probabilities: Any, labels: Any, k: int = 5) -> float:
    """The fraction of samples whose class is among the ``k`` highest of their scores (Keras's
    ``top_k_categorical_accuracy``; scikit-learn's ``top_k_accuracy_score``).

    Parameters
    ----------
    probabilities : (N, classes) array
        Class probabilities, or any scores in the same order (logits).
    labels : (N,) integer class labels, or (N, classes) one-hot or probability rows (their
        largest entry is the class)
    k : int, default 5
        At most ``classes``; ``k=1`` is the ordinary accuracy.

    A tie at the boundary counts in the label's favour: a sample is right when fewer than
    ``k`` classes score strictly higher than its own (``tf.math.in_top_k``'s rule).
    """
    count = top_k_correct(probabilities, labels, k)
    return count / max(np.asarray(probabilities).shape[0], 1)
