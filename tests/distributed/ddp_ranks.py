"""Programs for ``mpiexec -n 2``: DistributedDataParallel training steps whose results the tests
in test_ddp_ranks.py hold against one process (``python ddp_ranks.py SCENARIO OUT``).

* ``steps OUT``: 5 steps of SGD with momentum and 5 of Adam on a small CNN, every rank with 32
  items per step from its DistributedSampler shard; each rank writes its parameters to
  ``OUT/<optimizer>-rank<r>.npz``.
* ``devices OUT``: 2 Adam steps of a tiny MLP (the simulator runs CUDA kernels slowly) with
  batches of 4 a rank, on the cpu and on the cuda device (batches from the DeviceDataLoader):
  ``OUT/<device>-rank<r>.npz``.
* ``accumulate OUT``: one step's gradients made of two ``no_sync`` half-batches of 16 and a
  synchronising backward of nothing more: ``OUT/grads-rank<r>.npz``.
* ``fail OUT``: rank 1 raises during its third step while rank 0 goes on training.
* ``mismatch OUT``: rank 1 builds a wider model than rank 0.
* ``buffers OUT``: a model with BatchNorm whose running statistics differ by rank, wrapped, then
  after one training forward: ``OUT/buffers-rank<r>.npz`` (the buffers at both moments).

The model, data and sampler seed come from ``case()``, which the tests share.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import fastnet as fn
from fastnet import distributed, nn
from fastnet.data import ArrayDataset, DataLoader, DeviceDataLoader, DistributedSampler

ITEMS, CLASSES, SAMPLER_SEED, STEPS = 200, 5, 3, 5


def case(model_seed: int = 0) -> tuple[nn.Module, ArrayDataset]:
    """A small CNN (no BatchNorm: batch statistics are per rank) and a random dataset."""
    fn.manual_seed(model_seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 16),
        nn.Tanh(),
        nn.Linear(16, CLASSES),
    )
    rng = np.random.default_rng(1)
    images = rng.standard_normal((ITEMS, 1, 7, 7)).astype(np.float32)
    labels = rng.integers(0, CLASSES, ITEMS)
    return model, ArrayDataset(images, labels)


def optimizer_for(name: str, params: object) -> fn.optim.Optimizer:
    if name == "sgd":
        return fn.optim.SGD(params, lr=0.1, momentum=0.9)
    return fn.optim.Adam(params, lr=0.01)


def train_steps(model: nn.Module, loader: object, optimizer: fn.optim.Optimizer) -> None:
    for step, (x, y) in enumerate(loader):
        if step == STEPS:
            break
        optimizer.zero_grad()
        fn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def save(module: nn.Module, path: Path, grads: bool = False) -> None:
    values = {
        name: (param.grad if grads else param).numpy() for name, param in module.named_parameters()
    }
    np.savez(path, **values)


def main() -> None:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    group = distributed.init_process_group("mpi")
    rank = group.rank
    # each rank starts from different weights: the wrapper must broadcast rank 0's
    model, data = case(model_seed=rank)
    ddp = nn.DistributedDataParallel(model, bucket_cap_mb=0.001)  # several buckets
    sampler = DistributedSampler(data, seed=SAMPLER_SEED)
    if scenario == "steps":
        for name in ("sgd", "adam"):
            model, _ = case(model_seed=rank)
            ddp = nn.DistributedDataParallel(model, bucket_cap_mb=0.001)
            loader = DataLoader(data, batch_size=32, sampler=sampler)
            train_steps(ddp, loader, optimizer_for(name, ddp.parameters()))
            save(model, out / f"{name}-rank{rank}.npz")
    elif scenario == "devices":
        tiny = ArrayDataset(data.images[:16, :, :2, :3].copy(), data.labels[:16] % 3)
        sampler = DistributedSampler(tiny, seed=SAMPLER_SEED)
        for device in ("cpu", "cuda"):
            fn.manual_seed(rank)
            mlp = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
            ddp = nn.DistributedDataParallel(mlp.to(device))
            loader = DeviceDataLoader(tiny, batch_size=4, sampler=sampler, device=device)
            optimizer = optimizer_for("adam", ddp.parameters())
            for _, (x, y) in zip(range(2), loader, strict=False):
                optimizer.zero_grad()
                fn.functional.cross_entropy(ddp(x), y).backward()
                optimizer.step()
            save(mlp, out / f"{device}-rank{rank}.npz")
    elif scenario == "accumulate":
        x, y = next(iter(DataLoader(data, batch_size=32, sampler=sampler)))
        with ddp.no_sync():
            fn.functional.cross_entropy(ddp(x[:16]), y[:16]).backward()
        fn.functional.cross_entropy(ddp(x[16:]), y[16:]).backward()
        save(model, out / f"grads-rank{rank}.npz", grads=True)
    elif scenario == "buffers":
        fn.manual_seed(rank)
        norm = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(75, 2))
        rng = np.random.default_rng(rank + 20)
        for _, buffer in norm.named_buffers():
            buffer.data[...] = (
                rng.integers(1, 9, buffer.shape) if buffer.ndim == 0 else rng.random(buffer.shape)
            )
        ddp = nn.DistributedDataParallel(norm)
        start = {f"start.{n}": b.numpy().copy() for n, b in norm.named_buffers()}
        x = fn.tensor(rng.standard_normal((4, 1, 7, 7)).astype(np.float32))
        ddp(x)
        after = {f"after.{n}": b.numpy().copy() for n, b in norm.named_buffers()}
        np.savez(out / f"buffers-rank{rank}.npz", **start, **after)
    elif scenario == "mismatch":
        wider = nn.Sequential(nn.Flatten(), nn.Linear(49, 8 + rank))
        nn.DistributedDataParallel(wider)
    elif scenario == "fail":
        optimizer = optimizer_for("sgd", ddp.parameters())
        for step in range(10_000):  # rank 0 would wait in the all-reduce forever
            for x, y in DataLoader(data, batch_size=32, sampler=sampler):
                if rank == 1 and step == 2:
                    raise RuntimeError("rank 1 fails on purpose in step 3")
                optimizer.zero_grad()
                fn.functional.cross_entropy(ddp(x), y).backward()
                optimizer.step()
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main()
