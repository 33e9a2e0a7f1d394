"""Classification losses with class-index targets: cross_entropy and nll_loss, with PyTorch's
signatures, class weights, ``ignore_index``, label smoothing and (N, C, d1, ...) inputs.

For input rows x_b (C,) with labels y_b, class weights w (w_c = 1 without them), the kept rows
K = {b : y_b ≠ ignore_index} and smoothing ε:

* ``nll_loss``: x holds log-probabilities; L_b = −w_{y_b}·x_{b,y_b} for b ∈ K, 0 otherwise.
* ``cross_entropy``: L_b = −Σ_c q_bc·log softmax(x_b)_c with PyTorch's target
  q_bc = (1 − ε)·w_{y_b}·[c = y_b] + (ε/C)·w_c on the kept rows. The fused softmax +
  cross-entropy kernel (``device.softmax_xent``) returns L (B,) and the gradient of L's mean over
  the B rows, (m_b·softmax(x_b) − q_b)/B with m_b = Σ_c q_bc, in one pass; backward only scales it.
  A float target of the input's shape is a probability target instead (PyTorch's second form):
  L_b = −Σ_c w_c·((1 − ε)·t_bc + ε/C)·log softmax(x_b)_c, composed of Tensor ops.

Reductions: "none" gives L in the target's shape; "sum" Σ_b L_b; "mean" PyTorch's weighted mean
Σ_b L_b / Σ_{b∈K} w_{y_b} (the number of kept rows without weights; NaN when every row is
ignored, with a zero gradient, as PyTorch), or Σ_b L_b / rows for probability targets.

Shapes: input (N, C) with target (N,); (N, C, d1, ...) with target (N, d1, ...), whose class axis
moves last and whose rows are flattened to (N·d1·..., C); (C,) with a 0-d target. Out-of-range
labels raise IndexError (as PyTorch) naming the label; ``ignore_index`` may be out of range. The
check trusts the range a label tensor recorded on the host before its upload (``_value_range``:
``Tensor(labels, device="cuda")``, ``labels.to("cuda")``, a device data loader) when it lies in
[0, C); otherwise it reads the labels' range from the device, in one counted transfer.
The elementwise losses (mse, l1, smooth L1, Huber, binary cross-entropy, KL divergence) are in
:mod:`.pointwise_losses`, beside the reduction helpers both modules share.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..tensor import Function, Tensor
from .activations import log_softmax
from .pointwise_losses import legacy_reduction, reduce_loss, target_array

__all__ = ["cross_entropy", "nll_loss"]


def _on_host(value: Any) -> bool:
    """A host number (the CPU's count or sum) rather than a device array (CuPy's)."""
    return isinstance(value, (int, float, np.number))


def _divided(xp: Any, numerator: Any, denominator: Any, if_zero: float) -> Any:
    """numerator / denominator, or ``if_zero`` where the denominator is 0, without a warning and,
    on the CPU, without an array op."""
    if _on_host(denominator):
        return numerator / denominator if denominator else if_zero
    nonzero = denominator != 0
    return xp.where(nonzero, numerator / xp.where(nonzero, denominator, 1), if_zero)


class _RowLoss(Function):
    """A loss over rows (B, C) that computes its row losses L (B,) and reduces them, keeping the
    mean's denominator for backward (1 for the other reductions)."""

    saves_inputs = saves_output = False  # backward reads only what forward kept

    def _reduce(self, row_losses, kept_weight, reduction, dtype):
        """``row_losses`` reduced; ``kept_weight`` is the mean's denominator Σ_{b∈K} w_{y_b}: 0
        (every row ignored) gives PyTorch's NaN loss and zero gradient."""
        xp = self.device.xp
        self.reduction, self.denominator = reduction, 1
        if reduction == "none":
            return row_losses
        total = row_losses.sum(dtype=np.float64)  # accumulate in float64, report in x's dtype
        if reduction == "mean":
            self.denominator = kept_weight
            total = _divided(xp, total, kept_weight, np.nan)
        return xp.asarray(total, dtype=dtype)

    def _scaled(self, grad, factor=1):
        """grad·factor/denominator in grad's dtype (grad itself when that is 1, as in the common
        case); a column (B, 1) for "none"."""
        scale = _divided(self.device.xp, factor, self.denominator, 0.0)
        if _on_host(scale):
            scale = grad if scale == 1 else grad * scale
        else:
            scale = grad * scale.astype(grad.dtype)
        return scale[:, None] if self.reduction == "none" else scale


