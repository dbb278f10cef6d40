"""A frozen BatchNorm2D runs in inference mode (Keras's rule), and freezing between fits keeps
each parameter's optimizer state."""

import numpy as np
import pytest
import test_model
from test_model import small_cnn

import cnnlab
from cnnlab import layers as L
from cnnlab import optim

digits = test_model.digits  # the fixture, shared with test_model


def test_a_frozen_batch_norm_uses_and_keeps_its_running_statistics(digits):
    x, y = digits
    model = small_cnn(batch_norm=True)
    norm = model.layers[1]
    model.fit(x, y, epochs=1, batch_size=32, seed=0, verbose=0)  # running statistics away from 0 and 1
    mean, variance = norm.buffers["running_mean"].copy(), norm.buffers["running_var"].copy()
    assert not np.allclose(mean, 0)
    model.freeze(up_to=2)  # the convolution and the batch norm
    head = model.layers[5].weight.copy()
    model.fit(x, y, epochs=1, batch_size=32, seed=0, verbose=0)
    np.testing.assert_array_equal(norm.buffers["running_mean"], mean)
    np.testing.assert_array_equal(norm.buffers["running_var"], variance)
    assert not np.array_equal(model.layers[5].weight, head)  # the rest trained
    np.testing.assert_allclose(model.forward(x[:8], training=True), model.forward(x[:8]), rtol=1e-6, atol=1e-7)
    model.unfreeze()
    model.forward(x[:8], training=True)
    assert not np.array_equal(norm.buffers["running_mean"], mean)  # trainable again: PyTorch's rule


def test_a_frozen_batch_norm_passes_the_gradient_of_its_inference_map():
    from naive import numeric_gradient

    rng = np.random.default_rng(0)
    norm = L.BatchNorm2D(3, dtype="float64")
    norm.params["weight"][:] = [0.5, 2.0, -1.0]
    norm.params["bias"][:] = [0.1, 0.2, 0.3]
    norm.buffers["running_mean"][:] = [0.3, -0.2, 1.0]
    norm.buffers["running_var"][:] = [0.5, 2.0, 4.0]
    norm.trainable = False
    x, upstream = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    out = norm.forward(x, training=True)
    np.testing.assert_allclose(out, norm.forward(x), rtol=1e-14)
    expected = numeric_gradient(lambda: float((norm.forward(x) * upstream).sum()), x)
    np.testing.assert_allclose(norm.backward(upstream), expected, rtol=1e-6, atol=1e-8)
    # with a trainable convolution before it, the gradient flows through to the convolution
    model = cnnlab.Sequential([L.Conv2D(1, 3, 3, padding=1, seed=0, dtype="float64"), norm, L.Flatten(),
                               L.Dense(3 * 16, 2, seed=1, dtype="float64")], input_shape=(1, 4, 4))
    conv = model.layers[0].weight.copy()
    model.fit(rng.normal(size=(8, 1, 4, 4)), [0, 1] * 4, optimizer=optim.SGD(0.1), verbose=0)
    assert not np.array_equal(model.layers[0].weight, conv)
    np.testing.assert_array_equal(norm.buffers["running_var"], [0.5, 2.0, 4.0])


def test_a_frozen_batch_norm_on_the_gpu_matches_the_cpu():
    rng = np.random.default_rng(1)
    x, upstream = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    results = []
    for device in ("cpu", "cuda"):
        norm = L.BatchNorm2D(3, dtype="float64")
        norm.buffers["running_var"][:] = [0.5, 2.0, 4.0]
        norm.trainable = False
        norm.to(device)
        move = cnnlab.to_device if device == "cuda" else np.asarray
        out = norm.forward(move(x), training=True)
        results.append((cnnlab.to_host(out), cnnlab.to_host(norm.backward(move(upstream)))))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_fit_freeze_fit_keeps_each_parameters_optimizer_state(digits):
    x, y = digits
    model = small_cnn()
    model.fit(x[:64], y[:64], batch_size=32, optimizer=optim.SGD(0.1, momentum=0.9), verbose=0)
    optimizer = model.optimizer
    conv = model.layers[0].weight.copy()
    model.freeze(up_to=1)  # the convolution's two parameters leave the trainable list
    model.fit(x[:64], y[:64], batch_size=32, verbose=0)  # its state belonged to other positions before
    np.testing.assert_array_equal(model.layers[0].weight, conv)
    assert [s["velocity"].shape for s in optimizer.state] == [(16, 64), (16,), (3, 16), (3,)]
    model.unfreeze()
    model.fit(x[:32], y[:32], batch_size=32, verbose=0)
    assert [s["velocity"].shape for s in optimizer.state][:2] == [(4, 1, 3, 3), (4,)]
    assert not np.array_equal(model.layers[0].weight, conv)
    other = small_cnn()  # the same optimizer stepped on other parameters: a clear error, not a crash
    with pytest.raises(ValueError, match=r"optimizer's velocity for parameter 2 has shape \(16, 64\) but the "
                                         r"parameter has shape \(3, 16\)"):
        optimizer.step([(other.layers[i].params[n], other.layers[i].params[n]) for i, n in
                        ((0, "weight"), (0, "bias"), (6, "weight"), (6, "bias"))])
