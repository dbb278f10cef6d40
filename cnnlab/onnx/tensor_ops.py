"""ONNX converters for whole tensors of any rank and dtype (:mod:`cnnlab.layers.indexing` and
:mod:`cnnlab.layers.tensor_math`): the shape arithmetic exporters write (``Shape → Gather →
Unsqueeze → Concat → Reshape``, ``Range``, ``ConstantOfShape``), the slicing, splitting and
squeezing of attention heads, comparisons and ``Where``, reductions over any axes and the product
of two computed tensors.

A constant operand is an ordinary operand here (the layers keep it). The element-wise converters
of :mod:`cnnlab.onnx.ops` and :mod:`cnnlab.onnx.elementwise` keep their float fast paths (a bias
folded into the convolution before it, a kernel per op); these converters are registered after
them, for the same opsets, and take the cases those refuse: integer or boolean operands, operands
of different ranks, constants that vary along the first axis.
"""

import numpy as np

from .. import layers as L
from ..device import to_host
from ..layers.indexing import broadcast_dims
from . import elementwise, ops
from .exporter import OPSET, exporter
from .registry import converter, find

_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
                9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def _split(values):
    """The computed tensors among ``values`` and ``{position: constant}`` for the others."""
    tensors = [v for v in values if not isinstance(v, np.ndarray)]
    constants = {i: np.asarray(v) for i, v in enumerate(values) if isinstance(v, np.ndarray)}
    return tensors, constants


def _general(layer_type, values, **options):
    """``layer_type(constants=..., **options)`` called on the computed tensors among ``values``."""
    tensors, constants = _split(values)
    return layer_type(constants=constants, **options)(tensors)


