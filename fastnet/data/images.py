"""Your own images: decode an image file, and ImageFolder (torchvision's folder-per-class layout).

Images come out as the other datasets present theirs: float32 (C, H, W) scaled to [0, 1]
(8-bit pixels divided by 255, 16-bit ones by 65535), so a model trained on MNIST or CIFAR-10
takes them after the same normalisation. Grayscale files give one channel, every other mode
three (RGB; an alpha channel is dropped), unless `channels` asks for 1 or 3, in which case
Pillow converts (RGB to grayscale by ITU-R 601 luma, grayscale to RGB by repetition).

Pillow decodes (the optional extra ``image``); it is imported when
the first image is read, so the rest of fastnet works without it.

    root/cat/001.png          ImageFolder(root).classes == ["cat", "dog"]
    root/cat/nested/002.png   class_to_idx == {"cat": 0, "dog": 1}
    root/dog/003.jpg          samples == [(root/cat/001.png, 0), (root/cat/nested/002.png, 0), ...]

As in torchvision, classes are the sorted names of the folders under `root` and each class's
images are found in its folder and the folders below it, in sorted order, by file extension
(case-insensitive). Unlike torchvision, hidden folders (`.ipynb_checkpoints`, ...) are not
classes. Images are decoded when an item is read; `transform` is a batched fastnet transform
(`Normalize`, `RandomCrop`, ...), applied to each image as a batch of one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..extras import install_hint
from .dataset import Transform

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")
_16_BIT_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(f"reading image files needs Pillow: {install_hint('image')}") from None
    return Image


def decode_image(
    path: str | os.PathLike, channels: int | None = None, size: tuple[int, int] | None = None
) -> np.ndarray:
    """The image file at `path` as float32 (C, H, W) in [0, 1].

    `channels`: None keeps the file's (1 for grayscale, else 3); 1 or 3 converts. `size`:
    (height, width) to resize to (bilinear), or None to keep the file's size. Raises
    FileNotFoundError for a missing file and ValueError for one Pillow cannot decode.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    image_module = _pillow()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image at {path}")
    try:
        with image_module.open(path) as image:
            image.load()
            pixels = _pixels(image, channels, size, image_module)
    except (OSError, ValueError, SyntaxError, image_module.DecompressionBombError) as error:
        raise ValueError(f"{path}: cannot decode as an image ({error})") from None
    return pixels


def _pixels(image: Any, channels: int | None, size: tuple[int, int] | None, pil: Any) -> np.ndarray:
    wanted = channels or (1 if image.mode in _GRAYSCALE_MODES else 3)
    if image.mode in _16_BIT_MODES:  # keep all 16 bits: Pillow's "L" would clip them to 8
        image, scale = image.convert("I"), 65535.0
    else:
        image, scale = image.convert("L" if wanted == 1 else "RGB"), 255.0
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), pil.Resampling.BILINEAR)
    array = np.clip(np.asarray(image, dtype=np.float32) / np.float32(scale), 0, 1)
    if array.ndim == 2:
        return np.repeat(array[None], wanted, axis=0)
    return array.transpose(2, 0, 1).copy()


class ImageFolder:
    """Labelled images in `root/<class name>/.../<image file>` (see the module docstring).

    `dataset[i]` is `(image float32 (C, H, W) in [0, 1] after transform, class index)`.
    Attributes as in torchvision: `classes`, `class_to_idx`, `samples` (path, class index),
    `targets`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        transform: Transform | None = None,
        extensions: Sequence[str] = IMG_EXTENSIONS,
        channels: int | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"ImageFolder: no folder at {self.root}")
        if channels not in (None, 1, 3):
            raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
        self.transform = transform
        self.channels = channels
        self.extensions = tuple(extension.lower() for extension in extensions)
        self.classes = sorted(
            entry.name
            for entry in os.scandir(self.root)
            if entry.is_dir() and not entry.name.startswith(".")
        )
        if not self.classes:
            raise FileNotFoundError(
                f"ImageFolder: {self.root} holds no class folders (root/<class>/<image>)"
            )
        self.class_to_idx = {name: index for index, name in enumerate(self.classes)}
        self.samples = [
            (path, index) for index, name in enumerate(self.classes) for path in self._find(name)
        ]
        self.targets = [index for _, index in self.samples]

    def _find(self, name: str) -> list[Path]:
        found = [
            Path(folder) / file
            for folder, _, files in sorted(os.walk(self.root / name, followlinks=True))
            for file in sorted(files)
            if file.lower().endswith(self.extensions)
        ]
        if not found:
            raise FileNotFoundError(
                f"ImageFolder: class folder {self.root / name} holds no image "
                f"({', '.join(self.extensions)})"
            )
        return found

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)}")
        path, label = self.samples[index]
        image = decode_image(path, self.channels)
        if self.transform is not None:
            image = self.transform(image[None], None)[0]
        return image, label

    def __repr__(self) -> str:
        return f"ImageFolder({len(self)} images in {len(self.classes)} classes, from {self.root})"
