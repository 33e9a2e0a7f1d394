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
        return self.encode(images)[:, 0]

    def encode(self, images: Tensor, keep: Tensor | None = None) -> Tensor:
        """The encoder's output tokens (B, 1 + K, dim): the class token's first, then those of
        the patches ``keep`` names, or of all K = P patches when ``keep`` is None.

        ``keep`` (B, K) holds integer patch indices in [0, P) (row-major over the patch grid),
        on the images' device: a masked autoencoder encodes only its visible patches. Each kept
        patch gets its own position before the others are dropped, so the encoder sees where
        it came from."""
        expected = (self.channels, self.image_size, self.image_size)
        if images.ndim != 4 or images.shape[1:] != expected:
            raise ValueError(
                f"ViT: images of shape {images.shape} do not match "
                f"(B, {', '.join(map(str, expected))})"
            )
        patches = self.patch_embedding(images)
        batch, count, dim = patches.shape
        xp = patches.device.xp
        class_tokens = self.class_token + Tensor._wrap(
            xp.zeros((batch, 1, dim), patches.dtype), patches.device
        )
        tokens = self.positions(cat([class_tokens, patches], axis=1))
        if keep is not None:
            if keep.ndim != 2 or keep.shape[0] != batch or not 0 < keep.shape[1] <= count:
                raise ValueError(
                    f"ViT: keep of shape {keep.shape} must be (B, K) = ({batch}, K) patch "
                    f"indices with 0 < K <= {count}"
                )
            if keep.dtype.kind not in "iu" or keep.device != images.device:
                raise TypeError(
                    f"ViT: keep must hold integer patch indices on the images' device "
                    f"({images.device}), got {keep.dtype} on {keep.device}"
                )
            # token 0 is the class token, so patch i is token i + 1
            columns = xp.concatenate([xp.zeros((batch, 1), np.int64), keep.data + 1], axis=1)
            tokens = tokens[xp.arange(batch)[:, None], columns]
        return self.encoder(self.dropout(tokens))


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
