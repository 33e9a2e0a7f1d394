"""The kernel tests on a GPU host: NumPy arguments go to the device and the results come back.

The kernel tests call ``<op>_cuda`` entry points with NumPy arrays. In Numba's simulator those
are the device arrays. On a GPU the entry points must get CuPy arrays: the launchers allocate
their outputs on the device of their inputs, and the CuPy code paths (``array_module(x) is
cupy``) are what a user runs. :func:`on_device` wraps an entry point so that a test's call runs
on the device and reads as it does in the simulator:

* every NumPy array among the arguments (positional, keyword, inside tuples and lists) is
  uploaded with its layout kept (a transposed or strided test input stays one, so the launchers'
  contiguity checks see what the test made); one array passed twice is uploaded once;
* after the call, each uploaded array whose device copy changed is copied back into the caller's
  array when that is writable (in-place kernels: optimizer updates, ``out=``). Unchanged ones are
  left alone, so an input that aliases an output cannot overwrite the result with stale values;
* device arrays in the result come back as NumPy, with their layout; where a result is an
  uploaded argument or a view of one, the caller gets its own array (or the same view of it),
  so ``np.shares_memory(returned, out)`` keeps its meaning.

Calls the library makes (a ``fastnet`` module calling an entry point, e.g. the cuda device or a
launcher calling another) and calls without NumPy arrays pass through untouched: the wrapper
stands in for a test's own uploads, never for the library's.

The device is injected as :class:`DeviceArrays`; the tests exercise the wrapper in the simulator
with a stand-in device whose "uploads" are distinct NumPy copies.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import re
import sys
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from fastnet.kernels._contract import family_module_names


@dataclasses.dataclass(frozen=True)
class DeviceArrays:
    """How arrays reach one device and come back.

    ``upload(numpy_array)`` and ``download(device_array)`` copy with the same shape, dtype and
    strides; ``address(device_array)`` is the address of its first element."""

    array_type: type
    upload: Callable[[np.ndarray], Any]
    download: Callable[[Any], np.ndarray]
    address: Callable[[Any], int]


def byte_span(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> tuple[int, int]:
    """(lowest, one past the highest) byte an array of this layout touches, relative to its first
    element (negative strides reach below it)."""
    low = sum(min(0, (size - 1) * stride) for size, stride in zip(shape, strides, strict=True))
    high = sum(max(0, (size - 1) * stride) for size, stride in zip(shape, strides, strict=True))
    return low, high + itemsize


def strided_empty(xp: Any, shape: tuple[int, ...], dtype: Any, strides: tuple[int, ...]) -> Any:
    """An uninitialised ``xp`` (NumPy or CuPy) array with exactly these strides, in a buffer just
    large enough for them."""
    dtype = np.dtype(dtype)
    if 0 in shape:
        return xp.empty(shape, dtype)
    low, high = byte_span(shape, strides, dtype.itemsize)
    raw = xp.empty(high - low, np.uint8)
    if xp is np:
        return np.ndarray(shape, dtype, buffer=raw, offset=-low, strides=strides)
    return xp.ndarray(shape, dtype, memptr=raw.data + (-low), strides=strides)


def copy_with_layout(array: Any, xp: Any, convert: Callable[[Any], Any]) -> Any:
    """``array`` copied into a new ``xp`` array of the same strides; ``convert`` moves the values
    to ``xp`` (e.g. ``cupy.asarray``, ``cupy.asnumpy``)."""
    copy = strided_empty(xp, tuple(array.shape), array.dtype, tuple(array.strides))
    copy[...] = convert(array)
    return copy


def numpy_view_at(original: np.ndarray, offset: int, like: Any) -> np.ndarray:
    """The view of ``original``'s memory that starts ``offset`` bytes from its first element and
    has ``like``'s shape, dtype and strides (``original`` stays alive while the view does)."""
    dtype = np.dtype(like.dtype)
    interface = dict(
        version=3,
        shape=tuple(like.shape),
        typestr=dtype.str,
        descr=dtype.descr,
        strides=tuple(like.strides),
        data=(original.__array_interface__["data"][0] + offset, not original.flags.writeable),
    )
    return np.asarray(_Memory(interface, original))


