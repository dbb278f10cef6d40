"""The layer protocol: state (parameters, gradients, what the backward needs) around functional
calls, and the facts the executor reads from each layer class.

Every layer has ``forward(x, training=False)``, ``backward(grad_out) -> grad_in``, ``params``
and ``grads`` (dicts of arrays by name, ``'weight'`` and ``'bias'``), attributes
``weight``/``bias`` that are those same arrays, and ``trainable``.  ``backward``
differentiates the most recent ``forward(x, training=True)``; calling it without one is a
``RuntimeError``.  Parameters live on the layer's device (:meth:`Layer.to`), and the forward
and backward run there.

Parameters are float32 unless the layer is built with ``dtype='float64'``; an input of the
other float dtype is cast to the parameters' dtype.
"""

from __future__ import annotations

import math

import numpy as np

from ..checks import check_device, check_float_dtype, check_memory
from ..device import is_gpu_array, to_device, to_host
from ..functional.common import bound_elementwise
from ..symbolic import TensorSpec, call_layer, is_symbolic
from ..types import Any, Array, DTypeLike, Padding, Sequence

#: every layer class by name (the saved architecture names them), filled as classes are defined
LAYER_TYPES: dict[str, type] = {}

float_dtype = check_float_dtype


class Layer:
    """Base class: no parameters, runs on the CPU until moved with :meth:`to`."""

    trainable = True
    #: merge layers take a list of inputs
    takes_list = False
    #: the inference ``forward`` always returns a new array, never an input or a view of one (a
    #: buffer only such layers read can be reused once they have run: cnnlab.memory.BufferPool)
    returns_new_array = False
    #: the training ``forward`` draws random masks, seeded per step through ``step_seed``
    draws_masks = False
    #: a classifier's head can be this layer (``Model.replace_head`` swaps the one feeding the output)
    replaceable_head = False
    #: the output is the input, unchanged (lookups through the end of a model skip it)
    passes_through = False
    #: the output is class probabilities (a model ending in it predicts probabilities)
    outputs_probabilities = False
    #: the layers before this one are a network's feature extractor (the base transfer learning keeps)
    ends_feature_extractor = False
    #: the layer works on whole tensors of any rank and dtype (shapes, indices, attention
    #: tensors): its axes count the batch axis, and it infers its output with ``output_spec``
    #: on whole shapes instead of ``output_shape`` on one sample's
    whole_tensors = False
    #: the layer moves values without computing (a reshape): it takes tensors of any dtype
    any_dtype = False
    #: the output depends on the inputs' shapes alone, never on their values (ONNX's ``Shape``):
    #: a prepared inference plan computes it once (:mod:`cnnlab.prepared`)
    reads_only_shapes = False

    def __init_subclass__(cls, register: bool | None = None, **kwargs):
        """Every public layer class of cnnlab registers itself in :data:`LAYER_TYPES` (what a
        saved architecture names); a layer class of yours does with
        ``class MyLayer(Layer, register=True)``, so that :func:`cnnlab.load` rebuilds it."""
        super().__init_subclass__(**kwargs)
        if register is None:
            register = cls.__module__.startswith("cnnlab.") and not cls.__name__.startswith("_")
        if register:
            if LAYER_TYPES.get(cls.__name__, cls) is not cls:
                raise ValueError(f"a layer class named {cls.__name__!r} is registered already "
                                 f"({LAYER_TYPES[cls.__name__].__module__}): give yours another name")
            LAYER_TYPES[cls.__name__] = cls

    def __init__(self) -> None:
        self.params = {}
        self.grads = {}
        self.buffers = {}  # saved state that is not trained (running statistics)
        self.device = "cpu"
        self.dtype = None
        self.saved = None  # what backward needs from the last forward(x, training=True)

    # --- parameters -------------------------------------------------------------
    @property
    def weight(self):
        return self.params.get("weight")

    @property
    def bias(self):
        return self.params.get("bias")

    def parameter_count(self) -> int:
        return int(sum(np.prod(p.shape) for p in self.params.values()))

    def to(self, device: str) -> Layer:
        """Move parameters, gradients and buffers to ``'cpu'`` or ``'cuda'``; returns ``self``."""
        check_device(device)
        move = to_device if device == "cuda" else to_host
        for store in (self.params, self.grads, self.buffers):
            for name in store:
                store[name] = move(store[name])
        self.device = device
        self.saved = None
        return self

    # --- running ------------------------------------------------------------------
    def prepare(self, x: Array) -> Array:
        """Cast ``x`` to the parameters' dtype (when the layer has one)."""
        if x.dtype is self.dtype:  # (the common case, in one look)
            return x
        if self.dtype is None or np.dtype(x.dtype) == self.dtype or np.dtype(x.dtype).kind != "f":
            return x
        if is_gpu_array(x):
            return to_device(to_host(x).astype(self.dtype))
        return np.asarray(x).astype(self.dtype)

    def _need_saved(self):
        if self.saved is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() needs a preceding forward(x, training=True)"
            )
        return self.saved

    def __call__(self, inputs):
        """Call on a symbolic tensor (a list of them for merge layers) from
        :func:`cnnlab.Input`: adds a node to the graph and returns its output tensor, whose
        shape ``output_shape`` infers (a misfit is a ``ValueError`` naming this layer).  A layer
        called twice shares its parameters between the two calls."""
        return call_layer(self, inputs)

    def forward(self, x: Array, training: bool = False) -> Array:
        raise NotImplementedError

    def backward(self, grad_out: Array) -> Array:
        raise NotImplementedError

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one sample's output for one sample's input shape (no batch axis)."""
        return tuple(input_shape)

    def output_spec(self, inputs: Any) -> Any:
        """For a ``whole_tensors`` layer: the :class:`cnnlab.symbolic.TensorSpec` (whole shape,
        dtype, what is known of the value) of the output for the inputs' specs (a list of them
        for a layer that takes a list)."""
        raise NotImplementedError(f"{type(self).__name__} declares whole_tensors but has no output_spec")

    def config(self) -> dict:
        """Constructor arguments, JSON-serializable (the saved architecture)."""
        return {}

    def build(self, input_shape: tuple[int, ...]) -> None:
        """Create what depends on the input's size (a layer built without ``in_channels`` or
        ``in_features`` makes its weights here) from one sample's ``input_shape``; called by
        :meth:`output_shape` and :meth:`forward` before anything else, once."""

    def make_parameter(self, name: str, values: np.ndarray) -> None:
        """Store the new parameter ``name`` on the layer's device."""
        self.params[name] = to_device(values) if self.device == "cuda" else values

    def sample_shape_hint(self) -> tuple | None:
        """What this layer, first in a model, says of one input sample's shape (e.g.
        ``(3, 'H', 'W')``), for messages; None when it cannot say."""
        return None

    def fused_activation(self) -> Any:
        """The ``activation`` argument of :func:`cnnlab.functional.conv2d` that computes this
        layer in a convolution's output write (see :mod:`cnnlab.fusion`), or None."""
        return None

    def prepared_forward(self, inputs: Any, out: Any) -> Any:
        """For a prepared inference plan (:mod:`cnnlab.prepared`): ``(run, same, equal)``, where
        ``run(inputs, out)`` computes ``forward(inputs, False)`` into ``out`` and returns it for
        host arrays shaped as ``inputs`` (a list of arrays standing for them) and ``out``, its
        checks made now, and stays right while ``mapping.get(key) is value`` for each ``(mapping,
        key, value)`` of ``same`` and ``function() == value`` for each ``(function, value)`` of
        ``equal`` (the parameters and attributes it reads); or None (the default: the plan runs
        the layer's ``forward`` at each call). A layer that returns a view of its input (not
        ``returns_new_array``) is asked with ``out`` None, and its ``run`` returns the view.
        The arrays standing for the inputs hold any values, but for an input the plan computes
        once (a shape computed from shapes alone): that value, read-only, which ``run`` is
        handed at every call."""
        return None

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({arguments})"


