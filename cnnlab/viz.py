"""Looking inside a network: learned filters, feature maps, training curves, confusion matrix.

Every function writes one PNG and returns its path. matplotlib is an optional extra
(``pip install "cnnlab[viz]"``); it is imported only here, with the non-interactive Agg
backend, so plots work on machines without a screen.
"""

import os
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np

from .device import to_device, to_host

if TYPE_CHECKING:
    import cnnlab

__all__ = ["plot_filters", "plot_feature_maps", "plot_history", "plot_confusion_matrix"]


def pyplot() -> ModuleType:
    """matplotlib's ``pyplot`` on the non-interactive Agg backend; ImportError naming the extra."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("cnnlab.viz needs matplotlib: pip install 'cnnlab[viz]'") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _grid(count, columns=8):
    columns = max(1, min(columns, count))
    return (count + columns - 1) // columns, columns


def plot_filters(weights: "np.ndarray | cnnlab.layers.Conv2D", path: str | os.PathLike,
                 title: str = "learned filters") -> str | os.PathLike:
    """Draw each filter of a convolution as a small image.

    Parameters
    ----------
    weights : (F, C, KH, KW) array or a Conv2D layer
        RGB filters (C = 3) are drawn in colour, others channel-averaged in grey.
    path : str
        The PNG to write.

    Raises
    ------
    ValueError
        If ``weights`` is not 4-D, e.g. a layer without filters (Dense, ReLU, pooling).
    """
    array = getattr(weights, "weight", weights)
    if array is not None and not hasattr(array, "shape"):
        array = np.asarray(array)
    if array is None or len(array.shape) != 4:
        seen = type(weights).__name__ + ("" if array is None else f" of shape {tuple(array.shape)}")
        raise ValueError(f"plot_filters needs a convolution's (F, C, KH, KW) weights or a Conv2D layer, got {seen} "
                         "(pick a Conv2D layer from model.layers)")
    plt = pyplot()
    weights = to_host(array)
    filters = weights.shape[0]
    rows, columns = _grid(filters)
    figure, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.2 * rows + 0.4), squeeze=False)
    for index, axis in enumerate(axes.ravel()):
        axis.axis("off")
        if index >= filters:
            continue
        kernel = weights[index]
        if kernel.shape[0] == 3:
            low, high = kernel.min(), kernel.max()
            axis.imshow(((kernel - low) / (high - low + 1e-12)).transpose(1, 2, 0), interpolation="nearest")
        else:
            axis.imshow(kernel.mean(axis=0), cmap="gray", interpolation="nearest")
        axis.set_title(str(index), fontsize=7)
    figure.suptitle(title)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_feature_maps(model: "cnnlab.Model", image: np.ndarray, path: str | os.PathLike,
                      max_maps: int = 8) -> str | os.PathLike:
    """Show one image after each layer call of a model (in topological order), as the classic
    figures do.

    Parameters
    ----------
    model : Model or Sequential (of one input)
    image : (C, H, W) float array
        One input image, preprocessed as the model expects. An RGB image (C = 3) is drawn in
        colour, stretched to the full range; other inputs one channel per panel.
    path : str
    max_maps : int
        Feature maps shown per layer (the first ones).
    """
    plt = pyplot()
    image = np.asarray(image, dtype=np.float32)
    x = image[None]
    stages = [("input", image)]
    for index, layer, output in model.layer_outputs(to_device(x) if model.device == "cuda" else x):
        host = to_host(output)
        if host.ndim == 4:
            stages.append((f"{index}: {type(layer).__name__} {host.shape[1]}x{host.shape[2]}x{host.shape[3]}",
                           host[0]))
    columns = max_maps
    figure, axes = plt.subplots(len(stages), columns, figsize=(1.3 * columns, 1.4 * len(stages)), squeeze=False)
    for row, (name, maps) in enumerate(stages):
        colour = row == 0 and maps.shape[0] == 3
        for column in range(columns):
            axis = axes[row, column]
            axis.axis("off")
            if colour and column == 0:
                low, high = maps.min(), maps.max()
                axis.imshow(((maps - low) / (high - low + 1e-12)).transpose(1, 2, 0), interpolation="nearest")
            elif not colour and column < maps.shape[0]:
                axis.imshow(maps[column], cmap="viridis", interpolation="nearest")
        axes[row, 0].set_title(name, fontsize=7, loc="left")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_history(history: "cnnlab.model.History | dict", path: str | os.PathLike) -> str | os.PathLike:
    """Loss and accuracy per epoch (training and validation) from ``Sequential.fit``'s history."""
    plt = pyplot()
    values = getattr(history, "history", history)
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.5))
    for name, axis in (("loss", loss_axis), ("accuracy", accuracy_axis)):
        for key, style in ((name, "-o"), (f"val_{name}", "--s")):
            if values.get(key):
                axis.plot(range(1, len(values[key]) + 1), values[key], style, label=key, markersize=3)
        axis.set_xlabel("epoch")
        axis.set_title(name)
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str],
                          path: str | os.PathLike) -> str | os.PathLike:
    """A confusion matrix (rows: true class, columns: predicted) with the counts written in."""
    plt = pyplot()
    matrix = np.asarray(matrix)
    size = max(3.5, 0.5 * len(class_names) + 1.5)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axis.set_yticks(range(len(class_names)), class_names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            axis.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                      color="white" if matrix[i, j] > threshold else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
