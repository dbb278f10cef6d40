"""``cnnlab train``: a CNN trained on a folder of images, one sub-folder per class, from scratch
or from the convolutional base of a saved model (``--base``), with checkpoints to resume from.

The folder is streamed (:class:`cnnlab.data.ImageFolder`): one first pass decodes every image to
find the unreadable ones and each image's channel sums (the standardization statistics), then
every epoch reads its batches again in background threads, so memory does not grow with the
folder."""

import contextlib
import os
import sys

import numpy as np

import cnnlab

from ..applications import classic_cnn
from ..callbacks import EarlyStopping
from ..data import ImageFolder, train_test_split
from ..metrics import confusion_matrix, format_confusion
from .common import (
    add_command,
    add_device_option,
    check_output_file,
    check_output_folder,
    fraction,
    integer,
    pick_device,
    positive_float,
    require_matplotlib,
)
from .locking import claim_outputs
from .models import load_trained_model
from .plots import write_plots


def add_parser(commands):
    """Add ``cnnlab train`` and its arguments to the sub-commands."""
    p = add_command(commands, "train", "train on a folder of images, one sub-folder per class")
    p.add_argument("folder", help="a folder with one sub-folder of images per class")
    p.add_argument("--epochs", type=integer(1), default=20, help="passes over the training images")
    p.add_argument("--batch-size", type=integer(1), default=32, help="images per training step")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam's learning rate")
    p.add_argument("--size", type=integer(4), default=None,
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
    p.add_argument("--patience", type=integer(1), default=None,
                   help="stop when the validation accuracy has not improved for N epochs (default: "
                        "train every epoch); either way the model keeps the best epoch's weights")
    p.add_argument("--validation", type=fraction, default=0.2, help="fraction held out for validation")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the weights and the shuffling")
    add_device_option(p)
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
    p.add_argument("--freeze", type=integer(0), default=None,
                   help="with --base: keep layers 0..K-1 fixed (default: the convolutional base, every "
                        "layer before Flatten; 0 fine-tunes all)")
    p.set_defaults(run=run)


def run(args):
    """Train a CNN on a folder of images with one sub-folder per class, from scratch or from
    the convolutional base of a saved model (``--base``)."""
    with contextlib.ExitStack() as held:
        checkpoint, own_checkpoint = _check_train_outputs(args, held)
        return _train(args, checkpoint, own_checkpoint)


def _train(args, checkpoint, own_checkpoint):
    """:func:`run` while it holds the outputs."""
    if os.path.exists(args.folder) and not os.path.isdir(args.folder):
        raise ValueError(f"{args.folder} is a file, not a folder (give a folder with one sub-folder of "
                         "images per class)")
    base = _load_base(args)
    device = pick_device(args.device)
    folder = _load_folder(args, device)
    names = folder.class_names
    train, held_out, _, _ = train_test_split(np.arange(len(folder)), folder.labels, test_size=args.validation,
                                             seed=args.seed)
    training, validation = folder.subset(train), folder.subset(held_out)
    # from scratch: the training images' statistics; transferred: the base's, since its
    # features were learned on that scale
    mean, std = training.statistics() if base is None else (base.preprocessing["mean"], base.preprocessing["std"])
    for part in (training, validation):
        part.mean, part.std = mean, std
    model = _new_model(args, base, folder.channels, names)
    model.preprocessing = dict(size=[args.size, args.size], color=args.color, mean=training.mean.tolist(),
                               std=training.std.tolist(), resize=args.resize)
    model.to(device)
    history = _fit(args, model, training, validation, checkpoint, own_checkpoint)
    if history is None:
        return 130
    matrix = _report(model, history, validation, names)
    model.to("cpu").save(args.out)
    print(f"model saved to {args.out}")
    if own_checkpoint:  # the run is complete: its training state is of no further use
        os.remove(checkpoint)
    if args.plots:
        write_plots(args.plots, model, history, matrix, names, validation[0][0])
    return 0


def _check_train_outputs(args, held):
    """Every file and folder ``train`` writes, checked before any work, and held for the run (in
    the ``held`` exit stack) as soon as their folders are known good: a checkpoint another run is
    writing is that run's, not an earlier one to resume. Returns the checkpoint path
    (``--checkpoint``, else the one being resumed, else ``<out>.checkpoint.npz``) and whether it
    is that last one, train's own, to remove once the model is saved."""
    check_output_file("--out", args.out, (".npz",), overwrite=args.force)
    if args.resume is not None and not os.path.isfile(args.resume):
        raise ValueError(f"--resume {args.resume}: no such file (give the checkpoint an interrupted "
                         "cnnlab train wrote)")
    own = os.path.splitext(args.out)[0] + ".checkpoint.npz"
    checkpoint = args.checkpoint or args.resume or own
    check_output_file("--checkpoint", checkpoint, (".npz",))
    held.enter_context(claim_outputs([args.out, checkpoint]))
    fresh = args.force or (args.resume is not None and os.path.abspath(checkpoint) == os.path.abspath(args.resume))
    if not fresh and os.path.exists(checkpoint):
        raise ValueError(f"{checkpoint} holds the state of an earlier run (continue it with --resume "
                         f"{checkpoint}, or add --force to start over)")
    if args.plots:
        check_output_folder("--plots", args.plots)
        require_matplotlib()
    return checkpoint, args.checkpoint is None and os.path.abspath(checkpoint) == os.path.abspath(own)


def _load_base(args):
    """The ``--base`` model (None without one). Its image size, colour and resizing become the
    run's (``args`` is updated); an option that differs from them, or a ``--freeze`` beyond its
    layers or without a base, is an error. Without a base, the defaults: 32, rgb, stretch."""
    base = None
    if args.base:
        base, _ = load_trained_model(args.base)
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
    return base


def _load_folder(args, device):
    """The folder as an :class:`ImageFolder`, resized as asked, every image decoded once
    (``verify``: unreadable files are skipped with a warning, the channel sums kept for the
    statistics); every class needs two images, one to train on and one to validate."""
    folder = ImageFolder(args.folder, size=(args.size, args.size), color=args.color, resize=args.resize,
                         verify=True)
    labels, names = folder.labels, folder.class_names
    counts = ", ".join(f"{name} {int((labels == i).sum())}" for i, name in enumerate(names))
    print(f"{len(folder)} images of {len(names)} classes ({counts}), resized ({args.resize}) to "
          f"{args.size}x{args.size} {args.color}; training on the {device}")
    few = [name for i, name in enumerate(names) if (labels == i).sum() < 2]
    if few:
        raise ValueError(f"each class needs at least 2 images, one to train on and one to validate; too few "
                         f"in: {', '.join(few)} (add images to those sub-folders)")
    return folder


def _convolution_base_end(model):
    """The index of the first ``Flatten`` (or global pooling): the layers before it are the
    convolutional base that transfer learning reuses."""
    return next((i for i, layer in enumerate(model.layers) if layer.ends_feature_extractor),
                len(model.layers) - 1)


def _new_model(args, base, channels, names):
    """The textbook CNN from scratch, or the base with a new head and its first layers frozen."""
    if base is None:
        model = classic_cnn(channels, args.size, len(names), seed=args.seed)
    else:
        frozen = _convolution_base_end(base) if args.freeze is None else args.freeze
        model = base.replace_head(len(names), seed=args.seed).freeze(up_to=frozen)
        kept = f"layers 0-{frozen - 1} frozen" if frozen else "every layer fine-tuned"
        print(f"transferring from {args.base}: {kept}, a new {len(names)}-class head")
    model.class_names = names
    return model


def _fit_options(args):
    """The keyword arguments of ``fit`` that ``train``'s options ask for."""
    options = dict(callbacks=[EarlyStopping(monitor="val_accuracy", patience=args.patience,
                                            restore_best_weights=True)])
    if args.class_weight is not None:
        options["class_weight"] = args.class_weight
    return options


def _fit(args, model, training, validation, checkpoint, own_checkpoint):
    """``model.fit``'s history; None when Ctrl-C stopped it (said on stderr, with how to resume).
    A run that diverged removes train's own checkpoint, so that a retry starts over."""
    try:
        return model.fit(training, epochs=args.epochs, batch_size=args.batch_size,
                         optimizer=cnnlab.optim.Adam(args.lr), validation_data=validation, seed=args.seed,
                         augment=args.augment, verbose=1, checkpoint=checkpoint, resume=args.resume,
                         **_fit_options(args))
    except KeyboardInterrupt:
        if os.path.exists(checkpoint):
            print(f"cnnlab train: interrupted; the last completed epoch is saved in {checkpoint} (run the same "
                  f"command with --resume {checkpoint} to continue)", file=sys.stderr)
        else:
            print("cnnlab train: interrupted in the first epoch, before anything could be saved (run the "
                  "command again)", file=sys.stderr)
        return None
    except FloatingPointError:
        if own_checkpoint and os.path.exists(checkpoint):
            os.remove(checkpoint)  # it holds the learning rate that diverged: a retry starts over
        raise


def _report(model, history, validation, names):
    """Print the best epoch, the validation accuracy and confusion matrix; returns the matrix.
    The best epoch is the one whose weights the model keeps: the early stopping's choice (the
    highest validation accuracy, the lower validation loss on a tie)."""
    scores = history.history["val_accuracy"]
    best = history.best_epoch if history.best_epoch is not None else int(np.argmax(scores))
    print(f"best validation accuracy: {scores[best]:.2%} at epoch {best + 1} of {len(scores)}; the model keeps "
          "that epoch's weights")
    with validation.batches(256) as batches:  # streamed: the held-out images are never all in memory
        predicted = np.concatenate([model.predict(x, batch_size=256) for x, _ in batches])
    y_val = validation.labels
    print(f"validation accuracy: {float((predicted == y_val).mean()):.2%} on {len(validation)} held-out images")
    matrix = confusion_matrix(y_val, predicted, len(names))
    print("confusion matrix on the validation images (rows: true class, columns: predicted class):")
    print(format_confusion(matrix, names))
    return matrix
