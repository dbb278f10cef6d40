"""Element-wise math: sqrt, exp, log, erf, reciprocal, abs, neg, floor, ceil, gelu and the
broadcasting subtract, divide, power, maximum, minimum. Values against NumPy/SciPy (domain edges
included), gradients against finite differences and PyTorch's rules, GPU twins, layers in a
model, bad input, and ONNX import and export against onnxruntime."""

import naive
import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from naive import numeric_gradient
from onnx_models import make_model

import cnnlab
import cnnlab.functional as F
from cnnlab import layers as L
from cnnlab.device import is_gpu_array
from cnnlab.functional.elementwise import broadcast_geometry

UNARY = ["sqrt", "exp", "log", "erf", "reciprocal", "abs", "neg", "floor", "ceil", "gelu", "gelu_tanh"]
BINARY = ["subtract", "divide", "power", "maximum", "minimum"]
DTYPES = st.sampled_from([np.float32, np.float64])
SPECIAL = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, -2.5, 3.0, 1e-30, 1000.0, -1000.0, np.inf, -np.inf, np.nan]


def forward(name):
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    return getattr(F, name)


def backward(name):
    if name == "gelu_tanh":
        return lambda x, g: F.gelu_backward(x, g, approximate="tanh")
    return getattr(F, f"{name}_backward")


def tolerance(dtype):
    return 1e-6 if dtype == np.float32 else 1e-12


def unary_input(name, rng, shape):
    """Values where ``name`` is smooth (no kink, no step, inside the domain) for finite differences."""
    if name in ("sqrt", "log", "reciprocal"):
        return rng.uniform(0.2, 3, shape)
    x = rng.uniform(-3, 3, shape)
    x[np.abs(x - np.round(x)) < 1e-3] += 0.01  # no step of floor/ceil, no kink of abs at 0
    return x


# ----------------------------------------------------------------------------- unary: values


@given(arrays(DTYPES, array_shapes(min_dims=0, max_dims=4, max_side=5),
              elements=st.one_of(st.floats(-30, 30, width=32), st.sampled_from(SPECIAL))))
