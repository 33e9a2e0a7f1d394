"""Checkpoints as safetensors files: no pickle, written atomically, verified before use.

Two kinds of file, both plain safetensors:

* a **state dict** (``fastnet.save(model.state_dict(), path)``): tensors under their PyTorch-style
  names, nothing else — the same file PyTorch's ``safetensors.torch.save_file`` writes, so weights
  move between the frameworks;
* a **checkpoint** (``save_checkpoint``): the model's tensors under ``model.<name>``, the
  optimizer's under ``optimizer.<index>.<field>``, and in the header metadata (JSON strings) the
  model config, optimizer hyper-parameters and scalar state, scheduler, epoch, RNG state and
  anything extra — enough to rebuild the model and resume bit for bit on the CPU.

Verification. Every file fastnet writes carries, under ``fastnet.digest``, a SHA-256 of
everything that loading uses: each metadata entry (config, learning rate, epoch, optimizer step,
RNG state, ...) and each tensor (name, dtype, shape and bytes), in name order. Loading reads the
file once, recomputes the digest over those very bytes, and refuses a file whose digest differs
or is missing. ``verify=False`` loads a file without checking (one from elsewhere that you
trust). A safetensors state dict written by another tool (no fastnet metadata at all) is read by
``load`` as is: only its tensors are used, and safetensors checks their layout. Files of older
fastnet versions carry ``fastnet.sha256``, a digest of the tensors alone: it is accepted where
the file holds no other metadata (a state dict), since it then covers everything loaded.

Writing. The bytes go to a temporary file ``.<name>.<pid>.<random>.tmp`` beside the target,
created with the mode a new file gets (0666 less the umask) or, when overwriting, the old file's
mode; it is flushed to disk, renamed over the target, and the folder is synced so the rename
survives a power cut. A crash never leaves a half-written checkpoint; a temporary file left by
a process that was killed mid-save is removed by the next save to the same path.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_bytes
from safetensors.numpy import save as save_bytes

from .backend import to_numpy

FORMAT = "fastnet-checkpoint-1"
_DIGEST_KEY = "fastnet.digest"
_LEGACY_DIGEST_KEY = "fastnet.sha256"  # tensors only (fastnet before issue 15)
_DIGEST_PREFIX = "sha256:"
_NOT_COVERED = (_DIGEST_KEY, _LEGACY_DIGEST_KEY)


def _digest(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    """SHA-256 of the metadata entries, then of the tensors, each in name order.

    Every field is length-prefixed so that no two different contents hash the same bytes. With no
    metadata this is the tensors-only digest of older fastnet files.
    """
    sha = hashlib.sha256()
    for key in sorted(metadata):
        if key not in _NOT_COVERED:
            value = metadata[key]
            sha.update(f"meta|{len(key)}|{key}|{len(value)}|{value}|".encode())
    for name in sorted(tensors):
        array = np.asarray(tensors[name], order="C")
        sha.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        sha.update(array.tobytes())
    return sha.hexdigest()


def _temporary_prefix(path: Path) -> str:
    return f".{path.name}."


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files of saves to ``path`` whose writing process no longer runs."""
    prefix = _temporary_prefix(path)
    for entry in os.scandir(path.parent):
        if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
            continue
        pid = entry.name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and not _process_is_running(int(pid)):
            Path(entry.path).unlink(missing_ok=True)


def _process_is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        pass
    return True


def _sync_folder(folder: Path) -> None:
    """fsync a folder so a rename inside it is on disk (a no-op where folders cannot be opened)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:  # some file systems refuse fsync on a folder; the rename itself has happened
        pass
    finally:
        os.close(handle)


def _atomic_save(
    tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict[str, str]
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    tensors = {name: np.asarray(to_numpy(value), order="C") for name, value in tensors.items()}
    metadata = dict(metadata, **{_DIGEST_KEY: _DIGEST_PREFIX + _digest(tensors, metadata)})
    content = save_bytes(tensors, metadata=metadata)
    temporary = path.parent / f"{_temporary_prefix(path)}{os.getpid()}.{secrets.token_hex(4)}.tmp"
    # O_EXCL with mode 0o666: the kernel applies the umask, as for any new file
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as stream:
            if path.exists():
                os.fchmod(stream.fileno(), stat.S_IMODE(path.stat().st_mode))
            stream.write(content)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)
    return path


def _parse_header(path: Path, content: bytes) -> dict[str, str]:
    """The metadata of safetensors bytes (8-byte little-endian header length, then JSON)."""
    if len(content) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
    size = int.from_bytes(content[:8], "little")
    if size > len(content) - 8:
        raise ValueError(
            f"{path}: not a safetensors file or truncated (header of {size} bytes does not fit)"
        )
    try:
        header = json.loads(content[8 : 8 + size])
    except ValueError as error:
        raise ValueError(f"{path}: corrupt safetensors header ({error})") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    return metadata or {}


def _read(path: str | os.PathLike) -> tuple[Path, dict[str, np.ndarray], dict[str, str]]:
    """The tensors and metadata of the file at ``path``, both parsed from one read of its bytes
    (so the bytes checked are the bytes used)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    content = path.read_bytes()
    metadata = _parse_header(path, content)
    try:
        tensors = load_bytes(content)
    except SafetensorError as error:
        raise ValueError(f"{path}: corrupt or truncated safetensors file ({error})") from None
    return path, tensors, metadata


