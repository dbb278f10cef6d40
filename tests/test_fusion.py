"""Fused convolution: the kernel's epilogue (scale, bias, residual, activation in the output
write) and the graph executor's inference plan that uses it."""

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import arrays, conv_geometries
from threads import errors_in_threads

import cnnlab
import cnnlab.functional as F
import cnnlab.layers as L
from cnnlab import applications, config
from cnnlab.fusion import TrainingFusion
from cnnlab.graph import FusedConv
from cnnlab.shapes import resolve_padding

ACTIVATIONS = [None, "relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "tanh", "gelu", "leaky_relu",
               ("clip", -0.5, 0.7), ("clip", None, 0.2), ("clip", -0.1, None), ("leaky_relu", 0.3),
               ("hardsigmoid", 0.25, 0.4)]
STANDALONE = {
    "relu": F.relu, "relu6": F.relu6, "hardswish": F.hardswish, "hardsigmoid": F.hardsigmoid,
    "sigmoid": F.sigmoid, "silu": F.silu, "tanh": F.tanh, "gelu": F.gelu, "leaky_relu": F.leaky_relu,
    "clip": lambda v, low, high: F.clip(v, low, high),
}


def standalone(spec, v):
    if spec is None:
        return v
    name, parameters = (spec, ()) if isinstance(spec, str) else (spec[0], spec[1:])
    return STANDALONE[name](v, *parameters)


