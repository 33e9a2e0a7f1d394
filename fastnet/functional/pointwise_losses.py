"""Elementwise losses, with PyTorch's signatures, and the reduction helpers every loss shares.

For input x and target t of one shape (d = x − t), each loss is elementwise, then reduced by
``reduction``: "none" (x's shape), "sum", or "mean" over every element (PyTorch's legacy
``size_average``/``reduce`` flags map onto it, with PyTorch's warning):

* ``mse_loss``: d²; ``l1_loss``: |d|; with ``weight`` (x's shape) w·l, and "mean" is
  Σ w·l / Σ w (PyTorch's). Composed of Tensor ops.
* ``smooth_l1_loss(beta)``: 0.5·d²/β where |d| < β, else |d| − 0.5·β (|d| when β = 0);
  ``huber_loss(delta)``: 0.5·d² where |d| < δ, else δ·(|d| − 0.5·δ) = δ·smooth_l1(β = δ), whose
  ``weight`` multiplies before a plain mean. One Function: dl/dd = d/β inside, sign(d) outside.
* ``binary_cross_entropy``: −w·(t·log x + (1 − t)·log(1 − x)), each log clamped at −100 as
  PyTorch (x = 0 or 1 gives 100, not inf); dl/dx = w·(x − t)/max(x·(1 − x), 1e-12),
  dl/dt = w·(log(1 − x) − log x). Input outside [0, 1] raises.
* ``binary_cross_entropy_with_logits``: with p = pos_weight (broadcast along the last axis) and
  lw = 1 + (p − 1)·t, l = w·((1 − t)·x + lw·softplus(−x)), where
  softplus(−x) = max(−x, 0) + log1p(exp(−|x|)) never overflows; dl/dx = w·((1 − t) − lw·σ(−x)),
  dl/dt = w·(−x + (p − 1)·softplus(−x)).
* ``kl_div``: x holds log-probabilities; l = t·(log t − x) (0 where t = 0), or with
  ``log_target`` l = exp(t)·(t − x); "batchmean" divides the sum by the batch size.

Shapes must be equal: PyTorch broadcasts mse/l1 (and the others) over different shapes with a
warning; fastnet raises instead, naming both, since such a call is almost always a bug (an (N, 1)
prediction against an (N,) target silently becomes an (N, N) loss). ``weight`` and ``pos_weight``
broadcast to the input as PyTorch's and get no gradient; the target gets one where PyTorch's does.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from ..tensor import Function, Tensor

__all__ = [
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
]

_REDUCTIONS = ("mean", "sum", "none")


def legacy_reduction(
    op: str,
    reduction: str,
    size_average: bool | None = None,
    reduce: bool | None = None,
    allowed: tuple[str, ...] = _REDUCTIONS,
) -> str:
    """``reduction``, or the one PyTorch's deprecated ``size_average``/``reduce`` flags name
    (either None counts as True); ValueError for an unknown reduction."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = "mean" if size_average and reduce else "sum" if reduce else "none"
        warnings.warn(
            f"{op}: size_average and reduce args will be deprecated, please use "
            f"reduction='{reduction}' instead.",
            UserWarning,
            stacklevel=3,
        )
    if reduction not in allowed:
        raise ValueError(
            f"{op}: {reduction!r} is not a valid value for reduction (one of {allowed})"
        )
    return reduction


def reduce_loss(loss: Tensor, reduction: str) -> Tensor:
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def target_array(op: str, value: Any, input: Tensor, name: str = "target") -> Any:
    """``value`` (a Tensor, array or list) as an array of the input's device."""
    if isinstance(value, Tensor):
        if value.device is not input.device:
            raise RuntimeError(f"{op}: input is on {input.device} but {name} on {value.device}")
        return value.data
    return input.device.asarray(value)


def _as_target(op: str, target: Any, input: Tensor) -> Tensor:
    """The target as a tensor of the input's dtype and shape (gradients flow to a Tensor)."""
    if not isinstance(target, Tensor):
        target = Tensor._wrap(target_array(op, target, input), input.device)
    elif target.device is not input.device:
        target_array(op, target, input)  # raises, naming both devices
    if target.shape != input.shape:
        raise ValueError(
            f"{op}: input of shape {input.shape} and target of shape {target.shape} differ "
            "(fastnet does not broadcast them: reshape one)"
        )
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: input must be floating point, got {input.dtype}")
    return target.to(dtype=input.dtype)


