"""Prepared inference plans (cnnlab.prepared): a model called again on arrays of the same
shapes runs its fused steps without their checks, with the values of the plain walk, and
falls back to the plain walk whenever what the steps were prepared with changed."""


import numba
import numpy as np
import pytest
from threads import errors_in_threads

import cnnlab
import cnnlab.layers as L
from cnnlab import config, fusion
from cnnlab.fusion import FusedConv, FusedConvPair, FusedHead, FusedStep
from cnnlab.kernels import cpu as cpu_kernels
from cnnlab.prepared import PLANS_KEPT, prepared_record


class _Relayout(L.Identity):
    """Its input copied, C-ordered, or Fortran-ordered while ``fortran`` is set (a step that is
    not fused, whose output a prepared step reads)."""

    fortran = False

    def forward(self, x, training=False):
        return np.asfortranarray(x) if self.fortran else x.copy()


class _Squash(L.Layer):
    """A sigmoid in NumPy, into an array of the kernels' (the buffer pool's, when one lends):
    a step that returns new arrays and has no prepared form."""

    returns_new_array = True

    def forward(self, x, training=False):
        out = cpu_kernels.empty(x.shape, x.dtype)
        np.divide(1, 1 + np.exp(-x), out=out)
        return out


def _network(dtype=np.float32, norm=True, relayout=False, slope=None, squash=False):
    """A stem convolution (with its normalization and ReLU6), a 3x3 max pooling that keeps the
    size (a step that is not fused), an inverted residual block with its shortcut, a 3x3
    convolution (with a leaky ReLU of ``slope``) and a classifier head. ``relayout``: a
    :class:`_Relayout` after the pooling; ``squash``: a :class:`_Squash` there (a step that
    returns new arrays and has no prepared form)."""
    x = cnnlab.Input((8, 10, 10), dtype=dtype)

    def layer(conv, inputs, activation=L.ReLU6):
        h = conv(inputs)
        h = L.BatchNorm2D(conv.out_channels, dtype=dtype)(h) if norm else h
        return activation()(h) if activation is not None else h

    h = layer(L.Conv2D(8, 8, 3, padding=1, bias=not norm, seed=1, dtype=dtype), x)
    h = L.MaxPool2D(3, stride=1, padding=1)(h)
    if relayout:
        h = _Relayout()(h)
    if squash:
        h = _Squash()(h)
    block = layer(L.Conv2D(8, 32, 1, bias=not norm, seed=2, dtype=dtype), h)
    block = layer(L.Conv2D(32, 32, 3, padding=1, groups=32, bias=not norm, seed=3, dtype=dtype), block)
    block = layer(L.Conv2D(32, 8, 1, bias=not norm, seed=4, dtype=dtype), block, activation=None)
    h = L.Add()([block, h])
    h = layer(L.Conv2D(8, 16, 3, padding=1, bias=not norm, seed=5, dtype=dtype), h,
              activation=L.ReLU if slope is None else (lambda: L.LeakyReLU(slope)))
    out = L.Dense(16, 5, seed=6, dtype=dtype)(L.Flatten()(L.GlobalAvgPool2D(keepdims=True)(h)))
    model = cnnlab.Model(x, out)
    rng = np.random.default_rng(3)
    for layer_ in model.layers:
        for name, value in getattr(layer_, "buffers", {}).items():
            value[...] = rng.uniform(0.5, 1.5, value.shape) if name == "running_var" else rng.normal(0, 0.2, value.shape)
    return model


def _plain(model, x, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(config, "PREPARE", False)
        return model.forward(x)


def _images(batch=1, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 8, 10, 10)).astype(dtype)


@pytest.fixture(autouse=True)
def _pairs(monkeypatch):
    """Small work still split between the threads, so the block runs as one bound pair."""
    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1)


def _record(model):
    return prepared_record(model.graph, model.graph.outputs)


