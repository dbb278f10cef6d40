"""The ``cnnlab`` command: ``cnnlab demo | train | predict | inspect | filter | tour | bench | info``.

Every error is one line on stderr, ``cnnlab <command>: <what> (<how to fix>)``, with exit
status 2 (``cnnlab --debug <command>`` shows the traceback instead); Ctrl-C exits with 130.
"""

import argparse
import contextlib
import json
import math
import os
import sys
import time
import zipfile

import numpy as np

from .applications import classic_cnn
from .bench import filtering, measuring, networks, ops, report, startup, training
from .data import load_demo_data
from .metrics import confusion_matrix, format_confusion
from .parallel import blas_kernels

# What a user can cause (a wrong path, a damaged file, bad data, a learning rate too high):
# one line on stderr, exit status 2. Anything else is a defect, also shown as one line.
USER_ERRORS = (ValueError, TypeError, OSError, ArithmeticError, zipfile.BadZipFile, EOFError, ImportError,
               RuntimeError)
_HINTS = [  # (exception type, how to fix), the first match is used
    (FloatingPointError, "give a smaller --lr, e.g. a tenth of it"),
    ((zipfile.BadZipFile, EOFError), "the file is cut short or not a cnnlab model: write it again"),
    (PermissionError, "choose a path you may write to"),
    ((FileNotFoundError, NotADirectoryError, IsADirectoryError), "check the path"),
]


def error_line(command, exc):
    """The one line a command's error is shown as: ``cnnlab <command>: <what> (<how to fix>)``."""
    what = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, USER_ERRORS):
        return (f"cnnlab {command}: unexpected {type(exc).__name__}: {what} "
                f"(run cnnlab --debug {command} ... to see where, and report it)")
    hint = next((text for kind, text in _HINTS if isinstance(exc, kind)), None)
    return f"cnnlab {command}: {what}" + (f" ({hint})" if hint else "")


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _check_output_file(option, path, suffixes, overwrite=True):
    """Fail before any work unless ``path`` can be written: its folder exists and is writable,
    its name ends in one of ``suffixes``, and (without ``overwrite``) it does not exist yet."""
    if not path.lower().endswith(suffixes):
        stem = os.path.splitext(os.path.basename(path))[0] or "output"
        raise ValueError(f"{option} {path}: the name must end in {', '.join(suffixes)} "
                         f"(e.g. {option} {stem}{suffixes[0]})")
    if os.path.isdir(path):
        raise ValueError(f"{option} {path} is a folder (give a file name inside it)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{option} {path}: no such folder {folder} (create it first, or choose another path)")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable (choose another path)")
    if not overwrite and os.path.exists(path):
        raise ValueError(f"{option} {path} already exists (choose another name, or add --force to overwrite it)")


def _check_output_folder(option, path):
    """Fail before any work unless ``path`` is a folder, or can be made one, that is writable."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{option} {path} is a file, not a folder (give a folder for the PNG files)")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise ValueError(f"{option} {path}: {existing} is not a writable folder (choose another path)")


def _compiling():
    """Say so on stderr while Numba compiles kernels for this machine (first run only)."""
    try:
        from cnnlab.compilation import report_compilation
    except ImportError:
        return contextlib.nullcontext()
    return report_compilation(stream=sys.stderr)


def demo(args):
    """Train the textbook CNN on real bundled images and report held-out accuracy."""
    import cnnlab
    from cnnlab.data import train_test_split

    _check_output_file("--out", args.out, (".npz",))
    if args.plots:
        _check_output_folder("--plots", args.plots)
        _require_matplotlib()
    device = _pick_device(args.device)
    images, labels, names = load_demo_data(args.data)
    x_train, x_test, y_train, y_test = train_test_split(images, labels, test_size=0.25, seed=args.seed)
    print(f"cnnlab {cnnlab.__version__} demo: {args.data}, {len(x_train)} training and {len(x_test)} "
          f"held-out images of {images.shape[2]}x{images.shape[3]}, {len(names)} classes, on the {device}")
    model = classic_cnn(1, images.shape[2], len(names), seed=args.seed)
    model.class_names = names
    # what predict, inspect and train --base apply to a new image: grey, this size, 0-1, no
    # standardization (mean 0, std 1), as the bundled images are
    model.preprocessing = dict(size=list(images.shape[2:]), color="gray", mean=[0.0], std=[1.0])
    model.summary()
    model.to(device)
    start = time.perf_counter()
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        optimizer=cnnlab.optim.Adam(args.lr, schedule=cnnlab.optim.CosineLR(args.epochs, 0.05)),
                        validation_data=(x_test, y_test), seed=args.seed, verbose=1)
    seconds = time.perf_counter() - start
    predicted = model.predict(x_test)
    accuracy = float((predicted == y_test).mean())
    print(f"trained {args.epochs} epochs in {seconds:.1f} s (the first epoch includes compiling or "
          "loading the kernels)")
    print(f"held-out accuracy: {accuracy:.2%} ({int((predicted == y_test).sum())}/{len(y_test)})")
    print("confusion matrix (rows: true class, columns: predicted class):")
    matrix = confusion_matrix(y_test, predicted, len(names))
    print(format_confusion(matrix, names))
    model.save(args.out)
    print(f"model saved to {args.out} (load it with cnnlab.load({args.out!r}))")
    if args.plots:
        _write_plots(args.plots, model, history, matrix, names, x_test[0])
    return 0


def _require_matplotlib():
    """Fail before any work when a command will need matplotlib and it is missing."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("plots need matplotlib (pip install 'cnnlab[viz]')")


