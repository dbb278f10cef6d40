"""Where the host arrays of a model call come from: buffers reused from one call to the next.

:class:`BufferPool` serves the inference plan (:mod:`cnnlab.fusion`): the output of each step,
given back by the walk once every reader has run. :class:`StepPool` serves training steps: an
array of a size an earlier step asked for, once nothing refers to it. Reusing a buffer instead
of allocating a new array saves the page faults of the first write into new memory.
"""

from __future__ import annotations

import contextlib
import math
import sys
import threading
import weakref

import numpy as np

from .kernels import cpu as cpu_kernels

__all__ = ["BufferPool", "buffer_pool", "StepPool", "step_pool"]


class BufferPool:
    """Output buffers of inference steps, reused from one step and one call to the next.

    A :class:`FusedConv` step takes its output array from here (:meth:`take`): a view of the
    smallest free buffer that is large enough (best fit), or a new buffer. Any other step whose
    layer returns new arrays runs through :meth:`lending`, so that the arrays its op allocates
    come from here too. (Only steps whose output's buffer comes back do: one that a view of it
    outlives would leave the pool for good.) When the walk drops
    a value that came from here and every step that read it returns new arrays, its buffer
    comes back (:meth:`give`) for a later step of any shape. After a call, :meth:`trim` lets go
    of the buffers that call did not use, so the pool holds about the most memory one call
    had in use at once. One pool per graph and thread (see :meth:`Graph.buffer_pool`):
    concurrent predictions never share buffers.
    """

    def __init__(self):
        self.free = {}  # dtype -> flat buffers
        self.lent = {}  # id(view handed out) -> (that view, its buffer)
        self.views = {}  # id(buffer) -> {shape: the view of it handed out for that shape}
        self.used = set()  # ids of the buffers this call used
        self.scope = []  # ids of the views lent during the current lending call

    def take(self, shape, dtype):
        dtype = np.dtype(dtype)
        count = math.prod(shape)
        buffers = self.free.get(dtype)
        best, best_size = -1, None
        if buffers:
            for i, buffer in enumerate(buffers):
                size = buffer.size
                if size >= count and (best_size is None or size < best_size):
                    best, best_size = i, size
        if best >= 0:
            buffer = buffers.pop(best)
        else:
            buffer = np.empty(count, dtype)
        key = id(buffer)
        self.used.add(key)
        # a call asks for the same shapes call after call: the view made the first time is handed
        # out again (a view costs about as much to make as the rest of a take). It is kept with
        # its buffer, as the entry in lent keeps it: an id is unique only while its object lives,
        # and a view dropped by the walk (read by a reshape that returned another view of the
        # buffer) must not let a later array with the same id give that buffer back while in use
        views = self.views.get(key)
        if views is None:
            views = self.views[key] = {}
        view = views.get(shape)
        if view is None:
            view = views[shape] = buffer[:count].reshape(shape)
        self.lent[id(view)] = (view, buffer)
        return view

    def lending(self, function, *args):
        """``function(*args)``, with every host array the op allocates on this thread
        (:func:`cnnlab.kernels.cpu.empty`) taken from the pool.

        The step's result is given back by the walk, as a fused convolution's output. The other
        arrays it took (scratch arrays) come back at once if nothing holds them or memory they
        share any more; one that something kept (a layer's cache) stays with its holder.

        Taking a reused buffer instead of a new array matters for the large outputs of
        element-wise, concatenation, resizing and pooling steps: the first write into newly
        allocated memory faults each page in (a 6.5 MB array: about 1.5 ms against 0.15 ms to
        write it again, measured with NumPy here)."""
        scope, self.scope = self.scope, []
        previous = cpu_kernels.lend_from(self._lend)  # (a model called inside a step lends from its own pool)
        try:
            result = function(*args)
        finally:
            cpu_kernels.lend_from(previous)
            taken, self.scope = self.scope, scope
        if taken:
            self._reclaim(taken, result)
        return result

    def _lend(self, shape, dtype):
        view = self.take(shape, dtype)
        self.scope.append(id(view))
        return view

    def _reclaim(self, taken, result):
        results = result if isinstance(result, (list, tuple)) else (result,)
        for key in taken:
            entry = self.lent.get(key)
            if entry is None or any(entry[0] is r for r in results):
                continue
            if self._unreferenced(entry):
                del self.lent[key]
                self.free.setdefault(entry[1].dtype, []).append(entry[1])

    def _unreferenced(self, entry):
        """Whether nothing but the pool holds a lent ``(view, buffer)`` entry's arrays (each of the
        buffer's views kept in :attr:`views` holds the buffer as its base)."""
        view_count, buffer_count = _references(entry)
        return view_count == _UNREFERENCED[0] and \
            buffer_count == _UNREFERENCED[1] + len(self.views[id(entry[1])]) - 1

    def give(self, array):
        entry = self.lent.get(id(array))
        if entry is not None and entry[0] is array:
            del self.lent[id(array)]
            self.free.setdefault(entry[1].dtype, []).append(entry[1])

    def trim(self):
        self.free = {dtype: [b for b in buffers if id(b) in self.used] for dtype, buffers in self.free.items()}
        self.lent.clear()  # whatever was not given back now belongs to the caller
        kept = {id(b) for buffers in self.free.values() for b in buffers}
        # (a buffer that served many shapes, calls on images of many sizes, starts afresh)
        self.views = {key: views for key, views in self.views.items() if key in kept and len(views) <= _VIEWS_KEPT}
        self.used = set()

    def clear(self):
        """Let go of every buffer (those lent out now belong to whoever holds them)."""
        self.free, self.views, self.used = {}, {}, set()
        self.lent.clear()

    @property
    def nbytes(self):
        return sum(b.nbytes for buffers in self.free.values() for b in buffers)


