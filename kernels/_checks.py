"""Argument checks shared by the kernel families: dtypes and shapes, with errors naming the op."""
from __future__ import annotations

import operator
from typing import Any, Sequence

import numpy as np

# The dtypes every floating-point kernel is compiled for.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_float_dtype(array: Any, name: str, op: str) -> None:
    """TypeError unless ``array`` is float32 or float64 (the dtypes every kernel is built for)."""
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op} expects {name} of dtype float32 or float64, got {array.dtype}")


def as_shape(x_shape: Sequence[int], op: str) -> tuple[int, ...]:
    """``x_shape`` as a tuple of non-negative ints, or a TypeError/ValueError naming ``op``."""
    try:
        shape = tuple(operator.index(size) for size in x_shape)
    except TypeError:
        raise TypeError(f"{op} expects x_shape as a sequence of ints, got {x_shape!r}") from None
    if min(shape, default=0) < 0:
        raise ValueError(f"{op} expects a non-negative x_shape, got {shape}")
    return shape