def tolerance(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


def problem(g, seed=0):
    rng = np.random.default_rng(seed)
    x = arrays(rng, (g["samples"], g["channels"], g["height"], g["width"]), g["dtype"])
    weight = arrays(rng, (g["filters"], g["channels"] // g["groups"]) + g["kernel"], g["dtype"])
    bias = arrays(rng, (g["filters"],), g["dtype"]) if g["bias"] else None
    return rng, x, weight, bias


@settings(max_examples=40)
@given(conv_geometries(), st.sampled_from(ACTIVATIONS), st.booleans(), st.booleans())
def test_fused_conv2d_matches_loops_and_the_unfused_calls(g, activation, with_scale, with_residual):
    rng, x, weight, bias = problem(g)
    geometry = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"], groups=g["groups"])
    plain = F.conv2d(x, weight, None, **geometry)
    scale = arrays(rng, (g["filters"],), g["dtype"]) if with_scale else None
    residual = arrays(rng, plain.shape, g["dtype"]) if with_residual else None
    out = F.conv2d(x, weight, bias, **geometry, scale=scale, residual=residual, activation=activation)
    assert out.shape == plain.shape and out.dtype == g["dtype"]
    # the same as the separate calls ...
    expected = plain
    if scale is not None:
        expected = expected * scale[None, :, None, None]
    if bias is not None:
        expected = expected + bias[None, :, None, None]
    if residual is not None:
        expected = expected + residual
    np.testing.assert_allclose(out, standalone(activation, expected.astype(g["dtype"])), **tolerance(g["dtype"]))
    # ... and as the loop definition
    pads = resolve_padding(g["padding"], g["kernel"], g["stride"], g["dilation"])
    reference = naive.fused_conv2d(x, weight, bias, g["stride"], pads, g["dilation"], g["groups"], scale,
                                   residual, activation)
    np.testing.assert_allclose(out, reference, **tolerance(g["dtype"]))


@pytest.mark.parametrize("kind", ["dense", "pointwise", "depthwise", "row-blocks", "filter-blocks"])
@pytest.mark.parametrize("activation", ["relu", "relu6", "hardswish", "silu", ("clip", -1.0, 1.0)])
def test_every_kernel_path_fuses(kind, activation, monkeypatch):
    """The im2col, 1x1 GEMM and depthwise paths (and row or filter blocks at batch 1) share the
    epilogue."""
    rng = np.random.default_rng(3)
    channels, groups, kernel = {"dense": (4, 1, 3), "pointwise": (6, 2, 1), "depthwise": (5, 5, 3),
                                "row-blocks": (3, 1, 3), "filter-blocks": (17, 1, 3)}[kind]
    blocks = kind.endswith("blocks")
    if blocks:
        monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 16)  # several workers on one image
    size = (2, 2) if kind == "filter-blocks" else (11, 9)  # 4 x 4 pixels <= 17 filters: split the filters
    x = rng.standard_normal((1 if blocks else 2, channels) + size).astype(np.float32)
    weight = rng.standard_normal((channels, channels // groups, kernel, kernel)).astype(np.float32)
    bias, scale = rng.standard_normal(channels).astype(np.float32), rng.uniform(0.5, 2, channels).astype(np.float32)
    padding = kernel // 2
    residual = rng.standard_normal(F.conv2d(x, weight, padding=padding, groups=groups).shape).astype(np.float32)
    out = F.conv2d(x, weight, bias, padding=padding, groups=groups, scale=scale, residual=residual,
                   activation=activation)
    reference = naive.fused_conv2d(x, weight, bias, (1, 1), ((padding,) * 2,) * 2, (1, 1), groups, scale, residual,
                                   activation)
    np.testing.assert_allclose(out, reference, rtol=2e-5, atol=2e-5)


def test_out_is_written_and_returned():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    out = np.full((2, 4, 4, 4), np.nan, np.float32)
    result = F.conv2d(x, w, activation="relu", out=out)
    assert result is out
    np.testing.assert_allclose(out, F.relu(F.conv2d(x, w)), rtol=1e-6)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(activation="swish"), ValueError, "activation must be"),
    (dict(activation=("clip", 1.0)), ValueError, "activation 'clip' takes"),
    (dict(activation=("clip", 2.0, 1.0)), ValueError, "min must not exceed max"),
    (dict(activation=("leaky_relu", "x")), TypeError, "negative_slope"),
    (dict(activation=("relu", 1.0)), ValueError, "activation 'relu' takes"),
    (dict(activation=3), ValueError, "activation must be"),
    (dict(scale=np.ones(3, np.float32)), ValueError, "scale must have 4 entries"),
    (dict(scale=np.ones((4, 1), np.float32)), ValueError, "scale"),
    (dict(residual=np.ones((2, 4, 3, 3), np.float32)), ValueError, "residual must have the output's shape"),
    (dict(residual=np.ones((2, 4, 4), np.float32)), ValueError, "residual"),
    (dict(out=np.ones((2, 4, 3, 3), np.float32)), ValueError, "out must have shape"),
    (dict(out=np.ones((2, 4, 4, 4), np.float64)), TypeError, "out must have dtype"),
    (dict(out=np.ones((2, 4, 4, 8), np.float32)[..., ::2]), ValueError, "C-contiguous"),
    (dict(out=[[0.0]]), TypeError, "out must be a NumPy array"),
])
def test_bad_epilogue_arguments_are_named(kwargs, error, words):
    x = np.ones((2, 3, 6, 6), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    with pytest.raises(error, match=words):
        F.conv2d(x, w, **kwargs)


@pytest.mark.usefixtures("small_cuda_launches")
@settings(max_examples=6)
@given(conv_geometries(max_size=3), st.sampled_from(ACTIVATIONS[1:]))
def test_fused_conv2d_gpu_equals_cpu(g, activation):
    rng, x, weight, bias = problem(g, seed=5)
    geometry = dict(stride=g["stride"], padding=g["padding"], dilation=g["dilation"], groups=g["groups"])
    shape = F.conv2d(x, weight, None, **geometry).shape
    scale, residual = arrays(rng, (g["filters"],), g["dtype"]), arrays(rng, shape, g["dtype"])
    cpu = F.conv2d(x, weight, bias, **geometry, scale=scale, residual=residual, activation=activation)
    on_device = [None if a is None else cnnlab.to_device(a) for a in (x, weight, bias, scale, residual)]
    gpu = F.conv2d(*on_device[:3], **geometry, scale=on_device[3], residual=on_device[4], activation=activation)
    np.testing.assert_allclose(cnnlab.to_host(gpu), cpu, **tolerance(g["dtype"]))


# --- the graph executor's plan ------------------------------------------------------------

def _randomize_norms(model, rng):
    for layer in model.layers:
        if isinstance(layer, L.BatchNorm2D):
            n = layer.num_features
            layer.buffers["running_mean"][:] = rng.standard_normal(n) * 0.2
            layer.buffers["running_var"][:] = rng.uniform(0.5, 2.0, n)
            layer.params["weight"][:] = rng.uniform(0.5, 1.5, n)
            layer.params["bias"][:] = rng.standard_normal(n) * 0.2


def _fused(model):
    return [step for step in model.graph.inference_plan() if isinstance(step, FusedConv)]


def _unfused(model, x, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(config, "FUSE", False)
        return model.predict_proba(x)


@pytest.mark.parametrize("build", [
    lambda: applications.resnet(18, classes=5, input_shape=(3, 32, 32), seed=0),
    lambda: applications.mobilenet_v2(classes=5, input_shape=(3, 32, 32), seed=0, width_multiplier=0.5),
], ids=["resnet18", "mobilenet_v2"])
def test_fused_and_unfused_networks_agree(build, monkeypatch):
    rng = np.random.default_rng(0)
    model = build()
    _randomize_norms(model, rng)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    fused = model.predict_proba(x)
    steps = _fused(model)
    assert steps and all(step.norm is not None for step in steps)
    assert len(model.graph.inference_plan()) < len(model.graph.nodes)
    np.testing.assert_allclose(fused, _unfused(model, x, monkeypatch), rtol=1e-4, atol=1e-6)


def test_resnet_blocks_fuse_the_shortcut_and_the_activation():
    model = applications.resnet(18, classes=5, input_shape=(3, 32, 32), seed=0)
    names = [[type(n.layer).__name__ for n in step.members] for step in _fused(model)]
    assert ["Conv2D", "BatchNorm2D", "ReLU"] in names
    assert ["Conv2D", "BatchNorm2D", "Add", "ReLU"] in names
    # eight basic blocks, each with one shortcut Add, every one fused into a convolution
    assert sum("Add" in members for members in names) == 8


def test_a_tensor_used_twice_or_returned_is_not_fused_away(monkeypatch):
    rng = np.random.default_rng(2)
    x = cnnlab.Input((3, 8, 8))
    conv = L.Conv2D(3, 4, 3, padding=1, seed=1)(x)
    a = L.ReLU()(conv)
    b = L.Sigmoid()(conv)  # conv feeds two nodes: neither activation may be fused
    c = L.Conv2D(4, 4, 3, padding=1, seed=2)(a)
    d = L.ReLU()(c)  # fusable, but c is also an output below
    e = L.Add()([L.Conv2D(4, 4, 1, seed=3)(b), L.Conv2D(4, 4, 1, seed=4)(d)])
    model = cnnlab.Model(x, [e, c])
    plan = model.graph.inference_plan()
    fused = [s for s in plan if isinstance(s, FusedConv) and len(s.members) > 1]  # a lone conv is a step too
    assert len(fused) == 1 and [type(n.layer).__name__ for n in fused[0].members] == ["Conv2D", "Add"]
    data = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    outputs = model.forward(data)
    with monkeypatch.context() as patch:
        patch.setattr(config, "FUSE", False)
        expected = model.forward(data)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_broadcast_add_and_mixed_dtypes_are_not_fused():
    x = cnnlab.Input((3, 6, 6))
    conv = L.Conv2D(3, 4, 3, padding=1)(x)
    gate = L.GlobalAvgPool2D(keepdims=True)(L.Conv2D(3, 4, 1)(x))
    added = L.Add()([conv, gate])  # (4, 1, 1) broadcast: the kernel adds same-shape residuals only
    normed = L.BatchNorm2D(4, dtype="float64")(L.Conv2D(4, 4, 1)(added))
    model = cnnlab.Model(x, normed)
    assert all(step.add is None and step.norm is None for step in _fused(model))


def test_parameters_changed_after_a_prediction_are_used():
    rng = np.random.default_rng(4)
    model = applications.resnet(18, classes=3, input_shape=(3, 32, 32), seed=0)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    before = model.predict_proba(x)
    _randomize_norms(model, rng)
    after = model.predict_proba(x)
    config.FUSE = False
    try:
        expected = model.predict_proba(x)
    finally:
        config.reset()
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, expected, rtol=1e-4, atol=1e-6)


def test_training_and_observed_forwards_run_every_node():
    rng = np.random.default_rng(5)
    model = applications.resnet(18, classes=3, input_shape=(3, 32, 32), seed=0)
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    seen = []
    model.graph.forward([x], observe=lambda node, value: seen.append(node))
    assert len(seen) == len(model.graph.nodes) and not any(isinstance(n, FusedConv) for n in seen)
    model.fit(x, np.array([0, 1]), epochs=1, batch_size=2, verbose=0)  # training walks the plain graph
    assert np.isfinite(model.predict_proba(x)).all()


@pytest.mark.usefixtures("small_cuda_launches")
def test_fused_network_on_the_gpu_equals_the_cpu():
    rng = np.random.default_rng(6)
    x = cnnlab.Input((2, 6, 6))
    h = L.ReLU()(L.BatchNorm2D(3)(L.Conv2D(2, 3, 3, padding=1, seed=1)(x)))
    y = L.ReLU6()(L.Add()([L.BatchNorm2D(3)(L.Conv2D(3, 3, 3, padding=1, seed=2)(h)), h]))
    model = cnnlab.Model(x, L.Flatten()(y))
    _randomize_norms(model, rng)
    assert len(_fused(model)) == 2
    data = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    cpu = model.forward(data)
    gpu = cnnlab.to_host(model.to("cuda").forward(cnnlab.to_device(data)))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=1e-6)


# --- squeeze-excitation gates -----------------------------------------------------------------

def _gated_model(channels, filters, kernel, stride, groups, size=9, gates_input=False):
    """Feature maps gated by a squeeze-excitation block (or by a second input), then a
    convolution with batch norm and ReLU: the Multiply is the convolution's to fold."""
    x = cnnlab.Input((3, size, size))
    maps = L.HardSwish()(L.Conv2D(3, channels, 3, padding=1, seed=1)(x))
    inputs = [x]
    if gates_input:
        gates = cnnlab.Input((channels, 1, 1))
        inputs.append(gates)
    else:
        squeezed = L.ReLU()(L.Conv2D(channels, 2, 1, seed=2)(L.GlobalAvgPool2D(keepdims=True)(maps)))
        gates = L.HardSigmoid()(L.Conv2D(2, channels, 1, seed=3)(squeezed))
    gated = L.Multiply()([gates, maps] if gates_input else [maps, gates])
    out = L.ReLU()(L.BatchNorm2D(filters)(L.Conv2D(channels, filters, kernel, stride=stride, padding=kernel // 2,
                                                   groups=groups, seed=4)(gated)))
    return cnnlab.Model(inputs, L.Flatten()(out))


@pytest.mark.parametrize("channels, filters, kernel, stride, groups, samples", [
    (4, 6, 1, 1, 1, 1),  # PP-LCNet's and MobileNetV3's pointwise convolution after the gates
    (4, 6, 1, 1, 1, 3),  # each sample its own gates: its own weights
    (4, 6, 3, 2, 2, 2),  # groups, a window and a stride
    (6, 6, 3, 1, 6, 2),  # depthwise
    (16, 40, 3, 1, 1, 2),  # more weights than map values: the maps are scaled first
])
def test_squeeze_excitation_gates_fold_into_the_next_convolution(channels, filters, kernel, stride, groups,
                                                                   samples, monkeypatch):
    rng = np.random.default_rng(11)
    model = _gated_model(channels, filters, kernel, stride, groups, size=5 if channels == 16 else 9)
    _randomize_norms(model, rng)
    steps = [step for step in _fused(model) if step.gate is not None]
    assert len(steps) == 1
    assert [type(n.layer).__name__ for n in steps[0].members] == ["Multiply", "Conv2D", "BatchNorm2D", "ReLU"]
    assert not any(type(node.layer).__name__ == "Multiply" for node in model.graph.inference_plan())
    x = rng.standard_normal((samples, 3) + model.graph.inputs[0].sample_shape[1:]).astype(np.float32)
    for _ in range(2):  # the checked call, then the bound one
        np.testing.assert_allclose(model.predict_proba(x), _unfused(model, x, monkeypatch), rtol=1e-5, atol=1e-6)


def test_gates_of_one_sample_for_a_batch_and_gates_read_twice(monkeypatch):
    rng = np.random.default_rng(12)
    model = _gated_model(4, 6, 3, 1, 1, gates_input=True)
    x = rng.standard_normal((3, 3, 9, 9)).astype(np.float32)
    for gates in (rng.uniform(0, 1, (1, 4, 1, 1)), rng.uniform(0, 1, (3, 4, 1, 1))):  # broadcast, then each its own
        gates = gates.astype(np.float32)
        fused = model.forward([x, gates])
        with monkeypatch.context() as patch:
            patch.setattr(config, "FUSE", False)
            np.testing.assert_allclose(fused, model.forward([x, gates]), rtol=1e-5, atol=1e-6)
    # the product read by a second node too (here: also an output) stays a node of its own
    x_in = cnnlab.Input((4, 6, 6))
    gates_in = cnnlab.Input((4, 1, 1))
    product = L.Multiply()([x_in, gates_in])
    twice = cnnlab.Model([x_in, gates_in], [L.Conv2D(4, 2, 1, seed=1)(product), product])
    assert not any(step.gate is not None for step in _fused(twice))


@pytest.mark.usefixtures("small_cuda_launches")
def test_gated_convolution_on_the_gpu_equals_the_cpu():
    rng = np.random.default_rng(13)
    model = _gated_model(4, 6, 1, 1, 1)
    _randomize_norms(model, rng)
    assert any(step.gate is not None for step in _fused(model))
    data = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    cpu = model.forward(data)
    gpu = cnnlab.to_host(model.to("cuda").forward(cnnlab.to_device(data)))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=1e-6)


