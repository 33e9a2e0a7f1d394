"""Ready models. Each has a ``features`` trunk and a ``head`` classifier, so fine-tuning can
address them by name (``features.*``, ``head.*``), and a registry entry so checkpoints can
rebuild them from their saved config (:func:`create`)."""
from __future__ import annotations

from typing import Any, Callable

from .. import nn
from ..tensor import Tensor


class Classifier(nn.Module):
    """features → head."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def mlp(in_features: int = 784, hidden: tuple = (512, 256), classes: int = 10, dropout: float = 0.0) -> Classifier:
    """Flatten → [Linear → ReLU (→ Dropout)] per hidden width → Linear: 784-512-256-10 by default."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
        width = size
    return Classifier(nn.Sequential(*layers), nn.Linear(width, classes))


def mnist_cnn(channels: int = 1, classes: int = 10, image_size: int = 28) -> Classifier:
    """Two 3×3 conv + ReLU + 2×2 max-pool stages (32, 64 channels), then 128 hidden units."""
    features = nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    )
    side = image_size // 4
    head = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(), nn.Linear(128, classes))
    return Classifier(features, head)


_REGISTRY: dict[str, Callable[..., nn.Module]] = {"mlp": mlp, "cnn": mnist_cnn}


def register(name: str, builder: Callable[..., nn.Module]) -> None:
    _REGISTRY[name] = builder


def names() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, **config: Any) -> nn.Module:
    """Build a registered model by name with keyword configuration (as saved in checkpoints)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(names())}")
    return _REGISTRY[name](**config)


# the model families in their own modules register themselves on import
from . import resnet, vit  # noqa: E402,F401
from .resnet import cifar_cnn, cifar_resnet, resnet18_cifar  # noqa: E402
from .vit import ViT  # noqa: E402

__all__ = ["Classifier", "mlp", "mnist_cnn", "cifar_cnn", "cifar_resnet", "resnet18_cifar", "ViT", "create",
           "register", "names"]
