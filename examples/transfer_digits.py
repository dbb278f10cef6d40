"""Transfer learning on scikit-learn's digits.

A CNN learns digits 0-4 from every training image; its convolutional base is then reused for
digits 5-9 with only a few images per class (20 by default). The same network trained from
scratch on those few images is the baseline. The base never sees a 5-9, so every image of
5-9 outside the few training images is held out: both networks are scored on all of them.

    python examples/transfer_digits.py [--seeds 20] [--per-class 20] [--first-seed 0]
    python examples/transfer_digits.py --per-class 1,2,5,10,20     # a learning curve
    python examples/transfer_digits.py --steps 30                  # a shorter fine-tuning
"""

import argparse
import math

import numpy as np
from sklearn.datasets import load_digits

import cnnlab
from cnnlab.applications import classic_cnn
from cnnlab.data import Augmenter, train_test_split

STEPS = 150  # optimizer steps on the few images: 30 epochs of five batches of 20 at 20 per class


def load():
    """``(images, labels)`` of all 1797 digits, images NCHW float32 in [0, 1]."""
    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32)[:, None], digits.target


def train_base(images, labels, seed):
    """The demo network trained on the training split of digits 0-4 (with augmentation)."""
    x_train, _, y_train, _ = train_test_split(images, labels, test_size=0.25, seed=0)
    first = y_train < 5
    base = classic_cnn(1, 8, 5, seed=seed)
    base.fit(x_train[first], y_train[first], epochs=20, batch_size=32, optimizer=cnnlab.optim.Adam(2e-3),
             seed=seed, verbose=0,
             augment=Augmenter(shift=0.1, flip=False, rotation=10, zoom=0.1, brightness=0.05, contrast=0.1))
    return base


def fine_tune(model, x, y, seed, steps=STEPS):
    """About ``steps`` Adam steps (rate 2e-3) in batches of at most 20 (whole epochs), the same
    for both networks."""
    batch = min(20, len(x))
    model.fit(x, y, epochs=math.ceil(steps / math.ceil(len(x) / batch)), batch_size=batch,
              optimizer=cnnlab.optim.Adam(2e-3), seed=seed, verbose=0)
    return model


def run(seed=0, per_class=(20,), freeze_up_to=3, data=None, steps=STEPS):
    """Held-out accuracy on digits 5-9 for each count in ``per_class``:
    ``{count: (transferred, from_scratch)}``."""
    images, labels = load() if data is None else data
    base = train_base(images, labels, seed)
    rng = np.random.default_rng(seed)
    second = np.flatnonzero(labels >= 5)
    results = {}
    for count in per_class:
        few = np.concatenate([rng.choice(np.flatnonzero(labels == d), count, replace=False) for d in range(5, 10)])
        held_out = np.setdiff1d(second, few)
        x_few, y_few = images[few], labels[few] - 5
        head = base.copy().replace_head(5, seed=seed + 100)  # copy: each count starts from the same base
        transferred = fine_tune(head.freeze(up_to=freeze_up_to), x_few, y_few, seed, steps)
        scratch = fine_tune(classic_cnn(1, 8, 5, seed=seed + 200), x_few, y_few, seed, steps)
        x_test, y_test = images[held_out], labels[held_out] - 5
        results[count] = (float((transferred.predict(x_test) == y_test).mean()),
                          float((scratch.predict(x_test) == y_test).mean()))
    return results


def summary(rows):
    """Mean accuracies, mean paired difference with its standard error, and wins/ties/losses."""
    rows = np.asarray(rows, dtype=np.float64)
    difference = rows[:, 0] - rows[:, 1]
    error = difference.std(ddof=1) / math.sqrt(len(rows)) if len(rows) > 1 else float("nan")
    return {"transferred": rows[:, 0].mean(), "scratch": rows[:, 1].mean(), "difference": difference.mean(),
            "standard_error": error, "wins": int((difference > 0).sum()), "ties": int((difference == 0).sum()),
            "losses": int((difference < 0).sum())}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20, help="how many seeds (default 20)")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--per-class", default="20", help="images per class, comma-separated (default 20)")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"fine-tuning steps (default {STEPS})")
    args = parser.parse_args()
    counts = [int(part) for part in args.per_class.split(",")]
    data = load()
    table = {count: [] for count in counts}
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        for count, pair in run(seed, counts, data=data, steps=args.steps).items():
            table[count].append(pair)
            print(f"seed {seed}, {count} per class: transferred {pair[0]:.1%}, from scratch {pair[1]:.1%}",
                  flush=True)
    for count in counts:
        s = summary(table[count])
        print(f"{count} per class, {args.seeds} seeds: transferred {s['transferred']:.1%}, "
              f"from scratch {s['scratch']:.1%}, difference {100 * s['difference']:+.2f} "
              f"± {100 * s['standard_error']:.2f} points; transfer ahead on {s['wins']}, "
              f"tied on {s['ties']}, behind on {s['losses']} seeds")


if __name__ == "__main__":
    main()
