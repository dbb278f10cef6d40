"""ONNX graphs of general tensors against onnxruntime: shape sub-graphs run while the model runs,
attention's slicing and products, grids built with Range/Expand/Tile, integer inputs, pooling with
auto_pad on sizes known at run time, batch normalization of (N, C, L); then exported back and run
by onnxruntime again, fine-tuned, and the refusals that remain."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx_models import make_model

import cnnlab  # noqa: E402
import cnnlab.onnx  # noqa: E402

RNG = np.random.default_rng(0)
FLOAT = TensorProto.FLOAT


def constant(name, value, dtype=None):
    value = np.asarray(value, dtype=dtype)
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    proto = make_model(graph, opset)
    onnx.checker.check_model(proto)
    return proto


def run_both(proto, feeds, tmp_path=None):
    """cnnlab's and onnxruntime's outputs for ``feeds``; with ``tmp_path``, also onnxruntime's on
    the model cnnlab exports back."""
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, feeds)
    net = cnnlab.onnx.load(proto)
    got = net.graph.forward(list(feeds.values()))
    for e, g in zip(expected, got):
        assert e.shape == np.shape(g)
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    if tmp_path is not None:
        path = tmp_path / "back.onnx"
        cnnlab.onnx.save(net, path)
        again = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
        for e, g in zip(expected, again):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-5)
    return net


def flatten_by_shape_model():
    """Conv → GlobalAveragePool → Reshape to [Shape(x)[0], -1] → Gemm: a classifier of any size."""
    weight = numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    dense = numpy_helper.from_array(RNG.standard_normal((5, 4)).astype(np.float32), "d")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"]),
        helper.make_node("Shape", ["p"], ["s"]),
        constant("zero", [0], np.int64), constant("one", [1], np.int64), constant("minus", [-1], np.int64),
        helper.make_node("Slice", ["s", "zero", "one"], ["n"]),
        helper.make_node("Concat", ["n", "minus"], ["target"], axis=0),
        helper.make_node("Reshape", ["p", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "d"], ["y"], transB=1),
    ]
    return model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 3, "h", "w"])],
                 [helper.make_tensor_value_info("y", FLOAT, ["n", 5])], [weight, dense])


@pytest.mark.parametrize("shape", [(1, 3, 8, 8), (2, 3, 11, 6)])
def test_a_shape_computed_flatten_runs_at_any_size(shape, tmp_path):
    run_both(flatten_by_shape_model(), {"x": RNG.random(shape, dtype=np.float32)}, tmp_path)


def attention_model():
    """PP-OCR's SVTR attention: Reshape to [0, T, 3, heads, d] from the input's own shape,
    Transpose (2, 0, 3, 1, 4) (the batch axis moves), Slice + Squeeze, MatMul of Q and Kᵀ,
    Softmax on axis 3, the weighted sum, then a LayerNorm written out with ReduceMean/Sub/Pow/Sqrt."""
    heads, d = 2, 3
    qkv = numpy_helper.from_array(RNG.standard_normal((6, 3 * heads * d)).astype(np.float32), "qkv")
    nodes = [
        helper.make_node("MatMul", ["x", "qkv"], ["m"]),
        helper.make_node("Shape", ["x"], ["s"]),
        constant("one", [1], np.int64), constant("two", [2], np.int64),
        helper.make_node("Slice", ["s", "one", "two"], ["t"]),
        constant("zero", [0], np.int64), constant("rest", [3, heads, d], np.int64),
        helper.make_node("Concat", ["zero", "t", "rest"], ["target"], axis=0),
        helper.make_node("Reshape", ["m", "target"], ["r"]),
        helper.make_node("Transpose", ["r"], ["tr"], perm=[2, 0, 3, 1, 4]),
    ]
    for i, name in enumerate("qkv"):
        nodes += [constant(f"{name}0", [i], np.int64), constant(f"{name}1", [i + 1], np.int64),
                  helper.make_node("Slice", ["tr", f"{name}0", f"{name}1", "zero"], [f"{name}s"]),
                  helper.make_node("Squeeze", [f"{name}s", "zero"], [f"{name}h"])]
    nodes += [
        helper.make_node("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["qh", "kt"], ["scores"]),
        helper.make_node("Softmax", ["scores"], ["att"], axis=3),
        helper.make_node("MatMul", ["att", "vh"], ["mixed"]),
        helper.make_node("Transpose", ["mixed"], ["back"], perm=[0, 2, 1, 3]),
        constant("flat", [0, -1, heads * d], np.int64),
        helper.make_node("Reshape", ["back", "flat"], ["h"]),
        helper.make_node("ReduceMean", ["h"], ["mean"], axes=[-1]),
        helper.make_node("Sub", ["h", "mean"], ["centred"]),
        constant("two_f", np.float32(2.0)),
        helper.make_node("Pow", ["centred", "two_f"], ["square"]),
        helper.make_node("ReduceMean", ["square"], ["var"], axes=[-1]),
        constant("eps", np.float32(1e-5)),
        helper.make_node("Add", ["var", "eps"], ["var_eps"]),
        helper.make_node("Sqrt", ["var_eps"], ["std"]),
        helper.make_node("Div", ["centred", "std"], ["y"]),
    ]
    return model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", "t", 6])],
                 [helper.make_tensor_value_info("y", FLOAT, ["n", "t", heads * d])], [qkv])


def test_attention_with_a_moving_batch_axis_matches_onnxruntime_and_fine_tunes(tmp_path):
    proto = attention_model()
    x = RNG.standard_normal((2, 5, 6)).astype(np.float32)
    net = run_both(proto, {"x": x}, tmp_path)
    run_both(proto, {"x": RNG.standard_normal((1, 7, 6)).astype(np.float32)})
    # the imported network trains: one gradient step on the MatMul weights lowers a loss
    graph = net.graph
    out = graph.forward([x], training=True)[0]
    target = RNG.standard_normal(out.shape).astype(np.float32)
    graph.backward({id(graph.outputs[0]): 2 * (out - target)})
    dense = next(layer for layer in net.layers if layer.params)
    before = float(np.sum((out - target) ** 2))
    dense.params["weight"] -= 1e-3 * dense.grads["weight"]
    assert float(np.sum((graph.forward([x])[0] - target) ** 2)) < before


def grid_model():
    """YOLO's anchor grid: Range over the feature map's width and height, Unsqueeze, Expand,
    Tile, Equal/Where/ConstantOfShape, added to the feature map."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        constant("i2", 2, np.int64), constant("i3", 3, np.int64),
        helper.make_node("Gather", ["s", "i2"], ["h"], axis=0),
        helper.make_node("Gather", ["s", "i3"], ["w"], axis=0),
        constant("zero", 0, np.int64), constant("one", 1, np.int64),
        helper.make_node("Range", ["zero", "w", "one"], ["xs"]),
        helper.make_node("Range", ["zero", "h", "one"], ["ys"]),
        helper.make_node("Cast", ["xs"], ["xf"], to=FLOAT),
        helper.make_node("Cast", ["ys"], ["yf"], to=FLOAT),
        constant("ax0", [0], np.int64), constant("ax1", [1], np.int64),
        helper.make_node("Unsqueeze", ["xf", "ax0"], ["xrow"]),
        helper.make_node("Unsqueeze", ["yf", "ax1"], ["ycol"]),
        helper.make_node("Unsqueeze", ["h", "ax0"], ["h1"]),
        helper.make_node("Unsqueeze", ["w", "ax0"], ["w1"]),
        helper.make_node("Concat", ["h1", "w1"], ["hw"], axis=0),
        helper.make_node("Expand", ["xrow", "hw"], ["gx"]),
        helper.make_node("Add", ["gx", "ycol"], ["grid"]),
        helper.make_node("ConstantOfShape", ["hw"], ["ones"], value=numpy_helper.from_array(np.array([1.0], np.float32))),
        helper.make_node("Equal", ["gx", "ycol"], ["diag"]),
        helper.make_node("Where", ["diag", "ones", "grid"], ["marked"]),
        constant("reps", [1, 2, 1, 1], np.int64),
        helper.make_node("Tile", ["x", "reps"], ["tiled"]),
        helper.make_node("Add", ["tiled", "marked"], ["y"]),
    ]
    return model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 2, "h", "w"])],
                 [helper.make_tensor_value_info("y", FLOAT, ["n", 4, "h", "w"])])


