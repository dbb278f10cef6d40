"""Activations and softmax against NumPy/SciPy (huge logits included); ReLU6, clip, hard sigmoid,
hard swish and SiLU: values, gradients, GPU twins and layers."""

import naive
import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays
from naive import numeric_gradient

import cnnlab
import cnnlab.functional as F
from cnnlab import layers as L
from cnnlab.device import is_gpu_array

finite = st.floats(-50, 50, allow_nan=False, width=32)


@given(arrays(st.sampled_from([np.float32, np.float64]), array_shapes(max_dims=4, max_side=5), elements=finite))
def test_elementwise_activations(x):
    tol = 1e-6 if x.dtype == np.float32 else 1e-12
    for op, reference in [
        (F.relu, np.maximum(x, 0)),
        (F.leaky_relu, np.where(x > 0, x, 0.01 * x)),
        (F.sigmoid, scipy.special.expit(x)),
        (F.tanh, np.tanh(x)),
    ]:
        out = op(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        np.testing.assert_allclose(out, reference, rtol=tol, atol=tol)
    np.testing.assert_allclose(F.leaky_relu(x, 0.2), np.where(x > 0, x, 0.2 * x), rtol=tol, atol=tol)


@given(arrays(st.sampled_from([np.float32, np.float64]), array_shapes(min_dims=1, max_dims=4, max_side=5),
              elements=st.floats(-1e4, 1e4, allow_nan=False, width=32)),
       st.integers(-4, 3))
def test_softmax_and_log_softmax_any_axis(x, axis):
    if not -x.ndim <= axis < x.ndim:
        with pytest.raises(ValueError, match="axis"):
            F.softmax(x, axis)
        return
    tol = 1e-5 if x.dtype == np.float32 else 1e-12
    p = F.softmax(x, axis)
    logp = F.log_softmax(x, axis)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(logp))
    np.testing.assert_allclose(p, naive.softmax(x, axis), rtol=tol, atol=tol)
    np.testing.assert_allclose(p.sum(axis=axis), 1.0, rtol=tol * 10)
    np.testing.assert_allclose(logp, naive.log_softmax(x, axis), rtol=tol, atol=tol * 1e4 * (x.dtype == np.float32) + tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_huge_logits(dtype):
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]], dtype=dtype)
    p = F.softmax(logits)
    logp = F.log_softmax(logits)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(logp))
    np.testing.assert_allclose(p, [[1, 0, 0], [1 / 3] * 3, [0.5, 0.5, 0]], atol=1e-7)
    np.testing.assert_allclose(logp, scipy.special.log_softmax(logits.astype(np.float64), axis=1), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("size", [511, 512, 513, 767, 1024, 4099])
def test_softmax_of_long_rows(size, dtype):
    """Rows of at least 512 take their maximum by blocks of 256 and their sum in reassociable
    additions (cnnlab.kernels.cpu.activation): the largest logit in the first block, in a middle
    one, in the last whole block and past the whole blocks, far above the rest (a maximum
    missed would shift the exponentials by tens); a NaN makes its row NaN and no other."""
    rng = np.random.default_rng(size)
    x = (rng.standard_normal((6, size)) * 20).astype(dtype)
    for row, at in enumerate([0, size // 2, (size // 256) * 256 - 1, size - 1, 255, 256]):
        x[row, at] = 150
    p = F.softmax(x, axis=-1)
    np.testing.assert_allclose(p, scipy.special.softmax(x.astype(np.float64), axis=-1), rtol=2e-6, atol=1e-30)
    np.testing.assert_allclose(p.sum(axis=-1), 1.0, rtol=1e-6)
    with_nan = x.copy()
    with_nan[2, size // 3] = np.nan
    q = F.softmax(with_nan, axis=-1)
    assert np.all(np.isnan(q[2]))
    np.testing.assert_array_equal(np.delete(q, 2, axis=0), np.delete(p, 2, axis=0))


@pytest.mark.parametrize("has_fma", [True, False])
def test_fused_multiply_add_rounds_once_where_the_processor_has_it(monkeypatch, has_fma):
    """The float32 polynomials' steps (cnnlab.kernels.cpu._exp._fma): one rounding where the
    processor has the instruction, a product and a sum (two) where it has not. (1 + 2**-12)**2 =
    1 + 2**-11 + 2**-24 loses its last term when rounded to float32, which the sum shows."""
    from numba import njit

    from cnnlab.kernels.cpu import _exp

    if has_fma and not _exp._HAS_FMA:
        pytest.skip("this processor has no fused multiply-add")
    monkeypatch.setattr(_exp, "_HAS_FMA", has_fma)
    fma = njit(lambda a, b, c: _exp._fma(a, b, c))  # (compiled now, with the switch as set)
    a = np.float32(1 + 2.0 ** -12)
    got = fma(a, a, np.float32(-(1 + 2.0 ** -11)))
    assert got == (2.0 ** -24 if has_fma else 0.0)  # (a float32 result, returned as a Python float)


def test_sigmoid_does_not_overflow():
    x = np.array([-1e4, -800.0, 0.0, 800.0, 1e4])
    with np.errstate(over="raise"):
        np.testing.assert_allclose(F.sigmoid(x), [0, 0, 0.5, 1, 1])


def test_relu_textbook_definition():
    x = np.array([-2.0, -0.0, 0.0, 3.0, np.nan])
    out = F.relu(x)
    np.testing.assert_array_equal(out[:4], [0, 0, 0, 3])
    assert np.isnan(out[4])


@pytest.mark.parametrize("slope, error", [("0.1", TypeError), (None, TypeError), (float("nan"), ValueError)])
def test_bad_negative_slope(slope, error):
    with pytest.raises(error, match="negative_slope"):
        F.leaky_relu(np.ones(3), slope)


# ----------------------------------------------------------------------------- ReLU6, clip, hard sigmoid, hard swish, SiLU

float_arrays = arrays(st.sampled_from([np.float32, np.float64]), array_shapes(max_dims=4, max_side=5),
                      elements=st.floats(-10, 10, allow_nan=False, width=32))


def tolerance(dtype):
    return 1e-6 if dtype == np.float32 else 1e-12


@given(float_arrays, st.floats(-5, 5), st.floats(0, 5))
def test_activations_equal_their_references(x, low, width):
    tol = tolerance(x.dtype)
    for out, expected in [
        (F.relu6(x), naive.clip(x, 0, 6)),
        (F.clip(x, low, low + width), naive.clip(x, low, low + width)),
        (F.clip(x, max=low), np.minimum(x, low)),
        (F.clip(x, min=low), np.maximum(x, low)),
        (F.hardsigmoid(x), naive.hardsigmoid(x)),
        (F.hardsigmoid(x, alpha=0.2, beta=0.4), naive.hardsigmoid(x, 0.2, 0.4)),
        (F.hardswish(x), naive.hardswish(x)),
        (F.silu(x), naive.silu(x)),
    ]:
        assert out.shape == x.shape and out.dtype == x.dtype
        np.testing.assert_allclose(out, expected.astype(x.dtype), rtol=tol, atol=tol)


@pytest.mark.parametrize("forward, backward", [
    (F.relu6, F.relu6_backward),
    (lambda x: F.clip(x, -0.7, 0.4), lambda x, g: F.clip_backward(x, g, -0.7, 0.4)),
    (lambda x: F.clip(x, max=0.3), lambda x, g: F.clip_backward(x, g, max=0.3)),
    (F.hardsigmoid, F.hardsigmoid_backward),
    (lambda x: F.hardsigmoid(x, -0.3, 0.6), lambda x, g: F.hardsigmoid_backward(x, g, -0.3, 0.6)),
    (F.hardswish, F.hardswish_backward),
    (F.silu, F.silu_backward),
])
def test_backward_matches_finite_differences(forward, backward):
    rng = np.random.default_rng(0)
    x = rng.uniform(-8, 8, (3, 4, 5))
    x[np.abs(np.abs(x) - 3) < 1e-3] = 1.5  # no kink inside a finite-difference step
    x[(np.abs(x) < 1e-3) | (np.abs(x - 6) < 1e-3)] = 1.5
    upstream = rng.standard_normal(x.shape)
    expected = numeric_gradient(lambda: float(np.sum(forward(x) * upstream)), x)
    np.testing.assert_allclose(backward(x, upstream), expected, rtol=1e-6, atol=1e-8)


def test_gradients_at_the_boundaries_follow_pytorch():
    ones = np.ones(4)
    # hardtanh / relu6: 0 at the boundaries themselves
    np.testing.assert_array_equal(F.relu6_backward(np.array([0.0, 6.0, 1e-9, 6 - 1e-9]), ones), [0, 0, 1, 1])
    np.testing.assert_array_equal(F.clip_backward(np.array([-1.0, 1.0, 0.0, 2.0]), ones, -1, 1), [0, 0, 1, 0])
    # hardsigmoid: 1/6 strictly inside (-3, 3), 0 at -3 and 3
    np.testing.assert_allclose(F.hardsigmoid_backward(np.array([-3.0, 3.0, 0.0, 4.0]), ones), [0, 0, 1 / 6, 0])
    # hardswish: 0 below -3, x/3 + 1/2 on [-3, 3] (boundaries included), 1 above
    np.testing.assert_allclose(F.hardswish_backward(np.array([-3.5, -3.0, 3.0, 3.5]), ones), [0, -0.5, 1.5, 1])


def test_clip_keeps_nan_and_relu6_textbook_values():
    out = F.relu6(np.array([-2.0, 0.0, 3.0, 6.0, 7.5, np.nan]))
    np.testing.assert_array_equal(out[:5], [0, 0, 3, 6, 6])
    assert np.isnan(out[5])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_is_stable_for_huge_inputs(dtype):
    x = np.array([-1e4, -800.0, -50.0, 0.0, 50.0, 800.0, 1e4], dtype=dtype)
    with np.errstate(all="raise"):
        out = F.silu(x)
        grad = F.silu_backward(x, np.ones_like(x))
    np.testing.assert_allclose(out, [0, 0, -50 * np.exp(-50.0), 0, 50, 800, 1e4], rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(grad, [0, 0, 0, 0.5, 1, 1, 1], atol=1e-12)


@pytest.mark.parametrize("call, error, words", [
    (lambda: F.clip(np.ones(3), 2, 1), ValueError, "min"),
    (lambda: F.clip(np.ones(3)), ValueError, "min"),
    (lambda: F.clip(np.ones(3), float("nan"), 1), ValueError, "min"),
    (lambda: F.clip(np.ones(3), "0", 1), TypeError, "min"),
    (lambda: F.clip(np.ones(3), 0, "6"), TypeError, "max"),
    (lambda: F.hardsigmoid(np.ones(3), alpha="0.2"), TypeError, "alpha"),
    (lambda: F.hardsigmoid(np.ones(3), beta=float("inf")), ValueError, "beta"),
    (lambda: F.silu(np.arange(3)), TypeError, "normalize"),
    (lambda: F.hardswish(np.ones(3, np.float16)), TypeError, "float16"),
    (lambda: F.silu_backward(np.ones(3), np.ones(3, np.float32)), TypeError, "grad_out"),
    (lambda: F.relu6_backward(np.ones(3), np.ones(4)), ValueError, "grad_out"),
    (lambda: L.Clip(3, 1), ValueError, "min"),
    (lambda: L.HardSigmoid(alpha=None), TypeError, "alpha"),
])
def test_bad_input_names_the_argument(call, error, words):
    with pytest.raises(error, match=words):
        call()


LAYERS = [L.ReLU6(), L.Clip(-0.5, 0.25), L.Clip(max=1.0), L.HardSigmoid(), L.HardSigmoid(0.2, 0.5),
          L.HardSwish(), L.SiLU()]


@pytest.mark.parametrize("layer", LAYERS, ids=repr)
def test_layers_run_the_functional_ops_and_round_trip_through_config(layer):
    rng = np.random.default_rng(1)
    x = rng.uniform(-5, 5, (2, 3, 4))
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


@pytest.mark.usefixtures("small_cuda_launches")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_twins_equal_cpu(dtype):
    rng = np.random.default_rng(2)
    x = rng.uniform(-7, 7, (2, 3, 5)).astype(dtype)
    x[0, 0, :3] = [-3, 3, 6]
    upstream = rng.standard_normal(x.shape).astype(dtype)
    gx, gu = cnnlab.to_device(x), cnnlab.to_device(upstream)
    for forward, backward in [
        (F.relu6, F.relu6_backward),
        (lambda a: F.clip(a, -1, 2), lambda a, g: F.clip_backward(a, g, -1, 2)),
        (lambda a: F.hardsigmoid(a, 0.2, 0.5), lambda a, g: F.hardsigmoid_backward(a, g, 0.2, 0.5)),
        (F.hardswish, F.hardswish_backward),
        (F.silu, F.silu_backward),
    ]:
        for gpu, cpu in [(forward(gx), forward(x)), (backward(gx, gu), backward(x, upstream))]:
            assert is_gpu_array(gpu)
            host = cnnlab.to_host(gpu)
            assert host.dtype == dtype
            np.testing.assert_allclose(host, cpu, rtol=tolerance(dtype) * 10, atol=tolerance(dtype) * 10)


def test_the_vectorized_float32_exp_is_within_one_ulp():
    """The sigmoid kernels' exp(-|v|) (Cephes' expf written out, so that loops vectorize): within
    one float32 ulp of the float64 value down to -87.3, 0 below, NaN for NaN, math.exp in float64."""
    from numba import njit

    from cnnlab.kernels.cpu._exp import exp_neg_abs

    @njit
    def run(x, out):
        for i in range(x.shape[0]):
            out[i] = exp_neg_abs(x[i])

    x = np.concatenate([np.linspace(-87.3, 87.3, 400_001), [0.0, -0.0, 1e-30, 87.33, 87.34, 100.0, -1e4]])
    x = x.astype(np.float32)
    out = np.empty_like(x)
    run(x, out)
    expected = np.exp(-np.abs(x.astype(np.float64)))
    normal = expected >= np.finfo(np.float32).tiny
    assert np.all(np.abs(out[normal] - expected[normal]) <= np.spacing(expected[normal].astype(np.float32)))
    assert np.all(out[~normal] == 0)
    special = np.array([np.nan, np.inf, -np.inf], np.float32)
    out = np.empty_like(special)
    run(special, out)
    assert np.isnan(out[0]) and out[1] == 0 and out[2] == 0
    wide = np.array([-0.5, 3.0, -700.0])
    out = np.empty_like(wide)
    run(wide, out)
    np.testing.assert_array_equal(out, [np.exp(-0.5), np.exp(-3.0), np.exp(-700.0)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_and_silu_match_scipy_to_float_precision(dtype):
    x = np.linspace(-90, 90, 20_001).astype(dtype)
    expected = scipy.special.expit(x.astype(np.float64))
    tol = 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(F.sigmoid(x), expected, rtol=tol, atol=np.finfo(np.float32).tiny)
    np.testing.assert_allclose(F.silu(x), x * expected, rtol=tol, atol=100 * np.finfo(np.float32).tiny)


def test_float32_tanh_is_within_two_ulp_and_keeps_signed_zeros():
    """float32 tanh on the CPU is Cephes' tanhf on the vectorizable exp (an odd polynomial below
    0.625, (1 - e) / (1 + e) above): within 2 ulp of the float64 value, -0 stays -0, +-1 at
    +-inf, NaN for NaN."""
    x = np.concatenate([np.linspace(-12, 12, 200_001), np.linspace(-1e-3, 1e-3, 2001)]).astype(np.float32)
    expected = np.tanh(x.astype(np.float64))
    out = F.tanh(x)
    assert out.dtype == np.float32
    assert np.all(np.abs(out - expected) <= 2 * np.spacing(np.abs(expected).astype(np.float32)))
    special = F.tanh(np.array([-0.0, 0.0, np.inf, -np.inf, np.nan], np.float32))
    np.testing.assert_array_equal(special, [-0.0, 0.0, 1.0, -1.0, np.nan])
    assert np.signbit(special[0]) and not np.signbit(special[1])
