"""Inference plans prepared for one set of input shapes: a model called again and again on
arrays of the same shapes skips what it checked the first times.

The inference plan (:mod:`cnnlab.fusion`) checks every step's arguments at every call: the
bound kernel calls accept their arrays, the outputs come from the buffer pool and go back to it
by the walk's bookkeeping. A :class:`PreparedPlan` is the same walk made once for arrays of
given shapes: each fused step in its prepared form (:meth:`cnnlab.fusion.FusedStep.prepare`),
each other node in its layer's where the layer has one
(:meth:`cnnlab.layers.Layer.prepared_forward`: additions, products, dense layers, constant
operands, transposes, reductions, poolings, normalizations, activations, softmax, and the
reshapes, which return views), its output in an array of the plan's own, chosen
by the tensors' lifetimes as the pool would,
the targets in new arrays at each call (they are the caller's). A node whose small output
follows from shapes alone (a ``Shape``, and the parameter-free nodes computed from such values
only: :func:`_constant_step`) is computed once, when the plan is made. A call checks, once, that the
inputs have the recorded shapes, dtypes and layout, that every parameter array, layer attribute
and node's layer the prepared steps read is the object they were prepared with (arrays edited
in place are read as they are; a normalization is folded again at each call) and that the
kernel settings (:func:`cnnlab.functional.conv.kernel_settings`: thread count, sizes, paths)
are those of the preparation; then the steps run without their own checks. Anything else, and
any step without a prepared form, runs as in the plain walk.

A graph's prepared plans are kept per thread (concurrent calls never share arrays) and per set
of targets; one is made at the second call with the same input shapes (the first binds the
kernels) and made again after a change invalidates it, each time after more plain calls
(1, 2, 4, ...) so that a model whose parameters are replaced at every call does not prepare
at every call. ``cnnlab.config.PREPARE = False`` turns them off.

On MobileNetV2 at batch 1 the plain walk spent about 30 microseconds a step around its
kernels, a tenth of the call; prepared, about 10 (docs/performance.md, "Prepared inference
plans").
"""

from __future__ import annotations

import threading
import weakref

import numpy as np

from . import config
from .functional import conv as conv_functional
from .fusion import FusedStep, Prepared, infer_node
from .layers.base import watched_attributes
from .memory import BufferPool, buffer_pool
from .parallel import single_threaded_blas

__all__ = ["PreparedPlan", "prepared_record"]


