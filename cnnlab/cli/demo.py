"""``cnnlab demo``: the textbook CNN trained on bundled images, its held-out accuracy and
confusion matrix, the model saved."""

import time

import cnnlab

from ..applications import classic_cnn
from ..data import load_demo_data, train_test_split
from ..metrics import confusion_matrix, format_confusion
from .common import (
    add_command,
    add_device_option,
    check_output_file,
    check_output_folder,
    compiled_note,
    compiling,
    integer,
    pick_device,
    positive_float,
    require_matplotlib,
    warm_up_model,
)
from .plots import write_plots


def add_parser(commands):
    """Add ``cnnlab demo`` and its arguments to the sub-commands."""
    p = add_command(commands, "demo", "train the textbook CNN on bundled images and report accuracy")
    p.add_argument("--data", choices=["digits", "faces"], default="digits",
                   help="scikit-learn's handwritten digits, or scikit-image's face / not-face subset")
    p.add_argument("--epochs", type=integer(1), default=15, help="passes over the training images")
    p.add_argument("--batch-size", type=integer(1), default=32, help="images per training step")
    p.add_argument("--lr", type=positive_float, default=2e-3, help="Adam's learning rate")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the weights and the shuffling")
    add_device_option(p)
    p.add_argument("--out", default="cnnlab-demo.npz", help="where to save the trained model (.npz)")
    p.add_argument("--plots", help="also write filters, feature maps, training curves and the confusion "
                                   "matrix as PNG files into this folder (needs matplotlib)")
    p.set_defaults(run=run)


def run(args):
    """Train the textbook CNN on real bundled images and report held-out accuracy."""
    check_output_file("--out", args.out, (".npz",))
    if args.plots:
        check_output_folder("--plots", args.plots)
        require_matplotlib()
    device = pick_device(args.device)
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
    optimizer = cnnlab.optim.Adam(args.lr, schedule=cnnlab.optim.CosineLR(args.epochs, 0.05))
    start = time.perf_counter()
    with compiling() as report, warm_up_model(model, x_train[:2], y_train[:2], optimizer, device):
        history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size, optimizer=optimizer,
                            validation_data=(x_test, y_test), seed=args.seed, verbose=1)
        seconds = time.perf_counter() - start
        predicted = model.predict(x_test)
    accuracy = float((predicted == y_test).mean())
    print(f"trained {args.epochs} epochs in {seconds:.1f} s{compiled_note(report)}")
    print(f"held-out accuracy: {accuracy:.2%} ({int((predicted == y_test).sum())}/{len(y_test)})")
    print("confusion matrix (rows: true class, columns: predicted class):")
    matrix = confusion_matrix(y_test, predicted, len(names))
    print(format_confusion(matrix, names))
    model.save(args.out)
    print(f"model saved to {args.out} (load it with cnnlab.load({args.out!r}))")
    if args.plots:
        write_plots(args.plots, model, history, matrix, names, x_test[0])
    return 0
