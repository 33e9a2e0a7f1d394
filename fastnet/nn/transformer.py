"""Attention layers: LayerNorm, Embedding, PositionalEmbedding, MultiheadAttention,
TransformerEncoderLayer and TransformerEncoder.

Parameter and submodule names, shapes and initialisations are PyTorch's, so state dicts move
between the two frameworks unchanged (PositionalEmbedding, which PyTorch lacks, is the learned
table of a ViT). Sequences are (sequence, batch, features) unless a layer is built with
``batch_first=True`` (batch, sequence, features), as in PyTorch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import functional as F
from ..functional import Mask, attention_weights
from ..tensor import Tensor
from . import init
from .containers import ModuleList
from .layers import Dropout, Linear
from .module import Module, Parameter

__all__ = [
    "LayerNorm",
    "Embedding",
    "PositionalEmbedding",
    "MultiheadAttention",
    "TransformerEncoderLayer",
    "TransformerEncoder",
]

Activation = str | Callable[[Tensor], Tensor]


class LayerNorm(Module):
    """Normalises the trailing ``normalized_shape`` axes; ``weight`` (ones) and ``bias`` (zeros) of
    that shape when ``elementwise_affine``."""

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        shape = (
            (normalized_shape,)
            if isinstance(normalized_shape, (int, np.integer))
            else tuple(normalized_shape)
        )
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        self.register_parameter(
            "weight", Parameter(np.ones(shape, np.float32)) if elementwise_affine else None
        )
        self.register_parameter(
            "bias", Parameter(np.zeros(shape, np.float32)) if elementwise_affine and bias else None
        )

    def forward(self, input: Tensor) -> Tensor:
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )


class Embedding(Module):
    """A lookup table: integer indices (any shape) → rows of ``weight`` (num_embeddings,
    embedding_dim), drawn from N(0, 1) as in PyTorch, the ``padding_idx`` row zero (and left
    untrained). ``max_norm``, ``norm_type``, ``scale_grad_by_freq`` and ``sparse`` are
    F.embedding's; ``_weight`` gives the table, ``_freeze`` stops it training."""

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
        _weight: Any = None,
        _freeze: bool = False,
    ) -> None:
        super().__init__()
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(
                    f"Embedding: padding_idx {padding_idx} must be within num_embeddings "
                    f"{num_embeddings}"
                )
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx, self.max_norm, self.norm_type = padding_idx, max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        if _weight is None:
            self.weight = Parameter(np.empty((num_embeddings, embedding_dim), np.float32))
            self.reset_parameters()
        else:
            weight = _weight.data if isinstance(_weight, Tensor) else np.asarray(_weight)
            if tuple(weight.shape) != (num_embeddings, embedding_dim):
                raise ValueError(
                    f"Embedding: _weight of shape {tuple(weight.shape)} does not match "
                    f"({num_embeddings}, {embedding_dim})"
                )
            self.weight = Parameter(Tensor(weight), requires_grad=not _freeze)

    def reset_parameters(self) -> None:
        init.normal_(self.weight)
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    @classmethod
    def from_pretrained(
        cls,
        embeddings: Any,
        freeze: bool = True,
        padding_idx: int | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        scale_grad_by_freq: bool = False,
        sparse: bool = False,
    ) -> Embedding:
        """An Embedding holding ``embeddings`` (2-D), frozen unless ``freeze=False``."""
        if len(embeddings.shape) != 2:
            raise ValueError("Embeddings parameter is expected to be 2-dimensional")
        rows, dim = embeddings.shape
        return cls(
            rows,
            dim,
            padding_idx,
            max_norm,
            norm_type,
            scale_grad_by_freq,
            sparse,
            _weight=embeddings,
            _freeze=freeze,
        )

    def forward(self, input: Any) -> Tensor:
        return F.embedding(
            input,
            self.weight,
            self.padding_idx,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.sparse,
        )

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            text += f", max_norm={self.max_norm}"
        return text


