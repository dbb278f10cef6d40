"""``Sequential``: a stack of layers that trains by backpropagation over mini-batches.

>>> import numpy as np, cnnlab
>>> from cnnlab.layers import Conv2D, ReLU, MaxPool2D, Flatten, Dense, Softmax
>>> model = cnnlab.Sequential([Conv2D(1, 4, 3, padding=1, seed=0), ReLU(), MaxPool2D(2),
...                            Flatten(), Dense(4 * 4 * 4, 10, seed=1), Softmax()],
...                           input_shape=(1, 8, 8))
>>> model.summary(print_fn=None).splitlines()[-3]
'Total parameters: 690'
"""

import contextlib
import copy
import json
import math
import os
import signal
import sys
import tempfile
import threading
import time

import numpy as np

from . import __version__
from . import functional as F
from . import losses as losses_module
from . import optim as optim_module
from .device import cuda_available, is_gpu_array, to_device, to_host
from .layers import LAYER_TYPES, Conv2D, Dropout, Layer, Softmax

__all__ = ["Sequential", "History", "load"]

FORMAT = "cnnlab-model-1"


class History:
    """What :meth:`Sequential.fit` measured: ``history`` maps a metric name to one value per
    epoch (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ``seconds``)."""

    def __init__(self, history=None):
        self.history = history or {}

    def append(self, **values):
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)

    def __repr__(self):
        return f"History({self.history})"


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


class _Progress:
    """One line per epoch: a bar, loss, accuracy, samples/s and the time left.

    On a terminal the line redraws in place; in a log (not a terminal) only the epoch's
    final line is written."""

    def __init__(self, epoch, epochs, total, verbose, stream=None):
        self.epoch, self.epochs, self.total = epoch, epochs, total
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._last_draw = 0.0

    def _line(self, done, loss, accuracy, final):
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        rate = done / elapsed
        width = 24
        filled = int(width * done / self.total)
        bar = "=" * filled + (">" if filled < width else "") + "." * max(0, width - filled - 1)
        timing = f"{elapsed:.1f}s" if final else f"ETA {(self.total - done) / max(rate, 1e-9):.1f}s"
        return (f"epoch {self.epoch + 1}/{self.epochs} [{bar}] {done}/{self.total} loss {loss:.4f} "
                f"acc {accuracy:.4f} {rate:,.0f} samples/s {timing}")

    def update(self, done, read):
        """Redraw (at most every 0.1 s) with ``read() -> (loss, accuracy)``, called only to draw:
        on the GPU reading the running totals is a copy to the host."""
        if not (self.verbose and self.interactive):
            return
        now = time.perf_counter()
        if now - self._last_draw >= 0.1:
            self._last_draw = now
            loss, accuracy = read()
            print("\r" + self._line(done, loss, accuracy, final=False), end="", file=self.stream, flush=True)

    def finish(self, loss, accuracy, extra=""):
        if self.verbose:
            prefix = "\r" if self.interactive else ""
            print(prefix + self._line(self.total, loss, accuracy, final=True) + extra, file=self.stream,
                  flush=True)


