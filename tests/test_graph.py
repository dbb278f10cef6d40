"""Graph models: symbolic tensors, the one executor, shared layers, saving, and bad graphs."""

import json

import numpy as np
import pytest
from naive import numeric_gradient

import cnnlab
import cnnlab.functional as F
from cnnlab import layers as L
from cnnlab import optim

DTYPE = "float64"


def residual_block():
    """conv-relu, then h + relu(conv(h)): the ResNet shortcut."""
    x = cnnlab.Input((2, 5, 5), dtype=DTYPE)
    a, b, head = L.Conv2D(2, 3, 3, padding=1, dtype=DTYPE, seed=1), L.Conv2D(3, 3, 3, padding=1, dtype=DTYPE,
                                                                              seed=2), L.Dense(3, 2, dtype=DTYPE, seed=3)
    h = L.ReLU()(a(x))
    y = L.Add()([h, L.ReLU()(b(h))])
    model = cnnlab.Model(x, head(L.GlobalAvgPool2D()(y)))

    def by_hand(v):
        h = F.relu(F.conv2d(v, a.weight, a.bias, padding=1))
        y = F.add(h, F.relu(F.conv2d(h, b.weight, b.bias, padding=1)))
        return F.linear(F.global_avg_pool2d(y), head.weight, head.bias)

    return model, by_hand


def fire_module():
    """SqueezeNet: a 1x1 squeeze, then 1x1 and 3x3 expansions joined along the channels."""
    x = cnnlab.Input((2, 5, 5), dtype=DTYPE)
    squeeze = L.Conv2D(2, 2, 1, dtype=DTYPE, seed=1)
    one, three = L.Conv2D(2, 2, 1, dtype=DTYPE, seed=2), L.Conv2D(2, 3, 3, padding=1, dtype=DTYPE, seed=3)
    head = L.Dense(5, 2, dtype=DTYPE, seed=4)
    s = L.ReLU()(squeeze(x))
    y = L.Concatenate(axis=1)([L.ReLU()(one(s)), L.ReLU()(three(s))])
    model = cnnlab.Model(x, head(L.GlobalAvgPool2D()(y)))

    def by_hand(v):
        s = F.relu(F.conv2d(v, squeeze.weight, squeeze.bias))
        y = F.concatenate([F.relu(F.conv2d(s, one.weight, one.bias)),
                           F.relu(F.conv2d(s, three.weight, three.bias, padding=1))], axis=1)
        return F.linear(F.global_avg_pool2d(y), head.weight, head.bias)

    return model, by_hand


def squeeze_excitation():
    """MobileNetV3's gate: channel means -> 1x1 convs -> hard sigmoid, times the feature maps."""
    x = cnnlab.Input((2, 4, 4), dtype=DTYPE)
    conv = L.Conv2D(2, 4, 3, padding=1, dtype=DTYPE, seed=1)
    reduce, expand = L.Conv2D(4, 2, 1, dtype=DTYPE, seed=2), L.Conv2D(2, 4, 1, dtype=DTYPE, seed=3)
    head = L.Dense(4, 2, dtype=DTYPE, seed=4)
    y = conv(x)
    gate = L.HardSigmoid()(expand(L.ReLU()(reduce(L.GlobalAvgPool2D(keepdims=True)(y)))))
    model = cnnlab.Model(x, head(L.GlobalAvgPool2D()(L.Multiply()([y, gate]))))

    def by_hand(v):
        y = F.conv2d(v, conv.weight, conv.bias, padding=1)
        pooled = F.global_avg_pool2d(y).reshape(y.shape[0], 4, 1, 1)
        gate = F.hardsigmoid(F.conv2d(F.relu(F.conv2d(pooled, reduce.weight, reduce.bias)), expand.weight,
                                      expand.bias))
        return F.linear(F.global_avg_pool2d(F.multiply(y, gate)), head.weight, head.bias)

    return model, by_hand


