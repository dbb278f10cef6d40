"""Layers: state (parameters, gradients, what the backward needs) around functional calls.

Every layer has ``forward(x, training=False)``, ``backward(grad_out) -> grad_in``, ``params``
and ``grads`` (dicts of arrays by name, ``'weight'`` and ``'bias'``), attributes
``weight``/``bias`` that are those same arrays, and ``trainable``.  ``backward``
differentiates the most recent ``forward(x, training=True)``; calling it without one is a
``RuntimeError``.  Parameters live on the layer's device (:meth:`Layer.to`), and the forward
and backward run there.

Parameters are float32 unless the layer is built with ``dtype='float64'``; an input of the
other float dtype is cast to the parameters' dtype.
"""

import math

import numpy as np

from . import functional as F
from .device import is_gpu_array, to_device, to_host
from .functional.dropout import check_probability
from .shapes import check_int, check_padding, pair, resolve_padding, window_output_shape

__all__ = [
    "Layer", "Conv2D", "Dense", "MaxPool2D", "AvgPool2D", "MinPool2D", "MedianPool2D", "LPPool2D",
    "GlobalAvgPool2D", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax", "Flatten", "Dropout",
    "BatchNorm2D", "GlobalMaxPool2D", "ReLU6", "Clip", "HardSigmoid", "HardSwish", "SiLU", "Identity",
    "Reshape", "Add", "Multiply", "Concatenate", "LogSoftmax",
]


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype}")
    return dtype


class Layer:
    """Base class: no parameters, runs on the CPU until moved with :meth:`to`."""

    trainable = True
    takes_list = False  # merge layers take a list of inputs

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.buffers = {}  # saved state that is not trained (running statistics)
        self.device = "cpu"
        self.dtype = None
        self._saved = None

    # --- parameters -------------------------------------------------------------
    @property
    def weight(self):
        return self.params.get("weight")

    @property
    def bias(self):
        return self.params.get("bias")

    def parameter_count(self):
        return int(sum(np.prod(p.shape) for p in self.params.values()))

    def to(self, device):
        """Move parameters, gradients and buffers to ``'cpu'`` or ``'cuda'``; returns ``self``."""
        if device not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        move = to_device if device == "cuda" else to_host
        for store in (self.params, self.grads, self.buffers):
            for name in store:
                store[name] = move(store[name])
        self.device = device
        self._saved = None
        return self

    # --- running ------------------------------------------------------------------
    def _prepare(self, x):
        """Cast ``x`` to the parameters' dtype (when the layer has one)."""
        if self.dtype is None or np.dtype(x.dtype) == self.dtype or np.dtype(x.dtype).kind != "f":
            return x
        if is_gpu_array(x):
            return to_device(to_host(x).astype(self.dtype))
        return np.asarray(x).astype(self.dtype)

    def _need_saved(self):
        if self._saved is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() needs a preceding forward(x, training=True)"
            )
        return self._saved

    def __call__(self, inputs):
        """Call on a symbolic tensor (a list of them for merge layers) from
        :func:`cnnlab.Input`: adds a node to the graph and returns its output tensor, whose
        shape ``output_shape`` infers (a misfit is a ``ValueError`` naming this layer).  A layer
        called twice shares its parameters between the two calls."""
        from .graph import call_layer

        return call_layer(self, inputs)

    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, grad_out):
        raise NotImplementedError

    def output_shape(self, input_shape):
        """Shape of one sample's output for one sample's input shape (no batch axis)."""
        return tuple(input_shape)

    def config(self):
        """Constructor arguments, JSON-serializable (the saved architecture)."""
        return {}

    def __repr__(self):
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({arguments})"


def _initialize(shape, fan_in, fan_out, init, dtype, seed):
    rng = np.random.default_rng(seed)
    if init == "he":
        values = rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    elif init == "glorot":
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        values = rng.uniform(-limit, limit, size=shape)
    else:
        raise ValueError(f"init must be 'he' or 'glorot', got {init!r}")
    return values.astype(dtype)


