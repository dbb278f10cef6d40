"""ONNX import checked against onnxruntime and the ONNX project's own node test cases."""

import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx_models import make_model  # noqa: E402

import cnnlab  # noqa: E402
import cnnlab.onnx  # noqa: E402

RNG = np.random.default_rng(0)


def initializer(name, shape, scale=0.5):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def build(nodes, inputs, output, initializers=(), opset=13):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], list(initializers))
    model = make_model(graph, opset)
    return model


def run_both(model, *arrays):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    expected = session.run(None, dict(zip(names, arrays)))[0]
    got = cnnlab.onnx.load(model)(*arrays)
    return np.asarray(cnnlab.to_host(got)), expected


def conv(name, x, out, cin, cout, k=3, group=1, pads=(1, 1, 1, 1), strides=(1, 1), bias=True):
    inits = [initializer(f"{name}_w", (cout, cin // group, k, k))]
    inputs = [x, f"{name}_w"]
    if bias:
        inits.append(initializer(f"{name}_b", (cout,)))
        inputs.append(f"{name}_b")
    node = helper.make_node("Conv", inputs, [out], name=name, kernel_shape=[k, k], pads=list(pads),
                            strides=list(strides), group=group)
    return node, inits


def batch_norm(name, x, out, channels):
    inits = [initializer(f"{name}_s", (channels,)), initializer(f"{name}_b", (channels,)),
             initializer(f"{name}_m", (channels,)),
             numpy_helper.from_array(RNG.uniform(0.5, 2, channels).astype(np.float32), f"{name}_v")]
    return helper.make_node("BatchNormalization", [x] + [i.name for i in inits], [out], name=name,
                            epsilon=1e-3), inits


def test_residual_block_equals_onnxruntime():
    c1, i1 = conv("c1", "x", "a", 4, 4)
    b1, j1 = batch_norm("b1", "a", "a2", 4)
    c2, i2 = conv("c2", "a3", "b", 4, 4, bias=False)
    nodes = [c1, b1, helper.make_node("Relu", ["a2"], ["a3"]), c2,
             helper.make_node("Add", ["b", "x"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    model = build(nodes, [("x", ["N", 4, 6, 6])], "y", i1 + j1 + i2)
    got, expected = run_both(model, RNG.standard_normal((2, 4, 6, 6)).astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_inverted_residual_with_depthwise_convolution_and_relu6():
    expand, i1 = conv("e", "x", "a", 4, 8, k=1, pads=(0, 0, 0, 0))
    depthwise, i2 = conv("d", "a6", "b", 8, 8, group=8, strides=(2, 2))
    project, i3 = conv("p", "b6", "y", 8, 4, k=1, pads=(0, 0, 0, 0))
    six = [numpy_helper.from_array(np.array(0, np.float32), "zero"), numpy_helper.from_array(np.array(6, np.float32), "six")]
    nodes = [expand, helper.make_node("Clip", ["a", "zero", "six"], ["a6"]), depthwise,
             helper.make_node("Clip", ["b", "zero", "six"], ["b6"]), project]
    model = build(nodes, [("x", ["N", 4, 7, 7])], "y", i1 + i2 + i3 + six)
    got, expected = run_both(model, RNG.standard_normal((3, 4, 7, 7)).astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_fire_module_concatenates():
    squeeze, i1 = conv("s", "x", "a", 6, 2, k=1, pads=(0, 0, 0, 0))
    left, i2 = conv("l", "a", "b", 2, 3, k=1, pads=(0, 0, 0, 0))
    right, i3 = conv("r", "a", "c", 2, 3)
    nodes = [squeeze, left, right, helper.make_node("Concat", ["b", "c"], ["y"], axis=1)]
    model = build(nodes, [("x", ["N", 6, 5, 5])], "y", i1 + i2 + i3)
    got, expected = run_both(model, RNG.standard_normal((2, 6, 5, 5)).astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_squeeze_excitation_gate_with_hardsigmoid_and_mul():
    reduce_, i1 = conv("r", "g", "h", 4, 2, k=1, pads=(0, 0, 0, 0))
    expand, i2 = conv("e", "h2", "h3", 2, 4, k=1, pads=(0, 0, 0, 0))
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["g"]), reduce_, helper.make_node("Relu", ["h"], ["h2"]),
             expand, helper.make_node("HardSigmoid", ["h3"], ["gate"], alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["x", "gate"], ["y"])]
    model = build(nodes, [("x", ["N", 4, 5, 5])], "y", i1 + i2)
    got, expected = run_both(model, RNG.standard_normal((2, 4, 5, 5)).astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_classifier_head_gemm_softmax_and_matmul_add():
    c1, i1 = conv("c", "x", "a", 3, 4)
    inits = i1 + [initializer("w1", (4 * 2 * 2, 5)), initializer("b1", (5,)), initializer("w2", (3, 5)),
                  initializer("b2", (3,))]
    nodes = [c1, helper.make_node("MaxPool", ["a"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1), helper.make_node("MatMul", ["f", "w1"], ["m"]),
             helper.make_node("Add", ["m", "b1"], ["m2"]), helper.make_node("Relu", ["m2"], ["m3"]),
             helper.make_node("Gemm", ["m3", "w2", "b2"], ["z"], transB=1),
             helper.make_node("Softmax", ["z"], ["y"], axis=-1)]
    model = build(nodes, [("x", ["batch", 3, 4, 4])], "y", inits)
    got, expected = run_both(model, RNG.standard_normal((5, 3, 4, 4)).astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("opset", [13, 18])
def test_reduce_mean_over_the_spatial_axes(opset):
    if opset < 18:
        node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=1)
        inits = []
    else:  # the axes became an input in opset 18
        node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)
        inits = [numpy_helper.from_array(np.array([-1, -2], np.int64), "axes")]
    model = build([node], [("x", ["N", 3, 4, 5])], "y", inits, opset=opset)
    got, expected = run_both(model, RNG.standard_normal((2, 3, 4, 5)).astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_imported_network_fine_tunes():
    c1, i1 = conv("c", "x", "a", 1, 4)
    inits = i1 + [initializer("w", (3, 4)), initializer("b", (3,))]
    nodes = [c1, helper.make_node("Relu", ["a"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]), helper.make_node("Gemm", ["f", "w", "b"], ["y"], transB=1)]
    model = cnnlab.onnx.load(build(nodes, [("x", ["N", 1, 6, 6])], "y", inits))
    x = RNG.standard_normal((24, 1, 6, 6)).astype(np.float32)
    y = np.arange(24) % 3
    before = model.parameters()[0][0].params["weight"].copy()
    history = model.fit(x, y, epochs=3, batch_size=8, verbose=0, seed=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert not np.array_equal(before, model.parameters()[0][0].params["weight"])


@pytest.mark.parametrize("nodes, inputs, what", [
    ([helper.make_node("LSTM", ["x", "x", "x"], ["y"], name="g")], [("x", [1, 2])], "LSTM node 'g'"),
    ([helper.make_node("MaxPool", ["x"], ["y"], name="m", kernel_shape=[2, 2], storage_order=1)],
     [("x", [1, 1, 4, 4])], "storage_order=1"),
    ([helper.make_node("Relu", ["x"], ["y"], name="r", unknown_thing=3)], [("x", [1, 2])],
     "attribute\\(s\\) unknown_thing"),
    ([helper.make_node("Resize", ["x", "", "s"], ["y"], name="z", mode="cubic")], [("x", [1, 2, 3, 4]), ("s", [4])],
     "Resize node 'z': .*cubic"),
])
def test_unsupported_nodes_are_refused_by_name(nodes, inputs, what):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = make_model(graph, 13)
    with pytest.raises(NotImplementedError, match=what):
        cnnlab.onnx.load(model)


def test_training_mode_batch_norm_old_opset_and_half_precision_input_are_refused():
    node, inits = batch_norm("bn", "x", "y", 2)
    node.attribute.append(helper.make_attribute("training_mode", 1))
    with pytest.raises(NotImplementedError, match="training_mode=1"):
        cnnlab.onnx.load(build([node], [("x", ["N", 2, 3, 3])], "y", inits, opset=14))
    relu = build([helper.make_node("Relu", ["x"], ["y"])], [("x", ["N", 2])], "y")
    relu.opset_import[0].version = 6
    with pytest.raises(NotImplementedError, match="opset 6"):
        cnnlab.onnx.load(relu)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)])
    with pytest.raises(NotImplementedError, match="Relu node 'y'.*takes float32 and float64 tensors, got float16"):
        cnnlab.onnx.load(make_model(graph, 13))


def test_bad_sources():
    with pytest.raises(FileNotFoundError):
        cnnlab.onnx.load("no-such-file.onnx")
    with pytest.raises(TypeError, match="source must be"):
        cnnlab.onnx.load(42)


# --- the ONNX project's node test cases -------------------------------------------------


def node_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases()
    supported = cnnlab.onnx.supported_ops()
    return [case for case in cases if len(case.model.graph.node) == 1
            and case.model.graph.node[0].op_type in supported]


def with_constant_inputs(model, inputs):
    """``model`` with every graph input but the first made an initializer holding ``inputs``'
    value: the node cases feed weights, shapes and bounds as inputs, which cnnlab folds into
    its layers only when they are constants."""
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    for value, array in list(zip(graph.input, as_arrays(inputs)))[1:]:
        graph.initializer.append(numpy_helper.from_array(np.asarray(array), value.name))
    return folded


def as_arrays(values):
    """The node cases' values, some stored as TensorProto (casts between float types)."""
    return [numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else v for v in values]


def check_outputs(case, model, inputs, outputs):
    inputs, outputs = as_arrays(inputs), as_arrays(outputs)
    got = model(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    for g, e in zip(got, outputs):
        np.testing.assert_allclose(np.asarray(cnnlab.to_host(g)), e, rtol=max(case.rtol, 1e-4),
                                   atol=max(case.atol, 1e-5), err_msg=case.name)


def conformance(names=None):
    """{op type: [passed, passed with constant weights, refused]} (of the cases named in ``names``
    when given); a wrong answer or an unexpected error raises."""
    counts = {}
    for case in node_cases():
        if names is not None and case.name not in names:
            continue
        op = case.model.graph.node[0].op_type
        tally = counts.setdefault(op, [0, 0, 0])
        try:
            model = cnnlab.onnx.load(case.model)
        except NotImplementedError:
            model = None
        if model is not None:
            for inputs, outputs in case.data_sets:
                check_outputs(case, model, inputs, outputs)
            tally[0] += 1
            continue
        try:
            for inputs, outputs in case.data_sets:
                folded = cnnlab.onnx.load(with_constant_inputs(case.model, inputs))
                check_outputs(case, folded, inputs[:1], outputs)
        except NotImplementedError:
            tally[2] += 1
        else:
            tally[1] += 1
    return counts


def test_onnx_node_test_cases_pass_or_are_refused():
    counts = conformance()
    assert sum(passed + folded for passed, folded, _ in counts.values()) >= 530, counts  # 540 as of onnx 1.23
    for op in ("Conv", "Relu", "MaxPool", "AveragePool", "Gemm", "Softmax", "Concat", "BatchNormalization",
               "Clip", "Reshape", "MatMul"):
        assert sum(counts[op][:2]) >= 1, (op, counts[op])


# --- export ----------------------------------------------------------------------------------


def export_case(layer_factory, shape=(3, 8, 8)):
    from cnnlab import layers as L

    x = cnnlab.Input(shape)
    return cnnlab.Model(x, layer_factory(L, x))


EXPORT_CASES = {
    "Conv2D 4-sided, groups, dilation": lambda L, x: L.Conv2D(3, 6, 3, stride=2, padding=((1, 0), (2, 1)),
                                                             dilation=(1, 2), groups=3, seed=0)(x),
    "Conv2D same_upper no bias": lambda L, x: L.Conv2D(3, 4, 3, stride=2, padding="same_upper", bias=False, seed=1)(x),
    "Dense": lambda L, x: L.Dense(3 * 8 * 8, 5, seed=2)(L.Flatten()(x)),
    "MaxPool2D ceil dilation": lambda L, x: L.MaxPool2D(3, stride=2, padding=1, dilation=(2, 1), ceil_mode=True)(x),
    "MinPool2D": lambda L, x: L.MinPool2D(2)(x),
    "AvgPool2D excluding pad": lambda L, x: L.AvgPool2D(3, stride=2, padding=1, count_include_pad=False)(x),
    "AvgPool2D ceil": lambda L, x: L.AvgPool2D(3, stride=2, ceil_mode=True)(x),
    "LPPool2D": lambda L, x: L.LPPool2D(2)(x),
    "GlobalAvgPool2D": lambda L, x: L.GlobalAvgPool2D()(x),
    "GlobalMaxPool2D keepdims": lambda L, x: L.GlobalMaxPool2D(keepdims=True)(x),
    "activations": lambda L, x: L.SiLU()(L.HardSwish()(L.HardSigmoid(0.3, 0.4)(L.ReLU6()(L.Clip(-1, None)(
        L.Tanh()(L.Sigmoid()(L.LeakyReLU(0.2)(L.ReLU()(L.Identity()(L.Dropout(0.5)(x))))))))))),
    "Softmax LogSoftmax": lambda L, x: L.LogSoftmax(axis=1)(L.Softmax(axis=-1)(x)),
    "BatchNorm2D": lambda L, x: L.BatchNorm2D(3)(x),
    "Reshape": lambda L, x: L.Reshape((8, -1))(x),
    "Add Multiply Concatenate": lambda L, x: L.Concatenate(axis=1)([
        L.Add()([x, x, L.ReLU()(x)]), L.Multiply()([x, L.GlobalAvgPool2D(keepdims=True)(x)])]),
    "Bias Scale": lambda L, x: L.Bias(RNG.standard_normal((1, 8, 1)))(L.Scale(RNG.standard_normal((3, 1, 8)))(x)),
    "GroupNorm Dropout2D": lambda L, x: L.Dropout2D(0.3)(L.GroupNorm(3, 3)(x)),
    "ConvTranspose2D": lambda L, x: L.ConvTranspose2D(3, 4, 3, stride=2, padding=1, output_padding=1)(x),
    "Resize": lambda L, x: L.Resize(size=(5, 11), mode="bilinear")(L.Resize(scale=(2, 1.5))(x)),
    "Transpose LayerNorm Dense": lambda L, x: L.Transpose((0, 3, 1, 2))(L.Dense(3, 4)(L.LayerNorm((8, 3))(
        L.Transpose((0, 2, 3, 1))(x)))),
    "Sqrt Exp Log Erf Reciprocal Abs": lambda L, x: L.Reciprocal()(L.Erf()(L.Log()(L.Exp()(L.Sqrt()(L.Abs()(x)))))),
    "Floor Ceil Neg GELU": lambda L, x: L.Concatenate(axis=1)([L.Floor()(x), L.Ceil()(L.Neg()(x)),
                                                               L.GELU(approximate="tanh")(L.GELU()(x))]),
    "Subtract Divide Power Maximum Minimum": lambda L, x: L.Minimum()([L.Maximum()([L.Subtract()([x, L.GlobalAvgPool2D(
        keepdims=True)(x)]), L.Divide()([L.Dense(192, 8, seed=3)(L.Flatten()(x)), L.Exp()(x)])]), L.Power()([
        L.Exp()(x), L.Dense(192, 8, seed=4)(L.Flatten()(x))])]),
    "ElementwiseConstant": lambda L, x: L.ElementwiseConstant("power", 2.0)(L.ElementwiseConstant(
        "maximum", RNG.standard_normal((3, 1, 1)))(L.ElementwiseConstant("divide", RNG.uniform(1, 2, (1, 8)), first=True)(
        L.Exp()(L.ElementwiseConstant("minimum", 0.5)(L.ElementwiseConstant("subtract", 1.0, first=True)(x)))))),
}


@pytest.mark.parametrize("name", sorted(EXPORT_CASES))
def test_exported_models_run_in_onnxruntime_to_the_same_outputs(name, tmp_path):
    model = export_case(EXPORT_CASES[name])
    for layer in model.layers:  # non-trivial statistics, so that BatchNorm2D's export is checked
        if "running_var" in layer.buffers:
            layer.buffers["running_var"][...] = RNG.uniform(0.5, 2, layer.buffers["running_var"].shape)
            layer.buffers["running_mean"][...] = RNG.standard_normal(layer.buffers["running_mean"].shape)
    path = tmp_path / "model.onnx"
    cnnlab.onnx.save(model, path)
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = model(x)
    np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-4, atol=1e-5)
    if name != "MinPool2D":  # exported as Neg, MaxPool, Neg; cnnlab imports no Neg
        np.testing.assert_allclose(cnnlab.onnx.load(path)(x), expected, rtol=1e-5, atol=1e-6)  # and back


def test_every_layer_type_exports_but_median_pooling():
    from cnnlab.layers import LAYER_TYPES
    from cnnlab.onnx.exporter import EXPORTERS

    assert {cls.__name__ for cls in EXPORTERS} == set(LAYER_TYPES) - {"MedianPool2D"}
    model = export_case(lambda L, x: L.MedianPool2D(3)(x))
    with pytest.raises(NotImplementedError, match="MedianPool2D has no ONNX equivalent"):
        cnnlab.onnx.save(model, "never-written.onnx")


def test_a_sequential_trained_in_cnnlab_exports(tmp_path):
    from cnnlab.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Softmax

    model = cnnlab.Sequential([Conv2D(1, 4, 3, padding=1, seed=0), ReLU(), MaxPool2D(2), Flatten(),
                               Dense(4 * 4 * 4, 3, seed=1), Softmax()], input_shape=(1, 8, 8))
    x = RNG.random((6, 1, 8, 8)).astype(np.float32)
    model.fit(x, np.arange(6) % 3, epochs=1, batch_size=3, verbose=0)
    cnnlab.onnx.save(model, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], model.predict_proba(x), rtol=1e-4, atol=1e-6)
    # the oldest IR version of the opset: onnxruntimes older than the onnx package still read it
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert proto.ir_version == helper.find_min_ir_version_for(proto.opset_import) < onnx.IR_VERSION


def test_nodes_of_constants_are_evaluated_and_folded():
    """Exporters leave chains of constants (an Identity of a shared weight, a shape built with
    Concat); the importer evaluates them with ONNX's reference implementation."""
    weight = initializer("w", (2, 3, 3, 3))
    pieces = [numpy_helper.from_array(np.array([0], np.int64), "keep"),
              numpy_helper.from_array(np.array([-1], np.int64), "rest")]
    nodes = [helper.make_node("Identity", ["w"], ["w2"]), helper.make_node("Conv", ["x", "w2"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["keep", "rest"], ["shape"], axis=0),
             helper.make_node("Reshape", ["c", "shape"], ["y"])]
    model = build(nodes, [("x", ["N", 3, 5, 5])], "y", [weight] + pieces)
    got, expected = run_both(model, RNG.standard_normal((2, 3, 5, 5)).astype(np.float32))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.usefixtures("small_cuda_launches")
def test_an_imported_network_runs_on_the_gpu():
    """Under Numba's CUDA simulator where there is no GPU; on the device where there is one."""
    expand, i1 = conv("e", "x", "a", 2, 4, k=1, pads=(0, 0, 0, 0))
    depthwise, i2 = conv("d", "a6", "b", 4, 4, group=4)
    six = [numpy_helper.from_array(np.array(0, np.float32), "zero"), numpy_helper.from_array(np.array(6, np.float32), "six")]
    nodes = [expand, helper.make_node("Clip", ["a", "zero", "six"], ["a6"]), depthwise,
             helper.make_node("GlobalAveragePool", ["b"], ["g"]), helper.make_node("HardSigmoid", ["g"], ["gate"]),
             helper.make_node("Mul", ["b", "gate"], ["y"])]
    model = cnnlab.onnx.load(build(nodes, [("x", ["N", 2, 5, 5])], "y", i1 + i2 + six))
    x = RNG.standard_normal((2, 2, 5, 5)).astype(np.float32)
    gpu = model.copy().to("cuda")
    np.testing.assert_allclose(cnnlab.to_host(gpu(cnnlab.to_device(x))), model(x), rtol=1e-5, atol=1e-6)


def test_an_imported_network_has_the_parameters_of_the_exported_one(tmp_path):
    """No bias appears where the file has none (ResNet's convolutions before batch norm)."""
    from cnnlab import applications

    model = applications.resnet(depth=18, width=4, stem="small", input_shape=(3, 8, 8), classes=3, seed=0)
    cnnlab.onnx.save(model, tmp_path / "r.onnx")
    imported = cnnlab.onnx.load(tmp_path / "r.onnx")
    assert imported.parameter_count() == model.parameter_count()
    x = RNG.standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(imported(x), model(x), rtol=1e-5, atol=1e-6)


def test_an_exported_classifier_trains_like_the_original_after_import(tmp_path):
    """The file names its output with an Identity after the Softmax; the imported model must
    still feed cross-entropy the logits (not softmax them twice)."""
    from cnnlab.layers import Conv2D, Dense, Flatten, ReLU, Softmax

    original = cnnlab.Sequential([Conv2D(1, 3, 3, padding=1, seed=0), ReLU(), Flatten(), Dense(3 * 6 * 6, 4, seed=1),
                                  Softmax()], input_shape=(1, 6, 6))
    cnnlab.onnx.save(original, tmp_path / "c.onnx")
    imported = cnnlab.onnx.load(tmp_path / "c.onnx")
    x = RNG.random((8, 1, 6, 6)).astype(np.float32)
    y = np.arange(8) % 4
    for model in (original, imported):
        model.fit(x, y, epochs=2, batch_size=4, optimizer=cnnlab.optim.SGD(0.5), seed=0, verbose=0)
    np.testing.assert_allclose(imported.predict_proba(x), original.predict_proba(x), rtol=1e-4, atol=1e-6)
