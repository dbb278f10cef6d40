"""Losses: ``forward(prediction, targets) -> mean loss`` and ``backward() -> gradient``."""

from . import functional as F

__all__ = ["CrossEntropy", "MSE", "get"]


class CrossEntropy:
    """Softmax cross-entropy from logits, fused and stable: the mean over the batch of
    ``-log softmax(logits)[target]``.  Targets are class indices."""

    name = "cross_entropy"

    def __init__(self):
        self._saved = None
        self.probabilities = None

    def forward(self, logits, targets):
        loss, self.probabilities = F.cross_entropy(logits, targets)
        self._saved = targets
        return loss

    def backward(self):
        if self._saved is None:
            raise RuntimeError("CrossEntropy.backward() needs a preceding forward()")
        return F.cross_entropy_backward(self.probabilities, self._saved)


class MSE:
    """Mean squared error between a prediction and a target of the same shape."""

    name = "mse"

    def __init__(self):
        self._saved = None

    def forward(self, prediction, target):
        loss = F.mse(prediction, target)
        self._saved = prediction, target
        return loss

    def backward(self):
        if self._saved is None:
            raise RuntimeError("MSE.backward() needs a preceding forward()")
        return F.mse_backward(*self._saved)


def get(loss):
    """A loss object from a name (``'cross_entropy'``, ``'mse'``) or an instance."""
    if isinstance(loss, (CrossEntropy, MSE)):
        return loss
    names = {"cross_entropy": CrossEntropy, "mse": MSE}
    if loss not in names:
        raise ValueError(f"loss must be one of {sorted(names)} or a loss object, got {loss!r}")
    return names[loss]()
