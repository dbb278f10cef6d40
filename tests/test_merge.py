"""Add, multiply (with broadcasting), concatenate, global max pooling and the shape layers:
values against NumPy, gradients against finite differences, GPU twins, layers and bad input."""

import inspect

import naive
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from naive import numeric_gradient

import cnnlab
import cnnlab.functional as F
import cnnlab.kernels.cpu.merge as cpu_merge
import cnnlab.kernels.cuda.merge as cuda_merge
from cnnlab import layers as L
from cnnlab.device import is_gpu_array

DTYPES = st.sampled_from([np.float32, np.float64])


@st.composite
def broadcast_pairs(draw):
    """A full shape and a shape that broadcasts against it (axes set to 1, leading axes dropped)."""
    full = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=4)))
    small = tuple(1 if draw(st.booleans()) else n for n in full)
    small = small[draw(st.integers(0, len(full) - 1)):]
    return full, small, draw(DTYPES), draw(st.booleans())


@given(broadcast_pairs())
def test_add_and_multiply_equal_numpy(case):
    full, small, dtype, swap = case
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(full).astype(dtype), rng.standard_normal(small).astype(dtype)
    if swap:
        a, b = b, a
    tol = 1e-6 if dtype == np.float32 else 1e-12
    for op, expected in [(F.add, a + b), (F.multiply, a * b)]:
        out = op(a, b)
        assert out.shape == full and out.dtype == dtype
        np.testing.assert_allclose(out, expected, rtol=tol, atol=tol)
    upstream = rng.standard_normal(full).astype(dtype)
    for backward, grads in [(F.add_backward, (upstream, upstream)),
                            (F.multiply_backward, (upstream * b, upstream * a))]:
        grad_a, grad_b = backward(a, b, upstream)
        assert grad_a.shape == a.shape and grad_b.shape == b.shape and grad_b.dtype == dtype
        np.testing.assert_allclose(grad_a, naive.broadcast_sum(grads[0], a.shape), rtol=tol * 10, atol=tol * 10)
        np.testing.assert_allclose(grad_b, naive.broadcast_sum(grads[1], b.shape), rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("shape_a, shape_b", [
    ((2, 3, 4, 5), (2, 3, 1, 1)),     # squeeze-excitation gate
    ((2, 3, 1, 1), (2, 3, 4, 5)),     # the gate first
    ((2, 3, 4, 5), (2, 3, 4, 5)),
    ((2, 3, 4, 5), (1, 3, 1, 5)),
    ((2, 3, 4), (4,)),
])
@pytest.mark.parametrize("forward, backward", [(F.add, F.add_backward), (F.multiply, F.multiply_backward)])
def test_add_and_multiply_backward_match_finite_differences(shape_a, shape_b, forward, backward):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    upstream = rng.standard_normal(forward(a, b).shape)
    grad_a, grad_b = backward(a, b, upstream)

    def loss():
        return float(np.sum(forward(a, b) * upstream))

    np.testing.assert_allclose(grad_a, numeric_gradient(loss, a), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grad_b, numeric_gradient(loss, b), rtol=1e-6, atol=1e-8)


@given(st.lists(st.integers(1, 3), min_size=1, max_size=4), st.integers(1, 3), st.data(), DTYPES)
def test_concatenate_equals_numpy_and_backward_splits(sizes, ndim_extra, data, dtype):
    ndim = ndim_extra + 1
    axis = data.draw(st.integers(-ndim, ndim - 1))
    base = data.draw(st.lists(st.integers(1, 3), min_size=ndim, max_size=ndim))
    rng = np.random.default_rng(2)
    arrays = []
    for size in sizes:
        shape = list(base)
        shape[axis] = size
        arrays.append(rng.standard_normal(shape).astype(dtype))
    out = F.concatenate(arrays, axis)
    np.testing.assert_array_equal(out, np.concatenate(arrays, axis))
    assert out.dtype == dtype
    for grad, piece in zip(F.concatenate_backward(out, sizes, axis), arrays):
        np.testing.assert_array_equal(grad, piece)


def test_concatenate_backward_matches_finite_differences():
    rng = np.random.default_rng(3)
    a, b, c = rng.standard_normal((2, 1, 3)), rng.standard_normal((2, 3, 3)), rng.standard_normal((2, 2, 3))
    upstream = rng.standard_normal((2, 6, 3))
    grads = F.concatenate_backward(upstream, [1, 3, 2], axis=1)
    for grad, array in zip(grads, (a, b, c)):
        loss = lambda: float(np.sum(F.concatenate([a, b, c]) * upstream))  # noqa: E731
        np.testing.assert_allclose(grad, numeric_gradient(loss, array), rtol=1e-6, atol=1e-8)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), DTYPES)
