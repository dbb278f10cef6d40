"""Losses: cross-entropy (weighted or not, against class indices or target rows, with label
smoothing), binary cross-entropy, mean squared error, and their gradients."""

from __future__ import annotations

import functools
import math
import numbers

import numpy as np

from ..device import is_gpu_array, kernels_for, to_device, to_host
from ..types import Array
from .common import as_float_array, check_grad


def as_targets(name: str, targets: Array, samples: int, classes: int) -> Array:
    """Check class-index targets: integers in ``[0, classes)``, one per sample; int64 result."""
    if is_gpu_array(targets):
        if np.dtype(targets.dtype) != np.int64 or tuple(targets.shape) != (samples,):
            raise TypeError(f"{name} on the GPU must be int64 of shape ({samples},), "
                            f"got {targets.dtype} {tuple(targets.shape)}")
        return targets
    if isinstance(targets, (str, bytes)):
        raise TypeError(f"{name} must be integer class indices, got {type(targets).__name__}")
    targets = np.asarray(targets)
    if targets.dtype.kind == "f" and targets.size and np.all(np.isfinite(targets)) \
            and np.all(targets == np.round(targets)):
        targets = targets.astype(np.int64)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer class indices, got dtype {targets.dtype}")
    if targets.shape != (samples,):
        raise ValueError(f"{name} must have shape ({samples},) (one label per sample), got {targets.shape}")
    if targets.size and (targets.min() < 0 or targets.max() >= classes):
        raise ValueError(f"{name} must lie in [0, {classes}) for {classes} classes, "
                         f"got values from {targets.min()} to {targets.max()}")
    return np.ascontiguousarray(targets, dtype=np.int64)


def cross_entropy(logits: Array, targets: Array, label_smoothing: float = 0.0) -> tuple[float, Array]:
    """Mean softmax cross-entropy of ``(N, K)`` logits, fused and stable, as
    ``torch.nn.functional.cross_entropy``.

    ``targets`` are class indices ``(N,)`` or target rows ``(N, K)`` (one-hot or class
    probabilities: Keras's categorical cross-entropy). ``label_smoothing`` in ``[0, 1]`` mixes
    the targets with the uniform distribution first, ``(1 - s) * target + s / K`` (PyTorch's
    definition).

    Returns
    -------
    loss : float
        ``mean(-sum_k t[n, k] log softmax(logits)[n, k])``; for class indices and no smoothing
        ``mean(-log softmax(logits)[n, targets[n]])``.
    probabilities : (N, K) array
        ``softmax(logits)``, kept for :func:`cross_entropy_backward`.

    See Also
    --------
    cnnlab.kernels.cpu.loss.cross_entropy_forward, cnnlab.kernels.cpu.loss.soft_cross_entropy_forward,
    torch.nn.functional.cross_entropy
    """
    losses, probabilities = cross_entropy_per_sample(logits, targets, label_smoothing)
    return float(np.mean(to_host(losses), dtype=np.float64)), probabilities


def is_target_rows(targets: Array) -> bool:
    """Whether ``targets`` are ``(N, K)`` target rows (one-hot or probabilities) rather than
    ``(N,)`` class indices."""
    return len(getattr(targets, "shape", np.shape(targets))) == 2


def check_label_smoothing(label_smoothing: float) -> float:
    """``label_smoothing`` as a float in ``[0, 1]`` (``ValueError`` or ``TypeError`` naming it)."""
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    return float(label_smoothing)


