"""Callbacks in fit: early stopping, learning-rate reduction, checkpoints of the best model,
per-step hooks; and the Numba compilation report."""

import contextlib
import io

import numba
import numpy as np
import pytest
import test_model
from test_model import small_cnn, weights

import cnnlab
from cnnlab import optim
from cnnlab.callbacks import Callback, EarlyStopping, LambdaCallback, ModelCheckpoint, ReduceLROnPlateau
from cnnlab.compilation import FINISHED, MESSAGE, STARTED, end_line, report_compilation

digits = test_model.digits  # the fixture, shared with test_model


class Keeper(Callback):
    def __init__(self):
        self.kept = []

    def on_epoch_end(self, epoch, logs):
        self.kept.append(weights(self.model))


def assert_same(a, b):
    for one, other in zip(a, b):
        np.testing.assert_array_equal(one, other)


def test_early_stopping_stops_and_restores_the_best_weights(digits):
    x, y = digits
    model, keeper = small_cnn(), Keeper()
    stop = EarlyStopping(monitor="loss", patience=1, min_delta=1e9)  # only the first epoch improves
    history = model.fit(x, y, epochs=5, batch_size=32, seed=0, verbose=0, callbacks=[keeper, stop])
    assert len(history.history["loss"]) == 2
    assert history.stopped_epoch == 1 and history.best_epoch == 0
    assert model.history is history and "stopped_epoch=1" in repr(history)
    assert_same(weights(model), keeper.kept[0])


def test_early_stopping_without_patience_runs_all_epochs_and_keeps_the_best(digits):
    x, y = digits
    model, keeper = small_cnn(), Keeper()
    stop = EarlyStopping(monitor="loss", mode="max", patience=None)  # the worst loss: not the last epoch
    history = model.fit(x, y, epochs=3, batch_size=32, seed=0, verbose=0, callbacks=[keeper, stop])
    losses = history.history["loss"]
    assert len(losses) == 3 and history.stopped_epoch is None
    assert history.best_epoch == int(np.argmax(losses)) != 2
    assert_same(weights(model), keeper.kept[history.best_epoch])


def test_auto_mode_maximizes_accuracies_and_minimizes_the_rest():
    assert EarlyStopping("val_accuracy").mode == "max"
    assert EarlyStopping("val_loss").mode == "min"
    assert ReduceLROnPlateau("accuracy").mode == "max"
    assert EarlyStopping("val_accuracy", mode="min").mode == "min"


def test_monitoring_a_metric_fit_does_not_measure_is_refused_before_any_step(digits):
    x, y = digits
    model = small_cnn()
    before = weights(model)
    with pytest.raises(ValueError, match=r"'val_loss'.*available: loss, accuracy, lr, seconds.*validation"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[EarlyStopping()])
    with pytest.raises(ValueError, match="'val_acc'"):
        model.fit(x, y, epochs=1, verbose=0, validation_split=0.2, callbacks=[ModelCheckpoint("m.npz", "val_acc")])
    with pytest.raises(TypeError, match=r"callbacks\[0\]"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[print])
    assert_same(before, weights(model))
    assert model.optimizer is None


@pytest.mark.parametrize("make", [
    lambda: EarlyStopping(patience=-1), lambda: EarlyStopping(mode="up"), lambda: EarlyStopping(min_delta=-1),
    lambda: ReduceLROnPlateau(factor=1.5), lambda: ReduceLROnPlateau(min_lr=-1),
])
def test_bad_callback_settings(make):
    with pytest.raises(ValueError):
        make()


def test_reduce_lr_on_plateau_halves_the_rate_down_to_min_lr(digits):
    x, y = digits
    model = small_cnn()
    reduce = ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_lr=3e-4, min_delta=1e9)
    history = model.fit(x[:64], y[:64], epochs=4, batch_size=32, optimizer=optim.Adam(1e-3), seed=0, verbose=0,
                        callbacks=[reduce])
    np.testing.assert_allclose(history.history["lr"], [1e-3, 1e-3, 5e-4, 3e-4])


