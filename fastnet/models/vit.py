"""Vision transformer (Dosovitskiy et al., 2021), sized for small images such as MNIST's.

An image (B, C, H, W) is cut into (H/P)·(W/P) patches of P×P pixels, each projected to ``dim``
by one strided convolution (kernel = stride = P: a linear map of each patch's C·P·P pixels). A
learned class token is put before the patch tokens, learned positions are added, and a stack of
pre-norm encoder layers (GELU feed-forward) and a final LayerNorm runs over the sequence. The
class token's output is the image's feature vector; a Linear head maps it to class logits.

As every model here, ``ViT`` is a :class:`~fastnet.models.Classifier`: ``features`` (patches →
class-token embedding (B, dim)) and ``head`` (Linear(dim, classes)).
"""

from __future__ import annotations

import numpy as np

from .. import nn
from ..tensor import Tensor, cat
from .base import Classifier, register

__all__ = ["ViT"]


class PatchEmbedding(nn.Module):
    """(B, C, H, W) → (B, patches, dim) by a Conv2d with kernel = stride = ``patch_size``."""

    def __init__(self, channels: int, dim: int, patch_size: int) -> None:
        super().__init__()
        self.projection = nn.Conv2d(channels, dim, patch_size, stride=patch_size)

    def forward(self, images: Tensor) -> Tensor:
        return self.projection(images).flatten(2).transpose(1, 2)


class ViTFeatures(nn.Module):
    """Patch embedding, class token, positions, encoder, final norm → the class token (B, dim)."""

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        channels: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_dim: int,
        dropout: float,
    ) -> None:
        super().__init__()
        self.image_size, self.channels = image_size, channels
        self.patch_embedding = PatchEmbedding(channels, dim, patch_size)
        self.class_token = nn.init.trunc_normal_(
            nn.Parameter(np.empty((1, 1, dim), np.float32)), std=0.02
        )
        self.positions = nn.PositionalEmbedding((image_size // patch_size) ** 2 + 1, dim)
        self.dropout = nn.Dropout(dropout)
        self.encoder = nn.TransformerEncoder(
            lambda: nn.TransformerEncoderLayer(
                dim,
                heads,
                mlp_dim,
                dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            ),
            depth,
            norm=nn.LayerNorm(dim),
        )

    def forward(self, images: Tensor) -> Tensor:
        expected = (self.channels, self.image_size, self.image_size)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"ViT: images of shape {images.shape} do not match "
                f"(B, {', '.join(map(str, expected))})"
            )
        patches = self.patch_embedding(images)
        batch, _, dim = patches.shape
        class_tokens = self.class_token + Tensor._wrap(
            patches.device.xp.zeros((batch, 1, dim), patches.dtype), patches.device
        )
        tokens = self.dropout(self.positions(cat([class_tokens, patches], axis=1)))
        return self.encoder(tokens)[:, 0]


class ViT(Classifier):
    """ViT classifier: ``features`` (:class:`ViTFeatures`) → ``head`` Linear(dim, classes).

    ``image_size`` must be a multiple of ``patch_size``; ``dim`` of ``heads``. ``mlp_dim`` (the
    feed-forward width) defaults to 2·dim.
    """

    def __init__(
        self,
        image_size: int = 28,
        patch_size: int = 7,
        channels: int = 1,
        classes: int = 10,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        if patch_size < 1 or image_size % patch_size:
            raise ValueError(
                f"ViT: image_size {image_size} must be a multiple of patch_size {patch_size}"
            )
        if heads < 1 or dim % heads:
            raise ValueError(f"ViT: dim {dim} must be divisible by heads {heads}")
        features = ViTFeatures(
            image_size, patch_size, channels, dim, depth, heads, mlp_dim or 2 * dim, dropout
        )
        super().__init__(features, nn.Linear(dim, classes))


register("vit", ViT)
