"""fit and evaluate on inputs that are not in memory: datasets of samples (PyTorch) and of
batches (Keras), iterables and generators of batches, ImageFolder, dask arrays. Each trains to
the weights the same batches in memory give; the reading threads end however fit ends; bad
input is refused with the argument and the batch named."""

import os
import signal
import threading

import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab import data, optim
from cnnlab import layers as L
from cnnlab.callbacks import LambdaCallback
from cnnlab.prefetch import THREAD_NAME


def prefetch_threads():
    return [thread for thread in threading.enumerate() if thread.name.startswith(THREAD_NAME)]


def small_cnn(dtype=None, input_shape=(1, 8, 8)):
    return cnnlab.Sequential([L.Conv2D(1, 4, 3, padding=1, seed=0), L.ReLU(), L.MaxPool2D(2), L.Flatten(),
                              L.Dense(4 * 4 * 4, 16, seed=1), L.ReLU(), L.Dense(16, 3, seed=2), L.Softmax()],
                             input_shape=input_shape, dtype=dtype)


def weights(model):
    return [layer.params[name].copy() for layer, name in model.parameters(trainable_only=False)]


def assert_same_weights(a, b):
    for p, q in zip(weights(a), weights(b)):
        np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def digits():
    """100 of scikit-learn's digits 0-2, as 1x8x8 images in [0, 1]."""
    from sklearn.datasets import load_digits

    found = load_digits()
    keep = found.target < 3
    return (found.images[keep][:100] / 16.0).astype(np.float32)[:, None], found.target[keep][:100].astype(np.int64)


class Samples:
    """PyTorch's Dataset protocol: one (image, label) per index."""

    def __init__(self, x, y):
        self.x, self.y, self.reads = x, y, 0

    def __len__(self):
        return len(self.x)

    def __getitem__(self, index):
        self.reads += 1
        return self.x[index], int(self.y[index])


class Batches:
    """Keras' PyDataset protocol: one (images, labels) batch per index."""

    def __init__(self, x, y, batch_size):
        self.x, self.y, self.batch_size, self.epochs_ended = x, y, batch_size, 0

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        part = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[part], self.y[part]

    def on_epoch_end(self):
        self.epochs_ended += 1


class Reiterable:
    """An iterable that has a length and can be iterated again (a DataLoader-like object)."""

    def __init__(self, x, y, batch_size):
        self.batches = Batches(x, y, batch_size)

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return (self.batches[i] for i in range(len(self.batches)))


def forever(x, y, batch_size):
    """A Keras-style generator: the same batches in order, looping forever."""
    while True:
        for start in range(0, len(x), batch_size):
            yield x[start:start + batch_size], y[start:start + batch_size]


def fit(model, *data, **options):
    settings = dict(epochs=2, batch_size=16, optimizer=optim.Adam(3e-3), seed=4, verbose=0)
    settings.update(options)
    return model.fit(*data, **settings)


@pytest.mark.parametrize("kind", ["samples", "batches", "list", "reiterable", "generator", "dask", "dask x only"])
def test_each_input_kind_trains_to_the_weights_of_the_same_batches_in_memory(digits, kind):
    x, y = digits
    shuffled = kind in ("samples", "dask x only")  # a sample dataset is shuffled as arrays are
    reference = small_cnn()
    fit(reference, x, y, shuffle=shuffled)
    model = small_cnn()
    if kind == "samples":
        fit(model, Samples(x, y))
    elif kind == "batches":
        fit(model, Batches(x, y, 16))
    elif kind == "list":
        fit(model, [(x[i:i + 16], y[i:i + 16]) for i in range(0, len(x), 16)])
    elif kind == "reiterable":
        fit(model, Reiterable(x, y, 16))
    elif kind == "generator":
        fit(model, forever(x, y, 16), steps_per_epoch=7)
    else:
        da = pytest.importorskip("dask.array")
        chunks = 23  # batches run across the chunks' boundaries
        labels = da.from_array(y, chunks=chunks) if kind == "dask" else y
        if shuffled:  # one chunk: shuffling permutes within it as arrays are permuted
            fit(model, da.from_array(x, chunks=len(x)), labels)
        else:
            fit(model, da.from_array(x, chunks=chunks), labels, shuffle=False)
    assert model.optimizer.steps == reference.optimizer.steps == 14
    assert_same_weights(model, reference)
    assert prefetch_threads() == []


