"""The training loop the CLI uses.

* ``train_epoch``: one pass with a progress bar (running-mean loss, throughput); a NaN or
  infinite loss raises :class:`NonFiniteLossError` before that step's update.
* ``fit``: epochs of ``train_epoch`` and evaluation; into a run folder it writes the checkpoint
  after every epoch (and snapshots every N), ``best.safetensors`` with keep-best, and the
  :class:`RunFolder` files (``config.json``, ``history.json``, ``steps.csv``, TensorBoard).
* ``evaluate``: loss and accuracy over a loader.
* ``run``: everything built from a config dict (``validate_config`` checks it), with resume
  (``resumed_config`` says what a resumed run continues with).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import functional as F
from . import random as fn_random
from .backend import get_device, to_numpy
from .checkpoint import load, save, save_checkpoint
from .run_folder import RunFolder
from .tensor import Tensor, no_grad


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite: a training loss is caught before that step's update, a
    validation or test loss before that epoch's files are written, so the files (and, for a
    training loss, the weights) stay those of the last good step."""

    def __init__(
        self, loss: float, epoch: int | None, step: int | None = None, split: str = "training"
    ) -> None:
        self.loss, self.epoch, self.step = loss, epoch, step
        if step is None:
            where = f"after epoch {epoch}; stopped before saving that epoch's weights"
        else:
            at = f"epoch {epoch}, step {step}" if epoch is not None else f"step {step}"
            where = f"at {at}; stopped before that step's update"
        super().__init__(f"the {split} loss became {loss} {where}")


def _to(batch: Any, device: Any) -> Tensor:
    return batch.to(device) if isinstance(batch, Tensor) else Tensor(batch, device=device)


