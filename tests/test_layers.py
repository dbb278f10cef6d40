"""Layers: gradients against finite differences (float64), shapes, state, and misuse."""

import numpy as np
import pytest
from hypothesis import given, settings
from naive import numeric_gradient
from strategies import conv_geometries

import cnnlab
from cnnlab import layers as L


def check_layer_gradients(layer, x, rtol=1e-5, atol=1e-7, eps=1e-6):
    """backward() equals finite differences for the input and every parameter.

    The differences are taken of the training-mode forward for the layers whose training
    forward differs from evaluation (dropout, batch statistics)."""
    training_loss = isinstance(layer, (L.Dropout, L.BatchNorm2D))
    rng = np.random.default_rng(0)
    out = layer.forward(x, training=True)
    upstream = rng.standard_normal(out.shape)
    grad_x = layer.backward(upstream)

    def loss():
        out = layer.forward(x, training=training_loss)
        return float(np.sum(out * upstream))

    if grad_x is not None:
        np.testing.assert_allclose(grad_x, numeric_gradient(loss, x, eps), rtol=rtol, atol=atol)
    for name, param in layer.params.items():
        np.testing.assert_allclose(layer.grads[name], numeric_gradient(loss, param, eps), rtol=rtol, atol=atol,
                                   err_msg=name)


@settings(max_examples=10)
@given(conv_geometries(max_size=3))
def test_conv2d_layer_gradients(g):
    layer = L.Conv2D(g["channels"], g["filters"], g["kernel"], g["stride"], g["padding"], g["dilation"],
                     g["groups"], bias=g["bias"], dtype="float64", seed=1)
    x = np.random.default_rng(2).standard_normal((g["samples"], g["channels"], g["height"], g["width"]))
    check_layer_gradients(layer, x)
    assert layer.forward(x).shape[1:] == layer.output_shape(x.shape[1:])


@pytest.mark.parametrize("layer", [
    L.MaxPool2D(2), L.AvgPool2D(3, 2, 1), L.MinPool2D((2, 3), (1, 2)), L.MedianPool2D(3, 1),
    L.LPPool2D(2), L.GlobalAvgPool2D(), L.ReLU(), L.LeakyReLU(0.2), L.Sigmoid(), L.Tanh(),
    L.Softmax(), L.Softmax(axis=-1), L.Flatten(), L.Dropout(0.4, seed=3), L.Dropout(0.0),
    L.BatchNorm2D(3, dtype="float64"),
], ids=lambda layer: repr(layer))
def test_other_layer_gradients(layer):
    rng = np.random.default_rng(4)
    x = rng.permutation(3 * 3 * 6 * 5).reshape(3, 3, 6, 5) * 0.05 - 2.0  # distinct values
    x = x + 0.013  # no exact zeros at ReLU's kink
    if isinstance(layer, L.Dropout):
        layer.step_seed = 11  # the same mask for every forward of the check
    check_layer_gradients(layer, x, rtol=1e-5, atol=1e-6, eps=1e-5)
    assert layer.forward(x).shape[1:] == layer.output_shape(x.shape[1:])


def test_dense_layer_gradients_and_layout():
    layer = L.Dense(5, 3, dtype="float64", seed=0)
    assert layer.weight.shape == (3, 5) and layer.bias.shape == (3,)
    assert layer.weight is layer.params["weight"] and layer.bias is layer.params["bias"]
    check_layer_gradients(layer, np.random.default_rng(5).standard_normal((4, 5)))


def test_backward_without_training_forward_is_an_error():
    for layer in (L.Conv2D(1, 1, 3), L.Dense(2, 2), L.ReLU(), L.MaxPool2D(2), L.Flatten(), L.BatchNorm2D(1)):
        with pytest.raises(RuntimeError, match="forward"):
            layer.backward(np.ones((1, 1)))
    layer = L.ReLU()
    layer.forward(np.ones((1, 2)), training=False)
    with pytest.raises(RuntimeError, match="training=True"):
        layer.backward(np.ones((1, 2)))


def test_parameters_are_float32_unless_asked_and_inputs_are_cast():
    layer = L.Conv2D(1, 2, 3, seed=0)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    out = layer.forward(np.ones((1, 1, 4, 4), dtype=np.float64))
    assert out.dtype == np.float32
    assert L.Dense(2, 2, dtype="float64").weight.dtype == np.float64
    with pytest.raises(TypeError, match="dtype"):
        L.Dense(2, 2, dtype="int32")