def _squeeze_model(dtype="float32", norm=False, padding=0, pooled_output=False):
    """Feature maps, a squeeze (global average pooling, 1x1 convolution with or without batch
    norm and a leaky ReLU, 1x1 convolution and a sigmoid) and the gated maps."""
    x = cnnlab.Input((3, 7, 6), dtype=dtype)
    maps = L.ReLU()(L.Conv2D(3, 6, 3, padding=1, seed=1, dtype=dtype)(x))
    pooled = L.GlobalAvgPool2D(keepdims=True)(maps)
    h = L.Conv2D(6, 3, 1, seed=2, dtype=dtype, bias=not norm)(pooled)
    h = L.LeakyReLU(0.2)(L.BatchNorm2D(3, dtype=dtype)(h) if norm else h)
    gates = L.Sigmoid()(L.Conv2D(3, 6, 1, padding=padding, seed=3, dtype=dtype)(h))
    out = L.Flatten()(L.Multiply()([maps, gates]) if padding == 0 else gates)  # (padded: 3x3 "gates")
    return cnnlab.Model(x, [out, pooled] if pooled_output else out)


@pytest.mark.parametrize("dtype, norm", [("float32", False), ("float32", True), ("float64", True)])
def test_a_squeeze_is_one_step_and_computes_what_its_nodes_do(dtype, norm, monkeypatch):
    from cnnlab.fusion import FusedSqueeze

    rng = np.random.default_rng(14)
    model = _squeeze_model(dtype, norm)
    _randomize_norms(model, rng)
    squeezes = [step for step in model.graph.inference_plan() if isinstance(step, FusedSqueeze)]
    assert len(squeezes) == 1
    assert [type(n.layer).__name__ for n in squeezes[0].members] == (
        ["GlobalAvgPool2D", "Conv2D"] + ["BatchNorm2D"] * norm + ["LeakyReLU", "Conv2D", "Sigmoid"])
    for samples in (1, 4):
        x = rng.standard_normal((samples, 3, 7, 6)).astype(dtype)
        for _ in range(2):
            np.testing.assert_allclose(model.predict_proba(x), _unfused(model, x, monkeypatch),
                                       **tolerance(np.dtype(dtype)))


