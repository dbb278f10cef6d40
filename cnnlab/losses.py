"""Losses: ``forward(prediction, targets) -> mean loss`` and ``backward() -> gradient``.

Training and evaluation work with integer class labels, or with target rows (one-hot or class
probabilities, ``(N, classes)``) for a loss that takes them, and ask a loss only through the
methods of :class:`Loss`: what it compares the output with (:meth:`Loss.targets_for`), the
loss of a batch (:meth:`Loss.label_loss`), how many predictions are right
(:meth:`Loss.correct`) and one training step's loss and gradient (:meth:`Loss.train_batch`).
Whether it reads the logits before a final ``Softmax`` (:attr:`Loss.from_logits`), whether it
can weigh classes (:attr:`Loss.class_weighted`) and whether it takes target rows
(:attr:`Loss.categorical_targets`) are attributes of the loss, so a new loss needs no change
to the training loop.

>>> import numpy as np, cnnlab
>>> loss = cnnlab.losses.get("mse")
>>> loss.label_loss(np.array([[0.5, 0.5]]), np.array([1]))
0.25
"""

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from . import functional as F
from .device import is_gpu_array, to_device, to_host

__all__ = ["Loss", "CrossEntropy", "MSE", "BinaryCrossEntropy", "LOSSES", "get"]

Array = Any  # a NumPy array, or a Numba CUDA device array for a model on the GPU


def _on_device_of(array: Array, host: np.ndarray) -> Array:
    """``host`` on the device ``array`` lives on."""
    return to_device(np.ascontiguousarray(host)) if is_gpu_array(array) else host


def _classes_of(targets: np.ndarray) -> np.ndarray:
    """Each sample's class: the labels themselves, or each target row's largest entry."""
    return targets if targets.ndim == 1 else targets.argmax(axis=1)


