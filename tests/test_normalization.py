"""Group normalization: against a naive reference, finite differences, the GPU twin, the layer,
the saved file and ONNX (onnxruntime runs the exported model; GroupNormalization nodes import)."""

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx_models import make_model

import cnnlab
import cnnlab.functional as F
from cnnlab.layers import Conv2D, GroupNorm, ReLU


@st.composite
def group_norm_cases(draw):
    groups = draw(st.integers(1, 4))
    channels = groups * draw(st.integers(1, 3))
    spatial = draw(st.lists(st.integers(1, 5), min_size=0, max_size=2))
    shape = (draw(st.integers(1, 3)), channels, *spatial)
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    seed = draw(st.integers(0, 2**16))
    return shape, groups, dtype, seed


def arrays(seed, shape, channels, dtype):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    return x, rng.standard_normal(channels).astype(dtype), rng.standard_normal(channels).astype(dtype)


@settings(max_examples=30)
@given(group_norm_cases())
def test_group_norm_matches_reference_and_keeps_the_shape(case):
    shape, groups, dtype, seed = case
    x, weight, bias = arrays(seed, shape, shape[1], dtype)
    out = F.group_norm(x, groups, weight, bias)
    assert out.shape == x.shape and out.dtype == x.dtype
    tolerance = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(out, naive.group_norm(x, groups, weight, bias), rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(F.group_norm(x, groups), naive.group_norm(x, groups), rtol=tolerance, atol=tolerance)


def test_group_norm_one_group_is_layer_norm_and_channels_groups_is_instance_norm():
    x = np.random.default_rng(1).standard_normal((2, 4, 3, 3))
    whole = (x - x.mean(axis=(1, 2, 3), keepdims=True)) / np.sqrt(x.var(axis=(1, 2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(F.group_norm(x, 1), whole, atol=1e-12)
    each = (x - x.mean(axis=(2, 3), keepdims=True)) / np.sqrt(x.var(axis=(2, 3), keepdims=True) + 1e-5)
    np.testing.assert_allclose(F.group_norm(x, 4), each, atol=1e-12)


@settings(max_examples=10)
@given(group_norm_cases())
def test_group_norm_backward_matches_finite_differences(case):
    shape, groups, _, seed = case
    x, weight, bias = arrays(seed, shape, shape[1], np.float64)
    upstream = np.random.default_rng(seed + 1).standard_normal(shape)

    def loss():
        return float(np.sum(F.group_norm(x, groups, weight, bias) * upstream))

    grad_x, grad_weight, grad_bias = F.group_norm_backward(x, upstream, groups, weight)
    np.testing.assert_allclose(grad_x, naive.numeric_gradient(loss, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_weight, naive.numeric_gradient(loss, weight), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grad_bias, naive.numeric_gradient(loss, bias), rtol=1e-5, atol=1e-6)
    _, mean, rstd = F.group_norm(x, groups, weight, bias, return_statistics=True)
    again = F.group_norm_backward(x, upstream, groups, weight, mean, rstd)
    for a, b in zip(again, (grad_x, grad_weight, grad_bias)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.usefixtures("small_cuda_launches")
def test_group_norm_gpu_twin_equals_cpu():
    x, weight, bias = arrays(3, (2, 6, 3, 4), 6, np.float32)
    upstream = np.random.default_rng(4).standard_normal(x.shape).astype(np.float32)
    on_gpu = [cnnlab.to_device(a) for a in (x, weight, bias, upstream)]
    out = F.group_norm(*on_gpu[:1], 3, *on_gpu[1:3])
    assert not isinstance(out, np.ndarray)
    np.testing.assert_allclose(cnnlab.to_host(out), F.group_norm(x, 3, weight, bias), rtol=1e-5, atol=1e-5)
    gpu_grads = F.group_norm_backward(on_gpu[0], on_gpu[3], 3, on_gpu[1])
    for got, expected in zip(gpu_grads, F.group_norm_backward(x, upstream, 3, weight)):
        np.testing.assert_allclose(cnnlab.to_host(got), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("call, error, words", [
    (lambda x: F.group_norm(x, 4), ValueError, "num_groups=4 must divide the channels of x, got C=6"),
    (lambda x: F.group_norm(x, 0), ValueError, "num_groups"),
    (lambda x: F.group_norm(x, 2.5), TypeError, "num_groups"),
    (lambda x: F.group_norm(x[0, 0, 0], 1), ValueError, "x must have shape (N, C, ...)"),
    (lambda x: F.group_norm(x, 3, np.ones(5, np.float32)), ValueError, "weight must have shape (6,) (one entry per channel), got (5,)"),
    (lambda x: F.group_norm(x, 3, eps=0), ValueError, "eps must be a positive number"),
    (lambda x: F.group_norm(x.astype(np.int64), 3), TypeError, "cnnlab.data.normalize"),
    (lambda x: GroupNorm(4, 6), ValueError, "num_groups=4 must divide num_channels=6"),
])
def test_group_norm_bad_input(call, error, words):
    x = np.ones((2, 6, 3, 3), np.float32)
    with pytest.raises(error, match=None) as caught:
        call(x)
    assert words in str(caught.value)


def test_group_norm_layer_trains_saves_and_loads(tmp_path):
    inputs = cnnlab.Input((3, 6, 6))
    h = ReLU()(GroupNorm(2, 8)(Conv2D(3, 8, 3, padding=1)(inputs)))
    model = cnnlab.Model(inputs, Conv2D(8, 2, 6)(h))
    norm = model.layers[1]
    assert isinstance(norm, GroupNorm) and set(norm.params) == {"weight", "bias"}
    x = np.random.default_rng(5).standard_normal((4, 3, 6, 6)).astype(np.float32)
    out = model.forward(x, training=True)
    model.backward(np.ones_like(out))
    assert norm.grads["weight"].shape == (8,) and np.any(norm.grads["bias"] != 0)
    norm.params["weight"][...] = np.linspace(0.5, 2, 8)
    model.save(tmp_path / "g.npz")
    again = cnnlab.load(tmp_path / "g.npz")
    np.testing.assert_allclose(again(x), model(x), rtol=1e-6)
    assert "GroupNorm(num_groups=2, num_channels=8" in repr(again.layers[1])


def test_a_layer_class_of_ones_own_registers_by_keyword(tmp_path):
    from cnnlab.layers import LAYER_TYPES, Layer

    class Doubling(Layer, register=True):
        def forward(self, x, training=False):
            return x * 2

        def backward(self, grad_out):
            return grad_out * 2

    class Unregistered(Layer):
        pass

    try:
        assert LAYER_TYPES["Doubling"] is Doubling and "Unregistered" not in LAYER_TYPES
        model = cnnlab.Sequential([Doubling()], input_shape=(2,))
        model.save(tmp_path / "d.npz")
        np.testing.assert_array_equal(cnnlab.load(tmp_path / "d.npz")(np.ones((1, 2), np.float32)), [[2, 2]])
        with pytest.raises(ValueError, match="'GroupNorm' is registered already"):
            type("GroupNorm", (Layer,), {}, register=True)
    finally:
        LAYER_TYPES.pop("Doubling", None)


onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def test_group_norm_exports_to_onnxruntime(tmp_path):
    import cnnlab.onnx

    inputs = cnnlab.Input((6, 5, 4))
    model = cnnlab.Model(inputs, GroupNorm(3, 6, affine=False)(GroupNorm(2, 6)(inputs)))
    model.layers[0].params["weight"][...] = np.linspace(-1, 2, 6)
    model.layers[0].params["bias"][...] = np.linspace(0, 1, 6)
    x = np.random.default_rng(6).standard_normal((2, 6, 5, 4)).astype(np.float32)
    cnnlab.onnx.save(model, tmp_path / "g.onnx")
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", [18, 21])
def test_group_normalization_nodes_import_as_onnxruntime_runs_them(opset):
    from onnx import TensorProto, helper, numpy_helper

    import cnnlab.onnx

    rng = np.random.default_rng(opset)
    size = 3 if opset == 18 else 6  # opset 18: one scale and bias per group
    scale, bias = (numpy_helper.from_array(rng.standard_normal(size).astype(np.float32), n) for n in ("s", "b"))
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=3, epsilon=1e-3)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 6, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [scale, bias])
    model = make_model(graph, opset)
    x = rng.standard_normal((2, 6, 4, 4)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(cnnlab.onnx.load(model)(x), expected, rtol=1e-4, atol=1e-5)


def test_instance_norm_is_group_norm_of_one_channel_per_group_and_exports(tmp_path):
    import cnnlab.onnx
    from cnnlab.layers import InstanceNorm

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4, 5))
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)
    np.testing.assert_allclose(F.instance_norm(x, weight=weight, bias=bias),
                               naive.group_norm(x, 3, weight, bias), atol=1e-10)
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    frozen = F.instance_norm(x, mean, var, use_input_stats=False)
    np.testing.assert_allclose(frozen, (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5), atol=1e-10)
    with pytest.raises(ValueError, match="running_mean and running_var"):
        F.instance_norm(x, use_input_stats=False)
    ort = pytest.importorskip("onnxruntime")
    inputs = cnnlab.Input((3, 4, 5))
    model = cnnlab.Model(inputs, InstanceNorm(3, affine=True)(inputs))
    model.layers[0].params["weight"][...] = weight
    cnnlab.onnx.save(model, tmp_path / "i.onnx")
    session = ort.InferenceSession(str(tmp_path / "i.onnx"), providers=["CPUExecutionProvider"])
    values = x.astype(np.float32)
    np.testing.assert_allclose(session.run(None, {"input": values})[0], model.graph.forward([values])[0], atol=1e-5)