class PreparedPlan:
    """An inference plan's schedule made ready for inputs of the shapes it was prepared with.

    Parameters
    ----------
    plan : list
        The inference plan's steps (``graph.inference_plan(targets)``).
    schedule : list
        ``graph._inference_schedule(targets)``: ``(step, fused, output id, input ids, lends,
        drops)`` for each step.
    inputs : list of SymbolicTensor
        The graph's inputs.
    targets : list of SymbolicTensor
    shapes : dict
        ``id(tensor) -> (shape, dtype)`` of every input and step output of a plain call with
        these input shapes (None for a value that is not a host array: a NumPy scalar a shape
        computation made; no step that reads one is prepared).
    own : BufferPool
        Where the plan's arrays come from, handed out by the tensors' lifetimes (all back in
        it once the plan is made): the plans of one graph on one thread share it, since they
        never run at once.

    Attributes
    ----------
    entries : list
        ``(step, prepared run or None, prepared call or None, input slots, output slot, the
        output's array of the plan's or None (a new one at each call), (shape, dtype) or None, lends,
        drops, checked inputs)`` per step (``lends`` and ``drops`` as in the schedule, by slot;
        ``checked``: ``(slot, shape, dtype)`` of the inputs that steps without a prepared form
        make, checked at each call); a run of None runs the step as the plain walk does. The plan holds no reference to its
        graph (the graph's per-thread records hold the plan): calls pass it.
    """

    def __init__(self, plan, schedule, inputs, targets, shapes, own):
        self.plan, self.targets = plan, list(targets)
        slots = {id(tensor): slot for slot, tensor in enumerate(inputs)}
        for entry in schedule:
            slots.setdefault(entry[2], len(slots))
        self.slot_count = len(slots)
        self.input_specs = [shapes[id(tensor)] for tensor in inputs]
        self.target_slots = [slots[id(tensor)] for tensor in targets]
        same, equal = [], []
        fixed, prepared_outputs = {}, set()  # output id -> its array of the plan's; ids prepared steps write
        constants, wanted = {}, {id(tensor) for tensor in targets}  # output id -> a value computed once
        self.entries = []
        for step, fused, output, reads, lends, drops in schedule:
            spec = shapes[output]
            prepared = out = None
            constant = None if fused or spec is None else _constant_step(step, reads, shapes, constants)
            if constant is not None:
                constants[output] = value = constant[0]
                prepared = Prepared((lambda inputs, out, value=value: value.copy()) if output in wanted else
                                    (lambda inputs, out, value=value: value), None, constant[1], constant[2])
                spec = None
            elif spec is not None and all(shapes[key] is not None for key in reads) \
                    and (not fused or type(step).prepare is not FusedStep.prepare):
                view = not fused and not step.layer.returns_new_array  # (never lends: the schedule's rule)
                out = None if view else own.take(*spec) if lends else np.empty(*spec)
                arrays = [constants[key] if key in constants else fixed[key] if key in fixed else
                          np.empty(*shapes[key]) for key in reads]
                prepared = self._prepare(step, arrays, out, own, lends and all(key in fixed for key in reads)) if fused \
                    else _prepared_node(step, arrays, out)
                if lends and prepared is not None:
                    fixed[output] = out
                elif lends:
                    own.give(out)
                out = fixed.get(output)
                spec = None if view else spec  # (a view's run is handed no array)
            if prepared is not None:
                same += prepared.same
                equal += prepared.equal
                prepared_outputs.add(output)
            checked = () if prepared is None else \
                tuple((slots[key],) + shapes[key] for key in reads if key not in prepared_outputs and slots[key] >= len(inputs))
            for key, reusable in drops:
                if reusable and key in fixed:
                    own.give(fixed.pop(key))
            self.entries.append((step, None if prepared is None else prepared.run, None if prepared is None else prepared.call,
                                 [slots[key] for key in reads], slots[output], out, spec, lends,
                                 [(slots[key], reusable) for key, reusable in drops], checked))
        self.same, self.equal = tuple(same), tuple(equal)
        self.settings = {spec[1]: conv_functional.kernel_settings(spec[1]) for spec in shapes.values()
                         if spec is not None and spec[1].kind == "f"}

    @staticmethod
    def _prepare(step, inputs, out, own, fixed):
        """``step.prepare(inputs, out, take, fixed)``, its scratch arrays from ``own`` for the
        step alone (given back once it is prepared: later steps may write there, this one never
        runs alongside them)."""
        scratch = []

        def take(shape, dtype):
            array = own.take(shape, dtype)
            scratch.append(array)
            return array
        prepared = step.prepare(inputs, out, take, fixed)
        for array in scratch:
            own.give(array)
        return prepared

    def fits(self, inputs):
        """Whether ``inputs`` have the shapes, dtypes and layout the plan was prepared for."""
        if len(inputs) != len(self.input_specs):
            return False
        for x, (shape, dtype) in zip(inputs, self.input_specs):
            if type(x) is not np.ndarray or x.dtype != dtype or x.shape != shape or not x.flags.c_contiguous:
                return False
        return True

    def valid(self, graph):
        """Whether the prepared steps still compute what the plain walk would: their parameters
        and layers unchanged, the same kernel settings and the graph's plan the same."""
        for mapping, key, value in self.same:
            if mapping.get(key) is not value:
                return False
        for function, value in self.equal:
            if function() != value:
                return False
        for dtype, settings in self.settings.items():
            if conv_functional.kernel_settings(dtype) is not settings:
                return False
        return graph.inference_plan(self.targets) is self.plan

    def run(self, graph, inputs):
        """The targets' values for ``inputs`` (of ``graph``, whose plan this is; they must
        :meth:`fits`), or None where the plan is no longer :meth:`valid` (nothing has run
        then)."""
        if not self.valid(graph):
            return None
        values = [None] * self.slot_count
        values[:len(inputs)] = inputs
        pool, plain = None, False
        try:
            with single_threaded_blas(), conv_functional.held_settings():
                for step, run, call, reads, output, out, spec, lends, drops, checked in self.entries:
                    if call is not None and not plain:  # (its inputs and output the plan's own)
                        values[output] = call()
                    elif run is not None and not plain and all(_fits(values[c[0]], c[1], c[2]) for c in checked):
                        values[output] = run([values[slot] for slot in reads],
                                             out if out is not None or spec is None else np.empty(*spec))
                    else:  # as the plain walk; so is the rest of the call once a checked input did not fit
                        plain = plain or run is not None
                        if pool is None:
                            pool = buffer_pool(graph)
                        lender, arrays = pool if lends else None, [values[slot] for slot in reads]
                        values[output] = step.run(arrays, None, lender) if isinstance(step, FusedStep) \
                            else infer_node(step, arrays, lender)
                    for slot, reusable in drops:
                        value, values[slot] = values[slot], None
                        if reusable and pool is not None:
                            pool.give(value)  # (nothing happens to the plan's own arrays)
                return [values[slot] for slot in self.target_slots]
        finally:
            if pool is not None:
                pool.trim()


