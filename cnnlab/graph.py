"""Symbolic tensors, nodes, and the one executor that runs every model.

Calling a layer on a symbolic tensor (from :func:`Input`) adds a :class:`Node`: one call of
that layer, which records the tensors it consumes and the tensor it produces, and infers the
output shape with the layer's ``output_shape``.  A :class:`Graph` collects the nodes between
its inputs and outputs in topological order and runs them:

- :meth:`Graph.walk` evaluates the nodes needed for some target tensors, filling a value table
  and releasing each value once its last consumer has run.  ``forward`` and the shape
  inference are both this walk, with ``layer.forward`` or ``layer.output_shape`` as the step.
- :meth:`Graph.backward` runs the nodes in reverse, summing the gradients of a tensor that
  feeds several nodes and of a layer called by several nodes.
- For inference (``forward(..., training=False)``) the walk runs a *plan* in which each
  ``Conv2D`` node followed by a ``BatchNorm2D``, a two-input ``Add`` and an activation (any of
  them, in that order, each the sole consumer of the tensor before it) is one
  :class:`FusedConv` step: a single convolution call whose kernel applies the normalization,
  the residual and the activation as it writes the output (:func:`cnnlab.functional.conv2d`'s
  ``scale``, ``residual`` and ``activation``). The model is unchanged; ``cnnlab.config.FUSE =
  False`` turns the plan off.

>>> import cnnlab
>>> from cnnlab.layers import Conv2D, ReLU, Add
>>> x = cnnlab.Input((3, 8, 8))
>>> h = ReLU()(Conv2D(3, 4, 3, padding=1)(x))
>>> y = Add()([h, Conv2D(4, 4, 1)(h)])
>>> y.shape
(None, 4, 8, 8)
"""

import threading
import weakref

import numpy as np

from . import config
from . import functional as F
from .device import is_gpu_array, to_device, to_host

__all__ = ["Input", "SymbolicTensor", "Node", "Graph", "FusedConv", "is_symbolic"]


class SymbolicTensor:
    """A placeholder for the batch of values a node produces (or a model takes).

    Attributes
    ----------
    shape : tuple or None
        ``(None, *sample_shape)``; None when the sample shape is not known yet (a
        ``Sequential`` built without ``input_shape``).
    dtype : numpy.dtype
    node : Node or None
        The node that produces it; None for a model input.
    name : str or None
    """

    def __init__(self, sample_shape, dtype, node=None, name=None):
        self.sample_shape = None if sample_shape is None else tuple(int(s) for s in sample_shape)
        self.dtype = np.dtype(dtype)
        self.node = node
        self.name = name

    @property
    def shape(self):
        return None if self.sample_shape is None else (None,) + self.sample_shape

    def __repr__(self):
        source = "input" if self.node is None else type(self.node.layer).__name__
        name = f"{self.name!r}, " if self.name else ""
        return f"SymbolicTensor({name}shape={self.shape}, dtype={self.dtype.name}, from {source})"


def is_symbolic(value):
    return isinstance(value, SymbolicTensor)


def Input(shape, dtype="float32", name=None):
    """A model input: a symbolic batch of samples of ``shape`` (the batch axis is None).

    Parameters
    ----------
    shape : tuple of int
        One sample's shape, e.g. ``(3, 32, 32)``.
    dtype : 'float32' or 'float64'
    name : str or None

    Returns
    -------
    SymbolicTensor
        Call layers on it to build a graph, then ``cnnlab.Model(inputs, outputs)``.
    """
    if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or not shape:
        raise TypeError(f"shape must be a non-empty tuple of integers (one sample's shape), got {shape!r}")
    if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in shape):
        raise ValueError(f"shape must hold positive integers (no batch axis), got {tuple(shape)}")
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a string or None, got {name!r}")
    return SymbolicTensor(shape, dtype, name=name)


