"""Scoring a classifier's predictions: the confusion matrix and its plain-text table.

>>> import numpy as np
>>> from cnnlab.metrics import confusion_matrix
>>> confusion_matrix(np.array([0, 0, 1]), np.array([0, 1, 1]), 2)
array([[1, 1],
       [0, 1]])
"""

import numpy as np

__all__ = ["confusion_matrix", "format_confusion"]


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