class _Memory:
    """Memory handed to NumPy through the array interface, keeping its owner alive."""

    def __init__(self, interface: dict, owner: np.ndarray) -> None:
        self.__array_interface__ = interface
        self.owner = owner


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return np.array_equal(
        np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8)
    )


def _called_by_the_library() -> bool:
    # two frames up: past on_device's wrapper, the function that called the entry point
    caller = sys._getframe(2).f_globals.get("__name__", "")
    return caller == "fastnet" or caller.startswith("fastnet.")


def on_device(function: Callable[..., Any], device: DeviceArrays) -> Callable[..., Any]:
    """``function`` called with its NumPy array arguments on ``device`` (see the module
    docstring)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if _called_by_the_library():
            return function(*args, **kwargs)
        uploaded: dict[int, tuple[np.ndarray, Any]] = {}  # id(original) -> (original, device)

        def upload(value: Any) -> Any:
            if isinstance(value, np.ndarray):
                if id(value) not in uploaded:
                    uploaded[id(value)] = (value, device.upload(value))
                return uploaded[id(value)][1]
            if isinstance(value, (tuple, list)):
                return type(value)(upload(item) for item in value)
            return value

        device_args = upload(args)
        device_kwargs = {name: upload(value) for name, value in kwargs.items()}
        if not uploaded:
            return function(*args, **kwargs)
        result = function(*device_args, **device_kwargs)
        # decide what changed before writing anything back: two arguments may share memory
        changed = [
            (original, values)
            for original, on_the_device in uploaded.values()
            if original.flags.writeable
            and not _same_bits(values := device.download(on_the_device), original)
        ]
        for original, values in changed:
            original[...] = values
        return _to_host(result, uploaded.values(), device)

    return wrapper


def _to_host(result: Any, uploaded: Any, device: DeviceArrays) -> Any:
    if isinstance(result, (tuple, list)):
        return type(result)(_to_host(item, uploaded, device) for item in result)
    if not isinstance(result, device.array_type):
        return result
    for original, on_the_device in uploaded:
        if result is on_the_device:
            return original
    if result.size:
        start = device.address(result)
        low, high = byte_span(tuple(result.shape), tuple(result.strides), result.dtype.itemsize)
        for original, on_the_device in uploaded:
            if not on_the_device.size:
                continue
            base = device.address(on_the_device)
            base_low, base_high = byte_span(
                tuple(on_the_device.shape), tuple(on_the_device.strides), original.itemsize
            )
            if base + base_low <= start + low and start + high <= base + base_high:
                # a view of an uploaded argument: the same view of the caller's array (uploads
                # keep strides, so byte offsets from the first element agree)
                return numpy_view_at(original, start - base, result)
    return device.download(result)


# a public function named like ``matmul_cuda`` or ``matmul_cuda_naive``
_CUDA_ENTRY_POINT = re.compile(r"[a-z0-9]_cuda(_|$)")


def cuda_entry_points(module: ModuleType) -> list[str]:
    """The names of ``module``'s CUDA entry points: its family's ``<op>_cuda`` and every other
    public function of its own named ``..._cuda`` or ``..._cuda_...`` (never a kernel itself)."""
    family = getattr(module, "FAMILY", None)
    names = {f"{op}_cuda" for op in family.ops} if family is not None else set()
    names.update(
        name
        for name, value in vars(module).items()
        if _CUDA_ENTRY_POINT.search(name)
        and not name.startswith("_")
        and inspect.isfunction(value)
        and value.__module__ == module.__name__
    )
    return sorted(names)


def run_entry_points_on(
    device: DeviceArrays, set_attribute: Callable[[Any, str, Any], None] = setattr
) -> None:
    """Replace every family module's CUDA entry points by :func:`on_device` wrappers (through
    ``set_attribute``: a test passes ``monkeypatch.setattr``)."""
    for name in family_module_names():
        module = importlib.import_module(name)
        for entry_point in cuda_entry_points(module):
            set_attribute(module, entry_point, on_device(getattr(module, entry_point), device))


def cupy_arrays() -> DeviceArrays:
    """The GPU through CuPy."""
    import cupy

    return DeviceArrays(
        array_type=cupy.ndarray,
        upload=lambda array: copy_with_layout(array, cupy, cupy.asarray),
        download=lambda array: copy_with_layout(array, np, cupy.asnumpy),
        address=lambda array: array.data.ptr,
    )
