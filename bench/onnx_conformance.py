"""Print, per ONNX op type cnnlab imports, how many of the ONNX project's node test cases pass,
how many pass once the inputs that carry weights, shapes or bounds are made constants (cnnlab
folds those into its layers), and how many are refused (NotImplementedError) — the table in
docs/onnx.md.

    python bench/onnx_conformance.py

A wrong answer stops the script with the failing case (the test suite runs the same check:
tests/test_onnx.py::test_onnx_node_test_cases_pass_or_are_refused).
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

from test_onnx import conformance  # noqa: E402

counts = conformance()
print("| op | passed | passed, weights as constants | refused |")
print("|---|---|---|---|")
for op in sorted(counts):
    print("| " + " | ".join([op] + [str(n) for n in counts[op]]) + " |")
totals = [sum(column) for column in zip(*counts.values())]
print("| **all** | " + " | ".join(f"**{n}**" for n in totals) + " |")
