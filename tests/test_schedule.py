"""Small work runs on the calling thread; large work is shared by several threads; both agree."""

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import pytest

import cnnlab.functional as F
import cnnlab.functional.conv
import cnnlab.kernels.cpu.conv
from cnnlab import config
from cnnlab.kernels.cpu import _schedule
from cnnlab.kernels.cpu._schedule import run_shared

needs_threads = pytest.mark.skipif(numba.get_num_threads() < 2, reason="one thread: nothing to share")


@pytest.fixture
def both_paths(monkeypatch):
    """Run a function once with every kernel serial and once with every kernel parallel."""
    def run(function):
        monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1 << 62)
        serial = function()
        monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 0)
        parallel = function()
        return serial, parallel
    return run


def test_small_work_stays_on_the_calling_thread(monkeypatch):
    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1000)
    assert F.cpu_workers(0) == 1
    assert F.cpu_workers(1999) == 1  # two threads would get less than 1000 each
    assert F.cpu_workers(2000) == min(2, numba.get_num_threads())
    assert F.cpu_workers(10**9) == numba.get_num_threads()


@needs_threads
@pytest.mark.parametrize("groups, stride, padding", [(1, 1, 1), (2, 2, 0)])
def test_convolution_serial_equals_parallel(both_paths, groups, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4, 9, 7)).astype(np.float32)
    weight = rng.standard_normal((6, 4 // groups, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(6).astype(np.float32)

    def forward_and_backward():
        out = F.conv2d(x, weight, bias, stride=stride, padding=padding, groups=groups)
        grads = F.conv2d_backward(x, weight, np.cos(out), stride=stride, padding=padding, groups=groups)
        return (out,) + tuple(grads)

    serial, parallel = both_paths(forward_and_backward)
    np.testing.assert_array_equal(serial[0], parallel[0])  # each output item is computed alike
    for a, b in zip(serial[1:], parallel[1:]):  # partial sums per worker: a different order
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@needs_threads
@pytest.mark.parametrize("mode", ["max", "avg", "min", "median", "lp"])
def test_pooling_serial_equals_parallel(both_paths, mode):
    x = np.random.default_rng(1).random((3, 5, 8, 8)).astype(np.float64)

    def forward_and_backward():
        out = F.pool2d(x, 3, stride=2, mode=mode)
        return out, F.pool2d_backward(x, out, np.sin(out), 3, stride=2, mode=mode)

    for a, b in zip(*both_paths(forward_and_backward)):
        np.testing.assert_array_equal(a, b)


@needs_threads
def test_linear_serial_equals_parallel(both_paths):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((7, 5))
    weight, bias = rng.standard_normal((3, 5)), rng.standard_normal(3)

    def forward_and_backward():
        out = F.linear(x, weight, bias)
        return (out,) + tuple(F.linear_backward(x, weight, np.tanh(out)))

    serial, parallel = both_paths(forward_and_backward)
    np.testing.assert_array_equal(serial[0], parallel[0])
    for a, b in zip(serial[1:], parallel[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@needs_threads
@pytest.mark.parametrize("x_shape, weight_shape, stride, groups, workers", [
    ((1, 8, 12, 96), (8, 8, 1, 1), 1, 1, 1),  # a pointwise convolution of 74K multiply-adds: one thread
    ((1, 16, 24, 48), (16, 16, 1, 1), 1, 1, 1),  # 295K, still under 20 us on one thread
    ((1, 24, 24, 96), (72, 24, 1, 1), 1, 1, 2),  # 4M: shared
    ((1, 3, 48, 192), (8, 3, 3, 3), 2, 1, 2),  # the stem of a small classifier: im2col of 3 channels
    ((1, 8, 24, 96), (8, 1, 3, 3), 2, 8, 2),  # depthwise: no GEMM, a multiply-add is worth a visit
])
def test_a_convolution_is_shared_by_its_estimated_time(monkeypatch, x_shape, weight_shape, stride, groups, workers):
    """conv_work weighs a GEMM's multiply-add at a sixteenth of an element visit (the unit of
    PARALLEL_MIN_WORK) and a depthwise one at a visit, so that a convolution that takes under
    about 20 us on one thread stays there (bench/thread_split.py)."""
    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 1 << 14)
    monkeypatch.setattr(numba, "get_num_threads", lambda: 2)
    geometry = cnnlab.functional.conv.conv_geometry(x_shape, weight_shape, np.float32, stride, 1, 1, groups)
    assert geometry.args[-1] == workers
    assert F.cpu_workers(cnnlab.functional.conv.conv_work(8 * 12 * 96, 8, False)) == 1
    assert F.cpu_workers(cnnlab.functional.conv.conv_work(72 * 24 * 96, 24, False)) == 2


@needs_threads
def test_one_image_is_shared_by_blocks_of_rows(both_paths, monkeypatch):
    """With fewer images than threads, the threads share each image's output rows."""
    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 0)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 3, 11, 9)).astype(np.float32)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    block_rows = cnnlab.functional.conv.conv_geometry(x.shape, weight.shape, x.dtype, 1, 1, 1, 1).args[7]
    assert block_rows < 11  # several row blocks, one per thread
    serial, parallel = both_paths(lambda: (F.conv2d(x, weight, padding=1),))
    # the same sums, though BLAS may order them differently for a block of rows
    np.testing.assert_allclose(serial[0], parallel[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("items, workers", [(8, 2), (32, 2), (33, 2), (64, 2), (100, 3), (1000, 8)])
@pytest.mark.parametrize("times", [1, 2, 100])  # the work, in CLAIM_MIN_WORKs
def test_claimed_pieces_cover_the_items_once_in_order_large_first(items, workers, times):
    """Contiguous pieces in order, large first; the smallest an (8 * workers)-th of the items
    for the least work that claims pieces (at most 8 * workers of them), down to a
    (16 * workers)-th for large work (at most 16 * workers)."""
    pieces = _schedule.claimed_pieces(items, workers, times * config.CLAIM_MIN_WORK)
    assert pieces[0][0] == 0 and pieces[-1][1] == items
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))  # contiguous, in order
    sizes = [last - first for first, last in pieces]
    assert sizes[:-1] == sorted(sizes[:-1], reverse=True)  # the last may be a remainder
    eighth, sixteenth = -(-items // (8 * workers)), -(-items // (16 * workers))
    assert sizes[0] == max(items // (2 * workers), min(sizes[:-1] or sizes))
    if times == 1:
        assert min(sizes[:-1] or sizes) == eighth and len(pieces) <= 8 * workers
    if times == 100:
        assert min(sizes[:-1] or sizes) == sixteenth and len(pieces) <= 16 * workers
    assert min(sizes[:-1] or sizes) >= sixteenth


@pytest.mark.parametrize("items, workers", [(11, 2), (32, 2), (7, 3), (10, 4), (3, 3), (1, 1), (100, 8)])
def test_shares_cover_the_items_once_the_first_taking_the_extra_ones(items, workers):
    """Contiguous, in order, each ``items // workers`` or one more; the larger ones first (the
    calling thread runs the first share, the team's threads start later)."""
    bounds = _schedule.shares(items, workers)
    assert len(bounds) == workers and bounds[0][0] == 0 and bounds[-1][1] == items
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    sizes = [last - first for first, last in bounds]
    assert set(sizes) <= {items // workers, -(-items // workers)}
    assert sizes == sorted(sizes, reverse=True)
    assert _schedule.shares(11, 2) == [(0, 6), (6, 11)]


def test_pieces_are_one_share_each_unless_the_work_is_large_and_the_items_many(monkeypatch):
    monkeypatch.setattr(config, "CLAIM_MIN_WORK", 1000)
    assert _schedule.pieces(32, 2, 999) == _schedule.shares(32, 2)
    assert _schedule.pieces(7, 2, 10**9) == _schedule.shares(7, 2)  # fewer than four items a worker
    assert _schedule.pieces(32, 1, 10**9) == [(0, 32)]
    assert _schedule.pieces(32, 2, 1000) == _schedule.claimed_pieces(32, 2, 1000)
    assert _schedule.pieces(3, 8, 10**9) == _schedule.shares(3, 3)  # no more workers than items


@needs_threads
def test_a_thread_on_a_slow_core_claims_fewer_pieces():
    """The team's thread is made slow (each piece it runs sleeps 50 ms, the caller's 1 ms): the
    caller claims most pieces, where even shares would give each thread half."""
    import threading

    caller, ran = threading.get_ident(), {}

    def piece(out, first, last):
        time.sleep(0.001 if threading.get_ident() == caller else 0.05)
        out[first:last] += 1
        ran[first] = threading.get_ident()

    out = np.zeros(64)
    calls = [(out, first, last) for first, last in _schedule.claimed_pieces(64, 2, config.CLAIM_MIN_WORK)]
    _schedule.run_pieces(piece, calls, 2)
    np.testing.assert_array_equal(out, 1)  # every item once
    assert sum(ident == caller for ident in ran.values()) >= len(calls) - 2


@needs_threads
def test_a_convolution_in_claimed_pieces_equals_one_thread(both_paths, monkeypatch):
    """Forward pass, input and weight gradients with the items cut into pieces the threads claim
    (the forward pass is the same bitwise: each item computed alike; the weight gradient's
    accumulators are added in the pieces' order, whichever thread took them: the same twice)."""
    monkeypatch.setattr(config, "CLAIM_MIN_WORK", 0)
    claimed = []
    run_pieces = _schedule.run_pieces
    for module in (_schedule, cnnlab.kernels.cpu.conv):
        monkeypatch.setattr(module, "run_pieces", lambda function, calls, workers:
                            (claimed.append(len(calls) > workers), run_pieces(function, calls, workers)))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 4, 12, 12)).astype(np.float32)
    weight = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)

    def forward_and_backward():
        out = F.conv2d(x, weight, padding=1)
        return (out,) + tuple(F.conv2d_backward(x, weight, np.cos(out), padding=1))

    serial, parallel = both_paths(forward_and_backward)
    assert claimed.count(True) >= 3  # the forward pass, the input and the weight gradients
    np.testing.assert_array_equal(serial[0], parallel[0])
    for a, b in zip(serial[1:], parallel[1:]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(parallel[1:], forward_and_backward()[1:]):
        np.testing.assert_array_equal(a, b)


def test_the_weight_gradient_keeps_one_accumulator_a_worker_past_its_memory_bound(monkeypatch):
    monkeypatch.setattr(config, "CLAIM_MIN_WORK", 0)
    monkeypatch.setattr(config, "PARALLEL_MIN_WORK", 0)
    monkeypatch.setattr(cnnlab.kernels.cpu.conv, "PIECES_MAX_ACCUMULATOR_BYTES", 0)
    seen = []
    run_pieces = _schedule.run_pieces
    monkeypatch.setattr(cnnlab.kernels.cpu.conv, "run_pieces", lambda function, calls, workers:
                        (seen.append((len(calls), workers)), run_pieces(function, calls, workers)))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 4, 12, 12)).astype(np.float32)
    weight = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    cnnlab.kernels.cpu.conv.conv2d_backward_weight(x, rng.standard_normal((16, 6, 12, 12)).astype(np.float32),
                                                   np.empty_like(weight), np.empty(6, np.float32),
                                                   1, 1, 1, 1, 1, 1, 1, 12, 2)
    assert seen == [(2, 2)]


