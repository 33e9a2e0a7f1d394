"""Where the data package's randomness comes from when no seed is given.

Unseeded DataLoaders draw their seed, and random transforms called without a generator draw
their choices, from the framework's host generator (`fastnet.random.generator()`), so
`fastnet.manual_seed(s)` makes shuffling and augmentation reproducible too.
"""

from __future__ import annotations

from ..random import generator as default_generator

__all__ = ["default_generator", "draw_seed"]


def draw_seed() -> int:
    """A fresh non-negative seed from the framework's host generator."""
    return int(default_generator().integers(0, 2**63))
