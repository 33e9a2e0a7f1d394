"""Reconstruction pretraining: learn an encoder without labels by rebuilding hidden pixels.

* :class:`MaskedAutoencoder` (He et al., 2022, "Masked Autoencoders Are Scalable Vision
  Learners", at small scale) for the ViT trunk (:class:`~fastnet.models.vit.ViTFeatures`). The
  image is cut into P patches of p×p pixels; each image draws its own random permutation of the
  patches and keeps the first K = int(P·(1 − mask_ratio)) visible. The encoder runs on the
  class token and the K visible tokens only (its patch embedding, positions and blocks, through
  ``ViTFeatures.encode``). A light decoder maps them to ``decoder_dim``, puts one shared learned
  mask token at each hidden patch, unshuffles to the patch order, adds its own positions, runs
  ``decoder_depth`` pre-norm transformer blocks and a LayerNorm, and predicts each patch's
  C·p·p pixels with a Linear. The loss is the mean squared error over the hidden patches only:
  the visible ones are given, so predicting them teaches nothing.
  With ``normalize_targets`` each target patch is first standardised by its own mean and
  variance (unbiased, + 1e-6, as in the paper's code: its "norm_pix" variant, which it found
  gives better features); the default
  compares raw pixels, so that the reconstructions are images one can look at.
* :class:`DenoisingAutoencoder` (Vincent et al., 2008) for the CNN and ResNet trunks. Each
  image is corrupted by Gaussian noise of standard deviation ``noise`` and by dropping (setting
  to 0, the mean of normalised data) square blocks of ``block_size`` pixels, each with
  probability ``mask_ratio``: x̃ = (x + noise·ε) · keep. The trunk's output, whatever its shape
  (a flat vector for the ResNets, a (C, h, w) map for ``mnist_cnn``), is flattened and mapped by
  a Linear to a small map of ``decoder_channels`` × s × s (s = ⌈⌈S/2⌉/2⌉ for S×S images), which
  two stages of nearest upsampling and a 3×3 convolution bring to the image size, and a last
  3×3 convolution to the image's channels. The loss is the mean squared error to the clean
  image. Going through the flat vector works for any trunk, and makes the vector (the features
  that a linear probe or a fine-tuned head sees) carry the whole image.

Both draw every random choice (permutations, noise, blocks) on the host from the NumPy
Generator passed in, so one seed gives the same step on the cpu and the cuda device, and upload
what they drew (a step copies nothing back to the host). ``.encoder`` is the trunk being
trained; ``loss(images, rng)`` is the scalar to minimise; ``reconstruct(images, rng)`` returns
the (masked or corrupted, reconstructed) images for a picture
(:func:`fastnet.pretrain_plots.reconstruction_grid`). No labels anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import functional as F
from . import nn
from .autograd import no_grad
from .models.vit import ViTFeatures
from .nn.summary import eval_mode
from .tensor import Tensor, cat

__all__ = ["PatchMasking", "MaskedAutoencoder", "DenoisingAutoencoder"]


def _check_images(owner: str, images: Tensor, channels: int, image_size: int) -> None:
    expected = (channels, image_size, image_size)
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1:] != expected:
        shape = images.shape if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(
            f"{owner}: images must be a Tensor (B, {', '.join(map(str, expected))}), got {shape}"
        )


def _device_of(module: nn.Module):
    """The device of a module's first parameter (None for a module without any)."""
    parameter = next(iter(module.parameters()), None)
    return None if parameter is None else parameter.device


@dataclass(frozen=True)
class PatchMasking:
    """One random masking of a batch: ``order[b]`` is image b's permutation of its P patches;
    the first ``visible`` of it stay visible, the others are hidden. A host array."""

    order: np.ndarray  # (B, P) int64
    visible: int

    @property
    def hidden(self) -> np.ndarray:
        """(B, P) booleans: True where a patch is hidden."""
        rank = np.argsort(self.order, axis=1)  # where each patch lands in its image's order
        return rank >= self.visible


