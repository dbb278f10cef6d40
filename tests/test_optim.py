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


# --- AdamW and RMSprop against plain NumPy references of PyTorch's update rules -----------


def adamw_reference(param, grads, lr, betas, eps, weight_decay):
    """torch.optim.AdamW's step, written out: decay the parameter, then Adam without L2."""
    p, m, v = param.astype(np.float64), np.zeros(param.shape), np.zeros(param.shape)
    for t, g in enumerate(grads, start=1):
        p = p * (1 - lr * weight_decay)
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        p = p - (lr / (1 - betas[0] ** t)) * m / (np.sqrt(v) / math.sqrt(1 - betas[1] ** t) + eps)
    return p


def rmsprop_reference(param, grads, lr, alpha, eps, weight_decay, momentum, centered):
    """torch.optim.RMSprop's step, written out."""
    p = param.astype(np.float64)
    square_avg, grad_avg, buffer = np.zeros(p.shape), np.zeros(p.shape), np.zeros(p.shape)
    for g in grads:
        g = g + weight_decay * p
        square_avg = alpha * square_avg + (1 - alpha) * g * g
        if centered:
            grad_avg = alpha * grad_avg + (1 - alpha) * g
            average = np.sqrt(square_avg - grad_avg * grad_avg) + eps
        else:
            average = np.sqrt(square_avg) + eps
        if momentum > 0:
            buffer = momentum * buffer + g / average
            p = p - lr * buffer
        else:
            p = p - lr * g / average
    return p


def random_steps(count=6, size=11, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=size), [rng.normal(size=size) * 10.0 ** rng.integers(-3, 2) for _ in range(count)]


def test_adamw_matches_the_reference_over_several_steps():
    param, grads = random_steps()
    for lr, betas, eps, weight_decay in ((1e-3, (0.9, 0.999), 1e-8, 0.01), (0.05, (0.8, 0.9), 1e-6, 0.3),
                                         (0.01, (0.9, 0.999), 1e-8, 0.0)):
        optimizer = optim.AdamW(lr, betas=betas, eps=eps, weight_decay=weight_decay)
        got = run(optimizer, param.copy(), grads)
        np.testing.assert_allclose(got, adamw_reference(param, grads, lr, betas, eps, weight_decay), rtol=1e-12)
    defaults = optim.AdamW()
    assert (defaults.base_lr, defaults.betas, defaults.eps, defaults.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 0.01)


def test_adamw_decay_is_decoupled_from_adams_l2_penalty():
    param, grads = random_steps(count=3)
    decoupled = run(optim.AdamW(0.1, weight_decay=0.5), param.copy(), grads)
    coupled = run(optim.Adam(0.1, weight_decay=0.5), param.copy(), grads)
    assert not np.allclose(decoupled, coupled)
    zero = run(optim.AdamW(0.1, weight_decay=0.0), param.copy(), grads)  # no decay: Adam itself
    np.testing.assert_allclose(zero, run(optim.Adam(0.1), param.copy(), grads), rtol=1e-13)


@pytest.mark.parametrize("settings", [
    dict(), dict(lr=0.003, alpha=0.9, eps=1e-6), dict(weight_decay=0.1), dict(momentum=0.9),
    dict(centered=True), dict(lr=0.002, momentum=0.5, centered=True, weight_decay=0.01),
])
def test_rmsprop_matches_the_reference_over_several_steps(settings):
    param, grads = random_steps(seed=1)
    optimizer = optim.RMSprop(**settings)
    full = dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False) | settings
    got = run(optimizer, param.copy(), grads)
    np.testing.assert_allclose(got, rmsprop_reference(param, grads, **full), rtol=1e-11)
    expected_state = {"square_avg"} | ({"momentum_buffer"} if full["momentum"] else set()) \
        | ({"grad_avg"} if full["centered"] else set())
    assert set(optimizer.state[0]) == expected_state  # only the buffers the settings use


def test_new_optimizers_keep_float32_and_round_trip_through_config():
    for optimizer in (optim.AdamW(0.01, weight_decay=0.2), optim.RMSprop(0.01, momentum=0.9, centered=True)):
        param = np.ones(4, np.float32)
        run(optimizer, param, [np.full(4, 0.5, np.float32)] * 2)
        assert param.dtype == np.float32
        rebuilt = optim.from_config(optimizer.config())
        assert type(rebuilt) is type(optimizer) and rebuilt.config() == optimizer.config()


def test_new_optimizers_on_the_gpu_equal_the_cpu(small_cuda_launches):
    import cnnlab

    param, grads = random_steps(count=4, size=37, seed=2)
    for make in (lambda: optim.AdamW(0.01, weight_decay=0.1),
                 lambda: optim.RMSprop(0.01, momentum=0.9, centered=True, weight_decay=0.01)):
        cpu = run(make(), param.copy(), grads)
        device_param = cnnlab.to_device(param.copy())
        run(make(), device_param, [cnnlab.to_device(g) for g in grads])
        np.testing.assert_allclose(cnnlab.to_host(device_param), cpu, rtol=1e-12)


def test_optimizers_by_keras_names():
    assert type(optim.get("sgd")) is optim.SGD and type(optim.get("Adam")) is optim.Adam
    assert type(optim.get("adamw")) is optim.AdamW and type(optim.get("RMSprop")) is optim.RMSprop
    assert optim.get("adam") is not optim.get("adam")  # a new optimizer each time
    given = optim.SGD(0.1)
    assert optim.get(given) is given
    with pytest.raises(ValueError, match=r"'sgd', 'adam', 'adamw', 'rmsprop'.*'adagrad'"):
        optim.get("adagrad")
    with pytest.raises(TypeError, match="optimizer must be a name"):
        optim.get(0.01)


@pytest.mark.parametrize("make, error", [
    (lambda: optim.AdamW(lr=-1), ValueError), (lambda: optim.AdamW(betas=(0.9, 1.0)), ValueError),
    (lambda: optim.AdamW(weight_decay=-0.1), ValueError), (lambda: optim.RMSprop(alpha=-0.5), ValueError),
    (lambda: optim.RMSprop(momentum=-1), ValueError), (lambda: optim.RMSprop(eps="small"), TypeError),
    (lambda: optim.RMSprop(centered="yes"), TypeError), (lambda: optim.Adam(lr="0.1"), TypeError),
])
def test_bad_new_optimizer_arguments(make, error):
    with pytest.raises(error):
        make()


def test_align_keeps_each_parameters_state_when_the_trainable_parameters_change():
    sgd = optim.SGD(0.1, momentum=0.9)
    a, b, c = np.ones(2), np.ones(3), np.ones(4)
    sgd.align(["a", "b", "c"])
    sgd.step([(a, np.ones(2)), (b, np.full(3, 2.0)), (c, np.full(4, 3.0))])
    sgd.align(["c", "a"])  # b frozen, the order changed
    assert [s["velocity"].tolist() for s in sgd.state] == [[3.0] * 4, [1.0] * 2]
    sgd.align(["a", "b", "c"])
    assert sgd.state[1] is None  # b starts again from zeros
    sgd.step([(a, np.zeros(2)), (b, np.zeros(3)), (c, np.zeros(4))])
    assert sgd.state[1]["velocity"].tolist() == [0.0] * 3 and sgd.state[0]["velocity"].tolist() == [0.9] * 2