# --- the resident team that runs the shares ------------------------------------------------

@numba.njit(nogil=True)
def _fill(out, value, first, last):
    for i in range(first, last):
        out[i] = value + i


@numba.njit(nogil=True)
def _fail_in_second_share(out, first, last):
    if first > 0:
        raise ValueError("the second share failed")
    out[first] = 1.0


def test_shares_on_the_team_fill_their_slices():
    out = np.zeros(9)
    run_shared(_fill, 9, 3, out, 10.0)
    np.testing.assert_array_equal(out, 10.0 + np.arange(9))


def test_an_error_in_a_share_on_another_thread_reaches_the_caller_and_the_team_goes_on():
    with pytest.raises(ValueError, match="the second share failed"):
        run_shared(_fail_in_second_share, 2, 2, np.zeros(2))
    out = np.zeros(4)
    run_shared(_fill, 4, 2, out, 1.0)  # the team still works
    np.testing.assert_array_equal(out, 1.0 + np.arange(4))


def test_a_team_thread_that_went_to_sleep_is_woken(monkeypatch):
    monkeypatch.setattr(config, "WORKER_SPIN_LOOKS", 1)  # it sleeps right after each share
    for round_ in range(20):
        out = np.zeros(6)
        run_shared(_fill, 6, 2, out, float(round_))
        np.testing.assert_array_equal(out, round_ + np.arange(6))
        if round_ % 5 == 0:
            time.sleep(0.01)