def _step_runs(monkeypatch):
    """A list each fused step's plain ``run`` appends its class to."""
    calls = []
    for kind in (FusedConv, FusedConvPair, FusedHead):
        real = kind.run
        monkeypatch.setattr(kind, "run", lambda self, *args, real=real, **kwargs: calls.append(type(self)) or
                            real(self, *args, **kwargs))
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("batch", [1, 3])
def test_prepared_calls_give_the_plain_walks_values(dtype, norm, batch, monkeypatch):
    model = _network(dtype, norm)
    x = _images(batch, dtype)
    expected = _plain(model, x, monkeypatch)
    np.testing.assert_allclose(expected, model.graph.forward([x], observe=lambda node, value: None)[0],
                               rtol=1e-4, atol=1e-5)
    model.forward(x)
    model.forward(x)  # the second call with these shapes prepares the plan
    plans = _record(model).plans
    assert len(plans) == 1
    plan, = plans.values()
    steps = model.graph.inference_plan()
    assert [type(entry[0]) for entry in plan.entries] == [type(step) for step in steps]
    prepared = [type(entry[0]) for entry in plan.entries if entry[1] is not None]
    fused = [type(step) for step in steps if isinstance(step, FusedStep)]
    assert FusedConvPair in fused and FusedHead in fused and len(steps) > len(fused)
    assert prepared == [type(step) for step in steps]  # (the max pooling by its layer's prepared_forward)
    runs = _step_runs(monkeypatch)
    for _ in range(3):
        np.testing.assert_array_equal(model.forward(x), expected)
    assert runs == []  # the fused steps ran in their prepared forms only


def test_results_are_the_callers_and_never_share_the_plans_arrays(monkeypatch):
    model = _network()
    a, b = _images(seed=1), _images(seed=2)
    results = [model.forward(a) for _ in range(4)]
    kept = results[-1].copy()
    for _ in range(2):
        model.forward(b)
    np.testing.assert_array_equal(results[-1], kept)
    assert len({id(r) for r in results}) == 4
    assert not any(np.shares_memory(p, q) for i, p in enumerate(results) for q in results[i + 1:])
    plan, = _record(model).plans.values()
    owned = [entry[5] for entry in plan.entries if entry[5] is not None]
    assert owned and not any(np.shares_memory(r, array) for r in results for array in owned)


def test_the_plans_arrays_are_shared_by_lifetime_and_apart_from_the_pools(monkeypatch):
    """Outputs alive at once are in separate arrays of the plan; one dead before another is
    made may share its memory; the pool that a step without a prepared form takes from never
    hands out the plan's memory."""
    model = _network(squash=True)
    x = _images()
    for _ in range(5):
        model.forward(x)
    plan, = _record(model).plans.values()
    alive = {}
    for step, run, call, reads, output, out, spec, lends, drops, checked in plan.entries:
        if out is not None:
            assert not any(np.shares_memory(out, other) for slot, other in alive.items() if slot in reads), \
                "an output in the memory of one of its step's inputs"
            assert not any(np.shares_memory(out, other) for other in alive.values())
            alive[output] = out
        for slot, _ in drops:
            alive.pop(slot, None)
    pool = model.graph.buffer_pool()
    pooled = [buffer for buffers in pool.free.values() for buffer in buffers]
    assert pooled  # the squash's output comes from the pool
    owned = [entry[5] for entry in plan.entries if entry[5] is not None]
    assert not any(np.shares_memory(p, q) for p in pooled for q in owned)


def test_parameters_edited_in_place_are_read_and_keep_the_plan(monkeypatch):
    model = _network()
    x = _images()
    for _ in range(3):
        model.forward(x)
    plan = _record(model).plans.copy()
    for layer in model.layers:
        for value in list(layer.params.values()) + list(getattr(layer, "buffers", {}).values()):
            value *= 1.25  # (a fine-tuning step updates parameters in place)
    expected = _plain(model, x, monkeypatch)
    np.testing.assert_array_equal(model.forward(x), expected)
    assert _record(model).plans == plan


@pytest.mark.parametrize("replaced", ["weight", "bias", "running_mean", "dense"])
def test_replaced_parameters_drop_the_plan_and_are_used(replaced, monkeypatch):
    model = _network()
    x = _images()
    for _ in range(3):
        model.forward(x)
    record = _record(model)
    assert len(record.plans) == 1
    convs = [layer for layer in model.layers if isinstance(layer, L.Conv2D)]
    norms = [layer for layer in model.layers if isinstance(layer, L.BatchNorm2D)]
    dense = next(layer for layer in model.layers if isinstance(layer, L.Dense))
    if replaced == "weight":
        convs[2].params["weight"] = convs[2].params["weight"] * -2.0
    elif replaced == "bias":
        norms[3].params["bias"] = norms[3].params["bias"] + 1.0
    elif replaced == "running_mean":
        norms[0].buffers["running_mean"] = norms[0].buffers["running_mean"] - 0.5
    else:
        dense.params["weight"] = dense.params["weight"][::-1].copy()
    expected = _plain(model, x, monkeypatch)
    np.testing.assert_array_equal(model.forward(x), expected)
    assert record.plans == {} and record.waits == 2
    for _ in range(3):  # two plain calls in a row now before the plan is made again
        np.testing.assert_array_equal(model.forward(x), expected)
    assert len(record.plans) == 1


