"""Dask arrays through cnnlab: huge images and big batches, computed chunk by chunk.

The functions here take a ``dask.array.Array`` and return one, built from the in-memory
functions of :mod:`cnnlab.filters` and :class:`cnnlab.Model` applied to each chunk, so the
kernels never see Dask and every chunk gives exactly what the in-memory call gives:

- :func:`correlate2d`, :func:`convolve2d` and :func:`apply` exchange a halo as deep as the
  kernel's reach between neighbouring chunks (``dask.array.overlap.overlap``) and filter each
  chunk with its halo; the result has the image's chunks (mode 'same').
- :func:`map_batches` runs a function of an in-memory batch over a dask array chunked along
  the batch axis only; :func:`predict_proba`, :func:`predict` and :func:`evaluate` use it for
  a model, which is placed in the task graph once.
- :func:`map_windows` runs a sliding-window op (convolution, pooling) over an (N, C, H, W) dask
  array chunked across the image: each output chunk is computed from its input chunk and the
  halo its windows reach, with the op's padding at the image's edges only; ``F.conv2d`` and
  the poolings use it for such arrays.
- ``device='cuda'`` (or weights on the GPU) runs the chunks' kernels on the GPU: each task
  copies its chunk there and the result back, so the chunks stay NumPy arrays.
- :func:`read_image_folder` lists image files and folders now and reads them later, one task
  per chunk of images; :func:`classify_images` standardizes and classifies them in the tasks
  and :func:`compute_chunks` hands a result over chunk by chunk (``cnnlab predict --dask``).

``cnnlab.filters.correlate2d``, ``convolve2d``, ``apply`` and ``Model.predict_proba``,
``predict`` and ``evaluate`` call these when they are given a dask array, so user code does
not change. Results are lazy: ``.compute()`` runs them on the current scheduler, a
``dask.distributed`` cluster included.

Dask itself is imported only when a dask array is used (the ``dask`` extra).

One module per job: ``base`` (Dask, the kernel lock, where chunks run), ``filters``, ``batches``
(:func:`map_batches`), ``windows`` (:func:`map_windows`), ``ops`` (the functional ops),
``models`` and ``images``. Importing this package registers, with :mod:`cnnlab.dispatch`, the
function that runs each kind of op on a dask array.
"""

from .. import dispatch
from ..dispatch import is_dask_array
from .base import kernel_lock
from .batches import map_batches
from .filters import apply, convolve2d, correlate2d
from .images import classify_images, compute_chunks, read_image_folder
from .models import evaluate, predict, predict_proba
from .ops import convolution_op, elementwise_op, per_sample_op, pooling_op
from .windows import map_windows

__all__ = [
    "apply",
    "classify_images",
    "compute_chunks",
    "convolve2d",
    "correlate2d",
    "evaluate",
    "is_dask_array",
    "kernel_lock",
    "map_batches",
    "map_windows",
    "predict",
    "predict_proba",
    "read_image_folder",
]

# what runs each kind of op on a dask array (see cnnlab.dispatch): the functional ops' kinds with
# the undecorated op, the filters' and models' kinds with this package's function of the same name

dispatch.register("per_sample", lambda function, args, kwargs: per_sample_op(function, args[0], args[1:], kwargs))
dispatch.register("elementwise", lambda function, args, kwargs: elementwise_op(function, args[0], args[1:], kwargs))
dispatch.register("convolution", lambda function, args, kwargs: convolution_op(function, args[0], args[1:], kwargs))
dispatch.register("pooling", lambda function, args, kwargs: pooling_op(function, args[0], args[1:], kwargs))
dispatch.register("correlate2d", lambda function, args, kwargs: correlate2d(*args, **kwargs))
dispatch.register("convolve2d", lambda function, args, kwargs: convolve2d(*args, **kwargs))
dispatch.register("filter", lambda function, args, kwargs: apply(*args, **kwargs))
dispatch.register("predict_proba", lambda function, args, kwargs: predict_proba(*args, **kwargs))
dispatch.register("predict", lambda function, args, kwargs: predict(*args, **kwargs))
dispatch.register("evaluate", lambda function, args, kwargs: evaluate(*args, **kwargs))
