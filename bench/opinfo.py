"""PyTorch's own OpInfo samples for the functional ops cnnlab implements, run through
cnnlab.functional and compared with PyTorch (float32, CPU).

    pip install torch==2.14.1 expecttest hypothesis   # torch.testing._internal needs the last two
    python bench/opinfo.py [--ops conv2d max_pool2d ...] [--examples 3] [--json out.json]

Each sample of ``torch.testing._internal.common_methods_invocations.op_db`` for the ops in OPS
(every variant but ``without_cudnn``, a copy, and ``complex``) is bound to the torch signature's
parameter names and passed to the cnnlab.functional counterpart (MAPPERS; an op cnnlab.functional
lacks is looked up by its PyTorch name first, so a new ``F.elu`` or ``F.pad`` is picked up). A
sample is

- pass: same shapes, every value within ``1e-4 * max(1, max|torch|)`` (NaN where torch has NaN,
  integer outputs such as max-pooling indices equal);
- wrong: cnnlab answers, but not that;
- refused: cnnlab raises ValueError, TypeError or NotImplementedError (its message is recorded),
  or cnnlab.functional has no counterpart at all ("no cnnlab function");
- error: cnnlab raises anything else;
- skipped: the result is random (dropout in training with 0 < p < 1).

Prints per-op counts and totals, the refusal reasons grouped by count (digits folded to ``#``,
one example message each) and the first wrong samples.
"""

import argparse
import collections
import json
import re
import sys

import numpy as np

OPS = ["nn.functional.conv2d", "nn.functional.conv_transpose2d", "nn.functional.max_pool2d",
       "nn.functional.avg_pool2d", "nn.functional.lp_pool2d", "nn.functional.adaptive_avg_pool2d",
       "nn.functional.relu", "nn.functional.leaky_relu", "nn.functional.elu", "nn.functional.selu",
       "nn.functional.gelu", "sigmoid", "tanh", "nn.functional.hardswish", "nn.functional.hardsigmoid",
       "nn.functional.silu", "nn.functional.softplus", "softmax", "log_softmax", "nn.functional.linear",
       "nn.functional.batch_norm", "nn.functional.layer_norm", "nn.functional.group_norm",
       "nn.functional.instance_norm", "nn.functional.interpolate", "nn.functional.pad", "nn.functional.dropout"]
SKIPPED_VARIANTS = {"without_cudnn", "complex"}

