"""GPU fully-connected layer: one thread per output element.

Mirrors :mod:`cnnlab.kernels.cpu.linear`; same name, same parameters.
"""

from numba import cuda

from ._launch import launch_shape


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


def linear_forward(x, weight, bias, out):
    """``out = x @ weight.T + bias``; contract of :func:`cnnlab.kernels.cpu.linear.linear_forward`."""
    blocks, threads = launch_shape(out.size)
    _linear_kernel[blocks, threads](x, weight, bias, out)
