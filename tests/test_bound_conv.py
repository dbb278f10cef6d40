"""The checked-once convolution of the inference plan (cnnlab.functional.conv.bind_conv2d): it
computes what conv2d computes, and any call it was not bound for goes through conv2d's checks."""

import numba
import numpy as np
import pytest
from naive import conv2d_loops

import cnnlab
import cnnlab.functional as F
import cnnlab.layers as L
from cnnlab import config
from cnnlab.functional.conv import bind_conv2d
from cnnlab.graph import FusedConv


def _arrays(rng, n=2, c=3, f=4, size=7):
    x = rng.standard_normal((n, c, size, size)).astype(np.float32)
    weight = rng.standard_normal((f, c, 3, 3)).astype(np.float32)
    return x, weight, rng.standard_normal(f).astype(np.float32), rng.uniform(0.5, 2, f).astype(np.float32)


def test_bound_call_equals_conv2d():
    rng = np.random.default_rng(0)
    x, weight, bias, scale = _arrays(rng)
    residual = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    arguments = dict(stride=2, padding=1, dilation=1, groups=1)
    epilogue = dict(scale=scale, residual=residual, activation=("clip", -0.5, 0.5))
    expected = F.conv2d(x, weight, bias, **arguments, **epilogue)
    bound = bind_conv2d(x, weight, bias, **arguments, **epilogue)
    assert bound.accepts(x, weight, bias, 2, 1, 1, 1, scale, residual, ("clip", -0.5, 0.5))
    np.testing.assert_array_equal(bound(x, weight, bias, scale, residual), expected)
    out = np.empty(bound.out_shape, np.float32)
    assert bound(x, weight, bias, scale, residual, out) is out
    np.testing.assert_array_equal(out, expected)


def test_other_calls_are_not_accepted():
    rng = np.random.default_rng(1)
    x, weight, bias, scale = _arrays(rng)
    bound = bind_conv2d(x, weight, bias, 1, 1, 1, 1)
    args = (1, 1, 1, 1, None, None, None)
    assert bound.accepts(x, weight, bias, *args)
    assert not bound.accepts(x[:1], weight, bias, *args)  # another batch size
    assert not bound.accepts(x.astype(np.float64), weight, bias, *args)
    assert not bound.accepts(np.asfortranarray(x), weight, bias, *args)
    assert not bound.accepts(x.tolist(), weight, bias, *args)
    assert not bound.accepts(x, weight, None, *args)  # the bias went away
    assert not bound.accepts(x, weight, bias, 1, 1, 1, 1, scale, None, None)
    assert not bound.accepts(x, weight, bias, 1, 1, 1, 1, None, None, "relu")
    assert not bound.accepts(x, weight, bias, 1.0, 1, 1, 1, None, None, None)  # conv2d decides about 1.0
    assert not bound.accepts(x, weight, bias, 1, 1, 1, True, None, None, None)
    previous = numba.get_num_threads()
    if numba.config.NUMBA_NUM_THREADS > 1:
        numba.set_num_threads(2 if previous == 1 else 1)
        try:
            assert not bound.accepts(x, weight, bias, *args)  # the thread split was resolved for another count
        finally:
            numba.set_num_threads(previous)
    for name, value in (("IM2COL_MAX_BYTES", 1024), ("CLAIM_MIN_WORK", 0)):  # the work was cut for the old value
        setattr(config, name, value)
        try:
            assert not bound.accepts(x, weight, bias, *args)
        finally:
            config.reset()
    import cnnlab.functional.conv as functional_conv
    from cnnlab.kernels.cpu import _winograd as winograd
    from cnnlab.kernels.cpu import conv as cpu_conv

    for module, name, value in ((cpu_conv, "PANELS", False), (winograd, "WINOGRAD", False),
                                (cpu_conv, "PANEL_TAPS", 16),  # the path was chosen under the old switch
                                (functional_conv, "POINTWISE_BLOCK_BYTES", 1024)):  # the geometry's blocks too
        previous = getattr(module, name)
        setattr(module, name, value)
        try:
            assert not bound.accepts(x, weight, bias, *args)
        finally:
            setattr(module, name, previous)
    assert bound.accepts(x, weight, bias, *args)


