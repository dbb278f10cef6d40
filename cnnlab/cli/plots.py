"""The PNG files ``demo``, ``train`` (``--plots``) and ``inspect`` write: filters, feature maps,
training curves and the confusion matrix (matplotlib, through :mod:`cnnlab.viz`)."""

import os

from .. import viz
from ..layers import Conv2D


def plot_filters_and_maps(folder, model, image):
    """The filters of every convolution layer and ``image`` after every layer; the paths."""
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


def write_plots(folder, model, history, matrix, names, image):
    """All four kinds of plot into ``folder``, their paths printed in one line."""
    paths = plot_filters_and_maps(folder, model, image)
    paths += [viz.plot_history(history, os.path.join(folder, "history.png")),
              viz.plot_confusion_matrix(matrix, names, os.path.join(folder, "confusion_matrix.png"))]
    print("plots written: " + ", ".join(paths))
