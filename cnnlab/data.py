"""Getting images ready for the network.

The network ops take float images; pixels stored as 0-255 integers are
scaled to 0-1 first (this is called normalization)::

    from skimage import data
    from cnnlab.data import normalize
    image = normalize(data.camera())      # uint8 (512, 512) -> float32 in [0, 1]
"""

import copy
import functools
import itertools
import numbers
import os
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from . import config
from .prefetch import Prefetch
from .shapes import check_int, pair

__all__ = ["normalize", "standardize", "one_hot", "train_test_split", "batches", "Augmenter",
           "read_image", "read_pixels", "load_image_folder", "ImageFolder", "image_files", "load_demo_data"]

_PathLike = str | os.PathLike


def normalize(images: np.ndarray, dtype: type | np.dtype | str = np.float32) -> np.ndarray:
    """Scale 0-255 pixel values to 0-1.

    Parameters
    ----------
    images : array_like
        Pixel values in [0, 255], of any integer or float dtype and any
        shape (one image, a batch, NCHW or HWC).
    dtype : {numpy.float32, numpy.float64}
        The result's dtype.

    Returns
    -------
    ndarray
        ``images / 255`` as ``dtype``.

    Raises
    ------
    TypeError
        For non-numeric input or a result dtype other than float32/float64.
    ValueError
        For an empty array, or values outside [0, 255] (including NaN):
        such data are not 0-255 images.

    Examples
    --------
    >>> import numpy as np
    >>> normalize(np.array([0, 51, 255], dtype=np.uint8))
    array([0. , 0.2, 1. ], dtype=float32)
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    if isinstance(images, (str, bytes)) or images is None:
        raise TypeError(f"images must be an array of pixel values, got {type(images).__name__}")
    images = np.asarray(images)
    if images.dtype.kind not in "buif":
        raise TypeError(f"images must be numeric, got dtype {images.dtype}")
    if images.size == 0:
        raise ValueError(f"images is empty (shape {images.shape})")
    low, high = images.min(), images.max()
    if not (low >= 0 and high <= 255):  # also catches NaN
        raise ValueError(
            f"images must hold 0-255 pixel values, got values from {low} to {high}"
        )
    return (images.astype(dtype) / dtype.type(255)).astype(dtype, copy=False)


def train_test_split(x: np.ndarray, y: np.ndarray, test_size: float = 0.25, seed: int | None = None,
                     stratify: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split samples into a training and a held-out part, each class split in proportion.

    Parameters
    ----------
    x : array, (N, ...)
    y : (N,) integer labels
    test_size : float in (0, 1)
        Fraction of every class held out (rounded; at least one sample of a class with two
        or more).
    seed : int or None
    stratify : bool
        Split each class separately (default) or the whole set at once.

    Returns
    -------
    x_train, x_test, y_train, y_test
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be one label per sample (1-D), got shape {y.shape}")
    if x.ndim == 0:
        raise ValueError("x must be an array of samples (N, ...), got a scalar")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same length, got {x.shape[0]} and {y.shape[0]}")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be between 0 and 1, got {test_size}")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == label) for label in np.unique(y)] if stratify else [np.arange(len(y))]
    test = []
    for members in groups:
        members = rng.permutation(members)
        count = int(round(test_size * len(members)))
        if len(members) > 1:
            count = min(max(count, 1), len(members) - 1)
        test.append(members[:count])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(y)), test)
    train = rng.permutation(train)
    return x[train], x[test], y[train], y[test]


def standardize(images: np.ndarray, mean: Sequence[float] | np.ndarray | None = None,
                std: Sequence[float] | np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel standardization of NCHW images: ``(x - mean[c]) / std[c]``.

    Parameters
    ----------
    images : (N, C, H, W) float array
    mean, std : (C,) arrays or None
        The statistics to apply; computed from ``images`` when None (training data), and
        then to be stored and reused for prediction (``Sequential.preprocessing`` keeps them).

    Returns
    -------
    standardized : float array like ``images``
    mean, std : (C,) float64 arrays, the statistics used
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be NCHW (4 dimensions), got shape {images.shape}")
    if images.dtype.kind != "f":
        raise TypeError(f"images must be float (use normalize first), got dtype {images.dtype}")
    if mean is None or std is None:
        mean = images.mean(axis=(0, 2, 3), dtype=np.float64)
        std = images.std(axis=(0, 2, 3), dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64).reshape(-1)
    std = np.asarray(std, dtype=np.float64).reshape(-1)
    if mean.shape != (images.shape[1],) or std.shape != (images.shape[1],):
        raise ValueError(f"mean and std need one value per channel ({images.shape[1]}), "
                         f"got {mean.shape} and {std.shape}")
    safe = np.where(std > 0, std, 1.0)
    out = (images - mean[None, :, None, None]) / safe[None, :, None, None]
    return out.astype(images.dtype, copy=False), mean, std


def one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    """``(N,)`` integer labels to ``(N, classes)`` float32 rows with a single 1."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"labels must lie in [0, {classes}), got {labels.min()} to {labels.max()}")
    out = np.zeros((labels.shape[0], classes), dtype=np.float32)
    out[np.arange(labels.shape[0]), labels] = 1
    return out


