"""Optimizers over the fused update kernels, learning-rate schedules, gradient clipping."""

from .lr_scheduler import CosineAnnealingLR, LambdaLR, LRScheduler, OneCycleLR, StepLR
from .optimizer import SGD, Adam, AdamW, Optimizer, clip_grad_norm_

__all__ = [
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "clip_grad_norm_",
    "LRScheduler",
    "StepLR",
    "CosineAnnealingLR",
    "OneCycleLR",
    "LambdaLR",
]