def test_global_max_pool_equals_numpy(samples, channels, height, width, dtype):
    x = np.random.default_rng(4).standard_normal((samples, channels, height, width)).astype(dtype)
    out = F.global_max_pool2d(x)
    assert out.shape == (samples, channels) and out.dtype == dtype
    np.testing.assert_array_equal(out, naive.global_max_pool2d(x))


def test_global_max_pool_backward():
    rng = np.random.default_rng(5)
    x = rng.permutation(2 * 3 * 4 * 5).reshape(2, 3, 4, 5) * 0.1  # distinct values
    upstream = rng.standard_normal((2, 3))
    expected = numeric_gradient(lambda: float(np.sum(F.global_max_pool2d(x) * upstream)), x, eps=1e-4)
    np.testing.assert_allclose(F.global_max_pool2d_backward(x, upstream), expected, rtol=1e-6, atol=1e-8)


def test_global_max_pool_first_maximum_on_ties_and_nan_propagates():
    x = np.array([[[[1.0, 3.0], [3.0, 0.0]], [[1.0, np.nan], [5.0, np.nan]]]])
    out = F.global_max_pool2d(x)
    assert out[0, 0] == 3 and np.isnan(out[0, 1])
    grad = F.global_max_pool2d_backward(x, np.array([[2.0, 7.0]]))
    np.testing.assert_array_equal(grad[0, 0], [[0, 2], [0, 0]])
    np.testing.assert_array_equal(grad[0, 1], [[0, 7], [0, 0]])


# ----------------------------------------------------------------------------- layers


def test_merge_layers_forward_backward_and_output_shape():
    rng = np.random.default_rng(6)
    y, gate, z = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((2, 3, 1, 1)), rng.standard_normal((2, 2, 4, 4))
    upstream = rng.standard_normal(y.shape)

    add = L.Add()
    np.testing.assert_allclose(add.forward([y, gate, y], training=True), y + gate + y)
    grads = add.backward(upstream)
    assert grads[0] is upstream and grads[2] is upstream  # an input of the output's shape: the gradient itself
    np.testing.assert_allclose(grads[1], upstream.sum(axis=(2, 3), keepdims=True))
    assert add.output_shape([(3, 4, 4), (3, 1, 1)]) == (3, 4, 4)

    multiply = L.Multiply()
    np.testing.assert_allclose(multiply.forward([gate, y], training=True), gate * y)
    grad_gate, grad_y = multiply.backward(upstream)
    np.testing.assert_allclose(grad_gate, (upstream * y).sum(axis=(2, 3), keepdims=True))
    np.testing.assert_allclose(grad_y, upstream * gate)
    assert multiply.output_shape([(3, 1, 1), (3, 4, 4)]) == (3, 4, 4)

    concatenate = L.Concatenate(axis=1)
    out = concatenate.forward([y, z], training=True)
    assert out.shape[1:] == concatenate.output_shape([(3, 4, 4), (2, 4, 4)]) == (5, 4, 4)
    grad_y, grad_z = concatenate.backward(out)
    np.testing.assert_array_equal(grad_y, y)
    np.testing.assert_array_equal(grad_z, z)
    assert L.Concatenate(axis=-1).output_shape([(3, 4, 4), (3, 4, 2)]) == (3, 4, 6)


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("layer_type", [L.GlobalAvgPool2D, L.GlobalMaxPool2D])
def test_global_pool_layers_keepdims(layer_type, keepdims):
    layer = layer_type(keepdims=keepdims)
    rng = np.random.default_rng(7)
    x = rng.permutation(2 * 3 * 3 * 4).reshape(2, 3, 3, 4) * 0.1
    out = layer.forward(x, training=True)
    expected = x.mean(axis=(2, 3)) if layer_type is L.GlobalAvgPool2D else x.max(axis=(2, 3))
    assert out.shape[1:] == layer.output_shape((3, 3, 4)) == ((3, 1, 1) if keepdims else (3,))
    np.testing.assert_allclose(out.reshape(2, 3), expected)
    upstream = rng.standard_normal(out.shape)
    expected_grad = numeric_gradient(lambda: float(np.sum(layer.forward(x) * upstream)), x, eps=1e-4)
    np.testing.assert_allclose(layer.backward(upstream), expected_grad, rtol=1e-6, atol=1e-8)