def _references(entry):
    """The reference counts of a lent ``(view, buffer)`` entry's two arrays."""
    return sys.getrefcount(entry[0]), sys.getrefcount(entry[1])


def _unreferenced_counts():
    """:func:`_references` of an entry that nothing but the pool holds, measured on one made
    as :meth:`BufferPool.take` makes it, its view also kept by shape (counting this way follows
    the interpreter's rules, whatever they are; a view of the view, or of the buffer, adds a
    reference to the buffer)."""
    buffer = np.empty(1, np.float32)
    views = {(1,): buffer[:1].reshape((1,))}
    entry = (views[(1,)], buffer)
    del buffer
    return _references(entry)


_UNREFERENCED = _unreferenced_counts()
_VIEWS_KEPT = 16  # views of one buffer kept from one call to the next, at most
_POOLS = threading.local()


def _thread_pool(graph, kind):
    """This thread's pool of class ``kind`` for ``graph`` (a graph's pools go with it)."""
    pools = _POOLS.__dict__.get(kind.__name__)
    if pools is None:
        pools = _POOLS.__dict__[kind.__name__] = weakref.WeakKeyDictionary()
    pool = pools.get(graph)
    if pool is None:
        pool = pools[graph] = kind()
    return pool


def buffer_pool(graph):
    """This thread's :class:`BufferPool` for ``graph``."""
    return _thread_pool(graph, BufferPool)


class StepPool:
    """Host arrays of training steps, each reused by a later request of the same size and dtype
    once nothing holds it any more.

    A training step asks for the same arrays in the same order every time: the layers' outputs
    and what they keep for the backward pass, the gradients, the kernels' scratch arrays. Inside
    :meth:`lending`, :func:`cnnlab.kernels.cpu.empty` hands out views of buffers kept here: a
    buffer that no array refers to any more (its reference count says so: every view of it
    holds it as its base) comes back for the next request of its exact size, in this step or
    a later one. New arrays each step would fault their pages in again on the first write
    (ResNet-18 at batch 16 and 224x224, ``bench/step_pool.py``: 4,558-8,077 minor page faults
    and 97-388 ms of system time a step, against 5-8 faults and 44-263 ms from the pool).

    :meth:`trim`, after each step, lets go of the free buffers that neither this step nor the
    one before asked for (a smaller last batch of an epoch does not drop the full batches'
    buffers), so the pool holds about what two steps had in use at once at most. One pool per
    graph and thread (:func:`step_pool`).
    """

    def __init__(self):
        self.buffers = {}  # (dtype, size) -> flat buffers
        self.used = set()  # ids of the buffers this step took
        self.before = set()  # ... and the step before

    def take(self, shape, dtype):
        """A view of shape ``shape`` of a free buffer of that many ``dtype`` elements, else of a new one."""
        dtype, count = np.dtype(dtype), math.prod(shape)
        buffers = self.buffers.setdefault((dtype, count), [])
        for buffer in buffers:
            if sys.getrefcount(buffer) <= _FREE_IN_LIST:
                break
        else:
            buffer = np.empty(count, dtype)
            buffers.append(buffer)
        self.used.add(id(buffer))
        return buffer.reshape(shape)

    @contextlib.contextmanager
    def lending(self):
        """Within the block, every host array an op allocates on this thread comes from here."""
        previous = cpu_kernels.lend_from(self.take)
        try:
            yield self
        finally:
            cpu_kernels.lend_from(previous)
            self.trim()

    def trim(self):
        """Drop the free buffers that neither this step nor the one before took; start a new step."""
        recent = self.used | self.before
        for key, buffers in list(self.buffers.items()):
            kept = [b for b in buffers if id(b) in recent]
            if kept:
                self.buffers[key] = kept
            else:
                del self.buffers[key]
        self.before, self.used = self.used, set()

    @property
    def nbytes(self):
        return sum(b.nbytes for buffers in self.buffers.values() for b in buffers)


def _free_count():
    """``sys.getrefcount`` of a buffer that nothing but a :class:`StepPool`'s list holds, read as
    :meth:`StepPool.take` reads it, in a for loop over the list (counting this way follows the
    interpreter's rules, whatever they are)."""
    for buffer in [np.empty(1, np.float32)]:
        return sys.getrefcount(buffer)


_FREE_IN_LIST = _free_count()


def step_pool(graph):
    """This thread's :class:`StepPool` for ``graph``."""
    return _thread_pool(graph, StepPool)
