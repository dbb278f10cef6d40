"""Losses beyond integer labels: cross-entropy against one-hot and probability rows, label
smoothing, binary cross-entropy; their gradients by finite differences, the GPU twins, and the
losses by name."""

import numpy as np
import pytest
from naive import numeric_gradient

import cnnlab
import cnnlab.functional as F
from cnnlab import losses


def log_softmax(z):
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def probability_rows(rng, samples, classes):
    rows = rng.random((samples, classes))
    return rows / rows.sum(axis=1, keepdims=True)


def test_one_hot_rows_give_the_loss_and_gradient_of_their_labels():
    rng = np.random.default_rng(0)
    logits, labels = rng.normal(size=(6, 4)) * 3, np.array([0, 3, 1, 1, 2, 0])
    rows = np.eye(4)[labels]
    loss, probabilities = F.cross_entropy(logits, labels)
    row_loss, row_probabilities = F.cross_entropy(logits, rows)
    assert row_loss == pytest.approx(loss, rel=1e-14)
    np.testing.assert_allclose(F.cross_entropy_backward(row_probabilities, rows),
                               F.cross_entropy_backward(probabilities, labels), rtol=1e-13, atol=1e-16)
    weights = np.array([2.0, 0.5, 1.0, 3.0])
    np.testing.assert_allclose(F.weighted_cross_entropy(logits, rows, weights)[0],
                               F.weighted_cross_entropy(logits, labels, weights)[0], rtol=1e-13)
    np.testing.assert_allclose(F.weighted_cross_entropy_backward(probabilities, rows, weights),
                               F.weighted_cross_entropy_backward(probabilities, labels, weights), rtol=1e-13, atol=1e-16)


def test_soft_targets_follow_the_definition_and_finite_differences():
    rng = np.random.default_rng(1)
    logits, targets = rng.normal(size=(5, 3)), probability_rows(rng, 5, 3)
    loss, probabilities = F.cross_entropy(logits, targets)
    assert loss == pytest.approx(np.mean(-(targets * log_softmax(logits)).sum(axis=1)), rel=1e-13)
    expected = numeric_gradient(lambda: F.cross_entropy(logits, targets)[0], logits)
    np.testing.assert_allclose(F.cross_entropy_backward(probabilities, targets), expected, rtol=1e-6, atol=1e-9)
    unnormalized = targets * 2.5  # rows that do not sum to 1: the general gradient softmax * sum(t) - t
    expected = numeric_gradient(lambda: F.cross_entropy(logits, unnormalized)[0], logits)
    np.testing.assert_allclose(F.cross_entropy_backward(probabilities, unnormalized), expected, rtol=1e-6, atol=1e-9)
    _, _, classes = F.soft_cross_entropy_per_sample(logits, targets)
    np.testing.assert_array_equal(classes, targets.argmax(axis=1))


@pytest.mark.parametrize("smoothing", [0.1, 0.5, 1.0])
def test_label_smoothing_is_pytorchs_definition(smoothing):
    rng = np.random.default_rng(2)
    logits, labels = rng.normal(size=(7, 5)) * 2, rng.integers(0, 5, 7)
    loss, probabilities = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    # torch.nn.functional.cross_entropy(label_smoothing=s): (1 - s) * nll + s * mean over classes of -log p
    log_p = log_softmax(logits)
    expected = np.mean((1 - smoothing) * -log_p[np.arange(7), labels] + smoothing * -log_p.mean(axis=1))
    assert loss == pytest.approx(expected, rel=1e-13)
    numeric = numeric_gradient(lambda: F.cross_entropy(logits, labels, label_smoothing=smoothing)[0], logits)
    np.testing.assert_allclose(F.cross_entropy_backward(probabilities, labels, label_smoothing=smoothing), numeric,
                               rtol=1e-6, atol=1e-9)
    targets = probability_rows(rng, 7, 5)  # rows are smoothed the same way: (1 - s) * t + s / K
    smoothed = (1 - smoothing) * targets + smoothing / 5
    assert F.cross_entropy(logits, targets, smoothing)[0] == pytest.approx(F.cross_entropy(logits, smoothed)[0],
                                                                            rel=1e-13)
    weights = np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    numeric = numeric_gradient(lambda: F.weighted_cross_entropy(logits, labels, weights, smoothing)[0], logits)
    np.testing.assert_allclose(F.weighted_cross_entropy_backward(probabilities, labels, weights, smoothing), numeric,
                               rtol=1e-6, atol=1e-9)


def test_the_cross_entropy_loss_object_smooths_and_trains_a_step():
    rng = np.random.default_rng(3)
    logits, labels = rng.normal(size=(4, 3)), np.array([0, 2, 1, 0])
    loss = losses.CrossEntropy(label_smoothing=0.2)
    value = loss.forward(logits, labels)
    assert value == pytest.approx(F.cross_entropy(logits, labels, 0.2)[0])
    totals = np.zeros(2)
    grad = loss.train_batch(logits, labels, totals)
    np.testing.assert_allclose(grad, loss.backward(), rtol=1e-14)
    assert totals[0] == pytest.approx(4 * value) and totals[1] == (logits.argmax(axis=1) == labels).sum()
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\], got 1.5"):
        losses.CrossEntropy(label_smoothing=1.5)
    with pytest.raises(TypeError, match="label_smoothing"):
        losses.CrossEntropy(label_smoothing="some")


def bce_reference(prediction, target, from_logits):
    if from_logits:
        p = 1 / (1 + np.exp(-prediction))
    else:
        p = np.clip(prediction, 1e-7, 1 - 1e-7)
    return np.mean(-(target * np.log(p) + (1 - target) * np.log(1 - p)))


