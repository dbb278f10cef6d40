"""Models: ``Model`` (a graph of layer calls from ``cnnlab.Input`` to outputs) and
``Sequential`` (a chain of layers, the one-chain case of the same graph): structure, shapes,
devices, running and prediction.

Training (:meth:`Model.fit`, the loop in :mod:`cnnlab.training`) and files
(:meth:`Model.save`, :func:`load`, in :mod:`cnnlab.saving`) are the other modules' work: the
methods here hand them the model.

>>> import numpy as np, cnnlab
>>> from cnnlab.layers import Conv2D, ReLU, MaxPool2D, Flatten, Dense, Softmax
>>> model = cnnlab.Sequential([Conv2D(1, 4, 3, padding=1, seed=0), ReLU(), MaxPool2D(2),
...                            Flatten(), Dense(4 * 4 * 4, 10, seed=1), Softmax()],
...                           input_shape=(1, 8, 8))
>>> model.summary(print_fn=None).splitlines()[-3]
'Total parameters: 690'
"""

import copy
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike

from . import functional as F
from . import losses as losses_module
from . import saving, sources, training
from .callbacks import Callback, History
from .checks import check_device, check_float_dtype, check_image_dtype
from .compilation import report_compilation
from .device import cuda_available, is_gpu_array, to_device, to_host
from .dispatch import chunked, is_dask_array
from .graph import Graph, Input, SymbolicTensor, is_symbolic
from .kernels import cpu as cpu_kernels
from .layers import Dense, Layer
from .optim import Optimizer
from .shapes import check_int

__all__ = ["Model", "Sequential", "History", "Input", "load"]

Path = str | os.PathLike
Tensors = SymbolicTensor | Sequence[SymbolicTensor]
Shape = tuple[int, ...]


