"""DistributedSampler: each rank's share of a dataset's items, the same shuffle on every rank.

    sampler = DistributedSampler(train_set, seed=0)           # ranks from fastnet.distributed
    loader = DataLoader(train_set, batch_size=32, sampler=sampler)

Epoch ``e`` orders the ``n`` items with ``numpy.random.default_rng([seed, e]).permutation(n)``
(as ``DataLoader(shuffle=True, seed=seed)`` does, so one rank sees what a single process sees),
the same on every rank. The order is made a multiple of the ``R`` ranks, by repeating its first
items (``drop_last=False``) or by dropping its tail (``drop_last=True``), and rank ``r`` takes
the items at positions ``r, r + R, r + 2R, ...``: shards are disjoint but for the repeats, and
of equal length, so every rank makes the same number of steps. Batch ``b`` of the ranks' loaders
(batch size B each) then holds together exactly the items of batch ``b`` of one process with
batch size R·B.

``pad=False`` (for evaluation, where every item must count once): no repeats, no drops; the
first ``n mod R`` ranks get one item more.

The loader calls ``set_epoch`` when an epoch starts, so a resumed run (``loader.epoch = e``)
continues with the same shards; a loop without a fastnet loader calls it itself, as in PyTorch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["DistributedSampler"]


def _check_count(value: Any, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")
    return int(value)


class DistributedSampler:
    """The indices of this rank's shard of ``dataset`` for the current epoch (see the module
    docstring). ``num_replicas`` and ``rank`` default to the process group's."""

    def __init__(
        self,
        dataset: Any,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        pad: bool = True,
    ) -> None:
        from fastnet import distributed  # here: the data layer imports without the rest

        group = distributed.get_communicator()
        self.num_replicas = _check_count(
            group.size if num_replicas is None else num_replicas, "num_replicas", 1
        )
        self.rank = _check_count(group.rank if rank is None else rank, "rank", 0)
        if self.rank >= self.num_replicas:
            raise ValueError(
                f"rank {self.rank} is not below num_replicas {self.num_replicas} "
                f"(ranks are 0 .. {self.num_replicas - 1})"
            )
        self.seed = _check_count(seed, "seed", 0)
        if not pad and drop_last:
            raise ValueError("drop_last=True and pad=False: choose one way to treat the tail")
        self.dataset, self.shuffle, self.drop_last, self.pad = dataset, shuffle, drop_last, pad
        self.epoch = 0

    @property
    def total_size(self) -> int:
        """Items over all ranks in one epoch, repeats included."""
        count, ranks = len(self.dataset), self.num_replicas
        if not self.pad:
            return count
        return count - count % ranks if self.drop_last else -(-count // ranks) * ranks

    def __len__(self) -> int:
        """Items of this rank in one epoch."""
        share = self.total_size
        return share // self.num_replicas + (self.rank < share % self.num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = _check_count(epoch, "epoch", 0)

    def indices(self) -> np.ndarray:
        """This rank's indices (int64) for the current epoch."""
        count = len(self.dataset)
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(count)
        else:
            order = np.arange(count)
        total = self.total_size
        if total > count:  # repeat the order from its start until it divides evenly
            order = np.resize(order, total)
        return order[self.rank : total : self.num_replicas].astype(np.int64, copy=False)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())