def test_initialization_is_seeded_he_and_glorot():
    a, b = L.Conv2D(3, 8, 3, seed=7), L.Conv2D(3, 8, 3, seed=7)
    np.testing.assert_array_equal(a.weight, b.weight)
    big = L.Dense(2000, 500, seed=1)
    assert big.weight.std() == pytest.approx(np.sqrt(2 / 2000), rel=0.02)  # He normal
    glorot = L.Dense(2000, 500, init="glorot", seed=1)
    assert np.abs(glorot.weight).max() <= np.sqrt(6 / 2500)
    with pytest.raises(ValueError, match="init"):
        L.Dense(2, 2, init="zeros")


def test_batch_norm_running_statistics_and_eval_mode():
    layer = L.BatchNorm2D(2, momentum=0.5, dtype="float64")
    x = np.random.default_rng(6).standard_normal((4, 2, 3, 3)) * 3 + 1
    train_out = layer.forward(x, training=True)
    np.testing.assert_allclose(train_out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.5 * x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(layer.buffers["running_var"], 0.5 + 0.5 * x.var(axis=(0, 2, 3), ddof=1))
    eval_out = layer.forward(x, training=False)
    expected = (x - layer.buffers["running_mean"][None, :, None, None]) / np.sqrt(
        layer.buffers["running_var"][None, :, None, None] + layer.eps)
    np.testing.assert_allclose(eval_out, expected)


def test_dropout_is_identity_in_evaluation_and_scaled_in_training():
    layer = L.Dropout(0.5, seed=1)
    x = np.ones((10, 100))
    np.testing.assert_array_equal(layer.forward(x, training=False), x)
    out = layer.forward(x, training=True)
    assert set(np.unique(out)) == {0.0, 2.0}
    assert not np.array_equal(layer.forward(x, training=True), out)  # a new mask each step


def test_output_shapes_reject_misfits():
    with pytest.raises(ValueError, match="Conv2D expects"):
        L.Conv2D(3, 4, 3).output_shape((1, 8, 8))
    with pytest.raises(ValueError, match="Flatten"):
        L.Dense(10, 2).output_shape((2, 5, 1))
    with pytest.raises(ValueError, match="kernel_size"):
        L.MaxPool2D(4).output_shape((1, 2, 2))


@pytest.mark.parametrize("make, error", [
    (lambda: L.Conv2D(0, 4, 3), ValueError), (lambda: L.Conv2D(3, 4, 3, groups=2), ValueError),
    (lambda: L.Conv2D(3, 4, 3, padding="full"), ValueError), (lambda: L.Conv2D(3, 4, 3, stride=2, padding="same"), ValueError),
    (lambda: L.Dense(2.5, 3), TypeError), (lambda: L.Dropout(1.5), ValueError), (lambda: L.MaxPool2D(0), ValueError),
])
def test_bad_layer_arguments(make, error):
    with pytest.raises(error):
        make()


def test_layers_move_to_the_gpu_and_back():
    layer = L.Conv2D(1, 2, 3, seed=0)
    host_weight = layer.weight.copy()
    layer.to("cuda")
    assert layer.device == "cuda" and not isinstance(layer.weight, np.ndarray)
    out = layer.forward(cnnlab.to_device(np.ones((1, 1, 4, 4), np.float32)), training=True)
    layer.backward(out)
    layer.to("cpu")
    np.testing.assert_array_equal(layer.weight, host_weight)
    assert isinstance(layer.grads["weight"], np.ndarray)
    with pytest.raises(ValueError, match="device"):
        layer.to("tpu")


# ----------------------------------------------------------------------------- lazy input sizes


def test_conv_and_dense_find_their_input_size_on_first_use(tmp_path):
    from cnnlab.layers import Conv2D, Dense, Flatten, ReLU

    model = cnnlab.Sequential([Conv2D(out_channels=4, kernel_size=3, padding=1, seed=1), ReLU(), Flatten(),
                               Dense(units=3, seed=2)])
    assert model.layers[0].params == {} and model.layers[3].in_features is None
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 5)).astype(np.float32)
    out = model(x)
    assert out.shape == (2, 3)
    assert model.layers[0].params["weight"].shape == (4, 2, 3, 3) and model.layers[3].in_features == 100
    same = cnnlab.Sequential([Conv2D(2, 4, 3, padding=1, seed=1), ReLU(), Flatten(), Dense(100, 3, seed=2)])
    np.testing.assert_array_equal(same(x), out)  # the same initialization as when the sizes are given
    model.save(tmp_path / "lazy.npz")
    np.testing.assert_array_equal(cnnlab.load(tmp_path / "lazy.npz")(x), out)
    with pytest.raises(ValueError, match=r"Conv2D expects \(2, H, W\) inputs"):
        model(np.ones((1, 3, 5, 5), np.float32))


