"""Where a training step's time goes, layer by layer: the CIFAR-sized network of the models
suite (three convolutions, ReLUs, max pooling, a dense layer; batch 32, SGD).

    python bench/training_layers.py [--rounds 5]

Times every layer's forward and backward call (by class, and by channels for the
convolutions) over ``fit`` runs of :data:`cnnlab.bench.networks.TRAIN_STEPS` steps, after three
untimed runs; prints, per round, the run's milliseconds per step and each layer kind's
milliseconds per step, the largest first. A convolution that runs with the ReLU after it in
its output write leaves no ReLU forward call, and a ReLU that only a max pooling reads no ReLU
backward call (``cnnlab.fusion.training_fusion``). Two versions in alternating processes::

    git worktree add /tmp/before COMMIT
    for round in 1 2; do PYTHONPATH=/tmp/before python bench/training_layers.py; python bench/training_layers.py; done
"""

import argparse
import collections
import time

import cnnlab.layers as L
from cnnlab.bench import networks


def _timed(totals, cls, name):
    """Wrap ``cls.name`` so that each call's seconds add to ``totals[(kind, name)]``."""
    function = getattr(cls, name)

    def timed(self, *arguments, **keywords):
        start = time.perf_counter()
        try:
            return function(self, *arguments, **keywords)
        finally:
            kind = cls.__name__
            if hasattr(self, "in_channels"):
                kind += f" {self.in_channels}->{self.out_channels}"
            totals[(kind, name)] += time.perf_counter() - start
    setattr(cls, name, timed)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    totals = collections.defaultdict(float)
    for cls in (L.Conv2D, L.ReLU, L.MaxPool2D, L.Dense, L.Flatten):
        for name in ("forward", "backward"):
            _timed(totals, cls, name)
    run = networks.cnnlab_training_step()
    for _ in range(3):
        run()
    steps = networks.TRAIN_STEPS
    for round_ in range(args.rounds):
        totals.clear()
        start = time.perf_counter()
        run()
        seconds = time.perf_counter() - start
        parts = sorted(totals.items(), key=lambda item: -item[1])
        print(f"round {round_ + 1}: {seconds / steps * 1e3:.2f} ms a step; " + ", ".join(
            f"{kind} {name} {value / steps * 1e3:.2f}" for (kind, name), value in parts))


if __name__ == "__main__":
    main()