def test_a_squeeze_read_elsewhere_or_padded_is_not_fused():
    from cnnlab.fusion import FusedSqueeze

    for model in (_squeeze_model(pooled_output=True), _squeeze_model(padding=1)):
        assert not any(isinstance(step, FusedSqueeze) for step in model.graph.inference_plan())


@pytest.mark.usefixtures("small_cuda_launches")
def test_a_squeeze_on_the_gpu_runs_its_steps_and_equals_the_cpu():
    rng = np.random.default_rng(15)
    model = _squeeze_model(norm=True)
    _randomize_norms(model, rng)
    data = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    cpu = model.forward(data)
    gpu = cnnlab.to_host(model.to("cuda").forward(cnnlab.to_device(data)))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=1e-6)


# --- buffer reuse ---------------------------------------------------------------------------

def _small_residual_model():
    x = cnnlab.Input((3, 8, 8))
    h = L.ReLU()(L.BatchNorm2D(4)(L.Conv2D(3, 4, 3, padding=1, seed=1)(x)))
    h = L.ReLU()(L.Add()([L.Conv2D(4, 4, 3, padding=1, seed=2)(h), h]))
    h = L.ReLU()(L.Conv2D(4, 4, 3, padding=1, seed=3)(h))
    return cnnlab.Model(x, L.Dense(4 * 8 * 8, 3, seed=4)(L.Flatten()(h)))


def _buffers_taken(pool, call):
    """``(call(), ids of the pool's buffers under the views it handed out meanwhile)``."""
    taken, original = [], type(pool).take

    def spy(self, shape, dtype):
        array = original(self, shape, dtype)
        taken.append(id(self.lent[id(array)][1]))
        return array

    type(pool).take = spy
    try:
        return call(), taken
    finally:
        type(pool).take = original