@pytest.mark.parametrize("team", ["watching", "queue"])
def test_a_team_thread_lets_go_of_its_shares_arrays_when_the_call_returns(team, monkeypatch):
    """A buffer pool gives an array back only when nothing else holds it: the team's thread must
    not keep the last share's arguments while it waits for the next one (either kind of team:
    the watching one, and the queue one where the C library has no ``sched_yield``)."""
    import sys

    if team == "queue":
        monkeypatch.setattr(_schedule, "_team", _schedule._QueueTeam())

    array = np.zeros(4)
    taken = []

    def share(values, first, last):
        if first == 0:  # the caller's share waits until the team's thread has taken its own
            deadline = time.perf_counter() + 5
            while not taken and time.perf_counter() < deadline:
                time.sleep(0.001)
        else:
            taken.append(True)

    held = sys.getrefcount(array)
    _schedule.run_in_threads(share, [(array, 0, 1), (array, 1, 2)])
    assert taken  # the second share ran on the team's thread
    assert sys.getrefcount(array) == held


def test_callers_on_several_threads_at_once_each_get_their_result():
    """One caller has the team at a time; the others run their shares themselves."""
    def call(k):
        for _ in range(50):
            out = np.zeros(64)
            run_shared(_fill, 64, 2, out, float(k))
            np.testing.assert_array_equal(out, k + np.arange(64))
        return k

    with ThreadPoolExecutor(4) as pool:  # a failed assertion in a thread is raised here
        assert sorted(pool.map(call, range(4))) == [0, 1, 2, 3]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_a_team_of_its_own():
    out = np.zeros(4)
    run_shared(_fill, 4, 2, out, 0.0)  # the parent's team has a thread now
    pid = os.fork()
    if pid == 0:  # the child: its shares must run (the parent's threads do not exist here)
        code = 0
        try:
            child = np.zeros(4)
            run_shared(_fill, 4, 2, child, 5.0)
            code = 0 if np.array_equal(child, 5.0 + np.arange(4)) else 1
        except BaseException:
            code = 2
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@numba.njit(nogil=True)
def _slow_fill(out, loops, first, last):
    total = 0.0
    for j in range(loops):  # some milliseconds before writing
        total += np.sin(j * 1e-3)
    for i in range(first, last):
        out[i] = 1.0 + total * 0.0


