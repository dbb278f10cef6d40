"""The training step's pool (cnnlab.memory.StepPool): a buffer comes back only when nothing holds
it, a step reuses the arrays of the steps before, and training gives what it gives without it."""

import contextlib

import numpy as np

import cnnlab
import cnnlab.layers as L
from cnnlab import memory, optim
from cnnlab.kernels import cpu


def _address(array):
    return array.__array_interface__["data"][0]


def test_a_buffer_comes_back_only_when_nothing_holds_it():
    pool = memory.StepPool()
    a = pool.take((4, 5), np.float32)
    b = pool.take((4, 5), np.float32)
    assert not np.shares_memory(a, b)  # both held: two buffers
    first = _address(a)
    view = a.T[1:]  # a view of the view keeps the buffer
    del a
    c = pool.take((20,), np.float32)
    assert not np.shares_memory(c, view) and not np.shares_memory(c, b)
    del view
    d = pool.take((2, 10), np.float32)  # the same size and dtype, nothing holds it any more
    assert _address(d) == first and d.shape == (2, 10)
    e = pool.take((20,), np.float64)  # another dtype: its own buffer
    f = pool.take((21,), np.float32)  # another size: its own buffer
    assert all(not np.shares_memory(x, y) for x in (e, f) for y in (b, c, d))


def test_trim_lets_go_of_buffers_two_steps_did_not_take():
    pool = memory.StepPool()
    with pool.lending():
        assert cpu.empty((8,), np.float32).size == 8  # from the pool, dropped at once
    assert pool.nbytes == 32
    with pool.lending():  # a step that asks for another size: the first step's buffer is kept
        cpu.empty((3,), np.float32)
    assert pool.nbytes == 32 + 12
    with pool.lending():
        cpu.empty((3,), np.float32)
    assert pool.nbytes == 12  # neither of the last two steps took the 8-element buffer
    assert cpu.empty((8,), np.float32).size == 8 and pool.nbytes == 12  # outside lending: new arrays


def _network(seed):
    x = cnnlab.Input((3, 10, 10))
    h = L.MaxPool2D(2)(L.ReLU()(L.BatchNorm2D(6)(L.Conv2D(3, 6, 3, padding=1, seed=seed)(x))))
    h = L.Add()([h, L.Conv2D(6, 6, 3, padding=1, seed=seed + 1)(h)])
    return cnnlab.Model(x, L.Dense(6 * 5 * 5, 4, seed=seed + 2)(L.Flatten()(L.Dropout(0.2)(h))))


def test_training_steps_reuse_their_arrays_and_train_as_with_new_arrays(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 3, 10, 10)).astype(np.float32)
    y = rng.integers(0, 4, 12)
    pooled, plain = _network(1), _network(1)
    pool = pooled.graph.step_pool()
    buffers = []
    for _ in range(3):
        pooled.fit(x, y, epochs=1, batch_size=6, optimizer=optim.Adam(0.01) if not buffers else None,
                   shuffle=False, seed=0, verbose=0)
        buffers.append({id(b) for bs in pool.buffers.values() for b in bs})
    assert buffers[0] and buffers[1] == buffers[2]  # after the first epoch, no new buffer
    monkeypatch.setattr(memory.StepPool, "lending", lambda self: contextlib.nullcontext())
    for epoch in range(3):
        plain.fit(x, y, epochs=1, batch_size=6, optimizer=optim.Adam(0.01) if epoch == 0 else None,
                  shuffle=False, seed=0, verbose=0)
    for a, b in zip(pooled.get_weights(), plain.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_an_array_the_caller_keeps_from_a_step_is_not_overwritten_by_the_next():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 10, 10)).astype(np.float32)
    y = rng.integers(0, 4, 6)
    model = _network(2)
    model.fit(x, y, epochs=1, batch_size=6, optimizer=optim.SGD(0.1), verbose=0)
    conv = model.layers[0]
    kept = conv.grads["weight"]
    values = kept.copy()
    model.fit(x[::-1].copy(), y[::-1].copy(), epochs=1, batch_size=6, verbose=0)
    assert conv.grads["weight"] is not kept
    np.testing.assert_array_equal(kept, values)


def test_a_training_step_lets_go_of_what_it_saved_for_its_backward():
    """After the update nothing reads the saved maps: fit drops them, so that the next step's
    arrays can be the same buffers (and a stray backward is refused, not run on stale state)."""
    import pytest

    rng = np.random.default_rng(2)
    model = _network(3)
    model.fit(rng.standard_normal((6, 3, 10, 10)).astype(np.float32), rng.integers(0, 4, 6), epochs=1,
              batch_size=6, verbose=0)
    assert all(layer.saved is None for layer in model.layers)
    with pytest.raises(RuntimeError, match="needs a preceding forward"):
        model.graph.backward({id(model.graph.outputs[0]): np.ones((6, 4), np.float32)})
