"""Converters from ONNX ops to cnnlab layers, one function per op type.

Each converter's keyword-only parameters are the ONNX attributes it implements, with the
specification's defaults; an attribute it does not take is refused by the importer. Inputs
arrive as symbolic tensors, or as NumPy arrays when they are constants.
"""

import math

import numpy as np

from .. import layers as L
from ..device import to_host
from .registry import converter

# ----------------------------------------------------------------------------- helpers


def _pair(ctx, values, name, default):
    values = list(values) if values is not None else [default, default]
    if len(values) != 2:
        ctx.fail(f"{name}={values}: cnnlab implements 2-D (NCHW) ops only")
    return tuple(int(v) for v in values)


def _spatial(ctx, x, what="input"):
    dims = ctx.dims(x)
    if len(dims) != 3:
        ctx.fail(f"the {what} has shape (N, {', '.join(map(str, dims))}); cnnlab implements 2-D (NCHW) ops only")
    return dims


def _padding(ctx, x, auto_pad, pads, kernel, strides, dilations, ceil_mode=False):
    """cnnlab's padding for ONNX ``auto_pad``/``pads`` ([top, left, bottom, right]): a pair when
    symmetric, ((top, bottom), (left, right)) otherwise. ``ceil_mode`` None: a convolution's, which
    may also be the word ``'same_upper'``/``'same_lower'`` when the input size is known only at
    run time."""
    if auto_pad in ("NOTSET", ""):
        pads = list(pads) if pads is not None else [0, 0, 0, 0]
        if len(pads) != 4:
            ctx.fail(f"pads={pads}: cnnlab implements 2-D (NCHW) ops only")
        if min(pads) < 0:
            ctx.fail(f"negative pads {pads}")
        top, left, bottom, right = (int(p) for p in pads)
    elif auto_pad == "VALID":
        top = left = bottom = right = 0
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        _, height, width = _spatial(ctx, x)
        if height is None or width is None:
            return auto_pad.lower()  # the layer resolves ONNX's rule for each input size
        sides = []
        for size, k, s, d in zip((height, width), kernel, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small = total // 2
            sides.append((small, total - small) if auto_pad == "SAME_UPPER" else (total - small, small))
        (top, bottom), (left, right) = sides
    else:
        ctx.fail(f"auto_pad={auto_pad!r} is not an ONNX value")
    if top == bottom and left == right:
        return (top, left)
    return ((top, bottom), (left, right))


def per_channel(value, channels, rank, axis=1):
    """A constant that broadcasts against a (N, channels, ...) tensor of ``rank`` axes as one
    value per channel, as a (channels,) array; None when it varies along another axis. With
    ``axis`` another axis holds the channels (a ``Dense`` layer's outputs: the last one)."""
    value = np.asarray(value)
    if value.size == 1:
        return np.full(channels, value.reshape(-1)[0])
    full = (1,) * (rank - value.ndim) + value.shape
    if len(full) != rank or full[axis] != channels or any(d != 1 for i, d in enumerate(full) if i != axis % rank):
        return None
    return value.reshape(channels)


def _per_output(layer, constant, rank):
    """``constant`` as one value per output of ``layer`` (:func:`per_channel`: along the last
    axis for a ``Dense`` layer, axis 1 for a convolution) of a tensor of ``rank`` axes, or None."""
    return per_channel(constant, layer.params["weight"].shape[0], rank, -1 if isinstance(layer, L.Dense) else 1)


def _fold_or_fail(ctx, position, x, constant, kind):
    """Fold a constant Add (``kind='bias'``) or Mul (``'scale'``) into the convolution or
    fully-connected layer that produced ``x``, the node's input number ``position``; returns
    the folded tensor. A convolution's values go per channel (axis 1), a ``Dense`` layer's per
    output feature (the last axis: a MatMul of (N, T, K) by a constant, then an Add of its
    (M,) bias, as transformers' and recognizers' heads are written)."""
    name = ctx.node.input[position]
    layer = ctx.foldable.get(name)
    if layer is None or ctx.uses.get(name, 0) != 1:
        ctx.fail(f"a constant operand ({kind}) can be imported only right after a Conv, Gemm or MatMul "
                 "whose output nothing else reads")
    channels = layer.params["weight"].shape[0]
    values = _per_output(layer, constant, len(tuple(x.shape)))
    if values is None:
        ctx.fail(f"a constant {kind} of shape {np.shape(constant)} does not act per output channel of "
                 f"the {type(layer).__name__} before it")
    values = values.astype(ctx.dtype)
    if "bias" not in layer.params:  # a convolution without bias gains one to fold into
        layer.use_bias = True
        layer.params["bias"] = np.zeros(channels, dtype=ctx.dtype)
    if kind == "bias":
        layer.params["bias"] += values
    else:
        layer.params["weight"] *= values.reshape((channels,) + (1,) * (layer.params["weight"].ndim - 1))
        layer.params["bias"] *= values
    ctx.foldable.pop(name)
    ctx.foldable[ctx.node.output[0]] = layer  # a further constant Add/Mul may fold too
    return x


def _foldable(ctx, layer, tensor):
    ctx.foldable[ctx.node.output[0]] = layer
    return tensor


# ----------------------------------------------------------------------------- convolution and dense


@converter("Conv", since=1)
def conv(ctx, x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
         strides=None):
    x = ctx.tensor(x, "X")
    w = ctx.weights(w, "W")
    if w.ndim != 4:
        ctx.fail(f"weights of shape {w.shape}: cnnlab implements 2-D convolution only")
    if kernel_shape is not None and tuple(kernel_shape) != w.shape[2:]:
        ctx.fail(f"kernel_shape={kernel_shape} differs from the weights' {w.shape[2:]}")
    strides, dilations = _pair(ctx, strides, "strides", 1), _pair(ctx, dilations, "dilations", 1)
    padding = _padding(ctx, x, auto_pad, pads, w.shape[2:], strides, dilations, ceil_mode=None)
    b = None if b is None else ctx.weights(b, "B")
    if group == 1 and padding in ((0, 0), "valid"):
        x, w, b = _fold_input_affine(ctx, x, w, b)
    layer = L.Conv2D(w.shape[1] * group, w.shape[0], w.shape[2:], stride=strides, padding=padding,
                     dilation=dilations, groups=group, bias=b is not None, dtype=ctx.dtype.name)
    layer.params["weight"][...] = w
    if b is not None:
        layer.params["bias"][...] = b
    return _foldable(ctx, layer, layer(x))


def _fold_input_affine(ctx, x, w, b):
    """A convolution without padding reading ``a * z + b`` (a Scale then a Bias, per channel or
    scalar: the learnable affine PP-OCR puts after its activations) that nothing else reads reads
    ``z`` instead, with ``a`` in its weights and ``b`` in its bias: ``W (a z + b) = (W a) z + W b``
    exactly, since no padded zero meets the shift. Returns ``(input, weights, bias)``."""
    names = {id(t): n for n, t in ctx.tensors.items()}
    channels = w.shape[1]
    scale, shift, z = np.ones(channels), np.zeros(channels), x
    layer = getattr(z.node, "layer", None)
    if isinstance(layer, L.Affine) and layer.num_channels == channels and ctx.uses.get(names.get(id(z)), 0) == 1:
        scale, shift = to_host(layer.params["weight"]).astype(np.float64), to_host(layer.params["bias"]).astype(np.float64)
        z = z.node.inputs[0]
    for layer_type in (L.Bias, L.Scale):
        layer = getattr(z.node, "layer", None)
        if not isinstance(layer, layer_type) or ctx.uses.get(names.get(id(z)), 0) != 1:
            continue
        values = per_channel(to_host(layer.params["weight"]), channels, 4)
        if values is None:
            break
        # x = scale * z + shift, walking back from x: a Bias adds to the shift, a Scale before it
        # multiplies what reaches the shift's left
        if layer_type is L.Bias:
            shift = shift + scale * values
        else:
            scale = scale * values
        z = z.node.inputs[0]
    if z is x:
        return x, w, b
    folded = (w * scale.reshape(1, channels, 1, 1)).astype(w.dtype)
    bias = (0 if b is None else b) + np.einsum("fchw,c->f", w.astype(np.float64), shift)
    return z, folded, np.asarray(bias, dtype=w.dtype)


@converter("Gemm", since=1)
def gemm(ctx, a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    a = ctx.tensor(a, "A")
    if transA:
        ctx.fail("transA=1: cnnlab's Dense takes the samples as rows")
    weight = ctx.weights(b, "B")
    if weight.ndim != 2:
        ctx.fail(f"B of shape {weight.shape} is not a matrix")
    weight = weight if transB else weight.T  # cnnlab (and PyTorch) keep (out, in)
    layer = L.Dense(weight.shape[1], weight.shape[0], bias=True, dtype=ctx.dtype.name)
    layer.params["weight"][...] = alpha * weight
    if c is None:
        layer.params["bias"][...] = 0
    else:
        bias = per_channel(ctx.weights(c, "C"), weight.shape[0], 2)
        if bias is None:
            ctx.fail(f"C of shape {np.shape(c)} is not one bias per output")
        layer.params["bias"][...] = beta * bias
    return _foldable(ctx, layer, layer(a))


@converter("ConvTranspose", since=1)
def conv_transpose(ctx, x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                   output_padding=None, output_shape=None, pads=None, strides=None):
    x = ctx.tensor(x, "X")
    _spatial(ctx, x)
    weight = ctx.weights(w, "W")
    if weight.ndim != 4:
        ctx.fail(f"W of shape {weight.shape}: cnnlab implements 2-D transposed convolutions only")
    if auto_pad not in ("NOTSET", "VALID", ""):
        ctx.fail(f"auto_pad={auto_pad} is not supported for ConvTranspose (give pads)")
    if output_shape is not None:
        ctx.fail("output_shape is not supported (give pads and output_padding)")
    strides, dilations = list(strides or [1, 1]), list(dilations or [1, 1])
    pads = [0, 0, 0, 0] if auto_pad == "VALID" or pads is None else [int(p) for p in pads]
    if len(pads) != 4 or min(pads) < 0:
        ctx.fail(f"pads={pads} must be four non-negative numbers")
    layer = L.ConvTranspose2D(weight.shape[0], weight.shape[1] * group, weight.shape[2:], stride=strides,
                              padding=((pads[0], pads[2]), (pads[1], pads[3])),
                              output_padding=list(output_padding or [0, 0]), groups=group, dilation=dilations,
                              bias=b is not None, dtype=ctx.dtype.name)
    layer.params["weight"][...] = weight
    if b is not None:
        layer.params["bias"][...] = ctx.weights(b, "B")
    return layer(x)


@converter("MatMul", since=1)
def matmul(ctx, a, b):
    a = ctx.tensor(a, "A")
    weight = ctx.weights(b, "B")
    dims = ctx.dims(a)
    if weight.ndim != 2 or not dims or dims[-1] != weight.shape[0]:
        ctx.fail(f"cnnlab imports MatMul of a (N, ..., K) tensor by a constant (K, M) matrix, got "
                 f"(N, {', '.join(map(str, dims))}) by {weight.shape}")
    layer = L.Dense(weight.shape[0], weight.shape[1], bias=True, dtype=ctx.dtype.name)
    layer.params["weight"][...] = weight.T
    layer.params["bias"][...] = 0
    return _foldable(ctx, layer, layer(a))


@converter("BatchNormalization", since=1)
def batch_normalization(ctx, x, scale, b, mean, var, *, epsilon=1e-5, momentum=0.9, training_mode=0,
                        spatial=1):
    x = ctx.tensor(x, "X")
    if training_mode:
        ctx.fail("training_mode=1: cnnlab imports inference graphs (export the model in eval mode)")
    if not spatial:
        ctx.fail("spatial=0 is not supported")
    dims = ctx.dims(x)
    if not dims or dims[0] is None:
        ctx.fail(f"the input has shape {x.shape}: the channel axis must have a known size")
    layer = L.BatchNorm2D(dims[0], eps=epsilon, momentum=1 - momentum, dtype=ctx.dtype.name)
    layer.params["weight"][...] = ctx.weights(scale, "scale")
    layer.params["bias"][...] = ctx.weights(b, "B")
    layer.buffers["running_mean"][...] = ctx.weights(mean, "input_mean")
    layer.buffers["running_var"][...] = ctx.weights(var, "input_var")
    if len(dims) == 3:
        return layer(x)
    if len(dims) > 3:
        ctx.fail(f"the input has shape {x.shape}; cnnlab normalizes (N, C), (N, C, L) and (N, C, H, W) batches")
    extra = list(range(len(dims) + 1, 4))  # (N, C) and (N, C, L) run as (N, C, L, 1) images
    return L.Squeeze(extra)(layer(L.Unsqueeze(extra)(x)))


def _group_normalization(ctx, x, scale, bias, epsilon, num_groups, per_channel):
    x = ctx.tensor(x, "X")
    if num_groups is None:
        ctx.fail("the num_groups attribute is missing")
    channels = ctx.dims(x)[0]
    if num_groups < 1 or channels % num_groups:
        ctx.fail(f"num_groups={num_groups} must divide the {channels} channels")
    scale, bias = ctx.weights(scale, "scale").reshape(-1), ctx.weights(bias, "bias").reshape(-1)
    if not per_channel:  # opset 18: one scale and bias per group, for each of its channels
        scale, bias = (np.repeat(a, channels // num_groups) if a.size == num_groups else a for a in (scale, bias))
    if scale.size != channels or bias.size != channels:
        ctx.fail(f"scale and bias must have {channels} entries (or one per group before opset 21), "
                 f"got {scale.size} and {bias.size}")
    layer = L.GroupNorm(num_groups, channels, eps=epsilon, dtype=ctx.dtype.name)
    layer.params["weight"][...] = scale
    layer.params["bias"][...] = bias
    return layer(x)


@converter("LayerNormalization", since=17)
def layer_normalization(ctx, x, scale, bias=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    x = ctx.tensor(x, "X")
    rank = len(tuple(x.shape))
    first = axis % rank if -rank <= axis < rank else None
    if first is None or first == 0:
        ctx.fail(f"axis={axis}: cnnlab normalizes axes after the batch axis only")
    normalized = ctx.dims(x)[first - 1:]
    if None in normalized:
        ctx.fail(f"the normalized axes have sizes known only when the model runs ({normalized})")
    scale = ctx.weights(scale, "Scale")
    layer = L.LayerNorm(normalized, eps=epsilon, bias=bias is not None, dtype=ctx.dtype.name)
    layer.params["weight"][...] = np.broadcast_to(scale, normalized)
    if bias is not None:
        layer.params["bias"][...] = np.broadcast_to(ctx.weights(bias, "B"), normalized)
    if not any(ctx.uses.get(name) for name in ctx.node.output[1:]):
        return layer(x)
    _, mean, inverse = normalization_statistics(ctx, x, list(range(first, rank)), epsilon)
    return layer(x), mean, inverse  # the optional Mean and InvStdDev outputs too


def normalization_statistics(ctx, x, axes, epsilon):
    """``(x - mean, mean, 1 / sqrt(variance + epsilon))`` over ``axes`` (kept as 1s), as
    whole-tensor layers: LayerNormalization's formula and its optional outputs."""
    mean = L.Reduce("mean", axes, keepdims=True)(x)
    centred = L.Arithmetic("subtract")([x, mean])
    variance = L.Reduce("mean", axes, keepdims=True)(L.Arithmetic("multiply")([centred, centred]))
    shifted = L.Arithmetic("add", constants={1: np.array(epsilon, ctx.dtype)})([variance])
    inverse = L.Arithmetic("power", constants={1: np.array(-0.5, ctx.dtype)})([shifted])
    return centred, mean, inverse


@converter("Resize", since=10)
def resize(ctx, x, roi=None, scales=None, sizes=None, *, mode="nearest", coordinate_transformation_mode="half_pixel",
           nearest_mode="round_prefer_floor", cubic_coeff_a=-0.75, exclude_outside=0, extrapolation_value=0.0,
           antialias=0, axes=None, keep_aspect_ratio_policy="stretch"):
    """Nearest and linear resizing of the height and width, from constant scales or sizes."""
    x = ctx.tensor(x, "X")
    _spatial(ctx, x)
    if ctx.opset < 11:  # Resize-10: (X, scales)
        roi, scales = None, roi
    if mode not in ("nearest", "linear"):
        ctx.fail(f"mode={mode!r}: cnnlab implements 'nearest' and 'linear'")
    if coordinate_transformation_mode not in ("half_pixel", "pytorch_half_pixel", "asymmetric", "align_corners"):
        ctx.fail(f"coordinate_transformation_mode={coordinate_transformation_mode!r} is not supported")
    if exclude_outside or antialias or keep_aspect_ratio_policy != "stretch":
        ctx.fail("exclude_outside, antialias and keep_aspect_ratio_policy are not supported")
    if axes is not None and sorted(int(a) % 4 for a in axes) != [2, 3]:
        ctx.fail(f"axes={list(axes)}: cnnlab resizes height and width only")
    scales = None if scales is None else ctx.constant(scales, "scales").reshape(-1)
    sizes = None if sizes is None else ctx.constant(sizes, "sizes").reshape(-1)
    if scales is not None and scales.size == 0:
        scales = None
    if (scales is None) == (sizes is None):
        ctx.fail("give scales or sizes, one of them")
    given = scales if scales is not None else sizes
    if axes is not None and given.size == 2:  # opset 18: values for the listed axes only
        order = [int(a) % 4 for a in axes]
        given = np.concatenate([[1, ctx.dims(x)[0]] if sizes is not None else [1, 1],
                                [given[order.index(2)], given[order.index(3)]]])
        scales, sizes = (given, None) if scales is not None else (None, given)
    if given.size != 4 or float(given[1]) != (1 if scales is not None else ctx.dims(x)[0]) or (
            scales is not None and float(given[0]) != 1):
        ctx.fail(f"{'scales' if scales is not None else 'sizes'}={given.tolist()}: cnnlab resizes height and width only")
    options = dict(mode="bilinear" if mode == "linear" else "nearest",
                   coordinate_transformation_mode=coordinate_transformation_mode, nearest_mode=nearest_mode)
    if scales is not None:
        return L.Resize(scale=(float(scales[2]), float(scales[3])), **options)(x)
    return L.Resize(size=(int(sizes[2]), int(sizes[3])), **options)(x)


@converter("Transpose", since=1)
def transpose(ctx, x, *, perm=None):
    x = ctx.tensor(x, "data")
    rank = len(tuple(x.shape))
    perm = list(range(rank))[::-1] if perm is None else [int(p) for p in perm]
    return L.Transpose(perm)(x)


@converter("InstanceNormalization", since=6)
def instance_normalization(ctx, x, scale, bias, *, epsilon=1e-5):
    """Each sample's channels normalized on their own: a group norm with one channel per group."""
    x = ctx.tensor(x, "input")
    channels = ctx.dims(x)[0]
    if channels is None:
        ctx.fail("the number of channels is known only when the model runs")
    return _group_normalization(ctx, x, scale, bias, epsilon, channels, per_channel=True)


@converter("GroupNormalization", since=18)
def group_normalization_18(ctx, x, scale, bias, *, epsilon=1e-5, num_groups=None, stash_type=1):
    return _group_normalization(ctx, x, scale, bias, epsilon, num_groups, per_channel=False)


@converter("GroupNormalization", since=21)
def group_normalization(ctx, x, scale, bias, *, epsilon=1e-5, num_groups=None, stash_type=1):
    return _group_normalization(ctx, x, scale, bias, epsilon, num_groups, per_channel=True)


# ----------------------------------------------------------------------------- activations


def _activation(layer):
    def convert(ctx, x):
        return layer()(ctx.tensor(x, "X"))
    return convert


converter("Relu")(_activation(L.ReLU))
converter("Sigmoid")(_activation(L.Sigmoid))
converter("Tanh")(_activation(L.Tanh))
converter("HardSwish")(_activation(L.HardSwish))


@converter("Identity")
def identity(ctx, x):
    return ctx.tensor(x, "input")  # the same tensor: no layer (a file's outputs are often named by one)


@converter("LeakyRelu")
def leaky_relu(ctx, x, *, alpha=0.01):
    return L.LeakyReLU(alpha)(ctx.tensor(x, "X"))


@converter("HardSigmoid")
def hard_sigmoid(ctx, x, *, alpha=0.2, beta=0.5):
    return L.HardSigmoid(alpha=alpha, beta=beta)(ctx.tensor(x, "X"))


@converter("Clip", since=11)
def clip(ctx, x, low=None, high=None):
    x = ctx.tensor(x, "input")
    low = None if low is None else float(ctx.constant(low, "min"))
    high = None if high is None else float(ctx.constant(high, "max"))
    if low is None and high is None:
        return L.Identity()(x)
    if low == 0 and high == 6:
        return L.ReLU6()(x)
    return L.Clip(low, high)(x)


def _softmax_axis(ctx, x, axis):
    rank = len(tuple(x.shape))
    if not -rank <= axis < rank:
        ctx.fail(f"axis={axis} is outside the input's {rank} axes")
    axis %= rank
    if ctx.opset < 13 and axis != rank - 1:
        ctx.fail(f"axis={axis} before opset 13 means softmax over the flattened trailing axes, which "
                 "cnnlab does not implement")
    return axis


@converter("Softmax")
def softmax(ctx, x, *, axis=None):
    x = ctx.tensor(x, "input")
    axis = (1 if ctx.opset < 13 else -1) if axis is None else axis
    if ctx.opset < 13 and axis == 1 and len(tuple(x.shape)) == 2:
        axis = -1
    return L.Softmax(axis=_softmax_axis(ctx, x, axis))(x)


@converter("LogSoftmax")
def log_softmax(ctx, x, *, axis=None):
    x = ctx.tensor(x, "input")
    if not hasattr(L, "LogSoftmax"):
        ctx.fail("cnnlab has no LogSoftmax layer")
    axis = (1 if ctx.opset < 13 else -1) if axis is None else axis
    if ctx.opset < 13 and axis == 1 and len(tuple(x.shape)) == 2:
        axis = -1
    return L.LogSoftmax(axis=_softmax_axis(ctx, x, axis))(x)


# ----------------------------------------------------------------------------- pooling


def pool_layer(ctx, x, layer_type, kernel_shape, strides, pads, auto_pad, dilations=None, ceil_mode=0, **options):
    x = ctx.tensor(x, "X")
    if x.shape is not None and len(x.shape) == 3:  # (N, C, L) pools as (N, C, 1, L)
        def widen(values, fill):
            return None if values is None else [fill] + [int(v) for v in values]
        pads = None if pads is None else [0, int(pads[0]), 0, int(pads[1])]
        wide = pool_layer(ctx, L.Unsqueeze([2])(x), layer_type, widen(kernel_shape, 1), widen(strides, 1), pads,
                          auto_pad, widen(dilations, 1), ceil_mode, **options)
        return L.Squeeze([2])(wide)
    _spatial(ctx, x)
    kernel = _pair(ctx, kernel_shape, "kernel_shape", 1)
    strides = _pair(ctx, strides, "strides", 1)
    dilations = _pair(ctx, dilations, "dilations", 1)
    padding = _padding(ctx, x, auto_pad, pads, kernel, strides, dilations, ceil_mode)
    if dilations != (1, 1):
        options["dilation"] = dilations
    if ceil_mode:
        options["ceil_mode"] = True
    try:
        layer = layer_type(kernel, stride=strides, padding=padding, **options)
    except TypeError as exc:
        ctx.fail(f"{', '.join(sorted(options)) or 'these settings'}: not supported by "
                 f"{layer_type.__name__} ({exc})")
    return layer(x)


@converter("MaxPool", since=1)
def max_pool(ctx, x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
             storage_order=0, strides=None):
    if storage_order:
        ctx.fail("storage_order=1 (column-major indices) is not supported")
    return pool_layer(ctx, x, L.MaxPool2D, kernel_shape, strides, pads, auto_pad, dilations, ceil_mode), None


@converter("AveragePool", since=1)
def average_pool(ctx, x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                 kernel_shape=None, pads=None, strides=None):
    if dilations is not None and any(d != 1 for d in dilations):
        ctx.fail(f"dilations={dilations} for average pooling are not supported")
    padded = pads is not None and any(pads) or auto_pad in ("SAME_UPPER", "SAME_LOWER")
    options = {"count_include_pad": bool(count_include_pad)} if padded or ceil_mode else {}
    return pool_layer(ctx, x, L.AvgPool2D, kernel_shape, strides, pads, auto_pad, None, ceil_mode, **options)


@converter("LpPool", since=11)
def lp_pool(ctx, x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2, pads=None,
            strides=None):
    if p != 2:
        ctx.fail(f"p={p}: cnnlab's LPPool2D is the L2 norm (p=2)")
    return pool_layer(ctx, x, L.LPPool2D, kernel_shape, strides, pads, auto_pad, dilations, ceil_mode)


@converter("GlobalAveragePool")
def global_average_pool(ctx, x):
    x = ctx.tensor(x, "X")
    if x.shape is None or len(x.shape) != 4:  # (N, C, L) or (N, C, D, H, W): a reduction over the spatial axes
        return L.Reduce("mean", list(range(2, len(x.shape))), keepdims=True)(x)
    return L.GlobalAvgPool2D(keepdims=True)(x)


@converter("GlobalMaxPool")
def global_max_pool(ctx, x):
    x = ctx.tensor(x, "X")
    if x.shape is None or len(x.shape) != 4:
        return L.Reduce("max", list(range(2, len(x.shape))), keepdims=True)(x)
    return L.GlobalMaxPool2D(keepdims=True)(x)


@converter("ReduceMean", since=1)
def reduce_mean(ctx, x, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
    x = ctx.tensor(x, "data")
    if axes_input is not None:
        axes = list(ctx.constant(axes_input, "axes").reshape(-1))
    rank = len(tuple(x.shape))
    if axes is None or sorted(int(a) % rank for a in axes) != [2, 3] or rank != 4:
        ctx.fail(f"axes={axes}: cnnlab implements ReduceMean over the two spatial axes of NCHW only")
    return L.GlobalAvgPool2D(keepdims=bool(keepdims))(x)


# ----------------------------------------------------------------------------- merging


def _binary(ctx, a, b, layer_type, kind):
    """Two computed tensors: a merge layer; a tensor and a constant: the constant folded into the
    convolution or fully-connected layer before when it can be, else a :class:`~cnnlab.layers.Bias`
    or :class:`~cnnlab.layers.Scale` layer holding it (nodes of constants only are evaluated by the
    importer)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        position = 1 if isinstance(a, np.ndarray) else 0
        tensor, constant = (b, a) if position else (a, b)
        if _can_fold(ctx, position, tensor, constant):
            return _fold_or_fail(ctx, position, tensor, constant, kind)
        return _constant_operand(ctx, tensor, constant, L.Bias if kind == "bias" else L.Scale)
    return layer_type()([a, b])


def _can_fold(ctx, position, tensor, constant):
    """Whether a constant operand folds into the Conv/Gemm/MatMul that produced ``tensor``."""
    layer = ctx.foldable.get(ctx.node.input[position])
    if layer is None or ctx.uses.get(ctx.node.input[position], 0) != 1:
        return False
    return _per_output(layer, constant, len(tuple(tensor.shape))) is not None


def _constant_operand(ctx, tensor, constant, layer_type):
    """``tensor`` combined with a constant that broadcasts against each sample (and does not make
    it larger)."""
    constant = np.asarray(constant)
    rank = len(tuple(tensor.shape))
    if constant.ndim > rank or (constant.ndim == rank and constant.shape[0] != 1):
        ctx.fail(f"a constant of shape {constant.shape} varies along the batch axis of a tensor of rank {rank}")
    try:
        return layer_type(ctx.weights(constant, "the constant operand"), dtype=ctx.dtype.name)(tensor)
    except ValueError as exc:
        ctx.fail(str(exc))


@converter("Add")
def add(ctx, a, b):
    return _binary(ctx, a, b, L.Add, "bias")


@converter("Mul")
def mul(ctx, a, b):
    return _binary(ctx, a, b, L.Multiply, "scale")


@converter("Sub", since=7)
def sub(ctx, a, b):
    """``a - b``: a constant subtrahend as a bias of its negative; a constant minuend ``c - x`` as
    ``-x`` plus ``c``; two computed tensors as ``a + (-1) * b``."""
    if isinstance(b, np.ndarray):
        return _binary(ctx, a, np.asarray(-np.asarray(b)), L.Add, "bias")
    negated = _constant_operand(ctx, b, np.array(-1.0), L.Scale)
    if isinstance(a, np.ndarray):
        return _constant_operand(ctx, negated, a, L.Bias)
    return L.Add()([a, negated])


@converter("Div", since=7)
def div(ctx, a, b):
    """``a / c`` for a constant ``c``: a scale by ``1 / c`` (folded into a convolution before it when
    it can be). Division by a computed tensor is refused."""
    if not isinstance(b, np.ndarray) or isinstance(a, np.ndarray):
        ctx.fail("only a division of a computed tensor by a constant is supported")
    divisor = np.asarray(b, dtype=np.float64)
    if np.any(divisor == 0):
        ctx.fail("division by a constant that holds a zero")
    return _binary(ctx, a, np.asarray(1.0 / divisor, dtype=np.asarray(b).dtype), L.Multiply, "scale")


@converter("Sum")
def sum_(ctx, *inputs):
    if len(inputs) == 1:
        return L.Identity()(ctx.tensor(inputs[0], "data_0"))
    return L.Add()([ctx.tensor(t, f"data_{i}") for i, t in enumerate(inputs)])


@converter("Concat")
def concat(ctx, *inputs, axis):
    """Float feature maps along a non-batch axis: :class:`~cnnlab.layers.Concatenate` (a kernel);
    anything else (shape vectors, constants among the inputs, the first axis, integers):
    :class:`~cnnlab.layers.Concat`."""
    tensors = [t for t in inputs if not isinstance(t, np.ndarray)]
    ranks = {None if t.shape is None else len(t.shape) for t in tensors}
    rank = ranks.pop() if len(ranks) == 1 else None
    if rank is None or len(tensors) < len(inputs) or axis % rank == 0 or any(t.dtype.kind != "f" for t in tensors) \
            or len({t.dtype for t in tensors}) > 1:
        constants = {i: np.asarray(v, dtype=ctx.dtype if np.asarray(v).dtype.kind == "f" else np.asarray(v).dtype)
                     for i, v in enumerate(inputs) if isinstance(v, np.ndarray)}
        return L.Concat(axis, constants=constants)(tensors)
    if len(inputs) == 1:
        return L.Identity()(inputs[0])
    return L.Concatenate(axis=axis % rank)(list(inputs))


# ----------------------------------------------------------------------------- shapes


@converter("Flatten")
def flatten(ctx, x, *, axis=1):
    x = ctx.tensor(x, "input")
    if axis != 1:
        ctx.fail(f"axis={axis}: cnnlab flattens everything but the batch axis (axis=1)")
    return L.Flatten()(x)


@converter("Reshape", since=5)
def reshape(ctx, x, shape, *, allowzero=0):
    """A constant shape that keeps the batch axis first: :class:`~cnnlab.layers.Flatten` or
    :class:`~cnnlab.layers.Reshape` (per sample); a shape computed while the model runs, or one
    that moves the batch axis: :class:`~cnnlab.layers.DynamicReshape`."""
    if isinstance(x, np.ndarray):  # a constant reshaped to a computed shape
        data = np.asarray(x, dtype=ctx.dtype) if np.asarray(x).dtype.kind == "f" else np.asarray(x)
        return L.DynamicReshape(bool(allowzero), constants={0: data})([shape])
    if not isinstance(shape, np.ndarray):
        return L.DynamicReshape(bool(allowzero))([x, shape])
    constant = np.asarray(shape, dtype=np.int64).reshape(-1)
    target = _per_sample_shape(ctx, x, [int(s) for s in constant], allowzero)
    if target is None:
        return L.DynamicReshape(bool(allowzero), constants={1: constant})([x])
    dims = ctx.dims(x)
    if len(target) == 1 and (target[0] == -1 or None not in dims and target[0] == int(np.prod(dims))):
        return L.Flatten()(x)
    return L.Reshape(tuple(target))(x)


def _per_sample_shape(ctx, x, shape, allowzero):
    """The per-sample shape of a Reshape that keeps the batch axis first, or None."""
    if x.shape is None or (allowzero and 0 in shape) or not shape:
        return None
    if ctx.static_batch is not None and shape[0] == ctx.static_batch:
        shape[0] = 0  # the file's fixed batch size (x.view(1, -1) exported with one sample)
    if shape[0] not in (0, -1) or (shape[0] == -1 and -1 in shape[1:]):
        return None
    dims = ctx.dims(x)
    target = [dims[i - 1] if s == 0 and i - 1 < len(dims) else s for i, s in enumerate(shape)][1:]
    if None in target or not target:
        return None
    if shape[0] == -1 and (None in dims or -1 in target or np.prod(target) != np.prod(dims)):
        return None  # a leading -1 keeps the batch axis only when the rest is one sample's size
    return target


@converter("Dropout", since=1)
def dropout(ctx, x, ratio_input=None, training_mode=None, *, seed=None, is_test=None, ratio=None):
    x = ctx.tensor(x, "data")
    if training_mode is not None and bool(np.asarray(ctx.constant(training_mode, "training_mode")).item()):
        ctx.fail("training_mode=True: cnnlab imports inference graphs")
    return x, None  # nothing to do at inference


@converter("Constant", since=1)
def constant(ctx, *, value=None, value_float=None, value_floats=None, value_int=None, value_ints=None,
             sparse_value=None, value_string=None, value_strings=None):
    for given in (value, value_float, value_floats, value_int, value_ints):
        if given is not None:
            return np.asarray(given)
    ctx.fail("sparse or string constants are not supported")
