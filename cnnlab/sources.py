"""Where :meth:`cnnlab.Model.fit` and :meth:`cnnlab.Model.evaluate` get their batches: whatever
``x`` (and ``y``) they are given becomes a *source* here, and the loop iterates it.

=================================================  ==================================================
``x`` (and ``y``)                                  how it is read
=================================================  ==================================================
arrays ``x, y``                                    in memory, checked once up front
a dask array ``x`` (``y`` dask or in memory)       chunk by chunk along the batch axis, the next chunk
                                                   computed in a background thread
a dataset of samples (``__len__``, ``__getitem__``  batches of ``batch_size`` samples, read ahead in
returning one ``(image, label)``: PyTorch's         background threads, shuffled per epoch with the
``Dataset``), :class:`cnnlab.data.ImageFolder`      fit seed (the order arrays would get)
a dataset of batches (``__getitem__`` returning     one item per step, in index order, read ahead in
``(images, labels)``: Keras' ``PyDataset``)         background threads
an iterable or generator of ``(images, labels)``    as it yields them, on the training thread
=================================================  ==================================================

A dataset's item 0 tells samples from batches: one label (a number, a 0-d array) is a sample,
a 1-D array of labels is a batch. Every streamed batch is checked as it arrives (the checks
:meth:`cnnlab.Model.check_inputs` and :meth:`cnnlab.Model.check_labels` make on arrays), and its
first item is checked before any training step. Augmentation (``fit(augment=...)``) draws from a
generator of its own for each batch, seeded by the fit seed, the epoch and the step, so a seeded
run repeats exactly whichever thread does the work.

The background threads (:class:`cnnlab.prefetch.Prefetch`, :data:`cnnlab.config.LOADER_THREADS`
threads, at most :data:`cnnlab.config.PREFETCH_BATCHES` batches ahead) stop at the end of each
epoch and evaluation, and when a source is closed: ``fit`` closes its sources when it ends, an
exception (Ctrl-C included) among the ways it may end.
"""

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import config
from . import functional as F
from .checks import check_image_dtype
from .data import ImageFolder
from .device import is_gpu_array, to_device
from .dispatch import is_dask_array
from .prefetch import Prefetch
from .shapes import check_int

__all__ = ["Source", "ArraySource", "DaskSource", "DatasetSource", "BatchDatasetSource", "IterableSource",
           "training_source", "validation_source", "evaluation_source", "batch_rng"]

ModelLike = Any  # a cnnlab.Model (this module is below the model module and does not import it)
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray] | None
Batches = Iterator[tuple[np.ndarray, np.ndarray]]


def batch_rng(seed: int, epoch: int, step: int) -> np.random.Generator:
    """The generator the augmentation of one training batch draws from: a function of the fit
    seed, the epoch and the step only."""
    return np.random.default_rng([seed, epoch, step])


def augmented(batch: np.ndarray, augment: Augment, rng: np.random.Generator) -> np.ndarray:
    """``augment(batch, rng)`` as a contiguous array of ``batch``'s dtype (``batch`` without one)."""
    if augment is None:
        return batch
    return np.ascontiguousarray(augment(batch, rng), dtype=batch.dtype)


