"""Pruning: global magnitude pruning held by masks, and structured channel pruning.

**Global magnitude pruning.** The prunable weights W_1 … W_L (the ``weight`` of every Linear and
Conv2d by default, never a bias) hold N = Σ_l |W_l| numbers. Pruning to sparsity s removes the
k = round(s·N) of smallest magnitude over all layers together (one threshold, so a layer loses
more where its weights are small): sort the |w| of every layer, concatenated in module order, with
a stable sort, so ties go to the earlier layer and the lower flat index. A mask M_l (1 keep,
0 pruned; the weight's shape, dtype and device) records the choice. Masks only grow: positions
already pruned rank below every weight, so a later call prunes them first, and a smaller s than
already reached keeps the masks as they are.

**Held at zero.** :class:`Pruner` multiplies each weight by its mask (W ← M ⊙ W), zeroes the
optimizer's per-parameter state at the pruned positions (SGD's ``momentum_buffer``, Adam's
``exp_avg`` and ``exp_avg_sq``: every state array of the weight's shape), and from then on

* masks every accumulated gradient (a post-accumulate-grad hook: g ← M ⊙ g), so gradient norms
  and clipping see the pruned model's gradient and the state stays zero where it was zeroed;
* multiplies the weights by their masks again after every optimizer step (a step-post hook), so
  nothing the update adds (weight decay, momentum, state loaded from elsewhere) revives a pruned
  weight: pruned weights are exactly 0.0 after every step.

**Gradual schedule** (Zhu & Gupta, 2017, "To prune, or not to prune"): from step t₀ over n steps,
s_t = s_f + (s_i − s_f)·(1 − (t − t₀)/n)³, clipped to [s_i, s_f]: fast pruning first, while the
network has redundant weights, slower towards the end; fine-tuning continues between calls.

**Structured channel pruning** (:func:`prune_channels`) removes whole output channels of the
convolutions of a sequential CNN (Conv2d [→ BatchNorm2d] → activation → pooling … → Flatten →
Linear …, nested Sequentials and ``Classifier(features, head)`` included). Output channel c of a
Conv2d scores ‖W[c]‖₁ (its filter's L1 norm); the top max(1, C − round(f·C)) are kept (ties to the
lower index), in their original order. Every Conv2d whose output reaches a consumer is pruned,
the last one too: its consumer is the next Conv2d (input channels W'[:, kept]) or the first Linear
after Flatten, whose input j = c·HW + p (channel c, spatial position p of HW = in_features / C)
keeps the columns of the kept channels. A Conv2d whose output is the model's output has no
consumer and keeps its channels. The layers after a Conv2d, up to its consumer or the model's
end, must act per channel and map 0 to 0 (BatchNorm2d, ReLU-like activations, pooling, dropout;
then Flatten(1, -1) and elementwise layers before the Linear); anything else is refused, naming
the layer. Layers are matched by exact type: a subclass may compute something else.

**The masked large model** (:func:`mask_channels`): the same pruning expressed as zeros in the
large model. A removed channel's filter and bias are zeroed, so the convolution outputs exactly 0
there; a BatchNorm2d on it gets weight γ = 0, bias β = 0, running mean 0 and running variance 1,
so it outputs γ·x̂ + β = 0 in evaluation mode (and with batch statistics, where x̂ = 0 anyway); the
activations and pools between map 0 to 0, so the consumer sees an exact zero in that channel and
the small model, which drops the channel, computes the same function (to rounding: the sums run in
a different order).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from . import nn
from .autograd import RemovableHandle
from .models.base import ChainLayer, chain_layers, copy_model
from .optim.optimizer import Optimizer
from .tensor import Tensor

__all__ = [
    "PRUNABLE",
    "Sparsity",
    "magnitude_masks",
    "sparsity",
    "gradual_sparsity",
    "Pruner",
    "prune_channels",
    "mask_channels",
]

PRUNABLE: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)

# Layers that may stand between a pruned Conv2d and its consumer: each acts on every channel alone
# and maps an all-zero channel to an all-zero channel (exact types: a subclass may not).
_CHANNELWISE = {
    nn.BatchNorm2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.Tanh,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
}
# Layers allowed between Flatten and the Linear that consumes the flattened channels: elementwise.
_ELEMENTWISE = _CHANNELWISE - {
    nn.BatchNorm2d,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
}


class Sparsity(NamedTuple):
    """Fractions of exactly-zero weights: over all prunable weights, and per weight by name."""

    overall: float
    layers: dict[str, float]


def _prunable(model: nn.Module, kinds: tuple[type[nn.Module], ...]) -> list[tuple[str, Tensor]]:
    """(name, weight) of every layer of ``kinds`` in module order, each weight once."""
    found: dict[int, tuple[str, Tensor]] = {}
    for name, module in model.named_modules():
        weight = module._parameters.get("weight") if isinstance(module, kinds) else None
        if weight is not None:
            found.setdefault(id(weight), (f"{name}.weight" if name else "weight", weight))
    if not found:
        kind_names = ", ".join(kind.__name__ for kind in kinds)
        raise ValueError(f"the model has no weight to prune (no {kind_names} layer)")
    return list(found.values())


def _check_fraction(value: float, name: str, top: float = 1.0) -> None:
    if not 0.0 <= value <= top:
        raise ValueError(f"{name} must be in [0, {top}], got {value}")


def magnitude_masks(
    model: nn.Module,
    sparsity: float,
    kinds: tuple[type[nn.Module], ...] = PRUNABLE,
    masks: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Masks (1 keep, 0 pruned) by weight name that prune the round(sparsity·N) smallest |w| of
    all prunable weights together (module docstring); ``masks``, earlier masks, stay pruned."""
    _check_fraction(sparsity, "sparsity")
    weights = _prunable(model, kinds)
    masks = masks or {}
    scores = []
    for name, weight in weights:
        score = np.abs(weight.device.to_host(weight.data).astype(np.float64)).reshape(-1)
        if name in masks:
            # below every magnitude: already pruned positions are the first to go again
            score[weight.device.to_host(masks[name]).reshape(-1) == 0] = -1.0
        scores.append(score)
    flat = np.concatenate(scores)
    count = max(round(sparsity * flat.size), int(np.count_nonzero(flat < 0)))
    keep = np.ones(flat.size, bool)
    keep[np.argsort(flat, kind="stable")[:count]] = False
    result = {}
    start = 0
    for name, weight in weights:
        size = int(weight.data.size)
        host = keep[start : start + size].reshape(weight.shape).astype(weight.dtype)
        result[name] = weight.device.upload(host)
        start += size
    return result


