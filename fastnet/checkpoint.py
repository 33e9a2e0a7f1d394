"""Checkpoints as safetensors files: no pickle, written atomically, verified before use.

Two kinds of file, both plain safetensors:

* a **state dict** (``fastnet.save(model.state_dict(), path)``): tensors under their PyTorch-style
  names, nothing else — the same file PyTorch's ``safetensors.torch.save_file`` writes, so weights
  move between the frameworks;
* a **checkpoint** (``save_checkpoint``): the model's tensors under ``model.<name>``, the
  optimizer's under ``optimizer.<index>.<field>``, and in the header metadata (JSON strings) the
  model config, optimizer hyper-parameters and scalar state, scheduler, epoch, RNG state and
  anything extra — enough to rebuild the model and resume bit for bit on the CPU.

Every file carries a SHA-256 of its tensors (names, dtypes, shapes and bytes, in name order) in
its metadata; loading recomputes it and refuses a file whose digest differs. Writes go to a
temporary file in the target folder, are flushed to disk, then renamed over the target, so a
crash never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from .backend import to_numpy

FORMAT = "fastnet-checkpoint-1"
_DIGEST_KEY = "fastnet.sha256"


def _digest(tensors: dict[str, np.ndarray]) -> str:
    sha = hashlib.sha256()
    for name in sorted(tensors):
        array = np.asarray(tensors[name], order="C")
        sha.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        sha.update(array.tobytes())
    return sha.hexdigest()


def _atomic_save(
    tensors: dict[str, np.ndarray], path: str | os.PathLike, metadata: dict[str, str]
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: np.asarray(to_numpy(value), order="C") for name, value in tensors.items()}
    metadata = dict(metadata, **{_DIGEST_KEY: _digest(tensors)})
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata=metadata)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def _read_metadata(path: Path) -> dict[str, str]:
    """The JSON header of a safetensors file (8-byte little-endian length, then JSON)."""
    with open(path, "rb") as stream:
        size_bytes = stream.read(8)
        if len(size_bytes) != 8:
            raise ValueError(
                f"{path}: not a safetensors file (shorter than its 8-byte header length)"
            )
        size = int.from_bytes(size_bytes, "little")
        if size > os.path.getsize(path) - 8:
            raise ValueError(
                f"{path}: not a safetensors file or truncated (header of {size} bytes does not fit)"
            )
        try:
            header = json.loads(stream.read(size))
        except ValueError as error:
            raise ValueError(f"{path}: corrupt safetensors header ({error})") from None
    return header.get("__metadata__") or {}


def _verified_load(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    metadata = _read_metadata(path)
    try:
        tensors = load_file(str(path))
    except SafetensorError as error:
        raise ValueError(f"{path}: corrupt or truncated safetensors file ({error})") from None
    expected = metadata.get(_DIGEST_KEY)
    if expected is not None and _digest(tensors) != expected:
        raise ValueError(
            f"{path}: checksum mismatch: the tensors' SHA-256 differs from the one recorded "
            f"when the file was written (file corrupted?)"
        )
    return tensors, metadata


def save(state_dict: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write a state dict (name → array or Tensor) as a plain safetensors file, atomically."""
    return _atomic_save({name: getattr(v, "data", v) for name, v in state_dict.items()}, path, {})


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The model weights in a file: a state dict as saved, or a checkpoint's ``model.*`` tensors."""
    tensors, metadata = _verified_load(path)
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


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint: {"model": state dict, "optimizer": state dict or None, "scheduler": ...,
    "epoch", "config", "rng", "extra"} — verified against its checksum first."""
    tensors, metadata = _verified_load(path)
    if metadata.get("format") != FORMAT:
        raise ValueError(
            f"{path}: not a fastnet checkpoint (no '{FORMAT}' format tag); "
            f"use fastnet.load() for a plain state dict"
        )
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