def initialize(shape: Sequence[int], fan_in: int, fan_out: int, init: str, dtype: DTypeLike,
               seed: int | None, owner: str = "a layer") -> np.ndarray:
    """Random initial weights of ``shape`` (He's normal or Glorot's uniform), drawn in float64
    and cast to ``dtype``. ``MemoryError`` naming ``owner`` before anything is allocated when the
    weights cannot fit in memory."""
    count = math.prod(shape)
    check_memory(count * (8 + np.dtype(dtype).itemsize), f"{owner} ({count:,} weights)",
                 "make the layer smaller: for a Dense layer after Flatten, a smaller input image or a "
                 "global-pooling layer (GlobalAvgPool2D) before it")
    rng = np.random.default_rng(seed)
    if init == "he":
        values = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    elif init == "glorot":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        values = rng.uniform(-limit, limit, size=shape)
    else:
        raise ValueError(f"init must be 'he' or 'glorot', got {init!r}")
    return values.astype(dtype)


def padding_config(padding: Padding) -> str | list:
    """A padding for a saved config: a word, ``[ph, pw]`` when symmetric (as older files have it),
    else ``[[top, bottom], [left, right]]``."""
    if isinstance(padding, str):
        return padding
    (top, bottom), (left, right) = padding
    if top == bottom and left == right:
        return [top, left]
    return [[top, bottom], [left, right]]


def reshape_array(a: Array, shape: Sequence[int]) -> Array:
    """``a`` seen with another shape (no copy for contiguous arrays), host or GPU."""
    shape = tuple(int(s) for s in shape)
    return a.reshape(shape) if is_gpu_array(a) else np.ascontiguousarray(a).reshape(shape)


def watched_attributes(layer: Any) -> tuple:
    """``same`` entries of a prepared form (:meth:`Layer.prepared_forward`) that watch every
    attribute of ``layer`` by identity (its training state, ``saved``, aside) and each of its
    buffers: what a layer whose whole computation follows from them watches."""
    return tuple((vars(layer), name, value) for name, value in vars(layer).items() if name != "saved") \
        + tuple((layer.buffers, name, array) for name, array in layer.buffers.items())


