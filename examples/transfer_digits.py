"""Transfer learning on scikit-learn's digits.

A CNN learns digits 0-4 from every training image; its convolutional base is then reused for
digits 5-9 with only 20 images per class. The same network trained from scratch on those 100
images is the baseline. Both are scored on the held-out images of 5-9.

    python examples/transfer_digits.py [--seeds 5]
"""

import argparse

import numpy as np
from sklearn.datasets import load_digits

import cnnlab
from cnnlab.cli import classic_cnn
from cnnlab.data import Augmenter, train_test_split


def split_digits(seed):
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(images, digits.target, test_size=0.25, seed=0)
    first = y_train < 5
    rng = np.random.default_rng(seed)
    few = np.concatenate([rng.choice(np.flatnonzero(y_train == d), 20, replace=False) for d in range(5, 10)])
    second_test = y_test >= 5
    return ((x_train[first], y_train[first]), (x_train[few], y_train[few] - 5),
            (x_test[second_test], y_test[second_test] - 5))


def run(seed=0, epochs=30, freeze_up_to=3):
    """Held-out accuracy on digits 5-9: ``(transferred, from_scratch)``."""
    (x_first, y_first), (x_few, y_few), (x_test, y_test) = split_digits(seed)
    base = classic_cnn(1, 8, 5, seed=seed)
    base.fit(x_first, y_first, epochs=20, batch_size=32, optimizer=cnnlab.optim.Adam(2e-3), seed=seed, verbose=0,
             augment=Augmenter(shift=0.1, flip=False, rotation=10, zoom=0.1, brightness=0.05, contrast=0.1))

    transferred = base.replace_head(5, seed=seed + 100).freeze(up_to=freeze_up_to)
    transferred.fit(x_few, y_few, epochs=epochs, batch_size=20, optimizer=cnnlab.optim.Adam(2e-3), seed=seed,
                    verbose=0)
    scratch = classic_cnn(1, 8, 5, seed=seed + 200)
    scratch.fit(x_few, y_few, epochs=epochs, batch_size=20, optimizer=cnnlab.optim.Adam(2e-3), seed=seed,
                verbose=0)
    return (float((transferred.predict(x_test) == y_test).mean()),
            float((scratch.predict(x_test) == y_test).mean()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    results = np.array([run(seed) for seed in range(args.seeds)])
    for seed, (transferred, scratch) in enumerate(results):
        print(f"seed {seed}: transferred {transferred:.1%}, from scratch {scratch:.1%}")
    print(f"mean over {args.seeds} seeds: transferred {results[:, 0].mean():.1%}, "
          f"from scratch {results[:, 1].mean():.1%}")
