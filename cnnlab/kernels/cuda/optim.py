"""GPU optimizer updates: the parameters, gradients and state never leave the device.

Mirrors :mod:`cnnlab.kernels.cpu.optim`; same names, same parameters.
"""

import math

from numba import cuda

from ._launch import launch_shape

__all__ = ["adam_step", "adamw_step", "rmsprop_step", "sgd_step"]  # the kernels of this file


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


@cuda.jit
def _adamw_kernel(param, grad, first_moment, second_moment, lr, beta1, beta2, eps, weight_decay,
                  correction1, correction2):
    for i in range(cuda.grid(1), param.shape[0], cuda.gridsize(1)):
        g = grad[i]
        m = beta1 * first_moment[i] + (1.0 - beta1) * g
        v = beta2 * second_moment[i] + (1.0 - beta2) * g * g
        first_moment[i] = m
        second_moment[i] = v
        decayed = param[i] * (1.0 - lr * weight_decay)
        param[i] = decayed - lr * (m / correction1) / (math.sqrt(v / correction2) + eps)


@cuda.jit
def _rmsprop_kernel(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, weight_decay, momentum,
                    centered):
    for i in range(cuda.grid(1), param.shape[0], cuda.gridsize(1)):
        g = grad[i] + weight_decay * param[i]
        v = alpha * square_avg[i] + (1.0 - alpha) * g * g
        square_avg[i] = v
        if centered:
            a = alpha * grad_avg[i] + (1.0 - alpha) * g
            grad_avg[i] = a
            v = max(v - a * a, 0.0)
        denominator = math.sqrt(v) + eps
        if momentum != 0:
            b = momentum * momentum_buffer[i] + g / denominator
            momentum_buffer[i] = b
            param[i] = param[i] - lr * b
        else:
            param[i] = param[i] - lr * g / denominator


def sgd_step(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    """One SGD step in place; contract of :func:`cnnlab.kernels.cpu.optim.sgd_step`."""
    blocks, threads = launch_shape(param.shape[0])
    _sgd_kernel[blocks, threads](param, grad, velocity, lr, momentum, weight_decay, nesterov)


def adam_step(param, grad, first_moment, second_moment, lr, beta1, beta2, eps, weight_decay, step):
    """One Adam step in place; contract of :func:`cnnlab.kernels.cpu.optim.adam_step`."""
    blocks, threads = launch_shape(param.shape[0])
    _adam_kernel[blocks, threads](param, grad, first_moment, second_moment, lr, beta1, beta2, eps,
                                  weight_decay, 1.0 - beta1 ** step, 1.0 - beta2 ** step)


def adamw_step(param, grad, first_moment, second_moment, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step in place; contract of :func:`cnnlab.kernels.cpu.optim.adamw_step`."""
    blocks, threads = launch_shape(param.shape[0])
    _adamw_kernel[blocks, threads](param, grad, first_moment, second_moment, lr, beta1, beta2, eps,
                                   weight_decay, 1.0 - beta1 ** step, 1.0 - beta2 ** step)


def rmsprop_step(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, weight_decay, momentum,
                 centered):
    """One RMSprop step in place; contract of :func:`cnnlab.kernels.cpu.optim.rmsprop_step`."""
    blocks, threads = launch_shape(param.shape[0])
    _rmsprop_kernel[blocks, threads](param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps,
                                     weight_decay, momentum, centered)
