"""Transpose and LayerNorm, the ops ConvNeXt moves its channels last for, and Dense on (..., in):
against NumPy references, finite differences, the GPU twin, and a ConvNeXt block from ONNX
against onnxruntime."""

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx_models import make_model

import cnnlab
import cnnlab.functional as F
from cnnlab.layers import Dense, LayerNorm, Transpose

RNG = np.random.default_rng(0)


@settings(max_examples=30)
@given(st.lists(st.integers(1, 4), min_size=0, max_size=5), st.data())
def test_transpose_is_numpys_and_its_backward_inverts_it(shape, data):
    axes = data.draw(st.permutations(range(len(shape))))
    x = RNG.standard_normal(shape)
    out = F.transpose(x, axes)
    np.testing.assert_array_equal(out, np.transpose(x, axes))
    assert out.flags.c_contiguous
    np.testing.assert_array_equal(F.transpose_backward(out, axes), x)
    negative = [a - len(shape) for a in axes]
    np.testing.assert_array_equal(F.transpose(x, negative), out)


@pytest.mark.parametrize("axes, error", [((0, 1), ValueError), ((0, 0, 1), ValueError), ((0, 1, 5), ValueError),
                                         ("012", TypeError), ((0, 1.5, 2), TypeError)])
def test_transpose_bad_axes(axes, error):
    with pytest.raises(error, match="axes"):
        F.transpose(np.ones((2, 3, 4)), axes)


@pytest.mark.usefixtures("small_cuda_launches")
def test_transpose_and_layer_norm_gpu_twins():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    out = F.transpose(cnnlab.to_device(x), (0, 2, 3, 1))
    np.testing.assert_array_equal(cnnlab.to_host(out), x.transpose(0, 2, 3, 1))
    y = RNG.standard_normal((1, 6, 4, 1)).astype(np.float32)  # length-1 axes left out of the kernels' geometry
    np.testing.assert_array_equal(cnnlab.to_host(F.transpose(cnnlab.to_device(y), (3, 2, 0, 1))), y.transpose(3, 2, 0, 1))
    weight, bias = RNG.standard_normal(5).astype(np.float32), RNG.standard_normal(5).astype(np.float32)
    gpu = F.layer_norm(cnnlab.to_device(x), 5, cnnlab.to_device(weight), cnnlab.to_device(bias))
    np.testing.assert_allclose(cnnlab.to_host(gpu), F.layer_norm(x, 5, weight, bias), rtol=1e-5, atol=1e-5)


def reference_layer_norm(x, shape, weight, bias, eps=1e-5):
    axes = tuple(range(x.ndim - len(shape), x.ndim))
    normalized = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)
    return normalized * (1 if weight is None else weight) + (0 if bias is None else bias)