def batches(x: np.ndarray, y: np.ndarray | None = None, batch_size: int = 32, shuffle: bool = False,
            seed: int | None = None) -> Iterator[np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """Iterate over mini-batches ``(x_batch, y_batch)`` (or ``x_batch`` without ``y``)."""
    x = np.asarray(x)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.random.default_rng(seed).permutation(len(x)) if shuffle else np.arange(len(x))
    for start in range(0, len(x), batch_size):
        index = order[start:start + batch_size]
        yield (x[index], np.asarray(y)[index]) if y is not None else x[index]


class Augmenter:
    """Random image augmentation, applied per batch with the training generator.

    Each image of a batch gets its own random shift, horizontal flip, rotation, zoom,
    brightness and contrast change, drawn from the ``rng`` that ``Sequential.fit`` passes (so
    a seeded run repeats exactly). Geometry uses ``scipy.ndimage`` (edges repeated), and the
    output keeps the batch's shape and dtype. Validation data are never augmented.

    Parameters
    ----------
    shift : float in [0, 1)
        Largest shift as a fraction of the height/width.
    flip : bool
        Flip left-right with probability 1/2.
    rotation : float in [0, 180]
        Largest rotation in degrees, either way.
    zoom : float in [0, 1)
        Largest zoom in or out, as a fraction (0.1: 90 % to 110 %).
    brightness : float in [0, 1]
        Largest brightness offset (added; images in [0, 1]).
    contrast : float in [0, 1]
        Largest contrast change, as a fraction (scales around the image mean).

    Raises
    ------
    TypeError, ValueError
        Naming the parameter, for a non-number or a value outside its range; calling it on a
        batch that is not a float NCHW array.
    """

    def __init__(self, shift: float = 0.1, flip: bool = True, rotation: float = 10.0, zoom: float = 0.1,
                 brightness: float = 0.1, contrast: float = 0.1):
        self.shift = _amount("shift", shift, 1.0, upper_open=True)
        if not isinstance(flip, (bool, np.bool_)):
            raise TypeError(f"flip must be True or False, got {flip!r}")
        self.flip = bool(flip)
        self.rotation = _amount("rotation", rotation, 180.0)
        self.zoom = _amount("zoom", zoom, 1.0, upper_open=True)
        self.brightness = _amount("brightness", brightness, 1.0)
        self.contrast = _amount("contrast", contrast, 1.0)

    def __call__(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        from scipy import ndimage

        batch = np.asarray(batch)
        if batch.ndim != 4:
            raise ValueError(f"augmentation takes NCHW batches, got shape {batch.shape}")
        if batch.dtype.kind != "f":
            raise TypeError(f"augmentation takes float images (use cnnlab.data.normalize first), "
                            f"got dtype {batch.dtype}")
        out = np.empty_like(batch)
        height, width = batch.shape[2:]
        for i, image in enumerate(batch):
            image = image.astype(np.float64)
            if self.flip and rng.random() < 0.5:
                image = image[:, :, ::-1]
            if self.rotation:
                angle = rng.uniform(-self.rotation, self.rotation)
                image = ndimage.rotate(image, angle, axes=(1, 2), reshape=False, order=1, mode="nearest")
            if self.zoom:
                image = _zoom_same_size(image, rng.uniform(1 - self.zoom, 1 + self.zoom))
            if self.shift:
                offset = (0, rng.uniform(-self.shift, self.shift) * height,
                          rng.uniform(-self.shift, self.shift) * width)
                image = ndimage.shift(image, offset, order=1, mode="nearest")
            if self.contrast:
                mean = image.mean()
                image = (image - mean) * rng.uniform(1 - self.contrast, 1 + self.contrast) + mean
            if self.brightness:
                image = image + rng.uniform(-self.brightness, self.brightness)
            out[i] = image
        return out

    def config(self) -> dict:
        return dict(shift=self.shift, flip=self.flip, rotation=self.rotation, zoom=self.zoom,
                    brightness=self.brightness, contrast=self.contrast)


def _amount(name, value, upper, upper_open=False):
    """``value`` as a float in ``[0, upper]`` (``[0, upper)`` when ``upper_open``), or raise
    naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not (0 <= value <= upper) or (upper_open and value == upper):
        bracket = ")" if upper_open else "]"
        raise ValueError(f"{name} must lie in [0, {upper:g}{bracket}, got {value}")
    return value


def _zoom_same_size(image, factor):
    """Zoom a (C, H, W) image about its centre, keeping (H, W)."""
    from scipy import ndimage

    channels, height, width = image.shape
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    matrix = np.diag([1.0, 1 / factor, 1 / factor])
    offset = np.concatenate([[0.0], centre - centre / factor])
    return ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="nearest")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


RESIZE_MODES = ("stretch", "crop", "pad")

_HIGH_DEPTH_GREY = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1}


def image_files(paths: _PathLike | Sequence[_PathLike]) -> list[str]:
    """The files among ``paths`` and, recursively and in sorted order, the image files inside
    the folders among them (what ``cnnlab predict`` classifies).

    Parameters
    ----------
    paths : path or list of paths
        Image files (taken whatever their suffix) and folders (searched for
        :data:`IMAGE_SUFFIXES`, in any case).

    Returns
    -------
    list of str

    Raises
    ------
    FileNotFoundError
        For a path that does not exist.
    ValueError
        When no image file is found.
    TypeError
        For ``paths`` that is not a path or a non-empty list of paths.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    if not isinstance(paths, (list, tuple)) or not paths:
        raise TypeError(f"paths must be a path or a non-empty list of paths, got {paths!r}")
    files = []
    for path in paths:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"paths must hold file or folder paths, got {type(path).__name__} {path!r}")
        path = os.fspath(path)
        if os.path.isdir(path):
            for root, _, names in sorted(os.walk(path)):
                files += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_SUFFIXES)]
        elif os.path.exists(path):
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    if not files:
        raise ValueError(f"paths holds no image files ({', '.join(map(str, paths))}; the folders are "
                         f"searched for {', '.join(IMAGE_SUFFIXES)} files)")
    return files