def _prepared_node(node, inputs, out):
    """A :class:`cnnlab.fusion.Prepared` form of a node that is not fused, from its layer's
    ``prepared_forward`` (:meth:`cnnlab.layers.Layer.prepared_forward`), or None; it also
    watches the node's layer."""
    layer = node.layer
    prepared = layer.prepared_forward(inputs if node.takes_list else inputs[0], out)
    if prepared is None:
        return None
    run, same, equal = prepared
    if not node.takes_list:
        def run_one(inputs, out, run=run):
            return run(inputs[0], out)
        run = run_one
    return Prepared(run, None, ((vars(node), "layer", layer),) + tuple(same), tuple(equal))


def _constant_step(node, reads, shapes, constants):
    """``(value, same, equal)`` of a node whose output every call of a plan computes alike: an
    array (at most ``KEPT_SIZE`` values) made from its inputs' shapes alone (a layer that
    ``reads_only_shapes``; the plan checks the shapes its inputs have at each call, as for any
    prepared step) or from ``constants`` alone (the values of the nodes before it found so),
    with parameters and buffers of at most ``CONSTANT_SIZE`` values each, which ``same`` and
    ``equal`` watch (the node's layer, its attributes and each parameter and buffer by
    identity, the parameters' and buffers' values too); None for any other node. The plan
    keeps the value and runs nothing (ONNX files compute shapes so: ``Shape``, ``Cast``,
    ``Slice``, ``Concat`` to the shape a ``Reshape`` takes; and detectors their grids of anchor
    points: ``Range``, an ``Add`` of 0.5 (a ``Bias``), ``Expand``, ``Concat``)."""
    layer = node.layer
    shape_only = layer.reads_only_shapes
    small = (*layer.params.values(), *layer.buffers.values())
    if not all(key in constants or shape_only and shapes[key] is not None for key in reads) \
            or any(type(array) is not np.ndarray or array.size > CONSTANT_SIZE for array in small):
        return None
    value = infer_node(node, [constants[key] if key in constants else np.empty(*shapes[key]) for key in reads], None)
    if type(value) is not np.ndarray or value.size > KEPT_SIZE or (value.shape, value.dtype) != shapes[id(node.output)]:
        return None
    value.flags.writeable = False
    same = ((vars(node), "layer", layer),) + watched_attributes(layer) \
        + tuple((layer.params, name, array) for name, array in layer.params.items())
    equal = tuple((array.tobytes, array.tobytes()) for array in small)
    return value, same, equal