class Node:
    """One call of ``layer``: it consumes ``inputs`` and produces ``output``.

    ``takes_list`` says whether the layer was given a list (merge layers: ``forward`` takes a
    list of arrays and ``backward`` returns a list of gradients)."""

    def __init__(self, layer, inputs, takes_list):
        self.layer = layer
        self.inputs = list(inputs)
        self.takes_list = takes_list
        if any(t.sample_shape is None for t in self.inputs):
            shape = None
        else:
            shapes = [t.sample_shape for t in self.inputs]
            try:
                shape = layer.output_shape(shapes if takes_list else shapes[0])
            except (ValueError, TypeError) as exc:
                shown = [t.shape for t in self.inputs] if takes_list else self.inputs[0].shape
                raise type(exc)(f"{type(layer).__name__} cannot take an input of shape {shown}: {exc}") from None
        dtype = layer.dtype if layer.dtype is not None else self.inputs[0].dtype
        self.output = SymbolicTensor(shape, dtype, node=self)

    def apply(self, step, values):
        """``step(values)`` in the call form of this node: a list or the one value."""
        return step(values if self.takes_list else values[0])


def call_layer(layer, inputs):
    """What ``layer(inputs)`` does: add a node on symbolic ``inputs``, return its output."""
    takes_list = isinstance(inputs, (list, tuple))
    items = list(inputs) if takes_list else [inputs]
    name = type(layer).__name__
    for i, item in enumerate(items):
        if not is_symbolic(item):
            where = f"inputs[{i}]" if takes_list else "its input"
            raise TypeError(f"{name} was called on {type(item).__name__} ({where}): call a layer on symbolic "
                            "tensors from cnnlab.Input to build a model, or run it on arrays with "
                            "layer.forward(x)")
    if takes_list != layer.takes_list:
        wanted = "a list of symbolic tensors" if layer.takes_list else "one symbolic tensor"
        raise TypeError(f"{name} takes {wanted}, got {'a list' if takes_list else 'one tensor'}")
    if not items:
        raise ValueError(f"{name} was called on an empty list")
    return Node(layer, items, takes_list).output


def _fused_activation(layer):
    """The ``activation`` argument of :func:`cnnlab.functional.conv2d` that computes ``layer``
    (an activation layer) in the convolution's output write, or None."""
    from . import layers as L

    kind = type(layer)
    simple = {L.ReLU: "relu", L.ReLU6: "relu6", L.HardSwish: "hardswish", L.SiLU: "silu",
              L.Sigmoid: "sigmoid", L.Tanh: "tanh"}
    if kind in simple:
        return simple[kind]
    if kind is L.LeakyReLU:
        return ("leaky_relu", layer.negative_slope)
    if kind is L.Clip:
        return ("clip", layer.min, layer.max)
    if kind is L.HardSigmoid:
        return ("hardsigmoid", layer.alpha, layer.beta)
    return None


