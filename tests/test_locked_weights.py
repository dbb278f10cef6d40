"""Locked weights (Model.lock_weights): read-only parameters and buffers whose preparation for a
convolution's path (packed, transformed) is made once and kept, the paths that prepare weights
taken for larger weights; unlocking gives writable copies back, and training refuses a locked
model."""

from types import SimpleNamespace

import numpy as np
import pytest
from conv_paths import check_against_loops

import cnnlab
import cnnlab.layers as L
from cnnlab.functional.conv import bind_conv2d
from cnnlab.kernels.cpu import _strips
from cnnlab.kernels.cpu import conv as cpu_conv

_STRIPS_HERE = _strips.STRIPS and _strips.available() and _strips.VECTOR_BYTES == 64


def test_only_a_read_only_view_of_a_read_only_array_is_sealed():
    a = np.ones((4, 3, 3, 3), np.float32)
    assert not cpu_conv._sealed(a)
    a.flags.writeable = False  # (an array of its own: its flag can be set back)
    assert not cpu_conv._sealed(a)
    view = a.view()
    view.flags.writeable = False
    assert cpu_conv._sealed(view)
    with pytest.raises(ValueError):
        view.flags.writeable = True
    assert not cpu_conv._sealed(np.frombuffer(bytes(16), np.float32))  # (read-only, of bytes)


def _model():
    x = cnnlab.Input((3, 8, 8))
    shared = L.Conv2D(4, 4, 3, padding=1, seed=2)
    h = L.ReLU()(L.BatchNorm2D(4)(L.Conv2D(3, 4, 3, padding=1, seed=1)(x)))
    h = shared(shared(h))  # (a layer called twice)
    out = L.Dense(4, 3, seed=3)(L.Flatten()(L.GlobalAvgPool2D(keepdims=True)(h)))
    return cnnlab.Model(x, out)


def test_locking_makes_the_arrays_read_only_and_unlocking_writable_copies():
    model = _model()
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    before = model.forward(x)
    arrays = [layer.params[name] for layer, name in model.parameters()]
    assert model.lock_weights() is model and model.weights_locked()
    locked = [layer.params[name] for layer, name in model.parameters()]
    assert all(cpu_conv._sealed(a) and a is not b and np.array_equal(a, b) for a, b in zip(locked, arrays))
    assert all(cpu_conv._sealed(v) for layer in model.layers for v in layer.buffers.values())
    np.testing.assert_allclose(model.forward(x), before, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="read-only"):
        locked[0] *= 2
    with pytest.raises(ValueError, match="locked.*unlock_weights"):
        model.fit(x, np.array([0, 1]), epochs=1, verbose=0)
    assert model.unlock_weights() is model and not model.weights_locked()
    unlocked = [layer.params[name] for layer, name in model.parameters()]
    assert all(a.flags.writeable and a is not b and np.array_equal(a, b) for a, b in zip(unlocked, locked))
    unlocked[0] *= 2  # (writable again, and read)
    assert not np.allclose(model.forward(x), before)
    model.fit(x, np.array([0, 1]), epochs=1, verbose=0)


def test_an_array_shared_by_layers_stays_shared():
    a, b = L.Dense(4, 4, seed=1), L.Dense(4, 4, seed=2)
    b.params["weight"] = a.params["weight"]  # (tied weights)
    x = cnnlab.Input((4,))
    model = cnnlab.Model(x, b(a(x)))
    model.lock_weights()
    assert a.params["weight"] is b.params["weight"]
    model.unlock_weights()
    assert a.params["weight"] is b.params["weight"] and a.params["weight"].flags.writeable


def test_a_sealed_weight_is_packed_once_and_takes_the_strips_for_larger_weights(monkeypatch):
    """ResNet-18's 3x3 layer at 14x14, batch 1 (2.4 MB of weights): by im2col and GEMM on a
    writable weight, by strips on a sealed one, its packing made at the first call only; the
    bound call asked again with the other kind of weight does not accept it."""
    if not _STRIPS_HERE:
        pytest.skip("the strips run on processors with AVX-512 only")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 256, 14, 14)).astype(np.float32)
    weight = (rng.standard_normal((256, 256, 3, 3)) * 0.05).astype(np.float32)
    sealed = cpu_conv._sealed_copy(weight)
    plain, packed = bind_conv2d(x, weight, None, 1, 1), bind_conv2d(x, sealed, None, 1, 1)
    assert plain.work[0] is not _strips._strip_forward_items and packed.work[0] is _strips._strip_forward_items
    assert not plain.accepts(x, sealed, None, 1, 1, 1, 1, None, None, None)
    assert not packed.accepts(x, weight, None, 1, 1, 1, 1, None, None, None)
    packings = []
    real = _strips.strip_weights
    monkeypatch.setattr(_strips, "strip_weights", lambda *args: packings.append(1) or real(*args))
    packed.work = packed.work[:5] + ((_strips.strip_weights,),)
    expected = plain(x, weight)
    for _ in range(3):
        np.testing.assert_allclose(packed(x, sealed), expected, rtol=1e-4, atol=1e-4)
    assert packings == [1]
    packed(x, cpu_conv._sealed_copy(weight))  # (another array: packed again)
    assert packings == [1, 1]


def _problem(case):
    """A float32 3x3 convolution of one sample with a ReLU, its weight sealed, in
    ``check_against_loops``' terms."""
    from cnnlab.functional import epilogue_activation

    top, bottom, left, right = case["pads"]
    height = (case["out_h"] - 1) * case["sh"] + 3 - top - bottom
    width = (case["out_w"] - 1) * case["sw"] + 3 - left - right
    rng = np.random.default_rng(case["channels"])
    code, low, high = epilogue_activation("relu")
    return SimpleNamespace(x=rng.standard_normal((1, case["channels"], height, width)).astype(np.float32),
                           w=cpu_conv._sealed_copy(rng.standard_normal((case["filters"], case["channels"], 3, 3))
                                          .astype(np.float32)),
                           scale=rng.standard_normal(case["filters"]).astype(np.float32),
                           shift=rng.standard_normal(case["filters"]).astype(np.float32),
                           other=None, strides=(case["sh"], case["sw"]), pads=case["pads"], dilation=(1, 1),
                           epilogue="relu", code=code, low=low, high=high,
                           out=np.empty((1, case["filters"], case["out_h"], case["out_w"]), np.float32))


@pytest.mark.parametrize("case", [dict(sh=1, sw=1, pads=(1, 1, 1, 1), out_w=14, out_h=14, channels=40, filters=64),
                                  dict(sh=2, sw=2, pads=(1, 0, 1, 0), out_w=7, out_h=7, channels=24, filters=48)])
def test_convolutions_by_strips_on_sealed_weights_match_loops(case):
    """The strips on sealed weights, packed once and kept: the loops' values, call after call."""
    if not _STRIPS_HERE:
        pytest.skip("the strips run on processors with AVX-512 only")
    problem = _problem(case)
    top, left = case["pads"][0], case["pads"][2]
    work = cpu_conv._forward_work(problem.x.shape, problem.w.shape, problem.out.shape, case["sh"], case["sw"], top,
                                  left, 1, 1, 1, problem.out.shape[2], 2, dtype=problem.x.dtype, sealed=True)
    assert work[0] is _strips._strip_forward_items
    for _ in range(2):
        problem.out[...] = np.nan
        cpu_conv._run_forward(work, problem.x, problem.w, problem.scale, problem.shift, problem.out, False,
                              problem.code, problem.low, problem.high, problem.out)
        check_against_loops(problem)
    assert cpu_conv._PREPARED[id(problem.w)][0]() is problem.w
