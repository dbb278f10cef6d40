"""Launch shapes for the grid-stride CUDA kernels, read from :mod:`cnnlab.config`."""

from ... import config


def launch_shape(work_items):
    """``(blocks, threads_per_block)`` covering ``work_items`` with grid-stride loops.

    Blocks are capped at ``config.MAX_BLOCKS``; each thread then loops over
    several items.
    """
    threads = max(1, int(config.THREADS_PER_BLOCK))
    blocks = max(1, min(int(config.MAX_BLOCKS), (work_items + threads - 1) // threads))
    return blocks, threads
