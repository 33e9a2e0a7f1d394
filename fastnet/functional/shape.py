"""Shape ops: ``flatten``, a view of axes start_dim … end_dim as one (the Tensor's own
reshape, so its gradient is the reshape back)."""

from __future__ import annotations

from ..autograd import not_a_tensor
from ..tensor import Tensor

__all__ = ["flatten"]


def flatten(x: Tensor, start_dim: int = 1, end_dim: int = -1) -> Tensor:
    if not isinstance(x, Tensor):  # a NumPy array has a flatten of its own, with other arguments
        raise not_a_tensor("flatten", x)
    return x.flatten(start_dim, end_dim)