def _model_floats(ctx, values):
    """``values`` with their float constants in the model's float dtype."""
    return [np.asarray(v, dtype=ctx.dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v
            for v in values]


def _float_model_tensor(ctx, value):
    return not isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.shape is not None


def _needs_general(ctx, values, both_ways=False):
    """Whether an element-wise node is beyond the float kernels' layers: an integer or boolean
    operand, two tensors of different ranks, a constant that varies along the first axis or has
    more axes than the tensor, or (for the layers of ``Add`` and ``Mul``, unless ``both_ways``)
    two tensors neither of which has the result's shape."""
    tensors = [v for v in values if not isinstance(v, np.ndarray)]
    if not all(_float_model_tensor(ctx, t) for t in tensors):
        return True
    ranks = {len(t.shape) for t in tensors}
    if len(ranks) > 1:
        return True
    if len(tensors) > 1 and not both_ways and broadcast_dims(*[t.shape for t in tensors]) not in [t.shape for t in tensors]:
        return True  # the kernels' layers take operands one of which has the result's shape
    rank = ranks.pop()
    for value in values:
        if isinstance(value, np.ndarray):
            if value.dtype.kind not in "iuf" or value.ndim > rank or (value.ndim == rank > 0 and value.shape[0] != 1):
                return True
            if broadcast_dims(tensors[0].shape, value.shape) != tensors[0].shape:
                return True  # the constant makes the result larger than the tensor
    return rank == 0


def _scalar(value, target):
    """Whether ``value`` is a constant whose every entry is ``target`` (to float32 precision)."""
    return isinstance(value, np.ndarray) and value.size >= 1 and np.allclose(value, target, rtol=1e-6, atol=0)


def _made_by(tensor, layer_type):
    """The layer of the node that produced ``tensor`` when it is a ``layer_type``, else None."""
    node = getattr(tensor, "node", None)
    return node.layer if node is not None and isinstance(node.layer, layer_type) else None


def _hard_swish_input(product):
    """``x`` when ``product`` is ``x * relu6(x + 3)`` (Paddle's hard-swish before its ``/ 6``:
    ``Add 3 → Clip 0..6 → Mul``) or ``x * hard_sigmoid(x)`` without the 1/6, else None."""
    if _made_by(product, L.Multiply) is None or len(product.node.inputs) != 2:
        return None
    for x, gate in (product.node.inputs, product.node.inputs[::-1]):
        clip = _made_by(gate, (L.ReLU6, L.Clip))
        if clip is None or (isinstance(clip, L.Clip) and (clip.min, clip.max) != (0.0, 6.0)):
            continue
        shifted = gate.node.inputs[0]
        bias = _made_by(shifted, L.Bias)
        if bias is not None and shifted.node.inputs[0] is x and _scalar(to_host(bias.params["weight"]), 3.0):
            return x
    return None


def _hard_swish(ctx, op, a, b):
    """The hard-swish patterns exporters write, as one :class:`~cnnlab.layers.HardSwish` (which a
    convolution before it then computes in its output write): ``x * relu6(x + 3) / 6`` (or ``* (1 /
    6)``) and ``x * hard_sigmoid(x)``; None for anything else."""
    if op == "divide" and _scalar(b, 6.0) or op == "multiply" and _scalar(b, 1 / 6):
        x = _hard_swish_input(a)
    elif op == "multiply" and _scalar(a, 1 / 6):
        x = _hard_swish_input(b)
    elif op == "multiply" and not isinstance(a, np.ndarray) and not isinstance(b, np.ndarray):
        x = None
        for tensor, gate in ((a, b), (b, a)):
            sigmoid = _made_by(gate, L.HardSigmoid)
            if sigmoid is not None and gate.node.inputs[0] is tensor and abs(sigmoid.alpha - 1 / 6) < 1e-6 \
                    and abs(sigmoid.beta - 0.5) < 1e-6:
                x = tensor
    else:
        x = None
    return None if x is None or x.dtype not in (np.float32, np.float64) else L.HardSwish()(x)


def _silu(ctx, op, a, b):
    """``x * sigmoid(x)`` (how YOLO exports write SiLU) as one :class:`~cnnlab.layers.SiLU`, which a
    convolution before it computes in its output write; None for anything else."""
    if op != "multiply" or isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return None
    for x, gate in ((a, b), (b, a)):
        if _made_by(gate, L.Sigmoid) is not None and gate.node.inputs[0] is x and x.dtype in (np.float32, np.float64):
            return L.SiLU()(x)
    return None


def _erf_gate_input(gate):
    """``x`` when ``gate`` is ``1 + erf(x / sqrt(2))`` (the division written as a scale by
    ``1 / sqrt(2)``), else None."""
    bias = _made_by(gate, L.Bias)
    if bias is None or not _scalar(to_host(bias.params["weight"]), 1.0):
        return None
    erf = gate.node.inputs[0]
    if _made_by(erf, L.Erf) is None:
        return None
    scaled = erf.node.inputs[0]
    scale = _made_by(scaled, L.Scale)
    if scale is None or not _scalar(to_host(scale.params["weight"]), 0.5 ** 0.5):
        return None
    return scaled.node.inputs[0]


def _gelu_input(product):
    """``x`` when ``product`` is ``x * (1 + erf(x / sqrt(2)))``, else None."""
    if _made_by(product, L.Multiply) is None or len(product.node.inputs) != 2:
        return None
    for factor, gate in (product.node.inputs, product.node.inputs[::-1]):
        if _erf_gate_input(gate) is factor:
            return factor
    return None


def _halved_gelu_input(a, b):
    """``x`` when ``a * b`` is ``(x * 0.5) * (1 + erf(x / sqrt(2)))`` (either order), else None."""
    for half, gate in ((a, b), (b, a)):
        scale = _made_by(half, L.Scale)
        if scale is not None and _scalar(to_host(scale.params["weight"]), 0.5) \
                and _erf_gate_input(gate) is half.node.inputs[0]:
            return half.node.inputs[0]
    return None


def _gelu(ctx, op, a, b):
    """GELU written out, ``x * (1 + erf(x / sqrt(2))) * 0.5`` (PyTorch's and Paddle's exports; the
    half may come first: ``(x * 0.5) * (1 + erf(...))``), as one :class:`~cnnlab.layers.GELU`;
    None for anything else."""
    if op != "multiply":
        return None
    if _scalar(b, 0.5) and not isinstance(a, np.ndarray):
        x = _gelu_input(a)
    elif _scalar(a, 0.5) and not isinstance(b, np.ndarray):
        x = _gelu_input(b)
    elif not isinstance(a, np.ndarray) and not isinstance(b, np.ndarray):
        x = _halved_gelu_input(a, b)
    else:
        x = None
    return None if x is None or x.dtype not in (np.float32, np.float64) else L.GELU()(x)


def _affine(ctx, op, a, b):
    """``z * scale + shift``, a constant Add after a Scale layer that nothing else reads, both per
    channel (or scalar) on an ``(N, C, ...)`` tensor: one :class:`~cnnlab.layers.Affine` layer (one
    pass instead of two); None for anything else."""
    if op != "add" or isinstance(a, np.ndarray) == isinstance(b, np.ndarray):
        return None
    tensor, shift = (b, a) if isinstance(a, np.ndarray) else (a, b)
    scale = _made_by(tensor, L.Scale)
    names = {id(t): n for n, t in ctx.tensors.items()}
    if scale is None or ctx.uses.get(names.get(id(tensor)), 0) != 1 or tensor.shape is None or len(tensor.shape) < 2 \
            or tensor.shape[1] is None or tensor.dtype not in (np.float32, np.float64):
        return None
    channels, rank = tensor.shape[1], len(tensor.shape)
    weights = ops.per_channel(to_host(scale.params["weight"]), channels, rank)
    shifts = ops.per_channel(np.asarray(shift), channels, rank)
    if weights is None or shifts is None:
        return None
    layer = L.Affine(channels, dtype=ctx.dtype.name)
    layer.params["weight"][...] = weights
    layer.params["bias"][...] = shifts
    return layer(tensor.node.inputs[0])


def _arithmetic(op, fast, both_ways):
    def convert(ctx, a, b):
        for pattern in (_hard_swish, _silu, _gelu, _affine):
            fused = pattern(ctx, op, a, b)
            if fused is not None:
                return fused
        for value in (a, b):
            if np.dtype(value.dtype).kind == "b":
                ctx.fail(f"a{' constant' if isinstance(value, np.ndarray) else 'n'} operand of dtype bool; "
                         f"{ctx.node.op_type} takes numbers")
        if _needs_general(ctx, (a, b), both_ways):
            return _general(L.Arithmetic, _model_floats(ctx, (a, b)), op=op)
        return fast(ctx, a, b)
    convert.__name__ = f"convert_{op}"
    return convert


for _op_type, _op, _fast, _both in (("Add", "add", ops.add, False), ("Mul", "multiply", ops.mul, False),
                                    ("Sub", "subtract", elementwise.sub, True), ("Div", "divide", elementwise.div, True),
                                    ("Pow", "power", elementwise.pow_, True)):
    converter(_op_type, since=7)(_arithmetic(_op, _fast, _both))


def _variadic(op, fast):
    """Max and Min: the element-wise layers' path (kernels, constants folded into one), unless an
    operand is beyond it; then a chain of :class:`~cnnlab.layers.Arithmetic` of any dtype."""
    def convert(ctx, *inputs):
        if len(inputs) < 2 or not _needs_general(ctx, inputs, both_ways=True):
            return fast(ctx, *inputs)
        out = _general(L.Arithmetic, inputs[:2], op=op)
        for other in inputs[2:]:
            out = _general(L.Arithmetic, (out, other), op=op)
        return out
    return convert


converter("Max", since=8)(_variadic("maximum", elementwise.max_))
converter("Min", since=8)(_variadic("minimum", elementwise.min_))


def _comparison(op):
    def convert(ctx, a, b):
        return _general(L.Arithmetic, (a, b), op=op)
    return convert


for _op_type, _op in (("Equal", "equal"), ("Less", "less"), ("Greater", "greater"), ("LessOrEqual", "less_equal"),
                      ("GreaterOrEqual", "greater_equal"), ("And", "logical_and"), ("Or", "logical_or"),
                      ("Xor", "logical_xor")):
    converter(_op_type, since=7)(_comparison(_op))


@converter("Not")
def not_(ctx, x):
    return L.Arithmetic("logical_xor", constants={1: np.array(True)})([ctx.tensor(x, "X")])


@converter("Mod", since=10)
def mod(ctx, a, b, *, fmod=0):
    return _general(L.Arithmetic, (a, b), op="fmod" if fmod else "mod")


@converter("Where", since=9)
def where(ctx, condition, a, b):
    return _general(L.Where, (condition, a, b))


@converter("Shape", since=1)
def shape(ctx, x, *, start=0, end=None):
    x = ctx.tensor(x, "data")
    known = None if x.shape is None else x.shape[start:end]
    if known is not None and None not in known and ctx.node.output[0] not in ctx.graph_outputs:
        return np.array(known, dtype=np.int64)  # a constant: the sizes are fixed in the file
    return L.Shape(start, end)(x)


@converter("Size", since=1)
def size(ctx, x):
    x = ctx.tensor(x, "data")
    if x.shape is not None and None not in x.shape:
        return np.array(int(np.prod(x.shape, dtype=np.int64)), dtype=np.int64)
    return L.Reduce("prod", None, keepdims=False)(L.Shape()(x))


@converter("Cast", since=6)
def cast(ctx, x, *, to, saturate=1, round_mode="up"):
    if to not in _ONNX_DTYPES:
        ctx.fail(f"to={to}: cnnlab casts to the float, integer and bool types only")
    dtype = _ONNX_DTYPES[to]
    if np.dtype(dtype).kind == "f" and x.dtype.kind == "f":
        dtype = x.dtype if np.dtype(dtype).itemsize >= x.dtype.itemsize else dtype  # floats keep the model's dtype
    if np.dtype(dtype) == x.dtype:
        return L.Identity()(x)
    return L.Cast(dtype)(x)


@converter("CastLike", since=15)
def cast_like(ctx, x, like, *, saturate=1, round_mode="up"):
    dtype = like.dtype
    if np.dtype(dtype) not in [np.dtype(d) for d in _ONNX_DTYPES.values()]:
        ctx.fail(f"a cast to {np.dtype(dtype)}: cnnlab casts to the float, integer and bool types only")
    if np.dtype(dtype) == x.dtype:
        return L.Identity()(ctx.tensor(x, "input"))
    return L.Cast(dtype)(ctx.tensor(x, "input"))


def _ints(ctx, value, what):
    return [int(v) for v in ctx.constant(value, what).reshape(-1)]


@converter("Slice", since=10)
def slice_(ctx, x, starts, ends, axes=None, steps=None):
    x = ctx.tensor(x, "data")
    starts, ends = _ints(ctx, starts, "starts"), _ints(ctx, ends, "ends")
    axes = None if axes is None else _ints(ctx, axes, "axes")
    steps = None if steps is None else _ints(ctx, steps, "steps")
    return L.Slice(starts, ends, axes, steps)(x)


@converter("Slice", since=1)
def slice_1(ctx, x, *, starts, ends, axes=None):
    return L.Slice(list(starts), list(ends), None if axes is None else list(axes))(ctx.tensor(x, "data"))


def _split_sizes(ctx, x, axis, split, outputs):
    if split is not None:
        return [int(s) for s in split]
    size = None if x.shape is None else x.shape[axis]
    if size is None:
        return None  # equal parts of a size known only when the model runs: Chunk layers
    part = -(-size // outputs)
    return [min(part, size - k * part) for k in range(outputs)]


def _split_outputs(ctx, x, axis, sizes):
    if sizes is None:
        count = len(ctx.node.output)
        return tuple(L.Chunk(axis, count, k)(x) for k in range(count))
    bounds = np.cumsum([0] + sizes)
    return tuple(L.Slice([int(lo)], [int(hi)], [axis])(x) for lo, hi in zip(bounds[:-1], bounds[1:]))


@converter("Split", since=13)
def split(ctx, x, split=None, *, axis=0, num_outputs=None):
    x = ctx.tensor(x, "input")
    sizes = _split_sizes(ctx, x, axis, None if split is None else ctx.constant(split, "split").reshape(-1),
                         num_outputs or len(ctx.node.output))
    if sizes is None and num_outputs is not None and num_outputs != len(ctx.node.output):
        ctx.fail(f"num_outputs={num_outputs} with {len(ctx.node.output)} outputs")
    return _split_outputs(ctx, x, axis, sizes)


@converter("Split", since=2)
def split_2(ctx, x, *, axis=0, split=None):
    x = ctx.tensor(x, "input")
    return _split_outputs(ctx, x, axis, _split_sizes(ctx, x, axis, split, len(ctx.node.output)))


@converter("Gather", since=1)
def gather(ctx, data, indices, *, axis=0):
    return _general(L.Gather, _model_floats(ctx, (data, indices)), axis=axis)


def _axes_operand(ctx, axes_input, axes):
    if axes_input is not None:
        return _ints(ctx, axes_input, "axes")
    return None if axes is None else [int(a) for a in axes]


@converter("Squeeze", since=1)
def squeeze(ctx, x, axes_input=None, *, axes=None):
    return L.Squeeze(_axes_operand(ctx, axes_input, axes))(ctx.tensor(x, "data"))


@converter("Unsqueeze", since=1)
def unsqueeze(ctx, x, axes_input=None, *, axes=None):
    axes = _axes_operand(ctx, axes_input, axes)
    if axes is None:
        ctx.fail("no axes")
    return L.Unsqueeze(axes)(ctx.tensor(x, "data"))


@converter("Expand", since=8)
def expand(ctx, x, shape):
    return _general(L.Expand, _model_floats(ctx, (x, shape)))


@converter("ConstantOfShape", since=9)
def constant_of_shape(ctx, shape, *, value=None):
    value = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    dtype = ctx.dtype if value.dtype.kind == "f" else value.dtype
    return L.ConstantOfShape(value[0].item(), dtype=np.dtype(dtype).name)(ctx.tensor(shape, "input"))


@converter("Range", since=11)
def range_(ctx, start, limit, delta):
    return _general(L.Range, (start, limit, delta))


def _reduce(op):
    def convert(ctx, x, axes_input=None, *, axes=None, keepdims=1, noop_with_empty_axes=0):
        x = ctx.tensor(x, "data")
        axes = _axes_operand(ctx, axes_input, axes)
        if not axes:
            if noop_with_empty_axes:
                return L.Identity()(x)
            axes = None
        if op == "mean" and x.shape is not None and len(x.shape) == 4 and axes is not None \
                and sorted(a % 4 for a in axes) == [2, 3] and x.dtype.kind == "f":
            return L.GlobalAvgPool2D(keepdims=bool(keepdims))(x)  # the pooling kernel
        return L.Reduce(op, axes, keepdims=bool(keepdims))(x)
    return convert


for _op_type, _op in (("ReduceMean", "mean"), ("ReduceSum", "sum"), ("ReduceMax", "max"), ("ReduceMin", "min"),
                      ("ReduceProd", "prod"), ("ReduceSumSquare", "sum_square"), ("ReduceL1", "l1"),
                      ("ReduceL2", "l2"), ("ReduceLogSumExp", "log_sum_exp")):
    converter(_op_type, since=1)(_reduce(_op))


@converter("MatMul", since=1)
def matmul(ctx, a, b):
    """A tensor times a constant matrix: :func:`cnnlab.onnx.ops.matmul` (a :class:`~cnnlab.layers.Dense`
    layer); anything else (two computed tensors, attention's ``Q Kᵀ``): :class:`~cnnlab.layers.MatMul`."""
    if isinstance(b, np.ndarray) and not isinstance(a, np.ndarray) and np.asarray(b).ndim == 2 \
            and a.dtype.kind == "f" and a.shape is not None and len(a.shape) >= 2 \
            and a.shape[-1] == np.asarray(b).shape[0]:
        return ops.matmul(ctx, a, b)
    values = [np.asarray(v, dtype=ctx.dtype) if isinstance(v, np.ndarray) else v for v in (a, b)]
    return _general(L.MatMul, values)


@converter("Tile", since=6)
def tile(ctx, x, repeats):
    return _general(L.Tile, _model_floats(ctx, (x, repeats)))


@converter("Pad", since=11)
def pad(ctx, x, pads, constant_value=None, axes=None, *, mode="constant"):
    """ONNX's pads ``[begin of each axis..., end of each axis...]`` as PyTorch's pairs, last axis first."""
    x = ctx.tensor(x, "data")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        ctx.fail(f"mode={mode!r} is not an ONNX value")
    if not isinstance(pads, np.ndarray):  # amounts computed while the model runs (TF's "same" padding)
        if axes is not None:
            ctx.fail("axes with pads computed while the model runs")
        value = 0.0 if constant_value is None else float(np.asarray(ctx.constant(constant_value, "constant_value")))
        return L.DynamicPad(mode, value)([x, pads])
    pads = _ints(ctx, pads, "pads")
    rank = None if x.shape is None else len(x.shape)
    axes = list(range(len(pads) // 2)) if axes is None else [a % rank for a in _ints(ctx, axes, "axes")]
    if rank is None or len(pads) != 2 * len(axes):
        ctx.fail(f"pads={pads} must hold a begin and an end for each padded axis")
    value = 0.0 if constant_value is None else float(np.asarray(ctx.constant(constant_value, "constant_value")))
    by_axis = {a: (pads[i], pads[i + len(axes)]) for i, a in enumerate(axes)}
    first = min(by_axis) if by_axis else rank
    pairs = [p for axis in range(rank - 1, first - 1, -1) for p in by_axis.get(axis, (0, 0))]
    return L.Pad(pairs, mode, value)(x)


@converter("Pad", since=2)
def pad_2(ctx, x, *, pads, mode="constant", value=0.0):
    return pad(ctx, x, np.asarray(pads, dtype=np.int64), np.asarray(value, dtype=np.float32), mode=mode)


@converter("Flatten", since=1)
def flatten(ctx, x, *, axis=1):
    """``axis=1``: :class:`~cnnlab.layers.Flatten`; any other axis: a reshape to
    ``(prod(shape[:axis]), -1)`` computed from the input's shape."""
    x = ctx.tensor(x, "input")
    rank = None if x.shape is None else len(x.shape)
    if axis == 1 or rank is None:
        return ops.flatten(ctx, x, axis=axis)
    axis %= rank if axis < 0 else rank + 1
    head = L.Reduce("prod", None, keepdims=True)(L.Slice([0], [axis])(L.Shape()(x))) if axis else None
    if head is None:
        return L.DynamicReshape(constants={1: np.array([1, -1], np.int64)})([x])
    target = L.Concat(0, constants={1: np.array([-1], np.int64)})([head])
    return L.DynamicReshape()([x, target])


@converter("Gemm", since=7)
def gemm(ctx, a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    """A tensor times constant weights with a per-output bias: :class:`~cnnlab.layers.Dense` (what
    :func:`cnnlab.onnx.ops.gemm` builds); anything else as ``alpha * A' B' + beta * C`` of
    whole-tensor layers."""
    plain = isinstance(b, np.ndarray) and not isinstance(a, np.ndarray) and not transA \
        and (c is None or (isinstance(c, np.ndarray) and np.asarray(c).size in (1, np.asarray(b).shape[0 if transB else 1])))
    if plain:
        return ops.gemm(ctx, a, b, c, alpha=alpha, beta=beta, transA=transA, transB=transB)
    values = [np.asarray(v, dtype=ctx.dtype) if isinstance(v, np.ndarray) else v for v in (a, b, c)]
    a, b, c = values
    if transA:
        a = a.T if isinstance(a, np.ndarray) else L.Transpose((1, 0))(a)
    if transB:
        b = b.T if isinstance(b, np.ndarray) else L.Transpose((1, 0))(b)
    out = _general(L.MatMul, (a, b))
    if alpha != 1:
        out = L.Arithmetic("multiply", constants={1: np.array(alpha, ctx.dtype)})([out])
    if c is not None:
        if beta != 1:
            c = c * beta if isinstance(c, np.ndarray) else L.Arithmetic(
                "multiply", constants={1: np.array(beta, ctx.dtype)})([c])
        out = _general(L.Arithmetic, (out, c), op="add")
    return out


@converter("LayerNormalization", since=17)
def layer_normalization(ctx, x, scale, bias=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    """:class:`~cnnlab.layers.LayerNorm` over trailing axes of known sizes after the first axis
    (:func:`cnnlab.onnx.ops.layer_normalization`); any other axis as its formula of
    whole-tensor layers."""
    x = ctx.tensor(x, "X")
    rank = None if x.shape is None else len(x.shape)
    first = None if rank is None or not -rank <= axis < rank else axis % rank
    if first is None:
        ctx.fail(f"axis={axis} is outside the input's axes")
    if first > 0 and None not in x.shape[first:] and isinstance(scale, np.ndarray) \
            and (bias is None or isinstance(bias, np.ndarray)):
        return ops.layer_normalization(ctx, x, scale, bias, axis=axis, epsilon=epsilon, stash_type=stash_type)
    centred, mean, inverse = ops.normalization_statistics(ctx, x, list(range(first, rank)), epsilon)
    scale = np.asarray(scale, ctx.dtype) if isinstance(scale, np.ndarray) else scale
    out = _general(L.Arithmetic, (L.Arithmetic("multiply")([centred, inverse]), scale), op="multiply")
    if bias is not None:
        out = _general(L.Arithmetic, (out, np.asarray(bias, ctx.dtype) if isinstance(bias, np.ndarray) else bias),
                       op="add")
    return out, mean, inverse


@converter("Dropout", since=12)
def dropout(ctx, x, ratio=None, training_mode=None, *, seed=None):
    """Inference: the input, and a mask of ones when the mask output is read."""
    out, _ = ops.dropout(ctx, x, ratio, training_mode, seed=seed)
    if not ctx.uses.get(ctx.node.output[1] if len(ctx.node.output) > 1 else ""):
        return out, None
    mask = L.ConstantOfShape(True, dtype="bool")(L.Shape()(x))
    return out, mask


@converter("Clip", since=11)
def clip(ctx, x, low=None, high=None):
    """Float tensors: the clip kernel (:func:`cnnlab.onnx.ops.clip`); integers, or bounds computed
    while the model runs: maximum then minimum."""
    x = ctx.tensor(x, "input")
    if x.dtype in (np.float32, np.float64) and x.shape and not any(v is not None and not isinstance(v, np.ndarray)
                                                       for v in (low, high)):
        return ops.clip(ctx, x, low, high)
    out = x
    if low is not None:
        out = _general(L.Arithmetic, (out, np.asarray(low, x.dtype) if isinstance(low, np.ndarray) else low),
                       op="maximum")
    if high is not None:
        out = _general(L.Arithmetic, (out, np.asarray(high, x.dtype) if isinstance(high, np.ndarray) else high),
                       op="minimum")
    return out if out is not x else L.Identity()(x)


@converter("LpPool", since=11)
def lp_pool(ctx, x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2, pads=None,
            strides=None):
    """p = 2: :class:`~cnnlab.layers.LPPool2D`; any other p as ``(k · avg_pool(|x|^p))^(1/p)`` (the
    zero padding counted, as ONNX's sum over the window)."""
    if p == 2:
        return ops.lp_pool(ctx, x, auto_pad=auto_pad, ceil_mode=ceil_mode, dilations=dilations,
                           kernel_shape=kernel_shape, p=p, pads=pads, strides=strides)
    x = ctx.tensor(x, "X")
    powered = L.Arithmetic("power", constants={1: np.array(float(p), ctx.dtype)})([L.Abs()(x)])
    window = ops.pool_layer(ctx, powered, L.AvgPool2D, kernel_shape, strides, pads, auto_pad, dilations, ceil_mode,
                       count_include_pad=True)
    area = float(np.prod(kernel_shape))
    summed = L.Arithmetic("multiply", constants={1: np.array(area, ctx.dtype)})([window])
    return L.Arithmetic("power", constants={1: np.array(1.0 / p, ctx.dtype)})([summed])


def _function(op, fast):
    """A float feature map: the element-wise kernel's layer (:mod:`cnnlab.onnx.elementwise`); a 0-d
    tensor or one of another dtype (the arithmetic of sizes): :class:`~cnnlab.layers.Function`."""
    def convert(ctx, x):
        x = ctx.tensor(x, "X")
        if x.shape is not None and len(x.shape) > 0 and x.dtype in (np.float32, np.float64):
            return fast(ctx, x)
        return L.Function(op)(x)
    return convert


for _op_type, _op in (("Sqrt", "sqrt"), ("Exp", "exp"), ("Log", "log"), ("Abs", "abs"), ("Neg", "neg"),
                      ("Reciprocal", "reciprocal"), ("Floor", "floor"), ("Ceil", "ceil"), ("Erf", "erf")):
    converter(_op_type, since=6)(_function(_op, find(_op_type, 6)[0]))
converter("Sign", since=9)(_function("sign", lambda ctx, x: L.Function("sign")(x)))
converter("Round", since=11)(_function("round", lambda ctx, x: L.Function("round")(x)))


# ----------------------------------------------------------------------------- export


def _operand_names(ctx, layer, inputs):
    """The ONNX names of a whole-tensor layer's operands: its inputs and its constants, in order."""
    names, inputs = [], list(inputs)
    for position in range(len(inputs) + len(layer.constant_positions)):
        if position in layer.constant_positions:
            value = to_host(layer.buffers[f"constant{position}"])
            names.append(ctx.constant(value, "constant", dtype=np.asarray(value).dtype))
        else:
            names.append(inputs.pop(0))
    return names


def _ints_constant(ctx, values, hint):
    return ctx.constant(np.array(values, dtype=np.int64), hint, dtype=np.int64)


_TO_ONNX = {np.dtype(v): k for k, v in _ONNX_DTYPES.items()}


@exporter(L.Shape, opset=lambda layer: 15 if (layer.start, layer.end) != (0, None) else OPSET)
def _shape(ctx, layer, inputs, output, shapes):
    options = {} if (layer.start, layer.end) == (0, None) else dict(
        start=layer.start, **({} if layer.end is None else dict(end=layer.end)))
    return ctx.node("Shape", inputs, output, **options)


@exporter(L.Cast)
def _cast(ctx, layer, inputs, output, shapes):
    return ctx.node("Cast", inputs, output, to=_TO_ONNX[layer.target])


@exporter(L.Slice)
def _slice(ctx, layer, inputs, output, shapes):
    names = [inputs[0], _ints_constant(ctx, layer.starts, "starts"), _ints_constant(ctx, layer.ends, "ends")]
    if layer.axes is not None or layer.steps is not None:
        names.append(_ints_constant(ctx, layer.axes if layer.axes is not None else range(len(layer.starts)), "axes"))
    if layer.steps is not None:
        names.append(_ints_constant(ctx, layer.steps, "steps"))
    return ctx.node("Slice", names, output)


@exporter(L.Chunk)
def _chunk(ctx, layer, inputs, output, shapes):
    """Part ``index`` of an equal split (opset 18's num_outputs): the other parts go unused."""
    names = [output if k == layer.index else ctx.name("unused") for k in range(layer.parts)]
    ctx.nodes.append(ctx.onnx.helper.make_node("Split", list(inputs), names, name=output, axis=layer.axis,
                                               num_outputs=layer.parts))
    return output


_chunk.opset = 18


@exporter(L.Squeeze, L.Unsqueeze)
def _squeeze(ctx, layer, inputs, output, shapes):
    names = list(inputs) + ([] if layer.axes is None else [_ints_constant(ctx, layer.axes, "axes")])
    return ctx.node(type(layer).__name__, names, output)


@exporter(L.Gather, L.Concat)
def _axis_op(ctx, layer, inputs, output, shapes):
    return ctx.node(type(layer).__name__, _operand_names(ctx, layer, inputs), output, axis=layer.axis)


@exporter(L.Expand, L.Range, L.Where, L.Tile, L.MatMul)
def _plain(ctx, layer, inputs, output, shapes):
    return ctx.node(type(layer).__name__, _operand_names(ctx, layer, inputs), output)


def _pad_node(ctx, layer, names, output):
    """ONNX's Pad of the data and pads ``names``, with the fill value of mode constant."""
    if layer.mode == "constant":
        names = names + [ctx.constant(np.array(layer.value), "value")]
    return ctx.node("Pad", names, output, mode=layer.mode)


def _pad_opset(layer):
    return 19 if layer.mode == "wrap" else OPSET  # mode wrap came with opset 19


@exporter(L.DynamicPad, opset=_pad_opset)
def _dynamic_pad(ctx, layer, inputs, output, shapes):
    return _pad_node(ctx, layer, _operand_names(ctx, layer, inputs), output)


@exporter(L.DynamicReshape)
def _dynamic_reshape(ctx, layer, inputs, output, shapes):
    return ctx.node("Reshape", _operand_names(ctx, layer, inputs), output, allowzero=int(layer.allowzero))


@exporter(L.ConstantOfShape)
def _constant_of_shape(ctx, layer, inputs, output, shapes):
    value = ctx.onnx.numpy_helper.from_array(np.array([layer.value], dtype=layer.fill_dtype))
    return ctx.node("ConstantOfShape", inputs, output, value=value)


_ARITHMETIC = {"add": "Add", "subtract": "Sub", "multiply": "Mul", "divide": "Div", "power": "Pow",
               "maximum": "Max", "minimum": "Min", "mod": "Mod", "fmod": "Mod", "equal": "Equal", "less": "Less",
               "less_equal": "LessOrEqual", "greater": "Greater", "greater_equal": "GreaterOrEqual",
               "logical_and": "And", "logical_or": "Or", "logical_xor": "Xor"}


@exporter(L.Arithmetic)
def _arithmetic_export(ctx, layer, inputs, output, shapes):
    options = dict(fmod=int(layer.op == "fmod")) if layer.op in ("mod", "fmod") else {}
    return ctx.node(_ARITHMETIC[layer.op], _operand_names(ctx, layer, inputs), output, **options)


_REDUCE = {"mean": "ReduceMean", "sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin", "prod": "ReduceProd",
           "sum_square": "ReduceSumSquare", "l1": "ReduceL1", "l2": "ReduceL2", "log_sum_exp": "ReduceLogSumExp"}


@exporter(L.Reduce)
def _reduce_export(ctx, layer, inputs, output, shapes):
    """Opset 14: ReduceSum takes its axes as an input, the others as an attribute."""
    if layer.op == "sum":
        names = list(inputs) + ([] if layer.axes is None else [_ints_constant(ctx, layer.axes, "axes")])
        return ctx.node("ReduceSum", names, output, keepdims=int(layer.keepdims))
    options = {} if layer.axes is None else dict(axes=list(layer.axes))
    return ctx.node(_REDUCE[layer.op], inputs, output, keepdims=int(layer.keepdims), **options)


@exporter(L.Pad, opset=_pad_opset)
def _pad_export(ctx, layer, inputs, output, shapes):
    """PyTorch's pairs (last axis first) as ONNX's begins then ends, for the padded axes."""
    count = len(layer.pad) // 2
    axes = list(range(len(shapes[0]) + 1 - count, len(shapes[0]) + 1))  # the last axes of (N, *sample)
    begins = [layer.pad[2 * (count - 1 - k)] for k in range(count)]
    ends = [layer.pad[2 * (count - 1 - k) + 1] for k in range(count)]
    return _pad_node(ctx, layer, [inputs[0], _ints_constant(ctx, [0] * axes[0] + begins + [0] * axes[0] + ends, "pads")],
                     output)


@exporter(L.Function)
def _function_export(ctx, layer, inputs, output, shapes):
    name = {"neg": "Neg", "abs": "Abs"}.get(layer.op, layer.op.capitalize())
    return ctx.node(name, inputs, output)


_function_export.opset = lambda layer: 11 if layer.op == "round" else OPSET


@exporter(L.Affine)
def _affine_export(ctx, layer, inputs, output, shapes):
    per_channel = (layer.num_channels,) + (1,) * (len(shapes[0]) - 1)
    scaled = ctx.node("Mul", [inputs[0], ctx.constant(to_host(layer.params["weight"]).reshape(per_channel), "scale")])
    return ctx.node("Add", [scaled, ctx.constant(to_host(layer.params["bias"]).reshape(per_channel), "shift")], output)