def shared_layer():
    """One convolution called by two branches: one layer, two nodes, one set of weights."""
    x = cnnlab.Input((2, 4, 4), dtype=DTYPE)
    conv, head = L.Conv2D(2, 2, 3, padding=1, dtype=DTYPE, seed=1), L.Dense(2, 2, dtype=DTYPE, seed=2)
    y = L.Add()([conv(L.ReLU()(x)), conv(L.Tanh()(x))])
    model = cnnlab.Model(x, head(L.GlobalAvgPool2D()(y)))

    def by_hand(v):
        y = F.add(F.conv2d(F.relu(v), conv.weight, conv.bias, padding=1),
                  F.conv2d(F.tanh(v), conv.weight, conv.bias, padding=1))
        return F.linear(F.global_avg_pool2d(y), head.weight, head.bias)

    return model, by_hand


BUILDERS = [residual_block, fire_module, squeeze_excitation, shared_layer]


def sample(model, count=3, seed=0):
    shape = model.input_shape
    return np.random.default_rng(seed).normal(size=(count, *shape))


@pytest.mark.parametrize("build", BUILDERS)
def test_forward_equals_the_computation_by_hand(build):
    model, by_hand = build()
    x = sample(model)
    np.testing.assert_allclose(model(x), by_hand(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(model.forward(x, training=True), by_hand(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("build", BUILDERS)
def test_backward_equals_finite_differences(build):
    model, _ = build()
    rng = np.random.default_rng(1)
    for layer in model.layers:  # no pre-activation exactly at a ReLU's kink (zero inputs, zero bias)
        if "bias" in layer.params:
            layer.params["bias"] = rng.normal(scale=0.1, size=layer.bias.shape)
    x = sample(model, count=2)
    weights = rng.normal(size=(2, 2))
    model.forward(x, training=True)
    grad_x = model.backward(weights)
    analytic = {(id(layer), name): np.array(layer.grads[name]) for layer, name in model.parameters()}

    def loss():
        return float((model(x) * weights).sum())

    np.testing.assert_allclose(grad_x, numeric_gradient(loss, x), rtol=1e-5, atol=1e-8)
    for layer, name in model.parameters():
        np.testing.assert_allclose(analytic[id(layer), name], numeric_gradient(loss, layer.params[name]),
                                   rtol=1e-5, atol=1e-8, err_msg=f"{type(layer).__name__}.{name}")


def test_a_layer_called_twice_is_one_layer_with_summed_gradients():
    model, _ = shared_layer()
    conv = model.layers[1]
    assert [type(layer).__name__ for layer in model.layers[:3]] == ["ReLU", "Conv2D", "Tanh"]
    assert [type(layer).__name__ for layer in model.layers].count("Conv2D") == 1
    assert len(model._graph.nodes) == len(model.layers) + 1  # the convolution has two nodes
    assert model.parameter_count() == conv.parameter_count() + 2 * 2 + 2


def test_fit_lowers_the_loss_of_a_residual_network():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(48, 1, 6, 6)).astype(np.float32)
    y = (x[:, 0, :3].mean(axis=(1, 2)) > x[:, 0, 3:].mean(axis=(1, 2))).astype(np.int64)
    inputs = cnnlab.Input((1, 6, 6))
    h = L.ReLU()(L.Conv2D(1, 4, 3, padding=1, seed=0)(inputs))
    h = L.Add()([h, L.ReLU()(L.Conv2D(4, 4, 3, padding=1, seed=1)(h))])
    outputs = L.Softmax()(L.Dense(4 * 6 * 6, 2, seed=2)(L.Flatten()(h)))
    model = cnnlab.Model(inputs, outputs)
    history = model.fit(x, y, epochs=6, batch_size=8, optimizer=optim.Adam(1e-2), seed=0, verbose=0,
                        validation_split=0.25, class_weight="balanced")
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert model.evaluate(x, y, batch_size=16)["accuracy"] > 0.7  # several batches
    np.testing.assert_allclose(model.predict_proba(x[:4]).sum(axis=1), 1, rtol=1e-5)
    assert model.predict(x[:4]).shape == (4,)


@pytest.mark.parametrize("build", BUILDERS)
def test_save_load_and_copy_give_identical_outputs(build, tmp_path):
    model, _ = build()
    model.class_names = ["a", "b"]
    model.layers[0].trainable = False
    x = sample(model)
    model.save(tmp_path / "graph.npz")
    loaded = cnnlab.load(tmp_path / "graph.npz")
    twin = model.copy()
    for other in (loaded, twin):
        assert type(other) is cnnlab.Model and other is not model
        np.testing.assert_array_equal(other(x), model(x))
        assert other.summary(print_fn=None) == model.summary(print_fn=None)
        assert [layer.trainable for layer in other.layers] == [layer.trainable for layer in model.layers]
        assert other.class_names == ["a", "b"]
    assert twin.layers[0] is not model.layers[0]
    with np.load(tmp_path / "graph.npz", allow_pickle=False) as archive:
        assert str(archive["cnnlab_format"]) == "cnnlab-graph-1"
        graph = json.loads(str(archive["architecture"]))["graph"]
    assert graph["version"] == 1 and graph["outputs"] == [["node", len(graph["nodes"]) - 1]]


def test_summary_lists_inbound_layers():
    model, _ = residual_block()
    text = model.summary(print_fn=None)
    assert "Connected to" in text
    add_row = next(line for line in text.splitlines() if ": Add" in line)
    assert "1: ReLU, 3: ReLU" in add_row and "(None, 3, 5, 5)" in add_row
    assert "0: Conv2D" in text and "input" in next(line for line in text.splitlines() if "0: Conv2D" in line)
    assert "Connected to" not in cnnlab.Sequential([L.Flatten(), L.Dense(4, 2)], input_shape=(4,)).summary(
        print_fn=None)


def test_sequential_is_a_chain_of_the_same_graph(tmp_path):
    layers = [L.Conv2D(1, 2, 3, seed=0), L.ReLU(), L.Flatten(), L.Dense(2 * 3 * 3, 3, seed=1), L.Softmax()]
    model = cnnlab.Sequential(layers, input_shape=(1, 5, 5))
    assert isinstance(model, cnnlab.Model)
    assert model.layers == layers and [node.layer for node in model._graph.nodes] == layers
    x = np.random.default_rng(0).random((2, 1, 5, 5)).astype(np.float32)
    expected = x
    for layer in layers:
        expected = layer.forward(expected)
    np.testing.assert_array_equal(model(x), expected)
    model.save(tmp_path / "chain.npz")
    with np.load(tmp_path / "chain.npz", allow_pickle=False) as archive:  # today's layer-list form
        assert str(archive["cnnlab_format"]) == "cnnlab-model-1"
        assert "graph" not in json.loads(str(archive["architecture"]))
    assert type(cnnlab.load(tmp_path / "chain.npz")) is cnnlab.Sequential


def test_a_layer_list_file_written_before_graphs_still_loads(tmp_path):
    conv, dense = L.Conv2D(1, 2, 3, seed=0), L.Dense(2 * 3 * 3, 3, seed=1)
    architecture = {"layers": [{"type": "Conv2D", "config": conv.config(), "trainable": False},
                               {"type": "ReLU", "config": {}, "trainable": True},
                               {"type": "Flatten", "config": {}, "trainable": True},
                               {"type": "Dense", "config": dense.config(), "trainable": True}],
                    "input_shape": [1, 5, 5], "class_names": ["a", "b", "c"], "preprocessing": None}
    np.savez(tmp_path / "old.npz", cnnlab_format=np.array("cnnlab-model-1"), cnnlab_version=np.array("0.1.0"),
             architecture=np.array(json.dumps(architecture)),
             **{"param/0/weight": conv.weight, "param/0/bias": conv.bias,
                "param/3/weight": dense.weight, "param/3/bias": dense.bias})
    loaded = cnnlab.load(tmp_path / "old.npz")
    x = np.random.default_rng(0).random((2, 1, 5, 5)).astype(np.float32)
    expected = dense.forward(F.relu(conv.forward(x)).reshape(2, -1))
    np.testing.assert_array_equal(loaded(x), expected)
    assert loaded.class_names == ["a", "b", "c"] and not loaded.layers[0].trainable


def test_a_layer_repeated_in_a_sequential_saves_as_a_graph(tmp_path):
    relu = L.ReLU()
    model = cnnlab.Sequential([relu, L.Flatten(), relu, L.Dense(4, 2, seed=0)], input_shape=(1, 2, 2))
    model.save(tmp_path / "m.npz")
    loaded = cnnlab.load(tmp_path / "m.npz")
    x = np.random.default_rng(0).normal(size=(3, 1, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))


def test_several_inputs_and_outputs():
    a, b = cnnlab.Input((3,), dtype=DTYPE, name="left"), cnnlab.Input((3,), dtype=DTYPE, name="right")
    dense = L.Dense(3, 2, dtype=DTYPE, seed=0)
    total = L.Add()([a, b])
    model = cnnlab.Model([a, b], [dense(total), L.Tanh()(total)])
    x1, x2 = np.random.default_rng(0).normal(size=(2, 4, 3))
    first, second = model(x1, x2)
    np.testing.assert_allclose(first, F.linear(x1 + x2, dense.weight, dense.bias))
    np.testing.assert_allclose(second, np.tanh(x1 + x2))
    model.forward([x1, x2], training=True)
    g1, g2 = np.ones((4, 2)), np.ones((4, 3))
    grad_a, grad_b = model.backward([g1, g2])
    expected = g1 @ dense.weight + g2 * (1 - np.tanh(x1 + x2) ** 2)  # the sum over both outputs
    np.testing.assert_allclose(grad_a, expected)
    np.testing.assert_allclose(grad_b, expected)
    assert "left" in model.summary(print_fn=None)
    with pytest.raises(ValueError, match="one input and one output"):
        model.fit([x1, x2], np.zeros(4, int), verbose=0)
    with pytest.raises(ValueError, match="takes 2 inputs, got 1"):
        model(x1)


def test_only_the_needed_gradients_are_computed():
    model, _ = residual_block()
    x = sample(model, count=2)
    model.forward(x, training=True)
    assert model._graph.backward({id(model.outputs[0]): np.ones((2, 2))}, input_grads=False) == [None]
    assert model.layers[0].input_grad  # switched off for that call only
    assert model._graph.backward({id(model.outputs[0]): np.ones((2, 2))})[0].shape == x.shape


def test_a_final_softmax_is_left_to_the_loss():
    model, _ = residual_block()
    outputs = L.Softmax()(model.outputs[0])
    classifier = cnnlab.Model(model.inputs, outputs)
    assert classifier.loss_input(cnnlab.losses.get("cross_entropy")) is model.outputs[0]
    assert classifier.loss_input(cnnlab.losses.get("mse")) is outputs


def test_a_dropout_called_twice_draws_a_mask_per_node():
    x = cnnlab.Input((200,))
    drop = L.Dropout(0.5)
    model = cnnlab.Model(x, L.Concatenate(axis=1)([drop(x), drop(x)]))
    out, = model._graph.forward([np.ones((1, 200), np.float32)], training=True, seed=7)
    assert not np.array_equal(out[:, :200] == 0, out[:, 200:] == 0)
    again, = model._graph.forward([np.ones((1, 200), np.float32)], training=True, seed=7)
    np.testing.assert_array_equal(again, out)
    assert drop.step_seed is None  # the seed is set for the call only


def test_replace_head_swaps_the_dense_layer_feeding_the_output():
    model, _ = residual_block()
    outputs = L.Softmax()(L.Dropout(0.1)(model.outputs[0]))
    classifier = cnnlab.Model(model.inputs, outputs)
    old = classifier.layers[-3]
    classifier.replace_head(5, seed=0)
    assert isinstance(classifier.layers[-3], L.Dense) and classifier.layers[-3] is not old
    assert classifier(sample(classifier)).shape == (3, 5) and classifier.outputs[0].shape == (None, 5)
    fire, _ = fire_module()
    no_head = cnnlab.Model(fire.inputs, fire._graph.nodes[-3].output)  # ends at the Concatenate
    with pytest.raises(ValueError, match="no Dense layer feeding its output"):
        no_head.replace_head(3)


def test_feature_maps_follow_the_graph(tmp_path):
    pytest.importorskip("matplotlib")
    from cnnlab import viz

    model, _ = fire_module()
    x = sample(model, count=1)
    seen = model.layer_outputs(x)
    assert [type(layer).__name__ for _, layer, _ in seen][:3] == ["Conv2D", "ReLU", "Conv2D"]
    assert len(seen) == len(model._graph.nodes)
    assert viz.plot_feature_maps(model, x[0], tmp_path / "maps.png")


def test_bad_graphs_are_refused_clearly():
    x, other = cnnlab.Input((2, 4, 4)), cnnlab.Input((2, 4, 4))
    conv = L.Conv2D(2, 2, 3, padding=1)
    with pytest.raises(ValueError, match=r"outputs\[0\] is not produced from the inputs"):
        cnnlab.Model(x, L.Add()([conv(x), other]))
    with pytest.raises(ValueError, match=r"inputs\[1\].*reaches no output"):
        cnnlab.Model([x, other], conv(x))
    with pytest.raises(ValueError, match=r"inputs\[0\] is the output of Conv2D"):
        cnnlab.Model(conv(x), L.ReLU()(conv(x)))
    with pytest.raises(TypeError, match=r"outputs\[0\] must be a symbolic tensor.*ndarray"):
        cnnlab.Model(x, np.zeros((1, 2, 4, 4)))
    with pytest.raises(TypeError, match=r"Conv2D was called on ndarray.*layer.forward"):
        conv(np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(TypeError, match="Add takes a list"):
        L.Add()(x)
    with pytest.raises(TypeError, match="ReLU takes one symbolic tensor"):
        L.ReLU()([x, x])
    with pytest.raises(ValueError, match=r"Dense cannot take an input of shape \(None, 2, 4, 4\)"):
        L.Dense(8, 2)(x)
    with pytest.raises(ValueError, match="Add cannot take"):
        L.Add()([x, cnnlab.Input((3, 4, 4))])
    model = cnnlab.Model(x, conv(x))
    with pytest.raises(ValueError, match="takes 1 input, got 2"):
        model(np.zeros((1, 2, 4, 4), np.float32), np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(TypeError, match="symbolic"):
        model(x)
    with pytest.raises(ValueError, match="positive integers"):
        cnnlab.Input((0, 4))
    with pytest.raises(TypeError, match="dtype"):
        cnnlab.Input((2,), dtype="complex64")
    assert cnnlab.Input((2,), dtype="int32").dtype == np.int32  # token ids, bytes
    with pytest.raises(RuntimeError, match="forward"):
        cnnlab.Model(x, L.ReLU()(x)).backward(np.ones((1, 2, 4, 4)))


@pytest.mark.usefixtures("small_cuda_launches")
def test_a_residual_model_on_the_gpu_gives_the_cpu_result():
    model, _ = residual_block()
    gpu = model.copy().to("cuda")
    x = sample(model, count=2)
    np.testing.assert_allclose(cnnlab.to_host(gpu(cnnlab.to_device(x))), model(x), rtol=1e-12)
    y = np.array([0, 1])
    for each in (model, gpu):
        each.fit(x, y, epochs=1, batch_size=2, optimizer=optim.SGD(0.1), seed=0, verbose=0)
    gpu.to("cpu")
    for a, b in zip(model.layers, gpu.layers):
        for name in a.params:
            np.testing.assert_allclose(b.params[name], a.params[name], rtol=1e-10, atol=1e-12)


def test_the_models_page_runs(capsys):
    import pathlib
    import re

    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "models.md"
    namespace = {}
    for block in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S):
        exec(compile(block, "docs/models.md", "exec"), namespace)
    shown = capsys.readouterr().out
    assert "(None, 16, 32, 32)" in shown and "(4, 10)" in shown and "Connected to" in shown
    assert "\n4\n" in shown and shown.rstrip().endswith("True")


def test_an_identity_after_the_softmax_still_feeds_cross_entropy_the_logits():

    rng = np.random.default_rng(11)
    x = rng.random((8, 1, 5, 5))
    y = np.arange(8) % 3
    models = []
    for extra in (False, True):
        inputs = cnnlab.Input((1, 5, 5), dtype="float64")
        out = L.Softmax()(L.Dense(25, 3, dtype="float64", seed=0)(L.Flatten()(inputs)))
        models.append(cnnlab.Model(inputs, L.Identity()(out) if extra else out))
    for model in models:
        model.fit(x, y, epochs=2, batch_size=4, optimizer=optim.SGD(0.5), seed=0, verbose=0)
    np.testing.assert_allclose(models[1].predict_proba(x), models[0].predict_proba(x), rtol=1e-12)


def test_a_frozen_base_trains_as_in_inference_with_the_same_gradients():
    """fit's step needs no input gradient: the frozen base before the trainable head runs as in
    inference (its convolutions fused), saves nothing for backward, and the head's gradients are
    those of the plain training pass; a dropout in the base still draws its masks."""
    rng = np.random.default_rng(3)
    x = cnnlab.Input((3, 8, 8))
    h = L.MaxPool2D(2)(L.ReLU()(L.BatchNorm2D(4)(L.Conv2D(3, 4, 3, padding=1, seed=0)(x))))
    h = L.Dropout(0.3, seed=1)(L.ReLU()(L.Conv2D(4, 4, 3, padding=1, seed=2)(h)))
    head = L.Dense(4 * 4 * 4, 5, seed=3)
    model = cnnlab.Model(x, head(L.Flatten()(h)))
    for layer in model.layers:
        layer.trainable = layer is head
    images = rng.standard_normal((6, 3, 8, 8)).astype(np.float32)
    upstream = rng.standard_normal((6, 5)).astype(np.float32)
    graph, out = model.graph, model.graph.outputs[0]
    grads = []
    for input_grads in (True, False):
        graph.forward([images], training=True, seed=7, input_grads=input_grads)
        taped = len(graph._tape)
        graph.backward({id(out): upstream}, input_grads=input_grads)
        grads.append(dict(head.grads))
        if not input_grads:
            assert taped == 2  # the dropout (it draws masks) and the head
    np.testing.assert_allclose(grads[1]["weight"], grads[0]["weight"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads[1]["bias"], grads[0]["bias"], rtol=1e-4, atol=1e-5)


def test_a_frozen_base_takes_its_outputs_from_the_buffer_pool_and_keeps_the_heads_input():
    """The fused frozen base's intermediate outputs come from the graph's buffer pool and go back
    to it once read, so a second step allocates nothing new; the output the trainable head reads
    (and saves for its backward) is never a pool buffer another step could overwrite."""
    rng = np.random.default_rng(4)
    x = cnnlab.Input((3, 12, 12))
    h = L.ReLU()(L.Conv2D(3, 8, 3, padding=1, seed=0)(x))
    h = L.MaxPool2D(2)(L.ReLU()(L.Conv2D(8, 8, 3, padding=1, seed=1)(h)))
    head = L.Dense(8 * 6 * 6, 5, seed=2)
    model = cnnlab.Model(x, head(L.Flatten()(L.ReLU()(L.Conv2D(8, 8, 3, padding=1, seed=3)(h)))))
    model.freeze(up_to=len(model.layers) - 1)
    graph, out = model.graph, model.graph.outputs[0]
    pool = graph.buffer_pool()
    first, second = (rng.standard_normal((4, 3, 12, 12)).astype(np.float32) for _ in range(2))
    logits = graph.forward([first], training=True, input_grads=False)[0]
    saved = head.saved
    kept = saved.copy()
    held = pool.nbytes
    assert held > 0  # the intermediate maps came back to the pool
    graph.backward({id(out): np.ones_like(logits)}, input_grads=False)
    graph.forward([second], training=True, input_grads=False)
    assert pool.nbytes == held  # the second step reused them
    np.testing.assert_array_equal(saved, kept)  # the first step's head input was not overwritten
    np.testing.assert_allclose(logits, graph.forward([first])[0], rtol=1e-6, atol=1e-6)  # as inference