def test_augmentation_of_a_dataset_draws_what_it_draws_for_arrays(digits):
    x, y = digits
    threads = set()

    def augment(batch, rng):
        threads.add(threading.current_thread().name)
        return batch + rng.normal(0, 0.05, batch.shape)

    arrays, streamed = small_cnn(), small_cnn()
    fit(arrays, x, y, augment=augment)
    assert threads == {threading.current_thread().name}  # arrays: augmented on the training thread
    fit(streamed, Samples(x, y), augment=augment)
    assert any(name.startswith(THREAD_NAME) for name in threads)  # a dataset: in the loading threads
    assert_same_weights(arrays, streamed)


def test_validation_data_and_evaluate_take_the_same_sources(digits):
    x, y = digits
    reference = small_cnn()
    fit(reference, x[:80], y[:80], validation_data=(x[80:], y[80:]))
    model = small_cnn()
    history = fit(model, Samples(x[:80], y[:80]), validation_data=Batches(x[80:], y[80:], 7))
    np.testing.assert_allclose(history.history["val_loss"], reference.history.history["val_loss"], rtol=1e-6)
    again = fit(small_cnn(), Samples(x[:80], y[:80]), validation_data=Reiterable(x[80:], y[80:], 7))
    np.testing.assert_allclose(again.history["val_loss"], reference.history.history["val_loss"], rtol=1e-6)
    expected = reference.evaluate(x, y)
    halves = [(x[:50], y[:50]), (x[50:], y[50:])]
    for source in (Samples(x, y), Batches(x, y, 32), halves, (batch for batch in halves)):
        scores = reference.evaluate(source)  # a generator: one pass
        assert scores["accuracy"] == expected["accuracy"]
        assert scores["loss"] == pytest.approx(expected["loss"], rel=1e-6)
    assert prefetch_threads() == []


def test_a_dask_array_is_read_one_chunk_at_a_time(digits):
    da = pytest.importorskip("dask.array")
    x, y = digits
    read = []

    def record(block):
        read.append(len(block))
        return block

    lazy = da.from_array(x, chunks=30).map_blocks(record, dtype=x.dtype)
    read.clear()  # dask's look at an empty block, to learn the result's type
    first, again = small_cnn(), small_cnn()
    fit(first, lazy, da.from_array(y, chunks=30))
    assert read and set(read) <= {30, 10}  # chunk by chunk, never the whole array
    assert len(read) == 2 * 4
    fit(again, lazy, y)
    assert_same_weights(first, again)  # seeded: the chunks' order and each chunk's shuffle repeat
    unshuffled = small_cnn()
    fit(unshuffled, lazy, y, shuffle=False)
    assert not np.allclose(weights(unshuffled)[0], weights(first)[0])
    assert prefetch_threads() == []


def test_a_dask_array_splits_and_weighs_its_classes_like_arrays(digits):
    da = pytest.importorskip("dask.array")
    x, y = digits
    reference, model = small_cnn(), small_cnn()
    options = dict(validation_split=0.25, class_weight="balanced", shuffle=False)
    fit(reference, x, y, **options)
    history = fit(model, da.from_array(x, chunks=17), da.from_array(y, chunks=17), **options)
    assert_same_weights(model, reference)
    np.testing.assert_allclose(history.history["val_loss"], reference.history.history["val_loss"], rtol=1e-6)


def test_a_keras_dataset_of_batches_is_told_when_each_epoch_ends(digits):
    x, y = digits
    dataset = Batches(x, y, 25)
    history = fit(small_cnn(), dataset, epochs=3, batch_size=7)  # batch_size: the dataset's own batches
    assert dataset.epochs_ended == 3 and len(history.history["loss"]) == 3


