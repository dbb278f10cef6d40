"""CPU softmax + cross-entropy (against class indices or target rows), fused and stable;
binary cross-entropy; mean squared error.

Mirrors :mod:`cnnlab.kernels.cuda.loss`.
"""

import math

from numba import njit, prange

__all__ = [  # the kernels of this file
    "binary_cross_entropy_backward",
    "binary_cross_entropy_forward",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "mse_backward",
    "mse_forward",
    "soft_cross_entropy_backward",
    "soft_cross_entropy_forward",
    "weight_losses_by_class",
    "weighted_cross_entropy_backward",
]


@njit(cache=True, error_model="numpy")  # serial: (N, K) is small, and a prange costs seconds of compiling
def cross_entropy_forward(logits, targets, losses, probabilities):
    """Per-sample ``-log softmax(logits)[target]`` and the softmax itself.

    The log-sum-exp is shifted by the row maximum, so logits of any size give a finite loss.

    Parameters
    ----------
    logits : (N, K) float array
    targets : (N,) int64 array of class indices in ``[0, K)``
    losses : (N,) array, overwritten with each sample's loss
    probabilities : (N, K) array, overwritten with ``softmax(logits)`` (for the backward)
    """
    samples, classes = logits.shape
    for n in range(samples):
        largest = logits[n, 0]
        for k in range(1, classes):
            largest = max(largest, logits[n, k])
        total = 0.0
        for k in range(classes):
            e = math.exp(logits[n, k] - largest)
            probabilities[n, k] = e
            total += e
        for k in range(classes):
            probabilities[n, k] = probabilities[n, k] / total
        losses[n] = largest + math.log(total) - logits[n, targets[n]]


@njit(cache=True, error_model="numpy")  # serial: (N, K) is small, and a prange costs seconds of compiling
def cross_entropy_backward(probabilities, targets, grad_logits, scale):
    """Gradient of ``scale * sum(losses)``: ``scale * (softmax - one_hot(target))``."""
    samples, classes = probabilities.shape
    for n in range(samples):
        for k in range(classes):
            grad_logits[n, k] = scale * (probabilities[n, k] - (1.0 if k == targets[n] else 0.0))


@njit(parallel=True, cache=True)
def mse_forward(prediction, target, losses):
    """Per-element squared error ``(prediction - target)**2`` (1-D arrays)."""
    for i in prange(prediction.shape[0]):
        d = prediction[i] - target[i]
        losses[i] = d * d


@njit(parallel=True, cache=True)
def mse_backward(prediction, target, grad_prediction, scale):
    """Gradient of ``scale * sum((prediction - target)**2)`` (1-D arrays)."""
    for i in prange(prediction.shape[0]):
        grad_prediction[i] = 2.0 * scale * (prediction[i] - target[i])


@njit(parallel=True, cache=True)
def weighted_cross_entropy_backward(probabilities, targets, class_weights, grad_logits, scale):
    """Gradient of ``scale * sum(class_weights[target] * losses)``:
    ``scale * class_weights[target] * (softmax - one_hot(target))``."""
    samples, classes = probabilities.shape
    for n in prange(samples):
        weight = scale * class_weights[targets[n]]
        for k in range(classes):
            grad_logits[n, k] = weight * (probabilities[n, k] - (1.0 if k == targets[n] else 0.0))


@njit(parallel=True, cache=True)
def weight_losses_by_class(losses, targets, class_weights):
    """In place: ``losses[n] *= class_weights[targets[n]]``."""
    for n in prange(losses.shape[0]):
        losses[n] = losses[n] * class_weights[targets[n]]