def as_target_rows(name: str, targets: Array, samples: int, classes: int, dtype: np.dtype) -> Array:
    """Check target rows: ``(samples, classes)`` finite values, as ``dtype`` (on the GPU they must
    be of that dtype already)."""
    if is_gpu_array(targets):
        if np.dtype(targets.dtype) != np.dtype(dtype) or tuple(targets.shape) != (samples, classes):
            raise TypeError(f"{name} on the GPU must be {np.dtype(dtype)} of shape ({samples}, {classes}), "
                            f"got {targets.dtype} {tuple(targets.shape)}")
        return targets
    targets = np.asarray(targets)
    if targets.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numbers (one-hot rows or class probabilities), got dtype {targets.dtype}")
    if targets.shape != (samples, classes):
        raise ValueError(f"{name} must have shape ({samples}, {classes}) (one row of {classes} class "
                         f"probabilities per sample), got {targets.shape}")
    if not np.all(np.isfinite(targets)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(targets, dtype=dtype)


@functools.lru_cache(maxsize=8)
def _identity_on_gpu(classes, dtype):
    return to_device(np.eye(classes, dtype=dtype))


def one_hot(labels: Array, classes: int, dtype: np.dtype) -> Array:
    """``(N, classes)`` one-hot rows of the int64 class ``labels``, on their device."""
    if is_gpu_array(labels):
        return gather_rows(_identity_on_gpu(int(classes), np.dtype(dtype).str), labels)
    return np.eye(classes, dtype=dtype)[np.asarray(labels)]


def soft_cross_entropy_per_sample(logits: Array, targets: Array, label_smoothing: float = 0.0,
                                  class_weights: Array | None = None) -> tuple[Array, Array, Array]:
    """The general cross-entropy: per-sample losses, the softmax, and each sample's class (the
    index, or the target row's largest entry: what accuracy compares with), all left on the
    logits' device.

    ``targets`` are class indices ``(N,)`` or target rows ``(N, K)``; ``label_smoothing`` as
    :func:`cross_entropy`; with ``class_weights`` ((K,)) each loss is weighed by its sample's
    class (Keras's rule for one-hot targets: the class is the row's largest entry).
    """
    logits = as_float_array("logits", logits, ndim=2)
    samples, classes = logits.shape
    smoothing = check_label_smoothing(label_smoothing)
    kernels = kernels_for(logits=logits, targets=targets)  # class weights may come from the host
    if is_target_rows(targets):
        rows = kernels.asarray(as_target_rows("targets", targets, samples, classes, logits.dtype))
    else:
        labels = kernels.asarray(as_targets("targets", targets, samples, classes))
        rows = kernels.asarray(one_hot(labels, classes, logits.dtype))
    losses = kernels.empty((samples,), logits.dtype)
    probabilities = kernels.empty(logits.shape, logits.dtype)
    labels = kernels.empty((samples,), np.int64)
    kernels.soft_cross_entropy_forward(kernels.asarray(logits), rows, smoothing, losses, probabilities, labels)
    if class_weights is not None:
        kernels.weight_losses_by_class(losses, labels, _class_weights(kernels, class_weights, classes, logits.dtype))
    return losses, probabilities, labels


def _soft_backward(probabilities, targets, label_smoothing, class_weights):
    """The gradient of :func:`soft_cross_entropy_per_sample`'s mean loss with respect to the logits."""
    probabilities = as_float_array("probabilities", probabilities, ndim=2)
    samples, classes = probabilities.shape
    smoothing = check_label_smoothing(label_smoothing)
    kernels = kernels_for(probabilities=probabilities, targets=targets)  # class weights may come from the host
    if is_target_rows(targets):
        rows = kernels.asarray(as_target_rows("targets", targets, samples, classes, probabilities.dtype))
    else:
        rows = one_hot(kernels.asarray(as_targets("targets", targets, samples, classes)), classes,
                       probabilities.dtype)
    weights = (kernels.ones((classes,), probabilities.dtype) if class_weights is None
               else _class_weights(kernels, class_weights, classes, probabilities.dtype))
    grad = kernels.empty(probabilities.shape, probabilities.dtype)
    kernels.soft_cross_entropy_backward(kernels.asarray(probabilities), kernels.asarray(rows), weights, smoothing,
                                        grad, 1.0 / samples)
    return grad


def cross_entropy_per_sample(logits: Array, targets: Array, label_smoothing: float = 0.0) -> tuple[Array, Array]:
    """Per-sample cross-entropy losses and the softmax, both left on the logits' device
    (no host copy: what a training step on the GPU needs); ``targets`` and
    ``label_smoothing`` as :func:`cross_entropy`."""
    if is_target_rows(targets) or label_smoothing:
        losses, probabilities, _ = soft_cross_entropy_per_sample(logits, targets, label_smoothing)
        return losses, probabilities
    logits = as_float_array("logits", logits, ndim=2)
    kernels = kernels_for(logits=logits, targets=targets)
    targets = kernels.asarray(as_targets("targets", targets, logits.shape[0], logits.shape[1]))
    losses = kernels.empty((logits.shape[0],), logits.dtype)
    probabilities = kernels.empty(logits.shape, logits.dtype)
    kernels.cross_entropy_forward(kernels.asarray(logits), targets, losses, probabilities)
    return losses, probabilities


def add_classification_totals(losses: Array, probabilities: Array, targets: Array, totals: Array) -> None:
    """Add a batch's loss sum and number of correct predictions to the float64 pair ``totals``
    (all on one device)."""
    kernels = kernels_for(losses=losses, probabilities=probabilities, targets=targets, totals=totals)
    kernels.classification_totals(kernels.asarray(losses), kernels.asarray(probabilities),
                                  kernels.asarray(targets), kernels.asarray(totals))


def gather_rows(source: Array, index: Array) -> Array:
    """``source[index]`` for the first axis, on ``source``'s device (``index`` int64 there too)."""
    kernels = kernels_for(source=source, index=index)
    samples = index.shape[0]
    shape = (samples,) + tuple(source.shape[1:])
    width = int(np.prod(source.shape[1:], dtype=np.int64))
    out = kernels.empty(shape, source.dtype)
    kernels.gather_rows(kernels.asarray(source).reshape(source.shape[0], width), kernels.asarray(index),
                        out.reshape(samples, width))
    return out


def cross_entropy_backward(probabilities: Array, targets: Array, label_smoothing: float = 0.0) -> Array:
    """Gradient of the mean cross-entropy with respect to the logits: ``(softmax - one_hot) / N``;
    for target rows and label smoothing (as :func:`cross_entropy`) ``(softmax * sum(t) - t) / N``
    with ``t`` the smoothed target rows."""
    if is_target_rows(targets) or label_smoothing:
        return _soft_backward(probabilities, targets, label_smoothing, None)
    probabilities = as_float_array("probabilities", probabilities, ndim=2)
    kernels = kernels_for(probabilities=probabilities, targets=targets)
    targets = kernels.asarray(as_targets("targets", targets, *probabilities.shape))
    grad = kernels.empty(probabilities.shape, probabilities.dtype)
    kernels.cross_entropy_backward(kernels.asarray(probabilities), targets, grad, 1.0 / probabilities.shape[0])
    return grad


def mse(prediction: Array, target: Array) -> float:
    """Mean squared error; returns the loss as a float."""
    prediction = as_float_array("prediction", prediction)
    target = check_grad("target", target, prediction.shape, prediction.dtype)
    kernels = kernels_for(prediction=prediction, target=target)
    losses = kernels.empty(prediction.shape, prediction.dtype)
    kernels.mse_forward(kernels.asarray(prediction).reshape(-1), kernels.asarray(target).reshape(-1),
                        losses.reshape(-1))
    return float(np.mean(to_host(losses), dtype=np.float64))


def mse_backward(prediction: Array, target: Array) -> Array:
    """Gradient of the mean squared error with respect to ``prediction``."""
    prediction = as_float_array("prediction", prediction)
    target = check_grad("target", target, prediction.shape, prediction.dtype)
    kernels = kernels_for(prediction=prediction, target=target)
    grad = kernels.empty(prediction.shape, prediction.dtype)
    size = int(np.prod(prediction.shape))
    kernels.mse_backward(kernels.asarray(prediction).reshape(-1), kernels.asarray(target).reshape(-1),
                         grad.reshape(-1), 1.0 / size)
    return grad


def _class_weights(kernels, class_weights, classes, dtype):
    """``class_weights`` checked ((K,), finite, >= 0) and cast to ``dtype`` on the kernels' device."""
    if is_gpu_array(class_weights):
        if tuple(class_weights.shape) != (classes,) or np.dtype(class_weights.dtype) != np.dtype(dtype):
            raise TypeError(f"class_weights on the GPU must be {np.dtype(dtype)} of shape ({classes},), "
                            f"got {class_weights.dtype} {tuple(class_weights.shape)}")
        return kernels.asarray(class_weights)
    weights = as_float_array("class_weights", np.asarray(class_weights, dtype=np.float64), ndim=1)
    if weights.shape != (classes,):
        raise ValueError(f"class_weights must have one weight per class, shape ({classes},), "
                         f"got {weights.shape}")
    if not np.all(np.isfinite(weights)) or weights.min() < 0:
        raise ValueError(f"class_weights must be finite and >= 0, got {weights.tolist()}")
    weights = weights.astype(dtype)
    return to_device(weights) if kernels.DEVICE == "cuda" else weights


def weighted_cross_entropy_per_sample(logits: Array, targets: Array, class_weights: Array,
                                      label_smoothing: float = 0.0) -> tuple[Array, Array]:
    """Per-sample cross-entropy times the weight of each sample's class, and the softmax, both
    left on the logits' device.

    ``class_weights`` is ``(K,)``: sample ``n`` weighs ``class_weights[targets[n]]`` (for target
    rows, the class of the row's largest entry); ``targets`` and ``label_smoothing`` as
    :func:`cross_entropy`.
    """
    if is_target_rows(targets) or label_smoothing:
        losses, probabilities, _ = soft_cross_entropy_per_sample(logits, targets, label_smoothing, class_weights)
        return losses, probabilities
    losses, probabilities = cross_entropy_per_sample(logits, targets)
    kernels = kernels_for(logits=logits, targets=targets)
    targets = kernels.asarray(as_targets("targets", targets, *probabilities.shape))
    weights = _class_weights(kernels, class_weights, probabilities.shape[1], probabilities.dtype)
    kernels.weight_losses_by_class(losses, targets, weights)
    return losses, probabilities


def weighted_cross_entropy(logits: Array, targets: Array, class_weights: Array,
                           label_smoothing: float = 0.0) -> tuple[float, Array]:
    """Class-weighted softmax cross-entropy: ``sum(w[t_n] * loss_n) / N`` (Keras' rule for
    ``class_weight``), and the softmax for :func:`weighted_cross_entropy_backward`.

    See Also
    --------
    cross_entropy, torch.nn.functional.cross_entropy (``weight=``, which divides by the sum of
    the weights instead of N)
    """
    losses, probabilities = weighted_cross_entropy_per_sample(logits, targets, class_weights, label_smoothing)
    return float(np.mean(to_host(losses), dtype=np.float64)), probabilities


def weighted_cross_entropy_backward(probabilities: Array, targets: Array, class_weights: Array,
                                    label_smoothing: float = 0.0) -> Array:
    """Gradient of :func:`weighted_cross_entropy` with respect to the logits:
    ``w[t_n] * (softmax - one_hot) / N`` (target rows and label smoothing as
    :func:`cross_entropy_backward`)."""
    if is_target_rows(targets) or label_smoothing:
        return _soft_backward(probabilities, targets, label_smoothing, class_weights)
    probabilities = as_float_array("probabilities", probabilities, ndim=2)
    kernels = kernels_for(probabilities=probabilities, targets=targets)
    targets = kernels.asarray(as_targets("targets", targets, *probabilities.shape))
    weights = _class_weights(kernels, class_weights, probabilities.shape[1], probabilities.dtype)
    grad = kernels.empty(probabilities.shape, probabilities.dtype)
    kernels.weighted_cross_entropy_backward(kernels.asarray(probabilities), targets, weights, grad,
                                                 1.0 / probabilities.shape[0])
    return grad


#: where probabilities are clipped before the logarithm of binary cross-entropy (Keras's epsilon)
BCE_EPSILON = 1e-7


def _binary_pair(prediction, target, from_logits):
    prediction = as_float_array("prediction", prediction)
    target = check_grad("target", target, prediction.shape, prediction.dtype)
    if not isinstance(from_logits, (bool, np.bool_)):
        raise TypeError(f"from_logits must be True or False, got {from_logits!r}")
    return prediction, target, kernels_for(prediction=prediction, target=target)


def binary_cross_entropy(prediction: Array, target: Array, from_logits: bool = False) -> float:
    """Mean binary cross-entropy over every element, as Keras's ``binary_crossentropy`` (and
    ``torch.nn.functional.binary_cross_entropy_with_logits`` for ``from_logits=True``).

    ``target`` (same shape as ``prediction``) holds 0/1 labels or probabilities. From logits
    ``x``: ``max(x, 0) - x t + log(1 + exp(-|x|))``, finite for any finite logit. From
    probabilities ``p``: ``-(t log q + (1 - t) log(1 - q))`` with ``q = clip(p, 1e-7, 1 - 1e-7)``
    (:data:`BCE_EPSILON`), finite for any ``p``.
    """
    prediction, target, kernels = _binary_pair(prediction, target, from_logits)
    losses = kernels.empty(prediction.shape, prediction.dtype)
    kernels.binary_cross_entropy_forward(kernels.asarray(prediction).reshape(-1), kernels.asarray(target).reshape(-1),
                                         bool(from_logits), BCE_EPSILON, losses.reshape(-1))
    return float(np.mean(to_host(losses), dtype=np.float64))


def binary_cross_entropy_backward(prediction: Array, target: Array, from_logits: bool = False) -> Array:
    """Gradient of :func:`binary_cross_entropy` with respect to ``prediction``:
    ``(sigmoid(x) - t) / size`` from logits; ``(p - t) / (p (1 - p)) / size`` from probabilities
    inside the clipping range, 0 outside it."""
    prediction, target, kernels = _binary_pair(prediction, target, from_logits)
    grad = kernels.empty(prediction.shape, prediction.dtype)
    kernels.binary_cross_entropy_backward(kernels.asarray(prediction).reshape(-1),
                                          kernels.asarray(target).reshape(-1), bool(from_logits), BCE_EPSILON,
                                          grad.reshape(-1), 1.0 / math.prod(prediction.shape))
    return grad