def check_color(color: str) -> None:
    """Raise ValueError unless ``color`` is 'rgb' or 'gray'."""
    if color not in ("rgb", "gray"):
        raise ValueError(f"color must be 'rgb' or 'gray', got {color!r}")


def check_resize(resize: str) -> None:
    """Raise ValueError unless ``resize`` is one of :data:`RESIZE_MODES`."""
    if not isinstance(resize, str) or resize not in RESIZE_MODES:
        raise ValueError(f"resize must be 'stretch', 'crop' or 'pad', got {resize!r}")


def _on_white(image, mode):
    """``image`` with its transparency composited onto white, in ``mode`` ('L' or 'RGB')."""
    from PIL import Image

    image = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", image.size, "white"), image).convert(mode)


def _pillow_pixels(image):
    """A Pillow image as float64 (H, W) for grey modes or (H, W, 3) otherwise, in [0, 1]."""
    if image.mode in _HIGH_DEPTH_GREY:  # 16-bit and float grey: convert('L') would clip, not scale
        return np.clip(np.asarray(image, dtype=np.float64) / _HIGH_DEPTH_GREY[image.mode], 0, 1)
    grey = image.mode in ("1", "L", "LA", "La")
    transparent = "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info
    mode = "L" if grey else "RGB"
    image = _on_white(image, mode) if transparent else image.convert(mode)
    return np.asarray(image, dtype=np.float64) / 255