def test_unary_ops_equal_numpy_and_scipy(x):
    tol = tolerance(x.dtype)
    for name in UNARY:
        out = forward(name)(x)
        assert out.shape == x.shape and out.dtype == x.dtype, name
        expected = naive.unary_reference(name, x).astype(x.dtype)
        np.testing.assert_allclose(out, expected, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_outside_the_domain_give_what_numpy_gives(dtype):
    x = np.array(SPECIAL, dtype=dtype)
    for name in UNARY:
        out = forward(name)(x)
        expected = naive.unary_reference(name, x).astype(dtype)
        np.testing.assert_allclose(out, expected, rtol=tolerance(dtype), atol=0, err_msg=name)
        if name in ("floor", "ceil", "neg", "abs", "sqrt", "reciprocal"):  # signed zeros and infinities exactly
            signed = ~np.isnan(expected)  # (a NaN's sign means nothing)
            np.testing.assert_array_equal(np.signbit(out)[signed], np.signbit(expected)[signed], err_msg=name)
    np.testing.assert_array_equal(F.log(np.array([-1.0, 0.0, -0.0])), [np.nan, -np.inf, -np.inf])
    np.testing.assert_array_equal(F.floor(np.array([-0.5, 0.5, -2.0, 2.7])), [-1, 0, -2, 2])
    np.testing.assert_array_equal(F.ceil(np.array([-0.5, 0.5, -2.0, 2.7])), [-0.0, 1, -2, 3])


def test_gelu_matches_pytorchs_two_forms():
    x = np.linspace(-6, 6, 49)
    np.testing.assert_allclose(F.gelu(x), naive.gelu(x), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(F.gelu(x, "tanh"), naive.gelu(x, "tanh"), rtol=1e-13, atol=1e-15)
    # the two forms differ by less than 1e-3 (why the tanh form is used as a fast GELU)
    assert np.max(np.abs(F.gelu(x) - F.gelu(x, "tanh"))) < 1e-3
    # far in the negative tail erfc keeps the relative precision that 1 + erf loses
    tail = F.gelu(np.array([-8.0], np.float32))[0]
    exact = -8 * scipy.special.ndtr(-8.0)  # x * Phi(x), Phi accurate in the tails
    assert abs(tail / exact - 1) < 1e-5 and abs(0.5 * -8 * (1 + scipy.special.erf(-8 / np.sqrt(2))) / exact - 1) > 1e-3


def test_zero_dimensional_and_empty_arrays():
    for name in UNARY:
        out = forward(name)(np.float64(0.25))
        assert isinstance(out, np.ndarray) and out.shape == () and out.dtype == np.float64
        np.testing.assert_allclose(out, naive.unary_reference(name, 0.25), rtol=1e-12)
        empty = forward(name)(np.zeros((0, 3), np.float32))
        assert empty.shape == (0, 3) and empty.dtype == np.float32
    with pytest.raises(TypeError, match="normalize"):
        F.sqrt(np.zeros((0, 3), np.int64))
    out = F.subtract(np.float64(3.0), np.float64(1.0))
    assert out.shape == () and out == 2
    assert F.maximum(np.zeros((0, 3)), np.ones(3)).shape == (0, 3)
    assert F.power(np.ones((2, 1)), np.zeros((0,))).shape == (2, 0)
    grad_a, grad_b = F.divide_backward(np.ones(3), np.zeros((0, 1)), np.zeros((0, 3)))
    np.testing.assert_array_equal(grad_a, np.zeros(3))
    assert grad_b.shape == (0, 1)


# ----------------------------------------------------------------------------- unary: gradients


@pytest.mark.parametrize("name", UNARY)
def test_unary_backward_matches_finite_differences(name):
    rng = np.random.default_rng(0)
    x = unary_input(name, rng, (3, 4, 5))
    upstream = rng.standard_normal(x.shape)
    expected = numeric_gradient(lambda: float(np.sum(forward(name)(x) * upstream)), x)
    np.testing.assert_allclose(backward(name)(x, upstream), expected, rtol=1e-6, atol=1e-8)


def test_unary_gradients_at_the_edges_follow_pytorch():
    ones = np.ones(3)
    np.testing.assert_array_equal(F.abs_backward(np.array([-2.0, 0.0, 3.0]), ones), [-1, 0, 1])  # sign, 0 at 0
    np.testing.assert_array_equal(F.floor_backward(np.array([-0.5, 1.0, np.nan]), ones), [0, 0, 0])
    np.testing.assert_array_equal(F.ceil_backward(np.array([-0.5, 1.0, np.inf]), ones), [0, 0, 0])
    np.testing.assert_array_equal(F.sqrt_backward(np.array([0.0, 4.0, -1.0]), ones), [np.inf, 0.25, np.nan])
    np.testing.assert_array_equal(F.reciprocal_backward(np.array([0.0, 2.0, -1.0]), ones), [-np.inf, -0.25, -1])
    np.testing.assert_array_equal(F.neg_backward(np.array([5.0, np.nan, 0.0]), np.array([1.0, 2.0, -3.0])),
                                  [-1, -2, 3])
    np.testing.assert_allclose(F.gelu_backward(np.array([0.0, 50.0, -50.0]), ones), [0.5, 1, 0], atol=1e-300)
    np.testing.assert_allclose(F.gelu_backward(np.array([0.0, 50.0, -50.0]), ones, "tanh"), [0.5, 1, 0], atol=1e-300)


# ----------------------------------------------------------------------------- binary: broadcasting


@st.composite
def broadcast_shape_pairs(draw):
    """``(result, a_shape, b_shape)``: two shapes that broadcast NumPy's way, each made from one
    shape by setting axes to 1 (so both may broadcast, along different axes) and dropping
    leading axes."""
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=0, max_size=4)))
    operands = []
    for _ in range(2):
        own = tuple(1 if draw(st.booleans()) else n for n in shape)
        operands.append(own[draw(st.integers(0, len(shape))):])
    return np.broadcast_shapes(*operands), operands[0], operands[1]


def binary_operands(name, rng, a_shape, b_shape, dtype=np.float64):
    if name == "power":
        a, b = rng.uniform(0.5, 2, a_shape), rng.uniform(-2, 2, b_shape)
    elif name == "divide":
        a, b = rng.standard_normal(a_shape), rng.uniform(0.5, 2, b_shape) * rng.choice([-1, 1], b_shape)
    elif name in ("maximum", "minimum"):  # few values, so that ties happen
        a, b = rng.integers(-2, 3, a_shape).astype(float), rng.integers(-2, 3, b_shape).astype(float)
    else:
        a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    return np.asarray(a, dtype), np.asarray(b, dtype)


