"""Prepared forms of single layers (``Layer.prepared_forward``, cnnlab.prepared): activations,
element-wise functions, softmax, layer normalization and per-channel affine, each between two
steps without a prepared form, checked against the plain walk bit for bit, their forwards never
called once prepared, edits in place read and a replaced attribute or parameter dropping the
plan."""

import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
import cnnlab.layers as L
from cnnlab import config
from cnnlab.functional.common import bound_elementwise
from cnnlab.kernels import cpu as cpu_kernels
from cnnlab.prepared import prepared_record


class _Squash(L.Layer):
    """A sigmoid in NumPy, scaled: a step without a prepared form around the layer tested."""

    returns_new_array = True

    def forward(self, x, training=False):
        out = cpu_kernels.empty(x.shape, x.dtype)
        np.multiply(4, 1 / (1 + np.exp(-x)) - 0.5, out=out)
        return out


def _plain(model, x, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(config, "PREPARE", False)
        return model.forward(x)


def _plans(model):
    return prepared_record(model.graph, model.graph.outputs).plans


def _affine_layer(channels):
    layer = L.Affine(channels)
    layer.params["weight"][...] = np.linspace(-2, 2, channels)
    layer.params["bias"][...] = np.linspace(1, -1, channels)
    return layer


def _layer_norm(size):
    layer = L.LayerNorm(size)
    layer.params["weight"][...] = np.linspace(0.5, 1.5, size)
    layer.params["bias"][...] = np.linspace(-1, 1, size)
    return layer


def _batch_norm(channels):
    layer = L.BatchNorm2D(channels)
    layer.params["weight"][...] = np.linspace(0.5, 2, channels)
    layer.params["bias"][...] = np.linspace(-1, 1, channels)
    layer.buffers["running_mean"][...] = np.linspace(-0.3, 0.3, channels)
    layer.buffers["running_var"][...] = np.linspace(0.5, 1.5, channels)
    return layer


#: (name, the layer, what to replace on it: (mapping name, key, new value) or None)
CASES = [
    ("relu", lambda: L.ReLU(), None),
    ("leaky", lambda: L.LeakyReLU(0.2), ("vars", "negative_slope", 0.3)),
    ("sigmoid", lambda: L.Sigmoid(), None),
    ("tanh", lambda: L.Tanh(), None),
    ("relu6", lambda: L.ReLU6(), None),
    ("clip", lambda: L.Clip(-0.5, 0.7), ("vars", "max", 0.2)),
    ("hardsigmoid", lambda: L.HardSigmoid(), None),
    ("hardswish", lambda: L.HardSwish(), None),
    ("silu", lambda: L.SiLU(), None),
    ("gelu", lambda: L.GELU(), None),
    ("sqrt", lambda: L.Sqrt(), None),
    ("exp", lambda: L.Exp(), None),
    ("softmax", lambda: L.Softmax(1), ("vars", "axis", -1)),
    ("log_softmax", lambda: L.LogSoftmax(-1), ("vars", "axis", 1)),
    ("layer_norm", lambda: _layer_norm(7), ("params", "weight", np.ones(7, np.float32))),
    ("affine", lambda: _affine_layer(5), ("params", "bias", np.zeros(5, np.float32))),
    ("batch_norm", lambda: _batch_norm(5), ("buffers", "running_var", np.ones(5, np.float32))),
]


def _prepared_model(model, x, layer, monkeypatch):
    """The plain walk's values for ``x``, after checking that ``layer`` is the one node of the
    plan prepared, that its forward is not called once prepared and that the values stay."""
    expected = _plain(model, x, monkeypatch)
    for _ in range(2):
        model.forward(x)
    plan, = _plans(model).values()
    assert [entry[0].layer for entry in plan.entries if entry[1] is not None] == [layer]
    calls = []
    with monkeypatch.context() as patch:
        patch.setattr(layer, "forward", lambda *args, **kwargs: calls.append(1))
        for _ in range(3):
            np.testing.assert_array_equal(model.forward(x), expected)
    assert calls == []
    return expected


@pytest.mark.parametrize("name, make, replace", CASES, ids=[case[0] for case in CASES])
def test_a_layer_is_prepared_and_follows_its_attributes(name, make, replace, monkeypatch):
    layer = make()
    x_in = cnnlab.Input((5, 3, 7))
    model = cnnlab.Model(x_in, _Squash()(layer(_Squash()(x_in))))
    x = np.random.default_rng(1).standard_normal((2, 5, 3, 7)).astype(np.float32) * 2
    _prepared_model(model, x, layer, monkeypatch)
    for array in list(layer.params.values()) + list(layer.buffers.values()):  # (edits in place are read)
        array *= 1.5
    if layer.params or layer.buffers:
        np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
        assert len(_plans(model)) == 1
    if replace is not None:
        where, key, value = replace
        if where == "vars":
            setattr(layer, key, value)
        else:
            getattr(layer, where)[key] = value
        np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
        assert _plans(model) == {}


def test_an_op_that_is_more_than_one_kernel_call_has_no_bound_form():
    """``bound_elementwise`` finds the op's one kernel call and checks it gives the op's values:
    an op of two calls, or one that changes the kernel's output after it, gets None."""
    def twice(x):
        return F.relu(F.sigmoid(x))

    def shifted(x):
        return F.sigmoid(x) + 1

    x = np.zeros((3, 4), np.float32)
    assert bound_elementwise(twice, x) is None and bound_elementwise(shifted, x) is None
    run = bound_elementwise(F.leaky_relu, x, negative_slope=0.25)
    probe = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    np.testing.assert_array_equal(run(probe, np.empty_like(probe)), F.leaky_relu(probe, 0.25))
    assert bound_elementwise(F.relu, x.astype(np.float16)) is None and bound_elementwise(F.relu, x.T) is None


def test_a_concatenation_is_prepared(monkeypatch):
    """``Concatenate`` along the channels (the kernel call per input, offsets worked out once),
    and a replaced axis drops the plan."""
    x_in = cnnlab.Input((3, 4, 5))
    a, b = _Squash()(x_in), _Squash()(_Squash()(x_in))
    join = L.Concatenate(1)
    model = cnnlab.Model(x_in, _Squash()(join([a, b, a])))
    x = np.random.default_rng(2).standard_normal((2, 3, 4, 5)).astype(np.float32)
    _prepared_model(model, x, join, monkeypatch)
    join.axis = -1
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert _plans(model) == {}


@pytest.mark.parametrize("starts, ends, axes, steps", [([1], [4], [2], None), ([0, -1], [2, 0], [1, 3], [1, -2])])
def test_a_slice_is_prepared(starts, ends, axes, steps, monkeypatch):
    x_in = cnnlab.Input((3, 4, 5))
    part = L.Slice(starts, ends, axes, steps)
    model = cnnlab.Model(x_in, _Squash()(part(_Squash()(x_in))))
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 5)).astype(np.float32)
    _prepared_model(model, x, part, monkeypatch)
    part.starts = list(part.starts)
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert _plans(model) == {}


