"""The demo's training speed with the kernels cached: the demo network on the digits, epochs
of batch 32 (Adam), the best and the median epoch's samples/s (the first epoch, which loads or
compiles the kernels, left out), then the time to predict the 450 held-out images.

    python bench/demo_speed.py [epochs]
"""

import sys
import time

import cnnlab
from cnnlab.applications import classic_cnn
from cnnlab.data import load_demo_data, train_test_split


def main(epochs=12):
    images, labels, _ = load_demo_data("digits")
    x_train, x_test, y_train, _ = train_test_split(images, labels, test_size=0.25, seed=0)
    model, optimizer = classic_cnn(1, 8, 10, seed=0), cnnlab.optim.Adam(2e-3)
    times = []
    for epoch in range(epochs):
        start = time.perf_counter()
        model.fit(x_train, y_train, epochs=1, batch_size=32, optimizer=optimizer, verbose=0, seed=epoch)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(5):
        model.predict(x_test)
    predict = (time.perf_counter() - start) / 5
    times = sorted(times[1:])
    print(f"best epoch {len(x_train) / times[0]:.0f} samples/s, median {len(x_train) / times[len(times) // 2]:.0f}; "
          f"predict 450: {predict * 1e3:.1f} ms")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
