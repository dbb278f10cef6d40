"""Chains of ONNX nodes imported as one layer (cnnlab.onnx.patterns): a layer normalization
written as its formula (files of opsets before 17) becomes a LayerNorm, checked against
onnxruntime; chains that differ anywhere import node by node, with the same values."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx_models import make_model  # noqa: E402

import cnnlab.layers as L  # noqa: E402
import cnnlab.onnx  # noqa: E402

RNG = np.random.default_rng(5)


def _layer_norm_model(opset=13, squares="Pow", scale=True, bias=True, axes=(-1,), epsilon=1e-5, extra_output=None,
                      scale_shape=(1, 1, 6), exponent=2.0, variance_axes=None):
    """``x`` (N, 4, 6) through a MatMul, then layer normalization written out node by node over
    ``axes`` (the variance's mean over ``variance_axes`` where given, its squares the power
    ``exponent``), then a MatMul: as Paddle and PyTorch's older exports write a transformer's."""
    inits = [numpy_helper.from_array(RNG.standard_normal((6, 6)).astype(np.float32), "w_in"),
             numpy_helper.from_array(RNG.standard_normal((6, 3)).astype(np.float32), "w_out"),
             numpy_helper.from_array(np.array(exponent, np.float32), "two"),
             numpy_helper.from_array(np.array(epsilon, np.float32), "eps"),
             numpy_helper.from_array(RNG.uniform(0.5, 1.5, scale_shape).astype(np.float32), "gamma"),
             numpy_helper.from_array(RNG.standard_normal((6,)).astype(np.float32), "beta")]
    if opset >= 18:
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        mean = lambda source, out, axes=None: helper.make_node("ReduceMean", [source, "axes"], [out])  # noqa: E731
    else:
        mean = lambda source, out, axes=axes: helper.make_node("ReduceMean", [source], [out],  # noqa: E731
                                                                axes=list(axes))
    nodes = [helper.make_node("MatMul", ["x", "w_in"], ["h"]), mean("h", "m"),
             helper.make_node("Sub", ["h", "m"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["p"]) if squares == "Pow" else
             helper.make_node("Mul", ["d", "d"], ["p"]),
             mean("p", "v", variance_axes or axes), helper.make_node("Add", ["v", "eps"], ["e"]), helper.make_node("Sqrt", ["e"], ["s"]),
             helper.make_node("Div", ["d", "s"], ["n"])]
    last = "n"
    if scale:
        nodes.append(helper.make_node("Mul", ["gamma", last], ["y"]))
        last = "y"
    if bias:
        nodes.append(helper.make_node("Add", [last, "beta"], ["z"]))
        last = "z"
    nodes.append(helper.make_node("MatMul", [last, "w_out"], ["out"]))
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4, 3])]
    if extra_output is not None:
        outputs.append(helper.make_tensor_value_info(extra_output, TensorProto.FLOAT, ["N", "a", "b"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6])],
                              outputs, inits)
    proto = make_model(graph, opset)
    onnx.checker.check_model(proto)
    return proto


def _imported(proto, x):
    """The imported model's layer types, after checking its outputs against onnxruntime's."""
    expected = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    net = cnnlab.onnx.load(proto)
    got = net.graph.forward([x])
    for e, g in zip(expected, got):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    return [type(layer) for layer in net.layers]


@pytest.mark.parametrize("opset, squares, scale, bias", [(13, "Pow", True, True), (11, "Mul", True, True),
                                                         (18, "Pow", True, False), (13, "Pow", False, False)])
def test_a_layer_norm_written_out_is_one_layer(opset, squares, scale, bias):
    x = RNG.standard_normal((3, 4, 6)).astype(np.float32)
    layers = _imported(_layer_norm_model(opset, squares, scale, bias), x)
    assert layers.count(L.LayerNorm) == 1
    assert not {L.Reduce, L.Subtract, L.Divide, L.Sqrt} & set(layers)


def test_a_layer_norm_over_two_trailing_axes_is_one_layer():
    x = RNG.standard_normal((3, 4, 6)).astype(np.float32)
    layers = _imported(_layer_norm_model(axes=(1, 2), scale_shape=(6,)), x)
    assert layers.count(L.LayerNorm) == 1


@pytest.mark.parametrize("change", [dict(axes=(1,), scale_shape=(4, 1)), dict(extra_output="m"),
                                    dict(extra_output="d"), dict(exponent=3.0),
                                    dict(axes=(-1,), variance_axes=(1, 2), scale_shape=(6,))])
def test_chains_that_differ_import_node_by_node(change):
    """The mean over a leading axis, a mean or a difference that is also a graph output, cubes
    for squares, and the variance over other axes than the mean: no LayerNorm, onnxruntime's
    values."""
    x = RNG.standard_normal((2, 4, 6)).astype(np.float32)
    layers = _imported(_layer_norm_model(**change), x)
    assert L.LayerNorm not in layers and L.Reduce in layers


def test_a_scale_that_broadcasts_the_samples_stays_apart():
    """A scale of more than the normalized axes (here it multiplies the batch too) is not the
    layer's weight: the normalization is one layer, the product after it a node of its own."""
    x = RNG.standard_normal((2, 4, 6)).astype(np.float32)
    layers = _imported(_layer_norm_model(scale_shape=(2, 1, 6)), x)
    assert layers.count(L.LayerNorm) == 1 and L.Reduce not in layers and L.Arithmetic in layers
