"""The one executor that runs every model: a :class:`Graph` of the nodes between its inputs and
outputs (see :mod:`cnnlab.symbolic`), in topological order.

- :meth:`Graph.walk` evaluates the nodes needed for some target tensors, filling a value table
  and releasing each value once its last consumer has run.  ``forward`` and the shape
  inference are both this walk, with ``layer.forward`` or ``layer.output_shape`` as the step.
- :meth:`Graph.backward` runs the nodes in reverse, summing the gradients of a tensor that
  feeds several nodes and of a layer called by several nodes.
- For inference (``forward(..., training=False)``) the walk runs the plan of
  :mod:`cnnlab.fusion`, with convolution chains fused into one kernel call.

>>> import cnnlab
>>> from cnnlab.layers import Conv2D, ReLU, Add
>>> x = cnnlab.Input((3, 8, 8))
>>> h = ReLU()(Conv2D(3, 4, 3, padding=1)(x))
>>> y = Add()([h, Conv2D(4, 4, 1)(h)])
>>> y.shape
(None, 4, 8, 8)
"""

from __future__ import annotations

import contextlib

import numpy as np

from . import config, memory
from . import functional as F
from .device import is_gpu_array
from .fusion import FusedConv, FusedStep, TrainingFusion, fusion_plan, infer_node, recyclable, training_fusion
from .parallel import single_threaded_blas
from .prepared import prepared_record
from .symbolic import Input, Node, SymbolicTensor, TensorSpec, as_tensor_list, call_layer, is_symbolic

__all__ = ["Input", "SymbolicTensor", "Node", "Graph", "FusedConv", "is_symbolic"]