@pytest.mark.parametrize("shape", [(5,), (4, 5), (3, 4, 5)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_the_reference_and_finite_differences(shape, affine):
    x = RNG.standard_normal((2, 3, 4, 5))
    weight = RNG.standard_normal(shape) if affine else None
    bias = RNG.standard_normal(shape) if affine else None
    out = F.layer_norm(x, shape, weight, bias)
    np.testing.assert_allclose(out, reference_layer_norm(x, shape, weight, bias), atol=1e-10)
    upstream = RNG.standard_normal(out.shape)
    grad_x, grad_weight, grad_bias = F.layer_norm_backward(x, upstream, shape, weight)
    w = np.ones(shape) if weight is None else weight
    b = np.zeros(shape) if bias is None else bias

    def loss():
        return float(np.sum(F.layer_norm(x, shape, w, b) * upstream))

    np.testing.assert_allclose(grad_x, naive.numeric_gradient(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_weight, naive.numeric_gradient(loss, w), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(grad_bias, naive.numeric_gradient(loss, b), rtol=1e-5, atol=1e-7)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 300), st.integers(1, 70), st.booleans(), st.integers(0, 2 ** 16))
def test_layer_norm_of_many_rows_matches_the_reference_and_gives_its_statistics(rows, size, affine, seed):
    """float32 rows of any count and size (enough of them to be shared between the threads),
    the statistics the backward takes among them."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, size)) * rng.uniform(0.1, 10) + rng.uniform(-5, 5)).astype(np.float32)
    weight = rng.standard_normal(size).astype(np.float32) if affine else None
    bias = rng.standard_normal(size).astype(np.float32) if affine else None
    out, mean, rstd = F.layer_norm(x, size, weight, bias, return_statistics=True)
    wide = x.astype(np.float64)
    expected = reference_layer_norm(wide, (size,), weight, bias)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * (1 + np.abs(expected).max()))
    np.testing.assert_allclose(mean[:, 0], wide.mean(1), rtol=1e-6, atol=1e-6 * np.abs(wide).max())
    np.testing.assert_allclose(rstd[:, 0], 1 / np.sqrt(wide.var(1) + 1e-5), rtol=1e-5)
    assert out.dtype == mean.dtype == rstd.dtype == np.float32 and mean.shape == rstd.shape == (rows, 1)


def test_layer_norm_bad_input():
    with pytest.raises(ValueError, match="normalized_shape must be the last axes of x"):
        F.layer_norm(np.ones((2, 3, 4)), (3,))
    with pytest.raises(ValueError, match=r"weight must have shape \(4,\)"):
        F.layer_norm(np.ones((2, 3, 4)), 4, np.ones(3))
    with pytest.raises(ValueError, match="LayerNorm.4,. expects samples ending in .4,."):
        LayerNorm(4).output_shape((3, 5))


def test_a_convnext_block_trains_through_transpose_layer_norm_and_dense_on_the_last_axis(tmp_path):
    x = cnnlab.Input((8, None, None))
    h = Transpose((0, 2, 3, 1))(x)
    h = Dense(units=8, seed=2)(Dense(units=16, seed=1)(LayerNorm(8)(h)))
    model = cnnlab.Model(x, Transpose((0, 3, 1, 2))(h))
    data = RNG.standard_normal((2, 8, 3, 5)).astype(np.float64)
    out = model.forward(data, training=True)
    assert out.shape == (2, 8, 3, 5)
    model.backward(np.ones_like(out))
    assert model.layers[2].grads["weight"].shape == (16, 8)
    model.save(tmp_path / "block.npz")
    np.testing.assert_array_equal(cnnlab.load(tmp_path / "block.npz")(data), model(data))
    assert Dense(4, 3).output_shape((2, 5, 4)) == (2, 5, 3)


onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnlab.onnx  # noqa: E402


def constant(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def test_a_convnext_block_from_onnx_matches_onnxruntime_and_exports_back(tmp_path):
    """Depthwise 7x7 conv, channels last, LayerNormalization, MLP, layer scale, channels first,
    residual: ConvNeXt's block as exported, with symbolic height and width."""
    c = 8
    inits = [constant("dw", RNG.standard_normal((c, 1, 7, 7)) * 0.1), constant("dwb", RNG.standard_normal(c)),
             constant("ln_s", RNG.standard_normal(c)), constant("ln_b", RNG.standard_normal(c)),
             constant("w1", RNG.standard_normal((c, 4 * c)) * 0.2), constant("b1", RNG.standard_normal(4 * c)),
             constant("w2", RNG.standard_normal((4 * c, c)) * 0.2), constant("b2", RNG.standard_normal(c)),
             constant("gamma", RNG.standard_normal(c))]
    nodes = [helper.make_node("Conv", ["x", "dw", "dwb"], ["d"], group=c, pads=[3, 3, 3, 3], kernel_shape=[7, 7]),
             helper.make_node("Transpose", ["d"], ["t"], perm=[0, 2, 3, 1]),
             helper.make_node("LayerNormalization", ["t", "ln_s", "ln_b"], ["n"], axis=-1, epsilon=1e-6),
             helper.make_node("MatMul", ["n", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["g"]),
             helper.make_node("MatMul", ["g", "w2"], ["m2"]), helper.make_node("Add", ["m2", "b2"], ["a2"]),
             helper.make_node("Mul", ["a2", "gamma"], ["s"]),
             helper.make_node("Transpose", ["s"], ["u"], perm=[0, 3, 1, 2]),
             helper.make_node("Add", ["x", "u"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    proto = make_model(graph, 17)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    model = cnnlab.onnx.load(proto)
    cnnlab.onnx.save(model, tmp_path / "block.onnx")
    exported = ort.InferenceSession(str(tmp_path / "block.onnx"), providers=["CPUExecutionProvider"])
    for size in [(7, 9), (12, 12)]:
        x = RNG.standard_normal((2, c, *size)).astype(np.float32)
        expected = session.run(None, {"x": x})[0]
        np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
        np.testing.assert_allclose(exported.run(None, {"x": x})[0], model(x), rtol=1e-4, atol=1e-5)


def test_transpose_of_the_batch_axis_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    node = helper.make_node("Transpose", ["x"], ["y"], perm=[1, 0, 2, 3], name="swap")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, "n", 4, 4])])
    proto = make_model(graph, 13)
    x = RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)
    expected = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(cnnlab.onnx.load(proto).graph.forward([x])[0], expected[0])