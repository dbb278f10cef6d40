"""GPU softmax + cross-entropy, fused and stable; mean squared error.

Mirrors :mod:`cnnlab.kernels.cpu.loss`; same names, same parameters.
"""

import math

from numba import cuda

from ._launch import launch_shape

__all__ = [  # the kernels of this file
    "cross_entropy_backward",
    "cross_entropy_forward",
    "mse_backward",
    "mse_forward",
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
