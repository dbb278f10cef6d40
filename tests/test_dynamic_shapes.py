"""Sizes known only when the model runs: Input((3, None, None)), models of any image size, ONNX
files with symbolic height and width (against onnxruntime), and constants as ordinary operands
(Bias, Scale; ONNX Add/Sub/Mul/Div by a constant anywhere)."""

import naive
import numpy as np
import pytest
from onnx_models import make_model

import cnnlab
from cnnlab.layers import Add, BatchNorm2D, Bias, Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU, Scale

RNG = np.random.default_rng(0)


def any_size_model(shape=(3, None, None)):
    x = cnnlab.Input(shape)
    h = ReLU()(BatchNorm2D(8)(Conv2D(3, 8, 3, padding="same_upper", stride=2, seed=1)(x)))
    h = Add()([h, Conv2D(8, 8, 3, padding=1, seed=2)(h)])
    return cnnlab.Model(x, Dense(8, 5, seed=3)(GlobalAvgPool2D()(MaxPool2D(2, ceil_mode=True)(h))))


def test_a_model_of_unknown_image_size_runs_at_every_size_as_fixed_size_models_do():
    model = any_size_model()
    assert model.input_shape == (3, None, None)
    assert "(None, 8, None, None)" in model.summary(print_fn=None)
    for height, width in [(9, 14), (16, 16), (5, 7)]:
        x = RNG.standard_normal((2, 3, height, width)).astype(np.float32)
        fixed = any_size_model((3, height, width))  # the same network and weights on a fixed-size input
        fixed.set_weights(model.get_weights())
        np.testing.assert_allclose(model(x), fixed(x), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(model(x), model.forward(x), rtol=1e-6, atol=1e-6)  # fused = unfused


def test_an_unknown_size_model_trains_saves_and_loads(tmp_path):
    model = any_size_model()
    model.fit(RNG.standard_normal((8, 3, 9, 11)).astype(np.float32), np.arange(8) % 5, epochs=1, verbose=0)
    model.save(tmp_path / "any.npz")
    again = cnnlab.load(tmp_path / "any.npz")
    assert again.input_shape == (3, None, None)
    x = RNG.standard_normal((1, 3, 12, 6)).astype(np.float32)
    np.testing.assert_array_equal(again(x), model(x))


def test_a_size_that_depends_on_the_image_cannot_feed_a_dense_layer():
    x = cnnlab.Input((3, None, None))
    with pytest.raises(ValueError, match="Dense needs a known input size.*GlobalAvgPool2D"):
        Dense(10, 2)(Flatten()(Conv2D(3, 2, 3)(x)))
    with pytest.raises(ValueError, match="shape must hold positive integers or None"):
        cnnlab.Input((3, 0, None))


@pytest.mark.parametrize("layer_type, op", [(Bias, np.add), (Scale, np.multiply)])
@pytest.mark.parametrize("shape", [(), (3, 1, 1), (1, 3, 1, 1), (4, 1), (5,)])
def test_bias_and_scale_broadcast_a_learnable_array_and_differentiate(layer_type, op, shape):
    value = RNG.standard_normal(shape)
    layer = layer_type(value, dtype="float64")
    x = RNG.standard_normal((2, 3, 4, 5))
    out = layer.forward(x, training=True)
    np.testing.assert_allclose(out, op(x, value), rtol=1e-12)
    upstream = RNG.standard_normal(out.shape)
    grad_x = layer.backward(upstream)
    weight = layer.params["weight"]

    def loss():
        return float(np.sum(layer.forward(x) * upstream))

    np.testing.assert_allclose(grad_x, naive.numeric_gradient(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(layer.grads["weight"], naive.numeric_gradient(loss, weight), rtol=1e-6, atol=1e-7)
    assert layer.output_shape((3, 4, 5)) == (3, 4, 5)


def test_bias_refuses_a_value_that_would_grow_the_sample():
    with pytest.raises(ValueError, match=r"does not broadcast against samples of shape \(3, 4, 5\)"):
        Bias(np.ones((2, 4, 5))).output_shape((3, 4, 5))
    with pytest.raises(TypeError, match="value .an array. or shape, one of them"):
        Scale()


onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnlab.onnx  # noqa: E402


def constant(name, array):
    return numpy_helper.from_array(np.asarray(array, np.float32), name)


def run_both(model, sizes):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    imported = cnnlab.onnx.load(model)
    for height, width in sizes:
        x = RNG.standard_normal((2, 3, height, width)).astype(np.float32)
        expected = session.run(None, {"x": x})[0]
        np.testing.assert_allclose(imported(x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max() + 1e-5)
    return imported


def test_an_onnx_file_with_symbolic_height_and_width_loads_as_shipped():
    inits = [constant("w", RNG.standard_normal((8, 3, 3, 3))), constant("b", RNG.standard_normal(8)),
             constant("fw", RNG.standard_normal((5, 8))), constant("fb", RNG.standard_normal(5))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], auto_pad="SAME_UPPER", strides=[2, 2],
                              kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
             helper.make_node("GlobalAveragePool", ["p"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = run_both(make_model(graph, 13), [(9, 14), (16, 16), (5, 7)])
    assert model.input_shape == (3, None, None)


def test_paddle_hard_swish_and_constants_anywhere():
    """Paddle writes hard-swish as Add 3 -> Clip -> Mul -> Div 6, and learnable scales and biases as
    Mul/Add/Sub of constants after any op."""
    inits = [constant("w", RNG.standard_normal((4, 3, 3, 3))), constant("three", 3.0), constant("six", 6.0),
             constant("zero", 0.0), constant("gamma", RNG.standard_normal((1, 4, 1, 1))),
             constant("shift", RNG.standard_normal((4, 1, 1))), constant("half", 0.5)]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Add", ["r", "three"], ["a"]), helper.make_node("Clip", ["a", "zero", "six"], ["k"]),
             helper.make_node("Mul", ["r", "k"], ["m"]), helper.make_node("Div", ["m", "six"], ["hs"]),
             helper.make_node("Mul", ["gamma", "hs"], ["s"]), helper.make_node("Sub", ["s", "shift"], ["t"]),
             helper.make_node("Sub", ["half", "t"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = run_both(make_model(graph, 13), [(6, 7), (10, 4)])
    assert {"Bias", "Scale"} <= {type(layer).__name__ for layer in model.layers}


def test_a_division_that_does_not_broadcast_is_refused_naming_the_node():
    """ONNX aligns shapes from the last axis, batch axis included: (N, 3, 4, 4) / (N, 3) does not
    broadcast, and the refusal names the node."""
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"]), helper.make_node("Flatten", ["p"], ["r"]),
             helper.make_node("Div", ["x", "r"], ["y"], name="ratio")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(NotImplementedError, match="ONNX Div node 'ratio'.*do not broadcast"):
        cnnlab.onnx.load(make_model(graph, 13))


def test_a_model_of_unknown_image_size_exports_with_symbolic_axes(tmp_path):
    model = any_size_model()
    cnnlab.onnx.save(model, tmp_path / "any.onnx")
    session = ort.InferenceSession(str(tmp_path / "any.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, "input_axis2", "input_axis3"]
    again = cnnlab.onnx.load(tmp_path / "any.onnx")
    for height, width in [(9, 14), (16, 16)]:
        x = RNG.standard_normal((2, 3, height, width)).astype(np.float32)
        expected = model(x)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(again(x), expected, rtol=1e-5, atol=1e-6)