def test_a_changed_activation_is_seen(monkeypatch):
    model = _network(slope=0.1)
    x = _images()
    for _ in range(3):
        model.forward(x)
    leaky = next(layer for layer in model.layers if isinstance(layer, L.LeakyReLU))
    leaky.negative_slope = 0.5
    expected = _plain(model, x, monkeypatch)
    np.testing.assert_array_equal(model.forward(x), expected)
    assert _record(model).plans == {}


def test_another_thread_count_takes_the_plain_walk(monkeypatch):
    model = _network()
    x = _images()
    for _ in range(3):
        model.forward(x)
    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        expected = _plain(model, x, monkeypatch)
        np.testing.assert_allclose(model.forward(x), expected, rtol=1e-6, atol=1e-6)
        assert _record(model).plans == {} or threads == 1
    finally:
        numba.set_num_threads(threads)


@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_pair_that_runs_its_steps_one_after_the_other_is_prepared_step_by_step(norm, threads, monkeypatch):
    """Where the block's pair is not bound (one thread; on two, a pair the binding turned
    down), its steps run one after the other in the plain walk: the plan prepares each of
    them, with the same values, and on two threads calls their kernels on its own arrays."""
    if threads == 2:
        monkeypatch.setattr(fusion, "bind_conv2d_pair", lambda *bounds: None)
    before = numba.get_num_threads()
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    try:
        model = _network(norm=norm)
        x = _images()
        expected = _plain(model, x, monkeypatch)
        for _ in range(2):
            model.forward(x)
        plan, = _record(model).plans.values()
        pairs = [entry for entry in plan.entries if isinstance(entry[0], FusedConvPair)]
        assert len(pairs) == 1 and pairs[0][0].pair is None and pairs[0][1] is not None
        assert (pairs[0][2] is not None) == (numba.get_num_threads() == 2)  # (kernels by their kept shares)
        runs = _step_runs(monkeypatch)
        for _ in range(3):
            np.testing.assert_array_equal(model.forward(x), expected)
        assert runs == []
        model.layers[7].params["weight"] *= 1.25  # (the pair's depthwise step, edited in place)
        np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    finally:
        numba.set_num_threads(before)


def test_other_shapes_and_layouts_take_the_plain_walk_and_shapes_get_plans_of_their_own(monkeypatch):
    model = _network()
    record = _record(model)
    for batch in (1, 2, 1, 2, 1, 2):
        x = _images(batch, seed=batch)
        np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert sorted(signature[0][0][0] for signature in record.plans) == [1, 2]
    x = np.asfortranarray(_images(1, seed=1))
    for _ in range(3):
        np.testing.assert_allclose(model.forward(x), _plain(model, x, monkeypatch), rtol=1e-6, atol=1e-6)
    x64 = _images(1, np.float64, seed=1)
    np.testing.assert_allclose(model.forward(x64), _plain(model, x64, monkeypatch), rtol=1e-6, atol=1e-6)
    for batch in range(1, PLANS_KEPT + 3):
        for _ in range(2):
            model.forward(_images(batch))
    assert len(record.plans) == PLANS_KEPT


def test_a_step_whose_input_no_longer_fits_runs_the_rest_of_the_call_plain(monkeypatch):
    """The block reads the output of a step that is not fused: where that output is not laid out
    as when the plan was made, the block and every step after it run as in the plain walk."""
    model = _network(relayout=True)
    x = _images()
    for _ in range(3):
        model.forward(x)
    assert len(_record(model).plans) == 1
    relayout = next(layer for layer in model.layers if isinstance(layer, _Relayout))
    relayout.fortran = True
    expected = _plain(model, x, monkeypatch)
    runs = _step_runs(monkeypatch)
    np.testing.assert_array_equal(model.forward(x), expected)
    assert runs.count(FusedHead) == 1 and FusedConvPair in runs
    relayout.fortran = False
    expected = _plain(model, x, monkeypatch)
    runs.clear()
    np.testing.assert_array_equal(model.forward(x), expected)
    assert runs == [] and len(_record(model).plans) == 1


