"""Hostile data files (issue 15): a gzip bomb behind an IDX header, a pickle asking for a huge
array, and the valid protocol-2 CIFAR-10 batches that Python 3 writes."""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import struct
import time
import tracemalloc
import zlib

import numpy as np
import pytest

import fastnet.data.cifar as cifar
from fastnet.data import CIFAR10, CorruptFileError, encode_idx, read_idx
from fastnet.data._integrity import load_array_pickle

FOLDER = "cifar-10-batches-py"


def _gzip_stream(header: bytes, zero_bytes: int) -> bytes:
    """A gzip member of `header` then `zero_bytes` zeros, compressed as it is generated (a bomb
    of 2^36 zeros is 64 GiB inflated and a few MB compressed, without ever being held whole)."""
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)  # 31: write the gzip container
    chunks = [compressor.compress(header)]
    block = bytes(1 << 24)
    for _ in range(zero_bytes // len(block)):
        chunks.append(compressor.compress(block))
    chunks.append(compressor.compress(bytes(zero_bytes % len(block))))
    chunks.append(compressor.flush())
    return b"".join(chunks)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    """An IDX header declaring 2^36 uint8 elements (64 GiB), followed by 64 MiB of zeros."""
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 1 << 12, 1 << 12, 1 << 12)
    path = tmp_path_factory.mktemp("bomb") / "train-images-idx3-ubyte.gz"
    path.write_bytes(_gzip_stream(header, 1 << 26))
    return path


def test_a_gzip_bomb_is_refused_from_its_header_fast_and_without_allocating(bomb):
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(CorruptFileError, match=r"declares an array of shape \(4096, 4096"):
            read_idx(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 1.0
    assert peak < 4 << 20, f"{peak} bytes allocated to refuse a bomb"


def test_a_gzip_stream_longer_than_its_header_declares_is_refused_early(tmp_path):
    content = encode_idx(np.arange(12, dtype=np.uint8).reshape(3, 4))
    path = tmp_path / "padded.gz"
    path.write_bytes(_gzip_stream(content, 1 << 26))  # 64 MiB of zeros after the 12 elements
    tracemalloc.start()
    try:
        with pytest.raises(
            CorruptFileError, match="padded.gz: has trailing bytes.*more than 24 bytes"
        ):
            read_idx(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_gzipped_idx_files_of_several_members_still_read(tmp_path, rng):
    array = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    content = encode_idx(array)
    path = tmp_path / "two-members.gz"
    path.write_bytes(gzip.compress(content[:50]) + gzip.compress(content[50:]))
    np.testing.assert_array_equal(read_idx(path, hashlib.sha256(content).hexdigest()), array)


try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy 1.26
    from numpy.core.multiarray import _reconstruct


class _Reduces:
    """Pickles as the call `reduced` (a __reduce__ tuple): how a hostile file is written."""

    def __init__(self, *reduced):
        self.reduced = reduced

    def __reduce__(self):
        return self.reduced


HUGE = 1 << 36
HOSTILE_PICKLES = {
    "reconstruct 2^36 bytes": (
        _Reduces(_reconstruct, (np.ndarray, (HUGE,), b"b")),
        r"it declares an array of shape \(68719476736,\)",
    ),
    "call ndarray((2^36,))": (
        _Reduces(np.ndarray, ((HUGE,),)),
        "refusing to call numpy.ndarray",
    ),
    "object array of 2^33": (  # NumPy allocates an object array before it reads the list
        _Reduces(
            _reconstruct, (np.ndarray, (0,), b"b"), (1, (1 << 33,), np.dtype("O"), False, [1])
        ),
        "refusing dtype object",
    ),
}


@pytest.mark.parametrize("name", HOSTILE_PICKLES)
def test_a_pickle_cannot_make_the_array_constructor_allocate(name):
    hostile, problem = HOSTILE_PICKLES[name]
    payload = pickle.dumps(hostile, protocol=4)  # protocol 4: bytes need no _codecs.encode
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFileError, match=f"hostile: cannot unpickle: {problem}"):
            load_array_pickle(payload, "hostile")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_the_array_stand_ins_rebuild_ordinary_arrays(rng):
    array = rng.standard_normal((4, 3)).astype(np.float32)
    for protocol in (2, 3, 4):
        np.testing.assert_array_equal(load_array_pickle(pickle.dumps(array, protocol), "a"), array)


def test_a_protocol_2_batch_written_by_python_3_is_accepted(tmp_path, cifar_sample):
    pngs, labels = cifar_sample
    batch = {  # the official layout, as a Python 3 user writes it
        "batch_label": "testing batch 1 of 1",
        "labels": [int(label) for label in labels],
        "data": pngs.transpose(0, 3, 1, 2).reshape(20, 3072),
        "filenames": [f"image_{i:04d}.png" for i in range(20)],
    }
    folder = tmp_path / FOLDER
    folder.mkdir()
    for name, keys in (("test_batch", str), ("data_batch_1", bytes)):
        typed = {(key.encode() if keys is bytes else key): value for key, value in batch.items()}
        (folder / name).write_bytes(pickle.dumps(typed, protocol=2))
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    (folder / cifar.MANIFEST_NAME).write_text(json.dumps({"sha256": digests}))
    test = CIFAR10(root=tmp_path, train=False, download=False)
    np.testing.assert_array_equal(test.images, pngs.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(test.labels, labels)
    images, batch_labels = cifar.read_batch(folder / "data_batch_1", digests)
    np.testing.assert_array_equal(images, test.images)
    np.testing.assert_array_equal(batch_labels, labels)
