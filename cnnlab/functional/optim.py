"""Optimizer updates: SGD with momentum and Adam, in place on the parameters."""

from ..device import kernels_for


def sgd_update(param, grad, velocity, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """One SGD step on ``param`` in place (on its device); ``velocity`` is updated too."""
    kernels = kernels_for(param=param, grad=grad, velocity=velocity)
    kernels.sgd_step(kernels.asarray(param).reshape(-1), kernels.asarray(grad).reshape(-1),
                     kernels.asarray(velocity).reshape(-1), float(lr), float(momentum),
                     float(weight_decay), bool(nesterov))


def adam_update(param, grad, first_moment, second_moment, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
                weight_decay=0.0):
    """One Adam step (``step`` counts from 1) on ``param`` in place; the moments are updated too."""
    kernels = kernels_for(param=param, grad=grad, first_moment=first_moment, second_moment=second_moment)
    kernels.adam_step(kernels.asarray(param).reshape(-1), kernels.asarray(grad).reshape(-1),
                      kernels.asarray(first_moment).reshape(-1), kernels.asarray(second_moment).reshape(-1),
                      float(lr), float(beta1), float(beta2), float(eps), float(weight_decay), int(step))