def _plot_filters_and_maps(folder, model, image):
    """The filters of every convolution layer and ``image`` after every layer; the paths."""
    from cnnlab import viz
    from cnnlab.layers import Conv2D

    os.makedirs(folder, exist_ok=True)
    model.to("cpu")
    convolutions = [(index, layer) for index, layer in enumerate(model.layers) if isinstance(layer, Conv2D)]
    paths = []
    for number, (index, layer) in enumerate(convolutions):
        name = "filters.png" if number == 0 else f"filters_layer{index}.png"
        title = f"layer {index}: {type(layer).__name__}, {layer.weight.shape[0]} filters " \
                f"{layer.weight.shape[2]}x{layer.weight.shape[3]}"
        paths.append(viz.plot_filters(layer, os.path.join(folder, name), title))
    paths.append(viz.plot_feature_maps(model, image, os.path.join(folder, "feature_maps.png")))
    return paths


def _write_plots(folder, model, history, matrix, names, image):
    from cnnlab import viz

    paths = _plot_filters_and_maps(folder, model, image)
    paths += [viz.plot_history(history, os.path.join(folder, "history.png")),
              viz.plot_confusion_matrix(matrix, names, os.path.join(folder, "confusion_matrix.png"))]
    print("plots written: " + ", ".join(paths))


def tour(args):
    """The textbook pipeline on a real photograph: edge filter, then conv -> ReLU -> max pool."""
    from skimage import data as samples

    import cnnlab
    import cnnlab.functional as F
    from cnnlab import filters
    from cnnlab.data import normalize

    device = _pick_device(args.device)
    print(f"cnnlab {cnnlab.__version__} tour on the {device}")
    camera = samples.camera()
    print(f"image: scikit-image 'camera', {camera.shape[0]}x{camera.shape[1]} {camera.dtype}")

    image = normalize(camera)
    edges, seconds = _timed(filters.apply, image, "edge")
    print(f"edge filter (0 -1 0 / -1 4 -1 / 0 -1 0), mode 'same': {image.shape} -> {edges.shape}"
          f" in {seconds * 1e3:.1f} ms (first call includes compiling or loading the kernel)")
    _, seconds = _timed(filters.apply, image, "edge")
    print(f"  again: {seconds * 1e3:.1f} ms")

    names = ["edge", "sobel_x", "sobel_y", "sharpen"]
    weight = np.stack([filters.KERNELS[n] for n in names])[:, None].astype(np.float32)
    x = image[None, None]
    if device == "cuda":
        x, weight = cnnlab.to_device(x), cnnlab.to_device(weight)
    print(f"convolution module with {len(names)} filters ({', '.join(names)}):")
    for attempt in ("first call", "warm"):
        start = time.perf_counter()
        convolved = F.conv2d(x, weight, padding=1)
        activated = F.relu(convolved)
        pooled = F.max_pool2d(activated, 2)
        host = cnnlab.to_host(pooled)
        total = time.perf_counter() - start
        print(f"  {attempt}: {total * 1e3:.1f} ms")
    print(f"  input {tuple(x.shape)} -> conv2d 3x3 padding 1 {tuple(convolved.shape)}"
          f" -> relu {tuple(activated.shape)} -> max_pool2d 2x2 stride 2 {tuple(pooled.shape)}")
    share = [float((host[0, i] > 0).mean()) for i in range(len(names))]
    print("  share of positive pixels per feature map after ReLU and pooling: "
          + ", ".join(f"{n} {s:.0%}" for n, s in zip(names, share)))
    return 0


def _convolution_base_end(model):
    """The index of the first ``Flatten`` (or global pooling): the layers before it are the
    convolutional base that transfer learning reuses."""
    from cnnlab.layers import Flatten, GlobalAvgPool2D

    return next((i for i, layer in enumerate(model.layers) if isinstance(layer, (Flatten, GlobalAvgPool2D))),
                len(model.layers) - 1)


