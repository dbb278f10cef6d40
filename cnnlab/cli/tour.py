"""``cnnlab tour``: the textbook pipeline on a real photograph, an edge filter, then a
convolution module (conv -> ReLU -> max pool), each timed."""

import time

import numpy as np

import cnnlab
import cnnlab.functional as F

from .. import filters
from ..data import normalize
from .common import add_command, add_device_option, pick_device, timed


def add_parser(commands):
    """Add ``cnnlab tour`` and its arguments to the sub-commands."""
    p = add_command(commands, "tour", "the textbook filter and conv/ReLU/pool module on a real photo")
    add_device_option(p)
    p.set_defaults(run=run)


def run(args):
    """The textbook pipeline on a real photograph: edge filter, then conv -> ReLU -> max pool."""
    from skimage import data as samples

    device = pick_device(args.device)
    print(f"cnnlab {cnnlab.__version__} tour on the {device}")
    camera = samples.camera()
    print(f"image: scikit-image 'camera', {camera.shape[0]}x{camera.shape[1]} {camera.dtype}")

    image = normalize(camera)
    edges, seconds = timed(filters.apply, image, "edge")
    print(f"edge filter (0 -1 0 / -1 4 -1 / 0 -1 0), mode 'same': {image.shape} -> {edges.shape}"
          f" in {seconds * 1e3:.1f} ms (first call includes compiling or loading the kernel)")
    _, seconds = timed(filters.apply, image, "edge")
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
