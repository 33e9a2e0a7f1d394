"""Small models for 28×28 MNIST-like images, both ``Classifier(features, head)``.

* ``mlp``: Flatten, then [Linear → ReLU (→ Dropout)] per hidden width, then Linear to the
  classes: 784-512-256-10 by default.
* ``mnist_cnn``: two stages of a 3×3 convolution (padding 1) + ReLU + 2×2 max-pool (32 then 64
  channels), so an S×S image leaves 64 maps of (S/4)×(S/4); then Flatten →
  Linear(64·(S/4)², 128) → ReLU → Linear(128, classes).

Registered names: ``mlp``, ``cnn``.
"""

from __future__ import annotations

from .. import nn
from .base import Classifier, register

__all__ = ["mlp", "mnist_cnn"]


def mlp(
    in_features: int = 784, hidden: tuple = (512, 256), classes: int = 10, dropout: float = 0.0
) -> Classifier:
    """Flatten → [Linear → ReLU (→ Dropout)] per hidden width → Linear: 784-512-256-10 by
    default."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        width = size
    return Classifier(nn.Sequential(*layers), nn.Linear(width, classes))


def mnist_cnn(
    channels: int = 1,
    classes: int = 10,
    image_size: int = 28,
    widths: tuple[int, int] = (32, 64),
    hidden: int = 128,
) -> Classifier:
    """Two 3×3 conv + ReLU + 2×2 max-pool stages (``widths``: 32, 64 channels), then ``hidden``
    (128) units; other widths describe a channel-pruned CNN (``fastnet compress``)."""
    first, second = widths
    features = nn.Sequential(
        nn.Conv2d(channels, first, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(first, second, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    side = image_size // 4
    head = nn.Sequential(
        nn.Flatten(), nn.Linear(second * side * side, hidden), nn.ReLU(), nn.Linear(hidden, classes)
    )
    return Classifier(features, head)


register("mlp", mlp)
register("cnn", mnist_cnn)
