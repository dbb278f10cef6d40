"""Training: the loop behind :meth:`cnnlab.Model.fit`, the evaluation behind
:meth:`cnnlab.Model.evaluate`, and what they need around the model: class weights, the
validation split, augmentation, Ctrl-C held until a step completes, the training set kept on
the GPU, and checkpoints after every epoch.

The loop asks the loss object for each step's loss and gradient
(:meth:`cnnlab.losses.Loss.train_batch`) and records and shows progress with callbacks
(:class:`cnnlab.callbacks.History`, :class:`cnnlab.callbacks.ProgbarLogger`). The functions
take the model they train; this module does not import the model module. It is where the
model meets :mod:`cnnlab.data`: augmentation, the stratified split, and reading image files
the way a model was trained (:func:`read_as_trained`).
"""

import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from . import callbacks as callbacks_module
from . import checks, metrics, saving
from . import data as data_module
from . import losses as losses_module
from . import optim as optim_module
from . import sources as sources_module
from .compilation import report_compilation
from .device import to_host
from .shapes import check_int

__all__ = ["fit", "evaluate", "train_step", "class_weights", "split_validation", "read_as_trained", "step_memory",
           "check_step_memory", "check_finite", "ACTIVATION_COPIES"]

ModelLike = Any  # a cnnlab.Model
Data = tuple[Any, Any]  # the arguments of model.evaluate for the validation data


class _DeferredInterrupt:
    """Hold Ctrl-C until the current training step is complete, then raise it."""

    def __init__(self):
        self.pending = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def _handler(self, signum, frame):
        self.pending = True

    def check(self):
        if self.pending:
            raise KeyboardInterrupt("training interrupted; the model holds its last completed step")

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def fit(model: ModelLike, x: Any, y: Any = None, epochs: int = 1, batch_size: int = 32,
        optimizer: str | optim_module.Optimizer | None = None, loss: str | losses_module.Loss = "cross_entropy",
        validation_data: tuple[Any, Any] | None = None, shuffle: bool = True, seed: int | None = None,
        verbose: int = 1, checkpoint: str | os.PathLike | None = None, resume: str | os.PathLike | None = None,
        augment: bool | Callable | None = None, callbacks: Iterable[callbacks_module.Callback] | None = None,
        validation_split: float = 0.0, class_weight: dict | str | None = None,
        steps_per_epoch: int | None = None) -> callbacks_module.History:
    """Train ``model``: :meth:`cnnlab.Model.fit` (which documents the arguments) runs this.

    Every argument is checked, and the memory of one training step compared with the memory
    available (:func:`step_memory`), before the model changes; then the loss, the optimizer
    (given, kept, or ``Adam()``) and, with ``resume``, the checkpoint's weights and training
    state are put in place, the callbacks start, and the epochs run."""
    loss = losses_module.get(loss)
    optimizer = optim_module.get(optimizer) if optimizer is not None else model.optimizer or optim_module.Adam()
    source, validation = _training_data(model, x, y, validation_data, validation_split, seed, steps_per_epoch, loss)
    epochs = check_int("epochs", epochs, 1)
    batch_size = check_int("batch_size", batch_size, 1)
    augment = _augmenter(augment)
    verbose = _check_settings(shuffle, seed, verbose, checkpoint, resume)
    weights = class_weights(model, class_weight, source.labels("class_weight='balanced'")
                            if isinstance(class_weight, str) and class_weight == "balanced" else None, loss)
    available = ["loss", "accuracy", "lr", "seconds"] + (["val_loss", "val_accuracy"] if validation else [])
    history, callbacks = _with_defaults(callbacks_module.check_callbacks(callbacks, available), verbose)
    check_step_memory(model, min(source.batch_size or batch_size, max(source.samples, 1)), optimizer,
                      source.sample_shape)

    run = _Run(model, source, batch_size, shuffle, augment, seed)
    if resume is not None:  # the checkpoint's weights and optimizer (checked before they replace the model's)
        run.start_epoch, run.rng, history.history, run.base_seed = saving.load_checkpoint(model, resume)
    else:
        model.optimizer = optimizer
    model.loss = loss
    model.optimizer.to(model.device)
    index = {id(layer): i for i, layer in enumerate(model.layers)}
    model.optimizer.align([(index[id(layer)], name) for layer, name in model.parameters()])
    if weights is not None:
        run.class_weights = model.to_model_device(weights.astype(model.dtype))
    model.history, model.stop_training = history, False
    run.reads_batch_logs = any(callback.reads_batch_logs for callback in callbacks)
    params = dict(epochs=epochs, samples=source.samples, batch_size=source.batch_size or batch_size,
                  verbose=verbose, metrics=available, compiling=run.compiling, read_metrics=run.read_metrics)
    for callback in callbacks:
        callback.model = model
        callback.set_params(params)
        callback.on_train_begin(model)
    run.upload()
    try:
        with source, _DeferredInterrupt() as interrupt, report_compilation(sys.stderr if verbose else None) as report:
            run.report = report
            record = run.run_epochs(epochs, callbacks, validation, checkpoint, history, interrupt)
    except FloatingPointError as error:
        record = _terminate(callbacks, history, error)
    for callback in callbacks:
        callback.on_train_end(dict(record))
    return history