def _kept_weight(xp: Any, labels: Any, ignored: Any, weight: Any) -> Any:
    """The weighted mean's denominator Σ_{b∈K} w_{y_b} (the count of kept rows without weights)."""
    if weight is None:
        return labels.shape[0] - xp.count_nonzero(ignored)
    return (weight[xp.where(ignored, 0, labels)] * ~ignored).sum(dtype=np.float64)


class CrossEntropy(_RowLoss):
    def forward(
        self, logits, labels, weight, ignore_index, label_smoothing, reduction, label_range
    ):
        xp = self.device.xp
        if self.device.name != "cpu":  # the CPU kernel finds the range in its pass; a GPU's can't
            label_range = _check_label_range(
                "cross_entropy", self.device, labels, logits.shape[1], label_range, ignore_index
            )
        row_losses, self.dlogits = self.device.softmax_xent(
            xp.ascontiguousarray(logits), labels, label_smoothing, weight, ignore_index, label_range
        )
        self.rows = logits.shape[0]
        ignored = labels == ignore_index
        return self._reduce(
            row_losses, _kept_weight(xp, labels, ignored, weight), reduction, logits.dtype
        )

    def backward(self, grad):
        # the kernel's gradient is that of the mean over all rows: scale by rows·dOutput/dL_b
        return self._scaled(grad, self.rows) * self.dlogits, None


class NLLLoss(_RowLoss):
    def forward(self, log_probs, labels, weight, ignore_index, reduction, label_range):
        xp = self.device.xp
        rows, classes = log_probs.shape
        ignored = labels == ignore_index
        self.labels = xp.where(ignored, 0, labels)
        _check_label_range("nll_loss", self.device, self.labels, classes, label_range)
        kept = (~ignored).astype(log_probs.dtype)
        self.coefficients = kept if weight is None else kept * weight[self.labels]
        self.shape = log_probs.shape
        row_losses = -log_probs[xp.arange(rows), self.labels] * self.coefficients
        return self._reduce(
            row_losses, _kept_weight(xp, labels, ignored, weight), reduction, log_probs.dtype
        )

    def backward(self, grad):
        xp = self.device.xp
        dlog_probs = xp.zeros(self.shape, dtype=grad.dtype)
        rows = xp.arange(self.shape[0])
        dlog_probs[rows, self.labels] = -self.coefficients * self._scaled(grad).reshape(-1)
        return dlog_probs, None


def _check_label_range(
    op: str,
    device: Any,
    labels: Any,
    classes: int,
    recorded: tuple[int, int] | None,
    ignore_index: int | None = None,
) -> tuple[int, int] | None:
    """The labels' (lowest, highest), after an IndexError unless every label lies in
    [0, classes): proven by the ``recorded`` range when it lies inside, else read from the device
    (labels equal to ``ignore_index`` counted as 0). None for no labels."""
    if labels.size == 0:
        return None
    if recorded is not None and 0 <= recorded[0] <= recorded[1] < classes:
        return recorded
    if ignore_index is not None:  # only on this path: a proven range costs no pass over labels
        labels = device.xp.where(labels == ignore_index, 0, labels)
    lowest, highest = device.to_host(device.xp.stack((labels.min(), labels.max()))).tolist()
    if lowest < 0 or highest >= classes:
        bad = lowest if lowest < 0 else highest
        raise IndexError(
            f"{op}: target {bad} is out of bounds: outside [0, {classes}) for input with "
            f"C={classes} classes"
        )
    return lowest, highest


def _class_weight(op: str, weight: Tensor | None, input: Tensor) -> Any:
    """The class weights as an array of the input's dtype and device, checked (C,)."""
    if weight is None:
        return None
    weight = target_array(op, weight, input, "weight")
    classes = input.shape[1] if input.ndim > 1 else input.shape[0]
    if weight.shape != (classes,):
        raise ValueError(
            f"{op}: weight should be defined for all {classes} classes, got weight of shape "
            f"{tuple(weight.shape)}"
        )
    return weight.astype(input.dtype, copy=False)


