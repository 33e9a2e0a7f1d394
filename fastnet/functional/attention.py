"""Attention ops: the kernel softmax with masks, layer norm, embedding, scaled dot-product attention.

* ``softmax(x, axis, mask, causal)``: y = softmax(x + mask) along ``axis`` on the device's row
  softmax kernel; backward dx = y·(dy − Σ y·dy) on its backward kernel. ``mask`` broadcasts to
  x: additive floats (−inf hides a column) or booleans, True where a column is visible (the
  convention of PyTorch's ``scaled_dot_product_attention``). ``causal=True`` hides, for query row
  q of the last two axes (T, S), every key c > q + S − T: the lower triangle when T = S, aligned
  to the bottom-right corner otherwise (the queries are the last T of the S keys, as with a KV
  cache; PyTorch's ``is_causal`` aligns top-left, which differs only when T ≠ S). A row whose
  every column is hidden gives zeros, not NaN (PyTorch gives NaN): it attends to nothing.
* ``layer_norm(x, normalized_shape, weight, bias, eps)``: each row of the last
  ``len(normalized_shape)`` axes, flattened to D values, normalised to zero mean and unit biased
  variance, then y = x̂·weight + bias, on the layer-norm kernels (one pass for the statistics,
  saved mean and 1/std for the backward).
* ``embedding(indices, weight)``: y[..., :] = weight[indices[...], :], a gather; its backward
  scatter-adds each row of dy into the row of dweight its index picked (repeated indices add).
* ``scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)``: with q (..., T, D),
  k (..., S, D), v (..., S, Dv): A = dropout(softmax(q·kᵀ·scale + mask)), out = A·v (..., T, Dv),
  scale = 1/√D unless given. Built from the batched matmul and the kernel softmax, so its
  gradients are theirs.
"""
from __future__ import annotations

import math
from typing import Any, Sequence, Union

import numpy as np

from ..tensor import Function, Tensor
from .core import dropout

__all__ = ["softmax", "layer_norm", "embedding", "scaled_dot_product_attention"]

Mask = Union[Tensor, np.ndarray, None]


# ===================================================================== softmax
class Softmax(Function):
    """Row softmax over the last axis of x (..., C), viewed as (rows, C) for the kernel."""

    def forward(self, x, mask, causal_query_len):
        rows = self.device.xp.ascontiguousarray(x).reshape(int(np.prod(x.shape[:-1])), x.shape[-1])
        self.y = self.device.softmax_forward(rows, mask, causal_query_len)
        return self.y.reshape(x.shape)

    def backward(self, grad):
        grad_rows = self.device.xp.ascontiguousarray(grad).reshape(self.y.shape)
        return (self.device.softmax_backward(self.y, grad_rows).reshape(grad.shape),)


def _additive_mask(mask: Mask, x: Tensor, op: str) -> Any:
    """``mask`` as an additive array of x's dtype and device, in the kernel's layout for x viewed
    as (rows, C): (C,) when every row shares it, else (rows, C); None stays None."""
    if mask is None:
        return None
    if isinstance(mask, Tensor):
        if mask.device is not x.device:
            raise RuntimeError(f"{op}: input is on {x.device} but the mask on {mask.device}")
        mask = mask.data
    xp = x.device.xp
    mask = x.device.asarray(mask)
    if mask.dtype == np.bool_:
        mask = xp.where(mask, x.dtype.type(0), x.dtype.type(-np.inf))
    elif mask.dtype.kind != "f":
        raise TypeError(f"{op}: the mask must be boolean (True = visible) or float (additive), got {mask.dtype}")
    try:
        np.broadcast_shapes(mask.shape, x.shape)
    except ValueError:
        raise ValueError(f"{op}: mask of shape {tuple(mask.shape)} does not broadcast to input of shape {x.shape}") from None
    if mask.ndim > x.ndim:
        raise ValueError(f"{op}: mask of shape {tuple(mask.shape)} has more axes than input of shape {x.shape}")
    columns = x.shape[-1]
    # copies, never broadcast views: those are read-only, and the simulator writes every argument back
    if all(n == 1 for n in mask.shape[:-1]):  # one row of mask for every row of x
        return xp.array(xp.broadcast_to(mask.reshape(-1), (columns,)), dtype=x.dtype)
    return xp.array(xp.broadcast_to(mask, x.shape).reshape(-1, columns), dtype=x.dtype)


def softmax(x: Tensor, axis: int = -1, mask: Mask = None, causal: bool = False) -> Tensor:
    """softmax(x + mask) along ``axis`` on the softmax kernel (see the module docstring for the
    mask conventions and ``causal``, which applies to the last two axes and needs axis -1)."""
    if x.ndim == 0:
        raise ValueError("softmax: input must have at least one axis, got a scalar")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"softmax: axis {axis} is out of range for input of shape {x.shape}")
    axis %= x.ndim
    last = x.ndim - 1
    if causal and (axis != last or x.ndim < 2):
        raise ValueError(f"softmax: causal=True needs axis -1 and an input (..., T, S), got axis {axis} "
                         f"of shape {x.shape}")
    if axis != last:  # the kernel works on rows: move the axis last and back
        if mask is not None:
            raise ValueError("softmax: a mask needs axis -1 (the axis the mask's last axis indexes)")
        return Softmax.apply(x.transpose(axis, last), mask=None, causal_query_len=None).transpose(axis, last)
    return Softmax.apply(x, mask=_additive_mask(mask, x, "softmax"),
                         causal_query_len=x.shape[-2] if causal else None)


