"""Callbacks: code that ``Model.fit`` runs at fixed points of training.

>>> import cnnlab
>>> stop = cnnlab.callbacks.EarlyStopping(monitor='val_accuracy', patience=3)
>>> stop.mode
'max'

A callback watches the metrics of each epoch (``loss``, ``accuracy``, ``lr``, ``seconds`` and,
with validation data, ``val_loss`` and ``val_accuracy``) and may stop training by setting
``model.stop_training = True``.

``fit`` itself records and shows training with two callbacks, added to yours unless you pass
one of their kind: :class:`History` (always; ``fit`` returns it) and :class:`ProgbarLogger`
(the progress line of each epoch, when ``verbose``).
"""

import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .compilation import end_line

__all__ = ["Callback", "History", "ProgbarLogger", "EarlyStopping", "ReduceLROnPlateau", "ModelCheckpoint",
           "LambdaCallback", "TerminateOnNaN"]

Logs = dict[str, Any]
ModelLike = Any  # a cnnlab.Model (this module is below the model module and does not import it)


class Callback:
    """Base class: override the hooks you need; each does nothing by default.

    Hooks
    -----
    on_train_begin(model)
        Before the first training step (``self.model`` and ``self.params`` are set just before).
    on_epoch_begin(epoch, logs)
        Before the first step of each epoch (``epoch`` counts from 0); ``logs`` is empty.
    on_batch_end(step, logs)
        After each training step; ``step`` counts the steps of the epoch from 0, ``logs`` holds
        ``epoch``, ``steps`` (optimizer steps so far), ``loss`` and ``accuracy`` (running means
        over the epoch) and ``lr``. ``logs`` is empty when no callback reads it (see
        :attr:`reads_batch_logs`).
    on_epoch_end(epoch, logs)
        After each epoch (``epoch`` counts from 0); ``logs`` is that epoch's metrics dict.
    on_train_end(logs)
        After the last epoch; ``logs`` is the last epoch's metrics.

    ``self.params`` holds the settings of the run: ``epochs``, ``samples``, ``batch_size``,
    ``verbose``, ``metrics`` (the names each epoch's logs will hold), ``compiling()`` (seconds
    spent compiling kernels so far) and ``read_metrics()`` (the epoch's running mean loss and
    accuracy, read when called: on the GPU a copy to the host).
    """

    model: ModelLike = None
    params: Logs | None = None
    monitor: str | None = None  # the metric a callback watches, checked by ``fit`` before any step

    @property
    def reads_batch_logs(self) -> bool:
        """Whether :meth:`on_batch_end` reads its ``logs``: when one callback does, ``fit`` reads
        the running loss and accuracy after every step (on the GPU a copy to the host). True
        when the hook is overridden (or given to a :class:`LambdaCallback`)."""
        return "on_batch_end" in vars(self) or type(self).on_batch_end is not Callback.on_batch_end

    def set_params(self, params: Logs) -> None:
        self.params = params

    def on_train_begin(self, model: ModelLike) -> None:
        pass

    def on_epoch_begin(self, epoch: int, logs: Logs) -> None:
        pass

    def on_batch_end(self, step: int, logs: Logs) -> None:
        pass

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        pass

    def on_train_end(self, logs: Logs) -> None:
        pass


class History(Callback):
    """What :meth:`cnnlab.Model.fit` measured: ``history`` maps a metric name to one value per
    epoch (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ``seconds``).

    ``stopped_epoch`` is the epoch (counting from 0) after which a callback stopped training
    (None when all epochs ran); ``best_epoch`` the best epoch seen by ``EarlyStopping`` (whose
    weights it restores), an index into the lists of ``history``.

    ``fit`` adds one to its callbacks (first) unless you pass a ``History`` of your own, and
    returns it; it is also ``model.history``. Resuming from a checkpoint starts it from the
    checkpoint's history."""

    def __init__(self, history: dict[str, list] | None = None):
        self.history = history or {}
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None

    def append(self, **values: Any) -> None:
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        self.append(**logs)

    def __repr__(self) -> str:
        events = "".join(f", {name}={getattr(self, name)}" for name in ("best_epoch", "stopped_epoch")
                         if getattr(self, name) is not None)
        return f"History({self.history}{events})"


