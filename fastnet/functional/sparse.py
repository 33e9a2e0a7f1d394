"""Lookups in a weight table (``embedding``) and class indices as vectors (``one_hot``).

* ``embedding``: y[..., :] = weight[indices[...], :] for weight (num_embeddings, dim) and integer
  indices of any shape, a gather (y has shape indices.shape + (dim,)); its backward
  scatter-adds each row of dy into the row of dweight its index picked (repeated indices add).
  PyTorch's options: ``padding_idx`` (negative counts from the end) gets no gradient;
  ``scale_grad_by_freq`` divides each row's gradient by how often its index occurs in the
  batch; ``max_norm`` first rescales, in place and outside the graph, every looked-up row whose
  ``norm_type``-norm exceeds it to norm max_norm (PyTorch's ``embedding_renorm_``:
  w ← w·max_norm/(‖w‖ + 1e-7)). ``sparse=True`` is accepted and gives the same dense gradient.
* ``one_hot(tensor, num_classes)``: int64 (..., num_classes), 1 at each index; not
  differentiable. ``num_classes=-1`` takes max + 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..selection_ops import scatter_add
from ..tensor import Function, Tensor

__all__ = ["embedding", "one_hot"]


class IndexOutOfRangeError(IndexError, ValueError):
    """An index past the table: PyTorch raises IndexError, fastnet raised ValueError; both catch
    it."""


class Embedding(Function):
    saves_inputs = saves_output = False  # backward reads the indices alone

    def forward(self, weight, indices, padding_idx, scale_grad_by_freq):
        self.weight_shape, self.indices = weight.shape, indices.reshape(-1)
        self.padding_idx, self.scale_grad_by_freq = padding_idx, scale_grad_by_freq
        return weight[indices]

    def backward(self, grad):
        xp, indices = self.device.xp, self.indices
        rows = grad.reshape(-1, self.weight_shape[1])
        if self.scale_grad_by_freq:
            counts = xp.bincount(indices, minlength=self.weight_shape[0])
            rows = rows / counts[indices].astype(rows.dtype)[:, None]
        if self.padding_idx is not None:
            rows = rows * (indices != self.padding_idx).astype(rows.dtype)[:, None]
        return (scatter_add(xp.zeros(self.weight_shape, grad.dtype), (indices,), rows),)


def _index_tensor(op: str, indices: Any, reference: Tensor) -> Tensor:
    """``indices`` as an integer tensor on ``reference``'s device (host data uploaded as a Tensor
    records its range, so checking it reads nothing back from a GPU)."""
    if isinstance(indices, Tensor):
        if indices.device is not reference.device:
            raise RuntimeError(
                f"{op}: indices are on {indices.device} but weight on {reference.device}"
            )
    else:
        indices = Tensor(indices, device=reference.device)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"{op}: indices must be integers, got {indices.dtype}")
    return indices


def _renorm_rows(weight: Tensor, indices: Any, max_norm: float, norm_type: float) -> None:
    """PyTorch's ``embedding_renorm_``: the looked-up rows longer than max_norm, shortened."""
    xp = weight.device.xp
    rows = xp.unique(indices.reshape(-1))
    picked = weight.data[rows]
    norms = (xp.abs(picked) ** norm_type).sum(axis=1) ** (1.0 / norm_type)
    scale = xp.where(norms > max_norm, max_norm / (norms + 1e-7), 1.0).astype(weight.dtype)
    weight.data[rows] = picked * scale[:, None]
    weight._version += 1


def embedding(
    input: Any,
    weight: Tensor,
    padding_idx: int | None = None,
    max_norm: float | None = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    """Rows of ``weight`` (num_embeddings, dim) picked by integer ``input`` of any shape: the
    output has shape input.shape + (dim,) (PyTorch's options: see the module docstring)."""
    if weight.ndim != 2:
        raise ValueError(
            f"embedding: weight must be (num_embeddings, dim), got shape {weight.shape}"
        )
    index = _index_tensor("embedding", input, weight)
    indices, count = index.data, weight.shape[0]
    if indices.size:
        low, high = index._index_range()
        if low < 0 or high >= count:
            bad = low if low < 0 else high
            raise IndexOutOfRangeError(
                f"embedding: index {bad} is out of range for {count} "
                f"embeddings (weight of shape {weight.shape})"
            )
    if padding_idx is not None:
        if not -count <= padding_idx < count:
            raise ValueError(
                f"embedding: padding_idx {padding_idx} must be within num_embeddings {count}"
            )
        padding_idx %= count
    if max_norm is not None and indices.size:
        _renorm_rows(weight, indices, float(max_norm), float(norm_type))
    return Embedding.apply(
        weight,
        indices=indices,
        padding_idx=padding_idx,
        scale_grad_by_freq=bool(scale_grad_by_freq),
    )


def one_hot(tensor: Any, num_classes: int = -1) -> Tensor:
    """int64 (..., num_classes) with a 1 at each class index of ``tensor``."""
    if not isinstance(tensor, Tensor) or tensor.dtype.kind not in "iu":
        kind = tensor.dtype if isinstance(tensor, Tensor) else type(tensor).__name__
        raise RuntimeError(
            f"one_hot is only applicable to index tensor of type LongTensor, got {kind}"
        )
    xp, indices = tensor.device.xp, tensor.data
    if num_classes == -1 and not indices.size:
        raise RuntimeError("one_hot: can not infer total number of classes from empty tensor")
    if indices.size:
        low, high = tensor._index_range()
        num_classes = high + 1 if num_classes == -1 else num_classes
        if low < 0 or high >= num_classes:
            raise RuntimeError(f"one_hot: class values must be in [0, {num_classes})")
    classes = xp.arange(num_classes, dtype=np.int64)
    return Tensor._wrap((indices[..., None] == classes).astype(np.int64), tensor.device)
