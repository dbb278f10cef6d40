"""Model files: one ``.npz`` archive per model, the architecture as JSON next to the weights,
never a pickle; a training checkpoint adds the optimizer state and where training stands.

Files are written to a temporary name in the target's folder and renamed over it, so a
crash never leaves a half-written file. Reading says what a file is when it is not a cnnlab
model (HDF5, damaged, another archive, a newer format).

The functions take the model they save or fill in (:meth:`cnnlab.Model.save`,
:func:`cnnlab.load` and ``fit``'s checkpoints call them); this module does not import the
model module.
"""

import contextlib
import json
import os
import stat
import tempfile
import zipfile
import zlib
from typing import Any

import numpy as np

from . import optim as optim_module
from ._version import __version__
from .layers import LAYER_TYPES, Layer

__all__ = ["CHAIN_FORMAT", "GRAPH_FORMAT", "FORMATS", "file_format", "save_model", "read_model", "build_layers",
           "save_checkpoint", "load_checkpoint"]

CHAIN_FORMAT = "cnnlab-model-1"  # a layer list, applied in order
GRAPH_FORMAT = "cnnlab-graph-1"  # layers plus the graph: which tensors each layer call consumes
FORMATS = (CHAIN_FORMAT, GRAPH_FORMAT)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"

Path = str | os.PathLike


def file_format(architecture: dict) -> str:
    """The file format marker for an :meth:`cnnlab.Model.architecture`."""
    return GRAPH_FORMAT if "graph" in architecture else CHAIN_FORMAT


def _file_arrays(model: Any, arrays: dict[str, np.ndarray], **more: np.ndarray) -> dict[str, np.ndarray]:
    """``arrays`` (the weights, and more) followed by what marks every model file: the format
    marker, the version that wrote it and the architecture; then ``more``."""
    architecture = model.architecture()
    return dict(arrays, cnnlab_format=np.array(file_format(architecture)), cnnlab_version=np.array(__version__),
                architecture=np.array(json.dumps(architecture)), **more)


def save_model(model: Any, path: Path) -> None:
    """Write ``model`` to one ``.npz`` file, atomically (see :meth:`cnnlab.Model.save`)."""
    _write_npz(path, _file_arrays(model, model.get_weights()))


def _new_file_mode(path: Path) -> int:
    """The mode a file at ``path`` gets: an existing file's mode, else 0666 less the umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to a temporary file beside ``path``, then rename it over ``path``."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    mode = _new_file_mode(path)
    handle, temporary = tempfile.mkstemp(prefix=".cnnlab-", suffix=".npz.tmp", dir=directory)
    try:
        os.chmod(temporary, mode)  # mkstemp makes it private (0600)
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a cnnlab model file; ``ValueError`` saying what the file is otherwise."""
    not_ours = f"{path} is not a cnnlab model file"
    what = "cnnlab reads the .npz files that model.save writes"
    with open(os.fspath(path), "rb") as stream:  # FileNotFoundError as it is
        head = stream.read(len(HDF5_SIGNATURE))
    if head.startswith(HDF5_SIGNATURE):
        raise ValueError(f"{not_ours}: it is an HDF5 file (such as a Keras .h5 model); {what}")
    if not head.startswith(b"PK"):
        raise ValueError(f"{not_ours}: it is not a .npz archive; {what}")
    try:
        with np.load(os.fspath(path), allow_pickle=False) as archive:
            names = archive.files
            marker = str(archive["cnnlab_format"]) if "cnnlab_format" in names else None
            version = str(archive["cnnlab_version"]) if "cnnlab_version" in names else "unknown"
            data = {name: archive[name] for name in names} if marker in FORMATS else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        # never NumPy's own message: it suggests loading with pickle
        raise ValueError(f"{not_ours}: it is truncated, damaged, or an archive of other data; {what}") from None
    if marker is None:
        raise ValueError(f"{not_ours} (no '{CHAIN_FORMAT}' or '{GRAPH_FORMAT}' marker); {what}")
    if marker not in FORMATS:
        family, _, number = marker.rpartition("-")
        newest = {known.rpartition("-")[0]: int(known.rpartition("-")[2]) for known in FORMATS}
        if family in newest and number.isdigit() and int(number) > newest[family]:
            raise ValueError(f"{path} was written by a newer cnnlab (version {version}, format {marker!r}); "
                             f"upgrade cnnlab to read it (this is cnnlab {__version__})")
        raise ValueError(f"{not_ours} (unknown format marker {marker!r}); {what}")
    return data


