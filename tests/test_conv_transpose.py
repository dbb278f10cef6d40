"""Transposed convolution: against a scatter-loop reference (every stride, padding, dilation,
groups and output_padding), the adjoint identity with conv2d, finite differences, the GPU twin,
the layer, and ONNX ConvTranspose against onnxruntime."""

import naive
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx_models import make_model

import cnnlab
import cnnlab.functional as F
from cnnlab.layers import ConvTranspose2D

RNG = np.random.default_rng(0)


@st.composite
def transposed_geometries(draw):
    groups = draw(st.integers(1, 2))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))) for k in kernel)
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
    shape = (draw(st.integers(1, 2)), groups * draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    out_per_group = draw(st.integers(1, 2))
    return dict(shape=shape, weight=(shape[1], out_per_group) + kernel, stride=stride, padding=padding,
                output_padding=output_padding, groups=groups, dilation=dilation)


def arguments(g):
    return {k: g[k] for k in ("stride", "padding", "output_padding", "groups", "dilation")}


@settings(max_examples=40)
@given(transposed_geometries())
def test_conv_transpose2d_matches_the_scatter_reference(g):
    x, weight = RNG.standard_normal(g["shape"]), RNG.standard_normal(g["weight"])
    bias = RNG.standard_normal(g["weight"][1] * g["groups"])
    try:
        expected = naive.conv_transpose2d(x, weight, bias, **arguments(g))
    except ValueError:
        return
    if min(expected.shape[2:]) < 1:
        with pytest.raises(ValueError, match="empty output"):
            F.conv_transpose2d(x, weight, bias, **arguments(g))
        return
    out = F.conv_transpose2d(x, weight, bias, **arguments(g))
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)


