"""Ready-made architectures: torchvision's layer counts and parameter counts, shapes at small
sizes, gradients, training, ONNX round trips and argument checking."""

import numpy as np
import pytest

import cnnlab
from cnnlab import applications
from cnnlab.layers import Add, BatchNorm2D, Conv2D, Dense, Dropout, MaxPool2D, ReLU, ReLU6


def layers_of(model, kind):
    return [layer for layer in model.layers if type(layer) is kind]


def randomize_batch_norms(model, seed=0):
    """Running statistics and affine parameters away from their (0, 1) start, so that an
    evaluation-mode comparison exercises them."""
    rng = np.random.default_rng(seed)
    for layer in layers_of(model, BatchNorm2D):
        n = layer.num_features
        layer.params["weight"][:] = rng.uniform(0.5, 1.5, n)
        layer.params["bias"][:] = rng.normal(0, 0.1, n)
        layer.buffers["running_mean"][:] = rng.normal(0, 0.1, n)
        layer.buffers["running_var"][:] = rng.uniform(0.5, 1.5, n)


# --- torchvision's published parameter counts (full size: cheap to build, never run here) ---

@pytest.mark.parametrize("depth, count", [(18, 11_689_512), (34, 21_797_672), (50, 25_557_032)])
def test_resnet_parameter_counts_equal_torchvision(depth, count):
    assert applications.resnet(depth).parameter_count() == count


def test_mobilenet_v2_parameter_count_equals_torchvision():
    assert applications.mobilenet_v2().parameter_count() == 3_504_872


def test_resnet18_has_torchvision_layers():
    model = applications.resnet(18)
    convs = layers_of(model, Conv2D)
    assert len(convs) == 20  # stem + 16 in blocks + 3 strided 1x1 shortcuts
    assert all(not conv.use_bias for conv in convs)
    assert len(layers_of(model, BatchNorm2D)) == 20 and len(layers_of(model, Add)) == 8
    stem = convs[0]
    assert stem.kernel_size == (7, 7) and stem.stride == (2, 2) and stem.weight.shape == (64, 3, 7, 7)
    (pool,) = layers_of(model, MaxPool2D)
    assert pool.kernel_size == (3, 3) and pool.stride == (2, 2)
    shortcuts = [c for c in convs if c.kernel_size == (1, 1)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in shortcuts] == [
        (64, 128, (2, 2)), (128, 256, (2, 2)), (256, 512, (2, 2))]
    (head,) = layers_of(model, Dense)
    assert (head.in_features, head.out_features) == (512, 1000)
    assert model.name == "resnet18" and model.input_shape == (3, 224, 224)


def test_resnet50_uses_bottlenecks_with_strided_3x3():
    model = applications.resnet(50, width=4, input_shape=(3, 32, 32))
    convs = layers_of(model, Conv2D)
    assert len(convs) == 53  # stem + 48 in blocks + 4 shortcuts (the first stage's widens 4 -> 16)
    strided = [c for c in convs[1:] if c.stride == (2, 2)]
    assert {c.kernel_size for c in strided} == {(3, 3), (1, 1)}  # v1.5: 3x3 and shortcut stride
    assert layers_of(model, Dense)[0].in_features == 8 * 4 * 4