def test_buffers_are_reused_and_results_stay_intact():
    rng = np.random.default_rng(7)
    model = _small_residual_model()
    pool = model.graph.buffer_pool()
    a, b = (rng.standard_normal((2, 3, 8, 8)).astype(np.float32) for _ in range(2))
    first = model.forward(a)
    kept = first.copy()
    assert pool.nbytes > 0  # released outputs wait in the pool for the next call
    held = {id(buffer) for buffers in pool.free.values() for buffer in buffers}
    second, taken = _buffers_taken(pool, lambda: model.forward(b))
    assert taken and taken[0] in held  # the second call starts from the pooled arrays
    np.testing.assert_array_equal(first, kept)  # an earlier result is never overwritten
    config.FUSE = False
    try:
        np.testing.assert_allclose(second, model.forward(b), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(first, model.forward(a), rtol=1e-5, atol=1e-6)
    finally:
        config.reset()


def test_a_fused_output_read_through_a_view_is_not_reused():
    """Flatten returns a view: the convolution's buffer under it must not go back to the pool."""
    rng = np.random.default_rng(8)
    x = cnnlab.Input((2, 5, 5))
    h = L.ReLU()(L.Conv2D(2, 3, 3, padding=1, seed=1)(x))
    flat = L.Flatten()(L.ReLU()(L.Conv2D(3, 3, 3, padding=1, seed=2)(h)))
    model = cnnlab.Model(x, flat)
    a, b = (rng.standard_normal((1, 2, 5, 5)).astype(np.float32) for _ in range(2))
    first = model.forward(a)
    kept = first.copy()
    model.forward(b)
    model.forward(b)
    np.testing.assert_array_equal(first, kept)


def test_an_output_read_through_a_view_takes_no_pooled_buffer(monkeypatch):
    """A step whose output only a view reads (pooled features under a Flatten) never gives its
    buffer back, so it takes none from the pool: a later call takes every buffer from those the
    last call left in the pool, which all stay there (none is lost, to be faulted in anew)."""
    monkeypatch.setattr(config, "PREPARE", False)  # (the plain walk's pool: prepared plans keep arrays of their own)
    import weakref

    rng = np.random.default_rng(11)
    x = cnnlab.Input((4, 8, 8))
    h = L.Conv2D(8, 8, 3, padding=1, seed=2)(L.ReLU()(L.Conv2D(4, 8, 3, padding=1, seed=1)(x)))
    features = L.Flatten()(L.GlobalAvgPool2D(keepdims=True)(h))  # (a ReLU after: not a fused head)
    model = cnnlab.Model(x, L.Dense(8, 3, seed=3)(L.ReLU()(features)))
    images = rng.standard_normal((2, 4, 8, 8)).astype(np.float32)
    expected = model.graph.forward([images], observe=lambda node, value: None)[0]
    pool = model.graph.buffer_pool()
    model.forward(images)
    model.forward(images)
    held = {id(buffer) for buffers in pool.free.values() for buffer in buffers}
    alive = [weakref.ref(buffer) for buffers in pool.free.values() for buffer in buffers]
    got, taken = _buffers_taken(pool, lambda: model.forward(images))
    assert taken and set(taken) <= held
    assert all(ref() is not None and any(ref() is b for b in pool.free[ref().dtype]) for ref in alive)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_concurrent_predictions_use_separate_pools():
    rng = np.random.default_rng(9)
    model = _small_residual_model()
    inputs = [rng.standard_normal((3, 3, 8, 8)).astype(np.float32) for _ in range(4)]
    expected = [model.forward(x).copy() for x in inputs]
    results = {}

    def work(k):
        for _ in range(20):
            results[k] = model.forward(inputs[k])
            np.testing.assert_allclose(results[k], expected[k], rtol=1e-6)

    assert not errors_in_threads(work, 4)


def test_copies_and_pickles_rebuild_their_plans():
    import copy
    import pickle

    rng = np.random.default_rng(10)
    model = _small_residual_model()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = model.forward(x).copy()
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert "_plans" not in clone.graph.__dict__  # nothing keyed by the original's object ids
        np.testing.assert_array_equal(clone.forward(x), expected)
        steps = clone.graph.inference_plan()
        assert all(t in clone.graph.nodes or isinstance(t, FusedConv) for t in steps)
        fused = [s for s in steps if isinstance(s, FusedConv)]
        assert fused and all(any(s.conv is n for n in clone.graph.nodes) for s in fused)


def test_pooled_buffers_read_through_reshapes_are_not_reused_early():
    """A detection head: convolutions on their own (their outputs from the buffer pool), each
    read by a reshape (a view of the pooled buffer), joined by a concatenation, beside a second
    output: the fused calls, reusing the pool's buffers, give what every node on its own gives.
    (The pool keeps each lent view alive, so that an array reusing a dropped view's id cannot
    hand a buffer back while another view reads it: YOLOv8's segmentation head in
    captcha-recognizer's slider.onnx computed wrong boxes before; bench/pretrained.py checks it.)"""
    import cnnlab
    from cnnlab import layers as L

    rng = np.random.default_rng(0)
    x = cnnlab.Input((3, 32, 32))
    heads, h = [], x
    for k in range(3):
        h = L.ReLU()(L.Conv2D(3 if k == 0 else 8, 8, 3, stride=2, padding=1, seed=k)(h))
        lone = L.Conv2D(8, 6, 1, seed=10 + k)(h)
        heads.append(L.Reshape((6, -1))(lone))
    joined = L.Concatenate(axis=2)(heads)
    proto = L.Conv2D(8, 4, 3, padding=1, seed=20)(h)
    model = cnnlab.Model(x, [joined, proto])
    images = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    expected = model.graph.forward([images], observe=lambda node, value: None)  # every node on its own
    for _ in range(3):  # later calls reuse the pool's buffers
        got = model.graph.forward([images])
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_lending_takes_back_scratch_arrays_and_leaves_kept_ones():
    """Inside ``BufferPool.lending`` the op's allocations come from the pool; afterwards the
    scratch arrays nothing holds are free again, while the result, an array the op kept, and
    a buffer still read through a view stay out of the free list."""
    from cnnlab.fusion import BufferPool
    from cnnlab.kernels import cpu

    pool, kept = BufferPool(), []

    def op():
        dropped = cpu.empty((4, 5), np.float32)
        dropped[...] = 1
        kept.append(cpu.empty((3,), np.float32))
        kept.append(cpu.empty((2, 6), np.float32).reshape(12))  # a view of the buffer escapes
        result = cpu.empty((7,), np.float32)
        result[...] = dropped.sum()
        return result

    result = pool.lending(op)
    assert result[0] == 20 and id(result) in pool.lent
    free = pool.free[np.dtype(np.float32)]
    assert [b.size for b in free] == [20]  # the dropped scratch array only
    assert all(not np.shares_memory(b, a) for b in free for a in kept + [result])
    lent = dict(pool.lent)
    cpu.empty((2,), np.float32)
    assert pool.lent == lent  # lending ended: new arrays again
    pool.give(result)
    assert sorted(b.size for b in pool.free[np.dtype(np.float32)]) == [7, 20]


def test_pool_hands_out_its_views_again_and_reclaims_buffers_that_have_several():
    """A shape asked for again gets the view made the first time; a scratch array whose buffer
    has views of two shapes comes back once dropped, one whose view escapes does not."""
    from cnnlab.fusion import BufferPool
    from cnnlab.kernels import cpu

    pool = BufferPool()
    first = pool.take((4, 5), np.float32)
    pool.give(first)
    second = pool.take((2, 10), np.float32)  # the same buffer, another shape
    assert second.shape == (2, 10) and np.shares_memory(first, second)
    pool.give(second)
    assert pool.take((4, 5), np.float32) is first
    pool.give(first)
    del first, second  # given back: nothing of the caller's holds them any more

    def op(keep):
        scratch = cpu.empty((2, 10), np.float32)
        scratch[...] = 2
        if keep is not None:
            keep.append(scratch[0])
        result = cpu.empty((3,), np.float32)
        result[...] = scratch.sum()
        return result

    result = pool.lending(op, None)
    assert result[0] == 40 and [b.size for b in pool.free[np.dtype(np.float32)]] == [20]
    kept = []
    pool.lending(op, kept)
    assert pool.free[np.dtype(np.float32)] == [] and kept[0].base.size == 20
    pool.trim()
    assert pool.views == {}  # the buffers this call did not give back are the caller's


def test_steps_other_than_convolutions_write_into_pooled_buffers(monkeypatch):
    """Concatenation, addition, pooling and resizing steps take their outputs from the pool on
    later calls, and the results stay those of every node on its own."""
    monkeypatch.setattr(config, "PREPARE", False)  # (the plain walk's pool: prepared plans keep arrays of their own)
    rng = np.random.default_rng(3)
    x = cnnlab.Input((3, 8, 8))
    a = L.ReLU()(L.Conv2D(3, 4, 3, padding=1, seed=1)(x))
    b = L.Conv2D(3, 4, 1, seed=2)(x)
    h = L.Add()([L.Concatenate()([a, b]), L.Concatenate()([b, a])])
    h = L.MaxPool2D(2)(L.Sigmoid()(h))
    h = L.Resize(scale=2.0)(h)
    model = cnnlab.Model(x, L.Conv2D(8, 2, 3, padding=1, seed=3)(h))
    images = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    expected = model.graph.forward([images], observe=lambda node, value: None)[0]
    pool = model.graph.buffer_pool()
    model.forward(images)
    held = {id(buffer) for buffers in pool.free.values() for buffer in buffers}
    got, taken = _buffers_taken(pool, lambda: model.forward(images))
    assert len(taken) >= 7 and set(taken) <= held  # every step's output from a pooled buffer
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("has_bias", [True, False])
def test_fold_batch_norm_kernels_match_the_definition(dtype, has_bias):
    """The inference plan folds a batch norm into the convolution before it with one kernel call:
    ``scale = gamma / sqrt(var + eps)``, ``shift = beta + (bias - mean) * scale`` in float64, on
    the CPU and (the simulator here) the GPU."""
    import cnnlab.kernels.cpu as cpu
    import cnnlab.kernels.cuda as cuda

    rng = np.random.default_rng(4)
    gamma, beta, mean, bias = (rng.standard_normal(7).astype(dtype) for _ in range(4))
    variance = rng.uniform(0.1, 2, 7).astype(dtype)
    f64 = [a.astype(np.float64) for a in (gamma, beta, mean, variance, bias)]
    scale_64 = f64[0] / np.sqrt(f64[3] + 1e-3)
    expected = (scale_64.astype(dtype), (f64[1] + ((f64[4] if has_bias else 0) - f64[2]) * scale_64).astype(dtype))
    scale, shift = np.empty(7, dtype), np.empty(7, dtype)
    cpu.fold_batch_norm(gamma, beta, mean, variance, bias, has_bias, 1e-3, scale, shift)
    np.testing.assert_array_equal(scale, expected[0])
    np.testing.assert_array_equal(shift, expected[1])
    on_device = [cnnlab.to_device(a) for a in (gamma, beta, mean, variance, bias)]
    scale_d, shift_d = cuda.empty((7,), dtype), cuda.empty((7,), dtype)
    cuda.fold_batch_norm(*on_device, has_bias, 1e-3, scale_d, shift_d)
    tol = dict(rtol=1e-6) if dtype == np.float32 else dict(rtol=1e-13)
    np.testing.assert_allclose(cnnlab.to_host(scale_d), expected[0], **tol)
    np.testing.assert_allclose(cnnlab.to_host(shift_d), expected[1], **tol, atol=1e-7)


def test_a_lending_call_inside_another_puts_the_outer_lender_back():
    """A model called inside a step lends from its own pool, then the step's pool lends again."""
    from cnnlab.fusion import BufferPool
    from cnnlab.kernels import cpu

    outer, inner = BufferPool(), BufferPool()

    def step():
        first = cpu.empty((3,), np.float32)
        inner.lending(lambda: cpu.empty((4,), np.float32))
        second = cpu.empty((5,), np.float32)
        return first, second

    first, second = outer.lending(step)
    assert id(first) in outer.lent and id(second) in outer.lent
    assert len(inner.lent) == 1
    assert cpu.empty((2,), np.float32).base is None  # no lender after the outermost call


def _pairs_network():
    """Convolutions followed by a ReLU alone (two), by a ReLU and an Add, by a batch
    normalization; ReLUs read by a max pooling alone (after a convolution, after a batch
    normalization), and one read by a max pooling and an Add."""
    x = cnnlab.Input((3, 8, 8))
    first = L.Conv2D(3, 4, 3, padding=1, seed=1)(x)
    a = L.ReLU()(first)
    second = L.Conv2D(4, 4, 3, padding=1, seed=2)(a)
    b = L.ReLU()(second)
    pooled = L.MaxPool2D(2)(b)  # 2x2 windows at stride 2: their own kernel
    shared = L.Conv2D(4, 4, 1, seed=3)(pooled)
    c = L.Add()([L.ReLU()(shared), shared])
    normed = L.ReLU()(L.BatchNorm2D(4)(L.Conv2D(4, 4, 3, padding=1, seed=4)(c)))
    overlapping = L.MaxPool2D(3, 1, 1)(normed)  # the general kernel, windows that share elements
    third = L.Conv2D(4, 4, 3, padding=1, seed=5)(overlapping)
    t = L.ReLU()(third)
    both = L.Add()([L.MaxPool2D(3, 1, 1)(t), t])
    out = L.Dense(4 * 4 * 4, 3, seed=6)(L.Flatten()(both))
    return cnnlab.Model(x, out), (first, a, second, b, pooled, normed, overlapping, third, t)


def test_training_runs_each_conv_with_the_relu_that_alone_reads_it_and_trains_the_same(monkeypatch):
    # a convolution read by a ReLU alone writes max(x, 0) itself (one pass less); one read by two
    # nodes, one followed by a batch normalization and one whose output is a target do not. A
    # max pooling alone reading a ReLU's output applies its mask in the backward's scatter, a
    # convolution in its input gradient.
    model, (first, a, second, b, pooled, normed, overlapping, third, t) = _pairs_network()
    graph = model.graph

    def ids(*tensors):
        return {id(node) for node in graph.nodes if any(node.output is tensor for tensor in tensors)}

    fused = graph.training_fusion(graph.outputs)
    assert fused.convs == ids(first, second, third) and fused.relus == ids(a, b, t)
    assert fused.pools == ids(pooled, overlapping) and fused.masked == ids(second)
    assert fused.through == ids(a, b, normed)  # a: read by the second convolution alone
    wanted = graph.training_fusion([graph.outputs[0], second, b])  # tensors wanted as they are
    assert wanted.convs == ids(first, third) and wanted.relus == ids(a, t)
    assert wanted.pools == ids(overlapping) and wanted.masked == ids(second)
    assert wanted.through == ids(a, normed)
    monkeypatch.setattr(config, "FUSE", False)
    assert graph.training_fusion(graph.outputs) == TrainingFusion()

    rng = np.random.default_rng(0)
    data, labels = rng.standard_normal((16, 3, 8, 8)).astype(np.float32), rng.integers(0, 3, 16)
    trained = []
    for fuse in (True, False):
        monkeypatch.setattr(config, "FUSE", fuse)
        model, _ = _pairs_network()  # the same seeded weights each time
        history = model.fit(data, labels, epochs=2, batch_size=8, optimizer=cnnlab.optim.SGD(0.05), shuffle=False,
                            verbose=0)
        trained.append((history.history["loss"], [value for layer in model.layers for value in layer.params.values()]))
    (fused_loss, fused_params), (plain_loss, plain_params) = trained
    assert fused_loss == plain_loss
    assert all(np.array_equal(p, q) for p, q in zip(fused_params, plain_params))


def test_inference_toward_an_inner_tensor_returns_it_outside_the_pool(monkeypatch):
    """A forward toward a tensor inside the network (an evaluation reads the logits before the
    softmax this way) runs the fused plan up to it, and the array it returns is the caller's:
    later calls never write into it."""
    monkeypatch.setattr(config, "PREPARE", False)  # (the plain walk's pool: prepared plans keep arrays of their own)
    rng = np.random.default_rng(11)
    model = _small_residual_model()
    inner = model.graph.outputs[0].node.inputs[0].node.inputs[0]  # the last ReLU's maps, before Flatten
    assert inner.node is not None and type(inner.node.layer).__name__ == "ReLU"
    a, b = (rng.standard_normal((2, 3, 8, 8)).astype(np.float32) for _ in range(2))
    seen = {}
    model.graph.forward([a], observe=lambda node, value: seen.setdefault(id(node.output), value))
    first, = model.graph.forward([a], targets=[inner])
    kept = first.copy()
    np.testing.assert_allclose(first, seen[id(inner)], rtol=1e-5, atol=1e-6)
    for _ in range(2):
        model.graph.forward([b], targets=[inner])
        model.forward(b)
    np.testing.assert_array_equal(first, kept)
    pool = model.graph.buffer_pool()
    assert all(not np.shares_memory(first, buffer) for buffers in pool.free.values() for buffer in buffers)
    held = []
    for _ in range(3):  # the target is never made in a pooled buffer, so the pool keeps all of its own
        model.graph.forward([b], targets=[inner])
        held.append({id(buffer) for buffers in pool.free.values() for buffer in buffers})
    assert held[0] and held[0] == held[1] == held[2]


def _head_model(keepdims, dtype=np.float32, bias=True):
    x = cnnlab.Input((3, 6, 6), dtype=dtype)
    maps = L.ReLU()(L.Conv2D(3, 8, 3, padding=1, seed=1, dtype=dtype)(x))
    pooled = L.GlobalAvgPool2D(keepdims=keepdims)(maps)
    features = L.Flatten()(pooled) if keepdims else pooled
    dense = L.Dense(8, 5, bias=bias, seed=2, dtype=dtype)
    if bias:
        dense.params["bias"][...] = np.arange(1, 6)  # (not the zeros it starts with)
    return cnnlab.Model(x, dense(features))


@pytest.mark.parametrize("keepdims", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("batch", [1, 3])
def test_a_classifier_head_is_one_step_with_the_values_of_its_nodes(keepdims, dtype, batch, monkeypatch):
    """GlobalAvgPool2D (with Flatten where it keeps its dims) then Dense is one FusedHead step,
    which in a model call runs the kernels straight (no layer's forward), with the scores of
    the nodes run one by one, bit for bit, call after call; edited and replaced dense weights
    are seen."""
    from cnnlab.fusion import FusedHead

    through_layers = []
    linear = F.linear
    monkeypatch.setattr(F, "linear", lambda *a, **k: through_layers.append(1) or linear(*a, **k))

    model = _head_model(keepdims, dtype, bias=batch == 1)
    plan = model.graph.inference_plan()
    assert type(plan[-1]) is FusedHead and len(plan) == 2
    x = np.random.default_rng(batch).standard_normal((batch, 3, 6, 6)).astype(dtype)

    def by_nodes():
        return model.graph.forward([x], observe=lambda node, value: None)[0]

    expected = by_nodes()
    assert through_layers
    through_layers.clear()
    np.testing.assert_array_equal(model.forward(x), expected)
    np.testing.assert_array_equal(model.forward(x), expected)
    assert not through_layers
    dense = model.layers[-1]
    dense.params["weight"] *= 2  # edited in place
    np.testing.assert_array_equal(model.forward(x), by_nodes())
    dense.params["weight"] = np.ascontiguousarray(dense.params["weight"][:, ::-1])  # replaced
    np.testing.assert_array_equal(model.forward(x), by_nodes())


def test_a_head_whose_inner_tensors_are_wanted_is_not_fused():
    """The pooled features wanted as an output, or read by another layer too, keep the head's
    nodes apart."""
    from cnnlab.fusion import FusedHead

    x = cnnlab.Input((3, 6, 6))
    pooled = L.GlobalAvgPool2D()(L.Conv2D(3, 8, 3, padding=1, seed=1)(x))
    scores = L.Dense(8, 5, seed=2)(pooled)
    for model in (cnnlab.Model(x, [scores, pooled]), cnnlab.Model(x, L.Add()([scores, L.Dense(8, 5, seed=3)(pooled)]))):
        assert not any(type(step) is FusedHead for step in model.graph.inference_plan())
        images = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
        got = model.forward(images)
        expected = model.graph.forward([images], observe=lambda node, value: None)
        for a, b in zip(got if isinstance(got, tuple) else [got], expected):
            np.testing.assert_array_equal(a, b)


def test_a_head_outside_a_model_call_runs_its_nodes_one_by_one():
    """Run on its own (BLAS not held to one thread by a model call), or on an input the kernels
    do not take straight, the head step runs its nodes: the same scores."""
    from cnnlab.fusion import FusedHead

    model = _head_model(True)
    head = model.graph.inference_plan()[-1]
    assert type(head) is FusedHead
    maps = np.random.default_rng(1).random((2, 8, 6, 6)).astype(np.float32)
    expected = L.Dense.forward(model.layers[-1], maps.mean(axis=(2, 3)).astype(np.float32))
    np.testing.assert_allclose(head.run([maps]), expected, rtol=1e-5, atol=1e-6)
    out = np.full((2, 5), np.nan, np.float32)
    assert head.run([maps[:, :, ::1, ::-1]], out=out) is out  # (a view the kernels do not take)
    np.testing.assert_allclose(out, L.Dense.forward(model.layers[-1], maps.mean(axis=(2, 3))), rtol=1e-5, atol=1e-6)


def test_a_fused_head_follows_a_replaced_dense_layer():
    """Model.replace_head swaps the dense node's layer under a plan already made: the head step
    computes with the new layer."""
    model = _head_model(True)
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 6)).astype(np.float32)
    model.forward(x)  # (the plan made, with the first dense layer)
    model.replace_head(3, seed=5)
    got = model.forward(x)
    assert got.shape == (2, 3)
    np.testing.assert_array_equal(got, model.graph.forward([x], observe=lambda node, value: None)[0])


