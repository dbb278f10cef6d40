"""Single CPU kernels called directly, for comparing two versions in alternating processes.

    python bench/small_kernels.py [--repeat 40] [--blocks {rule,none,all}]

Times, straight through :mod:`cnnlab.kernels.cpu` (no functional layer, no checks): 2x2 stride-2
max pooling with and without the chosen indices on one thread (16x64x56x56 and 32x16x16x16),
ReLU forward and backward and an Adam step on 4,096, 1 M and 12.8 M float32 values, and
softmax over 10 classes at batch 32 and over 21 classes of a 512x512 map, and batch
normalization's statistics and backward on three of ResNet-18's shapes at batch 16 (the
element-wise ones and batch normalization with Numba's thread count), a convolution's ReLU6
epilogue over 32 rows of 12,800 values (one thread), and im2col's columns of every sample of
four convolutions (LeNet's second layer, two 3x3 layers at stride 1 and one at stride 2; one
thread, the copy alone), and depthwise 3x3 convolutions with their ReLU6 at batch 1 (MobileNetV2's
at 112x112, 56x56 at stride 2, 28x28, 14x14, 7x7 and, at stride 2, 28x28 and 14x14; one thread;
``--blocks none``: all by the direct path, ``--blocks all``: all by blocks of channels; by
default each by its rule), and the flipped weight of a stride-1
input gradient (``conv2d_flipped_weight``) of ResNet-18's 256- and 512-channel 3x3 layers (Numba's
thread count). Prints the minimum and the median in
microseconds. Two versions::

    git worktree add /tmp/before COMMIT
    for round in 1 2 3; do PYTHONPATH=/tmp/before python bench/small_kernels.py; python bench/small_kernels.py; done
"""

import argparse

import numpy as np
from numba import njit

from cnnlab.bench.measuring import timed_runs
from cnnlab.kernels import EPILOGUE_CLIP, POOL_MAX, cpu
from cnnlab.kernels.cpu import conv as cpu_conv


@njit(cache=False)
def _epilogue_rows(rows, shift, low, high):
    """A convolution's clip epilogue (``_finish_row``, scale 1, no residual) over each row."""
    for k in range(rows.shape[0]):
        cpu_conv._finish_row(rows[k], rows[k], False, rows.dtype.type(1), shift[k], EPILOGUE_CLIP, low, high)


@njit(cache=False)
def _all_columns(x, columns, kernel, out_size, stride, pad):
    """im2col's columns (``_im2col``) of every sample of ``x``, into the one buffer in turn."""
    for n in range(x.shape[0]):
        cpu_conv._im2col(x, n, 0, 0, out_size, columns, kernel, kernel, out_size, stride, stride, pad, pad, 1, 1, 0)