def _check_train_outputs(args):
    """Every file and folder ``train`` writes, checked before any work. Returns the checkpoint
    path (``--checkpoint``, else the one being resumed, else ``<out>.checkpoint.npz``) and
    whether it is that last one, train's own, to remove once the model is saved."""
    _check_output_file("--out", args.out, (".npz",), overwrite=args.force)
    if args.resume is not None and not os.path.isfile(args.resume):
        raise ValueError(f"--resume {args.resume}: no such file (give the checkpoint an interrupted "
                         "cnnlab train wrote)")
    own = os.path.splitext(args.out)[0] + ".checkpoint.npz"
    checkpoint = args.checkpoint or args.resume or own
    fresh = args.force or (args.resume is not None and os.path.abspath(checkpoint) == os.path.abspath(args.resume))
    if not fresh and os.path.exists(checkpoint):
        raise ValueError(f"{checkpoint} holds the state of an earlier run (continue it with --resume "
                         f"{checkpoint}, or add --force to start over)")
    _check_output_file("--checkpoint", checkpoint, (".npz",))
    if args.plots:
        _check_output_folder("--plots", args.plots)
        _require_matplotlib()
    return checkpoint, args.checkpoint is None and os.path.abspath(checkpoint) == os.path.abspath(own)


def _fit_options(args):
    """The keyword arguments of ``fit`` that ``train``'s options ask for."""
    from cnnlab.callbacks import EarlyStopping

    options = dict(callbacks=[EarlyStopping(monitor="val_accuracy", patience=args.patience,
                                            restore_best_weights=True)])
    if args.class_weight is not None:
        options["class_weight"] = args.class_weight
    return options


def train(args):
    """Train a CNN on a folder of images with one sub-folder per class, from scratch or from
    the convolutional base of a saved model (``--base``)."""
    import cnnlab
    from cnnlab.data import load_image_folder, standardize, train_test_split

    checkpoint, own_checkpoint = _check_train_outputs(args)
    if os.path.exists(args.folder) and not os.path.isdir(args.folder):
        raise ValueError(f"{args.folder} is a file, not a folder (give a folder with one sub-folder of "
                         "images per class)")
    base = None
    if args.base:
        base, _ = _load_trained_model(args.base)
        settings = base.preprocessing
        for option, mine, theirs in (("--size", args.size, settings["size"][0]),
                                     ("--color", args.color, settings.get("color", "rgb")),
                                     ("--resize", args.resize, settings.get("resize", "stretch"))):
            if mine is not None and mine != theirs:
                raise ValueError(f"{option} {mine} differs from the base model's {theirs} "
                                 "(leave it out to use the base's)")
        args.size, args.color = settings["size"][0], settings.get("color", "rgb")
        args.resize = settings.get("resize", "stretch")
        if args.freeze is not None and args.freeze > len(base.layers):
            raise ValueError(f"--freeze {args.freeze}, but the base model has only {len(base.layers)} layers "
                             f"(give at most {len(base.layers)})")
    elif args.freeze is not None:
        raise ValueError("--freeze needs --base (give a model to transfer from, or leave --freeze out)")
    args.size = 32 if args.size is None else args.size
    args.color = "rgb" if args.color is None else args.color
    args.resize = "stretch" if args.resize is None else args.resize
    device = _pick_device(args.device)
    size = (args.size, args.size)
    images, labels, names = load_image_folder(args.folder, size=size, color=args.color, resize=args.resize)
    counts = ", ".join(f"{name} {int((labels == i).sum())}" for i, name in enumerate(names))
    print(f"{len(images)} images of {len(names)} classes ({counts}), resized ({args.resize}) to "
          f"{args.size}x{args.size} {args.color}; training on the {device}")
    few = [name for i, name in enumerate(names) if (labels == i).sum() < 2]
    if few:
        raise ValueError(f"each class needs at least 2 images, one to train on and one to validate; too few "
                         f"in: {', '.join(few)} (add images to those sub-folders)")
    x_train, x_val, y_train, y_val = train_test_split(images, labels, test_size=args.validation, seed=args.seed)
    # from scratch: the training images' statistics; transferred: the base's, since its
    # features were learned on that scale
    statistics = (None, None) if base is None else (base.preprocessing["mean"], base.preprocessing["std"])
    x_train, mean, std = standardize(x_train, *statistics)
    x_val, _, _ = standardize(x_val, mean, std)
    if base is None:
        model = classic_cnn(images.shape[1], args.size, len(names), seed=args.seed)
    else:
        frozen = _convolution_base_end(base) if args.freeze is None else args.freeze
        model = base.replace_head(len(names), seed=args.seed).freeze(up_to=frozen)
        kept = f"layers 0-{frozen - 1} frozen" if frozen else "every layer fine-tuned"
        print(f"transferring from {args.base}: {kept}, a new {len(names)}-class head")
    model.class_names = names
    model.preprocessing = dict(size=list(size), color=args.color, mean=mean.tolist(), std=std.tolist(),
                               resize=args.resize)
    model.to(device)
    try:
        history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                            optimizer=cnnlab.optim.Adam(args.lr), validation_data=(x_val, y_val), seed=args.seed,
                            augment=args.augment, verbose=1, checkpoint=checkpoint, resume=args.resume,
                            **_fit_options(args))
    except KeyboardInterrupt:
        if os.path.exists(checkpoint):
            print(f"cnnlab train: interrupted; the last completed epoch is saved in {checkpoint} (run the same "
                  f"command with --resume {checkpoint} to continue)", file=sys.stderr)
        else:
            print("cnnlab train: interrupted in the first epoch, before anything could be saved (run the "
                  "command again)", file=sys.stderr)
        return 130
    except FloatingPointError:
        if own_checkpoint and os.path.exists(checkpoint):
            os.remove(checkpoint)  # it holds the learning rate that diverged: a retry starts over
        raise
    scores = history.history["val_accuracy"]
    best = int(np.argmax(scores))
    print(f"best validation accuracy: {scores[best]:.2%} at epoch {best + 1} of {len(scores)}; the model keeps "
          "that epoch's weights")
    predicted = model.predict(x_val)
    print(f"validation accuracy: {float((predicted == y_val).mean()):.2%} on {len(x_val)} held-out images")
    matrix = confusion_matrix(y_val, predicted, len(names))
    print("confusion matrix on the validation images (rows: true class, columns: predicted class):")
    print(format_confusion(matrix, names))
    model.to("cpu").save(args.out)
    print(f"model saved to {args.out}")
    if own_checkpoint:  # the run is complete: its training state is of no further use
        os.remove(checkpoint)
    if args.plots:
        _write_plots(args.plots, model, history, matrix, names, x_val[0])
    return 0