def test_each_thread_prepares_its_own_plan(monkeypatch):
    model = _network()
    inputs = [_images(2, seed=k) for k in range(4)]
    expected = [_plain(model, x, monkeypatch) for x in inputs]
    records = {}

    def work(k):
        for _ in range(10):
            np.testing.assert_array_equal(model.forward(inputs[k]), expected[k])
        records[k] = _record(model)

    assert not errors_in_threads(work, 4)
    assert len({id(record) for record in records.values()}) == 4
    assert all(len(record.plans) == 1 for record in records.values())


def test_turned_off_no_plan_is_made(monkeypatch):
    monkeypatch.setattr(config, "PREPARE", False)
    model = _network()
    for _ in range(3):
        model.forward(_images())
    assert _record(model) is None
    monkeypatch.setattr(config, "PREPARE", True)
    assert _record(model).plans == {}


def test_the_plans_of_a_graph_on_a_thread_share_their_arrays(monkeypatch):
    """A plan for fewer samples, made after one for more, takes no new memory: it runs in the
    arrays of the other (the two never run at once); both still give the plain walk's values."""
    model = _network()
    big, small = _images(3, seed=1), _images(1, seed=2)
    for _ in range(2):
        model.forward(big)
    own = _record(model).own
    held = own.nbytes
    assert held > 0
    for _ in range(2):
        model.forward(small)
    assert len(_record(model).plans) == 2 and own.nbytes == held
    for x in (big, small, big):
        np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))


def test_a_new_head_or_a_rebuilt_plan_is_seen(monkeypatch):
    """A head replaced for transfer learning (its node's layer swapped) and an inference plan
    made again leave the prepared plan behind: the next call walks the plain plan, with the
    new layer's values, and a later one prepares the new plan."""
    model = _network()
    x = _images()
    for _ in range(3):
        model.forward(x)
    model.replace_head(7, seed=4)
    expected = _plain(model, x, monkeypatch)
    assert expected.shape == (1, 7)
    np.testing.assert_array_equal(model.forward(x), expected)
    record = _record(model)
    assert record.plans == {}
    for _ in range(3):
        model.forward(x)
    plan, = record.plans.values()
    assert plan.plan is model.graph.inference_plan()
    model.graph.__dict__.pop("_plans")  # (the plan made again: new steps)
    np.testing.assert_array_equal(model.forward(x), expected)
    assert record.plans == {} and record.waits == 4  # (the second plan dropped: four plain calls first)
    for _ in range(4):
        np.testing.assert_array_equal(model.forward(x), expected)
    plan, = record.plans.values()
    assert plan.plan is model.graph.inference_plan()


def test_node_overhead_times_every_prepared_step_and_restores_the_plan():
    """bench/node_overhead.py's table: each step of a prepared plan (by its ``run`` or its
    ``call``) counted once per call, and the plan's entries as they were afterwards."""
    from cnnlab.bench.overhead import node_overhead

    model = _network()
    x = _images()
    result = node_overhead(model, x, repeat=3)
    plan, = _record(model).plans.values()
    assert any(entry[2] is not None for entry in plan.entries) and any(entry[1] is not None and entry[2] is None
                                                                        for entry in plan.entries)
    entries = list(plan.entries)
    counts = {label: count for label, count, _, _ in result["by_kind"]}
    assert counts == {"FusedConv(Conv2D -> BatchNorm2D -> ReLU6)": 1, "MaxPool2D": 1, "FusedConv(Conv2D -> "
                      "BatchNorm2D -> ReLU)": 1, "FusedHead(GlobalAvgPool2D -> Flatten -> Dense)": 1,
                      repr(model.graph.inference_plan()[2]): 1}
    assert node_overhead(model, x, repeat=1) and plan.entries == entries


class _Total(L.Identity):
    """A NumPy scalar (not an array): the sum of its input, as a shape computation's step may
    make one."""

    def forward(self, x, training=False):
        return np.float64(x.sum())