class PositionalEmbedding(Module):
    """Learned positions: x (batch, T, dim) + weight[:T], with ``weight`` (max_positions, dim)
    drawn from a normal distribution truncated at ±2σ, σ = 0.02 (the usual ViT initialisation)."""

    def __init__(self, max_positions: int, dim: int) -> None:
        super().__init__()
        self.max_positions, self.dim = max_positions, dim
        self.weight = init.trunc_normal_(
            Parameter(np.empty((max_positions, dim), np.float32)), std=0.02
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or x.shape[-1] != self.dim or x.shape[-2] > self.max_positions:
            raise ValueError(
                f"PositionalEmbedding: input of shape {x.shape} must be (..., T, {self.dim}) "
                f"with T <= {self.max_positions}"
            )
        positions = x.shape[-2]
        return x + (self.weight if positions == self.max_positions else self.weight[:positions])

    def extra_repr(self) -> str:
        return f"{self.max_positions}, {self.dim}"


def _additive(mask: Any, name: str, reference: Tensor) -> Any:
    """A PyTorch-convention mask (booleans: True = hidden; floats: added) as an additive array."""
    data = mask.data if isinstance(mask, Tensor) else reference.device.asarray(mask)
    xp = reference.device.xp
    if data.dtype == np.bool_:
        return xp.where(data, reference.dtype.type(-np.inf), reference.dtype.type(0))
    if data.dtype.kind != "f":
        raise TypeError(
            f"MultiheadAttention: {name} must be boolean (True = hidden) or float (additive), "
            f"got {data.dtype}"
        )
    return data.astype(reference.dtype, copy=False)


class MultiheadAttention(Module):
    """Multi-head attention with PyTorch's parameter layout (``embed_dim`` = E, ``num_heads`` = H,
    head dim D = E/H):

    =========================  ===========  ==================================================
    parameter                  shape        PyTorch name and role
    =========================  ===========  ==================================================
    ``in_proj_weight``         (3E, E)      ``in_proj_weight``: rows [0, E) project the query,
                                            [E, 2E) the key, [2E, 3E) the value (Xavier-uniform)
    ``in_proj_bias``           (3E,)        ``in_proj_bias``, split the same way (zeros)
    ``out_proj.weight``        (E, E)       ``out_proj.weight`` (Linear's initialisation)
    ``out_proj.bias``          (E,)         ``out_proj.bias`` (zeros)
    =========================  ===========  ==================================================

    The names are identical, so ``load_state_dict`` takes a PyTorch state dict (as NumPy arrays)
    and the reverse. Only equal query/key/value widths are offered (PyTorch's separate
    ``q_proj_weight``/``k_proj_weight``/``v_proj_weight`` for other ``kdim``/``vdim`` are not).

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` takes (T, B, E), (S, B, E), (S, B, E)
    ((B, T, E) ... with ``batch_first=True``) and returns ``(output, weights)``, the output in
    the query's layout:
    weights are the attention weights after dropout, (B, T, S) averaged over heads or
    (B, H, T, S), when ``need_weights``, else None. Masks follow PyTorch's MultiheadAttention:
    ``attn_mask`` (T, S) or (B·H, T, S) and ``key_padding_mask`` (B, S), booleans True where a
    key is hidden or floats added to the scores; ``is_causal`` hides the keys after each query.
    One difference from PyTorch: a query whose every key is hidden gets zeros, not NaN.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = False,
    ) -> None:
        super().__init__()
        if num_heads < 1 or embed_dim % num_heads:
            raise ValueError(
                f"MultiheadAttention: embed_dim {embed_dim} must be divisible by "
                f"num_heads {num_heads}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MultiheadAttention: dropout must be in [0, 1), got {dropout}")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        self.in_proj_weight = init.xavier_uniform_(
            Parameter(np.empty((3 * embed_dim, embed_dim), np.float32))
        )
        self.register_parameter(
            "in_proj_bias", Parameter(np.zeros(3 * embed_dim, np.float32)) if bias else None
        )
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)
        if bias:
            init.zeros_(self.out_proj.bias)

    def _project(self, x: Tensor, part: int) -> Tensor:
        """Part 0, 1 or 2 (query, key, value) of the input projection, split into heads:
        (B, L, E) → (B, H, L, D)."""
        rows = slice(part * self.embed_dim, (part + 1) * self.embed_dim)
        bias = self.in_proj_bias[rows] if self.in_proj_bias is not None else None
        projected = F.linear(x, self.in_proj_weight[rows], bias)
        return projected.reshape(x.shape[0], x.shape[1], self.num_heads, self.head_dim).transpose(
            1, 2
        )

    def _mask(self, attn_mask: Mask, key_padding_mask: Mask, query: Tensor, key: Tensor) -> Any:
        """attn_mask and key_padding_mask merged into one additive array that broadcasts to
        (B, H, T, S)."""
        (batch, queries, _), keys = query.shape, key.shape[1]
        merged = None
        if attn_mask is not None:
            merged = _additive(attn_mask, "attn_mask", query)
            if merged.shape == (batch * self.num_heads, queries, keys):
                merged = merged.reshape(batch, self.num_heads, queries, keys)
            elif merged.shape != (queries, keys):
                raise ValueError(
                    f"MultiheadAttention: attn_mask of shape {tuple(merged.shape)} "
                    f"must be ({queries}, {keys}) or "
                    f"({batch * self.num_heads}, {queries}, {keys})"
                )
        if key_padding_mask is not None:
            padding = _additive(key_padding_mask, "key_padding_mask", query)
            if padding.shape != (batch, keys):
                raise ValueError(
                    f"MultiheadAttention: key_padding_mask of shape "
                    f"{tuple(padding.shape)} must be (batch, keys) = ({batch}, {keys})"
                )
            padding = padding.reshape(batch, 1, 1, keys)
            merged = padding if merged is None else merged + padding
        return merged

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Mask = None,
        need_weights: bool = True,
        attn_mask: Mask = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        width = self.embed_dim
        if (
            query.ndim != 3
            or key.ndim != 3
            or value.ndim != 3
            or query.shape[2] != width
            or key.shape[2] != width
            or value.shape[2] != width
            or key.shape[:2] != value.shape[:2]
            or query.shape[0] != key.shape[0]
        ):
            raise ValueError(
                f"MultiheadAttention: query {query.shape}, key {key.shape} and value {value.shape} "
                f"must be (B, T, {width}), (B, S, {width}), (B, S, {width})"
                + ("" if self.batch_first else " after moving the batch first")
            )
        weights = attention_weights(
            self._project(query, 0),
            self._project(key, 1),
            self._mask(attn_mask, key_padding_mask, query, key),
            self.dropout,
            is_causal,
            self.training,
        )
        heads = weights @ self._project(value, 2)  # (B, H, T, D)
        output = self.out_proj(heads.transpose(1, 2).reshape(query.shape))
        if not self.batch_first:
            output = output.transpose(0, 1)
        if not need_weights:
            return output, None
        return output, weights.mean(axis=1) if average_attn_weights else weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"


_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu}


class TransformerEncoderLayer(Module):
    """Self-attention and a feed-forward block, each with a residual connection, PyTorch's
    submodules (``self_attn``, ``linear1``, ``dropout``, ``linear2``, ``norm1``, ``norm2``,
    ``dropout1``, ``dropout2``) and so its state-dict names.

    post-norm (``norm_first=False``, the original Transformer):
        x = norm1(x + dropout1(self_attn(x)));  x = norm2(x + dropout2(ff(x)))
    pre-norm (``norm_first=True``, ViT, GPT-2):
        x = x + dropout1(self_attn(norm1(x)));  x = x + dropout2(ff(norm2(x)))
    with ff(x) = linear2(dropout(activation(linear1(x)))); ``activation`` is "relu", "gelu" or a
    callable on tensors.
    """

    def __init__(
        self,
        d_model: int,
        nhead: int,
        dim_feedforward: int = 2048,
        dropout: float = 0.1,
        activation: Activation = "relu",
        layer_norm_eps: float = 1e-5,
        batch_first: bool = False,
        norm_first: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(activation, str):
            if activation not in _ACTIVATIONS:
                raise ValueError(
                    f"TransformerEncoderLayer: activation must be 'relu', 'gelu' or a callable, "
                    f"got {activation!r}"
                )
            activation = _ACTIVATIONS[activation]
        self.self_attn = MultiheadAttention(
            d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first
        )
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias)
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation, self.norm_first = activation, norm_first

    def _self_attention(
        self, x: Tensor, mask: Mask, key_padding_mask: Mask, is_causal: bool
    ) -> Tensor:
        attended, _ = self.self_attn(
            x,
            x,
            x,
            key_padding_mask=key_padding_mask,
            need_weights=False,
            attn_mask=mask,
            is_causal=is_causal,
        )
        return self.dropout1(attended)

    def _feed_forward(self, x: Tensor) -> Tensor:
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))

    def forward(
        self,
        src: Tensor,
        src_mask: Mask = None,
        src_key_padding_mask: Mask = None,
        is_causal: bool = False,
    ) -> Tensor:
        x = src
        if self.norm_first:
            x = x + self._self_attention(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            return x + self._feed_forward(self.norm2(x))
        x = self.norm1(x + self._self_attention(x, src_mask, src_key_padding_mask, is_causal))
        return self.norm2(x + self._feed_forward(x))


class TransformerEncoder(Module):
    """``num_layers`` encoder layers in a row (``layers.0``, ``layers.1``, ...), then ``norm`` if
    given (the final LayerNorm a pre-norm stack needs).

    ``encoder_layer`` is either a layer, deep-copied ``num_layers`` times as in PyTorch (every copy
    starts from the same weights), or a factory called once per layer (independent weights).
    """

    def __init__(
        self,
        encoder_layer: Module | Callable[[], Module],
        num_layers: int,
        norm: Module | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"TransformerEncoder: num_layers must be positive, got {num_layers}")
        if isinstance(encoder_layer, Module):
            self.layers = ModuleList([_clone(encoder_layer) for _ in range(num_layers)])
        else:
            self.layers = ModuleList([encoder_layer() for _ in range(num_layers)])
        self.num_layers = num_layers
        self.norm = norm

    def forward(
        self,
        src: Tensor,
        mask: Mask = None,
        src_key_padding_mask: Mask = None,
        is_causal: bool = False,
    ) -> Tensor:
        x = src
        for layer in self.layers:
            x = layer(
                x, src_mask=mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal
            )
        return self.norm(x) if self.norm is not None else x


def _clone(module: Module) -> Module:
    """A deep copy of ``module`` whose tensors stay on the very same Device objects (tensors on
    different Device instances would refuse to mix)."""
    tensors = list(module.parameters()) + [buffer for _, buffer in module.named_buffers()]
    devices = {id(t.device): t.device for t in tensors}
    return copy.deepcopy(module, memo=dict(devices))
