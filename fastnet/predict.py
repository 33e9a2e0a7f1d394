"""Classify your own image files with a trained checkpoint: ``fastnet predict CHECKPOINT IMAGE...``.

The checkpoint's config rebuilds the model (:func:`fastnet.evaluate.load_model`) and names the
dataset it was trained on, which fixes the input the model expects (channels, height, width;
from the model's own config where it records them) and the class names. Each image is decoded
by Pillow to float32 (C, H, W) in [0, 1], as the datasets present theirs
(:func:`fastnet.data.decode_image`), converted to the model's number of channels (RGB to
grayscale by luma, grayscale to RGB by repetition), normalised as training evaluated
(:func:`fastnet.train.eval_transform`), and run through the model in eval mode; the softmax of
its output gives the top-k classes.

Sizes are not changed silently: an image whose height and width differ from the model's input is
refused with an error naming both sizes, unless ``resize=True`` asks for a bilinear resize (as a
torchvision user would add ``transforms.Resize``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .data import DATASET_CLASSES, decode_image
from .evaluate import load_model
from .tensor import Tensor, no_grad
from .train import eval_transform

__all__ = ["predict", "input_shape", "class_names"]

_BATCH = 256  # images per forward pass: bounds memory for long lists


def input_shape(config: dict) -> tuple[int, int, int]:
    """(channels, height, width) a checkpoint's model takes, from its config."""
    kwargs = config.get("kwargs", {})
    dataset = DATASET_CLASSES.get(config.get("dataset"))
    if "channels" in kwargs and "image_size" in kwargs:
        return int(kwargs["channels"]), int(kwargs["image_size"]), int(kwargs["image_size"])
    if dataset is not None:
        return dataset.image_shape
    raise ValueError(
        f"the checkpoint's config does not say what images its model takes "
        f"(no channels/image_size, and dataset {config.get('dataset')!r} is not one of "
        f"{', '.join(DATASET_CLASSES)})"
    )


def class_names(config: dict, count: int) -> list[str]:
    """The names of the `count` classes of a checkpoint's dataset, else their indices as text."""
    dataset = DATASET_CLASSES.get(config.get("dataset"))
    names = list(dataset.class_names) if dataset is not None else []
    return names if len(names) == count else [str(index) for index in range(count)]


def predict(
    checkpoint: str | os.PathLike,
    images: Sequence[str | os.PathLike],
    top_k: int = 5,
    device: Any = "cpu",
    *,
    resize: bool = False,
) -> list[tuple[str, list[tuple[str, float]]]]:
    """The `top_k` most probable classes of each image: `[(path, [(class name, probability),
    ...]), ...]` in the order given, each list most probable first (`top_k` larger than the
    number of classes gives them all).

    Raises FileNotFoundError for a missing checkpoint or image, ValueError for an image Pillow
    cannot decode, one whose size differs from the model's input (unless `resize`), or a
    `top_k` below 1. Every image is decoded before the model runs.
    """
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}")
    if isinstance(images, (str, os.PathLike)) or not images:
        raise ValueError("predict needs a list of image paths, got " + repr(images))
    model, saved = load_model(checkpoint, device)
    config = saved["config"]
    channels, height, width = input_shape(config)
    batch = np.stack(
        [
            _decoded(path, channels, (height, width) if resize else None, (height, width))
            for path in images
        ]
    )
    normalize = eval_transform(config) if "dataset" in config else None
    if normalize is not None:
        batch = normalize(batch)
    probabilities = _softmax(_logits(model, batch, device))
    names = class_names(config, probabilities.shape[1])
    k = min(top_k, probabilities.shape[1])
    results = []
    for path, row in zip(images, probabilities, strict=True):
        best = np.argsort(-row, kind="stable")[:k]
        results.append((os.fspath(path), [(names[i], float(row[i])) for i in best]))
    return results


def _decoded(
    path: str | os.PathLike,
    channels: int,
    size: tuple[int, int] | None,
    expected: tuple[int, int],
) -> np.ndarray:
    image = decode_image(path, channels, size)
    if image.shape[1:] != expected:
        raise ValueError(
            f"{path}: the image is {image.shape[2]}x{image.shape[1]} pixels but the model takes "
            f"{expected[1]}x{expected[0]}; resize it, or pass resize=True (--resize)"
        )
    return image


def _logits(model: Any, batch: np.ndarray, device: Any) -> np.ndarray:
    model.eval()
    outputs = []
    with no_grad():
        for start in range(0, len(batch), _BATCH):
            outputs.append(model(Tensor(batch[start : start + _BATCH], device=device)).numpy())
    return np.concatenate(outputs).astype(np.float64)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
