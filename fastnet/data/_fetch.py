"""Where dataset files are looked for, and how they are downloaded into the cache.

Lookup order, for a dataset whose folder is called `<folder>` (`mnist`, `fashion-mnist`,
`cifar-10-batches-py`):

1. the explicit `root` argument, or else the `FASTNET_DATA` environment variable: first
   `<root>/<folder>/`, then `<root>/` itself (the files directly);
2. the user cache, `$XDG_CACHE_HOME/fastnet/<folder>/` (default `~/.cache/fastnet/<folder>/`);
3. the official download hosts, tried in order, into the user cache.

A download is streamed into a temporary file beside its destination, verified, and only then
renamed into place, so the cache never holds a partial or unverified file under a real name.
"""

from __future__ import annotations

import os
import sys
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from ._integrity import ChecksumError, CorruptFileError

_TIMEOUT_S = 30
_CHUNK_BYTES = 1 << 20


class DatasetNotFoundError(FileNotFoundError):
    """The dataset is in none of the places looked at, and downloading was not allowed."""


class DownloadError(OSError):
    """Every host (and fallback) for a file failed; the message lists each attempt."""


def cache_root() -> Path:
    """The user cache: `$XDG_CACHE_HOME/fastnet`, default `~/.cache/fastnet`."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fastnet"


def search_dirs(root: str | os.PathLike | None, folder: str) -> list[Path]:
    """The folders to look in, in order (see the module docstring)."""
    base = root if root is not None else os.environ.get("FASTNET_DATA") or None
    dirs = []
    if base is not None:
        base = Path(base).expanduser()
        dirs += [base / folder, base]
    dirs.append(cache_root() / folder)
    return dirs


def find_in(dirs: Sequence[Path], wanted: Sequence[Sequence[str]]) -> list[Path] | None:
    """The first folder holding every wanted file; each file is given as alternative names."""
    for directory in dirs:
        found = [
            next((directory / n for n in names if (directory / n).is_file()), None)
            for names in wanted
        ]
        if all(path is not None for path in found):
            return found
    return None


def not_found(what: str, dirs: Sequence[Path]) -> DatasetNotFoundError:
    places = ", ".join(str(d) for d in dirs)
    return DatasetNotFoundError(
        f"{what} not found; looked in: {places}. Pass root=..., set FASTNET_DATA to a folder "
        "holding it, or allow download=True."
    )


def download(urls: Sequence[str], destination: Path, verify: Callable[[Path, str], None]) -> Path:
    """Fetch the first of `urls` that answers and passes `verify(temp_path, url)`, atomically.

    `verify` raises ChecksumError or CorruptFileError to reject a file; the next URL is then
    tried. Raises DownloadError listing every attempt when none succeeds.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        try:
            part = _fetch_to_temp(url, destination)
        except OSError as exc:  # URLError, HTTPError and timeouts are all OSErrors
            failures.append(f"{url}: {exc}")
            continue
        try:
            verify(part, url)
        except (ChecksumError, CorruptFileError) as exc:
            part.unlink()
            failures.append(f"{url}: {exc}")
            continue
        os.replace(part, destination)
        return destination
    raise DownloadError(f"could not fetch {destination.name}:\n  " + "\n  ".join(failures))


def _fetch_to_temp(url: str, destination: Path) -> Path:
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "fastnet"})
    with urllib.request.urlopen(request, timeout=_TIMEOUT_S) as response:
        total = int(response.headers.get("Content-Length") or 0) or None
        host = urllib.parse.urlsplit(url).netloc or url
        handle, name = tempfile.mkstemp(
            dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
        )
        try:
            with (
                os.fdopen(handle, "wb") as out,
                tqdm(
                    total=total,
                    unit="B",
                    unit_scale=True,
                    file=sys.stderr,
                    desc=f"{destination.name} from {host}",
                ) as progress,
            ):
                while chunk := response.read(_CHUNK_BYTES):
                    out.write(chunk)
                    progress.update(len(chunk))
        except BaseException:
            os.unlink(name)
            raise
    return Path(name)


def write_atomically(destination: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `destination`, then rename it into place."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
    )
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(name, destination)
    except BaseException:
        if os.path.exists(name):
            os.unlink(name)
        raise
