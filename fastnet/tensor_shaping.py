"""The shape and conversion methods of :class:`~fastnet.tensor.Tensor` that PyTorch users reach
for: squeeze, unsqueeze, expand, clone, and the dtype conversions.

:class:`Shaping` is a mixin of Tensor, in a module of its own so that tensor.py stays one concern.
"""

from __future__ import annotations

__all__ = ["Shaping"]


class Shaping:
    """Shape and conversion methods of Tensor (which holds ``data``, ``device`` and the shape)."""

    __slots__ = ()
