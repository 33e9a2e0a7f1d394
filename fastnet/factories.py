"""Tensor factories with PyTorch's signatures: zeros, ones, full, empty, arange, linspace, eye,
rand, randn, randint, and their ``*_like`` forms.

Sizes come as varargs or one sequence (``zeros(2, 3)``, ``zeros((2, 3))``, ``zeros([])`` is 0-d;
``full`` and ``randint`` take one sequence, as PyTorch's). Every factory takes the keywords
``dtype=``, ``device=`` and ``requires_grad=`` (refused for non-floating dtypes, as ``Tensor``
refuses it). Result dtypes follow PyTorch: float32 unless asked otherwise; ``full`` takes the
dtype of its fill value (a Python int gives int64, a bool gives bool); ``arange`` gives int64
when start, end and step are all integers and float32 when one is a float; ``randint`` gives
int64; a ``*_like`` factory keeps its input's dtype and device.

Values: ``arange`` holds ``start + i·step`` for ``i < ceil((end − start) / step)``; ``linspace``
holds ``start + i·h`` for the first half and ``end − (steps − 1 − i)·h`` for the second, with
``h = (end − start) / (steps − 1)`` (PyTorch's formula: both ends exact); both are computed in
float64 and rounded once to the result dtype.

The random factories draw on the host from fastnet's generator (``fastnet.random``), so
``fastnet.manual_seed`` makes them reproducible and a seed gives the same values on every device;
``rand`` is U[0, 1), ``randn`` the standard normal, ``randint`` uniform over [low, high).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import random
from .backend import Device, get_device
from .dtypes import DEFAULT_DTYPE, scalar_dtype
from .tensor import Tensor, _dtype_of

__all__ = [
    "arange",
    "empty",
    "empty_like",
    "eye",
    "full",
    "full_like",
    "linspace",
    "ones",
    "ones_like",
    "rand",
    "rand_like",
    "randint",
    "randn",
    "randn_like",
    "zeros",
    "zeros_like",
]

Size = Sequence[int]


# ===================================================================== argument checks
def _size(op: str, sizes: tuple, size: Size | None = None) -> tuple[int, ...]:
    """The shape from varargs (``2, 3``), one sequence (``(2, 3)``) or the ``size=`` keyword,
    checked: integers, none negative."""
    if size is not None:
        if sizes:
            raise TypeError(f"{op}(): pass the size as arguments or as size=, not both")
        sizes = (size,)
    if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)):
        sizes = tuple(sizes[0])
    elif not sizes:
        raise TypeError(f"{op}(): missing the size (pass () for a 0-d tensor)")
    for value in sizes:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise TypeError(
                f"{op}(): the size must be a tuple of ints, got {type(value).__name__} in {sizes!r}"
            )
    shape = tuple(int(value) for value in sizes)
    if any(value < 0 for value in shape):
        raise RuntimeError(f"{op}(): sizes must be non-negative, got {list(shape)}")
    return shape


def _scalar(op: str, name: str, value: Any) -> Any:
    """A Python number from a number or a one-element tensor."""
    if isinstance(value, Tensor):
        value = value.item()
    if scalar_dtype(value) is None:
        raise TypeError(f"{op}(): {name} must be a number, got {type(value).__name__}")
    return value.item() if isinstance(value, np.generic) else value


def _finish(data: Any, device: Device, requires_grad: bool) -> Tensor:
    """A leaf tensor over ``data``; ``requires_grad`` refused for non-floating dtypes."""
    return Tensor._wrap(data, device).requires_grad_(requires_grad)


def _dtype(dtype: Any) -> np.dtype:
    """The dtype asked for, float32 when none was."""
    return np.dtype(DEFAULT_DTYPE) if dtype is None else _dtype_of(dtype)


def _float_dtype(op: str, dtype: Any) -> np.dtype:
    dtype = _dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{op}(): dtype {dtype} is not a floating-point dtype")
    return dtype


# ===================================================================== constant values
def zeros(
    *sizes: Any,
    size: Size | None = None,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    shape = _size("zeros", sizes, size)
    return full(shape, 0.0, dtype=_dtype(dtype), device=device, requires_grad=requires_grad)


def ones(
    *sizes: Any,
    size: Size | None = None,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    shape = _size("ones", sizes, size)
    return full(shape, 1.0, dtype=_dtype(dtype), device=device, requires_grad=requires_grad)


def full(
    size: Size,
    fill_value: Any,
    *,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """``size`` filled with ``fill_value``; the dtype is the fill value's (int64, bool or
    float32) unless ``dtype`` says otherwise."""
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"full(): the size must be a tuple of ints, got {type(size).__name__}")
    shape = _size("full", (size,))
    fill_value = _scalar("full", "fill_value", fill_value)
    dtype = scalar_dtype(fill_value) if dtype is None else _dtype_of(dtype)
    target = get_device(device)
    return _finish(target.xp.full(shape, fill_value, dtype=dtype), target, requires_grad)


def empty(
    *sizes: Any,
    size: Size | None = None,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """Uninitialised values (whatever the memory held)."""
    target = get_device(device)
    data = target.xp.empty(_size("empty", sizes, size), dtype=_dtype(dtype))
    return _finish(data, target, requires_grad)


def eye(
    n: int,
    m: int | None = None,
    *,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """The ``n × m`` identity (``m = n`` by default): ones on the main diagonal."""
    rows, columns = _size("eye", (n, n if m is None else m))
    target = get_device(device)
    data = target.xp.eye(rows, columns, dtype=_dtype(dtype))
    return _finish(data, target, requires_grad)


# ===================================================================== ranges
def arange(
    start: Any,
    end: Any = None,
    step: Any = 1,
    *,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """``start, start + step, ...`` below ``end`` (above it for a negative step); ``arange(n)``
    counts from 0. int64 when every argument is an integer, else float32."""
    if end is None:
        start, end = 0, start
    start, end = _scalar("arange", "start", start), _scalar("arange", "end", end)
    step = _scalar("arange", "step", step)
    if dtype is None:
        integral = all(isinstance(v, int) for v in (start, end, step))
        dtype = np.dtype(np.int64 if integral else DEFAULT_DTYPE)
    else:
        dtype = _dtype_of(dtype)
    if dtype.kind in "iub":  # PyTorch casts the arguments first: arange(0, 5, 1.5, int64) steps 1
        start, end, step = int(start), int(end), int(step)
    if step == 0:
        raise RuntimeError("arange(): step must be nonzero")
    if (end - start) * step < 0:
        raise RuntimeError(
            f"arange(): upper bound and lower bound inconsistent with step sign (start {start}, "
            f"end {end}, step {step})"
        )
    count = math.ceil((end - start) / step)
    target = get_device(device)
    if dtype.kind in "iu":
        data = target.xp.arange(start, start + count * step, step, dtype=dtype)
    else:
        data = (start + target.xp.arange(count, dtype=np.float64) * step).astype(dtype)
    return _finish(data, target, requires_grad)


def linspace(
    start: Any,
    end: Any,
    steps: int,
    *,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """``steps`` values evenly spaced from ``start`` to ``end``, both included."""
    start, end = _scalar("linspace", "start", start), _scalar("linspace", "end", end)
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"linspace(): steps must be an int, got {type(steps).__name__}")
    if steps < 0:
        raise RuntimeError(f"linspace(): number of steps must be non-negative, got {steps}")
    target = get_device(device)
    xp = target.xp
    positions = xp.arange(steps, dtype=np.float64)
    spacing = (end - start) / (steps - 1) if steps > 1 else 0.0
    values = xp.where(
        positions < max(steps // 2, 1),  # one step: start alone
        start + positions * spacing,
        end - (steps - 1 - positions) * spacing,
    )
    return _finish(values.astype(_dtype(dtype)), target, requires_grad)


# ===================================================================== random values
def _random(op: str, draw: Any, shape: tuple, dtype: Any, device: Any, grad: bool) -> Tensor:
    """``draw(generator, shape, dtype)`` on the host, moved to ``device``."""
    dtype = _float_dtype(op, dtype)
    native = dtype if dtype in (np.float32, np.float64) else np.float64  # what NumPy draws
    values = draw(random.generator(), shape, native).astype(dtype, copy=False)
    target = get_device(device)
    return _finish(target.asarray(values), target, grad)


def _uniform(generator: np.random.Generator, shape: tuple, dtype: np.dtype) -> np.ndarray:
    return generator.random(shape, dtype=dtype)


def _normal(generator: np.random.Generator, shape: tuple, dtype: np.dtype) -> np.ndarray:
    return generator.standard_normal(shape, dtype=dtype)


def rand(
    *sizes: Any,
    size: Size | None = None,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """Uniform samples from [0, 1)."""
    shape = _size("rand", sizes, size)
    return _random("rand", _uniform, shape, dtype, device, requires_grad)


def randn(
    *sizes: Any,
    size: Size | None = None,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """Samples of the standard normal distribution."""
    shape = _size("randn", sizes, size)
    return _random("randn", _normal, shape, dtype, device, requires_grad)


def randint(
    low: int,
    high: Any = None,
    size: Size | None = None,
    *,
    dtype: Any = None,
    device: str | Device | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """Integers drawn uniformly from [low, high): ``randint(high, size)`` or
    ``randint(low, high, size)``; int64 unless ``dtype`` says otherwise."""
    if size is None:  # randint(high, size): PyTorch's overload without low
        low, high, size = 0, low, high
    elif high is None:  # randint(high, size=size)
        low, high = 0, low
    if not isinstance(size, (tuple, list)):
        raise TypeError(f"randint(): size must be a tuple of ints, got {type(size).__name__}")
    shape = _size("randint", (size,))
    low, high = int(_scalar("randint", "low", low)), int(_scalar("randint", "high", high))
    if low >= high:
        raise RuntimeError(f"randint(): low must be less than high, got low={low} >= high={high}")
    values = random.generator().integers(low, high, shape, dtype=np.int64)
    target = get_device(device)
    data = target.asarray(values, dtype=np.dtype(np.int64) if dtype is None else _dtype_of(dtype))
    return _finish(data, target, requires_grad)


# ===================================================================== *_like
def _like(input: Tensor, dtype: Any, device: Any) -> dict:
    if not isinstance(input, Tensor):
        raise TypeError(f"expected a Tensor as input, got {type(input).__name__}")
    return {
        "dtype": input.dtype if dtype is None else dtype,
        "device": input.device if device is None else device,
    }


def zeros_like(
    input: Tensor, *, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    return zeros(input.shape, requires_grad=requires_grad, **_like(input, dtype, device))


def ones_like(
    input: Tensor, *, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    return ones(input.shape, requires_grad=requires_grad, **_like(input, dtype, device))


def full_like(
    input: Tensor,
    fill_value: Any,
    *,
    dtype: Any = None,
    device: Any = None,
    requires_grad: bool = False,
) -> Tensor:
    """``input``'s shape filled with ``fill_value``, in ``input``'s dtype (2.7 in an int64
    tensor is 2, as PyTorch)."""
    options = _like(input, dtype, device)
    return full(input.shape, fill_value, requires_grad=requires_grad, **options)


def empty_like(
    input: Tensor, *, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    return empty(input.shape, requires_grad=requires_grad, **_like(input, dtype, device))


def rand_like(
    input: Tensor, *, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    return rand(input.shape, requires_grad=requires_grad, **_like(input, dtype, device))


def randn_like(
    input: Tensor, *, dtype: Any = None, device: Any = None, requires_grad: bool = False
) -> Tensor:
    return randn(input.shape, requires_grad=requires_grad, **_like(input, dtype, device))