def _rows_for(out: Array, labels: np.ndarray) -> np.ndarray:
    """Host target rows in ``out``'s dtype for ``out``'s ``(N, K)`` shape: the rows themselves,
    or one-hot rows of class labels (a column of 0/1 labels for one output)."""
    dtype = np.dtype(out.dtype)
    if labels.ndim == 2:
        return np.ascontiguousarray(labels, dtype=dtype)
    if out.shape[1] == 1:
        return labels.reshape(-1, 1).astype(dtype)
    rows = np.zeros((labels.shape[0], out.shape[1]), dtype=dtype)
    rows[np.arange(labels.shape[0]), labels] = 1
    return rows


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
    categorical_targets: bool = False
    """Whether the loss also takes target rows ``(N, classes)``, one-hot or class probabilities
    (Keras's categorical losses), besides integer class labels."""
    logits_activation: str = "softmax"
    """The activation a loss with :attr:`from_logits` applies itself: ``'softmax'`` (a final
    ``Softmax`` layer is then skipped in training and evaluation) or ``'sigmoid'``."""

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
        memory; target rows for a loss with :attr:`categorical_targets`), on ``out``'s device."""
        raise NotImplementedError

    def label_loss(self, out: Array, labels: np.ndarray) -> float:
        """The mean loss of ``out`` against the integer class ``labels`` (or target rows; host
        memory)."""
        return self.forward(out, self.targets_for(out, labels))

    def label_classes(self, outputs: int) -> int:
        """How many integer labels the loss takes for a model of ``outputs`` output units:
        labels lie in ``[0, label_classes(outputs))``. The number of outputs (one per class)."""
        return outputs

    def correct(self, out: Array, labels: np.ndarray) -> float:
        """How many of the batch's predictions are right (the sum behind ``accuracy``): samples
        whose largest output is their class (the label, or the target row's largest entry)."""
        return float((to_host(out).argmax(axis=1) == _classes_of(np.asarray(labels))).sum())

    def train_batch(self, out: Array, labels: Array, totals: Array, class_weights: Array | None = None) -> Array:
        """One training step's loss: adds the batch's loss sum and correct predictions to
        ``totals`` (two numbers on ``out``'s device) and returns the gradient of the mean loss
        with respect to ``out``. ``labels`` are integer class labels (or target rows) on ``out``'s
        device.

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
        host += (value * out.shape[0], self.correct(out, labels))
        if is_gpu_array(totals):
            totals.copy_to_device(host)
        else:
            totals[:] = host
        return self.backward()


class CrossEntropy(Loss):
    """Softmax cross-entropy from logits, fused and stable: the mean over the batch of
    ``-log softmax(logits)[target]``.

    Targets are class indices, or target rows ``(N, classes)``: one-hot rows give the same loss
    and gradient as their indices, and rows of class probabilities (soft targets) give
    ``-sum_k t_k log softmax(logits)_k`` (Keras's categorical cross-entropy).

    Parameters
    ----------
    label_smoothing : float in [0, 1], default 0
        Train against ``(1 - s) * one_hot + s / classes`` instead of the one-hot targets
        (PyTorch's ``label_smoothing``; target rows are smoothed the same way).
    """

    name = "cross_entropy"
    from_logits = True
    class_weighted = True
    categorical_targets = True

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = F.check_label_smoothing(label_smoothing)
        self.probabilities = None

    def forward(self, logits: Array, targets: Array) -> float:
        loss, self.probabilities = F.cross_entropy(logits, targets, self.label_smoothing)
        self._saved = targets
        return loss

    def backward(self) -> Array:
        if self._saved is None:
            raise RuntimeError("CrossEntropy.backward() needs a preceding forward()")
        return F.cross_entropy_backward(self.probabilities, self._saved, self.label_smoothing)

    def targets_for(self, out: Array, labels: np.ndarray) -> Array:
        """The labels (or target rows, in ``out``'s dtype) themselves, on ``out``'s device."""
        if labels.ndim == 2:
            labels = np.ascontiguousarray(labels, dtype=np.dtype(out.dtype))
        return _on_device_of(out, labels)

    def train_batch(self, logits: Array, labels: Array, totals: Array, class_weights: Array | None = None) -> Array:
        """Per-sample losses and their sums on the logits' device (no copy to the host); with
        ``class_weights`` ((classes,), on that device) each sample's loss and gradient weigh
        ``class_weights[label]`` (for target rows, the class of the row's largest entry)."""
        smoothing = self.label_smoothing
        if F.is_target_rows(labels) or smoothing:
            losses, probabilities, classes = F.soft_cross_entropy_per_sample(logits, labels, smoothing, class_weights)
        elif class_weights is None:
            losses, probabilities = F.cross_entropy_per_sample(logits, labels)
            classes = labels
        else:
            losses, probabilities = F.weighted_cross_entropy_per_sample(logits, labels, class_weights)
            classes = labels
        if not is_gpu_array(losses) and not np.all(np.isfinite(losses)):  # free to check on the host
            raise FloatingPointError("the loss became non-finite: lower the learning rate")
        F.add_classification_totals(losses, probabilities, classes, totals)
        if class_weights is None:
            return F.cross_entropy_backward(probabilities, labels, smoothing)
        return F.weighted_cross_entropy_backward(probabilities, labels, class_weights, smoothing)


class MSE(Loss):
    """Mean squared error between a prediction and a target of the same shape; against
    integer labels, the targets are one-hot rows (target rows are used as they are)."""

    name = "mse"
    categorical_targets = True

    def forward(self, prediction: Array, target: Array) -> float:
        loss = F.mse(prediction, target)
        self._saved = prediction, target
        return loss

    def backward(self) -> Array:
        if self._saved is None:
            raise RuntimeError("MSE.backward() needs a preceding forward()")
        return F.mse_backward(*self._saved)

    def targets_for(self, out: Array, labels: np.ndarray) -> Array:
        """One-hot rows of ``labels`` (or the target rows) in ``out``'s dtype, on ``out``'s device."""
        rows = np.zeros((labels.shape[0], out.shape[1]), dtype=np.dtype(out.dtype))
        if labels.ndim == 2:
            rows[:] = labels
        else:
            rows[np.arange(labels.shape[0]), labels] = 1
        return _on_device_of(out, rows)


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy, the mean over every output (Keras's ``binary_crossentropy``), for
    a model of one output unit (two classes: labels 0 and 1) or for independent 0/1 targets
    per output (multi-label: target rows).

    Parameters
    ----------
    from_logits : bool, default False
        False: the model's outputs are probabilities (end it with ``Sigmoid``); they are
        clipped to ``[1e-7, 1 - 1e-7]`` before the logarithm, so the loss stays finite. True:
        the outputs are logits (no final activation) and the loss applies the sigmoid itself,
        stable for logits of any size.

    Targets: labels 0/1 ``(N,)`` for one output unit; for several outputs one-hot rows of class
    labels, or target rows ``(N, outputs)`` of 0/1 labels or probabilities. ``accuracy`` is
    Keras's binary accuracy: the fraction of outputs on the target's side of 0.5 (of 0 for
    logits), averaged over the outputs of each sample.
    """

    name = "binary_crossentropy"
    categorical_targets = True
    logits_activation = "sigmoid"

    def __init__(self, from_logits: bool = False) -> None:
        super().__init__()
        if not isinstance(from_logits, (bool, np.bool_)):
            raise TypeError(f"from_logits must be True or False, got {from_logits!r}")
        self.from_logits = bool(from_logits)

    def forward(self, prediction: Array, target: Array) -> float:
        loss = F.binary_cross_entropy(prediction, target, self.from_logits)
        self._saved = prediction, target
        return loss

    def backward(self) -> Array:
        if self._saved is None:
            raise RuntimeError("BinaryCrossEntropy.backward() needs a preceding forward()")
        return F.binary_cross_entropy_backward(*self._saved, self.from_logits)

    def label_classes(self, outputs: int) -> int:
        """Two labels (0 and 1) for one output unit; one per output otherwise."""
        return 2 if outputs == 1 else outputs

    def targets_for(self, out: Array, labels: np.ndarray) -> Array:
        """A column of the 0/1 labels for one output, else one-hot rows of the labels (or the
        target rows), in ``out``'s dtype, on ``out``'s device."""
        return _on_device_of(out, _rows_for(out, labels))

    def correct(self, out: Array, labels: np.ndarray) -> float:
        """Keras's binary accuracy summed over the batch: per sample, the fraction of outputs on
        the same side of the threshold (0.5, or 0 for logits) as their target is of 0.5."""
        out = to_host(out)
        threshold = 0.0 if self.from_logits else 0.5
        rows = _rows_for(out, np.asarray(labels))
        return float(((out > threshold) == (rows > 0.5)).mean(axis=1).sum())


#: the losses by name (what :func:`get` and ``fit(loss=...)`` take): cnnlab's names and Keras's
LOSSES: dict[str, Callable[[], Loss]] = {
    "cross_entropy": CrossEntropy,
    "categorical_crossentropy": CrossEntropy,
    "sparse_categorical_crossentropy": CrossEntropy,
    "mse": MSE,
    "mean_squared_error": MSE,
    "binary_crossentropy": BinaryCrossEntropy,
}


def get(loss: str | Loss) -> Loss:
    """A loss object from a name (:data:`LOSSES`: ``'cross_entropy'``, ``'mse'``,
    ``'binary_crossentropy'`` and Keras's ``'categorical_crossentropy'``,
    ``'sparse_categorical_crossentropy'``, ``'mean_squared_error'``) or an instance.

    ``ValueError`` listing the names for an unknown one, ``TypeError`` for anything else."""
    if isinstance(loss, Loss):
        return loss
    if not isinstance(loss, str):
        raise TypeError(f"loss must be a name ({', '.join(LOSSES)}) or a cnnlab.losses.Loss, "
                        f"got {type(loss).__name__}")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {', '.join(LOSSES)} or a loss object, got {loss!r}")
    return LOSSES[loss]()