@njit(parallel=True, cache=True)
def soft_cross_entropy_forward(logits, targets, smoothing, losses, probabilities, labels):
    """Per-sample cross-entropy against target rows (one-hot or class probabilities), the
    softmax, and each row's class (its largest target, the first on ties: what accuracy
    compares the prediction with).

    The targets are smoothed towards the uniform distribution first (PyTorch's
    ``label_smoothing``): ``t = (1 - smoothing) * targets + smoothing / K``; the loss is
    ``sum_k t_k * (logsumexp(logits) - logits_k)``, shifted by the row maximum, so logits of any
    size give a finite loss.

    Parameters
    ----------
    logits : (N, K) float array
    targets : (N, K) float array
    smoothing : float in [0, 1]
    losses : (N,) array, overwritten with each sample's loss
    probabilities : (N, K) array, overwritten with ``softmax(logits)``
    labels : (N,) int64 array, overwritten with each row's class
    """
    samples, classes = logits.shape
    uniform = smoothing / classes
    for n in prange(samples):
        largest = logits[n, 0]
        for k in range(1, classes):
            largest = max(largest, logits[n, k])
        total = 0.0
        for k in range(classes):
            e = math.exp(logits[n, k] - largest)
            probabilities[n, k] = e
            total += e
        log_total = largest + math.log(total)
        loss = 0.0
        best = 0
        for k in range(classes):
            probabilities[n, k] = probabilities[n, k] / total
            loss += ((1.0 - smoothing) * targets[n, k] + uniform) * (log_total - logits[n, k])
            if targets[n, k] > targets[n, best]:
                best = k
        losses[n] = loss
        labels[n] = best


@njit(parallel=True, cache=True)
def soft_cross_entropy_backward(probabilities, targets, class_weights, smoothing, grad_logits, scale):
    """Gradient of ``scale * sum(w_n * losses)`` of :func:`soft_cross_entropy_forward` with
    respect to the logits: ``scale * w_n * (softmax * sum_k t_k - t)``, with ``t`` the
    smoothed targets and ``w_n = class_weights[row's class]`` (ones for no weighting)."""
    samples, classes = probabilities.shape
    uniform = smoothing / classes
    for n in prange(samples):
        total = 0.0
        best = 0
        for k in range(classes):
            total += (1.0 - smoothing) * targets[n, k] + uniform
            if targets[n, k] > targets[n, best]:
                best = k
        weight = scale * class_weights[best]
        for k in range(classes):
            target = (1.0 - smoothing) * targets[n, k] + uniform
            grad_logits[n, k] = weight * (probabilities[n, k] * total - target)


@njit(parallel=True, cache=True)
def binary_cross_entropy_forward(prediction, target, from_logits, eps, losses):
    """Per-element binary cross-entropy (1-D arrays).

    From logits ``x``: ``max(x, 0) - x t + log(1 + exp(-|x|))``, finite for any finite ``x``.
    From probabilities ``p``: ``-(t log q + (1 - t) log(1 - q))`` with ``q = p`` clipped to
    ``[eps, 1 - eps]`` (Keras's rule), finite for any ``p``.
    """
    for i in prange(prediction.shape[0]):
        x = prediction[i]
        t = target[i]
        if from_logits:
            losses[i] = max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))
        else:
            q = min(max(x, eps), 1.0 - eps)
            losses[i] = -(t * math.log(q) + (1.0 - t) * math.log(1.0 - q))


@njit(parallel=True, cache=True)
def binary_cross_entropy_backward(prediction, target, from_logits, eps, grad_prediction, scale):
    """Gradient of ``scale * sum(losses)`` of :func:`binary_cross_entropy_forward` (1-D arrays):
    ``scale * (sigmoid(x) - t)`` from logits; ``scale * (p - t) / (p (1 - p))`` from
    probabilities inside the clipping range and 0 outside it (where the clipped loss is flat)."""
    for i in prange(prediction.shape[0]):
        x = prediction[i]
        t = target[i]
        if from_logits:
            if x >= 0:
                s = 1.0 / (1.0 + math.exp(-x))
            else:
                e = math.exp(x)
                s = e / (1.0 + e)
            grad_prediction[i] = scale * (s - t)
        elif x < eps or x > 1.0 - eps:
            grad_prediction[i] = 0.0
        else:
            grad_prediction[i] = scale * (x - t) / (x * (1.0 - x))