class Sequential:
    """Layers applied in order; trains with mini-batch backpropagation.

    Parameters
    ----------
    layers : list of Layer
    input_shape : tuple or None
        One sample's shape, e.g. ``(1, 28, 28)``; lets :meth:`summary` and input checks work
        before the first ``fit``.
    dtype : 'float32', 'float64' or None
        Cast every layer's parameters to this dtype.
    """

    def __init__(self, layers, input_shape=None, dtype=None):
        layers = list(layers)
        if not layers:
            raise ValueError("a Sequential model needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a cnnlab layer, got {type(layer).__name__}")
        self.layers = layers
        self.device = "cpu"
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        if dtype is not None:
            dtype = np.dtype(dtype)
            if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
                raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype}")
            for layer in layers:
                if layer.dtype is not None:
                    layer.dtype = dtype
                    for store in (layer.params, layer.buffers):
                        for name in store:
                            store[name] = store[name].astype(dtype)
        first = self._first_with_params()
        if isinstance(first, Conv2D) and first is layers[0]:
            first.input_grad = False  # nothing before it needs the input gradient
        if self.input_shape is not None:
            self.output_shapes(self.input_shape)
        self.optimizer = None
        self.loss = None
        self.class_names = None
        self.preprocessing = None  # e.g. image size, colour mode, standardization: kept in saved models

    def _first_with_params(self):
        return next((layer for layer in self.layers if layer.params), None)

    @property
    def dtype(self):
        return next((layer.dtype for layer in self.layers if layer.dtype is not None), np.dtype(np.float32))

    # --- structure ----------------------------------------------------------------
    def output_shapes(self, input_shape):
        """Each layer's output shape (one sample) for ``input_shape``; ``ValueError`` naming
        the first layer that does not fit."""
        shapes = []
        shape = tuple(input_shape)
        for index, layer in enumerate(self.layers):
            try:
                shape = tuple(int(s) for s in layer.output_shape(shape))
            except ValueError as exc:
                raise ValueError(f"input shape {tuple(input_shape)} does not fit layer {index} "
                                 f"({type(layer).__name__}): {exc}") from None
            shapes.append(shape)
        return shapes

    def parameters(self, trainable_only=True):
        """``(layer, name)`` pairs of the parameters, in a fixed order."""
        return [(layer, name) for layer in self.layers for name in layer.params
                if layer.trainable or not trainable_only]

    def parameter_count(self):
        return sum(layer.parameter_count() for layer in self.layers)

    def summary(self, input_shape=None, print_fn=print):
        """A Keras-style table: each layer's output shape and parameter count, and the totals.

        Returns the table as a string (and prints it unless ``print_fn`` is None)."""
        input_shape = tuple(input_shape) if input_shape is not None else self.input_shape
        shapes = self.output_shapes(input_shape) if input_shape is not None else [None] * len(self.layers)
        rows = [("Layer (type)", "Output shape", "Param #")]
        for index, (layer, shape) in enumerate(zip(self.layers, shapes)):
            shown = "(None, " + ", ".join(str(s) for s in shape) + ")" if shape is not None else "?"
            rows.append((f"{index}: {type(layer).__name__}", shown, f"{layer.parameter_count():,}"))
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        line = "-" * (sum(widths) + 4)
        text = [line, "  ".join(v.ljust(w) for v, w in zip(rows[0], widths)), "=" * len(line)]
        text += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in rows[1:]]
        total = self.parameter_count()
        trainable = sum(layer.parameter_count() for layer in self.layers if layer.trainable)
        text += ["=" * len(line), f"Total parameters: {total:,}", f"Trainable parameters: {trainable:,}",
                 f"Non-trainable parameters: {total - trainable:,}"]
        result = "\n".join(text)
        if print_fn is not None:
            print_fn(result)
        return result

    def freeze(self, up_to=None):
        """Make layers ``0 .. up_to-1`` (all, when None) untrainable; returns ``self``.

        Changes this model in place (see :meth:`copy`)."""
        from .shapes import check_int

        stop = len(self.layers) if up_to is None else check_int("up_to", up_to, 0)
        if stop > len(self.layers):
            raise ValueError(f"up_to must be at most the number of layers ({len(self.layers)}), got {stop}")
        for layer in self.layers[:stop]:
            layer.trainable = False
        return self

    def copy(self):
        """An independent copy: same layers, weights, ``trainable`` flags, class names and
        preprocessing, on the same device, with no optimizer state.

        :meth:`freeze`, :meth:`replace_head` and :meth:`fit` change a model in place; copy a
        trained base first to reuse it for several new tasks.
        """
        return _build(self.architecture(), self._arrays(), "the model").to(self.device)

    def replace_head(self, classes, seed=None):
        """Swap the last ``Dense`` layer for a new one with ``classes`` outputs (transfer learning).

        The layers before it keep their weights (freeze them with :meth:`freeze` to keep them
        fixed); a final ``Softmax`` stays in place. Changes this model in place and returns
        ``self``: call :meth:`copy` first to keep the original.
        """
        from .layers import Dense
        from .shapes import check_int

        classes = check_int("classes", classes, 1)
        index = max((i for i, layer in enumerate(self.layers) if isinstance(layer, Dense)), default=None)
        if index is None:
            raise ValueError("the model has no Dense layer to replace")
        old = self.layers[index]
        new = Dense(old.in_features, classes, bias=old.use_bias, dtype=old.dtype.name, init=old.init, seed=seed)
        self.layers[index] = new.to(self.device)
        self.class_names = None
        self.optimizer = None  # its state belonged to the old parameters
        return self

    def unfreeze(self):
        for layer in self.layers:
            layer.trainable = True
        return self

    # --- device -------------------------------------------------------------------
    def to(self, device):
        """Keep parameters, activations and optimizer state on ``'cpu'`` or ``'cuda'``."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        if device == "cuda" and not cuda_available():
            raise RuntimeError("model.to('cuda'): no CUDA GPU is available (install the 'cuda' extra "
                               "on a machine with an NVIDIA GPU)")
        for layer in self.layers:
            layer.to(device)
        if self.optimizer is not None:
            self.optimizer.to(device)
        self.device = device
        return self

    # --- running ------------------------------------------------------------------
    def forward(self, x, training=False):
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, grad):
        for layer in reversed(self.layers):
            grad = layer.backward(grad)
            if grad is None:
                break
        return grad

    def _logit_layers(self, loss):
        """The layers that produce the loss's input: all but a final Softmax under cross-entropy."""
        if isinstance(loss, losses_module.CrossEntropy) and isinstance(self.layers[-1], Softmax):
            return self.layers[:-1]
        return self.layers

    def _check_inputs(self, x, name="x"):
        if is_gpu_array(x):
            raise TypeError(f"{name} must be a host (NumPy) array: the model copies each batch to its "
                            f"device ({self.device})")
        if isinstance(x, (str, bytes)) or x is None:
            raise TypeError(f"{name} must be an array of images, got {type(x).__name__}")
        x = np.asarray(x)
        if x.dtype.kind in "biu":
            raise TypeError(f"{name} has integer dtype {x.dtype}: scale 0-255 images with "
                            "cnnlab.data.normalize(images) first")
        if x.dtype.kind != "f":
            raise TypeError(f"{name} must hold float32 or float64 values, got dtype {x.dtype}")
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty batch (N, ...), got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            raise ValueError(f"{name} contains {bad} NaN or infinite values")
        self.output_shapes(x.shape[1:])
        if self.input_shape is None:
            self.input_shape = tuple(x.shape[1:])
        return x.astype(self.dtype, copy=False)

    def _check_labels(self, y, samples, name="y"):
        classes = self.output_shapes(self.input_shape)[-1][0]
        if y is None:
            raise TypeError(f"{name} must be integer class labels, got None")
        if is_gpu_array(y):
            raise TypeError(f"{name} must be a host (NumPy) array")
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != samples:
            raise ValueError(f"x and {name} must have the same length: {samples} images but {name} has "
                             f"shape {y.shape}")
        return F.as_targets(name, y, samples, classes)

    def _batches(self, x, batch_size):
        for start in range(0, x.shape[0], batch_size):
            yield start, x[start:start + batch_size]

    def _to_model_device(self, a):
        return to_device(np.ascontiguousarray(a)) if self.device == "cuda" else a

    def predict_proba(self, x, batch_size=256):
        """Class probabilities, ``(N, classes)``, as a NumPy array."""
        x = self._check_inputs(x)
        outputs = []
        final_softmax = isinstance(self.layers[-1], Softmax)
        for _, batch in self._batches(x, batch_size):
            out = self.forward(self._to_model_device(batch), training=False)
            if not final_softmax:
                out = F.softmax(out)
            outputs.append(to_host(out))
        return np.concatenate(outputs)

    def predict(self, x, batch_size=256):
        """Predicted class indices, ``(N,)``."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def evaluate(self, x, y, batch_size=256, loss=None):
        """``{'loss': mean loss, 'accuracy': fraction correct}`` on ``(x, y)``."""
        x = self._check_inputs(x)
        y = self._check_labels(y, x.shape[0])
        loss = losses_module.get(loss or self.loss or "cross_entropy")
        total_loss, correct = 0.0, 0
        layers = self._logit_layers(loss)
        for start, batch in self._batches(x, batch_size):
            out = self._to_model_device(batch)
            for layer in layers:
                out = layer.forward(out, training=False)
            targets = y[start:start + batch.shape[0]]
            if isinstance(loss, losses_module.CrossEntropy):
                target = self._to_model_device(targets)
            else:
                target = self._one_hot_like(out, targets)
            total_loss += loss.forward(out, target) * batch.shape[0]
            correct += int((to_host(out).argmax(axis=1) == targets).sum())
        return {"loss": total_loss / x.shape[0], "accuracy": correct / x.shape[0]}

    # --- training -----------------------------------------------------------------
    def fit(self, x, y, epochs=1, batch_size=32, optimizer=None, loss="cross_entropy",
            validation_data=None, shuffle=True, seed=None, verbose=1, checkpoint=None, resume=None,
            augment=None):
        """Train with mini-batch backpropagation.

        Parameters
        ----------
        x : (N, C, H, W) float array (host memory)
        y : (N,) integer class labels
        epochs : int
            Total number of epochs (a resumed run continues up to it).
        batch_size : int
        optimizer : Optimizer or None (``Adam(1e-3)``)
        loss : 'cross_entropy', 'mse' or a loss object
        validation_data : (x_val, y_val) or None
            Evaluated after each epoch (never augmented, never trained on).
        shuffle : bool
            Reshuffle the samples every epoch (seeded by ``seed``).
        seed : int or None
            Seeds the shuffling and the dropout masks: the same seed repeats the run.
        verbose : 0 or 1
            1 shows a progress bar per epoch (loss, accuracy, samples/s, ETA).
        checkpoint : path or None
            After every epoch, atomically save the model, optimizer state, epoch, random
            state and history there.
        resume : path or None
            Continue from a checkpoint written by ``checkpoint=``; ends with the same
            weights as an uninterrupted run.
        augment : bool, callable or None
            ``True`` applies :class:`cnnlab.data.Augmenter` with its defaults to each training
            batch; a callable ``augment(batch, rng) -> batch`` is used as given. Validation
            data are never augmented.

        Returns
        -------
        History

        Raises
        ------
        TypeError, ValueError
            For bad data (checked before any training step; the weights are untouched).
        KeyboardInterrupt
            On Ctrl-C, after the step in progress completes: the model holds its last
            completed step and the last checkpoint stays valid.
        FloatingPointError
            When the loss stops being finite (learning rate too high): on the CPU before
            that step's update; on the GPU when the running totals are next read (progress
            or the end of the epoch), since reading them every step would cost a round trip.
        """
        x = self._check_inputs(x)
        y = self._check_labels(y, x.shape[0])
        if validation_data is not None:
            if len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val)")
            x_val = self._check_inputs(validation_data[0], "validation x")
            y_val = self._check_labels(validation_data[1], x_val.shape[0], "validation y")
        from .shapes import check_int

        epochs = check_int("epochs", epochs, 1)
        if augment is True:
            from .data import Augmenter

            augment = Augmenter()
        elif augment is False:
            augment = None
        elif augment is not None and not callable(augment):
            raise TypeError(f"augment must be True, False, None or a callable, got {augment!r}")
        batch_size = check_int("batch_size", batch_size, 1)
        self.loss = losses_module.get(loss)
        if optimizer is not None:
            self.optimizer = optimizer
        elif self.optimizer is None:
            self.optimizer = optim_module.Adam()
        self.optimizer.to(self.device)

        history = History()
        start_epoch = 0
        base_seed = int(np.random.SeedSequence(seed).generate_state(1)[0] % (2**31))
        rng = np.random.default_rng(base_seed)
        if resume is not None:
            start_epoch, rng, history, base_seed = self._load_checkpoint(resume)

        layers = self._logit_layers(self.loss)
        dropouts = [layer for layer in layers if isinstance(layer, Dropout)]
        # On the GPU the whole training set goes to the device once; each step gathers its
        # batch there, and the loss and hits are summed there (read only to draw progress).
        resident = self.device == "cuda" and augment is None
        if resident:
            x_source, y_source = to_device(x), to_device(y)
        with _DeferredInterrupt() as interrupt:
            for epoch in range(start_epoch, epochs):
                self.optimizer.set_epoch(epoch)
                order = rng.permutation(x.shape[0]) if shuffle else np.arange(x.shape[0])
                progress = _Progress(epoch, epochs, x.shape[0], verbose)
                totals = self._to_model_device(np.zeros(2))  # loss sum, correct predictions
                seen = 0

                def read_totals():
                    loss_sum, hits = to_host(totals)
                    if not math.isfinite(loss_sum):
                        raise FloatingPointError(f"the loss became {loss_sum}: lower the learning rate")
                    return loss_sum / seen, hits / seen

                epoch_start = time.perf_counter()
                for start in range(0, x.shape[0], batch_size):
                    index = order[start:start + batch_size]
                    if resident:
                        device_index = to_device(np.ascontiguousarray(index, dtype=np.int64))
                        batch, targets = F.gather_rows(x_source, device_index), F.gather_rows(y_source, device_index)
                    else:
                        batch, targets = x[index], y[index]
                        if augment is not None:
                            batch = np.ascontiguousarray(augment(batch, rng), dtype=x.dtype)
                        batch, targets = self._to_model_device(batch), self._to_model_device(targets)
                    for number, layer in enumerate(dropouts):
                        layer.step_seed = int((base_seed * 7919 + self.optimizer.steps * 104729 + number)
                                              % (2**31))
                    self._train_step(layers, batch, targets, totals)
                    seen += len(index)
                    progress.update(seen, read_totals)
                    interrupt.check()
                mean_loss, accuracy = read_totals()
                record = dict(loss=mean_loss, accuracy=accuracy, lr=self.optimizer.lr,
                              seconds=time.perf_counter() - epoch_start)
                extra = ""
                if validation_data is not None:
                    scores = self.evaluate(x_val, y_val, loss=self.loss)
                    record.update(val_loss=scores["loss"], val_accuracy=scores["accuracy"])
                    extra = f" - val_loss {scores['loss']:.4f} val_acc {scores['accuracy']:.4f}"
                history.append(**record)
                progress.finish(record["loss"], record["accuracy"], extra)
                if checkpoint is not None:
                    self._save_checkpoint(checkpoint, epoch + 1, rng, history, base_seed)
                interrupt.check()
        for layer in dropouts:
            layer.step_seed = None
        return history

    def _one_hot_like(self, out, labels):
        """One-hot rows of ``labels`` in ``out``'s dtype, on the model's device (MSE targets)."""
        from .data import one_hot

        return self._to_model_device(one_hot(labels, out.shape[1]).astype(np.dtype(out.dtype)))

    def _train_step(self, layers, batch, targets, totals):
        """Forward, loss, backward and update for one batch already on the model's device;
        adds the batch's loss sum and correct predictions to ``totals`` (on that device)."""
        out = batch
        for layer in layers:
            out = layer.forward(out, training=True)
        if isinstance(self.loss, losses_module.CrossEntropy):
            losses, probabilities = F.cross_entropy_per_sample(out, targets)
            if self.device == "cpu" and not np.all(np.isfinite(losses)):  # free to check here
                raise FloatingPointError("the loss became non-finite: lower the learning rate")
            F.add_classification_totals(losses, probabilities, targets, totals)
            grad = F.cross_entropy_backward(probabilities, targets)
        else:  # squared error against one-hot rows
            host_targets = to_host(targets)
            loss_value = self.loss.forward(out, self._one_hot_like(out, host_targets))
            if not math.isfinite(loss_value):
                raise FloatingPointError(f"the loss became {loss_value}: lower the learning rate")
            host = to_host(totals).copy()
            host += (loss_value * batch.shape[0], int((to_host(out).argmax(axis=1) == host_targets).sum()))
            if self.device == "cuda":
                totals.copy_to_device(host)
            else:
                totals[:] = host
            grad = self.loss.backward()
        for layer in reversed(layers):
            grad = layer.backward(grad)
            if grad is None:
                break
        parameters = [(layer.params[name], layer.grads[name]) for layer, name in self.parameters()]
        self.optimizer.step(parameters)

    # --- saving -------------------------------------------------------------------
    def _arrays(self):
        arrays = {}
        for index, layer in enumerate(self.layers):
            for name, value in layer.params.items():
                arrays[f"param/{index}/{name}"] = to_host(value)
            for name, value in layer.buffers.items():
                arrays[f"buffer/{index}/{name}"] = to_host(value)
        return arrays

    def architecture(self):
        return dict(layers=[dict(type=type(layer).__name__, config=layer.config(),
                                 trainable=layer.trainable) for layer in self.layers],
                    input_shape=list(self.input_shape) if self.input_shape else None,
                    class_names=self.class_names, preprocessing=self.preprocessing)

    def save(self, path):
        """Write the model to one ``.npz`` file: the architecture as JSON and the weights.

        The file is written to a temporary name and renamed, so it is never half-written."""
        _write_npz(path, dict(self._arrays(), cnnlab_format=np.array(FORMAT),
                              cnnlab_version=np.array(__version__),
                              architecture=np.array(json.dumps(self.architecture()))))

    def _save_checkpoint(self, path, epochs_done, rng, history, base_seed):
        state = dict(epochs_done=epochs_done, rng=rng.bit_generator.state, history=history.history,
                     base_seed=base_seed, optimizer=self.optimizer.config(), steps=self.optimizer.steps,
                     loss=self.loss.name)
        arrays = self._arrays()
        arrays.update({f"optimizer/{k}": v for k, v in self.optimizer.state_arrays().items()})
        _write_npz(path, dict(arrays, cnnlab_format=np.array(FORMAT), cnnlab_version=np.array(__version__),
                              architecture=np.array(json.dumps(self.architecture())),
                              training_state=np.array(json.dumps(state))))

    def _load_checkpoint(self, path):
        data = _read_npz(path)
        if "training_state" not in data:
            raise ValueError(f"{path} is a cnnlab model but not a training checkpoint (save it with "
                             "fit(..., checkpoint=path))")
        self._load_arrays(data, path)
        state = json.loads(str(data["training_state"]))
        self.optimizer = optim_module.from_config(state["optimizer"])
        optimizer_arrays = {k[len("optimizer/"):]: v for k, v in data.items() if k.startswith("optimizer/")}
        self.optimizer.load_state_arrays(optimizer_arrays, state["steps"], self.device)
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        return state["epochs_done"], rng, History(state["history"]), state["base_seed"]

    def _load_arrays(self, data, path):
        architecture = json.loads(str(data["architecture"]))
        mine = self.architecture()["layers"]
        theirs = architecture["layers"]
        if [(l["type"], l["config"]) for l in mine] != [(l["type"], l["config"]) for l in theirs]:
            raise ValueError(f"{path} holds a different architecture than this model")
        for index, layer in enumerate(self.layers):
            for store, prefix in ((layer.params, "param"), (layer.buffers, "buffer")):
                for name in store:
                    value = data[f"{prefix}/{index}/{name}"].astype(store[name].dtype)
                    store[name] = to_device(value) if self.device == "cuda" else value


