"""What every ready model shares: the ``Classifier`` shape and the registry of builders.

* ``Classifier(features, head)``: y = head(features(x)), so fine-tuning can address a model's
  parts by name (``features.*``, ``head.*``).
* The registry maps a name to a builder (a callable taking keyword configuration and returning
  a Module): :func:`register` adds one, :func:`names` lists them, :func:`create` builds one, as
  checkpoints do from their saved config. The model modules register their builders on import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import nn
from ..tensor import Tensor

__all__ = ["Classifier", "register", "names", "create"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class Classifier(nn.Module):
    """features → head."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def register(name: str, builder: Callable[..., nn.Module]) -> None:
    """Make ``builder`` available to :func:`create` as ``name``."""
    _REGISTRY[name] = builder


def names() -> list[str]:
    return sorted(_REGISTRY)


def create(name: str, **config: Any) -> nn.Module:
    """Build a registered model by name with keyword configuration (as saved in checkpoints)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(names())}")
    return _REGISTRY[name](**config)
