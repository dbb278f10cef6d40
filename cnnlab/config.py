"""Tunable settings read at call time.

Every setting is an UPPERCASE module value that the dispatch layer reads
each time it launches a kernel, so a user or a test may change it at run
time::

    import cnnlab.config as config
    config.THREADS_PER_BLOCK = 4     # tiny blocks: many blocks under the simulator
    ...
    config.reset()                   # back to the defaults

Settings
--------
THREADS_PER_BLOCK : int
    Threads in one CUDA block for the one-dimensional (grid-stride) kernels.
MAX_BLOCKS : int
    Upper bound on the number of CUDA blocks of one launch; the grid-stride
    loops cover whatever the grid does not.
IM2COL_MAX_BYTES : int
    Largest total of the per-thread column buffers (im2col workspace) the
    CPU convolution may allocate; a sample whose buffer would exceed it is
    processed in blocks of output rows (at least one row at a time).
IM2COL_CACHE_BYTES : int
    The column block a thread of the CPU convolution aims for: when a thread's share of an
    image's im2col columns would exceed it, the thread takes them a block of output rows at a
    time, so that each GEMM reads its columns from the core's cache (2 MiB, an L2 per core).
PARALLEL_MIN_WORK : int
    The least work worth giving one thread, in element visits: a CPU kernel uses at most
    ``work // PARALLEL_MIN_WORK`` threads (and no more than Numba's thread count), and runs on
    the calling thread alone below twice this much. For small work, handing a share to another
    thread costs more than it saves. A kernel weighs its work by its speed: a convolution by
    :func:`cnnlab.functional.conv.conv_work` (a GEMM's multiply-add is about a sixteenth of a
    visit), a broadcasting operation's element a third, a fully-connected layer's multiply-add
    one (``bench/thread_split.py`` shows the choice against both timings).
WORKER_SPIN_LOOKS : int
    How many times a CPU kernel thread looks for its next share of work after finishing one,
    yielding the processor between looks (about half a microsecond each), before it sleeps:
    about a millisecond, enough to span the steps of a model call without being woken.
CLAIM_MIN_WORK : int
    The least work (element visits, as ``PARALLEL_MIN_WORK``) for which the CPU kernels whose
    items write disjoint outputs (the convolution's forward pass and input gradient, its weight
    gradient) cut their items into pieces that the threads claim as they go, rather than one
    even share each: a thread on a slower or busier core then takes fewer. Each piece costs a
    kernel call (about 8 us); below this, one share each.
GPU_CONV_TILE : int
    Side of the square output tile one CUDA block computes in the
    shared-memory convolution (``GPU_CONV_TILE**2`` threads per block);
    0 selects the direct one-thread-per-output kernel.
GEMM_MIN_COLUMNS : int
    When one sample's output has fewer pixels than this (the 7x7 layers of a network at batch
    > 1), the CPU convolution's GEMM path puts the im2col columns of each thread's share of the
    samples side by side, for one wide GEMM per thread instead of one narrow GEMM per sample.
LOADER_THREADS : int
    Background threads that read and decode batches ahead of training: an
    :class:`cnnlab.data.ImageFolder`, a dataset given to ``fit``, the listing checks of an
    ImageFolder (0 reads on the calling thread, nothing ahead).
PREFETCH_BATCHES : int
    The most batches those threads hold ready (or are reading) ahead of the training step:
    what bounds the memory a streamed training set takes.
FUSE : bool
    Let the graph executor fuse, for inference, a ``Conv2D`` with the ``BatchNorm2D``, the
    two-input ``Add`` and the activation that follow it into one convolution call
    (:mod:`cnnlab.graph`). False runs every layer on its own (the same results, to rounding).
PREPARE : bool
    Let a model called again on host arrays of the same shapes run its inference plan
    prepared for them (:mod:`cnnlab.prepared`): the fused steps' checks made once, their
    outputs in arrays kept for those shapes. False walks the plan with every check at every
    call (the same results).
"""

_DEFAULTS = {
    "THREADS_PER_BLOCK": 256,
    "MAX_BLOCKS": 65535,
    "IM2COL_MAX_BYTES": 256 * 1024 * 1024,
    "IM2COL_CACHE_BYTES": 2 * 1024 * 1024,
    "GPU_CONV_TILE": 16,
    "PARALLEL_MIN_WORK": 1 << 14,
    "WORKER_SPIN_LOOKS": 2000,
    "CLAIM_MIN_WORK": 1 << 22,
    "GEMM_MIN_COLUMNS": 128,
    "FUSE": True,
    "PREPARE": True,
    "LOADER_THREADS": 2,
    "PREFETCH_BATCHES": 4,
}

THREADS_PER_BLOCK = _DEFAULTS["THREADS_PER_BLOCK"]
MAX_BLOCKS = _DEFAULTS["MAX_BLOCKS"]
IM2COL_MAX_BYTES = _DEFAULTS["IM2COL_MAX_BYTES"]
IM2COL_CACHE_BYTES = _DEFAULTS["IM2COL_CACHE_BYTES"]
GPU_CONV_TILE = _DEFAULTS["GPU_CONV_TILE"]
PARALLEL_MIN_WORK = _DEFAULTS["PARALLEL_MIN_WORK"]
WORKER_SPIN_LOOKS = _DEFAULTS["WORKER_SPIN_LOOKS"]
CLAIM_MIN_WORK = _DEFAULTS["CLAIM_MIN_WORK"]
GEMM_MIN_COLUMNS = _DEFAULTS["GEMM_MIN_COLUMNS"]
FUSE = _DEFAULTS["FUSE"]
PREPARE = _DEFAULTS["PREPARE"]
LOADER_THREADS = _DEFAULTS["LOADER_THREADS"]
PREFETCH_BATCHES = _DEFAULTS["PREFETCH_BATCHES"]


def reset():
    """Restore every setting to its default value."""
    globals().update(_DEFAULTS)
