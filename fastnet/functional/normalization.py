"""Normalisation: batch_norm (per channel over the batch), layer_norm (per row over features),
group_norm, instance_norm and rms_norm.

* ``batch_norm``: per channel c of x (N, C) or (N, C, *spatial), over its m = N·prod(spatial)
  values, y = (x − mean)·rstd·weight + bias with rstd = 1/√(var + eps). In training the batch's
  mean and biased variance normalise, and the running statistics (when given) are blended in
  place: running ← (1 − momentum)·running + momentum·batch, with the unbiased variance
  (PyTorch's convention). In eval the running statistics normalise; they are constants, so the
  backward is the affine map dx = weight·rstd·dy. Both run on the device's batch-norm kernels.
  ``batch_norm_relu`` is relu(batch_norm(...)) in the same kernels: the ReLU as y is written,
  and the gradient masked by y > 0 (y recomputed from x) inside the backward.
* ``layer_norm(x, normalized_shape, weight, bias, eps)``: each row of the last
  ``len(normalized_shape)`` axes, flattened to D values, normalised to zero mean and unit biased
  variance, then y = x̂·weight + bias, on the layer-norm kernels (one pass for the statistics,
  saved mean and 1/std for the backward).
* ``group_norm(x, G, weight, bias, eps)``: x (N, C, *) viewed as (N, G, C/G·prod(*)), each row
  normalised on the layer-norm kernels, then y = x̂·weight_c + bias_c per channel.
  ``instance_norm`` is group norm with G = C (its running statistics are blended outside the
  graph); with ``use_input_stats=False`` it is batch norm in eval mode.
* ``rms_norm(x, normalized_shape, weight, eps)``: y = x/√(mean(x²) + eps)·weight over the
  trailing axes, composed of Tensor ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..tensor import Function, Tensor

__all__ = ["batch_norm", "batch_norm_relu", "group_norm", "instance_norm", "layer_norm", "rms_norm"]


# ===================================================================== batch norm
class BatchNorm(Function):
    relu = False  # BatchNormReLU: the kernels apply ReLU to y, and mask the gradient by its sign

    def forward(
        self, x, *affine, running_mean, running_var, has_weight, has_bias, training, momentum, eps
    ):
        weight = affine[0] if has_weight else None
        bias = affine[-1] if has_bias else None
        self.x = self.device.xp.ascontiguousarray(x)
        self.weight, self.bias, self.training = weight, bias, training
        self.has_weight, self.has_bias = has_weight, has_bias
        y, self.mean, self.rstd = self.device.batchnorm_forward(
            self.x,
            weight,
            bias,
            running_mean,
            running_var,
            training=training,
            momentum=momentum,
            eps=eps,
            relu=self.relu,
        )
        return y

    def backward(self, grad):
        grad_x, grad_weight, grad_bias = self.device.batchnorm_backward(
            grad,
            self.x,
            self.weight,
            self.mean,
            self.rstd,
            training=self.training,
            bias=self.bias,
            relu=self.relu,
        )
        return (
            (grad_x,)
            + ((grad_weight,) if self.has_weight else ())
            + ((grad_bias,) if self.has_bias else ())
        )


def _check_channel_vector(
    name: str, vector: Tensor | None, x: Tensor, op: str = "batch_norm"
) -> Any:
    """The array of a per-channel (C,) tensor after checking its shape and device; None stays
    None."""
    if vector is None:
        return None
    if vector.device is not x.device:
        raise RuntimeError(f"{op}: input is on {x.device} but {name} on {vector.device}")
    if vector.shape != (x.shape[1],):
        raise ValueError(
            f"{op}: {name} of shape {vector.shape} does not match input of "
            f"shape {x.shape} (expected ({x.shape[1]},), one value per channel)"
        )
    return vector.data


class BatchNormReLU(BatchNorm):
    relu = True


def batch_norm(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch normalisation of x (N, C) or (N, C, *spatial) per channel (PyTorch's F.batch_norm).

    ``training=True`` normalises with the batch statistics and, when ``running_mean`` and
    ``running_var`` are given, updates them in place; ``training=False`` normalises with them.
    """
    return _batch_norm(
        BatchNorm, input, running_mean, running_var, weight, bias, training, momentum, eps
    )


