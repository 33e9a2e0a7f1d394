"""Regularisation: ``dropout`` and the channel-wise ``dropout1d``, ``dropout2d``, ``dropout3d``.

While training, y = x·keep/(1 − p) with keep ~ Bernoulli(1 − p), drawn from ``fastnet.random``;
dx = dy·keep/(1 − p) (the mask is a constant of the product). In eval, or with p = 0, y = x;
p = 1 zeroes everything (PyTorch's rule). ``dropout`` draws one keep per element; the channel-wise
forms one per (sample, channel), broadcast over the spatial axes: (N, C, *spatial) or, unbatched,
(C, *spatial). ``inplace=True`` has the meaning it has in
:mod:`~fastnet.functional.activations`.
"""

from __future__ import annotations

from .. import random as fn_random
from ..tensor import Tensor
from .activations import _in_place

__all__ = ["dropout", "dropout1d", "dropout2d", "dropout3d"]


def _dropout(
    op: str, x: Tensor, p: float, training: bool, inplace: bool, mask_shape: tuple
) -> Tensor:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{op}: dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return x
    if p == 1.0:
        y = x * 0.0
    else:
        keep = fn_random.uniform(mask_shape, x.device) >= p
        scale = (keep * (1.0 / (1.0 - p))).astype(x.dtype)
        y = x * Tensor._wrap(scale, x.device)
    return _in_place(op, x, y) if inplace else y


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    """Zero each element with probability p and scale the rest by 1/(1-p) (identity in eval)."""
    return _dropout("dropout", input, p, training, inplace, input.shape)


def _channel_dropout(
    op: str, x: Tensor, p: float, training: bool, inplace: bool, spatial: int
) -> Tensor:
    if x.ndim not in (spatial + 1, spatial + 2):
        raise RuntimeError(
            f"{op}: expected an input of {spatial + 1} or {spatial + 2} dimensions "
            f"((C, *spatial) or (N, C, *spatial)), got shape {x.shape}"
        )
    channels = x.ndim - spatial
    return _dropout(op, x, p, training, inplace, x.shape[:channels] + (1,) * spatial)


def dropout1d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
) -> Tensor:
    """Zero whole channels of (N, C, L) or (C, L) with probability p."""
    return _channel_dropout("dropout1d", input, p, training, inplace, 1)


def dropout2d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
) -> Tensor:
    """Zero whole channels of (N, C, H, W) or (C, H, W) with probability p."""
    return _channel_dropout("dropout2d", input, p, training, inplace, 2)


def dropout3d(
    input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False
) -> Tensor:
    """Zero whole channels of (N, C, D, H, W) or (C, D, H, W) with probability p."""
    return _channel_dropout("dropout3d", input, p, training, inplace, 3)