def _as_rows(op: str, input: Tensor, labels: Any) -> tuple[Tensor, Any, tuple]:
    """(rows (R, C) with the class axis last, labels (R,), the shape of unreduced losses)."""
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"{op}: a class-index target must hold integers, got {labels.dtype} (a float "
            f"target is a probability target only for cross_entropy, of the input's shape)"
        )
    if input.ndim == 2 and labels.shape == input.shape[:1]:  # the common case, first
        return input, labels, input.shape[:1]
    if input.ndim == 0:
        raise ValueError(f"{op}: input must have a class axis, got a 0-d tensor")
    if input.ndim == 1:
        if labels.ndim != 0:
            raise ValueError(
                f"{op}: an unbatched input of shape {input.shape} needs a 0-d target, got "
                f"shape {tuple(labels.shape)}"
            )
        return input.reshape(1, input.shape[0]), labels.reshape(1), ()
    expected = input.shape[:1] + input.shape[2:]
    if labels.ndim == 0 or labels.shape[0] != input.shape[0]:
        batch = labels.shape[0] if labels.ndim else "none"
        raise ValueError(
            f"{op}: expected input batch_size ({input.shape[0]}) to match target batch_size "
            f"({batch}): target of shape {tuple(labels.shape)} for input of shape {input.shape}"
        )
    if tuple(labels.shape) != expected:
        raise ValueError(
            f"{op}: expected target of shape {expected} for input of shape {input.shape}, got "
            f"{tuple(labels.shape)}"
        )
    class_last = input.permute(0, *range(2, input.ndim), 1)
    return class_last.reshape(-1, input.shape[1]), labels.reshape(-1), expected


def nll_loss(
    input: Tensor,
    target: Any,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Negative log-likelihood of log-probabilities ``input`` at the class indices ``target``."""
    reduction = legacy_reduction("nll_loss", reduction, size_average, reduce)
    rows, labels, shape = _as_rows("nll_loss", input, target_array("nll_loss", target, input))
    loss = NLLLoss.apply(
        rows,
        labels=labels,
        weight=_class_weight("nll_loss", weight, input),
        ignore_index=int(ignore_index),
        reduction=reduction,
        label_range=target._value_range if isinstance(target, Tensor) else None,
    )
    return loss.reshape(shape) if reduction == "none" else loss


def cross_entropy(
    input: Tensor,
    target: Any,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy of logits ``input`` against class indices (on the fused kernel) or
    class probabilities of the input's shape (see the module docstring)."""
    reduction = legacy_reduction("cross_entropy", reduction, size_average, reduce)
    label_smoothing = float(label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(
            f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {label_smoothing}"
        )
    labels = target_array("cross_entropy", target, input)
    class_weight = _class_weight("cross_entropy", weight, input)
    if labels.dtype.kind == "f" and tuple(labels.shape) == input.shape:
        if ignore_index >= 0:
            raise ValueError(
                "cross_entropy: ignore_index is not supported for a probability target"
            )
        return _probability_cross_entropy(input, target, class_weight, reduction, label_smoothing)
    rows, labels, shape = _as_rows("cross_entropy", input, labels)
    if rows.shape[0] == 0:  # the kernel needs rows: an empty batch takes the composed path
        return nll_loss(
            log_softmax(input, 1 if input.ndim > 1 else 0),
            target,
            weight,
            ignore_index=ignore_index,
            reduction=reduction,
        )
    loss = CrossEntropy.apply(
        rows,
        labels=labels,
        weight=class_weight,
        ignore_index=int(ignore_index),
        label_smoothing=label_smoothing,
        reduction=reduction,
        label_range=target._value_range if isinstance(target, Tensor) else None,
    )
    return loss.reshape(shape) if reduction == "none" else loss


def _probability_cross_entropy(
    input: Tensor, target: Any, weight: Any, reduction: str, label_smoothing: float
) -> Tensor:
    """−Σ_c w_c·((1 − ε)·t_c + ε/C)·log softmax(x)_c over the class axis, composed of Tensor ops
    (the target gets its gradient too, as PyTorch)."""
    class_axis = 1 if input.ndim > 1 else 0
    classes = input.shape[class_axis]
    if not isinstance(target, Tensor):
        target = Tensor._wrap(target_array("cross_entropy", target, input), input.device)
    target = target.to(dtype=input.dtype)
    if label_smoothing:
        target = target * (1.0 - label_smoothing) + label_smoothing / classes
    weighted = log_softmax(input, class_axis) * target
    if weight is not None:
        broadcast = (classes,) + (1,) * (input.ndim - class_axis - 1)
        weighted = weighted * Tensor._wrap(weight.reshape(broadcast), input.device)
    return reduce_loss(-weighted.sum(axis=class_axis), reduction)
