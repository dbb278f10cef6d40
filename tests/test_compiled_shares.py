"""The inference plan's convolutions share their work through Numba's threading layer
(cnnlab.kernels.cpu._schedule.run_on_layer: one driver calling each path's items through their
compiled address) where it is one even share per thread: the same values as the kernels' own
thread team, bit for bit, on every forward path; the team still takes work claimed in pieces,
and one thread's work runs on the caller."""

import numba
import numpy as np
import pytest

import cnnlab
import cnnlab.functional as F
import cnnlab.layers as L
from cnnlab.kernels.cpu import conv as cpu_conv
from cnnlab.kernels.cpu._microkernel import available as panels_available


def _spied(monkeypatch):
    """Wrap the threading layer's driver as the convolutions call it, so that a call is noted
    (the items' name)."""
    calls = []
    run_on_layer = cpu_conv.run_on_layer

    def spy(items, arguments, edges, address=None):
        calls.append(items.__name__)
        return run_on_layer(items, arguments, edges, address)
    monkeypatch.setattr(cpu_conv, "run_on_layer", spy)
    return calls


# (path, input shape, weight shape, stride, padding, groups, (output rows, filter blocks, samples) an item,
# what to patch)
PATHS = [
    ("_direct_forward_items", (1, 8, 16, 16), (8, 1, 3, 3), 1, 1, 8, (16, 1, 1), {}),
    ("_depthwise_blocks_items", (1, 40, 7, 7), (40, 1, 3, 3), 1, 1, 40, (7, 1, 1), {}),
    ("_pointwise_forward_items", (1, 32, 14, 14), (64, 32, 1, 1), 1, 0, 1, (14, 2, 1), {}),
    ("_panel_forward_items", (2, 16, 16, 16), (32, 16, 3, 3), 1, 1, 1, (16, 1, 1),
     {"by_winograd": False, "by_strips": False, "by_tiles": False}),
    ("_conv2d_forward_items", (2, 16, 16, 16), (32, 16, 3, 3), 1, 1, 1, (16, 1, 1),
     {"by_winograd": False, "by_strips": False, "by_tiles": False, "PANELS": False}),
    ("_tile_forward_items", (2, 16, 16, 16), (32, 16, 3, 3), 1, 1, 1, (16, 1, 1),
     {"by_winograd": False, "by_strips": False, "by_tiles": True}),
    ("_strip_forward_items", (2, 16, 16, 16), (32, 16, 3, 3), 1, 1, 1, (16, 1, 1),
     {"by_winograd": False, "by_strips": True}),
    ("_interleaved_forward_items", (4, 5, 5, 5), (3, 5, 3, 3), 1, 0, 1, (3, 1, 2), {"_interleaved_by_panels": False}),
    ("_interleaved_panel_items", (4, 5, 5, 5), (3, 5, 3, 3), 1, 0, 1, (3, 1, 2), {}),
    ("_winograd_forward_items", (2, 8, 10, 10), (8, 8, 3, 3), 1, 1, 1, (10, 1, 1),
     {"by_winograd": True, "_is_direct": False}),
]


@pytest.mark.parametrize("path, x_shape, weight_shape, stride, pad, groups, blocks, patches", PATHS,
                         ids=[case[0] for case in PATHS])
def test_every_forward_path_gives_the_teams_values_through_its_driver(monkeypatch, path, x_shape, weight_shape,
                                                                      stride, pad, groups, blocks, patches):
    if "panel" in path and not panels_available():
        pytest.skip("this processor has no panel kernel (AVX2 and FMA)")
    for name, value in patches.items():
        monkeypatch.setattr(cpu_conv, name, (lambda *arguments, value=value: value) if name[0] == "_"
                            or name.startswith("by_") else value)
    rng = np.random.default_rng(len(path))
    x = rng.standard_normal(x_shape).astype(np.float32)
    weight = rng.standard_normal(weight_shape).astype(np.float32)
    scale = rng.uniform(0.5, 2, weight_shape[0]).astype(np.float32)
    shift = rng.standard_normal(weight_shape[0]).astype(np.float32)
    out_size = (x_shape[2] + 2 * pad - weight_shape[2]) // stride + 1
    out_shape = (x_shape[0], weight_shape[0], out_size, out_size)
    block_rows, filter_blocks, sample_block = blocks
    work = cpu_conv._forward_work(x_shape, weight_shape, out_shape, stride, stride, pad, pad, 1, 1, groups, block_rows,
                                  2, filter_blocks, sample_block, dtype=np.float32)
    assert work[0].__name__ == path and work[2] == 2 and len(work[4]) == 2  # two even shares
    calls = _spied(monkeypatch)
    by_team, by_driver = np.full(out_shape, np.nan, np.float32), np.full(out_shape, np.nan, np.float32)
    cpu_conv._run_forward(work, x, weight, scale, shift, by_team, False, 1, 0.0, 6.0, by_team)
    assert calls == []
    cpu_conv._run_forward(work, x, weight, scale, shift, by_driver, False, 1, 0.0, 6.0, by_driver,
                          compiled_shares={})
    assert calls == [path]
    np.testing.assert_array_equal(by_driver, by_team)
    expected = np.clip(F.conv2d(x.astype(np.float64), weight.astype(np.float64), stride=stride, padding=pad,
                                groups=groups) * scale[:, None, None] + shift[:, None, None], 0, 6)
    np.testing.assert_allclose(by_driver, expected, rtol=1e-4, atol=1e-4)


