"""What ``cnnlab bench`` shows and writes: the tables of the suites' rows, the ratios chart,
and the report files (``--json``, ``--plot``)."""

import json
import math

from .. import viz

RATIO_NOTE = "ratio = cnnlab time / peer time: below 1 means cnnlab is faster"


def format_ratio(ratio):
    """``0.42x``; small ratios keep two significant digits (``0.0031x``), never ``0.00x``."""
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def geometric_mean(values):
    values = [v for v in values if v and v > 0]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else float("nan")


def format_table(rows):
    """A plain-text table: time, spread, JIT, throughput and the ratio to every peer ('-' where a
    row has no such peer), under one line saying which way a ratio reads."""
    peers = sorted({peer for row in rows for peer in row["peers"]})
    header = ["op", "shape", "cnnlab ms", "spread ms", "jit s", "rate"] + [f"vs {p}" for p in peers]
    lines = [header]
    for row in rows:
        if "peak_bytes" in row:
            rate = (f"peak +{row['peak_bytes'] / 2**20:.1f} MiB (output {row['output_bytes'] / 2**20:.1f} MiB, "
                    f"input {row['input_bytes'] / 2**20:.1f} MiB)")
        elif "import_seconds" in row:
            rate = f"import {row['import_seconds']:.2f} s + first conv2d {row['jit_seconds']:.2f} s"
        elif "gflops" in row:
            rate = f"{row['gflops']:.1f} GFLOP/s"
        elif "gbytes" in row:
            rate = f"{row['gbytes']:.2f} GB/s"
        else:
            rate = f"{row['samples_per_second']:,.0f} samples/s"
        line = [row["op"], row["shape"], f"{row['seconds'] * 1e3:.2f}", f"{row['spread'] * 1e3:.2f}",
                f"{row['jit_seconds']:.2f}", rate]
        for peer in peers:
            t = row["peers"].get(peer)
            line.append(format_ratio(row["seconds"] / t) if t else "-")
        lines.append(line)
    for op in sorted({row["op"] for row in rows}):
        op_rows = [r for r in rows if r["op"] == op]
        if len(op_rows) > 1 and any(r["peers"] for r in op_rows):
            line = [op, "geomean", "", "", "", ""]
            for peer in peers:
                ratios = [r["seconds"] / r["peers"][peer] for r in op_rows if r["peers"].get(peer)]
                line.append(format_ratio(geometric_mean(ratios)) if ratios else "-")
            lines.append(line)
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    table = "\n".join("  ".join(str(v).rjust(w) for v, w in zip(line, widths)) for line in lines)
    return f"{RATIO_NOTE}\n{table}" if peers else table


MODEL_ENGINES = ("cnnlab", "unfused", "torch", "onnxruntime")


def _milliseconds(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def format_models_table(rows):
    """The rows of :func:`cnnlab.bench.networks.inference_rows` and ``training_rows``: each
    engine's median in ms, cnnlab's ratios to PyTorch and onnxruntime, and the Python overhead
    of the inference plan (share of the run, microseconds per step)."""
    header = ["row", "cnnlab ms", "unfused ms", "torch ms", "onnxruntime ms", "vs torch", "vs onnxruntime",
              "py overhead", "per step", "error"]
    lines = [header]
    for row in rows:
        times = [row["seconds"]] + [row["peers"].get(peer) for peer in MODEL_ENGINES[1:]]
        ratios = [format_ratio(row["seconds"] / row["peers"][peer]) if row["peers"].get(peer) else "-"
                  for peer in ("torch", "onnxruntime")]
        overhead = (f"{100 * row['overhead_fraction']:.1f}%", f"{row['overhead_per_step'] * 1e6:.0f} us") \
            if "overhead_fraction" in row else ("-", "-")
        error = f"{row['relative_error']:.0e}" if row.get("relative_error") is not None else "-"
        lines.append([f"{row['op']} {row['shape']}"] + [_milliseconds(t) for t in times] + ratios
                     + list(overhead) + [error])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    table = "\n".join("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(line, widths)))
                      for line in lines)
    return f"{RATIO_NOTE}\n{table}"


def format_models(results):
    """:func:`cnnlab.bench.networks.models_suite`'s results: one table per OpenBLAS setting,
    then, with two settings, cnnlab's ratios under both side by side."""
    parts = []
    for result in results:
        title = ("this environment's OpenBLAS setting" if result["openblas"] == "environment"
                 else "OpenBLAS's own kernel choice (OPENBLAS_CORETYPE, OPENBLAS_L2_SIZE unset)")
        # (the threading layer: without the tbb package, Numba's OpenMP pool spins after its loops)
        layer = f", Numba's {result['threading']} threading layer" if result.get("threading") else ""
        parts.append(f"{title}: GEMMs on {result['blas']}{layer}\n{format_models_table(result['rows'])}")
    if len(results) == 2:
        lines = ["cnnlab / peer under both settings (environment | own choice):"]
        own = {(row["op"], row["shape"]): row for row in results[1]["rows"]}
        for row in results[0]["rows"]:
            other = own.get((row["op"], row["shape"]))
            if other is None:
                continue
            cells = []
            for peer in ("torch", "onnxruntime"):
                if row["peers"].get(peer) and other["peers"].get(peer):
                    cells.append(f"vs {peer} {format_ratio(row['seconds'] / row['peers'][peer])} | "
                                 f"{format_ratio(other['seconds'] / other['peers'][peer])}")
            lines.append(f"  {row['op']} {row['shape']}: {_milliseconds(row['seconds'])} | "
                         f"{_milliseconds(other['seconds'])} ms" + "".join(f", {c}" for c in cells))
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def format_dask_table(rows):
    """The table of :func:`cnnlab.bench.filtering.dask_suite`: one line per method, then the ratios
    and the agreement."""
    ours = rows[0]
    header = ["method", "first s", "median s", "spread s", "Mpixel/s", "peak memory"]
    lines = [header]
    for row in rows:
        if "worker_peak_bytes" in row:
            peaks, held, idle = (", ".join(f"{b / 2**20:,.0f}" for b in row[key]) for key in
                                 ("worker_peak_bytes", "worker_held_bytes", "worker_idle_bytes"))
            memory = f"per worker {peaks} MiB (idle {idle}; holding the image {held})"
        else:
            memory = (f"+{row['peak_increase_bytes'] / 2**20:,.0f} MiB over the image's "
                      f"{row['image_bytes'] / 2**20:,.0f} MiB (this process)")
        lines.append([row["method"], f"{row['first_seconds']:.2f}", f"{row['seconds']:.3f}",
                      f"{row['spread']:.3f}", f"{row['mpixels_per_second']:,.0f}", memory])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(v.ljust(w) if i in (0, 5) else v.rjust(w)
                      for i, (v, w) in enumerate(zip(line, widths))).rstrip() for line in lines]
    for peer, seconds in ours["peers"].items():
        text.append(f"cnnlab-dask / {peer}: {format_ratio(ours['seconds'] / seconds)}")
    for name in ours.get("missing", []):
        text.append(f"{name}: not installed, not timed")
    check = ", ".join(f"{name} {d:.2g}" for name, d in ours["agreement"].items())
    size = ours["check_size"]
    text.append(f"max |cnnlab-dask - other|, {size}x{size} check image: {check}")
    for name, d in ours.get("agreement_full", {}).items():
        text.append(f"max |cnnlab-dask - {name}|, whole image: {d:.2g}")
    return "\n".join(text)


