"""Where an inference's time goes: time inside the CPU kernels against the Python around them.

``bench/node_overhead.py`` and the "py/node" column of ``cnnlab bench --op models``. The
kernel time is the time spent inside the functions of :mod:`cnnlab.kernels.cpu` (what
:func:`cnnlab.functional` dispatches to: the compiled kernels and their thread split); all the
rest of a model call (the walk over the inference plan, argument checks, parameter
preparation, allocation, dispatch) is the Python overhead. The total is the median of plain
calls; the kernel time and the overhead are medians over calls with every kernel wrapped in
a timer, the overhead of each call being its wall time less its kernel time
(measured within the same call, so that a slow call elsewhere on a shared machine does not
move it). The table per kind of step comes from further calls with every step timed as well:
those timers add to the steps' Python (a closure call, two clock reads and a record per step,
a few microseconds a step on MobileNetV2 at batch 1: docs/performance.md), so they stay out of the split.
"""

import contextlib
import statistics
import time

from ..fusion import FusedStep
from ..kernels import cpu as cpu_kernels
from ..prepared import prepared_record

__all__ = ["node_overhead", "timed_kernels", "format_overhead"]


@contextlib.contextmanager
def timed_kernels(clock):
    """Inside the block, every kernel of :mod:`cnnlab.kernels.cpu` adds its duration (seconds)
    to ``clock[0]`` (``clock``: a one-element list); so do the host-only callables that run
    compiled work for the inference plan's fused steps (``cpu_kernels.HOST_RUNNERS``)."""
    names = set(cpu_kernels.KERNEL_NAMES) | set(cpu_kernels.HOST_RUNNERS)
    originals = {name: getattr(cpu_kernels, name) for name in names}

    def wrap(function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                clock[0] += time.perf_counter() - start
        return timed

    for name, function in originals.items():
        setattr(cpu_kernels, name, wrap(function))
    try:
        yield
    finally:
        for name, function in originals.items():
            setattr(cpu_kernels, name, function)


def _step_label(step):
    return repr(step) if isinstance(step, FusedStep) else type(step.layer).__name__


@contextlib.contextmanager
def _timed_steps(graph, plan, clock, records):
    """Each step of ``plan`` appends ``(label, wall seconds, kernel seconds)`` to ``records``
    when it runs (a fused step's ``run``, another node's ``layer.forward``, or its prepared form
    in this thread's prepared plans of ``graph``: :mod:`cnnlab.prepared`)."""
    patched, prepared = [], []

    def wrap(label, function):
        def timed(*args, **kwargs):
            kernel_before, start = clock[0], time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                records.append((label, time.perf_counter() - start, clock[0] - kernel_before))
        return timed

    for step in plan:
        owner, name = (step, "run") if isinstance(step, FusedStep) else (step.layer, "forward")
        if name in vars(owner):  # a layer object used by several nodes is wrapped once
            continue
        setattr(owner, name, wrap(_step_label(step), getattr(owner, name)))
        patched.append((owner, name))
    record = prepared_record(graph, graph.outputs)
    for prepared_plan in record.plans.values() if record is not None else ():
        prepared.append((prepared_plan, prepared_plan.entries))
        prepared_plan.entries = [entry if entry[1] is None and entry[2] is None else
                                 (entry[0], None if entry[1] is None else wrap(_step_label(entry[0]), entry[1]),
                                  None if entry[2] is None else wrap(_step_label(entry[0]), entry[2])) + tuple(entry[3:])
                                 for entry in prepared_plan.entries]
    try:
        yield
    finally:
        for owner, name in patched:
            delattr(owner, name)
        for prepared_plan, entries in prepared:
            prepared_plan.entries = entries


def node_overhead(model, x, repeat=20):
    """Time ``model(x)`` (inference, the fused plan) and split it into kernels and overhead.

    Returns
    -------
    dict
        ``total_seconds`` (median of ``repeat`` plain calls), ``kernel_seconds`` (median of
        the kernel time of ``repeat`` calls with the kernels timed), ``overhead_seconds``
        (median of those calls' wall time less their kernel time),
        ``overhead_fraction`` (of the total), ``steps`` (steps of the inference plan),
        ``overhead_per_step_seconds``, and ``by_kind``: per kind of step (a fused
        convolution chain or a layer class), ``[label, count per call, mean wall seconds,
        mean kernel seconds]`` from ``repeat`` further calls with each step timed too,
        largest overhead first.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    model(x)  # compile, fill the buffer pool
    model(x)  # (and prepare the plan for these shapes: cnnlab.prepared)
    totals = []
    for _ in range(repeat):
        start = time.perf_counter()
        model(x)
        totals.append(time.perf_counter() - start)
    plan = model.graph.inference_plan()
    clock, records, kernels, outside = [0.0], [], [], []
    with timed_kernels(clock):  # the split: only the kernels timed, as a plain call runs its steps
        for _ in range(repeat):
            clock[0] = 0.0
            start = time.perf_counter()
            model(x)
            wall = time.perf_counter() - start
            kernels.append(clock[0])
            outside.append(wall - clock[0])
    with timed_kernels(clock), _timed_steps(model.graph, plan, clock, records):  # the table: each step timed too
        for _ in range(repeat):
            model(x)
    total, kernel, overhead = statistics.median(totals), statistics.median(kernels), statistics.median(outside)
    kinds = {}
    for label, wall, inside in records:
        entry = kinds.setdefault(label, [label, 0, 0.0, 0.0])
        entry[1] += 1
        entry[2] += wall
        entry[3] += inside
    by_kind = [[label, count / repeat, wall / count, inside / count] for label, count, wall, inside in kinds.values()]
    by_kind.sort(key=lambda e: -(e[2] - e[3]) * e[1])
    return dict(total_seconds=total, kernel_seconds=kernel, overhead_seconds=overhead,
                overhead_fraction=overhead / total, steps=len(plan),
                overhead_per_step_seconds=overhead / len(plan), by_kind=by_kind)


def format_overhead(name, result):
    """Lines of text for one :func:`node_overhead` result."""
    lines = [f"{name}: total {result['total_seconds'] * 1e3:.2f} ms, kernels {result['kernel_seconds'] * 1e3:.2f} ms, "
             f"overhead {result['overhead_seconds'] * 1e3:.2f} ms = {100 * result['overhead_fraction']:.1f}% "
             f"({result['steps']} steps, {result['overhead_per_step_seconds'] * 1e6:.1f} us per step)",
             f"  {'step':<52} {'per call':>8} {'wall us':>9} {'kernel us':>9} {'outside us':>10}"]
    for label, count, wall, inside in result["by_kind"]:
        lines.append(f"  {label[:52]:<52} {count:8.0f} {wall * 1e6:9.1f} {inside * 1e6:9.1f} {(wall - inside) * 1e6:10.1f}")
    return "\n".join(lines)