# --- inverted residual blocks as one step ------------------------------------------------

def _block_model(dtype=np.float32, stride=1, norm=True, size=10, project=True, wanted=(), pooled=False):
    """An inverted residual block (MobileNetV2's): a 1x1 expansion of 8 channels to 32, a
    depthwise 3x3 convolution, each with its normalization (``norm``) and ReLU6, then (with
    ``project``) a 1x1 projection back to 8 channels, with the block's input added at stride 1.
    ``wanted``: names of inner tensors the model returns too (``"expanded"``, ``"depthwise"``);
    ``pooled``: the model returns the block's output through a global average pooling (so that
    the block's output is a buffer of the pool)."""
    x = cnnlab.Input((8, size, size), dtype=dtype)

    def layer(conv, inputs, activation=True):
        h = conv(inputs)
        h = L.BatchNorm2D(conv.out_channels, dtype=dtype)(h) if norm else h
        return L.ReLU6()(h) if activation else h

    tensors = {"expanded": layer(L.Conv2D(8, 32, 1, bias=not norm, seed=1, dtype=dtype), x)}
    tensors["depthwise"] = layer(L.Conv2D(32, 32, 3, stride=stride, padding=1, groups=32, bias=not norm, seed=2,
                                          dtype=dtype), tensors["expanded"])
    out = tensors["depthwise"]
    if project:
        out = layer(L.Conv2D(32, 8, 1, bias=not norm, seed=3, dtype=dtype), out, activation=False)
        out = L.Add()([out, x]) if stride == 1 else out
    out = L.GlobalAvgPool2D()(out) if pooled else out
    model = cnnlab.Model(x, [out] + [tensors[name] for name in wanted] if wanted else out)
    _randomize_norms(model, np.random.default_rng(3))
    return model