class ProgbarLogger(Callback):
    """One line per epoch: a bar, loss, accuracy, samples/s and the time left (then the time
    taken, and the validation metrics).

    On a terminal the line redraws in place (at most every 0.1 s); in a log (not a terminal),
    or with ``fit(verbose=2)``, only the epoch's final line is written. Samples/s and the time left count the time spent
    running, not compiling kernels. ``fit`` adds one when ``verbose`` unless you pass one.

    Parameters
    ----------
    stream : file or None
        Where to write; None: standard output at the start of each epoch.
    clock : callable
        Seconds, for the rate and the times shown.
    """

    reads_batch_logs = False  # reads the running metrics itself, only when it redraws

    def __init__(self, stream: Any = None, clock: Callable[[], float] = time.perf_counter):
        self.stream = stream
        self.clock = clock

    def on_epoch_begin(self, epoch: int, logs: Logs) -> None:
        self.epoch, self.epochs, self.total = epoch, self.params["epochs"], self.params["samples"]
        self.out = self.stream or sys.stdout
        # verbose=2 (Keras's one line per epoch) writes only each epoch's final line, as in a log
        self.interactive = bool(getattr(self.out, "isatty", lambda: False)()) and self.params.get("verbose") != 2
        self.compiling = self.params.get("compiling", lambda: 0.0)
        self.start, self._compiled_before = self.clock(), self.compiling()
        self._last_draw = 0.0

    def _line(self, done: int, loss: float, accuracy: float, final: bool) -> str:
        elapsed = max(self.clock() - self.start, 1e-9)
        # samples/s and the ETA count the time spent running, not compiling kernels
        running = max(elapsed - (self.compiling() - self._compiled_before), 1e-9)
        rate = done / running
        width = 24
        filled = int(width * done / self.total)
        bar = "=" * filled + (">" if filled < width else "") + "." * max(0, width - filled - 1)
        timing = f"{elapsed:.1f}s" if final else f"ETA {(self.total - done) / max(rate, 1e-9):.1f}s"
        return (f"epoch {self.epoch + 1}/{self.epochs} [{bar}] {done}/{self.total} loss {loss:.4f} "
                f"acc {accuracy:.4f} {rate:,.0f} samples/s {timing}")

    def on_batch_end(self, step: int, logs: Logs) -> None:
        """Redraw on a terminal, reading the running metrics (on the GPU a copy to the host)
        only to draw."""
        if not self.interactive:
            return
        now = self.clock()
        if now - self._last_draw >= 0.1:
            self._last_draw = now
            done = min((step + 1) * self.params["batch_size"], self.total)
            loss, accuracy = self.params["read_metrics"]()
            end_line()  # below a compilation report still being redrawn on the terminal
            print("\r" + self._line(done, loss, accuracy, final=False), end="", file=self.out, flush=True)

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        extra = (f" - val_loss {logs['val_loss']:.4f} val_acc {logs['val_accuracy']:.4f}"
                 if "val_loss" in logs else "")
        prefix = "\r" if self.interactive else ""
        end_line()
        print(prefix + self._line(self.total, logs["loss"], logs["accuracy"], final=True) + extra, file=self.out,
              flush=True)