def test_grids_built_while_the_model_runs(tmp_path):
    run_both(grid_model(), {"x": RNG.standard_normal((2, 2, 3, 5)).astype(np.float32)}, tmp_path)


def test_integer_input_embedding_and_masks():
    table = numpy_helper.from_array(RNG.standard_normal((16, 4)).astype(np.float32), "table")
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"], axis=0),
        constant("pad", np.int32(0)),
        helper.make_node("Equal", ["ids", "pad"], ["is_pad"]),
        helper.make_node("Not", ["is_pad"], ["keep"]),
        helper.make_node("Cast", ["keep"], ["kf"], to=FLOAT),
        constant("ax", [-1], np.int64),
        helper.make_node("Unsqueeze", ["kf", "ax"], ["k3"]),
        helper.make_node("Mul", ["e", "k3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "one"], ["y"], keepdims=0),
        constant("one", [1], np.int64),
    ]
    nodes = nodes[:-2] + [nodes[-1], nodes[-2]]
    proto = model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT32, ["n", 7])],
                  [helper.make_tensor_value_info("y", FLOAT, ["n", 4])], [table])
    ids = RNG.integers(0, 16, (3, 7)).astype(np.int32)
    ids[0, :3] = 0
    run_both(proto, {"ids": ids})


def test_same_pooling_and_one_dimensional_batch_norm_at_run_time_sizes(tmp_path):
    stats = [numpy_helper.from_array(RNG.random(3).astype(np.float32) + 0.5, n) for n in ("g", "b", "m", "v")]
    nodes = [
        helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
        constant("shape", [0, 3, -1], np.int64),
        helper.make_node("Reshape", ["p", "shape"], ["seq"]),
        helper.make_node("BatchNormalization", ["seq", "g", "b", "m", "v"], ["y"]),
    ]
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 3, "h", "w"])],
                  [helper.make_tensor_value_info("y", FLOAT, ["n", 3, "l"])], stats)
    for shape in ((1, 3, 7, 9), (2, 3, 8, 5)):
        run_both(proto, {"x": RNG.standard_normal(shape).astype(np.float32)})


