"""``cnnlab inspect``: a trained model's verdict on one image, its layers' output shapes, and
plots of its filters and of the image's feature maps after every layer."""

import numpy as np

from .common import add_command, check_output_folder, compiling, require_matplotlib
from .models import load_trained_model, prepare_image
from .plots import plot_filters_and_maps


def add_parser(commands):
    """Add ``cnnlab inspect`` and its arguments to the sub-commands."""
    p = add_command(commands, "inspect", "plot a trained model's filters and an image's feature maps")
    p.add_argument("model", help="a model file from cnnlab train or cnnlab demo")
    p.add_argument("image", help="the image whose feature maps are drawn")
    p.add_argument("--out", default="inspect", help="folder for the PNG files")
    p.set_defaults(run=run)


def run(args):
    """Draw a trained model's filters and one image's feature maps after every layer."""
    check_output_folder("--out", args.out)
    require_matplotlib()
    model, names = load_trained_model(args.model)
    x = prepare_image(model, args.image)
    with compiling():
        probabilities = model.predict_proba(x)[0]
    best = int(np.argmax(probabilities))
    print(f"{args.image}: {names[best]} ({probabilities[best]:.3f})")
    shapes = model.output_shapes(tuple(x.shape[1:]))
    for index, (layer, shape) in enumerate(zip(model.layers, shapes)):
        print(f"  layer {index}: {type(layer).__name__:<18} -> {' x '.join(str(d) for d in shape)}")
    paths = plot_filters_and_maps(args.out, model, x[0])
    print("plots written: " + ", ".join(paths))
    return 0
