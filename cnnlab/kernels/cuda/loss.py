"""GPU softmax + cross-entropy (against class indices or target rows), fused and stable;
binary cross-entropy; mean squared error.

Mirrors :mod:`cnnlab.kernels.cpu.loss`; same names, same parameters.
"""

import math

from numba import cuda

from ._launch import launch_shape

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


@cuda.jit
def _cross_entropy_kernel(logits, targets, losses, probabilities):
    samples, classes = logits.shape
    for n in range(cuda.grid(1), samples, cuda.gridsize(1)):
        largest = logits[n, 0]
        for k in range(1, classes):
            largest = max(largest, logits[n, k])
        total = 0.0
        for k in range(classes):
            total += math.exp(logits[n, k] - largest)
        for k in range(classes):
            probabilities[n, k] = math.exp(logits[n, k] - largest) / total
        losses[n] = largest + math.log(total) - logits[n, targets[n]]


@cuda.jit
def _cross_entropy_backward_kernel(probabilities, targets, grad_logits, scale):
    samples, classes = probabilities.shape
    for index in range(cuda.grid(1), samples * classes, cuda.gridsize(1)):
        n = index // classes
        k = index % classes
        grad_logits[n, k] = scale * (probabilities[n, k] - (1.0 if k == targets[n] else 0.0))


@cuda.jit
def _mse_kernel(prediction, target, losses):
    for i in range(cuda.grid(1), prediction.shape[0], cuda.gridsize(1)):
        d = prediction[i] - target[i]
        losses[i] = d * d


@cuda.jit
def _mse_backward_kernel(prediction, target, grad_prediction, scale):
    for i in range(cuda.grid(1), prediction.shape[0], cuda.gridsize(1)):
        grad_prediction[i] = 2.0 * scale * (prediction[i] - target[i])


@cuda.jit
def _weighted_cross_entropy_backward_kernel(probabilities, targets, class_weights, grad_logits, scale):
    samples, classes = probabilities.shape
    for index in range(cuda.grid(1), samples * classes, cuda.gridsize(1)):
        n = index // classes
        k = index % classes
        weight = scale * class_weights[targets[n]]
        grad_logits[n, k] = weight * (probabilities[n, k] - (1.0 if k == targets[n] else 0.0))


@cuda.jit
def _weight_losses_by_class_kernel(losses, targets, class_weights):
    for n in range(cuda.grid(1), losses.shape[0], cuda.gridsize(1)):
        losses[n] = losses[n] * class_weights[targets[n]]


@cuda.jit
def _soft_cross_entropy_kernel(logits, targets, smoothing, losses, probabilities, labels):
    samples, classes = logits.shape
    uniform = smoothing / classes
    for n in range(cuda.grid(1), samples, cuda.gridsize(1)):
        largest = logits[n, 0]
        for k in range(1, classes):
            largest = max(largest, logits[n, k])
        total = 0.0
        for k in range(classes):
            total += math.exp(logits[n, k] - largest)
        log_total = largest + math.log(total)
        loss = 0.0
        best = 0
        for k in range(classes):
            probabilities[n, k] = math.exp(logits[n, k] - largest) / total
            loss += ((1.0 - smoothing) * targets[n, k] + uniform) * (log_total - logits[n, k])
            if targets[n, k] > targets[n, best]:
                best = k
        losses[n] = loss
        labels[n] = best


@cuda.jit
def _soft_cross_entropy_backward_kernel(probabilities, targets, class_weights, smoothing, grad_logits, scale):
    samples, classes = probabilities.shape
    uniform = smoothing / classes
    for n in range(cuda.grid(1), samples, cuda.gridsize(1)):
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


@cuda.jit
def _binary_cross_entropy_kernel(prediction, target, from_logits, eps, losses):
    for i in range(cuda.grid(1), prediction.shape[0], cuda.gridsize(1)):
        x = prediction[i]
        t = target[i]
        if from_logits:
            losses[i] = max(x, 0.0) - x * t + math.log1p(math.exp(-abs(x)))
        else:
            q = min(max(x, eps), 1.0 - eps)
            losses[i] = -(t * math.log(q) + (1.0 - t) * math.log(1.0 - q))


