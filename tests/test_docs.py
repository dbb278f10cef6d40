"""The tutorial's code blocks run, in order, as a reader would run them."""

import pathlib
import re

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"


def python_blocks(path):
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_tutorial_runs(capsys):
    namespace = {}
    blocks = python_blocks(DOCS / "tutorial.md")
    assert len(blocks) >= 8
    for block in blocks:
        exec(compile(block, "docs/tutorial.md", "exec"), namespace)
    shown = capsys.readouterr().out
    assert "[[175.]]" in shown and "held-out accuracy" in shown and "most frequent mistake" in shown
    assert "['filters.png', 'maps.png']" in shown


def test_readme_examples_run(tmp_path, monkeypatch, capsys):
    import cnnlab
    from cnnlab.device import simulator_enabled

    monkeypatch.chdir(tmp_path)  # the example saves a model file
    if simulator_enabled():  # the GPU branch is for real GPUs: a 512x512 image takes minutes simulated
        monkeypatch.setattr(cnnlab, "cuda_available", lambda: False)
    blocks = python_blocks(DOCS.parent / "README.md")
    assert len(blocks) >= 2
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
    assert (tmp_path / "digits.npz").exists()
    assert "(1, 3, 256, 256)" in capsys.readouterr().out
