"""Prepared inference plans (cnnlab.prepared) on what ONNX files do with shapes: the values a
plan computes once (a ``Shape`` and what is computed from it alone) and the steps that return
views (reshapes), checked against the plain walk and against changes that must drop the plan."""

import numpy as np
import pytest

import cnnlab
import cnnlab.layers as L
from cnnlab import config
from cnnlab.layers.base import WholeTensorLayer
from cnnlab.prepared import prepared_record
from cnnlab.symbolic import TensorSpec


def _plain(model, x, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(config, "PREPARE", False)
        return model.forward(x)


def _plan(model):
    plan, = prepared_record(model.graph, model.graph.outputs).plans.values()
    return plan


def _plans(model):
    return prepared_record(model.graph, model.graph.outputs).plans


def _counted(monkeypatch, *layers):
    """A list each of ``layers``' ``forward`` appends its class name to."""
    calls = []
    for layer in layers:
        real = layer.forward
        monkeypatch.setattr(layer, "forward", lambda *args, real=real, layer=layer, **kwargs:
                            calls.append(type(layer).__name__) or real(*args, **kwargs))
    return calls


def _flatten_by_shape():
    """``Shape -> Slice -> Cast -> Cast -> Concat [n, -1] -> Reshape``: how exporters write
    ``x.view(x.size(0), -1)``; the layers of the shape computation, and the model."""
    x = cnnlab.Input((3, None, None))
    shape, part = L.Shape(), L.Slice([0], [1])
    narrow, wide = L.Cast("int32"), L.Cast("int64")
    concat = L.Concat(0, constants={1: np.array([-1])})
    reshape = L.DynamicReshape()
    target = concat([wide(narrow(part(shape(x))))])
    h = L.GlobalAvgPool2D()(L.Conv2D(3, 4, 3, padding=1, seed=0)(x))
    out = L.Dense(4, 2, seed=0)(reshape([h, target]))
    return (shape, part, narrow, wide, concat, reshape), cnnlab.Model(x, out)


def _batch(n=2, size=(6, 5), seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3) + size).astype(np.float32)


def test_a_shape_computed_from_shapes_is_computed_once(monkeypatch):
    """The shape computation's steps keep their value (none of their layers runs again), the
    reshape reshapes, with the plain walk's values; inputs of other shapes get plans of their
    own with their own values."""
    layers, model = _flatten_by_shape()
    for n, size in ((2, (6, 5)), (3, (9, 7))):
        x = _batch(n, size)
        expected = _plain(model, x, monkeypatch)
        for _ in range(2):
            model.forward(x)
        calls = _counted(monkeypatch, *layers)
        for _ in range(3):
            got = model.forward(x)
            np.testing.assert_array_equal(got, expected)
            assert got.shape == (n, 2)
        assert calls == []
        monkeypatch.undo()
    assert len(_plans(model)) == 2
    plan = _plans(model)[next(iter(_plans(model)))]
    kept = [entry for entry in plan.entries if getattr(entry[0], "layer", None) in layers]
    assert len(kept) == 6 and all(entry[1] is not None for entry in kept)


def test_a_kept_shape_that_is_a_target_is_the_callers():
    """A target that the plan computes once is a new array at each call (the caller may write
    there)."""
    x = cnnlab.Input((3, None, None))
    model = cnnlab.Model(x, [L.GlobalAvgPool2D()(x), L.Shape()(x)])
    batch = _batch()
    for _ in range(3):
        pooled, shape = model.forward(batch)
    assert shape.tolist() == [2, 3, 6, 5] and shape.flags.writeable
    shape[0] = 99
    assert model.forward(batch)[1].tolist() == [2, 3, 6, 5]


@pytest.mark.parametrize("change", ["attribute", "constant", "layer"])
def test_a_changed_shape_computation_drops_the_plan(change, monkeypatch):
    """A replaced attribute (a new ``starts`` list), a constant edited in place and a layer
    swapped on its node are each seen: the plan is dropped and the call gives the plain walk's
    values."""
    (shape, part, narrow, wide, concat, reshape), model = _flatten_by_shape()
    x = _batch()
    for _ in range(3):
        model.forward(x)
    assert len(_plans(model)) == 1
    if change == "attribute":
        part.starts = list(part.starts)
    elif change == "constant":
        concat.buffers["constant1"][...] = 4  # ([n, -1] -> [n, 4]: the same reshape here)
    else:
        node = next(node for node in model.graph.nodes if node.layer is narrow)
        node.layer = L.Cast("int16")
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert _plans(model) == {}


class _Crop(L.Layer):
    """Keeps the first ``width`` columns of each row: an output whose shape changes between
    calls on inputs of the same shape (a layer with no prepared form)."""

    returns_new_array = True
    width = 3

    def forward(self, x, training=False):
        return x[:, :self.width].copy()