def test_a_step_that_makes_a_scalar_leaves_the_others_prepared(monkeypatch):
    """A step whose value is not an array (a scalar of a shape computation, in imported files)
    runs as in the plain walk; the plan is made for the rest."""
    model = _network()
    side = _Total()(model.graph.outputs[0].node.inputs[0])
    model = cnnlab.Model(model.graph.inputs[0], [model.graph.outputs[0], side])
    x = _images()
    expected = _plain(model, x, monkeypatch)
    for _ in range(4):
        got = model.forward(x)
        np.testing.assert_array_equal(got[0], expected[0])
        assert type(got[1]) is np.float64 and got[1] == expected[1]
    plan, = _record(model).plans.values()
    fused = [step for step in model.graph.inference_plan() if isinstance(step, FusedStep)]
    prepared = [entry[0] for entry in plan.entries if entry[1] is not None]
    assert [step for step in prepared if isinstance(step, FusedStep)] == fused and len(fused) == 3
    assert [type(node.layer).__name__ for node in prepared if not isinstance(node, FusedStep)] == \
        ["MaxPool2D", "GlobalAvgPool2D", "Flatten", "Dense"]


def _squeezed(dtype=np.float32, norm=True):
    """Feature maps, a squeeze-excitation block's squeeze (pooling, 1x1 convolution with or
    without batch norm and a leaky ReLU, 1x1 convolution and a sigmoid), the gated maps and a
    convolution of them."""
    x = cnnlab.Input((3, 7, 6), dtype=dtype)
    maps = L.ReLU()(L.Conv2D(3, 6, 3, padding=1, seed=1, dtype=dtype)(x))
    h = L.Conv2D(6, 3, 1, seed=2, dtype=dtype, bias=not norm)(L.GlobalAvgPool2D(keepdims=True)(maps))
    h = L.LeakyReLU(0.2)(L.BatchNorm2D(3, dtype=dtype)(h) if norm else h)
    gates = L.Sigmoid()(L.Conv2D(3, 6, 1, seed=3, dtype=dtype)(h))
    out = L.Conv2D(6, 4, 1, seed=4, dtype=dtype)(L.Multiply()([maps, gates]))
    model = cnnlab.Model(x, L.Flatten()(out))
    rng = np.random.default_rng(5)
    for layer in model.layers:
        for name, value in getattr(layer, "buffers", {}).items():
            value[...] = rng.uniform(0.5, 1.5, value.shape) if name == "running_var" else rng.normal(0, 0.2, value.shape)
    return model


@pytest.mark.parametrize("dtype, norm", [(np.float32, True), (np.float32, False), (np.float64, True)])
def test_a_squeeze_is_prepared_and_follows_its_parameters(dtype, norm, monkeypatch):
    from cnnlab.fusion import FusedSqueeze

    model = _squeezed(dtype, norm)
    x = np.random.default_rng(2).standard_normal((2, 3, 7, 6)).astype(dtype)
    expected = _plain(model, x, monkeypatch)
    for _ in range(3):
        np.testing.assert_array_equal(model.forward(x), expected)
    plan, = _record(model).plans.values()
    assert any(type(entry[0]) is FusedSqueeze and entry[1] is not None for entry in plan.entries)
    runs = []
    with monkeypatch.context() as patch:
        patch.setattr(FusedSqueeze, "run", lambda self, *args, **kwargs: runs.append(self))
        np.testing.assert_array_equal(model.forward(x), expected)
    assert runs == []
    for layer in model.layers:  # edited in place: read at the next call, the plan kept
        for value in list(layer.params.values()) + list(getattr(layer, "buffers", {}).values()):
            value *= 0.75
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert len(_record(model).plans) == 1
    squeeze = [layer for layer in model.layers if isinstance(layer, L.Conv2D)][1]
    squeeze.params["weight"] = squeeze.params["weight"] * 2.0  # replaced: the plan dropped
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert _record(model).plans == {}