def _load_trained_model(path):
    """A model saved by ``cnnlab train`` or ``cnnlab demo`` (it keeps its preprocessing)."""
    import cnnlab

    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such model file: {path}")
    if path.lower().endswith(".onnx"):
        return _load_onnx_model(path)
    try:
        model = cnnlab.load(path)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"{path} is not a readable cnnlab model: {exc} (the file may be cut short: save or "
                         "train it again)") from None
    if "size" not in (model.preprocessing or {}):
        raise ValueError(f"{path} keeps no image preprocessing (train it with cnnlab train)")
    names = model.class_names or [str(i) for i in range(model.output_shapes(model.input_shape)[-1][0])]
    return model, names


IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _load_onnx_model(path):
    """A network exported to ONNX, with the preprocessing torchvision's networks expect: the
    file's image size, RGB in [0, 1] standardized with the ImageNet statistics (grey images:
    none)."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        raise ValueError(f"{path} is an ONNX file, which needs the onnx package (pip install 'cnnlab[onnx]')")
    import cnnlab.onnx

    model = cnnlab.onnx.load(path)
    shape = model.input_shape
    if not isinstance(shape, tuple) or len(shape) != 3 or shape[0] not in (1, 3):
        raise ValueError(f"{path} takes inputs of shape {shape}; the command line feeds it images "
                         "(1 or 3 channels, height, width)")
    rgb = shape[0] == 3
    model.preprocessing = dict(size=list(shape[1:]), color="rgb" if rgb else "gray",
                               mean=IMAGENET_MEAN if rgb else [0.0], std=IMAGENET_STD if rgb else [1.0])
    print(f"{path}: images resized to {shape[1]}x{shape[2]}, "
          + ("RGB standardized with the ImageNet mean and std (torchvision's convention)" if rgb else
             "grey in [0, 1]"), file=sys.stderr)
    names = [str(i) for i in range(model.output_shapes(shape)[-1][0])]
    return model, names


def _prepare(model, file):
    """One image file as the model's input batch ``(1, C, H, W)``; ValueError if unreadable."""
    from cnnlab.data import read_image, standardize

    settings = model.preprocessing
    options = {"resize": settings["resize"]} if "resize" in settings else {}
    image = read_image(file, settings["size"], settings.get("color", "rgb"), **options)
    return standardize(image[None], settings.get("mean"), settings.get("std"))[0]


def predict(args):
    """Classify image files with a model saved by ``cnnlab train``; with ``--dask``, chunk by
    chunk on a Dask scheduler, the rows written to ``--csv`` as the chunks finish."""
    import csv

    from cnnlab.data import image_files

    if args.dask is not None and args.csv is None:
        raise ValueError("--dask writes its results to a file: add --csv FILE (e.g. --csv predictions.csv)")
    if args.csv is not None:
        if args.json:
            raise ValueError("--json and --csv: choose one (the rows go to the --csv file)")
        _check_output_file("--csv", args.csv, (".csv",))
    if args.dask is not None:
        scheduler = args.dask
        if scheduler not in ("threads", "processes", "synchronous") and ":" not in scheduler:
            raise ValueError(f"--dask {scheduler}: give threads, processes, synchronous or a scheduler "
                             "address like tcp://host:8786 (put --dask after the images, or write "
                             "--dask=ADDRESS)")
    model, names = _load_trained_model(args.model)
    files = image_files(args.images)

    def rows(probabilities):
        top = np.argsort(probabilities)[::-1][:args.top_k]
        return [{"label": names[i], "probability": float(probabilities[i])} for i in top]

    if args.dask is not None:
        return _predict_with_dask(args, model, files, rows)
    results, failed = [], []
    with _compiling():
        for file in files:
            try:
                x = _prepare(model, file)
            except ValueError as exc:
                failed.append((file, str(exc)))
                continue
            results.append(dict(file=file, predictions=rows(model.predict_proba(x)[0])))
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
    return 0 if results else 1