def test_the_shape_of_a_step_whose_shape_changes_is_read_again(monkeypatch):
    """A ``Shape`` of an output whose shape the plan does not fix (a step without a prepared
    form) is checked at each call: when it changed, the rest of the call walks the plain plan."""
    crop = _Crop()
    x_in = cnnlab.Input((6,))
    cropped = crop(x_in)
    target = L.Concat(0, constants={0: np.array([-1])})([L.Slice([1], [2])(L.Shape()(cropped))])
    model = cnnlab.Model(x_in, L.Sigmoid()(L.DynamicReshape()([cropped, target])))
    x = np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32)
    for _ in range(3):
        assert model.forward(x).shape == (4, 3)
    assert len(_plans(model)) == 1
    crop.width = 5
    got = model.forward(x)
    assert got.shape == (4, 5)
    np.testing.assert_array_equal(got, _plain(model, x, monkeypatch))


class _Target(WholeTensorLayer):
    """``[-1, width]`` as int64: a shape computed at each call (not from shapes alone)."""

    width = 2

    def forward(self, x, training=False):
        return np.array([-1, self.width], dtype=np.int64)

    def output_spec(self, x):
        return TensorSpec((2,), np.dtype(np.int64))


def test_a_reshape_to_a_shape_computed_at_each_call_is_not_prepared(monkeypatch):
    """A ``Reshape`` whose shape operand the plan does not keep runs its forward at each call
    (the steps after it check its output), so a new shape is followed."""
    shaper = _Target()
    x_in = cnnlab.Input((6,))
    h = L.Sigmoid()(x_in)
    model = cnnlab.Model(x_in, L.Sigmoid()(L.DynamicReshape()([h, shaper(h)])))
    x = np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    for _ in range(3):
        np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    reshapes = [entry for entry in _plan(model).entries if type(getattr(entry[0], "layer", None)) is L.DynamicReshape]
    assert len(reshapes) == 1 and reshapes[0][1] is None
    shaper.width = 3
    got = model.forward(x)
    assert got.shape == (8, 3)
    np.testing.assert_array_equal(got, _plain(model, x, monkeypatch))


def test_reshapes_are_prepared_as_views(monkeypatch):
    """``Squeeze``, ``Unsqueeze``, ``Reshape`` and ``Flatten`` run as reshapes of their inputs
    (their forwards not called), the plain walk's values; a replaced attribute drops the
    plan."""
    squeeze, unsqueeze, reshape, flatten = L.Squeeze([1]), L.Unsqueeze([1]), L.Reshape((2, 3)), L.Flatten()
    x_in = cnnlab.Input((1, 6))
    h = L.Sigmoid()(squeeze(L.Sigmoid()(x_in)))
    out = L.Dense(6, 4, seed=3)(flatten(L.Sigmoid()(reshape(L.Sigmoid()(unsqueeze(h))))))
    model = cnnlab.Model(x_in, out)
    x = np.random.default_rng(3).standard_normal((5, 1, 6)).astype(np.float32)
    expected = _plain(model, x, monkeypatch)
    for _ in range(2):
        model.forward(x)
    calls = _counted(monkeypatch, squeeze, unsqueeze, reshape, flatten)
    for _ in range(3):
        np.testing.assert_array_equal(model.forward(x), expected)
    assert calls == []
    monkeypatch.undo()
    squeeze.axes = [-2]
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert _plans(model) == {}


def test_a_value_kept_through_a_layer_with_a_small_parameter(monkeypatch):
    """A value computed from shapes through a layer with a parameter of a few values (the 0.5
    that detectors add to their grids of anchor points, imported as a ``Bias``) is kept: none
    of those layers runs again, with the plain walk's values; the parameter edited in place,
    or replaced, is seen at the next call (the plan watches its values and its identity)."""
    x = cnnlab.Input((3, None, None))
    shape, part, cast = L.Shape(), L.Slice([2], [3]), L.Cast("float32")
    offset = L.Bias(np.array([0.5], np.float32))
    kept = offset(cast(part(shape(x))))
    h = L.Dense(4, 2, seed=0)(L.Flatten()(L.GlobalAvgPool2D()(L.Conv2D(3, 4, 3, padding=1, seed=0)(x))))
    model = cnnlab.Model(x, L.Add()([h, kept]))
    batch = _batch()
    expected = _plain(model, batch, monkeypatch)
    for _ in range(2):
        model.forward(batch)
    calls = _counted(monkeypatch, shape, part, cast, offset)
    from cnnlab.kernels import cpu as cpu_kernels

    sums = []  # (the element-wise sums the kernels make: the last Add's alone, not the Bias's)
    real = cpu_kernels.add_forward
    monkeypatch.setattr(cpu_kernels, "add_forward", lambda *arguments: sums.append(1) or real(*arguments))
    for _ in range(2):
        np.testing.assert_array_equal(model.forward(batch), expected)
    assert calls == [] and len(sums) == 2
    monkeypatch.undo()
    for change in (lambda: offset.params["weight"].__setitem__(0, 2.5),
                   lambda: offset.params.__setitem__("weight", np.array([-1.5], np.float32))):
        change()
        expected = _plain(model, batch, monkeypatch)
        for _ in range(3):
            np.testing.assert_array_equal(model.forward(batch), expected)
