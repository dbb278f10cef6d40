"""Optimizers against updates computed by hand, and the learning-rate schedules."""

import math

import numpy as np
import pytest

from cnnlab import optim


def run(optimizer, param, grads):
    for grad in grads:
        optimizer.step([(param, grad)])
    return param


def test_plain_sgd():
    param = np.array([1.0, -2.0])
    run(optim.SGD(lr=0.1), param, [np.array([0.5, 1.0])] * 2)
    np.testing.assert_allclose(param, [1.0 - 2 * 0.05, -2.0 - 2 * 0.1])


def test_sgd_momentum_weight_decay_and_nesterov_by_hand():
    grads = [np.array([1.0]), np.array([2.0]), np.array([-1.0])]
    lr, mu, wd = 0.1, 0.9, 0.01
    for nesterov in (False, True):
        p, v = 1.0, 0.0
        for g in grads:
            g = g[0] + wd * p
            v = mu * v + g
            p -= lr * (g + mu * v if nesterov else v)
        param = run(optim.SGD(lr, momentum=mu, weight_decay=wd, nesterov=nesterov), np.array([1.0]), grads)
        assert param[0] == pytest.approx(p, rel=1e-12)


def test_adam_by_hand():
    grads = [np.array([0.5]), np.array([-0.3]), np.array([0.2])]
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    p, m, v = 2.0, 0.0, 0.0
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g[0]
        v = b2 * v + (1 - b2) * g[0] ** 2
        p -= lr * (m / (1 - b1 ** t)) / (math.sqrt(v / (1 - b2 ** t)) + eps)
    param = run(optim.Adam(lr, betas=(b1, b2), eps=eps), np.array([2.0]), grads)
    assert param[0] == pytest.approx(p, rel=1e-12)


def test_first_adam_step_moves_by_lr():
    param = run(optim.Adam(0.05), np.array([1.0, 1.0]), [np.array([3.0, -1e-3])])
    np.testing.assert_allclose(param, [0.95, 1.05], rtol=1e-6)


def test_float32_parameters_stay_float32():
    param = np.ones(3, np.float32)
    run(optim.Adam(0.1), param, [np.ones(3, np.float32)])
    assert param.dtype == np.float32


def test_schedules():
    step = optim.StepLR(step_size=2, gamma=0.5)
    assert [step.factor(e) for e in range(5)] == [1, 1, 0.5, 0.5, 0.25]
    cosine = optim.CosineLR(total_epochs=4, min_factor=0.1)
    assert cosine.factor(0) == pytest.approx(1.0)
    assert cosine.factor(2) == pytest.approx(0.55)
    assert cosine.factor(4) == pytest.approx(0.1)
    sgd = optim.SGD(0.2, schedule=step)
    sgd.set_epoch(3)
    assert sgd.lr == pytest.approx(0.1)


def test_config_round_trip():
    original = optim.Adam(0.003, betas=(0.8, 0.99), weight_decay=0.1, schedule=optim.CosineLR(10))
    rebuilt = optim.from_config(original.config())
    assert rebuilt.config() == original.config()


@pytest.mark.parametrize("make", [
    lambda: optim.SGD(lr=0), lambda: optim.SGD(0.1, momentum=-1), lambda: optim.SGD(0.1, nesterov=True),
    lambda: optim.Adam(betas=(1.0, 0.9)), lambda: optim.StepLR(0), lambda: optim.CosineLR(0),
])
def test_bad_optimizer_arguments(make):
    with pytest.raises(ValueError):
        make()


def test_existing_schedule_configs_are_unchanged():
    assert optim.StepLR(2, 0.5).config() == {"type": "StepLR", "step_size": 2, "gamma": 0.5}
    assert optim.CosineLR(4, 0.1).config() == {"type": "CosineLR", "total_epochs": 4, "min_factor": 0.1}
    old = {"type": "SGD", "lr": 0.1, "schedule": {"type": "StepLR", "step_size": 2, "gamma": 0.5},
           "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}
    assert optim.from_config(old).config() == old


def test_warmup_climbs_linearly_then_follows_the_wrapped_schedule():
    warmup = optim.WarmupLR(4)
    assert [warmup.factor_at(0, 0.0, step) for step in range(6)] == [0.25, 0.5, 0.75, 1, 1, 1]
    then_step = optim.WarmupLR(2, after=optim.StepLR(1, 0.5))
    assert then_step.factor_at(0, 0.5, 0) == 0.5 * 1
    assert then_step.factor_at(2, 0.0, 10) == 0.25
    sgd = optim.SGD(0.2, schedule=warmup)
    sgd.set_epoch(0, 0.0)
    assert sgd.lr == pytest.approx(0.05)


def test_per_step_applies_an_epoch_schedule_at_fractional_epochs():
    cosine = optim.CosineLR(total_epochs=2)
    smooth = optim.PerStep(cosine)
    assert smooth.factor_at(0, 0.5, 7) == pytest.approx(cosine.factor(0.5)) != cosine.factor(0)
    assert cosine.factor_at(0, 0.5, 7) == cosine.factor(0)  # an epoch schedule keeps its staircase


def test_new_schedules_round_trip_through_config():
    original = optim.SGD(0.1, schedule=optim.WarmupLR(3, after=optim.PerStep(optim.CosineLR(10, 0.1))))
    rebuilt = optim.from_config(original.config())
    assert rebuilt.config() == original.config()
    assert isinstance(rebuilt.schedule.after, optim.PerStep)


@pytest.mark.parametrize("make, error", [
    (lambda: optim.WarmupLR(0), ValueError), (lambda: optim.WarmupLR(2.5), ValueError),
    (lambda: optim.WarmupLR(2, after=3), TypeError), (lambda: optim.PerStep(optim.WarmupLR(2)), TypeError),
])
def test_bad_schedule_arguments(make, error):
    with pytest.raises(error):
        make()


def test_fit_applies_the_warmup_at_every_step_and_checkpoints_it(tmp_path):
    from test_model import small_cnn

    from cnnlab.callbacks import LambdaCallback

    rng = np.random.default_rng(0)
    x, y = rng.random((40, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 40)
    rates = []
    seen = LambdaCallback(on_batch_end=lambda step, logs: rates.append(logs["lr"]))
    schedule = optim.WarmupLR(3, after=optim.StepLR(1, 0.5))
    model = small_cnn()
    model.fit(x, y, epochs=2, batch_size=10, optimizer=optim.SGD(0.3, schedule=schedule), seed=0, verbose=0,
              callbacks=[seen], checkpoint=tmp_path / "ckpt.npz")
    np.testing.assert_allclose(rates, [0.1, 0.2, 0.3, 0.3, 0.15, 0.15, 0.15, 0.15])
    resumed = small_cnn()
    resumed.fit(x, y, epochs=2, verbose=0, resume=tmp_path / "ckpt.npz")
    assert resumed.optimizer.config() == model.optimizer.config()
