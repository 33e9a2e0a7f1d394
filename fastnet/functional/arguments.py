"""Argument normalisers shared by the ops here and the layers of ``fastnet.nn``.

* ``Pair``: an int or a pair of ints, as PyTorch's ``kernel_size``, ``stride``, ``padding``.
* ``to_pair(value, name)``: ``Pair`` → (int, int), both non-negative; ``name`` goes in the error.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Pair", "to_pair"]

Pair = int | tuple[int, int]


def to_pair(value: Any, name: str) -> tuple[int, int]:
    """``value`` as (int, int): an int n gives (n, n); a pair is checked and converted."""
    if value.__class__ is int and value >= 0:  # the layers' own arguments, on every call
        return value, value
    if (
        value.__class__ is tuple
        and len(value) == 2
        and value[0].__class__ is int
        and value[1].__class__ is int
        and min(value) >= 0
    ):
        return value
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or any(int(v) != v or v < 0 for v in pair):
        raise ValueError(f"{name} must be a non-negative int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])
