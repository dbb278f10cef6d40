"""Optimizers and learning-rate schedules.

An optimizer updates a model's trainable parameters in place with one kernel per
parameter, on the parameters' device; its state (velocities, moments) lives there too.
:func:`get` makes one from Keras's names (``'sgd'``, ``'adam'``, ``'adamw'``, ``'rmsprop'``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import functional as F
from .device import is_gpu_array, to_device, to_host

__all__ = ["SGD", "Adam", "AdamW", "RMSprop", "StepLR", "CosineLR", "WarmupLR", "PerStep", "get"]

Array = Any  # a NumPy array, or a Numba CUDA device array for parameters on the GPU


class EpochSchedule:
    """A schedule whose factor depends on the epoch only: ``factor(epoch)``."""

    def factor_at(self, epoch: float, fraction: float, step: int) -> float:
        """The factor before optimizer step ``step`` (counting from 0), ``fraction`` of the way
        through ``epoch``: an epoch schedule looks at the epoch alone."""
        return self.factor(epoch)


class StepLR(EpochSchedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs."""

    def __init__(self, step_size: int, gamma: float = 0.1):
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.step_size = int(step_size)
        self.gamma = float(gamma)

    def factor(self, epoch: float) -> float:
        return self.gamma ** (epoch // self.step_size)

    def config(self) -> dict:
        return dict(type="StepLR", step_size=self.step_size, gamma=self.gamma)


class CosineLR(EpochSchedule):
    """Cosine decay from the base rate to ``min_factor`` times it over ``total_epochs``."""

    def __init__(self, total_epochs: int, min_factor: float = 0.0):
        if total_epochs < 1:
            raise ValueError(f"total_epochs must be >= 1, got {total_epochs}")
        self.total_epochs = int(total_epochs)
        self.min_factor = float(min_factor)

    def factor(self, epoch: float) -> float:
        progress = min(epoch, self.total_epochs) / self.total_epochs
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))

    def config(self) -> dict:
        return dict(type="CosineLR", total_epochs=self.total_epochs, min_factor=self.min_factor)


class PerStep:
    """Apply an epoch schedule at every step, at fractional epochs: step ``i`` of ``n`` in
    epoch ``e`` uses ``schedule.factor(e + i / n)`` (a smooth cosine decay instead of a
    staircase of epochs)."""

    def __init__(self, schedule: EpochSchedule):
        if not isinstance(schedule, EpochSchedule):
            raise TypeError(f"schedule must be an epoch schedule such as CosineLR, got {schedule!r}")
        self.schedule = schedule

    def factor_at(self, epoch: float, fraction: float, step: int) -> float:
        return self.schedule.factor(epoch + fraction)

    def config(self) -> dict:
        return dict(type="PerStep", schedule=self.schedule.config())


class WarmupLR:
    """Linear warm-up over the first ``steps`` optimizer steps, then the ``after`` schedule.

    Step ``i`` (counting from 0) uses ``min(1, (i + 1) / steps)`` times the factor of
    ``after`` (1 when None), so the rate climbs from ``lr / steps`` to ``lr`` and then
    follows ``after`` on its usual clock.
    """

    def __init__(self, steps: int, after: Schedule | None = None):
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
        if after is not None and not hasattr(after, "factor_at"):
            raise TypeError(f"after must be a schedule (StepLR, CosineLR, PerStep) or None, got {after!r}")
        self.steps = int(steps)
        self.after = after

    def factor_at(self, epoch: float, fraction: float, step: int) -> float:
        later = self.after.factor_at(epoch, fraction, step) if self.after is not None else 1.0
        return min(1.0, (step + 1) / self.steps) * later

    def config(self) -> dict:
        return dict(type="WarmupLR", steps=self.steps,
                    after=self.after.config() if self.after is not None else None)


Schedule = EpochSchedule | PerStep | WarmupLR  # or any object with factor_at(epoch, fraction, step) or factor(epoch)


def schedule_from_config(config: dict) -> Schedule:
    """Rebuild a schedule from its ``config()``."""
    config = dict(config)
    kind = config.pop("type")
    if kind == "PerStep":
        return PerStep(schedule_from_config(config["schedule"]))
    if kind == "WarmupLR":
        after = config["after"]
        return WarmupLR(config["steps"], schedule_from_config(after) if after else None)
    return {"StepLR": StepLR, "CosineLR": CosineLR}[kind](**config)


