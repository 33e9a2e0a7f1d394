"""The IDX file format of MNIST and Fashion-MNIST: parse, validate, write.

An IDX file is a 4-byte magic number, `0x00 0x00 <type> <ndim>`, then `ndim` big-endian
uint32 dimensions, then the elements in C order, big-endian. MNIST images are type 0x08
(uint8) with dims (N, 28, 28); labels are type 0x08 with dims (N,). Files may be gzipped
(detected by the gzip magic number, not the file name).

`read_idx` streams: it decompresses the header alone first, refuses a file that declares more
than `MAX_ARRAY_BYTES` before reading further, then reads exactly the declared bytes and
refuses a stream that holds more, so a gzip bomb costs neither time nor memory.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from typing import BinaryIO

import numpy as np

from ._integrity import CorruptFileError, array_size_problem, check_sha256

_TYPE_CODES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def _check_magic(head: bytes, source: str) -> int:
    """The header's size in bytes, from its first 4 bytes; CorruptFileError if they are not IDX."""
    if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _TYPE_CODES or head[3] == 0:
        raise CorruptFileError(
            f"{source}: not an IDX file (magic bytes {head[:4].hex() or 'missing'})"
        )
    return 4 + 4 * head[3]


def _parse_header(header: bytes, source: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(dims, dtype, header size in bytes) of a whole IDX header."""
    header_bytes = _check_magic(header, source)
    if len(header) < header_bytes:
        raise CorruptFileError(
            f"{source}: truncated IDX header ({len(header)} bytes, need {header_bytes})"
        )
    dims = struct.unpack(f">{header[3]}I", header[4:header_bytes])
    return dims, np.dtype(_TYPE_CODES[header[2]]), header_bytes


def _check_length(
    source: str, dims: tuple[int, ...], dtype: np.dtype, expected: int, held: int, more: bool
) -> None:
    """CorruptFileError unless the file held exactly `expected` bytes (`held`, or more)."""
    if held == expected and not more:
        return
    state = "truncated" if held < expected else "has trailing bytes"
    amount = f"more than {expected}" if more else str(held)
    raise CorruptFileError(
        f"{source}: {state}: its header promises {dims} {dtype.name} elements, "
        f"{expected} bytes in all, but it holds {amount} bytes"
    )


def decode_idx(content: bytes, source: str | os.PathLike) -> np.ndarray:
    """The array held by the (decompressed) IDX bytes `content`, as a read-only view.

    Raises CorruptFileError naming `source` when the header is not IDX or the byte count
    differs from what the header promises (a truncated or padded file).
    """
    source = os.fspath(source)
    dims, dtype, header_bytes = _parse_header(content[: _check_magic(content, source)], source)
    expected = header_bytes + math.prod(dims) * dtype.itemsize
    _check_length(source, dims, dtype, expected, len(content), more=False)
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


def _read_exactly(stream: BinaryIO, source: str) -> bytes:
    """The IDX bytes of `stream`: the header, checked and size-limited before anything else is
    read, then exactly the elements it declares; refused if the stream ends early or goes on."""
    head = stream.read(4)
    header = head + stream.read(_check_magic(head, source) - 4)
    dims, dtype, header_bytes = _parse_header(header, source)
    problem = array_size_problem(dims, dtype.itemsize)
    if problem is not None:
        raise CorruptFileError(f"{source}: {problem}")
    content = header + stream.read(math.prod(dims) * dtype.itemsize)
    expected = header_bytes + math.prod(dims) * dtype.itemsize
    _check_length(source, dims, dtype, expected, len(content), more=bool(stream.read(1)))
    return content


def read_idx(
    path: str | os.PathLike, expected_sha256: str | None = None, source: str | None = None
) -> np.ndarray:
    """Read an IDX file (gzipped or raw); when given, check the SHA-256 of the decompressed bytes.

    Errors name `source` (default: the path). The structure is validated before the digest so
    that a truncated file is reported as truncated.
    """
    source = source or os.fspath(path)
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if gzipped:
            try:
                with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                    content = _read_exactly(stream, source)
            except (OSError, EOFError, zlib.error) as exc:
                raise CorruptFileError(f"{source}: damaged or truncated gzip data: {exc}") from exc
        else:
            content = _read_exactly(raw, source)
    array = decode_idx(content, source)
    if expected_sha256 is not None:
        check_sha256(content, expected_sha256, source)
    return array