def _pairs_run(monkeypatch):
    """A list to which each straight call of a block (``run_conv2d_pair_on_layer``) adds the
    count of kernels it ran."""
    from cnnlab.kernels import cpu as cpu_kernels

    calls, real = [], cpu_kernels.run_conv2d_pair_on_layer
    monkeypatch.setattr(cpu_kernels, "run_conv2d_pair_on_layer", lambda *kernels: calls.append(len(kernels))
                        or real(*kernels))
    return calls


def _by_nodes(model, x):
    return model.graph.forward([x], observe=lambda node, value: None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride, size, batch, row_blocks", [(1, 10, 1, False), (2, 10, 1, False), (1, 16, 2, False),
                                                            (2, 17, 3, False), (1, 16, 1, True)])
@pytest.mark.parametrize("norm", [True, False])
def test_an_inverted_residual_block_is_one_step_with_the_values_of_its_nodes(dtype, stride, size, batch, row_blocks,
                                                                             norm, monkeypatch):
    """Expansion, depthwise convolution and projection (with its residual at stride 1) are one
    FusedConvPair step, which from its second call runs the three kernels as one call (with two
    threads), with the values of the nodes run one by one, call after call; weights edited in
    place, and replaced, are seen. The depthwise layers take both of their paths (channel
    blocks on small maps, one channel an item on larger ones, or a row of one)."""
    from cnnlab.fusion import FusedConvPair
    from cnnlab.parallel import thread_count

    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1)  # (two threads however small the work)
    if row_blocks:  # (the depthwise convolution's items a row each)
        monkeypatch.setattr(config, "IM2COL_MAX_BYTES", 1)
    calls = _pairs_run(monkeypatch)
    model = _block_model(dtype, stride, norm, size)
    plan = model.graph.inference_plan()
    assert [type(step) for step in plan] == [FusedConvPair]
    assert len(plan[0].steps) == 3 and plan[0].inputs[1:] == ([model.graph.inputs[0]] if stride == 1 else [])
    x = np.random.default_rng(batch).standard_normal((batch, 8, size, size)).astype(dtype)
    tolerance = dict(rtol=1e-5, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    expected = _by_nodes(model, x)[0]
    for _ in range(3):
        np.testing.assert_allclose(model.forward(x), expected, **tolerance)
    assert calls == ([3, 3] if thread_count() > 1 else [])  # from the second call, straight
    expanded = model.layers[0]
    expanded.params["weight"] *= -1  # edited in place
    np.testing.assert_allclose(model.forward(x), _by_nodes(model, x)[0], **tolerance)
    expanded.params["weight"] = expanded.params["weight"] * 2  # replaced by an array of the same kind
    np.testing.assert_allclose(model.forward(x), _by_nodes(model, x)[0], **tolerance)
    assert len(calls) == (4 if thread_count() > 1 else 0)
    expanded.params["weight"] = np.asfortranarray(expanded.params["weight"] * 2)  # one no bound call takes
    for _ in range(3):
        np.testing.assert_allclose(model.forward(x), _by_nodes(model, x)[0], **tolerance)
    assert len(calls) == (4 if thread_count() > 1 else 0)


@pytest.mark.parametrize("wanted, steps", [(("expanded",), None), (("depthwise",), 2), ((), 2)])
def test_a_block_whose_inner_tensors_are_wanted_keeps_those_steps_apart(wanted, steps, monkeypatch):
    """The expansion's output wanted as an output: no block step; the depthwise one's: a block
    step of the first two; no projection: the same."""
    from cnnlab.fusion import FusedConvPair

    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1)
    model = _block_model(project=not (steps == 2 and not wanted), wanted=wanted)
    blocks = [step for step in model.graph.inference_plan() if type(step) is FusedConvPair]
    assert [len(step.steps) for step in blocks] == ([] if steps is None else [steps])
    x = np.random.default_rng(0).standard_normal((1, 8, 10, 10)).astype(np.float32)
    for _ in range(3):
        got = model.forward(x)
        for a, b in zip(got if isinstance(got, tuple) else [got], _by_nodes(model, x)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_a_block_on_one_thread_runs_its_steps_and_gives_its_buffers_back(monkeypatch):
    """With one thread the block step runs its three steps one after the other (no call as
    one), with the same values; either way the buffers between them go back to the pool, which
    keeps the same buffers from call to call."""
    monkeypatch.setattr(config, "PREPARE", False)  # (the plain walk's pool: prepared plans keep arrays of their own)
    import numba

    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1)
    calls = _pairs_run(monkeypatch)
    model = _block_model(pooled=True)
    x = np.random.default_rng(5).standard_normal((1, 8, 10, 10)).astype(np.float32)
    expected = _by_nodes(model, x)[0]
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        for _ in range(3):
            np.testing.assert_allclose(model.forward(x), expected, rtol=1e-5, atol=1e-5)
    finally:
        numba.set_num_threads(threads)
    assert calls == []
    pool = model.graph.buffer_pool()
    for _ in range(3):
        model.forward(x)
    held = {id(buffer) for buffers in pool.free.values() for buffer in buffers}
    got, taken = _buffers_taken(pool, lambda: model.forward(x))
    assert taken and set(taken) <= held
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_block_whose_projection_did_not_join_runs_it_after_the_pair(monkeypatch):
    """Bound without its projection (whose work did not fit one even share a thread), the block
    step runs the expansion and the depthwise convolution as one call, then the projection on
    its own: the values of the nodes."""
    from cnnlab.functional.conv import bind_conv2d_pair
    from cnnlab.parallel import thread_count

    if thread_count() < 2:
        pytest.skip("one thread: no pair")
    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1)
    calls = _pairs_run(monkeypatch)
    model = _block_model(pooled=True)
    x = np.random.default_rng(6).standard_normal((1, 8, 10, 10)).astype(np.float32)
    expected = _by_nodes(model, x)[0]
    model.forward(x)
    block = model.graph.inference_plan()[0]
    assert block.pair is not None and block.pair.third is block.third.bound
    block.pair = bind_conv2d_pair(block.first.bound, block.second.bound)  # (the projection apart)
    calls.clear()
    for _ in range(2):
        np.testing.assert_allclose(model.forward(x), expected, rtol=1e-5, atol=1e-5)
    assert calls == [2, 2]