@given(broadcast_shape_pairs(), DTYPES, st.integers(0, 2 ** 32 - 1))
def test_binary_ops_broadcast_as_numpy_forward_and_backward(shapes, dtype, seed):
    shape, a_shape, b_shape = shapes
    assert np.broadcast_shapes(a_shape, b_shape) == shape
    rng = np.random.default_rng(seed)
    tol = tolerance(dtype) * 10
    for name in BINARY:
        a, b = binary_operands(name, rng, a_shape, b_shape, dtype)
        upstream = rng.standard_normal(shape).astype(dtype)
        out = getattr(F, name)(a, b)
        expected, grad_a, grad_b = naive.binary_reference(name, a, b, upstream)
        assert out.shape == shape and out.dtype == dtype, name
        np.testing.assert_allclose(out, expected.astype(dtype), rtol=tol, atol=tol, err_msg=name)
        got_a, got_b = getattr(F, f"{name}_backward")(a, b, upstream)
        assert got_a.shape == a_shape and got_b.shape == b_shape and got_a.dtype == got_b.dtype == dtype
        np.testing.assert_allclose(got_a, grad_a, rtol=tol, atol=tol, err_msg=name)
        np.testing.assert_allclose(got_b, grad_b, rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("a_shape, b_shape", [
    ((2, 1, 4), (2, 3, 1)),       # both broadcast, along different axes
    ((3, 1, 1), (2, 1, 4, 5)),    # fewer axes and size-1 axes
    ((), (2, 3)),                  # a 0-d operand
    ((2, 3, 4), (2, 3, 4)),
    ((4,), (3, 1)),
])
@pytest.mark.parametrize("name", BINARY)
def test_binary_backward_matches_finite_differences(name, a_shape, b_shape):
    rng = np.random.default_rng(1)
    a, b = binary_operands(name, rng, a_shape, b_shape)
    if name in ("maximum", "minimum"):  # no ties where finite differences would straddle one
        a, b = np.asarray(a + rng.uniform(0.1, 0.4, a_shape)), np.asarray(b - rng.uniform(0.1, 0.4, b_shape))
    op = getattr(F, name)
    upstream = rng.standard_normal(np.broadcast_shapes(a_shape, b_shape))
    grad_a, grad_b = getattr(F, f"{name}_backward")(a, b, upstream)

    def loss():
        return float(np.sum(op(a, b) * upstream))

    np.testing.assert_allclose(grad_a, numeric_gradient(loss, a), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grad_b, numeric_gradient(loss, b), rtol=1e-6, atol=1e-8)


def test_maximum_and_minimum_split_ties_as_pytorch():
    """torch.maximum's derivative: ``grad / 2`` to each operand where they are equal."""
    a = np.array([1.0, 2.0, 3.0, np.nan])
    b = np.array([1.0, 5.0, 0.0, 1.0])
    g = np.array([4.0, 4.0, 4.0, 4.0])
    np.testing.assert_array_equal(F.maximum(a, b), [1, 5, 3, np.nan])
    np.testing.assert_array_equal(F.minimum(a, b), [1, 2, 0, np.nan])
    grad_a, grad_b = F.maximum_backward(a, b, g)
    np.testing.assert_array_equal(grad_a, [2, 0, 4, 4])  # NaN: all of it to both, as torch
    np.testing.assert_array_equal(grad_b, [2, 4, 0, 4])
    grad_a, grad_b = F.minimum_backward(a, b, g)
    np.testing.assert_array_equal(grad_a, [2, 4, 0, 4])
    np.testing.assert_array_equal(grad_b, [2, 0, 4, 4])
    # a broadcast operand collects its halves: 1 meets [1, 1, 0]
    grad_a, grad_b = F.maximum_backward(np.array([1.0]), np.array([1.0, 1.0, 0.0]), np.ones(3))
    np.testing.assert_array_equal(grad_a, [2.0])
    np.testing.assert_array_equal(grad_b, [0.5, 0.5, 0])


def test_power_edges_follow_pytorch():
    a = np.array([0.0, 0.0, 0.0, -8.0, 2.0, 0.0])
    b = np.array([0.0, 2.0, 0.5, 1 / 3, 0.0, -1.0])
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(F.power(a, b), np.power(a, b))  # 0**0 = 1, (-8)**(1/3) = nan, 0**-1 = inf
    grad_a, grad_b = F.power_backward(a, b, np.ones(6))
    # grad_a: 0 where the exponent is 0; b * a**(b - 1) elsewhere (inf for 0**-0.5, nan for a negative base)
    np.testing.assert_array_equal(grad_a, [0, 0, np.inf, np.nan, 0, -np.inf])
    # grad_b: 0 where a == 0 and b >= 0; a**b * log(a) elsewhere
    np.testing.assert_array_equal(grad_b, [0, 0, 0, np.nan, np.log(2), -np.inf])


def test_divide_by_zero_gives_infinities():
    out = F.divide(np.array([1.0, -1.0, 0.0]), np.array([0.0, 0.0, 0.0]))
    np.testing.assert_array_equal(out, [np.inf, -np.inf, np.nan])


def test_broadcast_geometry_merges_axes_broadcast_alike():
    shape, dims, a_dims, b_dims = broadcast_geometry((2, 3, 1, 5), (2, 3, 4, 1))
    assert shape == (2, 3, 4, 5) and (dims, a_dims, b_dims) == ([6, 4, 5], [6, 1, 5], [6, 4, 1])
    assert broadcast_geometry((4, 1), (1, 1, 5))[1:] == ([4, 5], [4, 1], [1, 5])
    assert broadcast_geometry((), (1, 1)) == ((1, 1), [1], [1], [1])


def test_add_and_multiply_keep_their_rule_and_messages():
    """F.add and F.multiply still take one operand broadcasting against the other only."""
    with pytest.raises(ValueError, match="result having one operand's shape"):
        F.add(np.ones((2, 1)), np.ones((1, 3)))
    np.testing.assert_array_equal(F.subtract(np.ones((2, 1)), np.ones((1, 3))), np.zeros((2, 3)))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("call, error, words", [
    (lambda: F.subtract(np.ones((2, 3)), np.ones(4)), ValueError, r"a with shape \(2, 3\) and b with shape \(4,\)"),
    (lambda: F.maximum(np.ones((2, 3, 1)), np.ones((4, 3))), ValueError, r"\(2, 3, 1\).*\(4, 3\).*broadcast"),
    (lambda: F.power_backward(np.ones((2, 1)), np.ones(3), np.ones((2, 4))), ValueError, "grad_out"),
    (lambda: F.divide(np.arange(3), np.ones(3)), TypeError, "a has integer dtype.*normalize"),
    (lambda: F.minimum(np.ones(3), np.arange(3)), TypeError, "b has integer dtype"),
    (lambda: F.subtract(np.ones(3), np.ones(3, np.float32)), TypeError, "b has dtype float32"),
    (lambda: F.divide(np.zeros((0, 3), np.int32), np.ones(3)), TypeError, "a has integer dtype"),
    (lambda: F.divide(np.zeros((0, 3)), np.ones(4)), ValueError, r"\(0, 3\).*\(4,\)"),
    (lambda: F.exp(np.arange(3)), TypeError, "x has integer dtype.*normalize"),
    (lambda: F.log(np.ones(3, np.float16)), TypeError, "float16"),
    (lambda: F.sqrt("1"), TypeError, "x must be an array"),
    (lambda: F.erf_backward(np.ones(3), np.ones(4)), ValueError, "grad_out"),
    (lambda: F.gelu(np.ones(3), approximate="fast"), ValueError, "approximate"),
    (lambda: F.gelu(np.ones(3), approximate=None), TypeError, "approximate"),
    (lambda: F.gelu_backward(np.ones(3), np.ones(3), "erf"), ValueError, "approximate"),
    (lambda: L.GELU("sigmoid"), ValueError, "approximate"),
    (lambda: L.Subtract().forward(np.ones((2, 3))), TypeError, "list"),
    (lambda: L.Divide().forward([np.ones((2, 3))] * 3), ValueError, "exactly 2"),
    (lambda: L.Maximum().output_shape([(3, 4), (2, 4)]), ValueError, "broadcast"),
    (lambda: L.Power().backward(np.ones(3)), RuntimeError, "forward"),
    (lambda: L.ElementwiseConstant("add", 1.0), ValueError, "op must be one of"),
    (lambda: L.ElementwiseConstant("power"), TypeError, "value .* or shape"),
    (lambda: L.ElementwiseConstant("power", 2.0, first="yes"), TypeError, "first"),
    (lambda: L.ElementwiseConstant("maximum", np.ones((2, 3, 4))).output_shape((3, 4)), ValueError, "batch"),
    (lambda: L.ElementwiseConstant("maximum", np.ones((2, 4))).output_shape((3, 5)), ValueError, "broadcast"),
])
def test_bad_input_names_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call()


def test_mixed_devices_name_the_argument():
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="b is on the cpu"):
        F.power(cnnlab.to_device(x), x)
    with pytest.raises(TypeError, match="grad_out is on the cuda"):
        F.subtract_backward(x, x, cnnlab.to_device(x))


