"""Training timed: seconds per epoch of the textbook CNN (the demo's network on the digits, and
a CIFAR-sized one) in cnnlab and in PyTorch, on the same batches."""

import numpy as np

from .. import optim
from ..applications import classic_cnn
from ..data import load_demo_data, train_test_split
from .measuring import import_torch, measure, pause

TRAIN_NETWORKS = {
    # name: (input shape, classes, conv filters, hidden units, samples per epoch, batch size)
    "demo-digits": ((1, 8, 8), 10, (32, 64), 128, None, 32),
    "cifar-sized": ((3, 32, 32), 10, (32, 64), 128, 1024, 64),
}


def _training_data(name):
    shape, classes, _, _, samples, _ = TRAIN_NETWORKS[name]
    if name == "demo-digits":
        images, labels, _ = load_demo_data("digits")
        x, _, y, _ = train_test_split(images, labels, test_size=0.25, seed=0)
        return x, y
    rng = np.random.default_rng(0)
    return rng.random((samples,) + shape, dtype=np.float32), rng.integers(0, classes, samples)


def _torch_network(torch, name):
    (channels, size, _), classes, (first, second), hidden, _, _ = TRAIN_NETWORKS[name]
    nn = torch.nn
    flat = second * (size // 4) * (size // 4)
    return nn.Sequential(
        nn.Conv2d(channels, first, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(first, second, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, classes))


def train_suite(repeat, threads, compare, device="cpu", progress=None):
    """Seconds per training epoch (Adam, cross-entropy) of the demo network and of a
    CIFAR-sized network, against the same network and batches in PyTorch."""
    torch = import_torch(threads) if "torch" in compare else None
    rows = []
    for index, name in enumerate(TRAIN_NETWORKS):
        if progress:
            progress(index, len(TRAIN_NETWORKS), name)
        (channels, size, _), classes, filters, hidden, _, batch = TRAIN_NETWORKS[name]
        x, y = _training_data(name)
        model = classic_cnn(channels, size, classes, filters, hidden, seed=0).to(device)
        optimizer = optim.Adam(1e-3)

        def epoch():
            model.fit(x, y, epochs=1, batch_size=batch, optimizer=optimizer, seed=0, verbose=0)

        first, median, spread = measure(epoch, repeat)
        row = dict(op="train", shape=name, dtype="float32", device=device, seconds=median, spread=spread,
                   jit_seconds=max(0.0, first - median), samples_per_second=len(x) / median, peers={})
        if torch is not None:
            pause()
            network = _torch_network(torch, name)
            torch_optimizer = torch.optim.Adam(network.parameters(), 1e-3)
            loss_function = torch.nn.CrossEntropyLoss()
            tx, ty = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.asarray(y, dtype=np.int64))
            order = np.random.default_rng(0).permutation(len(x))

            def torch_epoch():
                for start in range(0, len(x), batch):
                    chosen = torch.from_numpy(order[start:start + batch])
                    torch_optimizer.zero_grad()
                    loss = loss_function(network(tx[chosen]), ty[chosen])
                    loss.backward()
                    torch_optimizer.step()

            row["peers"]["torch"] = measure(torch_epoch, repeat)[1]
            pause()
        rows.append(row)
    return rows