class Conv2D(Layer):
    """2-D convolution layer: ``out_channels`` filters of ``kernel_size`` over ``in_channels``.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride, padding, dilation, groups
        As :func:`cnnlab.functional.conv2d`: padding takes an int, ``(ph, pw)``,
        ``((top, bottom), (left, right))``, 'valid', 'same' (stride 1), 'same_upper' and
        'same_lower' (ONNX's SAME rules, any stride).
    bias : bool
    dtype : 'float32' or 'float64'
    init : 'he' (default, for ReLU networks) or 'glorot'
    seed : int or None
        Seed of the initialization's generator.

    Shape
    -----
    ``(N, in_channels, H, W) -> (N, out_channels, OH, OW)``, ``OH = output_size(H, KH, sh, ph, dh)``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, dtype="float32", init="he", seed=None):
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.out_channels = check_int("out_channels", out_channels, 1)
        self.kernel_size = pair("kernel_size", kernel_size, 1)
        self.stride = pair("stride", stride, 1)
        self.dilation = pair("dilation", dilation, 1)
        self.padding = check_padding(padding)  # a word or ((top, bottom), (left, right))
        resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation, input_size=(1, 1))  # validates
        self.groups = check_int("groups", groups, 1)
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                             f"out_channels={out_channels}")
        self.dtype = _float_dtype(dtype)
        self.use_bias = bool(bias)
        self.init = init
        fan_in = self.in_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        fan_out = self.out_channels // self.groups * self.kernel_size[0] * self.kernel_size[1]
        shape = (self.out_channels, self.in_channels // self.groups) + self.kernel_size
        self.params["weight"] = _initialize(shape, fan_in, fan_out, init, self.dtype, seed)
        if self.use_bias:
            self.params["bias"] = np.zeros(self.out_channels, dtype=self.dtype)
        self.input_grad = True  # a model switches it off where no gradient of the input is needed

    def _geometry(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)

    def forward(self, x, training=False):
        x = self._prepare(x)
        out = F.conv2d(x, self.params["weight"], self.params.get("bias"), **self._geometry())
        if training:
            self._saved = x
        return out

    def backward(self, grad_out):
        x = self._need_saved()
        grad_x, grad_weight, grad_bias = F.conv2d_backward(
            x, self.params["weight"], grad_out, input_grad=self.input_grad, **self._geometry())
        self.grads["weight"] = grad_weight
        if self.use_bias:
            self.grads["bias"] = grad_bias
        return grad_x

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ValueError(f"Conv2D expects ({self.in_channels}, H, W) inputs, got {tuple(input_shape)}")
        pads = resolve_padding(self.padding, self.kernel_size, self.stride, self.dilation, input_shape[1:])
        return (self.out_channels, *window_output_shape(input_shape[1], input_shape[2], self.kernel_size,
                                                        self.stride, pads, self.dilation))

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=_padding_config(self.padding),
                    dilation=list(self.dilation), groups=self.groups, bias=self.use_bias,
                    dtype=self.dtype.name, init=self.init)


class Dense(Layer):
    """Fully-connected layer: ``x @ weight.T + bias`` with ``weight`` of shape (out, in).

    Shape
    -----
    ``(N, in_features) -> (N, out_features)``.
    """

    def __init__(self, in_features, out_features, bias=True, dtype="float32", init="he", seed=None):
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        self.dtype = _float_dtype(dtype)
        self.use_bias = bool(bias)
        self.init = init
        self.params["weight"] = _initialize((self.out_features, self.in_features), self.in_features,
                                            self.out_features, init, self.dtype, seed)
        if self.use_bias:
            self.params["bias"] = np.zeros(self.out_features, dtype=self.dtype)

    def forward(self, x, training=False):
        x = self._prepare(x)
        out = F.linear(x, self.params["weight"], self.params.get("bias"))
        if training:
            self._saved = x
        return out

    def backward(self, grad_out):
        x = self._need_saved()
        grad_x, grad_weight, grad_bias = F.linear_backward(x, self.params["weight"], grad_out)
        self.grads["weight"] = grad_weight
        if self.use_bias:
            self.grads["bias"] = grad_bias
        return grad_x

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            raise ValueError(f"Dense expects ({self.in_features},) inputs, got {tuple(input_shape)}"
                             " (put a Flatten layer before it for images)")
        return (self.out_features,)

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features, bias=self.use_bias,
                    dtype=self.dtype.name, init=self.init)


def _padding_config(padding):
    """A padding for a saved config: a word, ``[ph, pw]`` when symmetric (as older files have it),
    else ``[[top, bottom], [left, right]]``."""
    if isinstance(padding, str):
        return padding
    (top, bottom), (left, right) = padding
    if top == bottom and left == right:
        return [top, left]
    return [[top, bottom], [left, right]]


class _Pool2D(Layer):
    """Pooling layer; the arguments are :func:`cnnlab.functional.pool2d`'s."""

    mode = None

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, count_include_pad=True):
        super().__init__()
        options = F.pool_arguments(kernel_size, stride, padding, self.mode, dilation, ceil_mode,
                                   count_include_pad)
        self.kernel_size, self.stride, self.padding = options["kernel_size"], options["stride"], options["padding"]
        self.dilation, self.ceil_mode = options["dilation"], options["ceil_mode"]
        self.count_include_pad = options["count_include_pad"]

    def _arguments(self):
        return dict(kernel_size=self.kernel_size, stride=self.stride, padding=self.padding, mode=self.mode,
                    dilation=self.dilation, ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)

    def forward(self, x, training=False):
        if training and self.mode in ("max", "min"):
            # save where each value came from (and the input's shape), not x and out: the
            # backward is then a scatter instead of a second search of every window
            out, indices = F.pool2d(x, **self._arguments(), return_indices=True)
            self._saved = (tuple(x.shape), None, indices)
            return out
        out = F.pool2d(x, **self._arguments())
        if training:
            self._saved = (x, out, None)
        return out

    def backward(self, grad_out):
        x, out, indices = self._need_saved()
        return F.pool2d_backward(x, out, grad_out, **self._arguments(), indices=indices)

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} expects (C, H, W) inputs, got {tuple(input_shape)}")
        return (input_shape[0], *window_output_shape(input_shape[1], input_shape[2], self.kernel_size, self.stride,
                                                     self.padding, self.dilation, self.ceil_mode))

    def config(self):
        return dict(kernel_size=list(self.kernel_size), stride=list(self.stride),
                    padding=_padding_config(self.padding), dilation=list(self.dilation),
                    ceil_mode=self.ceil_mode, count_include_pad=self.count_include_pad)


