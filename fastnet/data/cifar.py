"""CIFAR-10: 32x32 RGB images in 10 classes, 50,000 train and 10,000 test, in the official python
format.

Format (https://www.cs.toronto.edu/~kriz/cifar.html, "python version"): the folder
`cifar-10-batches-py/` holds `data_batch_1` ... `data_batch_5` (train) and `test_batch`, each a
Python 2 pickle of a dict (batches a user writes with Python 3's protocol 2 or later, keys
str or bytes, are read too): b"data" uint8 (10000, 3072), each row the 1024 red, then green, then
blue pixels of an image in row-major order (so it reshapes to (3, 32, 32)); b"labels" a list of
ints 0-9; b"batch_label"; b"filenames".

Trust. No batch is unpickled before its bytes matched a digest, and then only through the
array-only unpickler. A batch file is accepted when
* the manifest `fastnet-manifest.json` beside it lists its SHA-256: `extract_cifar10` writes that
  manifest after checking the archive's official MD5 (c58f30108f718f92721af3b95e74349a) and
  extracting it safely (no absolute paths, no `..`, no links or devices: our own check, plus
  tarfile's "data" filter where Python has it); or
* its MD5 is the official one of that batch (the table below), for a folder a user extracted
  from the official archive themselves.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np

from ._fetch import cache_root, download, find_in, not_found, search_dirs, write_atomically
from ._integrity import ChecksumError, CorruptFileError, load_array_pickle, md5_hex, sha256_hex
from .dataset import PublishedDataset

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",)
CIFAR10_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
MANIFEST_NAME = "fastnet-manifest.json"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)


class CIFAR10(PublishedDataset):
    """CIFAR-10 (Krizhevsky, 2009): `images` uint8 (N, 3, 32, 32), `labels` int64 (N,)."""

    class_names = CIFAR10_CLASSES
    image_shape = (3, 32, 32)

    def _read(
        self, root: str | os.PathLike | None, train: bool, download: bool
    ) -> tuple[np.ndarray, np.ndarray, Path]:
        names = TRAIN_BATCHES if train else TEST_BATCHES
        directory = locate_cifar10(root, names, download)
        manifest = read_manifest(directory)
        batches = [read_batch(directory / name, manifest) for name in names]
        images = np.concatenate([images for images, _ in batches])
        labels = np.concatenate([labels for _, labels in batches])
        return images, labels, directory


def locate_cifar10(
    root: str | os.PathLike | None, names: tuple[str, ...], download_ok: bool
) -> Path:
    """The folder holding the batch files `names`: found, extracted from a found archive, or
    downloaded."""
    dirs = search_dirs(root, CIFAR10_FOLDER)
    found = find_in(dirs, [(name,) for name in names])
    if found is not None:
        return found[0].parent
    archive_dirs = [*dirs, cache_root()]
    found = find_in(archive_dirs, [(CIFAR10_ARCHIVE,)])
    if found is None and not download_ok:
        raise not_found(f"CIFAR-10 batches {list(names)} (or {CIFAR10_ARCHIVE})", archive_dirs)
    archive = (
        found[0]
        if found is not None
        else download(
            CIFAR10_URLS,
            cache_root() / CIFAR10_ARCHIVE,
            verify=lambda path, url: _check_archive(path.read_bytes(), url),
        )
    )
    folder = extract_cifar10(archive, cache_root())
    if (
        archive.parent == cache_root()
    ):  # our own download; an archive the user keeps elsewhere stays
        archive.unlink()
    return folder


def _check_archive(data: bytes, source: str | os.PathLike) -> None:
    actual = md5_hex(data)
    if actual != CIFAR10_ARCHIVE_MD5:
        raise ChecksumError(source, f"md5 {CIFAR10_ARCHIVE_MD5}", f"md5 {actual}")


def extract_cifar10(archive: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Check the archive's official MD5, extract its `cifar-10-batches-py/` into `destination`
    (replacing an earlier one), write the manifest; return the extracted folder."""
    archive, destination = Path(archive), Path(destination)
    data = archive.read_bytes()
    _check_archive(data, archive)
    destination.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination, prefix=".cifar-10-extract-"))
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, archive)
            if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4 / 3.10.12
                tar.extractall(staging, members=members, filter="data")
            else:
                tar.extractall(staging, members=members)
        extracted = staging / CIFAR10_FOLDER
        if not extracted.is_dir():
            raise CorruptFileError(f"{archive}: holds no {CIFAR10_FOLDER}/ folder")
        digests = {
            path.name: sha256_hex(path.read_bytes())
            for path in sorted(extracted.iterdir())
            if path.is_file()
        }
        manifest = {
            "archive": CIFAR10_ARCHIVE,
            "archive_md5": CIFAR10_ARCHIVE_MD5,
            "sha256": digests,
        }
        write_atomically(extracted / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
        target = destination / CIFAR10_FOLDER
        if target.exists():
            shutil.rmtree(target)
        os.replace(extracted, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    parts = PurePosixPath(member.name).parts
    if member.name.startswith(("/", "\\")) or ".." in parts or ":" in member.name:
        problem = "an absolute path or one that leaves the folder"
    elif not (member.isfile() or member.isdir()):
        problem = "a link or special file"
    elif not parts or parts[0] != CIFAR10_FOLDER:
        problem = f"outside {CIFAR10_FOLDER}/"
    else:
        return
    raise CorruptFileError(f"{archive}: refusing to extract {member.name!r}: {problem}")


def read_manifest(directory: Path) -> dict[str, str] | None:
    """The file digests recorded at extraction time, or None when the folder has no manifest."""
    path = directory / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        digests = json.loads(path.read_text())["sha256"]
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in digests.items()):
            raise TypeError("digests must be strings")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CorruptFileError(f"{path}: not a fastnet manifest: {exc}") from exc
    return digests


def read_batch(path: Path, manifest: dict[str, str] | None) -> tuple[np.ndarray, np.ndarray]:
    """A verified batch file's images uint8 (n, 3, 32, 32) and labels int64 (n,)."""
    content = path.read_bytes()
    _verify_batch(path, content, manifest)
    batch = load_array_pickle(content, path)
    if isinstance(batch, dict):  # Python 2 wrote the keys as bytes, Python 3 writes them as str
        batch = {key.encode() if isinstance(key, str) else key: v for key, v in batch.items()}
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = np.asarray(batch.get(b"labels", ())) if isinstance(batch, dict) else np.empty(0)
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == 3072
    ):
        raise CorruptFileError(f"{path}: b'data' is not a uint8 (n, 3072) array")
    if (
        labels.shape != (len(data),)
        or not np.issubdtype(labels.dtype, np.integer)
        or np.any((labels < 0) | (labels > 9))
    ):
        raise CorruptFileError(f"{path}: b'labels' is not a list of {len(data)} ints in 0-9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _verify_batch(path: Path, content: bytes, manifest: dict[str, str] | None) -> None:
    actual_sha256 = sha256_hex(content)
    if manifest is not None and manifest.get(path.name) == actual_sha256:
        return
    actual_md5 = md5_hex(content)
    if CIFAR10_BATCH_MD5.get(path.name) == actual_md5:
        return
    expected = []
    if manifest is not None and path.name in manifest:
        expected.append(f"sha256 {manifest[path.name]} (from {MANIFEST_NAME})")
    if path.name in CIFAR10_BATCH_MD5:
        expected.append(f"md5 {CIFAR10_BATCH_MD5[path.name]} (official)")
    raise ChecksumError(
        path,
        " or ".join(expected) or "a digest listed in a manifest",
        f"sha256 {actual_sha256}, md5 {actual_md5}",
    )
