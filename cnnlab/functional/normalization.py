"""Batch normalization of NCHW input per channel, and running averages."""

from ..device import kernels_for
from .common import as_float_array, check_grad


def batch_norm2d(x, gamma, beta, eps=1e-5, mean=None, variance=None):
    """Batch normalization of NCHW input per channel.

    With ``mean``/``variance`` given (evaluation, running statistics) they are used;
    otherwise the batch's own statistics are computed and returned (training).

    Returns
    -------
    out : (N, C, H, W) array
    mean, variance : (C,) arrays, the statistics used (biased variance)

    See Also
    --------
    cnnlab.kernels.cpu.normalization.batchnorm2d_forward, torch.nn.functional.batch_norm
    """
    x = as_float_array("x", x, ndim=4)
    channels = x.shape[1]
    gamma = check_grad("gamma", gamma, (channels,), x.dtype)
    beta = check_grad("beta", beta, (channels,), x.dtype)
    kernels = kernels_for(x=x, gamma=gamma, beta=beta, mean=mean, variance=variance)
    x = kernels.asarray(x)
    if mean is None or variance is None:
        mean = kernels.empty((channels,), x.dtype)
        variance = kernels.empty((channels,), x.dtype)
        kernels.batchnorm2d_statistics(x, mean, variance)
    else:
        mean = kernels.asarray(check_grad("mean", mean, (channels,), x.dtype))
        variance = kernels.asarray(check_grad("variance", variance, (channels,), x.dtype))
    out = kernels.empty(x.shape, x.dtype)
    kernels.batchnorm2d_forward(x, mean, variance, kernels.asarray(gamma), kernels.asarray(beta), float(eps), out)
    return out, mean, variance


def running_average(running, batch, momentum, scale=1.0):
    """Update ``running`` in place: ``(1 - momentum) * running + momentum * scale * batch``."""
    kernels = kernels_for(running=running, batch=batch)
    kernels.running_average(kernels.asarray(running), kernels.asarray(batch), float(momentum), float(scale))


def batch_norm2d_backward(x, grad_out, mean, variance, gamma, eps=1e-5):
    """Gradients of training-mode :func:`batch_norm2d`: ``(grad_x, grad_gamma, grad_beta)``."""
    x = as_float_array("x", x, ndim=4)
    kernels = kernels_for(x=x, grad_out=grad_out, gamma=gamma)
    grad_out = check_grad("grad_out", grad_out, x.shape, x.dtype)
    channels = x.shape[1]
    grad_x = kernels.empty(x.shape, x.dtype)
    grad_gamma = kernels.empty((channels,), x.dtype)
    grad_beta = kernels.empty((channels,), x.dtype)
    kernels.batchnorm2d_backward(kernels.asarray(x), kernels.asarray(grad_out), kernels.asarray(mean),
                                 kernels.asarray(variance), kernels.asarray(gamma), float(eps),
                                 grad_x, grad_gamma, grad_beta)
    return grad_x, grad_gamma, grad_beta
