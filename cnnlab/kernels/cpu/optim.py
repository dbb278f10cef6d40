"""CPU optimizer updates, element-wise over flattened parameters.

Mirrors :mod:`cnnlab.kernels.cuda.optim`.
"""

import math

from numba import njit, prange

from ._schedule import run_split

__all__ = ["adam_step", "adamw_step", "rmsprop_step", "sgd_step"]  # the kernels of this file


def sgd_step(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    """One SGD step, PyTorch's formulation (1-D arrays, updated in place).

    ``g = grad + weight_decay * param``; with momentum ``v = momentum * v + g`` and the step
    ``g + momentum * v`` (Nesterov) or ``v``; then ``param -= lr * step``.

    The threads share it as Adam's (:func:`._schedule.run_split`), not by a ``prange``: under
    Numba's OpenMP layer (no ``tbb`` installed) the pool's threads spun after each update and took a
    core from the next step's convolutions (the CIFAR-sized training step of ``bench/models.py``,
    median of 18 runs, 38.2 ms against 31.4 ms with TBB).
    """
    run_split(_sgd_items, param.shape[0], 3 * param.shape[0], param, grad, velocity, float(lr), float(momentum),
              float(weight_decay), bool(nesterov))


@njit(cache=True, nogil=True, error_model="numpy")
def _sgd_items(param, grad, velocity, lr, momentum, weight_decay, nesterov, first, last):
    param, grad, velocity = param[first:last], grad[first:last], velocity[first:last]  # (from 0: vectorizes)
    for i in range(param.shape[0]):
        g = grad[i] + weight_decay * param[i]
        if momentum != 0:
            v = momentum * velocity[i] + g
            velocity[i] = v
            g = g + momentum * v if nesterov else v
        param[i] = param[i] - lr * g


def adam_step(param, grad, first_moment, second_moment, lr, beta1, beta2, eps, weight_decay, step):
    """One Adam step with bias correction (1-D arrays, updated in place); ``step`` counts from 1.

    ``m = b1 m + (1-b1) g``, ``v = b2 v + (1-b2) g^2``,
    ``param -= lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``; weight decay is added to
    the gradient (L2, as torch.optim.Adam).
    """
    run_split(_adam_items, param.shape[0], 4 * param.shape[0], param, grad, first_moment, second_moment,
              float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), int(step))


@njit(cache=True, nogil=True, error_model="numpy")  # as in a prange: x / 0 is inf or nan, no test per element (the loop vectorizes)
def _adam_items(param, grad, first_moment, second_moment, lr, beta1, beta2, eps, weight_decay, step, first, last):
    correction1 = 1.0 - beta1 ** step
    correction2 = 1.0 - beta2 ** step
    # indices from 0: no negative-index test, the loop vectorizes
    param, grad, first_moment, second_moment = (param[first:last], grad[first:last], first_moment[first:last],
                                                second_moment[first:last])
    for i in range(param.shape[0]):
        g = grad[i] + weight_decay * param[i]
        m = beta1 * first_moment[i] + (1.0 - beta1) * g
        v = beta2 * second_moment[i] + (1.0 - beta2) * g * g
        first_moment[i] = m
        second_moment[i] = v
        param[i] = param[i] - lr * (m / correction1) / (math.sqrt(v / correction2) + eps)


@njit(parallel=True, cache=True)
def adamw_step(param, grad, first_moment, second_moment, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step (Loshchilov and Hutter; torch.optim.AdamW), in place on 1-D arrays;
    ``step`` counts from 1.

    The weight decay is decoupled from the gradient: ``param *= 1 - lr * weight_decay``, then
    the Adam step of :func:`adam_step` with the plain gradient.
    """
    correction1 = 1.0 - beta1 ** step
    correction2 = 1.0 - beta2 ** step
    for i in prange(param.shape[0]):
        g = grad[i]
        m = beta1 * first_moment[i] + (1.0 - beta1) * g
        v = beta2 * second_moment[i] + (1.0 - beta2) * g * g
        first_moment[i] = m
        second_moment[i] = v
        decayed = param[i] * (1.0 - lr * weight_decay)
        param[i] = decayed - lr * (m / correction1) / (math.sqrt(v / correction2) + eps)


@njit(parallel=True, cache=True)
def rmsprop_step(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, weight_decay, momentum,
                 centered):
    """One RMSprop step, torch.optim.RMSprop's formulation, in place on 1-D arrays.

    ``g = grad + weight_decay * param``; ``square_avg = alpha * square_avg + (1 - alpha) g^2``;
    centered: ``grad_avg = alpha * grad_avg + (1 - alpha) g`` and the denominator
    ``sqrt(square_avg - grad_avg^2) + eps``, else ``sqrt(square_avg) + eps``; with momentum
    ``buffer = momentum * buffer + g / denominator`` and ``param -= lr * buffer``, else
    ``param -= lr * g / denominator``. ``momentum_buffer`` and ``grad_avg`` are read and written
    only when used.
    """
    for i in prange(param.shape[0]):
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
