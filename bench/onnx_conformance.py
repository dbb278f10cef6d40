"""Print, per ONNX op type cnnlab imports, how many of the ONNX project's node test cases pass,
how many pass once the inputs that carry weights, shapes or bounds are made constants (cnnlab
folds those into its layers), and how many are refused (NotImplementedError) — the table in
docs/onnx.md — then the share that loads among the cases in scope: all but those of
low-precision types (bfloat16, float8, float4, int4, int2: quantized formats cnnlab leaves out)
and of training-mode nodes (cnnlab imports inference graphs).

    python bench/onnx_conformance.py

A wrong answer stops the script with the failing case (the test suite runs the same check:
tests/test_onnx.py::test_onnx_node_test_cases_pass_or_are_refused).
"""

import pathlib
import sys

import onnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

from test_onnx import conformance, node_cases  # noqa: E402

#: onnx.TensorProto numbers of bfloat16, the float8s, uint4/int4, float4, float8e8m0, uint2/int2
LOW_PRECISION = {16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26}


def in_scope(case):
    graph = case.model.graph
    types = [v.type.tensor_type.elem_type for v in list(graph.input) + list(graph.output)]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in graph.node[0].attribute}
    return not (any(t in LOW_PRECISION for t in types) or attributes.get("to") in LOW_PRECISION
                or "training" in case.name)


counts = conformance()
print("| op | passed | passed, weights as constants | refused |")
print("|---|---|---|---|")
for op in sorted(counts):
    print("| " + " | ".join([op] + [str(n) for n in counts[op]]) + " |")
totals = [sum(column) for column in zip(*counts.values())]
print("| **all** | " + " | ".join(f"**{n}**" for n in totals) + " |")
scoped = {case.name for case in node_cases() if in_scope(case)}
loaded = conformance(names=scoped)
passed = sum(p + f for p, f, _ in loaded.values())
print(f"\nin scope: {len(scoped)} cases, {passed} pass ({100 * passed / len(scoped):.1f} %), "
      f"{len(scoped) - passed} refused, 0 wrong")