@pytest.mark.parametrize("groups", [1, 2, 6])
@pytest.mark.parametrize("norm", [True, False])
def test_a_gated_convolution_is_prepared_with_its_weights_scaled_at_each_call(groups, norm, monkeypatch):
    """Gates (1, C, 1, 1) that scale the next convolution's weights: prepared, the weights
    scaled into the step's own array at each call by the gates of that call."""
    from cnnlab.fusion import FusedConv

    x_in = cnnlab.Input((6, 9, 9))
    maps = L.HardSwish()(L.Conv2D(6, 6, 3, padding=1, seed=1)(x_in))
    squeezed = L.ReLU()(L.Conv2D(6, 2, 1, seed=2)(L.GlobalAvgPool2D(keepdims=True)(maps)))
    gates = L.HardSigmoid()(L.Conv2D(2, 6, 1, seed=3)(squeezed))
    h = L.Conv2D(6, 6, 3, padding=1, groups=groups, seed=4, bias=not norm)(L.Multiply()([maps, gates]))
    model = cnnlab.Model(x_in, L.Flatten()(L.ReLU()(L.BatchNorm2D(6)(h) if norm else h)))
    rng = np.random.default_rng(7)
    for x in (rng.standard_normal((1, 6, 9, 9)).astype(np.float32) for _ in range(5)):  # other gates each call
        np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    plan, = _record(model).plans.values()
    gated = [entry for entry in plan.entries if type(entry[0]) is FusedConv and entry[0].gate is not None]
    assert len(gated) == 1 and gated[0][1] is not None


def test_additions_and_products_that_are_not_fused_are_prepared_by_their_layers(monkeypatch):
    """``Add`` and ``Multiply`` nodes of their own (not a convolution's shortcut or gate) run by
    their layers' ``prepared_forward``: the functional op's kernel call with its checks made
    once, the same values; a layer swapped on the node drops the plan."""
    x_in = cnnlab.Input((4, 6, 6))
    a = L.ReLU()(L.Conv2D(4, 4, 3, padding=1, seed=1)(x_in))
    b = _Squash()(L.Conv2D(4, 4, 1, seed=2)(x_in))
    pooled = L.GlobalAvgPool2D(keepdims=True)(b)
    h = L.Add()([a, b])
    g = L.Multiply()([L.Multiply()([h, a]), pooled])  # (the second broadcasts (N, C, 1, 1), read by no convolution)
    model = cnnlab.Model(x_in, L.Flatten()(L.Add()([pooled, g])))  # (the small operand first)
    x = np.random.default_rng(4).standard_normal((2, 4, 6, 6)).astype(np.float32)
    expected = _plain(model, x, monkeypatch)
    for _ in range(3):
        np.testing.assert_array_equal(model.forward(x), expected)
    plan, = _record(model).plans.values()
    prepared = [type(entry[0].layer).__name__ for entry in plan.entries
                if entry[1] is not None and not isinstance(entry[0], FusedStep)]
    assert sorted(prepared) == ["Add", "Add", "Flatten", "GlobalAvgPool2D", "Multiply", "Multiply"]
    forwards = []
    with monkeypatch.context() as patch:
        for kind in (L.Add, L.Multiply):
            real = kind.forward
            patch.setattr(kind, "forward", lambda self, *args, real=real, **kwargs: forwards.append(self) or
                          real(self, *args, **kwargs))
        np.testing.assert_array_equal(model.forward(x), expected)
    assert forwards == []
    node = next(node for node in model.graph.nodes if isinstance(node.layer, L.Multiply))
    node.layer = L.Multiply()
    np.testing.assert_array_equal(model.forward(x), expected)
    assert _record(model).plans == {}


def _prepared_alone(model, x, kind, monkeypatch):
    """The plain walk's values for ``x``, after checking that three calls give them and that the
    plan made prepares exactly one node that is not fused and computes (not a reshape: a
    ``Flatten`` after it), a ``kind`` layer's."""
    expected = _plain(model, x, monkeypatch)
    for _ in range(3):
        np.testing.assert_array_equal(model.forward(x), expected)
    plan, = _record(model).plans.values()
    assert [type(entry[0].layer) for entry in plan.entries
            if entry[1] is not None and entry[0].layer.returns_new_array] == [kind]
    return expected


@pytest.mark.parametrize("bias", [True, False])
def test_a_dense_layer_that_is_not_fused_is_prepared_and_follows_its_parameters(bias, monkeypatch):
    """A ``Dense`` node of its own (here on a sequence's last axis, as a recognizer's) runs by
    its layer's ``prepared_forward``: the kernel call of ``linear`` with its checks made once,
    its weights edited in place seen, replaced weights dropping the plan."""
    x_in = cnnlab.Input((5, 8))
    dense = L.Dense(8, 6, bias=bias, seed=1)
    model = cnnlab.Model(x_in, _Squash()(dense(x_in)))
    x = np.random.default_rng(6).standard_normal((2, 5, 8)).astype(np.float32)
    _prepared_alone(model, x, L.Dense, monkeypatch)
    dense.params["weight"] *= -1.5
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert len(_record(model).plans) == 1
    dense.params["weight"] = dense.params["weight"][::-1].copy()
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert _record(model).plans == {}


