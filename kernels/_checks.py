"""Argument checks shared by the kernel families: dtypes and shapes, with errors naming the op."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._cuda import array_module

# The dtypes every floating-point kernel is compiled for.
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_float_dtype(array: Any, name: str, op: str) -> None:
    """TypeError unless ``array`` is float32 or float64 (the dtypes every kernel is built for)."""
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op} expects {name} of dtype float32 or float64, got {array.dtype}")


def check_float_matrix(array: Any, name: str, op: str) -> None:
    """TypeError or ValueError unless ``array`` is a 2-D float32 or float64 array."""
    check_float_dtype(array, name, op)
    if array.ndim != 2:
        raise ValueError(
            f"{op}: {name} must be 2-D (rows, columns), got shape {tuple(array.shape)}"
        )


def as_shape(x_shape: Sequence[int], op: str) -> tuple[int, ...]:
    """``x_shape`` as a tuple of non-negative ints, or a TypeError/ValueError naming ``op``."""
    try:
        shape = tuple(operator.index(size) for size in x_shape)
    except TypeError:
        raise TypeError(f"{op} expects x_shape as a sequence of ints, got {x_shape!r}") from None
    if min(shape, default=0) < 0:
        raise ValueError(f"{op} expects a non-negative x_shape, got {shape}")
    return shape


def flat_matching(op: str, **arrays: Any) -> list[Any]:
    """The arrays, C-contiguous and raveled, after checking that they agree with the first in
    array module (NumPy or CuPy), shape and dtype, and that the first is float32 or float64:
    the arguments of an elementwise kernel. Errors name ``op`` and the arguments."""
    (first_name, first), *others = arrays.items()
    if not (hasattr(first, "shape") and hasattr(first, "dtype")):
        raise TypeError(f"{op}: {first_name} must be an array, got {type(first).__name__}")
    if first.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {first_name} dtype must be float32 or float64, got {first.dtype}")
    xp = array_module(first)
    for name, array in others:
        if array_module(array) is not xp or not hasattr(array, "shape"):
            raise TypeError(
                f"{op}: {name} is a {type(array).__name__} but {first_name} is a "
                f"{type(first).__name__}"
            )
        if array.shape != first.shape:
            raise ValueError(
                f"{op}: {name} shape {tuple(array.shape)} does not match {first_name} "
                f"shape {tuple(first.shape)}"
            )
        if array.dtype != first.dtype:
            raise TypeError(
                f"{op}: {name} dtype {array.dtype} does not match {first_name} dtype {first.dtype}"
            )
    if xp is np:  # NumPy's ravel is a view exactly when the array is C-contiguous
        return [array.ravel() for array in arrays.values()]
    return [xp.ascontiguousarray(array).reshape(-1) for array in arrays.values()]


def chunks_of(op: str, batch: int, chunk_images: Any) -> int:
    """How many chunks of ``chunk_images`` images a batch of ``batch`` makes (at least one), after
    checking ``chunk_images`` is a positive int: the chunked convolutions' argument."""
    if isinstance(chunk_images, bool) or not isinstance(chunk_images, (int, np.integer)):
        raise TypeError(f"{op}: chunk_images must be an int, got {chunk_images!r}")
    if chunk_images < 1:
        raise ValueError(f"{op}: chunk_images must be positive, got {chunk_images}")
    return max(1, -(-batch // int(chunk_images)))


def output_gradient(op: str, dy: Any, shape: tuple, x: Any) -> Any:
    """dy C-contiguous, after checking it has the forward output's ``shape`` and x's dtype."""
    if tuple(dy.shape) != shape or dy.dtype != x.dtype:
        raise ValueError(
            f"{op} expects dy of shape {shape} and dtype {x.dtype}, got {tuple(dy.shape)} "
            f"{dy.dtype}"
        )
    return array_module(dy).ascontiguousarray(dy)


def bias_or_zeros(op: str, bias: Any, channels: int, x: Any) -> Any:
    """bias C-contiguous after checking it is (channels,) of x's dtype, or zeros when None."""
    xp = array_module(x)
    if bias is None:
        return xp.zeros(channels, x.dtype)
    if tuple(bias.shape) != (channels,) or bias.dtype != x.dtype:
        raise ValueError(
            f"{op} expects bias of shape ({channels},) and dtype {x.dtype}, got "
            f"{tuple(bias.shape)} {bias.dtype}"
        )
    return xp.ascontiguousarray(bias)


def planned_arrays(*arrays: Any) -> tuple:
    """What a kernel's plan (a call checked once, then run many times) fixes of its arrays: each
    one's type, shape and dtype; None stays None."""
    return tuple(
        None if array is None else (array.__class__, array.shape, array.dtype) for array in arrays
    )


def check_planned(op: str, names: Sequence[str], planned: tuple, arrays: Sequence[Any]) -> None:
    """ValueError, naming every array, unless ``arrays`` have the ``planned`` types, shapes and
    dtypes (:func:`planned_arrays`)."""
    now = planned_arrays(*arrays)
    if now != planned:

        def described(entries: tuple) -> str:
            return ", ".join(
                f"{name} None" if entry is None else f"{name} {entry[1]} {entry[2]}"
                for name, entry in zip(names, entries, strict=True)
            )

        raise ValueError(f"{op}: planned for {described(planned)}, called with {described(now)}")