def _predict_with_dask(args, model, files, rows):
    """``predict --dask``: the images read, standardized and classified inside Dask tasks."""
    import csv

    import cnnlab.dask as cdask
    from cnnlab.data import read_image

    settings = model.preprocessing
    _, images = cdask.read_image_folder(files, settings["size"], settings.get("color", "rgb"),
                                        settings.get("resize", "stretch"), args.chunk_size, errors="nan")
    probabilities = cdask.classify_images(model, images, settings.get("mean"), settings.get("std"))
    client = None
    if args.dask in ("threads", "processes", "synchronous"):
        scheduler = args.dask
    else:
        from dask.distributed import Client

        try:
            client = Client(args.dask, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"--dask {args.dask}: cannot reach a Dask scheduler there: {detail} (check the "
                             "address, or start one with: dask scheduler)") from None
        scheduler = client
    total, done, classified, failed = len(files), 0, 0, []
    tty = sys.stderr.isatty()
    try:
        with open(args.csv, "w", newline="") as stream, _compiling():
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
    for file in failed:
        try:  # read it here again for the reason
            read_image(os.path.abspath(file), settings["size"], settings.get("color", "rgb"),
                       settings.get("resize", "stretch"))
            error = "it could not be read where the chunk was computed"
        except (FileNotFoundError, ValueError) as exc:
            error = str(exc)
        print(f"{file}: skipped ({error})", file=sys.stderr)
    print(f"{classified} images classified into {args.csv}", file=sys.stderr)
    return 0 if classified else 1


def inspect(args):
    """Draw a trained model's filters and one image's feature maps after every layer."""
    _check_output_folder("--out", args.out)
    _require_matplotlib()
    model, names = _load_trained_model(args.model)
    x = _prepare(model, args.image)
    with _compiling():
        probabilities = model.predict_proba(x)[0]
    best = int(np.argmax(probabilities))
    print(f"{args.image}: {names[best]} ({probabilities[best]:.3f})")
    shapes = model.output_shapes(tuple(x.shape[1:]))
    for index, (layer, shape) in enumerate(zip(model.layers, shapes)):
        print(f"  layer {index}: {type(layer).__name__:<18} -> {' x '.join(str(d) for d in shape)}")
    paths = _plot_filters_and_maps(args.out, model, x[0])
    print("plots written: " + ", ".join(paths))
    return 0


EDGE_KERNELS = ("edge", "sobel_x", "sobel_y")


def filter_image(args):
    """Apply one of the classic kernels to an image file and write the result: edge kernels as
    their absolute response scaled so the strongest edge is white, others clipped to 0-1."""
    from skimage import io

    from cnnlab import filters
    from cnnlab.data import IMAGE_SUFFIXES, read_pixels

    _check_output_file("--out", args.out, IMAGE_SUFFIXES)
    image = read_pixels(args.image)
    # 'symm' mirrors the image at its border: no false edges (a bright frame) where it ends
    result, seconds = _timed(filters.apply, image.astype(np.float32), args.kernel, boundary="symm")
    if args.kernel in EDGE_KERNELS:
        result = np.abs(result)  # edge strength, either sign
        result = result / max(float(result.max()), 1e-12)
    io.imsave(args.out, (np.clip(result, 0, 1) * 255).round().astype(np.uint8), check_contrast=False)
    print(f"{args.kernel} filter: {args.image} {image.shape} -> {args.out} in {seconds * 1e3:.1f} ms")
    return 0


def _pick_device(requested):
    import cnnlab
    from cnnlab.device import simulator_enabled

    if requested == "auto":  # a real GPU: Numba's CUDA simulator is for tests, far too slow to train on
        return "cuda" if cnnlab.cuda_available() and not simulator_enabled() else "cpu"
    if requested == "cuda" and not cnnlab.cuda_available():
        raise RuntimeError("--device cuda, but no CUDA GPU is available (leave --device out to use the CPU, "
                           "or install the 'cuda' extra on a machine with an NVIDIA GPU)")
    return requested


def _warn_if_busy(threads):
    """Say on stderr when other work holds the cores the benchmark's ``threads`` need."""
    if hasattr(os, "getloadavg"):
        warning = measuring.busy_warning(os.getloadavg()[0], os.cpu_count(), threads)
        if warning:
            print(warning, file=sys.stderr)