def sparsity(model: nn.Module, kinds: tuple[type[nn.Module], ...] = PRUNABLE) -> Sparsity:
    """The fractions of the prunable weights that are exactly zero, overall and per weight."""
    zeros, total, layers = 0, 0, {}
    for name, weight in _prunable(model, kinds):
        layer_zeros = int(np.count_nonzero(weight.device.to_host(weight.data) == 0))
        layers[name] = layer_zeros / weight.data.size
        zeros, total = zeros + layer_zeros, total + int(weight.data.size)
    return Sparsity(zeros / total, layers)


def gradual_sparsity(
    step: int, final: float, total_steps: int, initial: float = 0.0, start: int = 0
) -> float:
    """Zhu & Gupta's cubic schedule: s_t = s_f + (s_i − s_f)(1 − (t − t₀)/n)³ in [s_i, s_f]."""
    _check_fraction(final, "final sparsity")
    _check_fraction(initial, "initial sparsity", final)
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    progress = min(max((step - start) / total_steps, 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


class Pruner:
    """Global magnitude pruning of ``model``'s prunable weights, held at exactly zero through
    ``optimizer``'s steps once :meth:`prune` has run (module docstring)."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer | None = None,
        kinds: tuple[type[nn.Module], ...] = PRUNABLE,
    ) -> None:
        self.model, self.optimizer, self.kinds = model, optimizer, kinds
        self.weights = _prunable(model, kinds)
        self.masks: dict[str, Any] = {}
        self._handles: list[RemovableHandle] = []

    def prune(self, sparsity: float) -> Sparsity:
        """Grow the masks to ``sparsity``, zero the pruned weights, their gradients and optimizer
        state, and hold them at zero from now on; returns the sparsity reached."""
        self.masks = magnitude_masks(self.model, sparsity, self.kinds, self.masks)
        for name, weight in self.weights:
            mask = self.masks[name]
            xp = weight.device.xp
            xp.multiply(weight.data, mask, out=weight.data)  # in place: an optimizer's view
            weight._version += 1  # a graph that saved the weight is stale
            if weight.grad is not None:
                xp.multiply(weight.grad.data, mask, out=weight.grad.data)
            state = self.optimizer.state.get(id(weight), {}) if self.optimizer else {}
            for value in state.values():
                if getattr(value, "shape", None) == weight.shape:
                    xp.multiply(value, mask, out=value)
        if not self._handles:
            self._attach()
        return self.sparsity()

    def step(
        self, step_index: int, final: float, total_steps: int, initial: float = 0.0, start: int = 0
    ) -> float:
        """Prune to :func:`gradual_sparsity`'s value at ``step_index``; returns that value."""
        target = gradual_sparsity(step_index, final, total_steps, initial, start)
        self.prune(target)
        return target

    def sparsity(self) -> Sparsity:
        return sparsity(self.model, self.kinds)

    def remove(self) -> None:
        """Stop holding the pruned weights at zero (the weights keep their values)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _attach(self) -> None:
        for name, weight in self.weights:
            if weight.requires_grad:  # a frozen weight never accumulates a gradient
                hook = self._grad_hook(name)
                self._handles.append(weight.register_post_accumulate_grad_hook(hook))
        if self.optimizer is not None:
            self._handles.append(self.optimizer.register_step_post_hook(self._after_step))

    def _grad_hook(self, name: str) -> Any:
        def mask_gradient(weight: Tensor) -> None:
            # the engine stores a gradient it owns, so it may be scaled in place
            weight.device.xp.multiply(weight.grad.data, self.masks[name], out=weight.grad.data)

        return mask_gradient

    def _after_step(self, optimizer: Optimizer, args: tuple, kwargs: dict) -> None:
        for name, weight in self.weights:
            weight.device.xp.multiply(weight.data, self.masks[name], out=weight.data)


# ----------------------------------------------------------------- structured channel pruning
class _Plan(NamedTuple):
    """One prunable Conv2d: the BatchNorm2d layers on its channels and the layer consuming them
    (``spatial`` inputs per channel for a Linear after Flatten, 0 for a Conv2d)."""

    conv: int
    norms: list[int]
    consumer: int
    spatial: int


def _refuse(layer: ChainLayer, why: str) -> ValueError:
    return ValueError(f"channel pruning: layer {layer.name} ({type(layer.module).__name__}) {why}")


def _plans(layers: list[ChainLayer]) -> list[_Plan]:
    plans = []
    for index, layer in enumerate(layers):
        conv = layer.module
        if type(conv) is not nn.Conv2d:
            continue
        norms: list[int] = []
        flattened = False
        for later in range(index + 1, len(layers)):
            module = layers[later].module
            if type(module) is (nn.Linear if flattened else nn.Conv2d):  # the consumer
                for grouped in (layer, layers[later]):
                    if getattr(grouped.module, "groups", 1) != 1:
                        raise _refuse(grouped, "is grouped: only groups=1 convolutions are pruned")
                spatial, rest = divmod(getattr(module, "in_features", 0), conv.out_channels)
                if rest:
                    raise _refuse(
                        layers[later],
                        f"has {module.in_features} inputs, not a multiple of the "
                        f"{conv.out_channels} channels of {layer.name}",
                    )
                plans.append(_Plan(index, norms, later, spatial))
                break
            flattens = type(module) is nn.Flatten and not flattened
            if flattens and (module.start_dim, module.end_dim) == (1, -1):  # channel-major rows
                flattened = True
            elif type(module) not in (_ELEMENTWISE if flattened else _CHANNELWISE):
                raise _refuse(
                    layers[later],
                    f"follows {layer.name} before a layer that consumes its channels: only "
                    "per-channel layers that map 0 to 0 may (BatchNorm2d, ReLU-like "
                    "activations, pooling, dropout; Flatten(1, -1) then Linear)",
                )
            elif type(module) is nn.BatchNorm2d:
                norms.append(later)
    return plans


def _kept_channels(conv: nn.Conv2d, fraction: float) -> np.ndarray:
    """The output channels with the largest filter L1 norms, in ascending order."""
    norms = np.abs(conv.weight.device.to_host(conv.weight.data).astype(np.float64)).reshape(
        conv.out_channels, -1
    )
    count = max(1, conv.out_channels - round(fraction * conv.out_channels))
    order = np.argsort(-norms.sum(axis=1), kind="stable")  # ties: the lower index first
    return np.sort(order[:count])


def _select(tensor: Tensor | None, index: np.ndarray, axis: int) -> None:
    """Keep ``index`` along ``axis`` of ``tensor``'s data (None: nothing to do)."""
    if tensor is not None:
        where = tensor.device.upload(index)
        tensor.data = tensor.device.xp.ascontiguousarray(tensor.data.take(where, axis=axis))


def prune_channels(model: nn.Module, fraction: float) -> tuple[nn.Module, dict[str, np.ndarray]]:
    """A new, smaller model without the ``fraction`` of each prunable Conv2d's output channels of
    smallest filter L1 norm, and the kept channel indices by Conv2d name (module docstring);
    ``model`` is left untouched."""
    _check_fraction(fraction, "fraction")
    smaller = copy_model(model)
    layers = chain_layers(smaller, "channel pruning")
    kept = {}
    for plan in _plans(layers):
        conv = layers[plan.conv].module
        keep = _kept_channels(conv, fraction)
        kept[layers[plan.conv].name] = keep
        _select(conv.weight, keep, 0)
        _select(conv.bias, keep, 0)
        conv.out_channels = len(keep)
        for norm_index in plan.norms:
            norm = layers[norm_index].module
            for tensor in (norm.weight, norm.bias, norm.running_mean, norm.running_var):
                _select(tensor, keep, 0)
            norm.num_features = len(keep)
        consumer = layers[plan.consumer].module
        if plan.spatial:  # a Linear after Flatten: input c·HW + p for channel c, position p
            columns = (keep[:, None] * plan.spatial + np.arange(plan.spatial)).reshape(-1)
            _select(consumer.weight, columns, 1)
            consumer.in_features = len(columns)
        else:
            _select(consumer.weight, keep, 1)
            consumer.in_channels = len(keep)
    return smaller, kept


def mask_channels(model: nn.Module, kept: dict[str, np.ndarray]) -> nn.Module:
    """A copy of ``model`` whose channels outside ``kept`` (as :func:`prune_channels` returns it)
    output exactly zero: filter, bias and BatchNorm2d zeroed (module docstring)."""
    masked = copy_model(model)
    layers = chain_layers(masked, "channel pruning")
    by_name = {layer.name: index for index, layer in enumerate(layers)}
    plans = {layers[plan.conv].name: plan for plan in _plans(layers)}
    for name, keep in kept.items():
        if name not in plans:
            raise ValueError(f"channel pruning: {name!r} is not a prunable Conv2d of this model")
        conv = layers[by_name[name]].module
        removed = np.setdiff1d(np.arange(conv.out_channels), keep)
        norms = [layers[index].module for index in plans[name].norms]
        tensors: list[tuple[Tensor | None, float]] = [(conv.weight, 0.0), (conv.bias, 0.0)]
        for norm in norms:
            tensors += [
                (norm.weight, 0.0),
                (norm.bias, 0.0),
                (norm.running_mean, 0.0),
                (norm.running_var, 1.0),
            ]
        for tensor, value in tensors:
            if tensor is not None:
                tensor.data[tensor.device.upload(removed)] = value
    return masked
