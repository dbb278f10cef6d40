"""How long the second thread takes to start its share, and how long the caller waits for it,
in a model's batch-1 calls.

    python bench/team_wait.py MODEL.onnx [--size 224] [--calls 40] [--rounds 3]

A kernel shared by two workers (:mod:`cnnlab.kernels.cpu._schedule`) hands the second share to
the team's thread, runs the first on the calling thread, then waits until the other is done.
The handed function is wrapped so that the team's thread notes when it starts each share it
took, and the caller's ``finish`` notes how long it waited for a share the team had taken. Per round of ``--calls`` calls: the shares the team ran and
those the caller took back, per call; the team's start after the hand (median and quartiles,
us); the caller's wait, per call in all and per share (us); the median call (ms, with the
probes in place: a few microseconds a share more than a plain call).
"""

import argparse
import statistics
import threading
import time

import numpy as np

from cnnlab.kernels.cpu import _schedule as schedule

_RECORD = {"hand": 0.0, "starts": [], "waits": [], "taken_back": 0}


def _install_probes():
    """Time each share from the hand: the handed function is wrapped so that, run on another
    thread than the caller's (the team's), it notes its start; ``finish`` notes how long the
    caller waited for a share the team had taken."""
    original_run, original_hand, original_finish = (schedule._WatchingTeam.run, schedule._Watcher.hand,
                                                    schedule._Watcher.finish)

    def run(self, function, shares):
        _RECORD["hand"] = time.perf_counter()
        return original_run(self, function, shares)

    def hand(self, function, arguments):
        caller = threading.get_ident()

        def started(*values):
            if threading.get_ident() != caller:
                _RECORD["starts"].append(time.perf_counter() - _RECORD["hand"])
            return function(*values)
        return original_hand(self, started, arguments)

    def finish(self, ticket):
        taken = not self.slot  # the team has popped the share: the caller will wait for it
        start = time.perf_counter()
        try:
            return original_finish(self, ticket)
        finally:
            if taken:
                _RECORD["waits"].append(time.perf_counter() - start)
            else:
                _RECORD["taken_back"] += 1

    schedule._WatchingTeam.run = run
    schedule._Watcher.hand = hand
    schedule._Watcher.finish = finish


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for name in ("size", "calls", "rounds"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if not hasattr(schedule._team, "members"):
        parser.error("this platform's thread team hands shares through a queue: nothing to watch")
    _install_probes()
    import cnnlab.onnx

    model = cnnlab.onnx.load(args.model)
    x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    for _ in range(5):
        model(x)
    for round_ in range(1, args.rounds + 1):
        _RECORD.update(starts=[], waits=[], taken_back=0)
        calls = []
        for _ in range(args.calls):
            start = time.perf_counter()
            model(x)
            calls.append(time.perf_counter() - start)
        starts = np.array(_RECORD["starts"]) * 1e6
        waits = np.array(_RECORD["waits"]) * 1e6
        if not len(starts):
            print(f"round {round_}: no share went to the second thread")
            continue
        print(f"round {round_}: {len(starts) / args.calls:.1f} shares a call ran on the team's thread, "
              f"{_RECORD['taken_back'] / args.calls:.1f} taken back; its start after the hand "
              f"{np.median(starts):.1f} us (quartiles {np.percentile(starts, 25):.1f}-{np.percentile(starts, 75):.1f}); "
              f"the caller waited {waits.sum() / args.calls:.0f} us a call ({np.median(waits):.1f} us a share, "
              f"median); call {statistics.median(calls) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