def read_pixels(path: _PathLike) -> np.ndarray:
    """Read one image file at its own size: a float64 (H, W) or (H, W, 3) array in [0, 1].

    The file is decoded by Pillow and turned upright by its EXIF orientation tag. Grey images
    (1-bit, 8-bit, 16-bit, float) give (H, W); every other mode (RGB, palette, CMYK, YCbCr, ...)
    gives RGB. Transparent pixels are composited onto white. An animation gives its first frame.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file, if it cannot be read or decoded as an image.
    """
    from PIL import Image, ImageOps

    if not os.path.exists(path):
        raise FileNotFoundError(f"no such image: {path}")
    try:
        with Image.open(path) as image:
            image.seek(0)  # the first frame of an animated GIF or multi-page TIFF
            pixels = _pillow_pixels(ImageOps.exif_transpose(image))
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... for bad files
        raise ValueError(f"{path} is not a readable image: {exc}") from None
    if pixels.size == 0:
        raise ValueError(f"{path} is not a readable image: it has no pixels (shape {pixels.shape})")
    return pixels


def _resize(image, size, resize):
    """Resize an (H, W, C) image to ``size`` = (height, width) by ``resize`` (see read_image)."""
    from skimage import transform

    height, width = size
    rows, cols, channels = image.shape
    if resize == "crop":  # cut the source to the target's aspect ratio about its centre
        keep_rows = min(rows, max(1, round(cols * height / width)))
        keep_cols = min(cols, max(1, round(rows * width / height)))
        top, left = (rows - keep_rows) // 2, (cols - keep_cols) // 2
        image = image[top:top + keep_rows, left:left + keep_cols]
    elif resize == "pad":  # fit the whole image inside, centred on black
        scale = min(height / rows, width / cols)
        inner_rows = min(height, max(1, round(rows * scale)))
        inner_cols = min(width, max(1, round(cols * scale)))
        out = np.zeros((height, width, channels))
        top, left = (height - inner_rows) // 2, (width - inner_cols) // 2
        out[top:top + inner_rows, left:left + inner_cols] = transform.resize(
            image, (inner_rows, inner_cols, channels), anti_aliasing=True)
        return out
    return transform.resize(image, (height, width, channels), anti_aliasing=True)


def read_image(path: _PathLike, size: int | tuple[int, int], color: str = "rgb", resize: str = "stretch") -> np.ndarray:
    """Read one image file as a (C, H, W) float32 array in [0, 1], resized to ``size``.

    Parameters
    ----------
    path : str or path
        Any file Pillow reads: PNG, JPEG, BMP, GIF, TIFF, WebP, ... It is turned upright by its
        EXIF orientation tag; an animated GIF gives its first frame.
    size : int or (int, int)
        The output (height, width); one int means a square.
    color : {'rgb', 'gray'}
        'rgb' gives 3 channels (grey images are repeated); 'gray' gives 1 channel, the
        luminance ``0.2125 R + 0.7154 G + 0.0721 B`` of colour images. Transparent pixels are
        composited onto white; CMYK, palette and 16-bit images are converted.
    resize : {'stretch', 'crop', 'pad'}
        'stretch' scales each side to ``size`` (the aspect ratio changes); 'crop' cuts the
        centre of the image to the aspect ratio of ``size``, then scales it; 'pad' scales the
        whole image to fit inside ``size`` and fills the rest with black (zeros), centred.

    Returns
    -------
    ndarray, (C, H, W) float32 in [0, 1]

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    ValueError
        Naming the file if it cannot be read or decoded as an image; naming ``size``,
        ``color`` or ``resize`` for a bad value.
    TypeError
        Naming ``size`` if it is not an int or a pair of ints.
    """
    from skimage import color as skcolor

    size = pair("size", size, 1)
    check_color(color)
    check_resize(resize)
    image = read_pixels(path)
    if color == "gray":
        image = skcolor.rgb2gray(image) if image.ndim == 3 else image
        image = image[..., None]
    elif image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = _resize(image, size, resize)
    return np.clip(image, 0, 1).transpose(2, 0, 1).astype(np.float32)