def _mode(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def _check_monitor(monitor: str) -> str:
    if not isinstance(monitor, str) or not monitor:
        raise TypeError(f"monitor must be a metric name such as 'val_loss', got {monitor!r}")
    return monitor


def tie_breaker(monitor: str, mode: str) -> str | None:
    """The metric that decides between epochs of the same ``monitor`` value: the loss measured
    with an accuracy that is maximized (``'val_loss'`` for ``'val_accuracy'``, ``'loss'`` for
    ``'accuracy'``), lower being better; None for other metrics."""
    if mode == "max" and monitor.endswith("accuracy"):
        return monitor[:-len("accuracy")] + "loss"
    return None


class _Monitor(Callback):
    """Tracks the best value of one metric ('min' or 'max' mode, improvements beyond
    ``min_delta``). An epoch whose accuracy equals the best one is better when its loss is
    lower (:func:`tie_breaker`): accuracies are fractions of a count, and often tie."""

    def __init__(self, monitor: str, mode: str = "auto", min_delta: float = 0.0):
        self.monitor = _check_monitor(monitor)
        self.mode = _mode(monitor, mode)
        if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float, np.number)) or not min_delta >= 0:
            raise ValueError(f"min_delta must be a number >= 0, got {min_delta!r}")
        self.min_delta = float(min_delta)
        self.tie_breaker = tie_breaker(self.monitor, self.mode)
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_tie: float | None = None  # the tie-breaking loss of the best epoch

    def reset(self) -> None:
        """Forget the best epoch (at the start of training)."""
        self.best, self.best_epoch, self.best_tie = None, None, None

    def _improved(self, value: float, tie: float | None = None) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if value == self.best and tie is not None and math.isfinite(tie):
            return self.best_tie is None or tie < self.best_tie
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _observe(self, epoch: int, logs: Logs) -> bool:
        """Record ``logs[monitor]``; True when it improved on the best so far (or equalled it
        with a lower tie-breaking loss)."""
        value = float(logs[self.monitor])
        tie = logs.get(self.tie_breaker) if self.tie_breaker is not None else None
        tie = float(tie) if tie is not None else None
        if self._improved(value, tie):
            self.best, self.best_epoch, self.best_tie = value, epoch, tie
            return True
        return False


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved for ``patience`` epochs.

    Parameters
    ----------
    monitor : str, default 'val_loss'
        ``'val_loss'``, ``'val_accuracy'``, ``'loss'`` or ``'accuracy'`` (Keras's names). Of
        epochs with the same best accuracy the one with the lower loss (``'val_loss'`` for
        ``'val_accuracy'``) is the best.
    patience : int or None, default 5
        Epochs without improvement before training stops; None never stops (with
        ``restore_best_weights`` it only keeps the best epoch's weights).
    min_delta : float, default 0
        A change smaller than this is not an improvement.
    mode : 'auto', 'min' or 'max'
        'auto': 'max' for a name containing 'acc' (accuracies), 'min' otherwise (losses).
    restore_best_weights : bool, default True
        At the end of training, put back the weights of the best epoch.

    After training, ``model.history.best_epoch`` is the best epoch (counting from 0) and
    ``model.history.stopped_epoch`` the epoch after which training stopped (None if it ran
    all epochs).
    """

    def __init__(self, monitor: str = "val_loss", patience: int | None = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = True):
        super().__init__(monitor, mode, min_delta)
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int)
                                     or patience < 0):
            raise ValueError(f"patience must be an integer >= 0 or None, got {patience!r}")
        self.patience = patience
        self.restore_best_weights = bool(restore_best_weights)

    def on_train_begin(self, model: ModelLike) -> None:
        self.reset()
        self.wait, self._best_arrays = 0, None

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        if self._observe(epoch, logs):
            self.wait = 0
            if self.restore_best_weights:
                self._best_arrays = {k: np.array(v) for k, v in self.model.get_weights().items()}
        else:
            self.wait += 1
            if self.patience is not None and self.wait >= self.patience:
                self.model.stop_training = True
        self.model.history.best_epoch = self.best_epoch

    def on_train_end(self, logs: Logs) -> None:
        if self._best_arrays is not None:
            self.model.set_weights(self._best_arrays)
            self._best_arrays = None


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs (never below ``min_lr``).

    The base rate of the optimizer changes, so a schedule keeps acting on the reduced rate.
    """

    def __init__(self, monitor: str = "val_loss", factor: float = 0.5, patience: int = 2, min_lr: float = 0.0,
                 mode: str = "auto", min_delta: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        if not 0 < factor < 1:
            raise ValueError(f"factor must lie in (0, 1), got {factor}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an integer >= 0, got {patience!r}")
        if not min_lr >= 0:
            raise ValueError(f"min_lr must be >= 0, got {min_lr}")
        self.factor, self.patience, self.min_lr = float(factor), patience, float(min_lr)

    def on_train_begin(self, model: ModelLike) -> None:
        self.reset()
        self.wait = 0

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
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
        As :class:`EarlyStopping`: an epoch that equals the best accuracy with a lower loss is
        an improvement.
    save_best_only : bool, default True
        Save only when ``monitor`` improves; False saves after every epoch.
    mode : 'auto', 'min' or 'max'
        'auto': 'max' for accuracies, 'min' for losses.
    """

    def __init__(self, path: str | os.PathLike, monitor: str = "val_loss", save_best_only: bool = True,
                 mode: str = "auto"):
        super().__init__(monitor, mode)
        self.path = path
        self.save_best_only = bool(save_best_only)

    def on_train_begin(self, model: ModelLike) -> None:
        self.reset()

    def on_epoch_end(self, epoch: int, logs: Logs) -> None:
        if self._observe(epoch, logs) or not self.save_best_only:
            self.model.save(self.path)


class TerminateOnNaN(Callback):
    """Stop training when the loss stops being finite (NaN or infinite): Keras's callback.

    Without it, ``fit`` raises ``FloatingPointError`` ("lower the learning rate") when the loss
    of a step, an epoch's training or validation loss, a parameter or the optimizer's state
    stops being finite. With it, ``fit`` stops there instead and returns its history: this
    callback prints what happened, ``history.stopped_epoch`` is the epoch (counting from 0),
    the epoch is not added to the history, and the other callbacks' ``on_train_end`` runs (an
    ``EarlyStopping`` still restores its best weights). On the CPU a step's loss is checked
    before its update, so the model holds the last step whose loss was finite; on the GPU the
    running loss is read at the end of the epoch (or whenever a callback reads it).

    Parameters
    ----------
    stream : file or None
        Where to write the message; None: standard output.
    """

    def __init__(self, stream: Any = None):
        self.stream = stream
        self.epoch = 0

    def on_train_begin(self, model: ModelLike) -> None:
        self.epoch = 0

    def on_epoch_begin(self, epoch: int, logs: Logs) -> None:
        self.epoch = epoch

    def terminate(self, error: FloatingPointError) -> int:
        """Say that training stops in the current epoch because of ``error``; returns that epoch.
        ``fit`` calls it when the loss stops being finite."""
        out = self.stream or sys.stdout
        end_line()
        below_a_bar = "\n" if getattr(out, "isatty", lambda: False)() else ""  # a progress bar may be mid-line
        print(f"{below_a_bar}epoch {self.epoch + 1}: {error}; training stopped (TerminateOnNaN)", file=out, flush=True)
        if self.model is not None:
            self.model.stop_training = True
        return self.epoch


class LambdaCallback(Callback):
    """A callback from plain functions, e.g.
    ``LambdaCallback(on_epoch_end=lambda epoch, logs: print(epoch, logs['loss']))``."""

    def __init__(self, on_train_begin: Callable | None = None, on_epoch_end: Callable | None = None,
                 on_batch_end: Callable | None = None, on_train_end: Callable | None = None,
                 on_epoch_begin: Callable | None = None):
        for name, function in (("on_train_begin", on_train_begin), ("on_epoch_end", on_epoch_end),
                               ("on_batch_end", on_batch_end), ("on_train_end", on_train_end),
                               ("on_epoch_begin", on_epoch_begin)):
            if function is not None:
                if not callable(function):
                    raise TypeError(f"{name} must be a function, got {function!r}")
                setattr(self, name, function)


def check_callbacks(callbacks: Callback | Iterable[Callback] | None, available: list[str]) -> list[Callback]:
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