# ----------------------------------------------------------------------------- GPU twins


def assert_gpu_equals_cpu(gpu_result, cpu_result, what):
    assert is_gpu_array(gpu_result), what
    host = cnnlab.to_host(gpu_result)
    assert host.dtype == cpu_result.dtype and host.shape == cpu_result.shape, what
    tol = tolerance(host.dtype) * 10
    np.testing.assert_allclose(host, cpu_result, rtol=tol, atol=tol, err_msg=what)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the simulator computes 1 / 0 with NumPy scalars
@pytest.mark.usefixtures("small_cuda_launches")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_twins_equal_cpu(dtype):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(-4, 4, 16), SPECIAL]).astype(dtype).reshape(2, 3, 5)
    upstream = rng.standard_normal(x.shape).astype(dtype)
    gx, gu = cnnlab.to_device(x), cnnlab.to_device(upstream)
    for name in UNARY:
        assert_gpu_equals_cpu(forward(name)(gx), forward(name)(x), name)
        assert_gpu_equals_cpu(backward(name)(gx, gu), backward(name)(x, upstream), f"{name}_backward")
    for a_shape, b_shape in [((2, 1, 5), (2, 3, 1)), ((3, 5), (2, 1, 1)), ((2, 3, 5), (1,))]:
        for name in BINARY:
            a, b = binary_operands(name, rng, a_shape, b_shape, dtype)
            g = rng.standard_normal(np.broadcast_shapes(a_shape, b_shape)).astype(dtype)
            ga, gb, gg = (cnnlab.to_device(v) for v in (a, b, g))
            assert_gpu_equals_cpu(getattr(F, name)(ga, gb), getattr(F, name)(a, b), name)
            for gpu, cpu in zip(getattr(F, f"{name}_backward")(ga, gb, gg), getattr(F, f"{name}_backward")(a, b, g)):
                assert_gpu_equals_cpu(gpu, cpu, f"{name}_backward {a_shape} {b_shape}")


