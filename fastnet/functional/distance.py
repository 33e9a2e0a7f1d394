"""Norms and distances along one axis, composed of Tensor ops (so their gradients are those ops'):
``normalize``, ``cosine_similarity``, ``pairwise_distance``.

With ‖v‖_p = (Σ |v_i|^p)^(1/p) along ``dim`` (‖v‖_∞ = max |v_i|):

* ``normalize(x, p, dim, eps)``: x / max(‖x‖_p, eps).
* ``cosine_similarity(x1, x2, dim, eps)``: Σ (x1/max(‖x1‖₂, eps))·(x2/max(‖x2‖₂, eps)) along
  ``dim``, x1 and x2 broadcast together (PyTorch normalises each operand before the product).
* ``pairwise_distance(x1, x2, p, eps, keepdim)``: ‖x1 − x2 + eps‖_p along the last axis of the
  broadcast operands.
"""

from __future__ import annotations

import math

from ..tensor import Tensor

__all__ = ["normalize", "cosine_similarity", "pairwise_distance"]


def _vector_norm(x: Tensor, p: float, dim: int, keepdim: bool) -> Tensor:
    if p == 2:
        return (x * x).sum(dim, keepdim).sqrt()
    if math.isinf(p) and p > 0:
        return x.abs().amax(dim, keepdim)
    if p <= 0:
        raise ValueError(f"the norm's order p must be positive, got {p}")
    return (x.abs() ** p).sum(dim, keepdim) ** (1.0 / p)


def _check_dim(op: str, x: Tensor, dim: int) -> None:
    if not -max(x.ndim, 1) <= dim < max(x.ndim, 1):
        raise IndexError(
            f"{op}: Dimension out of range (expected to be in range of "
            f"[{-max(x.ndim, 1)}, {max(x.ndim, 1) - 1}], but got {dim})"
        )


def normalize(
    input: Tensor, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: None = None
) -> Tensor:
    """input / max(‖input‖_p, eps) along ``dim`` (PyTorch's F.normalize; ``out`` must be None)."""
    if out is not None:
        raise NotImplementedError("normalize: out= is not supported; use the returned tensor")
    _check_dim("normalize", input, dim)
    return input / _vector_norm(input, float(p), dim, True).clamp(min=eps)


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """The cosine of the angle between x1 and x2 along ``dim`` (broadcast together)."""
    _check_dim("cosine_similarity", x1 if x1.ndim >= x2.ndim else x2, dim)
    unit1 = x1 / _vector_norm(x1, 2.0, dim, True).clamp(min=eps)
    unit2 = x2 / _vector_norm(x2, 2.0, dim, True).clamp(min=eps)
    return (unit1 * unit2).sum(dim)


def pairwise_distance(
    x1: Tensor, x2: Tensor, p: float = 2.0, eps: float = 1e-6, keepdim: bool = False
) -> Tensor:
    """‖x1 − x2 + eps‖_p along the last axis (PyTorch's F.pairwise_distance)."""
    difference = x1 - x2 + eps
    if difference.ndim == 0:
        difference = difference.reshape(1)
    return _vector_norm(difference, float(p), -1, keepdim)