class MaxPool2D(_Pool2D):
    """Max pooling; ``stride`` defaults to ``kernel_size``; ``dilation``, ``ceil_mode`` and
    4-sided ``padding`` as :func:`cnnlab.functional.pool2d`.  Gradient routed to the maximum: a
    training forward saves each window's choice (``return_indices``), the backward scatters through it."""

    mode = "max"


class AvgPool2D(_Pool2D):
    """Average pooling; padded zeros count in the mean unless ``count_include_pad=False``
    (PyTorch's default is True, ONNX AveragePool's False); gradient spread evenly over the window."""

    mode = "avg"


class MinPool2D(_Pool2D):
    """Min pooling; gradient routed to the minimum (through the indices a training forward saves)."""

    mode = "min"


class MedianPool2D(_Pool2D):
    """Median pooling (lower middle value of even windows); gradient routed to the median."""

    mode = "median"


class LPPool2D(_Pool2D):
    """L2-norm pooling ``sqrt(sum(v**2))`` of each window."""

    mode = "lp"


def _reshape(a, shape):
    """``a`` seen with another shape (no copy for contiguous arrays), host or GPU."""
    shape = tuple(int(s) for s in shape)
    return a.reshape(shape) if is_gpu_array(a) else np.ascontiguousarray(a).reshape(shape)