def test_recurrent_and_quantized_ops_are_refused_by_name():
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])]
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 4])],
                  [helper.make_tensor_value_info("q", TensorProto.UINT8, ["n", 4])])
    with pytest.raises(NotImplementedError, match="DynamicQuantizeLinear"):
        cnnlab.onnx.load(proto)


def test_a_slice_of_computed_bounds_is_refused_naming_the_node():
    nodes = [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Slice", ["x", "s", "s"], ["y"], name="cut")]
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 4])],
                  [helper.make_tensor_value_info("y", FLOAT, ["n", 4])])
    with pytest.raises(NotImplementedError, match="Slice node 'cut'.*starts must be a constant"):
        cnnlab.onnx.load(proto)


@pytest.mark.parametrize("mode, opset", [("constant", 17), ("reflect", 17), ("edge", 17), ("wrap", 19)])
def test_pad_matches_onnxruntime(mode, opset, tmp_path):
    nodes = [constant("pads", [0, 0, 1, 2, 0, 0, 2, 1], np.int64), constant("value", np.float32(0.25)),
             helper.make_node("Pad", ["x", "pads", "value"] if mode == "constant" else ["x", "pads"], ["y"], mode=mode)]
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 2, 4, 5])],
                  [helper.make_tensor_value_info("y", FLOAT, ["n", 2, 7, 8])], opset=opset)
    run_both(proto, {"x": RNG.standard_normal((2, 2, 4, 5)).astype(np.float32)}, tmp_path)


def test_an_equal_split_of_a_run_time_axis_and_one_dimensional_pooling(tmp_path):
    nodes = [helper.make_node("Split", ["x"], ["a", "b", "c"], axis=2, num_outputs=3),
             helper.make_node("MaxPool", ["a"], ["pa"], kernel_shape=[2], strides=[1], pads=[1, 0]),
             helper.make_node("AveragePool", ["c"], ["pc"], kernel_shape=[2], auto_pad="SAME_UPPER"),
             helper.make_node("Concat", ["pa", "b", "pc"], ["y"], axis=2)]
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 2, "l"])],
                  [helper.make_tensor_value_info("y", FLOAT, ["n", 2, "m"])], opset=18)
    for length in (7, 9, 10):
        run_both(proto, {"x": RNG.standard_normal((2, 2, length)).astype(np.float32)},
                 tmp_path if length == 9 else None)


def test_softmax_over_the_first_axis():
    nodes = [helper.make_node("Softmax", ["x"], ["s"], axis=0), helper.make_node("LogSoftmax", ["s"], ["y"], axis=0)]
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 3])],
                  [helper.make_tensor_value_info("y", FLOAT, ["n", 3])])
    run_both(proto, {"x": RNG.standard_normal((4, 3)).astype(np.float32)})


