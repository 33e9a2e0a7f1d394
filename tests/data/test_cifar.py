"""CIFAR-10 on an official-format fixture built from the 20 real sample images (no download)."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import tarfile

import numpy as np
import pytest

import fastnet.data.cifar as cifar
from fastnet.data import (
    CIFAR10,
    ChecksumError,
    CorruptFileError,
    DatasetNotFoundError,
    extract_cifar10,
)

FOLDER = "cifar-10-batches-py"


@pytest.fixture
def batch_files(cifar_sample, cifar_batch_files) -> dict[str, bytes]:
    return cifar_batch_files(*cifar_sample)


def _write_folder(folder, files: dict[str, bytes], manifest: bool = True):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    if manifest:
        digests = {name: hashlib.sha256(content).hexdigest() for name, content in files.items()}
        (folder / cifar.MANIFEST_NAME).write_text(json.dumps({"sha256": digests}))
    return folder


@pytest.fixture
def cifar_root(tmp_path, batch_files):
    """A data folder holding cifar-10-batches-py/ with its manifest."""
    _write_folder(tmp_path / "data" / FOLDER, batch_files)
    return tmp_path / "data"


def _fail_if_unpickled(monkeypatch):
    def must_not_unpickle(data, source):
        raise AssertionError(f"unpickled {source} before its checksum matched")

    monkeypatch.setattr(cifar, "load_array_pickle", must_not_unpickle)


def test_test_batch_matches_the_pngs(cifar_root, cifar_sample):
    pngs, labels = cifar_sample
    test = CIFAR10(root=cifar_root, train=False, download=False)
    assert test.directory == cifar_root / FOLDER
    assert test.images.shape == (20, 3, 32, 32) and test.images.dtype == np.uint8
    assert test.labels.dtype == np.int64 and test.labels[0] == 3 and test.classes[3] == "cat"
    np.testing.assert_array_equal(test.labels, labels)
    np.testing.assert_array_equal(test.images, pngs.transpose(0, 3, 1, 2))
    image, label = test[0]
    assert image.shape == (3, 32, 32) and image.dtype == np.float32 and label == 3
    np.testing.assert_array_equal(image, pngs[0].transpose(2, 0, 1).astype(np.float32) / 255)


def test_train_split_joins_the_five_batches_in_order(cifar_root, cifar_sample, monkeypatch):
    pngs, labels = cifar_sample
    monkeypatch.setenv("FASTNET_DATA", str(cifar_root))
    train = CIFAR10(train=True, download=False)
    np.testing.assert_array_equal(train.images, pngs.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(train.labels, labels)


def test_changed_batch_is_rejected_without_being_unpickled(cifar_root, monkeypatch):
    _fail_if_unpickled(monkeypatch)
    with pytest.raises(AssertionError, match="unpickled"):  # the patch sits on the real path
        CIFAR10(root=cifar_root, train=False, download=False)
    path = cifar_root / FOLDER / "test_batch"
    content = bytearray(path.read_bytes())
    content[-100] ^= 1
    path.write_bytes(bytes(content))
    recorded = json.loads((cifar_root / FOLDER / cifar.MANIFEST_NAME).read_text())["sha256"][
        "test_batch"
    ]
    with pytest.raises(ChecksumError) as caught:
        CIFAR10(root=cifar_root, train=False, download=False)
    message = str(caught.value)
    assert (
        str(path) in message
        and recorded in message
        and cifar.CIFAR10_BATCH_MD5["test_batch"] in message
    )
    assert hashlib.sha256(bytes(content)).hexdigest() in message


def test_batch_without_manifest_must_be_the_official_file(tmp_path, batch_files, monkeypatch):
    _write_folder(tmp_path / FOLDER, batch_files, manifest=False)
    _fail_if_unpickled(monkeypatch)
    with pytest.raises(
        ChecksumError,
        match=r"test_batch: expected md5 40351d587109b95175f43aff81a1287e \(official\)",
    ):
        CIFAR10(root=tmp_path, train=False, download=False)


def test_official_md5_alone_is_accepted(tmp_path, batch_files, monkeypatch):
    _write_folder(tmp_path / FOLDER, batch_files, manifest=False)
    official = {name: hashlib.md5(content).hexdigest() for name, content in batch_files.items()}
    monkeypatch.setattr(cifar, "CIFAR10_BATCH_MD5", official)
    assert len(CIFAR10(root=tmp_path, train=True, download=False)) == 20


class _Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_verified_pickle_naming_a_function_is_refused(tmp_path, capsys):
    hostile = pickle.dumps({b"data": _Exploit()}, protocol=4)
    _write_folder(tmp_path / FOLDER, {"test_batch": hostile})
    with pytest.raises(
        CorruptFileError,
        match=r"test_batch: cannot unpickle: refusing to load global builtins\.print",
    ):
        CIFAR10(root=tmp_path, train=False, download=False)
    assert "must never run" not in capsys.readouterr().out


@pytest.mark.parametrize(
    "batch, problem",
    [
        ({b"labels": [1, 2]}, "b'data' is not"),
        ({b"data": np.zeros((2, 3072), np.float32), b"labels": [1, 2]}, "b'data' is not"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1]}, "b'labels' is not a list of 2"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 10]}, "ints in 0-9"),
        ([1, 2], "b'data' is not"),
    ],
)
def test_malformed_batches_are_rejected(tmp_path, py2_pickle, batch, problem):
    _write_folder(tmp_path / FOLDER, {"test_batch": py2_pickle(batch)})
    with pytest.raises(CorruptFileError, match=problem):
        CIFAR10(root=tmp_path, train=False, download=False)


def _archive(files: dict[str, bytes], extra: list[tarfile.TarInfo] = ()) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        folder = tarfile.TarInfo(FOLDER)
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, content in files.items():
            info = tarfile.TarInfo(f"{FOLDER}/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        for info in extra:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buffer.getvalue()


def _accept_archive(monkeypatch, archive: bytes) -> None:
    monkeypatch.setattr(cifar, "CIFAR10_ARCHIVE_MD5", hashlib.md5(archive).hexdigest())


def test_archive_in_root_is_verified_extracted_and_manifested(
    tmp_path, cache_dir, batch_files, monkeypatch
):
    archive = _archive(batch_files)
    _accept_archive(monkeypatch, archive)
    (tmp_path / cifar.CIFAR10_ARCHIVE).write_bytes(archive)
    test = CIFAR10(root=tmp_path, train=False, download=False)
    assert test.directory == cache_dir / FOLDER and test.labels[0] == 3
    manifest = json.loads((cache_dir / FOLDER / cifar.MANIFEST_NAME).read_text())
    assert manifest["sha256"]["test_batch"] == hashlib.sha256(batch_files["test_batch"]).hexdigest()
    assert sorted(manifest["sha256"]) == sorted(batch_files)
    assert sorted(p.name for p in cache_dir.iterdir()) == [FOLDER]  # no staging folder left
    assert (tmp_path / cifar.CIFAR10_ARCHIVE).exists()  # the user's archive is left alone


def test_download_fetches_verifies_and_extracts_into_the_cache(
    tmp_path, cache_dir, batch_files, monkeypatch
):
    archive = _archive(batch_files)
    _accept_archive(monkeypatch, archive)
    (tmp_path / "host").mkdir()
    (tmp_path / "host" / "cifar.tgz").write_bytes(archive)
    monkeypatch.setattr(
        cifar,
        "CIFAR10_URLS",
        (f"file://{tmp_path}/down/x.tgz", f"file://{tmp_path}/host/cifar.tgz"),
    )
    train = CIFAR10(train=True)
    assert train.directory == cache_dir / FOLDER and len(train) == 20
    assert sorted(p.name for p in cache_dir.iterdir()) == [
        FOLDER
    ]  # archive removed after extraction


def test_archive_with_wrong_md5_is_not_opened(tmp_path, cache_dir, batch_files, monkeypatch):
    (tmp_path / cifar.CIFAR10_ARCHIVE).write_bytes(_archive(batch_files))

    def must_not_open(*args, **kwargs):
        raise AssertionError("opened an unverified archive")

    monkeypatch.setattr(tarfile, "open", must_not_open)
    with pytest.raises(
        ChecksumError, match=f"{cifar.CIFAR10_ARCHIVE}: expected md5 {cifar.CIFAR10_ARCHIVE_MD5}"
    ):
        CIFAR10(root=tmp_path, train=False, download=False)
    assert not (cache_dir / FOLDER).exists()


def _member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    info.size = 1 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize(
    "member, problem",
    [
        (_member(f"{FOLDER}/../escaped"), "leaves the folder"),
        (_member("/tmp/fastnet-absolute-escape"), "absolute path"),
        (_member(f"{FOLDER}/link", tarfile.SYMTYPE, "/etc/passwd"), "a link or special file"),
        (
            _member(f"{FOLDER}/hard", tarfile.LNKTYPE, f"{FOLDER}/test_batch"),
            "a link or special file",
        ),
        (_member(f"{FOLDER}/fifo", tarfile.FIFOTYPE), "a link or special file"),
        (_member("elsewhere/file"), f"outside {FOLDER}/"),
    ],
)
def test_unsafe_archive_members_are_refused(
    tmp_path, cache_dir, batch_files, monkeypatch, member, problem
):
    archive = _archive(batch_files, [member])
    _accept_archive(monkeypatch, archive)
    (tmp_path / cifar.CIFAR10_ARCHIVE).write_bytes(archive)
    with pytest.raises(CorruptFileError, match=f"refusing to extract '{member.name}': .*{problem}"):
        extract_cifar10(tmp_path / cifar.CIFAR10_ARCHIVE, cache_dir)
    assert list(cache_dir.iterdir()) == []  # nothing extracted, staging removed
    assert not (cache_dir.parent / "escaped").exists()


def test_missing_cifar_without_download_lists_where_it_looked(tmp_path, cache_dir):
    with pytest.raises(DatasetNotFoundError, match=f"{tmp_path / FOLDER}.*{cache_dir}"):
        CIFAR10(root=tmp_path, download=False)