class MaskedAutoencoder(nn.Module):
    """MAE over a :class:`~fastnet.models.vit.ViTFeatures` (see the module docstring).

    ``image_size``, ``channels`` and ``patch_size`` must be the ViT's own. The decoder is
    created on the encoder's device. ``mask_ratio`` must leave at least one patch visible and
    one hidden.
    """

    input_name = "masked"  # what the encoder sees, as the reconstruction grid names it

    def __init__(
        self,
        vit_features: ViTFeatures,
        image_size: int,
        channels: int,
        patch_size: int,
        mask_ratio: float = 0.75,
        decoder_dim: int = 64,
        decoder_depth: int = 1,
        decoder_heads: int = 4,
        *,
        normalize_targets: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(vit_features, ViTFeatures):
            raise TypeError(
                f"MaskedAutoencoder: vit_features must be a ViT's features (ViTFeatures), got "
                f"{type(vit_features).__name__}"
            )
        own = (
            vit_features.image_size,
            vit_features.channels,
            vit_features.patch_embedding.projection.kernel_size[0],
        )
        if (image_size, channels, patch_size) != own:
            raise ValueError(
                f"MaskedAutoencoder: image_size, channels, patch_size = "
                f"{(image_size, channels, patch_size)} differ from the ViT's {own}"
            )
        self.patches = (image_size // patch_size) ** 2
        self.visible = int(self.patches * (1.0 - mask_ratio))
        if not 0 < self.visible < self.patches:
            raise ValueError(
                f"MaskedAutoencoder: mask_ratio {mask_ratio} keeps {self.visible} of "
                f"{self.patches} patches visible: it must keep at least one and hide at least one"
            )
        self.image_size, self.channels, self.patch_size = image_size, channels, patch_size
        self.mask_ratio, self.normalize_targets = mask_ratio, normalize_targets
        dim = vit_features.class_token.shape[-1]
        self.encoder = vit_features
        self.decoder_embedding = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.init.trunc_normal_(
            nn.Parameter(np.empty((1, 1, decoder_dim), np.float32)), std=0.02
        )
        self.decoder_positions = nn.PositionalEmbedding(self.patches + 1, decoder_dim)
        self.decoder = nn.TransformerEncoder(
            lambda: nn.TransformerEncoderLayer(
                decoder_dim,
                decoder_heads,
                4 * decoder_dim,
                0.0,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            ),
            decoder_depth,
            norm=nn.LayerNorm(decoder_dim),
        )
        self.prediction = nn.Linear(decoder_dim, channels * patch_size * patch_size)
        device = _device_of(vit_features)
        if device is not None:
            self.to(device)

    def draw_masking(self, batch: int, rng: np.random.Generator) -> PatchMasking:
        """One permutation of the patches per image, drawn from ``rng`` on the host."""
        order = np.argsort(rng.random((batch, self.patches)), axis=1).astype(np.int64)
        return PatchMasking(order, self.visible)

    def patchify(self, images: Tensor) -> Tensor:
        """(B, C, H, W) → (B, P, C·p·p): the patches in row-major order, each flattened
        channel-first, the order of the ViT's patch tokens."""
        batch, side, p = images.shape[0], self.image_size // self.patch_size, self.patch_size
        grid = images.reshape(batch, self.channels, side, p, side, p)
        return grid.permute(0, 2, 4, 1, 3, 5).reshape(batch, side * side, self.channels * p * p)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """The inverse of :meth:`patchify`: (B, P, C·p·p) → (B, C, H, W)."""
        batch, side, p = patches.shape[0], self.image_size // self.patch_size, self.patch_size
        grid = patches.reshape(batch, side, side, self.channels, p, p)
        return grid.permute(0, 3, 1, 4, 2, 5).reshape(
            batch, self.channels, self.image_size, self.image_size
        )

    def predict(self, images: Tensor, masking: PatchMasking) -> Tensor:
        """The decoder's pixels for every patch (B, P, C·p·p), from the visible ones only."""
        _check_images("MaskedAutoencoder", images, self.channels, self.image_size)
        batch = images.shape[0]
        if masking.order.shape != (batch, self.patches):
            raise ValueError(
                f"MaskedAutoencoder: a masking of {masking.order.shape[0]} images for "
                f"{batch} images"
            )
        device = images.device
        order = Tensor._wrap(device.upload(masking.order), device)
        keep = order[:, : self.visible]
        tokens = self.decoder_embedding(self.encoder.encode(images, keep))
        decoded = self.decoder(self.decoder_positions(self.unshuffle(tokens, order)))
        return self.prediction(decoded[:, 1:])

    def unshuffle(self, tokens: Tensor, order: Tensor) -> Tensor:
        """The decoder's input (B, 1 + P, decoder_dim): the class token first, then each
        patch's token in patch order, the mask token at every hidden patch.

        ``tokens`` (B, 1 + K, decoder_dim) are the class token's and the visible patches', in
        the order ``order`` (B, P) (an integer tensor on their device) drew them."""
        batch, xp = tokens.shape[0], tokens.device.xp
        hidden = self.mask_token.expand(batch, self.patches - self.visible, -1)
        shuffled = cat([tokens[:, 1:], hidden], axis=1)  # patch order[b, i] at position i
        restore = xp.argsort(order.data, axis=1)  # where each patch sits in ``shuffled``
        patches = shuffled[xp.arange(batch)[:, None], restore]
        return cat([tokens[:, :1], patches], axis=1)

    def targets(self, images: Tensor) -> Tensor:
        """What the decoder is asked to predict: the patches (B, P, C·p·p), each standardised
        by its own mean and variance when ``normalize_targets``."""
        patches = self.patchify(images)
        if not self.normalize_targets:
            return patches
        mean = patches.mean(-1, keepdim=True)
        return (patches - mean) / (patches.var(-1, keepdim=True) + 1e-6) ** 0.5

    def masked_loss(self, prediction: Tensor, images: Tensor, masking: PatchMasking) -> Tensor:
        """Mean squared error between ``prediction`` (B, P, C·p·p) and the targets, over the
        hidden patches of ``masking`` only."""
        batch = images.shape[0]
        hidden = images.device.upload(masking.hidden.astype(images.dtype))
        per_patch = ((prediction - self.targets(images).detach()) ** 2).mean(-1)
        hidden_count = batch * (self.patches - self.visible)
        return (per_patch * Tensor._wrap(hidden, images.device)).sum() / hidden_count

    def loss(self, images: Tensor, rng: np.random.Generator) -> Tensor:
        """The scalar to minimise for one batch, with a fresh masking drawn from ``rng``."""
        masking = self.draw_masking(images.shape[0], rng)
        return self.masked_loss(self.predict(images, masking), images, masking)

    def reconstruct(self, images: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """(masked, reconstructed) images (B, C, H, W) for a picture, in eval mode and without
        a graph: ``masked`` is the input with its hidden patches set to 0; ``reconstructed``
        keeps the visible patches and fills the hidden ones with the prediction (with
        ``normalize_targets``, brought back to each true patch's mean and spread, as the
        paper's figures do)."""
        masking = self.draw_masking(images.shape[0], rng)
        with no_grad(), eval_mode(self):
            predicted = self.predict(images, masking)
            patches = self.patchify(images)
            if self.normalize_targets:
                spread = (patches.var(-1, keepdim=True) + 1e-6) ** 0.5
                predicted = predicted * spread + patches.mean(-1, keepdim=True)
            hidden = images.device.upload(masking.hidden[:, :, None])
            hidden = Tensor._wrap(hidden, images.device)
            masked = patches.masked_fill(hidden, 0.0)
            filled = predicted.where(hidden, patches)
        return self.unpatchify(masked), self.unpatchify(filled)


class DenoisingAutoencoder(nn.Module):
    """A denoising autoencoder over any CNN or ResNet trunk (see the module docstring).

    ``cnn_features`` maps (B, ``channels``, ``image_size``, ``image_size``) images to a vector
    or a map per image; its output size is read once from one forward pass in eval mode (so
    batch-norm statistics are untouched). The decoder is created on the trunk's device.
    """

    input_name = "corrupted"  # what the encoder sees, as the reconstruction grid names it

    def __init__(
        self,
        cnn_features: nn.Module,
        image_size: int,
        channels: int,
        *,
        noise: float = 0.3,
        mask_ratio: float = 0.25,
        block_size: int = 4,
        decoder_channels: int = 32,
    ) -> None:
        super().__init__()
        if noise < 0 or not 0 <= mask_ratio < 1 or block_size < 1 or decoder_channels < 1:
            raise ValueError(
                f"DenoisingAutoencoder: needs noise >= 0, 0 <= mask_ratio < 1, block_size >= 1 "
                f"and decoder_channels >= 1, got {noise}, {mask_ratio}, {block_size}, "
                f"{decoder_channels}"
            )
        self.image_size, self.channels = image_size, channels
        self.noise, self.mask_ratio, self.block_size = noise, mask_ratio, block_size
        self.encoder = cnn_features
        device = _device_of(cnn_features)
        with no_grad(), eval_mode(cnn_features):
            probe = Tensor(
                np.zeros((1, channels, image_size, image_size), np.float32), device=device
            )
            feature_size = math.prod(cnn_features(probe).shape[1:])
        half = (image_size + 1) // 2
        side = (half + 1) // 2
        width = decoder_channels
        self.decoder = nn.Sequential(
            nn.Flatten(),
            nn.Linear(feature_size, width * side * side),
            nn.ReLU(),
            nn.Unflatten(1, (width, side, side)),
            nn.Upsample(size=half),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Upsample(size=image_size),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, channels, 3, padding=1),
        )
        if device is not None:
            self.decoder.to(device)

    def draw_corruption(self, batch: int, rng: np.random.Generator) -> np.ndarray:
        """(B, C + 1, H, W) float32 host array drawn from ``rng``: channels [0, C) the unit
        Gaussian noise, channel C the keep mask (0 over each dropped block, 1 elsewhere)."""
        size, block = self.image_size, self.block_size
        blocks = -(-size // block)
        kept = rng.random((batch, 1, blocks, blocks)) >= self.mask_ratio
        keep = kept.repeat(block, axis=2).repeat(block, axis=3)[:, :, :size, :size]
        noise = rng.standard_normal((batch, self.channels, size, size), np.float32)
        return np.concatenate([noise, keep.astype(np.float32)], axis=1)

    def corrupt(self, images: Tensor, corruption: np.ndarray) -> Tensor:
        """(images + noise · ε) · keep, for a corruption drawn by :meth:`draw_corruption`."""
        _check_images("DenoisingAutoencoder", images, self.channels, self.image_size)
        expected = (images.shape[0], self.channels + 1, self.image_size, self.image_size)
        if corruption.shape != expected:
            raise ValueError(
                f"DenoisingAutoencoder: a corruption of shape {corruption.shape} for images of "
                f"shape {images.shape}: expected {expected}"
            )
        drawn = Tensor._wrap(images.device.upload(corruption.astype(images.dtype)), images.device)
        noise, keep = drawn[:, : self.channels], drawn[:, self.channels :]
        return (images.detach() + noise * self.noise) * keep

    def forward(self, corrupted: Tensor) -> Tensor:
        """The reconstruction (B, C, H, W) of (corrupted) images."""
        return self.decoder(self.encoder(corrupted))

    def loss(self, images: Tensor, rng: np.random.Generator) -> Tensor:
        """Mean squared error between the reconstruction of a freshly corrupted batch and the
        clean images."""
        corrupted = self.corrupt(images, self.draw_corruption(images.shape[0], rng))
        return F.mse_loss(self(corrupted), images.detach())

    def reconstruct(self, images: Tensor, rng: np.random.Generator) -> tuple[Tensor, Tensor]:
        """(corrupted, reconstructed) images (B, C, H, W) for a picture, in eval mode and
        without a graph."""
        with no_grad(), eval_mode(self):
            corrupted = self.corrupt(images, self.draw_corruption(images.shape[0], rng))
            return corrupted, self(corrupted)