class _GlobalPool2D(Layer):
    forward_op = backward_op = None

    def __init__(self, keepdims=False):
        super().__init__()
        if not isinstance(keepdims, (bool, np.bool_)):
            raise TypeError(f"keepdims must be True or False, got {keepdims!r}")
        self.keepdims = bool(keepdims)

    def forward(self, x, training=False):
        out = type(self).forward_op(x)
        if training:
            self._saved = x
        return _reshape(out, tuple(out.shape) + (1, 1)) if self.keepdims else out

    def backward(self, grad_out):
        x = self._need_saved()
        if self.keepdims:
            if tuple(grad_out.shape) != tuple(x.shape[:2]) + (1, 1):
                raise ValueError(f"grad_out must have shape {tuple(x.shape[:2]) + (1, 1)} (the forward "
                                 f"output), got {tuple(grad_out.shape)}")
            grad_out = _reshape(grad_out, x.shape[:2])
        return type(self).backward_op(x, grad_out)

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} expects (C, H, W) inputs, got {tuple(input_shape)}")
        return (input_shape[0], 1, 1) if self.keepdims else (input_shape[0],)

    def config(self):
        return dict(keepdims=self.keepdims)


class GlobalAvgPool2D(_GlobalPool2D):
    """Mean of each channel: ``(N, C, H, W) -> (N, C)``, or ``(N, C, 1, 1)`` with
    ``keepdims=True`` (what a squeeze-excitation gate multiplies by)."""

    forward_op = staticmethod(F.global_avg_pool2d)
    backward_op = staticmethod(F.global_avg_pool2d_backward)


class GlobalMaxPool2D(_GlobalPool2D):
    """Maximum of each channel: ``(N, C, H, W) -> (N, C)``, or ``(N, C, 1, 1)`` with
    ``keepdims=True``; the gradient goes to each plane's first maximum."""

    forward_op = staticmethod(F.global_max_pool2d)
    backward_op = staticmethod(F.global_max_pool2d_backward)


class ReLU(Layer):
    """``max(x, 0)``, the textbook activation after every convolution."""

    def forward(self, x, training=False):
        if training:
            self._saved = x
        return F.relu(x)

    def backward(self, grad_out):
        return F.relu_backward(self._need_saved(), grad_out)