def read_model(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """``(architecture, arrays)`` of a model file: the parsed JSON description and every
    array by name (the weights under ``param/...`` and ``buffer/...``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a cnnlab model.
    """
    data = _read_npz(path)
    try:
        architecture = json.loads(str(data["architecture"]))
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a valid cnnlab model: {exc}") from None
    return architecture, data


def build_layers(architecture: dict) -> list[Layer]:
    """New layers from the ``layers`` of an architecture: each one's type, constructor
    arguments (JSON lists back to tuples) and ``trainable`` flag. ``ValueError`` for an
    unknown type; ``KeyError`` or ``TypeError`` for a malformed description."""
    layers = []
    for spec in architecture["layers"]:
        if spec["type"] not in LAYER_TYPES:
            raise ValueError(f"unknown layer type {spec['type']!r}")
        config = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()}
        layer = LAYER_TYPES[spec["type"]](**config)
        layer.trainable = spec.get("trainable", True)
        layers.append(layer)
    return layers


def save_checkpoint(model: Any, path: Path, epochs_done: int, rng: np.random.Generator, history: dict,
                    base_seed: int) -> None:
    """Write ``model`` with its optimizer state and the training state (epochs done, the
    shuffling generator, the dropout seed, the history so far) to ``path``, atomically."""
    state = dict(epochs_done=epochs_done, rng=rng.bit_generator.state, history=history,
                 base_seed=base_seed, optimizer=model.optimizer.config(), steps=model.optimizer.steps,
                 loss=model.loss.name)
    arrays = model.get_weights()
    arrays.update({f"optimizer/{k}": v for k, v in model.optimizer.state_arrays().items()})
    _write_npz(path, _file_arrays(model, arrays, training_state=np.array(json.dumps(state))))


def load_checkpoint(model: Any, path: Path) -> tuple[int, np.random.Generator, dict, int]:
    """Put a checkpoint's weights and optimizer (with its state) into ``model``; returns
    ``(epochs_done, rng, history, base_seed)`` to continue training from.

    Raises
    ------
    ValueError
        If the file is a model but not a checkpoint, or holds another architecture.
    """
    data = _read_npz(path)
    if "training_state" not in data:
        raise ValueError(f"{path} is a cnnlab model but not a training checkpoint (save it with "
                         "fit(..., checkpoint=path))")
    _check_same_architecture(model, json.loads(str(data["architecture"])), path)
    model.set_weights(data, path)
    state = json.loads(str(data["training_state"]))
    model.optimizer = optim_module.from_config(state["optimizer"])
    optimizer_arrays = {k[len("optimizer/"):]: v for k, v in data.items() if k.startswith("optimizer/")}
    model.optimizer.load_state_arrays(optimizer_arrays, state["steps"], model.device)
    rng = np.random.default_rng()
    rng.bit_generator.state = state["rng"]
    return state["epochs_done"], rng, state["history"], state["base_seed"]


def _check_same_architecture(model: Any, architecture: dict, path: Path) -> None:
    """``ValueError`` unless ``architecture`` has ``model``'s layers (types and settings) and graph."""
    def structure(description):
        return ([(spec["type"], spec["config"]) for spec in description["layers"]],
                description.get("graph", {}).get("nodes"))

    if structure(model.architecture()) != structure(architecture):
        raise ValueError(f"{path} holds a different architecture than this model")
