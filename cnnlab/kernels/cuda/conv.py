"""GPU convolution: a shared-memory tiled kernel, and a direct one-thread-per-output kernel.

The tiled forward kernel gives each CUDA block a square tile of output pixels of one sample
and up to ``FILTERS_PER_BLOCK`` filters of one group. For each input channel the block's
threads copy the input patch the tile needs, and those filters' weights, into shared memory
(coalesced: consecutive threads read consecutive pixels), synchronize, and every thread
accumulates its pixel for all the block's filters from shared memory, so each input pixel is
read from global memory once per channel and block instead of once per tap and filter.
Geometries whose patch or kernel does not fit the fixed shared buffers use the direct kernel.

Both end with the fused epilogue ``out = act(scale[f] * acc + shift[f] + residual)``
(:func:`_finish`), as the CPU kernels do.

Mirrors :mod:`cnnlab.kernels.cpu.conv`; same names, same parameters.
"""

import math

import numba
import numpy as np
from numba import cuda

from ... import config
from .. import (
    EPILOGUE_CLIP,
    EPILOGUE_GELU,
    EPILOGUE_HARDSIGMOID,
    EPILOGUE_HARDSWISH,
    EPILOGUE_LEAKY_RELU,
    EPILOGUE_SIGMOID,
    EPILOGUE_SILU,
    EPILOGUE_TANH,
)
from ._launch import launch_shape
from .activation import _sigmoid

__all__ = ["conv2d_backward_input", "conv2d_backward_weight", "conv2d_flipped_weight", "conv2d_forward"]  # the kernels of this file

FILTERS_PER_BLOCK = 8
_SQRT_HALF = math.sqrt(0.5)
MAX_PATCH = 48  # largest input patch side held in shared memory
MAX_TAPS = 64  # largest KH * KW held in shared memory
_tiled_kernels = {}


@cuda.jit(device=True)
def _finish(acc, s, b, r, activation, low, high):
    """One output of the fused epilogue: ``act(s * acc + b + r)``, the activation codes of
    :func:`cnnlab.kernels.cpu._epilogue._finish_row`."""
    v = s * acc + b + r
    if activation == EPILOGUE_CLIP:
        return low if v < low else (high if v > high else v)
    if activation == EPILOGUE_LEAKY_RELU:
        return v if v > 0 else low * v
    if activation == EPILOGUE_HARDSIGMOID:
        z = low * v + high
        return 0 if z < 0 else (1 if z > 1 else z)
    if activation == EPILOGUE_HARDSWISH:
        return v * min(max(v + 3.0, 0.0), 6.0) / 6.0
    if activation == EPILOGUE_SIGMOID:
        return _sigmoid(v)
    if activation == EPILOGUE_SILU:
        return v * _sigmoid(v)
    if activation == EPILOGUE_TANH:
        return math.tanh(v)
    if activation == EPILOGUE_GELU:
        return 0.5 * v * math.erfc(-v * _SQRT_HALF)
    return v


