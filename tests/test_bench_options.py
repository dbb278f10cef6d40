"""bench/node_overhead.py, thread_split.py, rested.py, depthwise.py, direct_conv.py, pointwise_blocks.py,
conv_backward.py, strided_conv.py, small_gemm.py, step_pool.py, conv_engines.py, training_layers.py, team_wait.py,
small_outputs.py, busy_core.py, kernel_replay.py, pointwise_rows.py, tile_conv.py and strip_conv.py refuse bad
options with one line of usage."""

import pathlib
import subprocess
import sys

import pytest

BENCH = pathlib.Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize("script, options, words", [
    ("node_overhead.py", ["model.onnx", "--size", "abc"], "--size"),
    ("node_overhead.py", ["model.onnx", "--size", "48x"], "--size"),
    ("node_overhead.py", ["model.onnx", "--size", "0x192"], "--size"),
    ("thread_split.py", ["--rounds", "0"], "--rounds"),
    ("thread_split.py", ["--calls", "-3"], "--calls"),
    ("rested.py", ["model.onnx", "--size", "0"], "--size"),
    ("rested.py", ["model.onnx", "--pause", "0"], "--pause"),
    ("rested.py", ["model.onnx", "--calls", "0"], "--calls"),
    ("depthwise.py", ["--repeat", "0"], "--repeat"),
    ("depthwise.py", ["--threads", "0"], "--threads"),
    ("direct_conv.py", ["--repeat", "0"], "--repeat"),
    ("pointwise_blocks.py", ["--gemm"], "unrecognized arguments"),
    ("pointwise_blocks.py", ["--threads", "-1"], "--threads"),
    ("conv_backward.py", ["--repeat", "0"], "--repeat"),
    ("conv_backward.py", ["--col2im=1"], "--col2im"),
    ("strided_conv.py", ["--threads", "0"], "--threads"),
    ("small_gemm.py", ["--repeat", "0"], "--repeat"),
    ("small_gemm.py", ["--one-gemm=yes"], "--one-gemm"),
    ("step_pool.py", ["--size", "16"], "--size"),
    ("step_pool.py", ["--repeat", "0"], "--repeat"),
    ("conv_engines.py", ["--rounds", "0"], "--rounds"),
    ("conv_engines.py", ["--shapes", "lenet9"], "--shapes"),
    ("training_layers.py", ["--rounds", "0"], "--rounds"),
    ("team_wait.py", ["model.onnx", "--calls", "0"], "--calls"),
    ("team_wait.py", ["model.onnx", "--size", "-2"], "--size"),
    ("small_outputs.py", ["--rounds", "0"], "--rounds"),
    ("small_outputs.py", ["--repeat", "0"], "--repeat"),
    ("busy_core.py", ["--rounds", "0"], "--rounds"),
    ("busy_core.py", ["--only", "loaded"], "--only"),
    ("kernel_replay.py", ["model.onnx", "--calls", "0"], "--calls"),
    ("kernel_replay.py", ["no-such-model.onnx"], "no file"),
    ("pointwise_rows.py", ["--rounds", "0"], "--rounds"),
    ("pointwise_rows.py", ["--repeat", "0"], "--repeat"),
    ("tile_conv.py", ["--rounds", "0"], "--rounds"),
    ("tile_conv.py", ["--layers", "no-such-layer"], "--layers"),
    ("strip_conv.py", ["--rounds", "0"], "--rounds"),
    ("strip_conv.py", ["--layers", "no-such-layer"], "--layers"),
])
def test_bad_options_are_one_line_of_usage(script, options, words):
    done = subprocess.run([sys.executable, str(BENCH / script), *options], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"{script}: error:") and words in last


def test_median_call_seconds_warms_up_then_times_each_call():
    from cnnlab.bench.measuring import median_call_seconds

    calls = []
    seconds = median_call_seconds(lambda: calls.append(1), repeat=3, warmup=2)
    assert len(calls) == 2 + 1 + 3  # the warm-up, the untimed first call of timed_runs, the timed ones
    assert 0 <= seconds < 0.1