class LeakyReLU(Layer):
    """``x`` for positive ``x``, ``negative_slope * x`` otherwise."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x, training=False):
        if training:
            self._saved = x
        return F.leaky_relu(x, self.negative_slope)

    def backward(self, grad_out):
        return F.leaky_relu_backward(self._need_saved(), grad_out, self.negative_slope)

    def config(self):
        return dict(negative_slope=self.negative_slope)


class Sigmoid(Layer):
    """Logistic sigmoid."""

    def forward(self, x, training=False):
        out = F.sigmoid(x)
        if training:
            self._saved = out
        return out

    def backward(self, grad_out):
        return F.sigmoid_backward(self._need_saved(), grad_out)


class Tanh(Layer):
    """Hyperbolic tangent."""

    def forward(self, x, training=False):
        out = F.tanh(x)
        if training:
            self._saved = out
        return out

    def backward(self, grad_out):
        return F.tanh_backward(self._need_saved(), grad_out)


class Softmax(Layer):
    """Softmax along ``axis`` (class probabilities).  As the last layer of a model trained with
    cross-entropy, the model feeds the loss the logits before it (fused and stable)."""

    def __init__(self, axis=1):
        super().__init__()
        self.axis = check_int("axis", axis)

    def forward(self, x, training=False):
        out = F.softmax(x, self.axis)
        if training:
            self._saved = out
        return out

    def backward(self, grad_out):
        return F.softmax_backward(self._need_saved(), grad_out, self.axis)

    def config(self):
        return dict(axis=self.axis)


class LogSoftmax(Layer):
    """Log-softmax along ``axis`` (log-probabilities; stable for huge logits), as
    :func:`cnnlab.functional.log_softmax`."""

    def __init__(self, axis=1):
        super().__init__()
        self.axis = check_int("axis", axis)

    def forward(self, x, training=False):
        out = F.log_softmax(x, self.axis)
        if training:
            self._saved = out
        return out

    def backward(self, grad_out):
        return F.log_softmax_backward(self._need_saved(), grad_out, self.axis)

    def config(self):
        return dict(axis=self.axis)


class Flatten(Layer):
    """``(N, ...) -> (N, prod(...))``: feature maps to the fully-connected layers."""

    def forward(self, x, training=False):
        if training:
            self._saved = tuple(x.shape)
        features = int(np.prod(x.shape[1:]))
        if is_gpu_array(x):
            return x.reshape(x.shape[0], features)
        return np.ascontiguousarray(x).reshape(x.shape[0], features)

    def backward(self, grad_out):
        return grad_out.reshape(*self._need_saved())

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)


class Dropout(Layer):
    """Inverted dropout: in training, zero each activation with probability ``p`` and scale the
    rest by ``1/(1-p)``; at evaluation, the identity.

    The mask is a pure function of a seed (see :func:`cnnlab.functional.dropout`): the layer's
    ``seed`` plus a counter of training forwards, or the seed a model sets for each step, so a
    seeded run repeats exactly, on the CPU or the GPU.
    """

    def __init__(self, p=0.5, seed=0):
        super().__init__()
        self.p = check_probability(p)
        self.seed = check_int("seed", seed, 0)
        self.step_seed = None  # set by a model for each training step
        self._calls = 0

    def forward(self, x, training=False):
        if not training or self.p == 0:
            if training:
                self._saved = None, True
            return x
        if self.step_seed is not None:
            seed = self.step_seed
        else:
            seed = (self.seed * 1000003 + self._calls) % (2**31)
            self._calls += 1
        out, mask = F.dropout(x, self.p, seed)
        self._saved = mask, False
        return out

    def backward(self, grad_out):
        mask, identity = self._need_saved()
        return grad_out if identity else F.dropout_backward(mask, grad_out)

    def config(self):
        return dict(p=self.p, seed=self.seed)


class BatchNorm2D(Layer):
    """Batch normalization per channel with learned scale (``weight``) and shift (``bias``).

    Training normalizes with the batch's statistics and updates the running ones
    (``running = (1 - momentum) * running + momentum * batch``, with the unbiased batch
    variance, as PyTorch); evaluation uses the running statistics.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, dtype="float32"):
        super().__init__()
        self.num_features = check_int("num_features", num_features, 1)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.dtype = _float_dtype(dtype)
        self.params["weight"] = np.ones(self.num_features, dtype=self.dtype)
        self.params["bias"] = np.zeros(self.num_features, dtype=self.dtype)
        self.buffers["running_mean"] = np.zeros(self.num_features, dtype=self.dtype)
        self.buffers["running_var"] = np.ones(self.num_features, dtype=self.dtype)

    def forward(self, x, training=False):
        x = self._prepare(x)
        if not training:
            out, _, _ = F.batch_norm2d(x, self.params["weight"], self.params["bias"], self.eps,
                                       self.buffers["running_mean"], self.buffers["running_var"])
            return out
        out, mean, variance = F.batch_norm2d(x, self.params["weight"], self.params["bias"], self.eps)
        count = x.shape[0] * x.shape[2] * x.shape[3]
        F.running_average(self.buffers["running_mean"], mean, self.momentum)
        F.running_average(self.buffers["running_var"], variance, self.momentum, count / max(count - 1, 1))
        self._saved = x, mean, variance
        return out

    def backward(self, grad_out):
        x, mean, variance = self._need_saved()
        grad_x, grad_gamma, grad_beta = F.batch_norm2d_backward(x, grad_out, mean, variance,
                                                                self.params["weight"], self.eps)
        self.grads["weight"] = grad_gamma
        self.grads["bias"] = grad_beta
        return grad_x

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[0] != self.num_features:
            raise ValueError(f"BatchNorm2D expects ({self.num_features}, H, W) inputs, got {tuple(input_shape)}")
        return tuple(input_shape)

    def config(self):
        return dict(num_features=self.num_features, eps=self.eps, momentum=self.momentum, dtype=self.dtype.name)


class _ElementwiseActivation(Layer):
    """An activation whose backward needs the forward input: ``forward_op(x, **arguments)``
    and ``backward_op(x, grad_out, **arguments)``."""

    forward_op = backward_op = None

    def _arguments(self):
        return {}

    def forward(self, x, training=False):
        if training:
            self._saved = x
        return type(self).forward_op(x, **self._arguments())

    def backward(self, grad_out):
        return type(self).backward_op(self._need_saved(), grad_out, **self._arguments())

    def config(self):
        return self._arguments()