def _class_files(folder):
    """The files under ``folder`` and all its sub-folders, in sorted order, hidden ones left out."""
    files = []
    for root, folders, names in os.walk(folder):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        files += [os.path.join(root, name) for name in sorted(names) if not name.startswith(".")]
    return files


def _list_image_folder(path):
    """``(class names, files, labels)`` of a folder of class sub-folders (hidden ones left
    out), before any file is read; ``FileNotFoundError`` when ``path`` is not a folder."""
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no such folder: {path}")
    class_names = sorted(entry for entry in os.listdir(path)
                         if os.path.isdir(os.path.join(path, entry)) and not entry.startswith("."))
    files, labels = [], []
    for label, name in enumerate(class_names):
        found = _class_files(os.path.join(path, name))
        files += found
        labels += [label] * len(found)
    return class_names, files, labels


def _warn_skipped(skipped, stacklevel):
    """The one warning that counts and names (the first five) the files left out as unreadable."""
    if skipped:
        shown = ", ".join(skipped[:5]) + (f" and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        warnings.warn(f"skipped {len(skipped)} file(s) that are not readable images: {shown}",
                      stacklevel=stacklevel + 1)


def _check_classes(path, labels, class_names):
    """``ValueError`` for a folder without readable images, or with images of a single class."""
    if not len(labels):
        raise ValueError(f"{path} holds no readable images in class sub-folders "
                         "(expected one sub-folder of images per class)")
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(class_names))
    non_empty = [name for name, count in zip(class_names, counts) if count]
    if len(non_empty) < 2:
        raise ValueError(f"{path} has images of a single class ({non_empty[0]!r}); a classifier needs "
                         "at least two class sub-folders")


