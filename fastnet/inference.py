"""Eval-mode inference: a model's copy with every BatchNorm folded into the convolution before it.

In eval mode a BatchNorm2d is a fixed affine map per channel c, from its running statistics
μ, σ² and its affine weights γ, β:  y_c = γ_c·(x_c − μ_c)/√(σ²_c + ε) + β_c. When x is the
output of a Conv2d with weight W (OC, C/G, KH, KW) and bias b (OC,) and nothing else reads x, the
pair is one convolution with

    s_c = γ_c/√(σ²_c + ε),   W'_c = s_c·W_c,   b'_c = s_c·(b_c − μ_c) + β_c

(computed in float64, stored in float32: :func:`folded_conv_weights`, which int8 quantization
uses too). :func:`optimize_for_inference` returns such a copy (PyTorch's
``torch.nn.utils.fusion.fuse_conv_bn_eval`` applied wherever it is legal, as
``torch.jit.optimize_for_inference`` does): each folded convolution takes the pair's weights
and the BatchNorm becomes an Identity. The copy is in eval mode and its parameters require no
gradient, so its forward records no graph even outside :func:`fastnet.no_grad`. The original
model is left untouched.

Then, in every Sequential, a Conv2d or Linear followed by a ReLU (folded BatchNorms, now
Identities, in between) becomes one fused layer (:class:`~fastnet.nn.ConvReLU2d`,
:class:`~fastnet.nn.LinearReLU`: the same values in one op, the convolutions' kernels applying
the ReLU to each output plane as they write it) and the ReLU an Identity. Outside Sequentials, a
ReLU module (not in place) fuses with the Conv2d before it when an ``example`` is given and the
trace shows it legal (below), as a residual block's ``relu1(bn1(conv1(x)))`` does. A ReLU called
as a function inside a module's forward stays as it is.

Forward-only work, for any model whose weights take no gradient (this copy's always): conv2d
keeps each weight's Winograd tiles between calls (checked against the weight's bytes on every
call, so a changed weight is never served stale tiles) and works out the algorithm, the checks
and the chunking once per input shape, then calls the kernel directly (its forward-only plans:
:mod:`fastnet.functional.conv`); max pooling skips the argmax that only a backward would read.

Where a pair may be folded:

* consecutive children of a :class:`~fastnet.nn.Sequential` (the only reader of a child's output
  is the next child), found from the module tree alone;
* anywhere else (a residual block's ``bn1(conv1(x))``), only when an ``example`` input is given:
  the model runs once on it, recording which BatchNorm2d received which Conv2d's output and, from
  the autograd graph, every op that read that output; the pair folds when the BatchNorm is its
  only reader, each was called once, and the output is not the model's. A ReLU module fuses on
  the same terms: called once, the only reader of its input, which is a Conv2d's output or a
  folded pair's.

A BatchNorm without running statistics (``track_running_stats=False``) normalises with the
batch's statistics even in eval mode and is never folded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from . import nn
from .autograd import enable_grad
from .models.base import copy_model
from .tensor import Tensor

__all__ = ["folded_conv_weights", "fold_pairs", "optimize_for_inference"]


def folded_conv_weights(
    conv: nn.Conv2d, norm: nn.BatchNorm2d | None
) -> tuple[np.ndarray, np.ndarray]:
    """The float32 weight and bias of the one convolution computing ``norm(conv(x))`` in eval
    mode (``conv``'s own, with a zero bias if it has none, when ``norm`` is None)."""
    weight = conv.weight.numpy().astype(np.float64)
    channels = len(weight)
    bias = np.zeros(channels) if conv.bias is None else conv.bias.numpy().astype(np.float64)
    if norm is None:
        return weight.astype(np.float32), bias.astype(np.float32)
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError(
            "folding a BatchNorm2d into a convolution needs its running statistics "
            "(track_running_stats=True)"
        )
    if norm.num_features != channels:
        raise ValueError(
            f"cannot fold BatchNorm2d({norm.num_features}) into a convolution of {channels} "
            f"output channels"
        )
    gain = norm.weight.numpy().astype(np.float64) if norm.weight is not None else 1.0
    shift = norm.bias.numpy().astype(np.float64) if norm.bias is not None else 0.0
    variance = norm.running_var.numpy().astype(np.float64)
    scale = gain / np.sqrt(variance + norm.eps) * np.ones(channels)
    folded_bias = (bias - norm.running_mean.numpy().astype(np.float64)) * scale + shift
    folded_weight = weight * scale[:, None, None, None]
    return folded_weight.astype(np.float32), folded_bias.astype(np.float32)


def _foldable(conv: Any, norm: Any) -> bool:
    return (
        type(conv) is nn.Conv2d
        and type(norm) is nn.BatchNorm2d
        and norm.running_mean is not None
        and norm.running_var is not None
        and norm.num_features == conv.out_channels
    )


def _sequential_pairs(model: nn.Module) -> Iterator[tuple[str, str]]:
    """(conv, norm) names of consecutive children of the model's plain Sequentials."""
    for name, module in model.named_modules():
        if type(module) is not nn.Sequential:  # a subclass may have its own forward
            continue
        prefix = f"{name}." if name else ""
        children = list(module.named_children())
        for (conv_key, conv), (norm_key, norm) in zip(children, children[1:], strict=False):
            if _foldable(conv, norm):
                yield f"{prefix}{conv_key}", f"{prefix}{norm_key}"


def _readers(output: Tensor) -> dict[int, int]:
    """How many times each tensor of the graph behind ``output`` is an op's input, by id."""
    counts: dict[int, int] = {}
    seen, stack = {id(output)}, [output]
    while stack:
        node = stack.pop()
        fn = getattr(node, "_ctx", None)
        if fn is None:
            continue
        for tensor in fn.inputs:
            counts[id(tensor)] = counts.get(id(tensor), 0) + 1
            if id(tensor) not in seen:
                seen.add(id(tensor))
                stack.append(tensor)
    return counts


def _trace(model: nn.Module, example: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Run a copy of ``model`` on ``example`` and read off, by module name:

    * (conv, norm) pairs: the norm was called once, on the output of a conv called once, and no
      other op read that output;
    * (conv, relu) pairs: a ReLU module called once whose input only it read, and that input was
      such a conv's output, or the output of such a pair's norm; neither is the model's output."""
    probe = copy_model(model).eval().requires_grad_(True)
    calls: dict[str, list[tuple[Any, Any]]] = {}

    def recording(name: str, module: nn.Module) -> Any:
        def forward(x: Any) -> Any:
            out = type(module).forward(module, x)
            calls.setdefault(name, []).append((x, out))
            return out

        return forward

    for name, module in probe.named_modules():
        if type(module) in (nn.Conv2d, nn.BatchNorm2d) or _plain_relu(module):
            object.__setattr__(module, "forward", recording(name, module))
    example = example if isinstance(example, Tensor) else Tensor(np.asarray(example))
    with enable_grad():
        output = probe(example.to(probe.device) if probe.device is not None else example)
    if not isinstance(output, Tensor):
        return [], []
    readers = _readers(output)
    once = {name: pairs[0] for name, pairs in calls.items() if len(pairs) == 1}

    def read_once(x: Any) -> bool:
        return x is not output and readers.get(id(x)) == 1

    def of_kind(kind: Any) -> dict[int, str]:
        return {id(out): name for name, (_, out) in once.items() if kind(probe.get_submodule(name))}

    conv_by_output = of_kind(lambda module: type(module) is nn.Conv2d)
    norm_by_output = of_kind(lambda module: type(module) is nn.BatchNorm2d)
    pairs = []
    for norm_name in norm_by_output.values():
        x = once[norm_name][0]
        conv_name = conv_by_output.get(id(x))
        if (
            conv_name is not None
            and read_once(x)
            and _foldable(probe.get_submodule(conv_name), probe.get_submodule(norm_name))
        ):
            pairs.append((conv_name, norm_name))
    conv_of_norm = {norm: conv for conv, norm in pairs}
    relus = []
    for relu_name, (x, _) in once.items():
        if not _plain_relu(probe.get_submodule(relu_name)) or not read_once(x):
            continue
        conv_name = conv_by_output.get(id(x)) or conv_of_norm.get(norm_by_output.get(id(x)))
        if conv_name is not None:
            relus.append((conv_name, relu_name))
    return pairs, relus


def _plain_relu(module: Any) -> bool:
    return type(module) is nn.ReLU and not module.inplace


def fold_pairs(model: nn.Module, example: Any = None) -> list[tuple[str, str]]:
    """The (Conv2d name, BatchNorm2d name) pairs of ``model`` that :func:`optimize_for_inference`
    folds: those of its Sequentials, and with ``example`` (an input batch) those the traced data
    flow shows legal (see the module docstring)."""
    return _fusions(model, example)[0]


def _fusions(model: nn.Module, example: Any) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """:func:`fold_pairs`, and the (Conv2d, ReLU) pairs outside Sequentials that the trace of
    ``example`` shows legal to fuse (none without one)."""
    pairs = list(_sequential_pairs(model))
    if example is None:
        return pairs, []
    traced_pairs, relus = _trace(model, example)
    return pairs + [pair for pair in traced_pairs if pair not in pairs], relus


def _parent(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, key = name.rpartition(".")
    return (model.get_submodule(path) if path else model), key


def optimize_for_inference(model: nn.Module, example: Any = None) -> nn.Module:
    """A copy of the eval-mode ``model`` for inference: every legal Conv2d → BatchNorm2d pair
    (:func:`fold_pairs`; pass ``example``, an input batch, to fold pairs outside Sequentials, as
    in a residual block) folded into one Conv2d, its BatchNorm2d replaced by an Identity; each
    Sequential's Conv2d → ReLU and Linear → ReLU fused into one layer; in eval mode, its
    parameters requiring no gradient. Outputs equal the model's in eval mode to
    float32 rounding.

    Raises ValueError for a model in training mode, as PyTorch's ``fuse_conv_bn_eval`` and
    ``torch.jit.freeze`` do: call ``model.eval()`` first (folding uses the running statistics,
    which a training-mode BatchNorm does not)."""
    training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if training:
        raise ValueError(
            f"optimize_for_inference: the model is in training mode ({training[0]}"
            f"{' and others' if len(training) > 1 else ''}); call model.eval() first"
        )
    pairs, relus = _fusions(model, example)
    optimized = copy_model(model).eval()
    for conv_name, norm_name in pairs:
        conv = optimized.get_submodule(conv_name)
        weight, bias = folded_conv_weights(conv, optimized.get_submodule(norm_name))
        device = conv.weight.device
        conv.weight = nn.Parameter(Tensor(weight, device=device))
        conv.bias = nn.Parameter(Tensor(bias, device=device))
        parent, key = _parent(optimized, norm_name)
        setattr(parent, key, nn.Identity())
    _fuse_relus(optimized)
    for conv_name, relu_name in relus:  # those a Sequential's fusing has not taken already
        conv, relu = optimized.get_submodule(conv_name), optimized.get_submodule(relu_name)
        if type(conv) is nn.Conv2d and type(relu) is nn.ReLU:
            for name, layer in ((conv_name, nn.ConvReLU2d.fuse(conv)), (relu_name, nn.Identity())):
                parent, key = _parent(optimized, name)
                setattr(parent, key, layer)
    return optimized.eval().requires_grad_(False)


# The layers a ReLU right after them joins, and the fused layer each becomes.
_FUSED_WITH_RELU: dict[type, Any] = {nn.Conv2d: nn.ConvReLU2d, nn.Linear: nn.LinearReLU}


def _fuse_relus(model: nn.Module) -> None:
    """In every plain Sequential, each Conv2d or Linear whose next child (Identities, such as
    folded BatchNorms, passed over) is a ReLU becomes its fused form, the ReLU an Identity."""
    for module in list(model.modules()):
        if type(module) is not nn.Sequential:
            continue
        acting = [
            (key, child) for key, child in module.named_children() if type(child) is not nn.Identity
        ]
        for (key, layer), (relu_key, relu) in zip(acting, acting[1:], strict=False):
            fused = _FUSED_WITH_RELU.get(type(layer))
            if fused is not None and type(relu) is nn.ReLU:
                setattr(module, key, fused.fuse(layer))
                setattr(module, relu_key, nn.Identity())