def _check_digest(
    path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str], foreign_ok: bool
) -> None:
    """Raise ValueError unless the recorded digest matches. ``foreign_ok``: a file with no
    fastnet metadata at all (written by another tool) passes, having nothing to check."""
    recorded = metadata.get(_DIGEST_KEY)
    if recorded is None and _LEGACY_DIGEST_KEY in metadata:
        if any(key not in _NOT_COVERED for key in metadata):
            raise ValueError(
                f"{path}: written by an older fastnet whose digest covers the tensors only, so "
                f"its metadata (config, optimizer, epoch, RNG state) cannot be verified; load "
                f"it with verify=False if you trust it, and save it again"
            )
        recorded = _DIGEST_PREFIX + metadata[_LEGACY_DIGEST_KEY]
    if recorded is None:
        is_fastnet_file = metadata.get("format") == FORMAT or any(
            key.startswith("fastnet.") for key in metadata
        )
        if foreign_ok and not is_fastnet_file:
            return
        raise ValueError(
            f"{path}: carries no fastnet digest, so its contents cannot be verified; "
            f"load it with verify=False if you trust where it came from"
        )
    if recorded != _DIGEST_PREFIX + _digest(tensors, metadata):
        raise ValueError(
            f"{path}: checksum mismatch: the SHA-256 of its tensors and metadata differs from "
            f"the one recorded when the file was written (file corrupted or edited?)"
        )


def save(
    state_dict: dict[str, Any], path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> Path:
    """Write a state dict (name → array or Tensor) as a plain safetensors file, atomically, with
    ``metadata`` (strings) in its header."""
    tensors = {name: getattr(v, "data", v) for name, v in state_dict.items()}
    return _atomic_save(tensors, path, dict(metadata or {}))


def load_with_metadata(
    path: str | os.PathLike, *, verify: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors of a file :func:`save` wrote and its header's metadata (digest checked)."""
    path, tensors, metadata = _read(path)
    if verify:
        _check_digest(path, tensors, metadata, foreign_ok=True)
    return tensors, metadata


def load(path: str | os.PathLike, *, verify: bool = True) -> dict[str, np.ndarray]:
    """The model weights in a file: a state dict as saved, or a checkpoint's ``model.*`` tensors.

    The file's digest is checked unless ``verify=False``; a plain safetensors file written by
    another tool has none and is read as is (see the module docstring).
    """
    path, tensors, metadata = _read(path)
    if verify:
        _check_digest(path, tensors, metadata, foreign_ok=True)
    if metadata.get("format") == FORMAT:
        return {
            name[len("model.") :]: value
            for name, value in tensors.items()
            if name.startswith("model.")
        }
    return tensors


def save_checkpoint(
    path: str | os.PathLike,
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    *,
    epoch: int = 0,
    config: dict | None = None,
    rng_state: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write model, optimizer and scheduler state plus metadata to one safetensors file,
    atomically."""
    tensors = {f"model.{name}": value for name, value in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "epoch": str(int(epoch)),
        "config": json.dumps(config or {}),
        "extra": json.dumps(extra or {}),
    }
    if optimizer is not None:
        state = optimizer.state_dict()
        scalars: dict[str, dict] = {}
        for index, entry in state["state"].items():
            for field, value in entry.items():
                if hasattr(value, "shape"):
                    tensors[f"optimizer.{index}.{field}"] = value
                else:
                    scalars.setdefault(str(index), {})[field] = value
        metadata["optimizer"] = json.dumps(
            {
                "type": type(optimizer).__name__,
                "param_groups": state["param_groups"],
                "scalars": scalars,
            }
        )
    if scheduler is not None:
        metadata["scheduler"] = json.dumps(
            {"type": type(scheduler).__name__, **scheduler.state_dict()}
        )
    if rng_state is not None:
        metadata["rng"] = json.dumps(rng_state)
    return _atomic_save(tensors, path, metadata)


def load_checkpoint(path: str | os.PathLike, *, verify: bool = True) -> dict[str, Any]:
    """Read a checkpoint: {"model": state dict, "optimizer": state dict or None, "scheduler": ...,
    "epoch", "config", "rng", "extra"} — verified against its digest first.

    A checkpoint without a fastnet digest is refused unless ``verify=False``.
    """
    path, tensors, metadata = _read(path)
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not a fastnet checkpoint (no '{FORMAT}' format tag); "
            f"use fastnet.load() for a plain state dict"
        )
    if verify:
        _check_digest(path, tensors, metadata, foreign_ok=False)
    model = {name[len("model.") :]: v for name, v in tensors.items() if name.startswith("model.")}
    optimizer = None
    if "optimizer" in metadata:
        saved = json.loads(metadata["optimizer"])
        state: dict[int, dict] = {}
        for name, value in tensors.items():
            if name.startswith("optimizer."):
                _, index, field = name.split(".", 2)
                state.setdefault(int(index), {})[field] = value
        for index, fields in saved["scalars"].items():
            state.setdefault(int(index), {}).update(fields)
        groups = saved["param_groups"]
        for group in groups:  # JSON turned tuples into lists
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
        optimizer = {"type": saved["type"], "state": state, "param_groups": groups}
    return {
        "model": model,
        "optimizer": optimizer,
        "scheduler": json.loads(metadata["scheduler"]) if "scheduler" in metadata else None,
        "epoch": int(metadata.get("epoch", 0)),
        "config": json.loads(metadata.get("config", "{}")),
        "rng": json.loads(metadata["rng"]) if "rng" in metadata else None,
        "extra": json.loads(metadata.get("extra", "{}")),
    }
