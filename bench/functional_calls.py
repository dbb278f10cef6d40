"""What a functional call costs around its kernel: ``cnnlab.functional`` called as a user calls
it (argument checks, the BLAS thread limit, allocation of the result), for two versions in
alternating processes.

    python bench/functional_calls.py [--repeat 7] [--threads 2]

Times, with ``timeit`` (the minimum over ``--repeat`` runs of many calls, in microseconds a
call): ``F.conv2d`` of one 6-channel 12x12 image with 16 filters 5x5 (LeNet's second layer;
its kernel takes about 11 us, so the rest is the call's own cost), with and without a bias;
the same layer at batch 64 (the reference shape ``lenet2``); ``F.relu`` of 512 values; the
max pooling's backward through its indices at the CIFAR-sized training step's two poolings
(32 and 64 channels of 32x32 and 16x16 maps, batch 32); and the BLAS thread limit a host call
enters (``cnnlab.parallel.single_threaded_blas``) alone::

    git worktree add /tmp/before COMMIT
    for round in 1 2 3; do PYTHONPATH=/tmp/before python bench/functional_calls.py; python bench/functional_calls.py; done
"""

import argparse
import timeit

import numpy as np

import cnnlab.functional as F
from cnnlab.bench.measuring import kernel_bench_arguments
from cnnlab.parallel import single_threaded_blas


def _enter_and_leave():
    with single_threaded_blas():
        pass


def main():
    repeat = kernel_bench_arguments(argparse.ArgumentParser(), repeat=7).repeat
    rng = np.random.default_rng(0)
    one, batch = (rng.standard_normal((n, 6, 12, 12)).astype(np.float32) for n in (1, 64))
    weight = rng.standard_normal((16, 6, 5, 5)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    values = rng.standard_normal((1, 8, 8, 8)).astype(np.float32)
    pooled = {}
    for shape in ((32, 32, 32, 32), (32, 64, 16, 16)):
        maps = rng.standard_normal(shape).astype(np.float32)
        pooled[shape] = F.max_pool2d(maps, 2, return_indices=True)
    calls = [("conv2d, one image", lambda: F.conv2d(one, weight, bias), 3000),
             ("conv2d, one image, no bias", lambda: F.conv2d(one, weight), 3000),
             ("conv2d, lenet2 (batch 64)", lambda: F.conv2d(batch, weight, bias), 300),
             ("relu, 512 values", lambda: F.relu(values), 5000),
             *((f"max pool backward, {shape[1]}x{shape[2]}x{shape[3]}",
                lambda shape=shape: F.pool2d_backward(shape, None, pooled[shape][0], 2, indices=pooled[shape][1]), 50)
               for shape in pooled),
             ("the BLAS thread limit", _enter_and_leave, 5000)]
    for name, call, number in calls:
        call()  # compiled, the geometry kept
        best = min(timeit.repeat(call, number=number, repeat=repeat)) / number
        print(f"{name:30s} {best * 1e6:8.1f} us")


if __name__ == "__main__":
    main()
