"""Losses: ``forward(prediction, targets) -> mean loss`` and ``backward() -> gradient``.

Training and evaluation work with integer class labels and ask a loss only through the
methods of :class:`Loss`: what it compares the output with (:meth:`Loss.targets_for`), the
loss of a batch (:meth:`Loss.label_loss`) and one training step's loss and gradient
(:meth:`Loss.train_batch`). Whether it reads the logits before a final ``Softmax``
(:attr:`Loss.from_logits`) and whether it can weigh classes (:attr:`Loss.class_weighted`)
are attributes of the loss, so a new loss needs no change to the training loop.

>>> import numpy as np, cnnlab
>>> loss = cnnlab.losses.get("mse")
>>> loss.label_loss(np.array([[0.5, 0.5]]), np.array([1]))
0.25
"""

import math
from typing import Any

import numpy as np

from . import functional as F
from .device import is_gpu_array, to_device, to_host

__all__ = ["Loss", "CrossEntropy", "MSE", "get"]

Array = Any  # a NumPy array, or a Numba CUDA device array for a model on the GPU


def _on_device_of(array: Array, host: np.ndarray) -> Array:
    """``host`` on the device ``array`` lives on."""
    return to_device(np.ascontiguousarray(host)) if is_gpu_array(array) else host


class Loss:
    """Base class: a loss between a model's output and targets, with what training asks of it.

    Subclasses implement :meth:`forward`, :meth:`backward` and :meth:`targets_for`; the
    training step :meth:`train_batch` works from those, and a loss with a fused kernel (such as
    :class:`CrossEntropy`) overrides it."""

    name: str = "loss"
    from_logits: bool = False
    """Whether the loss reads the logits before a model's final ``Softmax`` (applying softmax
    itself, fused): training and evaluation then skip that layer."""
    class_weighted: bool = False
    """Whether :meth:`train_batch` can weigh each sample by its class (``fit(class_weight=...)``)."""

    def __init__(self) -> None:
        self._saved = None

    def forward(self, prediction: Array, targets: Array) -> float:
        """The mean loss over the batch; keeps what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self) -> Array:
        """The gradient of the last :meth:`forward`'s loss with respect to its prediction."""
        raise NotImplementedError

    def targets_for(self, out: Array, labels: np.ndarray) -> Array:
        """What :meth:`forward` compares ``out`` with for the integer class ``labels`` (host
        memory), on ``out``'s device."""
        raise NotImplementedError

    def label_loss(self, out: Array, labels: np.ndarray) -> float:
        """The mean loss of ``out`` against the integer class ``labels`` (host memory)."""
        return self.forward(out, self.targets_for(out, labels))

    def train_batch(self, out: Array, labels: Array, totals: Array, class_weights: Array | None = None) -> Array:
        """One training step's loss: adds the batch's loss sum and correct predictions to
        ``totals`` (two numbers on ``out``'s device) and returns the gradient of the mean loss
        with respect to ``out``. ``labels`` are integer class labels on ``out``'s device.

        Raises
        ------
        FloatingPointError
            When the loss is not finite (the learning rate is too high).
        ValueError
            For ``class_weights`` with a loss that is not :attr:`class_weighted`.
        """
        if class_weights is not None:
            raise ValueError(f"class_weight works with the cross-entropy loss, got loss={self.name!r}")
        labels = to_host(labels)
        value = self.forward(out, self.targets_for(out, labels))
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss became {value}: lower the learning rate")
        host = to_host(totals).copy()
        host += (value * out.shape[0], int((to_host(out).argmax(axis=1) == labels).sum()))
        if is_gpu_array(totals):
            totals.copy_to_device(host)
        else:
            totals[:] = host
        return self.backward()


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits, fused and stable: the mean over the batch of
    ``-log softmax(logits)[target]``.  Targets are class indices."""

    name = "cross_entropy"
    from_logits = True
    class_weighted = True

    def __init__(self) -> None:
        super().__init__()
        self.probabilities = None

    def forward(self, logits: Array, targets: Array) -> float:
        loss, self.probabilities = F.cross_entropy(logits, targets)
        self._saved = targets
        return loss

    def backward(self) -> Array:
        if self._saved is None:
            raise RuntimeError("CrossEntropy.backward() needs a preceding forward()")
        return F.cross_entropy_backward(self.probabilities, self._saved)

    def targets_for(self, out: Array, labels: np.ndarray) -> Array:
        """The labels themselves, on ``out``'s device."""
        return _on_device_of(out, labels)

    def train_batch(self, logits: Array, labels: Array, totals: Array, class_weights: Array | None = None) -> Array:
        """Per-sample losses and their sums on the logits' device (no copy to the host); with
        ``class_weights`` ((classes,), on that device) each sample's loss and gradient weigh
        ``class_weights[label]``."""
        if class_weights is None:
            losses, probabilities = F.cross_entropy_per_sample(logits, labels)
        else:
            losses, probabilities = F.weighted_cross_entropy_per_sample(logits, labels, class_weights)
        if not is_gpu_array(losses) and not np.all(np.isfinite(losses)):  # free to check on the host
            raise FloatingPointError("the loss became non-finite: lower the learning rate")
        F.add_classification_totals(losses, probabilities, labels, totals)
        if class_weights is None:
            return F.cross_entropy_backward(probabilities, labels)
        return F.weighted_cross_entropy_backward(probabilities, labels, class_weights)


class MSE(Loss):
    """Mean squared error between a prediction and a target of the same shape; against
    integer labels, the targets are one-hot rows."""

    name = "mse"

    def forward(self, prediction: Array, target: Array) -> float:
        loss = F.mse(prediction, target)
        self._saved = prediction, target
        return loss

    def backward(self) -> Array:
        if self._saved is None:
            raise RuntimeError("MSE.backward() needs a preceding forward()")
        return F.mse_backward(*self._saved)

    def targets_for(self, out: Array, labels: np.ndarray) -> Array:
        """One-hot rows of ``labels`` in ``out``'s dtype, on ``out``'s device."""
        rows = np.zeros((labels.shape[0], out.shape[1]), dtype=np.dtype(out.dtype))
        rows[np.arange(labels.shape[0]), labels] = 1
        return _on_device_of(out, rows)


def get(loss: str | Loss) -> Loss:
    """A loss object from a name (``'cross_entropy'``, ``'mse'``) or an instance."""
    if isinstance(loss, Loss):
        return loss
    names = {"cross_entropy": CrossEntropy, "mse": MSE}
    if loss not in names:
        raise ValueError(f"loss must be one of {sorted(names)} or a loss object, got {loss!r}")
    return names[loss]()
