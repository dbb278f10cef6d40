"""The model files the commands read (``predict``, ``inspect``, ``train --base``): a cnnlab
model saved by ``cnnlab train`` or ``cnnlab demo``, or an ONNX network, and one image made
ready for it as it was for training."""

import importlib.util
import os
import sys
import zipfile

import cnnlab

from ..data import read_image, standardize

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def load_trained_model(path):
    """``(model, class names)`` of a model saved by ``cnnlab train`` or ``cnnlab demo`` (it keeps
    its preprocessing), or of an ONNX file."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such model file: {path}")
    if path.lower().endswith(".onnx"):
        return load_onnx_model(path)
    try:
        model = cnnlab.load(path)
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise ValueError(f"{path} is not a readable cnnlab model: {exc} (the file may be cut short: save or "
                         "train it again)") from None
    if "size" not in (model.preprocessing or {}):
        raise ValueError(f"{path} keeps no image preprocessing (train it with cnnlab train)")
    names = model.class_names or [str(i) for i in range(model.output_shapes(model.input_shape)[-1][0])]
    return model, names


def load_onnx_model(path):
    """A network exported to ONNX, with the preprocessing torchvision's networks expect: the
    file's image size, RGB in [0, 1] standardized with the ImageNet statistics (grey images:
    none)."""
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


def prepare_image(model, file):
    """One image file as the model's input batch ``(1, C, H, W)``; ValueError if unreadable."""
    settings = model.preprocessing
    options = {"resize": settings["resize"]} if "resize" in settings else {}
    image = read_image(file, settings["size"], settings.get("color", "rgb"), **options)
    return standardize(image[None], settings.get("mean"), settings.get("std"))[0]
