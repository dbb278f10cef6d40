"""``cnnlab predict``: image files classified by a trained model, as a table, JSON or CSV; with
``--dask``, chunk by chunk on a Dask scheduler."""

import contextlib
import csv
import json
import os
import sys

import numpy as np

from .. import compilation
from ..data import image_files, read_image
from .common import add_command, check_output_file, compiling, integer, interpret_kernels, warm_up_model
from .models import load_trained_model, prepare_image

SCHEDULERS = ("threads", "processes", "synchronous")


def add_parser(commands):
    """Add ``cnnlab predict`` and its arguments to the sub-commands."""
    p = add_command(commands, "predict", "classify images with a model from cnnlab train or demo")
    p.add_argument("model", help="a model file from cnnlab train or cnnlab demo")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=integer(1), default=1, help="show the K most probable classes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--csv", help="write the rows (file, class, probability) to this .csv file instead of a table")
    p.add_argument("--dask", nargs="?", const="threads", default=None, metavar="SCHEDULER",
                   help="read and classify the images chunk by chunk with Dask (needs --csv): threads "
                        "(without a value), processes, synchronous, or a scheduler address such as "
                        "tcp://host:8786")
    p.add_argument("--chunk-size", type=integer(1), default=256, help="with --dask: images per task")
    p.set_defaults(run=run)


def _check_options(args):
    """Refuse, before any work, options that do not go together and an unwritable --csv."""
    if args.dask is not None and args.csv is None:
        raise ValueError("--dask writes its results to a file: add --csv FILE (e.g. --csv predictions.csv)")
    if args.csv is not None:
        if args.json:
            raise ValueError("--json and --csv: choose one (the rows go to the --csv file)")
        check_output_file("--csv", args.csv, (".csv",))
    if args.dask is not None:
        scheduler = args.dask
        if scheduler not in SCHEDULERS and ":" not in scheduler:
            raise ValueError(f"--dask {scheduler}: give threads, processes, synchronous or a scheduler "
                             "address like tcp://host:8786 (put --dask after the images, or write "
                             "--dask=ADDRESS)")


def run(args):
    """Classify image files with a model saved by ``cnnlab train``; with ``--dask``, chunk by
    chunk on a Dask scheduler, the rows written to ``--csv`` as the chunks finish."""
    _check_options(args)
    model, names = load_trained_model(args.model)
    files = image_files(args.images)

    def rows(probabilities):
        top = np.argsort(probabilities)[::-1][:args.top_k]
        return [{"label": names[i], "probability": float(probabilities[i])} for i in top]

    if args.dask is not None:
        return _predict_with_dask(args, model, files, rows)
    results, failed, warm = [], [], None
    with compiling() as report, contextlib.ExitStack() as interpreted:
        for file in files:
            try:
                x = prepare_image(model, file)
            except ValueError as exc:
                failed.append((file, str(exc)))
                continue
            if warm is None:  # the first image: what the model is given
                # a few small images: the kernels not in the cache run as Python, compiled
                # meanwhile for the next run, instead of seconds spent compiling them first
                quick = interpret_kernels(model, x, len(files))
                if quick:
                    interpreted.enter_context(compilation.interpreting())
                warm = warm_up_model(model, x, device="cpu" if isinstance(x, np.ndarray) else "cuda", detach=quick)
            results.append(dict(file=file, predictions=rows(model.predict_proba(x)[0])))
        if warm is not None:
            warm.close()
    _show_results(args, results, failed)
    if report.count and sys.stderr.isatty():  # a log has the report's own last line
        print(f"compiled {report.count} kernels for this machine in {report.seconds:.1f} s (first run only)",
              file=sys.stderr)
    return 0 if results else 1


def _show_results(args, results, failed):
    """The results as JSON, as a --csv file or as a table, and the skipped files on stderr."""
    if args.json:
        print(json.dumps(dict(results=results, errors=[dict(file=f, error=e) for f, e in failed]), indent=2))
    elif args.csv is not None:
        with open(args.csv, "w", newline="") as stream:
            writer = csv.writer(stream)
            writer.writerow(["file", "class", "probability"])
            for result in results:
                for guess in result["predictions"]:
                    writer.writerow([result["file"], guess["label"], repr(guess["probability"])])
        print(f"{len(results)} images classified into {args.csv}", file=sys.stderr)
    else:
        width = max([len(r["file"]) for r in results] + [4])
        print(f"{'file'.ljust(width)}  class            probability")
        for result in results:
            for rank, guess in enumerate(result["predictions"]):
                shown = result["file"] if rank == 0 else ""
                print(f"{shown.ljust(width)}  {guess['label'][:16].ljust(16)} {guess['probability']:.3f}")
    if not args.json:
        for file, error in failed:
            print(f"{file}: skipped ({error})", file=sys.stderr)


def _dask_scheduler(address):
    """``(scheduler, client or None)`` for ``--dask``: a local scheduler's name, or a client of
    the scheduler at ``address``."""
    if address in SCHEDULERS:
        return address, None
    from dask.distributed import Client

    try:
        client = Client(address, set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"--dask {address}: cannot reach a Dask scheduler there: {detail} (check the "
                         "address, or start one with: dask scheduler)") from None
    return client, client


def _predict_with_dask(args, model, files, rows):
    """``predict --dask``: the images read, standardized and classified inside Dask tasks."""
    import cnnlab.dask as cdask

    settings = model.preprocessing
    _, images = cdask.read_image_folder(files, settings["size"], settings.get("color", "rgb"),
                                        settings.get("resize", "stretch"), args.chunk_size, errors="nan")
    probabilities = cdask.classify_images(model, images, settings.get("mean"), settings.get("std"))
    scheduler, client = _dask_scheduler(args.dask)
    total, done, classified, failed = len(files), 0, 0, []
    tty = sys.stderr.isatty()
    try:
        with open(args.csv, "w", newline="") as stream, compiling():
            writer = csv.writer(stream)
            writer.writerow(["file", "class", "probability"])
            for start, block in cdask.compute_chunks(probabilities, scheduler):
                for file, row in zip(files[start:start + len(block)], block):
                    if np.isnan(row).any():
                        failed.append(file)
                        continue
                    classified += 1
                    for guess in rows(row):
                        writer.writerow([file, guess["label"], repr(guess["probability"])])
                stream.flush()
                done += len(block)
                print(f"{chr(13) if tty else ''}{done}/{total} images", end="" if tty else "\n",
                      file=sys.stderr, flush=True)
            if tty:
                print(file=sys.stderr)
    finally:
        if client is not None:
            client.close()
    _explain_failures(files=failed, settings=settings)
    print(f"{classified} images classified into {args.csv}", file=sys.stderr)
    return 0 if classified else 1


def _explain_failures(files, settings):
    """Say on stderr why each file a Dask task could not classify was skipped."""
    for file in files:
        try:  # read it here again for the reason
            read_image(os.path.abspath(file), settings["size"], settings.get("color", "rgb"),
                       settings.get("resize", "stretch"))
            error = "it could not be read where the chunk was computed"
        except (FileNotFoundError, ValueError) as exc:
            error = str(exc)
        print(f"{file}: skipped ({error})", file=sys.stderr)
