"""Getting images ready for the network.

The network ops take float images; pixels stored as 0-255 integers are
scaled to 0-1 first (the seeds call this normalization)::

    from skimage import data
    from cnnlab.data import normalize
    image = normalize(data.camera())      # uint8 (512, 512) -> float32 in [0, 1]
"""

import numpy as np

__all__ = ["normalize", "train_test_split"]


def normalize(images, dtype=np.float32):
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


def train_test_split(x, y, test_size=0.25, seed=None, stratify=True):
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
