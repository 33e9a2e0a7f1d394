"""Convolution layers: what Conv2d (in ``layers``) and ConvTranspose2d share, and ConvTranspose2d.

PyTorch's layouts and defaults: Conv2d's weight is (out_channels, in_channels/groups, kh, kw),
ConvTranspose2d's (in_channels, out_channels/groups, kh, kw); both are initialised
``kaiming_uniform_(a=√5)``, U(±1/√fan_in) with fan_in = weight.shape[1]·kh·kw, and the bias
(out_channels,) U(±1/√fan_in) too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .. import functional as F
from ..functional.arguments import Pair, to_pair
from ..functional.conv_transpose import conv_transpose_output_shape
from ..tensor import Tensor
from . import init
from .module import Module, Parameter

__all__ = ["ConvTranspose2d"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


class _ConvNd(Module):
    """The arguments, parameters and initialisation of a 2-D convolution layer, transposed or
    not; a subclass writes ``forward``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Pair,
        stride: Pair,
        padding: Pair | str,
        dilation: Pair,
        groups: int,
        bias: bool,
        padding_mode: str,
        transposed: bool,
        output_padding: Pair = 0,
    ) -> None:
        super().__init__()
        if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
            raise ValueError(f"groups must be a positive integer, got {groups!r}")
        for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels % groups:
                raise ValueError(f"{name} must be divisible by groups, got {channels} and {groups}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(
                f"padding_mode must be one of {PADDING_MODES}, got padding_mode={padding_mode!r}"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = to_pair(kernel_size, "kernel_size")
        self.stride, self.dilation = to_pair(stride, "stride"), to_pair(dilation, "dilation")
        self.padding = padding if isinstance(padding, str) else to_pair(padding, "padding")
        self.output_padding = to_pair(output_padding, "output_padding")
        self.groups, self.padding_mode, self.transposed = groups, padding_mode, transposed
        channels = (in_channels, out_channels) if transposed else (out_channels, in_channels)
        shape = (channels[0], channels[1] // groups, *self.kernel_size)
        self.weight = Parameter(np.empty(shape, np.float32))
        self.register_parameter(
            "bias", Parameter(np.empty(out_channels, np.float32)) if bias else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init.fan_in_and_fan_out(self.weight.shape)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def extra_repr(self) -> str:
        """PyTorch's: the window arguments that differ from their defaults."""
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.output_padding != (0, 0):
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text


class ConvTranspose2d(_ConvNd):
    """2-D transposed convolution (``F.conv_transpose2d``); weight (in_channels,
    out_channels/groups, kh, kw), bias (out_channels,). ``forward(x, output_size)`` picks the
    output_padding that gives an output of ``output_size`` (H, W) (or (N, C, H, W)), as PyTorch."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Pair,
        stride: Pair = 1,
        padding: Pair = 0,
        output_padding: Pair = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: Pair = 1,
        padding_mode: str = "zeros",
    ) -> None:
        if padding_mode != "zeros":
            raise ValueError(
                f'Only "zeros" padding mode is supported for ConvTranspose2d, got {padding_mode!r}'
            )
        if isinstance(padding, str):
            raise ValueError(f"ConvTranspose2d: padding must be ints, got {padding!r}")
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            padding_mode,
            transposed=True,
            output_padding=output_padding,
        )

    def forward(self, input: Tensor, output_size: Sequence[int] | None = None) -> Tensor:
        output_padding = (
            self.output_padding if output_size is None else self._output_padding(input, output_size)
        )
        return F.conv_transpose2d(
            input,
            self.weight,
            self.bias,
            self.stride,
            self.padding,
            output_padding,
            self.groups,
            self.dilation,
        )

    def _output_padding(self, x: Tensor, output_size: Sequence[int]) -> tuple[int, int]:
        """The output_padding that makes the output (H, W) = the last two of ``output_size``."""
        size = tuple(int(s) for s in output_size)
        if len(size) == 4:
            size = size[2:]
        if len(size) != 2:
            raise ValueError(
                f"ConvTranspose2d: output_size must have 2 or 4 elements, got {output_size!r}"
            )
        smallest = conv_transpose_output_shape(
            *x.shape[-2:], self.kernel_size, self.stride, self.padding, (0, 0), self.dilation
        )
        for wanted, low, stride in zip(size, smallest, self.stride, strict=True):
            if not low <= wanted <= low + stride - 1:
                raise ValueError(
                    f"ConvTranspose2d: requested an output size of {size}, but valid sizes range "
                    f"from {low} to {low + stride - 1} (for an input of {x.shape[-2:]})"
                )
        return size[0] - smallest[0], size[1] - smallest[1]
