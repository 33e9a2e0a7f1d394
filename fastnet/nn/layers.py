"""The basic layers: Linear, Conv2d, MaxPool2d, activations, Identity, Dropout (and its
channel-wise forms), Flatten, Unflatten.

Each is a thin Module over an op of ``fastnet.functional``; parameter names, shapes and default
initialisations are PyTorch's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import functional as F
from ..functional.arguments import Pair
from ..tensor import Tensor
from . import init
from .convolution import _ConvNd
from .module import Module, Parameter


def _empty_parameter(*shape: int) -> Parameter:
    return Parameter(np.empty(shape, dtype=np.float32))


class Linear(Module):
    """y = x·Wᵀ + b; weight (out_features, in_features), bias (out_features,)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty_parameter(out_features, in_features)
        self.register_parameter("bias", _empty_parameter(out_features) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class Conv2d(_ConvNd):
    """2-D convolution (``F.conv2d``); weight (out_channels, in_channels/groups, kh, kw), bias
    (out_channels,). ``padding`` ints, "valid" or "same"; ``padding_mode`` "zeros" or, through
    ``F.pad``, "reflect", "replicate" or "circular"."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Pair,
        stride: Pair = 1,
        padding: Pair | str = 0,
        dilation: Pair = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
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
            transposed=False,
        )
        # The widths F.pad takes for the other padding modes: (before, after) each side, height
        # first here; "same" puts the odd one out of D·(K-1) after, as F.conv2d does.
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ValueError(
                    f"Invalid padding string {padding!r}, should be one of ('valid', 'same')"
                )
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            spans = [d * (k - 1) for d, k in zip(self.dilation, self.kernel_size, strict=True)]
            sides = [(s // 2, s - s // 2) if padding == "same" else (0, 0) for s in spans]
        else:
            sides = [(p, p) for p in self.padding]
        self._reversed_padding_repeated_twice = (*sides[1], *sides[0])

    def forward(self, input: Tensor) -> Tensor:
        return self._convolve(F.conv2d, input)

    def forward_relu_max_pool(self, input: Tensor) -> Tensor:
        """max_pool2d(relu(self(input)), 2) as one op (``F.conv2d_relu_max_pool2d``): what
        Sequential calls for this layer, a ReLU and a 2x2 MaxPool2d after it."""
        return self._convolve(F.conv2d_relu_max_pool2d, input)

    def _convolve(self, conv: Callable[..., Tensor], input: Tensor) -> Tensor:
        """``conv`` (``F.conv2d`` or a fused form of it) over input in this layer's settings."""
        if self.padding_mode == "zeros":
            return conv(
                input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
            )
        padded = F.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
        return conv(padded, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MaxPool2d(Module):
    """Max over windows; PyTorch's arguments, in its order (``dilation`` must be 1 here)."""

    def __init__(
        self,
        kernel_size: Pair,
        stride: Pair | None = None,
        padding: Pair = 0,
        dilation: Pair = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size, self.padding, self.dilation = kernel_size, padding, dilation
        self.stride = kernel_size if stride is None else stride
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, input: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        return F.max_pool2d(
            input,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
            return_indices=self.return_indices,
        )

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )


class ReLU(Module):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.relu(input, self.inplace)

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope, self.inplace)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class GELU(Module):
    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, input: Tensor) -> Tensor:
        return F.gelu(input, self.approximate)

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    def forward(self, input: Tensor) -> Tensor:
        return F.tanh(input)


class Sigmoid(Module):
    def forward(self, input: Tensor) -> Tensor:
        return F.sigmoid(input)


class Identity(Module):
    """Returns its input; takes (and ignores) any constructor arguments, as PyTorch's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Any) -> Any:
        return input


class Dropout(Module):
    """Zeroes elements with probability p while training; identity in eval mode. The
    channel-wise Dropout1d/2d/3d share it, each with its functional op."""

    op = staticmethod(F.dropout)

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, input: Tensor) -> Tensor:
        return self.op(input, self.p, self.training, self.inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout1d(Dropout):
    op = staticmethod(F.dropout1d)


class Dropout2d(Dropout):
    op = staticmethod(F.dropout2d)


class Dropout3d(Dropout):
    op = staticmethod(F.dropout3d)


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input: Tensor) -> Tensor:
        return F.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
    """Axis ``dim`` of the input split into ``unflattened_size`` (one entry may be -1)."""

    def __init__(self, dim: int, unflattened_size: tuple[int, ...] | list[int]) -> None:
        super().__init__()
        self.dim, self.unflattened_size = dim, tuple(unflattened_size)

    def forward(self, input: Tensor) -> Tensor:
        if not -input.ndim <= self.dim < input.ndim:
            raise IndexError(f"Unflatten: dim {self.dim} is out of range for shape {input.shape}")
        axis = self.dim % input.ndim
        shape = input.shape[:axis] + self.unflattened_size + input.shape[axis + 1 :]
        known = int(np.prod([n for n in self.unflattened_size if n != -1]))
        if (-1 not in self.unflattened_size and known != input.shape[axis]) or (
            -1 in self.unflattened_size and (known == 0 or input.shape[axis] % known)
        ):
            raise RuntimeError(
                f"unflatten: Provided sizes {self.unflattened_size} don't multiply up to the "
                f"size of dim {self.dim} ({input.shape[axis]}) in the input tensor"
            )
        return input.reshape(*shape)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