# ----------------------------------------------------------------------------- layers

UNARY_LAYERS = [L.Sqrt(), L.Exp(), L.Log(), L.Erf(), L.Reciprocal(), L.Abs(), L.Neg(), L.Floor(), L.Ceil(),
                L.GELU(), L.GELU(approximate="tanh")]


@pytest.mark.parametrize("layer", UNARY_LAYERS, ids=repr)
def test_unary_layers_run_the_ops_and_round_trip_through_config(layer):
    rng = np.random.default_rng(3)
    name = type(layer).__name__.lower()
    x = unary_input(name, rng, (2, 3, 4))
    upstream = rng.standard_normal(x.shape)
    out = layer.forward(x, training=True)
    np.testing.assert_allclose(layer.backward(upstream),
                               numeric_gradient(lambda: float(np.sum(layer.forward(x) * upstream)), x),
                               rtol=1e-6, atol=1e-8)
    assert layer.output_shape(x.shape[1:]) == x.shape[1:]
    rebuilt = L.LAYER_TYPES[type(layer).__name__](**layer.config())
    assert rebuilt.config() == layer.config()
    np.testing.assert_array_equal(rebuilt.forward(x), out)
    with pytest.raises(RuntimeError, match="forward"):
        type(layer)(**layer.config()).backward(upstream)


@pytest.mark.parametrize("layer_type", [L.Subtract, L.Divide, L.Power, L.Maximum, L.Minimum])
def test_binary_layers_broadcast_samples_and_sum_gradients_back(layer_type):
    """(N, C, 1, W) against (N, H, 1): both broadcast; the sample of fewer axes is aligned with
    the last axes of the other, after the batch axis."""
    rng = np.random.default_rng(4)
    name = layer_type.__name__.lower()
    a, b = binary_operands(name, rng, (2, 3, 1, 5), (2, 4, 1))
    a, b = a + 0.01 * rng.random(a.shape), b + 0.37  # no ties of maximum and minimum
    layer = layer_type()
    assert layer.output_shape([(3, 1, 5), (4, 1)]) == (3, 4, 5)
    assert layer.output_shape([(3, None, 5), (None, 1)]) == (3, None, 5)
    out = layer.forward([a, b], training=True)
    expected = getattr(np, name)(a, b.reshape(2, 1, 4, 1))
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    upstream = rng.standard_normal(out.shape)
    grad_a, grad_b = layer.backward(upstream)
    assert grad_a.shape == a.shape and grad_b.shape == b.shape

    def loss():
        return float(np.sum(layer.forward([a, b]) * upstream))

    np.testing.assert_allclose(grad_a, numeric_gradient(loss, a), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grad_b, numeric_gradient(loss, b), rtol=1e-6, atol=1e-8)
    assert type(L.LAYER_TYPES[layer_type.__name__](**layer.config())) is layer_type