@cuda.jit
def _binary_cross_entropy_backward_kernel(prediction, target, from_logits, eps, grad_prediction, scale):
    for i in range(cuda.grid(1), prediction.shape[0], cuda.gridsize(1)):
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


def cross_entropy_forward(logits, targets, losses, probabilities):
    """Per-sample loss and softmax; contract of :func:`cnnlab.kernels.cpu.loss.cross_entropy_forward`."""
    blocks, threads = launch_shape(logits.shape[0])
    _cross_entropy_kernel[blocks, threads](logits, targets, losses, probabilities)


def cross_entropy_backward(probabilities, targets, grad_logits, scale):
    """``scale * (softmax - one_hot)``; contract of the CPU twin."""
    blocks, threads = launch_shape(probabilities.size)
    _cross_entropy_backward_kernel[blocks, threads](probabilities, targets, grad_logits, scale)


def mse_forward(prediction, target, losses):
    """Per-element squared error (1-D device arrays)."""
    blocks, threads = launch_shape(prediction.shape[0])
    _mse_kernel[blocks, threads](prediction, target, losses)


def mse_backward(prediction, target, grad_prediction, scale):
    """Gradient of ``scale * sum((prediction - target)**2)`` (1-D device arrays)."""
    blocks, threads = launch_shape(prediction.shape[0])
    _mse_backward_kernel[blocks, threads](prediction, target, grad_prediction, scale)


def weighted_cross_entropy_backward(probabilities, targets, class_weights, grad_logits, scale):
    """``scale * class_weights[target] * (softmax - one_hot)``; contract of the CPU twin."""
    blocks, threads = launch_shape(probabilities.size)
    _weighted_cross_entropy_backward_kernel[blocks, threads](probabilities, targets, class_weights,
                                                             grad_logits, scale)


def weight_losses_by_class(losses, targets, class_weights):
    """In place ``losses[n] *= class_weights[targets[n]]``; contract of the CPU twin."""
    blocks, threads = launch_shape(losses.shape[0])
    _weight_losses_by_class_kernel[blocks, threads](losses, targets, class_weights)


def soft_cross_entropy_forward(logits, targets, smoothing, losses, probabilities, labels):
    """Per-sample loss against target rows, the softmax and each row's class; contract of
    :func:`cnnlab.kernels.cpu.loss.soft_cross_entropy_forward`."""
    blocks, threads = launch_shape(logits.shape[0])
    _soft_cross_entropy_kernel[blocks, threads](logits, targets, smoothing, losses, probabilities, labels)


def soft_cross_entropy_backward(probabilities, targets, class_weights, smoothing, grad_logits, scale):
    """``scale * w_n * (softmax * sum(t) - t)``; contract of the CPU twin."""
    blocks, threads = launch_shape(probabilities.shape[0])
    _soft_cross_entropy_backward_kernel[blocks, threads](probabilities, targets, class_weights, smoothing,
                                                         grad_logits, scale)


def binary_cross_entropy_forward(prediction, target, from_logits, eps, losses):
    """Per-element binary cross-entropy (1-D device arrays); contract of the CPU twin."""
    blocks, threads = launch_shape(prediction.shape[0])
    _binary_cross_entropy_kernel[blocks, threads](prediction, target, from_logits, eps, losses)


def binary_cross_entropy_backward(prediction, target, from_logits, eps, grad_prediction, scale):
    """Gradient of ``scale * sum(losses)`` of the binary cross-entropy; contract of the CPU twin."""
    blocks, threads = launch_shape(prediction.shape[0])
    _binary_cross_entropy_backward_kernel[blocks, threads](prediction, target, from_logits, eps,
                                                           grad_prediction, scale)
