"""Resizing: ONNX Resize's coordinate and rounding rules against onnxruntime, PyTorch's
interpolate rules, finite differences of the backward, the GPU twin, the layer and export."""

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx_models import make_model

import cnnlab
import cnnlab.functional as F
from cnnlab.layers import Resize

RNG = np.random.default_rng(0)
CASES = [("nearest", "half_pixel", "round_prefer_floor", (2.0, 3.0)),
         ("nearest", "asymmetric", "floor", (1.5, 0.6)),
         ("nearest", "align_corners", "ceil", (2.5, 2.0)),
         ("nearest", "pytorch_half_pixel", "round_prefer_ceil", (0.5, 1.3)),
         ("linear", "half_pixel", "round_prefer_floor", (2.0, 1.7)),
         ("linear", "align_corners", "floor", (2.0, 3.0)),
         ("linear", "pytorch_half_pixel", "floor", (3.0, 0.25)),
         ("linear", "asymmetric", "floor", (1.25, 4.0))]


def test_nearest_upsampling_copies_values_infinities_included():
    """Nearest-neighbour sampling copies its pixel (a weight of 0 does not multiply the other
    one: inf * 0 would be NaN); repeated output rows are copies of the row before."""
    x = np.array([[1.0, np.inf], [-np.inf, 2.0]], np.float32).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(F.resize(x, scale=2, mode="nearest")[0, 0], np.repeat(np.repeat(x[0, 0], 2, 0), 2, 1))
    on_device = F.resize(cnnlab.to_device(x), scale=2, mode="nearest")
    np.testing.assert_array_equal(cnnlab.to_host(on_device)[0, 0], np.repeat(np.repeat(x[0, 0], 2, 0), 2, 1))
    y = np.random.default_rng(1).standard_normal((2, 3, 5, 4)).astype(np.float32)
    np.testing.assert_array_equal(F.resize(y, scale=3, mode="nearest"), np.repeat(np.repeat(y, 3, 2), 3, 3))


def test_interpolate_follows_pytorch():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(F.interpolate(x, scale_factor=2)[0, 0, ::2, ::2], x[0, 0])  # nearest repeats
    np.testing.assert_array_equal(F.interpolate(x, size=(2, 2))[0, 0], [[0, 2], [8, 10]])  # floor(o * in / out)
    corners = F.interpolate(x, size=(7, 7), mode="bilinear", align_corners=True)[0, 0]
    np.testing.assert_allclose(corners[::2, ::2], x[0, 0])  # corner to corner: the input rows lie on the output
    half = F.interpolate(x, scale_factor=2, mode="bilinear")[0, 0]
    np.testing.assert_allclose(half[0, :3], [0, 0.25, 0.75])  # half-pixel centres, clamped at the edge
    with pytest.raises(ValueError, match="align_corners applies to the linear modes"):
        F.interpolate(x, scale_factor=2, align_corners=True)


@pytest.mark.parametrize("mode, transform, rounding, scales", CASES)
def test_resize_backward_matches_finite_differences(mode, transform, rounding, scales):
    x = RNG.standard_normal((1, 2, 4, 5))
    options = dict(scale=scales, mode=mode, coordinate_transformation_mode=transform, nearest_mode=rounding)
    out = F.resize(x, **options)
    upstream = RNG.standard_normal(out.shape)
    grad = F.resize_backward(x, upstream, **options)
    expected = naive.numeric_gradient(lambda: float(np.sum(F.resize(x, **options) * upstream)), x)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8)