@pytest.mark.skipif(not hasattr(os, "sched_yield"), reason="the watching team needs sched_yield")
def test_a_new_team_waits_for_its_first_shares():
    """A thread that has only just started must not count a share done before running it."""
    for _ in range(5):
        team = _schedule._WatchingTeam()  # no threads yet: they start inside run
        out = np.zeros(3)
        team.run(_slow_fill, [(out, 10**5, 0, 1), (out, 10**6, 1, 2), (out, 10**6, 2, 3)])
        np.testing.assert_array_equal(out, 1.0)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two cores")
def test_a_team_thread_keeps_off_the_core_that_hands_it_work():
    """Woken on the core of the thread that handed it a share, a team thread would share that
    core with it for the whole call; it takes the core out of its own set instead."""
    team = _schedule._WatchingTeam()
    for _ in range(20):  # the caller's share is long, so the team thread takes its own
        out = np.zeros(4)
        team.run(_slow_fill, [(out, 10**6, 0, 2), (out, 0, 2, 4)])
        np.testing.assert_array_equal(out, 1.0)
        member = team.members[0]
        if member.avoided != -1:
            break
    core = int(member.flags[_schedule.CALLER_CORE])
    assert member.avoided == core and core in os.sched_getaffinity(0)
    assert os.sched_getaffinity(member.thread.native_id) == os.sched_getaffinity(0) - {core}



@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two cores")
def test_a_caller_that_moves_onto_the_team_threads_core_moves_the_thread(monkeypatch):
    """After a rest the caller may wake on the core its team thread was kept on; the caller then
    moves the thread off it when it hands the next share, even while the thread cannot run
    (here: held asleep), rather than leave both on one core until the thread gets a share."""
    monkeypatch.setattr(config, "WORKER_SPIN_LOOKS", 1)
    allowed = os.sched_getaffinity(0)
    first, second = sorted(allowed)[:2]
    team = _schedule._WatchingTeam()
    team.run(_fill, [(np.zeros(2), 0.0, 0, 1), (np.zeros(2), 0.0, 1, 2)])  # (its thread free to run anywhere)
    member = team.members[0]
    try:
        os.sched_setaffinity(0, {first})
        team.run(_fill, [(np.zeros(2), 0.0, 0, 1), (np.zeros(2), 0.0, 1, 2)])
        assert first not in os.sched_getaffinity(member.thread.native_id)
        deadline = time.monotonic() + 10
        while not member.flags[_schedule.ASLEEP] and time.monotonic() < deadline:
            time.sleep(0.001)
        assert member.flags[_schedule.ASLEEP]
        os.sched_setaffinity(0, {second})  # onto a core the thread may run on
        with member.awake:  # the thread cannot leave its sleep while this is held
            out = np.zeros(4)
            team.run(_fill, [(out, 2.0, 0, 2), (out, 2.0, 2, 4)])
            np.testing.assert_array_equal(out, 2.0 + np.arange(4))
            assert member.avoided == second
            assert second not in os.sched_getaffinity(member.thread.native_id)
    finally:
        os.sched_setaffinity(0, allowed)

