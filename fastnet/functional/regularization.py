"""Regularisation: ``dropout``.

While training, y = x·keep/(1 − p) with keep ~ Bernoulli(1 − p) per element, drawn from
``fastnet.random``; dx = dy·keep/(1 − p) (the mask is a constant of the product). In eval, or
with p = 0, y = x.
"""

from __future__ import annotations

from .. import random as fn_random
from ..tensor import Tensor

__all__ = ["dropout"]


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity in eval)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    keep = fn_random.uniform(x.shape, x.device) >= p
    scale = (keep * (1.0 / (1.0 - p))).astype(x.dtype)
    return x * Tensor._wrap(scale, x.device)