def evaluate(
    model: Any,
    loader: Iterable,
    device: Any = "cpu",
    loss_fn: Callable = F.cross_entropy,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """Mean loss and accuracy of ``model`` over ``loader`` in eval mode (no graph recorded)."""
    device = get_device(device)
    was_training = model.training
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    predictions, labels = [], []
    with no_grad():
        for x, y in loader:
            x, y = _to(x, device), _to(y, device)
            logits = model(x)
            total_loss += float(loss_fn(logits, y, reduction="sum").item())
            predicted = to_numpy(logits.data.argmax(axis=1))
            truth = to_numpy(y.data)
            correct += int((predicted == truth).sum())
            count += len(truth)
            if return_predictions:
                predictions.append(predicted)
                labels.append(truth)
    model.train(was_training)
    result: dict[str, Any] = {
        "loss": total_loss / max(count, 1),
        "accuracy": correct / max(count, 1),
        "count": count,
    }
    if return_predictions:
        result["predictions"] = (
            np.concatenate(predictions) if predictions else np.empty(0, np.int64)
        )
        result["labels"] = np.concatenate(labels) if labels else np.empty(0, np.int64)
    return result


def train_epoch(
    model: Any,
    loader: Iterable,
    optimizer: Any,
    device: Any = "cpu",
    *,
    loss_fn: Callable = F.cross_entropy,
    scheduler: Any = None,
    description: str = "train",
    progress: bool = True,
    max_batches: int | None = None,
    epoch: int | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
) -> dict[str, float]:
    """One pass over ``loader``; returns mean loss, accuracy, images/s, seconds and the last
    learning rate. ``on_step(step, loss, lr)`` is called after each step (steps count from 1).
    Raises :class:`NonFiniteLossError` (naming ``epoch`` and the step) on a NaN or inf loss."""
    device = get_device(device)
    model.train()
    total_loss, correct, count, batches = 0.0, 0, 0, 0
    lr = float(optimizer.param_groups[0]["lr"])
    start = time.perf_counter()
    total = len(loader) if hasattr(loader, "__len__") else None
    if max_batches is not None and total is not None:
        total = min(total, max_batches)
    bar = tqdm(
        loader,
        total=total,
        desc=description,
        disable=not progress,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.25,  # a few redraws a second: drawing on every batch slows small models
        file=sys.stderr,
    )
    for x, y in bar:
        x, y = _to(x, device), _to(y, device)
        logits = model(x)
        loss = loss_fn(logits, y)
        batch_loss = float(loss.item())  # read before the update, so NaN never reaches a weight
        if not math.isfinite(batch_loss):
            bar.close()
            raise NonFiniteLossError(batch_loss, epoch, batches + 1)
        lr = float(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += batch_loss * len(y)
        correct += int((to_numpy(logits.data.argmax(axis=1)) == to_numpy(y.data)).sum())
        count += len(y)
        batches += 1
        if on_step is not None:
            on_step(batches, batch_loss, lr)
        elapsed = time.perf_counter() - start
        bar.set_postfix(  # shown at the bar's next redraw, not forced now
            loss=f"{total_loss / count:.4f}",
            img_s=f"{count / max(elapsed, 1e-9):.0f}",
            refresh=False,
        )
        if max_batches is not None and batches >= max_batches:
            break
    bar.close()
    seconds = time.perf_counter() - start
    return {
        "loss": total_loss / max(count, 1),
        "accuracy": correct / max(count, 1),
        "images_per_second": count / max(seconds, 1e-9),
        "seconds": seconds,
        "lr": lr,
    }


def fit(
    model: Any,
    train_loader: Iterable,
    optimizer: Any,
    epochs: int,
    *,
    test_loader: Iterable | None = None,
    val_loader: Iterable | None = None,
    patience: int | None = None,
    device: Any = "cpu",
    loss_fn: Callable = F.cross_entropy,
    scheduler: Any = None,
    scheduler_per_batch: bool = False,
    out: str | os.PathLike | None = None,
    config: dict | None = None,
    start_epoch: int = 0,
    history: dict | None = None,
    keep_best: bool = False,
    checkpoint_every: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, list]:
    """Train for epochs ``start_epoch+1 .. epochs``; print a line per epoch; return the history
    (per epoch: epoch, lr, elapsed seconds since the run began, train/val/test loss and accuracy).

    With ``out`` (the run folder): the model, optimizer, scheduler, epoch, RNG state and
    ``config`` go to ``out/checkpoint.safetensors`` (atomically) after every epoch, and to
    ``out/checkpoint_epoch<E>.safetensors`` every ``checkpoint_every`` epochs; the
    :class:`RunFolder` files are kept up to date. With a ``val_loader``: ``patience`` stops
    training once validation accuracy has not improved for that many epochs, and ``keep_best``
    keeps the weights of the best validation accuracy (``out/best.safetensors``) and loads them
    into ``model`` at the end. A NaN or infinite loss raises :class:`NonFiniteLossError` and
    leaves every file as the last good epoch wrote it.
    """
    device = get_device(device)
    history = history if history is not None else {}
    if keep_best and val_loader is None:
        raise ValueError("keep_best needs a validation set (val_loader)")
    folder = Path(out) if out is not None else None
    batches = len(train_loader) if hasattr(train_loader, "__len__") else 0
    global_step = start_epoch * batches
    run_start = time.perf_counter() - (history["elapsed"][-1] if history.get("elapsed") else 0.0)
    files = (
        RunFolder(folder, config or {}, start_epoch, global_step) if folder is not None else None
    )
    best_state: tuple[int, dict] | None = None
    try:
        for epoch in range(start_epoch + 1, epochs + 1):

            def on_step(
                step: int, loss: float, lr: float, epoch: int = epoch, first: int = global_step
            ) -> None:
                if files is not None:
                    files.log_step(epoch, step, first + step, loss, lr)

            train = train_epoch(
                model,
                train_loader,
                optimizer,
                device,
                loss_fn=loss_fn,
                scheduler=scheduler if scheduler_per_batch else None,
                description=f"epoch {epoch}/{epochs}",
                progress=progress,
                epoch=epoch,
                on_step=on_step,
            )
            global_step += batches
            if scheduler is not None and not scheduler_per_batch:
                scheduler.step()
            record = {
                "epoch": epoch,
                "lr": train["lr"],
                "train_loss": train["loss"],
                "train_acc": train["accuracy"],
                "seconds": train["seconds"],
                "images_per_second": train["images_per_second"],
            }
            line = (
                f"epoch {epoch}/{epochs}: train loss {train['loss']:.4f} "
                f"acc {100 * train['accuracy']:.2f}% "
                f"| {train['seconds']:.1f}s, {train['images_per_second']:.0f} img/s"
            )
            for split, loader in (("val", val_loader), ("test", test_loader)):
                if loader is not None:
                    result = evaluate(model, loader, device, loss_fn)
                    if not math.isfinite(result["loss"]):  # before anything of this epoch is saved
                        raise NonFiniteLossError(result["loss"], epoch, split=split)
                    record.update(
                        {f"{split}_loss": result["loss"], f"{split}_acc": result["accuracy"]}
                    )
                    line += (
                        f" | {split} loss {result['loss']:.4f} acc {100 * result['accuracy']:.2f}%"
                    )
            improved = keep_best and record["val_acc"] > max(history.get("val_acc", [-1.0]))
            record["elapsed"] = time.perf_counter() - run_start
            for key, value in record.items():
                history.setdefault(key, []).append(value)
            log(line)
            if improved:
                best_state = (
                    epoch,
                    {k: np.array(to_numpy(v)) for k, v in model.state_dict().items()},
                )
                if folder is not None:
                    save(best_state[1], folder / "best.safetensors")
            if folder is not None:
                paths = [folder / "checkpoint.safetensors"]
                if checkpoint_every and epoch % checkpoint_every == 0:
                    paths.append(folder / f"checkpoint_epoch{epoch}.safetensors")
                for path in paths:
                    save_checkpoint(
                        path,
                        model,
                        optimizer,
                        scheduler,
                        epoch=epoch,
                        config=config,
                        rng_state=fn_random.get_state(),
                        extra={"history": history},
                    )
                files.log_epoch(history, global_step)
            if patience is not None and "val_acc" in history:
                best = int(np.argmax(history["val_acc"]))
                if len(history["val_acc"]) - 1 - best >= patience:
                    log(
                        f"early stop: validation accuracy has not improved for {patience} epochs "
                        f"(best {100 * history['val_acc'][best]:.2f}% after epoch {best + 1})"
                    )
                    break
    finally:
        if files is not None:
            files.close()
    if keep_best and history.get("val_acc"):
        _restore_best(model, history, best_state, folder, log)
    return history


def _restore_best(
    model: Any, history: dict, best_state: tuple[int, dict] | None, folder: Path | None, log: Any
) -> None:
    """Load the weights of the best validation epoch into ``model`` (from memory, or from
    ``best.safetensors`` when a resumed run found its best before the resume)."""
    best_epoch = int(np.argmax(history["val_acc"])) + 1
    if best_epoch == len(history["val_acc"]):
        return  # the last epoch was the best: the model holds its weights already
    if best_state is not None and best_state[0] == best_epoch:
        weights = best_state[1]
    elif folder is not None and (folder / "best.safetensors").is_file():
        weights = load(folder / "best.safetensors")
    else:
        raise FileNotFoundError(f"keep_best: the weights of epoch {best_epoch} were not kept")
    model.load_state_dict(weights)
    log(
        f"keep-best: restored the weights of epoch {best_epoch} "
        f"(validation accuracy {100 * history['val_acc'][best_epoch - 1]:.2f}%)"
    )


# ===================================================================== a whole run from a config
DATASETS = ("mnist", "fashion-mnist", "cifar10")


def build_datasets(name: str, data_dir: str | None, download: bool = True) -> tuple[Any, Any]:
    """The (train, test) sets of dataset ``name``, looked up under ``data_dir`` (see
    fastnet.data), downloaded into the cache when missing and ``download`` allows."""
    from . import data

    classes = {"mnist": data.MNIST, "fashion-mnist": data.FashionMNIST, "cifar10": data.CIFAR10}
    if name not in classes:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(classes)}")
    return tuple(
        classes[name](root=data_dir, train=train, download=download) for train in (True, False)
    )


def build_optimizer(config: dict, parameters: Any) -> Any:
    from . import optim

    name, lr, decay = config["optimizer"], config["lr"], config.get("weight_decay", 0.0)
    if name == "adam":
        return optim.Adam(parameters, lr=lr, weight_decay=decay)
    if name == "adamw":
        return optim.AdamW(parameters, lr=lr, weight_decay=decay)
    if name == "sgd":
        momentum = config.get("momentum", 0.9)
        return optim.SGD(
            parameters, lr=lr, momentum=momentum, weight_decay=decay, nesterov=momentum > 0
        )
    raise ValueError(f"unknown optimizer {name!r}; choose from adam, adamw, sgd")


NORMALIZATION = {"mnist": "MNIST", "fashion-mnist": "FASHION_MNIST", "cifar10": "CIFAR10"}


def eval_transform(config: dict) -> Any:
    """Per-channel normalisation with the dataset's statistics (what the model sees at test
    time)."""
    from . import data

    prefix = NORMALIZATION.get(config["dataset"])
    if prefix is None:
        return None
    return data.Normalize(getattr(data, f"{prefix}_MEAN"), getattr(data, f"{prefix}_STD"))


def train_transform(config: dict) -> Any:
    """eval_transform, after random crops (padding 4 on 32×32 images, 2 on 28×28) and, for
    CIFAR-10, horizontal flips, when the config asks for ``augment``."""
    from . import data

    normalize = eval_transform(config)
    if not config.get("augment"):
        return normalize
    cifar = config["dataset"] == "cifar10"
    steps = [data.RandomCrop(32 if cifar else 28, padding=4 if cifar else 2)]
    if cifar:  # digits and clothes are not mirror-symmetric in the same way; CIFAR objects are
        steps.append(data.RandomHorizontalFlip())
    return data.Compose(steps + ([normalize] if normalize is not None else []))


def build_scheduler(config: dict, optimizer: Any, epochs: int, batches_per_epoch: int) -> Any:
    """none; cosine (stepped per epoch); onecycle (warm-up + cosine, stepped per batch)."""
    from . import optim

    schedule = config.get("schedule", "none")
    if schedule == "none":
        return None
    if schedule == "cosine":
        return optim.CosineAnnealingLR(optimizer, T_max=max(1, epochs))
    if schedule == "onecycle":
        return optim.OneCycleLR(
            optimizer, max_lr=config["lr"], total_steps=max(2, epochs * batches_per_epoch)
        )
    raise ValueError(f"unknown schedule {schedule!r}; choose from none, cosine, onecycle")


def model_kwargs(model: str, images: Any, classes: int = 10) -> dict:
    """The builder arguments that fit a dataset's image shape (N, C, H, W)."""
    channels, side = int(images.shape[1]), int(images.shape[-1])
    if model == "mlp":
        return {"in_features": channels * side * side, "classes": classes}
    return {"channels": channels, "image_size": side, "classes": classes}


# ===================================================================== the config of a run
def _whole(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


_AT_LEAST_1 = (lambda v: _whole(v) and v >= 1, "an integer >= 1")
_AT_LEAST_0 = (lambda v: _whole(v) and v >= 0, "an integer >= 0")
_UNIT = (lambda v: _real(v) and 0 <= v < 1, "a number in [0, 1)")
SETTING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": _AT_LEAST_1,
    "batch_size": _AT_LEAST_1,
    "lr": (lambda v: _real(v) and 0 < v < math.inf, "a number > 0"),
    "weight_decay": (lambda v: _real(v) and 0 <= v < math.inf, "a number >= 0"),
    "momentum": _UNIT,
    "label_smoothing": _UNIT,
    "val_fraction": _UNIT,
    "patience": (lambda v: v is None or _AT_LEAST_0[0](v), "an integer >= 0"),
    "labels_per_class": _AT_LEAST_0,
    "checkpoint_every": _AT_LEAST_0,
    "seed": (lambda v: v is None or _AT_LEAST_0[0](v), "an integer >= 0"),
}


def check_setting(key: str, value: Any) -> Any:
    """``value`` if it is allowed for config ``key`` (see SETTING_RULES), else ValueError."""
    rule = SETTING_RULES.get(key)
    if rule is not None and not rule[0](value):
        raise ValueError(f"{key} must be {rule[1]}, got {value!r}")
    return value


def validate_config(config: dict) -> None:
    """Raise ValueError naming the first setting of ``config`` out of its range."""
    for key, value in config.items():
        check_setting(key, value)
    if config.get("keep_best") and not config.get("val_fraction"):
        raise ValueError("keep_best needs a validation split (val_fraction > 0)")


# settings a resumed run may change: they steer what is kept, not what is learned
RESUME_OVERRIDES = ("patience", "keep_best", "checkpoint_every")


def resumed_config(saved: dict, epochs: int | None, given: dict) -> tuple[dict, int]:
    """The config and the last epoch of a run resumed from checkpoint ``saved``.

    The saved config wins; ``given`` may change the RESUME_OVERRIDES and must otherwise agree
    with it. ``epochs`` (default: the run's planned epochs) must lie beyond the saved epoch. A
    learning-rate schedule (onecycle, cosine) spans the planned epochs, saved as
    ``config["epochs"]``: stretching it would send the learning rate back up mid-run, so only a
    run without one (``schedule`` none) can be extended past its plan; the others refuse."""
    config, done = dict(saved["config"]), saved["epoch"]
    for key, value in given.items():
        if key in RESUME_OVERRIDES:
            config[key] = value
        elif key != "epochs" and value is not None and _json(value) != _json(config.get(key)):
            raise ValueError(
                f"cannot change {key} to {value!r} on resume: the run was trained with "
                f"{key} {config.get(key)!r} (start a new run to change it)"
            )
    # a checkpoint from before the plan was saved takes the asked-for epochs as its plan
    planned = config.get("epochs") or epochs or done
    target = planned if epochs is None else check_setting("epochs", epochs)
    if target <= done:
        raise ValueError(
            f"the checkpoint is already at epoch {done}"
            + (f" of its {planned} planned" if epochs is None else "")
            + f": ask for more epochs than {done} to train on"
        )
    schedule = config.get("schedule", "none")
    if target > planned and schedule != "none":
        raise ValueError(
            f"cannot extend this run to {target} epochs: its {schedule} learning-rate schedule "
            f"spans the {planned} epochs it was planned for, and stretching it would send the "
            f"learning rate back up; "
            + (f"resume with epochs <= {planned}, or " if planned > done else "")
            + "start a new run"
        )
    config["epochs"] = max(planned, target)
    return config, target


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value))  # tuples and lists compare as a checkpoint saved them