@pytest.mark.skipif(not hasattr(os, "sched_yield"), reason="the watching team needs sched_yield")
def test_a_share_the_team_thread_has_not_taken_is_run_by_the_caller(monkeypatch):
    """A team thread that is slow to wake (here: held asleep) does not hold the caller up: the
    caller, done with its own share, runs the other one too; the thread, once free, goes on
    serving later shares."""
    monkeypatch.setattr(config, "WORKER_SPIN_LOOKS", 1)
    team = _schedule._WatchingTeam()
    team.run(_fill, [(np.zeros(2), 0.0, 0, 1), (np.zeros(2), 0.0, 1, 2)])  # the team has its thread
    member = team.members[0]
    deadline = time.monotonic() + 10
    while not member.flags[_schedule.ASLEEP] and time.monotonic() < deadline:
        time.sleep(0.001)
    assert member.flags[_schedule.ASLEEP]
    with member.awake:  # the thread cannot leave its sleep while this is held
        out = np.zeros(6)
        team.run(_fill, [(out, 3.0, 0, 3), (out, 3.0, 3, 6)])
        np.testing.assert_array_equal(out, 3.0 + np.arange(6))
        assert not member.slot
    out = np.zeros(8)
    for _ in range(5):
        team.run(_fill, [(out, 1.0, 0, 4), (out, 1.0, 4, 8)])
    np.testing.assert_array_equal(out, 1.0 + np.arange(8))


class _Clock:
    """A stand-in for ``time.perf_counter`` whose timed runs take ``run`` seconds each."""

    def __init__(self, run):
        self.run, self.now, self.calls = run, 0.0, 0

    def __call__(self):
        self.calls += 1
        if self.calls % 2 == 0:  # the end of a timed run
            self.now += self.run
        return self.now


def test_the_settle_is_a_time_turned_into_yields_on_this_machine(monkeypatch):
    # 1,000 yields timed at 200 us: 0.2 us a yield, so 6 us is 30 yields and 1 us is 5
    monkeypatch.setattr(_schedule.time, "perf_counter", _Clock(200e-6))
    assert _schedule.settle_yields(6e-6, count=1000) == 30
    monkeypatch.setattr(_schedule.time, "perf_counter", _Clock(200e-6))
    assert _schedule.settle_yields(1e-6, count=1000) == 5
    monkeypatch.setattr(_schedule, "SETTLE_SECONDS", 2e-6)
    monkeypatch.setattr(_schedule.time, "perf_counter", _Clock(200e-6))
    assert _schedule.settle_yields(count=1000) == 10
    # at least one yield, however slow they are
    monkeypatch.setattr(_schedule.time, "perf_counter", _Clock(1.0))
    assert _schedule.settle_yields(1e-6, count=1000) == 1


def test_keep_off_masks_hold_every_allowed_core_but_one():
    masks = _schedule.keep_off_masks()
    allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    for core in range(masks.shape[0]):
        held = {64 * word + bit for word in range(masks.shape[1]) for bit in range(64)
                if int(masks[core, word]) >> bit & 1}
        assert held == ((allowed - {core}) or allowed)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and two cores")
