"""CPU softmax + cross-entropy, fused and stable.

Mirrors :mod:`cnnlab.kernels.cuda.loss`.
"""

import math

from numba import njit, prange

__all__ = [  # the kernels of this file
    "cross_entropy_backward",
    "cross_entropy_forward",
    "mse_backward",
    "mse_forward",
    "weight_losses_by_class",
    "weighted_cross_entropy_backward",
]


@njit(parallel=True, cache=True)
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
    for n in prange(samples):
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


@njit(parallel=True, cache=True)
def cross_entropy_backward(probabilities, targets, grad_logits, scale):
    """Gradient of ``scale * sum(losses)``: ``scale * (softmax - one_hot(target))``."""
    samples, classes = probabilities.shape
    for n in prange(samples):
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
