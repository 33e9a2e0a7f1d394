"""What one MNIST CNN training step costs the OS, and the CNN layer by layer against PyTorch.

First fastnet training steps of ``fastnet.models.mnist_cnn`` (Adam, random data) with the system
time and minor page faults per step (``getrusage``): where a large buffer is faulted in again
every step, it shows here. Then each layer at its real input shape: the best of 5 rounds of
forward + backward (seeded with ones), fastnet then PyTorch, same threads.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/cnn_layers.py
        [--batch 256] [--threads 1]

Needs PyTorch (the ``bench`` extra: ``bash scripts/setup.sh bench``). Timings are for reading,
not for asserting.
"""

from __future__ import annotations

import argparse
import functools
import resource
import time

import numpy as np

import fastnet
from fastnet import models, nn
from fastnet.bench import optional_torch, pinned_threads
from fastnet.functional import cross_entropy
from fastnet.tensor import Tensor


def best_ms(step, rounds: int = 5, calls: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            step()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e3


def _fastnet_step(layer: nn.Module, x: Tensor) -> None:
    y = layer(x)
    y.backward(Tensor(np.ones(y.shape, np.float32)))


def _torch_step(layer, x) -> None:
    y = layer(x)
    y.backward(y.new_ones(y.shape))


def layer_race(torch, batch: int, rng: np.random.Generator) -> None:
    layers = [  # (name, fastnet layer, PyTorch layer, input shape, input needs a gradient)
        (
            "conv1",
            nn.Conv2d(1, 32, 3, padding=1),
            torch.nn.Conv2d(1, 32, 3, padding=1),
            (1, 28, 28),
            False,
        ),
        ("relu1", nn.ReLU(), torch.nn.ReLU(), (32, 28, 28), True),
        ("pool1", nn.MaxPool2d(2), torch.nn.MaxPool2d(2), (32, 28, 28), True),
        (
            "conv2",
            nn.Conv2d(32, 64, 3, padding=1),
            torch.nn.Conv2d(32, 64, 3, padding=1),
            (32, 14, 14),
            True,
        ),
        ("relu2", nn.ReLU(), torch.nn.ReLU(), (64, 14, 14), True),
        ("pool2", nn.MaxPool2d(2), torch.nn.MaxPool2d(2), (64, 14, 14), True),
        ("fc1", nn.Linear(3136, 128), torch.nn.Linear(3136, 128), (3136,), True),
    ]
    print(f"layer  | fastnet ms | torch ms | torch/fastnet   (batch {batch}, forward + backward)")
    totals = [0.0, 0.0]
    for name, ours, theirs, shape, needs_grad in layers:
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        fastnet_step = functools.partial(_fastnet_step, ours, Tensor(x, requires_grad=needs_grad))
        torch_step = functools.partial(
            _torch_step, theirs, torch.from_numpy(x).requires_grad_(needs_grad)
        )
        fastnet_step(), torch_step()
        ours_ms, theirs_ms = best_ms(fastnet_step), best_ms(torch_step)
        totals[0] += ours_ms
        totals[1] += theirs_ms
        print(f"{name:6} | {ours_ms:10.2f} | {theirs_ms:8.2f} | {theirs_ms / ours_ms:.2f}x")
    print(f"{'total':6} | {totals[0]:10.2f} | {totals[1]:8.2f} | {totals[1] / totals[0]:.2f}x")


def step_costs(batch: int, rng: np.random.Generator, steps: int = 20) -> None:
    fastnet.manual_seed(0)
    model = models.mnist_cnn()
    x = Tensor(rng.standard_normal((batch, 1, 28, 28), dtype=np.float32))
    labels = Tensor(rng.integers(0, 10, batch))
    optimizer = fastnet.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = cross_entropy(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for _ in range(5):  # warm-up: compiles, and lets every cache reach its steady state
        step()
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for _ in range(steps):
        step()
    wall, after = (time.perf_counter() - start) / steps, resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"training step, batch {batch}: {wall * 1e3:.1f} ms wall, "
        f"{(after.ru_stime - before.ru_stime) / steps * 1e3:.1f} ms system time, "
        f"{(after.ru_minflt - before.ru_minflt) / steps:.0f} minor page faults"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch = optional_torch()
    rng = np.random.default_rng(0)
    with pinned_threads(args.threads):
        # First, in a fresh process: how often glibc faults memory in depends on what the process
        # allocated before (its mmap threshold grows with the largest block freed).
        step_costs(args.batch, rng)
        if torch is None:
            print("PyTorch is not installed: no layer race (bash scripts/setup.sh bench)")
        else:
            layer_race(torch, args.batch, rng)


if __name__ == "__main__":
    main()
