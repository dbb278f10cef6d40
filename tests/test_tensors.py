"""General tensors: the functional ops on any rank and dtype (slice, gather, squeeze, unsqueeze,
expand, cast, where, reduce, matmul) against loop references and finite differences, the
whole-tensor layers' shape inference against what they compute, shape sub-graphs in a model
(built, trained, saved), the GPU twins under the simulator, and bad input."""

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cnnlab
import cnnlab.functional as F
from cnnlab import layers as L

RNG = np.random.default_rng(0)
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=4)


@settings(max_examples=40, deadline=None)
@given(shapes, st.data())
def test_slice_is_the_onnx_spec(shape, data):
    x = RNG.standard_normal(shape)
    axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=len(shape),
                              unique_by=lambda a: a % len(shape)))
    starts = [data.draw(st.integers(-6, 6)) for _ in axes]
    ends = [data.draw(st.sampled_from([-7, -2, -1, 0, 1, 2, 5, 2**62])) for _ in axes]
    steps = [data.draw(st.sampled_from([-2, -1, 1, 2, 3])) for _ in axes]
    out = F.slice(x, starts, ends, axes, steps)
    expected = naive.slice_loops(x, starts, ends, [a % len(shape) for a in axes], steps)
    np.testing.assert_array_equal(out, expected)
    layer = L.Slice(starts, ends, axes, steps)
    spec = layer.output_spec(cnnlab.symbolic.TensorSpec(tuple(shape), x.dtype))
    assert spec.shape == out.shape
    upstream = RNG.standard_normal(out.shape)
    grad = F.slice_backward(upstream, x.shape, starts, ends, axes, steps)
    np.testing.assert_allclose(grad, naive.numeric_gradient(lambda: float(np.sum(F.slice(x, starts, ends, axes,
                                                                                         steps) * upstream)), x),
                               atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(shapes, st.data())
def test_gather_and_its_gradient(shape, data):
    x = RNG.standard_normal(shape)
    axis = data.draw(st.integers(0, len(shape) - 1))
    size = shape[axis]
    indices = np.array(data.draw(st.lists(st.integers(-size, size - 1), min_size=0, max_size=4)), dtype=np.int64)
    indices = indices.reshape(data.draw(st.sampled_from([(-1,), (1, -1)])) if indices.size else (0,))
    out = F.gather(x, indices, axis)
    np.testing.assert_array_equal(out, naive.gather_loops(x, indices, axis))
    upstream = RNG.standard_normal(out.shape)
    grad = F.gather_backward(upstream, x.shape, indices, axis)
    np.testing.assert_allclose(grad, naive.numeric_gradient(lambda: float(np.sum(F.gather(x, indices, axis)
                                                                                 * upstream)), x), atol=1e-6)


def test_gather_of_one_index_is_an_array():
    """A scalar index of a 1-D array (an ONNX ``Gather`` of one dimension of a ``Shape``) gives a
    0-d array, as every op's output is, not a NumPy scalar (which an inference plan could not
    keep, nor any op's ``out=`` take)."""
    out = F.gather(np.array([1, 3, 40, 40], np.int64), np.array(2, np.int64))
    assert type(out) is np.ndarray and out.shape == () and out.dtype == np.int64 and int(out) == 40


REDUCTIONS = ["mean", "sum", "max", "min", "prod", "sum_square", "l1", "l2", "log_sum_exp"]


@settings(max_examples=40, deadline=None)
@given(shapes, st.sampled_from(REDUCTIONS), st.booleans(), st.data())
def test_reduce_matches_loops_and_finite_differences(shape, op, keepdims, data):
    x = RNG.standard_normal(shape) + 0.1  # l1's kink at 0 is never hit
    axes = data.draw(st.one_of(st.none(), st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1,
                                                   unique_by=lambda a: a % len(shape))))
    out = F.reduce(x, op, axes, keepdims)
    np.testing.assert_allclose(out, naive.reduce_loops(x, op, axes, keepdims), rtol=1e-10, atol=1e-12)
    layer = L.Reduce(op, axes, keepdims)
    assert layer.output_spec(cnnlab.symbolic.TensorSpec(tuple(shape), x.dtype)).shape == out.shape
    upstream = RNG.standard_normal(out.shape)
    grad = F.reduce_backward(x, out, upstream, op, axes, keepdims)
    numeric = naive.numeric_gradient(lambda: float(np.sum(F.reduce(x, op, axes, keepdims) * upstream)), x)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-6)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_matmul_broadcasts_like_numpy_and_differentiates(data):
    k = data.draw(st.integers(1, 4))
    lead_a = tuple(data.draw(st.lists(st.sampled_from([1, 2, 3]), max_size=2)))
    lead_b = tuple(s if data.draw(st.booleans()) else 1 for s in lead_a)[len(lead_a) - data.draw(
        st.integers(0, len(lead_a))):]
    a_shape = lead_a + (data.draw(st.integers(1, 3)), k) if data.draw(st.booleans()) or lead_a else (k,)
    b_shape = lead_b + (k, data.draw(st.integers(1, 3))) if data.draw(st.booleans()) or lead_b else (k,)
    a, b = RNG.standard_normal(a_shape), RNG.standard_normal(b_shape)
    out = F.matmul(a, b)
    np.testing.assert_allclose(out, naive.matmul_loops(a, b), atol=1e-12)
    layer = L.MatMul()
    spec = layer.output_spec([cnnlab.symbolic.TensorSpec(a.shape, a.dtype), cnnlab.symbolic.TensorSpec(b.shape, b.dtype)])
    assert spec.shape == out.shape
    upstream = RNG.standard_normal(out.shape)
    grad_a, grad_b = F.matmul_backward(a, b, upstream)
    np.testing.assert_allclose(grad_a, naive.numeric_gradient(lambda: float(np.sum(F.matmul(a, b) * upstream)), a),
                               atol=1e-6)
    np.testing.assert_allclose(grad_b, naive.numeric_gradient(lambda: float(np.sum(F.matmul(a, b) * upstream)), b),
                               atol=1e-6)


