"""``cnnlab filter``: one of the classic kernels (edge, Sobel, blur, sharpen) applied to an
image file, the result written as an image."""

import numpy as np

from .. import filters
from ..data import IMAGE_SUFFIXES, read_pixels
from .common import add_command, check_output_file, timed

EDGE_KERNELS = ("edge", "sobel_x", "sobel_y")


def add_parser(commands):
    """Add ``cnnlab filter`` and its arguments to the sub-commands."""
    p = add_command(commands, "filter", "apply a classic kernel (edge, sobel, blur, sharpen) to an image")
    p.add_argument("image", help="the image file to filter")
    p.add_argument("--kernel", default="edge", help="the kernel (see cnnlab.filters.KERNELS)",
                   choices=["edge", "sobel_x", "sobel_y", "sharpen", "box_blur", "gaussian_blur", "identity"])
    p.add_argument("--out", required=True, help="the output image (.png, .jpg, .tif, ...)")
    p.set_defaults(run=run)


def run(args):
    """Apply one of the classic kernels to an image file and write the result: edge kernels as
    their absolute response scaled so the strongest edge is white, others clipped to 0-1."""
    from skimage import io

    check_output_file("--out", args.out, IMAGE_SUFFIXES)
    image = read_pixels(args.image)
    # 'symm' mirrors the image at its border: no false edges (a bright frame) where it ends
    result, seconds = timed(filters.apply, image.astype(np.float32), args.kernel, boundary="symm")
    if args.kernel in EDGE_KERNELS:
        result = np.abs(result)  # edge strength, either sign
        result = result / max(float(result.max()), 1e-12)
    io.imsave(args.out, (np.clip(result, 0, 1) * 255).round().astype(np.uint8), check_contrast=False)
    print(f"{args.kernel} filter: {args.image} {image.shape} -> {args.out} in {seconds * 1e3:.1f} ms")
    return 0