def test_model_checkpoint_keeps_the_best_epoch(digits, tmp_path):
    x, y = digits
    model, keeper = small_cnn(), Keeper()
    path = tmp_path / "best.npz"
    save = ModelCheckpoint(path, monitor="loss", mode="max")  # the worst epoch: the first
    history = model.fit(x, y, epochs=3, batch_size=32, seed=0, verbose=0, callbacks=[keeper, save])
    best = int(np.argmax(history.history["loss"]))
    assert save.best_epoch == best != 2
    loaded = cnnlab.load(path)
    assert_same(weights(loaded), keeper.kept[best])
    every = ModelCheckpoint(tmp_path / "last.npz", monitor="loss", mode="max", save_best_only=False)
    model.fit(x[:32], y[:32], epochs=1, verbose=0, callbacks=[every])
    assert_same(weights(cnnlab.load(tmp_path / "last.npz")), weights(model))


def test_lambda_callback_sees_every_step_and_epoch(digits):
    x, y = digits
    steps, epochs, ends = [], [], []
    callback = LambdaCallback(on_batch_end=lambda step, logs: steps.append((step, dict(logs))),
                              on_epoch_end=lambda epoch, logs: epochs.append((epoch, logs)),
                              on_train_end=lambda logs: ends.append(logs))
    small_cnn().fit(x[:80], y[:80], epochs=2, batch_size=32, seed=0, verbose=0, callbacks=[callback])
    assert [step for step, _ in steps] == [0, 1, 2, 0, 1, 2]
    assert [logs["steps"] for _, logs in steps] == [1, 2, 3, 4, 5, 6]
    assert [logs["epoch"] for _, logs in steps] == [0, 0, 0, 1, 1, 1]
    assert set(steps[0][1]) == {"epoch", "steps", "loss", "accuracy", "lr"}
    assert steps[2][1]["loss"] == pytest.approx(epochs[0][1]["loss"])  # the running mean at the end
    assert [epoch for epoch, _ in epochs] == [0, 1] and ends == [epochs[1][1]]
    with pytest.raises(TypeError, match="on_epoch_end"):
        LambdaCallback(on_epoch_end=3)


def test_a_callback_can_stop_training(digits):
    x, y = digits

    class StopAtOnce(Callback):
        def on_epoch_end(self, epoch, logs):
            self.model.stop_training = True

    history = small_cnn().fit(x[:32], y[:32], epochs=4, verbose=0, callbacks=[StopAtOnce()])
    assert len(history.history["loss"]) == 1 and history.stopped_epoch == 0


def test_history_and_progress_are_callbacks_you_can_replace(digits, capsys):
    from cnnlab.callbacks import History, ProgbarLogger

    x, y = digits
    mine, log = History(), io.StringIO()
    returned = small_cnn().fit(x[:32], y[:32], epochs=2, batch_size=16, seed=0, verbose=0,
                               callbacks=[mine, ProgbarLogger(stream=log)])
    assert returned is mine and len(mine.history["loss"]) == 2
    assert capsys.readouterr().out == ""  # verbose=0 adds no bar of its own; the given one writes to its stream
    lines = log.getvalue().splitlines()
    assert [line[:9] for line in lines] == ["epoch 1/2", "epoch 2/2"] and "32/32" in lines[0]
    small_cnn().fit(x[:32], y[:32], epochs=1, batch_size=16, seed=0, verbose=1, callbacks=[ProgbarLogger(stream=log)])
    assert capsys.readouterr().out == ""  # one progress line per epoch, not two


def test_a_progress_bar_alone_does_not_read_the_running_totals_every_step(digits, monkeypatch):
    from cnnlab import training

    reads = []
    original = training._Run.read_metrics
    monkeypatch.setattr(training._Run, "read_metrics", lambda run: reads.append(1) or original(run))
    x, y = digits
    small_cnn().fit(x[:64], y[:64], epochs=1, batch_size=16, seed=0, verbose=1)  # not a terminal: no redraws
    assert len(reads) == 1  # the end of the epoch only
    small_cnn().fit(x[:64], y[:64], epochs=1, batch_size=16, seed=0, verbose=1,
                    callbacks=[LambdaCallback(on_batch_end=lambda step, logs: None)])
    assert len(reads) == 1 + 4 + 1  # a callback reading the step logs: after every step


# --- the compilation report ----------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self):
        return True


def fresh_function():
    """A new function each call: Numba compiles it anew."""
    @numba.njit
    def add_one(a):
        return a + 1

    return add_one