@settings(max_examples=15)
@given(transposed_geometries())
def test_conv_transpose2d_backward_matches_finite_differences(g):
    x, weight = RNG.standard_normal(g["shape"]), RNG.standard_normal(g["weight"])
    bias = RNG.standard_normal(g["weight"][1] * g["groups"])
    try:
        out = F.conv_transpose2d(x, weight, bias, **arguments(g))
    except ValueError:
        return
    upstream = RNG.standard_normal(out.shape)
    grad_x, grad_weight, grad_bias = F.conv_transpose2d_backward(x, weight, upstream, **arguments(g))

    def loss():
        return float(np.sum(F.conv_transpose2d(x, weight, bias, **arguments(g)) * upstream))

    np.testing.assert_allclose(grad_x, naive.numeric_gradient(loss, x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad_weight, naive.numeric_gradient(loss, weight), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(grad_bias, naive.numeric_gradient(loss, bias), rtol=1e-6, atol=1e-7)


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    x, weight = RNG.standard_normal((2, 4, 5, 6)), RNG.standard_normal((4, 3, 3, 3))
    options = dict(stride=2, padding=1, dilation=1)
    up = F.conv_transpose2d(x, weight, output_padding=1, **options)
    y = RNG.standard_normal(up.shape)
    assert np.isclose(np.sum(F.conv2d(y, weight, **options) * x), np.sum(y * up))


@pytest.mark.parametrize("kernel, stride, dilation, padding", [
    (2, 2, 1, (0, 0)),  # windows side by side (an upsampling head): one phase
    (1, 3, 1, (0, 0)),  # gaps between the windows: rows no block writes are zeroed
    (3, 1, 1, (1, 1)),  # overlapping windows: even blocks, then odd blocks
    (4, 2, 1, (1, 2)),
    (3, 2, 2, (2, 1)),
])
@pytest.mark.parametrize("block_rows", [1, 2, 3, 7])
@pytest.mark.parametrize("groups", [1, 2])
def test_the_kernel_shares_blocks_of_rows(kernel, stride, dilation, padding, block_rows, groups):
    """The input-gradient kernel (a transposed convolution's forward) on blocks of rows, shared by
    two threads: the scatter reference's result; with a piece (sample, group) per thread, whose
    blocks the kernel keeps as given, the same bits as on one thread."""
    from cnnlab.kernels.cpu import conv as kernels

    x, weight = RNG.standard_normal((1, 2 * groups, 7, 5)), RNG.standard_normal((2 * groups, 3, kernel, kernel))
    pads = (padding, padding)
    expected = naive.conv_transpose2d(x, weight, stride=(stride, stride), padding=pads, groups=groups,
                                      dilation=(dilation, dilation))
    results = []
    for workers in (1, 2):
        out = np.full(expected.shape, np.nan)
        kernels.conv2d_backward_input(x, weight, out, stride, stride, padding[0], padding[0], dilation, dilation,
                                      groups, block_rows, workers)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
        results.append(out)
    if groups == 2:
        np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("kernel, dilation, tiles", [
    ((2, 2), (1, 1), True),  # the text detectors' 2x2 upsampling
    ((3, 1), (1, 1), True),
    ((1, 3), (2, 1), True),  # one tap along the height: its dilation changes nothing
    ((2, 3), (1, 1), True),
    ((2, 2), (2, 1), False),  # reach 3 with stride 2: overlapping windows
])
@pytest.mark.parametrize("shape, out_per_group, groups", [
    ((1, 6, 5, 4), 1, 1),  # one output channel
    ((2, 12, 3, 2), 5, 2),
    ((3, 40, 6, 7), 3, 1),
])
@pytest.mark.parametrize("small_blocks", [False, True])
def test_windows_that_tile_the_output_write_each_pixel_once(kernel, dilation, tiles, shape, out_per_group, groups,
                                                           small_blocks, monkeypatch):
    """A transposed convolution whose stride is its window (no padding) takes the items that
    write each output pixel once (``_tiled_input_items``), in blocks of channels and of rows
    (one channel and at most two rows an item where the blocks are forced small): every pixel
    written (the output starts as NaN), the scatter reference's values, and the same bits on
    one thread and two where both cut the same blocks (other blocks are other GEMMs, whose
    sums BLAS may round otherwise). A dilated window whose taps leave holes does not take
    them."""
    from cnnlab.kernels.cpu import conv as kernels

    window = kernel[0] * kernel[1]
    if small_blocks:  # (two rows of one channel's column gradient)
        monkeypatch.setattr(kernels, "TILED_COLUMN_BYTES", 8 * window * shape[3] * 2)
        assert kernels._tiled_blocks(shape[0] * groups, out_per_group, window, shape[2], shape[3], 8, 2)[1] <= 2
    stride = tuple(k if tiles else 2 for k in kernel)
    x, weight = RNG.standard_normal(shape), RNG.standard_normal((shape[1], out_per_group) + kernel)
    expected = naive.conv_transpose2d(x, weight, stride=stride, padding=((0, 0), (0, 0)), groups=groups,
                                      dilation=dilation)
    assert kernels._tiling_windows(expected.shape, shape, weight.shape, *stride, 0, 0) == tiles
    results = []
    for workers in (1, 2):
        out = np.full(expected.shape, np.nan)
        kernels.conv2d_backward_input(x, weight, out, *stride, 0, 0, *dilation, groups, 8, workers)
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
        results.append(out)
    cuts = [kernels._tiled_blocks(shape[0] * groups, out_per_group, window, shape[2], shape[3], 8, workers)
            for workers in (1, 2)]
    if not tiles or cuts[0] == cuts[1]:
        np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("call, error, words", [
    (lambda x, w: F.conv_transpose2d(x, w[:2]), ValueError, "weight has 2 input channels"),
    (lambda x, w: F.conv_transpose2d(x, w, stride=2, output_padding=2), ValueError, "output_padding=2 must be smaller"),
    (lambda x, w: F.conv_transpose2d(x, w, padding="same"), ValueError, "padding of conv_transpose2d"),
    (lambda x, w: F.conv_transpose2d(x, w, padding=3), ValueError, "empty output"),
    (lambda x, w: F.conv_transpose2d(x.astype(np.int32), w), TypeError, "normalize"),
])
def test_conv_transpose2d_bad_input(call, error, words):
    with pytest.raises(error, match=words):
        call(np.ones((1, 4, 2, 2), np.float32), np.ones((4, 3, 3, 3), np.float32))


@pytest.mark.usefixtures("small_cuda_launches")
def test_conv_transpose2d_gpu_twin():
    x = RNG.standard_normal((2, 4, 5, 6)).astype(np.float32)
    weight, bias = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32), RNG.standard_normal(3).astype(np.float32)
    gpu = F.conv_transpose2d(*(cnnlab.to_device(a) for a in (x, weight, bias)), stride=2, padding=1, output_padding=1)
    np.testing.assert_allclose(cnnlab.to_host(gpu), F.conv_transpose2d(x, weight, bias, stride=2, padding=1,
                                                                       output_padding=1), rtol=1e-4, atol=1e-4)


def test_the_layer_upsamples_trains_and_saves(tmp_path):
    x = cnnlab.Input((4, None, None))
    model = cnnlab.Model(x, ConvTranspose2D(4, 2, 4, stride=2, padding=1, seed=3)(x))
    data = RNG.standard_normal((2, 4, 5, 7)).astype(np.float32)
    out = model.forward(data, training=True)
    assert out.shape == (2, 2, 10, 14)
    model.backward(np.ones_like(out))
    assert model.layers[0].grads["weight"].shape == (4, 2, 4, 4)
    model.save(tmp_path / "up.npz")
    np.testing.assert_array_equal(cnnlab.load(tmp_path / "up.npz")(data), out)


onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("attributes", [dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
                                        dict(strides=[2, 1], pads=[0, 1, 1, 0], dilations=[1, 2], group=2)])
def test_onnx_conv_transpose_matches_onnxruntime(attributes, tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    import cnnlab.onnx

    groups = attributes.get("group", 1)
    weight = RNG.standard_normal((4, 6 // groups, 3, 3)).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(RNG.standard_normal(6).astype(np.float32), "b")]
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], kernel_shape=[3, 3], **attributes)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    proto = make_model(graph, 13)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    model = cnnlab.onnx.load(proto)
    cnnlab.onnx.save(model, tmp_path / "t.onnx")
    exported = ort.InferenceSession(str(tmp_path / "t.onnx"), providers=["CPUExecutionProvider"])
    for size in [(5, 6), (3, 8)]:
        x = RNG.standard_normal((2, 4, *size)).astype(np.float32)
        expected = session.run(None, {"x": x})[0]
        np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(exported.run(None, {"x": x})[0], expected, rtol=1e-4, atol=1e-4)
