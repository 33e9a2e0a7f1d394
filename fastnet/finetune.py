"""Fine-tuning: freeze and unfreeze, new heads, per-group learning rates, LoRA adapters.

    model = fastnet.models.mnist_cnn()
    model.load_state_dict(fastnet.load("mnist_cnn.safetensors"), strict=False)
    fastnet.finetune.replace_head(model, num_classes=10)
    fastnet.finetune.freeze(model, "features.*")
    opt = fastnet.optim.AdamW(
        fastnet.finetune.param_groups(model, {"features.*": 1e-4, "head.*": 1e-3})
    )
    fastnet.finetune.add_lora(model, targets=["Linear"], rank=4, alpha=8)

Patterns are shell-style globs over parameter names (``features.*``, ``*.bias``); a pattern
that names a module (``features.0``) also covers that module's parameters.

LoRA (low-rank adaptation), on Linear layers, on attention's packed input projection and on
Conv2d layers, replaces a frozen Linear's ``y = x·Wᵀ + b`` with
``y = x·Wᵀ + b + (α/r)·dropout(x)·Aᵀ·Bᵀ``, A (r, in) and B (out, r) trainable, B starting at zero
so the adapted model starts equal to the original; a Conv2d's weight (out, in/groups, kh, kw)
gets (α/r)·B·A with A (r, in/groups·kh·kw), reshaped to the weight's shape (loralib's ConvLoRA).
``merge`` folds ``(α/r)·B·A`` into W (the model then runs at the original cost); ``unmerge``
takes it out again. ``save_lora`` writes the adapters alone; ``save_finetuned`` writes a
fine-tuned model (adapters merged) and, with LoRA, its adapter file.

:func:`prepare` sets a model up for one fine-tuning mode (:data:`MODES`); the experiment that
runs them over label budgets, next to training from scratch, is in ``fastnet.finetune_table``.
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import checkpoint
from .functional import conv2d as _conv2d
from .functional import dropout as _dropout
from .functional import linear as _linear
from .nn import Conv2d, Identity, Linear, Module, MultiheadAttention, Parameter, init
from .nn.summary import register_flops


# ===================================================================== selecting parameters
def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or name.startswith(pattern + ".")


def _select(model: Module, targets: Sequence[Any]) -> list[tuple[str, Parameter]]:
    """Parameters named by glob patterns, module prefixes, or Module objects."""
    if not targets:
        raise ValueError("name at least one pattern or module")
    selected: dict[int, tuple[str, Parameter]] = {}
    for target in targets:
        if isinstance(target, Module):
            owned = {id(p) for p in target.parameters()}
            found = [(n, p) for n, p in model.named_parameters() if id(p) in owned]
        else:
            found = [(n, p) for n, p in model.named_parameters() if _matches(n, str(target))]
        if not found:
            raise ValueError(
                f"{target!r} matches no parameter of {type(model).__name__}; names look like "
                f"{[n for n, _ in model.named_parameters()][:4]}"
            )
        selected.update((id(p), (n, p)) for n, p in found)
    return list(selected.values())


def freeze(model: Module, *targets: Any) -> list[str]:
    """Stop gradients for the named parameters (all of them when no target is given).

    Frozen parameters get no gradient, so optimizers give them no state and never move them."""
    chosen = _select(model, targets) if targets else list(model.named_parameters())
    for _, parameter in chosen:
        parameter.requires_grad = False
        parameter.grad = None
    return [name for name, _ in chosen]


def unfreeze(model: Module, *targets: Any) -> list[str]:
    chosen = _select(model, targets) if targets else list(model.named_parameters())
    for _, parameter in chosen:
        parameter.requires_grad = True
    return [name for name, _ in chosen]


def freeze_batchnorm_statistics(model: Module) -> int:
    """Keep every BatchNorm layer's running statistics fixed while the model trains.

    Returns how many layers were frozen. Their ``freeze_statistics`` flag makes them normalise
    with the running statistics and leave them untouched even in train mode."""
    count = 0
    for module in model.modules():
        if hasattr(module, "running_mean") and hasattr(module, "freeze_statistics"):
            module.freeze_statistics = True
            count += 1
    return count


# ===================================================================== heads and groups
def _head_layer(model: Module) -> tuple[Module, str, str, Linear]:
    """Where the last Linear of ``model.head`` (or the head itself) sits: its parent module, its
    name there, its full name in ``model`` (``head.3``, ``head``) and the layer."""
    if "head" not in model._modules:
        raise ValueError(f"{type(model).__name__} has no 'head' submodule to replace")
    linears = [(n, m) for n, m in model.head.named_modules() if isinstance(m, Linear)]
    if not linears:
        raise ValueError("the model's head holds no Linear layer")
    path, layer = linears[-1]
    if not path:
        return model, "head", "head", layer
    *prefix, name = path.split(".")
    return model.head.get_submodule(".".join(prefix)), name, f"head.{path}", layer


def head_layer_name(model: Module) -> str:
    """The name of the head's last Linear in ``model`` (``head.3`` for the MNIST CNN, ``head``
    where the head is one Linear): the layer every fine-tuning mode replaces."""
    return _head_layer(model)[2]


def replace_head(model: Module, num_classes: int) -> Linear:
    """Swap the last Linear of ``model.head`` (or the head itself) for a freshly initialised one
    with ``num_classes`` outputs, on the model's device. Returns the new layer."""
    parent, name, _, old = _head_layer(model)
    new = Linear(old.in_features, num_classes, bias=old.bias is not None)
    if old.weight.device is not None:
        new.to(old.weight.device)
    parent._modules[name] = new
    return new