def test_squeeze_unsqueeze_expand_cast_where():
    x = RNG.standard_normal((2, 1, 3))
    assert F.squeeze(x).shape == (2, 3) and F.squeeze(x, [1]).shape == (2, 3)
    assert F.unsqueeze(x, [0, -1]).shape == (1, 2, 1, 3, 1)
    np.testing.assert_array_equal(F.expand(x, [1, 4, 1]), np.broadcast_to(x, (2, 4, 3)))
    grad = F.sum_to_shape(np.ones((2, 4, 3)), (2, 1, 3))
    np.testing.assert_array_equal(grad, naive.broadcast_sum(np.ones((2, 4, 3)), (2, 1, 3)))
    np.testing.assert_array_equal(F.cast(np.array([-1.7, 2.9]), "int64"), [-1, 2])
    np.testing.assert_array_equal(F.where(np.array([True, False]), np.array([1, 2]), np.array([5, 6])), [1, 6])


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.squeeze(np.ones((2, 3)), [0]), ValueError, "size 1"),
    (lambda: F.gather(np.ones(3), np.array([3])), ValueError, "indices must lie"),
    (lambda: F.gather(np.ones(3), np.array([0.5])), TypeError, "indices must be integers"),
    (lambda: F.slice(np.ones(3), [0], [1], [0], [0]), ValueError, "steps"),
    (lambda: F.slice(np.ones(3), [0, 1], [1], None), ValueError, "one entry per sliced axis"),
    (lambda: F.expand(np.ones(3), [2]), ValueError, "does not broadcast"),
    (lambda: F.reduce(np.ones(3), "median"), ValueError, "op must be one of"),
    (lambda: F.reduce(np.ones(3), "mean", [3]), ValueError, "axis 3"),
    (lambda: F.matmul(np.ones((2, 3)), np.ones((2, 3))), ValueError, "last axis"),
    (lambda: F.where(np.array([1, 0]), np.ones(2), np.ones(2)), TypeError, "condition must be boolean"),
    (lambda: L.Arithmetic("plus"), ValueError, "op must be one of"),
    (lambda: L.Slice([0], [1, 2]), ValueError, "one entry per sliced axis"),
])
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_empty_reductions_give_the_identity():
    assert F.reduce(np.ones((0, 2)), "max", [0]).tolist() == [-np.inf, -np.inf]
    assert F.reduce(np.ones((0, 2)), "min", [0], keepdims=True).tolist() == [[np.inf, np.inf]]
    assert F.reduce(np.ones((0, 2)), "sum", [0]).tolist() == [0, 0]


