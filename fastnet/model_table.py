"""A side-by-side table of models: file size, parameters, test accuracy and inference speed.

``compare_models(rows, test_set, device)`` measures each row, ``(name, model, file_path)`` with
``model`` a :class:`fastnet.nn.Module` or any callable from an input batch (a Tensor
(B, C, H, W) on ``device``) to logits (a Tensor or an array (B, classes)), and ``file_path`` the
file the model is stored in (or None). Each row becomes a dict:

* ``model``: the row's name;
* ``file_bytes``: the file's size (None without a file);
* ``parameters``: the model's ``num_parameters()`` (a Module's, an int8 model's), else None;
* ``test_accuracy``: over the whole ``test_set`` (batches of 512, after ``transform``);
* ``images_per_second``: forward passes of one batch of ``THROUGHPUT_BATCH`` (256) test images,
  repeated for at least ``min_seconds`` after a warm-up, the logits read back to the host each
  time (so a GPU's work is finished and counted);
* ``latency_ms``: the median over ``latency_runs`` forward passes of one image, read back likewise.

Modules run in eval mode without recording a graph. ``format_table`` gives the printed table,
``save_csv`` writes the rows; ``fastnet distill`` and ``fastnet compress`` both use them.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .backend import get_device
from .nn import Module
from .nn.summary import eval_mode
from .tensor import Tensor, no_grad

__all__ = ["compare_models", "format_table", "save_csv", "COLUMNS", "THROUGHPUT_BATCH"]

THROUGHPUT_BATCH = 256
COLUMNS = (
    "model",
    "file_bytes",
    "parameters",
    "test_accuracy",
    "images_per_second",
    "latency_ms",
)
_HEADINGS = {
    "model": "model",
    "file_bytes": "file size",
    "parameters": "parameters",
    "test_accuracy": "test acc",
    "images_per_second": f"img/s @{THROUGHPUT_BATCH}",
    "latency_ms": "latency @1",
}


def _logits(model: Any, batch: np.ndarray, device: Any) -> np.ndarray:
    """The model's logits for a host batch, on the host (which waits for the device)."""
    out = model(Tensor(batch, device=device))
    if isinstance(out, Tensor):
        return out.numpy()
    return out if isinstance(out, np.ndarray) else np.asarray(device.to_host(out))


def _test_batches(test_set: Any, transform: Any, batch_size: int) -> list[tuple]:
    from .data import DataLoader

    loader = DataLoader(test_set, batch_size=batch_size, transform=transform)
    return list(loader.numpy_batches())


def _measure(
    name: str,
    model: Any,
    file_path: Any,
    batches: list[tuple],
    device: Any,
    min_seconds: float,
    latency_runs: int,
) -> dict[str, Any]:
    correct = count = 0
    for images, labels in batches:
        correct += int((_logits(model, images, device).argmax(axis=1) == labels).sum())
        count += len(labels)
    images = np.concatenate([batch[0] for batch in batches])
    block = images[:THROUGHPUT_BATCH]
    _logits(model, block, device)  # warm-up (compilation, caches)
    runs, start = 0, time.perf_counter()
    while runs < 3 or time.perf_counter() - start < min_seconds:
        _logits(model, block, device)
        runs += 1
    per_second = runs * len(block) / (time.perf_counter() - start)
    single = images[:1]
    _logits(model, single, device)
    times = []
    for _ in range(latency_runs):
        begin = time.perf_counter()
        _logits(model, single, device)
        times.append(time.perf_counter() - begin)
    path = Path(file_path) if file_path is not None else None
    return {
        "model": name,
        "file_bytes": path.stat().st_size if path is not None and path.is_file() else None,
        "parameters": model.num_parameters() if hasattr(model, "num_parameters") else None,
        "test_accuracy": correct / max(count, 1),
        "images_per_second": per_second,
        "latency_ms": 1e3 * float(np.median(times)),
    }


def compare_models(
    rows: Sequence[tuple[str, Any, str | os.PathLike | None]],
    test_set: Any,
    device: Any = "cpu",
    *,
    transform: Callable | None = None,
    min_seconds: float = 0.5,
    latency_runs: int = 50,
    max_images: int | None = None,
) -> list[dict[str, Any]]:
    """One dict per row (see the module docstring), measured on ``device`` over ``test_set``
    (its first ``max_images`` images when given), after ``transform``."""
    device = get_device(device)
    if max_images is not None:
        test_set = test_set.take(np.arange(min(max_images, len(test_set))))
    batches = _test_batches(test_set, transform, 512)
    if not batches:
        raise ValueError("compare_models: the test set is empty")
    results = []
    for name, model, file_path in rows:
        if isinstance(model, Module):
            model = model.to(device)
            with eval_mode(model), no_grad():
                row = _measure(name, model, file_path, batches, device, min_seconds, latency_runs)
        else:
            with no_grad():
                row = _measure(name, model, file_path, batches, device, min_seconds, latency_runs)
        results.append(row)
    return results


def _size(value: int | None) -> str:
    if value is None:
        return "-"
    for unit in ("B", "KB", "MB"):
        if value < 1024 or unit == "MB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return "-"  # pragma: no cover


def _cells(row: dict[str, Any]) -> list[str]:
    parameters = row.get("parameters")
    return [
        str(row["model"]),
        _size(row.get("file_bytes")),
        "-" if parameters is None else f"{parameters:,}",
        f"{100 * row['test_accuracy']:.2f}%",
        f"{row['images_per_second']:,.0f}",
        f"{row['latency_ms']:.2f} ms",
    ]


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """The rows as an aligned text table with a heading line."""
    lines = [[_HEADINGS[column] for column in COLUMNS]] + [_cells(row) for row in results]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS))]
    text = []
    for number, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [
            cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)
        ]
        text.append("  ".join(cells).rstrip())
        if number == 0:
            text.append("  ".join("-" * width for width in widths))
    return "\n".join(text)


def save_csv(results: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write the rows (the columns of ``COLUMNS`` and any others, raw numbers) to a CSV file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(COLUMNS) + [key for row in results for key in row if key not in COLUMNS]
    columns = list(dict.fromkeys(columns))
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, restval="")
        writer.writeheader()
        for row in results:
            writer.writerow({key: ("" if value is None else value) for key, value in row.items()})
    return path
