"""What every ``cnnlab`` command shares: the one-line error format, the argument types and
options, the checks of output paths made before any work, and the device choice."""

import argparse
import functools
import importlib.util
import math
import os
import sys
import time
import zipfile

import cnnlab

from .. import compilation
from ..device import simulator_enabled

# What a user can cause (a wrong path, a damaged file, bad data, a learning rate too high):
# one line on stderr, exit status 2. Anything else is a defect, also shown as one line.
USER_ERRORS = (ValueError, TypeError, OSError, ArithmeticError, zipfile.BadZipFile, EOFError, ImportError,
               RuntimeError, MemoryError)
HINTS = [  # (exception type, how to fix), the first match is used
    (FloatingPointError, "give a smaller --lr, e.g. a tenth of it"),
    ((zipfile.BadZipFile, EOFError), "the file is cut short or not a cnnlab model: write it again"),
    (PermissionError, "choose a path you may write to"),
    (MemoryError, "for cnnlab train: a smaller --size or --batch-size"),
    ((FileNotFoundError, NotADirectoryError, IsADirectoryError), "check the path"),
]
DEBUG_HELP = "on an error, show the full traceback instead of one line"


def error_line(command, exc):
    """The one line a command's error is shown as: ``cnnlab <command>: <what> (<how to fix>)``."""
    what = str(exc).strip() or type(exc).__name__
    if not isinstance(exc, USER_ERRORS):
        return (f"cnnlab {command}: unexpected {type(exc).__name__}: {what} "
                f"(run cnnlab --debug {command} ... to see where, and report it)")
    hint = next((text for kind, text in HINTS if isinstance(exc, kind)), None)
    return f"cnnlab {command}: {what}" + (f" ({hint})" if hint else "")


# ----------------------------------------------------------------------------- arguments


def integer(minimum):
    """An argparse type: an integer of at least ``minimum``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def positive_float(text):
    """An argparse type: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def fraction(text):
    """An argparse type: a number strictly between 0 and 1."""
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default, except where there is none to show (None, a flag's False)."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def add_command(commands, name, help):
    """A sub-command's parser; its description is ``help`` as a sentence. ``--debug`` is
    accepted after the command too: cnnlab --debug train ... / cnnlab train ... --debug."""
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
    return commands.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".",
                               parents=[debug], formatter_class=HelpFormatter)


def add_device_option(parser, default="auto"):
    """``--device``: auto, cpu or cuda (without auto when ``default`` is not 'auto')."""
    choices = ["auto", "cpu", "cuda"] if default == "auto" else ["cpu", "cuda"]
    parser.add_argument("--device", choices=choices, default=default,
                        help="where to compute" + (" (auto: a CUDA GPU if there is one)" if default == "auto" else ""))


def pick_device(requested):
    """The device ``--device`` asks for: 'auto' is a real CUDA GPU if there is one, else the CPU."""
    if requested == "auto":  # a real GPU: Numba's CUDA simulator is for tests, far too slow to train on
        return "cuda" if cnnlab.cuda_available() and not simulator_enabled() else "cpu"
    if requested == "cuda" and not cnnlab.cuda_available():
        raise RuntimeError("--device cuda, but no CUDA GPU is available (leave --device out to use the CPU, "
                           "or install the 'cuda' extra on a machine with an NVIDIA GPU)")
    return requested


# ----------------------------------------------------------------------------- before any work


def check_output_file(option, path, suffixes, overwrite=True):
    """Fail before any work unless ``path`` can be written: its folder exists and is writable,
    its name ends in one of ``suffixes``, and (without ``overwrite``) it does not exist yet."""
    if not path.lower().endswith(suffixes):
        stem = os.path.splitext(os.path.basename(path))[0] or "output"
        raise ValueError(f"{option} {path}: the name must end in {', '.join(suffixes)} "
                         f"(e.g. {option} {stem}{suffixes[0]})")
    if os.path.isdir(path):
        raise ValueError(f"{option} {path} is a folder (give a file name inside it)")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{option} {path}: no such folder {folder} (create it first, or choose another path)")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{option} {path}: the folder {folder} is not writable (choose another path)")
    if not overwrite and os.path.exists(path):
        raise ValueError(f"{option} {path} already exists (choose another name, or add --force to overwrite it)")