@pytest.mark.parametrize("op, first", [("subtract", True), ("divide", False), ("divide", True), ("power", False),
                                       ("power", True), ("maximum", False), ("minimum", True)])
def test_elementwise_constant_layer(op, first):
    rng = np.random.default_rng(5)
    value = rng.uniform(0.5, 1.5, (1, 3, 1, 1))  # a batch axis of 1, as ONNX constants have
    x = rng.uniform(0.5, 2, (2, 3, 4, 4))
    layer = L.ElementwiseConstant(op, value, first=first, dtype="float64")
    assert layer.output_shape((3, 4, 4)) == (3, 4, 4)
    assert L.ElementwiseConstant(op, np.ones((5, 1, 1))).output_shape((1, 2, 2)) == (5, 2, 2)  # may grow
    out = layer.forward(x, training=True)
    operands = (value, x) if first else (x, value)
    np.testing.assert_allclose(out, getattr(np, op)(*operands), rtol=1e-12)
    upstream = rng.standard_normal(out.shape)
    np.testing.assert_allclose(layer.backward(upstream),
                               numeric_gradient(lambda: float(np.sum(layer.forward(x) * upstream)), x),
                               rtol=1e-6, atol=1e-8)
    assert layer.params == {} and layer.grads == {}  # the constant is a buffer: never trained
    rebuilt = L.LAYER_TYPES["ElementwiseConstant"](**layer.config())
    assert rebuilt.config() == layer.config() and rebuilt.buffers["value"].shape == value.shape


def small_network():
    x = cnnlab.Input((2, 5, 5))
    h = L.Conv2D(2, 3, 3, padding=1, seed=0)(x)
    h = L.GELU()(h)
    gate = L.GlobalAvgPool2D(keepdims=True)(h)
    h = L.Maximum()([L.Subtract()([h, gate]), L.Neg()(h)])
    h = L.Divide()([h, L.Exp()(gate)])
    h = L.Minimum()([h, L.Power()([L.Sqrt()(L.Abs()(h)), L.Erf()(gate)])])
    h = L.ElementwiseConstant("maximum", np.full((3, 1, 1), -0.5))(h)
    y = L.Dense(3 * 5 * 5, 3, seed=1)(L.Flatten()(L.GELU(approximate="tanh")(h)))
    return cnnlab.Model(x, y)


def test_layers_train_in_a_model_and_survive_save_and_load(tmp_path):
    model = small_network()
    rng = np.random.default_rng(6)
    x = rng.standard_normal((12, 2, 5, 5)).astype(np.float32)
    y = np.arange(12) % 3
    before = model.parameters()[0][0].params["weight"].copy()
    history = model.fit(x, y, epochs=4, batch_size=4, optimizer=cnnlab.optim.Adam(0.01), verbose=0, seed=0)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert not np.array_equal(before, model.parameters()[0][0].params["weight"])
    model.save(tmp_path / "m.npz")
    again = cnnlab.load(tmp_path / "m.npz")
    np.testing.assert_allclose(again.predict_proba(x), model.predict_proba(x), rtol=1e-6, atol=1e-7)


@pytest.mark.usefixtures("small_cuda_launches")
def test_a_model_of_these_layers_runs_on_the_gpu():
    model = small_network()
    x = np.random.default_rng(7).standard_normal((2, 2, 5, 5)).astype(np.float32)
    gpu = model.copy().to("cuda")
    np.testing.assert_allclose(cnnlab.to_host(gpu(cnnlab.to_device(x))), model(x), rtol=1e-5, atol=1e-6)


