"""DeviceDataLoader: the dataset kept on the device, every batch gathered, cropped, flipped and
normalised there by one kernel, with no copy between host and device per step.

    loader = DeviceDataLoader(train_set, batch_size=128, shuffle=True, seed=0,
                              transform=Compose([RandomCrop(32, padding=4),
                                                 RandomHorizontalFlip(),
                                                 Normalize(CIFAR10_MEAN, CIFAR10_STD)]),
                              device="cuda")
    for images, labels in loader:   # cuda Tensors: float32 (128, 3, 32, 32), int64 (128,)
        ...

It takes what `DataLoader` takes (a whole-array dataset, the same transform objects, the same
seed) and yields the same batches, to the bit: the same items in the same order with the same
crops and flips, scaled and normalised with the same float32 arithmetic. Only where they are
made differs, so a run can switch loaders without changing its results.

* Once, at construction: the dataset's images are uploaded as they are stored (uint8 stays
  uint8: MNIST is 47 MB on the device, CIFAR-10 154 MB; floating images as float32, as
  `DataLoader` uses them), its labels as int64, and the normalisation's mean and std. The labels
  are checked on the host then (0 <= label, and < the number of classes when the dataset names
  them), and every labels Tensor yielded records their range as `tensor._value_range` (Python
  ints), so the loss need not check them on the device.
* Once per epoch: the order, crop offsets and flips of the whole epoch are drawn on the host from
  `numpy.random.default_rng([seed, epoch])`, in `DataLoader`'s sequence of draws (the
  permutation, then batch by batch the draws of each random transform in turn), and uploaded as
  one array. `draws(epoch)` returns them (`EpochDraws`), so epoch e depends only on (seed, e)
  and a resumed run sets `loader.epoch = e`, as with `DataLoader`.
* Each batch: one launch of the `augment_batch` kernel (`fastnet.kernels.augment`) on views of
  the epoch's draws, and a gather of the labels on the device.

The transforms it runs are those of `train_transform`: `RandomCrop(size, padding)` (zero padding
before normalisation), `RandomHorizontalFlip(p)` and `Normalize(mean, std)`, each at most once,
inside `Compose`s or alone, as the dataset's own `transform` (applied first, as `DataLoader`
does) and the loader's. The flip must follow the crop, and a padded crop must come before the
normalisation (padding a normalised image pads with 0 after normalising, not before). Anything
else raises a TypeError or ValueError at construction that names it; `DataLoader` runs any
transform on the host.

On the CPU device nothing is uploaded and the same kernel's CPU variant builds the batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from ._random import draw_seed
from .dataset import ArrayDataset, Transform
from .loader import _check_batch_size, check_sampler, epoch_plan, loader_length
from .transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip

SUPPORTED_TRANSFORMS = (RandomCrop, RandomHorizontalFlip, Normalize)


@dataclasses.dataclass(frozen=True)
class EpochDraws:
    """One epoch's random choices on the host, one entry per item in the order they are served
    (batch after batch): the dataset `order` (M,) int64, the crop's corner in the padded image
    `top` and `left` (M,) int64, and `flip` (M,) bool."""

    order: np.ndarray
    top: np.ndarray
    left: np.ndarray
    flip: np.ndarray


@dataclasses.dataclass(frozen=True)
class DeviceAugmentation:
    """A transform pipeline in the kernel's terms: the output size, the crop padding, the
    per-channel mean and std (0 and 1 without `Normalize`), and the random steps in order."""

    image_hw: tuple[int, int]
    out_hw: tuple[int, int]
    padding: int
    mean: np.ndarray
    std: np.ndarray
    random_steps: tuple[RandomCrop | RandomHorizontalFlip, ...]

    def draw(self, count: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(top, left, flip) for a batch of `count`, drawn from `rng` with the calls the host
        transforms make, in the pipeline's order, so the generator ends in the same state."""
        top = left = np.zeros(count, np.int64)
        flip = np.zeros(count, bool)
        for step in self.random_steps:
            if isinstance(step, RandomCrop):
                offsets = tuple(
                    self.image_hw[axis] + 2 * self.padding - self.out_hw[axis] + 1
                    for axis in (0, 1)
                )
                top, left = step.draw(count, offsets, rng)
            else:
                flip = step.draw(count, rng)
        return top, left, flip


def _steps(transform: Any) -> list[Any]:
    """The transforms of a pipeline in order, `Compose`s flattened."""
    if transform is None:
        return []
    if isinstance(transform, Compose):
        return [step for inner in transform.transforms for step in _steps(inner)]
    return [transform]