def _progress(index, total, name):
    print(f"  [{index + 1}/{total}] {name} ...", file=sys.stderr, flush=True)


def bench(args):
    """Time cnnlab's kernels against PyTorch CPU and scipy in one process."""
    import numba

    if args.json:
        _check_output_file("--json", args.json, (".json",))
    if args.plot:
        _check_output_file("--plot", args.plot, (".png",))
        _require_matplotlib()
    if args.threads:
        if args.threads > numba.config.NUMBA_NUM_THREADS:
            raise ValueError(f"--threads {args.threads}, but this machine allows at most "
                             f"{numba.config.NUMBA_NUM_THREADS} (give fewer, or 0 for all)")
        numba.set_num_threads(args.threads)
    threads = numba.get_num_threads()
    if args.op == "dask":
        return _bench_dask(args, threads)
    if args.op == "models":
        return _bench_models(args, threads)
    compare, missing = measuring.available_peers([c.strip() for c in args.compare.split(",") if c.strip()])
    shapes = [ops.parse_shape(s) for s in (args.shapes or list(ops.REFERENCE_SHAPES))]
    device = _pick_device(args.device)
    _warn_if_busy(threads)
    peers = ", ".join(compare) or "no peer"
    absent = f" ({', '.join(missing)} not installed)" if missing else ""
    print(f"cnnlab bench: {args.op} on the {device}, {threads} threads, compared with {peers}{absent}",
          file=sys.stderr)
    rows = _suite_rows(args, shapes, threads, compare, device)
    print(report.format_table(rows))
    report.save_report(rows, threads, device, args.json, args.plot)
    return 0


def _suite_rows(args, shapes, threads, compare, device):
    """The rows of the suites ``--op`` names (``all``: every one but memory, dask and models)."""
    rows = []
    for op in ("conv2d", "conv2d_backward", "pool", "activation", "linear"):
        if args.op in (op, "all"):
            rows += ops.op_suite(op, shapes, args.repeat, threads, compare, args.dtype, device, _progress)
    if args.op in ("filter", "all"):
        rows += filtering.filter_suite(args.repeat, threads, compare, progress=_progress)
    if args.op in ("train", "all"):
        rows += training.train_suite(max(1, min(args.repeat, 3)), threads, compare, device, _progress)
    if args.op == "memory":
        rows += startup.memory_suite(shapes, _progress)
    if args.op in ("startup", "all"):
        rows += startup.startup_suite(_progress)
    return rows


def _bench_models(args, threads):
    """``bench --op models``: ResNet-18 and MobileNetV2 through ONNX against PyTorch and
    onnxruntime, and a training step (see :mod:`cnnlab.bench.networks`)."""
    missing = networks.missing_modules()
    if missing:
        raise ModuleNotFoundError(f"--op models needs {', '.join(missing)} (pip install \"cnnlab[bench]\")")
    _warn_if_busy(threads)
    print(f"cnnlab bench: models, {threads} threads, 224x224 images, median of {args.repeat}; GEMMs on "
          f"{blas_kernels()}", file=sys.stderr)
    rows = networks.models_suite(threads, args.repeat, progress=_progress)
    print(report.format_table(rows))
    memory = networks.memory_rows(progress=_progress)
    print(report.format_memory(memory))
    report.save_report(rows, threads, "cpu", args.json, args.plot, memory=memory)
    return 0


def _bench_dask(args, threads):
    """``bench --op dask``: a huge image filtered on a 2-process LocalCluster by cnnlab and by
    dask-image, and by cnnlab in memory (see :func:`cnnlab.bench.filtering.dask_suite`)."""
    _, _, ndfilters = filtering.dask_bench_modules()  # the extra's one-line message before anything else
    if args.chunk > args.size:
        raise ValueError(f"--chunk {args.chunk} is larger than --size {args.size} (give at most --size)")
    workers = filtering.DASK_WORKERS
    _warn_if_busy(max(threads, workers))
    repeat = max(1, min(args.repeat, 5))
    print(f"cnnlab bench: dask, edge filter (3x3) on a {args.size}x{args.size} float32 image in "
          f"{args.chunk}x{args.chunk} chunks, {workers} worker processes x 1 thread, in memory with {threads} "
          f"threads, median of {repeat}", file=sys.stderr)
    if ndfilters is None:
        print(f"cnnlab bench: {filtering.DASK_IMAGE_MISSING}", file=sys.stderr)
    rows = filtering.dask_suite(args.size, args.chunk, repeat, threads, progress=_progress)
    print(report.format_dask_table(rows))
    report.save_report(rows, threads, "cpu", args.json, args.plot)
    return 0