def test_the_progress_bar_counts_a_generators_and_a_datasets_samples(digits, capsys):
    x, y = digits
    fit(small_cnn(), forever(x[:96], y[:96], 12), epochs=1, steps_per_epoch=8, verbose=1)
    assert "epoch 1/1 [========================] 96/96" in capsys.readouterr().out
    fit(small_cnn(), Batches(x, y, 16), epochs=1, verbose=1)  # a shorter last batch
    assert "epoch 1/1 [========================] 100/100" in capsys.readouterr().out
    fit(small_cnn(), Batches(x[:10], y[:10], 16), epochs=1, verbose=1)  # one batch
    assert "epoch 1/1 [========================] 10/10" in capsys.readouterr().out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two classes of 8x8 grey images: bright squares and dark ones."""
    root = tmp_path_factory.mktemp("shades")
    rng = np.random.default_rng(0)
    for name, level in (("bright", 190), ("dark", 60)):
        os.makedirs(root / name)
        for i in range(20):
            pixels = np.clip(level + rng.normal(0, 40, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_an_image_folder_trains_like_its_images_in_memory(folder):
    images, labels, _ = data.load_image_folder(folder, size=8, color="gray")
    standardized, mean, std = data.standardize(images)
    streamed = data.ImageFolder(folder, size=8, color="gray", mean=mean, std=std)
    reference = small_cnn()
    fit(reference, standardized, labels, validation_split=0.25, class_weight="balanced")
    model = small_cnn()
    history = fit(model, streamed, validation_split=0.25, class_weight="balanced")
    assert_same_weights(model, reference)
    np.testing.assert_allclose(history.history["val_accuracy"], reference.history.history["val_accuracy"])
    assert model.evaluate(streamed) == pytest.approx(reference.evaluate(standardized, labels), rel=1e-6)
    assert prefetch_threads() == []


def test_the_threads_end_after_an_exception_inside_fit(folder):
    streamed = data.ImageFolder(folder, size=8, color="gray")

    def fail(step, logs):
        if step == 2:
            raise RuntimeError("a callback failed")

    model = small_cnn()
    with pytest.raises(RuntimeError, match="a callback failed"):
        fit(model, streamed, batch_size=4, callbacks=[LambdaCallback(on_batch_end=fail)])
    assert prefetch_threads() == []
    assert model.optimizer.steps == 3

    class Failing(Samples):
        def __getitem__(self, index):
            if index == 37:
                raise OSError("the disk went away")
            return super().__getitem__(index)

    x = np.random.default_rng(0).random((40, 1, 8, 8)).astype(np.float32)
    with pytest.raises(OSError, match="the disk went away"):
        fit(small_cnn(), Failing(x, np.arange(40) % 3), batch_size=4, shuffle=False)
    assert prefetch_threads() == []


def test_the_threads_end_after_ctrl_c(folder):
    streamed = data.ImageFolder(folder, size=8, color="gray")

    def interrupt(step, logs):
        if step == 1:
            raise KeyboardInterrupt

    model = small_cnn()
    with pytest.raises(KeyboardInterrupt):
        fit(model, streamed, batch_size=4, validation_data=streamed, callbacks=[LambdaCallback(on_batch_end=interrupt)])
    assert prefetch_threads() == [] and model.optimizer.steps == 2


def test_ctrl_c_while_a_batch_is_read_ahead_stops_after_the_step(digits):
    x, y = digits

    class SendsCtrlC(Samples):
        def __getitem__(self, index):
            if self.reads == 40:  # on a loading thread: the signal reaches the training thread
                os.kill(os.getpid(), signal.SIGINT)
            return super().__getitem__(index)

    model = small_cnn()
    with pytest.raises(KeyboardInterrupt, match="last completed step"):
        fit(model, SendsCtrlC(x, y), epochs=5, batch_size=10)
    assert prefetch_threads() == []
    assert 1 <= model.optimizer.steps < 50


@pytest.mark.parametrize("source, options, error, words", [
    (lambda x, y: ((x[:16], y[:16]) if i != 2 else (x[:16, :, :6], y[:16]) for i in range(7)),
     dict(steps_per_epoch=7), ValueError,
     r"x gave a batch of shape \(16, 1, 6, 8\) \(batch 3 of epoch 1\); its first batch.s images have shape \(1, 8, 8\)"),
    (lambda x, y: iter([x[:16], x[16:32]]), dict(steps_per_epoch=2), TypeError,
     r"the first item x yielded is a ndarray, not an \(x, y\) pair"),
    (lambda x, y: forever(x, y, 16), {}, ValueError, "x is a generator .*: pass steps_per_epoch="),
    (lambda x, y: iter([(x[:16], y[:16])] * 3), dict(steps_per_epoch=2), ValueError,
     "x ran out of batches after 1 of the 2 steps of epoch 2"),
    (lambda x, y: iter([(x[:16], y[:16]), (x[:16], y[:16] + 5)]), dict(steps_per_epoch=2), ValueError,
     r"y of x \(batch 2 of epoch 1\) must lie in \[0, 3\)"),
    (lambda x, y: iter([(x[:16] * np.nan, y[:16])]), dict(steps_per_epoch=1), ValueError,
     r"x \(its first batch\) contains 1024 NaN"),
    (lambda x, y: [(x[i], int(y[i])) if i != 7 else (x[i, :, :4], 0) for i in range(len(x))], {}, ValueError,
     r"x\[7\] is an image of shape \(1, 4, 8\); x\[0\] is \(1, 8, 8\)"),
    (lambda x, y: Samples(x, y), dict(steps_per_epoch=3), ValueError, "steps_per_epoch is for generators"),
    (lambda x, y: Samples(x, y), lambda x, y: dict(validation_data=forever(x, y, 10)), ValueError,
     "validation_data is a generator"),
    (lambda x, y: Samples(x, y), dict(validation_split=0.2), ValueError, "validation_split needs every training label"),
    (lambda x, y: Samples(x, y), dict(class_weight="balanced"), ValueError, "class_weight='balanced' needs every"),
    (lambda x, y: [], {}, ValueError, "x is an empty dataset"),
    (lambda x, y: iter([]), dict(steps_per_epoch=1), ValueError, "x yielded no batches"),
    (lambda x, y: [(x[:4], y[:4, None])], {}, ValueError, r"x\[0\] has labels of shape \(4, 1\)"),
])
def test_bad_streamed_input_is_refused_naming_what_and_where(digits, source, options, error, words):
    x, y = digits
    model = small_cnn()
    before = weights(model)
    options = options(x, y) if callable(options) else options
    with pytest.raises(error, match=words):
        fit(model, source(x, y), **options)
    assert prefetch_threads() == []
    if model.optimizer is None:  # refused before training: untouched
        for a, b in zip(before, weights(model)):
            np.testing.assert_array_equal(a, b)


def test_datasets_without_len_missing_or_extra_labels_are_refused(digits):
    x, y = digits
    model = small_cnn()

    class NoLength:
        def __getitem__(self, index):
            return x[index], int(y[index])

    with pytest.raises(TypeError, match="x has __getitem__ but no __len__: a dataset needs both"):
        model.fit(NoLength(), verbose=0)
    with pytest.raises(TypeError, match="y must be integer class labels, got None"):
        model.fit(x, verbose=0)
    with pytest.raises(ValueError, match=r"x \(Samples\) gives its own labels with its images: leave y out"):
        model.fit(Samples(x, y), y, verbose=0)
    with pytest.raises(TypeError, match="x must be an array of images, a dataset or an iterable"):
        model.fit(42, verbose=0)
    with pytest.raises(TypeError, match="steps_per_epoch must be an integer"):
        model.fit(forever(x, y, 8), steps_per_epoch=2.5, verbose=0)
    with pytest.raises(ValueError, match="validation_data must be a pair"):
        model.fit(x, y, validation_data=(x, y, y), verbose=0)
    assert model.optimizer is None


def test_a_streamed_source_trains_on_the_gpu_as_on_the_cpu(digits):
    x, y = digits
    x, y = x[:32].astype(np.float64), y[:32]
    cpu = small_cnn(dtype="float64")
    gpu = small_cnn(dtype="float64").to("cuda")
    for model in (cpu, gpu):
        model.fit(Samples(x, y), epochs=1, batch_size=16, optimizer=optim.SGD(0.1), seed=1, verbose=0)
    gpu.to("cpu")
    for a, b in zip(weights(cpu), weights(gpu)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)