def test_small_stem_is_one_3x3_convolution_without_pooling():
    model = applications.resnet(18, classes=10, width=8, input_shape=(3, 32, 32), stem="small")
    stem = layers_of(model, Conv2D)[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not layers_of(model, MaxPool2D)
    assert model.parameter_count() == 176_402


def test_mobilenet_v2_has_torchvision_blocks():
    model = applications.mobilenet_v2()
    convs = layers_of(model, Conv2D)
    assert len(convs) == 52 and all(not conv.use_bias for conv in convs)
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 17
    assert all(c.groups == c.in_channels == c.out_channels and c.kernel_size == (3, 3) for c in depthwise)
    assert len(layers_of(model, Add)) == 10  # stride 1 and equal channels
    assert len(layers_of(model, ReLU6)) == 35 and not layers_of(model, ReLU)
    assert convs[0].out_channels == 32 and convs[-1].out_channels == 1280
    (dropout,) = layers_of(model, Dropout)
    assert dropout.p == 0.2
    assert layers_of(model, Dense)[0].in_features == 1280


@pytest.mark.parametrize("value, expected", [(32, 32), (32 * 0.35, 16), (24 * 0.5, 16), (1280 * 1.4, 1792),
                                             (3, 8), (44, 48), (100 * 0.75, 72), (11, 16)])
def test_make_divisible_rounds_as_torchvision(value, expected):
    assert applications.make_divisible(value) == expected


def test_mobilenet_width_multiplier_rounds_channels_to_eight():
    model = applications.mobilenet_v2(width_multiplier=0.35, input_shape=(3, 32, 32))
    convs = layers_of(model, Conv2D)
    assert convs[0].out_channels == 16 and convs[-1].out_channels == 1280
    assert all(c.out_channels % 8 == 0 for c in convs)
    wide = layers_of(applications.mobilenet_v2(width_multiplier=1.4, input_shape=(3, 32, 32)), Conv2D)
    assert wide[-1].out_channels == 1792


# --- running at small sizes ------------------------------------------------------------------

@pytest.mark.parametrize("build, shape", [
    (lambda: applications.resnet(18, classes=10, width=8, input_shape=(3, 32, 32), stem="small"), (3, 32, 32)),
    (lambda: applications.resnet(18, classes=7, width=4, input_shape=(3, 32, 48)), (3, 32, 48)),
    (lambda: applications.resnet(50, classes=3, width=2, input_shape=(1, 16, 8), stem="small"), (1, 16, 8)),
    (lambda: applications.mobilenet_v2(classes=4, width_multiplier=0.25, input_shape=(3, 32, 32)), (3, 32, 32)),
])
def test_small_networks_give_one_score_per_class(build, shape):
    model = build()
    x = np.random.default_rng(0).random((2,) + shape).astype(np.float32)
    out = model(x)
    classes = layers_of(model, Dense)[0].out_features
    assert out.shape == (2, classes) and out.dtype == np.float32 and np.isfinite(out).all()


def test_last_feature_maps_are_downsampled_by_the_total_stride():
    model = applications.resnet(18, width=4, input_shape=(3, 64, 96))
    assert model.output_shapes(model.input_shape)[-3:] == [(32, 2, 3), (32,), (1000,)]
    small = applications.resnet(18, width=4, input_shape=(1, 16, 24), stem="small")
    assert small.output_shapes(small.input_shape)[-3] == (32, 2, 3)


def test_seed_repeats_the_weights():
    first = applications.mobilenet_v2(width_multiplier=0.25, input_shape=(3, 32, 32), seed=3)
    again = applications.mobilenet_v2(width_multiplier=0.25, input_shape=(3, 32, 32), seed=3)
    other = applications.mobilenet_v2(width_multiplier=0.25, input_shape=(3, 32, 32), seed=4)
    for a, b, c in zip(first.layers, again.layers, other.layers):
        for name in a.params:
            np.testing.assert_array_equal(a.params[name], b.params[name])
    assert not np.array_equal(layers_of(first, Conv2D)[0].weight, layers_of(other, Conv2D)[0].weight)
    assert layers_of(first, Dropout)[0].seed == layers_of(again, Dropout)[0].seed


def resnet18_parameter_count(channels, width, classes, stem_kernel):
    """Counted by hand: convolutions without bias, two parameters per batch-norm channel."""
    count = stem_kernel**2 * channels * width + 2 * width
    previous = width
    for stage in range(4):
        c = width * 2**stage
        count += 9 * previous * c + 9 * c * c + 4 * c  # first block
        if previous != c:
            count += previous * c + 2 * c  # strided 1x1 shortcut
        count += 18 * c * c + 4 * c  # second block
        previous = c
    return count + previous * classes + classes


@pytest.mark.parametrize("channels, width, classes, stem", [(3, 64, 1000, "imagenet"), (3, 4, 1000, "small"),
                                                            (1, 8, 5, "small"), (2, 3, 7, "imagenet")])
def test_resnet18_parameter_count_at_any_width(channels, width, classes, stem):
    model = applications.resnet(18, classes=classes, width=width, input_shape=(channels, 32, 32), stem=stem)
    assert model.parameter_count() == resnet18_parameter_count(channels, width, classes,
                                                               7 if stem == "imagenet" else 3)


def test_summary_shows_the_graph():
    model = applications.resnet(18, classes=10, width=4, input_shape=(3, 32, 32), stem="small")
    text = model.summary(print_fn=None)
    total = resnet18_parameter_count(3, 4, 10, 3)
    assert "Connected to" in text and "images" in text and f"Total parameters: {total:,}" in text
    assert "BatchNorm2D, 2: ReLU" in text  # the first block adds its input


def test_backward_equals_finite_differences():
    model = applications.resnet(18, classes=3, width=2, input_shape=(2, 8, 8), stem="small", seed=0,
                                dtype="float64")
    randomize_batch_norms(model)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 2, 8, 8))
    direction = rng.normal(size=(3, 3))

    def objective(values):
        return float(np.sum(model.forward(values, training=True) * direction))

    objective(x)
    grad_x = model.backward(direction)
    conv = layers_of(model, Conv2D)[5]
    grad_weight = conv.grads["weight"].copy()
    step = 1e-6
    for index in [(0, 0, 3, 4), (2, 1, 7, 0), (1, 0, 0, 0)]:
        plus, minus = x.copy(), x.copy()
        plus[index] += step
        minus[index] -= step
        numeric = (objective(plus) - objective(minus)) / (2 * step)
        assert numeric == pytest.approx(grad_x[index], rel=1e-5, abs=1e-8)
    weight = conv.params["weight"]
    for index in [(0, 0, 1, 1), (3, 1, 0, 2)]:
        original = weight[index]
        weight[index] = original + step
        up = objective(x)
        weight[index] = original - step
        down = objective(x)
        weight[index] = original
        assert (up - down) / (2 * step) == pytest.approx(grad_weight[index], rel=1e-5, abs=1e-8)


