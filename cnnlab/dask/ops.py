"""The ops of :mod:`cnnlab.functional` on dask arrays: what :mod:`cnnlab.dispatch` calls for each kind."""

import inspect

import numpy as np

from .. import functional
from ..device import kernels_for, to_host
from ..dispatch import is_dask_array
from ..shapes import pair, resolve_padding
from .base import dask_modules, on_device, resolve_device, to_host_values
from .batches import map_batches, run_packed
from .windows import check_network_input, chunked_across_samples, window_blocks


def _conv2d_on_dask(function, x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, **options):
    """``conv2d`` (the in-memory ``function``) of a dask ``x``: the in-memory checks first,
    then batch chunks with :func:`map_batches` or blocks across the image with
    :func:`window_blocks`; the chunks run where ``weight`` lives. ``options`` are conv2d's
    keyword-only ones: the per-filter ``scale`` and the ``activation`` go to every block;
    ``residual`` and ``out`` take in-memory arrays only."""
    check_network_input("x", x)
    for label in ("residual", "out"):
        if options.get(label) is not None:
            raise TypeError(f"{label}= is for in-memory arrays: with a dask array x, leave it out "
                            f"(and add a residual to the result afterwards)")
        options.pop(label, None)
    scale = options.get("scale")
    for label, value in (("weight", weight), ("bias", bias), ("scale", scale)):
        if is_dask_array(value):
            raise TypeError(f"{label} must be an in-memory array (host or GPU), got a dask array: "
                            f"pass {label}.compute() (weights are small)")
    weight = functional.as_float_array("weight", weight, ndim=4, dtype=x.dtype)
    kernels = kernels_for(weight=weight, bias=bias, scale=scale)
    shape = tuple(int(s) for s in x.shape)
    geometry = functional.conv.conv_geometry(shape, tuple(weight.shape), x.dtype, stride, padding, dilation, groups)
    filters = weight.shape[0]
    checked_bias = functional.common.bias_or_zeros(kernels, bias, filters, x.dtype)
    if scale is not None:
        options["scale"] = to_host(functional.conv.check_scale(scale, filters, x.dtype))
    if options.get("activation") is not None:
        functional.epilogue_activation(options["activation"])
    device = resolve_device(None, weight, bias, scale)
    weight, bias = to_host(weight), (None if bias is None else to_host(checked_bias))
    if not chunked_across_samples(x):
        return map_batches(function, x, weight, bias, stride, padding, dilation, groups,
                           sample_shape=(filters,) + tuple(geometry.out_shape), dtype=x.dtype, device=device,
                           **options)
    kernel, stride, dilation = tuple(weight.shape[2:]), pair("stride", stride, 1), pair("dilation", dilation, 1)
    pads = resolve_padding(padding, kernel, stride, dilation, shape[2:])
    return window_blocks(function, x, (weight, bias), dict(options, groups=groups), kernel, stride, pads, dilation,
                    None, filters, x.dtype, device, token="cnnlab-conv2d")


def _pool2d_on_dask(function, x, kernel_size, stride=None, padding=0, mode="max", *, dilation=1,
                    ceil_mode=False, count_include_pad=True):
    """``pool2d`` (the in-memory ``function``) of a dask ``x``, as :func:`_conv2d_on_dask`;
    channel chunks stay."""

    check_network_input("x", x)
    shape = tuple(int(s) for s in x.shape)
    out_shape, _ = functional.pool.pool_geometry(shape, kernel_size, stride, padding, mode, dilation, ceil_mode,
                                             count_include_pad)
    options = functional.pool_arguments(kernel_size, stride, padding, mode, dilation, ceil_mode, count_include_pad)
    if not chunked_across_samples(x):
        return map_batches(function, x, kernel_size, stride, padding, mode, dilation=dilation,
                           ceil_mode=ceil_mode, count_include_pad=count_include_pad,
                           sample_shape=tuple(out_shape[1:]), dtype=x.dtype, device="cpu")
    kernel = options["kernel_size"]
    return window_blocks(function, x, (kernel,), {"mode": mode, "count_include_pad": options["count_include_pad"]},
                    kernel, options["stride"], options["padding"], options["dilation"], options["ceil_mode"],
                    None, x.dtype, "cpu", token="cnnlab-pool2d")


def per_sample_op(function, x, args, kwargs):
    """Run the in-memory op ``function`` of :mod:`cnnlab.functional` whose output rows depend on
    the same samples only on a dask array: chunk by chunk along the batch axis
    (:func:`map_batches`). Called by :func:`cnnlab.dispatch.per_sample`.

    Parameters
    ----------
    function : callable
        The undecorated in-memory op.
    x : dask.array.Array
    args : tuple
    kwargs : dict

    Returns
    -------
    dask.array.Array
    """
    return map_batches(function, x, *args, **kwargs)


def elementwise_op(function, x, args, kwargs):
    """Run the in-memory element-wise op ``function`` (an activation) on a dask array chunk by
    chunk whatever the chunking (so it runs between spatially chunked convolutions and
    poolings). Called by :func:`cnnlab.dispatch.elementwise`.

    Parameters
    ----------
    function : callable
        The undecorated in-memory op.
    x : dask.array.Array
    args : tuple
    kwargs : dict

    Returns
    -------
    dask.array.Array
    """
    if not chunked_across_samples(x):
        return map_batches(function, x, *args, **kwargs)
    dask, da = dask_modules()
    if any(np.isnan(s) for s in x.shape) or 0 in x.shape:
        return map_batches(function, x, *args, **kwargs)  # its errors
    device = resolve_device(None, *args, *kwargs.values())
    args = to_host_values(tuple(args))
    kwargs = dict(zip(kwargs, to_host_values(tuple(kwargs.values()))))
    probe = np.asarray(on_device(function, np.zeros((1,) * x.ndim, x.dtype), args, kwargs, device))  # the checks
    packed = dask.delayed((function, args, kwargs, device), traverse=False)
    return da.map_blocks(run_packed, x, packed, dtype=probe.dtype, meta=np.empty((0,) * x.ndim, probe.dtype),
                         token=f"cnnlab-{function.__name__}")


def _sliding_window_op(on_dask, function, x, args, kwargs):
    """Run the in-memory sliding-window op ``function`` (``conv2d`` or ``pool2d``) on a dask
    array: batch chunks with :func:`map_batches`, blocks across the image with the halo its
    geometry needs (see :func:`map_windows`). Bad arguments give the in-memory errors before
    anything is computed. Called through :func:`cnnlab.dispatch.sliding_window`
    with ``on_dask`` the op kind's function (:func:`_conv2d_on_dask`, :func:`_pool2d_on_dask`).

    Parameters
    ----------
    function : callable
        The undecorated in-memory op.
    x : (N, C, H, W) dask.array.Array
    args : tuple
    kwargs : dict
        The op's other arguments, as given.

    Returns
    -------
    dask.array.Array
    """
    bound = inspect.signature(function).bind(x, *args, **kwargs)
    named = dict(bound.arguments)
    named.pop(next(iter(named)))
    return on_dask(function, x, **named)


def convolution_op(function, x, args, kwargs):
    """:func:`cnnlab.functional.conv2d` (the undecorated ``function``) on a dask ``x``."""
    return _sliding_window_op(_conv2d_on_dask, function, x, args, kwargs)


def pooling_op(function, x, args, kwargs):
    """:func:`cnnlab.functional.pool2d` (the undecorated ``function``) on a dask ``x``."""
    return _sliding_window_op(_pool2d_on_dask, function, x, args, kwargs)