def test_compiling_is_announced_then_summed_up_in_a_log():
    stream = io.StringIO()
    function = fresh_function()
    with report_compilation(stream, min_seconds=0) as report:
        assert function(1) == 2
        assert stream.getvalue() == STARTED + "\n"  # said while it happens, not only afterwards
    assert report.count >= 1 and report.seconds > 0
    assert stream.getvalue() == STARTED + "\n" + FINISHED.format(report.count, report.seconds) + "\n"
    assert "first run only" in stream.getvalue()


def test_a_progress_bar_starts_below_the_compilation_line():
    stream = Terminal()
    with report_compilation(stream, min_seconds=0):
        fresh_function()(1)
        end_line()
        stream.write("progress")
    assert stream.getvalue().endswith(" done\nprogress")


def test_compiling_is_redrawn_in_place_on_a_terminal():
    stream = Terminal()
    function = fresh_function()
    with report_compilation(stream, min_seconds=0) as report:
        function(1.0)
    text = stream.getvalue()
    assert text.startswith("\r" + MESSAGE.format(0)[:20]) and text.endswith(MESSAGE.format(report.count) + "\n")


def test_short_or_no_compilation_writes_nothing_and_reports_nest():
    stream = io.StringIO()
    function = fresh_function()
    with report_compilation(stream, min_seconds=1000) as outer:
        with report_compilation(io.StringIO(), min_seconds=0) as inner:
            function(1)
        assert inner is outer
    assert outer.count >= 1 and stream.getvalue() == ""
    with report_compilation(stream, min_seconds=0) as report:
        function(2)  # compiled already
    assert report.count == 0 and report.seconds == 0.0 and stream.getvalue() == ""


def test_the_progress_bar_ends_the_compilation_line_before_drawing():
    from cnnlab.callbacks import ProgbarLogger

    terminal = Terminal()  # stdout and stderr on one terminal
    with report_compilation(terminal, min_seconds=0):
        fresh_function()(1)
        progress = ProgbarLogger(stream=terminal)
        progress.set_params(dict(epochs=1, samples=10, batch_size=10))
        progress.on_epoch_begin(0, {})
        progress.on_epoch_end(0, dict(loss=0.5, accuracy=0.9))
    lines = terminal.getvalue().split("\n")
    assert lines[0].endswith(" done") and lines[1].startswith("\repoch 1/1")


# --- a diverged run stops: FloatingPointError by default, TerminateOnNaN stops quietly ------------


def test_a_huge_learning_rate_stops_fit_with_a_floating_point_error(digits):
    x, y = digits
    for optimizer in (optim.Adam(1e10), optim.SGD(1e10)):  # Adam's loss stays finite: its state overflows
        model = small_cnn()
        with pytest.raises(FloatingPointError, match="lower the learning rate"):
            model.fit(x, y, epochs=5, batch_size=32, optimizer=optimizer, seed=0, verbose=0)
        assert optimizer.steps <= len(x) // 32 + 1  # within the first epoch


def test_terminate_on_nan_stops_training_and_returns_the_history(digits):
    from cnnlab.callbacks import TerminateOnNaN

    x, y = digits
    log = io.StringIO()
    model = small_cnn()
    history = model.fit(x, y, epochs=5, batch_size=32, optimizer=optim.SGD(1e10), seed=0, verbose=0,
                        callbacks=[TerminateOnNaN(log), EarlyStopping(monitor="loss", patience=None)])
    assert history.stopped_epoch == 0 and history.history == {} and model.stop_training
    assert log.getvalue().startswith("epoch 1: the loss became") and "TerminateOnNaN" in log.getvalue()
    assert all(np.all(np.isfinite(w)) for w in weights(model))  # the last step whose loss was finite
    assert model.optimizer.steps < len(x) // 32
    # a finite first epoch stays in the history; the run ends in the second
    blow_up = LambdaCallback(on_epoch_end=lambda epoch, logs: setattr(model.optimizer, "base_lr", 1e10))
    model = small_cnn()
    history = model.fit(x, y, epochs=4, batch_size=32, optimizer=optim.SGD(0.05), seed=0, verbose=0,
                        callbacks=[blow_up, TerminateOnNaN(log)])
    assert history.stopped_epoch == 1 and len(history.history["loss"]) == 1