def test_dask_arrays_run_chunk_by_chunk():
    da = pytest.importorskip("dask.array")
    x = np.random.default_rng(8).uniform(0.1, 2, (4, 3, 6, 6))
    lazy = da.from_array(x, chunks=(2, 3, 3, 3))
    for op, expected in [(F.sqrt(lazy), np.sqrt(x)), (F.gelu(lazy, approximate="tanh"), naive.gelu(x, "tanh"))]:
        assert isinstance(op, da.Array)
        np.testing.assert_allclose(op.compute(), expected, rtol=1e-12)


# ----------------------------------------------------------------------------- ONNX


@pytest.fixture(scope="module")
def onnx_tools():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import cnnlab.onnx

    def build(nodes, inputs, initializers=(), opset=13):
        graph = onnx.helper.make_graph(
            nodes, "g", [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s) for n, s in inputs],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
            [onnx.numpy_helper.from_array(np.asarray(v), name) for name, v in initializers])
        return make_model(graph, opset)

    def run_both(model, *arrays):
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        expected = session.run(None, dict(zip(names, arrays)))[0]
        imported = cnnlab.onnx.load(model)
        got = np.asarray(cnnlab.to_host(imported(*arrays)))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        return imported

    return onnx.helper.make_node, build, run_both


def layer_names(model):
    return {type(layer).__name__ for layer in model.layers}


def test_onnx_unary_ops_equal_onnxruntime(onnx_tools):
    node, build, run_both = onnx_tools
    chain = ["Abs", "Sqrt", "Exp", "Log", "Erf", "Reciprocal", "Neg"]
    nodes = [node(op, ["x" if i == 0 else f"t{i}"], [f"t{i + 1}"]) for i, op in enumerate(chain)]
    nodes += [node("Floor", ["x"], ["f"]), node("Ceil", ["x"], ["c"]),
              node("Concat", [f"t{len(chain)}", "f", "c"], ["y"], axis=1)]
    x = (np.random.default_rng(9).standard_normal((2, 3, 4)) * 3).astype(np.float32)
    model = run_both(build(nodes, [("x", ["N", 3, 4])]), x)
    assert set(chain) | {"Floor", "Ceil"} <= layer_names(model)


@pytest.mark.parametrize("approximate", [None, "none", "tanh"])
def test_onnx_gelu_of_opset_20(onnx_tools, approximate):
    node, build, run_both = onnx_tools
    attributes = {} if approximate is None else dict(approximate=approximate)
    x = np.random.default_rng(10).standard_normal((2, 3, 4, 4)).astype(np.float32) * 3
    model = run_both(build([node("Gelu", ["x"], ["y"], **attributes)], [("x", ["N", 3, 4, 4])], opset=20), x)
    assert model.layers[-1].approximate == (approximate or "none")


def test_onnx_binary_ops_of_two_tensors_broadcast_both_ways(onnx_tools):
    node, build, run_both = onnx_tools
    nodes = [node("Sub", ["a", "b"], ["s"]), node("Exp", ["a"], ["e"]), node("Div", ["s", "e"], ["d"]),
             node("Pow", ["e", "b"], ["p"]), node("Max", ["d", "p"], ["m"]), node("Min", ["m", "s", "a"], ["y"])]
    rng = np.random.default_rng(11)
    a = rng.standard_normal((2, 3, 1, 5)).astype(np.float32)
    b = rng.standard_normal((2, 1, 4, 1)).astype(np.float32)
    model = run_both(build(nodes, [("a", ["N", 3, 1, 5]), ("b", ["N", 1, 4, 1])]), a, b)
    assert {"Subtract", "Divide", "Power", "Maximum", "Minimum"} <= layer_names(model)


def test_onnx_constant_operands(onnx_tools):
    node, build, run_both = onnx_tools
    rng = np.random.default_rng(12)
    constants = [("two", np.array(2, np.int64)), ("base", np.array(1.5, np.float32)),
                 ("low", rng.standard_normal((1, 3, 1, 1)).astype(np.float32)),
                 ("high", rng.uniform(1, 2, (4, 1)).astype(np.float32)), ("k", np.array(3.0, np.float32))]
    nodes = [node("Pow", ["x", "two"], ["p"]),          # an integer exponent
             node("Pow", ["base", "x"], ["q"]),         # a constant base
             node("Max", ["p", "low", "q"], ["m"]),     # variadic: two tensors and a constant
             node("Min", ["m", "high", "k"], ["n"]),    # one tensor and two constants, folded into one
             node("Div", ["k", "n"], ["d"]),            # a constant divided by a tensor
             node("Sub", ["d", "k"], ["s"]), node("Max", ["s"], ["y"])]
    x = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    model = run_both(build(nodes, [("x", ["N", 3, 4, 4])], constants), x)
    assert "ElementwiseConstant" in layer_names(model)