class Graph:
    """The nodes between ``inputs`` and ``outputs``, in topological order, and their executor.

    Raises ``ValueError`` when an output needs a tensor that is not among ``inputs`` (it is
    not produced from them), when an input reaches no output, or when an input is not a
    model input (it is produced by a layer) or is listed twice.
    """

    def __init__(self, inputs, outputs):
        self.inputs = as_tensor_list("inputs", inputs)
        self.outputs = as_tensor_list("outputs", outputs)
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

    @staticmethod
    def used_inputs(inputs, outputs):
        """Ids of the tensors among ``inputs`` that some output depends on."""
        wanted, seen, stack = {id(t) for t in inputs}, set(), list(outputs)
        while stack:
            tensor = stack.pop()
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            if tensor.node is not None:
                stack.extend(tensor.node.inputs)
        return wanted & seen

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
        values = dict(sources)
        for node, output, inputs, drops in self._walk_schedule(plan, targets):
            values[output] = step(node, [values[i] for i in inputs])
            for tensor, key in drops:
                value = values.pop(key)
                if release is not None:
                    release(tensor, value)
        return [values[id(t)] for t in targets]

    def _walk_schedule(self, plan, targets):
        """``(node, id of its output, ids of its inputs, (tensor, id) of the values to drop
        after it)`` for each node :meth:`walk` runs; a plan's schedule is kept for the next call
        with the same plan object and targets (inference runs the same plan call after call)."""
        key = tuple(id(t) for t in targets)
        cached = getattr(self, "_walk_cached", None)
        if plan is not None and cached is not None and cached[0] is plan and cached[1] == key:
            return cached[2]
        needed = self._ancestors(targets) if plan is None else plan
        last_use = {}
        for position, node in enumerate(needed):
            for tensor in node.inputs:
                last_use[id(tensor)] = (position, tensor)
        drops = [[] for _ in needed]
        for tensor_id, (position, tensor) in last_use.items():
            if tensor_id not in key:
                drops[position].append((tensor, tensor_id))
        schedule = [(node, id(node.output), [id(t) for t in node.inputs], drops[position])
                    for position, node in enumerate(needed)]
        if plan is not None:
            self._walk_cached = (plan, key, schedule)
        return schedule

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
            entry = cache[tuple(id(t) for t in targets)] = (list(targets), plan, recyclable(plan))
        return entry[1], entry[2]

    def __getstate__(self):
        """Pickling and copying leave out what is keyed by object ids (the inference plans and a
        training step's saved state): they are rebuilt where the copy runs."""
        state = dict(self.__dict__)
        for key in ("_plans", "_walk_cached", "_infer_cached", "_frozen", "_training_fusion", "_tape", "_fused"):
            state.pop(key, None)
        return state

    def buffer_pool(self):
        """This thread's :class:`cnnlab.memory.BufferPool` for this graph."""
        return memory.buffer_pool(self)

    def step_pool(self):
        """This thread's :class:`cnnlab.memory.StepPool` for this graph: where a training step's
        host arrays come from (:func:`cnnlab.training.train_step`)."""
        return memory.step_pool(self)

    def _ancestors(self, targets):
        """The nodes ``targets`` depend on, in topological order."""
        wanted = {id(t.node) for t in targets if t.node is not None}
        for node in reversed(self.nodes):
            if id(node) in wanted:
                wanted.update(id(t.node) for t in node.inputs if t.node is not None)
        return [node for node in self.nodes if id(node) in wanted]

    def frozen_steps(self, targets):
        """For a training step whose backward needs no input gradient: the nodes (of those the
        targets need) whose outputs need no gradient either (a frozen base: no trainable
        parameter before them) and that draw no random masks, as the fused inference plan of
        that part when it comes first in topological order, then the other nodes: the steps to
        run (None when the frozen nodes do not come first: each node then runs on its own), the
        ids of the frozen nodes, and the ids of the tensors whose buffers can go back to the
        graph's buffer pool once read (made and read only inside the fused frozen part, by
        readers that return new arrays; empty without a plan). They run as in inference,
        without saving anything for a backward pass, their outputs from the buffer pool: new
        arrays each step would fault their pages in on the first write (ResNet-18's base at
        batch 16: about 2,500 minor page faults a step with new arrays, 5 from the pool).
        Kept per set of targets and trainable flags (a training step asks for the same each
        time; the fused steps keep their bound kernels from one step to the next)."""
        cache = self.__dict__.setdefault("_frozen", {})
        flags = tuple(bool(layer.params) and layer.trainable for layer in self.layers)
        key = (tuple(id(t) for t in targets), flags, bool(config.FUSE))
        entry = cache.get(key)
        if entry is None or any(a is not b for a, b in zip(entry[0], targets)):
            entry = cache[key] = (list(targets), *self._frozen_steps(targets))
        return entry[1], entry[2], entry[3]

    def training_fusion(self, targets):
        """The :class:`cnnlab.fusion.TrainingFusion` of a training step toward ``targets``
        (:func:`cnnlab.fusion.training_fusion`: convolutions that apply the ReLU reading them,
        max poolings and convolutions that apply the mask of the ReLU they read in their
        backward; nothing with ``config.FUSE`` off). Kept per set of targets."""
        if not config.FUSE:
            return TrainingFusion()
        cache = self.__dict__.setdefault("_training_fusion", {})
        key = tuple(id(t) for t in targets)
        entry = cache.get(key)
        if entry is None or any(a is not b for a, b in zip(entry[0], targets)):
            entry = cache[key] = (list(targets), training_fusion(self._ancestors(targets), set(key)))
        return entry[1]

    def _frozen_steps(self, targets):
        needs = self.requires_grad(False)
        needed = self._ancestors(targets)
        frozen = [node for node in needed if not needs[id(node.output)] and not node.layer.draws_masks]
        ids = {id(node) for node in frozen}
        if not frozen or not config.FUSE or needed[:len(frozen)] != frozen:
            return None, ids, set()  # interleaved with trainable nodes: each runs on its own, in order
        later = {id(t) for node in needed[len(frozen):] for t in node.inputs} | {id(t) for t in targets}
        base = fusion_plan(frozen, later)
        return base + needed[len(frozen):], ids, recyclable(base) - later

    def forward(self, inputs, training=False, targets=None, seed=None, observe=None, input_grads=True):
        """Run the layers on the arrays ``inputs`` (one per graph input); the targets' values.

        In training each node's saved state (what its layer's backward needs) is kept per
        node, so a layer called by several nodes differentiates each call.  ``seed`` (an int
        or None) gives the ``k``-th node whose layer draws random masks (whose class declares ``draws_masks``: it has a ``step_seed``)
        the seed ``(seed + k) % 2**31`` for this call.  ``observe(node, value)``, when given,
        sees each node's output as it is made (every node then runs on its own).  Inference
        without ``observe`` runs :meth:`inference_plan`, with convolution chains fused.
        Training with ``input_grads=False`` (the backward will not ask for the inputs' gradient,
        as ``fit``'s does not) runs a frozen base as in inference (:meth:`frozen_steps`). In
        training a ``Conv2D`` whose output only a ``ReLU`` reads applies it as it writes, and the
        ``ReLU`` passes the output on; a ``MaxPool2D`` that alone reads a ``ReLU``'s output keeps
        its positive picks only, a ``Conv2D`` that does applies its mask to its input gradient,
        and the ``ReLU``'s backward passes the gradient on (:meth:`training_fusion`; not while
        observed).
        """
        if not training and observe is None and seed is None and config.FUSE:
            return self._infer(inputs, self.outputs if targets is None else targets)
        fused = TrainingFusion()
        if training and observe is None:  # (observed, each node's own output is seen)
            fused = self.training_fusion(self.outputs if targets is None else targets)
        if training:
            self._tape, self._fused = {}, fused
        seeds = {} if seed is None else {id(node): (seed + k) % (2**31) for k, node in
                                         enumerate(node for node in self.nodes if node.layer.draws_masks)}

        plan = pool = release = None
        frozen = reusable = ()
        if training and not input_grads and observe is None:
            plan, frozen, reusable = self.frozen_steps(self.outputs if targets is None else targets)
        if not training and observe is None and config.FUSE:
            plan, reusable = self._inference_steps(self.outputs if targets is None else targets)
        if plan is not None and (reusable or not training) and not any(is_gpu_array(v) for v in inputs):
            pool = self.buffer_pool()
            if training:  # a frozen base: only the outputs that go back to the pool come from it
                lends = reusable.__contains__
            else:  # inference: every output but the targets (those the pool never gets back stay the caller's)
                wanted = {id(t) for t in (self.outputs if targets is None else targets)}

                def lends(key):
                    return key not in wanted

            def release(tensor, value):
                if id(tensor) in reusable:
                    pool.give(value)

        def step(node, values):
            if isinstance(node, FusedStep):
                return node.run(values, pool=pool if pool is not None and lends(id(node.output)) else None)
            layer = node.layer
            if id(node) in frozen:  # a frozen base: as in inference, nothing saved for backward
                lender = pool if pool is not None and layer.returns_new_array and lends(id(node.output)) else None
                return infer_node(node, values, lender)
            if id(node) in seeds:
                layer.step_seed = seeds[id(node)]
            try:
                if id(node) in fused.convs:  # the ReLU that alone reads the output applied as it is written
                    out = node.apply(lambda v: layer.forward(v, training, activation="relu"), values)
                elif id(node) in fused.relus:  # that output passed on, and saved as its input for the backward
                    out = node.apply(lambda v: v, values)
                    layer.saved = out
                elif id(node) in fused.pools:  # the mask of the ReLU it reads kept in its indices
                    out = node.apply(lambda v: layer.forward(v, training, positive_only=True), values)
                else:
                    out = node.apply(lambda v: layer.forward(v, training), values)
            finally:
                if id(node) in seeds:
                    layer.step_seed = None
            if training:
                if id(node) in fused.through:  # its backward passes the gradient on: nothing kept
                    layer.saved = None
                self._tape[id(node)] = layer.saved
            if observe is not None:
                observe(node, out)
            return out

        blas = contextlib.nullcontext() if any(is_gpu_array(v) for v in inputs) else single_threaded_blas()
        try:
            with blas:
                return self.walk({id(t): v for t, v in zip(self.inputs, inputs)}, step, targets, plan, release)
        finally:
            if pool is not None:
                pool.trim()

    def _infer(self, inputs, targets):
        """:meth:`forward` in inference without an observer or a seed: the steps of
        :meth:`inference_plan` over a schedule kept with the plan (:meth:`_inference_schedule`),
        each output but the targets' from the buffer pool on the host; on host arrays of shapes
        seen before, the plan prepared for them where it holds (:mod:`cnnlab.prepared`)."""
        on_host = not any(is_gpu_array(v) for v in inputs)
        record = prepared_record(self, targets) if on_host else None
        if record is not None:
            result = record.run(self, inputs)
            if result is not None:
                return result
        shapes = {} if record is not None and record.wants_shapes(inputs) else None
        pool = self.buffer_pool() if on_host else None
        values = {id(t): v for t, v in zip(self.inputs, inputs)}
        if shapes is not None:
            shapes.update((key, _host_spec(v)) for key, v in values.items())
        try:
            with single_threaded_blas() if on_host else contextlib.nullcontext(), F.conv.held_settings():
                schedule = self._inference_schedule(targets)
                for node, fused, output, reads, lends, drops in schedule:
                    lender = pool if lends else None
                    arrays = list(map(values.__getitem__, reads))  # (no comprehension: one call less a step)
                    if fused:
                        values[output] = node.run(arrays, None, lender)
                    else:
                        values[output] = infer_node(node, arrays, lender)
                    if shapes is not None:
                        shapes[output] = _host_spec(values[output])
                    for key, reusable in drops:
                        value = values.pop(key)
                        if reusable and pool is not None:
                            pool.give(value)
                if shapes is not None and all(shapes[id(t)] is not None for t in self.inputs):
                    record.prepare(self._inference_steps(targets)[0], schedule, inputs, shapes, self.inputs)
                    pool.clear()  # (the prepared plan has arrays of its own)
                return [values[id(t)] for t in targets]
        finally:
            if pool is not None:
                pool.trim()

    def _inference_schedule(self, targets):
        """:meth:`_walk_schedule` of the inference plan for ``targets``, each step as ``(step,
        whether it is fused, id of its output, ids of its inputs, whether its output may come
        from the buffer pool, (id, whether its buffer goes back to the pool) of each value
        dropped after it)``; kept for the next call with the same plan and targets."""
        plan, reusable = self._inference_steps(targets)
        key = tuple(id(t) for t in targets)
        cached = getattr(self, "_infer_cached", None)
        if cached is not None and cached[0] is plan and cached[1] == key:
            return cached[2]
        wanted = set(key)  # the targets stay the caller's: never from the pool
        schedule = []
        for node, output, reads, drops in self._walk_schedule(plan, targets):
            # only an output whose buffer comes back takes one from the pool: one read by a step that
            # returns a view of it (a Flatten) would take a pooled buffer, maybe a large one, out of
            # the pool for good, and the next call would fault a new one in (MobileNetV2's pooled
            # features took a 1.8 MB buffer so, every call)
            lends = output in reusable and output not in wanted \
                and (isinstance(node, FusedStep) or node.layer.returns_new_array)
            schedule.append((node, isinstance(node, FusedStep), output, reads, lends,
                             [(tensor_id, tensor_id in reusable) for _, tensor_id in drops]))
        self._infer_cached = (plan, key, schedule)
        return schedule

    def release_saved(self):
        """Let go of what the last training :meth:`forward` kept for :meth:`backward` (the saved
        state of each node and of each layer): once a training step's update is done nothing
        reads it, and its arrays can serve the next step (:meth:`step_pool`) instead of being
        held until each layer runs again."""
        self._tape, self._fused = None, TrainingFusion()
        for layer in self.layers:
            layer.saved = None

    def requires_grad(self, input_grads):
        """``id(tensor) -> bool``: whether a gradient must reach the tensor: a graph input when
        ``input_grads``; a node's output when its layer has trainable parameters or one of its
        inputs requires a gradient."""
        needs = {id(t): input_grads for t in self.inputs}
        for node in self.nodes:
            trainable = bool(node.layer.params) and node.layer.trainable
            differentiable = node.output.dtype.kind == "f"  # no gradient flows through shapes or indices
            needs[id(node.output)] = differentiable and (trainable or any(needs[id(t)] for t in node.inputs))
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
        on_gpu = any(is_gpu_array(g) for g in grads.values())
        with contextlib.nullcontext() if on_gpu else single_threaded_blas():  # once for every kernel
            return self._backward(tape, grads, input_grads)

    def _backward(self, tape, grads, input_grads):
        needs = self.requires_grad(input_grads)
        fused = getattr(self, "_fused", TrainingFusion())  # of the forward that made the tape
        grads = dict(grads)
        summed = {}  # id(layer) -> its parameter gradients from the nodes already run
        for node in reversed(self.nodes):
            grad = grads.pop(id(node.output), None)
            if grad is None or not needs[id(node.output)] or id(node) not in tape:
                continue
            layer = node.layer
            wanted = [needs[id(t)] for t in node.inputs]
            layer.saved = tape[id(node)]
            switch = hasattr(layer, "input_grad") and not any(wanted)
            if switch:
                previous, layer.input_grad = layer.input_grad, False
            try:
                if id(node) in fused.through:  # a ReLU whose mask the pooling or convolution reading it applies
                    result = grad
                elif id(node) in fused.masked:
                    result = layer.backward(grad, relu_input=True)
                else:
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
        (the whole shape after the first axis: see :meth:`tensor_shapes`)."""
        return {key: shape[1:] for key, shape in self.tensor_shapes(input_shapes).items()}

    def tensor_shapes(self, input_shapes, batch=None):
        """``{id(tensor): whole shape}`` of every node's output for the per-sample ``input_shapes``
        and a batch of ``batch`` samples (None: any); the same walk as :meth:`forward`, with
        each node's shape inference as the step; ``ValueError`` naming the first layer that does
        not fit, by its index in :attr:`layers`."""
        index = {id(layer): i for i, layer in enumerate(self.layers)}
        shapes = {}

        def step(node, specs):
            try:
                spec = node.infer(specs)
            except ValueError as exc:
                shown = input_shapes[0] if len(input_shapes) == 1 else input_shapes
                raise ValueError(f"input shape {shown} does not fit layer {index[id(node.layer)]} "
                                 f"({type(node.layer).__name__}): {exc}") from None
            shapes[id(node.output)] = spec.shape
            return spec

        sources = {id(t): TensorSpec((batch,) + tuple(s), t.dtype) for t, s in zip(self.inputs, input_shapes)}
        self.walk(sources, step)
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


def _host_spec(value):
    """``(shape, dtype)`` of a host array, None for anything else (a prepared plan then runs
    every step that reads it as the plain walk does)."""
    return (value.shape, value.dtype) if type(value) is np.ndarray else None
