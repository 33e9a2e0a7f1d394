"""Shape ops: ``flatten``, a view of axes start_dim … end_dim as one (the Tensor's own
reshape, so its gradient is the reshape back)."""

from __future__ import annotations

from ..tensor import Tensor

__all__ = ["flatten"]


def flatten(x: Tensor, start_dim: int = 1, end_dim: int = -1) -> Tensor:
    return x.flatten(start_dim, end_dim)