# ===================================================================== layer norm
class LayerNorm(Function):
    def forward(self, x, *affine, width, has_weight, eps):
        xp = self.device.xp
        self.x_rows = xp.ascontiguousarray(x).reshape(-1, width)
        self.has_weight, self.has_bias = has_weight, len(affine) == 1 + has_weight
        self.weight = affine[0].reshape(width) if has_weight else None
        bias = affine[-1].reshape(width) if self.has_bias else None
        y, self.mean, self.rstd = self.device.layernorm_forward(self.x_rows, self.weight, bias, eps)
        return y.reshape(x.shape)

    def backward(self, grad):
        grad_rows = self.device.xp.ascontiguousarray(grad).reshape(self.x_rows.shape)
        grad_x, grad_weight, grad_bias = self.device.layernorm_backward(
            grad_rows, self.x_rows, self.weight, self.mean, self.rstd)
        parameter_shapes = [t.shape for t in self.inputs[1:]]
        grads = ([grad_weight] if self.has_weight else []) + ([grad_bias] if self.has_bias else [])
        return (grad_x.reshape(grad.shape),) + tuple(g.reshape(s) for g, s in zip(grads, parameter_shapes))


def layer_norm(x: Tensor, normalized_shape: int | Sequence[int], weight: Tensor | None = None,
               bias: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the trailing ``normalized_shape`` axes (PyTorch's F.layer_norm);
    weight and bias, when given, have shape ``normalized_shape``."""
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) else tuple(normalized_shape)
    if not shape or len(shape) > x.ndim or x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"layer_norm: normalized_shape {shape} does not match the trailing axes of input "
                         f"of shape {x.shape}")
    for name, parameter in (("weight", weight), ("bias", bias)):
        if parameter is not None and parameter.shape != shape:
            raise ValueError(f"layer_norm: {name} of shape {parameter.shape} does not match normalized_shape {shape}")
    affine = [p for p in (weight, bias) if p is not None]
    return LayerNorm.apply(x, *affine, width=int(np.prod(shape)), has_weight=weight is not None, eps=float(eps))


# ===================================================================== embedding
def embedding(indices: Any, weight: Tensor) -> Tensor:
    """Rows of ``weight`` (num_embeddings, dim) picked by integer ``indices`` of any shape: the
    output has shape indices.shape + (dim,). The gradient of a row picked several times is the
    sum of the picks' gradients."""
    if weight.ndim != 2:
        raise ValueError(f"embedding: weight must be (num_embeddings, dim), got shape {weight.shape}")
    if isinstance(indices, Tensor):
        if indices.device is not weight.device:
            raise RuntimeError(f"embedding: indices are on {indices.device} but weight on {weight.device}")
        indices = indices.data
    indices = weight.device.asarray(indices)
    if indices.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got {indices.dtype}")
    if indices.size:
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= weight.shape[0]:
            bad = low if low < 0 else high
            raise ValueError(f"embedding: index {bad} is out of range for {weight.shape[0]} embeddings "
                             f"(weight of shape {weight.shape})")
    return weight[indices]  # the gather; its backward scatter-adds (see Tensor.__getitem__)


# ===================================================================== attention
def attention_weights(q: Tensor, k: Tensor, attn_mask: Mask = None, dropout_p: float = 0.0, is_causal: bool = False,
                      training: bool = True, scale: float | None = None) -> Tensor:
    """dropout(softmax(q·kᵀ·scale + mask)) (..., T, S): the weights scaled_dot_product_attention
    applies to v (MultiheadAttention returns them when asked)."""
    if q.ndim < 2 or k.ndim != q.ndim or q.shape[-1] != k.shape[-1] or q.shape[:-2] != k.shape[:-2]:
        raise ValueError(f"scaled_dot_product_attention: query of shape {q.shape} and key of shape {k.shape} "
                         f"must be (..., T, D) and (..., S, D) with the same leading axes and D")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)  # scaling q costs T·D multiplications, the scores T·S
    return dropout(softmax(scores, mask=attn_mask, causal=is_causal), dropout_p, training)


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Mask = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, training: bool = True,
                                 scale: float | None = None) -> Tensor:
    """softmax(q·kᵀ/√D + mask)·v for q (..., T, D), k (..., S, D), v (..., S, Dv), e.g. (B, H, T, D).

    ``attn_mask`` broadcasts to (..., T, S): booleans with True where a query may attend (as
    PyTorch's F.scaled_dot_product_attention) or additive floats. Dropout with probability
    ``dropout_p`` acts on the attention weights while ``training``.
    """
    if v.ndim != k.ndim or v.shape[:-1] != k.shape[:-1]:
        raise ValueError(f"scaled_dot_product_attention: value of shape {v.shape} must be (..., S, Dv) "
                         f"for key of shape {k.shape}")
    return attention_weights(q, k, attn_mask, dropout_p, is_causal, training, scale) @ v