def _check_settings(shuffle: Any, seed: Any, verbose: Any, checkpoint: Any, resume: Any) -> int:
    """``fit``'s plain settings: ``TypeError`` or ``ValueError`` naming the one that is wrong;
    returns ``verbose`` as 0, 1 or 2 (Keras's ``'auto'`` is 1)."""
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be True or False, got {shuffle!r}")
    if seed is not None:
        check_int("seed", seed, 0)
    if verbose == "auto":
        verbose = 1
    if not isinstance(verbose, (bool, np.bool_, int, np.integer)) or verbose not in (0, 1, 2):
        raise ValueError(f"verbose must be 0 (silent), 1 (a progress bar) or 2 (one line per epoch), got {verbose!r}")
    for name, path in (("checkpoint", checkpoint), ("resume", resume)):
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"{name} must be a file path or None, got {type(path).__name__}")
    if checkpoint is not None:
        folder = os.path.dirname(os.path.abspath(checkpoint))
        if os.path.isdir(checkpoint):
            raise ValueError(f"checkpoint={os.fspath(checkpoint)!r} is a folder: give a file path")
        if not os.path.isdir(folder):
            raise ValueError(f"checkpoint={os.fspath(checkpoint)!r}: the folder {folder} does not exist "
                             "(create it, or give another path)")
    if resume is not None and not os.path.isfile(resume):
        raise ValueError(f"resume={os.fspath(resume)!r}: no such file (give a checkpoint written by "
                         "fit(..., checkpoint=path))")
    return int(verbose)


#: how many arrays the size of each layer's output one training step holds at its peak: the
#: output itself, what the layer keeps for its backward pass (its input, masks, pooling
#: indices: about one output's worth), and the output's gradient in the backward pass
ACTIVATION_COPIES = 3


def step_memory(model: ModelLike, batch_size: int, optimizer: optim_module.Optimizer | None = None,
                sample_shape: tuple[int, ...] | None = None) -> int:
    """A conservative estimate of the bytes one training step of ``model`` at ``batch_size``
    needs beyond the training set itself.

    ``ACTIVATION_COPIES`` (3) times the input batch and every layer call's output
    (:meth:`cnnlab.graph.Graph.sample_shapes` for the model's input shape, times
    ``batch_size`` times the itemsize; ``sample_shape`` is one sample's, the model's input shape
    when not given, and the activations are left out when that has an axis of unknown size), plus every parameter, and for the trainable ones
    their gradient and the ``optimizer``'s state (one array per name in its
    ``state_names``; Adam's default when None). The convolution's im2col workspace, bounded by
    ``cnnlab.config.IM2COL_MAX_BYTES``, is not counted."""
    itemsize = np.dtype(model.dtype).itemsize
    shape = tuple(sample_shape) if sample_shape is not None else tuple(model.input_shape)
    if None in shape:  # a size known only when the model runs, and no sample to read it from
        values = 0
    else:
        shapes = model.graph.sample_shapes([shape])
        values = math.prod(shape) + sum(math.prod(s) for s in shapes.values())
    activations = ACTIVATION_COPIES * values * batch_size * itemsize
    state = len((optimizer or optim_module.Adam()).state_names)
    parameters = 0
    for layer in model.layers:
        for value in layer.params.values():
            size = math.prod(value.shape) * np.dtype(value.dtype).itemsize
            parameters += size * (2 + state if layer.trainable else 1)
    return int(activations + parameters)