def info(args):
    """Version, devices, threading layer, cache directory."""
    import numba

    import cnnlab

    print(f"cnnlab {cnnlab.__version__}")
    print(f"numba {numba.__version__}, numpy {np.__version__}")
    print(f"threads: {numba.get_num_threads()}")
    from cnnlab.device import simulator_enabled

    gpu = cnnlab.cuda_available()
    if gpu and simulator_enabled():
        print("cuda available: Numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), not a GPU")
    else:
        print(f"cuda available: {gpu}")
    if gpu and not simulator_enabled():
        from numba import cuda

        name = cuda.get_current_device().name
        print(f"cuda device: {name.decode() if isinstance(name, bytes) else name}")
    from cnnlab.kernels import cache
    from cnnlab.parallel import blas_kernels, threading_layer

    print(f"threading layer: {threading_layer()}")
    print(f"BLAS: {blas_kernels()}")

    print(f"kernel cache: {cache.cache_dir()} (compiled kernels; set CNNLAB_CACHE_DIR to move it, "
          "cnnlab cache clear to empty it)")
    return 0


def cache_command(args):
    """Show or empty the folder of compiled kernels."""
    from cnnlab.kernels import cache

    if args.action == "clear":
        root, removed = cache.clear()
        print(f"removed {removed} cached kernel files from {root}; the next run compiles them again")
    else:
        folder = cache.cache_dir()
        files = [os.path.join(top, name) for top, _, names in os.walk(folder) for name in names]
        size = sum(os.path.getsize(f) for f in files)
        print(f"{folder}: {len(files)} files, {size / 1e6:.1f} MB")
    return 0


