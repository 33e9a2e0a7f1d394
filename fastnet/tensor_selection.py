"""The selection methods of :class:`~fastnet.tensor.Tensor`: where, masked_fill, clamp, maximum,
minimum, gather, scatter, tril and triu.

:class:`Selection` is a mixin of Tensor, in a module of its own so that tensor.py stays one
concern.
"""

from __future__ import annotations

__all__ = ["Selection"]


class Selection:
    """Selection methods of Tensor (which holds ``data``, ``device`` and the shape)."""

    __slots__ = ()