def device_augmentation(
    transforms: Sequence[Transform | None], image_shape: Sequence[int]
) -> DeviceAugmentation:
    """What `transforms` (applied in order, each None, a `Compose` or one transform) do to
    images of `image_shape` (C, H, W), in the terms of the device kernel; TypeError or
    ValueError naming what it cannot run (see the module docstring)."""
    channels, height, width = image_shape
    found: dict[type, Any] = {}
    for step in (step for transform in transforms for step in _steps(transform)):
        kind = next((kind for kind in SUPPORTED_TRANSFORMS if isinstance(step, kind)), None)
        if kind is None:
            raise TypeError(
                f"DeviceDataLoader cannot run {step!r} on the device: it runs RandomCrop, "
                "RandomHorizontalFlip and Normalize (DataLoader runs any transform on the host)"
            )
        if kind in found:
            raise ValueError(
                f"DeviceDataLoader runs each transform once, got {kind.__name__} twice"
            )
        if kind is RandomCrop and RandomHorizontalFlip in found:
            raise ValueError("DeviceDataLoader runs RandomHorizontalFlip after RandomCrop only")
        if kind is RandomCrop and Normalize in found and step.padding:
            raise ValueError(
                "DeviceDataLoader pads before normalising: put Normalize after a padded RandomCrop"
            )
        found[kind] = step
    crop, normalize = found.get(RandomCrop), found.get(Normalize)
    out_hw, padding = (crop.size, crop.padding) if crop is not None else ((height, width), 0)
    if height + 2 * padding < out_hw[0] or width + 2 * padding < out_hw[1]:
        raise ValueError(
            f"RandomCrop: a {out_hw} crop does not fit {height}x{width} images padded by {padding}"
        )
    if normalize is not None and len(normalize.mean) != channels:
        raise ValueError(f"Normalize has {len(normalize.mean)} channels, the images {channels}")
    return DeviceAugmentation(
        image_hw=(height, width),
        out_hw=tuple(out_hw),
        padding=padding,
        mean=normalize.mean if normalize is not None else np.zeros(channels, np.float32),
        std=normalize.std if normalize is not None else np.ones(channels, np.float32),
        random_steps=tuple(
            found[kind] for kind in (RandomCrop, RandomHorizontalFlip) if kind in found
        ),
    )


def _label_range(dataset: ArrayDataset) -> tuple[int, int] | None:
    """(min, max) of the labels as Python ints (None for no labels), after checking them against
    the dataset's classes."""
    labels = dataset.labels
    if not len(labels):
        return None
    low, high = int(labels.min()), int(labels.max())
    classes = len(getattr(dataset, "classes", ()))
    if low < 0 or (classes and high >= classes):
        bound = f"[0, {classes - 1}]" if classes else "non-negative"
        raise ValueError(
            f"DeviceDataLoader: labels must be {bound} class indices, got labels in [{low}, {high}]"
        )
    return low, high


class DeviceDataLoader:
    """Iterate a whole-array dataset in batches built on `device`: `(images, labels)` Tensors,
    float32 (B, C, H, W) and int64 (B,), equal to `DataLoader`'s with the same arguments (see the
    module docstring). `epoch` is the next epoch to iterate (settable, for resuming);
    `draws(epoch)` gives an epoch's random choices."""

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int = 64,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int | None = None,
        transform: Transform | None = None,
        device: Any = "cuda",
        sampler: Any = None,
    ) -> None:
        from fastnet.backend import get_device  # here: the data layer imports without a backend

        self.batch_size = _check_batch_size(batch_size)
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed}")
        if not (callable(getattr(dataset, "float_images", None)) and hasattr(dataset, "images")):
            raise TypeError(
                f"DeviceDataLoader needs a whole-array dataset (ArrayDataset, MNIST, CIFAR10, "
                f"...), got {type(dataset).__name__}; DataLoader takes any map-style dataset"
            )
        self.sampler = check_sampler(sampler, shuffle)
        self.dataset = dataset
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.seed = draw_seed() if seed is None else int(seed)
        self.transform = transform
        self.device = get_device(device)
        self.epoch = 0
        self.augmentation = device_augmentation(
            (dataset.transform, transform), dataset.images.shape[1:]
        )
        self.label_range = _label_range(dataset)
        # as DataLoader reads them: uint8 as stored (the kernel scales), floating as float32
        images = dataset.images if dataset.images.dtype == np.uint8 else dataset.float_images()
        self._images = self.device.upload(images)
        self._labels = self.device.upload(dataset.labels, dtype=np.int64)
        mean_std = self.device.upload(np.stack([self.augmentation.mean, self.augmentation.std]))
        self._mean, self._std = mean_std[0], mean_std[1]

    def __len__(self) -> int:
        return loader_length(self)

    def draws(self, epoch: int | None = None) -> EpochDraws:
        """The random choices of `epoch` (default: the next one, `self.epoch`), on the host."""
        batches, rng = epoch_plan(self, self.epoch if epoch is None else epoch)
        if not batches:
            nothing = np.empty(0, np.int64)
            return EpochDraws(nothing, nothing, nothing, np.empty(0, bool))
        parts = [self.augmentation.draw(len(batch), rng) for batch in batches]
        top, left, flip = (np.concatenate(column) for column in zip(*parts, strict=True))
        return EpochDraws(np.concatenate(batches), top, left, flip)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        """The next epoch; advances `epoch` when iteration starts, as `DataLoader` does."""
        from fastnet.tensor import Tensor  # here: the data layer imports without the tensor

        draws = self.draws()
        self.epoch += 1
        # one upload for the whole epoch: rows order, top, left, flip (non-zero mirrors)
        on_device = self.device.upload(
            np.stack([draws.order, draws.top, draws.left, draws.flip.astype(np.int64)])
        )
        augmentation, xp = self.augmentation, self.device.xp
        for start in range(0, len(draws.order), self.batch_size):
            index, top, left, flip = on_device[:, start : start + self.batch_size]
            images = self.device.augment_batch(
                self._images,
                index,
                top,
                left,
                flip,
                self._mean,
                self._std,
                augmentation.out_hw,
                augmentation.padding,
            )
            labels = Tensor._wrap(xp.take(self._labels, index), self.device)
            labels._value_range = self.label_range
            yield Tensor._wrap(images, self.device), labels
