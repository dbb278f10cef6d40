"""Optimizer updates: SGD with momentum and Adam, in place on the parameters."""

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