def format_memory(rows):
    """The rows of :func:`cnnlab.bench.networks.memory_rows` as lines of text."""
    if not rows:
        return "peak memory: not measured (needs Linux /proc)"
    lines = ["peak memory of one inference (rise of resident memory during the call):"]
    for row in rows:
        lines.append(f"  {row['network']} b{row['batch']}: unfused +{row['unfused_peak_bytes'] / 2**20:,.0f} MiB, "
                     f"fused +{row['fused_peak_bytes'] / 2**20:,.0f} MiB, and "
                     f"{row['pool_bytes'] / 2**20:,.0f} MiB kept by the buffer pool between calls "
                     f"(input {row['input_bytes'] / 2**20:,.1f} MiB)")
    return "\n".join(lines)


def format_training_memory(rows):
    """The rows of :func:`cnnlab.bench.networks.training_memory_rows` as lines of text."""
    if not rows:
        return "training memory: not measured (needs Linux /proc)"
    lines = ["memory of training steps, each engine in a process of its own (the rise of resident memory during a "
             "later run of the steps; in brackets the peak over the process before the network was built):"]
    for row in rows:
        parts = [f"{name} +{m['step_bytes'] / 2**20:,.0f} MiB ({m['total_bytes'] / 2**20:,.0f} MiB)"
                 for name, m in row["engines"].items()]
        lines.append(f"  {row['label']}: " + ", ".join(parts))
    return "\n".join(lines)


def plot_ratios(rows, path):
    """A bar chart of every row's ratio to each peer (log scale; below 1 = cnnlab faster)."""
    plt = viz.pyplot()
    labels, ratios, peers = [], [], []
    for row in rows:
        for peer, seconds in row["peers"].items():
            if seconds:
                labels.append(f"{row['op']} {row['shape']}")
                ratios.append(row["seconds"] / seconds)
                peers.append(peer)
    figure, axis = plt.subplots(figsize=(max(6, 0.45 * len(ratios) + 2), 4))
    colours = {peer: colour for peer, colour in zip(sorted(set(peers)), ["tab:blue", "tab:orange", "tab:green",
                                                                         "tab:red"])}
    axis.bar(range(len(ratios)), ratios, color=[colours[p] for p in peers])
    axis.axhline(1.0, color="black", linewidth=0.8)
    axis.set_yscale("log")
    axis.set_xticks(range(len(ratios)), [f"{label}\nvs {p}" for label, p in zip(labels, peers)], rotation=60,
                    ha="right", fontsize=7)
    axis.set_ylabel("cnnlab time / peer time")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def save_report(rows, threads, device, json_path=None, plot_path=None, **extra):
    """Write the rows to ``json_path`` (``{threads, device, rows, **extra}``) and their ratios
    chart to ``plot_path``, where given, saying so for each on stdout."""
    if json_path:
        with open(json_path, "w") as handle:
            json.dump(dict(threads=threads, device=device, rows=rows, **extra), handle, indent=2)
        print(f"results written to {json_path}")
    if plot_path:
        print(f"ratios plotted in {plot_ratios(rows, plot_path)}")