@pytest.mark.parametrize("kind, value_shape", [(L.Bias, (4, 1, 1)), (L.Scale, (1, 4, 6, 6)), (L.Bias, (6,))])
def test_constant_operands_are_prepared_and_follow_their_value(kind, value_shape, monkeypatch):
    """``Bias`` and ``Scale`` (an ONNX ``Add`` or ``Mul`` of a constant) run by their layers'
    ``prepared_forward`` on a view of their value: edits in place seen, a new value drops the
    plan."""
    x_in = cnnlab.Input((4, 6, 6))
    layer = kind(np.random.default_rng(8).standard_normal(value_shape).astype(np.float32))
    model = cnnlab.Model(x_in, _Squash()(layer(_Squash()(x_in))))
    x = np.random.default_rng(9).standard_normal((2, 4, 6, 6)).astype(np.float32)
    _prepared_alone(model, x, kind, monkeypatch)
    layer.params["weight"] *= -2.0
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert len(_record(model).plans) == 1
    layer.params["weight"] = layer.params["weight"] + 1.0
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert _record(model).plans == {}


@pytest.mark.parametrize("perm", [(0, 2, 3, 1), (0, 1, 3, 2), (0, 3, 1, 2)])
def test_a_transpose_is_prepared(perm, monkeypatch):
    """A ``Transpose`` runs by its layer's ``prepared_forward``: the kernel call of ``transpose``
    with its geometry worked out once; a new permutation drops the plan."""
    x_in = cnnlab.Input((3, 4, 5))
    layer = L.Transpose(perm)
    model = cnnlab.Model(x_in, _Squash()(layer(_Squash()(x_in))))
    x = np.random.default_rng(10).standard_normal((2, 3, 4, 5)).astype(np.float32)
    expected = _prepared_alone(model, x, L.Transpose, monkeypatch)
    layer.perm = list(layer.perm)  # (the same permutation, another object: checked again)
    np.testing.assert_array_equal(model.forward(x), expected)
    assert _record(model).plans == {}


@pytest.mark.parametrize("op, axes, keepdims", [("mean", [1], True), ("max", [2, 3], False), ("sum", None, True),
                                                ("prod", [-1], False)])
def test_a_reduction_is_prepared(op, axes, keepdims, monkeypatch):
    """A ``Reduce`` of its own runs by its layer's ``prepared_forward``: ``reduce``'s NumPy call
    with its axes resolved once, the same values; another op drops the plan."""
    x_in = cnnlab.Input((3, 4, 5))
    layer = L.Reduce(op, axes, keepdims)
    model = cnnlab.Model(x_in, _Squash()(layer(_Squash()(x_in))))
    x = np.random.default_rng(11).standard_normal((2, 3, 4, 5)).astype(np.float32)
    _prepared_alone(model, x, L.Reduce, monkeypatch)
    layer.op = "min" if op != "min" else "max"
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert _record(model).plans == {}


@pytest.mark.parametrize("kind, options", [(L.MaxPool2D, dict(kernel_size=3, stride=2, padding=1)),
                                           (L.AvgPool2D, dict(kernel_size=2, count_include_pad=False)),
                                           (L.MaxPool2D, dict(kernel_size=2, padding="same_upper")),
                                           (L.LPPool2D, dict(kernel_size=3, stride=1)),
                                           (L.MinPool2D, dict(kernel_size=3, stride=2, ceil_mode=True))])
def test_a_pooling_is_prepared(kind, options, monkeypatch):
    """A pooling layer (ResNet's max pooling after its stem) runs by its layer's
    ``prepared_forward``: ``pool2d``'s kernel call with its arguments checked once; another
    stride drops the plan."""
    x_in = cnnlab.Input((3, 9, 8))
    layer = kind(**options)
    model = cnnlab.Model(x_in, L.Flatten()(_Squash()(layer(_Squash()(x_in)))))
    x = np.random.default_rng(12).standard_normal((2, 3, 9, 8)).astype(np.float32)
    _prepared_alone(model, x, kind, monkeypatch)
    layer.stride = tuple(layer.stride)[::-1] if layer.stride[0] != layer.stride[1] else (1, 1)
    np.testing.assert_array_equal(model.forward(x), _plain(model, x, monkeypatch))
    assert _record(model).plans == {}