def test_integer_division_truncates_toward_zero_as_onnx():
    layer = L.Arithmetic("divide", constants={1: np.array([2, -2])})
    np.testing.assert_array_equal(layer.forward([np.array([-7, 7])]), [-3, -3])


def flatten_by_shape():
    """``Shape → Slice → Concat [n, -1] → Reshape``: how exporters write ``x.view(x.size(0), -1)``."""
    x = cnnlab.Input((3, None, None))
    n = L.Slice([0], [1])(L.Shape()(x))
    target = L.Concat(0, constants={1: np.array([-1])})([n])
    h = L.GlobalAvgPool2D()(L.Conv2D(3, 4, 3, padding=1, seed=0)(x))
    flat = L.DynamicReshape()([h, target])
    return x, n, target, flat, L.Dense(4, 2, seed=0)(flat)


def test_shape_values_are_known_before_the_model_runs():
    x, n, target, flat, out = flatten_by_shape()
    assert n.shape == (1,) and list(n.value) == [None]
    assert list(target.value) == [None, -1]
    assert flat.shape == (None, 4)  # the batch axis read from the input: the rest follows
    assert n.dtype == np.int64 and out.shape == (None, 2)


def test_a_model_with_a_shape_sub_graph_runs_trains_and_saves(tmp_path):
    x, *_, out = flatten_by_shape()
    model = cnnlab.Model(x, out)
    images = RNG.random((4, 3, 6, 5)).astype(np.float32)
    for size in ((6, 5), (9, 7)):  # any image size: the shape is read while the model runs
        batch = RNG.random((3, 3) + size).astype(np.float32)
        assert model.graph.forward([batch])[0].shape == (3, 2)
    before = model.graph.forward([images])[0]
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(cnnlab.load(tmp_path / "m.npz").graph.forward([images])[0], before)
    history = model.fit(images, np.array([0, 1, 0, 1]), epochs=2, batch_size=2, verbose=0)
    assert len(history.history["loss"]) == 2


def test_gradients_flow_through_whole_tensor_layers_not_through_shapes():
    """Attention-like: slice heads, Q Kᵀ, softmax, reduce; finite differences of the input."""
    x = cnnlab.Input((4, 6))
    q = L.Slice([0], [3], [2])(x)
    k = L.Slice([3], [6], [2])(x)
    scores = L.MatMul()([q, L.Transpose((0, 2, 1))(k)])
    pooled = L.Reduce("mean", [1], keepdims=False)(L.Softmax(axis=-1)(scores))
    scaled = L.Arithmetic("multiply", constants={1: np.array([1.0, 2.0, 3.0, 4.0])})([pooled])
    model = cnnlab.Model(x, scaled)
    values = RNG.standard_normal((2, 4, 6))
    upstream = RNG.standard_normal((2, 4))
    model.graph.forward([values], training=True)
    (grad,) = model.graph.backward({id(model.graph.outputs[0]): upstream})

    def loss():
        return float(np.sum(model.graph.forward([values])[0] * upstream))

    np.testing.assert_allclose(grad, naive.numeric_gradient(loss, values), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("layer, inputs", [
    (L.Concat(1, constants={0: np.ones((2, 1))}), [np.arange(6.0).reshape(2, 3)]),
    (L.Expand(constants={1: np.array([3, 1, 1])}), [np.arange(2.0).reshape(2, 1)]),
    (L.Tile(constants={1: np.array([2, 3])}), [np.arange(6.0).reshape(2, 3)]),
    (L.Where(constants={0: np.array([True, False, True])}), [np.arange(3.0), np.zeros((2, 3))]),
    (L.Arithmetic("power", constants={1: np.array(2.0)}), [np.arange(1.0, 4.0)]),
    (L.Arithmetic("maximum"), [np.array([1.0, 5.0, 3.0]), np.array([[2.0], [4.0]])]),
    (L.Gather(1, constants={1: np.array([[0, 2], [1, 1]])}), [RNG.standard_normal((2, 3))]),
])
def test_layer_gradients_match_finite_differences(layer, inputs):
    inputs = [np.array(v, dtype=np.float64) for v in inputs]
    out = layer.forward(inputs, training=True)
    upstream = RNG.standard_normal(out.shape)
    grads = layer.backward(upstream)
    for value, grad in zip(inputs, grads):
        numeric = naive.numeric_gradient(lambda: float(np.sum(layer.forward(inputs) * upstream)), value)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    specs = [cnnlab.symbolic.TensorSpec(v.shape, v.dtype) for v in inputs]
    assert layer.output_spec(specs).shape == out.shape


def test_integer_inputs_flow_through_a_model():
    tokens = cnnlab.Input((5,), dtype="int32")
    table = RNG.standard_normal((10, 3)).astype(np.float32)
    embedded = L.Gather(0, constants={0: table})([tokens])
    model = cnnlab.Model(tokens, L.Reduce("sum", [1], keepdims=False)(embedded))
    ids = RNG.integers(0, 10, (2, 5)).astype(np.int32)
    np.testing.assert_allclose(model.graph.forward([ids])[0], table[ids].sum(axis=1), rtol=1e-6)


@pytest.mark.usefixtures("small_cuda_launches")
def test_gpu_arrays_give_the_host_results():
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    gpu = cnnlab.to_device(x)
    host = cnnlab.to_host
    np.testing.assert_array_equal(host(F.slice(gpu, [1], [3], [2])), F.slice(x, [1], [3], [2]))
    np.testing.assert_array_equal(host(F.gather(gpu, np.array([2, 0]), 1)), F.gather(x, np.array([2, 0]), 1))
    np.testing.assert_allclose(host(F.reduce(gpu, "mean", [1, 2])), F.reduce(x, "mean", [1, 2]), rtol=1e-6)
    np.testing.assert_allclose(host(F.matmul(gpu, cnnlab.to_device(x.transpose(0, 2, 1)))),
                               F.matmul(x, x.transpose(0, 2, 1)), rtol=1e-5)
    np.testing.assert_array_equal(host(F.expand(gpu[:, :1], [2, 3, 4])), F.expand(x[:, :1], [2, 3, 4]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 4), min_size=1, max_size=3), st.sampled_from(["constant", "reflect", "edge", "wrap"]),
       st.data())
