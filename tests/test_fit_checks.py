"""fit checks every argument before anything changes: bad calls leave the model as it was,
optimizers and losses by Keras's names, and the memory of one training step."""

import numpy as np
import pytest
import test_model
from test_model import small_cnn, weights

import cnnlab
from cnnlab import optim

digits = test_model.digits  # the fixture, shared with test_model


@pytest.mark.parametrize("bad, error, words", [
    (dict(optimizer="adagrad"), ValueError, r"'sgd', 'adam', 'adamw', 'rmsprop'.*got 'adagrad'"),
    (dict(optimizer=0.01), TypeError, "optimizer must be a name"),
    (dict(loss="binary_cross_entropy"), ValueError, r"binary_crossentropy.*got 'binary_cross_entropy'"),
    (dict(loss=optim.Adam()), TypeError, "loss must be a name"),
    (dict(shuffle="yes"), TypeError, "shuffle"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
    (dict(seed=1.5), TypeError, "seed must be an integer"),
    (dict(verbose=3), ValueError, "verbose must be 0"),
    (dict(checkpoint=3), TypeError, "checkpoint must be a file path"),
    (dict(checkpoint="/no/such/folder/ckpt.npz"), ValueError, "folder /no/such/folder does not exist"),
    (dict(resume="/no/such/ckpt.npz"), ValueError, "resume='/no/such/ckpt.npz': no such file"),
    (dict(validation_data=5), TypeError, "validation_data must be an array of images, a dataset or an iterable"),
    (dict(augment="flip"), TypeError, "augment"),
])
def test_a_bad_fit_argument_changes_nothing_and_the_next_fit_works(bad, error, words):
    model = small_cnn()
    model.fit(np.zeros((6, 1, 8, 8), np.float32), [0, 1, 2] * 2, optimizer=optim.SGD(0.1), verbose=0)
    optimizer, loss, before = model.optimizer, model.loss, weights(model)
    arguments = dict(x=np.zeros((30, 1, 8, 8), np.float32), y=np.array([0, 1, 2] * 10), epochs=1, verbose=0)
    with pytest.raises(error, match=words):
        model.fit(**dict(arguments, **bad))
    assert model.optimizer is optimizer and model.loss is loss and optimizer.steps == 1
    for a, b in zip(before, weights(model)):
        np.testing.assert_array_equal(a, b)
    model.fit(**arguments)  # trains on with what the model had
    assert model.optimizer is optimizer and optimizer.steps == 2


def test_optimizers_and_losses_by_keras_names(digits):
    x, y = digits
    model = small_cnn()
    model.fit(x[:32], y[:32], optimizer="adam", verbose=0)
    assert type(model.optimizer) is optim.Adam and model.optimizer.steps == 1
    for name, kind in (("SGD", optim.SGD), ("adamw", optim.AdamW), ("rmsprop", optim.RMSprop)):
        model.fit(x[:32], y[:32], optimizer=name, loss="categorical_crossentropy", verbose=0)
        assert type(model.optimizer) is kind and model.optimizer.steps == 1
    assert isinstance(model.loss, cnnlab.losses.CrossEntropy)
    runs = [small_cnn().fit(x, y, epochs=2, batch_size=16, optimizer=make(), seed=0, verbose=0).history["loss"]
            for make in (lambda: "rmsprop", lambda: optim.RMSprop())]
    assert runs[0] == runs[1]


def test_fit_refuses_a_batch_too_large_for_the_memory(digits, monkeypatch):
    from cnnlab import checks, training

    x, y = digits
    model = small_cnn()
    # 3 x (input and every layer's output) x batch x 4 bytes, plus parameters, gradients and Adam's 2 moments
    values = 64 + 256 + 256 + 64 + 64 + 16 + 16 + 3 + 3
    assert training.step_memory(model, 32, optim.Adam()) == 3 * values * 32 * 4 + 1131 * 4 * 4
    assert training.step_memory(model, 32, optim.SGD(0.1)) == 3 * values * 32 * 4 + 1131 * 4 * 3
    model.freeze(up_to=1)  # the frozen convolution keeps its 40 weights only
    assert training.step_memory(model, 1, optim.SGD(0.1)) == 3 * values * 4 + 40 * 4 + 1091 * 4 * 3
    model.unfreeze()

    monkeypatch.setattr(checks, "available_memory", lambda: training.step_memory(model, 32) - 1)
    with pytest.raises(MemoryError, match=r"batch_size=32 .* needs .* available: pass a smaller batch_size "
                                          r"\(at most about 31 fits\)"):
        model.fit(x, y, batch_size=32, verbose=0)
    assert model.optimizer is None and model.loss is None
    model.fit(x, y, batch_size=31, verbose=0)  # what the message said fits
    model.fit(x[:20], y[:20], batch_size=32, verbose=0)  # a batch is never larger than the data
    fresh = small_cnn()
    monkeypatch.setattr(checks, "available_memory", lambda: 1000)
    with pytest.raises(MemoryError, match="the parameters alone do not fit"):
        fresh.fit(x, y, verbose=0)


def test_verbose_2_writes_one_line_per_epoch_even_on_a_terminal(digits, monkeypatch):
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    x, y = digits
    for verbose, redraws in ((2, False), (1, True), ("auto", True)):
        out = Terminal()
        monkeypatch.setattr(sys, "stdout", out)
        small_cnn().fit(x[:64], y[:64], epochs=2, batch_size=16, verbose=verbose, seed=0)
        text = out.getvalue()
        assert ("\r" in text) == redraws  # a bar redrawn in place, or only each epoch's final line
        assert [line[:9] for line in text.split("\n")[:2]] == ["epoch 1/2", "epoch 2/2"] or redraws
