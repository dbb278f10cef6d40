"""GPU convolution: one thread per output element, grid-stride loop.

Mirrors :mod:`cnnlab.kernels.cpu.conv`; same name, same parameters.
"""

from numba import cuda

from ._launch import launch_shape


@cuda.jit
def _conv2d_forward_kernel(x, weight, bias, out, stride_h, stride_w, pad_h, pad_w,
                           dilation_h, dilation_w, groups):
    samples, filters, out_h, out_w = out.shape
    channels_per_group, kernel_h, kernel_w = weight.shape[1], weight.shape[2], weight.shape[3]
    height, width = x.shape[2], x.shape[3]
    filters_per_group = filters // groups
    size = samples * filters * out_h * out_w
    for index in range(cuda.grid(1), size, cuda.gridsize(1)):
        ow = index % out_w
        oh = (index // out_w) % out_h
        f = (index // (out_w * out_h)) % filters
        n = index // (out_w * out_h * filters)
        first_channel = (f // filters_per_group) * channels_per_group
        acc = bias[f]
        for c in range(channels_per_group):
            for i in range(kernel_h):
                h = oh * stride_h - pad_h + i * dilation_h
                if h < 0 or h >= height:
                    continue
                for j in range(kernel_w):
                    w = ow * stride_w - pad_w + j * dilation_w
                    if 0 <= w < width:
                        acc += weight[f, c, i, j] * x[n, first_channel + c, h, w]
        out[n, f, oh, ow] = acc


def conv2d_forward(x, weight, bias, out, stride_h, stride_w, pad_h, pad_w,
                   dilation_h, dilation_w, groups, block_rows, workers):
    """2-D cross-correlation of ``x`` with ``weight`` plus ``bias``, written into ``out``.

    Same contract as :func:`cnnlab.kernels.cpu.conv.conv2d_forward`; the
    arrays are device arrays.  ``block_rows`` and ``workers`` shape the CPU
    schedule and are not used here.
    """
    blocks, threads = launch_shape(out.size)
    _conv2d_forward_kernel[blocks, threads](x, weight, bias, out, stride_h, stride_w, pad_h, pad_w,
                                            dilation_h, dilation_w, groups)
