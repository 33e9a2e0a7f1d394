"""DataLoader: batches of a whole-array dataset, by one fancy-indexing gather per batch.

Shuffling is reproducible: epoch `e` of a loader with seed `s` draws its permutation and its
random transforms from `numpy.random.default_rng([s, e])`, so the same seed gives the same
batches in every run, each epoch gets a new order, and a run resumed at epoch `e` (set
`loader.epoch = e`) continues exactly. A loader built with `seed=None` draws its seed from the
framework's generator (`fastnet.manual_seed`).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ._random import draw_seed
from .dataset import ArrayDataset, Transform


def batch_indices(
    count: int, batch_size: int, shuffle: bool, drop_last: bool, rng: np.random.Generator
) -> list[np.ndarray]:
    """One epoch's batches of item indices: every index of range(count) once (less the
    incomplete last batch when `drop_last`), in a random order when `shuffle`."""
    order = rng.permutation(count) if shuffle else np.arange(count)
    stop = count - count % batch_size if drop_last else count
    return [order[start : start + batch_size] for start in range(0, stop, batch_size)]


def collate(
    dataset: ArrayDataset,
    indices: np.ndarray,
    transform: Transform | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The batch at `indices`: images float32 (B, C, H, W) after the dataset's transform and then
    `transform`, labels int64 (B,)."""
    images = dataset.float_images()[indices]
    for step in (dataset.transform, transform):
        if step is not None:
            images = step(images, rng)
    return images, dataset.labels[indices]


class DataLoader:
    """Iterate `dataset` in batches of `(images, labels)` Tensors: float32 (B, C, H, W), int64 (B,).

    `dataset` is an ArrayDataset (or anything with `float_images()`, `labels`, `transform`
    and `len`). `transform` is a batched transform applied after the dataset's own.
    `numpy_batches()` gives an epoch as NumPy arrays instead of Tensors.
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        transform: Transform | None = None,
    ) -> None:
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = draw_seed() if seed is None else int(seed)
        self.transform = transform
        self.epoch = 0

    def __len__(self) -> int:
        count = len(self.dataset)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    def numpy_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The next epoch as NumPy `(images, labels)` batches; advances `epoch` when iteration
        starts (not when the iterator is made: progress bars make iterators they never use)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        batches = batch_indices(
            len(self.dataset), self.batch_size, self.shuffle, self.drop_last, rng
        )
        for indices in batches:
            yield collate(self.dataset, indices, self.transform, rng)

    def __iter__(self) -> Iterator[tuple[object, object]]:
        return _as_tensors(self.numpy_batches())


def _as_tensors(
    batches: Iterator[tuple[np.ndarray, np.ndarray]],
) -> Iterator[tuple[object, object]]:
    from fastnet.tensor import Tensor  # here, not at the top: the data layer imports without it

    for images, labels in batches:
        yield Tensor(images), Tensor(labels)