@pytest.mark.parametrize("form", ["paddle", "scale", "hard_sigmoid"])
def test_hard_swish_patterns_become_one_fused_activation(form, tmp_path):
    """Exporters write hard-swish out (Paddle: Add 3 → Clip 0..6 → Mul → Div 6; or × 1/6; or
    x × HardSigmoid(x)): the importer makes it one HardSwish, which the convolution before it
    computes in its output write."""
    weight = numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1])]
    if form == "hard_sigmoid":
        nodes += [helper.make_node("HardSigmoid", ["c"], ["g"], alpha=1 / 6, beta=0.5),
                  helper.make_node("Mul", ["c", "g"], ["y"])]
    else:
        nodes += [constant("three", np.float32(3)), constant("zero", np.float32(0)), constant("six", np.float32(6)),
                  helper.make_node("Add", ["c", "three"], ["s"]), helper.make_node("Clip", ["s", "zero", "six"], ["r"]),
                  helper.make_node("Mul", ["c", "r"], ["m"])]
        nodes += [helper.make_node("Div", ["m", "six"], ["y"])] if form == "paddle" else \
            [constant("sixth", np.float32(1 / 6)), helper.make_node("Mul", ["m", "sixth"], ["y"])]
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 3, "h", "w"])],
                  [helper.make_tensor_value_info("y", FLOAT, ["n", 4, "h", "w"])], [weight])
    net = run_both(proto, {"x": RNG.standard_normal((2, 3, 6, 7)).astype(np.float32)}, tmp_path)
    assert [type(layer).__name__ for layer in net.layers] == ["Conv2D", "HardSwish"]
    assert len(net.graph.inference_plan()) == 1  # the convolution with hard-swish in its epilogue


@pytest.mark.parametrize("order", ["x_first", "gate_first"])
def test_x_times_sigmoid_x_becomes_one_silu_in_the_convolution(order, tmp_path):
    """YOLO exports write SiLU as Conv -> Sigmoid -> Mul(conv, sigmoid): one SiLU, which the
    convolution computes in its output write (no Sigmoid or Mul step is left)."""
    weight = numpy_helper.from_array(RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    operands = ["c", "g"] if order == "x_first" else ["g", "c"]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["g"]), helper.make_node("Mul", operands, ["y"])]
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 3, "h", "w"])],
                  [helper.make_tensor_value_info("y", FLOAT, ["n", 4, "h", "w"])], [weight])
    net = run_both(proto, {"x": (4 * RNG.standard_normal((2, 3, 6, 7))).astype(np.float32)}, tmp_path)
    assert [type(layer).__name__ for layer in net.layers] == ["Conv2D", "SiLU"]
    assert [repr(step) for step in net.graph.inference_plan()] == ["FusedConv(Conv2D -> SiLU)"]


