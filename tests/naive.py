"""Slow, obviously correct references: plain loops and scipy.signal.

Nothing here is fast or clever; every function says what the op means.
"""

import numpy as np
from scipy import signal


def output_size(size, kernel_size, stride=1, padding=0, dilation=1):
    """Count window positions one by one."""
    span = dilation * (kernel_size - 1) + 1
    count = 0
    start = 0
    while start + span <= size + 2 * padding:
        count += 1
        start += stride
    return count


def _float64_padded(x, weight, padding):
    """``x`` and ``weight`` in float64, and ``x`` zero-padded by ``((top, bottom), (left, right))``."""
    x = np.asarray(x, dtype=np.float64)
    (pt, pb), (pl, pr) = padding
    return x, np.asarray(weight, dtype=np.float64), np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))


def conv2d_loops(x, weight, bias=None, stride=(1, 1), padding=((0, 0), (0, 0)),
                 dilation=(1, 1), groups=1):
    """Direct definition: every output pixel is a sum over channels and taps."""
    x, weight, padded = _float64_padded(x, weight, padding)
    n_samples, channels, height, width = x.shape
    filters, cg, kh, kw = weight.shape
    (pt, pb), (pl, pr) = padding
    sh, sw = stride
    dh, dw = dilation
    oh = (height + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (width + pl + pr - dw * (kw - 1) - 1) // sw + 1
    fg = filters // groups
    out = np.zeros((n_samples, filters, oh, ow))
    for n in range(n_samples):
        for f in range(filters):
            g = f // fg
            for y in range(oh):
                for z in range(ow):
                    total = 0.0 if bias is None else float(bias[f])
                    for c in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                total += weight[f, c, i, j] * padded[n, g * cg + c, y * sh + i * dh, z * sw + j * dw]
                    out[n, f, y, z] = total
    return out


def conv2d_gradients_loops(x, weight, grad_out, stride=(1, 1), padding=((0, 0), (0, 0)), dilation=(1, 1), groups=1):
    """The input and weight gradients of :func:`conv2d_loops` by their definition: every output
    pixel's gradient times each tap sends that tap's weight back to the input pixel it read, and
    that input pixel to the tap's weight."""
    x, weight, padded = _float64_padded(x, weight, padding)
    grad_out = np.asarray(grad_out, dtype=np.float64)
    n_samples, channels, height, width = x.shape
    filters, cg, kh, kw = weight.shape
    (pt, pb), (pl, pr) = padding
    grad_padded = np.zeros_like(padded)
    grad_weight = np.zeros_like(weight)
    fg = filters // groups
    for n in range(n_samples):
        for f in range(filters):
            g = f // fg
            for y in range(grad_out.shape[2]):
                for z in range(grad_out.shape[3]):
                    for c in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                h, w = y * stride[0] + i * dilation[0], z * stride[1] + j * dilation[1]
                                grad_padded[n, g * cg + c, h, w] += grad_out[n, f, y, z] * weight[f, c, i, j]
                                grad_weight[f, c, i, j] += grad_out[n, f, y, z] * padded[n, g * cg + c, h, w]
    return grad_padded[:, :, pt:pt + height, pl:pl + width], grad_weight


def flipped_weight(weight, groups):
    """A convolution weight (F, C/groups, KH, KW) with each group's filters and channels swapped
    and the window turned by 180 degrees: (C, F/groups, KH, KW)."""
    filters, cg, kh, kw = weight.shape
    swapped = weight.reshape(groups, filters // groups, cg, kh, kw).transpose(0, 2, 1, 3, 4)
    return swapped[:, :, :, ::-1, ::-1].reshape(groups * cg, filters // groups, kh, kw)


def conv2d_scipy(x, weight, bias=None, stride=(1, 1), padding=((0, 0), (0, 0)),
                 dilation=(1, 1), groups=1):
    """Per filter: the sum over its channels of scipy.signal.correlate2d ('valid') on the
    zero-padded input with the dilated kernel, then every stride-th pixel."""
    x = np.asarray(x, dtype=np.float64)
    weight = np.asarray(weight, dtype=np.float64)
    filters, cg, kh, kw = weight.shape
    (pt, pb), (pl, pr) = padding
    dh, dw = dilation
    sh, sw = stride
    padded = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    dilated = np.zeros((filters, cg, dh * (kh - 1) + 1, dw * (kw - 1) + 1))
    dilated[:, :, ::dh, ::dw] = weight
    fg = filters // groups
    out = []
    for n in range(x.shape[0]):
        planes = []
        for f in range(filters):
            g = f // fg
            plane = sum(signal.correlate2d(padded[n, g * cg + c], dilated[f, c], mode="valid")
                        for c in range(cg))
            plane = plane[::sh, ::sw]
            if bias is not None:
                plane = plane + bias[f]
            planes.append(plane)
        out.append(planes)
    return np.array(out)


def pool2d(x, kernel_size, stride, padding, mode):
    """Loop over windows; padding with -inf (max), +inf (min) or 0 (avg)."""
    x = np.asarray(x, dtype=np.float64)
    kh, kw = kernel_size
    sh, sw = stride
    ph, pw = padding
    fill = {"max": -np.inf, "min": np.inf}.get(mode, 0.0)
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    n_samples, channels, height, width = padded.shape
    oh = (height - kh) // sh + 1
    ow = (width - kw) // sw + 1
    out = np.zeros((n_samples, channels, oh, ow))
    for n in range(n_samples):
        for c in range(channels):
            for y in range(oh):
                for z in range(ow):
                    window = padded[n, c, y * sh:y * sh + kh, z * sw:z * sw + kw].ravel()
                    if mode == "max":
                        value = window.max()
                    elif mode == "min":
                        value = window.min()
                    elif mode == "avg":
                        value = window.sum() / window.size
                    elif mode == "median":
                        value = np.sort(window)[(window.size - 1) // 2]
                    else:
                        value = np.sqrt((window ** 2).sum())
                    out[n, c, y, z] = value
    return out


def pool_output_size(size, kernel_size, stride, before, after, dilation=1, ceil_mode=False):
    """Count window starts one by one: every window that fits the padded input; with
    ``ceil_mode`` one more, partial window if those leave pixels uncovered and it starts inside
    the input or its leading padding (PyTorch's rule)."""
    span = dilation * (kernel_size - 1) + 1
    total = before + size + after
    count, start = 0, 0
    while start + span <= total:
        count += 1
        start += stride
    last_end = start - stride + span  # where the last full window ends
    if ceil_mode and last_end < total and start < before + size:
        count += 1
    return count


def pool2d_options(x, kernel_size, stride, padding, mode, dilation=(1, 1), ceil_mode=False,
                   count_include_pad=True):
    """Pooling with every option, window by window.

    ``padding`` is ``((top, bottom), (left, right))``.  A window is the list of input pixels
    under its taps (taps in the padding are left out): max/min of that list (-inf/+inf if it
    is empty), or for avg its sum divided by, with ``count_include_pad``, the window's
    rows x columns counted from its first tap up to the end of the padded input (so a
    ``ceil_mode`` window running past the padding counts only what is left, as PyTorch),
    else by the length of the list.
    """
    x = np.asarray(x, dtype=np.float64)
    n_samples, channels, height, width = x.shape
    kh, kw = kernel_size
    sh, sw = stride
    dh, dw = dilation
    (pt, pb), (pl, pr) = padding
    oh = pool_output_size(height, kh, sh, pt, pb, dh, ceil_mode)
    ow = pool_output_size(width, kw, sw, pl, pr, dw, ceil_mode)
    out = np.zeros((n_samples, channels, oh, ow))
    for n in range(n_samples):
        for c in range(channels):
            for y in range(oh):
                for z in range(ow):
                    top, left = y * sh - pt, z * sw - pl
                    values = [x[n, c, top + i * dh, left + j * dw]
                              for i in range(kh) for j in range(kw)
                              if 0 <= top + i * dh < height and 0 <= left + j * dw < width]
                    if mode == "max":
                        value = max(values) if values else -np.inf
                    elif mode == "min":
                        value = min(values) if values else np.inf
                    elif count_include_pad:
                        rows = min(top + kh, height + pb) - top
                        columns = min(left + kw, width + pr) - left
                        value = sum(values) / (rows * columns)
                    else:
                        value = sum(values) / len(values)
                    out[n, c, y, z] = value
    return out


def pool2d_argmax(x, kernel_size, stride, padding, mode, dilation=(1, 1), ceil_mode=False):
    """Max (min) pooling and where each value came from, window by window.

    ``padding`` is ``((top, bottom), (left, right))``.  Returns ``(out, indices)``: the taps
    of a window that fall inside the input, in row-major order, are searched for the first NaN,
    else the first of the largest (smallest) values; ``indices`` holds its flat index
    ``h * W + w`` in the (H, W) plane, or -1 (and ``out`` -inf/+inf) for a window with no tap
    inside the input.  Gradients through ``indices``: :func:`scatter_through_indices`.
    """
    x = np.asarray(x)
    n_samples, channels, height, width = x.shape
    kh, kw = kernel_size
    sh, sw = stride
    dh, dw = dilation
    (pt, pb), (pl, pr) = padding
    oh = pool_output_size(height, kh, sh, pt, pb, dh, ceil_mode)
    ow = pool_output_size(width, kw, sw, pl, pr, dw, ceil_mode)
    out = np.zeros((n_samples, channels, oh, ow), dtype=x.dtype)
    indices = np.zeros((n_samples, channels, oh, ow), dtype=np.int64)
    for n in range(n_samples):
        for c in range(channels):
            for y in range(oh):
                for z in range(ow):
                    top, left = y * sh - pt, z * sw - pl
                    taps = [(top + i * dh) * width + left + j * dw
                            for i in range(kh) for j in range(kw)
                            if 0 <= top + i * dh < height and 0 <= left + j * dw < width]
                    values = [x[n, c, t // width, t % width] for t in taps]
                    if not taps:
                        chosen, value = -1, (-np.inf if mode == "max" else np.inf)
                    elif any(np.isnan(v) for v in values):
                        k = next(k for k, v in enumerate(values) if np.isnan(v))
                        chosen, value = taps[k], values[k]
                    else:
                        extreme = max(values) if mode == "max" else min(values)
                        k = values.index(extreme)  # the first of equal values
                        chosen, value = taps[k], values[k]
                    out[n, c, y, z] = value
                    indices[n, c, y, z] = chosen
    return out, indices


def scatter_through_indices(grad_out, indices, input_shape):
    """Each ``grad_out[n, c, y, z]`` added at flat index ``indices[n, c, y, z]`` of plane
    ``(n, c)`` of a zero array of ``input_shape`` (-1: nowhere), in float64."""
    grad = np.zeros(input_shape)
    width = input_shape[3]
    for n, c, y, z in np.ndindex(indices.shape):
        k = indices[n, c, y, z]
        if k >= 0:
            grad[n, c, k // width, k % width] += grad_out[n, c, y, z]
    return grad


def softmax(x, axis):
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis):
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def linear(x, weight, bias=None):
    out = np.asarray(x, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T
    return out if bias is None else out + bias


def correlate2d_loops(image, kernel, mode, boundary, fillvalue=0):
    """Correlation by definition, with scipy.signal's index rules for every boundary."""
    image = np.asarray(image)
    kernel = np.asarray(kernel)
    height, width = image.shape
    kh, kw = kernel.shape

    def read(r, c):
        if boundary == "fill" and not (0 <= r < height and 0 <= c < width):
            return fillvalue
        if boundary == "wrap":
            return image[r % height, c % width]
        if boundary == "symm":
            return image[_symmetric(r, height), _symmetric(c, width)]
        return image[r, c]

    if mode == "full":
        shape, start = (height + kh - 1, width + kw - 1), (-(kh - 1), -(kw - 1))
    elif mode == "same":
        shape, start = (height, width), (-((kh - 1) // 2), -((kw - 1) // 2))
    else:
        shape, start = (height - kh + 1, width - kw + 1), (0, 0)
    out = np.zeros(shape, dtype=np.result_type(image, kernel, np.float64))
    for m in range(shape[0]):
        for n in range(shape[1]):
            out[m, n] = sum(kernel[j, k] * read(start[0] + m + j, start[1] + n + k)
                            for j in range(kh) for k in range(kw))
    return out


def _symmetric(index, size):
    """Reflect with the edge repeated: ... 1 0 | 0 1 ... n-1 | n-1 n-2 ..."""
    while not 0 <= index < size:
        index = -index - 1 if index < 0 else 2 * size - index - 1
    return index


def numeric_gradient(function, array, eps=1e-6):
    """Central finite differences of the scalar ``function()`` with respect to every entry of
    ``array`` (changed in place and restored)."""
    grad = np.zeros_like(array, dtype=np.float64)
    flat = array.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        flat[i] = saved + eps
        up = function()
        flat[i] = saved - eps
        down = function()
        flat[i] = saved
        grad.reshape(-1)[i] = (up - down) / (2 * eps)
    return grad


def broadcast_sum(grad, shape):
    """``grad`` summed over the axes an operand of ``shape`` was broadcast along, element by
    element: each entry of ``grad`` goes to the entry of the operand it was computed from."""
    shape = tuple(shape)
    padded = (1,) * (grad.ndim - len(shape)) + shape
    out = np.zeros(padded, dtype=np.float64)
    for index in np.ndindex(grad.shape):
        out[tuple(0 if m == 1 else i for i, m in zip(index, padded))] += grad[index]
    return out.reshape(shape)


def global_max_pool2d(x):
    """Maximum of every plane (NaN wins, as ``np.max``)."""
    return x.max(axis=(2, 3))


def clip(x, low, high):
    return np.minimum(np.maximum(x, low), high)


def hardsigmoid(x, alpha=1 / 6, beta=0.5):
    return np.clip(alpha * x.astype(np.float64) + beta, 0, 1)


def hardswish(x):
    """PyTorch's definition: ``x * relu6(x + 3) / 6``."""
    x = x.astype(np.float64)
    return x * np.clip(x + 3, 0, 6) / 6


def silu(x):
    """``x * sigmoid(x)`` with SciPy's overflow-free logistic function."""
    from scipy.special import expit

    x = x.astype(np.float64)
    return x * expit(x)


def activation(spec, x):
    """The activations a convolution can fuse (:func:`cnnlab.functional.epilogue_activation`),
    by their textbook definitions, in float64."""
    from scipy.special import expit

    name, parameters = (spec, ()) if isinstance(spec, str) else (spec[0], tuple(spec[1:]))
    x = np.asarray(x, dtype=np.float64)
    if name == "relu":
        return np.maximum(x, 0)
    if name == "relu6":
        return np.clip(x, 0, 6)
    if name == "clip":
        low, high = (-np.inf if parameters[0] is None else parameters[0]), \
                    (np.inf if parameters[1] is None else parameters[1])
        return clip(x, low, high)
    if name == "leaky_relu":
        slope = parameters[0] if parameters else 0.01
        return np.where(x > 0, x, slope * x)
    if name == "hardsigmoid":
        return hardsigmoid(x, *parameters)
    if name == "hardswish":
        return hardswish(x)
    if name == "sigmoid":
        return expit(x)
    if name == "silu":
        return silu(x)
    if name == "tanh":
        return np.tanh(x)
    if name == "gelu":
        return gelu(x)
    raise ValueError(name)


def fused_conv2d(x, weight, bias, stride, padding, dilation, groups, scale=None, residual=None, spec=None):
    """``activation(scale * conv(x, weight) + bias + residual)`` from :func:`conv2d_loops`."""
    out = conv2d_loops(x.astype(np.float64), weight.astype(np.float64), None, stride, padding, dilation, groups)
    if scale is not None:
        out = out * np.asarray(scale, np.float64)[None, :, None, None]
    if bias is not None:
        out = out + np.asarray(bias, np.float64)[None, :, None, None]
    if residual is not None:
        out = out + residual
    return out if spec is None else activation(spec, out)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalization by loops over samples and groups, in float64 (PyTorch's definition:
    biased variance over each sample's group of channels and all positions)."""
    x = np.asarray(x, dtype=np.float64)
    samples, channels = x.shape[:2]
    per_group = channels // num_groups
    out = np.empty_like(x)
    for n in range(samples):
        for g in range(num_groups):
            block = x[n, g * per_group:(g + 1) * per_group]
            mean = block.mean()
            variance = ((block - mean) ** 2).mean()
            out[n, g * per_group:(g + 1) * per_group] = (block - mean) / np.sqrt(variance + eps)
    shape = (1, channels) + (1,) * (x.ndim - 2)
    if weight is not None:
        out = out * np.asarray(weight, dtype=np.float64).reshape(shape)
    if bias is not None:
        out = out + np.asarray(bias, dtype=np.float64).reshape(shape)
    return out


def conv_transpose2d(x, weight, bias=None, stride=(1, 1), padding=((0, 0), (0, 0)), output_padding=(0, 0),
                     groups=1, dilation=(1, 1)):
    """Transposed convolution by scattering: input pixel (h, w) of channel c adds
    ``x * weight[c, o]`` to the output window at ``(h * stride - top, w * stride - left)``."""
    n, c_in, h, w = x.shape
    _, c_out_g, kh, kw = weight.shape
    (top, bottom), (left, right) = padding
    out_h = (h - 1) * stride[0] - top - bottom + dilation[0] * (kh - 1) + output_padding[0] + 1
    out_w = (w - 1) * stride[1] - left - right + dilation[1] * (kw - 1) + output_padding[1] + 1
    full = np.zeros((n, c_out_g * groups, out_h + top + bottom + kh * dilation[0], out_w + left + right + kw * dilation[1]))
    per_group = c_in // groups
    for b in range(n):
        for c in range(c_in):
            g = c // per_group
            for i in range(h):
                for j in range(w):
                    for o in range(c_out_g):
                        for p in range(kh):
                            for q in range(kw):
                                full[b, g * c_out_g + o, i * stride[0] + p * dilation[0],
                                     j * stride[1] + q * dilation[1]] += x[b, c, i, j] * weight[c, o, p, q]
    out = full[:, :, top:top + out_h, left:left + out_w]
    if bias is not None:
        out = out + np.asarray(bias).reshape(1, -1, 1, 1)
    return out
def gelu(x, approximate="none"):
    """GELU by its definitions, in float64: ``x * Phi(x)`` with SciPy's normal distribution
    (``ndtr``, precise in the tails, unlike ``(1 + erf(x / sqrt(2))) / 2``), or the tanh form."""
    from scipy.special import ndtr

    x = np.asarray(x, dtype=np.float64)
    if approximate == "tanh":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))
    return x * ndtr(x)


def unary_reference(name, x):
    """The element-wise functions of ``cnnlab.functional.elementwise`` by NumPy and SciPy, in
    float64 (NaN, inf and signed zeros as NumPy gives them; no warnings)."""
    from scipy.special import erf

    x = np.asarray(x, dtype=np.float64)
    functions = {"sqrt": np.sqrt, "exp": np.exp, "log": np.log, "erf": erf, "reciprocal": np.reciprocal,
                 "abs": np.abs, "neg": np.negative, "floor": np.floor, "ceil": np.ceil, "gelu": gelu,
                 "gelu_tanh": lambda v: gelu(v, "tanh")}
    with np.errstate(all="ignore"):
        return functions[name](x)


def binary_reference(name, a, b, grad_out):
    """``(out, grad_a, grad_b)`` of subtract, divide, power, maximum or minimum by NumPy's
    broadcasting and the definitions (PyTorch's gradient rules: ties of maximum and minimum
    split, ``0 ** e`` and exponent 0 as ``torch.pow``), each gradient summed element by element
    over its operand's broadcast axes (:func:`broadcast_sum`); float64."""
    a64, b64, g = (np.asarray(v, dtype=np.float64) for v in (a, b, grad_out))
    a64, b64 = np.broadcast_arrays(a64, b64)
    with np.errstate(all="ignore"):
        if name == "subtract":
            out, da, db = a64 - b64, g, -g
        elif name == "divide":
            out, da, db = a64 / b64, g / b64, -g * a64 / b64 ** 2
        elif name == "power":
            out = a64 ** b64
            da = np.where(b64 == 0, 0.0, g * b64 * a64 ** (b64 - 1))
            db = np.where((a64 == 0) & (b64 >= 0), 0.0, g * out * np.log(a64))
        elif name in ("maximum", "minimum"):
            out = getattr(np, name)(a64, b64)
            wins = (a64 > b64) if name == "maximum" else (a64 < b64)
            loses = (a64 < b64) if name == "maximum" else (a64 > b64)
            share_a = np.where(a64 == b64, 0.5, np.where(loses, 0.0, 1.0))
            share_b = np.where(a64 == b64, 0.5, np.where(wins, 0.0, 1.0))
            da, db = g * share_a, g * share_b
        else:
            raise ValueError(name)
    return out, broadcast_sum(da, np.shape(a)), broadcast_sum(db, np.shape(b))


def slice_loops(x, starts, ends, axes, steps):
    """ONNX Slice by walking each axis's indices with explicit clamping (the spec's pseudo-code)."""
    ranges = [list(range(n)) for n in x.shape]
    for start, end, axis, step in zip(starts, ends, axes, steps):
        n = x.shape[axis]
        start = start + n if start < 0 else start
        end = end + n if end < 0 else end
        if step > 0:
            start, end = min(max(start, 0), n), min(max(end, 0), n)
        else:
            start, end = min(max(start, -1), n - 1), min(max(end, -1), n - 1)
        picked, i = [], start
        while (step > 0 and i < end) or (step < 0 and i > end):
            picked.append(i)
            i += step
        ranges[axis] = picked
    out = np.empty([len(r) for r in ranges], x.dtype)
    for index in np.ndindex(*out.shape):
        out[index] = x[tuple(r[i] for r, i in zip(ranges, index))]
    return out


def gather_loops(x, indices, axis):
    out_shape = x.shape[:axis] + indices.shape + x.shape[axis + 1:]
    out = np.empty(out_shape, x.dtype)
    for index in np.ndindex(*out_shape):
        picked = indices[index[axis:axis + indices.ndim]]
        picked = picked + x.shape[axis] if picked < 0 else picked
        out[index] = x[index[:axis] + (picked,) + index[axis + indices.ndim:]]
    return out


def reduce_loops(x, op, axes, keepdims):
    axes = tuple(range(x.ndim)) if axes is None else tuple(sorted(a % x.ndim for a in axes))
    kept = tuple(1 if i in axes else s for i, s in enumerate(x.shape))
    out = np.empty(kept, np.float64)
    for index in np.ndindex(*kept):
        values = []
        for inner in np.ndindex(*[x.shape[a] for a in axes]):
            full = list(index)
            for a, i in zip(axes, inner):
                full[a] = i
            values.append(float(x[tuple(full)]))
        values = np.array(values)
        out[index] = {"mean": lambda v: v.sum() / len(v), "sum": np.sum, "max": np.max, "min": np.min,
                      "prod": np.prod, "sum_square": lambda v: (v * v).sum(), "l1": lambda v: np.abs(v).sum(),
                      "l2": lambda v: np.sqrt((v * v).sum()),
                      "log_sum_exp": lambda v: np.log(np.exp(v).sum())}[op](values)
    return out if keepdims else out.reshape([s for i, s in enumerate(x.shape) if i not in axes])


def matmul_loops(a, b):
    """Batched matrix products by explicit loops over the broadcast leading axes."""
    a2 = a[None, :] if a.ndim == 1 else a
    b2 = b[:, None] if b.ndim == 1 else b
    lead = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    a3 = np.broadcast_to(a2, lead + a2.shape[-2:])
    b3 = np.broadcast_to(b2, lead + b2.shape[-2:])
    out = np.zeros(lead + (a2.shape[-2], b2.shape[-1]))
    for index in np.ndindex(*lead):
        for i in range(a2.shape[-2]):
            for j in range(b2.shape[-1]):
                out[index + (i, j)] = sum(a3[index + (i, k)] * b3[index + (k, j)] for k in range(a2.shape[-1]))
    if a.ndim == 1:
        out = out[..., 0, :]
    if b.ndim == 1:
        out = out[..., 0]
    return out


def pad_loops(x, pairs, mode, value=0.0):
    """Pad with ``pairs`` ((before, after) per axis, first axis first) by computing, for every output
    entry, the input entry it copies (crops for negative amounts)."""
    crop = tuple(slice(max(-b, 0), n - max(-a, 0)) for n, (b, a) in zip(x.shape, pairs))
    x = x[crop]  # negative amounts crop first (PyTorch's order), then the rest pads what is left
    pairs = [(max(b, 0), max(a, 0)) for b, a in pairs]
    out_shape = [n + b + a for n, (b, a) in zip(x.shape, pairs)]
    out = np.empty(out_shape, x.dtype)
    for index in np.ndindex(*out_shape):
        source = []
        for i, n, (before, _) in zip(index, x.shape, pairs):
            j = i - before
            if mode == "edge":
                j = min(max(j, 0), n - 1)
            elif mode == "wrap":
                j %= n
            elif mode == "reflect":
                while not 0 <= j < n:
                    j = -j if j < 0 else 2 * (n - 1) - j
            source.append(j)
        inside = all(0 <= j < n for j, n in zip(source, x.shape))
        out[index] = x[tuple(source)] if inside else value
    return out


def adaptive_avg_pool2d_loops(x, out_h, out_w):
    """PyTorch's adaptive average pooling by its definition: output (i, j) averages rows
    floor(i*H/OH) .. ceil((i+1)*H/OH) and the same for columns."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        r0, r1 = (i * h) // out_h, -(-((i + 1) * h) // out_h)
        for j in range(out_w):
            c0, c1 = (j * w) // out_w, -(-((j + 1) * w) // out_w)
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out


def interpolate_axis_loops(x, axis, out_size, mode, align_corners=False, scale=None):
    """PyTorch's interpolation along one axis, one output index at a time (its formulas in
    aten/src/ATen/native/UpSample.h): the source coordinate from ``in / out`` (or ``1 / scale``
    when a scale factor is used), nearest (floor), nearest-exact (floor of the half-pixel centre)
    or linear (half-pixel centres clamped at 0, or corner to corner)."""
    in_size = x.shape[axis]
    ratio = (1.0 / scale) if scale is not None else in_size / out_size
    moved = np.moveaxis(x, axis, -1)
    out = np.zeros(moved.shape[:-1] + (out_size,))
    for o in range(out_size):
        if mode == "nearest":
            out[..., o] = moved[..., min(int(np.floor(o * ratio)), in_size - 1)]
        elif mode == "nearest-exact":
            out[..., o] = moved[..., min(int(np.floor((o + 0.5) * ratio)), in_size - 1)]
        else:
            if align_corners:
                source = o * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
            else:
                source = max((o + 0.5) * ratio - 0.5, 0.0)
            low = min(int(np.floor(source)), in_size - 1)
            high = min(low + 1, in_size - 1)
            weight = source - low
            out[..., o] = moved[..., low] * (1 - weight) + moved[..., high] * weight
    return np.moveaxis(out, -1, axis)