def test_a_threading_layer_worker_on_the_callers_core_moves_off_it():
    """What the inference plan's prange drivers do in each share (``keep_off_caller``): a thread
    that is not the caller and runs on the caller's core takes that core out of its set; the
    caller itself, or a thread on another core, keeps its set."""
    from concurrent.futures import ThreadPoolExecutor

    masks, allowed = _schedule.keep_off_masks(), os.sched_getaffinity(0)

    def in_a_thread(as_caller):
        import threading

        me = _schedule.calling_thread()[0]
        caller = me if as_caller else me + np.uint64(1)
        for _ in range(10):  # a core it is not on keeps its set (unless it moved onto it meanwhile: again)
            core = _schedule.calling_thread()[1]
            _schedule.keep_off_caller(caller, min(allowed - {int(core)}), masks)
            if os.sched_getaffinity(threading.get_native_id()) == allowed:
                break
            os.sched_setaffinity(threading.get_native_id(), allowed)
        assert os.sched_getaffinity(threading.get_native_id()) == allowed
        for _ in range(10):  # (the thread may have moved between the two calls: then again)
            _schedule.keep_off_caller(caller, core, masks)
            if as_caller or os.sched_getaffinity(threading.get_native_id()) != allowed:
                break
            core = _schedule.calling_thread()[1]
        return int(core), os.sched_getaffinity(threading.get_native_id())

    with ThreadPoolExecutor(1) as pool:
        core, cores = pool.submit(in_a_thread, False).result()
        assert cores == allowed - {core}
    with ThreadPoolExecutor(1) as pool:
        core, cores = pool.submit(in_a_thread, True).result()
        assert cores == allowed


@pytest.mark.skipif(not hasattr(os, "sched_yield"), reason="the watching team needs sched_yield")
def test_a_quieted_team_thread_sleeps_at_once_and_serves_the_next_share(monkeypatch):
    """quiet_team (the plan's prange drivers call it): a team thread watching for its next share
    (here for as long as it likes) goes to sleep instead; a share handed later wakes it as
    before and is done; the word does not outlive that share."""
    monkeypatch.setattr(config, "WORKER_SPIN_LOOKS", 10**9)
    team = _schedule._WatchingTeam()
    monkeypatch.setattr(_schedule, "_team", team)
    out = np.zeros(4)
    team.run(_slow_fill, [(out, 0, 0, 2), (out, 10**5, 2, 4)])
    member = team.members[0]
    time.sleep(0.05)
    assert not member.flags[_schedule.ASLEEP]  # still watching
    _schedule.quiet_team()
    deadline = time.monotonic() + 10
    while not member.flags[_schedule.ASLEEP] and time.monotonic() < deadline:
        time.sleep(0.001)
    assert member.flags[_schedule.ASLEEP] and not member.flags[_schedule.QUIET]
    for _ in range(20):
        again = np.zeros(4)
        team.run(_slow_fill, [(again, 10**6, 0, 2), (again, 0, 2, 4)])  # the caller's share is the long one
        np.testing.assert_array_equal(again, 1.0)
        if member.flags[_schedule.DONE] == member.flags[_schedule.HANDED]:
            break
    assert member.flags[_schedule.DONE] == member.flags[_schedule.HANDED]  # the thread ran one itself
    time.sleep(0.05)
    assert not member.flags[_schedule.ASLEEP] and not member.flags[_schedule.QUIET]  # watching again
    _schedule.quiet_team()  # (to sleep: it would watch for a billion looks)


@pytest.mark.skipif(not hasattr(os, "sched_yield"), reason="the watching team needs sched_yield")
def test_the_word_to_be_quiet_is_said_only_after_shares_were_handed(monkeypatch):
    """quiet_team reads nothing of the team's threads unless shares were handed to them since it
    last spoke (a model call whose steps all go to the threading layer asks at every step)."""

    class Counted:  # a team thread whose flags count their reads
        def __init__(self):
            self.reads, self.values = 0, np.zeros(5, np.int64)

        @property
        def flags(self):
            self.reads += 1
            return self.values

    team = _schedule._WatchingTeam()
    counted = Counted()
    team.members.append(counted)
    monkeypatch.setattr(_schedule, "_team", team)
    monkeypatch.setattr(_schedule, "_HANDED_SINCE_QUIET", True)
    _schedule.quiet_team()
    assert counted.reads > 0 and counted.values[_schedule.QUIET] == 1
    counted.reads, counted.values[_schedule.QUIET] = 0, 0
    _schedule.quiet_team()  # nothing handed since
    assert counted.reads == 0
    other = _schedule._WatchingTeam()  # a share handed (by any team) makes the next word count again
    out = np.zeros(4)
    other.run(_slow_fill, [(out, 0, 0, 2), (out, 0, 2, 4)])
    assert _schedule._HANDED_SINCE_QUIET
    other.members[0].flags[_schedule.QUIET] = 1  # (that team's thread: to sleep)
    _schedule.quiet_team()
    assert counted.reads > 0 and counted.values[_schedule.QUIET] == 1