def test_pad_is_the_loop_reference_and_differentiates(shape, mode, data):
    x = RNG.standard_normal(shape)
    count = data.draw(st.integers(1, len(shape)))
    pairs = []
    for axis in range(len(shape) - count, len(shape)):
        low = -((shape[axis] - 1) // 2)  # crops, leaving at least half the axis
        high = shape[axis] - 1 - (-low) if mode == "reflect" else 3
        pairs.append((data.draw(st.integers(low, high)), data.draw(st.integers(low, high))))
    flat = [v for pair in reversed(pairs) for v in pair]  # PyTorch's order: the last axis first
    out = F.pad(x, flat, mode, 0.5)
    full = [(0, 0)] * (len(shape) - count) + pairs
    np.testing.assert_array_equal(out, naive.pad_loops(x, full, mode, 0.5))
    assert L.Pad(flat, mode, 0.5).output_spec(cnnlab.symbolic.TensorSpec(tuple(shape), x.dtype)).shape == out.shape
    upstream = RNG.standard_normal(out.shape)
    grad = F.pad_backward(upstream, x.shape, flat, mode)
    numeric = naive.numeric_gradient(lambda: float(np.sum(F.pad(x, flat, mode, 0.5) * upstream)), x)
    np.testing.assert_allclose(grad, numeric, atol=1e-6)


@pytest.mark.parametrize("call, error, match", [
    (lambda: F.pad(np.ones((2, 3)), [1]), ValueError, "even number"),
    (lambda: F.pad(np.ones((2, 3)), [1, 1, 1, 1, 1, 1]), ValueError, "at most 2 axes"),
    (lambda: F.pad(np.ones(3), [3, 0], "reflect"), ValueError, "less than the axis size"),
    (lambda: F.pad(np.ones(3), [1, 1], "mirror"), ValueError, "mode must be one of"),
    (lambda: F.pad(np.ones(3), [1.5, 1]), TypeError, "pad must hold integers"),
    (lambda: F.pad(np.ones(3), [-2, -2]), ValueError, "crops"),
])
def test_pad_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_pad_speaks_pytorchs_mode_names():
    x = np.arange(4.0)
    np.testing.assert_array_equal(F.pad(x, [2, 1], "replicate"), F.pad(x, [2, 1], "edge"))
    np.testing.assert_array_equal(F.pad(x, [2, 1], "circular"), F.pad(x, [2, 1], "wrap"))


@pytest.mark.parametrize("size, parts", [(7, 3), (9, 3), (4, 4), (5, 2)])
def test_chunk_parts_cover_the_axis_as_onnx_split(size, parts):
    x = RNG.standard_normal((2, size))
    pieces = [L.Chunk(1, parts, k).forward(x) for k in range(parts)]
    np.testing.assert_array_equal(np.concatenate(pieces, axis=1), x)
    step = -(-size // parts)
    assert [p.shape[1] for p in pieces] == [min(step, size - k * step) for k in range(parts)]
    layer = L.Chunk(1, parts, parts - 1)
    out = layer.forward(x, training=True)
    upstream = RNG.standard_normal(out.shape)
    numeric = naive.numeric_gradient(lambda: float(np.sum(layer.forward(x) * upstream)), x)
    np.testing.assert_allclose(layer.backward(upstream), numeric, atol=1e-8)
    with pytest.raises(ValueError, match="index must lie"):
        L.Chunk(1, parts, parts)


def test_a_model_with_casts_copies_and_moves():
    x = cnnlab.Input((3,))
    out = L.Cast("float32")(L.Cast("int32")(x))
    model = cnnlab.Model(x, out)
    copy = model.copy()
    values = np.array([[1.7, -2.2, 3.0]], np.float32)
    np.testing.assert_array_equal(copy.graph.forward([values])[0], [[1, -2, 3]])


def test_functional_ops_on_symbolic_tensors_build_nodes(tmp_path):
    """Keras 3's rule: an op of cnnlab.functional called on a symbolic tensor adds a node (its
    layer), so a graph can be written with the functional ops; arrays among the arguments become
    the layer's constants."""
    x = cnnlab.Input((4, 6))
    q, k = F.slice(x, [0], [3], [2]), F.slice(x, [3], [6], [2])
    weights = F.matmul(q, F.transpose(k, (0, 2, 1)))
    picked = F.gather(weights, np.array([0, 2]), 1)
    padded = F.pad(F.unsqueeze(picked, [1]), [1, 1])
    y = F.reduce(F.where(np.array([True, False, True, True, False, True]), padded, 0.5), "mean", [1, 2, 3])
    model = cnnlab.Model(x, y)
    assert [type(layer).__name__ for layer in model.layers] == ["Slice", "Slice", "Transpose", "MatMul", "Gather",
                                                               "Unsqueeze", "Pad", "Where", "Reduce"]
    v = RNG.standard_normal((2, 4, 6))
    w = v[:, :, :3] @ v[:, :, 3:].transpose(0, 2, 1)
    expected = np.where([True, False, True, True, False, True], np.pad(w[:, None, [0, 2]], ((0, 0),) * 3 + ((1, 1),)),
                        0.5).mean(axis=(1, 2, 3))
    np.testing.assert_allclose(model.graph.forward([v])[0], expected, atol=1e-12)
    model.save(tmp_path / "f.npz")
    np.testing.assert_allclose(cnnlab.load(tmp_path / "f.npz").graph.forward([v])[0], expected, atol=1e-12)
    np.testing.assert_array_equal(F.squeeze(np.ones((2, 1))), np.ones(2))  # arrays still compute


def test_channel_affine_and_its_layer():
    x = RNG.standard_normal((2, 3, 4, 5))
    weight, bias = RNG.standard_normal(3), RNG.standard_normal(3)
    np.testing.assert_allclose(F.channel_affine(x, weight, bias), x * weight[:, None, None] + bias[:, None, None],
                               atol=1e-12)
    layer = L.Affine(3, dtype="float64")
    layer.params["weight"][...], layer.params["bias"][...] = weight, bias
    out = layer.forward(x, training=True)
    upstream = RNG.standard_normal(out.shape)
    grad = layer.backward(upstream)
    loss = lambda: float(np.sum(layer.forward(x) * upstream))  # noqa: E731
    np.testing.assert_allclose(grad, naive.numeric_gradient(loss, x), atol=1e-7)
    np.testing.assert_allclose(layer.grads["weight"], naive.numeric_gradient(loss, layer.params["weight"]), atol=1e-7)
    np.testing.assert_allclose(layer.grads["bias"], naive.numeric_gradient(loss, layer.params["bias"]), atol=1e-7)
    with pytest.raises(ValueError, match="Affine\\(3\\) expects"):
        layer.output_shape((4, 5))
