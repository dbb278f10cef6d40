"""Callbacks: code that ``Sequential.fit`` runs at fixed points of training.

>>> import cnnlab
>>> stop = cnnlab.callbacks.EarlyStopping(monitor='val_accuracy', patience=3)
>>> stop.mode
'max'

A callback watches the metrics of each epoch (``loss``, ``accuracy``, ``lr``, ``seconds`` and,
with validation data, ``val_loss`` and ``val_accuracy``) and may stop training by setting
``model.stop_training = True``.
"""

import math

import numpy as np

__all__ = ["Callback", "EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint", "LambdaCallback"]


class Callback:
    """Base class: override the hooks you need; each does nothing by default.

    Hooks
    -----
    on_train_begin(model)
        Before the first training step (``self.model`` is set just before).
    on_batch_end(step, logs)
        After each training step; ``step`` counts the steps of the epoch from 0, ``logs`` holds
        ``epoch``, ``steps`` (optimizer steps so far), ``loss`` and ``accuracy`` (running means
        over the epoch) and ``lr``.
    on_epoch_end(epoch, logs)
        After each epoch (``epoch`` counts from 0); ``logs`` is that epoch's metrics dict.
    on_train_end(logs)
        After the last epoch; ``logs`` is the last epoch's metrics.
    """

    model = None
    monitor = None  # the metric a callback watches, checked by ``fit`` before any step

    def on_train_begin(self, model):
        pass

    def on_batch_end(self, step, logs):
        pass

    def on_epoch_end(self, epoch, logs):
        pass

    def on_train_end(self, logs):
        pass


def _mode(monitor, mode):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def _check_monitor(monitor):
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"monitor must be a metric name such as 'val_loss', got {monitor!r}")
    return monitor


class _Monitor(Callback):
    """Tracks the best value of one metric ('min' or 'max' mode, improvements beyond ``min_delta``)."""

    def __init__(self, monitor, mode="auto", min_delta=0.0):
        self.monitor = _check_monitor(monitor)
        self.mode = _mode(monitor, mode)
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta}")
        self.min_delta = float(min_delta)
        self.best = None
        self.best_epoch = None

    def _improved(self, value):
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _observe(self, epoch, logs):
        """Record ``logs[monitor]``; True when it improved on the best so far."""
        value = float(logs[self.monitor])
        if self._improved(value):
            self.best, self.best_epoch = value, epoch
            return True
        return False


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str, default 'val_loss'
    patience : int or None, default 5
        Epochs without improvement before training stops; None never stops (with
        ``restore_best_weights`` it only keeps the best epoch's weights).
    min_delta : float, default 0
        A change smaller than this is not an improvement.
    mode : 'auto', 'min' or 'max'
        'auto': 'max' for a name containing 'acc', 'min' otherwise.
    restore_best_weights : bool, default True
        At the end of training, put back the weights of the best epoch.

    After training, ``model.history.best_epoch`` is the best epoch (counting from 0) and
    ``model.history.stopped_epoch`` the epoch after which training stopped (None if it ran
    all epochs).
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=True):
        super().__init__(monitor, mode, min_delta)
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int)
                                     or patience < 0):
            raise ValueError(f"patience must be an integer >= 0 or None, got {patience!r}")
        self.patience = patience
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, model):
        self.best, self.best_epoch, self.wait, self._best_arrays = None, None, 0, None

    def on_epoch_end(self, epoch, logs):
        if self._observe(epoch, logs):
            self.wait = 0
            if self.restore_best_weights:
                self._best_arrays = {k: np.array(v) for k, v in self.model.get_weights().items()}
        else:
            self.wait += 1
            if self.patience is not None and self.wait >= self.patience:
                self.model.stop_training = True
        self.model.history.best_epoch = self.best_epoch

    def on_train_end(self, logs):
        if self._best_arrays is not None:
            self.model.set_weights(self._best_arrays)
            self._best_arrays = None


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs (never below ``min_lr``).

    The base rate of the optimizer changes, so a schedule keeps acting on the reduced rate.
    """

    def __init__(self, monitor="val_loss", factor=0.5, patience=2, min_lr=0.0, mode="auto", min_delta=0.0):
        super().__init__(monitor, mode, min_delta)
        if not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        if not min_lr >= 0:
            raise ValueError(f"min_lr must be >= 0, got {min_lr}")
        self.factor, self.patience, self.min_lr = float(factor), patience, float(min_lr)

    def on_train_begin(self, model):
        self.best, self.best_epoch, self.wait = None, None, 0

    def on_epoch_end(self, epoch, logs):
        if self._observe(epoch, logs):
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            optimizer = self.model.optimizer
            optimizer.base_lr = max(optimizer.base_lr * self.factor, self.min_lr)
            self.wait = 0


class ModelCheckpoint(_Monitor):
    """Save the model (atomically, with :meth:`Sequential.save`) after an epoch.

    Parameters
    ----------
    path : str or path
    monitor : str, default 'val_loss'
    save_best_only : bool, default True
        Save only when ``monitor`` improves; False saves after every epoch.
    mode : 'auto', 'min' or 'max'
    """

    def __init__(self, path, monitor="val_loss", save_best_only=True, mode="auto"):
        super().__init__(monitor, mode)
        self.path = path
        self.save_best_only = bool(save_best_only)

    def on_train_begin(self, model):
        self.best, self.best_epoch = None, None

    def on_epoch_end(self, epoch, logs):
        if self._observe(epoch, logs) or not self.save_best_only:
            self.model.save(self.path)


class LambdaCallback(Callback):
    """A callback from plain functions, e.g.
    ``LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs['loss']))``."""

    def __init__(self, on_train_begin=None, on_epoch_end=None, on_batch_end=None, on_train_end=None):
        for name, function in (("on_train_begin", on_train_begin), ("on_epoch_end", on_epoch_end),
                               ("on_batch_end", on_batch_end), ("on_train_end", on_train_end)):
            if function is not None:
                if not callable(function):
                    raise TypeError(f"{name} must be a function, got {function!r}")
                setattr(self, name, function)


def check_callbacks(callbacks, available):
    """The callbacks as a list; ``TypeError`` for a non-callback, ``ValueError`` for a
    monitored metric that training will not produce (``available``: the metric names)."""
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback):
        callbacks = [callbacks]
    callbacks = list(callbacks)
    for index, callback in enumerate(callbacks):
        if not isinstance(callback, Callback):
            raise TypeError(f"callbacks[{index}] must be a cnnlab.callbacks.Callback, "
                            f"got {type(callback).__name__}")
        if callback.monitor is not None and callback.monitor not in available:
            hint = (" (pass validation_data or validation_split to fit to get val_ metrics)"
                    if callback.monitor.startswith("val_") else "")
            raise ValueError(f"{type(callback).__name__} monitors {callback.monitor!r}, which fit does "
                             f"not measure here; available: {', '.join(available)}{hint}")
    return callbacks
