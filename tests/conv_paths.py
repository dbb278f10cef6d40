"""Which forward path the CPU convolution's rules choose: the check the rule tests of the
tiles (``tests/test_conv.py``) and the strips (``tests/test_strips.py``) share."""

import numpy as np

from cnnlab.functional.conv import conv_geometry
from cnnlab.kernels.cpu import conv as cpu_conv


def forward_items(x_shape, weight_shape, stride, padding, dtype=np.float32):
    """The items function ``cnnlab.functional.conv2d`` runs on the CPU for these shapes (the
    groups from the channels), as the kernels' settings now stand."""
    groups = x_shape[1] // weight_shape[1]
    geometry = conv_geometry(x_shape, weight_shape, np.float32, stride, padding, 1, groups)
    out_shape = (x_shape[0], weight_shape[0]) + geometry.out_shape
    return cpu_conv._forward_work(x_shape, weight_shape, out_shape, *geometry.args, geometry.filter_blocks,
                                  geometry.sample_block, dtype=dtype)[0]


def check_rule(module, switch, items, x_shape, weight_shape, stride, padding, taken):
    """Assert that float32 convolutions of these shapes take ``items`` exactly when ``taken``,
    that float64 ones never do, nor any with ``module``'s ``switch`` (its module-level flag)
    off; the flag is put back."""
    assert (forward_items(x_shape, weight_shape, stride, padding) is items) == taken
    assert forward_items(x_shape, weight_shape, stride, padding, np.float64) is not items
    saved = getattr(module, switch)
    setattr(module, switch, False)
    try:
        assert forward_items(x_shape, weight_shape, stride, padding) is not items
    finally:
        setattr(module, switch, saved)