def batch_norm_relu(
    input: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """relu(batch_norm(...)) as one op: the ReLU applied as each value is written, its gradient
    masked inside batch norm's backward (the sign recomputed from the saved input), so neither
    the normalised tensor nor a separate ReLU pass exists. The values and gradients of the two
    ops in a row; a ResNet's ``relu(bn(conv(x)))`` in training."""
    return _batch_norm(
        BatchNormReLU, input, running_mean, running_var, weight, bias, training, momentum, eps
    )


def _batch_norm(
    function: type[BatchNorm],
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    momentum: float,
    eps: float,
) -> Tensor:
    if x.ndim < 2:
        raise ValueError(
            f"batch_norm: input must be (N, C) or (N, C, *spatial), got shape {x.shape}"
        )
    running = [
        _check_channel_vector(name, stats, x)
        for name, stats in (("running_mean", running_mean), ("running_var", running_var))
    ]
    for name, parameter in (("weight", weight), ("bias", bias)):
        _check_channel_vector(name, parameter, x)
    affine = [p for p in (weight, bias) if p is not None]
    return function.apply(
        x,
        *affine,
        running_mean=running[0],
        running_var=running[1],
        has_weight=weight is not None,
        has_bias=bias is not None,
        training=bool(training),
        momentum=float(momentum),
        eps=float(eps),
    )


# ===================================================================== layer norm
class LayerNorm(Function):
    def forward(self, x, *affine, width, has_weight, eps):
        xp = self.device.xp
        self.x_rows = xp.ascontiguousarray(x).reshape(-1, width)
        self.has_weight, self.has_bias = has_weight, len(affine) == 1 + has_weight
        self.weight = affine[0].reshape(width) if has_weight else None
        bias = affine[-1].reshape(width) if self.has_bias else None
        y, self.mean, self.rstd = self.device.layernorm_forward(self.x_rows, self.weight, bias, eps)
        return y.reshape(x.shape)

    def backward(self, grad):
        grad_rows = self.device.xp.ascontiguousarray(grad).reshape(self.x_rows.shape)
        grad_x, grad_weight, grad_bias = self.device.layernorm_backward(
            grad_rows, self.x_rows, self.weight, self.mean, self.rstd
        )
        parameter_shapes = [t.shape for t in self.inputs[1:]]
        grads = ([grad_weight] if self.has_weight else []) + ([grad_bias] if self.has_bias else [])
        return (grad_x.reshape(grad.shape),) + tuple(
            g.reshape(s) for g, s in zip(grads, parameter_shapes, strict=True)
        )


def layer_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Layer normalisation over the trailing ``normalized_shape`` axes (PyTorch's F.layer_norm);
    weight and bias, when given, have shape ``normalized_shape``."""
    x = input
    shape = _as_shape(normalized_shape)
    _check_normalized_shape("layer_norm", x, shape, weight, bias)
    affine = [p for p in (weight, bias) if p is not None]
    return LayerNorm.apply(
        x, *affine, width=int(np.prod(shape)), has_weight=weight is not None, eps=float(eps)
    )


def _check_normalized_shape(
    op: str, x: Tensor, shape: tuple, weight: Tensor | None, bias: Tensor | None
) -> None:
    if not shape or len(shape) > x.ndim or x.shape[x.ndim - len(shape) :] != shape:
        raise ValueError(
            f"{op}: normalized_shape {shape} does not match the trailing axes "
            f"of input of shape {x.shape}"
        )
    for name, parameter in (("weight", weight), ("bias", bias)):
        if parameter is not None and parameter.shape != shape:
            raise ValueError(
                f"{op}: {name} of shape {parameter.shape} does not match normalized_shape {shape}"
            )


def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, (int, np.integer)):
        return (int(normalized_shape),)
    return tuple(normalized_shape)


# ===================================================================== group, instance, RMS norm
def _per_channel(x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """x·weight + bias with (C,) weight and bias broadcast along axis 1 of x (N, C, *)."""
    shape = (x.shape[1],) + (1,) * (x.ndim - 2)
    if weight is not None:
        x = x * weight.reshape(shape)
    if bias is not None:
        x = x + bias.reshape(shape)
    return x


def group_norm(
    input: Tensor,
    num_groups: int,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Each sample's ``num_groups`` groups of C/num_groups channels (with their spatial values)
    normalised to zero mean and unit biased variance on the layer-norm kernels, then the
    per-channel affine map (PyTorch's F.group_norm)."""
    if input.ndim < 2 or num_groups < 1 or input.shape[1] % num_groups:
        raise RuntimeError(
            f"group_norm: expected input (N, C, *) with C divisible by num_groups, got shape "
            f"{input.shape} and num_groups={num_groups}"
        )
    for name, parameter in (("weight", weight), ("bias", bias)):
        _check_channel_vector(name, parameter, input, "group_norm")
    batch = input.shape[0]
    width = int(np.prod(input.shape[1:])) // num_groups
    groups = input.reshape(batch, num_groups, width)
    normalised = LayerNorm.apply(groups, width=width, has_weight=False, eps=float(eps))
    return _per_channel(normalised.reshape(input.shape), weight, bias)


def instance_norm(
    input: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    use_input_stats: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Each (sample, channel) plane of x (N, C, *) normalised on its own statistics (group norm
    with one channel a group); the running statistics, when given, take the batch mean of the
    planes' mean and unbiased variance. ``use_input_stats=False`` normalises with the running
    statistics instead (PyTorch's F.instance_norm)."""
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError("instance_norm: use_input_stats=False needs running_mean and var")
        return batch_norm(input, running_mean, running_var, weight, bias, False, 0.0, eps)
    if input.ndim < 3:
        raise ValueError(f"instance_norm: expected input (N, C, *spatial), got {input.shape}")
    for stats in (running_mean, running_var):
        _check_channel_vector("running statistics", stats, input, "instance_norm")
    if running_mean is not None or running_var is not None:
        planes = input.data.reshape(input.shape[0], input.shape[1], -1)
        blended = (
            (running_mean, planes.mean(axis=2)),
            (running_var, planes.var(axis=2, ddof=1)),
        )
        for running, batch_value in blended:
            if running is not None:
                running.data *= 1 - momentum
                running.data += momentum * batch_value.mean(axis=0).astype(running.dtype)
    return group_norm(input, input.shape[1], weight, bias, eps)


def rms_norm(
    input: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    eps: float | None = None,
) -> Tensor:
    """x/√(mean(x²) + eps)·weight over the trailing ``normalized_shape`` axes; ``eps`` defaults
    to the machine epsilon of x's dtype (PyTorch's F.rms_norm). Composed of Tensor ops."""
    shape = _as_shape(normalized_shape)
    _check_normalized_shape("rms_norm", input, shape, weight, None)
    eps = float(np.finfo(input.dtype).eps) if eps is None else float(eps)
    axes = tuple(range(input.ndim - len(shape), input.ndim))
    mean_square = (input * input).mean(axis=axes, keepdims=True)
    normalised = input / (mean_square + eps).sqrt()
    return normalised if weight is None else normalised * weight