def test_a_sigmoid_read_elsewhere_too_still_becomes_silu_and_stays():
    """The Sigmoid's output is also an output of the network: it is kept, and the product is
    still one SiLU (computed from x, not from the kept sigmoid)."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["g"]), helper.make_node("Mul", ["x", "g"], ["y"])]
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 3])],
                  [helper.make_tensor_value_info("y", FLOAT, ["n", 3]), helper.make_tensor_value_info("g", FLOAT, ["n", 3])])
    net = run_both(proto, {"x": RNG.standard_normal((4, 3)).astype(np.float32)})
    assert sorted(type(layer).__name__ for layer in net.layers) == ["SiLU", "Sigmoid"]


@pytest.mark.parametrize("form", ["torch", "half_first", "constant_first"])
def test_gelu_written_out_becomes_one_gelu(form, tmp_path):
    """x * (1 + erf(x / sqrt 2)) * 0.5 (PyTorch's and Paddle's exports of the exact GELU; the half
    may come first) is imported as one GELU layer."""
    root2 = np.float32(np.sqrt(2.0))
    nodes = [constant("root2", root2), constant("one", np.float32(1)), constant("half", np.float32(0.5)),
             helper.make_node("Div", ["x", "root2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"] if form != "constant_first" else ["one", "e"], ["g"])]
    if form == "half_first":
        nodes += [helper.make_node("Mul", ["x", "half"], ["h"]), helper.make_node("Mul", ["h", "g"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["x", "g"], ["m"]),
                  helper.make_node("Mul", ["m", "half"] if form == "torch" else ["half", "m"], ["y"])]
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 3, 5, 4])],
                  [helper.make_tensor_value_info("y", FLOAT, ["n", 3, 5, 4])])
    net = run_both(proto, {"x": (3 * RNG.standard_normal((2, 3, 5, 4))).astype(np.float32)}, tmp_path)
    assert [type(layer).__name__ for layer in net.layers] == ["GELU"]


def test_a_near_gelu_stays_written_out():
    """The same chain with another constant (erf(x / 2)) is not GELU: it stays as written."""
    nodes = [constant("two", np.float32(2)), constant("one", np.float32(1)), constant("half", np.float32(0.5)),
             helper.make_node("Div", ["x", "two"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["g"]), helper.make_node("Mul", ["x", "g"], ["m"]),
             helper.make_node("Mul", ["m", "half"], ["y"])]
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 3])],
                  [helper.make_tensor_value_info("y", FLOAT, ["n", 3])])
    net = run_both(proto, {"x": RNG.standard_normal((4, 3)).astype(np.float32)})
    assert "GELU" not in [type(layer).__name__ for layer in net.layers]


@pytest.mark.parametrize("chain", [("Mul", "Add"), ("Add",), ("Mul",), ("Add", "Mul")])
@pytest.mark.parametrize("pads", [[0, 0, 0, 0], [1, 1, 1, 1]])
def test_an_affine_before_an_unpadded_convolution_folds_into_it(chain, pads, tmp_path):
    """PP-OCR's learnable affine after an activation (x * a + b, per channel or scalar) before a
    convolution without padding is folded into that convolution's weights and bias (exact: no
    padded zero meets the shift); with padding it stays a layer of its own."""
    size = 1 if pads[0] == 0 else 3
    inits = [numpy_helper.from_array(RNG.standard_normal((5, 3, size, size)).astype(np.float32), "w"),
             numpy_helper.from_array(RNG.standard_normal(5).astype(np.float32), "b"),
             numpy_helper.from_array(np.float32(1.7), "Mul"),
             numpy_helper.from_array(RNG.standard_normal((1, 3, 1, 1)).astype(np.float32), "Add")]
    nodes, last = [helper.make_node("Relu", ["x"], ["r"])], "r"
    for k, op in enumerate(chain):
        nodes.append(helper.make_node(op, [last, op], [f"t{k}"]))
        last = f"t{k}"
    nodes.append(helper.make_node("Conv", [last, "w", "b"], ["y"], pads=pads))
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 3, 6, 6])],
                  [helper.make_tensor_value_info("y", FLOAT, ["n", 5, 6, 6])], inits)
    net = run_both(proto, {"x": RNG.standard_normal((2, 3, 6, 6)).astype(np.float32)}, tmp_path)
    kinds = [type(layer).__name__ for layer in net.layers]
    if pads[0] == 0 and chain != ("Add", "Mul"):
        assert kinds == ["ReLU", "Conv2D"]
    else:
        assert len(kinds) > 2


def test_a_per_channel_multiply_then_add_is_one_affine_layer(tmp_path):
    inits = [numpy_helper.from_array(RNG.standard_normal((1, 3, 1, 1)).astype(np.float32), "a"),
             numpy_helper.from_array(np.float32(0.3), "b")]
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mul", ["r", "a"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y"])]
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["n", 3, "h", "w"])],
                  [helper.make_tensor_value_info("y", FLOAT, ["n", 3, "h", "w"])], inits)
    net = run_both(proto, {"x": RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)}, tmp_path)
    assert [type(layer).__name__ for layer in net.layers] == ["ReLU", "Affine"]


@pytest.mark.parametrize("steps, bias_shape, scale_shape, folded", [
    (4, (5,), (1, 1, 5), True),  # a recognizer's head: MatMul, Add of the bias, a Mul: one Dense
    (4, (1, 5), (5,), True),
    (5, (5, 1), (5,), False),  # a constant along the 5 time steps: a Bias layer of its own
])
def test_constants_after_a_matmul_of_3d_tensors_fold_per_output_feature(steps, bias_shape, scale_shape, folded):
    """A MatMul of (N, T, K) by a constant, then an Add and a Mul of constants that act per
    output feature (the last axis) fold into the ``Dense`` layer's bias and weights; one that
    varies along another axis stays a layer of its own (with as many time steps as features,
    it was folded along axis 1 before, as a convolution's channels are: a wrong sum). Against
    onnxruntime."""
    inits = [numpy_helper.from_array(RNG.standard_normal((6, 5)).astype(np.float32), "w"),
             numpy_helper.from_array(RNG.standard_normal(bias_shape).astype(np.float32), "b"),
             numpy_helper.from_array(RNG.uniform(0.5, 1.5, scale_shape).astype(np.float32), "s")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Mul", ["a", "s"], ["y"])]
    proto = model(nodes, [helper.make_tensor_value_info("x", FLOAT, ["N", steps, 6])],
                  [helper.make_tensor_value_info("y", FLOAT, ["N", steps, 5])], inits)
    run_both(proto, {"x": RNG.standard_normal((2, steps, 6)).astype(np.float32)})
    kinds = [type(node.layer).__name__ for node in cnnlab.onnx.load(proto).graph.nodes]
    assert (kinds == ["Dense"]) == folded, kinds
