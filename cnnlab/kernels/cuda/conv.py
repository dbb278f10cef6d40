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


@cuda.jit
def _conv2d_backward_input_kernel(grad_out, weight, grad_x, stride_h, stride_w, pad_h, pad_w,
                                  dilation_h, dilation_w, groups):
    samples, channels, height, width = grad_x.shape
    filters, channels_per_group, kernel_h, kernel_w = weight.shape
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    filters_per_group = filters // groups
    size = samples * channels * height * width
    for index in range(cuda.grid(1), size, cuda.gridsize(1)):
        w = index % width
        h = (index // width) % height
        c = (index // (width * height)) % channels
        n = index // (width * height * channels)
        g = c // channels_per_group
        acc = grad_out[0, 0, 0, 0] * 0  # a zero of the gradient dtype
        for f in range(g * filters_per_group, (g + 1) * filters_per_group):
            for i in range(kernel_h):
                top = h + pad_h - i * dilation_h  # = oh * stride_h for the output row that saw (h, w)
                if top < 0 or top % stride_h != 0 or top // stride_h >= out_h:
                    continue
                oh = top // stride_h
                for j in range(kernel_w):
                    left = w + pad_w - j * dilation_w
                    if left < 0 or left % stride_w != 0 or left // stride_w >= out_w:
                        continue
                    acc += weight[f, c - g * channels_per_group, i, j] * grad_out[n, f, oh, left // stride_w]
        grad_x[n, c, h, w] = acc


@cuda.jit
def _conv2d_backward_weight_kernel(x, grad_out, grad_weight, stride_h, stride_w, pad_h, pad_w,
                                   dilation_h, dilation_w, groups):
    filters, channels_per_group, kernel_h, kernel_w = grad_weight.shape
    samples, height, width = x.shape[0], x.shape[2], x.shape[3]
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    filters_per_group = filters // groups
    for index in range(cuda.grid(1), grad_weight.size, cuda.gridsize(1)):
        j = index % kernel_w
        i = (index // kernel_w) % kernel_h
        c = (index // (kernel_w * kernel_h)) % channels_per_group
        f = index // (kernel_w * kernel_h * channels_per_group)
        channel = (f // filters_per_group) * channels_per_group + c
        acc = grad_out[0, 0, 0, 0] * 0
        for n in range(samples):
            for oh in range(out_h):
                h = oh * stride_h - pad_h + i * dilation_h
                if h < 0 or h >= height:
                    continue
                for ow in range(out_w):
                    w = ow * stride_w - pad_w + j * dilation_w
                    if 0 <= w < width:
                        acc += grad_out[n, f, oh, ow] * x[n, channel, h, w]
        grad_weight[f, c, i, j] = acc


@cuda.jit
def _sum_filter_planes_kernel(grad_out, grad_bias):
    samples, filters, out_h, out_w = grad_out.shape
    for f in range(cuda.grid(1), filters, cuda.gridsize(1)):
        acc = grad_out[0, 0, 0, 0] * 0
        for n in range(samples):
            for oh in range(out_h):
                for ow in range(out_w):
                    acc += grad_out[n, f, oh, ow]
        grad_bias[f] = acc


def conv2d_backward_input(grad_out, weight, grad_x, stride_h, stride_w, pad_h, pad_w,
                          dilation_h, dilation_w, groups, block_rows, workers):
    """Gradient with respect to the input; contract of
    :func:`cnnlab.kernels.cpu.conv.conv2d_backward_input`.  One thread per input pixel
    gathers from every output that saw it (no atomics)."""
    blocks, threads = launch_shape(grad_x.size)
    _conv2d_backward_input_kernel[blocks, threads](grad_out, weight, grad_x, stride_h, stride_w,
                                                   pad_h, pad_w, dilation_h, dilation_w, groups)


def conv2d_backward_weight(x, grad_out, grad_weight, grad_bias, stride_h, stride_w, pad_h, pad_w,
                           dilation_h, dilation_w, groups, block_rows, workers):
    """Gradients with respect to weight and bias; contract of
    :func:`cnnlab.kernels.cpu.conv.conv2d_backward_weight`.  One thread per weight element."""
    blocks, threads = launch_shape(grad_weight.size)
    _conv2d_backward_weight_kernel[blocks, threads](x, grad_out, grad_weight, stride_h, stride_w,
                                                    pad_h, pad_w, dilation_h, dilation_w, groups)
    blocks, threads = launch_shape(grad_bias.size)
    _sum_filter_planes_kernel[blocks, threads](grad_out, grad_bias)
