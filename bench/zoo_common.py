"""What bench/pretrained.py and bench/timm_zoo.py share: loading an ONNX file with cnnlab without
letting any failure escape (a refusal is a result), running it, the comparison with onnxruntime's
outputs, and the grouping of refusal messages.

The criterion, per output: ``max|cnnlab - reference| <= 1e-3 * max|reference| + 1e-4``, and for a
2-D or 3-D output (classes on the last axis) the same arg-max along the last axis wherever the
reference's top value stands clear of the runner-up by more than that tolerance.
"""

import collections
import re

import numpy as np

RTOL = 1e-3
ATOL = 1e-4

# exceptions by which cnnlab declines a model or an input: a refusal, not a crash
REFUSALS = (NotImplementedError, ValueError, TypeError)


def op_histogram(proto):
    """``Counter`` of the op types of the main graph's nodes."""
    return collections.Counter(node.op_type for node in proto.graph.node)


def missing_ops(histogram):
    """The op types of the histogram that cnnlab.onnx has no converter for (sorted), or None when
    cnnlab.onnx cannot say."""
    try:
        import cnnlab.onnx

        supported = cnnlab.onnx.supported_ops()
    except Exception:
        return None
    return sorted(set(histogram) - set(supported) - {"Constant"})


def missing_ops_lines(per_file):
    """Markdown lines ``- op: N files`` for ``{file: missing op types}``, most files first."""
    counts = collections.Counter(op for ops in per_file.values() if ops for op in ops)
    return [f"- {op}: {n} file{'s' if n > 1 else ''}" for op, n in counts.most_common()]


def histogram_text(histogram):
    return ", ".join(f"{op} {n}" for op, n in histogram.most_common())


def describe_error(exc):
    """``'refused'`` or ``'error'`` and a one-line message for an exception from cnnlab."""
    kind = "refused" if isinstance(exc, REFUSALS) else "error"
    message = one_line(exc) or "(no message)"
    return kind, f"{type(exc).__name__}: {message}"


def one_line(exc):
    """The exception's message on one line, without terminal colour codes."""
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())


def load_cnnlab(source):
    """``(model, None)``, or ``(None, (kind, message))`` when cnnlab.onnx.load raises."""
    try:
        import cnnlab.onnx

        return cnnlab.onnx.load(source), None
    except Exception as exc:  # every failure is a row of the table
        return None, describe_error(exc)


def run_cnnlab(model, inputs):
    """cnnlab's outputs for the list of input arrays, as a list of NumPy arrays on the host."""
    result = model(*inputs)
    outputs = list(result) if isinstance(result, (tuple, list)) else [result]
    host = []
    for value in outputs:
        if hasattr(value, "get") and not isinstance(value, np.ndarray):  # a device array
            value = value.get()
        host.append(np.asarray(value))
    return host


def compare(got, expected):
    """``(max |diff| over the outputs, passed, note)`` for lists of output arrays."""
    if len(got) != len(expected):
        return float("nan"), False, f"{len(got)} outputs, onnxruntime gives {len(expected)}"
    worst = 0.0
    notes = []
    for i, (g, e) in enumerate(zip(got, expected)):
        e = np.asarray(e)
        if g.shape != e.shape:
            notes.append(f"output {i}: shape {g.shape}, onnxruntime {e.shape}")
            worst = float("nan")
            continue
        if e.size == 0:
            continue
        g64 = g.astype(np.float64)
        e64 = e.astype(np.float64)
        if not np.all(np.isfinite(g64)):
            notes.append(f"output {i}: non-finite values")
            worst = float("nan")
            continue
        diff = float(np.abs(g64 - e64).max())
        tolerance = RTOL * float(np.abs(e64).max()) + ATOL
        worst = max(worst, diff) if worst == worst else worst
        if diff > tolerance:
            notes.append(f"output {i}: max diff {diff:.3g} > {tolerance:.3g}")
        if e.ndim in (2, 3) and e.shape[-1] >= 2:
            # a class differs only where the reference's best stands clear of cnnlab's choice
            chosen = np.take_along_axis(e64, g64.argmax(axis=-1)[..., None], axis=-1)[..., 0]
            flipped = int(np.count_nonzero(e64.max(axis=-1) - chosen > tolerance))
            if flipped:
                notes.append(f"output {i}: arg-max differs at {flipped} of {chosen.size} rows")
    return worst, not notes, "; ".join(notes)


def reason_key(message):
    """A refusal message without the node's name, so that the same wall in many files groups."""
    text = re.sub(r"^\w+: ", "", message)
    match = re.match(r"ONNX (\S+) node '[^']*': (.*)", text)
    if match:
        text = f"{match.group(1)}: {match.group(2)}"
    text = re.sub(r"graph input '[^']*'", "graph input", text)
    return text[:160]


def group_reasons(messages):
    """Markdown lines ``- N × reason`` for the messages, most frequent first."""
    counts = collections.Counter(reason_key(m) for m in messages if m)
    return [f"- {n} × {reason}" for reason, n in counts.most_common()]


def fmt(value, spec=".2e"):
    if value is None:
        return ""
    if isinstance(value, float) and value != value:
        return "nan"
    return format(value, spec)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)