def test_the_kept_geometry_follows_a_changed_setting(monkeypatch):
    """conv_geometry keeps its answers by arguments and settings (_settings): a 1x1
    convolution's pixel blocks follow POINTWISE_BLOCK_BYTES changed between two calls of the
    same shapes."""
    import cnnlab.functional.conv as functional_conv
    from cnnlab.kernels import cpu

    monkeypatch.setattr(cpu, "conv2d_pointwise_pixel_blocks", lambda dtype: True)
    shapes = ((2, 6, 11, 13), (8, 6, 1, 1), np.float32, 1, 0, 1, 1)
    per_row = (6 + 8) * 13 * 4
    monkeypatch.setattr(functional_conv, "POINTWISE_MIN_PIXELS", 1)
    monkeypatch.setattr(functional_conv, "POINTWISE_BLOCK_BYTES", 3 * per_row)
    assert functional_conv.conv_geometry(*shapes).args[7] == 3
    monkeypatch.setattr(functional_conv, "POINTWISE_BLOCK_BYTES", 5 * per_row)
    assert functional_conv.conv_geometry(*shapes).args[7] == 5


def test_nothing_is_bound_for_what_only_conv2d_handles():
    rng = np.random.default_rng(2)
    x, weight, bias, _ = _arrays(rng)
    assert bind_conv2d(x[:, :, ::2, ::2].copy(), weight, bias) is not None
    assert bind_conv2d(x[:, :, ::2, ::2], weight, bias) is None  # not contiguous
    assert bind_conv2d(x[0], weight, bias) is None  # one sample without its batch axis
    assert bind_conv2d(x[:0], weight, bias) is None  # an empty batch
    assert bind_conv2d(x, weight, bias, padding=[1, 1]) is None  # a list: resolved by conv2d every time
    assert bind_conv2d(x.astype(np.float64), weight.astype(np.float64), None) is not None


def test_repeated_conv2d_calls_are_bound_and_see_new_values(monkeypatch):
    """conv2d binds a checked call (cnnlab.functional.conv._bound_first): the same shapes and
    arguments again skip the checks, yet compute from the arrays they are given; a call with
    anything else is checked and computed for itself."""
    import cnnlab.functional.conv as conv_module

    rng = np.random.default_rng(6)
    x, weight, bias, scale = _arrays(rng, n=3, c=2, f=5, size=9)

    def reference(x, weight, bias, padding, scale=None, activation=None):
        sums = conv2d_loops(x, weight, None, padding=((padding, padding),) * 2)
        sums = sums * (1 if scale is None else scale[:, None, None]) + (0 if bias is None else bias[:, None, None])
        return np.maximum(sums, 0) if activation == "relu" else sums

    first = F.conv2d(x, weight, bias, padding=1, activation="relu")
    assert any(b.accepts(x, weight, bias, 1, 1, 1, 1, None, None, "relu")
               for b in conv_module._BOUND_CALLS[(x.shape, weight.shape)])
    checked = []
    real = conv_module.conv_geometry
    monkeypatch.setattr(conv_module, "conv_geometry", lambda *a: checked.append(a) or real(*a))
    weight[:] *= -1  # edited in place, and new input values: the bound call reads them
    x2 = rng.standard_normal(x.shape).astype(np.float32)
    again = F.conv2d(x2, weight, bias, padding=1, activation="relu")
    assert not checked  # no check ran
    np.testing.assert_allclose(again, reference(x2, weight, bias, 1, activation="relu"), rtol=1e-5, atol=1e-5)
    assert not np.allclose(again, first)
    out = np.empty_like(again)
    assert F.conv2d(x2, weight, bias, padding=1, activation="relu", out=out) is out
    assert not checked
    np.testing.assert_array_equal(out, again)
    for kwargs in (dict(bias=bias, padding=1), dict(bias=bias, padding=1, scale=scale, activation="relu"),
                   dict(bias=bias, padding=0, activation="relu"), dict(bias=None, padding=1, activation="relu")):
        checked.clear()
        result = F.conv2d(x2, weight, **kwargs)
        assert checked
        np.testing.assert_allclose(result, reference(x2, weight, **kwargs), rtol=1e-5, atol=1e-5)