def test_reshape_and_identity():
    x = np.arange(24.0).reshape(2, 3, 4)
    layer = L.Reshape((-1, 2))
    out = layer.forward(x, training=True)
    assert out.shape == (2, 6, 2) and layer.output_shape((3, 4)) == (6, 2)
    np.testing.assert_array_equal(out, x.reshape(2, 6, 2))
    np.testing.assert_array_equal(layer.backward(out), x)
    assert L.Reshape(12).output_shape((3, 4)) == (12,)
    identity = L.Identity()
    assert identity.forward(x, training=True) is x and identity.backward(x) is x


@pytest.mark.parametrize("layer", [
    L.Add(), L.Multiply(), L.Concatenate(), L.Concatenate(axis=-2), L.Identity(), L.Reshape((4, -1)),
    L.GlobalAvgPool2D(), L.GlobalAvgPool2D(keepdims=True), L.GlobalMaxPool2D(keepdims=True),
], ids=repr)
def test_layers_round_trip_through_config(layer):
    rebuilt = L.LAYER_TYPES[type(layer).__name__](**layer.config())
    assert type(rebuilt) is type(layer) and rebuilt.config() == layer.config()
    assert repr(rebuilt) == repr(layer)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, error, words", [
    (lambda: F.add(np.ones((2, 3)), np.ones((2, 4))), ValueError, r"\(2, 3\).*\(2, 4\)"),
    (lambda: F.multiply(np.ones((2, 1)), np.ones((1, 3))), ValueError, r"\(2, 1\).*\(1, 3\)"),
    (lambda: F.add(np.ones(3), np.ones(3, np.float32)), TypeError, "b has dtype float32"),
    (lambda: F.multiply(np.arange(3), np.ones(3)), TypeError, "a has integer dtype"),
    (lambda: F.add_backward(np.ones(3), np.ones(3), np.ones(4)), ValueError, "grad_out"),
    (lambda: F.concatenate([]), ValueError, "empty"),
    (lambda: F.concatenate(np.ones((2, 3))), TypeError, "list"),
    (lambda: F.concatenate([np.ones((2, 3)), np.ones((3, 3))]), ValueError, r"arrays\[1\].*\(3, 3\).*\(2, 3\)"),
    (lambda: F.concatenate([np.ones((2, 3)), np.ones((2, 3))], axis=2), ValueError, "axis=2"),
    (lambda: F.concatenate([np.ones((2, 3)), np.ones((2, 3, 1))]), ValueError, r"arrays\[1\]"),
    (lambda: F.concatenate([np.ones(3), np.ones(3, np.float32)], axis=0), TypeError, r"arrays\[1\]"),
    (lambda: F.concatenate([np.ones(3), np.arange(3)], axis=0), TypeError, r"arrays\[1\]"),
    (lambda: F.concatenate_backward(np.ones((2, 3)), [1, 1]), ValueError, "sizes"),
    (lambda: F.global_max_pool2d(np.ones((2, 3))), ValueError, "4 dimensions"),
    (lambda: F.global_max_pool2d_backward(np.ones((1, 2, 2, 2)), np.ones((2, 2))), ValueError, "grad_out"),
    (lambda: L.Add().forward(np.ones((2, 3))), TypeError, "list"),
    (lambda: L.Add().forward([np.ones((2, 3))]), ValueError, "at least 2"),
    (lambda: L.Multiply().forward([np.ones(2)] * 3), ValueError, "exactly 2"),
    (lambda: L.Concatenate(axis=0), ValueError, "batch"),
    (lambda: L.Concatenate().output_shape([(3, 4), (3, 5)]), ValueError, "shapes"),
    (lambda: L.Add().output_shape([(3, 4), (2, 4)]), ValueError, "shapes"),
    (lambda: L.Add().backward(np.ones(3)), RuntimeError, "forward"),
    (lambda: L.Reshape((-1, -1)), ValueError, "-1"),
    (lambda: L.Reshape((0, 3)), ValueError, "shape"),
    (lambda: L.Reshape("3"), TypeError, "shape"),
    (lambda: L.Reshape((5,)).forward(np.ones((2, 3, 2))), ValueError, r"\(3, 2\)"),
    (lambda: L.Reshape((4, -1)).output_shape((3, 2)), ValueError, r"\(3, 2\)"),
    (lambda: L.GlobalMaxPool2D(keepdims="yes"), TypeError, "keepdims"),
])
def test_bad_input_names_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call()