def _integer(minimum):
    """An argparse type: an integer of at least ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _fraction(text):
    value = _positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, except where there is none to show (None, a flag's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def build_parser():
    """The ``cnnlab`` argument parser, one sub-command per task."""
    # --debug is accepted before or after the command: cnnlab --debug train ... / cnnlab train ... --debug
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="on an error, show the full traceback instead of one line")
    parser = argparse.ArgumentParser(prog="cnnlab", description="Readable, fast CNNs in Numba.",
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--debug", action="store_true",
                        help="on an error, show the full traceback instead of one line")
    commands = parser.add_subparsers(dest="command")

    def command(name, help):
        return commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                                   parents=[debug], formatter_class=_HelpFormatter)

    def device(p, default="auto"):
        choices = ["auto", "cpu", "cuda"] if default == "auto" else ["cpu", "cuda"]
        p.add_argument("--device", choices=choices, default=default,
                       help="where to compute" + (" (auto: a CUDA GPU if there is one)" if default == "auto" else ""))

    p = command("demo", "train the textbook CNN on bundled images and report accuracy")
    p.add_argument("--data", choices=["digits", "faces"], default="digits",
                   help="scikit-learn's handwritten digits, or scikit-image's face / not-face subset")
    p.add_argument("--epochs", type=_integer(1), default=15, help="passes over the training images")
    p.add_argument("--batch-size", type=_integer(1), default=32, help="images per training step")
    p.add_argument("--lr", type=_positive_float, default=2e-3, help="Adam's learning rate")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the weights and the shuffling")
    device(p)
    p.add_argument("--out", default="cnnlab-demo.npz", help="where to save the trained model (.npz)")
    p.add_argument("--plots", help="also write filters, feature maps, training curves and the confusion "
                                   "matrix as PNG files into this folder (needs matplotlib)")
    p.set_defaults(run=demo)

    p = command("train", "train on a folder of images, one sub-folder per class")
    p.add_argument("folder", help="a folder with one sub-folder of images per class")
    p.add_argument("--epochs", type=_integer(1), default=20, help="passes over the training images")
    p.add_argument("--batch-size", type=_integer(1), default=32, help="images per training step")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--size", type=_integer(4), default=None,
                   help="images are resized to SIZE x SIZE (default 32, or the base model's; at least 4: "
                        "the network pools twice by 2)")
    p.add_argument("--color", choices=["rgb", "gray"], default=None, help="default rgb, or the base model's")
    p.add_argument("--resize", choices=["stretch", "crop", "pad"], default=None,
                   help="how an image that is not square becomes SIZE x SIZE: stretch it, crop its centre "
                        "square, or pad it to a square (default stretch, or the base model's)")
    p.add_argument("--augment", action="store_true", help="random shifts, flips, rotations, zoom, brightness")
    p.add_argument("--class-weight", choices=["balanced"], default=None,
                   help="balanced: weigh each class's loss by the inverse of its share of the images "
                        "(default: every image counts the same)")
    p.add_argument("--patience", type=_integer(1), default=None,
                   help="stop when the validation accuracy has not improved for N epochs (default: "
                        "train every epoch); either way the model keeps the best epoch's weights")
    p.add_argument("--validation", type=_fraction, default=0.2, help="fraction held out for validation")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the weights and the shuffling")
    device(p)
    p.add_argument("--out", default="model.npz", help="where to save the trained model (.npz)")
    p.add_argument("--force", action="store_true",
                   help="overwrite --out, and start over instead of refusing an earlier run's checkpoint")
    p.add_argument("--checkpoint",
                   help="save the training state here after every epoch (.npz; default: OUT with "
                        ".checkpoint.npz, removed once the model is saved)")
    p.add_argument("--resume", help="continue an interrupted run from its checkpoint, up to --epochs")
    p.add_argument("--plots", help="also write filters, feature maps, training curves and the validation "
                                   "confusion matrix as PNGs to this folder (needs matplotlib)")
    p.add_argument("--base", help="transfer learning: start from this model (from cnnlab train or demo) with "
                                  "a new head for the folder's classes")
    p.add_argument("--freeze", type=_integer(0), default=None,
                   help="with --base: keep layers 0..K-1 fixed (default: the convolutional base, every "
                        "layer before Flatten; 0 fine-tunes all)")
    p.set_defaults(run=train)

    p = command("predict", "classify images with a model from cnnlab train or demo")
    p.add_argument("model", help="a model file from cnnlab train or cnnlab demo")
    p.add_argument("images", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=_integer(1), default=1, help="show the K most probable classes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--csv", help="write the rows (file, class, probability) to this .csv file instead of a table")
    p.add_argument("--dask", nargs="?", const="threads", default=None, metavar="SCHEDULER",
                   help="read and classify the images chunk by chunk with Dask (needs --csv): threads "
                        "(without a value), processes, synchronous, or a scheduler address such as "
                        "tcp://host:8786")
    p.add_argument("--chunk-size", type=_integer(1), default=256, help="with --dask: images per task")
    p.set_defaults(run=predict)

    p = command("inspect", "plot a trained model's filters and an image's feature maps")
    p.add_argument("model", help="a model file from cnnlab train or cnnlab demo")
    p.add_argument("image", help="the image whose feature maps are drawn")
    p.add_argument("--out", default="inspect", help="folder for the PNG files")
    p.set_defaults(run=inspect)

    p = command("filter", "apply a classic kernel (edge, sobel, blur, sharpen) to an image")
    p.add_argument("image", help="the image file to filter")
    p.add_argument("--kernel", default="edge", help="the kernel (see cnnlab.filters.KERNELS)",
                   choices=["edge", "sobel_x", "sobel_y", "sharpen", "box_blur", "gaussian_blur", "identity"])
    p.add_argument("--out", required=True, help="the output image (.png, .jpg, .tif, ...)")
    p.set_defaults(run=filter_image)

    p = command("tour", "the textbook filter and conv/ReLU/pool module on a real photo")
    device(p)
    p.set_defaults(run=tour)

    p = command("bench", "time cnnlab against PyTorch CPU and scipy")
    p.add_argument("--op", default="conv2d", help="what to time",
                   choices=["conv2d", "conv2d_backward", "pool", "activation", "linear", "filter", "train",
                            "startup", "memory", "dask", "models", "all"])
    device(p, "cpu")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32", help="the arrays' dtype")
    p.add_argument("--shapes", nargs="*", help="reference shape names or N,C,H,W,F,K,S,P (default: all "
                                               "reference shapes)")
    p.add_argument("--repeat", type=_integer(1), default=10, help="timed runs per measurement (the median counts)")
    p.add_argument("--threads", type=_integer(0), default=0, help="Numba and PyTorch threads (0: all)")
    p.add_argument("--compare", default="torch,scipy", help="peers to time alongside (those installed)")
    p.add_argument("--json", help="also write the results to this .json file")
    p.add_argument("--plot", help="also draw the ratios as a bar chart in this .png (needs matplotlib)")
    p.add_argument("--size", type=_integer(3), default=16384,
                   help="--op dask: the image's side in pixels (16384: 1 GiB of float32)")
    p.add_argument("--chunk", type=_integer(3), default=2048, help="--op dask: the chunks' side in pixels")
    p.set_defaults(run=bench)

    p = command("info", "version, devices, threads, cache")
    p.set_defaults(run=info)

    p = command("cache", "show or empty the folder of compiled kernels")
    p.add_argument("action", nargs="?", choices=["info", "clear"], default="info",
                   help="info: where the compiled kernels are and how much room they take; clear: delete "
                        "them (the next run compiles them again)")
    p.set_defaults(run=cache_command)
    return parser


def main(argv=None):
    """Run one ``cnnlab`` command; returns its exit status.

    An error is printed as one line, ``cnnlab <command>: <what> (<how to fix>)``, and gives
    status 2 (``--debug`` raises it instead); Ctrl-C gives status 130.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"cnnlab {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        raise  # the reader went away: console() ends quietly
    except Exception as exc:
        if args.debug:
            raise
        print(error_line(args.command, exc), file=sys.stderr)
        return 2


def console():
    """The ``cnnlab`` command: :func:`main`, quiet when its output is cut short (``| head``)."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader went away: send what is left nowhere, as the Python docs advise
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(console())
