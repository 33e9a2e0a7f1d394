"""Scaled dot-product attention and its weights.

With q (..., T, D), k (..., S, D), v (..., S, Dv) and scale = 1/√D unless given:

* ``attention_weights``: A = dropout(softmax(q·kᵀ·scale + mask)) (..., T, S), the mask and
  ``is_causal`` as :func:`~fastnet.functional.activations.softmax` takes them.
* ``scaled_dot_product_attention``: out = A·v (..., T, Dv).

Built from the batched matmul and the kernel softmax, so their gradients are theirs.
"""

from __future__ import annotations

import math

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
    q: Tensor,
    k: Tensor,
    v: Tensor,
    attn_mask: Mask = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    training: bool = True,
    scale: float | None = None,
) -> Tensor:
    """softmax(q·kᵀ/√D + mask)·v for q (..., T, D), k (..., S, D), v (..., S, Dv), e.g.
    (B, H, T, D).

    ``attn_mask`` broadcasts to (..., T, S): booleans with True where a query may attend (as
    PyTorch's F.scaled_dot_product_attention) or additive floats. Dropout with probability
    ``dropout_p`` acts on the attention weights while ``training``.
    """
    if v.ndim != k.ndim or v.shape[:-1] != k.shape[:-1]:
        raise ValueError(
            f"scaled_dot_product_attention: value of shape {v.shape} must be "
            f"(..., S, Dv) for key of shape {k.shape}"
        )
    return attention_weights(q, k, attn_mask, dropout_p, is_causal, training, scale) @ v