class FusedConv:
    """One inference step standing for a ``Conv2D`` node and the ``BatchNorm2D``, ``Add`` and
    activation nodes fused into it (each optional, at least one present).

    It consumes the convolution's input and, with an ``Add``, the addition's other input (the
    residual), and produces the last fused node's output; the intermediate tensors are never
    made. The parameters are read from the layers at each call, so training or editing them
    between calls is seen.

    Attributes
    ----------
    conv, norm, add, activation : Node or None
        The fused nodes (``conv`` always there).
    inputs : list of SymbolicTensor
    output : SymbolicTensor
    """

    takes_list = True

    def __init__(self, conv, norm=None, add=None, residual=None, activation=None):
        self.conv, self.norm, self.add, self.activation = conv, norm, add, activation
        self.members = [n for n in (conv, norm, add, activation) if n is not None]
        self.inputs = [conv.inputs[0]] + ([residual] if residual is not None else [])
        self.output = self.members[-1].output
        self.layer = conv.layer

    def __repr__(self):
        return "FusedConv(" + " -> ".join(type(n.layer).__name__ for n in self.members) + ")"

    def run(self, values, out=None):
        conv = self.conv.layer
        x = conv._prepare(values[0])
        weight = conv.params["weight"]
        shift, scale = conv.params.get("bias"), None
        if self.norm is not None:
            scale, shift = self._folded_norm(shift)
            if is_gpu_array(weight):
                scale, shift = to_device(scale), to_device(shift)
        residual = values[1] if self.add is not None else None
        activation = None if self.activation is None else _fused_activation(self.activation.layer)
        return F.conv2d(x, weight, shift, **conv._geometry(), scale=scale, residual=residual,
                        activation=activation, out=out)

    def _folded_norm(self, bias):
        """Per-filter ``(scale, shift)`` of the inference-mode batch normalization applied to the
        convolution's output (with its bias): ``scale = gamma / sqrt(var + eps)``,
        ``shift = beta + (bias - mean) * scale``, computed in float64 as the stand-alone kernel."""
        norm = self.norm.layer
        gamma, beta = (to_host(norm.params[k]).astype(np.float64) for k in ("weight", "bias"))
        mean, variance = (to_host(norm.buffers[k]).astype(np.float64) for k in ("running_mean", "running_var"))
        scale = gamma / np.sqrt(variance + norm.eps)
        offset = -mean if bias is None else to_host(bias).astype(np.float64) - mean
        dtype = self.conv.layer.dtype
        return scale.astype(dtype), (beta + offset * scale).astype(dtype)


def _non_aliasing_layers():
    """Layer types whose inference ``forward`` always returns a new array (never a view of, or
    the same array as, an input): a buffer only they read can be reused once they have run."""
    from . import layers as L

    return (L.Conv2D, L.BatchNorm2D, L.Dense, L._Pool2D, L._GlobalPool2D, L.Add, L.Multiply, L.Concatenate,
            L.ReLU, L.LeakyReLU, L.Sigmoid, L.Tanh, L.Softmax, L.LogSoftmax, L._ElementwiseActivation)


class BufferPool:
    """Output buffers of inference steps, reused from one step and one call to the next.

    A :class:`FusedConv` step takes its output array from here (:meth:`take`): a view of the
    smallest free buffer that is large enough (best fit), or a new buffer. When the walk drops
    a value that came from here and every step that read it returns new arrays, its buffer
    comes back (:meth:`give`) for a later step of any shape. After a call, :meth:`trim` lets go
    of the buffers that call did not use, so the pool holds about the most memory one call
    had in use at once. One pool per graph and thread (see :meth:`Graph.buffer_pool`):
    concurrent predictions never share buffers.
    """

    def __init__(self):
        self.free = {}  # dtype -> flat buffers
        self.lent = {}  # id(view handed out) -> its buffer
        self.used = set()  # ids of the buffers this call used

    def take(self, shape, dtype):
        dtype = np.dtype(dtype)
        count = int(np.prod(shape))
        buffers = self.free.setdefault(dtype, [])
        fits = [i for i, buffer in enumerate(buffers) if buffer.size >= count]
        if fits:
            buffer = buffers.pop(min(fits, key=lambda i: buffers[i].size))
        else:
            buffer = np.empty(count, dtype)
        self.used.add(id(buffer))
        view = buffer[:count].reshape(shape)
        self.lent[id(view)] = buffer
        return view

    def give(self, array):
        buffer = self.lent.pop(id(array), None)
        if buffer is not None:
            self.free.setdefault(buffer.dtype, []).append(buffer)

    def trim(self):
        self.free = {dtype: [b for b in buffers if id(b) in self.used] for dtype, buffers in self.free.items()}
        self.lent.clear()  # whatever was not given back now belongs to the caller
        self.used = set()

    @property
    def nbytes(self):
        return sum(b.nbytes for buffers in self.free.values() for b in buffers)


_POOLS = threading.local()


