"""Losses: cross-entropy (weighted or not), mean squared error, and their gradients."""

from __future__ import annotations

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


def cross_entropy(logits: Array, targets: Array) -> tuple[float, Array]:
    """Mean softmax cross-entropy of ``(N, K)`` logits against class indices, fused and stable.

    Returns
    -------
    loss : float
        ``mean(-log softmax(logits)[n, targets[n]])``.
    probabilities : (N, K) array
        ``softmax(logits)``, kept for :func:`cross_entropy_backward`.

    See Also
    --------
    cnnlab.kernels.cpu.loss.cross_entropy_forward, torch.nn.functional.cross_entropy
    """
    losses, probabilities = cross_entropy_per_sample(logits, targets)
    return float(np.mean(to_host(losses), dtype=np.float64)), probabilities


def cross_entropy_per_sample(logits: Array, targets: Array) -> tuple[Array, Array]:
    """Per-sample cross-entropy losses and the softmax, both left on the logits' device
    (no host copy: what a training step on the GPU needs)."""
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


def cross_entropy_backward(probabilities: Array, targets: Array) -> Array:
    """Gradient of the mean cross-entropy with respect to the logits: ``(softmax - one_hot) / N``."""
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


def weighted_cross_entropy_per_sample(logits: Array, targets: Array, class_weights: Array) -> tuple[Array, Array]:
    """Per-sample cross-entropy times the weight of each sample's class, and the softmax, both
    left on the logits' device.

    ``class_weights`` is ``(K,)``: sample ``n`` weighs ``class_weights[targets[n]]``.
    """
    losses, probabilities = cross_entropy_per_sample(logits, targets)
    kernels = kernels_for(logits=logits, targets=targets)
    targets = kernels.asarray(as_targets("targets", targets, *probabilities.shape))
    weights = _class_weights(kernels, class_weights, probabilities.shape[1], probabilities.dtype)
    kernels.weight_losses_by_class(losses, targets, weights)
    return losses, probabilities


def weighted_cross_entropy(logits: Array, targets: Array, class_weights: Array) -> tuple[float, Array]:
    """Class-weighted softmax cross-entropy: ``sum(w[t_n] * loss_n) / N`` (Keras' rule for
    ``class_weight``), and the softmax for :func:`weighted_cross_entropy_backward`.

    See Also
    --------
    cross_entropy, torch.nn.functional.cross_entropy (``weight=``, which divides by the sum of
    the weights instead of N)
    """
    losses, probabilities = weighted_cross_entropy_per_sample(logits, targets, class_weights)
    return float(np.mean(to_host(losses), dtype=np.float64)), probabilities


def weighted_cross_entropy_backward(probabilities: Array, targets: Array, class_weights: Array) -> Array:
    """Gradient of :func:`weighted_cross_entropy` with respect to the logits:
    ``w[t_n] * (softmax - one_hot) / N``."""
    probabilities = as_float_array("probabilities", probabilities, ndim=2)
    kernels = kernels_for(probabilities=probabilities, targets=targets)
    targets = kernels.asarray(as_targets("targets", targets, *probabilities.shape))
    weights = _class_weights(kernels, class_weights, probabilities.shape[1], probabilities.dtype)
    grad = kernels.empty(probabilities.shape, probabilities.dtype)
    kernels.weighted_cross_entropy_backward(kernels.asarray(probabilities), targets, weights, grad,
                                                 1.0 / probabilities.shape[0])
    return grad
