"""bench/pretrained.py refuses bad timing options with one line of usage, before fetching anything."""

import pathlib
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "bench" / "pretrained.py"


@pytest.mark.parametrize("options, words", [(["--pause", "-1"], "--pause"), (["--pause", "nan"], "--pause"),
                                            (["--rounds", "0"], "--rounds")])
def test_bad_timing_options_are_one_line_of_usage(options, words, tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--cache", str(tmp_path), *options],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("pretrained.py: error:") and words in last
    assert not any(tmp_path.iterdir())  # nothing fetched
