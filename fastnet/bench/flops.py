"""FLOPs of one training step of a fastnet model, so ``fastnet bench --train`` can set a step's
speed against the machine's GEMM ceiling.

Convention: a multiply-add is **2 FLOPs**, and what is counted is the *useful* work of the plain
algorithm: a convolution counts its direct (sliding-window) FLOPs whatever algorithm ran, so the
multiplications Winograd saves are not credited, as PyTorch's, fvcore's and every FLOP counter's
are not. Achieved GFLOP/s = FLOPs per step / seconds per step is then a *useful work rate*, and its
fraction of the GEMM ceiling is the distance to the machine's limit.

How: :func:`count_step_flops` runs the model once on a probe batch of one sample (eval mode, so
nothing it holds changes; autograd on, so it can see which tensors need a gradient) with every
module's ``forward`` wrapped (:func:`fastnet.nn.summary.forward_hooks`), counts each module's own
work from the real shapes, and multiplies by the batch (every term is linear in it).

GEMM-type terms (``forward_gemm``, ``backward_gemm``):

* Conv2d: 2·N·OC·OH·OW·(C/groups)·KH·KW.
* Linear: 2·rows·in·out (rows = every leading axis of the input).
* MultiheadAttention: its query, key and value projections (``F.linear`` on ``in_proj_weight``:
  2·tokens·E² each), the scores Q·Kᵀ (``attention_weights``) and the weighted values
  weights·V (``weights @ V``), 2·B·T·S·E each (B·H heads of T·S pairs, D = E/H deep);
  the output projection is a Linear child, counted there.
* Backward: each GEMM gives two more of its size, the gradient of each operand, counted only
  when that operand needs one: the weight gradient when the weight requires grad, the input
  gradient when the input requires grad. So the first layer, fed the data (which requires no
  grad), counts its weight gradient only (backward = 1x its forward, 2x elsewhere), as autograd
  computes; in attention, Q·Kᵀ and weights·V count a gradient for each operand fed by a
  parameter or by an input that requires grad.

Elementwise terms (``forward_other``, ``backward_other``), per element:

* bias: 1 per output element; BatchNorm/LayerNorm (and the other norms): 5 for the statistics
  and the normalisation, +2 with an affine transform (as ``model.summary`` counts them);
  ReLU 1, LeakyReLU 2, Tanh/Sigmoid/SiLU 4, GELU 8; max/average pooling kh·kw per output
  element, adaptive pooling 1 per input element; the attention softmax 5 per score; residual
  additions 1 (BasicBlock: the addition and the last ReLU it writes in its ``forward``;
  TransformerEncoderLayer: its two residual additions and its activation); a mean 1 per input
  element; the cross-entropy loss 5 per logit.
* Their backward is counted equal to their forward (one gradient per element, about as many
  operations), for every module whose output needs a gradient.
* The optimizer: Adam's update, :data:`ADAM_FLOPS_PER_PARAMETER` per trainable parameter.
* Not counted: reshapes, dropout (the race uses none), embeddings (lookups). A leaf module of
  a type with no rule here is listed in ``uncounted`` rather than silently taken as free.

The elementwise terms are a few per cent of a convolutional or transformer step; the GEMM terms
are the ones the ceiling speaks about.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import nn as fnn
from ..autograd import enable_grad
from ..nn.summary import (
    eval_mode,
    first_tensor,
    forward_hooks,
    pool_window,
    tensor_numel,
    window_size,
)
from ..tensor import Tensor

__all__ = [
    "ADAM_FLOPS_PER_PARAMETER",
    "StepFlops",
    "count_step_flops",
]

# m ← β1·m + (1−β1)·g (3), v ← β2·v + (1−β2)·g² (4), the two bias corrections (2),
# p ← p − lr·m̂ / (√v̂ + ε) (5)
ADAM_FLOPS_PER_PARAMETER = 14
LOSS_FLOPS_PER_LOGIT = 5  # cross-entropy: max, subtract, exp, sum, log (the pick and mean: less)
NORM_FLOPS = 5  # mean, variance, normalise
AFFINE_FLOPS = 2  # scale and shift
SOFTMAX_FLOPS = 5  # max, subtract, exp, sum, divide
ACTIVATION_FLOPS = {
    "relu": 1,
    "relu6": 1,
    "leaky_relu": 2,
    "leakyrelu": 2,
    "tanh": 4,
    "sigmoid": 4,
    "silu": 4,
    "gelu": 8,
}
FREE_LAYERS = ("Flatten", "Unflatten", "Identity", "Dropout", "Dropout1d", "Dropout2d")


@dataclass
class StepFlops:
    """FLOPs of one training step of ``batch`` samples (2 per multiply-add), split into the
    GEMM-type work (convolutions, linear layers, attention matmuls) and the elementwise work,
    forward and backward, and the optimizer's update."""

    batch: int
    forward_gemm: int = 0
    forward_other: int = 0
    backward_gemm: int = 0
    backward_other: int = 0
    optimizer: int = 0
    uncounted: list[str] = field(default_factory=list)  # leaf layer types without a rule

    @property
    def forward(self) -> int:
        return self.forward_gemm + self.forward_other

    @property
    def backward(self) -> int:
        return self.backward_gemm + self.backward_other

    @property
    def gemm(self) -> int:
        return self.forward_gemm + self.backward_gemm

    @property
    def total(self) -> int:
        return self.forward + self.backward + self.optimizer

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: the fields and the totals."""
        return {
            **asdict(self),
            "forward": self.forward,
            "backward": self.backward,
            "gemm": self.gemm,
            "total": self.total,
        }


# ===================================================================== per-module rules
def _needs_grad(value: Any) -> bool:
    return bool(getattr(value, "requires_grad", False))


class _Tally:
    """The per-probe-batch sums the rules add to."""

    def __init__(self) -> None:
        self.forward_gemm = self.forward_other = 0
        self.backward_gemm = self.backward_other = 0
        self.uncounted: set[str] = set()

    def gemm(self, flops: int, *operands_needing_grad: bool) -> None:
        """A GEMM of ``flops``; each operand that needs a gradient costs another ``flops``."""
        self.forward_gemm += flops
        self.backward_gemm += flops * sum(bool(needs) for needs in operands_needing_grad)

    def elementwise(self, flops: int, backward: bool) -> None:
        self.forward_other += flops
        if backward:
            self.backward_other += flops


Rule = Callable[[_Tally, Any, tuple, dict, Any], None]


def _gemm_layer(tally: _Tally, module: Any, args: tuple, output: Any, flops: int) -> None:
    """Linear or Conv2d: the product, its input and weight gradients, the bias and its gradient."""
    tally.gemm(flops, _needs_grad(args[0]), _needs_grad(module.weight))
    if module.bias is not None:
        tally.elementwise(tensor_numel(output), _needs_grad(module.bias))


def _linear(tally: _Tally, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
    rows = tensor_numel(output) // module.out_features
    flops = 2 * rows * module.in_features * module.out_features
    _gemm_layer(tally, module, args, output, flops)


def _conv2d(tally: _Tally, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
    taps = module.in_channels // module.groups * window_size(module.kernel_size)
    _gemm_layer(tally, module, args, output, 2 * tensor_numel(output) * taps)


def _attention(tally: _Tally, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
    names = ("query", "key", "value")
    inputs = [args[i] if i < len(args) else kwargs[name] for i, name in enumerate(names)]
    width, heads = module.embed_dim, module.num_heads
    weight_grad = _needs_grad(module.in_proj_weight)
    bias = module.in_proj_bias
    tracked = []  # does the projected Q, K, V need a gradient?
    for tensor in inputs:
        tokens = tensor_numel(tensor) // width
        tally.gemm(2 * tokens * width * width, _needs_grad(tensor), weight_grad)
        if bias is not None:
            tally.elementwise(tokens * width, _needs_grad(bias))
        tracked.append(_needs_grad(tensor) or weight_grad or _needs_grad(bias))
    query, key = inputs[0], inputs[1]
    batch = key.shape[0] if module.batch_first else key.shape[1]
    pairs = (tensor_numel(query) // width) * (
        tensor_numel(key) // width // batch
    )  # B·T·S, in every head
    q, k, v = tracked
    tally.gemm(2 * pairs * width, q, k)  # scores = Q·Kᵀ: 2·D per pair and head
    tally.elementwise(SOFTMAX_FLOPS * pairs * heads, q or k)
    tally.gemm(2 * pairs * width, q or k, v)  # weights·V


def _norm(tally: _Tally, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
    affine = any(p is not None for p in module._parameters.values())
    per_element = NORM_FLOPS + (AFFINE_FLOPS if affine else 0)
    tally.elementwise(per_element * tensor_numel(first_tensor(output)), _needs_grad(output))


def _pool(tally: _Tally, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
    tally.elementwise(
        tensor_numel(first_tensor(output)) * pool_window(module), _needs_grad(args[0])
    )


def _adaptive_pool(tally: _Tally, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
    tally.elementwise(tensor_numel(args[0]), _needs_grad(args[0]))


def _activation_cost(function: Any) -> int:
    name = getattr(function, "__name__", type(function).__name__).lower()
    return ACTIVATION_FLOPS.get(name, ACTIVATION_FLOPS["gelu"])


def _activation(tally: _Tally, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
    tally.elementwise(_activation_cost(module) * tensor_numel(output), _needs_grad(output))


def _basic_block(tally: _Tally, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
    # the addition of the shortcut and the last relu, both of output's size (the first relu is
    # the block's relu1 module, counted as a module)
    tally.elementwise(2 * tensor_numel(output), _needs_grad(output))


def _encoder_layer(tally: _Tally, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
    elements = tensor_numel(output)
    hidden = elements // module.linear1.in_features * module.linear1.out_features
    tally.elementwise(2 * elements, _needs_grad(output))  # the two residual additions
    tally.elementwise(_activation_cost(module.activation) * hidden, _needs_grad(output))


def _mean_over_sequence(tally: _Tally, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
    # SequenceClassifier: head(encoder(x).mean(axis=1)); the mean adds every encoder output
    tally.elementwise(tensor_numel(args[0]), _needs_grad(output))


def _nothing(tally: _Tally, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
    pass


# by class (the most derived class with a rule wins) ...
_RULES: dict[type, Rule] = {
    fnn.Linear: _linear,
    fnn.Conv2d: _conv2d,
    fnn.MultiheadAttention: _attention,
    fnn.TransformerEncoderLayer: _encoder_layer,
    fnn.LayerNorm: _norm,
    fnn.MaxPool2d: _pool,
    fnn.AvgPool2d: _pool,
    fnn.AdaptiveAvgPool2d: _adaptive_pool,
}
# ... or by class name, for the classes fastnet.nn does not export or that live above it
_NAMED_RULES: dict[str, Rule] = {
    "_BatchNorm": _norm,
    "GroupNorm": _norm,
    "RMSNorm": _norm,
    "_InstanceNorm": _norm,
    "ReLU": _activation,
    "ReLU6": _activation,
    "LeakyReLU": _activation,
    "GELU": _activation,
    "Tanh": _activation,
    "Sigmoid": _activation,
    "SiLU": _activation,
    "MaxPool1d": _pool,
    "AvgPool1d": _pool,
    "AdaptiveAvgPool1d": _adaptive_pool,
    "AdaptiveMaxPool2d": _adaptive_pool,
    "BasicBlock": _basic_block,
    "SequenceClassifier": _mean_over_sequence,
    **dict.fromkeys(FREE_LAYERS, _nothing),
}


def _rule(module: Any) -> Rule | None:
    for cls in type(module).__mro__:
        if cls in _RULES:
            return _RULES[cls]
        if cls.__name__ in _NAMED_RULES:
            return _NAMED_RULES[cls.__name__]
    return None


# ===================================================================== counting
def count_step_flops(
    model: Any,
    sample_shape: Sequence[int],
    batch: int,
    classes: int | None = None,
    optimizer_flops_per_parameter: int = ADAM_FLOPS_PER_PARAMETER,
) -> StepFlops:
    """FLOPs of one training step of ``model`` on ``batch`` samples of ``sample_shape`` (a
    float32 input that requires no gradient): forward, backward (module docstring), the
    cross-entropy loss over the model's logits and the optimizer's update
    (``optimizer_flops_per_parameter`` per trainable parameter; Adam by default).

    The model runs once on one sample, in eval mode (no running statistic moves) with autograd
    on; every module's training flag and ``forward`` are as they were after. ``classes`` is
    only checked against the logits' width when given."""
    if batch < 1:
        raise ValueError(f"count_step_flops: batch must be positive, got {batch}")
    tally = _Tally()

    def hook(name: str, module: Any, args: tuple, kwargs: dict, output: Any) -> None:
        rule = _rule(module)
        if rule is not None:
            rule(tally, module, args, kwargs, output)
        elif not any(True for _ in module.children()):
            tally.uncounted.add(type(module).__name__)

    probe = Tensor(np.random.default_rng(0).standard_normal((1, *sample_shape), dtype=np.float32))
    with eval_mode(model), enable_grad(), forward_hooks(model.named_modules(), hook):
        logits = model(probe)
    logits = first_tensor(logits)
    if classes is not None and logits.shape[-1] != classes:
        raise ValueError(
            f"count_step_flops: the model's logits {logits.shape} are not {classes} wide"
        )
    tally.elementwise(LOSS_FLOPS_PER_LOGIT * tensor_numel(logits), _needs_grad(logits))
    trainable = sum(math.prod(p.shape) for p in model.parameters() if p.requires_grad)
    return StepFlops(
        batch=batch,
        forward_gemm=tally.forward_gemm * batch,
        forward_other=tally.forward_other * batch,
        backward_gemm=tally.backward_gemm * batch,
        backward_other=tally.backward_other * batch,
        optimizer=optimizer_flops_per_parameter * trainable,
        uncounted=sorted(tally.uncounted),
    )
