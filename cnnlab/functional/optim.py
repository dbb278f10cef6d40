"""Optimizer updates: SGD with momentum, Adam, AdamW and RMSprop, in place on the parameters."""

from __future__ import annotations

from ..device import kernels_for
from ..types import Array


def sgd_update(param: Array, grad: Array, velocity: Array, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
               nesterov: bool = False) -> None:
    """One SGD step on ``param`` in place (on its device); ``velocity`` is updated too."""
    kernels = kernels_for(param=param, grad=grad, velocity=velocity)
    kernels.sgd_step(kernels.asarray(param).reshape(-1), kernels.asarray(grad).reshape(-1),
                     kernels.asarray(velocity).reshape(-1), float(lr), float(momentum),
                     float(weight_decay), bool(nesterov))


def adam_update(param: Array, grad: Array, first_moment: Array, second_moment: Array, step: int, lr: float,
                beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-08, weight_decay: float = 0.0) -> None:
    """One Adam step (``step`` counts from 1) on ``param`` in place; the moments are updated too."""
    kernels = kernels_for(param=param, grad=grad, first_moment=first_moment, second_moment=second_moment)
    kernels.adam_step(kernels.asarray(param).reshape(-1), kernels.asarray(grad).reshape(-1),
                      kernels.asarray(first_moment).reshape(-1), kernels.asarray(second_moment).reshape(-1),
                      float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), int(step))


def adamw_update(param: Array, grad: Array, first_moment: Array, second_moment: Array, step: int, lr: float,
                 beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-08, weight_decay: float = 0.01) -> None:
    """One AdamW step (``step`` counts from 1) on ``param`` in place: the weight decay is
    decoupled (``param *= 1 - lr * weight_decay``, then Adam's step); the moments are updated too."""
    kernels = kernels_for(param=param, grad=grad, first_moment=first_moment, second_moment=second_moment)
    kernels.adamw_step(kernels.asarray(param).reshape(-1), kernels.asarray(grad).reshape(-1),
                       kernels.asarray(first_moment).reshape(-1), kernels.asarray(second_moment).reshape(-1),
                       float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), int(step))


def rmsprop_update(param: Array, grad: Array, square_avg: Array, momentum_buffer: Array, grad_avg: Array, lr: float,
                   alpha: float = 0.99, eps: float = 1e-08, weight_decay: float = 0.0, momentum: float = 0.0,
                   centered: bool = False) -> None:
    """One RMSprop step on ``param`` in place (torch.optim.RMSprop's formulation); the running
    averages are updated too (``momentum_buffer`` only with a momentum, ``grad_avg`` only when
    ``centered``: otherwise they may be any array of ``param``'s shape, e.g. ``square_avg``)."""
    kernels = kernels_for(param=param, grad=grad, square_avg=square_avg, momentum_buffer=momentum_buffer,
                          grad_avg=grad_avg)
    kernels.rmsprop_step(kernels.asarray(param).reshape(-1), kernels.asarray(grad).reshape(-1),
                         kernels.asarray(square_avg).reshape(-1), kernels.asarray(momentum_buffer).reshape(-1),
                         kernels.asarray(grad_avg).reshape(-1), float(lr), float(alpha), float(eps),
                         float(weight_decay), float(momentum), bool(centered))