class ReLU6(_ElementwiseActivation):
    """``min(max(x, 0), 6)`` (MobileNet); gradient 1 strictly inside (0, 6), as PyTorch."""

    forward_op = staticmethod(F.relu6)
    backward_op = staticmethod(F.relu6_backward)


class Clip(_ElementwiseActivation):
    """``min(max(x, min), max)``; ``None`` leaves a side open.  Gradient 1 strictly inside."""

    forward_op = staticmethod(F.clip)
    backward_op = staticmethod(F.clip_backward)

    def __init__(self, min=None, max=None):
        super().__init__()
        low, high = F.clip_bounds(min, max)
        self.min = None if min is None else low
        self.max = None if max is None else high

    def _arguments(self):
        return dict(min=self.min, max=self.max)


class HardSigmoid(_ElementwiseActivation):
    """``max(0, min(1, alpha * x + beta))``; the defaults are PyTorch's ``relu6(x + 3) / 6``."""

    forward_op = staticmethod(F.hardsigmoid)
    backward_op = staticmethod(F.hardsigmoid_backward)

    def __init__(self, alpha=1 / 6, beta=0.5):
        super().__init__()
        self.alpha = F.as_number("alpha", alpha)
        self.beta = F.as_number("beta", beta)

    def _arguments(self):
        return dict(alpha=self.alpha, beta=self.beta)


class HardSwish(_ElementwiseActivation):
    """``x * relu6(x + 3) / 6`` (MobileNetV3)."""

    forward_op = staticmethod(F.hardswish)
    backward_op = staticmethod(F.hardswish_backward)


class SiLU(_ElementwiseActivation):
    """``x * sigmoid(x)``, also called swish (EfficientNet)."""

    forward_op = staticmethod(F.silu)
    backward_op = staticmethod(F.silu_backward)


class Identity(Layer):
    """Returns its input unchanged (a placeholder, or a skip path)."""

    def forward(self, x, training=False):
        if training:
            self._saved = True
        return x

    def backward(self, grad_out):
        self._need_saved()
        return grad_out