@pytest.mark.usefixtures("small_cuda_launches")
@pytest.mark.parametrize("mode, transform, rounding, scales", CASES[::3])
def test_resize_gpu_twin(mode, transform, rounding, scales):
    x = RNG.standard_normal((2, 2, 4, 5)).astype(np.float32)
    options = dict(scale=scales, mode=mode, coordinate_transformation_mode=transform, nearest_mode=rounding)
    out = F.resize(cnnlab.to_device(x), **options)
    np.testing.assert_allclose(cnnlab.to_host(out), F.resize(x, **options), rtol=1e-5, atol=1e-6)
    upstream = RNG.standard_normal(out.shape).astype(np.float32)
    grad = F.resize_backward(cnnlab.to_device(x), cnnlab.to_device(upstream), **options)
    np.testing.assert_allclose(cnnlab.to_host(grad), F.resize_backward(x, upstream, **options), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("call, words", [
    (lambda x: F.resize(x), "give size or scale"),
    (lambda x: F.resize(x, size=4, scale=2), "give size or scale"),
    (lambda x: F.resize(x, scale=0.1), "empty output"),
    (lambda x: F.resize(x, scale=-1), "scale must be a positive number"),
    (lambda x: F.resize(x, size=(2, 2, 2)), "size must be an integer or a pair"),
    (lambda x: F.resize(x, size=3, mode="cubic"), "mode must be one of"),
    (lambda x: F.resize(x, size=3, coordinate_transformation_mode="tf_crop_and_resize"), "coordinate_transformation"),
])
def test_resize_bad_input(call, words):
    with pytest.raises(ValueError, match=words):
        call(np.ones((1, 1, 4, 4), np.float32))


def test_the_layer_upsamples_images_of_any_size(tmp_path):
    x = cnnlab.Input((2, None, None))
    model = cnnlab.Model(x, Resize(scale=2, mode="bilinear")(x))
    assert model.output_shapes((2, 3, 5))[0] == (2, 6, 10)
    data = RNG.standard_normal((1, 2, 3, 5)).astype(np.float32)
    out = model.forward(data, training=True)
    assert out.shape == (1, 2, 6, 10) and model.backward(np.ones_like(out)).shape == data.shape
    model.save(tmp_path / "r.npz")
    np.testing.assert_array_equal(cnnlab.load(tmp_path / "r.npz")(data), out)


onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnlab.onnx  # noqa: E402


def resize_model(mode, transform, rounding, scales=None, sizes=None):
    """A Resize node by scales (opset 13), or to the sizes of axes 2 and 3 (opset 18's ``axes``:
    the batch size is not in the file)."""
    inputs = ["x", "", "s"] if scales is not None else ["x", "", "", "s"]
    value = np.array([1, 1, *scales], np.float32) if scales is not None else np.array(sizes, np.int64)
    extra = {} if scales is not None else dict(axes=[2, 3])
    node = helper.make_node("Resize", inputs, ["y"], mode=mode, coordinate_transformation_mode=transform,
                            nearest_mode=rounding, **extra)
    opset = 13 if scales is not None else 18
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(value, "s")])
    return make_model(graph, opset)


@pytest.mark.parametrize("mode, transform, rounding, scales", CASES)
def test_onnx_resize_by_scales_matches_onnxruntime_and_exports_back(mode, transform, rounding, scales, tmp_path):
    proto = resize_model(mode, transform, rounding, scales=scales)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    model = cnnlab.onnx.load(proto)
    cnnlab.onnx.save(model, tmp_path / "r.onnx")
    exported = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    for size in [(5, 7), (8, 4)]:
        x = RNG.standard_normal((2, 3, *size)).astype(np.float32)
        expected = session.run(None, {"x": x})[0]
        np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(exported.run(None, {"x": x})[0], expected, rtol=1e-5, atol=1e-5)


def test_onnx_resize_to_sizes_matches_onnxruntime_and_exports_back(tmp_path):
    proto = resize_model("linear", "half_pixel", "floor", sizes=(9, 4))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    model = cnnlab.onnx.load(proto)
    cnnlab.onnx.save(model, tmp_path / "r.onnx")
    again = cnnlab.onnx.load(tmp_path / "r.onnx")
    exported = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    x = RNG.standard_normal((2, 3, 5, 7)).astype(np.float32)
    expected = session.run(None, {"x": x})[0]
    for result in (model(x), again(x), exported.run(None, {"x": x})[0]):
        np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def test_align_corners_by_a_scale_follows_the_onnx_specification():
    """ONNX divides by the resized length ``in * scale`` less 1, not floored (its own node case
    test_resize_downsample_scales_linear_align_corners: 3.142857); onnxruntime 1.x uses the
    floored output size there (4.0). cnnlab follows the specification; the two agree whenever
    ``in * scale`` is a whole number."""
    x = np.arange(1, 9, dtype=np.float32).reshape(1, 1, 2, 4)
    out = F.resize(x, scale=0.6, mode="bilinear", coordinate_transformation_mode="align_corners")
    np.testing.assert_allclose(out, [[[[1.0, 3.142857]]]], rtol=1e-6)