def test_onnx_refusals_name_the_node(onnx_tools):
    node, build, _ = onnx_tools
    import cnnlab.onnx

    cases = [
        (build([node("Gelu", ["a"], ["y"], name="g", approximate="fast")], [("a", ["N", 3])], opset=20),
         "ONNX Gelu node 'g': approximate='fast'"),
        (build([node("Pow", ["a", "c"], ["y"], name="p")], [("a", ["N", 3])], [("c", np.array([True]))]),
         "ONNX Pow node 'p': a constant operand of dtype bool"),
    ]
    for model, message in cases:
        with pytest.raises(NotImplementedError, match=message):
            cnnlab.onnx.load(model)
    # ONNX aligns shapes from the last axis, batch axis included: (N, 3, 4) - (N, 4) runs when N is
    # 3 or 1 (as in onnxruntime), and any other batch is refused at run time naming the node
    ranks = cnnlab.onnx.load(build([node("Sub", ["a", "b"], ["y"], name="ranks")], [("a", ["N", 3, 4]), ("b", ["N", 4])]))
    rng = np.random.default_rng(13)
    a, b = rng.standard_normal((3, 3, 4)).astype(np.float32), rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_allclose(ranks.graph.forward([a, b])[0], a - b)
    with pytest.raises(ValueError, match="node 'Sub ranks'.*\\(2, 3, 4\\), \\(2, 4\\)"):
        ranks.graph.forward([a[:2], b[:2]])


@pytest.mark.parametrize("a_shape, b_shape", [((3, 5, 7), (3, 5, 7)), ((3, 5, 7), (3, 1, 7)), ((3, 5, 7), (1, 5, 1)),
                                              ((3, 5, 7), (1,)), ((4, 1, 6), (1, 5, 1)), ((3, 5, 7), (7,))])
def test_broadcasting_ops_split_between_threads_mid_row(a_shape, b_shape, monkeypatch):
    """The CPU worker goes a row segment at a time; with every element worth a share of its own
    the shares start and end inside rows, and the results are NumPy's exactly."""
    import numba

    from cnnlab import config

    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1)
    threads = numba.get_num_threads()
    numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
    try:
        rng = np.random.default_rng(3)
        a = rng.standard_normal(a_shape).astype(np.float32)
        b = (rng.standard_normal(b_shape) + 3).astype(np.float32)
        for ours, numpys in ((F.add, np.add), (F.multiply, np.multiply), (F.subtract, np.subtract),
                             (F.divide, np.divide), (F.maximum, np.maximum), (F.minimum, np.minimum)):
            if ours in (F.add, F.multiply) and np.broadcast_shapes(a_shape, b_shape) != a_shape:
                continue  # add and multiply take one operand of the result's shape
            np.testing.assert_array_equal(ours(a, b), numpys(a, b))
            np.testing.assert_array_equal(ours(b, a) if ours not in (F.add, F.multiply) else ours(a, b),
                                          numpys(b, a) if ours not in (F.add, F.multiply) else numpys(a, b))
        np.testing.assert_allclose(F.power(np.abs(a), b), np.abs(a) ** b, rtol=1e-6)
        np.testing.assert_array_equal(F.power(a, np.float32(2) * np.ones(b_shape, np.float32)), a * a * np.ones(b_shape, np.float32))
    finally:
        numba.set_num_threads(threads)


def test_float32_gelu_is_within_a_few_ulp_everywhere():
    """float32 GELU on the CPU uses Numerical Recipes' erfc on a vectorizable exp, all in float32
    (the exponent's square kept exact in two parts): within 6e-7 of x * Phi(x) (computed in
    float64) from -13 to 13, also in the negative tail, where 1 + erf would have no digit left."""
    x = np.linspace(-13, 13, 200_001).astype(np.float32)
    expected = x.astype(np.float64) * scipy.special.ndtr(x.astype(np.float64))
    out = F.gelu(x)
    assert out.dtype == np.float32
    nonzero = expected != 0
    assert np.max(np.abs(out[nonzero] - expected[nonzero]) / np.abs(expected[nonzero])) < 6e-7
    special = F.gelu(np.array([np.nan, np.inf, -np.inf, -30.0, 0.0], np.float32))
    np.testing.assert_array_equal(special, np.array([np.nan, np.inf, np.nan, -0.0, 0.0], np.float32))
