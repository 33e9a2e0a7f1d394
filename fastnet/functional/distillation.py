"""Knowledge distillation: a student's logits against a frozen teacher's and the labels.

For student logits z and teacher logits t (N, C), labels y (N,), a temperature T > 0 and a weight
α in [0, 1] (Hinton, Vinyals & Dean 2015):

* ``soft_target_loss(z, t, T)`` = (1/N)·Σ_b KL(softmax(t_b/T) ‖ softmax(z_b/T)), PyTorch's
  ``kl_div(log_softmax(z/T), softmax(t/T), reduction="batchmean")``, on the fused soft-target
  kernel (``device.soft_target_xent``: row losses and the gradient (q − p)/(T·N) in one pass);
* ``distillation_loss(z, t, y, T, α)``
  = α·T²·soft_target_loss(z, t, T) + (1 − α)·cross_entropy(z, y)
  (the T² keeps the soft term's gradient, which scales as 1/T², comparable as T changes).

The teacher's logits get no gradient (they are read as data, as a detached tensor), whatever
their ``requires_grad``. ``kl_div`` itself, the elementwise form, is in :mod:`.pointwise_losses`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..tensor import Function, Tensor
from .losses import cross_entropy

__all__ = ["distillation_loss", "soft_target_loss"]


class SoftTargetXent(Function):
    """Mean over rows of KL(softmax(t/T) ‖ softmax(z/T)); backward scales the kernel's gradient."""

    saves_inputs = saves_output = False  # backward reads only the kernel's gradient

    def forward(self, student, teacher, temperature):
        xp = self.device.xp
        row_losses, self.dlogits = self.device.soft_target_xent(
            xp.ascontiguousarray(student), teacher, temperature
        )
        return xp.asarray(row_losses.sum(dtype=np.float64) / student.shape[0], student.dtype)

    def backward(self, grad):
        return (grad * self.dlogits,)


def _check_temperature(op: str, temperature: Any) -> float:
    try:
        value = float(temperature)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: temperature must be a number, got {temperature!r}") from None
    if not (value > 0.0 and math.isfinite(value)):
        raise ValueError(f"{op}: temperature must be a finite number > 0, got {temperature}")
    return value


def _teacher_array(op: str, student: Tensor, teacher: Any) -> Any:
    """The teacher's logits as an array on the student's device, in its dtype, of its shape."""
    if not isinstance(student, Tensor):
        raise TypeError(f"{op}: student_logits must be a Tensor, got {type(student).__name__}")
    if isinstance(teacher, Tensor):
        if teacher.device != student.device:
            raise RuntimeError(
                f"{op}: teacher_logits are on {teacher.device} but student_logits on "
                f"{student.device}; move one of them"
            )
        array = teacher.data
    else:
        array = student.device.xp.asarray(teacher)
    if student.ndim != 2:
        raise ValueError(
            f"{op}: student_logits must be 2-D (batch, classes), got shape {tuple(student.shape)}"
        )
    if tuple(array.shape) != tuple(student.shape):
        raise ValueError(
            f"{op}: teacher_logits shape {tuple(array.shape)} does not match student_logits "
            f"shape {tuple(student.shape)}"
        )
    if student.shape[0] == 0:
        raise ValueError(f"{op}: the batch is empty (student_logits shape {tuple(student.shape)})")
    if array.dtype.kind != "f":
        raise TypeError(f"{op}: teacher_logits must be floating point, got {array.dtype}")
    return array.astype(student.dtype, copy=False)


def soft_target_loss(
    student_logits: Tensor, teacher_logits: Any, temperature: float = 1.0
) -> Tensor:
    """(1/N)·Σ_b KL(softmax(t_b/T) ‖ softmax(z_b/T)) over the batch, a 0-d tensor; the gradient
    flows to the student's logits only."""
    temperature = _check_temperature("soft_target_loss", temperature)
    teacher = _teacher_array("soft_target_loss", student_logits, teacher_logits)
    return SoftTargetXent.apply(student_logits, teacher=teacher, temperature=temperature)


def distillation_loss(
    student_logits: Tensor,
    teacher_logits: Any,
    target: Any,
    temperature: float = 4.0,
    alpha: float = 0.9,
) -> Tensor:
    """α·T²·KL(softmax(t/T) ‖ softmax(z/T)) (batch mean) + (1 − α)·cross_entropy(z, target).

    ``target``: class indices (N,) for the hard term; it may be None when α = 1. Raises
    ValueError for T ≤ 0, α outside [0, 1] or logits whose shapes differ."""
    op = "distillation_loss"
    temperature = _check_temperature(op, temperature)
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: alpha must be a number, got {alpha!r}") from None
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"{op}: alpha must be in [0, 1], got {alpha}")
    teacher = _teacher_array(op, student_logits, teacher_logits)
    if target is None and alpha < 1.0:
        raise ValueError(f"{op}: target (class indices) is needed unless alpha is 1, got None")
    loss = None
    if alpha > 0.0:
        soft = SoftTargetXent.apply(student_logits, teacher=teacher, temperature=temperature)
        loss = soft * (alpha * temperature * temperature)
    if alpha < 1.0:
        hard = cross_entropy(student_logits, target) * (1.0 - alpha)
        loss = hard if loss is None else loss + hard
    return loss