# --- the best epoch: monitor, mode, and ties of accuracy broken by the loss ---------------------


class FakeModel:
    """What the monitoring callbacks touch: weights, the history, saving."""

    def __init__(self):
        self.history, self.stop_training, self.saved, self.weights = cnnlab.callbacks.History(), False, [], None

    def get_weights(self):
        return {"w": np.array([float(self.epoch)])}

    def set_weights(self, weights):
        self.weights = weights

    def save(self, path):
        self.saved.append(self.epoch)


def run_epochs(callback, epochs):
    model = FakeModel()
    callback.model = model
    callback.on_train_begin(model)
    for epoch, logs in enumerate(epochs):
        model.epoch = epoch
        callback.on_epoch_end(epoch, logs)
    callback.on_train_end(epochs[-1])
    return model


TIED = [dict(val_accuracy=0.75, val_loss=0.80, accuracy=0.5, loss=1.0),
        dict(val_accuracy=0.75, val_loss=0.20, accuracy=0.5, loss=0.5),   # same accuracy, a 4x lower loss
        dict(val_accuracy=0.75, val_loss=0.30, accuracy=0.6, loss=0.4),   # same accuracy, a higher loss
        dict(val_accuracy=0.50, val_loss=0.10, accuracy=0.6, loss=0.3)]


def test_an_accuracy_tie_goes_to_the_epoch_with_the_lower_loss():
    stop = EarlyStopping(monitor="val_accuracy", patience=None)
    model = run_epochs(stop, TIED)
    assert stop.best_epoch == 1 and model.history.best_epoch == 1
    assert model.weights["w"].tolist() == [1.0]  # restored: the tied epoch with the lower val_loss
    save = ModelCheckpoint("best.npz", monitor="val_accuracy")
    assert run_epochs(save, TIED).saved == [0, 1]
    train = ModelCheckpoint("best.npz", monitor="accuracy")  # ties of accuracy broken by loss
    assert run_epochs(train, TIED).saved == [0, 1, 2, 3] and train.best_epoch == 3
    assert run_epochs(ModelCheckpoint("m.npz", monitor="val_loss"), TIED).saved == [0, 1, 3]  # 'auto': min
    patient = EarlyStopping(monitor="val_accuracy", patience=1)
    model = run_epochs(patient, TIED[:3])
    assert model.stop_training and patient.best_epoch == 1  # the tie with a lower loss reset the patience
    minimized = EarlyStopping(monitor="val_accuracy", mode="min", patience=None)
    run_epochs(minimized, TIED)
    assert minimized.best_epoch == 3  # an explicit mode wins; no tie-break when minimizing


def test_monitor_names_and_modes_as_keras():
    for monitor, mode in (("val_accuracy", "max"), ("val_loss", "min"), ("accuracy", "max"), ("loss", "min")):
        for kind in (EarlyStopping, ModelCheckpoint):
            callback = kind(monitor=monitor) if kind is EarlyStopping else kind("m.npz", monitor=monitor)
            assert callback.mode == mode
    assert EarlyStopping("val_accuracy").tie_breaker == "val_loss"
    assert EarlyStopping("accuracy").tie_breaker == "loss" and EarlyStopping("loss").tie_breaker is None
    with pytest.raises(TypeError, match="monitor"):
        EarlyStopping(monitor=None)


def test_the_command_line_reports_the_epoch_whose_weights_it_keeps(capsys):
    from cnnlab.cli.train import _report

    history = cnnlab.callbacks.History({"val_accuracy": [0.75, 0.75, 0.5]})
    history.best_epoch = 1  # EarlyStopping's choice: the tie with the lower validation loss
    model = small_cnn()
    x, y = np.zeros((4, 1, 8, 8), np.float32), np.array([0, 1, 2, 0])

    class HeldOut:  # what cnnlab train passes: the held-out part of its ImageFolder
        labels = y

        def __len__(self):
            return len(y)

        @contextlib.contextmanager
        def batches(self, batch_size):
            yield iter([(x, y)])

    _report(model, history, HeldOut(), ["a", "b", "c"])
    assert "best validation accuracy: 75.00% at epoch 2 of 3" in capsys.readouterr().out
