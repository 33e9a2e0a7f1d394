"""Normalisation: batch_norm (per channel over the batch), layer_norm (per row over features).

* ``batch_norm``: per channel c of x (N, C) or (N, C, *spatial), over its m = N·prod(spatial)
  values, y = (x − mean)·rstd·weight + bias with rstd = 1/√(var + eps). In training the batch's
  mean and biased variance normalise, and the running statistics (when given) are blended in
  place: running ← (1 − momentum)·running + momentum·batch, with the unbiased variance
  (PyTorch's convention). In eval the running statistics normalise; they are constants, so the
  backward is the affine map dx = weight·rstd·dy. Both run on the device's batch-norm kernels.
* ``layer_norm(x, normalized_shape, weight, bias, eps)``: each row of the last
  ``len(normalized_shape)`` axes, flattened to D values, normalised to zero mean and unit biased
  variance, then y = x̂·weight + bias, on the layer-norm kernels (one pass for the statistics,
  saved mean and 1/std for the backward).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..tensor import Function, Tensor

__all__ = ["batch_norm", "layer_norm"]


# ===================================================================== batch norm
class BatchNorm(Function):
    def forward(
        self, x, *affine, running_mean, running_var, has_weight, has_bias, training, momentum, eps
    ):
        weight = affine[0] if has_weight else None
        bias = affine[-1] if has_bias else None
        self.x = self.device.xp.ascontiguousarray(x)
        self.weight, self.training = weight, training
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
        )
        return y

    def backward(self, grad):
        grad_x, grad_weight, grad_bias = self.device.batchnorm_backward(
            grad, self.x, self.weight, self.mean, self.rstd, training=self.training
        )
        return (
            (grad_x,)
            + ((grad_weight,) if self.has_weight else ())
            + ((grad_bias,) if self.has_bias else ())
        )


def _check_channel_vector(name: str, vector: Tensor | None, x: Tensor) -> Any:
    """The array of a per-channel (C,) tensor after checking its shape and device; None stays
    None."""
    if vector is None:
        return None
    if vector.device is not x.device:
        raise RuntimeError(f"batch_norm: input is on {x.device} but {name} on {vector.device}")
    if vector.shape != (x.shape[1],):
        raise ValueError(
            f"batch_norm: {name} of shape {vector.shape} does not match input of "
            f"shape {x.shape} (expected ({x.shape[1]},), one value per channel)"
        )
    return vector.data


def batch_norm(
    x: Tensor,
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
    return BatchNorm.apply(
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
    x: Tensor,
    normalized_shape: int | Sequence[int],
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """Layer normalisation over the trailing ``normalized_shape`` axes (PyTorch's F.layer_norm);
    weight and bias, when given, have shape ``normalized_shape``."""
    shape = (
        (normalized_shape,)
        if isinstance(normalized_shape, (int, np.integer))
        else tuple(normalized_shape)
    )
    if not shape or len(shape) > x.ndim or x.shape[x.ndim - len(shape) :] != shape:
        raise ValueError(
            f"layer_norm: normalized_shape {shape} does not match the trailing axes "
            f"of input of shape {x.shape}"
        )
    for name, parameter in (("weight", weight), ("bias", bias)):
        if parameter is not None and parameter.shape != shape:
            raise ValueError(
                f"layer_norm: {name} of shape {parameter.shape} does not match "
                f"normalized_shape {shape}"
            )
    affine = [p for p in (weight, bias) if p is not None]
    return LayerNorm.apply(
        x, *affine, width=int(np.prod(shape)), has_weight=weight is not None, eps=float(eps)
    )
