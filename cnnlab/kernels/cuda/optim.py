"""GPU optimizer updates: the parameters, gradients and state never leave the device.

Mirrors :mod:`cnnlab.kernels.cpu.optim`; same names, same parameters.
"""

import math

from numba import cuda

from ._launch import launch_shape

__all__ = ["adam_step", "sgd_step"]  # the kernels of this file


@cuda.jit
def _sgd_kernel(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    for i in range(cuda.grid(1), param.shape[0], cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        if momentum != 0:
            v = momentum * velocity[i] + g
            velocity[i] = v
            g = g + momentum * v if nesterov else v
        param[i] = param[i] - lr * g


@cuda.jit
def _adam_kernel(param, grad, first_moment, second_moment, lr, beta1, beta2, eps, weight_decay,
                 correction1, correction2):
    for i in range(cuda.grid(1), param.shape[0], cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        m = beta1 * first_moment[i] + (1.0 - beta1) * g
        v = beta2 * second_moment[i] + (1.0 - beta2) * g * g
        first_moment[i] = m
        second_moment[i] = v
        param[i] = param[i] - lr * (m / correction1) / (math.sqrt(v / correction2) + eps)


def sgd_step(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    """One SGD step in place; contract of :func:`cnnlab.kernels.cpu.optim.sgd_step`."""
    blocks, threads = launch_shape(param.shape[0])
    _sgd_kernel[blocks, threads](param, grad, velocity, lr, momentum, weight_decay, nesterov)


def adam_step(param, grad, first_moment, second_moment, lr, beta1, beta2, eps, weight_decay, step):
    """One Adam step in place; contract of :func:`cnnlab.kernels.cpu.optim.adam_step`."""
    blocks, threads = launch_shape(param.shape[0])
    _adam_kernel[blocks, threads](param, grad, first_moment, second_moment, lr, beta1, beta2, eps,
                                  weight_decay, 1.0 - beta1 ** step, 1.0 - beta2 ** step)
