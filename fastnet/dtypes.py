"""PyTorch's type promotion, as dtype rules (no tensors here; fastnet.tensor applies them).

Categories rank bool < integer < floating < complex. Operands come in three ranks: tensors with
dimensions, 0-d tensors, Python scalars. Within a rank the wider type wins, an int with a float
giving that float (never float64 from an int); a lower rank changes the result only when its
category is higher. So float32 stays float32 next to int tensors and Python scalars, and an int
tensor with a Python float gives the default float dtype, float32.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["CATEGORY", "DEFAULT_DTYPE", "promoted", "scalar_dtype"]

DEFAULT_DTYPE = np.float32
CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def _promote_pair(a: np.dtype, b: np.dtype) -> np.dtype:
    """PyTorch's table: the higher category wins (an int with a float gives that float, never
    float64); within one category, the wider type."""
    ca, cb = CATEGORY[a.kind], CATEGORY[b.kind]
    if ca != cb:
        return a if ca > cb else b
    return np.promote_types(a, b)


def _combine(higher: np.dtype | None, lower: np.dtype | None) -> np.dtype | None:
    """A lower-priority group changes the result only when its category is higher."""
    if higher is None:
        return lower
    if lower is not None and CATEGORY[lower.kind] > CATEGORY[higher.kind]:
        return _promote_pair(higher, lower)
    return higher


_BOOL, _INT64 = np.dtype(bool), np.dtype(np.int64)


def scalar_dtype(value: Any) -> np.dtype | None:
    """The dtype a Python (or NumPy) scalar stands for; None for anything else."""
    if isinstance(value, (bool, np.bool_)):
        return _BOOL
    if isinstance(value, (int, np.integer)):
        return _INT64
    if isinstance(value, (float, np.floating)):
        return np.dtype(DEFAULT_DTYPE)
    if isinstance(value, (complex, np.complexfloating)):
        return np.dtype(np.complex64)
    return None


def promoted(operands: Iterable[tuple[int, np.dtype]]) -> np.dtype:
    """The result dtype of ``(rank, dtype)`` operands; rank 0: a tensor with dimensions, 1: a 0-d
    tensor, 2: a Python scalar."""
    groups: list[np.dtype | None] = [None, None, None]
    for rank, dtype in operands:
        groups[rank] = dtype if groups[rank] is None else _promote_pair(groups[rank], dtype)
    result = _combine(groups[0], _combine(groups[1], groups[2]))
    if result is None:
        raise ValueError("promoted: no operands")
    return result
