"""The transfer experiment: fine-tune pretrained weights with few labels, next to training the
same network from scratch on the same labels, and the table of what pretraining bought.

    state = fastnet.load("runs/mnist-simclr/encoder.safetensors")
    config = fastnet.load_checkpoint("runs/mnist-simclr/encoder.safetensors")["config"]
    rows = label_budget_table(state, config, train_set, test_set, budgets=(1, 10, 100),
                              modes=("linear", "full", "lora"), out="runs/mnist-simclr-ft")
    print(format_table(rows))

The pretrained weights are a whole model's state dict (``fastnet train``'s model.safetensors or
checkpoint) or an encoder's, as ``fastnet pretrain`` writes it: the model's names without its
head's last Linear (:func:`load_pretrained`). A label budget is a number of labelled training
images per class (0: all of them), drawn class-balanced with the seed, the same subset for
every mode of the budget. Scratch trains once per budget and its accuracy stands beside each
mode's. On pretrained weights, full and lora train the new head alone first
(:data:`fastnet.finetune.PHASES`).

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

from .finetune import (
    MODE_ALIASES,
    PHASES,
    head_layer_name,
    prepare,
    save_finetuned,
)
from .nn import Module
from .nn.module import LoadReport
from .nn.module import _describe as describe_load
from .run_folder import _replace_text  # written whole or not at all

TABLE_FILES = ("finetune_table.json", "finetune_table.txt")


def load_pretrained(model: Module, state: dict) -> list[str]:
    """Load ``state`` into ``model`` and return the names loaded.

    A whole model's state dict loads strictly. An encoder's, as ``fastnet pretrain`` writes it,
    lacks the head's last Linear (:func:`fastnet.finetune.head_layer_name`): it must hold every
    ``features.*`` tensor of ``model``, and may hold head layers before the last one (SimCLR
    pretrains the MNIST CNN's hidden Linear too), each with its shape, and nothing else; what it
    lacks stays as built. Anything else raises (RuntimeError naming the tensors): never a
    partial load."""
    head = head_layer_name(model)
    if not state or any(name == head or name.startswith(f"{head}.") for name in state):
        model.load_state_dict(state)
        return list(state)
    own = model.state_dict()
    report = LoadReport(
        [name for name in own if name.startswith("features.") and name not in state],
        [name for name in state if name not in own],
        [
            (name, own[name].shape, tuple(np.shape(value)))
            for name, value in state.items()
            if name in own and tuple(np.shape(value)) != own[name].shape
        ],
    )
    if any(report):
        raise RuntimeError(
            f"the encoder file does not fit the features of {type(model).__name__}: "
            + describe_load(report)
        )
    model.load_state_dict(state, strict=False)
    return list(state)


def _phases(
    mode: str, epochs: int, pretrained_lr_factor: float | None = None
) -> list[tuple[str, int, float]]:
    """How ``transfer`` trains ``mode`` for ``epochs``: (prepare's mode, epochs, learning-rate
    factor) in order, as :data:`fastnet.finetune.PHASES` says (each phase but the last at least
    one epoch, the last the rest; ``pretrained_lr_factor``, if given, the factor of the phases
    after the first); one phase for a mode it does not list."""
    phases = PHASES.get(mode, ((mode, 1.0, 1.0),))
    plan, left = [], epochs
    for index, (phase, share, factor) in enumerate(phases):
        count = left if index == len(phases) - 1 else min(left, max(1, round(share * epochs)))
        if index and pretrained_lr_factor is not None:
            factor = pretrained_lr_factor
        plan.append((phase, count, factor))
        left -= count
    return plan


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
    pretrained_lr_factor: float | None = None,
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
    ``pretrained_lr_factor`` replaces :data:`fastnet.finetune.PHASES`' learning-rate factor of
    the phases after the head's (1 suits a model from another task, which must change more).
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
        loader = DataLoader(
            train_set, batch_size=batch_size, shuffle=True, seed=seed, transform=transform
        )
        start = time.perf_counter()
        done = 0
        for index, (phase, share, factor) in enumerate(_phases(mode, epochs, pretrained_lr_factor)):
            groups = prepare(
                model, phase, classes, lr=lr * factor, pretrained=loaded, new_head=index == 0
            )
            model.to(device)
            optimizer = optim.AdamW(groups, lr=lr * factor, weight_decay=1e-4)
            for epoch in range(done, done + share):
                train_epoch(
                    model,
                    loader,
                    optimizer,
                    device,
                    description=f"{budget}, {mode} {epoch + 1}/{epochs}",
                    progress=progress,
                    epoch=epoch + 1,
                )
            done += share
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
