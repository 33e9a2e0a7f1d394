"""DataLoader: batches of a dataset, optionally prepared one step ahead in a background thread.

Two kinds of dataset are accepted:

* fastnet's whole-array datasets (`ArrayDataset`, MNIST, CIFAR10, ...: anything with
  `float_images()`, `labels` and `transform`): a batch is one fancy-indexing gather, then the
  batched transforms;
* any map-style dataset, PyTorch's protocol: `len(dataset)` and `dataset[i]` returning an item
  such as `(image, label)` (NumPy arrays, numbers, fastnet or torch tensors). The items of a batch
  are stacked field by field (`collate_items`); the loader's `transform` then applies to the
  first field, the images.

Shuffling is reproducible: epoch `e` of a loader with seed `s` draws its permutation and its
random transforms from `numpy.random.default_rng([s, e])`, so the same seed gives the same
batches in every run, each epoch gets a new order, and a run resumed at epoch `e` (set
`loader.epoch = e`) continues exactly. A loader built with `seed=None` draws its seed from the
framework's generator (`fastnet.manual_seed`). With `prefetch=n`, one background thread prepares
up to `n` batches ahead, in the same order and with the same random draws; an exception it
meets is raised in the loop that iterates, and the thread is stopped when that loop ends or
leaves early.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

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


def epoch_plan(loader: Any, epoch: int) -> tuple[list[np.ndarray], np.random.Generator]:
    """Epoch ``epoch`` of a loader (``DataLoader`` or ``DeviceDataLoader``): its batches of item
    indices, and the generator of its random transforms (drawn batch by batch after that).

    Without a sampler both come from ``default_rng([seed, epoch])``, the permutation first. With
    one, the indices are the sampler's for the epoch (``set_epoch`` first), and the transforms
    draw from ``default_rng([seed, epoch, rank])`` (the sampler's rank), so that ranks crop and
    flip their shards independently."""
    sampler = loader.sampler
    if sampler is None:
        rng = np.random.default_rng([loader.seed, epoch])
        count = len(loader.dataset)
        return batch_indices(count, loader.batch_size, loader.shuffle, loader.drop_last, rng), rng
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    order = np.fromiter(iter(sampler), dtype=np.int64)
    rng = np.random.default_rng([loader.seed, epoch, getattr(sampler, "rank", 0)])
    size = loader.batch_size
    stop = len(order) - len(order) % size if loader.drop_last else len(order)
    return [order[start : start + size] for start in range(0, stop, size)], rng


def check_sampler(sampler: Any, shuffle: bool) -> Any:
    """``sampler`` if a loader can take it (None, or iterable with a length); as PyTorch, a
    sampler and ``shuffle=True`` exclude each other."""
    if sampler is None:
        return None
    if shuffle:
        raise ValueError(
            "sampler and shuffle=True exclude each other: the sampler orders the items"
        )
    if not (hasattr(sampler, "__iter__") and hasattr(sampler, "__len__")):
        raise TypeError(
            f"sampler must be iterable with a length (e.g. DistributedSampler), got "
            f"{type(sampler).__name__}"
        )
    return sampler


def loader_length(loader: Any) -> int:
    """Batches per epoch of a loader (its dataset or sampler, batch_size and drop_last)."""
    count = len(loader.dataset) if loader.sampler is None else len(loader.sampler)
    return count // loader.batch_size if loader.drop_last else -(-count // loader.batch_size)


def collate(
    dataset: ArrayDataset,
    indices: np.ndarray,
    transform: Transform | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """The batch at `indices` of a whole-array dataset: images float32 (B, C, H, W) after the
    dataset's transform and then `transform`, labels int64 (B,)."""
    images = dataset.float_images()[indices]
    for step in (dataset.transform, transform):
        if step is not None:
            images = step(images, rng)
    return images, dataset.labels[indices]


def _as_array(value: Any) -> np.ndarray:
    """A field of one item as an array: tensors (fastnet or torch) through their `.numpy()`,
    Python floats as float32 (fastnet's default dtype), ints as int64."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "numpy"):  # fastnet.Tensor, torch.Tensor
        return np.asarray(value.numpy())
    if isinstance(value, bool):
        return np.asarray(value)
    if isinstance(value, int):
        return np.asarray(value, dtype=np.int64)
    if isinstance(value, float):
        return np.asarray(value, dtype=np.float32)
    return np.asarray(value)


def collate_items(items: Sequence[Any]) -> tuple[np.ndarray, ...]:
    """Stack the items of a map-style dataset into a batch, field by field: `[(image, label),
    ...]` → `(images (B, ...), labels (B,))`; an item that is a single array gives `(arrays,)`.

    Raises TypeError or ValueError naming the first item that does not fit the others.
    """
    first = items[0]
    fields = len(first) if isinstance(first, (tuple, list)) else None
    columns: list[list[np.ndarray]] = [[] for _ in range(fields or 1)]
    for position, item in enumerate(items):
        parts = item if fields is not None else (item,)
        if fields is not None and (not isinstance(item, (tuple, list)) or len(item) != fields):
            raise TypeError(
                f"dataset items must all have the form of the first ({fields} fields); "
                f"item {position} of the batch is {type(item).__name__}"
            )
        for column, part in zip(columns, parts, strict=True):
            column.append(_as_array(part))
    batch = []
    for field, column in enumerate(columns):
        shapes = {array.shape for array in column}
        if len(shapes) > 1:
            raise ValueError(
                f"cannot stack field {field} of a batch: its items have shapes {sorted(shapes)} "
                f"(resize the images to one size, e.g. with a transform)"
            )
        batch.append(np.stack(column))
    return tuple(batch)


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)):
        raise TypeError(f"batch_size must be a positive int, got {batch_size!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def _check_dataset(dataset: Any) -> bool:
    """Whether `dataset` is a whole-array dataset (the fast path); TypeError if it is neither
    that nor map-style."""
    if callable(getattr(dataset, "float_images", None)) and hasattr(dataset, "labels"):
        return True
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise TypeError(
            f"DataLoader needs a map-style dataset (with __len__ and __getitem__), "
            f"got {type(dataset).__name__}"
        )
    return False


class DataLoader:
    """Iterate `dataset` in batches: `(images, labels)` Tensors, float32 (B, C, H, W) and int64
    (B,), for fastnet's datasets; one Tensor per field of the items for any map-style dataset.

    `transform` is a batched transform applied after the dataset's own (to the first field of a
    map-style dataset's batches). `prefetch` is how many batches a background thread prepares
    ahead (0: none, every batch is made in the iterating thread; `True` means 1).
    `numpy_batches()` gives an epoch as NumPy arrays instead of Tensors. `sampler` (e.g.
    `DistributedSampler`) chooses the items of each epoch instead of `shuffle`.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        transform: Transform | None = None,
        prefetch: int = 0,
        sampler: Any = None,
    ) -> None:
        self.batch_size = _check_batch_size(batch_size)
        self.sampler = check_sampler(sampler, shuffle)
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed}")
        if not isinstance(prefetch, (int, np.integer)):
            raise TypeError(f"prefetch must be a non-negative int (or a bool), got {prefetch!r}")
        if prefetch < 0:
            raise ValueError(f"prefetch must be a non-negative int (or a bool), got {prefetch!r}")
        self._whole_arrays = _check_dataset(dataset)
        self.dataset = dataset
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = draw_seed() if seed is None else int(seed)
        self.transform = transform
        self.prefetch = int(prefetch)
        self.epoch = 0

    def __len__(self) -> int:
        return loader_length(self)

    def numpy_batches(self) -> Iterator[tuple[np.ndarray, ...]]:
        """The next epoch as NumPy batches; advances `epoch` when iteration starts (not when the
        iterator is made: progress bars make iterators they never use)."""
        indices, rng = epoch_plan(self, self.epoch)
        self.epoch += 1
        batches = self._batches(indices, rng)
        if self.prefetch:
            yield from _prefetched(batches, self.prefetch)
        else:
            yield from batches

    def _batches(
        self, indices: list[np.ndarray], rng: np.random.Generator
    ) -> Iterator[tuple[np.ndarray, ...]]:
        for batch in indices:
            if self._whole_arrays:
                yield collate(self.dataset, batch, self.transform, rng)
                continue
            fields = collate_items([self.dataset[int(index)] for index in batch])
            if self.transform is not None:
                fields = (self.transform(fields[0], rng), *fields[1:])
            yield fields

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        from fastnet.tensor import Tensor  # here: the data layer imports without the tensor

        for batch in self.numpy_batches():
            yield tuple(Tensor(field) for field in batch)


class _Failed:
    """What the worker thread sends when making a batch raised."""

    def __init__(self, error: Exception) -> None:
        self.error = error


_END = object()


def _prefetched(batches: Iterator[Any], depth: int) -> Iterator[Any]:
    """`batches`, made by a background thread at most `depth` ahead of the consumer."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def work() -> None:
        try:
            for batch in batches:
                ready.put(batch)
                if stop.is_set():
                    return
            ready.put(_END)
        except Exception as error:  # noqa: BLE001 (handed to the consumer, which raises it)
            ready.put(_Failed(error))

    worker = threading.Thread(target=work, name="fastnet-prefetch", daemon=True)
    worker.start()
    try:
        while (batch := ready.get()) is not _END:
            if isinstance(batch, _Failed):
                raise batch.error
            yield batch
    finally:
        # Stop the worker: once the queue is drained it has room for the one batch the worker
        # may be making, after which it sees `stop` and returns.
        stop.set()
        while worker.is_alive():
            try:
                ready.get(timeout=0.01)
            except queue.Empty:
                pass
        worker.join()
