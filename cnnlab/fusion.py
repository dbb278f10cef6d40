"""The inference plan: convolution chains fused into one kernel call, their outputs from the
graph's buffer pool (:mod:`cnnlab.memory`).

For inference (``Graph.forward(..., training=False)``) the executor runs a *plan* in which each
``Conv2D`` node followed by a ``BatchNorm2D``, a two-input ``Add`` and an activation (any of
them, in that order, each the sole consumer of the tensor before it) is one :class:`FusedConv`
step: a single convolution call whose kernel applies the normalization, the residual and the
activation as it writes the output (:func:`cnnlab.functional.conv2d`'s ``scale``, ``residual``
and ``activation``). A squeeze-excitation block's gating ``Multiply`` joins the convolution it
feeds, and its squeeze (global average pooling and two 1x1 convolutions) is one
:class:`FusedSqueeze` step; a classifier's head (global average pooling, a ``Flatten`` and a
``Dense`` layer) is one :class:`FusedHead` step. The model is unchanged;
``cnnlab.config.FUSE = False`` turns the plan off.

This is the one module that looks at layer classes: which layers fuse into a step. What
a layer contributes is declared on the layer class (``fused_activation()``,
``returns_new_array``), so a new activation or op needs no entry here.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import functional as F
from .device import is_gpu_array, kernels_for, to_device, to_host
from .functional.conv import bind_conv2d, bind_conv2d_pair, epilogue_activation
from .kernels import cpu as cpu_kernels
from .layers import Add, BatchNorm2D, Conv2D, Dense, Flatten, GlobalAvgPool2D, MaxPool2D, Multiply, ReLU
from .memory import BufferPool, buffer_pool
from .parallel import blas_limited, cpu_workers
from .shapes import is_known

__all__ = ["FusedStep", "FusedConv", "FusedConvPair", "FusedSqueeze", "FusedHead", "BufferPool", "fusion_plan",
           "recyclable", "buffer_pool", "TrainingFusion", "training_fusion", "Prepared", "infer_node"]


class Prepared(NamedTuple):
    """A step made ready for calls on arrays of the shapes it was prepared for
    (:meth:`FusedStep.prepare`).

    ``run(inputs, out)`` writes the step's output for the arrays ``inputs`` into ``out`` and
    returns it, checking nothing: the caller hands it arrays of the shapes, dtype and layout it
    was prepared with. ``call()``, where not None, does the same on the very arrays it was
    prepared with (its kernels' arguments made once). Both compute what the step's ``run``
    would while ``mapping.get(key) is value`` for each ``(mapping, key, value)`` of ``same``
    (the parameter arrays, layer attributes and nodes' layers the step read when it was
    prepared) and ``function() == value`` for each ``(function, value)`` of ``equal`` (what is
    worked out from them at each call: a fused activation), under the same kernel settings."""

    run: object
    call: object
    same: tuple
    equal: tuple


def infer_node(node, values, pool):
    """A node's output in inference (``layer.forward(x, False)``, looked up at the call), the
    arrays its op allocates taken from ``pool`` when given."""
    forward = node.layer.forward
    if pool is not None:
        return pool.lending(node.apply, lambda v: forward(v, False), values)
    return node.apply(lambda v: forward(v, False), values)


class FusedStep:
    """An inference step standing for several nodes (``members``): it reads ``inputs``, makes
    ``output`` (the last member's) and runs by ``run(values, out=None, pool=None)``; ``layer``
    is its main node's layer."""

    takes_list = True
    members: list
    inputs: list

    def prepare(self, inputs, out, take, fixed):
        """A :class:`Prepared` form of the step for calls on arrays shaped as ``inputs`` (arrays
        standing for its inputs) writing into arrays shaped as ``out``, with any scratch array
        it needs from ``take(shape, dtype)`` (its own for the prepared form's calls; nothing
        else is written there while it runs); with a ``call`` where ``fixed`` says that every
        call passes these very arrays. None where the step has no such form or its last call
        did not go straight to its kernels. A step prepares itself only once it has run on
        arrays of these shapes."""
        return None


class FusedConv(FusedStep):
    """One inference step standing for a ``Conv2D`` node and the ``BatchNorm2D``, ``Add`` and
    activation nodes fused into it (each optional: a convolution with none of them is a step of
    its own too, so that it also checks its arguments once and writes into the buffer pool).

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

    def __init__(self, conv, norm=None, add=None, residual=None, activation=None, gate=None, gated=None,
                 gates=None):
        self.conv, self.norm, self.add, self.activation, self.gate = conv, norm, add, activation, gate
        self.members = [n for n in (gate, conv, norm, add, activation) if n is not None]
        self.inputs = [gated if gate is not None else conv.inputs[0]] + ([residual] if residual is not None else []) \
            + ([gates] if gate is not None else [])
        self.output = self.members[-1].output
        self.layer = conv.layer
        self.bound = None  # the checked call of the last shapes (see run)

    def __repr__(self):
        return "FusedConv(" + " -> ".join(type(n.layer).__name__ for n in self.members) + ")"

    def run(self, values, out=None, pool=None):
        """The step's output for its input ``values``: written into ``out`` when given, else
        into a buffer taken from ``pool`` (a :class:`BufferPool`) when given, else a new array.

        The first call goes through :func:`cnnlab.functional.conv2d`, which checks everything;
        later calls with host arrays of the same shapes and the same arguments go straight to
        the kernel (:func:`cnnlab.functional.conv.bind_conv2d`), anything else through
        ``conv2d`` again.

        With a ``gate`` (a squeeze-excitation ``Multiply`` of the input by per-channel gates
        ``(N or 1, C, 1, 1)``), the gates scale the weights' input channels instead of the
        input (``conv(x * g) = conv_with(weight * g)(x)``: a pass over the weights, not over the
        feature maps) where the weights are the smaller (early layers: large maps, few
        channels), one convolution per sample where each sample has its own gates. Otherwise
        (deep layers: more weights than map values; gates of another shape or device) the
        product is made first, as the ``Multiply`` would. (A gate of exactly 0 on an infinite
        input gives 0 with scaled weights, not NaN.)"""
        residual = values[1] if self.add is not None else None
        bound = self.bound
        if bound is not None and out is None and self.norm is None:
            # the common step, again and again: checked by the bound call and run straight, in as
            # few Python calls as it takes (between two kernels each costs several times what it
            # does in a loop, bench/cold_steps.py)
            parameters = self.bound_arguments(values[0], residual)
            if parameters is not None:
                return bound(values[0], parameters[0], parameters[1], None, residual,
                             None if pool is None else pool.take(bound.out_shape, bound.dtype))
        if self.gate is None:
            return self._run(values[0], residual, out, pool)
        x, gates = values[0], values[-1]
        weights = self._gated_weights(x, gates)
        if weights is None:
            return self._run(F.multiply(x, gates), residual, out, pool)
        if len(weights) == 1:
            return self._run(x, residual, out, pool, weights[0])
        if out is None:
            shape = (x.shape[0],) + tuple(self.layer.output_shape(x.shape[1:]))
            out = pool.take(shape, self.layer.dtype) if pool is not None else np.empty(shape, self.layer.dtype)
        for n, weight in enumerate(weights):  # each sample its own gates: its own weights
            self._run(x[n:n + 1], None if residual is None else residual[n:n + 1], out[n:n + 1], None, weight)
        return out

    def bound_arguments(self, x, residual=None):
        """``(weight, bias, scale)`` for the bound call's kernel on input ``x`` and ``residual``
        (the layer's weights, its bias or the folded normalization's shift, and the
        normalization's scale or None) where the step, with no gate, has a bound call that
        accepts them; None otherwise."""
        bound = self.bound
        if bound is None or self.gate is not None:
            return None
        conv = self.layer
        weight, shift, scale = conv.params["weight"], conv.params.get("bias"), None
        if self.norm is not None:
            scale, shift = self._folded_norm(shift, weight)
        activation = None if self.activation is None else self.activation.layer.fused_activation()
        if bound.accepts(x, weight, shift, conv.stride, conv.padding, conv.dilation, conv.groups, scale, residual,
                         activation):
            return weight, shift, scale
        return None

    def prepare(self, inputs, out, take, fixed):
        """:meth:`FusedStep.prepare`: the bound call on its kernel; with a gate whose gates
        scale the weights (one row of gates, :meth:`_gated_weights`), the weights scaled into an
        array of the step's own at each call, first."""
        residual = inputs[1] if self.add is not None else None
        bound, gate = self.bound, None
        if bound is None or out.shape != bound.out_shape or out.dtype != bound.dtype:
            return None
        if self.gate is None:
            ready = self._ready(inputs[0], residual)
        else:
            ready, gate = self._gated_ready(inputs[0], inputs[-1], residual)
        if ready is None:
            return None
        parameters, refresh, same, equal = ready
        kernel = bound.kernel_call(inputs[0], *parameters, residual, out) if fixed else None
        call = None
        if kernel is not None:
            gates = inputs[-1]

            def call():
                if gate is not None:
                    gate(gates)
                if refresh is not None:
                    refresh()
                return kernel()

        def run(inputs, out):
            if gate is not None:
                gate(inputs[-1])
            if refresh is not None:
                refresh()
            return bound(inputs[0], *parameters, inputs[1] if residual is not None else None, out)
        return Prepared(run, call, same, equal)

    def _gated_ready(self, x, gates, residual):
        """For :meth:`prepare` with a gate: ``(ready, gate)``, ``ready`` as :meth:`_ready`'s with
        the weights an array of the step's own, and ``gate(gates)`` writing the weights scaled
        by the gates there, as :meth:`_gated_weights` computes them; ``(None, None)`` where the
        gates do not scale the weights or scale them per sample, or the bound call does not
        accept these arrays."""
        if not self._gates_scale_weights(x, gates) or gates.shape[0] != 1:
            return None, None
        conv = self.layer
        weight = conv.params["weight"]
        scaled = np.empty(weight.shape, weight.dtype)
        shift, scale = conv.params.get("bias"), None
        if self.norm is not None:
            scale, shift = self._folded_norm(shift, weight)
        activation = None if self.activation is None else self.activation.layer.fused_activation()
        watched = self._watched(weight, scale, shift)
        if watched is None or not self.bound.accepts(x, scaled, shift, conv.stride, conv.padding, conv.dilation,
                                                     conv.groups, scale, residual, activation):
            return None, None
        groups, (filters, per_group) = conv.groups, weight.shape[:2]
        if groups == 1:
            def gate(gates):
                np.multiply(weight, gates[0], out=scaled)
        else:
            taps = weight.reshape(groups, filters // groups, per_group, -1)
            into = scaled.reshape(taps.shape)

            def gate(gates):
                np.multiply(taps, gates.reshape(gates.shape[0], groups, 1, per_group, 1)[0], out=into)
        return ((scaled, shift, scale),) + watched, gate

    def _ready(self, x, residual=None):
        """For :meth:`prepare`: ``(parameters, refresh, same, equal)`` where the bound call
        accepts ``x`` and ``residual`` (None otherwise): the kernel's ``(weight, shift, scale)``
        and :meth:`_watched`'s three for them."""
        accepted = self.bound_arguments(x, residual)
        if accepted is None:
            return None
        watched = self._watched(accepted[0], accepted[2], accepted[1])
        return None if watched is None else (accepted,) + watched

    def _watched(self, weight, scale, shift):
        """``(refresh, same, equal)`` of a prepared form that computes with the layer's
        ``weight`` and the per-filter ``scale`` and ``shift`` made from it now (the bias, or the
        folded normalization): with a normalization, ``refresh()`` folds it again into those
        ``scale`` and ``shift`` arrays (its arrays may be edited in place: called before each
        kernel call), else None; ``same`` and ``equal`` as :class:`Prepared`'s, for the
        convolution's parameters and geometry, the normalization's arrays and the activation.
        None where the normalization's arrays are not all on the host."""
        conv = self.layer
        same = [(conv.params, "weight", weight), (conv.params, "bias", conv.params.get("bias"))]
        same += [(vars(conv), name, getattr(conv, name)) for name in ("stride", "padding", "dilation", "groups")]
        equal = []
        if self.activation is not None:
            activation = self.activation

            def fused_activation():
                return activation.layer.fused_activation()
            equal.append((fused_activation, fused_activation()))
        if self.norm is None:
            return None, tuple(same), tuple(equal)
        norm = self.norm.layer
        arrays = (norm.params.get("weight"), norm.params.get("bias"), norm.buffers.get("running_mean"),
                  norm.buffers.get("running_var"))
        bias = conv.params.get("bias")
        if any(type(a) is not np.ndarray for a in arrays + (bias if bias is not None else weight, scale, shift)):
            return None
        same += [(vars(self.norm), "layer", norm), (norm.params, "weight", arrays[0]), (norm.params, "bias", arrays[1]),
                 (norm.buffers, "running_mean", arrays[2]), (norm.buffers, "running_var", arrays[3]),
                 (vars(norm), "eps", norm.eps)]
        folded = arrays + (arrays[0] if bias is None else bias, bias is not None, float(norm.eps), scale, shift)

        def refresh():
            cpu_kernels.fold_batch_norm(*folded)
        return refresh, tuple(same), tuple(equal)

    def _gated_weights(self, x, gates):
        """The weights with their input channels scaled by the gates, one array per row of
        ``gates``; None where scaling the maps costs less (fewer map values than weights, over
        all the samples) or cannot be avoided (the gates are not host arrays
        ``(N or 1, C, 1, 1)`` of the weights' dtype for a host input ``(N, C, H, W)``)."""
        if not self._gates_scale_weights(x, gates):
            return None
        conv = self.layer
        weight = conv.params.get("weight")
        groups, (filters, per_group) = conv.groups, weight.shape[:2]
        if groups == 1:  # (F, C, KH, KW) times (C, 1, 1) broadcasts as it should: one NumPy call a sample
            return [weight * gates[n] for n in range(gates.shape[0])]
        taps = weight.reshape(groups, filters // groups, per_group, -1)
        by_group = gates.reshape(gates.shape[0], groups, 1, per_group, 1)
        return [(taps * by_group[n]).reshape(weight.shape) for n in range(gates.shape[0])]

    def _gates_scale_weights(self, x, gates):
        """Whether :meth:`_gated_weights` scales the weights for these arrays (by their types,
        shapes and dtypes alone)."""
        conv = self.layer
        weight = conv.params.get("weight")
        return not (type(x) is not np.ndarray or type(gates) is not np.ndarray or type(weight) is not np.ndarray
                    or gates.dtype != weight.dtype or x.ndim != 4 or gates.shape[1:] != (x.shape[1], 1, 1)
                    or gates.shape[0] not in (1, x.shape[0]) or weight.shape[1] * conv.groups != x.shape[1]
                    or weight.size * gates.shape[0] > x.size)

    def _run(self, x, residual, out, pool, weight=None):
        """:meth:`run` of the convolution and what follows it, on its input ``x`` (with the
        convolution's ``weight`` when given, else the layer's)."""
        conv = self.layer
        x = conv.prepare(x)
        if self.bound is None:
            conv.build(tuple(x.shape[1:]))  # a layer made without in_channels makes its weights now
        weight = conv.params["weight"] if weight is None else weight
        shift, scale = conv.params.get("bias"), None
        if self.norm is not None:
            scale, shift = self._folded_norm(shift, weight)
        activation = None if self.activation is None else self.activation.layer.fused_activation()
        bound = self.bound
        if bound is not None and bound.accepts(x, weight, shift, conv.stride, conv.padding, conv.dilation,
                                               conv.groups, scale, residual, activation, out):
            if out is None and pool is not None:
                out = pool.take(bound.out_shape, bound.dtype)
            return bound(x, weight, shift, scale, residual, out)
        shape = (x.shape[0],) + tuple(conv.output_shape(x.shape[1:]))  # (the layer's check: its error names it)
        if out is None and pool is not None:
            out = pool.take(shape, conv.dtype)
        geometry = conv.geometry()
        result = F.conv2d(x, weight, shift, **geometry, scale=scale, residual=residual, activation=activation,
                          out=out)
        self.bound = bind_conv2d(x, weight, shift, **geometry, scale=scale, residual=residual, activation=activation,
                                 compiled_shares=True)
        return result

    def _folded_norm(self, bias, weight):
        """Per-filter ``(scale, shift)`` of the inference-mode batch normalization applied to the
        convolution's output (with its bias): ``scale = gamma / sqrt(var + eps)``,
        ``shift = beta + (bias - mean) * scale``, computed in float64 as the stand-alone kernel,
        on the convolution weight's device. Where the arrays are all on that device (as a model
        keeps them), one ``fold_batch_norm`` kernel call."""
        norm = self.norm.layer
        dtype = self.conv.layer.dtype
        gamma = norm.params["weight"]
        arrays = (gamma, norm.params["bias"], norm.buffers["running_mean"], norm.buffers["running_var"],
                  gamma if bias is None else bias)  # (an unused bias of gamma's type: one signature)
        if type(weight) is type(arrays[0]) is type(arrays[1]) is type(arrays[2]) is type(arrays[3]) \
                is type(arrays[4]) is np.ndarray:  # all on the host (as a model keeps them): the kernel straight
            scale, shift = np.empty(gamma.shape, dtype), np.empty(gamma.shape, dtype)
            cpu_kernels.fold_batch_norm(*arrays, bias is not None, float(norm.eps), scale, shift)
            return scale, shift
        on_gpu = is_gpu_array(weight)
        if all(is_gpu_array(a) == on_gpu for a in arrays):
            kernels = kernels_for(weight=weight)
            scale, shift = kernels.empty(arrays[0].shape, dtype), kernels.empty(arrays[0].shape, dtype)
            kernels.fold_batch_norm(*arrays, bias is not None, float(norm.eps), scale, shift)
            return scale, shift
        gamma, beta = (to_host(norm.params[k]).astype(np.float64) for k in ("weight", "bias"))
        mean, variance = (to_host(norm.buffers[k]).astype(np.float64) for k in ("running_mean", "running_var"))
        scale = gamma / np.sqrt(variance + norm.eps)
        offset = -mean if bias is None else to_host(bias).astype(np.float64) - mean
        scale, shift = scale.astype(dtype), (beta + offset * scale).astype(dtype)
        return (to_device(scale), to_device(shift)) if on_gpu else (scale, shift)


class FusedConvPair(FusedStep):
    """One inference step standing for a 1x1 convolution step and the depthwise convolution
    step that alone reads its output (each a :class:`FusedConv`, with its normalization and
    activation; neither with an ``Add`` or a gate), and, where one alone reads the depthwise
    step's output, the 1x1 convolution step after it (with its ``Add``, no gate): an inverted
    residual block's expansion, depthwise and projection layers (MobileNet, EfficientNet).

    On host arrays that the convolutions' bound calls accept, they run as one compiled call on
    Numba's threading layer (:class:`cnnlab.functional.conv.BoundConvPair`): each thread
    computes its part of the expansion's channels, then the depthwise convolution of those
    channels from its own core's cache, then the projection's shares, where the steps took a
    start of the threads and a call from Python each. The outputs between them are buffers of
    the pool, given back at once. Anything else (the first calls, other shapes or arrays, a
    single thread) runs the steps one after the other, with the same values.
    """

    def __init__(self, first, second, third=None):
        self.first, self.second, self.third = first, second, third
        self.steps = (first, second) if third is None else (first, second, third)
        self.members = [member for step in self.steps for member in step.members]
        self.inputs = list(first.inputs) + (third.inputs[1:] if third is not None else [])
        self.output = self.steps[-1].output
        self.layer = first.layer
        self.pair = None  # the bound calls as one (see run), and the bound calls it was last tried with
        self.tried = None

    def __repr__(self):
        return "FusedConvPair(" + " -> ".join(repr(step) for step in self.steps) + ")"

    def run(self, values, out=None, pool=None):
        """The last step's output for the expansion's input ``values[0]`` (and the projection's
        residual, ``values[1]``, with an ``Add``), written into ``out`` when given, else into a
        buffer taken from ``pool`` when given, else a new array."""
        pair = self.pair
        if pair is not None and out is None and pair.first is self.first.bound and pair.second is self.second.bound \
                and (pair.third is None or pair.third is self.third.bound):
            result = self._straight(pair, values, pool)
            if result is not None:
                return result
        result = values[0]
        for k, step in enumerate(self.steps):
            before, last = result, k == len(self.steps) - 1
            result = step.run([result] + (list(values[1:]) if k == 2 else []), out if last else None, pool)
            if k and pool is not None:
                pool.give(before)
        bounds = tuple(step.bound for step in self.steps)
        if self.tried is None or any(a is not b for a, b in zip(self.tried, bounds)):
            self.tried = bounds
            self.pair = bind_conv2d_pair(*bounds)
        return result

    def _straight(self, pair, values, pool):
        """:meth:`run` by the bound pair (with the third step's bound call where it joined the pair,
        else that step after it, on its own), or None where a bound call does not accept its
        arrays."""
        if pair.calls_blas and not blas_limited():
            return None
        first_parameters = self.first.bound_arguments(values[0])
        if first_parameters is None:
            return None
        first, second = pair.first, pair.second
        take = pool.take if pool is not None else _new_array
        middle = take(first.out_shape, first.dtype)
        second_parameters = self.second.bound_arguments(middle)
        if second_parameters is None:
            return self._give_back(pool, middle)
        between = take(second.out_shape, second.dtype)
        third = pair.third
        if third is None:
            result = pair(values[0], first_parameters, middle, second_parameters, between)
            self._give_back(pool, middle)
            if self.third is None:
                return result
            result = self.third.run([between] + list(values[1:]), None, pool)  # (the projection apart)
            self._give_back(pool, between)
            return result
        residual = values[1] if self.third.add is not None else None
        third_parameters = self.third.bound_arguments(between, residual)
        if third_parameters is None:
            return self._give_back(pool, middle, between)
        out = take(third.out_shape, third.dtype)
        pair(values[0], first_parameters, middle, second_parameters, between, third_parameters + (residual,), out)
        self._give_back(pool, middle, between)
        return out

    def prepare(self, inputs, out, take, fixed):
        """:meth:`FusedStep.prepare`: the bound pair (and the third bound call after it, where it
        did not join the pair), its outputs between the steps in arrays of ``take``; where the
        steps ran one after the other (no bound pair: one thread, or shapes the pair does not
        take), their own prepared forms so (:meth:`_prepared_steps`)."""
        pair = self.pair
        if pair is None or pair.first is not self.first.bound or pair.second is not self.second.bound \
                or (pair.third is not None and pair.third is not self.third.bound):
            return self._prepared_steps(inputs, out, take, fixed)
        middle = take(pair.first.out_shape, pair.first.dtype)
        between = out if self.third is None else take(pair.second.out_shape, pair.second.dtype)
        readies = [self.first._ready(inputs[0]), self.second._ready(middle)]
        residual = inputs[1] if self.third is not None and self.third.add is not None else None
        if self.third is not None:
            readies.append(self.third._ready(between, residual))
            if out.shape != self.third.bound.out_shape or out.dtype != self.third.bound.dtype:
                return None
        if None in readies or between.shape != pair.second.out_shape or between.dtype != pair.second.dtype:
            return None
        parameters = [ready[0] for ready in readies]
        refreshes = [ready[1] for ready in readies if ready[1] is not None]
        if len(parameters) == 3 and pair.third is not None:
            parameters[2] = parameters[2] + (residual,)
        kernels = self._kernel_calls(pair, inputs[0], parameters, middle, between, residual, out) if fixed else None
        run = self._prepared_run(pair, parameters, refreshes, middle, between, residual is not None)
        call = None
        if kernels is not None:
            def call():
                for refresh in refreshes:
                    refresh()
                result = None
                for kernel in kernels:
                    result = kernel()
                return result
        return Prepared(run, call, sum((ready[2] for ready in readies), ()), sum((ready[3] for ready in readies), ()))

    def _prepared_steps(self, inputs, out, take, fixed):
        """:meth:`prepare` of the steps one after the other, as :meth:`run` runs them without a
        bound pair: each step's prepared form, the outputs between them in arrays of ``take``;
        None where a step has none."""
        forms, outputs = [], []
        for k, step in enumerate(self.steps):
            last = k == len(self.steps) - 1
            if step.bound is None:
                return None
            target = out if last else take(step.bound.out_shape, step.bound.dtype)
            form = step.prepare([outputs[-1] if k else inputs[0]] + (list(inputs[1:]) if k == 2 else []), target,
                                take, fixed)
            if form is None:
                return None
            forms.append(form)
            outputs.append(target)
        runs, between = [form.run for form in forms], outputs[:-1]

        def run(inputs, out):
            value = runs[0]([inputs[0]], between[0])
            for k in range(1, len(runs)):
                value = runs[k]([value] + (list(inputs[1:]) if k == 2 else []), out if k == len(runs) - 1 else between[k])
            return value
        calls = [form.call for form in forms]
        call = None
        if None not in calls:
            def call():
                for each in calls:
                    value = each()
                return value
        return Prepared(run, call, sum((form.same for form in forms), ()), sum((form.equal for form in forms), ()))

    def _kernel_calls(self, pair, x, parameters, middle, between, residual, out):
        """The kernel calls (:meth:`BoundConvPair.kernel_call`, then the third step's
        :meth:`BoundConv2d.kernel_call` where it did not join the pair) of :meth:`prepare` on
        these very arrays, or None where one has no such form."""
        if self.third is None:
            return [pair.kernel_call(x, parameters[0], middle, parameters[1], out)]
        if pair.third is not None:
            return [pair.kernel_call(x, parameters[0], middle, parameters[1], between, parameters[2], out)]
        kernels = [pair.kernel_call(x, parameters[0], middle, parameters[1], between),
                   self.third.bound.kernel_call(between, *parameters[2], residual, out)]
        return None if None in kernels else kernels

    def _prepared_run(self, pair, parameters, refreshes, middle, between, has_residual):
        """:meth:`prepare`'s ``run``: the pair's call (with each step's kernel ``parameters``)
        and, where the third step did not join it, that step's bound call after it."""
        first, second = parameters[:2]
        if self.third is None:
            def run(inputs, out):
                for refresh in refreshes:
                    refresh()
                return pair(inputs[0], first, middle, second, out)
        elif pair.third is not None:
            third = parameters[2][:3]

            def run(inputs, out):
                for refresh in refreshes:
                    refresh()
                return pair(inputs[0], first, middle, second, between, third + (inputs[1] if has_residual else None,),
                            out)
        else:  # (the projection apart)
            bound, third = self.third.bound, parameters[2]

            def run(inputs, out):
                for refresh in refreshes:
                    refresh()
                pair(inputs[0], first, middle, second, between)
                return bound(between, *third, inputs[1] if has_residual else None, out)
        return run

    @staticmethod
    def _give_back(pool, *buffers):
        """Give ``buffers`` back to ``pool`` (where there is one); None."""
        if pool is not None:
            for buffer in buffers:
                pool.give(buffer)
        return None


def _new_array(shape, dtype):
    """A new array (where a step has no pool to take one from)."""
    return np.empty(shape, dtype)


class FusedSqueeze(FusedStep):
    """One inference step standing for a squeeze-excitation block's squeeze: a
    ``GlobalAvgPool2D(keepdims=True)`` node and the two fused 1x1 convolutions that follow it
    (:class:`FusedConv` steps of a ``Conv2D`` and, each optional, its ``BatchNorm2D`` and
    activation), which make the block's gates ``(N, C, 1, 1)`` from its feature maps.

    On host arrays of the convolutions' dtype it is one compiled call
    (``cnnlab.kernels.cpu.squeeze_gates``: the channel means as the pooling computes them, two
    small matrix-vector products, each with its epilogue) instead of three steps on tiny
    arrays, each mostly Python; anything else (the GPU, another dtype) runs the three steps as
    before.
    """

    def __init__(self, pool, first, second):
        self.pool, self.first, self.second = pool, first, second
        self.members = [pool] + first.members + second.members
        self.inputs = list(pool.inputs)
        self.output = second.output
        self.layer = pool.layer

    def __repr__(self):
        return f"FusedSqueeze(GlobalAvgPool2D -> {self.first!r} -> {self.second!r})"

    def run(self, values, out=None, pool=None):
        """The gates for the feature maps ``values[0]``, written into ``out`` when given, else
        into a buffer of ``pool`` when given, else a new array."""
        x = values[0]
        arguments = self._arguments(x)
        if arguments is None:
            pooled = self.pool.apply(lambda v: self.pool.layer.forward(v, False), values)
            return self.second.run([self.first.run([pooled])], out=out, pool=pool)
        if out is None:
            shape = (x.shape[0], arguments[6].shape[0], 1, 1)
            out = pool.take(shape, x.dtype) if pool is not None else np.empty(shape, x.dtype)
        cpu_kernels.squeeze_gates(x, *arguments, out)
        return out

    def prepare(self, inputs, out, take, fixed):
        """:meth:`FusedStep.prepare`: the compiled call with its arguments made once (the
        normalizations folded again at each call)."""
        x = inputs[0]
        arguments = self._arguments(x)
        if arguments is None or out.shape != (x.shape[0], arguments[6].shape[0], 1, 1) or out.dtype != x.dtype:
            return None
        watched = [step._watched(step.layer.params["weight"], scale, shift)
                   for step, scale, shift in ((self.first, arguments[1], arguments[2]),
                                              (self.second, arguments[7], arguments[8]))]
        bias = [step.layer.params.get("bias") for step in (self.first, self.second)]
        if None in watched or any(b is not None and not b.flags.c_contiguous for b in bias):
            return None  # (a bias copied to be contiguous would not follow edits in place)
        refreshes = [w[0] for w in watched if w[0] is not None]
        same = watched[0][1] + watched[1][1] + ((vars(self.pool), "layer", self.pool.layer),)
        arguments = tuple(arguments)

        def run(inputs, out):
            for refresh in refreshes:
                refresh()
            cpu_kernels.squeeze_gates(inputs[0], *arguments, out)
            return out
        call = None
        if fixed:
            def call():
                return run(inputs, out)
        return Prepared(run, call, same, watched[0][2] + watched[1][2])

    def _arguments(self, x):
        """The compiled call's arguments after ``x`` (each convolution's weights as a matrix,
        per-filter scale and shift, activation code and parameters), or None where ``x`` or a
        parameter is not a host array of one float dtype of the expected shape."""
        if type(x) is not np.ndarray or x.ndim != 4 or 0 in x.shape or not x.flags.c_contiguous \
                or x.dtype not in (np.float32, np.float64):
            return None
        arguments, channels = [], x.shape[1]
        for step in (self.first, self.second):
            conv = step.layer
            weight, bias = conv.params.get("weight"), conv.params.get("bias")
            if type(weight) is not np.ndarray or weight.dtype != x.dtype or weight.shape[1:] != (channels, 1, 1) \
                    or not weight.flags.c_contiguous \
                    or (bias is not None and (type(bias) is not np.ndarray or bias.dtype != x.dtype)):
                return None
            filters = weight.shape[0]
            if step.norm is not None:
                scale, shift = step._folded_norm(bias, weight)
                if type(scale) is not np.ndarray or scale.dtype != x.dtype:
                    return None
            else:
                scale = np.ones(filters, x.dtype)
                shift = np.zeros(filters, x.dtype) if bias is None else np.ascontiguousarray(bias)
            activation = None if step.activation is None else step.activation.layer.fused_activation()
            arguments += [weight.reshape(filters, channels), scale, shift, *epilogue_activation(activation)]
            channels = filters
        return arguments


def _readers(nodes):
    """``{id(tensor): [the nodes (or plan steps) among nodes that read it, in their order]}``."""
    readers = {}
    for node in nodes:
        for tensor in node.inputs:
            readers.setdefault(id(tensor), []).append(node)
    return readers


def _sole_reader(readers, tensor, keep):
    """The one node of ``readers`` (:func:`_readers`) that reads ``tensor``, or None where
    several or none do, or ``tensor`` is in ``keep`` (ids of tensors wanted outside)."""
    users = readers.get(id(tensor), [])
    return users[0] if len(users) == 1 and id(tensor) not in keep else None


class FusedHead(FusedStep):
    """One inference step standing for a classifier's head: a ``GlobalAvgPool2D`` node, the
    ``Flatten`` node reading its output where the pooling keeps its dims, and the ``Dense`` node
    reading that, which make the scores ``(N, F)`` from the last feature maps ``(N, C, H, W)``
    (MobileNet, ResNet and EfficientNet end so).

    On host arrays of the dense layer's dtype, within a model call (which holds BLAS to one
    thread), it is the two kernels those steps call, straight: the channel means
    (``cnnlab.kernels.cpu.global_avg_pool2d_forward``) into a small array, then the dense
    layer's (``cnnlab.kernels.cpu.linear_forward``, with the threads
    :func:`cnnlab.functional.linear` gives it): the same values, with none of the three steps'
    checks and layer calls in Python between them. Anything else runs the three nodes one by
    one.
    """

    def __init__(self, pool, flatten, dense):
        self.pool, self.flatten, self.dense = pool, flatten, dense
        self.members = [n for n in (pool, flatten, dense) if n is not None]
        self.inputs = list(pool.inputs)
        self.output = dense.output

    @property
    def layer(self):
        """The dense node's layer, looked up at each call: ``Model.replace_head`` swaps it."""
        return self.dense.layer

    def __repr__(self):
        return "FusedHead(" + " -> ".join(type(n.layer).__name__ for n in self.members) + ")"

    def run(self, values, out=None, pool=None):
        """The scores for the feature maps ``values[0]``, written into ``out`` when given, else
        into a buffer of ``pool`` when given, else a new array."""
        x, dense = values[0], self.layer
        weight, bias = dense.params.get("weight"), dense.params.get("bias")
        if not self._straight(x, weight, bias):
            result = x
            for node in self.members:
                result = node.apply(lambda v, layer=node.layer: layer.forward(v, False), [result])
            if out is not None:
                out[...] = result
                return out
            return result
        pooled = np.empty(x.shape[:2], x.dtype)
        cpu_kernels.global_avg_pool2d_forward(x, pooled)
        shape = (x.shape[0], weight.shape[0])
        if out is None:
            out = pool.take(shape, x.dtype) if pool is not None else np.empty(shape, x.dtype)
        shift = bias if bias is not None else np.zeros(weight.shape[0], x.dtype)
        cpu_kernels.linear_forward(pooled, weight, shift, out, cpu_workers(shape[0] * weight.size))
        return out

    def prepare(self, inputs, out, take, fixed):
        """:meth:`FusedStep.prepare`: the pooling and the dense layer's kernel, the pooled
        features in an array of ``take``."""
        x, dense = inputs[0], self.layer
        weight, bias = dense.params.get("weight"), dense.params.get("bias")
        if not self._straight(x, weight, bias) or out.shape != (x.shape[0], weight.shape[0]) or out.dtype != x.dtype:
            return None
        pooled = take(x.shape[:2], x.dtype)
        shift = bias if bias is not None else np.zeros(weight.shape[0], x.dtype)
        workers = cpu_workers(out.shape[0] * weight.size)

        def run(inputs, out):
            cpu_kernels.global_avg_pool2d_forward(inputs[0], pooled)
            cpu_kernels.linear_forward(pooled, weight, shift, out, workers)
            return out
        same = ((vars(self.dense), "layer", dense), (dense.params, "weight", weight), (dense.params, "bias", bias))
        return Prepared(run, None, same, ())

    @staticmethod
    def _straight(x, weight, bias):
        """Whether the kernels can take these arrays straight: host float feature maps ``(N, C,
        H, W)``, none empty, the dense weights ``(F, C)`` and bias (or None) of their dtype, all
        C-contiguous, within a call that holds BLAS to one thread."""
        return (type(x) is np.ndarray and x.ndim == 4 and x.dtype in (np.float32, np.float64) and x.size > 0
                and x.flags.c_contiguous and type(weight) is np.ndarray and weight.dtype == x.dtype
                and weight.ndim == 2 and weight.shape[1] == x.shape[1] and weight.flags.c_contiguous
                and (bias is None or (type(bias) is np.ndarray and bias.dtype == x.dtype
                                      and bias.shape == weight.shape[:1] and bias.flags.c_contiguous))
                and blas_limited())


def fusion_plan(nodes, keep):
    """``nodes`` (topological order) with every ``Conv2D`` node and the chain fused into it
    replaced by one :class:`FusedConv` placed where its last node was.

    A ``Conv2D`` node takes in, in this order and each only if it is the sole consumer of the
    tensor so far and that tensor is not in ``keep`` (ids of tensors wanted outside): a
    ``BatchNorm2D`` of the same dtype, a two-input ``Add`` whose other input has the same
    shape and dtype, an activation layer whose ``fused_activation()`` is not None. A node is fused into one
    convolution at most (a shortcut ``Add`` of two convolutions goes to the first). Before it, the
    convolution takes in the two-input ``Multiply`` that makes its input, when the convolution
    is its sole reader, the product is not in ``keep`` and one factor is per-channel gates
    ``(C, 1, 1)`` of feature maps ``(C, H, W)`` of the same dtype (a squeeze-excitation block's
    gating: :meth:`FusedConv.run` scales the weights instead of the maps). Then the squeezes
    (:func:`_fuse_squeezes`) and classifier heads (:func:`_fuse_heads`) are one step each, and so
    is a 1x1 convolution with the depthwise convolution that alone reads it (:func:`_fuse_pairs`).
    """
    consumers, producers = _readers(nodes), {id(node.output): node for node in nodes}
    placed, absorbed = {}, set()

    def sole_consumer(tensor):
        user = _sole_reader(consumers, tensor, keep)
        return None if user is None or id(user) in absorbed else user

    for node in nodes:
        if type(node.layer) is not Conv2D or id(node) in absorbed:
            continue
        tensor, parts = node.output, {}
        following = sole_consumer(tensor)
        if following is not None and type(following.layer) is BatchNorm2D \
                and following.layer.dtype == node.layer.dtype:
            parts["norm"], tensor = following, following.output
            following = sole_consumer(tensor)
        if following is not None and type(following.layer) is Add and len(following.inputs) == 2:
            other = following.inputs[1] if following.inputs[0] is tensor else following.inputs[0]
            # the residual must have the convolution's shape: known equal now (an axis known only when
            # the model runs might broadcast instead, which the fused kernel does not do)
            if other is not tensor and is_known(tensor.sample_shape) and other.sample_shape == tensor.sample_shape \
                    and other.dtype == tensor.dtype:
                parts["add"], parts["residual"], tensor = following, other, following.output
                following = sole_consumer(tensor)
        if following is not None and following.layer.fused_activation() is not None:
            parts["activation"] = following
        gate = producers.get(id(node.inputs[0]))
        if gate is not None and id(gate) not in absorbed and sole_consumer(gate.output) is node:
            parts.update(_gating(gate, node.layer.dtype))
        fused = FusedConv(node, **parts)  # a convolution on its own too: checked once, its output pooled
        placed[id(fused.members[-1])] = fused
        absorbed.update(id(member) for member in fused.members)
    plan = [placed.get(id(node), node) for node in nodes if id(node) not in absorbed or id(node) in placed]
    return _fuse_pairs(_fuse_heads(_fuse_squeezes(plan, keep), keep), keep)


class TrainingFusion(NamedTuple):
    """What a training step over a graph runs fused: sets of node ids (:func:`training_fusion`)."""

    #: ``Conv2D`` nodes that apply the ReLU alone reading their output as they write it
    convs: frozenset = frozenset()
    #: those ``ReLU`` nodes: their forward passes the convolution's output on
    relus: frozenset = frozenset()
    #: ``MaxPool2D`` nodes alone reading a ReLU's output: they keep the positive picks only
    pools: frozenset = frozenset()
    #: ``Conv2D`` nodes alone reading a ReLU's output: they apply its mask to their input gradient
    masked: frozenset = frozenset()
    #: the ``ReLU`` nodes of ``pools`` and ``masked``: their backward passes the gradient on
    through: frozenset = frozenset()


def training_fusion(nodes, keep):
    """For a training step over ``nodes`` (topological order), with ``keep`` the ids of
    tensors wanted outside (none of the tensors between fused nodes may be one): the
    :class:`TrainingFusion` of

    - each ``Conv2D`` node whose output only a ``ReLU`` node reads, with that ``ReLU``. The
      convolution applies the ReLU as it writes its output (its kernel's epilogue, the same
      values as the ReLU kernel's), and the ReLU node passes that output on: one pass over the
      feature maps less. The convolution's backward needs its input only, and the ReLU's mask
      is the same read from its output, which is its input (``max(x, 0) > 0`` exactly where
      ``x > 0``).
    - each ``ReLU`` node whose output only a ``MaxPool2D`` node reads, with that pool. The pool
      keeps where each window's value came from only for positive values
      (:func:`cnnlab.functional.pool2d`'s ``positive_only``), so its backward's scatter applies
      the ReLU's mask, and the ReLU's backward passes the gradient on: one pass less over the
      larger map. A window's value is the ReLU's output at the element it picked, so each
      gradient lands where the ReLU's own backward would keep it (the same values, bitwise).
    - each ``ReLU`` node whose output only a ``Conv2D`` node reads, with that convolution, which
      applies the ReLU's mask to its input gradient (``conv2d_backward``'s ``relu_input``: in
      the epilogue of the input gradient's convolution where it is one), and the ReLU's backward
      passes the gradient on.
    """
    readers = _readers(nodes)
    convs, relus, pools, masked, through = set(), set(), set(), set(), set()
    for node in nodes:
        kind = type(node.layer)
        reader = _sole_reader(readers, node.output, keep) if kind is Conv2D or kind is ReLU else None
        reading = type(reader.layer) if reader is not None else None
        if kind is Conv2D and reading is ReLU:
            convs.add(id(node))
            relus.add(id(reader))
        elif kind is ReLU and reading is MaxPool2D:
            through.add(id(node))
            pools.add(id(reader))
        elif kind is ReLU and reading is Conv2D:
            through.add(id(node))
            masked.add(id(reader))
    return TrainingFusion(*map(frozenset, (convs, relus, pools, masked, through)))


def _fuse_squeezes(plan, keep):
    """``plan`` with each ``GlobalAvgPool2D(keepdims=True)`` step whose output only a 1x1
    convolution step reads, whose output in turn only another reads, replaced by one
    :class:`FusedSqueeze` (placed where the second convolution was); none of the two tensors in
    between may be in ``keep``."""
    readers = _readers(plan)

    def only_reader(tensor):
        return _sole_reader(readers, tensor, keep)

    replaced = {}
    for step in plan:
        if isinstance(step, FusedStep) or type(step.layer) is not GlobalAvgPool2D or not step.layer.keepdims:
            continue
        shape = step.inputs[0].sample_shape
        if shape is None or len(shape) != 3 or not is_known(shape[:1]):
            continue
        first = only_reader(step.output)
        second = only_reader(first.output) if _squeeze_conv(first, shape[0]) else None
        if _squeeze_conv(second, first.layer.out_channels if second is not None else None):
            replaced.update({id(step): None, id(first): None, id(second): FusedSqueeze(step, first, second)})
    return _with_replacements(plan, replaced)


def _fuse_heads(plan, keep):
    """``plan`` with each ``GlobalAvgPool2D`` step whose output only a ``Dense`` step reads
    (through a ``Flatten`` step where the pooling keeps its dims) replaced by one
    :class:`FusedHead` (placed where the dense step was); none of the tensors in between may be
    in ``keep``."""
    readers = _readers(plan)

    def only_reader(tensor, kind):
        step = _sole_reader(readers, tensor, keep)
        return step if step is not None and not isinstance(step, FusedStep) and type(step.layer) is kind else None

    replaced = {}
    for step in plan:
        if isinstance(step, FusedStep) or type(step.layer) is not GlobalAvgPool2D:
            continue
        flatten = None
        if step.layer.keepdims:
            flatten = only_reader(step.output, Flatten)
            if flatten is None:
                continue
        dense = only_reader((step if flatten is None else flatten).output, Dense)
        if dense is None:
            continue
        replaced.update({id(step): None, id(dense): FusedHead(step, flatten, dense)})
        if flatten is not None:
            replaced[id(flatten)] = None
    return _with_replacements(plan, replaced)


def _fuse_pairs(plan, keep):
    """``plan`` with each :class:`FusedConv` step of a 1x1 convolution of one group whose output
    only a :class:`FusedConv` step of a depthwise convolution (as many groups as input and
    output channels) of the same dtype reads, replaced with it, and with the 1x1 convolution
    step of one group that alone reads the depthwise step's output where there is one, by one
    :class:`FusedConvPair` (placed where its last step was). None of them with a gate, the
    first two without an ``Add``, no tensor between them in ``keep``. (Whether their geometry
    lets them run as one call is seen when they are bound:
    :func:`cnnlab.functional.conv.bind_conv2d_pair`.)"""
    readers = _readers(plan)

    def pointwise(step, add=False):
        return type(step) is FusedConv and step.gate is None and (add or step.add is None) \
            and step.layer.kernel_size == (1, 1) and step.layer.groups == 1

    replaced = {}
    for step in plan:
        if not pointwise(step) or id(step) in replaced:  # (a block's projection starts no other)
            continue
        conv, second = step.layer, _sole_reader(readers, step.output, keep)
        if type(second) is not FusedConv or second.add is not None or second.gate is not None:
            continue
        depthwise = second.layer
        if not (depthwise.groups == depthwise.in_channels == depthwise.out_channels == conv.out_channels
                and depthwise.groups > 1 and depthwise.dtype == conv.dtype):
            continue
        third = _sole_reader(readers, second.output, keep)
        third = third if pointwise(third, add=True) and third.inputs[0] is second.output \
            and third.layer.dtype == conv.dtype else None
        fused = FusedConvPair(step, second, third)
        replaced.update({id(member): None for member in fused.steps})
        replaced[id(fused.steps[-1])] = fused
    return _with_replacements(plan, replaced)


def _with_replacements(plan, replaced):
    """``plan`` with each step whose id is a key of ``replaced`` replaced by its value, or left
    out where that is None."""
    return [replaced.get(id(step), step) for step in plan if replaced.get(id(step), step) is not None]


def _squeeze_conv(step, channels):
    """Whether ``step`` is a fused 1x1 convolution of ``channels`` inputs, one group, stride 1
    and no padding (its output 1x1 on a 1x1 input), with no residual and no gate."""
    if type(step) is not FusedConv or step.add is not None or step.gate is not None:
        return False
    conv = step.layer
    return conv.in_channels == channels and conv.groups == 1 and conv.kernel_size == (1, 1) \
        and tuple(conv.output_shape((channels, 1, 1))) == (conv.out_channels, 1, 1)


def _gating(node, dtype):
    """``{"gate": node, "gated": maps, "gates": gates}`` when ``node`` is a two-input
    ``Multiply`` of feature maps ``(C, H, W)`` by per-channel gates ``(C, 1, 1)``, both of
    ``dtype``; else an empty dict."""
    if type(node.layer) is not Multiply or len(node.inputs) != 2:
        return {}
    for maps, gates in (node.inputs, node.inputs[::-1]):
        shape = maps.sample_shape
        if shape is not None and len(shape) == 3 and is_known(shape[:1]) and gates.sample_shape == (shape[0], 1, 1) \
                and maps.dtype == gates.dtype == dtype:
            return {"gate": node, "gated": maps, "gates": gates}
    return {}


def recyclable(plan):
    """Ids of the tensors whose every reader in ``plan`` returns new arrays (a fused
    convolution, or a layer whose class declares ``returns_new_array``): their buffers can be
    reused once the readers have run."""
    readers = {}
    for step in plan:
        for tensor in step.inputs:
            readers.setdefault(id(tensor), []).append(step)
    return {key for key, steps in readers.items()
            if all(isinstance(s, FusedStep) or s.layer.returns_new_array for s in steps)}