def check_output_folder(option, path):
    """Fail before any work unless ``path`` is a folder, or can be made one, that is writable."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{option} {path} is a file, not a folder (give a folder for the PNG files)")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK):
        raise ValueError(f"{option} {path}: {existing} is not a writable folder (choose another path)")


def require_matplotlib():
    """Fail before any work when a command will need matplotlib and it is missing."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ImportError("plots need matplotlib (pip install 'cnnlab[viz]')")


# ----------------------------------------------------------------------------- while working


def compiling():
    """Say so on stderr while Numba compiles kernels for this machine (first run only)."""
    return compilation.report_compilation(stream=sys.stderr)


def compiled_note(report):
    """`` (of which N s compiling M kernels ...)`` from a compilation report, or a note that
    every kernel came from the cache."""
    if not report.count:
        return " (kernels loaded from the cache)"
    return f" (of which {report.seconds:.1f} s compiling {report.count} kernels for this machine, first run only)"


def warm_up_model(model, x, y=None, optimizer=None, device="cpu", detach=False):
    """Compile the CPU kernels ``model`` needs for ``x`` (and a training step on ``y``) in
    helper processes while this one runs (:func:`cnnlab.compilation.warm_up`); ``detach``: in
    one helper that goes on after this process ends (this one runs the kernels as Python)."""
    if device != "cpu":
        return compilation.warm_up(None, processes=0)
    layers = ",".join(type(layer).__name__ for layer in model.layers)
    key = f"{layers} {x.dtype} {x.shape[1:]} {'train ' + type(optimizer).__name__ if y is not None else 'predict'}"
    workload = functools.partial(compilation.model_workload, model, x, y, optimizer)
    return compilation.warm_up(workload, key=key, detach=detach)


#: the most element visits (see :func:`python_work`) a command runs with its kernels as Python
#: rather than compiling them first: 1-2 s of Python (0.3-0.5 us a visit, bench/interpreted.py),
#: against seconds of compiling
INTERPRET_MAX_WORK = 4_000_000


def python_work(model, sample_shape):
    """About how many array elements the CPU kernels visit in Python loops for one sample of
    ``sample_shape`` through ``model``: each layer's output size, times the window of a pooling
    or convolution layer, and for a convolution its input channels per filter (its im2col
    columns); None when the shapes cannot be worked out. Matrix products run in NumPy and are
    not counted."""
    try:
        shapes = model.output_shapes(tuple(sample_shape))
    except Exception:  # a model of several inputs, an unknown layer: not estimated
        return None
    work = 0
    for layer, shape in zip(model.layers, shapes):
        size = math.prod(shape)
        window = math.prod(getattr(layer, "kernel_size", None) or (1,))
        channels = getattr(layer, "in_channels", None)
        if channels is not None and getattr(layer, "out_channels", None):
            size = size // layer.out_channels * (channels // getattr(layer, "groups", 1))
        work += size * window
    return work


def interpret_kernels(model, x, samples):
    """Whether ``samples`` samples shaped like ``x`` (one batch of it) go through ``model``
    faster with the kernels it lacks run as Python (:func:`cnnlab.compilation.interpreting`)
    than compiled first: a CPU array and at most :data:`INTERPRET_MAX_WORK` element visits."""
    import numpy as np

    if not isinstance(x, np.ndarray):
        return False
    work = python_work(model, x.shape[1:])
    return work is not None and work * samples <= INTERPRET_MAX_WORK


def timed(function, *args, **kwargs):
    """``(function(*args, **kwargs), seconds it took)``."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start