# ----------------------------------------------------------------------------- GPU twins


def test_merge_kernels_mirror_each_other():
    def kernels(module):
        return {name: list(inspect.signature(getattr(obj, "py_func", obj)).parameters)
                for name, obj in vars(module).items() if callable(obj) and not name.startswith("_")
                and getattr(obj, "__module__", "") == module.__name__}

    assert kernels(cpu_merge) == kernels(cuda_merge)
    assert set(kernels(cpu_merge)) == {
        "add_forward", "add_backward", "multiply_forward", "multiply_backward", "concatenate_forward",
        "concatenate_backward", "global_max_pool2d_forward", "global_max_pool2d_backward"}


def assert_gpu_equals_cpu(gpu_result, cpu_result):
    assert is_gpu_array(gpu_result)
    host = cnnlab.to_host(gpu_result)
    assert host.dtype == cpu_result.dtype and host.shape == cpu_result.shape
    tol = 1e-5 if host.dtype == np.float32 else 1e-12
    np.testing.assert_allclose(host, cpu_result, rtol=tol, atol=tol)


@pytest.mark.usefixtures("small_cuda_launches")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_twins_equal_cpu(dtype):
    rng = np.random.default_rng(8)
    y, gate, z = (rng.standard_normal(s).astype(dtype) for s in [(2, 3, 2, 3), (2, 3, 1, 1), (2, 1, 2, 3)])
    upstream = rng.standard_normal(y.shape).astype(dtype)
    gy, ggate, gz, gu = (cnnlab.to_device(a) for a in (y, gate, z, upstream))
    for op in (F.add, F.multiply):
        assert_gpu_equals_cpu(op(gy, ggate), op(y, gate))
        assert_gpu_equals_cpu(op(ggate, gy), op(gate, y))
    for backward in (F.add_backward, F.multiply_backward):
        for gpu, cpu in zip(backward(ggate, gy, gu), backward(gate, y, upstream)):
            assert_gpu_equals_cpu(gpu, cpu)
    assert_gpu_equals_cpu(F.concatenate([gy, gz], axis=1), F.concatenate([y, z], axis=1))
    joined = np.concatenate([y, z], axis=1)
    for gpu, cpu in zip(F.concatenate_backward(cnnlab.to_device(joined), [3, 1]),
                        F.concatenate_backward(joined, [3, 1])):
        assert_gpu_equals_cpu(gpu, cpu)
    assert_gpu_equals_cpu(F.global_max_pool2d(gy), F.global_max_pool2d(y))
    assert_gpu_equals_cpu(F.global_max_pool2d_backward(gy, cnnlab.to_device(upstream[:, :, 0, 0].copy())),
                          F.global_max_pool2d_backward(y, upstream[:, :, 0, 0].copy()))
    layer = L.GlobalAvgPool2D(keepdims=True)
    out = layer.forward(gy, training=True)
    assert_gpu_equals_cpu(out, y.mean(axis=(2, 3), keepdims=True))
    assert is_gpu_array(layer.backward(out))


def test_mixed_devices_name_the_argument():
    x = np.ones((2, 3, 1, 1))
    with pytest.raises(TypeError, match="b is on the cpu"):
        F.multiply(cnnlab.to_device(x), x)
    with pytest.raises(TypeError, match=r"arrays\[1\]"):
        F.concatenate([cnnlab.to_device(x), x])


def test_a_tensor_added_to_itself_gets_both_shared_gradients():
    """Add hands its own gradient to each input of the output's shape; the graph adds the two
    for a tensor that is both inputs (into a new array), so nothing shared is written."""
    x = cnnlab.Input((4,), dtype="float64")
    dense = L.Dense(4, 2, dtype="float64", seed=0)
    h = dense(x)
    graph = cnnlab.Model(x, L.Add()([h, h])).graph
    upstream = np.ones((3, 2))
    graph.forward([np.ones((3, 4))], training=True)
    graph.backward({id(graph.outputs[0]): upstream})
    np.testing.assert_allclose(dense.grads["bias"], [6.0, 6.0])  # 3 samples, twice
    np.testing.assert_array_equal(upstream, np.ones((3, 2)))