def _write_npz(path, arrays):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".cnnlab-", suffix=".npz.tmp", dir=directory)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _read_npz(path):
    try:
        with np.load(os.fspath(path), allow_pickle=False) as archive:
            data = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a cnnlab model file: {exc}") from None
    if "cnnlab_format" not in data or str(data["cnnlab_format"]) != FORMAT:
        raise ValueError(f"{path} is not a cnnlab model file (no '{FORMAT}' marker)")
    return data


def load(path, device="cpu"):
    """Load a model written by :meth:`Sequential.save` (or a checkpoint).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a cnnlab model, or its layers or weights do not match.
    """
    data = _read_npz(path)
    try:
        architecture = json.loads(str(data["architecture"]))
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a valid cnnlab model: {exc}") from None
    model = _build(architecture, data, path)
    return model.to(device) if device != "cpu" else model


def _build(architecture, arrays, source):
    """A CPU model from ``architecture()`` and ``_arrays()``; errors name ``source``. Shares
    no mutable state with them: class names and preprocessing are copied, weights cast anew."""
    try:
        layers = []
        for spec in architecture["layers"]:
            if spec["type"] not in LAYER_TYPES:
                raise ValueError(f"unknown layer type {spec['type']!r}")
            config = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()}
            layer = LAYER_TYPES[spec["type"]](**config)
            layer.trainable = spec.get("trainable", True)
            layers.append(layer)
        model = Sequential(layers, input_shape=architecture.get("input_shape"))
        model.class_names = copy.deepcopy(architecture.get("class_names"))
        model.preprocessing = copy.deepcopy(architecture.get("preprocessing"))
        for index, layer in enumerate(model.layers):
            for store, prefix in ((layer.params, "param"), (layer.buffers, "buffer")):
                for name in store:
                    key = f"{prefix}/{index}/{name}"
                    if key not in arrays or arrays[key].shape != store[name].shape:
                        raise ValueError(f"weights {key} are missing or of the wrong shape")
                    store[name] = arrays[key].astype(store[name].dtype)  # always a fresh array
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{source} is not a valid cnnlab model: {exc}") from None
    return model