def fusion_plan(nodes, keep):
    """``nodes`` (topological order) with every fusable convolution chain replaced by one
    :class:`FusedConv` placed where its last node was.

    A ``Conv2D`` node takes in, in this order and each only if it is the sole consumer of the
    tensor so far and that tensor is not in ``keep`` (ids of tensors wanted outside): a
    ``BatchNorm2D`` of the same dtype, a two-input ``Add`` whose other input has the same
    shape and dtype, an activation :func:`_fused_activation` knows. A node is fused into one
    convolution at most (a shortcut ``Add`` of two convolutions goes to the first).
    """
    from . import layers as L

    consumers = {}
    for node in nodes:
        for tensor in node.inputs:
            consumers.setdefault(id(tensor), []).append(node)

    placed, absorbed = {}, set()

    def sole_consumer(tensor):
        users = consumers.get(id(tensor), [])
        if len(users) != 1 or id(tensor) in keep or id(users[0]) in absorbed:
            return None
        return users[0]

    for node in nodes:
        if type(node.layer) is not L.Conv2D or id(node) in absorbed:
            continue
        tensor, parts = node.output, {}
        following = sole_consumer(tensor)
        if following is not None and type(following.layer) is L.BatchNorm2D \
                and following.layer.dtype == node.layer.dtype:
            parts["norm"], tensor = following, following.output
            following = sole_consumer(tensor)
        if following is not None and type(following.layer) is L.Add and len(following.inputs) == 2:
            other = following.inputs[1] if following.inputs[0] is tensor else following.inputs[0]
            if other is not tensor and other.sample_shape == tensor.sample_shape and other.dtype == tensor.dtype:
                parts["add"], parts["residual"], tensor = following, other, following.output
                following = sole_consumer(tensor)
        if following is not None and _fused_activation(following.layer) is not None:
            parts["activation"] = following
        if not parts:
            continue
        fused = FusedConv(node, **parts)
        placed[id(fused.members[-1])] = fused
        absorbed.update(id(member) for member in fused.members)
    return [placed.get(id(node), node) for node in nodes
            if id(node) not in absorbed or id(node) in placed]


def _as_tensor_list(name, value):
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"{name} is empty: pass one symbolic tensor or a list of them")
    for i, item in enumerate(items):
        if not is_symbolic(item):
            raise TypeError(f"{name}[{i}] must be a symbolic tensor (from cnnlab.Input or a layer call), "
                            f"got {type(item).__name__}")
    return items


