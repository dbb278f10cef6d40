"""timm's CNN families through both PyTorch ONNX exporters, checked against onnxruntime.

Export (needs torch, timm, onnx, onnxruntime and onnxscript; not cnnlab):

    pip install torch==2.14.1 torchvision==0.29.1 onnx onnxruntime onnxscript timm
    python bench/timm_zoo.py --export OUT [--size 64] [--models convnext_atto ...] [--exporters legacy dynamo]
                             [--timeout 900] [--force]

Check (needs cnnlab, onnx and onnxruntime; not torch):

    python bench/timm_zoo.py --check OUT [--json rows.json]

``--export`` builds each model of MODELS with random weights, BatchNorm running statistics, scales
and shifts set to random values (variances positive), in eval mode, and writes one file per
model x exporter x fixed/dynamic height and width into OUT, named ``MODEL__EXPORTER__DIMS.onnx``:

- ``legacy``: ``torch.onnx.export(dynamo=False, opset_version=17)``, the batch axis dynamic
  (``fixed``) or batch, height and width dynamic (``dynamic``) through ``dynamic_axes``;
- ``dynamo``: ``torch.onnx.export(dynamo=True, external_data=False)``, the batch axis dynamic
  (``fixed``) or also height and width (multiples of 32) through ``dynamic_shapes``.

Beside each file, ``MODEL__EXPORTER__DIMS.npz`` holds the reference cases: ``b1_x`` (batch 1 at
--size) and, where the file takes it, ``b2_x`` (batch 2; at (--size + 32) x (--size + 64) for
dynamic height and width), and onnxruntime's outputs ``b1_y0, b1_y1, ...``. ``manifest.json``
records what each export did, and export failures. Each export runs in a process of its own,
stopped after --timeout seconds (the dynamo export of tf_efficientnetv2_b0 with dynamic height
and width takes about 6 minutes on two cores); a later run skips what the manifest records
unless --force.

``--check`` loads every ``*.onnx`` under OUT (subfolders included, e.g. the Keras files of
bench/keras_onnx.py) with cnnlab.onnx.load, runs the stored inputs and compares with the
stored outputs (bench/zoo_common.py: ``max|diff| <= 1e-3 * max|ref| + 1e-4`` and the same
arg-max class), and prints a markdown table and the refusal reasons grouped by count.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import time
import traceback

import numpy as np

MODELS = ["convnext_atto", "efficientnet_b0", "tf_efficientnetv2_b0", "ghostnet_100", "resnest14d",
          "hrnet_w18_small", "mobilenetv3_small_100", "mobilenetv4_conv_small", "regnetx_002", "repvgg_a0",
          "ese_vovnet19b_dw"]
EXPORTERS = ["legacy", "dynamo"]


# ---------------------------------------------------------------- export (torch)


def randomize_batch_norm(net, generator):
    import torch

    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                channels = module.num_features
                module.running_mean.copy_(torch.randn(channels, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(channels, generator=generator) + 0.5)
                if module.weight is not None:
                    module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
                    module.bias.copy_(torch.randn(channels, generator=generator) * 0.2)


def export_one(net, name, exporter, dynamic, size, folder):
    """Write ``name__exporter__dims.onnx``; returns the export's record for the manifest."""
    import torch

    stem = f"{name}__{exporter}__{'dynamic' if dynamic else 'fixed'}"
    path = folder / f"{stem}.onnx"
    record = {"file": path.name, "model": name, "exporter": exporter, "dims": "dynamic" if dynamic else "fixed",
              "size": size}
    example = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    start = time.perf_counter()
    try:
        if exporter == "legacy":
            axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
            torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": axes, "y": {0: "batch"}})
        else:
            batch = torch.export.Dim("batch", min=1, max=64)
            shapes = {0: batch}
            if dynamic:
                shapes.update({2: 32 * torch.export.Dim("h32", min=1, max=32),
                               3: 32 * torch.export.Dim("w32", min=1, max=32)})
            program = torch.onnx.export(net, (example,), dynamo=True, input_names=["x"], output_names=["y"],
                                        dynamic_shapes={"x": shapes})
            program.save(str(path), external_data=False)
    except Exception as exc:
        record["export_error"] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:400]}"
        traceback.print_exc(limit=2)
        path.unlink(missing_ok=True)
        return record
    record["export_s"] = round(time.perf_counter() - start, 1)
    write_reference(path, dynamic, size, record)
    return record


