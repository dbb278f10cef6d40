"""Where onnxruntime's time goes on a network: its own profile, by kind of node.

    python bench/ort_profile.py MODEL.onnx [--batch 1] [--size 224] [--calls 8] [--threads 2] [--top 0]
                                [--denormal-as-zero]

Runs the ONNX file in onnxruntime (CPU, ``--threads`` intra-op threads, one inter-op) on a
random ``(batch, 3, size, size)`` float32 input, ``--calls`` times with its profiler on
(``SessionOptions.enable_profiling``), and sums each node's median kernel time by kind: 1x1
convolutions, depthwise ones (one input channel a filter), other convolutions, and the other
nodes (in microseconds a call), as onnxruntime's graph runs them (its layout changes included).
``--top N`` also prints the N largest convolutions by (input, weight) shape, their times summed
over the nodes of that shape, as ``bench/conv_layers.py`` prints cnnlab's (for its split by path).
``--denormal-as-zero`` sets onnxruntime's ``session.set_denormal_as_zero`` (its threads read
denormals as zero and flush them, as cnnlab's convolutions do: docs/kernels.md, "Denormals").
"""

import argparse
import collections
import json
import os
import statistics
import tempfile

import numpy as np


def node_shapes(event):
    """The input and weight shapes of a convolution's kernel-time event (its input types)."""
    shapes = [next(iter(shape.values())) for shape in event["args"].get("input_type_shape", [])]
    return tuple(shapes[0][1:]) if shapes else (), tuple(shapes[1]) if len(shapes) > 1 else ()


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
    parser.add_argument("--top", type=int, default=0, help="print the N largest convolutions by shape")
    parser.add_argument("--denormal-as-zero", action="store_true", help="onnxruntime's session.set_denormal_as_zero")
    args = parser.parse_args()
    if min(args.batch, args.size, args.calls, args.threads) < 1 or args.top < 0:
        parser.error("--batch, --size, --calls and --threads must be at least 1, --top at least 0")
    if not os.path.isfile(args.model):
        parser.error(f"no file {args.model}")
    try:
        import onnxruntime
    except ImportError:
        parser.error("needs onnxruntime (pip install onnxruntime)")

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    options.enable_profiling = True
    if args.denormal_as_zero:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = onnxruntime.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.size, args.size)).astype(np.float32)
    for _ in range(args.calls):
        session.run(None, {session.get_inputs()[0].name: x})
    with open(session.end_profiling()) as file:
        events = json.load(file)
    times, kinds, shapes = collections.defaultdict(list), {}, {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[event["name"]].append(event["dur"])
            kinds[event["name"]] = node_kind(event)
            shapes[event["name"]] = node_shapes(event)
    totals, by_shape = collections.Counter(), collections.Counter()
    for name, durations in times.items():
        totals[kinds[name]] += statistics.median(durations)
        if kinds[name] != "other":
            by_shape[shapes[name]] += statistics.median(durations)
    print(f"{args.model}, batch {args.batch}, {args.threads} threads: {sum(totals.values()):.0f} us of nodes a call")
    for kind in ("1x1", "depthwise", "conv", "other"):
        print(f"  {kind:10s} {totals[kind]:10.0f} us")
    if args.top:
        print("largest convolutions (us a call): input, weight")
        for (input_shape, weight_shape), spent in by_shape.most_common(args.top):
            print(f"  {spent:10.1f}  {input_shape} {weight_shape}")


if __name__ == "__main__":
    main()
