"""Programs for ``mpiexec -n 2``: self-supervised pretraining across ranks
(``python pretrain_ranks.py SCENARIO OUT``), checked by test_pretrain_ranks.py.

* ``gather OUT``: each rank's half of fixed random projections, all_gather-ed, NT-Xent of the
  global batch and its backward: ``OUT/gather-rank<r>.npz`` (loss, the rank's gradient).
* ``pretrain OUT METHOD``: ``fastnet.pretrain.pretrain`` of the MNIST CNN by METHOD for one
  epoch on 96 random images, global batch 32: ``OUT/<method>-rank<r>.npz`` (each rank's encoder)
  and the run folder ``OUT/<method>`` (rank 0's files).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import fastnet as fn
from fastnet import distributed, pretrain
from fastnet.data import ArrayDataset

BATCH, DIM, TEMPERATURE = 6, 5, 0.5


def projections() -> np.ndarray:
    """The global batch's (2·BATCH, DIM) projections: rows i and i + BATCH are image i's views."""
    return np.random.default_rng(11).standard_normal((2 * BATCH, DIM))


def images(count: int) -> ArrayDataset:
    rng = np.random.default_rng(12)
    pixels = rng.integers(0, 256, (count, 1, 28, 28), dtype=np.uint8)
    return ArrayDataset(pixels, rng.integers(0, 10, count))


def main() -> None:
    scenario, out = sys.argv[1], Path(sys.argv[2])
    group = distributed.init_process_group("mpi")
    rank, share = group.rank, BATCH // group.size
    if scenario == "gather":
        views = projections().reshape(2, BATCH, DIM)[:, rank * share : (rank + 1) * share]
        z = fn.tensor(views.reshape(2 * share, DIM), dtype=fn.float64, requires_grad=True)
        rows = fn.functional.all_gather(z).reshape(group.size, 2, share, DIM)
        both = fn.cat([rows[:, 0].flatten(0, 1), rows[:, 1].flatten(0, 1)], dim=0)
        loss = fn.functional.nt_xent_loss(both, TEMPERATURE)
        loss.backward()
        np.savez(out / f"gather-rank{rank}.npz", loss=loss.numpy(), grad=z.grad.numpy())
    elif scenario == "pretrain":
        method = sys.argv[3]
        result = pretrain.pretrain(
            method,
            "cnn",
            images(96),
            images(40),
            dataset="mnist",
            epochs=1,
            batch_size=32,
            out=out / method,
            progress=False,
            monitor_size=20,
            probe_epochs=1,
            sync_batchnorm=True,
        )
        state = result["encoder"].state_dict()
        np.savez(out / f"{method}-rank{rank}.npz", **state)
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")


if __name__ == "__main__":
    main()