def test_a_bound_call_takes_its_output_from_the_lender_as_conv2d_does():
    """A training step lends the kernels' arrays from its pool (cnnlab.memory.StepPool): a
    bound call's new output comes from there too, not from a new allocation each step."""
    from cnnlab.kernels import cpu

    rng = np.random.default_rng(8)
    x, weight, bias, _ = _arrays(rng)
    taken = []

    def lend(shape, dtype):
        taken.append(shape)
        return np.empty(shape, dtype)

    previous = cpu.lend_from(lend)
    try:
        outputs = [F.conv2d(x, weight, bias, padding=1) for _ in range(3)]  # the later two bound
    finally:
        cpu.lend_from(previous)
    assert taken == [(2, 4, 7, 7)] * 3
    np.testing.assert_array_equal(outputs[2], outputs[0])


def test_bad_input_after_a_bound_call_is_still_refused():
    rng = np.random.default_rng(7)
    x, weight, bias, _ = _arrays(rng)
    for _ in range(2):
        F.conv2d(x, weight, bias, padding=1)
    with pytest.raises(ValueError, match="out must have shape"):
        F.conv2d(x, weight, bias, padding=1, out=np.empty((2, 4, 6, 6), np.float32))
    with pytest.raises(ValueError, match="writeable"):
        read_only = np.empty((2, 4, 7, 7), np.float32)
        read_only.flags.writeable = False
        F.conv2d(x, weight, bias, padding=1, out=read_only)
    with pytest.raises(ValueError, match="bias"):
        F.conv2d(x, weight, bias[:3], padding=1)
    with pytest.raises(TypeError, match="dtype"):
        F.conv2d(x, weight, bias.astype(np.float64), padding=1)


def _model():
    x = cnnlab.Input((3, 8, 8))
    h = L.ReLU()(L.BatchNorm2D(4)(L.Conv2D(3, 4, 3, padding=1, seed=1)(x)))
    h = L.ReLU()(L.Add()([L.Conv2D(4, 4, 3, padding=1, seed=2)(h), h]))
    return cnnlab.Model(x, L.Dense(4 * 8 * 8, 3, seed=4)(L.Flatten()(h)))


def _unfused(model, x):
    previous, config.FUSE = config.FUSE, False
    try:
        return model.forward(x).copy()
    finally:
        config.FUSE = previous


def test_plan_sees_edited_parameters_and_new_shapes():
    rng = np.random.default_rng(3)
    model = _model()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    for _ in range(2):  # the second call runs the bound convolutions
        np.testing.assert_allclose(model.forward(x), _unfused(model, x), rtol=1e-5, atol=1e-6)
    steps = [s for s in model.graph.inference_plan() if isinstance(s, FusedConv)]
    assert steps and all(s.bound is not None for s in steps)
    conv = steps[0].layer
    conv.params["weight"][:] *= 2  # edited in place
    conv.params["bias"] = conv.params["bias"] + 1  # replaced
    np.testing.assert_allclose(model.forward(x), _unfused(model, x), rtol=1e-5, atol=1e-6)
    y = rng.standard_normal((5, 3, 8, 8)).astype(np.float32)  # another batch size: bound again
    np.testing.assert_allclose(model.forward(y), _unfused(model, y), rtol=1e-5, atol=1e-6)
    conv.params["weight"] = conv.params["weight"].astype(np.float64)  # conv2d's own error, as before
    with pytest.raises(TypeError, match="weight has dtype float64"):
        model.forward(y)