def drop_head(model: Module) -> Module:
    """``model`` with the last Linear of its head replaced by Identity, in place: it then maps
    an input to what a new last layer reads (the MNIST CNN: 128 features after the hidden
    Linear and its ReLU), and its state dict holds every name but the last layer's, as a
    pretrained encoder file does. Returns ``model``."""
    parent, name, _, _ = _head_layer(model)
    parent._modules[name] = Identity()
    return model


def param_groups(
    model: Module,
    learning_rates: dict[str, float],
    default_lr: float | None = None,
    weight_decay: float | None = None,
) -> list[dict]:
    """Optimizer parameter groups: each trainable parameter joins the group of the first pattern
    that matches its name; unmatched ones join a ``default_lr`` group, or raise if there is none."""
    groups = {pattern: [] for pattern in learning_rates}
    rest = []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        pattern = next((p for p in learning_rates if _matches(name, p)), None)
        (groups[pattern] if pattern is not None else rest).append(parameter)
    if rest and default_lr is None:
        raise ValueError(
            f"{len(rest)} trainable parameters match none of {list(learning_rates)}; "
            f"pass default_lr or add a pattern"
        )
    extra = {} if weight_decay is None else {"weight_decay": weight_decay}
    result = [
        {"params": ps, "lr": learning_rates[p], "name": p, **extra}
        for p, ps in groups.items()
        if ps
    ]
    if rest:
        result.append({"params": rest, "lr": default_lr, "name": "default", **extra})
    return result


