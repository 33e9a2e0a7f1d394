"""The transfer experiment: fine-tune pretrained weights with few labels, next to training the
same network from scratch on the same labels, and the table of what pretraining bought.

    state = fastnet.load("runs/mnist-simclr/encoder.safetensors")
    config = fastnet.load_checkpoint("runs/mnist-simclr/encoder.safetensors")["config"]
    rows = label_budget_table(state, config, train_set, test_set, budgets=(1, 10, 100),
                              modes=("linear", "full", "lora"), out="runs/mnist-simclr-ft")
    print(format_table(rows))

The pretrained weights are a whole model's state dict (``fastnet train``'s model.safetensors or
checkpoint) or an encoder's: every name ``features.*``, as ``fastnet pretrain`` writes it
(:func:`load_pretrained`). A label budget is a number of labelled training images per class
(0: all of them), drawn class-balanced with the seed, the same subset for every mode of the
budget. Scratch trains once per budget and its accuracy stands beside each mode's.

Files, with ``out``: ``out/<budget>/<mode>/model.safetensors`` (and ``adapter.safetensors`` for
lora; see :func:`fastnet.finetune.save_finetuned`), where ``<budget>`` is ``10-per-class`` or
``all-labels``; ``out/finetune_table.json`` (the run's settings and one row per budget and mode:
labels_per_class, train_images, mode, accuracy, scratch_accuracy (None on the scratch row),
trainable, total, seconds, files) and ``out/finetune_table.txt`` (the printed table).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .finetune import MODE_ALIASES, prepare, save_finetuned
from .nn import Module
from .run_folder import _replace_text  # written whole or not at all

TABLE_FILES = ("finetune_table.json", "finetune_table.txt")


def load_pretrained(model: Module, state: dict) -> list[str]:
    """Load ``state`` into ``model`` and return the names loaded.

    A whole model's state dict loads strictly. An encoder's (every name ``features.*``) must
    hold every ``features.*`` tensor of ``model`` with its shape and nothing else; the head
    stays as built. Anything else raises (RuntimeError naming the tensors): never a partial
    load."""
    if state and all(name.startswith("features.") for name in state):
        encoder = Module()  # the shape of the file: a module whose only child is features
        encoder.features = model.features
        try:
            encoder.load_state_dict(state)
        except RuntimeError as error:
            raise RuntimeError(
                f"the encoder file does not fit the features of {type(model).__name__}: "
                + str(error).split(": ", 1)[-1]
            ) from None
    else:
        model.load_state_dict(state)
    return list(state)


def budget_folder(labels_per_class: int) -> str:
    return f"{labels_per_class}-per-class" if labels_per_class else "all-labels"


def transfer(
    pretrained: dict,
    config: dict,
    train_set: Any,
    test_set: Any,
    *,
    labels_per_class: int = 0,
    modes: Sequence[str] = ("linear", "full", "lora"),
    epochs: int = 10,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    device: Any = "cpu",
    transform: Any = None,
    progress: bool = False,
    log: Any = print,
    out: str | os.PathLike | None = None,
) -> list[dict]:
    """One label budget: fine-tune ``pretrained`` weights (model ``config``: ``model`` and
    ``kwargs``) in each mode on ``labels_per_class`` images per class of ``train_set`` (0: all),
    and train the same architecture from scratch on the same images once; one row per mode,
    scratch last. ``transform`` (e.g. the dataset's normalisation) is applied to every batch.
    With ``out``, each mode's model is saved into ``out/<mode>/`` (the row's ``files``)."""
    from . import data, models, optim
    from . import random as fn_random
    from .data import DataLoader
    from .train import evaluate, train_epoch

    if labels_per_class:
        train_set = data.subset(train_set, labels_per_class, seed=seed)
    runs = [MODE_ALIASES.get(m, m) for m in modes if m != "scratch"] + ["scratch"]
    classes = int(np.max(train_set.labels)) + 1
    budget = f"{labels_per_class} per class" if labels_per_class else "all labels"
    rows = []
    for mode in runs:
        fn_random.manual_seed(seed)
        model = models.create(config["model"], **config["kwargs"])
        loaded = None if mode == "scratch" else load_pretrained(model, pretrained)
        groups = prepare(model, mode, classes, lr=lr, pretrained=loaded)
        model.to(device)
        optimizer = optim.AdamW(groups, lr=lr, weight_decay=1e-4)
        loader = DataLoader(
            train_set, batch_size=batch_size, shuffle=True, seed=seed, transform=transform
        )
        start = time.perf_counter()
        for epoch in range(epochs):
            train_epoch(
                model,
                loader,
                optimizer,
                device,
                description=f"{budget}, {mode} {epoch + 1}/{epochs}",
                progress=progress,
                epoch=epoch + 1,
            )
        seconds = time.perf_counter() - start
        result = evaluate(model, DataLoader(test_set, batch_size=512, transform=transform), device)
        row = {
            "labels_per_class": labels_per_class,
            "train_images": len(train_set),
            "mode": mode,
            "accuracy": result["accuracy"],
            "scratch_accuracy": None,
            "trainable": model.num_parameters(trainable_only=True),
            "total": model.num_parameters(),
            "seconds": seconds,
            "files": [],
        }
        if out is not None:
            row["files"] = [str(p) for p in save_finetuned(model, Path(out) / mode)]
        log(
            f"{budget}, {mode:>7}: test accuracy {100 * row['accuracy']:.2f}%, "
            f"{row['trainable']:,} trainable of {row['total']:,} parameters, {seconds:.1f}s"
        )
        rows.append(row)
    for row in rows[:-1]:
        row["scratch_accuracy"] = rows[-1]["accuracy"]
    return rows


def label_budget_table(
    pretrained: dict,
    config: dict,
    train_set: Any,
    test_set: Any,
    *,
    budgets: Sequence[int] = (0,),
    out: str | os.PathLike | None = None,
    **settings: Any,
) -> list[dict]:
    """:func:`transfer` for each label budget (images per class, 0: all), in order; the rows of
    all of them. ``settings`` are transfer's (modes, epochs, lr, seed, device, ...); with
    ``out``, budget ``b`` saves its models into ``out/<budget_folder(b)>/<mode>/``."""
    rows = []
    for budget in budgets:
        folder = None if out is None else Path(out) / budget_folder(budget)
        rows += transfer(
            pretrained,
            config,
            train_set,
            test_set,
            labels_per_class=budget,
            out=folder,
            **settings,
        )
    return rows


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def format_table(rows: Sequence[dict]) -> str:
    """The rows of :func:`transfer` / :func:`label_budget_table` as a Markdown table."""
    lines = [
        "| labels per class | mode | test accuracy | scratch, same labels | trainable parameters "
        "| train time |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    lines += [
        f"| {r['labels_per_class'] or 'all'} | {r['mode']} | {_percent(r['accuracy'])} "
        f"| {_percent(r['scratch_accuracy'])} | {r['trainable']:,} of {r['total']:,} "
        f"| {r['seconds']:.1f} s |"
        for r in rows
    ]
    return "\n".join(lines)


def write_table(rows: Sequence[dict], out: str | os.PathLike, settings: dict) -> list[Path]:
    """Write ``out/finetune_table.json`` ({**settings, "rows": rows}) and
    ``out/finetune_table.txt`` (:func:`format_table`); returns the two paths."""
    json_path, text_path = (Path(out) / name for name in TABLE_FILES)
    _replace_text(json_path, json.dumps({**settings, "rows": list(rows)}, indent=1) + "\n")
    _replace_text(text_path, format_table(rows) + "\n")
    return [json_path, text_path]