def _line(name, timing):
    times = timing[2]  # timed_runs: (result, first call's seconds, the timed calls' seconds)
    print(f"{name:34s} min {np.min(times) * 1e6:10.1f} us   median {np.median(times) * 1e6:10.1f} us")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--blocks", choices=["rule", "none", "all"], default="rule",
                        help="depthwise layers by blocks of channels: by their rule, none or all")
    options = parser.parse_args()
    repeat = options.repeat
    if options.blocks != "rule":
        cpu_conv.BLOCKS_MAX_PIXELS = 0 if options.blocks == "none" else 1 << 30
    rng = np.random.default_rng(0)
    for shape in [(16, 64, 56, 56), (32, 16, 16, 16)]:
        x = rng.standard_normal(shape).astype(np.float32)
        out = np.empty(shape[:2] + (shape[2] // 2, shape[3] // 2), np.float32)
        indices = np.empty(out.shape, np.int64)
        _line(f"max pool {shape}", timed_runs(
            lambda: cpu.pool2d_forward(x, out, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, POOL_MAX, 0, 1), repeat))
        _line(f"max pool {shape} indices", timed_runs(
            lambda: cpu.pool2d_forward_with_indices(x, out, indices, 2, 2, 2, 2, 0, 0, 1, 1, POOL_MAX, 1), repeat))
    for size in (4096, 1 << 20, 12_845_056):
        x = rng.standard_normal(size).astype(np.float32)
        out, grad = np.empty_like(x), np.empty_like(x)
        first, second, param = np.zeros_like(x), np.zeros_like(x), x.copy()
        _line(f"relu forward {size}", timed_runs(lambda: cpu.relu_forward(x, out), repeat))
        _line(f"relu backward {size}", timed_runs(lambda: cpu.relu_backward(x, out, grad), repeat))
        _line(f"adam step {size}", timed_runs(
            lambda: cpu.adam_step(param, out, first, second, 1e-3, 0.9, 0.999, 1e-8, 0.0, 3), repeat))
    rows = rng.standard_normal((32, 12_800)).astype(np.float32) * 4
    shift = rng.standard_normal(32).astype(np.float32)
    _line("conv epilogue relu6 32x12800", timed_runs(lambda: _epilogue_rows(rows, shift, 0.0, 6.0), repeat))
    for shape, kernel, stride, pad in [((64, 6, 12, 12), 5, 1, 0), ((32, 32, 32, 32), 3, 1, 1),
                                       ((16, 64, 56, 56), 3, 1, 1), ((32, 32, 64, 64), 3, 2, 1)]:
        x = rng.standard_normal(shape).astype(np.float32)
        out_size = (shape[2] + 2 * pad - kernel) // stride + 1
        columns = np.empty((shape[1] * kernel * kernel, out_size * out_size), np.float32)
        _line(f"im2col {shape} k{kernel} s{stride} p{pad}", timed_runs(
            lambda: _all_columns(x, columns, kernel, out_size, stride, pad), max(1, repeat // 4)))
    for channels, size, stride in [(32, 112, 1), (96, 112, 2), (192, 28, 1), (384, 14, 1), (960, 7, 1), (192, 28, 2),
                                   (576, 14, 2)]:
        x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
        weight = rng.standard_normal((channels, 1, 3, 3)).astype(np.float32)
        scale, shift = np.ones(channels, np.float32), rng.standard_normal(channels).astype(np.float32)
        out_size = (size - 1) // stride + 1
        out = np.empty((1, channels, out_size, out_size), np.float32)
        _line(f"depthwise relu6 {channels}x{size}x{size} s{stride}", timed_runs(
            lambda: cpu.conv2d_forward(x, weight, scale, shift, out, False, EPILOGUE_CLIP, 0.0, 6.0, out, stride,
                                       stride, 1, 1, 1, 1, channels, out_size, 1), repeat))
    for filters in (256, 512):  # a stride-1 input gradient's flipped weight, ResNet-18's 3x3 layers
        weight = rng.standard_normal((filters, filters, 3, 3)).astype(np.float32)
        flipped = np.empty_like(weight)
        _line(f"flipped weight {filters}x{filters}x3x3", timed_runs(
            lambda: cpu.conv2d_flipped_weight(weight, 1, flipped), repeat))
    for shape in [(32, 10, 1), (1, 21, 512 * 512)]:
        x = rng.standard_normal(shape).astype(np.float32)
        out = np.empty_like(x)
        _line(f"softmax {shape}", timed_runs(lambda: cpu.softmax_forward(x, out), repeat))
    for shape in [(16, 64, 112, 112), (16, 128, 28, 28), (16, 512, 7, 7)]:  # ResNet-18's at batch 16
        x, grad = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
        channels = np.empty(shape[1], np.float32)
        mean, variance, gamma, grad_gamma, grad_beta = (channels.copy() for _ in range(5))
        gamma[:] = 1
        grad_x = np.empty_like(x)
        _line(f"batch norm statistics {shape}", timed_runs(lambda: cpu.batchnorm2d_statistics(x, mean, variance),
                                                           repeat))
        _line(f"batch norm backward {shape}", timed_runs(
            lambda: cpu.batchnorm2d_backward(x, grad, mean, variance, gamma, 1e-5, grad_x, grad_gamma, grad_beta),
            repeat))


if __name__ == "__main__":
    main()
