"""Lookups in a weight table: ``embedding``.

y[..., :] = weight[indices[...], :] for weight (num_embeddings, dim) and integer indices of any
shape, a gather (y has shape indices.shape + (dim,)); its backward scatter-adds each row of dy
into the row of dweight its index picked (repeated indices add).
"""

from __future__ import annotations

from typing import Any

from ..tensor import Tensor

__all__ = ["embedding"]


def embedding(indices: Any, weight: Tensor) -> Tensor:
    """Rows of ``weight`` (num_embeddings, dim) picked by integer ``indices`` of any shape: the
    output has shape indices.shape + (dim,). The gradient of a row picked several times is the
    sum of the picks' gradients."""
    if weight.ndim != 2:
        raise ValueError(
            f"embedding: weight must be (num_embeddings, dim), got shape {weight.shape}"
        )
    if isinstance(indices, Tensor):
        if indices.device is not weight.device:
            raise RuntimeError(
                f"embedding: indices are on {indices.device} but weight on {weight.device}"
            )
        indices = indices.data
    indices = weight.device.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got {indices.dtype}")
    if indices.size:
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= weight.shape[0]:
            bad = low if low < 0 else high
            raise ValueError(
                f"embedding: index {bad} is out of range for {weight.shape[0]} "
                f"embeddings (weight of shape {weight.shape})"
            )
    return weight[indices]  # the gather; its backward scatter-adds (see Tensor.__getitem__)
