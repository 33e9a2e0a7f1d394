"""Normalisation and pooling layers for CNNs: BatchNorm1d/2d, AvgPool2d, AdaptiveAvgPool2d,
GroupNorm, InstanceNorm1d/2d, RMSNorm.

BatchNorm layers follow PyTorch: parameters ``weight`` (ones) and ``bias`` (zeros) when
``affine``; buffers ``running_mean`` (zeros), ``running_var`` (ones) and ``num_batches_tracked``
when ``track_running_stats``, so state dicts move between the two frameworks unchanged.

* train mode: normalise with the batch's statistics and blend them into the running ones
  (``momentum``, or a cumulative average when ``momentum=None``);
* eval mode: normalise with the running statistics;
* ``track_running_stats=False``: no running statistics; batch statistics in both modes.

**Frozen statistics** (fine-tuning): set ``layer.freeze_statistics = True`` (for a whole model:
``fastnet.finetune.freeze_batchnorm_statistics(model)``) and the layer normalises with its running
statistics and leaves them, and ``num_batches_tracked``, untouched even in train mode, while its
``weight`` and ``bias`` still train. Unlike ``layer.eval()``, the flag survives
``model.train()``, which a training loop calls every epoch. It is not part of the state dict.
"""

from __future__ import annotations

import numpy as np

from .. import functional as F
from ..functional.arguments import Pair
from ..tensor import Tensor
from .layers import ReLU
from .module import Module, Parameter

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "AvgPool2d",
    "AdaptiveAvgPool2d",
    "GroupNorm",
    "InstanceNorm1d",
    "InstanceNorm2d",
    "RMSNorm",
]


class _BatchNorm(Module):
    """Shared by BatchNorm1d and BatchNorm2d, which differ only in the input shapes they accept."""

    expected_dims: tuple[int, ...] = ()
    shape_text = ""

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        if num_features < 1:
            raise ValueError(
                f"{type(self).__name__}: num_features must be positive, got {num_features}"
            )
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(
                f"{type(self).__name__}: momentum must be in [0, 1] or None, got {momentum}"
            )
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.freeze_statistics = False
        self.register_parameter(
            "weight", Parameter(np.ones(num_features, np.float32)) if affine else None
        )
        self.register_parameter(
            "bias", Parameter(np.zeros(num_features, np.float32)) if affine else None
        )
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(np.zeros(num_features, np.float32)))
            self.register_buffer("running_var", Tensor(np.ones(num_features, np.float32)))
            self.register_buffer("num_batches_tracked", Tensor(np.array(0, np.int64)))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def forward(self, x: Tensor) -> Tensor:
        return self._forward(x, relu=False)

    def forward_relu(self, x: Tensor) -> Tensor:
        """relu(self(x)) as one op (``F.batch_norm_relu``): no normalised tensor, no separate
        ReLU pass either way. What Sequential and the ResNet blocks call for this layer and the
        plain ReLU after it (:func:`relu_fuses`)."""
        return self._forward(x, relu=True)

    def _forward(self, x: Tensor, relu: bool) -> Tensor:
        if x.ndim not in self.expected_dims:
            raise ValueError(
                f"{type(self).__name__}: expected input {self.shape_text}, got shape {x.shape}"
            )
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}): input of shape {x.shape} has "
                f"{x.shape[1]} channels, expected {self.num_features}"
            )
        tracking = self.running_mean is not None
        batch_statistics = not tracking or (self.training and not self.freeze_statistics)
        updating = tracking and batch_statistics
        momentum = self.momentum
        if updating and momentum is None:  # the cumulative average of all batches so far
            momentum = 1.0 / (float(self.num_batches_tracked.item()) + 1.0)
        momentum = momentum if updating else 0.0
        out = (
            self._normalise(x, batch_statistics, momentum, relu=True)
            if relu
            else self._normalise(x, batch_statistics, momentum)
        )
        if updating:  # counted only once the batch was accepted
            self.num_batches_tracked.data += 1
        return out

    def _normalise(
        self, x: Tensor, batch_statistics: bool, momentum: float, relu: bool = False
    ) -> Tensor:
        """The functional op, given the mode and momentum forward() decided (SyncBatchNorm's
        takes its batch statistics over every rank), through ReLU with ``relu``."""
        return (F.batch_norm_relu if relu else F.batch_norm)(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=batch_statistics,
            momentum=momentum,
            eps=self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
            + (", freeze_statistics=True" if self.freeze_statistics else "")
        )


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) inputs, per channel C."""

    expected_dims = (2, 3)
    shape_text = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) inputs, per channel C."""

    expected_dims = (4,)
    shape_text = "(N, C, H, W)"