class Reshape(Layer):
    """Reshape each sample to ``shape`` (the batch axis is kept); one entry may be -1, inferred
    from the others.  ``Reshape((-1,))`` is :class:`Flatten`."""

    def __init__(self, shape):
        super().__init__()
        shape = (shape,) if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool) else shape
        if not isinstance(shape, (tuple, list)) or not shape:
            raise TypeError(f"shape must be a non-empty tuple of integers, got {shape!r}")
        if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or (s < 1 and s != -1)
               for s in shape) or list(shape).count(-1) > 1:
            raise ValueError(f"shape must hold positive integers and at most one -1, got {tuple(shape)}")
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x, training=False):
        out_shape = self.output_shape(tuple(x.shape[1:]))
        if training:
            self._saved = tuple(x.shape)
        return _reshape(x, (x.shape[0],) + out_shape)

    def backward(self, grad_out):
        return _reshape(grad_out, self._need_saved())

    def output_shape(self, input_shape):
        size = int(np.prod(input_shape, dtype=np.int64))
        known = int(np.prod([s for s in self.shape if s != -1], dtype=np.int64))
        if -1 in self.shape and size % known == 0:
            return tuple(size // known if s == -1 else s for s in self.shape)
        if size != known or -1 in self.shape:
            raise ValueError(f"Reshape cannot turn per-sample shape {tuple(input_shape)} ({size} values) "
                             f"into {self.shape}")
        return self.shape

    def config(self):
        return dict(shape=list(self.shape))


class _MergeLayer(Layer):
    """A layer of several inputs: ``forward(inputs)`` takes a list of arrays and
    ``backward(grad_out)`` returns a list of gradients, one per input."""

    takes_list = True

    def _check_inputs(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            raise TypeError(f"{type(self).__name__} takes a list of arrays, got {type(inputs).__name__}")
        if len(inputs) < 2:
            raise ValueError(f"{type(self).__name__} takes at least 2 inputs, got {len(inputs)}")
        return list(inputs)

    def _check_shapes(self, shapes):
        shapes = self._check_inputs(shapes)
        return [tuple(s) for s in shapes]


def _broadcast_result(name, shapes):
    """The shape every one of ``shapes`` broadcasts against, which must be one of them."""
    try:
        result = tuple(np.broadcast_shapes(*shapes))
    except ValueError:
        result = None
    if result not in shapes:
        raise ValueError(f"{name} inputs of shapes {shapes} do not broadcast against one of them")
    return result


class Add(_MergeLayer):
    """Sum of 2 or more inputs (the ResNet shortcut); each may broadcast against the largest."""

    def forward(self, inputs, training=False):
        inputs = self._check_inputs(inputs)
        out = inputs[0]
        for other in inputs[1:]:
            out = F.add(out, other)
        if training:
            self._saved = inputs
        return out

    def backward(self, grad_out):
        # each input's gradient is grad_out summed over the axes that input was broadcast along
        return [F.add_backward(grad_out, x, grad_out)[1] for x in self._need_saved()]

    def output_shape(self, input_shapes):
        return _broadcast_result("Add", self._check_shapes(input_shapes))


class Multiply(_MergeLayer):
    """Product of 2 inputs; one may broadcast against the other, as a squeeze-excitation gate
    (N, C, 1, 1) against feature maps (N, C, H, W)."""

    def _check_inputs(self, inputs):
        inputs = super()._check_inputs(inputs)
        if len(inputs) != 2:
            raise ValueError(f"Multiply takes exactly 2 inputs, got {len(inputs)}")
        return inputs

    def forward(self, inputs, training=False):
        a, b = self._check_inputs(inputs)
        if training:
            self._saved = (a, b)
        return F.multiply(a, b)

    def backward(self, grad_out):
        return list(F.multiply_backward(*self._need_saved(), grad_out))

    def output_shape(self, input_shapes):
        return _broadcast_result("Multiply", self._check_shapes(input_shapes))


class Concatenate(_MergeLayer):
    """Join 2 or more inputs along ``axis`` (of the batched arrays: 1 is the channel axis of
    NCHW; negative values count from the end; the batch axis 0 is not allowed)."""

    def __init__(self, axis=1):
        super().__init__()
        self.axis = check_int("axis", axis)
        if self.axis == 0:
            raise ValueError("axis=0 is the batch axis; Concatenate joins along a per-sample axis")

    def forward(self, inputs, training=False):
        inputs = self._check_inputs(inputs)
        out = F.concatenate(inputs, self.axis)
        if training:
            self._saved = [int(x.shape[self.axis]) for x in inputs]
        return out

    def backward(self, grad_out):
        return F.concatenate_backward(grad_out, self._need_saved(), self.axis)

    def output_shape(self, input_shapes):
        shapes = self._check_shapes(input_shapes)
        first = shapes[0]
        axis = self.axis - 1 if self.axis > 0 else self.axis  # per-sample shapes have no batch axis
        if not -len(first) <= axis < len(first):
            raise ValueError(f"axis={self.axis} is out of range for per-sample shapes {shapes}")
        axis %= len(first)
        for shape in shapes[1:]:
            if len(shape) != len(first) or any(m != n for k, (m, n) in enumerate(zip(shape, first)) if k != axis):
                raise ValueError(f"Concatenate(axis={self.axis}) inputs must match except along that "
                                 f"axis, got shapes {shapes}")
        return first[:axis] + (sum(s[axis] for s in shapes),) + first[axis + 1:]

    def config(self):
        return dict(axis=self.axis)


LAYER_TYPES = {cls.__name__: cls for cls in (
    Conv2D, Dense, MaxPool2D, AvgPool2D, MinPool2D, MedianPool2D, LPPool2D, GlobalAvgPool2D, ReLU,
    LeakyReLU, Sigmoid, Tanh, Softmax, Flatten, Dropout, BatchNorm2D, GlobalMaxPool2D, ReLU6, Clip,
    HardSigmoid, HardSwish, SiLU, Identity, Reshape, Add, Multiply, Concatenate, LogSoftmax)}
