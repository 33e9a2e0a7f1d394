"""Knowledge distillation: train a small student against a frozen teacher, ``fastnet distill``.

:func:`distill` trains ``student`` on ``train_set`` with the loss
α·T²·KL(softmax(t/T) ‖ softmax(z/T)) + (1 − α)·cross_entropy(z, y)
(:func:`fastnet.functional.distillation_loss`), t being the teacher's logits for the same
(transformed) batch, computed in eval mode without a graph: the teacher never changes. Without a
teacher it trains the same student on the labels alone (cross-entropy), with the same optimizer,
schedule, batches and seed: the baseline a distilled student is judged against. Both go through
:func:`fastnet.train.fit` (progress bar, per-epoch test accuracy, non-finite loss checks).

``fastnet distill --teacher MODEL_FILE --student NAME`` (:func:`add_arguments`, :func:`run`) loads
the teacher (a run's ``model.safetensors`` with its ``config.json``, or a checkpoint), trains the
student (and with ``--baseline`` the student alone), and writes into ``--out``:

* ``model.safetensors`` + ``config.json`` + ``checkpoint.safetensors``: the distilled student,
  as ``fastnet train`` writes a run (``fastnet eval``, ``export`` and ``predict`` accept them);
* ``alone/`` the same for the student trained without the teacher (``--baseline``);
* ``table.csv``: teacher / student-distilled / student-alone, with file size, parameters, test
  accuracy, images/s at batch 256 and latency at batch 1 (:mod:`fastnet.model_table`), also
  printed; ``history.json``: each student's per-epoch numbers.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import functional as F
from . import models
from . import random as fn_random
from .backend import get_device
from .checkpoint import save, save_checkpoint
from .cli_options import UsageError
from .model_table import compare_models, format_table, save_csv
from .nn import Module
from .run_config import (
    DATASETS,
    build_datasets,
    build_optimizer,
    build_scheduler,
    eval_transform,
    model_kwargs,
    train_transform,
)
from .tensor import Tensor, no_grad
from .train import fit

__all__ = ["distill", "add_arguments", "run", "DistillationModel"]


class DistillationModel(Module):
    """The student, seen by the training loop: ``forward`` gives the student's logits and, in
    training mode, keeps the teacher's logits for the same batch in ``teacher_logits`` (the
    teacher is held outside the module tree: it stays in eval mode, out of the optimizer and the
    state dict)."""

    def __init__(self, student: Module, teacher: Module | None) -> None:
        super().__init__()
        self.student = student
        object.__setattr__(self, "teacher", teacher)
        object.__setattr__(self, "teacher_logits", None)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.teacher is not None:
            with no_grad():
                object.__setattr__(self, "teacher_logits", self.teacher(x).data)
        return self.student(x)

    def loss(self, temperature: float, alpha: float) -> Callable[..., Tensor]:
        """The loss the training loop calls, ``loss(logits, y, **kwargs)``: distillation while
        training with a teacher, cross-entropy otherwise (evaluation, the baseline)."""

        def loss_fn(logits: Tensor, target: Tensor, **kwargs: Any) -> Tensor:
            if self.training and self.teacher is not None and not kwargs:
                return F.distillation_loss(logits, self.teacher_logits, target, temperature, alpha)
            return F.cross_entropy(logits, target, **kwargs)

        return loss_fn


def distill(
    teacher: Module | None,
    student: Module,
    train_set: Any,
    test_set: Any,
    *,
    epochs: int = 3,
    batch_size: int = 64,
    lr: float = 2e-3,
    temperature: float = 4.0,
    alpha: float = 0.9,
    device: Any = "cpu",
    seed: int = 0,
    transform: Any = None,
    train_transform: Any = None,
    optimizer: str = "adam",
    schedule: str = "onecycle",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, list]:
    """Train ``student`` (in place) against ``teacher`` (None: on the labels alone) for
    ``epochs``; return the per-epoch history of :func:`fastnet.train.fit`. ``transform`` is the
    batched transform both models see (the dataset's normalisation), ``train_transform`` the
    training batches' when it differs (augmentation; the teacher sees the same augmented batch)."""
    from .data import DataLoader, DeviceDataLoader

    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    if not (temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    device = get_device(device)
    student.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    if device.name == "cpu":
        loader = DataLoader
    else:  # the dataset lives on the GPU: batches are made there
        loader = functools.partial(DeviceDataLoader, device=device)
    train_loader = loader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        transform=transform if train_transform is None else train_transform,
    )
    test_loader = loader(test_set, batch_size=512, transform=transform)
    config = {"optimizer": optimizer, "lr": lr, "schedule": schedule}
    model = DistillationModel(student, teacher)
    opt = build_optimizer(config, student.parameters())
    scheduler = build_scheduler(config, opt, epochs, len(train_loader))
    return fit(
        model,
        train_loader,
        opt,
        epochs,
        test_loader=test_loader,
        device=device,
        loss_fn=model.loss(temperature, alpha),
        scheduler=scheduler,
        scheduler_per_batch=schedule == "onecycle",
        progress=progress,
        log=log,
    )


# ===================================================================== the command
def _widths(text: str) -> tuple[int, ...]:
    parts = text.split(",")
    if not all(part.strip().isdigit() and int(part) > 0 for part in parts):
        raise argparse.ArgumentTypeError(f"expected positive integers W1,W2,..., got {text!r}")
    return tuple(int(part) for part in parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``fastnet distill``."""
    parser.add_argument(
        "--teacher",
        required=True,
        metavar="MODEL_FILE",
        help="the teacher: a run's model.safetensors (its config.json names the model) or a "
        "checkpoint, from fastnet train",
    )
    parser.add_argument(
        "--student",
        default="small-cnn",
        choices=models.names(),
        help="the student model (small-cnn, dw-cnn: about 9k parameters)",
    )
    parser.add_argument(
        "--dataset", default=None, choices=DATASETS, help="default: the teacher's dataset"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder with the dataset files (default: FASTNET_DATA, then the user cache, then "
        "download)",
    )
    parser.add_argument(
        "--widths",
        type=_widths,
        default=None,
        metavar="W1,W2,...",
        help="the student's channel widths (small-cnn: 8,16; dw-cnn: 16,32,64,64)",
    )
    parser.add_argument(
        "--augment",
        action="store_true",
        help="random crops (padding 2) for both students; the teacher sees the same crops",
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--lr", type=float, default=2e-3, help="peak learning rate (Adam, one-cycle schedule)"
    )
    parser.add_argument("--temperature", type=float, default=4.0, help="softmax temperature T")
    parser.add_argument(
        "--alpha", type=float, default=0.9, help="weight of the soft (teacher) term, in [0, 1]"
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for the student and the table (default runs/distill-DATASET-STUDENT)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also train the same student without the teacher (same budget and seed) and add "
        "it to the table",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _check(args: argparse.Namespace) -> None:
    if args.epochs < 1 or args.batch_size < 1:
        raise UsageError(
            f"--epochs and --batch-size must be >= 1, got {args.epochs} and {args.batch_size}"
        )
    if not args.lr > 0:
        raise UsageError(f"--lr must be > 0, got {args.lr}")
    if not args.temperature > 0:
        raise UsageError(f"--temperature must be > 0, got {args.temperature}")
    if not 0.0 <= args.alpha <= 1.0:
        raise UsageError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.student not in models.names():
        raise UsageError(f"--student {args.student}: unknown model; choose from {models.names()}")
    if not Path(args.teacher).is_file():
        raise UsageError(f"--teacher {args.teacher}: no such file")


def _save_student(model: Module, config: dict, history: dict, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = save(model.state_dict(), folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_checkpoint(
        folder / "checkpoint.safetensors",
        model,
        epoch=config["epochs"],
        config=config,
        extra={"history": history},
    )
    return path


def run(args: argparse.Namespace, log: Callable[[str], None] = print) -> int:
    """``fastnet distill``: 0 on success; user errors raise :class:`UsageError`."""
    from .export import load_model_file

    _check(args)
    try:
        teacher, teacher_config = load_model_file(args.teacher)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise UsageError(f"--teacher {args.teacher}: " + " ".join(str(error).split())) from None
    dataset = args.dataset or teacher_config.get("dataset")
    if dataset not in DATASETS:
        raise UsageError(f"the teacher's config names no dataset: give --dataset ({DATASETS})")
    try:
        device = get_device(args.device)
    except (ValueError, RuntimeError) as error:
        raise UsageError(f"--device {args.device}: {error}") from None
    try:
        train_set, test_set = build_datasets(dataset, args.data_dir)
    except (OSError, ValueError, RuntimeError) as error:
        raise UsageError(f"{dataset}: " + " ".join(str(error).split())) from None
    out = Path(args.out or f"runs/distill-{dataset}-{args.student}")
    kwargs = model_kwargs(args.student, train_set.images)
    if args.widths is not None:
        if "widths" not in inspect.signature(models.base._REGISTRY[args.student]).parameters:
            raise UsageError(f"--widths: the student {args.student} takes no widths")
        kwargs["widths"] = list(args.widths)
    transform = eval_transform({"dataset": dataset})
    training_transform = train_transform({"dataset": dataset, "augment": args.augment})
    settings = {
        key: getattr(args, key)
        for key in ("epochs", "batch_size", "lr", "temperature", "alpha", "seed", "augment")
    }
    common = dict(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        device=device,
        seed=args.seed,
        transform=transform,
        train_transform=training_transform,
        progress=not args.no_progress,
        log=log,
    )
    runs = [("student-distilled", teacher, out)]
    if args.baseline:
        runs.append(("student-alone", None, out / "alone"))
    rows: list[tuple[str, Any, Any]] = [("teacher", teacher, Path(args.teacher))]
    histories = {}
    for name, guide, folder in runs:
        fn_random.manual_seed(args.seed)  # the same initial student for both
        student = models.create(args.student, **kwargs)
        log(
            f"fastnet distill: {name}: {args.student} ({student.num_parameters():,} parameters)"
            + (
                f" from a {teacher_config.get('model')} teacher "
                f"({teacher.num_parameters():,}), T={args.temperature}, alpha={args.alpha}"
                if guide is not None
                else " on the labels alone"
            )
        )
        history = distill(
            guide,
            student,
            train_set,
            test_set,
            temperature=args.temperature,
            alpha=args.alpha if guide is not None else 0.0,
            **common,
        )
        config = {
            "model": args.student,
            "kwargs": kwargs,
            "dataset": dataset,
            "epochs": args.epochs,
            "distill": dict(settings, teacher=str(args.teacher), with_teacher=guide is not None),
        }
        path = _save_student(student, config, history, folder)
        rows.append((name, student, path))
        histories[name] = history
    results = compare_models(rows, test_set, device, transform=transform)
    table = save_csv(results, out / "table.csv")
    (out / "history.json").write_text(json.dumps(histories, indent=2) + "\n")
    log(format_table(results))
    log(f"fastnet distill: student in {out / 'model.safetensors'}, table in {table}")
    return 0