def _weight_array(op: str, weight: Any, input: Tensor, name: str = "weight") -> Any:
    """An optional weight as an array of the input's dtype that broadcasts to the input."""
    if weight is None:
        return None
    array = target_array(op, weight, input, name)
    try:
        shape = np.broadcast_shapes(tuple(array.shape), input.shape)
    except ValueError:
        shape = None
    if shape != input.shape:
        raise ValueError(
            f"{op}: {name} of shape {tuple(array.shape)} does not broadcast to input of shape "
            f"{input.shape}"
        )
    return array.astype(input.dtype, copy=False)


def _weighted(op: str, loss: Tensor, weight: Any, input: Tensor, reduction: str) -> Tensor:
    """mse/l1's weight: w·l, and for "mean" Σ w·l / Σ w (PyTorch's)."""
    if weight is None:
        return reduce_loss(loss, reduction)
    if tuple(target_array(op, weight, input, "weight").shape) != input.shape:
        raise ValueError(f"{op}: weight and input must have the same size, got {input.shape}")
    weight = Tensor._wrap(_weight_array(op, weight, input), input.device)
    weighted = loss * weight
    if reduction == "mean":
        return weighted.sum() / weight.sum()
    return reduce_loss(weighted, reduction)


def mse_loss(
    input: Tensor,
    target: Any,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    reduction = legacy_reduction("mse_loss", reduction, size_average, reduce)
    difference = input - _as_target("mse_loss", target, input)
    return _weighted("mse_loss", difference * difference, weight, input, reduction)


def l1_loss(
    input: Tensor,
    target: Any,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    weight: Tensor | None = None,
) -> Tensor:
    reduction = legacy_reduction("l1_loss", reduction, size_average, reduce)
    difference = input - _as_target("l1_loss", target, input)
    return _weighted("l1_loss", difference.abs(), weight, input, reduction)


class Huber(Function):
    """scale·huber_δ(x − t) elementwise (smooth L1 is huber_β/β)."""

    saves_output = False

    def forward(self, input, target, delta, scale):
        xp = self.device.xp
        difference = input - target
        size = xp.abs(difference)
        inside = size < delta
        self.slope = xp.where(inside, difference, delta * xp.sign(difference)) * scale
        return xp.where(inside, 0.5 * difference * difference, delta * (size - 0.5 * delta)) * (
            scale
        )

    def backward(self, grad):
        gradient = grad * self.slope
        return gradient, -gradient


def smooth_l1_loss(
    input: Tensor,
    target: Any,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> Tensor:
    reduction = legacy_reduction("smooth_l1_loss", reduction, size_average, reduce)
    if beta < 0:
        raise ValueError(f"smooth_l1_loss: beta must not be negative, got {beta}")
    target = _as_target("smooth_l1_loss", target, input)
    if beta == 0:
        return reduce_loss((input - target).abs(), reduction)
    return reduce_loss(Huber.apply(input, target, delta=beta, scale=1.0 / beta), reduction)


def huber_loss(
    input: Tensor,
    target: Any,
    reduction: str = "mean",
    delta: float = 1.0,
    weight: Tensor | None = None,
) -> Tensor:
    reduction = legacy_reduction("huber_loss", reduction)
    if delta <= 0:
        raise ValueError(f"huber_loss: delta must be positive, got {delta}")
    loss = Huber.apply(input, _as_target("huber_loss", target, input), delta=delta, scale=1.0)
    if weight is not None:
        loss = loss * Tensor._wrap(_weight_array("huber_loss", weight, input), input.device)
    return reduce_loss(loss, reduction)


class BinaryCrossEntropy(Function):
    saves_output = False

    def forward(self, probabilities, target, weight):
        xp = self.device.xp
        self.x, self.t, self.weight = probabilities, target, weight
        with np.errstate(divide="ignore"):  # log 0 = -inf, clamped at -100 as PyTorch
            self.log_x = xp.log(probabilities)
            self.log_not_x = xp.log1p(-probabilities)
        clamp = probabilities.dtype.type(-100)
        loss = -(
            target * xp.maximum(self.log_x, clamp)
            + (1 - target) * xp.maximum(self.log_not_x, clamp)
        )
        return loss if weight is None else loss * weight

    def backward(self, grad):
        xp, x = self.device.xp, self.x
        if self.weight is not None:
            grad = grad * self.weight
        epsilon = x.dtype.type(1e-12)
        grad_x = grad * (x - self.t) / xp.maximum(x * (1 - x), epsilon)
        return grad_x, grad * (self.log_not_x - self.log_x)


def binary_cross_entropy(
    input: Tensor,
    target: Any,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    op = "binary_cross_entropy"
    reduction = legacy_reduction(op, reduction, size_average, reduce)
    target = _as_target(op, target, input)
    if input.numel():  # a value check of the device's data: one counted transfer on a GPU
        lowest, highest = input.device.to_host(
            input.device.xp.stack((input.data.min(), input.data.max()))
        ).tolist()
        if not 0 <= lowest <= highest <= 1:  # NaN fails too
            raise ValueError(f"{op}: all elements of input should be between 0 and 1")
    loss = BinaryCrossEntropy.apply(input, target, weight=_weight_array(op, weight, input))
    return reduce_loss(loss, reduction)


class BinaryCrossEntropyWithLogits(Function):
    saves_output = False

    def forward(self, logits, target, weight, pos_weight):
        xp = self.device.xp
        self.weight = weight
        # softplus(−x) = log(1 + exp(−x)), in a form whose exp never overflows
        self.softplus = xp.maximum(-logits, 0) + xp.log1p(xp.exp(-xp.abs(logits)))
        self.logits, self.target, self.pos_weight = logits, target, pos_weight
        log_weight = 1 if pos_weight is None else 1 + (pos_weight - 1) * target
        loss = (1 - target) * logits + log_weight * self.softplus
        return loss if weight is None else loss * weight

    def backward(self, grad):
        xp, x, t = self.device.xp, self.logits, self.target
        if self.weight is not None:
            grad = grad * self.weight
        # σ(−x), stable for either sign of x
        exp = xp.exp(-xp.abs(x))
        sigmoid_neg = xp.where(x >= 0, exp / (1 + exp), 1 / (1 + exp))
        if self.pos_weight is None:
            return grad * ((1 - t) - sigmoid_neg), grad * -x
        log_weight = 1 + (self.pos_weight - 1) * t
        grad_x = grad * ((1 - t) - log_weight * sigmoid_neg)
        return grad_x, grad * (-x + (self.pos_weight - 1) * self.softplus)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Any,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    op = "binary_cross_entropy_with_logits"
    reduction = legacy_reduction(op, reduction, size_average, reduce)
    loss = BinaryCrossEntropyWithLogits.apply(
        input,
        _as_target(op, target, input),
        weight=_weight_array(op, weight, input),
        pos_weight=_weight_array(op, pos_weight, input, "pos_weight"),
    )
    return reduce_loss(loss, reduction)


class KLDivergence(Function):
    saves_output = False

    def forward(self, log_probs, target, log_target):
        xp = self.device.xp
        self.log_target = log_target
        self.log_probs, self.target = log_probs, target
        if log_target:
            self.exp_target = xp.exp(target)
            return self.exp_target * (target - log_probs)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.log_t = xp.log(target)
            # t·log t is 0 where t = 0 (xlogy)
            return xp.where(target == 0, 0, target * self.log_t) - target * log_probs

    def backward(self, grad):
        x, t = self.log_probs, self.target
        if self.log_target:
            scaled = grad * self.exp_target
            return -scaled, scaled * (t - x + 1)
        return -grad * t, grad * (self.log_t + 1 - x)


def kl_div(
    input: Tensor,
    target: Any,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """KL(target ‖ exp(input)) elementwise; ``reduction="batchmean"`` is the true KL divergence
    per sample (PyTorch's "mean" averages over every element, and warns so)."""
    reduction = legacy_reduction(
        "kl_div", reduction, size_average, reduce, _REDUCTIONS + ("batchmean",)
    )
    if reduction == "mean":
        warnings.warn(
            "kl_div: reduction 'mean' divides the total loss by both the batch size and the "
            "support size; 'batchmean' divides only by the batch size, and aligns with the KL "
            "div math definition",
            UserWarning,
            stacklevel=2,
        )
    loss = KLDivergence.apply(input, _as_target("kl_div", target, input), log_target=log_target)
    if reduction == "batchmean":
        return loss.sum() / (input.shape[0] if input.ndim else 1)
    return reduce_loss(loss, reduction)
