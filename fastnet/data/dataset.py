"""Labelled image sets held as whole arrays, and the helpers that carve them up.

A dataset here is two arrays, `images` (N, C, H, W) uint8 (or floating, used as is) and
`labels` (N,) int64, plus an optional batched transform. Keeping whole arrays lets the
DataLoader build a batch with one fancy-indexing gather instead of a Python loop per item.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ._random import draw_seed

Transform = Callable[[np.ndarray, "np.random.Generator | None"], np.ndarray]


class ArrayDataset:
    """`images` (N, C, H, W) and `labels` (N,), with `transform` applied to batches (B, C, H, W).

    `dataset[i]` is `(image, label)`: the image float32 (C, H, W) scaled to [0, 1] (uint8
    images are divided by 255) after `transform`, the label an int.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        transform: Transform | None = None,
        classes: Sequence[str] = (),
    ) -> None:
        images, labels = np.asarray(images), np.asarray(labels)
        if images.ndim != 4 or not (
            images.dtype == np.uint8 or np.issubdtype(images.dtype, np.floating)
        ):
            raise ValueError(
                f"images must be uint8 or floating (N, C, H, W), got {images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers (N,), got {labels.dtype} {labels.shape}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels.astype(np.int64, copy=False)
        self.transform = transform
        self.classes = tuple(classes)
        self._float_images: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)}")
        index %= len(self)
        image = _to_float(self.images[index : index + 1])
        if self.transform is not None:
            image = self.transform(image, None)
        return image[0], int(self.labels[index])

    def float_images(self) -> np.ndarray:
        """All images as float32 (N, C, H, W) in [0, 1], converted once and kept."""
        if self._float_images is None:
            self._float_images = _to_float(self.images)
        return self._float_images

    def take(self, indices: np.ndarray) -> ArrayDataset:
        """A new dataset of the items at `indices` (copied), with the same transform and classes."""
        indices = np.asarray(indices, dtype=np.int64)
        return ArrayDataset(
            self.images[indices], self.labels[indices], self.transform, self.classes
        )


class PublishedDataset(ArrayDataset):
    """A published dataset read from its official files; subclasses say how in `_read`.

    `root` and `download` steer the lookup (see `fastnet.data._fetch`); `train` picks the
    split; `directory` is the folder the files were read from. The class attributes
    `class_names` and `image_shape` (C, H, W) describe the dataset without reading it.
    """

    class_names: tuple[str, ...] = ()
    image_shape: tuple[int, int, int] = (0, 0, 0)  # (C, H, W) of every image

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        transform: Transform | None = None,
        download: bool = True,
    ) -> None:
        images, labels, self.directory = self._read(root, train, download)
        super().__init__(images, labels, transform, self.class_names)
        self.train = train

    def _read(
        self, root: str | os.PathLike | None, train: bool, download: bool
    ) -> tuple[np.ndarray, np.ndarray, Path]:
        raise NotImplementedError

    def __repr__(self) -> str:
        split = "train" if self.train else "test"
        return f"{type(self).__name__}({split}, {len(self)} items, from {self.directory})"


def _to_float(images: np.ndarray) -> np.ndarray:
    converted = images.astype(np.float32)
    if images.dtype == np.uint8:
        converted /= np.float32(255)
    return converted


def _generator(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(draw_seed() if seed is None else seed)


def subset(dataset: ArrayDataset, labels_per_class: int, seed: int | None = None) -> ArrayDataset:
    """`labels_per_class` items of every class, drawn at random without replacement, in dataset
    order.

    For fine-tuning from few labels (e.g. 100 per class). Raises ValueError when a class has
    fewer items than asked for.
    """
    if labels_per_class < 1:
        raise ValueError(f"labels_per_class must be >= 1, got {labels_per_class}")
    rng = _generator(seed)
    chosen = []
    for label in np.unique(dataset.labels):
        members = np.flatnonzero(dataset.labels == label)
        if len(members) < labels_per_class:
            raise ValueError(
                f"class {label} has {len(members)} items, "
                f"fewer than labels_per_class={labels_per_class}"
            )
        chosen.append(rng.choice(members, labels_per_class, replace=False))
    return dataset.take(np.sort(np.concatenate(chosen)))


def random_split(
    dataset: ArrayDataset, lengths: Sequence[int | float], seed: int | None = None
) -> list[ArrayDataset]:
    """Split into disjoint random parts of the given sizes (counts summing to len(dataset),
    or fractions summing to 1: remainders go one each to the first parts)."""
    counts = _split_counts(lengths, len(dataset))
    order = _generator(seed).permutation(len(dataset))
    parts = np.split(order, np.cumsum(counts)[:-1])
    return [dataset.take(np.sort(part)) for part in parts]


def _split_counts(lengths: Sequence[int | float], total: int) -> list[int]:
    if all(isinstance(n, (int, np.integer)) for n in lengths):
        counts = [int(n) for n in lengths]
    elif all(0 <= n <= 1 for n in lengths) and abs(sum(lengths) - 1) < 1e-6:
        counts = [int(np.floor(f * total)) for f in lengths]
        for i in range(total - sum(counts)):
            counts[i % len(counts)] += 1
    else:
        raise ValueError(f"lengths must be counts or fractions summing to 1, got {list(lengths)}")
    if any(n < 0 for n in counts) or sum(counts) != total:
        raise ValueError(
            f"split lengths {list(lengths)} do not add up to the dataset's {total} items"
        )
    return counts
