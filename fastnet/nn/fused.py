"""Fused layers: a Conv2d or a Linear and the ReLU after it as one op.

:class:`ConvReLU2d` computes relu(conv2d(x)) through ``F.conv2d_relu`` and :class:`LinearReLU`
relu(linear(x)) through ``F.linear_relu``: the values of the two layers in a row, in one graph
node, without the separate ReLU's output and Python path (PyTorch's
``torch.ao.nn.intrinsic.ConvReLU2d`` and ``LinearReLU`` are the same pairs, fused for inference).
:func:`fastnet.inference.optimize_for_inference` makes them from the consecutive pairs of a
model's Sequentials. Each is its layer with another forward: same constructor, same parameters
under the same names, so a state dict moves between a layer and its fused form.
"""

from __future__ import annotations

from typing import TypeVar

from .. import functional as F
from ..tensor import Tensor
from .layers import Conv2d, Linear

__all__ = ["ConvReLU2d", "LinearReLU"]

Fused = TypeVar("Fused", bound="_FusedWithReLU")


class _FusedWithReLU:
    """What both fused layers share: :meth:`fuse`, from the plain layer ``plain``."""

    plain: type

    @classmethod
    def fuse(cls: type[Fused], layer: Conv2d | Linear) -> Fused:
        """``layer`` followed by a ReLU, as one layer holding ``layer``'s own parameters."""
        if type(layer) is not cls.plain:
            raise TypeError(
                f"{cls.__name__}.fuse expects a {cls.plain.__name__}, got {type(layer).__name__}"
            )
        fused = cls.__new__(cls)
        fused.__dict__.update(layer.__dict__)  # its parameters and settings, shared, not copied
        return fused


class ConvReLU2d(_FusedWithReLU, Conv2d):
    """relu(conv2d(x)) in one op; built like :class:`~fastnet.nn.Conv2d`, or from one by
    :meth:`fuse`."""

    plain = Conv2d

    def forward(self, input: Tensor) -> Tensor:
        return self._convolve(F.conv2d_relu, input)


class LinearReLU(_FusedWithReLU, Linear):
    """relu(linear(x)) in one op; built like :class:`~fastnet.nn.Linear`, or from one by
    :meth:`fuse`."""

    plain = Linear

    def forward(self, input: Tensor) -> Tensor:
        return F.linear_relu(input, self.weight, self.bias)