@pytest.mark.parametrize("from_logits", [True, False])
def test_binary_cross_entropy_and_its_gradient(from_logits):
    rng = np.random.default_rng(4)
    prediction = rng.normal(size=(6, 3)) * 2 if from_logits else rng.uniform(0.05, 0.95, size=(6, 3))
    target = np.r_[(rng.random((3, 3)) > 0.5).astype(float), rng.random((3, 3))]  # labels and probabilities
    assert F.binary_cross_entropy(prediction, target, from_logits) == pytest.approx(
        bce_reference(prediction, target, from_logits), rel=1e-12)
    numeric = numeric_gradient(lambda: F.binary_cross_entropy(prediction, target, from_logits), prediction)
    np.testing.assert_allclose(F.binary_cross_entropy_backward(prediction, target, from_logits), numeric,
                               rtol=1e-6, atol=1e-10)


def test_binary_cross_entropy_is_finite_for_huge_logits_and_saturated_probabilities():
    logits = np.array([[1e30, -1e30, 80.0, -80.0, 0.0]], np.float32)
    target = np.array([[0.0, 1.0, 1.0, 0.0, 1.0]], np.float32)
    loss = F.binary_cross_entropy(logits, target, from_logits=True)
    assert loss == pytest.approx((1e30 + 1e30 + 0 + 0 + np.log(2)) / 5, rel=1e-6)
    grad = F.binary_cross_entropy_backward(logits, target, from_logits=True)
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [[0.2, -0.2, 0.0, 0.0, -0.1]], atol=1e-7)
    probabilities = np.array([[1.0, 0.0, 1.0, 0.0]], np.float32)
    target = np.array([[0.0, 1.0, 1.0, 0.0]], np.float32)
    loss = F.binary_cross_entropy(probabilities, target)
    assert np.isfinite(loss) and loss == pytest.approx(-np.log(1e-7) / 2, rel=1e-3)  # clipped like Keras
    assert np.all(np.isfinite(F.binary_cross_entropy_backward(probabilities, target)))


def test_binary_cross_entropy_loss_object_takes_labels_for_one_output_and_measures_binary_accuracy():
    loss = losses.BinaryCrossEntropy(from_logits=True)
    assert loss.label_classes(1) == 2 and loss.label_classes(4) == 4
    logits, labels = np.array([[2.0], [-1.0], [0.5]]), np.array([1, 1, 0])
    assert loss.label_loss(logits, labels) == pytest.approx(bce_reference(logits, labels[:, None], True))
    assert loss.correct(logits, labels) == 1.0  # 2 > 0 right; -1 wrong for 1; 0.5 wrong for 0
    multi = np.array([[0.9, 0.2, 0.7]])
    assert losses.BinaryCrossEntropy().correct(multi, np.array([[1.0, 0.0, 0.0]])) == pytest.approx(2 / 3)
    with pytest.raises(TypeError, match="from_logits"):
        losses.BinaryCrossEntropy(from_logits="yes")


def test_losses_by_name_and_clear_errors():
    assert type(losses.get("binary_crossentropy")) is losses.BinaryCrossEntropy
    assert losses.get("binary_crossentropy").from_logits is False  # Keras's default
    for name in ("cross_entropy", "categorical_crossentropy", "sparse_categorical_crossentropy"):
        assert type(losses.get(name)) is losses.CrossEntropy
    assert type(losses.get("mean_squared_error")) is losses.MSE
    with pytest.raises(ValueError, match=r"cross_entropy.*binary_crossentropy.*got 'hinge'"):
        losses.get("hinge")
    with pytest.raises(TypeError, match="loss must be a name"):
        losses.get(3)


def test_the_new_loss_kernels_on_the_gpu_equal_the_cpu(small_cuda_launches):
    rng = np.random.default_rng(5)
    logits, labels = rng.normal(size=(7, 4)), rng.integers(0, 4, 7)
    targets, weights = probability_rows(rng, 7, 4), np.array([1.0, 0.5, 2.0, 3.0])
    for given in (targets, labels):
        losses_cpu, probabilities, classes = F.soft_cross_entropy_per_sample(logits, given, 0.1, weights)
        device_given = cnnlab.to_device(np.ascontiguousarray(given))
        losses_gpu, device_probabilities, device_classes = F.soft_cross_entropy_per_sample(
            cnnlab.to_device(logits), device_given, 0.1, cnnlab.to_device(weights))
        np.testing.assert_allclose(cnnlab.to_host(losses_gpu), losses_cpu, rtol=1e-12)
        np.testing.assert_array_equal(cnnlab.to_host(device_classes), classes)
        np.testing.assert_allclose(
            cnnlab.to_host(F.weighted_cross_entropy_backward(device_probabilities, device_given, weights, 0.1)),
            F.weighted_cross_entropy_backward(probabilities, given, weights, 0.1), rtol=1e-12)
    prediction, target = rng.normal(size=(5, 3)) * 4, rng.random((5, 3))
    for from_logits in (True, False):
        values = prediction if from_logits else 1 / (1 + np.exp(-prediction))
        device = cnnlab.to_device(values), cnnlab.to_device(target)
        assert F.binary_cross_entropy(*device, from_logits) == pytest.approx(
            F.binary_cross_entropy(values, target, from_logits), rel=1e-12)
        np.testing.assert_allclose(cnnlab.to_host(F.binary_cross_entropy_backward(*device, from_logits)),
                                   F.binary_cross_entropy_backward(values, target, from_logits), rtol=1e-12)