def load_image_folder(path: _PathLike, size: int | tuple[int, int] = (64, 64), color: str = "rgb",
                      resize: str = "stretch") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Load a folder with one sub-folder per class (the Keras / torchvision layout).

    ::

        photos/
            cats/   a.jpg b.png indoors/c.jpg ...
            memes/  d.jpg ...

    Every image is read into memory; :class:`ImageFolder` reads the same folder lazily, batch
    by batch, for folders larger than memory.

    Parameters
    ----------
    path : str or path
    size : int or (int, int)
        Every image is resized to (height, width); one int means a square.
    color : {'rgb', 'gray'}
    resize : {'stretch', 'crop', 'pad'}
        How the aspect ratio is handled, as in `read_image`.

    Returns
    -------
    images : (N, C, H, W) float32 in [0, 1]
    labels : (N,) int64, the index of the class in ``class_names``
    class_names : list of str, the sub-folder names in sorted order

    Notes
    -----
    A class takes every file in its sub-folder and, recursively, in the folders below it, in
    sorted order. Hidden files and folders (names starting with '.') are left out. Files that
    are not images or cannot be read are skipped with one warning that counts and names them.
    An empty folder or a single class is a ``ValueError``.
    """
    size = pair("size", size, 1)
    check_color(color)  # here too: read_image's ValueError would count every file as unreadable
    check_resize(resize)
    class_names, files, file_labels = _list_image_folder(path)
    images, labels, skipped = [], [], []
    for file, label in zip(files, file_labels):
        try:
            images.append(read_image(file, size, color, resize))
            labels.append(label)
        except (FileNotFoundError, ValueError):  # FileNotFoundError: a dangling link
            skipped.append(file)
    _warn_skipped(skipped, stacklevel=2)
    _check_classes(path, labels, class_names)
    return np.stack(images), np.array(labels, dtype=np.int64), class_names


def _check_header(file):
    """``ValueError`` unless Pillow recognizes ``file`` as an image from its header (nothing is
    decoded); ``FileNotFoundError`` for a dangling link."""
    from PIL import Image

    if not os.path.exists(file):
        raise FileNotFoundError(f"no such image: {file}")
    try:
        with Image.open(file):
            pass
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, ... for non-images
        raise ValueError(f"{file} is not a readable image: {exc}") from None


def _channel_sums(image):
    """(2, C) float64: the sum and the sum of squares of each channel of a (C, H, W) image."""
    image = image.astype(np.float64)
    return np.stack([image.sum(axis=(1, 2)), np.square(image).sum(axis=(1, 2))])


def _augmenter(augment, name="augment"):
    """``augment(batch, rng) -> batch`` for ``augment=True`` (an :class:`Augmenter`), a callable
    (as given), or None (False, None)."""
    if augment is True:
        return Augmenter()
    if augment is False or augment is None:
        return None
    if not callable(augment):
        raise TypeError(f"{name} must be True, False, None or a callable, got {augment!r}")
    return augment


class ImageFolder:
    """A folder of class sub-folders read lazily: the files are listed now and decoded batch by
    batch, in background threads, while the network computes, so the folder need not fit in
    memory.

    It is a dataset of ``(image, label)`` samples, PyTorch's ``Dataset`` protocol:
    ``len(folder)`` images, ``folder[i]`` is ``((C, H, W) float32 image, int label)``. Give it to
    :meth:`cnnlab.Model.fit` as ``x`` (no ``y``), as ``validation_data``, or to
    :meth:`cnnlab.Model.evaluate`; or iterate over :meth:`batches` in a loop of your own.

    Parameters
    ----------
    path : str or path
        One sub-folder per class, as :func:`load_image_folder` reads: the same classes, files,
        order and hidden-file rules.
    size : int or (int, int)
        Every image is resized to (height, width); one int means a square.
    color : {'rgb', 'gray'}
    resize : {'stretch', 'crop', 'pad'}
        As :func:`read_image`.
    augment : bool, callable or None
        Applied to each batch :meth:`read_batch` reads (so to every training batch), on the
        images in [0, 1], before standardization: ``True`` is :class:`Augmenter` with its
        defaults, a callable is ``augment(batch, rng) -> batch``. It runs in the loading
        threads, so a callable of your own must be safe to call from several threads at once
        (an :class:`Augmenter` is).
    mean, std : (C,) arrays or None
        Standardize every image with :func:`standardize` (``(x - mean) / std``) after it is
        read; None gives images in [0, 1]. :meth:`statistics` computes them.
    verify : bool
        False (the default) reads each file's header now (fast: nothing is decoded) and leaves
        out the files Pillow does not recognize as images. True decodes every image now, in
        background threads and one at a time in memory, and leaves out every file that cannot
        be read, exactly as :func:`load_image_folder` would; it also remembers each image's
        channel sums, so that :meth:`statistics` needs no second pass.

    Attributes
    ----------
    class_names : list of str
        The sub-folder names, in sorted order.
    files : list of str
        The image files, in order.
    labels : (N,) int64 array
        The index of each file's class in ``class_names``.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a folder.
    ValueError
        If it holds no readable images, or images of a single class; naming ``size``,
        ``color`` or ``resize`` for a bad value.

    Notes
    -----
    The files left out are named in one warning that counts them, as :func:`load_image_folder`
    does. A file whose header reads but whose pixels do not (a truncated download) is found
    with ``verify=False`` only when it is decoded: reading it raises the ``ValueError`` of
    :func:`read_image`, naming it.
    """

    def __init__(self, path: _PathLike, size: int | tuple[int, int] = (64, 64), color: str = "rgb",
                 resize: str = "stretch", augment: bool | Callable | None = None,
                 mean: Sequence[float] | np.ndarray | None = None, std: Sequence[float] | np.ndarray | None = None,
                 verify: bool = False):
        self.size = pair("size", size, 1)
        check_color(color)
        check_resize(resize)
        if not isinstance(verify, (bool, np.bool_)):
            raise TypeError(f"verify must be True or False, got {verify!r}")
        self.path, self.color, self.resize = os.fspath(path), color, resize
        self.augment = _augmenter(augment)
        self.mean, self.std = mean, std
        self.class_names, files, labels = _list_image_folder(path)
        check = self._decoded if verify else self._headers
        kept, self._sums, skipped = check(files)
        _warn_skipped([files[i] for i in skipped], stacklevel=2)
        self.files = [files[i] for i in kept]
        self.labels = np.array([labels[i] for i in kept], dtype=np.int64)
        _check_classes(path, self.labels, self.class_names)

    @property
    def mean(self) -> np.ndarray | None:
        """The per-channel means standardization subtracts ((C,) float64), or None."""
        return self._mean

    @mean.setter
    def mean(self, value: Sequence[float] | np.ndarray | None) -> None:
        self._mean = self._statistic("mean", value)

    @property
    def std(self) -> np.ndarray | None:
        """The per-channel standard deviations standardization divides by ((C,) float64), or None."""
        return self._std

    @std.setter
    def std(self, value: Sequence[float] | np.ndarray | None) -> None:
        self._std = self._statistic("std", value)

    def _statistic(self, name, value):
        if value is None:
            return None
        value = np.asarray(value, dtype=np.float64).reshape(-1)
        if value.shape != (self.channels,):
            raise ValueError(f"{name} must hold one value per channel ({self.channels}), got {value.shape[0]}")
        return value

    def _chunks(self, files, read):
        """``read(file)`` of every file, 64 files per job on the loading threads: ``(kept
        indices, their results, skipped indices)``; a file is skipped when ``read`` raises
        ``ValueError`` or ``FileNotFoundError`` (a dangling link)."""
        def job(start):
            results = []
            for file in files[start:start + 64]:
                try:
                    results.append((True, read(file)))
                except (FileNotFoundError, ValueError):
                    results.append((False, None))
            return results

        kept, results, skipped = [], [], []
        jobs = (functools.partial(job, start) for start in range(0, len(files), 64))
        with Prefetch(jobs, config.LOADER_THREADS, config.PREFETCH_BATCHES) as chunks:
            for ok, result in itertools.chain.from_iterable(chunks):
                index = len(kept) + len(skipped)
                if ok:
                    kept.append(index)
                    results.append(result)
                else:
                    skipped.append(index)
        return kept, results, skipped

    def _read_sums(self, file):
        return _channel_sums(read_image(file, self.size, self.color, self.resize))

    def _headers(self, files):
        kept, _, skipped = self._chunks(files, _check_header)
        return kept, None, skipped

    def _decoded(self, files):
        kept, sums, skipped = self._chunks(files, self._read_sums)
        return kept, (np.stack(sums) if sums else np.zeros((0, 2, self.channels))), skipped

    @property
    def channels(self) -> int:
        """3 for 'rgb', 1 for 'gray'."""
        return 3 if self.color == "rgb" else 1

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return (self.channels,) + tuple(self.size)

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return (f"ImageFolder({self.path!r}, {len(self)} images of {len(self.class_names)} classes, "
                f"size={tuple(self.size)}, color={self.color!r})")

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        """``(image, label)``: image ``index`` read, resized and standardized (never augmented)."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"an ImageFolder is indexed by an integer, got {index!r}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"image index {index} is out of range for {len(self)} images")
        index = int(index) % len(self)
        image = read_image(self.files[index], self.size, self.color, self.resize)[None]
        return self._standardized(image)[0], int(self.labels[index])

    def _standardized(self, batch):
        if self.mean is None or self.std is None:
            return batch
        return standardize(batch, self.mean, self.std)[0]

    def read_batch(self, indices: Sequence[int] | np.ndarray, rng: np.random.Generator | None = None,
                   augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``(images (n, C, H, W) float32, labels (n,) int64)`` of the images at ``indices``: read,
        augmented (with :attr:`augment`, drawing from ``rng``; not with ``augment=False``: what
        evaluation reads), then standardized."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        batch = np.empty((len(indices),) + self.sample_shape, np.float32)
        for row, index in enumerate(indices):
            batch[row] = read_image(self.files[index], self.size, self.color, self.resize)
        if self.augment is not None and augment:
            rng = rng if rng is not None else np.random.default_rng()
            batch = np.ascontiguousarray(self.augment(batch, rng), dtype=np.float32)
        return self._standardized(batch), self.labels[indices]

    def subset(self, indices: Sequence[int] | np.ndarray) -> "ImageFolder":
        """The images at ``indices`` (in that order) as an ImageFolder with the same settings:
        a training or validation part of the folder."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) and (indices.min() < -len(self) or indices.max() >= len(self)):
            raise IndexError(f"indices must lie in [0, {len(self)}), got {indices.min()} to {indices.max()}")
        part = copy.copy(self)
        part.files = [self.files[i] for i in indices]
        part.labels = self.labels[indices]
        part._sums = self._sums[indices] if self._sums is not None else None
        return part

    def statistics(self, sample: int | None = None, seed: int | None = 0) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, std)``, each ``(C,)`` float64: the per-channel statistics of the images as
        read (in [0, 1], not augmented), for ``mean=`` and ``std=``.

        Parameters
        ----------
        sample : int or None
            None: every image, streamed through the loading threads (one pass over the
            folder, in constant memory; no pass at all after ``verify=True``). An int: that
            many images drawn at random without replacement (all of them if fewer), for a
            quick estimate on a large folder.
        seed : int or None
            Seeds the draw of ``sample``.
        """
        indices = np.arange(len(self))
        if sample is not None:
            sample = check_int("sample", sample, 1)
            if sample < len(self):
                indices = np.sort(np.random.default_rng(seed).choice(len(self), sample, replace=False))
        if self._sums is not None:
            sums = self._sums[indices]
        else:
            files = [self.files[i] for i in indices]
            _, sums, skipped = self._chunks(files, self._read_sums)
            if skipped:
                raise ValueError(f"{files[skipped[0]]} is not a readable image (statistics read every image)")
        total = np.sum(sums, axis=0)
        count = len(indices) * self.size[0] * self.size[1]
        mean = total[0] / count
        return mean, np.sqrt(np.maximum(total[1] / count - mean ** 2, 0.0))

    def batches(self, batch_size: int = 32, shuffle: bool = False, seed: int | None = None,
                threads: int | None = None, ahead: int | None = None) -> Prefetch:
        """Iterate over ``(images, labels)`` batches (:meth:`read_batch`), read ahead on
        background threads: for a loop of your own.

        ``shuffle`` draws the order from ``seed``; each batch's augmentation draws from its own
        generator, seeded from ``seed`` and the batch's position, so a seeded pass repeats
        exactly. ``threads`` (default :data:`cnnlab.config.LOADER_THREADS`) read ``ahead``
        batches (default :data:`cnnlab.config.PREFETCH_BATCHES`) at most ahead of the loop.
        Leaving the loop early (``break``, an exception, Ctrl-C) stops the threads; so does
        ``close()`` on the returned iterator, or using it in a ``with`` block.
        """
        batch_size = check_int("batch_size", batch_size, 1)
        root = np.random.SeedSequence(seed)
        order = np.random.default_rng(root.spawn(1)[0]).permutation(len(self)) if shuffle else np.arange(len(self))

        def jobs():
            for start in range(0, len(order), batch_size):
                rng = np.random.default_rng(root.spawn(1)[0])
                yield functools.partial(self.read_batch, order[start:start + batch_size], rng)

        return Prefetch(jobs(), config.LOADER_THREADS if threads is None else threads,
                        config.PREFETCH_BATCHES if ahead is None else ahead)


def _digits():
    """scikit-learn's digits as ``(images (1797, 8, 8) float64 0-16, labels)``, read from the file
    it ships without importing scikit-learn (which takes longer than the rest of the demo's
    start); through ``sklearn.datasets.load_digits`` when that file is not where it was."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            table = np.loadtxt(path, delimiter=",")  # 64 pixels, then the label, per row
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images, digits.target


def load_demo_data(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(images NCHW float32 in [0, 1], labels, class names)`` of a bundled data set: 'digits'
    (scikit-learn's 8x8 handwritten digits) or 'faces' (scikit-image's 25x25 face / not-face
    subset)."""
    if name == "digits":
        pixels, target = _digits()
        images = (pixels / 16.0).astype(np.float32)[:, None]  # 8x8, 17 grey levels
        return images, target.astype(np.int64), [str(d) for d in range(10)]
    from skimage import data as samples

    faces = samples.lfw_subset()  # 100 faces, then 100 non-faces, 25x25 in [0, 1]
    labels = np.array([1] * 100 + [0] * 100, dtype=np.int64)
    return faces.astype(np.float32)[:, None], labels, ["not face", "face"]