@pytest.mark.parametrize("runner", cnnlab.kernels.cpu.HOST_RUNNERS)
def test_the_kernel_time_of_the_plans_compiled_calls_is_counted(runner, monkeypatch):
    """cnnlab.bench.overhead (node_overhead.py, the models benchmark's overhead column) counts the
    time the plan's fused steps spend in their compiled calls (a bound convolution's work, a
    block's convolutions as one call, a squeeze's gates) as kernel time."""
    from cnnlab.bench.overhead import timed_kernels

    rng = np.random.default_rng(4)
    if runner == "run_conv2d_pair_on_layer":  # an inverted residual block's convolutions as one call
        if numba.get_num_threads() < 2:
            pytest.skip("one thread: no shares")
        monkeypatch.setattr(cnnlab.config, "PARALLEL_MIN_WORK", 1)
        x_in = cnnlab.Input((8, 10, 10))
        hidden = L.ReLU6()(L.Conv2D(32, 32, 3, padding=1, groups=32, seed=2)(L.ReLU6()(L.Conv2D(8, 32, 1, seed=1)(x_in))))
        model = cnnlab.Model(x_in, L.GlobalAvgPool2D()(L.Conv2D(32, 8, 1, seed=3)(hidden)))
        x = rng.standard_normal((1, 8, 10, 10)).astype(np.float32)
        model.forward(x)  # bound
    elif runner == "run_conv2d_on_layer":  # a bound call's shares on the threading layer, handed straight to it
        if numba.get_num_threads() < 2:
            pytest.skip("one thread: no shares")
        x_in = cnnlab.Input((32, 16, 16))
        hidden = L.ReLU6()(L.Conv2D(32, 32, 3, padding=1, groups=32, seed=1)(x_in))
        model = cnnlab.Model(x_in, L.Conv2D(32, 192, 1, seed=2)(hidden))
        x = rng.standard_normal((1, 32, 16, 16)).astype(np.float32)
        model.forward(x)  # bound
    else:
        x_in = cnnlab.Input((3, 8, 8))
        maps = L.ReLU()(L.Conv2D(3, 4, 3, padding=1, seed=1)(x_in))
        squeezed = L.ReLU()(L.Conv2D(4, 2, 1, seed=2)(L.GlobalAvgPool2D(keepdims=True)(maps)))
        gates = L.HardSigmoid()(L.Conv2D(2, 4, 1, seed=3)(squeezed))
        model = cnnlab.Model(x_in, L.Flatten()(L.Conv2D(4, 2, 1, seed=4)(L.Multiply()([maps, gates]))))
        x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    model.forward(x)  # bound (and the threading layer's shares kept)
    counted = []
    real = getattr(cnnlab.kernels.cpu, runner)

    def slow(*args, **kwargs):  # a compiled call that takes at least 5 ms
        import time

        time.sleep(0.005)
        counted.append(1)
        return real(*args, **kwargs)

    clock = [0.0]
    setattr(cnnlab.kernels.cpu, runner, slow)
    try:
        with timed_kernels(clock):
            model.forward(x)
    finally:
        setattr(cnnlab.kernels.cpu, runner, real)
    assert counted and clock[0] >= 0.005 * len(counted)


def test_node_overhead_tables_every_step_and_leaves_no_timer():
    """node_overhead's table counts each kind of step once per call, its split adds up, and
    every timer is gone afterwards."""
    from cnnlab.bench.overhead import node_overhead

    x_in = cnnlab.Input((3, 8, 8))
    hidden = L.ReLU()(L.Conv2D(3, 4, 3, padding=1, seed=1)(x_in))
    model = cnnlab.Model(x_in, L.Flatten()(L.Conv2D(4, 2, 1, seed=2)(hidden)))
    x = np.random.default_rng(5).standard_normal((1, 3, 8, 8)).astype(np.float32)
    model.forward(x)
    plan = model.graph.inference_plan()
    stepped = [step if hasattr(step, "members") else step.layer for step in plan]
    result = node_overhead(model, x, repeat=3)
    assert result["steps"] == len(plan) == 3
    assert {label: count for label, count, _, _ in result["by_kind"]} == {
        "FusedConv(Conv2D -> ReLU)": 1, "FusedConv(Conv2D)": 1, "Flatten": 1}
    assert result["kernel_seconds"] > 0 and result["total_seconds"] > 0
    assert result["overhead_seconds"] == pytest.approx(result["overhead_fraction"] * result["total_seconds"])
    assert not any("run" in vars(owner) or "forward" in vars(owner) for owner in stepped)