def test_lazy_layers_build_in_a_graph_and_need_their_other_sizes():
    from cnnlab.layers import Conv2D, Dense, GlobalAvgPool2D

    inputs = cnnlab.Input((3, 8, 8))
    outputs = Dense(out_features=5)(GlobalAvgPool2D()(Conv2D(out_channels=6, kernel_size=3)(inputs)))
    model = cnnlab.Model(inputs, outputs)
    assert model.layers[0].params["weight"].shape == (6, 3, 3, 3) and model.layers[2].in_features == 6
    with pytest.raises(TypeError, match=r"Conv2D needs kernel_size, e.g. Conv2D\(out_channels=32, kernel_size=3\)"):
        Conv2D(out_channels=4)
    with pytest.raises(TypeError, match=r"Dense needs out_features \(or units\)"):
        Dense()
    with pytest.raises(TypeError, match="not both"):
        Dense(out_features=3, units=3)


def test_dropout2d_drops_whole_channels_and_scales_the_rest():
    import cnnlab.functional as F
    from cnnlab.layers import Dropout2D

    x = np.random.default_rng(3).standard_normal((8, 16, 4, 4))
    out, mask = F.dropout2d(x, 0.5, seed=7)
    assert mask.shape == (8, 16, 1, 1) and set(np.unique(mask)) == {0.0, 2.0}
    np.testing.assert_array_equal(out, x * mask)
    _, elements = F.dropout(np.ones((8, 16)), 0.5, seed=7)  # the channels' mask is dropout's of ones
    np.testing.assert_array_equal(mask[:, :, 0, 0], elements)
    upstream = np.random.default_rng(4).standard_normal(x.shape)
    np.testing.assert_array_equal(F.dropout2d_backward(mask, upstream), upstream * mask)
    layer = Dropout2D(0.25, seed=3)
    np.testing.assert_array_equal(layer.forward(x), x)  # evaluation: the identity
    trained = layer.forward(x, training=True)
    dropped = np.all(trained == 0, axis=(2, 3))
    assert 0 < dropped.sum() < dropped.size
    np.testing.assert_allclose(trained[~dropped], (x / 0.75)[~dropped])
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)) == 0, trained == 0)


@pytest.mark.usefixtures("small_cuda_launches")
def test_dropout2d_gpu_twin_gives_the_host_mask():
    import cnnlab.functional as F

    x = np.random.default_rng(5).standard_normal((3, 4, 2, 2)).astype(np.float32)
    out, mask = F.dropout2d(cnnlab.to_device(x), 0.5, seed=11)
    host_out, host_mask = F.dropout2d(x, 0.5, seed=11)
    np.testing.assert_array_equal(cnnlab.to_host(mask), host_mask)
    np.testing.assert_array_equal(cnnlab.to_host(out), host_out)


def test_weights_that_cannot_fit_are_refused_before_allocating(monkeypatch):
    from cnnlab import checks
    from cnnlab.layers import Conv2D, Dense

    monkeypatch.setattr(checks, "available_memory", lambda: 10_000_000)
    Dense(100, 100)  # 10,000 weights: 120 kB with the float64 draw
    with pytest.raises(MemoryError) as caught:
        Dense(4096, 1024)
    message = str(caught.value)
    assert message.startswith("Dense(4096, 1024) (4,194,304 weights) needs 48.0 MiB but 9.5 MiB of memory")
    assert "GlobalAvgPool2D" in message
    with pytest.raises(MemoryError, match=r"Conv2D\(512, 512, \(3, 3\)\)"):
        Conv2D(512, 512, 3)
    lazy = Dense(units=1024)
    with pytest.raises(MemoryError, match="Dense"):
        lazy.output_shape((4096,))
    monkeypatch.setattr(checks, "available_memory", lambda: None)  # unknown: nothing is refused
    Dense(4096, 1024)
