"""``DistillationLoss``: knowledge distillation as a loss module.

``DistillationLoss(temperature, alpha)(student_logits, teacher_logits, target)`` is
:func:`fastnet.functional.distillation_loss`: α·T²·KL(softmax(t/T) ‖ softmax(z/T)) (batch mean)
+ (1 − α)·cross_entropy(z, target); the teacher's logits get no gradient.
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
from ..functional.distillation import _check_temperature
from ..tensor import Tensor
from .module import Module

__all__ = ["DistillationLoss"]


class DistillationLoss(Module):
    def __init__(self, temperature: float = 4.0, alpha: float = 0.9) -> None:
        super().__init__()
        self.temperature = _check_temperature("DistillationLoss", temperature)
        alpha = float(alpha)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"DistillationLoss: alpha must be in [0, 1], got {alpha}")
        self.alpha = alpha

    def forward(self, student_logits: Tensor, teacher_logits: Any, target: Any) -> Tensor:
        return F.distillation_loss(
            student_logits, teacher_logits, target, self.temperature, self.alpha
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}"