def layerwise_lr_decay(model: Module, base_lr: float, decay: float, depth: int = 2) -> list[dict]:
    """Groups whose learning rate shrinks by ``decay`` per block from the output backwards.

    A block is the first ``depth`` components of a parameter name (``features.3``, ``head.1``),
    in the order the model registers them; the last block trains at ``base_lr``."""
    blocks: dict[str, list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            blocks.setdefault(".".join(name.split(".")[:depth]), []).append(parameter)
    count = len(blocks)
    return [
        {"params": ps, "lr": base_lr * decay ** (count - 1 - i), "name": block}
        for i, (block, ps) in enumerate(blocks.items())
    ]


def summary(model: Module) -> str:
    """A table of trainable and frozen parameter counts per top-level module, with totals."""
    rows: dict[str, list[int]] = {}
    for name, parameter in model.named_parameters():
        block = name.split(".")[0]
        counts = rows.setdefault(block, [0, 0])
        counts[0 if parameter.requires_grad else 1] += parameter.numel()
    trainable, frozen = sum(r[0] for r in rows.values()), sum(r[1] for r in rows.values())
    width = max([len(b) for b in rows] + [6])
    lines = [f"{'module':<{width}}  {'trainable':>12}  {'frozen':>12}"]
    lines += [f"{block:<{width}}  {t:>12,}  {f:>12,}" for block, (t, f) in rows.items()]
    share = 100 * trainable / max(trainable + frozen, 1)
    lines.append(f"{'total':<{width}}  {trainable:>12,}  {frozen:>12,}   ({share:.2f}% trainable)")
    return "\n".join(lines)


# ===================================================================== LoRA
class LowRankAdapter:
    """What every LoRA layer shares: the adapter parameters lora_A (r, in) and lora_B (out, r)
    for a frozen weight ``adapted()`` (out, in) (a convolution's (out, in/groups, kh, kw) counts
    in/groups·kh·kw inputs), and folding (α/r)·B·A into that weight and back out."""

    def _attach_adapter(self, weight: Parameter, rank: int, alpha: float) -> None:
        if rank < 1:
            raise ValueError(f"LoRA rank must be at least 1, got {rank}")
        self.rank, self.alpha, self.scaling, self.merged = rank, alpha, alpha / rank, False
        weight.requires_grad = False
        out_features, in_features = weight.shape[0], math.prod(weight.shape[1:])
        self.lora_A = Parameter(np.empty((rank, in_features), np.float32))
        self.lora_B = Parameter(
            np.zeros((out_features, rank), np.float32)
        )  # zero: starts as the base
        init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        for parameter in (
            self.lora_A,
            self.lora_B,
        ):  # initialised on the CPU, moved to the weight's device
            parameter.data = weight.device.upload(parameter.data)
            parameter.device = weight.device

    def adapted(self) -> Parameter:  # pragma: no cover - abstract
        raise NotImplementedError

    def _delta(self) -> Any:
        weight = self.adapted()
        return (self.lora_B.data @ self.lora_A.data).reshape(weight.shape) * weight.dtype.type(
            self.scaling
        )

    def merge(self) -> None:
        """Fold the adapter into the weight: the forward pass then costs what the base layer's
        does."""
        if not self.merged:
            self.adapted().data = self.adapted().data + self._delta()
            self.merged = True

    def unmerge(self) -> None:
        if self.merged:
            self.adapted().data = self.adapted().data - self._delta()
            self.merged = False


class LoRALinear(LowRankAdapter, Module):
    """A frozen Linear plus a trainable low-rank update (α/r)·B·A; see the module docstring.

    Parameter names: ``weight`` and ``bias`` stay those of the wrapped layer (so the base model's
    state dict still loads), the adapter adds ``lora_A`` (r, in) and ``lora_B`` (out, r)."""

    def __init__(
        self, base: Linear, rank: int = 4, alpha: float = 8.0, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.in_features, self.out_features, self.dropout = (
            base.in_features,
            base.out_features,
            dropout,
        )
        self.weight, self.bias = base.weight, base.bias
        if self.bias is not None:
            self.bias.requires_grad = False
        self._attach_adapter(self.weight, rank, alpha)

    def adapted(self) -> Parameter:
        return self.weight

    def forward(self, x):
        out = _linear(x, self.weight, self.bias)
        if self.merged:
            return out
        adapted = _linear(
            _linear(_dropout(x, self.dropout, self.training), self.lora_A), self.lora_B
        )
        return out + adapted * self.scaling

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"rank={self.rank}, alpha={self.alpha}"
        )


def _lora_linear_flops(layer: LoRALinear, args: tuple, kwargs: dict, out: Any) -> int:
    """model.summary()'s count for a LoRALinear: the base GEMM (+ bias), and unmerged, the
    two low-rank GEMMs and the scaled add."""
    rows = out.numel() // layer.out_features
    flops = 2 * rows * layer.in_features * layer.out_features
    flops += out.numel() if layer.bias is not None else 0
    if not layer.merged:
        flops += 2 * rows * layer.rank * (layer.in_features + layer.out_features) + out.numel()
    return flops


register_flops(LoRALinear, _lora_linear_flops)


class LoRAMultiheadAttention(LowRankAdapter, MultiheadAttention):
    """A MultiheadAttention whose packed input projection (query, key, value: ``in_proj_weight``,
    (3E, E)) carries a low-rank update (α/r)·B·A, A (r, E) and B (3E, r). Made in place from an
    existing layer by :func:`add_lora` (``MultiheadAttention`` as a target), so every parameter
    keeps its PyTorch name; the output projection is a Linear and is adapted as one."""

    def adapted(self) -> Parameter:
        return self.in_proj_weight

    def _project(self, x, part):
        projected = super()._project(x, part)
        if self.merged:
            return projected
        rows = slice(part * self.embed_dim, (part + 1) * self.embed_dim)
        update = _linear(_linear(x, self.lora_A), self.lora_B[rows]) * self.scaling
        return projected + update.reshape(
            projected.shape[0], projected.shape[2], self.num_heads, self.head_dim
        ).transpose(1, 2)


class LoRAConv2d(LowRankAdapter, Conv2d):
    """A Conv2d (zero padding) whose weight carries a low-rank update (α/r)·B·A, A (r,
    in/groups·kh·kw) and B (out, r), reshaped to the weight's shape: the convolution runs once,
    with the sum. Made in place from an existing layer by :func:`add_lora` (``Conv2d`` as a
    target), so ``weight`` and ``bias`` keep their names."""

    def adapted(self) -> Parameter:
        return self.weight

    def forward(self, input):
        if self.merged:
            return super().forward(input)
        update = (self.lora_B @ self.lora_A).reshape(self.weight.shape) * self.scaling
        return _conv2d(
            input,
            self.weight + update,
            self.bias,
            self.stride,
            self.padding,
            self.dilation,
            self.groups,
        )


def _adaptable_weight(module: Module) -> str | None:
    """The name of the weight LoRA adapts in ``module``, or None if it cannot adapt it (again)."""
    if isinstance(module, LowRankAdapter):
        return None
    if isinstance(module, MultiheadAttention):
        return "in_proj_weight"
    if isinstance(module, Linear) or (
        isinstance(module, Conv2d) and module.padding_mode == "zeros"
    ):
        return "weight"
    return None


def add_lora(
    model: Module,
    targets: Iterable[str] = ("Linear",),
    rank: int = 4,
    alpha: float = 8.0,
    dropout: float = 0.0,
    trainable: Iterable[str] = (),
) -> list[str]:
    """Adapt the layers named by ``targets`` (class names ``"Linear"`` / ``"MultiheadAttention"``
    / ``"Conv2d"``, or glob patterns over module names): Linears are wrapped in
    :class:`LoRALinear`, attention layers get an adapter on their packed input projection
    (:class:`LoRAMultiheadAttention`), Conv2d layers with zero padding on their weight
    (:class:`LoRAConv2d`).
    Everything else is frozen except the parameters matched by ``trainable`` (e.g. a new head).
    Returns the adapted module names."""
    targets = list(targets)
    wrapped = []
    for name, module in list(model.named_modules()):
        weight_name = _adaptable_weight(module)
        if weight_name is None or not name:
            continue
        if not any(t == type(module).__name__ or fnmatch.fnmatchcase(name, t) for t in targets):
            continue
        if isinstance(module, (MultiheadAttention, Conv2d)):  # same object, same parameter names
            module.__class__ = (
                LoRAMultiheadAttention if isinstance(module, MultiheadAttention) else LoRAConv2d
            )
            module._attach_adapter(getattr(module, weight_name), rank, alpha)
        else:
            *prefix, leaf = name.split(".")
            parent = model.get_submodule(".".join(prefix))
            parent._modules[leaf] = LoRALinear(module, rank, alpha, dropout)
        wrapped.append(name)
    if not wrapped:
        raise ValueError(
            f"add_lora: no Linear, MultiheadAttention or Conv2d layer matches {targets}"
        )
    for parameter_name, parameter in model.named_parameters():
        keep = _is_adapter(parameter_name) or any(_matches(parameter_name, t) for t in trainable)
        parameter.requires_grad = keep
    return wrapped


def _lora_layers(model: Module) -> list[Any]:
    return [m for m in model.modules() if isinstance(m, LowRankAdapter)]


def merge_lora(model: Module) -> None:
    for layer in _lora_layers(model):
        layer.merge()


def unmerge_lora(model: Module) -> None:
    for layer in _lora_layers(model):
        layer.unmerge()


def lora_state_dict(model: Module, include: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """Only the adapter weights (plus parameters matching ``include``, e.g. a new head)."""
    include = list(include)
    return {
        name: value
        for name, value in model.state_dict().items()
        if _is_adapter(name) or any(_matches(name, p) for p in include)
    }


def save_lora(model: Module, path: str | os.PathLike, include: Iterable[str] = ()) -> Any:
    """Write only the adapters (and ``include``) as a small safetensors file."""
    return checkpoint.save(lora_state_dict(model, include), path)


def _is_adapter(name: str) -> bool:
    return name.rsplit(".", 1)[-1].startswith("lora_")


def merged_state_dict(model: Module) -> dict[str, np.ndarray]:
    """The state dict of the plain architecture: each LoRA layer's update (α/r)·B·A added to its
    weight, the adapters left out. The model itself is not touched (merging and unmerging in
    place would not give the float32 weights back bit for bit)."""
    state = {n: v for n, v in model.state_dict().items() if not _is_adapter(n)}
    for prefix, layer in model.named_modules():
        if isinstance(layer, LowRankAdapter) and not layer.merged:
            name = next(n for n, p in layer._parameters.items() if p is layer.adapted())
            key = f"{prefix}.{name}" if prefix else name
            state[key] = state[key] + layer.lora_B.device.to_host(layer._delta())
    return state


def save_finetuned(model: Module, folder: str | os.PathLike) -> list[Path]:
    """Save a fine-tuned model into ``folder``: ``model.safetensors``, the plain architecture's
    state dict (:func:`merged_state_dict`: it loads without LoRA); and for a model with LoRA
    adapters, ``adapter.safetensors``: the adapters and the other trained parameters (the new
    head), to load after :func:`add_lora` on the base model."""
    folder = Path(folder)
    written = [checkpoint.save(merged_state_dict(model), folder / "model.safetensors")]
    if _lora_layers(model):
        trained = [n for n, p in model.named_parameters() if p.requires_grad and not _is_adapter(n)]
        written.append(save_lora(model, folder / "adapter.safetensors", include=trained))
    return written


# ===================================================================== fine-tuning modes
MODES = ("linear", "full", "lora", "scratch")
MODE_ALIASES = {"head": "linear"}  # ``head`` was the name of ``linear`` before issue 17


def parse_modes(text: str) -> tuple[str, ...]:
    """The modes of a comma-separated list (``linear,full,lora``), aliases resolved, in the order
    given; ``all`` alone is every mode. ValueError for an unknown, repeated or empty entry."""
    names = [name.strip() for name in text.split(",")]
    if names == ["all"]:
        return MODES
    modes: list[str] = []
    for name in names:
        mode = MODE_ALIASES.get(name, name)
        if mode not in MODES:
            raise ValueError(
                f"unknown mode {name!r} in {text!r}: choose from {', '.join(MODES)} "
                f"(or all alone; head means linear)"
            )
        if mode in modes:
            raise ValueError(f"mode {mode!r} is given twice in {text!r}")
        modes.append(mode)
    return tuple(modes)


# How the label-budget experiment (fastnet.finetune_table) trains a mode on pretrained weights,
# as phases of (mode, share of the epochs, learning-rate factor). full and lora start as linear
# probing (LP-FT, Kumar et al. 2022): the new head first learns on the frozen pretrained part,
# so the pretrained part's first updates do not follow the gradient of a random head; full then
# trains everything at a hundredth of the learning rate. That suits an encoder pretrained on the
# same images; a model from another task must change more (`fastnet finetune
# --pretrained-lr-factor 1`). Re-measure: fastnet finetune --from
# runs/mnist-simclr/encoder.safetensors --labels-per-class 10 --mode all --epochs 60 --lr 3e-3
PHASES: dict[str, tuple[tuple[str, float, float], ...]] = {
    "full": (("linear", 0.5, 1.0), ("full", 0.5, 0.01)),
    "lora": (("linear", 0.5, 1.0), ("lora", 0.5, 0.1)),
}


def prepare(
    model: Module,
    mode: str,
    num_classes: int,
    *,
    lr: float,
    rank: int = 4,
    alpha: float = 8.0,
    pretrained: Iterable[str] | None = None,
    new_head: bool = True,
) -> list[dict]:
    """Set ``model`` up for one fine-tuning mode and return its optimizer parameter groups.

    ``pretrained`` names the state-dict entries that hold pretrained weights (default: all of
    them, a whole model was loaded); the rest, such as the head an encoder file lacks, is new.
    Every mode replaces the last Linear by a new one (``num_classes`` outputs).

    linear (alias head): the pretrained part frozen, BatchNorm statistics included (the probe
    of a fixed encoder); the new parts train. full: everything trains at ``lr``, BatchNorm
    statistics update. lora: LoRA adapters on every
    pretrained Linear, Conv2d and attention layer, the new parts trainable, the rest frozen.
    scratch: the model as built (the caller loads no weights) with a new last Linear, all
    of it trains.

    With ``new_head=False`` the last Linear stays as it is: a later phase of a model already
    prepared (see :data:`PHASES`; a linear phase's frozen parts thaw for full).
    """
    mode = MODE_ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ValueError(f"unknown fine-tuning mode {mode!r}; choose from {', '.join(MODES)}")
    if new_head:
        replace_head(model, num_classes)
    if mode == "scratch":
        return [{"params": list(model.parameters()), "lr": lr}]
    head_name = head_layer_name(model)
    loaded = set(model.state_dict() if pretrained is None else pretrained)
    loaded = {name for name in loaded if not _matches(name, head_name)}
    new = [n for n, _ in model.named_parameters() if n not in loaded]
    if mode == "linear":
        freeze(model)
        unfreeze(model, *new)
        for name, module in model.named_modules():
            if f"{name}.running_mean" in loaded and hasattr(module, "freeze_statistics"):
                module.freeze_statistics = True
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    if mode == "full":
        unfreeze(model)
        for module in model.modules():
            if hasattr(module, "freeze_statistics"):
                module.freeze_statistics = False
        return param_groups(model, {f"{head_name}.*": lr}, default_lr=lr)
    targets = [
        name
        for name, module in model.named_modules()
        if _adaptable_weight(module) is not None and f"{name}.{_adaptable_weight(module)}" in loaded
    ]
    if not targets:
        raise ValueError(
            "lora mode needs a pretrained Linear, Conv2d or attention layer besides the head "
            "to adapt"
        )
    add_lora(model, targets=targets, rank=rank, alpha=alpha, trainable=new)
    return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