CONSTANT_SIZE = 64  # the most values of each parameter and buffer of a node whose output a plan keeps (compared
# at each call)
KEPT_SIZE = 1 << 16  # the most values of a node's output a plan keeps as a constant


def _fits(x, shape, dtype):
    return type(x) is np.ndarray and x.dtype == dtype and x.shape == shape and x.flags.c_contiguous


class PreparedRecord:
    """This thread's prepared plans of one graph for one set of targets (:func:`prepared_record`),
    by the inputs' shapes and dtypes (the last :data:`PLANS_KEPT`), and when to make the next.

    A plain call (one no prepared plan served) is asked to record its values' shapes
    (:meth:`wants_shapes`) once ``waits`` plain calls have had its inputs' shapes and dtypes
    (counted per signature since the last plan was made or dropped); the plan is then made
    from them (:meth:`prepare`). A plan found invalid is dropped and ``waits`` doubles (1, 2,
    4, ..., at most 1024).
    """

    def __init__(self, targets, own):
        self.targets, self.own = list(targets), own
        self.plans = {}  # input signature -> PreparedPlan
        self.seen, self.waits = {}, 1  # input signature -> plain calls counted; plain calls to wait

    def run(self, graph, inputs):
        """The targets' values by the plan prepared for these inputs' shapes, or None (no plan,
        or one no longer valid: dropped)."""
        if not self.plans:
            return None
        signature = _signature(inputs)
        plan = self.plans.get(signature)
        if plan is None or not plan.fits(inputs):
            return None
        result = plan.run(graph, inputs)
        if result is None:
            del self.plans[signature]
            self.waits = min(2 * self.waits, 1024)
            self.seen = {}
        return result

    def wants_shapes(self, inputs):
        """For a plain call on ``inputs``: whether it should record its values' shapes for
        :meth:`prepare`."""
        signature = _signature(inputs)
        if signature not in self.seen and len(self.seen) >= _SIGNATURES_COUNTED:
            self.seen = {}
        seen = self.seen[signature] = self.seen.get(signature, 0) + 1
        return seen > self.waits and all(type(x) is np.ndarray for x in inputs)

    def prepare(self, plan, schedule, inputs, shapes, graph_inputs):
        """Make the plan for ``inputs``' shapes from a plain call's recorded ``shapes``."""
        if len(self.plans) >= PLANS_KEPT:
            del self.plans[next(iter(self.plans))]
        signature = _signature(inputs)
        self.plans[signature] = PreparedPlan(plan, schedule, graph_inputs, self.targets, shapes, self.own)
        self.seen.pop(signature, None)


PLANS_KEPT = 4  # prepared plans kept per graph, thread and set of targets (the inputs' shapes of the last ones)


_SIGNATURES_COUNTED = 64  # input signatures whose plain calls are counted at once, at most


def _signature(inputs):
    return tuple((getattr(x, "shape", None), getattr(x, "dtype", None), type(x)) for x in inputs)


_RECORDS = threading.local()


def prepared_record(graph, targets):
    """This thread's :class:`PreparedRecord` of ``graph`` for ``targets`` (kept with the graph:
    none outlives it), or None where ``config.PREPARE`` is off. The records of one graph on one
    thread share the arrays of their plans: their plans never run at once (a plain call of
    the graph inside one of its own steps on the same thread would find them in use; no layer
    makes one)."""
    if not config.PREPARE:
        return None
    graphs = _RECORDS.__dict__.get("graphs")
    if graphs is None:
        graphs = _RECORDS.graphs = weakref.WeakKeyDictionary()
    records = graphs.get(graph)
    if records is None:
        records = graphs[graph] = {None: BufferPool()}  # (None: the arrays its plans share)
    key = tuple(id(t) for t in targets)
    record = records.get(key)
    if record is None or len(record.targets) != len(targets) or any(a is not b for a, b in zip(record.targets, targets)):
        record = records[key] = PreparedRecord(targets, records[None])
    return record
