"""The framework's random state: one seed drives initialisation, dropout and shuffling.

``fastnet.manual_seed(s)`` reseeds the NumPy generator that layer initialisers and data
shuffling draw from, and the device generators dropout draws from, so that two CPU runs with
the same seed give identical results. Initial weights are always drawn on the CPU (then moved),
so the same seed gives the same weights on every device.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_generator = np.random.default_rng()
_cuda_generator: Any = None


def manual_seed(seed: int) -> None:
    """Seed every random stream fastnet uses."""
    global _generator, _cuda_generator
    _generator = np.random.default_rng(seed)
    _cuda_generator = None  # rebuilt from the new host generator on first use


def generator() -> np.random.Generator:
    """The host generator (initialisation, shuffling, CPU dropout)."""
    return _generator


def get_state() -> dict:
    """The host generator's state, JSON-serialisable (for checkpoints)."""
    return _generator.bit_generator.state


def set_state(state: dict) -> None:
    _generator.bit_generator.state = state


def uniform(shape: tuple, device: Any) -> Any:
    """U[0, 1) samples in float32 on ``device`` (drawn by the GPU's own generator on a GPU)."""
    global _cuda_generator
    if device.xp is np:
        return _generator.random(shape, dtype=np.float32)
    if _cuda_generator is None:
        _cuda_generator = device.xp.random.default_rng(int(_generator.integers(2**63)))
    return _cuda_generator.random(shape, dtype=np.float32)