def _tiled_kernel(tile, dtype):
    """The tiled forward kernel for a tile side and a dtype (compiled once each)."""
    key = (tile, np.dtype(dtype))
    if key in _tiled_kernels:
        return _tiled_kernels[key]
    element = numba.from_dtype(np.dtype(dtype))
    threads = tile * tile

    @cuda.jit
    def kernel(x, weight, scale, shift, residual, has_residual, activation, low, high, out,
               stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, tiles_w):
        patch = cuda.shared.array((MAX_PATCH, MAX_PATCH), element)
        taps = cuda.shared.array((FILTERS_PER_BLOCK, MAX_TAPS), element)
        acc = cuda.local.array(FILTERS_PER_BLOCK, element)
        filters, out_h, out_w = out.shape[1], out.shape[2], out.shape[3]
        channels_per_group, kernel_h, kernel_w = weight.shape[1], weight.shape[2], weight.shape[3]
        height, width = x.shape[2], x.shape[3]
        filters_per_group = filters // groups
        filter_blocks = (filters_per_group + FILTERS_PER_BLOCK - 1) // FILTERS_PER_BLOCK
        thread = cuda.threadIdx.x
        ty = thread // tile
        tx = thread % tile
        oh0 = (cuda.blockIdx.x // tiles_w) * tile
        ow0 = (cuda.blockIdx.x % tiles_w) * tile
        n = cuda.blockIdx.y // (groups * filter_blocks)
        g = (cuda.blockIdx.y // filter_blocks) % groups
        f0 = g * filters_per_group + (cuda.blockIdx.y % filter_blocks) * FILTERS_PER_BLOCK
        count = min(FILTERS_PER_BLOCK, (g + 1) * filters_per_group - f0)
        patch_h = (tile - 1) * stride_h + dilation_h * (kernel_h - 1) + 1
        patch_w = (tile - 1) * stride_w + dilation_w * (kernel_w - 1) + 1
        top = oh0 * stride_h - pad_h
        left = ow0 * stride_w - pad_w
        for k in range(FILTERS_PER_BLOCK):
            acc[k] = 0
        for c in range(channels_per_group):
            channel = g * channels_per_group + c
            for index in range(thread, patch_h * patch_w, threads):
                h = top + index // patch_w
                w = left + index % patch_w
                inside = 0 <= h < height and 0 <= w < width
                patch[index // patch_w, index % patch_w] = x[n, channel, h, w] if inside else 0
            for index in range(thread, count * kernel_h * kernel_w, threads):
                t = index % (kernel_h * kernel_w)
                taps[index // (kernel_h * kernel_w), t] = weight[f0 + index // (kernel_h * kernel_w), c,
                                                                 t // kernel_w, t % kernel_w]
            cuda.syncthreads()
            for i in range(kernel_h):
                for j in range(kernel_w):
                    v = patch[ty * stride_h + i * dilation_h, tx * stride_w + j * dilation_w]
                    for k in range(count):
                        acc[k] += taps[k, i * kernel_w + j] * v
            cuda.syncthreads()
        oh = oh0 + ty
        ow = ow0 + tx
        if oh < out_h and ow < out_w:
            for k in range(count):
                f = f0 + k
                r = residual[n, f, oh, ow] if has_residual else 0
                out[n, f, oh, ow] = _finish(acc[k], scale[f], shift[f], r, activation, low, high)

    _tiled_kernels[key] = kernel
    return kernel


def _tiled_launch(x, weight, out, stride_h, stride_w, dilation_h, dilation_w, groups):
    """``(kernel, grid, threads, tiles_w)`` for the tiled kernel, or None if it does not fit."""
    tile = int(config.GPU_CONV_TILE)
    if tile < 1:
        return None
    samples, filters, out_h, out_w = out.shape
    kernel_h, kernel_w = weight.shape[2], weight.shape[3]
    patch_h = (tile - 1) * stride_h + dilation_h * (kernel_h - 1) + 1
    patch_w = (tile - 1) * stride_w + dilation_w * (kernel_w - 1) + 1
    filter_blocks = (filters // groups + FILTERS_PER_BLOCK - 1) // FILTERS_PER_BLOCK
    grid_y = samples * groups * filter_blocks
    if patch_h > MAX_PATCH or patch_w > MAX_PATCH or kernel_h * kernel_w > MAX_TAPS or grid_y > 65535:
        return None
    tiles_w = (out_w + tile - 1) // tile
    grid = (((out_h + tile - 1) // tile) * tiles_w, grid_y)
    return _tiled_kernel(tile, x.dtype), grid, tile * tile, tiles_w


@cuda.jit
def _conv2d_forward_kernel(x, weight, scale, shift, residual, has_residual, activation, low, high, out,
                           stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups):
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
        acc = x[0, 0, 0, 0] * 0  # a zero of the input dtype
        for c in range(channels_per_group):
            for i in range(kernel_h):
                h = oh * stride_h - pad_h + i * dilation_h
                if h < 0 or h >= height:
                    continue
                for j in range(kernel_w):
                    w = ow * stride_w - pad_w + j * dilation_w
                    if 0 <= w < width:
                        acc += weight[f, c, i, j] * x[n, first_channel + c, h, w]
        r = residual[n, f, oh, ow] if has_residual else 0
        out[n, f, oh, ow] = _finish(acc, scale[f], shift[f], r, activation, low, high)


def conv2d_forward(x, weight, scale, shift, residual, has_residual, activation, low, high, out,
                   stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, block_rows, workers,
                   filter_blocks=1, sample_block=1):
    """2-D cross-correlation of ``x`` with ``weight`` and the fused epilogue
    ``act(scale * conv + shift + residual)``, written into ``out``.

    Same contract as :func:`cnnlab.kernels.cpu.conv.conv2d_forward`; the
    arrays are device arrays.  ``block_rows``, ``workers``, ``filter_blocks`` and
    ``sample_block`` shape the CPU schedule and are not used here.  Uses the shared-memory tiled kernel when
    the geometry fits it (``config.GPU_CONV_TILE``), else the direct kernel.
    """
    epilogue = (scale, shift, residual, bool(has_residual), int(activation), float(low), float(high), out)
    tiled = _tiled_launch(x, weight, out, stride_h, stride_w, dilation_h, dilation_w, groups)
    if tiled is not None:
        kernel, grid, threads, tiles_w = tiled
        kernel[grid, threads](x, weight, *epilogue, stride_h, stride_w, pad_h, pad_w, dilation_h,
                              dilation_w, groups, tiles_w)
        return
    blocks, threads = launch_shape(out.size)
    _conv2d_forward_kernel[blocks, threads](x, weight, *epilogue, stride_h, stride_w, pad_h, pad_w,
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


@cuda.jit(device=True)
def _weight_position(index, channels_per_group, kernel_h, kernel_w):
    """``(f, c, i, j)`` of the ``index``-th element of a C-ordered (F, Cg, KH, KW) weight."""
    j = index % kernel_w
    i = (index // kernel_w) % kernel_h
    c = (index // (kernel_w * kernel_h)) % channels_per_group
    return index // (kernel_w * kernel_h * channels_per_group), c, i, j


@cuda.jit
def _conv2d_backward_weight_kernel(x, grad_out, grad_weight, stride_h, stride_w, pad_h, pad_w,
                                   dilation_h, dilation_w, groups):
    filters, channels_per_group, kernel_h, kernel_w = grad_weight.shape
    samples, height, width = x.shape[0], x.shape[2], x.shape[3]
    out_h, out_w = grad_out.shape[2], grad_out.shape[3]
    filters_per_group = filters // groups
    for index in range(cuda.grid(1), grad_weight.size, cuda.gridsize(1)):
        f, c, i, j = _weight_position(index, channels_per_group, kernel_h, kernel_w)
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


@cuda.jit
def _flipped_weight_kernel(weight, groups, out):
    filters, channels_per_group, kernel_h, kernel_w = weight.shape
    filters_per_group = filters // groups
    for index in range(cuda.grid(1), weight.size, cuda.gridsize(1)):
        f, c, i, j = _weight_position(index, channels_per_group, kernel_h, kernel_w)
        g = f // filters_per_group
        out[g * channels_per_group + c, f - g * filters_per_group, kernel_h - 1 - i, kernel_w - 1 - j] = \
            weight[f, c, i, j]


def conv2d_flipped_weight(weight, groups, out):
    """The input gradient's weight for a stride-1 convolution; contract of
    :func:`cnnlab.kernels.cpu.conv.conv2d_flipped_weight`. One thread per weight element."""
    blocks, threads = launch_shape(weight.size)
    _flipped_weight_kernel[blocks, threads](weight, groups, out)


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
