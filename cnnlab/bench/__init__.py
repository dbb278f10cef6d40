"""Benchmark suites behind ``cnnlab bench``: cnnlab against its peers.

Method (see docs/performance.md): every op is timed side by side with its
peers in the same process, on the same inputs, with the same thread count
(whole networks: each engine in a process of its own, taking turns);
each timing is the median of ``repeat`` runs after one warm-up run, and the
first (compiling) call of cnnlab is reported separately as JIT time.
Ratios are ``cnnlab time / peer time``: below 1 means cnnlab is faster.

- :mod:`~cnnlab.bench.measuring`: timing, the peers, the machine's load, peak memory
- :mod:`~cnnlab.bench.ops`: conv2d, its backward pass, pooling, ReLU, linear on the reference shapes
- :mod:`~cnnlab.bench.filtering`: the edge filter, and a huge image on a Dask cluster
- :mod:`~cnnlab.bench.training`: seconds per training epoch
- :mod:`~cnnlab.bench.startup`: import time, first call and peak memory in fresh processes
- :mod:`~cnnlab.bench.networks`: ResNet-18 and MobileNetV2 through ONNX, a training step
- :mod:`~cnnlab.bench.engine_worker`: the process that times one engine for :mod:`~cnnlab.bench.networks`
- :mod:`~cnnlab.bench.overhead`: a model call split into kernel time and Python overhead
- :mod:`~cnnlab.bench.report`: the tables, the ratios chart and the report files
"""