def _number(name: str, value: Any, low: float = 0.0, high: float | None = None, low_open: bool = False) -> float:
    """``value`` as a float in ``[low, high)`` (``(low, high)`` when ``low_open``): ``TypeError``
    for what is not a real number, ``ValueError`` naming ``name`` for a value out of range."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    below = value <= low if low_open else value < low
    if not math.isfinite(value) or below or (high is not None and value >= high):
        interval = ("(" if low_open else "[") + f"{low:g}, " + (f"{high:g})" if high is not None else "inf)")
        raise ValueError(f"{name} must lie in {interval}, got {value!r}")
    return value


def _betas(betas: Any) -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    if not all(isinstance(b, (int, float, np.number)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas):
        raise ValueError(f"betas must lie in [0, 1), got {betas}")
    return float(betas[0]), float(betas[1])


class Optimizer:
    """Shared machinery: per-parameter state on the parameters' device, schedules, saving."""

    state_names = ()

    def __init__(self, lr: float, schedule: Schedule | None = None):
        if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)):
            raise TypeError(f"lr must be a number, got {lr!r}")
        if not lr > 0 or not math.isfinite(lr):
            raise ValueError(f"lr must be positive, got {lr}")
        self.base_lr = float(lr)
        self.lr = float(lr)
        self.schedule = schedule
        self.state = []  # one dict of state arrays per parameter, in the model's order
        self.keys: list | None = None  # which parameter each entry of state belongs to (see align)
        self.steps = 0

    def set_epoch(self, epoch: int, fraction: float = 0.0) -> None:
        """Apply the schedule for the next step, ``fraction`` of the way through ``epoch``
        (counting from 0). ``fit`` calls it before every step."""
        if self.schedule is None:
            factor = 1.0
        elif hasattr(self.schedule, "factor_at"):
            factor = self.schedule.factor_at(epoch, fraction, self.steps)
        else:  # any object with factor(epoch)
            factor = self.schedule.factor(epoch)
        self.lr = self.base_lr * factor

    def _state_for(self, index, param):
        while len(self.state) <= index:
            self.state.append(None)
        if not self.state[index]:  # None, or nothing saved for it in a checkpoint
            zeros = np.zeros(param.shape, dtype=param.dtype)
            self.state[index] = {name: to_device(zeros) if is_gpu_array(param) else zeros.copy()
                                 for name in self.state_names}
        return self.state[index]

    def align(self, keys: list) -> None:
        """Say which parameters the next steps update: ``keys`` names them (``fit`` uses
        ``(layer index, parameter name)`` of the trainable parameters), in the order
        :meth:`step` receives them. When they differ from the last ones (layers frozen or
        unfrozen since), each parameter keeps its own state (velocity, moments) and a parameter
        new to the optimizer starts from zeros."""
        keys = list(keys)
        if self.keys is not None and self.keys != keys:
            old = dict(zip(self.keys, self.state))
            self.state = [old.get(key) for key in keys]
        self.keys = keys

    def step(self, parameters: list[tuple[Array, Array]]) -> None:
        """Update ``parameters``: a list of ``(param, grad)`` pairs, always in the same order.

        ``ValueError``, before any update, when the state kept for a position does not have its
        parameter's shape (the optimizer was used on other parameters: see :meth:`align`)."""
        parameters = list(parameters)
        for index, (param, _) in enumerate(parameters[:len(self.state)]):
            for name, value in (self.state[index] or {}).items():
                if tuple(value.shape) != tuple(param.shape):
                    raise ValueError(f"the optimizer's {name} for parameter {index} has shape {tuple(value.shape)} "
                                     f"but the parameter has shape {tuple(param.shape)}: this optimizer was used on "
                                     "other parameters; pass a new one")
        self.steps += 1
        for index, (param, grad) in enumerate(parameters):
            self._update(param, grad, self._state_for(index, param))

    def to(self, device: str) -> Optimizer:
        move = to_device if device == "cuda" else to_host
        self.state = [None if s is None else {k: move(v) for k, v in s.items()} for s in self.state]
        return self

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The state as host arrays by name (for checkpoints)."""
        arrays = {}
        for index, state in enumerate(self.state):
            for name, value in (state or {}).items():
                arrays[f"{index}/{name}"] = to_host(value)
        return arrays

    def load_state_arrays(self, arrays: dict[str, np.ndarray], steps: int, device: str) -> None:
        self.steps = int(steps)
        self.state, self.keys = [], None
        for key, value in arrays.items():
            index, name = key.split("/")
            index = int(index)
            while len(self.state) <= index:
                self.state.append({})
            self.state[index][name] = to_device(value) if device == "cuda" else np.array(value)

    def config(self) -> dict:
        return dict(type=type(self).__name__, lr=self.base_lr,
                    schedule=self.schedule.config() if self.schedule else None)


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and weight decay
    (PyTorch's formulation).

    Parameters
    ----------
    lr : float
    momentum : float, default 0
    nesterov : bool, default False
    weight_decay : float, default 0 (L2 penalty added to the gradient)
    schedule : StepLR, CosineLR, PerStep, WarmupLR or None
    """

    state_names = ("velocity",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
                 schedule: Schedule | None = None):
        super().__init__(lr, schedule)
        if momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {momentum}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov=True needs a momentum > 0")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)

    def _update(self, param, grad, state):
        F.sgd_update(param, grad, state["velocity"], self.lr, self.momentum, self.weight_decay, self.nesterov)

    def config(self) -> dict:
        return dict(super().config(), momentum=self.momentum, nesterov=self.nesterov,
                    weight_decay=self.weight_decay)