class Graph:
    """The nodes between ``inputs`` and ``outputs``, in topological order, and their executor.

    Raises ``ValueError`` when an output needs a tensor that is not among ``inputs`` (it is
    not produced from them), when an input reaches no output, or when an input is not a
    model input (it is produced by a layer) or is listed twice.
    """

    def __init__(self, inputs, outputs):
        self.inputs = _as_tensor_list("inputs", inputs)
        self.outputs = _as_tensor_list("outputs", outputs)
        for i, tensor in enumerate(self.inputs):
            if tensor.node is not None:
                raise ValueError(f"inputs[{i}] is the output of {type(tensor.node.layer).__name__}, "
                                 "not a model input: pass the tensors cnnlab.Input returned")
            if any(tensor is other for other in self.inputs[:i]):
                raise ValueError(f"inputs[{i}] is listed twice")
        self.nodes = self._topological_order()
        reached = {id(t) for node in self.nodes for t in node.inputs} | {id(t) for t in self.outputs}
        for i, tensor in enumerate(self.inputs):
            if id(tensor) not in reached:
                raise ValueError(f"inputs[{i}] ({tensor!r}) reaches no output: every input must be used")

    def _topological_order(self):
        """Post-order depth-first walk from the outputs: each node after the nodes it reads."""
        known = {id(t) for t in self.inputs}
        order, done = [], set()
        for index, output in enumerate(self.outputs):
            stack = [(output, False)]
            while stack:
                tensor, expanded = stack.pop()
                if id(tensor) in known:
                    continue
                node = tensor.node
                if node is None:
                    raise ValueError(f"outputs[{index}] is not produced from the inputs: it needs "
                                     f"{tensor!r}, which is not among the model's inputs")
                if expanded:
                    if id(node) not in done:
                        done.add(id(node))
                        order.append(node)
                    known.add(id(tensor))
                    continue
                stack.append((tensor, True))
                stack.extend((t, False) for t in reversed(node.inputs) if id(t) not in known)
        return order

    @property
    def layers(self):
        """Each layer once, in the order of its first node."""
        seen, layers = set(), []
        for node in self.nodes:
            if id(node.layer) not in seen:
                seen.add(id(node.layer))
                layers.append(node.layer)
        return layers

    def consumers(self, tensor):
        return [node for node in self.nodes if any(t is tensor for t in node.inputs)]

    # --- the executor ---------------------------------------------------------------
    def walk(self, sources, step, targets=None, plan=None, release=None):
        """Evaluate ``targets`` (default: the outputs) from ``sources``.

        ``sources`` maps ``id(input tensor)`` to its value; ``step(node, inputs) -> value`` runs
        one node.  Only the nodes the targets need run, in topological order (or the steps of
        ``plan``, e.g. :meth:`inference_plan`'s); a value is dropped from the table once its
        last consumer has run (and handed to ``release(tensor, value)`` when given).  Returns the
        targets' values, in order.
        """
        targets = self.outputs if targets is None else targets
        needed = self._ancestors(targets) if plan is None else plan
        values = dict(sources)
        remaining = {}
        for node in needed:
            for tensor in node.inputs:
                remaining[id(tensor)] = remaining.get(id(tensor), 0) + 1
        keep = {id(t) for t in targets}
        for node in needed:
            values[id(node.output)] = step(node, [values[id(t)] for t in node.inputs])
            for tensor in node.inputs:
                remaining[id(tensor)] -= 1
                if remaining[id(tensor)] == 0 and id(tensor) not in keep:
                    value = values.pop(id(tensor))
                    if release is not None:
                        release(tensor, value)
        return [values[id(t)] for t in targets]

    def inference_plan(self, targets=None):
        """The steps an inference :meth:`forward` runs for ``targets``: the needed nodes with
        convolution chains fused (:func:`fusion_plan`), computed once per set of targets."""
        return self._inference_steps(self.outputs if targets is None else targets)[0]

    def _inference_steps(self, targets):
        """``(plan, recyclable)`` for ``targets``, cached. The cache is looked up by the
        targets' ids and checked by identity, so a stale entry can never serve other tensors;
        it is not pickled or copied (see :meth:`__getstate__`)."""
        cache = self.__dict__.setdefault("_plans", {})
        entry = cache.get(tuple(id(t) for t in targets))
        if entry is None or len(entry[0]) != len(targets) or any(a is not b for a, b in zip(entry[0], targets)):
            plan = fusion_plan(self._ancestors(targets), {id(t) for t in targets})
            entry = cache[tuple(id(t) for t in targets)] = (list(targets), plan, self._recyclable(plan))
        return entry[1], entry[2]

    def __getstate__(self):
        """Pickling and copying leave out what is keyed by object ids (the inference plans and a
        training step's saved state): they are rebuilt where the copy runs."""
        state = dict(self.__dict__)
        for key in ("_plans", "_tape"):
            state.pop(key, None)
        return state

    def _recyclable(self, plan):
        """Ids of the tensors whose every reader in ``plan`` returns new arrays."""
        safe = (FusedConv,) + _non_aliasing_layers()
        readers = {}
        for step in plan:
            for tensor in step.inputs:
                readers.setdefault(id(tensor), []).append(step)
        return {key for key, steps in readers.items()
                if all(isinstance(s if isinstance(s, FusedConv) else s.layer, safe) for s in steps)}

    def buffer_pool(self):
        """This thread's :class:`BufferPool` for this graph."""
        pools = getattr(_POOLS, "by_graph", None)
        if pools is None:
            pools = _POOLS.by_graph = weakref.WeakKeyDictionary()
        if self not in pools:
            pools[self] = BufferPool()
        return pools[self]

    def _ancestors(self, targets):
        """The nodes ``targets`` depend on, in topological order."""
        wanted = {id(t.node) for t in targets if t.node is not None}
        for node in reversed(self.nodes):
            if id(node) in wanted:
                wanted.update(id(t.node) for t in node.inputs if t.node is not None)
        return [node for node in self.nodes if id(node) in wanted]

    def forward(self, inputs, training=False, targets=None, seed=None, observe=None):
        """Run the layers on the arrays ``inputs`` (one per graph input); the targets' values.

        In training each node's saved state (what its layer's backward needs) is kept per
        node, so a layer called by several nodes differentiates each call.  ``seed`` (an int
        or None) gives the ``k``-th node whose layer draws random masks (has a ``step_seed``)
        the seed ``(seed + k) % 2**31`` for this call.  ``observe(node, value)``, when given,
        sees each node's output as it is made (every node then runs on its own).  Inference
        without ``observe`` runs :meth:`inference_plan`, with convolution chains fused.
        """
        if training:
            self._tape = {}
        seeded = [node for node in self.nodes if hasattr(node.layer, "step_seed")]
        seeds = {} if seed is None else {id(node): (seed + k) % (2**31) for k, node in enumerate(seeded)}

        plan = pool = release = None
        if not training and observe is None and config.FUSE:
            plan, reusable = self._inference_steps(self.outputs if targets is None else targets)
        if plan is not None and not any(is_gpu_array(v) for v in inputs):
            pool = self.buffer_pool()
            wanted = {id(t) for t in (self.outputs if targets is None else targets)}

            def release(tensor, value):
                if id(tensor) in reusable:
                    pool.give(value)

        def step(node, values):
            if isinstance(node, FusedConv):
                if pool is None or id(node.output) in wanted:
                    return node.run(values)
                conv = node.conv.layer
                shape = (values[0].shape[0],) + tuple(conv.output_shape(values[0].shape[1:]))
                return node.run(values, out=pool.take(shape, conv.dtype))
            layer = node.layer
            if id(node) in seeds:
                layer.step_seed = seeds[id(node)]
            try:
                out = node.apply(lambda v: layer.forward(v, training), values)
            finally:
                if id(node) in seeds:
                    layer.step_seed = None
            if training:
                self._tape[id(node)] = layer._saved
            if observe is not None:
                observe(node, out)
            return out

        try:
            return self.walk({id(t): v for t, v in zip(self.inputs, inputs)}, step, targets, plan, release)
        finally:
            if pool is not None:
                pool.trim()

    def requires_grad(self, input_grads):
        """``id(tensor) -> bool``: whether a gradient must reach the tensor: a graph input when
        ``input_grads``; a node's output when its layer has trainable parameters or one of its
        inputs requires a gradient."""
        needs = {id(t): input_grads for t in self.inputs}
        for node in self.nodes:
            trainable = bool(node.layer.params) and node.layer.trainable
            needs[id(node.output)] = trainable or any(needs[id(t)] for t in node.inputs)
        return needs

    def backward(self, grads, input_grads=True):
        """Backpropagate ``grads`` (``{id(tensor): gradient}``, the targets of the last training
        :meth:`forward`); returns the gradients of the graph inputs (None where not computed).

        A tensor that feeds several nodes receives the sum of their gradients; a layer called
        by several nodes ends with the sum of its parameter gradients.  A node whose inputs need
        no gradient does not compute one (``input_grad`` is switched off for the call on layers
        that have it), and nodes nothing upstream needs are not run.
        """
        tape = getattr(self, "_tape", None)
        if tape is None:
            raise RuntimeError("backward() needs a preceding forward(x, training=True)")
        needs = self.requires_grad(input_grads)
        grads = dict(grads)
        summed = {}  # id(layer) -> its parameter gradients from the nodes already run
        for node in reversed(self.nodes):
            grad = grads.pop(id(node.output), None)
            if grad is None or not needs[id(node.output)] or id(node) not in tape:
                continue
            layer = node.layer
            wanted = [needs[id(t)] for t in node.inputs]
            layer._saved = tape[id(node)]
            switch = hasattr(layer, "input_grad") and not any(wanted)
            if switch:
                previous, layer.input_grad = layer.input_grad, False
            try:
                result = layer.backward(grad)
            finally:
                if switch:
                    layer.input_grad = previous
            if id(layer) in summed:
                for name, earlier in summed[id(layer)].items():
                    layer.grads[name] = F.add(earlier, layer.grads[name])
            summed[id(layer)] = dict(layer.grads)
            results = result if node.takes_list else [result]
            for tensor, needed, value in zip(node.inputs, wanted, results):
                if needed and value is not None:
                    key = id(tensor)
                    grads[key] = value if key not in grads else F.add(grads[key], value)
        return [grads.get(id(t)) for t in self.inputs]

    def sample_shapes(self, input_shapes):
        """``{id(tensor): shape}`` of every node's output for the per-sample ``input_shapes``
        (the same walk as :meth:`forward`, with ``output_shape`` as the step); ``ValueError``
        naming the first layer that does not fit, by its index in :attr:`layers`."""
        index = {id(layer): i for i, layer in enumerate(self.layers)}
        shapes = {}

        def step(node, values):
            try:
                shape = tuple(int(s) for s in node.apply(node.layer.output_shape, values))
            except ValueError as exc:
                shown = input_shapes[0] if len(input_shapes) == 1 else input_shapes
                raise ValueError(f"input shape {shown} does not fit layer {index[id(node.layer)]} "
                                 f"({type(node.layer).__name__}): {exc}") from None
            shapes[id(node.output)] = shape
            return shape

        self.walk({id(t): tuple(s) for t, s in zip(self.inputs, input_shapes)}, step)
        return shapes

    # --- saving ---------------------------------------------------------------------
    def config(self):
        """The structure as JSON-ready data: inputs, nodes (layer index, consumed tensors) and
        outputs.  A tensor is ``['input', i]`` or ``['node', j]`` (the output of node ``j``)."""
        layer_index = {id(layer): i for i, layer in enumerate(self.layers)}
        names = {id(t): ["input", i] for i, t in enumerate(self.inputs)}
        nodes = []
        for j, node in enumerate(self.nodes):
            nodes.append(dict(layer=layer_index[id(node.layer)], inputs=[names[id(t)] for t in node.inputs],
                              takes_list=node.takes_list))
            names[id(node.output)] = ["node", j]
        inputs = [dict(shape=list(t.sample_shape) if t.sample_shape is not None else None, dtype=t.dtype.name,
                       name=t.name) for t in self.inputs]
        return dict(version=1, inputs=inputs, nodes=nodes, outputs=[names[id(t)] for t in self.outputs])

    @classmethod
    def from_config(cls, config, layers):
        """Rebuild a graph from :meth:`config` on the given layers (by index)."""
        if config.get("version") != 1:
            raise ValueError(f"unknown graph version {config.get('version')!r}")
        inputs = [SymbolicTensor(spec["shape"], spec["dtype"], name=spec.get("name")) for spec in config["inputs"]]
        produced = []

        def tensor(reference):
            kind, number = reference
            table = inputs if kind == "input" else produced if kind == "node" else None
            if table is None or not isinstance(number, int) or not 0 <= number < len(table):
                raise ValueError(f"bad tensor reference {reference!r}")
            return table[number]

        for spec in config["nodes"]:
            layer = layers[spec["layer"]]
            consumed = [tensor(r) for r in spec["inputs"]]
            produced.append(call_layer(layer, consumed if spec["takes_list"] else consumed[0]))
        return cls(inputs, [tensor(r) for r in config["outputs"]])