def pair(item: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``item`` as ``(images, labels)`` arrays; ``TypeError`` saying ``where`` it came from when it
    is not a pair (labels missing)."""
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        kind = type(item).__name__ + (f" of {len(item)}" if isinstance(item, (tuple, list)) else "")
        raise TypeError(f"{where} is a {kind}, not an (x, y) pair: a dataset or generator must give images "
                        "and their labels together")
    return np.asarray(item[0]), np.asarray(item[1])


class Source:
    """A training or evaluation input: what one epoch (:meth:`epoch`) or one evaluation
    (:meth:`evaluation`) reads.

    Attributes
    ----------
    samples : int
        Samples per epoch: exact for arrays, dask arrays and datasets of samples; for batches
        (datasets of batches, iterables) the steps times the first batch's size.
    batch_size : int or None
        The size of the source's own batches; None when ``fit``'s ``batch_size`` makes them.
    """

    samples: int = 0
    batch_size: int | None = None
    sample_shape: tuple[int, ...] | None = None
    kind: str = "source"  # what it is, in messages

    def __init__(self, model: ModelLike, name: str = "x", loss: Any = None):
        self.model, self.name = model, name
        self.loss = loss  # the loss the labels are for: one-hot or probability rows where it takes them
        self.current = None  # the open epoch's iterator

    def labels(self, purpose: str) -> np.ndarray:
        """Every label, before training (``purpose`` says what needs them, for the error)."""
        raise ValueError(f"{purpose} needs every training label before training; {self.name} is a "
                         f"{self.kind}, whose labels are known only as it is read (give arrays, dask arrays "
                         "or an ImageFolder)")

    def take(self, indices: np.ndarray) -> "Source":
        """The samples at ``indices``, as a source of the same kind (for ``validation_split``)."""
        raise ValueError(f"validation_split cannot split a {self.kind}: pass validation_data")

    def upload(self) -> None:
        """Keep the whole training set on the model's GPU (arrays only; others do nothing)."""

    def batches(self, epoch: int, batch_size: int, shuffle: bool, augment: Augment, rng: np.random.Generator,
                seed: int) -> Batches:
        """One epoch's host batches: checked (:meth:`checked`), then augmented."""
        raise NotImplementedError

    def evaluation_batches(self, batch_size: int) -> Batches:
        """Every sample once, in order, checked, never augmented: host batches."""
        raise NotImplementedError

    def checked(self, x: Any, y: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
        """A streamed batch, checked as :meth:`cnnlab.Model.check_inputs` and ``check_labels``
        check arrays, with ``where`` it came from in the messages."""
        x = np.asarray(x)
        if self.sample_shape is not None and x.ndim >= 1 and tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(f"{self.name} gave a batch of shape {x.shape} ({where}); its first batch's images "
                             f"have shape {self.sample_shape}")
        x = self.model.check_inputs(x, f"{self.name} ({where})")
        y = self.model.check_labels(y, x.shape[0], f"y of {self.name} ({where})", loss=self.loss)
        return x, y

    def epoch(self, epoch: int, rng: np.random.Generator, seed: int, batch_size: int, shuffle: bool,
              augment: Augment) -> Iterator[tuple[Any, Any]]:
        """Epoch ``epoch``'s checked batches on the model's device; ``rng`` draws the order
        (the one generator of the fit), ``seed`` seeds each batch's augmentation."""
        self.close()
        self.current = self.batches(epoch, batch_size, shuffle, augment, rng, seed)
        return self.on_device(self.current, epoch)

    def on_device(self, batches: Batches, epoch: int) -> Iterator[tuple[Any, Any]]:
        to_model_device = self.model.to_model_device
        for x, y in batches:
            yield to_model_device(x), to_model_device(y)

    @contextlib.contextmanager
    def evaluation(self, batch_size: int) -> Iterator[Batches]:
        """``with source.evaluation(batch_size) as batches``: every sample once, checked, on the
        host; the reading threads stop when the block ends."""
        batches = self.evaluation_batches(batch_size)
        try:
            yield batches
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()

    def close(self) -> None:
        """Stop reading the open epoch (its threads end)."""
        current, self.current = self.current, None
        close = getattr(current, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: Any) -> bool:
        self.close()
        return False


class ArraySource(Source):
    """In-memory arrays ``x, y``, checked once when the source is made."""

    kind = "pair of arrays"

    def __init__(self, model: ModelLike, x: Any, y: Any, name: str = "x", y_name: str = "y", checked: bool = False,
                 loss: Any = None):
        super().__init__(model, name, loss)
        if not checked:
            x = model.check_inputs(x, name)
            y = model.check_labels(y, x.shape[0], y_name, loss=loss)
        self.x, self.y = x, y
        self.samples, self.sample_shape = x.shape[0], tuple(x.shape[1:])
        self.on_gpu = None  # (x, y) on the GPU

    def labels(self, purpose: str) -> np.ndarray:
        return self.y

    def take(self, indices: np.ndarray) -> "ArraySource":
        return ArraySource(self.model, self.x[indices], self.y[indices], self.name, checked=True, loss=self.loss)

    def upload(self) -> None:
        """On the GPU the whole training set goes to the device once; each step gathers its batch
        there."""
        self.on_gpu = to_device(self.x), to_device(self.y)

    def epoch(self, epoch: int, rng: np.random.Generator, seed: int, batch_size: int, shuffle: bool,
              augment: Augment) -> Iterator[tuple[Any, Any]]:
        self.close()
        order = rng.permutation(self.samples) if shuffle else np.arange(self.samples)
        for step, start in enumerate(range(0, self.samples, batch_size)):
            index = order[start:start + batch_size]
            if self.on_gpu is not None:
                device_index = to_device(np.ascontiguousarray(index, dtype=np.int64))
                yield F.gather_rows(self.on_gpu[0], device_index), F.gather_rows(self.on_gpu[1], device_index)
                continue
            batch = augmented(self.x[index], augment, batch_rng(seed, epoch, step))
            yield self.model.to_model_device(batch), self.model.to_model_device(self.y[index])

    def evaluation_batches(self, batch_size: int) -> Batches:
        for start in range(0, self.samples, batch_size):
            yield self.x[start:start + batch_size], self.y[start:start + batch_size]


class DaskSource(Source):
    """A dask array ``x`` chunked along the batch axis, with labels ``y`` (a dask array or in
    memory), read chunk by chunk: the next chunk is computed in a background thread while the
    current one trains. Batches run across chunk boundaries, so without shuffling they are the
    batches the same arrays in memory would give. Shuffling permutes the order of the chunks
    and the samples within each chunk (never across chunks: only a few chunks are in memory)."""

    kind = "dask array"

    def __init__(self, model: ModelLike, x: Any, y: Any, name: str = "x", y_name: str = "y", loss: Any = None):
        super().__init__(model, name, loss)
        model.require_classifier("fit, evaluate and predict")
        model.check_batch_axis(x, name)
        check_image_dtype(name, x.dtype)
        if x.ndim < 2 or x.shape[0] == 0 or any(np.isnan(s) for s in x.shape):
            raise ValueError(f"{name} must be a non-empty batch (N, ...) of known shape, got shape {x.shape}")
        model.output_shapes(tuple(x.shape[1:]))
        if model.input_shape is None:
            model.input_shape = tuple(x.shape[1:])
        self.samples = int(x.shape[0])
        if y is None:
            raise TypeError(f"{y_name} must be integer class labels, got None (a dask array x needs its labels y)")
        if is_dask_array(y):
            if y.ndim != 1 or y.shape[0] != self.samples:
                raise ValueError(f"x and {y_name} must have the same length: {self.samples} images but {y_name} "
                                 f"has shape {y.shape}")
        else:
            y = model.check_labels(y, self.samples, y_name, loss=loss)
        self.x, self.y, self.sample_shape = x, y, tuple(x.shape[1:])
        self.bounds = np.cumsum((0,) + tuple(x.chunks[0]))
        self.all_labels = None

    def labels(self, purpose: str) -> np.ndarray:
        if self.all_labels is None:
            y = self.y.compute() if is_dask_array(self.y) else self.y
            self.all_labels = self.model.check_labels(y, self.samples, "y", loss=self.loss)
        return self.all_labels

    def take(self, indices: np.ndarray) -> "DaskSource":
        return DaskSource(self.model, self.x[np.asarray(indices)], self.y[np.asarray(indices)], self.name,
                          loss=self.loss)

    def read(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ``chunk`` of ``x`` and its labels, computed."""
        import dask

        start, stop = self.bounds[chunk], self.bounds[chunk + 1]
        return dask.compute(self.x[start:stop], self.y[start:stop])

    def chunked_batches(self, order: np.ndarray, batch_size: int, rng: np.random.Generator | None) -> Batches:
        """Batches of ``batch_size`` from the chunks in ``order`` (the samples of each permuted
        by ``rng`` when given), running across chunk boundaries; unchecked."""
        rest_x = rest_y = None
        with Prefetch((functools.partial(self.read, int(i)) for i in order), 1, 2) as chunks:
            for x, y in chunks:
                x, y = np.asarray(x), np.asarray(y)
                if rng is not None:
                    permutation = rng.permutation(len(x))
                    x, y = x[permutation], y[permutation]
                if rest_x is not None and len(rest_x):
                    x, y = np.concatenate([rest_x, x]), np.concatenate([rest_y, y])
                whole = len(x) // batch_size * batch_size
                for start in range(0, whole, batch_size):
                    yield x[start:start + batch_size], y[start:start + batch_size]
                rest_x, rest_y = x[whole:], y[whole:]
        if rest_x is not None and len(rest_x):
            yield rest_x, rest_y

    def batches(self, epoch: int, batch_size: int, shuffle: bool, augment: Augment, rng: np.random.Generator,
                seed: int) -> Batches:
        chunks = len(self.bounds) - 1
        order = rng.permutation(chunks) if shuffle else np.arange(chunks)
        for step, (x, y) in enumerate(self.chunked_batches(order, batch_size, rng if shuffle else None)):
            x, y = self.checked(x, y, f"batch {step + 1} of epoch {epoch + 1}")
            yield augmented(x, augment, batch_rng(seed, epoch, step)), y

    def evaluation_batches(self, batch_size: int) -> Batches:
        for step, (x, y) in enumerate(self.chunked_batches(np.arange(len(self.bounds) - 1), batch_size, None)):
            yield self.checked(x, y, f"batch {step + 1}")


class DatasetSource(Source):
    """A dataset of ``(image, label)`` samples (``len(dataset)``, ``dataset[i]``: PyTorch's
    ``Dataset``) or an :class:`cnnlab.data.ImageFolder`: batches of ``batch_size`` samples, in
    the order arrays would be shuffled in, read (and augmented) ahead in background threads."""

    kind = "dataset"

    def __init__(self, model: ModelLike, dataset: Any, first: tuple[np.ndarray, np.ndarray], name: str = "x",
                 loss: Any = None):
        super().__init__(model, name, loss)
        self.dataset, self.samples = dataset, len(dataset)
        self.sample_shape = tuple(first[0].shape)
        self.checked(first[0][None], first[1][None], "its item 0")

    def labels(self, purpose: str) -> np.ndarray:
        if isinstance(self.dataset, ImageFolder):
            return self.dataset.labels
        return super().labels(purpose)

    def take(self, indices: np.ndarray) -> "DatasetSource":
        if not isinstance(self.dataset, ImageFolder):
            return super().take(indices)
        part = self.dataset.subset(indices)
        return DatasetSource(self.model, part, pair(part[0], f"{self.name}[{int(indices[0])}]"), self.name,
                             self.loss)

    def read(self, indices: np.ndarray, where: str, augment: Augment = None,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The samples at ``indices`` as one checked batch, augmented when ``rng`` is given (on a
        loading thread)."""
        if isinstance(self.dataset, ImageFolder):
            x, y = self.dataset.read_batch(indices, rng, augment=rng is not None)
        else:
            samples = [pair(self.dataset[int(i)], f"{self.name}[{int(i)}]") for i in indices]
            for i, (image, _) in zip(indices, samples):
                if image.shape != self.sample_shape:
                    raise ValueError(f"{self.name}[{int(i)}] is an image of shape {image.shape}; "
                                     f"{self.name}[0] is {self.sample_shape}")
            x, y = np.stack([image for image, _ in samples]), np.stack([label for _, label in samples])
        x, y = self.checked(x, y, where)
        return (augmented(x, augment, rng) if rng is not None else x), y

    def batches(self, epoch: int, batch_size: int, shuffle: bool, augment: Augment, rng: np.random.Generator,
                seed: int) -> Batches:
        def jobs():
            order = rng.permutation(self.samples) if shuffle else np.arange(self.samples)
            for step, start in enumerate(range(0, self.samples, batch_size)):
                yield functools.partial(self.read, order[start:start + batch_size],
                                        f"batch {step + 1} of epoch {epoch + 1}", augment, batch_rng(seed, epoch, step))

        with Prefetch(jobs(), config.LOADER_THREADS, config.PREFETCH_BATCHES) as batches:
            yield from batches

    def evaluation_batches(self, batch_size: int) -> Batches:
        jobs = (functools.partial(self.read, np.arange(start, min(start + batch_size, self.samples)),
                                  f"batch {step + 1}")
                for step, start in enumerate(range(0, self.samples, batch_size)))
        with Prefetch(jobs, config.LOADER_THREADS, config.PREFETCH_BATCHES) as batches:
            yield from batches


class BatchDatasetSource(Source):
    """A dataset of ``(images, labels)`` batches (``len(dataset)`` batches, ``dataset[i]``:
    Keras' ``PyDataset``): one item per step, in index order (shuffling is the dataset's own
    work: its ``on_epoch_end()``, when it has one, runs after every epoch), read ahead in
    background threads."""

    kind = "dataset of batches"

    def __init__(self, model: ModelLike, dataset: Any, first: tuple[np.ndarray, np.ndarray], name: str = "x",
                 loss: Any = None):
        super().__init__(model, name, loss)
        self.dataset = dataset
        self.checked(*first, "its item 0")
        self.sample_shape = tuple(first[0].shape[1:])
        self.batch_size = len(first[0])
        last = len(dataset) - 1  # read to count the samples: the last batch may be shorter
        final = pair(dataset[last], f"{name}[{last}]")[0] if last else first[0]
        self.samples = last * self.batch_size + len(final)

    def read(self, index: int, where: str, augment: Augment = None,
             rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Item ``index``, checked, augmented when ``rng`` is given (on a loading thread)."""
        x, y = self.checked(*pair(self.dataset[index], f"{self.name}[{index}]"), where)
        return (augmented(x, augment, rng) if rng is not None else x), y

    def batches(self, epoch: int, batch_size: int, shuffle: bool, augment: Augment, rng: np.random.Generator,
                seed: int) -> Batches:
        jobs = (functools.partial(self.read, step, f"{self.name}[{step}] in epoch {epoch + 1}", augment,
                                  batch_rng(seed, epoch, step))
                for step in range(len(self.dataset)))
        with Prefetch(jobs, config.LOADER_THREADS, config.PREFETCH_BATCHES) as batches:
            yield from batches
        if callable(getattr(self.dataset, "on_epoch_end", None)):
            self.dataset.on_epoch_end()

    def evaluation_batches(self, batch_size: int) -> Batches:
        jobs = (functools.partial(self.read, index, f"{self.name}[{index}]") for index in range(len(self.dataset)))
        with Prefetch(jobs, config.LOADER_THREADS, config.PREFETCH_BATCHES) as batches:
            yield from batches


_END = object()


class IterableSource(Source):
    """An iterable or a generator of ``(images, labels)`` batches, read as it yields them, on the
    training thread.

    An epoch is ``steps_per_epoch`` batches, or ``len(x)`` for an iterable that has a length.
    An iterable that can be iterated again (a list, a ``DataLoader``) starts a new pass every
    epoch; a one-shot iterator (a generator) goes on where the last epoch stopped, so it must
    yield ``steps_per_epoch`` batches per epoch (Keras' rule: make it loop forever). Running out
    early is a ``ValueError``. An evaluation reads one whole pass."""

    def __init__(self, model: ModelLike, iterable: Any, steps_per_epoch: int | None, training: bool,
                 name: str = "x", loss: Any = None):
        super().__init__(model, name, loss)
        self.iterable, self.iterator = iterable, iter(iterable)
        self.one_shot = self.iterator is iterable
        self.kind = "generator" if self.one_shot else "iterable of batches"
        self.steps = steps_per_epoch
        if self.steps is None and training:
            if self.one_shot or not hasattr(iterable, "__len__"):
                what = "a generator (a one-shot iterator)" if self.one_shot else "an iterable without len()"
                raise ValueError(f"{name} is {what}: pass steps_per_epoch=, the number of batches that make "
                                 "one epoch (as in Keras)")
            self.steps = len(iterable)
        first = next(self.iterator, _END)
        if first is _END:
            raise ValueError(f"{name} yielded no batches")
        first = pair(first, f"the first item {name} yielded")
        self.checked(*first, "its first batch")
        self.pending = [first]
        self.sample_shape = tuple(first[0].shape[1:])
        self.batch_size = len(first[0])
        self.samples = (self.steps or 1) * self.batch_size

    def start_pass(self) -> None:
        """An iterable that can be iterated again starts a new pass (unless its first batch, read
        to check it, is still waiting); a one-shot iterator goes on."""
        if not self.one_shot and not self.pending:
            self.iterator = iter(self.iterable)

    def next_batch(self) -> Any:
        return self.pending.pop() if self.pending else next(self.iterator, _END)

    def batches(self, epoch: int, batch_size: int, shuffle: bool, augment: Augment, rng: np.random.Generator,
                seed: int) -> Batches:
        self.start_pass()
        for step in range(self.steps):
            item = self.next_batch()
            if item is _END:
                raise ValueError(f"{self.name} ran out of batches after {step} of the {self.steps} steps of epoch "
                                 f"{epoch + 1}: " + ("a generator must yield steps_per_epoch batches for every "
                                                     "epoch (make it loop forever)" if self.one_shot else
                                                     "give a smaller steps_per_epoch"))
            where = f"batch {step + 1} of epoch {epoch + 1}"
            x, y = self.checked(*pair(item, f"the item {self.name} yielded for {where}"), where)
            yield augmented(x, augment, batch_rng(seed, epoch, step)), y

    def evaluation_batches(self, batch_size: int) -> Batches:
        self.start_pass()
        step = 0
        while (item := self.next_batch()) is not _END:
            step += 1
            yield self.checked(*pair(item, f"the item {self.name} yielded for batch {step}"), f"batch {step}")


def _dataset_source(model: ModelLike, x: Any, name: str, loss: Any = None) -> Source:
    """A dataset: of samples or of batches, as its item 0 says."""
    try:
        size = len(x)
    except TypeError:
        raise TypeError(f"{name} has __getitem__ but len({name}) fails: a dataset needs __len__ (the number of "
                        "samples or batches) as well") from None
    if size == 0:
        raise ValueError(f"{name} is an empty dataset")
    first = pair(x[0], f"{name}[0]")
    if first[1].ndim == 0:
        return DatasetSource(model, x, first, name, loss)
    if first[1].ndim == 1:
        return BatchDatasetSource(model, x, first, name, loss)
    raise ValueError(f"{name}[0] has labels of shape {first[1].shape}: a dataset's item is a sample (one label) "
                     "or a batch (a 1-D array of labels)")


def _yields_labels(x: Any) -> bool:
    """Whether ``x`` is a dataset or a generator (it gives its labels itself), not array data."""
    if isinstance(x, (np.ndarray, list, tuple, str, bytes)) or hasattr(x, "__array__") or is_gpu_array(x):
        return False
    return isinstance(x, (ImageFolder, Source)) or hasattr(x, "__next__") or hasattr(x, "__getitem__") \
        or hasattr(x, "__iter__")


def _source(model: ModelLike, x: Any, y: Any, name: str, y_name: str, steps_per_epoch: int | None,
            training: bool, loss: Any = None) -> Source:
    if isinstance(x, Source):
        return x
    if is_dask_array(x):
        return DaskSource(model, x, y, name, y_name, loss)
    if y is not None:
        if _yields_labels(x):
            raise ValueError(f"{name} ({type(x).__name__}) gives its own labels with its images: leave {y_name} out")
        return ArraySource(model, x, y, name, y_name, loss=loss)
    if not _yields_labels(x) and not isinstance(x, (list, tuple)):
        if not (isinstance(x, np.ndarray) or hasattr(x, "__array__") or is_gpu_array(x)):
            raise TypeError(f"{name} must be an array of images, a dataset or an iterable of (x, y) batches, got "
                            f"{type(x).__name__}")
        raise TypeError(f"{y_name} must be integer class labels, got None (arrays {name} need their labels "
                        f"{y_name}; a dataset or a generator gives its own)")
    if hasattr(x, "__getitem__") and hasattr(x, "__len__"):
        return _dataset_source(model, x, name, loss)
    if hasattr(x, "__getitem__") and not hasattr(x, "__iter__"):
        raise TypeError(f"{name} has __getitem__ but no __len__: a dataset needs both (len({name}) samples or "
                        "batches), or give an iterable of (x, y) batches")
    if hasattr(x, "__iter__"):
        return IterableSource(model, x, steps_per_epoch, training, name, loss)
    raise TypeError(f"{name} must be an array of images, a dataset or an iterable of (x, y) batches, got "
                    f"{type(x).__name__}")


def training_source(model: ModelLike, x: Any, y: Any = None, steps_per_epoch: int | None = None,
                    loss: Any = None) -> Source:
    """What ``fit`` trains on: arrays ``x, y``, a dask array ``x`` with labels ``y``, or (``y``
    None) a dataset, an :class:`cnnlab.data.ImageFolder` or an iterable of ``(x, y)`` batches;
    its first batch checked (module docs).

    Raises
    ------
    TypeError, ValueError
        Naming ``x``, ``y`` or ``steps_per_epoch``: bad data, ``y`` missing for arrays or given
        for a dataset, a dataset without ``__len__``, a generator without ``steps_per_epoch``,
        ``steps_per_epoch`` for anything but an iterable.
    """
    if steps_per_epoch is not None:
        steps_per_epoch = check_int("steps_per_epoch", steps_per_epoch, 1)
    source = _source(model, x, y, "x", "y", steps_per_epoch, training=True, loss=loss)
    if steps_per_epoch is not None and not isinstance(source, IterableSource):
        raise ValueError(f"steps_per_epoch is for generators and iterables of batches; x is a {source.kind}, "
                         "whose epochs are one pass over it (leave steps_per_epoch out)")
    return source


def validation_source(model: ModelLike, validation_data: Any, loss: Any = None) -> Source:
    """``fit``'s ``validation_data``: a pair ``(x_val, y_val)`` (a tuple; a list of two arrays
    too), or a dataset, an ImageFolder or a re-iterable of batches (not a one-shot generator:
    every epoch's validation reads it again)."""
    if isinstance(validation_data, tuple) or (isinstance(validation_data, list) and len(validation_data) == 2
                                              and not isinstance(validation_data[0], (tuple, list))):
        if len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (x_val, y_val)")
        return _source(model, *validation_data, "validation x", "validation y", None, training=False, loss=loss)
    source = _source(model, validation_data, None, "validation_data", "validation y", None, training=False, loss=loss)
    if isinstance(source, IterableSource) and source.one_shot:
        raise ValueError("validation_data is a generator (a one-shot iterator): the first epoch's validation "
                         "would use it up; give a pair (x_val, y_val), a dataset, an ImageFolder or a list of "
                         "batches")
    return source


def evaluation_source(model: ModelLike, x: Any, y: Any = None, loss: Any = None) -> Source:
    """What ``evaluate`` reads: arrays ``x, y`` or any source ``fit`` takes (a generator gives
    one pass)."""
    return _source(model, x, y, "x", "y", None, training=False, loss=loss)
