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


def conv_problem(samples, channels, kh, kw, sh, sw, dh, dw, pads, filters, out_w, out_h, epilogue):
    """A random float32 convolution onto ``out_h`` x ``out_w`` outputs with a window, strides,
    dilations and four-sided ``pads`` (top, bottom, left, right), with per-filter scale and
    shift and the ``epilogue`` ("relu", "tanh", "residual", "mask" or None), for the tests
    that force a path (hypothesis ``assume``s an input of at least one pixel and a window
    wider than 1x1): its arrays, the epilogue's ``code``, ``low`` and ``high``, and ``out``
    filled with NaN."""
    from types import SimpleNamespace

    from hypothesis import assume

    from cnnlab.functional import epilogue_activation
    from cnnlab.kernels import EPILOGUE_MASK

    top, bottom, left, right = pads
    height = (out_h - 1) * sh + (kh - 1) * dh + 1 - top - bottom
    width = (out_w - 1) * sw + (kw - 1) * dw + 1 - left - right
    assume(height >= 1 and width >= 1 and kh * kw > 1)
    rng = np.random.default_rng(samples * 1000 + channels * 100 + filters * 10 + out_w)
    x = rng.standard_normal((samples, channels, height, width)).astype(np.float32)
    w = rng.standard_normal((filters, channels, kh, kw)).astype(np.float32)
    scale, shift = rng.standard_normal(filters).astype(np.float32), rng.standard_normal(filters).astype(np.float32)
    other = rng.standard_normal((samples, filters, out_h, out_w)).astype(np.float32)
    code, low, high = epilogue_activation({"relu": "relu", "tanh": "tanh"}.get(epilogue))
    if epilogue == "mask":
        code = EPILOGUE_MASK
    return SimpleNamespace(x=x, w=w, scale=scale, shift=shift, other=other, code=code, low=low, high=high,
                           out=np.full(other.shape, np.nan, np.float32), strides=(sh, sw), pads=pads,
                           dilation=(dh, dw), epilogue=epilogue)


def run_forward(problem, workers):
    """``problem``'s convolution by the path the rules (as the caller set them) choose, written
    into ``problem.out``: the work ``cpu_conv._forward_work`` made."""
    (sh, sw), (top, _, left, _), (dh, dw) = problem.strides, problem.pads, problem.dilation
    out = problem.out
    work = cpu_conv._forward_work(problem.x.shape, problem.w.shape, out.shape, sh, sw, top, left, dh, dw, 1,
                                  out.shape[2], workers, dtype=problem.x.dtype)
    cpu_conv._run_forward(work, problem.x, problem.w, problem.scale, problem.shift, problem.other,
                          problem.epilogue == "residual", problem.code, problem.low, problem.high, out)
    return work


def check_against_loops(problem):
    """Assert that ``problem.out`` is the convolution with its epilogue as the loops of
    ``tests/naive.py`` compute it."""
    import naive

    top, bottom, left, right = problem.pads
    epilogue, other = problem.epilogue, problem.other
    expected = naive.fused_conv2d(problem.x, problem.w, problem.shift, problem.strides, ((top, bottom), (left, right)),
                                  problem.dilation, 1, scale=problem.scale,
                                  residual=other if epilogue == "residual" else None,
                                  spec={"relu": "relu", "tanh": "tanh"}.get(epilogue))
    if epilogue == "mask":
        expected = np.where(other > 0, expected, 0)
    np.testing.assert_allclose(problem.out, expected, rtol=2e-5, atol=2e-5 * max(1.0, np.abs(expected).max()))
