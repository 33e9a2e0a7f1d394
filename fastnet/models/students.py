"""Small student models for knowledge distillation (``fastnet distill``), both
``Classifier(features, head)`` and sized for 28×28 1-channel or 32×32 3-channel images.

* ``small_cnn``: a narrow CNN, two stages of 3×3 convolution (padding 1) + ReLU + 2×2 max-pool
  (8 then 16 channels by default), then Flatten → Linear(16·(S/4)², classes): about 9k parameters
  on MNIST-sized images, against the 420k of ``cnn``.
* ``dw_cnn``: a depthwise-separable CNN: a 3×3 stem convolution, then blocks of a depthwise 3×3
  convolution (``groups`` = channels) + BatchNorm + ReLU and a pointwise 1×1 convolution +
  BatchNorm + ReLU, a 2×2 max-pool after each block but the last; then global average pooling and
  Linear(last width, classes): about 9k parameters with the default widths (16, 32, 64, 64).

Registered names: ``small-cnn``, ``dw-cnn``.
"""

from __future__ import annotations

from .. import nn
from .base import Classifier, register

__all__ = ["small_cnn", "dw_cnn"]


def small_cnn(
    channels: int = 1, classes: int = 10, image_size: int = 28, widths: tuple = (8, 16)
) -> Classifier:
    """[3×3 conv → ReLU → 2×2 max-pool] per width, then one Linear to the classes."""
    layers: list[nn.Module] = []
    width = channels
    for size in widths:
        layers += [nn.Conv2d(width, size, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        width = size
    side = image_size // 2 ** len(widths)
    head = nn.Sequential(nn.Flatten(), nn.Linear(width * side * side, classes))
    return Classifier(nn.Sequential(*layers), head)


def _separable(in_channels: int, out_channels: int) -> list[nn.Module]:
    """Depthwise 3×3 → BN → ReLU → pointwise 1×1 → BN → ReLU."""
    return [
        nn.Conv2d(in_channels, in_channels, 3, padding=1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(),
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


def dw_cnn(
    channels: int = 1, classes: int = 10, image_size: int = 28, widths: tuple = (16, 32, 64, 64)
) -> Classifier:
    """3×3 stem to widths[0], then a depthwise-separable block to each further width (a 2×2
    max-pool after each but the last), global average pooling, Linear to the classes."""
    del image_size  # global pooling: any size of at least 2**(len(widths) - 2) pixels
    layers: list[nn.Module] = [
        nn.Conv2d(channels, widths[0], 3, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
    ]
    for index, (width, size) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers += _separable(width, size)
        if index < len(widths) - 2:
            layers.append(nn.MaxPool2d(2))
    layers.append(nn.AdaptiveAvgPool2d(1))
    head = nn.Sequential(nn.Flatten(), nn.Linear(widths[-1], classes))
    return Classifier(nn.Sequential(*layers), head)


register("small-cnn", small_cnn)
register("dw-cnn", dw_cnn)