def test_a_matrix_product_is_prepared_and_reads_its_constant(monkeypatch):
    """``MatMul`` of a computed tensor and a constant (NumPy's ``matmul`` into the plan's array,
    the same values), the constant edited in place read, a replaced one dropping the plan."""
    x_in = cnnlab.Input((5, 7))
    product = L.MatMul(constants={1: np.random.default_rng(4).standard_normal((7, 3)).astype(np.float32)})
    model = cnnlab.Model(x_in, _Squash()(product([_Squash()(x_in)])))
    x = np.random.default_rng(5).standard_normal((2, 5, 7)).astype(np.float32)
    _prepared_model(model, x, product, monkeypatch)
    product.buffers["constant1"] *= -2
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert len(_plans(model)) == 1
    product.buffers["constant1"] = product.buffers["constant1"].copy()
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert _plans(model) == {}


@pytest.mark.parametrize("options", [dict(scale=2), dict(size=(5, 9), mode="linear"),
                                     dict(scale=(0.5, 1.5), mode="linear", coordinate_transformation_mode="align_corners")])
def test_a_resize_is_prepared(options, monkeypatch):
    """``Resize`` (a feature pyramid's upsampling): the kernel call with its sampling tables made
    once; a mode changed in the layer's options drops the plan."""
    x_in = cnnlab.Input((3, 4, 6))
    resize = L.Resize(**options)
    model = cnnlab.Model(x_in, _Squash()(resize(_Squash()(x_in))))
    x = np.random.default_rng(6).standard_normal((2, 3, 4, 6)).astype(np.float32)
    _prepared_model(model, x, resize, monkeypatch)
    resize.options["mode"] = "nearest" if resize.options["mode"] != "nearest" else "linear"
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert _plans(model) == {}


@pytest.mark.parametrize("kind", [L.GlobalAvgPool2D, L.GlobalMaxPool2D])
@pytest.mark.parametrize("keepdims", [True, False])
def test_a_global_pooling_is_prepared(kind, keepdims, monkeypatch):
    x_in = cnnlab.Input((3, 4, 6))
    pool = kind(keepdims=keepdims)
    model = cnnlab.Model(x_in, _Squash()(pool(_Squash()(x_in))))
    x = np.random.default_rng(7).standard_normal((2, 3, 4, 6)).astype(np.float32)
    _prepared_model(model, x, pool, monkeypatch)
    pool.keepdims = not keepdims
    got = model.forward(x)
    assert got.shape == ((2, 3, 1, 1) if not keepdims else (2, 3))
    np.testing.assert_array_equal(got, _plain(model, x, monkeypatch))
    assert _plans(model) == {}


@pytest.mark.parametrize("kind", [L.Subtract, L.Divide, L.Maximum, L.Minimum, L.Power])
@pytest.mark.parametrize("second_shape", [(3, 4, 5), (4, 1), (3, 1, 5)])
def test_a_binary_op_of_two_computed_tensors_is_prepared(kind, second_shape, monkeypatch):
    """``Subtract``, ``Divide``, ``Maximum``, ``Minimum`` and ``Power`` of two computed tensors
    (a detector's head subtracting its anchor points): the op's kernel call with its
    broadcasting worked out once, the second operand of the same shape, of a lower rank (lifted
    as ``forward`` lifts it) or broadcast along an axis; the plain walk's values bit for bit."""
    x_in = cnnlab.Input((3, 4, 5))
    other = cnnlab.Input(second_shape)
    op = kind()
    model = cnnlab.Model([x_in, other], _Squash()(op([_Squash()(x_in), _Squash()(other)])))
    rng = np.random.default_rng(7)
    x = [rng.uniform(0.5, 2, (2, 3, 4, 5)).astype(np.float32), rng.uniform(0.5, 2, (2,) + second_shape)
         .astype(np.float32)]
    _prepared_model(model, x, op, monkeypatch)
