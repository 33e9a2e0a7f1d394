"""PyTorch's top-level functions that mirror a Tensor method: ``fastnet.matmul(a, b)`` is
``a @ b``, ``fastnet.squeeze(x, dim)`` is ``x.squeeze(dim)``, and so on for unsqueeze, flip and
clone. Each refuses a non-tensor input (a NumPy array has methods of these names with other
semantics) and otherwise calls the method, so the semantics and gradients live in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .autograd import not_a_tensor
from .tensor import Tensor

__all__ = ["clone", "flip", "matmul", "squeeze", "tensor_argument", "unsqueeze"]


def tensor_argument(op: str, value: Any) -> Tensor:
    """``value`` when it is a Tensor; a TypeError naming ``op`` otherwise (a NumPy array, a
    list)."""
    if not isinstance(value, Tensor):
        raise not_a_tensor(op, value)
    return value


def matmul(input: Tensor, other: Tensor) -> Tensor:
    """The matrix product with PyTorch's semantics (1-D operands, broadcast batch axes)."""
    return tensor_argument("matmul", input) @ tensor_argument("matmul", other)


def squeeze(input: Tensor, dim: int | Sequence[int] | None = None) -> Tensor:
    return tensor_argument("squeeze", input).squeeze(dim)


def unsqueeze(input: Tensor, dim: int) -> Tensor:
    return tensor_argument("unsqueeze", input).unsqueeze(dim)


def flip(input: Tensor, dims: int | Sequence[int]) -> Tensor:
    return tensor_argument("flip", input).flip(dims)


def clone(input: Tensor) -> Tensor:
    return tensor_argument("clone", input).clone()
