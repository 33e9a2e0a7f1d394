"""SimCLR (Chen et al. 2020), the contrastive method of :func:`fastnet.pretrain.pretrain`: two
random views of each image (:class:`~fastnet.data.ViewAugment`), both encoded in one batch, a
projection head (Linear → BatchNorm1d → ReLU → Linear, the head of the paper's CIFAR experiments
and SimCLR v2), and the NT-Xent loss over the 2N projections
(:func:`fastnet.functional.nt_xent_loss`). Under several ranks the loss contrasts the global
batch: every rank's projections are gathered (:func:`fastnet.functional.all_gather`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import distributed, nn
from . import functional as F
from .tensor import Tensor, cat

__all__ = ["SimCLR"]


class SimCLR(nn.Module):
    """SimCLR: ``encoder`` (images → features, flattened to ``feature_dim``), a projection head
    Linear(feature_dim, hidden) → BatchNorm1d → ReLU → Linear(hidden, projection_dim), and
    :meth:`loss`. ``hidden`` defaults to min(feature_dim, 512) (the paper's head is as wide as
    the features, 2048); ``augment`` (a :class:`~fastnet.data.ViewAugment`, which takes
    normalised images, as the loaders give them) to ViewAugment's defaults for the images'
    size and channels."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        projection_dim: int = 64,
        hidden: int | None = None,
        *,
        temperature: float = 0.5,
        augment: Any = None,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"SimCLR: temperature must be positive, got {temperature}")
        hidden = hidden or min(feature_dim, 512)
        self.encoder = encoder
        self.projection = nn.Sequential(
            nn.Flatten(),
            nn.Linear(feature_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(),
            nn.Linear(hidden, projection_dim),
        )
        self.temperature, self.augment = float(temperature), augment

    def forward(self, images: Tensor) -> Tensor:
        """The projections (B, projection_dim) of already augmented, normalised images."""
        return self.projection(self.encoder(images))

    def loss(self, images: Tensor, rng: np.random.Generator) -> Tensor:
        """NT-Xent of two random views of each of the normalised (B, C, H, W) ``images``, both
        views encoded in one batch of 2B (rows i and i + B: the views of image i)."""
        if self.augment is None:
            from .data import ViewAugment

            self.augment = ViewAugment(images.shape[-1], images.shape[1])
        first, second = self.augment.two_views(images, rng)
        projections = self(cat([first, second], dim=0))
        ranks = distributed.get_world_size()
        if ranks > 1:  # contrast the global batch: every rank's views, in rank order
            rows = F.all_gather(projections).reshape(ranks, 2, len(first), -1)
            projections = cat([rows[:, 0].flatten(0, 1), rows[:, 1].flatten(0, 1)], dim=0)
        return F.nt_xent_loss(projections, self.temperature)
