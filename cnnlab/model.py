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
import stat
import sys
import tempfile
import threading
import time
import zipfile
import zlib

import numpy as np

from . import __version__
from . import callbacks as callbacks_module
from . import functional as F
from . import losses as losses_module
from . import optim as optim_module
from .compilation import report_compilation
from .device import cuda_available, is_gpu_array, to_device, to_host
from .layers import LAYER_TYPES, Conv2D, Dropout, Layer, Softmax

__all__ = ["Sequential", "History", "load"]

FORMAT = "cnnlab-model-1"


class History:
    """What :meth:`Sequential.fit` measured: ``history`` maps a metric name to one value per
    epoch (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ``seconds``).

    ``stopped_epoch`` is the epoch (counting from 0) after which a callback stopped training
    (None when all epochs ran); ``best_epoch`` the best epoch seen by ``EarlyStopping`` (whose
    weights it restores), an index into the lists of ``history``."""

    def __init__(self, history=None):
        self.history = history or {}
        self.best_epoch = None
        self.stopped_epoch = None

    def append(self, **values):
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)

    def __repr__(self):
        events = "".join(f", {name}={getattr(self, name)}" for name in ("best_epoch", "stopped_epoch")
                         if getattr(self, name) is not None)
        return f"History({self.history}{events})"


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

    def __init__(self, epoch, epochs, total, verbose, stream=None, clock=time.perf_counter,
                 compiling=lambda: 0.0):
        self.epoch, self.epochs, self.total = epoch, epochs, total
        self.verbose = verbose
        self.stream = stream or sys.stdout
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.clock, self.compiling = clock, compiling  # compiling(): seconds spent compiling so far
        self.start, self._compiled_before = clock(), compiling()
        self._last_draw = 0.0

    def _line(self, done, loss, accuracy, final):
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

    def update(self, done, read):
        """Redraw (at most every 0.1 s) with ``read() -> (loss, accuracy)``, called only to draw:
        on the GPU reading the running totals is a copy to the host."""
        if not (self.verbose and self.interactive):
            return
        now = self.clock()
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
        self.stop_training = False  # a callback sets it to end fit after the current epoch
        self.history = None  # the History of the last fit

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        """``model[i]`` is layer ``i``; a slice gives a list of layers."""
        if not isinstance(index, (int, np.integer, slice)) or isinstance(index, bool):
            raise TypeError(f"model[...] takes a layer index or a slice, got {index!r}")
        return self.layers[index]

    def __repr__(self):
        shape = tuple(self.input_shape) if self.input_shape is not None else None
        return (f"{type(self).__name__}({len(self.layers)} layers, input_shape={shape}, "
                f"parameters={self.parameter_count():,}, device={self.device!r})")

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
        self._check_batch_axis(x, name)
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

    def _check_batch_axis(self, x, name):
        """A clear error for one image passed without its batch axis."""
        first = self.layers[0]
        if self.input_shape is not None:
            expected = tuple(self.input_shape)
        elif isinstance(first, Conv2D):
            expected = (first.in_channels, "H", "W")
        else:
            return
        if x.ndim != len(expected):
            return
        shown = ", ".join(str(s) for s in expected)
        message = f"{name} has shape {x.shape}; the model takes a batch (N, {shown})"
        if x.shape[0] == expected[0]:
            message += f": pass {name}[None] for one image"
        elif expected[0] == 1:
            message += f": pass {name}[:, None] to add the channel axis"
        raise ValueError(message)

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
        with report_compilation(sys.stderr):
            for _, batch in self._batches(x, batch_size):
                out = self.forward(self._to_model_device(batch), training=False)
                if not final_softmax:
                    out = F.softmax(out)
                outputs.append(to_host(out))
        return np.concatenate(outputs)

    def predict(self, x, batch_size=256):
        """Predicted class indices, ``(N,)``."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def predict_files(self, paths, top_k=1, batch_size=256):
        """Classify image files, read and standardized as the model was trained
        (:attr:`preprocessing`).

        Parameters
        ----------
        paths : path or list of paths
        top_k : int, default 1
            How many of the most likely classes to list per file.

        Returns
        -------
        list of dict
            One per file, in order: ``file``, ``label`` (the class name, or its index as a
            string), ``index``, ``probability``, and ``top_k``: ``(label, probability)`` pairs,
            most likely first.

        Raises
        ------
        ValueError
            If the model keeps no preprocessing, or a file cannot be read as an image.
        FileNotFoundError
            If a file does not exist.
        """
        from .data import read_image, standardize
        from .shapes import check_int

        settings = self.preprocessing
        if not isinstance(settings, dict) or "size" not in settings:
            raise ValueError("predict_files needs the model's preprocessing, got model.preprocessing="
                             f"{settings!r}: set model.preprocessing = dict(size=(height, width), "
                             "color='rgb' or 'gray', mean=[...], std=[...]) as used for training "
                             "(cnnlab train stores it)")
        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]
        paths = list(paths)
        if not paths:
            raise ValueError("paths is empty: pass one or more image files")
        classes = self.output_shapes(self.input_shape)[-1][0] if self.input_shape else None
        top_k = check_int("top_k", top_k, 1)
        if classes is not None and top_k > classes:
            raise ValueError(f"top_k must be at most the number of classes ({classes}), got {top_k}")
        keywords = {"resize": settings["resize"]} if "resize" in settings else {}
        images = np.stack([read_image(path, settings["size"], settings.get("color", "rgb"), **keywords)
                           for path in paths])
        if settings.get("mean") is not None and settings.get("std") is not None:
            images, _, _ = standardize(images, settings["mean"], settings["std"])
        probabilities = self.predict_proba(images, batch_size)
        names = self.class_names or [str(i) for i in range(probabilities.shape[1])]
        results = []
        for path, row in zip(paths, probabilities):
            order = np.argsort(-row, kind="stable")[:top_k]
            results.append(dict(file=os.fspath(path), label=names[order[0]], index=int(order[0]),
                                probability=float(row[order[0]]),
                                top_k=[(names[i], float(row[i])) for i in order]))
        return results

    def evaluate(self, x, y, batch_size=256, loss=None):
        """``{'loss': mean loss, 'accuracy': fraction correct}`` on ``(x, y)``."""
        x = self._check_inputs(x)
        y = self._check_labels(y, x.shape[0])
        loss = losses_module.get(loss or self.loss or "cross_entropy")
        layers = self._logit_layers(loss)
        with report_compilation(sys.stderr):
            return self._evaluate(x, y, batch_size, loss, layers)

    def _evaluate(self, x, y, batch_size, loss, layers):
        total_loss, correct = 0.0, 0
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
            augment=None, callbacks=None, validation_split=0.0, class_weight=None):
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
        callbacks : list of cnnlab.callbacks.Callback or None
            Run after each step and epoch (:mod:`cnnlab.callbacks`): early stopping, learning
            rate reduction, saving the best model, your own functions.
        validation_split : float in [0, 1), default 0
            Hold out this fraction of ``(x, y)`` (each class in proportion, seeded by ``seed``)
            as validation data, before any shuffling; not together with ``validation_data``.
        class_weight : None, dict or 'balanced'
            Weigh each sample's loss and gradient by its class: ``{class index or name:
            weight}`` (classes left out weigh 1), or ``'balanced'``: ``n_samples / (n_classes *
            count)`` per class (scikit-learn's rule), from the training samples. Cross-entropy
            loss only.

        Returns
        -------
        History

        Raises
        ------
        TypeError, ValueError
            For bad data or settings, or a callback monitoring a metric ``fit`` does not measure
            (checked before any training step; the weights are untouched).
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
            if validation_split:
                raise ValueError(f"pass validation_data or validation_split, not both (validation_split="
                                 f"{validation_split})")
            if len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (x_val, y_val)")
            x_val = self._check_inputs(validation_data[0], "validation x")
            y_val = self._check_labels(validation_data[1], x_val.shape[0], "validation y")
        elif validation_split:
            x, x_val, y, y_val = self._split(x, y, validation_split, seed)
        validating = validation_data is not None or bool(validation_split)
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
        loss = losses_module.get(loss)
        class_weights = self._class_weights(class_weight, y, loss)
        available = ["loss", "accuracy", "lr", "seconds"] + (["val_loss", "val_accuracy"] if validating else [])
        callbacks = callbacks_module.check_callbacks(callbacks, available)
        self.loss = loss
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
        if class_weights is not None:
            class_weights = self._to_model_device(class_weights.astype(self.dtype))
        self.history, self.stop_training = history, False
        batch_callbacks = [c for c in callbacks if "on_batch_end" in vars(c)  # a LambdaCallback's
                           or type(c).on_batch_end is not callbacks_module.Callback.on_batch_end]
        for callback in callbacks:
            callback.model = self
            callback.on_train_begin(self)
        record = {}

        layers = self._logit_layers(self.loss)
        dropouts = [layer for layer in layers if isinstance(layer, Dropout)]
        # On the GPU the whole training set goes to the device once; each step gathers its
        # batch there, and the loss and hits are summed there (read only to draw progress).
        resident = self.device == "cuda" and augment is None
        if resident:
            x_source, y_source = to_device(x), to_device(y)
        with _DeferredInterrupt() as interrupt, report_compilation(sys.stderr if verbose else None) as compiling:
            for epoch in range(start_epoch, epochs):
                order = rng.permutation(x.shape[0]) if shuffle else np.arange(x.shape[0])
                progress = _Progress(epoch, epochs, x.shape[0], verbose, compiling=compiling.elapsed)
                totals = self._to_model_device(np.zeros(2))  # loss sum, correct predictions
                seen = 0

                def read_totals():
                    loss_sum, hits = to_host(totals)
                    if not math.isfinite(loss_sum):
                        raise FloatingPointError(f"the loss became {loss_sum}: lower the learning rate")
                    return loss_sum / seen, hits / seen

                epoch_start = time.perf_counter()
                for step, start in enumerate(range(0, x.shape[0], batch_size)):
                    self.optimizer.set_epoch(epoch, start / x.shape[0])
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
                    self._train_step(layers, batch, targets, totals, class_weights)
                    seen += len(index)
                    progress.update(seen, read_totals)
                    if batch_callbacks:
                        mean_loss, accuracy = read_totals()
                        logs = dict(epoch=epoch, steps=self.optimizer.steps, loss=mean_loss, accuracy=accuracy,
                                    lr=self.optimizer.lr)
                        for callback in batch_callbacks:
                            callback.on_batch_end(step, logs)
                    interrupt.check()
                mean_loss, accuracy = read_totals()
                record = dict(loss=mean_loss, accuracy=accuracy, lr=self.optimizer.lr,
                              seconds=time.perf_counter() - epoch_start)
                extra = ""
                if validating:
                    scores = self.evaluate(x_val, y_val, loss=self.loss)
                    record.update(val_loss=scores["loss"], val_accuracy=scores["accuracy"])
                    extra = f" - val_loss {scores['loss']:.4f} val_acc {scores['accuracy']:.4f}"
                history.append(**record)
                progress.finish(record["loss"], record["accuracy"], extra)
                for callback in callbacks:
                    callback.on_epoch_end(epoch, dict(record))
                if checkpoint is not None:
                    self._save_checkpoint(checkpoint, epoch + 1, rng, history, base_seed)
                interrupt.check()
                if self.stop_training:
                    history.stopped_epoch = epoch
                    break
        for layer in dropouts:
            layer.step_seed = None
        for callback in callbacks:
            callback.on_train_end(dict(record))
        return history

    def _split(self, x, y, fraction, seed):
        """``x, x_val, y, y_val``: ``fraction`` of each class held out (seeded), the rest in order."""
        from .data import train_test_split

        if isinstance(fraction, bool) or not isinstance(fraction, (int, float, np.floating)) \
                or not 0 < fraction < 1:
            raise ValueError(f"validation_split must be a fraction in [0, 1), got {fraction!r}")
        train, held_out, _, _ = train_test_split(np.arange(len(y)), y, test_size=fraction, seed=seed)
        if len(held_out) == 0 or len(train) == 0:
            raise ValueError(f"validation_split={fraction} of {len(y)} samples leaves "
                             f"{len(train)} to train on and {len(held_out)} to validate: use more samples "
                             "or another fraction")
        train = np.sort(train)
        return x[train], x[held_out], y[train], y[held_out]

    def _class_weights(self, class_weight, y, loss):
        """The ``(classes,)`` float64 weights for ``fit(class_weight=...)``, or None."""
        if class_weight is None:
            return None
        if not isinstance(loss, losses_module.CrossEntropy):
            raise ValueError(f"class_weight works with the cross-entropy loss, got loss={loss.name!r}")
        classes = self.output_shapes(self.input_shape)[-1][0]
        weights = np.ones(classes)
        if isinstance(class_weight, str):
            if class_weight != "balanced":
                raise ValueError(f"class_weight must be None, a dict or 'balanced', got {class_weight!r}")
            counts = np.bincount(y, minlength=classes)
            present = counts > 0
            weights[present] = len(y) / (present.sum() * counts[present])
            return weights
        if not isinstance(class_weight, dict):
            raise TypeError(f"class_weight must be None, a dict or 'balanced', got {type(class_weight).__name__}")
        names = list(self.class_names or [])
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

    def _one_hot_like(self, out, labels):
        """One-hot rows of ``labels`` in ``out``'s dtype, on the model's device (MSE targets)."""
        from .data import one_hot

        return self._to_model_device(one_hot(labels, out.shape[1]).astype(np.dtype(out.dtype)))

    def _train_step(self, layers, batch, targets, totals, class_weights=None):
        """Forward, loss, backward and update for one batch already on the model's device;
        adds the batch's loss sum and correct predictions to ``totals`` (on that device).
        ``class_weights`` ((classes,), on that device) weighs each sample's loss by its class."""
        out = batch
        for layer in layers:
            out = layer.forward(out, training=True)
        if isinstance(self.loss, losses_module.CrossEntropy):
            if class_weights is None:
                losses, probabilities = F.cross_entropy_per_sample(out, targets)
            else:
                losses, probabilities = F.weighted_cross_entropy_per_sample(out, targets, class_weights)
            if self.device == "cpu" and not np.all(np.isfinite(losses)):  # free to check here
                raise FloatingPointError("the loss became non-finite: lower the learning rate")
            F.add_classification_totals(losses, probabilities, targets, totals)
            if class_weights is None:
                grad = F.cross_entropy_backward(probabilities, targets)
            else:
                grad = F.weighted_cross_entropy_backward(probabilities, targets, class_weights)
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
        self._set_arrays(data)

    def _set_arrays(self, data):
        """Put the parameters and buffers of ``data`` (as from :meth:`_arrays`) in place."""
        for index, layer in enumerate(self.layers):
            for store, prefix in ((layer.params, "param"), (layer.buffers, "buffer")):
                for name in store:
                    value = data[f"{prefix}/{index}/{name}"].astype(store[name].dtype)
                    store[name] = to_device(value) if self.device == "cuda" else value


