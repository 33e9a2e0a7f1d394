"""Batched image transforms: each maps a whole batch (B, C, H, W) to a batch, with no loop per
image.

A transform is called as `transform(batch, rng)`. Random transforms draw every choice for the
batch from `rng` (a `numpy.random.Generator`) at once, so a seeded generator reproduces them;
with `rng=None` they draw from the framework's generator (seeded by `fastnet.manual_seed`).
The DataLoader passes its per-epoch generator.

Normalisation constants are the per-channel mean and standard deviation of the training pixels
scaled to [0, 1] (MNIST and Fashion-MNIST computed from the official files; CIFAR-10 the
widely published values for its training set).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._random import default_generator
from .dataset import Transform

MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def _check_batch(batch: np.ndarray, who: str) -> None:
    if not isinstance(batch, np.ndarray) or batch.ndim != 4:
        raise ValueError(
            f"{who} expects a batch array (B, C, H, W), got {getattr(batch, 'shape', type(batch))}"
        )


class Normalize:
    """(batch - mean[c]) / std[c] for every channel c."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        self.std = np.asarray(std, dtype=np.float32).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise ValueError(
                f"Normalize: {len(self.mean)} means but {len(self.std)} standard deviations"
            )
        if not np.all(self.std > 0):
            raise ValueError(
                f"Normalize: standard deviations must be positive, got {self.std.tolist()}"
            )

    def __call__(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        _check_batch(batch, "Normalize")
        if not np.issubdtype(batch.dtype, np.floating):
            raise TypeError(f"Normalize expects a floating batch, got {batch.dtype}")
        if batch.shape[1] != len(self.mean):
            raise ValueError(
                f"Normalize has {len(self.mean)} channels, "
                f"the batch {batch.shape} has {batch.shape[1]}"
            )
        shape = (1, -1, 1, 1)
        return ((batch - self.mean.reshape(shape)) / self.std.reshape(shape)).astype(
            batch.dtype, copy=False
        )

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.tolist()}, std={self.std.tolist()})"


class RandomCrop:
    """Zero-pad each side by `padding`, then cut a `size` window at an offset drawn per image."""

    def __init__(self, size: int | tuple[int, int], padding: int = 0) -> None:
        self.size = (size, size) if isinstance(size, int) else tuple(size)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(
                f"RandomCrop: size must be a positive int or (height, width), got {size}"
            )
        if padding < 0:
            raise ValueError(f"RandomCrop: padding must be >= 0, got {padding}")
        self.padding = padding

    def __call__(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        _check_batch(batch, "RandomCrop")
        rng = rng if rng is not None else default_generator()
        pad = self.padding
        height, width = self.size
        padded = np.pad(batch, ((0, 0), (0, 0), (pad, pad), (pad, pad))) if pad else batch
        if padded.shape[2] < height or padded.shape[3] < width:
            raise ValueError(
                f"RandomCrop: a {self.size} crop does not fit a batch {batch.shape} padded by {pad}"
            )
        windows = sliding_window_view(
            padded, (height, width), axis=(2, 3)
        )  # (B, C, rows, cols, h, w)
        top, left = self.draw(len(batch), windows.shape[2:4], rng)
        return windows[np.arange(len(batch)), :, top, left]

    def draw(
        self, count: int, offsets: tuple[int, int], rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """The (top, left) corners of `count` crops, each in range(offsets[axis]): the draws
        every loader makes (the device loader too), so one seed gives one set of crops."""
        return rng.integers(0, offsets[0], size=count), rng.integers(0, offsets[1], size=count)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror each image left-right with probability `p`."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        _check_batch(batch, "RandomHorizontalFlip")
        rng = rng if rng is not None else default_generator()
        flip = self.draw(len(batch), rng)
        return np.where(flip[:, None, None, None], batch[..., ::-1], batch)

    def draw(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """Which of `count` images are mirrored (the draw every loader makes)."""
        return rng.random(count) < self.p

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class Compose:
    """Apply `transforms` in order, all drawing from the same generator."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, batch: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        for transform in self.transforms:
            batch = transform(batch, rng)
        return batch

    def __repr__(self) -> str:
        return f"Compose({self.transforms!r})"
