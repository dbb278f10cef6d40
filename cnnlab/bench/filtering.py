"""Image filtering timed: the textbook 3x3 edge filter on one image against scipy, and a huge
image filtered chunk by chunk on a Dask cluster against dask-image and cnnlab in memory."""

import logging
import time

import numba
import numpy as np

from .. import filters
from .measuring import maxrss_bytes, measure, reset_peak_rss

EDGE_IMAGE_SIZE = 2048


def filter_suite(repeat, threads, compare, size=EDGE_IMAGE_SIZE, progress=None):
    """The textbook 3x3 edge filter on one ``size`` x ``size`` float32 image."""
    from scipy import ndimage, signal

    if progress:
        progress(0, 1, f"edge {size}x{size}")
    image = np.random.default_rng(0).random((size, size)).astype(np.float32)
    kernel = filters.KERNELS["edge"].astype(np.float32)
    first, median, spread = measure(lambda: filters.correlate2d(image, kernel, mode="same"), repeat)
    row = dict(op="filter", shape=f"edge{size}", dtype="float32", device="cpu", seconds=median,
               spread=spread, jit_seconds=max(0.0, first - median),
               gbytes=2 * image.nbytes / median / 1e9, peers={})
    if "scipy" in compare:
        row["peers"]["scipy.signal"] = measure(lambda: signal.correlate2d(image, kernel, mode="same"),
                                               max(1, repeat // 3))[1]
        row["peers"]["scipy.ndimage"] = measure(lambda: ndimage.correlate(image, kernel, mode="constant"),
                                                repeat)[1]
    return [row]


# ----------------------------------------------------------------------------- huge images on Dask

DASK_IMAGE_SIZE = 16384
DASK_CHUNK = 2048
DASK_WORKERS = 2
DASK_CHECK_SIZE = 512
DASK_EXTRA_MESSAGE = ("cnnlab bench --op dask needs dask and distributed, the 'dask' extra: "
                      "pip install 'cnnlab[dask]'")
DASK_IMAGE_MISSING = ("dask-image is not installed: its row is left out "
                      "(pip install dask-image, or the 'bench' extra)")


def dask_bench_modules():
    """``(dask.array, distributed, dask_image.ndfilters or None)``; ImportError naming the extra."""
    try:
        import dask.array as da
        import distributed
    except ImportError:
        raise ImportError(DASK_EXTRA_MESSAGE) from None
    try:
        import dask_image.ndfilters as ndfilters
    except ImportError:
        ndfilters = None
    return da, distributed, ndfilters


def _worker_imports():
    """Run on each worker before timing: the modules the methods use, and the worker's
    resident memory with nothing computed yet."""
    import numpy  # noqa: F401
    import scipy.ndimage  # noqa: F401

    import cnnlab.filters  # noqa: F401
    try:
        import dask_image.ndfilters  # noqa: F401
    except ImportError:
        pass
    return maxrss_bytes()


def _dask_image(da, size, chunk, seed=0):
    """The lazy float32 test image: uniform [0, 1) values, generated chunk by chunk where it is
    computed (the same values on any scheduler)."""
    return da.random.default_rng(seed).random((size, size), dtype=np.float32, chunks=chunk)


def _dask_methods(kernel, ndfilters):
    """``{name: function(dask image) -> lazy filtered image}``: cnnlab on dask and dask-image,
    both true convolutions, mode 'same', zeros outside the image."""
    methods = {"cnnlab-dask": lambda image: filters.convolve2d(image, kernel, mode="same", boundary="fill",
                                                                fillvalue=0)}
    if ndfilters is not None:
        methods["dask-image"] = lambda image: ndfilters.convolve(image, kernel, mode="constant", cval=0.0)
    return methods


def dask_agreement(kernel, ndfilters=None, size=DASK_CHECK_SIZE, chunk=None):
    """Max absolute differences on a small image (synchronous scheduler) between cnnlab on dask
    and cnnlab in memory and, when dask-image is given, dask-image and scipy.ndimage.convolve.

    Returns
    -------
    dict
        ``{'in-memory cnnlab': d, 'dask-image': d, 'scipy.ndimage': d}`` (max |cnnlab-dask - other|).

    Raises
    ------
    RuntimeError
        When a result is not ``allclose`` to cnnlab-dask's: timing different answers means nothing.
    """
    from scipy import ndimage

    da, _, _ = dask_bench_modules()
    chunk = chunk or max(size // 4, 8)
    image = _dask_image(da, size, chunk)
    whole = image.compute(scheduler="synchronous")
    methods = _dask_methods(kernel, ndfilters)
    ours = methods["cnnlab-dask"](image).compute(scheduler="synchronous")
    others = {"in-memory cnnlab": filters.convolve2d(whole, kernel, mode="same")}
    if ndfilters is not None:
        others["dask-image"] = methods["dask-image"](image).compute(scheduler="synchronous")
        others["scipy.ndimage"] = ndimage.convolve(whole, kernel, mode="constant", cval=0.0)
    differences = {}
    for name, theirs in others.items():
        if theirs.shape != ours.shape or not np.allclose(ours, theirs, rtol=1e-5, atol=1e-6):
            raise RuntimeError(f"cnnlab on dask and {name} disagree on a {size}x{size} image (max difference "
                               f"{np.max(np.abs(ours.astype(np.float64) - theirs)):.3g}): not timing them")
        differences[name] = float(np.max(np.abs(ours.astype(np.float64) - theirs)))
    return differences


def _dask_cluster(distributed, workers, memory_limit, processes):
    """A quiet LocalCluster of ``workers`` single-threaded workers whose Numba uses one thread
    (so that the workers do not compete for the cores), and a client not set as default."""
    options = dict(n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=None,
                   silence_logs=logging.ERROR, memory_limit=memory_limit)
    if processes:
        options["env"] = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cluster = distributed.LocalCluster(**options)
    return cluster, distributed.Client(cluster, set_as_default=False)


def _time_on_cluster(name, method, size, chunk, repeat, workers, processes, distributed, da, check=None):
    """One method on a fresh cluster: the image persisted on the workers, then ``repeat`` + 1
    runs of ``method(image).sum()`` computed there; the workers' peak memory read after. With
    ``check`` (another method), then max |check(image) - method(image)| over the whole image."""
    memory_limit = max(4 * 2**30, 4 * size * size * 4 // workers)  # no spilling: timings, not disk
    cluster, client = _dask_cluster(distributed, workers, memory_limit, processes)
    try:
        idle = client.run(_worker_imports)
        start = time.perf_counter()
        image = client.persist(_dask_image(da, size, chunk))
        with client.as_current():
            distributed.wait(image)
        generate = time.perf_counter() - start
        held = client.run(reset_peak_rss)
        total = method(image).sum()
        sums = []
        first, median, spread = measure(lambda: sums.append(float(client.compute(total, sync=True))), repeat)
        peaks = client.run(maxrss_bytes)
        if check is not None:
            difference = abs(check(image) - method(image)).max()
            difference = float(client.compute(difference, sync=True))
    finally:
        client.close()
        cluster.close()
    addresses = sorted(peaks)
    return dict(op="dask", method=name, shape=f"{size}x{size}/{chunk}", dtype="float32", device="cpu",
                seconds=median, spread=spread, first_seconds=first, jit_seconds=max(0.0, first - median),
                mpixels_per_second=size * size / median / 1e6, generate_seconds=generate,
                worker_idle_bytes=[idle[a] for a in addresses], worker_held_bytes=[held[a] for a in addresses],
                worker_peak_bytes=[peaks[a] for a in addresses], result_sum=sums[-1], peers={},
                **({"full_max_difference": difference} if check is not None else {}))


def _time_in_memory(da, size, chunk, weights, repeat, threads):
    """The whole test image filtered in this process with ``threads`` Numba threads: the row of
    :func:`dask_suite`'s in-memory method, its memory the peak resident memory the call adds."""
    whole = np.empty((size, size), np.float32)
    da.store(_dask_image(da, size, chunk), whole, scheduler="synchronous", lock=False)
    filters.convolve2d(whole[:8, :8], weights, mode="same")  # load the kernel
    before = reset_peak_rss()
    sums = []
    first, median, spread = measure(
        lambda: sums.append(float(filters.convolve2d(whole, weights, mode="same").sum(dtype=np.float64))), repeat)
    return dict(op="dask", method="in-memory cnnlab", shape=f"{size}x{size}", dtype="float32", device="cpu",
                seconds=median, spread=spread, first_seconds=first, jit_seconds=max(0.0, first - median),
                mpixels_per_second=size * size / median / 1e6, image_bytes=whole.nbytes,
                peak_increase_bytes=max(0, maxrss_bytes() - before), threads=threads,
                result_sum=sums[-1], peers={})


def dask_suite(size=DASK_IMAGE_SIZE, chunk=DASK_CHUNK, repeat=3, threads=None, kernel="edge",
               workers=DASK_WORKERS, processes=True, progress=None):
    """A ``size`` x ``size`` float32 image edge-filtered chunk by chunk on a Dask LocalCluster,
    by cnnlab (``cnnlab.filters.convolve2d`` on the dask array) and by
    ``dask_image.ndfilters.convolve`` on the same chunks, against cnnlab on the whole image in
    this process.

    Method:

    - The kernel (``cnnlab.filters.KERNELS[kernel]``, float32) is applied as a true convolution,
      mode 'same', zeros outside the image (cnnlab ``boundary='fill'``; ndimage
      ``mode='constant', cval=0``). Before timing, :func:`dask_agreement` checks on a small image
      that all methods agree (``RuntimeError`` otherwise) and its max differences are returned.
    - The image (uniform random, seeded) is generated on the workers and persisted there; the
      client never holds it. Each timed run computes ``filtered.sum()`` on the cluster, which
      forces every chunk and brings one number home. The first run (loading the compiled kernels
      on the workers) is reported apart; the time is the median of the ``repeat`` runs after it.
    - Each method gets a fresh cluster of ``workers`` processes with one thread each (and one
      Numba thread), so that the peak memories do not mix. A worker's peak is the kernel's
      high-water mark of its resident memory (Linux ``VmHWM``, restarted with ``clear_refs``
      once the image is persisted; ``ru_maxrss`` elsewhere): exact, where distributed's monitor
      samples every 0.5 s and misses short peaks.
    - In-memory cnnlab filters the whole image in this process with ``threads`` Numba threads;
      its memory is the peak resident memory added by the call (the output and any workspace).

    Returns
    -------
    list of dict
        One row per method (``method`` 'cnnlab-dask', 'dask-image' when installed, 'in-memory
        cnnlab'), with ``seconds`` (median), ``spread``, ``first_seconds``,
        ``mpixels_per_second``, the workers' ``worker_idle_bytes`` / ``worker_held_bytes`` /
        ``worker_peak_bytes`` (Dask rows) or ``peak_increase_bytes`` (in memory); the
        cnnlab-dask row's ``peers`` hold the other methods' medians, its ``agreement`` the
        small-image differences and ``missing`` names dask-image when absent.

    Raises
    ------
    ImportError
        Without dask or distributed (the ``dask`` extra), in one line.
    """
    da, distributed, ndfilters = dask_bench_modules()
    if threads is None:
        threads = numba.get_num_threads()
    if size < 3 or chunk < 3:
        raise ValueError(f"--size and --chunk must be at least 3 (the kernel's size), got {size} and {chunk}")
    chunk = min(chunk, size)
    weights = filters.KERNELS[kernel].astype(np.float32)
    steps = 2 + (ndfilters is not None)
    if progress:
        progress(0, steps + 1, f"agreement check, {min(size, DASK_CHECK_SIZE)}x{min(size, DASK_CHECK_SIZE)}")
    agreement = dask_agreement(weights, ndfilters, size=min(size, DASK_CHECK_SIZE),
                               chunk=min(chunk, max(min(size, DASK_CHECK_SIZE) // 4, 8)))

    # in memory first, while this process's peak is still its own
    if progress:
        progress(1, steps + 1, f"in-memory cnnlab, {size}x{size}")
    in_memory = _time_in_memory(da, size, chunk, weights, repeat, threads)

    rows = []
    methods = _dask_methods(weights, ndfilters)
    for index, (name, method) in enumerate(methods.items()):
        if progress:
            progress(2 + index, steps + 1, f"{name} on {workers} workers, {size}x{size} in {chunk}x{chunk} chunks")
        check = methods["cnnlab-dask"] if name == "dask-image" else None  # after its peak is read
        rows.append(_time_on_cluster(name, method, size, chunk, repeat, workers, processes, distributed, da,
                                     check))
    rows.append(in_memory)
    ours = rows[0]
    ours["peers"] = {row["method"]: row["seconds"] for row in rows[1:]}
    ours["agreement"] = agreement
    ours["check_size"] = min(size, DASK_CHECK_SIZE)
    if ndfilters is not None:
        ours["agreement_full"] = {"dask-image": rows[1].pop("full_max_difference")}
    ours["missing"] = [] if ndfilters is not None else ["dask-image"]
    ours.update(kernel=kernel, chunk=chunk, workers=workers)
    return rows