class Model:
    """A network of layers: a graph from :func:`cnnlab.Input` to output tensors, trained with
    mini-batch backpropagation.

    Build it by calling layers on symbolic tensors, then give the inputs and outputs::

        inputs = cnnlab.Input((3, 32, 32))
        h = ReLU()(Conv2D(3, 16, 3, padding=1)(inputs))
        y = Add()([h, ReLU()(Conv2D(16, 16, 3, padding=1)(h))])
        model = cnnlab.Model(inputs, Dense(16, 10)(GlobalAvgPool2D()(y)))

    Every model, :class:`Sequential` included, runs on one executor (:class:`cnnlab.graph.Graph`):
    the nodes in topological order, values released once no node needs them, and gradients
    summed where a tensor feeds several nodes or a layer is called several times.

    Parameters
    ----------
    inputs : SymbolicTensor or list of SymbolicTensor
        What :func:`cnnlab.Input` returned, in the order ``model(x1, x2)`` takes the arrays.
    outputs : SymbolicTensor or list of SymbolicTensor
    name : str or None

    Raises
    ------
    TypeError
        If an input or output is not a symbolic tensor.
    ValueError
        If an output is not produced from the inputs, or an input reaches no output.

    Notes
    -----
    ``fit``, ``evaluate``, ``predict`` and ``predict_proba`` take models of one input and one
    output (a classifier); ``forward``, ``backward`` and ``model(...)`` take any.
    """

    def __init__(self, inputs: Tensors, outputs: Tensors, name: str | None = None):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a string or None, got {name!r}")
        self.name = name
        self._graph = Graph(inputs, outputs)
        shapes = [t.sample_shape for t in self._graph.inputs]
        self.input_shape = shapes[0] if len(shapes) == 1 else shapes
        self._setup()

    def _setup(self) -> None:
        self.device = "cpu"
        self.optimizer: Optimizer | None = None
        self.loss: losses_module.Loss | None = None
        self.class_names: list[str] | None = None
        self.preprocessing: dict | None = None  # e.g. image size, colour mode, standardization: kept in saved models
        self.stop_training = False  # a callback sets it to end fit after the current epoch
        self.history: History | None = None  # the History of the last fit

    @property
    def layers(self) -> list[Layer]:
        """Each layer once, in topological order (the order of its first call)."""
        return self._graph.layers

    @property
    def graph(self) -> Graph:
        """The :class:`cnnlab.graph.Graph` the model runs: its ``nodes`` in topological order (each
        a layer call with its input tensors), ``inputs`` and ``outputs``."""
        return self._graph

    @property
    def inputs(self) -> list[SymbolicTensor]:
        return list(self._graph.inputs)

    @property
    def outputs(self) -> list[SymbolicTensor]:
        return list(self._graph.outputs)

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int | slice) -> Layer | list[Layer]:
        """``model[i]`` is layer ``i``; a slice gives a list of layers."""
        if not isinstance(index, (int, np.integer, slice)) or isinstance(index, bool):
            raise TypeError(f"model[...] takes a layer index or a slice, got {index!r}")
        return self.layers[index]

    def __repr__(self) -> str:
        shape = self.input_shape
        shape = tuple(shape) if shape is not None and len(self._graph.inputs) == 1 else shape
        return (f"{type(self).__name__}({len(self.layers)} layers, input_shape={shape}, "
                f"parameters={self.parameter_count():,}, device={self.device!r})")

    @property
    def dtype(self) -> np.dtype:
        return next((layer.dtype for layer in self.layers if layer.dtype is not None), self._graph.inputs[0].dtype)

    # --- structure ----------------------------------------------------------------
    def _input_shape_list(self, input_shape):
        if len(self._graph.inputs) == 1:
            return [tuple(input_shape)]
        if not isinstance(input_shape, (list, tuple)) or len(input_shape) != len(self._graph.inputs):
            raise ValueError(f"input_shape must list one shape per input ({len(self._graph.inputs)}), "
                             f"got {input_shape!r}")
        return [tuple(s) for s in input_shape]

    def _tensor_shapes(self, input_shape):
        return self._graph.sample_shapes(self._input_shape_list(input_shape))

    def output_shapes(self, input_shape: Shape | list[Shape]) -> list[Shape]:
        """Each layer's output shape (one sample; the first call's, for a layer called several
        times) for ``input_shape`` (a list of shapes for several inputs); ``ValueError``
        naming the first layer that does not fit."""
        shapes = self._tensor_shapes(input_shape)
        first = {}
        for node in self._graph.nodes:
            first.setdefault(id(node.layer), shapes[id(node.output)])
        return [first[id(layer)] for layer in self.layers]

    def _refresh_shapes(self):
        """Bring the symbolic tensors' shapes up to date (after a layer is replaced)."""
        if self.input_shape is not None:
            shapes = self._graph.tensor_shapes(self._input_shape_list(self.input_shape))
            for node in self._graph.nodes:
                node.output.shape = shapes[id(node.output)]

    def num_classes(self) -> int:
        """The number of classes: the output's size for :attr:`input_shape` (``ValueError`` for
        a model of several inputs or outputs)."""
        self.require_classifier()
        output = self._graph.outputs[0]
        return self._tensor_shapes(self.input_shape)[id(output)][0] if output.node else self.input_shape[0]

    def require_classifier(self, what: str = "this") -> None:
        """``ValueError`` saying that ``what`` takes models of one input and one output, unless
        this is one."""
        graph = self._graph
        if len(graph.inputs) != 1 or len(graph.outputs) != 1:
            raise ValueError(f"{what} works for models of one input and one output; this model has "
                             f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs (use forward)")

    def parameters(self, trainable_only: bool = True) -> list[tuple[Layer, str]]:
        """``(layer, name)`` pairs of the parameters, in a fixed order."""
        return [(layer, name) for layer in self.layers for name in layer.params
                if layer.trainable or not trainable_only]

    def parameter_count(self) -> int:
        return sum(layer.parameter_count() for layer in self.layers)

    def _is_chain(self):
        graph = self._graph
        previous = graph.inputs[0]
        for node in graph.nodes:
            if node.takes_list or node.inputs[0] is not previous:
                return False
            previous = node.output
        return len(graph.inputs) == 1 and len(graph.outputs) == 1

    def summary(self, input_shape: Shape | list[Shape] | None = None,
                print_fn: Callable[[str], Any] | None = print) -> str:
        """A Keras-style table: each layer's output shape and parameter count, and the totals;
        for a graph that is not a chain, also the layers each one reads ("Connected to").

        Returns the table as a string (and prints it unless ``print_fn`` is None)."""
        input_shape = input_shape if input_shape is not None else self.input_shape
        shapes = self._tensor_shapes(input_shape) if input_shape is not None else {}
        layers = self.layers
        label = {id(layer): f"{index}: {type(layer).__name__}" for index, layer in enumerate(layers)}
        several = len(self._graph.inputs) > 1
        for i, tensor in enumerate(self._graph.inputs):
            label[id(tensor)] = tensor.name or (f"input {i}" if several else "input")
        shown, sources = {}, {}
        for node in self._graph.nodes:
            shape = shapes.get(id(node.output))
            shown.setdefault(id(node.layer), []).append(
                "(None, " + ", ".join(str(s) for s in shape) + ")" if shape is not None else "?")
            sources.setdefault(id(node.layer), []).append(", ".join(
                label[id(t)] if t.node is None else label[id(t.node.layer)] for t in node.inputs))
        connected = not self._is_chain()
        rows = [("Layer (type)", "Output shape", "Param #") + (("Connected to",) if connected else ())]
        for layer in layers:
            rows.append((label[id(layer)], "; ".join(shown[id(layer)]), f"{layer.parameter_count():,}")
                        + (("; ".join(sources[id(layer)]),) if connected else ()))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        line = "-" * (sum(widths) + 2 * (len(widths) - 1))
        text = [line, "  ".join(v.ljust(w) for v, w in zip(rows[0], widths)).rstrip(), "=" * len(line)]
        text += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows[1:]]
        total = self.parameter_count()
        trainable = sum(layer.parameter_count() for layer in layers if layer.trainable)
        text += ["=" * len(line), f"Total parameters: {total:,}", f"Trainable parameters: {trainable:,}",
                 f"Non-trainable parameters: {total - trainable:,}"]
        result = "\n".join(text)
        if print_fn is not None:
            print_fn(result)
        return result

    def freeze(self, up_to: int | None = None) -> Self:
        """Make layers ``0 .. up_to-1`` of :attr:`layers` (all, when None) untrainable;
        returns ``self``.

        A frozen ``BatchNorm2D`` runs in inference mode in :meth:`fit` too (its running
        statistics, left unchanged); a kept optimizer keeps each still-trainable parameter's
        state. Changes this model in place (see :meth:`copy`)."""
        layers = self.layers
        stop = len(layers) if up_to is None else check_int("up_to", up_to, 0)
        if stop > len(layers):
            raise ValueError(f"up_to must be at most the number of layers ({len(layers)}), got {stop}")
        for layer in layers[:stop]:
            layer.trainable = False
        return self

    def unfreeze(self) -> Self:
        for layer in self.layers:
            layer.trainable = True
        return self

    def lock_weights(self) -> Self:
        """Make every parameter and buffer on the host read-only, so that inference keeps what
        its kernels make of them once instead of at every call, as onnxruntime does with a
        network's constant weights: a convolution by strips packs its weights once
        (``cnnlab.kernels.cpu.conv._prepared_weight``), and takes larger weights than it would
        packing them at every call (ResNet-18 at batch 1: docs/performance.md). Returns ``self``.

        Each array is replaced by a read-only array of the same values, a view of a read-only
        array of its own, whose flag cannot be set back (arrays shared by several layers stay
        shared); an edit in place then raises ``ValueError``, so nothing kept can go stale.
        :meth:`fit` refuses a locked model; :meth:`unlock_weights` gives writable copies back."""
        return self._replace_host_arrays(lambda array: not cpu_kernels.conv2d_weight_sealed(array),
                                         cpu_kernels.sealed_copy)

    def unlock_weights(self) -> Self:
        """Undo :meth:`lock_weights`: every read-only parameter and buffer on the host replaced by
        a writable copy (what was kept of the locked arrays is let go with them). Returns
        ``self``."""
        return self._replace_host_arrays(lambda array: not array.flags.writeable, np.array)

    def weights_locked(self) -> bool:
        """Whether a trainable parameter on the host is read-only (:meth:`lock_weights`)."""
        return any(type(value) is np.ndarray and not value.flags.writeable
                   for layer, name in self.parameters() for value in (layer.params[name],))

    def _replace_host_arrays(self, chosen, replacement):
        """Each host parameter and buffer ``chosen(array)`` accepts replaced by
        ``replacement(array)``, one replacement per array object (shared arrays stay shared)."""
        made = {}
        for layer in self.layers:
            for store in (layer.params, layer.buffers):
                for name, value in list(store.items()):
                    if type(value) is np.ndarray and chosen(value):
                        if id(value) not in made:
                            made[id(value)] = (value, replacement(value))
                        store[name] = made[id(value)][1]
        return self

    def copy(self) -> "Model":
        """An independent copy: same layers, weights, ``trainable`` flags, class names and
        preprocessing, on the same device, with no optimizer state.

        :meth:`freeze`, :meth:`replace_head` and :meth:`fit` change a model in place; copy a
        trained base first to reuse it for several new tasks.
        """
        return _build(self.architecture(), self.get_weights(), "the model").to(self.device)

    def _head(self):
        """The node of the ``Dense`` layer that feeds the output, through single-input nodes."""
        self.require_classifier("replace_head")
        node = self._graph.outputs[0].node
        while node is not None and not node.layer.replaceable_head and not node.takes_list:
            node = node.inputs[0].node
        if node is None or not node.layer.replaceable_head:
            raise ValueError("the model has no Dense layer feeding its output to replace")
        return node

    def replace_head(self, classes: int, seed: int | None = None) -> Self:
        """Swap the ``Dense`` layer that feeds the output (through activations, dropout or a
        final ``Softmax``, which stay in place) for a new one with ``classes`` outputs
        (transfer learning).

        The other layers keep their weights (freeze them with :meth:`freeze` to keep them
        fixed). Changes this model in place and returns ``self``: call :meth:`copy` first to
        keep the original.
        """
        classes = check_int("classes", classes, 1)
        old = self._head().layer
        new = Dense(old.in_features, classes, bias=old.use_bias, dtype=old.dtype.name, init=old.init,
                    seed=seed).to(self.device)
        for node in self._graph.nodes:
            if node.layer is old:
                node.layer = new
        self._refresh_shapes()
        self.class_names = None
        self.optimizer = None  # its state belonged to the old parameters
        return self

    # --- device -------------------------------------------------------------------
    def to(self, device: str) -> Self:
        """Keep parameters, activations and optimizer state on ``'cpu'`` or ``'cuda'``."""
        check_device(device)
        if device == "cuda" and not cuda_available():
            raise RuntimeError("model.to('cuda'): no CUDA GPU is available (install the 'cuda' extra "
                               "on a machine with an NVIDIA GPU)")
        for layer in self.layers:
            layer.to(device)
        if self.optimizer is not None:
            self.optimizer.to(device)
        self.device = device
        return self

    def to_model_device(self, array: np.ndarray) -> Any:
        """``array`` (host memory) on the model's device: a contiguous GPU copy on ``'cuda'``,
        itself on ``'cpu'``."""
        return to_device(np.ascontiguousarray(array)) if self.device == "cuda" else array

    # --- running ------------------------------------------------------------------
    def _input_arrays(self, x):
        count = len(self._graph.inputs)
        if count == 1:
            return [x]
        if not isinstance(x, (list, tuple)) or len(x) != count:
            raise ValueError(f"the model takes {count} inputs: pass a list of {count} arrays, got "
                             f"{type(x).__name__}" + (f" of {len(x)}" if isinstance(x, (list, tuple)) else ""))
        return list(x)

    def forward(self, x: Any, training: bool = False) -> Any:
        """The outputs for ``x`` (a list of arrays for several inputs), on the model's device;
        a tuple for several outputs. ``training=True`` keeps what :meth:`backward` needs."""
        outputs = self._graph.forward(self._input_arrays(x), training)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def __call__(self, *inputs: Any) -> Any:
        """``model(x)`` (``model(x1, x2)`` for several inputs) is ``forward`` in eval mode."""
        count = len(self._graph.inputs)
        if len(inputs) != count:
            raise ValueError(f"the model takes {count} input{'s' if count > 1 else ''}, got {len(inputs)}")
        for i, value in enumerate(inputs):
            if is_symbolic(value):
                raise TypeError(f"input {i} is a symbolic tensor: a model runs on arrays (build graphs "
                                "by calling layers)")
        return self.forward(inputs[0] if count == 1 else list(inputs), training=False)

    def backward(self, grad: Any) -> Any:
        """Backpropagate ``grad`` (a list for several outputs) through the last
        ``forward(x, training=True)``; sets every layer's ``grads`` and returns the gradient of
        the input (a tuple for several inputs)."""
        outputs = self._graph.outputs
        grads = [grad] if len(outputs) == 1 else list(grad)
        if len(grads) != len(outputs):
            raise ValueError(f"backward takes one gradient per output ({len(outputs)}), got {len(grads)}")
        result = self._graph.backward({id(t): g for t, g in zip(outputs, grads)}, input_grads=True)
        return result[0] if len(result) == 1 else tuple(result)

    def layer_outputs(self, x: Any) -> list[tuple[int, Layer, Any]]:
        """``[(layer index, layer, output)]`` for every layer call on ``x`` (eval mode), in
        topological order: what each layer makes of the input (feature maps)."""
        index = {id(layer): i for i, layer in enumerate(self.layers)}
        seen = []
        self._graph.forward(self._input_arrays(x), observe=lambda node, value: seen.append(
            (index[id(node.layer)], node.layer, value)))
        return seen

    def loss_input(self, loss: losses_module.Loss) -> SymbolicTensor:
        """The tensor ``loss`` reads: the output, or for a loss that reads logits
        (:attr:`cnnlab.losses.Loss.from_logits`, applying a softmax) the input of an output node
        that is a ``Softmax`` (the loss applies it fused and stable)."""
        softmax = self._output_softmax()
        if loss.from_logits and loss.logits_activation == "softmax" and softmax is not None:
            return softmax.inputs[0]
        return self._graph.outputs[0]

    def _output_softmax(self):
        """The ``Softmax`` node whose result is the output, looking through ``Identity`` layers
        after it (an ONNX file names its output that way); None when the output is not one."""
        node = self._graph.outputs[0].node
        while node is not None and node.layer.passes_through:
            node = node.inputs[0].node
        return node if node is not None and node.layer.outputs_probabilities else None

    def check_inputs(self, x: ArrayLike, name: str = "x") -> np.ndarray:
        """``x`` as a batch of images in the model's dtype, checked: a host array of finite
        floats that fits the layers (which sets :attr:`input_shape` when it was unknown);
        ``TypeError`` or ``ValueError`` saying what is wrong, naming ``x`` as ``name``."""
        self.require_classifier("fit, evaluate and predict")
        if is_gpu_array(x):
            raise TypeError(f"{name} must be a host (NumPy) array: the model copies each batch to its "
                            f"device ({self.device})")
        if isinstance(x, (str, bytes)) or x is None:
            raise TypeError(f"{name} must be an array of images, got {type(x).__name__}")
        x = np.asarray(x)
        self.check_batch_axis(x, name)
        check_image_dtype(name, x.dtype)
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty batch (N, ...), got shape {x.shape}")
        if not np.all(np.isfinite(x)):
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
            raise ValueError(f"{name} contains {bad} NaN or infinite values")
        # the layers' shape inference once per image shape and set of layers, not on every call
        # (MobileNetV2's, about 0.7 ms, was a tenth of a single image's predict)
        fitting = (tuple(x.shape[1:]), tuple(id(node.layer) for node in self._graph.nodes))
        if self.__dict__.get("_fitting") != fitting:
            self.output_shapes(x.shape[1:])
            self._fitting = fitting
        if self.input_shape is None:
            self.input_shape = tuple(x.shape[1:])
        return x.astype(self.dtype, copy=False)

    def check_batch_axis(self, x: np.ndarray, name: str = "x") -> None:
        """A clear ``ValueError`` for one image passed without its batch axis (``x`` has as many
        dimensions as one sample)."""
        expected = tuple(self.input_shape) if self.input_shape is not None else self.layers[0].sample_shape_hint()
        if expected is None:
            return
        if x.ndim != len(expected):
            return
        shown = ", ".join(str(s) for s in expected)
        message = f"{name} has shape {x.shape}; the model takes a batch (N, {shown})"
        if x.shape[0] == expected[0]:
            message += f": pass {name}[None] for one image"
        elif expected[0] == 1:
            message += f": pass {name}[:, None] to add the channel axis"
        raise ValueError(message)

    def check_labels(self, y: ArrayLike, samples: int, name: str = "y",
                     loss: losses_module.Loss | None = None) -> np.ndarray:
        """``y`` as ``samples`` int64 class labels in ``[0, classes)``; ``TypeError`` or
        ``ValueError`` naming it ``name`` otherwise.

        With a ``loss`` that takes target rows (:attr:`cnnlab.losses.Loss.categorical_targets`),
        ``y`` may also be ``(samples, classes)`` one-hot rows or class probabilities (values in
        ``[0, 1]``), returned in the model's dtype; and the labels lie in
        ``[0, loss.label_classes(classes))`` (0 and 1 for a binary loss on one output unit)."""
        classes = self.num_classes()
        if y is None:
            raise TypeError(f"{name} must be integer class labels, got None")
        if is_gpu_array(y):
            raise TypeError(f"{name} must be a host (NumPy) array")
        if isinstance(y, (str, bytes)):
            raise TypeError(f"{name} must be integer class labels, got {type(y).__name__}")
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[0] == samples:
            return self._target_rows(y, classes, name, loss)
        if y.ndim != 1 or y.shape[0] != samples:
            raise ValueError(f"x and {name} must have the same length: {samples} images but {name} has "
                             f"shape {y.shape}")
        return F.as_targets(name, y, samples, loss.label_classes(classes) if loss is not None else classes)

    def _target_rows(self, y, classes, name, loss):
        """Checked ``(N, classes)`` target rows in the model's dtype (see :meth:`check_labels`)."""
        if loss is None or not loss.categorical_targets:
            taker = f"the loss {loss.name!r}" if loss is not None else "this"
            raise ValueError(f"{name} has shape {y.shape}: {taker} takes ({y.shape[0]},) integer class labels "
                             f"(for one-hot rows pass {name}.argmax(axis=1))")
        if y.shape[1] != classes:
            hint = f" (for class labels pass {name}.ravel())" if y.shape[1] == 1 else ""
            raise ValueError(f"{name} has shape {y.shape}: one-hot or probability rows need one column per class "
                             f"({classes} for this model's output){hint}")
        if y.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold one-hot rows or class probabilities, got dtype {y.dtype}")
        if not np.all(np.isfinite(y)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(f"{name} must hold one-hot rows or class probabilities in [0, 1], got values "
                             f"from {y.min()} to {y.max()}")
        return np.ascontiguousarray(y, dtype=self.dtype)

    # --- prediction and evaluation ------------------------------------------------
    @chunked("predict_proba", argument=1)
    def predict_proba(self, x: ArrayLike, batch_size: int = 256) -> np.ndarray:
        """Class probabilities, ``(N, classes)``, as a NumPy array (a dask array for a dask
        ``x`` chunked along the batch axis: see :func:`cnnlab.dask.predict_proba`)."""
        x = self.check_inputs(x)
        batch_size = check_int("batch_size", batch_size, 1)
        outputs = []
        final_softmax = self._output_softmax() is not None
        with report_compilation(sys.stderr):
            for start in range(0, x.shape[0], batch_size):
                out = self.forward(self.to_model_device(x[start:start + batch_size]), training=False)
                if not final_softmax:
                    out = F.softmax(out)
                outputs.append(to_host(out))
        return np.concatenate(outputs)

    @chunked("predict", argument=1)
    def predict(self, x: ArrayLike, batch_size: int = 256) -> np.ndarray:
        """Predicted class indices, ``(N,)`` (a dask array for a dask ``x``)."""
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def predict_files(self, paths: Path | Iterable[Path], top_k: int = 1, batch_size: int = 256) -> list[dict]:
        """Classify image files, read and standardized as the model was trained
        (:attr:`preprocessing`).

        Parameters
        ----------
        paths : path or list of paths
        top_k : int, default 1
            How many of the most likely classes to list per file.

        Returns
        -------
        list of dict
            One per file, in order: ``file``, ``label`` (the class name, or its index as a
            string), ``index``, ``probability``, and ``top_k``: ``(label, probability)`` pairs,
            most likely first.

        Raises
        ------
        ValueError
            If the model keeps no preprocessing, or a file cannot be read as an image.
        FileNotFoundError
            If a file does not exist.
        """
        settings = self.preprocessing
        if not isinstance(settings, dict) or "size" not in settings:
            raise ValueError("predict_files needs the model's preprocessing, got model.preprocessing="
                             f"{settings!r}: set model.preprocessing = dict(size=(height, width), "
                             "color='rgb' or 'gray', mean=[...], std=[...]) as used for training "
                             "(cnnlab train stores it)")
        if isinstance(paths, (str, bytes, os.PathLike)):
            paths = [paths]
        paths = list(paths)
        if not paths:
            raise ValueError("paths is empty: pass one or more image files")
        classes = self.num_classes() if self.input_shape is not None else None
        top_k = check_int("top_k", top_k, 1)
        if classes is not None and top_k > classes:
            raise ValueError(f"top_k must be at most the number of classes ({classes}), got {top_k}")
        probabilities = self.predict_proba(training.read_as_trained(paths, settings), batch_size)
        names = self.class_names or [str(i) for i in range(probabilities.shape[1])]
        results = []
        for path, row in zip(paths, probabilities):
            order = np.argsort(-row, kind="stable")[:top_k]
            results.append(dict(file=os.fspath(path), label=names[order[0]], index=int(order[0]),
                                probability=float(row[order[0]]),
                                top_k=[(names[i], float(row[i])) for i in order]))
        return results

    def evaluate(self, x: Any, y: ArrayLike | None = None, batch_size: int = 256,
                 loss: str | losses_module.Loss | None = None, top_k: int | None = None) -> dict[str, float]:
        """``{'loss': mean loss, 'accuracy': fraction correct}`` on ``(x, y)``; for a dask ``x``
        computed chunk by chunk on the current Dask scheduler (:func:`cnnlab.dask.evaluate`).
        Without ``y``, ``x`` is any input :meth:`fit` takes that gives its own labels (a dataset,
        a :class:`cnnlab.data.ImageFolder`, an iterable of ``(x, y)`` batches: one pass over
        it), read batch by batch.

        ``y`` holds class labels, or one-hot / probability rows ``(N, classes)`` for a loss
        that takes them (as :meth:`fit`). ``loss`` defaults to the model's (its last ``fit``)
        or cross-entropy. ``top_k=k`` adds ``'top_k_accuracy'`` (e.g. ``'top_5_accuracy'``): the
        fraction of samples whose class is among the ``k`` most likely
        (:func:`cnnlab.metrics.top_k_accuracy`; not for a dask ``x``)."""
        if top_k is None:
            return self._evaluate(x, y, batch_size, loss)
        if is_dask_array(x):
            raise TypeError("evaluate(top_k=...) takes a NumPy x; for a dask x compute "
                            "cnnlab.metrics.top_k_accuracy(model.predict_proba(x).compute(), y, k)")
        return self._evaluate(x, y, batch_size, loss, top_k=top_k)

    @chunked("evaluate", argument=1)
    def _evaluate(self, x, y=None, batch_size=256, loss=None, top_k=None):
        batch_size = check_int("batch_size", batch_size, 1)
        loss = losses_module.get(loss or self.loss or "cross_entropy")
        source = sources.evaluation_source(self, x, y, loss)
        if top_k is not None:
            top_k = check_int("top_k", top_k, 1)
            if top_k > self.num_classes():
                raise ValueError(f"top_k must be at most the number of classes ({self.num_classes()}), got {top_k}")
        with report_compilation(sys.stderr):
            return training.evaluate(self, source, None, batch_size, loss, top_k)

    # --- training -----------------------------------------------------------------
    def fit(self, x: Any, y: ArrayLike | None = None, epochs: int = 1, batch_size: int = 32,
            optimizer: str | Optimizer | None = None, loss: str | losses_module.Loss = "cross_entropy",
            validation_data: tuple[ArrayLike, ArrayLike] | None = None, shuffle: bool = True,
            seed: int | None = None, verbose: int = 1, checkpoint: Path | None = None, resume: Path | None = None,
            augment: bool | Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
            callbacks: Callback | Iterable[Callback] | None = None, validation_split: float = 0.0,
            class_weight: dict[int | str, float] | str | None = None, steps_per_epoch: int | None = None) -> History:
        """Train with mini-batch backpropagation (the loop is :func:`cnnlab.training.fit`).

        Parameters
        ----------
        x : (N, C, H, W) float array (host memory), dask array, dataset or iterable
            The training images: in memory; a dask array chunked along the batch axis, read
            chunk by chunk; or, without ``y``, something that gives images and labels together,
            read batch by batch (:mod:`cnnlab.sources`): a dataset of ``(image, label)`` samples
            (``len`` and ``[i]``, PyTorch's ``Dataset``; a :class:`cnnlab.data.ImageFolder`), a
            dataset of ``(images, labels)`` batches (Keras' ``PyDataset``), or an iterable or
            generator of ``(images, labels)`` batches.
        y : (N,) integer class labels, (N, classes) one-hot rows or class probabilities, or None
            With arrays ``x`` only. Rows are taken by the cross-entropy (Keras's categorical
            cross-entropy: one-hot rows train exactly as their labels), ``'mse'`` and
            ``'binary_crossentropy'``; for the latter on one output unit the labels are 0 and 1.
        epochs : int
            Total number of epochs (a resumed run continues up to it).
        batch_size : int
            Samples per step (ignored for a source of batches: its batches are the steps).
            Before training, one step at this size is compared with the memory available
            (:func:`cnnlab.training.step_memory`): too large is a ``MemoryError`` that says
            which size fits.
        optimizer : Optimizer, name or None
            An optimizer object, or Keras's name ``'sgd'``, ``'adam'``, ``'adamw'``,
            ``'rmsprop'`` (a new one with PyTorch's defaults); None keeps the model's optimizer
            (from an earlier ``fit``) or makes ``Adam(1e-3)``.
        loss : str or a loss object
            A name of :data:`cnnlab.losses.LOSSES` (``'cross_entropy'``, ``'mse'``,
            ``'binary_crossentropy'``, Keras's ``'categorical_crossentropy'``, ...) or e.g.
            ``cnnlab.losses.CrossEntropy(label_smoothing=0.1)``.
        validation_data : (x_val, y_val), a dataset, an ImageFolder, an iterable, or None
            Evaluated after each epoch (never augmented, never trained on): a tuple of arrays
            (or dask arrays), or a source of images and labels that can be read again every
            epoch (not a one-shot generator).
        shuffle : bool
            Reshuffle the samples every epoch (seeded by ``seed``): arrays and datasets of
            samples in the same order; a dask array's chunks and the samples within each chunk;
            sources of batches are read as they come.
        seed : int or None
            Seeds the shuffling and the dropout masks: the same seed repeats the run.
        verbose : 0, 1 or 2
            1 shows a progress bar per epoch (loss, accuracy, samples/s, ETA): a
            :class:`cnnlab.callbacks.ProgbarLogger` added to the callbacks unless one is given;
            2 writes one line per epoch only (Keras's meaning).
        checkpoint : path or None
            After every epoch, atomically save the model, optimizer state, epoch, random
            state and history there.
        resume : path or None
            Continue from a checkpoint written by ``checkpoint=``; ends with the same
            weights as an uninterrupted run.
        augment : bool, callable or None
            ``True`` applies :class:`cnnlab.data.Augmenter` with its defaults to each training
            batch; a callable ``augment(batch, rng) -> batch`` is used as given. Each batch
            draws from its own generator, seeded by ``seed``, the epoch and the step; for a
            dataset it runs in the loading threads (so a callable of yours must be safe to call
            from several threads at once). Validation data are never augmented.
        callbacks : list of cnnlab.callbacks.Callback or None
            Run after each step and epoch (:mod:`cnnlab.callbacks`): early stopping, learning
            rate reduction, saving the best model, your own functions.
        validation_split : float in [0, 1), default 0
            Hold out this fraction of ``(x, y)`` (each class in proportion, seeded by ``seed``)
            as validation data, before any shuffling; not together with ``validation_data``.
            Needs every label up front: arrays, dask arrays or an ImageFolder.
        class_weight : None, dict or 'balanced'
            Weigh each sample's loss and gradient by its class: ``{class index or name:
            weight}`` (classes left out weigh 1), or ``'balanced'``: ``n_samples / (n_classes *
            count)`` per class (scikit-learn's rule), from the training samples (arrays, dask
            arrays or an ImageFolder). Cross-entropy loss only.
        steps_per_epoch : int or None
            For an iterable or generator of batches: the batches that make one epoch. A
            generator (a one-shot iterator) needs it and goes on where the last epoch stopped;
            an iterable that has ``len()`` defaults to one pass per epoch.

        Returns
        -------
        History
            The :class:`cnnlab.callbacks.History` callback (one of the callbacks if given, else
            a new one); also :attr:`history`.

        Raises
        ------
        TypeError, ValueError
            For bad data or settings, or a callback monitoring a metric ``fit`` does not measure
            (checked before anything changes: the weights, optimizer and loss of the model are
            untouched, and a later good call trains as if the bad one never happened).
        MemoryError
            When one training step at ``batch_size`` needs more memory than is available
            (checked before anything changes; on the CPU).
        KeyboardInterrupt
            On Ctrl-C, after the step in progress completes: the model holds its last
            completed step and the last checkpoint stays valid.
        FloatingPointError
            When the loss stops being finite (learning rate too high): on the CPU before
            that step's update; on the GPU when the running totals are next read (progress
            or the end of the epoch), since reading them every step would cost a round trip.
            After every epoch the validation loss, the parameters and the optimizer's state
            are checked too (a run can diverge with a finite loss: Adam's second moment
            overflows). With a :class:`cnnlab.callbacks.TerminateOnNaN` callback, training
            stops there instead and ``fit`` returns its history.
        """
        if self.weights_locked():
            raise ValueError("the model's weights are locked (lock_weights: read-only, for inference); "
                             "call unlock_weights() before fit")
        return training.fit(self, x, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer, loss=loss,
                            validation_data=validation_data, shuffle=shuffle, seed=seed, verbose=verbose,
                            checkpoint=checkpoint, resume=resume, augment=augment, callbacks=callbacks,
                            validation_split=validation_split, class_weight=class_weight,
                            steps_per_epoch=steps_per_epoch)

    # --- weights and saving -------------------------------------------------------
    def get_weights(self) -> dict[str, np.ndarray]:
        """Every parameter and buffer as a host array, keyed ``param/<layer index>/<name>`` and
        ``buffer/<layer index>/<name>`` (the keys of a saved file)."""
        arrays = {}
        for index, layer in enumerate(self.layers):
            for name, value in layer.params.items():
                arrays[f"param/{index}/{name}"] = to_host(value)
            for name, value in layer.buffers.items():
                arrays[f"buffer/{index}/{name}"] = to_host(value)
        return arrays

    def set_weights(self, weights: dict[str, ArrayLike], source: Any = "the weights") -> None:
        """Put the parameters and buffers of ``weights`` (as from :meth:`get_weights`) in place,
        as fresh arrays on the model's device; ``ValueError`` naming ``source`` when one is
        missing or of the wrong shape."""
        for index, layer in enumerate(self.layers):
            for store, prefix in ((layer.params, "param"), (layer.buffers, "buffer")):
                for name in store:
                    key = f"{prefix}/{index}/{name}"
                    if key not in weights or tuple(weights[key].shape) != tuple(store[name].shape):
                        raise ValueError(f"{source}: weights {key} are missing or of the wrong shape")
                    value = np.asarray(weights[key]).astype(store[name].dtype)  # always a fresh array
                    store[name] = to_device(value) if self.device == "cuda" else value

    def architecture(self) -> dict:
        """The JSON-ready description saved with the weights: each layer's type, config and
        ``trainable`` flag, and the graph (:meth:`cnnlab.graph.Graph.config`: which tensors each
        layer call consumes); weights are keyed by the layer's index in :attr:`layers`."""
        return dict(layers=self._layer_specs(), graph=self._graph.config(), name=self.name,
                    class_names=self.class_names, preprocessing=self.preprocessing)

    def _layer_specs(self):
        return [dict(type=type(layer).__name__, config=layer.config(), trainable=layer.trainable)
                for layer in self.layers]

    def save(self, path: Path) -> None:
        """Write the model to one ``.npz`` file: the architecture as JSON and the weights
        (:mod:`cnnlab.saving` describes the format).

        The file is written to a temporary name and renamed, so it is never half-written."""
        saving.save_model(self, path)


class Sequential(Model):
    """Layers applied in order: the one-chain case of :class:`Model`, built by calling each
    layer on the previous one's output, and run by the same executor.

    Parameters
    ----------
    layers : list of Layer
    input_shape : tuple or None
        One sample's shape, e.g. ``(1, 28, 28)``; lets :meth:`summary` and input checks work
        before the first ``fit`` (which otherwise takes it from the data).
    dtype : 'float32', 'float64' or None
        Cast every layer's parameters to this dtype.
    """

    def __init__(self, layers: Iterable[Layer], input_shape: Shape | None = None, dtype: str | None = None):
        layers = list(layers)
        if not layers:
            raise ValueError("a Sequential model needs at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a cnnlab layer, got {type(layer).__name__}")
        if dtype is not None:
            dtype = check_float_dtype(dtype)
            for layer in layers:
                if layer.dtype is not None:
                    layer.dtype = dtype
                    for store in (layer.params, layer.buffers):
                        for name in store:
                            store[name] = store[name].astype(dtype)
        self.name = None
        start = SymbolicTensor(None, dtype or np.float32)  # the shape may come with the first data
        tensor = start
        for layer in layers:
            tensor = layer(tensor)
        self._graph = Graph(start, tensor)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self._refresh_shapes()  # a misfit is a ValueError naming the layer
        self._setup()

    def architecture(self) -> dict:
        """The chain form: the layer list, whose order is the graph (the graph form when a
        layer appears twice in the chain)."""
        if len(self.layers) != len(self._graph.nodes):
            return super().architecture()
        return dict(layers=self._layer_specs(), input_shape=list(self.input_shape) if self.input_shape else None,
                    class_names=self.class_names, preprocessing=self.preprocessing)


def load(path: Path, device: str = "cpu") -> Model:
    """Load a model written by :meth:`Model.save` or :meth:`Sequential.save` (or a checkpoint):
    a ``Sequential`` from a layer list (``'cnnlab-model-1'``), a ``Model`` from a graph
    (``'cnnlab-graph-1'``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a cnnlab model, or its layers or weights do not match.
    """
    architecture, arrays = saving.read_model(path)
    model = _build(architecture, arrays, path)
    return model.to(device) if device != "cpu" else model


def _build(architecture: dict, weights: dict, source: Any) -> Model:
    """A CPU model from ``architecture()`` and ``get_weights()``: a :class:`Model` for the graph
    form, a :class:`Sequential` for the chain form; errors name ``source``. Shares no mutable
    state with them: class names and preprocessing are copied, weights cast anew."""
    try:
        layers = saving.build_layers(architecture)
        if "graph" in architecture:
            graph = Graph.from_config(architecture["graph"], layers)
            model = Model(graph.inputs, graph.outputs, name=architecture.get("name"))
            if len(model.layers) != len(layers):
                raise ValueError(f"the graph uses {len(model.layers)} of its {len(layers)} layers")
        else:
            model = Sequential(layers, input_shape=architecture.get("input_shape"))
        model.class_names = copy.deepcopy(architecture.get("class_names"))
        model.preprocessing = copy.deepcopy(architecture.get("preprocessing"))
        model.set_weights(weights, source)
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"{source} is not a valid cnnlab model: {exc}") from None
    return model