@pytest.mark.parametrize("build", [
    lambda: applications.resnet(18, classes=2, width=4, input_shape=(1, 8, 8), stem="small", seed=0),
    lambda: applications.mobilenet_v2(classes=2, width_multiplier=0.25, input_shape=(1, 32, 32), seed=0),
])
def test_fit_lowers_the_loss(build):
    rng = np.random.default_rng(0)
    size = build().input_shape[1]
    x = rng.random((32, 1, size, size)).astype(np.float32) * 0.2
    y = np.arange(32) % 2
    x[y == 1, :, : size // 2] += 0.8  # class 1: a bright top half
    model = build()
    # full batches: each epoch is one step on the same images, and its loss (with the batch's
    # statistics: the running ones lag behind so short a fit) is the loss before that step
    history = model.fit(x, y, epochs=5, batch_size=32, optimizer=cnnlab.optim.Adam(1e-3), seed=0, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all() and losses[-1] < 0.75 * losses[0]


def test_freeze_and_replace_head_train_only_the_new_classifier():
    model = applications.resnet(18, classes=10, width=4, input_shape=(1, 8, 8), stem="small", seed=0)
    frozen = [layer.params["weight"].copy() for layer in layers_of(model, Conv2D)]
    norm = layers_of(model, BatchNorm2D)[0]
    scale, running_mean = norm.params["weight"].copy(), norm.buffers["running_mean"].copy()
    model.freeze().replace_head(5, seed=0)
    head = layers_of(model, Dense)[0]
    assert head.out_features == 5 and head.trainable
    assert model.summary(print_fn=None).endswith(f"Trainable parameters: {4 * 8 * 5 + 5:,}\n"
                                                 f"Non-trainable parameters: {model.parameter_count() - 165:,}")
    rng = np.random.default_rng(0)
    model.fit(rng.random((8, 1, 8, 8)).astype(np.float32), np.arange(8) % 5, epochs=1, batch_size=4,
              verbose=0)
    for layer, before in zip(layers_of(model, Conv2D), frozen):
        np.testing.assert_array_equal(layer.params["weight"], before)
    # a frozen batch norm keeps its scale and its running statistics (inference mode, Keras's rule)
    np.testing.assert_array_equal(norm.params["weight"], scale)
    np.testing.assert_array_equal(norm.buffers["running_mean"], running_mean)


def test_save_and_load_keep_the_outputs(tmp_path):
    model = applications.mobilenet_v2(classes=3, width_multiplier=0.25, input_shape=(3, 32, 32), seed=0)
    randomize_batch_norms(model)
    path = tmp_path / "mobilenet.npz"
    model.save(path)
    again = cnnlab.load(path)
    x = np.random.default_rng(0).random((2, 3, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(again(x), model(x))


# --- ONNX ------------------------------------------------------------------------------------

@pytest.mark.parametrize("build, shape", [
    (lambda: applications.resnet(18, classes=5, width=4, input_shape=(3, 16, 16), stem="small", seed=0),
     (3, 16, 16)),
    (lambda: applications.resnet(50, classes=5, width=2, input_shape=(3, 32, 32), seed=0), (3, 32, 32)),
    (lambda: applications.mobilenet_v2(classes=5, width_multiplier=0.25, input_shape=(3, 32, 32), seed=0),
     (3, 32, 32)),
])
def test_onnx_export_and_import_give_the_same_outputs(build, shape, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import cnnlab.onnx

    model = build()
    randomize_batch_norms(model)
    path = tmp_path / "model.onnx"
    cnnlab.onnx.save(model, path)
    again = cnnlab.onnx.load(path)
    x = np.random.default_rng(0).random((2,) + shape).astype(np.float32)
    expected = model(x)
    np.testing.assert_allclose(again(x), expected, rtol=1e-4, atol=1e-5)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {session.get_inputs()[0].name: x})
    np.testing.assert_allclose(result, expected, rtol=1e-4, atol=1e-5)
    assert len(layers_of(again, Conv2D)) == len(layers_of(model, Conv2D))
    assert layers_of(again, Dense)[0].weight.shape == layers_of(model, Dense)[0].weight.shape


# --- arguments refused by name ---------------------------------------------------------------

@pytest.mark.parametrize("arguments, error, words", [
    (dict(depth=19), ValueError, ["depth", "19", "18, 34, 50, 101, 152"]),
    (dict(depth=18.0), TypeError, ["depth", "18.0"]),
    (dict(width=0), ValueError, ["width", "0"]),
    (dict(width=2.5), TypeError, ["width", "2.5"]),
    (dict(classes=0), ValueError, ["classes", "0"]),
    (dict(stem="tiny"), ValueError, ["stem", "'tiny'"]),
    (dict(input_shape=(3, 16, 224)), ValueError, ["input_shape", "(3, 16, 224)", "32"]),
    (dict(input_shape=(3, 7, 7), stem="small"), ValueError, ["input_shape", "(3, 7, 7)", "8"]),
    (dict(input_shape=(224, 224)), TypeError, ["input_shape", "(224, 224)"]),
    (dict(input_shape=(0, 32, 32)), ValueError, ["input_shape", "(0, 32, 32)"]),
    (dict(seed=-1), ValueError, ["seed", "-1"]),
    (dict(dtype="int32"), TypeError, ["dtype", "int32"]),
])
def test_resnet_refuses_bad_arguments_by_name(arguments, error, words):
    with pytest.raises(error) as caught:
        applications.resnet(**arguments)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize("arguments, error, words", [
    (dict(width_multiplier=0), ValueError, ["width_multiplier", "0"]),
    (dict(width_multiplier=-0.5), ValueError, ["width_multiplier", "-0.5"]),
    (dict(width_multiplier=float("nan")), ValueError, ["width_multiplier", "nan"]),
    (dict(width_multiplier="1.0"), TypeError, ["width_multiplier", "'1.0'"]),
    (dict(classes=-3), ValueError, ["classes", "-3"]),
    (dict(input_shape=(3, 31, 64)), ValueError, ["input_shape", "(3, 31, 64)", "32"]),
])
def test_mobilenet_v2_refuses_bad_arguments_by_name(arguments, error, words):
    with pytest.raises(error) as caught:
        applications.mobilenet_v2(**arguments)
    for word in words:
        assert word in str(caught.value)


def test_applications_is_a_submodule_name():
    assert cnnlab.applications is applications

