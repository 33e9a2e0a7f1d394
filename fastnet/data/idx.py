"""The IDX file format of MNIST and Fashion-MNIST: parse, validate, write.

An IDX file is a 4-byte magic number, `0x00 0x00 <type> <ndim>`, then `ndim` big-endian
uint32 dimensions, then the elements in C order, big-endian. MNIST images are type 0x08
(uint8) with dims (N, 28, 28); labels are type 0x08 with dims (N,). Files may be gzipped
(detected by the gzip magic number, not the file name).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ._integrity import CorruptFileError, check_sha256

_TYPE_CODES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def decode_idx(content: bytes, source: str | os.PathLike) -> np.ndarray:
    """The array held by the (decompressed) IDX bytes `content`, as a read-only view.

    Raises CorruptFileError naming `source` when the header is not IDX or the byte count
    differs from what the header promises (a truncated or padded file).
    """
    source = os.fspath(source)
    if (
        len(content) < 4
        or content[:2] != b"\0\0"
        or content[2] not in _TYPE_CODES
        or content[3] == 0
    ):
        raise CorruptFileError(
            f"{source}: not an IDX file (magic bytes {content[:4].hex() or 'missing'})"
        )
    ndim = content[3]
    header_bytes = 4 + 4 * ndim
    if len(content) < header_bytes:
        raise CorruptFileError(
            f"{source}: truncated IDX header ({len(content)} bytes, need {header_bytes})"
        )
    dims = struct.unpack(f">{ndim}I", content[4:header_bytes])
    dtype = np.dtype(_TYPE_CODES[content[2]])
    expected = header_bytes + math.prod(dims) * dtype.itemsize
    if len(content) != expected:
        state = "truncated" if len(content) < expected else "has trailing bytes"
        raise CorruptFileError(
            f"{source}: {state}: its header promises {dims} {dtype.name} elements, "
            f"{expected} bytes in all, but it holds {len(content)} bytes"
        )
    return np.frombuffer(content, dtype, offset=header_bytes).reshape(dims)


def encode_idx(array: np.ndarray) -> bytes:
    """The IDX bytes (uncompressed) of `array`; the inverse of decode_idx."""
    array = np.asarray(array)
    code = next(
        (c for c, name in _TYPE_CODES.items() if np.dtype(name) == array.dtype.newbyteorder(">")),
        None,
    )
    if code is None or array.ndim == 0:
        raise TypeError(f"IDX cannot hold a {array.ndim}-d {array.dtype} array")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=_TYPE_CODES[code]).tobytes()


def decompress(raw: bytes, source: str | os.PathLike) -> bytes:
    """`raw` gunzipped when it starts with the gzip magic number, else unchanged."""
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise CorruptFileError(
            f"{os.fspath(source)}: damaged or truncated gzip data: {exc}"
        ) from exc


def read_idx(
    path: str | os.PathLike, expected_sha256: str | None = None, source: str | None = None
) -> np.ndarray:
    """Read an IDX file (gzipped or raw); when given, check the SHA-256 of the decompressed bytes.

    Errors name `source` (default: the path). The structure is validated before the digest so
    that a truncated file is reported as truncated.
    """
    source = source or os.fspath(path)
    content = decompress(Path(path).read_bytes(), source)
    array = decode_idx(content, source)
    if expected_sha256 is not None:
        check_sha256(content, expected_sha256, source)
    return array
