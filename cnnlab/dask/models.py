"""A model's predictions and evaluation over a dask array, chunk by chunk."""

from __future__ import annotations

import numpy as np

from .. import losses as losses_module
from ..checks import check_image_dtype
from ..dispatch import is_dask_array
from ..types import Any, Array, DaskArray
from .base import check_batch_chunks, dask_modules, kernel_lock
from .batches import batch_blocks


def check_model_input(model, x, name="x"):
    """``Model._check_inputs`` on a dask array, without computing it (non-finite values are
    found chunk by chunk, when the chunks are computed)."""
    model.require_classifier("fit, evaluate and predict")
    model.check_batch_axis(x, name)
    check_image_dtype(name, x.dtype)
    if x.ndim < 2 or x.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty batch (N, ...), got shape {x.shape}")
    model.output_shapes(x.shape[1:])
    check_batch_chunks(x, name)
    if model.input_shape is None:
        model.input_shape = tuple(x.shape[1:])


def _predict_proba_block(batch, model, batch_size):
    return model.predict_proba(batch, batch_size)


def _predict_block(batch, model, batch_size):
    return model.predict(batch, batch_size)


def predict_proba(model: Any, x: DaskArray, batch_size: int = 256) -> DaskArray:
    """Class probabilities of a dask batch, chunk by chunk: ``model.predict_proba`` per chunk.

    The model is copied (its weights at the time of the call) into the task graph once.

    Parameters
    ----------
    model : cnnlab.Model
        A classifier (one input, one output).
    x : (N, C, H, W) dask.array.Array
        float32 or float64, chunked along the batch axis only.
    batch_size : int
        The in-memory batch size within a chunk.

    Returns
    -------
    dask.array.Array
        ``(N, classes)``, chunked as ``x`` along the batch axis.

    Raises
    ------
    ValueError, TypeError
        As ``Model.predict_proba`` for bad shapes and dtypes; a ``ValueError`` that says how to
        rechunk when ``x`` is chunked along another axis. NaN or infinite values raise the
        in-memory ``ValueError`` when their chunk is computed.
    """
    check_model_input(model, x)
    classes = model.num_classes()
    return batch_blocks(_predict_proba_block, x, (model.copy(), batch_size), {}, (classes,),
                    np.dtype(model.dtype), token="cnnlab-predict-proba")


def predict(model: Any, x: DaskArray, batch_size: int = 256) -> DaskArray:
    """Predicted class indices ``(N,)`` of a dask batch, as a dask array (see
    :func:`predict_proba`)."""
    check_model_input(model, x)
    return batch_blocks(_predict_block, x, (model.copy(), batch_size), {}, (), np.dtype(np.intp),
                    token="cnnlab-predict")


def _evaluate_block(batch, labels, model, batch_size, loss):
    n = batch.shape[0]
    with kernel_lock():
        scores = model.evaluate(batch, labels, batch_size, loss)
    return np.array([[scores["loss"] * n, scores["accuracy"] * n, n]], dtype=np.float64)


def evaluate(model: Any, x: DaskArray, y: Array | DaskArray, batch_size: int = 256, loss: Any = None) -> dict:
    """``{'loss': mean loss, 'accuracy': fraction correct}`` of a dask batch, computed chunk
    by chunk on the current Dask scheduler.

    Parameters
    ----------
    model : cnnlab.Model
    x : (N, C, H, W) dask.array.Array
        Chunked along the batch axis only.
    y : (N,) array_like or dask.array.Array
        Integer class labels (a dask array is rechunked to ``x``'s batch chunks).
    batch_size : int
    loss : str, loss object or None
        As ``Model.evaluate``.

    Returns
    -------
    dict
        Python floats, as ``Model.evaluate``.
    """
    dask, da = dask_modules()
    check_model_input(model, x)
    samples = x.shape[0]
    if is_dask_array(y):
        if y.ndim != 1 or y.shape[0] != samples:
            raise ValueError(f"x and y must have the same length: {samples} images but y has "
                             f"shape {y.shape}")
        labels = y.rechunk((x.chunks[0],))
    else:
        labels = da.from_array(model.check_labels(y, samples), chunks=(x.chunks[0],))
    loss = losses_module.get(loss or model.loss or "cross_entropy")
    packed = dask.delayed((model.copy(), batch_size, loss), traverse=False)
    parts = da.map_blocks(
        _evaluate_packed, x, labels[(slice(None),) + (None,) * (x.ndim - 1)], packed,
        chunks=((1,) * len(x.chunks[0]), (3,)), drop_axis=list(range(2, x.ndim)) or None,
        dtype=np.float64, meta=np.empty((0, 0), np.float64), token="cnnlab-evaluate",
    )
    total_loss, correct, count = parts.sum(axis=0).compute()
    return {"loss": float(total_loss / count), "accuracy": float(round(correct) / count)}


def _evaluate_packed(batch, labels, packed):
    model, batch_size, loss = packed
    return _evaluate_block(batch, labels.reshape(-1), model, batch_size, loss)
