"""Losses: cross_entropy, mse_loss, l1_loss, each reduced by ``reduction`` ("mean", "sum",
"none").

* ``cross_entropy``: logits (B, K), integer labels (B,): loss_i = −Σ_k q_ik·log softmax(x_i)_k
  with q_i the one-hot label smoothed by ε (q = (1 − ε)·onehot + ε/K). The fused softmax +
  cross-entropy kernel returns the row losses and the gradient of their mean, (softmax(x) − q)/B,
  in one pass; backward only scales that gradient.
* ``mse_loss``: (input − target)², ``l1_loss``: |input − target|, elementwise over equal shapes,
  composed of Tensor ops.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import Function, Tensor

__all__ = ["cross_entropy", "mse_loss", "l1_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")


class CrossEntropy(Function):
    def forward(self, logits, labels, label_smoothing, reduction):
        if logits.ndim != 2:
            raise ValueError(
                f"cross_entropy: logits must be (batch, classes), got shape {tuple(logits.shape)}"
            )
        xp = self.device.xp
        row_losses, self.dlogits = self.device.softmax_xent(
            xp.ascontiguousarray(logits), labels, label_smoothing
        )
        self.reduction, self.rows = reduction, logits.shape[0]
        if reduction == "none":
            return row_losses
        # accumulate in float64, report in the logits' dtype
        total = row_losses.sum(dtype=np.float64)
        return xp.asarray(total / self.rows if reduction == "mean" else total, dtype=logits.dtype)

    def backward(self, grad):
        # the kernel's gradient is that of the mean loss
        if self.reduction == "mean":
            return grad * self.dlogits, None
        if self.reduction == "sum":
            return grad * (self.dlogits * self.rows), None
        return grad[:, None] * (self.dlogits * self.rows), None


def cross_entropy(
    logits: Tensor, labels: Any, label_smoothing: float = 0.0, reduction: str = "mean"
) -> Tensor:
    """Softmax cross-entropy of (batch, classes) logits against integer labels, in one kernel."""
    _check_reduction(reduction)
    if isinstance(labels, Tensor):
        if labels.device is not logits.device:
            raise RuntimeError(
                f"cross_entropy: logits are on {logits.device} but labels on {labels.device}"
            )
        labels = labels.data
    else:
        labels = logits.device.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(
            f"cross_entropy: labels of shape {tuple(labels.shape)} do not match "
            f"logits of shape {logits.shape} (expected ({logits.shape[0]},))"
        )
    if labels.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: labels must be integers, got {labels.dtype}")
    return CrossEntropy.apply(
        logits, labels=labels, label_smoothing=float(label_smoothing), reduction=reduction
    )


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    _check_reduction(reduction)
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def _check_same_shape(op: str, a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{op}: input of shape {a.shape} and target of shape {b.shape} differ")


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    _check_same_shape("mse_loss", input, target)
    difference = input - target
    return _reduce(difference * difference, reduction)


def l1_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    _check_same_shape("l1_loss", input, target)
    return _reduce((input - target).abs(), reduction)