def check_step_memory(model: ModelLike, batch_size: int, optimizer: optim_module.Optimizer | None = None,
                      sample_shape: tuple[int, ...] | None = None) -> None:
    """``MemoryError`` before training when one step at ``batch_size`` (:func:`step_memory`)
    needs more memory than is available (:func:`cnnlab.checks.available_memory`), saying how
    much and which ``batch_size`` would fit. Checked for a model on the CPU (on the GPU the
    activations live in the device's memory, which this does not measure)."""
    if model.device != "cpu":
        return
    needed = step_memory(model, batch_size, optimizer, sample_shape)
    fixed = step_memory(model, 0, optimizer, sample_shape)
    per_sample = max((needed - fixed) // max(batch_size, 1), 1)
    available = checks.available_memory()
    fits = (available - fixed) // per_sample if available is not None else batch_size
    fix = (f"pass a smaller batch_size (at most about {fits} fits)" if fits >= 1 else
           "the parameters alone do not fit: use a smaller model or free memory")
    checks.check_memory(needed, f"one training step at batch_size={batch_size} (activations for {batch_size} "
                        f"samples, parameters, gradients and optimizer state)", fix)


def _terminate(callbacks: list[callbacks_module.Callback], history: callbacks_module.History,
               error: FloatingPointError) -> dict:
    """What ``fit`` does when the loss stops being finite: with a
    :class:`cnnlab.callbacks.TerminateOnNaN` among the callbacks, training stops (the callback
    says so, and ``history.stopped_epoch`` records the epoch) and the last epoch's metrics are
    returned; without one, the ``FloatingPointError`` is raised again."""
    stopper = next((c for c in callbacks if isinstance(c, callbacks_module.TerminateOnNaN)), None)
    if stopper is None:
        raise error
    history.stopped_epoch = stopper.terminate(error)
    return {name: values[-1] for name, values in history.history.items() if values}


def check_finite(model: ModelLike, record: dict) -> None:
    """``FloatingPointError`` (lower the learning rate) when an epoch's ``loss`` or ``val_loss``
    in ``record``, a trainable parameter or the optimizer's state (Adam's second moment
    overflows first) is not finite: checked after every epoch, so that a diverged run stops
    even when its loss stays finite."""
    for name in ("loss", "val_loss"):
        if name in record and not math.isfinite(record[name]):
            raise FloatingPointError(f"the {name.replace('_', ' ')} became {record[name]}: lower the learning rate")
    names = {id(layer): index for index, layer in enumerate(model.layers)}
    states = model.optimizer.state if model.optimizer is not None else []
    for index, (layer, name) in enumerate(model.parameters()):
        where = f"layer {names[id(layer)]} ({type(layer).__name__}) {name}"
        if not np.all(np.isfinite(to_host(layer.params[name]))):
            raise FloatingPointError(f"the parameters of {where} became non-finite: lower the learning rate")
        state = states[index] if index < len(states) else None
        for key, value in (state or {}).items():
            if not np.all(np.isfinite(to_host(value))):
                raise FloatingPointError(f"the optimizer's {key} of {where} overflowed to a non-finite value: "
                                         "lower the learning rate")


def _training_data(model: ModelLike, x: Any, y: Any, validation_data: Any, validation_split: float,
                   seed: int | None, steps_per_epoch: int | None = None,
                   loss: losses_module.Loss | None = None) -> tuple[sources_module.Source, Data | None]:
    """``source, validation``: the checked training data as a batch source
    (:func:`cnnlab.sources.training_source`), and the validation data as the arguments of
    ``model.evaluate``, or None (``validation_data`` checked, or held out of ``x, y`` by
    ``validation_split``); ``y`` holds class labels, or target rows for a ``loss`` that takes them."""
    source = sources_module.training_source(model, x, y, steps_per_epoch, loss)
    if validation_data is not None:
        if validation_split:
            raise ValueError(f"pass validation_data or validation_split, not both (validation_split="
                             f"{validation_split})")
        return source, (sources_module.validation_source(model, validation_data, loss), None)
    if validation_split:
        labels = source.labels("validation_split")
        train, held_out, _, _ = split_validation(np.arange(len(labels)), labels, validation_split, seed)
        return source.take(train), (source.take(held_out), None)
    return source, None


def split_validation(x: np.ndarray, y: np.ndarray, fraction: float, seed: int | None) -> tuple[np.ndarray, ...]:
    """``x, x_val, y, y_val``: ``fraction`` of each class held out (seeded, with
    :func:`cnnlab.data.train_test_split`), the rest in order. For target rows ``y`` a sample's
    class is its row's largest entry."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) \
            or not 0 < fraction < 1:
        raise ValueError(f"validation_split must be a fraction in [0, 1), got {fraction!r}")
    classes = y if y.ndim == 1 else y.argmax(axis=1)  # target rows: stratified by each row's class
    train, held_out, _, _ = data_module.train_test_split(np.arange(len(y)), classes, test_size=fraction, seed=seed)
    if len(held_out) == 0 or len(train) == 0:
        raise ValueError(f"validation_split={fraction} of {len(y)} samples leaves "
                         f"{len(train)} to train on and {len(held_out)} to validate: use more samples "
                         "or another fraction")
    train = np.sort(train)
    return x[train], x[held_out], y[train], y[held_out]


def _augmenter(augment: bool | Callable | None) -> Callable | None:
    """``augment(batch, rng) -> batch`` for ``fit(augment=...)``, or None."""
    if augment is True:
        return data_module.Augmenter()
    if augment is False or augment is None:
        return None
    if not callable(augment):
        raise TypeError(f"augment must be True, False, None or a callable, got {augment!r}")
    return augment


def class_weights(model: ModelLike, class_weight: dict | str | None, y: np.ndarray,
                  loss: losses_module.Loss) -> np.ndarray | None:
    """The ``(classes,)`` float64 weights for ``fit(class_weight=...)``, or None ('balanced'
    counts each sample as its class: the label, or the largest entry of its target row)."""
    if class_weight is None:
        return None
    if not loss.class_weighted:
        raise ValueError(f"class_weight works with the cross-entropy loss, got loss={loss.name!r}")
    classes = model.num_classes()
    weights = np.ones(classes)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight must be None, a dict or 'balanced', got {class_weight!r}")
        counts = np.bincount(y if y.ndim == 1 else y.argmax(axis=1), minlength=classes)
        present = counts > 0
        weights[present] = len(y) / (present.sum() * counts[present])
        return weights
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight must be None, a dict or 'balanced', got {type(class_weight).__name__}")
    names = list(model.class_names or [])
    for key, value in class_weight.items():
        index = names.index(key) if key in names else key
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not 0 <= index < classes:
            raise ValueError(f"class_weight has key {key!r}: keys must be class indices in [0, {classes})"
                             + (f" or class names {names}" if names else ""))
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not math.isfinite(value) or value < 0:
            raise ValueError(f"class_weight[{key!r}] must be a finite number >= 0, got {value!r}")
        weights[index] = float(value)
    return weights


def _with_defaults(callbacks: list[callbacks_module.Callback],
                   verbose: int) -> tuple[callbacks_module.History, list[callbacks_module.Callback]]:
    """``(history, callbacks)``: a :class:`History` (yours, if you passed one) and, when
    ``verbose``, a :class:`ProgbarLogger` (unless you passed one), ahead of your callbacks."""
    history = next((c for c in callbacks if isinstance(c, callbacks_module.History)), None)
    defaults = []
    if history is None:
        history = callbacks_module.History()
        defaults.append(history)
    if verbose and not any(isinstance(c, callbacks_module.ProgbarLogger) for c in callbacks):
        defaults.append(callbacks_module.ProgbarLogger())
    return history, defaults + callbacks


class _Run:
    """One ``fit``: its settings, and the state that lives from epoch to epoch (the shuffling
    generator, the dropout seed, the running loss and accuracy of the epoch)."""

    def __init__(self, model: ModelLike, source: sources_module.Source, batch_size: int, shuffle: bool,
                 augment: Callable | None, seed: int | None):
        self.model, self.source = model, source
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.base_seed = int(np.random.SeedSequence(seed).generate_state(1)[0] % (2**31))
        self.rng = np.random.default_rng(self.base_seed)
        self.start_epoch = 0
        self.class_weights = None  # (classes,) on the model's device
        self.reads_batch_logs = False
        self.report = None  # the compilation report while the epochs run
        self.totals, self.seen = None, 0

    def upload(self) -> None:
        """On the GPU an in-memory training set goes to the device once; each step gathers its
        batch there, and the loss and hits are summed there (read only to draw progress)."""
        if self.model.device == "cuda" and self.augment is None:
            self.source.upload()

    def compiling(self) -> float:
        """Seconds spent compiling kernels since the epochs started."""
        return self.report.elapsed() if self.report is not None else 0.0

    def read_metrics(self) -> tuple[float, float]:
        """The epoch's running mean loss and accuracy (on the GPU a copy to the host)."""
        loss_sum, hits = to_host(self.totals)
        if not math.isfinite(loss_sum):
            raise FloatingPointError(f"the loss became {loss_sum}: lower the learning rate")
        return loss_sum / self.seen, hits / self.seen

    def run_epochs(self, epochs: int, callbacks: list[callbacks_module.Callback], validation: Data | None,
               checkpoint: str | os.PathLike | None, history: callbacks_module.History,
               interrupt: _DeferredInterrupt) -> dict:
        """Train from :attr:`start_epoch` up to ``epochs`` (or until a callback stops it);
        returns the last epoch's metrics ({} when none ran)."""
        model, record = self.model, {}
        for epoch in range(self.start_epoch, epochs):
            record = self.train_epoch(epoch, callbacks, interrupt)
            if validation is not None:
                scores = model.evaluate(*validation, loss=model.loss)
                record.update(val_loss=scores["loss"], val_accuracy=scores["accuracy"])
            check_finite(model, record)
            for callback in callbacks:
                callback.on_epoch_end(epoch, dict(record))
            if checkpoint is not None:
                saving.save_checkpoint(model, checkpoint, epoch + 1, self.rng, history.history, self.base_seed)
            interrupt.check()
            if model.stop_training:
                history.stopped_epoch = epoch
                break
        return record

    def train_epoch(self, epoch: int, callbacks: list[callbacks_module.Callback],
                    interrupt: _DeferredInterrupt) -> dict:
        """One pass over the training data; its ``loss``, ``accuracy``, ``lr`` and ``seconds``."""
        model, samples = self.model, self.source.samples
        for callback in callbacks:
            callback.on_epoch_begin(epoch, {})
        self.totals, self.seen = model.to_model_device(np.zeros(2)), 0  # loss sum, correct predictions
        epoch_start = time.perf_counter()
        batches = self.source.epoch(epoch, self.rng, self.base_seed, self.batch_size, self.shuffle, self.augment)
        for step, (batch, targets) in enumerate(batches):
            model.optimizer.set_epoch(epoch, min(self.seen / samples, 1.0))
            step_seed = self.base_seed * 7919 + model.optimizer.steps * 104729  # for random masks
            train_step(model, batch, targets, self.totals, self.class_weights, step_seed)
            self.seen += targets.shape[0]
            logs = {}
            if self.reads_batch_logs:
                mean_loss, accuracy = self.read_metrics()
                logs = dict(epoch=epoch, steps=model.optimizer.steps, loss=mean_loss, accuracy=accuracy,
                            lr=model.optimizer.lr)
            for callback in callbacks:
                callback.on_batch_end(step, logs)
            interrupt.check()
        mean_loss, accuracy = self.read_metrics()
        return dict(loss=mean_loss, accuracy=accuracy, lr=model.optimizer.lr, seconds=time.perf_counter() - epoch_start)


def train_step(model: ModelLike, batch: Any, targets: Any, totals: Any, class_weights: Any = None,
               step_seed: int | None = None) -> None:
    """Forward, loss, backward and update for one batch already on the model's device;
    adds the batch's loss sum and correct predictions to ``totals`` (on that device).
    ``class_weights`` ((classes,), on that device) weighs each sample's loss by its class;
    ``step_seed`` seeds the random masks of this step."""
    logits = model.loss_input(model.loss)
    # on the host, the step's arrays are the buffers of the steps before (see Graph.step_pool)
    with model.graph.step_pool().lending() if model.device == "cpu" else contextlib.nullcontext():
        out, = model.graph.forward([batch], training=True, targets=[logits], seed=step_seed, input_grads=False)
        grad = model.loss.train_batch(out, targets, totals, class_weights)
        model.graph.backward({id(logits): grad}, input_grads=False)
        parameters = [(layer.params[name], layer.grads[name]) for layer, name in model.parameters()]
        model.optimizer.step(parameters)
        model.graph.release_saved()


def evaluate(model: ModelLike, x: Any, y: Any, batch_size: int, loss: losses_module.Loss,
             top_k: int | None = None) -> dict[str, float]:
    """``{'loss', 'accuracy'}`` of images ``x`` and labels (or target rows) ``y`` (arrays; or ``y``
    None and ``x`` any input ``fit`` takes: :func:`cnnlab.sources.evaluation_source`), batch by
    batch on the model's device (see :meth:`cnnlab.Model.evaluate`); with ``top_k`` also
    ``'top_<k>_accuracy'``."""
    total_loss, correct, top, count = 0.0, 0.0, 0, 0
    loss_input = model.loss_input(loss)
    with sources_module.evaluation_source(model, x, y, loss).evaluation(batch_size) as batches:
        for batch, labels in batches:
            out, = model.graph.forward([model.to_model_device(batch)], targets=[loss_input])
            total_loss += loss.label_loss(out, labels) * batch.shape[0]
            correct += loss.correct(out, labels)
            if top_k is not None:
                top += metrics.top_k_correct(to_host(out), labels, top_k)
            count += batch.shape[0]
    scores = {"loss": total_loss / count, "accuracy": correct / count}
    if top_k is not None:
        scores[f"top_{top_k}_accuracy"] = top / count
    return scores


def read_as_trained(paths: Sequence[str | os.PathLike], preprocessing: dict) -> np.ndarray:
    """The image files ``paths`` as one batch, read (:func:`cnnlab.data.read_image`) and
    standardized with a model's ``preprocessing`` (``size``, ``color``, ``resize``, ``mean``,
    ``std``): what :meth:`cnnlab.Model.predict_files` classifies."""
    keywords = {"resize": preprocessing["resize"]} if "resize" in preprocessing else {}
    images = np.stack([data_module.read_image(path, preprocessing["size"], preprocessing.get("color", "rgb"),
                                              **keywords) for path in paths])
    if preprocessing.get("mean") is not None and preprocessing.get("std") is not None:
        images, _, _ = data_module.standardize(images, preprocessing["mean"], preprocessing["std"])
    return images