def write_reference(path, dynamic, size, record):
    import onnx
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    cases = {"b1": rng.standard_normal((1, 3, size, size)).astype(np.float32)}
    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape
    batch_fixed = shape.dim[0].dim_value > 0
    if not batch_fixed:
        h, w = (size + 32, size + 64) if dynamic else (size, size)
        cases["b2"] = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    arrays = {}
    for case, x in cases.items():
        arrays[f"{case}_x"] = x
        for i, y in enumerate(session.run(None, {name: x})):
            arrays[f"{case}_y{i}"] = y
    np.savez(path.with_suffix(".npz"), **arrays)
    record["cases"] = {case: list(x.shape) for case, x in cases.items()}
    record["opset"] = onnx.load(str(path), load_external_data=False).opset_import[0].version


def build(name):
    import timm
    import torch

    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False).eval()
    randomize_batch_norm(net, torch.Generator().manual_seed(0))
    return net


def export_file(folder, name, exporter, dims, size):
    """Child process: export one file and print its manifest record as JSON."""
    record = export_one(build(name), name, exporter, dims == "dynamic", size, folder)
    print("RECORD " + json.dumps(record), flush=True)


def export(folder, models, exporters, size, timeout, force):
    """Each file in a child process (the same seeds give the same weights), stopped after
    ``timeout`` seconds: a symbolic-shape export can run for very long."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    for name in models:
        for exporter in exporters:
            for dims in ("fixed", "dynamic"):
                file = f"{name}__{exporter}__{dims}.onnx"
                if not force and file in manifest and manifest[file].get("size") == size:
                    continue  # done by an earlier run
                print(file, file=sys.stderr, flush=True)
                command = [sys.executable, __file__, "--export-file", str(folder), name, exporter, dims,
                           "--size", str(size)]
                record = {"file": file, "model": name, "exporter": exporter, "dims": dims, "size": size}
                start = time.perf_counter()
                try:
                    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout)
                    lines = [line for line in done.stdout.splitlines() if line.startswith("RECORD ")]
                    if lines:
                        record = json.loads(lines[-1][len("RECORD "):])
                    else:
                        record["export_error"] = f"the export process ended with code {done.returncode}"
                except subprocess.TimeoutExpired:
                    record["export_error"] = f"the export ran past {timeout} s (stopped)"
                    (folder / file).unlink(missing_ok=True)
                record["wall_s"] = round(time.perf_counter() - start, 1)
                manifest[file] = record
                manifest_path.write_text(json.dumps(manifest, indent=1))


# ---------------------------------------------------------------- check (cnnlab)


def check(folder, json_path=None):
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
    import onnx
    from zoo_common import (
        compare,
        fmt,
        group_reasons,
        load_cnnlab,
        markdown_table,
        missing_ops,
        missing_ops_lines,
        op_histogram,
        reason_key,
        run_cnnlab,
    )

    manifests = {}
    for manifest_path in folder.rglob("manifest.json"):
        for file, record in json.loads(manifest_path.read_text()).items():
            manifests[(manifest_path.parent / file).resolve()] = record
    rows, reasons, notes, missing = [], [], [], {}
    failed_exports = [r for r in manifests.values() if "export_error" in r]
    for path in sorted(folder.rglob("*.onnx")):
        record = manifests.get(path.resolve(), {})
        parts = path.stem.split("__")
        model, exporter, dims = (parts + ["", "", ""])[:3] if len(parts) >= 3 else (path.stem, "", "")
        model, exporter, dims = record.get("model", model), record.get("exporter", exporter), record.get("dims", dims)
        label = path.relative_to(folder).as_posix()
        print(label, file=sys.stderr, flush=True)
        reference = path.with_suffix(".npz")
        if not reference.exists():
            rows.append((model, exporter, dims, "no reference .npz", "", ""))
            continue
        data = np.load(reference)
        missing[label] = missing_ops(op_histogram(onnx.load(str(path), load_external_data=False)))
        net, error = load_cnnlab(str(path))
        if error:
            rows.append((model, exporter, dims, f"{error[0]}: {reason_key(error[1])[:100]}", "", "no"))
            reasons.append(error[1])
            continue
        worst, verdicts = [], []
        for case in sorted({key.split("_")[0] for key in data.files}):
            x = data[f"{case}_x"]
            expected = [data[f"{case}_y{i}"] for i in range(sum(k.startswith(f"{case}_y") for k in data.files))]
            try:
                got = run_cnnlab(net, [x])
            except Exception as exc:
                notes.append(f"{label} {case} {list(x.shape)}: run fails: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())[:300]}")
                worst.append(f"{case}: fails")
                verdicts.append(False)
                continue
            diff, ok, note = compare(got, expected)
            worst.append(f"{case} {fmt(diff)}")
            verdicts.append(ok)
            if note:
                notes.append(f"{label} {case} {list(x.shape)}: {note}")
        rows.append((model, exporter, dims, "yes", ", ".join(worst), "yes" if all(verdicts) else "no"))
    header = ["model", "exporter", "dims", "loads? / refusal", "max diff", "pass"]
    print(markdown_table(header, rows))
    if json_path:
        pathlib.Path(json_path).write_text(json.dumps({"rows": [dict(zip(header, r)) for r in rows], "notes": notes,
                                                       "missing_ops": missing, "failed_exports": failed_exports},
                                                      indent=1))
    passed = sum(r[5] == "yes" for r in rows)
    loaded = sum(r[3] == "yes" for r in rows)
    print(f"\n{len(rows)} files: {loaded} load, {passed} pass, {len(reasons)} refused or failed at load")
    if failed_exports:
        print(f"\n{len(failed_exports)} exports failed (no file):\n")
        for r in failed_exports:
            print(f"- {r['model']} {r['exporter']} {r['dims']}: {r['export_error'][:300]}")
    if reasons:
        print("\nRefusal reasons by count:\n")
        print("\n".join(group_reasons(reasons)))
    if any(missing.values()):
        print("\nOp types without a cnnlab converter (all of them, not only the first wall), by files:\n")
        print("\n".join(missing_ops_lines(missing)))
        print()
        for label, ops in missing.items():
            if ops:
                print(f"- {label}: {', '.join(ops)}")
    if notes:
        print("\nNotes:\n")
        print("\n".join(f"- {n}" for n in notes))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--export", type=pathlib.Path, metavar="OUT", help="write the ONNX files and references")
    mode.add_argument("--check", type=pathlib.Path, metavar="OUT", help="check every file under OUT with cnnlab")
    mode.add_argument("--export-file", nargs=4, metavar=("OUT", "MODEL", "EXPORTER", "DIMS"), help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="*", default=MODELS)
    parser.add_argument("--exporters", nargs="*", default=EXPORTERS, choices=EXPORTERS)
    parser.add_argument("--size", type=int, default=64, help="height and width of the export and batch-1 case")
    parser.add_argument("--timeout", type=int, default=900, help="seconds one export may take")
    parser.add_argument("--force", action="store_true", help="export again what the manifest records")
    parser.add_argument("--json", help="with --check: also write the rows to this file")
    args = parser.parse_args()
    if args.export_file:
        folder, name, exporter, dims = args.export_file
        export_file(pathlib.Path(folder), name, exporter, dims, args.size)
    elif args.export:
        export(args.export, args.models, args.exporters, args.size, args.timeout, args.force)
    else:
        check(args.check, args.json)


if __name__ == "__main__":
    main()
