"""Where onnxruntime's time goes on a network: its own profile, by kind of node.

    python bench/ort_profile.py MODEL.onnx [--batch 1] [--size 224] [--calls 8] [--threads 2]

Runs the ONNX file in onnxruntime (CPU, ``--threads`` intra-op threads, one inter-op) on a
random ``(batch, 3, size, size)`` float32 input, ``--calls`` times with its profiler on
(``SessionOptions.enable_profiling``), and sums each node's median kernel time by kind: 1x1
convolutions, depthwise ones (one input channel a filter), other convolutions, and the other
nodes (in microseconds a call), as onnxruntime's graph runs them (its layout changes included).
For the same split of cnnlab's convolutions, ``bench/conv_layers.py`` (by path).
"""

import argparse
import collections
import json
import os
import statistics
import tempfile

import numpy as np


def node_kind(event):
    """'1x1', 'depthwise', 'conv' or 'other' for a node's kernel-time event."""
    arguments = event["args"]
    if arguments.get("op_name") != "Conv":
        return "other"
    shapes = [next(iter(shape.values())) for shape in arguments.get("input_type_shape", [])]
    weight = shapes[1] if len(shapes) > 1 else []
    if len(weight) == 4 and weight[2:] == [1, 1]:
        return "1x1"
    if len(weight) == 4 and weight[1] == 1:
        return "depthwise"
    return "conv"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if min(args.batch, args.size, args.calls, args.threads) < 1:
        parser.error("--batch, --size, --calls and --threads must be at least 1")
    if not os.path.isfile(args.model):
        parser.error(f"no file {args.model}")
    try:
        import onnxruntime
    except ImportError:
        parser.error("needs onnxruntime (pip install onnxruntime)")

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = onnxruntime.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    for _ in range(args.calls):
        session.run(None, {session.get_inputs()[0].name: x})
    with open(session.end_profiling()) as file:
        events = json.load(file)
    times, kinds = collections.defaultdict(list), {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["name"]].append(event["dur"])
            kinds[event["name"]] = node_kind(event)
    totals = collections.Counter()
    for name, durations in times.items():
        totals[kinds[name]] += statistics.median(durations)
    print(f"{args.model}, batch {args.batch}, {args.threads} threads: {sum(totals.values()):.0f} us of nodes a call")
    for kind in ("1x1", "depthwise", "conv", "other"):
        print(f"  {kind:10s} {totals[kind]:10.0f} us")


if __name__ == "__main__":
    main()
