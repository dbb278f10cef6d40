"""CPU optimizer updates, element-wise over flattened parameters.

Mirrors :mod:`cnnlab.kernels.cuda.optim`.
"""

import math

from numba import njit, prange

__all__ = ["adam_step", "sgd_step"]  # the kernels of this file


@njit(parallel=True, cache=True)
def sgd_step(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    """One SGD step, PyTorch's formulation (1-D arrays, updated in place).

    ``g = grad + weight_decay * param``; with momentum ``v = momentum * v + g`` and the step
    ``g + momentum * v`` (Nesterov) or ``v``; then ``param -= lr * step``.
    """
    for i in prange(param.shape[0]):
        g = grad[i] + weight_decay * param[i]
        if momentum != 0:
            v = momentum * velocity[i] + g
            velocity[i] = v
            g = g + momentum * v if nesterov else v
        param[i] = param[i] - lr * g


@njit(parallel=True, cache=True)
def adam_step(param, grad, first_moment, second_moment, lr, beta1, beta2, eps, weight_decay, step):
    """One Adam step with bias correction (1-D arrays, updated in place); ``step`` counts from 1.

    ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
    ``param -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``; weight decay is added to
    the gradient (L2, as torch.optim.Adam).
    """
    correction1 = 1.0 - beta1 ** step
    correction2 = 1.0 - beta2 ** step
    for i in prange(param.shape[0]):
        g = grad[i] + weight_decay * param[i]
        m = beta1 * first_moment[i] + (1.0 - beta1) * g
        v = beta2 * second_moment[i] + (1.0 - beta2) * g * g
        first_moment[i] = m
        second_moment[i] = v
        param[i] = param[i] - lr * (m / correction1) / (math.sqrt(v / correction2) + eps)