def test_work_claimed_in_pieces_and_one_threads_work_do_not_take_the_driver(monkeypatch):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 8, 16, 16)).astype(np.float32)
    weight = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    ones, zeros = np.ones(8, np.float32), np.zeros(8, np.float32)
    expected = F.conv2d(x, weight, padding=1, groups=8)
    calls = _spied(monkeypatch)
    for workers, claim in [(1, None), (2, 1)]:  # one thread; work claimed in pieces (any work is, from 1)
        if claim is not None:
            monkeypatch.setattr(cnnlab.config, "CLAIM_MIN_WORK", claim)
        work = cpu_conv._forward_work(x.shape, weight.shape, x.shape, 1, 1, 1, 1, 1, 1, 8, 16, workers,
                                      dtype=np.float32)
        assert len(work[4]) == 1 if workers == 1 else len(work[4]) > 2
        out = np.empty_like(x)
        cpu_conv._run_forward(work, x, weight, ones, zeros, out, False, 0, 0.0, 0.0, out, compiled_shares={})
        np.testing.assert_array_equal(out, expected)
    assert calls == []


def test_the_plans_convolutions_take_the_drivers_and_the_functional_ones_do_not(monkeypatch):
    """A model's call (the inference plan: its bound convolutions) at batch 1 on two threads
    runs its depthwise and 1x1 convolutions through the drivers, with the values of the same
    layers called one by one through conv2d, which keeps to the team."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one thread: no shares")
    threads = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        x_in = cnnlab.Input((32, 16, 16))
        depthwise = L.Conv2D(32, 32, 3, padding=1, groups=32, seed=1)
        pointwise = L.Conv2D(32, 192, 1, seed=2)
        model = cnnlab.Model(x_in, L.ReLU6()(pointwise(L.ReLU6()(depthwise(x_in)))))
        x = np.random.default_rng(2).standard_normal((1, 32, 16, 16)).astype(np.float32)
        calls = _spied(monkeypatch)
        first = model(x)  # checked and bound
        assert calls == []
        again = model(x)
        assert sorted(set(calls)) == ["_direct_forward_items", "_pointwise_forward_items"]
        calls.clear()
        straight = []  # from now on the bound calls hand their kept shares to the layer's driver straight
        monkeypatch.setattr(cnnlab.kernels.cpu, "run_conv2d_on_layer",
                            lambda items, *rest, real=cnnlab.kernels.cpu.run_conv2d_on_layer:
                            straight.append(items.__name__) or real(items, *rest))
        third = model(x)
        assert calls == [] and straight == ["_direct_forward_items", "_pointwise_forward_items"]
        hidden = F.conv2d(x, depthwise.weight, depthwise.bias, padding=1, groups=32, activation="relu6")
        hidden = F.conv2d(hidden, depthwise.weight, depthwise.bias, padding=1, groups=32, activation="relu6")
        assert calls == []  # (a repeated functional call, bound too, keeps to the team)
        expected = F.conv2d(F.conv2d(x, depthwise.weight, depthwise.bias, padding=1, groups=32, activation="relu6"),
                            pointwise.weight, pointwise.bias, activation="relu6")
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(again, first)
    np.testing.assert_array_equal(again, expected)
    np.testing.assert_array_equal(third, expected)