def run(
    config: dict,
    epochs: int | None,
    out: str | os.PathLike,
    *,
    device: Any = "cpu",
    data_dir: str | None = None,
    resume: str | None = None,
    datasets: tuple | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``config`` (dataset, model, optimizer, lr, batch_size, seed, schedule, val_fraction,
    patience, keep_best, checkpoint_every, ...) up to ``epochs``, writing into the run folder
    ``out`` (see :func:`fit`). With ``resume`` (a checkpoint path) the model, optimizer, RNG state
    and data order continue where that run stopped, with the config :func:`resumed_config` gives
    (``epochs`` None: the run's planned epochs); on the CPU the result equals an uninterrupted
    run bit for bit. Raises ValueError for a setting out of range."""
    from . import models
    from .checkpoint import load_checkpoint
    from .data import DataLoader

    saved = load_checkpoint(resume) if resume is not None else None
    if saved is not None:
        config, epochs = resumed_config(saved, epochs, config)
    else:
        config = dict(config, epochs=epochs)
    validate_config(config)
    if config.get("seed") is None:  # a resumed run needs the seed that ordered its data
        config["seed"] = int(np.random.default_rng().integers(2**31))
    fn_random.manual_seed(config["seed"])
    train_set, test_set = (
        datasets if datasets is not None else build_datasets(config["dataset"], data_dir)
    )
    if config.get("labels_per_class"):
        from .data import subset

        train_set = subset(train_set, config["labels_per_class"], seed=config["seed"])
    config.setdefault("kwargs", model_kwargs(config["model"], train_set.images))
    model = models.create(config["model"], **config["kwargs"]).to(device)
    optimizer = build_optimizer(config, model.parameters())
    val_loader = None
    if config.get("val_fraction"):
        from .data import random_split

        holdout = max(1, int(round(config["val_fraction"] * len(train_set))))
        train_set, val_set = random_split(
            train_set, [len(train_set) - holdout, holdout], seed=config["seed"]
        )
        val_loader = DataLoader(val_set, batch_size=512, transform=eval_transform(config))
    train_loader = DataLoader(
        train_set,
        batch_size=config["batch_size"],
        shuffle=True,
        seed=config["seed"],
        transform=train_transform(config),
    )
    test_loader = DataLoader(test_set, batch_size=512, transform=eval_transform(config))
    scheduler = build_scheduler(config, optimizer, config["epochs"], len(train_loader))
    smoothing = config.get("label_smoothing", 0.0)
    loss_fn = (
        (lambda logits, y, **kw: F.cross_entropy(logits, y, label_smoothing=smoothing, **kw))
        if smoothing
        else F.cross_entropy
    )
    start_epoch, history = 0, {}
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved["scheduler"] is not None:
            scheduler.load_state_dict(saved["scheduler"])
        fn_random.set_state(saved["rng"])
        start_epoch, history = saved["epoch"], saved["extra"].get("history", {})
        train_loader.epoch = start_epoch  # epoch e's order depends only on (seed, e)
    history = fit(
        model,
        train_loader,
        optimizer,
        epochs,
        test_loader=test_loader,
        val_loader=val_loader,
        patience=config.get("patience"),
        device=device,
        loss_fn=loss_fn,
        scheduler=scheduler,
        scheduler_per_batch=config.get("schedule") == "onecycle",
        out=out,
        config=config,
        start_epoch=start_epoch,
        history=history,
        keep_best=bool(config.get("keep_best")),
        checkpoint_every=config.get("checkpoint_every") or 0,
        progress=progress,
        log=log,
    )
    return {"model": model, "optimizer": optimizer, "history": history, "config": config}