def test_onnx_resize_refusals_name_the_node():
    with pytest.raises(NotImplementedError, match="ONNX Resize node 'y': mode='cubic'"):
        cnnlab.onnx.load(resize_model("cubic", "half_pixel", "floor", scales=(2, 2)))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.sampled_from(["nearest", "nearest-exact", "linear", "area"]), st.booleans(),
       st.booleans(), st.data())
def test_interpolate_of_1_2_and_3_spatial_axes_is_pytorchs_per_axis(spatial, mode, by_scale, corners, data):
    shape = (2, 2) + tuple(data.draw(st.integers(1, 5)) for _ in range(spatial))
    x = np.random.default_rng(spatial).standard_normal(shape)
    name = {1: "linear", 2: "bilinear", 3: "trilinear"}[spatial] if mode == "linear" else mode
    corners = corners and mode == "linear"
    if by_scale:
        scale = data.draw(st.sampled_from([0.6, 1.0, 1.5, 2.0, 2.7]))
        out_sizes = [int(np.floor(n * scale)) for n in shape[2:]]
        if min(out_sizes) < 1:
            return
        out = F.interpolate(x, scale_factor=scale, mode=name, align_corners=True if corners else None)
    else:
        out_sizes = [data.draw(st.integers(1, 6)) for _ in shape[2:]]
        scale = None
        out = F.interpolate(x, size=tuple(out_sizes), mode=name, align_corners=True if corners else None)
    expected = x
    for k, size in enumerate(out_sizes):
        if mode == "area":
            continue
        used = None if (corners or scale is None) else scale
        expected = naive.interpolate_axis_loops(expected, 2 + k, size, mode, corners, used)
    if mode == "area":
        wide = x.reshape(shape[:2] + (-1, shape[-1])) if spatial == 3 else x.reshape(shape[:2] + (1,) + shape[2:]) \
            if spatial == 1 else x
        if spatial == 3:  # separable: depth, then height and width
            expected = naive.adaptive_avg_pool2d_loops(x.reshape((2, 2 * shape[2]) + shape[3:]), *out_sizes[1:])
            expected = expected.reshape((2, 2, shape[2], -1))
            expected = naive.adaptive_avg_pool2d_loops(expected, out_sizes[0], expected.shape[-1])
        else:
            sizes = out_sizes if spatial == 2 else [1] + out_sizes
            expected = naive.adaptive_avg_pool2d_loops(wide, *sizes)
        expected = expected.reshape((2, 2) + tuple(out_sizes))
    assert out.shape == (2, 2) + tuple(out_sizes)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 7), st.integers(1, 7), st.integers(1, 5), st.integers(1, 5))
def test_adaptive_avg_pool2d_is_its_definition_and_differentiates(h, w, oh, ow):
    x = np.random.default_rng(h * 7 + w).standard_normal((2, 3, h, w))
    out = F.adaptive_avg_pool2d(x, (oh, ow))
    np.testing.assert_allclose(out, naive.adaptive_avg_pool2d_loops(x, oh, ow), atol=1e-12)
    upstream = np.random.default_rng(1).standard_normal(out.shape)
    grad = F.adaptive_avg_pool2d_backward(x, upstream, (oh, ow))
    numeric = naive.numeric_gradient(lambda: float(np.sum(F.adaptive_avg_pool2d(x, (oh, ow)) * upstream)), x)
    np.testing.assert_allclose(grad, numeric, atol=1e-7)
    assert F.adaptive_avg_pool2d(x[0], (oh, None)).shape == (3, oh, w)  # one sample; None keeps the axis


@pytest.mark.parametrize("call, match", [
    (lambda: F.interpolate(np.ones((1, 1, 2, 2)), size=3, mode="bicubic"), "mode must be one of"),
    (lambda: F.interpolate(np.ones((1, 1, 2, 2)), size=3, mode="linear"), "does not take a 4-D input"),
    (lambda: F.interpolate(np.ones((1, 2)), size=3), "must be \\(N, C, L\\)"),
    (lambda: F.interpolate(np.ones((1, 1, 2)), size=(3, 3)), "1 of them"),
    (lambda: F.adaptive_avg_pool2d(np.ones((1, 1, 2, 2)), (1, 2, 3)), "output_size"),
])
def test_interpolate_bad_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()
