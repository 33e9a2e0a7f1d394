"""Hot paths of one checkout, for comparing two commits side by side: the measurement behind the
results log's "before and after" entries.

    git worktree add /tmp/before <commit> && ln -s ../kernels /tmp/before/fastnet/kernels
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE FASTNET_NUM_THREADS=1 \\
        python benchmarks/step_time.py /tmp/before     # then ROOT = this checkout; alternate

Imports fastnet from ROOT and prints the best (and median) of 5 rounds of: one MNIST CNN
training step at batch 64 (forward, cross-entropy, backward, Adam), ``(a + a).sum().backward()``
on 8 floats (the per-op overhead), a 256x256 matmul forward and backward, cross-entropy over
256x10 logits forward and backward, an SGD step over 1M floats with and without momentum, and
an Adam step over the MNIST CNN's parameters (its gradients from the training step).

A script, not a test: timings are for reading. The machine should be otherwise idle; alternate
the two checkouts and repeat.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path


def best_and_median(step: Callable[[], object], calls: int, rounds: int = 5) -> tuple[float, float]:
    step()
    step()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            step()
        times.append((time.perf_counter() - start) / calls)
    times.sort()
    return times[0], times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the checkout whose fastnet is timed")
    root = parser.parse_args().root.resolve()
    sys.path.insert(0, str(root))
    import numpy as np

    import fastnet as fn
    import fastnet.functional as F
    from fastnet import optim
    from fastnet.backend import get_device

    if not Path(fn.__file__).resolve().is_relative_to(root):
        raise SystemExit(f"fastnet came from {fn.__file__}, not from {root}")
    fn.set_num_threads(1)
    rng = np.random.default_rng(0)

    model = fn.models.mnist_cnn()
    adam = optim.Adam(model.parameters(), lr=1e-3)
    images = fn.tensor(rng.standard_normal((64, 1, 28, 28)).astype(np.float32))
    labels = fn.tensor(rng.integers(0, 10, 64))

    def train_step() -> None:
        loss = F.cross_entropy(model(images), labels)
        adam.zero_grad()
        loss.backward()
        adam.step()

    small = fn.tensor(rng.standard_normal(8).astype(np.float32), requires_grad=True)
    square = fn.tensor(rng.standard_normal((256, 256)).astype(np.float32), requires_grad=True)
    logits = fn.tensor(rng.standard_normal((256, 10)).astype(np.float32), requires_grad=True)
    targets = fn.tensor(rng.integers(0, 10, 256))
    cpu = get_device("cpu")
    param, grad = (rng.standard_normal(1_000_000).astype(np.float32) for _ in range(2))
    buffer = np.zeros_like(param)

    def sgd(momentum: float) -> Callable[[], None]:
        return lambda: cpu.sgd_step(
            param,
            grad,
            buffer if momentum else None,
            lr=1e-3,
            momentum=momentum,
            dampening=0.0,
            weight_decay=0.0,
            nesterov=False,
            first_step=False,
        )

    cases = [
        ("MNIST CNN training step, batch 64", train_step, 10),
        ("tiny add + sum + backward", lambda: (small + small).sum().backward(), 2000),
        ("matmul 256 forward + backward", lambda: (square @ square).sum().backward(), 50),
        (
            "cross_entropy 256x10 forward + backward",
            lambda: F.cross_entropy(logits, targets).backward(),
            500,
        ),
        ("SGD step, 1M floats, no momentum", sgd(0.0), 50),
        ("SGD step, 1M floats, momentum 0.9", sgd(0.9), 50),
        ("Adam step over the MNIST CNN's 8 parameters", adam.step, 500),
    ]
    print(f"fastnet from {root}, 1 thread")
    for name, step, calls in cases:
        best, median = best_and_median(step, calls)
        print(f"{name}: {best * 1e6:,.1f} us (median {median * 1e6:,.1f})")


if __name__ == "__main__":
    main()