def test_a_block_on_the_gpu_runs_its_steps_and_equals_the_cpu():
    """On device arrays the block step runs its three steps one after the other (no bound call
    takes them): the CPU's values."""
    model = _block_model(size=4, pooled=True)
    x = np.random.default_rng(7).standard_normal((1, 8, 4, 4)).astype(np.float32)
    cpu = model.forward(x)
    cpu = model.forward(x)  # (bound on the host by now)
    gpu = cnnlab.to_host(model.to("cuda").forward(cnnlab.to_device(x)))
    np.testing.assert_allclose(gpu, cpu, rtol=1e-5, atol=1e-5)


def test_a_projection_followed_by_a_depthwise_convolution_stays_in_its_own_block(monkeypatch):
    """1x1 -> depthwise -> 1x1 -> depthwise -> 1x1: the middle 1x1 convolution is the first
    block's projection, not the start of another; the plan computes what the nodes do."""
    from cnnlab.fusion import FusedConvPair

    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1)
    x = cnnlab.Input((16, 8, 8))
    h = x
    for seed in range(2):
        h = L.ReLU6()(L.Conv2D(16, 16, 3, padding=1, groups=16, seed=2 * seed + 2)(L.Conv2D(16, 16, 1, seed=2 * seed + 1)(h)))
    model = cnnlab.Model(x, L.GlobalAvgPool2D()(L.Conv2D(16, 16, 1, seed=9)(h)))
    plan = model.graph.inference_plan()
    blocks = [step for step in plan if type(step) is FusedConvPair]
    assert [len(step.steps) for step in blocks] == [3]
    assert {id(m) for step in plan for m in getattr(step, "members", [step])} == {id(n) for n in model.graph.nodes}
    images = np.random.default_rng(9).standard_normal((1, 16, 8, 8)).astype(np.float32)
    for _ in range(3):
        np.testing.assert_allclose(model.forward(images), _by_nodes(model, images)[0], rtol=1e-5, atol=1e-5)
