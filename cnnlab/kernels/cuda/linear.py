"""GPU fully-connected layer: one thread per output element.

Mirrors :mod:`cnnlab.kernels.cpu.linear`; same name, same parameters.
"""

from numba import cuda

from ._launch import launch_shape

__all__ = ["linear_backward", "linear_forward"]  # the kernels of this file


@cuda.jit
def _linear_kernel(x, weight, bias, out):
    samples, out_features = out.shape
    in_features = x.shape[1]
    for index in range(cuda.grid(1), samples * out_features, cuda.gridsize(1)):
        n = index // out_features
        o = index % out_features
        acc = bias[o]
        for k in range(in_features):
            acc += x[n, k] * weight[o, k]
        out[n, o] = acc


def linear_forward(x, weight, bias, out, workers):
    """``out = x @ weight.T + bias``; contract of :func:`cnnlab.kernels.cpu.linear.linear_forward`
    (``workers`` shapes the CPU schedule and is not used here)."""
    blocks, threads = launch_shape(out.size)
    _linear_kernel[blocks, threads](x, weight, bias, out)


@cuda.jit
def _linear_backward_input_kernel(weight, grad_out, grad_x):
    samples, in_features = grad_x.shape
    out_features = weight.shape[0]
    for index in range(cuda.grid(1), samples * in_features, cuda.gridsize(1)):
        n = index // in_features
        k = index % in_features
        acc = grad_out[0, 0] * 0
        for o in range(out_features):
            acc += grad_out[n, o] * weight[o, k]
        grad_x[n, k] = acc


@cuda.jit
def _linear_backward_weight_kernel(x, grad_out, grad_weight, grad_bias):
    out_features, in_features = grad_weight.shape
    samples = x.shape[0]
    for index in range(cuda.grid(1), out_features * (in_features + 1), cuda.gridsize(1)):
        o = index // (in_features + 1)
        k = index % (in_features + 1)  # k == in_features: the bias
        acc = grad_out[0, 0] * 0
        for n in range(samples):
            acc += grad_out[n, o] * (x[n, k] if k < in_features else 1)
        if k < in_features:
            grad_weight[o, k] = acc
        else:
            grad_bias[o] = acc


def linear_backward(x, weight, grad_out, grad_x, grad_weight, grad_bias, workers):
    """Gradients of :func:`linear_forward`; contract of :func:`cnnlab.kernels.cpu.linear.linear_backward`."""
    blocks, threads = launch_shape(grad_x.size)
    _linear_backward_input_kernel[blocks, threads](weight, grad_out, grad_x)
    blocks, threads = launch_shape(grad_weight.size + grad_bias.size)
    _linear_backward_weight_kernel[blocks, threads](x, grad_out, grad_weight, grad_bias)