def test_a_pickled_bound_call_leaves_its_compiled_address_behind():
    """The threading layer's driver calls a bound step's items through an address of this
    process's code, kept with the bound call; a pickled copy (for another process) starts
    without it and works it out again."""
    import pickle

    threads = numba.get_num_threads()
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread: no shares")
    numba.set_num_threads(2)
    try:
        rng = np.random.default_rng(3)
        x = rng.standard_normal((1, 32, 16, 16)).astype(np.float32)
        weight = rng.standard_normal((32, 1, 3, 3)).astype(np.float32)
        expected = F.conv2d(x, weight, padding=1, groups=32)
        bound = bind_conv2d(x, weight, padding=1, groups=32, compiled_shares=True)
        np.testing.assert_array_equal(bound(x, weight), expected)
        assert len(bound.compiled_shares) == 1  # (the depthwise items' address and edges)
        copy = pickle.loads(pickle.dumps(bound))
        assert copy.compiled_shares == {}
        np.testing.assert_array_equal(copy(x, weight), expected)
    finally:
        numba.set_num_threads(threads)


def test_a_model_call_reads_the_settings_once_a_dtype_and_the_next_call_again(monkeypatch):
    """Within an inference call (``held_settings``) the bound convolutions' settings are read
    once per dtype; a setting changed between calls is seen by the next one."""
    from cnnlab.functional import conv as functional_conv

    reads = []
    read = functional_conv._read_settings
    monkeypatch.setattr(functional_conv, "_read_settings", lambda dtype: reads.append(dtype) or read(dtype))
    x_in = cnnlab.Input((4, 8, 8))
    y = L.Conv2D(4, 8, 3, padding=1, seed=1)(x_in)
    y = L.Conv2D(8, 8, 3, padding=1, seed=2)(L.ReLU()(y))
    model = cnnlab.Model(x_in, L.Conv2D(8, 4, 1, seed=3)(y))
    x = np.random.default_rng(4).standard_normal((2, 4, 8, 8)).astype(np.float32)
    first = model(x)
    reads.clear()
    np.testing.assert_array_equal(model(x), first)
    assert len(reads) == 1  # three bound convolutions, one read
    with functional_conv.held_settings():
        held = functional_conv._settings(np.dtype(np.float32))
        monkeypatch.setattr(config, "IM2COL_MAX_BYTES", config.IM2COL_MAX_BYTES // 2)
        assert functional_conv._settings(np.dtype(np.float32)) is held
    assert functional_conv._settings(np.dtype(np.float32)) != held  # read again outside
    # (read again, unchanged settings come as the same tuple: the bound calls compare them by identity)
    assert read(np.dtype(np.float32)) is read(np.dtype(np.float32)) is functional_conv._settings(np.dtype(np.float32))
    reads.clear()
    np.testing.assert_array_equal(model(x), first)  # the changed setting seen: rebound, same values
    assert len(reads) >= 1


def test_an_activation_with_parameters_gives_the_same_tuple_while_they_stay():
    """LeakyReLU, Clip and HardSigmoid hand a fused convolution the same tuple call after call
    (its bound call compares it by identity), and a new one once a parameter changes."""
    for layer, change in ((L.LeakyReLU(0.2), lambda a: setattr(a, "negative_slope", 0.3)),
                          (L.Clip(0.0, 6.0), lambda a: setattr(a, "max", 5.0)),
                          (L.HardSigmoid(), lambda a: setattr(a, "alpha", 0.25))):
        first = layer.fused_activation()
        assert layer.fused_activation() is first
        change(layer)
        second = layer.fused_activation()
        assert second != first and layer.fused_activation() is second