# the parameter names of each op's torch signature, to bind the samples' positional arguments
SIGNATURES = {
    "conv2d": ["input", "weight", "bias", "stride", "padding", "dilation", "groups"],
    "conv_transpose2d": ["input", "weight", "bias", "stride", "padding", "output_padding", "groups", "dilation"],
    "max_pool2d": ["input", "kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"],
    "avg_pool2d": ["input", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"],
    "lp_pool2d": ["input", "norm_type", "kernel_size", "stride", "ceil_mode"],
    "adaptive_avg_pool2d": ["input", "output_size"],
    "relu": ["input", "inplace"],
    "leaky_relu": ["input", "negative_slope", "inplace"],
    "elu": ["input", "alpha", "inplace"],
    "selu": ["input", "inplace"],
    "gelu": ["input", "approximate"],
    "sigmoid": ["input"],
    "tanh": ["input"],
    "hardswish": ["input", "inplace"],
    "hardsigmoid": ["input", "inplace"],
    "silu": ["input", "inplace"],
    "softplus": ["input", "beta", "threshold"],
    "softmax": ["input", "dim", "dtype"],
    "log_softmax": ["input", "dim", "dtype"],
    "linear": ["input", "weight", "bias"],
    "batch_norm": ["input", "running_mean", "running_var", "weight", "bias", "training", "momentum", "eps"],
    "layer_norm": ["input", "normalized_shape", "weight", "bias", "eps"],
    "group_norm": ["input", "num_groups", "weight", "bias", "eps"],
    "instance_norm": ["input", "running_mean", "running_var", "weight", "bias", "use_input_stats", "momentum", "eps"],
    "interpolate": ["input", "size", "scale_factor", "mode", "align_corners", "recompute_scale_factor", "antialias"],
    "pad": ["input", "pad", "mode", "value"],
    "dropout": ["input", "p", "training", "inplace"],
}


class NoCounterpart(NotImplementedError):
    """cnnlab.functional has nothing that computes this (sample)."""


class Random(Exception):
    """The sample's result is random: nothing to compare."""


def drop(a, *names):
    return {k: v for k, v in a.items() if k not in names}


def counterpart(F, name):
    if not hasattr(F, name):
        raise NoCounterpart(f"no cnnlab function: cnnlab.functional has no {name}")
    return getattr(F, name)


def m_conv2d(F, a):
    return F.conv2d(a.pop("input"), **a)


def m_conv_transpose2d(F, a):
    return F.conv_transpose2d(a.pop("input"), **a)


def m_max_pool2d(F, a):
    return F.max_pool2d(a.pop("input"), **a)


def m_avg_pool2d(F, a):
    return F.avg_pool2d(a.pop("input"), **a)


def m_lp_pool2d(F, a):
    if hasattr(F, "lp_pool2d"):
        return F.lp_pool2d(a.pop("input"), **a)
    if float(a.get("norm_type", 2)) != 2:
        raise NoCounterpart(f"no cnnlab function: pool2d(mode='lp') is the L2 norm, norm_type={a['norm_type']}")
    return F.pool2d(a["input"], a["kernel_size"], a.get("stride"), mode="lp", ceil_mode=a.get("ceil_mode", False))


def m_adaptive_avg_pool2d(F, a):
    if hasattr(F, "adaptive_avg_pool2d"):
        return F.adaptive_avg_pool2d(a.pop("input"), **a)
    x, size = a["input"], a["output_size"]
    size = (size, size) if isinstance(size, int) or size is None else tuple(size)
    h, w = x.shape[-2:]
    oh, ow = (h if size[0] is None else size[0]), (w if size[1] is None else size[1])
    if (oh, ow) == (1, 1):
        return F.global_avg_pool2d(x).reshape(x.shape[:-2] + (1, 1))
    if oh and ow and h % oh == 0 and w % ow == 0:
        return F.avg_pool2d(x, (h // oh, w // ow))
    raise NoCounterpart(f"no cnnlab function: adaptive_avg_pool2d to {oh}x{ow} of {h}x{w} (not a global or an "
                        "even pooling)")


def unary(name):
    def mapper(F, a):
        return counterpart(F, name)(a.pop("input"), **drop(a, "inplace"))
    return mapper


def m_softmax(name):
    def mapper(F, a):
        x = a["input"]
        if a.get("dtype") is not None:
            x = x.astype(a["dtype"])
        return getattr(F, name)(x, axis=a["dim"])
    return mapper


def m_linear(F, a):
    return F.linear(a.pop("input"), **a)


def m_batch_norm(F, a):
    x = a["input"]
    channels = x.shape[1] if x.ndim > 1 else 0
    gamma = a.get("weight") if a.get("weight") is not None else np.ones(channels, x.dtype)
    beta = a.get("bias") if a.get("bias") is not None else np.zeros(channels, x.dtype)
    if a.get("training", False):
        return F.batch_norm2d(x, gamma, beta, a.get("eps", 1e-5))[0]
    return F.batch_norm2d(x, gamma, beta, a.get("eps", 1e-5), a["running_mean"], a["running_var"])[0]


def m_layer_norm(F, a):
    return F.layer_norm(a.pop("input"), **a)


def m_group_norm(F, a):
    return F.group_norm(a.pop("input"), **a)


def m_instance_norm(F, a):
    if hasattr(F, "instance_norm"):
        return F.instance_norm(a.pop("input"), **a)
    x = a["input"]
    if not a.get("use_input_stats", True):
        return m_batch_norm(F, {**a, "training": False})
    return F.group_norm(x, x.shape[1], a.get("weight"), a.get("bias"), a.get("eps", 1e-5))


def m_interpolate(F, a):
    extra = {k: a[k] for k in ("recompute_scale_factor", "antialias") if a.get(k)}
    return F.interpolate(a["input"], a.get("size"), a.get("scale_factor"), a.get("mode", "nearest"),
                         a.get("align_corners"), **extra)


def m_pad(F, a):
    return counterpart(F, "pad")(a.pop("input"), **a)


def m_dropout(F, a):
    p, training = a.get("p", 0.5), a.get("training", True)
    if training and 0 < p < 1:
        raise Random("dropout in training")
    return F.dropout(a["input"], p if training else 0.0, 0)[0]


MAPPERS = {
    "conv2d": m_conv2d, "conv_transpose2d": m_conv_transpose2d, "max_pool2d": m_max_pool2d,
    "avg_pool2d": m_avg_pool2d, "lp_pool2d": m_lp_pool2d, "adaptive_avg_pool2d": m_adaptive_avg_pool2d,
    "relu": unary("relu"), "leaky_relu": unary("leaky_relu"), "elu": unary("elu"), "selu": unary("selu"),
    "gelu": unary("gelu"), "sigmoid": unary("sigmoid"), "tanh": unary("tanh"), "hardswish": unary("hardswish"),
    "hardsigmoid": unary("hardsigmoid"), "silu": unary("silu"), "softplus": unary("softplus"),
    "softmax": m_softmax("softmax"), "log_softmax": m_softmax("log_softmax"), "linear": m_linear,
    "batch_norm": m_batch_norm, "layer_norm": m_layer_norm, "group_norm": m_group_norm,
    "instance_norm": m_instance_norm, "interpolate": m_interpolate, "pad": m_pad, "dropout": m_dropout,
}


# ---------------------------------------------------------------- running the samples


def to_numpy(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy().copy()
    if isinstance(value, torch.dtype):
        return torch.empty((), dtype=value).numpy().dtype
    if isinstance(value, torch.Size):
        return tuple(value)
    if isinstance(value, list):
        return [to_numpy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(to_numpy(v) for v in value)
    return value


def outputs_of(value):
    if isinstance(value, (tuple, list)):
        return [np.asarray(to_numpy(v)) for v in value]
    return [np.asarray(to_numpy(value))]


def host(value):
    if hasattr(value, "get") and not isinstance(value, np.ndarray):
        value = value.get()
    return np.asarray(value)


def verdict(got, expected):
    """None when the outputs agree, else what differs."""
    if len(got) != len(expected):
        return f"{len(got)} outputs, torch gives {len(expected)}"
    for i, (g, e) in enumerate(zip(got, expected)):
        if g.shape != e.shape:
            return f"output {i}: shape {g.shape}, torch {e.shape}"
        if e.size == 0:
            continue
        if e.dtype.kind in "iub":
            if not np.array_equal(g, e):
                return f"output {i}: {int(np.count_nonzero(g != e))} of {e.size} integers differ"
            continue
        g64, e64 = g.astype(np.float64), e.astype(np.float64)
        finite = np.isfinite(e64)
        scale = max(1.0, float(np.abs(e64[finite]).max()) if finite.any() else 1.0)
        close = np.isclose(g64, e64, rtol=0, atol=1e-4 * scale, equal_nan=True)
        if not close.all():
            diff = np.abs(g64 - e64)[~close]
            return f"output {i}: {int((~close).sum())} of {e.size} values differ (max {float(np.nanmax(diff)):.3g})"
    return None


def describe(sample_args):
    parts = []
    for k, v in sample_args.items():
        if isinstance(v, np.ndarray):
            parts.append(f"{k}={v.dtype.name}{list(v.shape)}")
        else:
            parts.append(f"{k}={v!r}")
    return ", ".join(parts)


def run(ops, examples):
    import torch
    from torch.testing._internal.common_methods_invocations import op_db

    import cnnlab.functional as F

    torch.manual_seed(0)
    results = collections.defaultdict(collections.Counter)
    reasons = collections.defaultdict(list)
    wrong = collections.defaultdict(list)
    by_name = collections.defaultdict(list)
    for info in op_db:
        by_name[info.name].append(info)
    for full in ops:
        short = full.split(".")[-1]
        if full not in by_name:
            results[short]["no OpInfo"] += 1
            continue
        for info in by_name[full]:
            if info.variant_test_name in SKIPPED_VARIANTS:
                continue
            label = short + (f".{info.variant_test_name}" if info.variant_test_name else "")
            print(label, file=sys.stderr, flush=True)
            for sample in info.sample_inputs("cpu", torch.float32):
                names = SIGNATURES[short]
                args = dict(zip(names, [sample.input, *sample.args]))
                args.update(sample.kwargs)
                args = {k: to_numpy(v) for k, v in args.items()}
                shown = describe(args)
                try:
                    expected = outputs_of(info(sample.input, *sample.args, **sample.kwargs))
                except Exception:
                    results[label]["torch fails"] += 1
                    continue
                try:
                    got = MAPPERS[short](F, dict(args))
                except Random:
                    results[label]["skipped"] += 1
                    continue
                except (ValueError, TypeError, NotImplementedError) as exc:
                    results[label]["refused"] += 1
                    kind = "" if isinstance(exc, NoCounterpart) else f"{type(exc).__name__}: "
                    reasons[label].append((kind + " ".join(str(exc).split()), shown))
                    continue
                except Exception as exc:
                    results[label]["error"] += 1
                    reasons[label].append((f"(error) {type(exc).__name__}: {' '.join(str(exc).split())}", shown))
                    continue
                got = [host(g) for g in (got if isinstance(got, (tuple, list)) else [got])]
                problem = verdict(got, expected)
                if problem is None:
                    results[label]["pass"] += 1
                else:
                    results[label]["wrong"] += 1
                    wrong[label].append(f"{shown}: {problem}")
    return results, reasons, wrong


def fold(message):
    return re.sub(r"(?<![A-Za-z_])\d+", "#", message)[:200]


def report(results, reasons, wrong, examples):
    columns = ["pass", "wrong", "refused", "error", "skipped", "torch fails"]
    print("| op | samples | " + " | ".join(columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    totals = collections.Counter()
    for label, counts in results.items():
        if counts.get("no OpInfo"):
            print(f"| {label} | no OpInfo entry in this PyTorch |" + " |" * len(columns))
            continue
        samples = sum(counts.values())
        totals.update(counts)
        print(f"| {label} | {samples} | " + " | ".join(str(counts.get(c, 0)) for c in columns) + " |")
    samples = sum(totals.values())
    print(f"| **all** | **{samples}** | " + " | ".join(f"**{totals.get(c, 0)}**" for c in columns) + " |")
    compared = samples - totals.get("skipped", 0) - totals.get("torch fails", 0)
    if compared:
        print(f"\n{totals['pass']} of {compared} compared samples pass ({100 * totals['pass'] / compared:.1f} %), "
              f"{totals['wrong']} wrong, {totals['refused']} refused, {totals['error']} errors.")
    everything = collections.Counter()
    example = {}
    for label, items in reasons.items():
        for message, shown in items:
            key = fold(message)
            everything[key] += 1
            example.setdefault(key, f"{label}({shown})")
    if everything:
        print("\nRefusal reasons over all ops, by count (digits folded to #; one sample each):\n")
        for key, n in everything.most_common():
            print(f"- {n} × {key}\n  e.g. {example[key][:300]}")
        print("\nPer op, the reasons:\n")
        for label, items in reasons.items():
            counts = collections.Counter(fold(m) for m, _ in items)
            print(f"- {label}: " + "; ".join(f"{n} × {k}" for k, n in counts.most_common()))
    if wrong:
        print("\nWrong samples (first of each op):\n")
        for label, items in wrong.items():
            for item in items[:examples]:
                print(f"- {label}({item[:400]})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", nargs="*", default=OPS,
                        help="OpInfo names or their last part (conv2d, softmax, ...)")
    parser.add_argument("--examples", type=int, default=3, help="wrong samples shown per op")
    parser.add_argument("--json", help="also write the counts and messages here")
    args = parser.parse_args()
    full_names = {name.split(".")[-1]: name for name in OPS}
    ops = [full_names.get(name, name) for name in args.ops]
    results, reasons, wrong = run(ops, args.examples)
    report(results, reasons, wrong, args.examples)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"counts": results, "reasons": reasons, "wrong": wrong}, handle, indent=1)


if __name__ == "__main__":
    main()
