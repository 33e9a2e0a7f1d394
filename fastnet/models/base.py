"""What every ready model shares: the ``Classifier`` shape and the registry of builders.

* ``Classifier(features, head)``: y = head(features(x)), so fine-tuning can address a model's
  parts by name (``features.*``, ``head.*``).
* :func:`chain_layers`: the leaf layers of a model made of Sequentials and Classifiers, in call
  order, for the workflows that rewrite a model layer by layer (pruning, quantization), and
  :func:`copy_model`, the copy they rewrite.
* The registry maps a name to a builder (a callable taking keyword configuration and returning
  a Module): :func:`register` adds one, :func:`names` lists them, :func:`create` builds one, as
  checkpoints do from their saved config. The model modules register their builders on import.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, NamedTuple

from .. import nn
from ..tensor import Tensor

__all__ = ["Classifier", "ChainLayer", "chain_layers", "copy_model", "register", "names", "create"]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


class Classifier(nn.Module):
    """features → head."""

    def __init__(self, features: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class ChainLayer(NamedTuple):
    name: str  # qualified, as in named_modules()
    parent: nn.Module
    key: str  # the child's name in parent
    module: nn.Module


def chain_layers(model: nn.Module, purpose: str) -> list[ChainLayer]:
    """The leaf layers of a model made of Sequentials and Classifiers, in call order (running them
    one after the other is the model's forward); ``purpose`` names the caller in the error."""
    if not isinstance(model, (nn.Sequential, Classifier)):
        raise ValueError(
            f"{purpose} needs a Sequential or Classifier model, got {type(model).__name__}"
        )
    found: list[ChainLayer] = []

    def walk(container: nn.Module, prefix: str) -> None:
        for key, child in container.named_children():
            name = f"{prefix}{key}"
            if isinstance(child, (nn.Sequential, Classifier)):
                walk(child, f"{name}.")
            else:
                found.append(ChainLayer(name, container, key, child))

    walk(model, "")
    return found


def copy_model(model: nn.Module) -> nn.Module:
    """A deep copy sharing only the Device objects (tensors on different Device instances refuse to
    mix), without hooks (a pruner's hooks belong to the original) or gradients."""
    tensors = list(model.parameters()) + [buffer for _, buffer in model.named_buffers()]
    memo: dict[int, Any] = {id(t.device): t.device for t in tensors}
    for tensor in tensors:
        hooks = getattr(tensor, "_post_accumulate_grad_hooks", None)
        if hooks is not None:
            memo[id(hooks)] = {}
        if tensor.grad is not None:
            memo[id(tensor.grad)] = None
    return copy.deepcopy(model, memo)


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