def _new_file_mode(path):
    """The mode a file at ``path`` gets: an existing file's mode, else 0666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write_npz(path, arrays):
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    mode = _new_file_mode(path)
    handle, temporary = tempfile.mkstemp(prefix=".cnnlab-", suffix=".npz.tmp", dir=directory)
    try:
        os.chmod(temporary, mode)  # mkstemp makes it private (0600)
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _read_npz(path):
    """The arrays of a cnnlab model file; ``ValueError`` saying what the file is otherwise."""
    not_ours = f"{path} is not a cnnlab model file"
    what = "cnnlab reads the .npz files that model.save writes"
    with open(os.fspath(path), "rb") as stream:  # FileNotFoundError as it is
        head = stream.read(len(HDF5_SIGNATURE))
    if head.startswith(HDF5_SIGNATURE):
        raise ValueError(f"{not_ours}: it is an HDF5 file (such as a Keras .h5 model); {what}")
    if not head.startswith(b"PK"):
        raise ValueError(f"{not_ours}: it is not a .npz archive; {what}")
    try:
        with np.load(os.fspath(path), allow_pickle=False) as archive:
            names = archive.files
            marker = str(archive["cnnlab_format"]) if "cnnlab_format" in names else None
            version = str(archive["cnnlab_version"]) if "cnnlab_version" in names else "unknown"
            data = {name: archive[name] for name in names} if marker == FORMAT else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        # never NumPy's own message: it suggests loading with pickle
        raise ValueError(f"{not_ours}: it is truncated, damaged, or an archive of other data; {what}") from None
    if marker is None:
        raise ValueError(f"{not_ours} (no '{FORMAT}' marker); {what}")
    if marker != FORMAT:
        number = marker[len("cnnlab-model-"):]
        if marker.startswith("cnnlab-model-") and number.isdigit() and int(number) > int(FORMAT.split("-")[-1]):
            raise ValueError(f"{path} was written by a newer cnnlab (version {version}, format {marker!r}); "
                             f"upgrade cnnlab to read it (this is cnnlab {__version__})")
        raise ValueError(f"{not_ours} (unknown format marker {marker!r}); {what}")
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
