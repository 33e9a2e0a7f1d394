"""Scaled dot-product attention and its weights.

With q (..., T, D), k (..., S, D), v (..., S, Dv) and scale = 1/√D unless given:

* ``attention_weights``: A = dropout(softmax(q·kᵀ·scale + mask)) (..., T, S), the mask and
  ``is_causal`` as :func:`~fastnet.functional.activations.softmax` takes them.
* ``scaled_dot_product_attention``: out = A·v (..., T, Dv), with PyTorch's signature: its
  ``is_causal`` lets query i see keys 0..i (top-left aligned; the softmax kernel's ``causal``
  aligns bottom-right, so T ≠ S passes an explicit lower-triangular mask), ``enable_gqa`` shares
  each key/value head among H_q/H_kv query heads, and ``training`` is keyword-only.

Built from the batched matmul and the kernel softmax, so their gradients are theirs.
"""

from __future__ import annotations

import math

import numpy as np

from ..tensor import Tensor
from .activations import Mask, softmax
from .regularization import dropout

__all__ = ["attention_weights", "scaled_dot_product_attention"]


def attention_weights(
    q: Tensor,
    k: Tensor,
    attn_mask: Mask = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    training: bool = True,
    scale: float | None = None,
) -> Tensor:
    """dropout(softmax(q·kᵀ·scale + mask)) (..., T, S): the weights scaled_dot_product_attention
    applies to v (MultiheadAttention returns them when asked)."""
    if q.ndim < 2 or k.ndim != q.ndim or q.shape[-1] != k.shape[-1] or q.shape[:-2] != k.shape[:-2]:
        raise ValueError(
            f"scaled_dot_product_attention: query of shape {q.shape} and key of "
            f"shape {k.shape} must be (..., T, D) and (..., S, D) with the same "
            f"leading axes and D"
        )
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    # scaling q costs T·D multiplications, scaling the scores T·S
    scores = (q * scale) @ k.transpose(-2, -1)
    return dropout(softmax(scores, mask=attn_mask, causal=is_causal), dropout_p, training)


def scaled_dot_product_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attn_mask: Mask = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
    enable_gqa: bool = False,
    *,
    training: bool = True,
) -> Tensor:
    """softmax(q·kᵀ/√D + mask)·v for q (..., T, D), k (..., S, D), v (..., S, Dv), e.g.
    (B, H, T, D) (PyTorch's F.scaled_dot_product_attention).

    ``attn_mask`` broadcasts to (..., T, S): booleans with True where a query may attend (as
    PyTorch's) or additive floats. ``is_causal`` lets query i see keys 0..i (PyTorch's top-left
    alignment when T ≠ S), on top of ``attn_mask`` when both are given. ``enable_gqa`` lets k and
    v have fewer heads (axis -3) than q, each shared by H_q/H_kv query heads. Dropout with
    probability ``dropout_p`` acts on the attention weights while ``training``.
    """
    if enable_gqa and key.ndim >= 3 and query.ndim == key.ndim:
        key, value = (_repeat_heads(t, query.shape[-3]) for t in (key, value))
    if value.ndim != key.ndim or value.shape[:-1] != key.shape[:-1]:
        raise ValueError(
            f"scaled_dot_product_attention: value of shape {value.shape} must be "
            f"(..., S, Dv) for key of shape {key.shape}"
        )
    queries, keys = query.shape[-2], key.shape[-2]
    if is_causal and queries != keys:  # the kernel's causal flag aligns bottom-right
        attn_mask, is_causal = _with_top_left_causal(attn_mask, queries, keys, query), False
    weights = attention_weights(query, key, attn_mask, dropout_p, is_causal, training, scale)
    return weights @ value


def _repeat_heads(t: Tensor, heads: int) -> Tensor:
    """(..., H_kv, S, D) → (..., heads, S, D), each of the H_kv heads repeated heads/H_kv times
    in a row (PyTorch's repeat_interleave on axis -3)."""
    kv_heads = t.shape[-3]
    if heads % kv_heads:
        raise ValueError(
            f"scaled_dot_product_attention: enable_gqa needs the query's {heads} heads to be a "
            f"multiple of the key's and value's {kv_heads}"
        )
    lead, (length, width) = t.shape[:-3], t.shape[-2:]
    grouped = t.unsqueeze(-3).expand(*lead, kv_heads, heads // kv_heads, length, width)
    return grouped.reshape(*lead, heads, length, width)


def _with_top_left_causal(attn_mask: Mask, queries: int, keys: int, query: Tensor) -> Mask:
    """``attn_mask`` narrowed to keys 0..i for query i: a boolean mask (True = visible) when the
    given one is boolean or absent, else the additive mask plus -inf above the diagonal."""
    xp = query.device.xp
    visible = xp.tril(xp.ones((queries, keys), dtype=bool))
    if attn_mask is None:
        return visible
    data = attn_mask.data if isinstance(attn_mask, Tensor) else query.device.asarray(attn_mask)
    if data.dtype == bool:
        return data & visible
    hidden = xp.where(visible, query.dtype.type(0), query.dtype.type(-np.inf))
    if isinstance(attn_mask, Tensor):  # a mask that trains keeps its place in the graph
        return attn_mask + Tensor._wrap(hidden, query.device)
    return data + hidden