class Adam(Optimizer):
    """Adam with bias correction (Kingma and Ba), PyTorch's defaults.

    Parameters
    ----------
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0 (L2 penalty added to the gradient)
    schedule : StepLR, CosineLR, PerStep, WarmupLR or None
    """

    state_names = ("first_moment", "second_moment")

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, schedule: Schedule | None = None):
        super().__init__(lr, schedule)
        self.betas = _betas(betas)
        self.eps = _number("eps", eps)
        self.weight_decay = _number("weight_decay", weight_decay)

    def _update(self, param, grad, state):
        F.adam_update(param, grad, state["first_moment"], state["second_moment"], self.steps, self.lr,
                      self.betas[0], self.betas[1], self.eps, self.weight_decay)

    def config(self) -> dict:
        return dict(super().config(), betas=list(self.betas), eps=self.eps, weight_decay=self.weight_decay)


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (Loshchilov and Hutter), PyTorch's defaults.

    Each step first shrinks the parameters, ``param *= 1 - lr * weight_decay``, then takes
    Adam's step with the plain gradient (the decay never enters the moments), as
    ``torch.optim.AdamW``.

    Parameters
    ----------
    lr : float, default 1e-3
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    weight_decay : float, default 0.01
    schedule : StepLR, CosineLR, PerStep, WarmupLR or None
    """

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, schedule: Schedule | None = None):
        super().__init__(lr, betas, eps, weight_decay, schedule)

    def _update(self, param, grad, state):
        F.adamw_update(param, grad, state["first_moment"], state["second_moment"], self.steps, self.lr,
                       self.betas[0], self.betas[1], self.eps, self.weight_decay)


class RMSprop(Optimizer):
    """RMSprop (Hinton), ``torch.optim.RMSprop``'s formulation and defaults.

    ``g = grad + weight_decay * param``; ``square_avg = alpha * square_avg + (1 - alpha) * g**2``;
    the step is ``g / (sqrt(square_avg) + eps)`` (``centered``: ``square_avg`` less the square
    of the running mean gradient), accumulated in a momentum buffer when ``momentum > 0``.

    Parameters
    ----------
    lr : float, default 1e-2
    alpha : float, default 0.99
        Smoothing constant of the running average of squared gradients.
    eps : float, default 1e-8
    weight_decay : float, default 0 (L2 penalty added to the gradient)
    momentum : float, default 0
    centered : bool, default False
        Normalize by an estimate of the gradient's variance instead of its second moment.
    schedule : StepLR, CosineLR, PerStep, WarmupLR or None
    """

    def __init__(self, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                 momentum: float = 0.0, centered: bool = False, schedule: Schedule | None = None):
        super().__init__(lr, schedule)
        self.alpha = _number("alpha", alpha)
        self.eps = _number("eps", eps)
        self.weight_decay = _number("weight_decay", weight_decay)
        self.momentum = _number("momentum", momentum)
        if not isinstance(centered, (bool, np.bool_)):
            raise TypeError(f"centered must be True or False, got {centered!r}")
        self.centered = bool(centered)
        # the state kept per parameter: the buffers a setting does not use are not allocated
        self.state_names = ("square_avg",) + (("momentum_buffer",) if self.momentum else ()) \
            + (("grad_avg",) if self.centered else ())

    def _update(self, param, grad, state):
        square_avg = state["square_avg"]
        F.rmsprop_update(param, grad, square_avg, state.get("momentum_buffer", square_avg),
                         state.get("grad_avg", square_avg), self.lr, self.alpha, self.eps, self.weight_decay,
                         self.momentum, self.centered)

    def config(self) -> dict:
        return dict(super().config(), alpha=self.alpha, eps=self.eps, weight_decay=self.weight_decay,
                    momentum=self.momentum, centered=self.centered)


#: the optimizers by Keras's names (what :func:`get` and ``fit(optimizer='adam')`` take)
OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}


def get(optimizer: str | Optimizer) -> Optimizer:
    """An optimizer object from Keras's name (``'sgd'``, ``'adam'``, ``'adamw'``,
    ``'rmsprop'``, any case: a new one with the class's defaults) or an optimizer itself.

    ``ValueError`` listing the names for an unknown name, ``TypeError`` for anything else."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        kind = OPTIMIZERS.get(optimizer.lower())
        if kind is None:
            raise ValueError(f"optimizer must be one of {', '.join(repr(n) for n in OPTIMIZERS)} or an optimizer "
                             f"object such as cnnlab.optim.Adam(1e-3), got {optimizer!r}")
        return kind()
    raise TypeError(f"optimizer must be a name ({', '.join(repr(n) for n in OPTIMIZERS)}) or an optimizer object "
                    f"such as cnnlab.optim.Adam(1e-3), got {type(optimizer).__name__}")


def from_config(config: dict) -> Optimizer:
    """Rebuild an optimizer from :meth:`Optimizer.config`."""
    config = dict(config)
    kind = config.pop("type")
    schedule = config.pop("schedule", None)
    if schedule:
        config["schedule"] = schedule_from_config(schedule)
    if "betas" in config:
        config["betas"] = tuple(config["betas"])
    return {cls.__name__: cls for cls in OPTIMIZERS.values()}[kind](**config)