def same_kind_out(x: Any, out: Any) -> bool:
    """Whether ``out`` is a C-ordered host array of ``x``'s shape and dtype: what the prepared
    forms of layers whose output is their input's kind of array (element-wise functions,
    normalizations, softmax) write into."""
    return type(out) is np.ndarray and out.flags.c_contiguous and getattr(x, "shape", None) == out.shape \
        and getattr(x, "dtype", None) == out.dtype


def prepared_elementwise(layer: Any, function: Any, x: Any, out: Any, **arguments: Any) -> Any:
    """:meth:`Layer.prepared_forward` of a layer whose ``forward`` is ``function(x,
    **arguments)``, an element-wise op of one kernel call
    (:func:`cnnlab.functional.common.bound_elementwise`), its attributes watched
    (:func:`watched_attributes`); None for anything else."""
    if not same_kind_out(x, out):
        return None
    run = bound_elementwise(function, x, **arguments)
    return None if run is None else (run, watched_attributes(layer), ())


def prepared_reshape(layer: Any, inputs: Any) -> Any:
    """:meth:`Layer.prepared_forward` of a layer whose ``forward`` returns a view of its first
    input (a C-ordered host array: a prepared plan's) with another shape, that shape following
    from the inputs' shapes and the layer's attributes and buffers alone (their values
    unchanged: :func:`watched_attributes`): ``run`` reshapes, nothing else. None where the
    forward on the stand-ins does not return such a view."""
    x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
    if type(x) is not np.ndarray or not x.flags.c_contiguous:
        return None
    view = layer.forward(inputs, False)
    if type(view) is not np.ndarray or view.base is not (x if x.base is None else x.base) or view.size != x.size:
        return None
    shape = view.shape

    def run(inputs, out):
        return (inputs[0] if isinstance(inputs, (list, tuple)) else inputs).reshape(shape)
    return run, watched_attributes(layer), ()


def known_value(spec: Any) -> np.ndarray | None:
    """What is known of a tensor's value: an object array with None for unknown entries (all of
    them for a small integer tensor of known shape whose value is unknown, so that the entries a
    shape computation does know survive a Concat), or None."""
    if spec.value is not None:
        return np.asarray(spec.value, dtype=object)
    if spec.dtype.kind in "iu" and spec.shape is not None and None not in spec.shape \
            and math.prod(spec.shape) <= 64:
        return np.full(spec.shape, None, dtype=object)
    return None


class WholeTensorLayer(Layer, register=False):
    """A layer on whole tensors of any rank and dtype (see ``whole_tensors``), whose operands
    may be constants: ``constants`` maps an operand's position to its array, and the node's
    inputs fill the other positions in order. The constants are kept as buffers (saved with
    the weights; a saved config names only their shapes and dtypes).
    """

    whole_tensors = True
    returns_new_array = True

    def __init__(self, constants: dict | None = None) -> None:
        super().__init__()
        self.constant_positions = []
        for position, value in sorted((int(k), v) for k, v in (constants or {}).items()):
            if isinstance(value, dict):  # from a saved config: the array comes with the weights
                value = np.zeros(tuple(value["shape"]), np.dtype(value["dtype"]))
            self.buffers[f"constant{position}"] = np.array(value)
            self.constant_positions.append(position)

    def operands(self, values: Sequence[Any], constant: Any = None) -> list:
        """The node's input values (or specs) merged with the constants, in operand order;
        ``constant(array)``, when given, is what stands for each constant."""
        values = list(values)
        inputs = iter(values)
        merged = []
        for position in range(len(values) + len(self.constant_positions)):
            if position in self.constant_positions:
                array = self.buffers[f"constant{position}"]
                merged.append(array if constant is None else constant(array))
            else:
                merged.append(next(inputs))
        return merged

    def operand_specs(self, specs: Sequence[Any]) -> list:
        """The inputs' specs merged with the constants' (fully known values)."""
        def known(array):
            value = np.asarray(array)
            return TensorSpec(tuple(value.shape), value.dtype, np.array(value, dtype=object))
        return self.operands(specs, known)

    def input_gradients(self, grads: Sequence[Any]) -> list:
        """The gradients of the node's inputs from those of every operand (constants dropped)."""
        return [g for position, g in enumerate(grads) if position not in self.constant_positions]

    def constants_config(self) -> dict:
        return {str(p): dict(shape=list(self.buffers[f"constant{p}"].shape),
                             dtype=np.dtype(self.buffers[f"constant{p}"].dtype).name)
                for p in self.constant_positions}


def operand_node(layer_type: type, operands: Sequence[Any], **options: Any) -> Any:
    """``layer_type(constants=..., **options)`` called on the symbolic tensors among ``operands``,
    the other operands (arrays, numbers) its constants: how a functional op called on symbolic
    tensors builds its node."""
    tensors = [v for v in operands if is_symbolic(v)]
    constants = {i: np.asarray(v) for i, v in enumerate(operands) if not is_symbolic(v)}
    return layer_type(constants=constants, **options)(tensors)