def relu_fuses(norm: Module, relu: Module) -> bool:
    """Whether ``relu(norm(x))`` may run as ``norm.forward_relu(x)``: a batch norm layer and a
    ReLU after it give the same values and gradients as one op, without the normalised tensor
    and the ReLU's pass over it (ResNet-20's training step: the results log, ``fastnet bench
    --train --only resnet20``). Not when either has an instance ``forward`` (a hook, as
    :func:`fastnet.nn.summary.forward_hooks` installs), or is a subclass, which may change what
    it computes. An in-place ReLU fuses too: the tensor it would change exists only inside the
    pair."""
    return (
        type(norm) in (BatchNorm1d, BatchNorm2d)
        and type(relu) is ReLU
        and "forward" not in norm.__dict__
        and "forward" not in relu.__dict__
    )


def norm_relu(norm: Module, relu: Module, x: Tensor) -> Tensor:
    """relu(norm(x)), as one op where :func:`relu_fuses` allows."""
    return norm.forward_relu(x) if relu_fuses(norm, relu) else relu(norm(x))


class AvgPool2d(Module):
    """Mean over windows (padding counted in the divisor unless ``count_include_pad=False``, as
    in PyTorch); PyTorch's arguments, in its order."""

    def __init__(
        self,
        kernel_size: Pair,
        stride: Pair | None = None,
        padding: Pair = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__()
        self.kernel_size, self.padding = kernel_size, padding
        self.stride = kernel_size if stride is None else stride
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad
        self.divisor_override = divisor_override

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.ceil_mode,
            self.count_include_pad,
            self.divisor_override,
        )

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Average into a fixed output grid whatever the input size; ``output_size=1`` is global
    pooling."""

    def __init__(self, output_size: Pair) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class GroupNorm(Module):
    """Group normalisation of (N, C, *) over ``num_groups`` groups of channels; per-channel
    ``weight`` (ones) and ``bias`` (zeros) when ``affine``."""

    def __init__(
        self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True
    ) -> None:
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(
                f"GroupNorm: num_channels {num_channels} must be divisible by num_groups "
                f"{num_groups}"
            )
        self.num_groups, self.num_channels, self.eps, self.affine = (
            num_groups,
            num_channels,
            eps,
            affine,
        )
        self.register_parameter(
            "weight", Parameter(np.ones(num_channels, np.float32)) if affine else None
        )
        self.register_parameter(
            "bias", Parameter(np.zeros(num_channels, np.float32)) if affine else None
        )

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _InstanceNorm(Module):
    """Instance normalisation of (N, C, *spatial) or unbatched (C, *spatial); PyTorch's
    defaults: no affine parameters and no running statistics."""

    spatial = 1

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float = 0.1,
        affine: bool = False,
        track_running_stats: bool = False,
    ) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.register_parameter(
            "weight", Parameter(np.ones(num_features, np.float32)) if affine else None
        )
        self.register_parameter(
            "bias", Parameter(np.zeros(num_features, np.float32)) if affine else None
        )
        tracked = (
            (np.zeros(num_features, np.float32), np.ones(num_features, np.float32), np.array(0))
            if track_running_stats
            else (None, None, None)
        )
        for name, value in zip(
            ("running_mean", "running_var", "num_batches_tracked"), tracked, strict=True
        ):
            self.register_buffer(name, None if value is None else Tensor(value))

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim == self.spatial + 1:  # unbatched
            return self.forward(input.unsqueeze(0)).squeeze(0)
        if input.ndim != self.spatial + 2:
            raise ValueError(
                f"{type(self).__name__}: expected a {self.spatial + 1}-D or "
                f"{self.spatial + 2}-D input, got shape {input.shape}"
            )
        use_input_stats = self.training or not self.track_running_stats
        if use_input_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.data += 1
        return F.instance_norm(
            input,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            use_input_stats,
            self.momentum,
            self.eps,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class InstanceNorm1d(_InstanceNorm):
    spatial = 1


class InstanceNorm2d(_InstanceNorm):
    spatial = 2


class RMSNorm(Module):
    """x/√(mean(x²) + eps)·weight over the trailing ``normalized_shape`` axes; ``weight`` (ones)
    when ``elementwise_affine``; ``eps`` None is the dtype's machine epsilon."""

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float | None = None,
        elementwise_affine: bool = True,
    ) -> None:
        super().__init__()
        shape = (
            (int(normalized_shape),)
            if isinstance(normalized_shape, (int, np.integer))
            else tuple(normalized_shape)
        )
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        self.register_parameter(
            "weight", Parameter(np.ones(shape, np.float32)) if elementwise_affine else None
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return (
            f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        )