# --- the threading layer's driver, calling a worker through its compiled address ---------

def test_shares_on_the_layer_fill_their_slices_through_the_workers_address(monkeypatch):
    out = np.zeros(10)
    arguments = (out, 100.0)
    address = _schedule.compiled_address(_fill, arguments)
    assert address == _schedule.compiled_address(_fill, (np.ones(3), 5.0))  # the same types: the same code
    assert address != _schedule.compiled_address(_fill, (np.ones(3, np.float32), 5.0))
    seen = []
    driver = _schedule._shares_at
    monkeypatch.setattr(_schedule, "_shares_at", lambda *a: seen.append(a[0]) or driver(*a))
    _schedule.run_on_layer(_fill, arguments, np.array([0, 3, 7, 10]))
    np.testing.assert_array_equal(out, 100.0 + np.arange(10))
    assert seen == [address]
    readonly = np.arange(4.0)
    readonly.flags.writeable = False
    values = np.zeros(4)
    _schedule.run_on_layer(_copy_in, (readonly, values), np.array([0, 2, 4]))  # other types: their own code
    np.testing.assert_array_equal(values, np.arange(4.0))


@numba.njit(nogil=True)
def _copy_in(source, out, first, last):
    for i in range(first, last):
        out[i] = source[i]


def test_an_error_in_a_share_on_the_layer_is_raised_from_python():
    out = np.zeros(2)
    with pytest.raises(ValueError, match="the second share failed"):
        _schedule.run_on_layer(_fail_in_second_share, (out,), np.array([0, 1, 2]))
    assert out[0] == 1.0  # the first share ran
    values = np.zeros(4)
    _schedule.run_on_layer(_fill, (values, 1.0), np.array([0, 2, 4]))  # the layer still works
    np.testing.assert_array_equal(values, 1.0 + np.arange(4))


@numba.njit(nogil=True)
def _double_into(source, out, first, last):
    for i in range(first, last):
        out[i] = 2.0 * source[i]


@numba.njit(nogil=True)
def _sum_of_share(source, out, first, last):
    for i in range(first, last):
        out[i] = source.sum()


def _on_layer(function, arguments, edges):
    return function, arguments, np.asarray(edges, np.int64), _schedule.compiled_address(function, arguments)


def test_a_pair_on_the_layer_runs_each_second_share_after_its_first_and_a_third_after_all():
    """Share ``i`` of the second kernel reads what share ``i`` of the first wrote; the third loop
    reads every value the pairs wrote."""
    first, second, third = np.zeros(6), np.zeros(6), np.zeros(4)
    _schedule.run_pair_on_layer(_on_layer(_fill, (first, 1.0), [0, 3, 6]),
                                _on_layer(_double_into, (first, second), [0, 3, 6]))
    np.testing.assert_array_equal(second, 2.0 * (1.0 + np.arange(6)))

    doubled = np.zeros(6)
    _schedule.run_pair_on_layer(_on_layer(_fill, (first, 3.0), [0, 3, 6]),
                                _on_layer(_double_into, (first, doubled), [0, 3, 6]),
                                _on_layer(_sum_of_share, (doubled, third), [0, 2, 4]))
    np.testing.assert_array_equal(doubled, 2.0 * (3.0 + np.arange(6)))
    np.testing.assert_array_equal(third, np.full(4, doubled.sum()))


def test_an_error_in_a_pairs_share_is_raised_from_python():
    out, values = np.zeros(2), np.zeros(2)
    with pytest.raises(ValueError, match="the second share failed"):
        _schedule.run_pair_on_layer(_on_layer(_fill, (values, 1.0), [0, 1, 2]),
                                    _on_layer(_fail_in_second_share, (out,), [0, 1, 2]))
    assert out[0] == 1.0 and values[1] == 2.0  # the first share ran both, the second its first
    with pytest.raises(ValueError, match="the second share failed"):
        _schedule.run_pair_on_layer(_on_layer(_fill, (values, 1.0), [0, 1, 2]),
                                    _on_layer(_fill, (np.zeros(2), 1.0), [0, 1, 2]),
                                    _on_layer(_fail_in_second_share, (out,), [0, 1, 2]))
